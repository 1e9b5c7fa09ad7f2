/*
 * options.c: corio-demo's command line: long options, "--opt value" or
 * "--opt=value". Any mistake is reported in one line and exits 2.
 */
#include "options.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: corio-demo [--tasks N] [--loops N] [--work-scale K]\n"
    "                  [--mode single|steal|offload|migrate|batches]\n"
    "                  [--batches B] [--seed S] [--json]\n"
    "\n"
    "Runs DESIGN.md's reference experiment: N tasks (default 10000) each sleep a\n"
    "random 200-1000 ms, then sum the integers below a random 100,000-500,000 times\n"
    "K (default 4), and are gathered in order. Without --mode it runs five ways\n"
    "(1 loop; all loops with each task summing where it slept; the same with\n"
    "tasks that may move to an idle loop when woken; all loops with each sum\n"
    "handed to a fresh task; all loops with 5 static batches) and prints one\n"
    "table. --json prints one JSON object per run instead.\n"
    "\n"
    "--loops sets the loops of every run but single; --batches the batches run's\n"
    "batch count (5). Given with a --mode that does not use it (--loops above 1\n"
    "with single), either is an error. --loops may exceed the CPUs (the affinity\n"
    "mask's): the lower bound is then for P = min(loops, CPUs) cores, with each\n"
    "summation's cost from its thread's CPU time; JSON's \"cpus\" gives the count.\n";

void put_visible(const char *s, FILE *f)
{
    for (; *s; s++) {
        if (iscntrl((unsigned char)*s))
            fprintf(f, "\\x%02x", (unsigned char)*s);
        else
            fputc(*s, f);
    }
}

/* "corio-demo: <before>'<arg>'<after>", the argument as put_visible shows
 * it. Returns 2, the exit status. */
static int refuse(const char *before, const char *arg, const char *after)
{
    fprintf(stderr, "corio-demo: %s'", before);
    put_visible(arg, stderr);
    fprintf(stderr, "'%s\n", after);
    return 2;
}

static int bad(const char *opt, const char *want, const char *got)
{
    char before[128];
    snprintf(before, sizeof before, "%s needs %s, got ", opt, want);
    return refuse(before, got, "");
}

static bool parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    /* Digits only: strtoull would also take leading blanks and a sign,
     * and turn " -1" into UINT64_MAX. */
    if (!isdigit((unsigned char)*s))
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* The options that take a value, by name; -1 for any other name. */
static int option_index(const char *name)
{
    static const char *const names[] = {"--tasks", "--loops", "--work-scale",
                                        "--mode",  "--batches", "--seed"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(name, names[i]))
            return (int)i;
    return -1;
}

int parse_options(int argc, char **argv, struct demo_options *opt)
{
    *opt = (struct demo_options){
        .tasks = DEMO_DEFAULT_TASKS,
        .work_scale = DEMO_DEFAULT_WORK_SCALE,
        .all_modes = true,
        .mode = MODE_STEAL,
        .batches = DEMO_DEFAULT_BATCHES,
        .seed = 1,
    };
    bool batches_given = false;
    unsigned given = 0; /* bit option_index(name): the option was seen */
    for (int i = 1; i < argc; i++) {
        char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            fputs(usage, stdout);
            return 1;
        }
        if (strcmp(arg, "--json") == 0) {
            /* Harmless twice, but refused like any option given twice:
             * one rule, which the README states. */
            if (opt->json) {
                fprintf(stderr, "corio-demo: --json given more than once\n");
                return 2;
            }
            opt->json = true;
            continue;
        }
        if (strncmp(arg, "--json=", 7) == 0) {
            return refuse("--json takes no value, got ", arg, "");
        }
        if (strncmp(arg, "--", 2) != 0) {
            return refuse("unexpected argument ", arg, " (try --help)");
        }
        /* --name=value or --name value */
        char name[32];
        const char *value = strchr(arg, '=');
        size_t len = value ? (size_t)(value - arg) : strlen(arg);
        if (len >= sizeof name) {
            return refuse("unknown option ", arg, " (try --help)");
        }
        memcpy(name, arg, len);
        name[len] = '\0';
        int which = option_index(name);
        if (which < 0) {
            return refuse("unknown option ", name, " (try --help)");
        }
        /* A second value would silently replace the first: "--mode single
         * --mode steal" reads like two runs but would be one. */
        if (given & (1u << which)) {
            fprintf(stderr, "corio-demo: %s given more than once\n", name);
            return 2;
        }
        given |= 1u << which;
        if (value) {
            value++;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            fprintf(stderr, "corio-demo: %s needs a value\n", name);
            return 2;
        }

        uint64_t v;
        if (!strcmp(name, "--tasks")) {
            if (!parse_u64(value, 1, 10000000, &v))
                return bad(name, "an integer from 1 to 10000000", value);
            opt->tasks = v;
        } else if (!strcmp(name, "--loops")) {
            if (!parse_u64(value, 1, 1024, &v))
                return bad(name, "an integer from 1 to 1024", value);
            opt->loops = (unsigned)v;
        } else if (!strcmp(name, "--batches")) {
            if (!parse_u64(value, 1, 1000000, &v))
                return bad(name, "an integer from 1 to 1000000", value);
            opt->batches = (unsigned)v;
            batches_given = true;
        } else if (!strcmp(name, "--seed")) {
            if (!parse_u64(value, 0, UINT64_MAX, &v))
                return bad(name, "an unsigned 64-bit integer", value);
            opt->seed = v;
        } else if (!strcmp(name, "--work-scale")) {
            /* A plain decimal, as for the integers: no blank, sign,
             * "inf", "nan" or hexadecimal, which strtod would take. */
            bool plain = (isdigit((unsigned char)value[0]) ||
                          (value[0] == '.' && isdigit((unsigned char)value[1]))) &&
                         !strpbrk(value, "xX");
            char *end = NULL;
            errno = 0;
            double k = plain ? strtod(value, &end) : 0;
            /* ERANGE for a tiny value that is still above 0 (subnormal)
             * is no reason to refuse it; an underflow to 0 is refused as
             * 0 is, an overflow as above 1000. */
            if (!plain || *end || !isfinite(k) || k <= 0 || k > 1000)
                return bad(name, "a number greater than 0 and at most 1000", value);
            opt->work_scale = k;
        } else { /* --mode */
            if (!strcmp(value, "single"))
                opt->mode = MODE_SINGLE;
            else if (!strcmp(value, "steal"))
                opt->mode = MODE_STEAL;
            else if (!strcmp(value, "offload"))
                opt->mode = MODE_OFFLOAD;
            else if (!strcmp(value, "migrate"))
                opt->mode = MODE_MIGRATE;
            else if (!strcmp(value, "batches"))
                opt->mode = MODE_BATCHES;
            else
                return bad(name, "single, steal, offload, migrate or batches", value);
            opt->all_modes = false;
        }
    }
    /* An option the chosen mode has no use for would be silently
     * ignored, and the run would not be the one asked for. Without
     * --mode each applies to the runs that use it (--batches to the
     * batches run, --loops to every run but single). */
    if (!opt->all_modes && batches_given && opt->mode != MODE_BATCHES) {
        fprintf(stderr, "corio-demo: --batches applies to --mode batches only\n");
        return 2;
    }
    if (!opt->all_modes && opt->mode == MODE_SINGLE && opt->loops > 1) {
        fprintf(stderr, "corio-demo: --loops %u does not apply to --mode single (always 1 loop)\n",
                opt->loops);
        return 2;
    }
    if (batches_given && opt->batches > opt->tasks) {
        fprintf(stderr, "corio-demo: --batches %u is more than --tasks %zu\n", opt->batches,
                opt->tasks);
        return 2;
    }
    /* The default fits itself to fewer tasks than batches: an empty batch
     * would only skew the batches run, and other modes do not use it. */
    if (opt->batches > opt->tasks)
        opt->batches = (unsigned)opt->tasks;
    return 0;
}
