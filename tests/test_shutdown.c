/*
 * test_shutdown.c: what happens to tasks still alive when main returns.
 *
 * corio.h: they are cancelled (every blocking call from then on fails
 * with CORIO_ECANCELED), corio_run waits until they have returned, tasks
 * that never started are discarded without running, running blocking-pool
 * functions are waited for, and nothing stays allocated.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <unistd.h>

#include "test.h"

#define HOUR (3600 * CORIO_SEC)

static _Atomic int started, cancelled, woke_otherwise, never_ran_ran;

static void *sleep_an_hour(void *arg)
{
    atomic_fetch_add(&started, 1);
    int rc = INT_OF(arg) % 2 ? corio_sleep(HOUR) : corio_sleep_until(CORIO_FOREVER);
    if (rc == CORIO_ECANCELED)
        atomic_fetch_add(&cancelled, 1);
    else
        atomic_fetch_add(&woke_otherwise, 1);
    return NULL;
}

/* After the cancellation, every later blocking call fails too, and
 * nothing new can be spawned. */
static _Atomic int after_sleep, after_yield, after_spawn, after_blocking, after_join;
static corio_task *persistent_target;

static void *ret_null(void *arg) { return NULL; }

/* Long enough that it cannot finish before the call has committed its
 * wait, so the outcome does not depend on the pool thread's speed. */
static void *block_50ms(void *arg)
{
    usleep(50 * 1000);
    return NULL;
}

static _Atomic int release_target;

/* Pinned to another loop than `persistent`: outlives its cancellation
 * until persistent has tried to join it. */
static void *join_target(void *arg)
{
    atomic_fetch_add(&started, 1);
    int rc = corio_sleep(HOUR);
    if (rc == CORIO_ECANCELED)
        atomic_fetch_add(&cancelled, 1);
    else
        atomic_fetch_add(&woke_otherwise, 1);
    while (!atomic_load(&release_target))
        test_spin(100);
    return NULL;
}

static void *persistent(void *arg)
{
    atomic_fetch_add(&started, 1);
    if (corio_sleep(HOUR) != CORIO_ECANCELED)
        return NULL;
    atomic_store(&after_sleep, corio_sleep(CORIO_MSEC));
    atomic_store(&after_yield, corio_yield());
    corio_task *t;
    atomic_store(&after_spawn, corio_spawn(&t, ret_null, NULL));
    atomic_store(&after_blocking, corio_run_blocking(block_50ms, NULL, NULL));
    atomic_store(&after_join, corio_join(persistent_target, NULL));
    atomic_store(&release_target, 1);
    return NULL;
}

static void *never_runs(void *arg)
{
    atomic_fetch_add(&never_ran_ran, 1);
    return NULL;
}

#define SLEEPERS 1000

static void *main_hour_sleepers(void *arg)
{
    static corio_task *keep[SLEEPERS];
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    int kept = 0;
    for (intptr_t i = 0; i < SLEEPERS; i++) {
        o.flags = i % 2 ? CORIO_TASK_LIGHT : 0;
        /* a third detached, a third kept, a third detached later */
        corio_task **h = (i % 3 == 0) ? NULL : &keep[kept++];
        CHECK_OK(corio_spawn_ex(h, sleep_an_hour, PTR_OF(i / 2), &o));
    }
    for (int i = 0; i < kept; i += 2)
        CHECK_OK(corio_detach(keep[i]));
    atomic_store(&release_target, 0);
    CHECK_OK(corio_spawn_on(&persistent_target, 1, join_target, NULL));
    corio_task *p;
    CHECK_OK(corio_spawn_on(&p, 0, persistent, NULL));
    /* Wait until every one of them sleeps. */
    while (atomic_load(&started) < SLEEPERS + 2)
        CHECK_OK(corio_sleep(CORIO_MSEC));
    CHECK_OK(corio_sleep(10 * CORIO_MSEC));
    return PTR_OF(0x5eed);
}

TEST(main_returns_while_tasks_sleep)
{
    for (unsigned loops = 2; loops <= 4; loops += 2) {
        atomic_store(&started, 0);
        atomic_store(&cancelled, 0);
        atomic_store(&woke_otherwise, 0);
        atomic_store(&after_sleep, 1);
        atomic_store(&after_yield, 1);
        atomic_store(&after_spawn, 1);
        atomic_store(&after_blocking, 1);
        atomic_store(&after_join, 1);
        test_baseline base = test_baseline_take();
        corio_config cfg;
        corio_config_init(&cfg);
        cfg.loops = loops;
        void *result = NULL;
        CHECK_OK(corio_run(&cfg, main_hour_sleepers, NULL, &result));
        CHECK_PTR_EQ(result, PTR_OF(0x5eed));
        CHECK_NO_LEAKS(base);
        CHECK_EQ(atomic_load(&cancelled), SLEEPERS + 1);
        CHECK_EQ(atomic_load(&woke_otherwise), 0);
        CHECK_ERR(atomic_load(&after_sleep), CORIO_ECANCELED);
        CHECK_ERR(atomic_load(&after_yield), CORIO_ECANCELED);
        CHECK_ERR(atomic_load(&after_spawn), CORIO_ESHUTDOWN);
        CHECK_ERR(atomic_load(&after_blocking), CORIO_ECANCELED);
        CHECK_ERR(atomic_load(&after_join), CORIO_ECANCELED);
    }
}

static void *main_time_shutdown(void *arg)
{
    corio_time_t *t_return = arg;
    main_hour_sleepers(NULL);
    *t_return = corio_now();
    return NULL;
}

TEST(shutdown_is_prompt)
{
    atomic_store(&started, 0);
    atomic_store(&cancelled, 0);
    corio_time_t t_return = 0;
    run_main_checked(2, main_time_shutdown, &t_return);
    int64_t took = corio_now() - t_return;
    fprintf(stderr, "   shutdown with %d sleepers took %.3f ms\n", SLEEPERS + 2, took / 1e6);
    CHECK_LT(took, 5 * CORIO_SEC * TEST_SLOW); /* TSan 0.41 s, Valgrind 0.26 s seen */
    CHECK_EQ(atomic_load(&cancelled), SLEEPERS + 1);
}

/* ---- tasks that had not started when main returned never run ---- */

static void *main_spawn_and_return(void *arg)
{
    /* Pinned to main's own loop, which is busy running main until main
     * returns: these cannot have started before that. */
    unsigned me = (unsigned)corio_loop_index();
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    o.loop = (int)me;
    for (int i = 0; i < 100; i++) {
        o.flags = i % 2 ? CORIO_TASK_LIGHT : 0;
        corio_task *t;
        CHECK_OK(corio_spawn_ex(i % 4 < 2 ? &t : NULL, never_runs, NULL, &o));
    }
    return PTR_OF(7);
}

TEST(unstarted_tasks_never_run)
{
    atomic_store(&never_ran_ran, 0);
    CHECK_EQ(INT_OF(run_main_checked(2, main_spawn_and_return, NULL)), 7);
    int ran = atomic_load(&never_ran_ran);
    if (ran)
        FAIL_("%d of 100 tasks that had not started when main returned ran afterwards", ran);
}

/* ---- many start/stop cycles with tasks in every kind of wait ---- */

static _Atomic int cycle_started, cycle_cancelled, cycle_bad;
static _Atomic int cycle_last_bad; /* the last unexpected return code */

static void cycle_unexpected(int rc)
{
    atomic_store(&cycle_last_bad, rc);
    atomic_fetch_add(&cycle_bad, 1);
}

static void *cyc_sleeper(void *arg)
{
    atomic_fetch_add(&cycle_started, 1);
    int rc = corio_sleep(HOUR);
    if (rc == CORIO_ECANCELED)
        atomic_fetch_add(&cycle_cancelled, 1);
    else
        cycle_unexpected(rc);
    return NULL;
}

static void *cyc_joiner(void *arg)
{
    corio_task *target;
    int rc = corio_spawn(&target, cyc_sleeper, NULL);
    if (rc != 0) {
        cycle_unexpected(rc);
        return NULL;
    }
    atomic_fetch_add(&cycle_started, 1);
    rc = corio_join(target, NULL);
    /* 0 is fine too: the target may be cancelled on its loop, and finish,
     * before this loop sees the shutdown. */
    if (rc == CORIO_ECANCELED || rc == 0)
        atomic_fetch_add(&cycle_cancelled, 1);
    else
        cycle_unexpected(rc == 0 ? 1000 : rc);
    return NULL;
}

static void *short_block(void *arg)
{
    usleep(2000);
    return arg;
}

static void *cyc_blocker(void *arg)
{
    atomic_fetch_add(&cycle_started, 1);
    for (;;) {
        void *r = NULL;
        int rc = corio_run_blocking(short_block, PTR_OF(5), &r);
        if (rc == CORIO_ECANCELED) {
            atomic_fetch_add(&cycle_cancelled, 1);
            return NULL;
        }
        if (rc != 0 || INT_OF(r) != 5) {
            cycle_unexpected(rc == 0 ? 2000 : rc);
            return NULL;
        }
    }
}

enum { CYC_SLEEP = 6, CYC_JOIN = 3, CYC_BLOCK = 3 };

static void *main_cycle(void *arg)
{
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    for (int i = 0; i < CYC_SLEEP; i++) {
        o.flags = i % 2 ? CORIO_TASK_LIGHT : 0;
        corio_task *t;
        CHECK_OK(corio_spawn_ex(i % 3 ? &t : NULL, cyc_sleeper, NULL, &o));
    }
    for (int i = 0; i < CYC_JOIN; i++) {
        o.flags = i % 2 ? CORIO_TASK_LIGHT : 0;
        CHECK_OK(corio_spawn_ex(NULL, cyc_joiner, NULL, &o));
    }
    for (int i = 0; i < CYC_BLOCK; i++) {
        o.flags = i % 2 ? CORIO_TASK_LIGHT : 0;
        CHECK_OK(corio_spawn_ex(NULL, cyc_blocker, NULL, &o));
    }
    /* joiners start a sleeper each */
    while (atomic_load(&cycle_started) < CYC_SLEEP + 2 * CYC_JOIN + CYC_BLOCK)
        CHECK_OK(corio_sleep(100 * CORIO_USEC));
    return PTR_OF(1);
}

TEST(start_stop_cycles)
{
    long cycles = test_scaled(200);
    for (long c = 0; c < cycles; c++) {
        atomic_store(&cycle_started, 0);
        atomic_store(&cycle_cancelled, 0);
        atomic_store(&cycle_bad, 0);
        CHECK_EQ(INT_OF(run_main_checked(2 + (unsigned)(c % 2) * 2, main_cycle, NULL)), 1);
        int bad = atomic_load(&cycle_bad), last = atomic_load(&cycle_last_bad);
        if (bad)
            FAIL_("cycle %ld: %d tasks saw an unexpected result, the last %d (%s)", c, bad,
                  last, corio_err_name(last));
        int n_cancelled = atomic_load(&cycle_cancelled);
        CHECK_EQ(n_cancelled, CYC_SLEEP + 2 * CYC_JOIN + CYC_BLOCK);
    }
}

/* ---- never-run tasks queued behind a busy loop at shutdown ----
 *
 * Tasks on main's loop close a group whose child sits unstarted in that
 * loop's queue; the other loop is busy yielding (it never steals). When
 * main returns, the closers wait for the children, uncancellably. Balance
 * must not hold the children back for the other loop then: they are to
 * be discarded, and holding them kept shutdown spinning for seconds.
 */
static int group_child(void *arg) { return 0; }

static void *close_group_at_shutdown(void *arg)
{
    corio_group *g;
    CHECK_OK(corio_group_new(&g, 0));
    CHECK_OK(corio_group_spawn(g, group_child, NULL));
    CHECK_ERR(corio_sleep(HOUR), CORIO_ECANCELED);
    corio_group_close(g);
    return NULL;
}

static void *yield_while_alive(void *arg)
{
    while (corio_yield() == 0)
        test_spin(1000);
    return NULL;
}

static void *main_queued_behind_busy(void *arg)
{
    unsigned me = (unsigned)corio_loop_index(), other = 1 - me;
    CHECK_OK(corio_spawn_on(NULL, other, yield_while_alive, NULL));
    CHECK_OK(corio_sleep(5 * CORIO_MSEC));
    for (int i = 0; i < 8; i++)
        CHECK_OK(corio_spawn_on(NULL, me, close_group_at_shutdown, NULL));
    CHECK_OK(corio_sleep(20 * CORIO_MSEC));
    *(corio_time_t *)arg = corio_now();
    return NULL;
}

TEST(shutdown_with_tasks_queued_behind_busy_loop)
{
    for (int round = 0; round < 5; round++) {
        corio_time_t t_return = 0;
        run_main_checked(2, main_queued_behind_busy, &t_return);
        int64_t took = corio_now() - t_return;
        fprintf(stderr, "   round %d: shutdown took %.3f ms\n", round, took / 1e6);
        CHECK_LT(took, 5 * CORIO_SEC * TEST_SLOW);
    }
}

int main(int argc, char **argv)
{
    RUN(main_returns_while_tasks_sleep);
    RUN(shutdown_is_prompt);
    RUN(start_stop_cycles);
    RUN(unstarted_tasks_never_run);
    RUN(shutdown_with_tasks_queued_behind_busy_loop);
    return test_summary();
}
