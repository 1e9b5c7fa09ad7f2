/*
 * test_run_blocking.c: corio_run_blocking() and its deadline twin. The
 * function runs on a pool thread; only the calling task waits, the loop
 * keeps running others; deadlines and cancellation end the wait cleanly.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "test.h"

#include "blocking.h" /* corio__run_blocking_owned: the resolver's call */

/* ---- runs elsewhere, returns the result ---- */

struct where {
    pthread_t thread;
    int loop_index;
    corio_task *self;
    void *arg;
};

static void *record_where(void *arg)
{
    struct where *w = arg;
    w->thread = pthread_self();
    w->loop_index = corio_loop_index();
    w->self = corio_self();
    return PTR_OF(4242);
}

static void *main_other_thread(void *arg)
{
    for (int i = 0; i < 20; i++) {
        struct where w = {.loop_index = 99, .self = (corio_task *)&w};
        void *r = NULL;
        CHECK_OK(corio_run_blocking(record_where, &w, &r));
        CHECK_EQ(INT_OF(r), 4242);
        CHECK(!pthread_equal(w.thread, pthread_self()));
        CHECK_EQ(w.loop_index, -1);
        CHECK(w.self == NULL);
        /* NULL result pointer allowed. */
        CHECK_OK(corio_run_blocking(record_where, &w, NULL));
    }
    return NULL;
}

TEST(runs_on_another_thread)
{
    run_main_checked(2, main_other_thread, NULL);
}

/* ---- the loop keeps running other tasks ---- */

static _Atomic long progress;
static _Atomic int stop_ticker;

static void *ticker(void *arg)
{
    /* Gives up in the end, so that a failing check elsewhere shows as a
     * failure rather than a hang. */
    corio_time_t give_up = corio_now() + 30 * CORIO_SEC * TEST_SLOW;
    while (!atomic_load(&stop_ticker) && corio_now() < give_up) {
        atomic_fetch_add(&progress, 1);
        if (INT_OF(arg))
            corio_sleep(CORIO_MSEC);
        else
            corio_yield();
    }
    return NULL;
}

static void *sleep_200ms(void *arg)
{
    usleep(200 * 1000);
    return PTR_OF(200);
}

/* Blocks its pool thread until the ticker on the caller's loop has
 * advanced 20 times while the caller waits (or 10 s, stretched in slow
 * lanes), and says how far it advanced: a loop stalled by the call would
 * show 0 or 1. (A fixed 200 ms call needed 20 ticks in 200 ms, which a
 * slow lane or a loaded machine need not give.) */
static void *block_until_ticks(void *arg)
{
    (void)arg;
    long from = atomic_load(&progress);
    long limit_ms = 10L * 1000 * TEST_SLOW;
    for (long ms = 0; ms < limit_ms && atomic_load(&progress) - from < 20; ms++)
        usleep(1000);
    return PTR_OF(atomic_load(&progress) - from);
}

static void *main_loop_keeps_running(void *arg)
{
    int mode = (int)INT_OF(arg); /* 1: the neighbour sleeps, 0: it yields */
    unsigned me = (unsigned)corio_loop_index();
    atomic_store(&progress, 0);
    atomic_store(&stop_ticker, 0);
    corio_task *t;
    CHECK_OK(corio_spawn_on(&t, me, ticker, PTR_OF(mode)));
    void *r;
    if (mode == 1) {
        CHECK_OK(corio_run_blocking(block_until_ticks, NULL, &r));
        fprintf(stderr, "   ticker advanced %ld times during the call\n", (long)INT_OF(r));
        CHECK_GE(INT_OF(r), 20);
    } else {
        /* A yielding neighbour: the loop must also notice that the call
         * has finished. A loop that let a lone yielder keep the CPU
         * without polling never would: the call would not return and the
         * watchdog would fail the test. No upper bound on the time: a
         * limit of 100 ms late failed under a loaded host (307 ms, the
         * ucontext lane beside a soak) with the loop behaving. */
        corio_time_t t0 = corio_now();
        CHECK_OK(corio_run_blocking(sleep_200ms, NULL, &r));
        CHECK_EQ(INT_OF(r), 200);
        CHECK_GE(corio_now() - t0, 199 * CORIO_MSEC);
        long p = atomic_load(&progress);
        fprintf(stderr, "   ticker advanced %ld times during the call\n", p);
        CHECK_GE(p, 20); /* yielding for 200 ms: thousands */
    }
    atomic_store(&stop_ticker, 1);
    CHECK_OK(corio_join(t, NULL));
    return NULL;
}

TEST(loop_keeps_running_sleeping_neighbour)
{
    run_main_checked(2, main_loop_keeps_running, PTR_OF(1));
}

/* The neighbour only yields. This must not keep the loop from noticing
 * that the blocking call finished (the pool thread's wake-up arrives in
 * the loop's inbox, which the loop reads only when it polls). */
TEST(loop_keeps_running_yielding_neighbour)
{
    run_main_checked(2, main_loop_keeps_running, PTR_OF(0));
}

/* ---- many at once ---- */

static void *compute(void *arg)
{
    intptr_t x = INT_OF(arg);
    if (x % 10 == 0)
        usleep(1000);
    if (corio_loop_index() != -1)
        return PTR_OF(-1);
    return PTR_OF(x * x + 1);
}

static void *many_caller(void *arg)
{
    intptr_t base = INT_OF(arg);
    for (intptr_t k = 0; k < 5; k++) {
        void *r;
        int rc = corio_run_blocking(compute, PTR_OF(base + k), &r);
        if (rc != 0)
            return PTR_OF(rc);
        if (INT_OF(r) != (base + k) * (base + k) + 1)
            return PTR_OF(-1000);
    }
    return PTR_OF(0);
}

static void *main_many(void *arg)
{
    enum { N = 400 };
    static corio_task *t[N];
    static void *res[N];
    for (intptr_t i = 0; i < N; i++)
        CHECK_OK(corio_spawn(&t[i], many_caller, PTR_OF(i * 5)));
    CHECK_OK(corio_gather(t, N, res));
    for (int i = 0; i < N; i++)
        CHECK_EQ(INT_OF(res[i]), 0);
    return NULL;
}

TEST(many_concurrent_calls)
{
    run_main_checked(2, main_many, NULL);
    run_main_checked(4, main_many, NULL);
}

/* ---- deadline shorter than the call ---- */

static _Atomic int slow_started, slow_finished, slow_release;

/* Runs until released, so the deadline below always passes first. */
static void *slow_until_released(void *arg)
{
    atomic_store(&slow_started, 1);
    while (!atomic_load(&slow_release))
        usleep(1000);
    atomic_store(&slow_finished, 1);
    return PTR_OF(300);
}

static void *main_deadline(void *arg)
{
    void *r = PTR_OF(-7);
    test_stopwatch sw = test_stopwatch_start();
    CHECK_ERR(corio_run_blocking_until(slow_until_released, NULL, &r, sw.t0 + 30 * CORIO_MSEC),
              CORIO_ETIMEDOUT);
    CHECK_ELAPSED_WITHIN(&sw, 30 * CORIO_MSEC, CORIO_MSEC, 40 * CORIO_MSEC);
    CHECK_EQ(INT_OF(r), -7); /* untouched */
    CHECK_EQ(atomic_load(&slow_finished), 0);
    /* A pool thread picks a job up within microseconds, except on a slow
     * lane (Valgrind); both outcomes are legal and each has its rule. */
    if (!atomic_load(&slow_started)) {
        /* Not started by the deadline: it never runs. */
        atomic_store(&slow_release, 1);
        CHECK_OK(corio_sleep(50 * CORIO_MSEC));
        CHECK_EQ(atomic_load(&slow_started), 0);
        atomic_store(&slow_finished, 1); /* what the caller below expects */
    }
    /* The task goes on working normally. */
    CHECK_OK(corio_sleep(CORIO_MSEC));
    CHECK_OK(corio_run_blocking(compute, PTR_OF(3), &r));
    CHECK_EQ(INT_OF(r), 10);
    /* Started: it finishes on its thread, and corio_run waits for it. */
    atomic_store(&slow_release, 1);
    return PTR_OF(1);
}

TEST(deadline_shorter_than_call)
{
    atomic_store(&slow_started, 0);
    atomic_store(&slow_finished, 0);
    atomic_store(&slow_release, 0);
    CHECK_EQ(INT_OF(run_main_checked(2, main_deadline, NULL)), 1);
    /* corio_run waited for the abandoned call to finish on its thread. */
    CHECK_EQ(atomic_load(&slow_finished), 1);
}

/* ---- cancelled while waiting ---- */

struct cancel_target {
    corio_task *task;
    int rc;
};

/* Runs until released (or 60 s): a cancelled wait must end while it
 * still runs, however slowly the lane runs. */
static void *slow_until_main_says(void *arg)
{
    atomic_store(&slow_started, 1);
    for (int ms = 0; ms < 60000 && !atomic_load(&slow_release); ms++)
        usleep(1000);
    atomic_store(&slow_finished, 1);
    return PTR_OF(300);
}

static void *blocker(void *arg)
{
    struct cancel_target *c = arg;
    void *r = PTR_OF(-3);
    c->rc = corio_run_blocking(slow_until_main_says, NULL, &r);
    if (c->rc == 0)
        return r;
    /* The cancellation was delivered once: the next call works. */
    CHECK_OK(corio_run_blocking(compute, PTR_OF(2), &r));
    CHECK_EQ(INT_OF(r), 5);
    return PTR_OF(-3);
}

static void *main_cancel(void *arg)
{
    unsigned n = corio_loop_count();
    for (unsigned where = 0; where < 2; where++) {
        atomic_store(&slow_started, 0);
        atomic_store(&slow_finished, 0);
        atomic_store(&slow_release, 0);
        struct cancel_target c = {0};
        unsigned loop = (unsigned)corio_loop_index();
        if (where)
            loop = (loop + 1) % n;
        CHECK_OK(corio_spawn_on(&c.task, loop, blocker, &c));
        while (!atomic_load(&slow_started))
            CHECK_OK(corio_sleep(CORIO_MSEC));
        CHECK_OK(corio_sleep(20 * CORIO_MSEC));
        CHECK_OK(corio_cancel(c.task));
        /* The cancelled wait ends while the job still runs: the job ends
         * only when released, so no clock decides this (a 300 ms job and
         * a 250 ms bound on the wait did, unscaled in the slow lanes). */
        void *r = NULL;
        int rc = corio_join_until(c.task, &r, corio_deadline_in(10 * CORIO_SEC * TEST_SLOW));
        atomic_store(&slow_release, 1);
        CHECK_OK(rc);
        CHECK_ERR(c.rc, CORIO_ECANCELED);
        CHECK_EQ(INT_OF(r), -3);
        /* Abandoned, the job still finishes on its thread. */
        while (!atomic_load(&slow_finished))
            CHECK_OK(corio_sleep(CORIO_MSEC));
    }
    return NULL;
}

TEST(cancelled_while_waiting)
{
    run_main_checked(2, main_cancel, NULL);
    CHECK_EQ(atomic_load(&slow_finished), 1);
}

/* ---- one pool thread: calls queue ---- */

static _Atomic int in_flight, max_in_flight, never_run_ran;

static void *serial_fn(void *arg)
{
    int now = atomic_fetch_add(&in_flight, 1) + 1;
    int prev = atomic_load(&max_in_flight);
    while (now > prev && !atomic_compare_exchange_weak(&max_in_flight, &prev, now))
        ;
    usleep(2000);
    atomic_fetch_sub(&in_flight, 1);
    return PTR_OF(INT_OF(arg) + 1);
}

static void *mark_ran(void *arg)
{
    atomic_store(&never_run_ran, 1);
    return NULL;
}

static void *serial_caller(void *arg)
{
    void *r;
    int rc = corio_run_blocking(serial_fn, arg, &r);
    if (rc != 0)
        return PTR_OF(rc);
    return r;
}

static _Atomic int pool_held, pool_release;

/* Holds its pool thread until released, so the call below certainly
 * finds that thread busy, however late either side runs. */
static void *hold_pool_thread(void *arg)
{
    atomic_store(&pool_held, 1);
    while (!atomic_load(&pool_release))
        usleep(1000);
    return arg;
}

static void *occupy_pool(void *arg)
{
    void *r;
    return PTR_OF(corio_run_blocking(hold_pool_thread, NULL, &r));
}

static void *main_one_thread(void *arg)
{
    enum { N = 40 };
    corio_task *t[N];
    void *res[N];
    for (intptr_t i = 0; i < N; i++)
        CHECK_OK(corio_spawn(&t[i], serial_caller, PTR_OF(i * 10)));
    CHECK_OK(corio_gather(t, N, res));
    for (intptr_t i = 0; i < N; i++)
        CHECK_EQ(INT_OF(res[i]), i * 10 + 1);
    CHECK_EQ(atomic_load(&max_in_flight), 1);

    /* With the only thread busy, a call that times out while queued never
     * runs at all. Busy for certain: polled until the thread holds the
     * job, which it keeps until released (a 20 ms head start and a 200 ms
     * job were not enough where the busy task started late: the call
     * then found the thread idle and ran). */
    corio_task *busy;
    CHECK_OK(corio_spawn(&busy, occupy_pool, NULL));
    CHECK(test_await(&pool_held, 1));
    test_stopwatch sw = test_stopwatch_start();
    CHECK_ERR(corio_run_blocking_until(mark_ran, NULL, NULL, sw.t0 + 20 * CORIO_MSEC),
              CORIO_ETIMEDOUT);
    CHECK_ELAPSED_WITHIN(&sw, 20 * CORIO_MSEC, CORIO_MSEC, 40 * CORIO_MSEC);
    atomic_store(&pool_release, 1);
    void *r;
    CHECK_OK(corio_join(busy, &r));
    CHECK_EQ(INT_OF(r), 0);
    return NULL;
}

/* run_main_checked with a blocking pool of one thread. */
static void run_with_one_pool_thread(unsigned loops, corio_fn main_fn)
{
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = loops;
    cfg.blocking_threads = 1;
    run_main_cfg(&cfg, main_fn, NULL);
}

TEST(one_pool_thread)
{
    atomic_store(&max_in_flight, 0);
    atomic_store(&never_run_ran, 0);
    atomic_store(&pool_held, 0);
    atomic_store(&pool_release, 0);
    run_with_one_pool_thread(2, main_one_thread);
    CHECK_EQ(atomic_load(&never_run_ran), 0);
}

/* ---- a cancellation pending before the call ----
 *
 * corio.h: "If the wait times out or is cancelled before fn started, fn
 * never runs", and a blocking call made with a cancellation pending fails
 * with CORIO_ECANCELED. So fn must not run at all here.
 */
static _Atomic int marks;

static void *mark_fn(void *arg)
{
    atomic_fetch_add(&marks, 1);
    return arg;
}

static _Atomic int keeper_stop;

/* Keeps a pool thread awake and looking for work, as in a busy program. */
static void *pool_keeper(void *arg)
{
    while (!atomic_load(&keeper_stop))
        if (corio_run_blocking(test_ret_arg, NULL, NULL) != 0)
            break;
    return NULL;
}

static void *main_pending_cancel(void *arg)
{
    atomic_store(&keeper_stop, 0);
    corio_task *keeper;
    CHECK_OK(corio_spawn_on(&keeper, (unsigned)(corio_loop_index() + 1) % corio_loop_count(),
                            pool_keeper, NULL));
    /* Not scaled: depending on how awake the pool is, the race shows in
     * 0.1% to 30% of calls. */
    int n = 20000, wrong_rc = 0;
    for (int i = 0; i < n; i++) {
        CHECK_OK(corio_cancel(corio_self()));
        int rc = corio_run_blocking(mark_fn, NULL, NULL);
        if (rc != CORIO_ECANCELED) {
            wrong_rc++;
            corio_yield(); /* take the cancellation the call did not */
        }
        CHECK_OK(corio_sleep(0));
    }
    atomic_store(&keeper_stop, 1);
    CHECK_OK(corio_join(keeper, NULL));
    int ran = atomic_load(&marks);
    if (ran || wrong_rc)
        FAIL_("%d calls made with a cancellation pending: fn ran %d times, %d calls "
              "returned something else than ECANCELED", n, ran, wrong_rc);
    return NULL;
}

TEST(cancel_pending_before_call)
{
    atomic_store(&marks, 0);
    run_main_checked(2, main_pending_cancel, NULL);
}

/* ---- a burst of calls gets threads, not one idle thread's queue ----
 *
 * Jobs that need each other: each waits (up to 10 s) until every job of
 * its burst has started. A pool that queued the burst behind its one idle
 * thread would run them one at a time, and each would give up waiting.
 */
#define BURST 4

static _Atomic int burst_started;

static void *rendezvous(void *arg)
{
    atomic_fetch_add(&burst_started, 1);
    for (int ms = 0; ms < 10000 && atomic_load(&burst_started) < BURST; ms++)
        usleep(1000);
    return PTR_OF(atomic_load(&burst_started) >= BURST);
}

static void *burst_caller(void *arg)
{
    void *met = NULL;
    CHECK_OK(corio_run_blocking(rendezvous, NULL, &met));
    return met;
}

static void *main_burst(void *arg)
{
    long rounds = test_scaled(20);
    for (long round = 0; round < rounds; round++) {
        atomic_store(&burst_started, 0);
        /* Leave exactly the pool's threads idle, then call in a burst. */
        CHECK_OK(corio_run_blocking(test_ret_arg, NULL, NULL));
        CHECK_OK(corio_sleep(CORIO_MSEC));
        corio_task *t[BURST];
        unsigned here = (unsigned)corio_loop_index();
        for (int i = 0; i < BURST; i++)
            CHECK_OK(corio_spawn_on(&t[i], here, burst_caller, NULL));
        void *met[BURST];
        CHECK_OK(corio_gather(t, BURST, met));
        for (int i = 0; i < BURST; i++)
            CHECK_EQ(INT_OF(met[i]), 1);
    }
    return NULL;
}

TEST(burst_of_calls_gets_threads)
{
    run_main_checked(1, main_burst, NULL);
}

/* ---- a job that owns its argument, given up: cleaned up exactly once ----
 *
 * blocking.h: when corio__run_blocking_owned fails, its argument passes to
 * the pool, and `abandoned` runs once nothing uses it any more: at once if
 * the function never started, after it returns if it was running (the
 * resolver frees its request this way). One pool thread, so the queued
 * case is certain: the thread is busy with another call. */
static _Atomic int owned_started, owned_release, owned_cleanups;

static void owned_abandoned(void *arg)
{
    CHECK_EQ(INT_OF(arg), 7);
    atomic_fetch_add(&owned_cleanups, 1);
}

static void *owned_fn(void *arg)
{
    atomic_fetch_add(&owned_started, 1);
    while (!atomic_load(&owned_release))
        usleep(1000);
    return arg;
}

static void *occupy_until_released(void *arg)
{
    return PTR_OF(corio_run_blocking(owned_fn, arg, NULL));
}

static void wait_for_cleanups(int n)
{
    for (int ms = 0; ms < 10000 && atomic_load(&owned_cleanups) < n; ms++)
        CHECK_OK(corio_sleep(CORIO_MSEC));
    CHECK_EQ(atomic_load(&owned_cleanups), n);
}

static void *main_owned(void *arg)
{
    /* Running when the deadline passes: cleaned up when fn returns. */
    atomic_store(&owned_release, 0);
    corio_time_t dl = corio_deadline_in(50 * CORIO_MSEC);
    CHECK_ERR(corio__run_blocking_owned(owned_fn, PTR_OF(7), owned_abandoned, NULL, dl),
              CORIO_ETIMEDOUT);
    /* Given up while queued, it was cleaned up before the call returned;
     * while running, not before fn returns, which it cannot yet. */
    if (atomic_load(&owned_cleanups) == 0) {
        CHECK_OK(corio_sleep(5 * CORIO_MSEC));
        CHECK_EQ(atomic_load(&owned_cleanups), 0); /* fn still uses it */
    }
    atomic_store(&owned_release, 1);
    wait_for_cleanups(1);
    CHECK_OK(corio_sleep(5 * CORIO_MSEC));
    CHECK_EQ(atomic_load(&owned_cleanups), 1);

    /* Queued behind a busy thread: cleaned up at once, fn never runs. */
    atomic_store(&owned_release, 0);
    atomic_store(&owned_started, 0);
    corio_task *busy;
    CHECK_OK(corio_spawn(&busy, occupy_until_released, PTR_OF(1)));
    while (!atomic_load(&owned_started))
        CHECK_OK(corio_sleep(CORIO_MSEC));
    CHECK_ERR(corio__run_blocking_owned(owned_fn, PTR_OF(7), owned_abandoned, NULL,
                                        corio_deadline_in(10 * CORIO_MSEC)),
              CORIO_ETIMEDOUT);
    CHECK_EQ(atomic_load(&owned_cleanups), 2);
    atomic_store(&owned_release, 1);
    CHECK_OK(corio_join(busy, NULL));
    CHECK_OK(corio_sleep(5 * CORIO_MSEC));
    CHECK_EQ(atomic_load(&owned_started), 1);
    CHECK_EQ(atomic_load(&owned_cleanups), 2);
    return NULL;
}

TEST(owned_argument_cleaned_up_once)
{
    atomic_store(&owned_started, 0);
    atomic_store(&owned_cleanups, 0);
    run_with_one_pool_thread(1, main_owned);
    CHECK_EQ(atomic_load(&owned_cleanups), 2);
}

/* ---- cancelled while queued, picked up before the task ran again ----
 *
 * corio.h: "If the wait times out or is cancelled ... before fn started,
 * fn never runs". Here the cancellation (or the deadline) comes while the
 * job waits in the queue behind the pool's one busy thread, and the task
 * has not run since (its loop is busy) when the thread frees up: the
 * thread must not start the job, and the call must fail with
 * CORIO_ECANCELED (CORIO_ETIMEDOUT). Order, not timing: main holds the
 * loop until a job queued after the victim's has started, which the one
 * thread only does after deciding on the victim's. */
static _Atomic int q_first_started, q_release, q_victim_ran, q_last_started;

static void *q_first_fn(void *arg)
{
    atomic_store(&q_first_started, 1);
    while (!atomic_load(&q_release))
        usleep(200);
    return NULL;
}

static void *q_victim_fn(void *arg)
{
    atomic_store(&q_victim_ran, 1);
    return PTR_OF(5);
}

static void *q_last_fn(void *arg)
{
    atomic_store(&q_last_started, 1);
    return NULL;
}

static void *q_call(void *arg)
{
    corio_fn fn = (corio_fn)arg;
    return PTR_OF(corio_run_blocking(fn, NULL, NULL));
}

static _Atomic corio_time_t q_deadline;

static void *q_call_until(void *arg)
{
    atomic_store(&q_deadline, corio_deadline_in(5 * CORIO_MSEC));
    return PTR_OF(corio_run_blocking_until(q_victim_fn, NULL, NULL, atomic_load(&q_deadline)));
}

static void *main_cancelled_while_queued(void *arg)
{
    bool timed = arg != NULL;
    atomic_store(&q_first_started, 0);
    atomic_store(&q_release, 0);
    atomic_store(&q_victim_ran, 0);
    atomic_store(&q_last_started, 0);
    corio_task *first, *victim, *last;
    CHECK_OK(corio_spawn(&first, q_call, (void *)q_first_fn));
    while (!atomic_load(&q_first_started))
        CHECK_OK(corio_sleep(CORIO_MSEC));
    /* One loop: each yield lets the task just spawned run up to its
     * wait, its job queued behind the busy thread. */
    CHECK_OK(corio_spawn(&victim, timed ? q_call_until : q_call, (void *)q_victim_fn));
    CHECK_OK(corio_yield());
    CHECK_OK(corio_spawn(&last, q_call, (void *)q_last_fn));
    CHECK_OK(corio_yield());
    if (timed) {
        /* Hold the loop past the deadline (the loop has not seen it). */
        while (corio_now() <= atomic_load(&q_deadline))
            usleep(100);
    } else {
        CHECK_OK(corio_cancel(victim));
    }
    /* The victim's wait is over; it has not run since. Free the thread
     * and hold the loop until the job queued after the victim's starts. */
    atomic_store(&q_release, 1);
    corio_time_t give_up = corio_now() + 10 * CORIO_SEC * TEST_SLOW;
    while (!atomic_load(&q_last_started) && corio_now() < give_up)
        usleep(100);
    CHECK_EQ(atomic_load(&q_last_started), 1);
    void *rc = NULL;
    CHECK_OK(corio_join(victim, &rc));
    CHECK_EQ(INT_OF(rc), timed ? CORIO_ETIMEDOUT : CORIO_ECANCELED);
    CHECK_EQ(atomic_load(&q_victim_ran), 0);
    CHECK_OK(corio_join(first, &rc));
    CHECK_OK(INT_OF(rc));
    CHECK_OK(corio_join(last, &rc));
    CHECK_OK(INT_OF(rc));
    return NULL;
}

TEST(cancelled_while_queued_never_runs)
{
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = 1;
    cfg.blocking_threads = 1;
    run_main_cfg(&cfg, main_cancelled_while_queued, NULL);
}

/* The same with the deadline already past when the call is made: an idle
 * pool thread takes the job at once, before the task has even got to its
 * wait, and must still not start it. */
static void *main_past_deadline(void *arg)
{
    atomic_store(&q_victim_ran, 0);
    int n = (int)test_scaled(2000), wrong_rc = 0;
    for (int i = 0; i < n; i++) {
        corio_time_t dl = i % 2 ? corio_now() : INT64_MIN;
        if (corio_run_blocking_until(q_victim_fn, NULL, NULL, dl) != CORIO_ETIMEDOUT)
            wrong_rc++;
    }
    CHECK_EQ(wrong_rc, 0);
    CHECK_EQ(atomic_load(&q_victim_ran), 0);
    return NULL;
}

TEST(past_deadline_never_runs)
{
    run_main_checked(2, main_past_deadline, NULL);
}

TEST(timed_out_while_queued_never_runs)
{
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = 1;
    cfg.blocking_threads = 1;
    run_main_cfg(&cfg, main_cancelled_while_queued, PTR_OF(1));
}

int main(int argc, char **argv)
{
    RUN(runs_on_another_thread);
    RUN(loop_keeps_running_sleeping_neighbour);
    RUN(many_concurrent_calls);
    RUN(deadline_shorter_than_call);
    RUN(cancelled_while_waiting);
    RUN(one_pool_thread);
    RUN(cancel_pending_before_call);
    RUN(loop_keeps_running_yielding_neighbour);
    RUN(burst_of_calls_gets_threads);
    RUN(owned_argument_cleaned_up_once);
    RUN(cancelled_while_queued_never_runs);
    RUN(timed_out_while_queued_never_runs);
    RUN(past_deadline_never_runs);
    return test_summary();
}
