/* Internal to the scheduler's own files (sched.c, coro_io.c, nursery.c): what they
 * share beyond coro_internal.h. Channels and sync do not need it. */
#ifndef IOP_CORO_SCHED_PRIVATE_H
#define IOP_CORO_SCHED_PRIVATE_H

#include "clock_internal.h"
#include "coro_internal.h"
#include "error_internal.h"

/* A coroutine parked on a proactor op, in its own stack frame (coro_io.c). The
 * coroutine resumes only when every callback that points into the frame has run:
 * the op's, and the cancel op's once iop_cancel sent one. */
typedef struct iop__io_wait {
    iop_op_t op;                   /* first: c->wait_op points here */
    iop_op_t cancel;               /* sent by iop_cancel */
    iop_coro_t *coro;
    int res;                       /* the op's result */
    uint8_t pending;               /* callbacks still to run */
    uint8_t cancel_sent;
    uint8_t shielded;              /* close: runs to the end even when cancelled */
    uint8_t retry_armed;           /* the cancel was refused: retry is due to send it */
    iop_timer_t retry;             /* set up only then */
} iop__io_wait_t;

/* The running coroutine, for a blocking call named what: NULL with *err = -EPERM
 * (outside a coroutine, with a message) or -ECANCELED (it has been cancelled). */
iop_coro_t *iop__io_begin(const char *what, int *err);

/* Sends cancel (a record in the caller's frame) for target, its callback cb(data).
 * 1 = sent; 0 = the backend could not take it now (a full queue): retry (not
 * armed) then calls due after a moment, whose callback wakes the caller to try
 * again rather than wait for target to end by itself. retry takes the timer slot
 * owner (the coroutine parked on target) keeps for it, so arming it needs no
 * memory; owner stops retry before its next retry. */
int iop__cancel_or_retry(iop_loop_t *loop, iop_coro_t *owner, iop_op_t *cancel, iop_op_t *target,
                         iop_op_cb cb, void *data, iop_timer_t *retry, void (*due)(iop_timer_t *t));

/* A one-shot timer of owner's (parked in one call at a time) in the timer-heap slot
 * it keeps from creation to end: needs no memory, so a deadline or a cancel retry
 * is never lost to a heap that cannot grow. 0 or -errno; at most one such timer of
 * owner's may be armed at a time (a second takes an ordinary slot, and may fail). */
int iop__coro_timer_start(iop_loop_t *loop, iop_coro_t *owner, iop_timer_t *t, uint64_t after_ns,
                          void (*cb)(iop_timer_t *t));

/* iop_cancel of a coroutine parked on an op: cancels the op in the backend. */
void iop__io_cancel(iop_coro_t *c);

/* A nursery child has ended (called on its stack, before it switches away). */
void iop__nursery_child_done(iop_coro_t *c);

/* From outside any coroutine: runs the loop one iteration at a time until done(arg)
 * or the deadline (0 = none). 0; -ETIMEDOUT; -EDEADLK when the loop has nothing
 * left that could make done(arg) true; -EBUSY from inside a loop callback. */
int iop__run_until(iop_loop_t *loop, int (*done)(void *arg), void *arg, uint64_t deadline);

/* Spawns a runnable coroutine (iop_go without the public checks on out). */
int iop__spawn(iop_loop_t *loop, iop_coro_fn fn, void *arg, const iop_coro_opts_t *opts,
               int detached, iop_coro_t **out);

#endif
