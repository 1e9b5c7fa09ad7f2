/*
 * example_args.h: the tiny "--name value" parser the examples share.
 * Bad input prints one line and exits 2.
 */
#ifndef CORIO_EXAMPLE_ARGS_H
#define CORIO_EXAMPLE_ARGS_H

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ARG_PORT: a port to listen on, 0 for any free one; ARG_PEER_PORT: a
 * port to connect to, where 0 means nothing. */
enum arg_kind { ARG_PORT, ARG_PEER_PORT, ARG_LOOPS, ARG_COUNT };

struct example_arg {
    const char *name;
    void *target; /* uint16_t for ARG_PORT and ARG_PEER_PORT, unsigned otherwise */
    enum arg_kind kind;
    unsigned long max; /* the largest value; 0: the kind's (65535, 1024, 100000000) */
};

/* Exit 2 after "<prog>: <before>'<arg>'<after>", each control character
 * of arg shown as \xHH: an argument holding a newline must not break the
 * one-line message in two. */
static inline void refuse_arg(const char *prog, const char *before, const char *arg,
                              const char *after)
{
    fprintf(stderr, "%s: %s'", prog, before);
    for (; *arg; arg++) {
        if (iscntrl((unsigned char)*arg))
            fprintf(stderr, "\\x%02x", (unsigned char)*arg);
        else
            fputc(*arg, stderr);
    }
    fprintf(stderr, "'%s\n", after);
    exit(2);
}

static inline void parse_example_args(const char *prog, int argc, char **argv,
                                      const struct example_arg *args, size_t nargs)
{
    unsigned long long given = 0; /* bit k: args[k] was seen (nargs <= 64) */
    for (int i = 1; i < argc; i++) {
        const struct example_arg *a = NULL;
        for (size_t k = 0; k < nargs; k++)
            if (strcmp(argv[i], args[k].name) == 0)
                a = &args[k];
        if (!a)
            refuse_arg(prog, "unknown option ", argv[i], "");
        /* A second value would silently replace the first. */
        unsigned long long bit = 1ull << (a - args);
        if (given & bit) {
            fprintf(stderr, "%s: %s given more than once\n", prog, a->name);
            exit(2);
        }
        given |= bit;
        if (i + 1 >= argc) {
            fprintf(stderr, "%s: %s needs a value\n", prog, a->name);
            exit(2);
        }
        const char *v = argv[++i];
        char *end;
        errno = 0;
        unsigned long n = strtoul(v, &end, 10);
        bool port = a->kind == ARG_PORT || a->kind == ARG_PEER_PORT;
        unsigned long max = a->max         ? a->max
                            : port             ? 65535
                            : a->kind == ARG_LOOPS ? 1024
                                               : 100000000;
        unsigned long min = a->kind == ARG_PORT ? 0 : 1;
        /* Digits only: strtoul would also take leading blanks and signs
         * (" -1" as ULONG_MAX). */
        if (!isdigit((unsigned char)v[0]) || errno || *end || n < min || n > max) {
            char before[96];
            snprintf(before, sizeof before, "%s needs an integer from %lu to %lu, got ", a->name,
                     min, max);
            refuse_arg(prog, before, v, "");
        }
        if (port)
            *(uint16_t *)a->target = (uint16_t)n;
        else
            *(unsigned *)a->target = (unsigned)n;
    }
}

#endif
