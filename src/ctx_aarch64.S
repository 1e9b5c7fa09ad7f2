/*
 * ctx_aarch64.S: context switch for AArch64 (AAPCS64).
 *
 * Frame left on a suspended stack, 176 bytes from sp:
 *   [0]   x19 x20   [16]  x21 x22   [32]  x23 x24   [48] x25 x26
 *   [64]  x27 x28   [80]  x29 x30   [96]  d8 d9     [112] d10 d11
 *   [128] d12 d13   [144] d14 d15   [160] FPCR, padding
 */
    .text

/* void corio__ctx_switch(corio__ctx *from, corio__ctx *to) */
    .globl corio__ctx_switch
    .hidden corio__ctx_switch
    .type corio__ctx_switch, %function
    .p2align 4
corio__ctx_switch:
    .cfi_startproc
    sub sp, sp, #176
    .cfi_def_cfa_offset 176
    stp x19, x20, [sp, #0]
    stp x21, x22, [sp, #16]
    stp x23, x24, [sp, #32]
    stp x25, x26, [sp, #48]
    stp x27, x28, [sp, #64]
    stp x29, x30, [sp, #80]
    .cfi_offset x19, -176
    .cfi_offset x20, -168
    .cfi_offset x21, -160
    .cfi_offset x22, -152
    .cfi_offset x23, -144
    .cfi_offset x24, -136
    .cfi_offset x25, -128
    .cfi_offset x26, -120
    .cfi_offset x27, -112
    .cfi_offset x28, -104
    .cfi_offset x29, -96
    .cfi_offset x30, -88
    stp d8, d9, [sp, #96]
    stp d10, d11, [sp, #112]
    stp d12, d13, [sp, #128]
    stp d14, d15, [sp, #144]
    mrs x10, fpcr            /* the control register in force now */
    str x10, [sp, #160]

    mov x9, sp
    str x9, [x0]             /* from->sp = sp */
    ldr x9, [x1]
    mov sp, x9               /* sp = to->sp */

    /* Write the target's FPCR only where it differs (it almost never
     * does; a write may synchronise the FP pipeline). */
    ldr x9, [sp, #160]
    cmp x9, x10
    b.eq 1f
    msr fpcr, x9
1:  ldp d14, d15, [sp, #144]
    ldp d12, d13, [sp, #128]
    ldp d10, d11, [sp, #112]
    ldp d8, d9, [sp, #96]
    ldp x29, x30, [sp, #80]
    ldp x27, x28, [sp, #64]
    ldp x25, x26, [sp, #48]
    ldp x23, x24, [sp, #32]
    ldp x21, x22, [sp, #16]
    ldp x19, x20, [sp, #0]
    add sp, sp, #176
    .cfi_def_cfa_offset 0
    /* The registers hold their values again; their slots are below sp now,
     * where a signal frame may be written over them (tests/test_cfi.sh). */
    .cfi_restore x19
    .cfi_restore x20
    .cfi_restore x21
    .cfi_restore x22
    .cfi_restore x23
    .cfi_restore x24
    .cfi_restore x25
    .cfi_restore x26
    .cfi_restore x27
    .cfi_restore x28
    .cfi_restore x29
    .cfi_restore x30
    ret
    .cfi_endproc
    .size corio__ctx_switch, .-corio__ctx_switch

/* First code on a new stack: entry in x19, argument in x20. No caller. */
    .globl corio__ctx_trampoline
    .hidden corio__ctx_trampoline
    .type corio__ctx_trampoline, %function
    .p2align 4
corio__ctx_trampoline:
    .cfi_startproc
    .cfi_undefined x30
    mov x29, #0
    mov x0, x20
    blr x19
    brk #0                   /* entry functions never return */
    .cfi_endproc
    .size corio__ctx_trampoline, .-corio__ctx_trampoline

    .section .note.GNU-stack,"",%progbits
