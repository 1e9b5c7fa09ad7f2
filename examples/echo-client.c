/*
 * echo-client: opens many connections to an echo server at once, sends
 * messages on each and checks every byte that comes back.
 *
 *   echo-client [--port P] [--connections C] [--messages M] [--size S]
 *
 * Each connection is a task: write a message, read until the same number
 * of bytes came back, compare, repeat. Exit status 0 only if every
 * connection echoed every message exactly.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corio.h"
#include "example_args.h"

static uint16_t port = 7000;
static unsigned connections = 100, messages = 100, size = 1000;

static void *one_connection(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    intptr_t status = 1; /* failure unless proven otherwise */
    char *out = malloc(size), *in = malloc(size);
    int fd = corio_connect_tcp("127.0.0.1", port, corio_deadline_in(10 * CORIO_SEC));
    if (fd < 0 || !out || !in) {
        fprintf(stderr, "echo-client: connection %u: %s\n", id,
                fd < 0 ? corio_strerror(fd) : "out of memory");
        goto done;
    }
    for (unsigned m = 0; m < messages; m++) {
        for (unsigned b = 0; b < size; b++)
            out[b] = (char)(id * 31 + m * 7 + b);
        if (corio_write(fd, out, size) < 0)
            goto done;
        size_t got = 0;
        while (got < size) {
            corio_time_t deadline = corio_deadline_in(10 * CORIO_SEC);
            ssize_t n = corio_read_until(fd, in + got, size - got, deadline);
            if (n <= 0) {
                fprintf(stderr, "echo-client: connection %u: read: %s\n", id,
                        n == 0 ? "connection closed" : corio_strerror((int)n));
                goto done;
            }
            got += (size_t)n;
        }
        if (memcmp(in, out, size) != 0) {
            fprintf(stderr, "echo-client: connection %u: message %u came back different\n", id, m);
            goto done;
        }
    }
    status = 0;
done:
    if (fd >= 0)
        corio_close(fd);
    free(out);
    free(in);
    return (void *)status;
}

static void *client_main(void *arg)
{
    corio_task **tasks = calloc(connections, sizeof *tasks);
    void **results = calloc(connections, sizeof *results);
    corio_time_t t0 = corio_now();
    for (unsigned i = 0; i < connections; i++)
        if (corio_spawn(&tasks[i], one_connection, (void *)(uintptr_t)i) != 0)
            return (void *)1;
    corio_gather(tasks, connections, results);
    unsigned failed = 0;
    for (unsigned i = 0; i < connections; i++)
        failed += results[i] != NULL;
    double s = (corio_now() - t0) / 1e9;
    printf("echo-client: %u connections x %u messages x %u bytes: %u failed, %.3f s, %.0f msg/s\n",
           connections, messages, size, failed, s, connections * (double)messages / s);
    free(tasks);
    free(results);
    return (void *)(uintptr_t)(failed != 0);
}

int main(int argc, char **argv)
{
    corio_config cfg;
    corio_config_init(&cfg);
    struct example_arg args[] = {
        {"--port", &port, ARG_PORT},
        {"--connections", &connections, ARG_COUNT},
        {"--messages", &messages, ARG_COUNT},
        {"--size", &size, ARG_COUNT},
        {"--loops", &cfg.loops, ARG_LOOPS},
    };
    parse_example_args("echo-client", argc, argv, args, sizeof args / sizeof args[0]);
    void *failed = NULL;
    int rc = corio_run(&cfg, client_main, NULL, &failed);
    if (rc != 0) {
        fprintf(stderr, "echo-client: %s\n", corio_strerror(rc));
        return 1;
    }
    return failed ? 1 : 0;
}
