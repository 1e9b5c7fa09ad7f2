/*
 * timer.h: a loop's deadlines.
 *
 * A 4-ary min-heap of (deadline, task) in one array, owned by the loop's
 * thread, so no lock: a task only ever waits on its home loop, and only
 * that loop adds, removes and fires its timers. Each task carries its slot
 * index so that a wait which ends early (the event came first) removes its
 * deadline in O(log n).
 *
 * Why a 4-ary heap and not a timing wheel: deadlines are exact (no tick
 * rounding), memory is 16 bytes per pending deadline, and the common
 * pattern of deadlines added in increasing order (sleep(1s) spawned in a
 * loop) inserts in O(1) because a new entry does not climb. Four children
 * per node halve the depth of a binary heap and keep siblings in one cache
 * line (Go's timers make the same choice).
 */
#ifndef CORIO_TIMER_H
#define CORIO_TIMER_H

#include <stddef.h>
#include <stdint.h>

#include "corio.h"

struct corio_task;

typedef struct corio__timer_entry {
    corio_time_t deadline;
    struct corio_task *task;
} corio__timer_entry;

typedef struct corio__timers {
    corio__timer_entry *heap;
    size_t len, cap;
} corio__timers;

void corio__timers_init(corio__timers *tm);
void corio__timers_destroy(corio__timers *tm);
/* Add t with its deadline. 0 or CORIO_ENOMEM. */
int corio__timers_add(corio__timers *tm, struct corio_task *t, corio_time_t deadline);
/* Remove t if it has a pending deadline. */
void corio__timers_remove(corio__timers *tm, struct corio_task *t);
/* The earliest deadline, or CORIO_FOREVER if none. */
static inline corio_time_t corio__timers_next(const corio__timers *tm)
{
    return tm->len ? tm->heap[0].deadline : CORIO_FOREVER;
}
/* Remove and return the earliest task whose deadline is <= now, or NULL. */
struct corio_task *corio__timers_pop_due(corio__timers *tm, corio_time_t now);

#endif /* CORIO_TIMER_H */
