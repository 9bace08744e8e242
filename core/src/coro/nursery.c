/* Nurseries: structured concurrency. Children are detached coroutines linked
 * through sib_prev / sib_next; each unlinks itself when it ends and wakes the
 * closer once the last one is gone. Closing waits until the deadline, then cancels
 * the children left and waits for them without any deadline: no child outlives
 * iop_nursery_close. */
#include <errno.h>
#include <string.h>
#include "sched_private.h"

void iop_nursery_init(iop_nursery_t *n, iop_loop_t *loop)
{
    memset(n, 0, sizeof *n);
    n->loop = loop;
}

int iop_nursery_go(iop_nursery_t *n, iop_coro_fn fn, void *arg, const iop_coro_opts_t *opts)
{
    if (!n)
        return iop__fail(-EINVAL, "iop_nursery_go: NULL nursery");
    iop_coro_t *c;
    int r = iop__spawn(n->loop, fn, arg, opts, 1, &c);
    if (r < 0)
        return r;
    c->nursery = n;                /* it only runs from the next turn: no race */
    c->sib_prev = NULL;
    c->sib_next = n->children;
    if (n->children)
        n->children->sib_prev = c;
    n->children = c;
    n->nchildren++;
    return 0;
}

void iop__nursery_child_done(iop_coro_t *c)
{
    iop_nursery_t *n = c->nursery;
    if (c->sib_prev)
        c->sib_prev->sib_next = c->sib_next;
    else
        n->children = c->sib_next;
    if (c->sib_next)
        c->sib_next->sib_prev = c->sib_prev;
    c->sib_prev = c->sib_next = NULL;
    c->nursery = NULL;
    if (--n->nchildren == 0 && n->waiter)
        iop__wake(n->waiter, 0);
}

/* Cancels every child not cancelled yet. A child resumed by its cancel (from main)
 * may end and unlink itself, but it cannot end any other child: those only run
 * from the loop or the ready queue, so the next pointer taken first stays valid. */
static void cancel_children(iop_nursery_t *n)
{
    for (iop_coro_t *c = n->children, *next; c; c = next) {
        next = c->sib_next;
        if (!c->cancelled)
            iop_cancel(c);
    }
}

static int nursery_empty(void *arg) { return ((iop_nursery_t *)arg)->nchildren == 0; }

/* A coroutine closer parks until the last child wakes it. */
static int wait_children(iop_nursery_t *n, iop_coro_t *self, uint64_t deadline)
{
    int r = 0;
    while (n->nchildren && r == 0) {
        n->waiter = self;
        r = iop__park(deadline);
        n->waiter = NULL;
    }
    return r;
}

static int close_from_coro(iop_nursery_t *n, iop_coro_t *self, uint64_t deadline)
{
    int r = wait_children(n, self, deadline);
    if (!n->nchildren)
        return 0;
    int res = r == -ECANCELED ? -ECANCELED : -ETIMEDOUT;
    /* Until the last child has gone, neither a cancel of ours nor a scope deadline
     * may stop the wait: mask both, then restore them. */
    uint8_t cancelled = self->cancelled;
    uint32_t ndeadlines = self->ndeadlines;
    while (n->nchildren) {
        cancel_children(n);        /* again each round: children may spawn children */
        self->cancelled = 0;
        self->ndeadlines = 0;
        wait_children(n, self, 0);
        cancelled |= self->cancelled;
    }
    self->cancelled = cancelled;
    self->ndeadlines = ndeadlines;
    return res;
}

/* From outside any coroutine: the same, running the loop. */
static int close_from_main(iop_nursery_t *n, uint64_t deadline)
{
    int r = iop__run_until(n->loop, nursery_empty, n, iop__deadline(deadline));
    if (!n->nchildren)
        return 0;
    if (r != -ETIMEDOUT && r != -EDEADLK)
        return r;                  /* -EBUSY inside a callback, a loop failure */
    /* Late, or waiting for something nothing pending can bring: cancel them. */
    int res = r;
    while (n->nchildren) {
        cancel_children(n);
        r = iop__run_until(n->loop, nursery_empty, n, 0);
        if (r < 0 && n->nchildren)
            return r;              /* a child that ignores its cancel and waits on nothing */
    }
    return res;
}

int iop_nursery_close(iop_nursery_t *n, uint64_t deadline)
{
    if (!n)
        return iop__fail(-EINVAL, "iop_nursery_close: NULL nursery");
    if (!n->nchildren)
        return 0;
    iop_coro_t *self = iop__current();
    return self ? close_from_coro(n, self, deadline) : close_from_main(n, deadline);
}
