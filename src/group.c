/*
 * group.c: task groups (structured concurrency).
 *
 * A group keeps the handles of its children in an array under a spinlock;
 * each child runs a small wrapper that calls the user's int function,
 * records the first failure, and on CORIO_GROUP_CANCEL_ON_ERROR cancels
 * its siblings. Cancelling a child here is sticky (task.h:
 * cancel_sticky): every later blocking call of the child fails, so a child
 * that retries cannot outlive its group. Waiting joins the children in
 * order; children spawned while a wait runs are waited for too.
 *
 * Joining is done in two halves so that no other thread ever sees a
 * released handle: wait until the child is done, then, under the lock,
 * move `joined` past it, and only then release it. (cancel_children on
 * another loop walks children[joined..count) under the same lock; a
 * handle released before `joined` moved could already be a new task of
 * this loop's, which that walk would cancel.) One task at a time waits
 * (`waiter`): two would join the same child twice.
 *
 * A group that lives long (one child per connection, say) is not waited
 * on until it ends, so a spawn that finds the array full first releases
 * the children that have finished (reap_finished), unless a task waits
 * (its joins go by index). The array grows only when less than half came
 * free, so a spawn costs O(1) amortised, and the group holds memory for
 * the children still running, not for every child it ever had.
 */
#include <stdatomic.h>

#include "corio.h"
#include "loop.h"
#include "spin.h"
#include "sys.h"
#include "task.h"

struct group_child {
    corio_group *group;
    corio_group_fn fn;
    void *arg;
    void (*discard)(void *arg, int error); /* the spawn's, called with arg */
    /* The child task's discard wrapper (task.h), kept here so that a
     * group spawn costs no second allocation: child_main(this record),
     * or child_discard(this record, why) if it never runs. */
    struct corio__spawn_discard spawn;
};

struct corio_group {
    corio__spin lock;
    unsigned flags;
    corio_task **children;  /* handles not yet joined, in spawn order */
    struct group_child **ctx; /* their wrapper arguments */
    size_t count, cap;
    size_t joined;          /* children[0..joined) released or being released */
    corio_task *waiter;     /* the task in wait or close, or NULL */
    /* Closes parked until the waiter leaves (release_waiter wakes them),
     * linked by their run states' wq_next, each with its wait token in
     * its join_token (a task parked here is in no queue or join). */
    corio_task *closers;
    _Atomic int first_error;
    _Atomic bool cancelled;
};

int corio_group_new(corio_group **group, unsigned flags)
{
    if (!group || (flags & ~(unsigned)CORIO_GROUP_CANCEL_ON_ERROR))
        return CORIO_EINVAL;
    corio_group *g = corio__calloc(1, sizeof *g);
    if (!g)
        return CORIO_ENOMEM;
    g->flags = flags;
    *group = g;
    return 0;
}

/* Once is enough: a spawn after the walk sees `cancelled` under the lock
 * and refuses (corio_group_spawn_ex). Walking again
 * for every failing child made a group whose thousands of children were
 * dropped at shutdown take seconds (each drop a failure, each failure a
 * walk of all the children). */
static void cancel_children(corio_group *g)
{
    if (atomic_exchange(&g->cancelled, true))
        return;
    corio__spin_lock(&g->lock);
    for (size_t i = g->joined; i < g->count; i++) {
        corio_task *t = g->children[i];
        /* Both sequentially consistent, as the child's arm and its read
         * of the flag in the commit (wait.c, cancelled_for_good): either
         * this fire sees the wait armed, or the commit sees the flag. */
        atomic_store(&t->cancel_sticky, true);
        corio__task_fire_any(t, CORIO_ECANCELED);
    }
    corio__spin_unlock(&g->lock);
}

static void child_failed(corio_group *g, int rc)
{
    int none = 0;
    atomic_compare_exchange_strong(&g->first_error, &none, rc);
    if (g->flags & CORIO_GROUP_CANCEL_ON_ERROR)
        cancel_children(g);
}

/* Release a child taken out of every walker's sight: its task, and the
 * record its wrapper ran with. */
static void release_child(corio_task *t, struct group_child *c)
{
    corio__join_take(t);
    corio__free(c);
}

/* The array is full: release the children that have finished (and drop
 * the joined prefix), keeping the rest in spawn order. One pass under the
 * lock moves the finished ones into `done`, allocated before it; they are
 * released after it, out of every other walker's sight. Nothing happens
 * while a task waits (it holds an index into the array) or without the
 * memory for the list (the array just grows, as before). */
static void reap_finished(corio_group *g, size_t cap)
{
    struct reaped {
        corio_task *task;
        struct group_child *ctx;
    } *done = corio__malloc(cap * sizeof *done);
    if (!done)
        return;
    size_t ndone = 0;
    corio__spin_lock(&g->lock);
    if (!g->waiter && g->count == g->cap && g->cap == cap) {
        size_t keep = 0;
        for (size_t i = g->joined; i < g->count; i++) {
            if (corio__task_is_done(g->children[i])) {
                done[ndone++] = (struct reaped){g->children[i], g->ctx[i]};
            } else {
                g->children[keep] = g->children[i];
                g->ctx[keep] = g->ctx[i];
                keep++;
            }
        }
        g->count = keep;
        g->joined = 0;
    }
    corio__spin_unlock(&g->lock);
    for (size_t i = 0; i < ndone; i++)
        release_child(done[i].task, done[i].ctx);
    corio__free(done);
}

static void *child_main(void *arg)
{
    struct group_child *c = arg;
    /* What debuggers show as the task's function (task.h): the child's
     * own, not this wrapper (a cast for display only, never called). */
    corio__current_task()->fn = (corio_fn)(void (*)(void))c->fn;
    int rc = c->fn(c->arg);
    if (rc != 0)
        child_failed(c->group, rc);
    return NULL;
}

/* A child that never ran (no stack, or shutdown) failed as surely as one
 * that returned an error, and is reported at once, not when the wait
 * reaches it. Its own discard, if any, gets its own argument (the wrapper
 * stays the group's to free when the child is joined). */
static void child_discard(void *arg, int error)
{
    struct group_child *c = arg;
    if (c->discard)
        c->discard(c->arg, error);
    child_failed(c->group, error);
}

int corio_group_spawn_ex(corio_group *group, corio_group_fn fn, void *arg,
                         const corio_spawn_opts *opts)
{
    if (!group || !fn)
        return CORIO_EINVAL;
    if (atomic_load(&group->cancelled))
        return CORIO_ECANCELED;
    if (!corio__current_task())
        return CORIO_EPERM; /* as corio_spawn: children are spawned from tasks */
    struct group_child *c = corio__malloc(sizeof *c);
    if (!c)
        return CORIO_ENOMEM;
    *c = (struct group_child){group, fn, arg, opts ? opts->discard : NULL,
                              {.arg = c, .discard = child_discard, .kept = true}};

    corio__spin_lock(&group->lock);
    /* A full array is first reaped, outside the lock (reap_finished
     * allocates and releases), then everything is read again: at most one
     * reap per spawn, so the lock is taken a second time only then. */
    size_t reaped_cap = 0;
    for (;;) {
        /* Again under the lock: cancel_children sets the flag before
         * taking it, so a spawn that reads false here has its child
         * listed before the walk, and one that reads true must not add a
         * child the walk has missed. (Marking such a child sticky after
         * its spawn was too late: another loop could start it, and it
         * could enter a wait that nothing would end, before the mark.) */
        if (atomic_load(&group->cancelled)) {
            corio__spin_unlock(&group->lock);
            corio__free(c);
            return CORIO_ECANCELED;
        }
        bool full = group->cap && group->count == group->cap && !group->waiter;
        if (!full || reaped_cap)
            break;
        reaped_cap = group->cap;
        corio__spin_unlock(&group->lock);
        reap_finished(group, reaped_cap);
        corio__spin_lock(&group->lock);
    }
    /* Grow when full, and after a reap that freed less than half (or the
     * next spawn would scan the whole array again for a slot or two). */
    bool no_room = group->count == group->cap;
    if (no_room || (reaped_cap && group->count > group->cap / 2)) {
        size_t cap = group->cap ? group->cap * 2 : 16;
        corio_task **children = corio__realloc(group->children, cap * sizeof *children);
        if (children)
            group->children = children;
        struct group_child **ctx = children ? corio__realloc(group->ctx, cap * sizeof *ctx) : NULL;
        if (ctx)
            group->ctx = ctx;
        if (children && ctx) {
            group->cap = cap;
        } else if (no_room) {
            corio__spin_unlock(&group->lock);
            corio__free(c);
            return CORIO_ENOMEM;
        }
    }
    /* Spawned under the lock so a concurrent cancel sees the child. The
     * spawn itself never waits. */
    corio_task *t;
    int rc = corio__spawn(&t, child_main, NULL, opts, &c->spawn);
    if (rc == 0) {
        group->children[group->count] = t;
        group->ctx[group->count] = c;
        group->count++;
    }
    corio__spin_unlock(&group->lock);
    if (rc != 0)
        corio__free(c);
    return rc;
}

int corio_group_spawn(corio_group *group, corio_group_fn fn, void *arg)
{
    return corio_group_spawn_ex(group, fn, arg, NULL);
}

/* Become the group's one waiter: 0, CORIO_EBUSY (another task waits) or
 * CORIO_EDEADLK (self is a child of the group not joined yet: it would
 * wait for itself). */
static int claim_waiter(corio_group *g, corio_task *self)
{
    corio__spin_lock(&g->lock);
    int rc = 0;
    /* Deadlock first: a child told "busy" would close by waiting for the
     * waiter, which waits for the child. */
    for (size_t i = g->joined; i < g->count && !rc; i++)
        if (g->children[i] == self)
            rc = CORIO_EDEADLK;
    if (!rc && g->waiter)
        rc = CORIO_EBUSY;
    if (!rc)
        g->waiter = self;
    corio__spin_unlock(&g->lock);
    return rc;
}

static void release_waiter(corio_group *g)
{
    corio__spin_lock(&g->lock);
    g->waiter = NULL;
    /* Under the lock: a parked close leaves the list only under it, so
     * its run state is there to read. */
    for (corio_task *c = g->closers, *next; c; c = next) {
        next = c->run->wq_next;
        c->run->wq_next = NULL;
        corio__task_fire(c, atomic_load_explicit(&c->run->join_token, memory_order_relaxed), 0);
    }
    g->closers = NULL;
    corio__spin_unlock(&g->lock);
}

/* A close found another task waiting on the group (which leaves once the
 * children are cancelled): park until it has left, with a wait that
 * cancellation does not end (close has no "busy" answer: its result is
 * the children's first error, which could be any code). Returns when the
 * waiter is gone or a cancellation woke us; the caller tries again. */
static void await_waiter_gone(corio_group *g, corio_task *self, bool *cancelled)
{
    uint64_t token = corio__wait_arm_uncancellable(self, cancelled);
    corio__spin_lock(&g->lock);
    bool busy = g->waiter != NULL;
    if (busy) {
        atomic_store_explicit(&self->run->join_token, token, memory_order_relaxed);
        self->run->wq_next = g->closers;
        g->closers = self;
    }
    corio__spin_unlock(&g->lock);
    if (!busy) {
        corio__wait_disarm(self, token);
        return;
    }
    if (corio__wait_commit_uncancellable(self, CORIO__WAITS_JOIN, cancelled) == 0)
        return; /* release_waiter took us off the list */
    /* A cancellation woke us: leave the list, unless release_waiter has
     * taken us off it meanwhile (its wake-up then failed, harmlessly). */
    corio__spin_lock(&g->lock);
    for (corio_task **p = &g->closers; *p; p = &(*p)->run->wq_next) {
        if (*p == self) {
            *p = self->run->wq_next;
            self->run->wq_next = NULL;
            break;
        }
    }
    corio__spin_unlock(&g->lock);
}

/* The next child to join, or NULL when all are joined. */
static corio_task *next_child(corio_group *g)
{
    corio__spin_lock(&g->lock);
    corio_task *t = g->joined < g->count ? g->children[g->joined] : NULL;
    corio__spin_unlock(&g->lock);
    return t;
}

/* The next child is done: take it out of cancel_children's sight, then
 * release it (a child that never ran, dropped by shutdown or for want of
 * a stack, is released all the same). */
static void retire_next_child(corio_group *g)
{
    corio__spin_lock(&g->lock);
    corio_task *t = g->children[g->joined];
    struct group_child *c = g->ctx[g->joined];
    g->joined++;
    corio__spin_unlock(&g->lock);
    release_child(t, c);
}

/* Join the children until none is left or a wait fails (its error). */
static int join_children(corio_group *g, corio_time_t deadline)
{
    corio_task *t;
    while ((t = next_child(g))) {
        int rc = corio__join_wait(t, deadline);
        if (rc != 0)
            return rc; /* the child runs on; the handle is still ours */
        retire_next_child(g);
    }
    return 0;
}

int corio_group_wait_until(corio_group *group, corio_time_t deadline)
{
    if (!group)
        return CORIO_EINVAL;
    corio_task *self = corio__current_task();
    if (!self)
        return CORIO_EPERM;
    int rc = claim_waiter(group, self);
    if (rc != 0)
        return rc;
    rc = join_children(group, deadline);
    release_waiter(group);
    return rc;
}

int corio_group_error(corio_group *group)
{
    return group ? atomic_load(&group->first_error) : CORIO_EINVAL;
}

int corio_group_wait(corio_group *group) { return corio_group_wait_until(group, CORIO_FOREVER); }

int corio_group_cancel(corio_group *group)
{
    if (!group)
        return CORIO_EINVAL;
    cancel_children(group);
    return 0;
}

static int group_free(corio_group *group)
{
    int rc = atomic_load(&group->first_error);
    corio__free(group->children);
    corio__free(group->ctx);
    corio__free(group);
    return rc;
}

int corio_group_close(corio_group *group)
{
    if (!group)
        return CORIO_EINVAL;
    corio_task *self = corio__current_task();
    if (!self) {
        /* Outside a task nothing can be waited for: only a group with no
         * child left to join can be closed there. */
        corio__spin_lock(&group->lock);
        int rc = group->waiter ? CORIO_EBUSY : group->joined != group->count ? CORIO_EPERM : 0;
        corio__spin_unlock(&group->lock);
        return rc ? rc : group_free(group);
    }
    int rc;
    /* Another task waiting on the group leaves once the children are
     * cancelled; wait for it. */
    bool children_cancelled = false, cancel_taken = false;
    while ((rc = claim_waiter(group, self)) == CORIO_EBUSY) {
        if (!children_cancelled)
            cancel_children(group);
        children_cancelled = true;
        await_waiter_gone(group, self, &cancel_taken);
    }
    corio__wait_uncancellable_end(self, cancel_taken);
    if (rc != 0)
        return rc; /* EDEADLK: a child closing its own group */
    cancel_children(group);
    /* Wait for every child even if we are cancelled ourselves: a group
     * never leaks a running child. A one-shot cancellation of ours is
     * consumed by a wait here and set again for the caller's next call. */
    bool cancel_again = false;
    while ((rc = join_children(group, CORIO_FOREVER)) == CORIO_ECANCELED &&
           !self->home->stopping && !atomic_load(&self->cancel_sticky))
        cancel_again = true;
    if (rc != 0) {
        /* Shutdown or a sticky cancel of our own (no wait can block now),
         * or a light task out of memory for its wait: wait with waits
         * that neither ends. The children are cancelled as well and
         * finish soon. */
        corio_task *t;
        while ((t = next_child(group))) {
            corio__join_wait_uncancellable(t);
            retire_next_child(group);
        }
    }
    if (cancel_again)
        corio__cancel_repend(self);
    return group_free(group);
}
