/*
 * light.c: light tasks' shared stack (CORIO_TASK_LIGHT; light.h).
 *
 * A loop's light tasks run on one shared stack. The frames of the light
 * task that last ran stay on it until another light task needs it ("lazy
 * save"): only then are they copied to that task's buffer, and the
 * newcomer's copied in. Both copies run on the scheduler's own stack
 * (sched.c calls in here between tasks). When memory runs out the
 * occupant may be impossible to save; the light tasks that need the
 * stack then wait on the loop's stalled list (below).
 */
#include "light.h"

#include <stdint.h>
#include <string.h>

#include "arena.h"
#include "ready.h"
#include "sanitize.h"

static char *shared_top(corio__loop *l)
{
    return (char *)l->shared_stack.lo + l->shared_stack.size;
}

/* Copy that checkers must not see as ordinary accesses: the shared stack
 * holds dead frames whose ASan redzones are still poisoned. */
#ifdef CORIO__ASAN
__attribute__((no_sanitize_address))
#endif
static void copy_stack_bytes(void *dst, const void *src, size_t len)
{
#ifdef CORIO__ASAN
    volatile unsigned char *d = dst;
    const volatile unsigned char *s = src;
    for (size_t i = 0; i < len; i++)
        d[i] = s[i];
#else
    memcpy(dst, src, len);
#endif
}

/* Give t a save buffer of at least `need` bytes in place of its old one,
 * whose contents are dead. Buffers come from the loop's arena (light
 * tasks never leave their loop), in its size classes. Sizes are kept in
 * 32 bits (task.h), so frames deeper than 4 GiB (stack_size allows up to
 * 1 TiB) cannot be saved: refused as if memory had run out. */
static bool saved_resize(corio__loop *l, corio_task *t, size_t need)
{
    if (need > UINT32_MAX)
        return false;
    size_t cap = corio__arena_block_size(need);
    void *buf = corio__arena_alloc(&l->arena, cap);
    if (!buf)
        return false;
    corio__arena_free(&l->arena, t->run->saved, t->saved_cap);
    t->run->saved = buf;
    t->saved_cap = (uint32_t)cap;
    return true;
}

/* Move the frames of the light task occupying the shared stack to its
 * buffer. false if the buffer could not be grown (only possible when
 * memory ran out and the task suspended without a big enough
 * reservation: the margin fell short in an unusual build, it took a
 * wake-up that beat its commit, or an uncancellable wait suspended it
 * without memory, wait.c). */
bool corio__light_save_owner(corio__loop *l)
{
    corio_task *o = l->shared_owner;
    if (o) {
        char *low = corio__ctx_stack_low(&o->run->ctx);
        char *top = shared_top(l);
        if (low < (char *)l->shared_stack.lo)
            low = l->shared_stack.lo;
        size_t len = (size_t)(top - low);
        corio__sanitize_stack_readable(low, len);
        if (len > o->saved_cap && !saved_resize(l, o, len))
            return false;
        copy_stack_bytes(o->run->saved, low, len);
        o->run->saved_len = (uint32_t)len;
        l->shared_owner = NULL;
    }
    l->stalled_backoff = 0; /* the stack is free: a later stall is new */
    return true;
}

bool corio__light_swap_in(corio__loop *l, corio_task *t)
{
    if (l->shared_owner == t)
        return true;
    if (!corio__light_save_owner(l))
        return false;
    struct corio__task_run *r = t->run;
    char *dst = shared_top(l) - r->saved_len;
    corio__sanitize_stack_reuse(l->shared_stack.lo, l->shared_stack.size);
    corio__sanitize_stack_writable(dst, r->saved_len);
    copy_stack_bytes(dst, r->saved, r->saved_len);
    l->shared_owner = t;
    return true;
}

/*
 * Light tasks stalled on memory. When the stack's owner cannot be saved
 * (it suspended without a big enough reservation: a wake-up beat its
 * commit, or an uncancellable wait, wait.c, suspended it without memory),
 * no other light task of the loop can start or swap in until the owner
 * runs again (it owns the stack, so it can; once it suspends with a
 * reservation or finishes, the others can go) or memory comes back,
 * which nothing signals. Those tasks wait on the stalled list meanwhile,
 * so that the rest of the loop, the owner included, runs on, and a loop
 * with nothing else to do parks. (They used to go back on the ready
 * list, which the scheduler then skipped until the next poll: the loop
 * polled, retried, failed and polled again, busy for as long as memory
 * stayed short.)
 *
 * They go back on the ready list, in their order, when the owner has run
 * (sched.c, run_task) and otherwise at the first poll after
 * stalled_retry_at (poll_events; park sleeps until then at most). While
 * the list is not empty, a light task that needs the stack joins it
 * without trying, so a retry costs one failed allocation however many
 * tasks wait. The wait
 * before a retry doubles from LIGHT_RETRY_MIN_NS to LIGHT_RETRY_MAX_NS
 * while the stall lasts: a shortage that passes quickly (another task
 * freed memory) costs its light tasks a millisecond, and one that lasts
 * costs the loop some sixteen wake-ups and failed mmaps a second, next
 * to nothing, instead of a thousand; 64 ms after memory comes back is
 * the most they then wait, a delay that only comes with an exhausted
 * machine.
 */
#define LIGHT_RETRY_MIN_NS ((int64_t)1 * CORIO_MSEC)
#define LIGHT_RETRY_MAX_NS ((int64_t)64 * CORIO_MSEC)

/* t (ready, light, not the owner) cannot have the shared stack now. */
void corio__light_stall(corio__loop *l, corio_task *t)
{
    if (!l->stalled_head) {
        /* A retry failed (or the first try): wait longer this time. */
        int64_t b = l->stalled_backoff;
        b = !b ? LIGHT_RETRY_MIN_NS : b < LIGHT_RETRY_MAX_NS / 2 ? 2 * b : LIGHT_RETRY_MAX_NS;
        l->stalled_backoff = b;
        l->stalled_retry_at = l->now + b;
        l->stalled_head = t;
    } else {
        l->stalled_tail->next = t;
    }
    t->next = NULL;
    l->stalled_tail = t;
}

/* The stalled light tasks may have the stack now, or may find memory to
 * save its owner: back to the end of the ready list, in their order. */
void corio__light_retry(corio__loop *l)
{
    corio__ready_append_list(l, l->stalled_head, l->stalled_tail);
    l->stalled_head = l->stalled_tail = NULL;
}

int corio__light_reserve(corio_task *self)
{
    corio__loop *l = self->home;
    char *here = __builtin_frame_address(0);
    size_t need = (size_t)(shared_top(l) - here) + CORIO__LIGHT_SAVE_MARGIN;
    if (need <= self->saved_cap)
        return 0;
    /* The old contents are dead: the buffer only matters while suspended. */
    return saved_resize(l, self, need) ? 0 : CORIO_ENOMEM;
}
