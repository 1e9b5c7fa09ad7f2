/*
 * blocking.c: the blocking-call pool (see blocking.h).
 *
 * A job belongs to the waiting task until a pool thread takes it; from
 * then on it belongs to the pool thread until it completes. A wait that
 * ends early (deadline, cancellation) settles the job under the pool lock:
 *
 *   QUEUED    removed from the queue and freed: fn never runs (a pool
 *             thread that takes a job whose wait has already ended, or
 *             whose deadline has passed, leaves it QUEUED and skips it)
 *   RUNNING   marked ABANDONED: the thread frees it when fn returns and
 *             drops the result (nobody can stop a running C function)
 *   DONE      fn finished in the meantime: the result is returned after
 *             all, as if the wait had succeeded
 *
 * The pool thread fires the task while still holding the lock, and a task
 * settles its job under the same lock, so the two can never disagree on
 * who frees the job.
 */
#define _GNU_SOURCE
#include "blocking.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include "loop.h"
#include "sys.h"
#include "task.h"

enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_ABANDONED };

struct blocking_job {
    struct blocking_job *next;
    corio_fn fn;
    void *arg;
    void *result;
    void (*abandoned)(void *arg); /* cleanup when the waiter gave up */
    corio_task *task;   /* the waiter */
    uint64_t token;     /* its wait token */
    corio_time_t deadline; /* the wait's */
    enum job_state state;
};

struct blocking_thread {
    struct blocking_thread *next;
    pthread_t thread;
};

struct corio__blocking_pool {
    corio__runtime *rt;
    pthread_mutex_t lock;
    pthread_cond_t work;                 /* signalled when a job is queued */
    struct blocking_job *head, *tail;    /* queued jobs, under lock */
    struct blocking_thread *threads;     /* all started threads, under lock */
    unsigned nthreads, idle, max;        /* under lock */
    unsigned queued;                     /* jobs in the queue, under lock */
    bool stopping;                       /* under lock */
    /* With pinned loops: the CPUs the process had, for the pool's threads,
     * which would otherwise inherit the one CPU of the loop that started
     * them and compete with it for that CPU. */
    bool unpin;
    cpu_set_t cpus;
};

int corio__blocking_pool_new(corio__runtime *rt, struct corio__blocking_pool **out)
{
    struct corio__blocking_pool *pool = corio__calloc(1, sizeof *pool);
    if (!pool)
        return CORIO_ENOMEM;
    pool->rt = rt;
    pool->max = rt->blocking_threads;
    /* Called by corio_run before it pins its own thread (loop 0). */
    pool->unpin = rt->pin_cpus &&
                  pthread_getaffinity_np(pthread_self(), sizeof pool->cpus, &pool->cpus) == 0;
    int rc = pthread_mutex_init(&pool->lock, NULL);
    if (rc == 0) {
        rc = pthread_cond_init(&pool->work, NULL);
        if (rc != 0)
            pthread_mutex_destroy(&pool->lock);
    }
    if (rc != 0) {
        corio__free(pool);
        return -rc;
    }
    *out = pool;
    return 0;
}

/* Under lock, for a job just taken from the queue: whether its wait is
 * still on. A wait that has ended (cancelled, timed out, shut down) or
 * whose deadline has passed is not for the thread to start: corio.h
 * promises fn never runs then. The task has not settled yet (it would
 * have taken the job out of the queue under this lock), so it is there
 * to read, and it will: it sees the job still QUEUED and drops it. */
static bool job_wanted(const struct blocking_job *job)
{
    if (atomic_load_explicit(&job->task->wait, memory_order_acquire) != job->token)
        return false;
    return job->deadline == CORIO_FOREVER || corio_now() < job->deadline;
}

static void *pool_thread(void *arg)
{
    struct corio__blocking_pool *pool = arg;
    if (pool->unpin) /* best effort, as the pinning itself */
        pthread_setaffinity_np(pthread_self(), sizeof pool->cpus, &pool->cpus);
    corio__set_thread_runtime(pool->rt);
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (!pool->head && !pool->stopping) {
            pool->idle++;
            pthread_cond_wait(&pool->work, &pool->lock);
            pool->idle--;
        }
        if (!pool->head)
            break;
        struct blocking_job *job = pool->head;
        pool->head = job->next;
        if (!pool->head)
            pool->tail = NULL;
        pool->queued--;
        if (!job_wanted(job))
            continue; /* still QUEUED: its task frees it */
        job->state = JOB_RUNNING;
        pthread_mutex_unlock(&pool->lock);

        void *result = job->fn(job->arg);

        pthread_mutex_lock(&pool->lock);
        if (job->state == JOB_ABANDONED) {
            if (job->abandoned)
                job->abandoned(job->arg);
            corio__free(job);
        } else {
            job->result = result;
            job->state = JOB_DONE;
            corio__task_fire(job->task, job->token, 0);
        }
    }
    pthread_mutex_unlock(&pool->lock);
    corio__set_thread_runtime(NULL);
    return NULL;
}

/* Under lock, before queueing a job: start another thread unless an idle
 * one is left for it. A thread signalled for an earlier job still counts
 * as idle until it wakes, so the jobs already queued are set against the
 * idle threads: without that, a burst of jobs would all see the one idle
 * thread and run one after another (and a job that waits for another
 * queued behind it would never return). 0, or an error if no thread at
 * all could be started. */
static int maybe_grow(struct corio__blocking_pool *pool)
{
    if (pool->idle > pool->queued || pool->nthreads >= pool->max)
        return 0;
    struct blocking_thread *th = corio__malloc(sizeof *th);
    int err = th ? corio__thread_create(&th->thread, pool_thread, pool, 0) : ENOMEM;
    if (err != 0) {
        corio__free(th);
        /* With a thread already running, the job just waits its turn. */
        return pool->nthreads ? 0 : (err == ENOMEM ? CORIO_ENOMEM : CORIO_EAGAIN);
    }
    th->next = pool->threads;
    pool->threads = th;
    pool->nthreads++;
    return 0;
}

static void queue_remove(struct corio__blocking_pool *pool, struct blocking_job *job)
{
    struct blocking_job **pp = &pool->head, *prev = NULL;
    while (*pp && *pp != job) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return;
    *pp = job->next;
    if (pool->tail == job)
        pool->tail = prev;
    pool->queued--;
}

int corio_run_blocking_until(corio_fn fn, void *arg, void **result, corio_time_t deadline)
{
    return corio__run_blocking_owned(fn, arg, NULL, result, deadline);
}

int corio__run_blocking_owned(corio_fn fn, void *arg, void (*abandoned)(void *arg),
                              void **result, corio_time_t deadline)
{
    corio_task *self = corio__current_task();
    if (!self || !fn) {
        if (abandoned)
            abandoned(arg);
        return !self ? CORIO_EPERM : CORIO_EINVAL;
    }
    struct corio__blocking_pool *pool = self->home->rt->pool;
    struct blocking_job *job = corio__malloc(sizeof *job);
    if (!job) {
        if (abandoned)
            abandoned(arg);
        return CORIO_ENOMEM;
    }
    uint64_t token;
    int rc = corio__wait_arm(self, &token);
    if (rc != 0) {
        corio__free(job);
        if (abandoned)
            abandoned(arg);
        return rc;
    }
    *job = (struct blocking_job){.fn = fn, .arg = arg, .abandoned = abandoned, .task = self,
                                 .token = token, .deadline = deadline, .state = JOB_QUEUED};

    pthread_mutex_lock(&pool->lock);
    rc = maybe_grow(pool);
    if (rc == 0) {
        if (pool->tail)
            pool->tail->next = job;
        else
            pool->head = job;
        pool->tail = job;
        pool->queued++;
        pthread_cond_signal(&pool->work);
    }
    pthread_mutex_unlock(&pool->lock);
    if (rc != 0) {
        corio__wait_disarm(self, token);
        corio__free(job);
        if (abandoned)
            abandoned(arg);
        return rc;
    }

    rc = corio__wait_commit(self, token, deadline, CORIO__WAITS_BLOCKING);
    if (rc != 0) {
        pthread_mutex_lock(&pool->lock);
        switch (job->state) {
        case JOB_QUEUED:
            queue_remove(pool, job);
            if (abandoned)
                abandoned(arg);
            break;
        case JOB_RUNNING:
            job->state = JOB_ABANDONED;
            job = NULL; /* the pool thread frees it */
            break;
        default: /* DONE: it finished while we gave up; keep the result */
            if (rc == CORIO_ECANCELED)
                corio__cancel_repend(self);
            rc = 0;
            break;
        }
        pthread_mutex_unlock(&pool->lock);
    }
    if (rc == 0 && result)
        *result = job->result;
    corio__free(job);
    return rc;
}

int corio_run_blocking(corio_fn fn, void *arg, void **result)
{
    return corio_run_blocking_until(fn, arg, result, CORIO_FOREVER);
}

void corio__blocking_pool_stop(struct corio__blocking_pool *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->lock);
    pool->stopping = true;
    pthread_cond_broadcast(&pool->work);
    struct blocking_thread *threads = pool->threads;
    pool->threads = NULL;
    pthread_mutex_unlock(&pool->lock);
    while (threads) {
        struct blocking_thread *next = threads->next;
        pthread_join(threads->thread, NULL);
        corio__free(threads);
        threads = next;
    }
}

void corio__blocking_pool_destroy(struct corio__blocking_pool *pool)
{
    if (!pool)
        return;
    corio__blocking_pool_stop(pool);
    pthread_cond_destroy(&pool->work);
    pthread_mutex_destroy(&pool->lock);
    corio__free(pool);
}
