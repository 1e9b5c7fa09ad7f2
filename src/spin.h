/*
 * spin.h: the short lock behind corio's cross-loop objects.
 *
 * Channels, semaphores and the like are touched by tasks on several loops,
 * but only for a handful of instructions at a time (queue a waiter, copy
 * an element). A spinlock costs one atomic exchange when free, and a
 * loop thread must never sleep in the kernel on a lock while its other
 * tasks wait. After a few dozen spins the holder has probably been
 * preempted, so the waiter yields its CPU to let it finish.
 */
#ifndef CORIO_SPIN_H
#define CORIO_SPIN_H

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

typedef struct corio__spin {
    _Atomic bool locked;
} corio__spin;

#define CORIO__SPIN_INIT {false}

static inline void corio__spin_pause(unsigned *spins)
{
    if (++*spins < 64) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        __asm__ volatile("yield");
#endif
    } else {
        sched_yield();
    }
}

static inline void corio__spin_lock(corio__spin *s)
{
    unsigned spins = 0;
    for (;;) {
        if (!atomic_load_explicit(&s->locked, memory_order_relaxed) &&
            !atomic_exchange_explicit(&s->locked, true, memory_order_acquire))
            return;
        corio__spin_pause(&spins);
    }
}

static inline void corio__spin_unlock(corio__spin *s)
{
    atomic_store_explicit(&s->locked, false, memory_order_release);
}

#endif /* CORIO_SPIN_H */
