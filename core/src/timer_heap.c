#include <errno.h>
#include "ioplex/alloc.h"
#include "clock_internal.h"
#include "timer_heap.h"

static inline int before(const iop__heap_slot_t *a, const iop__heap_slot_t *b)
{
    return a->when < b->when || (a->when == b->when && a->t->seq < b->t->seq);
}

static inline void place(iop__heap_t *h, uint32_t i, iop__heap_slot_t s)
{
    h->v[i] = s;
    s.t->heap_idx = i + 1;
}

static void sift_up(iop__heap_t *h, uint32_t i, iop__heap_slot_t s)
{
    while (i > 0) {
        uint32_t parent = (i - 1) / 4;
        if (!before(&s, &h->v[parent]))
            break;
        place(h, i, h->v[parent]);
        i = parent;
    }
    place(h, i, s);
}

static void sift_down(iop__heap_t *h, uint32_t i, iop__heap_slot_t s)
{
    for (;;) {
        uint32_t first = 4 * i + 1;
        if (first >= h->n)
            break;
        uint32_t best = first, end = first + 4 < h->n ? first + 4 : h->n;
        for (uint32_t c = first + 1; c < end; c++)
            if (before(&h->v[c], &h->v[best]))
                best = c;
        if (!before(&h->v[best], &s))
            break;
        place(h, i, h->v[best]);
        i = best;
    }
    place(h, i, s);
}

static void near_push(iop__heap_t *h, iop_timer_t *t)
{
    sift_up(h, h->n++, (iop__heap_slot_t){ t->when, t });
}

void iop__heap_init(iop__heap_t *h)
{
    *h = (iop__heap_t){ .far_min = UINT64_MAX };
}

/* The bag's timers close up at its front (touching each one's record: rare, see
 * reserve and iop__heap_advance), keep only those due at or after target and
 * give the rest to the heap; far_min becomes exact. */
static void far_close_up(iop__heap_t *h, uint64_t target)
{
    uint64_t low = UINT64_MAX;
    uint32_t keep = 0;
    for (uint32_t i = 0; i < h->nfar; i++) {
        iop__heap_slot_t s = h->far[i];
        if (!s.t)
            continue;
        if (s.when < target) {
            near_push(h, s.t);
        } else {
            h->far[keep] = s;
            s.t->heap_idx = ++keep | IOP__HEAP_FAR;
            if (s.when < low)
                low = s.when;
        }
    }
    h->nfar = keep;
    h->holes = h->free_hole = 0;
    h->far_min = low;
}

/* Room for one more timer beyond the spare slots (cap >= n + nfar + spare always). */
static int reserve(iop__heap_t *h)
{
    if (h->n + h->nfar + h->spare < h->cap)
        return 0;
    if (h->holes) {
        /* Holes hold the room: close them rather than grow. At least `holes`
         * pushes come before the next time, so each pays O(1) of it. */
        far_close_up(h, 0);
        return 0;
    }
    uint32_t cap = h->cap ? h->cap * 2 : 64;
    iop__heap_slot_t *v = iop_realloc(h->v, cap * sizeof *v);
    if (!v)
        return -ENOMEM;
    h->v = v;
    iop__heap_slot_t *far = iop_realloc(h->far, cap * sizeof *far);
    if (!far)
        return -ENOMEM;            /* v's larger block is kept: harmless */
    h->far = far;
    h->cap = cap;
    return 0;
}

int iop__heap_push(iop__heap_t *h, iop_timer_t *t)
{
    int far = t->when >= h->horizon;
    if (!(far && h->free_hole) && reserve(h) < 0)   /* a hole is room enough */
        return -ENOMEM;
    if (!far) {
        near_push(h, t);
        return 0;
    }
    uint32_t i;
    if (h->free_hole) {
        i = h->free_hole - 1;
        h->free_hole = (uint32_t)h->far[i].when;
        h->holes--;
    } else {
        i = h->nfar++;
    }
    h->far[i] = (iop__heap_slot_t){ t->when, t };
    t->heap_idx = (i + 1) | IOP__HEAP_FAR;
    if (t->when < h->far_min)
        h->far_min = t->when;
    return 0;
}

int iop__heap_reserve(iop__heap_t *h)
{
    if (reserve(h) < 0)
        return -ENOMEM;
    h->spare++;
    return 0;
}

void iop__heap_unreserve(iop__heap_t *h)
{
    if (h->spare)
        h->spare--;
}

int iop__heap_push_spare(iop__heap_t *h, iop_timer_t *t)
{
    if (!h->spare)
        return iop__heap_push(h, t);
    h->spare--;                    /* n + nfar < cap now: the push below allocates nothing */
    int r = iop__heap_push(h, t);
    if (r < 0) {
        h->spare++;
        return r;
    }
    t->flags |= IOP__TF_SPARE;
    return 0;
}

void iop__heap_remove(iop__heap_t *h, iop_timer_t *t)
{
    uint32_t i = (t->heap_idx & ~IOP__HEAP_FAR) - 1;
    if (t->flags & IOP__TF_SPARE) {
        t->flags &= ~IOP__TF_SPARE;
        h->spare++;                /* its holder's again */
    }
    if (t->heap_idx & IOP__HEAP_FAR) {
        /* far_min stays a lower bound; iop__heap_advance makes it exact again. */
        t->heap_idx = 0;
        if (h->nfar - h->holes == 1) {
            h->nfar = h->holes = h->free_hole = 0;   /* the last one: all holes go */
            h->far_min = UINT64_MAX;
        } else if (i == h->nfar - 1) {
            h->nfar--;
        } else {
            h->far[i] = (iop__heap_slot_t){ h->free_hole, NULL };
            h->free_hole = i + 1;
            h->holes++;
        }
        return;
    }
    iop__heap_slot_t last = h->v[--h->n];
    t->heap_idx = 0;
    if (i == h->n)
        return;
    /* The last slot takes the hole, then moves whichever way the order needs. */
    if (i > 0 && before(&last, &h->v[(i - 1) / 4]))
        sift_up(h, i, last);
    else
        sift_down(h, i, last);
}

void iop__heap_advance(iop__heap_t *h, uint64_t now)
{
    uint64_t target = iop__ns_after(now, 2 * IOP__HEAP_FAR_NS);
    if (h->far_min >= iop__ns_after(now, IOP__HEAP_FAR_NS)) {
        /* Nothing in the bag is due soon: later timers may go straight to the heap,
         * up to the bag's bound. */
        uint64_t to = h->far_min < target ? h->far_min : target;
        if (to > h->horizon)
            h->horizon = to;
        return;
    }
    /* Those due before target go to the heap (cap covers both arrays: no
     * allocation); the rest close up and give the new bound. */
    far_close_up(h, target);
    h->horizon = target;
}

void iop__heap_free(iop__heap_t *h)
{
    iop_free(h->v);
    iop_free(h->far);
    iop__heap_init(h);
}
