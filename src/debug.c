/*
 * debug.c: a snapshot of every running runtime, written to a descriptor,
 * and the list of running runtimes it walks.
 *
 * For the moment something has hung: a test's watchdog (tests/test.h)
 * calls it from its SIGALRM handler before aborting, so that a hang seen
 * once in thousands of runs leaves a record of what each loop and each
 * started task was doing (the same facts tools/gdb/corio.py shows in a
 * live process). Everything it calls is async-signal-safe: lines are
 * built by hand (sigfmt.h) and written with write(2), never with stdio
 * or the printf family, which may take locks or malloc.
 *
 * It reads the loops' fields without synchronisation: call it for
 * diagnosis, never as part of normal work. The loops need not have
 * stopped (a hang may leave one loop stuck while the others keep starting
 * and ending tasks), so what it follows from one task to the next is read
 * with peek(), which cannot fault. The runtimes themselves are another
 * matter: one that ends under the walk is freed (corio_run's end), so the
 * walk holds the list's lock, below, and corio_run waits for it before
 * freeing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "debug.h"
#include "loop.h"
#include "sigfmt.h"
#include "task.h"

/* ---- the list of running runtimes ----
 *
 * A reader-writer lock in one atomic word, since the reader may be a
 * signal handler: bit 0 is held by a runtime starting or ending (the
 * writer), and each dump walking the list adds LIST_READER. A mutex
 * cannot be taken there: pthread_mutex_lock is not async-signal-safe, and
 * a handler that lands on the thread holding it would wait for itself.
 * Lock-free atomics are safe in a handler, and a dump never waits: where
 * a runtime is starting or ending it says so in one line instead of
 * walking. Writers wait (for each other and for dumps already walking);
 * they are rare (a corio_run's start and end), and a dump is short, so
 * they sleep in short pauses rather than queue on a futex.
 *
 * The bit keeps new dumps out from the moment a writer claims it, so a
 * writer is never starved by dumps that follow one another (test_config
 * dumps in a loop while runtimes start and end). Both sides change the
 * same word with sequentially consistent read-modify-writes, so either a
 * dump's increment comes first (the writer sees it and waits) or the
 * writer's bit does (the dump sees it and backs off). */
#define LIST_WRITER 1ul
#define LIST_READER 2ul
static _Atomic unsigned long list_lock;

corio__runtime *corio__debug_runtimes; /* changed under list_lock's writer bit */

static void list_pause(void)
{
    static const struct timespec pause = {0, 20 * 1000};
    nanosleep(&pause, NULL);
}

void corio__debug_list_lock(void)
{
    for (;;) {
        unsigned long w = atomic_load(&list_lock);
        if (!(w & LIST_WRITER) && atomic_compare_exchange_weak(&list_lock, &w, w | LIST_WRITER))
            break;
        list_pause();
    }
    while (atomic_load(&list_lock) != LIST_WRITER) /* dumps still walking */
        list_pause();
}

void corio__debug_list_unlock(void) { atomic_fetch_and(&list_lock, ~LIST_WRITER); }

/* For a dump: true if it may walk the list (then list_read_end), false
 * while a runtime is starting or ending. Never waits. */
static bool list_read_begin(void)
{
    if (atomic_fetch_add(&list_lock, LIST_READER) & LIST_WRITER) {
        atomic_fetch_sub(&list_lock, LIST_READER);
        return false;
    }
    return true;
}

static void list_read_end(void) { atomic_fetch_sub(&list_lock, LIST_READER); }

void corio__debug_register(corio__runtime *rt)
{
    corio__debug_list_lock();
    rt->debug_next = corio__debug_runtimes;
    corio__debug_runtimes = rt;
    corio__debug_list_unlock();
}

void corio__debug_unregister(corio__runtime *rt)
{
    corio__debug_list_lock();
    for (corio__runtime **p = &corio__debug_runtimes; *p; p = &(*p)->debug_next)
        if (*p == rt) {
            *p = rt->debug_next;
            break;
        }
    corio__debug_list_unlock();
}

/* ---- the dump ---- */

/* One line of the dump. 256 bytes, cut at 255 like the snprintf it
 * replaces: a loop's line with every figure at its largest fits. */
typedef struct {
    char buf[256];
    corio__sigfmt f;
} line;

static void line_start(line *l) { l->f = corio__sigfmt_on(l->buf, sizeof l->buf); }

static void put(line *l, const char *s) { corio__sigfmt_str(&l->f, s); }
static void put_u(line *l, uint64_t v) { corio__sigfmt_u64(&l->f, v); }
static void put_i(line *l, int64_t v) { corio__sigfmt_i64(&l->f, v); }

static void line_write(int fd, line *l) { corio__sigfmt_write(fd, &l->f); }

static void say(int fd, const char *s)
{
    line l;
    line_start(&l);
    put(&l, s);
    line_write(fd, &l);
}

/*
 * Copy len bytes at src into dst; false where they cannot be read. A task
 * that ends under the walk of a live list leaves the dump a run state gone
 * back with its stack (unmapped, for a stack not of the default size) or,
 * once its object is reused, a `run` that is a spawn's argument: plain
 * reads there crashed the watchdog's dump (test_config
 * debug_dump_while_loops_run). process_vm_readv on our own process reads
 * through the kernel, which answers EFAULT instead. Where the call is
 * refused (a seccomp filter, an emulator), plain reads, as before.
 */
static bool peek(void *dst, const void *src, size_t len)
{
    static _Atomic bool refused;
    if (!atomic_load_explicit(&refused, memory_order_relaxed)) {
        struct iovec to = {dst, len}, from = {(void *)src, len};
        ssize_t n = process_vm_readv(getpid(), &to, 1, &from, 1, 0);
        if (n == (ssize_t)len)
            return true;
        if (n >= 0 || errno == EFAULT)
            return false;
        atomic_store_explicit(&refused, true, memory_order_relaxed);
    }
    memcpy(dst, src, len);
    return true;
}

static const char *state_name(unsigned state)
{
    static const char *const names[] = {"new", "ready", "running", "waiting", "done"};
    return state < sizeof names / sizeof names[0] ? names[state] : "?";
}

static const char *wait_word_name(uint64_t w)
{
    switch (w & CORIO__WAIT_STATE_MASK) {
    case CORIO__WAIT_IDLE:
        return "idle";
    case CORIO__WAIT_ARMED:
        return "armed";
    case CORIO__WAIT_FIRED:
        return "fired";
    default:
        return "?";
    }
}

/* corio__timers_next for a loop that may be running: its entries read
 * with peek(). The loop grows its arrays by realloc or mremap, either of
 * which may move them and unmap the old pages, so an entry read through
 * the pointer a moment after the pointer itself could fault (a plain read
 * did, given an array whose pages were gone: test_config
 * debug_dump_survives_timer_arrays_moving). false where an entry could
 * not be read. */
static bool timers_next(const corio__timers *live, corio_time_t *next)
{
    corio__timers tm;
    memcpy(&tm, live, sizeof tm); /* one copy: the fields agree more often */
    corio__timer_entry e;
    *next = CORIO_FOREVER;
    if (tm.len) {
        if (!peek(&e, tm.heap, sizeof e))
            return false;
        *next = e.deadline;
    }
    if (tm.run_len && tm.run_head < tm.run_cap) {
        if (!peek(&e, tm.run + tm.run_head, sizeof e))
            return false;
        if (e.deadline < *next)
            *next = e.deadline;
    }
    return true;
}

static void dump_loop(int fd, corio__loop *lp, corio_time_t now)
{
    size_t ready = 0, stalled = 0;
    for (corio_task *t = lp->ready_head; t && ready < 1000000; t = t->next)
        ready++;
    for (corio_task *t = lp->stalled_head; t && stalled < 1000000; t = t->next)
        stalled++;
    corio_time_t next;
    bool next_known = timers_next(&lp->timers, &next);
    /* Read once: the loop may set it to NULL between two reads (task
     * objects themselves stay mapped while the runtime lives). */
    corio_task *current = *(corio_task *volatile *)&lp->current;
    line l;
    line_start(&l);
    put(&l, "  loop ");
    put_u(&l, lp->index);
    put(&l, ": parked ");
    put_i(&l, atomic_load(&lp->parked));
    put(&l, " stopping ");
    put_i(&l, lp->stopping);
    put(&l, " live ");
    put_u(&l, lp->live_count);
    put(&l, " joining ");
    put_u(&l, lp->joining);
    put(&l, " ready ");
    put_u(&l, ready);
    put(&l, " runq ");
    put_u(&l, corio__runq_len(&lp->runq));
    put(&l, " roam ");
    put_u(&l, corio__runq_len(&lp->roam));
    put(&l, " inbox ");
    put(&l, atomic_load(&lp->inbox) ? "non-empty" : "empty");
    put(&l, " current ");
    put_u(&l, current ? current->id : 0);
    put(&l, " tick ");
    put_u(&l, lp->tick);
    put(&l, " queue_picks ");
    put_u(&l, lp->queue_picks);
    put(&l, " light_stalled "); /* light tasks waiting for memory to have the stack */
    put_u(&l, stalled);
    put(&l, " timers armed ");
    put_u(&l, lp->timers.armed);
    put(&l, ", next in ");
    if (!next_known)
        put(&l, "?");
    else
        put_i(&l, next == CORIO_FOREVER ? -1 : (int64_t)((next - now) / 1000));
    put(&l, " us\n");
    line_write(fd, &l);
    unsigned shown = 0;
    for (corio_task *p = lp->live; p;) {
        if (++shown > 64) {
            line_start(&l);
            put(&l, "    ... (");
            put_u(&l, lp->live_count);
            put(&l, " live in all)\n");
            line_write(fd, &l);
            break;
        }
        corio_task t;
        if (!peek(&t, p, sizeof t)) {
            say(fd, "    ... (the list changed under the dump)\n");
            break;
        }
        uint64_t w = atomic_load(&t.wait);
        unsigned what = t.wait_what;
        line_start(&l);
        put(&l, "    task ");
        put_u(&l, t.id);
        put(&l, ": ");
        put(&l, state_name(t.state));
        put(&l, ", waits on ");
        put(&l, what < CORIO__WAITS_KINDS ? corio__wait_names[what] : "?");
        put(&l, ", wait word ");
        put(&l, wait_word_name(w));
        put(&l, (w & CORIO__WAIT_CANCEL) ? "+cancel" : "");
        put(&l, " (gen ");
        put_u(&l, w / CORIO__WAIT_GEN_ONE);
        put(&l, "), flags 0x");
        corio__sigfmt_hex(&l.f, t.flags);
        put(&l, atomic_load(&t.cancel_sticky) ? ", cancelled for good" : "");
        put(&l, "\n");
        line_write(fd, &l);
        /* Not &t.run->live_next: run may be anything, NULL included. */
        uintptr_t next_at = (uintptr_t)t.run + offsetof(struct corio__task_run, live_next);
        if (!peek(&p, (const void *)next_at, sizeof p)) {
            say(fd, "    ... (the list changed under the dump)\n");
            break;
        }
    }
}

void corio__debug_dump(int fd)
{
    /* From a handler: leave errno as the interrupted code had it. */
    int saved_errno = errno;
    if (!list_read_begin()) {
        say(fd, "runtime list busy (a runtime is starting or ending): not walked\n");
        errno = saved_errno;
        return;
    }
    corio_time_t now = corio_now();
    unsigned n = 0;
    for (corio__runtime *rt = corio__debug_runtimes; rt; rt = rt->debug_next, n++) {
        line l;
        line_start(&l);
        put(&l, "runtime ");
        put_u(&l, n);
        put(&l, ": ");
        put_u(&l, rt->nloops);
        put(&l, " loops, stopping ");
        put_i(&l, atomic_load(&rt->stopping));
        put(&l, ", active loops ");
        put_u(&l, atomic_load(&rt->active_loops));
        put(&l, ", parked ");
        put_i(&l, atomic_load(&rt->nparked));
        put(&l, ", searching ");
        put_i(&l, atomic_load(&rt->nsearching));
        put(&l, "\n");
        line_write(fd, &l);
        for (unsigned i = 0; i < rt->nloops; i++)
            dump_loop(fd, rt->loops[i], now);
    }
    list_read_end();
    if (!n)
        say(fd, "no corio runtime is running\n");
    errno = saved_errno;
}
