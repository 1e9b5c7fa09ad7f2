/*
 * sem.c: counting semaphore and mutex.
 *
 * Both hand off directly: a release with tasks waiting gives the permit
 * (or the lock) to the first task still waiting, whose wake-up carries
 * it; only with nobody waiting does the count go up. So waiters are
 * served in order, a woken task never has to compete again, and a waiter
 * whose wait ended first is skipped: its fire fails and the permit goes
 * to the next (waitq.h). A cancelled or timed-out acquire therefore holds
 * nothing.
 */
#include "corio.h"
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

int corio_sem_try_acquire(corio_sem *sem)
{
    if (!sem)
        return CORIO_EINVAL;
    corio__spin_lock(&sem->lock);
    int rc = sem->permits ? 0 : CORIO_EAGAIN;
    if (rc == 0)
        sem->permits--;
    corio__spin_unlock(&sem->lock);
    return rc;
}

int corio_sem_acquire_until(corio_sem *sem, corio_time_t deadline)
{
    if (!sem)
        return CORIO_EINVAL;
    corio_task *self;
    uint64_t token;
    int rc = corio__sync_arm(&self, &token);
    if (rc != 0)
        return rc;
    corio__spin_lock(&sem->lock);
    /* Free permits go to queued waiters first: no barging past them. */
    if (sem->permits && corio__waitq_empty(&sem->waiters)) {
        sem->permits--;
        corio__spin_unlock(&sem->lock);
        corio__wait_disarm(self, token);
        return 0;
    }
    /* 0: the releaser handed us its permit. */
    return corio__sync_block(&sem->lock, &sem->waiters, self, token, deadline, "semaphore");
}

int corio_sem_acquire(corio_sem *sem) { return corio_sem_acquire_until(sem, CORIO_FOREVER); }

int corio_sem_release(corio_sem *sem)
{
    if (!sem)
        return CORIO_EINVAL;
    corio__spin_lock(&sem->lock);
    if (!corio__waitq_wake_one(&sem->waiters, 0))
        sem->permits++;
    corio__spin_unlock(&sem->lock);
    return 0;
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

int corio_mutex_try_lock(corio_mutex *mutex)
{
    corio_task *self = corio__current_task();
    if (!self)
        return CORIO_EPERM;
    if (!mutex)
        return CORIO_EINVAL;
    corio__spin_lock(&mutex->lock);
    int rc = mutex->owner ? (mutex->owner == self ? CORIO_EDEADLK : CORIO_EBUSY) : 0;
    if (rc == 0)
        mutex->owner = self;
    corio__spin_unlock(&mutex->lock);
    return rc;
}

int corio_mutex_lock_until(corio_mutex *mutex, corio_time_t deadline)
{
    if (!mutex)
        return CORIO_EINVAL;
    corio_task *self;
    uint64_t token;
    int rc = corio__sync_arm(&self, &token);
    if (rc != 0)
        return rc;
    corio__spin_lock(&mutex->lock);
    if (!mutex->owner || mutex->owner == self) {
        rc = mutex->owner ? CORIO_EDEADLK : 0;
        if (rc == 0)
            mutex->owner = self;
        corio__spin_unlock(&mutex->lock);
        corio__wait_disarm(self, token);
        return rc;
    }
    /* 0: the unlocker made us the owner. */
    return corio__sync_block(&mutex->lock, &mutex->waiters, self, token, deadline, "mutex");
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
