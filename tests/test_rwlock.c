/*
 * test_rwlock.c: corio_rwlock, the read-write lock (corio.h, "Read-write
 * lock"), written from the header alone. What it checks:
 *  - many readers hold it at once: tasks on both loops, light and regular,
 *    all inside together (a count reaches N while none has left); a
 *    writer's try form is EBUSY and its timed wait ETIMEDOUT meanwhile;
 *  - a writer excludes readers and other writers: a plain two-field
 *    invariant under heavy mixed load on both loops, with light and
 *    migrating tasks, try forms included, and an exact count of writes;
 *  - fairness by Go's rule: while a writer waits, a new reader waits (try
 *    EBUSY, timed ETIMEDOUT, a blocking one queued behind the writer, the
 *    holder's own second read lock too); when a writer unlocks, every
 *    reader waiting at that moment holds the lock together, ahead of the
 *    next writer, even one that queued before them; writers go in the
 *    order they came;
 *  - hand-over: a woken task holds the lock before it has run (its loop
 *    held by a spinner), for a writer and for a batch of readers;
 *  - a writer whose wait times out or is cancelled holds nothing, and the
 *    readers queued only behind it go ahead without any unlock, while
 *    those behind a later writer still wait; a cancelled reader holds
 *    nothing either; a reader asking for the write lock waits for itself
 *    until its deadline;
 *  - errors: EPERM (unlock by a non-writer, read_unlock with none held,
 *    outside a task: a plain thread and a blocking-pool function),
 *    EDEADLK (any lock asked for while holding the write lock), EINVAL
 *    (NULL); a pending cancellation fails the blocking forms even on a
 *    free lock, which stays free, while the try forms are no
 *    cancellation point and leave it pending;
 *  - read locks are counted, not owned: another task (on another loop)
 *    may release one;
 *  - a stress run with random short deadlines, past deadlines, try forms
 *    and random cancellations, where part of the tasks wait FOREVER and
 *    are never cancelled (a lost wake-up hangs them, and the watchdog
 *    reports it): at the end the lock is free and the invariant holds.
 *
 * Whether a task is queued is seen, never guessed: right before its lock
 * call an actor spawns a marker task pinned to its own loop. The marker
 * can run only once the actor has suspended, and it notes whether the
 * actor's call had returned by then: if not, the actor is waiting in the
 * lock's queue. The tests below run their body on loop 0 and never rely
 * on which loop gets somewhere first: each step waits for the event it
 * needs (a flag, a marker), and orders are read from a sequence number
 * taken at acquisition, which a wrong order cannot fake.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>

#include "test.h"

/* ---- helpers ---- */

/* From a task: wait in 1 ms steps until *f >= v; fails after 10 s
 * (stretched in slow lanes), naming what it waited for. */
#define AWAIT(f, v) await_flag_((f), (v), #f, __LINE__)

static void await_flag_(_Atomic int *f, int v, const char *what, int line)
{
    corio_time_t give_up = corio_deadline_in(10 * CORIO_SEC * TEST_SLOW);
    while (atomic_load(f) < v) {
        if (corio_now() > give_up)
            FAIL_("line %d: gave up waiting for %s >= %d (it is %d)", line, what, v,
                  atomic_load(f));
        CHECK_OK(corio_sleep(CORIO_MSEC));
    }
}

enum { RD, WR };

struct scen {
    corio_rwlock *rw;
    _Atomic int seq;         /* taken by each acquisition, from 1 */
    _Atomic int readers_in;  /* actors holding a read lock now */
    _Atomic int writers_in;  /* actors holding the write lock now */
};

/* A task that asks for the lock once and records what happened. */
struct actor {
    struct scen *s;
    int kind;              /* RD or WR */
    bool hold;             /* keep the lock until `release`; else unlock at once */
    corio_time_t deadline; /* CORIO_FOREVER: the plain blocking call */
    _Atomic int queued;    /* the marker has run: the actor had suspended */
    _Atomic int returned_at_mark; /* ...and its call had already returned then */
    _Atomic int returned;  /* the call has returned */
    _Atomic int rc;
    _Atomic int got;       /* holds (or held) the lock */
    _Atomic int order;     /* s->seq at acquisition */
    _Atomic int release;
    _Atomic int finished;
};

static void *marker(void *arg)
{
    struct actor *a = arg;
    atomic_store(&a->returned_at_mark, atomic_load(&a->returned));
    atomic_store(&a->queued, 1);
    return NULL;
}

static void *actor_main(void *arg)
{
    struct actor *a = arg;
    struct scen *s = a->s;
    char canary[64]; /* a light actor's frame must come back intact */
    memset(canary, 'r' + a->kind, sizeof canary);
    /* Pinned to this loop: it can run only once we have suspended. */
    CHECK_OK(corio_spawn_on(NULL, (unsigned)corio_loop_index(), marker, a));
    int rc;
    if (a->kind == RD)
        rc = a->deadline == CORIO_FOREVER ? corio_rwlock_read_lock(s->rw)
                                          : corio_rwlock_read_lock_until(s->rw, a->deadline);
    else
        rc = a->deadline == CORIO_FOREVER ? corio_rwlock_write_lock(s->rw)
                                          : corio_rwlock_write_lock_until(s->rw, a->deadline);
    atomic_store(&a->rc, rc);
    atomic_store(&a->returned, 1);
    if (rc == 0) {
        atomic_store(&a->order, atomic_fetch_add(&s->seq, 1) + 1);
        if (a->kind == WR) {
            if (atomic_fetch_add(&s->writers_in, 1) != 0 || atomic_load(&s->readers_in) != 0)
                FAIL_("%s", "a writer got the lock while another task held it");
        } else {
            atomic_fetch_add(&s->readers_in, 1);
            if (atomic_load(&s->writers_in) != 0)
                FAIL_("%s", "a reader got the lock while a writer held it");
        }
        atomic_store(&a->got, 1);
        if (a->hold)
            AWAIT(&a->release, 1);
        if (a->kind == WR) {
            atomic_fetch_sub(&s->writers_in, 1);
            CHECK_OK(corio_rwlock_write_unlock(s->rw));
        } else {
            atomic_fetch_sub(&s->readers_in, 1);
            CHECK_OK(corio_rwlock_read_unlock(s->rw));
        }
    }
    for (size_t i = 0; i < sizeof canary; i++)
        CHECK_EQ(canary[i], 'r' + a->kind);
    atomic_store(&a->finished, 1);
    return NULL;
}

/* Task flavours: 0 regular, 1 light, 2 migrating (any loop). */
enum { REGULAR, LIGHT, MIGRATE };

static void start_actor(struct scen *s, struct actor *a, corio_task **t, int kind, int loop,
                        int flavour, bool hold, corio_time_t deadline)
{
    memset(a, 0, sizeof *a);
    a->s = s;
    a->kind = kind;
    a->hold = hold;
    a->deadline = deadline;
    atomic_store(&a->rc, 1);
    corio_spawn_opts o = test_on_loop(flavour == MIGRATE ? -1 : loop, flavour == LIGHT);
    if (flavour == MIGRATE)
        o.flags = CORIO_TASK_MIGRATE;
    CHECK_OK(corio_spawn_ex(t, actor_main, a, &o));
}

/* start_actor, then wait until it is suspended in its lock call. */
static void queue_actor(struct scen *s, struct actor *a, corio_task **t, int kind, int loop,
                        int flavour, corio_time_t deadline)
{
    start_actor(s, a, t, kind, loop, flavour, true, deadline);
    AWAIT(&a->queued, 1);
    if (atomic_load(&a->returned_at_mark))
        FAIL_("an actor (%s) did not wait: its call returned %s", kind == RD ? "reader" : "writer",
              corio_err_name(atomic_load(&a->rc)));
}

/* Like queue_actor, but the actor unlocks as soon as it gets the lock. */
static void queue_actor_brief(struct scen *s, struct actor *a, corio_task **t, int kind,
                              int loop, int flavour)
{
    start_actor(s, a, t, kind, loop, flavour, false, CORIO_FOREVER);
    AWAIT(&a->queued, 1);
    if (atomic_load(&a->returned_at_mark))
        FAIL_("an actor (%s) did not wait", kind == RD ? "reader" : "writer");
}

/* An actor that takes the lock at once and holds it (nothing in the way). */
static void holding_actor(struct scen *s, struct actor *a, corio_task **t, int kind, int loop,
                          int flavour)
{
    start_actor(s, a, t, kind, loop, flavour, true, CORIO_FOREVER);
    AWAIT(&a->got, 1);
    AWAIT(&a->queued, 1); /* its marker is done with it too */
}

static void scen_init(struct scen *s)
{
    memset(s, 0, sizeof *s);
    CHECK_OK(corio_rwlock_new(&s->rw));
}

/* The lock is free: a writer gets it at once. Then free it. */
static void scen_free(struct scen *s)
{
    CHECK_OK(corio_rwlock_try_write_lock(s->rw));
    CHECK_OK(corio_rwlock_write_unlock(s->rw));
    corio_rwlock_free(s->rw);
}

/* The caller may not get a read lock at once (a writer holds or waits). */
static void check_no_read(corio_rwlock *rw) { CHECK_ERR(corio_rwlock_try_read_lock(rw), CORIO_EBUSY); }

/* A spinner that holds its loop's thread, with no corio call, until told. */
struct spinner {
    _Atomic int running, stop;
};

static void *spin_task(void *arg)
{
    struct spinner *sp = arg;
    atomic_store(&sp->running, 1);
    corio_time_t give_up = corio_deadline_in(20 * CORIO_SEC * TEST_SLOW);
    while (!atomic_load(&sp->stop) && corio_now() < give_up)
        test_spin(100);
    return NULL;
}

/* Run body(arg) as a task on loop 0 of a 2-loop runtime (leak-checked). */
static void run_on_loop_0(corio_fn body, void *arg)
{
    struct test_on_loop_0 b = {body, arg};
    run_main_checked(2, test_main_on_loop_0, &b);
}

/* ---- 1. many readers at once ---- */

#define NREADERS 8

struct together {
    corio_rwlock *rw;
    _Atomic int inside, left, max_inside;
};

static void *together_reader(void *arg)
{
    struct together *g = arg;
    CHECK_OK(corio_rwlock_read_lock(g->rw));
    int now = atomic_fetch_add(&g->inside, 1) + 1;
    int m = atomic_load(&g->max_inside);
    while (now > m && !atomic_compare_exchange_weak(&g->max_inside, &m, now))
        ;
    /* Nobody leaves before all are in: the N-th entered while none had
     * left, so all N held the lock together. */
    AWAIT(&g->inside, NREADERS);
    atomic_fetch_add(&g->left, 1);
    CHECK_OK(corio_rwlock_read_unlock(g->rw));
    return NULL;
}

static void *body_readers_together(void *arg)
{
    (void)arg;
    struct together g = {0};
    CHECK_OK(corio_rwlock_new(&g.rw));
    /* The body holds a read lock too, so nobody can get through early. */
    CHECK_OK(corio_rwlock_read_lock(g.rw));
    corio_task *t[NREADERS];
    for (int i = 0; i < NREADERS; i++) {
        corio_spawn_opts o = test_on_loop(i % 2, i % 4 >= 2);
        CHECK_OK(corio_spawn_ex(&t[i], together_reader, &g, &o));
    }
    AWAIT(&g.inside, NREADERS);
    /* N + 1 readers hold it: a writer cannot have it, at once or with a
     * deadline (which is what is tested here: ETIMEDOUT on time). */
    CHECK_ERR(corio_rwlock_try_write_lock(g.rw), CORIO_EBUSY);
    CHECK_OK(corio_rwlock_try_read_lock(g.rw)); /* no writer waits: one more is fine */
    CHECK_OK(corio_rwlock_read_unlock(g.rw));
    CHECK_OK(corio_rwlock_read_unlock(g.rw));
    CHECK_OK(corio_gather(t, NREADERS, NULL));
    CHECK_EQ(atomic_load(&g.max_inside), NREADERS);
    CHECK_EQ(atomic_load(&g.left), NREADERS);
    /* All gone: free. */
    CHECK_OK(corio_rwlock_try_write_lock(g.rw));
    CHECK_OK(corio_rwlock_write_unlock(g.rw));
    corio_rwlock_free(g.rw);
    return NULL;
}

TEST(many_readers_hold_it_together)
{
    run_on_loop_0(body_readers_together, NULL);
}

/* A writer's timed wait behind a reader ends on time with ETIMEDOUT, and
 * its twin behind a writer too; each holds nothing after. */
static void *body_writer_deadline(void *arg)
{
    (void)arg;
    struct scen s;
    scen_init(&s);
    for (int held_by = RD; held_by <= WR; held_by++) {
        struct actor h;
        corio_task *ht;
        holding_actor(&s, &h, &ht, held_by, 1, REGULAR);
        test_stopwatch sw = test_stopwatch_start();
        CHECK_ERR(corio_rwlock_write_lock_until(s.rw, corio_deadline_in(50 * CORIO_MSEC)),
                  CORIO_ETIMEDOUT);
        CHECK_ELAPSED_WITHIN(&sw, 50 * CORIO_MSEC, CORIO_MSEC, 100 * CORIO_MSEC);
        /* A deadline already past: ETIMEDOUT without waiting. */
        CHECK_ERR(corio_rwlock_write_lock_until(s.rw, corio_now() - CORIO_SEC), CORIO_ETIMEDOUT);
        if (held_by == WR) {
            sw = test_stopwatch_start();
            CHECK_ERR(corio_rwlock_read_lock_until(s.rw, corio_deadline_in(30 * CORIO_MSEC)),
                      CORIO_ETIMEDOUT);
            CHECK_ELAPSED_WITHIN(&sw, 30 * CORIO_MSEC, CORIO_MSEC, 100 * CORIO_MSEC);
        } else {
            /* The timed-out writer left no trace: readers still come in. */
            CHECK_OK(corio_rwlock_try_read_lock(s.rw));
            CHECK_OK(corio_rwlock_read_unlock(s.rw));
        }
        atomic_store(&h.release, 1);
        CHECK_OK(corio_join(ht, NULL));
        /* ...and it holds nothing: the lock is free now. */
        CHECK_OK(corio_rwlock_try_write_lock(s.rw));
        CHECK_OK(corio_rwlock_write_unlock(s.rw));
    }
    scen_free(&s);
    return NULL;
}

TEST(timed_waits_end_on_time_holding_nothing)
{
    run_on_loop_0(body_writer_deadline, NULL);
}

/* ---- 2. a writer excludes everyone: stress, optionally with chaos ---- */

struct stress {
    corio_rwlock *rw;
    long a, b;                 /* plain: writers keep them equal */
    long iters;
    bool chaos;                /* deadlines, try forms, cancellations */
    _Atomic int writers_in, readers_in, max_readers;
    _Atomic long writes, reads, timeouts, cancels, busy;
    _Atomic int done;
};

struct worker {
    struct stress *s;
    int id;
    bool cancellable;          /* main may cancel it */
    bool forever;              /* only FOREVER waits (a lost wake-up hangs it) */
};

static void pause_inside(uint64_t *seed, bool may_be_cancelled)
{
    uint64_t r = test_rand(seed) % 16;
    if (r == 0) {
        int rc = corio_yield(); /* holding the lock across a suspension */
        if (!(rc == 0 || (may_be_cancelled && rc == CORIO_ECANCELED)))
            FAIL_("yield inside the lock returned %s", corio_err_name(rc));
    } else if (r < 4) {
        test_spin((unsigned)(r * 50));
    }
}

static void *stress_worker(void *arg)
{
    struct worker *w = arg;
    struct stress *s = w->s;
    uint64_t seed = 0x9E3779B97F4A7C15ull * (uint64_t)(w->id + 1);
    for (long i = 0; i < s->iters; i++) {
        uint64_t r = test_rand(&seed);
        bool write = r % 4 == 0;
        bool try_form = s->chaos && !w->forever && (r >> 8) % 8 == 0;
        corio_time_t deadline = CORIO_FOREVER;
        if (s->chaos && !w->forever && !try_form) {
            switch ((r >> 16) % 6) {
            case 0: case 1: break;                                   /* forever */
            case 2: deadline = corio_now() - 1; break;               /* already past */
            default: deadline = corio_deadline_in((int64_t)((r >> 24) % 300) * CORIO_USEC);
            }
        }
        int rc;
        if (write)
            rc = try_form ? corio_rwlock_try_write_lock(s->rw)
                 : deadline == CORIO_FOREVER && (r >> 40) % 2 ? corio_rwlock_write_lock(s->rw)
                                                              : corio_rwlock_write_lock_until(s->rw, deadline);
        else
            rc = try_form ? corio_rwlock_try_read_lock(s->rw)
                 : deadline == CORIO_FOREVER && (r >> 40) % 2 ? corio_rwlock_read_lock(s->rw)
                                                              : corio_rwlock_read_lock_until(s->rw, deadline);
        if (rc == CORIO_ETIMEDOUT && deadline != CORIO_FOREVER && !try_form) {
            atomic_fetch_add(&s->timeouts, 1);
            continue;
        }
        if (rc == CORIO_ECANCELED && w->cancellable && !try_form) {
            atomic_fetch_add(&s->cancels, 1);
            continue;
        }
        if (rc == CORIO_EBUSY && try_form) {
            atomic_fetch_add(&s->busy, 1);
            continue;
        }
        if (rc != 0)
            FAIL_("worker %d: %s lock returned %s", w->id, write ? "write" : "read",
                  corio_err_name(rc));
        if (write) {
            if (atomic_fetch_add(&s->writers_in, 1) != 0)
                FAIL_("%s", "two writers inside at once");
            if (atomic_load(&s->readers_in) != 0)
                FAIL_("%s", "a writer inside with readers");
            long v = s->a;
            CHECK_EQ(s->b, v);
            s->a = v + 1;
            pause_inside(&seed, w->cancellable);
            s->b = v + 1;
            atomic_fetch_sub(&s->writers_in, 1);
            atomic_fetch_add(&s->writes, 1);
            CHECK_OK(corio_rwlock_write_unlock(s->rw));
        } else {
            int now = atomic_fetch_add(&s->readers_in, 1) + 1;
            int m = atomic_load(&s->max_readers);
            while (now > m && !atomic_compare_exchange_weak(&s->max_readers, &m, now))
                ;
            if (atomic_load(&s->writers_in) != 0)
                FAIL_("%s", "a reader inside with a writer");
            long a = *(volatile long *)&s->a;
            pause_inside(&seed, w->cancellable);
            long b = *(volatile long *)&s->b;
            if (a != b)
                FAIL_("reader saw a half-done write: a %ld, b %ld", a, b);
            if (atomic_load(&s->writers_in) != 0)
                FAIL_("%s", "a writer came in while a reader held the lock");
            atomic_fetch_sub(&s->readers_in, 1);
            atomic_fetch_add(&s->reads, 1);
            CHECK_OK(corio_rwlock_read_unlock(s->rw));
        }
    }
    atomic_fetch_add(&s->done, 1);
    return NULL;
}

#define WORKERS 12

/* Worker i's flavour: regular on loop 0 or 1, light on loop 0 or 1, or
 * migrating. */
static corio_spawn_opts worker_opts(int i)
{
    corio_spawn_opts o;
    switch (i % 6) {
    case 0: case 1: o = test_on_loop(i % 2, false); break;
    case 2: case 3: o = test_on_loop(i % 2, true); break;
    default:
        corio_spawn_opts_init(&o);
        o.flags = CORIO_TASK_MIGRATE;
    }
    return o;
}

static void *main_stress(void *arg)
{
    struct stress *s = arg;
    CHECK_OK(corio_rwlock_new(&s->rw));
    struct worker w[WORKERS];
    corio_task *t[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        /* In chaos, a third of the workers only wait FOREVER and are
         * never cancelled: a lost wake-up leaves one of them hanging. */
        bool calm = s->chaos ? i % 3 == 0 : true;
        w[i] = (struct worker){.s = s, .id = i, .cancellable = !calm, .forever = calm};
        corio_spawn_opts o = worker_opts(i);
        CHECK_OK(corio_spawn_ex(&t[i], stress_worker, &w[i], &o));
    }
    if (s->chaos) {
        /* Cancel random cancellable workers until all are done (a finished
         * one ignores it; its handle stays valid until the gather). */
        uint64_t seed = 12345;
        while (atomic_load(&s->done) < WORKERS) {
            uint64_t r = test_rand(&seed);
            int i = (int)(r % WORKERS);
            if (w[i].cancellable)
                CHECK_OK(corio_cancel(t[i]));
            if ((r >> 32) % 4 == 0)
                CHECK_OK(corio_sleep((int64_t)((r >> 40) % 200) * CORIO_USEC));
            else
                CHECK_OK(corio_yield());
        }
    }
    CHECK_OK(corio_gather(t, WORKERS, NULL));
    CHECK_EQ(atomic_load(&s->done), WORKERS);
    /* Free at the end, and the invariant intact with every write counted. */
    CHECK_OK(corio_rwlock_try_write_lock(s->rw));
    CHECK_EQ(s->a, s->b);
    CHECK_EQ(s->a, atomic_load(&s->writes));
    CHECK_OK(corio_rwlock_write_unlock(s->rw));
    CHECK_OK(corio_rwlock_try_read_lock(s->rw));
    CHECK_OK(corio_rwlock_read_unlock(s->rw));
    CHECK_ERR(corio_rwlock_read_unlock(s->rw), CORIO_EPERM);
    corio_rwlock_free(s->rw);
    return NULL;
}

TEST(writer_excludes_everyone_under_mixed_load)
{
    struct stress s = {.iters = test_scaled(6000)};
    run_main_checked(2, main_stress, &s);
    fprintf(stderr, "   %ld reads, %ld writes, at most %d readers at once\n",
            atomic_load(&s.reads), atomic_load(&s.writes), atomic_load(&s.max_readers));
    CHECK_EQ(atomic_load(&s.reads) + atomic_load(&s.writes), s.iters * WORKERS);
    CHECK_EQ(atomic_load(&s.timeouts) + atomic_load(&s.cancels) + atomic_load(&s.busy), 0);
}

TEST(stress_with_deadlines_try_forms_and_cancellations)
{
    struct stress s = {.iters = test_scaled(6000), .chaos = true};
    run_main_checked(2, main_stress, &s);
    fprintf(stderr,
            "   %ld reads, %ld writes, %ld timed out, %ld cancelled, %ld busy, "
            "at most %d readers at once\n",
            atomic_load(&s.reads), atomic_load(&s.writes), atomic_load(&s.timeouts),
            atomic_load(&s.cancels), atomic_load(&s.busy), atomic_load(&s.max_readers));
    CHECK_EQ(atomic_load(&s.reads) + atomic_load(&s.writes) + atomic_load(&s.timeouts) +
                 atomic_load(&s.cancels) + atomic_load(&s.busy),
             s.iters * WORKERS);
}

/* ---- 3. a waiting writer holds back new readers ---- */

static void *body_writer_waits(void *arg)
{
    (void)arg;
    struct scen s;
    scen_init(&s);
    /* This task holds a read lock; W queues behind it, on the other loop. */
    CHECK_OK(corio_rwlock_read_lock(s.rw));
    struct actor w, r2, r3;
    corio_task *wt, *r2t, *r3t;
    queue_actor(&s, &w, &wt, WR, 1, REGULAR, CORIO_FOREVER);
    /* New readers wait behind W: at once EBUSY, timed ETIMEDOUT, and
     * this task's own second read lock too (no recursion past a writer). */
    check_no_read(s.rw);
    CHECK_ERR(corio_rwlock_try_write_lock(s.rw), CORIO_EBUSY);
    test_stopwatch sw = test_stopwatch_start();
    CHECK_ERR(corio_rwlock_read_lock_until(s.rw, corio_deadline_in(20 * CORIO_MSEC)),
              CORIO_ETIMEDOUT);
    CHECK_ELAPSED_WITHIN(&sw, 20 * CORIO_MSEC, CORIO_MSEC, 100 * CORIO_MSEC);
    /* Blocking readers, here and on the other loop, queue behind W. */
    queue_actor(&s, &r2, &r2t, RD, 0, LIGHT, CORIO_FOREVER);
    queue_actor(&s, &r3, &r3t, RD, 1, REGULAR, CORIO_FOREVER);
    CHECK_EQ(atomic_load(&w.got), 0);
    /* The timed-out and refused readers above left nothing behind: our one
     * unlock lets W in. */
    CHECK_OK(corio_rwlock_read_unlock(s.rw));
    AWAIT(&w.got, 1);
    check_no_read(s.rw);
    CHECK_EQ(atomic_load(&r2.got) + atomic_load(&r3.got), 0);
    atomic_store(&w.release, 1);
    AWAIT(&r2.got, 1);
    AWAIT(&r3.got, 1);
    CHECK_LT(atomic_load(&w.order), atomic_load(&r2.order));
    CHECK_LT(atomic_load(&w.order), atomic_load(&r3.order));
    /* Both readers hold it together. */
    CHECK_EQ(atomic_load(&s.readers_in), 2);
    atomic_store(&r2.release, 1);
    atomic_store(&r3.release, 1);
    corio_task *all[3] = {wt, r2t, r3t};
    CHECK_OK(corio_gather(all, 3, NULL));
    scen_free(&s);
    return NULL;
}

TEST(waiting_writer_holds_back_new_readers)
{
    run_on_loop_0(body_writer_waits, NULL);
}

/* ---- 4. a writer's unlock lets every waiting reader in at once ---- */

#define BATCH 4

static void *body_reader_batch(void *arg)
{
    (void)arg;
    struct scen s;
    scen_init(&s);
    CHECK_OK(corio_rwlock_write_lock(s.rw));
    /* Queued while we hold the write lock: W1 first, then readers R0..R2,
     * then writer W2, then reader R3. */
    struct actor w1, w2, r[BATCH];
    corio_task *w1t, *w2t, *rt[BATCH];
    queue_actor(&s, &w1, &w1t, WR, 1, REGULAR, CORIO_FOREVER);
    for (int i = 0; i < BATCH - 1; i++)
        queue_actor(&s, &r[i], &rt[i], RD, i % 2, i == 1 ? LIGHT : REGULAR, CORIO_FOREVER);
    queue_actor(&s, &w2, &w2t, WR, 0, LIGHT, CORIO_FOREVER);
    queue_actor(&s, &r[BATCH - 1], &rt[BATCH - 1], RD, 1, LIGHT, CORIO_FOREVER);
    /* Our unlock: every reader waiting now gets the lock at once, ahead of
     * both waiting writers (W1 came before them, but readers that waited
     * through a write go next: Go's rule). They all hold it together:
     * none lets go until told. */
    CHECK_OK(corio_rwlock_write_unlock(s.rw));
    for (int i = 0; i < BATCH; i++)
        AWAIT(&r[i].got, 1);
    CHECK_EQ(atomic_load(&s.readers_in), BATCH);
    CHECK_EQ(atomic_load(&w1.got) + atomic_load(&w2.got), 0);
    /* Writers wait: a new reader waits behind them. */
    check_no_read(s.rw);
    CHECK_ERR(corio_rwlock_try_write_lock(s.rw), CORIO_EBUSY);
    for (int i = 0; i < BATCH; i++)
        atomic_store(&r[i].release, 1);
    /* Then the writers, in the order they came. */
    AWAIT(&w1.got, 1);
    CHECK_EQ(atomic_load(&w2.got), 0);
    atomic_store(&w1.release, 1);
    AWAIT(&w2.got, 1);
    atomic_store(&w2.release, 1);
    for (int i = 0; i < BATCH; i++)
        CHECK_LT(atomic_load(&r[i].order), atomic_load(&w1.order));
    CHECK_LT(atomic_load(&w1.order), atomic_load(&w2.order));
    CHECK_OK(corio_gather(rt, BATCH, NULL));
    CHECK_OK(corio_join(w1t, NULL));
    CHECK_OK(corio_join(w2t, NULL));
    scen_free(&s);
    return NULL;
}

TEST(writer_unlock_admits_every_waiting_reader_before_the_next_writer)
{
    run_on_loop_0(body_reader_batch, NULL);
}

/* Readers queued behind a waiting writer (W2, while W1 holds) are
 * served after W2, and W2's own unlock lets all of them in together,
 * ahead of W3 queued after them. */
static void *body_batches(void *arg)
{
    (void)arg;
    struct scen s;
    scen_init(&s);
    struct actor w1, w2, w3, r[2];
    corio_task *w1t, *w2t, *w3t, *rt[2];
    holding_actor(&s, &w1, &w1t, WR, 1, LIGHT);
    /* A reader holding nothing but asking while W1 holds: EBUSY. */
    check_no_read(s.rw);
    queue_actor(&s, &r[0], &rt[0], RD, 0, REGULAR, CORIO_FOREVER);
    queue_actor(&s, &w2, &w2t, WR, 0, REGULAR, CORIO_FOREVER);
    queue_actor(&s, &r[1], &rt[1], RD, 1, REGULAR, CORIO_FOREVER);
    queue_actor(&s, &w3, &w3t, WR, 1, REGULAR, CORIO_FOREVER);
    atomic_store(&w1.release, 1);
    /* W1's unlock: both readers waiting at that moment, then W2, W3. */
    AWAIT(&r[0].got, 1);
    AWAIT(&r[1].got, 1);
    CHECK_EQ(atomic_load(&w2.got) + atomic_load(&w3.got), 0);
    atomic_store(&r[0].release, 1);
    atomic_store(&r[1].release, 1);
    AWAIT(&w2.got, 1);
    CHECK_EQ(atomic_load(&w3.got), 0);
    /* While W2 holds, two more readers queue (behind W3 too). */
    struct actor r2[2];
    corio_task *r2t[2];
    queue_actor(&s, &r2[0], &r2t[0], RD, 0, MIGRATE, CORIO_FOREVER);
    queue_actor(&s, &r2[1], &r2t[1], RD, 1, LIGHT, CORIO_FOREVER);
    atomic_store(&w2.release, 1);
    /* W2's unlock: those two hold it together, ahead of W3. */
    AWAIT(&r2[0].got, 1);
    AWAIT(&r2[1].got, 1);
    CHECK_EQ(atomic_load(&s.readers_in), 2);
    CHECK_EQ(atomic_load(&w3.got), 0);
    atomic_store(&r2[0].release, 1);
    atomic_store(&r2[1].release, 1);
    AWAIT(&w3.got, 1);
    atomic_store(&w3.release, 1);
    int o_w1 = atomic_load(&w1.order), o_w2 = atomic_load(&w2.order), o_w3 = atomic_load(&w3.order);
    for (int i = 0; i < 2; i++) {
        CHECK_LT(o_w1, atomic_load(&r[i].order));
        CHECK_LT(atomic_load(&r[i].order), o_w2);
        CHECK_LT(o_w2, atomic_load(&r2[i].order));
        CHECK_LT(atomic_load(&r2[i].order), o_w3);
    }
    corio_task *all[7] = {w1t, w2t, w3t, rt[0], rt[1], r2t[0], r2t[1]};
    CHECK_OK(corio_gather(all, 7, NULL));
    scen_free(&s);
    return NULL;
}

TEST(readers_and_writers_alternate_in_batches)
{
    run_on_loop_0(body_batches, NULL);
}

/* ---- 5. writers in the order they came ---- */

#define NWRITERS 6

static void *body_writers_fifo(void *arg)
{
    (void)arg;
    struct scen s;
    scen_init(&s);
    CHECK_OK(corio_rwlock_write_lock(s.rw));
    struct actor w[NWRITERS];
    corio_task *t[NWRITERS];
    for (int i = 0; i < NWRITERS; i++) /* each unlocks as soon as it has the lock */
        queue_actor_brief(&s, &w[i], &t[i], WR, (i / 2) % 2, i % 2 ? LIGHT : REGULAR);
    CHECK_OK(corio_rwlock_write_unlock(s.rw));
    CHECK_OK(corio_gather(t, NWRITERS, NULL));
    for (int i = 0; i < NWRITERS; i++) {
        CHECK_OK(atomic_load(&w[i].rc));
        CHECK_EQ(atomic_load(&w[i].order), i + 1);
    }
    scen_free(&s);
    return NULL;
}

TEST(writers_are_served_in_the_order_they_came)
{
    run_on_loop_0(body_writers_fifo, NULL);
}

/* ---- 6. hand-over: a woken task holds the lock before it runs ---- */

static void *body_hand_over(void *arg)
{
    (void)arg;
    struct scen s;
    scen_init(&s);
    corio_task *spt;

    /* To a writer: we hold a read lock, W waits on loop 1; loop 1 is then
     * held by a spinner, so W cannot run. Our unlock hands it the lock. */
    CHECK_OK(corio_rwlock_read_lock(s.rw));
    struct actor w;
    corio_task *wt;
    queue_actor(&s, &w, &wt, WR, 1, REGULAR, CORIO_FOREVER);
    struct spinner sp = {0};
    CHECK_OK(corio_spawn_on(&spt, 1, spin_task, &sp));
    AWAIT(&sp.running, 1);
    CHECK_OK(corio_rwlock_read_unlock(s.rw));
    CHECK_ERR(corio_rwlock_try_write_lock(s.rw), CORIO_EBUSY);
    check_no_read(s.rw);
    CHECK_EQ(atomic_load(&w.returned), 0); /* not run yet: held for it */
    atomic_store(&sp.stop, 1);
    CHECK_OK(corio_join(spt, NULL));
    AWAIT(&w.got, 1);

    atomic_store(&w.release, 1);
    CHECK_OK(corio_join(wt, NULL));

    /* To readers: we hold the write lock; two readers wait on loop 1,
     * which a spinner then holds. Our unlock makes them holders: a writer
     * is refused, a reader is let in (no writer waits), all before they
     * run. */
    CHECK_OK(corio_rwlock_write_lock(s.rw));
    struct actor r[2];
    corio_task *rt[2];
    queue_actor(&s, &r[0], &rt[0], RD, 1, REGULAR, CORIO_FOREVER);
    queue_actor(&s, &r[1], &rt[1], RD, 1, LIGHT, CORIO_FOREVER);
    sp = (struct spinner){0};
    CHECK_OK(corio_spawn_on(&spt, 1, spin_task, &sp));
    AWAIT(&sp.running, 1);
    CHECK_OK(corio_rwlock_write_unlock(s.rw));
    CHECK_ERR(corio_rwlock_try_write_lock(s.rw), CORIO_EBUSY);
    CHECK_OK(corio_rwlock_try_read_lock(s.rw));
    CHECK_OK(corio_rwlock_read_unlock(s.rw));
    CHECK_EQ(atomic_load(&r[0].returned) + atomic_load(&r[1].returned), 0);
    atomic_store(&sp.stop, 1);
    CHECK_OK(corio_join(spt, NULL));
    AWAIT(&r[0].got, 1);
    AWAIT(&r[1].got, 1);
    atomic_store(&r[0].release, 1);
    atomic_store(&r[1].release, 1);
    CHECK_OK(corio_gather(rt, 2, NULL));
    scen_free(&s);
    return NULL;
}

TEST(hand_over_a_woken_task_holds_the_lock_before_it_runs)
{
    run_on_loop_0(body_hand_over, NULL);
}

/* ---- 7. a writer that gives up lets its readers go ---- */

/* W waits behind reader R0 (this task) until it is cancelled; reader R1
 * queued behind W only. On W's cancellation R1 gets the lock with no
 * unlock at all; W2 and R2, queued after, still wait (behind W2). */
static void *body_cancelled_writer(void *arg)
{
    (void)arg;
    struct scen s;
    scen_init(&s);
    for (int round = 0; round < 4; round++) {
        int wl = round % 2, rl = (round / 2) % 2; /* every pair of loops */
        CHECK_OK(corio_rwlock_read_lock(s.rw));
        struct actor w, r1, w2, r2;
        corio_task *wt, *r1t, *w2t, *r2t;
        queue_actor(&s, &w, &wt, WR, wl, round == 3 ? LIGHT : REGULAR, CORIO_FOREVER);
        queue_actor(&s, &r1, &r1t, RD, rl, round == 2 ? LIGHT : REGULAR, CORIO_FOREVER);
        queue_actor(&s, &w2, &w2t, WR, 1 - wl, REGULAR, CORIO_FOREVER);
        start_actor(&s, &r2, &r2t, RD, rl, REGULAR, false, CORIO_FOREVER);
        AWAIT(&r2.queued, 1);
        CHECK_EQ(atomic_load(&r2.returned_at_mark), 0);
        CHECK_OK(corio_cancel(wt));
        CHECK_OK(corio_join(wt, NULL));
        CHECK_ERR(atomic_load(&w.rc), CORIO_ECANCELED);
        CHECK_EQ(atomic_load(&w.got), 0);
        /* R1 waited only behind W: it goes ahead while we still hold ours. */
        AWAIT(&r1.got, 1);
        CHECK_EQ(atomic_load(&s.readers_in), 1); /* R1 (we are no actor) */
        /* W2 still waits, and so does R2 behind it; new readers too. */
        check_no_read(s.rw);
        CHECK_EQ(atomic_load(&w2.got), 0);
        /* Both readers go: W2, then R2 (which unlocks at once). */
        atomic_store(&r1.release, 1);
        CHECK_OK(corio_rwlock_read_unlock(s.rw));
        AWAIT(&w2.got, 1);
        atomic_store(&w2.release, 1);
        corio_task *all[3] = {r1t, w2t, r2t};
        CHECK_OK(corio_gather(all, 3, NULL));
        CHECK_LT(atomic_load(&r1.order), atomic_load(&w2.order));
        CHECK_LT(atomic_load(&w2.order), atomic_load(&r2.order));
        /* W holds nothing: free. */
        CHECK_OK(corio_rwlock_try_write_lock(s.rw));
        CHECK_OK(corio_rwlock_write_unlock(s.rw));
    }
    scen_free(&s);
    return NULL;
}

TEST(cancelled_writer_holds_nothing_and_lets_its_readers_go)
{
    run_on_loop_0(body_cancelled_writer, NULL);
}

/* Found by review: W's wait ends (cancelled) while its loop is held by a
 * spinner, so W is still queued when the lock comes free. The hand-over
 * must pass W over in arrival order: R1, which came after W and before
 * W2, gets the lock; W2 waits. Without W2, R1 gets the free lock at
 * once rather than when W's loop next runs. Before the fix the last
 * reader out handed the lock to W2 (or to nobody, R1 waiting on a free
 * lock). */
static void *body_dead_writer_passed_over(void *arg)
{
    (void)arg;
    struct scen s;
    scen_init(&s);
    for (int with_w2 = 0; with_w2 < 2; with_w2++) {
        CHECK_OK(corio_rwlock_read_lock(s.rw)); /* R0: this task */
        struct actor w, r1, w2;
        corio_task *wt, *r1t, *w2t = NULL;
        queue_actor(&s, &w, &wt, WR, 1, REGULAR, CORIO_FOREVER);
        queue_actor(&s, &r1, &r1t, RD, 0, REGULAR, CORIO_FOREVER);
        if (with_w2)
            queue_actor(&s, &w2, &w2t, WR, 0, REGULAR, CORIO_FOREVER);
        struct spinner sp = {0};
        corio_task *spt;
        CHECK_OK(corio_spawn_on(&spt, 1, spin_task, &sp));
        AWAIT(&sp.running, 1);
        CHECK_OK(corio_cancel(wt)); /* W's wait ends; W cannot run */
        CHECK_OK(corio_rwlock_read_unlock(s.rw)); /* nobody holds now */
        AWAIT(&r1.got, 1);
        CHECK_EQ(atomic_load(&w.returned), 0); /* W is still held off */
        if (with_w2)
            CHECK_EQ(atomic_load(&w2.got), 0);
        atomic_store(&sp.stop, 1);
        CHECK_OK(corio_join(spt, NULL));
        CHECK_OK(corio_join(wt, NULL));
        CHECK_ERR(atomic_load(&w.rc), CORIO_ECANCELED);
        atomic_store(&r1.release, 1);
        CHECK_OK(corio_join(r1t, NULL));
        if (with_w2) {
            AWAIT(&w2.got, 1);
            atomic_store(&w2.release, 1);
            CHECK_OK(corio_join(w2t, NULL));
            CHECK_LT(atomic_load(&r1.order), atomic_load(&w2.order));
        }
    }
    scen_free(&s);
    return NULL;
}

TEST(writer_whose_wait_ended_is_passed_over_in_order)
{
    run_on_loop_0(body_dead_writer_passed_over, NULL);
}

/* The same with a deadline. The writer must still be waiting when the
 * reader queues behind it, which a deadline cannot promise: the reader's
 * marker tells whether it did wait, and a round where the writer had
 * already gone is tried again with a longer deadline. */
static void *body_timed_out_writer(void *arg)
{
    (void)arg;
    struct scen s;
    scen_init(&s);
    int64_t wait = 30 * CORIO_MSEC;
    int scenarios = 0;
    for (int attempt = 0; attempt < 8 && scenarios < 4; attempt++, wait *= 2) {
        int wl = scenarios % 2, rl = (scenarios / 2) % 2;
        CHECK_OK(corio_rwlock_read_lock(s.rw));
        struct actor w, r1;
        corio_task *wt, *r1t;
        start_actor(&s, &w, &wt, WR, wl, REGULAR, true, corio_deadline_in(wait));
        AWAIT(&w.queued, 1);
        start_actor(&s, &r1, &r1t, RD, rl, scenarios == 1 ? LIGHT : REGULAR, true, CORIO_FOREVER);
        AWAIT(&r1.queued, 1);
        bool waited = atomic_load(&w.returned_at_mark) == 0 &&
                      atomic_load(&r1.returned_at_mark) == 0;
        /* However it went, W times out (we hold a read lock throughout)
         * and R1 gets the lock without our unlock. */
        CHECK_OK(corio_join(wt, NULL));
        CHECK_ERR(atomic_load(&w.rc), CORIO_ETIMEDOUT);
        AWAIT(&r1.got, 1);
        /* W holds nothing: readers come in, and once we both let go, a
         * writer does. */
        CHECK_OK(corio_rwlock_try_read_lock(s.rw));
        CHECK_OK(corio_rwlock_read_unlock(s.rw));
        atomic_store(&r1.release, 1);
        CHECK_OK(corio_join(r1t, NULL));
        CHECK_OK(corio_rwlock_read_unlock(s.rw));
        CHECK_OK(corio_rwlock_try_write_lock(s.rw));
        CHECK_OK(corio_rwlock_write_unlock(s.rw));
        if (waited)
            scenarios++;
    }
    fprintf(stderr, "   %d rounds where the reader waited behind the writer\n", scenarios);
    CHECK_EQ(scenarios, 4);
    scen_free(&s);
    return NULL;
}

TEST(timed_out_writer_holds_nothing_and_lets_its_readers_go)
{
    run_on_loop_0(body_timed_out_writer, NULL);
}

/* A writer that times out or is cancelled while another writer holds:
 * the readers behind it now wait behind the holder only, and get the
 * lock at its unlock; nothing is left held. Cancelled and timed-out
 * readers hold nothing either. */
static void *body_giving_up_behind_a_writer(void *arg)
{
    (void)arg;
    struct scen s;
    scen_init(&s);
    for (int how = 0; how < 2; how++) {
        CHECK_OK(corio_rwlock_write_lock(s.rw));
        struct actor w, r, rc, rt2;
        corio_task *wt, *rtk, *rct, *rt2t;
        queue_actor(&s, &w, &wt, WR, 1, how ? LIGHT : REGULAR, CORIO_FOREVER);
        queue_actor(&s, &r, &rtk, RD, 0, REGULAR, CORIO_FOREVER);
        queue_actor(&s, &rc, &rct, RD, 1, REGULAR, CORIO_FOREVER);
        /* A reader with a deadline: times out while we hold. */
        start_actor(&s, &rt2, &rt2t, RD, how, REGULAR, true, corio_deadline_in(20 * CORIO_MSEC));
        AWAIT(&rt2.queued, 1);
        CHECK_OK(corio_join(rt2t, NULL));
        CHECK_ERR(atomic_load(&rt2.rc), CORIO_ETIMEDOUT);
        CHECK_OK(corio_cancel(rct));
        CHECK_OK(corio_join(rct, NULL));
        CHECK_ERR(atomic_load(&rc.rc), CORIO_ECANCELED);
        CHECK_OK(corio_cancel(wt));
        CHECK_OK(corio_join(wt, NULL));
        CHECK_ERR(atomic_load(&w.rc), CORIO_ECANCELED);
        /* We still hold the write lock: R still waits. */
        CHECK_ERR(corio_rwlock_try_read_lock(s.rw), CORIO_EDEADLK);
        CHECK_EQ(atomic_load(&r.got), 0);
        CHECK_OK(corio_rwlock_write_unlock(s.rw));
        AWAIT(&r.got, 1);
        /* R alone holds a read lock: another reader may come in at once
         * (no writer waits any more), a writer may not. */
        CHECK_OK(corio_rwlock_try_read_lock(s.rw));
        CHECK_OK(corio_rwlock_read_unlock(s.rw));
        CHECK_ERR(corio_rwlock_try_write_lock(s.rw), CORIO_EBUSY);
        atomic_store(&r.release, 1);
        CHECK_OK(corio_join(rtk, NULL));
        /* Nothing held by those who gave up. */
        CHECK_OK(corio_rwlock_try_write_lock(s.rw));
        CHECK_OK(corio_rwlock_write_unlock(s.rw));
    }
    scen_free(&s);
    return NULL;
}

TEST(giving_up_behind_a_holding_writer_leaves_nothing_held)
{
    run_on_loop_0(body_giving_up_behind_a_writer, NULL);
}

/* ---- 8. errors ---- */

static void *outside_task_calls(void *arg)
{
    corio_rwlock *rw = arg;
    /* Every blocking call and the write side need a task. */
    if (corio_rwlock_read_lock(rw) != CORIO_EPERM ||
        corio_rwlock_read_lock_until(rw, corio_deadline_in(CORIO_SEC)) != CORIO_EPERM ||
        corio_rwlock_write_lock(rw) != CORIO_EPERM ||
        corio_rwlock_write_lock_until(rw, corio_deadline_in(CORIO_SEC)) != CORIO_EPERM ||
        corio_rwlock_try_write_lock(rw) != CORIO_EPERM ||
        corio_rwlock_write_unlock(rw) != CORIO_EPERM)
        return PTR_OF(1);
    return PTR_OF(0);
}

static void *not_the_writer(void *arg)
{
    corio_rwlock *rw = arg;
    CHECK_ERR(corio_rwlock_write_unlock(rw), CORIO_EPERM);
    CHECK_ERR(corio_rwlock_read_unlock(rw), CORIO_EPERM); /* no read lock held */
    CHECK_ERR(corio_rwlock_try_write_lock(rw), CORIO_EBUSY);
    CHECK_ERR(corio_rwlock_try_read_lock(rw), CORIO_EBUSY);
    CHECK_ERR(corio_rwlock_write_lock_until(rw, corio_deadline_in(5 * CORIO_MSEC)),
              CORIO_ETIMEDOUT);
    CHECK_ERR(corio_rwlock_read_lock_until(rw, corio_deadline_in(5 * CORIO_MSEC)),
              CORIO_ETIMEDOUT);
    return NULL;
}

static void *body_errors(void *arg)
{
    (void)arg;
    corio_rwlock *rw;
    CHECK_ERR(corio_rwlock_new(NULL), CORIO_EINVAL);
    CHECK_OK(corio_rwlock_new(&rw));

    /* NULL. */
    CHECK_ERR(corio_rwlock_read_lock(NULL), CORIO_EINVAL);
    CHECK_ERR(corio_rwlock_read_lock_until(NULL, corio_deadline_in(CORIO_SEC)), CORIO_EINVAL);
    CHECK_ERR(corio_rwlock_try_read_lock(NULL), CORIO_EINVAL);
    CHECK_ERR(corio_rwlock_read_unlock(NULL), CORIO_EINVAL);
    CHECK_ERR(corio_rwlock_write_lock(NULL), CORIO_EINVAL);
    CHECK_ERR(corio_rwlock_write_lock_until(NULL, corio_deadline_in(CORIO_SEC)), CORIO_EINVAL);
    CHECK_ERR(corio_rwlock_try_write_lock(NULL), CORIO_EINVAL);
    CHECK_ERR(corio_rwlock_write_unlock(NULL), CORIO_EINVAL);

    /* Unlocking what nobody holds. */
    CHECK_ERR(corio_rwlock_write_unlock(rw), CORIO_EPERM);
    CHECK_ERR(corio_rwlock_read_unlock(rw), CORIO_EPERM);

    /* Holding the write lock: asking for either lock would deadlock. */
    CHECK_OK(corio_rwlock_write_lock(rw));
    CHECK_ERR(corio_rwlock_read_lock(rw), CORIO_EDEADLK);
    CHECK_ERR(corio_rwlock_read_lock_until(rw, corio_deadline_in(CORIO_SEC)), CORIO_EDEADLK);
    CHECK_ERR(corio_rwlock_try_read_lock(rw), CORIO_EDEADLK);
    CHECK_ERR(corio_rwlock_write_lock(rw), CORIO_EDEADLK);
    CHECK_ERR(corio_rwlock_write_lock_until(rw, corio_deadline_in(CORIO_SEC)), CORIO_EDEADLK);
    CHECK_ERR(corio_rwlock_try_write_lock(rw), CORIO_EDEADLK);
    /* We hold the write lock, no read lock. */
    CHECK_ERR(corio_rwlock_read_unlock(rw), CORIO_EPERM);
    /* Others: not the writer, on either loop (light too). */
    for (int i = 0; i < 3; i++) {
        corio_task *t;
        corio_spawn_opts o = test_on_loop(i % 2, i == 2);
        CHECK_OK(corio_spawn_ex(&t, not_the_writer, rw, &o));
        CHECK_OK(corio_join(t, NULL));
    }
    /* A blocking-pool function is no task. */
    void *res = PTR_OF(-1);
    CHECK_OK(corio_run_blocking(outside_task_calls, rw, &res));
    CHECK_EQ(INT_OF(res), 0);
    /* Nor is a plain thread of the process. */
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, outside_task_calls, rw), 0);
    CHECK_EQ(pthread_join(th, &res), 0);
    CHECK_EQ(INT_OF(res), 0);
    /* Still ours after all that: one unlock frees it. */
    CHECK_OK(corio_rwlock_write_unlock(rw));
    CHECK_ERR(corio_rwlock_write_unlock(rw), CORIO_EPERM);

    /* Holding a read lock: write_unlock is not ours; asking for the write
     * lock waits for ourselves until the deadline (no upgrade), and
     * leaves nothing behind. */
    CHECK_OK(corio_rwlock_read_lock(rw));
    CHECK_ERR(corio_rwlock_write_unlock(rw), CORIO_EPERM);
    CHECK_ERR(corio_rwlock_try_write_lock(rw), CORIO_EBUSY);
    CHECK_ERR(corio_rwlock_write_lock_until(rw, corio_deadline_in(10 * CORIO_MSEC)),
              CORIO_ETIMEDOUT);
    CHECK_OK(corio_rwlock_try_read_lock(rw)); /* no writer left waiting */
    CHECK_OK(corio_rwlock_read_unlock(rw));
    CHECK_OK(corio_rwlock_read_unlock(rw));
    CHECK_ERR(corio_rwlock_read_unlock(rw), CORIO_EPERM);
    CHECK_OK(corio_rwlock_try_write_lock(rw));
    CHECK_OK(corio_rwlock_write_unlock(rw));
    corio_rwlock_free(rw);
    return NULL;
}

TEST(errors_eperm_edeadlk_einval)
{
    run_on_loop_0(body_errors, NULL);
    /* Before any runtime, on this plain thread. */
    corio_rwlock *rw;
    CHECK_OK(corio_rwlock_new(&rw));
    CHECK_EQ(INT_OF(outside_task_calls(rw)), 0);
    corio_rwlock_free(rw);
}

/* ---- 9. cancellation on a free lock ---- */

static void *body_pending_cancel(void *arg)
{
    (void)arg;
    corio_rwlock *rw;
    CHECK_OK(corio_rwlock_new(&rw));
    corio_task *me = corio_self();
    /* Each blocking form on a free lock: ECANCELED, and the lock stays
     * free (a writer gets it at once). */
    for (int form = 0; form < 4; form++) {
        CHECK_OK(corio_cancel(me));
        int rc;
        switch (form) {
        case 0: rc = corio_rwlock_read_lock(rw); break;
        case 1: rc = corio_rwlock_read_lock_until(rw, corio_deadline_in(CORIO_SEC)); break;
        case 2: rc = corio_rwlock_write_lock(rw); break;
        default: rc = corio_rwlock_write_lock_until(rw, corio_deadline_in(CORIO_SEC)); break;
        }
        CHECK_ERR(rc, CORIO_ECANCELED);
        CHECK_ERR(corio_rwlock_read_unlock(rw), CORIO_EPERM);
        CHECK_ERR(corio_rwlock_write_unlock(rw), CORIO_EPERM);
        /* The cancellation is spent. */
        CHECK_OK(corio_rwlock_try_write_lock(rw));
        CHECK_OK(corio_rwlock_write_unlock(rw));
        CHECK_OK(corio_yield());
    }
    /* NULL is EINVAL before anything, and leaves a pending cancellation
     * for the next call, as the mutex's calls do (found by review). */
    CHECK_OK(corio_cancel(me));
    CHECK_ERR(corio_rwlock_read_lock(NULL), CORIO_EINVAL);
    CHECK_ERR(corio_rwlock_write_lock_until(NULL, CORIO_FOREVER), CORIO_EINVAL);
    CHECK_ERR(corio_yield(), CORIO_ECANCELED);
    /* Also while others hold a read lock (it could be had at once). */
    CHECK_OK(corio_rwlock_read_lock(rw));
    CHECK_OK(corio_cancel(me));
    CHECK_ERR(corio_rwlock_read_lock(rw), CORIO_ECANCELED);
    CHECK_OK(corio_rwlock_read_unlock(rw));
    CHECK_ERR(corio_rwlock_read_unlock(rw), CORIO_EPERM); /* the cancelled one took none */

    /* The try forms are no cancellation point: they succeed and leave it
     * pending, for the next blocking call. */
    CHECK_OK(corio_cancel(me));
    CHECK_OK(corio_rwlock_try_read_lock(rw));
    CHECK_OK(corio_rwlock_read_unlock(rw));
    CHECK_OK(corio_rwlock_try_write_lock(rw));
    CHECK_OK(corio_rwlock_write_unlock(rw));
    CHECK_ERR(corio_yield(), CORIO_ECANCELED);
    CHECK_OK(corio_yield());
    /* Nor when they fail. */
    CHECK_OK(corio_rwlock_read_lock(rw));
    CHECK_OK(corio_cancel(me));
    CHECK_ERR(corio_rwlock_try_write_lock(rw), CORIO_EBUSY);
    CHECK_OK(corio_rwlock_read_unlock(rw));
    CHECK_ERR(corio_rwlock_read_lock(rw), CORIO_ECANCELED);
    CHECK_OK(corio_rwlock_read_lock(rw));
    CHECK_OK(corio_rwlock_read_unlock(rw));
    corio_rwlock_free(rw);
    return NULL;
}

TEST(pending_cancellation_fails_blocking_forms_not_try_forms)
{
    run_on_loop_0(body_pending_cancel, NULL);
}

/* ---- 10. read locks are counted, not owned ---- */

struct counted {
    corio_rwlock *rw;
    int n;
};

static void *release_reads(void *arg)
{
    struct counted *c = arg;
    for (int i = 0; i < c->n; i++)
        CHECK_OK(corio_rwlock_read_unlock(c->rw));
    CHECK_ERR(corio_rwlock_read_unlock(c->rw), CORIO_EPERM);
    return NULL;
}

static void *body_counted(void *arg)
{
    (void)arg;
    struct scen s;
    scen_init(&s);
    /* Ours, released by a task on the other loop (light, then regular). */
    for (int light = 0; light < 2; light++) {
        CHECK_OK(corio_rwlock_read_lock(s.rw));
        CHECK_OK(corio_rwlock_try_read_lock(s.rw));
        struct counted c = {s.rw, 2};
        corio_task *t;
        corio_spawn_opts o = test_on_loop(1, light);
        CHECK_OK(corio_spawn_ex(&t, release_reads, &c, &o));
        CHECK_OK(corio_join(t, NULL));
        CHECK_ERR(corio_rwlock_read_unlock(s.rw), CORIO_EPERM);
        CHECK_OK(corio_rwlock_try_write_lock(s.rw));
        CHECK_OK(corio_rwlock_write_unlock(s.rw));
    }
    /* Another task's read lock, released here; a writer waiting behind it
     * then gets the lock. */
    struct actor r, w;
    corio_task *rt, *wt;
    holding_actor(&s, &r, &rt, RD, 1, REGULAR);
    queue_actor(&s, &w, &wt, WR, 1, LIGHT, CORIO_FOREVER);
    atomic_fetch_sub(&s.readers_in, 1); /* the actors' count follows the lock */
    CHECK_OK(corio_rwlock_read_unlock(s.rw));
    AWAIT(&w.got, 1);
    atomic_store(&w.release, 1);
    CHECK_OK(corio_join(wt, NULL));
    /* R's read lock is gone: nothing left to release. */
    CHECK_ERR(corio_rwlock_read_unlock(s.rw), CORIO_EPERM);
    /* We take one, and R releases it as its own. */
    CHECK_OK(corio_rwlock_read_lock(s.rw));
    atomic_fetch_add(&s.readers_in, 1);
    atomic_store(&r.release, 1);
    CHECK_OK(corio_join(rt, NULL));
    CHECK_ERR(corio_rwlock_read_unlock(s.rw), CORIO_EPERM);
    scen_free(&s);
    return NULL;
}

TEST(read_locks_are_counted_not_owned)
{
    run_on_loop_0(body_counted, NULL);
}

/* ---- 11. the next holder frees the lock ---- */

/* A task that takes the lock after another's unlock may free it once it
 * is done, if nobody else holds or waits (corio.h): the unlock it came
 * after must not touch the lock once the lock can be had. R holds a read
 * lock; W queues for the write lock; R's unlock (its fast path refused by
 * W's mark) races W's cancellation, which clears the mark; the body then
 * takes the lock by the fast path, unlocks and frees it, and only then
 * joins R. ASan reports R's unlock touching the freed lock. */
struct next_holder {
    corio_rwlock *rw;
    _Atomic int held, go;
};

static void *nh_reader(void *arg)
{
    struct next_holder *h = arg;
    CHECK_OK(corio_rwlock_read_lock(h->rw));
    atomic_store(&h->held, 1);
    while (!atomic_load(&h->go))
        test_spin(10);
    CHECK_OK(corio_rwlock_read_unlock(h->rw));
    return NULL;
}

static void *nh_writer(void *arg)
{
    struct next_holder *h = arg;
    int rc = corio_rwlock_write_lock(h->rw);
    if (rc == 0)
        CHECK_OK(corio_rwlock_write_unlock(h->rw));
    else
        CHECK_ERR(rc, CORIO_ECANCELED);
    return NULL;
}

static void *body_next_holder_frees(void *arg)
{
    (void)arg;
    int rounds = test_scaled(3000);
    for (int i = 0; i < rounds; i++) {
        struct next_holder h = {0};
        CHECK_OK(corio_rwlock_new(&h.rw));
        corio_task *r, *w;
        corio_spawn_opts ro = test_on_loop(1, false);
        CHECK_OK(corio_spawn_ex(&r, nh_reader, &h, &ro));
        AWAIT(&h.held, 1);
        corio_spawn_opts wo = test_on_loop(0, i % 2);
        CHECK_OK(corio_spawn_ex(&w, nh_writer, &h, &wo));
        /* W waits once a try read is refused (a reader holds). */
        while (corio_rwlock_try_read_lock(h.rw) == 0) {
            CHECK_OK(corio_rwlock_read_unlock(h.rw));
            CHECK_OK(corio_yield());
        }
        atomic_store(&h.go, 1);
        CHECK_OK(corio_cancel(w));
        CHECK_OK(corio_join(w, NULL));
        /* W is gone; R's unlock may still be running. The next holder. */
        while (corio_rwlock_try_write_lock(h.rw) != 0)
            CHECK_OK(corio_yield());
        CHECK_OK(corio_rwlock_write_unlock(h.rw));
        corio_rwlock_free(h.rw);
        CHECK_OK(corio_join(r, NULL));
    }
    return NULL;
}

TEST(the_next_holder_may_free_the_lock_while_an_unlock_returns)
{
    run_on_loop_0(body_next_holder_frees, NULL);
}

int main(int argc, char **argv)
{
    RUN(many_readers_hold_it_together);
    RUN(timed_waits_end_on_time_holding_nothing);
    RUN(writer_excludes_everyone_under_mixed_load);
    RUN(waiting_writer_holds_back_new_readers);
    RUN(writer_unlock_admits_every_waiting_reader_before_the_next_writer);
    RUN(readers_and_writers_alternate_in_batches);
    RUN(writers_are_served_in_the_order_they_came);
    RUN(hand_over_a_woken_task_holds_the_lock_before_it_runs);
    RUN(cancelled_writer_holds_nothing_and_lets_its_readers_go);
    RUN(writer_whose_wait_ended_is_passed_over_in_order);
    RUN(timed_out_writer_holds_nothing_and_lets_its_readers_go);
    RUN(giving_up_behind_a_holding_writer_leaves_nothing_held);
    RUN(errors_eperm_edeadlk_einval);
    RUN(pending_cancellation_fails_blocking_forms_not_try_forms);
    RUN(read_locks_are_counted_not_owned);
    RUN(stress_with_deadlines_try_forms_and_cancellations);
    RUN(the_next_holder_may_free_the_lock_while_an_unlock_returns);
    return test_summary();
}
