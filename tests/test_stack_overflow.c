/*
 * test_stack_overflow.c: a task that runs off its stack dies of SIGSEGV
 * as it would without corio, after one line on stderr naming the task
 * (src/overflow.c). Each case runs in a forked child.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "stack.h" /* corio__stack_use_mprotect_guards */
#include "sys.h"
#include "test.h"

static volatile int keep_going = 1;

/* Not a tail call, and a volatile frame the compiler must keep. */
static __attribute__((noinline)) int recurse(int depth)
{
    volatile char frame[256];
    frame[0] = (char)depth;
    frame[255] = (char)(depth >> 8);
    if (!keep_going)
        return 0;
    return recurse(depth + 1) + frame[0] + frame[255];
}

/* Yields at every level, with next to no frame of its own: the deepest
 * bytes each level touches are those of the context switch out of the
 * task, so that is where it runs into its guard. */
static __attribute__((noinline)) int yield_deeper(int depth)
{
    if (!keep_going)
        return 0;
    corio_yield();
    int r = yield_deeper(depth + 1);
    __asm__ volatile("" : "+r"(r)); /* not turned into a loop */
    return r + 1;
}

static void say_id(void)
{
    char buf[64];
    int n = snprintf(buf, sizeof buf, "ID=%llu\n",
                     (unsigned long long)corio_task_id(corio_self()));
    ssize_t w = write(STDERR_FILENO, buf, (size_t)n);
    (void)w;
}

static void *overflow_task(void *arg)
{
    say_id();
    return PTR_OF(recurse(0));
}

/* Not NULL (UBSan would catch that first), but never mapped. */
static volatile int *volatile wild_address = (volatile int *)(uintptr_t)16;

static void *yielding_overflow_task(void *arg)
{
    say_id();
    return PTR_OF(yield_deeper(0));
}

/* Always ready: the overflowing task's yields switch straight to it. */
static void *busy_yielder(void *arg)
{
    while (keep_going)
        corio_yield();
    return NULL;
}

static void *segv_task(void *arg)
{
    say_id();
    *wild_address = 1;
    return NULL;
}

/* A SIGSEGV sent, not a fault: nothing runs it again when a handler
 * returns. */
static void *raise_segv_task(void *arg)
{
    say_id();
    raise(SIGSEGV);
    return NULL;
}

static void *segv_blocking_fn(void *arg)
{
    *wild_address = 1;
    return NULL;
}

static void *idle_company(void *arg)
{
    corio_sleep(3600 * CORIO_SEC);
    return NULL;
}

static void *segv_in_pool(void *arg)
{
    say_id();
    corio_run_blocking(segv_blocking_fn, NULL, NULL);
    return NULL;
}

enum kind {
    REGULAR,
    LIGHT,
    SMALL_STACK,
    MAIN_ITSELF,
    WILD_WRITE,
    WILD_WRITE_POOL,
    RAISED,
    TRIMMED_STACK,
    IN_SWITCH,
    /* REGULAR and TRIMMED_STACK with the guards of kernels before
     * MADV_GUARD_INSTALL: mprotect'd pages. */
    MPROTECT_REGULAR,
    MPROTECT_TRIMMED,
};

struct holders {
    corio_waitgroup *started;
    corio_event *release;
};

static void *holder(void *arg)
{
    struct holders *h = arg;
    volatile char dirty[8192];
    dirty[0] = dirty[sizeof dirty - 1] = 1;
    corio_waitgroup_done(h->started);
    corio_event_wait(h->release);
    return NULL;
}

/* n holders alive at once on this (only) loop; returns their handles. */
static corio_task **hold(struct holders *h, int n)
{
    corio_task **t = malloc((size_t)n * sizeof *t);
    if (!t || corio_waitgroup_new(&h->started) != 0 || corio_event_new(&h->release) != 0 ||
        corio_waitgroup_add(h->started, n) != 0)
        abort();
    for (int i = 0; i < n; i++)
        if (corio_spawn(&t[i], holder, h) != 0)
            abort();
    corio_waitgroup_wait(h->started);
    return t;
}

/* Leave the loop's pool with stacks a trim gave back in one call over
 * several neighbours and the guards between them (stack.c, release_runs),
 * and only those to hand out next: 600 tasks come and go (they wake and
 * exit in spawn order, so the 344 beyond the 256 kept warm are 344
 * neighbours in carve order), the idle loop trims, and 300 holders take
 * the 256 warm stacks and the 44 at the top of the cold ones. The task
 * spawned next gets a trimmed stack whose guard was in a released range. */
static void leave_only_trimmed_stacks(void)
{
    struct holders wave, company;
    corio_task **t = hold(&wave, 600);
    uint64_t calls = corio__dontneed_calls();
    corio_event_set(wave.release);
    corio_gather(t, 600, NULL);
    free(t);
    while (corio__dontneed_calls() == calls)
        corio_sleep(50 * CORIO_MSEC);
    hold(&company, 300); /* never released: the child dies first */
}

/* PROT_NONE mappings of exactly a guard's size: mprotect'd guards, each
 * its own VMA (MADV_GUARD_INSTALL makes none). */
static int mprotect_guards(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return -1;
    char line[512];
    int n = 0;
    unsigned long lo, hi;
    char perms[5];
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perms) == 3 && !strcmp(perms, "---p") &&
            hi - lo == corio__stack_guard())
            n++;
    fclose(f);
    return n;
}

static void *child_main(void *arg)
{
    enum kind k = (enum kind)INT_OF(arg);
    if (k == MAIN_ITSELF)
        return overflow_task(NULL);
    /* Not vacuous: main's own stack has such a guard. */
    if ((k == MPROTECT_REGULAR || k == MPROTECT_TRIMMED) && mprotect_guards() < 1)
        return PTR_OF(12);
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    corio_fn fn = overflow_task;
    if (k == LIGHT)
        o.flags = CORIO_TASK_LIGHT;
    if (k == SMALL_STACK)
        o.stack_size = 64 * 1024;
    if (k == WILD_WRITE)
        fn = segv_task;
    if (k == WILD_WRITE_POOL)
        fn = segv_in_pool;
    if (k == RAISED)
        fn = raise_segv_task;
    if (k == TRIMMED_STACK || k == MPROTECT_TRIMMED)
        leave_only_trimmed_stacks();
    if (k == IN_SWITCH) {
        fn = yielding_overflow_task;
        corio_spawn(NULL, busy_yielder, NULL);
    }
    /* Some company on the loops, so the dying task is not alone. */
    for (int i = 0; i < 10; i++)
        corio_spawn(NULL, idle_company, NULL);
    corio_task *t;
    if (corio_spawn_ex(&t, fn, NULL, &o) != 0)
        return PTR_OF(10);
    corio_join(t, NULL);
    return PTR_OF(11); /* not reached */
}

/* A child's runtime, which the overflow should end: if corio_run returns
 * after all, say how, and exit 1. */
static int run_expecting_overflow(unsigned loops, corio_fn main_fn, void *arg)
{
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = loops;
    void *r = NULL;
    int rc = corio_run(&cfg, main_fn, arg, &r);
    fprintf(stderr, "corio_run returned %d, result %ld\n", rc, (long)INT_OF(r));
    return 1;
}

static int child(void *arg)
{
    enum kind k = (enum kind)INT_OF(arg);
    if (k == MPROTECT_REGULAR || k == MPROTECT_TRIMMED)
        corio__stack_use_mprotect_guards();
    bool one_loop = k == TRIMMED_STACK || k == MPROTECT_TRIMMED || k == IN_SWITCH;
    return run_expecting_overflow(one_loop ? 1 : 2, child_main, arg);
}

static unsigned long long parse_id(const char *out)
{
    const char *p = strstr(out, "ID=");
    CHECK(p != NULL);
    return strtoull(p + 3, NULL, 10);
}

/* As expect_overflow, and the line's advice says `advice`. */
static void expect_overflow_advising(enum kind k, const char *stack_words, const char *advice)
{
    TEST_SKIP_UNDER_QEMU("guest accesses are not checked against host guard pages "
                         "(MADV_GUARD_INSTALL), so the overflow runs past the guard");
    test_child c;
    test_run_child(&c, child, PTR_OF(k));
    unsigned long long id = parse_id(c.out);
    CHECK_NE(id, 0);
    char want[128];
    snprintf(want, sizeof want, "corio: task %llu overflowed its ", id);
    CHECK_STR_CONTAINS(c.out, want);
    if (stack_words)
        CHECK_STR_CONTAINS(c.out, stack_words);
    CHECK_STR_CONTAINS(c.out, "guard page");
    if (!WIFSIGNALED(c.status) || WTERMSIG(c.status) != SIGSEGV)
        FAIL_("child should die of SIGSEGV; status 0x%x, output:\n%s", c.status, c.out);
    /* Exactly one report. */
    const char *first = strstr(c.out, "overflowed its");
    CHECK(strstr(first + 1, "overflowed its") == NULL);
    if (advice)
        CHECK_STR_CONTAINS(first, advice);
}

static void expect_overflow(enum kind k, const char *stack_words)
{
    expect_overflow_advising(k, stack_words, NULL);
}

TEST(regular_task_overflow)
{
    expect_overflow_advising(REGULAR, "-byte stack",
                             "corio_spawn_opts.stack_size or CORIO_STACK_SIZE\n");
}

/* The advice is what a light task can be given: its loop's shared stack
 * is corio_config's size (corio_spawn_opts.stack_size and
 * CORIO_TASK_LIGHT together are CORIO_EINVAL). */
TEST(light_task_overflow)
{
    expect_overflow_advising(LIGHT, "shared (light) stack",
                             "corio_config.stack_size or CORIO_STACK_SIZE, or spawn it "
                             "without CORIO_TASK_LIGHT\n");
}

TEST(custom_stack_size_overflow)
{
    expect_overflow(SMALL_STACK, "its 65536-byte stack");
}

TEST(main_task_overflow)
{
    expect_overflow(MAIN_ITSELF, "-byte stack");
}

/* The guard survives the memory behind it being given back. */
TEST(trimmed_stack_overflow)
{
    expect_overflow(TRIMMED_STACK, "-byte stack");
}

/* The overflow happens in the switch out of the task, straight to another
 * ready task (ready.h, corio__switch_to): the loop already names that
 * other task as its current one. */
TEST(overflow_in_context_switch)
{
    expect_overflow(IN_SWITCH, "-byte stack");
}

/* The fallback guard of kernels before Linux 6.13 (stack.c,
 * install_guard), forced: a fresh stack's and, after a trim's
 * MADV_DONTNEED over it, a reused one's. */
TEST(overflow_hits_mprotect_guards)
{
    expect_overflow(MPROTECT_REGULAR, "-byte stack");
    expect_overflow(MPROTECT_TRIMMED, "-byte stack");
}

static void expect_plain_segv(enum kind k)
{
    test_child c;
    test_run_child(&c, child, PTR_OF(k));
    CHECK_NE(parse_id(c.out), 0);
    if (strstr(c.out, "overflowed"))
        FAIL_("a wild write was reported as an overflow:\n%s", c.out);
    CHECK(strstr(c.out, "corio_run returned") == NULL);
#ifdef TEST_SANITIZED
    /* The sanitizer's own SEGV handler reports it and exits. */
    CHECK(WIFSIGNALED(c.status) || (WIFEXITED(c.status) && WEXITSTATUS(c.status) != 0));
#else
    if (!WIFSIGNALED(c.status) || WTERMSIG(c.status) != SIGSEGV)
        FAIL_("child should die of SIGSEGV; status 0x%x, output:\n%s", c.status, c.out);
#endif
}

TEST(wild_write_is_not_an_overflow)
{
    expect_plain_segv(WILD_WRITE);
}

TEST(wild_write_on_pool_thread)
{
    expect_plain_segv(WILD_WRITE_POOL);
}

/* raise(SIGSEGV) (or kill -SEGV) kills as it does without corio. */
TEST(raised_segv_kills)
{
    expect_plain_segv(RAISED);
}

/* ---- the handler that was there before corio's ---- */

static void custom_segv(int sig)
{
    static const char msg[] = "custom handler\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
    _exit(42);
}

#ifndef TEST_SANITIZED
static int child_with_handler(void *arg)
{
    signal(SIGSEGV, custom_segv);
    return child(arg);
}
#endif

/* A wild write inside a task goes to the handler the program had. */
TEST(previous_handler_is_chained)
{
#ifdef TEST_SANITIZED
    fprintf(stderr, "   skipped: the sanitizer owns SIGSEGV\n");
#else
    if (TEST_ON_VALGRIND()) {
        /* It reports the wild write itself and changes the exit status. */
        fprintf(stderr, "   skipped under Valgrind\n");
        return;
    }
    test_child c;
    test_run_child(&c, child_with_handler, PTR_OF(WILD_WRITE));
    CHECK_STR_CONTAINS(c.out, "custom handler");
    CHECK(strstr(c.out, "overflowed") == NULL);
    if (!WIFEXITED(c.status) || WEXITSTATUS(c.status) != 42)
        FAIL_("child status 0x%x, output:\n%s", c.status, c.out);
#endif
}

#ifndef TEST_SANITIZED
/* The same for a handler installed with SA_SIGINFO (a crash reporter's
 * usual way), which corio calls with the siginfo it got. */
static void custom_segv_info(int sig, siginfo_t *info, void *uctx)
{
    (void)sig;
    (void)uctx;
    static const char msg[] = "custom siginfo handler\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
    _exit(info && info->si_addr == (void *)wild_address ? 43 : 44);
}

static int child_with_siginfo_handler(void *arg)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = custom_segv_info;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
    return child(arg);
}
#endif

TEST(previous_siginfo_handler_is_chained)
{
#ifdef TEST_SANITIZED
    fprintf(stderr, "   skipped: the sanitizer owns SIGSEGV\n");
#else
    TEST_SKIP_IF(TEST_ON_VALGRIND(), "under Valgrind",
                 "it reports the wild write itself and changes the exit status");
    test_child c;
    test_run_child(&c, child_with_siginfo_handler, PTR_OF(WILD_WRITE));
    CHECK_STR_CONTAINS(c.out, "custom siginfo handler");
    CHECK(strstr(c.out, "overflowed") == NULL);
    if (!WIFEXITED(c.status) || WEXITSTATUS(c.status) != 43)
        FAIL_("child status 0x%x (43: handler saw the fault address), output:\n%s", c.status,
              c.out);
#endif
}

#ifndef TEST_SANITIZED
/* Two tasks raise SIGSEGV in a program that ignores it; then one
 * overflows. */
static void *raise_twice_then_overflow(void *arg)
{
    for (int i = 0; i < 2; i++) {
        corio_task *t;
        if (corio_spawn(&t, raise_segv_task, NULL) != 0)
            return PTR_OF(10);
        corio_join(t, NULL);
    }
    return overflow_task(NULL);
}

static int child_ignoring_segv(void *arg)
{
    signal(SIGSEGV, SIG_IGN);
    return run_expecting_overflow(2, raise_twice_then_overflow, arg);
}
#endif

/* A sent SIGSEGV the program ignores stays ignored, every time, and
 * overflows are still reported after it. */
TEST(ignored_raised_segv_stays_ignored)
{
#ifdef TEST_SANITIZED
    fprintf(stderr, "   skipped: the sanitizer owns SIGSEGV\n");
#else
    TEST_SKIP_UNDER_QEMU("guest accesses are not checked against host guard pages "
                         "(MADV_GUARD_INSTALL), so the overflow runs past the guard");
    test_child c;
    test_run_child(&c, child_ignoring_segv, NULL);
    unsigned long long id = 0;
    const char *p = c.out;
    for (int i = 0; i < 3; i++) { /* the third ID is the overflowing task's */
        p = strstr(p, "ID=");
        if (!p)
            FAIL_("only %d of 3 tasks ran; status 0x%x, output:\n%s", i, c.status, c.out);
        id = strtoull(p + 3, NULL, 10);
        p += 3;
    }
    char want[128];
    snprintf(want, sizeof want, "corio: task %llu overflowed its ", id);
    CHECK_STR_CONTAINS(c.out, want);
    if (!WIFSIGNALED(c.status) || WTERMSIG(c.status) != SIGSEGV)
        FAIL_("child should die of SIGSEGV; status 0x%x, output:\n%s", c.status, c.out);
#endif
}

/* ---- runtimes side by side share the one handler ----
 *
 * The handler is installed while any runtime runs (runtime.c): a runtime
 * that ends while another still runs leaves it in place, and the last one
 * to end puts back what the program had. */

static void *run_second_runtime(void *arg)
{
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = 1;
    void *r = NULL;
    int rc = corio_run(&cfg, test_ret_arg, PTR_OF(7), &r);
    return PTR_OF(rc == 0 && INT_OF(r) == 7 ? 0 : -1);
}

static void *join_thread(void *arg)
{
    void *r = PTR_OF(-2);
    pthread_join(*(pthread_t *)arg, &r);
    return r;
}

/* Start a second runtime on a thread of its own and wait until it has
 * come and gone; 0 if it ran well. */
static int second_runtime_comes_and_goes(void)
{
    pthread_t th;
    if (pthread_create(&th, NULL, run_second_runtime, NULL) != 0)
        return -3;
    void *r = PTR_OF(-4);
    if (corio_run_blocking(join_thread, &th, &r) != 0)
        return -5;
    return (int)INT_OF(r);
}

static void *main_overflow_after_second_runtime(void *arg)
{
    if (second_runtime_comes_and_goes() != 0)
        return PTR_OF(12);
    corio_task *t;
    if (corio_spawn(&t, overflow_task, NULL) != 0)
        return PTR_OF(10);
    corio_join(t, NULL);
    return PTR_OF(11); /* not reached */
}

static int child_overflow_after_second_runtime(void *arg)
{
    return run_expecting_overflow(2, main_overflow_after_second_runtime, arg);
}

TEST(overflow_reported_after_another_runtime_ended)
{
    TEST_SKIP_UNDER_QEMU("guest accesses are not checked against host guard pages "
                         "(MADV_GUARD_INSTALL), so the overflow runs past the guard");
    test_child c;
    test_run_child(&c, child_overflow_after_second_runtime, NULL);
    unsigned long long id = parse_id(c.out);
    char want[128];
    snprintf(want, sizeof want, "corio: task %llu overflowed its ", id);
    CHECK_STR_CONTAINS(c.out, want);
    if (!WIFSIGNALED(c.status) || WTERMSIG(c.status) != SIGSEGV)
        FAIL_("child should die of SIGSEGV; status 0x%x, output:\n%s", c.status, c.out);
}

static void *main_with_second_runtime(void *arg)
{
    return PTR_OF(second_runtime_comes_and_goes());
}

TEST(handler_restored_after_runtimes_side_by_side)
{
    struct sigaction before, after;
    signal(SIGSEGV, custom_segv);
    CHECK_EQ(sigaction(SIGSEGV, NULL, &before), 0);
    CHECK(before.sa_handler == custom_segv);
    CHECK_EQ(INT_OF(run_main_checked(2, main_with_second_runtime, NULL)), 0);
    CHECK_EQ(sigaction(SIGSEGV, NULL, &after), 0);
    CHECK(after.sa_handler == custom_segv);
    signal(SIGSEGV, SIG_DFL);
}

/* corio_run puts the previous SIGSEGV disposition back when it returns. */
TEST(handler_restored_after_run)
{
    struct sigaction before, after;
    signal(SIGSEGV, custom_segv);
    CHECK_EQ(sigaction(SIGSEGV, NULL, &before), 0);
    CHECK(before.sa_handler == custom_segv);
    run_main_checked(2, test_ret_arg, NULL);
    CHECK_EQ(sigaction(SIGSEGV, NULL, &after), 0);
    CHECK(after.sa_handler == custom_segv);
    CHECK_EQ(after.sa_flags & SA_SIGINFO, before.sa_flags & SA_SIGINFO);
    signal(SIGSEGV, SIG_DFL);
}

static void *install_custom_segv(void *arg)
{
    signal(SIGSEGV, custom_segv);
    return arg;
}

/* A handler the program installs while corio_run runs is the program's:
 * corio_run leaves it in place when it returns. */
TEST(handler_installed_during_run_is_kept)
{
    struct sigaction after;
    run_main_checked(2, install_custom_segv, NULL);
    CHECK_EQ(sigaction(SIGSEGV, NULL, &after), 0);
    CHECK(after.sa_handler == custom_segv);
    signal(SIGSEGV, SIG_DFL);
}

int main(int argc, char **argv)
{
    RUN(regular_task_overflow);
    RUN(light_task_overflow);
    RUN(custom_stack_size_overflow);
    RUN(main_task_overflow);
    RUN(trimmed_stack_overflow);
    RUN(overflow_in_context_switch);
    RUN(overflow_hits_mprotect_guards);
    RUN(wild_write_is_not_an_overflow);
    RUN(wild_write_on_pool_thread);
    RUN(raised_segv_kills);
    RUN(ignored_raised_segv_stays_ignored);
    RUN(previous_handler_is_chained);
    RUN(handler_restored_after_run);
    RUN(handler_installed_during_run_is_kept);
    RUN(previous_siginfo_handler_is_chained);
    RUN(overflow_reported_after_another_runtime_ended);
    RUN(handler_restored_after_runtimes_side_by_side);
    return test_summary();
}
