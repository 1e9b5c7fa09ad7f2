/*
 * sanitize.h: telling ASan, TSan and Valgrind about corio's stacks.
 *
 * Checkers assume one stack per thread. corio runs many stacks per thread
 * and switches between them behind the checkers' backs, which without help
 * makes ASan report false stack overflows, TSan see every task of a loop
 * as one thread, and Valgrind lose track of which memory is stack. Each
 * checker has an interface for exactly this; the calls are compiled in by
 * the matching build option (CORIO_ASAN, CORIO_TSAN, CORIO_VALGRIND) and
 * are empty otherwise.
 *
 *   ASan:     __sanitizer_start_switch_fiber before every switch (NULL as
 *             the fake-stack save when the context leaving is dead),
 *             __sanitizer_finish_switch_fiber after it, and on the first
 *             entry into a new context.
 *   TSan:     one fiber per task (__tsan_create_fiber / destroy) and
 *             __tsan_switch_to_fiber right before each switch; flags 0 so
 *             a switch orders the two contexts, as it really does.
 *   Valgrind: VALGRIND_STACK_REGISTER / DEREGISTER for every stack.
 */
#ifndef CORIO_SANITIZE_H
#define CORIO_SANITIZE_H

#include <stddef.h>

#include "ctx.h"

#if defined(__SANITIZE_ADDRESS__)
#define CORIO__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CORIO__ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define CORIO__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CORIO__TSAN 1
#endif
#endif

#ifdef CORIO__ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef CORIO__TSAN
#include <sanitizer/tsan_interface.h>
#endif
#ifdef CORIO_VALGRIND
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#endif

/* Per-context checker state: embedded in every task and in every loop's
 * scheduler context. Empty in a normal build. */
typedef struct corio__san {
#ifdef CORIO__ASAN
    void *fake_stack;         /* ASan's fake stack of this context while out */
    const void *stack_bottom; /* this context's stack, for the switch in */
    size_t stack_size;
#endif
#ifdef CORIO__TSAN
    void *tsan_fiber;
#endif
    /* Empty otherwise (a GNU C extension, size 0): the run state of a
     * light task must fit one cache line. */
} corio__san;

/* Describe a context's stack (tasks: their stack; loops: the thread's). */
static inline void corio__san_set_stack(corio__san *s, const void *lo, size_t size)
{
#ifdef CORIO__ASAN
    s->fake_stack = NULL;
    s->stack_bottom = lo;
    s->stack_size = size;
#else
    (void)s, (void)lo, (void)size;
#endif
}

/* A task is about to run for the first time / has ended. */
static inline void corio__san_task_begin(corio__san *s)
{
#ifdef CORIO__TSAN
    s->tsan_fiber = __tsan_create_fiber(0);
#else
    (void)s;
#endif
}

/* Call from a context other than the dead one (TSan cannot destroy the
 * fiber it runs on). */
static inline void corio__san_task_end(corio__san *s)
{
#ifdef CORIO__TSAN
    if (s->tsan_fiber)
        __tsan_destroy_fiber(s->tsan_fiber);
    s->tsan_fiber = NULL;
#else
    (void)s;
#endif
}

/* The thread's own context (a loop's scheduler). */
static inline void corio__san_thread_context(corio__san *s, const void *lo, size_t size)
{
    corio__san_set_stack(s, lo, size);
#ifdef CORIO__TSAN
    s->tsan_fiber = __tsan_get_current_fiber();
#endif
}

/* Switch from one context to another. `from_dies`: the context leaving
 * will never be resumed (a task that finished). */
static inline void corio__san_switch(corio__ctx *fc, corio__san *fs, corio__ctx *tc,
                                     corio__san *ts, int from_dies)
{
#ifdef CORIO__ASAN
    __sanitizer_start_switch_fiber(from_dies ? NULL : &fs->fake_stack, ts->stack_bottom,
                                   ts->stack_size);
#endif
#ifdef CORIO__TSAN
    __tsan_switch_to_fiber(ts->tsan_fiber, 0);
#endif
    corio__ctx_switch(fc, tc);
#ifdef CORIO__ASAN
    __sanitizer_finish_switch_fiber(fs->fake_stack, NULL, NULL);
#endif
    (void)fs, (void)ts, (void)from_dies;
}

/* First thing a new context does: complete the switch that started it. */
static inline void corio__san_first_entry(void)
{
#ifdef CORIO__ASAN
    __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
#endif
}

/* Stack memory life cycle. */
static inline unsigned corio__sanitize_stack_register(void *lo, size_t size)
{
#ifdef CORIO__ASAN
    __asan_unpoison_memory_region(lo, size);
#endif
#ifdef CORIO_VALGRIND
    return VALGRIND_STACK_REGISTER(lo, (char *)lo + size);
#else
    (void)lo, (void)size;
    return 0;
#endif
}

static inline void corio__sanitize_stack_deregister(unsigned id)
{
#ifdef CORIO_VALGRIND
    VALGRIND_STACK_DEREGISTER(id);
#else
    (void)id;
#endif
}

/* Light tasks: the scheduler copies frames off and onto the shared stack
 * while running on its own. Valgrind considers memory below a stack's
 * pointer dead; these mark the copied range as live data first. */
static inline void corio__sanitize_stack_readable(void *p, size_t len)
{
#ifdef CORIO_VALGRIND
    VALGRIND_MAKE_MEM_DEFINED(p, len);
#else
    (void)p, (void)len;
#endif
}

static inline void corio__sanitize_stack_writable(void *p, size_t len)
{
#ifdef CORIO_VALGRIND
    VALGRIND_MAKE_MEM_UNDEFINED(p, len);
#else
    (void)p, (void)len;
#endif
}

/* A stack is being reused by another task: frames of the dead task never
 * returned, so their ASan redzones are still poisoned. */
static inline void corio__sanitize_stack_reuse(void *lo, size_t size)
{
#ifdef CORIO__ASAN
    __asan_unpoison_memory_region(lo, size);
#else
    (void)lo, (void)size;
#endif
}

#endif /* CORIO_SANITIZE_H */
