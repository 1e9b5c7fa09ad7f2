/*
 * test_light.c: light tasks (CORIO_TASK_LIGHT), which run on their loop's
 * shared stack and have their frames copied out while suspended and back
 * in when they resume. Locals must survive, at the same addresses, however
 * deep the frames and however the tasks interleave.
 */
#include <sched.h>
#include <stdatomic.h>
#include <sys/resource.h>

#include "arena.h"
#include "loop.h"
#include "sys.h"
#include "task.h"
#include "test.h"

static corio_spawn_opts light_opts(int loop)
{
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    o.flags = CORIO_TASK_LIGHT;
    o.loop = loop;
    return o;
}

/* ---- locals across suspensions ---- */

#define WORDS 48

static _Atomic long pattern_errors, resumes;

static void *pattern_task(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
    uint64_t local[WORDS];
    uint64_t *where = local;
    uint64_t rng = seed;
    int home = corio_loop_index();
    for (int i = 0; i < WORDS; i++)
        local[i] = seed ^ ((uint64_t)i * 0x100000001b3ull);
    for (int round = 0; round < 30; round++) {
        int rc;
        switch (test_rand(&rng) % 3) {
        case 0:
            rc = corio_yield();
            break;
        case 1:
            rc = corio_sleep((int64_t)(test_rand(&rng) % 500) * CORIO_USEC);
            break;
        default:
            rc = corio_sleep(0);
            break;
        }
        atomic_fetch_add_explicit(&resumes, 1, memory_order_relaxed);
        if (rc != 0 || where != local || corio_loop_index() != home)
            atomic_fetch_add(&pattern_errors, 1);
        for (int i = 0; i < WORDS; i++)
            if (local[i] != (seed ^ ((uint64_t)i * 0x100000001b3ull)))
                atomic_fetch_add(&pattern_errors, 1);
        /* change the pattern in a way the next check knows */
        seed += 1;
        for (int i = 0; i < WORDS; i++)
            local[i] = seed ^ ((uint64_t)i * 0x100000001b3ull);
    }
    return PTR_OF(seed - (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull - 1);
}

static void *main_patterns(void *arg)
{
    enum { N = 1000 };
    static corio_task *t[N];
    static void *res[N];
    for (intptr_t i = 0; i < N; i++) {
        corio_spawn_opts o = light_opts(i % 3 == 0 ? (int)(i % 2) : -1);
        CHECK_OK(corio_spawn_ex(&t[i], pattern_task, PTR_OF(i), &o));
    }
    CHECK_OK(corio_gather(t, N, res));
    for (int i = 0; i < N; i++)
        CHECK_EQ(INT_OF(res[i]), 30);
    return NULL;
}

TEST(locals_survive_suspension)
{
    atomic_store(&pattern_errors, 0);
    atomic_store(&resumes, 0);
    run_main_checked(2, main_patterns, NULL);
    CHECK_EQ(atomic_load(&resumes), 1000 * 30);
    CHECK_EQ(atomic_load(&pattern_errors), 0);
}

/* ---- deep recursion with a suspension at the bottom ---- */

#define DEPTH 2000

static _Atomic long deep_errors;

static __attribute__((noinline)) uint64_t descend(int depth, uint64_t tag, int how)
{
    volatile uint64_t frame[8]; /* ~64 bytes of locals per frame */
    for (int i = 0; i < 8; i++)
        frame[i] = tag * 1000003u + (uint64_t)depth * 8 + (uint64_t)i;
    uint64_t below = 0;
    if (depth < DEPTH) {
        below = descend(depth + 1, tag, how);
    } else {
        /* the bottom: suspend with the whole chain of frames live */
        for (int k = 0; k < 3; k++) {
            int rc = how == 0 ? corio_sleep(2 * CORIO_MSEC) : corio_yield();
            if (rc != 0)
                atomic_fetch_add(&deep_errors, 1);
        }
    }
    for (int i = 0; i < 8; i++)
        if (frame[i] != tag * 1000003u + (uint64_t)depth * 8 + (uint64_t)i)
            atomic_fetch_add(&deep_errors, 1);
    return below + 1;
}

static void *deep_task(void *arg)
{
    uint64_t tag = (uint64_t)(uintptr_t)arg;
    return PTR_OF(descend(0, tag, (int)(tag % 2)));
}

static void *main_deep(void *arg)
{
    /* Several deep tasks on one loop, so each suspension really moves
     * ~200 KiB of frames out and back in. */
    enum { N = 6 };
    corio_task *t[N];
    void *res[N];
    unsigned me = (unsigned)corio_loop_index();
    for (intptr_t i = 0; i < N; i++) {
        corio_spawn_opts o = light_opts(i < 4 ? (int)me : -1);
        CHECK_OK(corio_spawn_ex(&t[i], deep_task, PTR_OF(i + 1), &o));
    }
    CHECK_OK(corio_gather(t, N, res));
    for (int i = 0; i < N; i++)
        CHECK_EQ(INT_OF(res[i]), DEPTH + 1);
    return NULL;
}

TEST(deep_recursion)
{
    atomic_store(&deep_errors, 0);
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = 2;
    cfg.stack_size = 2 * 1024 * 1024; /* the shared stack; room for sanitizer frames */
    run_main_cfg(&cfg, main_deep, NULL);
    CHECK_EQ(atomic_load(&deep_errors), 0);
}

/* ---- light and regular tasks joining each other ---- */

static void *leaf(void *arg)
{
    corio_sleep((INT_OF(arg) % 3) * 100 * CORIO_USEC);
    return PTR_OF(INT_OF(arg) * 2);
}

/* arg: bit 0 = child light, bit 1 = child pinned to the other loop,
 * bits 2.. = value */
static void *parent(void *arg)
{
    intptr_t v = INT_OF(arg);
    int loop = (v & 2) ? (corio_loop_index() + 1) % (int)corio_loop_count() : -1;
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    o.flags = (v & 1) ? CORIO_TASK_LIGHT : 0;
    o.loop = loop;
    /* locals of the parent must survive the join too */
    volatile intptr_t keep[16];
    for (int i = 0; i < 16; i++)
        keep[i] = v * 31 + i;
    corio_task *c[3];
    for (int i = 0; i < 3; i++)
        if (corio_spawn_ex(&c[i], leaf, PTR_OF((v >> 2) + i), &o) != 0)
            return PTR_OF(-1);
    void *r0;
    if (corio_join(c[0], &r0) != 0)
        return PTR_OF(-2);
    void *rest[2];
    if (corio_gather(&c[1], 2, rest) != 0)
        return PTR_OF(-3);
    for (int i = 0; i < 16; i++)
        if (keep[i] != v * 31 + i)
            return PTR_OF(-4);
    return PTR_OF(INT_OF(r0) + INT_OF(rest[0]) + INT_OF(rest[1]));
}

static void *main_mixed(void *arg)
{
    enum { N = 400 };
    static corio_task *t[N];
    static void *res[N];
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    for (intptr_t i = 0; i < N; i++) {
        o.flags = (i & 4) ? CORIO_TASK_LIGHT : 0;
        CHECK_OK(corio_spawn_ex(&t[i], parent, PTR_OF(i), &o));
    }
    CHECK_OK(corio_gather(t, N, res));
    for (intptr_t i = 0; i < N; i++) {
        intptr_t b = i >> 2;
        CHECK_EQ(INT_OF(res[i]), 2 * (b + b + 1 + b + 2));
    }
    return NULL;
}

TEST(light_and_regular_join_each_other)
{
    run_main_checked(2, main_mixed, NULL);
    run_main_checked(4, main_mixed, NULL);
}

/* main itself may wait on light tasks, and a light task can be main's
 * only company on the loop */
static void *main_light_company(void *arg)
{
    for (int i = 0; i < 200; i++) {
        corio_spawn_opts o = light_opts(corio_loop_index());
        corio_task *t;
        CHECK_OK(corio_spawn_ex(&t, leaf, PTR_OF(i), &o));
        if (i % 2)
            CHECK_OK(corio_yield());
        void *r;
        CHECK_OK(corio_join(t, &r));
        CHECK_EQ(INT_OF(r), 2 * i);
    }
    return NULL;
}

TEST(light_beside_main)
{
    run_main_checked(2, main_light_company, NULL);
}

/* ---- light tasks in run_blocking and cancellation ---- */

static void *add_one(void *arg) { return PTR_OF(INT_OF(arg) + 1); }

static _Atomic int light_ready;

static void *light_blocking(void *arg)
{
    volatile intptr_t keep = INT_OF(arg) * 7;
    void *r;
    for (int i = 0; i < 5; i++) {
        if (corio_run_blocking(add_one, PTR_OF(keep + i), &r) != 0)
            return PTR_OF(-1);
        if (INT_OF(r) != keep + i + 1)
            return PTR_OF(-2);
    }
    atomic_fetch_add(&light_ready, 1);
    /* Cancelled by main, once every task has got here: stretched for
     * slow lanes, where the last may get here seconds after the first. */
    int rc = corio_sleep(10 * CORIO_SEC * TEST_SLOW);
    if (rc != CORIO_ECANCELED)
        return PTR_OF(-3);
    return PTR_OF(keep);
}

static void *main_light_blocking(void *arg)
{
    enum { N = 64 };
    corio_task *t[N];
    void *res[N];
    for (intptr_t i = 0; i < N; i++) {
        corio_spawn_opts o = light_opts(-1);
        CHECK_OK(corio_spawn_ex(&t[i], light_blocking, PTR_OF(i), &o));
    }
    while (atomic_load(&light_ready) < N)
        CHECK_OK(corio_sleep(CORIO_MSEC));
    CHECK_OK(corio_sleep(CORIO_MSEC));
    for (int i = 0; i < N; i++)
        CHECK_OK(corio_cancel(t[i]));
    CHECK_OK(corio_gather(t, N, res));
    for (intptr_t i = 0; i < N; i++)
        CHECK_EQ(INT_OF(res[i]), i * 7);
    return NULL;
}

TEST(light_run_blocking_and_cancel)
{
    atomic_store(&light_ready, 0);
    run_main_checked(2, main_light_blocking, NULL);
}

/* ---- a new light task starting over a suspended one's frames ----
 *
 * The newcomer's frames go where the suspended task's frames were (they
 * have been copied out). Under ASan, the old frames' redzones must not be
 * reported against the newcomer's locals.
 */
static _Atomic int first_suspended;

static void *suspend_deep(void *arg)
{
    volatile char pad[512];
    pad[0] = 1;
    atomic_store(&first_suspended, 1);
    corio_sleep(5 * CORIO_MSEC);
    return PTR_OF(pad[0]);
}

static __attribute__((noinline)) int use_locals(int depth)
{
    volatile uint64_t big[96];
    for (int i = 0; i < 96; i++)
        big[i] = (uint64_t)(depth * 96 + i);
    int sum = depth ? use_locals(depth - 1) : 0;
    for (int i = 0; i < 96; i++)
        if (big[i] != (uint64_t)(depth * 96 + i))
            return -100000;
    return sum + 1;
}

static void *fresh_light(void *arg) { return PTR_OF(use_locals(8)); }

static void *main_fresh_over_suspended(void *arg)
{
    unsigned me = (unsigned)corio_loop_index();
    for (int i = 0; i < 20; i++) {
        atomic_store(&first_suspended, 0);
        corio_spawn_opts o = light_opts((int)me);
        corio_task *a, *b;
        CHECK_OK(corio_spawn_ex(&a, suspend_deep, NULL, &o));
        while (!atomic_load(&first_suspended))
            CHECK_OK(corio_yield());
        CHECK_OK(corio_spawn_ex(&b, fresh_light, NULL, &o));
        void *rb, *ra;
        CHECK_OK(corio_join(b, &rb));
        CHECK_EQ(INT_OF(rb), 9);
        CHECK_OK(corio_join(a, &ra));
        CHECK_EQ(INT_OF(ra), 1);
    }
    return NULL;
}

TEST(fresh_light_task_over_suspended_one)
{
    run_main_checked(2, main_fresh_over_suspended, NULL);
}

/* ---- what a sleeping light task keeps ----
 *
 * A light task asleep holds its frames in a buffer from its loop's arena,
 * reserved when the wait commits. The buffer must hold them, and be the
 * smallest size class that does: every class above it is 64 MB per
 * million sleepers. In the optimised x86-64 build that is 192 bytes for a
 * task asleep in corio_sleep (fails if sleep keeps a frame of its own on
 * the stack, or if the reservation's margin grows past what the switch
 * path needs).
 */
static _Atomic int sleeper_started;

static void *sleep_long(void *arg)
{
    atomic_store(&sleeper_started, 1);
    return PTR_OF(corio_sleep(60 * CORIO_SEC));
}

static void *main_sleeper_buffer(void *arg)
{
    corio_spawn_opts o = light_opts(corio_loop_index());
    for (int i = 0; i < 20; i++) {
        atomic_store(&sleeper_started, 0);
        corio_task *sleeper, *other;
        CHECK_OK(corio_spawn_ex(&sleeper, sleep_long, NULL, &o));
        while (!atomic_load(&sleeper_started))
            CHECK_OK(corio_yield());
        size_t reserved = sleeper->saved_cap; /* asleep: its wait has committed */
        /* Another light task on the loop moves the sleeper's frames out. */
        CHECK_OK(corio_spawn_ex(&other, test_ret_arg, NULL, &o));
        CHECK_OK(corio_join(other, NULL));
        size_t len = sleeper->run->saved_len, cap = sleeper->saved_cap;
        if (i == 0)
            printf("    light task asleep in corio_sleep: %zu bytes saved, %zu reserved\n", len,
                   cap);
        CHECK(len > 0 && len <= cap);
        CHECK_EQ(cap, corio__arena_block_size(len));
        CHECK(reserved > 0 && reserved <= cap); /* reserved before it suspended */
#ifndef CORIO__TSAN /* its instrumentation deepens the path below the commit */
        CHECK_EQ(reserved, cap); /* the reservation held them: no growth at save */
#endif
#if defined(__x86_64__) && defined(__OPTIMIZE__) && !defined(CORIO_CTX_UCONTEXT) && \
    !defined(CORIO__ASAN) && !defined(CORIO__TSAN)
        CHECK(cap <= 192);
#endif
        CHECK_OK(corio_cancel(sleeper));
        void *rc;
        CHECK_OK(corio_join(sleeper, &rc));
        CHECK_EQ(INT_OF(rc), CORIO_ECANCELED);
    }
    return NULL;
}

TEST(sleeping_light_task_buffer_is_tight)
{
    run_main_checked(2, main_sleeper_buffer, NULL);
}

/* ---- a wake-up that beats a commit failing for want of memory ----
 *
 * A wait is registered with its source (here a semaphore's queue, the
 * lock dropped) before its commit, and the commit can still fail without
 * blocking: a light task's save buffer, then the deadline's timer entry,
 * are allocated there. A waker may fire the task in between; the
 * semaphore's release then hands its permit to the task. So a commit that
 * fails must take its wait back with CAS(token -> IDLE), and when that
 * fails take the wake-up instead (wait.c): giving up anyway would lose
 * the permit (and leave the task queued to resume while it runs on).
 *
 * The hook runs at the save buffer's allocation (a frame deeper than the
 * arena's largest block: malloc): main, on the other loop, releases the
 * semaphore, and the hook arms a failure of the next wrapped call, the
 * timer heap's first growth. (A sleeper on the same loop holds a later
 * deadline in the sorted run, so this one goes to the heap, which is
 * empty.) Nothing else makes a wrapped call meanwhile: main spins, and
 * the loops run nothing else. Two loops. */
struct beaten_commit {
    corio_sem *sem;
    corio_task *light;
    _Atomic int go, released, acquired, checked;
    int rc;
    bool heap_growth_failed;
};

/* Runs in the save buffer's allocation. */
static void release_then_fail_next(void *arg)
{
    struct beaten_commit *b = arg;
    atomic_store(&b->go, 1);
    while (!atomic_load(&b->released))
        sched_yield(); /* main's release has fired us */
    corio__fault_arm(1); /* the timer heap's growth */
}

static __attribute__((noinline)) int acquire_deep(corio_sem *sem, corio_time_t deadline)
{
    volatile char pad[2 * CORIO__ARENA_MAX_BLOCK];
    pad[0] = 1;
    pad[sizeof pad - 1] = 1;
    /* Its address escapes: clang otherwise keeps only the bytes the
     * volatile accesses name (8, and the save buffer then came from the
     * arena, not malloc, so the hook never ran). */
    __asm__ volatile("" : : "r"(pad) : "memory");
    int rc = corio_sem_acquire_until(sem, deadline);
    return rc + pad[0] + pad[sizeof pad - 1] - 2;
}

static void *beaten_acquirer(void *arg)
{
    struct beaten_commit *b = arg;
    corio__fault_arm_hook(1, release_then_fail_next, b); /* the save buffer */
    b->rc = acquire_deep(b->sem, corio_deadline_in(1800 * CORIO_SEC));
    b->heap_growth_failed = corio__fault_fired();
    corio__fault_arm(0);
    atomic_store(&b->acquired, 1);
    while (!atomic_load(&b->checked))
        sched_yield(); /* main's checks come first, whatever this task's state */
    return NULL;
}

/* First on its loop: its deadline goes into the run, then the acquirer
 * (spawned here, so it runs once this one sleeps) has an earlier one. */
static void *later_sleeper(void *arg)
{
    struct beaten_commit *b = arg;
    corio_spawn_opts o = light_opts(corio_loop_index());
    CHECK_OK(corio_spawn_ex(&b->light, beaten_acquirer, b, &o));
    return PTR_OF(corio_sleep(3600 * CORIO_SEC));
}

static void *main_beaten_commit(void *arg)
{
    (void)arg;
    struct beaten_commit b = {0};
    CHECK_OK(corio_sem_new(&b.sem, 0));
    corio_task *sleeper;
    CHECK_OK(corio_spawn_on(&sleeper, (unsigned)(corio_loop_index() + 1) % 2, later_sleeper, &b));
    CHECK(test_await(&b.go, 1));
    CHECK_OK(corio_sem_release(b.sem));
    atomic_store(&b.released, 1);
    while (!atomic_load(&b.acquired))
        sched_yield(); /* no wrapped call of ours while the failure waits */
    CHECK(b.heap_growth_failed);
    CHECK_OK(b.rc); /* the permit came with the wake-up */
    CHECK_EQ(corio_sem_available(b.sem), 0);
    atomic_store(&b.checked, 1);
    CHECK_OK(corio_join(b.light, NULL));
    CHECK_OK(corio_sem_release(b.sem)); /* the acquirer's permit back */
    CHECK_EQ(corio_sem_available(b.sem), 1);
    CHECK_OK(corio_cancel(sleeper));
    void *r;
    CHECK_OK(corio_join(sleeper, &r));
    CHECK_ERR((int)INT_OF(r), CORIO_ECANCELED);
    corio_sem_free(b.sem);
    return NULL;
}

TEST(wake_up_beats_a_commit_without_memory)
{
    run_main_checked(2, main_beaten_commit, NULL);
}

/* ---- a group's close when memory has run out ---- */

#ifndef TEST_SANITIZED

static int sleeps_until_cancelled(void *arg)
{
    (void)arg;
    return corio_sleep(3600 * CORIO_SEC);
}

/* The process's mappings, in bytes (/proc/self/statm, first field). */
static long vm_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = -1;
    if (f) {
        if (fscanf(f, "%ld", &pages) != 1)
            pages = -1;
        fclose(f);
    }
    return pages < 0 ? -1 : pages * sysconf(_SC_PAGESIZE);
}

/* A light task closes a group whose child sleeps on the same (only)
 * loop, when no save buffer can be had: the close's join fails with
 * CORIO_ENOMEM and it waits by yielding (group.c), and those yields
 * must give the loop to the child. */
static void *light_closer(void *arg)
{
    (void)arg;
    corio_group *g;
    if (corio_group_new(&g, 0) != 0 || corio_group_spawn(g, sleeps_until_cancelled, NULL) != 0)
        return PTR_OF(-1);
    corio_sleep(10 * CORIO_MSEC); /* the child starts and sleeps */
    /* The arena has nothing left to hand out and cannot map more. */
    corio__loop *l = corio__loop_current();
    l->arena.next = l->arena.end;
    for (size_t i = 0; i < CORIO__ARENA_CLASSES; i++)
        l->arena.free[i] = NULL;
    long vm = vm_bytes();
    struct rlimit old, lim;
    getrlimit(RLIMIT_AS, &old);
    lim = old;
    lim.rlim_cur = (rlim_t)vm + 1024 * 1024;
    if (vm <= 0 || setrlimit(RLIMIT_AS, &lim) != 0)
        return PTR_OF(-2);
    int rc = corio_group_close(g);
    setrlimit(RLIMIT_AS, &old);
    return PTR_OF(rc);
}

static void *main_light_close(void *arg)
{
    (void)arg;
    corio_spawn_opts o = light_opts(-1);
    corio_task *t;
    CHECK_OK(corio_spawn_ex(&t, light_closer, NULL, &o));
    void *r;
    CHECK_OK(corio_join(t, &r));
    CHECK_EQ(INT_OF(r), CORIO_ECANCELED);
    return NULL;
}
#endif

TEST(light_group_close_without_memory)
{
#ifdef TEST_SANITIZED
    fprintf(stderr, "   skipped: sanitizers map their shadow beyond any RLIMIT_AS\n");
#else
    TEST_SKIP_UNDER_QEMU("RLIMIT_AS does not limit the guest's mappings");
    TEST_SKIP_UNDER_VALGRIND("Valgrind's own mappings count against RLIMIT_AS");
    run_main_checked(1, main_light_close, NULL);
#endif
}


/* ---- light tasks stalled on memory: the loop sleeps ----
 *
 * The light task A that occupies loop 1's shared stack closes a group
 * when loop 1 has no memory left (its arena emptied, every allocation of
 * its thread failing: corio__fault_starve_thread): the close's join
 * cannot reserve a save buffer and suspends all the same, uncancellable,
 * its frames left on the shared stack. Its child is held on loop 2 by a
 * plain thread handshake. Then two more light tasks of loop 1 need the
 * stack: B2, spawned there (its start fails), and B1, suspended before A
 * started and woken now (its swap-in fails). Neither can run until A's
 * frames can be saved, and nothing else can run on loop 1: the loop must
 * be seen asleep in the kernel. A loop that retries the stalled tasks
 * after every poll (epoll_wait with timeout 0) keeps its thread runnable
 * and is never seen so. Then, in turn, the two ways out: memory comes
 * back (the stalled tasks run at a recheck, with A still suspended), or
 * A itself moves (its child released, it finishes, with memory still
 * short: it owns the stack, so it runs, and once it is gone the others
 * need no memory to start or swap in). Three loops. */

#define STALL_PATIENCE (10 * CORIO_SEC * TEST_SLOW)

struct light_stall {
    struct test_thread_hold held;
    corio_event *wake_b1;
    _Atomic int b1_waiting, b1_ran, b2_ran, closing;
    int b1_rc, close_rc;
    int held_loop; /* where A's child holds its thread: 0 for loop 2 */
};

/* The close, from frames deeper than any earlier wait of A's: A's save
 * buffer holds what its last reservation needed (test_await's sleep), so
 * the close's own reservation must ask for more, or the stack would be
 * saved without an allocation and nothing would stall. Optimised, the
 * close's path was the deeper one by itself; unoptimised (the debug
 * lane) the sleep's was, and B2 started at once. */
__attribute__((noinline)) static int close_from_deep(corio_group *g)
{
    volatile char depth[8192];
    depth[0] = 1;
    int rc = corio_group_close(g);
    depth[sizeof depth - 1] = depth[0];
    return rc;
}

/* A: owns the shared stack, suspends in the close without a buffer. */
static void *stall_owner(void *arg)
{
    struct light_stall *ls = arg;
    corio_group *g;
    corio_spawn_opts o = light_opts(ls->held_loop ? ls->held_loop : 2);
    o.flags = 0;
    if (corio_group_new(&g, 0) != 0 || corio_group_spawn_ex(g, test_thread_held, &ls->held, &o))
        return PTR_OF(-1);
    if (!test_await(&ls->held.started, 1))
        return PTR_OF(-2);
    corio__loop *l = corio__loop_current();
    l->arena.next = l->arena.end;
    for (size_t i = 0; i < CORIO__ARENA_CLASSES; i++)
        l->arena.free[i] = NULL;
    corio__fault_starve_thread();
    atomic_store(&ls->closing, 1);
    ls->close_rc = close_from_deep(g);
    return NULL;
}

static void *stall_b1(void *arg)
{
    struct light_stall *ls = arg;
    atomic_store(&ls->b1_waiting, 1);
    ls->b1_rc = corio_event_wait(ls->wake_b1);
    atomic_store(&ls->b1_ran, 1);
    return PTR_OF(7);
}

static void *stall_b2(void *arg)
{
    struct light_stall *ls = arg;
    atomic_store(&ls->b2_ran, 1);
    return PTR_OF(9);
}

/* The failed calls of the starved thread reach more than `than`. */
static bool await_failures_past(uint64_t than)
{
    corio_time_t give_up = corio_deadline_in(STALL_PATIENCE);
    while (corio__fault_counted() <= than && corio_now() < give_up)
        CHECK_OK(corio_sleep(CORIO_MSEC));
    return corio__fault_counted() > than;
}

/* The stall itself, on loop 1 (lt: its thread): B1 waits, A suspends in
 * its close without memory, B2's start finds none, B1 is woken; loop 1
 * is then seen asleep with B1 and B2 stalled, neither having run on. */
static void stall_light_tasks(struct light_stall *ls, const struct test_loop_thread *lt,
                              corio_task **a, corio_task **b1, corio_task **b2)
{
    CHECK_OK(corio_event_new(&ls->wake_b1));
    corio_spawn_opts o = light_opts(1);
    CHECK_OK(corio_spawn_ex(b1, stall_b1, ls, &o));
    CHECK(test_await(&ls->b1_waiting, 1));
    CHECK_OK(corio_spawn_ex(a, stall_owner, ls, &o)); /* starts once B1 waits */
    CHECK(test_await(&ls->closing, 1));
    /* A suspended in the close: loop 1 had nothing left to run. */
    CHECK(test_loop_thread_sleeps(lt, STALL_PATIENCE / 2));
    uint64_t failed = corio__fault_counted();
    CHECK_OK(corio_spawn_ex(b2, stall_b2, ls, &o));
    CHECK(await_failures_past(failed)); /* B2's start found no memory */
    CHECK_OK(corio_event_set(ls->wake_b1));
    CHECK(test_loop_thread_sleeps(lt, STALL_PATIENCE / 2));
    CHECK_EQ(atomic_load(&ls->b1_ran), 0);
    CHECK_EQ(atomic_load(&ls->b2_ran), 0);
}

static void *light_stall_from_loop_0(void *arg)
{
    (void)arg;
    struct test_loop_thread lt = {0};
    corio_task *t;
    CHECK_OK(corio_spawn_on(&t, 1, test_note_loop_thread, &lt));
    CHECK_OK(corio_join(t, NULL));
    long rounds = test_scaled(4);
    if (rounds < 2)
        rounds = 2;
    for (long i = 0; i < rounds; i++) {
        bool memory_back = i % 2 == 0; /* else the owner moves */
        struct light_stall ls = {.held.patience = STALL_PATIENCE};
        corio_task *a, *b1, *b2;
        stall_light_tasks(&ls, &lt, &a, &b1, &b2);
        /* The loop's regular tasks run on meanwhile (its warm stack from
         * test_note_loop_thread needs no memory). */
        corio_spawn_opts ro = light_opts(1);
        ro.flags = 0;
        void *r;
        CHECK_OK(corio_spawn_ex(&t, test_ret_arg, PTR_OF(5), &ro));
        CHECK_OK(corio_join(t, &r));
        CHECK_EQ(INT_OF(r), 5);
        CHECK_EQ(atomic_load(&ls.b1_ran), 0);
        if (memory_back) {
            corio__fault_arm(0);
            CHECK(test_await(&ls.b1_ran, 1));
            CHECK(test_await(&ls.b2_ran, 1));
            CHECK_EQ(atomic_load(&ls.held.release), 0); /* A still in its close */
            atomic_store(&ls.held.release, 1);
        } else {
            atomic_store(&ls.held.release, 1);
            CHECK(test_await(&ls.b1_ran, 1));
            CHECK(test_await(&ls.b2_ran, 1));
            corio__fault_arm(0);
        }
        CHECK_OK(corio_join(a, &r));
        CHECK(r == NULL);
        CHECK_OK(ls.close_rc);
        CHECK_OK(corio_join(b1, &r));
        CHECK_EQ(INT_OF(r), 7);
        CHECK_OK(ls.b1_rc);
        CHECK_OK(corio_join(b2, &r));
        CHECK_EQ(INT_OF(r), 9);
        corio_event_free(ls.wake_b1);
    }
    return NULL;
}

TEST(light_tasks_stalled_on_memory_let_the_loop_sleep)
{
    struct test_on_loop_0 body = {light_stall_from_loop_0, NULL};
    run_main_checked(3, test_main_on_loop_0, &body);
}

/* ---- the runtime stops while light tasks are stalled on memory ----
 *
 * The stall above, and then main returns with memory still short: B2
 * never ran and is dropped; B1 has started, so the stop waits for it,
 * and it can only run once A has moved. A plain thread, once the stop
 * has begun and loop 1 is seen asleep in it, releases A's child; then A
 * finishes, B1 swaps in (a copy, no allocation) and finishes, and the
 * runtime ends, leaving nothing behind, all with loop 1's allocations
 * still failing. */
struct stall_stop {
    struct light_stall ls;
    struct test_loop_thread lt;
    corio__runtime *_Atomic rt; /* set once the stall is in place */
    _Atomic int slept_in_stop;
};

static void *release_once_stopping(void *arg)
{
    struct stall_stop *ss = arg;
    corio_time_t give_up = corio_deadline_in(STALL_PATIENCE);
    corio__runtime *rt;
    while (!(rt = atomic_load(&ss->rt)) && corio_now() < give_up)
        usleep(1000);
    while (rt && !atomic_load(&rt->stopping) && corio_now() < give_up)
        usleep(1000);
    /* Loop 1 has seen the stop: it retries its stalled tasks as it does
     * (enter_stopping), and every retry from now on follows a poll that
     * read the flag; only its allocations fail. Probed before that, loop
     * 1 was still asleep from before the stop (the flag is stored before
     * the loops are woken), and a loop spinning through the stop passed:
     * 5 of 5 runs with the wake-up made 20 ms late. */
    uint64_t failed = corio__fault_counted();
    while (corio__fault_counted() == failed && corio_now() < give_up)
        usleep(1000);
    /* Loop 1 has B1 stalled and nothing else: asleep, not retrying. */
    corio__thread_probe p;
    while (corio_now() < give_up) {
        if (corio__thread_probe_read(ss->lt.tid, ss->lt.clock, &p) && !p.runnable) {
            atomic_store(&ss->slept_in_stop, 1);
            break;
        }
        usleep(1000);
    }
    atomic_store(&ss->ls.held.release, 1);
    return NULL;
}

static void *light_stall_then_stop(void *arg)
{
    struct stall_stop *ss = arg;
    struct light_stall *ls = &ss->ls;
    corio_task *t;
    CHECK_OK(corio_spawn_on(&t, 1, test_note_loop_thread, &ss->lt));
    CHECK_OK(corio_join(t, NULL));
    corio_task *a, *b1, *b2;
    stall_light_tasks(ls, &ss->lt, &a, &b1, &b2);
    atomic_store(&ss->rt, corio__loop_current()->rt);
    CHECK_OK(corio_detach(a));
    CHECK_OK(corio_detach(b1));
    CHECK_OK(corio_detach(b2));
    return NULL; /* the runtime stops, memory still short */
}

/* The stop begins when main returns, and main returns on the loop where
 * it started, which the runtime chooses: on the loop that A's child holds,
 * it waited there for the release that waits for the stop (the test
 * failed so, after STALL_PATIENCE, in about 1 run in 25 under load: found
 * by review). So A's child holds a loop that is neither main's nor the
 * body's (0) nor the light tasks' (1). */
static void *stall_stop_main(void *arg)
{
    struct stall_stop *ss = arg;
    ss->ls.held_loop = corio_loop_index() == 2 ? 3 : 2;
    struct test_on_loop_0 body = {light_stall_then_stop, ss};
    return test_main_on_loop_0(&body);
}

TEST(stop_while_light_tasks_are_stalled_on_memory)
{
    static struct stall_stop ss;
    memset(&ss, 0, sizeof ss);
    ss.ls.held.patience = STALL_PATIENCE;
    ss.ls.close_rc = -12345; /* A's close never returned */
    pthread_t helper;
    CHECK_EQ(pthread_create(&helper, NULL, release_once_stopping, &ss), 0);
    /* The leak check after the event is freed: B1 holds it until it has
     * run, which is after main returned. */
    test_baseline base = test_baseline_take();
    run_main(4, stall_stop_main, &ss);
    corio__fault_arm(0);
    CHECK_EQ(pthread_join(helper, NULL), 0);
    corio_event_free(ss.ls.wake_b1);
    CHECK_NO_LEAKS(base);
    CHECK_EQ(atomic_load(&ss.slept_in_stop), 1);
    CHECK_EQ(atomic_load(&ss.ls.b1_ran), 1);   /* started: the stop waited for it */
    CHECK_EQ(atomic_load(&ss.ls.b2_ran), 0);   /* never ran: dropped */
    CHECK(ss.ls.close_rc != -12345);           /* A finished */
}

int main(int argc, char **argv)
{
    RUN(locals_survive_suspension);
    RUN(deep_recursion);
    RUN(light_and_regular_join_each_other);
    RUN(light_beside_main);
    RUN(light_run_blocking_and_cancel);
    RUN(fresh_light_task_over_suspended_one);
    RUN(sleeping_light_task_buffer_is_tight);
    RUN(wake_up_beats_a_commit_without_memory);
    RUN(light_group_close_without_memory);
    RUN(light_tasks_stalled_on_memory_let_the_loop_sleep);
    RUN(stop_while_light_tasks_are_stalled_on_memory);
    return test_summary();
}
