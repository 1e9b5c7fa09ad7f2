/*
 * accept_loops.h: the server skeleton the examples share: one listener per
 * corio loop on the same port (SO_REUSEPORT, so the kernel spreads the
 * connections), each with an accept loop that hands every connection to a
 * task pinned to that loop. Running out of descriptors pauses accepting
 * for 10 ms instead of stopping the server.
 */
#ifndef CORIO_EXAMPLE_ACCEPT_LOOPS_H
#define CORIO_EXAMPLE_ACCEPT_LOOPS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "corio.h"

struct server {
    const char *name; /* for messages */
    uint16_t port;
    corio_fn serve;   /* serve(fd as intptr_t): one connection, then close it */
};

struct accept_args {
    const struct server *server;
    int listener;
};

static void *accept_loop(void *arg)
{
    struct accept_args *a = arg;
    unsigned here = (unsigned)corio_loop_index();
    for (;;) {
        int fd = corio_accept(a->listener, NULL, NULL);
        if (fd == CORIO_EMFILE || fd == CORIO_ENFILE) {
            /* The connection waits in the backlog until some close. */
            corio_sleep(10 * CORIO_MSEC);
            continue;
        }
        if (fd < 0) {
            fprintf(stderr, "%s: accept: %s\n", a->server->name, corio_strerror(fd));
            return NULL;
        }
        if (corio_spawn_on(NULL, here, a->server->serve, (void *)(intptr_t)fd) != 0)
            corio_close(fd);
    }
}

/* corio_run's main: start the accept loops, print a "listening" line, run
 * until killed. */
static void *run_server(void *arg)
{
    const struct server *s = arg;
    unsigned loops = corio_loop_count();
    corio_task **acceptors = calloc(loops, sizeof *acceptors);
    struct accept_args *args = calloc(loops, sizeof *args);
    if (!acceptors || !args) {
        fprintf(stderr, "%s: out of memory\n", s->name);
        exit(1);
    }
    for (unsigned i = 0; i < loops; i++) {
        int fd = corio_listen_tcp("127.0.0.1", s->port, 4096, CORIO_LISTEN_REUSEPORT);
        if (fd < 0) {
            fprintf(stderr, "%s: cannot listen on port %u: %s\n", s->name, s->port,
                    corio_strerror(fd));
            exit(1);
        }
        args[i] = (struct accept_args){s, fd};
        if (corio_spawn_on(&acceptors[i], i, accept_loop, &args[i]) != 0) {
            fprintf(stderr, "%s: cannot start accept loop %u\n", s->name, i);
            exit(1);
        }
    }
    printf("%s: listening on 127.0.0.1:%u with %u loops\n", s->name, s->port, loops);
    fflush(stdout);
    corio_gather(acceptors, loops, NULL);
    free(acceptors);
    free(args);
    return NULL;
}

#endif
