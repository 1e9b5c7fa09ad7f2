/*
 * mutex.c: the task mutex (corio.h), and what a condition variable needs
 * of it (mutex.h).
 *
 * One word says who holds the mutex: the owner task, or 0 when free, with
 * CONTENDED set while tasks may be queued for it. A free mutex is taken
 * by one compare-and-swap (0 -> self) and an uncontended one given back
 * by one more (self -> 0), as Go's sync.Mutex and Rust's parking_lot do:
 * no spinlock, and no store besides the one atomic each way. Only when
 * that swap fails does a call take the spinlock, which guards the queue
 * and the CONTENDED handshake:
 *
 * - A locker that must wait sets CONTENDED (by a swap on the word, under
 *   the spinlock) and queues before it lets the spinlock go. The owner's
 *   fast unlock then fails, and its slow one, under the same spinlock,
 *   finds the waiter queued. If the owner's fast unlock came first, the
 *   locker's swap fails instead, and it finds the mutex free and takes
 *   it.
 * - An unlock with CONTENDED hands off directly, as the semaphore does
 *   (sem.c): the word goes from the unlocker to the first task still
 *   waiting (CONTENDED kept while others queue), never through 0, and
 *   the wake-up is the waiter's result. So waiters are served in order,
 *   a woken task never competes again, no newcomer barges past the
 *   queue, and a waiter whose wait ended first (deadline, cancellation)
 *   is skipped (waitq.h): it holds nothing. A waiter that leaves may
 *   leave CONTENDED set over an empty queue; the next unlock takes the
 *   slow path once and clears it.
 *
 * Task objects are 64-byte aligned, so bit 0 of an owner is free for the
 * flag.
 */
#include "corio.h"
#include "mutex.h"
#include "spin.h"
#include "sync_wait.h"
#include "sys.h"
#include "task.h"
#include "waitq.h"

#define CONTENDED ((uintptr_t)1)

struct corio_mutex {
    _Atomic uintptr_t word; /* owner | CONTENDED, 0 when free */
    corio__spin lock;       /* the queue and the CONTENDED handshake */
    corio__waitq waiters;
};

int corio_mutex_new(corio_mutex **mutex)
{
    if (!mutex)
        return CORIO_EINVAL;
    *mutex = corio__calloc(1, sizeof **mutex);
    return *mutex ? 0 : CORIO_ENOMEM;
}

void corio_mutex_free(corio_mutex *mutex) { corio__free(mutex); }

static corio_task *owner_of(uintptr_t word) { return (corio_task *)(word & ~CONTENDED); }

/* The one swap of a free mutex to `self`; on failure *seen is the word. */
static bool take_free(corio_mutex *m, corio_task *self, uintptr_t *seen)
{
    *seen = 0;
    return atomic_compare_exchange_strong_explicit(&m->word, seen, (uintptr_t)self,
                                                   memory_order_acquire, memory_order_relaxed);
}

/* Under the spinlock: take the mutex if it is free (0), or mark it
 * contended so that its owner's unlock looks at the queue the caller is
 * about to join (CORIO_EAGAIN). CORIO_EDEADLK if the caller holds it. */
static int take_or_mark(void *obj, void *self)
{
    corio_mutex *m = obj;
    uintptr_t word = atomic_load_explicit(&m->word, memory_order_relaxed);
    for (;;) {
        if (word == 0) {
            if (take_free(m, self, &word))
                return 0;
            continue;
        }
        if (owner_of(word) == self)
            return CORIO_EDEADLK;
        if (word & CONTENDED)
            return CORIO_EAGAIN;
        /* Fails if the owner's fast unlock came first: look again. */
        if (atomic_compare_exchange_weak_explicit(&m->word, &word, word | CONTENDED,
                                                  memory_order_relaxed, memory_order_relaxed))
            return CORIO_EAGAIN;
    }
}

int corio_mutex_try_lock(corio_mutex *mutex)
{
    corio_task *self = corio__current_task();
    if (!self)
        return CORIO_EPERM;
    if (!mutex)
        return CORIO_EINVAL;
    uintptr_t word;
    if (take_free(mutex, self, &word))
        return 0;
    return owner_of(word) == self ? CORIO_EDEADLK : CORIO_EBUSY;
}

/* Held by someone: queue under the spinlock (sync_wait.h). Woken means
 * the unlocker made us the owner. */
__attribute__((noinline)) static int lock_slow(corio_mutex *m, corio_task *self, uintptr_t seen,
                                               corio_time_t deadline)
{
    if (owner_of(seen) == self)
        return CORIO_EDEADLK;
    return corio__sync_call(&m->lock, &m->waiters, take_or_mark, m, self, false, deadline,
                            CORIO__WAITS_MUTEX);
}

int corio_mutex_lock_until(corio_mutex *mutex, corio_time_t deadline)
{
    if (!mutex)
        return CORIO_EINVAL;
    /* A pending cancellation fails the call even on a free mutex, as
     * every blocking call's does. */
    corio_task *self;
    int rc = corio__enter_call(&self);
    if (rc != 0)
        return rc;
    uintptr_t seen;
    if (take_free(mutex, self, &seen))
        return 0;
    return lock_slow(mutex, self, seen, deadline);
}

int corio_mutex_lock(corio_mutex *mutex) { return corio_mutex_lock_until(mutex, CORIO_FOREVER); }

/* The fast unlock: self -> 0, the call's last touch of the mutex. */
static bool fast_unlock(corio_mutex *m, corio_task *self)
{
    uintptr_t mine = (uintptr_t)self;
    return atomic_compare_exchange_strong_explicit(&m->word, &mine, 0, memory_order_release,
                                                   memory_order_relaxed);
}

/*
 * The word has CONTENDED, or names another owner: under the spinlock,
 * hand the mutex to the first task still waiting. With nobody left to
 * hand it to (the waiters that marked it gave up), only clear the mark,
 * and free the mutex by the fast unlock once the spinlock is let go:
 * freed under the spinlock, the mutex could be taken by a fast lock,
 * unlocked and freed (nobody holds or waits) before our release of the
 * spinlock wrote to it. A hand-off keeps it held, by a task that takes
 * the spinlock before its lock returns (sync_wait.h), so that release
 * comes first.
 */
__attribute__((noinline)) static int unlock_slow(corio_mutex *m, corio_task *self)
{
    if (!self)
        return CORIO_EPERM;
    for (;;) {
        corio__spin_lock(&m->lock);
        uintptr_t word = atomic_load_explicit(&m->word, memory_order_relaxed);
        if (owner_of(word) != self) {
            corio__spin_unlock(&m->lock);
            return CORIO_EPERM;
        }
        /* Only the owner changes the word while CONTENDED is set
         * (lockers find the flag already there): plain stores do. */
        corio_task *next = corio__waitq_wake_one(&m->waiters, 0);
        if (next) {
            uintptr_t handed =
                (uintptr_t)next | (corio__waitq_empty(&m->waiters) ? 0 : CONTENDED);
            atomic_store_explicit(&m->word, handed, memory_order_release);
            corio__spin_unlock(&m->lock);
            return 0;
        }
        atomic_store_explicit(&m->word, (uintptr_t)self, memory_order_relaxed);
        corio__spin_unlock(&m->lock);
        /* Fails only if a new waiter marked it meanwhile: hand to it. */
        if (fast_unlock(m, self))
            return 0;
    }
}

int corio_mutex_unlock(corio_mutex *mutex)
{
    if (!mutex)
        return CORIO_EINVAL;
    corio_task *self = corio__current_task();
    if (self && fast_unlock(mutex, self))
        return 0;
    return unlock_slow(mutex, self);
}

bool corio__mutex_held_by(corio_mutex *m, corio_task *self)
{
    return owner_of(atomic_load_explicit(&m->word, memory_order_relaxed)) == self;
}

void corio__mutex_relock(corio_mutex *m, corio_task *self)
{
    bool cancelled = false;
    for (;;) {
        uint64_t token = corio__wait_arm_uncancellable(self, &cancelled);
        corio__spin_lock(&m->lock);
        /* Not ours (the condition wait gave it up): taken, or marked. */
        if (take_or_mark(m, self) == 0) {
            corio__spin_unlock(&m->lock);
            corio__wait_disarm(self, token);
            break;
        }
        corio__waitq_push(&m->waiters, self);
        corio__spin_unlock(&m->lock);
        int rc = corio__wait_commit_uncancellable(self, CORIO__WAITS_MUTEX, &cancelled);
        /* Woken by the unlocker (it made us the owner), or by a
         * cancellation: then leave the queue and queue again. The lock
         * also lets a waker finish with the mutex. */
        corio__spin_lock(&m->lock);
        if (rc != 0)
            corio__waitq_remove(&m->waiters, self);
        bool mine = corio__mutex_held_by(m, self);
        corio__spin_unlock(&m->lock);
        if (mine)
            break;
    }
    corio__wait_uncancellable_end(self, cancelled);
}
