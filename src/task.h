/*
 * task.h: the task object and the wait protocol every blocking call uses.
 *
 * Life of a task:
 *
 *   NEW ──first run──> RUNNING <──> READY
 *                        │  ^
 *                   wait │  │ woken
 *                        v  │
 *                      WAITING          RUNNING ──returns──> DONE
 *
 * A NEW task may be stolen by any loop; the loop that first runs it becomes
 * its home for good (DESIGN.md: compilers cache thread-local addresses such
 * as errno's across calls, so moving a started C stack to another thread
 * would break correct code), unless it was spawned CORIO_TASK_MIGRATE: such
 * a task, woken from a wait that leaves nothing behind on its loop, goes
 * to its loop's roam queue without a home, and the loop that takes it from
 * there (its old one or a thief) adopts it (sched.c). `state` is written
 * only by the loop that holds the task; the scheduler reads it (whether a
 * task is NEW decides how a loop runs it), and so do the debug dump and
 * the gdb script. Completion is published through `join` instead, which
 * other threads read.
 *
 * Waiting (wait.c). A task blocks on one thing at a time, so all its wait
 * state lives in the task object and its run state, never in its frames
 * (light tasks' frames move while suspended). `wait` is a 64-bit word: a
 * generation count in the high bits, a pending-cancellation bit,
 * IDLE/ARMED/FIRED in the low two. Arming a wait bumps the generation and
 * yields a token; a waker fires the task with
 * CAS(token -> FIRED) and only the one CAS that succeeds may enqueue it.
 * The generation makes a late waker holding an old token harmless: task
 * memory is never returned to malloc while the runtime lives (task slabs,
 * freed at corio_run's end), so a stale CAS hits a task object, fails, and
 * changes nothing.
 *
 * Join word: JOIN_NONE, JOIN_DONE, JOIN_DETACHED, or the address of the one
 * task waiting to join (whose token is in its run state's join_token). The
 * task's memory is recycled when it is DONE and its handle has been joined
 * or detached, whichever comes last; the exchange on this word decides who
 * does it. A recycled object reads JOIN_RELEASED until a spawn reuses it,
 * so a handle used again after its release (joined twice, given twice to
 * one gather) gets CORIO_EINVAL instead of being released twice, as long
 * as its memory has not been reused.
 */
#ifndef CORIO_TASK_H
#define CORIO_TASK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "corio.h"
#include "ctx.h"
#include "sanitize.h"
#include "stack.h"
#include "wait_kind.h"

struct corio__loop;

enum corio__task_state {
    CORIO__TASK_NEW = 0,
    CORIO__TASK_READY,
    CORIO__TASK_RUNNING,
    CORIO__TASK_WAITING,
    CORIO__TASK_DONE,
};

enum corio__task_flag {
    CORIO__TF_LIGHT = 1u << 0,      /* runs on the loop's shared stack */
    CORIO__TF_PINNED = 1u << 1,     /* spawned onto a chosen loop: never stolen */
    CORIO__TF_UNRUN = 1u << 2,      /* finished without running (exit_error says why) */
    CORIO__TF_MAIN = 1u << 3,       /* corio_run's main task */
    CORIO__TF_MIGRATE = 1u << 4,    /* may change loops when woken (CORIO_TASK_MIGRATE) */
    /* Bookkeeping a wait left on the loop it waited on, undone by that
     * loop: by the task when it resumes there, or by the loop when it lets
     * the task migrate (sched.c, roam_push). */
    CORIO__TF_TIMED = 1u << 5,      /* counted in its loop's timers.armed */
    CORIO__TF_JOINING = 1u << 6,    /* counted in its loop's `joining` */
    /* Spawned with a discard function: until it first runs, `fn` is
     * corio__run_wrapped and `arg` a corio__spawn_discard (below). */
    CORIO__TF_DISCARD = 1u << 7,
};

/* What a task spawned with a discard function carries until it first
 * runs. Kept out of the task object, which has no room left (64 bytes),
 * so only spawns that ask for it pay: a malloc, freed when the task
 * starts or is discarded, unless the spawner keeps it in memory of its
 * own that outlives the task (`kept`: task groups, whose per-child record
 * holds one). The task's function is then corio__run_wrapped, which
 * unwraps the real one and its argument: the start path has nothing to
 * check, and only the never-run path (sched.c) looks at the flag. */
struct corio__spawn_discard {
    corio_fn fn;
    void *arg;
    void (*discard)(void *arg, int error);
    bool kept;
};

/* The function of a task spawned with a discard: fn(arg) of its wrapper,
 * freed first unless kept. */
void *corio__run_wrapped(void *wrapper);

#define CORIO__WAIT_IDLE 0u
#define CORIO__WAIT_ARMED 1u
#define CORIO__WAIT_FIRED 2u
#define CORIO__WAIT_STATE_MASK 3u
#define CORIO__WAIT_CANCEL 4u  /* a corio_cancel() waits for the next call */
#define CORIO__WAIT_GEN_ONE 8u

#define CORIO__JOIN_NONE ((uintptr_t)0)
#define CORIO__JOIN_DONE ((uintptr_t)1)
#define CORIO__JOIN_DETACHED ((uintptr_t)2)
#define CORIO__JOIN_RELEASED ((uintptr_t)3)
/* Set while a finisher publishes DONE (task.c, join_lock). */
#define CORIO__JOIN_LOCK ((uintptr_t)4)
/* The word of a task set's member (set.c) holds the address of its member
 * record | JOIN_SET: the record's address alone while the task runs,
 * | JOIN_DONE once it has finished, | JOIN_LOCK while its finisher hands
 * it to the set. Records and task objects are 64-byte aligned (loop
 * arenas), so neither has these four bits; the constants above
 * are all below JOIN_SET. */
#define CORIO__JOIN_SET ((uintptr_t)8)
#define CORIO__JOIN_TAGS ((uintptr_t)15)

struct corio__task_run;

/*
 * The task object is the handle: one cache line (64 bytes; static_assert
 * below) holding everything a spawn writes and a join reads. With a
 * million tasks spawned and not yet joined, those million objects are
 * memory the kernel hands over zeroed on first touch, and that zeroing
 * was 40% of spawn+join's time on our VMs (192 bytes a task: 183 MiB;
 * now 61 MiB). What only a started task needs is its run state (below),
 * which a regular task keeps at the top of its own stack and a light task
 * right after its handle (a light task's object is two lines).
 *
 * Fields that share memory are used one before the task first runs and
 * the other after: `fn`/`result` (the function is not needed once it has
 * returned; debuggers still see `fn` while the task lives), `arg`/`run`
 * (task_start moves the argument into the run state).
 */
struct corio_task {
    struct corio_task *next;      /* link of the one queue the task is in */
    union {
        corio_fn fn;              /* until it returns */
        void *result;             /* written before DONE is published */
    };
    union {
        void *arg;                /* until task_start */
        struct corio__task_run *run; /* from task_start until it exits */
    };
    struct corio__loop *home;     /* set at first run (at spawn if pinned) */
    uint64_t id;
    _Atomic uintptr_t join;       /* see "Join word" above */
    _Atomic uint64_t wait;        /* generation | IDLE/ARMED/FIRED */
    union {
        uint32_t stack_pages;     /* regular task: its stack's size, 4 KiB units */
        uint32_t saved_cap;       /* light task: bytes its save buffer holds */
        int32_t exit_error;       /* UNRUN task: why it never ran
                                   * (CORIO_ESHUTDOWN, CORIO_ENOSTACK) */
    };
    uint8_t state;                /* enum corio__task_state; home loop only */
    uint8_t flags;                /* enum corio__task_flag */
    _Atomic bool cancel_sticky;   /* every wait fails from now on (group cancel) */
    uint8_t wait_what;            /* enum corio__wait_kind; home loop only */
} __attribute__((aligned(64)));

/*
 * A started task's run state; valid from task_start until the task exits
 * (a regular task's stack, where it lives, then goes back to the pool).
 * Home loop only unless marked. Other threads reach it only while the
 * task is certainly alive: a waker after its CAS on the wait word won
 * (the task is waiting), a sync object for a task in its wait queue (the
 * task leaves the queue before it can exit), a finisher for the joiner it
 * found under its join lock (the joiner cannot leave its join meanwhile).
 */
struct corio__task_run {
    corio__ctx ctx;               /* saved context while not running */
    union {
        void *arg;                /* until task_entry has read it */
        struct corio_task *wq_prev; /* place in a sync object's wait queue */
    };
    struct corio_task *wq_next;   /* wait queue (waitq.h), under its lock */
    struct corio_task *live_prev, *live_next; /* home's started tasks */
    union {
        _Atomic uint64_t join_token; /* this task's wait token while it waits
                                      * to join another (read by that one's
                                      * finisher) */
        uint64_t wq_ticket;       /* its turn in a sync object's wait queue,
                                   * under its lock (waitq.h; never while
                                   * it joins) */
    };
    union {
        void *saved;              /* light task: copy of its stack while out */
        unsigned stack_vg_id;     /* regular task: Valgrind's id for its stack
                                   * (0 unless built with CORIO_VALGRIND) */
    };
    uint32_t saved_len;           /* light task: bytes in `saved` */
    int wake_result;              /* any thread: set by the waker that fired */
    corio__san san;               /* checker state (sanitize.h); empty unless
                                   * a sanitizer is built in */
};

/* A light task: handle and run state together. */
struct corio__light_task {
    struct corio_task task;
    struct corio__task_run run;
} __attribute__((aligned(64)));

/* Bytes at the top of a regular task's stack taken by its run state. */
#define CORIO__RUN_ROOM ((sizeof(struct corio__task_run) + 63) & ~(size_t)63)

#define CORIO__STACK_UNIT 4096u

_Static_assert(sizeof(struct corio_task) == 64, "a task handle is one cache line");
#if !defined(CORIO__ASAN) && !defined(CORIO__TSAN) && !defined(CORIO_CTX_UCONTEXT)
_Static_assert(sizeof(struct corio__light_task) == 128, "a light task is two cache lines");
#endif

/* A started regular task's own stack, as the stack pool describes it (its
 * run state is the top CORIO__RUN_ROOM bytes). */
static inline corio__stack corio__task_stack(const struct corio_task *t)
{
    size_t size = (size_t)t->stack_pages * CORIO__STACK_UNIT;
    return (corio__stack){.lo = (char *)t->run + CORIO__RUN_ROOM - size,
                          .size = size,
                          .vg_id = t->run->stack_vg_id};
}

/* ---- wait protocol (wait.c) ---- */

/* Arm a wait of the current task and store the token to hand to sources.
 * 0 or CORIO_ECANCELED (a cancellation was pending: it is consumed). */
int corio__wait_arm(corio_task *self, uint64_t *token);
/* Abandon an armed wait that never needed to block. Returns 0, or the
 * wake result if a waker had already fired (the task then is, or will be,
 * in a run queue: it must suspend to consume that wake-up). */
int corio__wait_disarm(corio_task *self, uint64_t token);
/*
 * Block until fired, the deadline passes (-ETIMEDOUT) or a cancellation is
 * delivered (-ECANCELED). Returns the wake result: 0 or what the waker
 * passed, or CORIO_ENOMEM without blocking (a light task's save buffer
 * could not be reserved; reserved here, where every wait passes just
 * before the switch, see loop.h). The caller then unregisters from its
 * sources if needed.
 */
int corio__wait_commit(corio_task *self, uint64_t token, corio_time_t deadline,
                       enum corio__wait_kind what);
/* For waits nothing announces the end of (a full listener backlog, a
 * close under way, a child without a pidfd): sleep *pause, or to the
 * deadline if sooner, as a `what` wait (for debuggers), and double *pause
 * for next time, up to max. 0 when the pause is over; CORIO_ETIMEDOUT at
 * the deadline (at once if it has passed), CORIO_ECANCELED, or
 * CORIO_ENOMEM (a light task's save buffer). */
int corio__pause(corio_task *self, corio_time_t *pause, corio_time_t max, corio_time_t deadline,
                 enum corio__wait_kind what);
/* Any thread: wake t if it still waits with this token. True if this call
 * woke it. */
bool corio__task_fire(corio_task *t, uint64_t token, int result);
/* Undo what a wait left counted on t's home loop (CORIO__TF_TIMED,
 * CORIO__TF_JOINING) and clear those flags; nothing if already done. On
 * the home loop's thread: by the task once its wait is over, or by the
 * loop as it lets a migrating task go (sched.c, corio__roam_push). */
void corio__wait_settle(corio_task *t);
/* The coming wait of self (for other tasks to finish: a join, wait-any,
 * a set's take) needs no CPU: count it in its loop's `joining`, left out
 * of the load placement reads (loop.h), until corio__wait_settle. */
void corio__wait_count_joining(corio_task *self);
/* 0, or CORIO_ECANCELED if a cancellation is pending (consumed) or the
 * task is cancelled for good: for calls that fail when cancelled even
 * if they need not wait (yield, the descriptor calls of net.c). */
int corio__cancel_point(corio_task *self);
/* A wait ended by cancellation, but its operation completed anyway: the
 * cancellation applies to the task's next blocking call instead. */
void corio__cancel_repend(corio_task *self);
/* Give the CPU to other ready tasks of the loop (no cancellation point),
 * even when a light task cannot reserve its save buffer. */
void corio__yield_now(corio_task *self);
/* Any thread: wake t from whatever wait it is in (cancellation). */
bool corio__task_fire_any(corio_task *t, int result);

/* Waits that cancellation does not end (a group's close; wait.c says
 * why). Arm ignores shutdown and a sticky cancel, and takes a pending
 * cancellation off the word, noting it in *cancelled. Commit blocks
 * without deadline until fired, a light task even without memory for its
 * save buffer; it returns 0 or what the waker passed, or CORIO_ECANCELED
 * (noted in *cancelled) when a cancellation fired it: the caller then
 * unregisters and waits again. A wait that turns out needless is undone
 * by corio__wait_disarm. When done, corio__wait_uncancellable_end puts a
 * noted one-shot cancellation back for the task's next call. */
uint64_t corio__wait_arm_uncancellable(corio_task *self, bool *cancelled);
int corio__wait_commit_uncancellable(corio_task *self, enum corio__wait_kind what,
                                     bool *cancelled);
void corio__wait_uncancellable_end(corio_task *self, bool cancelled);

/* ---- task lifecycle (task.c) ---- */

/* The task being run by the calling thread, or NULL. */
corio_task *corio__current_task(void);
/* The start of a blocking call: *self = the calling task; CORIO_EPERM
 * outside one, else corio__cancel_point's answer. */
static inline int corio__enter_call(corio_task **self)
{
    *self = corio__current_task();
    return *self ? corio__cancel_point(*self) : CORIO_EPERM;
}
/* Mark t finished: publish DONE, wake its joiner, recycle if detached.
 * Runs on t's home loop, off t's stack. */
void corio__task_finish(struct corio__loop *loop, corio_task *t);
/* The join word of a set's member, for set.c. Claim: take a joinable
 * handle for the set (word NONE or DONE -> mark, or mark | JOIN_DONE): 1 if
 * it still runs, 0 if it had finished, CORIO_EINVAL if it is not free to
 * take. Take: the finished member leaves the set (mark | JOIN_DONE ->
 * DONE), waiting the few instructions its finisher may still need.
 * Detach: the running member is detached (mark -> DETACHED) and true;
 * false, having waited for its finisher, once it has finished. */
int corio__join_set_claim(corio_task *t, uintptr_t mark);
void corio__join_set_take(corio_task *t, uintptr_t mark);
bool corio__join_set_detach(corio_task *t, uintptr_t mark);
/* The running task self, a set's member, holds its own word locked
 * (mark -> mark | LOCK) while it reads its record, which a detach could
 * otherwise recycle meanwhile: returns the mark, or 0 if self is in no
 * set; unhold puts the mark back. */
uintptr_t corio__join_set_hold(corio_task *self);
void corio__join_set_unhold(corio_task *self, uintptr_t mark);
/* set.c: a member finished (its word, `join`, is locked by its finisher):
 * move it to its set's finished members and wake a waiter. */
void corio__set_member_finished(uintptr_t join);
/* Return a finished, released task object to the loop's free list. */
void corio__task_release(struct corio__loop *loop, corio_task *t);
/* corio_spawn_ex, with `kept` (if not NULL) as the task's discard wrapper
 * in place of opts->discard: the caller fills kept->arg and
 * kept->discard (arg is unused), and kept stays the caller's. */
int corio__spawn(corio_task **task, corio_fn fn, void *arg, const corio_spawn_opts *opts,
                 struct corio__spawn_discard *kept);
/* Allocate and fill a task object with its stack (not yet queued).
 * 0, CORIO_ENOMEM or CORIO_EAGAIN (max_tasks). */
int corio__task_create(struct corio__loop *l, corio_task **out, corio_fn fn, void *arg,
                       size_t stack_size, unsigned flags, bool detached);
/* The two halves of a join, for a caller that must stop others from
 * seeing t between them (task groups): wait until t is done without
 * releasing it (corio_join_until's results, from the current task), then
 * release it (0, or why it never ran: CORIO_ESHUTDOWN, CORIO_ENOSTACK). */
int corio__join_wait(corio_task *t, corio_time_t deadline);
int corio__join_take(corio_task *t);
/* Whether t (a handle not yet released) has finished: corio__join_take
 * would release it now without waiting. */
bool corio__task_is_done(corio_task *t);
/* Wait until t is done with a wait that neither cancellation nor a light
 * task's lack of memory ends (parked, as a join). No release. */
void corio__join_wait_uncancellable(corio_task *t);
/* Free every task slab of a loop (runtime teardown). */
void corio__task_slabs_free(struct corio__loop *l);

#endif /* CORIO_TASK_H */
