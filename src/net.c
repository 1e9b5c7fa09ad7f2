/*
 * net.c: descriptor and socket calls that wait instead of failing with
 * EAGAIN.
 *
 * Every call has the same shape: take a pending cancellation
 * (corio__enter_call), then try the system call; on EAGAIN wait for
 * readiness on the task's loop (io.c) and try again. Trying first means
 * a ready descriptor costs one system call and no switch, and it also means
 * an edge-triggered event is never needed twice. For TCP sockets, a read
 * shorter than asked proves the buffer drained (io.c says when it does
 * not), so the next read waits at once instead of spending a system call
 * to hear EAGAIN.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "io.h"
#include "loop.h"
#include "sys.h"
#include "task.h"

/* Every call here starts by finding its task (corio__enter_call):
 * CORIO_EPERM outside one, and CORIO_ECANCELED (consuming it) when a
 * cancellation is pending, even if the call could complete without
 * waiting. Otherwise a task reading from a peer that never pauses, or
 * accepting from a flood of connections, would never see its
 * cancellation: only a wait consumes one, and such a task never waits. */
int corio_wait_fd(int fd, unsigned events, corio_time_t deadline)
{
    corio_task *self;
    int entered = corio__enter_call(&self);
    if (entered != 0)
        return entered;
    if (events != CORIO_READABLE && events != CORIO_WRITABLE)
        return CORIO_EINVAL;
    int rc = corio__io_prepare(self->home, fd);
    if (rc != 0)
        return rc;
    /* Unlike the other calls, this one does not follow an EAGAIN: ask the
     * kernel whether fd is ready now. If not, it is registered already,
     * so the edge of it becoming ready cannot be missed. */
    struct pollfd pfd = {.fd = fd, .events = events == CORIO_READABLE ? POLLIN : POLLOUT};
    if (poll(&pfd, 1, 0) > 0) {
        /* Ready without waiting: an IO call like the others for the
         * fairness budget, or a task that waits for an always-ready
         * descriptor and makes its own calls would never yield. */
        corio__io_coop(self);
        return 0;
    }
    return corio__io_wait(self, fd, events == CORIO_READABLE ? CORIO__IO_IN : CORIO__IO_OUT,
                          deadline, CORIO__WAITS_FD);
}

int corio_socket(int domain, int type, int protocol)
{
    if (corio__fault(EMFILE))
        return CORIO_EMFILE;
    int fd = socket(domain, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
    return fd >= 0 ? fd : -errno;
}

/* The longest pause between connect attempts that said EAGAIN. */
#define CONNECT_PAUSE_MAX (64 * CORIO_MSEC)

/* connect(2) once: 0 or -errno. Never inlined into connect_retrying: its
 * sleeps may move a migrating task to another thread, and the compiler may
 * keep errno's address (glibc's __errno_location is const) from before a
 * sleep; here it is taken afresh on every call (corio.h, CORIO_TASK_MIGRATE). */
static __attribute__((noinline)) int connect_once(int fd, const struct sockaddr *addr,
                                                  socklen_t len)
{
    return connect(fd, addr, len) == 0 ? 0 : -errno;
}

/* connect(2), trying again while it says EAGAIN: a Unix-domain listener's
 * backlog is full (for IP: no local port free). No readiness event
 * announces the end of that, so the retries come after pauses growing
 * from 1 ms to CONNECT_PAUSE_MAX, up to the deadline. 0, -errno of the
 * last attempt, or the error of a pause (CORIO_ETIMEDOUT at the deadline,
 * CORIO_ECANCELED). */
static int connect_retrying(corio_task *self, int fd, const struct sockaddr *addr, socklen_t len,
                            corio_time_t deadline)
{
    corio_time_t pause = CORIO_MSEC;
    for (;;) {
        int rc = connect_once(fd, addr, len);
        if (rc != -EAGAIN)
            return rc;
        rc = corio__pause(self, &pause, CONNECT_PAUSE_MAX, deadline, CORIO__WAITS_SLEEP);
        if (rc != 0)
            return rc;
    }
}

int corio_connect_until(int fd, const struct sockaddr *addr, socklen_t len, corio_time_t deadline)
{
    corio_task *self;
    int entered = corio__enter_call(&self);
    if (entered != 0)
        return entered;
    int rc = corio__io_prepare(self->home, fd);
    if (rc != 0)
        return rc;
    rc = connect_retrying(self, fd, addr, len, deadline);
    if (rc == 0) {
        /* Connected without a readiness wait (a Unix listener with room
         * in its backlog): spend the fairness budget like the others. */
        corio__io_coop(self);
        return 0;
    }
    if (rc != CORIO_EINPROGRESS && rc != CORIO_EINTR)
        return rc;
    rc = corio__io_wait(self, fd, CORIO__IO_OUT, deadline, CORIO__WAITS_CONNECT);
    if (rc != 0)
        return rc;
    int err = 0;
    socklen_t elen = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0)
        return -errno;
    return -err;
}

int corio_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    return corio_connect_until(fd, addr, len, CORIO_FOREVER);
}

/* An accept(2) error that belongs to one connection, not the listener:
 * Linux passes on errors already pending on the new socket and drops
 * that connection (accept(2), "Error handling": treat them like EAGAIN),
 * and ECONNABORTED is a connection gone before it was accepted, which Go
 * (internal/poll, "a silly error, so try again") and libuv
 * (uv__server_io) skip too. A server's accept loop must not end on a
 * client's misfortune. But only from a listening socket: EOPNOTSUPP is
 * also accept on a socket that cannot listen (UDP), which trying again
 * would never end. */
static bool accept_error_is_transient(int listener, int err)
{
    int listening = 0;
    socklen_t len = sizeof listening;
    switch (err) {
    case ECONNABORTED:
    case ENETDOWN:
    case EPROTO:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
        return getsockopt(listener, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 &&
               listening;
    default:
        return false;
    }
}

int corio_accept_until(int listener, struct sockaddr *addr, socklen_t *len, corio_time_t deadline)
{
    corio_task *self;
    int entered = corio__enter_call(&self);
    if (entered != 0)
        return entered;
    int prep = corio__io_prepare(self->home, listener);
    if (prep != 0)
        return prep;
    for (;;) {
        if (corio__fault(EMFILE))
            return CORIO_EMFILE;
        int fd = accept4(listener, addr, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            corio__io_coop(self);
            return fd;
        }
        int err = errno;
        if (err == EINTR)
            continue;
        if (accept_error_is_transient(listener, err)) {
            /* At once, not after a wait: more connections may be queued
             * behind that one, and no new edge would announce them. Like
             * an accept that succeeded for fairness; and a flood of them
             * still ends at the deadline or a cancellation. */
            corio__io_coop(self);
            if (deadline != CORIO_FOREVER && corio_now() >= deadline)
                return CORIO_ETIMEDOUT;
            int rc = corio__cancel_point(self);
            if (rc != 0)
                return rc;
            continue;
        }
        if (err != EAGAIN)
            return -err;
        int rc = corio__io_wait(self, listener, CORIO__IO_IN, deadline, CORIO__WAITS_ACCEPT);
        if (rc != 0)
            return rc;
    }
}

int corio_accept(int listener, struct sockaddr *addr, socklen_t *len)
{
    return corio_accept_until(listener, addr, len, CORIO_FOREVER);
}

/* The common read side: one call until it returns something other than
 * EAGAIN. On TCP a short result proves the buffer drained
 * (corio__io_note_read). */
enum read_op { OP_READ, OP_RECV, OP_RECVFROM, OP_READV, OP_RECVMSG };

/* One read-side call's arguments, whichever its form. */
struct read_req {
    enum read_op op;
    int fd, flags;
    void *buf;
    size_t len;                /* bytes asked for (READV: all of iov's) */
    struct sockaddr *from;     /* RECVFROM */
    socklen_t *fromlen;
    const struct iovec *iov;   /* READV */
    int iovcnt;
    struct msghdr *msg;        /* RECVMSG */
    bool invalid;              /* bad arguments: CORIO_EINVAL, once the
                                * task and its cancellation are checked */
};

/* The system call itself, with `extra` flags on top of the caller's. */
static ssize_t read_call(const struct read_req *r, int extra)
{
    switch (r->op) {
    case OP_READ: return read(r->fd, r->buf, r->len);
    case OP_RECV: return recv(r->fd, r->buf, r->len, r->flags | extra);
    case OP_RECVFROM: return recvfrom(r->fd, r->buf, r->len, r->flags | extra, r->from, r->fromlen);
    case OP_READV: return readv(r->fd, r->iov, r->iovcnt);
    default: return recvmsg(r->fd, r->msg, r->flags | extra);
    }
}

/* Whether the call goes by what the loop knows of the descriptor (and
 * may skip a system call known to find nothing), and whether its result
 * adds to that (read_notes): not a datagram-shaped call (a short datagram
 * says nothing of the next), and no call that leaves the data queued. */
static bool read_knows(const struct read_req *r)
{
    return r->op != OP_RECVFROM && r->op != OP_RECVMSG;
}

static bool read_notes(const struct read_req *r)
{
    return read_knows(r) && !(r->flags & MSG_PEEK);
}

/*
 * A recv or recvfrom of another queue than the data's: the error queue
 * (MSG_ERRQUEUE) or TCP's urgent byte (MSG_OOB). Neither says anything
 * about the data queue, which is what readiness and its edges are about:
 * an empty error queue is EAGAIN with data queued, and waiting for an
 * edge then could wait for ever (and marked the data drained). So one
 * system call, whatever it says (CORIO_EAGAIN: nothing there), without
 * waiting and without touching what the loop knows of the descriptor.
 *
 * This is what the kernel itself does, blocking socket or not: TCP and
 * UDP hand MSG_ERRQUEUE to ip_recv_error / ipv6_recv_error
 * (net/ipv4/ip_sockglue.c), which dequeue one entry or return EAGAIN and
 * never sleep; TCP's MSG_OOB goes to tcp_recv_urg (net/ipv4/tcp.c),
 * EINVAL when no urgent byte is announced or it was read already, EAGAIN
 * while the announced byte has not arrived, and never sleeps ("this call
 * should never block, independent of the blocking state of the socket",
 * says its comment). Checked on Linux 6.18 with blocking sockets. Some
 * families ignore the flag and read the data queue instead (UDP ignores
 * MSG_OOB, AF_UNIX stream sockets MSG_ERRQUEUE, and there a blocking
 * socket does block): MSG_DONTWAIT keeps such a call from blocking the
 * loop's thread on a descriptor corio never made non-blocking, and it
 * still does not wait, as the header says. A cancellation point like
 * every call here.
 */
static ssize_t read_other_queue(corio_task *self, const struct read_req *r)
{
    ssize_t n;
    do {
        n = read_call(r, MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        n = -errno;
    /* Completed without waiting, EAGAIN included: a task polling an
     * empty error queue must not keep its loop either. */
    corio__io_coop(self);
    return n;
}

static ssize_t read_side(const struct read_req *r, corio_time_t deadline)
{
    corio_task *self;
    int entered = corio__enter_call(&self);
    if (entered != 0)
        return entered;
    if (r->invalid)
        return CORIO_EINVAL;
    bool sockets = r->op == OP_RECV || r->op == OP_RECVFROM || r->op == OP_RECVMSG;
    if (sockets && (r->flags & (MSG_ERRQUEUE | MSG_OOB)))
        return read_other_queue(self, r);
    /* The caller's own MSG_DONTWAIT: one try, CORIO_EAGAIN for nothing
     * there, as recv(2) says; what it reads counts as any read. */
    bool no_wait = sockets && (r->flags & MSG_DONTWAIT);
    corio__loop *l = self->home;
    int rc = corio__io_prepare(l, r->fd);
    if (rc != 0)
        return rc;
    int timed_out = 0;
    for (;;) {
        /* Not for len 0: read(2) of nothing returns 0 at once, drained
         * or not, and no edge need ever come to end a wait for it. */
        if (read_knows(r) && r->len > 0 && !timed_out && !no_wait &&
            corio__io_known_unready(l, r->fd, CORIO__IO_IN)) {
            rc = corio__io_wait(self, r->fd, CORIO__IO_IN, deadline, CORIO__WAITS_READ);
            /* Timed out on knowledge alone: still look once, data may
             * have come in the same instant. */
            if (rc == CORIO_ETIMEDOUT)
                timed_out = rc;
            else if (rc != 0)
                return rc;
        }
        ssize_t n = read_call(r, 0);
        if (n >= 0) {
            if (read_notes(r))
                corio__io_note_read(l, r->fd, (size_t)n, r->len);
            corio__io_coop(self);
            return n;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN)
            return -errno;
        if (no_wait) {
            corio__io_coop(self); /* a task polling must not keep its loop */
            return CORIO_EAGAIN;
        }
        if (timed_out)
            return timed_out;
        rc = corio__io_wait(self, r->fd, CORIO__IO_IN, deadline, CORIO__WAITS_READ);
        if (rc != 0)
            return rc;
    }
}

ssize_t corio_read_until(int fd, void *buf, size_t len, corio_time_t deadline)
{
    struct read_req r = {.op = OP_READ, .fd = fd, .buf = buf, .len = len};
    return read_side(&r, deadline);
}

ssize_t corio_read(int fd, void *buf, size_t len)
{
    return corio_read_until(fd, buf, len, CORIO_FOREVER);
}

ssize_t corio_recv_until(int fd, void *buf, size_t len, int flags, corio_time_t deadline)
{
    struct read_req r = {.op = OP_RECV, .fd = fd, .flags = flags, .buf = buf, .len = len};
    return read_side(&r, deadline);
}

ssize_t corio_recv(int fd, void *buf, size_t len, int flags)
{
    return corio_recv_until(fd, buf, len, flags, CORIO_FOREVER);
}

ssize_t corio_recvfrom_until(int fd, void *buf, size_t len, int flags, struct sockaddr *from,
                             socklen_t *fromlen, corio_time_t deadline)
{
    struct read_req r = {.op = OP_RECVFROM, .fd = fd, .flags = flags, .buf = buf, .len = len,
                         .from = from, .fromlen = fromlen};
    return read_side(&r, deadline);
}

ssize_t corio_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *from,
                       socklen_t *fromlen)
{
    return corio_recvfrom_until(fd, buf, len, flags, from, fromlen, CORIO_FOREVER);
}

/* The bytes an iovec array holds, or -1 for a count readv(2) would refuse
 * or a total past SSIZE_MAX (EINVAL there too). */
static ssize_t iov_total(const struct iovec *iov, int iovcnt)
{
    if (iovcnt < 0 || iovcnt > IOV_MAX || (iovcnt > 0 && !iov))
        return -1;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len > (size_t)SSIZE_MAX - total)
            return -1;
        total += iov[i].iov_len;
    }
    return (ssize_t)total;
}

ssize_t corio_readv_until(int fd, const struct iovec *iov, int iovcnt, corio_time_t deadline)
{
    ssize_t total = iov_total(iov, iovcnt);
    struct read_req r = {.op = OP_READV, .fd = fd, .len = total < 0 ? 0 : (size_t)total,
                         .iov = iov, .iovcnt = iovcnt, .invalid = total < 0};
    return read_side(&r, deadline);
}

ssize_t corio_readv(int fd, const struct iovec *iov, int iovcnt)
{
    return corio_readv_until(fd, iov, iovcnt, CORIO_FOREVER);
}

/* A message header recvmsg(2) and sendmsg(2) would take. */
static bool msg_valid(const struct msghdr *msg)
{
    return msg && msg->msg_iovlen <= (size_t)IOV_MAX &&
           iov_total(msg->msg_iov, (int)msg->msg_iovlen) >= 0;
}

ssize_t corio_recvmsg_until(int fd, struct msghdr *msg, int flags, corio_time_t deadline)
{
    struct read_req r = {.op = OP_RECVMSG, .fd = fd, .flags = flags, .msg = msg,
                         .invalid = !msg_valid(msg)};
    return read_side(&r, deadline);
}

ssize_t corio_recvmsg(int fd, struct msghdr *msg, int flags)
{
    return corio_recvmsg_until(fd, msg, flags, CORIO_FOREVER);
}

/* One send-side call's arguments, whichever its form. */
enum send_op { OP_SEND, OP_WRITEV, OP_SENDMSG };
struct send_req {
    enum send_op op;
    int fd, flags;
    const void *buf;            /* SEND */
    size_t len;
    const struct sockaddr *to;  /* SEND: sendto when not NULL */
    socklen_t tolen;
    const struct iovec *iov;    /* WRITEV */
    int iovcnt;
    const struct msghdr *msg;   /* SENDMSG */
    bool use_write;             /* the descriptor is no socket */
    bool invalid;               /* as read_req's */
};

/* The system call itself. Sockets always get MSG_NOSIGNAL: SIGPIPE is
 * blocked on loop threads, but a write to a closed socket would still
 * leave one pending there, for a corio_signal_wait to take as if sent
 * (or to kill a thread that unblocks it). So a writev goes as a send (one
 * buffer: corio_write's case) or a sendmsg while the descriptor is a
 * socket, and as writev(2) once it proved not to be one (a pipe whose
 * reader left says EPIPE, its SIGPIPE blocked). */
static ssize_t send_call(struct send_req *r)
{
    switch (r->op) {
    case OP_WRITEV:
        if (!r->use_write) {
            struct msghdr m = {.msg_iov = (struct iovec *)r->iov, .msg_iovlen = (size_t)r->iovcnt};
            ssize_t n = r->iovcnt == 1
                            ? send(r->fd, r->iov[0].iov_base, r->iov[0].iov_len, MSG_NOSIGNAL)
                            : sendmsg(r->fd, &m, MSG_NOSIGNAL);
            if (n >= 0 || errno != ENOTSOCK)
                return n;
            r->use_write = true;
        }
        return writev(r->fd, r->iov, r->iovcnt);
    case OP_SENDMSG: return sendmsg(r->fd, r->msg, r->flags | MSG_NOSIGNAL);
    default: break;
    }
    if (r->use_write)
        return write(r->fd, r->buf, r->len);
    ssize_t n = r->to ? sendto(r->fd, r->buf, r->len, r->flags | MSG_NOSIGNAL, r->to, r->tolen)
                      : send(r->fd, r->buf, r->len, r->flags | MSG_NOSIGNAL);
    if (n < 0 && errno == ENOTSOCK) {
        r->use_write = true;
        return write(r->fd, r->buf, r->len);
    }
    return n;
}

/* One send-like call, waiting while the descriptor is full. */
static ssize_t send_once(corio_task *self, struct send_req *r, corio_time_t deadline)
{
    int prep = corio__io_prepare(self->home, r->fd);
    if (prep != 0)
        return prep;
    for (;;) {
        ssize_t n = send_call(r);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN)
            return -errno;
        if (r->op != OP_WRITEV && (r->flags & MSG_DONTWAIT)) {
            /* The caller's own: one try, as send(2) says. */
            corio__io_coop(self);
            return CORIO_EAGAIN;
        }
        int rc = corio__io_wait(self, r->fd, CORIO__IO_OUT, deadline, CORIO__WAITS_WRITE);
        if (rc != 0)
            return rc;
    }
}

ssize_t corio_write_until(int fd, const void *buf, size_t len, corio_time_t deadline)
{
    return corio_write_counted_until(fd, buf, len, NULL, deadline);
}

ssize_t corio_write(int fd, const void *buf, size_t len)
{
    return corio_write_until(fd, buf, len, CORIO_FOREVER);
}

/* One buffer through corio_writev's loop: a socket still gets a plain
 * send (send_call). The cast only fits the iovec: nothing writes to it. */
ssize_t corio_write_counted_until(int fd, const void *buf, size_t len, size_t *written,
                                  corio_time_t deadline)
{
    struct iovec one = {(void *)buf, len};
    return corio_writev_until(fd, &one, 1, written, deadline);
}

ssize_t corio_write_counted(int fd, const void *buf, size_t len, size_t *written)
{
    return corio_write_counted_until(fd, buf, len, written, CORIO_FOREVER);
}

/* One send-like call for the public calls that make exactly one. */
static ssize_t send_one(struct send_req *r, corio_time_t deadline)
{
    corio_task *self;
    int entered = corio__enter_call(&self);
    if (entered != 0)
        return entered;
    if (r->invalid)
        return CORIO_EINVAL;
    ssize_t n = send_once(self, r, deadline);
    if (n >= 0)
        corio__io_coop(self);
    return n;
}

ssize_t corio_send_until(int fd, const void *buf, size_t len, int flags, corio_time_t deadline)
{
    struct send_req r = {.op = OP_SEND, .fd = fd, .flags = flags, .buf = buf, .len = len};
    return send_one(&r, deadline);
}

ssize_t corio_send(int fd, const void *buf, size_t len, int flags)
{
    return corio_send_until(fd, buf, len, flags, CORIO_FOREVER);
}

ssize_t corio_sendto_until(int fd, const void *buf, size_t len, int flags,
                           const struct sockaddr *to, socklen_t tolen, corio_time_t deadline)
{
    struct send_req r = {.op = OP_SEND, .fd = fd, .flags = flags, .buf = buf, .len = len,
                         .to = to, .tolen = tolen};
    return send_one(&r, deadline);
}

ssize_t corio_sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to,
                     socklen_t tolen)
{
    return corio_sendto_until(fd, buf, len, flags, to, tolen, CORIO_FOREVER);
}

ssize_t corio_sendmsg_until(int fd, const struct msghdr *msg, int flags, corio_time_t deadline)
{
    struct send_req r = {.op = OP_SENDMSG, .fd = fd, .flags = flags, .msg = msg,
                         .invalid = !msg_valid(msg)};
    return send_one(&r, deadline);
}

ssize_t corio_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    return corio_sendmsg_until(fd, msg, flags, CORIO_FOREVER);
}

/*
 * Every byte of iov, in order, through writev(2), waiting while the
 * descriptor is full. A partial writev can stop inside an element: the
 * rest of that element goes by writev of a one-element array (the
 * caller's array is const, and copying a thousand elements to adjust the
 * first is what this avoids), then the next writev starts at the next
 * element.
 */
ssize_t corio_writev_until(int fd, const struct iovec *iov, int iovcnt, size_t *written,
                           corio_time_t deadline)
{
    size_t ignored;
    if (!written)
        written = &ignored;
    *written = 0;
    corio_task *self;
    int entered = corio__enter_call(&self);
    if (entered != 0)
        return entered;
    ssize_t total = iov_total(iov, iovcnt);
    if (total < 0)
        return CORIO_EINVAL;
    struct send_req r = {.op = OP_WRITEV, .fd = fd};
    int next = 0;      /* the first element not yet fully written */
    size_t inside = 0; /* bytes of iov[next] written */
    while (*written < (size_t)total) {
        while (next < iovcnt && inside == iov[next].iov_len) {
            next++; /* done, or empty */
            inside = 0;
        }
        struct iovec part;
        if (inside > 0) {
            part.iov_base = (char *)iov[next].iov_base + inside;
            part.iov_len = iov[next].iov_len - inside;
            r.iov = &part;
            r.iovcnt = 1;
        } else {
            r.iov = iov + next;
            r.iovcnt = iovcnt - next;
        }
        ssize_t n = send_once(self, &r, deadline);
        if (n < 0)
            return n;
        *written += (size_t)n;
        /* Walk past what went. */
        for (size_t left = (size_t)n; left > 0;) {
            size_t room = iov[next].iov_len - inside;
            if (left < room) {
                inside += left;
                break;
            }
            left -= room;
            next++;
            inside = 0;
        }
    }
    corio__io_coop(self);
    return total;
}

ssize_t corio_writev(int fd, const struct iovec *iov, int iovcnt, size_t *written)
{
    return corio_writev_until(fd, iov, iovcnt, written, CORIO_FOREVER);
}

int corio_shutdown(int fd, int how) { return shutdown(fd, how) == 0 ? 0 : -errno; }

int corio_close(int fd)
{
    if (fd < 0)
        return CORIO_EBADF;
    corio__loop *l = corio__loop_current();
    bool counted = l ? corio__io_forget(l, fd) : corio__fd_invalidate(fd);
    int rc = close(fd) == 0 ? 0 : -errno;
    corio__fd_closed(fd, counted);
    return rc;
}
