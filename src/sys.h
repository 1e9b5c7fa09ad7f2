/*
 * sys.h: the only door from corio to allocation and to system calls that
 * can fail.
 *
 * Every allocation and every fallible syscall in the library goes through
 * these wrappers, for two reasons:
 *
 *  1. Fault injection. A test arms a countdown with corio__fault_arm(n);
 *     the n-th wrapped call from then on fails as the real call would
 *     (NULL / MAP_FAILED / -1 with errno set), so a harness can fail every
 *     call of a scenario in turn and check that each failure comes back as
 *     a clean error. Disarmed, the cost is one relaxed load and a branch
 *     that is never taken.
 *  2. Leak accounting. Live allocations and mappings are counted, so tests
 *     can assert that a runtime left nothing behind once corio_run returns.
 *
 * The wrappers return exactly what the libc call returns; callers turn
 * failures into negative errno values at the point where they decide what
 * to do about them.
 */
#ifndef CORIO_SYS_H
#define CORIO_SYS_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>


/* ---- fault injection (armed by tests) ---- */

extern _Atomic bool corio__fault_armed;
/* Fail the n-th wrapped call from now on (n >= 1) with its natural error;
 * n == 0 disarms. Returns how many calls were counted since the last arm. */
uint64_t corio__fault_arm(uint64_t n);
/* Whether the armed fault has fired since it was armed. */
bool corio__fault_fired(void);
/* Instead of failing it, call hook(arg) at the n-th wrapped call made
 * from now on by the calling thread (n >= 1), then let that call go
 * ahead. A seam for tests that must put the other side of a race inside
 * a window whose only landmark is an allocation: the hook is that other
 * side, run at the exact point. Calls from other threads are not
 * counted (an idle loop's stack trim would shift the count). One shot;
 * corio__fault_arm(0) disarms. */
void corio__fault_arm_hook(uint64_t n, void (*hook)(void *), void *arg);
/* Starve the calling thread: until corio__fault_arm(0) (from any
 * thread), every wrapped call it makes that fails when memory runs out
 * (those whose injected error is ENOMEM: allocations, mappings, madvise,
 * mprotect, epoll_ctl) fails, while other threads' calls go ahead. A seam
 * for tests of a loop out of memory that must also run under the
 * sanitizers, where RLIMIT_AS cannot be used (their shadow maps far
 * beyond any limit). */
void corio__fault_starve_thread(void);
/* Wrapped calls counted since the last arm, without disarming; while
 * starving, the calls failed. */
uint64_t corio__fault_counted(void);
bool corio__fault_fire(int err);

/* True when the wrapped call should fail now (with errno set to err). */
static inline bool corio__fault(int err)
{
    if (__builtin_expect(atomic_load_explicit(&corio__fault_armed, memory_order_relaxed), 0))
        return corio__fault_fire(err);
    return false;
}

/* A landmark inside a window that has no allocation of its own: it counts
 * as a wrapped call, so that a test's hook (corio__fault_arm_hook) can run
 * the other side of a race exactly there; it never fails. */
static inline void corio__race_point(void) { (void)corio__fault(0); }

/* ---- memory ---- */

void *corio__malloc(size_t size);
void *corio__calloc(size_t n, size_t size);
void *corio__realloc(void *p, size_t size);
void corio__free(void *p);
void *corio__aligned_alloc(size_t align, size_t size);
/* For tables that live as long as the process (never freed, so not
 * counted by corio__live_allocs; failures are injected all the same).
 * Free with corio__free_permanent only a block that was never used. */
void *corio__calloc_permanent(size_t n, size_t size);
void corio__free_permanent(void *p);

void *corio__mmap_anon(size_t len); /* PROT_READ|WRITE, private anonymous */
/* Like corio__mmap_anon, at an address that is a multiple of `align` (a
 * power of two, a multiple of the page size). */
void *corio__mmap_aligned(size_t len, size_t align);
int corio__munmap(void *p, size_t len);
/* Move mapping p (old_len bytes) onto dest, a mapping of ours of new_len >=
 * old_len bytes that it replaces: its pages are moved, not copied, and p's
 * range is unmapped. 0, or -1 with errno set, p left as it was, and dest no
 * longer the caller's either way (corio__forget_failed_target). */
int corio__mremap_onto(void *p, size_t old_len, void *dest, size_t new_len);
/* After a failed move onto dest: drop the caller's claim on [dest, len)
 * without unmapping anything another thread may have mapped there. */
void corio__forget_failed_target(void *dest, size_t len);
int corio__madvise(void *p, size_t len, int advice);
int corio__mprotect(void *p, size_t len, int prot);
/* Fault in [p, p + len) for writing with one system call
 * (MADV_POPULATE_WRITE) instead of one fault per page, where a fault's
 * trap costs more than its zeroing (VMs: arena.h, stack.c). Advice only:
 * where it fails or the kernel lacks it, pages fault in on first touch. */
void corio__prefault(void *p, size_t len);

/* ---- threads ---- */

int corio__thread_create(pthread_t *th, void *(*fn)(void *), void *arg,
                         size_t stack_size); /* returns 0 or an errno value */

/* ---- descriptors ---- */

int corio__epoll_create(void);
int corio__eventfd(void);
/* A non-blocking signalfd for `set`: the descriptor, or a negative corio
 * error (-errno). */
int corio__signalfd(const sigset_t *set);
int corio__close(int fd);
/* pipe2(O_CLOEXEC): 0, or -1 with errno set. */
int corio__pipe_cloexec(int fds[2]);
/* fcntl(fd, F_DUPFD_CLOEXEC, min): the new descriptor, or -1 with errno. */
int corio__dup_cloexec(int fd, int min);
/* pidfd_open(2): the descriptor (close-on-exec), or -1 with errno set
 * (ENOSYS where this build or the kernel lacks it). */
int corio__pidfd_open(pid_t pid);
/* posix_spawn, or posix_spawnp when search_path: returns 0 or an errno
 * value, as they do. Arguments as theirs (void * for the two types the
 * header would drag in). */
int corio__posix_spawn(pid_t *pid, const char *file, const void *actions, const void *attr,
                       char *const argv[], char *const envp[], bool search_path);
struct epoll_event;
struct timespec;
/* epoll_pwait2 (nanosecond timeout) where the kernel has it, else
 * epoll_wait rounded up to milliseconds. NULL timeout: forever. */
int corio__epoll_wait(int epfd, struct epoll_event *events, int max,
                      const struct timespec *timeout);

/* ---- accounting, for tests ---- */

int64_t corio__live_allocs(void);
int64_t corio__live_maps(void);
/* MADV_DONTNEED calls made so far, process-wide: each one interrupts every
 * CPU running the process (a TLB shootdown), so tests count them. */
uint64_t corio__dontneed_calls(void);

#endif /* CORIO_SYS_H */
