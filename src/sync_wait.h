/*
 * sync_wait.h: the one way a task blocks on a cross-loop object.
 *
 * The caller holds the object's spinlock and has found it must wait. This
 * queues the task, drops the lock, blocks, and then takes the lock once
 * more: on an early end (deadline, cancellation) to leave the queue, so a
 * waker never finds it there afterwards; when woken, to wait until the
 * waker has let go of the object. A waker fires us while holding the lock
 * and touches the object until it unlocks (the rest of an event's
 * waiters, the lock word itself), and once our wait returns the caller
 * may free the object: wait for a wait group, then free it, is the usual
 * pattern (as POSIX requires of sem_wait and sem_destroy). Without this,
 * a woken task on another loop could free it under the waker. A caller
 * that takes the lock again right after a wake-up anyway (a channel
 * retrying its operation) passes `relocks` and saves the round trip.
 * `again`: the caller was woken to retry and lost the race for what woke
 * it; it queues again in its old turn (waits are FIFO: ahead of the tasks
 * that came after it, behind any woken before it that lost as well).
 *
 * The token was armed before the lock was taken (arming may fail for a
 * light task, and must not fail under a lock).
 */
#ifndef CORIO_SYNC_WAIT_H
#define CORIO_SYNC_WAIT_H

#include "spin.h"
#include "task.h"
#include "waitq.h"

/* Returns the wait's result: 0 when a waker fired us, else the error. */
static inline int corio__sync_block(corio__spin *lock, corio__waitq *q, corio_task *self,
                                    uint64_t token, corio_time_t deadline,
                                    enum corio__wait_kind what, bool relocks, bool again)
{
    if (again)
        corio__waitq_push_again(q, self); /* woken, beaten to it: keep our turn */
    else
        corio__waitq_push(q, self);
    corio__spin_unlock(lock);
    int rc = corio__wait_commit(self, token, deadline, what);
    if (rc != 0 || !relocks) {
        corio__spin_lock(lock);
        if (rc != 0)
            corio__waitq_remove(q, self);
        corio__spin_unlock(lock);
    }
    return rc;
}

/* Arm a wait for `self`, which must be a task. */
static inline int corio__sync_arm(corio_task **self, uint64_t *token)
{
    *self = corio__current_task();
    if (!*self)
        return CORIO_EPERM;
    return corio__wait_arm(*self, token);
}

/* A task woken to try again whose cancellation came first leaves without
 * trying: it passes the wake-up on, or the element (or slot, or finished
 * task) it announced would wait for the next one while other tasks wait
 * for it. Taking the lock also lets the waker finish. */
static inline void corio__sync_pass_on(corio__spin *lock, corio__waitq *q)
{
    corio__spin_lock(lock);
    corio__waitq_wake_one(q, 0);
    corio__spin_unlock(lock);
}

/*
 * The one shape of a blocking call on a cross-loop object. Under the
 * object's lock, attempt(obj, arg) either completes the call (returns 0 or
 * an error other than CORIO_EAGAIN) or says the caller must wait
 * (CORIO_EAGAIN): the task then queues and blocks. With `retry`, a wake-up
 * means "try again" (channels: the woken task competes for the element);
 * without, the wake-up is the result (semaphores and mutexes hand their
 * permit to the task they wake; events and wait groups release everyone).
 */
static inline int corio__sync_call(corio__spin *lock, corio__waitq *q,
                                   int (*attempt)(void *obj, void *arg), void *obj, void *arg,
                                   bool retry, corio_time_t deadline, enum corio__wait_kind what)
{
    /* First a try with no wait armed: a call that completes at once (a
     * free mutex, a buffered element) then skips the arm's and the
     * disarm's compare-and-swap, two of the four locked instructions of
     * a lock and unlock. A pending cancellation fails it first, as the
     * arm would. Only a call that must wait arms, and tries again. */
    corio_task *self;
    int rc = corio__enter_call(&self);
    if (rc != 0)
        return rc;
    corio__spin_lock(lock);
    rc = attempt(obj, arg);
    corio__spin_unlock(lock);
    if (rc != CORIO_EAGAIN)
        return rc;
    for (bool woken = false;; woken = true) {
        uint64_t token;
        rc = corio__sync_arm(&self, &token);
        if (rc != 0) {
            if (woken)
                corio__sync_pass_on(lock, q);
            return rc;
        }
        corio__spin_lock(lock);
        rc = attempt(obj, arg);
        if (rc != CORIO_EAGAIN) {
            corio__spin_unlock(lock);
            corio__wait_disarm(self, token);
            return rc;
        }
        rc = corio__sync_block(lock, q, self, token, deadline, what, retry, woken);
        if (rc != 0 || !retry)
            return rc;
    }
}

#endif /* CORIO_SYNC_WAIT_H */
