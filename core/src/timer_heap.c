#include <errno.h>
#include "ioplex/alloc.h"
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

int iop__heap_push(iop__heap_t *h, iop_timer_t *t)
{
    if (h->n == h->cap) {
        uint32_t cap = h->cap ? h->cap * 2 : 64;
        iop__heap_slot_t *v = iop_realloc(h->v, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        h->v = v;
        h->cap = cap;
    }
    sift_up(h, h->n++, (iop__heap_slot_t){ t->when, t });
    return 0;
}

void iop__heap_remove(iop__heap_t *h, iop_timer_t *t)
{
    uint32_t i = t->heap_idx - 1;
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

void iop__heap_free(iop__heap_t *h)
{
    iop_free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}
