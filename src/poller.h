/*
 * poller.h: the readiness backend behind each loop.
 *
 * A handful of functions, implemented once per backend and chosen in
 * exactly one place (CMakeLists.txt). Today that is poll_epoll.c:
 * edge-triggered epoll, one instance per loop, plus an eventfd that other
 * threads write to wake a parked loop. io_uring could come later behind
 * the same functions, as a second backend, never as the only one.
 */
#ifndef CORIO_POLLER_H
#define CORIO_POLLER_H

#include <stdint.h>
#include <time.h>

#define CORIO__POLL_IN 1u  /* readable, or hung up / in error */
#define CORIO__POLL_OUT 2u /* writable, or hung up / in error */
#define CORIO__POLL_HUP 4u /* peer closed or reset, or an error is pending */
#define CORIO__POLL_PRI 8u /* urgent (out-of-band) data: reads stop short at its mark */

typedef struct corio__poll {
    int epfd;
    int wakefd;
} corio__poll;

typedef struct corio__poll_event {
    uint64_t tag;    /* what corio__poll_add was given */
    unsigned events; /* CORIO__POLL_IN | CORIO__POLL_OUT */
} corio__poll_event;

int corio__poll_init(corio__poll *p);
void corio__poll_destroy(corio__poll *p);
/* Watch fd for both directions, edge-triggered, reporting `tag`. If fd is
 * already watched (a stale registration of a reused descriptor), the
 * registration is replaced. 0 or a negative errno. */
int corio__poll_add(corio__poll *p, int fd, uint64_t tag);
/* Wait up to `timeout` (NULL: forever, {0,0}: just look) and fill `out`.
 * Wake-ups through corio__poll_wake are consumed here and not reported.
 * Returns the number of events, 0 on timeout or wake-up. */
int corio__poll_wait(corio__poll *p, const struct timespec *timeout, corio__poll_event *out,
                     int max);
/* Make a concurrent or future corio__poll_wait return. Any thread. */
void corio__poll_wake(corio__poll *p);

#endif /* CORIO_POLLER_H */
