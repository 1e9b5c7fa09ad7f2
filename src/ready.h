/*
 * ready.h: a loop's ready list, and switching straight from one ready
 * task to the next.
 *
 * The ready list holds a loop's started tasks that can run now, in FIFO
 * order, linked through `next`; only the loop's own thread touches it.
 * When a task gives up the CPU and the next ready task can take it
 * without the scheduler's help, the switch goes from task to task
 * directly: half the switches, and no pass through the scheduler's
 * checks. These are inline because a yield is nothing but this
 * (bench/RESULTS.md has the instruction counts).
 */
#ifndef CORIO_READY_H
#define CORIO_READY_H

#include <stdbool.h>

#include "loop.h"
#include "sanitize.h"
#include "task.h"

/* Owner: append t, whatever its state, without the migration check of
 * corio__ready_push. */
static inline void corio__ready_append(corio__loop *l, corio_task *t)
{
    t->next = NULL;
    if (l->ready_tail)
        l->ready_tail->next = t;
    else
        l->ready_head = t;
    l->ready_tail = t;
}

/* Owner: append the list head..tail (linked by next, tail->next NULL),
 * in its order. */
static inline void corio__ready_append_list(corio__loop *l, corio_task *head, corio_task *tail)
{
    if (l->ready_tail)
        l->ready_tail->next = head;
    else
        l->ready_head = head;
    l->ready_tail = tail;
}

static inline corio_task *corio__ready_pop(corio__loop *l)
{
    corio_task *t = l->ready_head;
    if (t) {
        l->ready_head = t->next;
        if (!l->ready_head)
            l->ready_tail = NULL;
        t->next = NULL;
    }
    return t;
}

/* Can `self` switch straight to the ready list's head `next`, without the
 * scheduler? Only if `next` has run before (starting one may fail and
 * needs the scheduler's error path), the frames of both are where they
 * belong (light tasks share the loop's stack: the scheduler copies them),
 * no picks are owed to the run queues (a lone yielder's, wait.c) and the
 * loop is not due to poll. */
static inline bool corio__direct_switch_ok(const corio__loop *l, const corio_task *self,
                                           const corio_task *next)
{
    return next && l->tick < CORIO__POLL_INTERVAL && !(self->flags & CORIO__TF_LIGHT) &&
           next->state != CORIO__TASK_NEW &&
           (!(next->flags & CORIO__TF_LIGHT) || l->shared_owner == next) && !l->queue_picks;
}

/* Run `next` (just taken off the ready list) in place of `self`; returns
 * when self runs again. */
static inline void corio__switch_to(corio__loop *l, corio_task *self, corio_task *next)
{
    next->state = CORIO__TASK_RUNNING;
    l->current = next;
    corio__san_switch(&self->run->ctx, &self->run->san, &next->run->ctx, &next->run->san, 0);
}

/* A yield's switch on its common path: self (running, so on no list) goes
 * to the back of the ready list and the head runs. False, having done
 * nothing, when that needs the scheduler or self may migrate (whose
 * requeue goes through corio__ready_push). */
static inline bool corio__ready_rotate(corio__loop *l, corio_task *self)
{
    corio_task *next = l->ready_head;
    if ((self->flags & CORIO__TF_MIGRATE) || !corio__direct_switch_ok(l, self, next))
        return false;
    l->tick++;
    corio__ready_pop(l);
    self->state = CORIO__TASK_READY;
    corio__ready_append(l, self);
    corio__switch_to(l, self, next);
    return true;
}

#endif
