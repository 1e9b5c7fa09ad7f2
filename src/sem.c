/*
 * sem.c: the counting semaphore.
 *
 * It hands off directly: a release with tasks waiting gives the permit
 * to the first task still waiting, whose wake-up carries it; only with
 * nobody waiting does the count go up. So waiters are served in order, a
 * woken task never has to compete again, and a waiter whose wait ended
 * first is skipped: its fire fails and the permit goes to the next
 * (waitq.h). A cancelled or timed-out acquire therefore holds nothing.
 * The mutex (mutex.c) hands off the same way.
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
