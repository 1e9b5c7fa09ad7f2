/*
 * select.c: one task waiting on several channels (corio_chan_select).
 *
 * A select is a channel wait (chan.c) in several queues at once: one
 * wait token, and a node in the queue of every op (waitq.h), so that the
 * first channel to wake any of them fires the task and every other
 * wake-up finds the token spent and goes to the next waiter. As with a
 * plain receive, a wake-up means "try again": the woken select takes
 * every node out of its queue and tries its ops once more, the one whose
 * channel woke it first, and sleeps again, each node in its old turn, if
 * another task was quicker.
 *
 * Two things a single-queue wait never meets:
 *
 * - A wake-up may fire the select while it still registers, or while it
 *   is done on another op (it registered with channel A, then found an
 *   element in B). The wake-up was then meant for a waiter, and the
 *   select no longer waits: it passes the wake-up on to A's next waiter,
 *   as a cancelled receiver does (sync_wait.h), or A's element would wait
 *   while A's other receivers sleep.
 * - One channel may appear in several ops (receive from it or send to
 *   it). A send that succeeds wakes the channel's receivers, which could
 *   be the select's own node, firing the task that is running the send.
 *   So the registering pass goes channel by channel in address order and,
 *   under each channel's lock, tries all of its ops before queueing any
 *   of their nodes: by the time a node is queued, nothing the select does
 *   later in the pass can touch that channel.
 *
 * Nodes live in memory the call allocates only when it must wait (a light
 * task's frames move while it waits, so not on its stack), freed before
 * it returns; ops and their elements are touched only by the select
 * itself, while it runs, so they may live on any task's stack.
 */
#include <stdint.h>
#include <stdlib.h>

#include "chan.h"
#include "sync_wait.h"
#include "sys.h"
#include "task.h"
#include "waitq.h"

#define NONE SIZE_MAX

/* An enabled op's place in the registering order (by channel). */
struct slot {
    uintptr_t chan;
    size_t index;
};

struct select {
    const corio_chan_op *ops;
    size_t n;
    corio_task *self;
    uint64_t token;
    corio_time_t deadline;
    size_t start;                    /* where a trying pass begins (fairness) */
    struct corio__waitq_node *nodes; /* per op; NULL until the call must wait */
    struct slot *order;              /* the enabled ops by channel */
    size_t enabled;
    bool registered;                 /* nodes may be queued */
};

static corio__waitq *queue_of(const corio_chan_op *op)
{
    return op->dir == CORIO_CHAN_SEND ? &op->chan->senders : &op->chan->receivers;
}

/* Under the op's channel's lock. */
static int attempt(const corio_chan_op *op)
{
    return op->dir == CORIO_CHAN_SEND ? corio__chan_put(op->chan, op->elem)
                                      : corio__chan_take(op->chan, op->elem);
}

static int attempt_locked(const corio_chan_op *op)
{
    corio__spin_lock(&op->chan->lock);
    int rc = attempt(op);
    corio__spin_unlock(&op->chan->lock);
    return rc;
}

/* A per-thread xorshift: which ready op wins is picked at random. Out of
 * line: a thread-local's address must not be kept across a suspension
 * (a migrating task resumes on another thread). */
__attribute__((noinline)) static size_t random_below(size_t n)
{
    static _Thread_local uint64_t state;
    uint64_t x = state ? state : (uint64_t)(uintptr_t)&state | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    state = x;
    return (size_t)(x % n);
}

/* Try every enabled op once, `first` (NONE: none) before the others, the
 * others from s->start round. Returns the index of the op that went
 * ahead or is closed (*rc its result), or NONE. */
static size_t try_all(const struct select *s, size_t first, int *rc)
{
    if (first != NONE && (*rc = attempt_locked(&s->ops[first])) != CORIO_EAGAIN)
        return first;
    for (size_t i = 0; i < s->n; i++) {
        size_t k = (s->start + i) % s->n;
        if (k == first || !s->ops[k].chan)
            continue;
        if ((*rc = attempt_locked(&s->ops[k])) != CORIO_EAGAIN)
            return k;
    }
    return NONE;
}

static int by_channel(const void *a, const void *b)
{
    const struct slot *x = a, *y = b;
    if (x->chan != y->chan)
        return x->chan < y->chan ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* The nodes and the registering order, once the call must wait. */
static int prepare_wait(struct select *s)
{
    size_t bytes_nodes = s->n * sizeof *s->nodes;
    void *mem = corio__malloc(bytes_nodes + s->n * sizeof *s->order);
    if (!mem)
        return CORIO_ENOMEM;
    s->nodes = mem;
    s->order = (struct slot *)((char *)mem + bytes_nodes);
    s->enabled = 0;
    for (size_t k = 0; k < s->n; k++) {
        s->nodes[k] = (struct corio__waitq_node){.task = s->self};
        if (s->ops[k].chan)
            s->order[s->enabled++] = (struct slot){(uintptr_t)s->ops[k].chan, k};
    }
    qsort(s->order, s->enabled, sizeof *s->order, by_channel);
    return 0;
}

/* Channel by channel: try its ops, and if none goes ahead queue a node
 * for each (file comment). Returns the op that went ahead, or NONE. */
static size_t register_all(struct select *s, int *rc)
{
    s->registered = true;
    for (size_t g = 0; g < s->enabled;) {
        corio_chan *c = (corio_chan *)s->order[g].chan;
        size_t end = g;
        while (end < s->enabled && s->order[end].chan == (uintptr_t)c)
            end++;
        corio__spin_lock(&c->lock);
        for (size_t i = g; i < end; i++) {
            size_t k = s->order[i].index;
            if ((*rc = attempt(&s->ops[k])) != CORIO_EAGAIN) {
                corio__spin_unlock(&c->lock);
                return k;
            }
        }
        for (size_t i = g; i < end; i++) {
            size_t k = s->order[i].index;
            s->nodes[k].fired = false;
            corio__waitq_node_push(queue_of(&s->ops[k]), &s->nodes[k]);
        }
        corio__spin_unlock(&c->lock);
        g = end;
        corio__race_point(); /* a wake-up may come now (test_select) */
    }
    return NONE;
}

/* Take every node out of its queue. Returns the op whose node's wake-up
 * fired the task (at most one: one token), or NONE. */
static size_t unregister_all(struct select *s)
{
    size_t fired = NONE;
    if (!s->registered)
        return NONE;
    for (size_t i = 0; i < s->enabled; i++) {
        size_t k = s->order[i].index;
        const corio_chan_op *op = &s->ops[k];
        corio__spin_lock(&op->chan->lock);
        corio__waitq_node_remove(queue_of(op), &s->nodes[k]);
        if (s->nodes[k].fired) {
            fired = k;
            s->nodes[k].fired = false;
        }
        corio__spin_unlock(&op->chan->lock);
    }
    s->registered = false;
    return fired;
}

/* A wake-up the select took but will not use goes to the next waiter. */
static void pass_on(const struct select *s, size_t fired)
{
    if (fired != NONE)
        corio__sync_pass_on(&s->ops[fired].chan->lock, queue_of(&s->ops[fired]));
}

/* The call ends: nothing of it may stay queued or armed. `done`: the op
 * that decided the result (went ahead, is closed, or could not grow its
 * unbounded channel), or NONE; `rc` the call's result. */
static int finish(struct select *s, size_t done, int rc, size_t *index)
{
    size_t fired = unregister_all(s);
    if (s->token)
        (void)corio__wait_disarm(s->self, s->token);
    pass_on(s, fired);
    corio__free(s->nodes);
    *index = done != NONE ? done : s->n;
    return rc;
}

static int check_ops(const corio_chan_op *ops, size_t n)
{
    if (n && !ops)
        return CORIO_EINVAL;
    bool any = false;
    for (size_t k = 0; k < n; k++) {
        if (!ops[k].chan)
            continue;
        if (ops[k].dir != CORIO_CHAN_SEND && ops[k].dir != CORIO_CHAN_RECV)
            return CORIO_EINVAL;
        if (ops[k].dir == CORIO_CHAN_SEND && !ops[k].elem)
            return CORIO_EINVAL;
        any = true;
    }
    return any ? 0 : CORIO_ENOENT;
}

int corio_chan_select_until(const corio_chan_op *ops, size_t n, size_t *index,
                            corio_time_t deadline)
{
    if (!index)
        return CORIO_EINVAL;
    *index = n;
    int rc = check_ops(ops, n);
    if (rc != 0)
        return rc;
    struct select s = {.ops = ops, .n = n, .deadline = deadline};
    rc = corio__sync_arm(&s.self, &s.token);
    if (rc != 0)
        return rc;
    s.start = random_below(n);
    for (size_t fired = NONE;;) {
        size_t done = try_all(&s, fired, &rc);
        if (done != NONE)
            return finish(&s, done, rc, index);
        if (deadline != CORIO_FOREVER && deadline <= corio_now())
            return finish(&s, NONE, CORIO_ETIMEDOUT, index);
        if (!s.nodes && (rc = prepare_wait(&s)) != 0)
            return finish(&s, NONE, rc, index);
        done = register_all(&s, &rc);
        if (done != NONE)
            return finish(&s, done, rc, index);
        rc = corio__wait_commit(s.self, s.token, deadline, CORIO__WAITS_CHAN_SELECT);
        s.token = 0; /* spent: woken, timed out or cancelled */
        fired = unregister_all(&s);
        if (rc != 0)
            return finish(&s, NONE, rc, index);
        /* Woken (by `fired`'s channel): try again, that op first. */
        rc = corio__sync_arm(&s.self, &s.token);
        if (rc != 0) {
            s.token = 0;
            pass_on(&s, fired);
            return finish(&s, NONE, rc, index);
        }
    }
}

int corio_chan_select(const corio_chan_op *ops, size_t n, size_t *index)
{
    return corio_chan_select_until(ops, n, index, CORIO_FOREVER);
}
