/*
 * test_set.c: task sets (corio_set_*, asyncio.as_completed / Tokio's
 * JoinSet): members come out in the order they finish, each exactly once,
 * across loops and consumers; a deadline or a cancellation takes nothing;
 * a member is the set's until it is taken (join, gather, wait_any and
 * detach refuse it); corio_set_cancel and corio_set_free; members that
 * never ran; the runtime stopping under a waiting consumer; light tasks;
 * and the races between finishing, adding, waiting, deadlines and
 * cancellation.
 *
 * Finish order is made with events (a member finishes when its gate is
 * set) or with a relay of members on one loop, never with sleep lengths.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>

#include <sched.h>

#include "loop.h"
#include "sys.h"
#include "task.h"
#include "test.h"

/* ---- members ---- */

/* Member waits the test saw end with CORIO_ECANCELED (set_cancel,
 * set_free, shutdown). */
static _Atomic int members_cancelled;

/* A member that finishes when its gate is set, returning the gate's value;
 * cancelled instead, it counts that and returns the error. */
struct gate {
    corio_event *go;
    intptr_t value;
};

static void *wait_for_gate(void *arg)
{
    struct gate *g = arg;
    int rc = corio_event_wait(g->go);
    if (rc != 0) {
        CHECK_EQ(rc, CORIO_ECANCELED);
        atomic_fetch_add(&members_cancelled, 1);
        return PTR_OF(rc);
    }
    return PTR_OF(g->value);
}

static void gates_new(struct gate *g, int n)
{
    for (int i = 0; i < n; i++) {
        CHECK_OK(corio_event_new(&g[i].go));
        g[i].value = 100 + i;
    }
}

static void gates_free(struct gate *g, int n)
{
    for (int i = 0; i < n; i++)
        corio_event_free(g[i].go);
}

/* A member that sleeps for an hour unless cancelled (counted). */
static void *sleep_an_hour(void *arg)
{
    int rc = corio_sleep(3600 * CORIO_SEC);
    if (rc == CORIO_ECANCELED)
        atomic_fetch_add(&members_cancelled, 1);
    (void)arg;
    return PTR_OF(rc);
}

/* A member that finishes after a random number of yields (pure CPU, no
 * clock): its argument is its index, and its result. */
static void *yield_then_return(void *arg)
{
    uint64_t rng = (uint64_t)INT_OF(arg) * 0x9E3779B97F4A7C15ull + 1;
    for (uint64_t n = test_rand(&rng) % 50; n > 0; n--)
        CHECK_OK(corio_yield());
    return arg;
}

/* ---- helpers ---- */

/* Not a task: what *task holds before a call that must fail, which then
 * leaves it NULL (corio.h: "*task is NULL after any failure"). */
#define NOT_A_TASK ((corio_task *)(uintptr_t)0x5e7)

/* A set_next call (naming &m) that must fail with err and hand over no
 * handle. */
#define CHECK_NEXT_ERR(m, call, err)                                            \
    do {                                                                        \
        (m) = NOT_A_TASK;                                                       \
        CHECK_ERR(call, err);                                                   \
        CHECK_PTR_EQ(m, NULL);                                                  \
    } while (0)

/* Take the next member, which must come out. */
static corio_task *next_member(corio_set *s)
{
    corio_task *t = NULL;
    CHECK_OK(corio_set_next(s, &t));
    CHECK(t != NULL);
    return t;
}

/* Join a member just taken: it has finished, so the join must not wait
 * (a deadline already past still succeeds). Its result. */
static void *join_now(corio_task *t)
{
    void *r = NULL;
    CHECK_OK(corio_join_until(t, &r, corio_now()));
    return r;
}

/* Wait until t (not in a set, not joined) has finished. */
static void await_done(corio_task *t)
{
    corio_time_t give_up = corio_deadline_in(10 * CORIO_SEC);
    while (!corio__task_is_done(t)) {
        CHECK(corio_now() < give_up);
        CHECK_OK(corio_sleep(CORIO_MSEC / 10));
    }
}

/* A task spawned by us that finishes at once, and has by the time this
 * returns: for members added finished. */
static corio_task *spawn_finished(intptr_t value, bool light)
{
    corio_task *t;
    corio_spawn_opts o = test_on_loop(-1, light);
    CHECK_OK(corio_spawn_ex(&t, test_ret_arg, PTR_OF(value), &o));
    await_done(t);
    return t;
}

/* Wait until the join word of t reads something else than NONE: another
 * task has registered as its joiner (corio_join, corio_wait_any). */
static void await_joiner(corio_task *t)
{
    corio_time_t give_up = corio_deadline_in(10 * CORIO_SEC);
    while (atomic_load_explicit(&t->join, memory_order_acquire) == CORIO__JOIN_NONE) {
        CHECK(corio_now() < give_up);
        CHECK_OK(corio_sleep(CORIO_MSEC));
    }
}

/* Wait until task t, alone on the loop whose thread is lt, is suspended in
 * a wait: its wait word ARMED and its loop's thread seen asleep in the
 * kernel (a task still on its way into the wait would hold the thread). */
static void await_suspended(corio_task *t, const struct test_loop_thread *lt)
{
    corio_time_t give_up = corio_deadline_in(10 * CORIO_SEC);
    for (;;) {
        CHECK(corio_now() < give_up);
        uint64_t w = atomic_load(&t->wait);
        if ((w & CORIO__WAIT_STATE_MASK) == CORIO__WAIT_ARMED &&
            test_loop_thread_sleeps(lt, 100 * CORIO_MSEC) &&
            atomic_load(&t->wait) == w)
            return;
        CHECK_OK(corio_sleep(CORIO_MSEC));
    }
}

/* Note loop `loop`'s thread (for await_suspended). */
static void note_loop_thread(unsigned loop, struct test_loop_thread *lt)
{
    corio_task *t;
    CHECK_OK(corio_spawn_on(&t, loop, test_note_loop_thread, lt));
    CHECK_OK(corio_join(t, NULL));
}

static void shuffle(int *a, int n, uint64_t *rng)
{
    for (int i = 0; i < n; i++)
        a[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(test_rand(rng) % (uint64_t)(i + 1));
        int x = a[i];
        a[i] = a[j];
        a[j] = x;
    }
}

/* Run body(arg) as a task with spawn flags `flags` and return its result:
 * the consumer a light or migrating task. */
struct as_task {
    unsigned flags;
    corio_fn fn;
    void *arg;
};

static void *main_as_task(void *arg)
{
    const struct as_task *a = arg;
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    o.flags = a->flags;
    corio_task *t;
    CHECK_OK(corio_spawn_ex(&t, a->fn, a->arg, &o));
    void *r = NULL;
    CHECK_OK(corio_join(t, &r));
    return r;
}

/* ---- members come out in the order they finish ----
 *
 * Gated members on every loop, released in a shuffled order, each only
 * once the one before has come out: set_next gives exactly the member
 * released, its join gives its gate's value at once, set_len counts down,
 * and an emptied set says CORIO_ENOENT (the set is used again for the
 * next round). Then a relay on one loop: each member, released, sets the
 * next one's gate and returns; on one loop the next runs only after it
 * has finished, so the finish order is the relay's, and the consumer,
 * which takes them once all have finished, must see it (not the order of
 * adding, nor its reverse). */
enum { ORDER_N = 16 };

struct relay {
    corio_event *go;
    corio_event *next; /* NULL: the last */
    intptr_t value;
    _Atomic int *last_done;
};

static void *relay_member(void *arg)
{
    struct relay *r = arg;
    CHECK_OK(corio_event_wait(r->go));
    if (r->next)
        CHECK_OK(corio_event_set(r->next));
    else
        atomic_store(r->last_done, 1);
    return PTR_OF(r->value);
}

static void *main_finish_order(void *arg)
{
    long rounds = INT_OF(arg);
    unsigned loops = corio_loop_count();
    uint64_t rng = 0x5e7 + loops;
    corio_set *s;
    CHECK_OK(corio_set_new(&s));
    corio_task *got = NULL;
    CHECK_EQ(corio_set_len(s), 0);
    CHECK_NEXT_ERR(got, corio_set_next(s, &got), CORIO_ENOENT); /* none added */
    CHECK(got == NULL);
    /* What members read lives on the heap: this runs as a light task too,
     * whose stack variables other tasks may not use. */
    struct gate *g = calloc(ORDER_N, sizeof *g);
    struct relay *rel = calloc(ORDER_N, sizeof *rel);
    _Atomic int *last_done = calloc(1, sizeof *last_done);
    CHECK(g && rel && last_done);
    for (long r = 0; r < rounds; r++) {
        corio_task *t[ORDER_N];
        int order[ORDER_N];
        gates_new(g, ORDER_N);
        for (int i = 0; i < ORDER_N; i++) {
            corio_spawn_opts o = test_on_loop(i % (int)loops, r % 2 && i % 3 == 0);
            CHECK_OK(corio_spawn_ex(&t[i], wait_for_gate, &g[i], &o));
            CHECK_OK(corio_set_add(s, t[i]));
            CHECK_EQ(corio_set_len(s), i + 1);
        }
        shuffle(order, ORDER_N, &rng);
        for (int k = 0; k < ORDER_N; k++) {
            CHECK_OK(corio_event_set(g[order[k]].go));
            corio_task *m = next_member(s);
            if (m != t[order[k]])
                FAIL_("round %ld, step %d: released member %d, set_next gave %p (member %d is %p)",
                      r, k, order[k], (void *)m, order[k], (void *)t[order[k]]);
            CHECK_EQ(corio_set_len(s), ORDER_N - 1 - k);
            CHECK_EQ(INT_OF(join_now(m)), g[order[k]].value);
        }
        CHECK_NEXT_ERR(got, corio_set_next(s, &got), CORIO_ENOENT);
        CHECK_NEXT_ERR(got, corio_set_next_until(s, &got, corio_now()), CORIO_ENOENT);
        CHECK_NEXT_ERR(got, corio_set_next_until(s, &got, corio_deadline_in(10 * CORIO_SEC)),
                       CORIO_ENOENT);
        CHECK(got == NULL);
        CHECK_EQ(corio_set_len(s), 0);
        gates_free(g, ORDER_N);
    }
    CHECK_OK(corio_set_free(s));

    /* The relay, on the last loop (the consumer is main, wherever it is). */
    for (long r = 0; r < rounds; r++) {
        CHECK_OK(corio_set_new(&s));
        corio_task *t[ORDER_N];
        int order[ORDER_N];
        atomic_store(last_done, 0);
        shuffle(order, ORDER_N, &rng);
        for (int i = 0; i < ORDER_N; i++) {
            CHECK_OK(corio_event_new(&rel[i].go));
            rel[i].value = 1000 + i;
            rel[i].last_done = last_done;
        }
        for (int k = 0; k < ORDER_N; k++)
            rel[order[k]].next = k + 1 < ORDER_N ? rel[order[k + 1]].go : NULL;
        for (int i = 0; i < ORDER_N; i++) {
            corio_spawn_opts o = test_on_loop((int)loops - 1, r % 2 && i % 2);
            CHECK_OK(corio_spawn_ex(&t[i], relay_member, &rel[i], &o));
            CHECK_OK(corio_set_add(s, t[i]));
        }
        CHECK_OK(corio_event_set(rel[order[0]].go));
        if (r % 2) {
            /* Take them once the last has (nearly) finished: the set
             * must have kept their order while nobody waited. */
            CHECK(test_await(last_done, 1));
            CHECK_OK(corio_sleep(CORIO_MSEC));
        }
        for (int k = 0; k < ORDER_N; k++) {
            corio_task *m = next_member(s);
            if (m != t[order[k]]) {
                int which = -1;
                for (int i = 0; i < ORDER_N; i++)
                    if (t[i] == m)
                        which = i;
                FAIL_("relay round %ld: finish #%d was member %d, set_next gave member %d", r, k,
                      order[k], which);
            }
            CHECK_EQ(INT_OF(join_now(m)), rel[order[k]].value);
        }
        CHECK_NEXT_ERR(got, corio_set_next(s, &got), CORIO_ENOENT);
        CHECK_OK(corio_set_free(s));
        for (int i = 0; i < ORDER_N; i++)
            corio_event_free(rel[i].go);
    }
    free(g);
    free(rel);
    free(last_done);
    return NULL;
}

TEST(members_come_out_in_the_order_they_finish)
{
    run_main_checked(1, main_finish_order, PTR_OF(test_scaled(20)));
    run_main_checked(2, main_finish_order, PTR_OF(test_scaled(50)));
    run_main_checked(4, main_finish_order, PTR_OF(test_scaled(50)));
}

/* ---- thousands of members, each out exactly once ----
 *
 * Members on every loop (chosen or stealable) finish in whatever order,
 * after random numbers of yields; the consumer adds them in random
 * batches and takes a random number between batches, so adds, finishes
 * and takes interleave. Every handle comes out exactly once (a seen[]
 * array, indexed by the member's result), is the very handle spawned for
 * that index, joins at once, and set_len is right after every call. */
struct many {
    long n;
    bool light_members;
};

static void *consume_many(void *arg)
{
    const struct many *a = arg;
    long n = a->n;
    unsigned loops = corio_loop_count();
    corio_task **handles = calloc((size_t)n, sizeof *handles);
    unsigned char *seen = calloc((size_t)n, 1);
    CHECK(handles && seen);
    corio_set *s;
    CHECK_OK(corio_set_new(&s));
    uint64_t rng = 0x1234567 + (uint64_t)n;
    long added = 0, taken = 0;
    while (taken < n) {
        long batch = 1 + (long)(test_rand(&rng) % 1000);
        if (batch > n - added)
            batch = n - added;
        for (long k = 0; k < batch; k++, added++) {
            int loop = added % 3 == 0 ? -1 : (int)(added % loops);
            corio_spawn_opts o = test_on_loop(loop, a->light_members && added % 2);
            CHECK_OK(corio_spawn_ex(&handles[added], yield_then_return, PTR_OF(added), &o));
            CHECK_OK(corio_set_add(s, handles[added]));
        }
        CHECK_EQ(corio_set_len(s), added - taken);
        long take = added == n ? added - taken
                               : (long)(test_rand(&rng) % (uint64_t)(added - taken + 1));
        for (long k = 0; k < take; k++, taken++) {
            corio_task *m = next_member(s);
            long idx = INT_OF(join_now(m));
            if (idx < 0 || idx >= added)
                FAIL_("a member came out with result %ld (%ld added)", idx, added);
            if (seen[idx])
                FAIL_("member %ld came out twice", idx);
            seen[idx] = 1;
            CHECK_PTR_EQ(m, handles[idx]);
            CHECK_EQ(corio_set_len(s), added - taken - 1);
        }
    }
    for (long i = 0; i < n; i++)
        CHECK(seen[i]);
    corio_task *got = NULL;
    CHECK_NEXT_ERR(got, corio_set_next(s, &got), CORIO_ENOENT);
    CHECK(got == NULL);
    CHECK_OK(corio_set_free(s));
    free(handles);
    free(seen);
    return NULL;
}

TEST(every_member_comes_out_exactly_once)
{
    struct many a = {.n = test_scaled_starts(20000)};
    run_main_checked(4, consume_many, &a);
    a.n = test_scaled_starts(5000);
    run_main_checked(1, consume_many, &a);
    run_main_checked(2, consume_many, &a);
}

/* ---- a member added finished comes out at once ----
 *
 * Finished and running members mixed: the finished ones come out of a
 * set_next_until whose deadline has passed (they need no wait), then that
 * times out with only running ones left, which come out as released. And
 * a finished task added while another task waits in set_next wakes it. */
static void *take_one(void *arg)
{
    corio_task *m = next_member(arg);
    return m; /* the handle, for the spawner to join */
}

static void *main_added_finished(void *arg)
{
    (void)arg;
    corio_set *s;
    CHECK_OK(corio_set_new(&s));
    /* Alone. */
    corio_task *f = spawn_finished(7, false);
    CHECK_OK(corio_set_add(s, f));
    CHECK_EQ(corio_set_len(s), 1);
    corio_task *m = NULL;
    CHECK_OK(corio_set_next_until(s, &m, corio_now()));
    CHECK_PTR_EQ(m, f);
    CHECK_EQ(INT_OF(join_now(m)), 7);

    /* Mixed: running r0, finished f0, running r1, finished f1, ... */
    enum { MIX = 4 };
    struct gate g[MIX];
    corio_task *run[MIX], *fin[MIX];
    gates_new(g, MIX);
    for (int i = 0; i < MIX; i++) {
        corio_spawn_opts o = test_on_loop(i % (int)corio_loop_count(), i % 2);
        CHECK_OK(corio_spawn_ex(&run[i], wait_for_gate, &g[i], &o));
        CHECK_OK(corio_set_add(s, run[i]));
        fin[i] = spawn_finished(500 + i, i % 2 == 0);
        CHECK_OK(corio_set_add(s, fin[i]));
    }
    CHECK_EQ(corio_set_len(s), 2 * MIX);
    bool seen[MIX] = {false};
    for (int k = 0; k < MIX; k++) {
        m = NULL;
        CHECK_OK(corio_set_next_until(s, &m, corio_now()));
        long v = INT_OF(join_now(m));
        if (v < 500 || v >= 500 + MIX)
            FAIL_("a finished member was due, got result %ld", v);
        CHECK_PTR_EQ(m, fin[v - 500]);
        CHECK(!seen[v - 500]);
        seen[v - 500] = true;
    }
    m = NULL;
    CHECK_NEXT_ERR(m, corio_set_next_until(s, &m, corio_now()), CORIO_ETIMEDOUT);
    CHECK(m == NULL);
    CHECK_EQ(corio_set_len(s), MIX);
    static const int order[MIX] = {2, 0, 3, 1};
    for (int k = 0; k < MIX; k++) {
        CHECK_OK(corio_event_set(g[order[k]].go));
        m = next_member(s);
        CHECK_PTR_EQ(m, run[order[k]]);
        CHECK_EQ(INT_OF(join_now(m)), g[order[k]].value);
    }

    /* A waiter on another task gets the finished task added meanwhile:
     * the set holds a gated member (so the waiter does not see an empty
     * set) released only after the waiter has returned. */
    corio_task *anchor, *waiter;
    CHECK_OK(corio_event_clear(g[0].go));
    CHECK_OK(corio_spawn(&anchor, wait_for_gate, &g[0]));
    CHECK_OK(corio_set_add(s, anchor));
    corio_spawn_opts o = test_on_loop((int)corio_loop_count() - 1, false);
    CHECK_OK(corio_spawn_ex(&waiter, take_one, s, &o));
    CHECK_OK(corio_sleep(CORIO_MSEC)); /* most often it waits by now; either way */
    f = spawn_finished(9, true);
    CHECK_OK(corio_set_add(s, f));
    void *r = NULL;
    CHECK_OK(corio_join(waiter, &r));
    CHECK_PTR_EQ(r, f);
    CHECK_EQ(INT_OF(join_now(f)), 9);
    CHECK_EQ(corio_set_len(s), 1);
    CHECK_OK(corio_event_set(g[0].go));
    m = next_member(s);
    CHECK_PTR_EQ(m, anchor);
    CHECK_EQ(INT_OF(join_now(m)), g[0].value);
    CHECK_OK(corio_set_free(s));
    gates_free(g, MIX);
    return NULL;
}

TEST(a_member_added_finished_comes_out_at_once)
{
    run_main_checked(1, main_added_finished, NULL);
    run_main_checked(3, main_added_finished, NULL);
}

/* ---- a deadline takes nothing ----
 *
 * With members running, set_next_until times out (a deadline passed, or
 * a few milliseconds away), leaves *task alone and the set as it was;
 * the members then come out. And a member finishing on another loop as
 * the deadline falls: either it comes out, or the call times out and it
 * is there for the next call; never lost, never twice. */
static void *main_deadline(void *arg)
{
    (void)arg;
    enum { N = 3 };
    struct gate g[N];
    corio_task *t[N];
    gates_new(g, N);
    corio_set *s;
    CHECK_OK(corio_set_new(&s));
    for (int i = 0; i < N; i++) {
        CHECK_OK(corio_spawn_on(&t[i], (unsigned)i % corio_loop_count(), wait_for_gate, &g[i]));
        CHECK_OK(corio_set_add(s, t[i]));
    }
    corio_task *m;
    CHECK_NEXT_ERR(m, corio_set_next_until(s, &m, corio_now()), CORIO_ETIMEDOUT);
    CHECK_NEXT_ERR(m, corio_set_next_until(s, &m, corio_now() - CORIO_SEC), CORIO_ETIMEDOUT);
    test_stopwatch sw = test_stopwatch_start();
    CHECK_NEXT_ERR(m, corio_set_next_until(s, &m, corio_deadline_in(5 * CORIO_MSEC)),
                   CORIO_ETIMEDOUT);
    CHECK_ELAPSED_WITHIN(&sw, 5 * CORIO_MSEC, CORIO_MSEC, 500 * CORIO_MSEC);
    CHECK_EQ(corio_set_len(s), N);
    CHECK_OK(corio_event_set(g[1].go));
    CHECK_OK(corio_set_next_until(s, &m, corio_deadline_in(10 * CORIO_SEC)));
    CHECK_PTR_EQ(m, t[1]);
    CHECK_EQ(INT_OF(join_now(m)), g[1].value);
    /* A timeout after a member finished unseen: still there. */
    CHECK_OK(corio_event_set(g[2].go));
    CHECK_OK(corio_event_set(g[0].go));
    for (int k = 0; k < 2; k++) {
        m = next_member(s);
        CHECK(m == t[0] || m == t[2]);
        CHECK_EQ(INT_OF(join_now(m)), g[m == t[0] ? 0 : 2].value);
    }
    CHECK_NEXT_ERR(m, corio_set_next_until(s, &m, corio_now()), CORIO_ENOENT);
    gates_free(g, N);

    /* The race: member on the last loop, deadline 0-30 us away. */
    long rounds = test_scaled(5000), won = 0, timed_out = 0;
    uint64_t rng = 7;
    for (long r = 0; r < rounds; r++) {
        corio_task *x;
        corio_spawn_opts o = test_on_loop((int)corio_loop_count() - 1, r % 4 == 3);
        CHECK_OK(corio_spawn_ex(&x, yield_then_return, PTR_OF(r), &o));
        CHECK_OK(corio_set_add(s, x));
        m = NOT_A_TASK;
        corio_time_t deadline = corio_now() + (corio_time_t)(test_rand(&rng) % 30) * CORIO_USEC;
        int rc = corio_set_next_until(s, &m, deadline);
        if (rc == 0) {
            won++;
        } else {
            CHECK_EQ(rc, CORIO_ETIMEDOUT);
            CHECK(m == NULL);
            CHECK_EQ(corio_set_len(s), 1);
            timed_out++;
            m = next_member(s);
        }
        CHECK_PTR_EQ(m, x);
        CHECK_EQ(corio_set_len(s), 0);
        CHECK_EQ(INT_OF(join_now(m)), r);
    }
    CHECK_EQ(won + timed_out, rounds);
    fprintf(stderr, "   deadline race: %ld taken, %ld timed out\n", won, timed_out);
    CHECK_OK(corio_set_free(s));
    return NULL;
}

TEST(a_deadline_takes_nothing)
{
    struct test_on_loop_0 body = {main_deadline, NULL};
    run_main_checked(2, test_main_on_loop_0, &body);
    run_main_checked(1, main_deadline, NULL);
}

/* ---- a cancelled set_next takes nothing ----
 *
 * The consumer is cancelled by another task (before or while it waits,
 * either way CORIO_ECANCELED): nothing taken, the set as it was, and the
 * next call takes members as usual. Then the cancellation races a member
 * finishing on another loop: it must fail exactly one call, the set_next
 * (the member then comes out of the next one) or, if that took the
 * member, the consumer's next call. */
static void *cancel_after_a_while(void *task)
{
    CHECK_OK(corio_sleep(5 * CORIO_MSEC));
    CHECK_OK(corio_cancel(task));
    return NULL;
}

struct race_cancel {
    corio_task *waiter;
    _Atomic int sent;
};

static void *cancel_now(void *arg)
{
    struct race_cancel *c = arg;
    CHECK_OK(corio_cancel(c->waiter));
    atomic_store(&c->sent, 1);
    return NULL;
}

static void *main_cancelled(void *arg)
{
    (void)arg;
    struct gate g[2];
    corio_task *t[2];
    gates_new(g, 2);
    corio_set *s;
    CHECK_OK(corio_set_new(&s));
    for (int i = 0; i < 2; i++) {
        CHECK_OK(corio_spawn_on(&t[i], 1, wait_for_gate, &g[i]));
        CHECK_OK(corio_set_add(s, t[i]));
    }
    for (int by_deadline = 0; by_deadline < 2; by_deadline++) {
        corio_task *canceller;
        CHECK_OK(corio_spawn_on(&canceller, 1, cancel_after_a_while, corio_self()));
        corio_task *m = NULL;
        if (by_deadline)
            CHECK_NEXT_ERR(m, corio_set_next_until(s, &m, corio_deadline_in(60 * CORIO_SEC)),
                           CORIO_ECANCELED);
        else
            CHECK_NEXT_ERR(m, corio_set_next(s, &m), CORIO_ECANCELED);
        CHECK(m == NULL);
        CHECK_OK(corio_join(canceller, NULL));
        CHECK_EQ(corio_set_len(s), 2);
    }
    /* Already cancelled when it is called: fails at once. */
    CHECK_OK(corio_cancel(corio_self()));
    corio_task *m = NULL;
    CHECK_NEXT_ERR(m, corio_set_next(s, &m), CORIO_ECANCELED);
    CHECK_EQ(corio_set_len(s), 2);
    CHECK_OK(corio_event_set(g[1].go));
    m = next_member(s);
    CHECK_PTR_EQ(m, t[1]);
    CHECK_EQ(INT_OF(join_now(m)), g[1].value);
    CHECK_OK(corio_event_set(g[0].go));
    m = next_member(s);
    CHECK_PTR_EQ(m, t[0]);
    CHECK_EQ(INT_OF(join_now(m)), g[0].value);
    gates_free(g, 2);

    /* The race. */
    long rounds = test_scaled(5000), failed_next = 0;
    for (long r = 0; r < rounds; r++) {
        struct race_cancel c = {.waiter = corio_self()};
        corio_spawn_opts o = test_on_loop(1, r % 4 == 1);
        corio_task *x, *canceller;
        CHECK_OK(corio_spawn_ex(&x, yield_then_return, PTR_OF(r), &o));
        CHECK_OK(corio_set_add(s, x));
        CHECK_OK(corio_spawn_ex(&canceller, cancel_now, &c, &o));
        int failed = 0;
        m = NOT_A_TASK;
        int rc = corio_set_next(s, &m);
        if (rc == CORIO_ECANCELED) {
            failed++;
            failed_next++;
            CHECK(m == NULL);
            CHECK_EQ(corio_set_len(s), 1);
            m = next_member(s);
        } else {
            CHECK_OK(rc);
        }
        CHECK_PTR_EQ(m, x);
        while (!atomic_load(&c.sent))
            sched_yield();
        rc = corio_yield();
        if (rc == CORIO_ECANCELED)
            failed++;
        else
            CHECK_OK(rc);
        if (failed != 1)
            FAIL_("round %ld: the one cancellation failed %d calls", r, failed);
        CHECK_OK(corio_join(canceller, NULL));
        CHECK_EQ(INT_OF(join_now(m)), r);
        CHECK_EQ(corio_set_len(s), 0);
    }
    fprintf(stderr, "   cancel race: set_next cancelled in %ld of %ld rounds\n", failed_next,
            rounds);
    CHECK_OK(corio_set_free(s));
    return NULL;
}

TEST(a_cancelled_set_next_takes_nothing)
{
    struct test_on_loop_0 body = {main_cancelled, NULL};
    run_main_checked(2, test_main_on_loop_0, &body);
}

/* ---- errors and the handle rules ---- */

static void *join_other(void *task)
{
    void *r = NULL;
    CHECK_OK(corio_join(task, &r));
    return r;
}

static void *wait_any_on(void *task)
{
    corio_task *t[1] = {task};
    size_t index = 99;
    CHECK_OK(corio_wait_any(t, 1, &index));
    CHECK_EQ((long)index, 0);
    return NULL;
}

/* A member is the set's: everything but corio_cancel refuses it, and
 * leaves it as it was. */
static void refuse_member(corio_task *m, corio_task *done_other)
{
    void *r = PTR_OF(-1);
    CHECK_ERR(corio_join(m, &r), CORIO_EINVAL);
    CHECK_ERR(corio_join_until(m, &r, corio_now()), CORIO_EINVAL);
    CHECK_ERR(corio_join_until(m, &r, corio_deadline_in(CORIO_MSEC)), CORIO_EINVAL);
    CHECK_EQ(INT_OF(r), -1);
    corio_task *one[1] = {m};
    CHECK_ERR(corio_gather(one, 1, NULL), CORIO_EINVAL);
    CHECK_ERR(corio_gather_until(one, 1, NULL, corio_now()), CORIO_EINVAL);
    /* With a finished task of the caller's before it: refused, and that
     * one is not released either (the caller joins it later). */
    corio_task *two[2] = {done_other, m};
    void *results[2] = {PTR_OF(-1), PTR_OF(-1)};
    CHECK_ERR(corio_gather(two, 2, results), CORIO_EINVAL);
    size_t index = 77;
    CHECK_ERR(corio_wait_any(one, 1, &index), CORIO_EINVAL);
    CHECK_ERR(corio_wait_any_until(one, 1, &index, corio_now()), CORIO_EINVAL);
    corio_task *with_null[3] = {NULL, m, NULL};
    CHECK_ERR(corio_wait_any(with_null, 3, &index), CORIO_EINVAL);
    CHECK_EQ((long)index, 77);
    CHECK_ERR(corio_detach(m), CORIO_EINVAL);
}

static void *add_main_handle(void *main_task)
{
    corio_set *s;
    CHECK_OK(corio_set_new(&s));
    /* corio_run owns main's handle: nobody may take it over. */
    CHECK_ERR(corio_set_add(s, main_task), CORIO_EINVAL);
    CHECK_EQ(corio_set_len(s), 0);
    /* A task's own handle. */
    CHECK_ERR(corio_set_add(s, corio_self()), CORIO_EDEADLK);
    CHECK_EQ(corio_set_len(s), 0);
    CHECK_OK(corio_set_free(s));
    return NULL;
}

static _Atomic int member_returning;

static void *gate_then_flag(void *arg)
{
    struct gate *g = arg;
    CHECK_OK(corio_event_wait(g->go));
    atomic_store(&member_returning, 1);
    return PTR_OF(g->value);
}

static void *main_errors(void *arg)
{
    (void)arg;
    unsigned last = corio_loop_count() - 1;
    atomic_store(&members_cancelled, 0);
    corio_set *s, *s2;
    CHECK_ERR(corio_set_new(NULL), CORIO_EINVAL);
    CHECK_OK(corio_set_new(&s));
    CHECK_OK(corio_set_new(&s2));
    enum { G = 6 };
    struct gate g[G];
    gates_new(g, G);
    corio_task *t0, *m;

    /* NULL arguments. */
    CHECK_OK(corio_spawn_on(&t0, last, wait_for_gate, &g[0]));
    CHECK_ERR(corio_set_add(NULL, t0), CORIO_EINVAL);
    CHECK_ERR(corio_set_add(s, NULL), CORIO_EINVAL);
    CHECK_ERR(corio_set_next(NULL, &m), CORIO_EINVAL); /* *task: a test of its own */
    CHECK_ERR(corio_set_next_until(NULL, &m, corio_now()), CORIO_EINVAL);
    CHECK_OK(corio_set_add(s, t0));
    CHECK_ERR(corio_set_next(s, NULL), CORIO_EINVAL);
    CHECK_ERR(corio_set_next_until(s, NULL, corio_deadline_in(CORIO_SEC)), CORIO_EINVAL);
    CHECK_EQ(corio_set_len(s), 1);

    /* Self, and main's handle from another task. */
    CHECK_ERR(corio_set_add(s, corio_self()), CORIO_EDEADLK);
    corio_task *helper;
    CHECK_OK(corio_spawn_on(&helper, last, add_main_handle, corio_self()));
    CHECK_OK(corio_join(helper, NULL));

    /* Twice, in this set or another. */
    CHECK_ERR(corio_set_add(s, t0), CORIO_EINVAL);
    CHECK_ERR(corio_set_add(s2, t0), CORIO_EINVAL);
    CHECK_EQ(corio_set_len(s), 1);
    CHECK_EQ(corio_set_len(s2), 0);

    /* Detached: running, and (released) once finished. */
    corio_task *d;
    CHECK_OK(corio_spawn_on(&d, last, sleep_an_hour, NULL)); /* until shutdown */
    CHECK_OK(corio_detach(d));
    CHECK_ERR(corio_set_add(s, d), CORIO_EINVAL);
    /* Released by a join (no spawn on this loop meanwhile, so the object
     * is not reused). */
    corio_task *j;
    CHECK_OK(corio_spawn(&j, test_ret_arg, PTR_OF(3)));
    void *r = NULL;
    CHECK_OK(corio_join(j, &r));
    CHECK_EQ(INT_OF(r), 3);
    CHECK_ERR(corio_set_add(s, j), CORIO_EINVAL);
    CHECK_EQ(corio_set_len(s), 1);

    /* Being joined, or waited on by corio_wait_any, by another task. */
    for (int how = 0; how < 2; how++) {
        corio_task *b, *other;
        CHECK_OK(corio_spawn_on(&b, last, wait_for_gate, &g[2 + how]));
        CHECK_OK(corio_spawn_on(&other, 0, how ? wait_any_on : join_other, b));
        await_joiner(b);
        CHECK_ERR(corio_set_add(s, b), CORIO_EINVAL);
        CHECK_EQ(corio_set_len(s), 1);
        CHECK_OK(corio_event_set(g[2 + how].go));
        r = NULL;
        CHECK_OK(corio_join(other, &r));
        if (how)
            CHECK_EQ(INT_OF(join_now(b)), g[3].value);
        else
            CHECK_EQ(INT_OF(r), g[2].value);
    }

    /* A member is refused by join, gather, wait_any and detach, running
     * and finished (not yet taken), and comes out right afterwards. */
    corio_task *done_other = spawn_finished(42, false);
    refuse_member(t0, done_other);
    corio_task *f = spawn_finished(43, false);
    CHECK_OK(corio_set_add(s, f));
    refuse_member(f, done_other);
    corio_task *late;
    atomic_store(&member_returning, 0);
    CHECK_OK(corio_spawn_on(&late, last, gate_then_flag, &g[4]));
    CHECK_OK(corio_set_add(s, late));
    CHECK_OK(corio_event_set(g[4].go));
    CHECK(test_await(&member_returning, 1));
    CHECK_OK(corio_sleep(2 * CORIO_MSEC)); /* most often finished by now */
    refuse_member(late, done_other);
    CHECK_EQ(corio_set_len(s), 3);
    CHECK_EQ(INT_OF(join_now(done_other)), 42);

    /* corio_cancel may name a member. */
    CHECK_OK(corio_cancel(t0));
    corio_task *got[3];
    for (int k = 0; k < 3; k++)
        got[k] = next_member(s);
    CHECK_EQ(corio_set_len(s), 0);
    bool saw_t0 = false, saw_f = false, saw_late = false;
    for (int k = 0; k < 3; k++) {
        if (got[k] == f) {
            saw_f = true;
            /* A taken member is the caller's again: into another set. */
            CHECK_OK(corio_set_add(s2, f));
            corio_task *again = NULL;
            CHECK_OK(corio_set_next_until(s2, &again, corio_now()));
            CHECK_PTR_EQ(again, f);
            CHECK_EQ(INT_OF(join_now(f)), 43);
        } else if (got[k] == late) {
            saw_late = true;
            /* Or waited on, then detached. */
            corio_task *one[1] = {late};
            size_t index = 5;
            CHECK_OK(corio_wait_any(one, 1, &index));
            CHECK_EQ((long)index, 0);
            CHECK_OK(corio_detach(late));
        } else {
            CHECK_PTR_EQ(got[k], t0);
            saw_t0 = true;
            CHECK_EQ(INT_OF(join_now(t0)), CORIO_ECANCELED);
        }
    }
    CHECK(saw_t0 && saw_f && saw_late);
    CHECK_EQ(atomic_load(&members_cancelled), 1);
    CHECK_NEXT_ERR(m, corio_set_next(s, &m), CORIO_ENOENT);
    CHECK_NEXT_ERR(m, corio_set_next(s2, &m), CORIO_ENOENT);
    CHECK_OK(corio_set_free(s));
    CHECK_OK(corio_set_free(s2));
    gates_free(g, G);
    return NULL;
}

TEST(bad_arguments_and_handles_are_refused)
{
    run_main_checked(1, main_errors, NULL);
    run_main_checked(3, main_errors, NULL);
}

/* "*task is NULL after any failure" (corio.h), a NULL set included: a
 * caller may test the handle instead of the result. The other failures
 * are checked where they are made (CHECK_NEXT_ERR). */
static void *main_null_set(void *arg)
{
    (void)arg;
    corio_task *m;
    CHECK_NEXT_ERR(m, corio_set_next(NULL, &m), CORIO_EINVAL);
    CHECK_NEXT_ERR(m, corio_set_next_until(NULL, &m, corio_now()), CORIO_EINVAL);
    return NULL;
}

TEST(a_set_next_refused_for_a_null_set_leaves_task_null)
{
    /* Outside a task too (refused as EINVAL or EPERM: either comes first). */
    corio_task *m = NOT_A_TASK;
    int rc = corio_set_next(NULL, &m);
    CHECK(rc == CORIO_EINVAL || rc == CORIO_EPERM);
    CHECK_PTR_EQ(m, NULL);
    run_main_checked(1, main_null_set, NULL);
}

/* Outside a task: set_add and set_next are CORIO_EPERM, from main before
 * corio_run, from a plain thread and from a blocking-pool function while
 * the runtime runs; set_free of a set with members too, which is left as
 * it was. */
struct outside {
    corio_set *set;
    corio_task *task;
};

static void *calls_outside(void *arg)
{
    struct outside *o = arg;
    corio_task *m = NULL;
    CHECK(corio_self() == NULL);
    CHECK_ERR(corio_set_add(o->set, o->task), CORIO_EPERM);
    CHECK_NEXT_ERR(m, corio_set_next(o->set, &m), CORIO_EPERM);
    CHECK_NEXT_ERR(m, corio_set_next_until(o->set, &m, corio_deadline_in(CORIO_SEC)), CORIO_EPERM);
    CHECK(m == NULL);
    CHECK_EQ(corio_set_len(o->set), 1);
    CHECK_ERR(corio_set_free(o->set), CORIO_EPERM);
    CHECK_EQ(corio_set_len(o->set), 1);
    return NULL;
}

static void *main_outside(void *arg)
{
    (void)arg;
    struct gate g[2];
    gates_new(g, 2);
    corio_set *s;
    CHECK_OK(corio_set_new(&s));
    corio_task *in, *out;
    CHECK_OK(corio_spawn(&in, wait_for_gate, &g[0]));
    CHECK_OK(corio_spawn(&out, wait_for_gate, &g[1]));
    CHECK_OK(corio_set_add(s, in));
    struct outside o = {s, out};
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, calls_outside, &o), 0);
    CHECK_EQ(pthread_join(th, NULL), 0);
    CHECK_OK(corio_run_blocking(calls_outside, &o, NULL));
    /* All as it was: the member comes out, the other handle is ours. */
    CHECK_OK(corio_event_set(g[0].go));
    CHECK_PTR_EQ(next_member(s), in);
    CHECK_EQ(INT_OF(join_now(in)), g[0].value);
    CHECK_OK(corio_event_set(g[1].go));
    void *r = NULL;
    CHECK_OK(corio_join(out, &r));
    CHECK_EQ(INT_OF(r), g[1].value);
    CHECK_OK(corio_set_free(s));
    gates_free(g, 2);
    return NULL;
}

TEST(calls_outside_a_task_are_refused)
{
    corio_set *s = NULL;
    CHECK_OK(corio_set_new(&s));
    corio_task *m = NULL;
    CHECK_ERR(corio_set_add(s, NULL), CORIO_EPERM);
    CHECK_NEXT_ERR(m, corio_set_next(s, &m), CORIO_EPERM);
    CHECK_NEXT_ERR(m, corio_set_next_until(s, &m, corio_now()), CORIO_EPERM);
    CHECK(m == NULL);
    CHECK_EQ(corio_set_len(s), 0);
    CHECK_OK(corio_set_free(s)); /* no members: allowed anywhere */
    run_main_checked(2, main_outside, NULL);
}

/* Out of memory while adding: CORIO_ENOMEM, the set as it was and the
 * handle still the caller's (joinable, addable again). Every add of a
 * hundred is made with the next wrapped call failing, so each allocation
 * the set makes as it grows is failed once. One loop: nothing else makes
 * wrapped calls meanwhile. */
static void *main_add_enomem(void *arg)
{
    (void)arg;
    corio__fault_arm(1);
    corio_set *s = NULL;
    int rc = corio_set_new(&s);
    bool fired = corio__fault_fired();
    corio__fault_arm(0);
    if (fired)
        CHECK_ERR(rc, CORIO_ENOMEM);
    if (rc != 0)
        CHECK_OK(corio_set_new(&s));
    enum { N = 100 };
    struct gate g[N];
    corio_task *t[N];
    gates_new(g, N);
    int refused = 0;
    for (int i = 0; i < N; i++) {
        CHECK_OK(corio_spawn(&t[i], wait_for_gate, &g[i]));
        corio__fault_arm(1);
        rc = corio_set_add(s, t[i]);
        fired = corio__fault_fired();
        corio__fault_arm(0);
        if (rc == 0) {
            CHECK_EQ(corio_set_len(s), i + 1);
            continue;
        }
        CHECK_ERR(rc, CORIO_ENOMEM);
        CHECK(fired);
        refused++;
        CHECK_EQ(corio_set_len(s), i);
        /* Ours: a join waits for it (and times out), not refused. */
        CHECK_ERR(corio_join_until(t[i], NULL, corio_now()), CORIO_ETIMEDOUT);
        CHECK_OK(corio_set_add(s, t[i]));
        CHECK_EQ(corio_set_len(s), i + 1);
    }
    fprintf(stderr, "   %d of %d adds refused for want of memory\n", refused, N);
    CHECK_GT(refused, 0);
    for (int i = N - 1; i >= 0; i--) {
        CHECK_OK(corio_event_set(g[i].go));
        corio_task *m = next_member(s);
        CHECK_PTR_EQ(m, t[i]);
        CHECK_EQ(INT_OF(join_now(m)), g[i].value);
    }
    CHECK_OK(corio_set_free(s));
    gates_free(g, N);
    return NULL;
}

TEST(an_add_without_memory_leaves_the_handle_to_the_caller)
{
    run_main_checked(1, main_add_enomem, NULL);
}

/* A member waiting on its own set could wait for itself: CORIO_EDEADLK,
 * even with a finished member there to take; on another set it is a
 * taker like any other. */
struct own_set {
    corio_set *set, *other;
    struct gate *gate;
};

static void *next_on_own_set(void *arg)
{
    const struct own_set *o = arg;
    CHECK_OK(corio_event_wait(o->gate->go));
    corio_task *m;
    CHECK_NEXT_ERR(m, corio_set_next(o->set, &m), CORIO_EDEADLK);
    CHECK_NEXT_ERR(m, corio_set_next_until(o->set, &m, corio_now()), CORIO_EDEADLK);
    CHECK_NEXT_ERR(m, corio_set_next(o->other, &m), CORIO_ENOENT);
    return PTR_OF(o->gate->value);
}

static void *main_own_set(void *arg)
{
    (void)arg;
    struct gate g;
    gates_new(&g, 1);
    struct own_set o = {.gate = &g};
    CHECK_OK(corio_set_new(&o.set));
    CHECK_OK(corio_set_new(&o.other));
    corio_task *member;
    corio_spawn_opts opts = test_on_loop((int)corio_loop_count() - 1, false);
    CHECK_OK(corio_spawn_ex(&member, next_on_own_set, &o, &opts));
    CHECK_OK(corio_set_add(o.set, member));
    corio_task *f = spawn_finished(5, false);
    CHECK_OK(corio_set_add(o.set, f));
    CHECK_OK(corio_event_set(g.go));
    corio_task *m = next_member(o.set); /* f, at once */
    CHECK_PTR_EQ(m, f);
    CHECK_EQ(INT_OF(join_now(m)), 5);
    m = next_member(o.set);
    CHECK_PTR_EQ(m, member);
    CHECK_EQ(INT_OF(join_now(m)), g.value);
    CHECK_OK(corio_set_free(o.set));
    CHECK_OK(corio_set_free(o.other));
    gates_free(&g, 1);
    return NULL;
}

TEST(a_member_waiting_on_its_own_set_is_edeadlk)
{
    run_main_checked(1, main_own_set, NULL);
    run_main_checked(2, main_own_set, NULL);
}

/* ---- several consumers ----
 *
 * K consumers on different loops (some light) take from one set until it
 * says CORIO_ENOENT; every member is taken exactly once in all. The last
 * member is held back until all others are taken, so the consumers are
 * (most often) all waiting when it finishes: one takes it, and the
 * others, waiting on a set now empty, must be told CORIO_ENOENT. */
struct consumers {
    corio_set *set;
    _Atomic int *seen;
    long n;
    _Atomic int taken;
};

static void *consume_until_empty(void *arg)
{
    struct consumers *c = arg;
    long mine = 0;
    for (;;) {
        corio_task *m = NOT_A_TASK;
        int rc = corio_set_next(c->set, &m);
        if (rc == CORIO_ENOENT) {
            CHECK(m == NULL);
            break;
        }
        CHECK_OK(rc);
        long idx = INT_OF(join_now(m));
        if (idx < 0 || idx >= c->n)
            FAIL_("a member came out with result %ld", idx);
        if (atomic_fetch_add(&c->seen[idx], 1) != 0)
            FAIL_("member %ld taken twice", idx);
        atomic_fetch_add(&c->taken, 1);
        mine++;
    }
    return PTR_OF(mine);
}

static void *main_consumers(void *arg)
{
    long n = INT_OF(arg);
    unsigned loops = corio_loop_count();
    enum { K = 5 };
    struct consumers c = {.n = n};
    c.seen = calloc((size_t)n, sizeof *c.seen);
    CHECK(c.seen);
    CHECK_OK(corio_set_new(&c.set));
    struct gate last;
    gates_new(&last, 1);
    last.value = n - 1;
    for (long i = 0; i < n; i++) {
        corio_task *t;
        corio_spawn_opts o = test_on_loop(i % 2 ? -1 : (int)(i % loops), i % 5 == 0);
        if (i == n - 1)
            CHECK_OK(corio_spawn_ex(&t, wait_for_gate, &last, &o));
        else
            CHECK_OK(corio_spawn_ex(&t, yield_then_return, PTR_OF(i), &o));
        CHECK_OK(corio_set_add(c.set, t));
    }
    corio_task *cons[K];
    for (int k = 0; k < K; k++) {
        corio_spawn_opts o = test_on_loop(k % (int)loops, k % 2);
        CHECK_OK(corio_spawn_ex(&cons[k], consume_until_empty, &c, &o));
    }
    CHECK(test_await(&c.taken, (int)n - 1));
    CHECK_OK(corio_sleep(CORIO_MSEC));
    CHECK_EQ(corio_set_len(c.set), 1);
    CHECK_OK(corio_event_set(last.go));
    long total = 0;
    for (int k = 0; k < K; k++) {
        void *r = NULL;
        CHECK_OK(corio_join(cons[k], &r));
        total += INT_OF(r);
    }
    CHECK_EQ(total, n);
    for (long i = 0; i < n; i++)
        CHECK_EQ(atomic_load(&c.seen[i]), 1);
    CHECK_EQ(corio_set_len(c.set), 0);
    CHECK_OK(corio_set_free(c.set));
    gates_free(&last, 1);
    free(c.seen);
    return NULL;
}

TEST(several_consumers_take_each_member_once)
{
    long n = test_scaled_starts(20000);
    if (n < 10)
        n = 10;
    run_main_checked(4, main_consumers, PTR_OF(n));
    run_main_checked(2, main_consumers, PTR_OF(n));
    run_main_checked(1, main_consumers, PTR_OF(n));
}

/* Waiters on a set that becomes empty: one gated member, three waiters
 * (one light) suspended in set_next on their loops; when it finishes, one
 * waiter takes it and the other two get CORIO_ENOENT. */
static void *next_rc(void *set)
{
    corio_task *m = NOT_A_TASK;
    int rc = corio_set_next(set, &m);
    if (rc == 0) {
        CHECK(m != NULL);
        return m;
    }
    CHECK(m == NULL);
    return PTR_OF(rc);
}

static void *main_emptied(void *arg)
{
    (void)arg;
    unsigned loops = corio_loop_count();
    struct gate g;
    gates_new(&g, 1);
    corio_set *s;
    CHECK_OK(corio_set_new(&s));
    corio_task *member, *w[3];
    CHECK_OK(corio_spawn_on(&member, 0, wait_for_gate, &g));
    CHECK_OK(corio_set_add(s, member));
    for (int k = 0; k < 3; k++) {
        corio_spawn_opts o = test_on_loop(1 + k % ((int)loops - 1), k == 1);
        CHECK_OK(corio_spawn_ex(&w[k], next_rc, s, &o));
    }
    CHECK_OK(corio_sleep(5 * CORIO_MSEC)); /* most often all wait by now; either way */
    CHECK_OK(corio_event_set(g.go));
    int took = 0, enoent = 0;
    for (int k = 0; k < 3; k++) {
        void *r = NULL;
        CHECK_OK(corio_join(w[k], &r));
        if (r == (void *)member) {
            took++;
            CHECK_EQ(INT_OF(join_now(member)), g.value);
        } else {
            CHECK_EQ(INT_OF(r), CORIO_ENOENT);
            enoent++;
        }
    }
    CHECK_EQ(took, 1);
    CHECK_EQ(enoent, 2);
    CHECK_OK(corio_set_free(s));
    gates_free(&g, 1);
    return NULL;
}

TEST(waiters_on_a_set_emptied_get_enoent)
{
    struct test_on_loop_0 body = {main_emptied, NULL};
    run_main_checked(2, test_main_on_loop_0, &body);
    run_main_checked(4, test_main_on_loop_0, &body);
}

/* ---- corio_set_free ----
 *
 * With members running (blocked on an event nobody sets, or sleeping an
 * hour; regular and light, on every loop) and finished ones not taken:
 * it cancels the running ones (their waits fail with CORIO_ECANCELED)
 * and detaches them, so each is released once it returns, and releases
 * the finished ones at once. The handles' memory is type-stable while
 * the runtime lives, and nothing is spawned meanwhile, so each one's
 * join word must come to read RELEASED. run_main_checked finds any
 * allocation of the set left behind. */
static void await_released(corio_task **t, int n)
{
    corio_time_t give_up = corio_deadline_in(10 * CORIO_SEC);
    for (int i = 0; i < n; i++)
        while (atomic_load_explicit(&t[i]->join, memory_order_acquire) != CORIO__JOIN_RELEASED) {
            if (corio_now() >= give_up)
                FAIL_("member %d of %d was not released (join word %#lx)", i, n,
                      (unsigned long)atomic_load(&t[i]->join));
            CHECK_OK(corio_sleep(CORIO_MSEC));
        }
}

static void *main_free_running(void *arg)
{
    (void)arg;
    unsigned loops = corio_loop_count();
    enum { RUNNING = 24, FINISHED = 6 };
    corio_event *never;
    CHECK_OK(corio_event_new(&never));
    struct gate g = {never, 0};
    atomic_store(&members_cancelled, 0);
    corio_set *s;
    CHECK_OK(corio_set_new(&s));
    corio_task *t[RUNNING + FINISHED];
    for (int i = 0; i < RUNNING; i++) {
        corio_spawn_opts o = test_on_loop(i % 3 == 2 ? -1 : i % (int)loops, i % 4 == 1);
        CHECK_OK(corio_spawn_ex(&t[i], i % 2 ? sleep_an_hour : wait_for_gate, &g, &o));
        CHECK_OK(corio_set_add(s, t[i]));
    }
    for (int i = RUNNING; i < RUNNING + FINISHED; i++) {
        t[i] = spawn_finished(i, i % 2);
        CHECK_OK(corio_set_add(s, t[i]));
    }
    /* Take a couple of the finished ones first: they are not the set's. */
    CHECK_EQ(corio_set_len(s), RUNNING + FINISHED);
    for (int k = 0; k < 2; k++) {
        corio_task *m = NULL;
        CHECK_OK(corio_set_next_until(s, &m, corio_now()));
        long v = INT_OF(join_now(m));
        CHECK(v >= RUNNING && v < RUNNING + FINISHED);
    }
    /* Let most running members reach their waits (either way they must
     * end: a cancellation before the wait fails it as well). */
    CHECK_OK(corio_sleep(CORIO_MSEC));
    CHECK_OK(corio_set_free(s));
    CHECK(test_await(&members_cancelled, RUNNING));
    /* The two taken ones are released (joined), the rest by the set. */
    await_released(t, RUNNING + FINISHED);
    CHECK_EQ(atomic_load(&members_cancelled), RUNNING);
    corio_event_free(never);

    /* Empty sets: never used, and emptied. */
    CHECK_OK(corio_set_new(&s));
    CHECK_OK(corio_set_free(s));
    CHECK_OK(corio_set_new(&s));
    corio_task *x = spawn_finished(1, false);
    CHECK_OK(corio_set_add(s, x));
    CHECK_PTR_EQ(next_member(s), x);
    CHECK_EQ(INT_OF(join_now(x)), 1);
    CHECK_OK(corio_set_free(s));

    /* Only finished members left: released. */
    CHECK_OK(corio_set_new(&s));
    corio_task *fin[4];
    for (int i = 0; i < 4; i++) {
        fin[i] = spawn_finished(i, i % 2);
        CHECK_OK(corio_set_add(s, fin[i]));
    }
    CHECK_OK(corio_set_free(s));
    await_released(fin, 4);
    return NULL;
}

TEST(set_free_cancels_and_releases_members)
{
    run_main_checked(1, main_free_running, NULL);
    run_main_checked(4, main_free_running, NULL);
}

/* While a task waits in set_next (regular or light; with or without a
 * deadline), set_free says CORIO_EBUSY and touches nothing: the members
 * are not cancelled (one released later returns its value) and the
 * waiter still waits. Once the waiter has left (cancelled), set_free
 * works, and cancels the member still running. Main on loop 0, the
 * waiter alone on loop 1, whose thread is seen asleep before the free. */
struct next_waiter {
    corio_set *set;
    bool deadline;
};

static void *wait_in_next(void *arg)
{
    const struct next_waiter *w = arg;
    corio_task *m = NOT_A_TASK;
    int rc = w->deadline ? corio_set_next_until(w->set, &m, corio_deadline_in(60 * CORIO_SEC))
                         : corio_set_next(w->set, &m);
    if (rc != 0)
        CHECK(m == NULL);
    return rc == 0 ? (void *)m : PTR_OF(rc);
}

static void *main_free_busy(void *arg)
{
    (void)arg;
    struct test_loop_thread lt;
    note_loop_thread(1, &lt);
    for (int variant = 0; variant < 4; variant++) {
        atomic_store(&members_cancelled, 0);
        struct gate g[2];
        gates_new(g, 2);
        corio_set *s;
        CHECK_OK(corio_set_new(&s));
        corio_task *t[2];
        for (int i = 0; i < 2; i++) {
            CHECK_OK(corio_spawn_on(&t[i], 0, wait_for_gate, &g[i]));
            CHECK_OK(corio_set_add(s, t[i]));
        }
        struct next_waiter nw = {s, variant & 1};
        corio_task *waiter;
        corio_spawn_opts o = test_on_loop(1, variant & 2);
        CHECK_OK(corio_spawn_ex(&waiter, wait_in_next, &nw, &o));
        await_suspended(waiter, &lt);
        CHECK_ERR(corio_set_free(s), CORIO_EBUSY);
        CHECK_EQ(corio_set_len(s), 2);
        CHECK_ERR(corio_set_free(s), CORIO_EBUSY);
        CHECK_OK(corio_cancel(waiter));
        void *r = NULL;
        CHECK_OK(corio_join(waiter, &r));
        CHECK_EQ(INT_OF(r), CORIO_ECANCELED);
        CHECK_EQ(corio_set_len(s), 2);
        /* Not cancelled by the refused frees. */
        CHECK_OK(corio_event_set(g[1].go));
        corio_task *m = next_member(s);
        CHECK_PTR_EQ(m, t[1]);
        CHECK_EQ(INT_OF(join_now(m)), g[1].value);
        CHECK_EQ(atomic_load(&members_cancelled), 0);
        CHECK_OK(corio_set_free(s));
        CHECK(test_await(&members_cancelled, 1));
        await_released(&t[0], 1);
        gates_free(g, 2);
    }
    return NULL;
}

TEST(set_free_while_a_task_waits_is_ebusy)
{
    struct test_on_loop_0 body = {main_free_busy, NULL};
    run_main_checked(2, test_main_on_loop_0, &body);
}

/* A taker woken but not yet run is still in corio_set_next: set_free must
 * say CORIO_EBUSY then too, or the taker, once it runs, locks a freed set.
 * The taker waits on loop 1, which a computation then holds; its member,
 * on loop 0 with main, finishes during main's yield (it is ahead of main
 * on that loop), which wakes the taker, queued behind the computation.
 * Either main frees the set now (variant 0: the finished member is still
 * in it) or first takes the member itself (variant 1: the set is empty,
 * and the woken taker is to find CORIO_ENOENT). */
static _Atomic int hold_started, hold_release;

static void *hold_loop(void *arg)
{
    (void)arg;
    atomic_store(&hold_started, 1);
    corio_time_t give_up = corio_now() + 20 * CORIO_SEC;
    while (!atomic_load(&hold_release) && corio_now() < give_up)
        ;
    return NULL;
}

static void *main_free_woken_taker(void *arg)
{
    (void)arg;
    struct test_loop_thread lt;
    note_loop_thread(1, &lt);
    for (int variant = 0; variant < 2; variant++) {
        atomic_store(&hold_started, 0);
        atomic_store(&hold_release, 0);
        atomic_store(&member_returning, 0);
        struct gate g;
        gates_new(&g, 1);
        corio_set *s;
        CHECK_OK(corio_set_new(&s));
        corio_task *member, *taker, *hold;
        CHECK_OK(corio_spawn_on(&member, 0, gate_then_flag, &g));
        CHECK_OK(corio_set_add(s, member));
        struct next_waiter nw = {s, false};
        CHECK_OK(corio_spawn_on(&taker, 1, wait_in_next, &nw));
        await_suspended(taker, &lt);
        CHECK_OK(corio_spawn_on(&hold, 1, hold_loop, NULL));
        CHECK(test_await(&hold_started, 1));
        CHECK_OK(corio_event_set(g.go));
        while (!atomic_load(&member_returning))
            CHECK_OK(corio_yield());
        /* The member has returned (it runs on our loop, and we run). */
        if (variant == 1) {
            corio_task *m = NULL;
            CHECK_OK(corio_set_next_until(s, &m, corio_now()));
            CHECK_PTR_EQ(m, member);
            CHECK_EQ(INT_OF(join_now(m)), g.value);
        }
        int rc = corio_set_free(s);
        if (rc == 0) {
            /* Freed under the woken taker: say so before it runs. */
            FAIL_("variant %d: corio_set_free returned 0 while a woken taker had yet to "
                  "return from corio_set_next (it will lock the freed set)",
                  variant);
        }
        CHECK_ERR(rc, CORIO_EBUSY);
        atomic_store(&hold_release, 1);
        void *r = NULL;
        CHECK_OK(corio_join(taker, &r));
        if (variant == 0) {
            CHECK_PTR_EQ(r, member);
            CHECK_EQ(INT_OF(join_now(member)), g.value);
        } else {
            CHECK_EQ(INT_OF(r), CORIO_ENOENT);
        }
        CHECK_OK(corio_join(hold, NULL));
        CHECK_OK(corio_set_free(s));
        gates_free(&g, 1);
    }
    return NULL;
}

TEST(set_free_while_a_woken_taker_has_not_run_is_ebusy)
{
    struct test_on_loop_0 body = {main_free_woken_taker, NULL};
    run_main_checked(2, test_main_on_loop_0, &body);
}

/* ---- corio_set_cancel ----
 *
 * Running members' waits fail with CORIO_ECANCELED and they come out
 * (their results say so); finished members come out with their values.
 * Tasks that are not members are not touched: one spawned after a member
 * was taken and joined, most likely into that member's recycled object
 * (same loop, LIFO free list), and one never added. */
static void *main_set_cancel(void *arg)
{
    (void)arg;
    unsigned loops = corio_loop_count();
    atomic_store(&members_cancelled, 0);
    corio_set *s;
    CHECK_OK(corio_set_new(&s));
    CHECK_OK(corio_set_cancel(s)); /* empty: nothing to do */
    enum { RUNNING = 12, FINISHED = 3 };
    struct gate g[RUNNING + 2];
    gates_new(g, RUNNING + 2);
    corio_task *t[RUNNING];
    for (int i = 0; i < RUNNING; i++) {
        corio_spawn_opts o = test_on_loop(i % 3 == 2 ? -1 : i % (int)loops, i % 4 == 1);
        CHECK_OK(corio_spawn_ex(&t[i], i % 2 ? sleep_an_hour : wait_for_gate, &g[i], &o));
        CHECK_OK(corio_set_add(s, t[i]));
    }
    for (int i = 0; i < FINISHED; i++)
        CHECK_OK(corio_set_add(s, spawn_finished(1000 + i, false)));
    /* A member taken and released; then a non-member on the same loop. */
    int here = corio_loop_index();
    corio_task *gone;
    CHECK_OK(corio_spawn_on(&gone, (unsigned)here, test_ret_arg, PTR_OF(77)));
    await_done(gone);
    CHECK_OK(corio_set_add(s, gone));
    corio_task *m = NULL;
    CHECK_OK(corio_set_next_until(s, &m, corio_now()));
    long v = INT_OF(join_now(m));
    CHECK(v == 77 || v >= 1000);
    if (v != 77) {
        /* Took a finished one of the others: take until 77 is out. */
        int left = FINISHED;
        while (v != 77) {
            CHECK(--left >= 0);
            m = NULL;
            CHECK_OK(corio_set_next_until(s, &m, corio_now()));
            v = INT_OF(join_now(m));
        }
    }
    corio_task *bystander, *outsider;
    CHECK_OK(corio_spawn_on(&bystander, (unsigned)here, wait_for_gate, &g[RUNNING]));
    if (bystander == gone)
        fprintf(stderr, "   the bystander reuses the taken member's object\n");
    CHECK_OK(corio_spawn_on(&outsider, (unsigned)(loops - 1), wait_for_gate, &g[RUNNING + 1]));
    size_t left = corio_set_len(s);
    CHECK_OK(corio_sleep(CORIO_MSEC));
    CHECK_OK(corio_set_cancel(s));
    CHECK_EQ(corio_set_len(s), left); /* cancelling takes nothing */
    bool seen[RUNNING] = {false};
    for (size_t k = 0; k < left; k++) {
        m = next_member(s);
        v = INT_OF(join_now(m));
        if (v >= 1000) /* a finished member */
            continue;
        CHECK_EQ(v, CORIO_ECANCELED);
        int which = -1;
        for (int i = 0; i < RUNNING; i++)
            if (t[i] == m)
                which = i;
        CHECK_GE(which, 0);
        CHECK(!seen[which]);
        seen[which] = true;
    }
    for (int i = 0; i < RUNNING; i++)
        CHECK(seen[i]);
    CHECK_EQ(atomic_load(&members_cancelled), RUNNING);
    CHECK_NEXT_ERR(m, corio_set_next(s, &m), CORIO_ENOENT);
    /* The non-members were not cancelled. */
    CHECK_OK(corio_event_set(g[RUNNING].go));
    CHECK_OK(corio_event_set(g[RUNNING + 1].go));
    void *r = NULL;
    CHECK_OK(corio_join(bystander, &r));
    CHECK_EQ(INT_OF(r), g[RUNNING].value);
    CHECK_OK(corio_join(outsider, &r));
    CHECK_EQ(INT_OF(r), g[RUNNING + 1].value);
    CHECK_EQ(atomic_load(&members_cancelled), RUNNING);
    CHECK_OK(corio_set_cancel(s)); /* empty again */
    CHECK_OK(corio_set_free(s));
    gates_free(g, RUNNING + 2);
    return NULL;
}

TEST(set_cancel_cancels_the_running_members_only)
{
    run_main_checked(1, main_set_cancel, NULL);
    run_main_checked(3, main_set_cancel, NULL);
}

/* Many members (more than one batch of the cancel's walk, which lets go
 * of the lock between batches) on every loop: a third block until
 * cancelled, the rest finish after random numbers of yields (ignoring a
 * cancellation). Two consumers take them as they come while two tasks
 * call corio_set_cancel at once. Every member comes out exactly once,
 * every blocked one cancelled (its result says so). */
enum { CANCELLED_TAG = 1 << 24 };
static corio_event *never_set;

static void *block_until_cancelled(void *arg)
{
    CHECK_ERR(corio_event_wait(never_set), CORIO_ECANCELED);
    return PTR_OF(INT_OF(arg) | CANCELLED_TAG);
}

static void *yield_ignoring_cancel(void *arg)
{
    uint64_t rng = (uint64_t)INT_OF(arg) * 0x9E3779B97F4A7C15ull + 3;
    for (uint64_t n = test_rand(&rng) % 50; n > 0; n--)
        (void)corio_yield();
    return arg;
}

struct tagged {
    corio_set *set;
    long n;
    _Atomic int *seen, *cancelled;
};

static void *consume_tagged(void *arg)
{
    struct tagged *c = arg;
    for (;;) {
        corio_task *m = NOT_A_TASK;
        int rc = corio_set_next(c->set, &m);
        if (rc == CORIO_ENOENT)
            break;
        CHECK_OK(rc);
        long r = INT_OF(join_now(m)), idx = r & (CANCELLED_TAG - 1);
        if (idx < 0 || idx >= c->n)
            FAIL_("a member came out with result %ld", r);
        if (atomic_fetch_add(&c->seen[idx], 1) != 0)
            FAIL_("member %ld taken twice", idx);
        atomic_store(&c->cancelled[idx], (r & CANCELLED_TAG) != 0);
    }
    return NULL;
}

static void *cancel_set(void *set)
{
    CHECK_OK(corio_set_cancel(set));
    return NULL;
}

static void *main_cancel_many(void *arg)
{
    long n = INT_OF(arg);
    unsigned loops = corio_loop_count();
    uint64_t rng = 0xca9ce1 + loops;
    struct tagged c = {.n = n};
    c.seen = calloc((size_t)n, sizeof *c.seen);
    c.cancelled = calloc((size_t)n, sizeof *c.cancelled);
    CHECK(c.seen && c.cancelled);
    CHECK_OK(corio_event_new(&never_set));
    CHECK_OK(corio_set_new(&c.set));
    for (long i = 0; i < n; i++) {
        corio_task *t;
        corio_spawn_opts o = test_on_loop(i % 4 == 1 ? -1 : (int)(i % loops), i % 5 == 2);
        CHECK_OK(corio_spawn_ex(&t, i % 3 ? yield_ignoring_cancel : block_until_cancelled,
                                PTR_OF(i), &o));
        CHECK_OK(corio_set_add(c.set, t));
    }
    corio_task *cons[2], *other_cancel;
    for (int k = 0; k < 2; k++) {
        corio_spawn_opts o = test_on_loop((k + 1) % (int)loops, k == 1);
        CHECK_OK(corio_spawn_ex(&cons[k], consume_tagged, &c, &o));
    }
    CHECK_OK(corio_sleep((int64_t)(test_rand(&rng) % 500) * CORIO_USEC));
    CHECK_OK(corio_spawn_on(&other_cancel, loops - 1, cancel_set, c.set));
    CHECK_OK(corio_set_cancel(c.set));
    CHECK_OK(corio_join(other_cancel, NULL));
    for (int k = 0; k < 2; k++)
        CHECK_OK(corio_join(cons[k], NULL));
    for (long i = 0; i < n; i++) {
        CHECK_EQ(atomic_load(&c.seen[i]), 1);
        if (i % 3 == 0 && !atomic_load(&c.cancelled[i]))
            FAIL_("member %ld, blocked, was not cancelled", i);
        if (i % 3 != 0 && atomic_load(&c.cancelled[i]))
            FAIL_("member %ld came out tagged cancelled", i);
    }
    CHECK_EQ(corio_set_len(c.set), 0);
    CHECK_OK(corio_set_free(c.set));
    corio_event_free(never_set);
    free(c.seen);
    free(c.cancelled);
    return NULL;
}

TEST(set_cancel_of_many_members_racing_finishes_and_takers)
{
    long n = test_scaled_starts(3000);
    if (n < 300)
        n = 300;
    for (long round = 0; round < test_scaled(10); round++) {
        run_main_checked(2, main_cancel_many, PTR_OF(n));
        run_main_checked(4, main_cancel_many, PTR_OF(n));
    }
}

/* ---- races ----
 *
 * Members on every loop finish after random numbers of yields while
 * consumers on different loops (some light) call set_next_until with
 * deadlines 0-50 us away and a canceller cancels them at random. Every
 * member must come out exactly once across the consumers, and every
 * round end. Consumer 0 waits without a deadline; the others give up
 * after a random number of calls, and the canceller after a random number
 * of cancellations, so each round ends with consumer 0 alone, uncancelled:
 * a wake-up lost in the races (a finished member left in the set while
 * its last consumer sleeps) hangs the round, where retries would hide it. */
struct race {
    corio_set *set;
    _Atomic int *seen;
    long n;
    int nconsumers;
    corio_task *consumers[4];
    _Atomic int consumers_done;
    _Atomic long timeouts, cancels;
};

struct race_consumer {
    struct race *race;
    uint64_t seed;
    bool forever;
};

static void *race_consume(void *arg)
{
    const struct race_consumer *spec = arg;
    struct race *r = spec->race;
    uint64_t rng = spec->seed;
    bool forever = spec->forever;
    long budget = 20 + (long)(test_rand(&rng) % 300), mine = 0;
    for (long calls = 0; forever || calls < budget; calls++) {
        corio_task *m = NOT_A_TASK;
        corio_time_t deadline =
            forever ? CORIO_FOREVER
                    : corio_now() + (corio_time_t)(test_rand(&rng) % 50) * CORIO_USEC;
        int rc = corio_set_next_until(r->set, &m, deadline);
        if (rc == CORIO_ENOENT) {
            CHECK(m == NULL);
            break;
        }
        if (rc == CORIO_ETIMEDOUT || rc == CORIO_ECANCELED) {
            CHECK(m == NULL);
            atomic_fetch_add(rc == CORIO_ETIMEDOUT ? &r->timeouts : &r->cancels, 1);
            continue;
        }
        CHECK_OK(rc);
        long idx = INT_OF(join_now(m));
        if (idx < 0 || idx >= r->n)
            FAIL_("a member came out with result %ld", idx);
        if (atomic_fetch_add(&r->seen[idx], 1) != 0)
            FAIL_("member %ld taken twice", idx);
        mine++;
    }
    atomic_fetch_add(&r->consumers_done, 1);
    return PTR_OF(mine);
}

static void *race_cancel_consumers(void *arg)
{
    struct race *r = arg;
    uint64_t rng = 99 + (uint64_t)r->n;
    long budget = (long)(test_rand(&rng) % 200);
    while (atomic_load(&r->consumers_done) < r->nconsumers && budget-- > 0) {
        CHECK_OK(corio_cancel(r->consumers[test_rand(&rng) % (uint64_t)r->nconsumers]));
        CHECK_OK(corio_sleep((int64_t)(test_rand(&rng) % 20) * CORIO_USEC));
    }
    return NULL;
}

static void *main_races(void *arg)
{
    long rounds = INT_OF(arg);
    unsigned loops = corio_loop_count();
    enum { M = 32 };
    long timeouts = 0, cancels = 0;
    for (long round = 0; round < rounds; round++) {
        snprintf(test_watchdog_note, sizeof test_watchdog_note, "%u loops, round %ld", loops,
                 round);
        _Atomic int seen[M];
        for (int i = 0; i < M; i++)
            atomic_init(&seen[i], 0);
        struct race r = {.seen = seen, .n = M, .nconsumers = 2 + (int)(round % 3)};
        CHECK_OK(corio_set_new(&r.set));
        for (int i = 0; i < M; i++) {
            corio_task *t;
            corio_spawn_opts o = test_on_loop(i % 2 ? -1 : i % (int)loops, i % 4 == 3);
            CHECK_OK(corio_spawn_ex(&t, yield_then_return, PTR_OF(i), &o));
            CHECK_OK(corio_set_add(r.set, t));
        }
        struct race_consumer rcs[4];
        for (int k = 0; k < r.nconsumers; k++) {
            rcs[k] = (struct race_consumer){&r, (uint64_t)(round * 4 + k + 1), k == 0};
            corio_spawn_opts o = test_on_loop((k + 1) % (int)loops, (round + k) % 3 == 0);
            CHECK_OK(corio_spawn_ex(&r.consumers[k], race_consume, &rcs[k], &o));
        }
        corio_task *canceller;
        CHECK_OK(corio_spawn_on(&canceller, (unsigned)round % loops, race_cancel_consumers, &r));
        CHECK_OK(corio_join(canceller, NULL));
        long total = 0;
        for (int k = 0; k < r.nconsumers; k++) {
            void *res = NULL;
            CHECK_OK(corio_join(r.consumers[k], &res));
            total += INT_OF(res);
        }
        CHECK_EQ(total, M);
        for (int i = 0; i < M; i++)
            CHECK_EQ(atomic_load(&seen[i]), 1);
        CHECK_EQ(corio_set_len(r.set), 0);
        CHECK_OK(corio_set_free(r.set));
        timeouts += atomic_load(&r.timeouts);
        cancels += atomic_load(&r.cancels);
    }
    fprintf(stderr, "   %u loops: %ld timeouts, %ld cancellations seen\n", loops, timeouts,
            cancels);
    return NULL;
}

TEST(races_of_finishes_deadlines_and_cancellations)
{
    run_main_checked(2, main_races, PTR_OF(test_scaled(300)));
    run_main_checked(3, main_races, PTR_OF(test_scaled(200)));
    run_main_checked(4, main_races, PTR_OF(test_scaled(200)));
}

/* An add racing the task's finish on another loop: spawned there to
 * return at once and added right away, it must come out (never lost:
 * the round would wait for ever; never twice). Then the same with a
 * consumer on a third loop waiting in set_next meanwhile, held there by
 * a gated member released at the end. */
struct add_race {
    corio_set *set;
    long n;
    _Atomic int taken;
    unsigned char *seen;
};

static void *take_n_plus_anchor(void *arg)
{
    struct add_race *a = arg;
    for (long k = 0; k < a->n + 1; k++) {
        corio_task *m = next_member(a->set);
        long idx = INT_OF(join_now(m));
        if (idx < 0 || idx > a->n)
            FAIL_("a member came out with result %ld", idx);
        if (a->seen[idx])
            FAIL_("member %ld taken twice", idx);
        a->seen[idx] = 1;
        atomic_fetch_add(&a->taken, 1);
    }
    return NULL;
}

static void *main_add_races_finish(void *arg)
{
    long rounds = INT_OF(arg);
    unsigned loops = corio_loop_count();
    corio_set *s;
    CHECK_OK(corio_set_new(&s));
    for (long r = 0; r < rounds; r++) {
        corio_task *t;
        corio_spawn_opts o = test_on_loop(1 + (int)(r % (loops - 1)), r % 3 == 0);
        CHECK_OK(corio_spawn_ex(&t, test_ret_arg, PTR_OF(r), &o));
        if (r % 2)
            test_spin((unsigned)(r % 64) * 16); /* move the moment about */
        CHECK_OK(corio_set_add(s, t));
        CHECK_EQ(corio_set_len(s), 1);
        corio_task *m = next_member(s);
        CHECK_PTR_EQ(m, t);
        CHECK_EQ(INT_OF(join_now(m)), r);
    }
    CHECK_OK(corio_set_free(s));
    if (loops < 3)
        return NULL;

    /* With a consumer waiting on loop 2, members finishing on loop 1. */
    struct add_race a = {.n = rounds};
    a.seen = calloc((size_t)rounds + 1, 1);
    CHECK(a.seen);
    CHECK_OK(corio_set_new(&a.set));
    struct gate anchor;
    gates_new(&anchor, 1);
    anchor.value = rounds;
    corio_task *at, *consumer;
    CHECK_OK(corio_spawn_on(&at, 1, wait_for_gate, &anchor));
    CHECK_OK(corio_set_add(a.set, at));
    corio_spawn_opts oc = test_on_loop(2, false);
    CHECK_OK(corio_spawn_ex(&consumer, take_n_plus_anchor, &a, &oc));
    for (long r = 0; r < rounds; r++) {
        corio_task *t;
        corio_spawn_opts o = test_on_loop(1, r % 3 == 1);
        CHECK_OK(corio_spawn_ex(&t, test_ret_arg, PTR_OF(r), &o));
        CHECK_OK(corio_set_add(a.set, t));
        if (r % 64 == 63) /* do not let the set grow without bound */
            CHECK(test_await(&a.taken, (int)(r - 32)));
    }
    CHECK(test_await(&a.taken, (int)rounds));
    CHECK_OK(corio_event_set(anchor.go));
    CHECK_OK(corio_join(consumer, NULL));
    for (long i = 0; i <= rounds; i++)
        CHECK(a.seen[i]);
    CHECK_EQ(corio_set_len(a.set), 0);
    CHECK_OK(corio_set_free(a.set));
    gates_free(&anchor, 1);
    free(a.seen);
    return NULL;
}

TEST(an_add_racing_the_finish)
{
    struct test_on_loop_0 body = {main_add_races_finish, PTR_OF(test_scaled_starts(20000))};
    run_main_checked(2, test_main_on_loop_0, &body);
    body.arg = PTR_OF(test_scaled_starts(10000));
    run_main_checked(3, test_main_on_loop_0, &body);
}

/* ---- a member that never ran ----
 *
 * Its stack could not be had (the next wrapped call, its stack's fresh
 * mapping, made to fail as it would start): it finishes without running
 * and comes out like any member, and its join says CORIO_ENOSTACK. Once
 * with the consumer waiting in set_next when it fails to start, once
 * added after it failed to start. One loop. */
static void *never_runs(void *arg)
{
    FAIL_("%s", "a task whose stack could not be mapped ran");
    return arg;
}

static void *main_never_ran(void *arg)
{
    (void)arg;
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    o.stack_size = 3u << 20; /* a size no pooled stack has: a fresh mapping */
    corio_set *s;
    CHECK_OK(corio_set_new(&s));
    corio_task *t;
    CHECK_OK(corio_spawn_ex(&t, never_runs, NULL, &o));
    CHECK_OK(corio_set_add(s, t));
    corio__fault_arm(1);
    corio_task *m = NULL;
    int rc = corio_set_next(s, &m);
    bool fired = corio__fault_fired();
    corio__fault_arm(0);
    CHECK(fired);
    CHECK_OK(rc);
    CHECK_PTR_EQ(m, t);
    CHECK(test_err_is(corio_join(t, NULL), "ENOSTACK"));

    CHECK_OK(corio_spawn_ex(&t, never_runs, NULL, &o));
    corio__fault_arm(1);
    rc = corio_yield(); /* it tries to start, and fails */
    fired = corio__fault_fired();
    corio__fault_arm(0);
    CHECK_OK(rc);
    CHECK(fired);
    await_done(t);
    CHECK_OK(corio_set_add(s, t));
    m = NULL;
    CHECK_OK(corio_set_next_until(s, &m, corio_now()));
    CHECK_PTR_EQ(m, t);
    CHECK(test_err_is(corio_join(t, NULL), "ENOSTACK"));
    CHECK_NEXT_ERR(m, corio_set_next(s, &m), CORIO_ENOENT);
    CHECK_OK(corio_set_free(s));
    return NULL;
}

TEST(a_member_that_never_ran_comes_out)
{
    run_main_checked(1, main_never_ran, NULL);
}

/* set_free from a discard function (a loop thread, outside any task), the
 * one place off a task where a set with members may be freed: it cancels
 * and detaches the running member, releases the finished one. The
 * discard runs for a task whose stack could not be had (the mapping made
 * to fail as it would start). One loop. */
static corio_set *discard_set;
static _Atomic int discard_rc = 1;

static void free_set_in_discard(void *arg, int error)
{
    (void)arg;
    CHECK(test_err_is(error, "ENOSTACK"));
    CHECK(corio_self() == NULL);
    atomic_store(&discard_rc, corio_set_free(discard_set));
}

static void *main_free_in_discard(void *arg)
{
    (void)arg;
    atomic_store(&members_cancelled, 0);
    corio_event *never;
    CHECK_OK(corio_event_new(&never));
    struct gate g = {never, 0};
    CHECK_OK(corio_set_new(&discard_set));
    corio_task *t[2];
    CHECK_OK(corio_spawn(&t[0], wait_for_gate, &g));
    CHECK_OK(corio_set_add(discard_set, t[0]));
    t[1] = spawn_finished(1, false);
    CHECK_OK(corio_set_add(discard_set, t[1]));
    CHECK_OK(corio_yield()); /* t[0] waits */
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    o.stack_size = 3u << 20; /* a fresh mapping, made to fail */
    o.discard = free_set_in_discard;
    corio_task *x;
    CHECK_OK(corio_spawn_ex(&x, never_runs, NULL, &o));
    corio__fault_arm(1);
    int rc = corio_yield();
    bool fired = corio__fault_fired();
    corio__fault_arm(0);
    CHECK_OK(rc);
    CHECK(fired);
    CHECK(test_err_is(corio_join(x, NULL), "ENOSTACK"));
    CHECK_OK(atomic_load(&discard_rc));
    CHECK(test_await(&members_cancelled, 1));
    await_released(t, 2);
    corio_event_free(never);
    return NULL;
}

TEST(set_free_from_a_discard_function)
{
    run_main_checked(1, main_free_in_discard, NULL);
}

/* ---- the runtime stopping under a waiting consumer ----
 *
 * Consumers (regular, light, migrating) wait in set_next on members that
 * sleep for an hour, and, with two loops or more, on members that never
 * start (queued on the last loop behind a computation that outlasts
 * main: shutdown drops them, CORIO_ESHUTDOWN). main returns. The waits
 * end (CORIO_ECANCELED, or 0 if a member ended first), each consumer
 * frees its set, and corio_run returns with nothing left behind. */
static _Atomic int stop_ready, stop_main_returning, stop_hog_started;
static _Atomic int stop_rc[3];

static void *hog_until_main_returns(void *arg)
{
    (void)arg;
    atomic_store(&stop_hog_started, 1);
    corio_time_t give_up = corio_now() + 20 * CORIO_SEC;
    while (!atomic_load(&stop_main_returning) && corio_now() < give_up)
        ;
    corio_time_t until = corio_now() + 2 * CORIO_MSEC;
    while (corio_now() < until)
        ;
    return NULL;
}

static void *consumer_at_shutdown(void *arg)
{
    int which = INT_OF(arg);
    unsigned loops = corio_loop_count();
    corio_set *s;
    CHECK_OK(corio_set_new(&s));
    for (int i = 0; i < 6; i++) {
        corio_task *t;
        int loop = i < 2 && loops > 1 ? (int)loops - 1 : -1;
        corio_spawn_opts o = test_on_loop(loop, i % 2);
        CHECK_OK(corio_spawn_ex(&t, sleep_an_hour, NULL, &o));
        CHECK_OK(corio_set_add(s, t));
    }
    atomic_fetch_add(&stop_ready, 1);
    corio_task *m = NULL;
    int rc = corio_set_next(s, &m);
    atomic_store(&stop_rc[which], rc);
    if (rc == 0) {
        int jrc = corio_join(m, NULL);
        if (jrc != 0)
            CHECK(test_err_is(jrc, "ESHUTDOWN"));
    }
    CHECK_OK(corio_set_free(s));
    return NULL;
}

static void *main_stops_under_consumers(void *arg)
{
    (void)arg;
    unsigned loops = corio_loop_count();
    /* The hog first, so that the last loop, busy, neither steals a
     * consumer nor starts the members queued there. */
    if (loops > 1) {
        CHECK_OK(corio_spawn_on(NULL, loops - 1, hog_until_main_returns, NULL));
        CHECK(test_await(&stop_hog_started, 1));
    }
    static const unsigned flags[3] = {0, CORIO_TASK_LIGHT, CORIO_TASK_MIGRATE};
    for (int i = 0; i < 3; i++) {
        corio_spawn_opts o;
        corio_spawn_opts_init(&o);
        o.flags = flags[i];
        if (loops > 1 && !(flags[i] & CORIO_TASK_MIGRATE))
            o.loop = 0;
        CHECK_OK(corio_spawn_ex(NULL, consumer_at_shutdown, PTR_OF(i), &o));
    }
    CHECK(test_await(&stop_ready, 3));
    CHECK_OK(corio_sleep(CORIO_MSEC));
    atomic_store(&stop_main_returning, 1);
    return NULL;
}

TEST(consumers_end_when_the_runtime_stops)
{
    for (unsigned loops = 1; loops <= 4; loops++) {
        for (int i = 0; i < 3; i++)
            atomic_store(&stop_rc[i], 1);
        atomic_store(&stop_ready, 0);
        atomic_store(&stop_main_returning, 0);
        atomic_store(&stop_hog_started, 0);
        struct test_on_loop_0 body = {main_stops_under_consumers, NULL};
        if (loops == 1)
            run_main_checked(1, main_stops_under_consumers, NULL);
        else
            run_main_checked(loops, test_main_on_loop_0, &body);
        for (int i = 0; i < 3; i++)
            if (atomic_load(&stop_rc[i]) != CORIO_ECANCELED)
                CHECK_OK(atomic_load(&stop_rc[i]));
    }
}

/* ---- light tasks ----
 *
 * A light consumer (its frames leave the shared stack while it waits: the
 * set must store *task only once the consumer runs again, or into memory
 * that is still its own) takes thousands of light and regular members;
 * then a migrating one. And a light consumer in the deadline and
 * cancellation races. */
TEST(light_and_migrating_consumers)
{
    struct many a = {.n = test_scaled_starts(10000), .light_members = true};
    struct as_task light = {CORIO_TASK_LIGHT, consume_many, &a};
    run_main_checked(2, main_as_task, &light);
    run_main_checked(1, main_as_task, &light);
    struct as_task migrating = {CORIO_TASK_MIGRATE, consume_many, &a};
    run_main_checked(3, main_as_task, &migrating);
    struct as_task light_order = {CORIO_TASK_LIGHT, main_finish_order, PTR_OF(test_scaled(20))};
    run_main_checked(3, main_as_task, &light_order);
}

/* ---- a taker counts as joining, as a join does ----
 *
 * A task blocked in corio_set_next needs no CPU until a member finishes,
 * so its loop's load for placement leaves it out (loop.h: live tasks
 * minus those joining), or idle loops would refuse the very work it
 * waits for. Loop 1 holds the taker and the member it waits for: its
 * published load must read 1 (the gated member), not 2. */
static void *main_taker_load(void *arg)
{
    (void)arg;
    corio__loop *one = corio__loop_current()->rt->loops[1];
    struct gate g[1];
    gates_new(g, 1);
    corio_set *s;
    CHECK_OK(corio_set_new(&s));
    corio_task *member, *taker;
    corio_spawn_opts o1 = test_on_loop(1, false);
    CHECK_OK(corio_spawn_ex(&member, wait_for_gate, &g[0], &o1));
    CHECK_OK(corio_set_add(s, member));
    CHECK_OK(corio_spawn_ex(&taker, take_one, s, &o1));
    corio_time_t give_up = corio_deadline_in(10 * CORIO_SEC);
    while (atomic_load_explicit(&one->load, memory_order_relaxed) != 1) {
        if (corio_now() >= give_up)
            FAIL_("loop 1's load reads %zu with one member gated and one task taking",
                  atomic_load_explicit(&one->load, memory_order_relaxed));
        CHECK_OK(corio_sleep(CORIO_MSEC));
    }
    CHECK_OK(corio_event_set(g[0].go));
    void *r = NULL;
    CHECK_OK(corio_join(taker, &r));
    CHECK_PTR_EQ(r, member);
    CHECK_EQ(INT_OF(join_now(member)), g[0].value);
    CHECK_OK(corio_set_free(s));
    gates_free(g, 1);
    return NULL;
}

TEST(a_taker_counts_as_joining)
{
    struct test_on_loop_0 body = {main_taker_load, NULL};
    run_main_checked(2, test_main_on_loop_0, &body);
}

/* ---- a set holding one runtime's members refuses another's tasks ----
 *
 * Member records come from the members' runtime's loops and go back to
 * them: a task of a second runtime running beside the first may not add
 * to, take from or free a set that holds the first's members (taking one
 * would put its record on the second runtime's free list, memory the
 * first unmaps as it ends: found by review, a crash). Once the set is
 * empty, the other runtime may use it. */
struct other_runtime {
    corio_set *set;
    int add_rc, next_rc, free_rc, empty_add_rc;
};

static void *other_main(void *arg)
{
    struct other_runtime *o = arg;
    corio_task *t;
    CHECK_OK(corio_spawn(&t, test_ret_arg, PTR_OF(5)));
    o->add_rc = corio_set_add(o->set, t);
    corio_task *m = NULL;
    o->next_rc = corio_set_next_until(o->set, &m, corio_now());
    CHECK(m == NULL);
    o->free_rc = corio_set_free(o->set);
    void *r = NULL;
    CHECK_OK(corio_join(t, &r)); /* still ours: the add was refused */
    CHECK_EQ(INT_OF(r), 5);
    return NULL;
}

static void *other_runtime_thread(void *arg)
{
    run_main(1, other_main, arg); /* beside another: no leak count of its own */
    return NULL;
}

static void *empty_set_main(void *arg)
{
    struct other_runtime *o = arg;
    corio_task *t;
    CHECK_OK(corio_spawn(&t, test_ret_arg, PTR_OF(6)));
    o->empty_add_rc = corio_set_add(o->set, t);
    corio_task *m = next_member(o->set);
    CHECK_PTR_EQ(m, t);
    CHECK_EQ(INT_OF(join_now(m)), 6);
    return NULL;
}

static void *empty_set_thread(void *arg)
{
    run_main(1, empty_set_main, arg);
    return NULL;
}

static void *join_thread(void *arg)
{
    pthread_join(*(pthread_t *)arg, NULL);
    return NULL;
}

static void *main_other_runtime(void *arg)
{
    (void)arg;
    struct gate g[1];
    gates_new(g, 1);
    corio_set *s;
    CHECK_OK(corio_set_new(&s));
    corio_task *member;
    CHECK_OK(corio_spawn(&member, wait_for_gate, &g[0]));
    CHECK_OK(corio_set_add(s, member));
    struct other_runtime o = {.set = s};
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, other_runtime_thread, &o), 0);
    CHECK_OK(corio_run_blocking(join_thread, &th, NULL));
    CHECK_ERR(o.add_rc, CORIO_EINVAL);
    CHECK_ERR(o.next_rc, CORIO_EINVAL);
    CHECK_ERR(o.free_rc, CORIO_EPERM);
    CHECK_EQ(corio_set_len(s), 1);
    CHECK_OK(corio_event_set(g[0].go));
    corio_task *m = next_member(s);
    CHECK_PTR_EQ(m, member);
    CHECK_EQ(INT_OF(join_now(m)), g[0].value);
    /* Empty now: the other runtime may use it, and leave it empty. */
    CHECK_EQ(pthread_create(&th, NULL, empty_set_thread, &o), 0);
    CHECK_OK(corio_run_blocking(join_thread, &th, NULL));
    CHECK_OK(o.empty_add_rc);
    CHECK_EQ(corio_set_len(s), 0);
    CHECK_OK(corio_set_free(s));
    gates_free(g, 1);
    return NULL;
}

TEST(a_set_refuses_another_runtime_while_it_holds_members)
{
    run_main_checked(2, main_other_runtime, NULL);
}

int main(int argc, char **argv)
{
    RUN(members_come_out_in_the_order_they_finish);
    RUN(every_member_comes_out_exactly_once);
    RUN(a_member_added_finished_comes_out_at_once);
    RUN(a_deadline_takes_nothing);
    RUN(a_cancelled_set_next_takes_nothing);
    RUN(bad_arguments_and_handles_are_refused);
    RUN(a_set_next_refused_for_a_null_set_leaves_task_null);
    RUN(calls_outside_a_task_are_refused);
    RUN(a_member_waiting_on_its_own_set_is_edeadlk);
    RUN(an_add_without_memory_leaves_the_handle_to_the_caller);
    RUN(several_consumers_take_each_member_once);
    RUN(waiters_on_a_set_emptied_get_enoent);
    RUN(set_free_cancels_and_releases_members);
    RUN(set_free_while_a_task_waits_is_ebusy);
    RUN(set_free_while_a_woken_taker_has_not_run_is_ebusy);
    RUN(set_cancel_cancels_the_running_members_only);
    RUN(set_cancel_of_many_members_racing_finishes_and_takers);
    RUN(races_of_finishes_deadlines_and_cancellations);
    RUN(an_add_racing_the_finish);
    RUN(a_member_that_never_ran_comes_out);
    RUN(set_free_from_a_discard_function);
    RUN(consumers_end_when_the_runtime_stops);
    RUN(light_and_migrating_consumers);
    RUN(a_taker_counts_as_joining);
    RUN(a_set_refuses_another_runtime_while_it_holds_members);
    return test_summary();
}
