/*
 * test_cancel_waits.c: corio_cancel() at every kind of wait, from a task
 * on another loop. Each wait returns CORIO_ECANCELED, and leaves nothing
 * behind ("a blocking call that times out or is cancelled has no other
 * effect"):
 *
 *   sleep          -
 *   join           the handle stays valid: joining again works
 *   gather         no handle released: gathering again works
 *   read           no data consumed
 *   accept         no connection lost
 *   connect        -
 *   chan recv      no message taken
 *   chan send      no message enqueued
 *   sem acquire    no permit held
 *   mutex lock     not owned
 *   event wait     -
 *   waitgroup wait -
 *   run_blocking   a function not yet started never runs
 *   group wait     the children run on
 *
 * Each kind runs twice: cancelled while blocked, and cancelled before its
 * first blocking call; and as a regular and a light task. In every case the
 * cancellation is delivered once: the next blocking call works.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "test.h"

enum kind {
    K_SLEEP,
    K_JOIN,
    K_GATHER,
    K_READ,
    K_ACCEPT,
    K_CONNECT,
    K_CHAN_RECV,
    K_CHAN_SEND,
    K_SEM,
    K_MUTEX,
    K_EVENT,
    K_WAITGROUP,
    K_RUN_BLOCKING,
    K_GROUP,
    K_COUNT
};

static const char *const kind_names[K_COUNT] = {
    "sleep",     "join",        "gather",    "read",  "accept",
    "connect",   "chan recv",   "chan send", "sem",   "mutex",
    "event",     "waitgroup",   "run_blocking", "group wait",
};

enum mode { WHILE_BLOCKED, BEFORE_FIRST_CALL };

struct ctx {
    enum kind kind;
    enum mode mode;
    _Atomic int ready;        /* victim: about to block (WHILE_BLOCKED) */
    _Atomic int go;           /* main: start the call (BEFORE_FIRST_CALL) */
    _Atomic int got_cancel;   /* victim: saw ECANCELED, waits for next_step */
    corio_event *next_step;   /* main: the follow-up is ready */
    corio_event *children_go; /* children of join/gather/group may finish */
    _Atomic int children_done;

    /* The objects, set up by main. */
    int client, server;       /* a connected pair (read) */
    int listener;             /* accept */
    uint16_t listener_port;
    struct sockaddr_in full;  /* connect: a listener whose queue is full */
    corio_chan *chan;
    corio_sem *sem;
    corio_mutex *mutex;
    corio_event *event;
    corio_waitgroup *wg;
    corio_group *group;
    _Atomic int marker_ran, busy_started, busy_release;
};

/* ---- helpers ---- */

static void read_full(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        corio_time_t deadline = corio_deadline_in(5 * CORIO_SEC);
        ssize_t r = corio_read_until(fd, (char *)buf + got, n - got, deadline);
        if (r <= 0)
            FAIL_("read_full: %zu of %zu, then %s", got, n,
                  r == 0 ? "end of stream" : corio_err_name((int)r));
        got += (size_t)r;
    }
}

static struct sockaddr_in local_addr(uint16_t port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static void *child_waits(void *arg)
{
    struct ctx *c = arg;
    CHECK_OK(corio_event_wait_until(c->children_go, corio_deadline_in(20 * CORIO_SEC)));
    atomic_fetch_add(&c->children_done, 1);
    return PTR_OF(77);
}

static int group_child(void *arg)
{
    struct ctx *c = arg;
    int rc = corio_event_wait_until(c->children_go, corio_deadline_in(20 * CORIO_SEC));
    atomic_fetch_add(&c->children_done, 1);
    return rc;
}

static void *marker_fn(void *arg)
{
    struct ctx *c = arg;
    atomic_fetch_add(&c->marker_ran, 1);
    return PTR_OF(5);
}

static void *busy_fn(void *arg)
{
    struct ctx *c = arg;
    atomic_store(&c->busy_started, 1);
    while (!atomic_load(&c->busy_release))
        usleep(100);
    return NULL;
}

static void *busy_task(void *arg)
{
    CHECK_OK(corio_run_blocking(busy_fn, arg, NULL));
    return NULL;
}

static unsigned char pattern(size_t i) { return (unsigned char)(i * 13 + 1); }

/* ---- the victim ---- */

static void *victim(void *arg)
{
    struct ctx *c = arg;
    corio_task *kids[3] = {NULL, NULL, NULL};
    void *results[3] = {NULL, NULL, NULL};
    int sock = -1;

    /* Preparation that must not block. */
    switch (c->kind) {
    case K_JOIN:
        CHECK_OK(corio_spawn(&kids[0], child_waits, c));
        break;
    case K_GATHER:
        CHECK_OK(corio_spawn(&kids[0], test_ret_arg, PTR_OF(10)));
        CHECK_OK(corio_spawn(&kids[1], child_waits, c));
        CHECK_OK(corio_spawn(&kids[2], child_waits, c));
        break;
    case K_CONNECT:
        sock = corio_socket(AF_INET, SOCK_STREAM, 0);
        CHECK_GE(sock, 0);
        break;
    default:
        break;
    }

    if (c->mode == BEFORE_FIRST_CALL) {
        /* Spin without any blocking call until main has cancelled us. */
        while (!atomic_load(&c->go))
            ;
    } else {
        atomic_store(&c->ready, 1);
    }

    corio_time_t t0 = corio_now();
    int rc;
    char buf[64];
    int ival = 0;
    switch (c->kind) {
    case K_SLEEP: rc = corio_sleep(20 * CORIO_SEC); break;
    case K_JOIN: rc = corio_join(kids[0], &results[0]); break;
    case K_GATHER: rc = corio_gather(kids, 3, results); break;
    case K_READ: rc = (int)corio_read(c->server, buf, sizeof buf); break;
    case K_ACCEPT: rc = corio_accept(c->listener, NULL, NULL); break;
    case K_CONNECT: rc = corio_connect(sock, (struct sockaddr *)&c->full, sizeof c->full); break;
    case K_CHAN_RECV: rc = corio_chan_recv(c->chan, &ival); break;
    case K_CHAN_SEND:
        ival = 2;
        rc = corio_chan_send(c->chan, &ival);
        break;
    case K_SEM: rc = corio_sem_acquire(c->sem); break;
    case K_MUTEX: rc = corio_mutex_lock(c->mutex); break;
    case K_EVENT: rc = corio_event_wait(c->event); break;
    case K_WAITGROUP: rc = corio_waitgroup_wait(c->wg); break;
    case K_RUN_BLOCKING: rc = corio_run_blocking(marker_fn, c, NULL); break;
    case K_GROUP: rc = corio_group_wait(c->group); break;
    default: rc = 12345; break;
    }
    if (rc != CORIO_ECANCELED)
        FAIL_("%s (%s): returned %s, expected ECANCELED", kind_names[c->kind],
              c->mode == BEFORE_FIRST_CALL ? "cancelled before the call"
                                           : "cancelled while blocked",
              rc >= 0 ? "success" : corio_err_name(rc));
    CHECK_LT(corio_now() - t0, 10 * CORIO_SEC * TEST_SLOW);

    /* Delivered once: the next blocking call is an ordinary one. */
    CHECK_OK(corio_sleep(CORIO_USEC));
    CHECK_OK(corio_yield());

    atomic_store(&c->got_cancel, 1);
    CHECK_OK(corio_event_wait_until(c->next_step, corio_deadline_in(20 * CORIO_SEC)));

    /* The wait left nothing behind: the follow-up works as if it had
     * never happened. */
    corio_time_t dl = corio_deadline_in(5 * CORIO_SEC);
    switch (c->kind) {
    case K_JOIN:
        /* The handle is still ours. */
        CHECK_OK(corio_join_until(kids[0], &results[0], dl));
        CHECK_EQ(INT_OF(results[0]), 77);
        break;
    case K_GATHER:
        /* No handle was released, not even the finished one. */
        CHECK_OK(corio_gather_until(kids, 3, results, dl));
        CHECK_EQ(INT_OF(results[0]), 10);
        CHECK_EQ(INT_OF(results[1]), 77);
        CHECK_EQ(INT_OF(results[2]), 77);
        break;
    case K_READ: {
        /* Main wrote 1000 bytes after the cancel: all of them are here. */
        unsigned char big[1000];
        read_full(c->server, big, sizeof big);
        for (size_t i = 0; i < sizeof big; i++)
            CHECK_EQ(big[i], pattern(i));
        break;
    }
    case K_ACCEPT: {
        /* The connection main made after the cancel. */
        int fd = corio_accept_until(c->listener, NULL, NULL, dl);
        CHECK_GE(fd, 0);
        char z;
        read_full(fd, &z, 1);
        CHECK_EQ(z, 'z');
        CHECK_OK(corio_close(fd));
        break;
    }
    case K_CONNECT: {
        /* Half-connected: close it. A fresh connect elsewhere works. */
        CHECK_OK(corio_close(sock));
        sock = corio_socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = local_addr(c->listener_port);
        CHECK_OK(corio_connect_until(sock, (struct sockaddr *)&a, sizeof a, dl));
        int fd = corio_accept_until(c->listener, NULL, NULL, dl);
        CHECK_GE(fd, 0);
        CHECK_OK(corio_close(fd));
        CHECK_OK(corio_close(sock));
        break;
    }
    case K_CHAN_RECV:
        /* The message sent after the cancel comes to this receive. */
        CHECK_OK(corio_chan_recv_until(c->chan, &ival, dl));
        CHECK_EQ(ival, 4242);
        CHECK_EQ(corio_chan_len(c->chan), 0);
        break;
    case K_CHAN_SEND:
        /* Main checked nothing was enqueued and emptied it: room now. */
        ival = 3;
        CHECK_OK(corio_chan_send_until(c->chan, &ival, dl));
        break;
    case K_SEM:
        /* Main released one permit after the cancel; it was not handed to
         * the cancelled acquire, so it is there to take. */
        CHECK_OK(corio_sem_try_acquire(c->sem));
        CHECK_EQ(corio_sem_available(c->sem), 0);
        CHECK_OK(corio_sem_release(c->sem));
        break;
    case K_MUTEX:
        /* Not the owner; after main's unlock another task locked and
         * unlocked it; now we can. */
        CHECK_ERR(corio_mutex_unlock(c->mutex), CORIO_EPERM);
        CHECK_OK(corio_mutex_lock_until(c->mutex, dl));
        CHECK_OK(corio_mutex_unlock(c->mutex));
        break;
    case K_EVENT: CHECK_OK(corio_event_wait_until(c->event, dl)); break;
    case K_WAITGROUP: CHECK_OK(corio_waitgroup_wait_until(c->wg, dl)); break;
    case K_RUN_BLOCKING: {
        void *r = NULL;
        CHECK_OK(corio_run_blocking_until(marker_fn, c, &r, dl));
        CHECK_EQ(INT_OF(r), 5);
        break;
    }
    case K_GROUP: CHECK_OK(corio_group_wait_until(c->group, dl)); break;
    default: break;
    }
    return NULL;
}

/* ---- main's part ---- */

/* A backlog-1 listener nobody accepts from, its queue filled: a connect
 * to it waits (the kernel drops the SYNs). See test_io_tcp's
 * connect_timeout. Returns the listener; the fillers go in fill[]. A
 * filler's connect that times out shows the queue full only if the
 * queue says so: held up for 100 ms, this task had a connect time out
 * that the kernel had let through, and the victim's connect then
 * succeeded. */
static int full_listener(struct sockaddr_in *addr, int fill[16], int *nfill)
{
    int l = corio_listen_tcp("127.0.0.1", 0, 1, 0);
    CHECK_GE(l, 0);
    *addr = local_addr((uint16_t)corio_local_port(l));
    *nfill = 0;
    for (;;) {
        CHECK_LT(*nfill, 16);
        int fd = corio_socket(AF_INET, SOCK_STREAM, 0);
        CHECK_GE(fd, 0);
        fill[(*nfill)++] = fd;
        /* Where TCP_INFO is missing (qemu-user) a timeout is taken at its
         * word, so it must not be one a held-up thread could meet. */
        int64_t patience = 100 * CORIO_MSEC * (test_under_qemu() ? TEST_SLOW : 1);
        int rc = corio_connect_until(fd, (struct sockaddr *)addr, sizeof *addr,
                                     corio_deadline_in(patience));
        if (rc == CORIO_ETIMEDOUT && test_accept_queue_full(l))
            return l;
        if (rc != CORIO_ETIMEDOUT)
            CHECK_OK(rc);
    }
}

static void run_case(enum kind kind, enum mode mode, bool light)
{
    struct ctx c = {.kind = kind, .mode = mode, .client = -1, .server = -1, .listener = -1};
    CHECK_OK(corio_event_new(&c.next_step));
    CHECK_OK(corio_event_new(&c.children_go));
    int fill[16], nfill = 0, full_l = -1;
    corio_task *blocker = NULL;

    switch (kind) {
    case K_READ: {
        int l = corio_listen_tcp("127.0.0.1", 0, 4, 0);
        CHECK_GE(l, 0);
        c.client = corio_connect_tcp("127.0.0.1", (uint16_t)corio_local_port(l),
                                     corio_deadline_in(5 * CORIO_SEC));
        CHECK_GE(c.client, 0);
        c.server = corio_accept_until(l, NULL, NULL, corio_deadline_in(5 * CORIO_SEC));
        CHECK_GE(c.server, 0);
        CHECK_OK(corio_close(l));
        break;
    }
    case K_ACCEPT:
    case K_CONNECT:
        c.listener = corio_listen_tcp("127.0.0.1", 0, 8, 0);
        CHECK_GE(c.listener, 0);
        c.listener_port = (uint16_t)corio_local_port(c.listener);
        if (kind == K_CONNECT)
            full_l = full_listener(&c.full, fill, &nfill);
        break;
    case K_CHAN_RECV: CHECK_OK(corio_chan_new(&c.chan, sizeof(int), 4)); break;
    case K_CHAN_SEND: {
        CHECK_OK(corio_chan_new(&c.chan, sizeof(int), 1));
        int one = 1;
        CHECK_OK(corio_chan_try_send(c.chan, &one));
        break;
    }
    case K_SEM: CHECK_OK(corio_sem_new(&c.sem, 0)); break;
    case K_MUTEX:
        CHECK_OK(corio_mutex_new(&c.mutex));
        CHECK_OK(corio_mutex_lock(c.mutex));
        break;
    case K_EVENT: CHECK_OK(corio_event_new(&c.event)); break;
    case K_WAITGROUP:
        CHECK_OK(corio_waitgroup_new(&c.wg));
        CHECK_OK(corio_waitgroup_add(c.wg, 1));
        break;
    case K_RUN_BLOCKING:
        /* The only pool thread is busy: the victim's job stays queued. */
        CHECK_OK(corio_spawn(&blocker, busy_task, &c));
        while (!atomic_load(&c.busy_started))
            CHECK_OK(corio_sleep(CORIO_MSEC));
        break;
    case K_GROUP:
        CHECK_OK(corio_group_new(&c.group, 0));
        CHECK_OK(corio_group_spawn(c.group, group_child, &c));
        CHECK_OK(corio_group_spawn(c.group, group_child, &c));
        break;
    default: break;
    }

    corio_spawn_opts o = test_on_loop((corio_loop_index() + 1) % (int)corio_loop_count(), light);
    corio_task *v;
    CHECK_OK(corio_spawn_ex(&v, victim, &c, &o));
    if (mode == BEFORE_FIRST_CALL) {
        CHECK_OK(corio_cancel(v));
        atomic_store(&c.go, 1);
    } else {
        while (!atomic_load(&c.ready))
            CHECK_OK(corio_sleep(CORIO_MSEC));
        CHECK_OK(corio_sleep(5 * CORIO_MSEC)); /* let it block */
        CHECK_OK(corio_cancel(v));
    }
    corio_time_t give_up = corio_deadline_in(10 * CORIO_SEC);
    while (!atomic_load(&c.got_cancel)) {
        if (corio_now() > give_up)
            FAIL_("%s: the cancelled wait did not return", kind_names[kind]);
        CHECK_OK(corio_sleep(CORIO_MSEC));
    }

    /* The follow-up, and the checks main can make from outside. */
    switch (kind) {
    case K_JOIN:
    case K_GATHER:
        CHECK_EQ(atomic_load(&c.children_done), 0);
        CHECK_OK(corio_event_set(c.children_go));
        break;
    case K_READ: {
        unsigned char big[1000];
        for (size_t i = 0; i < sizeof big; i++)
            big[i] = pattern(i);
        CHECK_EQ(corio_write(c.client, big, sizeof big), (long long)sizeof big);
        break;
    }
    case K_ACCEPT: {
        int fd = corio_connect_tcp("127.0.0.1", c.listener_port, corio_deadline_in(5 * CORIO_SEC));
        CHECK_GE(fd, 0);
        CHECK_EQ(corio_write(fd, "z", 1), 1);
        c.client = fd;
        break;
    }
    case K_CHAN_RECV: {
        CHECK_EQ(corio_chan_len(c.chan), 0);
        int msg = 4242;
        CHECK_OK(corio_chan_send(c.chan, &msg));
        break;
    }
    case K_CHAN_SEND: {
        /* Still exactly the one message main put in. */
        CHECK_EQ(corio_chan_len(c.chan), 1);
        int got = 0;
        CHECK_OK(corio_chan_try_recv(c.chan, &got));
        CHECK_EQ(got, 1);
        CHECK_ERR(corio_chan_try_recv(c.chan, &got), CORIO_EAGAIN);
        break;
    }
    case K_SEM:
        CHECK_EQ(corio_sem_available(c.sem), 0);
        CHECK_OK(corio_sem_release(c.sem));
        CHECK_EQ(corio_sem_available(c.sem), 1);
        break;
    case K_MUTEX: {
        CHECK_OK(corio_mutex_unlock(c.mutex));
        /* Nobody owns it now: a third task gets it at once. */
        CHECK_OK(corio_mutex_try_lock(c.mutex));
        CHECK_OK(corio_mutex_unlock(c.mutex));
        break;
    }
    case K_EVENT:
        CHECK(!corio_event_is_set(c.event));
        CHECK_OK(corio_event_set(c.event));
        break;
    case K_WAITGROUP: CHECK_OK(corio_waitgroup_done(c.wg)); break;
    case K_RUN_BLOCKING:
        atomic_store(&c.busy_release, 1);
        CHECK_OK(corio_join(blocker, NULL));
        /* The pool is FIFO: had the cancelled job stayed queued, it would
         * run before this one. */
        CHECK_OK(corio_run_blocking(test_ret_arg, NULL, NULL));
        CHECK_EQ(atomic_load(&c.marker_ran), 0);
        break;
    case K_GROUP:
        /* The group's children run on. */
        CHECK_EQ(atomic_load(&c.children_done), 0);
        CHECK_OK(corio_event_set(c.children_go));
        break;
    default: break;
    }
    CHECK_OK(corio_event_set(c.next_step));
    CHECK_OK(corio_join(v, NULL));

    switch (kind) {
    case K_READ:
    case K_ACCEPT:
        if (c.client >= 0)
            CHECK_OK(corio_close(c.client));
        if (c.server >= 0)
            CHECK_OK(corio_close(c.server));
        if (c.listener >= 0)
            CHECK_OK(corio_close(c.listener));
        break;
    case K_CONNECT:
        for (int i = 0; i < nfill; i++)
            CHECK_OK(corio_close(fill[i]));
        CHECK_OK(corio_close(full_l));
        CHECK_OK(corio_close(c.listener));
        break;
    case K_CHAN_SEND: {
        int got = 0;
        CHECK_OK(corio_chan_try_recv(c.chan, &got));
        CHECK_EQ(got, 3);
        CHECK_EQ(corio_chan_len(c.chan), 0);
        corio_chan_free(c.chan);
        break;
    }
    case K_CHAN_RECV: corio_chan_free(c.chan); break;
    case K_SEM:
        CHECK_EQ(corio_sem_available(c.sem), 1);
        corio_sem_free(c.sem);
        break;
    case K_MUTEX:
        CHECK_OK(corio_mutex_try_lock(c.mutex));
        CHECK_OK(corio_mutex_unlock(c.mutex));
        corio_mutex_free(c.mutex);
        break;
    case K_EVENT: corio_event_free(c.event); break;
    case K_WAITGROUP: corio_waitgroup_free(c.wg); break;
    case K_RUN_BLOCKING: CHECK_EQ(atomic_load(&c.marker_ran), 1); break;
    case K_GROUP:
        CHECK_EQ(atomic_load(&c.children_done), 2);
        CHECK_OK(corio_group_close(c.group));
        break;
    default: break;
    }
    corio_event_free(c.next_step);
    corio_event_free(c.children_go);
}

static void *main_every_wait(void *arg)
{
    enum mode mode = (enum mode)INT_OF(arg);
    for (int light = 0; light < 2; light++)
        for (int k = 0; k < K_COUNT; k++) {
            snprintf(test_watchdog_note, sizeof test_watchdog_note, "%s, %s", kind_names[k],
                     light ? "light" : "regular");
            run_case((enum kind)k, mode, light);
        }
    return NULL;
}

static void run_every_wait(enum mode mode)
{
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = 2;
    cfg.blocking_threads = 1; /* run_blocking: one busy thread queues the rest */
    run_main_cfg(&cfg, main_every_wait, PTR_OF(mode));
}

TEST(cancel_while_blocked)
{
    run_every_wait(WHILE_BLOCKED);
}

TEST(cancel_before_first_call)
{
    run_every_wait(BEFORE_FIRST_CALL);
}

/* ---- cancel racing the thing waited for ----
 *
 * A message (a channel element, bytes on a socket) and a cancellation
 * arrive at the same moment. The receiver either gets the message, or
 * ECANCELED and then the message on its next try: never both lost and
 * never twice. And each cancellation fails exactly one receive, counted. */

struct race {
    corio_sem *ack;   /* one permit per message received */
    corio_chan *chan;
    int fd;
    long n;
    _Atomic long received, cancelled;
};

static void *race_chan_receiver(void *arg)
{
    struct race *r = arg;
    long next = 0;
    while (next < r->n) {
        long v = -1;
        int rc = corio_chan_recv_until(r->chan, &v, corio_deadline_in(10 * CORIO_SEC));
        if (rc == CORIO_ECANCELED) {
            atomic_fetch_add(&r->cancelled, 1);
            continue;
        }
        CHECK_OK(rc);
        CHECK_EQ(v, next); /* nothing lost, nothing twice, in order */
        next++;
        atomic_fetch_add(&r->received, 1);
        CHECK_OK(corio_sem_release(r->ack));
    }
    return NULL;
}

static void *race_sock_receiver(void *arg)
{
    struct race *r = arg;
    long next = 0;
    while (next < r->n) {
        unsigned char b[8];
        ssize_t n = corio_read_until(r->fd, b, 1, corio_deadline_in(10 * CORIO_SEC));
        if (n == CORIO_ECANCELED) {
            atomic_fetch_add(&r->cancelled, 1);
            continue;
        }
        CHECK_EQ(n, 1);
        CHECK_EQ(b[0], (unsigned char)next);
        next++;
        atomic_fetch_add(&r->received, 1);
        CHECK_OK(corio_sem_release(r->ack));
    }
    return NULL;
}

static void *main_cancel_races(void *arg)
{
    for (int which = 0; which < 2; which++) {
        struct race r = {.n = test_scaled(3000), .fd = -1};
        CHECK_OK(corio_sem_new(&r.ack, 0));
        int client = -1;
        if (which == 0) {
            CHECK_OK(corio_chan_new(&r.chan, sizeof(long), 1));
        } else {
            int l = corio_listen_tcp("127.0.0.1", 0, 4, 0);
            CHECK_GE(l, 0);
            client = corio_connect_tcp("127.0.0.1", (uint16_t)corio_local_port(l),
                                       corio_deadline_in(5 * CORIO_SEC));
            CHECK_GE(client, 0);
            r.fd = corio_accept_until(l, NULL, NULL, corio_deadline_in(5 * CORIO_SEC));
            CHECK_GE(r.fd, 0);
            CHECK_OK(corio_close(l));
        }
        corio_task *t;
        CHECK_OK(corio_spawn_on(&t, (unsigned)(corio_loop_index() + 1) % 2,
                                which == 0 ? race_chan_receiver : race_sock_receiver, &r));
        for (long i = 0; i < r.n; i++) {
            /* One message at a time: wait until the last one arrived. */
            if (i > 0)
                CHECK_OK(corio_sem_acquire_until(r.ack, corio_deadline_in(10 * CORIO_SEC)));
            if (which == 0) {
                CHECK_OK(corio_chan_send(r.chan, &i));
            } else {
                unsigned char b = (unsigned char)i;
                CHECK_EQ(corio_write(client, &b, 1), 1);
            }
            if (i % 2 == 0 && i + 1 < r.n) /* a later receive is to come */
                CHECK_OK(corio_cancel(t));
        }
        CHECK_OK(corio_join(t, NULL));
        CHECK_EQ(atomic_load(&r.received), r.n);
        fprintf(stderr, "   %s: %ld messages, %ld receives cancelled\n",
                which == 0 ? "channel" : "socket", r.n, atomic_load(&r.cancelled));
        /* Every cancellation failed exactly one receive: the next one
         * is sent only after the receiver got a message past it, which
         * a pending cancellation would have failed first (a read with
         * data queued too: corio.h, "Cancel"). */
        long cancelled = atomic_load(&r.cancelled);
        CHECK_EQ(cancelled, r.n / 2);
        if (which == 0) {
            CHECK_EQ(corio_chan_len(r.chan), 0);
            corio_chan_free(r.chan);
        } else {
            CHECK_OK(corio_close(client));
            CHECK_OK(corio_close(r.fd));
        }
        corio_sem_free(r.ack);
    }
    return NULL;
}

TEST(cancel_racing_delivery)
{
    run_main_checked(2, main_cancel_races, NULL);
}

/* ---- a pending cancellation fails a call that need not wait ----
 *
 * Every descriptor call, with its operation possible at once (data
 * queued, room to write, a connection pending, the fd ready), still
 * fails with a pending cancellation, and does nothing: otherwise a task
 * reading a peer that never pauses would never see its cancellation
 * (only a wait consumed one). Then the same call works.
 */
static void cancel_self(void) { CHECK_OK(corio_cancel(corio_self())); }

static void *main_cancel_without_wait(void *arg)
{
    int sv[2];
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    char big[4096], b;
    memset(big, 'x', sizeof big);
    CHECK_EQ(corio_write(sv[1], big, sizeof big), (ssize_t)sizeof big);

    /* Reads: 4096 bytes queued, one read per pending cancellation fails. */
    long got = 0;
    for (int i = 0; i < 100; i++) {
        cancel_self();
        CHECK_ERR(corio_read(sv[0], &b, 1), CORIO_ECANCELED);
        cancel_self();
        CHECK_ERR(corio_recv(sv[0], &b, 1, 0), CORIO_ECANCELED);
        cancel_self();
        CHECK_ERR(corio_wait_fd(sv[0], CORIO_READABLE, CORIO_FOREVER), CORIO_ECANCELED);
        CHECK_EQ(corio_read(sv[0], &b, 1), 1); /* nothing was consumed */
        got++;
    }
    int queued = 0;
    CHECK_EQ(ioctl(sv[0], FIONREAD, &queued), 0);
    CHECK_EQ(queued, (int)sizeof big - got);

    /* Writes: room for them, yet nothing is written. */
    cancel_self();
    CHECK_ERR(corio_write(sv[0], "y", 1), CORIO_ECANCELED);
    cancel_self();
    CHECK_ERR(corio_send(sv[0], "y", 1, 0), CORIO_ECANCELED);
    cancel_self();
    CHECK_ERR(corio_wait_fd(sv[0], CORIO_WRITABLE, CORIO_FOREVER), CORIO_ECANCELED);
    CHECK_EQ(ioctl(sv[1], FIONREAD, &queued), 0);
    CHECK_EQ(queued, 0);
    CHECK_EQ(corio_write(sv[0], "y", 1), 1);
    CHECK_EQ(corio_close(sv[0]), 0);
    CHECK_EQ(corio_close(sv[1]), 0);

    /* Accept with a connection pending: not lost, the next accept has it. */
    int l = corio_listen_tcp("127.0.0.1", 0, 4, 0);
    CHECK(l >= 0);
    struct sockaddr_in addr;
    socklen_t alen = sizeof addr;
    CHECK_EQ(getsockname(l, (struct sockaddr *)&addr, &alen), 0);
    int c = corio_socket(AF_INET, SOCK_STREAM, 0);
    CHECK(c >= 0);
    CHECK_OK(corio_connect(c, (struct sockaddr *)&addr, sizeof addr));
    cancel_self();
    CHECK_ERR(corio_accept(l, NULL, NULL), CORIO_ECANCELED);
    int a = corio_accept_until(l, NULL, NULL, corio_deadline_in(10 * CORIO_SEC));
    CHECK(a >= 0);
    int c2 = corio_socket(AF_INET, SOCK_STREAM, 0);
    CHECK(c2 >= 0);
    cancel_self();
    CHECK_ERR(corio_connect(c2, (struct sockaddr *)&addr, sizeof addr), CORIO_ECANCELED);
    CHECK_EQ(corio_close(c2), 0);
    CHECK_EQ(corio_close(a), 0);
    CHECK_EQ(corio_close(c), 0);
    CHECK_EQ(corio_close(l), 0);
    return NULL;
}

TEST(cancel_without_a_wait)
{
    run_main_checked(1, main_cancel_without_wait, NULL);
}

int main(int argc, char **argv)
{
    RUN(cancel_while_blocked);
    RUN(cancel_before_first_call);
    RUN(cancel_racing_delivery);
    RUN(cancel_without_a_wait);
    return test_summary();
}
