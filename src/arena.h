/*
 * arena.h: memory for objects that one loop allocates by the million and
 * that live until the runtime ends or go back to the same loop: task slabs
 * and light tasks' saved stacks.
 *
 * Why not malloc: a million sleeping tasks are ~340 MB of fresh memory,
 * and on our VMs a first-touch page fault costs 2-3.5 us, so faults were a
 * third of spawn+join and most of the time it took to start a million
 * sleepers (bench/RESULTS.md). The arena maps 2 MiB-aligned chunks and,
 * in a runtime configured with huge_pages, asks for transparent huge
 * pages (MADV_HUGEPAGE) once a loop has outgrown its first chunk, so the
 * kernel faults in 2 MiB at a time: touching 184 MiB took 35 ms instead
 * of 102 ms, when the host had the memory backed (when not, far longer:
 * corio.h, huge_pages). A loop that never outgrows its first chunk keeps
 * ordinary pages and touches only what it uses.
 *
 * Blocks up to CORIO__ARENA_MAX_BLOCK come in size classes of
 * CORIO__ARENA_GRAIN bytes with a free list each; bigger ones go to
 * malloc. Nothing returns to the system before corio__arena_release: like
 * malloc's arenas, a loop keeps the memory of its busiest moment.
 *
 * Owner thread only; no locks.
 */
#ifndef CORIO_ARENA_H
#define CORIO_ARENA_H

#include <stdbool.h>
#include <stddef.h>

#define CORIO__ARENA_CHUNK ((size_t)2 << 20)
#define CORIO__ARENA_GRAIN 64
#define CORIO__ARENA_MAX_BLOCK 4096
#define CORIO__ARENA_CLASSES (CORIO__ARENA_MAX_BLOCK / CORIO__ARENA_GRAIN)

struct corio__arena_chunk;

typedef struct corio__arena {
    char *next, *end;                  /* bump region of the newest chunk */
    struct corio__arena_chunk *chunks; /* every chunk, newest first */
    size_t nchunks;
    bool huge_pages;                   /* may ask for THP past the first chunk */
    void *free[CORIO__ARENA_CLASSES];  /* recycled blocks by size class */
} corio__arena;

/* Whether a block of `size` bytes comes from the arena's size classes
 * (otherwise from malloc). */
static inline bool corio__arena_small(size_t size)
{
    return size <= CORIO__ARENA_MAX_BLOCK;
}

/* `size` rounded up to a whole number of grains. */
static inline size_t corio__arena_round(size_t size)
{
    return (size + CORIO__ARENA_GRAIN - 1) & ~(size_t)(CORIO__ARENA_GRAIN - 1);
}

/* The usable size of corio__arena_alloc(size): its size class, or `size`
 * itself for a block that comes from malloc. */
static inline size_t corio__arena_block_size(size_t size)
{
    return corio__arena_small(size) ? corio__arena_round(size) : size;
}

/* A block of `size` bytes (at most CORIO__ARENA_CHUNK / 4) that is never
 * given back on its own, aligned to CORIO__ARENA_GRAIN; NULL when memory
 * ran out. */
void *corio__arena_carve(corio__arena *a, size_t size);
/* A block of at least `size` bytes (any size), aligned to
 * CORIO__ARENA_GRAIN, or NULL when memory ran out. */
void *corio__arena_alloc(corio__arena *a, size_t size);
/* Give back a block of corio__arena_alloc(size); NULL is ignored. */
void corio__arena_free(corio__arena *a, void *p, size_t size);
/* Unmap everything; blocks still out become invalid. */
void corio__arena_release(corio__arena *a);

#endif /* CORIO_ARENA_H */
