/*
 * stack.c: guarded stacks, carved from chunks and recycled per loop.
 * See stack.h for the design.
 */
#define _GNU_SOURCE
#include "stack.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
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
/* Stacks per chunk mapping: 64 default stacks are 9 MiB of address space,
 * and one mmap instead of 64. Huge stacks (stack_size may be up to 1 TiB)
 * come fewer to a chunk, so that a chunk stays within CHUNK_BYTES of
 * address space: 64 stacks of 1 TiB would not fit in a 47-bit address
 * space at all. */
#define CHUNK_STACKS 64
#define CHUNK_BYTES ((size_t)1 << 30)
/* The guard, where pages are no bigger than it. */
#define GUARD_MIN ((size_t)16 * 1024)

/* 0: untried, 1: MADV_GUARD_INSTALL works, 2: use mprotect. Shared by all
 * runtimes of the process; racing first uses settle on the same answer. */
static _Atomic int guard_mode;

struct corio__pooled_stack {
    struct corio__pooled_stack *next;
    void *lo;
    unsigned vg_id;
    bool dirty; /* on the spill list, memory not yet given back */
};

struct corio__stack_chunk {
    struct corio__stack_chunk *next;
    void *map;
    size_t len;
};

static size_t page_size(void)
{
    static _Atomic size_t cached;
    size_t p = atomic_load_explicit(&cached, memory_order_relaxed);
    if (!p) {
        p = (size_t)sysconf(_SC_PAGESIZE);
        atomic_store_explicit(&cached, p, memory_order_relaxed);
    }
    return p;
}

size_t corio__stack_guard(void)
{
    size_t page = page_size();
    return page > GUARD_MIN ? page : GUARD_MIN;
}

size_t corio__stack_round(size_t size)
{
    size_t page = page_size();
    if (size < STACK_MIN)
        size = STACK_MIN;
    if (size > CORIO__STACK_MAX)
        return 0;
    return (size + page - 1) & ~(page - 1);
}

void corio__stack_use_mprotect_guards(void)
{
    atomic_store_explicit(&guard_mode, 2, memory_order_relaxed);
}

/* Make [guard, guard + corio__stack_guard()) fault on any access. */
static int install_guard(char *guard)
{
    int mode = atomic_load_explicit(&guard_mode, memory_order_relaxed);
    if (mode != 2) {
        if (corio__madvise(guard, corio__stack_guard(), MADV_GUARD_INSTALL) == 0) {
            if (mode == 0)
                atomic_store_explicit(&guard_mode, 1, memory_order_relaxed);
            return 0;
        }
        if (errno != EINVAL)
            return CORIO_ENOMEM;
        atomic_store_explicit(&guard_mode, 2, memory_order_relaxed);
    }
    /* ENOMEM here is vm.max_map_count: still "no stack". */
    return corio__mprotect(guard, corio__stack_guard(), PROT_NONE) == 0 ? 0 : CORIO_ENOMEM;
}

/*
 * Fault in the top page of a stack that is about to be used: the task's
 * run state and first frame go there, so it would fault on first touch
 * anyway. From a system call it costs a fraction of a fault where the
 * fault exception itself is what is dear, as on VMs whose paging the host
 * shadows: 2.8 us against 13 us per page on ours, which made starting
 * 10,000 fresh tasks take 0.2 s (bench/RESULTS.md). On bare metal the
 * two cost about the same. Advice only: if it fails, the page faults in
 * on first touch as before.
 */
static void prefault_top(const corio__stack *st)
{
    size_t page = page_size();
    corio__prefault((char *)st->lo + st->size - page, page);
}

int corio__stack_map(corio__stack *st, size_t size)
{
    size_t total = size + corio__stack_guard();
    char *map = corio__mmap_anon(total);
    st->lo = NULL;
    if (map == MAP_FAILED)
        return CORIO_ENOMEM;
    if (install_guard(map) != 0) {
        corio__munmap(map, total);
        return CORIO_ENOMEM;
    }
    st->lo = map + corio__stack_guard();
    st->size = size;
    st->vg_id = corio__sanitize_stack_register(st->lo, size);
    prefault_top(st);
    return 0;
}

void corio__stack_unmap(corio__stack *st)
{
    if (!st->lo)
        return;
    corio__sanitize_stack_deregister(st->vg_id);
    corio__munmap((char *)st->lo - corio__stack_guard(), st->size + corio__stack_guard());
    st->lo = NULL;
}

void corio__stack_pool_init(corio__stack_pool *pool, size_t size, size_t warm_limit,
                            corio__stack_spill *spill)
{
    *pool = (corio__stack_pool){.size = size, .warm_limit = warm_limit, .spill = spill};
}

void corio__stack_spill_forget(corio__stack_spill *spill)
{
    corio__spin_lock(&spill->lock);
    while (spill->head) {
        struct corio__pooled_stack *p = spill->head;
        spill->head = p->next;
        corio__sanitize_stack_deregister(p->vg_id);
    }
    atomic_store_explicit(&spill->count, 0, memory_order_relaxed);
    atomic_store_explicit(&spill->dirty, 0, memory_order_relaxed);
    corio__spin_unlock(&spill->lock);
}

/* The header of an idle stack lives in its top bytes. */
static struct corio__pooled_stack *header_of(const corio__stack *st)
{
    return (struct corio__pooled_stack *)((char *)st->lo + st->size) - 1;
}

/* A stack this pool has no room for: to the spill list, memory and all
 * (a trim gives it back, corio__stack_pool_trim). */
static void spill_push(corio__stack_spill *spill, corio__stack *st)
{
    struct corio__pooled_stack *p = header_of(st);
    p->lo = st->lo;
    p->vg_id = st->vg_id;
    p->dirty = true;
    corio__spin_lock(&spill->lock);
    p->next = spill->head;
    spill->head = p;
    atomic_fetch_add_explicit(&spill->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&spill->dirty, 1, memory_order_relaxed);
    corio__spin_unlock(&spill->lock);
    st->lo = NULL;
}

static bool spill_pop(corio__stack_spill *spill, corio__stack *st, size_t size)
{
    if (!atomic_load_explicit(&spill->count, memory_order_relaxed))
        return false;
    corio__spin_lock(&spill->lock);
    struct corio__pooled_stack *p = spill->head;
    if (p) {
        spill->head = p->next;
        atomic_fetch_sub_explicit(&spill->count, 1, memory_order_relaxed);
        if (p->dirty)
            atomic_fetch_sub_explicit(&spill->dirty, 1, memory_order_relaxed);
    }
    corio__spin_unlock(&spill->lock);
    if (!p)
        return false;
    st->lo = p->lo;
    st->size = size;
    st->vg_id = p->vg_id;
    return true;
}

void corio__stack_pool_forget(corio__stack_pool *pool)
{
    while (pool->warm) {
        struct corio__pooled_stack *p = pool->warm;
        pool->warm = p->next;
        corio__sanitize_stack_deregister(p->vg_id);
    }
    pool->warm_count = 0;
    for (size_t i = 0; i < pool->cold_count; i++)
        corio__sanitize_stack_deregister(pool->cold[i].vg_id);
    corio__free(pool->cold);
    pool->cold = NULL;
    pool->cold_count = pool->cold_cap = 0;
}

void corio__stack_pool_destroy(corio__stack_pool *pool)
{
    corio__stack_pool_forget(pool);
    while (pool->chunks) {
        struct corio__stack_chunk *c = pool->chunks;
        pool->chunks = c->next;
        corio__munmap(c->map, c->len);
        corio__free(c);
    }
    pool->carve_next = NULL;
    pool->carve_left = 0;
}

/* Carve a never-used stack from the newest chunk, mapping a chunk first
 * if needed. */
static int carve(corio__stack_pool *pool, corio__stack *st)
{
    size_t stride = pool->size + corio__stack_guard();
    if (pool->carve_left == 0) {
        struct corio__stack_chunk *c = corio__malloc(sizeof *c);
        if (!c)
            return CORIO_ENOMEM;
        size_t n = CHUNK_BYTES / stride;
        n = n < 1 ? 1 : n > CHUNK_STACKS ? CHUNK_STACKS : n;
        c->len = stride * n;
        c->map = corio__mmap_anon(c->len);
        if (c->map == MAP_FAILED && n > 1) {
            /* Address space short: one stack may still fit. */
            n = 1;
            c->len = stride;
            c->map = corio__mmap_anon(c->len);
        }
        if (c->map == MAP_FAILED) {
            corio__free(c);
            return CORIO_ENOMEM;
        }
        c->next = pool->chunks;
        pool->chunks = c;
        pool->carve_next = c->map;
        pool->carve_left = n;
    }
    char *slot = pool->carve_next;
    /* The slot is used up even if its guard fails: the chunk is unmapped
     * whole at the end. It counts as carved only once it is a stack, as
     * the count caps how many idle stacks this pool keeps. */
    pool->carve_next += stride;
    pool->carve_left--;
    int rc = install_guard(slot);
    if (rc != 0)
        return rc;
    pool->carved++;
    st->lo = slot + corio__stack_guard();
    st->size = pool->size;
    st->vg_id = corio__sanitize_stack_register(st->lo, st->size);
    prefault_top(st);
    return 0;
}

int corio__stack_get(corio__stack_pool *pool, corio__stack *st, size_t size)
{
    if (size != pool->size)
        return corio__stack_map(st, size);
    if (pool->warm) {
        struct corio__pooled_stack *p = pool->warm;
        pool->warm = p->next;
        pool->warm_count--;
        st->lo = p->lo;
        st->size = size;
        st->vg_id = p->vg_id;
        return 0;
    }
    if (pool->cold_count) {
        *st = pool->cold[--pool->cold_count];
        prefault_top(st); /* a trim gave all of its memory back */
        return 0;
    }
    if (pool->spill && spill_pop(pool->spill, st, size))
        return 0;
    return carve(pool, st);
}

void corio__stack_put(corio__stack_pool *pool, corio__stack *st)
{
    if (!st->lo)
        return;
    if (st->size != pool->size) {
        corio__stack_unmap(st);
        return;
    }
    corio__sanitize_stack_reuse(st->lo, st->size);
    if (pool->spill && pool->warm_count + pool->cold_count >= pool->carved) {
        spill_push(pool->spill, st);
        return;
    }
    /* The header lives at the top of the stack, where the next task's
     * first frame will go: that page is resident already. No system call
     * here, however many are idle: corio__stack_pool_trim gives the
     * surplus back later, in one go. */
    struct corio__pooled_stack *p = header_of(st);
    p->lo = st->lo;
    p->vg_id = st->vg_id;
    p->next = pool->warm;
    pool->warm = p;
    pool->warm_count++;
    st->lo = NULL;
}

bool corio__stack_pool_surplus(const corio__stack_pool *pool)
{
    return pool->warm_count > pool->warm_limit ||
           (pool->spill && atomic_load_explicit(&pool->spill->dirty, memory_order_relaxed));
}

/* Room in the cold array for n more; returns how many fit (fewer when
 * memory is short). */
static size_t cold_reserve(corio__stack_pool *pool, size_t n)
{
    if (pool->cold_cap - pool->cold_count >= n)
        return n;
    size_t cap = pool->cold_cap ? pool->cold_cap * 2 : 256;
    if (cap < pool->cold_count + n)
        cap = pool->cold_count + n;
    corio__stack *cold = corio__realloc(pool->cold, cap * sizeof *cold);
    if (cold) {
        pool->cold = cold;
        pool->cold_cap = cap;
        return n;
    }
    return pool->cold_cap - pool->cold_count;
}

static int by_address(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const corio__stack *)a)->lo;
    uintptr_t y = (uintptr_t)((const corio__stack *)b)->lo;
    return (x > y) - (x < y);
}

/* MADV_DONTNEED the stacks (sorted by address) with one call per run of
 * neighbours in a chunk: each call costs a TLB shootdown on every CPU
 * running the process, whatever its length. The guards between
 * neighbours are in the range: MADV_GUARD_INSTALL markers and PROT_NONE
 * both survive MADV_DONTNEED (guard pages are never populated). */
static void release_runs(const corio__stack *st, size_t n, size_t size)
{
    for (size_t i = 0; i < n;) {
        char *lo = st[i].lo, *end = lo + size;
        size_t j = i + 1;
        while (j < n && (char *)st[j].lo == end + corio__stack_guard()) {
            end = (char *)st[j].lo + size;
            j++;
        }
        /* Failure only means the memory stays resident. */
        corio__madvise(lo, (size_t)(end - lo), MADV_DONTNEED);
        i = j;
    }
}

/* Give back the memory of the spill list's dirty stacks, but for the page
 * each one's header is on. The list is taken whole while this runs (a
 * pool finding it empty meanwhile carves: harmless). */
static void spill_clean(corio__stack_spill *spill, size_t size)
{
    if (!atomic_load_explicit(&spill->dirty, memory_order_relaxed))
        return;
    corio__spin_lock(&spill->lock);
    struct corio__pooled_stack *head = spill->head;
    size_t count = atomic_load_explicit(&spill->count, memory_order_relaxed);
    spill->head = NULL;
    atomic_store_explicit(&spill->count, 0, memory_order_relaxed);
    atomic_store_explicit(&spill->dirty, 0, memory_order_relaxed);
    corio__spin_unlock(&spill->lock);
    if (!head)
        return;
    size_t keep = page_size();
    struct corio__pooled_stack *tail = head;
    for (struct corio__pooled_stack *p = head; p; p = p->next) {
        if (p->dirty && size > keep)
            corio__madvise(p->lo, size - keep, MADV_DONTNEED);
        p->dirty = false;
        tail = p;
    }
    corio__spin_lock(&spill->lock);
    tail->next = spill->head;
    spill->head = head;
    atomic_fetch_add_explicit(&spill->count, count, memory_order_relaxed);
    corio__spin_unlock(&spill->lock);
}

void corio__stack_pool_trim(corio__stack_pool *pool)
{
    if (pool->warm_count > pool->warm_limit) {
        size_t n = cold_reserve(pool, pool->warm_count - pool->warm_limit);
        corio__stack *batch = pool->cold + pool->cold_count;
        for (size_t i = 0; i < n; i++) {
            struct corio__pooled_stack *p = pool->warm;
            pool->warm = p->next;
            batch[i] = (corio__stack){.lo = p->lo, .size = pool->size, .vg_id = p->vg_id};
        }
        pool->warm_count -= n;
        qsort(batch, n, sizeof *batch, by_address);
        release_runs(batch, n, pool->size);
        pool->cold_count += n;
    }
    if (pool->spill)
        spill_clean(pool->spill, pool->size);
}
