/*
 * rwlock.c: the read-write lock (corio_rwlock_*, corio.h).
 *
 * Two queues under one spinlock: readers and writers. The rule that keeps
 * either side from starving is Go's: a reader may enter only while no
 * writer holds the lock or waits for it; a writer unlocking lets in every
 * reader queued at that moment, and only with none queued hands the lock
 * to the next writer; the last reader out hands it to the first writer.
 * Every hand-over is made by the waker, under the lock, to a task whose
 * wait it fires (waitq.h: a waiter whose wait already ended is skipped),
 * so a woken task holds the lock and never competes again, as with the
 * mutex (mutex.c). A free lock is handed on in arrival order, passing over
 * a queued writer whose wait already ended.
 *
 * Readers queue only behind a writer, held or waiting. A waiting writer
 * whose wait ends (deadline, cancellation) may be the only thing that
 * held some back: leaving the queue with no writer holding, it lets in
 * the readers that came after it and before the next waiting writer (one
 * ticket counter orders arrivals across the two queues). Without that
 * they would wait for an unlock that may never come, or behind a writer
 * that came after them.
 *
 * One word says who holds the lock: n readers (n * READER), or the
 * writer task with WRITER set, or 0; and QUEUED while tasks may be
 * queued. With QUEUED clear, a read lock is one compare-and-swap (count
 * + 1 while no writer holds), its unlock one more, and a free lock's
 * write lock and unlock one each, as Go's RWMutex's fast paths: no
 * spinlock. Everything else takes the spinlock. A task that must wait
 * sets QUEUED (an atomic OR) before it looks at the word a last time and
 * queues; from then on every fast path fails, so the word changes only
 * under the spinlock, where the rules above are kept with plain reads of
 * it. QUEUED is cleared, under the spinlock, once both queues are empty.
 * An unlock's last touch of the lock must be the change that frees it (a
 * next holder may free the lock at once): under the spinlock only while
 * QUEUED keeps the fast paths out, else by the fast path after it.
 * Task objects are 64-byte aligned: a writer's pointer leaves the low six
 * bits for the flags, and the reader count starts above them.
 */
#include "corio.h"
#include "spin.h"
#include "sync_wait.h"
#include "sys.h"
#include "task.h"
#include "waitq.h"

#define QUEUED ((uintptr_t)1) /* tasks may be queued: fast paths stand aside */
#define WRITER ((uintptr_t)2) /* the rest of the word is the writer task */
#define FLAGS ((uintptr_t)63)
#define READER ((uintptr_t)64) /* one read lock held */

struct corio_rwlock {
    _Atomic uintptr_t word; /* holders and QUEUED (above) */
    corio__spin lock;       /* the queues, tickets and every slow change */
    corio__waitq read_waiters, write_waiters;
    uint64_t tickets;       /* arrival order across both queues */
};

int corio_rwlock_new(corio_rwlock **rwlock)
{
    if (!rwlock)
        return CORIO_EINVAL;
    *rwlock = corio__calloc(1, sizeof **rwlock);
    return *rwlock ? 0 : CORIO_ENOMEM;
}

void corio_rwlock_free(corio_rwlock *rwlock) { corio__free(rwlock); }

static uintptr_t word_of(corio_rwlock *rw)
{
    return atomic_load_explicit(&rw->word, memory_order_acquire);
}

static corio_task *writer_of(uintptr_t word)
{
    return (word & WRITER) ? (corio_task *)(word & ~FLAGS) : NULL;
}

/* ---- the fast paths: QUEUED clear ---- */

/* Each swap first expects the likeliest word (a free lock; one reader
 * leaving) rather than reading it: a load just before a locked swap on
 * the same word waits for it, and cost a quarter of a read pair. A wrong
 * guess costs one failed swap, which reads the word. */
static bool fast_read_lock(corio_rwlock *rw)
{
    uintptr_t w = 0;
    do {
        if (atomic_compare_exchange_weak_explicit(&rw->word, &w, w + READER, memory_order_acquire,
                                                  memory_order_relaxed))
            return true;
    } while (!(w & (QUEUED | WRITER)));
    return false;
}

static bool fast_read_unlock(corio_rwlock *rw)
{
    uintptr_t w = READER;
    while (!(w & (QUEUED | WRITER)) && w >= READER)
        if (atomic_compare_exchange_weak_explicit(&rw->word, &w, w - READER,
                                                  memory_order_release, memory_order_relaxed))
            return true;
    return false;
}

static bool fast_write_lock(corio_rwlock *rw, corio_task *self)
{
    uintptr_t free = 0;
    return atomic_compare_exchange_strong_explicit(&rw->word, &free, (uintptr_t)self | WRITER,
                                                   memory_order_acquire, memory_order_relaxed);
}

static bool fast_write_unlock(corio_rwlock *rw, corio_task *self)
{
    uintptr_t mine = (uintptr_t)self | WRITER;
    return atomic_compare_exchange_strong_explicit(&rw->word, &mine, 0, memory_order_release,
                                                   memory_order_relaxed);
}

/* ---- under the spinlock ---- */

/* Readers may be counting in or out by their fast paths unless QUEUED is
 * set, so every change here is a swap on what was read. */
static int take_read(corio_rwlock *rw, corio_task *self)
{
    uintptr_t w = atomic_load_explicit(&rw->word, memory_order_relaxed);
    for (;;) {
        if (writer_of(w) == self)
            return CORIO_EDEADLK;
        if ((w & WRITER) || !corio__waitq_empty(&rw->write_waiters))
            return CORIO_EAGAIN;
        if (atomic_compare_exchange_weak_explicit(&rw->word, &w, w + READER, memory_order_acq_rel,
                                                  memory_order_relaxed))
            return 0;
    }
}

static int take_write(corio_rwlock *rw, corio_task *self)
{
    uintptr_t w = atomic_load_explicit(&rw->word, memory_order_relaxed);
    for (;;) {
        if (writer_of(w) == self)
            return CORIO_EDEADLK;
        if ((w & ~QUEUED) || !corio__waitq_empty(&rw->write_waiters))
            return CORIO_EAGAIN;
        if (atomic_compare_exchange_weak_explicit(&rw->word, &w, w | (uintptr_t)self | WRITER,
                                                  memory_order_acq_rel, memory_order_relaxed))
            return 0;
    }
}

static int take(corio_rwlock *rw, bool write, corio_task *self)
{
    return write ? take_write(rw, self) : take_read(rw, self);
}

/* Both queues empty: the fast paths may run again. (Set only by a task
 * about to queue, so with the queues empty it is no longer needed.) */
static void settle_queued(corio_rwlock *rw)
{
    if (corio__waitq_empty(&rw->read_waiters) && corio__waitq_empty(&rw->write_waiters) &&
        (atomic_load_explicit(&rw->word, memory_order_relaxed) & QUEUED))
        atomic_fetch_and_explicit(&rw->word, ~QUEUED, memory_order_acq_rel);
}

/* Let in the queued readers that arrived before `limit` (a ticket; all
 * of them for UINT64_MAX); how many came. A reader whose wait already
 * ended is passed over (its fire fails). QUEUED is set (they queued), so
 * the count is ours to change. */
static size_t admit_readers_before(corio_rwlock *rw, uint64_t limit)
{
    size_t n = 0;
    corio_task *t;
    while ((t = rw->read_waiters.head) && t->run->wq_ticket < limit) {
        corio__waitq_remove(&rw->read_waiters, t);
        n += corio__task_fire_any(t, 0);
    }
    if (n)
        atomic_fetch_add_explicit(&rw->word, n * READER, memory_order_acq_rel);
    return n;
}

/* Nobody holds the lock: hand it on in arrival order. A waiting writer
 * whose wait already ended (its task not yet run to leave the queue) is
 * passed over, and the readers that came after it and before the next
 * writer waited only behind it: they go first (found by review: they
 * waited behind the next writer, or on a free lock). */
static void hand_to_writer(corio_rwlock *rw)
{
    for (;;) {
        corio_task *w = rw->write_waiters.head;
        if (admit_readers_before(rw, w ? w->run->wq_ticket : UINT64_MAX) || !w)
            return;
        corio__waitq_remove(&rw->write_waiters, w);
        if (corio__task_fire_any(w, 0)) {
            /* QUEUED is set (w queued): nothing else changes the word. */
            atomic_fetch_or_explicit(&rw->word, (uintptr_t)w | WRITER, memory_order_acq_rel);
            return;
        }
    }
}

/* ---- locking ---- */

/* The lock is held in a way that keeps the caller out: under the
 * spinlock, set QUEUED and look once more, with the word now still. */
static int take_or_mark(corio_rwlock *rw, bool write, corio_task *self)
{
    int rc = take(rw, write, self);
    if (rc != CORIO_EAGAIN)
        return rc;
    /* A fast unlock between the look and the mark may have freed it. */
    atomic_fetch_or_explicit(&rw->word, QUEUED, memory_order_acq_rel);
    rc = take(rw, write, self);
    if (rc != CORIO_EAGAIN)
        settle_queued(rw);
    return rc;
}

__attribute__((noinline)) static int lock_slow(corio_rwlock *rw, bool write, corio_task *self,
                                               corio_time_t deadline)
{
    /* First with no wait armed, as corio__sync_call tries (sync_wait.h). */
    corio__spin_lock(&rw->lock);
    int rc = take(rw, write, self);
    corio__spin_unlock(&rw->lock);
    if (rc != CORIO_EAGAIN)
        return rc;
    uint64_t token;
    rc = corio__wait_arm(self, &token);
    if (rc != 0)
        return rc;
    corio__spin_lock(&rw->lock);
    rc = take_or_mark(rw, write, self);
    if (rc != CORIO_EAGAIN) {
        corio__spin_unlock(&rw->lock);
        corio__wait_disarm(self, token);
        return rc;
    }
    corio__waitq *q = write ? &rw->write_waiters : &rw->read_waiters;
    corio__waitq_push(q, self);
    self->run->wq_ticket = ++rw->tickets; /* one order for both queues */
    corio__spin_unlock(&rw->lock);
    rc = corio__wait_commit(self, token, deadline,
                            write ? CORIO__WAITS_RWLOCK_WRITE : CORIO__WAITS_RWLOCK_READ);
    /* Taken again either way: to leave the queue after an early end, and
     * after a wake-up to let the waker finish with the lock (sync_wait.h:
     * the caller may free it once it has what it waited for). */
    corio__spin_lock(&rw->lock);
    if (rc != 0) {
        corio__waitq_remove(q, self);
        /* A writer giving up: the readers that came after it and before
         * the next waiting writer waited only behind it. */
        if (write && !(word_of(rw) & WRITER)) {
            corio_task *next = rw->write_waiters.head;
            admit_readers_before(rw, next ? next->run->wq_ticket : UINT64_MAX);
        }
        settle_queued(rw);
    }
    corio__spin_unlock(&rw->lock);
    return rc;
}

static int lock_until(corio_rwlock *rw, bool write, corio_time_t deadline)
{
    /* NULL first, as the mutex's calls: a pending cancellation stays for
     * the next call. */
    if (!rw)
        return CORIO_EINVAL;
    corio_task *self;
    int rc = corio__enter_call(&self);
    if (rc != 0)
        return rc;
    if (write ? fast_write_lock(rw, self) : fast_read_lock(rw))
        return 0;
    return lock_slow(rw, write, self, deadline);
}

static int try_lock(corio_rwlock *rw, bool write)
{
    if (!rw)
        return CORIO_EINVAL;
    corio_task *self = corio__current_task();
    if (!self)
        return CORIO_EPERM;
    if (write ? fast_write_lock(rw, self) : fast_read_lock(rw))
        return 0;
    /* QUEUED may stand for waits already over: the rules decide. */
    corio__spin_lock(&rw->lock);
    int rc = take(rw, write, self);
    corio__spin_unlock(&rw->lock);
    return rc == CORIO_EAGAIN ? CORIO_EBUSY : rc;
}

int corio_rwlock_read_lock_until(corio_rwlock *rwlock, corio_time_t deadline)
{
    return lock_until(rwlock, false, deadline);
}

int corio_rwlock_read_lock(corio_rwlock *rwlock)
{
    return lock_until(rwlock, false, CORIO_FOREVER);
}

int corio_rwlock_try_read_lock(corio_rwlock *rwlock) { return try_lock(rwlock, false); }

int corio_rwlock_write_lock_until(corio_rwlock *rwlock, corio_time_t deadline)
{
    return lock_until(rwlock, true, deadline);
}

int corio_rwlock_write_lock(corio_rwlock *rwlock)
{
    return lock_until(rwlock, true, CORIO_FOREVER);
}

int corio_rwlock_try_write_lock(corio_rwlock *rwlock) { return try_lock(rwlock, true); }

/* ---- unlocking ---- */

int corio_rwlock_read_unlock(corio_rwlock *rwlock)
{
    if (!rwlock)
        return CORIO_EINVAL;
    if (!corio__current_task())
        return CORIO_EPERM;
    for (;;) {
        if (fast_read_unlock(rwlock))
            return 0;
        corio__spin_lock(&rwlock->lock);
        uintptr_t w = atomic_load_explicit(&rwlock->word, memory_order_relaxed);
        if ((w & WRITER) || w < READER) {
            corio__spin_unlock(&rwlock->lock);
            return CORIO_EPERM;
        }
        if (w & QUEUED) {
            /* The word is still: only the spinlock's holder changes it. */
            atomic_fetch_sub_explicit(&rwlock->word, READER, memory_order_acq_rel);
            if (w - READER < READER)
                hand_to_writer(rwlock);
            settle_queued(rwlock);
            corio__spin_unlock(&rwlock->lock);
            return 0;
        }
        /* QUEUED went while we came for the spinlock (the waiters left).
         * Count out by the fast path, never under the spinlock: once the
         * lock can be had without it, a task may take the lock, release
         * it and free it (nobody holds or waits) before our unlock of the
         * spinlock, which would then write freed memory. */
        corio__spin_unlock(&rwlock->lock);
    }
}

int corio_rwlock_write_unlock(corio_rwlock *rwlock)
{
    if (!rwlock)
        return CORIO_EINVAL;
    corio_task *self = corio__current_task();
    if (!self)
        return CORIO_EPERM;
    for (;;) {
        if (fast_write_unlock(rwlock, self))
            return 0;
        corio__spin_lock(&rwlock->lock);
        uintptr_t w = atomic_load_explicit(&rwlock->word, memory_order_relaxed);
        if (writer_of(w) != self) {
            corio__spin_unlock(&rwlock->lock);
            return CORIO_EPERM;
        }
        if (w & QUEUED) {
            /* The word is ours to change (we hold it, QUEUED is set). */
            atomic_store_explicit(&rwlock->word, QUEUED, memory_order_release);
            if (admit_readers_before(rwlock, UINT64_MAX) == 0)
                hand_to_writer(rwlock);
            settle_queued(rwlock);
            corio__spin_unlock(&rwlock->lock);
            return 0;
        }
        /* QUEUED went meanwhile: free it by the fast path, for the reason
         * given in corio_rwlock_read_unlock. */
        corio__spin_unlock(&rwlock->lock);
    }
}
