/*
 * test.h: the little test harness every test file uses.
 *
 * Typed asserts print both sides and where they failed, then abort: a
 * failing test dies with a message, never limps on. Each test file is its
 * own program (CTest runs each as a process with a timeout) made of
 * TEST(name) functions listed in main() with RUN(name); main ends with
 * `return test_summary();`.
 *
 * Each RUN forks: the test runs in a child process of its own, so one
 * failing or hanging test does not hide the results of the others, and no
 * test inherits another's state. The parent only starts children (it never
 * runs a runtime itself, so fork is safe). The file fails if any test did.
 *
 *   ./test_foo               run every test of the file
 *   ./test_foo name...       run only the named tests
 *   CORIO_TEST_NOFORK=1      run in-process (for gdb); stops at the first
 *                            failure
 *   CORIO_TEST_WATCHDOG=<s>  a test that runs longer is killed with its
 *                            name on stderr (default 45 s times the
 *                            slowness below; 0: never)
 *   CORIO_TEST_SCALE=<n>     divide iteration counts by n (test_scaled)
 *   CORIO_TEST_SLOW=<f>      stretch upper time bounds by f (1: x20), for
 *                            lanes that run the binaries slowly (Valgrind,
 *                            qemu); sanitizer builds stretch on their own
 *
 * Timing checks use tolerances (CHECK_ELAPSED_WITHIN), never exact values:
 * the machines running this are shared and noisy. No check may depend on
 * which thread wins a race or on a thread running within some time: hold
 * the other loop with a spinning pinned task, wait for the event itself,
 * retry a late sample (docs/RELIABILITY.md, "Tests that do not depend on
 * luck").
 */
#ifndef CORIO_TEST_H
#define CORIO_TEST_H

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "corio.h"
#include "debug.h" /* the watchdog's dump */
#include "thread_probe.h" /* test_loop_thread_sleeps */

/* ---- sanitizer lanes ---------------------------------------------------- */

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TEST_TSAN 1
#endif
#endif
#if defined(TEST_ASAN) || defined(TEST_TSAN)
#define TEST_SANITIZED 1
#endif

/* Running under Valgrind? (valgrind.h's macro is free outside it.) */
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define TEST_ON_VALGRIND() ((bool)RUNNING_ON_VALGRIND)
#endif
#endif
#ifndef TEST_ON_VALGRIND
#define TEST_ON_VALGRIND() false
#endif

/* How much slower than RelWithDebInfo a lane runs, for upper bounds on
 * times (lateness, "promptly"); never used for lower bounds. Sanitizer
 * builds know it at compile time; lanes that run the same binaries slowly
 * (Valgrind, qemu) say so with CORIO_TEST_SLOW: 1 means "slow" (x20), a
 * larger number is the factor itself. */
#if defined(TEST_TSAN)
#define TEST_SLOW_BUILD 10
#elif defined(TEST_ASAN)
#define TEST_SLOW_BUILD 3
#else
#define TEST_SLOW_BUILD 1
#endif

static inline long test_slow(void)
{
    const char *s = getenv("CORIO_TEST_SLOW");
    long f = s ? atol(s) : 0;
    if (f == 1)
        f = 20;
    return f > TEST_SLOW_BUILD ? f : TEST_SLOW_BUILD;
}
#define TEST_SLOW test_slow()

/* Whether the lane running us set this CORIO_TEST_* flag (scripts/test.sh). */
static inline int test_lane_flag(const char *name)
{
    const char *s = getenv(name);
    return s && *s && strcmp(s, "0") != 0;
}

/* The Valgrind lane: Valgrind runs one thread at a time and manages the
 * descriptor table itself, so the few checks that measure exactly those
 * are skipped there, each saying why. */
static inline int test_under_valgrind(void) { return test_lane_flag("CORIO_TEST_VALGRIND"); }

/* The arm64 lane: the programs run under qemu-user, which emulates
 * neither MADV_GUARD_INSTALL guard pages nor RLIMIT_AS for its guest. */
static inline int test_under_qemu(void) { return test_lane_flag("CORIO_TEST_QEMU"); }

/* End the current TEST early, saying where and why it does not apply. */
#define TEST_SKIP_IF(cond, where, why)                                          \
    do {                                                                        \
        if (cond) {                                                             \
            fprintf(stderr, "   skipped %s: %s\n", where, why);               \
            return;                                                             \
        }                                                                       \
    } while (0)

#define TEST_SKIP_UNDER_QEMU(why) TEST_SKIP_IF(test_under_qemu(), "under qemu-user", why)
#define TEST_SKIP_UNDER_VALGRIND(why) TEST_SKIP_IF(test_under_valgrind(), "under Valgrind", why)

#define TEST(name) static void test_##name(void)
#define RUN(name) test_run_one(#name, test_##name, argc, argv)

/* ---- watchdog ------------------------------------------------------------ */

static const char *test_current_name;
/* Extra context the watchdog prints (e.g. the iteration that hung). */
static char test_watchdog_note[128];

static void test_watchdog_fire(int sig)
{
    (void)sig;
    static const char msg[] = "\nwatchdog: test hung: ";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    if (test_current_name)
        w = write(STDERR_FILENO, test_current_name, strlen(test_current_name));
    if (test_watchdog_note[0]) {
        w = write(STDERR_FILENO, " (", 2);
        w = write(STDERR_FILENO, test_watchdog_note,
                  strnlen(test_watchdog_note, sizeof test_watchdog_note));
        w = write(STDERR_FILENO, ")", 1);
    }
    w = write(STDERR_FILENO, "\n", 1);
    (void)w;
    /* What every loop and task was doing: a hang seen once in thousands
     * of runs leaves its record in the lane's log (src/debug.h). */
    corio__debug_dump(STDERR_FILENO);
    signal(SIGABRT, SIG_DFL);
    abort();
}

static inline void test_watchdog_arm(const char *name)
{
    test_current_name = name;
    test_watchdog_note[0] = '\0';
    if (!name) {
        alarm(0);
        return;
    }
    const char *s = getenv("CORIO_TEST_WATCHDOG");
    long secs = s ? atol(s) : 45 * test_slow();
    if (secs <= 0)
        return;
    /* On the signal stack where the thread has one (loop threads do): the
     * alarm may land on a small task stack, where the dump would overflow
     * it and be reported as that task's overflow. */
    struct sigaction sa = {.sa_handler = test_watchdog_fire, .sa_flags = SA_ONSTACK};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    alarm((unsigned)secs);
}

/* ---- running tests ------------------------------------------------------- */

static int test_ran, test_failed;
static char test_failed_names[1024];

static void test_run_one(const char *name, void (*fn)(void), int argc, char **argv)
{
    if (argc > 1) {
        bool wanted = false;
        for (int i = 1; i < argc; i++)
            wanted |= strcmp(argv[i], name) == 0;
        if (!wanted)
            return;
    }
    fprintf(stderr, "-- %s\n", name);
    test_ran++;
    const char *nofork = getenv("CORIO_TEST_NOFORK");
    if (nofork && *nofork && strcmp(nofork, "0") != 0) {
        test_watchdog_arm(name);
        fn();
        test_watchdog_arm(NULL);
        return;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(2);
    }
    if (pid == 0) {
        test_watchdog_arm(name);
        fn();
        test_watchdog_arm(NULL);
        fflush(stdout);
        fflush(stderr);
        _exit(0);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            perror("waitpid");
            exit(2);
        }
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return;
    if (WIFSIGNALED(status))
        fprintf(stderr, "-- %s FAILED (signal %d: %s)\n", name, WTERMSIG(status),
                strsignal(WTERMSIG(status)));
    else
        fprintf(stderr, "-- %s FAILED (exit status %d)\n", name, WEXITSTATUS(status));
    test_failed++;
    size_t len = strlen(test_failed_names);
    snprintf(test_failed_names + len, sizeof test_failed_names - len, " %s", name);
}

/* The end of every test file's main(). */
static inline int test_summary(void)
{
    if (test_failed) {
        fprintf(stderr, "== %d of %d tests FAILED:%s\n", test_failed, test_ran,
                test_failed_names);
        return 1;
    }
    fprintf(stderr, "== all %d tests passed\n", test_ran);
    return test_ran > 0 ? 0 : 1;
}

#define FAIL_(fmt, ...)                                                         \
    do {                                                                        \
        fprintf(stderr, "%s:%d: " fmt "\n", __FILE__, __LINE__, __VA_ARGS__);  \
        fflush(stderr);                                                         \
        abort();                                                                \
    } while (0)

#define CHECK(cond)                                                             \
    do {                                                                        \
        if (!(cond))                                                            \
            FAIL_("check failed: %s", #cond);                                  \
    } while (0)

#define CHECK_INT_(a, op, b)                                                    \
    do {                                                                        \
        long long a_ = (long long)(a), b_ = (long long)(b);                     \
        if (!(a_ op b_))                                                        \
            FAIL_("check failed: %s %s %s (%lld vs %lld)", #a, #op, #b, a_, b_); \
    } while (0)
#define CHECK_EQ(a, b) CHECK_INT_(a, ==, b)
#define CHECK_NE(a, b) CHECK_INT_(a, !=, b)
#define CHECK_LT(a, b) CHECK_INT_(a, <, b)
#define CHECK_LE(a, b) CHECK_INT_(a, <=, b)
#define CHECK_GT(a, b) CHECK_INT_(a, >, b)
#define CHECK_GE(a, b) CHECK_INT_(a, >=, b)

#define CHECK_PTR_EQ(a, b)                                                      \
    do {                                                                        \
        const void *a_ = (a), *b_ = (b);                                        \
        if (a_ != b_)                                                           \
            FAIL_("check failed: %s == %s (%p vs %p)", #a, #b, a_, b_);        \
    } while (0)

/* A corio call that must return 0; prints the error's name otherwise. */
#define CHECK_OK(expr)                                                          \
    do {                                                                        \
        int rc_ = (expr);                                                       \
        if (rc_ != 0)                                                           \
            FAIL_("%s returned %s (%s)", #expr, corio_err_name(rc_),           \
                  corio_strerror(rc_));                                         \
    } while (0)

/* A corio call that must fail with a given error. */
#define CHECK_ERR(expr, err)                                                    \
    do {                                                                        \
        int rc_ = (expr);                                                       \
        if (rc_ != (err))                                                       \
            FAIL_("%s returned %s, expected %s", #expr, corio_err_name(rc_),   \
                  corio_err_name(err));                                         \
    } while (0)

/* Time thread `tid` of this process has spent runnable but waiting for a
 * CPU (schedstat's run_delay), or -1 where the kernel does not say. */
static inline int64_t test_run_delay_ns(pid_t tid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/schedstat", (int)tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    unsigned long long ran, waited;
    int n = fscanf(f, "%llu %llu", &ran, &waited);
    fclose(f);
    return n == 2 ? (int64_t)waited : -1;
}

/* test_run_delay_ns(tid) gained since it read `before` (-1: unknown). */
static inline int64_t test_run_delay_since(pid_t tid, int64_t before)
{
    int64_t now = test_run_delay_ns(tid);
    return before < 0 || now < 0 ? -1 : now - before;
}

/*
 * A stopwatch for a wait that ends at a deadline, on the thread that
 * started it (a task's loop thread: a started task stays on its loop).
 * Lateness the host caused is not the library's: the time that thread
 * spent runnable but waiting for a CPU meanwhile (run_delay) is added to
 * the allowance of CHECK_ELAPSED_WITHIN. A shared 2-vCPU VM can keep a
 * thread off the CPU for 100 ms and more; a fixed allowance that covers
 * that would no longer catch a deadline fired a tick late.
 */
typedef struct {
    corio_time_t t0;
    pid_t tid;
    int64_t waited0; /* the thread's run_delay at t0, -1: unknown */
} test_stopwatch;

static inline test_stopwatch test_stopwatch_start(void)
{
    test_stopwatch sw;
    sw.tid = (pid_t)syscall(SYS_gettid); /* gettid(3) wants _GNU_SOURCE */
    sw.waited0 = test_run_delay_ns(sw.tid);
    sw.t0 = corio_now();
    return sw;
}

/* How long the stopwatch's thread has waited for a CPU since it started
 * (0 where the kernel does not say). */
static inline int64_t test_stopwatch_waited(const test_stopwatch *sw)
{
    int64_t waited = test_run_delay_since(sw->tid, sw->waited0);
    return waited < 0 ? 0 : waited;
}

/* The time since sw started must lie in [expected - early, expected +
 * late + the time sw's thread waited for a CPU meanwhile]; `late`
 * stretches by TEST_SLOW in sanitizer lanes, `early` never does. */
#define CHECK_ELAPSED_WITHIN(sw, expected, early, late)                         \
    do {                                                                        \
        long long e_ = (long long)(corio_now() - (sw)->t0);                     \
        long long w_ = (long long)test_stopwatch_waited(sw);                    \
        long long x_ = (long long)(expected);                                   \
        long long l_ = (long long)(late) * TEST_SLOW + w_;                      \
        if (e_ < x_ - (long long)(early) || e_ > x_ + l_)                       \
            FAIL_("elapsed %.3f ms, expected %.3f ms (-%.3f/+%.3f, of "         \
                  "which %.3f the thread waited for a CPU)",                    \
                  e_ / 1e6, x_ / 1e6, (early) / 1e6, l_ / 1e6, w_ / 1e6);       \
    } while (0)

/* Run fn as the main task of a runtime with `loops` loops; returns its
 * result. Fails the test if corio_run fails. */
static inline void *run_main(unsigned loops, corio_fn fn, void *arg)
{
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = loops;
    void *result = NULL;
    CHECK_OK(corio_run(&cfg, fn, arg, &result));
    return result;
}

/* Descriptors of this process whose /proc/self/fd link names `kind`
 * ("signalfd", "pidfd": anonymous inodes read as "anon_inode:[kind]").
 * By kind, since other descriptors come and go with the runtime's own
 * work (/proc files read by its thread probes). */
static inline int test_open_fds_of_kind(const char *kind)
{
    DIR *d = opendir("/proc/self/fd");
    CHECK(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[300], target[64];
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(path, target, sizeof target - 1);
        if (len > 0) {
            target[len] = '\0';
            n += strstr(target, kind) != NULL;
        }
    }
    closedir(d);
    return n;
}

/* Scale iteration counts down in slow lanes (sanitizers, Valgrind):
 * CORIO_TEST_SCALE=10 divides them by ten. */
static inline long test_scaled(long n)
{
    const char *s = getenv("CORIO_TEST_SCALE");
    long div = s ? atol(s) : 1;
    if (div < 1)
        div = 1;
    long r = n / div;
    return r > 0 ? r : 1;
}

/* test_scaled() for a count of tasks started: TSan makes a fiber per task
 * start, a 768 KiB memset, so its lane runs a fortieth on top of
 * CORIO_TEST_SCALE. A tenth had been enough where a fiber took ~250 us (a
 * million starts took 230 s of a 600 s timeout); on the AMD VM, where a
 * fresh page costs ~17 us to fault in, a fiber took ~3 ms and
 * test_stress's 100,000 starts alone outlasted that timeout. */
static inline long test_scaled_starts(long n)
{
#ifdef TEST_TSAN
    n /= 40;
#endif
    return test_scaled(n);
}

/* ---- more asserts ------------------------------------------------------- */

#define CHECK_STR_EQ(a, b)                                                      \
    do {                                                                        \
        const char *a_ = (a), *b_ = (b);                                        \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                  \
            FAIL_("check failed: %s == %s (\"%s\" vs \"%s\")", #a, #b,         \
                  a_ ? a_ : "(null)", b_ ? b_ : "(null)");                     \
    } while (0)

#define CHECK_STR_CONTAINS(hay, needle)                                         \
    do {                                                                        \
        const char *h_ = (hay), *n_ = (needle);                                 \
        if (!h_ || !strstr(h_, n_))                                             \
            FAIL_("check failed: %s contains \"%s\"; it is:\n%s", #hay, n_,     \
                  h_ ? h_ : "(null)");                                          \
    } while (0)

/* ---- leak accounting (src/sys.h) ---------------------------------------- */

#include "sys.h"

/* What the library holds before a runtime starts; after corio_run returns
 * it must hold exactly that again. */
typedef struct test_baseline {
    int64_t allocs, maps;
} test_baseline;

static inline test_baseline test_baseline_take(void)
{
    test_baseline b = {corio__live_allocs(), corio__live_maps()};
    return b;
}

#define CHECK_NO_LEAKS(base)                                                    \
    do {                                                                        \
        CHECK_EQ(corio__live_allocs(), (base).allocs);                          \
        CHECK_EQ(corio__live_maps(), (base).maps);                              \
    } while (0)

/* run_main with a full configuration; also checks that the runtime leaves
 * no allocation or mapping behind. */
static inline void *run_main_cfg(const corio_config *cfg, corio_fn fn, void *arg)
{
    test_baseline base = test_baseline_take();
    void *result = NULL;
    CHECK_OK(corio_run(cfg, fn, arg, &result));
    CHECK_NO_LEAKS(base);
    return result;
}

/* run_main plus the leak check. */
static inline void *run_main_checked(unsigned loops, corio_fn fn, void *arg)
{
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = loops;
    return run_main_cfg(&cfg, fn, arg);
}

/* Main for tests that hold loop 1 with a spinner and need their body on
 * loop 0: an idle loop may take main itself before it starts (corio.h),
 * so main runs body->fn(body->arg) there and joins it. */
struct test_on_loop_0 {
    corio_fn fn;
    void *arg;
};

static inline void *test_main_on_loop_0(void *arg)
{
    const struct test_on_loop_0 *body = arg;
    corio_task *t;
    CHECK_OK(corio_spawn_on(&t, 0, body->fn, body->arg));
    void *result = NULL;
    CHECK_OK(corio_join(t, &result));
    return result;
}

/* ---- small helpers ------------------------------------------------------ */

/* From a task: sleep in 1 ms steps until *value >= at_least, for at
 * most 10 s; whether it got there. For waiting on another task's
 * progress, which a fixed sleep only guesses at (a task that starts late
 * made such guesses hang or fail). */
static inline bool test_await(_Atomic int *value, int at_least)
{
    corio_time_t give_up = corio_deadline_in(10 * CORIO_SEC);
    while (atomic_load(value) < at_least && corio_now() < give_up)
        if (corio_sleep(CORIO_MSEC) != 0)
            return false;
    return atomic_load(value) >= at_least;
}

/* The task that does nothing: returns its argument. */
static inline void *test_ret_arg(void *arg) { return arg; }

/* From a task: a connected TCP pair on loopback, sv[0] the client and
 * sv[1] the server (the listener is closed again). TCP is the one kind of
 * descriptor where a short read lets the next read skip its system call
 * (src/io.c), so tests of that shortcut need it. */
static inline void test_tcp_pair(int sv[2])
{
    int l = corio_listen_tcp("127.0.0.1", 0, 4, 0);
    CHECK_GE(l, 0);
    int port = corio_local_port(l);
    CHECK_GT(port, 0);
    sv[0] = corio_connect_tcp("127.0.0.1", (uint16_t)port, corio_deadline_in(10 * CORIO_SEC));
    CHECK_GE(sv[0], 0);
    sv[1] = corio_accept_until(l, NULL, NULL, corio_deadline_in(10 * CORIO_SEC));
    CHECK_GE(sv[1], 0);
    CHECK_OK(corio_close(l));
}

/* Whether a listener's accept queue is full, so that the kernel drops a
 * new SYN: for a listening socket TCP_INFO gives the queue's length in
 * tcpi_unacked and its limit in tcpi_sacked. A limit of 0 means no
 * figures came back (under qemu-user, which does not translate
 * TCP_INFO): a connect's timeout is then taken at its word. */
static inline bool test_accept_queue_full(int listener)
{
    struct tcp_info ti = {0};
    socklen_t len = sizeof ti;
    if (getsockopt(listener, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 || ti.tcpi_sacked == 0)
        return true;
    return ti.tcpi_unacked > ti.tcpi_sacked;
}

/* From a task: register fd with the task's loop, as a descriptor a task
 * has read before, by a read that has to wait (and times out at once):
 * only then does the loop keep what reads and edges told it. */
static inline void test_register_fd(int fd)
{
    char buf[1];
    CHECK_ERR((int)corio_read_until(fd, buf, sizeof buf, corio_now()), CORIO_ETIMEDOUT);
}

/* A loop's thread, as tests that prove a loop sleeps instead of spinning
 * see it: fill one by running test_note_loop_thread on that loop. */
struct test_loop_thread {
    pid_t tid;
    clockid_t clock;
};

static inline void *test_note_loop_thread(void *arg)
{
    struct test_loop_thread *lt = arg;
    lt->tid = corio__thread_probe_self(&lt->clock);
    return NULL;
}

/* From a task: whether lt's thread is seen not runnable (asleep in the
 * kernel) before `within` ns have passed, sampled every millisecond. A
 * loop that keeps its CPU (a task that only yields, a scheduler that
 * retries at once) stays runnable and is never seen so; no timing is
 * judged, only the thread's state. */
static inline bool test_loop_thread_sleeps(const struct test_loop_thread *lt, int64_t within)
{
    corio_time_t give_up = corio_deadline_in(within);
    corio__thread_probe s;
    while (corio_now() < give_up) {
        CHECK(corio__thread_probe_read(lt->tid, lt->clock, &s));
        if (!s.runnable)
            return true;
        CHECK_OK(corio_sleep(CORIO_MSEC));
    }
    return false;
}

/* A task that holds its loop's thread until released, by a plain
 * handshake with no corio call, so no cancellation ends it: what a group
 * close must wait for whatever happens to its own waits. Gives up after
 * `patience` ns so a failing test still ends. */
struct test_thread_hold {
    _Atomic int started, release;
    int64_t patience;
};

static inline int test_thread_held(void *arg)
{
    struct test_thread_hold *h = arg;
    atomic_store(&h->started, 1);
    corio_time_t give_up = corio_deadline_in(h->patience);
    while (!atomic_load(&h->release) && corio_now() < give_up)
        usleep(200);
    return 0;
}

/* Spawn options for a task on `loop` (-1: any), light or regular. */
static inline corio_spawn_opts test_on_loop(int loop, bool light)
{
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    o.loop = loop;
    o.flags = light ? CORIO_TASK_LIGHT : 0;
    return o;
}

/* This process's resident memory now, KiB. */
static inline long test_rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    CHECK(f && fscanf(f, "%ld %ld", &pages, &resident) == 2);
    fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Whether test_rss_kib() shows a task stack's pages coming and going:
 * not under the sanitizers or Valgrind, which keep shadow memory of their
 * own for the stacks, nor under qemu-user, where RSS is the emulator's. */
static inline bool test_rss_tracks_stacks(void)
{
#ifdef TEST_SANITIZED
    return false;
#else
    return !TEST_ON_VALGRIND() && !test_under_qemu();
#endif
}

/* xorshift64*: cheap per-task randomness (seed must be non-zero). */
static inline uint64_t test_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* CPU work the optimiser cannot fold away. */
static inline uint64_t test_spin(unsigned n)
{
    volatile uint64_t acc = 0;
    for (unsigned i = 0; i < n; i++)
        acc += i ^ (acc >> 3);
    return acc;
}

/* Touch `len` bytes of the calling task's stack, one write per 512, so
 * that they are resident (tests of stack memory given back). Out of line:
 * the bytes are its own frame, gone when it returns. */
static __attribute__((noinline, unused)) void test_dirty_stack(size_t len)
{
    volatile char bytes[len];
    for (size_t i = 0; i < sizeof bytes; i += 512)
        bytes[i] = (char)i;
}

/* Whether rc is the error named `name` ("ENOSTACK"): for values that not
 * every version of corio.h defines. */
static inline bool test_err_is(int rc, const char *name)
{
    return rc < 0 && strcmp(corio_err_name(rc), name) == 0;
}

#define PTR_OF(i) ((void *)(intptr_t)(i))
#define INT_OF(p) ((intptr_t)(p))

/* ---- child processes ---------------------------------------------------- */

#include <fcntl.h>

typedef struct test_child {
    int status;     /* from waitpid */
    char out[8192]; /* the child's stderr (and stdout), NUL-terminated */
} test_child;

/*
 * Run fn(arg) in a forked child with its stderr and stdout captured. The
 * child exits with fn's return value (if fn returns). Call only while no
 * runtime is running in this process (fork keeps just the calling thread).
 */
static inline void test_run_child(test_child *c, int (*fn)(void *), void *arg)
{
    int fds[2];
    CHECK_EQ(pipe(fds), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK_GE(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        dup2(fds[1], STDOUT_FILENO);
        close(fds[1]);
        setvbuf(stdout, NULL, _IONBF, 0);
        _exit(fn(arg));
    }
    close(fds[1]);
    size_t len = 0;
    for (;;) {
        char buf[4096];
        ssize_t n = read(fds[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        size_t take = (size_t)n;
        if (take > sizeof c->out - 1 - len)
            take = sizeof c->out - 1 - len;
        memcpy(c->out + len, buf, take);
        len += take;
    }
    c->out[len] = '\0';
    close(fds[0]);
    while (waitpid(pid, &c->status, 0) < 0)
        CHECK_EQ(errno, EINTR);
}

#endif /* CORIO_TEST_H */
