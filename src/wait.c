/*
 * wait.c: how a task blocks, and how it is woken, cancelled or timed out.
 *
 * Every blocking call in corio follows the same three steps:
 *
 *     token = corio__wait_arm(self)           nothing registered yet
 *     ...register self + token with the source (join word, channel queue,
 *        blocking job, fd...)...
 *     rc = corio__wait_commit(self, token, deadline, "what")
 *     ...if rc != 0, unregister (no side effect must remain)...
 *
 * The one CAS from ARMED to FIRED on self->wait decides who woke the task:
 * the source, the deadline, or a cancellation; everybody else's CAS fails
 * and they do nothing. Only the winner enqueues the task, so it is resumed
 * exactly once. A waker on another thread may fire the task before it has
 * actually switched out; that is fine, because the task's home loop only
 * takes it from the inbox after the task has left the CPU.
 *
 * Cancellation is a flag plus a fire: corio_cancel() sets cancel_pending
 * and fires the current wait if there is one. A wait that starts with the
 * flag set returns CORIO_ECANCELED at once. The flag is cleared by the wait
 * that reports the cancellation, so one cancel fails one call.
 */
#include <stdatomic.h>

#include "loop.h"
#include "sys.h"
#include "task.h"

#define STATE(w) ((w) & CORIO__WAIT_STATE_MASK)
#define GEN(w) ((w) & ~(uint64_t)CORIO__WAIT_STATE_MASK)

int corio__wait_arm(corio_task *self, uint64_t *token)
{
    if (self->flags & CORIO__TF_LIGHT) {
        int rc = corio__light_reserve(self);
        if (rc != 0)
            return rc;
    }
    uint64_t w = atomic_load_explicit(&self->wait, memory_order_relaxed);
    *token = (GEN(w) + CORIO__WAIT_GEN_ONE) | CORIO__WAIT_ARMED;
    /* seq_cst: pairs with corio_cancel's store of cancel_pending (see
     * corio__wait_commit). */
    atomic_store(&self->wait, *token);
    return 0;
}

/* Suspend until the fire that already happened brings us back; then
 * return its result. */
static int consume_wakeup(corio_task *self, uint64_t token)
{
    corio__loop *l = self->home;
    self->state = CORIO__TASK_WAITING;
    corio__loop_suspend(l, self);
    corio__timers_remove(&l->timers, self);
    self->wait_what = NULL;
    atomic_store_explicit(&self->wait, GEN(token) | CORIO__WAIT_IDLE, memory_order_relaxed);
    return self->wake_result;
}

int corio__wait_disarm(corio_task *self, uint64_t token)
{
    uint64_t expect = token;
    if (atomic_compare_exchange_strong(&self->wait, &expect, GEN(token) | CORIO__WAIT_IDLE))
        return 0;
    return consume_wakeup(self, token);
}

int corio__wait_commit(corio_task *self, uint64_t token, corio_time_t deadline,
                       const char *what)
{
    corio__loop *l = self->home;
    int early = 0;
    bool sticky = l->stopping || atomic_load(&self->cancel_sticky);
    if (sticky || atomic_load(&self->cancel_pending))
        early = CORIO_ECANCELED;
    else if (deadline != CORIO_FOREVER && deadline <= corio_now())
        early = CORIO_ETIMEDOUT;
    else if (deadline != CORIO_FOREVER)
        early = corio__timers_add(&l->timers, self, deadline);

    if (early) {
        uint64_t expect = token;
        if (atomic_compare_exchange_strong(&self->wait, &expect, GEN(token) | CORIO__WAIT_IDLE)) {
            if (early == CORIO_ECANCELED && !sticky)
                atomic_store(&self->cancel_pending, false);
            return early;
        }
        /* A waker got there first: take its wake-up instead. */
    }
    self->wait_what = what;
    int rc = consume_wakeup(self, token);
    if (rc == CORIO_ECANCELED && !l->stopping && !atomic_load(&self->cancel_sticky))
        atomic_store(&self->cancel_pending, false);
    return rc;
}

bool corio__task_fire(corio_task *t, uint64_t token, int result)
{
    uint64_t expect = token;
    if (!atomic_compare_exchange_strong(&t->wait, &expect, GEN(token) | CORIO__WAIT_FIRED))
        return false;
    t->wake_result = result;
    corio__loop_make_ready(t);
    return true;
}

bool corio__task_fire_any(corio_task *t, int result)
{
    uint64_t w = atomic_load(&t->wait);
    while (STATE(w) == CORIO__WAIT_ARMED) {
        if (atomic_compare_exchange_weak(&t->wait, &w, GEN(w) | CORIO__WAIT_FIRED)) {
            t->wake_result = result;
            corio__loop_make_ready(t);
            return true;
        }
    }
    return false;
}

/* ---- the simplest waits: sleep and yield ---- */

/* Let other ready tasks run; no cancellation point. */
int corio__yield_now(corio_task *self)
{
    corio__loop *l = self->home;
    if (!l->ready_head && corio__runq_len(&l->runq) == 0 && l->direct_budget > 1) {
        /* Nobody else to run: keep the CPU, but count it against the poll
         * budget so a yield loop still lets the loop poll. */
        l->direct_budget--;
        return 0;
    }
    if (self->flags & CORIO__TF_LIGHT) {
        int rc = corio__light_reserve(self);
        if (rc != 0)
            return rc;
    }
    corio__ready_push(l, self);
    corio__loop_suspend(l, self);
    return 0;
}

int corio_yield(void)
{
    corio_task *self = corio__current_task();
    if (!self)
        return CORIO_EPERM;
    if (self->home->stopping || atomic_load_explicit(&self->cancel_sticky, memory_order_relaxed))
        return CORIO_ECANCELED;
    if (atomic_load_explicit(&self->cancel_pending, memory_order_relaxed) &&
        atomic_exchange(&self->cancel_pending, false))
        return CORIO_ECANCELED;
    return corio__yield_now(self);
}

int corio_sleep_until(corio_time_t deadline)
{
    corio_task *self = corio__current_task();
    if (!self)
        return CORIO_EPERM;
    if (deadline != CORIO_FOREVER && deadline <= corio_now()) {
        /* asyncio.sleep(0): a yield. */
        return corio_yield();
    }
    uint64_t token;
    int rc = corio__wait_arm(self, &token);
    if (rc != 0)
        return rc;
    rc = corio__wait_commit(self, token, deadline, "sleep");
    return rc == CORIO_ETIMEDOUT ? 0 : rc;
}

int corio_sleep(int64_t ns)
{
    return corio_sleep_until(ns <= 0 ? corio_now() : corio_deadline_in(ns));
}
