/*
 * test_stress.c: bounded stress runs (seconds each, not minutes).
 *
 *   spawn_join_10m   10 million spawn+join across 2 loops, in windows of
 *                    100,000 (100,000 in all under TSan: CORIO_TEST_SCALE=10
 *                    and test_scaled_starts()).
 *   wake_storm       thousands of tasks on 2 loops wait on one event, or on
 *                    one wait group; every one of them must resume, round
 *                    after round.
 *   cancel_storm     tasks in every kind of wait are cancelled over and over
 *                    by cancellers on both loops; every cancellation they
 *                    see is one that was sent, and all finish when told to.
 *   memory_flat      100 cycles of 20,000 short tasks: resident memory
 *                    after cycle 100 is within 10% + 8 MiB of cycle 10.
 *   start_stop       1,000 runtimes started and stopped with tasks still
 *                    sleeping, joining, receiving, or in run_blocking.
 */
#define _GNU_SOURCE
#include <stdatomic.h>

#include "test.h"

/* ---- 10M spawn + join ---- */

static void *spawn_join_main(void *arg)
{
    long total = test_scaled_starts(10000000), window = 100000;
    if (window > total)
        window = total;
    corio_task **t = malloc((size_t)window * sizeof *t);
    void **r = malloc((size_t)window * sizeof *r);
    CHECK(t && r);
    for (long done = 0; done < total; done += window) {
        for (long i = 0; i < window; i++) {
            corio_spawn_opts opts;
            corio_spawn_opts_init(&opts);
            opts.flags = (i & 1) ? CORIO_TASK_LIGHT : 0;
            CHECK_OK(corio_spawn_ex(&t[i], test_ret_arg, PTR_OF(done + i), &opts));
        }
        CHECK_OK(corio_gather(t, (size_t)window, r));
        for (long i = 0; i < window; i++)
            CHECK_EQ(INT_OF(r[i]), done + i);
    }
    free(t);
    free(r);
    return NULL;
}

TEST(spawn_join_10m) { run_main_checked(2, spawn_join_main, NULL); }

/* ---- wake-up storms ---- */

struct storm {
    corio_event *go;
    corio_waitgroup *wg;
    _Atomic long resumed;
};

static void *event_waiter(void *arg)
{
    struct storm *s = arg;
    CHECK_OK(corio_event_wait(s->go));
    atomic_fetch_add(&s->resumed, 1);
    return NULL;
}

static void *wg_waiter(void *arg)
{
    struct storm *s = arg;
    CHECK_OK(corio_waitgroup_wait(s->wg));
    atomic_fetch_add(&s->resumed, 1);
    return NULL;
}

static void *storm_main(void *arg)
{
    long n = test_scaled(5000);
    corio_task **t = malloc((size_t)n * sizeof *t);
    for (int round = 0; round < 10; round++) {
        struct storm s;
        atomic_init(&s.resumed, 0);
        CHECK_OK(corio_event_new(&s.go));
        CHECK_OK(corio_waitgroup_new(&s.wg));
        CHECK_OK(corio_waitgroup_add(s.wg, 1));
        corio_fn fn = (round & 1) ? wg_waiter : event_waiter;
        for (long i = 0; i < n; i++) {
            corio_spawn_opts opts;
            corio_spawn_opts_init(&opts);
            opts.loop = (int)(i % 2);
            opts.flags = (i % 3 == 0) ? CORIO_TASK_LIGHT : 0;
            CHECK_OK(corio_spawn_ex(&t[i], fn, &s, &opts));
        }
        corio_sleep(2 * CORIO_MSEC); /* let most of them wait */
        if (round & 1)
            CHECK_OK(corio_waitgroup_done(s.wg));
        else
            CHECK_OK(corio_event_set(s.go));
        CHECK_OK(corio_gather(t, (size_t)n, NULL));
        CHECK_EQ(atomic_load(&s.resumed), n);
        corio_event_free(s.go);
        corio_waitgroup_free(s.wg);
    }
    free(t);
    return NULL;
}

TEST(wake_storm) { run_main_checked(2, storm_main, NULL); }

/* ---- cancellation storms ---- */

struct cstorm {
    corio_chan *ch;
    corio_sem *sem;
    corio_event *stop;
    _Atomic long cancels_sent, cancels_seen;
    _Atomic bool stopping;
};

static void *victim(void *arg)
{
    struct cstorm *s = arg;
    long kind = 0, v;
    while (!atomic_load(&s->stopping)) {
        int rc;
        switch (kind++ % 4) {
        case 0: rc = corio_sleep(50 * CORIO_MSEC); break;
        case 1: rc = corio_chan_recv_until(s->ch, &v, corio_deadline_in(20 * CORIO_MSEC)); break;
        case 2:
            rc = corio_sem_acquire_until(s->sem, corio_deadline_in(20 * CORIO_MSEC));
            if (rc == 0)
                corio_sem_release(s->sem);
            break;
        default: rc = corio_event_wait_until(s->stop, corio_deadline_in(20 * CORIO_MSEC)); break;
        }
        if (rc == CORIO_ECANCELED)
            atomic_fetch_add(&s->cancels_seen, 1);
        else
            CHECK(rc == 0 || rc == CORIO_ETIMEDOUT);
    }
    return NULL;
}

static void *canceller(void *arg)
{
    void **a = arg;
    struct cstorm *s = a[0];
    corio_task **victims = a[1];
    long n = INT_OF(a[2]), rounds = test_scaled(20000);
    uint64_t rng = 0x1234567 + (uint64_t)corio_loop_index();
    for (long i = 0; i < rounds; i++) {
        CHECK_OK(corio_cancel(victims[test_rand(&rng) % (uint64_t)n]));
        atomic_fetch_add(&s->cancels_sent, 1);
        if (i % 64 == 0)
            corio_yield();
    }
    return NULL;
}

static void *cancel_storm_main(void *arg)
{
    enum { VICTIMS = 64 };
    struct cstorm s;
    atomic_init(&s.cancels_sent, 0);
    atomic_init(&s.cancels_seen, 0);
    atomic_init(&s.stopping, false);
    CHECK_OK(corio_chan_new(&s.ch, sizeof(long), 1));
    CHECK_OK(corio_sem_new(&s.sem, 0));
    CHECK_OK(corio_event_new(&s.stop));
    corio_task *victims[VICTIMS], *cancellers[2];
    for (int i = 0; i < VICTIMS; i++)
        CHECK_OK(corio_spawn_on(&victims[i], (unsigned)(i % 2), victim, &s));
    void *args[3] = {&s, victims, PTR_OF(VICTIMS)};
    for (int i = 0; i < 2; i++)
        CHECK_OK(corio_spawn_on(&cancellers[i], (unsigned)i, canceller, args));
    CHECK_OK(corio_gather(cancellers, 2, NULL));
    atomic_store(&s.stopping, true);
    CHECK_OK(corio_event_set(s.stop));
    /* Victims drain their pending cancellations and stop. */
    CHECK_OK(corio_gather(victims, VICTIMS, NULL));
    long sent = atomic_load(&s.cancels_sent), seen = atomic_load(&s.cancels_seen);
    CHECK_GT(seen, 0);
    CHECK_LE(seen, sent); /* one cancel fails at most one call */
    corio_chan_free(s.ch);
    corio_sem_free(s.sem);
    corio_event_free(s.stop);
    return NULL;
}

TEST(cancel_storm) { run_main_checked(2, cancel_storm_main, NULL); }

/* ---- memory stays flat ---- */

static void *short_sleeper(void *arg)
{
    corio_sleep(INT_OF(arg) % 3 == 0 ? CORIO_MSEC / 10 : 0);
    return NULL;
}

/* RSS once the loops have idled long enough to give back the stacks
 * beyond those they keep (an idle loop trims after 20 ms, src/sched.c).
 * Read straight after a gather, one reading could come just after a trim
 * and the other just before one: 5 MB against 47 MB, seen on a loaded
 * machine. */
static long settled_rss_kib(void)
{
    CHECK_OK(corio_sleep(100 * CORIO_MSEC));
    return test_rss_kib();
}

static void *memory_main(void *arg)
{
    /* Starts, not just spawns: under TSan each costs a 768 KiB fiber
     * memset (200,000 of them outlasted the 600 s timeout on our AMD VM),
     * and TSan's lane does not check the RSS anyway (below). */
    long cycles = 100, per = test_scaled_starts(20000), warm = 0;
    corio_task **t = malloc((size_t)per * sizeof *t);
    for (long c = 1; c <= cycles; c++) {
        for (long i = 0; i < per; i++) {
            corio_spawn_opts opts;
            corio_spawn_opts_init(&opts);
            opts.flags = (i & 1) ? CORIO_TASK_LIGHT : 0;
            CHECK_OK(corio_spawn_ex(&t[i], short_sleeper, PTR_OF(i), &opts));
        }
        CHECK_OK(corio_gather(t, (size_t)per, NULL));
        if (c == 10)
            warm = settled_rss_kib();
    }
    /* A loop held up past the settling time trims later: read again
     * before calling it growth (a leak does not shrink by waiting). */
    long end = settled_rss_kib();
    for (int i = 0; i < 10 && end > warm + warm / 10 + 8 * 1024; i++)
        end = settled_rss_kib();
    fprintf(stderr, "memory_flat: RSS %ld KiB after warm-up, %ld KiB after %ld cycles\n", warm,
            end, cycles);
#ifndef TEST_SANITIZED
    CHECK_LE(end, warm + warm / 10 + 8 * 1024);
#else
    /* ASan keeps freed memory in quarantine (256 MB by default) and TSan
     * keeps shadow memory: their RSS grows by design. The normal lane
     * checks this. */
    (void)warm;
#endif
    free(t);
    return NULL;
}

TEST(memory_flat) { run_main_checked(2, memory_main, NULL); }

/* ---- start/stop with tasks still busy ---- */

static void *sleep_long(void *arg)
{
    corio_sleep(3600 * CORIO_SEC);
    return NULL;
}

static void *join_forever(void *arg)
{
    corio_join(arg, NULL); /* cancelled by the shutdown */
    return NULL;
}

static void *recv_forever(void *arg)
{
    long v;
    corio_chan_recv(arg, &v);
    return NULL;
}

static void *usleep_a_little(void *arg)
{
    usleep(200);
    return NULL;
}

static void *blocking_forever(void *arg)
{
    corio_run_blocking(usleep_a_little, NULL, NULL);
    corio_sleep(3600 * CORIO_SEC);
    return NULL;
}

static corio_chan *shared_chan;

static void *busy_main(void *arg)
{
    long i = INT_OF(arg);
    corio_task *sleeper;
    CHECK_OK(corio_spawn(&sleeper, sleep_long, NULL));
    CHECK_OK(corio_spawn(NULL, join_forever, sleeper));
    CHECK_OK(corio_spawn_on(NULL, 1, recv_forever, shared_chan));
    CHECK_OK(corio_spawn(NULL, blocking_forever, NULL));
    corio_spawn_opts opts;
    corio_spawn_opts_init(&opts);
    opts.flags = CORIO_TASK_LIGHT;
    CHECK_OK(corio_spawn_ex(NULL, sleep_long, NULL, &opts));
    if (i % 2)
        corio_yield(); /* sometimes let them all start */
    return NULL;
}

TEST(start_stop)
{
    CHECK_OK(corio_chan_new(&shared_chan, sizeof(long), 1));
    long cycles = test_scaled(1000);
    for (long i = 0; i < cycles; i++) {
        snprintf(test_watchdog_note, sizeof test_watchdog_note, "cycle %ld", i);
        corio_config cfg;
        corio_config_init(&cfg);
        cfg.loops = 2;
        run_main_cfg(&cfg, busy_main, PTR_OF(i));
    }
    corio_chan_free(shared_chan);
}

int main(int argc, char **argv)
{
    RUN(spawn_join_10m);
    RUN(wake_storm);
    RUN(cancel_storm);
    RUN(memory_flat);
    RUN(start_stop);
    return test_summary();
}
