/*
 * set.c: task sets, members taken in the order they finish
 * (asyncio.as_completed, Tokio's JoinSet).
 *
 * A set is the joiner of each of its members: a member's join word holds
 * the address of its record here, tagged CORIO__JOIN_SET (task.h), where
 * a joined task's holds its joiner's. The member's finisher, holding the
 * word's lock, moves the record from the set's running list to the tail
 * of its finished list and wakes one waiting taker; corio_set_next takes
 * the head. Each member costs O(1) from add to take, whatever the set's
 * size; corio_wait_any, registered and unregistered on every handle at
 * each call, costs O(n) a call.
 *
 * Locks: a finisher takes the set's lock while it holds its task's word
 * locked, so nothing here waits for a member's word while holding the
 * set's lock. The claim in corio_set_add is the one CAS made under it:
 * it may wait for a word locked by a finisher publishing plain DONE
 * (no set involved), never for one that needs this set.
 *
 * Takers wait as a channel's receivers do (sync_wait.h): queued under
 * the lock, woken to try again, FIFO among themselves.
 */
#include <errno.h>
#include <stddef.h>

#include "corio.h"
#include "loop.h"
#include "spin.h"
#include "sync_wait.h"
#include "sys.h"
#include "task.h"
#include "waitq.h"

struct set_member {
    corio_task *task;
    corio_set *set;
    /* Running members: a doubly linked list (a finisher unlinks its own).
     * Finished ones: a FIFO through next. */
    struct set_member *prev, *next;
};

/* Records come from the loops' arenas, whose blocks are aligned to a
 * grain: their addresses leave the tag bits of a member's join word free
 * (task.h). */
_Static_assert(CORIO__ARENA_GRAIN > CORIO__JOIN_TAGS, "records leave the tag bits");

/* corio_set_cancel cancels this many members, then lets go of the lock
 * for the finishers that spin on it while they hold their words. */
#define CANCEL_BATCH 64

struct corio_set {
    corio__spin lock;
    struct set_member *running; /* and the cursors of corio_set_cancel */
    struct set_member *done_head, *done_tail;
    size_t len; /* members not yet taken */
    /* The runtime whose tasks the members are, while there are any: their
     * records come from its loops' arenas, which end with it. */
    struct corio__runtime *rt;
    corio__waitq takers;
    /* Calls of corio_set_next and corio_set_cancel under way, a taker
     * queued or not (one woken and not yet run is in no queue, yet will
     * touch the set). A call's last touch is the decrement (release);
     * corio_set_free reads it with acquire. */
    _Atomic size_t callers;
};

static uintptr_t mark_of(const struct set_member *m) { return (uintptr_t)m | CORIO__JOIN_SET; }

static struct set_member *member_of(uintptr_t join)
{
    return (struct set_member *)(join & ~CORIO__JOIN_TAGS);
}

/* ---- lists, under the set's lock ---- */

static void running_push(corio_set *s, struct set_member *m)
{
    m->prev = NULL;
    m->next = s->running;
    if (s->running)
        s->running->prev = m;
    s->running = m;
}

/* Put m right after `at`, a record in the running list. */
static void running_insert_after(struct set_member *at, struct set_member *m)
{
    m->prev = at;
    m->next = at->next;
    if (at->next)
        at->next->prev = m;
    at->next = m;
}

static void running_unlink(corio_set *s, struct set_member *m)
{
    if (m->prev)
        m->prev->next = m->next;
    else
        s->running = m->next;
    if (m->next)
        m->next->prev = m->prev;
}

static void done_append(corio_set *s, struct set_member *m)
{
    m->next = NULL;
    if (s->done_tail)
        s->done_tail->next = m;
    else
        s->done_head = m;
    s->done_tail = m;
    corio__waitq_wake_one(&s->takers, 0);
}

static struct set_member *done_pop(corio_set *s)
{
    struct set_member *m = s->done_head;
    if (m) {
        s->done_head = m->next;
        if (!s->done_head)
            s->done_tail = NULL;
    }
    return m;
}

/* ---- records ----
 *
 * From the calling loop's arena, as task objects are (task.c): no malloc
 * on the way in or out, 20-25% of corio_set_next's cost per member
 * (bench set_as_completed_ns: 390 against 300 ns). A record freed on
 * another loop than the one that made it goes to that loop's free list;
 * the arenas go back together when the runtime ends, which every
 * record's set must not outlive with members in it (corio.h). */

static struct set_member *member_new(corio__loop *l)
{
    /* A fault point, as every allocation is (sys.h): the arena itself
     * fails only when it must grow. */
    if (corio__fault(ENOMEM))
        return NULL;
    return corio__arena_alloc(&l->arena, sizeof(struct set_member));
}

static void member_free(struct set_member *m)
{
    corio__arena_free(&corio__loop_current()->arena, m, sizeof *m);
}

/* ---- the finisher's half ---- */

void corio__set_member_finished(uintptr_t join)
{
    struct set_member *m = member_of(join);
    corio_set *s = m->set;
    corio__spin_lock(&s->lock);
    running_unlink(s, m);
    done_append(s, m);
    corio__spin_unlock(&s->lock);
}

/* ---- the API ---- */

int corio_set_new(corio_set **set)
{
    if (!set)
        return CORIO_EINVAL;
    *set = corio__calloc(1, sizeof **set);
    return *set ? 0 : CORIO_ENOMEM;
}

/* Under the lock: may a task of `rt` use the set's members? */
static bool same_runtime(const corio_set *s, const struct corio__runtime *rt)
{
    return s->len == 0 || s->rt == rt;
}

int corio_set_add(corio_set *set, corio_task *task)
{
    corio_task *self = corio__current_task();
    if (!self)
        return CORIO_EPERM;
    if (!set || !task)
        return CORIO_EINVAL;
    if (task == self)
        return CORIO_EDEADLK;
    struct set_member *m = member_new(self->home);
    if (!m)
        return CORIO_ENOMEM;
    *m = (struct set_member){.task = task, .set = set};
    corio__spin_lock(&set->lock);
    /* The claim under the lock, so that a finisher that sees the mark
     * finds the record linked (and waits for the lock until it is). */
    int rc = same_runtime(set, self->home->rt) ? corio__join_set_claim(task, mark_of(m))
                                               : CORIO_EINVAL;
    if (rc >= 0) {
        set->rt = self->home->rt;
        set->len++;
        if (rc == 1)
            running_push(set, m);
        else
            done_append(set, m); /* finished already: next at once */
    }
    corio__spin_unlock(&set->lock);
    if (rc < 0) {
        member_free(m);
        return rc;
    }
    return 0;
}

/* Under the lock: take the first finished member, or say why not. */
static int take_finished(corio_set *s, struct set_member **out)
{
    *out = done_pop(s);
    if (*out) {
        if (--s->len == 0)
            corio__waitq_wake_all(&s->takers, 0); /* nothing left to wait for */
        return 0;
    }
    return s->len ? CORIO_EAGAIN : CORIO_ENOENT;
}

/* The taken member's handle goes back to the caller. */
static corio_task *hand_back(struct set_member *m)
{
    corio_task *t = m->task;
    corio__join_set_take(t, mark_of(m));
    member_free(m);
    return t;
}

/* Is self a member of s? Waiting on its own set, it could wait for
 * itself. Its own join word names its record while it runs; held locked
 * while the record is read, or a corio_set_free of that other set could
 * detach self and recycle the record meanwhile (task.c). */
static bool is_member(corio_task *self, const corio_set *s)
{
    uintptr_t mark = corio__join_set_hold(self);
    if (!mark)
        return false;
    bool mine = member_of(mark)->set == s;
    corio__join_set_unhold(self, mark);
    return mine;
}

static int next_until(corio_set *set, corio_task **task, corio_time_t deadline)
{
    for (bool woken = false;; woken = true) {
        corio_task *self;
        uint64_t token;
        int rc = corio__sync_arm(&self, &token);
        if (rc != 0) {
            if (woken)
                corio__sync_pass_on(&set->lock, &set->takers);
            return rc;
        }
        if (!woken && is_member(self, set)) {
            corio__wait_disarm(self, token);
            return CORIO_EDEADLK;
        }
        struct set_member *m;
        corio__spin_lock(&set->lock);
        rc = same_runtime(set, self->home->rt) ? take_finished(set, &m) : CORIO_EINVAL;
        if (rc != CORIO_EAGAIN) {
            corio__spin_unlock(&set->lock);
            corio__wait_disarm(self, token);
            if (rc == 0)
                *task = hand_back(m);
            return rc;
        }
        /* Waiting for members to finish needs no CPU, as a join
         * (loop.h, corio__loop_load). */
        corio__wait_count_joining(self);
        rc = corio__sync_block(&set->lock, &set->takers, self, token, deadline,
                               CORIO__WAITS_SET_NEXT, true, woken);
        corio__wait_settle(self);
        if (rc != 0)
            return rc;
    }
}

int corio_set_next_until(corio_set *set, corio_task **task, corio_time_t deadline)
{
    if (task)
        *task = NULL;
    if (!set || !task)
        return CORIO_EINVAL;
    atomic_fetch_add_explicit(&set->callers, 1, memory_order_relaxed);
    int rc = next_until(set, task, deadline);
    atomic_fetch_sub_explicit(&set->callers, 1, memory_order_release);
    return rc;
}

int corio_set_next(corio_set *set, corio_task **task)
{
    return corio_set_next_until(set, task, CORIO_FOREVER);
}

size_t corio_set_len(corio_set *set)
{
    if (!set)
        return 0;
    corio__spin_lock(&set->lock);
    size_t n = set->len;
    corio__spin_unlock(&set->lock);
    return n;
}

/* A cursor (a record with no task) keeps the walk's place while the lock
 * is let go: finishers unlink only their own records, and the walk skips
 * other walks' cursors. (corio_set_free, which would not, is refused
 * while a cancel is under way: `callers`.) */
static void cancel_running(corio_set *set)
{
    struct set_member cursor = {.set = set};
    corio__spin_lock(&set->lock);
    running_push(set, &cursor);
    for (;;) {
        for (unsigned n = 0; n < CANCEL_BATCH && cursor.next; n++) {
            struct set_member *m = cursor.next;
            running_unlink(set, &cursor);
            running_insert_after(m, &cursor);
            if (m->task)
                (void)corio_cancel(m->task);
        }
        if (!cursor.next)
            break;
        corio__spin_unlock(&set->lock);
        /* A moment for the finishers spinning on the lock: relocking at
         * once would win it back most times. */
        for (unsigned spins = 0; spins < 32;)
            corio__spin_pause(&spins);
        corio__spin_lock(&set->lock);
    }
    running_unlink(set, &cursor);
    corio__spin_unlock(&set->lock);
}

int corio_set_cancel(corio_set *set)
{
    if (!set)
        return CORIO_EINVAL;
    atomic_fetch_add_explicit(&set->callers, 1, memory_order_relaxed);
    cancel_running(set);
    atomic_fetch_sub_explicit(&set->callers, 1, memory_order_release);
    return 0;
}

/* Detach the running members, cancelled first so that they unwind. A
 * member finishing meanwhile is left to its finisher, which moves it to
 * the finished list: its word says so once the detach has waited. */
static void detach_running(corio_set *s)
{
    for (;;) {
        corio__spin_lock(&s->lock);
        struct set_member *m = s->running;
        corio__spin_unlock(&s->lock);
        if (!m)
            return;
        (void)corio_cancel(m->task);
        if (corio__join_set_detach(m->task, mark_of(m))) {
            corio__spin_lock(&s->lock);
            running_unlink(s, m);
            s->len--;
            corio__spin_unlock(&s->lock);
            member_free(m);
        }
    }
}

int corio_set_free(corio_set *set)
{
    if (!set)
        return 0;
    corio__spin_lock(&set->lock);
    int rc = 0;
    corio__loop *l = corio__loop_current();
    if (atomic_load_explicit(&set->callers, memory_order_acquire) != 0)
        rc = CORIO_EBUSY;
    else if (set->len && (!l || l->rt != set->rt))
        rc = CORIO_EPERM; /* the records go back to a loop of their runtime */
    corio__spin_unlock(&set->lock);
    if (rc != 0)
        return rc;
    detach_running(set);
    /* Only finished members are left, and no finisher needs the set. */
    struct set_member *m;
    while ((m = done_pop(set)) != NULL)
        (void)corio_detach(hand_back(m)); /* finished: released at once */
    corio__free(set);
    return 0;
}
