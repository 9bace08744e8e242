/* Internal: coroutine stacks from mmap, pooled, with a guard page or a canary. */
#ifndef IOP_CORO_STACK_H
#define IOP_CORO_STACK_H

#include <stddef.h>
#include <stdint.h>

typedef struct iop__stack {
    void *lo;                      /* usable stack: [lo, lo + size) */
    size_t size;
    void *map;                     /* the whole mapping (guard included) */
    size_t map_size;
    uint32_t flags;                /* IOP_CORO_GUARD / IOP_CORO_CANARY */
    const char *owner;             /* name of the coroutine using it, for reports */
    uint32_t slot;                 /* private to stack.c: its guard-table entry */
} iop__stack_t;

typedef struct iop__stack_pool iop__stack_pool_t;

int iop__stack_pool_new(iop__stack_pool_t **out, uint32_t max_kept);
void iop__stack_pool_free(iop__stack_pool_t *p);

/* A stack of at least size bytes (rounded to pages) with the given protection. -ENOMEM
 * with a clear iop_last_error() when the kernel's map count limit is the reason.
 * *out must stay where it is while the stack is in use (embed it in the coroutine
 * record): a guard-page overflow report reads out->owner from there. */
int iop__stack_get(iop__stack_pool_t *p, size_t size, uint32_t flags, iop__stack_t *out);
void iop__stack_put(iop__stack_pool_t *p, iop__stack_t *s);

/* Canary stacks: 0 if intact, else reports the overflow (naming s->owner) and
 * aborts. Called on every switch away from a canary stack. */
void iop__stack_check(const iop__stack_t *s);

#endif
