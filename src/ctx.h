/*
 * ctx.h: the machine-level context switch.
 *
 * A context is what a suspended stack needs to resume: on the assembly
 * backends, just its stack pointer; the callee-saved registers and the
 * floating-point control words (MXCSR and the x87 control word on x86-64,
 * FPCR on aarch64) are pushed on that stack by corio__ctx_switch. Saving
 * only what the ABI says a call preserves makes a switch a handful of
 * instructions; everything else is dead at a call site anyway.
 *
 * Backends, chosen at build time (CMake option CORIO_CONTEXT):
 *   ctx_x86_64.S    x86-64 System V
 *   ctx_aarch64.S   AArch64 (AAPCS64)
 *   ctx_ucontext.c  any other POSIX target: swapcontext(), slower
 *                   (it makes a sigprocmask syscall per switch).
 *
 * A new context starts in an entry trampoline whose unwind information
 * says "no caller", so gdb and perf backtraces of a task stop there cleanly
 * instead of wandering into garbage.
 */
#ifndef CORIO_CTX_H
#define CORIO_CTX_H

#include <stddef.h>

#ifdef CORIO_CTX_UCONTEXT
#include <ucontext.h>
typedef struct corio__ctx {
    ucontext_t uc;
    void *stack_low; /* lowest live stack address when suspended (estimate) */
} corio__ctx;
#else
typedef struct corio__ctx {
    void *sp; /* saved stack pointer while suspended */
} corio__ctx;
#endif

typedef void (*corio__ctx_entry)(void *arg);

/*
 * Prepare *ctx so that the first switch to it calls entry(arg) on the
 * stack [lo, lo + size). entry must never return: it ends by switching
 * away for good.
 */
void corio__ctx_make(corio__ctx *ctx, void *lo, size_t size,
                     corio__ctx_entry entry, void *arg);

/* Save the running context into *from and resume *to. Returns when
 * something switches back to *from. */
void corio__ctx_switch(corio__ctx *from, corio__ctx *to);

/* The lowest address of *ctx's stack that holds live data while it is
 * suspended (light tasks copy [low, top) off the shared stack). */
void *corio__ctx_stack_low(const corio__ctx *ctx);

#endif /* CORIO_CTX_H */
