/*
 * debug.h: a snapshot of every running runtime, for when something hangs
 * (debug.c).
 */
#ifndef CORIO_DEBUG_H
#define CORIO_DEBUG_H

/* Write one line per runtime, loop and started task (up to 64 a loop) to
 * fd: queues, timers, and what each task waits on. Reads other threads'
 * state unsynchronised: for diagnosis only (a test's watchdog); loops
 * still running make its figures inexact but cannot make it fault. */
void corio__debug_dump(int fd);

#endif /* CORIO_DEBUG_H */
