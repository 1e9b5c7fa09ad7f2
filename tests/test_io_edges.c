/*
 * test_io_edges.c: the descriptor layer's edge cases. A number closed
 * and reused while tasks wait on it (the waiter woken by readiness just
 * before the close, the waiter slot free for the new file at once, a
 * close from a thread outside every runtime, a close on another loop that
 * must wake the waiter itself, a wait begun while one close or two
 * overlapping closes of the number are under way, which must sleep
 * until they are done); reads that leave the data
 * queued (MSG_PEEK), return one packet (O_DIRECT pipes), stop at TCP's
 * urgent mark or end a Unix stream read at a message that carried
 * descriptors, and so prove nothing drained; reads of the error queue or
 * the urgent byte, which never wait and leave the data queue's readiness
 * alone; regular files, which epoll
 * cannot watch; a connect to a Unix listener whose backlog is full.
 *
 * Where a bug would make a call wait for an event that never comes, the
 * test waits for it with a generous deadline (10 s) and fails on
 * CORIO_ETIMEDOUT: no check depends on how fast the machine is.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "test.h"

#define PATIENCE (10 * CORIO_SEC)

static void stream_pair(int sv[2])
{
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
}

struct reader {
    int fd;
    _Atomic int waiting;
    ssize_t n;
    char buf[32];
};

static void *read_forever(void *arg)
{
    struct reader *r = arg;
    atomic_store(&r->waiting, 1);
    r->n = corio_read(r->fd, r->buf, sizeof r->buf);
    return NULL;
}

/* Spawn a reader of fd on this loop and return once it waits. */
static corio_task *reader_waiting(struct reader *r)
{
    corio_task *t;
    CHECK_OK(corio_spawn_on(&t, (unsigned)corio_loop_index(), read_forever, r));
    while (!atomic_load(&r->waiting))
        CHECK_OK(corio_yield());
    CHECK_OK(corio_sleep(CORIO_MSEC)); /* now in its wait, not just before */
    return t;
}

/* Writes "y" to fd `arg` after a pause, from a task of this loop. */
static void *late_writer(void *arg)
{
    CHECK_OK(corio_sleep(5 * CORIO_MSEC));
    CHECK_EQ(write((int)INT_OF(arg), "y", 1), 1);
    return NULL;
}

/* Read rfd while a late writer sends a byte on wfd: the poll must wake
 * this task, the descriptor's waiter now. */
static void read_from_late_writer(int rfd, int wfd)
{
    corio_task *w;
    char c = 0;
    CHECK_OK(corio_spawn(&w, late_writer, PTR_OF(wfd)));
    CHECK_EQ(corio_read_until(rfd, &c, 1, corio_deadline_in(PATIENCE)), 1);
    CHECK_EQ(c, 'y');
    CHECK_OK(corio_join(w, NULL));
}

/* ---- woken by readiness, then the number is closed and reused ---- */

struct woken_close {
    int a[2], b[2];
    int fresh[2]; /* the connection B opens, which gets A's number */
    ssize_t a_n;
    char a_buf[8];
};

static void *woken_reader_a(void *arg)
{
    struct woken_close *w = arg;
    w->a_n = corio_read(w->a[0], w->a_buf, sizeof w->a_buf);
    return NULL;
}

/* Woken in the same poll as A, but runs first: closes A's descriptor and
 * opens a new connection, which gets the same number, with data queued. */
static void *woken_closer_b(void *arg)
{
    struct woken_close *w = arg;
    char c;
    CHECK_EQ(corio_read(w->b[0], &c, 1), 1);
    CHECK_OK(corio_close(w->a[0]));
    stream_pair(w->fresh);
    CHECK_EQ(w->fresh[0], w->a[0]); /* the kernel hands out the lowest free number */
    CHECK_EQ(write(w->fresh[1], "NEW", 3), 3);
    return NULL;
}

static void *main_woken_then_closed(void *arg)
{
    long rounds = test_scaled(200), ebadf = 0;
    unsigned here = (unsigned)corio_loop_index();
    for (long i = 0; i < rounds; i++) {
        struct woken_close w = {.a_n = 12345};
        stream_pair(w.b);
        stream_pair(w.a);
        corio_task *a, *b;
        CHECK_OK(corio_spawn_on(&b, here, woken_closer_b, &w));
        CHECK_OK(corio_spawn_on(&a, here, woken_reader_a, &w));
        CHECK_OK(corio_sleep(CORIO_MSEC)); /* both wait now */
        /* Both readable before the loop polls again, B's edge first. */
        CHECK_EQ(write(w.b[1], "b", 1), 1);
        CHECK_EQ(write(w.a[1], "old", 3), 3);
        CHECK_OK(corio_join(b, NULL));
        CHECK_OK(corio_join(a, NULL));
        /* A's file was closed under it: EBADF, never the new file's data
         * (its own data only if it ran before B after all). */
        if (w.a_n >= 0) {
            CHECK_EQ(w.a_n, 3);
            CHECK(memcmp(w.a_buf, "old", 3) == 0);
        } else {
            CHECK_ERR((int)w.a_n, CORIO_EBADF);
            ebadf++;
        }
        int fds[] = {w.a[1], w.b[0], w.b[1], w.fresh[0], w.fresh[1]};
        for (size_t k = 0; k < sizeof fds / sizeof fds[0]; k++)
            CHECK_OK(corio_close(fds[k]));
    }
    /* B's edge comes first in the poll (nearly) every time: the case
     * this test is about did happen. */
    CHECK_GE(ebadf, rounds / 2);
    return NULL;
}

TEST(woken_then_closed_is_ebadf)
{
    run_main_checked(1, main_woken_then_closed, NULL);
}

/* ---- the waiter slot is free for the new file at once ---- */

static void *main_slot_freed_at_close(void *arg)
{
    long rounds = test_scaled(200);
    for (long i = 0; i < rounds; i++) {
        int sv[2];
        stream_pair(sv);
        struct reader r = {.fd = sv[0], .n = 12345};
        corio_task *t = reader_waiting(&r);
        /* Close it (the reader is queued with EBADF but has not run) and
         * reuse the number before the reader runs. */
        CHECK_OK(corio_close(sv[0]));
        int nv[2];
        stream_pair(nv);
        CHECK_EQ(nv[0], sv[0]);
        char c;
        CHECK_ERR((int)corio_read_until(nv[0], &c, 1, corio_now()), CORIO_ETIMEDOUT);
        CHECK_ERR(corio_wait_fd(nv[0], CORIO_READABLE, corio_now()), CORIO_ETIMEDOUT);
        CHECK_EQ(write(nv[1], "z", 1), 1);
        CHECK_EQ(corio_read_until(nv[0], &c, 1, corio_deadline_in(PATIENCE)), 1);
        CHECK_OK(corio_join(t, NULL));
        CHECK_ERR((int)r.n, CORIO_EBADF);
        CHECK_OK(corio_close(nv[0]));
        CHECK_OK(corio_close(nv[1]));
        CHECK_OK(corio_close(sv[1]));
    }
    return NULL;
}

TEST(waiter_slot_freed_at_close)
{
    run_main_checked(1, main_slot_freed_at_close, NULL);
}

/* ---- a waiter whose wait ended frees its slot before it runs ---- */

/* This task reads rfd after another task's wait on it ended: the read
 * waits as any would, and gets a late writer's byte (with_data) or times
 * out; never CORIO_EBUSY. */
static void read_as_any_waiter(int rfd, int wfd, bool with_data)
{
    if (with_data) {
        read_from_late_writer(rfd, wfd);
        return;
    }
    char c;
    CHECK_ERR((int)corio_read_until(rfd, &c, 1, corio_deadline_in(CORIO_MSEC)), CORIO_ETIMEDOUT);
}

/* A reader of this loop waits; its wait is cancelled, and before it
 * runs again (cancelling does not yield) this task reads the same
 * descriptor. The slot is the ended wait's no longer: the read waits
 * and gets its data (from the late writer: the poll must wake this
 * task, not the cancelled one, and the cancelled one must not clear the
 * slot when it runs), or times out as any read would; never
 * CORIO_EBUSY. Before the fix, CORIO_EBUSY until the reader had run. */
static void *main_slot_freed_at_cancel(void *arg)
{
    long rounds = test_scaled(100);
    for (long i = 0; i < rounds; i++) {
        int sv[2];
        stream_pair(sv);
        bool with_data = i % 2 == 0;
        struct reader r = {.fd = sv[0], .n = 12345};
        corio_task *t = reader_waiting(&r);
        char c = 0;
        /* While it waits, the slot is its own. */
        CHECK_ERR((int)corio_read_until(sv[0], &c, 1, corio_deadline_in(PATIENCE)),
                  CORIO_EBUSY);
        CHECK_OK(corio_cancel(t));
        read_as_any_waiter(sv[0], sv[1], with_data);
        CHECK_OK(corio_join(t, NULL));
        CHECK_ERR((int)r.n, CORIO_ECANCELED);
        CHECK_OK(corio_close(sv[0]));
        CHECK_OK(corio_close(sv[1]));
    }
    return NULL;
}

TEST(waiter_slot_freed_at_cancel)
{
    run_main_checked(1, main_slot_freed_at_cancel, NULL);
}

/* The same for a wait that timed out: the reader's deadline and this
 * task's sleep pass while a spinning task holds the loop, so one poll
 * fires both timers, this task's first (its deadline is earlier), and
 * this task reads while the timed-out reader has not run. */
struct timed_reader {
    int fd;
    corio_time_t deadline;
    _Atomic int waiting;
    ssize_t n;
};

static void *read_until_deadline(void *arg)
{
    struct timed_reader *r = arg;
    char c;
    atomic_store(&r->waiting, 1);
    r->n = corio_read_until(r->fd, &c, 1, r->deadline);
    return NULL;
}

struct spinner {
    corio_time_t main_wake, until;
    bool began_in_time; /* took the loop before main's wake-up was due */
};

static void *spin_until(void *arg)
{
    struct spinner *s = arg;
    s->began_in_time = corio_now() < s->main_wake;
    while (corio_now() <= s->until)
        ;
    return NULL;
}

/* One round; false if it came too late to test anything (a slow lane, a
 * busy host, qemu): the reader's deadline had passed before it began to
 * wait, so it ran first; or main's wake-up was due before the spinner
 * took the loop (main's sleep was a mere yield, or its timer fired in a
 * pass before the spinner ran), so main could resume in no timer pass
 * after the reader's deadline, its wait not yet timed out. A spinner
 * that begins before main's wake-up is due holds the loop past the
 * reader's deadline, and the one pass after it fires both timers. */
static bool slot_freed_at_timeout_round(bool with_data)
{
    unsigned here = (unsigned)corio_loop_index();
    int sv[2];
    stream_pair(sv);
    corio_time_t wake = corio_deadline_in(10 * CORIO_MSEC);
    struct timed_reader r = {.fd = sv[0], .deadline = wake + 1, .n = 12345};
    corio_task *t, *spinner;
    CHECK_OK(corio_spawn_on(&t, here, read_until_deadline, &r));
    while (!atomic_load(&r.waiting))
        CHECK_OK(corio_yield());
    struct spinner s = {.main_wake = wake, .until = r.deadline + CORIO_MSEC};
    CHECK_OK(corio_spawn_on(&spinner, here, spin_until, &s));
    CHECK_OK(corio_sleep_until(wake));
    /* Timed out, not run yet. */
    bool in_time = s.began_in_time && r.n == 12345;
    if (in_time)
        read_as_any_waiter(sv[0], sv[1], with_data);
    CHECK_OK(corio_join(t, NULL));
    CHECK_OK(corio_join(spinner, NULL));
    CHECK_ERR((int)r.n, CORIO_ETIMEDOUT);
    CHECK_OK(corio_close(sv[0]));
    CHECK_OK(corio_close(sv[1]));
    return in_time;
}

static void *main_slot_freed_at_timeout(void *arg)
{
    long rounds = test_scaled(50), late = 0;
    for (long i = 0; i < rounds; i++) {
        while (!slot_freed_at_timeout_round(i % 2 == 0))
            CHECK_LE(++late, rounds * 10);
    }
    if (late)
        fprintf(stderr, "   %ld late rounds done again\n", late);
    return NULL;
}

TEST(waiter_slot_freed_at_timeout)
{
    run_main_checked(1, main_slot_freed_at_timeout, NULL);
}

/* ---- corio_close from a thread outside every runtime ---- */

static void *plain_thread_close(void *arg)
{
    return PTR_OF(corio_close((int)INT_OF(arg)));
}

static void *main_foreign_close(void *arg)
{
    long rounds = test_scaled(100);
    for (long i = 0; i < rounds; i++) {
        int sv[2];
        stream_pair(sv);
        char c;
        /* Registered with this loop (and marked drained). */
        CHECK_ERR((int)corio_read_until(sv[0], &c, 1, corio_now()), CORIO_ETIMEDOUT);
        /* Closed by a thread that belongs to no runtime. Joining it
         * blocks this loop for a moment: fine in a test. */
        pthread_t th;
        void *rc = PTR_OF(-1);
        CHECK_EQ(pthread_create(&th, NULL, plain_thread_close, PTR_OF(sv[0])), 0);
        CHECK_EQ(pthread_join(th, &rc), 0);
        CHECK_OK((int)INT_OF(rc));
        /* The number comes back as a new file: it must be registered
         * afresh, or the wait below would never wake. */
        int nv[2];
        stream_pair(nv);
        CHECK_EQ(nv[0], sv[0]);
        read_from_late_writer(nv[0], nv[1]);
        CHECK_OK(corio_close(nv[0]));
        CHECK_OK(corio_close(nv[1]));
        CHECK_OK(corio_close(sv[1]));
    }
    return NULL;
}

TEST(close_from_plain_thread)
{
    run_main_checked(1, main_foreign_close, NULL);
}

/* ---- closed on another loop while a task there waits ---- */

/* The reader waits on loop 1, held off its poll by a spinning task until
 * a task on loop 0 has closed the number (after corio_shutdown, as
 * corio.h advised for another loop, or not; or on the blocking pool).
 * The kernel drops a closed file's pending events, the shutdown's too,
 * so only the close itself can wake the reader: before the fix it slept
 * to its deadline (or for ever), 16 runs in 30 even with loop 1 idle
 * and no spinner. */

struct remote_close {
    struct reader r;
    _Atomic int spinning, closed;
    int how; /* 0: close; 1: shutdown, then close; 2: close on the pool */
};

static void *close_on_pool(void *arg)
{
    return PTR_OF(corio_close((int)INT_OF(arg)));
}

/* corio_close(fd) from a blocking-pool thread: a thread of the runtime
 * that is no loop. */
static void close_via_pool(int fd)
{
    void *closed = PTR_OF(-1);
    CHECK_OK(corio_run_blocking(close_on_pool, PTR_OF(fd), &closed));
    CHECK_OK((int)INT_OF(closed));
}

/* Holds loop 1 until the close, then, before loop 1 polls (and so
 * before any sweep there), opens a file that gets the number and waits
 * on it: the reader of the old file must not keep the slot. */
static void *spin_until_closed(void *arg)
{
    struct remote_close *rc = arg;
    atomic_store(&rc->spinning, 1);
    while (!atomic_load(&rc->closed))
        ;
    int nv[2];
    stream_pair(nv);
    CHECK_EQ(nv[0], rc->r.fd);
    char c;
    CHECK_ERR((int)corio_read_until(nv[0], &c, 1, corio_now()), CORIO_ETIMEDOUT);
    CHECK_OK(corio_close(nv[0]));
    CHECK_OK(corio_close(nv[1]));
    return NULL;
}

static void *read_with_patience(void *arg)
{
    struct reader *r = arg;
    atomic_store(&r->waiting, 1);
    r->n = corio_read_until(r->fd, r->buf, sizeof r->buf, corio_deadline_in(PATIENCE));
    return NULL;
}

static void *close_from_loop_0(void *arg)
{
    long rounds = test_scaled(100);
    for (long i = 0; i < rounds; i++) {
        struct remote_close rc = {.r = {.n = 12345}, .how = (int)(i % 3)};
        int sv[2];
        stream_pair(sv);
        rc.r.fd = sv[0];
        corio_task *reader, *spinner;
        CHECK_OK(corio_spawn_on(&reader, 1, read_with_patience, &rc.r));
        /* Once it says so, it goes straight into its wait: loop 1 runs
         * the spinner only after that. */
        CHECK(test_await(&rc.r.waiting, 1));
        CHECK_OK(corio_spawn_on(&spinner, 1, spin_until_closed, &rc));
        CHECK(test_await(&rc.spinning, 1));
        if (rc.how == 1)
            CHECK_OK(corio_shutdown(sv[0], SHUT_RDWR));
        if (rc.how == 2)
            close_via_pool(sv[0]);
        else
            CHECK_OK(corio_close(sv[0]));
        atomic_store(&rc.closed, 1);
        CHECK_OK(corio_join(spinner, NULL));
        CHECK_OK(corio_join(reader, NULL));
        CHECK_ERR((int)rc.r.n, CORIO_EBADF);
        CHECK_OK(corio_close(sv[1]));
    }
    return NULL;
}

TEST(close_on_another_loop_wakes_the_waiter)
{
    struct test_on_loop_0 body = {close_from_loop_0, NULL};
    run_main_checked(2, test_main_on_loop_0, &body);
}

/* ---- a wait that begins while another thread is inside corio_close ----
 *
 * corio_close marks the number closed, then closes it. A task of another
 * loop that waits on it in between registers the still-open file anew and
 * waits; the close then takes its registration (and any event) with it.
 * This file's close() holds a chosen number's close until told, so the
 * test can put the wait there. */

static _Atomic int close_hold_fd = -1;
static _Atomic int close_held, close_release;
/* The same, after the system call: the number is free (and may be
 * reused) but the close has not returned. */
static _Atomic int close_after_fd = -1;
static _Atomic int close_after_held, close_after_release;

int close(int fd)
{
    if (fd >= 0 && atomic_load(&close_hold_fd) == fd) {
        atomic_store(&close_hold_fd, -1);
        atomic_store(&close_held, 1);
        while (!atomic_load(&close_release))
            ;
    }
    if (fd >= 0 && atomic_load(&close_after_fd) == fd) {
        atomic_store(&close_after_fd, -1);
        int rc = (int)syscall(SYS_close, fd);
        atomic_store(&close_after_held, 1);
        while (!atomic_load(&close_after_release))
            ;
        return rc;
    }
    return (int)syscall(SYS_close, fd);
}

struct mid_close {
    struct reader r;
    _Atomic int spinning, stop;
};

static void *close_held_on_pool(void *arg)
{
    struct mid_close *mc = arg;
    close_via_pool(mc->r.fd);
    return NULL;
}

static void *spin_until_stopped(void *arg)
{
    struct mid_close *mc = arg;
    atomic_store(&mc->spinning, 1);
    while (!atomic_load(&mc->stop))
        ;
    return NULL;
}

static void *wait_in_close_from_loop_0(void *arg)
{
    (void)arg;
    long rounds = test_scaled(10);
    for (long i = 0; i < rounds; i++) {
        struct mid_close mc = {.r = {.n = 12345}};
        int sv[2];
        stream_pair(sv);
        mc.r.fd = sv[0];
        atomic_store(&close_held, 0);
        atomic_store(&close_release, 0);
        atomic_store(&close_hold_fd, sv[0]);
        corio_task *closer, *reader, *spinner;
        CHECK_OK(corio_spawn_on(&closer, 0, close_held_on_pool, &mc));
        /* The pool thread has marked the number closed and holds in close(). */
        CHECK(test_await(&close_held, 1));
        CHECK_OK(corio_spawn_on(&reader, 1, read_with_patience, &mc.r));
        CHECK(test_await(&mc.r.waiting, 1));
        CHECK_OK(corio_spawn_on(&spinner, 1, spin_until_stopped, &mc));
        /* The reader waits (before the fix: registered on the file being
         * closed) or pauses until the close is done (after it). */
        CHECK(test_await(&mc.spinning, 1));
        if (i % 2) {
            /* Cancelled meanwhile: it ends now, as it would asleep, not
             * when the close is done (a join with patience fails instead
             * of hanging while the close is still held). */
            CHECK_OK(corio_cancel(reader));
            atomic_store(&mc.stop, 1);
            CHECK_OK(corio_join(spinner, NULL));
            CHECK_OK(corio_join_until(reader, NULL, corio_deadline_in(PATIENCE)));
            CHECK_ERR((int)mc.r.n, CORIO_ECANCELED);
            atomic_store(&close_release, 1);
            CHECK_OK(corio_join(closer, NULL));
        } else {
            atomic_store(&close_release, 1);
            CHECK_OK(corio_join(closer, NULL));
            atomic_store(&mc.stop, 1);
            CHECK_OK(corio_join(spinner, NULL));
            CHECK_OK(corio_join(reader, NULL));
            CHECK_ERR((int)mc.r.n, CORIO_EBADF);
        }
        CHECK_OK(corio_close(sv[1]));
    }
    return NULL;
}

TEST(wait_begun_during_a_close_elsewhere_is_woken)
{
    struct test_on_loop_0 body = {wait_in_close_from_loop_0, NULL};
    run_main_checked(2, test_main_on_loop_0, &body);
}

/* ---- two closes of one number in flight at once ----
 *
 * The first close has let the number go (close(2) returned) but has not
 * returned itself; a new connection gets the number, and a second close
 * of it holds before its close(2). A reader of the new file meanwhile
 * must not register it: the second close would take the registration
 * unseen, as in the test above. The two closes end in either order. */

static void *overlapping_closes_from_loop_0(void *arg)
{
    (void)arg;
    long rounds = test_scaled(10);
    for (long i = 0; i < rounds; i++) {
        struct mid_close mc = {.r = {.n = 12345}};
        int sv[2], nv[2];
        stream_pair(sv);
        mc.r.fd = sv[0];
        atomic_store(&close_held, 0);
        atomic_store(&close_release, 0);
        atomic_store(&close_after_held, 0);
        atomic_store(&close_after_release, 0);
        atomic_store(&close_after_fd, sv[0]);
        corio_task *first, *second, *reader, *spinner;
        CHECK_OK(corio_spawn_on(&first, 0, close_held_on_pool, &mc));
        CHECK(test_await(&close_after_held, 1));
        /* The number is free: the next connection gets it. */
        stream_pair(nv);
        CHECK_EQ(nv[0], sv[0]);
        atomic_store(&close_hold_fd, nv[0]);
        CHECK_OK(corio_spawn_on(&second, 0, close_held_on_pool, &mc));
        CHECK(test_await(&close_held, 1));
        CHECK_OK(corio_spawn_on(&reader, 1, read_with_patience, &mc.r));
        CHECK(test_await(&mc.r.waiting, 1));
        CHECK_OK(corio_spawn_on(&spinner, 1, spin_until_stopped, &mc));
        /* The reader waits (before the fix: registered on the file the
         * second close is taking) or pauses until both are done. */
        CHECK(test_await(&mc.spinning, 1));
        atomic_store(&mc.stop, 1);
        CHECK_OK(corio_join(spinner, NULL));
        if (i % 2) {
            atomic_store(&close_after_release, 1);
            CHECK_OK(corio_join(first, NULL));
            atomic_store(&close_release, 1);
            CHECK_OK(corio_join(second, NULL));
        } else {
            atomic_store(&close_release, 1);
            CHECK_OK(corio_join(second, NULL));
            atomic_store(&close_after_release, 1);
            CHECK_OK(corio_join(first, NULL));
        }
        CHECK_OK(corio_join(reader, NULL));
        CHECK_ERR((int)mc.r.n, CORIO_EBADF);
        CHECK_OK(corio_close(sv[1]));
        CHECK_OK(corio_close(nv[1]));
    }
    return NULL;
}

TEST(overlapping_closes_of_one_number_keep_waits_off_it)
{
    struct test_on_loop_0 body = {overlapping_closes_from_loop_0, NULL};
    run_main_checked(2, test_main_on_loop_0, &body);
}

/* ---- a task racing a close does not spin ----
 *
 * A close(2) can take long (a lingering socket: up to its SO_LINGER
 * time). A reader that finds the number being closed must leave its
 * loop's thread idle meanwhile: loop 1, with nothing else to run, is
 * seen asleep in the kernel (not runnable), which a task that only
 * yields never lets it be. Its deadline still ends the wait. */

/* Whether lt's thread is seen not runnable within PATIENCE / 2 (the
 * reader's own deadline, PATIENCE, must not end its wait first). */
static bool loop_thread_sleeps(const struct test_loop_thread *lt)
{
    return test_loop_thread_sleeps(lt, PATIENCE / 2);
}

static void *read_briefly(void *arg)
{
    struct reader *r = arg;
    atomic_store(&r->waiting, 1);
    r->n = corio_read_until(r->fd, r->buf, sizeof r->buf, corio_deadline_in(20 * CORIO_MSEC));
    return NULL;
}

static void *racing_reader_sleeps_from_loop_0(void *arg)
{
    (void)arg;
    struct test_loop_thread lt = {0};
    corio_task *t;
    CHECK_OK(corio_spawn_on(&t, 1, test_note_loop_thread, &lt));
    CHECK_OK(corio_join(t, NULL));
    long rounds = test_scaled(4);
    for (long i = 0; i < rounds; i++) {
        struct mid_close mc = {.r = {.n = 12345}};
        int sv[2];
        stream_pair(sv);
        mc.r.fd = sv[0];
        atomic_store(&close_held, 0);
        atomic_store(&close_release, 0);
        atomic_store(&close_hold_fd, sv[0]);
        corio_task *closer, *reader;
        CHECK_OK(corio_spawn_on(&closer, 0, close_held_on_pool, &mc));
        CHECK(test_await(&close_held, 1));
        /* Odd rounds: a deadline, which ends the wait while the close
         * is still held. */
        CHECK_OK(corio_spawn_on(&reader, 1, i % 2 ? read_briefly : read_with_patience, &mc.r));
        CHECK(test_await(&mc.r.waiting, 1));
        if (i % 2) {
            CHECK_OK(corio_join_until(reader, NULL, corio_deadline_in(PATIENCE)));
            CHECK_ERR((int)mc.r.n, CORIO_ETIMEDOUT);
        }
        CHECK(loop_thread_sleeps(&lt));
        atomic_store(&close_release, 1);
        CHECK_OK(corio_join(closer, NULL));
        if (!(i % 2)) {
            CHECK_OK(corio_join(reader, NULL));
            CHECK_ERR((int)mc.r.n, CORIO_EBADF);
        }
        CHECK_OK(corio_close(sv[1]));
    }
    return NULL;
}

TEST(task_racing_a_close_leaves_its_loop_idle)
{
    struct test_on_loop_0 body = {racing_reader_sleeps_from_loop_0, NULL};
    run_main_checked(2, test_main_on_loop_0, &body);
}

/* ---- reads that prove nothing drained ---- */

/* A read with no deadline of fd, whose data is queued but announced by no
 * new edge, returns `expect` (in a task, joined with PATIENCE: a read
 * waiting for an edge fails the join instead of hanging the test). */
static void read_without_edge(int fd, const char *expect)
{
    struct reader r = {.fd = fd, .n = 12345};
    corio_task *t;
    CHECK_OK(corio_spawn(&t, read_forever, &r));
    CHECK_OK(corio_join_until(t, NULL, corio_deadline_in(PATIENCE)));
    CHECK_EQ(r.n, (ssize_t)strlen(expect));
    CHECK(memcmp(r.buf, expect, strlen(expect)) == 0);
}

static void *main_peek(void *arg)
{
    int sv[2];
    test_tcp_pair(sv);
    CHECK_EQ(write(sv[1], "hello", 5), 5);
    char buf[64];
    /* Shorter than asked, but the bytes are still queued: no edge will
     * come for them, so the reads below must not wait for one. */
    CHECK_EQ(corio_recv_until(sv[0], buf, sizeof buf, MSG_PEEK, corio_deadline_in(PATIENCE)),
             5);
    read_without_edge(sv[0], "hello");
    CHECK_OK(corio_close(sv[0]));
    CHECK_OK(corio_close(sv[1]));
    return NULL;
}

TEST(peek_leaves_data_readable)
{
    run_main_checked(1, main_peek, NULL);
}

static void *main_packet_pipe(void *arg)
{
    int p[2];
    if (pipe2(p, O_DIRECT | O_NONBLOCK | O_CLOEXEC) != 0) {
        fprintf(stderr, "   no O_DIRECT pipes here (%s): skipped\n", strerror(errno));
        return NULL;
    }
    /* Two packets: each read returns one, however much room it has. */
    CHECK_EQ(write(p[1], "ab", 2), 2);
    CHECK_EQ(write(p[1], "cd", 2), 2);
    char buf[16];
    CHECK_EQ(corio_read_until(p[0], buf, sizeof buf, corio_deadline_in(PATIENCE)), 2);
    CHECK(memcmp(buf, "ab", 2) == 0);
    read_without_edge(p[0], "cd");
    CHECK_OK(corio_close(p[0]));
    CHECK_OK(corio_close(p[1]));
    return NULL;
}

TEST(packet_pipe_reads_are_not_drains)
{
    run_main_checked(1, main_packet_pipe, NULL);
}

/* sv[1], registered, has `first` then `rest` queued, sent so that a read
 * stops after `first`: once the loop has polled (spending the one edge
 * for all of it; if it comes later, the check only gets easier), a read
 * returns `first`, short, and the next read must find `rest` without an
 * edge. Closes the pair. */
static void short_read_leaves(int sv[2], const char *first, const char *rest)
{
    CHECK_OK(corio_sleep(20 * CORIO_MSEC));
    char buf[64];
    CHECK_EQ(corio_read_until(sv[1], buf, sizeof buf, corio_deadline_in(PATIENCE)),
             (ssize_t)strlen(first));
    CHECK(memcmp(buf, first, strlen(first)) == 0);
    read_without_edge(sv[1], rest);
    CHECK_OK(corio_close(sv[0]));
    CHECK_OK(corio_close(sv[1]));
}

static void *main_urgent_mark(void *arg)
{
    int sv[2];
    test_tcp_pair(sv);
    test_register_fd(sv[1]);
    CHECK_EQ(send(sv[0], "abc", 3, 0), 3);
    CHECK_EQ(send(sv[0], "X", 1, MSG_OOB), 1);
    CHECK_EQ(send(sv[0], "def", 3, 0), 3);
    /* TCP stops a read at the urgent mark: "abc", with "def" behind it. */
    short_read_leaves(sv, "abc", "def");
    return NULL;
}

TEST(urgent_mark_reads_are_not_drains)
{
    run_main_checked(1, main_urgent_mark, NULL);
}

static void *main_passed_descriptor(void *arg)
{
    int sv[2];
    stream_pair(sv);
    test_register_fd(sv[1]);
    CHECK_EQ(write(sv[0], "abc", 3), 3);
    /* One byte carrying a descriptor (our stdin), then more bytes. */
    union {
        char space[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct iovec iov = {.iov_base = "X", .iov_len = 1};
    struct msghdr m = {.msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = control.space,
                       .msg_controllen = sizeof control.space};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    int passed = 0;
    memcpy(CMSG_DATA(c), &passed, sizeof passed);
    CHECK_EQ(sendmsg(sv[0], &m, 0), 1);
    CHECK_EQ(write(sv[0], "def", 3), 3);
    /* A Unix stream read ends with the message that carried the
     * descriptor: "abcX", with "def" behind it. */
    short_read_leaves(sv, "abcX", "def");
    return NULL;
}

TEST(passed_descriptor_reads_are_not_drains)
{
    run_main_checked(1, main_passed_descriptor, NULL);
}

/* ---- reads of another queue (MSG_ERRQUEUE, MSG_OOB) never wait ---- */

/* A TCP socket with data queued, known ready (a full read took part of
 * it), then drained (a short read): a recv of the error queue or of the
 * urgent byte, with none there, must answer at once, whatever it says,
 * and leave the loop's knowledge of the data queue as it was: an empty
 * error queue says nothing about the data. Before the fix the first
 * error queue call waited for an edge (to its deadline) and marked the
 * socket drained, so the read of the 3 bytes queued all along waited for
 * ever; and after the short read either flag's call waited on the
 * drained mark before trying (an urgent read with a deadline then still
 * answered EINVAL, but only at the deadline: hence the call with no
 * deadline in a task, joined with PATIENCE). */
struct other_queue {
    int fd, flags;
    ssize_t n;
};

static void *recv_other_queue_forever(void *arg)
{
    struct other_queue *q = arg;
    char buf[64];
    q->n = corio_recv(q->fd, buf, sizeof buf, q->flags);
    return NULL;
}

static void check_other_queue_answer(ssize_t n, int flags)
{
    if (flags & MSG_ERRQUEUE)
        CHECK_ERR((int)n, CORIO_EAGAIN);
    else if (n >= 0 || n == CORIO_ETIMEDOUT) /* Linux: EINVAL, no urgent data */
        FAIL_("recv(MSG_OOB) without urgent data: %zd (%s)", n, corio_err_name((int)n));
}

static void recv_other_queue_at_once(int fd, int flags)
{
    char buf[64];
    check_other_queue_answer(
        corio_recv_until(fd, buf, sizeof buf, flags, corio_deadline_in(PATIENCE)), flags);
    struct other_queue q = {.fd = fd, .flags = flags, .n = 12345};
    corio_task *t;
    CHECK_OK(corio_spawn(&t, recv_other_queue_forever, &q));
    CHECK_OK(corio_join_until(t, NULL, corio_deadline_in(PATIENCE)));
    check_other_queue_answer(q.n, flags);
}

static void *main_other_queue(void *arg)
{
    int flags = (int)INT_OF(arg);
    int sv[2];
    test_tcp_pair(sv);
    test_register_fd(sv[0]);
    CHECK_EQ(write(sv[1], "hello", 5), 5);
    CHECK_OK(corio_sleep(20 * CORIO_MSEC)); /* the loop polls: the one edge is spent */
    char buf[8];
    CHECK_EQ(corio_read_until(sv[0], buf, 2, corio_deadline_in(PATIENCE)), 2);
    recv_other_queue_at_once(sv[0], flags);
    read_without_edge(sv[0], "llo"); /* with no deadline: 3 of 32, drained */
    recv_other_queue_at_once(sv[0], flags);
    /* A cancellation point like the other calls, though it never waits. */
    CHECK_OK(corio_cancel(corio_self()));
    CHECK_ERR((int)corio_recv(sv[0], buf, sizeof buf, flags), CORIO_ECANCELED);
    /* Still waits for data, and gets it, after all that. */
    read_from_late_writer(sv[0], sv[1]);
    CHECK_OK(corio_close(sv[0]));
    CHECK_OK(corio_close(sv[1]));
    return NULL;
}

TEST(error_queue_reads_never_wait)
{
    run_main_checked(1, main_other_queue, PTR_OF(MSG_ERRQUEUE));
}

TEST(urgent_reads_never_wait)
{
    run_main_checked(1, main_other_queue, PTR_OF(MSG_OOB));
}

/* ---- the caller's own MSG_DONTWAIT: one try, never a wait ----
 *
 * recv and recvfrom with MSG_DONTWAIT on an empty socket, and send and
 * sendto on a full one, answer CORIO_EAGAIN (with a deadline far away, a
 * call that waited would answer CORIO_ETIMEDOUT only then); with data
 * there, or room, they work as without the flag; and afterwards the
 * socket's waits work as before (a read waits for a late writer). Before,
 * the flag was passed to the kernel and its EAGAIN waited for an edge. */
static void *main_dontwait(void *arg)
{
    (void)arg;
    int sv[2];
    test_tcp_pair(sv);
    char buf[64];
    corio_time_t later = corio_deadline_in(PATIENCE);
    CHECK_ERR((int)corio_recv_until(sv[0], buf, sizeof buf, MSG_DONTWAIT, later), CORIO_EAGAIN);
    CHECK_ERR((int)corio_recvfrom_until(sv[0], buf, sizeof buf, MSG_DONTWAIT, NULL, NULL, later),
              CORIO_EAGAIN);
    CHECK_EQ(write(sv[1], "abc", 3), 3);
    corio_time_t give_up = corio_deadline_in(PATIENCE);
    ssize_t n;
    while ((n = corio_recv(sv[0], buf, sizeof buf, MSG_DONTWAIT)) == CORIO_EAGAIN) {
        CHECK(corio_now() < give_up); /* loopback delivers at once, but say so */
        CHECK_OK(corio_sleep(CORIO_MSEC));
    }
    CHECK_EQ(n, 3);
    CHECK(memcmp(buf, "abc", 3) == 0);
    read_from_late_writer(sv[0], sv[1]);

    /* Fill the writer's side: the last send takes part or nothing, the
     * next answers CORIO_EAGAIN at once. */
    static char block[65536];
    size_t sent = 0;
    for (;;) {
        n = corio_send_until(sv[1], block, sizeof block, MSG_DONTWAIT, later);
        if (n == CORIO_EAGAIN)
            break;
        CHECK_GT(n, 0);
        sent += (size_t)n;
        CHECK_LT(sent, (size_t)1 << 30);
    }
    CHECK_ERR((int)corio_sendto_until(sv[1], block, 1, MSG_DONTWAIT, NULL, 0, later), CORIO_EAGAIN);
    /* Drain it all; a plain send then waits for room as before. */
    for (size_t got = 0; got < sent;) {
        n = corio_read_until(sv[0], block, sizeof block, later);
        CHECK_GT(n, 0);
        got += (size_t)n;
    }
    CHECK_EQ(corio_send_until(sv[1], "z", 1, 0, later), 1);
    CHECK_EQ(corio_read_until(sv[0], buf, 1, later), 1);
    CHECK_EQ(buf[0], 'z');
    CHECK_OK(corio_close(sv[0]));
    CHECK_OK(corio_close(sv[1]));
    return NULL;
}

TEST(dontwait_sends_and_receives_never_wait)
{
    run_main_checked(1, main_dontwait, NULL);
}

/* ---- regular files: epoll cannot watch them, the calls just work ---- */

/* read(2) of zero bytes returns 0 at once, whatever is queued (recv(2)
 * of zero bytes on an empty TCP socket says EAGAIN instead, and waiting
 * for it is right). corio_read with no deadline, in a task joined with
 * PATIENCE: on a TCP socket known to be drained (not read yet, or read
 * short) the shortcut waited for an edge instead, which no data may ever
 * bring; on a pipe it returned 0. */
struct zero_read {
    int fd;
    ssize_t n;
};

static void *read_zero_forever(void *arg)
{
    struct zero_read *z = arg;
    z->n = corio_read(z->fd, NULL, 0);
    return NULL;
}

static void read_zero_now(int fd)
{
    struct zero_read z = {.fd = fd, .n = 12345};
    corio_task *t;
    CHECK_OK(corio_spawn(&t, read_zero_forever, &z));
    CHECK_OK(corio_join_until(t, NULL, corio_deadline_in(PATIENCE)));
    CHECK_EQ(z.n, 0);
}

static void *main_zero_length_read(void *arg)
{
    int sv[2];
    test_tcp_pair(sv);
    read_zero_now(sv[0]);
    /* And after a short read, which proves the socket drained. */
    CHECK_EQ(write(sv[1], "ab", 2), 2);
    char buf[8];
    CHECK_EQ(corio_read_until(sv[0], buf, sizeof buf, corio_deadline_in(PATIENCE)), 2);
    read_zero_now(sv[0]);
    CHECK_OK(corio_close(sv[0]));
    CHECK_OK(corio_close(sv[1]));
    return NULL;
}

TEST(zero_length_read_does_not_wait)
{
    run_main_checked(1, main_zero_length_read, NULL);
}

static void *main_regular_file(void *arg)
{
    char path[] = "/tmp/corio-io-edges-XXXXXX";
    int fd = mkstemp(path);
    CHECK_GE(fd, 0);
    CHECK_EQ(unlink(path), 0);
    for (int round = 0; round < 2; round++) {
        CHECK_EQ(corio_write(fd, "file data", 9), 9);
        CHECK_EQ(lseek(fd, 0, SEEK_SET), 0);
        char buf[32];
        CHECK_EQ(corio_read_until(fd, buf, sizeof buf, corio_deadline_in(PATIENCE)), 9);
        CHECK(memcmp(buf, "file data", 9) == 0);
        CHECK_EQ(corio_read(fd, buf, sizeof buf), 0); /* end of file, at once */
        CHECK_OK(corio_wait_fd(fd, CORIO_READABLE, corio_deadline_in(PATIENCE)));
        CHECK_OK(corio_wait_fd(fd, CORIO_WRITABLE, corio_deadline_in(PATIENCE)));
        CHECK_EQ(ftruncate(fd, 0), 0);
        CHECK_EQ(lseek(fd, 0, SEEK_SET), 0);
    }
    CHECK_OK(corio_close(fd));
    return NULL;
}

TEST(regular_file)
{
    run_main_checked(2, main_regular_file, NULL);
}

/* ---- a Unix listener with a full backlog ---- */

struct unix_server {
    struct sockaddr_un addr;
    int listener;
    int expect; /* connections to accept: the queued ones and the late one */
};

/* Accepts every connection expected, each with PATIENCE: the late one
 * comes when the connecting task, on this loop, next tries again (after
 * pauses of up to 64 ms, net.c), and with a deadline of 100 ms a loop
 * held up for a while gave up on it. */
static void *accept_later(void *arg)
{
    struct unix_server *s = arg;
    CHECK_OK(corio_sleep(20 * CORIO_MSEC));
    int fds[8];
    CHECK_LE(s->expect, 8);
    for (int i = 0; i < s->expect; i++) {
        fds[i] = corio_accept_until(s->listener, NULL, NULL, corio_deadline_in(PATIENCE));
        if (fds[i] < 0)
            FAIL_("accept %d of %d: %s", i + 1, s->expect, corio_err_name(fds[i]));
    }
    for (int i = 0; i < s->expect; i++)
        CHECK_OK(corio_close(fds[i]));
    return NULL;
}

static void *main_unix_backlog(void *arg)
{
    struct unix_server s = {.addr = {.sun_family = AF_UNIX}};
    snprintf(s.addr.sun_path, sizeof s.addr.sun_path, "/tmp/corio-io-edges-%d.sock",
             (int)getpid());
    unlink(s.addr.sun_path);
    s.listener = corio_socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK_GE(s.listener, 0);
    CHECK_EQ(bind(s.listener, (struct sockaddr *)&s.addr, sizeof s.addr), 0);
    CHECK_EQ(listen(s.listener, 0), 0);
    /* Fill the backlog: with no accept, connects soon stop succeeding. */
    int clients[8], n = 0, full = 0;
    for (; n < 8 && !full; n++) {
        clients[n] = corio_socket(AF_UNIX, SOCK_STREAM, 0);
        CHECK_GE(clients[n], 0);
        int rc = corio_connect_until(clients[n], (struct sockaddr *)&s.addr, sizeof s.addr,
                                     corio_deadline_in(5 * CORIO_MSEC));
        if (rc == CORIO_ETIMEDOUT)
            full = 1; /* never CORIO_EAGAIN: the calls wait instead */
        else
            CHECK_OK(rc);
    }
    CHECK(full);
    /* A connect that starts while the backlog is full completes once the
     * server accepts; with no deadline too (CORIO_FOREVER is -1: no
     * "now >= deadline" may apply to it). Queued: every client but the
     * last, whose connect timed out (a Unix connect refused for a full
     * backlog queues nothing); then the late one. */
    s.expect = n;
    corio_task *server;
    CHECK_OK(corio_spawn(&server, accept_later, &s));
    int late = corio_socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK_GE(late, 0);
    CHECK_OK(corio_connect(late, (struct sockaddr *)&s.addr, sizeof s.addr));
    CHECK_OK(corio_join(server, NULL));
    CHECK_OK(corio_close(late));
    for (int i = 0; i < n; i++)
        CHECK_OK(corio_close(clients[i]));
    CHECK_OK(corio_close(s.listener));
    unlink(s.addr.sun_path);
    return NULL;
}

TEST(connect_waits_for_full_unix_backlog)
{
    run_main_checked(1, main_unix_backlog, NULL);
}

int main(int argc, char **argv)
{
    RUN(woken_then_closed_is_ebadf);
    RUN(waiter_slot_freed_at_close);
    RUN(waiter_slot_freed_at_cancel);
    RUN(waiter_slot_freed_at_timeout);
    RUN(close_from_plain_thread);
    RUN(close_on_another_loop_wakes_the_waiter);
    RUN(wait_begun_during_a_close_elsewhere_is_woken);
    RUN(overlapping_closes_of_one_number_keep_waits_off_it);
    RUN(task_racing_a_close_leaves_its_loop_idle);
    RUN(peek_leaves_data_readable);
    RUN(packet_pipe_reads_are_not_drains);
    RUN(urgent_mark_reads_are_not_drains);
    RUN(passed_descriptor_reads_are_not_drains);
    RUN(error_queue_reads_never_wait);
    RUN(urgent_reads_never_wait);
    RUN(dontwait_sends_and_receives_never_wait);
    RUN(zero_length_read_does_not_wait);
    RUN(regular_file);
    RUN(connect_waits_for_full_unix_backlog);
    return test_summary();
}
