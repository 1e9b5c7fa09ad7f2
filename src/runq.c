/*
 * runq.c: the stealable run queue of never-run tasks (see runq.h).
 */
#include "runq.h"

#include <string.h>

#include "corio.h"
#include "sys.h"
#include "task.h"

#define MASK (CORIO__RUNQ_CAP - 1)
/* What a spill moves out of a full ring, and so what a block holds. */
#define BLOCK_TASKS (CORIO__RUNQ_CAP / 2)

struct corio__runq_block {
    struct corio__runq_block *next;
    uint32_t begin, end; /* the tasks still in it: tasks[begin, end) */
    struct corio_task *tasks[BLOCK_TASKS];
};

int corio__runq_init(corio__runq *q, bool huge_pages)
{
    atomic_init(&q->head, 0);
    atomic_init(&q->tail, 0);
    q->head_seen = 0;
    for (unsigned i = 0; i < CORIO__RUNQ_CAP; i++)
        atomic_init(&q->slots[i], NULL);
    q->overflow_head = q->overflow_tail = NULL;
    atomic_init(&q->overflow_len, 0);
    atomic_init(&q->spare, NULL);
    q->blocks = (corio__arena){.huge_pages = huge_pages};
    int rc = pthread_mutex_init(&q->lock, NULL);
    return rc == 0 ? 0 : -rc;
}

void corio__runq_destroy(corio__runq *q)
{
    /* Every block, queued, spare or free, lives in the arena. */
    corio__arena_release(&q->blocks);
    q->overflow_head = q->overflow_tail = NULL;
    atomic_store(&q->spare, NULL);
    pthread_mutex_destroy(&q->lock);
}

/* ---- overflow blocks ---- */

static struct corio__runq_block *block_get(corio__runq *q)
{
    struct corio__runq_block *b = atomic_exchange_explicit(&q->spare, NULL, memory_order_acquire);
    if (b)
        return b;
    pthread_mutex_lock(&q->lock);
    b = corio__arena_alloc(&q->blocks, sizeof *b);
    pthread_mutex_unlock(&q->lock);
    return b;
}

/* An emptied block: keep it for the next spill, and give the one kept
 * before, if any, back to the arena. Any thread, not holding q->lock. */
static void block_put(corio__runq *q, struct corio__runq_block *b)
{
    struct corio__runq_block *old = atomic_exchange_explicit(&q->spare, b, memory_order_acq_rel);
    if (!old)
        return;
    pthread_mutex_lock(&q->lock);
    corio__arena_free(&q->blocks, old, sizeof *old);
    pthread_mutex_unlock(&q->lock);
}

/* Take up to `max` tasks from the front of the overflow into out[]. A take
 * empties at most two blocks: only the front one is ever partly taken. */
static size_t overflow_take(corio__runq *q, struct corio_task **out, size_t max)
{
    if (max == 0 || atomic_load_explicit(&q->overflow_len, memory_order_relaxed) == 0)
        return 0;
    struct corio__runq_block *emptied = NULL;
    size_t n = 0;
    pthread_mutex_lock(&q->lock);
    while (n < max && q->overflow_head) {
        struct corio__runq_block *b = q->overflow_head;
        size_t k = b->end - b->begin;
        if (k > max - n)
            k = max - n;
        memcpy(out + n, b->tasks + b->begin, k * sizeof *out);
        b->begin += (uint32_t)k;
        n += k;
        if (b->begin == b->end) {
            q->overflow_head = b->next;
            if (!q->overflow_head)
                q->overflow_tail = NULL;
            b->next = emptied;
            emptied = b;
        }
    }
    atomic_fetch_sub_explicit(&q->overflow_len, n, memory_order_relaxed);
    pthread_mutex_unlock(&q->lock);
    while (emptied) {
        struct corio__runq_block *next = emptied->next;
        block_put(q, emptied);
        emptied = next;
    }
    return n;
}

/* ---- the ring ---- */

/* Owner: append tasks[0, n) to a ring known to have room for them. */
static void ring_put(corio__runq *q, struct corio_task *const *tasks, size_t n)
{
    uint64_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
    for (size_t i = 0; i < n; i++)
        atomic_store_explicit(&q->slots[(tail + i) & MASK], tasks[i], memory_order_relaxed);
    /* Release, not seq_cst: a sequentially consistent store here cost 70%
     * of a spawn (measured, corio-bench spawn_join_ns). Without it a loop
     * going to park and this spawner can miss each other (loop.c,
     * "parking"); that only delays help, since the task sits in our own
     * queue and this loop runs it. */
    atomic_store_explicit(&q->tail, tail + n, memory_order_release);
}

/* Owner: the ring is full as of head `h`; move its older half into an
 * overflow block, then queue t in the room that made. If a thief moved
 * head meanwhile, the claim fails and t goes into the room it freed. */
static bool spill(corio__runq *q, struct corio_task *t, uint64_t h)
{
    struct corio__runq_block *b = block_get(q);
    if (!b)
        return false;
    for (uint64_t i = 0; i < BLOCK_TASKS; i++)
        b->tasks[i] = atomic_load_explicit(&q->slots[(h + i) & MASK], memory_order_relaxed);
    if (!atomic_compare_exchange_strong_explicit(&q->head, &h, h + BLOCK_TASKS,
                                                 memory_order_acq_rel, memory_order_acquire)) {
        block_put(q, b);
        q->head_seen = h;
        ring_put(q, &t, 1);
        return true;
    }
    q->head_seen = h + BLOCK_TASKS;
    b->next = NULL;
    b->begin = 0;
    b->end = BLOCK_TASKS;
    pthread_mutex_lock(&q->lock);
    if (q->overflow_tail)
        q->overflow_tail->next = b;
    else
        q->overflow_head = b;
    q->overflow_tail = b;
    atomic_fetch_add_explicit(&q->overflow_len, BLOCK_TASKS, memory_order_relaxed);
    pthread_mutex_unlock(&q->lock);
    ring_put(q, &t, 1);
    return true;
}

bool corio__runq_push(corio__runq *q, struct corio_task *t)
{
    uint64_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
    if (tail - q->head_seen >= CORIO__RUNQ_CAP) {
        /* Thieves move head: read it only when the ring looks full (it
         * is their cache line, a miss on every push otherwise). */
        q->head_seen = atomic_load_explicit(&q->head, memory_order_acquire);
        if (tail - q->head_seen >= CORIO__RUNQ_CAP)
            return spill(q, t, q->head_seen);
    }
    ring_put(q, &t, 1);
    return true;
}

/* Refill the (empty) ring from the overflow; returns one task to run. */
static struct corio_task *refill_from_overflow(corio__runq *q)
{
    struct corio_task *batch[BLOCK_TASKS];
    size_t n = overflow_take(q, batch, BLOCK_TASKS);
    if (n == 0)
        return NULL;
    ring_put(q, batch + 1, n - 1);
    return batch[0];
}

struct corio_task *corio__runq_pop_ring(corio__runq *q)
{
    uint64_t head = atomic_load_explicit(&q->head, memory_order_acquire);
    for (;;) {
        uint64_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
        if (head == tail)
            return NULL;
        struct corio_task *t = atomic_load_explicit(&q->slots[head & MASK], memory_order_relaxed);
        if (atomic_compare_exchange_weak_explicit(&q->head, &head, head + 1,
                                                  memory_order_acq_rel, memory_order_acquire)) {
            /* The next one runs after this one: start fetching its handle
             * now (a burst's tasks are long out of cache when they run; a
             * stale slot only wastes the prefetch). */
            __builtin_prefetch(atomic_load_explicit(&q->slots[(head + 1) & MASK],
                                                    memory_order_relaxed), 1);
            return t;
        }
    }
}

struct corio_task *corio__runq_pop(corio__runq *q)
{
    struct corio_task *t = corio__runq_pop_ring(q);
    return t ? t : refill_from_overflow(q);
}

struct corio_task *corio__runq_pop_overflow(corio__runq *q)
{
    struct corio_task *t;
    return overflow_take(q, &t, 1) ? t : NULL;
}

size_t corio__runq_len(corio__runq *q)
{
    uint64_t head = atomic_load_explicit(&q->head, memory_order_seq_cst);
    uint64_t tail = atomic_load_explicit(&q->tail, memory_order_seq_cst);
    size_t ring = tail > head ? (size_t)(tail - head) : 0;
    return ring + atomic_load_explicit(&q->overflow_len, memory_order_relaxed);
}

struct corio_task *corio__runq_steal(corio__runq *dst, corio__runq *victim, size_t max)
{
    /* The one returned is not queued, so the ring needs room for the
     * rest; then pushing them cannot spill (and so cannot fail). */
    uint64_t dst_len = atomic_load_explicit(&dst->tail, memory_order_relaxed) -
                       atomic_load_explicit(&dst->head, memory_order_acquire);
    if (max > CORIO__RUNQ_CAP - dst_len + 1)
        max = CORIO__RUNQ_CAP - dst_len + 1;
    if (max > BLOCK_TASKS)
        max = BLOCK_TASKS;
    if (max == 0)
        return NULL;
    struct corio_task *batch[BLOCK_TASKS];
    uint64_t head = atomic_load_explicit(&victim->head, memory_order_acquire);
    for (;;) {
        uint64_t tail = atomic_load_explicit(&victim->tail, memory_order_acquire);
        if (tail <= head)
            break;
        uint64_t n = tail - head;
        n -= n / 2; /* half, rounding up: a single task is stolen too */
        if (n > max)
            n = max;
        for (uint64_t i = 0; i < n; i++)
            batch[i] = atomic_load_explicit(&victim->slots[(head + i) & MASK],
                                            memory_order_relaxed);
        if (atomic_compare_exchange_weak_explicit(&victim->head, &head, head + n,
                                                  memory_order_acq_rel, memory_order_acquire)) {
            ring_put(dst, batch + 1, n - 1);
            return batch[0];
        }
    }
    /* Ring empty: half the overflow, within the same bounds. */
    size_t len = atomic_load_explicit(&victim->overflow_len, memory_order_relaxed);
    size_t want = len - len / 2;
    size_t n = overflow_take(victim, batch, want < max ? want : max);
    if (n == 0)
        return NULL;
    ring_put(dst, batch + 1, n - 1);
    return batch[0];
}
