/* Internal: a 4-ary min-heap of timer records ordered by (when, seq). A 4-ary heap
 * is shallower than a binary one and its children share a cache line, which keeps
 * sift-down cheap at 100,000+ timers. Each record knows its slot (heap_idx, 1-based),
 * so removal is O(log n) without a search. */
#ifndef IOP_TIMER_HEAP_H
#define IOP_TIMER_HEAP_H

#include "ioplex/timer.h"

typedef struct iop__heap {
    iop_timer_t **v;
    uint32_t n, cap;
} iop__heap_t;

int iop__heap_push(iop__heap_t *h, iop_timer_t *t);   /* 0 or -ENOMEM */
void iop__heap_remove(iop__heap_t *h, iop_timer_t *t);
static inline iop_timer_t *iop__heap_top(const iop__heap_t *h) { return h->n ? h->v[0] : NULL; }
void iop__heap_free(iop__heap_t *h);

#endif
