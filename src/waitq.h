/*
 * waitq.h: FIFO queues of waiting tasks, for channels, semaphores,
 * mutexes, events and wait groups.
 *
 * The queue links live in the task's run state (a task waits on one thing
 * at a time), never in its frames, so light tasks can wait too. All
 * operations run under the owning object's spinlock. A task is in a queue
 * only while its wait is armed for that queue (it leaves under the lock
 * before waiting on anything else), so waking fires whatever wait it has
 * armed. If the fire fails, the task's wait already ended (deadline,
 * cancellation) and the next one is tried: a wake-up is never spent on a
 * task no longer waiting.
 */
#ifndef CORIO_WAITQ_H
#define CORIO_WAITQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "task.h"

typedef struct corio__waitq {
    corio_task *head, *tail;
    uint64_t tickets; /* handed out by push, in arrival order */
} corio__waitq;

static inline void corio__waitq_push(corio__waitq *q, corio_task *t)
{
    t->run->wq_ticket = ++q->tickets;
    t->run->wq_next = NULL;
    t->run->wq_prev = q->tail;
    if (q->tail)
        q->tail->run->wq_next = t;
    else
        q->head = t;
    q->tail = t;
}

/* Queue t again with the ticket of its last push: a task woken to try
 * again (a channel's waiter) that found what woke it already taken goes
 * back where it was, ahead of the tasks that came later, and behind those
 * woken before it that lost as well (taken from the head before it, they
 * may come back in any order: several loops, or one loop's FIFO, which
 * put them back at the head in reverse). The queue stays in ticket order. */
static inline void corio__waitq_push_again(corio__waitq *q, corio_task *t)
{
    corio_task *prev = NULL, *next = q->head;
    while (next && next->run->wq_ticket < t->run->wq_ticket) {
        prev = next;
        next = next->run->wq_next;
    }
    t->run->wq_prev = prev;
    t->run->wq_next = next;
    if (prev)
        prev->run->wq_next = t;
    else
        q->head = t;
    if (next)
        next->run->wq_prev = t;
    else
        q->tail = t;
}

/* Is t in q? Its links are NULL whenever it is in no queue (task_entry
 * clears them, removal clears them), and only q's head has no prev. */
static inline bool corio__waitq_contains(const corio__waitq *q, const corio_task *t)
{
    return t->run->wq_prev != NULL || q->head == t;
}

static inline void corio__waitq_remove(corio__waitq *q, corio_task *t)
{
    if (!corio__waitq_contains(q, t))
        return;
    struct corio__task_run *r = t->run;
    if (r->wq_prev)
        r->wq_prev->run->wq_next = r->wq_next;
    else
        q->head = r->wq_next;
    if (r->wq_next)
        r->wq_next->run->wq_prev = r->wq_prev;
    else
        q->tail = r->wq_prev;
    r->wq_next = r->wq_prev = NULL;
}

/* Wake the first task still waiting; returns it, or NULL if none was. */
static inline corio_task *corio__waitq_wake_one(corio__waitq *q, int result)
{
    corio_task *t;
    while ((t = q->head) != NULL) {
        corio__waitq_remove(q, t);
        if (corio__task_fire_any(t, result))
            return t;
    }
    return NULL;
}

static inline void corio__waitq_wake_all(corio__waitq *q, int result)
{
    while (corio__waitq_wake_one(q, result))
        ;
}

static inline bool corio__waitq_empty(const corio__waitq *q) { return q->head == NULL; }

#endif /* CORIO_WAITQ_H */
