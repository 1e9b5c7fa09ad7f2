/*
 * parallel-run: run shell commands at most J at a time, as xargs -P does,
 * with each command's output kept together.
 *
 *   parallel-run [--jobs J] [--timeout-ms T] [--loops N] < commands
 *
 * Each non-blank line of standard input is one command for /bin/sh -c,
 * with /dev/null as its input. Its stdout and stderr share one pipe,
 * read while it runs; when it has ended, one block is printed:
 *
 *   ### 3 exit 0: make test
 *   ...its output...
 *
 * The number is the command's line. Blocks come in the order the
 * commands finish, each one whole. A command still running T ms after it
 * started (default: no limit) is killed with its whole process group and
 * reported "timed out". Every command is reported exactly once: ended
 * ("exit N", "killed by signal N"), "timed out", or "failed to start" with
 * the reason. Exit status 0 when every command exited 0, 1 otherwise, 2
 * for bad options or input that cannot be read.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "corio.h"
#include "example_args.h"

#define MAX_OUTPUT (1u << 20) /* kept per command; the rest is read and dropped */
/* After a kill, how long the output pipe may stay open: a command that
 * moved to a process group of its own escaped the kill. */
#define DRAIN_AFTER_KILL (CORIO_SEC)

static unsigned jobs = 4, timeout_ms; /* 0: no limit */

struct command {
    unsigned line;
    char *text;
    int never_ran; /* why its task never ran (discard), else 0 */
};

struct run {
    struct command *commands;
    size_t count;
    corio_sem *slots;
    corio_mutex *print; /* one block at a time on stdout */
    _Atomic bool any_failed;
};

/* What a command wrote, up to MAX_OUTPUT bytes. */
struct output {
    char *buf;
    size_t len, cap;
    bool truncated;
};

static void output_add(struct output *o, const char *data, size_t n)
{
    if (o->len + n > MAX_OUTPUT) {
        o->truncated = true;
        n = MAX_OUTPUT - o->len;
    }
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap : 4096;
        while (cap < o->len + n)
            cap *= 2;
        char *grown = realloc(o->buf, cap);
        if (!grown) {
            o->truncated = true;
            return;
        }
        o->buf = grown;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, data, n);
    o->len += n;
}

/* Read the pipe to its end; past the deadline, kill the command's process
 * group and give what is left DRAIN_AFTER_KILL. Returns whether it timed
 * out. A read error ends the reading (the status line still comes from
 * the wait). */
static bool collect(corio_process *p, int fd, corio_time_t deadline, struct output *out)
{
    bool timed_out = false;
    char buf[16384];
    for (;;) {
        ssize_t n = corio_read_until(fd, buf, sizeof buf, deadline);
        if (n > 0) {
            output_add(out, buf, (size_t)n);
            continue;
        }
        if (n == CORIO_ETIMEDOUT && !timed_out) {
            timed_out = true;
            /* The shell leads its own group: its children die with it. */
            kill(-corio_process_pid(p), SIGKILL);
            deadline = corio_deadline_in(DRAIN_AFTER_KILL);
            continue;
        }
        return timed_out;
    }
}

static void print_block(struct run *run, const struct command *c, const char *status,
                        const struct output *out)
{
    /* Only a cancellation could fail it, and nothing cancels these
     * tasks; a block printed unlocked would still be printed. */
    bool locked = corio_mutex_lock(run->print) == 0;
    printf("### %u %s: %s\n", c->line, status, c->text);
    if (out->len) {
        fwrite(out->buf, 1, out->len, stdout);
        if (out->buf[out->len - 1] != '\n')
            putchar('\n');
    }
    if (out->truncated)
        printf("[output beyond %u bytes dropped]\n", MAX_OUTPUT);
    fflush(stdout);
    if (locked)
        corio_mutex_unlock(run->print);
}

/* Start one command; NULL (and *err) if it could not be. */
static corio_process *start(const struct command *c, int *out_fd, int *err)
{
    int ends[2];
    if (pipe2(ends, O_CLOEXEC) != 0) {
        *err = -errno;
        return NULL;
    }
    fcntl(ends[0], F_SETFL, O_NONBLOCK);
    corio_process_opts o;
    corio_process_opts_init(&o);
    o.flags = CORIO_PROCESS_NEW_GROUP;
    o.stdio[0] = CORIO_STDIO_NULL;
    o.stdio[1] = ends[1];
    o.stdio[2] = ends[1];
    char *argv[] = {"/bin/sh", "-c", c->text, NULL};
    corio_process *p;
    *err = corio_process_spawn(&p, argv, &o);
    close(ends[1]); /* the child has its copies: the pipe ends when it does */
    if (*err != 0) {
        corio_close(ends[0]);
        return NULL;
    }
    *out_fd = ends[0];
    return p;
}

struct job {
    struct run *run;
    struct command *command;
};

static void *run_job(void *arg)
{
    struct job *job = arg;
    struct run *run = job->run;
    const struct command *c = job->command;
    free(job);
    struct output out = {0};
    char status[96];
    int fd, err;
    corio_process *p = start(c, &fd, &err);
    bool ok = false;
    if (!p) {
        snprintf(status, sizeof status, "failed to start (%s)", corio_strerror(err));
    } else {
        corio_time_t deadline =
            timeout_ms ? corio_deadline_in((int64_t)timeout_ms * CORIO_MSEC) : CORIO_FOREVER;
        bool timed_out = collect(p, fd, deadline, &out);
        corio_close(fd);
        int code;
        int rc = corio_process_wait(p, &code);
        if (rc != 0)
            snprintf(status, sizeof status, "wait failed (%s)", corio_strerror(rc));
        else if (timed_out)
            snprintf(status, sizeof status, "timed out");
        else if (code < 0)
            snprintf(status, sizeof status, "killed by signal %d", -code);
        else
            snprintf(status, sizeof status, "exit %d", code);
        ok = rc == 0 && !timed_out && code == 0;
        corio_process_free(p);
    }
    if (!ok)
        atomic_store(&run->any_failed, true);
    print_block(run, c, status, &out);
    free(out.buf);
    corio_sem_release(run->slots);
    return NULL;
}

/* A job whose task never ran (no stack, or shutdown): its permit goes
 * back and its command is reported after the gather. On a loop thread
 * outside any task: it must not wait. */
static void discard_job(void *arg, int error)
{
    struct job *job = arg;
    job->command->never_ran = error;
    corio_sem_release(job->run->slots);
    free(job);
}

static void report_unstarted(struct run *run, struct command *c, int error)
{
    char status[96];
    snprintf(status, sizeof status, "failed to start (%s)", corio_strerror(error));
    atomic_store(&run->any_failed, true);
    print_block(run, c, status, &(struct output){0});
}

static void *run_all(void *arg)
{
    struct run *run = arg;
    corio_task **tasks = calloc(run->count ? run->count : 1, sizeof *tasks);
    if (!tasks) {
        for (size_t i = 0; i < run->count; i++)
            report_unstarted(run, &run->commands[i], CORIO_ENOMEM);
        return NULL;
    }
    corio_spawn_opts opts;
    corio_spawn_opts_init(&opts);
    opts.discard = discard_job;
    size_t started = 0;
    int failure = 0;
    for (; started < run->count; started++) {
        failure = corio_sem_acquire(run->slots);
        if (failure != 0)
            break;
        struct job *job = malloc(sizeof *job);
        if (!job) {
            corio_sem_release(run->slots);
            failure = CORIO_ENOMEM;
            break;
        }
        *job = (struct job){run, &run->commands[started]};
        failure = corio_spawn_ex(&tasks[started], run_job, job, &opts);
        if (failure != 0) {
            corio_sem_release(run->slots);
            free(job);
            break;
        }
    }
    corio_gather(tasks, started, NULL);
    free(tasks);
    /* Every command is reported once: those whose task never ran, and
     * those never given one. */
    for (size_t i = 0; i < started; i++)
        if (run->commands[i].never_ran)
            report_unstarted(run, &run->commands[i], run->commands[i].never_ran);
    for (size_t i = started; i < run->count; i++)
        report_unstarted(run, &run->commands[i], failure);
    return NULL;
}

/* Every non-blank line of stdin. Exits 2 if it cannot be read. */
static struct command *read_commands(size_t *count)
{
    struct command *commands = NULL;
    size_t n = 0, cap = 0;
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t len;
    unsigned number = 0;
    while ((len = getline(&line, &line_cap, stdin)) >= 0) {
        number++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (strspn(line, " \t") == (size_t)len)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            struct command *grown = realloc(commands, cap * sizeof *commands);
            if (!grown) {
                fprintf(stderr, "parallel-run: out of memory reading the commands\n");
                exit(2);
            }
            commands = grown;
        }
        commands[n] = (struct command){number, strdup(line), 0};
        if (!commands[n].text) {
            fprintf(stderr, "parallel-run: out of memory reading the commands\n");
            exit(2);
        }
        n++;
    }
    if (ferror(stdin)) {
        fprintf(stderr, "parallel-run: cannot read the commands: %s\n", strerror(errno));
        exit(2);
    }
    free(line);
    *count = n;
    return commands;
}

int main(int argc, char **argv)
{
    corio_config cfg;
    corio_config_init(&cfg);
    struct example_arg args[] = {
        {"--jobs", &jobs, ARG_COUNT, 10000},
        {"--timeout-ms", &timeout_ms, ARG_COUNT, 0},
        {"--loops", &cfg.loops, ARG_LOOPS, 0},
    };
    parse_example_args("parallel-run", argc, argv, args, sizeof args / sizeof args[0]);
    struct run run = {0};
    run.commands = read_commands(&run.count);
    int rc = corio_sem_new(&run.slots, jobs);
    if (rc == 0)
        rc = corio_mutex_new(&run.print);
    if (rc == 0)
        rc = corio_run(&cfg, run_all, &run, NULL);
    if (rc != 0) {
        fprintf(stderr, "parallel-run: %s\n", corio_strerror(rc));
        return 1;
    }
    corio_mutex_free(run.print);
    corio_sem_free(run.slots);
    for (size_t i = 0; i < run.count; i++)
        free(run.commands[i].text);
    free(run.commands);
    return atomic_load(&run.any_failed) ? 1 : 0;
}
