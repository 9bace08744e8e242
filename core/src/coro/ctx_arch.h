/* Internal to the machine layer: what each ctx_x86_64.S / ctx_aarch64.S /
 * ctx_ucontext.c provides to fiber.c, and what fiber.c provides back. */
#ifndef IOP_CORO_CTX_ARCH_H
#define IOP_CORO_CTX_ARCH_H

#include <stddef.h>
#include "ctx.h"

/* Builds the first frame at the top of [lo, lo + size) so that the first
 * iop__ctx_switch to c calls iop__ctx_boot(entry, arg) with an ABI-aligned stack.
 * Sets c->sp (assembly) or c->impl (ucontext); touches nothing else of c. */
void iop__ctx_arch_make(iop__ctx_t *c, void *lo, size_t size,
                        void (*entry)(void *), void *arg);

/* fiber.c: the first code a new context runs (finishes the tools' side of the
 * switch, then entry(arg)). Traps if entry returns. */
void iop__ctx_boot(void (*entry)(void *), void *arg) __attribute__((noreturn));

#endif
