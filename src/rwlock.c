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
 */
#include "corio.h"
#include "spin.h"
#include "sync_wait.h"
#include "sys.h"
#include "task.h"
#include "waitq.h"

struct corio_rwlock {
    corio__spin lock;
    size_t readers;      /* read locks held */
    corio_task *writer;  /* the write lock's holder, or NULL */
    corio__waitq read_waiters, write_waiters;
    uint64_t tickets;    /* arrival order across both queues */
};

int corio_rwlock_new(corio_rwlock **rwlock)
{
    if (!rwlock)
        return CORIO_EINVAL;
    *rwlock = corio__calloc(1, sizeof **rwlock);
    return *rwlock ? 0 : CORIO_ENOMEM;
}

void corio_rwlock_free(corio_rwlock *rwlock) { corio__free(rwlock); }

/* ---- under the lock ---- */

static int take_read(corio_rwlock *rw, corio_task *self)
{
    if (rw->writer == self)
        return CORIO_EDEADLK;
    if (rw->writer || !corio__waitq_empty(&rw->write_waiters))
        return CORIO_EAGAIN;
    rw->readers++;
    return 0;
}

static int take_write(corio_rwlock *rw, corio_task *self)
{
    if (rw->writer == self)
        return CORIO_EDEADLK;
    if (rw->writer || rw->readers || !corio__waitq_empty(&rw->write_waiters))
        return CORIO_EAGAIN;
    rw->writer = self;
    return 0;
}

static int take(corio_rwlock *rw, bool write, corio_task *self)
{
    return write ? take_write(rw, self) : take_read(rw, self);
}

/* Let in the queued readers that arrived before `limit` (a ticket; all
 * of them for UINT64_MAX); how many came. A reader whose wait already
 * ended is passed over (its fire fails). */
static size_t admit_readers_before(corio_rwlock *rw, uint64_t limit)
{
    size_t n = 0;
    corio_task *t;
    while ((t = rw->read_waiters.head) && t->run->wq_ticket < limit) {
        corio__waitq_remove(&rw->read_waiters, t);
        n += corio__task_fire_any(t, 0);
    }
    rw->readers += n;
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
            rw->writer = w;
            return;
        }
    }
}

/* ---- locking ---- */

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
    /* First with no wait armed, as corio__sync_call tries (sync_wait.h). */
    corio__spin_lock(&rw->lock);
    rc = take(rw, write, self);
    corio__spin_unlock(&rw->lock);
    if (rc != CORIO_EAGAIN)
        return rc;
    uint64_t token;
    rc = corio__wait_arm(self, &token);
    if (rc != 0)
        return rc;
    corio__spin_lock(&rw->lock);
    rc = take(rw, write, self);
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
        if (write && !rw->writer) {
            corio_task *next = rw->write_waiters.head;
            admit_readers_before(rw, next ? next->run->wq_ticket : UINT64_MAX);
        }
    }
    corio__spin_unlock(&rw->lock);
    return rc;
}

static int try_lock(corio_rwlock *rw, bool write)
{
    if (!rw)
        return CORIO_EINVAL;
    corio_task *self = corio__current_task();
    if (!self)
        return CORIO_EPERM;
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
    corio__spin_lock(&rwlock->lock);
    int rc = CORIO_EPERM;
    if (rwlock->readers) {
        rc = 0;
        if (--rwlock->readers == 0)
            hand_to_writer(rwlock);
    }
    corio__spin_unlock(&rwlock->lock);
    return rc;
}

int corio_rwlock_write_unlock(corio_rwlock *rwlock)
{
    if (!rwlock)
        return CORIO_EINVAL;
    corio_task *self = corio__current_task();
    if (!self)
        return CORIO_EPERM;
    corio__spin_lock(&rwlock->lock);
    int rc = CORIO_EPERM;
    if (rwlock->writer == self) {
        rc = 0;
        rwlock->writer = NULL;
        if (admit_readers_before(rwlock, UINT64_MAX) == 0)
            hand_to_writer(rwlock);
    }
    corio__spin_unlock(&rwlock->lock);
    return rc;
}
