/*
 * overflow.h: turning a task's stack overflow into a clear report.
 *
 * A task that runs off its stack touches the guard region below it
 * (stack.h) and takes a SIGSEGV. corio's handler runs on the loop's
 * alternate signal stack (the task's own stack is exhausted), checks
 * whether the faulting address is in the running task's guard, and if so
 * writes one line naming the task before letting the signal kill the
 * process as it would have anyway. Any other SIGSEGV goes to the handler
 * that was installed before corio's.
 */
#ifndef CORIO_OVERFLOW_H
#define CORIO_OVERFLOW_H

/* Install the handler while at least one runtime runs (reference count). */
int corio__overflow_install(void);
void corio__overflow_uninstall(void);

#endif /* CORIO_OVERFLOW_H */
