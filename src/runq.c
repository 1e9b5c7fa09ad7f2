/*
 * runq.c: the stealable run queue of never-run tasks (see runq.h).
 */
#include "runq.h"

#include "corio.h"
#include "task.h"

#define MASK (CORIO__RUNQ_CAP - 1)

int corio__runq_init(corio__runq *q)
{
    atomic_init(&q->head, 0);
    atomic_init(&q->tail, 0);
    q->head_seen = 0;
    for (unsigned i = 0; i < CORIO__RUNQ_CAP; i++)
        atomic_init(&q->slots[i], NULL);
    q->overflow_head = q->overflow_tail = NULL;
    atomic_init(&q->overflow_len, 0);
    int rc = pthread_mutex_init(&q->lock, NULL);
    return rc == 0 ? 0 : -rc;
}

void corio__runq_destroy(corio__runq *q) { pthread_mutex_destroy(&q->lock); }

/* Append a chain first..last of n tasks to the overflow list. */
static void overflow_append(corio__runq *q, corio_task *first, corio_task *last, size_t n)
{
    last->next = NULL;
    pthread_mutex_lock(&q->lock);
    if (q->overflow_tail)
        q->overflow_tail->next = first;
    else
        q->overflow_head = first;
    q->overflow_tail = last;
    atomic_fetch_add_explicit(&q->overflow_len, n, memory_order_relaxed);
    pthread_mutex_unlock(&q->lock);
}

/* Take up to `max` tasks from the front of the overflow list, as a chain. */
static corio_task *overflow_take(corio__runq *q, size_t max, size_t *taken)
{
    *taken = 0;
    if (atomic_load_explicit(&q->overflow_len, memory_order_relaxed) == 0)
        return NULL;
    pthread_mutex_lock(&q->lock);
    corio_task *first = q->overflow_head, *last = NULL;
    size_t n = 0;
    for (corio_task *t = first; t && n < max; t = t->next) {
        last = t;
        n++;
    }
    if (n) {
        q->overflow_head = last->next;
        if (!q->overflow_head)
            q->overflow_tail = NULL;
        last->next = NULL;
        atomic_fetch_sub_explicit(&q->overflow_len, n, memory_order_relaxed);
    }
    pthread_mutex_unlock(&q->lock);
    *taken = n;
    return n ? first : NULL;
}

/* Owner: the ring looked full; move its older half plus t into the
 * overflow. Thieves may have emptied it since: look again first, and
 * never take more than is there (taking slots past the tail would queue
 * stale, finished tasks again). */
static void spill(corio__runq *q, corio_task *t)
{
    uint64_t h = atomic_load_explicit(&q->head, memory_order_acquire);
    uint64_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
    q->head_seen = h;
    if (tail - h < CORIO__RUNQ_CAP) {
        corio__runq_push(q, t);
        return;
    }
    uint64_t n = CORIO__RUNQ_CAP / 2;
    corio_task *batch[CORIO__RUNQ_CAP / 2];
    for (uint64_t i = 0; i < n; i++)
        batch[i] = atomic_load_explicit(&q->slots[(h + i) & MASK], memory_order_relaxed);
    if (!atomic_compare_exchange_strong_explicit(&q->head, &h, h + n, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        /* A thief freed room meanwhile: the push can go into the ring. */
        corio__runq_push(q, t);
        return;
    }
    for (uint64_t i = 0; i + 1 < n; i++)
        batch[i]->next = batch[i + 1];
    batch[n - 1]->next = t;
    overflow_append(q, batch[0], t, n + 1);
}

void corio__runq_push(corio__runq *q, corio_task *t)
{
    uint64_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
    if (tail - q->head_seen >= CORIO__RUNQ_CAP) {
        /* Thieves move head: read it only when the ring looks full (it
         * is their cache line, a miss on every push otherwise). */
        q->head_seen = atomic_load_explicit(&q->head, memory_order_acquire);
        if (tail - q->head_seen >= CORIO__RUNQ_CAP) {
            spill(q, t);
            return;
        }
    }
    atomic_store_explicit(&q->slots[tail & MASK], t, memory_order_relaxed);
    /* Release, not seq_cst: a sequentially consistent store here cost 70%
     * of a spawn (measured, corio-bench spawn_join_ns). Without it a loop
     * going to park and this spawner can miss each other (loop.c,
     * "parking"); that only delays help, since the task sits in our own
     * queue and this loop runs it. */
    atomic_store_explicit(&q->tail, tail + 1, memory_order_release);
}

/* Refill the (empty) ring from the overflow; returns one task to run. */
static corio_task *refill_from_overflow(corio__runq *q)
{
    size_t n;
    corio_task *chain = overflow_take(q, CORIO__RUNQ_CAP / 2 + 1, &n);
    if (!chain)
        return NULL;
    corio_task *first = chain;
    for (corio_task *t = chain->next; t;) {
        corio_task *next = t->next;
        corio__runq_push(q, t);
        t = next;
    }
    return first;
}

corio_task *corio__runq_pop(corio__runq *q)
{
    uint64_t head = atomic_load_explicit(&q->head, memory_order_acquire);
    for (;;) {
        uint64_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
        if (head == tail)
            return refill_from_overflow(q);
        corio_task *t = atomic_load_explicit(&q->slots[head & MASK], memory_order_relaxed);
        if (atomic_compare_exchange_weak_explicit(&q->head, &head, head + 1,
                                                  memory_order_acq_rel, memory_order_acquire))
            return t;
    }
}

size_t corio__runq_len(corio__runq *q)
{
    uint64_t head = atomic_load_explicit(&q->head, memory_order_seq_cst);
    uint64_t tail = atomic_load_explicit(&q->tail, memory_order_seq_cst);
    size_t ring = tail > head ? (size_t)(tail - head) : 0;
    return ring + atomic_load_explicit(&q->overflow_len, memory_order_relaxed);
}

corio_task *corio__runq_steal(corio__runq *dst, corio__runq *victim, size_t max)
{
    if (max == 0)
        return NULL;
    if (max > CORIO__RUNQ_CAP / 2)
        max = CORIO__RUNQ_CAP / 2;
    corio_task *batch[CORIO__RUNQ_CAP / 2];
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
            for (uint64_t i = 1; i < n; i++)
                corio__runq_push(dst, batch[i]);
            return batch[0];
        }
    }
    /* Ring empty: half the overflow, at most a ring's worth. */
    size_t len = atomic_load_explicit(&victim->overflow_len, memory_order_relaxed);
    if (len == 0)
        return NULL;
    size_t want = len - len / 2;
    if (want > max)
        want = max;
    size_t n;
    corio_task *chain = overflow_take(victim, want, &n);
    if (!chain)
        return NULL;
    for (corio_task *t = chain->next; t;) {
        corio_task *next = t->next;
        corio__runq_push(dst, t);
        t = next;
    }
    return chain;
}
