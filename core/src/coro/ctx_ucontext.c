/* Context switch with makecontext / swapcontext, for targets without an assembly
 * switch (and on request, IOPLEX_CORO_UCONTEXT=ON, to test this path).
 *
 * No allocation: a suspended context's ucontext_t lives in the frame of the
 * iop__ctx_switch call that suspended it (valid exactly as long as it is suspended),
 * and a new context's first ucontext_t is carved from the top of its own stack.
 * swapcontext saves and restores the signal mask with a system call each time, which
 * is why this path is a fallback only. */
#include <stdint.h>
#include <string.h>
#include <ucontext.h>
#include "ctx_arch.h"

/* What the first resume needs, next to the ucontext_t at the stack top. */
struct boot_args {
    void (*entry)(void *);
    void *arg;
};

/* makecontext passes int arguments only: the pointer travels as two halves. */
static void ucontext_start(unsigned hi, unsigned lo)
{
    const struct boot_args *b = (const struct boot_args *)(((uintptr_t)hi << 16 << 16) | lo);
    iop__ctx_boot(b->entry, b->arg);
}

void iop__ctx_arch_make(iop__ctx_t *c, void *lo, size_t size,
                        void (*entry)(void *), void *arg)
{
    uintptr_t top = ((uintptr_t)lo + size) & ~(uintptr_t)63;
    ucontext_t *uc = (ucontext_t *)((top - sizeof(ucontext_t)) & ~(uintptr_t)63);
    struct boot_args *b = (struct boot_args *)uc - 1;
    b->entry = entry;
    b->arg = arg;

    getcontext(uc);   /* cannot fail for the calling thread */
    uc->uc_link = NULL;
    uc->uc_stack.ss_sp = lo;
    uc->uc_stack.ss_size = ((uintptr_t)b & ~(uintptr_t)15) - (uintptr_t)lo;
    uintptr_t p = (uintptr_t)b;
    makecontext(uc, (void (*)(void))ucontext_start, 2,
                (unsigned)(p >> 16 >> 16), (unsigned)(p & 0xffffffffu));
    c->impl = uc;
}

void iop__ctx_switch(iop__ctx_t *from, iop__ctx_t *to)
{
    ucontext_t here;
    /* swapcontext fills everything but uc_stack; zero it so that nothing (ASan's
     * swapcontext interceptor reads it) sees garbage there. */
    memset(&here.uc_stack, 0, sizeof here.uc_stack);
    from->impl = &here;
    if (swapcontext(&here, (ucontext_t *)to->impl) != 0)
        __builtin_trap();   /* only fails on a corrupt target: a broken invariant */
}
