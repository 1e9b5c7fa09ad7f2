/* options.h: corio-demo's command line. */
#ifndef CORIO_DEMO_OPTIONS_H
#define CORIO_DEMO_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "experiment.h"

/* Chosen so that the four default runs take 20-28 s on a 2-core machine
 * of ours (measured 0.38-0.60 ns per unit, so 10,000 tasks at scale 6 are
 * 7-11 s of CPU) while the CPU share dwarfs the 1 s of waiting, which is
 * what makes the multi-core effect plain. */
#define DEMO_DEFAULT_WORK_SCALE 6.0
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
