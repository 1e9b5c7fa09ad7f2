/*
 * test_migrate.c: tasks spawned CORIO_TASK_MIGRATE. A migrating task woken
 * while its loop is busy runs on an idle loop instead; what its waits left
 * on the loop it waited on (join and timer counts) is settled whichever
 * loop it resumes on; a runtime stops cleanly while such tasks are
 * between loops; the flag is refused where it cannot work.
 */
#include <stdatomic.h>
#include <sys/socket.h>

#include "loop.h"
#include "test.h"

static corio_spawn_opts migrate_opts(void)
{
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    o.flags = CORIO_TASK_MIGRATE;
    return o;
}

/* ---- woken tasks leave a busy loop ----
 *
 * Waiters start on both loops and wait on one event. The task that sets
 * the event is pinned to loop 0 and then keeps loop 0's CPU, without
 * yielding, until every waiter has run again: the waiters homed on loop 0
 * can only have run if loop 1 took them.
 */
#define WAITERS 400

struct waiter_log {
    int first_loop[WAITERS], woke_loop[WAITERS];
    _Atomic int started, woke;
    _Atomic int hold_wanted, holding; /* loop 1 held while waiters start */
    corio_event *go;
};

static struct waiter_log wl;

static void *waiter(void *arg)
{
    intptr_t i = INT_OF(arg);
    wl.first_loop[i] = corio_loop_index();
    atomic_fetch_add(&wl.started, 1);
    CHECK_OK(corio_event_wait(wl.go));
    wl.woke_loop[i] = corio_loop_index();
    atomic_fetch_add(&wl.woke, 1);
    return arg;
}

static void *hog_after_setting(void *arg)
{
    (void)arg;
    corio_spawn_opts o = migrate_opts();
    static corio_task *t[WAITERS];
    while (atomic_load(&wl.hold_wanted) && !atomic_load(&wl.holding))
        CHECK_OK(corio_sleep(CORIO_MSEC));
    for (intptr_t i = 0; i < WAITERS; i++)
        CHECK_OK(corio_spawn_ex(&t[i], waiter, PTR_OF(i), &o));
    corio_time_t give_up = corio_now() + 60 * CORIO_SEC;
    while (atomic_load(&wl.started) < WAITERS && corio_now() < give_up)
        CHECK_OK(corio_sleep(CORIO_MSEC));
    CHECK_EQ(atomic_load(&wl.started), WAITERS);

    CHECK_OK(corio_event_set(wl.go));
    /* Keep the CPU (a hang guard, not a timing assertion). */
    while (atomic_load(&wl.woke) < WAITERS && corio_now() < give_up)
        test_spin(1000);
    CHECK_EQ(atomic_load(&wl.woke), WAITERS);
    CHECK_OK(corio_gather(t, WAITERS, NULL));
    return NULL;
}

/* Keeps loop 1 from stealing until a quarter of the waiters have started
 * on loop 0. (Left free, loop 1 took every waiter whenever loop 0's thread
 * was held up ~15 ms after the spawns: a loop that has not polled for
 * 10 ms counts as stuck, and thieves then take half its queue, again and
 * again; no waiter homed on the busy loop, and the check below failed.) */
static void *hold_until_quarter_started(void *arg)
{
    (void)arg;
    atomic_store(&wl.holding, 1);
    while (atomic_load(&wl.started) < WAITERS / 4)
        test_spin(1000);
    return NULL;
}

static void *main_busy_loop(void *arg)
{
    (void)arg;
    CHECK_OK(corio_event_new(&wl.go));
    corio_task *host, *hold;
    atomic_store(&wl.hold_wanted, 1);
    CHECK_OK(corio_spawn_on(&hold, 1, hold_until_quarter_started, NULL));
    CHECK_OK(corio_spawn_on(&host, 0, hog_after_setting, NULL));
    CHECK_OK(corio_join(host, NULL));
    CHECK_OK(corio_join(hold, NULL));
    corio_event_free(wl.go);
    return NULL;
}

TEST(woken_tasks_leave_a_busy_loop)
{
    TEST_SKIP_UNDER_VALGRIND("Valgrind runs one thread at a time: whether loop 1 gets the CPU "
                             "while loop 0 spins is up to its scheduler");
    memset(&wl, 0, sizeof wl);
    run_main_checked(2, main_busy_loop, NULL);
    int homed_busy = 0;
    for (int i = 0; i < WAITERS; i++) {
        CHECK_EQ(wl.woke_loop[i], 1);
        homed_busy += wl.first_loop[i] == 0;
    }
    fprintf(stderr, "   %d of %d waiters started on the busy loop and moved\n", homed_busy,
            WAITERS);
    CHECK_GE(homed_busy, WAITERS / 4); /* those started while loop 1 was held */
}

/* ---- a backlog of woken tasks wakes an idle loop ----
 *
 * As above, but every waiter starts on loop 0 (loop 1 is held busy while
 * they start) and loop 1 then parks with nothing to do. When the event
 * wakes them, loop 0 is busy, so only loop 1 can run them, and only if
 * the backlog on loop 0 wakes it: nothing else will (above, waking the
 * waiters homed on loop 1 woke it anyway). Each waiter dirties its stack
 * first; they exit on loop 1, whose pool has no room for stacks it did
 * not carve, so the stacks go to the runtime's spill list, and once the
 * loops idle a trim must give that memory back.
 */
#define BACKLOG 300
#define BACKLOG_TOUCH (96 * 1024)

struct backlog {
    corio_event *go;
    _Atomic int holding, started, woke, homed_on_0, all_started;
    long rss_all_started; /* KiB, with every waiter's stack dirtied */
};

static void *backlog_waiter(void *arg)
{
    struct backlog *b = arg;
    test_dirty_stack(BACKLOG_TOUCH);
    atomic_fetch_add(&b->homed_on_0, corio_loop_index() == 0);
    atomic_fetch_add(&b->started, 1);
    CHECK_OK(corio_event_wait(b->go));
    atomic_fetch_add(&b->woke, 1);
    return NULL;
}

static void *hold_until_started(void *arg)
{
    struct backlog *b = arg;
    atomic_store(&b->holding, 1);
    while (!atomic_load(&b->all_started))
        test_spin(1000); /* keeps this loop from stealing the waiters */
    return NULL;
}

static void *backlog_host(void *arg)
{
    struct backlog *b = arg;
    corio_spawn_opts o = migrate_opts();
    static corio_task *t[BACKLOG];
    while (!atomic_load(&b->holding))
        CHECK_OK(corio_sleep(CORIO_MSEC));
    for (int i = 0; i < BACKLOG; i++)
        CHECK_OK(corio_spawn_ex(&t[i], backlog_waiter, b, &o));
    while (atomic_load(&b->started) < BACKLOG)
        CHECK_OK(corio_sleep(CORIO_MSEC));
    atomic_store(&b->all_started, 1);
    /* Read now, while every stack is dirty and in use: once they exit, an
     * idle loop may trim before main gets to look (it did, on a loaded
     * machine). */
    b->rss_all_started = test_rss_kib();
    CHECK_OK(corio_sleep(50 * CORIO_MSEC)); /* loop 1 idles and parks */
    CHECK_OK(corio_event_set(b->go));
    /* Keep loop 0's CPU (a hang guard, not a timing assertion). */
    corio_time_t give_up = corio_now() + 20 * CORIO_SEC;
    while (atomic_load(&b->woke) < BACKLOG && corio_now() < give_up)
        test_spin(1000);
    int woke = atomic_load(&b->woke);
    CHECK_EQ(woke, BACKLOG);
    CHECK_OK(corio_gather(t, BACKLOG, NULL));
    return NULL;
}

static void *main_backlog(void *arg)
{
    struct backlog *b = arg;
    CHECK_OK(corio_event_new(&b->go));
    corio_task *hold, *host;
    CHECK_OK(corio_spawn_on(&hold, 1, hold_until_started, b));
    CHECK_OK(corio_spawn_on(&host, 0, backlog_host, b));
    CHECK_OK(corio_join(host, NULL));
    CHECK_OK(corio_join(hold, NULL));
    corio_event_free(b->go);
    if (test_rss_tracks_stacks()) {
        long dirtied = (long)BACKLOG * (BACKLOG_TOUCH / 1024), peak = b->rss_all_started, now;
        corio_time_t give_up = corio_deadline_in(20 * CORIO_SEC);
        do { /* both loops idle: the trim comes within ~20 ms */
            CHECK_OK(corio_sleep(20 * CORIO_MSEC));
            now = test_rss_kib();
        } while (peak - now < dirtied * 85 / 100 && corio_now() < give_up);
        fprintf(stderr, "   RSS %ld KiB with all started, %ld after idling (%ld KiB dirtied)\n",
                peak, now, dirtied);
        CHECK_GE(peak - now, dirtied * 85 / 100);
    }
    return NULL;
}

TEST(woken_backlog_wakes_an_idle_loop)
{
    TEST_SKIP_UNDER_VALGRIND("Valgrind runs one thread at a time: whether loop 1 gets the CPU "
                             "while loop 0 spins is up to its scheduler");
    struct backlog b = {0};
    run_main_checked(2, main_backlog, &b);
    CHECK_EQ(atomic_load(&b.homed_on_0), BACKLOG);
}

/* ---- stacks do not pile up on the loop tasks migrate to ----
 *
 * Round after round, tasks take their stacks on loop 0 and exit on loop 1
 * (the woken_tasks pattern above). Loop 1's pool must not hoard them
 * while loop 0 maps new chunks for every round: the mappings alive after
 * the last round are those of the first few.
 */
static void *stack_rounds(void *arg)
{
    long rounds = INT_OF(arg);
    int64_t maps_early = 0;
    for (long r = 0; r < rounds; r++) {
        memset(&wl, 0, sizeof wl);
        CHECK_OK(corio_event_new(&wl.go));
        hog_after_setting(NULL);
        corio_event_free(wl.go);
        if (r == 2)
            maps_early = corio__live_maps();
    }
    int64_t maps_late = corio__live_maps();
    fprintf(stderr, "   live mappings after round 3: %lld, after round %ld: %lld\n",
            (long long)maps_early, rounds, (long long)maps_late);
    /* Without the spill list loop 0 mapped ~3 chunks a round. */
    CHECK_LE(maps_late, maps_early + 4);
    return NULL;
}

static void *main_stack_rounds(void *arg)
{
    corio_task *host;
    CHECK_OK(corio_spawn_on(&host, 0, stack_rounds, arg));
    CHECK_OK(corio_join(host, NULL));
    return NULL;
}

TEST(stacks_do_not_pile_up)
{
    TEST_SKIP_UNDER_VALGRIND("the rounds rely on loop 1 running while loop 0 spins");
    run_main_checked(2, main_stack_rounds, PTR_OF(test_scaled(40) + 5));
}

/* ---- a task that keeps yielding does not starve a woken one ----
 *
 * A migrating task woken on the yielder's own loop goes to the roam
 * queue, not the ready list; the yielder's loop must still run it. Loop 1
 * is held by a task that spins without yielding for the whole check, so
 * it can neither steal the waiter before it starts on loop 0 nor pick it
 * up after the wake: only loop 0 can run it. (Leaving loop 1 idle made
 * the test depend on who won a steal race; under ASan on CI loop 1 won
 * 200 times in a row.)
 */
static _Atomic int yw_home, yw_done, yw_hog_running, yw_hog_stop;

static void *loop_hog(void *arg)
{
    (void)arg;
    atomic_store(&yw_hog_running, 1);
    while (!atomic_load(&yw_hog_stop))
        test_spin(100);
    return NULL;
}

static void *yield_waiter(void *arg)
{
    atomic_store(&yw_home, corio_loop_index() + 1);
    CHECK_OK(corio_event_wait(arg));
    atomic_store(&yw_done, 1);
    return NULL;
}

static void *yielder(void *arg)
{
    (void)arg;
    corio_task *hog;
    CHECK_OK(corio_spawn_on(&hog, 1, loop_hog, NULL));
    while (!atomic_load(&yw_hog_running))
        CHECK_OK(corio_sleep(100 * CORIO_USEC));

    corio_spawn_opts o = migrate_opts();
    corio_event *ev;
    CHECK_OK(corio_event_new(&ev));
    corio_task *t;
    CHECK_OK(corio_spawn_ex(&t, yield_waiter, ev, &o));
    while (!atomic_load(&yw_home))
        CHECK_OK(corio_sleep(100 * CORIO_USEC));
    CHECK_EQ(atomic_load(&yw_home), 1); /* loop 1 is busy: it started here */
    CHECK_OK(corio_sleep(CORIO_MSEC)); /* let it block on the event */
    CHECK_OK(corio_event_set(ev));
    corio_time_t give_up = corio_now() + 20 * CORIO_SEC;
    while (!atomic_load(&yw_done) && corio_now() < give_up)
        CHECK_OK(corio_yield());
    CHECK_EQ(atomic_load(&yw_done), 1);
    CHECK_OK(corio_join(t, NULL));
    corio_event_free(ev);

    atomic_store(&yw_hog_stop, 1);
    CHECK_OK(corio_join(hog, NULL));
    return NULL;
}

/* The main task may start on loop 1, where the hog would starve it. */
static void *main_yielder(void *arg)
{
    (void)arg;
    corio_task *y;
    CHECK_OK(corio_spawn_on(&y, 0, yielder, NULL));
    CHECK_OK(corio_join(y, NULL));
    return NULL;
}

TEST(yielder_does_not_starve_a_woken_task)
{
    TEST_SKIP_UNDER_VALGRIND("a task spinning on yield holds Valgrind's one running thread while "
                             "the other loop's waits");
    run_main_checked(2, main_yielder, NULL);
}

/* ---- bookkeeping follows the task ----
 *
 * Migrating tasks sleep, time out, join and gather children, pass a
 * channel token, take a semaphore, lock a mutex, call run_blocking and
 * spin, in a random order, while pinned
 * hogs keep loops busy in bursts so that wake-ups move. Afterwards each
 * loop's count of tasks blocked in a join and of timed waits in progress
 * must be back to zero: a migrating task's old loop settles them when it
 * lets the task go, or the task does on resuming at home, never both.
 */
#define MIX_LOOPS 4

struct mix {
    corio_chan *chan;
    corio_sem *sem;
    corio_mutex *mutex;
    corio_event *never;
    _Atomic long ops, moves, hogs_left, locked;
    long shared; /* under mutex */
};

static struct mix mx;

static void *child(void *arg)
{
    test_spin(200);
    return arg;
}

static void *mixer(void *arg)
{
    uint64_t rng = (uint64_t)INT_OF(arg) * 0x9E3779B97F4A7C15ull + 1;
    int rounds = (int)test_scaled(60) + 2;
    corio_spawn_opts o = migrate_opts();
    int loop = corio_loop_index();
    for (int r = 0; r < rounds; r++) {
        switch (test_rand(&rng) % 9) {
        case 0:
            CHECK_OK(corio_sleep((int64_t)(test_rand(&rng) % 300) * CORIO_USEC));
            break;
        case 1:
            CHECK_ERR(corio_event_wait_until(mx.never, corio_now() + 100 * CORIO_USEC),
                      CORIO_ETIMEDOUT);
            break;
        case 2: {
            corio_task *c;
            void *res;
            CHECK_OK(corio_spawn_ex(&c, child, PTR_OF(r), &o));
            CHECK_OK(corio_join(c, &res));
            CHECK_EQ(INT_OF(res), r);
            break;
        }
        case 3: {
            int token;
            CHECK_OK(corio_chan_send(mx.chan, &r));
            CHECK_OK(corio_chan_recv(mx.chan, &token));
            break;
        }
        case 4:
            CHECK_OK(corio_sem_acquire_until(mx.sem, corio_now() + 10 * CORIO_SEC));
            test_spin(300);
            CHECK_OK(corio_sem_release(mx.sem));
            break;
        case 5:
            CHECK_OK(corio_mutex_lock(mx.mutex));
            mx.shared++;
            CHECK_OK(corio_mutex_unlock(mx.mutex));
            atomic_fetch_add(&mx.locked, 1);
            break;
        case 6: {
            void *res;
            CHECK_OK(corio_run_blocking(child, PTR_OF(r), &res));
            CHECK_EQ(INT_OF(res), r);
            break;
        }
        case 7: {
            corio_task *c[2];
            void *res[2];
            CHECK_OK(corio_spawn_ex(&c[0], child, PTR_OF(r), &o));
            CHECK_OK(corio_spawn_ex(&c[1], child, PTR_OF(r + 1), &o));
            CHECK_OK(corio_gather(c, 2, res));
            CHECK_EQ(INT_OF(res[0]) + 1, INT_OF(res[1]));
            break;
        }
        default:
            test_spin((unsigned)(test_rand(&rng) % 3000));
            break;
        }
        atomic_fetch_add(&mx.ops, 1);
        int now = corio_loop_index();
        if (now != loop)
            atomic_fetch_add(&mx.moves, 1);
        loop = now;
    }
    return NULL;
}

/* Busy for a while without yielding, then sleeps, a few times over. */
static void *hog(void *arg)
{
    (void)arg;
    for (int i = 0; i < 5; i++) {
        corio_time_t until = corio_now() + 2 * CORIO_MSEC;
        while (corio_now() < until)
            test_spin(500);
        CHECK_OK(corio_sleep(CORIO_MSEC));
    }
    atomic_fetch_sub(&mx.hogs_left, 1);
    return NULL;
}

struct loop_counts {
    corio_waitgroup *done;
    size_t joining[MIX_LOOPS], armed[MIX_LOOPS];
};

static struct loop_counts lc;

/* Pinned to loop i: read that loop's own counters on its own thread. */
static void *read_counts(void *arg)
{
    corio__loop *l = corio__loop_current();
    CHECK_EQ((intptr_t)l->index, INT_OF(arg));
    lc.joining[l->index] = l->joining;
    lc.armed[l->index] = l->timers.armed;
    CHECK_OK(corio_waitgroup_done(lc.done));
    return NULL;
}

static void *main_mix(void *arg)
{
    long n = INT_OF(arg);
    CHECK_OK(corio_chan_new(&mx.chan, sizeof(int), 8));
    CHECK_OK(corio_sem_new(&mx.sem, 3));
    CHECK_OK(corio_mutex_new(&mx.mutex));
    CHECK_OK(corio_event_new(&mx.never));
    atomic_store(&mx.hogs_left, MIX_LOOPS);
    for (unsigned l = 0; l < MIX_LOOPS; l++)
        CHECK_OK(corio_spawn_on(NULL, l, hog, NULL));
    corio_spawn_opts o = migrate_opts();
    corio_task **t = calloc((size_t)n, sizeof *t);
    CHECK(t);
    for (long i = 0; i < n; i++)
        CHECK_OK(corio_spawn_ex(&t[i], mixer, PTR_OF(i + 1), &o));
    CHECK_OK(corio_gather(t, (size_t)n, NULL));
    free(t);
    while (atomic_load(&mx.hogs_left) > 0)
        CHECK_OK(corio_sleep(CORIO_MSEC));

    /* Every loop quiet now but for the readers and this task, whose wait
     * for them is neither a join nor a timed wait. */
    CHECK_OK(corio_waitgroup_new(&lc.done));
    CHECK_OK(corio_waitgroup_add(lc.done, MIX_LOOPS));
    for (unsigned l = 0; l < MIX_LOOPS; l++)
        CHECK_OK(corio_spawn_on(NULL, l, read_counts, PTR_OF(l)));
    CHECK_OK(corio_waitgroup_wait(lc.done));
    corio_waitgroup_free(lc.done);
    corio_chan_free(mx.chan);
    corio_sem_free(mx.sem);
    corio_mutex_free(mx.mutex);
    corio_event_free(mx.never);
    return NULL;
}

TEST(bookkeeping_follows_the_task)
{
    long n = test_scaled(2000) + 20;
    memset(&mx, 0, sizeof mx);
    run_main_checked(MIX_LOOPS, main_mix, PTR_OF(n));
    for (int l = 0; l < MIX_LOOPS; l++) {
        CHECK_EQ(lc.joining[l], 0);
        CHECK_EQ(lc.armed[l], 0);
    }
    fprintf(stderr, "   %ld waits, %ld resumed on another loop\n", atomic_load(&mx.ops),
            atomic_load(&mx.moves));
    CHECK_GT(atomic_load(&mx.ops), n);
    if (!test_under_valgrind()) /* one thread at a time: moves are up to its scheduler */
        CHECK_GT(atomic_load(&mx.moves), 0);
    CHECK_EQ(mx.shared, atomic_load(&mx.locked)); /* no increment lost under the mutex */
}

/* ---- descriptors of a task that moves ----
 *
 * A migrating task's descriptor waits do not move it, but its sleeps do,
 * so it reads and writes the same socket from several loops in turn: each
 * loop it waits on registers the descriptor with its own epoll. Pairs of
 * such tasks stream counters through socket pairs while hogs keep loops
 * busy; every value must arrive in order, and descriptor numbers are
 * reused round after round (corio_close) while older registrations of
 * them linger on other loops.
 */
#define IO_PAIRS 8

static _Atomic long io_moves;

static void *io_writer(void *arg)
{
    int fd = (int)INT_OF(arg);
    uint64_t rng = (uint64_t)fd * 7919 + 1;
    int loop = corio_loop_index();
    for (uint64_t i = 0; i < 200; i++) {
        if (test_rand(&rng) % 4 == 0)
            CHECK_OK(corio_sleep((int64_t)(test_rand(&rng) % 200) * CORIO_USEC));
        CHECK_EQ(corio_write(fd, &i, sizeof i), (ssize_t)sizeof i);
        if (corio_loop_index() != loop)
            atomic_fetch_add(&io_moves, 1);
        loop = corio_loop_index();
    }
    CHECK_OK(corio_close(fd));
    return NULL;
}

static void *io_reader(void *arg)
{
    int fd = (int)INT_OF(arg);
    uint64_t rng = (uint64_t)fd * 104729 + 1;
    int loop = corio_loop_index();
    for (uint64_t i = 0; i < 200; i++) {
        uint64_t v;
        size_t got = 0;
        while (got < sizeof v) {
            ssize_t n = corio_read(fd, (char *)&v + got, sizeof v - got);
            CHECK_GT(n, 0);
            got += (size_t)n;
        }
        CHECK_EQ(v, i);
        if (test_rand(&rng) % 4 == 0)
            CHECK_OK(corio_sleep((int64_t)(test_rand(&rng) % 200) * CORIO_USEC));
        if (corio_loop_index() != loop)
            atomic_fetch_add(&io_moves, 1);
        loop = corio_loop_index();
    }
    char end;
    CHECK_EQ(corio_read(fd, &end, 1), 0); /* the writer closed its end */
    CHECK_OK(corio_close(fd));
    return NULL;
}

static void *main_io(void *arg)
{
    long rounds = INT_OF(arg);
    corio_spawn_opts o = migrate_opts();
    for (long r = 0; r < rounds; r++) {
        atomic_store(&mx.hogs_left, MIX_LOOPS);
        for (unsigned l = 0; l < MIX_LOOPS; l++)
            CHECK_OK(corio_spawn_on(NULL, l, hog, NULL));
        corio_task *t[2 * IO_PAIRS];
        for (int p = 0; p < IO_PAIRS; p++) {
            int sv[2];
            CHECK_OK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
            CHECK_OK(corio_spawn_ex(&t[2 * p], io_writer, PTR_OF(sv[0]), &o));
            CHECK_OK(corio_spawn_ex(&t[2 * p + 1], io_reader, PTR_OF(sv[1]), &o));
        }
        CHECK_OK(corio_gather(t, 2 * IO_PAIRS, NULL));
        while (atomic_load(&mx.hogs_left) > 0)
            CHECK_OK(corio_sleep(CORIO_MSEC));
    }
    return NULL;
}

TEST(descriptors_of_a_moving_task)
{
    atomic_store(&io_moves, 0);
    run_main_checked(MIX_LOOPS, main_io, PTR_OF(test_scaled(20) + 2));
    fprintf(stderr, "   %ld resumptions on another loop\n", atomic_load(&io_moves));
    if (!test_under_valgrind())
        CHECK_GT(atomic_load(&io_moves), 0);
}

/* ---- stopping while tasks are between loops ---- */

static _Atomic long roamers_in, roamers_out;

static void *roamer(void *arg)
{
    uint64_t rng = (uint64_t)INT_OF(arg) + 1;
    atomic_fetch_add(&roamers_in, 1);
    /* Sleeps until the runtime stops it (its sleep fails then). */
    while (corio_sleep((int64_t)(test_rand(&rng) % 1000) * CORIO_USEC) == 0)
        test_spin((unsigned)(test_rand(&rng) % 1000));
    atomic_fetch_add(&roamers_out, 1);
    return NULL;
}

static void *main_stop(void *arg)
{
    long n = INT_OF(arg);
    corio_spawn_opts o = migrate_opts();
    for (long i = 0; i < n; i++)
        CHECK_OK(corio_spawn_ex(NULL, roamer, PTR_OF(i), &o));
    /* At least one started (the check below needs it), however late the
     * loops' threads run; then 20 ms for more to start and roam. */
    corio_time_t give_up = corio_deadline_in(10 * CORIO_SEC * TEST_SLOW);
    while (atomic_load(&roamers_in) == 0 && corio_now() < give_up)
        CHECK_OK(corio_sleep(CORIO_MSEC));
    CHECK_OK(corio_sleep(20 * CORIO_MSEC));
    return arg;
}

TEST(stop_while_tasks_roam)
{
    /* Under Valgrind, which runs one thread at a time some 50x slower,
     * 500 tasks waking every half millisecond are an overload that takes
     * minutes to stop (with or without the flag); 50 are not. */
    long rounds = test_scaled(20) + 2, n = test_under_valgrind() ? 50 : 500, fewest = n;
    for (long r = 0; r < rounds; r++) {
        atomic_store(&roamers_in, 0);
        atomic_store(&roamers_out, 0);
        run_main_checked(3, main_stop, PTR_OF(n));
        /* Every task that started was stopped and returned: none was lost
         * in a queue between loops. (Tasks not started by the time main
         * returned are dropped unrun, asyncio.run's rule.) */
        CHECK_GT(atomic_load(&roamers_in), 0);
        CHECK_EQ(atomic_load(&roamers_out), atomic_load(&roamers_in));
        if (atomic_load(&roamers_in) < fewest)
            fewest = atomic_load(&roamers_in);
    }
    fprintf(stderr, "   %ld rounds; at least %ld of %ld tasks started in each\n", rounds, fewest,
            n);
}

/* ---- the published load never wraps ----
 *
 * A migrating task woken from a join leaves its loop's live count and its
 * `joining` count; if the first went before the second, a loop whose live
 * tasks were all joining published live - joining < 0, wrapped to ~2^64,
 * for other loops' balance decisions to read. A watcher on loop 1 reads
 * loop 0's load while parents on loop 0 join children and roam.
 */
static _Atomic bool load_watch_stop;
static _Atomic long load_wrapped;
static corio__loop *load_watched;

static void *load_watcher(void *arg)
{
    (void)arg;
    while (!atomic_load(&load_watch_stop))
        if (atomic_load_explicit(&load_watched->load, memory_order_relaxed) > ((size_t)1 << 40))
            atomic_fetch_add(&load_wrapped, 1);
    return NULL;
}

static void *joining_parent(void *arg)
{
    (void)arg;
    corio_task *c;
    CHECK_OK(corio_spawn_on(&c, 0, test_ret_arg, NULL));
    CHECK_OK(corio_join(c, NULL));
    return NULL;
}

static void *load_driver(void *arg)
{
    (void)arg;
    load_watched = corio__loop_current();
    corio_task *w;
    CHECK_OK(corio_spawn_on(&w, 1, load_watcher, NULL));
    corio_spawn_opts o = migrate_opts();
    long n = test_scaled_starts(200000);
    for (long i = 0; i < n && !atomic_load(&load_wrapped); i++) {
        corio_task *p;
        CHECK_OK(corio_spawn_ex(&p, joining_parent, NULL, &o));
        CHECK_OK(corio_join(p, NULL));
    }
    atomic_store(&load_watch_stop, true);
    CHECK_OK(corio_join(w, NULL));
    return NULL;
}

/* The driver must be on loop 0 with the children, and the watcher alone
 * on loop 1: the main task itself may be started by either loop. */
static void *main_load(void *arg)
{
    corio_task *d;
    CHECK_OK(corio_spawn_on(&d, 0, load_driver, arg));
    CHECK_OK(corio_join(d, NULL));
    return NULL;
}

TEST(published_load_never_wraps)
{
    run_main_checked(2, main_load, NULL);
    CHECK_EQ(atomic_load(&load_wrapped), 0);
}

/* ---- where the flag is refused ---- */

static void *main_refused(void *arg)
{
    (void)arg;
    corio_spawn_opts o = migrate_opts();
    corio_task *t = (corio_task *)&o; /* must be cleared on failure */
    o.flags = CORIO_TASK_MIGRATE | CORIO_TASK_LIGHT;
    CHECK_ERR(corio_spawn_ex(&t, test_ret_arg, NULL, &o), CORIO_EINVAL);
    CHECK(t == NULL);
    o.flags = CORIO_TASK_MIGRATE;
    o.loop = 0;
    CHECK_ERR(corio_spawn_ex(&t, test_ret_arg, NULL, &o), CORIO_EINVAL);
    o.loop = -1;
    CHECK_OK(corio_spawn_ex(&t, test_ret_arg, PTR_OF(7), &o));
    void *res;
    CHECK_OK(corio_join(t, &res));
    CHECK_EQ(INT_OF(res), 7);
    return NULL;
}

TEST(flag_refused_with_light_or_chosen_loop) { run_main_checked(2, main_refused, NULL); }

/* ---- on one loop the flag changes nothing ---- */

static void *main_one_loop(void *arg)
{
    (void)arg;
    corio_spawn_opts o = migrate_opts();
    corio_task *t[50];
    for (int i = 0; i < 50; i++)
        CHECK_OK(corio_spawn_ex(&t[i], mixer, PTR_OF(i + 1), &o));
    CHECK_OK(corio_gather(t, 50, NULL));
    return NULL;
}

TEST(one_loop)
{
    memset(&mx, 0, sizeof mx);
    CHECK_OK(corio_chan_new(&mx.chan, sizeof(int), 8));
    CHECK_OK(corio_sem_new(&mx.sem, 3));
    CHECK_OK(corio_mutex_new(&mx.mutex));
    CHECK_OK(corio_event_new(&mx.never));
    run_main_checked(1, main_one_loop, NULL);
    CHECK_EQ(atomic_load(&mx.moves), 0);
    corio_chan_free(mx.chan);
    corio_sem_free(mx.sem);
    corio_mutex_free(mx.mutex);
    corio_event_free(mx.never);
}

/* ---- a woken migrating task is not held back by queued ones ----
 *
 * Found by review of the scheduler's picks (sched.c): a woken migrating
 * task waits in its loop's roam queue, and the picks a poll owes the
 * queues took the run queue first. With the run and roam queues holding
 * a multiple of the poll interval (chains of tasks each spawning its
 * successor keep the run queue full), the picks ran out exactly at each
 * poll and were owed again: the woken task waited until the chains
 * stopped. So did it behind a lone yielder, whose yields owe the queues
 * their picks. Loop 1 is kept busy by a pinned task that yields, so it
 * never takes the woken task; only loop 0 can run it.
 */
enum { ROAM_CHAIN_LIMIT = 200000 };
static _Atomic long roam_chain_starts;
static _Atomic bool roam_spin_stop, roam_spin_started, roam_yielder_stop;
static corio_time_t roam_due;
static long roam_resumed_at;

static void *roam_chain_link(void *arg)
{
    if (atomic_fetch_add(&roam_chain_starts, 1) < ROAM_CHAIN_LIMIT)
        CHECK_OK(corio_spawn(NULL, roam_chain_link, arg));
    return NULL;
}

static void *keep_yielding(void *arg)
{
    _Atomic bool *stop = arg;
    atomic_store(&roam_spin_started, true);
    while (!atomic_load(stop))
        CHECK_OK(corio_yield());
    return NULL;
}

static void *sleep_then_note(void *arg)
{
    (void)arg;
    CHECK_OK(corio_sleep_until(roam_due));
    roam_resumed_at = atomic_load(&roam_chain_starts);
    return NULL;
}

/* arg: queued chains, negated for a lone yielder beside them. */
static void *main_roam_behind_chains(void *arg)
{
    long q = INT_OF(arg);
    bool yielder = q < 0;
    q = yielder ? -q : q;
    atomic_store(&roam_chain_starts, 0);
    atomic_store(&roam_spin_stop, false);
    atomic_store(&roam_spin_started, false);
    atomic_store(&roam_yielder_stop, false);
    corio_task *spinner, *sleeper, *y = NULL;
    CHECK_OK(corio_spawn_on(&spinner, 1, keep_yielding, &roam_spin_stop));
    while (!atomic_load(&roam_spin_started))
        CHECK_OK(corio_sleep(CORIO_MSEC));
    corio_spawn_opts o = migrate_opts();
    roam_due = corio_now() + 2 * CORIO_MSEC;
    CHECK_OK(corio_spawn_ex(&sleeper, sleep_then_note, NULL, &o));
    if (yielder)
        CHECK_OK(corio_spawn(&y, keep_yielding, &roam_yielder_stop));
    for (long i = 0; i < q; i++)
        CHECK_OK(corio_spawn(NULL, roam_chain_link, NULL));
    CHECK_OK(corio_join(sleeper, NULL));
    long resumed_at = roam_resumed_at;
    atomic_store(&roam_chain_starts, ROAM_CHAIN_LIMIT); /* stop the chains */
    atomic_store(&roam_yielder_stop, true);
    atomic_store(&roam_spin_stop, true);
    if (y)
        CHECK_OK(corio_join(y, NULL));
    CHECK_OK(corio_join(spinner, NULL));
    CHECK_LT(resumed_at, ROAM_CHAIN_LIMIT / 2); /* long before the chains ran dry */
    return NULL;
}

/* On loop 0 (test_main_on_loop_0): with main taken by loop 1, the chains
 * would queue behind the spinner there. */
static void roam_behind_chains(long q)
{
    struct test_on_loop_0 body = {main_roam_behind_chains, PTR_OF(q)};
    run_main_checked(2, test_main_on_loop_0, &body);
}

TEST(woken_migrating_task_is_not_held_back_by_queued_ones)
{
    for (long q = CORIO__POLL_INTERVAL - 2; q <= CORIO__POLL_INTERVAL; q++)
        roam_behind_chains(q);
    roam_behind_chains(2 * (long)CORIO__POLL_INTERVAL - 1);
    roam_behind_chains(-10); /* and a lone yielder */
}

/* ---- a spilled woken migrating task runs while the roam ring stays busy
 *
 * Found by review: the roam queue, like the run queue, popped its ring
 * first and its overflow only when the ring was empty. 600 migrating
 * tasks woken at once spill to the roam queue's overflow; two migrating
 * tasks that wake each other through semaphores then keep its ring from
 * emptying. Loop 1 is held by a pinned yielder, so only loop 0 runs them.
 * The last spilled task must run long before the pair stops on its own.
 */
enum { SPILLED_WAITERS = 600, PAIR_LIMIT = 300000 };
static _Atomic int spilled_waiting, spilled_done;
static _Atomic long pair_runs, pair_runs_when_all_done;
static corio_sem *pair_sems[2];

static void *spilled_waiter(void *arg)
{
    atomic_fetch_add(&spilled_waiting, 1);
    CHECK_OK(corio_event_wait(arg));
    if (atomic_fetch_add(&spilled_done, 1) + 1 == SPILLED_WAITERS)
        atomic_store(&pair_runs_when_all_done, atomic_load(&pair_runs));
    return NULL;
}

static void *wake_each_other(void *arg)
{
    int i = INT_OF(arg);
    for (;;) {
        CHECK_OK(corio_sem_acquire(pair_sems[i]));
        bool stop = atomic_fetch_add(&pair_runs, 1) >= PAIR_LIMIT;
        CHECK_OK(corio_sem_release(pair_sems[1 - i]));
        if (stop)
            return NULL;
    }
}

static void *main_spilled_roamers(void *arg)
{
    (void)arg;
    static corio_task *waiters[SPILLED_WAITERS];
    corio_task *spinner, *pair[2];
    atomic_store(&roam_spin_stop, false);
    atomic_store(&roam_spin_started, false);
    CHECK_OK(corio_spawn_on(&spinner, 1, keep_yielding, &roam_spin_stop));
    while (!atomic_load(&roam_spin_started))
        CHECK_OK(corio_sleep(CORIO_MSEC));
    corio_event *ev;
    CHECK_OK(corio_event_new(&ev));
    CHECK_OK(corio_sem_new(&pair_sems[0], 0));
    CHECK_OK(corio_sem_new(&pair_sems[1], 0));
    corio_spawn_opts o = migrate_opts();
    for (int i = 0; i < SPILLED_WAITERS; i++)
        CHECK_OK(corio_spawn_ex(&waiters[i], spilled_waiter, ev, &o));
    for (int i = 0; i < 2; i++)
        CHECK_OK(corio_spawn_ex(&pair[i], wake_each_other, PTR_OF(i), &o));
    CHECK(test_await(&spilled_waiting, SPILLED_WAITERS));
    CHECK_OK(corio_event_set(ev));
    CHECK(atomic_load(&corio__loop_current()->roam.overflow_len) > 0);
    CHECK_OK(corio_sem_release(pair_sems[0]));
    CHECK_OK(corio_gather(waiters, SPILLED_WAITERS, NULL));
    CHECK_OK(corio_gather(pair, 2, NULL));
    atomic_store(&roam_spin_stop, true);
    CHECK_OK(corio_join(spinner, NULL));
    corio_sem_free(pair_sems[0]);
    corio_sem_free(pair_sems[1]);
    corio_event_free(ev);
    long runs_when_all_done = atomic_load(&pair_runs_when_all_done);
    CHECK_LT(runs_when_all_done, PAIR_LIMIT / 2);
    return NULL;
}

TEST(spilled_woken_migrating_task_runs_while_the_roam_ring_stays_busy)
{
    /* On loop 0: with main taken by loop 1 (seen under Valgrind), the
     * waiters spilled there, behind the spinner, not on loop 0. */
    struct test_on_loop_0 body = {main_spilled_roamers, NULL};
    run_main_checked(2, test_main_on_loop_0, &body);
}

int main(int argc, char **argv)
{
    RUN(woken_tasks_leave_a_busy_loop);
    RUN(woken_backlog_wakes_an_idle_loop);
    RUN(stacks_do_not_pile_up);
    RUN(yielder_does_not_starve_a_woken_task);
    RUN(woken_migrating_task_is_not_held_back_by_queued_ones);
    RUN(spilled_woken_migrating_task_runs_while_the_roam_ring_stays_busy);
    RUN(bookkeeping_follows_the_task);
    RUN(descriptors_of_a_moving_task);
    RUN(stop_while_tasks_roam);
    RUN(published_load_never_wraps);
    RUN(flag_refused_with_light_or_chosen_loop);
    RUN(one_loop);
    return test_summary();
}
