/*
 * stack.h: task stacks.
 *
 * A stack is an anonymous private mapping with a guard region at its low
 * end, so running off the bottom faults instead of scribbling over the
 * neighbouring memory (stack_overflow.c turns that fault into a report
 * naming the task).
 *
 * The guard costs no extra VMA where the kernel has MADV_GUARD_INSTALL
 * (Linux 6.13+): with mprotect, every stack is two VMAs and
 * vm.max_map_count (65,530 by default) caps a process near 32k stacks.
 * The first failure with EINVAL switches the whole process to mprotect.
 *
 * Stacks of the runtime's default size are recycled through a per-loop
 * pool (struct corio__stack_pool), owned by the loop's thread: no lock.
 * A stack may be taken from one loop's pool and given back to another's
 * (a stolen task exits on the thief's loop); it is just memory.
 */
#ifndef CORIO_STACK_H
#define CORIO_STACK_H

#include <stdbool.h>
#include <stddef.h>

/* Bytes of guard below every stack. Bigger than a page so that a frame
 * with a few KiB of locals cannot step over it; virtual only. */
#define CORIO__STACK_GUARD ((size_t)16 * 1024)

typedef struct corio__stack {
    void *lo;    /* lowest usable byte, just above the guard; NULL: none */
    size_t size; /* usable bytes */
    unsigned vg_id; /* Valgrind's id for the stack (CORIO_VALGRIND builds) */
} corio__stack;

typedef struct corio__stack_pool {
    struct corio__pooled_stack *free; /* intrusive list, headers at stack tops */
    size_t count;                     /* stacks in the list */
    size_t limit;                     /* most stacks kept; more are unmapped */
    size_t size;                      /* usable size of the stacks pooled */
} corio__stack_pool;

/* Round a requested stack size to whole pages, at least the minimum.
 * Returns 0 if the size is absurd (overflow). */
size_t corio__stack_round(size_t size);

/* Map a new stack of `size` usable bytes (already rounded). 0 or
 * CORIO_ENOMEM. */
int corio__stack_map(corio__stack *st, size_t size);
void corio__stack_unmap(corio__stack *st);

void corio__stack_pool_init(corio__stack_pool *pool, size_t size, size_t limit);
void corio__stack_pool_destroy(corio__stack_pool *pool);
/* A stack of `size` bytes: from the pool when size matches, else mapped. */
int corio__stack_get(corio__stack_pool *pool, corio__stack *st, size_t size);
/* Give a stack back: into the pool when it fits, else unmapped. */
void corio__stack_put(corio__stack_pool *pool, corio__stack *st);

/* Whether `addr` lies in the guard region below `st`. */
static inline bool corio__stack_guard_hit(const corio__stack *st, const void *addr)
{
    const char *a = (const char *)addr, *lo = (const char *)st->lo;
    return st->lo && a < lo && a >= lo - CORIO__STACK_GUARD;
}

#endif /* CORIO_STACK_H */
