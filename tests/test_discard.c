/*
 * test_discard.c: a spawn's discard function (corio.h, corio_spawn_opts).
 *
 * Once a spawn succeeds its argument is consumed exactly once: by the
 * task's function if it runs, by discard(arg, why) if it never does
 * (dropped by shutdown, or no stack when it would start). Every test
 * here counts, per argument, how often each happened.
 */
#include <stdatomic.h>
#include <string.h>

#include "corio.h"
#include "task.h"
#include "test.h"

#define SLOTS 2000

/* One spawned argument: how often it was run and discarded, and what the
 * discard saw. */
struct slot {
    _Atomic int ran;
    _Atomic int discarded;
    _Atomic int why;           /* discard's error */
    _Atomic int outside_task;  /* discard ran with no current task, on a loop */
    _Atomic int wait_refused;  /* corio_sleep in discard gave CORIO_EPERM */
    _Atomic uintptr_t fn_seen; /* the running task's fn, as debuggers see it */
};

static struct slot slots[SLOTS];

static void slots_clear(void) { memset(slots, 0, sizeof slots); }

static void *mark_ran(void *arg)
{
    struct slot *s = arg;
    atomic_fetch_add(&s->ran, 1);
    atomic_store(&s->fn_seen, (uintptr_t)corio_self()->fn);
    /* A task that has run is never discarded, however shutdown finds it. */
    corio_sleep(50 * CORIO_MSEC);
    return NULL;
}

static void mark_discarded(void *arg, int error)
{
    struct slot *s = arg;
    atomic_fetch_add(&s->discarded, 1);
    atomic_store(&s->why, error);
    atomic_store(&s->outside_task, corio_self() == NULL && corio_loop_index() >= 0);
    atomic_store(&s->wait_refused, corio_sleep(CORIO_MSEC) == CORIO_EPERM);
}

static void check_discard_context(const struct slot *s, int why)
{
    CHECK_EQ(atomic_load(&s->why), why);
    CHECK_EQ(atomic_load(&s->outside_task), 1);
    CHECK_EQ(atomic_load(&s->wait_refused), 1);
}

/* ---- shutdown ---- */

struct shutdown_round {
    int yields;   /* how often main yields before returning */
    int pinned_here; /* tasks pinned to main's own loop (first in slots) */
    int total;
};

static void *spawn_then_return(void *arg)
{
    struct shutdown_round *r = arg;
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    o.discard = mark_discarded;
    for (int i = 0; i < r->total; i++) {
        o.loop = i < r->pinned_here ? corio_loop_index() : -1;
        o.flags = (i % 3 == 1 && o.loop < 0) ? CORIO_TASK_LIGHT : 0;
        CHECK_OK(corio_spawn_ex(NULL, mark_ran, &slots[i], &o));
    }
    for (int i = 0; i < r->yields; i++)
        CHECK_OK(corio_yield());
    return NULL;
}

/* Main returns with detached tasks not yet run, some pinned to its own
 * loop (those cannot have run: main never gave up its loop), the others
 * free to be stolen: every one is run or discarded, never both, never
 * neither, and a discard says ESHUTDOWN from outside any task. */
TEST(shutdown_discards_each_unrun_task_once)
{
    /* At least 4: the rounds where main yields are the ones where tasks
     * certainly run (a slow lane may steal none before main returns). */
    long rounds = test_scaled(60) < 4 ? 4 : test_scaled(60);
    long discarded_total = 0, ran_total = 0;
    for (long round = 0; round < rounds; round++) {
        slots_clear();
        struct shutdown_round r = {.yields = (int)(round % 4) * 3,
                                   .pinned_here = 200,
                                   .total = (int)test_scaled(SLOTS)};
        if (r.total < r.pinned_here * 2)
            r.total = r.pinned_here * 2;
        run_main_checked(2, spawn_then_return, &r);
        for (int i = 0; i < r.total; i++) {
            int ran = atomic_load(&slots[i].ran), gone = atomic_load(&slots[i].discarded);
            if (ran + gone != 1)
                FAIL_("round %ld, task %d: ran %d times, discarded %d times", round, i, ran, gone);
            if (gone)
                check_discard_context(&slots[i], CORIO_ESHUTDOWN);
            if (r.yields == 0 && i < r.pinned_here && !gone)
                FAIL_("round %ld: task %d, pinned to main's loop, ran before main yielded", round,
                      i);
            ran_total += ran;
            discarded_total += gone;
        }
    }
    fprintf(stderr, "   %ld rounds: %ld tasks ran, %ld discarded\n", rounds, ran_total,
            discarded_total);
    CHECK_GT(discarded_total, 0);
    CHECK_GT(ran_total, 0);
}

/* ---- no stack ----
 *
 * A task takes its stack when it first runs. One loop, a stack size no
 * pool holds, and the next wrapped call (src/sys.h) made to fail: that is
 * the mapping of the stack, and the task cannot start. */

#define ODD_STACK (3u << 20)

static void *join_unstartable(void *arg)
{
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    o.stack_size = ODD_STACK;
    o.discard = mark_discarded;
    corio_task *t;
    CHECK_OK(corio_spawn_ex(&t, mark_ran, &slots[0], &o));
    corio__fault_arm(1);
    void *r = PTR_OF(1);
    int rc = corio_join(t, &r);
    bool fired = corio__fault_fired();
    corio__fault_arm(0);
    CHECK(fired);
    CHECK(test_err_is(rc, "ENOSTACK"));
    CHECK(r == NULL);
    /* Already called when the join returned. */
    CHECK_EQ(atomic_load(&slots[0].discarded), 1);
    CHECK_EQ(atomic_load(&slots[0].ran), 0);
    check_discard_context(&slots[0], rc);

    /* The same through gather, and a task beside it that runs. */
    corio_task *two[2];
    CHECK_OK(corio_spawn_ex(&two[0], mark_ran, &slots[1], &o));
    o.stack_size = 0;
    CHECK_OK(corio_spawn_ex(&two[1], mark_ran, &slots[2], &o));
    corio__fault_arm(1);
    rc = corio_gather(two, 2, NULL);
    fired = corio__fault_fired();
    corio__fault_arm(0);
    CHECK(fired);
    CHECK(test_err_is(rc, "ENOSTACK"));
    CHECK_EQ(atomic_load(&slots[1].discarded), 1);
    CHECK_EQ(atomic_load(&slots[1].ran), 0);
    CHECK_EQ(atomic_load(&slots[2].discarded), 0);
    CHECK_EQ(atomic_load(&slots[2].ran), 1);
    /* Started, it shows its own function to debuggers (tools/gdb), not
     * the wrapper that carried the discard (task.h). */
    CHECK(atomic_load(&slots[2].fn_seen) == (uintptr_t)mark_ran);

    /* A failure in the middle of a gather: reported, and every other
     * task's result stored and its handle released all the same. The
     * unstartable one is spawned first, so it is the first to run. */
    corio_task *three[3];
    o.stack_size = ODD_STACK;
    CHECK_OK(corio_spawn_ex(&three[1], mark_ran, &slots[3], &o));
    o.stack_size = 0;
    CHECK_OK(corio_spawn_ex(&three[0], mark_ran, &slots[4], &o));
    CHECK_OK(corio_spawn_ex(&three[2], mark_ran, &slots[5], &o));
    void *res[3] = {PTR_OF(-1), PTR_OF(-1), PTR_OF(-1)};
    corio__fault_arm(1);
    rc = corio_gather(three, 3, res);
    fired = corio__fault_fired();
    corio__fault_arm(0);
    CHECK(fired);
    CHECK(test_err_is(rc, "ENOSTACK"));
    CHECK_EQ(atomic_load(&slots[3].discarded), 1);
    CHECK_EQ(atomic_load(&slots[3].ran), 0);
    CHECK_EQ(atomic_load(&slots[4].ran), 1);
    CHECK_EQ(atomic_load(&slots[5].ran), 1);
    for (int i = 0; i < 3; i++) {
        CHECK(res[i] == NULL); /* mark_ran's result; none for the unrun one */
        /* Released: nothing spawned since, so a join is refused. */
        CHECK_ERR(corio_join(three[i], NULL), CORIO_EINVAL);
    }
    return NULL;
}

TEST(no_stack_discards_before_join_returns)
{
    slots_clear();
    run_main_checked(1, join_unstartable, NULL);
}

/* ---- groups ---- */

static int group_child_ran(void *arg)
{
    mark_ran(arg);
    return 0;
}

static int wait_forever(void *arg)
{
    return corio_sleep(3600 * CORIO_SEC);
}

/* A child that never ran gets its own argument discarded, and it is a
 * failure of the group: at once, so CORIO_GROUP_CANCEL_ON_ERROR cancels
 * a sibling that would otherwise wait for an hour. */
static void *group_unstartable(void *arg)
{
    corio_group *g;
    CHECK_OK(corio_group_new(&g, CORIO_GROUP_CANCEL_ON_ERROR));
    CHECK_OK(corio_group_spawn(g, wait_forever, NULL));
    /* Let the sleeper start first (it may map a fresh chunk of stacks). */
    CHECK_OK(corio_sleep(CORIO_MSEC));
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    o.stack_size = ODD_STACK;
    o.discard = mark_discarded;
    CHECK_OK(corio_group_spawn_ex(g, group_child_ran, &slots[0], &o));
    corio__fault_arm(1);
    int rc = corio_group_wait(g); /* a cancel that never came: the watchdog */
    bool fired = corio__fault_fired();
    corio__fault_arm(0);
    CHECK(fired);
    CHECK_OK(rc);
    CHECK(test_err_is(corio_group_error(g), "ENOSTACK"));
    CHECK_EQ(atomic_load(&slots[0].discarded), 1);
    CHECK_EQ(atomic_load(&slots[0].ran), 0);
    check_discard_context(&slots[0], corio_group_error(g));
    CHECK_EQ(corio_group_close(g), atomic_load(&slots[0].why));

    /* Without a discard of its own, the failure is still the group's. */
    CHECK_OK(corio_group_new(&g, 0));
    o.discard = NULL;
    CHECK_OK(corio_group_spawn_ex(g, group_child_ran, &slots[1], &o));
    corio__fault_arm(1);
    rc = corio_group_wait(g);
    fired = corio__fault_fired();
    corio__fault_arm(0);
    CHECK(fired);
    CHECK_OK(rc);
    CHECK(test_err_is(corio_group_error(g), "ENOSTACK"));
    CHECK_EQ(atomic_load(&slots[1].ran), 0);
    CHECK(test_err_is(corio_group_close(g), "ENOSTACK"));
    return NULL;
}

TEST(group_child_never_run_is_discarded_and_fails_the_group)
{
    slots_clear();
    run_main_checked(1, group_unstartable, NULL);
}

/* ---- a failed spawn keeps the argument the caller's ---- */

static _Atomic int hold;

/* mark_ran, but keeps its task (and so its task slot) until `hold` is
 * cleared: a spawner held up for mark_ran's 50 ms found the slot free. */
static void *mark_ran_and_hold(void *arg)
{
    struct slot *s = arg;
    atomic_fetch_add(&s->ran, 1);
    while (atomic_load(&hold))
        corio_sleep(CORIO_MSEC);
    return NULL;
}

static void *failed_spawns(void *arg)
{
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    o.discard = mark_discarded;
    o.flags = 1u << 7; /* no such flag */
    CHECK_ERR(corio_spawn_ex(NULL, mark_ran, &slots[0], &o), CORIO_EINVAL);
    o.flags = 0;
    /* max_tasks is 2: main and one more. */
    corio_task *t;
    atomic_store(&hold, 1);
    CHECK_OK(corio_spawn_ex(&t, mark_ran_and_hold, &slots[1], &o));
    CHECK_ERR(corio_spawn_ex(NULL, mark_ran, &slots[0], &o), CORIO_EAGAIN);
    atomic_store(&hold, 0);
    CHECK_OK(corio_join(t, NULL));
    /* No memory for the discard's record: the first wrapped call. */
    corio__fault_arm(1);
    int rc = corio_spawn_ex(NULL, mark_ran, &slots[0], &o);
    corio__fault_arm(0);
    CHECK_ERR(rc, CORIO_ENOMEM);
    CHECK_OK(corio_sleep(5 * CORIO_MSEC));
    CHECK_EQ(atomic_load(&slots[0].ran), 0);
    CHECK_EQ(atomic_load(&slots[0].discarded), 0);
    CHECK_EQ(atomic_load(&slots[1].ran), 1);
    CHECK_EQ(atomic_load(&slots[1].discarded), 0);
    return NULL;
}

TEST(failed_spawn_leaves_arg_to_caller)
{
    slots_clear();
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = 2;
    cfg.max_tasks = 2;
    run_main_cfg(&cfg, failed_spawns, NULL);
}

/* A spawn refused because the runtime stops: the caller's too. */
static _Atomic int stop_spawner_started;

static void *spawn_after_stop(void *arg)
{
    atomic_store(&stop_spawner_started, 1);
    /* Cancelled by the shutdown that main's return starts. */
    while (corio_sleep(CORIO_SEC) != CORIO_ECANCELED) {
    }
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    o.discard = mark_discarded;
    atomic_store(&slots[1].ran, corio_spawn_ex(NULL, mark_ran, &slots[0], &o));
    return NULL;
}

static void *return_under_a_sleeper(void *arg)
{
    CHECK_OK(corio_spawn(NULL, spawn_after_stop, NULL));
    /* Return once it has started (a task that has not is dropped by the
     * shutdown, and spawns nothing): a fixed 2 ms were not always enough
     * for the loop that had stolen it. */
    CHECK(test_await(&stop_spawner_started, 1));
    return NULL;
}

TEST(spawn_refused_at_shutdown_is_not_discarded)
{
    slots_clear();
    run_main_checked(2, return_under_a_sleeper, NULL);
    CHECK_EQ(atomic_load(&slots[1].ran), CORIO_ESHUTDOWN);
    CHECK_EQ(atomic_load(&slots[0].ran), 0);
    CHECK_EQ(atomic_load(&slots[0].discarded), 0);
}

int main(int argc, char **argv)
{
    RUN(shutdown_discards_each_unrun_task_once);
    RUN(no_stack_discards_before_join_returns);
    RUN(group_child_never_run_is_discarded_and_fails_the_group);
    RUN(failed_spawn_leaves_arg_to_caller);
    RUN(spawn_refused_at_shutdown_is_not_discarded);
    return test_summary();
}
