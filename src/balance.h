/*
 * balance.h: where never-run tasks go.
 *
 * A task that has run never moves (task.h), so the loop that starts a
 * task is where all of its future CPU work will happen: choosing that loop
 * is the only balancing corio can do. Plain steal-half gets it badly wrong
 * in the commonest pattern, a task spawning thousands of tasks in a burst:
 * its loop is busy spawning while the idle loops start, and so adopt, most
 * of them. Measured on the reference experiment (10,000 tasks, 2 loops),
 * the thief adopted 84% of the tasks and efficiency fell to 0.65.
 *
 * So the measure is a loop's load: tasks started and not finished, plus
 * tasks queued to start. Two rules keep loads level:
 *
 *   steal    a thief takes half the difference between the victim's load
 *            and its own; when loads are level, an idle thief takes one
 *            task at a time, as long as it has not started more tasks than
 *            the victim (so short CPU tasks spread over whichever loops are
 *            free; classic steal-half when the victim is stuck, see below);
 *   hold     a loop does not start its own queued tasks while it has 1%
 *            (at least 4) more started tasks than some other loop's load;
 *            it wakes that loop and leaves the tasks to be stolen. (With a
 *            fixed slack of 32, a burst of 2,000 tasks could end 3% uneven.)
 *            (Page faults on fresh stacks stall a loop for milliseconds on
 *            our VMs; without this rule, whichever loop stalled less near
 *            the end of a burst adopted up to 58% of it.)
 *
 * A loop that has not polled for CORIO__BALANCE_STALE_NS is stuck in a
 * long computation (or a system call that blocks its thread): nobody holds
 * back for it, and thieves rescue its queue with plain steal-half (no
 * load limit), since its tasks would otherwise wait. Nor does anyone hold
 * back for a loop that polls but has not looked for work to steal within
 * that time (seek_ns): it is busy with ready tasks of its own, a yielding
 * computation for instance, and would never come for the tasks held for
 * it. (A loop back from a park with no work of its own is looking for
 * work from its wake-up: sched.c stores seek_ns before its next poll.)
 * Once the runtime stops, nothing is held back at all (the tasks are
 * only discarded).
 *
 * Silence can also mean the OS has not run the loop's thread: more threads
 * want the CPUs than there are (another process computing beside us, or a
 * thread that has not started yet). Taking such a loop for stuck put 86%
 * of the reference experiment on the other loop in 1 run of 10 with one
 * busy process beside it (efficiency 0.63): the spawner, finding its peer
 * silent for 16 ms in the burst, started every task itself. So a silent
 * loop that is not parked is probed (thread_probe.h): a thread blocked in
 * the kernel is stuck; a runnable one that gained less than half a CPU
 * since the last probe is kept off the CPU, and is treated as a loop that
 * has just polled (and, if it was looking for work when it fell silent, as
 * one looking for work) for up to CORIO__BALANCE_OFF_CPU_MAX_NS of
 * silence (counted from its wake-up for a loop woken from a park). A
 * first probe in a silence cannot tell computing from waiting, so a stuck
 * loop is found CORIO__BALANCE_PROBE_NS later than without probes.
 *
 * Loads are published by each owner with relaxed stores (loop.h: load,
 * activity_ns) and read by the others: a stale read only makes one
 * decision slightly off, never a task lost.
 */
#ifndef CORIO_BALANCE_H
#define CORIO_BALANCE_H

#include <stdbool.h>
#include <stddef.h>

#include "loop.h"

/* 10 ms: the patience Go's sysmon has with a P stuck in a system call. */
#define CORIO__BALANCE_STALE_NS ((int64_t)10000000)
/* How long a loop that the OS keeps off the CPU is waited for, counted
 * from its last poll, or from its wake-up if it was parked since (a CFS
 * time slice is a few ms; 50 ms covers a few, and bounds what waiting for
 * it can cost). */
#define CORIO__BALANCE_OFF_CPU_MAX_NS ((int64_t)50000000)
/* How often one loop probes another silent loop's thread at most (four
 * system calls a probe). */
#define CORIO__BALANCE_PROBE_NS ((int64_t)1000000)
/* How far ahead a loop may get before holding back: 1% of its started
 * tasks, at least this many. */
#define CORIO__BALANCE_MIN_SLACK 4
/* How soon a loop that holds back or cannot steal yet looks again. */
#define CORIO__BALANCE_RECHECK_NS ((int64_t)200000)

/* l's own load: started tasks plus its queue. */
size_t corio__balance_own_load(corio__loop *l);
/* How many queued tasks l may steal from v, given l's own load `mine`. */
size_t corio__balance_steal_allowance(corio__loop *l, corio__loop *v, size_t mine);
/* May l start one of its own queued, stealable tasks now? Wakes the loop
 * it holds back for. */
bool corio__balance_may_start_new(corio__loop *l);

#endif /* CORIO_BALANCE_H */
