/*
 * test_io_vec.c: vectored and message IO. readv fills the buffers in
 * order and waits for data; writev writes every byte through partial
 * writes that stop inside an element, and after a timeout says exactly
 * how much went; recvmsg and sendmsg wait, pass descriptors (SCM_RIGHTS)
 * and datagram addresses, take nothing on a timeout or a cancellation,
 * and keep the recv rules for MSG_DONTWAIT and MSG_ERRQUEUE; a writev to
 * a closed socket raises no SIGPIPE; bad arguments are refused, after
 * the task and cancellation checks every call makes first.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/uio.h>

#include "test.h"

/* ---- readv ---- */

struct late_writer {
    int fd;
    const char *text;
};

static void *write_later(void *arg)
{
    struct late_writer *w = arg;
    CHECK_OK(corio_sleep(20 * CORIO_MSEC));
    CHECK_EQ(corio_write(w->fd, w->text, strlen(w->text)), (ssize_t)strlen(w->text));
    return NULL;
}

static void *main_readv(void *arg)
{
    (void)arg;
    int sv[2];
    test_tcp_pair(sv);
    /* It waits for data written later by a task on the other loop. */
    struct late_writer w = {sv[0], "abcdefghij"};
    corio_spawn_opts o = test_on_loop(1, false);
    corio_task *t;
    CHECK_OK(corio_spawn_ex(&t, write_later, &w, &o));
    char a[3], b[0 + 1], c[16];
    struct iovec iov[4] = {{a, 3}, {NULL, 0}, {b, 1}, {c, sizeof c}};
    size_t got = 0;
    while (got < 10) {
        ssize_t n = corio_readv_until(sv[1], iov, 4, corio_deadline_in(10 * CORIO_SEC));
        CHECK_GT(n, 0);
        /* Each call fills from the first buffer again: take what came. */
        char flat[20];
        size_t k = 0;
        for (int i = 0; i < 4 && k < (size_t)n; i++)
            for (size_t j = 0; j < iov[i].iov_len && k < (size_t)n; j++)
                flat[k++] = ((char *)iov[i].iov_base)[j];
        CHECK_EQ(memcmp(flat, w.text + got, (size_t)n), 0);
        got += (size_t)n;
    }
    CHECK_OK(corio_join(t, NULL));
    /* Nothing there: a deadline passes and nothing is taken. */
    CHECK_ERR((int)corio_readv_until(sv[1], iov, 4, corio_deadline_in(10 * CORIO_MSEC)),
              CORIO_ETIMEDOUT);
    CHECK_OK(corio_close(sv[0]));
    CHECK_EQ(corio_readv(sv[1], iov, 4), 0); /* end of stream */
    CHECK_OK(corio_close(sv[1]));
    return NULL;
}

TEST(readv_fills_the_buffers_in_order_and_waits_for_data)
{
    run_main_checked(2, main_readv, NULL);
}

/* ---- writev ---- */

#define PIECES 300

struct drain {
    int fd;
    size_t expect;
    unsigned char *seen;
};

static void *drain_all(void *arg)
{
    struct drain *d = arg;
    size_t got = 0;
    while (got < d->expect) {
        ssize_t n = corio_read_until(d->fd, d->seen + got, d->expect - got,
                                     corio_deadline_in(30 * CORIO_SEC));
        CHECK_GT(n, 0);
        got += (size_t)n;
    }
    return NULL;
}

static void *main_writev(void *arg)
{
    (void)arg;
    int sv[2];
    test_tcp_pair(sv);
    int small = 64 << 10; /* partial writes, many of them inside an element */
    CHECK_EQ(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    CHECK_EQ(setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
    struct iovec iov[PIECES];
    size_t total = 0;
    uint64_t rng = 7;
    for (int i = 0; i < PIECES; i++) {
        size_t len = i % 7 == 3 ? 0 : (size_t)(test_rand(&rng) % 20000);
        unsigned char *p = malloc(len ? len : 1);
        CHECK(p);
        for (size_t j = 0; j < len; j++)
            p[j] = (unsigned char)(total + j) * 31u + 7u;
        iov[i] = (struct iovec){p, len};
        total += len;
    }
    struct drain d = {sv[1], total, malloc(total)};
    CHECK(d.seen);
    corio_spawn_opts o = test_on_loop(1, false);
    corio_task *t;
    CHECK_OK(corio_spawn_ex(&t, drain_all, &d, &o));
    size_t written = 0;
    CHECK_EQ(corio_writev(sv[0], iov, PIECES, &written), (ssize_t)total);
    CHECK_EQ(written, total);
    CHECK_OK(corio_join(t, NULL));
    for (size_t j = 0; j < total; j++)
        if (d.seen[j] != (unsigned char)((unsigned char)j * 31u + 7u))
            CHECK_EQ(j, total); /* names the first wrong byte */
    for (int i = 0; i < PIECES; i++)
        free(iov[i].iov_base);
    free(d.seen);
    CHECK_OK(corio_close(sv[0]));
    CHECK_OK(corio_close(sv[1]));
    return NULL;
}

TEST(writev_writes_every_byte_through_partial_writes)
{
    run_main_checked(2, main_writev, NULL);
}

/* Nobody reads: the deadline passes with part written; *written is
 * exactly what the reader then finds. */
static void *main_writev_timeout(void *arg)
{
    (void)arg;
    int sv[2];
    test_tcp_pair(sv);
    enum { BIG = 64 << 20 };
    char *big = calloc(1, BIG);
    CHECK(big);
    struct iovec iov[3] = {{big, BIG / 2}, {big + BIG / 2, BIG / 4}, {big, BIG / 4}};
    size_t written = 12345;
    CHECK_ERR((int)corio_writev_until(sv[0], iov, 3, &written, corio_deadline_in(50 * CORIO_MSEC)),
              CORIO_ETIMEDOUT);
    CHECK_GT(written, 0);
    CHECK_LT(written, (size_t)BIG);
    CHECK_OK(corio_shutdown(sv[0], SHUT_WR));
    size_t got = 0;
    for (;;) {
        ssize_t n = corio_read_until(sv[1], big, BIG, corio_deadline_in(10 * CORIO_SEC));
        CHECK_GE(n, 0);
        if (n == 0)
            break;
        got += (size_t)n;
    }
    CHECK_EQ(got, written);
    free(big);
    CHECK_OK(corio_close(sv[0]));
    CHECK_OK(corio_close(sv[1]));
    return NULL;
}

TEST(writev_after_a_timeout_says_exactly_what_went)
{
    run_main_checked(1, main_writev_timeout, NULL);
}

/* ---- recvmsg and sendmsg ---- */

struct fd_pass {
    int sock;
    int passed; /* the descriptor received */
    char byte;
};

static void *receive_fd(void *arg)
{
    struct fd_pass *p = arg;
    char byte;
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = sizeof control.buf};
    /* Waits: the sender sends after a pause. */
    ssize_t n = corio_recvmsg_until(p->sock, &msg, MSG_CMSG_CLOEXEC,
                                    corio_deadline_in(10 * CORIO_SEC));
    CHECK_EQ(n, 1);
    p->byte = byte;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    CHECK(c != NULL);
    CHECK_EQ(c->cmsg_level, SOL_SOCKET);
    CHECK_EQ(c->cmsg_type, SCM_RIGHTS);
    memcpy(&p->passed, CMSG_DATA(c), sizeof(int));
    return NULL;
}

static void *main_fd_pass(void *arg)
{
    (void)arg;
    int sv[2], pipefd[2];
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    CHECK_EQ(pipe2(pipefd, O_CLOEXEC), 0);
    struct fd_pass p = {sv[1], -1, 0};
    corio_spawn_opts o = test_on_loop(1, true); /* a light task's buffers move: fine */
    corio_task *t;
    CHECK_OK(corio_spawn_ex(&t, receive_fd, &p, &o));
    CHECK_OK(corio_sleep(10 * CORIO_MSEC));
    char byte = 'x';
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = sizeof control.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &pipefd[0], sizeof(int));
    CHECK_EQ(corio_sendmsg(sv[0], &msg, 0), 1);
    CHECK_OK(corio_join(t, NULL));
    CHECK_EQ(p.byte, 'x');
    CHECK_GE(p.passed, 0);
    CHECK_NE(p.passed, pipefd[0]);
    CHECK_EQ(fcntl(p.passed, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    /* The passed descriptor is the pipe's read end. */
    CHECK_EQ(corio_write(pipefd[1], "ok", 2), 2);
    char got[2];
    CHECK_EQ(corio_read_until(p.passed, got, 2, corio_deadline_in(10 * CORIO_SEC)), 2);
    CHECK_EQ(memcmp(got, "ok", 2), 0);
    CHECK_OK(corio_close(p.passed));
    CHECK_OK(corio_close(pipefd[0]));
    CHECK_OK(corio_close(pipefd[1]));
    CHECK_OK(corio_close(sv[0]));
    CHECK_OK(corio_close(sv[1]));
    return NULL;
}

TEST(recvmsg_waits_and_receives_a_descriptor_sent_by_sendmsg)
{
    run_main_checked(2, main_fd_pass, NULL);
}

static void *main_datagrams(void *arg)
{
    (void)arg;
    int a = corio_bind_udp("127.0.0.1", 0, 0), b = corio_bind_udp("127.0.0.1", 0, 0);
    CHECK_GE(a, 0);
    CHECK_GE(b, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)corio_local_port(b)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    char head[] = "head:", body[] = "body";
    struct iovec out[2] = {{head, 5}, {body, 4}};
    struct msghdr m = {.msg_name = &to, .msg_namelen = sizeof to, .msg_iov = out, .msg_iovlen = 2};
    CHECK_EQ(corio_sendmsg(a, &m, 0), 9);

    char buf[32];
    struct iovec in = {buf, sizeof buf};
    struct sockaddr_in from;
    struct msghdr r = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &in,
                       .msg_iovlen = 1};
    CHECK_EQ(corio_recvmsg_until(b, &r, 0, corio_deadline_in(10 * CORIO_SEC)), 9);
    CHECK_EQ(memcmp(buf, "head:body", 9), 0);
    CHECK_EQ(r.msg_namelen, sizeof from);
    CHECK_EQ(ntohs(from.sin_port), corio_local_port(a));

    /* Nothing queued: a deadline takes nothing, MSG_DONTWAIT says EAGAIN,
     * and an empty error queue says EAGAIN at once whatever the deadline. */
    r.msg_namelen = sizeof from;
    CHECK_ERR((int)corio_recvmsg_until(b, &r, 0, corio_deadline_in(10 * CORIO_MSEC)),
              CORIO_ETIMEDOUT);
    CHECK_ERR((int)corio_recvmsg(b, &r, MSG_DONTWAIT), CORIO_EAGAIN);
    test_stopwatch sw = test_stopwatch_start();
    CHECK_ERR((int)corio_recvmsg_until(b, &r, MSG_ERRQUEUE, corio_deadline_in(10 * CORIO_SEC)),
              CORIO_EAGAIN);
    CHECK_ELAPSED_WITHIN(&sw, 0, 0, 2 * CORIO_SEC);
    /* What the timed-out receive left is still there for the next. */
    CHECK_EQ(corio_sendmsg(a, &m, 0), 9);
    r.msg_namelen = sizeof from;
    CHECK_EQ(corio_recvmsg_until(b, &r, 0, corio_deadline_in(10 * CORIO_SEC)), 9);
    CHECK_OK(corio_close(a));
    CHECK_OK(corio_close(b));
    return NULL;
}

TEST(datagrams_carry_their_address_and_empty_queues_follow_the_recv_rules)
{
    run_main_checked(1, main_datagrams, NULL);
}

/* ---- cancellation ---- */

struct cancelled_recv {
    int sock;
    _Atomic int started;
    int rc;
};

static void *recv_until_cancelled(void *arg)
{
    struct cancelled_recv *c = arg;
    char buf[8];
    struct iovec iov = {buf, sizeof buf};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    atomic_store(&c->started, 1);
    c->rc = (int)corio_recvmsg(c->sock, &m, 0);
    return NULL;
}

static void *main_cancel(void *arg)
{
    (void)arg;
    int sv[2];
    test_tcp_pair(sv);
    struct cancelled_recv c = {.sock = sv[1]};
    corio_task *t;
    CHECK_OK(corio_spawn(&t, recv_until_cancelled, &c));
    CHECK(test_await(&c.started, 1));
    CHECK_OK(corio_sleep(5 * CORIO_MSEC));
    CHECK_OK(corio_cancel(t));
    CHECK_OK(corio_join(t, NULL));
    CHECK_ERR(c.rc, CORIO_ECANCELED);
    /* Nothing was taken: the next byte is the first. */
    CHECK_EQ(corio_write(sv[0], "z", 1), 1);
    char got;
    struct iovec iov = {&got, 1};
    CHECK_EQ(corio_readv_until(sv[1], &iov, 1, corio_deadline_in(10 * CORIO_SEC)), 1);
    CHECK_EQ(got, 'z');
    CHECK_OK(corio_close(sv[0]));
    CHECK_OK(corio_close(sv[1]));
    return NULL;
}

TEST(a_cancelled_recvmsg_takes_nothing)
{
    run_main_checked(1, main_cancel, NULL);
}

/* ---- no SIGPIPE ---- */

/* A writev to a socket whose writing side is shut goes as a sendmsg with
 * MSG_NOSIGNAL: CORIO_EPIPE, and no SIGPIPE left pending on the loop's
 * thread (where a signal wait would take it as if sent). */
static int sigpipe_arrives(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    int signo = 0;
    return corio_signal_wait(&set, &signo, corio_deadline_in(20 * CORIO_MSEC));
}

static void *main_sigpipe(void *arg)
{
    (void)arg;
    int sv[2];
    test_tcp_pair(sv);
    CHECK_OK(corio_shutdown(sv[0], SHUT_WR));
    char c = 'x';
    struct iovec iov = {&c, 1};
    size_t written = 9;
    CHECK_ERR((int)corio_writev(sv[0], &iov, 1, &written), CORIO_EPIPE);
    CHECK_EQ(written, 0);
    CHECK_ERR(sigpipe_arrives(), CORIO_ETIMEDOUT);
    /* A pipe whose reader left: EPIPE too (writev itself, SIGPIPE
     * blocked on the loop thread and so, again, none delivered). */
    int p[2];
    CHECK_EQ(pipe2(p, O_CLOEXEC), 0);
    CHECK_EQ(close(p[0]), 0);
    CHECK_ERR((int)corio_writev(p[1], &iov, 1, NULL), CORIO_EPIPE);
    CHECK_OK(corio_close(p[1]));
    CHECK_OK(corio_close(sv[0]));
    CHECK_OK(corio_close(sv[1]));
    return NULL;
}

TEST(writev_to_a_closed_socket_is_epipe_without_sigpipe)
{
    run_main_checked(1, main_sigpipe, NULL);
}

/* ---- bad arguments ---- */

static void *main_bad(void *arg)
{
    (void)arg;
    int sv[2];
    test_tcp_pair(sv);
    char buf[4];
    struct iovec iov = {buf, sizeof buf};
    size_t written = 99;
    CHECK_ERR((int)corio_readv(sv[1], &iov, -1), CORIO_EINVAL);
    CHECK_ERR((int)corio_readv(sv[1], &iov, IOV_MAX + 1), CORIO_EINVAL);
    CHECK_ERR((int)corio_readv(sv[1], NULL, 1), CORIO_EINVAL);
    CHECK_ERR((int)corio_writev(sv[0], NULL, 2, &written), CORIO_EINVAL);
    CHECK_EQ(written, 0);
    struct iovec huge[2] = {{buf, SSIZE_MAX}, {buf, 2}};
    CHECK_ERR((int)corio_writev(sv[0], huge, 2, NULL), CORIO_EINVAL);
    CHECK_ERR((int)corio_recvmsg(sv[1], NULL, 0), CORIO_EINVAL);
    CHECK_ERR((int)corio_sendmsg(sv[0], NULL, 0), CORIO_EINVAL);
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = (size_t)IOV_MAX + 1};
    CHECK_ERR((int)corio_sendmsg(sv[0], &m, 0), CORIO_EINVAL);
    /* Empty arrays: nothing to read or write. */
    CHECK_EQ(corio_readv(sv[1], &iov, 0), 0);
    CHECK_EQ(corio_writev(sv[0], &iov, 0, &written), 0);
    CHECK_OK(corio_close(sv[0]));
    CHECK_OK(corio_close(sv[1]));
    return NULL;
}

/* As every IO call: the task and its cancellation first, then the
 * arguments. */
static void *cancelled_bad_args(void *arg)
{
    (void)arg;
    CHECK_OK(corio_cancel(corio_self()));
    CHECK_ERR((int)corio_readv(0, NULL, 1), CORIO_ECANCELED);
    CHECK_OK(corio_cancel(corio_self()));
    CHECK_ERR((int)corio_sendmsg(0, NULL, 0), CORIO_ECANCELED);
    return NULL;
}

static void *main_bad_order(void *arg)
{
    (void)arg;
    corio_task *t;
    CHECK_OK(corio_spawn(&t, cancelled_bad_args, NULL));
    CHECK_OK(corio_join(t, NULL));
    return NULL;
}

TEST(bad_arguments_are_refused)
{
    run_main_checked(1, main_bad, NULL);
    run_main_checked(1, main_bad_order, NULL);
    char buf[1];
    struct iovec iov = {buf, 1};
    CHECK_ERR((int)corio_readv(0, &iov, 1), CORIO_EPERM);
    CHECK_ERR((int)corio_writev(0, NULL, 1, NULL), CORIO_EPERM);
    CHECK_ERR((int)corio_recvmsg(0, NULL, 0), CORIO_EPERM);
}

int main(int argc, char **argv)
{
    RUN(readv_fills_the_buffers_in_order_and_waits_for_data);
    RUN(writev_writes_every_byte_through_partial_writes);
    RUN(writev_after_a_timeout_says_exactly_what_went);
    RUN(recvmsg_waits_and_receives_a_descriptor_sent_by_sendmsg);
    RUN(datagrams_carry_their_address_and_empty_queues_follow_the_recv_rules);
    RUN(a_cancelled_recvmsg_takes_nothing);
    RUN(writev_to_a_closed_socket_is_epipe_without_sigpipe);
    RUN(bad_arguments_are_refused);
    return test_summary();
}
