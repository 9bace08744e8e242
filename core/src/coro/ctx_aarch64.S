/* Context switch for aarch64 (AAPCS64).
 *
 * A suspended context is its stack pointer; everything else it needs is in a frame on
 * its own stack, pushed by iop__ctx_switch (sp stays 16-byte aligned throughout):
 *
 *   sp + 0x00  x19, x20     callee-saved
 *   sp + 0x10  x21, x22     callee-saved
 *   sp + 0x20  x23, x24     callee-saved
 *   sp + 0x30  x25, x26     callee-saved
 *   sp + 0x40  x27, x28     callee-saved
 *   sp + 0x50  x29, x30     frame pointer; link register = where to resume
 *   sp + 0x60  d8,  d9      callee-saved low halves of v8-v15
 *   sp + 0x70  d10, d11
 *   sp + 0x80  d12, d13
 *   sp + 0x90  d14, d15
 *   sp + 0xa0  fpcr         rounding mode and traps (8 bytes, then 8 of padding)
 *
 * Caller-saved registers (x0-x18, v0-v7, v16-v31 and the high halves of v8-v15) are
 * dead across a call by the ABI, so they are not saved; neither is the signal mask.
 * FPCR is written back only when it differs: reading it is cheap, writing it can
 * synchronise the pipeline on some cores.
 *
 * Resuming branches with `br x30` instead of `ret`: `ret` would pop the return
 * predictor's stack, which was pushed by a `bl` in another context, and mispredict on
 * every switch. (Were BTI enforced, `br` would need a landing pad at the target; these
 * objects carry no BTI property note, so it is not.) */

#define F_X19   0x00
#define F_X21   0x10
#define F_X23   0x20
#define F_X25   0x30
#define F_X27   0x40
#define F_X29   0x50
#define F_D8    0x60
#define F_D10   0x70
#define F_D12   0x80
#define F_D14   0x90
#define F_FPCR  0xa0
#define F_SIZE  0xb0

        .text

/* void iop__ctx_switch(iop__ctx_t *from = x0, iop__ctx_t *to = x1)
 * ctx->sp is the first member of iop__ctx_t (offset 0). */
        .globl  iop__ctx_switch
        .hidden iop__ctx_switch
        .type   iop__ctx_switch, %function
        .p2align 4
iop__ctx_switch:
        .cfi_startproc
        sub     sp, sp, #F_SIZE
        .cfi_adjust_cfa_offset F_SIZE
        stp     x19, x20, [sp, #F_X19]
        stp     x21, x22, [sp, #F_X21]
        stp     x23, x24, [sp, #F_X23]
        stp     x25, x26, [sp, #F_X25]
        stp     x27, x28, [sp, #F_X27]
        stp     x29, x30, [sp, #F_X29]  /* frame pointer, resume address */
        stp     d8,  d9,  [sp, #F_D8]
        stp     d10, d11, [sp, #F_D10]
        stp     d12, d13, [sp, #F_D12]
        stp     d14, d15, [sp, #F_D14]
        mrs     x9, fpcr
        str     x9, [sp, #F_FPCR]
        mov     x10, sp
        str     x10, [x0]               /* from->sp */

        ldr     x10, [x1]               /* to->sp: from here on we run on to's stack */
        mov     sp, x10
        ldr     x10, [sp, #F_FPCR]
        cmp     x9, x10
        b.eq    1f
        msr     fpcr, x10
1:      ldp     x19, x20, [sp, #F_X19]
        ldp     x21, x22, [sp, #F_X21]
        ldp     x23, x24, [sp, #F_X23]
        ldp     x25, x26, [sp, #F_X25]
        ldp     x27, x28, [sp, #F_X27]
        ldp     x29, x30, [sp, #F_X29]
        ldp     d8,  d9,  [sp, #F_D8]
        ldp     d10, d11, [sp, #F_D10]
        ldp     d12, d13, [sp, #F_D12]
        ldp     d14, d15, [sp, #F_D14]
        add     sp, sp, #F_SIZE
        .cfi_adjust_cfa_offset -F_SIZE
        br      x30
        .cfi_endproc
        .size   iop__ctx_switch, . - iop__ctx_switch

/* void iop__ctx_arch_make(iop__ctx_t *c = x0, void *lo = x1, size_t size = x2,
 *                         void (*entry)(void *) = x3, void *arg = x4)
 * Writes a frame like the one above at the 16-byte aligned top of the stack: x30 =
 * the trampoline, x19 = entry, x20 = arg, x29 = 0, d8-d15 = 0, FPCR = the creator's. */
        .globl  iop__ctx_arch_make
        .hidden iop__ctx_arch_make
        .type   iop__ctx_arch_make, %function
        .p2align 4
iop__ctx_arch_make:
        .cfi_startproc
        add     x9, x1, x2              /* top of the stack */
        and     x9, x9, #~15
        sub     x9, x9, #F_SIZE         /* the frame's saved sp */
        stp     x3, x4, [x9, #F_X19]    /* entry, arg */
        stp     xzr, xzr, [x9, #F_X21]
        stp     xzr, xzr, [x9, #F_X23]
        stp     xzr, xzr, [x9, #F_X25]
        stp     xzr, xzr, [x9, #F_X27]
        adr     x10, iop__ctx_trampoline
        stp     xzr, x10, [x9, #F_X29]  /* x29 = 0 ends frame-pointer walks */
        stp     xzr, xzr, [x9, #F_D8]
        stp     xzr, xzr, [x9, #F_D10]
        stp     xzr, xzr, [x9, #F_D12]
        stp     xzr, xzr, [x9, #F_D14]
        mrs     x10, fpcr
        stp     x10, xzr, [x9, #F_FPCR]
        str     x9, [x0]                /* c->sp */
        ret
        .cfi_endproc
        .size   iop__ctx_arch_make, . - iop__ctx_arch_make

/* First code of a new context: iop__ctx_boot(entry, arg), which never returns.
 * x30 is marked undefined so that debuggers and unwinders stop here. */
        .type   iop__ctx_trampoline, %function
        .p2align 4
iop__ctx_trampoline:
        .cfi_startproc
        .cfi_undefined x30
        mov     x0, x19                 /* entry */
        mov     x1, x20                 /* arg */
        bl      iop__ctx_boot
        brk     #0                      /* entry returned: a broken invariant */
        .cfi_endproc
        .size   iop__ctx_trampoline, . - iop__ctx_trampoline

        .section .note.GNU-stack, "", %progbits
