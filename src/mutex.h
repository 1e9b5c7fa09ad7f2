/*
 * mutex.h: what a condition variable (cond.c) needs of a mutex (mutex.c).
 */
#ifndef CORIO_MUTEX_H
#define CORIO_MUTEX_H

#include <stdbool.h>

#include "corio.h"
#include "task.h"

/* Does `self` hold m? */
bool corio__mutex_held_by(corio_mutex *m, corio_task *self);
/* Take m back for `self`, in the mutex's FIFO turn. Neither cancellation
 * nor shutdown ends this wait (a condition wait returns holding the mutex
 * whatever ended it); a cancellation that arrives meanwhile fails the
 * task's next call instead. */
void corio__mutex_relock(corio_mutex *m, corio_task *self);

#endif /* CORIO_MUTEX_H */
