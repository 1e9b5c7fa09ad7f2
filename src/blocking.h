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

#include "corio.h"
/*
 * corio_run_blocking for a job that owns its argument. On success (0) the
 * caller still owns arg. On any error, arg has passed to the pool:
 * abandoned(arg) runs once nothing uses arg any more: at once if fn never
 * started (or could not be queued), after fn returns if it was running,
 * on whichever thread that happens. The caller must then not touch arg.
 */
int corio__run_blocking_owned(corio_fn fn, void *arg, void (*abandoned)(void *arg),
                              void **result, corio_time_t deadline);

#endif /* CORIO_BLOCKING_H */
