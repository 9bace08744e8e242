/* Context switch for x86_64 (System V ABI).
 *
 * A suspended context is its stack pointer; everything else it needs is in a frame on
 * its own stack, pushed by iop__ctx_switch:
 *
 *   sp + 0x00  MXCSR        SSE control/status: rounding mode, exception masks
 *   sp + 0x04  x87 CW       x87 control word: precision, rounding, masks (2 bytes)
 *   sp + 0x08  rbx          callee-saved
 *   sp + 0x10  rbp          callee-saved (frame pointer)
 *   sp + 0x18  r12          callee-saved
 *   sp + 0x20  r13          callee-saved
 *   sp + 0x28  r14          callee-saved
 *   sp + 0x30  r15          callee-saved
 *   sp + 0x38  rip          the return address our caller's `call` pushed
 *
 * Caller-saved registers (rax, rcx, rdx, rsi, rdi, r8-r11, xmm*) are dead across a call
 * by the ABI, so they are not saved. Neither is the signal mask (that is what makes
 * swapcontext slow: one sigprocmask system call per switch).
 *
 * Resuming pops the return address and jumps to it instead of `ret`: a `ret` into a
 * frame that was not entered by the matching `call` mispredicts in the return stack
 * buffer on every switch (about 6 ns here); an indirect jump is predicted from the
 * branch history. */

#define F_MXCSR 0x00
#define F_X87CW 0x04
#define F_RBX   0x08
#define F_RBP   0x10
#define F_R12   0x18
#define F_R13   0x20
#define F_R14   0x28
#define F_R15   0x30
#define F_RIP   0x38
#define F_SAVED 0x38          /* bytes below the return address */

        .text

/* void iop__ctx_switch(iop__ctx_t *from = rdi, iop__ctx_t *to = rsi)
 * ctx->sp is the first member of iop__ctx_t (offset 0). */
        .globl  iop__ctx_switch
        .hidden iop__ctx_switch
        .type   iop__ctx_switch, @function
        .p2align 4
iop__ctx_switch:
        .cfi_startproc
        subq    $F_SAVED, %rsp
        .cfi_adjust_cfa_offset F_SAVED
        stmxcsr F_MXCSR(%rsp)          /* SSE rounding mode and exception masks */
        fnstcw  F_X87CW(%rsp)          /* x87 precision/rounding control */
        movq    %rbx, F_RBX(%rsp)
        movq    %rbp, F_RBP(%rsp)
        movq    %r12, F_R12(%rsp)
        movq    %r13, F_R13(%rsp)
        movq    %r14, F_R14(%rsp)
        movq    %r15, F_R15(%rsp)
        movq    %rsp, (%rdi)           /* from->sp */
        movq    %rsp, %rax             /* from's frame, to compare the control words */

        movq    (%rsi), %rsp           /* to->sp: from here on we run on to's stack */
        movq    F_RIP(%rsp), %rcx      /* resume address (rcx is caller-saved) */
        /* ldmxcsr and fldcw are slow (microcoded) and coroutines almost never change
         * the control words: load them only when they differ. Only MXCSR's control
         * bits count; its status bits (0-5) are not preserved across calls. */
        movl    F_MXCSR(%rsp), %edx
        xorl    F_MXCSR(%rax), %edx
        testl   $0xffc0, %edx
        jz      1f
        ldmxcsr F_MXCSR(%rsp)
1:      movzwl  F_X87CW(%rsp), %edx
        cmpw    F_X87CW(%rax), %dx
        je      2f
        fldcw   F_X87CW(%rsp)
2:
        movq    F_RBX(%rsp), %rbx
        movq    F_RBP(%rsp), %rbp
        movq    F_R12(%rsp), %r12
        movq    F_R13(%rsp), %r13
        movq    F_R14(%rsp), %r14
        movq    F_R15(%rsp), %r15
        addq    $(F_SAVED + 8), %rsp   /* drop the frame and the return address */
        .cfi_adjust_cfa_offset -(F_SAVED + 8)
        jmpq    *%rcx
        .cfi_endproc
        .size   iop__ctx_switch, . - iop__ctx_switch

/* void iop__ctx_arch_make(iop__ctx_t *c = rdi, void *lo = rsi, size_t size = rdx,
 *                         void (*entry)(void *) = rcx, void *arg = r8)
 * Writes a frame like the one above at the top of the stack whose rip is the
 * trampoline, with entry in r12 and arg in r13. Popping it leaves rsp at the 16-byte
 * aligned top, so the trampoline's `call` enters iop__ctx_boot with rsp + 8 aligned,
 * as the ABI wants. The new context starts with the creator's MXCSR and x87 control
 * word, as a new thread does. */
        .globl  iop__ctx_arch_make
        .hidden iop__ctx_arch_make
        .type   iop__ctx_arch_make, @function
        .p2align 4
iop__ctx_arch_make:
        .cfi_startproc
        leaq    (%rsi, %rdx), %rax     /* top of the stack */
        andq    $-16, %rax
        subq    $(F_SAVED + 8), %rax   /* the frame's saved sp */
        stmxcsr F_MXCSR(%rax)
        fnstcw  F_X87CW(%rax)
        movw    $0, F_X87CW + 2(%rax)
        movq    $0, F_RBX(%rax)
        movq    $0, F_RBP(%rax)        /* rbp = 0 ends frame-pointer walks */
        movq    %rcx, F_R12(%rax)      /* entry */
        movq    %r8, F_R13(%rax)       /* arg */
        movq    $0, F_R14(%rax)
        movq    $0, F_R15(%rax)
        leaq    iop__ctx_trampoline(%rip), %rdx
        movq    %rdx, F_RIP(%rax)
        movq    %rax, (%rdi)           /* c->sp */
        ret
        .cfi_endproc
        .size   iop__ctx_arch_make, . - iop__ctx_arch_make

/* First code of a new context: iop__ctx_boot(entry, arg), which never returns.
 * The return address is marked undefined so that debuggers and unwinders stop
 * here instead of walking into whatever lies above the stack top. */
        .type   iop__ctx_trampoline, @function
        .p2align 4
iop__ctx_trampoline:
        .cfi_startproc
        .cfi_undefined rip
        movq    %r12, %rdi             /* entry */
        movq    %r13, %rsi             /* arg */
        call    iop__ctx_boot
        ud2                            /* entry returned: a broken invariant */
        .cfi_endproc
        .size   iop__ctx_trampoline, . - iop__ctx_trampoline

        .section .note.GNU-stack, "", @progbits
