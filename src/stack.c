/*
 * stack.c: mapping guarded stacks and recycling them per loop.
 * See stack.h for the design.
 */
#define _GNU_SOURCE
#include "stack.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "corio.h"
#include "sanitize.h"
#include "sys.h"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

/* Smallest stack: the entry frame, a signal frame with AVX-512 state and a
 * little room for the task. */
#define STACK_MIN ((size_t)16 * 1024)

/* 0: untried, 1: MADV_GUARD_INSTALL works, 2: use mprotect. Shared by all
 * runtimes of the process; racing first uses settle on the same answer. */
static _Atomic int guard_mode;

struct corio__pooled_stack {
    struct corio__pooled_stack *next;
    void *lo;
    unsigned vg_id;
};

static size_t page_size(void)
{
    static size_t cached;
    if (!cached)
        cached = (size_t)sysconf(_SC_PAGESIZE);
    return cached;
}

size_t corio__stack_round(size_t size)
{
    size_t page = page_size();
    if (size < STACK_MIN)
        size = STACK_MIN;
    if (size > SIZE_MAX / 2)
        return 0;
    return (size + page - 1) & ~(page - 1);
}

static int install_guard(char *map)
{
    int mode = atomic_load_explicit(&guard_mode, memory_order_relaxed);
    if (mode != 2) {
        if (corio__madvise(map, CORIO__STACK_GUARD, MADV_GUARD_INSTALL) == 0) {
            if (mode == 0)
                atomic_store_explicit(&guard_mode, 1, memory_order_relaxed);
            return 0;
        }
        if (errno != EINVAL)
            return -errno;
        atomic_store_explicit(&guard_mode, 2, memory_order_relaxed);
    }
    return corio__mprotect(map, CORIO__STACK_GUARD, PROT_NONE) == 0 ? 0 : -errno;
}

int corio__stack_map(corio__stack *st, size_t size)
{
    size_t total = size + CORIO__STACK_GUARD;
    char *map = corio__mmap_anon(total);
    if (map == MAP_FAILED) {
        st->lo = NULL;
        return CORIO_ENOMEM;
    }
    int rc = install_guard(map);
    if (rc != 0) {
        corio__munmap(map, total);
        st->lo = NULL;
        /* ENOMEM here is vm.max_map_count: still "no stack". */
        return CORIO_ENOMEM;
    }
    st->lo = map + CORIO__STACK_GUARD;
    st->size = size;
    st->vg_id = corio__sanitize_stack_register(st->lo, size);
    return 0;
}

void corio__stack_unmap(corio__stack *st)
{
    if (!st->lo)
        return;
    corio__sanitize_stack_deregister(st->vg_id);
    corio__munmap((char *)st->lo - CORIO__STACK_GUARD, st->size + CORIO__STACK_GUARD);
    st->lo = NULL;
}

void corio__stack_pool_init(corio__stack_pool *pool, size_t size, size_t limit)
{
    pool->free = NULL;
    pool->count = 0;
    pool->limit = limit;
    pool->size = size;
}

void corio__stack_pool_destroy(corio__stack_pool *pool)
{
    while (pool->free) {
        struct corio__pooled_stack *p = pool->free;
        pool->free = p->next;
        corio__stack st = {p->lo, pool->size, p->vg_id};
        corio__stack_unmap(&st);
    }
    pool->count = 0;
}

int corio__stack_get(corio__stack_pool *pool, corio__stack *st, size_t size)
{
    if (size == pool->size && pool->free) {
        struct corio__pooled_stack *p = pool->free;
        pool->free = p->next;
        pool->count--;
        st->lo = p->lo;
        st->size = size;
        st->vg_id = p->vg_id;
        return 0;
    }
    return corio__stack_map(st, size);
}

void corio__stack_put(corio__stack_pool *pool, corio__stack *st)
{
    if (!st->lo)
        return;
    if (st->size == pool->size && pool->count < pool->limit) {
        /* The header lives at the top of the stack, where the next task's
         * first frame will go: that page is resident already. */
        struct corio__pooled_stack *p =
            (struct corio__pooled_stack *)((char *)st->lo + st->size) - 1;
        corio__sanitize_stack_reuse(st->lo, st->size);
        p->lo = st->lo;
        p->vg_id = st->vg_id;
        p->next = pool->free;
        pool->free = p;
        pool->count++;
        st->lo = NULL;
        return;
    }
    corio__stack_unmap(st);
}
