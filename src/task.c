/*
 * task.c: spawning, joining, gathering, waiting for the first of many,
 * detaching and cancelling tasks, and the memory task objects live in.
 *
 * Task objects come from per-loop slabs of SLAB_TASKS, carved from the
 * loop's arena (arena.h), and are recycled through per-loop free lists
 * (one for regular tasks' 64-byte handles, one for light tasks' 128-byte
 * handle + run state); slabs go back only when the runtime ends. That keeps spawn free of
 * malloc and makes task memory type-stable, which the wait protocol relies
 * on (task.h). A task released on loop B goes to B's free list even if
 * A's slab holds it: all arenas are released together.
 *
 * The join handshake (task.h has the states). The finisher locks the join
 * word (JOIN_LOCK bit), reads the joiner's token, stores DONE, and only
 * then fires the joiner. DONE is its last touch of the finished task, so a
 * joiner that sees DONE may recycle the object at once; firing after the
 * store is safe because the joiner's own object is type-stable and the
 * token is generational. A joiner giving up (timeout, cancel) unregisters
 * with CAS(self -> NONE); if that fails because the finisher holds the
 * lock, it waits the few instructions until DONE appears and the join
 * succeeds after all.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <string.h>

#include "loop.h"
#include "spin.h"
#include "sys.h"
#include "task.h"

#define SLAB_TASKS 64
#define JOIN_LOCK CORIO__JOIN_LOCK
/* corio_gather's mark on a DONE task it is about to release (only ever
 * seen by that gather: it finds a handle given twice). */
#define JOIN_GATHERED ((uintptr_t)(JOIN_LOCK | CORIO__JOIN_RELEASED))
/* Task ids are handed out to loops in blocks so that spawning does not
 * touch a shared counter. */
#define ID_BLOCK 1024

static _Atomic uint64_t next_id_block = 1;

corio_task *corio_self(void) { return corio__current_task(); }

uint64_t corio_task_id(const corio_task *task) { return task ? task->id : 0; }

void corio_spawn_opts_init(corio_spawn_opts *opts)
{
    opts->stack_size = 0;
    opts->loop = -1;
    opts->flags = 0;
    opts->discard = NULL;
}

/* ---- task memory ---- */

/* Carve a slab of SLAB_TASKS objects of `size` bytes onto *list. */
static bool slab_carve(corio__loop *l, corio_task **list, size_t size)
{
    char *slab = corio__arena_carve(&l->arena, size * SLAB_TASKS);
    if (!slab)
        return false;
    for (int i = SLAB_TASKS - 1; i >= 0; i--) {
        corio_task *t = (corio_task *)(slab + (size_t)i * size);
        atomic_init(&t->wait, 0);
        t->next = *list;
        *list = t;
    }
    return true;
}

/* Regular tasks are a handle alone (their run state goes on their stack);
 * light tasks carry theirs, so they come from slabs of their own. */
static corio_task **free_list(corio__loop *l, bool light)
{
    return light ? &l->free_light : &l->free_tasks;
}

static corio_task *task_alloc(corio__loop *l, bool light)
{
    corio_task **list = free_list(l, light);
    if (!*list && !slab_carve(l, list, light ? sizeof(struct corio__light_task)
                                             : sizeof(corio_task)))
        return NULL;
    corio_task *t = *list;
    *list = t->next;
    return t;
}

void corio__task_release(corio__loop *l, corio_task *t)
{
    corio_task **list = free_list(l, t->flags & CORIO__TF_LIGHT);
    atomic_store_explicit(&t->join, CORIO__JOIN_RELEASED, memory_order_relaxed);
    t->state = CORIO__TASK_DONE;
    t->next = *list;
    *list = t;
}

void corio__task_slabs_free(corio__loop *l)
{
    /* Light tasks' save buffers went at their exit; the slabs go with the
     * arena. */
    corio__arena_release(&l->arena);
    l->free_tasks = l->free_light = NULL;
}

static uint64_t next_task_id(corio__loop *l)
{
    if (l->id_next == l->id_end) {
        l->id_next = atomic_fetch_add(&next_id_block, 1) * ID_BLOCK;
        l->id_end = l->id_next + ID_BLOCK;
    }
    return l->id_next++;
}

/* Fill a recycled object for a new task: the handle only (task.h); the rest
 * is set up when the task first runs. The wait word keeps its generation:
 * a late waker's old token must keep failing. */
static void task_init(corio__loop *l, corio_task *t, corio_fn fn, void *arg, unsigned flags,
                      bool detached)
{
    uint64_t wait = atomic_load_explicit(&t->wait, memory_order_relaxed);
    t->next = NULL;
    t->fn = fn;
    t->arg = arg;
    t->home = NULL;
    t->id = next_task_id(l);
    atomic_store_explicit(&t->join, detached ? CORIO__JOIN_DETACHED : CORIO__JOIN_NONE,
                          memory_order_relaxed);
    atomic_store_explicit(&t->wait,
                          wait & ~(uint64_t)(CORIO__WAIT_STATE_MASK | CORIO__WAIT_CANCEL),
                          memory_order_relaxed);
    t->stack_pages = 0;
    t->state = CORIO__TASK_NEW;
    t->flags = (uint8_t)flags;
    atomic_store_explicit(&t->cancel_sticky, false, memory_order_relaxed);
}

int corio__task_create(corio__loop *l, corio_task **out, corio_fn fn, void *arg,
                       size_t stack_size, unsigned flags, bool detached)
{
    corio__runtime *rt = l->rt;
    if (rt->max_tasks) {
        size_t live = atomic_fetch_add_explicit(&rt->live_tasks, 1, memory_order_relaxed);
        if (live >= rt->max_tasks) {
            atomic_fetch_sub_explicit(&rt->live_tasks, 1, memory_order_relaxed);
            return CORIO_EAGAIN;
        }
    }
    corio_task *t = task_alloc(l, flags & CORIO__TF_LIGHT);
    if (!t)
        goto fail;
    task_init(l, t, fn, arg, flags, detached);
    /* The stack itself is taken when the task first runs (sched.c): a
     * fresh stack costs microseconds (mmap, guard, first touch) where a
     * spawn costs tens of nanoseconds, and a short task then reuses the
     * warm stack its predecessor just gave back. */
    if (!(flags & CORIO__TF_LIGHT))
        t->stack_pages = (uint32_t)(stack_size / CORIO__STACK_UNIT);
    *out = t;
    return 0;

fail:
    if (rt->max_tasks)
        atomic_fetch_sub_explicit(&rt->live_tasks, 1, memory_order_relaxed);
    return CORIO_ENOMEM;
}

/* ---- spawning ---- */

/* The discard wrapper of a spawn that names one (task.h); cold, out of
 * the common spawn's way. */
__attribute__((noinline, cold)) static struct corio__spawn_discard *
wrap_for_discard(void *arg, void (*discard)(void *, int))
{
    struct corio__spawn_discard *w = corio__malloc(sizeof *w);
    if (w)
        *w = (struct corio__spawn_discard){.arg = arg, .discard = discard, .kept = false};
    return w;
}

void *corio__run_wrapped(void *wrapper)
{
    struct corio__spawn_discard *w = wrapper;
    corio_fn fn = w->fn;
    void *arg = w->arg;
    if (!w->kept)
        corio__free(w);
    corio__current_task()->fn = fn; /* what debuggers show (task.h) */
    return fn(arg);
}

/* Both spawns' body, inlined into each so that corio_spawn_ex's constant
 * NULL `kept` costs it nothing. */
static inline __attribute__((always_inline)) int
spawn(corio_task **task, corio_fn fn, void *arg, const corio_spawn_opts *opts,
      struct corio__spawn_discard *kept)
{
    corio_spawn_opts defaults;
    if (!opts) {
        corio_spawn_opts_init(&defaults);
        opts = &defaults;
    }
    if (task)
        *task = NULL;
    corio__loop *l = corio__loop_current();
    if (!l || !l->current)
        return CORIO_EPERM;
    corio__runtime *rt = l->rt;
    if (!fn || opts->loop < -1 || (opts->loop >= 0 && (unsigned)opts->loop >= rt->nloops) ||
        (opts->flags & ~(unsigned)(CORIO_TASK_LIGHT | CORIO_TASK_MIGRATE)))
        return CORIO_EINVAL;
    bool light = opts->flags & CORIO_TASK_LIGHT;
    bool migrate = opts->flags & CORIO_TASK_MIGRATE;
    if (light && opts->stack_size)
        return CORIO_EINVAL; /* light tasks run on the loop's shared stack */
    if (migrate && (light || opts->loop >= 0))
        return CORIO_EINVAL; /* frames tied to a loop's stack; a chosen loop */
    size_t stack_size = rt->stack_size;
    if (opts->stack_size) {
        stack_size = corio__stack_round(opts->stack_size);
        if (!stack_size)
            return CORIO_EINVAL;
    }
    if (l->stopping || atomic_load_explicit(&rt->stopping, memory_order_relaxed))
        return CORIO_ESHUTDOWN;

    unsigned flags = (light ? CORIO__TF_LIGHT : 0) | (migrate ? CORIO__TF_MIGRATE : 0);
    if (migrate && !atomic_load_explicit(&rt->migrating, memory_order_relaxed))
        atomic_store_explicit(&rt->migrating, true, memory_order_relaxed);
    if (opts->loop >= 0)
        flags |= CORIO__TF_PINNED;
    struct corio__spawn_discard *wrapped = kept;
    if (__builtin_expect(!kept && opts->discard, 0)) {
        wrapped = wrap_for_discard(arg, opts->discard);
        if (!wrapped)
            return CORIO_ENOMEM;
    }
    if (__builtin_expect(wrapped != NULL, 0)) {
        wrapped->fn = fn;
        fn = corio__run_wrapped;
        arg = wrapped;
        flags |= CORIO__TF_DISCARD;
    }
    corio_task *t;
    int rc = corio__task_create(l, &t, fn, arg, stack_size, flags, task == NULL);
    if (rc != 0) {
        if (wrapped && !kept)
            corio__free(wrapped);
        return rc;
    }
    if (task)
        *task = t;

    if (opts->loop < 0) {
        corio__loop_push_new(l, t);
    } else {
        corio__loop *target = rt->loops[opts->loop];
        t->home = target;
        if (target == l)
            corio__ready_push(l, t);
        else
            corio__loop_push_new_remote(target, t);
    }
    return 0;
}

int corio_spawn_ex(corio_task **task, corio_fn fn, void *arg, const corio_spawn_opts *opts)
{
    return spawn(task, fn, arg, opts, NULL);
}

int corio__spawn(corio_task **task, corio_fn fn, void *arg, const corio_spawn_opts *opts,
                 struct corio__spawn_discard *kept)
{
    return spawn(task, fn, arg, opts, kept);
}

int corio_spawn(corio_task **task, corio_fn fn, void *arg)
{
    return corio_spawn_ex(task, fn, arg, NULL);
}

int corio_spawn_on(corio_task **task, unsigned loop, corio_fn fn, void *arg)
{
    corio_spawn_opts opts;
    corio_spawn_opts_init(&opts);
    if (loop > (unsigned)INT32_MAX) {
        if (task)
            *task = NULL;
        return CORIO_EINVAL;
    }
    opts.loop = (int)loop;
    return corio_spawn_ex(task, fn, arg, &opts);
}

/* ---- the join word ---- */

/* Lock the join word; returns its unlocked value. */
static uintptr_t join_lock(corio_task *t)
{
    uintptr_t v = atomic_load_explicit(&t->join, memory_order_acquire);
    unsigned spins = 0;
    for (;;) {
        if (!(v & JOIN_LOCK)) {
            if (atomic_compare_exchange_weak_explicit(&t->join, &v, v | JOIN_LOCK,
                                                      memory_order_acquire, memory_order_acquire))
                return v;
        } else {
            corio__spin_pause(&spins);
            v = atomic_load_explicit(&t->join, memory_order_acquire);
        }
    }
}

void corio__task_finish(corio__loop *l, corio_task *t)
{
    if (t->flags & CORIO__TF_MAIN) {
        corio__runtime *rt = l->rt;
        rt->main_result = t->result;
        rt->main_error = (t->flags & CORIO__TF_UNRUN) ? t->exit_error : 0;
        /* Sequentially consistent, as park()'s read of it: a store with
         * release only could still be in this CPU's store buffer when
         * wake_all reads a loop's `parked` flag, while that loop parks
         * and reads `stopping` false; both miss, and the loop sleeps
         * through the stop with no timer to wake it (loop.c, "Parking").
         * Once per run, so the fence costs nothing. */
        atomic_store(&rt->stopping, true);
        corio__runtime_wake_all(rt);
    }
    uintptr_t v = join_lock(t);
    if (v == CORIO__JOIN_DETACHED) {
        corio__task_release(l, t);
        return;
    }
    if (v & CORIO__JOIN_SET) {
        /* A set's member: the set takes it (set.c). The word stays locked
         * until then, so the set is there to touch; the unlocking store
         * is the last touch of either. */
        corio__set_member_finished(v);
        atomic_store_explicit(&t->join, v | CORIO__JOIN_DONE, memory_order_release);
        return;
    }
    /* The joiner cannot leave its join while we hold the lock, so its run
     * state is there to read. */
    corio_task *joiner = v != CORIO__JOIN_NONE ? (corio_task *)v : NULL;
    uint64_t token =
        joiner ? atomic_load_explicit(&joiner->run->join_token, memory_order_relaxed) : 0;
    atomic_store_explicit(&t->join, CORIO__JOIN_DONE, memory_order_release);
    if (joiner)
        corio__task_fire(joiner, token, 0);
}

static bool is_done(corio_task *t)
{
    return atomic_load_explicit(&t->join, memory_order_acquire) == CORIO__JOIN_DONE;
}

/* Register self as t's joiner. 1: registered; 0: t is already done;
 * CORIO_EINVAL: the handle is detached, released, or being joined by
 * another task. */
static int join_register(corio_task *t, corio_task *self, uint64_t token)
{
    atomic_store_explicit(&self->run->join_token, token, memory_order_relaxed);
    uintptr_t v = CORIO__JOIN_NONE;
    unsigned spins = 0;
    for (;;) {
        if (atomic_compare_exchange_weak_explicit(&t->join, &v, (uintptr_t)self,
                                                  memory_order_release, memory_order_acquire))
            return 1;
        if (v == CORIO__JOIN_DONE)
            return 0;
        if (v == (CORIO__JOIN_NONE | JOIN_LOCK) || v == CORIO__JOIN_NONE) {
            if (v & JOIN_LOCK)
                corio__spin_pause(&spins); /* the finisher is publishing DONE */
            v = CORIO__JOIN_NONE;
            continue;
        }
        return CORIO_EINVAL;
    }
}

/* Undo join_register after a failed wait. true: unregistered, t still
 * running; false: t finished meanwhile (its result is there), or, once
 * it had, another task took the handle (a join or detach of the finished
 * task, racing a wait_any on it): self is no longer registered either
 * way, and waiting for the word to read self again would spin for ever. */
static bool join_unregister(corio_task *t, corio_task *self)
{
    uintptr_t v = (uintptr_t)self;
    unsigned spins = 0;
    for (;;) {
        if (atomic_compare_exchange_weak_explicit(&t->join, &v, CORIO__JOIN_NONE,
                                                  memory_order_acq_rel, memory_order_acquire))
            return true;
        if (v == ((uintptr_t)self | JOIN_LOCK))
            corio__spin_pause(&spins); /* the finisher is publishing DONE */
        else if (v != (uintptr_t)self)
            return false; /* DONE, or released since */
        v = (uintptr_t)self;
    }
}

/* ---- a task set's members (set.c) ---- */

int corio__join_set_claim(corio_task *t, uintptr_t mark)
{
    uintptr_t v = CORIO__JOIN_NONE;
    unsigned spins = 0;
    for (;;) {
        uintptr_t want = v == CORIO__JOIN_DONE ? mark | CORIO__JOIN_DONE : mark;
        if (atomic_compare_exchange_weak_explicit(&t->join, &v, want, memory_order_acq_rel,
                                                  memory_order_acquire))
            return v == CORIO__JOIN_NONE ? 1 : 0;
        if (v == (CORIO__JOIN_NONE | JOIN_LOCK)) {
            corio__spin_pause(&spins); /* the finisher is publishing DONE */
            v = CORIO__JOIN_NONE;
        } else if (v != CORIO__JOIN_NONE && v != CORIO__JOIN_DONE) {
            return CORIO_EINVAL; /* detached, released, joined, in a set */
        }
    }
}

void corio__join_set_take(corio_task *t, uintptr_t mark)
{
    unsigned spins = 0;
    while (atomic_load_explicit(&t->join, memory_order_acquire) != (mark | CORIO__JOIN_DONE))
        corio__spin_pause(&spins); /* its finisher has yet to unlock */
    atomic_store_explicit(&t->join, CORIO__JOIN_DONE, memory_order_relaxed);
}

bool corio__join_set_detach(corio_task *t, uintptr_t mark)
{
    uintptr_t v = mark;
    unsigned spins = 0;
    for (;;) {
        if (atomic_compare_exchange_weak_explicit(&t->join, &v, CORIO__JOIN_DETACHED,
                                                  memory_order_acq_rel, memory_order_acquire))
            return true;
        if (v == (mark | CORIO__JOIN_DONE))
            return false;
        if (v == (mark | JOIN_LOCK))
            corio__spin_pause(&spins);
        v = mark;
    }
}

uintptr_t corio__join_set_hold(corio_task *self)
{
    uintptr_t v = atomic_load_explicit(&self->join, memory_order_acquire);
    /* Only a detach (mark -> DETACHED) can change it meanwhile: a running
     * task has no finisher yet. */
    while (v & CORIO__JOIN_SET)
        if (atomic_compare_exchange_weak_explicit(&self->join, &v, v | JOIN_LOCK,
                                                  memory_order_acquire, memory_order_acquire))
            return v;
    return 0;
}

void corio__join_set_unhold(corio_task *self, uintptr_t mark)
{
    atomic_store_explicit(&self->join, mark, memory_order_release);
}

/* Wait until t is done without releasing it. */
static int wait_done(corio_task *self, corio_task *t, corio_time_t deadline,
                     enum corio__wait_kind what)
{
    if (is_done(t))
        return 0;
    uint64_t token;
    int rc = corio__wait_arm(self, &token);
    if (rc != 0)
        return rc;
    rc = join_register(t, self, token);
    if (rc <= 0) {
        corio__wait_disarm(self, token);
        return rc;
    }
    corio__wait_count_joining(self);
    rc = corio__wait_commit(self, token, deadline, what);
    /* On our loop now, which need not be the one we waited on: a migrating
     * task's old loop settled the count as it let us go. The commit
     * settles it when it suspended; this covers the waits that ended
     * before suspending. */
    corio__wait_settle(self);
    if (rc != 0 && !join_unregister(t, self)) {
        /* It finished as the wait ended: the join succeeds after all. */
        if (rc == CORIO_ECANCELED)
            corio__cancel_repend(self);
        rc = 0;
    }
    return rc;
}

static int join_check(corio_task *self, corio_task *t)
{
    if (!self)
        return CORIO_EPERM;
    if (!t)
        return CORIO_EINVAL;
    if (t == self)
        return CORIO_EDEADLK;
    return 0;
}

/* Whether finished task t belongs to l's runtime. A handle of another
 * runtime's (corio.h: handles do not cross runtimes) must not go on l's
 * free list: that runtime unmaps its memory when it ends. */
static bool ours(corio__loop *l, corio_task *t)
{
    return t->home && t->home->rt == l->rt;
}

/* Release a joined task and report how it ended. */
static int join_take(corio__loop *l, corio_task *t, void **result)
{
    if (!ours(l, t))
        return CORIO_EINVAL;
    int rc = (t->flags & CORIO__TF_UNRUN) ? t->exit_error : 0;
    if (result)
        *result = t->result;
    corio__task_release(l, t);
    return rc;
}

int corio__join_wait(corio_task *t, corio_time_t deadline)
{
    return wait_done(corio__current_task(), t, deadline, CORIO__WAITS_JOIN);
}

int corio__join_take(corio_task *t) { return join_take(corio__current_task()->home, t, NULL); }

bool corio__task_is_done(corio_task *t) { return is_done(t); }

int corio_join_until(corio_task *task, void **result, corio_time_t deadline)
{
    corio_task *self = corio__current_task();
    int rc = join_check(self, task);
    if (rc != 0)
        return rc;
    rc = wait_done(self, task, deadline, CORIO__WAITS_JOIN);
    if (rc != 0)
        return rc;
    return join_take(self->home, task, result);
}

void corio__join_wait_uncancellable(corio_task *t)
{
    corio_task *self = corio__current_task();
    bool cancelled = false;
    while (!is_done(t)) {
        uint64_t token = corio__wait_arm_uncancellable(self, &cancelled);
        if (join_register(t, self, token) <= 0) {
            /* Done meanwhile (or not ours to join, which a group's own
             * handle never is). A cancellation that fired the wait
             * already is put back by the disarm. */
            corio__wait_disarm(self, token);
            break;
        }
        corio__wait_count_joining(self);
        int rc = corio__wait_commit_uncancellable(self, CORIO__WAITS_JOIN, &cancelled);
        corio__wait_settle(self);
        /* 0: t's finisher woke us. Otherwise a cancellation did (noted):
         * wait again, unless t finished as it did. */
        if (rc == 0 || !join_unregister(t, self))
            break;
    }
    corio__wait_uncancellable_end(self, cancelled);
}

int corio_join(corio_task *task, void **result)
{
    return corio_join_until(task, result, CORIO_FOREVER);
}

int corio_gather_until(corio_task *const *tasks, size_t n, void **results,
                       corio_time_t deadline)
{
    corio_task *self = corio__current_task();
    if (!self)
        return CORIO_EPERM;
    if (n && !tasks)
        return CORIO_EINVAL;
    for (size_t i = 0; i < n; i++) {
        int rc = join_check(self, tasks[i]);
        if (rc != 0)
            return rc;
    }
    for (size_t i = 0; i < n; i++) {
        int rc = wait_done(self, tasks[i], deadline, CORIO__WAITS_GATHER);
        if (rc != 0)
            return rc;
    }
    /* Every task is DONE now, and ours: nobody else writes their join
     * words. Mark each one; meeting a mark means a handle given twice,
     * refused before anything is released (the marks are undone). */
    for (size_t i = 0; i < n; i++) {
        if (atomic_load_explicit(&tasks[i]->join, memory_order_relaxed) == JOIN_GATHERED ||
            !ours(self->home, tasks[i])) {
            for (size_t k = 0; k < i; k++)
                atomic_store_explicit(&tasks[k]->join, CORIO__JOIN_DONE, memory_order_relaxed);
            return CORIO_EINVAL;
        }
        atomic_store_explicit(&tasks[i]->join, JOIN_GATHERED, memory_order_relaxed);
    }
    int status = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = join_take(self->home, tasks[i], results ? &results[i] : NULL);
        if (rc != 0)
            status = rc;
    }
    return status;
}

int corio_gather(corio_task *const *tasks, size_t n, void **results)
{
    return corio_gather_until(tasks, n, results, CORIO_FOREVER);
}

/* ---- waiting for the first of many ---- */

/* The first of tasks[0, n) (NULLs skipped) that has finished. */
static bool first_done(corio_task *const *tasks, size_t n, size_t *index)
{
    for (size_t i = 0; i < n; i++)
        if (tasks[i] && is_done(tasks[i])) {
            *index = i;
            return true;
        }
    return false;
}

/* Undo self's registrations on tasks[0, n). true: one of them finished
 * meanwhile (its unregistering failed: it is DONE). */
static bool unregister_all(corio_task *self, corio_task *const *tasks, size_t n)
{
    bool finished = false;
    for (size_t i = 0; i < n; i++)
        if (tasks[i] && !join_unregister(tasks[i], self))
            finished = true;
    return finished;
}

/* A handle wait_any can never wait on, whatever the timing: detached or
 * released. (One being joined by another task, or given twice, is found
 * as it registers.) */
static bool never_waitable(corio_task *t)
{
    uintptr_t v = atomic_load_explicit(&t->join, memory_order_acquire) & ~JOIN_LOCK;
    return v == CORIO__JOIN_DETACHED || v == CORIO__JOIN_RELEASED;
}

/*
 * One wait, registered as the joiner of every task with one token: the
 * first finisher fires it and the others' fires fail (task.h). Whatever
 * ends the wait, every registration is undone before returning, so the
 * handles are left as they were, each free to be joined.
 */
int corio_wait_any_until(corio_task *const *tasks, size_t n, size_t *index,
                         corio_time_t deadline)
{
    corio_task *self = corio__current_task();
    if (!self)
        return CORIO_EPERM;
    if (!index || !tasks)
        return CORIO_EINVAL;
    bool named = false;
    for (size_t i = 0; i < n; i++) {
        if (!tasks[i])
            continue;
        int rc = join_check(self, tasks[i]);
        if (rc != 0)
            return rc;
        if (never_waitable(tasks[i]))
            return CORIO_EINVAL;
        named = true;
    }
    if (!named)
        return CORIO_EINVAL;
    if (first_done(tasks, n, index))
        return 0;
    uint64_t token;
    int rc = corio__wait_arm(self, &token);
    if (rc != 0)
        return rc;
    size_t i;
    for (i = 0; i < n; i++) {
        if (!tasks[i])
            continue;
        rc = join_register(tasks[i], self, token);
        if (rc <= 0)
            break;
    }
    if (i < n) {
        /* tasks[i] finished (0) or is not ours to wait on (EINVAL). A task
         * registered before it may have fired us already: the disarm takes
         * that wake-up, and puts back a cancellation's for the next call. */
        (void)corio__wait_disarm(self, token);
        unregister_all(self, tasks, i);
        if (rc < 0)
            return rc;
        return first_done(tasks, n, index) ? 0 : CORIO_EINVAL;
    }
    corio__wait_count_joining(self); /* needs no CPU meanwhile, as a join */
    rc = corio__wait_commit(self, token, deadline, CORIO__WAITS_WAIT_ANY);
    corio__wait_settle(self);
    bool finished = unregister_all(self, tasks, n);
    if (rc != 0) {
        if (!finished)
            return rc;
        /* One finished as the wait ended: it succeeds after all. */
        if (rc == CORIO_ECANCELED)
            corio__cancel_repend(self);
    }
    /* A finisher stores DONE before it fires its joiner (task.h). */
    return first_done(tasks, n, index) ? 0 : CORIO_EINVAL;
}

int corio_wait_any(corio_task *const *tasks, size_t n, size_t *index)
{
    return corio_wait_any_until(tasks, n, index, CORIO_FOREVER);
}

int corio_detach(corio_task *task)
{
    if (!task)
        return CORIO_EINVAL;
    /* A finished task goes back to the free list of the loop calling
     * (owner only), so the caller must be on one; refused elsewhere even
     * when the task still runs, so the answer does not depend on timing. */
    corio__loop *l = corio__loop_current();
    if (!l)
        return CORIO_EPERM;
    uintptr_t v = CORIO__JOIN_NONE;
    unsigned spins = 0;
    for (;;) {
        if (atomic_compare_exchange_weak_explicit(&task->join, &v, CORIO__JOIN_DETACHED,
                                                  memory_order_acq_rel, memory_order_acquire))
            return 0;
        if (v == CORIO__JOIN_DONE) {
            if (!ours(l, task))
                return CORIO_EINVAL;
            corio__task_release(l, task);
            return 0;
        }
        if (v == (CORIO__JOIN_NONE | JOIN_LOCK)) {
            corio__spin_pause(&spins);
            v = CORIO__JOIN_NONE;
            continue;
        }
        if (v == CORIO__JOIN_NONE)
            continue;
        return CORIO_EINVAL; /* already detached, or being joined */
    }
}
