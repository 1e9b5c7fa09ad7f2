/*
 * arena.c: per-loop chunks, size classes and huge pages (arena.h).
 */
#define _GNU_SOURCE
#include "arena.h"

#include <stdint.h>
#include <sys/mman.h>

#include "sys.h"

struct corio__arena_chunk {
    struct corio__arena_chunk *next;
};

/* The chunk header takes one grain so that blocks stay grain-aligned. */
#define CHUNK_HEADER CORIO__ARENA_GRAIN

static bool arena_grow(corio__arena *a)
{
    char *map = corio__mmap_aligned(CORIO__ARENA_CHUNK, CORIO__ARENA_CHUNK);
    if (map == MAP_FAILED)
        return false;
    /* Only a loop that outgrew its first chunk is worth a 2 MiB page at a
     * time, or its whole chunk faulted in by one call: it is carving
     * objects by the thousand and will touch all of it soon. Advice that
     * is refused (no THP in this kernel, no MADV_POPULATE_WRITE) changes
     * nothing but speed. */
    if (a->nchunks > 0) {
#ifdef MADV_HUGEPAGE
        if (a->huge_pages)
            corio__madvise(map, CORIO__ARENA_CHUNK, MADV_HUGEPAGE);
        else
#endif
            corio__prefault(map, CORIO__ARENA_CHUNK);
    }
    struct corio__arena_chunk *c = (struct corio__arena_chunk *)map;
    c->next = a->chunks;
    a->chunks = c;
    a->nchunks++;
    a->next = map + CHUNK_HEADER;
    a->end = map + CORIO__ARENA_CHUNK;
    return true;
}

void *corio__arena_carve(corio__arena *a, size_t size)
{
    size = corio__arena_round(size);
    if ((size_t)(a->end - a->next) < size && !arena_grow(a))
        return NULL;
    void *p = a->next;
    a->next += size;
    return p;
}

void *corio__arena_alloc(corio__arena *a, size_t size)
{
    /* Aligned like the small blocks (arena.h): malloc gives only 16. */
    if (!corio__arena_small(size))
        return corio__aligned_alloc(CORIO__ARENA_GRAIN, size);
    if (size == 0)
        size = 1;
    size_t cls = corio__arena_round(size) / CORIO__ARENA_GRAIN - 1;
    void *p = a->free[cls];
    if (p) {
        a->free[cls] = *(void **)p;
        return p;
    }
    return corio__arena_carve(a, size);
}

void corio__arena_free(corio__arena *a, void *p, size_t size)
{
    if (!p)
        return;
    if (!corio__arena_small(size)) {
        corio__free(p);
        return;
    }
    if (size == 0)
        size = 1;
    size_t cls = corio__arena_round(size) / CORIO__ARENA_GRAIN - 1;
    *(void **)p = a->free[cls];
    a->free[cls] = p;
}

void corio__arena_release(corio__arena *a)
{
    struct corio__arena_chunk *c = a->chunks;
    while (c) {
        struct corio__arena_chunk *next = c->next;
        corio__munmap(c, CORIO__ARENA_CHUNK);
        c = next;
    }
    *a = (corio__arena){.huge_pages = a->huge_pages};
}
