/*
 * echo-server: echoes back whatever each connection sends.
 *
 *   echo-server [--port P] [--loops N]
 *
 * One accept loop per corio loop, each on its own SO_REUSEPORT listener,
 * so the kernel spreads connections over the loops; each connection is a
 * task pinned to the loop that accepted it. Runs until killed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corio.h"
#include "example_args.h"

static uint16_t port = 7000;

static void *serve_connection(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[16384];
    for (;;) {
        ssize_t n = corio_read(fd, buf, sizeof buf);
        if (n <= 0)
            break;
        if (corio_write(fd, buf, (size_t)n) < 0)
            break;
    }
    corio_close(fd);
    return NULL;
}

static void *accept_loop(void *arg)
{
    int listener = (int)(intptr_t)arg;
    unsigned here = (unsigned)corio_loop_index();
    for (;;) {
        int fd = corio_accept(listener, NULL, NULL);
        if (fd == CORIO_EMFILE || fd == CORIO_ENFILE) {
            /* Out of descriptors: the connection waits in the backlog
             * until some close. */
            corio_sleep(10 * CORIO_MSEC);
            continue;
        }
        if (fd < 0) {
            fprintf(stderr, "echo-server: accept: %s\n", corio_strerror(fd));
            return NULL;
        }
        if (corio_spawn_on(NULL, here, serve_connection, (void *)(intptr_t)fd) != 0)
            corio_close(fd);
    }
}

static void *server_main(void *arg)
{
    unsigned loops = corio_loop_count();
    corio_task **acceptors = calloc(loops, sizeof *acceptors);
    for (unsigned i = 0; i < loops; i++) {
        int fd = corio_listen_tcp("127.0.0.1", port, 1024, CORIO_LISTEN_REUSEPORT);
        if (fd < 0) {
            fprintf(stderr, "echo-server: cannot listen on port %u: %s\n", port,
                    corio_strerror(fd));
            exit(1);
        }
        corio_spawn_on(&acceptors[i], i, accept_loop, (void *)(intptr_t)fd);
    }
    printf("echo-server: listening on 127.0.0.1:%u with %u loops\n", port, loops);
    fflush(stdout);
    corio_gather(acceptors, loops, NULL);
    free(acceptors);
    return NULL;
}

int main(int argc, char **argv)
{
    corio_config cfg;
    corio_config_init(&cfg);
    struct example_arg args[] = {
        {"--port", &port, ARG_PORT},
        {"--loops", &cfg.loops, ARG_LOOPS},
    };
    parse_example_args("echo-server", argc, argv, args, sizeof args / sizeof args[0]);
    int rc = corio_run(&cfg, server_main, NULL, NULL);
    if (rc != 0) {
        fprintf(stderr, "echo-server: %s\n", corio_strerror(rc));
        return 1;
    }
    return 0;
}
