/* Internal: what the coroutine files share. ctx.h (context switch) and stack.h
 * (stacks) are the machine layer; the scheduler (sched.c) owns coroutine records,
 * the ready queue, parking and waking; coro_io.c, nursery.c, chan.c and sync.c are
 * built on iop__park / iop__wake and the wait queues below. */
#ifndef IOP_CORO_INTERNAL_H
#define IOP_CORO_INTERNAL_H

#include "ioplex.h"
#include "ioplex/coro.h"
#include "ctx.h"
#include "stack.h"

#define IOP__CORO_NAME_MAX 32
#define IOP__DEADLINE_DEPTH 16

enum iop__coro_state {
    IOP__CS_NEW = 0,      /* created, never run */
    IOP__CS_READY,        /* in the ready queue */
    IOP__CS_RUNNING,
    IOP__CS_PARKED,       /* blocked in iop__park: an op, a wait queue or a timer */
    IOP__CS_SWITCHED,     /* suspended in iop_switch (greenlet style) */
    IOP__CS_DONE
};

typedef struct iop__sched iop__sched_t;
typedef struct iop__waiter iop__waiter_t;

struct iop_coro {
    iop__ctx_t ctx;
    iop__stack_t stack;
    iop__sched_t *sched;
    iop_coro_fn fn;
    void *arg;
    void *result;
    iop_coro_t *parent;            /* greenlet style: where control goes at the end */
    uint32_t greenlet_kids;        /* coroutines whose parent this is */
    iop_coro_t *next_ready;
    iop_coro_t *all_prev, *all_next;   /* every live coroutine of the scheduler (gdb) */
    iop_coro_t *joiner;            /* parked in iop_join on us */
    iop_nursery_t *nursery;
    iop_coro_t *sib_prev, *sib_next;   /* nursery children */
    void *switch_value;            /* value handed over by iop_switch */
    int wake_res;                  /* what iop__park returns */
    iop_op_t *wait_op;             /* parked on this op: cancel cancels it */
    iop__waiter_t *waiter;         /* parked in a wait queue: cancel removes it */
    uint64_t deadlines[IOP__DEADLINE_DEPTH];
    uint32_t ndeadlines;
    uint8_t state;                 /* enum iop__coro_state */
    uint8_t cancelled;
    uint8_t detached;              /* freed when it ends (iop_go without out) */
    uint8_t greenlet;              /* made by iop_coro_create */
    char name[IOP__CORO_NAME_MAX];
};

/* One coroutine waiting in one wait queue, in the waiting coroutine's stack frame.
 * select puts one per case in several queues, all with the same group. */
struct iop__waiter {
    iop__waiter_t *next, *prev;
    iop_waitq_t *q;                /* NULL once removed */
    iop_coro_t *coro;
    void *data;                    /* e.g. the element to send or the place to receive */
    void *group;                   /* select: shared state of the cases, else NULL */
    int index;                     /* select: the case */
    int res;
};

/* The running coroutine, NULL in the scheduler / main context. */
iop_coro_t *iop__current(void);

/* Parks the running coroutine until iop__wake, the deadline (iop__deadline(deadline)
 * is applied here: -ETIMEDOUT) or a cancel (-ECANCELED; immediately if already
 * cancelled). A waiter in a queue is removed from it on timeout or cancel. -EPERM
 * outside a coroutine. Returns the res of the wake. */
int iop__park(uint64_t deadline);

/* Parks ignoring cancel and deadlines until an iop__wake (a cancel also wakes it,
 * with -ECANCELED: the caller checks what it waits for and parks again). For
 * waits that must end, such as a backend letting go of a record. */
int iop__park_shielded(void);

/* Makes parked c runnable; its iop__park returns res. Callable from op callbacks
 * (resumes c right away) and from coroutines (c runs at the next turn). */
void iop__wake(iop_coro_t *c, int res);

/* iop__wake that never switches: c runs at the scheduler's next turn. */
void iop__wake_later(iop_coro_t *c, int res);

/* Wakes the coroutine a record keeps in *waiter (parked on it), if any, and clears
 * it first: a callback calls it last, since the woken coroutine may free the record. */
static inline void iop__wake_waiter(iop_coro_t **waiter)
{
    iop_coro_t *w = *waiter;
    if (w) {
        *waiter = NULL;
        iop__wake(w, 0);
    }
}

/* The pause of a loop that retries after a failure (an accept out of fds): sleeps
 * ns (its timer in the coroutine's own heap slot), or only yields should even that
 * find no room, so that the loop neither ends over it nor spins without letting
 * the others run. 0, or -ECANCELED / -ETIMEDOUT once the caller should end. */
int iop__pause(uint64_t ns);

/* The earlier of deadline and the current coroutine's scopes; 0 = none. */
uint64_t iop__deadline(uint64_t deadline);

/* FIFO wait queues. */
void iop__waitq_push(iop_waitq_t *q, iop__waiter_t *w);
iop__waiter_t *iop__waitq_pop(iop_waitq_t *q);     /* NULL if empty */
void iop__waitq_remove(iop__waiter_t *w);           /* no-op once removed */
static inline int iop__waitq_empty(const iop_waitq_t *q) { return q->head == NULL; }

#endif
