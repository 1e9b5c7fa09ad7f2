/*
 * loop.c: a loop's resources and the ways other threads reach it.
 *
 * Cross-thread hand-off is one lock-free stack per loop, the inbox: any
 * thread pushes a task to be made ready with one CAS; the loop takes the
 * whole stack with one exchange when it polls. The eventfd is written only
 * when the target loop is parked, decided by an exchange on its `parked`
 * flag so that exactly one waker pays for the syscall.
 *
 * Parking (the lost-wake-up argument). A loop parks like this:
 *     parked = 1; nparked++; [nsearching--]; re-check inbox and run queues;
 *     epoll_wait
 * and a producer does:
 *     publish the task (inbox CAS or run-queue tail store); then read
 *     `parked` (inbox) or nsearching/nparked (run queue)
 * For the inbox all of these are sequentially consistent, so either the
 * producer sees the loop parked and writes its eventfd, or the loop's
 * re-check sees the task: a wake-up is never lost. The same holds for the
 * runtime's stop flag, which park also re-checks, and the count of closes
 * (io.c): each is written sequentially consistent before the writer
 * wakes every parked loop. A release store there is not enough: it can
 * pass the writer's read of `parked` (x86's store buffer does it), and a
 * loop that missed the stop slept through it (test_cancel hung so once
 * under ASan in CI). The run-queue tail is
 * stored with release only (runq.c says why), so a spawner and a parking
 * loop may miss each other; then the task runs on the spawner's own loop,
 * which is awake, or, if balance holds it for the loop that parked
 * (balance.c), the spawner wakes that loop at its next check (every
 * 200 us) and stops holding after 10 ms: a delay, never a task left
 * queued. The scheduler side lives in sched.c.
 */
#define _GNU_SOURCE
#include "loop.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ready.h"
#include "sys.h"
#include "task.h"

static __thread corio__loop *tls_loop __attribute__((tls_model("initial-exec")));
static __thread corio__runtime *tls_runtime __attribute__((tls_model("initial-exec")));

corio__loop *corio__loop_current(void) { return tls_loop; }

/* Here rather than in task.c so that the most called lookup reads the
 * thread-local directly, one call deep. Not inline in its callers, though
 * that would save a tenth of a free mutex's lock and unlock: a caller
 * that suspends and looks again (a blocking call's retry loop) may be a
 * migrating task resumed on another thread, and a compiler may treat the
 * thread pointer as fixed within a function and keep what it read before
 * the suspension, reading the old thread's loop (select.c's random state
 * is out of line for the same reason). Each call here reads it afresh. */
corio_task *corio__current_task(void)
{
    corio__loop *l = tls_loop;
    return l ? l->current : NULL;
}

corio__runtime *corio__runtime_current(void) { return tls_runtime; }

void corio__set_thread_runtime(corio__runtime *rt) { tls_runtime = rt; }
void corio__set_thread_loop(corio__loop *l) { tls_loop = l; }

/* Idle stacks a loop keeps resident for reuse; more are handed back to
 * the kernel (stack.h). Enough to absorb the churn of a busy loop, at a
 * few pages each. */
#define STACK_POOL_LIMIT 256
/* The alternate signal stack on which the overflow reporter runs. */
#define ALTSTACK_SIZE ((size_t)64 * 1024)

int corio__loop_init(corio__loop *l, corio__runtime *rt, unsigned index)
{
    memset(l, 0, sizeof *l);
    l->rt = rt;
    l->index = index;
    l->poll.epfd = l->poll.wakefd = -1;
    corio__io_init(&l->io);
    l->coop_budget = 128;
    l->rng = 0x9E3779B97F4A7C15ull * (index + 1);
    atomic_init(&l->inbox, NULL);
    atomic_init(&l->parked, 0);
    atomic_init(&l->rechecks, 0);
    atomic_init(&l->sent_to_search, 0);
    atomic_init(&l->woken_ns, 0);
    /* Fresh, and looking for work, from the start: balance.c holds tasks
     * for a loop whose thread has not run yet, as it will. */
    corio_time_t now = corio_now();
    atomic_init(&l->activity_ns, now);
    atomic_init(&l->seek_ns, now);
    atomic_init(&l->thread_id, 0);
    atomic_init(&l->stat_fd, -1);
    corio__timers_init(&l->timers, rt->huge_pages);
    l->arena.huge_pages = rt->huge_pages;
    corio__stack_pool_init(&l->stacks, rt->stack_size, STACK_POOL_LIMIT, &rt->stack_spill);

    l->peer_watch = corio__calloc(rt->nloops, sizeof *l->peer_watch);
    if (!l->peer_watch)
        return CORIO_ENOMEM;
    int rc = corio__runq_init(&l->runq, rt->huge_pages);
    if (rc != 0) {
        corio__free(l->peer_watch);
        return rc;
    }
    rc = corio__runq_init(&l->roam, rt->huge_pages);
    if (rc != 0) {
        corio__runq_destroy(&l->runq);
        corio__free(l->peer_watch);
        return rc;
    }
    rc = corio__poll_init(&l->poll);
    if (rc != 0)
        goto fail;
    rc = corio__stack_map(&l->shared_stack, rt->stack_size);
    if (rc != 0)
        goto fail;
    l->altstack = corio__mmap_anon(ALTSTACK_SIZE);
    if (l->altstack == MAP_FAILED) {
        l->altstack = NULL;
        rc = CORIO_ENOMEM;
        goto fail;
    }
    l->altstack_size = ALTSTACK_SIZE;
    return 0;

fail:
    corio__loop_destroy(l);
    return rc;
}

void corio__loop_destroy(corio__loop *l)
{
    if (l->altstack)
        corio__munmap(l->altstack, l->altstack_size);
    l->altstack = NULL;
    corio__stack_unmap(&l->shared_stack);
    corio__stack_pool_destroy(&l->stacks);
    corio__timers_destroy(&l->timers);
    corio__io_destroy(&l->io);
    corio__poll_destroy(&l->poll);
    corio__runq_destroy(&l->runq);
    corio__runq_destroy(&l->roam);
    corio__free(l->peer_watch);
    l->peer_watch = NULL;
    /* Every loop's thread has ended: no probe reads it any more. */
    int stat_fd = atomic_exchange(&l->stat_fd, -1);
    if (stat_fd >= 0)
        close(stat_fd);
}

/* Take parked l's flag to wake it, noting when: from then on it is a
 * thread the OS has yet to run, and balance.c counts how long it has been
 * kept off the CPU from here, not from its last poll (it may have parked
 * long before). Noted before the flag is cleared, so that a loop that
 * reads the flag clear also reads the time. */
static bool unpark(corio__loop *l)
{
    atomic_store_explicit(&l->woken_ns, corio_now(), memory_order_relaxed);
    return atomic_exchange(&l->parked, 0);
}

void corio__loop_wake(corio__loop *l)
{
    if (atomic_load(&l->parked) && unpark(l))
        corio__poll_wake(&l->poll);
}

void corio__runtime_wake_all(corio__runtime *rt)
{
    for (unsigned i = 0; i < rt->nloops; i++)
        corio__loop_wake(rt->loops[i]);
}

static void inbox_push(corio__loop *l, corio_task *t)
{
    corio_task *head = atomic_load_explicit(&l->inbox, memory_order_relaxed);
    do {
        t->next = head;
    } while (!atomic_compare_exchange_weak_explicit(&l->inbox, &head, t, memory_order_seq_cst,
                                                    memory_order_relaxed));
    corio__loop_wake(l);
}

/* Does t, being made ready on its home l, go to the roam queue instead?
 * A started migrating task woken from a wait it may move after, not the
 * caller itself (a task that queues itself is still on the CPU: a thief
 * must not take it before it has switched out), and not once this loop
 * has seen the runtime stop (shutdown counts each loop's live tasks). A
 * task that moves between the runtime's stop and this loop's next poll is
 * adopted by a loop that has not counted itself finished, and fails its
 * next wait there. */
static bool roams(corio__loop *l, const corio_task *t)
{
    return (t->flags & CORIO__TF_MIGRATE) && t->state != CORIO__TASK_NEW && t != l->current &&
           !l->stopping && l->rt->nloops > 1 &&
           corio__wait_kind_movable((enum corio__wait_kind)t->wait_what);
}

void corio__ready_push(corio__loop *l, corio_task *t)
{
    if (__builtin_expect(t->flags & CORIO__TF_MIGRATE, 0) && roams(l, t)) {
        corio__roam_push(l, t);
        return;
    }
    if (t->state != CORIO__TASK_NEW)
        t->state = CORIO__TASK_READY;
    corio__ready_append(l, t);
}

void corio__loop_make_ready(corio_task *t)
{
    corio__loop *home = t->home;
    if (home == tls_loop)
        corio__ready_push(home, t);
    else
        inbox_push(home, t);
}

/* Wake l, unparked by the caller, to look for the tasks queued that made
 * the caller wake it: it counts as searching from its wake-up, so that if
 * it finds work of its own instead, it hands the search on (sched.c,
 * stop_searching_for_own_work). Stored before the eventfd write the loop
 * waits for; a loop that a timer woke first may miss it, and search no
 * more than before. A hint either way: a store that comes late, after
 * the loop woke for something else, is cleared at its next park, or
 * makes a later wake-up count as searching, which at worst hands the
 * search on once for nothing. */
static void send_to_search(corio__loop *l)
{
    atomic_store_explicit(&l->sent_to_search, 1, memory_order_release);
    corio__poll_wake(&l->poll);
}

/* Try to hand new work to a parked loop, unless one is already searching
 * (it will find the work itself; waking more would only make them race
 * for it). Never-run tasks go to a loop whose load is low enough that it
 * would steal (balance.c, steal_allowance) if there is one. Otherwise to a
 * loaded one, unless it already parked with a recheck due (park: it saw
 * tasks queued that balance kept from it, and looks again every 200 us):
 * load counts tasks blocked on events and I/O, which need no CPU, and a
 * loaded loop that nobody woke slept for good, so when `from` then
 * computed without yielding, nothing found it stuck (balance.h) and its
 * queue waited the whole computation while a core idled (found by
 * review). The one woken steals, or re-parks with a recheck if balance
 * keeps the queue from it, so the rest of a burst wakes nobody: not the
 * syscall per spawn the load filter was there to save. */
void corio__notify_idle(corio__runtime *rt, corio__loop *from, bool started)
{
    if (atomic_load(&rt->nsearching) != 0 || atomic_load(&rt->nparked) == 0)
        return;
    unsigned n = rt->nloops;
    unsigned start = from->index + 1;
    /* The published load, which every change to it updates: the same
     * value the owner would compute, and the one other loops may read. */
    size_t mine = atomic_load_explicit(&from->load, memory_order_relaxed) +
                  corio__runq_len(&from->runq);
    corio__loop *loaded = NULL;
    for (unsigned i = 0; i < n; i++) {
        corio__loop *l = rt->loops[(start + i) % n];
        if (l == from || !atomic_load(&l->parked))
            continue;
        if (!started && atomic_load_explicit(&l->load, memory_order_relaxed) + 1 >= mine) {
            if (!loaded && !atomic_load(&l->rechecks))
                loaded = l;
            continue;
        }
        if (unpark(l)) {
            send_to_search(l);
            return;
        }
    }
    if (loaded && unpark(loaded))
        send_to_search(loaded);
}

void corio__loop_push_new(corio__loop *l, corio_task *t)
{
    if (t->flags & CORIO__TF_PINNED) {
        corio__ready_push(l, t);
        return;
    }
    if (!corio__runq_push(&l->runq, t)) {
        /* No memory for an overflow block: the task still runs, here,
         * where nobody can steal it (as a task drained from the inbox). */
        t->home = l;
        t->flags |= CORIO__TF_PINNED;
        corio__ready_push(l, t);
        return;
    }
    /* A loop spawning in a burst is busy but not stuck: say so now and
     * then, so thieves keep stealing for balance, not for rescue. */
    if ((++l->spawn_count & 63) == 0)
        atomic_store_explicit(&l->activity_ns, corio_now(), memory_order_relaxed);
    corio__notify_idle(l->rt, l, false);
}

/* A new task from a thread that is not l's: pinned or not, it goes through
 * the inbox; the loop files it when it drains. */
void corio__loop_push_new_remote(corio__loop *l, corio_task *t) { inbox_push(l, t); }

corio_task *corio__inbox_take(corio__loop *l)
{
    if (!atomic_load_explicit(&l->inbox, memory_order_relaxed))
        return NULL;
    corio_task *list = atomic_exchange_explicit(&l->inbox, NULL, memory_order_seq_cst);
    /* The stack is newest first: reverse it so wake-ups keep their order. */
    corio_task *fifo = NULL;
    while (list) {
        corio_task *next = list->next;
        list->next = fifo;
        fifo = list;
        list = next;
    }
    return fifo;
}
