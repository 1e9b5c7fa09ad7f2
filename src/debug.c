/*
 * debug.c: a snapshot of every running runtime, written to a descriptor.
 *
 * For the moment something has hung: a test's watchdog (tests/test.h)
 * calls it before aborting, so that a hang seen once in thousands of
 * runs leaves a record of what each loop and each started task was doing
 * (the same facts tools/gdb/corio.py shows in a live process). It reads
 * other threads' fields without synchronisation: call it for diagnosis,
 * never as part of normal work. The loops need not have stopped (a hang
 * may leave one loop stuck while the others keep starting and ending
 * tasks), so what it follows from one task to the next is read with
 * peek(), which cannot fault. Formats with snprintf and writes with
 * write(2): no stdio buffers, which a signal handler must not touch.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
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

/*
 * Copy len bytes at src into dst; false where they cannot be read. A task
 * that ends under the walk of a live list leaves the dump a run state gone
 * back with its stack (unmapped, for a stack not of the default size) or,
 * once its object is reused, a `run` that is a spawn's argument: plain
 * reads there crashed the watchdog's dump (test_config
 * debug_dump_while_loops_run). process_vm_readv on our own process reads
 * through the kernel, which answers EFAULT instead. Where the call is
 * refused (a seccomp filter, an emulator), plain reads, as before.
 */
static bool peek(void *dst, const void *src, size_t len)
{
    static _Atomic bool refused;
    if (!atomic_load_explicit(&refused, memory_order_relaxed)) {
        struct iovec to = {dst, len}, from = {(void *)src, len};
        ssize_t n = process_vm_readv(getpid(), &to, 1, &from, 1, 0);
        if (n == (ssize_t)len)
            return true;
        if (n >= 0 || errno == EFAULT)
            return false;
        atomic_store_explicit(&refused, true, memory_order_relaxed);
    }
    memcpy(dst, src, len);
    return true;
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
    /* Read once: the loop may set it to NULL between two reads (task
     * objects themselves stay mapped while the runtime lives). */
    corio_task *current = *(corio_task *volatile *)&l->current;
    say(fd,
        "  loop %u: parked %d stopping %d live %zu joining %zu ready %zu runq %zu roam %zu "
        "inbox %s current %llu tick %u queue_picks %zu light_stalled %d timers armed %zu, "
        "next in %lld us\n",
        l->index, atomic_load(&l->parked), l->stopping, l->live_count, l->joining, ready,
        corio__runq_len(&l->runq), corio__runq_len(&l->roam),
        atomic_load(&l->inbox) ? "non-empty" : "empty",
        current ? (unsigned long long)current->id : 0ULL, l->tick, l->queue_picks,
        l->light_stalled, l->timers.armed,
        next == CORIO_FOREVER ? -1LL : (long long)((next - now) / 1000));
    unsigned shown = 0;
    for (corio_task *p = l->live; p;) {
        if (++shown > 64) {
            say(fd, "    ... (%zu live in all)\n", l->live_count);
            break;
        }
        corio_task t;
        if (!peek(&t, p, sizeof t)) {
            say(fd, "    ... (the list changed under the dump)\n");
            break;
        }
        uint64_t w = atomic_load(&t.wait);
        unsigned what = t.wait_what;
        say(fd, "    task %llu: %s, waits on %s, wait word %s%s (gen %llu), flags 0x%x%s\n",
            (unsigned long long)t.id, state_name(t.state),
            what < CORIO__WAITS_KINDS ? corio__wait_names[what] : "?", wait_word_name(w),
            (w & CORIO__WAIT_CANCEL) ? "+cancel" : "",
            (unsigned long long)(w / CORIO__WAIT_GEN_ONE), t.flags,
            atomic_load(&t.cancel_sticky) ? ", cancelled for good" : "");
        /* Not &t.run->live_next: run may be anything, NULL included. */
        uintptr_t next_at = (uintptr_t)t.run + offsetof(struct corio__task_run, live_next);
        if (!peek(&p, (const void *)next_at, sizeof p)) {
            say(fd, "    ... (the list changed under the dump)\n");
            break;
        }
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
