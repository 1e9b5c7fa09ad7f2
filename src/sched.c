/*
 * sched.c: the scheduler that runs on each loop's own thread stack.
 *
 * The loop's thread runs corio__loop_run(): pick a task, switch to it,
 * handle whatever made it switch back, repeat. What to run, in order:
 *
 *   1. the ready list: started tasks that were woken, and tasks pinned to
 *      this loop; but a poll owes the run and roam queues a pick for each
 *      task they then hold (`queue_picks`), taken after the tasks that
 *      were ready before the poll and before those it woke: FIFO at the
 *      poll's granularity, so neither queue can starve the other;
 *   2. the roam queue: woken migrating tasks (CORIO_TASK_MIGRATE);
 *   3. the run queue: never-run tasks, FIFO;
 *   4. when all are empty: poll (inbox, timers), then steal half of
 *      another loop's woken migrating or never-run tasks, then park in
 *      epoll_wait until the next deadline or a wake-up.
 *
 * Every CORIO__POLL_INTERVAL (61) tasks the loop polls even when busy, so
 * timers and wake-ups from other loops are never delayed behind a long run
 * of ready tasks.
 *
 * Switching. A task that waits or yields switches straight to the next
 * ready task when it can (one switch instead of two through the
 * scheduler), up to the poll budget. A task that finishes always goes
 * through the scheduler, which releases its stack: a stack cannot be
 * recycled while still in use.
 *
 * Light tasks share one stack per loop; the scheduler hands it over
 * between them (light.c), on its own stack. When memory runs out the
 * light tasks that cannot have it wait on the loop's stalled list, off
 * the ready list, while everything else runs on.
 *
 * Shutdown. When the main task finishes the runtime is "stopping". Each
 * loop then fires every waiting task with CORIO_ECANCELED, fails every
 * later wait at once, discards never-run tasks, and runs until none of its
 * started tasks is left. The last loop to get there wakes the others and
 * all exit.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "balance.h"
#include "light.h"
#include "loop.h"
#include "ready.h"
#include "sanitize.h"
#include "sys.h"
#include "task.h"

/* ---- starting and ending tasks ---- */

static void task_entry(void *task)
{
    corio_task *t = task;
    corio__san_first_entry();
    /* fn and arg share memory with fields used from here on (task.h). */
    corio_fn fn = t->fn;
    void *arg = t->run->arg;
    t->run->wq_prev = t->run->wq_next = NULL;
    t->result = fn(arg);
    corio__loop *l = t->home;
    l->switch_reason = CORIO__SWITCH_EXIT;
    corio__san_switch(&t->run->ctx, &t->run->san, &l->sched_ctx, &l->sched_san, 1);
    __builtin_unreachable();
}

static void live_insert(corio__loop *l, corio_task *t)
{
    t->run->live_prev = NULL;
    t->run->live_next = l->live;
    if (l->live)
        l->live->run->live_prev = t;
    l->live = t;
    l->live_count++;
    corio__loop_publish_load(l);
}

static void live_remove(corio__loop *l, corio_task *t)
{
    struct corio__task_run *r = t->run;
    if (r->live_prev)
        r->live_prev->run->live_next = r->live_next;
    else
        l->live = r->live_next;
    if (r->live_next)
        r->live_next->run->live_prev = r->live_prev;
    r->live_prev = r->live_next = NULL;
    l->live_count--;
    corio__loop_publish_load(l);
}

/* ---- migrating tasks ---- */

/* A homeless migrating task taken from a roam queue: l is its home now. */
static void adopt(corio__loop *l, corio_task *t)
{
    t->home = l;
    live_insert(l, t);
}

void corio__roam_push(corio__loop *l, corio_task *t)
{
    /* Settle first: a join counted in `joining` while the task is no
     * longer in live_count would publish a wrapped load (live - joining). */
    corio__wait_settle(t); /* what it would undo on resuming here */
    live_remove(l, t);
    t->state = CORIO__TASK_READY;
    t->home = NULL;
    if (!corio__runq_push(&l->roam, t)) {
        /* No memory for an overflow block: it stays, as if this loop had
         * taken it back from its roam queue. */
        adopt(l, t);
        corio__ready_append(l, t);
        return;
    }
    /* One task waiting is what this loop runs next anyway; a backlog is
     * CPU work for whichever loop is idle. */
    if (corio__runq_len(&l->roam) > 1)
        corio__notify_idle(l->rt, l, true);
}

enum start_result { STARTED, START_LATER, START_FAILED };

/* Give a never-run task its stack, run state and first frame.
 * START_LATER: the shared stack could not be freed for a light task;
 * START_FAILED: no stack could be had for a regular task. */
static enum start_result task_start(corio__loop *l, corio_task *t)
{
    struct corio__task_run *r;
    void *lo;
    size_t size;
    if (t->flags & CORIO__TF_LIGHT) {
        if (!corio__light_save_owner(l))
            return START_LATER;
        r = &((struct corio__light_task *)t)->run;
        r->saved = NULL;
        r->saved_len = t->saved_cap = 0;
        lo = l->shared_stack.lo;
        size = l->shared_stack.size;
        corio__sanitize_stack_reuse(lo, size);
        l->shared_owner = t;
    } else {
        /* The run state takes the top of the stack, above the first frame. */
        corio__stack st;
        size_t carved = l->stacks.carved;
        if (corio__stack_get(&l->stacks, &st, (size_t)t->stack_pages * CORIO__STACK_UNIT) != 0)
            return START_FAILED;
        /* A fresh stack costs system calls and page faults (tens of us on
         * our VMs), and at start-up every start needs one: 61 of them,
         * the run between two polls, took over 10 ms, and the other loops
         * took this one, silent and on the CPU, for stuck and rescued its
         * whole queue (bench/RESULTS.md, 2026-11-29). A loop working
         * through its queue is busy, not stuck: say so, as spawn bursts
         * do (loop.c). A clock read against the carve's cost; none once
         * stacks are recycled. */
        if (l->stacks.carved != carved)
            atomic_store_explicit(&l->activity_ns, corio_now(), memory_order_relaxed);
        lo = st.lo;
        size = st.size - CORIO__RUN_ROOM;
        r = (struct corio__task_run *)((char *)st.lo + size);
        r->stack_vg_id = st.vg_id;
    }
    r->arg = t->arg; /* t->arg becomes t->run */
    t->run = r;
    t->wait_what = CORIO__WAITS_NOTHING;
    memset(&r->san, 0, sizeof r->san);
    corio__ctx_make(&r->ctx, lo, size, task_entry, t);
    corio__san_set_stack(&r->san, lo, size);
    corio__san_task_begin(&r->san);
    t->home = l;
    live_insert(l, t);
    return STARTED;
}

static void live_count_drop(corio__runtime *rt)
{
    if (rt->max_tasks)
        atomic_fetch_sub_explicit(&rt->live_tasks, 1, memory_order_relaxed);
}

/* On the scheduler stack, after t returned from its function. */
static void task_exit(corio__loop *l, corio_task *t)
{
    live_remove(l, t);
    corio__san_task_end(&t->run->san);
    if (t->flags & CORIO__TF_LIGHT) {
        if (l->shared_owner == t)
            l->shared_owner = NULL;
        corio__arena_free(&l->arena, t->run->saved, t->saved_cap);
        t->run->saved = NULL;
        t->run->saved_len = t->saved_cap = 0;
    } else {
        corio__stack st = corio__task_stack(t);
        corio__stack_put(&l->stacks, &st);
    }
    t->state = CORIO__TASK_DONE;
    live_count_drop(l->rt);
    corio__task_finish(l, t);
}

/* A task that never ran: its discard consumes its argument. Before DONE
 * is published: a join that returns has seen it done. */
__attribute__((noinline, cold)) static void call_discard(corio_task *t, int error)
{
    struct corio__spawn_discard *w = t->arg;
    w->discard(w->arg, error);
    if (!w->kept)
        corio__free(w);
}

/* A never-run task finishes without running: dropped by shutdown
 * (CORIO_ESHUTDOWN) or no stack to be had (CORIO_ENOSTACK). Its joiner
 * gets the error. */
static void task_finish_unrun(corio__loop *l, corio_task *t, int error)
{
    if (t->flags & CORIO__TF_DISCARD)
        call_discard(t, error);
    t->flags |= CORIO__TF_UNRUN;
    t->exit_error = error;
    t->home = l; /* every finished task names its runtime (task.c) */
    t->state = CORIO__TASK_DONE;
    t->result = NULL;
    live_count_drop(l->rt);
    corio__task_finish(l, t);
}

/* ---- switching ---- */

static void switch_to_scheduler(corio__loop *l, corio_task *self)
{
    l->switch_reason = CORIO__SWITCH_SUSPEND;
    corio__san_switch(&self->run->ctx, &self->run->san, &l->sched_ctx, &l->sched_san, 0);
}

/* Stack a waiting task must have left for suspend_with_none_ready to
 * start the next task from it: what that path takes (the balance check,
 * task_start: a wait that starts the next task this way reaches 424 bytes
 * below the waiter's frame, a plain wait 320, gcc 12 -O2) plus room for
 * the dynamic linker to resolve a library call made there for the first
 * time (the balance check may write a loop's eventfd), which saves the
 * whole register file on the stack (up to ~3 KiB with AVX-512), and for
 * sanitizer builds' bigger frames. A task with less goes through the
 * scheduler, as every wait did before: no wait needs more stack than it
 * used to. */
#define DIRECT_START_HEADROOM ((ptrdiff_t)8192)

static bool direct_start_headroom(corio_task *self)
{
    char *lo = corio__task_stack(self).lo;
    return (char *)__builtin_frame_address(0) - lo >= DIRECT_START_HEADROOM;
}

/* One of the picks owed to the queues taken (queue_picks > 0). The ready
 * mark lives only while picks are owed (next_runnable says why), so
 * wherever they run out it goes too. */
static inline void spend_pick(corio__loop *l)
{
    if (!--l->queue_picks)
        l->ready_mark = NULL;
}

/* The queues had nothing for an owed pick: the rest are void. */
static inline void forfeit_picks(corio__loop *l)
{
    l->queue_picks = l->roam_picks = 0;
    l->ready_mark = NULL;
}

/* Nothing started is ready: start the never-run task the scheduler would
 * pick next, straight from `self`, instead of switching to the scheduler
 * for it to do the same (two switches saved per task when a task waits
 * for each of a burst of children in turn). Only where the scheduler's
 * pick would be exactly that task: no poll due, no woken migrating task
 * waiting, no turn of the run queue's overflow due, not stopping (picks
 * owed to the queues would take it too: the start counts as one); only
 * from the ring (refilling it from the overflow is the scheduler's job:
 * it needs more stack), only
 * with DIRECT_START_HEADROOM of self's stack left, and only with a warm
 * stack at hand, so that the start cannot fail (a task that cannot start
 * is finished by the scheduler, which calls its discard outside any
 * task). A task popped but not started this way (a light one, or one
 * needing a fresh stack) goes first on the ready list, where the
 * scheduler starts it next as it would have. Out of line: the other paths
 * of corio__loop_suspend then need no stack frame. */
__attribute__((noinline)) static void suspend_with_none_ready(corio__loop *l, corio_task *self)
{
    if (l->tick >= CORIO__POLL_INTERVAL || (self->flags & CORIO__TF_LIGHT) ||
        l->overflow_turn || !corio__runq_owner_empty(&l->roam) ||
        corio__runq_ring_owner_empty(&l->runq) || l->stopping ||
        atomic_load_explicit(&l->rt->stopping, memory_order_acquire) ||
        !direct_start_headroom(self) || !corio__balance_may_start_new(l)) {
        switch_to_scheduler(l, self);
        return;
    }
    corio_task *t = corio__runq_pop_ring(&l->runq);
    if (t && !(t->flags & CORIO__TF_LIGHT) &&
        corio__stack_warm_at_hand(&l->stacks, (size_t)t->stack_pages * CORIO__STACK_UNIT) &&
        task_start(l, t) == STARTED) {
        l->tick++;
        if (l->queue_picks)
            spend_pick(l);
        corio__switch_to(l, self, t);
        return;
    }
    if (t)
        corio__ready_push(l, t);
    switch_to_scheduler(l, self);
}

void corio__loop_suspend(corio__loop *l, corio_task *self)
{
    /* Straight to the next ready task when nothing needs the scheduler. */
    corio_task *next = l->ready_head;
    if (corio__direct_switch_ok(l, self, next)) {
        /* Counted even when the next task is the caller itself (a lone
         * yielder): the count is what makes the loop poll again. */
        l->tick++;
        corio__ready_pop(l);
        if (next == self) {
            self->state = CORIO__TASK_RUNNING;
            return;
        }
        corio__switch_to(l, self, next);
        return;
    }
    if (!next)
        suspend_with_none_ready(l, self);
    else
        switch_to_scheduler(l, self);
}

/* Switch from the scheduler to t and deal with whatever comes back. */
static void run_task(corio__loop *l, corio_task *t)
{
    l->tick++;
    if (t->state == CORIO__TASK_NEW) {
        if ((t->flags & CORIO__TF_LIGHT) && l->stalled_head) {
            corio__light_stall(l, t); /* it would fail as they did */
            return;
        }
        enum start_result started = task_start(l, t);
        if (started == START_FAILED) {
            task_finish_unrun(l, t, CORIO_ENOSTACK);
            return;
        }
        if (started == START_LATER) {
            corio__light_stall(l, t);
            return;
        }
    } else if (!t->home) {
        adopt(l, t);
    } else if ((t->flags & CORIO__TF_LIGHT) && l->shared_owner != t &&
               (l->stalled_head || !corio__light_swap_in(l, t))) {
        corio__light_stall(l, t);
        return;
    }
    t->state = CORIO__TASK_RUNNING;
    l->current = t;
    corio__san_switch(&l->sched_ctx, &l->sched_san, &t->run->ctx, &t->run->san, 0);

    corio_task *cur = l->current;
    l->current = NULL;
    int reason = l->switch_reason;
    l->switch_reason = CORIO__SWITCH_NONE;
    /* A light task that ran owned the shared stack (light tasks always
     * come back here, never switching straight to another task): it has
     * suspended, maybe with a reservation now, or finished, so the
     * stalled tasks try again. Read before the exit, which may free it. */
    bool owner_ran = l->stalled_head && (cur->flags & CORIO__TF_LIGHT);
    if (reason == CORIO__SWITCH_EXIT)
        task_exit(l, cur);
    if (owner_ran)
        corio__light_retry(l);
}

/* ---- polling ---- */

static void fire_due_timers(corio__loop *l)
{
    if (corio__timers_next(&l->timers) == CORIO_FOREVER)
        return;
    corio__timer_entry e;
    while (corio__timers_pop_due(&l->timers, l->now, &e))
        corio__task_fire(e.task, e.token, CORIO_ETIMEDOUT); /* fails if stale */
}

static void enter_stopping(corio__loop *l)
{
    l->stopping = true;
    /* Never-run stalled tasks are to be dropped now (run_unless_stopped),
     * not after the next retry; the started ones try again as well. */
    if (l->stalled_head)
        corio__light_retry(l);
    for (corio_task *t = l->live; t; t = t->run->live_next)
        corio__task_fire_any(t, CORIO_ECANCELED);
}

/* Take everything other threads handed to this loop. */
static void drain_inbox(corio__loop *l)
{
    corio_task *t = corio__inbox_take(l);
    if (t)
        l->inbox_seen_ns = l->now;
    while (t) {
        corio_task *next = t->next;
        if (t->state == CORIO__TASK_NEW) {
            t->home = l;
            t->flags |= CORIO__TF_PINNED; /* already placed: keep it here */
        }
        corio__ready_push(l, t);
        t = next;
    }
}

/* Collect ready descriptors without blocking. */
static void poll_io(corio__loop *l)
{
    static const struct timespec zero = {0, 0};
    corio__poll_event events[64];
    int n;
    do {
        n = corio__poll_wait(&l->poll, &zero, events, 64);
        if (n > 0)
            corio__io_dispatch(l, events, n);
    } while (n == 64);
}

/* How long a loop must have been idle before it gives the memory of its
 * surplus idle stacks back (stack.h): long enough that a lull between
 * bursts does not cost the next burst its stacks' pages, and that loops
 * finishing early do not interrupt the busy ones with TLB shootdowns. */
#define STACK_TRIM_IDLE_NS (20 * CORIO_MSEC)

/* A loop that never idles trims once the surplus has lasted the
 * runtime's retention time (corio_config.stack_retain_ms). */
static void stack_trim_tick(corio__loop *l)
{
    if (!corio__stack_pool_surplus(&l->stacks)) {
        l->stack_trim_at = 0;
    } else if (!l->stack_trim_at) {
        l->stack_trim_at = l->now + l->rt->stack_retain_ns;
    } else if (l->now >= l->stack_trim_at) {
        corio__stack_pool_trim(&l->stacks);
        l->stack_trim_at = 0;
    }
}

static void poll_events(corio__loop *l)
{
    corio_task *ready_before = l->ready_tail; /* ready before this poll's wake-ups */
    drain_inbox(l);
    if (l->io.registered)
        poll_io(l);
    if (corio__io_closes_pending(&l->io))
        corio__io_sweep_closed(l);
    l->now = corio_now();
    /* Release: a loop that reads this poll also reads the seek_ns stored
     * before it (seek_unless_own_work; balance.c reads this first). */
    atomic_store_explicit(&l->activity_ns, l->now, memory_order_release);
    fire_due_timers(l);
    stack_trim_tick(l);
    l->overflow_turn = atomic_load_explicit(&l->runq.overflow_len, memory_order_relaxed) != 0;
    l->roam_overflow_turn = atomic_load_explicit(&l->roam.overflow_len, memory_order_relaxed) != 0;
    if (!l->stopping && atomic_load_explicit(&l->rt->stopping, memory_order_acquire))
        enter_stopping(l);
    l->tick = 0;
    /* FIFO at the poll's granularity: what was ready before this poll
     * runs first (up to ready_mark), then every task queued now, spawned
     * (or woken, migrating ones) before what this poll just woke, then
     * that, as asyncio's ready deque would run them. With one pick per
     * poll, a loop busy with woken tasks started one queued task per 61
     * of them: on the reference experiment, when starting 10,000 tasks
     * outlasted the shortest sleep (page faults on a slow VM), the last
     * began its sleep 2 s late and efficiency fell to 0.68-0.87. Picks
     * still owed are not topped up; and since the mark puts whatever was
     * ready first, picks that run out exactly at a poll cannot be owed
     * again over a task that has waited through them. */
    if (!l->queue_picks) {
        l->roam_picks = corio__runq_len(&l->roam);
        size_t queued = corio__runq_len(&l->runq) + l->roam_picks;
        l->queue_picks = queued ? queued : 1;
        /* Marked only with something queued: the marked tasks go through
         * the scheduler (direct switches wait while picks are owed), and
         * with nothing to order them against that only cost switches
         * (found by review: 97% of yields through the scheduler with
         * 1,000 tasks ready, against 2.6%). */
        l->ready_mark = queued ? ready_before : NULL;
    }
    if (l->stalled_head && l->now >= l->stalled_retry_at)
        corio__light_retry(l); /* memory may have come back */
    l->start_credit = 0; /* credit is for a burst, not for later */
}

/* ---- choosing work ---- */

/* The oldest task of q (owner): its ring's, or, once a poll (`turn`),
 * its overflow's. Popping the ring first, a loop whose tasks kept
 * refilling the ring (tasks spawning successors; migrating tasks waking
 * each other) never reached the tasks spilled before them; Go takes its
 * global queue every 61 ticks for the same reason. */
static corio_task *queue_pop(corio__runq *q, bool *turn)
{
    if (*turn) {
        *turn = false;
        corio_task *t = corio__runq_pop_overflow(q);
        if (t)
            return t;
    }
    return corio__runq_pop(q);
}

/* A never-run task from our own queue, unless balance says to leave it
 * for a less loaded loop (balance.c). Once the runtime stops, the task is
 * only going to be discarded (corio__loop_run), so balance has no say:
 * holding it back would keep it, and its joiner, waiting for a loop that
 * has stopped stealing. */
static corio_task *pop_new(corio__loop *l)
{
    if (!corio__runq_len(&l->runq))
        return NULL;
    if (!l->stopping && !atomic_load_explicit(&l->rt->stopping, memory_order_acquire) &&
        !corio__balance_may_start_new(l))
        return NULL;
    return queue_pop(&l->runq, &l->overflow_turn);
}

/* A woken migrating task from our own roam queue, or NULL. */
static corio_task *roam_pop(corio__loop *l)
{
    return corio__runq_owner_empty(&l->roam) ? NULL : queue_pop(&l->roam, &l->roam_overflow_turn);
}

/* Ready tasks first, then woken migrating tasks, then never-run tasks;
 * the other way round for the picks owed to the queues (`queue_picks`:
 * all the queues held at the last poll that found none owed, once the
 * tasks ready before that poll have run; and all a lone yielder found
 * queued), so that neither queue can starve behind a stream of wake-ups
 * or a task that keeps yielding. (A count of picks modulo the poll
 * interval did not do it: a lone yielder switches straight back to
 * itself until the loop polls, and the scheduler's first pick after the
 * poll is at count 0.) */
static corio_task *next_runnable(corio__loop *l)
{
    corio_task *t = NULL;
    /* The tasks ready before the poll that owed the picks. The mark
     * lives only while picks are owed: direct switches, which pop the
     * ready list without looking at it, wait until none are (ready.h), so
     * it is cleared wherever the picks run out. A mark left on a task
     * no longer listed (a light task's stall once skipped this while the
     * picks ran out) would put the ready list first for good: a lone
     * yielder re-listing itself then starved the picks it owed (found by
     * review). */
    if (l->ready_mark) {
        t = corio__ready_pop(l);
        if (!t || t == l->ready_mark)
            l->ready_mark = NULL;
        if (t)
            return t;
    }
    if (l->queue_picks) {
        /* Woken migrating tasks first: they were woken before the picks
         * were owed, and are as late as the ready tasks above (with the
         * run queue first, picks that kept running out at a poll starved
         * them, and so did a lone yielder's). */
        if (l->roam_picks) {
            l->roam_picks--;
            t = roam_pop(l);
            if (!t)
                l->roam_picks = 0; /* stolen */
        }
        if (!t)
            t = pop_new(l);
        if (!t)
            t = roam_pop(l);
        if (t)
            spend_pick(l);
        else
            forfeit_picks(l); /* emptied, stolen, or held back */
    }
    if (!t)
        t = corio__ready_pop(l);
    if (!t)
        t = roam_pop(l);
    if (!t)
        t = pop_new(l);
    return t;
}

static uint64_t rng_next(corio__loop *l)
{
    l->rng ^= l->rng << 13;
    l->rng ^= l->rng >> 7;
    l->rng ^= l->rng << 17;
    return l->rng;
}

static corio_task *steal_any(corio__loop *l)
{
    corio__runtime *rt = l->rt;
    unsigned n = rt->nloops;
    if (n < 2)
        return NULL;
    unsigned start = (unsigned)(rng_next(l) % n);
    /* Woken migrating tasks first: they wait for a CPU now. Half of a
     * victim's, as Go's and Tokio's thieves take. */
    bool migrating = atomic_load_explicit(&rt->migrating, memory_order_relaxed);
    for (unsigned i = 0; migrating && i < n; i++) {
        corio__loop *v = rt->loops[(start + i) % n];
        if (v == l || !corio__runq_len(&v->roam))
            continue;
        corio_task *t = corio__runq_steal(&l->roam, &v->roam, SIZE_MAX);
        if (t)
            return t;
    }
    size_t mine = corio__balance_own_load(l);
    for (unsigned i = 0; i < n; i++) {
        corio__loop *v = rt->loops[(start + i) % n];
        if (v == l)
            continue;
        corio_task *t =
            corio__runq_steal(&l->runq, &v->runq, corio__balance_steal_allowance(l, v, mine));
        if (t)
            return t;
    }
    return NULL;
}

/* Queued tasks on some other loop that balance would let us take. Sets
 * *held_back (if not NULL) when some loop has queued tasks we may not
 * take yet. A hint either way: loads are read without locks. */
static bool stealable_somewhere(corio__loop *l, bool *held_back)
{
    corio__runtime *rt = l->rt;
    size_t mine = corio__balance_own_load(l);
    bool migrating = atomic_load_explicit(&rt->migrating, memory_order_relaxed);
    for (unsigned i = 0; i < rt->nloops; i++) {
        corio__loop *v = rt->loops[i];
        if (migrating && v != l && corio__runq_len(&v->roam))
            return true;
        if (v == l || !corio__runq_len(&v->runq))
            continue;
        if (corio__balance_steal_allowance(l, v, mine))
            return true;
        if (held_back)
            *held_back = true;
    }
    return false;
}

/* Work other threads have handed l: tasks in its inbox, woken migrating
 * tasks on its roam queue, or a close elsewhere of a descriptor its tasks
 * may wait on (the next poll's sweep fails those waiters). The inbox is
 * read seq_cst: after park() announces the loop parked, this and
 * inbox_push's seq_cst push, then its read of `parked`, cannot both miss
 * the other. */
static bool work_handed_over(corio__loop *l)
{
    return atomic_load(&l->inbox) || !corio__runq_owner_empty(&l->roam) ||
           corio__io_closes_pending(&l->io);
}

/* Anything to do, as seen after announcing ourselves parked? Sets
 * *queued_elsewhere when some loop has queued tasks we may not take yet
 * (we must look again once its owner could have gone stale). */
static bool work_visible(corio__loop *l, bool *queued_elsewhere)
{
    *queued_elsewhere = false;
    if (work_handed_over(l))
        return true;
    corio__runtime *rt = l->rt;
    if (!l->stopping && atomic_load(&rt->stopping))
        return true;
    if (l->stopping)
        return atomic_load(&rt->active_loops) == 0;
    l->now = corio_now();
    if (corio__runq_len(&l->runq)) {
        if (corio__balance_may_start_new(l))
            return true;
        *queued_elsewhere = true; /* held back: look again soon */
        return false;
    }
    return stealable_somewhere(l, queued_elsewhere);
}

/*
 * Before parking, watch for work for a moment, if it has been arriving
 * lately. Waking a parked loop costs an eventfd write and a kernel
 * wake-up, paid by whoever hands it work, and a loop that is not yet
 * parked is woken for free. Go's spinning Ms make the same trade. Two
 * kinds of recent work count:
 *
 *   inbox   tasks handed to this loop: two tasks ping-ponging over a
 *           channel across loops took 7.2 us per message without the
 *           spin, 0.42 us with it (corio-bench chan_pingpong_cross_ns);
 *   steals  never-run tasks this loop took from others: while a task
 *           spawns a burst, a spinning thief is a "searching" loop, so
 *           the spawner wakes nobody. Without it, 1M spawn+join on 16
 *           loops cost 520-950 ns a task, mostly the spawner's wake-up
 *           syscalls for thieves that had just parked. At most half the
 *           loops spin for steals at once, as in Go.
 *
 * Only lately: a loop fed by epoll alone gains nothing from spinning,
 * and with a load generator on the same cores the spinning cost the HTTP
 * benchmark's p99 5.4 -> 7.9 ms.
 */
#define SPIN_BEFORE_PARK_NS ((int64_t)20000)
#define SPIN_IF_WORK_WITHIN_NS ((int64_t)1000000)

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* Looking for work: spawners leave it to this loop (notify_idle). */
static void start_searching(corio__loop *l)
{
    if (!l->searching) {
        l->searching = true;
        atomic_fetch_add(&l->rt->nsearching, 1);
    }
}

/* No longer looking for work. True if this loop was the last searcher:
 * spawns made meanwhile woke nobody, counting on it. */
static bool stop_searching(corio__loop *l)
{
    if (!l->searching)
        return false;
    l->searching = false;
    return atomic_fetch_sub(&l->rt->nsearching, 1) == 1;
}

/* No longer looking, busy with a task of its own. Every spawn made while
 * this loop searched woke nobody (notify_idle), counting on it to take
 * the task; the last searcher to stop without taking them hands the
 * search on to a parked loop, or those tasks wait for their own loop
 * while a core idles (Go's resetspinning makes the same hand-over). */
static void stop_searching_for_own_work(corio__loop *l)
{
    corio__runtime *rt = l->rt;
    if (!stop_searching(l) || !atomic_load(&rt->nparked))
        return;
    bool migrating = atomic_load_explicit(&rt->migrating, memory_order_relaxed);
    for (unsigned i = 0; i < rt->nloops; i++) {
        corio__loop *v = rt->loops[i];
        if (v == l)
            continue;
        if (migrating && corio__runq_len(&v->roam)) {
            corio__notify_idle(rt, v, true);
            return;
        }
        if (corio__runq_len(&v->runq)) {
            corio__notify_idle(rt, v, false);
            return;
        }
    }
}

static bool spin_for_work(corio__loop *l)
{
    corio__runtime *rt = l->rt;
    bool inbox = l->now - l->inbox_seen_ns < SPIN_IF_WORK_WITHIN_NS;
    unsigned searching = (unsigned)atomic_load_explicit(&rt->nsearching, memory_order_relaxed);
    bool steals = l->now - l->stole_ns < SPIN_IF_WORK_WITHIN_NS && l->searching &&
                  searching * 2 <= rt->nloops;
    if (!inbox && !steals)
        return false;
    corio_time_t until = corio_now() + SPIN_BEFORE_PARK_NS;
    do {
        for (int i = 0; i < 64; i++) {
            /* Work handed to us, which we run next: the loop stops
             * searching as it picks it (corio__loop_run). */
            if (atomic_load_explicit(&l->inbox, memory_order_relaxed))
                return true;
            cpu_relax();
        }
        /* Only work balance lets us take: returning for a queue we must
         * leave alone would just spin the scheduler round. */
        if (steals && stealable_somewhere(l, NULL))
            return true;
    } while (corio_now() < until);
    return false;
}

static void park(corio__loop *l)
{
    corio__runtime *rt = l->rt;
    if (!l->stopping && spin_for_work(l))
        return;
    /* Cleared before the loop reads as parked, set after its re-check:
     * a spawner that sees it parked and rechecking (all seq_cst, as the
     * handshake on `parked`) can leave it be; one that reads it clear
     * wakes it at worst once too often (notify_idle). */
    atomic_store(&l->rechecks, 0);
    atomic_store_explicit(&l->sent_to_search, 0, memory_order_relaxed);
    atomic_store(&l->parked, 1);
    atomic_fetch_add(&rt->nparked, 1);
    bool was_searching = l->searching;
    stop_searching(l);
    bool queued_elsewhere;
    if (work_visible(l, &queued_elsewhere)) {
        atomic_exchange(&l->parked, 0);
        atomic_fetch_sub(&rt->nparked, 1);
        /* Back to looking, as Go's findRunnable does after its last
         * check: a spawn may have counted on this loop meanwhile. */
        if (was_searching)
            start_searching(l);
        return;
    }

    corio_time_t deadline = corio__timers_next(&l->timers);
    if (queued_elsewhere) {
        /* Tasks wait that balance keeps us from taking or starting yet:
         * look again soon, and say so. */
        corio_time_t recheck = l->now + CORIO__BALANCE_RECHECK_NS;
        if (deadline == CORIO_FOREVER || recheck < deadline)
            deadline = recheck;
        atomic_store(&l->rechecks, 1);
    }
    /* Light tasks stalled on memory: until their retry, unless the owner
     * is woken first (it runs, and they retry after it). */
    if (l->stalled_head && (deadline == CORIO_FOREVER || l->stalled_retry_at < deadline))
        deadline = l->stalled_retry_at;
    /* Idle for STACK_TRIM_IDLE_NS with a surplus of idle stacks: wake up
     * to give their memory back (below), unless something comes first. */
    bool trim = false;
    if (!l->stopping && corio__stack_pool_surplus(&l->stacks)) {
        corio_time_t trim_at = l->now + STACK_TRIM_IDLE_NS;
        if (deadline == CORIO_FOREVER || trim_at <= deadline) {
            deadline = trim_at;
            trim = true;
        }
    }
    struct timespec ts, *tsp = NULL;
    if (deadline != CORIO_FOREVER) {
        corio_time_t wait = deadline - corio_now();
        if (wait < 0)
            wait = 0;
        ts.tv_sec = wait / CORIO_SEC;
        ts.tv_nsec = wait % CORIO_SEC;
        tsp = &ts;
    }
    corio__poll_event events[64];
    int n = corio__poll_wait(&l->poll, tsp, events, 64);
    if (n > 0)
        corio__io_dispatch(l, events, n);

    /* Flag already taken: another thread woke us (the eventfd, which the
     * poller does not count as an event). Then something came before
     * the idle time was up, and the trim waits: trimming on any wake-up
     * with no I/O gave stacks back moments after a park, with a system
     * call per stack, while the work that woke the loop waited. And only
     * once the idle time is really up: a wake-up left over from an
     * earlier park (its waker took the flag, but that park saw the work
     * in its re-check and never waited) returns at once with no event
     * and the flag untaken; TSan soaks trimmed so, 0 ms after the poll. */
    bool woken = atomic_exchange(&l->parked, 0) == 0;
    atomic_fetch_sub(&rt->nparked, 1);
    if (woken && atomic_exchange_explicit(&l->sent_to_search, 0, memory_order_acquire))
        start_searching(l);
    if (trim && n == 0 && !woken && corio_now() >= deadline)
        corio__stack_pool_trim(&l->stacks);
}

/* Back from park() with nothing of its own to run (no I/O, no task made
 * ready, no work handed over, including a close to sweep, no timer or
 * stalled task due): another loop woke it to steal, or park itself saw
 * work to steal, or its recheck or trim came round. Either way it looks
 * for work next, as it was doing when it went to park: say so before its
 * next poll says it is active. Otherwise a loop holding tasks for it saw
 * it poll but not look for work since it parked (seek_ns, balance.h),
 * took it for busy with tasks of its own, and started the whole burst
 * itself in the moment between that poll and the steal after it
 * (test_steal's held-share tests failed about 1 run in 100 so; always,
 * with that moment made 300 us long). A loop with work of its own runs
 * that first, and is left as it was (a close's sweep too: counted as
 * looking for work, a loop woken by one had others hold tasks for it
 * while it failed its waiters). */
static void seek_unless_own_work(corio__loop *l)
{
    if (l->ready_head || work_handed_over(l))
        return;
    corio_time_t now = corio_now(), timer = corio__timers_next(&l->timers);
    if ((timer != CORIO_FOREVER && timer <= now) || (l->stalled_head && l->stalled_retry_at <= now))
        return;
    atomic_store_explicit(&l->seek_ns, now, memory_order_relaxed);
}

/* Stopping, with nothing runnable here. True when the loop may exit. */
static bool shutdown_step(corio__loop *l)
{
    corio__runtime *rt = l->rt;
    /* Migrating tasks in the roam queue are started but on no live list. */
    if (l->live_count == 0 && corio__runq_owner_empty(&l->roam) && !l->shutdown_counted) {
        l->shutdown_counted = true;
        if (atomic_fetch_sub(&rt->active_loops, 1) == 1)
            corio__runtime_wake_all(rt);
    }
    if (l->shutdown_counted && atomic_load(&rt->active_loops) == 0) {
        /* No started task is left anywhere: nothing can hand us work any
         * more except late spawns racing the stop; drop those. */
        drain_inbox(l);
        if (l->stalled_head)
            corio__light_retry(l); /* none started (no live task): drop them too */
        corio_task *t;
        while ((t = corio__ready_pop(l)) || (t = corio__runq_pop(&l->runq)))
            task_finish_unrun(l, t, CORIO_ESHUTDOWN);
        return true;
    }
    return false;
}

/* Run t, unless it never ran and the runtime stops: the main task may
 * have returned since this loop last polled (so the runtime's flag, not
 * just ours), and tasks that had not started by then never start
 * (asyncio.run's rule). Started tasks, roaming ones included, run. */
static void run_unless_stopped(corio__loop *l, corio_task *t)
{
    if (t->state == CORIO__TASK_NEW &&
        (l->stopping || atomic_load_explicit(&l->rt->stopping, memory_order_acquire)))
        task_finish_unrun(l, t, CORIO_ESHUTDOWN);
    else
        run_task(l, t);
}

void corio__loop_run(corio__loop *l)
{
    corio__runtime *rt = l->rt;
    poll_events(l);
    for (;;) {
        if (l->tick >= CORIO__POLL_INTERVAL)
            poll_events(l);
        corio_task *t = next_runnable(l);
        if (!t) {
            poll_events(l);
            t = next_runnable(l);
        }
        if (t) {
            /* Busy with work of its own, not looking. Still counted as
             * searching while it ran, the loop kept every spawn from
             * waking a parked loop for a share (notify_idle) as long as
             * the task ran: two loops passing messages through their
             * inboxes did it almost all the time, and so did a loop whose
             * spin for steals (spin_for_work) ended as a timer of its own
             * fired (found by review). Go's spinning M stops spinning as
             * it finds work, the same rule. */
            stop_searching_for_own_work(l);
            run_unless_stopped(l, t);
            continue;
        }
        if (l->stopping) {
            /* A stopping loop never steals, so it is no searcher: park's
             * successful last check (the stop itself, or active_loops
             * reaching 0) or a notify_idle wake-up may have made it one
             * again, and a loop that left counted kept nsearching at 1
             * for good (every run ended so, found by review). */
            stop_searching(l);
            if (shutdown_step(l))
                return;
            park(l);
            continue;
        }
        start_searching(l);
        atomic_store_explicit(&l->seek_ns, l->now, memory_order_relaxed);
        t = steal_any(l);
        if (t) {
            l->stole_ns = l->now;
            /* The last searcher to find work wakes another loop if work is
             * left, so a burst of spawns spreads over all idle loops. */
            if (stop_searching(l)) {
                if (!corio__runq_owner_empty(&l->roam))
                    corio__notify_idle(rt, l, true);
                else if (corio__runq_len(&l->runq))
                    corio__notify_idle(rt, l, false);
            }
            run_unless_stopped(l, t); /* as for our own queue */
            continue;
        }
        park(l);
        seek_unless_own_work(l);
    }
}
