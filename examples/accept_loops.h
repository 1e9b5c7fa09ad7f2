/*
 * accept_loops.h: the server skeleton the examples share: one listener per
 * corio loop on the same port (SO_REUSEPORT, so the kernel spreads the
 * connections), each with an accept loop that hands every connection to a
 * task pinned to that loop. Errors that accept(2) documents as transient
 * (out of descriptors or buffers, a connection that failed while it
 * waited in the backlog) pause accepting for 10 ms instead of stopping
 * the server; any other error stops every loop and the server fails.
 * SIGINT or SIGTERM stops it: a task waiting for them (corio_signal_wait)
 * cancels the accept loops, the server says so and exits 0. It stops
 * accepting, it does not drain: connections still open are cancelled and
 * closed as the runtime ends. A second signal meanwhile is taken by
 * nobody (the signals stay blocked); only SIGKILL cuts a stop short.
 */
#ifndef CORIO_EXAMPLE_ACCEPT_LOOPS_H
#define CORIO_EXAMPLE_ACCEPT_LOOPS_H

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "corio.h"

struct server {
    const char *name; /* for messages */
    uint16_t port;    /* 0: any free port, the same for every loop */
    corio_fn serve;   /* serve(fd as intptr_t): one connection, then close it */
};

struct accept_args {
    const struct server *server;
    int listener;
};

/* run_server's result when the server failed (it printed why). */
static char server_failed;

/* The signals that stop a server, blocked by block_stop_signals() in
 * main before corio_run, so that every thread of the runtime inherits the
 * mask and the signals wait for corio_signal_wait. */
static sigset_t stop_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    return set;
}

static void block_stop_signals(void)
{
    sigset_t set = stop_signals();
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

/* Errors after which accepting again can succeed: out of descriptors or
 * memory (the connection waits in the backlog until some are free), and
 * the network errors Linux passes on from a pending connection that
 * accept(2) says to treat like EAGAIN; EPERM is a firewall's refusal. */
static bool accept_error_is_transient(int err)
{
    switch (-err) {
    case EMFILE: case ENFILE: case ENOBUFS: case ENOMEM:
    case ECONNABORTED: case EPROTO: case ENOPROTOOPT: case EOPNOTSUPP:
    case ENETDOWN: case ENETUNREACH: case ENONET:
    case EHOSTDOWN: case EHOSTUNREACH: case ETIMEDOUT: case EPERM: case EINTR:
        return true;
    default:
        return false;
    }
}

/* A connection task that never runs (no stack for it, or the server
 * stops first) still owns its socket. */
static void close_unserved(void *arg, int error)
{
    corio_close((int)(intptr_t)arg);
}

/* A child of run_server's group: accept until a fatal error (returned,
 * which cancels the other loops) or until the group cancels it. Each
 * connection is served by a detached task on this loop. */
static int accept_loop(void *arg)
{
    struct accept_args *a = arg;
    corio_spawn_opts conn_opts;
    corio_spawn_opts_init(&conn_opts);
    conn_opts.loop = corio_loop_index();
    conn_opts.discard = close_unserved;
    for (;;) {
        int fd = corio_accept(a->listener, NULL, NULL);
        if (fd >= 0) {
            if (corio_spawn_ex(NULL, a->server->serve, (void *)(intptr_t)fd, &conn_opts) != 0)
                corio_close(fd);
            continue;
        }
        if (fd == CORIO_ECANCELED)
            return fd; /* another loop failed; it said why */
        if (!accept_error_is_transient(fd)) {
            fprintf(stderr, "%s: accept: %s\n", a->server->name, corio_strerror(fd));
            return fd;
        }
        if (corio_sleep(10 * CORIO_MSEC) == CORIO_ECANCELED)
            return CORIO_ECANCELED;
    }
}

struct stop_args {
    const struct server *server;
    corio_group *group;
    int signo; /* the stop signal taken, 0 until then */
};

/* A child of run_server's group: wait for SIGINT or SIGTERM, then cancel
 * the accept loops. Cancelled itself when an accept loop fails. A server
 * that cannot wait for the signals could never be stopped but by
 * SIGKILL, so that fails it. */
static int stop_on_signal(void *arg)
{
    struct stop_args *a = arg;
    sigset_t set = stop_signals();
    int rc = corio_signal_wait(&set, &a->signo, CORIO_FOREVER);
    if (rc == CORIO_ECANCELED)
        return rc; /* an accept loop failed; it said why */
    if (rc != 0) {
        fprintf(stderr, "%s: cannot wait for stop signals: %s\n", a->server->name,
                corio_strerror(rc));
        return rc;
    }
    printf("%s: stopping on %s\n", a->server->name, a->signo == SIGINT ? "SIGINT" : "SIGTERM");
    fflush(stdout);
    return corio_group_cancel(a->group);
}

/* corio_run's main: start the accept loops, print a "listening" line, run
 * until SIGINT or SIGTERM (then NULL). Returns &server_failed on failure,
 * having printed one line: the server could not start or an accept loop
 * met a fatal error. */
static void *run_server(void *arg)
{
    const struct server *s = arg;
    unsigned loops = corio_loop_count();
    struct accept_args *args = calloc(loops, sizeof *args);
    corio_group *group = NULL;
    int rc = args ? corio_group_new(&group, CORIO_GROUP_CANCEL_ON_ERROR) : CORIO_ENOMEM;
    if (rc != 0) {
        fprintf(stderr, "%s: cannot start: %s\n", s->name, corio_strerror(rc));
        free(args);
        return &server_failed;
    }
    uint16_t port = s->port;
    unsigned opened = 0; /* listeners to close */
    struct stop_args stop = {s, group, 0};
    bool started = true;
    for (unsigned i = 0; started && i < loops; i++) {
        int fd = corio_listen_tcp("127.0.0.1", port, 4096, CORIO_LISTEN_REUSEPORT);
        if (fd < 0) {
            fprintf(stderr, "%s: cannot listen on port %u: %s\n", s->name, port,
                    corio_strerror(fd));
            started = false;
            break;
        }
        args[opened++] = (struct accept_args){s, fd};
        if (port == 0) {
            /* The kernel chose a port for the first listener; the others
             * share it, as they would a port given on the command line. */
            rc = corio_local_port(fd);
            if (rc <= 0) {
                fprintf(stderr, "%s: cannot read the listening port: %s\n", s->name,
                        corio_strerror(rc < 0 ? rc : CORIO_EINVAL));
                started = false;
                break;
            }
            port = (uint16_t)rc;
        }
        corio_spawn_opts opts;
        corio_spawn_opts_init(&opts);
        opts.loop = (int)i;
        rc = corio_group_spawn_ex(group, accept_loop, &args[i], &opts);
        if (rc != 0) {
            fprintf(stderr, "%s: cannot start accept loop %u: %s\n", s->name, i,
                    corio_strerror(rc));
            started = false;
        }
    }
    /* Last, so that a signal during the start waits (blocked, pending)
     * until the server is up, and stops it then. */
    if (started && (rc = corio_group_spawn(group, stop_on_signal, &stop)) != 0) {
        fprintf(stderr, "%s: cannot wait for stop signals: %s\n", s->name, corio_strerror(rc));
        started = false;
    }
    if (started) {
        printf("%s: listening on 127.0.0.1:%u with %u loops\n", s->name, port, loops);
        fflush(stdout);
        /* Returns once every loop has stopped: after a stop signal, or
         * a fatal error, which cancels the others. */
        rc = corio_group_wait(group);
        if (rc != 0)
            fprintf(stderr, "%s: waiting for the accept loops: %s\n", s->name,
                    corio_strerror(rc));
    }
    /* Cancels and waits for what still runs; the first failure of a
     * child: CORIO_ECANCELED when the stop came first, the accept loop's
     * or the stop task's error (reported) when that came first. */
    rc = corio_group_close(group);
    for (unsigned i = 0; i < opened; i++)
        corio_close(args[i].listener);
    free(args);
    return started && stop.signo && (rc == 0 || rc == CORIO_ECANCELED) ? NULL : &server_failed;
}

#endif
