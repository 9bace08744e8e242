/* Op life cycle shared by every backend: submit checks, completion, the done queue
 * (callbacks of ops that finished without waiting), timeouts and cancellation. */
#include <errno.h>
#include <stddef.h>
#include <sys/stat.h>
#include <unistd.h>
#include "loop_internal.h"

static const char *const kind_names[IOP_OP_KIND_COUNT] = {
    "nop", "accept", "connect", "recv", "send", "read", "write",
    "recvmsg", "sendmsg", "close", "timeout", "cancel", "recv_buf",
};

const char *iop_op_kind_name(int kind)
{
    return kind >= 0 && kind < IOP_OP_KIND_COUNT ? kind_names[kind] : "?";
}

static inline iop_op_t *op_of_timer(iop_timer_t *t)
{
    return (iop_op_t *)((char *)t - offsetof(iop_op_t, timer));
}

/* The op's last callback. cflags is left as the caller of this set it. */
void iop__complete(iop_loop_t *loop, iop_op_t *op, int res)
{
    if (op->timer.heap_idx)
        iop__heap_remove(&loop->timers, &op->timer);
    op->state = IOP__OP_IDLE;
    op->flags = 0;
    op->res = res;
    loop->active--;
    loop->stats.ops_completed++;
    op->cb(op, res);   /* may resubmit or free op: touch nothing after */
}

void iop__defer(iop_loop_t *loop, iop_op_t *op, int res)
{
    if (op->timer.heap_idx)
        iop__heap_remove(&loop->timers, &op->timer);
    op->res = res;
    op->flags = IOP__OPF_DONE | (op->flags & IOP__OPF_GEN_MASK);
    op->next = NULL;
    if (loop->done_tail)
        loop->done_tail->next = op;
    else
        loop->done_head = op;
    loop->done_tail = op;
}

/* Runs the callbacks queued before this call; ones queued by those callbacks wait
 * for the next iteration, so a connection that always has data cannot starve the
 * others. */
void iop__run_done(iop_loop_t *loop)
{
    iop_op_t *op = loop->done_head;
    loop->done_head = loop->done_tail = NULL;
    while (op) {
        iop_op_t *next = op->next;
        op->flags &= ~IOP__OPF_DONE;
        iop__deliver(loop, op, op->res, 0);
        op = next;
    }
}

/* ---- results: single, multishot, zero-copy ---------------------------------- */

/* Does a multishot op keep going after this result? */
static int multishot_goes_on(const iop_op_t *op, int res)
{
    return op->kind == IOP_OP_ACCEPT ? res >= 0 : res > 0;
}

/* ---- deadlines of backend ops ------------------------------------------------
 * Unless the backend keeps IOP_CAP_KERNEL_DEADLINES, the core enforces a backend
 * op's deadline with a loop timer that, when it fires, cancels the op through the
 * backend; the -ECANCELED that follows becomes -ETIMEDOUT, and a result that beats
 * the cancel is delivered as it is. Deadlines rarely fire, and a heap entry costs
 * far less than a kernel timer per op (an io_uring linked timeout is a second SQE,
 * a second CQE and an hrtimer armed and cancelled). */
#define DL_RETRY_NS 100000u   /* every cancel record busy: try again this much later */

static void detached_done(iop_op_t *op, int res)
{
    iop_loop_t *loop = op->loop;
    iop_op_cb cb = ((struct iop__cancel_rec *)(void *)op)->cb;   /* op is the record's first member */
    op->next = loop->dl_free;
    loop->dl_free = op;            /* free before cb, which may want one */
    if (cb)
        cb(op, res);               /* op->data is still the caller's */
}

int iop__cancel_detached(iop_loop_t *loop, iop_op_t *target, iop_op_cb cb, void *data)
{
    iop_op_t *op = loop->dl_free;
    if (!op)
        return -EBUSY;
    loop->dl_free = op->next;
    iop_prep_cancel(op, target, detached_done, data);
    ((struct iop__cancel_rec *)(void *)op)->cb = cb;
    int r = iop_submit(loop, op);
    if (r < 0) {
        op->next = loop->dl_free;
        loop->dl_free = op;
    }
    return r;
}

static void dl_fired(iop_timer_t *t)
{
    iop_op_t *op = op_of_timer(t);
    iop_loop_t *loop = t->loop;
    op->flags |= IOP__OPF_TIMED_OUT;
    /* The result, 0 or -EALREADY / -ENOENT (the op finished first), changes nothing. */
    if (iop__cancel_detached(loop, op, NULL, NULL) == 0)
        return;
    iop__timer_arm(loop, &op->timer, loop->now + DL_RETRY_NS, dl_fired);   /* a slot was just freed */
}

static int is_stream_io(iop_op_kind_t kind)
{
    return kind == IOP_OP_RECV || kind == IOP_OP_SEND || kind == IOP_OP_RECV_BUF ||
           kind == IOP_OP_RECVMSG || kind == IOP_OP_SENDMSG;
}

/* Whether fd is a socket, from one fstat per fd the loop knows (the entry is reset
 * when the loop forgets the fd). */
static int fd_is_socket(iop_loop_t *loop, iop__fd_t *e, int fd)
{
    if (!(e->flags & IOP__FD_SOCK_KNOWN)) {
        struct stat st;
        loop->stats.syscalls++;
        if (fstat(fd, &st) < 0)
            return 0;              /* the write itself reports the error */
        if (S_ISSOCK(st.st_mode))
            e->flags |= IOP__FD_SOCKET;
        e->flags |= IOP__FD_SOCK_KNOWN;
    }
    return (e->flags & IOP__FD_SOCKET) != 0;
}

static int start(iop_loop_t *loop, iop_op_t *op)
{
    /* A deadline already passed fails the op before any try, on every backend and
     * in kernel-deadline mode too (a readiness backend would otherwise return data
     * that is there, and a multishot op with data always waiting ran forever). */
    if (op->deadline && op->deadline <= loop->now && op->kind != IOP_OP_CLOSE && op->kind != IOP_OP_CANCEL) {
        iop__defer(loop, op, -ETIMEDOUT);
        return 0;
    }
    if (op->opts & IOP_OPT_MULTISHOT) {
        int r = iop__fd_reserve(loop, op->fd);
        if (r < 0)
            return r;
        op->flags = (op->flags & ~IOP__OPF_GEN_MASK) | (uint32_t)loop->fds.v[op->fd].gen << IOP__OPF_GEN_SHIFT;
    }
    if (!loop->be->submit)
        return iop__emu_submit(loop, op);
    /* The backend keeps per-fd state (the order of ops in each direction, a fixed
     * slot) in the core's table: make sure fd has an entry. */
    if (op->kind != IOP_OP_CANCEL) {
        int r = iop__fd_reserve(loop, op->fd);
        if (r < 0)
            return r;
        iop__fd_t *e = &loop->fds.v[op->fd];
        /* The last recv drained the socket: this one would most likely find it
         * empty too, so skip that first try (what the emulation does for readiness
         * backends, see iop__emu_submit). */
        if (op->kind == IOP_OP_RECV && (e->flags & IOP__FD_RD_EMPTY))
            op->opts |= IOP_OPT_POLL_FIRST;
        if (op->kind == IOP_OP_WRITE) {
            op->opts &= (uint8_t)~IOP_OPT_SOCKET;
            if (op->u.rw.offset < 0 && fd_is_socket(loop, e, op->fd))
                op->opts |= IOP_OPT_SOCKET;
        }
        if (loop->register_busy && e->nops < IOP__FD_BUSY_OPS && is_stream_io(op->kind) &&
            ++e->nops == IOP__FD_BUSY_OPS)
            (void)iop_fd_register(loop, op->fd);   /* on failure it stays unregistered */
        if (op->deadline && !(loop->caps & IOP_CAP_KERNEL_DEADLINES) && op->kind != IOP_OP_CLOSE) {
            r = iop__timer_arm(loop, &op->timer, op->deadline, dl_fired);
            if (r < 0)
                return r;
        }
    }
    if (op->kind == IOP_OP_RECV_BUF && !loop->pool_native) {
        /* No provided buffers: lend one now; it comes back if nothing arrives. */
        uint32_t bid;
        if (iop__pool_take(loop, &bid) < 0) {
            iop__defer(loop, op, -ENOBUFS);
            return 0;
        }
        op->u.pooled.bid = bid;
        op->u.pooled.buf = loop->pool + (size_t)bid * loop->pool_size;
        op->u.pooled.len = loop->pool_size;
        op->flags |= IOP__OPF_CORE_BUF;
    }
    op->flags |= IOP__OPF_BACKEND;
    int r = loop->be->submit(loop->be_state, op);
    if (r == 1) {
        /* Held back behind another op on its fd: no kernel timer runs for it yet, so
         * the core keeps its deadline meanwhile (whichever fires first, the result
         * is -ETIMEDOUT). Without memory for it, the kernel's starts with the op. */
        r = 0;
        if (op->deadline && !op->timer.heap_idx)
            (void)iop__timer_arm(loop, &op->timer, op->deadline, dl_fired);
    }
    if (r < 0 && op->timer.heap_idx)
        iop__heap_remove(&loop->timers, &op->timer);
    if (r < 0 && (op->flags & IOP__OPF_CORE_BUF)) {
        iop_buf_release(loop, op->u.pooled.bid);   /* lent above, never used */
        op->u.pooled.buf = NULL;
        op->flags &= ~IOP__OPF_CORE_BUF;
    }
    return r;
}

/* A recv through a completion backend that came back short drained its socket. */
static void note_drained(iop_loop_t *loop, const iop_op_t *op, int res)
{
    if (res <= 0 || (uint32_t)op->fd >= loop->fds.cap)
        return;
    iop__fd_t *e = &loop->fds.v[op->fd];
    if ((size_t)res < op->u.io.len)
        e->flags |= IOP__FD_RD_EMPTY;
    else
        e->flags &= (uint8_t)~IOP__FD_RD_EMPTY;
}

/* A callback after which the op stays in flight. An op the core rearms (rearm set)
 * is its own until the callback returns: cancel and forget find it through
 * IOP__OPF_IN_MORE. One the backend keeps going is cancelled through the backend. */
static void run_more(iop_op_t *op, int res, unsigned cflags, int rearm)
{
    iop_loop_t *loop = op->loop;
    iop_op_t *outer = loop->more_op;
    op->cflags = (uint8_t)(IOP_CF_MORE | cflags);
    if (rearm)
        op->flags |= IOP__OPF_IN_MORE;
    op->res = res;
    if (rearm)
        loop->more_op = op;
    op->cb(op, res);
    loop->more_op = outer;
    op->flags &= ~IOP__OPF_IN_MORE;
}

/* Hands one result of op to its callback: the last one, or one of a multishot or
 * zero-copy series (evflags from the backend's event). A multishot op the backend
 * does not keep going by itself (emulated, or ended by the kernel after a good
 * result) is started again here, after its callback. */
void iop__deliver(iop_loop_t *loop, iop_op_t *op, int res, unsigned evflags)
{
    unsigned cf = 0;
    if (op->kind == IOP_OP_RECV && (op->flags & IOP__OPF_BACKEND))
        note_drained(loop, op, res);
    if ((op->flags & IOP__OPF_TIMED_OUT) && res == -ECANCELED)
        res = -ETIMEDOUT;
    if ((op->flags & IOP__OPF_CORE_BUF) && res <= 0) {
        iop_buf_release(loop, op->u.pooled.bid);
        op->u.pooled.buf = NULL;
    }
    if (op->kind == IOP_OP_RECV_BUF && (evflags & IOP_EVF_BUFFER)) {
        op->u.pooled.bid = IOP_EVF_BID(evflags);
        op->u.pooled.buf = loop->pool + (size_t)op->u.pooled.bid * loop->pool_size;
        if (op->u.pooled.bid < loop->pool_count)
            loop->pool_out[op->u.pooled.bid] = 1;   /* the backend lent it */
    }
    if (evflags & IOP_EVF_NOTIF)
        cf |= IOP_CF_NOTIF;
    if (evflags & IOP_EVF_MORE) {
        run_more(op, res, cf, 0);
        return;
    }
    if ((op->opts & IOP_OPT_MULTISHOT) && multishot_goes_on(op, res)) {
        if (op->timer.heap_idx)
            iop__heap_remove(&loop->timers, &op->timer);
        /* A cancel that came while this result waited (in the done queue, or the
         * kernel ending the series as its cancel went out) ends it after this one. */
        uint32_t stop = op->flags & (IOP__OPF_STOP | IOP__OPF_CANCELING) ? IOP__OPF_STOP : 0;
        uint32_t gen = op->flags & IOP__OPF_GEN_MASK;
        op->flags = IOP__OPF_REARM | stop | gen;
        run_more(op, res, cf, 1);
        /* Forgotten while this result waited (in the done queue, or in a CQE that
         * beat the backend's cancel), or during the callback: the series ends. */
        if ((op->flags & IOP__OPF_STOP) ||
            (uint32_t)loop->fds.v[op->fd].gen << IOP__OPF_GEN_SHIFT != gen) {
            op->cflags = 0;
            iop__complete(loop, op, -ECANCELED);
            return;
        }
        op->flags = IOP__OPF_REARM;
        if (op->kind == IOP_OP_RECV_BUF)
            op->u.pooled.buf = NULL;   /* the caller's now; the next shot picks its own */
        int r = start(loop, op);
        if (r < 0) {
            op->cflags = 0;
            iop__complete(loop, op, r);
        }
        return;
    }
    op->cflags = (uint8_t)cf;
    iop__complete(loop, op, res);
}

static void timeout_fired(iop_timer_t *t)
{
    iop__complete(t->loop, op_of_timer(t), 0);
}

static void timeout_deadline_fired(iop_timer_t *t)
{
    iop__complete(t->loop, op_of_timer(t), -ETIMEDOUT);
}

static int cancel_target(iop_loop_t *loop, iop_op_t *target)
{
    if (target->state != IOP__OP_INFLIGHT || target->loop != loop)
        return -ENOENT;
    /* A shot of a series waits: it is delivered, then -ECANCELED. A result that
     * ends the series (an error) is final: -EALREADY, as for a single shot. */
    if ((target->flags & (IOP__OPF_DONE | IOP__OPF_STOP)) == IOP__OPF_DONE && (target->opts & IOP_OPT_MULTISHOT) &&
        multishot_goes_on(target, target->res)) {
        target->flags |= IOP__OPF_STOP;
        return 0;
    }
    if (target->flags & (IOP__OPF_DONE | IOP__OPF_CANCELING | IOP__OPF_STOP))
        return -EALREADY;
    if (target->kind == IOP_OP_TIMEOUT && target->timer.heap_idx) {
        iop__defer(loop, target, -ECANCELED);
        return 0;
    }
    if (target->flags & IOP__OPF_QUEUED) {
        iop__emu_unqueue(loop, target);
        iop__defer(loop, target, -ECANCELED);
        return 0;
    }
    if (target->flags & IOP__OPF_IN_MORE) {
        target->flags |= IOP__OPF_STOP;   /* its last callback follows this one */
        return 0;
    }
    if (target->flags & IOP__OPF_BACKEND) {
        target->flags |= IOP__OPF_CANCELING;   /* a second cancel gets -EALREADY */
        return 1;                         /* the backend's to cancel */
    }
    return -ENOENT;
}

static int close_fd(iop_loop_t *loop, int fd)
{
    iop_fd_forget(loop, fd);
    loop->stats.syscalls++;
    /* Linux releases the fd even when close fails (EINTR included): never retry. */
    return close(fd) < 0 ? -errno : 0;
}

static int needs_fd(int kind)
{
    return kind != IOP_OP_NOP && kind != IOP_OP_TIMEOUT && kind != IOP_OP_CANCEL;
}

/* IOP_OPT_FIXED_BUF: the same checks on every backend, so that a program that runs
 * on one runs on all; the option goes to the backend only if it has the set. */
static int settle_fixed_buf(iop_loop_t *loop, iop_op_t *op)
{
    const void *buf;
    size_t len;
    if (op->kind == IOP_OP_RECV || op->kind == IOP_OP_SEND)
        buf = op->u.io.buf, len = op->u.io.len;
    else if (op->kind == IOP_OP_READ || op->kind == IOP_OP_WRITE)
        buf = op->u.rw.buf, len = op->u.rw.len;
    else
        return iop__fail(-EINVAL, "iop_submit: a registered buffer is for recv, send, read and write, not %s",
                         iop_op_kind_name(op->kind));
    if (op->buf_index >= loop->nfixed)
        return iop__fail(-EINVAL, "iop_submit: %s names registered buffer %u of %u",
                         iop_op_kind_name(op->kind), op->buf_index, loop->nfixed);
    const struct iovec *v = &loop->fixed[op->buf_index];
    uintptr_t b = (uintptr_t)buf, lo = (uintptr_t)v->iov_base;
    if (b < lo || b - lo > v->iov_len || len > v->iov_len - (b - lo))
        return iop__fail(-EINVAL, "iop_submit: %s: its buffer is not inside registered buffer %u",
                         iop_op_kind_name(op->kind), op->buf_index);
    if (!loop->fixed_native)
        op->opts &= (uint8_t)~IOP_OPT_FIXED_BUF;
    return 0;
}

/* Checks op's options against its kind; drops the ones the backend lacks natively
 * (the core then provides the same contract). -EINVAL for a misplaced option. */
static int settle_opts(iop_loop_t *loop, iop_op_t *op)
{
    uint32_t caps = loop->caps;
    if (op->opts & IOP_OPT_MULTISHOT) {
        if (op->kind != IOP_OP_ACCEPT && op->kind != IOP_OP_RECV_BUF)
            return iop__fail(-EINVAL, "iop_submit: multishot is for accept and recv_buf, not %s",
                             iop_op_kind_name(op->kind));
        uint32_t need = op->kind == IOP_OP_ACCEPT ? IOP_CAP_MULTISHOT_ACCEPT : IOP_CAP_MULTISHOT_RECV;
        /* A deadline the kernel keeps (linked timeout) binds one shot: rearm each. */
        if (!(caps & need) || (op->deadline && (caps & IOP_CAP_KERNEL_DEADLINES)))
            op->flags |= IOP__OPF_REARM;   /* one shot at a time, rearmed by the core */
    }
    if (op->opts & IOP_OPT_ZEROCOPY) {
        if (op->kind != IOP_OP_SEND)
            return iop__fail(-EINVAL, "iop_submit: zero-copy is for send, not %s", iop_op_kind_name(op->kind));
        if (!(caps & IOP_CAP_ZEROCOPY_SEND))
            op->opts &= (uint8_t)~IOP_OPT_ZEROCOPY;
    }
    if (op->kind == IOP_OP_RECV_BUF && !loop->pool)
        return iop__fail(-EINVAL, "iop_submit: recv_buf needs a receive pool (iop_loop_opts_t.buf_count)");
    if (op->opts & IOP_OPT_FIXED_BUF)
        return settle_fixed_buf(loop, op);
    return 0;
}

int iop_submit(iop_loop_t *loop, iop_op_t *op)
{
    if (!loop || !op || !op->cb)
        return iop__fail(-EINVAL, "iop_submit: NULL loop, op or callback");
    if (op->state == IOP__OP_INFLIGHT)
        return iop__fail(-EBUSY, "iop_submit: this %s op is already in flight", iop_op_kind_name(op->kind));
    if (op->kind >= IOP_OP_KIND_COUNT)
        return iop__fail(-EINVAL, "iop_submit: unknown op kind %d", op->kind);
    if (needs_fd(op->kind) && (op->fd < 0 || op->fd >= IOP__FD_MAX))
        return iop__fail(-EBADF, "iop_submit: %s on fd %d: fd out of range", iop_op_kind_name(op->kind), op->fd);
    if (op->kind == IOP_OP_CANCEL && !op->u.cancel.target)
        return iop__fail(-EINVAL, "iop_submit: cancel without a target");
    if (iop__forked(loop))
        return iop__fail_forked(loop, "iop_submit");   /* its callback could never run */

    op->loop = loop;
    op->flags = 0;
    op->cflags = 0;
    op->next = NULL;
    int r = settle_opts(loop, op);
    if (r < 0)
        return r;
    op->timer.heap_idx = 0;
    op->state = IOP__OP_INFLIGHT;
    loop->active++;
    loop->stats.ops_submitted++;

    switch (op->kind) {
    case IOP_OP_NOP:
        iop__defer(loop, op, op->deadline && op->deadline <= loop->now ? -ETIMEDOUT : 0);
        break;
    case IOP_OP_TIMEOUT: {
        /* A deadline before the timeout's own end wins, as on any other op. */
        uint64_t at = iop__ns_after(loop->now, op->u.timeout.ns);
        if (op->deadline && op->deadline < at)
            r = iop__timer_arm(loop, &op->timer, op->deadline, timeout_deadline_fired);
        else
            r = iop__timer_arm(loop, &op->timer, at, timeout_fired);
        break;
    }
    case IOP_OP_CANCEL:
        r = cancel_target(loop, op->u.cancel.target);
        if (r == 1) {
            r = start(loop, op);
            if (r < 0)
                op->u.cancel.target->flags &= ~IOP__OPF_CANCELING;
        } else
            iop__defer(loop, op, r), r = 0;
        break;
    case IOP_OP_CLOSE:
        if (loop->be->submit) {
            r = start(loop, op);          /* sees the fd's backend state first */
            iop__fd_forget_core(loop, op->fd);
        } else {
            iop__defer(loop, op, close_fd(loop, op->fd));
        }
        break;
    default:
        r = start(loop, op);
        break;
    }
    if (r < 0) {
        op->state = IOP__OP_IDLE;
        loop->active--;
        loop->stats.ops_submitted--;
        return r;
    }
    return 0;
}
