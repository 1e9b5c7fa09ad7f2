/*
 * thread_probe.h: what the OS is doing with another loop's thread.
 *
 * balance.c asks this of a loop that has gone silent (no poll for the
 * stale time, balance.h). Silence has two meanings that call for opposite
 * answers: the loop is stuck (a long computation, or a system call that
 * blocks its thread), and its queue should be rescued and nobody should
 * hold tasks for it; or the OS has simply not run its thread, because more
 * threads want the CPUs than there are, and it will come back and take its
 * share within a time slice or two. The thread's scheduler state tells them
 * apart: blocked threads are not runnable, and a runnable thread that is
 * computing gains CPU time while one kept off the CPU does not.
 */
#ifndef CORIO_THREAD_PROBE_H
#define CORIO_THREAD_PROBE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

typedef struct corio__thread_probe {
    bool runnable;  /* running or waiting for a CPU ('R' in /proc) */
    int64_t cpu_ns; /* CPU time the thread has used */
} corio__thread_probe;

/* The calling thread's id and CPU-time clock, to publish for probes. */
pid_t corio__thread_probe_self(clockid_t *cpu_clock);
/* Sample thread `tid` of this process (cpu_clock from
 * corio__thread_probe_self). false if it cannot be read (no /proc, the
 * thread is gone): then nothing is known. A thread that has just exited
 * may still be read for a moment (pthread_join returns before the kernel
 * reaps it), as runnable while it finishes its exit. Four system calls
 * (open, read, close, and clock_gettime: a CPU clock is not in the vDSO);
 * callers ration it. */
bool corio__thread_probe_read(pid_t tid, clockid_t cpu_clock, corio__thread_probe *out);

#endif /* CORIO_THREAD_PROBE_H */
