/* Mutex, condition, semaphore and wait group for coroutines of one loop.
 *
 * Every release hands what it releases straight to the first waiter (FIFO, no
 * barging): unlock makes the next waiter the owner before it even runs, a semaphore
 * release gives its unit to the first waiter instead of counting it. A condition
 * signal moves its waiter to the mutex's queue instead of waking it (it would only
 * wait for the mutex again), so a woken cond_wait already owns the mutex.
 *
 * Blocking calls return -EPERM outside a coroutine (through iop__park), and
 * -ECANCELED in a cancelled coroutine even where they would not wait, so that loops
 * unwind. Nothing here allocates. */
#include <errno.h>
#include "coro_internal.h"

/* A waiter whose coroutine is no longer parked was woken by its deadline or a cancel
 * and has not run yet to take itself out: skip it. */
static iop__waiter_t *live_pop(iop_waitq_t *q)
{
    iop__waiter_t *w;
    while ((w = iop__waitq_pop(q)) != NULL && w->coro->state != IOP__CS_PARKED)
        ;
    return w;
}

/* Parks self in q until a release hands it what it waits for (iop__park returns 0),
 * its deadline passes or it is cancelled. */
static int wait_in(iop_waitq_t *q, iop_coro_t *self, void *data, uint64_t deadline)
{
    iop__waiter_t w = { .coro = self, .data = data };
    iop__waitq_push(q, &w);
    self->waiter = &w;
    int r = iop__park(deadline);
    iop__waitq_remove(&w);         /* after a timeout or cancel; a no-op once popped */
    self->waiter = NULL;
    return r;
}

/* Moves every live waiter of from into the local queue to, so that waking them
 * cannot loop forever on coroutines that wait again at once (a wake from a callback
 * runs the coroutine right away). */
static void take_all(iop_waitq_t *from, iop_waitq_t *to)
{
    iop__waiter_t *w;
    while ((w = live_pop(from)) != NULL)
        iop__waitq_push(to, w);
}

/* ---- mutex ----------------------------------------------------------------------------- */

void iop_mutex_init(iop_mutex_t *m)
{
    m->owner = NULL;
    m->q.head = m->q.tail = NULL;
}

/* The owner is a coroutine, so locking outside any is -EPERM. */
int iop_mutex_lock(iop_mutex_t *m, uint64_t deadline)
{
    iop_coro_t *self = iop__current();
    if (!self)
        return iop__park(deadline);
    if (self->cancelled)
        return -ECANCELED;
    if (!m->owner) {
        m->owner = self;
        return 0;
    }
    if (m->owner == self)
        return -EDEADLK;
    return wait_in(&m->q, self, NULL, deadline);   /* 0: unlock made us the owner */
}

int iop_mutex_trylock(iop_mutex_t *m)
{
    iop_coro_t *self = iop__current();
    if (!self)
        return -EPERM;
    if (m->owner)
        return -EBUSY;
    m->owner = self;
    return 0;
}

/* Gives m to its first waiter, or leaves it free. */
static void mutex_hand_over(iop_mutex_t *m)
{
    iop__waiter_t *w = live_pop(&m->q);
    if (!w) {
        m->owner = NULL;
        return;
    }
    m->owner = w->coro;
    iop__wake(w->coro, 0);
}

int iop_mutex_unlock(iop_mutex_t *m)
{
    iop_coro_t *self = iop__current();
    if (!self || m->owner != self)
        return -EPERM;
    mutex_hand_over(m);
    return 0;
}

/* Takes m back for a cond_wait that ended by deadline or cancel: it must return
 * holding m whatever happens, but iop__park stops at once for a cancelled coroutine
 * or a passed scope deadline, so both are masked while waiting here and restored
 * after (a cancel that arrives meanwhile is kept for the next call). */
static void mutex_lock_masked(iop_mutex_t *m, iop_coro_t *self)
{
    uint8_t cancelled = self->cancelled;
    uint32_t ndeadlines = self->ndeadlines;
    while (m->owner != self) {
        if (!m->owner) {
            m->owner = self;
            break;
        }
        self->cancelled = 0;
        self->ndeadlines = 0;
        wait_in(&m->q, self, NULL, 0);   /* 0: handed over; -ECANCELED: try again */
        cancelled |= self->cancelled;
    }
    self->cancelled = cancelled;
    self->ndeadlines = ndeadlines;
}

/* ---- condition --------------------------------------------------------------------------- */

void iop_cond_init(iop_cond_t *c)
{
    c->q.head = c->q.tail = NULL;
}

/* A signalled waiter gets the mutex if it is free, else waits in its queue, still
 * parked: the unlock that hands it over wakes it as the owner. w->res marks it
 * signalled: the signal is its own from here on. */
static void cond_wake(iop__waiter_t *w)
{
    iop_mutex_t *m = w->data;
    w->res = 1;
    if (m->owner) {
        iop__waitq_push(&m->q, w);
        return;
    }
    m->owner = w->coro;
    iop__wake(w->coro, 0);
}

int iop_cond_wait(iop_cond_t *c, iop_mutex_t *m, uint64_t deadline)
{
    iop_coro_t *self = iop__current();
    if (!self)
        return iop__park(deadline);
    if (m->owner != self)
        return -EPERM;
    if (self->cancelled)
        return -ECANCELED;        /* still holding m, as after any return */
    iop__waiter_t w = { .coro = self, .data = m };
    iop__waitq_push(&c->q, &w);
    self->waiter = &w;             /* in c's queue, later perhaps in m's */
    mutex_hand_over(m);
    int r = iop__park(deadline);
    iop__waitq_remove(&w);
    self->waiter = NULL;
    if (r == 0 && m->owner == self)
        return 0;
    mutex_lock_masked(m, self);   /* a deadline or cancel: the error after relocking */
    /* ... unless it came after the signal, while waiting for m: failing then would
     * lose the signal (no other waiter got it). A cancel stays pending for the next
     * blocking call. */
    if (w.res == 1)
        return 0;
    return r ? r : -ECANCELED;
}

void iop_cond_signal(iop_cond_t *c)
{
    iop__waiter_t *w = live_pop(&c->q);
    if (w)
        cond_wake(w);
}

void iop_cond_broadcast(iop_cond_t *c)
{
    iop_waitq_t waiting = { NULL, NULL };
    take_all(&c->q, &waiting);
    iop__waiter_t *w;
    while ((w = live_pop(&waiting)) != NULL)
        cond_wake(w);
}

/* ---- semaphore ---------------------------------------------------------------------------- */

/* A negative count is a debt: that many releases before the first acquire succeeds. */
void iop_sem_init(iop_sem_t *s, int64_t count)
{
    s->count = count;
    s->q.head = s->q.tail = NULL;
}

int iop_sem_acquire(iop_sem_t *s, uint64_t deadline)
{
    iop_coro_t *self = iop__current();
    if (self && self->cancelled)
        return -ECANCELED;
    if (s->count > 0) {           /* then no one waits: release hands units over */
        s->count--;
        return 0;
    }
    if (!self)
        return iop__park(deadline);
    return wait_in(&s->q, self, NULL, deadline);   /* 0: a release gave us its unit */
}

void iop_sem_release(iop_sem_t *s)
{
    if (s->count >= 0) {
        iop__waiter_t *w = live_pop(&s->q);
        if (w) {
            iop__wake(w->coro, 0);
            return;
        }
    }
    if (s->count < INT64_MAX)
        s->count++;                /* saturates: a count that high is a caller bug anyway */
}

/* ---- wait group ----------------------------------------------------------------------------- */

void iop_wg_init(iop_wg_t *wg)
{
    wg->count = 0;
    wg->q.head = wg->q.tail = NULL;
}

/* A count below zero (more done than added) is a caller bug: it is clamped to 0,
 * which wakes the waiters as reaching 0 would, and is otherwise ignored; the void
 * API leaves no way to report it. */
void iop_wg_add(iop_wg_t *wg, int64_t n)
{
    wg->count += n;
    if (wg->count > 0)
        return;
    wg->count = 0;
    iop_waitq_t waiting = { NULL, NULL };
    take_all(&wg->q, &waiting);
    iop__waiter_t *w;
    while ((w = live_pop(&waiting)) != NULL)
        iop__wake(w->coro, 0);
}

void iop_wg_done(iop_wg_t *wg)
{
    iop_wg_add(wg, -1);
}

/* Returns at once when the count is 0. */
int iop_wg_wait(iop_wg_t *wg, uint64_t deadline)
{
    iop_coro_t *self = iop__current();
    if (self && self->cancelled)
        return -ECANCELED;
    if (wg->count == 0)
        return 0;
    if (!self)
        return iop__park(deadline);
    return wait_in(&wg->q, self, NULL, deadline);
}
