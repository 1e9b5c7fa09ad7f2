/*
 * test_signal.c: corio_signal_wait, a signal taken by a task: that a
 * blocked signal reaches a waiter whenever it was sent, that each
 * arrival goes to exactly one waiter across loops, that waits with
 * different sets stay apart, deadlines, cancellation, and the errors
 * (unblocked signals, bad arguments, no descriptor). Each test blocks
 * the signals it uses in its own process (tests fork) before the
 * runtime starts, so every loop thread inherits the mask.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sys.h"
#include "test.h"

static void block(int a, int b)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, a);
    if (b)
        sigaddset(&set, b);
    CHECK_EQ(pthread_sigmask(SIG_BLOCK, &set, NULL), 0);
}

static sigset_t set_of(int a, int b)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, a);
    if (b)
        sigaddset(&set, b);
    return set;
}

/* ---- a waiter ---- */

struct waiter {
    sigset_t set;
    corio_time_t deadline;
    _Atomic int waiting; /* 1 once it is about to wait */
    _Atomic int got;     /* the signal it took, 0 while none */
    int rc;
};

static void *wait_for_signal(void *arg)
{
    struct waiter *w = arg;
    int signo = 0;
    atomic_store(&w->waiting, 1);
    w->rc = corio_signal_wait(&w->set, &signo, w->deadline);
    if (w->rc == 0)
        atomic_store(&w->got, signo);
    return NULL;
}

static void send_self(int sig) { CHECK_EQ(kill(getpid(), sig), 0); }

/* ---- a signal sent while a task waits, and one sent before ---- */

static void *main_sent_while_waiting(void *arg)
{
    (void)arg;
    CHECK_EQ(test_open_fds_of_kind("signalfd"), 0);
    for (int loop = 0; loop < (int)corio_loop_count(); loop++) {
        struct waiter w = {.set = set_of(SIGUSR1, 0), .deadline = CORIO_FOREVER};
        corio_task *t;
        corio_spawn_opts o = test_on_loop(loop, loop % 2);
        CHECK_OK(corio_spawn_ex(&t, wait_for_signal, &w, &o));
        /* Sent once it waits, or about to: either way it must arrive. */
        CHECK(test_await(&w.waiting, 1));
        CHECK_OK(corio_sleep(CORIO_MSEC));
        send_self(SIGUSR1);
        CHECK_OK(corio_join(t, NULL));
        CHECK_OK(w.rc);
        CHECK_EQ(atomic_load(&w.got), SIGUSR1);
    }
    /* Pending before the wait: taken at once, even with a deadline now. */
    send_self(SIGUSR1);
    sigset_t set = set_of(SIGUSR1, SIGUSR2);
    int signo = 0;
    CHECK_OK(corio_signal_wait(&set, &signo, corio_now()));
    CHECK_EQ(signo, SIGUSR1);
    /* Taken: nothing is pending now. */
    CHECK_ERR(corio_signal_wait(&set, &signo, corio_now()), CORIO_ETIMEDOUT);
    CHECK_EQ(test_open_fds_of_kind("signalfd"), 0); /* each wait closed its descriptor */
    return NULL;
}

TEST(a_blocked_signal_reaches_the_waiter_whenever_sent)
{
    block(SIGUSR1, SIGUSR2);
    run_main_checked(2, main_sent_while_waiting, NULL);
}

/* ---- each arrival goes to one waiter ----
 *
 * Waiters on every loop, light and not, wait for SIGUSR1 with no
 * deadline. Each signal is sent only once the one before was taken (the
 * kernel merges arrivals of a pending signal): after k signals exactly k
 * waiters hold one, and the last is taken only by the last signal. */

static void *main_one_waiter_each(void *arg)
{
    (void)arg;
    int n = (int)test_scaled(12);
    struct waiter *w = calloc((size_t)n, sizeof *w);
    corio_task **t = calloc((size_t)n, sizeof *t);
    CHECK(w && t);
    for (int i = 0; i < n; i++) {
        w[i].set = set_of(SIGUSR1, 0);
        w[i].deadline = CORIO_FOREVER;
        corio_spawn_opts o = test_on_loop(i % (int)corio_loop_count(), i % 3 == 0);
        CHECK_OK(corio_spawn_ex(&t[i], wait_for_signal, &w[i], &o));
    }
    for (int i = 0; i < n; i++)
        CHECK(test_await(&w[i].waiting, 1));
    for (int k = 1; k <= n; k++) {
        send_self(SIGUSR1);
        corio_time_t give_up = corio_deadline_in(10 * CORIO_SEC);
        int taken;
        for (;;) {
            taken = 0;
            for (int i = 0; i < n; i++)
                taken += atomic_load(&w[i].got) != 0;
            if (taken >= k || corio_now() >= give_up)
                break;
            CHECK_OK(corio_sleep(CORIO_MSEC / 4));
        }
        if (taken != k)
            FAIL_("after %d signals %d waiters hold one", k, taken);
    }
    for (int i = 0; i < n; i++) {
        CHECK_OK(corio_join(t[i], NULL));
        CHECK_OK(w[i].rc);
        CHECK_EQ(atomic_load(&w[i].got), SIGUSR1);
    }
    free(w);
    free(t);
    return NULL;
}

TEST(each_arrival_goes_to_one_waiter)
{
    block(SIGUSR1, 0);
    run_main_checked(3, main_one_waiter_each, NULL);
}

/* ---- waits for different signals stay apart ---- */

static void *main_sets_apart(void *arg)
{
    (void)arg;
    struct waiter one = {.set = set_of(SIGUSR1, 0), .deadline = CORIO_FOREVER};
    struct waiter two = {.set = set_of(SIGUSR2, 0), .deadline = CORIO_FOREVER};
    corio_task *a, *b;
    corio_spawn_opts o0 = test_on_loop(0, false), o1 = test_on_loop(1, false);
    CHECK_OK(corio_spawn_ex(&a, wait_for_signal, &one, &o0));
    CHECK_OK(corio_spawn_ex(&b, wait_for_signal, &two, &o1));
    CHECK(test_await(&one.waiting, 1) && test_await(&two.waiting, 1));
    send_self(SIGUSR2);
    CHECK_OK(corio_join(b, NULL));
    CHECK_OK(two.rc);
    CHECK_EQ(atomic_load(&two.got), SIGUSR2);
    CHECK_OK(corio_sleep(5 * CORIO_MSEC));
    CHECK_EQ(atomic_load(&one.got), 0); /* not SIGUSR2's to take */
    send_self(SIGUSR1);
    CHECK_OK(corio_join(a, NULL));
    CHECK_OK(one.rc);
    CHECK_EQ(atomic_load(&one.got), SIGUSR1);
    return NULL;
}

TEST(waits_for_different_signals_stay_apart)
{
    block(SIGUSR1, SIGUSR2);
    run_main_checked(2, main_sets_apart, NULL);
}

/* ---- deadlines and cancellation: nothing taken, nothing left open ---- */

static void *main_deadline_cancel(void *arg)
{
    (void)arg;
    CHECK_EQ(test_open_fds_of_kind("signalfd"), 0);
    sigset_t set = set_of(SIGUSR1, 0);
    int signo = 0;
    CHECK_ERR(corio_signal_wait(&set, &signo, corio_deadline_in(5 * CORIO_MSEC)),
              CORIO_ETIMEDOUT);
    CHECK_EQ(signo, 0);
    struct waiter w = {.set = set, .deadline = CORIO_FOREVER};
    corio_task *t;
    CHECK_OK(corio_spawn(&t, wait_for_signal, &w));
    CHECK(test_await(&w.waiting, 1));
    CHECK_OK(corio_sleep(CORIO_MSEC));
    CHECK_OK(corio_cancel(t));
    CHECK_OK(corio_join(t, NULL));
    CHECK_ERR(w.rc, CORIO_ECANCELED);
    CHECK_EQ(atomic_load(&w.got), 0);
    /* A signal sent after those waits ended is still there for the next. */
    send_self(SIGUSR1);
    CHECK_OK(corio_signal_wait(&set, &signo, CORIO_FOREVER));
    CHECK_EQ(signo, SIGUSR1);
    CHECK_EQ(test_open_fds_of_kind("signalfd"), 0);
    return NULL;
}

TEST(deadlines_and_cancellation_take_nothing)
{
    block(SIGUSR1, 0);
    run_main_checked(2, main_deadline_cancel, NULL);
}

/* ---- errors ---- */

static void *main_errors(void *arg)
{
    (void)arg;
    CHECK_EQ(test_open_fds_of_kind("signalfd"), 0);
    sigset_t set = set_of(SIGUSR1, 0), empty, unblocked = set_of(SIGUSR2, 0),
             kill_set = set_of(SIGUSR1, SIGKILL);
    sigemptyset(&empty);
    int signo = 0;
    CHECK_ERR(corio_signal_wait(NULL, &signo, CORIO_FOREVER), CORIO_EINVAL);
    CHECK_ERR(corio_signal_wait(&set, NULL, CORIO_FOREVER), CORIO_EINVAL);
    CHECK_ERR(corio_signal_wait(&empty, &signo, CORIO_FOREVER), CORIO_EINVAL);
    /* Not blocked: it would never reach the wait. */
    CHECK_ERR(corio_signal_wait(&unblocked, &signo, CORIO_FOREVER), CORIO_EINVAL);
    /* SIGKILL and SIGSTOP are ignored in a set: alone, nothing is left to
     * wait for; beside a blocked signal, that one is waited for. */
    sigset_t kill_only = set_of(SIGKILL, SIGSTOP);
    CHECK_ERR(corio_signal_wait(&kill_only, &signo, CORIO_FOREVER), CORIO_EINVAL);
    send_self(SIGUSR1);
    CHECK_OK(corio_signal_wait(&kill_set, &signo, CORIO_FOREVER));
    CHECK_EQ(signo, SIGUSR1);
    signo = 0;
    /* No descriptor for the signalfd: the error, and no wait. */
    send_self(SIGUSR1);
    corio__fault_arm(1);
    int rc = corio_signal_wait(&set, &signo, CORIO_FOREVER);
    corio__fault_arm(0);
    CHECK_ERR(rc, CORIO_EMFILE);
    CHECK_EQ(signo, 0);
    CHECK_OK(corio_signal_wait(&set, &signo, CORIO_FOREVER)); /* still pending */
    CHECK_EQ(signo, SIGUSR1);
    CHECK_EQ(test_open_fds_of_kind("signalfd"), 0);
    return NULL;
}

static void *signal_wait_off_task(void *arg)
{
    (void)arg;
    sigset_t set = set_of(SIGUSR1, 0);
    int signo = 0;
    return (void *)(intptr_t)corio_signal_wait(&set, &signo, CORIO_FOREVER);
}

static void *main_off_task(void *arg)
{
    (void)arg;
    void *r = NULL;
    CHECK_OK(corio_run_blocking(signal_wait_off_task, NULL, &r));
    CHECK_ERR((int)(intptr_t)r, CORIO_EPERM);
    return NULL;
}

TEST(bad_arguments_and_unblocked_signals_are_refused)
{
    block(SIGUSR1, 0);
    run_main_checked(1, main_errors, NULL);
    sigset_t set = set_of(SIGUSR1, 0);
    int signo = 0;
    CHECK_ERR(corio_signal_wait(&set, &signo, CORIO_FOREVER), CORIO_EPERM);
    run_main_checked(1, main_off_task, NULL);
}

/* ---- a signal sent to one thread ----
 *
 * raise() aims at the calling thread: a wait on that thread's loop takes
 * it, as corio.h says, while one on another loop would not see it. */
static void *raise_usr1(void *arg)
{
    (void)arg;
    CHECK_EQ(raise(SIGUSR1), 0);
    return NULL;
}

static void *main_thread_directed(void *arg)
{
    (void)arg;
    struct waiter w = {.set = set_of(SIGUSR1, 0), .deadline = CORIO_FOREVER};
    corio_task *waiter, *raiser;
    corio_spawn_opts o1 = test_on_loop(1, false);
    CHECK_OK(corio_spawn_ex(&waiter, wait_for_signal, &w, &o1));
    CHECK(test_await(&w.waiting, 1));
    CHECK_OK(corio_spawn_ex(&raiser, raise_usr1, NULL, &o1));
    CHECK_OK(corio_join(raiser, NULL));
    CHECK_OK(corio_join(waiter, NULL));
    CHECK_OK(w.rc);
    CHECK_EQ(atomic_load(&w.got), SIGUSR1);
    return NULL;
}

TEST(a_signal_raised_on_a_loop_reaches_a_wait_there)
{
    block(SIGUSR1, 0);
    run_main_checked(2, main_thread_directed, NULL);
}

int main(int argc, char **argv)
{
    RUN(a_blocked_signal_reaches_the_waiter_whenever_sent);
    RUN(each_arrival_goes_to_one_waiter);
    RUN(waits_for_different_signals_stay_apart);
    RUN(deadlines_and_cancellation_take_nothing);
    RUN(bad_arguments_and_unblocked_signals_are_refused);
    RUN(a_signal_raised_on_a_loop_reaches_a_wait_there);
    return test_summary();
}
