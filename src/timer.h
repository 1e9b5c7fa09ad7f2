/*
 * timer.h: a loop's deadlines.
 *
 * A 4-ary min-heap of (deadline, task, wait token) in one array, owned by
 * the loop's thread, so no lock: a task only ever waits on its home loop,
 * and only that loop adds and fires its timers.
 *
 * Deletion is lazy. A wait that ends before its deadline leaves its entry
 * in the heap; when the entry comes due, firing it with its token fails
 * (the task's wait has moved on), and nothing happens. So neither adding
 * nor firing ever touches a task other than the one being woken, and a
 * wait that ends early costs nothing here. Measured on a million sleeping
 * tasks, the eager version's sift-downs wrote each moved task's slot index
 * into the task (a cache miss per heap level) and made up a third of the
 * wake-up work. Stale entries are swept out when they outnumber the live
 * ones, so a server whose requests carry long timeouts that rarely expire
 * keeps a heap the size of its live waits.
 *
 * Why a 4-ary heap and not a timing wheel: deadlines are exact (no tick
 * rounding), memory is 24 bytes per pending deadline. Four children per
 * node halve the depth of a binary heap and keep siblings close (Go's
 * timers make the same choice).
 *
 * The sorted run. Most deadlines arrive in increasing order: a million
 * tasks spawned to sleep(1 s), every connection of a server given the same
 * timeout. Such a deadline (>= the last one appended) goes to the tail of
 * a FIFO ring instead of the heap, and comes off its head in O(1): the
 * earliest deadline is the smaller of the ring's head and the heap's top.
 * Measured with a million sleepers, the heap's sift-downs on removal (ten
 * levels, a cache miss each) had been 8.5% of the run's CPU time. Only
 * deadlines that arrive out of order pay for the heap. (A far deadline at
 * the ring's tail sends shorter ones to the heap until it leaves: slower,
 * never wrong.)
 */
#ifndef CORIO_TIMER_H
#define CORIO_TIMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "corio.h"

struct corio_task;

typedef struct corio__timer_entry {
    corio_time_t deadline;
    struct corio_task *task;
    uint64_t token; /* the wait this deadline belongs to */
} corio__timer_entry;

typedef struct corio__timers {
    corio__timer_entry *heap;
    size_t len, cap;
    corio__timer_entry *run;  /* ring of non-decreasing deadlines */
    size_t run_head, run_len, run_cap; /* run_cap: 0 or a power of two */
    size_t armed; /* timed waits still in progress (the rest are stale) */
    bool huge_pages; /* the arrays may ask for THP (bigarray.h) */
} corio__timers;

void corio__timers_init(corio__timers *tm, bool huge_pages);
void corio__timers_destroy(corio__timers *tm);
/* Add a deadline for t's wait with this token. 0 or CORIO_ENOMEM. */
int corio__timers_add(corio__timers *tm, struct corio_task *t, uint64_t token,
                      corio_time_t deadline);
/* A timed wait is over (however it ended): its entry, if still queued, is
 * now stale. */
void corio__timers_wait_over(corio__timers *tm);
/* The deadline ns >= 0 after now; further than the clock can count is no
 * deadline at all. */
static inline corio_time_t corio__deadline_after(corio_time_t now, int64_t ns)
{
    return ns > INT64_MAX - now ? CORIO_FOREVER : now + ns;
}
/* The earliest deadline, or CORIO_FOREVER if none. */
static inline corio_time_t corio__timers_next(const corio__timers *tm)
{
    if (!tm->run_len)
        return tm->len ? tm->heap[0].deadline : CORIO_FOREVER;
    corio_time_t run = tm->run[tm->run_head].deadline;
    return tm->len && tm->heap[0].deadline < run ? tm->heap[0].deadline : run;
}
/* Remove the earliest entry if its deadline is <= now; true if one was. */
int corio__timers_pop_due(corio__timers *tm, corio_time_t now, corio__timer_entry *out);

#endif /* CORIO_TIMER_H */
