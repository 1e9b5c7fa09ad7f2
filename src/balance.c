/*
 * balance.c: the load-levelling rules for never-run tasks (balance.h).
 */
#include "balance.h"

#include <stdatomic.h>

static bool is_stale(corio__loop *l, corio__loop *v)
{
    int64_t idle_for = l->now - atomic_load_explicit(&v->activity_ns, memory_order_relaxed);
    return idle_for > CORIO__BALANCE_STALE_NS;
}

/* Will v come for our queued tasks? Only a loop that runs out of work
 * steals; one that has not looked for any within the stale time is busy
 * with tasks of its own (or stuck), however often it polls. */
static bool seeks_work(corio__loop *l, corio__loop *v)
{
    int64_t since = l->now - atomic_load_explicit(&v->seek_ns, memory_order_relaxed);
    return since <= CORIO__BALANCE_STALE_NS;
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
    if (is_stale(l, v))
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
        if (v == l || is_stale(l, v) || !seeks_work(l, v))
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
