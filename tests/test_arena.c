/*
 * test_arena.c: the per-loop arena (src/arena.h) that task slabs and light
 * tasks' saved stacks come from: alignment, no overlap across chunks,
 * recycling by size class, big blocks through malloc, huge-page advice
 * from the second chunk on when the runtime is told huge_pages or
 * CORIO_HUGE_PAGES=1 (and none by default), clean failure when mapping
 * fails, nothing left mapped after release. Then the same memory under a
 * running runtime: a million light sleepers and a million spawn+join,
 * leaving nothing behind.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "arena.h"
#include "sys.h"
#include "task.h"
#include "test.h"

/* ---- carving ---- */

TEST(carve_aligned_disjoint_across_chunks)
{
    test_baseline base = test_baseline_take();
    corio__arena a = {0};
    /* Enough 200-byte blocks to fill three chunks; each is written whole
     * with its own byte, so any overlap shows up when read back. */
    size_t block = 200, per_chunk = CORIO__ARENA_CHUNK / corio__arena_round(block);
    size_t n = 3 * per_chunk;
    unsigned char **p = malloc(n * sizeof *p);
    CHECK(p != NULL);
    for (size_t i = 0; i < n; i++) {
        p[i] = corio__arena_carve(&a, block);
        CHECK(p[i] != NULL);
        CHECK_EQ((uintptr_t)p[i] % CORIO__ARENA_GRAIN, 0);
        memset(p[i], (int)(i & 0xff), block);
    }
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < block; k++)
            if (p[i][k] != (unsigned char)(i & 0xff)) {
                CHECK_EQ(p[i][k], (unsigned char)(i & 0xff));
                break;
            }
    CHECK_GE(a.nchunks, 3);
    CHECK_EQ(corio__live_maps(), base.maps + (int64_t)a.nchunks);
    corio__arena_release(&a);
    CHECK_EQ(a.nchunks, 0);
    CHECK_NO_LEAKS(base);
    free(p);
}

/* ---- size classes ---- */

TEST(blocks_recycle_within_their_class)
{
    test_baseline base = test_baseline_take();
    corio__arena a = {0};
    void *x = corio__arena_alloc(&a, 200); /* class 256 */
    void *y = corio__arena_alloc(&a, 100); /* class 128 */
    CHECK(x && y && x != y);
    corio__arena_free(&a, x, 200);
    /* Another size of the same class gets the freed block back... */
    CHECK_PTR_EQ(corio__arena_alloc(&a, 250), x);
    /* ...a different class does not. */
    corio__arena_free(&a, y, 100);
    void *z = corio__arena_alloc(&a, 300);
    CHECK(z != y && z != x);
    CHECK_PTR_EQ(corio__arena_alloc(&a, 65), y);
    /* Size 0 is a valid request, and NULL frees are ignored. */
    void *zero = corio__arena_alloc(&a, 0);
    CHECK(zero != NULL);
    corio__arena_free(&a, zero, 0);
    corio__arena_free(&a, NULL, 64);
    CHECK_PTR_EQ(corio__arena_alloc(&a, 1), zero);
    corio__arena_release(&a);
    CHECK_NO_LEAKS(base);
}

TEST(big_blocks_go_to_malloc)
{
    test_baseline base = test_baseline_take();
    corio__arena a = {0};
    size_t big = CORIO__ARENA_MAX_BLOCK + 1;
    CHECK(!corio__arena_small(big));
    char *p = corio__arena_alloc(&a, big);
    CHECK(p != NULL);
    memset(p, 0x5a, big);
    CHECK_EQ(corio__live_allocs(), base.allocs + 1);
    CHECK_EQ(a.nchunks, 0); /* no chunk was needed */
    corio__arena_free(&a, p, big);
    CHECK_NO_LEAKS(base);
    corio__arena_release(&a);
}

/* arena.h promises CORIO__ARENA_GRAIN alignment for a block of any size,
 * so a big one must not take malloc's 16-byte alignment. Several sizes:
 * one could be aligned by chance. */
TEST(big_blocks_keep_the_grain_alignment)
{
    test_baseline base = test_baseline_take();
    corio__arena a = {0};
    enum { N = 16 };
    char *p[N];
    for (size_t i = 0; i < N; i++) {
        size_t size = CORIO__ARENA_MAX_BLOCK + 1 + i * 100;
        p[i] = corio__arena_alloc(&a, size);
        CHECK(p[i] != NULL);
        CHECK_EQ((uintptr_t)p[i] % CORIO__ARENA_GRAIN, 0);
        memset(p[i], 0x5a, size);
    }
    for (size_t i = 0; i < N; i++)
        corio__arena_free(&a, p[i], CORIO__ARENA_MAX_BLOCK + 1 + i * 100);
    CHECK_NO_LEAKS(base);
    corio__arena_release(&a);
}

/* ---- huge pages ---- */

/* VmFlags of the mapping that contains p (from /proc/self/smaps), or "". */
static void vm_flags_of(const void *p, char *out, size_t cap)
{
    out[0] = 0;
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return;
    char line[512];
    bool inside = false;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            inside = (uintptr_t)p >= lo && (uintptr_t)p < hi;
            continue;
        }
        if (inside && strncmp(line, "VmFlags:", 8) == 0) {
            size_t n = strlen(line + 8);
            if (n >= cap)
                n = cap - 1;
            memcpy(out, line + 8, n);
            out[n] = 0;
            break;
        }
    }
    fclose(f);
}

static bool kernel_takes_hugepage_advice(void)
{
#ifdef MADV_HUGEPAGE
    size_t len = CORIO__ARENA_CHUNK;
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return false;
    bool ok = madvise(m, len, MADV_HUGEPAGE) == 0;
    munmap(m, len);
    return ok;
#else
    return false;
#endif
}

/* Huge-page advice shows in /proc/self/smaps only on a real kernel that
 * has transparent huge pages. */
#define SKIP_UNLESS_HUGE_PAGES_SEEN()                                           \
    do {                                                                        \
        TEST_SKIP_UNDER_QEMU("its /proc/self/smaps shows the emulator's own mappings"); \
        TEST_SKIP_IF(!kernel_takes_hugepage_advice(), "here",                   \
                     "this kernel has no transparent huge pages");              \
    } while (0)

TEST(huge_pages_from_the_second_chunk)
{
    SKIP_UNLESS_HUGE_PAGES_SEEN();
    corio__arena a = {.huge_pages = true};
    char *first = corio__arena_carve(&a, 64);
    CHECK(first != NULL);
    CHECK_EQ((uintptr_t)(first - CORIO__ARENA_GRAIN) % CORIO__ARENA_CHUNK, 0);
    char flags[512];
    vm_flags_of(first, flags, sizeof flags);
    CHECK(flags[0] != 0);
    CHECK(strstr(flags, " hg") == NULL); /* a small loop keeps small pages */
    char *second = NULL;
    while (a.nchunks < 2) {
        second = corio__arena_carve(&a, CORIO__ARENA_CHUNK / 4);
        CHECK(second != NULL);
    }
    CHECK_EQ((uintptr_t)(second - CORIO__ARENA_GRAIN) % CORIO__ARENA_CHUNK, 0);
    vm_flags_of(second, flags, sizeof flags);
    CHECK_STR_CONTAINS(flags, " hg");
    corio__arena_release(&a);

    /* Not told to (corio_config.huge_pages), it never asks. */
    corio__arena small = {.huge_pages = false};
    while (small.nchunks < 3)
        CHECK(corio__arena_carve(&small, CORIO__ARENA_CHUNK / 4) != NULL);
    vm_flags_of(small.next - 1, flags, sizeof flags);
    CHECK(flags[0] != 0);
    CHECK(strstr(flags, " hg") == NULL);
    corio__arena_release(&small);
}

/* ---- the runtime's setting ---- */

/* Mappings of this process the kernel was asked to back with huge pages. */
static int hugepage_mappings(void)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return -1;
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmFlags:", 8) == 0 && strstr(line, " hg"))
            n++;
    fclose(f);
    return n;
}

/* Task objects that outgrow the spawning loop's first chunk (a chunk
 * holds fewer than CHUNK / sizeof(task) of them: slabs have headers): the
 * loop's arena then has a second chunk, huge pages or not. */
#define BURST (3 * (long)(CORIO__ARENA_CHUNK / sizeof(struct corio_task)) / 2)

/* Count huge-page mappings after a burst of spawns. The task objects are
 * what fills the arena, so the tasks need not run: they are spawned onto
 * this loop (nobody steals them) and discarded unrun when main returns.
 * (Run, each would cost a TSan fiber, a 768 KiB memset: 49,000 of them
 * four times outlasted the test's timeout on our AMD VM.) */
static void *main_count_huge(void *arg)
{
    unsigned me = (unsigned)corio_loop_index();
    for (long i = 0; i < BURST; i++) {
        corio_task *t;
        CHECK_OK(corio_spawn_on(&t, me, test_ret_arg, PTR_OF(i)));
    }
    *(int *)arg = hugepage_mappings();
    return NULL;
}

static int huge_mappings_with(bool huge_pages, const char *env)
{
    if (env)
        setenv("CORIO_HUGE_PAGES", env, 1);
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = 2;
    cfg.huge_pages = huge_pages;
    int n = -1;
    run_main_cfg(&cfg, main_count_huge, &n);
    unsetenv("CORIO_HUGE_PAGES");
    return n;
}

TEST(runtime_asks_for_huge_pages_only_when_told)
{
    SKIP_UNLESS_HUGE_PAGES_SEEN();
    int before = hugepage_mappings();
    CHECK_EQ(huge_mappings_with(false, NULL), before);
    CHECK_EQ(huge_mappings_with(false, "0"), before);
    CHECK_GT(huge_mappings_with(true, NULL), before);
    CHECK_GT(huge_mappings_with(true, "0"), before); /* either one asks */
    CHECK_GT(huge_mappings_with(false, "1"), before);
}

/* ---- failure ---- */

TEST(mapping_failure_is_a_clean_null)
{
    test_baseline base = test_baseline_take();
    corio__arena a = {0};
    corio__fault_arm(1);
    CHECK(corio__arena_carve(&a, 64) == NULL);
    CHECK(corio__fault_fired());
    corio__fault_arm(0);
    CHECK_EQ(a.nchunks, 0);
    /* The arena is still usable once memory is back. */
    CHECK(corio__arena_alloc(&a, 64) != NULL);
    corio__arena_release(&a);
    CHECK_NO_LEAKS(base);
}

/* ---- under a runtime ---- */

#define MANY 1000000

static void *sleeper(void *arg)
{
    corio_sleep(20 * CORIO_MSEC);
    return arg;
}

static void *main_many(void *arg)
{
    long n = test_scaled_starts(MANY);
    corio_task **t = malloc((size_t)n * sizeof *t);
    CHECK(t != NULL);
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    o.flags = (uintptr_t)arg ? CORIO_TASK_LIGHT : 0;
    corio_fn fn = (uintptr_t)arg ? sleeper : test_ret_arg;
    for (long i = 0; i < n; i++)
        CHECK_OK(corio_spawn_ex(&t[i], fn, PTR_OF(i + 1), &o));
    for (long i = 0; i < n; i++) {
        void *r = NULL;
        CHECK_OK(corio_join(t[i], &r));
        CHECK_PTR_EQ(r, PTR_OF(i + 1));
    }
    free(t);
    return NULL;
}

TEST(million_light_sleepers_leave_nothing)
{
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = 2;
    run_main_cfg(&cfg, main_many, PTR_OF(1));
}

TEST(million_spawn_join_leave_nothing)
{
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = 2;
    run_main_cfg(&cfg, main_many, PTR_OF(0));
}

int main(int argc, char **argv)
{
    RUN(carve_aligned_disjoint_across_chunks);
    RUN(blocks_recycle_within_their_class);
    RUN(big_blocks_go_to_malloc);
    RUN(big_blocks_keep_the_grain_alignment);
    RUN(huge_pages_from_the_second_chunk);
    RUN(mapping_failure_is_a_clean_null);
    RUN(runtime_asks_for_huge_pages_only_when_told);
    RUN(million_light_sleepers_leave_nothing);
    RUN(million_spawn_join_leave_nothing);
    return test_summary();
}
