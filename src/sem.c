/*
 * sem.c: counting semaphore and mutex.
 *
 * Both hand off directly: a release with tasks waiting gives the permit
 * (or the lock) to the first task still waiting, whose wake-up carries
 * it; only with nobody waiting does the count go up. So waiters are
 * served in order, a woken task never has to compete again, and a waiter
 * whose wait ended first is skipped: its fire fails and the permit goes
 * to the next (waitq.h). A cancelled or timed-out acquire therefore holds
 * nothing. A condition wait (cond.c) takes its mutex back through
 * corio__mutex_relock, which cancellation does not end.
 */
#include "corio.h"
#include "mutex.h"
#include "spin.h"
#include "sync_wait.h"
#include "sys.h"
#include "task.h"
#include "waitq.h"

struct corio_sem {
    corio__spin lock;
    size_t permits;
    corio__waitq waiters;
};

int corio_sem_new(corio_sem **sem, size_t permits)
{
    if (!sem)
        return CORIO_EINVAL;
    *sem = corio__calloc(1, sizeof **sem);
    if (!*sem)
        return CORIO_ENOMEM;
    (*sem)->permits = permits;
    return 0;
}

void corio_sem_free(corio_sem *sem) { corio__free(sem); }

/* Under the lock: take a free permit, unless tasks queued before us (a
 * release hands permits to the queue first: no barging past it). */
static int take_permit(void *obj, void *unused)
{
    corio_sem *sem = obj;
    (void)unused;
    if (!sem->permits || !corio__waitq_empty(&sem->waiters))
        return CORIO_EAGAIN;
    sem->permits--;
    return 0;
}

int corio_sem_try_acquire(corio_sem *sem)
{
    if (!sem)
        return CORIO_EINVAL;
    corio__spin_lock(&sem->lock);
    int rc = take_permit(sem, NULL);
    corio__spin_unlock(&sem->lock);
    return rc;
}

int corio_sem_acquire_until(corio_sem *sem, corio_time_t deadline)
{
    if (!sem)
        return CORIO_EINVAL;
    /* Woken means the releaser handed us its permit. */
    return corio__sync_call(&sem->lock, &sem->waiters, take_permit, sem, NULL, false, deadline,
                            CORIO__WAITS_SEMAPHORE);
}

int corio_sem_acquire(corio_sem *sem) { return corio_sem_acquire_until(sem, CORIO_FOREVER); }

int corio_sem_release(corio_sem *sem)
{
    if (!sem)
        return CORIO_EINVAL;
    int rc = 0;
    corio__spin_lock(&sem->lock);
    if (corio__waitq_wake_one(&sem->waiters, 0))
        ; /* handed to the first waiter */
    else if (sem->permits == SIZE_MAX)
        rc = CORIO_EOVERFLOW; /* one more would wrap the count to none */
    else
        sem->permits++;
    corio__spin_unlock(&sem->lock);
    return rc;
}

size_t corio_sem_available(corio_sem *sem)
{
    if (!sem)
        return 0;
    corio__spin_lock(&sem->lock);
    size_t n = sem->permits;
    corio__spin_unlock(&sem->lock);
    return n;
}

/* ---- mutex ---- */

struct corio_mutex {
    corio__spin lock;
    corio_task *owner;
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

/* Under the lock: become the owner if there is none. */
static int take_mutex(void *obj, void *self)
{
    corio_mutex *mutex = obj;
    if (mutex->owner)
        return mutex->owner == self ? CORIO_EDEADLK : CORIO_EAGAIN;
    mutex->owner = self;
    return 0;
}

int corio_mutex_try_lock(corio_mutex *mutex)
{
    corio_task *self = corio__current_task();
    if (!self)
        return CORIO_EPERM;
    if (!mutex)
        return CORIO_EINVAL;
    corio__spin_lock(&mutex->lock);
    int rc = take_mutex(mutex, self);
    corio__spin_unlock(&mutex->lock);
    return rc == CORIO_EAGAIN ? CORIO_EBUSY : rc;
}

int corio_mutex_lock_until(corio_mutex *mutex, corio_time_t deadline)
{
    if (!mutex)
        return CORIO_EINVAL;
    /* Woken means the unlocker made us the owner. */
    return corio__sync_call(&mutex->lock, &mutex->waiters, take_mutex, mutex,
                            corio__current_task(), false, deadline, CORIO__WAITS_MUTEX);
}

int corio_mutex_lock(corio_mutex *mutex) { return corio_mutex_lock_until(mutex, CORIO_FOREVER); }

int corio_mutex_unlock(corio_mutex *mutex)
{
    if (!mutex)
        return CORIO_EINVAL;
    corio_task *self = corio__current_task();
    corio__spin_lock(&mutex->lock);
    if (!self || mutex->owner != self) {
        corio__spin_unlock(&mutex->lock);
        return CORIO_EPERM;
    }
    mutex->owner = corio__waitq_wake_one(&mutex->waiters, 0);
    corio__spin_unlock(&mutex->lock);
    return 0;
}

bool corio__mutex_held_by(corio_mutex *m, corio_task *self)
{
    corio__spin_lock(&m->lock);
    bool held = m->owner == self;
    corio__spin_unlock(&m->lock);
    return held;
}

void corio__mutex_relock(corio_mutex *m, corio_task *self)
{
    bool cancelled = false;
    for (;;) {
        uint64_t token = corio__wait_arm_uncancellable(self, &cancelled);
        corio__spin_lock(&m->lock);
        if (!m->owner) {
            /* Free: nobody is queued either (an unlock hands the mutex to
             * the first waiter still waiting). */
            m->owner = self;
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
        bool mine = m->owner == self;
        corio__spin_unlock(&m->lock);
        if (mine)
            break;
    }
    corio__wait_uncancellable_end(self, cancelled);
}
