/*
 * test_cancel.c: corio_cancel(). The task's current or next blocking call
 * returns CORIO_ECANCELED, once; the handle stays the caller's; a cancel
 * racing the task's own progress is delivered at most once and never
 * hangs anything.
 */
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

#include "task.h" /* the join word: main released */
#include "test.h"

/* ---- a sleeping task ---- */

static _Atomic int sleeping;

static void *sleeper(void *arg)
{
    atomic_store(&sleeping, 1);
    corio_time_t t0 = corio_now();
    int rc = corio_sleep(10 * CORIO_SEC);
    if (rc != CORIO_ECANCELED)
        return PTR_OF(-1);
    if (corio_now() - t0 > 5 * CORIO_SEC)
        return PTR_OF(-2);
    /* Delivered once: the next sleep is a normal one. */
    t0 = corio_now();
    rc = corio_sleep(5 * CORIO_MSEC);
    if (rc != 0)
        return PTR_OF(-3);
    if (corio_now() - t0 < 5 * CORIO_MSEC - CORIO_MSEC)
        return PTR_OF(-4);
    if (corio_yield() != 0)
        return PTR_OF(-5);
    return PTR_OF(1);
}

static void *main_cancel_sleeper(void *arg)
{
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    for (int i = 0; i < 8; i++) {
        o.flags = i % 2 ? CORIO_TASK_LIGHT : 0;
        o.loop = (i / 2) % 2 ? -1 : (int)((unsigned)corio_loop_index() + 1) % 2;
        atomic_store(&sleeping, 0);
        corio_task *t;
        CHECK_OK(corio_spawn_ex(&t, sleeper, NULL, &o));
        while (!atomic_load(&sleeping))
            CHECK_OK(corio_sleep(CORIO_MSEC));
        CHECK_OK(corio_sleep(CORIO_MSEC));
        CHECK_OK(corio_cancel(t));
        void *r;
        CHECK_OK(corio_join(t, &r));
        CHECK_EQ(INT_OF(r), 1);
    }
    return NULL;
}

TEST(cancel_sleeping_task)
{
    run_main_checked(2, main_cancel_sleeper, NULL);
}

/* ---- cancelled before its first blocking call ---- */

static void *sleep_then_return(void *arg)
{
    corio_sleep(50 * CORIO_MSEC);
    return arg;
}

static void *block_20ms(void *arg)
{
    usleep(20 * 1000);
    return arg;
}

static _Atomic int go;

static void *first_call(void *arg)
{
    int which = (int)INT_OF(arg);
    int rc;
    /* Started on another loop, it must not make its first call before
     * the cancel is in; spinning is no blocking call. */
    while (!atomic_load(&go))
        test_spin(100);
    corio_task *t;
    switch (which) {
    case 0:
        rc = corio_sleep(CORIO_SEC);
        break;
    case 1:
        rc = corio_yield();
        break;
    case 2:
        rc = corio_sleep(0);
        break;
    case 3:
        /* a join that has to wait (joining a finished task does not block,
         * and need not be a cancellation point) */
        CHECK_OK(corio_spawn(&t, sleep_then_return, NULL));
        rc = corio_join(t, NULL);
        if (rc == CORIO_ECANCELED)
            CHECK_OK(corio_join(t, NULL));
        break;
    case 4:
        /* fn takes long enough that the outcome cannot depend on the pool
         * (test_run_blocking checks that fn does not even start) */
        rc = corio_run_blocking(block_20ms, NULL, NULL);
        break;
    default:
        rc = corio_sleep_until(CORIO_FOREVER);
        break;
    }
    if (rc != CORIO_ECANCELED)
        return PTR_OF(rc == 0 ? -1000 : rc);
    /* Once only. */
    if (corio_sleep(CORIO_USEC) != 0 || corio_yield() != 0)
        return PTR_OF(-2000);
    return PTR_OF(1);
}

static void *main_cancel_before_start(void *arg)
{
    unsigned n = corio_loop_count();
    for (int which = 0; which < 6; which++) {
        for (unsigned loop = 0; loop < n; loop++) {
            corio_task *t;
            atomic_store(&go, 0);
            CHECK_OK(corio_spawn_on(&t, loop, first_call, PTR_OF(which)));
            CHECK_OK(corio_cancel(t));
            atomic_store(&go, 1);
            void *r;
            CHECK_OK(corio_join(t, &r));
            if (INT_OF(r) != 1)
                FAIL_("first call %d on loop %u: %ld", which, loop, (long)INT_OF(r));
        }
    }
    return NULL;
}

TEST(cancel_before_first_call)
{
    run_main_checked(2, main_cancel_before_start, NULL);
}

/* ---- self-cancel, yield as a cancellation point ---- */

static void *main_self_cancel(void *arg)
{
    CHECK_OK(corio_cancel(corio_self()));
    CHECK_ERR(corio_yield(), CORIO_ECANCELED);
    CHECK_OK(corio_yield());
    CHECK_OK(corio_cancel(corio_self()));
    CHECK_OK(corio_cancel(corio_self())); /* twice before a call: still one */
    CHECK_ERR(corio_sleep(CORIO_SEC), CORIO_ECANCELED);
    CHECK_OK(corio_sleep(CORIO_USEC));
    CHECK_OK(corio_yield());
    /* yield with another ready task around, and without */
    corio_task *t;
    CHECK_OK(corio_spawn_on(&t, (unsigned)corio_loop_index(), test_ret_arg, NULL));
    CHECK_OK(corio_cancel(corio_self()));
    CHECK_ERR(corio_yield(), CORIO_ECANCELED);
    CHECK_OK(corio_join(t, NULL));
    return PTR_OF(1);
}

TEST(self_cancel_and_yield)
{
    CHECK_EQ(INT_OF(run_main_checked(2, main_self_cancel, NULL)), 1);
}

/* ---- a cancelled join keeps the joined handle valid ---- */

static _Atomic int release_slow;

static void *slow_value(void *arg)
{
    while (!atomic_load(&release_slow))
        corio_sleep(CORIO_MSEC);
    return PTR_OF(77);
}

static _Atomic int joiner_waiting;

static void *joiner(void *arg)
{
    corio_task *target = arg;
    void *r = PTR_OF(-1);
    atomic_store(&joiner_waiting, 1);
    int rc = corio_join(target, &r);
    if (rc != CORIO_ECANCELED || INT_OF(r) != -1)
        return PTR_OF(-1);
    /* Still joinable, by this task, after the failed join. */
    atomic_store(&release_slow, 1);
    rc = corio_join(target, &r);
    if (rc != 0)
        return PTR_OF(rc);
    return r;
}

static void *gather_joiner(void *arg)
{
    corio_task **targets = arg;
    void *r[2] = {PTR_OF(-1), PTR_OF(-1)};
    atomic_store(&joiner_waiting, 1);
    int rc = corio_gather(targets, 2, r);
    if (rc != CORIO_ECANCELED)
        return PTR_OF(-1);
    atomic_store(&release_slow, 1);
    rc = corio_gather(targets, 2, r);
    if (rc != 0)
        return PTR_OF(rc);
    return PTR_OF(INT_OF(r[0]) + INT_OF(r[1]));
}

static void *main_cancel_join(void *arg)
{
    unsigned n = corio_loop_count();
    for (unsigned i = 0; i < 4; i++) {
        atomic_store(&release_slow, 0);
        atomic_store(&joiner_waiting, 0);
        corio_task *slow, *j;
        CHECK_OK(corio_spawn_on(&slow, i % n, slow_value, NULL));
        CHECK_OK(corio_spawn_on(&j, (i / 2) % n, joiner, slow));
        while (!atomic_load(&joiner_waiting))
            CHECK_OK(corio_sleep(CORIO_MSEC));
        CHECK_OK(corio_sleep(2 * CORIO_MSEC));
        CHECK_OK(corio_cancel(j));
        void *r;
        CHECK_OK(corio_join(j, &r));
        CHECK_EQ(INT_OF(r), 77);
    }
    /* gather: cancelled, nothing released, gathers again */
    atomic_store(&release_slow, 0);
    atomic_store(&joiner_waiting, 0);
    corio_task *targets[2], *g;
    CHECK_OK(corio_spawn(&targets[0], test_ret_arg, PTR_OF(3)));
    CHECK_OK(corio_spawn(&targets[1], slow_value, NULL));
    CHECK_OK(corio_spawn(&g, gather_joiner, targets));
    while (!atomic_load(&joiner_waiting))
        CHECK_OK(corio_sleep(CORIO_MSEC));
    CHECK_OK(corio_sleep(2 * CORIO_MSEC));
    CHECK_OK(corio_cancel(g));
    void *r;
    CHECK_OK(corio_join(g, &r));
    CHECK_EQ(INT_OF(r), 80);

    /* join_until: a cancel is reported as such, not as a timeout */
    atomic_store(&release_slow, 0);
    corio_task *slow;
    CHECK_OK(corio_spawn(&slow, slow_value, NULL));
    CHECK_OK(corio_cancel(corio_self()));
    CHECK_ERR(corio_join_until(slow, &r, corio_deadline_in(CORIO_SEC)), CORIO_ECANCELED);
    atomic_store(&release_slow, 1);
    CHECK_OK(corio_join_until(slow, &r, corio_deadline_in(5 * CORIO_SEC)));
    CHECK_EQ(INT_OF(r), 77);
    return NULL;
}

TEST(cancel_joining_task)
{
    run_main_checked(2, main_cancel_join, NULL);
    run_main_checked(4, main_cancel_join, NULL);
}

/* ---- a finished task ---- */

static void *main_cancel_finished(void *arg)
{
    corio_task *t;
    CHECK_OK(corio_spawn(&t, test_ret_arg, PTR_OF(9)));
    CHECK_OK(corio_sleep(5 * CORIO_MSEC));
    CHECK_OK(corio_cancel(t));
    CHECK_OK(corio_cancel(t));
    void *r;
    CHECK_OK(corio_join(t, &r));
    CHECK_EQ(INT_OF(r), 9);
    /* The cancel did not leak to whoever reuses the task object. */
    for (int i = 0; i < 200; i++) {
        CHECK_OK(corio_spawn(&t, test_ret_arg, PTR_OF(i)));
        CHECK_OK(corio_join(t, &r));
        CHECK_EQ(INT_OF(r), i);
    }
    return NULL;
}

TEST(cancel_finished_task)
{
    run_main_checked(2, main_cancel_finished, NULL);
}

/* ---- races ---- */

#define PAIRS 8

static _Atomic long delivered, undelivered, double_delivered, race_errors;

/* Makes a string of short blocking calls and counts how many report a
 * cancellation: with one corio_cancel() that must be 0 or 1. */
static void *race_target(void *arg)
{
    uint64_t rng = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
    int calls = (int)(test_rand(&rng) % 24);
    int got = 0;
    for (int i = 0; i < calls; i++) {
        int rc;
        switch (test_rand(&rng) % 4) {
        case 0:
            rc = corio_yield();
            break;
        case 1:
            rc = corio_sleep((int64_t)(test_rand(&rng) % 30) * CORIO_USEC);
            break;
        case 2:
            rc = corio_sleep(0);
            break;
        default:
            test_spin((unsigned)(test_rand(&rng) % 2000));
            rc = 0;
            break;
        }
        if (rc == CORIO_ECANCELED)
            got++;
        else if (rc != 0)
            atomic_fetch_add(&race_errors, 1);
    }
    return PTR_OF(got);
}

static void *race_driver(void *arg)
{
    long rounds = INT_OF(arg) >> 8;
    unsigned other = (unsigned)(INT_OF(arg) & 0xff);
    uint64_t rng = corio_task_id(corio_self()) * 7 + 3;
    for (long r = 0; r < rounds; r++) {
        uint64_t x = test_rand(&rng);
        corio_task *t;
        corio_spawn_opts o;
        corio_spawn_opts_init(&o);
        o.loop = (x & 1) ? (int)other : -1;
        o.flags = (x & 2) ? CORIO_TASK_LIGHT : 0;
        if (corio_spawn_ex(&t, race_target, (void *)(uintptr_t)x, &o) != 0)
            return PTR_OF(-1);
        switch ((x >> 2) % 3) {
        case 0:
            break;
        case 1:
            corio_yield();
            break;
        default:
            test_spin((unsigned)((x >> 8) % 3000));
            break;
        }
        corio_cancel(t);
        void *res;
        if (corio_join(t, &res) != 0)
            return PTR_OF(-2);
        long got = INT_OF(res);
        if (got == 0)
            atomic_fetch_add(&undelivered, 1);
        else if (got == 1)
            atomic_fetch_add(&delivered, 1);
        else
            atomic_fetch_add(&double_delivered, 1);
    }
    return PTR_OF(0);
}

static void *main_races(void *arg)
{
    long rounds = INT_OF(arg);
    corio_task *t[2 * PAIRS];
    for (int i = 0; i < 2 * PAIRS; i++)
        CHECK_OK(corio_spawn_on(&t[i], (unsigned)i % 2,
                                race_driver, PTR_OF((rounds / (2 * PAIRS)) << 8 | ((i + 1) % 2))));
    void *res[2 * PAIRS];
    CHECK_OK(corio_gather(t, 2 * PAIRS, res));
    for (int i = 0; i < 2 * PAIRS; i++)
        CHECK_EQ(INT_OF(res[i]), 0);
    return NULL;
}

TEST(cancel_races)
{
    long rounds = test_scaled(32000);
    atomic_store(&delivered, 0);
    atomic_store(&undelivered, 0);
    atomic_store(&double_delivered, 0);
    atomic_store(&race_errors, 0);
    run_main_checked(2, main_races, PTR_OF(rounds));
    long d = atomic_load(&delivered), u = atomic_load(&undelivered);
    long dd = atomic_load(&double_delivered);
    fprintf(stderr, "   %ld rounds: delivered %ld, not delivered (finished first) %ld, "
                    "delivered twice %ld\n", d + u + dd, d, u, dd);
    CHECK_EQ(d + u + dd, rounds / (2 * PAIRS) * (2 * PAIRS));
    CHECK_EQ(atomic_load(&race_errors), 0);
    CHECK_EQ(dd, 0);
    CHECK_GT(d, 0);
}

/* ---- a cancel racing the completion of the wait it hits ----
 *
 * Task J waits (join, or run_blocking) for something that completes at
 * about the moment another task cancels J. Either J's call reports the
 * cancellation, or the call succeeds and the cancellation is still
 * pending for J's next blocking call: exactly one of the two, never
 * neither (a lost cancel) and never both.
 */
static _Atomic long lost, twice, via_call, via_next, rounds_done;
static _Atomic int cancel_done;

/* Rounds stop early past this: each round hands work to the other loop
 * and back, so on a loaded machine a round can take milliseconds instead
 * of microseconds, and the full count would run into the watchdog. */
#define RACING_BUDGET (20 * CORIO_SEC)

struct racing {
    corio_task *joiner;
    uint64_t seed;
};

static void *finish_soon(void *arg)
{
    uint64_t rng = (uint64_t)(uintptr_t)arg;
    unsigned y = (unsigned)(test_rand(&rng) % 6);
    for (unsigned i = 0; i < y; i++)
        corio_yield();
    return arg;
}

static void *cancel_soon(void *arg)
{
    struct racing *r = arg;
    uint64_t rng = r->seed * 31 + 7;
    unsigned y = (unsigned)(test_rand(&rng) % 6);
    for (unsigned i = 0; i < y; i++)
        corio_yield();
    corio_cancel(r->joiner);
    atomic_store(&cancel_done, 1);
    return NULL;
}

static void *spin_briefly(void *arg)
{
    test_spin((unsigned)(uintptr_t)arg % 20000);
    return arg;
}

/* The outcome of one round, seen from J after the canceller is done. */
static void tally(int call_rc)
{
    while (!atomic_load(&cancel_done))
        sched_yield(); /* not a blocking call; leaves the CPU to loop 1 */
    int next_rc = corio_sleep(0);
    if (call_rc == CORIO_ECANCELED && next_rc == CORIO_ECANCELED)
        atomic_fetch_add(&twice, 1);
    else if (call_rc == CORIO_ECANCELED)
        atomic_fetch_add(&via_call, 1);
    else if (next_rc == CORIO_ECANCELED)
        atomic_fetch_add(&via_next, 1);
    else
        atomic_fetch_add(&lost, 1);
}

static void *racing_joiner(void *arg)
{
    long rounds = INT_OF(arg) >> 1;
    bool blocking = INT_OF(arg) & 1;
    uint64_t rng = 12345;
    corio_time_t stop = corio_deadline_in(RACING_BUDGET);
    for (long r = 0; r < rounds && (r % 1024 || corio_now() < stop); r++) {
        atomic_store(&rounds_done, r + 1);
        uint64_t x = test_rand(&rng) | 1;
        struct racing rc_ = {corio_self(), x};
        atomic_store(&cancel_done, 0);
        corio_task *c;
        if (corio_spawn_on(&c, 1, cancel_soon, &rc_) != 0)
            return PTR_OF(-1);
        int rc;
        if (blocking) {
            void *res = NULL;
            rc = corio_run_blocking(spin_briefly, (void *)(uintptr_t)x, &res);
            if (rc == 0 && res != (void *)(uintptr_t)x)
                return PTR_OF(-2);
        } else {
            corio_task *t;
            if (corio_spawn_on(&t, 1, finish_soon, (void *)(uintptr_t)x) != 0)
                return PTR_OF(-3);
            void *res = NULL;
            rc = corio_join(t, &res);
            if (rc == CORIO_ECANCELED) {
                if (corio_join(t, &res) != 0)
                    return PTR_OF(-4);
            } else if (rc != 0 || res != (void *)(uintptr_t)x) {
                return PTR_OF(-5);
            }
        }
        tally(rc);
        /* the canceller may still be around; joining it is no blocking
         * wait worth a cancel (none is pending any more) */
        if (corio_join(c, NULL) != 0)
            return PTR_OF(-6);
    }
    return PTR_OF(0);
}

/* J must live on loop 0: it spins while the canceller runs on loop 1. */
static void *racing_main(void *arg)
{
    corio_task *j;
    CHECK_OK(corio_spawn_on(&j, 0, racing_joiner, arg));
    void *r;
    CHECK_OK(corio_join(j, &r));
    return r;
}

static void racing_cancel(bool blocking)
{
    atomic_store(&lost, 0);
    atomic_store(&twice, 0);
    atomic_store(&via_call, 0);
    atomic_store(&via_next, 0);
    atomic_store(&rounds_done, 0);
    /* The join's window (armed, then finding the task done, then
     * disarming) is a few instructions wide: a cancellation lands in it
     * about once in 80,000 rounds, so the join runs enough rounds to meet
     * it (~1 s). Each round starts two tasks, hence the TSan scaling. */
    long rounds = blocking ? test_scaled(20000) : test_scaled_starts(400000);
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = 2;
    void *r = run_main_cfg(&cfg, racing_main, PTR_OF(rounds << 1 | blocking));
    CHECK_EQ(INT_OF(r), 0);
    long l = atomic_load(&lost), tw = atomic_load(&twice), done = atomic_load(&rounds_done);
    fprintf(stderr, "   %ld of %ld rounds: reported by the call %ld, by the next call %ld, "
                    "lost %ld, twice %ld\n", done, rounds, atomic_load(&via_call),
            atomic_load(&via_next), l, tw);
    CHECK_GT(done, 0);
    CHECK_EQ(l + tw + atomic_load(&via_call) + atomic_load(&via_next), done);
    if (l || tw)
        FAIL_("a cancel racing the end of a %s was lost %ld times and delivered twice %ld "
              "times in %ld rounds", blocking ? "corio_run_blocking" : "corio_join", l, tw,
              done);
}

TEST(cancel_racing_join_completion)
{
    racing_cancel(false);
}

TEST(cancel_racing_run_blocking_completion)
{
    racing_cancel(true);
}

/* ---- the main task ---- */

/* corio_run's main task is detached (corio_run owns it), yet other tasks
 * and blocking-pool functions may cancel it, as asyncio's main task is
 * cancelled on Ctrl-C. */

enum main_canceller { FROM_THIS_LOOP, FROM_OTHER_LOOP, FROM_POOL };

static corio_task *_Atomic main_handle;

static void *cancel_from_pool(void *task) { return PTR_OF(corio_cancel(task)); }

static void *cancel_main(void *arg)
{
    corio_task *m = atomic_load(&main_handle);
    /* Neither joinable nor detachable: corio_run owns it. */
    CHECK_EQ(corio_join(m, NULL), CORIO_EINVAL);
    CHECK_EQ(corio_detach(m), CORIO_EINVAL);
    if ((enum main_canceller)INT_OF(arg) != FROM_POOL)
        return PTR_OF(corio_cancel(m));
    void *rc = PTR_OF(-1);
    CHECK_OK(corio_run_blocking(cancel_from_pool, m, &rc));
    return rc;
}

static void *main_cancelled_by_another(void *arg)
{
    atomic_store(&main_handle, corio_self());
    unsigned here = (unsigned)corio_loop_index();
    unsigned there = (enum main_canceller)INT_OF(arg) == FROM_THIS_LOOP ? here : here ^ 1;
    corio_task *t;
    CHECK_OK(corio_spawn_on(&t, there, cancel_main, arg));
    /* Cancelled before or during the sleep: either way it ends it. */
    CHECK_EQ(corio_sleep(60 * CORIO_SEC), CORIO_ECANCELED);
    void *rc = PTR_OF(-1);
    CHECK_OK(corio_join(t, &rc));
    CHECK_EQ(INT_OF(rc), 0);
    /* Once: the next wait is a normal one. */
    CHECK_OK(corio_sleep(CORIO_MSEC));
    return PTR_OF(7);
}

/* After main has returned, cancelling it does nothing, as for any
 * finished task, until corio_run returns. */
static _Atomic int late_cancel_started;
static _Atomic int late_cancel_rc;

static void *cancel_main_late(void *arg)
{
    corio_task *m = atomic_load(&main_handle);
    atomic_store(&late_cancel_started, 1);
    /* Main returns and the runtime stops meanwhile; this task, started,
     * runs on (its waits would fail now: spin instead). */
    while (atomic_load_explicit(&m->join, memory_order_acquire) != CORIO__JOIN_RELEASED)
        sched_yield();
    atomic_store(&late_cancel_rc, corio_cancel(m));
    return arg;
}

static void *main_returns_before_its_cancel(void *arg)
{
    atomic_store(&main_handle, corio_self());
    unsigned there = (unsigned)corio_loop_index() ^ 1;
    CHECK_OK(corio_spawn_on(NULL, there, cancel_main_late, arg));
    while (!atomic_load(&late_cancel_started))
        CHECK_OK(corio_sleep(CORIO_MSEC));
    return NULL;
}

TEST(main_task_cancelled_by_another)
{
    for (long i = 0; i < test_scaled(60); i++) {
        enum main_canceller who = (enum main_canceller)(i % 3);
        CHECK_EQ(INT_OF(run_main_checked(2, main_cancelled_by_another, PTR_OF(who))), 7);
    }
    for (long i = 0; i < test_scaled(20); i++) {
        atomic_store(&late_cancel_started, 0);
        atomic_store(&late_cancel_rc, -1);
        run_main_checked(2, main_returns_before_its_cancel, NULL);
        int late_rc = atomic_load(&late_cancel_rc);
        CHECK_EQ(late_rc, 0);
    }
}

int main(int argc, char **argv)
{
    RUN(cancel_sleeping_task);
    RUN(cancel_before_first_call);
    RUN(self_cancel_and_yield);
    RUN(cancel_joining_task);
    RUN(cancel_finished_task);
    RUN(cancel_races);
    RUN(cancel_racing_join_completion);
    RUN(cancel_racing_run_blocking_completion);
    RUN(main_task_cancelled_by_another);
    return test_summary();
}
