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
 * Descriptor states, one table for the process (io.h): two levels,
 * pages allocated on first use with a CAS, so any thread can read and
 * change them without a lock. Pages live as long as the process:
 * runtimes may run side by side, and a descriptor outlives the runtime
 * that opened it. At most 8 MiB, for a process that used every number
 * below 2^20.
 *
 * A number's state is one word: its generation in the high half (bumped
 * by every corio_close, carried by its epoll events), and in the low
 * half how many corio_close calls of the number are under way (counted
 * from before the generation bump to after close(2) returned). One word,
 * changed by one atomic add, so that a reader sees both as one: the
 * number is being closed exactly while the count is not 0, however many
 * closes overlap (a number closed, reused and closed again before the
 * first close has returned). An odd/even generation could not say so:
 * two bumps in flight made it even while the second close was still
 * under way.
 */
#define FD_GEN_PAGE 4096
#define FD_GEN_ONE ((uint64_t)1 << 32)
#define FD_CLOSES_MASK (FD_GEN_ONE - 1)
typedef _Atomic(void *) fd_pages[CORIO__FD_MAX / FD_GEN_PAGE];
static fd_pages fd_state_pages;
/* Tasks waiting on each number, on any loop of any runtime: a close
 * that sees some it has not woken itself must have their loops look
 * (corio__fd_invalidate). Same layout as the states, 32-bit counts. */
static fd_pages fd_waiting_pages;
/* Bumped by each such close; a loop that sees it change looks for its
 * waiters on closed numbers (corio__io_sweep_closed). */
static _Atomic uint64_t remote_closes;

/* The page of `pages` that holds fd, of `size`-byte slots; allocated on
 * first use if `create`, otherwise NULL means nobody has registered (or
 * waited on, or closed) this number yet.
 *
 * Published and read sequentially consistent, not just release/acquire:
 * a waiting page is part of the waiter/closer handshake (corio__io_wait,
 * invalidate). The first waiter of a page publishes it, counts itself and
 * reads the generation; a close bumps the generation and then looks the
 * page up. With acquire only, C11 lets the close read the page as absent
 * while the waiter reads the old generation, and nobody wakes the
 * waiter's loop. x86 cannot do it (both RMWs are locked instructions);
 * arm64 can where acquire loads compile to LDAPR (armv8.3 targets and
 * later), which may pass the close's earlier store-release. The same code
 * on x86; LDAR, not LDAPR, on arm64; once per wait and close. */
static void *fd_page(fd_pages *pages, int fd, size_t size, bool create)
{
    _Atomic(void *) *pagep = &(*pages)[(size_t)fd / FD_GEN_PAGE];
    void *page = atomic_load(pagep);
    if (!page && create) {
        void *fresh = corio__calloc_permanent(FD_GEN_PAGE, size);
        if (!fresh)
            return NULL;
        if (atomic_compare_exchange_strong(pagep, &page, fresh))
            page = fresh;
        else
            corio__free_permanent(fresh);
    }
    return page;
}

static _Atomic uint64_t *state_slot(int fd, bool create)
{
    _Atomic uint64_t *page = fd_page(&fd_state_pages, fd, sizeof *page, create);
    return page ? &page[(size_t)fd % FD_GEN_PAGE] : NULL;
}

static _Atomic uint32_t *waiting_slot(int fd, bool create)
{
    _Atomic uint32_t *page = fd_page(&fd_waiting_pages, fd, sizeof *page, create);
    return page ? &page[(size_t)fd % FD_GEN_PAGE] : NULL;
}

static uint32_t gen_of(uint64_t state) { return (uint32_t)(state >> 32); }

/* fd's generation now (0 before anything was registered under it). */
static uint32_t gen_now(int fd)
{
    _Atomic uint64_t *slot = state_slot(fd, false);
    return slot ? gen_of(atomic_load(slot)) : 0;
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

/* ensure_registered: the number is being closed (a close is counted in
 * its state). */
#define FD_CLOSING 1

/* Make sure fd is registered with this loop under its current generation. */
static int ensure_registered(corio__loop *l, corio__fd_entry *e, int fd)
{
    _Atomic uint64_t *slot = state_slot(fd, true);
    if (!slot)
        return CORIO_ENOMEM;
    uint64_t state = atomic_load(slot);
    /* Another thread is inside corio_close of this number. Until every
     * such close is done the number may name a file being closed (whose
     * kernel registration the close will take, waiter or not) or, once
     * the kernel has let the number go, a new file: register neither. */
    if (state & FD_CLOSES_MASK)
        return FD_CLOSING;
    uint32_t gen = gen_of(state);
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

/* Pauses of a wait that found its number being closed: from 50 us (a
 * close(2) usually takes a few) doubling to 16 ms, since a lingering
 * socket's close (SO_LINGER) can take seconds and no event announces
 * its end. A task that only yielded kept its loop's thread running
 * for all that time. */
#define CLOSE_PAUSE_MIN (50 * CORIO_USEC)
#define CLOSE_PAUSE_MAX (16 * CORIO_MSEC)

/*
 * Is the task in e's slot for dir done with the wait it took the slot
 * for? Its wait word moves off the slot's token (ARMED) the moment the
 * wait ends, by readiness, its deadline or a cancellation (wait.c); it
 * clears the slot only later, when it runs again. Until then the slot is
 * nobody's: another task of the loop may take it (the descriptor rules
 * count waiting tasks, and a cancelled or timed-out one has stopped
 * waiting), instead of hearing CORIO_EBUSY from a reader that is gone.
 * The ended waiter, when it runs, leaves a slot that is not its own
 * (corio__io_wait), and a retry of its read after EAGAIN is then the
 * second waiter; dispatch and close fire only the slot's task and
 * token, the new owner's.
 *
 * Safe to read: the task in a slot is alive (it is inside corio__io_wait
 * until it has cleared the slot or found another task there, and a
 * close drops the slot at once), the word is atomic (a canceller on
 * another thread CASes it), and once it has left a token it never comes
 * back to it (arming bumps the generation). The slots are this loop's
 * own: only its thread reads or writes them (an fd wait never moves a
 * migrating task: wait_kind.h, corio__wait_kind_movable, so the ended
 * waiter clears its slot on this thread too); a light task's slot holds
 * its task object, not its frame.
 */
static bool slot_stale(const corio__fd_entry *e, int dir)
{
    return atomic_load(&e->waiter[dir]->wait) != e->token[dir];
}

int corio__io_wait(corio_task *self, int fd, int dir, corio_time_t deadline,
                   enum corio__wait_kind what)
{
    if (fd < 0 || fd >= CORIO__FD_MAX)
        return CORIO_EBADF;
    corio__loop *l;
    corio__fd_entry *e;
    int rc;
    corio_time_t pause = CLOSE_PAUSE_MIN;
    for (;;) {
        l = self->home; /* a migrating task may move while it pauses */
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
         * deadline and cancellation hold meanwhile. */
        rc = corio__pause(self, &pause, CLOSE_PAUSE_MAX, deadline, what);
        if (rc != 0)
            return rc;
    }
    if (rc != 0)
        return rc;
    if (e->direct)
        return CORIO_EOPNOTSUPP;
    /* The caller just saw EAGAIN: whatever we knew is out of date. */
    e->ready &= (uint8_t) ~(1u << dir);
    if (e->waiter[dir] && !slot_stale(e, dir))
        return CORIO_EBUSY;
    uint32_t gen = e->gen;
    _Atomic uint32_t *waiting = waiting_slot(fd, true);
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
    /* Another task may hold the slot by now: ours went stale when our
     * wait ended (slot_stale), or a close dropped it. */
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

/* Count a close of fd as under way and bump its generation; if tasks
 * wait on it beyond the `woken` this loop has just failed itself, have
 * every loop of the caller's runtime look for them
 * (corio__io_sweep_closed). Their loops' tables are their own, and the
 * kernel drops a closed file's pending events, even one a
 * corio_shutdown() just raised, so nothing else would wake them. Whether
 * the close was counted (corio__fd_closed uncounts it). */
static bool invalidate(int fd, unsigned woken)
{
    /* Made now if need be: a task of another loop may register the number
     * while the close is under way. Without memory for it, the number has
     * no state to mark (and nobody can have registered it: that needs the
     * page too). */
    _Atomic uint64_t *slot = state_slot(fd, true);
    if (!slot)
        return false;
    /* Counted until corio__fd_closed: nobody registers the number
     * meanwhile (ensure_registered). The same add bumps the generation,
     * which a wait that registered just before reads again after
     * counting itself as waiting (corio__io_wait). */
    atomic_fetch_add(slot, FD_GEN_ONE + 1);
    _Atomic uint32_t *waiting = waiting_slot(fd, false);
    if (!waiting || atomic_load(waiting) <= woken)
        return true;
    atomic_fetch_add(&remote_closes, 1);
    corio__runtime *rt = corio__runtime_current();
    if (rt)
        corio__runtime_wake_all(rt);
    return true;
}

bool corio__fd_invalidate(int fd)
{
    if (fd < 0 || fd >= CORIO__FD_MAX)
        return false;
    return invalidate(fd, 0);
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

bool corio__io_forget(corio__loop *l, int fd)
{
    if (fd < 0 || fd >= CORIO__FD_MAX)
        return false;
    unsigned woken = 0;
    if ((uint32_t)fd < l->io.nfds)
        woken = drop_entry(l, &l->io.fds[fd]);
    return invalidate(fd, woken);
}

void corio__fd_closed(int fd, bool counted)
{
    if (!counted)
        return;
    /* The page exists: invalidate counted the close in it. */
    atomic_fetch_sub(state_slot(fd, false), 1);
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
