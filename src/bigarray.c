/*
 * bigarray.c: doubling arrays, malloc'd while small, in 2 MiB-aligned
 * mappings when big (bigarray.h).
 */
#define _GNU_SOURCE
#include "bigarray.h"

#include <string.h>
#include <sys/mman.h>

#include "sys.h"

static bool mapped(size_t size) { return size >= CORIO__BIGARRAY_MAP_MIN; }

/* The length of the mapping that holds `size` bytes. */
static size_t map_len(size_t size)
{
    return (size + CORIO__BIGARRAY_MAP_UNIT - 1) & ~(CORIO__BIGARRAY_MAP_UNIT - 1);
}

/* THP is advice: an array without it works the same, only slower to fault
 * in, so a refusal is not an error. */
static void advise_huge(void *p, size_t len, bool huge)
{
#ifdef MADV_HUGEPAGE
    if (huge)
        (void)corio__madvise(p, len, MADV_HUGEPAGE);
#else
    (void)p, (void)len, (void)huge;
#endif
}

void *corio__bigarray_grow(void *p, size_t old_size, size_t new_size, bool huge)
{
    if (!mapped(new_size))
        return corio__realloc(p, new_size);
    size_t len = map_len(new_size);
    if (mapped(old_size) && len == map_len(old_size))
        return p; /* still fits its mapping */
    void *q = corio__mmap_aligned(len, CORIO__BIGARRAY_MAP_UNIT);
    if (q == MAP_FAILED)
        return NULL;
    advise_huge(q, len, huge);
    if (!mapped(old_size)) {
        if (old_size)
            memcpy(q, p, old_size);
        corio__free(p);
        return q;
    }
    /* Both ends 2 MiB-aligned: the kernel moves whole huge pages. (mremap
     * growing in place, or moving wherever it likes, can leave the array
     * unaligned, and then mostly in 4 KiB pages.) */
    if (corio__mremap_onto(p, map_len(old_size), q, len) != 0)
        return NULL; /* q is released by the call (sys.h) */
    return q;
}

void corio__bigarray_free(void *p, size_t size)
{
    if (!p)
        return;
    if (mapped(size))
        corio__munmap(p, map_len(size));
    else
        corio__free(p);
}
