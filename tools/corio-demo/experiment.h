/*
 * experiment.h: the reference experiment of DESIGN.md, as corio-demo runs it.
 *
 * N tasks; task i sleeps delay_i (uniform 200..1000 ms, the "network
 * wait"), then sums the integers below units_i (uniform 100,000..500,000
 * times the work scale, the "parsing") with a loop the optimiser cannot
 * turn into n(n-1)/2, and returns the sum. The main task gathers all
 * results in task order and checks each one.
 *
 * The workload is generated from a seed with splitmix64, in the same order
 * as the peer programs in bench/peers/ (delay, then work, per task), so
 * corio, Go, Tokio and Python run exactly the same tasks.
 */
#ifndef CORIO_DEMO_EXPERIMENT_H
#define CORIO_DEMO_EXPERIMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * single   one loop
 * steal    all loops; each task sums where it slept (its home loop)
 * offload  all loops; each task hands its summation to a fresh task and
 *          waits for it: corio's idiom for CPU work after a wait, since a
 *          task that has run never moves but a fresh one goes to whichever
 *          loop is free (ARCHITECTURE.md, "Placement")
 * migrate  all loops; as steal, but the tasks are spawned CORIO_TASK_MIGRATE:
 *          a task woken from its sleep while its loop is busy is taken by
 *          an idle loop, as Go and Tokio move theirs (the demo's task keeps
 *          no thread-local address across its sleep, the flag's contract)
 * batches  all loops; the Python workaround, B static batches pinned
 *          round-robin, no stealing
 */
enum demo_mode { MODE_SINGLE, MODE_STEAL, MODE_OFFLOAD, MODE_MIGRATE, MODE_BATCHES };

struct workload {
    size_t tasks;
    double work_scale;
    uint64_t seed;
    int64_t *delay_ns; /* per task */
    uint64_t *units;   /* per task: iterations of the opaque sum */
};

struct run_result {
    enum demo_mode mode;
    unsigned loops;
    unsigned cpus;     /* CPUs this process may run on (affinity mask) */
    bool results_ok;
    size_t wrong;      /* tasks whose result was missing or wrong */
    int error;         /* corio error that stopped the run, or 0 */
    double wall_s;
    double unit_ns;    /* CPU cost per unit measured in this run: from
                        * elapsed time, or from thread CPU time when there
                        * are more loops than CPUs (experiment_run) */
    double cpu_s;      /* the workload's CPU time at that cost */
    double bound_s;
    double efficiency;
    /* Where the summations ran: the busiest loop's units over an even
     * share (1.0: perfectly even), and the least and most summation
     * seconds of any loop. */
    double loop_units_share_max;
    double loop_work_s_min, loop_work_s_max;
    /* The run's timeline, seconds from the first spawn: when the last
     * task began its sleep, when the first summation began, when the last
     * one ended and when the first loop to finish ended its last; and the
     * time a loop spent not summing between its first summation and its
     * last (mean and most over loops). The bound assumes summing can start
     * at the shortest sleep and never pauses; these say where a run lost
     * that (a slow start, gaps, or a ragged end). */
    double last_sleep_s, first_work_s, last_work_end_s, loop_end_s_min;
    double loop_gap_s_mean, loop_gap_s_max;
};

/* Fill w with tasks generated from seed. 0, or -ENOMEM. */
int workload_generate(struct workload *w, size_t tasks, double work_scale, uint64_t seed);
void workload_free(struct workload *w);

/* The sum of 0..units-1, computed one addition at a time. */
uint64_t opaque_sum(uint64_t units);

/* Nanoseconds per unit of opaque_sum on one core, timed before the runs:
 * the fastest of a few timed runs. Printed for reference only; the bound
 * uses the cost measured during each run (experiment_run), because the
 * speed of our shared VMs drifts by up to 2x within a minute. */
double calibrate_unit_ns(void);

/* The CPUs this process may run on: its affinity mask's count (1 if it
 * cannot be read). */
unsigned usable_cpus(void);

/* Total CPU seconds of the workload at unit_ns. */
double workload_cpu_s(const struct workload *w, double unit_ns);

/*
 * DESIGN.md's lower bound for any schedule on P cores:
 *   max( max_i(io_i + cpu_i), min_i(io_i) + sum_i(cpu_i) / P )
 */
double workload_bound_s(const struct workload *w, double unit_ns, unsigned cores);

/*
 * Run the workload once under corio in the given mode (`batches` is used
 * in MODE_BATCHES). Each task times its own summation; the run's cost per
 * unit is the total of those times over the total units, and the bound is
 * computed from it. A slow or contended machine thus slows the bound with
 * the run and the efficiency measures the scheduling, not the hardware.
 *
 * The bound is for P = min(loops, CPUs of the affinity mask) cores: more
 * loops than CPUs (oversubscription) cannot run faster than the CPUs. The
 * loops then take turns on the CPUs, so a summation's elapsed time would
 * include the other loops' turns; there the cost per unit comes from each
 * summation's thread CPU time instead.
 */
int experiment_run(const struct workload *w, enum demo_mode mode, unsigned loops,
                   unsigned batches, struct run_result *out);

const char *mode_name(enum demo_mode mode);

#endif
