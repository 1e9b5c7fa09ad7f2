/*
 * test_sync.c: mutex, semaphore, event and wait group between tasks on
 * two loops: mutual exclusion (an exact non-atomic count), ownership
 * rules, the permit bound, FIFO hand-off, wake-all, and a wake-up storm of
 * thousands of waiters.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <stdatomic.h>

#include "test.h"

static corio_spawn_opts on_loop(int loop, bool light)
{
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    o.loop = loop;
    o.flags = light ? CORIO_TASK_LIGHT : 0;
    return o;
}

/* ---- mutex: an exact count ---- */

#define LOCKERS 8

struct counting {
    corio_mutex *m;
    long per_task;
    long counter;         /* plain: only the mutex protects it */
    _Atomic int inside;   /* tasks inside the critical section */
};

static void *locker(void *arg)
{
    struct counting *c = arg;
    for (long i = 0; i < c->per_task; i++) {
        CHECK_OK(corio_mutex_lock(c->m));
        if (atomic_fetch_add(&c->inside, 1) != 0)
            FAIL_("%s", "two tasks inside the mutex at once");
        long v = c->counter;
        /* Now and then hold the lock across a suspension, so others queue
         * up behind it (and light lockers move their stacks). */
        if (i % 512 == 0)
            CHECK_OK(corio_yield());
        c->counter = v + 1;
        atomic_fetch_sub(&c->inside, 1);
        CHECK_OK(corio_mutex_unlock(c->m));
    }
    return NULL;
}

static void *main_mutex_count(void *arg)
{
    /* 25,000 each, 200,000 contended acquisitions in all. Under
     * contention every unlock hands the lock to the first waiter (mutex.c),
     * so each acquisition is a task switch, half of them across loops:
     * 100,000 each took 2.5-10 s on the 2-core test machines. */
    struct counting c = {.per_task = test_scaled(25000)};
    CHECK_OK(corio_mutex_new(&c.m));
    corio_task *t[LOCKERS];
    for (int i = 0; i < LOCKERS; i++) {
        corio_spawn_opts o = on_loop(i % 2, i % 4 == 3);
        CHECK_OK(corio_spawn_ex(&t[i], locker, &c, &o));
    }
    CHECK_OK(corio_gather(t, LOCKERS, NULL));
    CHECK_EQ(c.counter, c.per_task * LOCKERS);
    /* Unlocked at the end. */
    CHECK_OK(corio_mutex_try_lock(c.m));
    CHECK_OK(corio_mutex_unlock(c.m));
    corio_mutex_free(c.m);
    return NULL;
}

TEST(mutex_exact_count)
{
    run_main_checked(2, main_mutex_count, NULL);
}

/* ---- mutex: fast unlocks racing waiters that mark the word ---- */

/* No suspension inside: most unlocks find the word unmarked and free it
 * by one swap, while tasks on the other loop mark it and queue, give up
 * at their deadline, or only try. Each success must be exclusive, and the
 * count of successes exact. */
struct racing {
    corio_mutex *m;
    long per_task;
    long counter;          /* plain: only the mutex protects it */
    _Atomic long acquired; /* successes, counted outside the mutex */
    _Atomic int inside;
};

static void *racer(void *arg)
{
    struct racing *r = arg;
    unsigned kind = (unsigned)corio_task_id(corio_self());
    for (long i = 0; i < r->per_task; i++) {
        int rc;
        switch ((kind + (unsigned long)i) % 4) {
        case 0:
            rc = corio_mutex_try_lock(r->m);
            if (rc == CORIO_EBUSY)
                continue;
            break;
        case 1:
            /* Already past: fails unless the mutex is free, or handed
             * over at once. */
            rc = corio_mutex_lock_until(r->m, corio_now());
            if (rc == CORIO_ETIMEDOUT)
                continue;
            break;
        case 2:
            rc = corio_mutex_lock_until(r->m, corio_deadline_in(20 * CORIO_USEC));
            if (rc == CORIO_ETIMEDOUT)
                continue;
            break;
        default:
            rc = corio_mutex_lock(r->m);
            break;
        }
        CHECK_OK(rc);
        if (atomic_fetch_add(&r->inside, 1) != 0)
            FAIL_("%s", "two tasks inside the mutex at once");
        r->counter++;
        atomic_fetch_sub(&r->inside, 1);
        CHECK_OK(corio_mutex_unlock(r->m));
        atomic_fetch_add(&r->acquired, 1);
        if (i % 64 == 0)
            CHECK_OK(corio_yield()); /* let the loop's other racers in */
    }
    return NULL;
}

static void *main_mutex_racing(void *arg)
{
    struct racing r = {.per_task = test_scaled(50000)};
    CHECK_OK(corio_mutex_new(&r.m));
    corio_task *t[LOCKERS];
    for (int i = 0; i < LOCKERS; i++) {
        corio_spawn_opts o = on_loop(i % 2, i % 4 == 3);
        CHECK_OK(corio_spawn_ex(&t[i], racer, &r, &o));
    }
    CHECK_OK(corio_gather(t, LOCKERS, NULL));
    CHECK_EQ(r.counter, atomic_load(&r.acquired));
    CHECK_LE(1, r.counter);
    /* Free at the end, whatever the last waiters left marked: a lock and
     * an unlock both work at once, and twice over. */
    for (int i = 0; i < 2; i++) {
        CHECK_OK(corio_mutex_try_lock(r.m));
        CHECK_OK(corio_mutex_unlock(r.m));
    }
    corio_mutex_free(r.m);
    return NULL;
}

TEST(mutex_fast_unlock_races_waiters)
{
    run_main_checked(2, main_mutex_racing, NULL);
}

/* ---- mutex: the next holder frees it ---- */

/* A task that takes the mutex after another's unlock may free it once it
 * is done, if nobody else holds or waits (corio.h): the unlock it came
 * after must not touch the mutex once it can be had. H holds it on loop
 * 1; W queues for it (marking the word) and is cancelled, leaving the
 * mark; H's unlock, sent to its slow path by the mark, races the body,
 * which takes the mutex by the fast path, unlocks and frees it, and only
 * then joins H. ASan reports an unlock that touches the freed mutex. */
struct next_holder {
    corio_mutex *m;
    _Atomic int held, go;
};

static void *nh_holder(void *arg)
{
    struct next_holder *h = arg;
    CHECK_OK(corio_mutex_lock(h->m));
    atomic_store(&h->held, 1);
    while (!atomic_load(&h->go))
        test_spin(10);
    CHECK_OK(corio_mutex_unlock(h->m));
    return NULL;
}

static void *nh_waiter(void *arg)
{
    struct next_holder *h = arg;
    int rc = corio_mutex_lock(h->m);
    if (rc == 0)
        CHECK_OK(corio_mutex_unlock(h->m)); /* handed over before the cancel */
    else
        CHECK_ERR(rc, CORIO_ECANCELED);
    return NULL;
}

static void *main_next_holder_frees(void *arg)
{
    (void)arg;
    long rounds = test_scaled(3000);
    for (long i = 0; i < rounds; i++) {
        struct next_holder h = {0};
        CHECK_OK(corio_mutex_new(&h.m));
        corio_task *holder, *waiter;
        corio_spawn_opts ho = on_loop(1, false);
        CHECK_OK(corio_spawn_ex(&holder, nh_holder, &h, &ho));
        while (!atomic_load(&h.held))
            CHECK_OK(corio_yield());
        /* On this loop, ahead of us: the yield lets it run into its wait
         * (queued, the word marked) before we go on. */
        corio_spawn_opts wo = on_loop(0, i % 2);
        CHECK_OK(corio_spawn_ex(&waiter, nh_waiter, &h, &wo));
        CHECK_OK(corio_yield());
        atomic_store(&h.go, 1);
        CHECK_OK(corio_cancel(waiter));
        CHECK_OK(corio_join(waiter, NULL));
        /* W is gone; H's unlock may still be running. The next holder. */
        while (corio_mutex_try_lock(h.m) != 0)
            CHECK_OK(corio_yield());
        CHECK_OK(corio_mutex_unlock(h.m));
        corio_mutex_free(h.m);
        CHECK_OK(corio_join(holder, NULL));
    }
    return NULL;
}

TEST(mutex_next_holder_may_free_it_while_an_unlock_returns)
{
    /* On loop 0: loop 1's holder spins until told. */
    struct test_on_loop_0 body = {main_next_holder_frees, NULL};
    run_main_checked(2, test_main_on_loop_0, &body);
}

/* ---- mutex: ownership ---- */

struct owner {
    corio_mutex *m;
    _Atomic int locked;
};

static void *not_the_owner(void *arg)
{
    struct owner *o = arg;
    CHECK_ERR(corio_mutex_unlock(o->m), CORIO_EPERM);
    CHECK_ERR(corio_mutex_try_lock(o->m), CORIO_EBUSY);
    CHECK_ERR(corio_mutex_lock_until(o->m, corio_deadline_in(5 * CORIO_MSEC)), CORIO_ETIMEDOUT);
    return NULL;
}

static void *unlock_on_pool(void *arg)
{
    return PTR_OF(corio_mutex_unlock(arg));
}

static void *hold_until_told(void *arg)
{
    struct owner *o = arg;
    CHECK_OK(corio_mutex_lock(o->m));
    atomic_store(&o->locked, 1);
    while (atomic_load(&o->locked) == 1)
        CHECK_OK(corio_sleep(CORIO_MSEC));
    CHECK_OK(corio_mutex_unlock(o->m));
    return NULL;
}

static void *main_mutex_owner(void *arg)
{
    struct owner o = {0};
    CHECK_OK(corio_mutex_new(&o.m));
    /* Unlocking a mutex nobody holds. */
    CHECK_ERR(corio_mutex_unlock(o.m), CORIO_EPERM);
    CHECK_OK(corio_mutex_lock(o.m));
    /* Relocking by the owner would deadlock: refused. */
    CHECK_ERR(corio_mutex_try_lock(o.m), CORIO_EDEADLK);
    CHECK_ERR(corio_mutex_lock(o.m), CORIO_EDEADLK);
    for (int loop = 0; loop < 2; loop++) {
        corio_task *t;
        CHECK_OK(corio_spawn_on(&t, (unsigned)loop, not_the_owner, &o));
        CHECK_OK(corio_join(t, NULL));
    }
    /* Not from a pool thread either (no task there). */
    void *rc = NULL;
    CHECK_OK(corio_run_blocking(unlock_on_pool, o.m, &rc));
    CHECK_ERR((int)INT_OF(rc), CORIO_EPERM);
    /* Still ours after all that. */
    CHECK_OK(corio_mutex_unlock(o.m));
    CHECK_ERR(corio_mutex_unlock(o.m), CORIO_EPERM);

    /* Held by a task on the other loop: try_lock is EBUSY here. */
    corio_task *h;
    CHECK_OK(corio_spawn_on(&h, (unsigned)(corio_loop_index() + 1) % 2, hold_until_told, &o));
    while (!atomic_load(&o.locked))
        CHECK_OK(corio_sleep(CORIO_MSEC));
    CHECK_ERR(corio_mutex_try_lock(o.m), CORIO_EBUSY);
    CHECK_ERR(corio_mutex_unlock(o.m), CORIO_EPERM);
    atomic_store(&o.locked, 2);
    CHECK_OK(corio_mutex_lock_until(o.m, corio_deadline_in(5 * CORIO_SEC)));
    CHECK_OK(corio_join(h, NULL));
    CHECK_OK(corio_mutex_unlock(o.m));
    CHECK_ERR(corio_mutex_new(NULL), CORIO_EINVAL);
    CHECK_ERR(corio_mutex_lock(NULL), CORIO_EINVAL);
    CHECK_ERR(corio_mutex_unlock(NULL), CORIO_EINVAL);
    corio_mutex_free(o.m);
    return NULL;
}

TEST(mutex_ownership)
{
    run_main_checked(2, main_mutex_owner, NULL);
    /* Outside any runtime the blocking call refuses. */
    corio_mutex *m;
    CHECK_OK(corio_mutex_new(&m));
    CHECK_ERR(corio_mutex_lock(m), CORIO_EPERM);
    CHECK_ERR(corio_mutex_try_lock(m), CORIO_EPERM);
    CHECK_ERR(corio_mutex_unlock(m), CORIO_EPERM);
    corio_mutex_free(m);
}

/* ---- semaphore: never more than its permits ---- */

#define SEM_TASKS 24
#define PERMITS 3

struct bounded {
    corio_sem *sem;
    long rounds;
    _Atomic int in_use, max_in_use;
    _Atomic long entries;
};

static void *sem_user(void *arg)
{
    struct bounded *b = arg;
    uint64_t seed = corio_task_id(corio_self()) * 2 + 1;
    for (long i = 0; i < b->rounds; i++) {
        if (i % 3 == 0) {
            int rc;
            while ((rc = corio_sem_acquire_until(b->sem, corio_deadline_in(50 * CORIO_USEC))) ==
                   CORIO_ETIMEDOUT)
                ; /* a timed-out acquire holds nothing: try again */
            CHECK_OK(rc);
        } else {
            CHECK_OK(corio_sem_acquire(b->sem));
        }
        int now = atomic_fetch_add(&b->in_use, 1) + 1;
        if (now > PERMITS)
            FAIL_("%d holders of a %d-permit semaphore", now, PERMITS);
        int m = atomic_load(&b->max_in_use);
        while (now > m && !atomic_compare_exchange_weak(&b->max_in_use, &m, now))
            ;
        atomic_fetch_add(&b->entries, 1);
        if (test_rand(&seed) % 4 == 0)
            CHECK_OK(corio_yield());
        else
            test_spin(200);
        atomic_fetch_sub(&b->in_use, 1);
        CHECK_OK(corio_sem_release(b->sem));
    }
    return NULL;
}

static void *main_sem_bound(void *arg)
{
    struct bounded b = {.rounds = test_scaled(3000)};
    CHECK_OK(corio_sem_new(&b.sem, PERMITS));
    CHECK_EQ(corio_sem_available(b.sem), PERMITS);
    corio_task *t[SEM_TASKS];
    for (int i = 0; i < SEM_TASKS; i++) {
        corio_spawn_opts o = on_loop(i % 2, i % 3 == 0);
        CHECK_OK(corio_spawn_ex(&t[i], sem_user, &b, &o));
    }
    CHECK_OK(corio_gather(t, SEM_TASKS, NULL));
    CHECK_EQ(atomic_load(&b.entries), b.rounds * SEM_TASKS);
    CHECK_LE(atomic_load(&b.max_in_use), PERMITS);
    CHECK_GE(atomic_load(&b.max_in_use), 2);
    /* Every permit came back. */
    CHECK_EQ(corio_sem_available(b.sem), PERMITS);
    for (int i = 0; i < PERMITS; i++)
        CHECK_OK(corio_sem_try_acquire(b.sem));
    CHECK_ERR(corio_sem_try_acquire(b.sem), CORIO_EAGAIN);
    CHECK_EQ(corio_sem_available(b.sem), 0);
    CHECK_ERR(corio_sem_acquire_until(b.sem, corio_deadline_in(5 * CORIO_MSEC)), CORIO_ETIMEDOUT);
    for (int i = 0; i < PERMITS; i++)
        CHECK_OK(corio_sem_release(b.sem));
    CHECK_EQ(corio_sem_available(b.sem), PERMITS);
    corio_sem_free(b.sem);
    return NULL;
}

TEST(semaphore_bound)
{
    run_main_checked(2, main_sem_bound, NULL);
}

/* ---- FIFO hand-off: six waiters queued in a known order ---- */

#define FIFO_WAITERS 6

struct fifo_order {
    void *obj; /* the semaphore or mutex waited on */
    _Atomic int queued, order_next;
    int order[FIFO_WAITERS]; /* who got it, in the order they got it */
};

struct fifo_waiter_arg {
    struct fifo_order *f;
    int me;
};

/* Record that waiter `me` got the object. */
static void fifo_got(struct fifo_order *f, int me)
{
    f->order[atomic_fetch_add(&f->order_next, 1)] = me;
}

static void *fifo_mark_queued(void *arg)
{
    atomic_fetch_add(&((struct fifo_order *)arg)->queued, 1);
    return NULL;
}

/* Called by a waiter just before its wait: counts it as queued once it
 * is. The marker task is pinned to the waiter's own loop, which runs one
 * task at a time, so it can only run once the waiter has suspended, that
 * is, once it is in the object's wait queue. (A flag set before the call
 * was not enough: a waiter whose thread was descheduled between the flag
 * and the call let the next one, on the other loop, queue first.) */
static void fifo_announce(struct fifo_order *f)
{
    CHECK_OK(corio_spawn_on(NULL, (unsigned)corio_loop_index(), fifo_mark_queued, f));
}

/* Spawn FIFO_WAITERS tasks running `waiter` (alternating loops, the later
 * ones light), each queued in its wait before the next is spawned. */
static void fifo_queue(struct fifo_order *f, corio_fn waiter,
                       struct fifo_waiter_arg args[FIFO_WAITERS], corio_task *t[FIFO_WAITERS])
{
    for (int i = 0; i < FIFO_WAITERS; i++) {
        args[i] = (struct fifo_waiter_arg){f, i};
        corio_spawn_opts o = on_loop(i % 2, i >= FIFO_WAITERS / 2);
        CHECK_OK(corio_spawn_ex(&t[i], waiter, &args[i], &o));
        CHECK(test_await(&f->queued, i + 1));
        CHECK_EQ(atomic_load(&f->queued), i + 1); /* in its wait now */
    }
}

/* ---- semaphore: FIFO hand-off ---- */

static void *fifo_acquirer(void *arg)
{
    struct fifo_waiter_arg *a = arg;
    fifo_announce(a->f);
    CHECK_OK(corio_sem_acquire_until(a->f->obj, corio_deadline_in(10 * CORIO_SEC)));
    fifo_got(a->f, a->me);
    return NULL;
}

static void *main_sem_fifo(void *arg)
{
    struct fifo_order f = {0};
    corio_sem *sem;
    CHECK_OK(corio_sem_new(&sem, 0));
    f.obj = sem;
    corio_task *t[FIFO_WAITERS];
    struct fifo_waiter_arg args[FIFO_WAITERS];
    fifo_queue(&f, fifo_acquirer, args, t);
    /* One permit at a time: each goes to the longest waiter, directly
     * (no barging: the count stays at zero). */
    for (int i = 0; i < FIFO_WAITERS; i++) {
        CHECK_OK(corio_sem_release(sem));
        CHECK_EQ(corio_sem_available(sem), 0);
        CHECK_OK(corio_join(t[i], NULL));
        CHECK_EQ(f.order[i], i);
    }
    CHECK_EQ(corio_sem_available(sem), 0);
    corio_sem_free(sem);
    return NULL;
}

TEST(semaphore_fifo_handoff)
{
    run_main_checked(2, main_sem_fifo, NULL);
    CHECK_ERR(corio_sem_new(NULL, 1), CORIO_EINVAL);
    corio_sem *s;
    CHECK_OK(corio_sem_new(&s, 0));
    CHECK_ERR(corio_sem_acquire(s), CORIO_EPERM); /* outside a task */
    CHECK_OK(corio_sem_release(s));               /* allowed anywhere */
    CHECK_OK(corio_sem_try_acquire(s));
    CHECK_ERR(corio_sem_try_acquire(s), CORIO_EAGAIN);
    corio_sem_free(s);
    /* A full count refuses one more release instead of wrapping to none. */
    CHECK_OK(corio_sem_new(&s, SIZE_MAX));
    CHECK_ERR(corio_sem_release(s), CORIO_EOVERFLOW);
    CHECK_EQ(corio_sem_available(s), SIZE_MAX);
    CHECK_OK(corio_sem_try_acquire(s));
    CHECK_OK(corio_sem_release(s));
    CHECK_EQ(corio_sem_available(s), SIZE_MAX);
    corio_sem_free(s);
}

/* ---- mutex: FIFO hand-off ----
 *
 * corio.h: waits are FIFO. The lockers queue while main holds the mutex;
 * each unlock hands it to the longest waiter. */
static void *fifo_locker(void *arg)
{
    struct fifo_waiter_arg *a = arg;
    fifo_announce(a->f);
    CHECK_OK(corio_mutex_lock_until(a->f->obj, corio_deadline_in(10 * CORIO_SEC)));
    fifo_got(a->f, a->me);
    CHECK_OK(corio_mutex_unlock(a->f->obj));
    return NULL;
}

static void *main_mutex_fifo(void *arg)
{
    struct fifo_order f = {0};
    corio_mutex *mutex;
    CHECK_OK(corio_mutex_new(&mutex));
    f.obj = mutex;
    CHECK_OK(corio_mutex_lock(mutex));
    corio_task *t[FIFO_WAITERS];
    struct fifo_waiter_arg args[FIFO_WAITERS];
    fifo_queue(&f, fifo_locker, args, t);
    CHECK_OK(corio_mutex_unlock(mutex));
    CHECK_OK(corio_gather(t, FIFO_WAITERS, NULL));
    for (int i = 0; i < FIFO_WAITERS; i++)
        CHECK_EQ(f.order[i], i);
    corio_mutex_free(mutex);
    return NULL;
}

TEST(mutex_fifo_handoff)
{
    run_main_checked(2, main_mutex_fifo, NULL);
}

/* ---- event ---- */

struct ev {
    corio_event *e;
    _Atomic int waiting, woken;
};

static void *ev_waiter(void *arg)
{
    struct ev *v = arg;
    atomic_fetch_add(&v->waiting, 1);
    CHECK_OK(corio_event_wait_until(v->e, corio_deadline_in(10 * CORIO_SEC)));
    /* Released by the set: nobody clears the event before all are back. */
    CHECK(corio_event_is_set(v->e));
    atomic_fetch_add(&v->woken, 1);
    return NULL;
}

static void *set_on_pool(void *arg) { return PTR_OF(corio_event_set(arg)); }

static void *main_event(void *arg)
{
    struct ev v = {0};
    CHECK_OK(corio_event_new(&v.e));
    CHECK(!corio_event_is_set(v.e));
    for (int round = 0; round < 3; round++) {
        atomic_store(&v.waiting, 0);
        atomic_store(&v.woken, 0);
        corio_task *t[8];
        for (int i = 0; i < 8; i++) {
            corio_spawn_opts o = on_loop(i % 2, i >= 4);
            CHECK_OK(corio_spawn_ex(&t[i], ev_waiter, &v, &o));
        }
        while (atomic_load(&v.waiting) < 8)
            CHECK_OK(corio_sleep(CORIO_MSEC));
        CHECK_OK(corio_sleep(10 * CORIO_MSEC));
        CHECK_EQ(atomic_load(&v.woken), 0);
        /* Clearing an event that is not set releases nobody. */
        CHECK_OK(corio_event_clear(v.e));
        CHECK_OK(corio_sleep(10 * CORIO_MSEC));
        CHECK_EQ(atomic_load(&v.woken), 0);
        if (round == 2) {
            /* set from a thread that is no task at all */
            void *rc = PTR_OF(-1);
            CHECK_OK(corio_run_blocking(set_on_pool, v.e, &rc));
            CHECK_OK((int)INT_OF(rc));
        } else {
            CHECK_OK(corio_event_set(v.e));
        }
        CHECK_OK(corio_gather(t, 8, NULL));
        CHECK_EQ(atomic_load(&v.woken), 8);
        /* Stays set: a wait returns at once, even with a past deadline. */
        CHECK(corio_event_is_set(v.e));
        corio_time_t t0 = corio_now();
        CHECK_OK(corio_event_wait(v.e));
        CHECK_OK(corio_event_wait_until(v.e, corio_now() - CORIO_SEC));
        CHECK_OK(corio_event_set(v.e)); /* setting again: no change */
        /* "At once": a blocked wait would never return; the bound only
         * has to be far from that, and safe on a loaded machine. */
        CHECK_LT(corio_now() - t0, CORIO_SEC * TEST_SLOW);
        /* Cleared: waits block again. */
        CHECK_OK(corio_event_clear(v.e));
        CHECK(!corio_event_is_set(v.e));
        CHECK_ERR(corio_event_wait_until(v.e, corio_deadline_in(5 * CORIO_MSEC)), CORIO_ETIMEDOUT);
        CHECK_OK(corio_event_clear(v.e));
    }
    corio_event_free(v.e);
    return NULL;
}

TEST(event_set_wakes_all_and_clear)
{
    run_main_checked(2, main_event, NULL);
    CHECK_ERR(corio_event_new(NULL), CORIO_EINVAL);
    corio_event *e;
    CHECK_OK(corio_event_new(&e));
    CHECK_ERR(corio_event_wait(e), CORIO_EPERM); /* outside a task */
    CHECK_OK(corio_event_set(e));
    CHECK(corio_event_is_set(e));
    corio_event_free(e);
}

/* ---- wait group ---- */

struct wgrun {
    corio_waitgroup *wg;
    _Atomic int finished, waiters_back;
};

static void *wg_worker(void *arg)
{
    struct wgrun *w = arg;
    CHECK_OK(corio_sleep((int64_t)(corio_task_id(corio_self()) % 7) * CORIO_MSEC));
    atomic_fetch_add(&w->finished, 1);
    CHECK_OK(corio_waitgroup_done(w->wg));
    return NULL;
}

static void *wg_waiter(void *arg)
{
    struct wgrun *w = arg;
    CHECK_OK(corio_waitgroup_wait_until(w->wg, corio_deadline_in(10 * CORIO_SEC)));
    /* Only once every worker is done. */
    CHECK_EQ(atomic_load(&w->finished), 40);
    atomic_fetch_add(&w->waiters_back, 1);
    return NULL;
}

static void *wg_waits_a_second(void *wg)
{
    return PTR_OF(corio_waitgroup_wait_until(wg, corio_deadline_in(CORIO_SEC)));
}

static void *main_waitgroup(void *arg)
{
    struct wgrun w = {0};
    CHECK_OK(corio_waitgroup_new(&w.wg));
    /* Zero: a wait returns at once. */
    CHECK_OK(corio_waitgroup_wait_until(w.wg, corio_now()));
    CHECK_OK(corio_waitgroup_add(w.wg, 40));
    corio_task *waiters[4];
    for (int i = 0; i < 4; i++) {
        corio_spawn_opts o = on_loop(i % 2, i >= 2);
        CHECK_OK(corio_spawn_ex(&waiters[i], wg_waiter, &w, &o));
    }
    for (int i = 0; i < 40; i++) {
        corio_spawn_opts o = on_loop(i % 2, i % 3 == 0);
        CHECK_OK(corio_spawn_ex(NULL, wg_worker, &w, &o));
    }
    CHECK_OK(corio_waitgroup_wait(w.wg));
    CHECK_EQ(atomic_load(&w.finished), 40);
    CHECK_OK(corio_gather(waiters, 4, NULL));
    CHECK_EQ(atomic_load(&w.waiters_back), 4);
    /* Below zero: refused, counter unchanged. */
    CHECK_ERR(corio_waitgroup_add(w.wg, -1), CORIO_EINVAL);
    CHECK_ERR(corio_waitgroup_done(w.wg), CORIO_EINVAL);
    CHECK_OK(corio_waitgroup_add(w.wg, 2));
    CHECK_ERR(corio_waitgroup_add(w.wg, -3), CORIO_EINVAL);
    CHECK_ERR(corio_waitgroup_wait_until(w.wg, corio_deadline_in(5 * CORIO_MSEC)), CORIO_ETIMEDOUT);
    /* Reaching zero by add(-2), not done(), releases a waiter too. */
    corio_task *late;
    corio_spawn_opts o = on_loop(1 - (int)corio_loop_index(), false);
    CHECK_OK(corio_spawn_ex(&late, wg_waits_a_second, w.wg, &o));
    CHECK_OK(corio_sleep(5 * CORIO_MSEC)); /* in its wait now */
    CHECK_OK(corio_waitgroup_add(w.wg, -2));
    void *late_rc;
    CHECK_OK(corio_join(late, &late_rc));
    CHECK_OK((int)INT_OF(late_rc));
    CHECK_OK(corio_waitgroup_wait_until(w.wg, corio_now()));
    /* Past LONG_MAX: refused (no signed overflow), counter unchanged. */
    CHECK_OK(corio_waitgroup_add(w.wg, 1));
    CHECK_ERR(corio_waitgroup_add(w.wg, LONG_MAX), CORIO_EINVAL);
    CHECK_ERR(corio_waitgroup_add(w.wg, LONG_MIN), CORIO_EINVAL);
    CHECK_OK(corio_waitgroup_done(w.wg));
    CHECK_OK(corio_waitgroup_wait_until(w.wg, corio_now()));
    corio_waitgroup_free(w.wg);
    return NULL;
}

TEST(waitgroup)
{
    run_main_checked(2, main_waitgroup, NULL);
    CHECK_ERR(corio_waitgroup_new(NULL), CORIO_EINVAL);
    corio_waitgroup *wg;
    CHECK_OK(corio_waitgroup_new(&wg));
    CHECK_OK(corio_waitgroup_add(wg, 1));
    CHECK_ERR(corio_waitgroup_wait(wg), CORIO_EPERM); /* outside a task */
    CHECK_OK(corio_waitgroup_done(wg));
    corio_waitgroup_free(wg);
}

/* ---- wake-up storm ---- */

struct storm {
    corio_event *e;
    _Atomic long waiting, resumed;
};

static void *storm_waiter(void *arg)
{
    struct storm *s = arg;
    atomic_fetch_add(&s->waiting, 1);
    CHECK_OK(corio_event_wait_until(s->e, corio_deadline_in(30 * CORIO_SEC)));
    atomic_fetch_add(&s->resumed, 1);
    return NULL;
}

static void *main_storm(void *arg)
{
    long n = test_scaled(10000);
    struct storm s = {0};
    CHECK_OK(corio_event_new(&s.e));
    corio_task **t = calloc((size_t)n, sizeof *t);
    CHECK(t);
    for (long i = 0; i < n; i++) {
        corio_spawn_opts o = on_loop((int)(i % 2), i % 2 == 0 || i % 3 == 0);
        CHECK_OK(corio_spawn_ex(&t[i], storm_waiter, &s, &o));
    }
    corio_time_t give_up = corio_deadline_in(20 * CORIO_SEC);
    while (atomic_load(&s.waiting) < n && corio_now() < give_up)
        CHECK_OK(corio_sleep(CORIO_MSEC));
    CHECK_EQ(atomic_load(&s.waiting), n);
    CHECK_OK(corio_sleep(5 * CORIO_MSEC));
    CHECK_EQ(atomic_load(&s.resumed), 0);
    CHECK_OK(corio_event_set(s.e));
    CHECK_OK(corio_gather(t, (size_t)n, NULL));
    CHECK_EQ(atomic_load(&s.resumed), n);
    free(t);
    corio_event_free(s.e);
    return NULL;
}

TEST(wake_up_storm)
{
    run_main_checked(2, main_storm, NULL);
}

/* ---- freeing an object as soon as a wait on it returns ----
 *
 * The waker (on the other loop, detached, so nobody joins it) is still
 * inside its call when the woken task returns from its wait, and the
 * woken task frees the object at once: legal, as POSIX makes it for
 * sem_wait and sem_destroy. The wait must not return before the waker has
 * let go of the object. Under ASan a premature return is a
 * heap-use-after-free report; the window is short, hence the rounds.
 */
enum { FREE_WG, FREE_EVENT, FREE_SEM, FREE_MUTEX, FREE_KINDS };

struct free_round {
    int kind;
    void *obj;
    _Atomic int locked; /* FREE_MUTEX: the waker holds the mutex */
};

static void *free_waker(void *arg)
{
    struct free_round *r = arg;
    switch (r->kind) {
    case FREE_WG:
        CHECK_OK(corio_waitgroup_done(r->obj));
        break;
    case FREE_EVENT:
        CHECK_OK(corio_event_set(r->obj));
        break;
    case FREE_SEM:
        CHECK_OK(corio_sem_release(r->obj));
        break;
    default:
        CHECK_OK(corio_mutex_lock(r->obj));
        atomic_store(&r->locked, 1);
        test_spin(2000); /* let the main task block on the mutex */
        CHECK_OK(corio_mutex_unlock(r->obj));
        break;
    }
    return NULL;
}

static void *main_free_after_wait(void *arg)
{
    long rounds = INT_OF(arg);
    unsigned other = (unsigned)(corio_loop_index() + 1) % corio_loop_count();
    for (long i = 0; i < rounds; i++) {
        /* Static: the waker may still be returning after we go on. */
        static struct free_round r;
        r.kind = (int)(i % FREE_KINDS);
        atomic_store(&r.locked, 0);
        switch (r.kind) {
        case FREE_WG:
            CHECK_OK(corio_waitgroup_new((corio_waitgroup **)&r.obj));
            CHECK_OK(corio_waitgroup_add(r.obj, 1));
            CHECK_OK(corio_spawn_on(NULL, other, free_waker, &r));
            CHECK_OK(corio_waitgroup_wait(r.obj));
            corio_waitgroup_free(r.obj);
            break;
        case FREE_EVENT:
            CHECK_OK(corio_event_new((corio_event **)&r.obj));
            CHECK_OK(corio_spawn_on(NULL, other, free_waker, &r));
            CHECK_OK(corio_event_wait(r.obj));
            corio_event_free(r.obj);
            break;
        case FREE_SEM:
            CHECK_OK(corio_sem_new((corio_sem **)&r.obj, 0));
            CHECK_OK(corio_spawn_on(NULL, other, free_waker, &r));
            CHECK_OK(corio_sem_acquire(r.obj));
            corio_sem_free(r.obj);
            break;
        default:
            CHECK_OK(corio_mutex_new((corio_mutex **)&r.obj));
            CHECK_OK(corio_spawn_on(NULL, other, free_waker, &r));
            while (!atomic_load(&r.locked))
                CHECK_OK(corio_yield());
            CHECK_OK(corio_mutex_lock(r.obj));
            CHECK_OK(corio_mutex_unlock(r.obj));
            corio_mutex_free(r.obj);
            break;
        }
    }
    return NULL;
}

TEST(free_right_after_wait)
{
    run_main_checked(2, main_free_after_wait, PTR_OF(test_scaled(40000)));
}

int main(int argc, char **argv)
{
    RUN(mutex_exact_count);
    RUN(mutex_fast_unlock_races_waiters);
    RUN(mutex_next_holder_may_free_it_while_an_unlock_returns);
    RUN(mutex_ownership);
    RUN(semaphore_bound);
    RUN(semaphore_fifo_handoff);
    RUN(mutex_fifo_handoff);
    RUN(event_set_wakes_all_and_clear);
    RUN(waitgroup);
    RUN(wake_up_storm);
    RUN(free_right_after_wait);
    return test_summary();
}
