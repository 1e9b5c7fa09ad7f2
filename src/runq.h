/*
 * runq.h: a loop's queue of never-run tasks, the ones other loops may
 * steal.
 *
 * Two parts:
 *   ring      a fixed array of CORIO__RUNQ_CAP slots. The owning loop pushes
 *             at the tail (a plain store and a release) and pops at the
 *             head (one CAS); thieves take half of it with one CAS on the
 *             head. 64-bit indices never wrap, so a thief holding a stale
 *             head can never succeed by accident (no ABA).
 *   overflow  a mutex-protected FIFO of blocks of task pointers: when the
 *             ring is full its older half moves into a block, so spawning a
 *             million tasks in a burst moves them CORIO__RUNQ_CAP/2 at a
 *             time under one lock acquisition each. Thieves drain it too.
 *             Pointer blocks, not a list linked through the tasks: taking
 *             a batch back then reads one block instead of chasing a
 *             pointer through every task, each a cache miss by the time a
 *             burst's tasks come back (spawn+join of 1M tasks on two
 *             loops: median 102.5 ns with the list, 95.4 with blocks,
 *             bench/RESULTS.md). Blocks come from an arena of the
 *             queue's own (arena.h: 2 MiB chunks, huge pages from the
 *             second on if the runtime has huge_pages), used under
 *             the queue's lock; emptied ones go back to it (the last one
 *             to a lock-free spare), and its chunks are unmapped only with
 *             the queue. From malloc they had been
 *             4 KiB pages faulted in one by one (~17 us each on the AMD
 *             VM), and a block emptied by a thief went to the thief's
 *             malloc arena, so a spawner kept faulting in fresh ones: most
 *             of the page faults left in starting a million sleepers.
 *
 * Why a thief's copy is safe: it reads slots [h, h+n) and then claims them
 * with CAS(head, h, h+n). The owner only writes slots below head + CAP, so
 * while head is still h it cannot overwrite [h, h+n); if head moved, the
 * CAS fails and the copy is thrown away.
 *
 * head and tail sit on their own cache lines: thieves hammer head, the
 * owner writes tail on every spawn.
 */
#ifndef CORIO_RUNQ_H
#define CORIO_RUNQ_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"

#define CORIO__RUNQ_CAP 256u
#define CORIO__CACHE_LINE 64

struct corio_task;
struct corio__runq_block;

typedef struct corio__runq {
    _Alignas(CORIO__CACHE_LINE) _Atomic uint64_t head; /* owner pops, thieves CAS */
    _Alignas(CORIO__CACHE_LINE) _Atomic uint64_t tail; /* written by the owner only */
    uint64_t head_seen; /* owner: head as last read; head only grows, so a
                         * stale value can only make the ring look fuller */
    _Atomic(struct corio_task *) slots[CORIO__RUNQ_CAP];

    /* Overflow blocks, under `lock`. `overflow_len` is also read without
     * the lock as a hint by thieves. */
    _Alignas(CORIO__CACHE_LINE) pthread_mutex_t lock;
    struct corio__runq_block *overflow_head, *overflow_tail;
    _Atomic size_t overflow_len;
    /* An empty block kept for the next spill; exchanged, never locked. */
    _Atomic(struct corio__runq_block *) spare;
    /* Where blocks come from and go back to, under `lock` (an arena is
     * one thread's at a time: the lock makes it so). */
    corio__arena blocks;
} corio__runq;

/* huge_pages: the runtime's (corio_config's huge_pages). */
int corio__runq_init(corio__runq *q, bool huge_pages);
void corio__runq_destroy(corio__runq *q);

/* Owner only. A full ring spills half into an overflow block; false, with
 * nothing queued, when no block can be had (out of memory). Never fails
 * while the ring has room, which is how steal and refill use it. */
__attribute__((warn_unused_result)) bool corio__runq_push(corio__runq *q,
                                                          struct corio_task *t);
/* Owner only: the oldest task, or NULL. Takes from the overflow when the
 * ring is empty. */
struct corio_task *corio__runq_pop(corio__runq *q);
/* Owner only: the oldest task in the ring, or NULL when the ring is empty
 * (the overflow is left alone: taking from it needs a 1 KiB buffer and
 * library calls, more stack than a task's wait may use, sched.c). */
struct corio_task *corio__runq_pop_ring(corio__runq *q);
/* Owner only: the oldest task in the overflow, or NULL. For fairness:
 * the ring is popped first, so tasks spilled to the overflow would wait
 * for as long as pushes keep the ring from emptying (sched.c takes one
 * from here at each poll). */
struct corio_task *corio__runq_pop_overflow(corio__runq *q);
/* Any thread: a hint of how many tasks wait (ring + overflow). */
size_t corio__runq_len(corio__runq *q);

/* Owner only: is the queue empty? Exact for the owner, who alone adds
 * (head only grows, so a stale head can only make it look fuller), and
 * three relaxed loads: for queues that are empty nearly always. */
static inline bool corio__runq_owner_empty(corio__runq *q)
{
    return atomic_load_explicit(&q->head, memory_order_relaxed) ==
               atomic_load_explicit(&q->tail, memory_order_relaxed) &&
           atomic_load_explicit(&q->overflow_len, memory_order_relaxed) == 0;
}

/* Owner only: is the ring empty (the overflow aside)? */
static inline bool corio__runq_ring_owner_empty(corio__runq *q)
{
    return atomic_load_explicit(&q->head, memory_order_relaxed) ==
           atomic_load_explicit(&q->tail, memory_order_relaxed);
}

/*
 * Called by the owner of `dst`: take half of victim's tasks (ring first,
 * then overflow), but at most `max` and no more than dst's ring has room
 * for, into dst's ring and return one of them to run now, or NULL if the
 * victim had nothing.
 */
struct corio_task *corio__runq_steal(corio__runq *dst, corio__runq *victim, size_t max);

#endif /* CORIO_RUNQ_H */
