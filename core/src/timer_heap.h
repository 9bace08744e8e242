/* Internal: a 4-ary min-heap of timer records ordered by (when, seq). A 4-ary heap
 * is shallower than a binary one. Each slot holds a copy of its timer's `when` next
 * to the pointer, so a sift compares deadlines in the heap's own array (four
 * children: one or two cache lines) instead of loading four timer records from
 * wherever their owners keep them (op records on coroutine stacks, connection
 * structs); only equal deadlines read the records' seq.
 * Each record knows its slot (heap_idx, 1-based), so removal is O(log n) without a
 * search. A timer's `when` must not change while it is in the heap. */
#ifndef IOP_TIMER_HEAP_H
#define IOP_TIMER_HEAP_H

#include "ioplex/timer.h"

typedef struct iop__heap_slot {
    uint64_t when;
    iop_timer_t *t;
} iop__heap_slot_t;

typedef struct iop__heap {
    iop__heap_slot_t *v;
    uint32_t n, cap;
} iop__heap_t;

int iop__heap_push(iop__heap_t *h, iop_timer_t *t);   /* 0 or -ENOMEM */
void iop__heap_remove(iop__heap_t *h, iop_timer_t *t);
static inline iop_timer_t *iop__heap_top(const iop__heap_t *h) { return h->n ? h->v[0].t : NULL; }
/* The earliest deadline, UINT64_MAX when the heap is empty: no timer record loaded. */
static inline uint64_t iop__heap_top_when(const iop__heap_t *h) { return h->n ? h->v[0].when : UINT64_MAX; }
void iop__heap_free(iop__heap_t *h);

#endif
