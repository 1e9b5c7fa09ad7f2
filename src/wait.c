/*
 * wait.c: how a task blocks, and how it is woken, cancelled or timed out.
 *
 * Every blocking call in corio follows the same three steps:
 *
 *     corio__wait_arm(self, &token)           nothing registered yet
 *     ...register self + token with the source (join word, wait queue,
 *        descriptor, blocking job...)...
 *     rc = corio__wait_commit(self, token, deadline, "what")
 *     ...if rc != 0, unregister (no side effect must remain)...
 *
 * The task's wait word holds a generation, a state (IDLE, ARMED, FIRED)
 * and a CANCEL bit. The one CAS from ARMED to FIRED decides who woke the
 * task: the source, the deadline, or a cancellation; everybody else's CAS
 * fails and they do nothing. Only the winner enqueues the task, so it is
 * resumed exactly once. A waker on another thread may fire the task before
 * it has actually switched out; that is fine, because the task's home loop
 * only takes it from the inbox after the task has left the CPU.
 *
 * Cancellation lives in the same word, which makes "one corio_cancel()
 * fails one call" exact: corio_cancel either fires an ARMED wait (the
 * cancellation is delivered now) or, when the task is not waiting, sets
 * CANCEL, which the next corio__wait_arm consumes and reports. Both are
 * CASes on one word, so a cancellation can be neither lost nor delivered
 * twice. (With a separate flag, a task could consume the flag and arm a
 * new wait between the canceller's flag store and its fire, and see the
 * one cancellation twice.) A call that was woken by a cancellation but
 * completes anyway (the joined task finished at the same moment) puts the
 * CANCEL bit back, so the cancellation fails the next call instead of
 * vanishing.
 */
#include <stdatomic.h>

#include "loop.h"
#include "ready.h"
#include "sys.h"
#include "task.h"

/* Read only by the gdb script: kept even if nothing in C refers to it. */
__attribute__((used)) const char *const corio__wait_names[CORIO__WAITS_KINDS] = {
    [CORIO__WAITS_NOTHING] = "-",
    [CORIO__WAITS_SLEEP] = "sleep",
    [CORIO__WAITS_JOIN] = "join",
    [CORIO__WAITS_GATHER] = "gather",
    [CORIO__WAITS_READ] = "read",
    [CORIO__WAITS_WRITE] = "write",
    [CORIO__WAITS_CONNECT] = "connect",
    [CORIO__WAITS_ACCEPT] = "accept",
    [CORIO__WAITS_FD] = "fd",
    [CORIO__WAITS_CHAN_SEND] = "chan send",
    [CORIO__WAITS_CHAN_RECV] = "chan recv",
    [CORIO__WAITS_SEMAPHORE] = "semaphore",
    [CORIO__WAITS_MUTEX] = "mutex",
    [CORIO__WAITS_EVENT] = "event",
    [CORIO__WAITS_WAITGROUP] = "waitgroup",
    [CORIO__WAITS_BLOCKING] = "run_blocking",
    [CORIO__WAITS_WAIT_ANY] = "wait any",
    [CORIO__WAITS_SET_NEXT] = "set next",
    [CORIO__WAITS_CHAN_SELECT] = "chan select",
    [CORIO__WAITS_COND] = "cond",
    [CORIO__WAITS_RWLOCK_READ] = "rwlock read",
    [CORIO__WAITS_RWLOCK_WRITE] = "rwlock write",
};

#define STATE(w) ((w) & CORIO__WAIT_STATE_MASK)
#define GEN(w) ((w) & ~(uint64_t)(CORIO__WAIT_STATE_MASK | CORIO__WAIT_CANCEL))

/* Shutdown, or a group's cancellation: every wait fails at once.
 *
 * The sticky flag is read sequentially consistent: it is one side of a
 * store-then-load handshake. A group's cancel_children (group.c) stores
 * it, then reads the wait word to fire an ARMED wait; a task arms (its
 * CAS on the wait word), then reads the flag here in the commit. With a
 * relaxed read both may miss: the canceller reads the word from before
 * the arm and fires nothing, the commit reads the flag from before the
 * store and suspends, and the child waits on (a read, a join, a sleep
 * for ever) while its group's close waits for it. x86 cannot do it (the
 * CAS is a locked instruction), but arm64 without LSE can: the CAS's
 * store-exclusive does not keep a later plain load behind it, and the
 * outline atomics' CAS is such a loop there. A plain load on x86 and an
 * LDAR on arm64, so it costs the waits nothing. */
static bool cancelled_for_good(corio_task *self)
{
    return self->home->stopping || atomic_load(&self->cancel_sticky);
}

/* corio__wait_arm's result in registers: a caller that passes the token
 * on in a tail call (sleep) must not have it in its frame. */
struct armed {
    uint64_t token;
    int rc;
};

static struct armed arm(corio_task *self)
{
    if (cancelled_for_good(self))
        return (struct armed){.rc = CORIO_ECANCELED};
    uint64_t w = atomic_load_explicit(&self->wait, memory_order_relaxed);
    for (;;) {
        if (w & CORIO__WAIT_CANCEL) {
            /* A cancellation waited for this call: consume and report it. */
            if (atomic_compare_exchange_weak(&self->wait, &w, w & ~(uint64_t)CORIO__WAIT_CANCEL))
                return (struct armed){.rc = CORIO_ECANCELED};
            continue;
        }
        uint64_t armed = (GEN(w) + CORIO__WAIT_GEN_ONE) | CORIO__WAIT_ARMED;
        if (atomic_compare_exchange_weak(&self->wait, &w, armed))
            return (struct armed){.token = armed};
    }
}

int corio__wait_arm(corio_task *self, uint64_t *token)
{
    struct armed a = arm(self);
    *token = a.token;
    return a.rc;
}

void corio__cancel_repend(corio_task *self)
{
    atomic_fetch_or(&self->wait, (uint64_t)CORIO__WAIT_CANCEL);
}

/* Suspend until the fire that already happened brings us back; then
 * return its result. */
static int consume_wakeup(corio_task *self)
{
    corio__loop *l = self->home;
    self->state = CORIO__TASK_WAITING;
    corio__loop_suspend(l, self);
    int rc = self->run->wake_result;
    /* A sleep that reached its deadline did what it was asked. Decided
     * here, not by sleep after the commit returns: sleep reaches the
     * commit by a tail call. */
    if (rc == CORIO_ETIMEDOUT && self->wait_what == CORIO__WAITS_SLEEP)
        rc = 0;
    self->wait_what = CORIO__WAITS_NOTHING;
    /* FIRED -> IDLE, keeping a CANCEL that arrived after the fire. */
    atomic_fetch_and_explicit(&self->wait, ~(uint64_t)CORIO__WAIT_STATE_MASK,
                              memory_order_relaxed);
    return rc;
}

int corio__wait_disarm(corio_task *self, uint64_t token)
{
    uint64_t expect = token;
    if (atomic_compare_exchange_strong(&self->wait, &expect, GEN(token) | CORIO__WAIT_IDLE))
        return 0;
    int rc = consume_wakeup(self);
    /* The call did not need to wait after all: a cancellation that woke
     * it must fail the next call instead. */
    if (rc == CORIO_ECANCELED && !cancelled_for_good(self))
        corio__cancel_repend(self);
    return rc;
}

/*
 * corio__wait_commit with a clock reading the caller took just before
 * (0: read one if the deadline needs it). A reading a little old only
 * sends an already-passed deadline through the timer, which fires at the
 * next poll; a clock read costs ~40 ns on our VMs, and a sleep used to
 * take three.
 *
 * A light task reserves its save buffer here, the one frame every wait
 * passes through on its way to the switch, so the reservation's margin
 * covers only the fixed path below (loop.h). Never inlined: sleep reaches
 * it by a tail call, which leaves no frame of its own on the stack that a
 * sleeping light task must save.
 */
__attribute__((noinline)) static int wait_commit_at(corio_task *self, uint64_t token,
                                                    corio_time_t deadline, corio_time_t now,
                                                    enum corio__wait_kind what)
{
    corio__loop *l = self->home;
    int early = 0;
    if (cancelled_for_good(self))
        early = CORIO_ECANCELED;
    else if (deadline != CORIO_FOREVER && deadline <= (now ? now : corio_now()))
        early = CORIO_ETIMEDOUT;
    else if (self->flags & CORIO__TF_LIGHT)
        early = corio__light_reserve(self);
    if (!early && deadline != CORIO_FOREVER &&
        (early = corio__timers_add(&l->timers, self, token, deadline)) == 0)
        self->flags |= CORIO__TF_TIMED;

    if (early) {
        uint64_t expect = token;
        if (atomic_compare_exchange_strong(&self->wait, &expect, GEN(token) | CORIO__WAIT_IDLE))
            return early;
        /* A waker got there first: take its wake-up instead. */
    }
    self->wait_what = (uint8_t)what;
    int rc = consume_wakeup(self);
    corio__wait_settle(self); /* its timer entry, if still queued, is stale */
    return rc;
}

void corio__wait_count_joining(corio_task *self)
{
    corio__loop *l = self->home;
    l->joining++;
    corio__loop_publish_load(l);
    self->flags |= CORIO__TF_JOINING;
}

void corio__wait_settle(corio_task *t)
{
    corio__loop *l = t->home;
    if (t->flags & CORIO__TF_TIMED)
        corio__timers_wait_over(&l->timers);
    if (t->flags & CORIO__TF_JOINING) {
        l->joining--;
        corio__loop_publish_load(l);
    }
    t->flags &= (uint8_t) ~(CORIO__TF_TIMED | CORIO__TF_JOINING);
}

bool corio__task_fire(corio_task *t, uint64_t token, int result)
{
    uint64_t expect = token;
    if (!atomic_compare_exchange_strong(&t->wait, &expect, GEN(token) | CORIO__WAIT_FIRED))
        return false;
    t->run->wake_result = result;
    corio__loop_make_ready(t);
    return true;
}

bool corio__task_fire_any(corio_task *t, int result)
{
    uint64_t w = atomic_load(&t->wait);
    while (STATE(w) == CORIO__WAIT_ARMED) {
        if (atomic_compare_exchange_weak(&t->wait, &w, GEN(w) | CORIO__WAIT_FIRED)) {
            t->run->wake_result = result;
            corio__loop_make_ready(t);
            return true;
        }
    }
    return false;
}

/* corio_run's main task, named from a thread of its runtime. Detached (no
 * task joins it: corio_run reads its result), yet cancellable by others,
 * as asyncio cancels its main task on a signal. Naming it stays safe until
 * corio_run returns: its object is released only when it returns, to its
 * loop's free list, and that loop spawns nothing from then on (the
 * runtime is stopping: CORIO_ESHUTDOWN), so nothing reuses it. */
static bool is_main_of_this_runtime(const corio_task *task)
{
    corio__runtime *rt = corio__runtime_current();
    return rt && rt->main_task == task;
}

int corio_cancel(corio_task *task)
{
    if (!task)
        return CORIO_EINVAL;
    /* A released handle (corio.h: CORIO_EINVAL until a spawn reuses the
     * object); not a pending cancellation on a free list. A detach is a
     * release too, though the task may still run; only the task itself
     * may still name itself (corio_self). The main task is the exception:
     * anyone may cancel it, and once it has returned that does nothing,
     * as for any finished task. */
    uintptr_t join = atomic_load_explicit(&task->join, memory_order_acquire);
    if (join == CORIO__JOIN_RELEASED || join == CORIO__JOIN_DETACHED) {
        bool is_main = is_main_of_this_runtime(task);
        if (join == CORIO__JOIN_RELEASED)
            return is_main ? 0 : CORIO_EINVAL;
        if (!is_main && task != corio__current_task())
            return CORIO_EINVAL;
    }
    uint64_t w = atomic_load(&task->wait);
    for (;;) {
        if (STATE(w) == CORIO__WAIT_ARMED) {
            /* Waiting: deliver now. (ARMED never carries CANCEL: arming
             * consumes it.) */
            if (atomic_compare_exchange_weak(&task->wait, &w, GEN(w) | CORIO__WAIT_FIRED)) {
                task->run->wake_result = CORIO_ECANCELED;
                corio__loop_make_ready(task);
                return 0;
            }
            continue;
        }
        if (w & CORIO__WAIT_CANCEL)
            return 0; /* one is pending already: cancellations coalesce */
        if (atomic_compare_exchange_weak(&task->wait, &w, w | CORIO__WAIT_CANCEL))
            return 0;
    }
}

/* ---- waits that cancellation does not end ----
 *
 * A group's close never leaves a child running, so once its own waits
 * fail for good (a sticky cancel, shutdown) it still has to wait for the
 * children, and for another task waiting on the group to leave. It waits
 * as every other wait does (arm, register, commit: the task parks and its
 * loop runs other tasks or sleeps in epoll), only with cancellation
 * ignored: shutdown and a sticky cancel do not fail the arm or the
 * commit, a pending cancellation is taken off the word for the wait
 * (ARMED never carries CANCEL: corio_cancel relies on it) and put back
 * after, and a light task without memory for its save buffer suspends all
 * the same (its frames then stay on the shared stack until a save finds
 * the memory, as corio__yield_now's). A cancellation can still fire the
 * armed wait (corio_cancel, shutdown's sweep, a group's cancel: each
 * fires once); the commit then returns CORIO_ECANCELED and the caller
 * unregisters and waits again. Waiting by yielding and sched_yield, as
 * these waits did, kept the waiting loop's CPU busy for as long as the
 * child computed or slept. */

uint64_t corio__wait_arm_uncancellable(corio_task *self, bool *cancelled)
{
    uint64_t w = atomic_load_explicit(&self->wait, memory_order_relaxed);
    for (;;) {
        uint64_t armed = (GEN(w) + CORIO__WAIT_GEN_ONE) | CORIO__WAIT_ARMED;
        if (atomic_compare_exchange_weak(&self->wait, &w, armed)) {
            if (w & CORIO__WAIT_CANCEL)
                *cancelled = true;
            return armed;
        }
    }
}

/* Out of line for the same reason as wait_commit_at: the light task's
 * reservation covers only the fixed path from here to the switch. */
__attribute__((noinline)) int corio__wait_commit_uncancellable(corio_task *self,
                                                               enum corio__wait_kind what,
                                                               bool *cancelled)
{
    if (self->flags & CORIO__TF_LIGHT)
        (void)corio__light_reserve(self);
    self->wait_what = (uint8_t)what;
    int rc = consume_wakeup(self);
    corio__wait_settle(self);
    if (rc == CORIO_ECANCELED)
        *cancelled = true;
    return rc;
}

void corio__wait_uncancellable_end(corio_task *self, bool cancelled)
{
    /* One-shot cancellations taken or delivered meanwhile fail the next
     * call, as they would have; cancellations for good need no mark. */
    if (cancelled && !cancelled_for_good(self))
        corio__cancel_repend(self);
}

/* ---- the simplest waits: sleep and yield ---- */

/* A yield that the inline rotation (ready.h) could not do: it needs the
 * scheduler, or no started task is ready. `anyway`: a light task that
 * cannot reserve its save buffer suspends all the same instead of
 * failing (its frames then stay on the shared stack until a save finds
 * the memory, as after a wake-up that beat its commit). */
__attribute__((noinline)) static int yield_slow(corio_task *self, bool anyway)
{
    corio__loop *l = self->home;
    if (!l->ready_head) {
        /* No started task is ready. Every task waiting to start (or a
         * woken migrating one) then goes first, as asyncio's sleep(0) runs
         * every callback that was ready and Go's Gosched the local queue:
         * the scheduler owes the queues that many picks (sched.c), instead
         * of the yielder switching back to itself until the loop polls.
         * With none, keep the CPU, but count it as a task run so that a
         * yield loop still lets the loop poll on time. */
        size_t roaming = corio__runq_len(&l->roam);
        size_t queued = corio__runq_len(&l->runq) + roaming;
        if (queued > l->queue_picks) {
            l->queue_picks = queued;
            l->roam_picks = roaming;
        } else if (!queued && l->tick + 1 < CORIO__POLL_INTERVAL) {
            l->tick++;
            return 0;
        }
    }
    if (self->flags & CORIO__TF_LIGHT) {
        int rc = corio__light_reserve(self);
        if (rc != 0 && !anyway)
            return rc;
    }
    corio__ready_push(l, self);
    corio__loop_suspend(l, self);
    return 0;
}

/* The common case inline: another started task is ready to take over. */
static inline int yield_now(corio_task *self, bool anyway)
{
    if (corio__ready_rotate(self->home, self))
        return 0;
    return yield_slow(self, anyway);
}

/* For a yield that must happen (io.c's fairness budget): one that
 * failed for want of memory would let the task keep the CPU. */
void corio__yield_now(corio_task *self) { (void)yield_now(self, true); }

int corio__cancel_point(corio_task *self)
{
    if (cancelled_for_good(self))
        return CORIO_ECANCELED;
    uint64_t w = atomic_load_explicit(&self->wait, memory_order_relaxed);
    while (w & CORIO__WAIT_CANCEL)
        if (atomic_compare_exchange_weak(&self->wait, &w, w & ~(uint64_t)CORIO__WAIT_CANCEL))
            return CORIO_ECANCELED;
    return 0;
}

int corio_yield(void)
{
    corio_task *self = corio__current_task();
    if (!self)
        return CORIO_EPERM;
    int rc = corio__cancel_point(self);
    return rc ? rc : yield_now(self, false);
}

int corio__pause(corio_task *self, corio_time_t *pause, corio_time_t max, corio_time_t deadline,
                 enum corio__wait_kind what)
{
    corio_time_t now = corio_now();
    bool forever = deadline == CORIO_FOREVER; /* -1: compare with care */
    if (!forever && now >= deadline)
        return CORIO_ETIMEDOUT;
    int rc = corio__cancel_point(self);
    if (rc != 0)
        return rc;
    bool short_of_deadline = forever || deadline - now > *pause;
    corio_time_t until = short_of_deadline ? now + *pause : deadline;
    *pause = *pause < max / 2 ? *pause * 2 : max; /* "up to max", not past it */
    uint64_t token;
    rc = corio__wait_arm(self, &token);
    if (rc != 0)
        return rc;
    rc = corio__wait_commit(self, token, until, what);
    return rc == CORIO_ETIMEDOUT && short_of_deadline ? 0 : rc;
}

int corio__wait_commit(corio_task *self, uint64_t token, corio_time_t deadline,
                       enum corio__wait_kind what)
{
    return wait_commit_at(self, token, deadline, 0, what);
}

/* `now`: the clock as read by the caller (unused for CORIO_FOREVER). */
static int sleep_at(corio_time_t deadline, corio_time_t now)
{
    corio_task *self = corio__current_task();
    if (!self)
        return CORIO_EPERM;
    if (deadline != CORIO_FOREVER && deadline <= now) {
        /* asyncio.sleep(0): a yield. */
        return corio_yield();
    }
    struct armed a = arm(self);
    if (a.rc != 0)
        return a.rc;
    /* A tail call: a light task sleeps with no frame of sleep's own on its
     * stack, which keeps its save buffer in the arena's 192-byte class
     * (a frame here made it 256: 64 MB more per million sleepers). The
     * commit cannot time out before suspending (deadline > now, the same
     * reading), so consume_wakeup is where a sleep's timeout becomes 0. */
    return wait_commit_at(self, a.token, deadline, now, CORIO__WAITS_SLEEP);
}

int corio_sleep_until(corio_time_t deadline)
{
    return sleep_at(deadline, deadline == CORIO_FOREVER ? 0 : corio_now());
}

int corio_sleep(int64_t ns)
{
    corio_time_t now = corio_now();
    return sleep_at(ns <= 0 ? now : corio__deadline_after(now, ns), now);
}
