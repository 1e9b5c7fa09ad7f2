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
 * Nodes live in the call's frame for a few ops, or in memory it allocates
 * when it must wait (always for a light task: its frames move while it
 * waits), freed before it returns; ops and their elements are touched
 * only by the select itself, while it runs, so they may live on any
 * task's stack.
 */
#include <stdint.h>
#include <stdlib.h>

#include "chan.h"
#include "sync_wait.h"
#include "sys.h"
#include "task.h"
#include "waitq.h"

#define NONE SIZE_MAX
/* Nodes and shuffled order kept in the call's frame for up to this many
 * ops (more come from malloc). */
#define LOCAL_OPS 4
#define LOCAL_POLL 16

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
    const uint32_t *poll;            /* the order trying passes go in, shuffled */
    size_t start;                    /* without one (no memory): a random start */
    struct corio__waitq_node *nodes; /* per op; NULL until the call must wait */
    struct slot *order;              /* the enabled ops by channel */
    size_t enabled;
    bool registered;                 /* nodes may be queued */
    bool allocated;                  /* nodes and order from malloc */
    bool poll_allocated;             /* `poll` from malloc */
    uint32_t poll_local[LOCAL_POLL]; /* `poll` for a few ops */
};

struct select_local {
    struct corio__waitq_node nodes[LOCAL_OPS];
    struct slot order[LOCAL_OPS];
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
 * (a migrating task resumes on another thread). Initial-exec, as loop.c's
 * thread-locals: in the shared library the default model called
 * __tls_get_addr on every select. */
__attribute__((noinline)) static size_t random_below(size_t n)
{
    static _Thread_local uint64_t state __attribute__((tls_model("initial-exec")));
    uint64_t x = state ? state : (uint64_t)(uintptr_t)&state | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    state = x;
    return (size_t)(((unsigned __int128)x * n) >> 64); /* no division */
}

/* Try every enabled op once, `first` (NONE: none) before the others, the
 * others in the call's random order. Returns the index of the op that
 * went ahead or is closed (*rc its result), or NONE. */
static size_t try_all(const struct select *s, size_t first, int *rc)
{
    if (first != NONE && (*rc = attempt_locked(&s->ops[first])) != CORIO_EAGAIN)
        return first;
    for (size_t i = 0; i < s->n; i++) {
        size_t k = s->poll ? s->poll[i] : (s->start + i) % s->n;
        if (k == first || !s->ops[k].chan)
            continue;
        if ((*rc = attempt_locked(&s->ops[k])) != CORIO_EAGAIN)
            return k;
    }
    return NONE;
}

/* The order trying passes go in: a uniform shuffle (Fisher-Yates), so that
 * of the ops ready at once each is as likely to go as any other, as in
 * Go (a random start alone favours an op that follows idle ones). In the
 * call's frame for a few ops; beyond, from malloc, and without the
 * memory a random start (fair only among neighbours). */
static uint32_t *shuffle(struct select *s)
{
    uint32_t *v = s->poll_local;
    if (s->n > LOCAL_POLL) {
        v = s->n <= UINT32_MAX ? corio__malloc(s->n * sizeof *v) : NULL;
        if (!v) {
            s->start = random_below(s->n);
            return NULL;
        }
        s->poll_allocated = true;
    }
    v[0] = 0;
    for (size_t i = 1; i < s->n; i++) {
        size_t j = random_below(i + 1);
        v[i] = v[j];
        v[j] = (uint32_t)i;
    }
    return v;
}

static bool slot_before(const struct slot *x, const struct slot *y)
{
    return x->chan != y->chan ? x->chan < y->chan : x->index < y->index;
}

static int by_channel(const void *a, const void *b)
{
    return slot_before(a, b) ? -1 : slot_before(b, a);
}

/* Selects are mostly a handful of ops: insertion sort, qsort past that. */
static void sort_slots(struct slot *v, size_t n)
{
    if (n > 16) {
        qsort(v, n, sizeof *v, by_channel);
        return;
    }
    for (size_t i = 1; i < n; i++) {
        struct slot x = v[i];
        size_t j = i;
        for (; j > 0 && slot_before(&x, &v[j - 1]); j--)
            v[j] = v[j - 1];
        v[j] = x;
    }
}

/* The nodes and the registering order, once the call must wait: in
 * `local` (the caller's frame) when they fit and the task has a stack of
 * its own, which stays in place while it waits; from malloc for a light
 * task, whose frames are copied away meanwhile. */
static int prepare_wait(struct select *s, struct select_local *local)
{
    if (s->n <= LOCAL_OPS && !(s->self->flags & CORIO__TF_LIGHT)) {
        s->nodes = local->nodes;
        s->order = local->order;
    } else {
        size_t bytes_nodes = s->n * sizeof *s->nodes;
        void *mem = corio__malloc(bytes_nodes + s->n * sizeof *s->order);
        if (!mem)
            return CORIO_ENOMEM;
        s->nodes = mem;
        s->order = (struct slot *)((char *)mem + bytes_nodes);
        s->allocated = true;
    }
    s->enabled = 0;
    for (size_t k = 0; k < s->n; k++) {
        s->nodes[k] = (struct corio__waitq_node){.task = s->self};
        if (s->ops[k].chan)
            s->order[s->enabled++] = (struct slot){(uintptr_t)s->ops[k].chan, k};
    }
    sort_slots(s->order, s->enabled);
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
    if (s->allocated)
        corio__free(s->nodes);
    if (s->poll_allocated)
        corio__free((void *)s->poll);
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
    struct select s = {.ops = ops, .n = n};
    struct select_local local;
    rc = corio__sync_arm(&s.self, &s.token);
    if (rc != 0)
        return rc;
    s.poll = shuffle(&s);
    for (size_t fired = NONE;;) {
        size_t done = try_all(&s, fired, &rc);
        if (done != NONE)
            return finish(&s, done, rc, index);
        if (deadline != CORIO_FOREVER && deadline <= corio_now())
            return finish(&s, NONE, CORIO_ETIMEDOUT, index);
        if (!s.nodes && (rc = prepare_wait(&s, &local)) != 0)
            return finish(&s, NONE, rc, index);
        done = register_all(&s, &rc);
        if (done != NONE)
            return finish(&s, done, rc, index);
        rc = corio__wait_commit(s.self, s.token, deadline, CORIO__WAITS_CHAN_SELECT);
        s.token = 0; /* spent: woken, timed out or cancelled */
        fired = unregister_all(&s);
        if (rc != 0) {
            /* No node fired (one CAS decides, and channels fire with 0);
             * if one ever did, its wake-up must not die here. */
            pass_on(&s, fired);
            return finish(&s, NONE, rc, index);
        }
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
