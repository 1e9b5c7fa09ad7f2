/*
 * bigarray.h: memory for the arrays a loop grows by doubling and that can
 * reach megabytes: its timers' heap and sorted run.
 *
 * Why not realloc: a million sleepers put 24 MB of deadlines in a loop's
 * run, and glibc serves that from mappings of ordinary 4 KiB pages, each
 * faulted in on first touch, and every doubling touches fresh pages again.
 * On the paravirtualised VMs we measure on, such a fault costs ~17 us
 * (first touch at 0.23 GB/s, against 3-8 GB/s in 2 MiB pages): the timer
 * arrays were 72% of the page faults of `corio-bench --only
 * sleepers_1m_wall_s` (perf record -e page-faults).
 *
 * So an array stays with malloc while it is small, and from
 * CORIO__BIGARRAY_MAP_MIN on lives in a mapping of its own, a whole number
 * of 2 MiB units, 2 MiB-aligned, with transparent huge pages where the
 * runtime asks for them (corio_config's huge_pages). It grows within its
 * mapping for free, and past it by moving its pages (mremap) onto a
 * bigger aligned mapping: nothing is copied or faulted in again. The cost
 * is up to one 2 MiB huge page per array of a loop that ever had more than
 * ~2,700 deadlines pending. Owner thread only, like the arrays themselves.
 */
#ifndef CORIO_BIGARRAY_H
#define CORIO_BIGARRAY_H

#include <stdbool.h>
#include <stddef.h>

/* Arrays from this size on get a mapping of their own... */
#define CORIO__BIGARRAY_MAP_MIN ((size_t)64 << 10)
/* ...of a multiple of this, aligned to it (a huge page). */
#define CORIO__BIGARRAY_MAP_UNIT ((size_t)2 << 20)

/* The array p of old_size bytes (NULL and 0 at first) with room for
 * new_size > old_size bytes, contents kept; NULL when memory runs out, p
 * then still valid. huge: may ask for transparent huge pages. */
void *corio__bigarray_grow(void *p, size_t old_size, size_t new_size, bool huge);
/* Free an array of `size` bytes (the size it last grew to). */
void corio__bigarray_free(void *p, size_t size);

#endif /* CORIO_BIGARRAY_H */
