/*
 * io.c: descriptor readiness per loop (see io.h).
 */
#define _GNU_SOURCE
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

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

void corio__fd_gens_destroy(corio__fd_gens *g)
{
    for (size_t i = 0; i < CORIO__FD_MAX / CORIO__FD_GEN_PAGE; i++) {
        _Atomic uint32_t *page = atomic_load_explicit(&g->pages[i], memory_order_relaxed);
        corio__free((void *)page);
        atomic_store_explicit(&g->pages[i], NULL, memory_order_relaxed);
    }
}

/* The generation slot of fd, allocating its page on first use. */
static _Atomic uint32_t *gen_slot(corio__fd_gens *g, int fd)
{
    size_t page_index = (size_t)fd / CORIO__FD_GEN_PAGE;
    _Atomic uint32_t *page = atomic_load_explicit(&g->pages[page_index], memory_order_acquire);
    if (!page) {
        _Atomic uint32_t *fresh = corio__calloc(CORIO__FD_GEN_PAGE, sizeof *fresh);
        if (!fresh)
            return NULL;
        if (atomic_compare_exchange_strong_explicit(&g->pages[page_index], &page, fresh,
                                                    memory_order_acq_rel, memory_order_acquire))
            page = fresh;
        else
            corio__free((void *)fresh);
    }
    return &page[(size_t)fd % CORIO__FD_GEN_PAGE];
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

/* Is fd a byte stream, where a short read proves the buffer drained?
 * (Not so for datagrams: one read returns one datagram.) */
static bool is_stream(int fd)
{
    int type;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0)
        return type == SOCK_STREAM;
    struct stat st;
    return errno == ENOTSOCK && fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode);
}

/* Make sure fd is registered with this loop under its current generation. */
static int ensure_registered(corio__loop *l, corio__fd_entry *e, int fd)
{
    _Atomic uint32_t *slot = gen_slot(&l->rt->fd_gens, fd);
    if (!slot)
        return CORIO_ENOMEM;
    uint32_t gen = atomic_load_explicit(slot, memory_order_acquire);
    if (e->registered && e->gen == gen)
        return 0;
    /* corio waits only on non-blocking descriptors. */
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0)
        return -errno;
    if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
        return -errno;
    int rc = corio__poll_add(&l->poll, fd, TAG(fd, gen));
    if (rc != 0)
        return rc;
    if (!e->registered)
        l->io.registered++;
    e->registered = 1;
    e->gen = gen;
    e->ready = 0;
    e->hup = 0;
    e->stream = is_stream(fd);
    return 0;
}

int corio__io_prepare(corio__loop *l, int fd)
{
    if (fd < 0 || fd >= CORIO__FD_MAX)
        return CORIO_EBADF;
    corio__fd_entry *e = entry_of(&l->io, fd);
    if (!e)
        return CORIO_ENOMEM;
    return ensure_registered(l, e, fd);
}

int corio__io_wait(corio_task *self, int fd, int dir, corio_time_t deadline,
                   enum corio__wait_kind what)
{
    if (fd < 0 || fd >= CORIO__FD_MAX)
        return CORIO_EBADF;
    corio__loop *l = self->home;
    corio__fd_entry *e = entry_of(&l->io, fd);
    if (!e)
        return CORIO_ENOMEM;
    int rc = ensure_registered(l, e, fd);
    if (rc != 0)
        return rc;
    /* The caller just saw EAGAIN: whatever we knew is out of date. */
    e->ready &= (uint8_t) ~(1u << dir);
    if (e->waiter[dir])
        return CORIO_EBUSY;
    uint64_t token;
    rc = corio__wait_arm(self, &token);
    if (rc != 0)
        return rc;
    e->waiter[dir] = self;
    e->token[dir] = token;
    rc = corio__wait_commit(self, token, deadline, what);
    /* The table may have moved while we slept (another fd grew it). */
    e = &l->io.fds[fd];
    if (e->waiter[dir] == self)
        e->waiter[dir] = NULL;
    return rc;
}

bool corio__io_known_unready(corio__loop *l, int fd, int dir)
{
    if ((uint32_t)fd >= l->io.nfds)
        return false;
    corio__fd_entry *e = &l->io.fds[fd];
    return e->registered && e->stream && !e->hup && !(e->ready & (1u << dir));
}

void corio__io_note_read(corio__loop *l, int fd, size_t n, size_t asked)
{
    if ((uint32_t)fd >= l->io.nfds || !l->io.fds[fd].stream)
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

void corio__io_forget_remote(corio__runtime *rt, int fd)
{
    if (fd < 0 || fd >= CORIO__FD_MAX)
        return;
    _Atomic uint32_t *slot = gen_slot(&rt->fd_gens, fd);
    if (slot)
        atomic_fetch_add_explicit(slot, 1, memory_order_acq_rel);
}

void corio__io_forget(corio__loop *l, int fd)
{
    if (fd < 0 || fd >= CORIO__FD_MAX)
        return;
    corio__io_forget_remote(l->rt, fd);
    if ((uint32_t)fd >= l->io.nfds)
        return;
    corio__fd_entry *e = &l->io.fds[fd];
    for (int dir = 0; dir < 2; dir++)
        if (e->waiter[dir])
            corio__task_fire(e->waiter[dir], e->token[dir], CORIO_EBADF);
    if (e->registered)
        l->io.registered--;
    e->registered = 0;
    e->ready = 0;
}

void corio__io_coop(corio_task *self)
{
    corio__loop *l = self->home;
    if (--l->coop_budget > 0)
        return;
    l->coop_budget = COOP_BUDGET;
    corio__yield_now(self);
}
