/*
 * test_chan.c: channels. Back-pressure of a bounded channel, FIFO order,
 * exactly-once delivery between many producers and consumers on two
 * loops (also while their waits keep being cancelled), unbounded
 * channels, close, the non-blocking calls, bad arguments, light tasks.
 */
#define _GNU_SOURCE
#include <stdatomic.h>

#include "test.h"

/* ---- back-pressure ---- */

struct bp {
    corio_chan *ch;
    _Atomic int sent;
};

static void *bp_sender(void *arg)
{
    struct bp *b = arg;
    for (int i = 0; i < 10; i++) {
        CHECK_OK(corio_chan_send_until(b->ch, &i, corio_deadline_in(10 * CORIO_SEC)));
        atomic_store(&b->sent, i + 1);
    }
    return NULL;
}

static void *main_backpressure(void *arg)
{
    for (int loop = 0; loop < 2; loop++) {
        struct bp b = {0};
        CHECK_OK(corio_chan_new(&b.ch, sizeof(int), 4));
        corio_spawn_opts o = test_on_loop(loop, loop == 1);
        corio_task *t;
        CHECK_OK(corio_spawn_ex(&t, bp_sender, &b, &o));
        /* It fills the channel, then waits. */
        corio_time_t give_up = corio_deadline_in(5 * CORIO_SEC);
        while (atomic_load(&b.sent) < 4 && corio_now() < give_up)
            CHECK_OK(corio_sleep(CORIO_MSEC));
        CHECK_OK(corio_sleep(30 * CORIO_MSEC));
        CHECK_EQ(atomic_load(&b.sent), 4);
        CHECK_EQ(corio_chan_len(b.ch), 4);
        int next = 0, v;
        /* Each receive makes room for exactly one more send. */
        for (int step = 0; step < 6; step++) {
            CHECK_OK(corio_chan_recv(b.ch, &v));
            CHECK_EQ(v, next++);
            give_up = corio_deadline_in(5 * CORIO_SEC);
            while (atomic_load(&b.sent) < 5 + step && corio_now() < give_up)
                CHECK_OK(corio_sleep(100 * CORIO_USEC));
            CHECK_EQ(atomic_load(&b.sent), 5 + step);
            if (step < 5) {
                CHECK_OK(corio_sleep(5 * CORIO_MSEC));
                CHECK_EQ(atomic_load(&b.sent), 5 + step); /* and no more */
            }
            CHECK_EQ(corio_chan_len(b.ch), 4);
        }
        CHECK_OK(corio_join(t, NULL));
        for (int i = 0; i < 4; i++) {
            CHECK_OK(corio_chan_recv(b.ch, &v));
            CHECK_EQ(v, next++);
        }
        CHECK_EQ(corio_chan_len(b.ch), 0);
        corio_chan_free(b.ch);
    }
    return NULL;
}

TEST(bounded_back_pressure)
{
    run_main_checked(2, main_backpressure, NULL);
}

/* ---- FIFO with one producer ---- */

struct fifo {
    corio_chan *ch;
    long n;
};

static void *fifo_producer(void *arg)
{
    struct fifo *f = arg;
    for (long i = 0; i < f->n; i++)
        CHECK_OK(corio_chan_send(f->ch, &i));
    return NULL;
}

static void *main_fifo(void *arg)
{
    size_t caps[] = {1024, 7, 1};
    for (size_t k = 0; k < 3; k++) {
        /* Small capacities hand over between the loops at nearly every
         * message: fewer of those. */
        struct fifo f = {.n = test_scaled(caps[k] > 64 ? 300000 : 50000)};
        CHECK_OK(corio_chan_new(&f.ch, sizeof(long), caps[k]));
        corio_task *t;
        CHECK_OK(corio_spawn_on(&t, (unsigned)(corio_loop_index() + 1) % 2, fifo_producer, &f));
        for (long i = 0; i < f.n; i++) {
            long v = -1;
            CHECK_OK(corio_chan_recv(f.ch, &v));
            if (v != i)
                FAIL_("capacity %zu: message %ld received as number %ld", caps[k], v, i);
        }
        CHECK_OK(corio_join(t, NULL));
        corio_chan_free(f.ch);
    }
    return NULL;
}

TEST(fifo_one_producer)
{
    run_main_checked(2, main_fifo, NULL);
}

/* ---- many to many, exactly once ---- */

#define PRODUCERS 4
#define CONSUMERS 4

struct mpmc {
    corio_chan *ch;
    long per_producer;
    _Atomic uint64_t *marks;     /* one bit per message */
    _Atomic long received, duplicates, send_cancels, recv_cancels;
    _Atomic int stop_cancelling, producers_finished;
    corio_task *producers[PRODUCERS], *consumers[CONSUMERS];
};

static void *mpmc_producer(void *arg)
{
    struct mpmc *m = *(struct mpmc **)arg;
    uint64_t p = (uint64_t)((intptr_t *)arg)[1];
    for (long i = 0; i < m->per_producer; i++) {
        uint64_t v = p << 32 | (uint64_t)i;
        for (;;) {
            int rc = corio_chan_send(m->ch, &v);
            if (rc == 0)
                break;
            /* A cancelled send enqueued nothing: send the same again. */
            CHECK_ERR(rc, CORIO_ECANCELED);
            atomic_fetch_add(&m->send_cancels, 1);
        }
    }
    atomic_fetch_add(&m->producers_finished, 1);
    return NULL;
}

static void *mpmc_consumer(void *arg)
{
    struct mpmc *m = arg;
    long last[PRODUCERS];
    for (int p = 0; p < PRODUCERS; p++)
        last[p] = -1;
    long mine = 0;
    for (;;) {
        uint64_t v;
        int rc = corio_chan_recv(m->ch, &v);
        if (rc == CORIO_EPIPE)
            break;
        if (rc == CORIO_ECANCELED) {
            atomic_fetch_add(&m->recv_cancels, 1);
            continue;
        }
        CHECK_OK(rc);
        uint64_t p = v >> 32, i = v & 0xffffffffu;
        CHECK_LT(p, PRODUCERS);
        CHECK_LT(i, m->per_producer);
        /* One FIFO queue: each producer's messages reach any one consumer
         * in the order they were sent. */
        if ((long)i <= last[p])
            FAIL_("consumer saw producer %llu's message %llu after %ld", (unsigned long long)p,
                  (unsigned long long)i, last[p]);
        last[p] = (long)i;
        uint64_t bit = p * (uint64_t)m->per_producer + i;
        uint64_t old = atomic_fetch_or(&m->marks[bit / 64], 1ull << (bit % 64));
        if (old & (1ull << (bit % 64)))
            atomic_fetch_add(&m->duplicates, 1);
        mine++;
    }
    atomic_fetch_add(&m->received, mine);
    return PTR_OF(mine);
}

static void *mpmc_canceller(void *arg)
{
    struct mpmc *m = arg;
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    long n = 0;
    while (!atomic_load(&m->stop_cancelling)) {
        uint64_t r = test_rand(&seed);
        if (r & 1)
            CHECK_OK(corio_cancel(m->consumers[(r >> 1) % CONSUMERS]));
        else
            CHECK_OK(corio_cancel(m->producers[(r >> 1) % PRODUCERS]));
        n++;
        if (n % 4 == 0)
            CHECK_OK(corio_sleep(20 * CORIO_USEC));
        else
            CHECK_OK(corio_yield());
    }
    return PTR_OF(n);
}

static void *main_mpmc(void *arg)
{
    bool cancelling = INT_OF(arg);
    struct mpmc m = {.per_producer = test_scaled(cancelling ? 1000000 : 2000000) / PRODUCERS};
    long total = m.per_producer * PRODUCERS;
    m.marks = calloc((size_t)(total + 63) / 64, sizeof *m.marks);
    CHECK(m.marks);
    CHECK_OK(corio_chan_new(&m.ch, sizeof(uint64_t), 64));
    void *pargs[PRODUCERS][2];
    /* Consumers first (so the canceller has them), two per loop. */
    for (int c = 0; c < CONSUMERS; c++) {
        corio_spawn_opts o = test_on_loop(c % 2, c >= 2);
        CHECK_OK(corio_spawn_ex(&m.consumers[c], mpmc_consumer, &m, &o));
    }
    for (int p = 0; p < PRODUCERS; p++) {
        pargs[p][0] = &m;
        pargs[p][1] = PTR_OF(p);
        corio_spawn_opts o = test_on_loop(p % 2, p >= 2);
        CHECK_OK(corio_spawn_ex(&m.producers[p], mpmc_producer, pargs[p], &o));
    }
    corio_task *canceller = NULL;
    if (cancelling)
        CHECK_OK(corio_spawn_on(&canceller, 0, mpmc_canceller, &m));
    long cancels = 0;
    if (cancelling) {
        /* The canceller stops before the producers' handles are released
         * (a cancel of a released handle is CORIO_EINVAL), so their end is
         * awaited without a join first. */
        while (atomic_load(&m.producers_finished) < PRODUCERS)
            CHECK_OK(corio_sleep(CORIO_MSEC));
        atomic_store(&m.stop_cancelling, 1);
        void *r;
        CHECK_OK(corio_join(canceller, &r));
        cancels = (long)INT_OF(r);
    }
    CHECK_OK(corio_gather(m.producers, PRODUCERS, NULL));
    CHECK_OK(corio_chan_close(m.ch));
    void *per[CONSUMERS];
    CHECK_OK(corio_gather(m.consumers, CONSUMERS, per));
    CHECK_EQ(atomic_load(&m.duplicates), 0);
    CHECK_EQ(atomic_load(&m.received), total);
    long missing = 0;
    for (long b = 0; b < total; b++)
        missing += !(atomic_load(&m.marks[b / 64]) & (1ull << (b % 64)));
    CHECK_EQ(missing, 0);
    fprintf(stderr, "   %ld messages; per consumer %ld %ld %ld %ld", total, (long)INT_OF(per[0]),
            (long)INT_OF(per[1]), (long)INT_OF(per[2]), (long)INT_OF(per[3]));
    if (cancelling) {
        fprintf(stderr, "; %ld cancels: %ld sends and %ld receives cancelled", cancels,
                atomic_load(&m.send_cancels), atomic_load(&m.recv_cancels));
        /* The cancellations did hit waits (else this tested nothing). */
        CHECK_GT(atomic_load(&m.send_cancels) + atomic_load(&m.recv_cancels), 0);
    }
    fprintf(stderr, "\n");
    CHECK_EQ(corio_chan_len(m.ch), 0);
    corio_chan_free(m.ch);
    free(m.marks);
    return NULL;
}

TEST(many_to_many_exactly_once)
{
    run_main_checked(2, main_mpmc, PTR_OF(0));
}

TEST(many_to_many_while_cancelled)
{
    run_main_checked(2, main_mpmc, PTR_OF(1));
}

/* ---- unbounded ---- */

static void *main_unbounded(void *arg)
{
    corio_chan *ch;
    CHECK_OK(corio_chan_new(&ch, sizeof(long), CORIO_CHAN_UNBOUNDED));
    long n = test_scaled(300000);
    /* No receiver at all, and a deadline that allows no waiting: every
     * send goes through at once while the channel grows. */
    for (long i = 0; i < n; i++)
        CHECK_OK(corio_chan_send_until(ch, &i, corio_now()));
    for (long i = 0; i < 1000; i++)
        CHECK_OK(corio_chan_try_send(ch, &i));
    CHECK_EQ(corio_chan_len(ch), n + 1000);
    /* Growth mid-ring: take some, add more, in order throughout. */
    long v;
    for (long i = 0; i < n / 2; i++) {
        CHECK_OK(corio_chan_try_recv(ch, &v));
        CHECK_EQ(v, i);
    }
    for (long i = 0; i < n; i++) {
        long w = -i;
        CHECK_OK(corio_chan_send(ch, &w));
    }
    for (long i = n / 2; i < n; i++) {
        CHECK_OK(corio_chan_recv(ch, &v));
        CHECK_EQ(v, i);
    }
    for (long i = 0; i < 1000; i++) {
        CHECK_OK(corio_chan_recv(ch, &v));
        CHECK_EQ(v, i);
    }
    for (long i = 0; i < n; i++) {
        CHECK_OK(corio_chan_recv(ch, &v));
        CHECK_EQ(v, -i);
    }
    CHECK_ERR(corio_chan_try_recv(ch, &v), CORIO_EAGAIN);
    corio_chan_free(ch);
    return NULL;
}

TEST(unbounded_never_blocks)
{
    run_main_checked(2, main_unbounded, NULL);
}

/* ---- close ---- */

struct closing {
    corio_chan *ch;
    _Atomic int blocked;
    _Atomic int woke_epipe;
};

static void *blocked_receiver(void *arg)
{
    struct closing *c = arg;
    int v;
    atomic_fetch_add(&c->blocked, 1);
    int rc = corio_chan_recv_until(c->ch, &v, corio_deadline_in(10 * CORIO_SEC));
    CHECK_ERR(rc, CORIO_EPIPE);
    atomic_fetch_add(&c->woke_epipe, 1);
    return NULL;
}

static void *blocked_sender(void *arg)
{
    struct closing *c = arg;
    int v = 99;
    atomic_fetch_add(&c->blocked, 1);
    int rc = corio_chan_send_until(c->ch, &v, corio_deadline_in(10 * CORIO_SEC));
    CHECK_ERR(rc, CORIO_EPIPE);
    atomic_fetch_add(&c->woke_epipe, 1);
    return NULL;
}

static void *main_close(void *arg)
{
    int v;
    /* Remaining elements are still received, then EPIPE. */
    corio_chan *ch;
    CHECK_OK(corio_chan_new(&ch, sizeof(int), 8));
    for (int i = 0; i < 3; i++)
        CHECK_OK(corio_chan_send(ch, &i));
    CHECK_OK(corio_chan_close(ch));
    CHECK_OK(corio_chan_close(ch)); /* idempotent */
    v = 7;
    CHECK_ERR(corio_chan_send(ch, &v), CORIO_EPIPE);
    CHECK_ERR(corio_chan_try_send(ch, &v), CORIO_EPIPE);
    CHECK_ERR(corio_chan_send_until(ch, &v, corio_deadline_in(CORIO_SEC)), CORIO_EPIPE);
    CHECK_EQ(corio_chan_len(ch), 3);
    for (int i = 0; i < 3; i++) {
        CHECK_OK(corio_chan_recv(ch, &v));
        CHECK_EQ(v, i);
    }
    CHECK_ERR(corio_chan_recv(ch, &v), CORIO_EPIPE);
    CHECK_ERR(corio_chan_try_recv(ch, &v), CORIO_EPIPE);
    CHECK_ERR(corio_chan_recv_until(ch, &v, corio_now() - CORIO_SEC), CORIO_EPIPE);
    corio_chan_free(ch);

    /* Waiters blocked in recv, on both loops, woken by close. */
    for (int round = 0; round < 2; round++) {
        struct closing c = {0};
        CHECK_OK(corio_chan_new(&c.ch, sizeof(int), round ? CORIO_CHAN_UNBOUNDED : 2));
        corio_task *t[6];
        for (int i = 0; i < 6; i++) {
            corio_spawn_opts o = test_on_loop(i % 2, i >= 4);
            CHECK_OK(corio_spawn_ex(&t[i], blocked_receiver, &c, &o));
        }
        while (atomic_load(&c.blocked) < 6)
            CHECK_OK(corio_sleep(CORIO_MSEC));
        CHECK_OK(corio_sleep(10 * CORIO_MSEC));
        CHECK_EQ(atomic_load(&c.woke_epipe), 0);
        corio_time_t t0 = corio_now();
        CHECK_OK(corio_chan_close(c.ch));
        CHECK_OK(corio_gather(t, 6, NULL));
        CHECK_LT(corio_now() - t0, 2 * CORIO_SEC * TEST_SLOW);
        CHECK_EQ(atomic_load(&c.woke_epipe), 6);
        corio_chan_free(c.ch);
    }

    /* Waiters blocked in send on a full channel, woken by close; what was
     * in the channel stays receivable. */
    struct closing c = {0};
    CHECK_OK(corio_chan_new(&c.ch, sizeof(int), 1));
    v = 1;
    CHECK_OK(corio_chan_send(c.ch, &v));
    corio_task *t[6];
    for (int i = 0; i < 6; i++) {
        corio_spawn_opts o = test_on_loop(i % 2, i >= 4);
        CHECK_OK(corio_spawn_ex(&t[i], blocked_sender, &c, &o));
    }
    while (atomic_load(&c.blocked) < 6)
        CHECK_OK(corio_sleep(CORIO_MSEC));
    CHECK_OK(corio_sleep(10 * CORIO_MSEC));
    CHECK_EQ(atomic_load(&c.woke_epipe), 0);
    CHECK_OK(corio_chan_close(c.ch));
    CHECK_OK(corio_gather(t, 6, NULL));
    CHECK_EQ(atomic_load(&c.woke_epipe), 6);
    CHECK_EQ(corio_chan_len(c.ch), 1);
    CHECK_OK(corio_chan_recv(c.ch, &v));
    CHECK_EQ(v, 1);
    CHECK_ERR(corio_chan_recv(c.ch, &v), CORIO_EPIPE);
    corio_chan_free(c.ch);
    return NULL;
}

TEST(close)
{
    run_main_checked(2, main_close, NULL);
}

/* ---- try_send / try_recv ---- */

static void *try_on_pool(void *arg)
{
    corio_chan *ch = arg;
    int v = 31;
    if (corio_chan_try_send(ch, &v) != 0)
        return PTR_OF(1);
    if (corio_chan_try_recv(ch, &v) != 0 || v != 31)
        return PTR_OF(2);
    if (corio_chan_try_recv(ch, &v) != CORIO_EAGAIN)
        return PTR_OF(3);
    return PTR_OF(0);
}

static void *main_try(void *arg)
{
    corio_chan *ch = arg;
    int v;
    CHECK_ERR(corio_chan_try_recv(ch, &v), CORIO_EAGAIN);
    for (int i = 0; i < 3; i++)
        CHECK_OK(corio_chan_try_send(ch, &i));
    v = 3;
    CHECK_ERR(corio_chan_try_send(ch, &v), CORIO_EAGAIN);
    CHECK_EQ(corio_chan_len(ch), 3);
    CHECK_OK(corio_chan_try_recv(ch, &v));
    CHECK_EQ(v, 0);
    CHECK_OK(corio_chan_try_send(ch, &v));
    CHECK_ERR(corio_chan_try_send(ch, &v), CORIO_EAGAIN);
    /* try_recv with NULL discards the element. */
    CHECK_OK(corio_chan_try_recv(ch, NULL));
    CHECK_OK(corio_chan_try_recv(ch, &v));
    CHECK_EQ(v, 2);
    CHECK_OK(corio_chan_try_recv(ch, &v));
    CHECK_EQ(v, 0);
    CHECK_ERR(corio_chan_try_recv(ch, &v), CORIO_EAGAIN);
    /* From a blocking-pool thread (not a task): allowed. */
    void *r = PTR_OF(-1);
    CHECK_OK(corio_run_blocking(try_on_pool, ch, &r));
    CHECK_EQ(INT_OF(r), 0);
    return NULL;
}

TEST(try_send_try_recv)
{
    corio_chan *ch;
    CHECK_OK(corio_chan_new(&ch, sizeof(int), 3));
    run_main_checked(2, main_try, ch);
    /* And outside any runtime; the blocking calls refuse there. */
    int v = 5;
    CHECK_OK(corio_chan_try_send(ch, &v));
    CHECK_ERR(corio_chan_send(ch, &v), CORIO_EPERM);
    CHECK_ERR(corio_chan_recv(ch, &v), CORIO_EPERM);
    CHECK_EQ(corio_chan_len(ch), 1);
    v = 0;
    CHECK_OK(corio_chan_try_recv(ch, &v));
    CHECK_EQ(v, 5);
    corio_chan_free(ch);
}

/* ---- bad arguments ---- */

TEST(bad_arguments)
{
    corio_chan *ch = (corio_chan *)&ch;
    CHECK_ERR(corio_chan_new(&ch, sizeof(int), 0), CORIO_EINVAL);
    CHECK(ch == NULL); /* no stale pointer left for a caller to free */
    ch = (corio_chan *)&ch;
    CHECK_ERR(corio_chan_new(&ch, 0, 4), CORIO_EINVAL);
    CHECK(ch == NULL);
    CHECK_ERR(corio_chan_new(&ch, 0, CORIO_CHAN_UNBOUNDED), CORIO_EINVAL);
    CHECK_ERR(corio_chan_new(NULL, sizeof(int), 4), CORIO_EINVAL);
    /* elem_size * capacity overflows. */
    int rc = corio_chan_new(&ch, SIZE_MAX / 2, 4);
    CHECK(rc == CORIO_EINVAL || rc == CORIO_ENOMEM);
    int v = 0;
    CHECK_ERR(corio_chan_try_send(NULL, &v), CORIO_EINVAL);
    CHECK_ERR(corio_chan_try_recv(NULL, &v), CORIO_EINVAL);
    CHECK_ERR(corio_chan_close(NULL), CORIO_EINVAL);
    CHECK_EQ(corio_chan_len(NULL), 0);
    corio_chan_free(NULL);
    CHECK_OK(corio_chan_new(&ch, sizeof(int), 1));
    CHECK_ERR(corio_chan_try_send(ch, NULL), CORIO_EINVAL);
    corio_chan_free(ch);
}

/* ---- light tasks ---- */

struct big_msg {
    uint64_t id;
    unsigned char payload[240];
    uint64_t check;
};

struct light_run {
    corio_chan *ch;
    long per_sender;
    _Atomic uint64_t sum, count;
};

static uint64_t msg_check(const struct big_msg *m)
{
    uint64_t h = m->id * 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < sizeof m->payload; i++)
        h = (h ^ m->payload[i]) * 0x100000001b3ull;
    return h;
}

static void *light_sender(void *arg)
{
    struct light_run *lr = *(struct light_run **)arg;
    uint64_t base = (uint64_t)((intptr_t *)arg)[1] * 1000000;
    for (long i = 0; i < lr->per_sender; i++) {
        /* The element lives on this light task's stack, which moves away
         * whenever the task waits. */
        struct big_msg m;
        m.id = base + (uint64_t)i;
        for (size_t k = 0; k < sizeof m.payload; k++)
            m.payload[k] = (unsigned char)(m.id + k);
        m.check = msg_check(&m);
        CHECK_OK(corio_chan_send(lr->ch, &m));
    }
    return NULL;
}

static void *light_receiver(void *arg)
{
    struct light_run *lr = arg;
    for (;;) {
        struct big_msg m;
        int rc = corio_chan_recv(lr->ch, &m);
        if (rc == CORIO_EPIPE)
            return NULL;
        CHECK_OK(rc);
        CHECK_EQ(m.check, msg_check(&m));
        atomic_fetch_add(&lr->sum, m.id);
        atomic_fetch_add(&lr->count, 1);
    }
}

static void *main_light(void *arg)
{
    enum { SENDERS = 64, RECEIVERS = 16 };
    struct light_run lr = {.per_sender = test_scaled(2000)};
    CHECK_OK(corio_chan_new(&lr.ch, sizeof(struct big_msg), 3));
    corio_task *s[SENDERS], *r[RECEIVERS];
    void *args[SENDERS][2];
    for (int i = 0; i < RECEIVERS; i++) {
        corio_spawn_opts o = test_on_loop(i % 2, true);
        CHECK_OK(corio_spawn_ex(&r[i], light_receiver, &lr, &o));
    }
    for (int i = 0; i < SENDERS; i++) {
        args[i][0] = &lr;
        args[i][1] = PTR_OF(i);
        corio_spawn_opts o = test_on_loop(-1, true);
        CHECK_OK(corio_spawn_ex(&s[i], light_sender, args[i], &o));
    }
    CHECK_OK(corio_gather(s, SENDERS, NULL));
    CHECK_OK(corio_chan_close(lr.ch));
    CHECK_OK(corio_gather(r, RECEIVERS, NULL));
    uint64_t want_sum = 0;
    for (uint64_t i = 0; i < SENDERS; i++)
        for (uint64_t k = 0; k < (uint64_t)lr.per_sender; k++)
            want_sum += i * 1000000 + k;
    CHECK_EQ(atomic_load(&lr.count), SENDERS * lr.per_sender);
    CHECK_EQ(atomic_load(&lr.sum), want_sum);
    corio_chan_free(lr.ch);
    return NULL;
}

TEST(light_tasks)
{
    run_main_checked(2, main_light, NULL);
}

/* ---- waiters are served in the order they came ----
 *
 * corio.h: waits are FIFO. Six receivers queue on an empty channel (six
 * senders on a full one) in a known order, alternating loops; main then
 * sends (receives) one element at a time, and the longest waiter gets it. */
struct fifo_chan {
    corio_chan *chan;
    _Atomic int queued;
    int value;
};

/* Nothing between `queued` and the wait can switch tasks
 * (wait_until_waiting counts on it). */
static void *fifo_recv(void *arg)
{
    struct fifo_chan *f = arg;
    atomic_fetch_add(&f->queued, 1);
    int v = -1;
    CHECK_OK(corio_chan_recv_until(f->chan, &v, corio_deadline_in(10 * CORIO_SEC)));
    return PTR_OF(v);
}

static void *fifo_send(void *arg)
{
    struct fifo_chan *f = arg;
    int v = f->value;
    atomic_fetch_add(&f->queued, 1);
    CHECK_OK(corio_chan_send_until(f->chan, &v, corio_deadline_in(10 * CORIO_SEC)));
    return NULL;
}

/* Returns once *flag is set, polling from a task on `loop`: the loop of
 * the task that sets it just before a blocking call, with nothing between
 * the two that could switch tasks. That task and this one share the
 * loop's thread, so when this one sees the flag, the other has switched
 * out since: it is in its wait. (A fixed sleep assumed as much, and under
 * load a waiter queued after the next one; 10 s, then the test fails.) */
static void *sees_flag(void *arg)
{
    _Atomic int *flag = arg;
    corio_time_t give_up = corio_deadline_in(10 * CORIO_SEC);
    while (!atomic_load(flag))
        if (corio_now() > give_up || corio_sleep(CORIO_MSEC) != 0)
            return PTR_OF(-1);
    return NULL;
}

static void wait_until_waiting(unsigned loop, _Atomic int *flag, const char *what)
{
    corio_task *t;
    void *r;
    CHECK_OK(corio_spawn_on(&t, loop, sees_flag, flag));
    CHECK_OK(corio_join(t, &r));
    if (r != NULL)
        FAIL_("%s: not in its wait after 10 s", what);
}

static void *main_chan_fifo(void *arg)
{
    for (int senders = 0; senders < 2; senders++) {
        corio_chan *c;
        CHECK_OK(corio_chan_new(&c, sizeof(int), 1));
        int filler = 100;
        if (senders)
            CHECK_OK(corio_chan_try_send(c, &filler));
        struct fifo_chan f[6];
        corio_task *t[6];
        for (int i = 0; i < 6; i++) {
            f[i] = (struct fifo_chan){.chan = c, .value = i};
            corio_spawn_opts o = test_on_loop(i % 2, false);
            CHECK_OK(corio_spawn_ex(&t[i], senders ? fifo_send : fifo_recv, &f[i], &o));
            /* In its wait before the next one is spawned. */
            wait_until_waiting((unsigned)(i % 2), &f[i].queued, senders ? "sender" : "receiver");
        }
        for (int i = 0; i < 6; i++) {
            void *r = NULL;
            if (senders) {
                int got = -1;
                CHECK_OK(corio_chan_recv_until(c, &got, corio_deadline_in(10 * CORIO_SEC)));
                CHECK_EQ(got, i == 0 ? filler : i - 1);
                CHECK_OK(corio_join(t[i], NULL)); /* its element is in, or taken */
            } else {
                CHECK_OK(corio_chan_try_send(c, &i));
                CHECK_OK(corio_join(t[i], &r));
                CHECK_EQ(INT_OF(r), i);
            }
        }
        if (senders) {
            int last = -1;
            CHECK_OK(corio_chan_try_recv(c, &last));
            CHECK_EQ(last, 5);
        }
        corio_chan_free(c);
    }
    return NULL;
}

TEST(waiters_served_in_order)
{
    run_main_checked(2, main_chan_fifo, NULL);
}

/* ---- elements sent back to back wake as many receivers ----
 *
 * K receivers wait on an empty channel (K senders on a full one), on both
 * loops; main then sends (receives) K elements in a row without yielding.
 * Each element must wake its own waiter: a send that woke a receiver only
 * when the channel went from empty to non-empty would leave all but one
 * of them asleep with elements in the channel. */
/* A waiter's deadline: only a lost wake-up reaches it, so it stretches
 * for slow lanes, where main's loop may take seconds to get from the
 * first wait to the last element (Valgrind runs one thread at a time). */
#define BURST_PATIENCE (2 * CORIO_SEC * TEST_SLOW)

struct burst_waiter {
    corio_chan *chan;
    _Atomic int *queued;
    int value, rc;
};

static void *burst_recv(void *arg)
{
    struct burst_waiter *w = arg;
    atomic_fetch_add(w->queued, 1);
    w->rc = corio_chan_recv_until(w->chan, &w->value, corio_deadline_in(BURST_PATIENCE));
    return NULL;
}

static void *burst_send(void *arg)
{
    struct burst_waiter *w = arg;
    atomic_fetch_add(w->queued, 1);
    w->rc = corio_chan_send_until(w->chan, &w->value, corio_deadline_in(BURST_PATIENCE));
    return NULL;
}

static void *main_chan_burst(void *arg)
{
    enum { K_MAX = 6 };
    for (int round = 0; round < 8; round++) {
        bool senders = round % 2;
        size_t k = 2 + (size_t)round / 2; /* 2..5 waiters */
        corio_chan *c;
        CHECK_OK(corio_chan_new(&c, sizeof(int), k));
        for (int i = 0; senders && i < (int)k; i++)
            CHECK_OK(corio_chan_try_send(c, &i)); /* full: senders wait */
        _Atomic int queued = 0;
        struct burst_waiter w[K_MAX];
        corio_task *t[K_MAX];
        for (size_t i = 0; i < k; i++) {
            w[i] = (struct burst_waiter){.chan = c, .queued = &queued, .value = 100 + (int)i,
                                         .rc = 1};
            corio_spawn_opts o = test_on_loop((int)(i % 2), false);
            CHECK_OK(corio_spawn_ex(&t[i], senders ? burst_send : burst_recv, &w[i], &o));
        }
        while (atomic_load(&queued) < (int)k)
            CHECK_OK(corio_sleep(CORIO_MSEC));
        CHECK_OK(corio_sleep(5 * CORIO_MSEC)); /* all in their waits now */
        int sum = 0;
        for (int i = 0; i < (int)k; i++) {
            int v = 1000 + i;
            if (senders) {
                CHECK_OK(corio_chan_try_recv(c, &v)); /* frees a slot */
                sum += v;
            } else {
                CHECK_OK(corio_chan_try_send(c, &v)); /* one element more */
            }
        }
        CHECK_OK(corio_gather(t, k, NULL));
        int waiters_sum = 0;
        for (size_t i = 0; i < k; i++) {
            CHECK_OK(w[i].rc);
            waiters_sum += w[i].value;
        }
        if (senders) {
            CHECK_EQ(sum, (int)(k * (k - 1) / 2)); /* the elements put in first */
            CHECK_EQ(corio_chan_len(c), k);         /* refilled by every sender */
        } else {
            CHECK_EQ(waiters_sum, (int)(1000 * k + k * (k - 1) / 2)); /* each got one */
            CHECK_EQ(corio_chan_len(c), 0);
        }
        corio_chan_free(c);
    }
    return NULL;
}

TEST(burst_wakes_one_waiter_per_element)
{
    run_main_checked(2, main_chan_burst, NULL);
}

/* ---- a woken waiter cancelled before it runs passes the wake-up on ----
 *
 * A and B wait on the same side of a channel, A first. The other side
 * wakes A (for an element, or a free slot: the longest waiter, as
 * waiters_served_in_order checks), and A is cancelled before it runs
 * (same loop: main does both without yielding). A fails with
 * CORIO_ECANCELED and takes nothing; B must get what A was woken for,
 * not wait for the next operation.
 */
struct pass_on {
    corio_chan *chan;
    int rc, value;
};

static void *pass_on_recv(void *arg)
{
    struct pass_on *p = arg;
    p->rc = corio_chan_recv_until(p->chan, &p->value, corio_deadline_in(10 * CORIO_SEC));
    return NULL;
}

static void *pass_on_send(void *arg)
{
    struct pass_on *p = arg;
    p->rc = corio_chan_send_until(p->chan, &p->value, corio_deadline_in(10 * CORIO_SEC));
    return NULL;
}

static void *main_pass_on(void *arg)
{
    unsigned here = (unsigned)corio_loop_index();
    for (int round = 0; round < 50; round++) {
        bool receivers = round % 2 == 0;
        corio_chan *c;
        CHECK_OK(corio_chan_new(&c, sizeof(int), 1));
        int one = 1;
        if (!receivers)
            CHECK_OK(corio_chan_try_send(c, &one)); /* full: senders wait */
        struct pass_on a = {.chan = c, .rc = 1, .value = 10}, b = {.chan = c, .rc = 1, .value = 20};
        corio_fn fn = receivers ? pass_on_recv : pass_on_send;
        corio_task *ta, *tb;
        CHECK_OK(corio_spawn_on(&ta, here, fn, &a));
        CHECK_OK(corio_sleep(CORIO_MSEC)); /* A queues first */
        CHECK_OK(corio_spawn_on(&tb, here, fn, &b));
        CHECK_OK(corio_sleep(CORIO_MSEC));
        int got = 0;
        if (receivers)
            CHECK_OK(corio_chan_try_send(c, &one)); /* wakes A */
        else
            CHECK_OK(corio_chan_try_recv(c, &got)); /* frees a slot: wakes A */
        CHECK_OK(corio_cancel(ta));
        CHECK_OK(corio_join(ta, NULL));
        CHECK_OK(corio_join(tb, NULL));
        CHECK_ERR(a.rc, CORIO_ECANCELED);
        CHECK_OK(b.rc);
        if (receivers) {
            CHECK_EQ(b.value, 1);
            CHECK_EQ(corio_chan_len(c), 0);
        } else {
            CHECK_EQ(corio_chan_try_recv(c, &got), 0);
            CHECK_EQ(got, 20); /* B's element, not A's */
        }
        corio_chan_free(c);
    }
    return NULL;
}

TEST(cancelled_waiter_passes_wakeup_on)
{
    run_main_checked(1, main_pass_on, NULL);
}

/* ---- a woken waiter that finds its element taken keeps its place ----
 *
 * corio.h: waits are FIFO. A and B wait to receive, A first. A send
 * wakes A, but before A runs another task takes the element (a
 * try_recv: nothing forbids it). A finds the channel empty and waits
 * again; it has waited longest, so the next element is still A's, not
 * B's. (A woken waiter that lost the race used to queue again at the
 * tail, behind every task that came after it.) The same for senders on
 * a full channel. One loop: every step's order is fixed. */
struct keep_place {
    corio_chan *chan;
    _Atomic int queued;
    int value, rc;
};

static void *keep_place_recv(void *arg)
{
    struct keep_place *k = arg;
    atomic_fetch_add(&k->queued, 1);
    k->rc = corio_chan_recv_until(k->chan, &k->value, corio_deadline_in(10 * CORIO_SEC));
    return NULL;
}

static void *keep_place_send(void *arg)
{
    struct keep_place *k = arg;
    atomic_fetch_add(&k->queued, 1);
    k->rc = corio_chan_send_until(k->chan, &k->value, corio_deadline_in(10 * CORIO_SEC));
    return NULL;
}

static void *main_keep_place(void *arg)
{
    for (int senders = 0; senders < 2; senders++) {
        corio_chan *c;
        CHECK_OK(corio_chan_new(&c, sizeof(int), 1));
        int filler = 100, got = -1;
        if (senders)
            CHECK_OK(corio_chan_try_send(c, &filler)); /* full: senders wait */
        struct keep_place a = {.chan = c, .value = 10, .rc = 1};
        struct keep_place b = {.chan = c, .value = 20, .rc = 1};
        corio_fn fn = senders ? keep_place_send : keep_place_recv;
        corio_task *ta, *tb;
        CHECK_OK(corio_spawn_on(&ta, 0, fn, &a));
        wait_until_waiting(0, &a.queued, "A");
        CHECK_OK(corio_spawn_on(&tb, 0, fn, &b));
        wait_until_waiting(0, &b.queued, "B");
        int one = 1;
        if (senders) {
            CHECK_OK(corio_chan_try_recv(c, &got)); /* a free slot: wakes A */
            CHECK_EQ(got, filler);
            CHECK_OK(corio_chan_try_send(c, &filler)); /* ... and it is gone */
        } else {
            CHECK_OK(corio_chan_try_send(c, &one)); /* an element: wakes A */
            CHECK_OK(corio_chan_try_recv(c, &got)); /* ... and it is gone */
            CHECK_EQ(got, one);
        }
        /* A runs, finds nothing and waits again (one loop: it has done so
         * when this sleep ends). */
        CHECK_OK(corio_sleep(CORIO_MSEC));
        CHECK_EQ(a.rc, 1);
        if (senders) {
            CHECK_OK(corio_chan_try_recv(c, &got)); /* a slot for A */
            CHECK_EQ(got, filler);
        } else {
            int two = 2;
            CHECK_OK(corio_chan_try_send(c, &two)); /* an element for A */
        }
        /* The one woken runs before this sleep ends (one loop). */
        CHECK_OK(corio_sleep(CORIO_MSEC));
        CHECK_EQ(b.rc, 1); /* B still waits: it came second */
        CHECK_OK(a.rc);
        CHECK_OK(corio_join(ta, NULL));
        if (senders) {
            CHECK_OK(corio_chan_try_recv(c, &got));
            CHECK_EQ(got, 10); /* A's element went in, not B's (a slot for B) */
            CHECK_OK(corio_join(tb, NULL));
            CHECK_OK(b.rc);
            CHECK_EQ(corio_chan_try_recv(c, &got), 0);
            CHECK_EQ(got, 20);
        } else {
            CHECK_EQ(a.value, 2);
            int three = 3;
            CHECK_OK(corio_chan_try_send(c, &three));
            CHECK_OK(corio_join(tb, NULL));
            CHECK_OK(b.rc);
            CHECK_EQ(b.value, 3);
        }
        corio_chan_free(c);
    }
    return NULL;
}

TEST(woken_waiter_that_lost_its_element_keeps_its_place)
{
    run_main_checked(1, main_keep_place, NULL);
}

/* ---- two woken waiters that both lost their elements keep their order ----
 *
 * A, B and C wait to receive, in that order. Two sends wake A and B; two
 * try_recvs take both elements before either runs. A retries first (one
 * loop: the ready list is FIFO) and queues again at the head, then B does:
 * B must not go ahead of A, which has waited longer. The next element is
 * A's. (Queueing each loser at the head reversed them.) One loop. */
static void *main_losers_keep_order(void *arg)
{
    (void)arg;
    corio_chan *c;
    CHECK_OK(corio_chan_new(&c, sizeof(int), 2));
    struct keep_place k[3];
    corio_task *t[3];
    for (int i = 0; i < 3; i++) {
        k[i] = (struct keep_place){.chan = c, .value = -1, .rc = 1};
        CHECK_OK(corio_spawn_on(&t[i], 0, keep_place_recv, &k[i]));
        wait_until_waiting(0, &k[i].queued, "receiver");
    }
    int v = 1, got;
    CHECK_OK(corio_chan_try_send(c, &v)); /* wakes A */
    v = 2;
    CHECK_OK(corio_chan_try_send(c, &v)); /* wakes B */
    CHECK_OK(corio_chan_try_recv(c, &got));
    CHECK_OK(corio_chan_try_recv(c, &got)); /* both gone */
    CHECK_OK(corio_sleep(CORIO_MSEC)); /* A, then B, wait again */
    for (int i = 0; i < 3; i++)
        CHECK_EQ(k[i].rc, 1);
    v = 3;
    CHECK_OK(corio_chan_try_send(c, &v));
    CHECK_OK(corio_sleep(CORIO_MSEC)); /* the woken one has it */
    CHECK_EQ(k[1].rc, 1); /* B still waits */
    CHECK_EQ(k[2].rc, 1);
    CHECK_OK(k[0].rc);
    CHECK_EQ(k[0].value, 3);
    v = 4;
    CHECK_OK(corio_chan_try_send(c, &v));
    CHECK_OK(corio_sleep(CORIO_MSEC));
    CHECK_OK(k[1].rc);
    CHECK_EQ(k[1].value, 4); /* then B, then C */
    CHECK_EQ(k[2].rc, 1);
    v = 5;
    CHECK_OK(corio_chan_try_send(c, &v));
    for (int i = 0; i < 3; i++)
        CHECK_OK(corio_join(t[i], NULL));
    CHECK_EQ(k[2].value, 5);
    corio_chan_free(c);
    return NULL;
}

TEST(woken_waiters_that_lost_their_elements_keep_their_order)
{
    run_main_checked(1, main_losers_keep_order, NULL);
}

int main(int argc, char **argv)
{
    RUN(bounded_back_pressure);
    RUN(fifo_one_producer);
    RUN(many_to_many_exactly_once);
    RUN(many_to_many_while_cancelled);
    RUN(unbounded_never_blocks);
    RUN(close);
    RUN(try_send_try_recv);
    RUN(bad_arguments);
    RUN(light_tasks);
    RUN(waiters_served_in_order);
    RUN(burst_wakes_one_waiter_per_element);
    RUN(cancelled_waiter_passes_wakeup_on);
    RUN(woken_waiter_that_lost_its_element_keeps_its_place);
    RUN(woken_waiters_that_lost_their_elements_keep_their_order);
    return test_summary();
}
