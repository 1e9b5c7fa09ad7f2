/*
 * test_cond.c: corio_cond, the condition variable over a corio_mutex
 * (corio.h, "Condition variable"). What it checks:
 *  - signal wakes exactly one waiter, the first queued (FIFO);
 *  - broadcast wakes every waiter, and they return holding the mutex one
 *    at a time, only once the broadcaster has let go of it;
 *  - a bounded buffer between producers and consumers on two loops, light
 *    and regular, with predicate loops: every item arrives exactly once
 *    and in each producer's order (a lost wake-up hangs it);
 *  - no wake-up is lost between the waiter's unlock and its wait (a
 *    signaller on the other loop that gets the mutex right after);
 *  - deadlines: ETIMEDOUT on time, holding the mutex, taken back only when
 *    its holder lets go; a signal after a timeout goes to the next waiter;
 *  - cancellation: ECANCELED holding the mutex; a pending cancellation
 *    fails the call before anything is unlocked; a cancelled waiter waits
 *    for the mutex held by another task;
 *  - errors (NULL, mutex not held, outside a task), signal and broadcast
 *    with nobody waiting (nothing remembered), from pool threads and plain
 *    pthreads;
 *  - shutdown wakes waiters left behind, each returning with the mutex;
 *  - light waiters woken from the other loop keep their frames;
 *  - the mutex's word under a storm of fast locks, timeouts, condition
 *    waits and cancellations: every hold exclusive, every failure holding
 *    nothing.
 *
 * Whether a waiter is queued is seen, never guessed: a waiter counts
 * itself in `arrived` holding the mutex and keeps it until its wait
 * unlocks it, which the wait does after queueing; so a task that then
 * gets the mutex and sees the count knows the waiter is in the queue.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>

#include "test.h"

#define MAXW 16

struct cv {
    corio_mutex *m;
    corio_cond *c;
    int arrived;           /* waiters that reached their wait; under m */
    int woken_n;           /* waiters back from their wait; under m */
    int order[MAXW];       /* their numbers, in the order they came back */
    _Atomic int inside;    /* waiters back and not yet unlocked */
    _Atomic int returned;  /* waiters that have unlocked after their wait */
    _Atomic int gate;      /* set by the test just before it unlocks m */
};

struct waiter {
    struct cv *s;
    int me;
    corio_time_t deadline;
    int rc;        /* what the wait returned */
    int saw_gate;  /* gate as the waiter saw it on its return */
};

static void cv_init(struct cv *s)
{
    memset(s, 0, sizeof *s);
    CHECK_OK(corio_mutex_new(&s->m));
    CHECK_OK(corio_cond_new(&s->c));
}

static void cv_free(struct cv *s)
{
    corio_cond_free(s->c);
    corio_mutex_free(s->m);
}

/* The caller holds m: the owner's second lock is refused as a deadlock. */
static void check_held(corio_mutex *m) { CHECK_ERR(corio_mutex_try_lock(m), CORIO_EDEADLK); }

/* From a task: lock m once *field (under m) has reached n, exactly n,
 * and keep it. With `arrived`: those n waiters are queued. */
static void cv_lock_when(struct cv *s, const int *field, int n)
{
    corio_time_t give_up = corio_deadline_in(10 * CORIO_SEC * TEST_SLOW);
    for (;;) {
        CHECK_OK(corio_mutex_lock(s->m));
        if (*field >= n)
            break;
        CHECK_OK(corio_mutex_unlock(s->m));
        CHECK(corio_now() < give_up);
        CHECK_OK(corio_sleep(CORIO_MSEC));
    }
    CHECK_EQ(*field, n);
}

static void cv_await(struct cv *s, const int *field, int n)
{
    cv_lock_when(s, field, n);
    CHECK_OK(corio_mutex_unlock(s->m));
}

static void *waiter(void *arg)
{
    struct waiter *w = arg;
    struct cv *s = w->s;
    char canary[96]; /* a light waiter's frame must come back intact */
    memset(canary, 'a' + w->me, sizeof canary);
    CHECK_OK(corio_mutex_lock(s->m));
    s->arrived++;
    w->rc = corio_cond_wait_until(s->c, s->m, w->deadline);
    w->saw_gate = atomic_load(&s->gate);
    check_held(s->m);
    if (atomic_fetch_add(&s->inside, 1) != 0)
        FAIL_("%s", "two waiters back from their wait holding the mutex at once");
    CHECK(s->woken_n < MAXW);
    s->order[s->woken_n++] = w->me;
    /* Hold the mutex across a suspension, so any other waiter returning
     * wrongly would overlap (after shutdown the yield just fails). */
    int yr = corio_yield();
    CHECK(yr == 0 || yr == CORIO_ECANCELED);
    for (size_t i = 0; i < sizeof canary; i++)
        CHECK_EQ(canary[i], 'a' + w->me);
    atomic_fetch_sub(&s->inside, 1);
    CHECK_OK(corio_mutex_unlock(s->m));
    atomic_fetch_add(&s->returned, 1);
    return NULL;
}

/* Spawn waiter w (number `me`) on `loop`; it waits until `deadline`. */
static void start_waiter(struct cv *s, struct waiter *w, corio_task **t, int me, int loop,
                         bool light, corio_time_t deadline)
{
    *w = (struct waiter){.s = s, .me = me, .deadline = deadline, .rc = 1};
    corio_spawn_opts o = test_on_loop(loop, light);
    CHECK_OK(corio_spawn_ex(t, waiter, w, &o));
}

/* start_waiter, then wait until it is queued (every earlier waiter of s
 * is queued or gone, so `arrived` is stable as we read it). */
static void spawn_waiter(struct cv *s, struct waiter *w, corio_task **t, int me, int loop,
                         bool light, corio_time_t deadline)
{
    int n = s->arrived + 1;
    start_waiter(s, w, t, me, loop, light, deadline);
    cv_await(s, &s->arrived, n);
}

/* ---- 1. signal wakes exactly one, the first queued ---- */

#define N1 5

static void *main_signal_one(void *arg)
{
    (void)arg;
    struct cv s;
    cv_init(&s);
    int here = corio_loop_index();
    struct waiter w[N1];
    corio_task *t[N1];
    /* All on this loop: a waiter woken by mistake is ready when the right
     * one is and runs before we look. */
    for (int i = 0; i < N1; i++)
        spawn_waiter(&s, &w[i], &t[i], i, here, i % 2, CORIO_FOREVER);
    for (int i = 0; i < N1; i++) {
        CHECK_OK(corio_cond_signal(s.c));
        cv_await(&s, &s.woken_n, i + 1);
        CHECK_OK(corio_join(t[i], NULL));
        CHECK_OK(w[i].rc);
        CHECK_EQ(s.order[i], i); /* FIFO: the longest waiter */
        /* The others still wait. */
        CHECK_OK(corio_sleep(2 * CORIO_MSEC));
        cv_await(&s, &s.woken_n, i + 1);
        CHECK_EQ(atomic_load(&s.returned), i + 1);
    }
    cv_free(&s);
    return NULL;
}

TEST(signal_wakes_exactly_one_in_fifo_order)
{
    run_main_checked(2, main_signal_one, NULL);
}

/* ---- 2. broadcast wakes all, one holder at a time ---- */

#define N2 8

static void *main_broadcast(void *arg)
{
    (void)arg;
    struct cv s;
    cv_init(&s);
    struct waiter w[N2];
    corio_task *t[N2];
    for (int i = 0; i < N2; i++)
        spawn_waiter(&s, &w[i], &t[i], i, i % 2, i % 4 >= 2, corio_deadline_in(20 * CORIO_SEC));
    CHECK_OK(corio_mutex_lock(s.m));
    CHECK_OK(corio_cond_broadcast(s.c));
    /* Woken, but none can return while we hold the mutex. */
    CHECK_OK(corio_sleep(10 * CORIO_MSEC));
    CHECK_EQ(atomic_load(&s.returned), 0);
    atomic_store(&s.gate, 1);
    CHECK_OK(corio_mutex_unlock(s.m));
    CHECK_OK(corio_gather(t, N2, NULL));
    int seen[N2] = {0};
    for (int i = 0; i < N2; i++) {
        CHECK_OK(w[i].rc);         /* woken, not timed out */
        CHECK_EQ(w[i].saw_gate, 1); /* only after we unlocked */
        seen[s.order[i]]++;
    }
    for (int i = 0; i < N2; i++)
        CHECK_EQ(seen[i], 1);
    CHECK_EQ(s.woken_n, N2);
    cv_free(&s);
    return NULL;
}

TEST(broadcast_wakes_all_one_holder_at_a_time)
{
    run_main_checked(2, main_broadcast, NULL);
}

/* ---- 3. bounded buffer ---- */

#define CAP 4
#define PRODUCERS 4
#define CONSUMERS 4

struct bb {
    corio_mutex *m;
    corio_cond *not_full, *not_empty;
    long ring[CAP];
    int head, count;
    long per_producer, total, taken;
    long next_seq[PRODUCERS]; /* the next item expected from each producer */
    long full_waits, empty_waits;
};

struct bb_arg {
    struct bb *b;
    int id;
};

static void *producer(void *arg)
{
    struct bb_arg *a = arg;
    struct bb *b = a->b;
    uint64_t seed = 2 * (uint64_t)a->id + 1;
    for (long k = 0; k < b->per_producer; k++) {
        /* Now and then a pause, so that the buffer fills and drains in
         * varied patterns rather than in lock-step hand-offs. */
        if (test_rand(&seed) % 32 == 0)
            CHECK_OK(corio_yield());
        CHECK_OK(corio_mutex_lock(b->m));
        while (b->count == CAP) {
            b->full_waits++;
            CHECK_OK(corio_cond_wait(b->not_full, b->m));
        }
        b->ring[(b->head + b->count) % CAP] = a->id * b->per_producer + k;
        b->count++;
        CHECK_OK(corio_cond_signal(b->not_empty));
        CHECK_OK(corio_mutex_unlock(b->m));
    }
    return NULL;
}

static void *consumer(void *arg)
{
    struct bb *b = ((struct bb_arg *)arg)->b;
    uint64_t seed = 2 * (uint64_t)((struct bb_arg *)arg)->id + 1;
    for (;;) {
        if (test_rand(&seed) % 16 == 0)
            CHECK_OK(corio_yield());
        CHECK_OK(corio_mutex_lock(b->m));
        while (b->count == 0 && b->taken < b->total) {
            b->empty_waits++;
            CHECK_OK(corio_cond_wait(b->not_empty, b->m));
        }
        if (b->count == 0) { /* all taken */
            CHECK_OK(corio_mutex_unlock(b->m));
            return NULL;
        }
        long item = b->ring[b->head];
        b->head = (b->head + 1) % CAP;
        b->count--;
        b->taken++;
        long p = item / b->per_producer;
        CHECK(p >= 0 && p < PRODUCERS);
        /* Each producer's items in its order, each once. */
        CHECK_EQ(item % b->per_producer, b->next_seq[p]);
        b->next_seq[p]++;
        if (b->taken == b->total) /* the other consumers may stop now */
            CHECK_OK(corio_cond_broadcast(b->not_empty));
        CHECK_OK(corio_cond_signal(b->not_full));
        CHECK_OK(corio_mutex_unlock(b->m));
    }
}

static void *main_bounded_buffer(void *arg)
{
    (void)arg;
    struct bb b = {.per_producer = test_scaled(25000)};
    b.total = b.per_producer * PRODUCERS;
    CHECK_OK(corio_mutex_new(&b.m));
    CHECK_OK(corio_cond_new(&b.not_full));
    CHECK_OK(corio_cond_new(&b.not_empty));
    struct bb_arg args[PRODUCERS + CONSUMERS];
    corio_task *t[PRODUCERS + CONSUMERS];
    for (int i = 0; i < PRODUCERS + CONSUMERS; i++) {
        args[i] = (struct bb_arg){&b, i};
        corio_spawn_opts o = test_on_loop(i % 2, i % 4 >= 2);
        CHECK_OK(corio_spawn_ex(&t[i], i < PRODUCERS ? producer : consumer, &args[i], &o));
    }
    CHECK_OK(corio_gather(t, PRODUCERS + CONSUMERS, NULL));
    CHECK_EQ(b.taken, b.total);
    CHECK_EQ(b.count, 0);
    for (int p = 0; p < PRODUCERS; p++)
        CHECK_EQ(b.next_seq[p], b.per_producer);
    fprintf(stderr, "   %ld items, %ld waits for room, %ld for items\n", b.total, b.full_waits,
            b.empty_waits);
    corio_cond_free(b.not_full);
    corio_cond_free(b.not_empty);
    corio_mutex_free(b.m);
    return NULL;
}

TEST(bounded_buffer_every_item_once)
{
    run_main_checked(2, main_bounded_buffer, NULL);
}

/* ---- 4. no lost wake-up between unlock and wait ---- */

struct race {
    corio_mutex *m;
    corio_cond *c;
    long rounds;
    _Atomic long armed; /* the round the waiter is about to wait in */
    long pred;          /* the round the signaller has released; under m */
};

static void *race_waiter(void *arg)
{
    struct race *x = arg;
    for (long r = 1; r <= x->rounds; r++) {
        CHECK_OK(corio_mutex_lock(x->m));
        atomic_store(&x->armed, r);
        /* The signaller cannot have released round r: it needs the
         * mutex, which we hold until the wait unlocks it. */
        CHECK_NE(x->pred, r);
        while (x->pred != r) {
            int rc = corio_cond_wait_until(x->c, x->m, corio_deadline_in(10 * CORIO_SEC));
            if (rc == CORIO_ETIMEDOUT)
                FAIL_("round %ld: wake-up lost", r);
            CHECK_OK(rc);
        }
        CHECK_OK(corio_mutex_unlock(x->m));
    }
    return NULL;
}

static void *race_signaller(void *arg)
{
    struct race *x = arg;
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    for (long r = 1; r <= x->rounds; r++) {
        /* Longer than the waiter's deadline: a lost wake-up is reported
         * by the waiter. A short spin sees the waiter arm while it still
         * holds the mutex, so that our lock below queues behind it and
         * gets it in the very unlock of its wait; past that we sleep,
         * which leaves a busy machine's CPUs to the waiter (a spin that
         * never let go made rounds take milliseconds under load). */
        corio_time_t give_up = corio_deadline_in(30 * CORIO_SEC * TEST_SLOW);
        for (unsigned spins = 0; atomic_load(&x->armed) < r; spins++) {
            if (spins < 2000)
                continue;
            CHECK(corio_now() < give_up);
            CHECK_OK(corio_sleep(20 * CORIO_USEC));
        }
        /* Vary where in the waiter's unlock-and-wait our lock lands. */
        uint64_t v = test_rand(&seed);
        if (v % 4 == 0)
            test_spin((unsigned)(v >> 40) % 300);
        CHECK_OK(corio_mutex_lock(x->m));
        x->pred = r;
        if (r % 2) { /* signal holding the mutex, or after unlocking */
            CHECK_OK(corio_cond_signal(x->c));
            CHECK_OK(corio_mutex_unlock(x->m));
        } else {
            CHECK_OK(corio_mutex_unlock(x->m));
            CHECK_OK(r % 4 == 0 ? corio_cond_broadcast(x->c) : corio_cond_signal(x->c));
        }
    }
    return NULL;
}

static void *main_no_lost_wakeup(void *arg)
{
    (void)arg;
    for (int light = 0; light < 2; light++) {
        struct race x = {.rounds = test_scaled(10000)};
        CHECK_OK(corio_mutex_new(&x.m));
        CHECK_OK(corio_cond_new(&x.c));
        corio_task *t[2];
        corio_spawn_opts o = test_on_loop(0, light);
        CHECK_OK(corio_spawn_ex(&t[0], race_waiter, &x, &o));
        CHECK_OK(corio_spawn_on(&t[1], 1, race_signaller, &x));
        CHECK_OK(corio_gather(t, 2, NULL));
        CHECK_EQ(x.pred, x.rounds);
        corio_cond_free(x.c);
        corio_mutex_free(x.m);
    }
    return NULL;
}

TEST(no_wakeup_lost_between_unlock_and_wait)
{
    run_main_checked(2, main_no_lost_wakeup, NULL);
}

/* ---- 5. deadlines ---- */

static void *main_deadline(void *arg)
{
    (void)arg;
    struct cv s;
    cv_init(&s);
    int here = corio_loop_index(), other = 1 - here;

    /* On time, holding the mutex (held once: one unlock frees it). */
    CHECK_OK(corio_mutex_lock(s.m));
    test_stopwatch sw = test_stopwatch_start();
    CHECK_ERR(corio_cond_wait_until(s.c, s.m, corio_deadline_in(50 * CORIO_MSEC)), CORIO_ETIMEDOUT);
    CHECK_ELAPSED_WITHIN(&sw, 50 * CORIO_MSEC, CORIO_MSEC, 100 * CORIO_MSEC);
    check_held(s.m);
    /* A deadline already past: ETIMEDOUT, still holding. */
    CHECK_ERR(corio_cond_wait_until(s.c, s.m, corio_now() - CORIO_SEC), CORIO_ETIMEDOUT);
    check_held(s.m);
    CHECK_OK(corio_mutex_unlock(s.m));
    CHECK_ERR(corio_mutex_unlock(s.m), CORIO_EPERM);

    /* Timed out while we hold the mutex: it returns only once we unlock.
     * On this loop, the yield runs it into its wait, and we take the
     * mutex before the loop can run it again, however late that is. */
    struct waiter w[2];
    corio_task *t[2];
    corio_time_t deadline = corio_deadline_in(100 * CORIO_MSEC * TEST_SLOW);
    start_waiter(&s, &w[0], &t[0], 0, here, false, deadline);
    CHECK_OK(corio_yield());
    CHECK_OK(corio_mutex_try_lock(s.m));
    CHECK_EQ(s.arrived, 1);
    CHECK_OK(corio_sleep_until(deadline + 20 * CORIO_MSEC));
    CHECK_EQ(atomic_load(&s.returned), 0);
    atomic_store(&s.gate, 1);
    CHECK_OK(corio_mutex_unlock(s.m));
    CHECK_OK(corio_join(t[0], NULL));
    CHECK_ERR(w[0].rc, CORIO_ETIMEDOUT);
    CHECK_EQ(w[0].saw_gate, 1);

    /* A signal after a timeout goes to the next waiter. A (here) times
     * out while we hold the mutex: its timer fires before ours, on this
     * same loop, so its wait has ended when we signal. (Should A time
     * out before B is queued, the scenario is lost, not the test.) A
     * sleep whose deadline has passed when it begins (this thread held
     * off its CPU from the lock to here, or B queued just before A's
     * deadline) is a mere yield, and a lone yield runs no timer pass: A
     * would still be queued, take the signal, and B would time out. The
     * 1 ms sleep after it begins past A's deadline and so suspends for
     * certain; the pass that ends it fires A's earlier timer first. */
    atomic_store(&s.gate, 0);
    s.woken_n = 0;
    deadline = corio_deadline_in(100 * CORIO_MSEC);
    spawn_waiter(&s, &w[0], &t[0], 10, here, false, deadline);
    start_waiter(&s, &w[1], &t[1], 11, other, false, corio_deadline_in(20 * CORIO_SEC));
    cv_lock_when(&s, &s.arrived, 3);
    CHECK_OK(corio_sleep_until(deadline + 50 * CORIO_MSEC));
    CHECK_OK(corio_sleep(CORIO_MSEC));
    CHECK_OK(corio_cond_signal(s.c));
    atomic_store(&s.gate, 1);
    CHECK_OK(corio_mutex_unlock(s.m));
    CHECK_OK(corio_gather(t, 2, NULL));
    CHECK_ERR(w[0].rc, CORIO_ETIMEDOUT);
    CHECK_OK(w[1].rc); /* the signal reached B, not a waiter gone */
    /* A queued for the mutex before B was woken: A returns first. */
    CHECK_EQ(s.order[0], 10);
    CHECK_EQ(s.order[1], 11);
    cv_free(&s);
    return NULL;
}

TEST(deadline_times_out_holding_the_mutex)
{
    run_main_checked(2, main_deadline, NULL);
}

/* ---- 6. cancellation ---- */

struct pending {
    struct cv *s;
    _Atomic int contender_started, contender_got;
};

static void *contender(void *arg)
{
    struct pending *p = arg;
    atomic_store(&p->contender_started, 1);
    CHECK_OK(corio_mutex_lock(p->s->m));
    atomic_store(&p->contender_got, 1);
    CHECK_OK(corio_mutex_unlock(p->s->m));
    return NULL;
}

static void *pending_cancel(void *arg)
{
    struct pending *p = arg;
    corio_mutex *m = p->s->m;
    CHECK_OK(corio_mutex_lock(m));
    /* A contender queued on the mutex, on this loop: had the wait
     * unlocked, the mutex would have gone to it first (FIFO). */
    corio_task *ct;
    CHECK_OK(corio_spawn_on(&ct, (unsigned)corio_loop_index(), contender, p));
    CHECK_OK(corio_yield());
    CHECK_EQ(atomic_load(&p->contender_started), 1);
    CHECK_OK(corio_cancel(corio_self()));
    CHECK_ERR(corio_cond_wait(p->s->c, m), CORIO_ECANCELED);
    check_held(m);
    CHECK_OK(corio_sleep(2 * CORIO_MSEC));
    CHECK_EQ(atomic_load(&p->contender_got), 0);
    /* The cancellation is spent: the next wait waits. */
    CHECK_ERR(corio_cond_wait_until(p->s->c, m, corio_deadline_in(5 * CORIO_MSEC)),
              CORIO_ETIMEDOUT);
    CHECK_OK(corio_mutex_unlock(m));
    CHECK_OK(corio_join(ct, NULL));
    CHECK_EQ(atomic_load(&p->contender_got), 1);
    return NULL;
}

static void *main_cancel(void *arg)
{
    (void)arg;
    struct cv s;
    cv_init(&s);
    int other = 1 - corio_loop_index();
    struct waiter w;
    corio_task *t;

    /* Cancelled in its wait: ECANCELED, holding the mutex (the waiter
     * checks that), light or not. */
    for (int light = 0; light < 2; light++) {
        atomic_store(&s.gate, 1);
        spawn_waiter(&s, &w, &t, light, other, light, CORIO_FOREVER);
        CHECK_OK(corio_cancel(t));
        CHECK_OK(corio_join(t, NULL));
        CHECK_ERR(w.rc, CORIO_ECANCELED);
    }

    /* Pending before the call. */
    struct pending p = {.s = &s};
    CHECK_OK(corio_spawn_on(&t, (unsigned)corio_loop_index(), pending_cancel, &p));
    CHECK_OK(corio_join(t, NULL));

    /* Cancelled while we hold the mutex: it waits for it, whatever more
     * cancellation says. */
    atomic_store(&s.gate, 0);
    int back = atomic_load(&s.returned);
    start_waiter(&s, &w, &t, 2, other, false, CORIO_FOREVER);
    cv_lock_when(&s, &s.arrived, 3);
    CHECK_OK(corio_cancel(t));
    CHECK_OK(corio_sleep(10 * CORIO_MSEC));
    CHECK_OK(corio_cancel(t));
    CHECK_OK(corio_sleep(10 * CORIO_MSEC));
    CHECK_EQ(atomic_load(&s.returned), back);
    atomic_store(&s.gate, 1);
    CHECK_OK(corio_mutex_unlock(s.m));
    CHECK_OK(corio_join(t, NULL));
    CHECK_ERR(w.rc, CORIO_ECANCELED);
    CHECK_EQ(w.saw_gate, 1);
    cv_free(&s);
    return NULL;
}

TEST(cancellation_returns_holding_the_mutex)
{
    run_main_checked(2, main_cancel, NULL);
}

/* ---- 7. errors, and signals with nobody waiting ---- */

struct holder {
    corio_mutex *m;
    _Atomic int locked, release;
};

static void *hold_mutex(void *arg)
{
    struct holder *h = arg;
    CHECK_OK(corio_mutex_lock(h->m));
    atomic_store(&h->locked, 1);
    while (!atomic_load(&h->release))
        CHECK_OK(corio_sleep(CORIO_MSEC));
    CHECK_OK(corio_mutex_unlock(h->m)); /* still ours after main's EPERM */
    return NULL;
}

static void *wait_on_pool(void *arg)
{
    struct cv *s = arg;
    return PTR_OF(corio_cond_wait(s->c, s->m));
}

static void *signal_fn(void *arg) { return PTR_OF(corio_cond_signal(arg)); }
static void *broadcast_fn(void *arg) { return PTR_OF(corio_cond_broadcast(arg)); }

static void *main_errors(void *arg)
{
    (void)arg;
    struct cv s;
    cv_init(&s);
    int other = 1 - corio_loop_index();
    CHECK_ERR(corio_cond_new(NULL), CORIO_EINVAL);
    CHECK_ERR(corio_cond_signal(NULL), CORIO_EINVAL);
    CHECK_ERR(corio_cond_broadcast(NULL), CORIO_EINVAL);
    CHECK_OK(corio_mutex_lock(s.m));
    CHECK_ERR(corio_cond_wait(NULL, s.m), CORIO_EINVAL);
    CHECK_ERR(corio_cond_wait_until(NULL, s.m, corio_deadline_in(CORIO_SEC)), CORIO_EINVAL);
    CHECK_ERR(corio_cond_wait(s.c, NULL), CORIO_EINVAL);
    CHECK_ERR(corio_cond_wait_until(s.c, NULL, corio_deadline_in(CORIO_SEC)), CORIO_EINVAL);
    check_held(s.m);
    CHECK_OK(corio_mutex_unlock(s.m));

    /* Not held: EPERM, and the mutex is still free. */
    CHECK_ERR(corio_cond_wait(s.c, s.m), CORIO_EPERM);
    CHECK_ERR(corio_cond_wait_until(s.c, s.m, corio_deadline_in(CORIO_SEC)), CORIO_EPERM);
    CHECK_OK(corio_mutex_try_lock(s.m));
    CHECK_OK(corio_mutex_unlock(s.m));

    /* Held by another task: EPERM, and that task still holds it. */
    struct holder h = {.m = s.m};
    corio_task *ht;
    CHECK_OK(corio_spawn_on(&ht, (unsigned)other, hold_mutex, &h));
    CHECK(test_await(&h.locked, 1));
    CHECK_ERR(corio_cond_wait(s.c, s.m), CORIO_EPERM);
    CHECK_ERR(corio_mutex_try_lock(s.m), CORIO_EBUSY);
    atomic_store(&h.release, 1);
    CHECK_OK(corio_join(ht, NULL));

    /* Not in a task: a blocking-pool function. */
    void *rc = NULL;
    CHECK_OK(corio_run_blocking(wait_on_pool, &s, &rc));
    CHECK_ERR((int)INT_OF(rc), CORIO_EPERM);

    /* Nobody waiting: 0, and nothing is remembered for a later wait. */
    CHECK_OK(corio_cond_signal(s.c));
    CHECK_OK(corio_cond_broadcast(s.c));
    CHECK_OK(corio_mutex_lock(s.m));
    CHECK_ERR(corio_cond_wait_until(s.c, s.m, corio_deadline_in(10 * CORIO_MSEC)), CORIO_ETIMEDOUT);
    CHECK_OK(corio_mutex_unlock(s.m));

    /* Signal and broadcast from threads that are no task: a pool thread
     * and a plain pthread. They reach the waiters (so none of the failed
     * calls above left a stale waiter behind to swallow the signal). */
    for (int round = 0; round < 4; round++) {
        bool broadcast = round % 2, pool = round < 2;
        int n = broadcast ? 2 : 1;
        struct waiter w[2];
        corio_task *t[2];
        for (int i = 0; i < n; i++)
            spawn_waiter(&s, &w[i], &t[i], i, (round + i) % 2, i == 1,
                         corio_deadline_in(20 * CORIO_SEC));
        rc = PTR_OF(-1);
        if (pool) {
            CHECK_OK(corio_run_blocking(broadcast ? broadcast_fn : signal_fn, s.c, &rc));
        } else {
            pthread_t th;
            CHECK_EQ(pthread_create(&th, NULL, broadcast ? broadcast_fn : signal_fn, s.c), 0);
            CHECK_EQ(pthread_join(th, &rc), 0);
        }
        CHECK_OK((int)INT_OF(rc));
        CHECK_OK(corio_gather(t, (size_t)n, NULL));
        for (int i = 0; i < n; i++)
            CHECK_OK(w[i].rc);
    }
    cv_free(&s);
    return NULL;
}

TEST(errors_nobody_waiting_and_wakers_that_are_no_task)
{
    run_main_checked(2, main_errors, NULL);
    /* Outside any runtime. */
    struct cv s;
    cv_init(&s);
    CHECK_ERR(corio_cond_wait(s.c, s.m), CORIO_EPERM);
    CHECK_ERR(corio_cond_wait_until(s.c, s.m, corio_deadline_in(CORIO_SEC)), CORIO_EPERM);
    cv_free(&s);
}

/* ---- 8. shutdown wakes waiters left behind ---- */

struct left_behind {
    struct cv s;
    struct waiter w[3];
};

static void *main_leave_waiters(void *arg)
{
    struct left_behind *lb = arg;
    int here = corio_loop_index(), other = 1 - here;
    corio_task *t[3];
    spawn_waiter(&lb->s, &lb->w[0], &t[0], 0, other, false, CORIO_FOREVER);
    spawn_waiter(&lb->s, &lb->w[1], &t[1], 1, here, true, CORIO_FOREVER);
    spawn_waiter(&lb->s, &lb->w[2], &t[2], 2, other, true, CORIO_FOREVER);
    CHECK_OK(corio_detach(t[0])); /* the other two are never joined */
    return NULL;
}

TEST(shutdown_wakes_waiters_left_behind)
{
    struct left_behind lb;
    cv_init(&lb.s);
    corio_time_t t0 = corio_now();
    run_main_checked(2, main_leave_waiters, &lb);
    /* Far inside the watchdog: a hang shows as this, not as a kill. */
    CHECK_LT(corio_now() - t0, 10 * CORIO_SEC * TEST_SLOW);
    CHECK_EQ(atomic_load(&lb.s.returned), 3); /* each unlocked after its wait */
    for (int i = 0; i < 3; i++)
        CHECK_ERR(lb.w[i].rc, CORIO_ECANCELED);
    cv_free(&lb.s);
}

/* ---- 9. light waiters woken from the other loop ---- */

#define N9 3

static void *cross_waker(void *arg)
{
    struct cv *s = arg;
    int round = atomic_load(&s->gate);
    if (round % 3 == 0) {
        CHECK_OK(corio_cond_broadcast(s->c));
        return NULL;
    }
    for (int i = 0; i < N9; i++) {
        bool hold = round % 3 == 1;
        if (hold)
            CHECK_OK(corio_mutex_lock(s->m));
        CHECK_OK(corio_cond_signal(s->c));
        if (hold)
            CHECK_OK(corio_mutex_unlock(s->m));
    }
    return NULL;
}

static void *main_light_cross(void *arg)
{
    (void)arg;
    struct cv s;
    cv_init(&s);
    for (int round = 0; round < 30; round++) {
        int loop = round % 2;
        struct waiter w[N9];
        corio_task *t[N9 + 1];
        s.arrived = 0;
        for (int i = 0; i < N9; i++)
            spawn_waiter(&s, &w[i], &t[i], i, loop, true, corio_deadline_in(20 * CORIO_SEC));
        atomic_store(&s.gate, round);
        CHECK_OK(corio_spawn_on(&t[N9], (unsigned)(1 - loop), cross_waker, &s));
        CHECK_OK(corio_gather(t, N9 + 1, NULL));
        for (int i = 0; i < N9; i++)
            CHECK_OK(w[i].rc); /* woken, not timed out; frames checked inside */
        CHECK_EQ(atomic_load(&s.returned), (round + 1) * N9);
        s.woken_n = 0;
    }
    cv_free(&s);
    return NULL;
}

TEST(light_waiters_woken_from_the_other_loop)
{
    run_main_checked(2, main_light_cross, NULL);
}

/* ---- the mutex under a storm: fast locks, timeouts, condition waits and
 * cancellations mixed, on regular, light and migrating tasks ---- */

#define STORMERS 8

struct storm {
    corio_mutex *m;
    corio_cond *c;
    long per_task;
    long counter;          /* plain: under m */
    _Atomic long acquired; /* holds, counted outside m */
    _Atomic int inside;
    _Atomic int done;
    corio_task *t[STORMERS];
};

static void storm_enter(struct storm *s)
{
    if (atomic_fetch_add(&s->inside, 1) != 0)
        FAIL_("%s", "two tasks hold the mutex at once");
    CHECK_EQ(corio_mutex_try_lock(s->m), CORIO_EDEADLK);
}

static void *stormer(void *arg)
{
    struct storm *s = arg;
    unsigned kind = (unsigned)corio_task_id(corio_self());
    for (long i = 0; i < s->per_task; i++) {
        unsigned k = (kind + (unsigned)i) % 5;
        int rc = k == 0 ? corio_mutex_try_lock(s->m)
                 : k == 1 ? corio_mutex_lock_until(s->m, corio_deadline_in(5 * CORIO_USEC))
                          : corio_mutex_lock(s->m);
        if (rc == CORIO_EBUSY || rc == CORIO_ETIMEDOUT || rc == CORIO_ECANCELED) {
            CHECK_EQ(corio_mutex_unlock(s->m), CORIO_EPERM);
            continue;
        }
        CHECK_OK(rc);
        storm_enter(s);
        s->counter++;
        atomic_fetch_add(&s->acquired, 1);
        if (i % 3 == 0) {
            atomic_fetch_sub(&s->inside, 1);
            rc = corio_cond_wait_until(s->c, s->m, corio_deadline_in(10 * CORIO_USEC));
            if (rc != 0 && rc != CORIO_ETIMEDOUT && rc != CORIO_ECANCELED)
                FAIL_("cond wait: %d", rc);
            storm_enter(s); /* held again, whatever ended the wait */
            s->counter++;
            atomic_fetch_add(&s->acquired, 1);
        }
        if (i % 2 == 0)
            CHECK_OK(corio_cond_signal(s->c));
        else if (i % 7 == 0)
            CHECK_OK(corio_cond_broadcast(s->c));
        atomic_fetch_sub(&s->inside, 1);
        CHECK_OK(corio_mutex_unlock(s->m));
        if (i % 16 == 0)
            (void)corio_yield();
    }
    return NULL;
}

static void *storm_canceller(void *arg)
{
    struct storm *s = arg;
    for (unsigned i = 0; !atomic_load(&s->done); i++) {
        (void)corio_cancel(s->t[i % STORMERS]);
        (void)corio_sleep(20 * CORIO_USEC);
    }
    return NULL;
}

static void *main_storm(void *arg)
{
    (void)arg;
    struct storm s = {.per_task = test_scaled(20000)};
    CHECK_OK(corio_mutex_new(&s.m));
    CHECK_OK(corio_cond_new(&s.c));
    for (int i = 0; i < STORMERS; i++) {
        corio_spawn_opts o = test_on_loop(i % 2, i % 4 == 3);
        if (i % 4 == 1) {
            o.loop = -1;
            o.flags |= CORIO_TASK_MIGRATE;
        }
        CHECK_OK(corio_spawn_ex(&s.t[i], stormer, &s, &o));
    }
    corio_task *canceller;
    CHECK_OK(corio_spawn(&canceller, storm_canceller, &s));
    for (int i = 0; i < STORMERS; i++)
        CHECK_OK(corio_join(s.t[i], NULL));
    atomic_store(&s.done, 1);
    CHECK_OK(corio_join(canceller, NULL));
    /* No increment lost: every hold was exclusive. */
    CHECK_EQ(s.counter, atomic_load(&s.acquired));
    CHECK_LE(1, s.counter);
    for (int i = 0; i < 2; i++) {
        CHECK_OK(corio_mutex_try_lock(s.m));
        CHECK_OK(corio_mutex_unlock(s.m));
    }
    corio_cond_free(s.c);
    corio_mutex_free(s.m);
    return NULL;
}

TEST(mutex_storm_of_waits_timeouts_and_cancellations)
{
    run_main_checked(2, main_storm, NULL);
}

int main(int argc, char **argv)
{
    RUN(signal_wakes_exactly_one_in_fifo_order);
    RUN(broadcast_wakes_all_one_holder_at_a_time);
    RUN(bounded_buffer_every_item_once);
    RUN(no_wakeup_lost_between_unlock_and_wait);
    RUN(deadline_times_out_holding_the_mutex);
    RUN(cancellation_returns_holding_the_mutex);
    RUN(errors_nobody_waiting_and_wakers_that_are_no_task);
    RUN(shutdown_wakes_waiters_left_behind);
    RUN(light_waiters_woken_from_the_other_loop);
    RUN(mutex_storm_of_waits_timeouts_and_cancellations);
    return test_summary();
}
