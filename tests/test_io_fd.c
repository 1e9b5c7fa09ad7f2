/*
 * test_io_fd.c: waiting for plain descriptors (pipes): readiness in both
 * directions, reads to end of stream, deadlines that consume nothing,
 * corio_close waking a blocked reader, descriptor numbers reused by the
 * kernel, one waiter per direction and loop, bad arguments, calls from
 * outside a task.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "sys.h"
#include "task.h"
#include "test.h"

static void nb_pipe(int fds[2])
{
    CHECK_EQ(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
}

/* ---- wait_fd(READABLE) blocks until another task writes ---- */

struct readable {
    int fd;
    _Atomic int waiting, woke;
    corio_time_t woke_at;
};

static void *wait_then_read(void *arg)
{
    struct readable *r = arg;
    atomic_store(&r->waiting, 1);
    CHECK_OK(corio_wait_fd(r->fd, CORIO_READABLE, corio_deadline_in(10 * CORIO_SEC)));
    r->woke_at = corio_now();
    atomic_store(&r->woke, 1);
    char c = 0;
    CHECK_EQ(corio_read(r->fd, &c, 1), 1);
    CHECK_EQ(c, 'x');
    return NULL;
}

static void *main_wait_readable(void *arg)
{
    for (int round = 0; round < 8; round++) {
        int p[2];
        nb_pipe(p);
        struct readable r = {.fd = p[0]};
        /* Same loop as the writer, then the other loop; regular and light. */
        int loop = round % 2 ? (corio_loop_index() + 1) % 2 : corio_loop_index();
        corio_spawn_opts o = test_on_loop(loop, round & 2);
        corio_task *t;
        CHECK_OK(corio_spawn_ex(&t, wait_then_read, &r, &o));
        while (!atomic_load(&r.waiting))
            CHECK_OK(corio_sleep(CORIO_MSEC));
        CHECK_OK(corio_sleep(30 * CORIO_MSEC));
        CHECK_EQ(atomic_load(&r.woke), 0); /* nothing written: still waiting */
        corio_time_t wrote_at = corio_now();
        CHECK_EQ(corio_write(p[1], "x", 1), 1);
        CHECK_OK(corio_join(t, NULL));
        CHECK_EQ(atomic_load(&r.woke), 1);
        CHECK_GE(r.woke_at, wrote_at);
        CHECK_LT(r.woke_at - wrote_at, CORIO_SEC * TEST_SLOW);
        CHECK_OK(corio_close(p[0]));
        CHECK_OK(corio_close(p[1]));
    }
    return NULL;
}

TEST(wait_readable_blocks_until_written)
{
    run_main_checked(2, main_wait_readable, NULL);
}

/* ---- read returns the data, then 0 at end of stream ---- */

#define STREAM_BYTES (3 * 1024 * 1024 + 17)

static unsigned char pattern(size_t i) { return (unsigned char)(i * 131 + (i >> 11)); }

static void *stream_writer(void *arg)
{
    int fd = (int)INT_OF(arg);
    unsigned char *buf = malloc(STREAM_BYTES);
    CHECK(buf);
    for (size_t i = 0; i < STREAM_BYTES; i++)
        buf[i] = pattern(i);
    /* In uneven chunks, far bigger than the pipe: the writer must wait
     * for the reader again and again. */
    size_t off = 0, chunk = 1;
    while (off < STREAM_BYTES) {
        size_t n = chunk < STREAM_BYTES - off ? chunk : STREAM_BYTES - off;
        CHECK_EQ(corio_write(fd, buf + off, n), (long long)n);
        off += n;
        chunk = chunk * 3 + 7;
        if (chunk > 300000)
            chunk = 13;
    }
    free(buf);
    CHECK_OK(corio_close(fd));
    return NULL;
}

static void *stream_close_task(void *arg)
{
    CHECK_OK(corio_close((int)INT_OF(arg)));
    return NULL;
}

static void *main_read_to_eof(void *arg)
{
    for (int round = 0; round < 4; round++) {
        int p[2];
        nb_pipe(p);
        corio_spawn_opts o = test_on_loop(round % 2 ? 1 : 0, false);
        corio_task *w;
        CHECK_OK(corio_spawn_ex(&w, stream_writer, PTR_OF(p[1]), &o));
        size_t got = 0;
        unsigned char buf[7000];
        for (;;) {
            ssize_t n = corio_read_until(p[0], buf, sizeof buf - (size_t)round * 1000,
                                         corio_deadline_in(5 * CORIO_SEC));
            if (n < 0)
                FAIL_("round %d: read after %zu of %d bytes: %s", round, got, STREAM_BYTES,
                      corio_err_name((int)n));
            if (n == 0)
                break;
            for (ssize_t i = 0; i < n; i++)
                if (buf[i] != pattern(got + (size_t)i))
                    FAIL_("byte %zu differs", got + (size_t)i);
            got += (size_t)n;
        }
        CHECK_EQ(got, STREAM_BYTES);
        /* End of stream stays end of stream. */
        CHECK_EQ(corio_read_until(p[0], buf, sizeof buf, corio_deadline_in(CORIO_SEC)), 0);
        CHECK_OK(corio_join(w, NULL));
        CHECK_OK(corio_close(p[0]));
    }
    return NULL;
}

TEST(read_data_then_eof)
{
    run_main_checked(2, main_read_to_eof, NULL);
}

/* The smallest form of the above: the last bytes and the end of stream
 * arrive together, before the reader looks. Its read of the last bytes is
 * short; the one after must return 0, not wait for an edge that already
 * came. */
static void *main_eof_after_short_read(void *arg)
{
    for (int round = 0; round < 2; round++) {
        int p[2];
        nb_pipe(p);
        char buf[64];
        /* Registered with this loop (a read that had to wait). */
        CHECK_ERR((int)corio_read_until(p[0], buf, sizeof buf, corio_now()), CORIO_ETIMEDOUT);
        CHECK_EQ(corio_write(p[1], "abc", 3), 3);
        if (round == 0) {
            CHECK_OK(corio_close(p[1]));
        } else {
            corio_task *t;
            CHECK_OK(corio_spawn_on(&t, 1, stream_close_task, PTR_OF(p[1])));
            CHECK_OK(corio_join(t, NULL));
        }
        CHECK_OK(corio_sleep(5 * CORIO_MSEC)); /* the loop polls: both events seen */
        CHECK_EQ(corio_read_until(p[0], buf, sizeof buf, corio_deadline_in(CORIO_SEC)), 3);
        ssize_t n = corio_read_until(p[0], buf, sizeof buf, corio_deadline_in(CORIO_SEC));
        if (n != 0)
            FAIL_("round %d: read at end of stream after a short read returned %s, expected 0",
                  round, n < 0 ? corio_err_name((int)n) : "data");
        CHECK_OK(corio_close(p[0]));
    }
    return NULL;
}

TEST(eof_after_short_read)
{
    run_main_checked(2, main_eof_after_short_read, NULL);
}

/* ---- wait_fd(WRITABLE) on a full pipe waits for the reader ---- */

struct writable {
    int fd;
    _Atomic int waiting, woke;
    int rc;
};

static void *wait_writable(void *arg)
{
    struct writable *w = arg;
    atomic_store(&w->waiting, 1);
    w->rc = corio_wait_fd(w->fd, CORIO_WRITABLE, corio_deadline_in(10 * CORIO_SEC));
    atomic_store(&w->woke, 1);
    /* Room again: a write goes through. */
    CHECK_EQ(corio_write(w->fd, "after", 5), 5);
    return NULL;
}

static size_t fill_pipe(int fd)
{
    static char junk[65536];
    size_t total = 0;
    for (;;) {
        ssize_t n = write(fd, junk, sizeof junk);
        if (n < 0) {
            CHECK_EQ(errno, EAGAIN);
            /* Pipes take partial writes down to one byte. */
            n = write(fd, junk, 1);
            if (n < 0) {
                CHECK_EQ(errno, EAGAIN);
                return total;
            }
        }
        total += (size_t)n;
    }
}

static void *main_wait_writable(void *arg)
{
    for (int round = 0; round < 4; round++) {
        int p[2];
        nb_pipe(p);
        size_t filled = fill_pipe(p[1]);
        CHECK_GT(filled, 0);
        struct writable w = {.fd = p[1], .rc = 12345};
        corio_spawn_opts o = test_on_loop(round % 2, round >= 2);
        corio_task *t;
        CHECK_OK(corio_spawn_ex(&t, wait_writable, &w, &o));
        while (!atomic_load(&w.waiting))
            CHECK_OK(corio_sleep(CORIO_MSEC));
        CHECK_OK(corio_sleep(30 * CORIO_MSEC));
        CHECK_EQ(atomic_load(&w.woke), 0); /* still full: still waiting */
        /* Drain everything the pipe held. */
        char buf[65536];
        size_t drained = 0;
        while (drained < filled) {
            ssize_t n = corio_read(p[0], buf, sizeof buf);
            CHECK_GT(n, 0);
            drained += (size_t)n;
        }
        CHECK_EQ(drained, filled);
        CHECK_OK(corio_join(t, NULL));
        CHECK_OK(w.rc);
        CHECK_EQ(corio_read(p[0], buf, sizeof buf), 5);
        CHECK(memcmp(buf, "after", 5) == 0);
        CHECK_OK(corio_close(p[0]));
        CHECK_OK(corio_close(p[1]));
    }
    return NULL;
}

TEST(wait_writable_on_full_pipe)
{
    run_main_checked(2, main_wait_writable, NULL);
}

/* ---- a read that times out consumes nothing ---- */

static void *main_read_deadline(void *arg)
{
    for (int round = 0; round < 6; round++) {
        int p[2];
        nb_pipe(p);
        char buf[64];
        memset(buf, '#', sizeof buf);
        if (round % 2) {
            /* Drained stream: a short read marks it drained, so the next
             * call waits at once without a system call. */
            CHECK_EQ(corio_write(p[1], "ab", 2), 2);
            CHECK_EQ(corio_read(p[0], buf, sizeof buf), 2);
            memset(buf, '#', sizeof buf);
        }
        test_stopwatch sw = test_stopwatch_start();
        CHECK_ERR(corio_read_until(p[0], buf, sizeof buf, corio_deadline_in(50 * CORIO_MSEC)),
                  CORIO_ETIMEDOUT);
        CHECK_ELAPSED_WITHIN(&sw, 50 * CORIO_MSEC, CORIO_MSEC, 100 * CORIO_MSEC);
        for (size_t i = 0; i < sizeof buf; i++)
            CHECK_EQ(buf[i], '#');
        /* A past deadline on an empty pipe: at once. */
        sw = test_stopwatch_start();
        CHECK_ERR(corio_read_until(p[0], buf, sizeof buf, corio_now() - CORIO_MSEC),
                  CORIO_ETIMEDOUT);
        CHECK_ELAPSED_WITHIN(&sw, 0, 0, 100 * CORIO_MSEC);
        /* Data written afterwards arrives whole. */
        CHECK_EQ(corio_write(p[1], "hello, pipe", 11), 11);
        ssize_t n = corio_read_until(p[0], buf, sizeof buf, corio_deadline_in(CORIO_SEC));
        CHECK_EQ(n, 11);
        CHECK(memcmp(buf, "hello, pipe", 11) == 0);
        CHECK_OK(corio_close(p[0]));
        CHECK_OK(corio_close(p[1]));
    }
    return NULL;
}

TEST(read_deadline_loses_nothing)
{
    run_main_checked(2, main_read_deadline, NULL);
}

/* ---- a past deadline with data ready ----
 *
 * Every other _until call tries first and times out only if it would have
 * to wait (chan_recv_until, sem_acquire_until, accept_until on a listener
 * with a queued connection...). A read whose descriptor holds data must
 * not fail with ETIMEDOUT just because an earlier short read marked the
 * stream drained and the loop has not polled since. */

static void *main_past_deadline_data_ready(void *arg)
{
    int p[2];
    nb_pipe(p);
    char buf[64];
    test_register_fd(p[0]);
    CHECK_EQ(corio_write(p[1], "first", 5), 5);
    CHECK_OK(corio_sleep(5 * CORIO_MSEC)); /* the loop polls: readable */
    CHECK_EQ(corio_read_until(p[0], buf, sizeof buf, corio_now() - CORIO_SEC), 5);
    /* The short read above marked the stream drained; now data is there
     * again, written by this very task, and the deadline has passed. */
    CHECK_EQ(corio_write(p[1], "again", 5), 5);
    ssize_t n = corio_read_until(p[0], buf, sizeof buf, corio_now() - CORIO_SEC);
    if (n != 5)
        FAIL_("read_until(past deadline) on a pipe holding 5 bytes returned %s, expected 5",
              n < 0 ? corio_err_name((int)n) : "a short count");
    CHECK(memcmp(buf, "again", 5) == 0);
    CHECK_OK(corio_close(p[0]));
    CHECK_OK(corio_close(p[1]));
    return NULL;
}

TEST(past_deadline_with_data_ready)
{
    run_main_checked(2, main_past_deadline_data_ready, NULL);
}

/* ---- corio_close by a task of the same loop wakes the reader ---- */

struct blocked_reader {
    int fd;
    _Atomic int waiting;
    ssize_t rc;
    corio_time_t done_at;
};

static void *read_blocked(void *arg)
{
    struct blocked_reader *b = arg;
    char buf[16];
    atomic_store(&b->waiting, 1);
    b->rc = corio_read_until(b->fd, buf, sizeof buf, corio_deadline_in(10 * CORIO_SEC));
    b->done_at = corio_now();
    return NULL;
}

struct closer {
    int fd;
    corio_time_t closed_at;
};

static void *close_it(void *arg)
{
    struct closer *c = arg;
    c->closed_at = corio_now();
    CHECK_OK(corio_close(c->fd));
    return NULL;
}

static void *main_close_wakes(void *arg)
{
    for (int round = 0; round < 8; round++) {
        int p[2];
        nb_pipe(p);
        int loop = round % 2;
        struct blocked_reader b = {.fd = p[0], .rc = 12345};
        corio_spawn_opts o = test_on_loop(loop, round & 2);
        corio_task *r, *c;
        CHECK_OK(corio_spawn_ex(&r, read_blocked, &b, &o));
        while (!atomic_load(&b.waiting))
            CHECK_OK(corio_sleep(CORIO_MSEC));
        CHECK_OK(corio_sleep(10 * CORIO_MSEC));
        struct closer cl = {.fd = p[0]};
        o = test_on_loop(loop, false);
        CHECK_OK(corio_spawn_ex(&c, close_it, &cl, &o));
        CHECK_OK(corio_join(c, NULL));
        CHECK_OK(corio_join(r, NULL));
        CHECK_ERR((int)b.rc, CORIO_EBADF);
        CHECK_LT(b.done_at - cl.closed_at, 2 * CORIO_SEC * TEST_SLOW);
        CHECK_OK(corio_close(p[1]));
    }
    return NULL;
}

TEST(close_wakes_reader_on_same_loop)
{
    run_main_checked(2, main_close_wakes, NULL);
}

/* ---- descriptor numbers reused by the kernel ---- */

static void *close_task(void *arg)
{
    CHECK_OK(corio_close((int)INT_OF(arg)));
    return NULL;
}

static void *close_on_pool(void *arg)
{
    return PTR_OF(corio_close((int)INT_OF(arg)));
}

/* corio_close fd from this task (how 0), from a task on the other loop
 * (1) or from a blocking-pool thread, outside any loop (2). */
static void close_from(int how, int fd)
{
    if (how == 0) {
        CHECK_OK(corio_close(fd));
    } else if (how == 1) {
        corio_task *t;
        CHECK_OK(corio_spawn_on(&t, (unsigned)(corio_loop_index() + 1) % corio_loop_count(),
                                close_task, PTR_OF(fd)));
        CHECK_OK(corio_join(t, NULL));
    } else {
        void *rc = PTR_OF(-1);
        CHECK_OK(corio_run_blocking(close_on_pool, PTR_OF(fd), &rc));
        CHECK_OK((int)INT_OF(rc));
    }
}

struct reuse_reader {
    int fd;
    _Atomic int waiting;
};

static void *reuse_read(void *arg)
{
    struct reuse_reader *rr = arg;
    char buf[32];
    atomic_store(&rr->waiting, 1);
    ssize_t n = corio_read_until(rr->fd, buf, sizeof buf, corio_deadline_in(10 * CORIO_SEC));
    CHECK_EQ(n, 8);
    CHECK(memcmp(buf, "reused!!", 8) == 0);
    return NULL;
}

static void *main_fd_reuse(void *arg)
{
    long rounds = test_scaled(3000);
    int last[2] = {-1, -1};
    long same_numbers = 0;
    for (long i = 0; i < rounds; i++) {
        int p[2];
        nb_pipe(p);
        same_numbers += p[0] == last[0] && p[1] == last[1];
        last[0] = p[0];
        last[1] = p[1];
        /* The reader registers the descriptor with its loop's epoll and
         * waits; whichever loop it is on, the number's previous life must
         * not leak into this one. */
        struct reuse_reader rr = {.fd = p[0]};
        corio_spawn_opts o = test_on_loop((int)(i % 3 == 0 ? 0 : 1), i % 5 == 0);
        corio_task *t;
        CHECK_OK(corio_spawn_ex(&t, reuse_read, &rr, &o));
        if (i % 2) {
            while (!atomic_load(&rr.waiting))
                CHECK_OK(corio_yield());
            CHECK_OK(corio_yield());
        }
        CHECK_EQ(corio_write(p[1], "reused!!", 8), 8);
        CHECK_OK(corio_join(t, NULL));
        /* The writer side is waited on too, sometimes. */
        if (i % 4 == 1)
            CHECK_OK(corio_wait_fd(p[1], CORIO_WRITABLE, corio_deadline_in(CORIO_SEC)));
        /* Closed from this loop, the other one, or no loop at all. */
        close_from((int)(i % 3), p[0]);
        close_from((int)(i / 3 % 3), p[1]);
    }
    /* The kernel hands out the lowest free numbers: mostly the same two
     * as the round before, which is the point of this test. */
    CHECK_GT(same_numbers, rounds / 2);
    return NULL;
}

TEST(descriptor_reuse)
{
    run_main_checked(2, main_fd_reuse, NULL);
}

/* A TCP socket replaced by a datagram socket under the same number: the
 * entry's idea of the descriptor (TCP, registered, drained: the only kind
 * a short read marks drained) must be rebuilt. */
static void *main_fd_reuse_kinds(void *arg)
{
    long rounds = test_scaled(500);
    for (long i = 0; i < rounds; i++) {
        int p[2];
        test_tcp_pair(p);
        int fd = p[1];
        test_register_fd(fd); /* registered with this loop... */
        CHECK_EQ(corio_write(p[0], "p", 1), 1);
        char c[4];
        CHECK_EQ(corio_read(fd, c, sizeof c), 1); /* ...and marked drained */
        close_from((int)(i % 3), fd);
        close_from(0, p[0]);
        int sv[2];
        CHECK_EQ(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
        /* Reading at the TCP socket's number (the pair is symmetric). */
        if (sv[1] == fd) {
            sv[1] = sv[0];
            sv[0] = fd;
        } else if (sv[0] != fd) {
            CHECK_EQ(dup3(sv[0], fd, O_CLOEXEC), fd);
            CHECK_EQ(close(sv[0]), 0);
            sv[0] = fd;
        }
        /* Two datagrams queued: both must be read without waiting, even
         * though the number was last a drained stream. */
        CHECK_EQ(send(sv[1], "one", 3, 0), 3);
        CHECK_EQ(send(sv[1], "two!", 4, 0), 4);
        char buf[16];
        CHECK_EQ(corio_read_until(sv[0], buf, sizeof buf, corio_deadline_in(CORIO_SEC)), 3);
        CHECK_EQ(corio_read_until(sv[0], buf, sizeof buf, corio_deadline_in(CORIO_SEC)), 4);
        CHECK(memcmp(buf, "two!", 4) == 0);
        CHECK_ERR((int)corio_read_until(sv[0], buf, sizeof buf, corio_now()), CORIO_ETIMEDOUT);
        CHECK_OK(corio_close(sv[0]));
        CHECK_OK(corio_close(sv[1]));
    }
    return NULL;
}

TEST(descriptor_reuse_other_kind)
{
    run_main_checked(2, main_fd_reuse_kinds, NULL);
}

/* ---- the number reused while it is being registered ----
 *
 * Registering a descriptor reads its number's generation, adds it to the
 * loop's epoll under a tag carrying that generation (poll_add, a wrapped
 * call), then records the generation in the loop's entry. The number can
 * be closed and reused by another thread in between; the entry must then
 * keep the generation the tag carries (the one read first), so that the
 * next wait sees it out of date and registers the new file under the new
 * generation. An entry that took the generation read after the epoll_ctl
 * would say "registered, current" while the tag says otherwise: the new
 * file's events would be dropped as a closed file's, and its reader would
 * wait forever. The hook closes the number and puts another pipe under it
 * at exactly that call. One loop. */
struct reused_inside {
    int fd;       /* the number the waiter waits on */
    int other[2]; /* the pipe that takes the number over */
    corio_task *waiter;
    _Atomic int returned;
    int rc;
};

static bool armed_wait(corio_task *t)
{
    return (atomic_load(&t->wait) & CORIO__WAIT_STATE_MASK) == CORIO__WAIT_ARMED;
}

/* Runs in the registration's poll_add, before its epoll_ctl. */
static void reuse_number_hook(void *arg)
{
    struct reused_inside *r = arg;
    CHECK_OK(corio_close(r->fd));
    CHECK_EQ(dup3(r->other[0], r->fd, O_CLOEXEC), r->fd);
    CHECK_EQ(close(r->other[0]), 0); /* never registered: plain close */
}

static void *wait_on_reused_number(void *arg)
{
    struct reused_inside *r = arg;
    corio__fault_arm_hook(1, reuse_number_hook, r); /* the registration's epoll_ctl */
    r->rc = corio_wait_fd(r->fd, CORIO_READABLE, CORIO_FOREVER);
    CHECK(corio__fault_fired());
    corio__fault_arm(0);
    atomic_store(&r->returned, 1);
    return NULL;
}

static void *main_reused_while_registering(void *arg)
{
    (void)arg;
    /* The loop's table and the generations' page exist already, so the
     * registration's first wrapped call is its epoll_ctl. */
    int warm[2];
    nb_pipe(warm);
    test_register_fd(warm[0]);
    int p[2];
    nb_pipe(p);
    struct reused_inside r = {.fd = p[0]};
    nb_pipe(r.other);
    CHECK_OK(corio_spawn(&r.waiter, wait_on_reused_number, &r));
    while (!armed_wait(r.waiter))
        CHECK_OK(corio_yield());
    CHECK_EQ(write(r.other[1], "x", 1), 1);
    /* A sleep ends only after the loop has polled, and the first poll
     * after the write reports the new file's edge: it has woken the
     * waiter, or been dropped. */
    CHECK_OK(corio_sleep(CORIO_MSEC));
    if (!atomic_load(&r.returned) && armed_wait(r.waiter))
        FAIL_("%s", "the reused number's edge was dropped: its reader waits forever");
    CHECK_OK(corio_join(r.waiter, NULL));
    /* The file now under the number was ready (0), or the caller's own
     * file was gone (CORIO_EBADF): either, but an answer. */
    if (r.rc != 0)
        CHECK_ERR(r.rc, CORIO_EBADF);
    CHECK_OK(corio_close(r.fd));
    CHECK_OK(corio_close(r.other[1]));
    CHECK_OK(corio_close(p[1]));
    CHECK_OK(corio_close(warm[0]));
    CHECK_OK(corio_close(warm[1]));
    return NULL;
}

TEST(number_reused_while_registering)
{
    run_main_checked(1, main_reused_while_registering, NULL);
}

/* ---- one waiter per descriptor, direction and loop ---- */

struct busy {
    int fd;
    _Atomic int waiting;
    ssize_t n;
    char buf[16];
};

static void *busy_first_reader(void *arg)
{
    struct busy *b = arg;
    atomic_store(&b->waiting, 1);
    b->n = corio_read_until(b->fd, b->buf, sizeof b->buf, corio_deadline_in(10 * CORIO_SEC));
    return NULL;
}

static void *busy_second_reader(void *arg)
{
    struct busy *b = arg;
    char buf[16];
    CHECK_ERR((int)corio_read_until(b->fd, buf, sizeof buf, corio_deadline_in(10 * CORIO_SEC)),
              CORIO_EBUSY);
    CHECK_ERR(corio_wait_fd(b->fd, CORIO_READABLE, corio_deadline_in(10 * CORIO_SEC)),
              CORIO_EBUSY);
    return NULL;
}

static void *wait_readable_only(void *arg)
{
    struct busy *b = arg;
    atomic_fetch_add(&b->waiting, 1);
    CHECK_OK(corio_wait_fd(b->fd, CORIO_READABLE, corio_deadline_in(10 * CORIO_SEC)));
    return NULL;
}

static void *main_ebusy(void *arg)
{
    for (int loop = 0; loop < 2; loop++) {
        int p[2];
        nb_pipe(p);
        struct busy b = {.fd = p[0], .n = 12345};
        corio_spawn_opts o = test_on_loop(loop, false);
        corio_task *first, *second;
        CHECK_OK(corio_spawn_ex(&first, busy_first_reader, &b, &o));
        while (!atomic_load(&b.waiting))
            CHECK_OK(corio_sleep(CORIO_MSEC));
        CHECK_OK(corio_sleep(5 * CORIO_MSEC));
        CHECK_OK(corio_spawn_ex(&second, busy_second_reader, &b, &o));
        CHECK_OK(corio_join(second, NULL));
        /* The first reader is still the waiter and gets the data. */
        CHECK_EQ(corio_write(p[1], "mine", 4), 4);
        CHECK_OK(corio_join(first, NULL));
        CHECK_EQ(b.n, 4);
        CHECK(memcmp(b.buf, "mine", 4) == 0);
        CHECK_OK(corio_close(p[0]));
        CHECK_OK(corio_close(p[1]));
    }
    /* One waiter on each loop is allowed, and both see the readiness. */
    int p[2];
    nb_pipe(p);
    struct busy b = {.fd = p[0]};
    corio_task *t[2];
    for (int loop = 0; loop < 2; loop++) {
        corio_spawn_opts o = test_on_loop(loop, false);
        CHECK_OK(corio_spawn_ex(&t[loop], wait_readable_only, &b, &o));
    }
    while (atomic_load(&b.waiting) < 2)
        CHECK_OK(corio_sleep(CORIO_MSEC));
    CHECK_OK(corio_sleep(5 * CORIO_MSEC));
    CHECK_EQ(corio_write(p[1], "both", 4), 4);
    CHECK_OK(corio_gather(t, 2, NULL));
    CHECK_OK(corio_close(p[0]));
    CHECK_OK(corio_close(p[1]));
    return NULL;
}

TEST(second_reader_on_loop_is_busy)
{
    run_main_checked(2, main_ebusy, NULL);
}

/* ---- bad arguments ---- */

static void *main_bad_args(void *arg)
{
    int p[2];
    nb_pipe(p);
    corio_time_t soon = corio_deadline_in(CORIO_SEC);
    CHECK_ERR(corio_wait_fd(p[0], CORIO_READABLE | CORIO_WRITABLE, soon), CORIO_EINVAL);
    CHECK_ERR(corio_wait_fd(p[0], 0, soon), CORIO_EINVAL);
    CHECK_ERR(corio_wait_fd(p[0], 4, soon), CORIO_EINVAL);
    CHECK_ERR(corio_wait_fd(-1, CORIO_READABLE, soon), CORIO_EBADF);
    CHECK_ERR(corio_wait_fd(-1, CORIO_WRITABLE, soon), CORIO_EBADF);
    CHECK_ERR(corio_wait_fd(1 << 20, CORIO_READABLE, soon), CORIO_EBADF);
    CHECK_ERR(corio_wait_fd(INT32_MAX, CORIO_READABLE, soon), CORIO_EBADF);
    /* A number that is not open, and that nothing else in the process
     * (the blocking pool, qemu-user's own files) will open meanwhile:
     * descriptors are handed out lowest first, so a high one stays free.
     * (A number just closed was reused once under qemu: a regular file
     * there is always ready, and the wait returned 0.) */
    struct rlimit nofile;
    CHECK_EQ(getrlimit(RLIMIT_NOFILE, &nofile), 0);
    int spare = nofile.rlim_cur > 4096 ? 4095 : (int)nofile.rlim_cur - 1;
    CHECK(fcntl(spare, F_GETFD) == -1 && errno == EBADF);
    corio_time_t t0 = corio_now();
    int rc = corio_wait_fd(spare, CORIO_READABLE, soon);
    CHECK_LT(rc, 0);
    CHECK_NE(rc, CORIO_ETIMEDOUT);
    CHECK_LT(corio_now() - t0, 100 * CORIO_MSEC * TEST_SLOW);
    char buf[4];
    CHECK_ERR((int)corio_read(-1, buf, sizeof buf), CORIO_EBADF);
    CHECK_ERR((int)corio_write(-1, buf, sizeof buf), CORIO_EBADF);
    CHECK_ERR((int)corio_read(spare, buf, sizeof buf), CORIO_EBADF);
    CHECK_ERR(corio_close(-1), CORIO_EBADF);
    CHECK_ERR(corio_close(spare), CORIO_EBADF);
    /* Zero-length write: done at once. */
    CHECK_EQ(corio_write(p[1], buf, 0), 0);
    /* The pipe still works after all that. */
    CHECK_EQ(corio_write(p[1], "ok", 2), 2);
    CHECK_EQ(corio_read(p[0], buf, sizeof buf), 2);
    CHECK_OK(corio_close(p[0]));
    CHECK_OK(corio_close(p[1]));
    return NULL;
}

TEST(bad_arguments)
{
    run_main_checked(2, main_bad_args, NULL);
}

/* ---- IO outside a task ---- */

static int all_io_calls(int fd, int wfd)
{
    char buf[8] = "abc";
    struct sockaddr_storage ss = {0};
    socklen_t len = sizeof ss;
    int failures = 0;
#define EXPECT_EPERM(expr)                                                      \
    do {                                                                        \
        long rc_ = (long)(expr);                                                \
        if (rc_ != CORIO_EPERM) {                                               \
            fprintf(stderr, "%s returned %ld, expected EPERM\n", #expr, rc_);   \
            failures++;                                                         \
        }                                                                       \
    } while (0)
    EXPECT_EPERM(corio_wait_fd(fd, CORIO_READABLE, CORIO_FOREVER));
    EXPECT_EPERM(corio_wait_fd(fd, CORIO_WRITABLE, corio_deadline_in(CORIO_MSEC)));
    EXPECT_EPERM(corio_read(fd, buf, sizeof buf));
    EXPECT_EPERM(corio_read_until(fd, buf, sizeof buf, CORIO_FOREVER));
    EXPECT_EPERM(corio_write(wfd, buf, 3));
    EXPECT_EPERM(corio_write_until(wfd, buf, 3, CORIO_FOREVER));
    EXPECT_EPERM(corio_recv(fd, buf, sizeof buf, 0));
    EXPECT_EPERM(corio_send(wfd, buf, 3, 0));
    EXPECT_EPERM(corio_recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&ss, &len));
    EXPECT_EPERM(corio_sendto(wfd, buf, 3, 0, (struct sockaddr *)&ss, len));
    EXPECT_EPERM(corio_accept(fd, NULL, NULL));
    EXPECT_EPERM(corio_accept_until(fd, NULL, NULL, CORIO_FOREVER));
    EXPECT_EPERM(corio_connect(fd, (struct sockaddr *)&ss, len));
    EXPECT_EPERM(corio_connect_until(fd, (struct sockaddr *)&ss, len, CORIO_FOREVER));
#undef EXPECT_EPERM
    return failures;
}

struct pool_io {
    int fd, wfd;
};

static void *io_on_pool_thread(void *arg)
{
    struct pool_io *p = arg;
    return PTR_OF(all_io_calls(p->fd, p->wfd));
}

static void *main_io_on_pool(void *arg)
{
    struct pool_io *p = arg;
    void *failures = PTR_OF(-1);
    CHECK_OK(corio_run_blocking(io_on_pool_thread, p, &failures));
    CHECK_EQ(INT_OF(failures), 0);
    /* Nothing was consumed or written by the refused calls. */
    char buf[8];
    CHECK_ERR((int)corio_read_until(p->fd, buf, sizeof buf, corio_now()), CORIO_ETIMEDOUT);
    return NULL;
}

TEST(io_outside_a_task)
{
    int p[2];
    nb_pipe(p);
    /* No runtime at all. */
    CHECK_EQ(all_io_calls(p[0], p[1]), 0);
    /* Inside a runtime, but on a blocking-pool thread. */
    struct pool_io pi = {p[0], p[1]};
    run_main_checked(2, main_io_on_pool, &pi);
    char buf[8];
    CHECK_EQ(read(p[0], buf, sizeof buf), -1);
    CHECK_EQ(errno, EAGAIN);
    CHECK_OK(corio_close(p[0]));
    CHECK_OK(corio_close(p[1]));
}

/* ---- a descriptor in blocking mode ----
 *
 * "corio puts descriptors it waits on in non-blocking mode", so a pipe
 * made with plain pipe() must behave like any other: a read with a
 * deadline on an empty one times out instead of blocking the loop's
 * thread. Run in a child with an alarm: if the loop thread is stuck in
 * read(2), nothing else can end the test. */

static void *main_blocking_mode_pipe(void *arg)
{
    int p[2];
    CHECK_EQ(pipe(p), 0);
    char buf[8];
    test_stopwatch sw = test_stopwatch_start();
    CHECK_ERR((int)corio_read_until(p[0], buf, sizeof buf, corio_deadline_in(50 * CORIO_MSEC)),
              CORIO_ETIMEDOUT);
    CHECK_ELAPSED_WITHIN(&sw, 50 * CORIO_MSEC, CORIO_MSEC, 200 * CORIO_MSEC);
    CHECK_EQ(corio_write(p[1], "bm", 2), 2);
    CHECK_EQ(corio_read(p[0], buf, sizeof buf), 2);
    CHECK_OK(corio_close(p[0]));
    CHECK_OK(corio_close(p[1]));
    return NULL;
}

static int child_blocking_mode_pipe(void *arg)
{
    signal(SIGALRM, SIG_DFL); /* not the watchdog's: just die of it */
    alarm((unsigned)(3 * test_slow())); /* Valgrind, qemu: the runtime starts slowly */
    run_main(2, main_blocking_mode_pipe, NULL);
    return 0;
}

TEST(blocking_mode_descriptor)
{
    test_child c;
    test_run_child(&c, child_blocking_mode_pipe, NULL);
    if (!WIFEXITED(c.status) || WEXITSTATUS(c.status) != 0)
        FAIL_("child %s %d: a read_until on an empty pipe made with pipe() blocked the loop "
              "thread instead of timing out (SIGALRM after 3 s)\n%s",
              WIFSIGNALED(c.status) ? "killed by signal" : "exited with",
              WIFSIGNALED(c.status) ? WTERMSIG(c.status) : WEXITSTATUS(c.status), c.out);
}

/* ---- fairness: a task whose IO never waits still lets others run ----
 *
 * corio.h: such a task yields every 128 calls. On one loop, a reader of
 * /dev/zero (always ready) reads until a neighbour task has run; the
 * neighbour must get the CPU within a few budgets, not after the reader
 * gives up. */
static _Atomic int neighbour_ran;

static void *set_neighbour_ran(void *arg)
{
    atomic_store(&neighbour_ran, 1);
    return NULL;
}

/* Makes `call(ctx)` (one IO call that completes without waiting) until a
 * neighbour spawned on this loop has run, at most `cap` times, and checks
 * that it ran within two budgets. */
static void neighbour_runs_within_budget(void (*call)(void *ctx), void *ctx, long cap,
                                         const char *what)
{
    atomic_store(&neighbour_ran, 0);
    corio_task *t;
    CHECK_OK(corio_spawn_on(&t, (unsigned)corio_loop_index(), set_neighbour_ran, NULL));
    long calls = 0;
    while (!atomic_load(&neighbour_ran) && calls < cap) {
        call(ctx);
        calls++;
    }
    fprintf(stderr, "   the neighbour ran after %ld %s\n", calls, what);
    CHECK_LE(calls, 2 * 128);
    CHECK_OK(corio_join(t, NULL));
}

static void read_zero(void *ctx)
{
    char buf[64];
    CHECK_EQ(corio_read(*(int *)ctx, buf, sizeof buf), (ssize_t)sizeof buf);
}

static void *main_io_budget(void *arg)
{
    int fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    CHECK_GE(fd, 0);
    neighbour_runs_within_budget(read_zero, &fd, 100000, "reads");
    CHECK_OK(corio_close(fd));
    return NULL;
}

TEST(busy_reader_lets_neighbours_run)
{
    run_main_checked(1, main_io_budget, NULL);
}

/* The same for corio_wait_fd on a descriptor that is always ready (a
 * socket with room to write): a task that waits with it and makes its
 * own non-blocking calls (a TLS or protocol library's loop) never waits
 * either, and is an IO call like the others for the budget. */
static void wait_writable_now(void *ctx)
{
    CHECK_OK(corio_wait_fd(*(int *)ctx, CORIO_WRITABLE, CORIO_FOREVER));
}

static void *main_wait_fd_budget(void *arg)
{
    int sv[2];
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    neighbour_runs_within_budget(wait_writable_now, &sv[0], 100000, "waits");
    CHECK_OK(corio_close(sv[0]));
    CHECK_OK(corio_close(sv[1]));
    return NULL;
}

TEST(busy_wait_fd_lets_neighbours_run)
{
    run_main_checked(1, main_wait_fd_budget, NULL);
}

/* And for corio_connect: a connect to a Unix listener completes at once
 * while its backlog has room (here room for more connects than the
 * test makes), so a task connecting in a loop never waits either. */
struct unix_target {
    struct sockaddr_un addr;
    socklen_t alen;
};

static void connect_once(void *ctx)
{
    struct unix_target *to = ctx;
    int fd = corio_socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK_GE(fd, 0);
    CHECK_OK(corio_connect(fd, (struct sockaddr *)&to->addr, to->alen));
    CHECK_OK(corio_close(fd));
}

static void *main_connect_budget(void *arg)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    /* Abstract: nothing in the file system to clean up. */
    snprintf(addr.sun_path + 1, sizeof addr.sun_path - 1, "corio-connect-budget-%d",
             (int)getpid());
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
                                 strlen(addr.sun_path + 1));
    int l = corio_socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK_GE(l, 0);
    CHECK_EQ(bind(l, (struct sockaddr *)&addr, alen), 0);
    CHECK_EQ(listen(l, 1000), 0);
    struct unix_target to = {.addr = addr, .alen = alen};
    neighbour_runs_within_budget(connect_once, &to, 600, "connects");
    CHECK_OK(corio_close(l));
    return NULL;
}

TEST(busy_connector_lets_neighbours_run)
{
    run_main_checked(1, main_connect_budget, NULL);
}

int main(int argc, char **argv)
{
    RUN(wait_readable_blocks_until_written);
    RUN(read_data_then_eof);
    RUN(eof_after_short_read);
    RUN(wait_writable_on_full_pipe);
    RUN(read_deadline_loses_nothing);
    RUN(past_deadline_with_data_ready);
    RUN(close_wakes_reader_on_same_loop);
    RUN(descriptor_reuse);
    RUN(descriptor_reuse_other_kind);
    RUN(number_reused_while_registering);
    RUN(second_reader_on_loop_is_busy);
    RUN(bad_arguments);
    RUN(io_outside_a_task);
    RUN(blocking_mode_descriptor);
    RUN(busy_reader_lets_neighbours_run);
    RUN(busy_wait_fd_lets_neighbours_run);
    RUN(busy_connector_lets_neighbours_run);
    return test_summary();
}
