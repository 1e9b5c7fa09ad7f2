/*
 * test_io_reset.c: peers that go away rudely. A TCP reset in the middle of
 * a message, writes to a peer that reset, writes to a pipe whose reader
 * closed: each ends in an error the caller sees (CORIO_ECONNRESET,
 * CORIO_EPIPE), never in a crash, and never in death by SIGPIPE, which
 * every test here leaves at its default action (terminate) on purpose.
 * Connections that go away before they are accepted: the accept goes on
 * to the next one.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "test.h"

/* SIGPIPE at its default action and not blocked: if anything raises it
 * where corio promised it would not, the test process dies of it. */
static void sigpipe_default(void)
{
    CHECK(signal(SIGPIPE, SIG_DFL) != SIG_ERR);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    CHECK_EQ(sigprocmask(SIG_UNBLOCK, &set, NULL), 0);
}

/* And none is left pending for later. */
static void check_no_sigpipe_pending(void)
{
    sigset_t pending;
    CHECK_EQ(sigpending(&pending), 0);
    CHECK_EQ(sigismember(&pending, SIGPIPE), 0);
}

/* A connected pair (client, server side) on loopback. */
static void tcp_pair(int *client, int *server)
{
    int l = corio_listen_tcp("127.0.0.1", 0, 4, 0);
    CHECK_GE(l, 0);
    int port = corio_local_port(l);
    CHECK_GT(port, 0);
    *client = corio_connect_tcp("127.0.0.1", (uint16_t)port, corio_deadline_in(5 * CORIO_SEC));
    CHECK_GE(*client, 0);
    *server = corio_accept_until(l, NULL, NULL, corio_deadline_in(5 * CORIO_SEC));
    CHECK_GE(*server, 0);
    CHECK_OK(corio_close(l));
}

/* Close with SO_LINGER {on, 0}: the kernel sends RST instead of FIN. */
static void close_with_reset(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    CHECK_EQ(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    CHECK_OK(corio_close(fd));
}

static unsigned char pattern(size_t i) { return (unsigned char)(i * 7 + 3); }

/* ---- a reset in the middle of a read ---- */

struct reset_reader {
    int fd;
    _Atomic int waiting;
    size_t got;
    int end; /* the error that ended the reads, or 0 for end of stream */
};

static void *read_until_reset(void *arg)
{
    struct reset_reader *r = arg;
    unsigned char buf[1500];
    atomic_store(&r->waiting, 1);
    for (;;) {
        ssize_t n = corio_read_until(r->fd, buf, sizeof buf, corio_deadline_in(2 * CORIO_SEC));
        if (n <= 0) {
            r->end = (int)n;
            break;
        }
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != pattern(r->got + (size_t)i))
                FAIL_("byte %zu differs: the bytes before the reset must arrive intact",
                      r->got + (size_t)i);
        r->got += (size_t)n;
    }
    return NULL;
}

static void *main_reset_mid_read(void *arg)
{
    long rounds = test_scaled(200);
    long reset_seen = 0, bytes_then_reset = 0;
    unsigned char part[3000];
    for (size_t i = 0; i < sizeof part; i++)
        part[i] = pattern(i);
    for (long round = 0; round < rounds; round++) {
        int c, s;
        tcp_pair(&c, &s);
        struct reset_reader r = {.fd = s, .end = 12345};
        corio_spawn_opts o = test_on_loop((int)(round % 2), round % 4 >= 2);
        corio_task *t;
        int mode = (int)(round % 3);
        if (mode != 2) {
            /* The reader is already waiting when the bytes and the RST come. */
            CHECK_OK(corio_spawn_ex(&t, read_until_reset, &r, &o));
            while (!atomic_load(&r.waiting))
                CHECK_OK(corio_yield());
            CHECK_OK(corio_sleep(CORIO_MSEC));
        }
        size_t len = 1 + (size_t)(round * 37) % sizeof part;
        CHECK_EQ(corio_write(c, part, len), (long long)len);
        if (mode == 1)
            CHECK_OK(corio_sleep(2 * CORIO_MSEC)); /* bytes read before the RST */
        close_with_reset(c);
        if (mode == 2) {
            /* The RST is there before the reader first looks. */
            CHECK_OK(corio_sleep(2 * CORIO_MSEC));
            CHECK_OK(corio_spawn_ex(&t, read_until_reset, &r, &o));
        }
        CHECK_OK(corio_join(t, NULL));
        if (r.end != CORIO_ECONNRESET && r.end != 0)
            FAIL_("round %ld (mode %d): %zu of %zu bytes, then %s; expected ECONNRESET", round,
                  mode, r.got, len, corio_err_name(r.end));
        CHECK_LE(r.got, len);
        reset_seen += r.end == CORIO_ECONNRESET;
        bytes_then_reset += r.end == CORIO_ECONNRESET && r.got > 0;
        /* After the reset the socket stays dead: end of stream or the
         * error again, at once, never a wait. */
        char b;
        ssize_t n = corio_read_until(s, &b, 1, corio_deadline_in(CORIO_SEC));
        if (n != 0 && n != CORIO_ECONNRESET)
            FAIL_("round %ld: read after the reset: %s", round,
                  n > 0 ? "data" : corio_err_name((int)n));
        CHECK_OK(corio_close(s));
    }
    fprintf(stderr, "   %ld rounds: reset reported %ld times (%ld after some bytes)\n", rounds,
            reset_seen, bytes_then_reset);
    /* A reset is reported to the reader, not turned into a clean end. */
    CHECK_EQ(reset_seen, rounds);
    return NULL;
}

TEST(reset_in_the_middle_of_a_read)
{
    sigpipe_default();
    run_main_checked(2, main_reset_mid_read, NULL);
    check_no_sigpipe_pending();
}

/* ---- writing to a peer that reset ---- */

struct reset_writer {
    int fd;
    bool use_send;
    int end;
    long writes;
};

static void *write_until_error(void *arg)
{
    struct reset_writer *w = arg;
    static const char chunk[16384];
    for (w->writes = 0; w->writes < 10000; w->writes++) {
        ssize_t n = w->use_send
                        ? corio_send_until(w->fd, chunk, sizeof chunk, 0,
                                           corio_deadline_in(5 * CORIO_SEC))
                        : corio_write_until(w->fd, chunk, sizeof chunk,
                                            corio_deadline_in(5 * CORIO_SEC));
        if (n < 0) {
            w->end = (int)n;
            return NULL;
        }
    }
    w->end = 0;
    return NULL;
}

static void *main_write_to_reset_peer(void *arg)
{
    for (int round = 0; round < 16; round++) {
        int c, s;
        tcp_pair(&c, &s);
        struct reset_writer w = {.fd = c, .use_send = round % 2, .end = 12345};
        corio_spawn_opts o = test_on_loop(round / 2 % 2, round / 4 % 2);
        corio_task *t;
        if (round >= 8) {
            /* The writer is mid-stream (blocked on a full socket) when
             * the peer resets. */
            CHECK_OK(corio_spawn_ex(&t, write_until_error, &w, &o));
            CHECK_OK(corio_sleep(10 * CORIO_MSEC));
            close_with_reset(s);
        } else {
            close_with_reset(s);
            CHECK_OK(corio_sleep(2 * CORIO_MSEC));
            CHECK_OK(corio_spawn_ex(&t, write_until_error, &w, &o));
        }
        CHECK_OK(corio_join(t, NULL));
        if (w.end != CORIO_EPIPE && w.end != CORIO_ECONNRESET)
            FAIL_("round %d: %ld writes to a reset peer, then %s", round, w.writes,
                  w.end == 0 ? "still no error" : corio_err_name(w.end));
        /* Again: still an error, still no signal. */
        char b = 0;
        ssize_t n = corio_write(c, &b, 1);
        CHECK(n == CORIO_EPIPE || n == CORIO_ECONNRESET);
        n = corio_send(c, &b, 1, 0);
        CHECK(n == CORIO_EPIPE || n == CORIO_ECONNRESET);
        CHECK_OK(corio_close(c));
    }
    return NULL;
}

TEST(write_to_reset_peer)
{
    sigpipe_default();
    run_main_checked(2, main_write_to_reset_peer, NULL);
    check_no_sigpipe_pending();
}

/* ---- writing to a pipe whose reader is gone ---- */

struct pipe_writer {
    int fd;
    _Atomic int started;
    ssize_t rc;
};

static void *write_pipe_forever(void *arg)
{
    struct pipe_writer *w = arg;
    static const char chunk[65536];
    atomic_store(&w->started, 1);
    for (;;) {
        ssize_t n = corio_write_until(w->fd, chunk, sizeof chunk, corio_deadline_in(5 * CORIO_SEC));
        if (n < 0) {
            w->rc = n;
            return NULL;
        }
    }
}

static void *write_pipe_once(void *arg)
{
    struct pipe_writer *w = arg;
    w->rc = corio_write(w->fd, "x", 1);
    return NULL;
}

static void *close_task(void *arg)
{
    CHECK_OK(corio_close((int)INT_OF(arg)));
    return NULL;
}

static void *main_write_closed_pipe(void *arg)
{
    for (int round = 0; round < 16; round++) {
        int p[2];
        CHECK_EQ(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
        int loop = round % 2;
        struct pipe_writer w = {.fd = p[1], .rc = 12345};
        corio_spawn_opts o = test_on_loop(loop, round / 2 % 2);
        corio_task *t;
        if (round < 8) {
            /* Reader gone before the write. */
            CHECK_OK(corio_close(p[0]));
            CHECK_OK(corio_spawn_ex(&t, write_pipe_once, &w, &o));
        } else {
            /* Writer blocked on the full pipe when the reader goes (from
             * either loop). */
            CHECK_OK(corio_spawn_ex(&t, write_pipe_forever, &w, &o));
            while (!atomic_load(&w.started))
                CHECK_OK(corio_sleep(CORIO_MSEC));
            CHECK_OK(corio_sleep(5 * CORIO_MSEC));
            corio_task *closer;
            CHECK_OK(corio_spawn_on(&closer, (unsigned)(round / 4 % 2), close_task, PTR_OF(p[0])));
            CHECK_OK(corio_join(closer, NULL));
        }
        CHECK_OK(corio_join(t, NULL));
        CHECK_ERR((int)w.rc, CORIO_EPIPE);
        /* The same from this task, and with send (not a socket: falls
         * back to write). */
        CHECK_ERR((int)corio_write(p[1], "y", 1), CORIO_EPIPE);
        CHECK_ERR((int)corio_send(p[1], "y", 1, 0), CORIO_EPIPE);
        CHECK_OK(corio_close(p[1]));
    }
    return NULL;
}

TEST(write_to_pipe_without_reader)
{
    sigpipe_default();
    run_main_checked(2, main_write_closed_pipe, NULL);
    check_no_sigpipe_pending();
    /* The process's own SIGPIPE handling is as it was: still the default. */
    struct sigaction sa;
    CHECK_EQ(sigaction(SIGPIPE, NULL, &sa), 0);
    CHECK(sa.sa_handler == SIG_DFL);
    sigset_t mask;
    CHECK_EQ(sigprocmask(SIG_BLOCK, NULL, &mask), 0);
    CHECK_EQ(sigismember(&mask, SIGPIPE), 0);
}

/* ---- connections gone before they are accepted ----
 *
 * accept(2) on Linux passes on errors already pending on the new
 * socket, and ECONNABORTED, for a connection it then drops; the man page
 * says to treat them like EAGAIN. Linux's own TCP queues a connection
 * reset before its accept (the accept returns it, its first read says
 * ECONNRESET), so this file's accept4 makes the errors: its next calls
 * fail with each of them in turn, taking no connection. */

static const int transient_accept_errors[] = {
    ECONNABORTED, ENETDOWN,    EPROTO,    ENOPROTOOPT, EHOSTDOWN,
    ENONET,       EHOSTUNREACH, EOPNOTSUPP, ENETUNREACH,
};
#define N_TRANSIENT (int)(sizeof transient_accept_errors / sizeof transient_accept_errors[0])
static _Atomic int accept_errors_left;

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    int left = atomic_load(&accept_errors_left);
    while (left > 0 && !atomic_compare_exchange_weak(&accept_errors_left, &left, left - 1))
        ;
    if (left > 0) {
        errno = transient_accept_errors[N_TRANSIENT - left];
        return -1;
    }
    return (int)syscall(SYS_accept4, fd, addr, len, flags);
}

struct accepter {
    int listener;
    _Atomic int accepting;
    int fd;
};

static void *accept_with_patience(void *arg)
{
    struct accepter *a = arg;
    atomic_store(&a->accepting, 1);
    a->fd = corio_accept_until(a->listener, NULL, NULL, corio_deadline_in(5 * CORIO_SEC));
    return NULL;
}

/* A connection from a fresh client; the client's descriptor. */
static int connect_to(uint16_t port)
{
    int c = corio_connect_tcp("127.0.0.1", port, corio_deadline_in(5 * CORIO_SEC));
    CHECK_GE(c, 0);
    return c;
}

/* What the server side of a connection reads first: one byte sent by
 * the client. */
static void check_first_byte(int server, char want)
{
    char c = 0;
    CHECK_EQ((int)corio_read_until(server, &c, 1, corio_deadline_in(5 * CORIO_SEC)), 1);
    CHECK_EQ(c, want);
}

static void *main_accept_past_gone_connections(void *arg)
{
    (void)arg;
    int l = corio_listen_tcp("127.0.0.1", 0, 8, 0);
    CHECK_GE(l, 0);
    int port = corio_local_port(l);
    CHECK_GT(port, 0);

    /* What Linux does with a reset before the accept: hands it over. */
    int gone = connect_to((uint16_t)port);
    close_with_reset(gone);
    int good = connect_to((uint16_t)port);
    CHECK_EQ((int)corio_write(good, "g", 1), 1);
    int s = corio_accept_until(l, NULL, NULL, corio_deadline_in(5 * CORIO_SEC));
    CHECK_GE(s, 0);
    char c;
    CHECK_ERR((int)corio_read_until(s, &c, 1, corio_deadline_in(5 * CORIO_SEC)), CORIO_ECONNRESET);
    CHECK_OK(corio_close(s));
    s = corio_accept_until(l, NULL, NULL, corio_deadline_in(5 * CORIO_SEC));
    CHECK_GE(s, 0);
    check_first_byte(s, 'g');
    CHECK_OK(corio_close(s));
    CHECK_OK(corio_close(good));

    /* Each error of a connection gone, with the good one queued behind. */
    good = connect_to((uint16_t)port);
    CHECK_EQ((int)corio_write(good, "q", 1), 1);
    atomic_store(&accept_errors_left, N_TRANSIENT);
    s = corio_accept_until(l, NULL, NULL, corio_deadline_in(5 * CORIO_SEC));
    CHECK_GE(s, 0);
    CHECK_EQ(atomic_load(&accept_errors_left), 0);
    check_first_byte(s, 'q');
    CHECK_OK(corio_close(s));
    CHECK_OK(corio_close(good));

    /* And with nothing behind them: the accept waits for the next. */
    struct accepter a = {.listener = l, .fd = -1};
    atomic_store(&accept_errors_left, N_TRANSIENT);
    corio_task *t;
    CHECK_OK(corio_spawn(&t, accept_with_patience, &a));
    CHECK(test_await(&a.accepting, 1));
    CHECK_OK(corio_sleep(CORIO_MSEC)); /* now in its wait, not just before */
    good = connect_to((uint16_t)port);
    CHECK_EQ((int)corio_write(good, "w", 1), 1);
    CHECK_OK(corio_join(t, NULL));
    CHECK_GE(a.fd, 0);
    check_first_byte(a.fd, 'w');
    CHECK_OK(corio_close(a.fd));
    CHECK_OK(corio_close(good));
    CHECK_OK(corio_close(l));

    /* EOPNOTSUPP is also the caller's error of accepting on a socket
     * that cannot listen: that one comes back, the accept does not try
     * again until its deadline. */
    int u = corio_bind_udp("127.0.0.1", 0, 0);
    CHECK_GE(u, 0);
    CHECK_ERR(corio_accept_until(u, NULL, NULL, corio_deadline_in(5 * CORIO_SEC)),
              CORIO_EOPNOTSUPP);
    CHECK_OK(corio_close(u));
    return NULL;
}

TEST(accept_goes_past_connections_gone_before_it)
{
    run_main_checked(2, main_accept_past_gone_connections, NULL);
}

int main(int argc, char **argv)
{
    RUN(reset_in_the_middle_of_a_read);
    RUN(write_to_reset_peer);
    RUN(write_to_pipe_without_reader);
    RUN(accept_goes_past_connections_gone_before_it);
    return test_summary();
}
