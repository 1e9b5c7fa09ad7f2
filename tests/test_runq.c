/*
 * test_runq.c: the stealable run queue (src/runq.h) on its own: the ring,
 * its overflow blocks, stealing, and a push that finds no memory for a
 * block. Tasks here are bare task objects that never run; the queue only
 * moves pointers. The last test goes through corio_spawn.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "runq.h"
#include "sys.h"
#include "task.h"
#include "test.h"

static corio_task *tasks_new(size_t n)
{
    corio_task *t = calloc(n, sizeof *t);
    CHECK(t);
    return t;
}

/* Pop everything, counting each task by its index; fails on a stranger. */
static size_t drain_counting(corio__runq *q, corio_task *base, size_t n, int *seen)
{
    size_t got = 0;
    corio_task *t;
    while ((t = corio__runq_pop(q))) {
        CHECK(t >= base && t < base + n);
        seen[t - base]++;
        got++;
    }
    return got;
}

static void check_each_once(const int *seen, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (seen[i] != 1)
            FAIL_("task %zu seen %d times", i, seen[i]);
}

/* ---- a burst far past the ring goes through overflow blocks ---- */

TEST(burst_through_overflow_blocks)
{
    const size_t n = 100000;
    corio_task *t = tasks_new(n);
    int *seen = calloc(n, sizeof *seen);
    corio__runq q;
    CHECK_OK(corio__runq_init(&q, true));
    for (size_t i = 0; i < n; i++) {
        CHECK(corio__runq_push(&q, &t[i]));
        CHECK_EQ(corio__runq_len(&q), i + 1);
    }
    CHECK(atomic_load(&q.overflow_len) > 0);
    /* Half out, more in (the ring refills from blocks and spills again),
     * then the rest out. */
    for (size_t i = 0; i < n / 2; i++) {
        corio_task *p = corio__runq_pop(&q);
        CHECK(p);
        seen[p - t]++;
    }
    CHECK_EQ(corio__runq_len(&q), n - n / 2);
    CHECK_EQ(drain_counting(&q, t, n, seen), n - n / 2);
    CHECK_EQ(corio__runq_len(&q), 0);
    check_each_once(seen, n);
    corio__runq_destroy(&q);
    free(seen);
    free(t);
}

/* ---- emptied blocks go back to their queue and are used again ---- */

/* A burst big enough for two chunks of blocks, drained half by the owner
 * and half by a thief (whose emptied blocks must come back to the victim,
 * not to the thief), then the same burst again: every block of the second
 * comes from the first's, so no chunk is mapped. A block lost on the way
 * back would not show as a leak (chunks are unmapped whole), only here. */
TEST(emptied_blocks_are_used_again)
{
    const size_t n = 300000; /* ~2,350 blocks of ~1 KiB: two chunks */
    corio_task *t = tasks_new(n);
    int *seen = calloc(n, sizeof *seen);
    corio__runq q, thief;
    CHECK_OK(corio__runq_init(&q, true));
    CHECK_OK(corio__runq_init(&thief, true));
    int64_t maps_before = corio__live_maps(), maps_full = 0;
    for (int round = 0; round < 3; round++) {
        memset(seen, 0, n * sizeof *seen);
        for (size_t i = 0; i < n; i++)
            CHECK(corio__runq_push(&q, &t[i]));
        if (round == 0) {
            maps_full = corio__live_maps();
            CHECK(maps_full >= maps_before + 2);
        }
        CHECK_EQ(corio__live_maps(), maps_full); /* later rounds: all reused */
        size_t got = 0;
        while (got < n / 2) {
            corio_task *p = corio__runq_steal(&thief, &q, SIZE_MAX);
            CHECK(p);
            seen[p - t]++;
            got += 1 + drain_counting(&thief, t, n, seen);
        }
        got += drain_counting(&q, t, n, seen);
        CHECK_EQ(got, n);
        check_each_once(seen, n);
    }
    /* The thief never spilled: it mapped nothing. */
    CHECK_EQ(thief.blocks.nchunks, 0);
    corio__runq_destroy(&q);
    corio__runq_destroy(&thief);
    free(seen);
    free(t);
}

/* ---- no memory for a block: the push says so and queues nothing ---- */

TEST(full_ring_without_memory_refuses)
{
    const size_t n = CORIO__RUNQ_CAP + 1000;
    corio_task *t = tasks_new(n);
    int *seen = calloc(n, sizeof *seen);
    corio__runq q;
    CHECK_OK(corio__runq_init(&q, true));
    for (size_t i = 0; i < CORIO__RUNQ_CAP; i++)
        CHECK(corio__runq_push(&q, &t[i]));
    corio__fault_arm(1);
    CHECK(!corio__runq_push(&q, &t[CORIO__RUNQ_CAP]));
    CHECK(corio__fault_fired());
    corio__fault_arm(0);
    CHECK_EQ(corio__runq_len(&q), CORIO__RUNQ_CAP);
    for (size_t i = CORIO__RUNQ_CAP; i < n; i++)
        CHECK(corio__runq_push(&q, &t[i]));
    CHECK_EQ(drain_counting(&q, t, n, seen), n);
    check_each_once(seen, n);
    corio__runq_destroy(&q);
    free(seen);
    free(t);
}

/* ---- a steal takes half, never more than the thief's ring holds ---- */

TEST(steal_takes_half_within_room)
{
    const size_t n = 2000, mine = CORIO__RUNQ_CAP - 6;
    corio_task *t = tasks_new(n);
    int *seen = calloc(n, sizeof *seen);
    corio__runq victim, thief;
    CHECK_OK(corio__runq_init(&victim, true));
    CHECK_OK(corio__runq_init(&thief, true));
    /* Ring only: half of it, rounded up. */
    for (size_t i = 0; i < 9; i++)
        CHECK(corio__runq_push(&victim, &t[i]));
    corio_task *got = corio__runq_steal(&thief, &victim, SIZE_MAX);
    CHECK(got);
    seen[got - t]++;
    CHECK_EQ(corio__runq_len(&thief), 4);
    CHECK_EQ(corio__runq_len(&victim), 4);
    CHECK_EQ(drain_counting(&thief, t, n, seen), 4);
    /* The thief's ring nearly full: it takes no more than fits. */
    for (size_t i = 9; i < 9 + mine; i++)
        CHECK(corio__runq_push(&thief, &t[i]));
    for (size_t i = 9 + mine; i < n; i++)
        CHECK(corio__runq_push(&victim, &t[i]));
    got = corio__runq_steal(&thief, &victim, SIZE_MAX);
    CHECK(got);
    seen[got - t]++;
    CHECK_EQ(corio__runq_len(&thief), CORIO__RUNQ_CAP);
    CHECK_EQ(atomic_load(&thief.overflow_len), 0);
    /* Victim's ring emptied by its owner: the thief takes from blocks. */
    size_t victim_left = corio__runq_len(&victim);
    CHECK_EQ(drain_counting(&thief, t, n, seen), CORIO__RUNQ_CAP);
    while (atomic_load(&victim.head) != atomic_load(&victim.tail)) {
        corio_task *p = corio__runq_pop(&victim);
        seen[p - t]++;
        victim_left--;
    }
    CHECK(victim_left > 0 && atomic_load(&victim.overflow_len) == victim_left);
    got = corio__runq_steal(&thief, &victim, 50);
    CHECK(got);
    seen[got - t]++;
    CHECK_EQ(corio__runq_len(&thief), 49);
    CHECK_EQ(drain_counting(&thief, t, n, seen), 49);
    CHECK_EQ(drain_counting(&victim, t, n, seen), victim_left - 50);
    check_each_once(seen, n);
    corio__runq_destroy(&victim);
    corio__runq_destroy(&thief);
    free(seen);
    free(t);
}

/* ---- an owner pushing and popping while thieves steal ---- */

#define THIEVES 2

struct race {
    corio__runq victim;
    corio_task *tasks;
    size_t n;
    _Atomic int *seen;
    _Atomic bool done;
};

static void race_count(struct race *r, corio_task *p)
{
    CHECK(p >= r->tasks && p < r->tasks + r->n);
    atomic_fetch_add(&r->seen[p - r->tasks], 1);
}

static void *thief_main(void *arg)
{
    struct race *r = arg;
    corio__runq mine;
    CHECK_OK(corio__runq_init(&mine, true));
    for (;;) {
        bool done = atomic_load(&r->done);
        corio_task *p = corio__runq_steal(&mine, &r->victim, SIZE_MAX);
        if (p)
            race_count(r, p);
        while ((p = corio__runq_pop(&mine)))
            race_count(r, p);
        if (done && !p && corio__runq_len(&r->victim) == 0)
            break;
    }
    corio__runq_destroy(&mine);
    return NULL;
}

TEST(owner_and_thieves_race)
{
    struct race r = {.n = (size_t)test_scaled(2000000)};
    r.tasks = tasks_new(r.n);
    r.seen = calloc(r.n, sizeof *r.seen);
    CHECK(r.seen);
    CHECK_OK(corio__runq_init(&r.victim, true));
    pthread_t th[THIEVES];
    for (int i = 0; i < THIEVES; i++)
        CHECK_OK(-pthread_create(&th[i], NULL, thief_main, &r));
    /* Bursts long enough to spill, with pops in between. */
    size_t next = 0;
    while (next < r.n) {
        size_t burst = 1 + (next * 7919) % 1500;
        for (size_t i = 0; i < burst && next < r.n; i++)
            CHECK(corio__runq_push(&r.victim, &r.tasks[next++]));
        for (size_t i = 0; i < burst / 3; i++) {
            corio_task *p = corio__runq_pop(&r.victim);
            if (p)
                race_count(&r, p);
        }
    }
    corio_task *p;
    while ((p = corio__runq_pop(&r.victim)))
        race_count(&r, p);
    atomic_store(&r.done, true);
    for (int i = 0; i < THIEVES; i++)
        CHECK_OK(-pthread_join(th[i], NULL));
    for (size_t i = 0; i < r.n; i++)
        if (atomic_load(&r.seen[i]) != 1)
            FAIL_("task %zu seen %d times", i, atomic_load(&r.seen[i]));
    corio__runq_destroy(&r.victim);
    free(r.seen);
    free(r.tasks);
}

/* ---- a steal inside a spill's allocation ----
 *
 * A full ring spills its older half into an overflow block: the owner
 * reads head (h), gets a block (the first one of a queue maps the
 * arena's first chunk, a wrapped call), copies slots [h, h + CAP/2) into
 * it, and only then claims them with CAS(head, h, h + CAP/2). A thief
 * may take the same slots in between; the CAS then fails and the copy is
 * thrown away (the pushed task goes into the room the thief made). A
 * spill that moved head without the CAS would queue the stolen half a
 * second time, in the block. The hook steals, from another thread, at
 * exactly the block's mapping. */
struct spill_steal {
    corio__runq *victim, *thief;
    corio_task *got;
};

static void *spill_thief_main(void *arg)
{
    struct spill_steal *s = arg;
    s->got = corio__runq_steal(s->thief, s->victim, SIZE_MAX);
    return NULL;
}

/* Runs in the spill's block allocation, on the owner's thread. */
static void steal_inside_spill(void *arg)
{
    pthread_t th;
    CHECK_OK(-pthread_create(&th, NULL, spill_thief_main, arg));
    CHECK_OK(-pthread_join(th, NULL));
}

TEST(steal_inside_a_spill_is_not_spilled_again)
{
    const size_t n = CORIO__RUNQ_CAP + 1, half = CORIO__RUNQ_CAP / 2;
    corio_task *t = tasks_new(n);
    int *seen = calloc(n, sizeof *seen);
    corio__runq q, thief;
    CHECK_OK(corio__runq_init(&q, true));
    CHECK_OK(corio__runq_init(&thief, true));
    for (size_t i = 0; i < CORIO__RUNQ_CAP; i++)
        CHECK(corio__runq_push(&q, &t[i]));
    struct spill_steal s = {&q, &thief, NULL};
    corio__fault_arm_hook(1, steal_inside_spill, &s); /* the block's chunk */
    CHECK(corio__runq_push(&q, &t[CORIO__RUNQ_CAP]));
    CHECK(corio__fault_fired());
    corio__fault_arm(0);
    /* The thief took the older half; the push went into its room. */
    CHECK(s.got == &t[0]);
    seen[0]++;
    CHECK_EQ(corio__runq_len(&thief), half - 1);
    CHECK_EQ(atomic_load(&q.overflow_len), 0);
    CHECK_EQ(corio__runq_len(&q), CORIO__RUNQ_CAP - half + 1);
    CHECK_EQ(drain_counting(&thief, t, n, seen), half - 1);
    CHECK_EQ(drain_counting(&q, t, n, seen), CORIO__RUNQ_CAP - half + 1);
    check_each_once(seen, n);
    corio__runq_destroy(&q);
    corio__runq_destroy(&thief);
    free(seen);
    free(t);
}

/* ---- a spawn that finds no memory for a block still runs its task ---- */

static void *main_spawn_without_block(void *arg)
{
    (void)arg;
    /* One loop: nothing steals, so the ring fills after CAP spawns and the
     * next one spills. */
    enum { N = CORIO__RUNQ_CAP + 100 };
    corio_task *t[N];
    for (int i = 0; i < (int)CORIO__RUNQ_CAP; i++)
        CHECK_OK(corio_spawn(&t[i], test_ret_arg, PTR_OF(i)));
    corio__fault_arm(1);
    CHECK_OK(corio_spawn(&t[CORIO__RUNQ_CAP], test_ret_arg, PTR_OF(CORIO__RUNQ_CAP)));
    CHECK(corio__fault_fired());
    corio__fault_arm(0);
    for (int i = CORIO__RUNQ_CAP + 1; i < N; i++)
        CHECK_OK(corio_spawn(&t[i], test_ret_arg, PTR_OF(i)));
    for (int i = 0; i < N; i++) {
        void *r = NULL;
        CHECK_OK(corio_join(t[i], &r));
        CHECK_EQ(INT_OF(r), i);
    }
    return NULL;
}

TEST(spawn_without_block_memory_still_runs)
{
    run_main_checked(1, main_spawn_without_block, NULL);
}

int main(int argc, char **argv)
{
    RUN(burst_through_overflow_blocks);
    RUN(emptied_blocks_are_used_again);
    RUN(full_ring_without_memory_refuses);
    RUN(steal_takes_half_within_room);
    RUN(owner_and_thieves_race);
    RUN(steal_inside_a_spill_is_not_spilled_again);
    RUN(spawn_without_block_memory_still_runs);
    return test_summary();
}
