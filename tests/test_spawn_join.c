/*
 * test_spawn_join.c: spawn, join, gather, detach, and the calls' error
 * cases (outside a runtime, bad arguments, self-join, deadlines).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>

#include "loop.h"
#include "task.h"
#include "test.h"

static void *ret_after_sleep(void *arg)
{
    intptr_t ms = INT_OF(arg);
    if (corio_sleep(ms * CORIO_MSEC) != 0)
        return PTR_OF(-1);
    return PTR_OF(ms * 1000 + 7);
}

/* ---- spawn and join ---- */

static void *main_spawn_join(void *arg)
{
    enum { N = 500 };
    static corio_task *t[N];
    for (intptr_t i = 0; i < N; i++)
        CHECK_OK(corio_spawn(&t[i], test_ret_arg, PTR_OF(i * 3 + 1)));
    /* Join in reverse: some are done, some not yet started. */
    for (intptr_t i = N - 1; i >= 0; i--) {
        void *r = NULL;
        CHECK_OK(corio_join(t[i], &r));
        CHECK_EQ(INT_OF(r), i * 3 + 1);
    }
    /* NULL result pointer is allowed. */
    corio_task *u;
    CHECK_OK(corio_spawn(&u, test_ret_arg, PTR_OF(5)));
    CHECK_OK(corio_join(u, NULL));
    return PTR_OF(99);
}

TEST(spawn_join_results)
{
    CHECK_EQ(INT_OF(run_main_checked(2, main_spawn_join, NULL)), 99);
    CHECK_EQ(INT_OF(run_main_checked(4, main_spawn_join, NULL)), 99);
}

/* ---- gather keeps the order given ---- */

#define GATHER_N 300

static _Atomic int finish_seq;
static int finish_order[GATHER_N];

static void *sleep_random_then_return(void *arg)
{
    intptr_t i = INT_OF(arg);
    uint64_t rng = (uint64_t)i * 0x9E3779B97F4A7C15ull + 1;
    int64_t us = (int64_t)(test_rand(&rng) % 20000);
    CHECK_OK(corio_sleep(us * CORIO_USEC));
    finish_order[atomic_fetch_add(&finish_seq, 1)] = (int)i;
    return PTR_OF(i * 11 + 3);
}

static void *main_gather(void *arg)
{
    static corio_task *t[GATHER_N];
    static void *res[GATHER_N];
    atomic_store(&finish_seq, 0);
    for (intptr_t i = 0; i < GATHER_N; i++)
        CHECK_OK(corio_spawn(&t[i], sleep_random_then_return, PTR_OF(i)));
    memset(res, 0, sizeof res);
    CHECK_OK(corio_gather(t, GATHER_N, res));
    for (intptr_t i = 0; i < GATHER_N; i++)
        CHECK_EQ(INT_OF(res[i]), i * 11 + 3);
    CHECK_EQ(atomic_load(&finish_seq), GATHER_N);
    /* They really did finish out of order. */
    int inversions = 0;
    for (int i = 1; i < GATHER_N; i++)
        inversions += finish_order[i] < finish_order[i - 1];
    CHECK_GT(inversions, 0);
    /* Empty gather is fine. */
    CHECK_OK(corio_gather(NULL, 0, NULL));
    return NULL;
}

TEST(gather_in_order)
{
    run_main_checked(4, main_gather, NULL);
}

/* ---- join across loops ---- */

static void *report_loop_after_sleep(void *arg)
{
    CHECK_OK(corio_sleep(INT_OF(arg) * CORIO_MSEC));
    return PTR_OF(corio_loop_index());
}

static void *main_join_other_loop(void *arg)
{
    unsigned n = corio_loop_count();
    CHECK_EQ(n, 4);
    for (int round = 0; round < 50; round++) {
        unsigned me = (unsigned)corio_loop_index();
        unsigned other = (me + 1 + (unsigned)round % (n - 1)) % n;
        corio_task *t;
        CHECK_OK(corio_spawn_on(&t, other, report_loop_after_sleep, PTR_OF(round % 3)));
        corio_time_t t0 = corio_now();
        void *r;
        CHECK_OK(corio_join(t, &r));
        CHECK_EQ(INT_OF(r), other);
        /* The wake-up came through the other loop's finish, promptly. */
        CHECK_LT(corio_now() - t0, 1 * CORIO_SEC * TEST_SLOW);
    }
    return NULL;
}

TEST(join_task_on_other_loop)
{
    run_main_checked(4, main_join_other_loop, NULL);
}

/* ---- detach ---- */

static _Atomic int detached_ran;

static void *count_after_sleep(void *arg)
{
    if (INT_OF(arg))
        corio_sleep(INT_OF(arg) * CORIO_MSEC);
    atomic_fetch_add(&detached_ran, 1);
    return NULL;
}

static void *main_detach(void *arg)
{
    atomic_store(&detached_ran, 0);
    /* 1: spawned detached (NULL handle). */
    for (int i = 0; i < 20; i++)
        CHECK_OK(corio_spawn(NULL, count_after_sleep, PTR_OF(i % 3)));
    /* 2: detached right after spawning, before it ran. */
    for (int i = 0; i < 20; i++) {
        corio_task *t;
        CHECK_OK(corio_spawn(&t, count_after_sleep, PTR_OF(i % 3)));
        CHECK_OK(corio_detach(t));
    }
    /* 3: detached after it finished. */
    corio_task *t;
    CHECK_OK(corio_spawn(&t, count_after_sleep, PTR_OF(0)));
    while (atomic_load(&detached_ran) < 41)
        CHECK_OK(corio_sleep(1 * CORIO_MSEC));
    CHECK_OK(corio_sleep(5 * CORIO_MSEC));
    CHECK_OK(corio_detach(t));
    /* That detach released it (no spawn since could have reused it):
     * the handle is refused from now on, as released_handle_is_einval. */
    CHECK_ERR(corio_detach(t), CORIO_EINVAL);
    CHECK_ERR(corio_join(t, NULL), CORIO_EINVAL);
    CHECK_EQ(atomic_load(&detached_ran), 41);
    CHECK_ERR(corio_detach(NULL), CORIO_EINVAL);
    /* 4: pinned and detached. */
    CHECK_OK(corio_spawn_on(NULL, corio_loop_count() - 1, count_after_sleep, PTR_OF(1)));
    while (atomic_load(&detached_ran) < 42)
        CHECK_OK(corio_sleep(1 * CORIO_MSEC));
    return NULL;
}

TEST(detach)
{
    run_main_checked(2, main_detach, NULL);
    run_main_checked(4, main_detach, NULL);
}

/* ---- self-join, bad arguments ---- */

static void *join_self(void *arg)
{
    void *r = PTR_OF(123);
    CHECK_ERR(corio_join(corio_self(), &r), CORIO_EDEADLK);
    CHECK_ERR(corio_join_until(corio_self(), &r, corio_deadline_in(CORIO_MSEC)), CORIO_EDEADLK);
    corio_task *me = corio_self();
    CHECK_ERR(corio_gather(&me, 1, NULL), CORIO_EDEADLK);
    CHECK_EQ(INT_OF(r), 123); /* untouched */
    return PTR_OF(1);
}

static void *main_bad_args(void *arg)
{
    corio_task *t = (corio_task *)&t; /* must be reset to NULL on failure */
    CHECK_ERR(corio_spawn(&t, NULL, NULL), CORIO_EINVAL);
    CHECK(t == NULL);
    unsigned n = corio_loop_count();
    CHECK_ERR(corio_spawn_on(&t, n, test_ret_arg, NULL), CORIO_EINVAL);
    CHECK_ERR(corio_spawn_on(&t, n + 1000, test_ret_arg, NULL), CORIO_EINVAL);
    CHECK_ERR(corio_spawn_on(&t, (unsigned)-1, test_ret_arg, NULL), CORIO_EINVAL);
    CHECK_ERR(corio_spawn_on(NULL, n, test_ret_arg, NULL), CORIO_EINVAL);

    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    CHECK_EQ(o.loop, -1);
    CHECK_EQ(o.flags, 0);
    CHECK_EQ(o.stack_size, 0);
    o.flags = 1u << 7;
    CHECK_ERR(corio_spawn_ex(&t, test_ret_arg, NULL, &o), CORIO_EINVAL);
    o.flags = CORIO_TASK_LIGHT | (1u << 1);
    CHECK_ERR(corio_spawn_ex(&t, test_ret_arg, NULL, &o), CORIO_EINVAL);
    corio_spawn_opts_init(&o);
    o.loop = -2;
    CHECK_ERR(corio_spawn_ex(&t, test_ret_arg, NULL, &o), CORIO_EINVAL);
    o.loop = (int)n;
    CHECK_ERR(corio_spawn_ex(&t, test_ret_arg, NULL, &o), CORIO_EINVAL);
    corio_spawn_opts_init(&o);
    o.flags = CORIO_TASK_LIGHT;
    o.stack_size = 64 * 1024; /* light tasks have no own stack */
    CHECK_ERR(corio_spawn_ex(&t, test_ret_arg, NULL, &o), CORIO_EINVAL);
    corio_spawn_opts_init(&o);
    o.stack_size = SIZE_MAX;
    CHECK_ERR(corio_spawn_ex(&t, test_ret_arg, NULL, &o), CORIO_EINVAL);

    CHECK_ERR(corio_join(NULL, NULL), CORIO_EINVAL);
    CHECK_ERR(corio_gather(NULL, 3, NULL), CORIO_EINVAL);
    CHECK_ERR(corio_run_blocking(NULL, NULL, NULL), CORIO_EINVAL);
    CHECK_ERR(corio_cancel(NULL), CORIO_EINVAL);

    /* Valid options work: NULL opts, explicit defaults, a pinned light
     * task, a custom stack size. */
    void *r;
    CHECK_OK(corio_spawn_ex(&t, test_ret_arg, PTR_OF(8), NULL));
    CHECK_OK(corio_join(t, &r));
    CHECK_EQ(INT_OF(r), 8);
    corio_spawn_opts_init(&o);
    o.loop = (int)n - 1;
    o.flags = CORIO_TASK_LIGHT;
    CHECK_OK(corio_spawn_ex(&t, test_ret_arg, PTR_OF(9), &o));
    CHECK_OK(corio_join(t, &r));
    CHECK_EQ(INT_OF(r), 9);
    corio_spawn_opts_init(&o);
    o.stack_size = 1000; /* rounded up to the minimum */
    CHECK_OK(corio_spawn_ex(&t, test_ret_arg, PTR_OF(10), &o));
    CHECK_OK(corio_join(t, &r));
    CHECK_EQ(INT_OF(r), 10);

    /* Self-join, from main and from a spawned task. */
    CHECK_EQ(INT_OF(join_self(NULL)), 1);
    CHECK_OK(corio_spawn(&t, join_self, NULL));
    CHECK_OK(corio_join(t, &r));
    CHECK_EQ(INT_OF(r), 1);
    return NULL;
}

TEST(bad_arguments)
{
    run_main_checked(2, main_bad_args, NULL);
}

/* ---- outside a runtime ---- */

static void check_not_in_task(bool on_pool_thread)
{
    corio_task *t = (corio_task *)&t;
    CHECK_ERR(corio_spawn(&t, test_ret_arg, NULL), CORIO_EPERM);
    CHECK(t == NULL);
    CHECK_ERR(corio_spawn(NULL, test_ret_arg, NULL), CORIO_EPERM);
    CHECK_ERR(corio_spawn_on(&t, 0, test_ret_arg, NULL), CORIO_EPERM);
    CHECK_ERR(corio_spawn_ex(&t, test_ret_arg, NULL, NULL), CORIO_EPERM);
    CHECK_ERR(corio_sleep(CORIO_MSEC), CORIO_EPERM);
    CHECK_ERR(corio_sleep(0), CORIO_EPERM);
    CHECK_ERR(corio_sleep_until(CORIO_FOREVER), CORIO_EPERM);
    CHECK_ERR(corio_yield(), CORIO_EPERM);
    CHECK_ERR(corio_join(NULL, NULL), CORIO_EPERM);
    CHECK_ERR(corio_join_until(NULL, NULL, 0), CORIO_EPERM);
    CHECK_ERR(corio_gather(NULL, 0, NULL), CORIO_EPERM);
    CHECK_ERR(corio_run_blocking(test_ret_arg, NULL, NULL), CORIO_EPERM);
    CHECK(corio_self() == NULL);
    CHECK_EQ(corio_task_id(NULL), 0);
    CHECK_EQ(corio_loop_index(), -1);
    if (!on_pool_thread)
        CHECK_EQ(corio_loop_count(), 0);
}

static void *pool_fn_not_in_task(void *arg)
{
    check_not_in_task(true);
    return PTR_OF(77);
}

static void *main_pool_thread_eperm(void *arg)
{
    void *r;
    CHECK_OK(corio_run_blocking(pool_fn_not_in_task, NULL, &r));
    CHECK_EQ(INT_OF(r), 77);
    return NULL;
}

TEST(outside_runtime)
{
    check_not_in_task(false);
    /* A blocking-pool thread belongs to a runtime but is not a task. */
    run_main_checked(2, main_pool_thread_eperm, NULL);
    check_not_in_task(false);
}

/* ---- identity ---- */

#define ID_N 2000

static uint64_t ids_seen[ID_N + 1];
static uint64_t ids_from_handle[ID_N + 1];
static _Atomic int bad_index;

static void *record_identity(void *arg)
{
    intptr_t i = INT_OF(arg);
    corio_task *me = corio_self();
    CHECK(me != NULL);
    ids_seen[i] = corio_task_id(me);
    int li = corio_loop_index();
    if (li < 0 || (unsigned)li >= corio_loop_count() || corio_loop_count() != 4)
        atomic_fetch_add(&bad_index, 1);
    if (i % 2)
        corio_yield();
    if (corio_self() != me || corio_task_id(corio_self()) != ids_seen[i])
        atomic_fetch_add(&bad_index, 1);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void *main_identity(void *arg)
{
    static corio_task *t[ID_N];
    atomic_store(&bad_index, 0);
    for (intptr_t i = 0; i < ID_N; i++) {
        CHECK_OK(corio_spawn(&t[i], record_identity, PTR_OF(i)));
        ids_from_handle[i] = corio_task_id(t[i]);
    }
    ids_from_handle[ID_N] = corio_task_id(corio_self());
    CHECK_OK(corio_gather(t, ID_N, NULL));
    ids_seen[ID_N] = ids_from_handle[ID_N];
    for (int i = 0; i <= ID_N; i++) {
        CHECK_NE(ids_seen[i], 0);
        CHECK_EQ(ids_seen[i], ids_from_handle[i]);
    }
    qsort(ids_seen, ID_N + 1, sizeof ids_seen[0], cmp_u64);
    for (int i = 1; i <= ID_N; i++)
        CHECK_NE(ids_seen[i], ids_seen[i - 1]);
    CHECK_EQ(atomic_load(&bad_index), 0);
    return NULL;
}

static uint64_t first_run_main_id;

static void *main_id_only(void *arg)
{
    first_run_main_id = corio_task_id(corio_self());
    return NULL;
}

TEST(identity)
{
    run_main_checked(4, main_identity, NULL);
    /* Ids stay unique across runtimes of one process. */
    uint64_t before = ids_from_handle[ID_N];
    run_main_checked(2, main_id_only, NULL);
    CHECK_NE(first_run_main_id, 0);
    CHECK_NE(first_run_main_id, before);
}

/* ---- deadlines on join and gather ---- */

static void *main_join_deadlines(void *arg)
{
    corio_task *slow;
    CHECK_OK(corio_spawn(&slow, ret_after_sleep, PTR_OF(200)));
    void *r = PTR_OF(-5);

    /* A deadline already past: fails at once. */
    test_stopwatch sw = test_stopwatch_start();
    CHECK_ERR(corio_join_until(slow, &r, sw.t0 - CORIO_MSEC), CORIO_ETIMEDOUT);
    CHECK_ERR(corio_join_until(slow, &r, 0), CORIO_ETIMEDOUT);
    CHECK_ELAPSED_WITHIN(&sw, 0, 0, 20 * CORIO_MSEC);
    /* A short deadline: fails when it passes. */
    sw = test_stopwatch_start();
    CHECK_ERR(corio_join_until(slow, &r, sw.t0 + 20 * CORIO_MSEC), CORIO_ETIMEDOUT);
    CHECK_ELAPSED_WITHIN(&sw, 20 * CORIO_MSEC, CORIO_MSEC, 40 * CORIO_MSEC);
    CHECK_EQ(INT_OF(r), -5); /* untouched */
    /* The handle is still ours: join for real. */
    CHECK_OK(corio_join(slow, &r));
    CHECK_EQ(INT_OF(r), 200 * 1000 + 7);

    /* A finished task joins even with a past deadline. How soon it has
     * finished is up to the machine (5 ms was not always enough under
     * TSan on a slow VM), so ask again until it has, for up to 10 s: a
     * join that never succeeds with a past deadline fails here. */
    corio_task *quick;
    CHECK_OK(corio_spawn(&quick, test_ret_arg, PTR_OF(31)));
    corio_time_t give_up = corio_deadline_in(10 * CORIO_SEC);
    int rc;
    do {
        CHECK_OK(corio_sleep(5 * CORIO_MSEC));
        rc = corio_join_until(quick, &r, corio_now() - CORIO_SEC);
    } while (rc == CORIO_ETIMEDOUT && corio_now() < give_up);
    CHECK_OK(rc);
    CHECK_EQ(INT_OF(r), 31);

    /* gather_until: times out on the slow one and releases nothing,
     * not even the handles of tasks that had finished. */
    corio_task *g[3];
    CHECK_OK(corio_spawn(&g[0], test_ret_arg, PTR_OF(1)));
    CHECK_OK(corio_spawn(&g[1], ret_after_sleep, PTR_OF(150)));
    CHECK_OK(corio_spawn(&g[2], test_ret_arg, PTR_OF(3)));
    CHECK_OK(corio_sleep(5 * CORIO_MSEC));
    void *res[3] = {PTR_OF(-1), PTR_OF(-1), PTR_OF(-1)};
    sw = test_stopwatch_start();
    CHECK_ERR(corio_gather_until(g, 3, res, sw.t0 + 10 * CORIO_MSEC), CORIO_ETIMEDOUT);
    CHECK_ELAPSED_WITHIN(&sw, 10 * CORIO_MSEC, CORIO_MSEC, 40 * CORIO_MSEC);
    CHECK_ERR(corio_gather_until(g, 3, res, 0), CORIO_ETIMEDOUT);
    /* The finished tasks' handles are still joinable one by one... */
    CHECK_OK(corio_join(g[2], &res[2]));
    CHECK_EQ(INT_OF(res[2]), 3);
    /* ...and the rest gathers. */
    CHECK_OK(corio_gather(g, 2, res));
    CHECK_EQ(INT_OF(res[0]), 1);
    CHECK_EQ(INT_OF(res[1]), 150 * 1000 + 7);
    return NULL;
}

TEST(join_and_gather_deadlines)
{
    run_main_checked(2, main_join_deadlines, NULL);
    run_main_checked(4, main_join_deadlines, NULL);
}

/* ---- a task that keeps yielding lets never-run tasks start ----
 *
 * asyncio.sleep(0) semantics on one loop: a task spinning on yield until
 * a task it spawned has run must see it run (it used to switch straight
 * back to itself forever, the fairness pick never coming round).
 */
static _Atomic int ran_child;

static void *set_flag(void *arg)
{
    (void)arg;
    atomic_store(&ran_child, 1);
    return NULL;
}

static void *main_yield_until_child(void *arg)
{
    (void)arg;
    for (int round = 0; round < 100; round++) {
        atomic_store(&ran_child, 0);
        CHECK_OK(corio_spawn(NULL, set_flag, NULL));
        long yields = 0;
        while (!atomic_load(&ran_child) && yields < 1000000) {
            CHECK_OK(corio_yield());
            yields++;
        }
        CHECK_EQ(atomic_load(&ran_child), 1);
        /* One yield: nothing else was ready, so everything queued goes
         * first (it used to take up to a poll interval, 61 picks). */
        CHECK_EQ(yields, 1);
    }
    return NULL;
}

TEST(yield_lets_new_tasks_run) { run_main_checked(1, main_yield_until_child, NULL); }

/* Every task queued when a lone task yields starts before the yield
 * returns, however each one leaves the CPU (returns, sleeps, yields
 * itself, or is a light task), and none queued after it is owed that. */
static _Atomic int started;

static void *count_start_then(void *arg)
{
    atomic_fetch_add(&started, 1);
    switch (INT_OF(arg) % 3) {
    case 1:
        corio_sleep(CORIO_MSEC);
        break;
    case 2:
        corio_yield();
        break;
    }
    return NULL;
}

static void *main_one_yield_starts_all(void *arg)
{
    enum { N = 200 };
    corio_task *t[N];
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    for (int round = 0; round < 20; round++) {
        atomic_store(&started, 0);
        for (int i = 0; i < N; i++) {
            o.flags = i % 4 == 3 ? CORIO_TASK_LIGHT : 0;
            CHECK_OK(corio_spawn_ex(&t[i], count_start_then, PTR_OF(i + round), &o));
        }
        CHECK_OK(corio_yield());
        CHECK_EQ(atomic_load(&started), N);
        CHECK_OK(corio_gather(t, N, NULL));
    }
    return NULL;
}

TEST(one_yield_starts_every_queued_task) { run_main_checked(1, main_one_yield_starts_all, NULL); }

/* ---- queued tasks behind a stream of wake-ups ----
 *
 * The tasks queued when the loop polls start before the ones it woke
 * (FIFO at the poll's granularity, sched.c). Here four tasks yield to one
 * another, so some started task is always ready; main queues a burst and
 * waits for it. Each queued task notes how many yields the spinners had
 * made by its start: every one starts within a few poll intervals of
 * yields. (It used to be one queued task per poll: the last of 300
 * started some 18,000 yields late, and on the reference experiment tasks
 * began their sleeps seconds late.)
 */
enum { SPINNERS = 4, BURST = 300 };
static _Atomic long spinner_yields;
static _Atomic bool spinners_stop;
static long burst_started_at[BURST];

static void *spinner(void *arg)
{
    (void)arg;
    while (!atomic_load(&spinners_stop)) {
        atomic_fetch_add(&spinner_yields, 1);
        CHECK_OK(corio_yield());
    }
    return NULL;
}

static void *note_start(void *arg)
{
    burst_started_at[INT_OF(arg)] = atomic_load(&spinner_yields);
    return NULL;
}

static void *main_burst_beats_wake_ups(void *arg)
{
    (void)arg;
    for (int round = 0; round < 10; round++) {
        corio_task *spinners[SPINNERS], *burst[BURST];
        atomic_store(&spinners_stop, false);
        for (int i = 0; i < SPINNERS; i++)
            CHECK_OK(corio_spawn(&spinners[i], spinner, NULL));
        CHECK_OK(corio_yield()); /* they start, and from now on keep one ready */
        long before = atomic_load(&spinner_yields);
        for (int i = 0; i < BURST; i++)
            CHECK_OK(corio_spawn(&burst[i], note_start, PTR_OF(i)));
        CHECK_OK(corio_gather(burst, BURST, NULL));
        for (int i = 0; i < BURST; i++)
            CHECK_LE(burst_started_at[i] - before, 3 * (long)CORIO__POLL_INTERVAL);
        atomic_store(&spinners_stop, true);
        CHECK_OK(corio_gather(spinners, SPINNERS, NULL));
    }
    return NULL;
}

TEST(queued_tasks_start_before_later_wake_ups)
{
    run_main_checked(1, main_burst_beats_wake_ups, NULL);
}

/* ---- what was ready before a poll runs before what it queues ----
 *
 * The other half of the order (sched.c, ready_mark); both halves were
 * found missing by review. A woken task waits for at most the picks owed
 * at two polls: chains of tasks that each spawn a successor keep Q tasks
 * queued, and with Q a multiple of the poll interval the picks once ran
 * out exactly at each poll and were owed again, so main, woken by its
 * timer, waited until the chains stopped. And tasks woken before a burst
 * of spawns run before the burst, not behind all of it.
 */
enum { CHAIN_LIMIT = 200000 };
static _Atomic long chain_starts, chain_late_starts;
static corio_time_t chain_due;

static void *chain_link(void *arg)
{
    if (corio_now() > chain_due)
        atomic_fetch_add(&chain_late_starts, 1);
    if (atomic_fetch_add(&chain_starts, 1) < CHAIN_LIMIT)
        CHECK_OK(corio_spawn(NULL, chain_link, arg));
    return NULL;
}

static void *main_woken_behind_chains(void *arg)
{
    long q = INT_OF(arg);
    atomic_store(&chain_starts, 0);
    atomic_store(&chain_late_starts, 0);
    chain_due = corio_now() + CORIO_MSEC;
    for (long i = 0; i < q; i++)
        CHECK_OK(corio_spawn(NULL, chain_link, NULL));
    CHECK_OK(corio_sleep_until(chain_due));
    long late = atomic_load(&chain_late_starts);
    long starts = atomic_load(&chain_starts);
    CHECK_LT(starts, CHAIN_LIMIT); /* woken before the chains ran dry */
    /* Up to a poll interval until the timer fires, then picks owed at
     * two polls at most. */
    CHECK_LE(late, 2 * q + 2 * (long)CORIO__POLL_INTERVAL);
    atomic_store(&chain_starts, CHAIN_LIMIT); /* stop the chains */
    return NULL;
}

TEST(woken_task_waits_for_one_round_of_queued_tasks)
{
    for (long q = CORIO__POLL_INTERVAL; q <= 3 * (long)CORIO__POLL_INTERVAL; q += CORIO__POLL_INTERVAL)
        run_main_checked(1, main_woken_behind_chains, PTR_OF(q));
    run_main_checked(1, main_woken_behind_chains, PTR_OF(100));
}

enum { EARLY_WAITERS = 200, LATE_BURST = 3000 };
static _Atomic long late_burst_started;
static long waiter_saw_started[EARLY_WAITERS];

static void *count_burst_start(void *arg)
{
    (void)arg;
    atomic_fetch_add(&late_burst_started, 1);
    return NULL;
}

static void *early_waiter(void *arg)
{
    CHECK_OK(corio_event_wait(arg));
    static _Atomic int next;
    waiter_saw_started[atomic_fetch_add(&next, 1) % EARLY_WAITERS] =
        atomic_load(&late_burst_started);
    return NULL;
}

static void *main_wake_then_burst(void *arg)
{
    (void)arg;
    corio_event *ev;
    CHECK_OK(corio_event_new(&ev));
    corio_task *w[EARLY_WAITERS];
    for (int i = 0; i < EARLY_WAITERS; i++)
        CHECK_OK(corio_spawn(&w[i], early_waiter, ev));
    CHECK_OK(corio_sleep(CORIO_MSEC)); /* all waiting */
    atomic_store(&late_burst_started, 0);
    CHECK_OK(corio_event_set(ev));
    for (int i = 0; i < LATE_BURST; i++)
        CHECK_OK(corio_spawn(NULL, count_burst_start, NULL));
    CHECK_OK(corio_gather(w, EARLY_WAITERS, NULL));
    corio_event_free(ev);
    /* At most the picks of one poll made before the burst went ahead. */
    for (int i = 0; i < EARLY_WAITERS; i++)
        CHECK_LE(waiter_saw_started[i], (long)CORIO__POLL_INTERVAL);
    return NULL;
}

TEST(tasks_woken_before_a_burst_run_before_it)
{
    for (int round = 0; round < 5; round++)
        run_main_checked(1, main_wake_then_burst, NULL);
}

/* ---- a spilled task starts while the ring keeps filling ----
 *
 * Found by review: the run queue pops its ring first and its overflow
 * only when the ring is empty, so the oldest task, spilled to the
 * overflow by a burst, waited for as long as tasks that each spawn a
 * successor kept the ring from emptying. Now a poll gives the overflow a
 * turn (sched.c: overflow_turn). One loop, so no thief drains it.
 */
enum { SPILL_BURST = 300 };
static _Atomic long spill_chain_starts, spilled_saw;

static void *spill_chain_link(void *arg)
{
    if (atomic_fetch_add(&spill_chain_starts, 1) < CHAIN_LIMIT)
        CHECK_OK(corio_spawn(NULL, spill_chain_link, arg));
    return NULL;
}

static void *note_chain_starts(void *arg)
{
    (void)arg;
    atomic_store(&spilled_saw, atomic_load(&spill_chain_starts));
    return NULL;
}

static void *main_spilled_behind_chains(void *arg)
{
    (void)arg;
    atomic_store(&spill_chain_starts, 0);
    corio_task *oldest;
    CHECK_OK(corio_spawn(&oldest, note_chain_starts, NULL));
    for (int i = 1; i < SPILL_BURST; i++)
        CHECK_OK(corio_spawn(NULL, spill_chain_link, NULL));
    CHECK(atomic_load(&corio__loop_current()->runq.overflow_len) > 0);
    CHECK_OK(corio_join(oldest, NULL));
    long saw = atomic_load(&spilled_saw);
    atomic_store(&spill_chain_starts, CHAIN_LIMIT); /* stop the chains */
    CHECK_LE(saw, 4L * SPILL_BURST);
    return NULL;
}

TEST(spilled_task_starts_while_the_ring_keeps_filling)
{
    run_main_checked(1, main_spilled_behind_chains, NULL);
}

/* ---- the ready mark does not outlive the picks ----
 *
 * Found by review (sched.c, ready_mark). A light task's stall (its start
 * failed for want of memory to save the shared stack) made the scheduler
 * skip the mark, so the picks ran out with the mark still set; a direct
 * switch then took the marked task off the ready list, and the mark,
 * never matched again, kept the ready list first for good: a lone
 * yielder, which re-lists itself before every pass, starved the task
 * queued behind it. Two players take turns until just after a poll has
 * marked one of them; the other yields, a task queued then yields
 * straight to the marked player, which leaves the list for good; the
 * other, now alone, queues a task and yields. (The test set the stall by
 * hand; stalled light tasks now wait on a list of their own and no longer
 * make the scheduler skip anything, so it runs the same turns without.)
 */
static corio__loop *mark_loop;
static corio_event *mark_release;
static corio_task *mark_marked, *mark_n, *mark_q;
static int mark_q_started, mark_phase;
static long mark_lone_yields;

static void *mark_q_fn(void *arg)
{
    (void)arg;
    mark_q_started = 1;
    return NULL;
}

static void *mark_n_fn(void *arg)
{
    (void)arg;
    CHECK_OK(corio_yield());
    CHECK_OK(corio_event_wait(mark_release));
    return NULL;
}

static void *mark_player(void *arg)
{
    (void)arg;
    corio__loop *l = mark_loop;
    corio_task *self = corio_self();
    for (;;) {
        if (mark_phase == 1) {
            /* The marked player: off the ready list for good. */
            CHECK(self == mark_marked);
            CHECK_OK(corio_event_wait(mark_release));
            return NULL;
        }
        if (l->tick == CORIO__POLL_INTERVAL - 2 && !mark_n)
            CHECK_OK(corio_spawn(&mark_n, mark_n_fn, NULL)); /* queued at the next poll */
        unsigned before = l->tick;
        CHECK_OK(corio_yield());
        if (mark_n && l->tick < before && l->ready_mark && l->ready_mark != self &&
            l->queue_picks) {
            mark_marked = l->ready_mark; /* just after the poll: the other player */
            mark_phase = 1;
            CHECK_OK(corio_yield()); /* the picks start N; N's yield pops the mark */
            break;
        }
    }
    while (l->tick < CORIO__POLL_INTERVAL)
        CHECK_OK(corio_yield());
    CHECK_OK(corio_spawn(&mark_q, mark_q_fn, NULL));
    while (!mark_q_started && mark_lone_yields < 1000000) {
        CHECK_OK(corio_yield());
        mark_lone_yields++;
    }
    CHECK(mark_q_started);
    CHECK_LE(mark_lone_yields, 2 * (long)CORIO__POLL_INTERVAL);
    CHECK_OK(corio_event_set(mark_release));
    return NULL;
}

static void *main_mark_outlives_picks(void *arg)
{
    (void)arg;
    mark_loop = corio__loop_current();
    CHECK_OK(corio_event_new(&mark_release));
    corio_task *other;
    CHECK_OK(corio_spawn(&other, mark_player, NULL));
    mark_player(NULL);
    CHECK_OK(corio_join(other, NULL));
    CHECK_OK(corio_join(mark_n, NULL));
    CHECK_OK(corio_join(mark_q, NULL));
    corio_event_free(mark_release);
    return NULL;
}

TEST(ready_mark_does_not_outlive_the_picks)
{
    run_main_checked(1, main_mark_outlives_picks, NULL);
}

/* ---- a poll with nothing queued marks nothing ----
 *
 * Found by review: marked tasks go through the scheduler, since direct
 * switches wait while picks are owed, so a mark set with nothing queued
 * only cost switches: with 1,000 tasks yielding, 97% of the yields went
 * through the scheduler (2.6% before the mark). 100 tasks yield on one
 * loop with nothing queued; after every poll one of them checks that
 * nothing was marked.
 */
enum { MARK_YIELDERS = 100 };
static _Atomic int mark_polls_seen;

static void *yield_and_watch_polls(void *arg)
{
    bool watcher = arg != NULL;
    corio__loop *l = corio__loop_current();
    for (int i = 0; i < 2000; i++) {
        unsigned before = l->tick;
        CHECK_OK(corio_yield());
        if (watcher && l->tick < before && corio__runq_owner_empty(&l->runq)) {
            CHECK(l->ready_mark == NULL);
            atomic_fetch_add(&mark_polls_seen, 1);
        }
    }
    return NULL;
}

static void *main_unqueued_polls(void *arg)
{
    (void)arg;
    corio_task *t[MARK_YIELDERS];
    for (int i = 0; i < MARK_YIELDERS; i++)
        CHECK_OK(corio_spawn(&t[i], yield_and_watch_polls, i == 0 ? PTR_OF(1) : NULL));
    CHECK_OK(corio_gather(t, MARK_YIELDERS, NULL));
    CHECK_GT(atomic_load(&mark_polls_seen), 0);
    return NULL;
}

TEST(a_poll_with_nothing_queued_marks_nothing)
{
    run_main_checked(1, main_unqueued_polls, NULL);
}

/* ---- a task joining never-run children in turn ----
 *
 * With nothing else ready, the loop starts each child straight from the
 * task that waits (sched.c: suspend_with_none_ready), and a child that
 * waits in turn starts the next one the same way. Whatever the children
 * do (return, sleep, yield, wait for a grandchild, run light or on a
 * stack of their own size), each runs exactly once and each join returns
 * its own child's result. */
enum { IN_TURN = 64 };
static _Atomic int in_turn_runs[IN_TURN];

static void *child_in_turn(void *arg)
{
    intptr_t i = INT_OF(arg);
    atomic_fetch_add(&in_turn_runs[i], 1);
    switch (i % 4) {
    case 1:
        CHECK_OK(corio_sleep(CORIO_MSEC / 10));
        break;
    case 2:
        CHECK_OK(corio_yield());
        break;
    case 3: {
        corio_task *g;
        void *r = NULL;
        CHECK_OK(corio_spawn(&g, test_ret_arg, PTR_OF(i)));
        CHECK_OK(corio_join(g, &r));
        CHECK_EQ(INT_OF(r), i);
        break;
    }
    }
    return PTR_OF(i * 5 + 2);
}

static void *main_join_in_turn(void *arg)
{
    (void)arg;
    corio_task *t[IN_TURN];
    corio_spawn_opts o;
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < IN_TURN; i++) {
            atomic_store(&in_turn_runs[i], 0);
            corio_spawn_opts_init(&o);
            if ((i + round) % 5 == 4)
                o.flags = CORIO_TASK_LIGHT;
            else if ((i + round) % 7 == 3)
                o.stack_size = 256 * 1024;
            CHECK_OK(corio_spawn_ex(&t[i], child_in_turn, PTR_OF(i), &o));
        }
        for (int i = 0; i < IN_TURN; i++) {
            void *r = NULL;
            CHECK_OK(corio_join(t[i], &r));
            CHECK_EQ(INT_OF(r), i * 5 + 2);
            CHECK_EQ(atomic_load(&in_turn_runs[i]), 1);
        }
    }
    return NULL;
}

TEST(join_never_run_children_in_turn)
{
    run_main_checked(1, main_join_in_turn, NULL);
    run_main_checked(2, main_join_in_turn, NULL);
}

/* ---- a wait near the end of a small stack ----
 *
 * Starting the next task straight from a waiting one (above) runs the
 * start on the waiter's stack; a waiter without room for that must go
 * through the scheduler, as every wait did before. A task on the smallest
 * stack recurses until only NEAR_END bytes are left, then joins a task
 * still queued: it must not overflow. Two queue states: the next task in
 * the ring; and the ring empty with tasks in an overflow block, where a
 * start taken from the waiter's stack used 1.4 KiB of it (4.5 KiB when
 * the dynamic linker resolved memcpy there) and overflowed (a review's
 * reproducer). A plain wait takes ~0.3 KiB. */
#ifdef TEST_SANITIZED
#define NEAR_END 6144
#else
#define NEAR_END 1024
#endif

enum { NEAR_END_QUEUED = 300 };
static corio_task *near_end_queued[NEAR_END_QUEUED];
static int near_end_nqueued;
static _Atomic bool near_end_setup;

__attribute__((noinline)) static void join_near_end(char *lo, corio_task *t)
{
    volatile char pad[128];
    pad[0] = 1;
    if ((char *)__builtin_frame_address(0) - lo > NEAR_END) {
        join_near_end(lo, t);
        pad[1] = pad[0]; /* not a tail call: every frame stays */
        return;
    }
    CHECK_OK(corio_join(t, NULL));
}

static char *own_stack_lo(void) { return corio__task_stack(corio_self()).lo; }

/* The next task in the ring: queue a few and join the first. */
static void *wait_near_end_ring(void *arg)
{
    (void)arg;
    corio_task *kids[8];
    for (int i = 0; i < 8; i++)
        CHECK_OK(corio_spawn(&kids[i], test_ret_arg, PTR_OF(i)));
    join_near_end(own_stack_lo(), kids[0]);
    CHECK_OK(corio_gather(kids + 1, 7, NULL));
    return NULL;
}

/* Queued behind the tasks main spawned before it: by the time it runs the
 * ring has emptied and the oldest of them wait in an overflow block. */
static void *wait_near_end_overflow(void *arg)
{
    (void)arg;
    corio__loop *l = corio__loop_current();
    if (!corio__runq_ring_owner_empty(&l->runq) || !atomic_load(&l->runq.overflow_len) ||
        l->tick + 2 >= CORIO__POLL_INTERVAL)
        return NULL; /* not that state this time: main tries another count */
    atomic_store(&near_end_setup, true);
    join_near_end(own_stack_lo(), near_end_queued[0]);
    return NULL;
}

static void *main_wait_near_end(void *arg)
{
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    o.stack_size = 16 * 1024; /* the smallest there is (src/stack.c) */
    corio_task *t;
    if (arg) {
        for (int i = 0; i < near_end_nqueued; i++)
            CHECK_OK(corio_spawn(&near_end_queued[i], test_ret_arg, NULL));
        CHECK_OK(corio_spawn_ex(&t, wait_near_end_overflow, NULL, &o));
        CHECK_OK(corio_join(t, NULL));
        int joined = atomic_load(&near_end_setup) ? 1 : 0; /* by the waiter */
        CHECK_OK(corio_gather(near_end_queued + joined, (size_t)(near_end_nqueued - joined), NULL));
        return NULL;
    }
    for (int round = 0; round < 20; round++) {
        CHECK_OK(corio_spawn_ex(&t, wait_near_end_ring, NULL, &o));
        CHECK_OK(corio_join(t, NULL));
    }
    return NULL;
}

TEST(wait_near_the_end_of_a_small_stack)
{
    run_main_checked(1, main_wait_near_end, NULL);
    /* The overflow state depends on when the loop polls: try counts past a
     * spill until one gives it. */
    atomic_store(&near_end_setup, false);
    for (near_end_nqueued = (int)CORIO__RUNQ_CAP + 1;
         near_end_nqueued < NEAR_END_QUEUED && !atomic_load(&near_end_setup); near_end_nqueued++)
        run_main_checked(1, main_wait_near_end, PTR_OF(1));
    CHECK(atomic_load(&near_end_setup));
}

/* ---- a handle used after its release ----
 *
 * corio.h: CORIO_EINVAL while the memory has not been reused by a spawn
 * (this test spawns nothing in between), never a second release: that
 * would put the object on the free list twice and hand it to two spawns.
 * A gather given a handle twice refuses before releasing anything.
 */
static void *detach_here(void *arg) { return PTR_OF(corio_detach(arg)); }

static void *main_released_handles(void *arg)
{
    for (int round = 0; round < 50; round++) {
        corio_task *t, *u;
        CHECK_OK(corio_spawn(&t, test_ret_arg, PTR_OF(1)));
        CHECK_OK(corio_spawn(&u, test_ret_arg, PTR_OF(2)));
        if (round % 2)
            CHECK_OK(corio_sleep(CORIO_MSEC)); /* both finished first */
        /* Given twice to one gather: refused, nothing released. */
        corio_task *dup[] = {t, u, t};
        CHECK_ERR(corio_gather(dup, 3, NULL), CORIO_EINVAL);
        void *res[2] = {PTR_OF(-1), PTR_OF(-1)};
        corio_task *tu[] = {t, u};
        CHECK_OK(corio_gather(tu, 2, res));
        CHECK_EQ(INT_OF(res[0]), 1);
        CHECK_EQ(INT_OF(res[1]), 2);
        /* Released: joining or detaching again is refused. */
        CHECK_ERR(corio_join(t, NULL), CORIO_EINVAL);
        CHECK_ERR(corio_detach(u), CORIO_EINVAL);
        CHECK_ERR(corio_gather(&u, 1, NULL), CORIO_EINVAL);
        /* And the two objects come back to two different spawns. */
        corio_task *a, *b;
        CHECK_OK(corio_spawn(&a, test_ret_arg, PTR_OF(3)));
        CHECK_OK(corio_spawn(&b, test_ret_arg, PTR_OF(4)));
        CHECK(a != b);
        void *r[2];
        corio_task *ab[] = {a, b};
        CHECK_OK(corio_gather(ab, 2, r));
        CHECK_EQ(INT_OF(r[0]), 3);
        CHECK_EQ(INT_OF(r[1]), 4);
    }
    /* Detach is for tasks and loop threads: refused in a blocking-pool
     * function whether the task still runs or not, and the handle is
     * still the caller's. */
    corio_task *t;
    CHECK_OK(corio_spawn(&t, test_ret_arg, NULL));
    void *rc = NULL;
    CHECK_OK(corio_run_blocking(detach_here, t, &rc));
    CHECK_ERR((int)INT_OF(rc), CORIO_EPERM);
    CHECK_OK(corio_join(t, NULL));
    CHECK_ERR(corio_detach(t), CORIO_EINVAL);
    return NULL;
}

TEST(released_handle_is_einval)
{
    run_main_checked(1, main_released_handles, NULL);
}

/* ---- handles that are not the caller's to join ----
 *
 * corio.h: a join or detach of a detached handle, or of one another task
 * is joining, is CORIO_EINVAL, the task running on untouched; only its
 * owner's join releases it. Both tasks below wait on an event, so they
 * are surely still running when the handle is misused. */

static _Atomic int waiters_done;

static void *wait_for_event(void *arg)
{
    CHECK_OK(corio_event_wait(arg));
    atomic_fetch_add(&waiters_done, 1);
    return PTR_OF(77);
}

static _Atomic int joiner_waiting;

static void *mark_joiner_waiting(void *arg)
{
    (void)arg;
    atomic_store(&joiner_waiting, 1);
    return NULL;
}

static void *join_it(void *arg)
{
    /* Pinned to this task's own loop, which runs one task at a time, the
     * marker runs only once the join below has suspended: registered as
     * the joiner. */
    CHECK_OK(corio_spawn_on(NULL, (unsigned)corio_loop_index(), mark_joiner_waiting, NULL));
    void *r = NULL;
    int rc = corio_join(arg, &r);
    return PTR_OF(rc != 0 ? rc : INT_OF(r));
}

static void *main_refused_handles(void *arg)
{
    atomic_store(&waiters_done, 0);
    corio_event *ev;
    CHECK_OK(corio_event_new(&ev));
    unsigned other = (unsigned)(corio_loop_index() + 1) % corio_loop_count();

    /* Detached while it waits. */
    corio_task *d;
    CHECK_OK(corio_spawn_on(&d, other, wait_for_event, ev));
    CHECK_OK(corio_sleep(2 * CORIO_MSEC));
    CHECK_OK(corio_detach(d));
    void *r = PTR_OF(-1);
    CHECK_ERR(corio_join(d, &r), CORIO_EINVAL);
    CHECK_ERR(corio_join_until(d, &r, corio_deadline_in(CORIO_MSEC)), CORIO_EINVAL);
    CHECK_ERR(corio_gather(&d, 1, &r), CORIO_EINVAL);
    CHECK_ERR(corio_detach(d), CORIO_EINVAL);
    CHECK_EQ(INT_OF(r), -1); /* untouched */

    /* Joined by another task while it waits. Wait until j's join is in
     * place, not a fixed 5 ms: had j not started by then, the join below
     * would have been accepted and waited for an event nobody sets. */
    corio_task *t, *j;
    atomic_store(&joiner_waiting, 0);
    CHECK_OK(corio_spawn_on(&t, other, wait_for_event, ev));
    CHECK_OK(corio_spawn(&j, join_it, t));
    CHECK(test_await(&joiner_waiting, 1));
    CHECK_ERR(corio_join(t, &r), CORIO_EINVAL);
    CHECK_ERR(corio_join_until(t, &r, corio_deadline_in(CORIO_MSEC)), CORIO_EINVAL);
    CHECK_ERR(corio_detach(t), CORIO_EINVAL);
    CHECK_EQ(INT_OF(r), -1);
    CHECK_EQ(atomic_load(&waiters_done), 0);

    /* Both run on; the first joiner gets the result. */
    CHECK_OK(corio_event_set(ev));
    CHECK_OK(corio_join(j, &r));
    CHECK_EQ(INT_OF(r), 77);
    while (atomic_load(&waiters_done) < 2)
        CHECK_OK(corio_sleep(CORIO_MSEC));
    corio_event_free(ev);
    return NULL;
}

TEST(detached_or_joined_handle_is_refused)
{
    run_main_checked(1, main_refused_handles, NULL);
    run_main_checked(2, main_refused_handles, NULL);
}

/* ---- a handle taken to another runtime ----
 *
 * corio.h: handles belong to their runtime; one joined or detached in
 * another runtime running side by side is refused (CORIO_EINVAL) once the
 * task has finished. Releasing it there would put this runtime's memory
 * on the other's free list, and the other would spawn into it after this
 * one unmapped it. */

static _Atomic int foreign_rc[3];

static void *main_use_foreign(void *arg)
{
    corio_task *t = arg;
    void *r = PTR_OF(-1);
    atomic_store(&foreign_rc[0], corio_join(t, &r));
    corio_task *both[] = {t};
    atomic_store(&foreign_rc[1], corio_gather(both, 1, NULL));
    atomic_store(&foreign_rc[2], corio_detach(t));
    return r;
}

static void *foreign_runtime_thread(void *arg)
{
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = 1;
    void *r = PTR_OF(-2);
    int rc = corio_run(&cfg, main_use_foreign, arg, &r);
    return rc != 0 ? PTR_OF(rc) : r;
}

static void *join_pthread(void *arg)
{
    void *r = PTR_OF(-3);
    pthread_join(*(pthread_t *)arg, &r);
    return r;
}

static void *main_hand_to_other_runtime(void *arg)
{
    corio_task *t;
    CHECK_OK(corio_spawn(&t, test_ret_arg, PTR_OF(55)));
    CHECK_OK(corio_sleep(5 * CORIO_MSEC)); /* finished, not released */
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, foreign_runtime_thread, t), 0);
    void *r = NULL;
    CHECK_OK(corio_run_blocking(join_pthread, &th, &r));
    CHECK_EQ(INT_OF(r), -1); /* the other runtime got no result */
    for (int i = 0; i < 3; i++)
        CHECK_ERR(atomic_load(&foreign_rc[i]), CORIO_EINVAL);
    /* Still ours. */
    CHECK_OK(corio_join(t, &r));
    CHECK_EQ(INT_OF(r), 55);
    return NULL;
}

TEST(handle_of_another_runtime_is_refused)
{
    run_main_checked(2, main_hand_to_other_runtime, NULL);
}

/* corio_cancel is a use of the handle too: CORIO_EINVAL once it has been
 * released (it returned 0 and set a cancellation on the free object). */
static void *main_cancel_released(void *arg)
{
    (void)arg;
    corio_task *t;
    CHECK_OK(corio_spawn(&t, test_ret_arg, PTR_OF(1)));
    CHECK_OK(corio_join(t, NULL));
    CHECK_ERR(corio_cancel(t), CORIO_EINVAL);
    CHECK_OK(corio_spawn(&t, test_ret_arg, PTR_OF(2)));
    CHECK_OK(corio_detach(t));
    CHECK_OK(corio_sleep(2 * CORIO_MSEC)); /* finished and released */
    CHECK_ERR(corio_cancel(t), CORIO_EINVAL);
    /* A finished task not yet joined: cancelling it does nothing. */
    CHECK_OK(corio_spawn(&t, test_ret_arg, PTR_OF(3)));
    CHECK_OK(corio_sleep(2 * CORIO_MSEC));
    CHECK_OK(corio_cancel(t));
    void *r = NULL;
    CHECK_OK(corio_join(t, &r));
    CHECK_EQ(INT_OF(r), 3);
    CHECK_OK(corio_yield()); /* no cancellation came back to the caller */
    return NULL;
}

TEST(cancel_of_released_handle_is_einval)
{
    run_main_checked(1, main_cancel_released, NULL);
}

/* A detach releases the handle while the task may run on: cancelling
 * through it is CORIO_EINVAL and leaves the task alone (it returned 0 and
 * cancelled the task's wait). The task itself may still cancel itself. */
struct detached_waiter {
    corio_event *ev;
    _Atomic int waiting, rc_set;
    int rc;
};

static void *wait_detached(void *arg)
{
    struct detached_waiter *d = arg;
    atomic_store(&d->waiting, 1);
    d->rc = corio_event_wait(d->ev);
    atomic_store(&d->rc_set, 1);
    return NULL;
}

static void *cancel_own_detached_self(void *arg)
{
    struct detached_waiter *d = arg;
    CHECK_OK(corio_cancel(corio_self()));
    d->rc = corio_sleep(CORIO_SEC);
    atomic_store(&d->rc_set, 1);
    return NULL;
}

static void *main_cancel_detached(void *arg)
{
    (void)arg;
    struct detached_waiter d = {0};
    CHECK_OK(corio_event_new(&d.ev));
    corio_task *t;
    CHECK_OK(corio_spawn(&t, wait_detached, &d));
    CHECK(test_await(&d.waiting, 1));
    CHECK_OK(corio_detach(t));
    CHECK_ERR(corio_cancel(t), CORIO_EINVAL);
    CHECK_OK(corio_event_set(d.ev));
    CHECK(test_await(&d.rc_set, 1));
    CHECK_OK(d.rc); /* its wait ended with the event, not a cancellation */
    corio_event_free(d.ev);

    struct detached_waiter self = {0};
    CHECK_OK(corio_spawn(NULL, cancel_own_detached_self, &self));
    CHECK(test_await(&self.rc_set, 1));
    CHECK_ERR(self.rc, CORIO_ECANCELED);
    return NULL;
}

TEST(cancel_of_detached_handle_is_einval)
{
    run_main_checked(2, main_cancel_detached, NULL);
}

int main(int argc, char **argv)
{
    RUN(spawn_join_results);
    RUN(gather_in_order);
    RUN(join_task_on_other_loop);
    RUN(detach);
    RUN(bad_arguments);
    RUN(outside_runtime);
    RUN(identity);
    RUN(join_and_gather_deadlines);
    RUN(yield_lets_new_tasks_run);
    RUN(one_yield_starts_every_queued_task);
    RUN(queued_tasks_start_before_later_wake_ups);
    RUN(woken_task_waits_for_one_round_of_queued_tasks);
    RUN(tasks_woken_before_a_burst_run_before_it);
    RUN(spilled_task_starts_while_the_ring_keeps_filling);
    RUN(ready_mark_does_not_outlive_the_picks);
    RUN(a_poll_with_nothing_queued_marks_nothing);
    RUN(join_never_run_children_in_turn);
    RUN(wait_near_the_end_of_a_small_stack);
    RUN(released_handle_is_einval);
    RUN(detached_or_joined_handle_is_refused);
    RUN(handle_of_another_runtime_is_refused);
    RUN(cancel_of_released_handle_is_einval);
    RUN(cancel_of_detached_handle_is_einval);
    return test_summary();
}
