/*
 * test_timers.c: a loop's deadlines (src/timer.h), without a runtime: the
 * 4-ary heap and the sorted run together give every entry back exactly
 * once, earliest first, whatever order deadlines arrive in; nothing later
 * than "now" comes out; the earliest deadline is always reported; stale
 * entries (their wait is over) are swept and only live ones are kept; a
 * failed allocation leaves the timers as they were. One test runs them on a
 * real loop: every timed wait that ends early is counted as over.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "bigarray.h"
#include "loop.h"
#include "sys.h"
#include "task.h"
#include "test.h"
#include "timer.h"

/* Stand-ins for waiting tasks: the timers read only the wait word (to
 * tell live entries from stale ones). */
static corio_task *fake_tasks(size_t n)
{
    corio_task *t = aligned_alloc(64, n * sizeof *t);
    CHECK(t != NULL);
    memset(t, 0, n * sizeof *t);
    return t;
}

static uint64_t rng_state = 88172645463325252u;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Deadlines in one of three shapes: increasing (the run's case), random
 * (the heap's), or increasing with every fourth one out of order. */
enum shape { INCREASING, RANDOM, MOSTLY_INCREASING };

static corio_time_t deadline_for(enum shape s, size_t i)
{
    switch (s) {
    case INCREASING:
        return 1000 + (corio_time_t)i * 3 + (corio_time_t)(rng() % 3);
    case RANDOM:
        return 1000 + (corio_time_t)(rng() % 100000);
    case MOSTLY_INCREASING:
        return i % 4 == 3 ? 1000 + (corio_time_t)(rng() % 100000) : 1000 + (corio_time_t)i * 30;
    }
    return 0;
}

/* Add n deadlines of one shape (each task armed with token i + 1), then
 * pop them in steps of "now": every one comes out once, never early,
 * never after a later one, and next() always names the earliest left. */
static void check_order(enum shape s, size_t n, bool huge_pages)
{
    test_baseline base = test_baseline_take();
    corio_task *t = fake_tasks(n);
    corio_time_t *when = malloc(n * sizeof *when);
    bool *seen = calloc(n, sizeof *seen);
    CHECK(when && seen);
    corio__timers tm;
    corio__timers_init(&tm, huge_pages);
    corio_time_t min = INT64_MAX;
    for (size_t i = 0; i < n; i++) {
        when[i] = deadline_for(s, i);
        atomic_store(&t[i].wait, i + 1);
        CHECK_OK(corio__timers_add(&tm, &t[i], i + 1, when[i]));
        if (when[i] < min)
            min = when[i];
        CHECK_EQ(corio__timers_next(&tm), min);
    }
    size_t popped = 0;
    corio_time_t last = 0;
    for (corio_time_t now = 0; popped < n; now += 997) {
        corio__timer_entry e;
        while (corio__timers_pop_due(&tm, now, &e)) {
            size_t i = (size_t)(e.task - t);
            CHECK(i < n);
            CHECK_EQ(e.token, i + 1);
            CHECK(!seen[i]);
            seen[i] = true;
            CHECK_EQ(e.deadline, when[i]);
            CHECK(e.deadline <= now);
            CHECK(e.deadline >= last);
            last = e.deadline;
            popped++;
            corio__timers_wait_over(&tm);
        }
        corio_time_t next = corio__timers_next(&tm);
        CHECK(popped == n ? next == CORIO_FOREVER : next > now);
    }
    CHECK_EQ(corio__timers_next(&tm), CORIO_FOREVER);
    corio__timers_destroy(&tm);
    free(seen);
    free(when);
    free(t);
    CHECK_NO_LEAKS(base);
}

/* 100,000 entries (2.4 MB): the arrays move from malloc to mappings of
 * their own, and then to bigger ones (bigarray.h). */
TEST(increasing_deadlines_come_out_in_order) { check_order(INCREASING, 100000, true); }
TEST(random_deadlines_come_out_in_order) { check_order(RANDOM, 100000, true); }
TEST(mixed_deadlines_come_out_in_order) { check_order(MOSTLY_INCREASING, 100000, false); }

/* The run is a ring: when it fills up after pops, its entries wrap around
 * the end of the array, and doubling it must keep them in order whichever
 * piece is moved. Adds and pops interleave at random (more adds than
 * pops), so the head sits anywhere when the run grows, through every
 * capacity up to a mapped one; each entry comes out once, in order. */
TEST(run_grows_while_wrapped)
{
    test_baseline base = test_baseline_take();
    size_t n = test_scaled(600000);
    if (n < 200000)
        n = 200000; /* past the 2 MiB mapping, whatever the scale */
    corio_task *t = fake_tasks(1);
    atomic_store(&t->wait, 1);
    corio__timers tm;
    corio__timers_init(&tm, true);
    size_t added = 0, popped = 0, grew_wrapped = 0, grew_moving_front = 0;
    while (popped < n) {
        bool add = added < n && (added == popped || rng() % 100 < 60);
        if (add) {
            if (tm.run_len == tm.run_cap && tm.run_head != 0) {
                if (tm.run_head <= tm.run_cap / 2)
                    grew_wrapped++;
                else
                    grew_moving_front++;
            }
            /* The token numbers the entry; deadlines never decrease. */
            CHECK_OK(corio__timers_add(&tm, t, added + 1, (corio_time_t)added));
            added++;
            continue;
        }
        corio__timer_entry e;
        CHECK(corio__timers_pop_due(&tm, INT64_MAX, &e));
        CHECK_EQ(e.token, popped + 1);
        CHECK_EQ(e.deadline, (corio_time_t)popped);
        popped++;
    }
    corio__timer_entry e;
    CHECK(!corio__timers_pop_due(&tm, INT64_MAX, &e));
    CHECK_EQ(tm.len, 0); /* every deadline went to the run */
    /* Both ways of unwrapping were taken at least once. */
    fprintf(stderr, "   grew %zu times moving the tail, %zu moving the front\n", grew_wrapped,
            grew_moving_front);
    CHECK(grew_wrapped > 0 && grew_moving_front > 0);
    corio__timers_destroy(&tm);
    free(t);
    CHECK_NO_LEAKS(base);
}

/* Waits that ended early leave stale entries; once they outnumber the
 * live ones an add sweeps them, and only live entries ever come out. */
TEST(stale_entries_are_swept)
{
    test_baseline base = test_baseline_take();
    size_t n = 20000;
    corio_task *t = fake_tasks(n);
    corio__timers tm;
    corio__timers_init(&tm, false);
    for (size_t i = 0; i < n; i++) {
        atomic_store(&t[i].wait, 7);
        /* Half in order (the run), half not (the heap). */
        corio_time_t d = i % 2 ? 500000 - (corio_time_t)i : 1000 + (corio_time_t)i;
        CHECK_OK(corio__timers_add(&tm, &t[i], 7, d));
    }
    /* Every wait but each tenth ends early: its entry goes stale. */
    size_t live = 0;
    for (size_t i = 0; i < n; i++) {
        if (i % 10 == 0) {
            live++;
            continue;
        }
        atomic_store(&t[i].wait, 8);
        corio__timers_wait_over(&tm);
    }
    CHECK_EQ(tm.len + tm.run_len, n);
    /* The next add sweeps. */
    corio_task *extra = fake_tasks(1);
    atomic_store(&extra->wait, 1);
    CHECK_OK(corio__timers_add(&tm, extra, 1, 2000000));
    CHECK_EQ(tm.len + tm.run_len, live + 1);
    size_t popped = 0;
    corio_time_t last = 0;
    corio__timer_entry e;
    while (corio__timers_pop_due(&tm, INT64_MAX, &e)) {
        CHECK_EQ(atomic_load(&e.task->wait), e.token);
        CHECK(e.deadline >= last);
        last = e.deadline;
        popped++;
    }
    CHECK_EQ(popped, live + 1);
    corio__timers_destroy(&tm);
    free(extra);
    free(t);
    CHECK_NO_LEAKS(base);
}

/* Growing either structure can fail: the ring's failure falls back to the
 * heap; the heap's is reported and nothing else changes. */
TEST(allocation_failure_changes_nothing)
{
    test_baseline base = test_baseline_take();
    size_t n = 64; /* both structures' first capacity */
    corio_task *t = fake_tasks(n + 2);
    corio__timers tm;
    corio__timers_init(&tm, false);
    for (size_t i = 0; i < n; i++) {
        atomic_store(&t[i].wait, 1);
        CHECK_OK(corio__timers_add(&tm, &t[i], 1, 1000 + (corio_time_t)i)); /* run */
    }
    for (size_t i = 0; i < n; i++)
        CHECK_OK(corio__timers_add(&tm, &t[i], 1, 10 + (corio_time_t)i)); /* heap */
    size_t armed = tm.armed;
    atomic_store(&t[n].wait, 1);
    atomic_store(&t[n + 1].wait, 1);
    /* Out of order with the heap full: nowhere to put it. */
    corio__fault_arm(1);
    CHECK_EQ(corio__timers_add(&tm, &t[n], 1, 5), CORIO_ENOMEM);
    corio__fault_arm(0);
    CHECK_EQ(tm.armed, armed);
    CHECK_EQ(corio__timers_next(&tm), 10);
    /* In order with the ring full: the heap takes it instead. */
    corio__fault_arm(1);
    CHECK_OK(corio__timers_add(&tm, &t[n], 1, 5000));
    CHECK(corio__fault_fired());
    corio__fault_arm(0);
    CHECK_EQ(tm.len, n + 1);
    CHECK_EQ(tm.run_len, n);
    CHECK_OK(corio__timers_add(&tm, &t[n + 1], 1, 5));
    CHECK_EQ(corio__timers_next(&tm), 5);
    size_t popped = 0;
    corio_time_t last = 0;
    corio__timer_entry e;
    while (corio__timers_pop_due(&tm, INT64_MAX, &e)) {
        CHECK(e.deadline >= last);
        last = e.deadline;
        popped++;
    }
    CHECK_EQ(popped, 2 * n + 2);
    corio__timers_destroy(&tm);
    free(t);
    CHECK_NO_LEAKS(base);
}

/* A run that has outgrown its mapping must move to a bigger one: a
 * mapping, an advice and a move, any of which can fail. Whichever fails
 * (the k-th call), the deadline still goes in (to the heap if the run
 * could not grow), nothing is lost or reordered, nothing leaks. */
TEST(mapped_run_growth_failure_loses_nothing)
{
    size_t n = 131072; /* 3 MiB of entries: a full 4 MiB mapping's worth */
    corio_task *t = fake_tasks(1);
    atomic_store(&t->wait, 1);
    for (uint64_t k = 1; k <= 4; k++) {
        test_baseline base = test_baseline_take();
        corio__timers tm;
        corio__timers_init(&tm, true);
        for (size_t i = 0; i < n; i++)
            CHECK_OK(corio__timers_add(&tm, t, 1, (corio_time_t)i));
        CHECK_EQ(tm.run_len, tm.run_cap);
        CHECK(tm.run_cap * sizeof(corio__timer_entry) >= CORIO__BIGARRAY_MAP_UNIT);
        corio__fault_arm(k);
        CHECK_OK(corio__timers_add(&tm, t, 1, (corio_time_t)n));
        bool fired = corio__fault_fired();
        corio__fault_arm(0);
        CHECK_EQ(tm.run_len + tm.len, n + 1);
        if (k == 1)
            CHECK(fired && tm.len == 1); /* no new mapping: the heap took it */
        CHECK_OK(corio__timers_add(&tm, t, 1, (corio_time_t)n + 1));
        corio_time_t expect = 0;
        corio__timer_entry e;
        while (corio__timers_pop_due(&tm, INT64_MAX, &e))
            CHECK_EQ(e.deadline, expect++);
        CHECK_EQ(expect, (corio_time_t)n + 2);
        corio__timers_destroy(&tm);
        CHECK_NO_LEAKS(base);
    }
    free(t);
}

/* A failed MREMAP_FIXED may have unmapped its target already, and another
 * thread may have mapped the range again before the call returned
 * (sys.c). Forgetting the target must unmap nothing that is there now:
 * the three states the range can be in after a failed move. */
TEST(failed_move_target_is_forgotten_without_unmapping_others)
{
    size_t len = CORIO__BIGARRAY_MAP_UNIT;
    test_baseline base = test_baseline_take();

    /* Unmapped by the kernel, nobody there: the claim is dropped. */
    char *q = corio__mmap_aligned(len, len);
    CHECK(q != MAP_FAILED);
    CHECK_OK(munmap(q, len));
    corio__forget_failed_target(q, len);
    CHECK_NO_LEAKS(base);
    void *probe = mmap(q, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    CHECK(probe == q); /* the range is free again */
    CHECK_OK(munmap(probe, len));

    /* Unmapped, then mapped again by another thread: left as it is. */
    q = corio__mmap_aligned(len, len);
    CHECK(q != MAP_FAILED);
    CHECK_OK(munmap(q, len));
    char *other = mmap(q, len, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    CHECK(other == q);
    memset(other, 0x5a, len);
    corio__forget_failed_target(q, len);
    for (size_t i = 0; i < len; i += 4096)
        CHECK_EQ(other[i], 0x5a);
    CHECK_OK(corio__munmap(other, len)); /* the test's own: settles the count */
    CHECK_NO_LEAKS(base);

    /* Refused before the kernel unmapped it: ours, left mapped. */
    q = corio__mmap_aligned(len, len);
    CHECK(q != MAP_FAILED);
    q[0] = 1;
    corio__forget_failed_target(q, len);
    CHECK_EQ(q[0], 1);
    CHECK_OK(corio__munmap(q, len));
    CHECK_NO_LEAKS(base);
}

/* ---- on a running loop: waits that end early are counted as over ----
 *
 * Every timed wait that ends before its deadline (here a semaphore
 * acquire answered by the other task) leaves a stale entry behind, and
 * must be counted as over: otherwise the loop believes all its entries
 * live, never sweeps, and a server whose requests carry long timeouts
 * keeps one entry per request it ever served. Two tasks on one loop
 * answer each other 20,000 times, each acquire with an hour's deadline
 * (40,000 waits, none timing out): the heap and the run together must
 * stay under twice the sweep threshold (SWEEP_MIN, timer.c: 4096), and
 * once nobody waits no wait may be counted as armed. */
struct pingpong {
    corio_sem *ping, *pong;
    long rounds;
};

static void *pong_task(void *arg)
{
    struct pingpong *p = arg;
    for (long i = 0; i < p->rounds; i++) {
        CHECK_OK(corio_sem_acquire_until(p->ping, corio_deadline_in(3600 * CORIO_SEC)));
        CHECK_OK(corio_sem_release(p->pong));
    }
    return NULL;
}

static void *main_early_ends(void *arg)
{
    (void)arg;
    /* Not scaled: it has to go well past the sweep threshold. */
    struct pingpong p = {.rounds = 20000};
    CHECK_OK(corio_sem_new(&p.ping, 0));
    CHECK_OK(corio_sem_new(&p.pong, 0));
    corio_task *t;
    CHECK_OK(corio_spawn_on(&t, (unsigned)corio_loop_index(), pong_task, &p));
    const corio__timers *tm = &corio__loop_current()->timers;
    size_t most = 0;
    for (long i = 0; i < p.rounds; i++) {
        CHECK_OK(corio_sem_release(p.ping));
        CHECK_OK(corio_sem_acquire_until(p.pong, corio_deadline_in(3600 * CORIO_SEC)));
        size_t pending = tm->len + tm->run_len;
        if (pending > most)
            most = pending;
    }
    CHECK_OK(corio_join(t, NULL));
    fprintf(stderr, "   at most %zu entries pending over %ld timed waits\n", most,
            2 * p.rounds);
    CHECK_EQ(tm->armed, 0);
    CHECK_LT(most, 2 * 4096);
    corio_sem_free(p.ping);
    corio_sem_free(p.pong);
    return NULL;
}

TEST(early_ends_on_a_running_loop_are_swept)
{
    run_main_checked(1, main_early_ends, NULL);
}

int main(int argc, char **argv)
{
    RUN(increasing_deadlines_come_out_in_order);
    RUN(random_deadlines_come_out_in_order);
    RUN(mixed_deadlines_come_out_in_order);
    RUN(stale_entries_are_swept);
    RUN(allocation_failure_changes_nothing);
    RUN(run_grows_while_wrapped);
    RUN(mapped_run_growth_failure_loses_nothing);
    RUN(failed_move_target_is_forgotten_without_unmapping_others);
    RUN(early_ends_on_a_running_loop_are_swept);
    return test_summary();
}
