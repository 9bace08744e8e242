/* Channels and select.
 *
 * A channel is a ring of cap elements (allocated with the channel, never again) and
 * two FIFO wait queues: senders waiting because it is full (every sender, when cap
 * is 0) and receivers waiting because it is empty. Whoever arrives second does the
 * whole transfer and wakes the one who waited: an element goes straight from the
 * sender's frame to the receiver's when one of them waits, so an unbuffered send
 * returns only once its receiver holds the value, and a hand-off costs one copy and
 * one wake (a queued wake, never a switch from here).
 *
 * Invariants: a receiver waits only while the ring is empty; a sender of a buffered
 * channel waits only while it is full, and a receiver that frees a slot refills it
 * from the first waiting sender right away, so elements leave in the order senders
 * arrived.
 *
 * select parks with one waiter per case, all sharing a group; the first case to fire
 * removes the group's other waiters before waking the coroutine, so it is woken once
 * and no waiter of it stays behind. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include "coro_internal.h"

/* Cases one iop_select takes: their waiters live on the coroutine's stack. */
#define IOP__SELECT_MAX 64

/* The send / receive fast paths are a few loads and stores: calls would cost more. */
#define HOT static inline __attribute__((always_inline))

struct iop_chan {
    iop_waitq_t sendq;
    iop_waitq_t recvq;
    size_t elem_size;
    size_t cap;
    size_t head;                   /* slot of the oldest buffered element */
    size_t count;                  /* buffered elements */
    int closed;
    unsigned char buf[];           /* cap * elem_size bytes */
};

/* The waiters of one parked select, found from any of them through w->group. */
typedef struct select_group {
    iop__waiter_t *w;              /* one per case, index = case */
    int n;
} select_group_t;

/* ---- waiters ------------------------------------------------------------------------ */

/* A waiter whose coroutine is no longer parked must not be handed anything: a select
 * woken by its deadline or a cancel loses only its first waiter at once (iop__park
 * knows no other), the rest stay queued until it runs and removes them. */
static inline int waiter_live(const iop__waiter_t *w)
{
    return w->coro->state == IOP__CS_PARKED;
}

/* The first waiter of q that still waits, dropping stale ones; it stays queued. */
static inline iop__waiter_t *live_head(iop_waitq_t *q)
{
    iop__waiter_t *w;
    while ((w = q->head) != NULL && !waiter_live(w))
        iop__waitq_remove(w);
    return w;
}

/* A select's case fired: its other waiters leave their queues, and the coroutine
 * wakes with the case index (w->res keeps the case's result). */
static void select_fire(iop__waiter_t *w)
{
    select_group_t *g = w->group;
    for (int i = 0; i < g->n; i++)
        if (&g->w[i] != w)
            iop__waitq_remove(&g->w[i]);
    iop__wake(w->coro, w->index);
}

/* Completes w's wait with res. The wake is the last thing done: from a callback it
 * resumes the coroutine at once, and after that neither w nor the channel may be
 * touched. */
HOT void waiter_fire(iop__waiter_t *w, int res)
{
    w->res = res;
    if (w->group)
        select_fire(w);
    else
        iop__wake(w->coro, res);
}

/* Waits for a wake with w queued in q (w filled by the caller). */
static int park_in(iop_waitq_t *q, iop__waiter_t *w, iop_coro_t *self, uint64_t deadline)
{
    iop__waitq_push(q, w);
    self->waiter = w;
    int r = iop__park(deadline);
    if (w->q)                      /* still queued: only after a timeout or cancel */
        iop__waitq_remove(w);
    self->waiter = NULL;
    return r;
}

/* ---- element moves ------------------------------------------------------------------ */

/* Pointer- and int-sized elements are the common case: copied inline, they save a
 * call into libc on every hand-off. */
static inline void elem_copy(void *dst, const void *src, size_t n)
{
    switch (n) {
    case 0:                        /* elem may be NULL for 0-byte elements */
        return;
    case 4:
        memcpy(dst, src, 4);
        return;
    case 8:
        memcpy(dst, src, 8);
        return;
    case 16:
        memcpy(dst, src, 16);
        return;
    default:
        memcpy(dst, src, n);
    }
}

static inline unsigned char *slot(iop_chan_t *ch, size_t i)
{
    return ch->buf + i * ch->elem_size;
}

/* Sends without waiting if the channel allows: 1 with *res set (0, or -EPIPE when
 * closed), or 0 if the sender must wait. */
HOT int try_send(iop_chan_t *ch, const void *elem, int *res)
{
    if (ch->closed) {
        *res = -EPIPE;
        return 1;
    }
    iop__waiter_t *r = live_head(&ch->recvq);
    if (r) {                       /* a receiver waits: the ring is empty, hand over */
        iop__waitq_remove(r);
        elem_copy(r->data, elem, ch->elem_size);
        *res = 0;
        waiter_fire(r, 0);
        return 1;
    }
    if (ch->count < ch->cap) {
        size_t tail = ch->head + ch->count;
        if (tail >= ch->cap)
            tail -= ch->cap;
        elem_copy(slot(ch, tail), elem, ch->elem_size);
        ch->count++;
        *res = 0;
        return 1;
    }
    return 0;
}

/* Receives without waiting if the channel allows: 1 with *res set (0, or -EPIPE when
 * closed and drained), or 0 if the receiver must wait. */
HOT int try_recv(iop_chan_t *ch, void *elem, int *res)
{
    iop__waiter_t *s;
    if (ch->count) {
        size_t next = ch->head + 1 == ch->cap ? 0 : ch->head + 1;
        elem_copy(elem, slot(ch, ch->head), ch->elem_size);
        s = live_head(&ch->sendq);
        if (s) {                   /* it was full: the freed slot is the new tail */
            iop__waitq_remove(s);
            elem_copy(slot(ch, ch->head), s->data, ch->elem_size);
            ch->head = next;
            *res = 0;
            waiter_fire(s, 0);
            return 1;
        }
        ch->head = next;
        ch->count--;
        *res = 0;
        return 1;
    }
    s = live_head(&ch->sendq);
    if (s) {                       /* unbuffered: take it from the sender's frame */
        iop__waitq_remove(s);
        elem_copy(elem, s->data, ch->elem_size);
        *res = 0;
        waiter_fire(s, 0);
        return 1;
    }
    if (ch->closed) {
        *res = -EPIPE;
        return 1;
    }
    return 0;
}

static int send_ready(iop_chan_t *ch)
{
    return ch->closed || ch->count < ch->cap || live_head(&ch->recvq) != NULL;
}

static int recv_ready(iop_chan_t *ch)
{
    return ch->closed || ch->count || live_head(&ch->sendq) != NULL;
}

/* ---- channels ------------------------------------------------------------------------ */

int iop_chan_new(iop_chan_t **out, size_t elem_size, size_t cap)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    /* head + count must not overflow (0-byte elements allow a huge cap) */
    if (cap > SIZE_MAX / 2 || (elem_size && cap > (SIZE_MAX - sizeof(iop_chan_t)) / elem_size))
        return -EINVAL;
    iop_chan_t *ch = iop_malloc(sizeof *ch + cap * elem_size);
    if (!ch)
        return -ENOMEM;
    memset(ch, 0, sizeof *ch);
    ch->elem_size = elem_size;
    ch->cap = cap;
    *out = ch;
    return 0;
}

void iop_chan_free(iop_chan_t *ch)
{
    iop_free(ch);
}

int iop_chan_send(iop_chan_t *ch, const void *elem, uint64_t deadline)
{
    iop_coro_t *self = iop__current();
    int res;
    /* A cancelled coroutine gets -ECANCELED even where it would not wait, so that a
     * loop over a busy channel still unwinds. */
    if (self && self->cancelled)
        return -ECANCELED;
    if (try_send(ch, elem, &res))
        return res;
    if (!self)
        return iop__park(deadline);   /* -EPERM: the scheduler itself never waits */
    iop__waiter_t w = { .coro = self, .data = (void *)elem };
    return park_in(&ch->sendq, &w, self, deadline);
}

int iop_chan_recv(iop_chan_t *ch, void *elem, uint64_t deadline)
{
    iop_coro_t *self = iop__current();
    int res;
    if (self && self->cancelled)
        return -ECANCELED;
    if (try_recv(ch, elem, &res))
        return res;
    if (!self)
        return iop__park(deadline);
    iop__waiter_t w = { .coro = self, .data = elem };
    return park_in(&ch->recvq, &w, self, deadline);
}

/* Moves every waiter of from into the local queue to, so that waking them touches
 * the channel no more (a woken coroutine may free it). */
static void waitq_take_all(iop_waitq_t *from, iop_waitq_t *to)
{
    iop__waiter_t *w;
    while ((w = iop__waitq_pop(from)) != NULL)
        iop__waitq_push(to, w);
}

/* Closing twice is harmless. Buffered elements stay for the receivers to drain. */
void iop_chan_close(iop_chan_t *ch)
{
    if (ch->closed)
        return;
    ch->closed = 1;
    iop_waitq_t waiting = { NULL, NULL };
    waitq_take_all(&ch->sendq, &waiting);
    waitq_take_all(&ch->recvq, &waiting);   /* (they wait only on an empty ring) */
    iop__waiter_t *w;
    while ((w = live_head(&waiting)) != NULL) {
        iop__waitq_pop(&waiting);
        waiter_fire(w, -EPIPE);
    }
}

/* ---- select -------------------------------------------------------------------------- */

/* xorshift64, one state per thread, seeded on first use. Only fairness among ready
 * cases depends on it. */
static _Thread_local uint64_t select_rng;

static uint32_t rand_below(uint32_t k)
{
    uint64_t x = select_rng;
    if (!x) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        x = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15u ^ (uint64_t)(uintptr_t)&select_rng
            ^ (uint64_t)ts.tv_sec;
        if (!x)
            x = 0x2545F4914F6CDD1Du;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    select_rng = x;
    return (uint32_t)(x >> 32) % k;
}

static int case_ready(const iop_select_case_t *c)
{
    return c->send ? send_ready(c->ch) : recv_ready(c->ch);
}

static int case_try(iop_select_case_t *c)
{
    return c->send ? try_send(c->ch, c->elem, &c->res) : try_recv(c->ch, c->elem, &c->res);
}

/* A case with ch == NULL is never ready (a way to switch one off); with no case at
 * all, select only waits for its deadline or a cancel. At most IOP__SELECT_MAX
 * cases (-EINVAL beyond). */
int iop_select(iop_select_case_t *cases, int n, uint64_t deadline)
{
    if (n < 0 || n > IOP__SELECT_MAX || (n && !cases))
        return -EINVAL;
    iop_coro_t *self = iop__current();
    if (self && self->cancelled)
        return -ECANCELED;

    /* Reservoir sampling: the k-th ready case replaces the choice with probability
     * 1/k, which leaves each of the ready ones chosen with probability 1/ready. */
    int chosen = -1;
    uint32_t ready = 0;
    for (int i = 0; i < n; i++) {
        if (!cases[i].ch || !case_ready(&cases[i]))
            continue;
        ready++;
        if (ready == 1 || rand_below(ready) == 0)
            chosen = i;
    }
    if (chosen >= 0 && case_try(&cases[chosen]))
        return chosen;
    if (!self)
        return iop__park(deadline);

    iop__waiter_t w[n > 0 ? n : 1];
    select_group_t group = { w, n };
    self->waiter = NULL;
    for (int i = 0; i < n; i++) {
        w[i] = (iop__waiter_t){ .coro = self, .data = cases[i].elem, .group = &group, .index = i };
        if (!cases[i].ch)
            continue;
        iop__waitq_push(cases[i].send ? &cases[i].ch->sendq : &cases[i].ch->recvq, &w[i]);
        if (!self->waiter)
            self->waiter = &w[i];  /* the one iop__park drops on timeout or cancel */
    }
    int r = iop__park(deadline);
    for (int i = 0; i < n; i++)   /* the rest after a timeout or cancel */
        iop__waitq_remove(&w[i]);
    self->waiter = NULL;
    if (r < 0)
        return r;
    cases[r].res = w[r].res;
    return r;
}
