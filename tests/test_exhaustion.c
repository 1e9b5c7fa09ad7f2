/*
 * test_exhaustion.c: running out of things. The task limit, stacks that
 * cannot be mapped, a small address-space limit, and fault injection on
 * every wrapped allocation and syscall (src/sys.h) in turn. In every case
 * the library must return a clean error, keep working afterwards and
 * leave nothing allocated.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <sys/resource.h>
#include <unistd.h>

#include "task.h" /* corio__task_stack(): the stack a task really got */
#include "test.h"

static void *sleep_forever(void *arg)
{
    int rc = corio_sleep_until(CORIO_FOREVER);
    return PTR_OF(rc);
}

/* ---- max_tasks ---- */

#define MAX_TASKS 100

static void *main_max_tasks(void *arg)
{
    static corio_task *t[MAX_TASKS];
    corio_spawn_opts light;
    corio_spawn_opts_init(&light);
    light.flags = CORIO_TASK_LIGHT;
    /* main is task 1 of 100 */
    for (int i = 0; i < MAX_TASKS - 1; i++) {
        if (i % 2)
            CHECK_OK(corio_spawn_ex(&t[i], sleep_forever, NULL, &light));
        else
            CHECK_OK(corio_spawn(&t[i], sleep_forever, NULL));
    }
    corio_task *x = (corio_task *)&x;
    CHECK_ERR(corio_spawn(&x, test_ret_arg, NULL), CORIO_EAGAIN);
    CHECK(x == NULL);
    CHECK_ERR(corio_spawn(NULL, test_ret_arg, NULL), CORIO_EAGAIN);
    CHECK_ERR(corio_spawn_ex(&x, test_ret_arg, NULL, &light), CORIO_EAGAIN);
    CHECK_ERR(corio_spawn_on(&x, 1, test_ret_arg, NULL), CORIO_EAGAIN);

    /* One finishes (not yet joined): its slot is free again. */
    CHECK_OK(corio_cancel(t[0]));
    int rc;
    corio_time_t give_up = corio_deadline_in(10 * CORIO_SEC * TEST_SLOW);
    while ((rc = corio_spawn(&x, test_ret_arg, PTR_OF(5))) == CORIO_EAGAIN) {
        CHECK_LT(corio_now(), give_up);
        CHECK_OK(corio_sleep(CORIO_MSEC));
    }
    CHECK_OK(rc);
    void *r;
    CHECK_OK(corio_join(t[0], &r));
    CHECK_ERR((int)INT_OF(r), CORIO_ECANCELED);
    CHECK_OK(corio_join(x, &r)); /* a slot again once x is done */
    CHECK_EQ(INT_OF(r), 5);
    CHECK_OK(corio_spawn(&t[0], sleep_forever, NULL));
    CHECK_ERR(corio_spawn(&x, test_ret_arg, NULL), CORIO_EAGAIN);

    /* All finish: the whole budget is back. */
    for (int i = 0; i < MAX_TASKS - 1; i++)
        CHECK_OK(corio_cancel(t[i]));
    CHECK_OK(corio_gather(t, MAX_TASKS - 1, NULL));
    for (int i = 0; i < MAX_TASKS - 1; i++)
        CHECK_OK(corio_spawn(&t[i], sleep_forever, NULL));
    CHECK_ERR(corio_spawn(&x, test_ret_arg, NULL), CORIO_EAGAIN);
    for (int i = 0; i < MAX_TASKS - 1; i++)
        CHECK_OK(corio_cancel(t[i]));
    static void *res[MAX_TASKS];
    CHECK_OK(corio_gather(t, MAX_TASKS - 1, res));
    for (int i = 0; i < MAX_TASKS - 1; i++)
        CHECK_ERR((int)INT_OF(res[i]), CORIO_ECANCELED);
    return PTR_OF(1);
}

TEST(max_tasks)
{
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = 2;
    cfg.max_tasks = MAX_TASKS;
    CHECK_EQ(INT_OF(run_main_cfg(&cfg, main_max_tasks, NULL)), 1);
}

/* ---- stacks that cannot be mapped ----
 *
 * corio.h: the stack is taken when the task first runs; if none can be
 * had, the task does not run and its join reports CORIO_ENOSTACK. (Older
 * runtimes mapped it at spawn, which then failed with CORIO_ENOMEM; both
 * are accepted.) What must not happen is a task running on some other
 * stack, or a crash.
 */

static _Atomic int huge_ran;

static void *mark_huge_ran(void *arg)
{
    atomic_fetch_add(&huge_ran, 1);
    return arg;
}

static void *main_huge_stack(void *arg)
{
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    /* Above the 1 TiB a task may ask for (corio.h): refused at spawn, and
     * bigger than any x86-64 or arm64 user address space anyway. */
    const size_t sizes[] = {((size_t)1 << 40) + 4096, (size_t)1 << 52, (size_t)1 << 60,
                            ((size_t)1 << 52) + (64 << 10)};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        o.stack_size = sizes[i];
        o.loop = (int)(i % 2);
        corio_task *t = (corio_task *)&t;
        int rc = corio_spawn_ex(&t, mark_huge_ran, NULL, &o);
        if (rc != CORIO_EINVAL)
            FAIL_("stack of %zu bytes: %s, expected EINVAL", sizes[i], corio_err_name(rc));
        CHECK(t == NULL);
        CHECK_ERR(corio_spawn_ex(NULL, mark_huge_ran, NULL, &o), CORIO_EINVAL);
    }
    CHECK_OK(corio_sleep(5 * CORIO_MSEC));
    CHECK_EQ(atomic_load(&huge_ran), 0);
    /* The runtime carries on. */
    corio_task *t;
    void *r;
    CHECK_OK(corio_spawn(&t, test_ret_arg, PTR_OF(3)));
    CHECK_OK(corio_join(t, &r));
    CHECK_EQ(INT_OF(r), 3);
    o.stack_size = 1 << 20;
    CHECK_OK(corio_spawn_ex(&t, test_ret_arg, PTR_OF(4), &o));
    CHECK_OK(corio_join(t, &r));
    CHECK_EQ(INT_OF(r), 4);
    CHECK_OK(corio_sleep(CORIO_MSEC));
    return PTR_OF(1);
}

TEST(unmappable_stack)
{
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = 2;
    cfg.max_tasks = 10; /* the failed tasks must give their slots back */
    atomic_store(&huge_ran, 0);
    CHECK_EQ(INT_OF(run_main_cfg(&cfg, main_huge_stack, NULL)), 1);
}

/* ---- address-space limit (in a child process) ---- */

#ifndef TEST_SANITIZED
#define AS_MAX_TASKS 200000

/* A task that could not have its stack (see "stacks that cannot be
 * mapped" above). */
static bool no_stack_error(int rc)
{
    return rc == CORIO_ENOMEM || test_err_is(rc, "ENOSTACK");
}

static long vm_size_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmSize: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb * 1024;
}

static _Atomic long as_started;
static _Atomic unsigned char as_task_started[AS_MAX_TASKS];

/* arg: its flag in as_task_started. */
static void *as_sleeper(void *arg)
{
    atomic_store((_Atomic unsigned char *)arg, 1);
    atomic_fetch_add(&as_started, 1);
    return PTR_OF(corio_sleep_until(CORIO_FOREVER));
}

/*
 * Wait until each of t[from..n) has started or ended unrun, which a join
 * that cannot wait tells at once (and then releases it: t[i] = NULL).
 * Not started yet is not unrun: a fixed 20 ms once passed with tasks of
 * a batch not yet started although stacks were to be had, and they
 * started after the count of started tasks was taken. Returns how many
 * ended unrun; -1 if some task did neither within 10 s, -2 if a join
 * said something else.
 */
static long as_settle(corio_task **t, long from, long n)
{
    long unrun = 0;
    corio_time_t give_up = corio_deadline_in(10 * CORIO_SEC);
    for (long i = from; i < n;) {
        if (atomic_load(&as_task_started[i])) {
            i++;
            continue;
        }
        int rc = corio_join_until(t[i], NULL, corio_now());
        if (rc == CORIO_ETIMEDOUT) {
            if (corio_now() > give_up || corio_sleep(CORIO_MSEC) != 0)
                return -1;
            continue; /* look again: started, or ended unrun, by now? */
        }
        if (!no_stack_error(rc))
            return -2;
        t[i] = NULL;
        unrun++;
        i++;
    }
    return unrun;
}

/*
 * Spawn sleeping regular tasks in batches until stacks run out, which
 * shows either as a spawn failing with CORIO_ENOMEM or (stacks taken at
 * first run) as tasks that end unrun, their join reporting CORIO_ENOMEM.
 */
static void *main_rlimit(void *arg)
{
    corio_task **t = calloc(AS_MAX_TASKS, sizeof *t);
    if (!t)
        return PTR_OF(-100);
    long vm = vm_size_bytes();
    if (vm <= 0)
        return PTR_OF(-101);
    struct rlimit old, lim;
    getrlimit(RLIMIT_AS, &old);
    lim = old;
    lim.rlim_cur = (rlim_t)vm + 48 * 1024 * 1024;
    if (setrlimit(RLIMIT_AS, &lim) != 0)
        return PTR_OF(-102);
    long n = 0, settled = 0, unrun = 0;
    int rc = 0, spawn_rc = 0;
    bool short_of_stacks = false;
    while (!short_of_stacks) {
        for (int b = 0; b < 50; b++) {
            if ((rc = corio_spawn(&t[n], as_sleeper, (void *)&as_task_started[n])) != 0)
                break;
            if (++n == AS_MAX_TASKS)
                return PTR_OF(-103);
        }
        if (rc != 0) {
            if (rc != CORIO_ENOMEM)
                return PTR_OF(-104);
            spawn_rc = rc;
            short_of_stacks = true;
        }
        long u = as_settle(t, settled, n);
        if (u < 0)
            return PTR_OF(u == -1 ? -105 : -106);
        settled = n;
        unrun += u;
        if (u > 0)
            short_of_stacks = true;
    }
    long started = atomic_load(&as_started);
    for (long i = 0; i < n; i++)
        if (t[i])
            corio_cancel(t[i]);
    long cancelled = 0;
    for (long i = 0; i < n; i++) {
        if (!t[i])
            continue; /* ended unrun: joined by as_settle */
        void *r = NULL;
        rc = corio_join(t[i], &r);
        if (rc == 0 && INT_OF(r) == CORIO_ECANCELED)
            cancelled++;
        else if (no_stack_error(rc))
            unrun++;
        else
            return PTR_OF(-107);
    }
    printf("spawned %ld tasks: %ld ran (cancelled), %ld had no stack; last spawn: %s\n", n,
           cancelled, unrun, corio_err_name(spawn_rc));
    if (cancelled != started || cancelled < 10)
        return PTR_OF(-108);
    /* Spawning works again once address space is to be had. (Not before:
     * a loop that never mapped a chunk of stacks under the limit has none
     * for a task it steals, and whether it steals one is timing: this
     * check failed once that way under load, CORIO_ENOSTACK at -110.) */
    setrlimit(RLIMIT_AS, &old);
    for (long i = 0; i < 10; i++)
        if (corio_spawn(&t[i], test_ret_arg, PTR_OF(i)) != 0)
            return PTR_OF(-109);
    void *res[10];
    if (corio_gather(t, 10, res) != 0)
        return PTR_OF(-110);
    for (long i = 0; i < 10; i++)
        if (INT_OF(res[i]) != i)
            return PTR_OF(-111);
    free(t);
    return PTR_OF(0);
}

static int child_rlimit(void *arg)
{
    test_baseline base = test_baseline_take();
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = 2;
    void *r = PTR_OF(-1);
    int rc = corio_run(&cfg, main_rlimit, NULL, &r);
    if (rc != 0) {
        printf("corio_run: %s\n", corio_err_name(rc));
        return 2;
    }
    if (INT_OF(r) != 0) {
        printf("main failed at step %ld\n", (long)INT_OF(r));
        return 3;
    }
    if (corio__live_allocs() != base.allocs || corio__live_maps() != base.maps) {
        printf("leaked: allocs %lld -> %lld, maps %lld -> %lld\n", (long long)base.allocs,
               (long long)corio__live_allocs(), (long long)base.maps,
               (long long)corio__live_maps());
        return 4;
    }
    return 0;
}

#endif /* !TEST_SANITIZED */

/* ---- the biggest default stack, on every loop ----
 *
 * corio.h allows a default stack of 1 TiB. Pools map stacks in chunks;
 * 64 such stacks to a chunk would not fit in a 47-bit address space, and
 * every task of the second loop failed with CORIO_ENOSTACK. */
#ifndef TEST_SANITIZED
static void *where_and_how_big(void *arg)
{
    return PTR_OF(corio__task_stack(corio_self()).size >= ((size_t)1 << 40) - 4096
                      ? corio_loop_index()
                      : -100);
}

static void *main_tib_stacks(void *arg)
{
    for (unsigned round = 0; round < 3; round++) {
        for (unsigned loop = 0; loop < corio_loop_count(); loop++) {
            corio_task *t;
            void *r = PTR_OF(-1);
            CHECK_OK(corio_spawn_on(&t, loop, where_and_how_big, NULL));
            CHECK_OK(corio_join(t, &r));
            CHECK_EQ(INT_OF(r), loop);
        }
    }
    return NULL;
}
#endif

/* Tests of the address space itself: not where something else manages
 * it (qemu-user's guest, the sanitizers' shadow, Valgrind). */
#ifdef TEST_SANITIZED
#define SKIP_UNLESS_OWN_ADDRESS_SPACE(qemu_why)                                 \
    do {                                                                        \
        fprintf(stderr, "   skipped: sanitizers reserve terabytes of address space\n"); \
        return;                                                                 \
    } while (0)
#else
#define SKIP_UNLESS_OWN_ADDRESS_SPACE(qemu_why)                                 \
    do {                                                                        \
        TEST_SKIP_UNDER_QEMU(qemu_why);                                         \
        TEST_SKIP_IF(TEST_ON_VALGRIND(), "under Valgrind",                      \
                     "Valgrind manages the address space itself");              \
    } while (0)
#endif

TEST(terabyte_default_stacks_on_every_loop)
{
    SKIP_UNLESS_OWN_ADDRESS_SPACE("qemu-user's guest address space is smaller");
#ifndef TEST_SANITIZED
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = 2;
    cfg.stack_size = (size_t)1 << 40;
    run_main_cfg(&cfg, main_tib_stacks, NULL);
#endif
}

TEST(address_space_limit)
{
    SKIP_UNLESS_OWN_ADDRESS_SPACE("qemu-user reserves the guest's address space up front, so "
                                  "RLIMIT_AS does not limit the guest's mappings");
#ifndef TEST_SANITIZED
    test_child c;
    test_run_child(&c, child_rlimit, NULL);
    fprintf(stderr, "   child: %s", c.out);
    if (!WIFEXITED(c.status) || WEXITSTATUS(c.status) != 0)
        FAIL_("child status 0x%x, output:\n%s", c.status, c.out);
#endif
}

/* ---- fault injection ---- */

#define SCENARIO_MAX 80

static void *blocking_fn(void *arg) { return PTR_OF(INT_OF(arg) + 1); }

/* Propagates errors instead of asserting: under fault injection any call
 * may fail, and must do so cleanly. A wrong *result* is not an error but a
 * bug, reported as -1000. */
/* Per child argument: how often it was consumed, by the child running or
 * by its discard (corio_spawn_opts): once, whatever failed. */
static _Atomic int scenario_consumed[SCENARIO_MAX];
static _Atomic int scenario_spawned;

static void scenario_discard(void *arg, int error)
{
    atomic_fetch_add(&scenario_consumed[INT_OF(arg)], 1);
}

static void *scenario_child(void *arg)
{
    intptr_t i = INT_OF(arg);
    atomic_fetch_add(&scenario_consumed[i], 1);
    int rc = corio_sleep(CORIO_MSEC / 2);
    if (rc != 0)
        return PTR_OF(rc);
    void *r;
    rc = corio_run_blocking(blocking_fn, PTR_OF(i), &r);
    if (rc != 0)
        return PTR_OF(rc);
    if (INT_OF(r) != i + 1)
        return PTR_OF(-1000);
    rc = corio_yield();
    if (rc != 0)
        return PTR_OF(rc);
    return PTR_OF(i * 10);
}

/* arg: how many tasks. 6 exercises each kind of call; 80 also needs a
 * second task slab and grows the timer heap past its first 64 slots. */
static _Atomic int scenario_ran;

static void *scenario(void *arg)
{
    atomic_store(&scenario_ran, 1);
    int N = (int)INT_OF(arg);
    corio_task *t[SCENARIO_MAX];
    void *res[SCENARIO_MAX];
    int n = 0, first_err = 0;
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    o.discard = scenario_discard;
    for (int i = 0; i < N; i++) {
        o.flags = i % 2 ? CORIO_TASK_LIGHT : 0;
        o.loop = i % 6 == 5 ? 1 : -1;
        int rc = corio_spawn_ex(&t[n], scenario_child, PTR_OF(n), &o);
        if (rc != 0) {
            first_err = first_err ? first_err : rc;
            break;
        }
        n++;
        atomic_store(&scenario_spawned, n);
    }
    int rc = corio_gather(t, (size_t)n, res);
    bool some_unrun = test_err_is(rc, "ENOSTACK");
    if (rc != 0 && !some_unrun)
        return PTR_OF(rc == CORIO_ECANCELED ? -1000 : rc); /* nothing cancels main */
    if (some_unrun && !first_err)
        first_err = rc;
    for (int i = 0; i < n; i++) {
        intptr_t v = INT_OF(res[i]);
        if (v == 0 && some_unrun)
            continue; /* a task that could not start has a NULL result */
        if (v < 0 && !first_err)
            first_err = (int)v;
        else if (v >= 0 && v != i * 10)
            return PTR_OF(-1000);
    }
    if (first_err)
        return PTR_OF(first_err);
    rc = corio_sleep(CORIO_MSEC / 2);
    if (rc != 0)
        return PTR_OF(rc);
    void *r;
    rc = corio_run_blocking(blocking_fn, PTR_OF(41), &r);
    if (rc != 0)
        return PTR_OF(rc);
    if (INT_OF(r) != 42)
        return PTR_OF(-1000);
    return PTR_OF(0);
}

static bool clean_error(long v)
{
    return v == CORIO_ENOMEM || v == CORIO_EAGAIN || v == CORIO_EMFILE ||
           test_err_is((int)v, "ENOSTACK");
}

static void scenario_reset(void)
{
    atomic_store(&scenario_ran, 0);
    atomic_store(&scenario_spawned, 0);
    for (int i = 0; i < SCENARIO_MAX; i++)
        atomic_store(&scenario_consumed[i], 0);
}

/* After corio_run: each child spawned ran or was discarded, once. */
static void scenario_check_consumed(long fault_at)
{
    for (int i = 0; i < atomic_load(&scenario_spawned); i++)
        if (atomic_load(&scenario_consumed[i]) != 1)
            FAIL_("fault at call %ld: child %d's argument consumed %d times", fault_at, i,
                  atomic_load(&scenario_consumed[i]));
}

static void fault_injection(int ntasks)
{
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = 2;
    void *arg = PTR_OF(ntasks);
    /* Unfaulted run first: it must succeed, and it tells how many wrapped
     * calls a run makes. */
    test_baseline base = test_baseline_take();
    corio__fault_arm(0);
    void *r = PTR_OF(-1);
    scenario_reset();
    CHECK_OK(corio_run(&cfg, scenario, arg, &r));
    CHECK_EQ(INT_OF(r), 0);
    CHECK_NO_LEAKS(base);
    CHECK_EQ(atomic_load(&scenario_spawned), ntasks);
    scenario_check_consumed(0);

    long limit = 5000, n;
    int failed_run = 0, failed_main = 0, survived = 0;
    for (n = 1; n <= limit; n++) {
        snprintf(test_watchdog_note, sizeof test_watchdog_note, "fault at call %ld", n);
        base = test_baseline_take();
        corio__fault_arm((uint64_t)n);
        r = PTR_OF(-1);
        scenario_reset();
        int rc = corio_run(&cfg, scenario, arg, &r);
        bool fired = corio__fault_fired();
        corio__fault_arm(0);
        scenario_check_consumed(n);
        /* corio_run's 0 says main ran (the fault may have cost it its
         * stack: that must be an error, not a NULL result). */
        if (rc == 0 && !atomic_load(&scenario_ran))
            FAIL_("fault at call %ld: corio_run returned 0 but main never ran", n);
        if (rc != 0) {
            if (!clean_error(rc))
                FAIL_("fault at call %ld: corio_run returned %s", n, corio_err_name(rc));
            if (!fired)
                FAIL_("fault at call %ld: corio_run failed (%s) with no fault", n,
                      corio_err_name(rc));
            failed_run++;
        } else if (INT_OF(r) != 0) {
            if (!clean_error(INT_OF(r)))
                FAIL_("fault at call %ld: main's result %ld (%s)", n, (long)INT_OF(r),
                      corio_err_name((int)INT_OF(r)));
            failed_main++;
        } else {
            survived++;
        }
        if (corio__live_allocs() != base.allocs || corio__live_maps() != base.maps)
            FAIL_("fault at call %ld: leaked allocs %lld -> %lld, maps %lld -> %lld", n,
                  (long long)base.allocs, (long long)corio__live_allocs(),
                  (long long)base.maps, (long long)corio__live_maps());
        if (!fired)
            break;
    }
    CHECK_LE(n, limit);
    CHECK_GT(n, 10);
    fprintf(stderr,
            "   %d tasks: covered faults at calls 1..%ld: corio_run failed cleanly %d times, "
            "main saw a clean error %d times, survived %d times\n",
            ntasks, n - 1, failed_run, failed_main, survived);
}

/* ---- a loop thread that cannot be started ----
 *
 * corio.h: corio_run returns CORIO_EAGAIN when threads run out and
 * CORIO_ENOMEM when memory does. With two loops the one thread corio_run
 * starts is started while the caller is the runtime's only thread, so the
 * wrapped calls up to it come in a fixed order and the sweep meets its
 * failure (the only wrapped call that fails with EAGAIN) exactly once. */
TEST(thread_start_failure_is_eagain)
{
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = 2;
    int eagain = 0, other = 0;
    long n;
    for (n = 1; n <= 1000; n++) {
        test_baseline base = test_baseline_take();
        corio__fault_arm((uint64_t)n);
        void *r = PTR_OF(-1);
        int rc = corio_run(&cfg, test_ret_arg, PTR_OF(5), &r);
        bool fired = corio__fault_fired();
        corio__fault_arm(0);
        CHECK_NO_LEAKS(base);
        if (!fired) {
            CHECK_OK(rc);
            CHECK_EQ(INT_OF(r), 5);
            break;
        }
        if (rc == CORIO_EAGAIN)
            eagain++;
        else if (rc != 0)
            other++;
        if (rc != 0) /* main never ran: *result untouched, or NULL (corio.h) */
            CHECK_EQ(INT_OF(r), test_err_is(rc, "ENOSTACK") ? 0 : -1);
    }
    CHECK_LE(n, 1000);
    fprintf(stderr, "   faults at calls 1..%ld: %d EAGAIN, %d other errors\n", n - 1, eagain,
            other);
    CHECK_EQ(eagain, 1);
}

TEST(fault_injection_small)
{
    fault_injection(6);
}

TEST(fault_injection_larger)
{
    fault_injection(SCENARIO_MAX);
}

int main(int argc, char **argv)
{
    RUN(max_tasks);
    RUN(unmappable_stack);
    RUN(address_space_limit);
    RUN(terabyte_default_stacks_on_every_loop);
    RUN(thread_start_failure_is_eagain);
    RUN(fault_injection_small);
    RUN(fault_injection_larger);
    return test_summary();
}
