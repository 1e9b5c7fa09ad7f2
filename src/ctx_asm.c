/*
 * ctx_asm.c: building the first frame of a new context for the assembly
 * backends (ctx_x86_64.S, ctx_aarch64.S). The frame is laid out exactly as
 * corio__ctx_switch leaves a suspended stack, so the first switch to it
 * "returns" into corio__ctx_trampoline with the entry function and its
 * argument in callee-saved registers.
 */
#include "ctx.h"

#include <stdint.h>
#include <string.h>

void corio__ctx_trampoline(void);

void corio__ctx_make(corio__ctx *ctx, void *lo, size_t size,
                     corio__ctx_entry entry, void *arg)
{
    uintptr_t top = ((uintptr_t)lo + size) & ~(uintptr_t)15;
#if defined(__x86_64__)
    /* 8 frame slots below a zero word that ends the stack:
     * [0] MXCSR | x87 CW, [1] r15, [2] r14, [3] r13 = arg, [4] r12 = entry,
     * [5] rbx, [6] rbp, [7] return address = trampoline. */
    uint64_t *frame = (uint64_t *)(top - 9 * sizeof(uint64_t));
    memset(frame, 0, 9 * sizeof(uint64_t));
    /* Power-on defaults: all exceptions masked, round to nearest; x87
     * extended precision. A task does not inherit whatever its loop's
     * thread last had. */
    frame[0] = 0x1F80u | ((uint64_t)0x037Fu << 32);
    frame[3] = (uint64_t)(uintptr_t)arg;
    frame[4] = (uint64_t)(uintptr_t)entry;
    frame[7] = (uint64_t)(uintptr_t)corio__ctx_trampoline;
    ctx->sp = frame;
#elif defined(__aarch64__)
    uint64_t *frame = (uint64_t *)(top - 176);
    memset(frame, 0, 176);
    frame[0] = (uint64_t)(uintptr_t)entry;   /* x19 */
    frame[1] = (uint64_t)(uintptr_t)arg;     /* x20 */
    frame[11] = (uint64_t)(uintptr_t)corio__ctx_trampoline; /* x30 */
    ctx->sp = frame;
#else
#error "no assembly context backend for this target; build with CORIO_CONTEXT=ucontext"
#endif
}

void *corio__ctx_stack_low(const corio__ctx *ctx) { return ctx->sp; }
