/*
 * chan.h: a channel's inside, shared by chan.c (its calls) and select.c
 * (one task waiting on several channels).
 */
#ifndef CORIO_CHAN_H
#define CORIO_CHAN_H

#include <stdbool.h>
#include <stddef.h>

#include "corio.h"
#include "spin.h"
#include "waitq.h"

struct corio_chan {
    corio__spin lock;
    size_t elem_size;
    size_t capacity;      /* CORIO_CHAN_UNBOUNDED or the bound */
    char *buf;            /* ring of `slots` elements */
    size_t slots, head, count;
    bool closed;
    corio__waitq receivers, senders;
};

/* Under the lock: try to put one element, waking a receiver. 0,
 * CORIO_EPIPE (closed), CORIO_EAGAIN (full) or CORIO_ENOMEM. */
int corio__chan_put(corio_chan *c, const void *elem);
/* Under the lock: try to take one element (elem NULL: dropped), waking a
 * sender. 0, CORIO_EPIPE (closed and drained) or CORIO_EAGAIN (empty). */
int corio__chan_take(corio_chan *c, void *elem);

#endif /* CORIO_CHAN_H */
