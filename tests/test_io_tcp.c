/*
 * test_io_tcp.c: sockets on loopback: listen, connect and echo between
 * tasks on different loops; corio_connect_tcp; refused and timed-out
 * connects; a thousand connections accepted at once; a cancelled or
 * timed-out accept that loses no connection; UDP with deadlines; the
 * resolver on the blocking pool; a write that times out or is cancelled
 * part way, and says how much went out.
 *
 * Every port is chosen by the kernel (bind to port 0, read it back with
 * corio_local_port), and every address is 127.0.0.1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "test.h"

static int listen_local(int backlog, uint16_t *port)
{
    int fd = corio_listen_tcp("127.0.0.1", 0, backlog, 0);
    CHECK_GE(fd, 0);
    int p = corio_local_port(fd);
    CHECK_GT(p, 0);
    *port = (uint16_t)p;
    return fd;
}

static struct sockaddr_in local_addr(uint16_t port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

/* Read exactly n bytes or fail the test. */
static void read_full(int fd, void *buf, size_t n, corio_time_t deadline)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = corio_read_until(fd, (char *)buf + got, n - got, deadline);
        if (r <= 0)
            FAIL_("read_full: %zu of %zu bytes, then %s", got, n,
                  r == 0 ? "end of stream" : corio_err_name((int)r));
        got += (size_t)r;
    }
}

/* ---- echo between loops ---- */

#define ECHO_CLIENTS 8

static void *echo_handler(void *arg)
{
    int fd = (int)INT_OF(arg);
    char *buf = malloc(65536);
    CHECK(buf);
    long total = 0;
    for (;;) {
        ssize_t n = corio_read_until(fd, buf, 65536, corio_deadline_in(10 * CORIO_SEC));
        if (n == 0)
            break;
        if (n < 0)
            FAIL_("echo handler read: %s", corio_err_name((int)n));
        CHECK_EQ(corio_write(fd, buf, (size_t)n), n);
        total += n;
    }
    CHECK_OK(corio_close(fd));
    free(buf);
    return PTR_OF(total);
}

struct echo_server {
    int listener;
    int n;
};

static void *echo_server(void *arg)
{
    struct echo_server *s = arg;
    corio_task *h[ECHO_CLIENTS];
    for (int i = 0; i < s->n; i++) {
        struct sockaddr_storage from;
        socklen_t len = sizeof from;
        int fd = corio_accept_until(s->listener, (struct sockaddr *)&from, &len,
                                    corio_deadline_in(10 * CORIO_SEC));
        CHECK_GE(fd, 0);
        CHECK_EQ(from.ss_family, AF_INET);
        CHECK_EQ(((struct sockaddr_in *)&from)->sin_addr.s_addr, htonl(INADDR_LOOPBACK));
        /* Handlers on the accepting loop and on the other one. */
        corio_spawn_opts o = test_on_loop(i % 2, false);
        CHECK_OK(corio_spawn_ex(&h[i], echo_handler, PTR_OF(fd), &o));
    }
    long total = 0;
    for (int i = 0; i < s->n; i++) {
        void *r;
        CHECK_OK(corio_join(h[i], &r));
        total += INT_OF(r);
    }
    return PTR_OF(total);
}

static const size_t echo_sizes[] = {1, 100, 4096, 70000, 1 << 20};
#define N_ECHO_SIZES (sizeof echo_sizes / sizeof echo_sizes[0])

static void *echo_client(void *arg)
{
    uint16_t port = (uint16_t)INT_OF(arg);
    int fd = corio_connect_tcp("127.0.0.1", port, corio_deadline_in(10 * CORIO_SEC));
    CHECK_GE(fd, 0);
    size_t max = 1 << 20;
    unsigned char *out = malloc(max), *in = malloc(max);
    CHECK(out && in);
    uint64_t seed = corio_task_id(corio_self()) | 1;
    long total = 0;
    for (size_t k = 0; k < N_ECHO_SIZES; k++) {
        size_t n = echo_sizes[k];
        for (size_t i = 0; i < n; i++)
            out[i] = (unsigned char)test_rand(&seed);
        /* A 1 MiB echo does not fit in the socket buffers: write a piece,
         * read its echo back, so neither side ever blocks the other. */
        size_t sent = 0, got = 0;
        while (got < n) {
            size_t piece = n - sent < 32768 ? n - sent : 32768;
            CHECK_EQ(corio_write(fd, out + sent, piece), (long long)piece);
            sent += piece;
            while (got < sent) {
                ssize_t r = corio_read_until(fd, in + got, sent - got,
                                             corio_deadline_in(10 * CORIO_SEC));
                CHECK_GT(r, 0);
                got += (size_t)r;
            }
        }
        CHECK(memcmp(in, out, n) == 0);
        total += (long)n;
    }
    /* Half-close: the server sees the end, closes, and we see that. */
    CHECK_OK(corio_shutdown(fd, SHUT_WR));
    char c;
    CHECK_EQ(corio_read_until(fd, &c, 1, corio_deadline_in(10 * CORIO_SEC)), 0);
    CHECK_OK(corio_close(fd));
    free(out);
    free(in);
    return PTR_OF(total);
}

static void *main_echo(void *arg)
{
    uint16_t port;
    int l = listen_local(64, &port);
    struct echo_server s = {.listener = l, .n = ECHO_CLIENTS};
    corio_spawn_opts o = test_on_loop(0, false);
    corio_task *server, *clients[ECHO_CLIENTS];
    CHECK_OK(corio_spawn_ex(&server, echo_server, &s, &o));
    for (int i = 0; i < ECHO_CLIENTS; i++) {
        o = test_on_loop(1, i % 2 == 1);
        CHECK_OK(corio_spawn_ex(&clients[i], echo_client, PTR_OF(port), &o));
    }
    void *results[ECHO_CLIENTS], *server_total;
    CHECK_OK(corio_gather(clients, ECHO_CLIENTS, results));
    CHECK_OK(corio_join(server, &server_total));
    long expect = 0;
    for (size_t k = 0; k < N_ECHO_SIZES; k++)
        expect += (long)echo_sizes[k];
    for (int i = 0; i < ECHO_CLIENTS; i++)
        CHECK_EQ(INT_OF(results[i]), expect);
    CHECK_EQ(INT_OF(server_total), expect * ECHO_CLIENTS);
    CHECK_OK(corio_close(l));
    return NULL;
}

TEST(echo_across_loops)
{
    run_main_checked(2, main_echo, NULL);
}

/* ---- corio_connect_tcp by name ---- */

static void *main_connect_by_name(void *arg)
{
    uint16_t port;
    int l = listen_local(8, &port);
    const char *hosts[] = {"127.0.0.1", "localhost"};
    for (int i = 0; i < 2; i++) {
        int c = corio_connect_tcp(hosts[i], port, corio_deadline_in(10 * CORIO_SEC));
        if (c < 0)
            FAIL_("connect_tcp(%s): %s", hosts[i], corio_err_name(c));
        int s = corio_accept_until(l, NULL, NULL, corio_deadline_in(5 * CORIO_SEC));
        CHECK_GE(s, 0);
        CHECK_EQ(corio_write(c, "ping", 4), 4);
        char buf[4];
        read_full(s, buf, 4, corio_deadline_in(5 * CORIO_SEC));
        CHECK(memcmp(buf, "ping", 4) == 0);
        CHECK_OK(corio_close(c));
        CHECK_OK(corio_close(s));
    }
    CHECK_OK(corio_close(l));
    return NULL;
}

TEST(connect_tcp_by_name)
{
    run_main_checked(2, main_connect_by_name, NULL);
}

/* ---- connection refused ---- */

static void *main_refused(void *arg)
{
    /* A socket bound but not listening holds the port, so nothing else
     * can take it, and a SYN to it is answered with RST. */
    int holder = corio_socket(AF_INET, SOCK_STREAM, 0);
    CHECK_GE(holder, 0);
    struct sockaddr_in a = local_addr(0);
    CHECK_EQ(bind(holder, (struct sockaddr *)&a, sizeof a), 0);
    int port = corio_local_port(holder);
    CHECK_GT(port, 0);
    a = local_addr((uint16_t)port);
    for (int i = 0; i < 4; i++) {
        int fd = corio_socket(AF_INET, SOCK_STREAM, 0);
        CHECK_GE(fd, 0);
        corio_time_t t0 = corio_now();
        CHECK_ERR(corio_connect_until(fd, (struct sockaddr *)&a, sizeof a,
                                      corio_deadline_in(5 * CORIO_SEC)),
                  CORIO_ECONNREFUSED);
        CHECK_LT(corio_now() - t0, 2 * CORIO_SEC * TEST_SLOW);
        CHECK_OK(corio_close(fd));
    }
    CHECK_ERR(corio_connect_tcp("127.0.0.1", (uint16_t)port, corio_deadline_in(5 * CORIO_SEC)),
              CORIO_ECONNREFUSED);
    CHECK_OK(corio_close(holder));
    return NULL;
}

TEST(connection_refused)
{
    run_main_checked(2, main_refused, NULL);
}

/* ---- connect timeout ----
 *
 * A listener with backlog 1 that never accepts: once its accept queue is
 * full the kernel drops further SYNs (net.ipv4.tcp_abort_on_overflow=0,
 * the default), so a connect to it stays in SYN_SENT until the client
 * gives up. The first connects fill the queue and succeed; keep
 * connecting with a 200 ms deadline until one times out with the queue
 * full (a connect that timed out while the queue had room was one this
 * task was held up past, not one the kernel dropped: it is one more
 * filler). On loopback that happens after a handful. */

static void *main_connect_timeout(void *arg)
{
    uint16_t port;
    int l = listen_local(1, &port);
    struct sockaddr_in a = local_addr(port);
    int fds[32];
    int n = 0, timed_out = -1;
    for (; n < 32 && timed_out < 0; n++) {
        fds[n] = corio_socket(AF_INET, SOCK_STREAM, 0);
        CHECK_GE(fds[n], 0);
        test_stopwatch sw = test_stopwatch_start();
        int rc = corio_connect_until(fds[n], (struct sockaddr *)&a, sizeof a,
                                     corio_deadline_in(200 * CORIO_MSEC));
        if (rc == CORIO_ETIMEDOUT && test_accept_queue_full(l)) {
            CHECK_ELAPSED_WITHIN(&sw, 200 * CORIO_MSEC, CORIO_MSEC, 100 * CORIO_MSEC);
            timed_out = n;
        } else if (rc != 0 && rc != CORIO_ETIMEDOUT) {
            FAIL_("connect %d: %s", n, corio_err_name(rc));
        }
    }
    if (timed_out < 0)
        FAIL_("%d connects to a full backlog-1 listener all completed", n);
    fprintf(stderr, "   connect %d timed out (%d filled the queue)\n", timed_out, timed_out);
    CHECK_LE(timed_out, 16);
    /* And a second one times out as well, with a shorter deadline. */
    int extra = corio_socket(AF_INET, SOCK_STREAM, 0);
    test_stopwatch sw = test_stopwatch_start();
    CHECK_ERR(corio_connect_until(extra, (struct sockaddr *)&a, sizeof a,
                                  corio_deadline_in(50 * CORIO_MSEC)),
              CORIO_ETIMEDOUT);
    CHECK_ELAPSED_WITHIN(&sw, 50 * CORIO_MSEC, CORIO_MSEC, 100 * CORIO_MSEC);
    CHECK_OK(corio_close(extra));
    for (int i = 0; i < n; i++)
        CHECK_OK(corio_close(fds[i]));
    CHECK_OK(corio_close(l));
    return NULL;
}

TEST(connect_timeout)
{
    run_main_checked(2, main_connect_timeout, NULL);
}

/* ---- a thousand connections at once ---- */

struct load {
    int listener;
    uint16_t port;
    long n;
    _Atomic long served, clients_ok;
};

static void *load_handler(void *arg)
{
    struct load *ld = *(struct load **)arg;
    int fd = (int)((intptr_t *)arg)[1];
    free(arg);
    char msg[8];
    read_full(fd, msg, 8, corio_deadline_in(20 * CORIO_SEC));
    CHECK(memcmp(msg, "id:", 3) == 0);
    msg[0] = 'o';
    msg[1] = 'k';
    CHECK_EQ(corio_write(fd, msg, 8), 8);
    CHECK_OK(corio_close(fd));
    atomic_fetch_add(&ld->served, 1);
    return NULL;
}

static void *load_acceptor(void *arg)
{
    struct load *ld = arg;
    for (long i = 0; i < ld->n; i++) {
        int fd = corio_accept_until(ld->listener, NULL, NULL, corio_deadline_in(20 * CORIO_SEC));
        if (fd < 0)
            FAIL_("accept %ld of %ld: %s", i, ld->n, corio_err_name(fd));
        void **hand = malloc(2 * sizeof *hand);
        CHECK(hand);
        hand[0] = ld;
        hand[1] = PTR_OF(fd);
        corio_spawn_opts o = test_on_loop((int)(i % 2), false);
        CHECK_OK(corio_spawn_ex(NULL, load_handler, hand, &o));
    }
    return NULL;
}

static void *load_client(void *arg)
{
    struct load *ld = *(struct load **)arg;
    long id = ((intptr_t *)arg)[1];
    struct sockaddr_in a = local_addr(ld->port);
    int fd = corio_socket(AF_INET, SOCK_STREAM, 0);
    CHECK_GE(fd, 0);
    int rc = corio_connect_until(fd, (struct sockaddr *)&a, sizeof a,
                                 corio_deadline_in(20 * CORIO_SEC));
    if (rc != 0)
        FAIL_("client %ld: connect: %s", id, corio_err_name(rc));
    char msg[9], want[9];
    snprintf(msg, sizeof msg, "id:%05ld", id);
    snprintf(want, sizeof want, "ok:%05ld", id);
    CHECK_EQ(corio_write(fd, msg, 8), 8);
    char reply[8];
    read_full(fd, reply, 8, corio_deadline_in(20 * CORIO_SEC));
    CHECK(memcmp(reply, want, 8) == 0);
    CHECK_EQ(corio_read_until(fd, reply, 1, corio_deadline_in(20 * CORIO_SEC)), 0);
    CHECK_OK(corio_close(fd));
    atomic_fetch_add(&ld->clients_ok, 1);
    return NULL;
}

static void *main_accept_load(void *arg)
{
    struct load *ld = arg;
    ld->listener = listen_local(0, &ld->port); /* 0: SOMAXCONN */
    corio_task *acceptor;
    corio_spawn_opts o = test_on_loop(0, false);
    CHECK_OK(corio_spawn_ex(&acceptor, load_acceptor, ld, &o));
    corio_task **clients = calloc((size_t)ld->n, sizeof *clients);
    void **args = calloc((size_t)ld->n, 2 * sizeof *args);
    CHECK(clients && args);
    for (long i = 0; i < ld->n; i++) {
        args[2 * i] = ld;
        args[2 * i + 1] = PTR_OF(i);
        o = test_on_loop((int)(i % 2), i % 3 == 0);
        CHECK_OK(corio_spawn_ex(&clients[i], load_client, &args[2 * i], &o));
    }
    CHECK_OK(corio_gather(clients, (size_t)ld->n, NULL));
    CHECK_OK(corio_join(acceptor, NULL));
    /* Handlers are detached: wait for the last ones to count. */
    corio_time_t give_up = corio_deadline_in(10 * CORIO_SEC);
    while (atomic_load(&ld->served) < ld->n && corio_now() < give_up)
        CHECK_OK(corio_sleep(CORIO_MSEC));
    CHECK_EQ(atomic_load(&ld->served), ld->n);
    CHECK_EQ(atomic_load(&ld->clients_ok), ld->n);
    CHECK_OK(corio_close(ld->listener));
    free(clients);
    free(args);
    return NULL;
}

TEST(accept_under_load)
{
    struct load ld = {.n = test_scaled(1000)};
    /* Two descriptors per connection, plus slack. */
    struct rlimit rl;
    CHECK_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < (rlim_t)(2 * ld.n + 100)) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        CHECK_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
        if (rl.rlim_cur < (rlim_t)(2 * ld.n + 100))
            ld.n = ((long)rl.rlim_cur - 100) / 2;
    }
    run_main_checked(2, main_accept_load, &ld);
}

/* ---- a cancelled accept loses no connection ---- */

struct acceptor_state {
    int listener;
    corio_event *go;
    _Atomic int phase; /* 1: about to wait, 2: cancelled, 3: accepted */
    int first_rc;
};

static void *cancellable_acceptor(void *arg)
{
    struct acceptor_state *st = arg;
    atomic_store(&st->phase, 1);
    st->first_rc = corio_accept(st->listener, NULL, NULL);
    atomic_store(&st->phase, 2);
    /* The client connects now; accept only once told to. */
    CHECK_OK(corio_event_wait_until(st->go, corio_deadline_in(10 * CORIO_SEC)));
    int fd = corio_accept_until(st->listener, NULL, NULL, corio_deadline_in(5 * CORIO_SEC));
    if (fd < 0)
        FAIL_("accept after a cancelled accept: %s", corio_err_name(fd));
    char c;
    read_full(fd, &c, 1, corio_deadline_in(5 * CORIO_SEC));
    CHECK_EQ(corio_write(fd, &c, 1), 1);
    CHECK_OK(corio_close(fd));
    atomic_store(&st->phase, 3);
    return NULL;
}

static void *main_cancelled_accept(void *arg)
{
    uint16_t port;
    int l = listen_local(16, &port);
    for (int round = 0; round < 8; round++) {
        struct acceptor_state st = {.listener = l, .first_rc = 12345};
        CHECK_OK(corio_event_new(&st.go));
        corio_spawn_opts o = test_on_loop(round % 2 ? 1 : 0, round >= 4);
        corio_task *t;
        CHECK_OK(corio_spawn_ex(&t, cancellable_acceptor, &st, &o));
        while (atomic_load(&st.phase) < 1)
            CHECK_OK(corio_sleep(CORIO_MSEC));
        CHECK_OK(corio_sleep(5 * CORIO_MSEC));
        CHECK_OK(corio_cancel(t));
        while (atomic_load(&st.phase) < 2)
            CHECK_OK(corio_sleep(CORIO_MSEC));
        CHECK_ERR(st.first_rc, CORIO_ECANCELED);
        /* The connection arrives while nobody accepts. */
        int c = corio_connect_tcp("127.0.0.1", port, corio_deadline_in(5 * CORIO_SEC));
        CHECK_GE(c, 0);
        char msg = (char)('a' + round);
        CHECK_EQ(corio_write(c, &msg, 1), 1);
        CHECK_OK(corio_event_set(st.go));
        char back;
        read_full(c, &back, 1, corio_deadline_in(5 * CORIO_SEC));
        CHECK_EQ(back, msg);
        CHECK_OK(corio_join(t, NULL));
        CHECK_EQ(atomic_load(&st.phase), 3);
        CHECK_OK(corio_close(c));
        corio_event_free(st.go);
    }
    /* A timed-out accept likewise: nothing accepted, the next one works. */
    for (int round = 0; round < 4; round++) {
        test_stopwatch sw = test_stopwatch_start();
        CHECK_ERR(corio_accept_until(l, NULL, NULL, corio_deadline_in(20 * CORIO_MSEC)),
                  CORIO_ETIMEDOUT);
        CHECK_ELAPSED_WITHIN(&sw, 20 * CORIO_MSEC, CORIO_MSEC, 100 * CORIO_MSEC);
        int c = corio_connect_tcp("127.0.0.1", port, corio_deadline_in(5 * CORIO_SEC));
        CHECK_GE(c, 0);
        /* Connected and queued: even a past deadline accepts it (the
         * accept is tried before waiting). */
        corio_time_t give_up = corio_deadline_in(5 * CORIO_SEC);
        int s;
        while ((s = corio_accept_until(l, NULL, NULL, corio_now())) == CORIO_ETIMEDOUT &&
               corio_now() < give_up)
            CHECK_OK(corio_sleep(CORIO_MSEC));
        CHECK_GE(s, 0);
        CHECK_OK(corio_close(s));
        CHECK_OK(corio_close(c));
    }
    CHECK_OK(corio_close(l));
    return NULL;
}

TEST(cancelled_accept_loses_nothing)
{
    run_main_checked(2, main_cancelled_accept, NULL);
}

/* ---- the peer sends its last bytes and closes ----
 *
 * The socket form of test_io_fd's eof_after_short_read: a reply followed
 * at once by FIN (an HTTP/1.0 server, "Connection: close"). The reader's
 * read of the reply is short; the next read must see the end. */

static void *main_peer_closes_after_data(void *arg)
{
    uint16_t port;
    int l = listen_local(8, &port);
    for (int round = 0; round < 4; round++) {
        int c = corio_connect_tcp("127.0.0.1", port, corio_deadline_in(5 * CORIO_SEC));
        CHECK_GE(c, 0);
        int s = corio_accept_until(l, NULL, NULL, corio_deadline_in(5 * CORIO_SEC));
        CHECK_GE(s, 0);
        char buf[64];
        /* The client has waited on its socket once (a request/response
         * client always has). */
        CHECK_ERR((int)corio_read_until(c, buf, sizeof buf, corio_now()), CORIO_ETIMEDOUT);
        CHECK_EQ(corio_write(s, "reply", 5), 5);
        if (round % 2)
            CHECK_OK(corio_shutdown(s, SHUT_WR));
        else
            CHECK_OK(corio_close(s));
        CHECK_OK(corio_sleep(5 * CORIO_MSEC));
        CHECK_EQ(corio_read_until(c, buf, sizeof buf, corio_deadline_in(CORIO_SEC)), 5);
        ssize_t n = corio_read_until(c, buf, sizeof buf, corio_deadline_in(CORIO_SEC));
        if (n != 0)
            FAIL_("round %d: read after the peer's FIN returned %s, expected 0 (end of stream)",
                  round, n < 0 ? corio_err_name((int)n) : "data");
        CHECK_OK(corio_close(c));
        if (round % 2)
            CHECK_OK(corio_close(s));
    }
    CHECK_OK(corio_close(l));
    return NULL;
}

TEST(peer_closes_after_data)
{
    run_main_checked(2, main_peer_closes_after_data, NULL);
}

/* ---- UDP ---- */

struct udp_peer {
    int fd;
    long rounds;
    _Atomic int ready;
};

static void *udp_echo(void *arg)
{
    struct udp_peer *p = arg;
    char buf[256];
    struct sockaddr_storage from;
    socklen_t flen = sizeof from;
    /* Nothing sent yet: the deadline passes. */
    test_stopwatch sw = test_stopwatch_start();
    CHECK_ERR((int)corio_recvfrom_until(p->fd, buf, sizeof buf, 0, (struct sockaddr *)&from,
                                        &flen, corio_deadline_in(30 * CORIO_MSEC)),
              CORIO_ETIMEDOUT);
    CHECK_ELAPSED_WITHIN(&sw, 30 * CORIO_MSEC, CORIO_MSEC, 100 * CORIO_MSEC);
    atomic_store(&p->ready, 1);
    for (long i = 0; i < p->rounds; i++) {
        flen = sizeof from;
        ssize_t n = corio_recvfrom_until(p->fd, buf, sizeof buf, 0, (struct sockaddr *)&from,
                                         &flen, corio_deadline_in(10 * CORIO_SEC));
        if (n < 0)
            FAIL_("udp echo, datagram %ld: %s", i, corio_err_name((int)n));
        CHECK_EQ(flen, sizeof(struct sockaddr_in));
        CHECK_EQ(corio_sendto_until(p->fd, buf, (size_t)n, 0, (struct sockaddr *)&from, flen,
                                    corio_deadline_in(10 * CORIO_SEC)),
                 n);
    }
    return NULL;
}

static void *main_udp(void *arg)
{
    int a = corio_bind_udp("127.0.0.1", 0, 0), b = corio_bind_udp("127.0.0.1", 0, 0);
    CHECK_GE(a, 0);
    CHECK_GE(b, 0);
    int pa = corio_local_port(a), pb = corio_local_port(b);
    CHECK_GT(pa, 0);
    CHECK_GT(pb, 0);
    CHECK_NE(pa, pb);
    struct udp_peer peer = {.fd = b, .rounds = test_scaled(2000)};
    corio_spawn_opts o = test_on_loop(1, false);
    corio_task *t;
    CHECK_OK(corio_spawn_ex(&t, udp_echo, &peer, &o));
    while (!atomic_load(&peer.ready))
        CHECK_OK(corio_sleep(CORIO_MSEC));
    struct sockaddr_in to = local_addr((uint16_t)pb);
    for (long i = 0; i < peer.rounds; i++) {
        char msg[64], back[64];
        int len = snprintf(msg, sizeof msg, "datagram %ld", i);
        CHECK_EQ(corio_sendto(a, msg, (size_t)len, 0, (struct sockaddr *)&to, sizeof to), len);
        struct sockaddr_in from;
        socklen_t flen = sizeof from;
        ssize_t n = corio_recvfrom_until(a, back, sizeof back, 0, (struct sockaddr *)&from, &flen,
                                         corio_deadline_in(10 * CORIO_SEC));
        CHECK_EQ(n, len);
        CHECK(memcmp(back, msg, (size_t)len) == 0);
        CHECK_EQ(ntohs(from.sin_port), pb);
    }
    CHECK_OK(corio_join(t, NULL));

    /* Datagram boundaries: two queued datagrams are two reads, and the
     * short first one does not make the second wait. */
    struct sockaddr_in to_a = local_addr((uint16_t)pa);
    CHECK_EQ(corio_sendto(b, "one", 3, 0, (struct sockaddr *)&to_a, sizeof to_a), 3);
    CHECK_EQ(corio_sendto(b, "second", 6, 0, (struct sockaddr *)&to_a, sizeof to_a), 6);
    char buf[64];
    CHECK_EQ(corio_recv_until(a, buf, sizeof buf, 0, corio_deadline_in(5 * CORIO_SEC)), 3);
    CHECK_EQ(corio_recv_until(a, buf, sizeof buf, 0, corio_deadline_in(5 * CORIO_SEC)), 6);
    CHECK(memcmp(buf, "second", 6) == 0);
    CHECK_EQ(corio_sendto(b, "third", 5, 0, (struct sockaddr *)&to_a, sizeof to_a), 5);
    CHECK_EQ(corio_sendto(b, "fourth", 6, 0, (struct sockaddr *)&to_a, sizeof to_a), 6);
    CHECK_EQ(corio_read_until(a, buf, sizeof buf, corio_deadline_in(5 * CORIO_SEC)), 5);
    CHECK_EQ(corio_read_until(a, buf, sizeof buf, corio_deadline_in(5 * CORIO_SEC)), 6);
    CHECK(memcmp(buf, "fourth", 6) == 0);
    CHECK_ERR((int)corio_recv_until(a, buf, sizeof buf, 0, corio_deadline_in(10 * CORIO_MSEC)),
              CORIO_ETIMEDOUT);
    CHECK_OK(corio_close(a));
    CHECK_OK(corio_close(b));
    return NULL;
}

TEST(udp_with_deadlines)
{
    run_main_checked(2, main_udp, NULL);
}

/* ---- the resolver ---- */

static void *main_resolve(void *arg)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    CHECK_OK(corio_getaddrinfo("localhost", "80", &hints, &res));
    CHECK(res != NULL);
    int loopback = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        CHECK_EQ(ai->ai_family, AF_INET);
        struct sockaddr_in *in = (struct sockaddr_in *)ai->ai_addr;
        CHECK_EQ(ntohs(in->sin_port), 80);
        loopback += in->sin_addr.s_addr == htonl(INADDR_LOOPBACK);
    }
    CHECK_GT(loopback, 0);
    freeaddrinfo(res);

    /* No hints, numeric host. */
    res = NULL;
    CHECK_OK(corio_getaddrinfo("127.0.0.1", NULL, NULL, &res));
    CHECK(res != NULL);
    freeaddrinfo(res);

    /* The .invalid top-level domain never resolves (RFC 6761). */
    res = (struct addrinfo *)&hints;
    int rc = corio_getaddrinfo("no-such-host.invalid", "80", &hints, &res);
    if (rc != CORIO_ENONAME && rc != CORIO_ENAMETEMP && rc != CORIO_ENAMEFAIL)
        FAIL_("getaddrinfo(no-such-host.invalid) returned %s", corio_err_name(rc));
    CHECK(res == NULL);
    /* An unknown service name. */
    rc = corio_getaddrinfo("localhost", "no-such-service-corio", &hints, &res);
    if (rc != CORIO_ENONAME && rc != CORIO_ENAMEFAIL)
        FAIL_("getaddrinfo(service no-such-service-corio) returned %s", corio_err_name(rc));
    CHECK_ERR(corio_getaddrinfo("localhost", "80", &hints, NULL), CORIO_EINVAL);
    /* Bad hints are the caller's error, not the resolver's (EAI_BADFLAGS,
     * EAI_SOCKTYPE); a numeric IPv6 host asked for as IPv4 has no address
     * in that family (EAI_ADDRFAMILY, or EAI_NONAME: glibc versions differ). */
    struct addrinfo bad = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM, .ai_flags = ~0};
    CHECK_ERR(corio_getaddrinfo("127.0.0.1", "80", &bad, &res), CORIO_EINVAL);
    bad = (struct addrinfo){.ai_family = AF_INET, .ai_socktype = 12345};
    CHECK_ERR(corio_getaddrinfo("127.0.0.1", "80", &bad, &res), CORIO_EINVAL);
    bad = (struct addrinfo){.ai_family = AF_INET, .ai_flags = AI_NUMERICHOST};
    CHECK_ERR(corio_getaddrinfo("::1", "80", &bad, &res), CORIO_ENONAME);
    CHECK(res == NULL);
    /* The resolver error reaches corio_connect_tcp's caller too. */
    rc = corio_connect_tcp("no-such-host.invalid", 80, corio_deadline_in(20 * CORIO_SEC));
    if (rc != CORIO_ENONAME && rc != CORIO_ENAMETEMP && rc != CORIO_ENAMEFAIL)
        FAIL_("connect_tcp(no-such-host.invalid) returned %s", corio_err_name(rc));
    return NULL;
}

TEST(getaddrinfo)
{
    run_main_checked(2, main_resolve, NULL);
}

/* Outside a task the resolver refuses, and leaves nothing allocated. */
TEST(getaddrinfo_outside_a_task)
{
    test_baseline base = test_baseline_take();
    struct addrinfo *res = NULL;
    CHECK_ERR(corio_getaddrinfo("localhost", "80", NULL, &res), CORIO_EPERM);
    CHECK(res == NULL);
    CHECK_ERR(corio_connect_tcp("127.0.0.1", 80, CORIO_FOREVER), CORIO_EPERM);
    if (corio__live_allocs() != base.allocs)
        FAIL_("corio_getaddrinfo outside a task leaked %lld allocation(s)",
              (long long)(corio__live_allocs() - base.allocs));
}

/* ---- a full write that fails part way says how much went out ----
 *
 * The peer reads a part, then stops; the write ends at its deadline or
 * when cancelled, with the socket buffers full. What it says it wrote
 * must be exactly what the peer then receives, in order: the writer
 * shuts its side down and the peer reads to the end. */

#define COUNTED_LEN (8u << 20) /* far more than both socket buffers hold */
#define COUNTED_READ (256u << 10)

struct part_reader {
    int fd;
    size_t got; /* COUNTED_READ, or less if the stream ended first */
};

static void *read_a_part(void *arg)
{
    struct part_reader *r = arg;
    char *buf = malloc(COUNTED_READ);
    CHECK(buf);
    while (r->got < COUNTED_READ) {
        ssize_t n = corio_read_until(r->fd, buf + r->got, COUNTED_READ - r->got,
                                     corio_deadline_in(10 * CORIO_SEC));
        CHECK_GE(n, 0);
        if (n == 0)
            break;
        r->got += (size_t)n;
    }
    for (size_t i = 0; i < r->got; i++)
        CHECK_EQ((unsigned char)buf[i], (unsigned char)(i * 7 + 3));
    free(buf);
    return NULL;
}

struct counted_writer {
    int fd;
    const unsigned char *buf;
    ssize_t rc;
    size_t written;
};

static void *write_counted_forever(void *arg)
{
    struct counted_writer *w = arg;
    w->rc = corio_write_counted(w->fd, w->buf, COUNTED_LEN, &w->written);
    return NULL;
}

/* After the writer's end: the rest of what the server side receives,
 * to the end of stream, checked against the pattern. */
static size_t drain_the_rest(int fd, size_t from)
{
    char *buf = malloc(65536);
    CHECK(buf);
    size_t at = from;
    for (;;) {
        ssize_t n = corio_read_until(fd, buf, 65536, corio_deadline_in(10 * CORIO_SEC));
        CHECK_GE(n, 0);
        if (n == 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            CHECK_EQ((unsigned char)buf[i], (unsigned char)((at + (size_t)i) * 7 + 3));
        at += (size_t)n;
    }
    free(buf);
    return at;
}

static void *main_counted_write(void *arg)
{
    (void)arg;
    unsigned char *buf = malloc(COUNTED_LEN);
    CHECK(buf);
    for (size_t i = 0; i < COUNTED_LEN; i++)
        buf[i] = (unsigned char)(i * 7 + 3);
    for (int cancel = 0; cancel < 2; cancel++) {
        int sv[2];
        test_tcp_pair(sv);
        int small = 64 << 10;
        CHECK_EQ(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
        CHECK_EQ(setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
        struct part_reader r = {.fd = sv[1]};
        corio_task *reader;
        CHECK_OK(corio_spawn_on(&reader, 1, read_a_part, &r));
        struct counted_writer w = {.fd = sv[0], .buf = buf, .written = 12345};
        if (cancel) {
            corio_task *writer;
            CHECK_OK(corio_spawn(&writer, write_counted_forever, &w));
            CHECK_OK(corio_join(reader, NULL));
            CHECK_OK(corio_cancel(writer));
            CHECK_OK(corio_join(writer, NULL));
            CHECK_ERR((int)w.rc, CORIO_ECANCELED);
            CHECK_EQ(r.got, (size_t)COUNTED_READ);
            CHECK_GE(w.written, (size_t)COUNTED_READ);
            CHECK_OK(corio_shutdown(sv[0], SHUT_WR));
        } else {
            /* Whenever the deadline comes, the count must be right (the
             * reader has usually read its part by then; if not, it ends
             * at the end of stream). The first send finds the buffer
             * empty, so some bytes always go out. */
            w.rc = corio_write_counted_until(w.fd, buf, COUNTED_LEN, &w.written,
                                             corio_deadline_in(200 * CORIO_MSEC));
            CHECK_ERR((int)w.rc, CORIO_ETIMEDOUT);
            CHECK_GT(w.written, (size_t)0);
            CHECK_OK(corio_shutdown(sv[0], SHUT_WR));
            CHECK_OK(corio_join(reader, NULL));
        }
        CHECK_LT(w.written, (size_t)COUNTED_LEN);
        CHECK_EQ(drain_the_rest(sv[1], r.got), w.written);
        CHECK_OK(corio_close(sv[0]));
        CHECK_OK(corio_close(sv[1]));
    }
    /* Done at once, and cancelled before a byte went out. */
    int sv[2];
    test_tcp_pair(sv);
    size_t written = 12345;
    CHECK_EQ(corio_write_counted(sv[0], buf, 100, &written), 100);
    CHECK_EQ(written, (size_t)100);
    CHECK_OK(corio_cancel(corio_self()));
    written = 12345;
    CHECK_ERR((int)corio_write_counted(sv[0], buf, 100, &written), CORIO_ECANCELED);
    CHECK_EQ(written, (size_t)0);
    CHECK_EQ(corio_write_counted_until(sv[0], buf, 100, NULL, CORIO_FOREVER), 100);
    CHECK_OK(corio_close(sv[0]));
    CHECK_OK(corio_close(sv[1]));
    free(buf);
    return NULL;
}

TEST(counted_write_says_what_went_out)
{
    run_main_checked(2, main_counted_write, NULL);
}

int main(int argc, char **argv)
{
    RUN(echo_across_loops);
    RUN(connect_tcp_by_name);
    RUN(connection_refused);
    RUN(connect_timeout);
    RUN(accept_under_load);
    RUN(cancelled_accept_loses_nothing);
    RUN(peer_closes_after_data);
    RUN(udp_with_deadlines);
    RUN(getaddrinfo);
    RUN(getaddrinfo_outside_a_task);
    RUN(counted_write_says_what_went_out);
    return test_summary();
}
