/*
 * test_config.c: corio_run's configuration (corio_config and the
 * CORIO_LOOPS / CORIO_STACK_SIZE / CORIO_STACK_RETAIN_MS / CORIO_PIN /
 * CORIO_HUGE_PAGES environment variables) and its misuse (NULL main,
 * nested runs).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/mman.h>
#include <sched.h>
#include <stdatomic.h>

#include "debug.h" /* the watchdog's dump and the list it walks */
#include "loop.h" /* the runtime's resolved settings */
#include "sigfmt.h" /* the dump's formatter */
#include "task.h" /* corio__task_stack(): the stack a task really got */
#include "test.h"

static void clear_env(void)
{
    unsetenv("CORIO_LOOPS");
    unsetenv("CORIO_STACK_SIZE");
    unsetenv("CORIO_STACK_RETAIN_MS");
    unsetenv("CORIO_PIN");
    unsetenv("CORIO_HUGE_PAGES");
}

static void *report_loops(void *arg) { return PTR_OF(corio_loop_count()); }

static unsigned cpus_allowed(void)
{
    cpu_set_t set;
    CHECK_EQ(sched_getaffinity(0, sizeof set, &set), 0);
    return (unsigned)CPU_COUNT(&set);
}

static int run_cfg(const corio_config *cfg, corio_fn fn, void **result)
{
    test_baseline base = test_baseline_take();
    int rc = corio_run(cfg, fn, NULL, result);
    CHECK_NO_LEAKS(base);
    return rc;
}

/* corio_run must refuse each of these values of the environment variable
 * `name` with CORIO_EINVAL, without running main. */
static void expect_rejected(const char *name, const char *const *bad, size_t n,
                            const corio_config *cfg)
{
    for (size_t i = 0; i < n; i++) {
        setenv(name, bad[i], 1);
        void *r = PTR_OF(-1);
        int rc = run_cfg(cfg, report_loops, &r);
        if (rc != CORIO_EINVAL)
            FAIL_("%s=\"%s\": corio_run returned %s, expected EINVAL", name, bad[i],
                  corio_err_name(rc));
        CHECK_EQ(INT_OF(r), -1); /* untouched */
    }
}

TEST(loops_from_environment)
{
    clear_env();
    corio_config cfg;
    corio_config_init(&cfg);
    CHECK_EQ(cfg.loops, 0);
    CHECK_EQ(cfg.stack_size, 0);
    CHECK_EQ(cfg.blocking_threads, 0);
    CHECK_EQ(cfg.max_tasks, 0);
    CHECK(!cfg.pin_cpus);
    void *r;

    /* Default: one loop per CPU this process may use. */
    CHECK_OK(run_cfg(NULL, report_loops, &r));
    CHECK_EQ(INT_OF(r), cpus_allowed());

    const unsigned counts[] = {2, 3, 4, 7};
    for (size_t i = 0; i < 4; i++) {
        char buf[16];
        snprintf(buf, sizeof buf, "%u", counts[i]);
        setenv("CORIO_LOOPS", buf, 1);
        CHECK_OK(run_cfg(&cfg, report_loops, &r));
        CHECK_EQ(INT_OF(r), counts[i]);
        CHECK_OK(run_cfg(NULL, report_loops, &r));
        CHECK_EQ(INT_OF(r), counts[i]);
    }
    /* The configuration wins over the environment. */
    setenv("CORIO_LOOPS", "3", 1);
    cfg.loops = 2;
    CHECK_OK(run_cfg(&cfg, report_loops, &r));
    CHECK_EQ(INT_OF(r), 2);
    /* Empty means unset. */
    setenv("CORIO_LOOPS", "", 1);
    cfg.loops = 0;
    CHECK_OK(run_cfg(&cfg, report_loops, &r));
    CHECK_EQ(INT_OF(r), cpus_allowed());
    clear_env();
}

TEST(bad_loops)
{
    clear_env();
    /* No size suffix for a count: "1k" would be 1024 loops. */
    const char *bad[] = {"abc", "0",   "99999", "-1",   "2x",   "4k",
                         " -1", "1e3", "0x4",   " 2",   "+2",   " -18446744073709551615",
                         "-18446744073709551615", "1k", "1K", "1m"};
    corio_config cfg;
    corio_config_init(&cfg);
    expect_rejected("CORIO_LOOPS", bad, sizeof bad / sizeof bad[0], &cfg);
    /* A bad variable does not matter when the configuration decides. */
    setenv("CORIO_LOOPS", "abc", 1);
    cfg.loops = 2;
    void *r;
    CHECK_OK(run_cfg(&cfg, report_loops, &r));
    CHECK_EQ(INT_OF(r), 2);
    /* Too many loops in the configuration itself: the documented 1024
     * and no more. */
    cfg.loops = 100000;
    CHECK_ERR(run_cfg(&cfg, report_loops, &r), CORIO_EINVAL);
    cfg.loops = 1025;
    CHECK_ERR(run_cfg(&cfg, report_loops, &r), CORIO_EINVAL);
    setenv("CORIO_LOOPS", "1025", 1);
    cfg.loops = 0;
    CHECK_ERR(run_cfg(&cfg, report_loops, &r), CORIO_EINVAL);
    clear_env();
}

static void *report_stack_leaf(void *arg) { return PTR_OF(corio__task_stack(corio_self()).size); }

static void *report_stack_main(void *arg)
{
    corio_task *t;
    void *r;
    if (corio_spawn(&t, report_stack_leaf, NULL) != 0 || corio_join(t, &r) != 0)
        return PTR_OF(-1);
    if ((size_t)INT_OF(r) != corio__task_stack(corio_self()).size)
        return PTR_OF(-2);
    return r;
}

TEST(stack_size_from_environment)
{
    clear_env();
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = 2;
    void *r;
    CHECK_OK(run_cfg(&cfg, report_stack_main, &r));
    CHECK_EQ(INT_OF(r), 128 * 1024); /* documented default */

    struct {
        const char *env;
        long bytes;
    } good[] = {
        {"256k", 256 * 1024}, {"256K", 256 * 1024}, {"1m", 1024 * 1024},
        {"2M", 2 * 1024 * 1024}, {"65536", 65536}, {"100000", 102400 /* pages */},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        setenv("CORIO_STACK_SIZE", good[i].env, 1);
        r = NULL;
        CHECK_OK(run_cfg(&cfg, report_stack_main, &r));
        if (INT_OF(r) != good[i].bytes)
            FAIL_("CORIO_STACK_SIZE=%s: stack of %ld bytes, expected %ld", good[i].env,
                  (long)INT_OF(r), good[i].bytes);
    }
    /* The configuration wins. */
    setenv("CORIO_STACK_SIZE", "1m", 1);
    cfg.stack_size = 192 * 1024;
    CHECK_OK(run_cfg(&cfg, report_stack_main, &r));
    CHECK_EQ(INT_OF(r), 192 * 1024);
    cfg.stack_size = 0;

    const char *bad[] = {"abc", "12q", "-5", "k", "0", "1mb", "99999999999999999999999",
                         " -18446744073709551615", " 64k"};
    expect_rejected("CORIO_STACK_SIZE", bad, sizeof bad / sizeof bad[0], &cfg);
    clear_env();
}

static void *report_retain_main(void *arg)
{
    return PTR_OF(corio__loop_current()->rt->stack_retain_ns / CORIO_MSEC);
}

TEST(stack_retention_from_environment)
{
    clear_env();
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = 1;
    void *r;
    CHECK_OK(run_cfg(&cfg, report_retain_main, &r));
    CHECK_EQ(INT_OF(r), 10000); /* documented default */
    setenv("CORIO_STACK_RETAIN_MS", "250", 1);
    CHECK_OK(run_cfg(&cfg, report_retain_main, &r));
    CHECK_EQ(INT_OF(r), 250);
    cfg.stack_retain_ms = 40; /* the configuration wins */
    CHECK_OK(run_cfg(&cfg, report_retain_main, &r));
    CHECK_EQ(INT_OF(r), 40);
    cfg.stack_retain_ms = 0;
    /* No size suffix for milliseconds: "4m" reads as 4 minutes, and was
     * 4,194,304 ms. */
    const char *bad[] = {"abc", "0", "-1", "5000000000", "12q", " -18446744073709551615",
                         "4m", "1k", "1g"};
    expect_rejected("CORIO_STACK_RETAIN_MS", bad, sizeof bad / sizeof bad[0], &cfg);
    clear_env();
}

/* ---- misuse ---- */

static void *nested_run_fn(void *arg)
{
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = 2;
    void *r = PTR_OF(-1);
    int rc = corio_run(&cfg, report_loops, NULL, &r);
    if (INT_OF(r) != -1)
        return PTR_OF(-1000);
    return PTR_OF(rc);
}

static void *main_nested(void *arg)
{
    /* From the main task, from a spawned task on another loop, and from a
     * blocking-pool thread. */
    CHECK_ERR((int)INT_OF(nested_run_fn(NULL)), CORIO_EBUSY);
    corio_task *t;
    void *r;
    CHECK_OK(corio_spawn_on(&t, 1, nested_run_fn, NULL));
    CHECK_OK(corio_join(t, &r));
    CHECK_ERR((int)INT_OF(r), CORIO_EBUSY);
    CHECK_OK(corio_run_blocking(nested_run_fn, NULL, &r));
    CHECK_ERR((int)INT_OF(r), CORIO_EBUSY);
    return PTR_OF(1);
}

TEST(misuse)
{
    clear_env();
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = 2;
    void *r = PTR_OF(-1);
    CHECK_ERR(corio_run(&cfg, NULL, NULL, &r), CORIO_EINVAL);
    CHECK_ERR(corio_run(NULL, NULL, NULL, NULL), CORIO_EINVAL);
    CHECK_EQ(INT_OF(r), -1);
    CHECK_EQ(INT_OF(run_main_checked(2, main_nested, NULL)), 1);
    /* result may be NULL */
    CHECK_OK(corio_run(&cfg, report_loops, NULL, NULL));
    CHECK_EQ(corio_loop_count(), 0);
}

/* ---- several runtimes ---- */

static void *small_workload(void *arg)
{
    enum { N = 50 };
    corio_task *t[N];
    void *res[N];
    for (intptr_t i = 0; i < N; i++)
        CHECK_OK(corio_spawn(&t[i], report_loops, NULL));
    CHECK_OK(corio_gather(t, N, res));
    for (int i = 0; i < N; i++)
        CHECK_EQ(INT_OF(res[i]), corio_loop_count());
    CHECK_OK(corio_sleep(CORIO_MSEC));
    return PTR_OF(corio_loop_count() * 100 + (arg ? 1 : 0));
}

TEST(runtimes_one_after_another)
{
    for (unsigned i = 0; i < 20; i++) {
        unsigned loops = 2 + i % 3;
        CHECK_EQ(INT_OF(run_main_checked(loops, small_workload, NULL)), loops * 100);
    }
}

static void *runtime_thread(void *arg)
{
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = (unsigned)INT_OF(arg);
    void *r = NULL;
    for (int i = 0; i < 10; i++) {
        int rc = corio_run(&cfg, small_workload, PTR_OF(1), &r);
        if (rc != 0)
            return PTR_OF(rc);
        if (INT_OF(r) != (intptr_t)cfg.loops * 100 + 1)
            return PTR_OF(-1000);
    }
    return NULL;
}

TEST(runtimes_side_by_side)
{
    test_baseline base = test_baseline_take();
    pthread_t th[2];
    CHECK_EQ(pthread_create(&th[0], NULL, runtime_thread, PTR_OF(2)), 0);
    CHECK_EQ(pthread_create(&th[1], NULL, runtime_thread, PTR_OF(3)), 0);
    for (int i = 0; i < 2; i++) {
        void *r;
        CHECK_EQ(pthread_join(th[i], &r), 0);
        CHECK_EQ(INT_OF(r), 0);
    }
    CHECK_NO_LEAKS(base);
}

/* ---- the debuggers' list of running runtimes ----
 *
 * The watchdog's dump and tools/gdb/corio.py walk corio__debug_runtimes:
 * a runtime is on it while it runs and off it once corio_run returns,
 * or the next dump reads freed memory. */

static void *main_on_debug_list(void *arg)
{
    corio__runtime *me = corio__loop_current()->rt;
    bool found = false;
    for (corio__runtime *rt = corio__debug_runtimes; rt; rt = rt->debug_next)
        found |= rt == me;
    CHECK(found);
    return PTR_OF(corio_loop_count());
}

static void dump_to(char *buf, size_t size)
{
    FILE *f = tmpfile();
    CHECK(f != NULL);
    corio__debug_dump(fileno(f));
    rewind(f);
    size_t n = fread(buf, 1, size - 1, f);
    buf[n] = '\0';
    fclose(f);
}

TEST(debug_list_follows_runtimes)
{
    clear_env();
    char buf[4096];
    dump_to(buf, sizeof buf);
    CHECK_STR_CONTAINS(buf, "no corio runtime is running");
    for (unsigned i = 0; i < 3; i++) {
        CHECK_EQ(INT_OF(run_main_checked(1 + i, main_on_debug_list, NULL)), 1 + i);
        CHECK(corio__debug_runtimes == NULL);
    }
    dump_to(buf, sizeof buf);
    CHECK_STR_CONTAINS(buf, "no corio runtime is running");
}

/* The watchdog dumps a hung test whose loops need not have stopped: one
 * may be stuck while the others keep starting and ending tasks. A task
 * that ends under the dump's walk of a live list leaves it a run state
 * gone back with its stack (unmapped, for a stack not of the default
 * size) or, once its object is reused, a `run` that is an argument. */
static _Atomic bool churn_stop;

static void *churn_child(void *arg)
{
    corio_yield(); /* a few live at once */
    return arg;
}

/* Start and end tasks until told to stop, on stacks of `arg` bytes (0:
 * the default, pooled). */
static void *churn(void *arg)
{
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    o.stack_size = (size_t)INT_OF(arg);
    while (!atomic_load(&churn_stop)) {
        corio_task *t[8];
        for (int i = 0; i < 8; i++)
            CHECK_EQ(corio_spawn_ex(&t[i], churn_child, NULL, &o), 0);
        for (int i = 0; i < 8; i++)
            CHECK_EQ(corio_join(t[i], NULL), 0);
    }
    return NULL;
}

/* Dump over and over for 300 ms, then stop the churn. */
static void *dump_repeatedly(void *arg)
{
    int fd = open("/dev/null", O_WRONLY);
    CHECK(fd >= 0);
    corio_time_t end = corio_now() + 300 * CORIO_MSEC;
    unsigned dumps = 0;
    while (corio_now() < end || dumps < 10) {
        corio__debug_dump(fd);
        dumps++;
    }
    close(fd);
    atomic_store(&churn_stop, true);
    return NULL;
}

static void *main_dumped_while_churning(void *arg)
{
    corio_task *t[2];
    CHECK_EQ(corio_spawn_on(&t[0], 0, churn, PTR_OF(0)), 0);
    CHECK_EQ(corio_spawn_on(&t[1], 1, churn, PTR_OF(96 * 1024)), 0);
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, dump_repeatedly, NULL), 0);
    for (int i = 0; i < 2; i++)
        CHECK_EQ(corio_join(t[i], NULL), 0);
    CHECK_EQ(pthread_join(th, NULL), 0); /* done: it stopped the churn */
    return NULL;
}

TEST(debug_dump_while_loops_run)
{
#ifdef TEST_TSAN
    fprintf(stderr, "   skipped under TSan: the dump reads the loops' fields "
                    "unsynchronised, by design\n");
    return;
#endif
    /* Seen in the arm64 lane: signal 11, as before the fix (qemu-aarch64
     * -strace: process_vm_readv = -1 ENOSYS). */
    TEST_SKIP_UNDER_QEMU("qemu-user does not implement process_vm_readv, so the dump falls back "
                         "to plain reads, which a task ending under the walk can fault");
    clear_env();
    run_main_checked(2, main_dumped_while_churning, NULL);
}

/* ---- the dump against runtimes starting and ending ----
 *
 * corio_run frees its runtime once it ends: a dump walking the list then
 * (from another thread, or from a signal handler on any thread) read
 * freed memory. Two threads start and end runtimes over and over while a
 * third dumps without pause and sends the starters SIGUSR1, whose handler
 * dumps too: on their own thread, a dump may land while that thread
 * changes the list (it must back off, not wait for itself). Under ASan
 * the walk's use of a freed runtime shows as heap-use-after-free. */
static _Atomic bool starters_stop;
static _Atomic unsigned runtimes_run, handler_dumps;
static int dump_null_fd = -1;

static void dump_on_signal(int sig)
{
    (void)sig;
    corio__debug_dump(dump_null_fd);
    atomic_fetch_add(&handler_dumps, 1);
}

static void *short_child(void *arg) { return arg; }

static void *main_short(void *arg)
{
    corio_task *t;
    CHECK_EQ(corio_spawn(&t, short_child, arg), 0);
    CHECK_EQ(corio_join(t, NULL), 0);
    return NULL;
}

static void *start_runtimes(void *arg)
{
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = (unsigned)INT_OF(arg);
    while (!atomic_load(&starters_stop)) {
        CHECK_OK(corio_run(&cfg, main_short, NULL, NULL));
        atomic_fetch_add(&runtimes_run, 1);
    }
    return NULL;
}

TEST(debug_dump_while_runtimes_start_and_end)
{
#ifdef TEST_TSAN
    fprintf(stderr, "   skipped under TSan: the dump reads the loops' fields "
                    "unsynchronised, by design\n");
    return;
#endif
    clear_env();
    test_baseline base = test_baseline_take();
    dump_null_fd = open("/dev/null", O_WRONLY);
    CHECK(dump_null_fd >= 0);
    /* On the signal stack where there is one, as the watchdog's: the
     * signal may land on a task's stack. SA_RESTART: the runtime's own
     * calls are not what this tests. Not under Valgrind (3.19): it keeps
     * a signal stack's address and size after sigaltstack(SS_DISABLE)
     * (sigaltstack(NULL, &now) still shows them) and goes on delivering
     * SA_ONSTACK signals there, so once a runtime has ended and unmapped
     * its loop's signal stack the next delivery fails ("Can't extend
     * stack ... no stack segment", SIGSEGV). Natively the restore is
     * sound (ASan lane: no fault in thousands of deliveries). */
    int on_stack = TEST_ON_VALGRIND() || test_under_valgrind() ? 0 : SA_ONSTACK;
    struct sigaction sa = {.sa_handler = dump_on_signal, .sa_flags = on_stack | SA_RESTART};
    struct sigaction old;
    sigemptyset(&sa.sa_mask);
    CHECK_EQ(sigaction(SIGUSR1, &sa, &old), 0);
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        CHECK_EQ(pthread_create(&th[i], NULL, start_runtimes, PTR_OF(1 + i)), 0);
    unsigned want = (unsigned)test_scaled(2000);
    unsigned dumps = 0;
    while (atomic_load(&runtimes_run) < want) {
        corio__debug_dump(dump_null_fd);
        if (++dumps % 4 == 0)
            CHECK_EQ(pthread_kill(th[dumps / 4 % 2], SIGUSR1), 0);
    }
    atomic_store(&starters_stop, true);
    for (int i = 0; i < 2; i++)
        CHECK_EQ(pthread_join(th[i], NULL), 0);
    CHECK_EQ(sigaction(SIGUSR1, &old, NULL), 0);
    close(dump_null_fd);
    fprintf(stderr, "   %u runtimes, %u dumps, %u from the handler\n", atomic_load(&runtimes_run),
            dumps, atomic_load(&handler_dumps));
    CHECK(atomic_load(&handler_dumps) > 0);
    CHECK(corio__debug_runtimes == NULL);
    CHECK_NO_LEAKS(base);
}

/* A dump that finds the list held (here by this very thread, as when the
 * watchdog's signal lands on a thread inside corio_run's start or end)
 * says so in a line and returns: it never waits, which in a handler on
 * the holding thread would be forever. */
static char handler_buf[4096];

static void dump_to_buf_on_signal(int sig)
{
    (void)sig;
    int p[2];
    if (pipe(p) != 0)
        return;
    corio__debug_dump(p[1]);
    close(p[1]);
    ssize_t n = read(p[0], handler_buf, sizeof handler_buf - 1);
    handler_buf[n > 0 ? n : 0] = '\0';
    close(p[0]);
}

TEST(debug_dump_backs_off_while_the_list_changes)
{
    clear_env();
    char buf[4096];
    corio__debug_list_lock();
    dump_to(buf, sizeof buf);
    CHECK_STR_CONTAINS(buf, "runtime list busy");
    struct sigaction sa = {.sa_handler = dump_to_buf_on_signal}, old;
    sigemptyset(&sa.sa_mask);
    CHECK_EQ(sigaction(SIGUSR1, &sa, &old), 0);
    CHECK_EQ(raise(SIGUSR1), 0);
    CHECK_EQ(sigaction(SIGUSR1, &old, NULL), 0);
    CHECK_STR_CONTAINS(handler_buf, "runtime list busy");
    corio__debug_list_unlock();
    dump_to(buf, sizeof buf);
    CHECK_STR_CONTAINS(buf, "no corio runtime is running");
}

/* A handler must leave errno as it found it: the dump's writes fail here
 * (a closed descriptor), and the code the watchdog's signal interrupted
 * may be about to read errno. */
TEST(debug_dump_keeps_errno)
{
    clear_env();
    int fd = open("/dev/null", O_WRONLY);
    CHECK(fd >= 0);
    close(fd);
    errno = ERANGE;
    corio__debug_dump(fd);
    CHECK_EQ(errno, ERANGE);
}

/* The dump's lines, built by hand since the printf family is not
 * async-signal-safe, read exactly as the snprintf formats they replace
 * (tools and people read them): each parses back with that format, to
 * the last character. */
static void *main_dump_parses(void *arg)
{
    corio_task *t;
    CHECK_EQ(corio_spawn(&t, churn_child, NULL), 0); /* a task waiting */
    char buf[16384];
    dump_to(buf, sizeof buf);
    CHECK_EQ(corio_join(t, NULL), 0);
    unsigned runtimes = 0, loops = 0, tasks = 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        int end = -1;
        unsigned u;
        int d;
        size_t z;
        unsigned long long llu;
        long long lld;
        char s1[32], s2[32], s3[64];
        if (strncmp(line, "runtime ", 8) == 0) {
            sscanf(line, "runtime %u: %u loops, stopping %d, active loops %u, parked %d, "
                         "searching %d%n",
                   &u, &u, &d, &u, &d, &d, &end);
            runtimes++;
        } else if (strncmp(line, "  loop ", 7) == 0) {
            sscanf(line,
                   "  loop %u: parked %d stopping %d live %zu joining %zu ready %zu runq %zu "
                   "roam %zu inbox %31s current %llu tick %u queue_picks %zu light_stalled %zu "
                   "timers armed %zu, next in %lld us%n",
                   &u, &d, &d, &z, &z, &z, &z, &z, s1, &llu, &u, &z, &z, &z, &lld, &end);
            loops++;
        } else if (strncmp(line, "    task ", 9) == 0) {
            sscanf(line, "    task %llu: %31[^,], waits on %63[^,], wait word %31s (gen %llu), "
                         "flags 0x%x%n",
                   &llu, s1, s3, s2, &llu, &u, &end);
            if (end >= 0 && line[end] == ',') /* ", cancelled for good" */
                end = strcmp(line + end, ", cancelled for good") == 0 ? (int)strlen(line) : -1;
            tasks++;
        }
        if (end != (int)strlen(line))
            FAIL_("dump line does not read as its format: \"%s\"", line);
    }
    CHECK_EQ(runtimes, 1);
    CHECK_EQ(loops, 2);
    CHECK(tasks >= 1); /* main, at least (the child may not have started) */
    return arg;
}

TEST(debug_dump_lines_read_as_before)
{
    clear_env();
#ifdef TEST_TSAN
    /* As the other dump tests: a dump of running loops reads their
     * fields unsynchronised, by design (a race TSan reported once in a
     * lane run: the loop's tick). The formatter below still runs. */
    fprintf(stderr, "   live dump skipped under TSan: it reads the loops' fields "
                    "unsynchronised, by design\n");
    (void)main_dump_parses;
#else
    run_main_checked(2, main_dump_parses, NULL);
#endif
    /* The formatter against snprintf at the edges of each form. */
    static const int64_t values[] = {0, 1, 9, 10, 99, 100, -1, -10, INT64_MAX, INT64_MIN,
                                     (int64_t)UINT32_MAX, 1234567890123};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char got[64], want[64];
        corio__sigfmt f = corio__sigfmt_on(got, sizeof got);
        corio__sigfmt_i64(&f, values[i]);
        corio__sigfmt_str(&f, " ");
        corio__sigfmt_u64(&f, (uint64_t)values[i]);
        corio__sigfmt_str(&f, " ");
        corio__sigfmt_hex(&f, (uint64_t)values[i]);
        got[f.len] = '\0';
        snprintf(want, sizeof want, "%lld %llu %llx", (long long)values[i],
                 (unsigned long long)values[i], (unsigned long long)values[i]);
        CHECK_STR_EQ(got, want);
    }
    /* Cut as snprintf cuts: cap - 1 bytes. */
    char small[8];
    corio__sigfmt f = corio__sigfmt_on(small, sizeof small);
    corio__sigfmt_str(&f, "abc ");
    corio__sigfmt_u64(&f, 123456);
    small[f.len] = '\0';
    CHECK_STR_EQ(small, "abc 123");
}

/* ---- the dump against a loop's timer arrays moving ----
 *
 * A loop grows its timer arrays (heap and sorted run) by realloc or
 * mremap, which may move them and unmap the old pages; a dump on another
 * thread that read the array's pointer just before then read its first
 * entry from pages that are gone. The window is a few instructions wide,
 * so the test makes it wide open: from a task of a one-loop runtime (the
 * loop's own thread, so nothing else touches its timers meanwhile) it
 * points each array in turn at pages that cannot be read, as a moved
 * array's old pages, and dumps. A plain read of the entry faulted
 * (signal 11); the dump must say the time is unknown instead. */
static void *main_dump_with_timer_arrays_gone(void *arg)
{
    (void)arg;
    corio__loop *l = corio__loop_current();
    long page = sysconf(_SC_PAGESIZE);
    void *gone = mmap(NULL, (size_t)page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(gone != MAP_FAILED);
    corio__timers saved = l->timers;
    char buf[4096];
    /* The heap's pages gone. */
    l->timers.heap = gone;
    l->timers.len = 1;
    l->timers.run_len = 0;
    dump_to(buf, sizeof buf);
    l->timers = saved;
    CHECK_STR_CONTAINS(buf, "  loop 0: ");
    CHECK_STR_CONTAINS(buf, ", next in ? us\n");
    /* The run's pages gone. */
    l->timers.len = 0;
    l->timers.run = gone;
    l->timers.run_head = 0;
    l->timers.run_len = 1;
    l->timers.run_cap = 1;
    dump_to(buf, sizeof buf);
    l->timers = saved;
    CHECK_STR_CONTAINS(buf, ", next in ? us\n");
    /* As before with the arrays in place. */
    dump_to(buf, sizeof buf);
    CHECK_STR_CONTAINS(buf, ", next in -1 us\n");
    CHECK_EQ(munmap(gone, (size_t)page), 0);
    return NULL;
}

TEST(debug_dump_survives_timer_arrays_moving)
{
    clear_env();
    TEST_SKIP_UNDER_QEMU("qemu-user does not implement process_vm_readv, so the dump falls back "
                         "to plain reads, which pages that are gone fault");
    run_main_checked(1, main_dump_with_timer_arrays_gone, NULL);
}

/* ---- pinning ---- */

static int nth_allowed_cpu(unsigned n)
{
    cpu_set_t set;
    CHECK_EQ(sched_getaffinity(0, sizeof set, &set), 0);
    unsigned seen = 0;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set) && seen++ == n)
            return c;
    return -1;
}

static int expected_cpu[8];
/* The process's CPUs, taken before corio_run: inside the runtime the
 * calling thread is loop 0, pinned to one CPU, so sched_getaffinity there
 * says 1. */
static cpu_set_t process_cpus;
static unsigned process_ncpu;

/* The CPU the loop runs on, checked against its thread's affinity mask:
 * exactly its CPU when pinned, the process's CPUs when not (a loop
 * beyond the CPUs). The mask says so whatever the scheduler does; the CPU
 * it happens to be on could match by chance. */
static void *report_cpu(void *arg)
{
    int loop = corio_loop_index();
    cpu_set_t mine;
    if (sched_getaffinity(0, sizeof mine, &mine) != 0)
        return PTR_OF(-4);
    if (expected_cpu[loop] >= 0) {
        if (CPU_COUNT(&mine) != 1 || !CPU_ISSET(expected_cpu[loop], &mine))
            return PTR_OF(-2);
    } else if (!CPU_EQUAL(&mine, &process_cpus)) {
        return PTR_OF(-3);
    }
    for (int i = 0; i < 3; i++) {
        if (expected_cpu[loop] >= 0 && sched_getcpu() != expected_cpu[loop])
            return PTR_OF(-1);
        corio_sleep(100 * CORIO_USEC);
    }
    return PTR_OF(sched_getcpu());
}

static void *main_pinned(void *arg)
{
    unsigned n = corio_loop_count();
    corio_task *t[8];
    for (unsigned l = 0; l < n; l++)
        CHECK_OK(corio_spawn_on(&t[l], l, report_cpu, NULL));
    void *res[8];
    CHECK_OK(corio_gather(t, n, res));
    for (unsigned l = 0; l < n; l++) {
        if (l < process_ncpu)
            CHECK_EQ(INT_OF(res[l]), expected_cpu[l]);
        else /* loops beyond the CPUs run unpinned */
            CHECK_GE(INT_OF(res[l]), 0);
    }
    return PTR_OF(n);
}

static void pinned_run(unsigned loops, bool by_env)
{
    CHECK_EQ(sched_getaffinity(0, sizeof process_cpus, &process_cpus), 0);
    process_ncpu = (unsigned)CPU_COUNT(&process_cpus);
    for (unsigned l = 0; l < 8; l++)
        expected_cpu[l] = l < cpus_allowed() ? nth_allowed_cpu(l) : -1;
    cpu_set_t before, after;
    CHECK_EQ(sched_getaffinity(0, sizeof before, &before), 0);
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = loops;
    if (by_env)
        setenv("CORIO_PIN", "1", 1);
    else
        cfg.pin_cpus = true;
    CHECK_EQ(INT_OF(run_main_cfg(&cfg, main_pinned, NULL)), loops);
    clear_env();
    /* The caller's thread gets its affinity back. */
    CHECK_EQ(sched_getaffinity(0, sizeof after, &after), 0);
    CHECK(CPU_EQUAL(&before, &after));
}

/* Pinning is for the loops. A blocking-pool thread started by a pinned
 * loop inherited that loop's one CPU, so every blocking call made from
 * that loop competed with it for its CPU while the others idled: the
 * pool's threads keep the CPUs the process had. (The mask, not the CPU
 * they happen to run on.) */
static void *pool_thread_cpus_ok(void *arg)
{
    cpu_set_t mine;
    if (sched_getaffinity(0, sizeof mine, &mine) != 0)
        return PTR_OF(-1);
    return PTR_OF(CPU_EQUAL(&mine, &process_cpus) ? 1 : 0);
}

static void *pool_call_here(void *arg)
{
    void *ok = NULL;
    int rc = corio_run_blocking(pool_thread_cpus_ok, NULL, &ok);
    return rc ? PTR_OF(rc) : ok;
}

static void *main_pool_cpus(void *arg)
{
    unsigned n = corio_loop_count();
    corio_task *t[8];
    for (unsigned l = 0; l < n; l++)
        CHECK_OK(corio_spawn_on(&t[l], l, pool_call_here, NULL));
    void *res[8];
    CHECK_OK(corio_gather(t, n, res));
    for (unsigned l = 0; l < n; l++)
        CHECK_EQ(INT_OF(res[l]), 1);
    return NULL;
}

TEST(blocking_pool_not_pinned)
{
    clear_env();
    CHECK_EQ(sched_getaffinity(0, sizeof process_cpus, &process_cpus), 0);
    TEST_SKIP_IF(CPU_COUNT(&process_cpus) < 2, "on one CPU", "pinned and unpinned look alike");
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = CPU_COUNT(&process_cpus) < 8 ? (unsigned)CPU_COUNT(&process_cpus) : 8;
    cfg.pin_cpus = true;
    run_main_cfg(&cfg, main_pool_cpus, NULL);
}

/* On/off variables take 1 or 0: "true" or "no" must not silently mean
 * the default. */
TEST(bad_flags)
{
    clear_env();
    const char *bad[] = {"true", "no", "2", " 1", "1 ", "-1", "on"};
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = 2;
    expect_rejected("CORIO_PIN", bad, sizeof bad / sizeof bad[0], &cfg);
    clear_env();
    expect_rejected("CORIO_HUGE_PAGES", bad, sizeof bad / sizeof bad[0], &cfg);
    clear_env();
    const char *good[] = {"0", "1", ""};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        void *r = NULL;
        setenv("CORIO_PIN", good[i], 1);
        setenv("CORIO_HUGE_PAGES", good[i], 1);
        CHECK_OK(run_cfg(&cfg, report_loops, &r));
        CHECK_EQ(INT_OF(r), 2);
    }
    clear_env();
}

TEST(pin_cpus)
{
    clear_env();
    unsigned ncpu = cpus_allowed();
    pinned_run(ncpu < 8 ? (ncpu < 2 ? 2 : ncpu) : 8, false);
    pinned_run(2, true);
    /* More loops than CPUs: the extra loops run unpinned. */
    if (ncpu + 2 <= 8)
        pinned_run(ncpu + 2, false);
}

int main(int argc, char **argv)
{
    RUN(loops_from_environment);
    RUN(bad_loops);
    RUN(stack_size_from_environment);
    RUN(stack_retention_from_environment);
    RUN(misuse);
    RUN(runtimes_one_after_another);
    RUN(runtimes_side_by_side);
    RUN(debug_list_follows_runtimes);
    RUN(debug_dump_while_loops_run);
    RUN(debug_dump_while_runtimes_start_and_end);
    RUN(debug_dump_backs_off_while_the_list_changes);
    RUN(debug_dump_keeps_errno);
    RUN(debug_dump_lines_read_as_before);
    RUN(debug_dump_survives_timer_arrays_moving);
    RUN(pin_cpus);
    RUN(blocking_pool_not_pinned);
    RUN(bad_flags);
    return test_summary();
}
