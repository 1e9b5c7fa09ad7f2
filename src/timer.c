/*
 * timer.c: the per-loop 4-ary deadline heap with lazy deletion (timer.h).
 */
#include "timer.h"

#include <stdatomic.h>

#include "sys.h"
#include "task.h"

#define ARITY 4
/* Heaps smaller than this are never swept: the sweep would cost more. */
#define SWEEP_MIN 4096

void corio__timers_init(corio__timers *tm)
{
    tm->heap = NULL;
    tm->len = tm->cap = 0;
    tm->armed = 0;
}

void corio__timers_destroy(corio__timers *tm)
{
    corio__free(tm->heap);
    corio__timers_init(tm);
}

static void sift_up(corio__timers *tm, size_t i, corio__timer_entry e)
{
    while (i > 0) {
        size_t parent = (i - 1) / ARITY;
        if (tm->heap[parent].deadline <= e.deadline)
            break;
        tm->heap[i] = tm->heap[parent];
        i = parent;
    }
    tm->heap[i] = e;
}

static void sift_down(corio__timers *tm, size_t i, corio__timer_entry e)
{
    for (;;) {
        size_t first = i * ARITY + 1;
        if (first >= tm->len)
            break;
        size_t last = first + ARITY < tm->len ? first + ARITY : tm->len;
        size_t min = first;
        for (size_t c = first + 1; c < last; c++)
            if (tm->heap[c].deadline < tm->heap[min].deadline)
                min = c;
        if (e.deadline <= tm->heap[min].deadline)
            break;
        tm->heap[i] = tm->heap[min];
        i = min;
    }
    tm->heap[i] = e;
}

/* Drop the entries whose wait is over and rebuild the heap. */
static void sweep(corio__timers *tm)
{
    size_t kept = 0;
    for (size_t i = 0; i < tm->len; i++) {
        corio__timer_entry e = tm->heap[i];
        if (atomic_load_explicit(&e.task->wait, memory_order_relaxed) == e.token)
            tm->heap[kept++] = e;
    }
    tm->len = kept;
    for (size_t i = kept / ARITY + 1; i-- > 0;)
        if (i < tm->len)
            sift_down(tm, i, tm->heap[i]);
}

int corio__timers_add(corio__timers *tm, corio_task *t, uint64_t token, corio_time_t deadline)
{
    if (tm->len >= SWEEP_MIN && tm->len > 2 * tm->armed)
        sweep(tm);
    if (tm->len == tm->cap) {
        size_t cap = tm->cap ? tm->cap * 2 : 64;
        corio__timer_entry *heap = corio__realloc(tm->heap, cap * sizeof *heap);
        if (!heap)
            return CORIO_ENOMEM;
        tm->heap = heap;
        tm->cap = cap;
    }
    corio__timer_entry e = {deadline, t, token};
    sift_up(tm, tm->len++, e);
    tm->armed++;
    return 0;
}

void corio__timers_wait_over(corio__timers *tm) { tm->armed--; }

int corio__timers_pop_due(corio__timers *tm, corio_time_t now, corio__timer_entry *out)
{
    if (tm->len == 0 || tm->heap[0].deadline > now)
        return 0;
    *out = tm->heap[0];
    corio__timer_entry last = tm->heap[--tm->len];
    if (tm->len)
        sift_down(tm, 0, last);
    return 1;
}
