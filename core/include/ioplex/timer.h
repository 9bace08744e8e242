/* ioplex — timers. Caller-owned records kept in a 4-ary min-heap: start, stop and
 * expiry cost O(log n); timers due at the same instant fire in the order started.
 * A record must be zeroed before its first start ({ 0 }, memset): start reads its
 * state to take it off a heap it may still be on. */
#ifndef IOPLEX_TIMER_H
#define IOPLEX_TIMER_H

#include "common.h"

typedef struct iop_timer iop_timer_t;
typedef void (*iop_timer_cb)(iop_timer_t *t);

struct iop_timer {
    iop_timer_cb cb;
    void *data;            /* the caller's */
    /* private */
    iop_loop_t *loop;
    uint64_t when;         /* absolute, loop clock (ns) */
    uint64_t repeat;       /* ns, 0 for one-shot */
    uint64_t seq;          /* start order, breaks ties */
    uint32_t heap_idx;     /* slot + 1 in the heap, 0 when inactive */
    uint32_t flags;
};

/* Arms t to fire after `after_ns` (from the loop's cached clock), then every
 * `repeat_ns` if non-zero. Restarting an active timer re-arms it (on this loop,
 * taking it off the one it was armed on). May be called
 * from inside any callback, including t's own. */
IOP_EXPORT int iop_timer_start(iop_loop_t *loop, iop_timer_t *t, uint64_t after_ns,
                               uint64_t repeat_ns, iop_timer_cb cb);

/* Disarms t; a no-op on an inactive timer. t may be freed right after. */
IOP_EXPORT void iop_timer_stop(iop_timer_t *t);

/* Non-zero while t is armed. */
IOP_EXPORT int iop_timer_active(const iop_timer_t *t);

#endif
