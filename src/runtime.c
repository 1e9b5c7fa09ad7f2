/*
 * runtime.c: corio_run(), from configuration to teardown.
 *
 * The calling thread becomes loop 0 (one thread fewer, and the main task
 * starts without a cross-thread hand-off); loops 1..n-1 get their own
 * threads. Everything a runtime owns hangs off its corio__runtime, and the
 * only process-wide state is the overflow reporter's signal handler
 * (installed while any runtime runs) and the task-id counter, so runtimes
 * can follow each other, or even run side by side on different threads.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blocking.h"
#include "debug.h"
#include "loop.h"
#include "overflow.h"
#include "sys.h"
#include "task.h"
#include "thread_probe.h"

#define DEFAULT_STACK_SIZE ((size_t)128 * 1024)
#define DEFAULT_BLOCKING_THREADS 64
#define DEFAULT_STACK_RETAIN_MS 10000
#define MAX_LOOPS 1024

corio_time_t corio_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (corio_time_t)ts.tv_sec * CORIO_SEC + ts.tv_nsec;
}

corio_time_t corio_deadline_in(int64_t ns)
{
    return ns < 0 ? CORIO_FOREVER : corio__deadline_after(corio_now(), ns);
}

_Atomic int corio__exit_nsearching;

void corio_config_init(corio_config *cfg) { memset(cfg, 0, sizeof *cfg); }

int corio_loop_index(void)
{
    corio__loop *l = corio__loop_current();
    return l ? (int)l->index : -1;
}

unsigned corio_loop_count(void)
{
    corio__loop *l = corio__loop_current();
    if (l)
        return l->rt->nloops;
    corio__runtime *rt = corio__runtime_current();
    return rt ? rt->nloops : 0;
}

/* ---- configuration ---- */

/* Parse a positive decimal number, with an optional k/m/g suffix (KiB,
 * MiB, GiB) if `suffix`. 0 if malformed. */
static size_t parse_number(const char *s, bool suffix)
{
    /* strtoull would skip blanks and accept a sign (" -1" wraps). */
    if (*s < '0' || *s > '9')
        return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return 0;
    unsigned long long mult = 1;
    switch (suffix ? *end : '\0') {
    case 'k': case 'K': mult = 1ull << 10; end++; break;
    case 'm': case 'M': mult = 1ull << 20; end++; break;
    case 'g': case 'G': mult = 1ull << 30; end++; break;
    }
    if (*end != '\0' || v > SIZE_MAX / mult)
        return 0;
    return (size_t)(v * mult);
}

static unsigned usable_cpus(cpu_set_t *set)
{
    if (sched_getaffinity(0, sizeof *set, set) == 0) {
        int n = CPU_COUNT(set);
        if (n > 0)
            return (unsigned)n;
    }
    CPU_ZERO(set);
    return 1;
}

/* A numeric setting: the configuration's value if non-zero, else the
 * environment variable `name` if set (a positive decimal number, at most
 * `max`, with a k/m/g suffix if it is a size in bytes: `is_size`;
 * CORIO_EINVAL otherwise), else `fallback`. A suffix elsewhere would
 * mislead: "4m" milliseconds reads as 4 minutes, and would have been
 * 4,194,304 ms. */
static int setting(size_t configured, const char *name, size_t max, bool is_size,
                   size_t fallback, size_t *out)
{
    const char *env = getenv(name);
    *out = configured;
    if (!*out && env && *env) {
        *out = parse_number(env, is_size);
        if (*out == 0 || *out > max)
            return CORIO_EINVAL;
    }
    if (!*out)
        *out = fallback;
    return 0;
}

/* An on/off setting from the environment: "1" or "0" (unset or empty:
 * `fallback`); anything else is CORIO_EINVAL, so that "true" or "no" do
 * not silently mean whatever the default is. */
static int flag_setting(const char *name, bool fallback, bool *out)
{
    const char *env = getenv(name);
    *out = fallback;
    if (!env || !*env)
        return 0;
    if (strcmp(env, "0") != 0 && strcmp(env, "1") != 0)
        return CORIO_EINVAL;
    *out = env[0] == '1';
    return 0;
}

static int resolve_config(const corio_config *cfg, corio__runtime *rt, cpu_set_t *cpus)
{
    unsigned ncpu = usable_cpus(cpus);
    size_t loops, stack, retain_ms;
    if (setting(cfg->loops, "CORIO_LOOPS", MAX_LOOPS, false, ncpu, &loops) != 0 ||
        loops > MAX_LOOPS)
        return CORIO_EINVAL;
    if (setting(cfg->stack_size, "CORIO_STACK_SIZE", SIZE_MAX, true, DEFAULT_STACK_SIZE,
                &stack) != 0)
        return CORIO_EINVAL;
    stack = corio__stack_round(stack);
    if (!stack)
        return CORIO_EINVAL;
    if (setting(cfg->stack_retain_ms, "CORIO_STACK_RETAIN_MS", UINT32_MAX, false,
                DEFAULT_STACK_RETAIN_MS, &retain_ms) != 0)
        return CORIO_EINVAL;

    bool huge_env, pin_env;
    if (flag_setting("CORIO_HUGE_PAGES", false, &huge_env) != 0 ||
        flag_setting("CORIO_PIN", false, &pin_env) != 0)
        return CORIO_EINVAL;
    rt->huge_pages = cfg->huge_pages || huge_env;
    rt->nloops = (unsigned)loops;
    rt->stack_size = stack;
    rt->stack_retain_ns = (corio_time_t)retain_ms * CORIO_MSEC;
    rt->max_tasks = cfg->max_tasks;
    rt->blocking_threads = cfg->blocking_threads ? cfg->blocking_threads : DEFAULT_BLOCKING_THREADS;
    rt->pin_cpus = cfg->pin_cpus || pin_env;
    return 0;
}

/* ---- loop threads ---- */

struct thread_start {
    corio__loop *loop;
    int cpu; /* -1: no pinning */
};

/* The i-th CPU of the affinity mask, or -1. */
static int nth_cpu(const cpu_set_t *set, unsigned i)
{
    unsigned seen = 0;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, set) && seen++ == i)
            return c;
    return -1;
}

static void pin_to(int cpu)
{
    if (cpu < 0)
        return;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    /* Best effort: pinning is an optimisation, not a promise. */
    pthread_setaffinity_np(pthread_self(), sizeof one, &one);
}

/* Run loop l on the calling thread, with its signal stack and checker
 * context set up. */
static void run_loop_here(corio__loop *l)
{
    corio__set_thread_loop(l);
    corio__set_thread_runtime(l->rt);
    clockid_t cpu_clock;
    pid_t tid = corio__thread_probe_self(&cpu_clock);
    atomic_store_explicit(&l->cpu_clock, cpu_clock, memory_order_relaxed);
    atomic_store_explicit(&l->stat_fd, corio__thread_probe_open_self(), memory_order_relaxed);
    atomic_store_explicit(&l->thread_id, tid, memory_order_release);

    /* SIGPIPE blocked: a write to a closed pipe or socket returns EPIPE
     * instead of killing the process. Any SIGPIPE left pending is
     * consumed before the mask is restored. */
    sigset_t pipe_set, old_mask;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old_mask);

    stack_t ss = {.ss_sp = l->altstack, .ss_size = l->altstack_size, .ss_flags = 0}, old_ss;
    int have_old = sigaltstack(&ss, &old_ss) == 0;

    pthread_attr_t attr;
    void *lo = NULL;
    size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        pthread_attr_getstack(&attr, &lo, &size);
        pthread_attr_destroy(&attr);
    }
    corio__san_thread_context(&l->sched_san, lo, size);

    corio__loop_run(l);

    if (have_old) {
        if (old_ss.ss_flags & SS_DISABLE) {
            stack_t off = {.ss_flags = SS_DISABLE};
            sigaltstack(&off, NULL);
        } else {
            sigaltstack(&old_ss, NULL);
        }
    }
    static const struct timespec no_wait = {0, 0};
    while (sigtimedwait(&pipe_set, NULL, &no_wait) == SIGPIPE)
        ;
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    corio__set_thread_loop(NULL);
    corio__set_thread_runtime(NULL);
}

static void *loop_thread(void *arg)
{
    struct thread_start *ts = arg;
    pin_to(ts->cpu);
    run_loop_here(ts->loop);
    return NULL;
}

/* ---- life cycle ---- */

static void runtime_free(corio__runtime *rt)
{
    if (rt->loops) {
        /* Stacks wander between loops' pools: every pool, and the spill
         * list, forgets its stacks before any pool unmaps its chunks. */
        for (unsigned i = 0; i < rt->nloops; i++)
            if (rt->loops[i])
                corio__stack_pool_forget(&rt->loops[i]->stacks);
        corio__stack_spill_forget(&rt->stack_spill);
        for (unsigned i = 0; i < rt->nloops; i++) {
            corio__loop *l = rt->loops[i];
            if (!l)
                continue;
            corio__task_slabs_free(l);
            corio__loop_destroy(l);
            corio__free(l);
        }
        corio__free(rt->loops);
    }
    corio__blocking_pool_destroy(rt->pool);
    corio__free(rt);
}

static int runtime_new(const corio_config *cfg, corio__runtime **out, cpu_set_t *cpus)
{
    corio__runtime *rt = corio__aligned_alloc(CORIO__CACHE_LINE, sizeof *rt);
    if (!rt)
        return CORIO_ENOMEM;
    memset(rt, 0, sizeof *rt);
    int rc = resolve_config(cfg, rt, cpus);
    if (rc != 0) {
        corio__free(rt);
        return rc;
    }
    unsigned n = rt->nloops;
    rt->loops = corio__calloc(n, sizeof *rt->loops);
    if (!rt->loops) {
        rt->nloops = 0;
        runtime_free(rt);
        return CORIO_ENOMEM;
    }
    for (unsigned i = 0; i < n; i++) {
        corio__loop *l = corio__aligned_alloc(CORIO__CACHE_LINE, sizeof *l);
        if (!l) {
            runtime_free(rt);
            return CORIO_ENOMEM;
        }
        rc = corio__loop_init(l, rt, i);
        if (rc != 0) {
            corio__free(l);
            runtime_free(rt);
            return rc;
        }
        rt->loops[i] = l;
    }
    rc = corio__blocking_pool_new(rt, &rt->pool);
    if (rc != 0) {
        runtime_free(rt);
        return rc;
    }
    atomic_init(&rt->stopping, false);
    atomic_init(&rt->active_loops, n);
    atomic_init(&rt->live_tasks, 0);
    atomic_init(&rt->nparked, 0);
    atomic_init(&rt->nsearching, 0);
    *out = rt;
    return 0;
}

/* Thread start failed part-way: stop the loops that did start (they have
 * no tasks yet, so they leave as soon as they see the stop). */
static void stop_started_loops(corio__runtime *rt, unsigned started)
{
    atomic_fetch_sub(&rt->active_loops, rt->nloops - started + 1);
    atomic_store(&rt->stopping, true);
    corio__runtime_wake_all(rt);
    for (unsigned i = 1; i < started; i++)
        pthread_join(rt->loops[i]->thread, NULL);
}

int corio_run(const corio_config *cfg, corio_fn main_fn, void *arg, void **result)
{
    if (!main_fn)
        return CORIO_EINVAL;
    if (corio__loop_current() || corio__runtime_current())
        return CORIO_EBUSY;
    corio_config defaults;
    if (!cfg) {
        corio_config_init(&defaults);
        cfg = &defaults;
    }
    cpu_set_t cpus;
    corio__runtime *rt;
    int rc = runtime_new(cfg, &rt, &cpus);
    if (rc != 0)
        return rc;
    struct thread_start *starts = corio__calloc(rt->nloops, sizeof *starts);
    if (!starts) {
        runtime_free(rt);
        return CORIO_ENOMEM;
    }
    rc = corio__overflow_install();
    if (rc != 0) {
        corio__free(starts);
        runtime_free(rt);
        return rc;
    }

    unsigned started = 1;
    for (unsigned i = 1; i < rt->nloops && rc == 0; i++) {
        starts[i].loop = rt->loops[i];
        starts[i].cpu = rt->pin_cpus ? nth_cpu(&cpus, i) : -1;
        int err = corio__thread_create(&rt->loops[i]->thread, loop_thread, &starts[i], 0);
        if (err != 0) {
            rc = err == ENOMEM ? CORIO_ENOMEM : CORIO_EAGAIN;
            break;
        }
        rt->loops[i]->thread_started = true;
        started++;
    }
    corio__loop *l0 = rt->loops[0];
    corio_task *main_task = NULL;
    if (rc == 0)
        rc = corio__task_create(l0, &main_task, main_fn, arg, rt->stack_size, CORIO__TF_MAIN,
                                true);
    if (rc != 0) {
        stop_started_loops(rt, started);
        corio__free(starts);
        corio__overflow_uninstall();
        runtime_free(rt);
        return rc;
    }
    rt->main_task = main_task;
    /* On the debuggers' list before main can run: another loop may steal
     * main the moment it is queued, and a dump (or main itself) must find
     * the runtime listed while main runs (it was registered after the
     * push: test_config's main, stolen at once, saw the list without it). */
    corio__debug_register(rt);
    /* Loop 0 is this thread and not running yet: pushing to its queue is
     * an owner operation (into an empty ring: it cannot fail). Other loops
     * may already steal from it. */
    (void)!corio__runq_push(&l0->runq, main_task);

    cpu_set_t saved_affinity;
    bool restore_affinity = false;
    if (rt->pin_cpus) {
        restore_affinity = pthread_getaffinity_np(pthread_self(), sizeof saved_affinity,
                                                  &saved_affinity) == 0;
        pin_to(nth_cpu(&cpus, 0));
    }
    run_loop_here(l0);
    if (restore_affinity)
        pthread_setaffinity_np(pthread_self(), sizeof saved_affinity, &saved_affinity);

    for (unsigned i = 1; i < rt->nloops; i++)
        pthread_join(rt->loops[i]->thread, NULL);
    atomic_store_explicit(&corio__exit_nsearching, atomic_load(&rt->nsearching),
                          memory_order_relaxed); /* runtimes side by side store it too */
    corio__debug_unregister(rt);
    corio__free(starts);
    corio__blocking_pool_stop(rt->pool);
    corio__overflow_uninstall();
    if (result)
        *result = rt->main_result;
    rc = rt->main_error;
    runtime_free(rt);
    return rc;
}
