/*
 * blocking.h: the thread pool behind corio_run_blocking().
 *
 * A C program sometimes has to call something that blocks its thread
 * (getaddrinfo, a disk read, a library without an async API). Doing that
 * on a loop would stall every task of the loop, so the call is shipped to
 * a pool thread and only the calling task waits. Threads start on demand
 * up to the runtime's limit and stay until the runtime ends.
 */
#ifndef CORIO_BLOCKING_H
#define CORIO_BLOCKING_H

struct corio__runtime;
struct corio__blocking_pool;

int corio__blocking_pool_new(struct corio__runtime *rt, struct corio__blocking_pool **out);
/* Wait for running jobs to finish and the threads to exit. Called once no
 * loop runs any more, so no job is queued. */
void corio__blocking_pool_stop(struct corio__blocking_pool *pool);
void corio__blocking_pool_destroy(struct corio__blocking_pool *pool);

#endif /* CORIO_BLOCKING_H */
