/*
 * echo-client: opens many connections to an echo server at once, sends
 * messages on each and checks every byte that comes back.
 *
 *   echo-client [--port P] [--connections C] [--messages M] [--size S]
 *
 * Each connection is a task: send a message, read until the same number
 * of bytes came back, compare, repeat. A second task writes each message
 * while the first reads, so a message of any size flows through the
 * socket buffers instead of filling them. Exit status 0 only if every
 * connection echoed every message exactly, 2 (one line) for bad options:
 * up to 65535 connections, no more than the descriptors left under the
 * open-file limit, messages of up to 64 MiB, and all the connections'
 * buffers (2 x C x S bytes) within half the machine's memory.
 */
#include <dirent.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "corio.h"
#include "example_args.h"

#define CHUNK 65536 /* the most one write waits for under one deadline */
#define IO_TIMEOUT (10 * CORIO_SEC)

/* Every connection is open at once, from 127.0.0.1 to one address and
 * port, so each needs a source port of its own: 65535 at the very most
 * (the kernel's ephemeral range is smaller still, and the descriptor
 * limit usually smaller again: descriptors_left checks that one). */
#define MAX_CONNECTIONS 65535
/* A message is one buffer each way; it flows in CHUNK pieces, so larger
 * ones only cost memory and measure nothing new. */
#define MAX_SIZE (64u << 20)

static uint16_t port = 7000;
static unsigned connections = 100, messages = 100, size = 1000;

/* A connection's result: where it echoed everything, or where it failed.
 * Neither is NULL, the result of a task that never ran (no stack). */
static char connection_ok, connection_failed;

/* Messages that came back intact, over all connections: the rate counts
 * these, not what was asked for. */
static _Atomic unsigned long long echoed;

static void report(unsigned id, const char *what, int err)
{
    /* A cancelled connection was stopped by client_main, which says why. */
    if (err != CORIO_ECANCELED)
        fprintf(stderr, "echo-client: connection %u: %s: %s\n", id, what, corio_strerror(err));
}

struct message {
    int fd;
    const char *buf;
    size_t len;
};

/* Write one message while the connection's task reads the echo. Chunk by
 * chunk, each with its own deadline: a peer that stops reading fails the
 * write, a slow one that keeps up does not. The result is 0 or an error. */
static void *write_message(void *arg)
{
    const struct message *msg = arg;
    for (size_t off = 0; off < msg->len; off += CHUNK) {
        size_t len = msg->len - off < CHUNK ? msg->len - off : CHUNK;
        ssize_t n = corio_write_until(msg->fd, msg->buf + off, len,
                                      corio_deadline_in(IO_TIMEOUT));
        if (n < 0) {
            /* The reader would wait for an echo that cannot come: its
             * read now sees end of stream, and the join says why. */
            corio_shutdown(msg->fd, SHUT_RD);
            return (void *)(intptr_t)n;
        }
    }
    return NULL;
}

static void *one_connection(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    void *status = &connection_failed; /* unless proven otherwise */
    char *out = malloc(size), *in = malloc(size);
    int fd = CORIO_ENOMEM;
    if (!out || !in) {
        report(id, "buffers", CORIO_ENOMEM);
        goto done;
    }
    fd = corio_connect_tcp("127.0.0.1", port, corio_deadline_in(IO_TIMEOUT));
    if (fd < 0) {
        report(id, "connect", fd);
        goto done;
    }
    for (unsigned m = 0; m < messages; m++) {
        for (unsigned b = 0; b < size; b++)
            out[b] = (char)(id * 31 + m * 7 + b);
        /* Write and read at once: written first, a message larger than
         * the socket buffers would leave client and server both blocked
         * writing to a peer that does not read. */
        struct message msg = {fd, out, size};
        corio_task *writer;
        int rc = corio_spawn_on(&writer, (unsigned)corio_loop_index(), write_message, &msg);
        if (rc != 0) {
            report(id, "write", rc);
            goto done;
        }
        size_t got = 0;
        ssize_t n = 1;
        while (got < size) {
            n = corio_read_until(fd, in + got, size - got, corio_deadline_in(IO_TIMEOUT));
            if (n <= 0)
                break;
            got += (size_t)n;
        }
        if (got < size)
            corio_cancel(writer);
        void *werr = NULL;
        /* Cancelled (client_main stopping us, once: never for good, so
         * the next join waits): stop the writer too, and wait for it, as
         * it uses our buffers. */
        while ((rc = corio_join(writer, &werr)) == CORIO_ECANCELED)
            corio_cancel(writer);
        if (rc == 0)
            rc = (int)(intptr_t)werr;
        if (rc != 0 && rc != CORIO_ECANCELED) {
            report(id, "write", rc);
            goto done;
        }
        if (got < size) {
            if (n == 0)
                fprintf(stderr, "echo-client: connection %u: read: connection closed\n", id);
            else
                report(id, "read", (int)n);
            goto done;
        }
        if (memcmp(in, out, size) != 0) {
            fprintf(stderr, "echo-client: connection %u: message %u came back different\n", id,
                    m);
            goto done;
        }
        atomic_fetch_add_explicit(&echoed, 1, memory_order_relaxed);
    }
    status = &connection_ok;
done:
    if (fd >= 0)
        corio_close(fd);
    free(out);
    free(in);
    return status;
}

/* Descriptors this process may still open under its soft limit, or -1
 * when that cannot be known (no /proc, no limit). */
static long descriptors_left(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return -1;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    long open_now = -1; /* less the one opendir holds */
    while (readdir(d))
        open_now++;
    closedir(d);
    open_now -= 2; /* "." and ".." */
    return (long)rl.rlim_cur - open_now;
}

/* The exit status for bad options; client_main's result when it finds
 * too few descriptors left, which only the running runtime can tell (its
 * loops hold some). */
#define EXIT_USAGE 2

static void *client_main(void *arg)
{
    /* Each connection holds one descriptor for its whole life, all at
     * once: past the limit the last ones would each fail on their own,
     * one message apiece, and the run would measure nothing. */
    long left = descriptors_left();
    if (left >= 0 && connections > (unsigned long)left) {
        fprintf(stderr,
                "echo-client: --connections %u needs as many descriptors at once; %ld left "
                "under the open-file limit (ulimit -n)\n",
                connections, left);
        return (void *)EXIT_USAGE;
    }
    corio_task **tasks = calloc(connections, sizeof *tasks);
    void **results = calloc(connections, sizeof *results);
    if (!tasks || !results) {
        fprintf(stderr, "echo-client: out of memory for %u connections\n", connections);
        free(tasks);
        free(results);
        return (void *)1;
    }
    corio_time_t t0 = corio_now();
    unsigned spawned = 0;
    int rc = 0;
    while (spawned < connections) {
        rc = corio_spawn(&tasks[spawned], one_connection, (void *)(uintptr_t)spawned);
        if (rc != 0)
            break;
        spawned++;
    }
    if (rc != 0) {
        fprintf(stderr, "echo-client: cannot start connection %u: %s\n", spawned,
                corio_strerror(rc));
        /* Stop the ones already started and release their handles. */
        for (unsigned i = 0; i < spawned; i++)
            corio_cancel(tasks[i]);
        corio_gather(tasks, spawned, NULL);
        free(tasks);
        free(results);
        return (void *)1;
    }
    rc = corio_gather(tasks, connections, results);
    if (rc != 0 && rc != CORIO_ENOSTACK && rc != CORIO_ESHUTDOWN) {
        /* The wait itself failed: no result is known. */
        fprintf(stderr, "echo-client: waiting for the connections: %s\n", corio_strerror(rc));
        free(tasks);
        free(results);
        return (void *)1;
    }
    unsigned failed = 0, unrun = 0;
    for (unsigned i = 0; i < connections; i++)
        failed += results[i] != &connection_ok;
    if (rc != 0) {
        /* Some tasks never ran; their results are NULL, counted above. */
        for (unsigned i = 0; i < connections; i++)
            unrun += results[i] == NULL;
        fprintf(stderr, "echo-client: %u connections never ran: %s\n", unrun,
                corio_strerror(rc));
    }
    double s = (corio_now() - t0) / 1e9;
    printf("echo-client: %u connections x %u messages x %u bytes: %u failed, %.3f s, %.0f msg/s\n",
           connections, messages, size, failed, s, (double)atomic_load(&echoed) / s);
    free(tasks);
    free(results);
    return (void *)(uintptr_t)(failed != 0 || rc != 0);
}

int main(int argc, char **argv)
{
    corio_config cfg;
    corio_config_init(&cfg);
    struct example_arg args[] = {
        {"--port", &port, ARG_PEER_PORT, 0},
        {"--connections", &connections, ARG_COUNT, MAX_CONNECTIONS},
        {"--messages", &messages, ARG_COUNT, 0},
        {"--size", &size, ARG_COUNT, MAX_SIZE},
        {"--loops", &cfg.loops, ARG_LOOPS, 0},
    };
    parse_example_args("echo-client", argc, argv, args, sizeof args / sizeof args[0]);
    /* Every connection's two buffers are allocated and filled at once:
     * more than half the machine's memory would end in the OOM killer
     * or swap, not in a result. */
    double buffers = 2.0 * connections * size;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0 && buffers > (double)pages * (double)page / 2) {
        fprintf(stderr,
                "echo-client: --connections %u x --size %u needs %.1f GiB of memory for "
                "buffers, more than half of this machine's %.1f GiB\n",
                connections, size, buffers / (1 << 30), (double)pages * page / (1 << 30));
        return EXIT_USAGE;
    }
    void *failed = NULL;
    int rc = corio_run(&cfg, client_main, NULL, &failed);
    if (rc != 0) {
        fprintf(stderr, "echo-client: %s\n", corio_strerror(rc));
        return 1;
    }
    return (int)(uintptr_t)failed; /* 0, 1, or EXIT_USAGE */
}
