/*
 * test_steal.c: work stealing. Never-run tasks spread to idle loops;
 * pinned tasks (corio_spawn_on) never move; a task that has started stays
 * on its loop for good.
 */
#include <stdatomic.h>

#include "test.h"

#define LOOPS 4

/* ---- unpinned tasks spread over the loops ----
 *
 * A task that starts on the spawning loop holds it (spinning, never
 * yielding) until some task has started on another loop, so only a steal
 * can let the run go on: the check does not depend on the other loops'
 * threads getting a CPU before the spawner's loop has run everything
 * (on a loaded machine they need not, for the whole run). */

struct spread {
    long n;
    int spawner;         /* the loop main spawned from */
    _Atomic int elsewhere; /* a task has started on another loop */
    _Atomic int *runs;   /* per task: how many times it ran */
    int *loop_of;        /* per task: where it ran */
};

static struct spread sp;

static void *spread_task(void *arg)
{
    intptr_t i = INT_OF(arg);
    int here = corio_loop_index();
    atomic_fetch_add(&sp.runs[i], 1);
    sp.loop_of[i] = here;
    if (here != sp.spawner) {
        atomic_store(&sp.elsewhere, 1);
    } else if (!atomic_load(&sp.elsewhere)) {
        corio_time_t give_up = corio_deadline_in(20 * CORIO_SEC * TEST_SLOW);
        while (!atomic_load(&sp.elsewhere))
            if (corio_now() > give_up)
                FAIL_("no task was stolen from loop %d", here);
    }
    test_spin(20000);
    return PTR_OF(i);
}

static void *main_spread(void *arg)
{
    corio_task **t = calloc((size_t)sp.n, sizeof *t);
    void **res = calloc((size_t)sp.n, sizeof *res);
    CHECK(t && res);
    sp.spawner = corio_loop_index();
    atomic_store(&sp.elsewhere, 0);
    for (long i = 0; i < sp.n; i++)
        CHECK_OK(corio_spawn(&t[i], spread_task, PTR_OF(i)));
    CHECK_OK(corio_gather(t, (size_t)sp.n, res));
    for (long i = 0; i < sp.n; i++)
        CHECK_EQ(INT_OF(res[i]), i);
    free(t);
    free(res);
    return NULL;
}

TEST(spawned_tasks_are_stolen)
{
    TEST_SKIP_UNDER_VALGRIND("Valgrind runs one thread at a time, so whether an idle loop "
                             "ever gets the CPU to steal is up to its scheduler");
    sp.n = test_scaled(10000);
    if (sp.n < 400)
        sp.n = 400;
    sp.runs = calloc((size_t)sp.n, sizeof *sp.runs);
    sp.loop_of = calloc((size_t)sp.n, sizeof *sp.loop_of);
    CHECK(sp.runs && sp.loop_of);
    run_main_checked(LOOPS, main_spread, NULL);
    long per_loop[LOOPS] = {0};
    for (long i = 0; i < sp.n; i++) {
        CHECK_EQ(atomic_load(&sp.runs[i]), 1);
        CHECK_GE(sp.loop_of[i], 0);
        CHECK_LT(sp.loop_of[i], LOOPS);
        per_loop[sp.loop_of[i]]++;
    }
    int loops_used = 0;
    for (int l = 0; l < LOOPS; l++) {
        fprintf(stderr, "   loop %d ran %ld tasks\n", l, per_loop[l]);
        loops_used += per_loop[l] > 0;
    }
    CHECK_GT(loops_used, 1);
    free(sp.runs);
    free(sp.loop_of);
}

/* ---- pinned tasks stay where they were put ---- */

static _Atomic long pinned_wrong, pinned_ran;

static void *pinned_task(void *arg)
{
    int want = (int)INT_OF(arg);
    atomic_fetch_add(&pinned_ran, 1);
    if (corio_loop_index() != want)
        atomic_fetch_add(&pinned_wrong, 1);
    test_spin(2000); /* keep the target loop busy so the others go idle */
    if (want % 2)
        corio_yield();
    else
        corio_sleep(CORIO_USEC * 100);
    if (corio_loop_index() != want)
        atomic_fetch_add(&pinned_wrong, 1);
    return PTR_OF(want);
}

static void *main_pinned(void *arg)
{
    long rounds = test_scaled(40);
    enum { BATCH = 500 };
    static corio_task *t[BATCH];
    static void *res[BATCH];
    for (long r = 0; r < rounds; r++) {
        unsigned target = (unsigned)(r % LOOPS);
        for (int i = 0; i < BATCH; i++)
            CHECK_OK(corio_spawn_on(&t[i], target, pinned_task, PTR_OF(target)));
        CHECK_OK(corio_gather(t, BATCH, res));
        for (int i = 0; i < BATCH; i++)
            CHECK_EQ(INT_OF(res[i]), target);
    }
    /* Pinned light tasks too, spawned with corio_spawn_ex. */
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    o.flags = CORIO_TASK_LIGHT;
    for (int target = 0; target < LOOPS; target++) {
        o.loop = target;
        for (int i = 0; i < BATCH; i++)
            CHECK_OK(corio_spawn_ex(&t[i], pinned_task, PTR_OF(target), &o));
        CHECK_OK(corio_gather(t, BATCH, res));
    }
    return PTR_OF(rounds);
}

TEST(pinned_tasks_never_stolen)
{
    atomic_store(&pinned_wrong, 0);
    atomic_store(&pinned_ran, 0);
    long rounds = INT_OF(run_main_checked(LOOPS, main_pinned, NULL));
    CHECK_EQ(atomic_load(&pinned_ran), (rounds + LOOPS) * 500);
    CHECK_EQ(atomic_load(&pinned_wrong), 0);
}

/* ---- started tasks never move ---- */

static _Atomic long moved, checks;

static void *stay_home(void *arg)
{
    uint64_t rng = (uint64_t)INT_OF(arg) * 2654435761u + 1;
    int home = corio_loop_index();
    for (int i = 0; i < 10; i++) {
        switch (test_rand(&rng) % 3) {
        case 0:
            CHECK_OK(corio_yield());
            break;
        case 1:
            CHECK_OK(corio_sleep((int64_t)(test_rand(&rng) % 2000) * CORIO_USEC));
            break;
        default:
            test_spin(5000);
            break;
        }
        atomic_fetch_add(&checks, 1);
        if (corio_loop_index() != home)
            atomic_fetch_add(&moved, 1);
    }
    return NULL;
}

/* Spawns from several loops at once so every loop has stealable work
 * while the started tasks sleep and yield. */
static void *spawner(void *arg)
{
    long n = INT_OF(arg);
    corio_task **t = calloc((size_t)n, sizeof *t);
    CHECK(t);
    for (long i = 0; i < n; i++)
        CHECK_OK(corio_spawn(&t[i], stay_home, PTR_OF(i + 1)));
    CHECK_OK(corio_gather(t, (size_t)n, NULL));
    free(t);
    return NULL;
}

static void *main_stay_home(void *arg)
{
    long n = test_scaled(2000);
    corio_task *s[LOOPS];
    for (unsigned l = 0; l < LOOPS; l++)
        CHECK_OK(corio_spawn_on(&s[l], l, spawner, PTR_OF(n)));
    CHECK_OK(corio_gather(s, LOOPS, NULL));
    return PTR_OF(n * LOOPS * 10);
}

TEST(started_tasks_never_move)
{
    atomic_store(&moved, 0);
    atomic_store(&checks, 0);
    long expect = INT_OF(run_main_checked(LOOPS, main_stay_home, NULL));
    CHECK_EQ(atomic_load(&checks), expect);
    CHECK_EQ(atomic_load(&moved), 0);
}

/* ---- bursts of spawns into a full run queue, with many thieves ----
 *
 * One task spawns far more tasks than the run queue's ring holds, so the
 * ring spills half of itself to the overflow list again and again, while
 * more loops than CPUs steal from it (the spawner is preempted at random
 * points, thieves drain the ring meanwhile). Every task must run exactly
 * once.
 */
#define BURST_LOOPS 8

static _Atomic int *burst_runs;
static _Atomic long burst_bad;

static void *burst_task(void *arg)
{
    if (atomic_fetch_add(&burst_runs[INT_OF(arg)], 1) != 0)
        atomic_fetch_add(&burst_bad, 1);
    return arg;
}

static void *main_burst(void *arg)
{
    long n = INT_OF(arg);
    enum { WINDOW = 20000 };
    static corio_task *t[WINDOW];
    static void *res[WINDOW];
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    for (long base = 0; base < n; base += WINDOW) {
        long m = n - base < WINDOW ? n - base : WINDOW;
        for (long i = 0; i < m; i++) {
            o.flags = (i % 4 == 0) ? CORIO_TASK_LIGHT : 0;
            CHECK_OK(corio_spawn_ex(&t[i], burst_task, PTR_OF(base + i), &o));
        }
        CHECK_OK(corio_gather(t, (size_t)m, res));
        for (long i = 0; i < m; i++)
            CHECK_EQ(INT_OF(res[i]), base + i);
    }
    return NULL;
}

TEST(burst_spawns_with_many_thieves)
{
    /* Starts, not spawns: under TSan each costs a fiber (test.h), and
     * 20,000 of them took 97 s of the file's 180 s. At least 4,096: the
     * ring (256) still spills again and again. */
    long n = test_scaled_starts(200000);
    if (n < 4096)
        n = 4096;
    burst_runs = calloc((size_t)n, sizeof *burst_runs);
    CHECK(burst_runs);
    atomic_store(&burst_bad, 0);
    run_main_checked(BURST_LOOPS, main_burst, PTR_OF(n));
    CHECK_EQ(atomic_load(&burst_bad), 0);
    for (long i = 0; i < n; i++)
        if (atomic_load(&burst_runs[i]) != 1)
            FAIL_("task %ld ran %d times", i, atomic_load(&burst_runs[i]));
    free(burst_runs);
}

/* ---- a task is not held for a loop that never comes for it ----
 *
 * Balance (balance.h) leaves a loop's queued tasks for a less loaded loop
 * to steal. Here main's loop carries 8 sleeping tasks and the other loop
 * (load 1) runs a computation that yields often: it polls, but it never
 * runs out of work, so it never steals. A task main spawns must still
 * start, on whichever loop, not wait for the sleepers to end.
 */
static _Atomic int yielder_stop;

static void *sleep_long(void *arg)
{
    corio_sleep(3600 * CORIO_SEC); /* until cancelled */
    return NULL;
}

static void *yield_until_stopped(void *arg)
{
    while (!atomic_load(&yielder_stop) && corio_yield() == 0)
        test_spin(1000);
    return NULL;
}

static void *main_not_held_for_busy(void *arg)
{
    unsigned me = (unsigned)corio_loop_index(), other = 1 - me;
    corio_task *sleepers[8], *busy;
    for (int i = 0; i < 8; i++)
        CHECK_OK(corio_spawn_on(&sleepers[i], me, sleep_long, NULL));
    CHECK_OK(corio_spawn_on(&busy, other, yield_until_stopped, NULL));
    CHECK_OK(corio_sleep(20 * CORIO_MSEC)); /* all started */
    for (int round = 0; round < 20; round++) {
        corio_task *t;
        CHECK_OK(corio_spawn(&t, test_ret_arg, PTR_OF(round)));
        void *r = NULL;
        CHECK_OK(corio_join_until(t, &r, corio_deadline_in(10 * CORIO_SEC)));
        CHECK_EQ(INT_OF(r), round);
    }
    atomic_store(&yielder_stop, 1);
    CHECK_OK(corio_join(busy, NULL));
    for (int i = 0; i < 8; i++) {
        CHECK_OK(corio_cancel(sleepers[i]));
        CHECK_OK(corio_join(sleepers[i], NULL));
    }
    return NULL;
}

TEST(not_held_for_a_loop_that_never_steals)
{
    atomic_store(&yielder_stop, 0);
    run_main_checked(2, main_not_held_for_busy, NULL);
}

int main(int argc, char **argv)
{
    RUN(not_held_for_a_loop_that_never_steals);
    RUN(spawned_tasks_are_stolen);
    RUN(pinned_tasks_never_stolen);
    RUN(started_tasks_never_move);
    RUN(burst_spawns_with_many_thieves);
    return test_summary();
}
