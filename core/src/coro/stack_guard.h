/* Internal to stack.c: the table of guard pages that the SIGSEGV handler searches to
 * name the coroutine whose stack overflowed, the handler itself and the per-thread
 * alternate signal stack it runs on. */
#ifndef IOP_CORO_STACK_GUARD_H
#define IOP_CORO_STACK_GUARD_H

#include <stddef.h>
#include <stdint.h>
#include "stack.h"

/* Once per thread that gets guarded stacks: installs the SIGSEGV handler (once per
 * process) and an alternate signal stack for this thread (unless it has one). */
void iop__guard_thread_init(void);

/* Records [guard, guard + len) as the guard page of stack *user; returns its slot,
 * or UINT32_MAX when the table is full (that overflow is then a plain SIGSEGV). */
uint32_t iop__guard_add(void *guard, size_t len, const iop__stack_t *user);
void iop__guard_remove(uint32_t slot);
/* The stack record that now holds the stack (NULL while it is pooled). */
void iop__guard_set_user(uint32_t slot, const iop__stack_t *user);

/* Writes "ioplex: stack overflow in coroutine NAME ..." to stderr; async-signal-safe. */
void iop__guard_report(const iop__stack_t *s, const char *what);

/* vm.max_map_count, -1 if unknown (stack.c). */
long iop__max_map_count(void);

#endif
