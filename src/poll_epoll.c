/*
 * poll_epoll.c: the epoll backend (see poller.h).
 *
 * Edge-triggered: a descriptor is registered once, for both directions,
 * and reports only transitions to ready. The io layer (io.c) keeps each
 * descriptor's readiness and always tries the system call first, so an
 * edge is never needed twice. The wake-up eventfd is registered with a tag
 * no descriptor can have.
 */
#define _GNU_SOURCE
#include "poller.h"

#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "sys.h"

#define WAKE_TAG UINT64_MAX

int corio__poll_init(corio__poll *p)
{
    p->epfd = p->wakefd = -1;
    p->epfd = corio__epoll_create();
    if (p->epfd < 0)
        return -errno;
    p->wakefd = corio__eventfd();
    if (p->wakefd < 0) {
        int rc = -errno;
        corio__poll_destroy(p);
        return rc;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = WAKE_TAG};
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->wakefd, &ev) != 0) {
        int rc = -errno;
        corio__poll_destroy(p);
        return rc;
    }
    return 0;
}

void corio__poll_destroy(corio__poll *p)
{
    if (p->wakefd >= 0)
        corio__close(p->wakefd);
    if (p->epfd >= 0)
        corio__close(p->epfd);
    p->wakefd = p->epfd = -1;
}

int corio__poll_add(corio__poll *p, int fd, uint64_t tag)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET,
                             .data.u64 = tag};
    if (corio__fault(ENOMEM))
        return -ENOMEM;
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) == 0)
        return 0;
    if (errno == EEXIST && epoll_ctl(p->epfd, EPOLL_CTL_MOD, fd, &ev) == 0)
        return 0;
    return -errno;
}

int corio__poll_wait(corio__poll *p, const struct timespec *timeout, corio__poll_event *out,
                     int max)
{
    struct epoll_event evs[128];
    if (max > 128)
        max = 128;
    int n = corio__epoll_wait(p->epfd, evs, max, timeout);
    int got = 0;
    for (int i = 0; i < n; i++) {
        if (evs[i].data.u64 == WAKE_TAG) {
            uint64_t v;
            ssize_t r = read(p->wakefd, &v, sizeof v);
            (void)r;
            continue;
        }
        unsigned e = 0;
        if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            e |= CORIO__POLL_IN;
        if (evs[i].events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
            e |= CORIO__POLL_OUT;
        if (evs[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            e |= CORIO__POLL_HUP;
        if (evs[i].events & EPOLLPRI)
            e |= CORIO__POLL_PRI;
        out[got].tag = evs[i].data.u64;
        out[got].events = e;
        got++;
    }
    return got;
}

void corio__poll_wake(corio__poll *p)
{
    uint64_t one = 1;
    /* Fails only with EAGAIN, when the counter is about to overflow (the
     * loop reads it at every wake-up, so never in practice): it is
     * non-zero then, and the loop wakes anyway. */
    ssize_t w = write(p->wakefd, &one, sizeof one);
    (void)w;
}
