/* Internal: the loop's armed timers, in two tiers.
 *
 * Near: a 4-ary min-heap ordered by (when, seq). A 4-ary heap is shallower than a
 * binary one. Each slot holds a copy of its timer's `when` next to the pointer, so
 * a sift compares deadlines in the heap's own array (four children: one or two
 * cache lines) instead of loading four timer records from wherever their owners
 * keep them (op records on coroutine stacks, connection structs); only equal
 * deadlines read the records' seq.
 *
 * Far: a timer due at or after `horizon` waits in an unsorted bag. Most of them
 * never fire: an op's deadline of seconds is removed when the op completes, mostly
 * within a millisecond, and removing from the heap moves a record on every level
 * (one cache miss each) where the bag touches none but its own: the slot becomes
 * a hole on a free list, which the next timer for the bag takes. (Moving the last
 * slot into the hole wrote that timer's record, another connection's cold line.)
 * iop__heap_advance moves the bag's timers into the heap well before they are
 * due and closes the holes; far_min, a lower bound of the bag's deadlines, says
 * when that is needed.
 *
 * Each record knows its slot (heap_idx: slot + 1, IOP__HEAP_FAR set in the bag), so
 * removal needs no search. A timer's `when` must not change while it is armed. */
#ifndef IOP_TIMER_HEAP_H
#define IOP_TIMER_HEAP_H

#include "ioplex/timer.h"

#define IOP__HEAP_FAR 0x80000000u
#define IOP__HEAP_FAR_NS (1000ull * 1000 * 1000)   /* a timer due later than this waits in the bag */

typedef struct iop__heap_slot {
    uint64_t when;
    iop_timer_t *t;
} iop__heap_slot_t;

typedef struct iop__heap {
    iop__heap_slot_t *v;       /* near: the heap */
    iop__heap_slot_t *far;     /* far: the bag; a hole has t NULL, when = next hole + 1 */
    uint32_t n, nfar, cap;     /* both arrays hold cap slots: moving never allocates */
    uint32_t holes;            /* of far's nfar slots */
    uint32_t free_hole;        /* first hole + 1, 0 if none */
    uint32_t spare;            /* slots promised (iop__heap_reserve) and free: other pushes leave them */
    uint64_t horizon;          /* every timer in the bag is due at or after this */
    uint64_t far_min;          /* at most the bag's earliest deadline; UINT64_MAX if empty */
} iop__heap_t;

/* iop_timer_t.flags: armed in a slot promised by iop__heap_reserve, which its
 * removal gives back to the reservation's holder. */
#define IOP__TF_SPARE 0x2u

void iop__heap_init(iop__heap_t *h);
int iop__heap_push(iop__heap_t *h, iop_timer_t *t);   /* 0 or -ENOMEM */
/* A slot kept free for its holder until iop__heap_unreserve: the holder's timer is
 * armed in it by iop__heap_push_spare, which cannot fail for want of memory, and
 * gets it back when that timer leaves the heap. 0 or -ENOMEM. */
int iop__heap_reserve(iop__heap_t *h);
void iop__heap_unreserve(iop__heap_t *h);
/* Arms t in a reserved slot that no timer of the holder's holds: 0, or -ENOMEM
 * when there is none (an ordinary push then, which may fail). */
int iop__heap_push_spare(iop__heap_t *h, iop_timer_t *t);
void iop__heap_remove(iop__heap_t *h, iop_timer_t *t);
/* Moves the bag's timers due before now + 2 * FAR_NS into the heap once the
 * earliest may be due within FAR_NS: call it before taking due timers. */
void iop__heap_advance(iop__heap_t *h, uint64_t now);
/* The heap's first timer and its deadline (UINT64_MAX if none): after
 * iop__heap_advance(now), every timer due by now is in the heap. */
static inline iop_timer_t *iop__heap_top(const iop__heap_t *h) { return h->n ? h->v[0].t : NULL; }
static inline uint64_t iop__heap_top_when(const iop__heap_t *h) { return h->n ? h->v[0].when : UINT64_MAX; }
/* When the loop must wake up next: the heap's first deadline or the bag's bound. */
static inline uint64_t iop__heap_next_when(const iop__heap_t *h)
{
    uint64_t w = iop__heap_top_when(h);
    return w < h->far_min ? w : h->far_min;
}
/* Slot i of all armed timers, i < n + nfar, in no order; NULL for a hole. */
static inline iop_timer_t *iop__heap_at(const iop__heap_t *h, uint32_t i)
{
    return i < h->n ? h->v[i].t : h->far[i - h->n].t;
}
void iop__heap_free(iop__heap_t *h);

#endif
