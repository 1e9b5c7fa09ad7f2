/*
 * thread_probe.c: sample another thread's scheduler state (thread_probe.h).
 *
 * Plain system calls, not sys.h's wrappers: a probe that fails costs no
 * resource and reports no error, it only leaves balance.c with the rule it
 * has without one.
 */
#define _GNU_SOURCE
#include "thread_probe.h"

#include <errno.h>
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

/* Thread `tid`'s stat file, opened; -1 if it cannot be. */
static int open_task_stat(pid_t tid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
    return open(path, O_RDONLY | O_CLOEXEC);
}

int corio__thread_probe_open_self(void)
{
    int fd = open("/proc/thread-self/stat", O_RDONLY | O_CLOEXEC);
    if (fd >= 0 || errno != ENOENT)
        return fd;
    return open_task_stat(gettid()); /* before Linux 3.17: no thread-self */
}

/* The state letter of a thread's /proc stat: "TID (COMM) S ...", where
 * COMM may itself hold spaces and parentheses, hence the last ')'. Read
 * from offset 0 each time: procfs makes the text afresh for each read
 * from the start, so one descriptor serves every probe. */
static bool read_state(int fd, char *state)
{
    char buf[256];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');
    if (!paren || paren[1] != ' ' || paren[2] == '\0')
        return false;
    *state = paren[2];
    return true;
}

bool corio__thread_probe_read_fd(int stat_fd, clockid_t cpu_clock, corio__thread_probe *out)
{
    /* CLOCK_THREAD_CPUTIME_ID would read the caller's own clock. */
    if (stat_fd < 0 || cpu_clock == CLOCK_THREAD_CPUTIME_ID)
        return false;
    char state;
    struct timespec ts;
    if (!read_state(stat_fd, &state) || clock_gettime(cpu_clock, &ts) != 0)
        return false;
    out->runnable = state == 'R';
    out->cpu_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    return true;
}

bool corio__thread_probe_read(pid_t tid, clockid_t cpu_clock, corio__thread_probe *out)
{
    if (tid <= 0)
        return false;
    int fd = open_task_stat(tid);
    if (fd < 0)
        return false;
    bool read = corio__thread_probe_read_fd(fd, cpu_clock, out);
    close(fd);
    return read;
}
