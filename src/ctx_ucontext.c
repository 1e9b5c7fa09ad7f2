/*
 * ctx_ucontext.c: portable context backend on makecontext/swapcontext, for
 * targets without a hand-written switch. About a hundred times slower than
 * the assembly backends (swapcontext saves the signal mask with a syscall),
 * but correct everywhere POSIX ucontext exists.
 */
#include "ctx.h"

#include <fenv.h>
#include <stdint.h>

/* makecontext passes only int arguments: split the two pointers. */
static void ucontext_entry(unsigned e_hi, unsigned e_lo, unsigned a_hi,
                           unsigned a_lo)
{
    corio__ctx_entry entry =
        (corio__ctx_entry)(uintptr_t)(((uint64_t)e_hi << 32) | e_lo);
    void *arg = (void *)(uintptr_t)(((uint64_t)a_hi << 32) | a_lo);
    /* getcontext captured its caller's floating-point environment; a new
     * context starts from the defaults, as with the assembly backends. */
    fesetenv(FE_DFL_ENV);
    entry(arg);
}

void corio__ctx_make(corio__ctx *ctx, void *lo, size_t size,
                     corio__ctx_entry entry, void *arg)
{
    getcontext(&ctx->uc);
    ctx->uc.uc_stack.ss_sp = lo;
    ctx->uc.uc_stack.ss_size = size;
    ctx->uc.uc_link = NULL;
    uint64_t e = (uint64_t)(uintptr_t)entry, a = (uint64_t)(uintptr_t)arg;
    makecontext(&ctx->uc, (void (*)(void))ucontext_entry, 4,
                (unsigned)(e >> 32), (unsigned)e, (unsigned)(a >> 32),
                (unsigned)a);
    ctx->stack_low = (char *)lo + size;
}

void corio__ctx_switch(corio__ctx *from, corio__ctx *to)
{
    /* Everything live in this frame and below lies above this local, but
     * swapcontext's own frame does not: leave it a generous margin. */
    char here;
    from->stack_low = (void *)((uintptr_t)&here - 1024);
    swapcontext(&from->uc, &to->uc);
}

void *corio__ctx_stack_low(const corio__ctx *ctx) { return ctx->stack_low; }
