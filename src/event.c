/*
 * event.c: events and wait groups: objects many tasks wait on at once,
 * all released together.
 */
#include "corio.h"
#include "spin.h"
#include "sync_wait.h"
#include "sys.h"
#include "task.h"
#include "waitq.h"

struct corio_event {
    corio__spin lock;
    bool set;
    corio__waitq waiters;
};

int corio_event_new(corio_event **event)
{
    if (!event)
        return CORIO_EINVAL;
    *event = corio__calloc(1, sizeof **event);
    return *event ? 0 : CORIO_ENOMEM;
}

void corio_event_free(corio_event *event) { corio__free(event); }

int corio_event_set(corio_event *event)
{
    if (!event)
        return CORIO_EINVAL;
    corio__spin_lock(&event->lock);
    event->set = true;
    corio__waitq_wake_all(&event->waiters, 0);
    corio__spin_unlock(&event->lock);
    return 0;
}

int corio_event_clear(corio_event *event)
{
    if (!event)
        return CORIO_EINVAL;
    corio__spin_lock(&event->lock);
    event->set = false;
    corio__spin_unlock(&event->lock);
    return 0;
}

bool corio_event_is_set(corio_event *event)
{
    if (!event)
        return false;
    corio__spin_lock(&event->lock);
    bool set = event->set;
    corio__spin_unlock(&event->lock);
    return set;
}

static int event_is_set(void *obj, void *unused)
{
    (void)unused;
    return ((corio_event *)obj)->set ? 0 : CORIO_EAGAIN;
}

int corio_event_wait_until(corio_event *event, corio_time_t deadline)
{
    if (!event)
        return CORIO_EINVAL;
    return corio__sync_call(&event->lock, &event->waiters, event_is_set, event, NULL, false,
                            deadline, CORIO__WAITS_EVENT);
}

int corio_event_wait(corio_event *event) { return corio_event_wait_until(event, CORIO_FOREVER); }

/* ---- wait group ---- */

struct corio_waitgroup {
    corio__spin lock;
    long count;
    corio__waitq waiters;
};

int corio_waitgroup_new(corio_waitgroup **wg)
{
    if (!wg)
        return CORIO_EINVAL;
    *wg = corio__calloc(1, sizeof **wg);
    return *wg ? 0 : CORIO_ENOMEM;
}

void corio_waitgroup_free(corio_waitgroup *wg) { corio__free(wg); }

int corio_waitgroup_add(corio_waitgroup *wg, long delta)
{
    if (!wg)
        return CORIO_EINVAL;
    corio__spin_lock(&wg->lock);
    long count;
    if (__builtin_add_overflow(wg->count, delta, &count) || count < 0) {
        corio__spin_unlock(&wg->lock);
        return CORIO_EINVAL;
    }
    wg->count = count;
    if (wg->count == 0)
        corio__waitq_wake_all(&wg->waiters, 0);
    corio__spin_unlock(&wg->lock);
    return 0;
}

int corio_waitgroup_done(corio_waitgroup *wg) { return corio_waitgroup_add(wg, -1); }

static int wg_is_zero(void *obj, void *unused)
{
    (void)unused;
    return ((corio_waitgroup *)obj)->count == 0 ? 0 : CORIO_EAGAIN;
}

int corio_waitgroup_wait_until(corio_waitgroup *wg, corio_time_t deadline)
{
    if (!wg)
        return CORIO_EINVAL;
    return corio__sync_call(&wg->lock, &wg->waiters, wg_is_zero, wg, NULL, false, deadline,
                            CORIO__WAITS_WAITGROUP);
}

int corio_waitgroup_wait(corio_waitgroup *wg)
{
    return corio_waitgroup_wait_until(wg, CORIO_FOREVER);
}
