/*
 * loop.h: the per-core event loop and the runtime that owns the loops.
 *
 * One loop per core, one OS thread per loop. Everything a loop touches on
 * its hot path is its own: the ready list, the stealable run queue (whose
 * head thieves may CAS), the timer heap, the stack pool, the task free
 * list, the epoll instance. Other threads reach a loop only through its
 * inbox (a lock-free stack of tasks to make ready) and its eventfd, which
 * is written only when the loop is parked in epoll_wait: waking a busy
 * loop costs no syscall.
 *
 * Fields are grouped by who may touch them. "owner" means the loop's own
 * thread only.
 */
#ifndef CORIO_LOOP_H
#define CORIO_LOOP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "arena.h"
#include "corio.h"
#include "ctx.h"
#include "io.h"
#include "poller.h"
#include "runq.h"
#include "sanitize.h"
#include "stack.h"
#include "timer.h"

struct corio__runtime;
struct corio__blocking_pool;

/* Why a task switched to its loop's scheduler context. */
enum corio__switch_reason {
    CORIO__SWITCH_NONE = 0,
    CORIO__SWITCH_SUSPEND, /* waiting or yielding; nothing more to do */
    CORIO__SWITCH_EXIT,    /* finished: release its stack, publish DONE */
};

/* A loop polls (inbox, timers, descriptors) every this many tasks run,
 * even when busy. 61 is the interval Tokio and Go settled on. */
#define CORIO__POLL_INTERVAL 61u

/* What one loop last learnt of another's silent thread (balance.c). */
typedef struct corio__peer_watch {
    int64_t silence;   /* the peer's activity_ns when sampled: which silence */
    int64_t at;        /* when sampled (the watcher's now) */
    int64_t cpu_ns;    /* the peer thread's CPU time then */
    int64_t probed_ns; /* the clock read with it (at may be a poll old) */
    bool off_cpu;      /* the verdict: kept off the CPU, not stuck */
} corio__peer_watch;

typedef struct corio__loop {
    /* --- owner --- */
    struct corio__runtime *rt;
    unsigned index;
    corio__ctx sched_ctx;          /* the scheduler's context (thread stack) */
    corio__san sched_san;
    struct corio_task *current;    /* task running now, or NULL in scheduler */
    struct corio_task *ready_head, *ready_tail; /* started tasks ready to run */
    struct corio_task *live;       /* started, unfinished tasks homed here */
    size_t live_count;
    size_t joining;                /* live tasks blocked joining another task */
    int switch_reason;             /* enum corio__switch_reason */
    unsigned tick;                 /* tasks run since the last poll */
    size_t queue_picks;            /* picks still to take from the run and
                                    * roam queues before the ready list:
                                    * all they hold, after a poll that
                                    * found none owed and after a lone
                                    * task's yield (sched.c) */
    size_t roam_picks;             /* how many of those picks take the
                                    * roam queue first */
    bool overflow_turn;            /* the next start from the run queue
                                    * takes its overflow's oldest task (set
                                    * at a poll that finds one there) */
    bool roam_overflow_turn;       /* the same for the roam queue */
    struct corio_task *ready_mark; /* the last task that was ready before
                                    * the poll that set queue_picks: the
                                    * ready list up to it goes first; NULL
                                    * once it has run (sched.c) */
    corio_time_t now;              /* cached at the last poll */
    corio_time_t inbox_seen_ns;    /* last poll that found tasks in the inbox */
    corio_time_t stole_ns;         /* last successful steal (time of last poll) */
    corio_time_t stack_trim_at;    /* busy trim due (0: no surplus seen) */
    bool stopping;                 /* runtime shutdown seen by this loop */
    bool shutdown_counted;         /* left rt->active_loops */
    bool searching;                /* counted in rt->nsearching */
    struct corio_task *stalled_head, *stalled_tail; /* light tasks that are
                                    * ready but cannot have the shared stack:
                                    * its owner's frames could not be saved
                                    * (no memory); off the ready list, linked
                                    * by `next` (light.c) */
    corio_time_t stalled_retry_at; /* when they try again if the owner has
                                    * not run by then */
    int64_t stalled_backoff;       /* the wait that set stalled_retry_at;
                                    * 0 once the stack changed hands */
    corio__timers timers;
    corio__stack_pool stacks;
    struct corio_task *free_tasks; /* recycled regular task objects */
    struct corio_task *free_light; /* recycled light task objects */
    corio__arena arena;            /* task slabs, light tasks' saved stacks */
    uint64_t id_next, id_end;      /* block of task ids being handed out */
    uint64_t rng;                  /* victim choice */
    unsigned spawn_count;          /* spawns, to pace activity_ns */
    size_t start_credit;           /* own tasks balance lets start unchecked */
    int coop_budget;               /* IO calls left before a forced yield */
    corio__poll poll;              /* epoll + wake-up eventfd */
    corio__io io;                  /* descriptor table */
    pthread_t thread;
    bool thread_started;
    corio__peer_watch *peer_watch; /* one per loop of the runtime */

    /* Light tasks' shared stack and who occupies it. */
    corio__stack shared_stack;
    corio__san shared_san;
    struct corio_task *shared_owner; /* light task whose frames are on it */

    /* Signal stack for the overflow reporter. */
    void *altstack;
    size_t altstack_size;

    /* --- other loops: steal (head) --- */
    corio__runq runq;

    /* --- published by the owner (relaxed; a poll's activity_ns is a
     * release, sched.c) for thieves and spawners --- */
    _Alignas(CORIO__CACHE_LINE) _Atomic size_t load; /* corio__loop_load() */
    _Atomic int64_t activity_ns;   /* time of the last poll, spawn burst or fresh-stack start */
    _Atomic int64_t seek_ns;       /* when it last looked for tasks to steal,
                                    * or woke idle from a park (balance.h:
                                    * who is worth holding for) */
    _Atomic pid_t thread_id;       /* its thread, for probes (0: not started) */
    _Atomic int stat_fd;           /* that thread's /proc stat (thread_probe.h),
                                    * open from its start to the runtime's end;
                                    * -1 before, or if it could not be opened */
    _Atomic clockid_t cpu_clock;   /* that thread's CPU-time clock */

    /* --- any thread: push tasks to make ready; parked flag --- */
    _Alignas(CORIO__CACHE_LINE) _Atomic(struct corio_task *) inbox;
    _Alignas(CORIO__CACHE_LINE) _Atomic int parked; /* 1 while in (or entering) epoll_wait */
    _Atomic int rechecks;     /* parked with a balance recheck due (sched.c, park) */
    _Atomic int64_t woken_ns; /* when another thread last cleared parked (balance.c) */
    _Atomic int sent_to_search; /* woken for queued tasks: searches on waking (sched.c, park) */

    /* --- other loops: steal (head) --- Started migrating tasks, woken here
     * and homeless until a loop (this one or a thief) takes them and
     * adopts them (sched.c). Empty unless CORIO_TASK_MIGRATE is used. */
    corio__runq roam;
} corio__loop;

typedef struct corio__runtime {
    unsigned nloops;
    corio__loop **loops;
    size_t stack_size;             /* default for tasks */
    corio_time_t stack_retain_ns;  /* a busy loop's idle-stack surplus lasts */
    size_t max_tasks;              /* 0: no limit */
    bool pin_cpus;
    bool huge_pages;               /* arenas may ask for THP (corio_config) */
    unsigned blocking_threads;
    /* Set (never cleared) by the first CORIO_TASK_MIGRATE spawn: until then
     * no loop looks at other loops' roam queues. */
    _Atomic bool migrating;
    struct corio__blocking_pool *pool;
    /* corio_run's main task: detached, as nobody joins it, yet any task
     * of the runtime may cancel it (corio_cancel). Set before it is
     * queued, never changed. */
    corio_task *main_task;
    void *main_result;
    int main_error;                /* why the main task never ran, or 0 */

    _Alignas(CORIO__CACHE_LINE) _Atomic bool stopping; /* main task finished */
    _Atomic unsigned active_loops; /* loops still with live tasks after stop */
    _Atomic size_t live_tasks;     /* maintained only when max_tasks != 0 */
    _Alignas(CORIO__CACHE_LINE) _Atomic int nparked;    /* loops parked (hint) */
    _Atomic int nsearching;        /* loops looking for work to steal */
    corio__stack_spill stack_spill; /* surplus stacks of the loops' pools (stack.h) */
    struct corio__runtime *debug_next; /* corio__debug_runtimes list */
} corio__runtime;

/* Every running runtime, for debuggers (tools/gdb/corio.py) and the
 * watchdog's dump; changed only by corio__debug_register/unregister
 * (debug.c), under the list's lock, when a runtime starts or ends. */
extern corio__runtime *corio__debug_runtimes;

/* rt->nsearching as the last corio_run saw it once every loop had
 * exited: 0 unless a loop left counted as searching (tests read it). */
extern _Atomic int corio__exit_nsearching;

/* The loop whose thread is calling, or NULL. */
corio__loop *corio__loop_current(void);
/* The runtime of the calling thread (loop or blocking-pool thread). */
corio__runtime *corio__runtime_current(void);
void corio__set_thread_runtime(corio__runtime *rt);

int corio__loop_init(corio__loop *l, corio__runtime *rt, unsigned index);
void corio__loop_destroy(corio__loop *l);
/* Run the loop on the calling thread until the runtime has stopped. */
void corio__loop_run(corio__loop *l);

/* Make t ready on its home loop, from any thread. */
void corio__loop_make_ready(struct corio_task *t);
/* Queue a never-run task on loop l from l's own thread (stealable unless
 * pinned). */
void corio__loop_push_new(corio__loop *l, struct corio_task *t);
/* Wake loop l if it is parked. Any thread. */
void corio__loop_wake(corio__loop *l);
/* Wake every loop (shutdown). */
void corio__runtime_wake_all(corio__runtime *rt);

/* Give up the CPU from the current task; returns when it runs again.
 * The task must already be queued somewhere or be waiting (wait.c). */
void corio__loop_suspend(corio__loop *l, struct corio_task *self);

/*
 * The loop's load for placement (balance.h): started, unfinished tasks,
 * minus those blocked joining another task. A task waiting for a child it
 * handed CPU work to will need next to no CPU itself; counting it made
 * idle loops refuse that very work. Owner only; corio__loop_publish_load
 * copies it where other loops read it.
 */
static inline size_t corio__loop_load(const corio__loop *l)
{
    return l->live_count - l->joining;
}

static inline void corio__loop_publish_load(corio__loop *l)
{
    atomic_store_explicit(&l->load, corio__loop_load(l), memory_order_relaxed);
}

/* Loop internals shared by loop.c, sched.c and task.c. */
void corio__set_thread_loop(corio__loop *l);
/* Owner: append t to the ready list. */
void corio__ready_push(corio__loop *l, struct corio_task *t);
/* A never-run task for loop l from another thread (through the inbox). */
void corio__loop_push_new_remote(corio__loop *l, struct corio_task *t);
/* Owner: take the inbox, oldest first, as a list linked by `next`. */
struct corio_task *corio__inbox_take(corio__loop *l);
/* New stealable work was queued on `from` (the caller's loop or another;
 * its published load is what is read): wake a parked loop if no loop is
 * already searching. Never-run tasks go first to a loop whose load is
 * low enough that balance lets it steal them; failing that, to a loaded
 * one that will not look again on its own (it rescues them if `from`
 * turns out stuck). Woken migrating tasks (`started`) are worth any idle
 * loop. */
void corio__notify_idle(corio__runtime *rt, corio__loop *from, bool started);
/* Owner: t, a started migrating task just woken here, leaves this loop
 * for its roam queue, settling what its wait left on the loop. */
void corio__roam_push(corio__loop *l, struct corio_task *t);

/*
 * Light tasks: before a light task may suspend, its save buffer must hold
 * everything from the shared stack's top down to where the switch will
 * leave the stack pointer. corio__light_reserve measures the depth at the
 * call and adds this margin for the frames between there and the switch.
 * It is called where every wait commits (wait.c, wait_commit_at) and
 * where a yield suspends, so what lies below is always the same short
 * path: the call into the scheduler and the switch's own 64 bytes
 * (x86-64; 176 on aarch64). Measured on x86-64 with gcc -O2, a task
 * asleep in corio_sleep: 128 bytes deep at the reservation, 176 saved, so
 * 48 below it; the margin adds 16 bytes of slack and makes the request
 * 192 bytes, one of the arena's size classes (test_light checks it:
 * reserving at arm time, as corio did before, meant 256: 64 MB more per
 * million sleepers). A miss is corrected by growing the buffer at save
 * time; every byte of margin is a megabyte per million sleeping tasks.
 * Measured the same way: aarch64 160 deep, 288 saved (the switch keeps
 * 176 bytes), so 128 below plus 16 makes 304, in the 320 class; the
 * ucontext backend counts a kilobyte below its switch for swapcontext's
 * frame (ctx_ucontext.c), 1,025 bytes below.
 */
#if defined(CORIO_CTX_UCONTEXT)
#define CORIO__LIGHT_SAVE_MARGIN 1040
#elif defined(__aarch64__)
#define CORIO__LIGHT_SAVE_MARGIN (144 + CORIO__LIGHT_SAVE_UNOPTIMISED)
#else
#define CORIO__LIGHT_SAVE_MARGIN (64 + CORIO__LIGHT_SAVE_UNOPTIMISED)
#endif
/* Without optimisation (-O0, a debug build) the path below the
 * reservation keeps frames of its own: x86-64 gcc -O0, 368 deep at the
 * reservation and 608 saved, so 240 below, 192 more than at -O2 (the
 * margin then makes the request 624, in the 640 class; aarch64 -O0
 * saved 720 in the 768 class). Without it a debug build grew the buffer
 * at every save. */
#ifdef __OPTIMIZE__
#define CORIO__LIGHT_SAVE_UNOPTIMISED 0
#else
#define CORIO__LIGHT_SAVE_UNOPTIMISED 192
#endif
int corio__light_reserve(struct corio_task *self);

#endif /* CORIO_LOOP_H */
