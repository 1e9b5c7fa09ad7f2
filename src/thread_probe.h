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
/* A descriptor of the calling thread's /proc stat file, for
 * corio__thread_probe_read_fd, or -1 (no /proc, no descriptor free); the
 * caller closes it once no probe can use it. A loop opens its own when it
 * starts: a probe that opened the file each time took a descriptor number
 * from the program for a moment (one near its RLIMIT_NOFILE then saw
 * EMFILE), and cost two system calls more. */
int corio__thread_probe_open_self(void);
/* Sample the thread whose stat descriptor is stat_fd (cpu_clock from
 * corio__thread_probe_self). false if it cannot be read (no descriptor,
 * the thread is gone): then nothing is known. A thread that has just
 * exited may still be read for a moment (pthread_join returns before the
 * kernel reaps it), as runnable while it finishes its exit. Two system
 * calls (pread, and clock_gettime: a CPU clock is not in the vDSO);
 * callers ration it. */
bool corio__thread_probe_read_fd(int stat_fd, clockid_t cpu_clock, corio__thread_probe *out);
/* The same for thread `tid` of this process, opening its stat file for
 * the one probe (for tests and tools; loops use the descriptor form). */
bool corio__thread_probe_read(pid_t tid, clockid_t cpu_clock, corio__thread_probe *out);

#endif /* CORIO_THREAD_PROBE_H */
