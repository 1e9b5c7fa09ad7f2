/*
 * balance.c: the load-levelling rules for never-run tasks (balance.h).
 */
#include "balance.h"

#include <stdatomic.h>

#include "thread_probe.h"

static bool is_stale(corio__loop *l, corio__loop *v)
{
    /* Acquire: pairs with the poll's store (sched.c), so that a loop
     * seen polling after a park is also seen looking for work if it woke
     * to (seeks_work reads seek_ns after this). */
    int64_t idle_for = l->now - atomic_load_explicit(&v->activity_ns, memory_order_acquire);
    return idle_for > CORIO__BALANCE_STALE_NS;
}

/* The verdict on a silent loop v's thread, from a probe taken now and the
 * one before it in the same silence (thread_probe.h). A first probe cannot
 * tell a computing thread from one waiting for a CPU, so it says "off the
 * CPU" and the next, at least CORIO__BALANCE_PROBE_NS later, decides. The
 * CPU time v gained is set against the clock read with it, not l->now:
 * that is l's last poll, and a probe made deep into a computation of l's
 * and the next made just after a poll gave a window many times the real
 * one, in which v computing flat out read as kept off the CPU. */
static bool probe_says_off_cpu(corio__loop *v, corio__peer_watch *w, int64_t silence)
{
    pid_t tid = atomic_load_explicit(&v->thread_id, memory_order_acquire);
    if (tid == 0)
        return true; /* its thread has not started yet: it will */
    corio__thread_probe p;
    if (!corio__thread_probe_read_fd(atomic_load_explicit(&v->stat_fd, memory_order_relaxed),
                                     atomic_load_explicit(&v->cpu_clock, memory_order_relaxed), &p))
        return false; /* nothing known: the rule without probes */
    corio_time_t probed = corio_now();
    bool first = w->silence != silence;
    int64_t cpu_since = p.cpu_ns - w->cpu_ns, window = probed - w->probed_ns;
    w->cpu_ns = p.cpu_ns;
    w->probed_ns = probed;
    if (!p.runnable)
        return false; /* blocked in a system call: stuck */
    /* Less than half a CPU since the last probe: mostly waiting for one. */
    return first || cpu_since * 2 < window;
}

/* Is silent v kept off the CPU by the OS, rather than stuck? Then it will
 * be back within a time slice or two, and gets the treatment of a loop
 * that has just polled: for at most CORIO__BALANCE_OFF_CPU_MAX_NS of
 * silence, or of being woken if it parked in it (a loop parked for longer
 * than that and woken by a burst was otherwise stuck at once). Not a
 * parked loop (it waits for work, not for a CPU). One probe per loop
 * watched per CORIO__BALANCE_PROBE_NS. */
static bool kept_off_cpu(corio__loop *l, corio__loop *v)
{
    if (atomic_load(&v->parked))
        return false;
    int64_t silence = atomic_load_explicit(&v->activity_ns, memory_order_relaxed);
    int64_t woken = atomic_load_explicit(&v->woken_ns, memory_order_relaxed);
    int64_t off_cpu_since = woken > silence ? woken : silence;
    if (l->now - off_cpu_since > CORIO__BALANCE_OFF_CPU_MAX_NS)
        return false;
    corio__peer_watch *w = &l->peer_watch[v->index];
    if (w->silence == silence && l->now - w->at < CORIO__BALANCE_PROBE_NS)
        return w->off_cpu;
    w->off_cpu = probe_says_off_cpu(v, w, silence);
    w->silence = silence;
    w->at = l->now;
    return w->off_cpu;
}

/* Stuck: silent, and not for want of a CPU. */
static bool is_stuck(corio__loop *l, corio__loop *v)
{
    return is_stale(l, v) && !kept_off_cpu(l, v);
}

/* Will v come for our queued tasks? Only a loop that runs out of work
 * steals; one that has not looked for any within the stale time is busy
 * with tasks of its own (or stuck), however often it polls. */
static bool seeks_work(corio__loop *l, corio__loop *v)
{
    int64_t since = l->now - atomic_load_explicit(&v->seek_ns, memory_order_relaxed);
    return since <= CORIO__BALANCE_STALE_NS;
}

/* Will v come for our queued tasks soon? A loop that looks for work does;
 * so does one that was looking when the OS stopped running it. */
static bool worth_holding_for(corio__loop *l, corio__loop *v)
{
    if (!is_stale(l, v))
        return seeks_work(l, v);
    /* The poll first, with acquire, then the seek (as is_stale and
     * seeks_work): v may have polled since is_stale read it, and a new
     * poll read with an old seek would say "not looking" of a loop that
     * is (found by review; the operands of a subtraction are read in no
     * set order, and arm64 may reorder two relaxed loads). */
    int64_t activity = atomic_load_explicit(&v->activity_ns, memory_order_acquire);
    int64_t seek_before_silence = activity - atomic_load_explicit(&v->seek_ns, memory_order_relaxed);
    return seek_before_silence <= CORIO__BALANCE_STALE_NS && kept_off_cpu(l, v);
}

static size_t load_of(corio__loop *v)
{
    return atomic_load_explicit(&v->load, memory_order_relaxed) + corio__runq_len(&v->runq);
}

size_t corio__balance_own_load(corio__loop *l)
{
    return corio__loop_load(l) + corio__runq_len(&l->runq);
}

/* How far ahead of another loop a loop may get: 1% of its started tasks,
 * at least CORIO__BALANCE_MIN_SLACK. */
static size_t slack_of(corio__loop *l)
{
    size_t slack = corio__loop_load(l) / 100;
    return slack < CORIO__BALANCE_MIN_SLACK ? CORIO__BALANCE_MIN_SLACK : slack;
}

size_t corio__balance_steal_allowance(corio__loop *l, corio__loop *v, size_t mine)
{
    size_t queued = corio__runq_len(&v->runq);
    if (queued == 0)
        return 0;
    if (is_stuck(l, v))
        return queued;
    size_t v_live = atomic_load_explicit(&v->load, memory_order_relaxed);
    size_t theirs = v_live + queued;
    if (theirs > mine + 1)
        return (theirs - mine) / 2;
    /* Level already, and we are idle (nothing else calls this): take one
     * task at a time, unless we already carry more load than v. This is
     * what spreads CPU work that tasks hand to fresh tasks over the loops
     * as they free up, and lets a faster CPU do more of it. (Without the
     * load condition, a burst of spawned sleepers ended up to 58% on one
     * loop again.) */
    return corio__loop_load(l) <= v_live + slack_of(l) ? 1 : 0;
}

/*
 * Reading another loop's load costs a cache miss or two, once per task
 * started; with a million sleepers starting that was ~5% of the start-up.
 * So a check that passes leaves credit: the loop may start that many more
 * of its tasks unchecked, no more than it had room for under the slack
 * when it looked, and at most a quarter of the slack, so a loop that
 * others catch up with overshoots its slack by a quarter at worst. Credit
 * lapses at the loop's next poll (sched.c), so it never outlives a burst.
 */
bool corio__balance_may_start_new(corio__loop *l)
{
    corio__runtime *rt = l->rt;
    if (l->start_credit) {
        l->start_credit--;
        return true;
    }
    /* Cheap exit for the common case of short tasks: nothing to level. */
    size_t mine = corio__loop_load(l);
    if (rt->nloops < 2 || mine < CORIO__BALANCE_MIN_SLACK)
        return true;
    size_t slack = slack_of(l);
    size_t room = slack / 4;
    for (unsigned i = 0; i < rt->nloops; i++) {
        corio__loop *v = rt->loops[i];
        if (v == l || !worth_holding_for(l, v))
            continue;
        size_t limit = load_of(v) + slack;
        if (mine >= limit) {
            corio__loop_wake(v);
            return false;
        }
        if (limit - mine - 1 < room)
            room = limit - mine - 1;
    }
    l->start_credit = room;
    return true;
}
