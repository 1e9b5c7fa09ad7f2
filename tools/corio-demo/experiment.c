/*
 * experiment.c: generating, running and bounding the reference experiment
 * (see experiment.h).
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_ALLOC */
#include "experiment.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "corio.h"

const char *mode_name(enum demo_mode mode)
{
    switch (mode) {
    case MODE_SINGLE: return "single";
    case MODE_STEAL: return "steal";
    case MODE_OFFLOAD: return "offload";
    case MODE_MIGRATE: return "migrate";
    case MODE_BATCHES: return "batches";
    }
    return "?";
}

/* splitmix64: tiny, fast, and trivially identical in every language the
 * peers are written in. */
static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int workload_generate(struct workload *w, size_t tasks, double work_scale, uint64_t seed)
{
    memset(w, 0, sizeof *w);
    w->delay_ns = malloc(tasks * sizeof *w->delay_ns);
    w->units = malloc(tasks * sizeof *w->units);
    if (!w->delay_ns || !w->units) {
        workload_free(w);
        return -ENOMEM;
    }
    w->tasks = tasks;
    w->work_scale = work_scale;
    w->seed = seed;
    uint64_t state = seed;
    for (size_t i = 0; i < tasks; i++) {
        w->delay_ns[i] = 200000000 + (int64_t)(splitmix64(&state) % 800000001u);
        uint64_t n = 100000 + splitmix64(&state) % 400001u;
        /* floor(n * K + 0.5) in IEEE double, as every peer computes it. */
        w->units[i] = (uint64_t)((double)n * work_scale + 0.5);
    }
    return 0;
}

void workload_free(struct workload *w)
{
    free(w->delay_ns);
    free(w->units);
    w->delay_ns = NULL;
    w->units = NULL;
}

uint64_t opaque_sum(uint64_t units)
{
    uint64_t sum = 0;
    for (uint64_t i = 0; i < units; i++) {
        sum += i;
        /* An empty asm that "may change" sum: the compiler must do every
         * addition, in a register, one per iteration. */
        __asm__ volatile("" : "+r"(sum));
    }
    return sum;
}

double calibrate_unit_ns(void)
{
    const uint64_t units = 20000000;
    double best = 0;
    for (int round = 0; round < 5; round++) {
        corio_time_t t0 = corio_now();
        volatile uint64_t sink = opaque_sum(units);
        (void)sink;
        double ns = (double)(corio_now() - t0) / (double)units;
        if (round == 0 || ns < best)
            best = ns;
    }
    return best;
}

unsigned usable_cpus(void)
{
    /* A mask sized for the CPUs configured, grown while the kernel says
     * it is too small for its own (EINVAL), as on hosts with more CPUs
     * than a cpu_set_t holds. */
    for (size_t n = 1024; n <= (1u << 20); n *= 2) {
        cpu_set_t *set = CPU_ALLOC(n);
        if (!set)
            break;
        size_t size = CPU_ALLOC_SIZE(n);
        int rc = sched_getaffinity(0, size, set);
        int count = rc == 0 ? CPU_COUNT_S(size, set) : 0;
        CPU_FREE(set);
        if (rc == 0)
            return count > 0 ? (unsigned)count : 1;
        if (errno != EINVAL)
            break;
    }
    return 1;
}

double workload_cpu_s(const struct workload *w, double unit_ns)
{
    double total = 0;
    for (size_t i = 0; i < w->tasks; i++)
        total += (double)w->units[i] * unit_ns;
    return total / 1e9;
}

double workload_bound_s(const struct workload *w, double unit_ns, unsigned cores)
{
    double longest = 0, min_io = 0;
    for (size_t i = 0; i < w->tasks; i++) {
        double io = w->delay_ns[i] / 1e9;
        double cpu = (double)w->units[i] * unit_ns / 1e9;
        if (io + cpu > longest)
            longest = io + cpu;
        if (i == 0 || io < min_io)
            min_io = io;
    }
    double packed = min_io + workload_cpu_s(w, unit_ns) / cores;
    return longest > packed ? longest : packed;
}

/* ---- the run ---- */

struct job {
    int64_t delay_ns;
    uint64_t units;
    int64_t work_ns;       /* how long the summation took */
    int64_t work_cpu_ns;   /* its thread's CPU time meanwhile */
    int loop;              /* where it ran */
    corio_time_t slept_at; /* when the task began its sleep */
    corio_time_t work_at;  /* when the summation began */
    uint64_t sum;          /* the result, set by the seed task once it has it */
};

static int64_t thread_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The summation never waits, so it runs on one thread from start to end
 * (even a migrating task moves only at a wait) and that thread's CPU
 * clock covers exactly it. The CPU clock is read outside the elapsed
 * window: it is a system call, not part of the work. */
static void *sum_task(void *arg)
{
    struct job *job = arg;
    int64_t cpu0 = thread_cpu_ns();
    corio_time_t t0 = corio_now();
    job->work_at = t0;
    uint64_t sum = opaque_sum(job->units);
    job->work_ns = corio_now() - t0;
    job->work_cpu_ns = thread_cpu_ns() - cpu0;
    job->loop = corio_loop_index();
    return (void *)(uintptr_t)sum;
}

/* The seed tasks return their job once job->sum holds the result, NULL
 * when they could not compute it: a sum of 0 or 1 unit is 0, so a bare sum
 * could not tell a missing result from a right one at a tiny work scale. */
static void *seed_task(void *arg)
{
    struct job *job = arg;
    job->slept_at = corio_now();
    if (corio_sleep(job->delay_ns) != 0)
        return NULL; /* counted as a missing result */
    job->sum = (uint64_t)(uintptr_t)sum_task(job);
    return job;
}

/* The same work, the summation handed to a fresh task. */
static void *seed_task_offload(void *arg)
{
    struct job *job = arg;
    job->slept_at = corio_now();
    if (corio_sleep(job->delay_ns) != 0)
        return NULL;
    corio_task *summer;
    void *sum = NULL;
    if (corio_spawn(&summer, sum_task, job) != 0 || corio_join(summer, &sum) != 0)
        return NULL;
    job->sum = (uint64_t)(uintptr_t)sum;
    return job;
}

struct run_ctx {
    const struct workload *w;
    enum demo_mode mode;
    unsigned batches;
    struct job *jobs;
    corio_task **tasks;
    void **results;
    int error;
    unsigned loops; /* as the runtime resolved it */
    corio_time_t t0; /* the clock's start: just before the first spawn */
    corio_time_t wall_ns;
};

static void *experiment_main(void *arg)
{
    struct run_ctx *ctx = arg;
    size_t n = ctx->w->tasks;
    unsigned loops = corio_loop_count();
    ctx->loops = loops;
    corio_time_t t0 = corio_now();
    ctx->t0 = t0;
    for (size_t i = 0; i < n; i++) {
        int rc;
        if (ctx->mode == MODE_BATCHES) {
            /* Equal batches in task order, batch b on loop b mod P. */
            size_t batch = i * ctx->batches / n;
            rc = corio_spawn_on(&ctx->tasks[i], (unsigned)(batch % loops), seed_task,
                                &ctx->jobs[i]);
        } else {
            corio_spawn_opts opts;
            corio_spawn_opts_init(&opts);
            if (ctx->mode == MODE_MIGRATE)
                opts.flags = CORIO_TASK_MIGRATE;
            rc = corio_spawn_ex(&ctx->tasks[i],
                                ctx->mode == MODE_OFFLOAD ? seed_task_offload : seed_task,
                                &ctx->jobs[i], &opts);
        }
        if (rc != 0) {
            ctx->error = rc;
            /* Let the ones already spawned finish, then report. */
            corio_gather(ctx->tasks, i, ctx->results);
            return NULL;
        }
    }
    int rc = corio_gather(ctx->tasks, n, ctx->results);
    ctx->wall_ns = corio_now() - t0;
    if (rc != 0)
        ctx->error = rc;
    return NULL;
}

/* What each loop did: the units it summed, for how long, and when its
 * first summation began and its last ended. */
struct loop_tally {
    double units, work_s;
    corio_time_t first, last;
};

/*
 * Where the summations ran and where the wall went, from the jobs' own
 * records (run_result says what each figure is):
 * - placement against speed: the busiest loop's share of the units against
 *   an even share, and the least and most summation time of any loop
 *   (uneven units: placement; even units, uneven time: core speeds);
 * - the timeline from t0: when the last task began its sleep, when the
 *   first summation began and the last ended, when the first loop to
 *   finish ended, and each loop's time not summing between its first
 *   summation and its last (scheduling overhead plus idling).
 */
static void loop_stats(const struct job *jobs, size_t n, corio_time_t t0, struct run_result *out)
{
    unsigned loops = out->loops;
    struct loop_tally *tally = calloc(loops, sizeof *tally);
    if (!tally)
        return;
    for (unsigned l = 0; l < loops; l++) {
        tally[l].first = INT64_MAX;
        tally[l].last = INT64_MIN;
    }
    double total_units = 0;
    corio_time_t last_sleep = t0, first_work = INT64_MAX, last_end = t0;
    for (size_t i = 0; i < n; i++) {
        const struct job *j = &jobs[i];
        if (j->loop < 0 || (unsigned)j->loop >= loops)
            continue;
        struct loop_tally *t = &tally[j->loop];
        corio_time_t end = j->work_at + j->work_ns;
        t->units += (double)j->units;
        t->work_s += j->work_ns / 1e9;
        if (j->work_at < t->first)
            t->first = j->work_at;
        if (end > t->last)
            t->last = end;
        total_units += (double)j->units;
        if (j->slept_at > last_sleep)
            last_sleep = j->slept_at;
        if (j->work_at < first_work)
            first_work = j->work_at;
        if (end > last_end)
            last_end = end;
    }
    double max_units = 0, gap_sum = 0;
    unsigned busy = 0;
    out->loop_work_s_min = loops ? tally[0].work_s : 0;
    out->loop_end_s_min = (last_end - t0) / 1e9;
    for (unsigned l = 0; l < loops; l++) {
        const struct loop_tally *t = &tally[l];
        if (t->units > max_units)
            max_units = t->units;
        if (t->work_s < out->loop_work_s_min)
            out->loop_work_s_min = t->work_s;
        if (t->work_s > out->loop_work_s_max)
            out->loop_work_s_max = t->work_s;
        if (t->first == INT64_MAX)
            continue; /* summed nothing */
        double gap = (t->last - t->first) / 1e9 - t->work_s;
        gap_sum += gap;
        busy++;
        if (gap > out->loop_gap_s_max)
            out->loop_gap_s_max = gap;
        if ((t->last - t0) / 1e9 < out->loop_end_s_min)
            out->loop_end_s_min = (t->last - t0) / 1e9;
    }
    out->loop_units_share_max = total_units > 0 ? max_units / (total_units / loops) : 0;
    out->loop_gap_s_mean = busy ? gap_sum / busy : 0;
    out->last_sleep_s = (last_sleep - t0) / 1e9;
    out->first_work_s = first_work == INT64_MAX ? 0 : (first_work - t0) / 1e9;
    out->last_work_end_s = (last_end - t0) / 1e9;
    free(tally);
}

int experiment_run(const struct workload *w, enum demo_mode mode, unsigned loops,
                   unsigned batches, struct run_result *out)
{
    memset(out, 0, sizeof *out);
    out->mode = mode;
    out->loops = mode == MODE_SINGLE ? 1 : loops;
    out->cpus = usable_cpus();
    size_t n = w->tasks;
    struct run_ctx ctx = {.w = w, .mode = mode, .batches = batches};
    ctx.jobs = malloc(n * sizeof *ctx.jobs);
    ctx.tasks = calloc(n, sizeof *ctx.tasks);
    ctx.results = calloc(n, sizeof *ctx.results);
    if (!ctx.jobs || !ctx.tasks || !ctx.results) {
        free(ctx.jobs);
        free(ctx.tasks);
        free(ctx.results);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        ctx.jobs[i] = (struct job){.delay_ns = w->delay_ns[i], .units = w->units[i], .loop = -1};

    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = out->loops;
    int rc = corio_run(&cfg, experiment_main, &ctx, NULL);
    if (rc == 0)
        rc = ctx.error;
    out->error = rc;
    if (ctx.loops)
        out->loops = ctx.loops;
    if (rc == 0) {
        for (size_t i = 0; i < n; i++) {
            uint64_t m = w->units[i];
            uint64_t expect = m ? m * (m - 1) / 2 : 0;
            if (ctx.results[i] != &ctx.jobs[i] || ctx.jobs[i].sum != expect)
                out->wrong++;
        }
        out->results_ok = out->wrong == 0;
        out->wall_s = ctx.wall_ns / 1e9;
        /* With no more loops than CPUs each summation's elapsed time is
         * its cost on a CPU of its own, slowed by whatever else the host
         * runs, as the bound should be (experiment.h). With more loops
         * than CPUs the loops take turns on the CPUs, and a summation's
         * elapsed time also holds the other loops' turns: work already
         * counted in their own summations. Its thread's CPU time is then
         * the cost, and the bound is for the CPUs, not the loops. */
        bool shared = out->loops > out->cpus;
        double work_ns = 0, units = 0;
        for (size_t i = 0; i < n; i++) {
            work_ns += (double)(shared ? ctx.jobs[i].work_cpu_ns : ctx.jobs[i].work_ns);
            units += (double)w->units[i];
        }
        out->unit_ns = units > 0 ? work_ns / units : 0;
        out->cpu_s = workload_cpu_s(w, out->unit_ns);
        out->bound_s = workload_bound_s(w, out->unit_ns, shared ? out->cpus : out->loops);
        out->efficiency = out->wall_s > 0 ? out->bound_s / out->wall_s : 0;
        loop_stats(ctx.jobs, n, ctx.t0, out);
    }
    free(ctx.jobs);
    free(ctx.tasks);
    free(ctx.results);
    return rc;
}
