/*
 * overflow.c: the stack-overflow reporter (see overflow.h).
 *
 * Everything in the handler is async-signal-safe: the current loop comes
 * from an initial-exec TLS variable, the message is formatted by hand
 * (sigfmt.h) and written with write(2).
 */
#define _GNU_SOURCE
#include "overflow.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "loop.h"
#include "sigfmt.h"
#include "task.h"

static pthread_mutex_t install_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned install_count;
static struct sigaction previous;

static void report(const corio_task *t, const corio__stack *st, const void *addr)
{
    char buf[320];
    corio__sigfmt f = corio__sigfmt_on(buf, sizeof buf);
    corio__sigfmt_str(&f, "corio: task ");
    corio__sigfmt_u64(&f, t->id);
    corio__sigfmt_str(&f, " overflowed its ");
    corio__sigfmt_u64(&f, st->size);
    corio__sigfmt_str(&f, (t->flags & CORIO__TF_LIGHT) ? "-byte shared (light) stack"
                                                       : "-byte stack");
    corio__sigfmt_str(&f, " (fault at 0x");
    corio__sigfmt_hex(&f, (uint64_t)(uintptr_t)addr);
    corio__sigfmt_str(&f, " in its guard page); ");
    /* A light task takes no stack size of its own (CORIO_EINVAL): its
     * loop's shared stack has the runtime's. */
    corio__sigfmt_str(&f, (t->flags & CORIO__TF_LIGHT)
                              ? "give the loops' shared stacks more with corio_config.stack_size "
                                "or CORIO_STACK_SIZE, or spawn it without CORIO_TASK_LIGHT\n"
                              : "give it a bigger stack with corio_spawn_opts.stack_size or "
                                "CORIO_STACK_SIZE\n");
    corio__sigfmt_write(STDERR_FILENO, &f);
}

/* The stack task t runs on. */
static corio__stack stack_of(const corio__loop *l, const corio_task *t)
{
    return (t->flags & CORIO__TF_LIGHT) ? l->shared_stack : corio__task_stack(t);
}

/* The task of loop l whose guard `addr` is in, with its stack in *st, or
 * NULL. As a rule the running task; but a switch straight from one task
 * to the next (ready.h, corio__switch_to) names the next one current
 * before the switch pushes its frame on the stack of the one leaving, so
 * a task that runs out of stack right there is another started task of
 * the loop (a regular one: light tasks never switch that way). Their
 * list is only walked when a task is running and its own guard was not
 * hit: a crash, or a wild access. */
static corio_task *guard_owner(const corio__loop *l, const void *addr, corio__stack *st)
{
    corio_task *t = l->current;
    if (!t)
        return NULL;
    *st = stack_of(l, t);
    if (corio__stack_guard_hit(st, addr))
        return t;
    for (corio_task *o = l->live; o; o = o->run->live_next) {
        if (o == t || (o->flags & CORIO__TF_LIGHT))
            continue;
        *st = corio__task_stack(o);
        if (corio__stack_guard_hit(st, addr))
            return o;
    }
    return NULL;
}

/* Whether the kernel raised this SIGSEGV for an access that faulted
 * (si_addr is then that address), not kill(), raise() or sigqueue()
 * (si_code <= 0; si_addr then overlays the sender's pid and uid). */
static bool is_fault(const siginfo_t *info) { return info->si_code > 0; }

static void on_segv(int sig, siginfo_t *info, void *uctx)
{
    corio__loop *l = corio__loop_current();
    corio__stack st;
    corio_task *t = l && is_fault(info) ? guard_owner(l, info->si_addr, &st) : NULL;
    if (t) {
        report(t, &st, info->si_addr);
        /* Die of the SIGSEGV, as without corio: returning re-runs the
         * faulting instruction under the default action. */
        signal(sig, SIG_DFL);
        return;
    }
    if (previous.sa_flags & SA_SIGINFO) {
        if (previous.sa_sigaction) {
            previous.sa_sigaction(sig, info, uctx);
            return;
        }
    } else if (previous.sa_handler == SIG_IGN && !is_fault(info)) {
        return; /* sent, and ignored before corio: still ignored */
    } else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
        previous.sa_handler(sig);
        return;
    }
    signal(sig, SIG_DFL);
    /* Returning repeats a fault, which the default action then ends; a
     * sent SIGSEGV happens only once: send it again (SA_NODEFER: now). */
    if (!is_fault(info))
        raise(sig);
}

int corio__overflow_install(void)
{
    int rc = 0;
    pthread_mutex_lock(&install_lock);
    if (install_count == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGSEGV, &sa, &previous) != 0)
            rc = -errno;
    }
    if (rc == 0)
        install_count++;
    pthread_mutex_unlock(&install_lock);
    return rc;
}

/* Whether SIGSEGV's handler is still corio's: one the program installed
 * while a runtime ran is the program's to keep. */
static bool still_ours(void)
{
    struct sigaction now;
    return sigaction(SIGSEGV, NULL, &now) == 0 && (now.sa_flags & SA_SIGINFO) &&
           now.sa_sigaction == on_segv;
}

void corio__overflow_uninstall(void)
{
    pthread_mutex_lock(&install_lock);
    if (install_count && --install_count == 0 && still_ours())
        sigaction(SIGSEGV, &previous, NULL);
    pthread_mutex_unlock(&install_lock);
}
