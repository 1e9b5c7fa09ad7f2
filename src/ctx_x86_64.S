/*
 * ctx_x86_64.S: context switch for x86-64 System V.
 *
 * Frame left on a suspended stack (lowest address first), 64 bytes:
 *   [sp+0]  MXCSR (4 bytes), x87 control word (2 bytes), padding
 *   [sp+8]  r15, r14, r13, r12, rbx, rbp
 *   [sp+56] return address
 * The CFI below describes that frame; since every suspended stack has the
 * same layout, it stays true across the stack-pointer swap in the middle.
 */
    .text

/* void corio__ctx_switch(corio__ctx *from, corio__ctx *to) */
    .globl corio__ctx_switch
    .hidden corio__ctx_switch
    .type corio__ctx_switch, @function
    .p2align 4
corio__ctx_switch:
    .cfi_startproc
    /* The control words first, into the red zone where the frame's lowest
     * word will be once the six pushes and the subq below are done: stmxcsr
     * is slow (~2.5 ns on AMD Zen) and issuing it before the pushes lets
     * them overlap it, ~0.3 ns a switch (bench/RESULTS.md). */
    stmxcsr -56(%rsp)
    fnstcw -52(%rsp)
    pushq %rbp
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbp, 0
    pushq %rbx
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbx, 0
    pushq %r12
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r12, 0
    pushq %r13
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r13, 0
    pushq %r14
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r14, 0
    pushq %r15
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r15, 0
    subq $8, %rsp
    .cfi_adjust_cfa_offset 8
    movl (%rsp), %eax        /* the control words in force now */
    movzwl 4(%rsp), %ecx

    movq %rsp, (%rdi)        /* from->sp = rsp */
    movq (%rsi), %rsp        /* rsp = to->sp */

    /* Load the target's control words only where they differ: they almost
     * never do, and ldmxcsr and fldcw are slow microcoded instructions
     * (skipping them made a yield ~10% faster, bench/RESULTS.md). Either
     * way the target resumes with its own. */
    cmpl (%rsp), %eax
    jne 1f
    cmpw 4(%rsp), %cx
    jne 1f
    .cfi_remember_state
2:  addq $8, %rsp
    .cfi_adjust_cfa_offset -8
    popq %r15
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r15
    popq %r14
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r14
    popq %r13
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r13
    popq %r12
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r12
    popq %rbx
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rbx
    popq %rbp
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rbp
    ret
    .cfi_restore_state
1:  ldmxcsr (%rsp)
    fldcw 4(%rsp)
    jmp 2b
    .cfi_endproc
    .size corio__ctx_switch, .-corio__ctx_switch

/*
 * First code run on a new stack. corio__ctx_make leaves the entry
 * function in r12 and its argument in r13. The return address column is
 * undefined: unwinders stop here, this frame has no caller.
 */
    .globl corio__ctx_trampoline
    .hidden corio__ctx_trampoline
    .type corio__ctx_trampoline, @function
    .p2align 4
corio__ctx_trampoline:
    .cfi_startproc
    .cfi_undefined %rip
    xorl %ebp, %ebp
    movq %r13, %rdi
    andq $-16, %rsp          /* the call below then leaves the ABI alignment */
    callq *%r12
    ud2                      /* entry functions never return */
    .cfi_endproc
    .size corio__ctx_trampoline, .-corio__ctx_trampoline

    .section .note.GNU-stack,"",@progbits
