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
 * generation count for the number, one table for the whole process (the
 * numbers are the process's, and corio_close may be called from any
 * thread, inside a runtime or not); a loop whose entry carries an older
 * generation registers the descriptor again before waiting, events carry
 * the generation so a late event for the old file is ignored, and a task
 * woken by readiness that finds the generation changed under it gets
 * CORIO_EBADF instead of using whatever file now has the number. While
 * any corio_close of a number is under way (several may overlap: closed,
 * reused, closed again), no loop registers it: a task that would wait on
 * it pauses until they are done. A
 * descriptor closed with plain close() instead leaves stale entries
 * behind: hence the rule that descriptors corio waits on are closed with
 * corio_close().
 *
 * Files epoll cannot watch (regular files, directories: epoll_ctl says
 * EPERM) are "direct": always ready, so the calls just make the system
 * call, which never says EAGAIN for them. A slow disk then holds the
 * loop, as it would any C program; corio_run_blocking is for that.
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
    uint8_t registered;   /* in this loop's epoll, or direct */
    uint8_t ready;        /* bit per direction: known ready */
    uint8_t tcp : 1;      /* TCP socket: a short read means drained */
    uint8_t hup : 1;      /* end of stream, reset or error seen: no edge
                           * will follow, always try the system call */
    uint8_t direct : 1;   /* epoll cannot watch it: never wait, just call */
    uint8_t urgent : 1;   /* urgent data seen: a TCP read stops short at its
                           * mark with data queued behind it, so a short
                           * read proves nothing drained any more */
    struct corio_task *waiter[2]; /* waiting per direction, and its wait's
                                   * token; stale once the task's wait
                                   * word left the token (io.c, slot_stale) */
    uint64_t token[2];
} corio__fd_entry;

typedef struct corio__io {
    corio__fd_entry *fds; /* indexed by descriptor number, grown on demand */
    uint32_t nfds;
    uint32_t registered;  /* descriptors registered: poll only if any */
    uint64_t closes_seen; /* closes of others' waited numbers, swept up to */
} corio__io;

void corio__io_init(corio__io *io);
void corio__io_destroy(corio__io *io);

/*
 * Wait until fd is ready in direction dir (CORIO__IO_IN/OUT), the deadline
 * passes or the task is cancelled. Call after the system call said EAGAIN.
 * 0, CORIO_ETIMEDOUT, CORIO_ECANCELED, CORIO_EBADF (fd closed meanwhile or
 * out of range), CORIO_EBUSY (another task of this loop waits on the same
 * fd and direction; one whose wait has ended, not run yet, does not),
 * CORIO_ENOMEM, CORIO_EOPNOTSUPP (a direct file: it can never become
 * ready by waiting).
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
/* A TCP read returned less than asked (n > 0): the descriptor is
 * drained. n == 0: end of stream, never skip a read again. Not for reads
 * that leave the data queued (MSG_PEEK); reads of another queue
 * (MSG_ERRQUEUE, MSG_OOB) never come here (net.c, read_other_queue). */
void corio__io_note_read(struct corio__loop *l, int fd, size_t n, size_t asked);

/* Scheduler: deliver polled events to waiting tasks. */
void corio__io_dispatch(struct corio__loop *l, const corio__poll_event *ev, int n);
/* corio_close on a loop: forget fd on this loop, fail its waiters here
 * with CORIO_EBADF, and invalidate it on every loop of every runtime.
 * Returns whether the close was counted as under way (io.c: until
 * corio__fd_closed, no loop registers the number). */
bool corio__io_forget(struct corio__loop *l, int fd);

/* corio_close from any other thread: invalidate fd everywhere. The same
 * result. */
bool corio__fd_invalidate(int fd);
/* After either of those and the close(2) itself, with what it returned:
 * the close is no longer under way (once no other close of the number
 * is, loops may register it again: io.c, ensure_registered). */
void corio__fd_closed(int fd, bool counted);
/*
 * A close of a number that tasks wait on elsewhere (another loop,
 * another runtime) sets this on every loop; it wakes the loops of the
 * closer's runtime. The loop then runs corio__io_sweep_closed, which
 * fails its waiters on closed numbers with CORIO_EBADF: they would
 * otherwise wait for an event the close took with it.
 */
bool corio__io_closes_pending(const corio__io *io);
void corio__io_sweep_closed(struct corio__loop *l);

/* Cooperative budget: every IO call that completes without blocking
 * spends one unit; when the loop's budget runs out the task yields, so a
 * task on a fast stream cannot starve its loop. */
void corio__io_coop(struct corio_task *self);

#endif /* CORIO_IO_H */
