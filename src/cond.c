/*
 * cond.c: condition variables over corio_mutex (corio.h).
 *
 * A waiter queues on the condition variable before it unlocks the mutex,
 * both under the condition's spinlock, so a signal made once the mutex
 * is free finds it queued: no wake-up falls between the unlock and the
 * wait. A signal fires the first waiter still waiting (waitq.h: one whose
 * wait ended otherwise is skipped, and the signal goes on to the next).
 * However the wait ends, the waiter takes the mutex back before it
 * returns, cancellation or not (mutex.c, corio__mutex_relock), as
 * pthread_cond_wait does.
 */
#include "corio.h"
#include "mutex.h"
#include "spin.h"
#include "sys.h"
#include "task.h"
#include "waitq.h"

struct corio_cond {
    corio__spin lock;
    corio__waitq waiters;
};

int corio_cond_new(corio_cond **cond)
{
    if (!cond)
        return CORIO_EINVAL;
    *cond = corio__calloc(1, sizeof **cond);
    return *cond ? 0 : CORIO_ENOMEM;
}

void corio_cond_free(corio_cond *cond) { corio__free(cond); }

int corio_cond_wait_until(corio_cond *cond, corio_mutex *mutex, corio_time_t deadline)
{
    corio_task *self = corio__current_task();
    if (!self)
        return CORIO_EPERM;
    if (!cond || !mutex)
        return CORIO_EINVAL;
    if (!corio__mutex_held_by(mutex, self))
        return CORIO_EPERM;
    uint64_t token;
    int rc = corio__wait_arm(self, &token);
    if (rc != 0)
        return rc; /* a pending cancellation: nothing unlocked */
    corio__spin_lock(&cond->lock);
    corio__waitq_push(&cond->waiters, self);
    corio__spin_unlock(&cond->lock);
    (void)corio_mutex_unlock(mutex); /* held: cannot fail */
    rc = corio__wait_commit(self, token, deadline, CORIO__WAITS_COND);
    /* Out of the queue if the wait ended early; either way the lock lets
     * a signaller finish with the condition variable first. */
    corio__spin_lock(&cond->lock);
    if (rc != 0)
        corio__waitq_remove(&cond->waiters, self);
    corio__spin_unlock(&cond->lock);
    corio__mutex_relock(mutex, self);
    return rc;
}

int corio_cond_wait(corio_cond *cond, corio_mutex *mutex)
{
    return corio_cond_wait_until(cond, mutex, CORIO_FOREVER);
}

int corio_cond_signal(corio_cond *cond)
{
    if (!cond)
        return CORIO_EINVAL;
    corio__spin_lock(&cond->lock);
    corio__waitq_wake_one(&cond->waiters, 0);
    corio__spin_unlock(&cond->lock);
    return 0;
}

int corio_cond_broadcast(corio_cond *cond)
{
    if (!cond)
        return CORIO_EINVAL;
    corio__spin_lock(&cond->lock);
    corio__waitq_wake_all(&cond->waiters, 0);
    corio__spin_unlock(&cond->lock);
    return 0;
}
