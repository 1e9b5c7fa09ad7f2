/* options.h: corio-demo's command line. */
#ifndef CORIO_DEMO_OPTIONS_H
#define CORIO_DEMO_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "experiment.h"

/* Chosen so that the three default runs take about 20 s on a 2-core
 * machine of ours (calibrated ~0.33 ns per unit: 10,000 tasks at scale 10
 * is ~10 s of CPU) while the CPU share dwarfs the 1 s of waiting, which
 * is what makes the multi-core effect plain. */
#define DEMO_DEFAULT_WORK_SCALE 10.0
#define DEMO_DEFAULT_TASKS 10000
#define DEMO_DEFAULT_BATCHES 5

struct demo_options {
    size_t tasks;
    unsigned loops;      /* 0: corio's default (all CPUs) */
    double work_scale;
    bool all_modes;      /* no --mode: single, steal and batches */
    enum demo_mode mode;
    unsigned batches;
    uint64_t seed;
    bool json;
};

/* Parse argv. Returns 0 to run, 1 when --help was printed, 2 after printing
 * a one-line error. */
int parse_options(int argc, char **argv, struct demo_options *opt);

#endif
