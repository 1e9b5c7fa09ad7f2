/*
 * wait_kind.h: what a task waits on, kept in one byte of the task for
 * debuggers (`corio tasks` in tools/gdb/corio.py prints the name from
 * corio__wait_names, wait.c).
 */
#ifndef CORIO_WAIT_KIND_H
#define CORIO_WAIT_KIND_H

#include <stdbool.h>

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
    CORIO__WAITS_WAIT_ANY,
    CORIO__WAITS_SET_NEXT,
    CORIO__WAITS_CHAN_SELECT,
    CORIO__WAITS_COND,
    CORIO__WAITS_RWLOCK_READ,
    CORIO__WAITS_RWLOCK_WRITE,
    CORIO__WAITS_KINDS
};
extern const char *const corio__wait_names[CORIO__WAITS_KINDS];

/*
 * May a migrating task (CORIO_TASK_MIGRATE) change loops when woken from
 * this kind of wait? Only where the code that resumes after the wait
 * touches no state of the loop it waited on (or settles it through flags
 * the loop undoes when it lets the task go: CORIO__TF_TIMED, _JOINING).
 * Descriptor waits clear their slot in that loop's descriptor table; a
 * yield (NOTHING) is a task asking to stay.
 */
static inline bool corio__wait_kind_movable(enum corio__wait_kind what)
{
    switch (what) {
    case CORIO__WAITS_SLEEP:
    case CORIO__WAITS_JOIN:
    case CORIO__WAITS_GATHER:
    case CORIO__WAITS_CHAN_SEND:
    case CORIO__WAITS_CHAN_RECV:
    case CORIO__WAITS_SEMAPHORE:
    case CORIO__WAITS_MUTEX:
    case CORIO__WAITS_EVENT:
    case CORIO__WAITS_WAITGROUP:
    case CORIO__WAITS_BLOCKING:
    case CORIO__WAITS_WAIT_ANY:
    case CORIO__WAITS_SET_NEXT:
    case CORIO__WAITS_CHAN_SELECT:
    case CORIO__WAITS_COND:
    case CORIO__WAITS_RWLOCK_READ:
    case CORIO__WAITS_RWLOCK_WRITE:
        return true;
    default:
        return false;
    }
}

#endif /* CORIO_WAIT_KIND_H */
