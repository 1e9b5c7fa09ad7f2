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
 *
 * A channel select (select.c) waits in several queues at once, which one
 * set of links in the run state cannot do: it queues a node per channel
 * instead, from memory of its own. A queue keeps its nodes in a second
 * list; tasks and nodes draw tickets from one counter, and a wake-up goes
 * to the lowest ticket of the two heads, so the order stays FIFO across
 * both. Only channels ever hold nodes. A select's nodes stay queued for a
 * moment after its wait ended, until it takes them out: a waker that
 * finds one then fails to fire it and goes on to the next waiter, as for
 * any waiter whose wait ended.
 */
#ifndef CORIO_WAITQ_H
#define CORIO_WAITQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "task.h"

/* A select's place in one queue. `fired`: this node's wake-up fired the
 * task; written by the waker under the queue's lock, read by the select
 * under it once the node is out of the queue. */
struct corio__waitq_node {
    struct corio__waitq_node *next, *prev;
    uint64_t ticket; /* 0 until first queued, then kept (push_again) */
    corio_task *task;
    bool fired;
};

typedef struct corio__waitq {
    corio_task *head, *tail;
    struct corio__waitq_node *nodes, *nodes_tail; /* selects, ticket order */
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

/* Queue a select's node: at the back the first time, in its old turn
 * after that (as corio__waitq_push_again, and for the same reason). */
static inline void corio__waitq_node_push(corio__waitq *q, struct corio__waitq_node *n)
{
    if (!n->ticket)
        n->ticket = ++q->tickets;
    struct corio__waitq_node *prev = q->nodes_tail, *next = NULL;
    while (prev && prev->ticket > n->ticket) {
        next = prev;
        prev = prev->prev;
    }
    n->prev = prev;
    n->next = next;
    if (prev)
        prev->next = n;
    else
        q->nodes = n;
    if (next)
        next->prev = n;
    else
        q->nodes_tail = n;
}

static inline bool corio__waitq_node_queued(const corio__waitq *q,
                                            const struct corio__waitq_node *n)
{
    return n->prev != NULL || q->nodes == n;
}

static inline void corio__waitq_node_remove(corio__waitq *q, struct corio__waitq_node *n)
{
    if (!corio__waitq_node_queued(q, n))
        return;
    if (n->prev)
        n->prev->next = n->next;
    else
        q->nodes = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        q->nodes_tail = n->prev;
    n->next = n->prev = NULL;
}

/* Wake the first task still waiting (a task queued itself, or a select
 * through its node); returns it, or NULL if none was. */
static inline corio_task *corio__waitq_wake_one(corio__waitq *q, int result)
{
    for (;;) {
        corio_task *t = q->head;
        struct corio__waitq_node *n = q->nodes;
        if (n && (!t || n->ticket < t->run->wq_ticket)) {
            corio__waitq_node_remove(q, n);
            if (corio__task_fire_any(n->task, result)) {
                n->fired = true;
                return n->task;
            }
            continue;
        }
        if (!t)
            return NULL;
        corio__waitq_remove(q, t);
        if (corio__task_fire_any(t, result))
            return t;
    }
}

static inline void corio__waitq_wake_all(corio__waitq *q, int result)
{
    while (corio__waitq_wake_one(q, result))
        ;
}

static inline bool corio__waitq_empty(const corio__waitq *q)
{
    return q->head == NULL && q->nodes == NULL;
}

#endif /* CORIO_WAITQ_H */
