/*
 * wait_kind.h: what a task waits on, kept in one byte of the task for
 * debuggers (`corio tasks` in tools/gdb/corio.py prints the name from
 * corio__wait_names, wait.c).
 */
#ifndef CORIO_WAIT_KIND_H
#define CORIO_WAIT_KIND_H

enum corio__wait_kind {
    CORIO__WAITS_NOTHING = 0,
    CORIO__WAITS_SLEEP,
    CORIO__WAITS_JOIN,
    CORIO__WAITS_GATHER,
    CORIO__WAITS_READ,
    CORIO__WAITS_WRITE,
    CORIO__WAITS_CONNECT,
    CORIO__WAITS_ACCEPT,
    CORIO__WAITS_FD,
    CORIO__WAITS_CHAN_SEND,
    CORIO__WAITS_CHAN_RECV,
    CORIO__WAITS_SEMAPHORE,
    CORIO__WAITS_MUTEX,
    CORIO__WAITS_EVENT,
    CORIO__WAITS_WAITGROUP,
    CORIO__WAITS_BLOCKING,
    CORIO__WAITS_KINDS
};
extern const char *const corio__wait_names[CORIO__WAITS_KINDS];

#endif /* CORIO_WAIT_KIND_H */
