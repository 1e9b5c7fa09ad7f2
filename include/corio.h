/*
 * corio: asyncio-shaped tasks for C, on every core at once.
 *
 * A corio program calls corio_run() with a main function. The runtime starts
 * one event loop per core (one OS thread each; the calling thread becomes
 * loop 0), runs the main function as the first task, and returns its result
 * once the runtime has shut down. Tasks are stackful: each one is plain
 * straight-line C that suspends only itself while it waits.
 *
 * Conventions used by every function in this header:
 *
 *   Errors    Functions that can fail return int: 0 (or a non-negative
 *             count) on success, a negative errno value on failure
 *             (CORIO_ENOMEM == -ENOMEM, ...). corio_strerror() names them.
 *             The library never aborts on bad input or exhaustion.
 *   Time      corio_time_t is nanoseconds on CLOCK_MONOTONIC. Deadlines are
 *             absolute; CORIO_FOREVER means "no deadline". Every blocking
 *             call takes a deadline, most through a twin ending in _until
 *             (corio_wait_fd and corio_connect_tcp take one directly), and
 *             returns CORIO_ETIMEDOUT when it passes. The exception is
 *             corio_group_close, which always waits for the children it
 *             has cancelled (below).
 *   Cancel    corio_cancel(t) makes t's current or next blocking call return
 *             CORIO_ECANCELED, once (corio_group_close passes it on to the
 *             call after it). A blocking call that times out or is
 *             cancelled has no other effect. A pending cancellation fails
 *             the next call even if it could complete without waiting (a
 *             read with data queued, a receive with an element waiting),
 *             so a task that never has to wait still sees it; the one
 *             exception is a join of tasks that have already finished
 *             (corio_join, corio_gather, and corio_group_wait with no
 *             child left running).
 *   Context   Blocking calls must be made from a task; elsewhere they return
 *             CORIO_EPERM.
 *
 * Ownership of a task handle: the corio_task pointer returned by a spawn is
 * owned by the spawner and must be released exactly once, either by a
 * join that ends the wait (corio_join / corio_gather returning 0,
 * CORIO_ENOSTACK or CORIO_ESHUTDOWN) or by corio_detach(). A handle
 * added to a task set (corio_set_add) is the set's until corio_set_next
 * hands it back; a set freed with it still inside releases it. A join whose
 * wait fails (timeout, cancellation) does not release the handle. A handle
 * used again after its release gets CORIO_EINVAL while its memory has not
 * been reused by a spawn; after that, the behaviour is undefined, as for
 * any freed pointer. The handle is one owner's: two tasks releasing it at
 * the same moment (two joins, a join and a detach) race in the caller,
 * and the result is undefined, as for two simultaneous pthread_join()
 * calls on one thread (the check above sees only a release that came
 * before). Spawning with a NULL handle pointer creates a detached task.
 * Handles belong to their runtime: one passed to a task of another
 * runtime running side by side is not to be joined or detached there
 * (CORIO_EINVAL where it can be told, once the task has finished). All
 * handles become invalid when corio_run() returns.
 */
#ifndef CORIO_H
#define CORIO_H

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

struct addrinfo;

#ifdef __cplusplus
extern "C" {
#endif

#if defined(CORIO_BUILDING_LIBRARY) && defined(__GNUC__)
#define CORIO_API __attribute__((visibility("default")))
#else
#define CORIO_API
#endif

#define CORIO_VERSION_MAJOR 0
#define CORIO_VERSION_MINOR 1
#define CORIO_VERSION_PATCH 0

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * The one table of error values: X(name, value, message). Values are
 * negative errno numbers, plus a few of corio's own below -4000 for
 * failures errno has no name for. Each entry yields CORIO_<name>, its
 * corio_strerror() text and its corio_err_name().
 */
#define CORIO_ERROR_MAP(X)                                                      \
    X(EPERM, -EPERM, "operation not permitted here (not inside a corio task?)") \
    X(ESRCH, -ESRCH, "no such process (already reaped)")                        \
    X(ENOENT, -ENOENT, "no such file or directory")                             \
    X(EINTR, -EINTR, "interrupted system call")                                 \
    X(EIO, -EIO, "input/output error")                                          \
    X(ECHILD, -ECHILD, "no such child process (reaped elsewhere?)")             \
    X(EBADF, -EBADF, "bad file descriptor")                                     \
    X(EAGAIN, -EAGAIN, "resource temporarily unavailable (limit reached)")      \
    X(ENOMEM, -ENOMEM, "out of memory")                                         \
    X(EACCES, -EACCES, "permission denied")                                     \
    X(EFAULT, -EFAULT, "bad address")                                           \
    X(EBUSY, -EBUSY, "resource busy")                                           \
    X(EEXIST, -EEXIST, "already exists")                                        \
    X(EINVAL, -EINVAL, "invalid argument")                                      \
    X(ENFILE, -ENFILE, "too many open files in the system")                     \
    X(EMFILE, -EMFILE, "too many open files")                                   \
    X(ENOSPC, -ENOSPC, "no space left")                                         \
    X(EPIPE, -EPIPE, "broken pipe or closed channel")                           \
    X(ERANGE, -ERANGE, "result out of range")                                   \
    X(EOVERFLOW, -EOVERFLOW, "value too large")                                 \
    X(EDEADLK, -EDEADLK, "operation would deadlock")                            \
    X(ENOSYS, -ENOSYS, "function not implemented")                              \
    X(ENOTSOCK, -ENOTSOCK, "not a socket")                                      \
    X(EMSGSIZE, -EMSGSIZE, "message too long")                                  \
    X(EPROTO, -EPROTO, "protocol error")                                        \
    X(EOPNOTSUPP, -EOPNOTSUPP, "operation not supported")                       \
    X(EAFNOSUPPORT, -EAFNOSUPPORT, "address family not supported")              \
    X(EADDRINUSE, -EADDRINUSE, "address already in use")                        \
    X(EADDRNOTAVAIL, -EADDRNOTAVAIL, "address not available")                   \
    X(ENETDOWN, -ENETDOWN, "network is down")                                   \
    X(ENETUNREACH, -ENETUNREACH, "network is unreachable")                      \
    X(ECONNABORTED, -ECONNABORTED, "connection aborted")                        \
    X(ECONNRESET, -ECONNRESET, "connection reset by peer")                      \
    X(ENOBUFS, -ENOBUFS, "no buffer space available")                           \
    X(EISCONN, -EISCONN, "socket is already connected")                         \
    X(ENOTCONN, -ENOTCONN, "socket is not connected")                           \
    X(ETIMEDOUT, -ETIMEDOUT, "timed out (deadline passed)")                     \
    X(ECONNREFUSED, -ECONNREFUSED, "connection refused")                        \
    X(EHOSTUNREACH, -EHOSTUNREACH, "host is unreachable")                       \
    X(EALREADY, -EALREADY, "operation already in progress")                     \
    X(EINPROGRESS, -EINPROGRESS, "operation in progress")                       \
    X(ECANCELED, -ECANCELED, "operation cancelled")                             \
    X(ESHUTDOWN, -ESHUTDOWN, "runtime is shutting down")                        \
    X(ENONAME, -4001, "host or service name not known")                         \
    X(ENAMETEMP, -4002, "temporary failure in name resolution")                 \
    X(ENAMEFAIL, -4003, "name resolution failed")                              \
    X(ENOSTACK, -4004, "task could not start: no stack could be allocated")

enum corio_errno {
#define CORIO_ERROR_ENUM_(name, value, msg) CORIO_##name = (value),
    CORIO_ERROR_MAP(CORIO_ERROR_ENUM_)
#undef CORIO_ERROR_ENUM_
};

/* A message for a corio error value (negative errno); never NULL. A
 * system error passed through that the table does not list (-EISDIR from
 * reading a directory) gets the C library's description. */
CORIO_API const char *corio_strerror(int err);
/* The symbolic name ("ENOMEM") of an error value, also for system errors
 * outside the table, or "UNKNOWN". */
CORIO_API const char *corio_err_name(int err);

/* ------------------------------------------------------------------------ */
/* Time                                                                     */
/* ------------------------------------------------------------------------ */

typedef int64_t corio_time_t; /* nanoseconds, CLOCK_MONOTONIC */

#define CORIO_FOREVER ((corio_time_t)-1)
#define CORIO_USEC ((int64_t)1000)
#define CORIO_MSEC ((int64_t)1000000)
#define CORIO_SEC ((int64_t)1000000000)

/* The current monotonic time in nanoseconds. */
CORIO_API corio_time_t corio_now(void);
/* The deadline `ns` nanoseconds from now (CORIO_FOREVER if ns < 0). */
CORIO_API corio_time_t corio_deadline_in(int64_t ns);

/* ------------------------------------------------------------------------ */
/* Runtime                                                                  */
/* ------------------------------------------------------------------------ */

typedef void *(*corio_fn)(void *arg);

typedef struct corio_config {
    /* Event loops (threads), at most 1024 (CORIO_EINVAL above). 0: the
     * CORIO_LOOPS environment variable if set (a decimal number), else
     * the number of CPUs this process may run on. */
    unsigned loops;
    /* Default stack size of a task in bytes, rounded up to whole pages,
     * at least 16 KiB, at most 1 TiB (CORIO_EINVAL above). Each loop also
     * maps one stack of this size for its light tasks when it starts.
     * 0: CORIO_STACK_SIZE from the environment if set (a decimal number
     * of bytes, or of KiB, MiB or GiB with a k, m or g after it: "256k"),
     * else 128 KiB. The runtime keeps a task's bookkeeping in the top 64
     * bytes (more in sanitizer builds, about 1 KiB with the ucontext
     * fallback); the rest is the task's. */
    size_t stack_size;
    /* Most threads in the blocking pool behind corio_run_blocking().
     * 0: 64. Threads start on demand. */
    unsigned blocking_threads;
    /* Most tasks alive at once (spawned, not finished); 0: no limit. A spawn
     * past the limit returns CORIO_EAGAIN. */
    size_t max_tasks;
    /* Pin loop i to the i-th CPU this process may run on. Also switched on
     * by CORIO_PIN=1 in the environment (0 or unset: off; any other value
     * makes corio_run fail with CORIO_EINVAL, as for the numbers). */
    bool pin_cpus;
    /* Ask the kernel for transparent huge pages (MADV_HUGEPAGE) for task
     * memory: a loop that outgrows its first 2 MiB of task objects and
     * light tasks' saved stacks, and its timers once more than a few
     * thousand deadlines are pending. Off by default. Where the memory is
     * already backed, huge pages mean fewer page faults (a million
     * sleepers ran 6-8% faster on our AMD VMs, spawn+join 10-15%; ~20% on
     * an Intel one).
     * Where it is not, a huge page's first touch is a stall: with THP
     * defrag at "madvise" the fault may compact memory, and on VMs that
     * hand free memory back to their host (free page reporting) it waits
     * for the host to back 2 MiB. There, after a pause, a million
     * sleepers took 1.9-2.1 s with huge pages against 1.3 s without, and
     * faulting in 344 MB took 1.1-2.3 s against 0.15-0.3 s (bench/
     * RESULTS.md, 2026-11-29); Go stopped marking its heap MADV_HUGEPAGE
     * for the same stalls (golang/go#61718). Also switched on by
     * CORIO_HUGE_PAGES=1 in the environment (0 or unset: off; any other
     * value: CORIO_EINVAL). */
    bool huge_pages;
    /* Memory of idle task stacks: each loop keeps up to 256 idle stacks
     * resident; the memory of the others is handed back to the kernel
     * when the loop has had nothing to do for 20 ms at a stretch, or, on
     * a loop that stays busy (or is woken more often than that), once
     * they have been idle this long (milliseconds).
     * Handing it back interrupts every CPU running the process, so it is
     * done in batches, not as each task exits. 0: CORIO_STACK_RETAIN_MS
     * from the environment if set (a decimal number, no suffix, below
     * 2^32), else 10,000. */
    unsigned stack_retain_ms;
} corio_config;

/* Fill *cfg with the defaults (all zero). */
CORIO_API void corio_config_init(corio_config *cfg);

/*
 * asyncio.run: start the loops, run main(arg) as a task, and when it
 * returns shut everything down and store its return value in *result
 * (result may be NULL). cfg may be NULL for the defaults.
 *
 * main is a task like any other, queued on loop 0 (the calling thread):
 * an idle loop may take it before it starts, so it may run on any loop.
 * Work that must run on a given loop goes there with corio_spawn_on.
 *
 * Shutdown: tasks still alive when main returns are cancelled: each of
 * their blocking calls from then on fails with CORIO_ECANCELED, and
 * corio_run waits until they have all returned. Tasks that never started
 * are discarded without running. Blocking-pool functions that are already
 * running are waited for. Another runtime may be started afterwards.
 *
 * Returns 0, CORIO_EINVAL for a bad configuration (a CORIO_* environment
 * variable included: any value but those described here), CORIO_ENOMEM /
 * CORIO_EAGAIN when memory or threads run out, CORIO_EMFILE /
 * CORIO_ENFILE when descriptors do (each loop takes an epoll instance and
 * an eventfd), CORIO_ENOSTACK when no stack could be had for main (it
 * never ran; *result is NULL), CORIO_EBUSY when called from a thread of a
 * running runtime (a task, a blocking-pool function, a discard).
 */
CORIO_API int corio_run(const corio_config *cfg, corio_fn main, void *arg,
                        void **result);

/* Index of the loop running the caller, in [0, corio_loop_count()); -1
 * outside a loop thread (e.g. in a blocking-pool function). */
CORIO_API int corio_loop_index(void);
/* Number of loops of the runtime the caller belongs to; 0 outside one. */
CORIO_API unsigned corio_loop_count(void);

/* ------------------------------------------------------------------------ */
/* Tasks                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct corio_task corio_task;

enum corio_spawn_flags {
    /*
     * A light task runs on its loop's shared stack; when it suspends, the
     * part of the stack it uses (typically a few hundred bytes) is copied
     * to a buffer of its loop's, and copied back when it resumes. Spawning
     * one allocates no stack, so a million sleeping light tasks fit in well
     * under a gigabyte. The price: while a light task is suspended, its stack
     * variables are not at their addresses, so no other task or thread may
     * use a pointer to them. Everything corio does on a task's behalf
     * respects this. A light task whose frames are deeper than 4 GiB when
     * it would suspend gets CORIO_ENOMEM instead. When memory runs out, a
     * light task may have to suspend with its frames left on the shared
     * stack (a group's close waits for its children whatever happens);
     * its loop's other light tasks then wait to start or resume until the
     * frames can be moved, which they try again as soon as that task has
     * run and otherwise every 1 to 64 ms (doubling while memory stays
     * short). Regular tasks run on meanwhile, and an idle loop sleeps.
     */
    CORIO_TASK_LIGHT = 1u << 0,
    /*
     * A migrating task may change loops after it has run: when it is woken
     * from a sleep, a join or gather, a run_blocking call, or a channel,
     * semaphore, mutex, event or wait-group wait and its loop is busy, an
     * idle loop may take it and become its home. This is what lets CPU
     * work that follows a wait spread over all cores even when the cores
     * run at different speeds (Go and Tokio move every task this way). A
     * task resumed after a descriptor wait or a yield stays where it is.
     *
     * The contract, which is the caller's to keep: the task's own code holds
     * no thread-local address across a corio call that can wait. Compilers
     * may compute such an address once per function (errno's, through
     * glibc's const __errno_location, or any _Thread_local variable's) and
     * reuse it after the call, on what is by then another thread. Code that
     * reads errno or thread-locals and also waits should do the two in
     * separate functions that are not inlined into each other, or not use
     * this flag. corio_loop_index() may change across a wait. Not with
     * CORIO_TASK_LIGHT (a light task's frames belong to its loop's shared
     * stack) or a chosen loop: CORIO_EINVAL.
     */
    CORIO_TASK_MIGRATE = 1u << 1,
};

typedef struct corio_spawn_opts {
    /* 0: the runtime's default; else rounded up as corio_config's, at
     * least 16 KiB, at most 1 TiB (CORIO_EINVAL above). Not with
     * CORIO_TASK_LIGHT: CORIO_EINVAL. */
    size_t stack_size;
    int loop;          /* -1: any loop (stealable); >= 0: that loop, never stolen */
    unsigned flags;    /* enum corio_spawn_flags */
    /*
     * Called as discard(arg, error) if the task ends without ever running,
     * error saying why (CORIO_ENOSTACK: no stack could be had when it
     * would start; CORIO_ESHUTDOWN: dropped by shutdown), so that what arg
     * owns (a socket, a buffer, a URL to report) is never lost, even for a
     * detached task: once a spawn succeeds, arg is consumed exactly once,
     * by fn or by discard. It runs once, on a loop thread but outside any
     * task (so it must not wait: corio calls that need a task fail with
     * CORIO_EPERM; corio_close works), before the task's join or gather
     * returns. Not called when the spawn itself fails: then arg is still
     * the caller's. NULL: none. A spawn with a discard allocates a small
     * record (freed when the task starts), which costs tens to a couple
     * of hundred nanoseconds more when another loop starts the task.
     */
    void (*discard)(void *arg, int error);
} corio_spawn_opts;

/* Fill *opts with the defaults: default stack, any loop, no flags, no
 * discard. */
CORIO_API void corio_spawn_opts_init(corio_spawn_opts *opts);

/*
 * asyncio.create_task: create a task running fn(arg) and return at once.
 * It starts on the caller's loop or, if another loop is idle, may be
 * stolen by that loop before it first runs; once it has run it stays on
 * that loop (unless spawned with CORIO_TASK_MIGRATE). The tasks queued
 * on a loop when it polls for timers and IO start before the tasks that
 * poll wakes, as asyncio's ready queue would run them, so a stream of
 * wake-ups cannot hold a new task back. *task receives the handle; pass
 * task == NULL for a detached task. Must be called from a task. Returns
 * 0, CORIO_ENOMEM (no memory for the task), CORIO_EAGAIN (max_tasks
 * reached), CORIO_ESHUTDOWN (runtime stopping), CORIO_EINVAL or
 * CORIO_EPERM (not in a task).
 *
 * The task's stack is taken when it first runs, from its loop's pool (a
 * fresh stack costs microseconds, a spawn tens of nanoseconds, and a short
 * task reuses the stack its predecessor just gave back). If no stack can
 * be had then, the task does not run, and its join reports
 * CORIO_ENOSTACK. Bound the number of tasks with max_tasks to rule that
 * out, and give corio_spawn_ex a discard function to release what arg
 * holds when that happens (or when shutdown drops the task).
 */
CORIO_API int corio_spawn(corio_task **task, corio_fn fn, void *arg);
/* As corio_spawn, on loop `loop`, where it stays (never stolen).
 * CORIO_EINVAL if loop >= corio_loop_count(). */
CORIO_API int corio_spawn_on(corio_task **task, unsigned loop, corio_fn fn,
                             void *arg);
/* As corio_spawn with options (opts may be NULL). */
CORIO_API int corio_spawn_ex(corio_task **task, corio_fn fn, void *arg,
                             const corio_spawn_opts *opts);

/*
 * await task: wait until `task` has finished, store its return value in
 * *result (may be NULL) and release the handle.
 *   0                the task ran and returned; handle released
 *   CORIO_ENOSTACK   it never ran, no stack could be had; handle released
 *   CORIO_ESHUTDOWN  it never ran, dropped by shutdown; handle released
 *   CORIO_ETIMEDOUT, CORIO_ECANCELED, CORIO_ENOMEM (a light joiner could
 *                    not reserve memory to wait)  the wait failed; the
 *                    handle stays valid
 *   CORIO_EDEADLK    a task joined itself; CORIO_EINVAL: a detached or
 *                    released handle
 */
CORIO_API int corio_join(corio_task *task, void **result);
CORIO_API int corio_join_until(corio_task *task, void **result,
                               corio_time_t deadline);

/*
 * asyncio.gather: wait until all n tasks have finished, then store their
 * results in task order in results[0..n-1] (may be NULL) and release every
 * handle. Returns 0, or CORIO_ENOSTACK / CORIO_ESHUTDOWN if some task
 * never ran (its result is NULL; all handles are released all the same).
 * If the wait fails (timeout, cancellation) no handle is released. A
 * handle given twice (or NULL, detached, released) is CORIO_EINVAL, the
 * caller's own handle CORIO_EDEADLK, and then no handle is released
 * either.
 */
CORIO_API int corio_gather(corio_task *const *tasks, size_t n, void **results);
CORIO_API int corio_gather_until(corio_task *const *tasks, size_t n,
                                 void **results, corio_time_t deadline);

/*
 * asyncio.wait(..., return_when=FIRST_COMPLETED), or Go's select over
 * tasks: wait until at least one of tasks[0..n-1] has finished and store
 * in *index the lowest index among those found finished. No handle is
 * released: join the finished one (at once, it does not wait) and cancel
 * or keep waiting for the rest. NULL entries are skipped, so a caller can
 * join the finished task, set its slot to NULL and call again to take
 * the tasks as they complete (asyncio.as_completed); each call looks at
 * all n slots, so for thousands of tasks use a task set (below).
 * Whatever ends the wait, every handle is left as it was, free to be
 * joined, gathered or detached. Returns 0, CORIO_ETIMEDOUT,
 * CORIO_ECANCELED or CORIO_ENOMEM (the wait itself ended early, with no
 * task finished; ENOMEM: a light waiter, or a deadline's timer, without
 * the memory to wait, as corio_join), CORIO_EINVAL (index or tasks
 * NULL, no handle given, a handle detached, released, being joined by
 * another task, or given twice while running), CORIO_EDEADLK (the
 * caller's own handle) or CORIO_EPERM (not in a task).
 */
CORIO_API int corio_wait_any(corio_task *const *tasks, size_t n, size_t *index);
CORIO_API int corio_wait_any_until(corio_task *const *tasks, size_t n, size_t *index,
                                   corio_time_t deadline);

/*
 * Task sets: asyncio.as_completed, or Tokio's JoinSet, for any number of
 * tasks. Hand joinable handles to a set; corio_set_next then gives back
 * whichever member finishes next, each exactly once, at O(1) a member
 * (corio_wait_any looks at every slot on every call).
 *
 * corio_set_add: the set takes over waiting for the task. From then on the
 * handle is the set's until corio_set_next returns it: corio_join,
 * corio_gather, corio_wait_any and corio_detach refuse it (CORIO_EINVAL);
 * corio_cancel may name it. A task already finished is taken too (it is
 * next at once). Errors: CORIO_EINVAL (NULL, or a handle detached,
 * released, being joined or waited on, or in a set already; a set
 * holding another runtime's members, below),
 * CORIO_EDEADLK (the caller's own handle), CORIO_ENOMEM (the handle stays
 * the caller's), CORIO_EPERM (not in a task).
 *
 * corio_set_next: wait until a member has finished, remove it from the set
 * and store its handle in *task: the caller's again, to join (at once: it
 * does not wait; the join reports how the task ended) or detach. Members
 * come out in the order they finished. Any number of tasks may wait on one
 * set; each finished member goes to one of them. Returns 0,
 * CORIO_ENOENT (the set has no members: every one was taken, or none was
 * added), CORIO_ETIMEDOUT or CORIO_ECANCELED (no member was taken; a
 * member that finished meanwhile is there for the next call), CORIO_ENOMEM
 * (as corio_join), CORIO_EDEADLK (the caller is a member of the set: it
 * could wait for itself; checked as the call starts, so a taker that
 * another task adds to the set it already waits on may wait for itself,
 * as tasks joining each other in a cycle do), CORIO_EINVAL (NULL
 * argument; a set holding another runtime's members, below), CORIO_EPERM
 * (not in a task). *task is NULL after any failure.
 *
 * corio_set_new: CORIO_EINVAL (set NULL) or CORIO_ENOMEM.
 * corio_set_len: members not yet taken, finished or not (0 for NULL).
 * corio_set_cancel: corio_cancel every member still running; CORIO_EINVAL
 * for NULL.
 * corio_set_free: cancel the members still running and detach them (they
 * run on, and their memory is freed when they finish), release the
 * finished ones not taken (their results are lost), free the set; NULL
 * is a no-op (0). CORIO_EBUSY, the set left as it is, while a
 * corio_set_next or corio_set_cancel on it is under way (a taker woken
 * but not yet run included): end or cancel those tasks, join them, free
 * again. CORIO_EPERM, the same, off the loop threads of the members'
 * runtime (a task or a discard function of it) when members are left.
 * Otherwise free a set once, with no call on it running or to come, as
 * with free(), and before its members' runtime ends: their handles end
 * with it, so a set still holding some cannot be freed after.
 *
 * A set with members belongs to their runtime: a task of another runtime
 * running beside it gets CORIO_EINVAL from corio_set_add and
 * corio_set_next (and CORIO_EPERM from corio_set_free) until the set is
 * empty again, when either may use it.
 */
typedef struct corio_set corio_set;

CORIO_API int corio_set_new(corio_set **set);
CORIO_API int corio_set_add(corio_set *set, corio_task *task);
CORIO_API int corio_set_next(corio_set *set, corio_task **task);
CORIO_API int corio_set_next_until(corio_set *set, corio_task **task, corio_time_t deadline);
CORIO_API size_t corio_set_len(corio_set *set);
CORIO_API int corio_set_cancel(corio_set *set);
CORIO_API int corio_set_free(corio_set *set);

/* Release a handle without waiting; the task runs on and its memory is
 * freed when it finishes. From a task or loop thread only (CORIO_EPERM
 * elsewhere, e.g. in a blocking-pool function); CORIO_EINVAL for a handle
 * already detached, released or being joined. */
CORIO_API int corio_detach(corio_task *task);

/*
 * Request cancellation: the task's current blocking call, or its next one,
 * returns CORIO_ECANCELED (once). What it does then is up to the task.
 * Cancelling a finished task does nothing. The handle stays owned by the
 * caller; a released one is CORIO_EINVAL (see the ownership rules above),
 * and so is a detached one, even while its task still runs (a detached
 * task may still cancel itself through corio_self()). The exception is
 * corio_run's main task, whose handle (corio_self() in main) any task or
 * blocking-pool function of its runtime may cancel until corio_run
 * returns, as asyncio cancels its main task on Ctrl-C: e.g. a task that
 * reads a signalfd cancels main, and main's wait returns CORIO_ECANCELED.
 * Main cannot be joined or detached (CORIO_EINVAL): corio_run owns it.
 */
CORIO_API int corio_cancel(corio_task *task);

/* The calling task, or NULL outside a task. */
CORIO_API corio_task *corio_self(void);
/* A task's id: unique within the process, never 0. */
CORIO_API uint64_t corio_task_id(const corio_task *task);

/* Let other ready tasks on this loop run: the woken ones ahead of the
 * caller and, when no started task is ready, every task then waiting to
 * start on this loop (as asyncio.sleep(0) does: after corio_spawn, a
 * yield lets the new task start, unless an idle loop takes it or is
 * about to). Returns 0, or CORIO_ECANCELED if a cancellation was pending
 * (yield is a cancellation point). A light task may also get
 * CORIO_ENOMEM (no memory to keep its frames while it waits); so may
 * every blocking call of a light task. */
CORIO_API int corio_yield(void);

/* Suspend the calling task for `ns` nanoseconds / until `deadline`.
 * Returns 0 when the time has come, CORIO_ECANCELED if cancelled first,
 * CORIO_ENOMEM (light task, see corio_yield; or, for any task, no memory
 * to keep one more timer: every call with a deadline can return it).
 * A time already come (ns <= 0; a deadline at or before now, any value
 * below CORIO_FOREVER included) is corio_yield(), as asyncio.sleep(0).
 * Note the difference from corio_deadline_in, where a negative ns means
 * CORIO_FOREVER: corio_sleep(-1) yields, corio_sleep_until(
 * corio_deadline_in(-1)) sleeps until cancelled. */
CORIO_API int corio_sleep(int64_t ns);
CORIO_API int corio_sleep_until(corio_time_t deadline);

/*
 * loop.run_in_executor: run fn(arg) on the runtime's blocking thread pool;
 * only the calling task waits, its loop keeps running others. *result gets
 * fn's return value. If the wait times out or is cancelled (or, for a
 * light task, fails with CORIO_ENOMEM) before fn started, fn never runs
 * (a pool thread does not start it once the wait has ended or the
 * deadline has passed); if fn is already running it finishes on its
 * thread and its result is dropped. So what arg points to must outlive
 * fn, not only the call: where the call can time out or be cancelled,
 * keep it off the caller's stack and let fn free it. One race goes the
 * other way: if fn returned before the calling task got to act on the
 * timeout or cancellation, the call returns 0 with fn's result, since its
 * effects happened, and a cancellation stays pending for the task's next
 * cancellation point.
 *
 * fn runs on a plain thread: corio calls that need a task fail there with
 * CORIO_EPERM, and corio_run with CORIO_EBUSY. Threads start on demand up
 * to corio_config.blocking_threads; when no more can start, the job waits
 * for a busy one (so fn must not wait for another blocking job that may
 * be queued behind it).
 *
 * Errors: CORIO_EPERM (not called from a task), CORIO_EINVAL (fn NULL),
 * CORIO_ENOMEM, CORIO_EAGAIN (no pool thread exists and none can start),
 * CORIO_ETIMEDOUT, CORIO_ECANCELED.
 */
CORIO_API int corio_run_blocking(corio_fn fn, void *arg, void **result);
CORIO_API int corio_run_blocking_until(corio_fn fn, void *arg, void **result,
                                       corio_time_t deadline);


/* ------------------------------------------------------------------------ */
/* Task groups (structured concurrency)                                     */
/* ------------------------------------------------------------------------ */

/*
 * A group owns its children: spawn them into it, wait for all of them,
 * and close it, which cancels and waits for any child still running, so
 * no child outlives its group. A child is an int function: 0 for success,
 * a negative error for failure (Go's errgroup). With
 * CORIO_GROUP_CANCEL_ON_ERROR the first failure cancels the other
 * children: from then on each of their blocking calls fails with
 * CORIO_ECANCELED, every time, so they unwind. Any task may spawn into a
 * group or cancel it, but once a close may have begun, only the group's
 * children may (the close frees the group once they have all finished, so
 * another task's call could touch freed memory); one task at a time may
 * wait on it (a second
 * waiter gets CORIO_EBUSY; a close waits for it to leave, which the close's
 * cancellation makes happen soon). A child of the group may not wait on
 * it or close it: CORIO_EDEADLK, and the group is left as it is. A group
 * may live as long as the program (a server's one child per connection,
 * waited on only at shutdown): the children that have finished are
 * released as it spawns more, so it holds memory for the children still
 * running, and their failures are kept for corio_group_error(). A
 * child's own handle (its corio_self()) is the group's: joined, detached,
 * waited on with corio_wait_any or added to a task set by anyone else, it
 * breaks the group's bookkeeping (only corio_cancel may name it).
 */
typedef struct corio_group corio_group;
typedef int (*corio_group_fn)(void *arg);

enum corio_group_flags {
    CORIO_GROUP_CANCEL_ON_ERROR = 1u << 0,
};

CORIO_API int corio_group_new(corio_group **group, unsigned flags);
/* Spawn a child (opts may be NULL). CORIO_ECANCELED once the group has
 * been cancelled. */
CORIO_API int corio_group_spawn(corio_group *group, corio_group_fn fn, void *arg);
CORIO_API int corio_group_spawn_ex(corio_group *group, corio_group_fn fn, void *arg,
                                   const corio_spawn_opts *opts);
/* Wait until every child spawned so far has returned: 0, or
 * CORIO_ETIMEDOUT / CORIO_ECANCELED if the wait itself ended early (the
 * children run on and can be waited for again), CORIO_EBUSY or
 * CORIO_EDEADLK (see above). How the children did is corio_group_error()'s
 * answer. */
CORIO_API int corio_group_wait(corio_group *group);
CORIO_API int corio_group_wait_until(corio_group *group, corio_time_t deadline);
/* The first failure a child returned, or 0. A child that never ran (no
 * stack: CORIO_ENOSTACK; dropped by shutdown: CORIO_ESHUTDOWN) failed
 * too, from the moment it was dropped (which under
 * CORIO_GROUP_CANCEL_ON_ERROR cancels the others). (A child cancelled by the
 * group usually fails with CORIO_ECANCELED itself; keeping the children's
 * results apart from the wait's own keeps the two from being confused.) */
CORIO_API int corio_group_error(corio_group *group);
/* Cancel every child still running (as on a failure with
 * CORIO_GROUP_CANCEL_ON_ERROR). */
CORIO_API int corio_group_cancel(corio_group *group);
/* Cancel what still runs, wait for all children (even if the caller is
 * being cancelled), free the group. Returns corio_group_error(). Not
 * freed, in two cases of misuse: called by a child of the group
 * (CORIO_EDEADLK; tell it from a child's own failure by
 * corio_group_error(), which the group still answers), and outside a
 * task with children left to join (CORIO_EPERM; only a group with none
 * can be closed there, or CORIO_EBUSY while a task waits on it). Close
 * a group once, from one task: like free(), a second close, or one
 * racing the first, uses freed memory. */
CORIO_API int corio_group_close(corio_group *group);

/* ------------------------------------------------------------------------ */
/* Synchronisation between tasks, across loops                              */
/* ------------------------------------------------------------------------ */

/*
 * All of these work between tasks on any loops; a task woken on another
 * loop is handed to that loop's inbox, never lost. Waits are FIFO
 * (semaphores and mutexes hand a permit straight to the first waiter; a
 * channel wakes its first waiter, which then takes the element when it
 * runs: if another call got there first, a try_recv/try_send or a send or
 * recv that found the channel ready and so never waited, the woken waiter
 * keeps its place in the queue, but a later waiter on another loop, woken
 * for the next element, may run and take it first: channels trade strict
 * order for never making a caller wait while they are ready). A wait that
 * times out or is cancelled leaves nothing behind: a receive takes no
 * message, an acquire holds no permit, a lock is not held. The blocking
 * calls must come from tasks; the others (release, set, done, close,
 * try_*) may come from any thread of the runtime, except the mutex's:
 * try_lock needs a task and unlock the task holding the lock (else
 * CORIO_EPERM). Objects are not tied to a runtime. Free one only when no
 * call on it is in progress,
 * with one exception: a task whose wait on it has returned may free it at
 * once, even if the call that woke it has not yet returned (wait for a
 * wait group, then free it). Freeing right after a set or release while
 * the tasks it woke have not yet returned from their waits is not
 * allowed: they still touch the object's lock on their way out.
 */

/* Channels: FIFO queues of fixed-size elements, copied in and out. */
typedef struct corio_chan corio_chan;
#define CORIO_CHAN_UNBOUNDED SIZE_MAX

/* capacity >= 1 elements (senders wait while it is full), or
 * CORIO_CHAN_UNBOUNDED (senders never wait; CORIO_ENOMEM if memory runs
 * out). */
CORIO_API int corio_chan_new(corio_chan **chan, size_t elem_size, size_t capacity);
/* Free a channel no task is using any more. */
CORIO_API void corio_chan_free(corio_chan *chan);
/* Copy *elem in. CORIO_EPIPE if the channel is closed. */
CORIO_API int corio_chan_send(corio_chan *chan, const void *elem);
CORIO_API int corio_chan_send_until(corio_chan *chan, const void *elem, corio_time_t deadline);
CORIO_API int corio_chan_try_send(corio_chan *chan, const void *elem); /* CORIO_EAGAIN if full */
/* Copy the oldest element out. Once closed, the remaining elements are
 * still received; then CORIO_EPIPE. */
CORIO_API int corio_chan_recv(corio_chan *chan, void *elem);
CORIO_API int corio_chan_recv_until(corio_chan *chan, void *elem, corio_time_t deadline);
CORIO_API int corio_chan_try_recv(corio_chan *chan, void *elem); /* CORIO_EAGAIN if empty */
/* No more sends; wakes every waiter. Idempotent. */
CORIO_API int corio_chan_close(corio_chan *chan);
/* Elements queued now. */
CORIO_API size_t corio_chan_len(corio_chan *chan);

/*
 * Go's select over channels: wait until one of several sends and
 * receives can go ahead, do that one alone, and store its index in
 * *index. Each op names a channel, CORIO_CHAN_SEND or CORIO_CHAN_RECV,
 * and elem: the element to send (copied in), or where a received element
 * goes (NULL: dropped). An op whose chan is NULL is never ready (Go's nil
 * channel), so a caller can switch one off and call again. When several
 * are ready at once, each is as likely to be picked as any other (Go's
 * rule; beyond 16 ops, a call that finds no memory for its shuffle picks
 * less evenly), so that a busy channel cannot starve the others; to
 * prefer one, try it first with corio_chan_try_*. A select that waited
 * tries the channel that woke it first.
 *
 * Returns 0 (ops[*index] was done), CORIO_EPIPE (ops[*index]'s channel is
 * closed: a send, or a receive from a closed and drained channel, is
 * "ready" with that error, as a receive is in Go), CORIO_ETIMEDOUT (the
 * deadline passed with no op ready; a deadline already past polls
 * once), CORIO_ECANCELED, CORIO_ENOMEM (no memory to wait; or a send to
 * an unbounded channel that could not grow, *index naming it),
 * CORIO_ENOENT (n is 0 or every chan is NULL: nothing could ever be
 * ready), CORIO_EINVAL (index NULL, ops NULL with n > 0, an enabled op
 * neither SEND nor RECV, a send with elem NULL) or CORIO_EPERM (not in a
 * task). No op was done unless the result is 0; *index is n when no op
 * decided the result. A wait that ends
 * early leaves nothing behind, as every channel wait: no element taken,
 * none sent. A woken select that finds its element taken by another
 * task keeps its place in that channel's queue, as a receiver does.
 */
enum { CORIO_CHAN_SEND = 1, CORIO_CHAN_RECV = 2 };
typedef struct corio_chan_op {
    corio_chan *chan;
    int dir;     /* CORIO_CHAN_SEND or CORIO_CHAN_RECV */
    void *elem;
} corio_chan_op;
CORIO_API int corio_chan_select(const corio_chan_op *ops, size_t n, size_t *index);
CORIO_API int corio_chan_select_until(const corio_chan_op *ops, size_t n, size_t *index,
                                      corio_time_t deadline);

/* Counting semaphore (e.g. a crawler's concurrency limit). */
typedef struct corio_sem corio_sem;
CORIO_API int corio_sem_new(corio_sem **sem, size_t permits);
CORIO_API void corio_sem_free(corio_sem *sem);
CORIO_API int corio_sem_acquire(corio_sem *sem);
CORIO_API int corio_sem_acquire_until(corio_sem *sem, corio_time_t deadline);
CORIO_API int corio_sem_try_acquire(corio_sem *sem); /* CORIO_EAGAIN if none free */
/* 0, or CORIO_EOVERFLOW (nothing released) if SIZE_MAX permits are free. */
CORIO_API int corio_sem_release(corio_sem *sem);
CORIO_API size_t corio_sem_available(corio_sem *sem);

/* Mutex owned by a task; unlocking from another task is CORIO_EPERM. A task
 * must unlock before it returns: the owner is recorded as the task object,
 * so a mutex left locked by a finished task stays locked, and a later task
 * given the same object on reuse would count as its owner. */
typedef struct corio_mutex corio_mutex;
CORIO_API int corio_mutex_new(corio_mutex **mutex);
CORIO_API void corio_mutex_free(corio_mutex *mutex);
CORIO_API int corio_mutex_lock(corio_mutex *mutex);
CORIO_API int corio_mutex_lock_until(corio_mutex *mutex, corio_time_t deadline);
/* CORIO_EBUSY if another task holds it, CORIO_EDEADLK if the caller does,
 * CORIO_EPERM outside a task. */
CORIO_API int corio_mutex_try_lock(corio_mutex *mutex);
CORIO_API int corio_mutex_unlock(corio_mutex *mutex);

/*
 * Condition variable (asyncio.Condition, Go's sync.Cond, pthread_cond)
 * over a corio_mutex. corio_cond_wait: the caller holds mutex; the call
 * queues the task on cond, unlocks mutex, and waits until a signal or
 * broadcast wakes it; whatever ends the wait (a wake-up, the deadline, a
 * cancellation, shutdown), the task holds mutex again when the call
 * returns, taken back in the mutex's FIFO turn whatever cancellation
 * says. No wake-up is lost between the unlock and the wait: a signal
 * made after the caller unlocked reaches it. A wake-up does not promise
 * the condition: another task may take the mutex first and change it,
 * so wait in a loop over the predicate. Returns 0 (woken),
 * CORIO_ETIMEDOUT, CORIO_ECANCELED (a pending cancellation fails the
 * call before anything is unlocked), CORIO_ENOMEM (a light waiter
 * without memory to wait; it holds the mutex again, as after every other
 * result once the wait began), CORIO_EINVAL (NULL), or
 * CORIO_EPERM (not in a task, or mutex not held by the caller: nothing
 * unlocked). A waiter whose wait ended otherwise than by a wake-up never
 * takes a signal: it goes to the next waiter.
 *
 * corio_cond_signal wakes the first waiter, corio_cond_broadcast every
 * waiter queued at the time; with none waiting they do nothing. Either
 * may be called from any thread of the runtime, holding the mutex or
 * not. Free a condition variable with no task waiting on it. NULL
 * arguments are CORIO_EINVAL throughout.
 */
typedef struct corio_cond corio_cond;
CORIO_API int corio_cond_new(corio_cond **cond);
CORIO_API void corio_cond_free(corio_cond *cond);
CORIO_API int corio_cond_wait(corio_cond *cond, corio_mutex *mutex);
CORIO_API int corio_cond_wait_until(corio_cond *cond, corio_mutex *mutex, corio_time_t deadline);
CORIO_API int corio_cond_signal(corio_cond *cond);
CORIO_API int corio_cond_broadcast(corio_cond *cond);

/*
 * Read-write lock (Go's sync.RWMutex, tokio::sync::RwLock,
 * pthread_rwlock): any number of tasks hold it for reading at once, or
 * one task for writing. Neither side starves, by Go's rule: while a
 * writer waits, new readers wait behind it; when a writer unlocks, every
 * reader waiting at that moment gets the lock at once, ahead of the next
 * writer; writers are served in the order they came. A wait that times
 * out or is cancelled holds nothing, and readers that waited only behind
 * it (they came after it and before the next waiting writer) go ahead
 * when no writer holds the lock. Handed over directly, like the mutex: a
 * woken task holds the lock.
 *
 * The write lock is owned, as a mutex is: only its holder unlocks it
 * (CORIO_EPERM otherwise), and asking for either lock while holding the
 * write lock is CORIO_EDEADLK. Read locks are counted, not owned: any
 * task of the runtime may release one (CORIO_EPERM if none is held). A
 * read lock is not upgraded: a task holding one that asks for the write
 * lock waits for itself, until its deadline; and a reader asking again
 * while a writer waits waits behind that writer, for ever (Go forbids
 * recursive read locking for the same reason). A task must release what
 * it holds before it returns. Free the lock with nobody holding or
 * waiting for it (NULL is ignored).
 *
 * Returns 0; CORIO_ETIMEDOUT, CORIO_ECANCELED (a pending cancellation
 * fails the call even when the lock is free), CORIO_ENOMEM (a light task
 * without memory to wait), CORIO_EDEADLK, CORIO_EINVAL (NULL), CORIO_EPERM
 * (not in a task). The try forms never wait and are no cancellation
 * point: CORIO_EBUSY when the lock cannot be had at once (a try_read
 * while a writer waits included).
 */
typedef struct corio_rwlock corio_rwlock;
CORIO_API int corio_rwlock_new(corio_rwlock **rwlock);
CORIO_API void corio_rwlock_free(corio_rwlock *rwlock);
CORIO_API int corio_rwlock_read_lock(corio_rwlock *rwlock);
CORIO_API int corio_rwlock_read_lock_until(corio_rwlock *rwlock, corio_time_t deadline);
CORIO_API int corio_rwlock_try_read_lock(corio_rwlock *rwlock);
CORIO_API int corio_rwlock_read_unlock(corio_rwlock *rwlock);
CORIO_API int corio_rwlock_write_lock(corio_rwlock *rwlock);
CORIO_API int corio_rwlock_write_lock_until(corio_rwlock *rwlock, corio_time_t deadline);
CORIO_API int corio_rwlock_try_write_lock(corio_rwlock *rwlock);
CORIO_API int corio_rwlock_write_unlock(corio_rwlock *rwlock);

/* Event: set wakes every waiter and stays set until cleared. */
typedef struct corio_event corio_event;
CORIO_API int corio_event_new(corio_event **event);
CORIO_API void corio_event_free(corio_event *event);
CORIO_API int corio_event_set(corio_event *event);
CORIO_API int corio_event_clear(corio_event *event);
CORIO_API bool corio_event_is_set(corio_event *event);
CORIO_API int corio_event_wait(corio_event *event);
CORIO_API int corio_event_wait_until(corio_event *event, corio_time_t deadline);

/* Wait group (Go's sync.WaitGroup): wait until the counter is zero. */
typedef struct corio_waitgroup corio_waitgroup;
CORIO_API int corio_waitgroup_new(corio_waitgroup **wg);
CORIO_API void corio_waitgroup_free(corio_waitgroup *wg);
/* Add delta (may be negative); CORIO_EINVAL, counter unchanged, if it
 * would go below zero or past LONG_MAX. */
CORIO_API int corio_waitgroup_add(corio_waitgroup *wg, long delta);
CORIO_API int corio_waitgroup_done(corio_waitgroup *wg);
CORIO_API int corio_waitgroup_wait(corio_waitgroup *wg);
CORIO_API int corio_waitgroup_wait_until(corio_waitgroup *wg, corio_time_t deadline);

/* ------------------------------------------------------------------------ */
/* IO                                                                       */
/* ------------------------------------------------------------------------ */

/*
 * A task waits for a descriptor on its own loop (edge-triggered epoll);
 * only the task waits, its loop runs others meanwhile. The calls below
 * never return EAGAIN: they wait instead, up to their deadline (the
 * exceptions: a send or receive with MSG_DONTWAIT in its flags, and a
 * corio_recv or corio_recvfrom of the error queue or the urgent byte,
 * which never wait; see corio_recv). A peer
 * reset is CORIO_ECONNRESET (or CORIO_EPIPE on write); SIGPIPE is never
 * raised by corio's calls.
 *
 * Descriptor rules:
 *  - corio puts descriptors it waits on in non-blocking mode.
 *  - Close them with corio_close(), not close(): corio remembers which
 *    descriptors it registered, and a number reused by the kernel must
 *    not inherit that memory.
 *  - On each loop, at most one task waits to read and one to write a
 *    given descriptor (a second gets CORIO_EBUSY; on different loops both
 *    may wait, and which gets the data is the kernel's race). A task
 *    stops counting the moment its wait ends (cancelled, timed out, or
 *    woken by readiness), before it runs again; one that then waits
 *    again is a second like any other. Migrating
 *    tasks (CORIO_TASK_MIGRATE) do not choose their loop, so two of them
 *    reading one descriptor may or may not get CORIO_EBUSY: give each
 *    descriptor one reader and one writer at a time. A task blocked on a
 *    descriptor is woken with CORIO_EBADF when a task or blocking-pool
 *    function of its runtime closes it, on any loop. A close from
 *    elsewhere (a thread of no runtime, another runtime) wakes it only
 *    once its loop next polls: there, corio_shutdown() it and leave the
 *    close to the woken task (the kernel drops a closed file's pending
 *    events). A task whose wait had just ended when the descriptor was
 *    closed (on any loop) gets CORIO_EBADF too, never the file that
 *    reuses the number. A call that races a close from another thread
 *    (nothing orders the two) may act on either file, the closed one or
 *    one that reuses the number, as read(2) itself would: corio cannot
 *    tell which file a number meant once the kernel has reused it.
 *  - Regular files and directories, which epoll cannot watch, are always
 *    ready: the calls make the system call directly (a slow disk holds
 *    the loop meanwhile; corio_run_blocking is for that), and
 *    corio_wait_fd returns at once.
 *  - Descriptor numbers must be below 2^20.
 *
 * Fairness: a task whose IO calls keep completing without waiting yields
 * to the other tasks of its loop every 128 calls.
 */

#define CORIO_READABLE 1u
#define CORIO_WRITABLE 2u

/* Wait until fd is readable, or writable (exactly one of the two). */
CORIO_API int corio_wait_fd(int fd, unsigned events, corio_time_t deadline);

/* socket(2), non-blocking and close-on-exec. Returns the fd or an error. */
CORIO_API int corio_socket(int domain, int type, int protocol);

/* Connect a socket from corio_socket. A timeout or cancellation leaves the
 * socket half-connected: close it. When the system says EAGAIN (a Unix-
 * domain listener's backlog is full), no event announces room, so the
 * connect is tried again after pauses growing from 1 ms to 64 ms, up to
 * the deadline. */
CORIO_API int corio_connect(int fd, const struct sockaddr *addr, socklen_t len);
CORIO_API int corio_connect_until(int fd, const struct sockaddr *addr, socklen_t len,
                                  corio_time_t deadline);

/* Accept a connection: the new fd (non-blocking, close-on-exec) or an
 * error. CORIO_EMFILE / CORIO_ENFILE when out of descriptors: the pending
 * connection stays queued, accept again once descriptors are free. A
 * timeout or cancellation accepts nothing. Errors of one connection that
 * went away before it was accepted never come back: ECONNABORTED, and
 * those Linux passes on from the new socket (ENETDOWN, EPROTO,
 * ENOPROTOOPT, EHOSTDOWN, ENONET, EHOSTUNREACH, EOPNOTSUPP, ENETUNREACH);
 * the accept goes on to the next connection, waiting for one if need be.
 * (Linux's TCP hands over a connection reset before its accept: the
 * accept returns it, and its first read says CORIO_ECONNRESET.) */
CORIO_API int corio_accept(int listener, struct sockaddr *addr, socklen_t *len);
CORIO_API int corio_accept_until(int listener, struct sockaddr *addr, socklen_t *len,
                                 corio_time_t deadline);

/* Read at least one byte: the count, 0 at end of stream, or an error. A
 * timeout or cancellation consumes nothing. len 0 returns 0 at once, as
 * read(2) does (corio_recv of 0 bytes waits for data, as recv(2) says
 * EAGAIN until some is there). */
CORIO_API ssize_t corio_read(int fd, void *buf, size_t len);
CORIO_API ssize_t corio_read_until(int fd, void *buf, size_t len, corio_time_t deadline);

/* Write all len bytes: len, or an error (after which an unknown part may
 * have been written: corio_write_counted says how much; CORIO_EINVAL for
 * a len past SSIZE_MAX, which no count could report). */
CORIO_API ssize_t corio_write(int fd, const void *buf, size_t len);
CORIO_API ssize_t corio_write_until(int fd, const void *buf, size_t len, corio_time_t deadline);
/* corio_write, which also sets *written (if not NULL) to how many bytes
 * the system took, whatever the result: len with len, and with an error
 * (a timeout, a cancellation, a reset) the part taken before it, so that
 * a stream can go on from buf + *written after a timeout or a
 * cancellation (after a reset the peer may not have had all of it). */
CORIO_API ssize_t corio_write_counted(int fd, const void *buf, size_t len, size_t *written);
CORIO_API ssize_t corio_write_counted_until(int fd, const void *buf, size_t len, size_t *written,
                                            corio_time_t deadline);

/* One recv(2) / send(2) once the socket is ready: partial counts possible.
 * send never raises SIGPIPE.
 *
 * With MSG_DONTWAIT in flags (here, in corio_recvfrom and corio_sendto)
 * the call tries once and returns CORIO_EAGAIN instead of waiting, as
 * recv(2) and send(2) say; the deadline is unused.
 *
 * With MSG_ERRQUEUE or MSG_OOB in flags (here and in corio_recvfrom) the
 * receive reads another queue than the data's, and readiness, which is
 * about the data, says nothing of it: such a call makes the system call
 * once, as MSG_DONTWAIT, and returns what it says without waiting:
 * CORIO_EAGAIN when the error queue is empty or the announced urgent
 * byte has not arrived, CORIO_EINVAL on TCP when no urgent byte is
 * there. The deadline is unused; a pending cancellation still fails it.
 * (Linux never blocks on these either. Families that ignore the flag,
 * UDP for MSG_OOB and Unix stream sockets for MSG_ERRQUEUE, read the
 * data queue: CORIO_EAGAIN there when it is empty.) */
CORIO_API ssize_t corio_recv(int fd, void *buf, size_t len, int flags);
CORIO_API ssize_t corio_recv_until(int fd, void *buf, size_t len, int flags,
                                   corio_time_t deadline);
CORIO_API ssize_t corio_send(int fd, const void *buf, size_t len, int flags);
CORIO_API ssize_t corio_send_until(int fd, const void *buf, size_t len, int flags,
                                   corio_time_t deadline);

/*
 * Vectored and message IO: readv(2), writev(2), recvmsg(2), sendmsg(2)
 * with waiting, as the calls above. corio_readv reads at least one byte
 * into the buffers in order, as corio_read. corio_writev writes every
 * byte of every buffer, as corio_write, and sets *written (if not NULL)
 * to the bytes the system took whatever the result (a stream goes on
 * from there after a timeout). corio_recvmsg and corio_sendmsg make one
 * call once the socket is ready, as corio_recv and corio_send (partial
 * counts possible; MSG_DONTWAIT, MSG_ERRQUEUE and MSG_OOB as there: the
 * error queue's entries with their control messages come this way;
 * SCM_RIGHTS passes descriptors, received close-on-exec only with
 * MSG_CMSG_CLOEXEC, as recvmsg(2) says). corio_recvmsg and corio_sendmsg
 * are socket calls (CORIO_ENOTSOCK on a pipe, where corio_readv and
 * corio_writev work); corio_writev of no bytes makes no system call (as
 * corio_write of none: no empty datagram). CORIO_EINVAL for an iovcnt
 * (or msg_iovlen) below 0 or above IOV_MAX, a NULL array with a count,
 * a total past SSIZE_MAX, or msg NULL.
 */
CORIO_API ssize_t corio_readv(int fd, const struct iovec *iov, int iovcnt);
CORIO_API ssize_t corio_readv_until(int fd, const struct iovec *iov, int iovcnt,
                                    corio_time_t deadline);
CORIO_API ssize_t corio_writev(int fd, const struct iovec *iov, int iovcnt, size_t *written);
CORIO_API ssize_t corio_writev_until(int fd, const struct iovec *iov, int iovcnt,
                                     size_t *written, corio_time_t deadline);
CORIO_API ssize_t corio_recvmsg(int fd, struct msghdr *msg, int flags);
CORIO_API ssize_t corio_recvmsg_until(int fd, struct msghdr *msg, int flags,
                                      corio_time_t deadline);
CORIO_API ssize_t corio_sendmsg(int fd, const struct msghdr *msg, int flags);
CORIO_API ssize_t corio_sendmsg_until(int fd, const struct msghdr *msg, int flags,
                                      corio_time_t deadline);

/* Datagrams. */
CORIO_API ssize_t corio_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *from,
                                 socklen_t *fromlen);
CORIO_API ssize_t corio_recvfrom_until(int fd, void *buf, size_t len, int flags,
                                       struct sockaddr *from, socklen_t *fromlen,
                                       corio_time_t deadline);
CORIO_API ssize_t corio_sendto(int fd, const void *buf, size_t len, int flags,
                               const struct sockaddr *to, socklen_t tolen);
CORIO_API ssize_t corio_sendto_until(int fd, const void *buf, size_t len, int flags,
                                     const struct sockaddr *to, socklen_t tolen,
                                     corio_time_t deadline);

CORIO_API int corio_shutdown(int fd, int how);
/* Close fd and forget it (see the descriptor rules above). Callable from
 * any thread; from a task or blocking-pool function it also wakes the
 * waiters on fd on every loop of its runtime (CORIO_EBADF). */
CORIO_API int corio_close(int fd);

enum corio_listen_flags {
    /* SO_REUSEPORT: several listeners on one port, e.g. one accept loop
     * per corio loop, the kernel spreading connections over them. */
    CORIO_LISTEN_REUSEPORT = 1u << 0,
};

/* A TCP listener on a numeric address (NULL: all IPv4 interfaces; "::":
 * IPv6) and port (0: any free port, see corio_local_port). SO_REUSEADDR
 * always. Returns the fd or an error. Callable outside tasks. */
CORIO_API int corio_listen_tcp(const char *host, uint16_t port, int backlog, unsigned flags);
/* A bound UDP socket, same address rules. */
CORIO_API int corio_bind_udp(const char *host, uint16_t port, unsigned flags);
/* The local port a socket is bound to, or an error. */
CORIO_API int corio_local_port(int fd);

/* getaddrinfo(3) on the blocking pool. Free *res with freeaddrinfo.
 * CORIO_ENONAME (no such host or service, or no address of the family
 * asked), CORIO_ENAMETEMP (try again later), CORIO_ENAMEFAIL (any other
 * resolver failure) for resolver failures; CORIO_EINVAL for bad hints
 * (flags, socket type), CORIO_EAFNOSUPPORT for an unknown family. */
CORIO_API int corio_getaddrinfo(const char *node, const char *service,
                                const struct addrinfo *hints, struct addrinfo **res);
CORIO_API int corio_getaddrinfo_until(const char *node, const char *service,
                                      const struct addrinfo *hints, struct addrinfo **res,
                                      corio_time_t deadline);
/* Resolve host, then connect to its addresses in turn until one answers.
 * Returns the connected fd or the last error. */
CORIO_API int corio_connect_tcp(const char *host, uint16_t port, corio_time_t deadline);


/* ------------------------------------------------------------------------ */
/* Child processes                                                          */
/* ------------------------------------------------------------------------ */

/*
 * Start a program and wait for it without holding a loop, talking to it
 * through pipes read and written like any descriptor:
 * asyncio.create_subprocess_exec, tokio::process, Go's os/exec.
 *
 *     corio_process_opts o;
 *     corio_process_opts_init(&o);
 *     o.flags = CORIO_PROCESS_SEARCH_PATH;
 *     o.stdio[1] = CORIO_STDIO_PIPE;
 *     char *argv[] = {"uname", "-r", NULL};
 *     corio_process *p;
 *     int rc = corio_process_spawn(&p, argv, &o);
 *     ... corio_read(corio_process_fd(p, 1), buf, sizeof buf) until 0 ...
 *     int code;
 *     rc = corio_process_wait(p, &code);   (code: uname's exit status)
 *     corio_process_free(p);
 *
 * The child starts with an empty signal mask and SIGPIPE at its default
 * action, whatever the parent blocked or ignored (corio_signal_wait asks
 * for signals blocked in every thread; a child that inherited that mask
 * would not die of SIGTERM). Other signal dispositions, the resource
 * limits and the descriptors without FD_CLOEXEC (every descriptor corio
 * makes has it) are inherited as exec(2) passes them on.
 *
 * The waiting: on Linux 5.3 and later a pidfd (pidfd_open) that the loop
 * polls, like any descriptor; where the kernel has none (or no descriptor
 * is left for one), corio_process_wait looks with waitpid(WNOHANG) after
 * pauses growing from 1 ms to 100 ms, up to its deadline. Children are
 * reaped by these calls only: a program that reaps them elsewhere
 * (waitpid(-1), SIGCHLD set to SIG_IGN) makes the wait fail with
 * CORIO_ECHILD.
 *
 * A process handle may be used from any task of the runtime (and
 * corio_process_kill from any thread), one wait at a time; freeing it
 * ends all of that.
 */
typedef struct corio_process corio_process;

/* What each of a child's standard descriptors (stdio[0], [1], [2]) is: */
#define CORIO_STDIO_INHERIT (-1) /* the parent's own (the default) */
#define CORIO_STDIO_PIPE (-2)    /* a pipe to the parent (corio_process_fd) */
#define CORIO_STDIO_NULL (-3)    /* /dev/null */
/* ... or a descriptor >= 0 of the parent, which the child gets a copy of
 * (its file status flags, O_NONBLOCK included, are shared with it). */

/* Look argv[0] up in PATH (execvp's rule) when it contains no '/': the
 * parent's PATH, even when envp gives the child another one. */
#define CORIO_PROCESS_SEARCH_PATH 1u
/* The child leads a process group of its own (setpgid(0, 0)): a terminal's
 * ^C does not reach it, and kill(-pid, sig) reaches it and its children. */
#define CORIO_PROCESS_NEW_GROUP 2u
/* corio_process_free sends SIGKILL to a child that has not been reaped. */
#define CORIO_PROCESS_KILL_ON_FREE 4u

typedef struct corio_process_opts {
    unsigned flags;    /* CORIO_PROCESS_* */
    int stdio[3];      /* CORIO_STDIO_* or a descriptor, for fds 0, 1, 2 */
    const char *cwd;   /* the child's working directory; NULL: the parent's */
    char *const *envp; /* its environment, NULL-terminated; NULL: environ */
} corio_process_opts;

/* No flags, every stdio CORIO_STDIO_INHERIT, cwd and envp NULL. */
CORIO_API void corio_process_opts_init(corio_process_opts *opts);

/*
 * Start argv[0] with the arguments argv (NULL-terminated; argv[0] is also
 * the name the program sees) and store its handle in *out. opts NULL means
 * the defaults. Pipes are made with FD_CLOEXEC and, on the parent's side,
 * O_NONBLOCK: read and write them with corio_read and corio_write (the
 * child's side is blocking, as programs expect). The call holds its loop
 * for the clone and exec (posix_spawn: tens to hundreds of microseconds);
 * it may be made outside a task too.
 *
 * Returns 0; CORIO_ENOENT, CORIO_EACCES, or another exec(2) error the
 * child met starting argv[0], or a chdir(2) error for cwd (no process is
 * left behind then); CORIO_EBADF
 * (a stdio descriptor that is not open); CORIO_EINVAL (out or argv NULL,
 * argv[0] NULL, an unknown flag or stdio value); CORIO_EMFILE /
 * CORIO_ENFILE (no descriptor for a pipe); CORIO_EAGAIN (the process limit);
 * CORIO_ENOMEM.
 */
CORIO_API int corio_process_spawn(corio_process **out, char *const argv[],
                                  const corio_process_opts *opts);

/* The child's process id; it stays the child's (no other process can
 * take the number) until the child is reaped: by a wait, by the reaper a
 * freed handle gets, or by the kernel where the program ignores SIGCHLD. */
CORIO_API pid_t corio_process_pid(const corio_process *p);

/* The parent's end of the pipe for the child's descriptor `which` (0, 1 or
 * 2): write to the child's stdin (0), read its stdout (1) or stderr (2).
 * -1 if that descriptor was not CORIO_STDIO_PIPE, or is closed, or
 * `which` is not 0, 1 or 2. The handle owns the descriptor: close it with
 * corio_process_close_fd. */
CORIO_API int corio_process_fd(const corio_process *p, int which);

/* Close the parent's end of pipe `which`: closing 0 is how the child sees
 * the end of its input. Returns 0, or CORIO_EBADF if it was not open (or
 * `which` is not 0, 1 or 2). A task blocked on it is woken with
 * CORIO_EBADF, as by corio_close. */
CORIO_API int corio_process_close_fd(corio_process *p, int which);

/*
 * Wait until the child ends and reap it; store its exit status (0-255) in
 * *code, or minus the signal's number if a signal ended it (asyncio's
 * returncode: -9 for SIGKILL). Once reaped, every later wait returns the
 * same code at once (a pending cancellation still fails it first, as it
 * fails any blocking call). A wait that times out or is cancelled leaves
 * the child running and the handle as it was.
 *
 * Returns 0; CORIO_ETIMEDOUT, CORIO_ECANCELED; CORIO_EBUSY (another task
 * is waiting for it); CORIO_ECHILD (the child was reaped elsewhere: see
 * above); CORIO_ENOMEM (no memory to wait with: a light task's save
 * buffer, the loop's descriptor table, a timer; the child is left as it
 * was); CORIO_EINVAL (p or code NULL); CORIO_EPERM (not in a task).
 */
CORIO_API int corio_process_wait(corio_process *p, int *code);
CORIO_API int corio_process_wait_until(corio_process *p, int *code, corio_time_t deadline);

/* Send signal `sig` to the child (0 checks that it can be sent). Never
 * reaches another process: once the child has been reaped this returns
 * CORIO_ESRCH, even if its number has been reused (a pidfd names the
 * process, and is checked to name the child when it is opened; without
 * one, the reaping and the sending are ordered by a lock). Without a
 * pidfd that holds only while these calls alone reap the child: where the
 * program reaps it elsewhere (above), kill(2) by number may reach a
 * process that took the number since. Returns 0, CORIO_ESRCH,
 * CORIO_EINVAL (p NULL or sig not a signal number) or CORIO_EPERM.
 * Callable from any thread. */
CORIO_API int corio_process_kill(corio_process *p, int sig);

/*
 * Close the pipes and release the handle. A child that has ended is
 * reaped then and there. One still running is not stopped (unless
 * CORIO_PROCESS_KILL_ON_FREE sends it SIGKILL): freed in a task, a
 * detached light task of the runtime reaps it once it ends (one task
 * counted by max_tasks); freed outside one, or when the runtime ends
 * first, or when that task cannot be spawned (no memory, max_tasks
 * reached), it stays a zombie once it ends until the program reaps it
 * (waitpid on corio_process_pid's number) or ends. No other call on the
 * handle may be under way, or come after: a task that frees it must know
 * the others' calls have returned (a kill's CORIO_ESRCH says the child
 * was reaped, not that the wait that reaped it has returned). NULL is
 * ignored.
 */
CORIO_API void corio_process_free(corio_process *p);

/* ------------------------------------------------------------------------ */
/* Signals                                                                  */
/* ------------------------------------------------------------------------ */

/*
 * Wait until one of the signals in `set` arrives and store its number in
 * *signo: a server's or crawler's way to hear SIGINT or SIGTERM and shut
 * down in order, with no handler running in the middle of a task.
 *
 * The signals must be blocked in every thread of the process, or the
 * kernel delivers them the usual way (their handler, or the default
 * action: SIGINT ends the process). Block them with pthread_sigmask()
 * before corio_run and before creating other threads: the runtime's
 * threads inherit the mask of the thread that starts them. Only signals
 * sent to the whole process are waited for (kill(2), a terminal's ^C, a
 * timer aimed at the process); one sent to a thread (raise(3),
 * pthread_kill(3)) reaches only a wait on that thread's loop. A signal
 * that arrives while no task waits stays pending and is taken by the
 * next wait. Each arrival goes to one waiter; several arrivals of a
 * standard signal while it is pending are one, as the kernel counts them
 * (real-time signals queue). SIGKILL and SIGSTOP in `set` are ignored, so
 * a set from sigfillset() waits for every signal the mask blocks.
 *
 * Blocked signals stay blocked in processes the program starts (the mask
 * survives exec: reset it for them, e.g. posix_spawnattr_setsigmask), and
 * one still pending when the program unblocks them is delivered then.
 *
 * Returns 0; CORIO_EINVAL (set or signo NULL, no signal in set other than
 * SIGKILL and SIGSTOP, or one of them not blocked in the calling thread),
 * CORIO_ETIMEDOUT, CORIO_ECANCELED, CORIO_EMFILE / CORIO_ENFILE /
 * CORIO_ENOMEM (the signalfd the wait uses could not be made), another
 * error of corio_read, or CORIO_EPERM (not in a task).
 *
 * Declared where sigset_t is (POSIX: not under a strict -std=c11 with no
 * feature macro, where <signal.h> leaves it out).
 */
#if defined(_POSIX_C_SOURCE) || defined(_XOPEN_SOURCE) || defined(_DEFAULT_SOURCE) || \
    defined(_GNU_SOURCE) || !defined(__STRICT_ANSI__)
CORIO_API int corio_signal_wait(const sigset_t *set, int *signo, corio_time_t deadline);
#endif

#ifdef __cplusplus
}
#endif

#endif /* CORIO_H */
