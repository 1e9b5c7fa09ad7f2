/*
 * corio-demo: the reference experiment of DESIGN.md, run on corio.
 *
 * With no arguments it runs the experiment five ways on the same seeded
 * workload and prints one table:
 *   single   everything on one loop (what asyncio gives you);
 *   steal    all loops, never-run tasks spread by work stealing;
 *   migrate  as steal, and a woken task may move to an idle loop;
 *   offload  as steal, each task handing its summation to a fresh task;
 *   batches  all loops, the Python workaround: B equal batches pinned
 *            round-robin to loops, no stealing.
 * (experiment.h says more about each.)
 * Efficiency = lower bound / wall, the bound computed from the generated
 * delays and the measured CPU cost per unit of work, for P = min(loops,
 * CPUs this process may run on) cores (experiment.h).
 *
 * Exit status: 0 when every run returned every result correctly, 1 when a
 * run failed, a result was wrong or the output could not be written, 2
 * for bad options.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corio.h"
#include "experiment.h"
#include "options.h"

/* A run's loop count as text: `unknown` when it is 0, which happens
 * only when a run meant to use the default count failed before the
 * runtime resolved it. */
static const char *loops_text(char buf[16], unsigned loops, const char *unknown)
{
    if (!loops)
        return unknown;
    snprintf(buf, 16, "%u", loops);
    return buf;
}

/* x in the fewest digits that read back as x (%g's 6 would turn 1.23456789
 * into 1.23457: not the work scale the run used). */
static const char *exact_text(char buf[32], double x)
{
    for (int digits = 6; digits < 17; digits++) {
        snprintf(buf, 32, "%.*g", digits, x);
        if (strtod(buf, NULL) == x)
            return buf;
    }
    snprintf(buf, 32, "%.17g", x);
    return buf;
}

static void print_json(const struct demo_options *opt, const struct run_result *r,
                       double calib_unit_ns)
{
    char loops[16], scale[32];
    printf("{\"system\":\"corio\",\"mode\":\"%s\",\"loops\":%s,\"cpus\":%u,\"tasks\":%zu,"
           "\"work_scale\":%s,\"seed\":%llu,\"results_ok\":%s,\"wall_s\":%.4f,"
           "\"bound_s\":%.4f,\"efficiency\":%.4f,\"cpu_s\":%.4f,\"unit_ns\":%.5f,"
           "\"calib_unit_ns\":%.5f",
           mode_name(r->mode), loops_text(loops, r->loops, "null"), r->cpus, opt->tasks,
           exact_text(scale, opt->work_scale),
           (unsigned long long)opt->seed, r->results_ok ? "true" : "false", r->wall_s,
           r->bound_s, r->efficiency, r->cpu_s, r->unit_ns, calib_unit_ns);
    if (r->results_ok) {
        printf(",\"loop_units_share_max\":%.4f,\"loop_work_s_min\":%.4f,"
               "\"loop_work_s_max\":%.4f",
               r->loop_units_share_max, r->loop_work_s_min, r->loop_work_s_max);
        printf(",\"last_sleep_s\":%.4f,\"first_work_s\":%.4f,\"last_work_end_s\":%.4f,"
               "\"loop_end_s_min\":%.4f,\"loop_gap_s_mean\":%.4f,\"loop_gap_s_max\":%.4f",
               r->last_sleep_s, r->first_work_s, r->last_work_end_s, r->loop_end_s_min,
               r->loop_gap_s_mean, r->loop_gap_s_max);
    }
    if (r->mode == MODE_BATCHES)
        printf(",\"batches\":%u", opt->batches);
    if (r->error)
        printf(",\"error\":\"%s\"", corio_err_name(r->error));
    printf("}\n");
    fflush(stdout);
}

extern char **environ;

static void *probe_main(void *arg) { return arg; }

/* corio_run reads the CORIO_* environment variables (corio.h). Try them
 * once before any experiment, so that a bad one is a one-line error and
 * exit 2, like a bad option, instead of a table of failed runs. With the
 * default configuration CORIO_EINVAL can only come from the environment;
 * any other failure shows in the runs themselves. */
static int check_environment(void)
{
    if (corio_run(NULL, probe_main, NULL, NULL) != CORIO_EINVAL)
        return 0;
    fprintf(stderr, "corio-demo: invalid CORIO_* environment variable among:");
    for (char **e = environ; *e; e++)
        if (strncmp(*e, "CORIO_", 6) == 0) {
            fputc(' ', stderr);
            put_visible(*e, stderr);
        }
    fprintf(stderr, "\n");
    return 2;
}

int main(int argc, char **argv)
{
    struct demo_options opt;
    int rc = parse_options(argc, argv, &opt);
    if (rc == 1)
        return 0;
    if (rc != 0)
        return 2;
    if (check_environment() != 0)
        return 2;

    struct workload w;
    if (workload_generate(&w, opt.tasks, opt.work_scale, opt.seed) != 0) {
        fprintf(stderr, "corio-demo: out of memory for %zu tasks\n", opt.tasks);
        return 1;
    }
    double calib_unit_ns = calibrate_unit_ns();
    double cpu_s = workload_cpu_s(&w, calib_unit_ns);

    enum demo_mode modes[] = {MODE_SINGLE, MODE_STEAL, MODE_MIGRATE, MODE_OFFLOAD, MODE_BATCHES};
    size_t nmodes = sizeof modes / sizeof modes[0];
    if (!opt.all_modes) {
        modes[0] = opt.mode;
        nmodes = 1;
    }
    if (!opt.json)
        printf("corio-demo: %zu tasks, sleep 200-1000 ms, work scale %g (about %.1f s of CPU "
               "at %.3f ns/unit), seed %llu\n\n"
               "%-8s %5s %7s %9s %11s %10s %8s %8s\n",
               opt.tasks, opt.work_scale, cpu_s, calib_unit_ns, (unsigned long long)opt.seed,
               "mode", "loops", "tasks", "wall", "lower bound", "efficiency", "speedup",
               "ns/unit");

    double single_wall = 0;
    int status = 0;
    for (size_t m = 0; m < nmodes; m++) {
        struct run_result r;
        rc = experiment_run(&w, modes[m], opt.loops, opt.batches, &r);
        if (rc == -12 /* ENOMEM from the harness itself */ && r.error == 0)
            r.error = rc;
        if (!r.results_ok)
            status = 1;
        if (opt.json) {
            print_json(&opt, &r, calib_unit_ns);
            continue;
        }
        if (r.error) {
            /* corio_run's EINVAL, with the options checked already, can
             * only be a CORIO_* environment variable: say so. */
            char loops[16];
            printf("%-8s %5s %7zu   failed: %s%s\n", mode_name(r.mode),
                   loops_text(loops, r.loops, "-"), opt.tasks,
                   corio_strerror(r.error),
                   r.error == CORIO_EINVAL ? " (check the CORIO_* environment variables)" : "");
            continue;
        }
        if (r.mode == MODE_SINGLE)
            single_wall = r.wall_s;
        char speedup[16] = "-";
        if (single_wall > 0)
            snprintf(speedup, sizeof speedup, "%.2fx", single_wall / r.wall_s);
        printf("%-8s %5u %7zu %8.2fs %10.2fs %10.3f %8s %8.3f%s\n", mode_name(r.mode), r.loops,
               opt.tasks, r.wall_s, r.bound_s, r.efficiency, speedup, r.unit_ns,
               r.results_ok ? "" : "   WRONG RESULTS");
        if (!r.results_ok)
            printf("  %zu of %zu results missing or wrong\n", r.wrong, opt.tasks);
        fflush(stdout);
    }
    if (!opt.json)
        printf("\nlower bound = max(max_i(io_i + cpu_i), min_i(io_i) + sum_i(cpu_i) / P), "
               "P = min(loops, %u CPUs), cpu_i = units_i x the run's measured ns/unit "
               "(thread CPU time where loops > CPUs); efficiency = bound / wall\n",
               usable_cpus());
    workload_free(&w);
    /* Results nobody could read are no results: a full disk gets a
     * one-line reason and exit 1, not a silent 0. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "corio-demo: could not write the results to standard output\n");
        return 1;
    }
    return status;
}
