/*
 * waitq.h: FIFO queues of waiting tasks, for channels, semaphores,
 * mutexes, events and wait groups.
 *
 * The queue node lives in the task (a task waits on one thing at a time),
 * never on its stack, so light tasks can wait too. All operations run
 * under the owning object's spinlock. Waking pops a node and fires its
 * task with the token it queued with; if the fire fails, the task's wait
 * already ended (deadline, cancellation) and the next node is tried, so a
 * wake-up is never spent on a task that is no longer waiting.
 */
#ifndef CORIO_WAITQ_H
#define CORIO_WAITQ_H

#include <stdbool.h>
#include <stddef.h>

#include "task.h"

typedef struct corio__waitq {
    corio__waiter *head, *tail;
} corio__waitq;

static inline void corio__waitq_push(corio__waitq *q, corio__waiter *w, corio_task *t,
                                     uint64_t token)
{
    w->task = t;
    w->token = token;
    w->queued = true;
    w->next = NULL;
    w->prev = q->tail;
    if (q->tail)
        q->tail->next = w;
    else
        q->head = w;
    q->tail = w;
}

static inline void corio__waitq_remove(corio__waitq *q, corio__waiter *w)
{
    if (!w->queued)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        q->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        q->tail = w->prev;
    w->queued = false;
    w->next = w->prev = NULL;
}

static inline corio__waiter *corio__waitq_pop(corio__waitq *q)
{
    corio__waiter *w = q->head;
    if (w)
        corio__waitq_remove(q, w);
    return w;
}

/* Wake the first task still waiting; returns it, or NULL if none was. */
static inline corio_task *corio__waitq_wake_one(corio__waitq *q, int result)
{
    corio__waiter *w;
    while ((w = corio__waitq_pop(q)) != NULL)
        if (corio__task_fire(w->task, w->token, result))
            return w->task;
    return NULL;
}

static inline void corio__waitq_wake_all(corio__waitq *q, int result)
{
    while (corio__waitq_wake_one(q, result))
        ;
}

static inline bool corio__waitq_empty(const corio__waitq *q) { return q->head == NULL; }

#endif /* CORIO_WAITQ_H */
