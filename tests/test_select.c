/*
 * test_select.c: corio_chan_select. An op ready at once is done alone; a
 * waiting select is woken by any of its channels, on either loop; ready
 * ops are picked at random; closed channels, NULL channels, deadlines,
 * cancellation and bad arguments; a select keeps its FIFO turn against
 * plain receivers; light tasks; and exactly-once delivery between many
 * selecting and plain producers and consumers on two loops while their
 * waits keep timing out and being cancelled (a wake-up a select took and
 * did not use must reach another waiter, or this hangs).
 */
#define _GNU_SOURCE
#include <stdatomic.h>

#include "chan.h" /* the queues, to see who waits */
#include "sys.h"  /* corio__fault_arm_hook */
#include "test.h"

static corio_chan *chan_new(size_t capacity)
{
    corio_chan *c;
    CHECK_OK(corio_chan_new(&c, sizeof(long), capacity));
    return c;
}

static corio_chan_op recv_op(corio_chan *c, long *into)
{
    return (corio_chan_op){.chan = c, .dir = CORIO_CHAN_RECV, .elem = into};
}

static corio_chan_op send_op(corio_chan *c, long *from)
{
    return (corio_chan_op){.chan = c, .dir = CORIO_CHAN_SEND, .elem = from};
}

/* ---- ops ready at once ---- */

static void *main_ready(void *arg)
{
    (void)arg;
    corio_chan *a = chan_new(4), *b = chan_new(4), *full = chan_new(1);
    long one = 1, got_a = 0, got_b = 0, v = 77;
    CHECK_OK(corio_chan_send(full, &one));
    CHECK_OK(corio_chan_send(b, &v));
    corio_chan_op ops[3] = {recv_op(a, &got_a), recv_op(b, &got_b), send_op(full, &one)};
    size_t idx = 99;
    CHECK_OK(corio_chan_select(ops, 3, &idx));
    CHECK_EQ(idx, 1);
    CHECK_EQ(got_b, 77);
    CHECK_EQ(got_a, 0);
    CHECK_EQ(corio_chan_len(full), 1); /* the send that could not go was not done */
    CHECK_EQ(corio_chan_len(b), 0);

    /* A send with room goes ahead; a receive into NULL drops the element. */
    long s = 5;
    corio_chan_op ops2[2] = {recv_op(a, &got_a), send_op(a, &s)};
    CHECK_OK(corio_chan_select(ops2, 2, &idx));
    CHECK_EQ(idx, 1);
    CHECK_EQ(corio_chan_len(a), 1);
    corio_chan_op drop = recv_op(a, NULL);
    CHECK_OK(corio_chan_select(&drop, 1, &idx));
    CHECK_EQ(idx, 0);
    CHECK_EQ(corio_chan_len(a), 0);
    corio_chan_free(a);
    corio_chan_free(b);
    corio_chan_free(full);
    return NULL;
}

TEST(an_op_ready_at_once_is_done_alone)
{
    run_main_checked(2, main_ready, NULL);
}

/* ---- a waiting select is woken by any of its channels ---- */

struct wake {
    corio_chan *ch[3];
    long got;
    size_t idx;
    int rc;
    _Atomic int done;
};

static void *selector(void *arg)
{
    struct wake *w = arg;
    corio_chan_op ops[3];
    for (int i = 0; i < 3; i++)
        ops[i] = recv_op(w->ch[i], &w->got);
    w->rc = corio_chan_select_until(ops, 3, &w->idx, corio_deadline_in(20 * CORIO_SEC));
    atomic_store(&w->done, 1);
    return NULL;
}

static void *main_wake(void *arg)
{
    (void)arg;
    for (int round = 0; round < 60; round++) {
        struct wake w = {.got = -1};
        for (int i = 0; i < 3; i++)
            w.ch[i] = chan_new(1);
        int which = round % 3;
        bool light = round % 2;
        corio_spawn_opts o = test_on_loop(round / 3 % 2, light);
        corio_task *t;
        CHECK_OK(corio_spawn_ex(&t, selector, &w, &o));
        /* Sometimes send before it waits, mostly after. */
        if (round % 5)
            CHECK_OK(corio_sleep(round % 4 * 100 * CORIO_USEC));
        long v = 1000 + round;
        CHECK_OK(corio_chan_send(w.ch[which], &v));
        CHECK_OK(corio_join(t, NULL));
        CHECK_OK(w.rc);
        CHECK_EQ(w.idx, which);
        CHECK_EQ(w.got, 1000 + round);
        for (int i = 0; i < 3; i++) {
            CHECK_EQ(corio_chan_len(w.ch[i]), 0);
            corio_chan_free(w.ch[i]);
        }
    }
    return NULL;
}

TEST(a_waiting_select_is_woken_by_any_channel_on_either_loop)
{
    run_main_checked(2, main_wake, NULL);
}

/* A select waiting to send is woken when a receive makes room. */
static void *send_selector(void *arg)
{
    struct wake *w = arg;
    long a = 10, b = 20;
    corio_chan_op ops[2] = {send_op(w->ch[0], &a), send_op(w->ch[1], &b)};
    w->rc = corio_chan_select(ops, 2, &w->idx);
    atomic_store(&w->done, 1);
    return NULL;
}

static void *main_send_wake(void *arg)
{
    (void)arg;
    for (int round = 0; round < 20; round++) {
        struct wake w = {0};
        long fill = 1, v;
        for (int i = 0; i < 2; i++) {
            w.ch[i] = chan_new(1);
            CHECK_OK(corio_chan_send(w.ch[i], &fill));
        }
        corio_spawn_opts o = test_on_loop(round % 2, false);
        corio_task *t;
        CHECK_OK(corio_spawn_ex(&t, send_selector, &w, &o));
        CHECK_OK(corio_sleep(200 * CORIO_USEC));
        CHECK_EQ(atomic_load(&w.done), 0); /* both full: it waits */
        int which = round % 2;
        CHECK_OK(corio_chan_recv(w.ch[which], &v));
        CHECK_OK(corio_join(t, NULL));
        CHECK_OK(w.rc);
        CHECK_EQ(w.idx, which);
        CHECK_OK(corio_chan_recv(w.ch[which], &v));
        CHECK_EQ(v, which ? 20 : 10);
        CHECK_EQ(corio_chan_len(w.ch[!which]), 1); /* the other send was not done */
        for (int i = 0; i < 2; i++)
            corio_chan_free(w.ch[i]);
    }
    return NULL;
}

TEST(a_select_waiting_to_send_is_woken_by_room)
{
    run_main_checked(2, main_send_wake, NULL);
}

/* ---- fairness ---- */

static void *main_fair(void *arg)
{
    (void)arg;
    corio_chan *a = chan_new(CORIO_CHAN_UNBOUNDED), *b = chan_new(CORIO_CHAN_UNBOUNDED);
    long v = 0, got;
    enum { ROUNDS = 2000 };
    for (int i = 0; i < ROUNDS; i++) {
        CHECK_OK(corio_chan_send(a, &v));
        CHECK_OK(corio_chan_send(b, &v));
    }
    int picked[2] = {0, 0};
    corio_chan_op ops[2] = {recv_op(a, &got), recv_op(b, &got)};
    for (int i = 0; i < ROUNDS; i++) {
        size_t idx;
        CHECK_OK(corio_chan_select(ops, 2, &idx));
        picked[idx]++;
    }
    /* Both stay ready throughout; a fair coin lands under 800 of 2,000
     * with a probability below 1e-18. */
    CHECK_GT(picked[0], 800);
    CHECK_GT(picked[1], 800);
    corio_chan_free(a);
    corio_chan_free(b);
    return NULL;
}

TEST(ready_ops_are_picked_at_random)
{
    run_main_checked(1, main_fair, NULL);
}

/* Two ready ops among idle ones: each is picked about half the time (a
 * random start alone would favour the one after the idle run). */
static void *main_fair_gap(void *arg)
{
    (void)arg;
    enum { N = 10, ROUNDS = 4000 };
    corio_chan *ch[N];
    long v = 0, got;
    corio_chan_op ops[N];
    for (int i = 0; i < N; i++) {
        ch[i] = chan_new(i < 2 ? CORIO_CHAN_UNBOUNDED : 1);
        for (int r = 0; i < 2 && r < ROUNDS; r++)
            CHECK_OK(corio_chan_send(ch[i], &v));
        ops[i] = recv_op(ch[i], &got);
    }
    int picked[2] = {0, 0};
    for (int r = 0; r < ROUNDS; r++) {
        size_t idx;
        CHECK_OK(corio_chan_select(ops, N, &idx));
        CHECK_LT(idx, 2);
        picked[idx]++;
    }
    /* A fair coin lands under 1,600 of 4,000 with a probability below
     * 1e-36. */
    CHECK_GT(picked[0], 1600);
    CHECK_GT(picked[1], 1600);
    for (int i = 0; i < N; i++)
        corio_chan_free(ch[i]);
    return NULL;
}

TEST(ready_ops_are_picked_fairly_among_idle_ones)
{
    run_main_checked(1, main_fair_gap, NULL);
}

/* ---- closed and switched-off channels ---- */

static void *main_closed(void *arg)
{
    (void)arg;
    corio_chan *a = chan_new(2), *closed = chan_new(2);
    long v = 3, got = 0;
    CHECK_OK(corio_chan_send(closed, &v));
    CHECK_OK(corio_chan_close(closed));
    corio_chan_op ops[2] = {recv_op(a, &got), recv_op(closed, &got)};
    size_t idx;
    /* Closed but not drained: its element first. */
    CHECK_OK(corio_chan_select(ops, 2, &idx));
    CHECK_EQ(idx, 1);
    CHECK_EQ(got, 3);
    CHECK_ERR(corio_chan_select(ops, 2, &idx), CORIO_EPIPE);
    CHECK_EQ(idx, 1);
    corio_chan_op send_closed = send_op(closed, &v);
    CHECK_ERR(corio_chan_select(&send_closed, 1, &idx), CORIO_EPIPE);
    CHECK_EQ(idx, 0);

    /* NULL channels are never ready; with none left, nothing can be. */
    ops[1].chan = NULL;
    CHECK_ERR(corio_chan_select_until(ops, 2, &idx, corio_deadline_in(CORIO_MSEC)),
              CORIO_ETIMEDOUT);
    CHECK_EQ(idx, 2);
    ops[0].chan = NULL;
    CHECK_ERR(corio_chan_select(ops, 2, &idx), CORIO_ENOENT);
    CHECK_EQ(idx, 2);
    CHECK_ERR(corio_chan_select(ops, 0, &idx), CORIO_ENOENT);
    CHECK_ERR(corio_chan_select(NULL, 0, &idx), CORIO_ENOENT);
    corio_chan_free(a);
    corio_chan_free(closed);
    return NULL;
}

TEST(closed_channels_are_ready_with_epipe_and_null_ones_never)
{
    run_main_checked(1, main_closed, NULL);
}

/* A select waiting on a channel that gets closed wakes with EPIPE. */
static void *main_close_wakes(void *arg)
{
    (void)arg;
    for (int round = 0; round < 10; round++) {
        struct wake w = {0};
        for (int i = 0; i < 3; i++)
            w.ch[i] = chan_new(1);
        corio_spawn_opts o = test_on_loop(round % 2, false);
        corio_task *t;
        CHECK_OK(corio_spawn_ex(&t, selector, &w, &o));
        CHECK_OK(corio_sleep(100 * CORIO_USEC));
        CHECK_OK(corio_chan_close(w.ch[2]));
        CHECK_OK(corio_join(t, NULL));
        CHECK_ERR(w.rc, CORIO_EPIPE);
        CHECK_EQ(w.idx, 2);
        for (int i = 0; i < 3; i++)
            corio_chan_free(w.ch[i]);
    }
    return NULL;
}

TEST(closing_a_channel_wakes_its_select_with_epipe)
{
    run_main_checked(2, main_close_wakes, NULL);
}

/* ---- bad arguments ---- */

static void *main_bad(void *arg)
{
    (void)arg;
    corio_chan *a = chan_new(1);
    long v = 0;
    size_t idx = 5;
    corio_chan_op ok = recv_op(a, &v);
    CHECK_ERR(corio_chan_select(&ok, 1, NULL), CORIO_EINVAL);
    CHECK_ERR(corio_chan_select(NULL, 1, &idx), CORIO_EINVAL);
    CHECK_EQ(idx, 1);
    corio_chan_op bad_dir = {.chan = a, .dir = 3, .elem = &v};
    CHECK_ERR(corio_chan_select(&bad_dir, 1, &idx), CORIO_EINVAL);
    corio_chan_op no_elem = send_op(a, NULL);
    CHECK_ERR(corio_chan_select(&no_elem, 1, &idx), CORIO_EINVAL);
    CHECK_EQ(corio_chan_len(a), 0);
    corio_chan_free(a);
    return NULL;
}

static void *outside_thread(void *arg)
{
    corio_chan *a = arg;
    long v;
    corio_chan_op op = recv_op(a, &v);
    size_t idx;
    return (void *)(intptr_t)corio_chan_select(&op, 1, &idx);
}

TEST(bad_arguments_are_refused)
{
    run_main_checked(1, main_bad, NULL);
    corio_chan *a = chan_new(1);
    CHECK_EQ((int)(intptr_t)outside_thread(a), CORIO_EPERM);
    corio_chan_free(a);
}

/* ---- deadlines and cancellation leave nothing behind ---- */

static void *cancel_selector(void *arg)
{
    struct wake *w = arg;
    corio_chan_op ops[2] = {recv_op(w->ch[0], &w->got), recv_op(w->ch[1], &w->got)};
    atomic_store(&w->done, 1);
    w->rc = corio_chan_select(ops, 2, &w->idx);
    return NULL;
}

static void *main_deadline_cancel(void *arg)
{
    (void)arg;
    struct wake w = {0};
    w.ch[0] = chan_new(1);
    w.ch[1] = chan_new(1);
    long v = 9, got = 0;
    size_t idx = 0;
    corio_chan_op ops[2] = {recv_op(w.ch[0], &got), recv_op(w.ch[1], &got)};
    test_stopwatch sw = test_stopwatch_start();
    CHECK_ERR(corio_chan_select_until(ops, 2, &idx, corio_deadline_in(20 * CORIO_MSEC)),
              CORIO_ETIMEDOUT);
    CHECK_ELAPSED_WITHIN(&sw, 20 * CORIO_MSEC, CORIO_MSEC, 200 * CORIO_MSEC);
    CHECK_EQ(idx, 2);
    /* A deadline already past polls. */
    CHECK_ERR(corio_chan_select_until(ops, 2, &idx, 0), CORIO_ETIMEDOUT);
    CHECK_OK(corio_chan_send(w.ch[1], &v));
    CHECK_OK(corio_chan_select_until(ops, 2, &idx, 0));
    CHECK_EQ(idx, 1);
    CHECK_EQ(got, 9);

    /* Cancelled while waiting: nothing taken, and its nodes are out of
     * the queues (a later send goes to a plain receive). */
    corio_task *t;
    CHECK_OK(corio_spawn(&t, cancel_selector, &w));
    CHECK(test_await(&w.done, 1));
    CHECK_OK(corio_yield()); /* one loop: it is waiting now */
    CHECK_OK(corio_cancel(t));
    CHECK_OK(corio_join(t, NULL));
    CHECK_ERR(w.rc, CORIO_ECANCELED);
    CHECK_EQ(w.idx, 2);
    CHECK_OK(corio_chan_send(w.ch[0], &v));
    CHECK_EQ(corio_chan_len(w.ch[0]), 1);
    CHECK_OK(corio_chan_recv(w.ch[0], &got));

    /* A cancellation pending before the call fails it even with an op
     * ready, and takes nothing. */
    CHECK_OK(corio_chan_send(w.ch[0], &v));
    CHECK_OK(corio_cancel(corio_self()));
    CHECK_ERR(corio_chan_select(ops, 2, &idx), CORIO_ECANCELED);
    CHECK_EQ(corio_chan_len(w.ch[0]), 1);
    corio_chan_free(w.ch[0]);
    corio_chan_free(w.ch[1]);
    return NULL;
}

TEST(deadlines_and_cancellation_leave_nothing_behind)
{
    run_main_checked(1, main_deadline_cancel, NULL);
}

/* No memory to wait: CORIO_ENOMEM, nothing taken, nothing queued. A
 * light task's select allocates its nodes (a regular task's few ops keep
 * them in its frame); a select of many ops allocates its shuffled order,
 * and without it still works (a random start instead). */
static void *nomem_light(void *arg)
{
    (void)arg;
    corio_chan *a = chan_new(1), *b = chan_new(1);
    long got = 0, v = 4;
    size_t idx;
    corio_chan_op ops[2] = {recv_op(a, &got), recv_op(b, &got)};
    corio__fault_arm(1);
    CHECK_ERR(corio_chan_select(ops, 2, &idx), CORIO_ENOMEM);
    CHECK(corio__fault_fired());
    corio__fault_arm(0);
    CHECK_EQ(idx, 2);
    CHECK_OK(corio_chan_send(a, &v));
    CHECK_OK(corio_chan_select(ops, 2, &idx));
    CHECK_EQ(idx, 0);
    CHECK_EQ(got, 4);
    corio_chan_free(a);
    corio_chan_free(b);
    return NULL;
}

static void *main_nomem(void *arg)
{
    (void)arg;
    corio_task *t;
    corio_spawn_opts o = test_on_loop(0, true);
    CHECK_OK(corio_spawn_ex(&t, nomem_light, NULL, &o));
    CHECK_OK(corio_join(t, NULL));

    enum { MANY = 40 };
    corio_chan *ch[MANY];
    corio_chan_op ops[MANY];
    long got = 0, v = 8;
    for (int i = 0; i < MANY; i++) {
        ch[i] = chan_new(1);
        ops[i] = recv_op(ch[i], &got);
    }
    CHECK_OK(corio_chan_send(ch[MANY - 1], &v));
    size_t idx;
    corio__fault_arm(1);
    CHECK_OK(corio_chan_select(ops, MANY, &idx));
    CHECK(corio__fault_fired()); /* the order's allocation failed */
    corio__fault_arm(0);
    CHECK_EQ(idx, MANY - 1);
    CHECK_EQ(got, 8);
    for (int i = 0; i < MANY; i++)
        corio_chan_free(ch[i]);
    return NULL;
}

TEST(no_memory_to_wait_is_enomem)
{
    run_main_checked(1, main_nomem, NULL);
}

/* ---- FIFO turns against plain receivers ---- */

struct turn {
    corio_chan *a, *b;
    long got;
    size_t idx;
    _Atomic int done;
};

static void *plain_receiver(void *arg)
{
    struct turn *t = arg;
    CHECK_OK(corio_chan_recv(t->a, &t->got));
    atomic_store(&t->done, 1);
    return NULL;
}

static void *turn_selector(void *arg)
{
    struct turn *t = arg;
    corio_chan_op ops[2] = {recv_op(t->b, &t->got), recv_op(t->a, &t->got)};
    CHECK_OK(corio_chan_select(ops, 2, &t->idx));
    atomic_store(&t->done, 1);
    return NULL;
}

static void *main_turns(void *arg)
{
    (void)arg;
    corio_chan *a = chan_new(4), *b = chan_new(4);
    struct turn first = {a, b, 0, 0, 0}, second = {a, b, 0, 0, 0}, third = {a, b, 0, 0, 0};
    corio_task *t1, *t2, *t3;
    /* One loop, and a yield after each spawn: each waits in that order. */
    CHECK_OK(corio_spawn(&t1, turn_selector, &first));
    CHECK_OK(corio_yield());
    CHECK_OK(corio_spawn(&t2, plain_receiver, &second));
    CHECK_OK(corio_yield());
    CHECK_OK(corio_spawn(&t3, turn_selector, &third));
    CHECK_OK(corio_yield());
    long v = 1;
    for (int i = 0; i < 3; i++, v++) {
        CHECK_OK(corio_chan_send(a, &v));
        CHECK_OK(corio_yield());
        CHECK_OK(corio_yield());
    }
    CHECK_OK(corio_join(t1, NULL));
    CHECK_OK(corio_join(t2, NULL));
    CHECK_OK(corio_join(t3, NULL));
    CHECK_EQ(first.got, 1);
    CHECK_EQ(first.idx, 1);
    CHECK_EQ(second.got, 2);
    CHECK_EQ(third.got, 3);
    CHECK_EQ(third.idx, 1);
    corio_chan_free(a);
    corio_chan_free(b);
    return NULL;
}

TEST(selects_and_plain_receivers_are_woken_in_arrival_order)
{
    run_main_checked(1, main_turns, NULL);
}

/* ---- a wake-up taken and not used is passed on ----
 *
 * The window: a select has queued its node on A and not yet tried B. A
 * send to A now fires it; it then finds B ready and is done there, so
 * A's element must go to A's next waiter. Made to happen with the race
 * point between the two channels (select.c): A's queue holds R1, the
 * select, R2; the helper on loop 1 sends two elements to A (waking R1
 * and the select) and one to B. Without the pass-on, R2 sleeps beside an
 * element for ever. */

struct pass {
    corio_chan *a, *b;
    corio_task *r1, *r2;
    _Atomic int go, r2_starting, sent;
    long r1_got, r2_got, s_got;
    size_t s_idx;
    int s_rc;
    bool light; /* the select runs in a light task */
};

static void *pass_receiver(void *arg)
{
    struct pass *p = arg;
    bool second = corio_self() == p->r2;
    if (second) {
        atomic_store(&p->r2_starting, 1);
    }
    CHECK_OK(corio_chan_recv(p->a, second ? &p->r2_got : &p->r1_got));
    return NULL;
}

static void *pass_helper(void *arg)
{
    struct pass *p = arg;
    while (!atomic_load(&p->go))
        CHECK_OK(corio_yield());
    /* R2 shares this loop: it runs, queues behind the select, and sleeps. */
    corio_spawn_opts o = test_on_loop(1, false);
    CHECK_OK(corio_spawn_ex(&p->r2, pass_receiver, p, &o));
    while (!atomic_load(&p->r2_starting))
        CHECK_OK(corio_yield());
    CHECK_OK(corio_yield());
    corio__spin_lock(&p->a->lock);
    bool queued = p->a->receivers.head == p->r1 && p->a->receivers.tail == p->r2 &&
                  p->a->receivers.nodes != NULL;
    corio__spin_unlock(&p->a->lock);
    CHECK(queued);
    long one = 1, two = 2, three = 3;
    CHECK_OK(corio_chan_try_send(p->a, &one)); /* wakes R1 */
    CHECK_OK(corio_chan_try_send(p->a, &two)); /* wakes the select */
    CHECK_OK(corio_chan_try_send(p->b, &three));
    atomic_store(&p->sent, 1);
    return NULL;
}

/* Runs on the select's own thread, at the race point after A. */
static void pass_hook(void *arg)
{
    struct pass *p = arg;
    atomic_store(&p->go, 1);
    corio_time_t give_up = corio_deadline_in(20 * CORIO_SEC);
    while (!atomic_load(&p->sent) && corio_now() < give_up)
        ;
}

static void *pass_selector(void *arg)
{
    struct pass *p = arg;
    corio_chan_op ops[2] = {recv_op(p->a, &p->s_got), recv_op(p->b, &p->s_got)};
    /* The wrapped calls from here: a light task's nodes' allocation (a
     * regular task keeps two ops' nodes in its frame), then the race point
     * after A (A sorts first: the lower address). */
    corio__fault_arm_hook(p->light ? 2 : 1, pass_hook, p);
    p->s_rc = corio_chan_select(ops, 2, &p->s_idx);
    corio__fault_arm(0);
    return NULL;
}

static void *main_pass_on(void *arg)
{
    (void)arg;
    for (int round = 0; round < 20; round++) {
        struct pass p = {.light = round % 2};
        p.a = chan_new(4);
        p.b = chan_new(4);
        if ((uintptr_t)p.a > (uintptr_t)p.b) {
            corio_chan *t = p.a;
            p.a = p.b;
            p.b = t;
        }
        corio_spawn_opts on1 = test_on_loop(1, round % 2), on0 = test_on_loop(0, round % 2);
        corio_task *helper, *sel;
        CHECK_OK(corio_spawn_ex(&p.r1, pass_receiver, &p, &on1));
        /* R1 first in A's queue. */
        corio_time_t give_up = corio_deadline_in(10 * CORIO_SEC);
        for (bool in = false; !in && corio_now() < give_up;) {
            corio__spin_lock(&p.a->lock);
            in = p.a->receivers.head == p.r1;
            corio__spin_unlock(&p.a->lock);
            if (!in)
                CHECK_OK(corio_sleep(100 * CORIO_USEC));
        }
        CHECK_OK(corio_spawn_ex(&helper, pass_helper, &p, &on1));
        CHECK_OK(corio_spawn_ex(&sel, pass_selector, &p, &on0));
        CHECK_OK(corio_join(sel, NULL));
        CHECK_OK(p.s_rc);
        CHECK_EQ(p.s_idx, 1); /* done on B, after A's wake-up */
        CHECK_EQ(p.s_got, 3);
        CHECK_OK(corio_join(helper, NULL));
        CHECK_OK(corio_join(p.r1, NULL));
        int rc = corio_join_until(p.r2, NULL, corio_deadline_in(10 * CORIO_SEC));
        if (rc != 0) {
            CHECK_OK(corio_chan_close(p.a)); /* let it go before failing */
            (void)corio_join(p.r2, NULL);
        }
        CHECK_OK(rc);
        CHECK_EQ(p.r1_got, 1);
        CHECK_EQ(p.r2_got, 2);
        corio_chan_free(p.a);
        corio_chan_free(p.b);
    }
    return NULL;
}

TEST(a_wake_up_the_select_did_not_use_goes_to_the_next_waiter)
{
    run_main_checked(2, main_pass_on, NULL);
}

/* The channel that woke a select is tried first when it runs: had it
 * taken B's element instead (B filled after the wake-up, both ready by
 * then), A's would wait while A's next receiver sleeps. One loop: the
 * select waits, A's send fires it, B's send finds it fired, then it runs. */
static void *woken_selector(void *arg)
{
    struct turn *t = arg;
    corio_chan_op ops[2] = {recv_op(t->a, &t->got), recv_op(t->b, &t->got)};
    CHECK_OK(corio_chan_select(ops, 2, &t->idx));
    atomic_store(&t->done, 1);
    return NULL;
}

static void *main_woken_first(void *arg)
{
    (void)arg;
    for (int round = 0; round < 40; round++) {
        corio_chan *a = chan_new(4), *b = chan_new(4);
        struct turn t = {a, b, 0, 0, 0};
        corio_task *task;
        CHECK_OK(corio_spawn(&task, woken_selector, &t));
        CHECK_OK(corio_yield()); /* it runs and waits */
        long va = 1, vb = 2;
        CHECK_OK(corio_chan_send(a, &va));
        CHECK_OK(corio_chan_send(b, &vb));
        CHECK_OK(corio_join(task, NULL));
        CHECK_EQ(t.idx, 0);
        CHECK_EQ(t.got, 1);
        CHECK_EQ(corio_chan_len(b), 1);
        corio_chan_free(a);
        corio_chan_free(b);
    }
    return NULL;
}

TEST(a_woken_select_tries_the_channel_that_woke_it_first)
{
    run_main_checked(1, main_woken_first, NULL);
}

/* ---- exactly once, with every wake-up accounted for ---- */

#define CHANS 3
#define PRODUCERS 4
#define CONSUMERS 6

/* Two variants. Without `churn`, every wait is for ever: a wake-up that a
 * select took and did not pass on strands an element (or a producer)
 * once the others stop, and the run never completes. With it, waits
 * have short deadlines and a canceller keeps hitting the consumers:
 * nothing may be lost or taken twice when waits end early. */
struct storm {
    corio_chan *ch[CHANS];
    long per_producer;
    bool churn;
    _Atomic long received, sum;
    _Atomic int *seen; /* per value: times received */
    corio_task *consumers[CONSUMERS];
    _Atomic int stop;
};

struct actor {
    struct storm *s;
    int id;
};

static corio_time_t storm_deadline(const struct storm *s, uint64_t *rng)
{
    return s->churn ? corio_deadline_in((int64_t)(test_rand(rng) % 400) * CORIO_USEC)
                    : CORIO_FOREVER;
}

/* A wait that ended early (churn only). */
static bool ended_early(const struct storm *s, int rc)
{
    if (!s->churn)
        return false;
    return rc == CORIO_ETIMEDOUT || rc == CORIO_ECANCELED;
}

/* Producers send value v to channel v % CHANS by a plain send, or by a
 * select over every channel (it then goes wherever there was room
 * first: it still arrives once). */
static void *producer(void *arg)
{
    struct actor *p = arg;
    struct storm *s = p->s;
    uint64_t rng = (uint64_t)p->id * 7919 + 1;
    for (long i = 0; i < s->per_producer; i++) {
        long v = p->id * s->per_producer + i;
        corio_chan_op ops[CHANS];
        for (int c = 0; c < CHANS; c++)
            ops[c] = send_op(s->ch[c], &v);
        bool plain = test_rand(&rng) % 2;
        for (;;) {
            size_t idx;
            int rc = plain ? corio_chan_send_until(s->ch[v % CHANS], &v, storm_deadline(s, &rng))
                           : corio_chan_select_until(ops, CHANS, &idx, storm_deadline(s, &rng));
            if (rc == 0)
                break;
            CHECK(ended_early(s, rc));
        }
    }
    return NULL;
}

static void count(struct storm *s, long v)
{
    CHECK_GE(v, 0);
    CHECK_LT(v, PRODUCERS * s->per_producer);
    CHECK_EQ(atomic_fetch_add(&s->seen[v], 1), 0);
    atomic_fetch_add(&s->sum, v);
    atomic_fetch_add(&s->received, 1);
}

/* Consumers: plain receives from one channel (with a deadline), or
 * selects over every channel, some with the same channel twice (a value taken from ch[0]
 * offered back to it beside the receives). They leave once the channels
 * are closed (after every value has arrived). */
static void *consumer(void *arg)
{
    struct actor *p = arg;
    struct storm *s = p->s;
    uint64_t rng = (uint64_t)p->id * 104729 + 3;
    for (;;) {
        long got = -1;
        int mode = (int)(test_rand(&rng) % 4);
        int rc;
        if (mode == 0) {
            /* Never for ever: all consumers waiting on one channel while
             * every producer waits for room in another is a deadlock. */
            rc = corio_chan_recv_until(s->ch[test_rand(&rng) % CHANS], &got,
                                       corio_deadline_in(CORIO_MSEC));
            if (rc == 0)
                count(s, got);
            else if (rc == CORIO_ETIMEDOUT)
                rc = 0;
        } else {
            corio_chan_op ops[CHANS + 1];
            size_t n = 0, idx;
            for (int c = 0; c < CHANS; c++)
                ops[n++] = recv_op(s->ch[c], &got);
            long back = -1;
            if (mode == 1 && corio_chan_try_recv(s->ch[0], &back) == 0)
                ops[n++] = send_op(s->ch[0], &back); /* hand it back, or receive */
            rc = corio_chan_select_until(ops, n, &idx, storm_deadline(s, &rng));
            if (back >= 0 && !(rc == 0 && idx == CHANS))
                count(s, back); /* not handed back: it is ours */
            if (rc == 0 && idx < CHANS)
                count(s, got);
            if (rc == 0 || rc == CORIO_EPIPE)
                CHECK_LT(idx, n);
            else
                CHECK_EQ(idx, n);
        }
        if (rc == CORIO_EPIPE)
            return NULL; /* closed: every value has arrived */
        CHECK(rc == 0 || ended_early(s, rc));
    }
}

/* Cancels random consumers now and then: their waits fail and they go
 * round again, having lost nothing. */
static void *canceller(void *arg)
{
    struct storm *s = arg;
    uint64_t rng = 99;
    while (!atomic_load(&s->stop)) {
        (void)corio_cancel(s->consumers[test_rand(&rng) % CONSUMERS]);
        CHECK_OK(corio_sleep((int64_t)(test_rand(&rng) % 200) * CORIO_USEC));
    }
    return NULL;
}

static void *main_storm(void *arg)
{
    struct storm s = {.churn = arg != NULL};
    s.per_producer = test_scaled(20000);
    long total = PRODUCERS * s.per_producer;
    s.seen = calloc((size_t)total, sizeof *s.seen);
    CHECK(s.seen);
    for (int c = 0; c < CHANS; c++)
        s.ch[c] = chan_new(c == 0 ? 1 : 8);
    struct actor actors[PRODUCERS + CONSUMERS];
    corio_task *prod[PRODUCERS];
    for (int i = 0; i < PRODUCERS + CONSUMERS; i++)
        actors[i] = (struct actor){&s, i};
    for (int i = 0; i < CONSUMERS; i++) {
        corio_spawn_opts o = test_on_loop(i % 2, i % 3 == 0);
        CHECK_OK(corio_spawn_ex(&s.consumers[i], consumer, &actors[PRODUCERS + i], &o));
    }
    for (int i = 0; i < PRODUCERS; i++) {
        corio_spawn_opts o = test_on_loop(i % 2, i % 2 == 1);
        CHECK_OK(corio_spawn_ex(&prod[i], producer, &actors[i], &o));
    }
    corio_task *canc = NULL;
    if (s.churn)
        CHECK_OK(corio_spawn(&canc, canceller, &s));
    for (int i = 0; i < PRODUCERS; i++)
        CHECK_OK(corio_join(prod[i], NULL));
    /* Every value must arrive with no further send to wake anyone. */
    corio_time_t give_up = corio_deadline_in(30 * CORIO_SEC * TEST_SLOW);
    while (atomic_load(&s.received) < total && corio_now() < give_up)
        CHECK_OK(corio_sleep(CORIO_MSEC));
    CHECK_EQ(atomic_load(&s.received), total);
    atomic_store(&s.stop, 1);
    if (canc)
        CHECK_OK(corio_join(canc, NULL));
    for (int c = 0; c < CHANS; c++)
        CHECK_OK(corio_chan_close(s.ch[c]));
    for (int i = 0; i < CONSUMERS; i++)
        CHECK_OK(corio_join(s.consumers[i], NULL));
    CHECK_EQ(atomic_load(&s.sum), total * (total - 1) / 2);
    for (int c = 0; c < CHANS; c++) {
        CHECK_EQ(corio_chan_len(s.ch[c]), 0);
        corio_chan_free(s.ch[c]);
    }
    free(s.seen);
    return NULL;
}

TEST(every_value_arrives_once_with_every_wait_for_ever)
{
    run_main_checked(2, main_storm, NULL);
}

TEST(every_value_arrives_once_while_waits_time_out_and_are_cancelled)
{
    run_main_checked(2, main_storm, (void *)1);
}

int main(int argc, char **argv)
{
    RUN(an_op_ready_at_once_is_done_alone);
    RUN(a_waiting_select_is_woken_by_any_channel_on_either_loop);
    RUN(a_select_waiting_to_send_is_woken_by_room);
    RUN(ready_ops_are_picked_at_random);
    RUN(ready_ops_are_picked_fairly_among_idle_ones);
    RUN(closed_channels_are_ready_with_epipe_and_null_ones_never);
    RUN(closing_a_channel_wakes_its_select_with_epipe);
    RUN(bad_arguments_are_refused);
    RUN(deadlines_and_cancellation_leave_nothing_behind);
    RUN(no_memory_to_wait_is_enomem);
    RUN(selects_and_plain_receivers_are_woken_in_arrival_order);
    RUN(a_wake_up_the_select_did_not_use_goes_to_the_next_waiter);
    RUN(a_woken_select_tries_the_channel_that_woke_it_first);
    RUN(every_value_arrives_once_with_every_wait_for_ever);
    RUN(every_value_arrives_once_while_waits_time_out_and_are_cancelled);
    return test_summary();
}
