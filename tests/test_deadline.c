/*
 * test_deadline.c: deadlines of every blocking call.
 *
 *  - precision: a wait that nobody ends returns CORIO_ETIMEDOUT (0 for
 *    sleep_until) no earlier than 1 ms before its deadline and, in the
 *    median of five tries, less than 30 ms after it (each single try
 *    within a second: the machines are shared and noisy);
 *  - a deadline already past fails at once with CORIO_ETIMEDOUT, without
 *    blocking (sleep_until returns 0: asyncio.sleep(0));
 *  - CORIO_FOREVER waits as long as it takes, until woken.
 *
 * Every measurement runs on both loops, as a regular and as a light task.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdatomic.h>
#include <unistd.h>

#include "test.h"

struct dctx {
    corio_chan *empty;   /* nothing to receive */
    corio_chan *full;    /* no room to send */
    corio_sem *sem;      /* no permits */
    corio_mutex *mutex;  /* held by main */
    corio_event *event;  /* never set (until the end) */
    corio_waitgroup *wg; /* counter 1 */
    corio_group *group;  /* one child that waits for `release` */
    int pipe_r, pipe_w;  /* empty pipe: nothing to read */
    int full_w;          /* a full pipe: no room to write */
    int full_r;
    int listener;        /* nobody connects */
    corio_task *child;   /* waits for `release` */
    corio_event *release;
};

typedef int (*wait_op)(struct dctx *c, corio_time_t deadline);

static int op_sleep(struct dctx *c, corio_time_t dl) { return corio_sleep_until(dl); }
static int op_chan_recv(struct dctx *c, corio_time_t dl)
{
    int v;
    return corio_chan_recv_until(c->empty, &v, dl);
}
static int op_chan_send(struct dctx *c, corio_time_t dl)
{
    int v = 9;
    return corio_chan_send_until(c->full, &v, dl);
}
static int op_sem(struct dctx *c, corio_time_t dl)
{
    return corio_sem_acquire_until(c->sem, dl);
}
static int op_mutex(struct dctx *c, corio_time_t dl)
{
    return corio_mutex_lock_until(c->mutex, dl);
}
static int op_event(struct dctx *c, corio_time_t dl)
{
    return corio_event_wait_until(c->event, dl);
}
static int op_waitgroup(struct dctx *c, corio_time_t dl)
{
    return corio_waitgroup_wait_until(c->wg, dl);
}
static int op_read(struct dctx *c, corio_time_t dl)
{
    char b[16];
    return (int)corio_read_until(c->pipe_r, b, sizeof b, dl);
}
static int op_write(struct dctx *c, corio_time_t dl)
{
    return (int)corio_write_until(c->full_w, "w", 1, dl);
}
static int op_wait_fd(struct dctx *c, corio_time_t dl)
{
    return corio_wait_fd(c->pipe_r, CORIO_READABLE, dl);
}
static int op_accept(struct dctx *c, corio_time_t dl)
{
    return corio_accept_until(c->listener, NULL, NULL, dl);
}
static int op_join(struct dctx *c, corio_time_t dl) { return corio_join_until(c->child, NULL, dl); }
static int op_gather(struct dctx *c, corio_time_t dl)
{
    return corio_gather_until(&c->child, 1, NULL, dl);
}
static int op_group(struct dctx *c, corio_time_t dl)
{
    return corio_group_wait_until(c->group, dl);
}

static void *slow_fn(void *arg)
{
    usleep((useconds_t)INT_OF(arg));
    return NULL;
}
static int op_run_blocking(struct dctx *c, corio_time_t dl)
{
    /* The function outlasts the deadline (it finishes on its own later). */
    return corio_run_blocking_until(slow_fn, PTR_OF(300000), NULL, dl);
}

struct op_def {
    const char *name;
    wait_op fn;
    bool sleeps; /* sleep_until: 0 at the deadline, not ETIMEDOUT */
};

static const struct op_def ops[] = {
    {"sleep_until", op_sleep, true},
    {"chan_recv_until", op_chan_recv, false},
    {"chan_send_until", op_chan_send, false},
    {"sem_acquire_until", op_sem, false},
    {"mutex_lock_until", op_mutex, false},
    {"event_wait_until", op_event, false},
    {"waitgroup_wait_until", op_waitgroup, false},
    {"read_until", op_read, false},
    {"write_until", op_write, false},
    {"wait_fd", op_wait_fd, false},
    {"accept_until", op_accept, false},
    {"join_until", op_join, false},
    {"gather_until", op_gather, false},
    {"group_wait_until", op_group, false},
    {"run_blocking_until", op_run_blocking, false},
};
#define N_OPS (sizeof ops / sizeof ops[0])

static void *child_waits(void *arg)
{
    struct dctx *c = arg;
    CHECK_OK(corio_event_wait(c->release));
    return NULL;
}

static int group_child(void *arg)
{
    struct dctx *c = arg;
    return corio_event_wait(c->release);
}

static void setup(struct dctx *c)
{
    int one = 1;
    CHECK_OK(corio_chan_new(&c->empty, sizeof(int), 4));
    CHECK_OK(corio_chan_new(&c->full, sizeof(int), 1));
    CHECK_OK(corio_chan_try_send(c->full, &one));
    CHECK_OK(corio_sem_new(&c->sem, 0));
    CHECK_OK(corio_mutex_new(&c->mutex));
    CHECK_OK(corio_mutex_lock(c->mutex));
    CHECK_OK(corio_event_new(&c->event));
    CHECK_OK(corio_event_new(&c->release));
    CHECK_OK(corio_waitgroup_new(&c->wg));
    CHECK_OK(corio_waitgroup_add(c->wg, 1));
    int p[2];
    CHECK_EQ(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    c->pipe_r = p[0];
    c->pipe_w = p[1];
    CHECK_EQ(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    c->full_r = p[0];
    c->full_w = p[1];
    static char junk[65536];
    for (;;) {
        ssize_t n = write(c->full_w, junk, sizeof junk);
        if (n < 0 && (n = write(c->full_w, junk, 1)) < 0)
            break;
    }
    CHECK_EQ(errno, EAGAIN);
    c->listener = corio_listen_tcp("127.0.0.1", 0, 8, 0);
    CHECK_GE(c->listener, 0);
    CHECK_OK(corio_spawn(&c->child, child_waits, c));
    CHECK_OK(corio_group_new(&c->group, 0));
    CHECK_OK(corio_group_spawn(c->group, group_child, c));
}

static void teardown(struct dctx *c)
{
    CHECK_OK(corio_event_set(c->release));
    CHECK_OK(corio_join(c->child, NULL));
    CHECK_OK(corio_group_close(c->group));
    CHECK_OK(corio_mutex_unlock(c->mutex));
    corio_chan_free(c->empty);
    corio_chan_free(c->full);
    corio_sem_free(c->sem);
    corio_mutex_free(c->mutex);
    corio_event_free(c->event);
    corio_event_free(c->release);
    corio_waitgroup_free(c->wg);
    CHECK_OK(corio_close(c->pipe_r));
    CHECK_OK(corio_close(c->pipe_w));
    CHECK_OK(corio_close(c->full_r));
    CHECK_OK(corio_close(c->full_w));
    CHECK_OK(corio_close(c->listener));
}

/* ---- precision ---- */

struct measure {
    struct dctx *c;
    const struct op_def *op;
};

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

#define SAMPLES 5

static void *measure_op(void *arg)
{
    struct measure *m = arg;
    static const int64_t lengths[SAMPLES] = {
        1 * CORIO_MSEC, 3 * CORIO_MSEC, 6 * CORIO_MSEC, 10 * CORIO_MSEC, 20 * CORIO_MSEC,
    };
    int64_t late[SAMPLES];
    for (int i = 0; i < SAMPLES; i++) {
        corio_time_t deadline = corio_deadline_in(lengths[i]);
        int rc = m->op->fn(m->c, deadline);
        corio_time_t now = corio_now();
        int want = m->op->sleeps ? 0 : CORIO_ETIMEDOUT;
        if (rc != want)
            FAIL_("%s: returned %s, expected %s", m->op->name, corio_err_name(rc),
                  corio_err_name(want));
        late[i] = now - deadline;
        if (late[i] < -CORIO_MSEC)
            FAIL_("%s: returned %.3f ms before its %.0f ms deadline", m->op->name,
                  -late[i] / 1e6, lengths[i] / 1e6);
        if (late[i] > CORIO_SEC * TEST_SLOW)
            FAIL_("%s: returned %.3f ms after its deadline", m->op->name, late[i] / 1e6);
    }
    qsort(late, SAMPLES, sizeof late[0], cmp_i64);
    if (late[SAMPLES / 2] >= 30 * CORIO_MSEC * TEST_SLOW)
        FAIL_("%s: median lateness %.3f ms (max %.3f ms)", m->op->name,
              late[SAMPLES / 2] / 1e6, late[SAMPLES - 1] / 1e6);
    return PTR_OF(late[SAMPLES / 2] / 1000); /* microseconds */
}

static void *main_precision(void *arg)
{
    struct dctx c;
    setup(&c);
    for (size_t k = 0; k < N_OPS; k++) {
        long worst = 0;
        /* Loop 0, loop 1, and a light task (on the loop of k's parity). */
        for (int variant = 0; variant < 3; variant++) {
            struct measure m = {&c, &ops[k]};
            corio_spawn_opts o = test_on_loop(variant < 2 ? variant : (int)(k % 2), variant == 2);
            corio_task *t;
            void *median_us;
            CHECK_OK(corio_spawn_ex(&t, measure_op, &m, &o));
            CHECK_OK(corio_join(t, &median_us));
            if (INT_OF(median_us) > worst)
                worst = (long)INT_OF(median_us);
        }
        fprintf(stderr, "   %-22s median lateness <= %6.3f ms\n", ops[k].name, worst / 1e3);
    }
    /* Nothing was taken by all those timed-out waits. */
    CHECK_EQ(corio_chan_len(c.empty), 0);
    CHECK_EQ(corio_chan_len(c.full), 1);
    CHECK_EQ(corio_sem_available(c.sem), 0);
    CHECK(!corio_event_is_set(c.event));
    teardown(&c);
    return NULL;
}

TEST(precision)
{
    run_main_checked(2, main_precision, NULL);
}

/* ---- a deadline already past ---- */

static void *past_ops(void *arg)
{
    struct dctx *c = arg;
    const corio_time_t pasts[] = {corio_now(), corio_now() - CORIO_MSEC, corio_now() - CORIO_SEC,
                                  0};
    for (size_t k = 0; k < N_OPS; k++)
        for (size_t p = 0; p < sizeof pasts / sizeof pasts[0]; p++) {
            /* Too slow three times in a row: one slow call can be the
             * thread held up by a loaded machine (tens of ms), but a call
             * that waits is slow every time. */
            for (int tries = 0;; tries++) {
                corio_time_t t0 = corio_now();
                int rc = ops[k].fn(c, pasts[p]);
                corio_time_t took = corio_now() - t0;
                int want = ops[k].sleeps ? 0 : CORIO_ETIMEDOUT;
                if (rc != want)
                    FAIL_("%s(deadline %s): returned %s, expected %s", ops[k].name,
                          p == 0 ? "now" : p == 1 ? "1 ms ago" : p == 2 ? "1 s ago" : "0",
                          corio_err_name(rc), corio_err_name(want));
                if (took <= 20 * CORIO_MSEC * TEST_SLOW)
                    break;
                if (tries == 2)
                    FAIL_("%s with a past deadline took %.3f ms (3 tries)", ops[k].name,
                          took / 1e6);
            }
        }
    return NULL;
}

static void *main_past(void *arg)
{
    struct dctx c;
    setup(&c);
    for (int variant = 0; variant < 4; variant++) {
        corio_spawn_opts o = test_on_loop(variant % 2, variant >= 2);
        corio_task *t;
        CHECK_OK(corio_spawn_ex(&t, past_ops, &c, &o));
        CHECK_OK(corio_join(t, NULL));
    }
    CHECK_EQ(corio_chan_len(c.empty), 0);
    CHECK_EQ(corio_chan_len(c.full), 1);
    CHECK_EQ(corio_sem_available(c.sem), 0);
    teardown(&c);
    return NULL;
}

TEST(past_deadline_fails_at_once)
{
    run_main_checked(2, main_past, NULL);
}

/* ---- CORIO_FOREVER ---- */

enum forever_kind {
    F_SLEEP,
    F_CHAN_RECV,
    F_SEM,
    F_MUTEX,
    F_EVENT,
    F_WAITGROUP,
    F_READ,
    F_ACCEPT,
    F_JOIN,
    F_COUNT
};
static const char *const forever_names[F_COUNT] = {
    "sleep_until", "chan_recv_until", "sem_acquire_until", "mutex_lock_until",
    "event_wait_until", "waitgroup_wait_until", "read_until", "accept_until", "join_until",
};

struct forever {
    enum forever_kind kind;
    struct dctx *c;
    _Atomic int started, done;
    int rc;
    corio_time_t took;
};

static void *forever_waiter(void *arg)
{
    struct forever *f = arg;
    struct dctx *c = f->c;
    /* The clock first: main's 100 ms count from `started`, and a task
     * held up between the two (5 ms were enough) measured less. */
    corio_time_t t0 = corio_now();
    atomic_store(&f->started, 1);
    int v;
    char b[8];
    int fd = -1;
    switch (f->kind) {
    case F_SLEEP: f->rc = corio_sleep_until(CORIO_FOREVER); break;
    case F_CHAN_RECV: f->rc = corio_chan_recv_until(c->empty, &v, CORIO_FOREVER); break;
    case F_SEM: f->rc = corio_sem_acquire_until(c->sem, CORIO_FOREVER); break;
    case F_MUTEX: f->rc = corio_mutex_lock_until(c->mutex, CORIO_FOREVER); break;
    case F_EVENT: f->rc = corio_event_wait_until(c->event, CORIO_FOREVER); break;
    case F_WAITGROUP: f->rc = corio_waitgroup_wait_until(c->wg, CORIO_FOREVER); break;
    case F_READ: {
        ssize_t n = corio_read_until(c->pipe_r, b, sizeof b, CORIO_FOREVER);
        f->rc = n == 1 ? 0 : (int)n;
        break;
    }
    case F_ACCEPT:
        fd = corio_accept_until(c->listener, NULL, NULL, CORIO_FOREVER);
        f->rc = fd >= 0 ? 0 : fd;
        break;
    case F_JOIN: f->rc = corio_join_until(c->child, NULL, CORIO_FOREVER); break;
    default: break;
    }
    f->took = corio_now() - t0;
    /* Undo what the successful wait took, for the next round. */
    if (f->rc == 0) {
        switch (f->kind) {
        case F_MUTEX: CHECK_OK(corio_mutex_unlock(c->mutex)); break;
        case F_ACCEPT: CHECK_OK(corio_close(fd)); break;
        default: break;
        }
    }
    atomic_store(&f->done, 1);
    return NULL;
}

static void *main_forever(void *arg)
{
    for (int kind = 0; kind < F_COUNT; kind++) {
        struct dctx c;
        setup(&c);
        struct forever f = {.kind = (enum forever_kind)kind, .c = &c, .rc = 12345};
        corio_task *t;
        CHECK_OK(corio_spawn_on(&t, (unsigned)kind % 2, forever_waiter, &f));
        while (!atomic_load(&f.started))
            CHECK_OK(corio_sleep(CORIO_MSEC));
        /* Far longer than any timer slack: still waiting. */
        CHECK_OK(corio_sleep(100 * CORIO_MSEC));
        if (atomic_load(&f.done))
            FAIL_("%s(CORIO_FOREVER) returned %s after %.3f ms without being woken",
                  forever_names[kind], corio_err_name(f.rc), f.took / 1e6);
        int client = -1, msg = 5;
        switch (kind) {
        case F_SLEEP: CHECK_OK(corio_cancel(t)); break; /* only a cancel ends it */
        case F_CHAN_RECV: CHECK_OK(corio_chan_send(c.empty, &msg)); break;
        case F_SEM: CHECK_OK(corio_sem_release(c.sem)); break;
        case F_MUTEX: CHECK_OK(corio_mutex_unlock(c.mutex)); break;
        case F_EVENT: CHECK_OK(corio_event_set(c.event)); break;
        case F_WAITGROUP: CHECK_OK(corio_waitgroup_done(c.wg)); break;
        case F_READ: CHECK_EQ(corio_write(c.pipe_w, "r", 1), 1); break;
        case F_ACCEPT:
            client = corio_connect_tcp("127.0.0.1", (uint16_t)corio_local_port(c.listener),
                                       corio_deadline_in(5 * CORIO_SEC));
            CHECK_GE(client, 0);
            break;
        case F_JOIN: CHECK_OK(corio_event_set(c.release)); break;
        default: break;
        }
        CHECK_OK(corio_join(t, NULL));
        CHECK_ERR(f.rc, kind == F_SLEEP ? CORIO_ECANCELED : 0);
        CHECK_GE(f.took, 100 * CORIO_MSEC);
        if (client >= 0)
            CHECK_OK(corio_close(client));
        if (kind == F_MUTEX)
            CHECK_OK(corio_mutex_lock(c.mutex)); /* teardown unlocks it */
        if (kind == F_JOIN) {
            /* Joined already: teardown must not join it again. */
            CHECK_OK(corio_spawn(&c.child, child_waits, &c));
        }
        teardown(&c);
    }
    return NULL;
}

TEST(forever_waits_until_woken)
{
    run_main_checked(2, main_forever, NULL);
}

/* ---- a deadline ends only its own wait ----
 *
 * A wait that ends before its deadline leaves its timer entry queued
 * (timer.h: lazy deletion). When that deadline comes, it must not end the
 * wait the task is in by then. The task's first wait, a semaphore acquire
 * with a 20 ms deadline, is answered at once; its next, an event wait
 * with no deadline at all, spans the old deadline and must end only when
 * the event is set, 30 ms after it, with 0 (not CORIO_ETIMEDOUT). On both
 * loops, as a regular and as a light task. */
struct stale_wait {
    corio_sem *sem;
    corio_event *event;
    _Atomic int queued, second_over;
    int first_rc, second_rc;
    corio_time_t first_deadline;
};

static void *stale_waiter(void *arg)
{
    struct stale_wait *s = arg;
    s->first_deadline = corio_deadline_in(20 * CORIO_MSEC);
    atomic_store(&s->queued, 1);
    s->first_rc = corio_sem_acquire_until(s->sem, s->first_deadline);
    if (s->first_rc == 0) {
        s->second_rc = corio_event_wait(s->event);
        atomic_store(&s->second_over, 1);
    }
    return NULL;
}

static void *main_stale_deadline(void *arg)
{
    int checked = 0;
    for (int round = 0; round < 40 && checked < 4; round++) {
        struct stale_wait s = {0};
        CHECK_OK(corio_sem_new(&s.sem, 0));
        CHECK_OK(corio_event_new(&s.event));
        corio_spawn_opts o = test_on_loop(checked % 2, checked >= 2);
        corio_task *t;
        CHECK_OK(corio_spawn_ex(&t, stale_waiter, &s, &o));
        while (!atomic_load(&s.queued))
            CHECK_OK(corio_sleep(CORIO_MSEC));
        CHECK_OK(corio_sleep(2 * CORIO_MSEC)); /* in its acquire now */
        CHECK_OK(corio_sem_release(s.sem));
        /* Past the first wait's deadline, the second must still wait. */
        CHECK_OK(corio_sleep_until(s.first_deadline + 30 * CORIO_MSEC));
        int over_early = atomic_load(&s.second_over);
        CHECK_OK(corio_event_set(s.event));
        CHECK_OK(corio_join(t, NULL));
        if (s.first_rc == CORIO_ETIMEDOUT) {
            /* Released too late on a starved machine: nothing shown. */
            CHECK_OK(corio_sem_try_acquire(s.sem));
        } else {
            CHECK_OK(s.first_rc);
            if (over_early)
                FAIL_("the event wait ended (%s) before the event was set, at the "
                      "deadline of the acquire before it",
                      corio_err_name(s.second_rc));
            CHECK_OK(s.second_rc);
            checked++;
        }
        corio_event_free(s.event);
        corio_sem_free(s.sem);
    }
    CHECK_EQ(checked, 4);
    return NULL;
}

TEST(stale_deadline_ends_no_later_wait)
{
    run_main_checked(2, main_stale_deadline, NULL);
}

int main(int argc, char **argv)
{
    RUN(precision);
    RUN(past_deadline_fails_at_once);
    RUN(forever_waits_until_woken);
    RUN(stale_deadline_ends_no_later_wait);
    return test_summary();
}
