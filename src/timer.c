/*
 * timer.c: the per-loop 4-ary deadline heap (see timer.h).
 */
#include "timer.h"

#include "sys.h"
#include "task.h"

#define ARITY 4

void corio__timers_init(corio__timers *tm)
{
    tm->heap = NULL;
    tm->len = tm->cap = 0;
}

void corio__timers_destroy(corio__timers *tm)
{
    corio__free(tm->heap);
    corio__timers_init(tm);
}

/* Put e at index i and record the index in its task (slot = index + 1). */
static inline void place(corio__timers *tm, size_t i, corio__timer_entry e)
{
    tm->heap[i] = e;
    e.task->timer_slot = (uint32_t)(i + 1);
}

static void sift_up(corio__timers *tm, size_t i, corio__timer_entry e)
{
    while (i > 0) {
        size_t parent = (i - 1) / ARITY;
        if (tm->heap[parent].deadline <= e.deadline)
            break;
        place(tm, i, tm->heap[parent]);
        i = parent;
    }
    place(tm, i, e);
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
        place(tm, i, tm->heap[min]);
        i = min;
    }
    place(tm, i, e);
}

int corio__timers_add(corio__timers *tm, corio_task *t, corio_time_t deadline)
{
    if (tm->len == tm->cap) {
        size_t cap = tm->cap ? tm->cap * 2 : 64;
        if (cap > UINT32_MAX - 1)
            return CORIO_ENOMEM;
        corio__timer_entry *heap = corio__realloc(tm->heap, cap * sizeof *heap);
        if (!heap)
            return CORIO_ENOMEM;
        tm->heap = heap;
        tm->cap = cap;
    }
    corio__timer_entry e = {deadline, t};
    sift_up(tm, tm->len++, e);
    return 0;
}

/* Remove the entry at index i. */
static void remove_at(corio__timers *tm, size_t i)
{
    tm->heap[i].task->timer_slot = 0;
    corio__timer_entry last = tm->heap[--tm->len];
    if (i == tm->len)
        return;
    if (i > 0 && last.deadline < tm->heap[(i - 1) / ARITY].deadline)
        sift_up(tm, i, last);
    else
        sift_down(tm, i, last);
}

void corio__timers_remove(corio__timers *tm, corio_task *t)
{
    if (t->timer_slot)
        remove_at(tm, t->timer_slot - 1);
}

corio_task *corio__timers_pop_due(corio__timers *tm, corio_time_t now)
{
    if (tm->len == 0 || tm->heap[0].deadline > now)
        return NULL;
    corio_task *t = tm->heap[0].task;
    remove_at(tm, 0);
    return t;
}
