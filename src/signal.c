/*
 * signal.c: waiting for a signal in a task (corio_signal_wait).
 *
 * Each wait reads a signalfd of its own, made for the call's set and
 * closed on the way out, through the loop's descriptor machinery like any
 * other read. The kernel hands a pending signal to the first signalfd
 * read that asks for it; every other waiter for the same signal sees its
 * descriptor readable, reads nothing (EAGAIN) and waits on, so each
 * arrival goes to one waiter. A signalfd per call, not one per runtime
 * for every set, keeps waits with different sets apart at the cost of
 * two system calls per wait: signals are rare.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <sys/signalfd.h>

#include "corio.h"
#include "loop.h"
#include "sys.h"
#include "task.h"

/* Is every signal of `set` blocked in the calling thread? An unblocked
 * one would never reach the signalfd here: the thread would take it the
 * usual way, which the caller surely did not mean. (Other threads'
 * masks cannot be read; corio.h asks for the same mask everywhere.) */
static int check_blocked(const sigset_t *set)
{
    sigset_t blocked;
    if (pthread_sigmask(SIG_BLOCK, NULL, &blocked) != 0)
        return CORIO_EINVAL;
    bool any = false;
    for (int sig = 1; sig < NSIG; sig++) {
        /* Never blockable, and a signalfd ignores them: a set from
         * sigfillset() means "every signal I blocked". */
        if (sig == SIGKILL || sig == SIGSTOP || sigismember(set, sig) != 1)
            continue;
        if (sigismember(&blocked, sig) != 1)
            return CORIO_EINVAL;
        any = true;
    }
    return any ? 0 : CORIO_EINVAL;
}

int corio_signal_wait(const sigset_t *set, int *signo, corio_time_t deadline)
{
    if (!corio__current_task())
        return CORIO_EPERM;
    if (!set || !signo)
        return CORIO_EINVAL;
    int rc = check_blocked(set);
    if (rc != 0)
        return rc;
    int fd = corio__signalfd(set);
    if (fd < 0)
        return fd;
    struct signalfd_siginfo info;
    ssize_t n = corio_read_until(fd, &info, sizeof info, deadline);
    (void)corio_close(fd);
    if (n < 0)
        return (int)n;
    if ((size_t)n != sizeof info)
        return CORIO_EIO; /* the kernel reads whole records */
    *signo = (int)info.ssi_signo;
    return 0;
}
