/*
 * thread_probe.c: sample another thread's scheduler state (thread_probe.h).
 *
 * Plain system calls, not sys.h's wrappers: a probe that fails costs no
 * resource and reports no error, it only leaves balance.c with the rule it
 * has without one.
 */
#define _GNU_SOURCE
#include "thread_probe.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

pid_t corio__thread_probe_self(clockid_t *cpu_clock)
{
    if (pthread_getcpuclockid(pthread_self(), cpu_clock) != 0)
        *cpu_clock = CLOCK_THREAD_CPUTIME_ID; /* marks "no clock": see below */
    return gettid();
}

/* The state letter of /proc/self/task/TID/stat: "TID (COMM) S ...", where
 * COMM may itself hold spaces and parentheses, hence the last ')'. */
static bool read_state(pid_t tid, char *state)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');
    if (!paren || paren[1] != ' ' || paren[2] == '\0')
        return false;
    *state = paren[2];
    return true;
}

bool corio__thread_probe_read(pid_t tid, clockid_t cpu_clock, corio__thread_probe *out)
{
    /* CLOCK_THREAD_CPUTIME_ID would read the caller's own clock. */
    if (tid <= 0 || cpu_clock == CLOCK_THREAD_CPUTIME_ID)
        return false;
    char state;
    struct timespec ts;
    if (!read_state(tid, &state) || clock_gettime(cpu_clock, &ts) != 0)
        return false;
    out->runnable = state == 'R';
    out->cpu_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    return true;
}
