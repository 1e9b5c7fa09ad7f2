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

static size_t load_of(corio__loop *v)
{
    return atomic_load_explicit(&v->load, memory_order_relaxed) + corio__runq_len(&v->runq);
}

size_t corio__balance_own_load(corio__loop *l)
{
    return l->live_count + corio__runq_len(&l->runq);
}

size_t corio__balance_steal_allowance(corio__loop *l, corio__loop *v, size_t mine)
{
    size_t queued = corio__runq_len(&v->runq);
    if (queued == 0)
        return 0;
    if (is_stale(l, v))
        return queued;
    size_t theirs = atomic_load_explicit(&v->load, memory_order_relaxed) + queued;
    return theirs > mine + 1 ? (theirs - mine) / 2 : 0;
}

bool corio__balance_may_start_new(corio__loop *l)
{
    corio__runtime *rt = l->rt;
    /* Cheap exit for the common case of short tasks: nothing to level. */
    if (rt->nloops < 2 || l->live_count < CORIO__BALANCE_MIN_SLACK)
        return true;
    size_t slack = l->live_count / 100;
    if (slack < CORIO__BALANCE_MIN_SLACK)
        slack = CORIO__BALANCE_MIN_SLACK;
    for (unsigned i = 0; i < rt->nloops; i++) {
        corio__loop *v = rt->loops[i];
        if (v == l || is_stale(l, v))
            continue;
        if (l->live_count >= load_of(v) + slack) {
            corio__loop_wake(v);
            return false;
        }
    }
    return true;
}
