/*
 * io.c: descriptor readiness per loop (see io.h).
 */
#define _GNU_SOURCE
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "loop.h"
#include "sys.h"
#include "task.h"

/* IO calls a task may complete without blocking before it yields. Tokio's
 * cooperative budget is 128 for the same reason. */
#define COOP_BUDGET 128

#define TAG(fd, gen) ((uint64_t)(uint32_t)(fd) | ((uint64_t)(gen) << 32))

void corio__io_init(corio__io *io) { memset(io, 0, sizeof *io); }

void corio__io_destroy(corio__io *io)
{
    corio__free(io->fds);
    memset(io, 0, sizeof *io);
}

/*
 * Descriptor generations, one table for the process (io.h): two levels,
 * pages allocated on first use with a CAS, so any thread can read and
 * bump without a lock. Pages live as long as the process: runtimes may
 * run side by side, and a descriptor outlives the runtime that opened it.
 * At most 4 MiB, for a process that used every number below 2^20.
 */
#define FD_GEN_PAGE 4096
typedef _Atomic(_Atomic uint32_t *) fd_pages[CORIO__FD_MAX / FD_GEN_PAGE];
static fd_pages fd_gen_pages;
/* Tasks waiting on each number, on any loop of any runtime: a close
 * that sees some it has not woken itself must have their loops look
 * (corio__fd_invalidate). Same layout as the generations. */
static fd_pages fd_waiting_pages;
/* Bumped by each such close; a loop that sees it change looks for its
 * waiters on closed numbers (corio__io_sweep_closed). */
static _Atomic uint64_t remote_closes;

/* fd's slot in `pages`; its page is allocated on first use if `create`,
 * otherwise NULL means nobody has registered (or waited on) this number
 * yet. */
static _Atomic uint32_t *fd_slot(fd_pages *pages, int fd, bool create)
{
    _Atomic(_Atomic uint32_t *) *pagep = &(*pages)[(size_t)fd / FD_GEN_PAGE];
    _Atomic uint32_t *page = atomic_load_explicit(pagep, memory_order_acquire);
    if (!page && create) {
        _Atomic uint32_t *fresh = corio__calloc_permanent(FD_GEN_PAGE, sizeof *fresh);
        if (!fresh)
            return NULL;
        if (atomic_compare_exchange_strong_explicit(pagep, &page, fresh, memory_order_acq_rel,
                                                    memory_order_acquire))
            page = fresh;
        else
            corio__free_permanent((void *)fresh);
    }
    return page ? &page[(size_t)fd % FD_GEN_PAGE] : NULL;
}

static _Atomic uint32_t *gen_slot(int fd, bool create)
{
    return fd_slot(&fd_gen_pages, fd, create);
}

/* fd's generation now (0 before anything was registered under it). */
static uint32_t gen_now(int fd)
{
    _Atomic uint32_t *slot = gen_slot(fd, false);
    return slot ? atomic_load(slot) : 0;
}

static corio__fd_entry *entry_of(corio__io *io, int fd)
{
    if ((uint32_t)fd < io->nfds)
        return &io->fds[fd];
    uint32_t n = io->nfds ? io->nfds : 256;
    while (n <= (uint32_t)fd)
        n *= 2;
    if (n > CORIO__FD_MAX)
        n = CORIO__FD_MAX;
    corio__fd_entry *fds = corio__realloc(io->fds, (size_t)n * sizeof *fds);
    if (!fds)
        return NULL;
    memset(fds + io->nfds, 0, (size_t)(n - io->nfds) * sizeof *fds);
    io->fds = fds;
    io->nfds = n;
    return &fds[fd];
}

/* Is fd a TCP socket, where a short read proves the buffer drained
 * (unless urgent data came: corio__io_dispatch)? Not so for datagrams (one read
 * returns one datagram), nor for pipes: a pipe whose writer opened it
 * O_DIRECT is in packet mode, one read per write, and the read end cannot
 * tell (its flags do not show it). Nor for Unix stream sockets: a read
 * there ends after a message that carried descriptors (SCM_RIGHTS), and at
 * a change of writer credentials (SO_PASSCRED), with more data queued
 * behind it that no new edge will announce. For those a short read proves
 * nothing and the next read tries the system call. */
static bool is_tcp(int fd)
{
    int type, proto;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM)
        return false;
    len = sizeof proto;
    return getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) == 0 && proto == IPPROTO_TCP;
}

static unsigned drop_entry(corio__loop *l, corio__fd_entry *e);

/* ensure_registered: the number is being closed (its generation is odd). */
#define FD_CLOSING 1

/* Make sure fd is registered with this loop under its current generation. */
static int ensure_registered(corio__loop *l, corio__fd_entry *e, int fd)
{
    _Atomic uint32_t *slot = gen_slot(fd, true);
    if (!slot)
        return CORIO_ENOMEM;
    uint32_t gen = atomic_load(slot);
    /* Odd: another thread is inside corio_close of this number. Until it
     * is done the number may name the file being closed (whose kernel
     * registration the close will take, waiter or not) or, once the
     * kernel has let the number go, a new file: register neither. */
    if (gen & 1)
        return FD_CLOSING;
    if (e->registered && e->gen == gen)
        return 0;
    /* The number was closed since (its sweep here may not have run yet):
     * a task still waiting on the old file here is done, and must not
     * keep the new file's slot (CORIO_EBUSY). */
    if (e->registered)
        drop_entry(l, e);
    /* corio waits only on non-blocking descriptors. */
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0)
        return -errno;
    if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
        return -errno;
    int rc = corio__poll_add(&l->poll, fd, TAG(fd, gen));
    /* EPERM: a file epoll cannot watch (io.h, "direct"). */
    bool direct = rc == CORIO_EPERM;
    if (rc != 0 && !direct)
        return rc;
    if (e->registered && !e->direct)
        l->io.registered--;
    if (!direct)
        l->io.registered++;
    e->registered = 1;
    e->gen = gen;
    e->direct = direct;
    e->ready = direct ? 3 : 0;
    e->hup = direct;
    e->urgent = 0;
    e->tcp = !direct && is_tcp(fd);
    return 0;
}

int corio__io_prepare(corio__loop *l, int fd)
{
    if (fd < 0 || fd >= CORIO__FD_MAX)
        return CORIO_EBADF;
    corio__fd_entry *e = entry_of(&l->io, fd);
    if (!e)
        return CORIO_ENOMEM;
    int rc = ensure_registered(l, e, fd);
    /* Being closed: the call's system call tells, or its wait will. */
    return rc == FD_CLOSING ? 0 : rc;
}

int corio__io_wait(corio_task *self, int fd, int dir, corio_time_t deadline,
                   enum corio__wait_kind what)
{
    if (fd < 0 || fd >= CORIO__FD_MAX)
        return CORIO_EBADF;
    corio__loop *l;
    corio__fd_entry *e;
    int rc;
    for (;;) {
        l = self->home; /* a migrating task may move while it yields */
        e = entry_of(&l->io, fd);
        if (!e)
            return CORIO_ENOMEM;
        rc = ensure_registered(l, e, fd);
        if (rc != FD_CLOSING)
            break;
        /* Another thread is closing the number: let it finish (a wait
         * registered now could be the old file's, which the close would
         * take with it unseen), then look again: the file is gone
         * (CORIO_EBADF) or the number names a new one. The wait's
         * deadline and cancellation hold meanwhile, as they would asleep. */
        if (deadline != CORIO_FOREVER && corio_now() >= deadline)
            return CORIO_ETIMEDOUT;
        rc = corio__cancel_point(self);
        if (rc != 0)
            return rc;
        corio__yield_now(self);
    }
    if (rc != 0)
        return rc;
    if (e->direct)
        return CORIO_EOPNOTSUPP;
    /* The caller just saw EAGAIN: whatever we knew is out of date. */
    e->ready &= (uint8_t) ~(1u << dir);
    if (e->waiter[dir])
        return CORIO_EBUSY;
    uint32_t gen = e->gen;
    _Atomic uint32_t *waiting = fd_slot(&fd_waiting_pages, fd, true);
    if (!waiting)
        return CORIO_ENOMEM;
    /* Counted before the generation is read again, as a close bumps the
     * generation before it reads the count (both sequentially
     * consistent): either that close sees us and has our loop look, or
     * we see its generation here. */
    atomic_fetch_add(waiting, 1);
    if (gen_now(fd) != gen) {
        atomic_fetch_sub(waiting, 1);
        return CORIO_EBADF;
    }
    uint64_t token;
    rc = corio__wait_arm(self, &token);
    if (rc != 0) {
        atomic_fetch_sub(waiting, 1);
        return rc;
    }
    e->waiter[dir] = self;
    e->token[dir] = token;
    rc = corio__wait_commit(self, token, deadline, what);
    atomic_fetch_sub(waiting, 1);
    /* The table may have moved while we slept (another fd grew it). */
    e = &l->io.fds[fd];
    if (e->waiter[dir] == self)
        e->waiter[dir] = NULL;
    /* Woken by readiness, then the number was closed (by a task of this
     * loop that ran first, or on another loop) and maybe reused: the
     * caller's file is gone, whatever file has the number now. Every
     * corio_close bumps the generation (the page exists: registering
     * made it), and an entry is unregistered or re-registered only after
     * one, so the generation alone tells. */
    if (rc == 0 && gen_now(fd) != gen)
        rc = CORIO_EBADF;
    return rc;
}

bool corio__io_known_unready(corio__loop *l, int fd, int dir)
{
    if ((uint32_t)fd >= l->io.nfds)
        return false;
    corio__fd_entry *e = &l->io.fds[fd];
    return e->registered && e->tcp && !e->hup && !e->urgent && !(e->ready & (1u << dir));
}

void corio__io_note_read(corio__loop *l, int fd, size_t n, size_t asked)
{
    if ((uint32_t)fd >= l->io.nfds || !l->io.fds[fd].tcp)
        return;
    if (n == 0 && asked > 0)
        l->io.fds[fd].hup = 1;
    else if (n < asked)
        l->io.fds[fd].ready &= (uint8_t) ~(1u << CORIO__IO_IN);
}

void corio__io_dispatch(corio__loop *l, const corio__poll_event *ev, int n)
{
    for (int i = 0; i < n; i++) {
        uint32_t fd = (uint32_t)ev[i].tag;
        uint32_t gen = (uint32_t)(ev[i].tag >> 32);
        if (fd >= l->io.nfds)
            continue;
        corio__fd_entry *e = &l->io.fds[fd];
        if (!e->registered || e->gen != gen)
            continue; /* an event for a file since closed */
        if (ev[i].events & CORIO__POLL_HUP)
            e->hup = 1;
        if (ev[i].events & CORIO__POLL_PRI)
            e->urgent = 1;
        for (int dir = 0; dir < 2; dir++) {
            unsigned bit = dir == CORIO__IO_IN ? CORIO__POLL_IN : CORIO__POLL_OUT;
            if (!(ev[i].events & bit))
                continue;
            e->ready |= (uint8_t)(1u << dir);
            if (e->waiter[dir])
                corio__task_fire(e->waiter[dir], e->token[dir], 0);
        }
    }
}

/* Bump fd's generation; if tasks wait on it beyond the `woken` this
 * loop has just failed itself, have every loop of the caller's runtime
 * look for them (corio__io_sweep_closed). Their loops' tables are their
 * own, and the kernel drops a closed file's pending events, even one a
 * corio_shutdown() just raised, so nothing else would wake them. */
static void invalidate(int fd, unsigned woken)
{
    /* Made now if need be: a task of another loop may register the number
     * while the close is under way. Without memory for it, the number has
     * no generation to make odd (corio__fd_closed then does nothing). */
    _Atomic uint32_t *slot = gen_slot(fd, true);
    if (!slot)
        return;
    /* Odd until corio__fd_closed: nobody registers the number meanwhile
     * (ensure_registered). */
    atomic_fetch_add(slot, 1);
    _Atomic uint32_t *waiting = fd_slot(&fd_waiting_pages, fd, false);
    if (!waiting || atomic_load(waiting) <= woken)
        return;
    atomic_fetch_add(&remote_closes, 1);
    corio__runtime *rt = corio__runtime_current();
    if (rt)
        corio__runtime_wake_all(rt);
}

void corio__fd_invalidate(int fd)
{
    if (fd < 0 || fd >= CORIO__FD_MAX)
        return;
    invalidate(fd, 0);
}

/* fd is closed: fail this loop's waiters on it with CORIO_EBADF and
 * forget the registration (the kernel has dropped it). How many were
 * woken. */
static unsigned drop_entry(corio__loop *l, corio__fd_entry *e)
{
    unsigned woken = 0;
    for (int dir = 0; dir < 2; dir++) {
        if (e->waiter[dir]) {
            corio__task_fire(e->waiter[dir], e->token[dir], CORIO_EBADF);
            woken++;
        }
        /* Free the slot now: the number may be reused, and waited on, by
         * a task that runs before the one just woken. */
        e->waiter[dir] = NULL;
    }
    if (e->registered && !e->direct)
        l->io.registered--;
    e->registered = 0;
    e->ready = 0;
    return woken;
}

void corio__io_forget(corio__loop *l, int fd)
{
    if (fd < 0 || fd >= CORIO__FD_MAX)
        return;
    unsigned woken = 0;
    if ((uint32_t)fd < l->io.nfds)
        woken = drop_entry(l, &l->io.fds[fd]);
    invalidate(fd, woken);
}

void corio__fd_closed(int fd)
{
    if (fd < 0 || fd >= CORIO__FD_MAX)
        return;
    _Atomic uint32_t *slot = gen_slot(fd, false);
    /* Even again, only if invalidate made it odd (it had the page). */
    if (slot && (atomic_load(slot) & 1))
        atomic_fetch_add(slot, 1);
}

bool corio__io_closes_pending(const corio__io *io)
{
    return atomic_load(&remote_closes) != io->closes_seen;
}

void corio__io_sweep_closed(corio__loop *l)
{
    l->io.closes_seen = atomic_load(&remote_closes);
    for (uint32_t fd = 0; fd < l->io.nfds; fd++) {
        corio__fd_entry *e = &l->io.fds[fd];
        if ((e->waiter[0] || e->waiter[1]) && e->gen != gen_now((int)fd))
            drop_entry(l, e);
    }
}

void corio__io_coop(corio_task *self)
{
    corio__loop *l = self->home;
    if (--l->coop_budget > 0)
        return;
    l->coop_budget = COOP_BUDGET;
    corio__yield_now(self);
}
