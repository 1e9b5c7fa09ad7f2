/*
 * process.h: the test hook of the child-process calls (process.c).
 */
#ifndef CORIO_PROCESS_H
#define CORIO_PROCESS_H

#include <stdbool.h>

/* Tests: while on, corio_process_spawn acts as on a kernel without
 * pidfd_open, so that waits take the polling path. Process-wide. */
void corio__process_test_no_pidfd(bool on);

#endif /* CORIO_PROCESS_H */
