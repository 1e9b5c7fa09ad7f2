/*
 * experiment.c: generating, running and bounding the reference experiment
 * (see experiment.h).
 */
#include "experiment.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

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
    int loop;              /* where it ran */
    corio_time_t slept_at; /* when the task began its sleep */
    corio_time_t work_at;  /* when the summation began */
};

static void *sum_task(void *arg)
{
    struct job *job = arg;
    corio_time_t t0 = corio_now();
    job->work_at = t0;
    uint64_t sum = opaque_sum(job->units);
    job->work_ns = corio_now() - t0;
    job->loop = corio_loop_index();
    return (void *)(uintptr_t)sum;
}

static void *seed_task(void *arg)
{
    struct job *job = arg;
    job->slept_at = corio_now();
    if (corio_sleep(job->delay_ns) != 0)
        return NULL; /* counted as a wrong result */
    return sum_task(job);
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
    return sum;
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

/* How evenly the summations fell on the loops: the busiest loop's share
 * of the units against an even share, and the least and most summation
 * time any loop did. Tells placement (uneven units) from speed (even
 * units, uneven time) when efficiency falls short. */
static void loop_spread(const struct job *jobs, size_t n, struct run_result *out)
{
    unsigned loops = out->loops;
    double *units = calloc(loops, sizeof *units);
    double *work = calloc(loops, sizeof *work);
    if (!units || !work) {
        free(units);
        free(work);
        return;
    }
    double total = 0;
    for (size_t i = 0; i < n; i++) {
        if (jobs[i].loop < 0 || (unsigned)jobs[i].loop >= loops)
            continue;
        units[jobs[i].loop] += (double)jobs[i].units;
        work[jobs[i].loop] += jobs[i].work_ns / 1e9;
        total += (double)jobs[i].units;
    }
    double max_units = 0;
    out->loop_work_s_min = loops ? work[0] : 0;
    for (unsigned l = 0; l < loops; l++) {
        if (units[l] > max_units)
            max_units = units[l];
        if (work[l] < out->loop_work_s_min)
            out->loop_work_s_min = work[l];
        if (work[l] > out->loop_work_s_max)
            out->loop_work_s_max = work[l];
    }
    out->loop_units_share_max = total > 0 ? max_units / (total / loops) : 0;
    free(units);
    free(work);
}

/* Where the wall went that the bound does not count: how long the tasks
 * took to get to their sleeps, when the first and last summation ran, and
 * the time each loop spent not summing between its first summation and
 * its last (scheduling overhead plus idling for want of ready work). */
static void timeline(const struct job *jobs, size_t n, corio_time_t t0, struct run_result *out)
{
    unsigned loops = out->loops;
    corio_time_t *first = malloc(loops * sizeof *first);
    corio_time_t *last = malloc(loops * sizeof *last);
    double *work = calloc(loops, sizeof *work);
    if (!first || !last || !work) {
        free(first);
        free(last);
        free(work);
        return;
    }
    for (unsigned l = 0; l < loops; l++) {
        first[l] = INT64_MAX;
        last[l] = INT64_MIN;
    }
    corio_time_t last_sleep = t0, first_work = INT64_MAX, last_end = t0;
    for (size_t i = 0; i < n; i++) {
        const struct job *j = &jobs[i];
        if (j->loop < 0 || (unsigned)j->loop >= loops)
            continue;
        corio_time_t end = j->work_at + j->work_ns;
        if (j->slept_at > last_sleep)
            last_sleep = j->slept_at;
        if (j->work_at < first_work)
            first_work = j->work_at;
        if (end > last_end)
            last_end = end;
        if (j->work_at < first[j->loop])
            first[j->loop] = j->work_at;
        if (end > last[j->loop])
            last[j->loop] = end;
        work[j->loop] += j->work_ns / 1e9;
    }
    double gap_sum = 0;
    unsigned busy = 0;
    out->loop_end_s_min = (last_end - t0) / 1e9;
    for (unsigned l = 0; l < loops; l++) {
        if (first[l] == INT64_MAX)
            continue;
        double gap = (last[l] - first[l]) / 1e9 - work[l];
        gap_sum += gap;
        busy++;
        if (gap > out->loop_gap_s_max)
            out->loop_gap_s_max = gap;
        if ((last[l] - t0) / 1e9 < out->loop_end_s_min)
            out->loop_end_s_min = (last[l] - t0) / 1e9;
    }
    out->loop_gap_s_mean = busy ? gap_sum / busy : 0;
    out->last_sleep_s = (last_sleep - t0) / 1e9;
    out->first_work_s = first_work == INT64_MAX ? 0 : (first_work - t0) / 1e9;
    out->last_work_end_s = (last_end - t0) / 1e9;
    free(first);
    free(last);
    free(work);
}

int experiment_run(const struct workload *w, enum demo_mode mode, unsigned loops,
                   unsigned batches, struct run_result *out)
{
    memset(out, 0, sizeof *out);
    out->mode = mode;
    out->loops = mode == MODE_SINGLE ? 1 : loops;
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
            if ((uint64_t)(uintptr_t)ctx.results[i] != expect)
                out->wrong++;
        }
        out->results_ok = out->wrong == 0;
        out->wall_s = ctx.wall_ns / 1e9;
        double work_ns = 0, units = 0;
        for (size_t i = 0; i < n; i++) {
            work_ns += (double)ctx.jobs[i].work_ns;
            units += (double)w->units[i];
        }
        out->unit_ns = units > 0 ? work_ns / units : 0;
        out->cpu_s = workload_cpu_s(w, out->unit_ns);
        out->bound_s = workload_bound_s(w, out->unit_ns, out->loops);
        out->efficiency = out->wall_s > 0 ? out->bound_s / out->wall_s : 0;
        loop_spread(ctx.jobs, n, out);
        timeline(ctx.jobs, n, ctx.t0, out);
    }
    free(ctx.jobs);
    free(ctx.tasks);
    free(ctx.results);
    return rc;
}
