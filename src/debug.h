/*
 * debug.h: a snapshot of every running runtime, for when something hangs
 * (debug.c), and the list of running runtimes it and debuggers walk.
 */
#ifndef CORIO_DEBUG_H
#define CORIO_DEBUG_H

struct corio__runtime;

/* Write one line per runtime, loop and started task (up to 64 a loop) to
 * fd: queues, timers, and what each task waits on. Async-signal-safe (a
 * test's watchdog calls it from its SIGALRM handler), and leaves errno
 * as it found it. Reads the loops' state unsynchronised: for diagnosis
 * only; loops still running make its figures inexact but cannot make it
 * fault. It never waits: while a runtime is starting or ending (or the
 * list is held otherwise) it writes "runtime list busy ..." instead of
 * walking the list. */
void corio__debug_dump(int fd);

/* Put a runtime on corio__debug_runtimes (loop.h) once it runs / take it
 * off before it is freed. Taking it off waits for dumps walking the list. */
void corio__debug_register(struct corio__runtime *rt);
void corio__debug_unregister(struct corio__runtime *rt);

/* The list's lock on the side that changes it (register and unregister
 * take it; a test holds it to see the dump back off). Waits for dumps
 * already walking; never call it from a signal handler. */
void corio__debug_list_lock(void);
void corio__debug_list_unlock(void);

#endif /* CORIO_DEBUG_H */
