/* Internal: the loop record and the calls the core's files share. */
#ifndef IOP_LOOP_INTERNAL_H
#define IOP_LOOP_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>
#include <unistd.h>
#include "ioplex.h"
#include "clock_internal.h"
#include "error_internal.h"
#include "fdtable.h"
#include "loader.h"
#include "timer_heap.h"

#define IOP__MAX_EVENTS 256

/* iop_op_t.state */
#define IOP__OP_IDLE     0x00
#define IOP__OP_INFLIGHT 0x5a   /* matches iop_op_in_flight() in op.h */

/* iop_op_t.flags */
#define IOP__OPF_QUEUED    0x01u  /* waiting in an fd queue */
#define IOP__OPF_DONE      0x02u  /* finished; callback waits in the done queue */
#define IOP__OPF_CONNECTING 0x04u /* connect returned EINPROGRESS */
#define IOP__OPF_BACKEND   0x08u  /* owned by a completion backend */
#define IOP__OPF_REARM     0x10u  /* multishot the backend does not run natively */
#define IOP__OPF_IN_MORE   0x20u  /* running a callback with IOP_CF_MORE */
#define IOP__OPF_STOP      0x40u  /* cancelled or forgotten during that callback */
#define IOP__OPF_CORE_BUF  0x80u  /* recv_buf on a completion backend, buffer lent by the core */
#define IOP__OPF_TIMED_OUT 0x100u /* its deadline passed: the core cancelled it (op.c) */
#define IOP__OPF_CANCELING 0x200u /* a cancel through the backend is under way */
/* A multishot op keeps its fd's generation (iop__fd_t.gen) from its start in the top
 * bits: a series whose fd was forgotten since never starts again on the number,
 * which may name another file by then. */
#define IOP__OPF_GEN_SHIFT 16
#define IOP__OPF_GEN_MASK  0xffff0000u

/* Cancel records for the deadlines the core keeps for a completion backend: this
 * many may be in flight at once, the rest wait a moment (op.c). */
#define IOP__DL_CANCELS 16

/* A pool buffer waiting in a receive stream's queue: the next one (bid + 1, 0 =
 * last) and the bytes it holds. */
typedef struct iop__pool_link {
    uint32_t next, len;
} iop__pool_link_t;

/* iop_timer_t.flags */
#define IOP__TF_INTERNAL 0x1u     /* an op's timer: not counted as a user handle */

/* iop_watch_t.active */
#define IOP__W_ACTIVE   0x1u
#define IOP__W_INTERNAL 0x2u
#define IOP__W_FORGET_CB 0x4u   /* forgetting the fd runs the callback, inactive (iop_wait_fd) */

struct iop_loop {
    const iop_backend_desc_t *be;
    void *be_state;
    uint32_t caps;                 /* this instance's: the descriptor's, maybe fewer */
    iop_backend_host_t host;
    iop__module_t mod;

    uint64_t now;
    uint64_t timer_seq;
    iop__heap_t timers;
    iop__fdtable_t fds;

    int32_t *changes;              /* fds whose interest may differ from reg */
    uint32_t nchanges, changes_cap;

    iop_op_t *done_head, *done_tail;  /* finished ops whose callbacks are due */
    iop_op_t *more_op;             /* in a callback with IOP_CF_MORE */
    uint64_t active;               /* ops in flight + user watches + user timers */

    int wake_fd;                   /* eventfd */
    iop_watch_t wake_watch;
    _Atomic(iop_post_t *) posts;
    atomic_int wake_pending;
    atomic_int callers;            /* other threads inside post / wake / stop */
    atomic_int stop;
    atomic_uintptr_t runner;       /* the thread inside iop_loop_run (iop__thread_id), 0 = none */
    pid_t pid;                     /* creator: a forked child must make its own */
    unsigned fork_gen;             /* loop.c's fork count when created */
    uint32_t busy_poll_us;
    int register_busy;             /* IOP_LOOP_REGISTER_BUSY_FDS and the backend can */

    /* receive pool (recv_buf): base, count x size; free stack when the core serves it */
    unsigned char *pool;
    uint32_t pool_count, pool_size, pool_nfree;
    uint32_t *pool_free;
    uint8_t *pool_out;             /* per buffer: lent out, not given back yet */
    iop__pool_link_t *pool_link;   /* per buffer: a receive stream's queue (coro/recv_stream.c) */
    int pool_native;               /* the backend lends the buffers */

    /* registered buffers (iop_buf_register): the caller's set, checked on submit */
    struct iovec *fixed;
    uint32_t nfixed;
    int fixed_native;              /* the backend has them registered */

    void *sched;                   /* the coroutine scheduler (coro/sched.c), made on first use */

    struct iop__cancel_rec {           /* op.c: deadlines of backend ops, paused receive streams */
        iop_op_t op;
        iop_op_cb cb;                  /* the detached cancel's caller's */
    } dl_cancel[IOP__DL_CANCELS];
    iop_op_t *dl_free;

    iop_loop_stats_t stats;
    iop_event_t events[IOP__MAX_EVENTS];
    int disp_next, disp_n;         /* dispatch: the events not handled yet */
    char report[1024];
};

/* loop.c */
int iop__mark_change(iop_loop_t *loop, int fd);
int iop__fd_reserve(iop_loop_t *loop, int fd);   /* table + change list room */

/* op_emulate.c: proactor ops over readiness */
int iop__emu_submit(iop_loop_t *loop, iop_op_t *op);
void iop__emu_ready(iop_loop_t *loop, int fd, unsigned revents);
void iop__emu_unqueue(iop_loop_t *loop, iop_op_t *op);
void iop__fd_fail_ops(iop_loop_t *loop, int fd, int err);
void iop__emu_unwatchable(iop_loop_t *loop, int fd); /* never pollable: ops tried at once */
void iop__complete(iop_loop_t *loop, iop_op_t *op, int res);
void iop__defer(iop_loop_t *loop, iop_op_t *op, int res);
void iop__run_done(iop_loop_t *loop);

/* coro/sched.c: frees the scheduler and every coroutine record and stack */
void iop__sched_destroy(iop_loop_t *loop);

/* op.c */
void iop__fd_forget_core(iop_loop_t *loop, int fd);
/* In a process forked from the one that created loop (inline on every submit: one
 * load, and getpid only after a fork happened); the error every call that would
 * touch the backend returns there. */
extern atomic_uint iop__fork_gen;   /* bumped in each forked child (loop.c) */
static inline int iop__forked(const iop_loop_t *loop)
{
    return loop->fork_gen != atomic_load_explicit(&iop__fork_gen, memory_order_relaxed) && loop->pid != getpid();
}
int iop__fail_forked(const iop_loop_t *loop, const char *what);
/* This thread, as a number no other live thread shares; never 0. */
uintptr_t iop__thread_id(void);
static inline int iop__loop_running(const iop_loop_t *loop)
{
    return atomic_load_explicit(&loop->runner, memory_order_acquire) != 0;
}
void iop__deliver(iop_loop_t *loop, iop_op_t *op, int res, unsigned evflags);
int iop__pool_take(iop_loop_t *loop, uint32_t *bid);
/* Cancels target with one of the loop's own cancel records (nobody waits for it in
 * a frame of theirs); cb runs when the cancel is done, the record already back.
 * 0, or -EBUSY when every record is in flight, or the submit's error. */
int iop__cancel_detached(iop_loop_t *loop, iop_op_t *target, iop_op_cb cb, void *data);

/* watch.c */
int iop__watch_start(iop_loop_t *loop, iop_watch_t *w, int fd, unsigned events,
                     iop_watch_cb cb, unsigned internal);

/* timer: start an internal timer without counting it as a user handle */
int iop__timer_arm(iop_loop_t *loop, iop_timer_t *t, uint64_t when, iop_timer_cb cb);
/* A timer slot kept free for the caller until it gives it back (0 or -ENOMEM): a
 * one-shot timer started in it (iop_timer_start otherwise) needs no memory then,
 * and the slot is the caller's again once that timer has fired or stopped. */
int iop__timer_reserve(iop_loop_t *loop);
void iop__timer_unreserve(iop_loop_t *loop);
int iop__timer_start_spare(iop_loop_t *loop, iop_timer_t *t, uint64_t after_ns, iop_timer_cb cb);

static inline unsigned iop__fd_want(const iop__fd_t *e, uint32_t caps)
{
    unsigned want = 0;
    if (e->rd_head || (e->watch && (e->watch->events & IOP_READ)))
        want |= IOP_READ;
    if (e->wr_head || (e->watch && (e->watch->events & IOP_WRITE)))
        want |= IOP_WRITE;
    /* Only an accept waits: a listener that other processes' loops may wait on
     * too (shared across workers); one wake-up per connection is enough. */
    if (want == IOP_READ && !e->watch && e->rd_head->kind == IOP_OP_ACCEPT &&
        (caps & IOP_CAP_EXCLUSIVE_WAKE))
        want |= IOP_WATCH_EXCLUSIVE;
    return want;
}

#endif
