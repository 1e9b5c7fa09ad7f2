/*
 * stack.h: task stacks.
 *
 * A stack is a stretch of anonymous memory with a guard region at its low
 * end, so running off the bottom faults instead of scribbling over the
 * neighbouring memory (overflow.c turns that fault into a report naming
 * the task).
 *
 * The guard costs no extra VMA where the kernel has MADV_GUARD_INSTALL
 * (Linux 6.13+): with mprotect, every stack is two VMAs and
 * vm.max_map_count (65,530 by default) caps a process near 32k stacks.
 * The first failure with EINVAL switches the whole process to mprotect.
 *
 * Stacks of the runtime's default size come from a per-loop pool, owned by
 * the loop's thread (no lock), in three tiers:
 *
 *   warm   idle, memory resident; reused first (newest first), costs
 *          nothing.
 *   cold   memory given back to the kernel (MADV_DONTNEED); reused with
 *          a page fault or two.
 *   chunk  new stacks are carved from mappings of up to CHUNK_STACKS
 *          stacks (fewer for huge stacks, one if a chunk cannot be had).
 *
 * A task's exit never makes a system call: its stack goes on the warm
 * list, however long it is. Giving memory back costs more than it looks:
 * every MADV_DONTNEED interrupts every CPU running the process to flush
 * its TLB (measured on the reference experiment, 2 vCPUs: ~8 us of the
 * exiting loop's time per stack, 1.2% of the run's wall when every exit
 * past the 256th did it). So the warm stacks beyond the first
 * `warm_limit` are moved to cold in one batch, by corio__stack_pool_trim,
 * which the loop calls when it has been idle for a while or when the
 * surplus has lasted its retention time (sched.c); sorted by address, a
 * run of neighbours costs one call. Memory held is bounded by the loop's
 * peak of live tasks, which held it anyway.
 *
 * Why chunks: mmap and munmap take the process-wide mmap lock for writing,
 * and two loops mapping a stack per task serialise on it. Measured here
 * on the reference experiment, the loops took turns of ~4 ms each instead
 * of running side by side. A chunk costs one mmap per CHUNK_STACKS stacks
 * and nothing is unmapped until the runtime ends.
 *
 * A stack may be taken from one loop's pool and given back to another's
 * (a migrating task, CORIO_TASK_MIGRATE, exits where it was last woken);
 * it is just memory. A steady flow of such tasks from one loop to another
 * would have the first carve chunk after chunk while the second piles
 * them up, so a pool keeps at most as many idle stacks as it has carved
 * and puts the surplus on the runtime's spill list, which a pool empties
 * before it carves. (Without migration a task exits on the loop that
 * gave it its stack, and nothing ever spills.) Chunks are unmapped only
 * when the runtime ends, after every pool and the spill list have
 * forgotten their stacks (corio__stack_pool_forget,
 * corio__stack_spill_forget, then corio__stack_pool_destroy). Stacks of
 * other sizes are mapped and unmapped one by one.
 */
#ifndef CORIO_STACK_H
#define CORIO_STACK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "spin.h"

/* Bytes of guard below every stack: 16 KiB, bigger than a 4 KiB page so
 * that a frame with a few KiB of locals cannot step over it, or one page
 * where pages are bigger (64 KiB on some arm64 kernels: guards and stacks
 * must start on page boundaries, or the kernel refuses the guard). Virtual
 * only. Cached once known; safe in a signal handler from then on. */
size_t corio__stack_guard(void);
/* Tests: make every guard from now on a PROT_NONE page (mprotect), as on
 * kernels without MADV_GUARD_INSTALL (before Linux 6.13), which this
 * process's kernel may have. For the whole process, for good. */
void corio__stack_use_mprotect_guards(void);

typedef struct corio__stack {
    void *lo;       /* lowest usable byte, just above the guard; NULL: none */
    size_t size;    /* usable bytes */
    unsigned vg_id; /* Valgrind's id for the stack (CORIO_VALGRIND builds) */
} corio__stack;

struct corio__pooled_stack;
struct corio__stack_chunk;

/* Surplus stacks of the runtime's default size, shared by its loops'
 * pools (any thread, under `lock`; `count` is also read as a hint). */
typedef struct corio__stack_spill {
    corio__spin lock;
    struct corio__pooled_stack *head; /* headers at the stacks' tops */
    _Atomic size_t count;
    _Atomic size_t dirty; /* of them, memory not given back yet */
} corio__stack_spill;

typedef struct corio__stack_pool {
    size_t size;                       /* usable size of the stacks pooled */
    struct corio__pooled_stack *warm;  /* list, headers at the stacks' tops */
    size_t warm_count, warm_limit;
    corio__stack *cold;                /* array */
    size_t cold_count, cold_cap;
    struct corio__stack_chunk *chunks; /* mappings this pool made */
    char *carve_next;                  /* next unused slot of the newest chunk */
    size_t carve_left;                 /* slots left in it */
    size_t carved;                     /* stacks carved: most idle ones kept */
    corio__stack_spill *spill;         /* where the surplus goes (may be NULL) */
} corio__stack_pool;

/* Largest stack a task may ask for: 1 TiB. */
#define CORIO__STACK_MAX ((size_t)1 << 40)

/* Round a requested stack size to whole pages, at least the minimum.
 * Returns 0 above CORIO__STACK_MAX. */
size_t corio__stack_round(size_t size);

/* Map a stack of `size` usable bytes (already rounded) on its own. 0 or
 * CORIO_ENOMEM. */
int corio__stack_map(corio__stack *st, size_t size);
void corio__stack_unmap(corio__stack *st);

void corio__stack_pool_init(corio__stack_pool *pool, size_t size, size_t warm_limit,
                            corio__stack_spill *spill);
/* Drop every stack from the spill list (runtime teardown, with the pools'
 * corio__stack_pool_forget). */
void corio__stack_spill_forget(corio__stack_spill *spill);
/* Drop every stack from the pool's lists (they all lie in some pool's
 * chunks). Call for every pool before any pool is destroyed. */
void corio__stack_pool_forget(corio__stack_pool *pool);
/* Unmap the chunks this pool mapped. */
void corio__stack_pool_destroy(corio__stack_pool *pool);
/* A stack of `size` bytes: pooled when size matches, else mapped alone.
 * 0 or CORIO_ENOMEM. */
int corio__stack_get(corio__stack_pool *pool, corio__stack *st, size_t size);
/* Would corio__stack_get hand out a warm stack: no syscall, cannot fail? */
static inline bool corio__stack_warm_at_hand(const corio__stack_pool *pool, size_t size)
{
    return size == pool->size && pool->warm;
}
/* Give a stack back: into the pool when it has the pool's size, else
 * unmapped. */
void corio__stack_put(corio__stack_pool *pool, corio__stack *st);
/* Whether a trim would give memory back: more than `warm_limit` warm
 * stacks, or spilled stacks whose memory is still resident. */
bool corio__stack_pool_surplus(const corio__stack_pool *pool);
/* Give back the memory of the warm stacks beyond `warm_limit` (they turn
 * cold) and of the spill list's stacks. The pool's owner only. */
void corio__stack_pool_trim(corio__stack_pool *pool);

/* Whether `addr` lies in the guard region below `st`. */
static inline bool corio__stack_guard_hit(const corio__stack *st, const void *addr)
{
    const char *a = (const char *)addr, *lo = (const char *)st->lo;
    return st->lo && a < lo && a >= lo - corio__stack_guard();
}

#endif /* CORIO_STACK_H */
