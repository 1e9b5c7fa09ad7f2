/*
 * timer.c: the per-loop deadlines: a 4-ary heap and a sorted run, both
 * with lazy deletion (timer.h).
 */
#include "timer.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include "bigarray.h"
#include "task.h"

#define ARITY 4
/* Heaps smaller than this are never swept: the sweep would cost more. */
#define SWEEP_MIN 4096

void corio__timers_init(corio__timers *tm, bool huge_pages)
{
    *tm = (corio__timers){.huge_pages = huge_pages};
}

void corio__timers_destroy(corio__timers *tm)
{
    corio__bigarray_free(tm->heap, tm->cap * sizeof *tm->heap);
    corio__bigarray_free(tm->run, tm->run_cap * sizeof *tm->run);
    corio__timers_init(tm, tm->huge_pages);
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
        corio__timer_entry *heap = corio__bigarray_grow(tm->heap, tm->cap * sizeof *heap,
                                                        cap * sizeof *heap, tm->huge_pages);
        if (!heap)
            return CORIO_ENOMEM;
        tm->heap = heap;
        tm->cap = cap;
    }
    sift_up(tm, tm->len++, e);
    return 0;
}

/* Double a full run. The entries keep their offsets, so the ring's two
 * pieces, [head, cap) and then [0, head), are moved apart: the shorter
 * one goes to the new half. */
static int run_grow(corio__timers *tm)
{
    size_t old = tm->run_cap, cap = old ? old * 2 : 64;
    corio__timer_entry *run =
        corio__bigarray_grow(tm->run, old * sizeof *run, cap * sizeof *run, tm->huge_pages);
    if (!run)
        return CORIO_ENOMEM;
    size_t head = tm->run_head;
    if (head <= old / 2) {
        memcpy(run + old, run, head * sizeof *run); /* the wrapped tail, after the front */
    } else {
        memcpy(run + cap - (old - head), run + head, (old - head) * sizeof *run);
        tm->run_head = head + old; /* the front, moved to the end */
    }
    tm->run = run;
    tm->run_cap = cap;
    return 0;
}

/* Append to the run; the caller checked the order. */
static int run_add(corio__timers *tm, corio__timer_entry e)
{
    if (tm->run_len == tm->run_cap) {
        int rc = run_grow(tm);
        if (rc != 0)
            return rc;
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
