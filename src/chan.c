/*
 * chan.c: channels.
 *
 * A channel is a ring buffer of fixed-size elements under a spinlock, with
 * a queue of waiting receivers and one of waiting senders. Elements are
 * always copied through the buffer, never handed from one task's memory
 * to another's: a light task's stack is not in place while it waits, and
 * a copy through the buffer keeps "cancelled receive loses no message"
 * trivially true: a message is either in the buffer or in a receiver's
 * hands.
 *
 * A send that fills a slot wakes one waiting receiver, a receive that
 * frees one wakes one waiting sender. The woken task retries; if another
 * task took the element first, it queues again. A woken task whose wait
 * already ended (timeout, cancel) is skipped by the waker (waitq.h), so
 * the wake-up goes to someone still waiting.
 */
#include <string.h>

#include "chan.h"
#include "corio.h"
#include "spin.h"
#include "sync_wait.h"
#include "sys.h"
#include "task.h"
#include "waitq.h"


int corio_chan_new(corio_chan **chan, size_t elem_size, size_t capacity)
{
    if (!chan)
        return CORIO_EINVAL;
    *chan = NULL;
    if (elem_size == 0 || capacity == 0)
        return CORIO_EINVAL;
    size_t slots = capacity == CORIO_CHAN_UNBOUNDED ? 16 : capacity;
    if (slots > SIZE_MAX / elem_size)
        return CORIO_EINVAL;
    corio_chan *c = corio__calloc(1, sizeof *c);
    if (!c)
        return CORIO_ENOMEM;
    c->buf = corio__malloc(slots * elem_size);
    if (!c->buf) {
        corio__free(c);
        return CORIO_ENOMEM;
    }
    c->elem_size = elem_size;
    c->capacity = capacity;
    c->slots = slots;
    *chan = c;
    return 0;
}

void corio_chan_free(corio_chan *chan)
{
    if (!chan)
        return;
    corio__free(chan->buf);
    corio__free(chan);
}

/* Under lock: room for one more element (growing an unbounded ring). */
static int make_room(corio_chan *c)
{
    if (c->count < c->slots)
        return 0;
    if (c->capacity != CORIO_CHAN_UNBOUNDED)
        return CORIO_EAGAIN;
    size_t slots = c->slots * 2;
    if (slots > SIZE_MAX / c->elem_size / 2)
        return CORIO_ENOMEM;
    char *buf = corio__malloc(slots * c->elem_size);
    if (!buf)
        return CORIO_ENOMEM;
    /* Unroll the ring into the new buffer. */
    size_t first = c->slots - c->head < c->count ? c->slots - c->head : c->count;
    memcpy(buf, c->buf + c->head * c->elem_size, first * c->elem_size);
    memcpy(buf + first * c->elem_size, c->buf, (c->count - first) * c->elem_size);
    corio__free(c->buf);
    c->buf = buf;
    c->slots = slots;
    c->head = 0;
    return 0;
}

int corio__chan_put(corio_chan *c, const void *elem)
{
    if (c->closed)
        return CORIO_EPIPE;
    int rc = make_room(c);
    if (rc != 0)
        return rc;
    size_t tail = (c->head + c->count) % c->slots;
    memcpy(c->buf + tail * c->elem_size, elem, c->elem_size);
    c->count++;
    corio__waitq_wake_one(&c->receivers, 0);
    return 0;
}

int corio__chan_take(corio_chan *c, void *elem)
{
    if (c->count == 0)
        return c->closed ? CORIO_EPIPE : CORIO_EAGAIN;
    if (elem)
        memcpy(elem, c->buf + c->head * c->elem_size, c->elem_size);
    c->head = (c->head + 1) % c->slots;
    c->count--;
    corio__waitq_wake_one(&c->senders, 0);
    return 0;
}

int corio_chan_try_send(corio_chan *chan, const void *elem)
{
    if (!chan || !elem)
        return CORIO_EINVAL;
    corio__spin_lock(&chan->lock);
    int rc = corio__chan_put(chan, elem);
    corio__spin_unlock(&chan->lock);
    return rc;
}

static int try_put(void *chan, void *elem) { return corio__chan_put(chan, elem); }
static int try_take(void *chan, void *elem) { return corio__chan_take(chan, elem); }

int corio_chan_send_until(corio_chan *chan, const void *elem, corio_time_t deadline)
{
    if (!chan || !elem)
        return CORIO_EINVAL;
    return corio__sync_call(&chan->lock, &chan->senders, try_put, chan, (void *)elem, true,
                            deadline, CORIO__WAITS_CHAN_SEND);
}

int corio_chan_send(corio_chan *chan, const void *elem)
{
    return corio_chan_send_until(chan, elem, CORIO_FOREVER);
}

int corio_chan_try_recv(corio_chan *chan, void *elem)
{
    if (!chan)
        return CORIO_EINVAL;
    corio__spin_lock(&chan->lock);
    int rc = corio__chan_take(chan, elem);
    corio__spin_unlock(&chan->lock);
    return rc;
}

int corio_chan_recv_until(corio_chan *chan, void *elem, corio_time_t deadline)
{
    if (!chan)
        return CORIO_EINVAL;
    return corio__sync_call(&chan->lock, &chan->receivers, try_take, chan, elem, true, deadline,
                            CORIO__WAITS_CHAN_RECV);
}

int corio_chan_recv(corio_chan *chan, void *elem)
{
    return corio_chan_recv_until(chan, elem, CORIO_FOREVER);
}

int corio_chan_close(corio_chan *chan)
{
    if (!chan)
        return CORIO_EINVAL;
    corio__spin_lock(&chan->lock);
    chan->closed = true;
    corio__waitq_wake_all(&chan->receivers, 0);
    corio__waitq_wake_all(&chan->senders, 0);
    corio__spin_unlock(&chan->lock);
    return 0;
}

size_t corio_chan_len(corio_chan *chan)
{
    if (!chan)
        return 0;
    corio__spin_lock(&chan->lock);
    size_t n = chan->count;
    corio__spin_unlock(&chan->lock);
    return n;
}
