/*
 * echo-server: echoes back whatever each connection sends.
 *
 *   echo-server [--port P] [--loops N]
 *
 * One accept loop per corio loop, each on its own SO_REUSEPORT listener,
 * so the kernel spreads connections over the loops; each connection is a
 * task pinned to the loop that accepted it. Runs until SIGINT or SIGTERM,
 * then says so and exits 0; exits 1 if it cannot listen, or accept fails
 * for good. --port 0: any free port, which the "listening" line names.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corio.h"
#include "accept_loops.h"
#include "example_args.h"

static const uint16_t default_port = 7000;

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

int main(int argc, char **argv)
{
    corio_config cfg;
    corio_config_init(&cfg);
    struct server server = {"echo-server", default_port, serve_connection};
    struct example_arg args[] = {
        {"--port", &server.port, ARG_PORT, 0},
        {"--loops", &cfg.loops, ARG_LOOPS, 0},
    };
    parse_example_args("echo-server", argc, argv, args, sizeof args / sizeof args[0]);
    block_stop_signals(); /* before the runtime's threads, which inherit the mask */
    void *failed = NULL; /* run_server's failure, having said why */
    int rc = corio_run(&cfg, run_server, &server, &failed);
    if (rc != 0) {
        fprintf(stderr, "echo-server: %s\n", corio_strerror(rc));
        return 1;
    }
    return failed ? 1 : 0;
}
