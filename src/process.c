/*
 * process.c: child processes (corio_process_*, corio.h).
 *
 * Starting: posix_spawn, which glibc makes with clone(CLONE_VM |
 * CLONE_VFORK) on a stack of its own. The calling loop is held until the
 * child has exec'd or failed to (the failure comes back as the call's
 * result, with the child already reaped by glibc), and no page table is
 * copied, so the cost does not grow with the parent's memory as fork's
 * does. The child's descriptors are arranged by file actions, run in the
 * child between clone and exec.
 *
 * Waiting: a pidfd, readable once the child has ended, is waited for like
 * any descriptor (corio_wait_fd); waitpid(WNOHANG) then reaps the child.
 * Without a pidfd the wait polls waitpid(WNOHANG) after growing pauses:
 * the other way, a SIGCHLD handler, is process-wide state that a library
 * must not take from the program it lives in.
 *
 * Killing: by pidfd where there is one, which names the process and not a
 * number that may be reused. Without one, kill(2) by number under the lock
 * that reaping also takes: once the number is free, nothing sends to it.
 */
#define _GNU_SOURCE
#include "process.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "corio.h"
#include "sys.h"
#include "task.h"

extern char **environ;

#define KNOWN_FLAGS (CORIO_PROCESS_SEARCH_PATH | CORIO_PROCESS_NEW_GROUP | CORIO_PROCESS_KILL_ON_FREE)
/* The polling wait's pauses: short first, for children that end at once. */
#define POLL_PAUSE_MIN (CORIO_MSEC)
#define POLL_PAUSE_MAX (100 * CORIO_MSEC)

struct corio_process {
    pid_t pid;
    int pidfd;               /* -1: waits poll */
    unsigned flags;
    _Atomic int fds[3];      /* the parent's ends of pipes, -1 where none */
    _Atomic bool waiting;    /* a task is in corio_process_wait */
    pthread_mutex_t lock;    /* orders reaping against kill(2) by number */
    bool reaped;             /* under lock; set once */
    int code;                /* once reaped: exit status or -signal */
    int reap_error;          /* once reaped: 0, or why waitpid failed */
};

static _Atomic bool test_no_pidfd;

void corio__process_test_no_pidfd(bool on)
{
    atomic_store_explicit(&test_no_pidfd, on, memory_order_relaxed);
}

void corio_process_opts_init(corio_process_opts *opts)
{
    *opts = (corio_process_opts){
        .stdio = {CORIO_STDIO_INHERIT, CORIO_STDIO_INHERIT, CORIO_STDIO_INHERIT},
    };
}

/* ---- starting ---- */

/* What a spawn made for the child: the parent's ends of pipes, kept on
 * success, and descriptors the child copies from, closed either way. */
struct spawn_fds {
    int parent[3];
    int source[3];
};

static void close_all(int fds[3])
{
    for (int i = 0; i < 3; i++)
        if (fds[i] >= 0)
            (void)corio__close(fds[i]);
}

static int check_opts(const corio_process_opts *o)
{
    if (o->flags & ~KNOWN_FLAGS)
        return CORIO_EINVAL;
    for (int i = 0; i < 3; i++) {
        if (o->stdio[i] < CORIO_STDIO_NULL)
            return CORIO_EINVAL;
        if (o->stdio[i] >= 0 && fcntl(o->stdio[i], F_GETFD) < 0)
            return CORIO_EBADF;
    }
    return 0;
}

/* A descriptor the child may copy from: numbered 3 or above, so that the
 * file action making one standard descriptor never overwrites what
 * another one's action still has to read. *made: a copy was made. */
static int high_source(int fd, bool *made)
{
    *made = false;
    if (fd >= 3)
        return fd;
    int high = corio__dup_cloexec(fd, 3);
    if (high < 0)
        return -errno;
    *made = true;
    return high;
}

/* A pipe for standard descriptor `which`: the child's end in
 * sf->source[which], the parent's (non-blocking) in sf->parent[which]. */
static int make_pipe(struct spawn_fds *sf, int which)
{
    int ends[2];
    if (corio__pipe_cloexec(ends) != 0)
        return -errno;
    int child = which == 0 ? ends[0] : ends[1];
    sf->parent[which] = which == 0 ? ends[1] : ends[0];
    /* With descriptor 0, 1 or 2 closed in the parent the pipe may take
     * one of those numbers. */
    bool made;
    int source = high_source(child, &made);
    if (source < 0) {
        (void)corio__close(child);
        return source;
    }
    if (made)
        (void)corio__close(child);
    sf->source[which] = source;
    int fl = fcntl(sf->parent[which], F_GETFL);
    if (fl < 0 || fcntl(sf->parent[which], F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

static int plan_stdio(const corio_process_opts *o, posix_spawn_file_actions_t *fa,
                      struct spawn_fds *sf)
{
    for (int i = 0; i < 3; i++) {
        int rc, source;
        switch (o->stdio[i]) {
        case CORIO_STDIO_INHERIT:
            continue;
        case CORIO_STDIO_NULL:
            rc = posix_spawn_file_actions_addopen(fa, i, "/dev/null",
                                                  i == 0 ? O_RDONLY : O_WRONLY, 0);
            if (rc != 0)
                return -rc;
            continue;
        case CORIO_STDIO_PIPE:
            rc = make_pipe(sf, i);
            if (rc != 0)
                return rc;
            source = sf->source[i];
            break;
        default: {
            bool made;
            source = high_source(o->stdio[i], &made);
            if (source < 0)
                return source;
            if (made)
                sf->source[i] = source;
            break;
        }
        }
        rc = posix_spawn_file_actions_adddup2(fa, source, i);
        if (rc != 0)
            return -rc;
    }
    return 0;
}

/* An empty signal mask and SIGPIPE at its default (corio.h says why). */
static int plan_attributes(const corio_process_opts *o, posix_spawnattr_t *attr)
{
    sigset_t none, pipe_only;
    sigemptyset(&none);
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
    int rc = posix_spawnattr_setsigmask(attr, &none);
    if (rc == 0)
        rc = posix_spawnattr_setsigdefault(attr, &pipe_only);
    if (rc == 0 && (o->flags & CORIO_PROCESS_NEW_GROUP)) {
        flags |= POSIX_SPAWN_SETPGROUP;
        rc = posix_spawnattr_setpgroup(attr, 0);
    }
    if (rc == 0)
        rc = posix_spawnattr_setflags(attr, flags);
    return -rc;
}

static int plan_cwd(const corio_process_opts *o, posix_spawn_file_actions_t *fa)
{
    if (!o->cwd)
        return 0;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 29))
    return -posix_spawn_file_actions_addchdir_np(fa, o->cwd);
#else
    (void)fa;
    return CORIO_ENOSYS;
#endif
}

static int start(corio_process *p, char *const argv[], const corio_process_opts *o,
                 struct spawn_fds *sf)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int rc = -posix_spawn_file_actions_init(&fa);
    if (rc != 0)
        return rc;
    rc = -posix_spawnattr_init(&attr);
    if (rc != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return rc;
    }
    /* The directory first: a relative argv[0] is then found from it, as
     * Python's subprocess finds it. */
    rc = plan_cwd(o, &fa);
    if (rc == 0)
        rc = plan_stdio(o, &fa, sf);
    if (rc == 0)
        rc = plan_attributes(o, &attr);
    if (rc == 0)
        rc = -corio__posix_spawn(&p->pid, argv[0], &fa, &attr, argv,
                                 o->envp ? o->envp : environ,
                                 o->flags & CORIO_PROCESS_SEARCH_PATH);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

/* waitid's P_PIDFD (Linux 5.4), which older headers lack. */
#define IDTYPE_PIDFD ((idtype_t)3)

/* The pidfd was opened by number. Had a program that reaps children
 * elsewhere (SIGCHLD ignored, waitpid(-1)) reaped this one already, the
 * number may have gone to another process, which the pidfd would then
 * name, and kill would reach. Still our child now (running or ended,
 * not reaped) means it was ours when the pidfd was opened. Not ours: the
 * child is gone, so waits say CORIO_ECHILD and kill CORIO_ESRCH. A kernel
 * without P_PIDFD (EINVAL, 5.3) keeps the pidfd unchecked. */
static void check_pidfd_names_child(corio_process *p)
{
    siginfo_t info;
    if (waitid(IDTYPE_PIDFD, (id_t)p->pidfd, &info, WEXITED | WNOHANG | WNOWAIT) == 0 ||
        errno != ECHILD)
        return;
    (void)corio__close(p->pidfd);
    p->pidfd = -1;
    p->reaped = true;
    p->reap_error = CORIO_ECHILD;
}

int corio_process_spawn(corio_process **out, char *const argv[], const corio_process_opts *opts)
{
    corio_process_opts defaults;
    if (!opts) {
        corio_process_opts_init(&defaults);
        opts = &defaults;
    }
    if (!out || !argv || !argv[0])
        return CORIO_EINVAL;
    int rc = check_opts(opts);
    if (rc != 0)
        return rc;
    /* Everything that can fail comes before the child exists: after it,
     * nothing may, or a running child would be lost. */
    corio_process *p = corio__malloc(sizeof *p);
    if (!p)
        return CORIO_ENOMEM;
    *p = (corio_process){.pid = -1, .pidfd = -1, .flags = opts->flags};
    pthread_mutex_init(&p->lock, NULL);
    struct spawn_fds sf = {.parent = {-1, -1, -1}, .source = {-1, -1, -1}};
    rc = start(p, argv, opts, &sf);
    close_all(sf.source);
    if (rc != 0) {
        close_all(sf.parent);
        pthread_mutex_destroy(&p->lock);
        corio__free(p);
        return rc;
    }
    for (int i = 0; i < 3; i++)
        atomic_init(&p->fds[i], sf.parent[i]);
    /* No pidfd (old kernel, no descriptor left): waits poll instead. */
    if (!atomic_load_explicit(&test_no_pidfd, memory_order_relaxed))
        p->pidfd = corio__pidfd_open(p->pid);
    if (p->pidfd >= 0)
        check_pidfd_names_child(p);
    *out = p;
    return 0;
}

/* ---- the handle ---- */

pid_t corio_process_pid(const corio_process *p)
{
    return p ? p->pid : -1;
}

int corio_process_fd(const corio_process *p, int which)
{
    if (!p || which < 0 || which > 2)
        return -1;
    return atomic_load_explicit(&((corio_process *)p)->fds[which], memory_order_acquire);
}

int corio_process_close_fd(corio_process *p, int which)
{
    if (!p || which < 0 || which > 2)
        return CORIO_EBADF;
    int fd = atomic_exchange_explicit(&p->fds[which], -1, memory_order_acq_rel);
    return fd < 0 ? CORIO_EBADF : corio_close(fd);
}

int corio_process_kill(corio_process *p, int sig)
{
    if (!p || sig < 0 || sig >= NSIG)
        return CORIO_EINVAL;
    pthread_mutex_lock(&p->lock);
    int rc;
    if (p->reaped)
        rc = CORIO_ESRCH;
#ifdef SYS_pidfd_send_signal
    else if (p->pidfd >= 0)
        rc = syscall(SYS_pidfd_send_signal, p->pidfd, sig, NULL, 0) == 0 ? 0 : -errno;
#endif
    else
        rc = kill(p->pid, sig) == 0 ? 0 : -errno;
    pthread_mutex_unlock(&p->lock);
    return rc;
}

/* ---- waiting ---- */

/* Reap the child if it has ended: true once it is reaped (by this call or
 * an earlier one, or found reaped elsewhere: reap_error). Not inlined into
 * the waits: it reads errno, whose address a migrating task must not
 * carry across their waits (corio.h, CORIO_TASK_MIGRATE). */
__attribute__((noinline)) static bool try_reap(corio_process *p)
{
    pthread_mutex_lock(&p->lock);
    if (!p->reaped) {
        int status;
        pid_t r;
        do
            r = waitpid(p->pid, &status, WNOHANG);
        while (r < 0 && errno == EINTR);
        if (r < 0) {
            p->reap_error = -errno;
            p->reaped = true;
        } else if (r > 0) {
            p->code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
            p->reaped = true;
        }
    }
    bool reaped = p->reaped;
    pthread_mutex_unlock(&p->lock);
    return reaped;
}

static int wait_pidfd(corio_task *self, corio_process *p, corio_time_t deadline)
{
    while (!try_reap(p)) {
        int rc = corio_wait_fd(p->pidfd, CORIO_READABLE, deadline);
        if (rc != 0)
            return rc;
        /* Readable means ended, and an ended child can be reaped; should a
         * kernel ever say so a moment early, pause rather than spin. */
        if (!try_reap(p)) {
            corio_time_t pause = POLL_PAUSE_MIN;
            rc = corio__pause(self, &pause, POLL_PAUSE_MIN, deadline, CORIO__WAITS_SLEEP);
            if (rc != 0)
                return rc;
        }
    }
    return 0;
}

static int wait_polling(corio_task *self, corio_process *p, corio_time_t deadline)
{
    corio_time_t pause = POLL_PAUSE_MIN;
    while (!try_reap(p)) {
        int rc = corio__pause(self, &pause, POLL_PAUSE_MAX, deadline, CORIO__WAITS_SLEEP);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int corio_process_wait_until(corio_process *p, int *code, corio_time_t deadline)
{
    corio_task *self;
    int rc = corio__enter_call(&self);
    if (rc != 0)
        return rc;
    if (!p || !code)
        return CORIO_EINVAL;
    if (atomic_exchange_explicit(&p->waiting, true, memory_order_acquire))
        return CORIO_EBUSY;
    rc = p->pidfd >= 0 ? wait_pidfd(self, p, deadline) : wait_polling(self, p, deadline);
    if (rc == 0) {
        rc = p->reap_error;
        if (rc == 0)
            *code = p->code;
    }
    atomic_store_explicit(&p->waiting, false, memory_order_release);
    return rc;
}

int corio_process_wait(corio_process *p, int *code)
{
    return corio_process_wait_until(p, code, CORIO_FOREVER);
}

/* ---- freeing ---- */

static void release(corio_process *p)
{
    if (p->pidfd >= 0)
        (void)corio_close(p->pidfd);
    pthread_mutex_destroy(&p->lock);
    corio__free(p);
}

/* A detached task's whole job: wait for a freed handle's child, then
 * release the handle. Only the runtime's shutdown ends the job early
 * (leaving a zombie, corio.h); a wait that found no memory (a light
 * task's save buffer, the descriptor table, a timer) is tried again
 * after a pause, or the child would stay a zombie while the runtime
 * runs (found by review). */
static void *reaper(void *arg)
{
    corio_process *p = arg;
    int code;
    corio_time_t pause = POLL_PAUSE_MIN;
    while (corio_process_wait(p, &code) == CORIO_ENOMEM) {
        int rc = corio__pause(corio__current_task(), &pause, POLL_PAUSE_MAX, CORIO_FOREVER,
                              CORIO__WAITS_SLEEP);
        if (rc == CORIO_ENOMEM)
            rc = corio_yield();
        if (rc == CORIO_ECANCELED || rc == CORIO_ESHUTDOWN)
            break;
    }
    release(p);
    return NULL;
}

/* The reaper dropped by shutdown before it ran. */
static void reaper_discarded(void *arg, int error)
{
    (void)error;
    release(arg);
}

static bool hand_to_reaper(corio_process *p)
{
    if (!corio__current_task())
        return false;
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    o.flags = CORIO_TASK_LIGHT; /* a few hundred bytes while it waits */
    o.discard = reaper_discarded;
    return corio_spawn_ex(NULL, reaper, p, &o) == 0;
}

void corio_process_free(corio_process *p)
{
    if (!p)
        return;
    for (int i = 0; i < 3; i++)
        (void)corio_process_close_fd(p, i);
    if (!try_reap(p)) {
        if (p->flags & CORIO_PROCESS_KILL_ON_FREE)
            (void)corio_process_kill(p, SIGKILL);
        if (!try_reap(p) && hand_to_reaper(p))
            return;
    }
    release(p);
}
