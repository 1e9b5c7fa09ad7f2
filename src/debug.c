/*
 * debug.c: a snapshot of every running runtime, written to a descriptor.
 *
 * For the moment something has hung: a test's watchdog (tests/test.h)
 * calls it before aborting, so that a hang seen once in thousands of
 * runs leaves a record of what each loop and each started task was doing
 * (the same facts tools/gdb/corio.py shows in a live process). It reads
 * other threads' fields without synchronisation, which is only sound
 * because by then they have stopped moving: call it for diagnosis, never
 * as part of normal work. Formats with snprintf and writes with write(2):
 * no stdio buffers, which a signal handler must not touch.
 */
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "debug.h"
#include "loop.h"
#include "task.h"

static void say(int fd, const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    ssize_t w = write(fd, line, len);
    (void)w;
}

static const char *state_name(unsigned state)
{
    static const char *const names[] = {"new", "ready", "running", "waiting", "done"};
    return state < sizeof names / sizeof names[0] ? names[state] : "?";
}

static const char *wait_word_name(uint64_t w)
{
    switch (w & CORIO__WAIT_STATE_MASK) {
    case CORIO__WAIT_IDLE:
        return "idle";
    case CORIO__WAIT_ARMED:
        return "armed";
    case CORIO__WAIT_FIRED:
        return "fired";
    default:
        return "?";
    }
}

static void dump_loop(int fd, corio__loop *l, corio_time_t now)
{
    size_t ready = 0;
    for (corio_task *t = l->ready_head; t && ready < 1000000; t = t->next)
        ready++;
    corio_time_t next = corio__timers_next(&l->timers);
    say(fd,
        "  loop %u: parked %d stopping %d live %zu joining %zu ready %zu runq %zu roam %zu "
        "inbox %s current %llu tick %u queue_picks %zu light_stalled %d timers armed %zu, "
        "next in %lld us\n",
        l->index, atomic_load(&l->parked), l->stopping, l->live_count, l->joining, ready,
        corio__runq_len(&l->runq), corio__runq_len(&l->roam),
        atomic_load(&l->inbox) ? "non-empty" : "empty",
        l->current ? (unsigned long long)l->current->id : 0ULL, l->tick, l->queue_picks,
        l->light_stalled, l->timers.armed,
        next == CORIO_FOREVER ? -1LL : (long long)((next - now) / 1000));
    unsigned shown = 0;
    for (corio_task *t = l->live; t; t = t->run->live_next) {
        if (++shown > 64) {
            say(fd, "    ... (%zu live in all)\n", l->live_count);
            break;
        }
        uint64_t w = atomic_load(&t->wait);
        unsigned what = t->wait_what;
        say(fd, "    task %llu: %s, waits on %s, wait word %s%s (gen %llu), flags 0x%x%s\n",
            (unsigned long long)t->id, state_name(t->state),
            what < CORIO__WAITS_KINDS ? corio__wait_names[what] : "?", wait_word_name(w),
            (w & CORIO__WAIT_CANCEL) ? "+cancel" : "",
            (unsigned long long)(w / CORIO__WAIT_GEN_ONE), t->flags,
            atomic_load(&t->cancel_sticky) ? ", cancelled for good" : "");
    }
}

void corio__debug_dump(int fd)
{
    corio_time_t now = corio_now();
    unsigned n = 0;
    for (corio__runtime *rt = corio__debug_runtimes; rt; rt = rt->debug_next, n++) {
        say(fd, "runtime %u: %u loops, stopping %d, active loops %u, parked %d, searching %d\n",
            n, rt->nloops, atomic_load(&rt->stopping), atomic_load(&rt->active_loops),
            atomic_load(&rt->nparked), atomic_load(&rt->nsearching));
        for (unsigned i = 0; i < rt->nloops; i++)
            dump_loop(fd, rt->loops[i], now);
    }
    if (!n)
        say(fd, "no corio runtime is running\n");
}
