/*
 * test_io_emfile.c: running out of descriptors. A server whose process
 * hits RLIMIT_NOFILE gets CORIO_EMFILE from corio_accept, keeps running,
 * and once descriptors are freed accepts and serves the connection that
 * waited in the backlog meanwhile ("the pending connection stays queued,
 * accept again once descriptors are free").
 *
 * The limit is lowered in a forked child, so the test process itself (and
 * CTest's bookkeeping) never runs short.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "test.h"

#define MAX_CONNS 256

struct server {
    int listener;
    corio_event *release; /* set: handlers close their connections */
    _Atomic long accepted, emfile, served, finished;
    _Atomic int stop;
};

struct handler_arg {
    struct server *s;
    int fd;
};

/* Echo one message, then hold the descriptor until released. */
static void *handler(void *arg)
{
    struct handler_arg ha = *(struct handler_arg *)arg;
    free(arg);
    char buf[32];
    ssize_t n = corio_read_until(ha.fd, buf, sizeof buf, corio_deadline_in(10 * CORIO_SEC));
    if (n <= 0)
        FAIL_("handler read: %s", n == 0 ? "end of stream" : corio_err_name((int)n));
    CHECK_EQ(corio_write(ha.fd, buf, (size_t)n), n);
    atomic_fetch_add(&ha.s->served, 1);
    CHECK_OK(corio_event_wait_until(ha.s->release, corio_deadline_in(20 * CORIO_SEC)));
    CHECK_OK(corio_close(ha.fd));
    atomic_fetch_add(&ha.s->finished, 1);
    return NULL;
}

static void *server_loop(void *arg)
{
    struct server *s = arg;
    while (!atomic_load(&s->stop)) {
        int fd = corio_accept_until(s->listener, NULL, NULL, corio_deadline_in(20 * CORIO_MSEC));
        if (fd == CORIO_ETIMEDOUT)
            continue;
        if (fd == CORIO_EMFILE) {
            atomic_fetch_add(&s->emfile, 1);
            CHECK_OK(corio_sleep(2 * CORIO_MSEC)); /* wait for descriptors to free */
            continue;
        }
        if (fd < 0)
            FAIL_("accept: %s", corio_err_name(fd));
        struct handler_arg *ha = malloc(sizeof *ha);
        CHECK(ha);
        ha->s = s;
        ha->fd = fd;
        CHECK_OK(corio_spawn(NULL, handler, ha));
        atomic_fetch_add(&s->accepted, 1);
    }
    return NULL;
}

/* A limit that leaves exactly `spare` descriptor numbers free below it.
 * (Holes count: the kernel hands out the lowest free number, and this
 * process may have inherited descriptors with high numbers.) */
static rlim_t limit_with_spare(int spare)
{
    int fd = 0;
    for (int free_found = 0; free_found < spare; fd++)
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF)
            free_found++;
    return (rlim_t)fd;
}

static void wait_for(_Atomic long *counter, long at_least, corio_time_t deadline, const char *what)
{
    while (atomic_load(counter) < at_least) {
        if (corio_now() > deadline)
            FAIL_("%s: %ld, wanted %ld", what, atomic_load(counter), at_least);
        CHECK_OK(corio_sleep(CORIO_MSEC));
    }
}

static void *main_emfile(void *arg)
{
    struct server s = {0};
    CHECK_OK(corio_event_new(&s.release));
    s.listener = corio_listen_tcp("127.0.0.1", 0, 128, 0);
    CHECK_GE(s.listener, 0);
    int port = corio_local_port(s.listener);
    CHECK_GT(port, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    /* 24 descriptors to spare from here on, exactly: one more or fewer
     * and the server, not a client, takes the last one, and finds no
     * descriptor for its next accept before the connection that was to
     * wait is there. The runtime may still be starting up on the other
     * loop (loop 0's thread reads /proc/self/maps for its stack bounds,
     * holding a descriptor for a moment): count once a task has run on
     * every loop, which each does only after that. (Counting until three
     * counts 5 ms apart agreed relied on the start taking less.) */
    for (unsigned l = 0; l < corio_loop_count(); l++) {
        corio_task *t;
        CHECK_OK(corio_spawn_on(&t, l, test_ret_arg, NULL));
        CHECK_OK(corio_join(t, NULL));
    }
    struct rlimit rl;
    CHECK_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rlim_t limit = limit_with_spare(24);
    rl.rlim_cur = limit;
    CHECK_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
    /* One held back: when a client socket is what runs out, freeing this
     * one gives the client its socket and leaves the server short. */
    int spare = dup(0);
    CHECK_GE(spare, 0);

    /* The server on this task's loop: an accept takes a descriptor
     * number even when no connection is queued (and gives it back), so a
     * server on another thread, retrying on its 20 ms timeout, could hold
     * the last number at the moment a client socket is made. */
    corio_task *server;
    CHECK_OK(corio_spawn_on(&server, (unsigned)corio_loop_index(), server_loop, &s));

    int clients[MAX_CONNS];
    int n = 0;
    for (;;) {
        CHECK_LT(n, MAX_CONNS);
        int c = corio_socket(AF_INET, SOCK_STREAM, 0);
        if (c == CORIO_EMFILE && spare >= 0) {
            CHECK_EQ(close(spare), 0);
            spare = -1;
            c = corio_socket(AF_INET, SOCK_STREAM, 0);
        }
        if (c < 0)
            FAIL_("client socket %d: %s", n, corio_err_name(c));
        int rc = corio_connect_until(c, (struct sockaddr *)&addr, sizeof addr,
                                     corio_deadline_in(5 * CORIO_SEC));
        if (rc != 0)
            FAIL_("client connect %d: %s", n, corio_err_name(rc));
        char msg[16];
        int len = snprintf(msg, sizeof msg, "message %d", n);
        CHECK_EQ(corio_write(c, msg, (size_t)len), len);
        clients[n++] = c;
        /* Either the server takes it, or it cannot. */
        corio_time_t give_up = corio_deadline_in(5 * CORIO_SEC);
        while (atomic_load(&s.accepted) < n && atomic_load(&s.emfile) == 0) {
            if (corio_now() > give_up)
                FAIL_("connection %d neither accepted nor refused with EMFILE", n - 1);
            CHECK_OK(corio_sleep(CORIO_MSEC));
        }
        if (atomic_load(&s.emfile) > 0)
            break;
        /* Accepted: its echo comes back. */
        char back[16];
        ssize_t got = corio_read_until(c, back, sizeof back, corio_deadline_in(5 * CORIO_SEC));
        CHECK_EQ(got, len);
    }
    long accepted = atomic_load(&s.accepted);
    CHECK_EQ(accepted, n - 1);
    CHECK_GE(n, 2);
    fprintf(stderr, "   EMFILE after %ld accepted connections\n", accepted);

    /* The server keeps running and keeps trying (its loop may be held
     * up: no count of tries within a fixed time). */
    long before = atomic_load(&s.emfile);
    wait_for(&s.emfile, before + 1, corio_deadline_in(5 * CORIO_SEC), "EMFILE again");
    CHECK_EQ(atomic_load(&s.accepted), accepted);

    /* Free some descriptors: two of the earliest clients go. Their
     * handlers keep their ends open, so the only thing that changes is
     * that the server has descriptors again. */
    CHECK_OK(corio_close(clients[0]));
    CHECK_OK(corio_close(clients[1]));
    clients[0] = clients[1] = -1;
    wait_for(&s.accepted, accepted + 1, corio_deadline_in(5 * CORIO_SEC),
             "accepted after descriptors were freed");
    /* And serves the connection that waited: its message echoes back. */
    int last = clients[n - 1];
    char want[16], back[16];
    int len = snprintf(want, sizeof want, "message %d", n - 1);
    ssize_t got = corio_read_until(last, back, sizeof back, corio_deadline_in(5 * CORIO_SEC));
    CHECK_EQ(got, len);
    CHECK(memcmp(back, want, (size_t)len) == 0);
    wait_for(&s.served, n, corio_deadline_in(5 * CORIO_SEC), "served");

    atomic_store(&s.stop, 1);
    CHECK_OK(corio_join(server, NULL));
    CHECK_OK(corio_event_set(s.release));
    for (int i = 0; i < n; i++)
        if (clients[i] >= 0) {
            /* The handler closes its end: end of stream here. */
            char b;
            CHECK_EQ(corio_read_until(clients[i], &b, 1, corio_deadline_in(5 * CORIO_SEC)), 0);
            CHECK_OK(corio_close(clients[i]));
        }
    CHECK_OK(corio_close(s.listener));
    if (spare >= 0)
        close(spare);
    /* Every handler has returned from its wait on the event before it is
     * freed (corio.h: a sync object outlives the calls in progress on it,
     * but a task whose wait has returned may free it). */
    wait_for(&s.finished, n, corio_deadline_in(5 * CORIO_SEC), "handlers finished");
    corio_event_free(s.release);
    return NULL;
}

static int child_emfile(void *arg)
{
    run_main_checked(2, main_emfile, NULL);
    return 0;
}

TEST(accept_emfile_then_recovers)
{
    TEST_SKIP_UNDER_VALGRIND("Valgrind reserves descriptors of its own below the limit "
                             "this test lowers; injected_emfile covers the same path");
    test_child c;
    test_run_child(&c, child_emfile, NULL);
    fputs(c.out, stderr);
    if (!WIFEXITED(c.status) || WEXITSTATUS(c.status) != 0)
        FAIL_("child %s %d", WIFSIGNALED(c.status) ? "killed by signal" : "exited with",
              WIFSIGNALED(c.status) ? WTERMSIG(c.status) : WEXITSTATUS(c.status));
}

/* The same exhaustion, injected: the next accept fails as if the process
 * were out of descriptors, and the connection is still there for the
 * accept after it. */
static void *main_injected_emfile(void *arg)
{
    int l = corio_listen_tcp("127.0.0.1", 0, 8, 0);
    CHECK_GE(l, 0);
    int port = corio_local_port(l);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* Register the listener with this loop first, so that the one call
     * failed below is accept's own, not the registration's. */
    CHECK_ERR(corio_accept_until(l, NULL, NULL, corio_now()), CORIO_ETIMEDOUT);
    for (int round = 0; round < 8; round++) {
        int c = corio_socket(AF_INET, SOCK_STREAM, 0);
        CHECK_GE(c, 0);
        CHECK_OK(corio_connect_until(c, (struct sockaddr *)&addr, sizeof addr,
                                     corio_deadline_in(5 * CORIO_SEC)));
        corio__fault_arm(1);
        int rc = corio_accept_until(l, NULL, NULL, corio_deadline_in(5 * CORIO_SEC));
        bool fired = corio__fault_fired();
        corio__fault_arm(0);
        CHECK(fired);
        CHECK_ERR(rc, CORIO_EMFILE);
        int s = corio_accept_until(l, NULL, NULL, corio_deadline_in(5 * CORIO_SEC));
        CHECK_GE(s, 0);
        CHECK_EQ(corio_write(c, "k", 1), 1);
        char b;
        CHECK_EQ(corio_read_until(s, &b, 1, corio_deadline_in(5 * CORIO_SEC)), 1);
        CHECK_OK(corio_close(s));
        CHECK_OK(corio_close(c));
    }
    CHECK_OK(corio_close(l));
    return NULL;
}

TEST(injected_emfile)
{
    /* One loop: nothing else may consume the armed fault. */
    run_main_checked(1, main_injected_emfile, NULL);
}

int main(int argc, char **argv)
{
    RUN(accept_emfile_then_recovers);
    RUN(injected_emfile);
    return test_summary();
}
