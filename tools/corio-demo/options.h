/* options.h: corio-demo's command line. */
#ifndef CORIO_DEMO_OPTIONS_H
#define CORIO_DEMO_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "experiment.h"

/* Chosen so that the five default runs take under 30 s on a 2-core
 * machine of ours even in its slow phases (measured 0.38-0.64 ns per
 * unit, so 10,000 tasks at scale 4 are 4.6-7.7 s of CPU; scale 6 took
 * 25-39 s) while the CPU share still dwarfs the 1 s of waiting, which is
 * what makes the multi-core effect plain. */
#define DEMO_DEFAULT_WORK_SCALE 4.0
#define DEMO_DEFAULT_TASKS 10000
#define DEMO_DEFAULT_BATCHES 5

struct demo_options {
    size_t tasks;
    unsigned loops;      /* 0: corio's default (all CPUs) */
    double work_scale;
    bool all_modes;      /* no --mode: all five, single first */
    enum demo_mode mode;
    unsigned batches;
    uint64_t seed;
    bool json;
};

/* Parse argv. Returns 0 to run, 1 when --help was printed, 2 after printing
 * a one-line error. */
int parse_options(int argc, char **argv, struct demo_options *opt);

/* Write s to f with each control character as \xHH: an argument or an
 * environment variable holding a newline must not break a one-line
 * error message in two. */
void put_visible(const char *s, FILE *f);

#endif
