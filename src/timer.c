/*
 * timer.c: the per-loop deadlines: a 4-ary heap and a sorted run, both
 * with lazy deletion (timer.h).
 */
#include "timer.h"

#include <stdatomic.h>
#include <stdbool.h>

#include "sys.h"
#include "task.h"

#define ARITY 4
/* Heaps smaller than this are never swept: the sweep would cost more. */
#define SWEEP_MIN 4096

void corio__timers_init(corio__timers *tm) { *tm = (corio__timers){0}; }

void corio__timers_destroy(corio__timers *tm)
{
    corio__free(tm->heap);
    corio__free(tm->run);
    corio__timers_init(tm);
}

static corio__timer_entry *run_at(const corio__timers *tm, size_t i)
{
    return &tm->run[(tm->run_head + i) & (tm->run_cap - 1)];
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

static bool entry_live(const corio__timer_entry *e)
{
    return atomic_load_explicit(&e->task->wait, memory_order_relaxed) == e->token;
}

/* Drop the entries whose wait is over: rebuild the heap, close the run's
 * gaps (order kept). */
static void sweep(corio__timers *tm)
{
    size_t kept = 0;
    for (size_t i = 0; i < tm->len; i++)
        if (entry_live(&tm->heap[i]))
            tm->heap[kept++] = tm->heap[i];
    tm->len = kept;
    for (size_t i = kept / ARITY + 1; i-- > 0;)
        if (i < tm->len)
            sift_down(tm, i, tm->heap[i]);

    kept = 0;
    for (size_t i = 0; i < tm->run_len; i++)
        if (entry_live(run_at(tm, i)))
            *run_at(tm, kept++) = *run_at(tm, i);
    tm->run_len = kept;
}

static int heap_add(corio__timers *tm, corio__timer_entry e)
{
    if (tm->len == tm->cap) {
        size_t cap = tm->cap ? tm->cap * 2 : 64;
        corio__timer_entry *heap = corio__realloc(tm->heap, cap * sizeof *heap);
        if (!heap)
            return CORIO_ENOMEM;
        tm->heap = heap;
        tm->cap = cap;
    }
    sift_up(tm, tm->len++, e);
    return 0;
}

/* Append to the run; the caller checked the order. */
static int run_add(corio__timers *tm, corio__timer_entry e)
{
    if (tm->run_len == tm->run_cap) {
        size_t cap = tm->run_cap ? tm->run_cap * 2 : 64;
        corio__timer_entry *run = corio__malloc(cap * sizeof *run);
        if (!run)
            return CORIO_ENOMEM;
        for (size_t i = 0; i < tm->run_len; i++)
            run[i] = *run_at(tm, i);
        corio__free(tm->run);
        tm->run = run;
        tm->run_head = 0;
        tm->run_cap = cap;
    }
    *run_at(tm, tm->run_len++) = e;
    return 0;
}

int corio__timers_add(corio__timers *tm, corio_task *t, uint64_t token, corio_time_t deadline)
{
    size_t pending = tm->len + tm->run_len;
    if (pending >= SWEEP_MIN && pending > 2 * tm->armed)
        sweep(tm);
    corio__timer_entry e = {deadline, t, token};
    bool in_order = !tm->run_len || run_at(tm, tm->run_len - 1)->deadline <= deadline;
    int rc = in_order ? run_add(tm, e) : CORIO_ENOMEM;
    if (rc != 0) /* out of order, or the ring could not grow: the heap takes it */
        rc = heap_add(tm, e);
    if (rc == 0)
        tm->armed++;
    return rc;
}

void corio__timers_wait_over(corio__timers *tm) { tm->armed--; }

int corio__timers_pop_due(corio__timers *tm, corio_time_t now, corio__timer_entry *out)
{
    if (tm->run_len && run_at(tm, 0)->deadline <= now &&
        (tm->len == 0 || run_at(tm, 0)->deadline <= tm->heap[0].deadline)) {
        *out = *run_at(tm, 0);
        tm->run_head = (tm->run_head + 1) & (tm->run_cap - 1);
        tm->run_len--;
        return 1;
    }
    if (tm->len == 0 || tm->heap[0].deadline > now)
        return 0;
    *out = tm->heap[0];
    corio__timer_entry last = tm->heap[--tm->len];
    if (tm->len)
        sift_down(tm, 0, last);
    return 1;
}
