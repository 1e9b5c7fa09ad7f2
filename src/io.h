/*
 * io.h: waiting for descriptors, per loop.
 *
 * A task waits for a descriptor on its home loop, through that loop's
 * poll backend. Each loop keeps a table indexed by descriptor number
 * (owner only, no lock): whether the descriptor is registered with this
 * loop's epoll, which directions are known ready, and the one task waiting
 * per direction.
 *
 * Descriptor numbers are reused by the kernel. corio_close() bumps a
 * per-runtime generation count for the number; a loop whose entry carries
 * an older generation registers the descriptor again before waiting, and
 * events carry the generation so a late event for the old file is
 * ignored. A descriptor closed with plain close() instead leaves stale
 * entries behind: hence the rule that descriptors corio waits on are
 * closed with corio_close().
 */
#ifndef CORIO_IO_H
#define CORIO_IO_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "corio.h"
#include "poller.h"
#include "wait_kind.h"

struct corio__loop;
struct corio__runtime;
struct corio_task;

#define CORIO__IO_IN 0
#define CORIO__IO_OUT 1

/* Descriptor numbers corio can wait on: below 2^20 (a million). */
#define CORIO__FD_MAX (1 << 20)

typedef struct corio__fd_entry {
    uint32_t gen;         /* generation when registered */
    uint8_t registered;   /* in this loop's epoll */
    uint8_t ready;        /* bit per direction: known ready */
    uint8_t stream;       /* byte stream: a short read means drained */
    uint8_t hup;          /* end of stream, reset or error seen: no edge
                           * will follow, always try the system call */
    struct corio_task *waiter[2];
    uint64_t token[2];
} corio__fd_entry;

typedef struct corio__io {
    corio__fd_entry *fds; /* indexed by descriptor number, grown on demand */
    uint32_t nfds;
    uint32_t registered;  /* descriptors registered: poll only if any */
} corio__io;

/* Per-runtime descriptor generations: two levels, pages allocated on
 * first use with a CAS, so any loop can read and corio_close can bump
 * without a lock. */
#define CORIO__FD_GEN_PAGE 4096
typedef struct corio__fd_gens {
    _Atomic(_Atomic uint32_t *) pages[CORIO__FD_MAX / CORIO__FD_GEN_PAGE];
} corio__fd_gens;

void corio__io_init(corio__io *io);
void corio__io_destroy(corio__io *io);
void corio__fd_gens_destroy(corio__fd_gens *g);

/*
 * Wait until fd is ready in direction dir (CORIO__IO_IN/OUT), the deadline
 * passes or the task is cancelled. Call after the system call said EAGAIN.
 * 0, CORIO_ETIMEDOUT, CORIO_ECANCELED, CORIO_EBADF (fd closed meanwhile or
 * out of range), CORIO_EBUSY (another task of this loop waits on the same
 * fd and direction), CORIO_ENOMEM.
 */
int corio__io_wait(struct corio_task *self, int fd, int dir, corio_time_t deadline,
                   enum corio__wait_kind what);
/*
 * Before the first system call on fd in a call: make sure this loop has
 * fd registered (and so non-blocking: a blocking descriptor would block
 * the whole loop thread). 0, or an error for the caller to return.
 */
int corio__io_prepare(struct corio__loop *l, int fd);
/* Is fd known not ready in dir (so the system call can be skipped)? */
bool corio__io_known_unready(struct corio__loop *l, int fd, int dir);
/* A stream read returned less than asked (n > 0): the descriptor is
 * drained. n == 0: end of stream, never skip a read again. */
void corio__io_note_read(struct corio__loop *l, int fd, size_t n, size_t asked);

/* Scheduler: deliver polled events to waiting tasks. */
void corio__io_dispatch(struct corio__loop *l, const corio__poll_event *ev, int n);
/* corio_close: forget fd on this loop, fail its waiters here with
 * CORIO_EBADF, and invalidate it on every loop. */
void corio__io_forget(struct corio__loop *l, int fd);

/* corio_close from a thread that is not a loop: invalidate fd everywhere. */
void corio__io_forget_remote(struct corio__runtime *rt, int fd);

/* Cooperative budget: every IO call that completes without blocking
 * spends one unit; when the loop's budget runs out the task yields, so a
 * task on a fast stream cannot starve its loop. */
void corio__io_coop(struct corio_task *self);

#endif /* CORIO_IO_H */
