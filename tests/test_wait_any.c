/*
 * test_wait_any.c: corio_wait_any, the first of many tasks to finish
 * (asyncio.wait with FIRST_COMPLETED, as_completed by NULLing slots):
 * which index it reports, that it never releases a handle whatever ends
 * the wait, its races with finishers, deadlines and cancellation across
 * loops, and its error cases.
 */
#define _GNU_SOURCE
#include <stdatomic.h>

#include <sched.h>

#include "loop.h"
#include "sys.h"
#include "task.h"
#include "test.h"

/* ---- a task that finishes when told ---- */

struct gate {
    corio_event *go;
    intptr_t value;
};

static void *wait_for_gate(void *arg)
{
    struct gate *g = arg;
    CHECK_OK(corio_event_wait(g->go));
    return PTR_OF(g->value);
}

static void gates_new(struct gate *g, int n)
{
    for (int i = 0; i < n; i++) {
        CHECK_OK(corio_event_new(&g[i].go));
        g[i].value = 100 + i;
    }
}

static void gates_free(struct gate *g, int n)
{
    for (int i = 0; i < n; i++)
        corio_event_free(g[i].go);
}

/* Join tasks[i] now, checking the value its gate gave it. */
static void join_gated(corio_task **tasks, const struct gate *g, size_t i)
{
    void *r = NULL;
    CHECK_OK(corio_join(tasks[i], &r));
    CHECK_EQ(INT_OF(r), g[i].value);
    tasks[i] = NULL;
}

/* ---- tasks come out in the order they finish ---- */

enum { ORDER_N = 6 };

static void *main_finish_order(void *arg)
{
    (void)arg;
    struct gate g[ORDER_N];
    corio_task *t[ORDER_N];
    gates_new(g, ORDER_N);
    /* Spread over the loops: finishers on other loops wake the waiter
     * through its loop's inbox. */
    for (int i = 0; i < ORDER_N; i++) {
        corio_spawn_opts o = test_on_loop(i % (int)corio_loop_count(), false);
        CHECK_OK(corio_spawn_ex(&t[i], wait_for_gate, &g[i], &o));
    }
    static const int order[ORDER_N] = {3, 0, 5, 1, 4, 2};
    for (int k = 0; k < ORDER_N; k++) {
        CHECK_OK(corio_event_set(g[order[k]].go));
        size_t index = SIZE_MAX;
        CHECK_OK(corio_wait_any(t, ORDER_N, &index));
        CHECK_EQ((long)index, order[k]);
        join_gated(t, g, index);
    }
    /* Every slot NULL now: nothing left to wait for. */
    size_t index;
    CHECK_ERR(corio_wait_any(t, ORDER_N, &index), CORIO_EINVAL);
    gates_free(g, ORDER_N);
    return NULL;
}

TEST(tasks_come_out_in_the_order_they_finish)
{
    run_main_checked(1, main_finish_order, NULL);
    run_main_checked(3, main_finish_order, NULL);
}

/* ---- finished already: the lowest index, nothing released ---- */

static void *main_already_finished(void *arg)
{
    (void)arg;
    struct gate g[4];
    corio_task *t[4];
    gates_new(g, 4);
    for (int i = 0; i < 4; i++)
        CHECK_OK(corio_spawn(&t[i], wait_for_gate, &g[i]));
    CHECK_OK(corio_event_set(g[3].go));
    CHECK_OK(corio_event_set(g[1].go));
    /* Both finished before the call: it reports the lower, and waits for
     * neither (a join of each returns at once, checked by join_gated). */
    corio_time_t give_up = corio_deadline_in(10 * CORIO_SEC);
    size_t index = SIZE_MAX;
    while (corio_wait_any_until(t, 4, &index, corio_now()) == CORIO_ETIMEDOUT ||
           index != 1) {
        CHECK(corio_now() < give_up);
        CHECK_OK(corio_sleep(CORIO_MSEC));
    }
    CHECK_EQ((long)index, 1);
    /* Asked again it says the same: it released nothing. */
    CHECK_OK(corio_wait_any(t, 4, &index));
    CHECK_EQ((long)index, 1);
    join_gated(t, g, 1);
    CHECK_OK(corio_wait_any(t, 4, &index));
    CHECK_EQ((long)index, 3);
    join_gated(t, g, 3);
    CHECK_OK(corio_event_set(g[0].go));
    CHECK_OK(corio_event_set(g[2].go));
    join_gated(t, g, 0);
    join_gated(t, g, 2);
    gates_free(g, 4);
    return NULL;
}

TEST(finished_tasks_give_the_lowest_index_and_stay_joinable)
{
    run_main_checked(2, main_already_finished, NULL);
}

/* ---- a deadline or a cancellation leaves every handle as it was ---- */

static corio_task *cancel_target;

static void *cancel_after_a_while(void *arg)
{
    (void)arg;
    CHECK_OK(corio_sleep(20 * CORIO_MSEC));
    CHECK_OK(corio_cancel(cancel_target));
    return NULL;
}

static void *join_other(void *task)
{
    void *r = NULL;
    CHECK_OK(corio_join(task, &r));
    return r;
}

static void *main_wait_ends_early(void *arg)
{
    (void)arg;
    struct gate g[3];
    corio_task *t[3];
    gates_new(g, 3);
    for (int i = 0; i < 3; i++)
        CHECK_OK(corio_spawn(&t[i], wait_for_gate, &g[i]));
    size_t index = SIZE_MAX;
    CHECK_ERR(corio_wait_any_until(t, 3, &index, corio_deadline_in(20 * CORIO_MSEC)),
              CORIO_ETIMEDOUT);
    CHECK_EQ((long)index, -1); /* untouched */

    cancel_target = corio_self();
    corio_task *canceller;
    CHECK_OK(corio_spawn(&canceller, cancel_after_a_while, NULL));
    CHECK_ERR(corio_wait_any(t, 3, &index), CORIO_ECANCELED);
    CHECK_OK(corio_join(canceller, NULL));

    /* The registrations were undone: a handle can be joined by another
     * task, and a later wait works. */
    CHECK_OK(corio_event_set(g[0].go));
    corio_task *joiner;
    CHECK_OK(corio_spawn(&joiner, join_other, t[0]));
    void *r0 = NULL;
    CHECK_OK(corio_join(joiner, &r0));
    CHECK_EQ(INT_OF(r0), g[0].value);
    t[0] = NULL;
    CHECK_OK(corio_event_set(g[2].go));
    CHECK_OK(corio_wait_any(t, 3, &index));
    CHECK_EQ((long)index, 2);
    join_gated(t, g, 2);
    CHECK_OK(corio_event_set(g[1].go));
    join_gated(t, g, 1);
    gates_free(g, 3);
    return NULL;
}

TEST(a_timeout_or_cancellation_leaves_every_handle_joinable)
{
    run_main_checked(2, main_wait_ends_early, NULL);
}

/* ---- errors ---- */

static void *main_errors(void *arg)
{
    (void)arg;
    struct gate g[2];
    corio_task *t[3] = {NULL, NULL, NULL};
    gates_new(g, 2);
    CHECK_OK(corio_spawn(&t[0], wait_for_gate, &g[0]));
    CHECK_OK(corio_spawn(&t[1], wait_for_gate, &g[1]));
    size_t index = 77;
    CHECK_ERR(corio_wait_any(NULL, 2, &index), CORIO_EINVAL);
    CHECK_ERR(corio_wait_any(t, 2, NULL), CORIO_EINVAL);
    CHECK_ERR(corio_wait_any(t, 0, &index), CORIO_EINVAL);
    corio_task *none[2] = {NULL, NULL};
    CHECK_ERR(corio_wait_any(none, 2, &index), CORIO_EINVAL);
    corio_task *me[2] = {t[0], corio_self()};
    CHECK_ERR(corio_wait_any(me, 2, &index), CORIO_EDEADLK);

    /* Given twice while running: refused, and the first registration is
     * undone (the handle is joinable below). */
    corio_task *twice[3] = {t[1], t[0], t[1]};
    CHECK_ERR(corio_wait_any(twice, 3, &index), CORIO_EINVAL);

    /* Being joined by another task. */
    corio_task *joiner;
    CHECK_OK(corio_spawn(&joiner, join_other, t[1]));
    corio_time_t give_up = corio_deadline_in(10 * CORIO_SEC);
    while (atomic_load_explicit(&t[1]->join, memory_order_acquire) == CORIO__JOIN_NONE) {
        CHECK(corio_now() < give_up);
        CHECK_OK(corio_sleep(CORIO_MSEC));
    }
    CHECK_ERR(corio_wait_any(t, 2, &index), CORIO_EINVAL);
    CHECK_OK(corio_event_set(g[1].go));
    void *r = NULL;
    CHECK_OK(corio_join(joiner, &r));
    CHECK_EQ(INT_OF(r), g[1].value);

    /* Detached (running or, once finished, released): refused. It gets
     * nothing of this frame, which it may outlive. */
    t[1] = NULL;
    CHECK_OK(corio_spawn(&t[2], test_ret_arg, NULL));
    CHECK_OK(corio_detach(t[2]));
    CHECK_ERR(corio_wait_any(t, 3, &index), CORIO_EINVAL);
    CHECK_EQ((long)index, 77); /* untouched by every refusal */
    t[2] = NULL;

    CHECK_OK(corio_event_set(g[0].go));
    CHECK_OK(corio_wait_any(t, 3, &index));
    CHECK_EQ((long)index, 0);
    join_gated(t, g, 0);
    gates_free(g, 2);
    return NULL;
}

TEST(bad_arguments_and_handles_are_refused)
{
    size_t index;
    corio_task *t[1] = {NULL};
    CHECK_ERR(corio_wait_any(t, 1, &index), CORIO_EPERM); /* not in a task */
    run_main_checked(2, main_errors, NULL);
}

/* ---- a finished handle taken by another task before the undoing ----
 *
 * The task finishes on loop 1 and wakes the waiter, which a computation
 * keeps off loop 0 until another task has joined (or detached) the
 * finished handle. A race in the callers, but the waiter's undoing then
 * found the join word neither its own nor DONE and spun for ever, its
 * loop's CPU with it (found by review). The handle is not ours to report:
 * CORIO_EINVAL, as for one being joined by another task. */
static _Atomic int taken_by_other;

static void *compute_until_taken(void *arg)
{
    (void)arg;
    corio_time_t give_up = corio_now() + 10 * CORIO_SEC;
    while (!atomic_load(&taken_by_other))
        CHECK(corio_now() < give_up);
    return NULL;
}

struct take {
    corio_task *task;
    bool detach;
};

static void *take_once_finished(void *arg)
{
    const struct take *k = arg;
    while (!corio__task_is_done(k->task))
        CHECK_OK(corio_sleep(CORIO_MSEC / 10));
    if (k->detach)
        CHECK_OK(corio_detach(k->task));
    else
        CHECK_OK(corio_join(k->task, NULL));
    atomic_store(&taken_by_other, 1);
    return NULL;
}

static void *set_gate(void *arg)
{
    CHECK_OK(corio_event_set(arg));
    return NULL;
}

static void *main_taken_by_other(void *arg)
{
    (void)arg;
    for (int detach = 0; detach < 2; detach++) {
        atomic_store(&taken_by_other, 0);
        struct gate g[1];
        gates_new(g, 1);
        corio_task *t[1], *taker, *hog;
        corio_spawn_opts o1 = test_on_loop(1, false);
        CHECK_OK(corio_spawn_ex(&t[0], wait_for_gate, &g[0], &o1));
        struct take k = {t[0], detach};
        CHECK_OK(corio_spawn_ex(&taker, take_once_finished, &k, &o1));
        /* The gate opens only once the wait is registered: loop 0 runs
         * the setter, then the hog, when main suspends in the wait (the
         * gate set from main itself let a fast loop 1 finish the task
         * before the wait began, which then just succeeded: seen once
         * in the debug lane). */
        corio_task *setter;
        CHECK_OK(corio_spawn_on(&setter, 0, set_gate, g[0].go));
        CHECK_OK(corio_spawn_on(&hog, 0, compute_until_taken, NULL));
        size_t index = SIZE_MAX;
        CHECK_ERR(corio_wait_any(t, 1, &index), CORIO_EINVAL);
        CHECK_OK(corio_join(setter, NULL));
        CHECK_OK(corio_join(hog, NULL));
        CHECK_OK(corio_join(taker, NULL));
        gates_free(g, 1);
    }
    return NULL;
}

TEST(a_finished_handle_taken_by_another_task_is_refused)
{
    struct test_on_loop_0 body = {main_taken_by_other, NULL};
    run_main_checked(2, test_main_on_loop_0, &body);
}

/* ---- as completed, across loops, many rounds ----
 *
 * Tasks on every loop finish after a random number of yields; the waiter
 * takes them as they complete. Each must come out once, finished (its
 * join returns its own value), and the wait must never sleep through a
 * finish: every round ends. */
enum { RACE_TASKS = 8 };

static void *yield_then_return(void *arg)
{
    uint64_t rng = (uint64_t)INT_OF(arg) * 0x9E3779B97F4A7C15ull + 1;
    for (uint64_t n = test_rand(&rng) % 50; n > 0; n--)
        CHECK_OK(corio_yield());
    return arg;
}

struct race_args {
    long rounds;
    bool light;
};

static void *main_as_completed(void *arg)
{
    const struct race_args *a = arg;
    for (long round = 0; round < a->rounds; round++) {
        corio_task *t[RACE_TASKS];
        bool seen[RACE_TASKS] = {false};
        for (int i = 0; i < RACE_TASKS; i++) {
            int loop = i % 2 ? -1 : i % (int)corio_loop_count();
            corio_spawn_opts o = test_on_loop(loop, a->light);
            CHECK_OK(corio_spawn_ex(&t[i], yield_then_return,
                                    PTR_OF(round * RACE_TASKS + i), &o));
        }
        for (int k = 0; k < RACE_TASKS; k++) {
            size_t index = SIZE_MAX;
            CHECK_OK(corio_wait_any(t, RACE_TASKS, &index));
            CHECK_LT((long)index, RACE_TASKS);
            CHECK(!seen[index]);
            seen[index] = true;
            void *r = NULL;
            CHECK_OK(corio_join(t[index], &r));
            CHECK_EQ(INT_OF(r), round * RACE_TASKS + (long)index);
            t[index] = NULL;
        }
    }
    return NULL;
}

TEST(as_completed_across_loops)
{
    struct race_args a = {.rounds = test_scaled(2000)};
    run_main_checked(2, main_as_completed, &a);
    a.rounds = test_scaled(500);
    run_main_checked(3, main_as_completed, &a);
}

/* The waiter a light task, then a migrating one: the wait runs on the
 * loop's shared stack, or resumes on whichever loop takes it. */
struct waiter_spec {
    unsigned flags;
    struct race_args args;
};

static void *main_spawn_waiter(void *arg)
{
    struct waiter_spec *w = arg;
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    o.flags = w->flags;
    corio_task *t;
    CHECK_OK(corio_spawn_ex(&t, main_as_completed, &w->args, &o));
    CHECK_OK(corio_join(t, NULL));
    return NULL;
}

TEST(light_and_migrating_waiters)
{
    struct waiter_spec light = {CORIO_TASK_LIGHT, {test_scaled(500), true}};
    run_main_checked(2, main_spawn_waiter, &light);
    struct waiter_spec migrating = {CORIO_TASK_MIGRATE, {test_scaled(500), false}};
    run_main_checked(2, main_spawn_waiter, &migrating);
}

/* ---- a finish racing the deadline ----
 *
 * The deadline falls about when the task finishes, on another loop.
 * Either the wait succeeds and the task is finished, or it times out;
 * either way the handle is left joinable, and a timeout with the task
 * found finished by the undoing counts as success (never both). */
static void *main_finish_races_deadline(void *arg)
{
    long rounds = *(const long *)arg, won = 0, timed_out = 0;
    uint64_t rng = 7;
    for (long r = 0; r < rounds; r++) {
        corio_task *t[1];
        corio_spawn_opts o = test_on_loop(1, false);
        CHECK_OK(corio_spawn_ex(&t[0], yield_then_return, PTR_OF(r), &o));
        size_t index = SIZE_MAX;
        corio_time_t deadline = corio_now() + (corio_time_t)(test_rand(&rng) % 30) * CORIO_USEC;
        int rc = corio_wait_any_until(t, 1, &index, deadline);
        if (rc == 0) {
            CHECK_EQ((long)index, 0);
            won++;
        } else {
            CHECK_EQ(rc, CORIO_ETIMEDOUT);
            CHECK_EQ((long)index, -1);
            timed_out++;
        }
        void *res = NULL;
        CHECK_OK(corio_join(t[0], &res));
        CHECK_EQ(INT_OF(res), r);
    }
    CHECK_EQ(won + timed_out, rounds);
    return NULL;
}

TEST(a_finish_racing_the_deadline)
{
    long rounds = test_scaled(5000);
    struct test_on_loop_0 body = {main_finish_races_deadline, &rounds};
    run_main_checked(2, test_main_on_loop_0, &body);
}

/* ---- a finish racing a cancellation: it fails exactly one call ----
 *
 * A canceller on loop 1 cancels the waiter as the task it waits for
 * finishes there. The one cancellation must fail exactly one call: the
 * wait itself, or, if the wait succeeded with the task finished, the
 * waiter's next call. */
static _Atomic int cancel_sent;

struct race_cancel {
    corio_task *waiter;
    corio_task *task;
};

static void *cancel_now(void *arg)
{
    struct race_cancel *c = arg;
    CHECK_OK(corio_cancel(c->waiter));
    atomic_store(&cancel_sent, 1);
    return NULL;
}

static void *main_finish_races_cancel(void *arg)
{
    long rounds = *(const long *)arg;
    for (long r = 0; r < rounds; r++) {
        atomic_store(&cancel_sent, 0);
        struct race_cancel c = {.waiter = corio_self()};
        corio_spawn_opts o = test_on_loop(1, false);
        corio_task *t[1], *canceller;
        CHECK_OK(corio_spawn_ex(&t[0], yield_then_return, PTR_OF(r), &o));
        CHECK_OK(corio_spawn_ex(&canceller, cancel_now, &c, &o));
        size_t index = SIZE_MAX;
        int failed = 0;
        int rc = corio_wait_any(t, 1, &index);
        if (rc == CORIO_ECANCELED)
            failed++;
        else
            CHECK_OK(rc);
        /* Once the cancellation is out, the next call fails if the wait
         * did not. */
        while (!atomic_load(&cancel_sent))
            sched_yield();
        rc = corio_yield();
        if (rc == CORIO_ECANCELED)
            failed++;
        else
            CHECK_OK(rc);
        if (failed != 1)
            FAIL_("round %ld: the one cancellation failed %d calls", r, failed);
        CHECK_OK(corio_join(canceller, NULL));
        void *res = NULL;
        CHECK_OK(corio_join(t[0], &res));
        CHECK_EQ(INT_OF(res), r);
    }
    return NULL;
}

TEST(a_finish_racing_a_cancellation_fails_one_call)
{
    long rounds = test_scaled(5000);
    struct test_on_loop_0 body = {main_finish_races_cancel, &rounds};
    run_main_checked(2, test_main_on_loop_0, &body);
}

/* ---- a wait that ends as its task finishes succeeds: forced ----
 *
 * The two tests above leave the moment to chance; here it is made. The
 * waiter (on loop 0) is woken by its deadline or by a cancellation, and a
 * task queued ahead of it on loop 0 then lets the awaited task finish on
 * loop 1 and waits until it has. When the waiter runs, its undoing finds
 * the task finished: the call succeeds after all, and a cancellation that
 * lost so fails the waiter's next call instead.
 *
 * For the deadline, the task ahead sleeps until just before the waiter's
 * deadline while a third task computes past both, so that one poll fires
 * the two timers in deadline order. A round whose computation started
 * too late for that (a slow start) says nothing and is run again. */
struct finish_first {
    struct gate *gate;
    corio_task *task;
    corio_task *waiter;
    corio_time_t deadline; /* the waiter's; 0: cancel it instead */
    corio_time_t compute_started; /* 0: not started */
};

static void *let_it_finish_first(void *arg)
{
    struct finish_first *f = arg;
    if (f->deadline)
        CHECK_OK(corio_sleep_until(f->deadline - CORIO_USEC));
    else
        CHECK_OK(corio_cancel(f->waiter)); /* queues the waiter behind us */
    CHECK_OK(corio_event_set(f->gate->go));
    corio_time_t give_up = corio_now() + 10 * CORIO_SEC;
    while (!corio__task_is_done(f->task))
        CHECK(corio_now() < give_up);
    return NULL;
}

static void *compute_past_the_deadline(void *arg)
{
    struct finish_first *f = arg;
    f->compute_started = corio_now();
    while (corio_now() < f->deadline + CORIO_MSEC)
        ;
    return NULL;
}

/* One round; false if it said nothing. */
static bool finish_first_round(bool by_deadline)
{
    struct gate g[1];
    gates_new(g, 1);
    corio_task *t[1], *first, *compute = NULL;
    corio_spawn_opts o1 = test_on_loop(1, false);
    CHECK_OK(corio_spawn_ex(&t[0], wait_for_gate, &g[0], &o1));
    struct finish_first f = {.gate = g, .task = t[0], .waiter = corio_self()};
    if (by_deadline)
        f.deadline = corio_now() + 20 * CORIO_MSEC;
    CHECK_OK(corio_spawn_on(&first, 0, let_it_finish_first, &f));
    if (by_deadline)
        CHECK_OK(corio_spawn_on(&compute, 0, compute_past_the_deadline, &f));
    size_t index = SIZE_MAX;
    int rc = corio_wait_any_until(t, 1, &index, by_deadline ? f.deadline : CORIO_FOREVER);
    /* The computation must have begun, and in time: a wait whose deadline
     * had passed before it began (this thread held off its CPU for the
     * 20 ms since the deadline was set) times out at once, before either
     * task ran, and compute_started still reads 0. */
    bool premise =
        !by_deadline || (f.compute_started != 0 && f.compute_started < f.deadline - CORIO_USEC);
    if (premise) {
        CHECK_OK(rc);
        CHECK_EQ((long)index, 0);
        if (!by_deadline)
            CHECK_ERR(corio_yield(), CORIO_ECANCELED);
    }
    CHECK_OK(corio_join(first, NULL));
    if (compute)
        CHECK_OK(corio_join(compute, NULL));
    join_gated(t, g, 0);
    gates_free(g, 1);
    return premise;
}

static void *main_finish_first(void *arg)
{
    bool by_deadline = *(const bool *)arg;
    int valid = 0;
    for (int r = 0; r < 20 && valid < 3; r++)
        valid += finish_first_round(by_deadline);
    CHECK_GT(valid, 0);
    return NULL;
}

TEST(a_wait_ended_by_its_deadline_as_the_task_finishes_succeeds)
{
    bool by_deadline = true;
    struct test_on_loop_0 body = {main_finish_first, &by_deadline};
    run_main_checked(2, test_main_on_loop_0, &body);
}

TEST(a_wait_ended_by_a_cancellation_as_the_task_finishes_succeeds)
{
    bool by_deadline = false;
    struct test_on_loop_0 body = {main_finish_first, &by_deadline};
    run_main_checked(2, test_main_on_loop_0, &body);
}

/* ---- a task that never ran counts as finished ----
 *
 * Its stack could not be had (the next wrapped call, its stack's
 * mapping, made to fail): it ends without running, and wait_any reports
 * it like any finished task; its join then says why. */
static void *never_runs(void *arg)
{
    FAIL_("%s", "a task whose stack could not be mapped ran");
    return arg;
}

static void *main_never_ran(void *arg)
{
    (void)arg;
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    o.stack_size = 3u << 20; /* a size no pooled stack has: a fresh mapping */
    corio_task *t[2] = {NULL, NULL};
    CHECK_OK(corio_spawn_ex(&t[1], never_runs, NULL, &o));
    corio__fault_arm(1);
    size_t index = SIZE_MAX;
    int rc = corio_wait_any(t, 2, &index);
    bool fired = corio__fault_fired();
    corio__fault_arm(0);
    CHECK(fired);
    CHECK_OK(rc);
    CHECK_EQ((long)index, 1);
    CHECK(test_err_is(corio_join(t[1], NULL), "ENOSTACK"));
    return NULL;
}

TEST(a_task_that_never_ran_counts_as_finished)
{
    run_main_checked(1, main_never_ran, NULL);
}

/* ---- the runtime stopping under waiters ----
 *
 * main returns while regular, light and migrating tasks wait on tasks
 * that sleep for an hour. Shutdown fails every wait, the sleeps too, so
 * each wait ends: with CORIO_ECANCELED, or with 0 if a sleeper, its
 * sleep failed, finished first. Either way its handles are left to be
 * detached. */
static _Atomic int stop_rc[3];
static _Atomic int stop_waiters_ready;

static void *sleep_an_hour(void *arg)
{
    (void)corio_sleep(3600 * CORIO_SEC);
    return arg;
}

static void *wait_on_sleepers(void *arg)
{
    corio_task *t[3];
    for (int i = 0; i < 3; i++)
        CHECK_OK(corio_spawn(&t[i], sleep_an_hour, NULL));
    atomic_fetch_add(&stop_waiters_ready, 1);
    size_t index;
    atomic_store(&stop_rc[INT_OF(arg)], corio_wait_any(t, 3, &index));
    for (int i = 0; i < 3; i++)
        CHECK_OK(corio_detach(t[i]));
    return NULL;
}

static void *main_stops_under_waiters(void *arg)
{
    (void)arg;
    static const unsigned flags[3] = {0, CORIO_TASK_LIGHT, CORIO_TASK_MIGRATE};
    for (int i = 0; i < 3; i++) {
        corio_spawn_opts o;
        corio_spawn_opts_init(&o);
        o.flags = flags[i];
        CHECK_OK(corio_spawn_ex(NULL, wait_on_sleepers, PTR_OF(i), &o));
    }
    /* Every waiter has spawned what it waits on (a spawn once the
     * runtime stops is refused); the stop may still come before its
     * wait begins, which then fails at once, as it should. */
    CHECK(test_await(&stop_waiters_ready, 3));
    CHECK_OK(corio_sleep(CORIO_MSEC));
    return NULL;
}

TEST(waits_end_when_the_runtime_stops)
{
    for (unsigned loops = 1; loops <= 4; loops++) {
        for (int i = 0; i < 3; i++)
            atomic_store(&stop_rc[i], 1);
        atomic_store(&stop_waiters_ready, 0);
        run_main_checked(loops, main_stops_under_waiters, NULL);
        for (int i = 0; i < 3; i++)
            if (atomic_load(&stop_rc[i]) != CORIO_ECANCELED)
                CHECK_OK(atomic_load(&stop_rc[i]));
    }
}

/* ---- a waiter counts as joining, as a join does ----
 *
 * A task blocked in corio_wait_any needs no CPU until a task finishes,
 * so its loop's load for placement leaves it out (loop.h: live tasks
 * minus those joining), or idle loops would refuse the very work it
 * waits for. Loop 1 holds the waiter and the task it waits on: its
 * published load must read 1 (the gated task), not 2. */
static void *wait_any_on(void *arg)
{
    corio_task **t = arg;
    size_t index;
    CHECK_OK(corio_wait_any(t, 1, &index));
    return NULL;
}

static void *main_waiter_load(void *arg)
{
    (void)arg;
    corio__loop *one = corio__loop_current()->rt->loops[1];
    struct gate g[1];
    gates_new(g, 1);
    corio_task *t[1], *waiter;
    corio_spawn_opts o1 = test_on_loop(1, false);
    CHECK_OK(corio_spawn_ex(&t[0], wait_for_gate, &g[0], &o1));
    CHECK_OK(corio_spawn_ex(&waiter, wait_any_on, t, &o1));
    corio_time_t give_up = corio_deadline_in(10 * CORIO_SEC);
    while (atomic_load_explicit(&one->load, memory_order_relaxed) != 1) {
        if (corio_now() >= give_up)
            FAIL_("loop 1's load reads %zu with one task gated and one waiting on it",
                  atomic_load_explicit(&one->load, memory_order_relaxed));
        CHECK_OK(corio_sleep(CORIO_MSEC));
    }
    CHECK_OK(corio_event_set(g[0].go));
    CHECK_OK(corio_join(waiter, NULL));
    join_gated(t, g, 0);
    gates_free(g, 1);
    return NULL;
}

TEST(a_waiter_counts_as_joining)
{
    struct test_on_loop_0 body = {main_waiter_load, NULL};
    run_main_checked(2, test_main_on_loop_0, &body);
}

int main(int argc, char **argv)
{
    RUN(tasks_come_out_in_the_order_they_finish);
    RUN(finished_tasks_give_the_lowest_index_and_stay_joinable);
    RUN(a_timeout_or_cancellation_leaves_every_handle_joinable);
    RUN(bad_arguments_and_handles_are_refused);
    RUN(a_finished_handle_taken_by_another_task_is_refused);
    RUN(as_completed_across_loops);
    RUN(light_and_migrating_waiters);
    RUN(a_finish_racing_the_deadline);
    RUN(a_finish_racing_a_cancellation_fails_one_call);
    RUN(a_wait_ended_by_its_deadline_as_the_task_finishes_succeeds);
    RUN(a_wait_ended_by_a_cancellation_as_the_task_finishes_succeeds);
    RUN(a_task_that_never_ran_counts_as_finished);
    RUN(waits_end_when_the_runtime_stops);
    RUN(a_waiter_counts_as_joining);
    return test_summary();
}
