/* Internal: the machine context of a coroutine. Implementations: ctx_x86_64.S,
 * ctx_aarch64.S, ctx_ucontext.c (any other target), chosen at build time; fiber.c
 * wraps the raw switch with the tools' bookkeeping. */
#ifndef IOP_CORO_CTX_H
#define IOP_CORO_CTX_H

#include <stddef.h>
#include "stack.h"

typedef struct iop__ctx {
    void *sp;                      /* saved stack pointer (asm) */
    void *impl;                    /* ucontext_t * for the fallback, else unused */
    void *asan_fake_stack;         /* ASan: fake stack saved across a switch */
    void *tsan_fiber;              /* TSan: this context's fiber */
    unsigned valgrind_id;          /* valgrind: registered stack id, 0 = none */
} iop__ctx_t;

/* Prepares c so that the first switch to it runs entry(arg) on stack s. entry must
 * never return (it switches away for good, with dying = 1). */
void iop__ctx_make(iop__ctx_t *c, const iop__stack_t *s, void (*entry)(void *), void *arg);
/* Releases what ctx_make registered (valgrind stack id, TSan fiber). */
void iop__ctx_unmake(iop__ctx_t *c);

/* The raw switch: saves the callee-saved state of the running context into from and
 * resumes to. Returns when something switches back to from. */
void iop__ctx_switch(iop__ctx_t *from, iop__ctx_t *to);

/* The switch every caller uses: checks the canary of the stack being left, tells
 * ASan / TSan / valgrind which stack runs next, then iop__ctx_switch. from_stack and
 * to_stack are NULL for the thread's own stack. dying = 1 when from will never be
 * resumed (its stack goes back to the pool). */
void iop__fiber_switch(iop__ctx_t *from, const iop__stack_t *from_stack,
                       iop__ctx_t *to, const iop__stack_t *to_stack, int dying);

#endif
