/*
 * sys.c: allocation and syscall wrappers with fault injection and leak
 * accounting (see sys.h for why they exist).
 */
#define _GNU_SOURCE
#include "sys.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#ifdef CORIO_VALGRIND
#include <valgrind/valgrind.h>
#endif

_Atomic bool corio__fault_armed;
static _Atomic uint64_t fault_countdown; /* calls left before the failing one */
static _Atomic uint64_t fault_counted;   /* wrapped calls seen since arming */
static _Atomic bool fault_has_fired;
/* corio__fault_arm_hook's hook, its argument and the thread whose calls
 * count (read only while the hook is set). */
static void (*_Atomic fault_hook)(void *);
static void *fault_hook_arg;
static pthread_t fault_hook_thread;
/* corio__fault_starve_thread's mode, and its thread: read only while
 * starving is set, but atomic all the same, since a thread that saw the
 * last arm may still read it while the next one writes it. */
static _Atomic bool fault_starving;
static _Atomic pthread_t fault_starved_thread;

static _Atomic int64_t live_allocs;
static _Atomic int64_t live_maps;

uint64_t corio__fault_arm(uint64_t n)
{
    atomic_store(&fault_hook, NULL);
    atomic_store(&fault_starving, false);
    uint64_t counted = atomic_exchange(&fault_counted, 0);
    atomic_store(&fault_has_fired, false);
    atomic_store(&fault_countdown, n);
    atomic_store(&corio__fault_armed, n != 0);
    return counted;
}

bool corio__fault_fired(void) { return atomic_load(&fault_has_fired); }

void corio__fault_arm_hook(uint64_t n, void (*hook)(void *), void *arg)
{
    corio__fault_arm(0);
    if (n == 0 || !hook)
        return;
    fault_hook_arg = arg;
    fault_hook_thread = pthread_self();
    atomic_store(&fault_countdown, n);
    atomic_store(&fault_hook, hook);
    atomic_store(&corio__fault_armed, true);
}

void corio__fault_starve_thread(void)
{
    corio__fault_arm(0);
    atomic_store(&fault_starved_thread, pthread_self());
    atomic_store(&fault_starving, true);
    atomic_store(&corio__fault_armed, true);
}

uint64_t corio__fault_counted(void) { return atomic_load(&fault_counted); }

/* The starving half of corio__fault_fire. */
static bool fault_starve_fire(int err)
{
    if (err != ENOMEM || !pthread_equal(pthread_self(), atomic_load(&fault_starved_thread)))
        return false;
    atomic_fetch_add(&fault_counted, 1);
    atomic_store(&fault_has_fired, true);
    errno = err;
    return true;
}

/* The hook's half of corio__fault_fire: false, the wrapped call goes on. */
static bool fault_hook_fire(void (*hook)(void *))
{
    if (!pthread_equal(pthread_self(), fault_hook_thread))
        return false;
    atomic_fetch_add(&fault_counted, 1);
    if (atomic_fetch_sub(&fault_countdown, 1) != 1)
        return false;
    /* Disarmed before it runs: the hook's own wrapped calls go ahead
     * uncounted. */
    atomic_store(&corio__fault_armed, false);
    atomic_store(&fault_hook, NULL);
    atomic_store(&fault_has_fired, true);
    hook(fault_hook_arg);
    return false;
}

bool corio__fault_fire(int err)
{
    void (*hook)(void *) = atomic_load(&fault_hook);
    if (hook)
        return fault_hook_fire(hook);
    if (atomic_load(&fault_starving))
        return fault_starve_fire(err);
    atomic_fetch_add(&fault_counted, 1);
    uint64_t left = atomic_load(&fault_countdown);
    while (left != 0) {
        if (atomic_compare_exchange_weak(&fault_countdown, &left, left - 1)) {
            if (left != 1)
                return false;
            /* This call is the n-th: it fails, and only it. */
            atomic_store(&fault_has_fired, true);
            errno = err;
            return true;
        }
    }
    return false;
}

void *corio__malloc(size_t size)
{
    if (corio__fault(ENOMEM))
        return NULL;
    void *p = malloc(size);
    if (p)
        atomic_fetch_add_explicit(&live_allocs, 1, memory_order_relaxed);
    return p;
}

void *corio__calloc(size_t n, size_t size)
{
    if (corio__fault(ENOMEM))
        return NULL;
    void *p = calloc(n, size);
    if (p)
        atomic_fetch_add_explicit(&live_allocs, 1, memory_order_relaxed);
    return p;
}

void *corio__aligned_alloc(size_t align, size_t size)
{
    if (corio__fault(ENOMEM))
        return NULL;
    void *p = NULL;
    if (posix_memalign(&p, align, size) != 0)
        return NULL;
    atomic_fetch_add_explicit(&live_allocs, 1, memory_order_relaxed);
    return p;
}

void *corio__realloc(void *p, size_t size)
{
    if (corio__fault(ENOMEM))
        return NULL;
    void *q = realloc(p, size);
    if (q && !p)
        atomic_fetch_add_explicit(&live_allocs, 1, memory_order_relaxed);
    return q;
}

void *corio__calloc_permanent(size_t n, size_t size)
{
    if (corio__fault(ENOMEM))
        return NULL;
    return calloc(n, size);
}

void corio__free_permanent(void *p) { free(p); }

void corio__free(void *p)
{
    if (!p)
        return;
    atomic_fetch_sub_explicit(&live_allocs, 1, memory_order_relaxed);
    free(p);
}

/* The one kind of mapping corio makes: private, anonymous, read-write. */
static void *map_anon(size_t len)
{
    return mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                -1, 0);
}

void *corio__mmap_anon(size_t len)
{
    if (corio__fault(ENOMEM))
        return MAP_FAILED;
    void *p = map_anon(len);
    if (p != MAP_FAILED)
        atomic_fetch_add_explicit(&live_maps, 1, memory_order_relaxed);
    return p;
}

void *corio__mmap_aligned(size_t len, size_t align)
{
    if (corio__fault(ENOMEM))
        return MAP_FAILED;
    /* Map enough to contain an aligned range, then trim both ends. The
     * trims cannot fail: they only split a mapping we just made. */
    char *p = map_anon(len + align);
    if (p == MAP_FAILED)
        return MAP_FAILED;
    char *aligned = (char *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
    if (aligned > p)
        munmap(p, (size_t)(aligned - p));
    if (aligned + len < p + len + align)
        munmap(aligned + len, (size_t)(p + len + align - (aligned + len)));
    atomic_fetch_add_explicit(&live_maps, 1, memory_order_relaxed);
    return aligned;
}

int corio__munmap(void *p, size_t len)
{
    /* munmap of a mapping we made cannot fail for a reason a caller could
     * act on; it is not a fault-injection point. */
    int rc = munmap(p, len);
    if (rc == 0)
        atomic_fetch_sub_explicit(&live_maps, 1, memory_order_relaxed);
    return rc;
}

int corio__mremap_onto(void *p, size_t old_len, void *dest, size_t new_len)
{
    if (corio__fault(ENOMEM)) {
        corio__munmap(dest, new_len); /* the kernel did not touch it */
        return -1;
    }
    if (mremap(p, old_len, new_len, MREMAP_MAYMOVE | MREMAP_FIXED, dest) == MAP_FAILED) {
        int err = errno;
        corio__forget_failed_target(dest, new_len);
        errno = err;
        return -1;
    }
    /* Two mappings became one. */
    atomic_fetch_sub_explicit(&live_maps, 1, memory_order_relaxed);
    return 0;
}

/* Linux unmaps an MREMAP_FIXED target before it moves anything, and can
 * still fail after that (an allocation for the moved mapping), so after a
 * failure dest may be gone, and another thread may have mapped something
 * there since: a plain munmap(dest) could take that thread's memory. So
 * the range is claimed first without replacing anything. If that works it
 * was free, and the claim is undone; if anything is there, it is either
 * dest itself (the kernel refused before unmapping it: an untouched
 * mapping of ours stays behind, counted as live) or someone else's, and
 * is left alone. */
void corio__forget_failed_target(void *dest, size_t len)
{
    void *q = mmap(dest, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE,
                   -1, 0);
    if (q == MAP_FAILED)
        return;
    munmap(q, len);
    /* A kernel older than MAP_FIXED_NOREPLACE (4.17) takes it as a hint
     * and maps elsewhere when dest is taken: then nothing is known. */
    if (q == dest)
        atomic_fetch_sub_explicit(&live_maps, 1, memory_order_relaxed);
}

static _Atomic uint64_t dontneed_calls;

int corio__madvise(void *p, size_t len, int advice)
{
    if (corio__fault(ENOMEM))
        return -1;
    if (advice == MADV_DONTNEED)
        atomic_fetch_add_explicit(&dontneed_calls, 1, memory_order_relaxed);
    return madvise(p, len, advice);
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Set once MADV_POPULATE_WRITE has answered EINVAL (Linux before 5.14):
 * shared by all runtimes of the process. */
static _Atomic bool no_populate;

void corio__prefault(void *p, size_t len)
{
    if (atomic_load_explicit(&no_populate, memory_order_relaxed))
        return;
    if (corio__madvise(p, len, MADV_POPULATE_WRITE) != 0 && errno == EINVAL)
        atomic_store_explicit(&no_populate, true, memory_order_relaxed);
}

int corio__mprotect(void *p, size_t len, int prot)
{
    if (corio__fault(ENOMEM))
        return -1;
    return mprotect(p, len, prot);
}

int corio__thread_create(pthread_t *th, void *(*fn)(void *), void *arg,
                         size_t stack_size)
{
    if (corio__fault(EAGAIN))
        return EAGAIN;
    pthread_attr_t attr;
    int rc = pthread_attr_init(&attr);
    if (rc != 0)
        return rc;
    if (stack_size)
        rc = pthread_attr_setstacksize(&attr, stack_size);
    if (rc == 0)
        rc = pthread_create(th, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    return rc;
}

int corio__epoll_create(void)
{
    if (corio__fault(EMFILE))
        return -1;
    return epoll_create1(EPOLL_CLOEXEC);
}

int corio__eventfd(void)
{
    if (corio__fault(EMFILE))
        return -1;
    return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

int corio__pipe_cloexec(int fds[2])
{
    if (corio__fault(EMFILE))
        return -1;
    return pipe2(fds, O_CLOEXEC);
}

int corio__dup_cloexec(int fd, int min)
{
    if (corio__fault(EMFILE))
        return -1;
    return fcntl(fd, F_DUPFD_CLOEXEC, min);
}

int corio__pidfd_open(pid_t pid)
{
    if (corio__fault(EMFILE))
        return -1;
#ifdef CORIO_VALGRIND
    /* Valgrind 3.19 (Debian 12) does not know the call: it would answer
     * ENOSYS after a warning of five lines on every spawn. */
    if (RUNNING_ON_VALGRIND) {
        errno = ENOSYS;
        return -1;
    }
#endif
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

int corio__posix_spawn(pid_t *pid, const char *file, const void *actions, const void *attr,
                       char *const argv[], char *const envp[], bool search_path)
{
    if (corio__fault(EAGAIN))
        return EAGAIN;
    const posix_spawn_file_actions_t *fa = actions;
    const posix_spawnattr_t *sa = attr;
    return search_path ? posix_spawnp(pid, file, fa, sa, argv, envp)
                       : posix_spawn(pid, file, fa, sa, argv, envp);
}

int corio__signalfd(const sigset_t *set)
{
    if (corio__fault(EMFILE))
        return -EMFILE;
    int fd = signalfd(-1, set, SFD_NONBLOCK | SFD_CLOEXEC);
    return fd >= 0 ? fd : -errno;
}

int corio__close(int fd) { return close(fd); }

#include <sys/syscall.h>
#include <time.h>

int corio__epoll_wait(int epfd, struct epoll_event *events, int max,
                      const struct timespec *timeout)
{
    static _Atomic int no_pwait2;
#ifdef CORIO_VALGRIND
    /* Valgrind 3.19 does not know epoll_pwait2 and says so at every call. */
    if (RUNNING_ON_VALGRIND)
        atomic_store_explicit(&no_pwait2, 1, memory_order_relaxed);
#endif
#ifdef SYS_epoll_pwait2
    if (!atomic_load_explicit(&no_pwait2, memory_order_relaxed)) {
        /* Called through syscall(): glibc's wrapper needs 2.35 headers. */
        long n = syscall(SYS_epoll_pwait2, epfd, events, max, timeout, NULL, (size_t)8);
        /* EPERM: container seccomp profiles older than the call answer
         * unknown system calls with it instead of ENOSYS. (epoll_pwait2
         * itself never fails with EPERM.) */
        if (n >= 0 || (errno != ENOSYS && errno != EPERM))
            return (int)n;
        atomic_store_explicit(&no_pwait2, 1, memory_order_relaxed);
    }
#endif
    int ms = -1;
    if (timeout) {
        long long total = (long long)timeout->tv_sec * 1000 + (timeout->tv_nsec + 999999) / 1000000;
        ms = total > 0x7fffffff ? 0x7fffffff : (int)total;
    }
    return epoll_wait(epfd, events, max, ms);
}

int64_t corio__live_allocs(void) { return atomic_load(&live_allocs); }
int64_t corio__live_maps(void) { return atomic_load(&live_maps); }
uint64_t corio__dontneed_calls(void) { return atomic_load(&dontneed_calls); }
