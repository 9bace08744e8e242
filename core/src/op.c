/* Op life cycle shared by every backend: submit checks, completion, the done queue
 * (callbacks of ops that finished without waiting), timeouts and cancellation. */
#include <errno.h>
#include <stddef.h>
#include <unistd.h>
#include "loop_internal.h"

static const char *const kind_names[IOP_OP_KIND_COUNT] = {
    "nop", "accept", "connect", "recv", "send", "read", "write",
    "recvmsg", "sendmsg", "close", "timeout", "cancel",
};

const char *iop_op_kind_name(int kind)
{
    return kind >= 0 && kind < IOP_OP_KIND_COUNT ? kind_names[kind] : "?";
}

static inline iop_op_t *op_of_timer(iop_timer_t *t)
{
    return (iop_op_t *)((char *)t - offsetof(iop_op_t, timer));
}

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
    op->flags = IOP__OPF_DONE;
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
        iop__complete(loop, op, op->res);
        op = next;
    }
}

static void timeout_fired(iop_timer_t *t)
{
    iop__complete(t->loop, op_of_timer(t), 0);
}

static int cancel_target(iop_loop_t *loop, iop_op_t *target)
{
    if (target->state != IOP__OP_INFLIGHT || target->loop != loop)
        return -ENOENT;
    if (target->flags & IOP__OPF_DONE)
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

    op->loop = loop;
    op->flags = 0;
    op->next = NULL;
    op->timer.heap_idx = 0;
    op->state = IOP__OP_INFLIGHT;
    loop->active++;
    loop->stats.ops_submitted++;

    int r = 0;
    switch (op->kind) {
    case IOP_OP_NOP:
        iop__defer(loop, op, 0);
        break;
    case IOP_OP_TIMEOUT:
        r = iop__timer_arm(loop, &op->timer, loop->now + op->u.timeout.ns, timeout_fired);
        break;
    case IOP_OP_CANCEL:
        iop__defer(loop, op, cancel_target(loop, op->u.cancel.target));
        break;
    case IOP_OP_CLOSE:
        iop__defer(loop, op, close_fd(loop, op->fd));
        break;
    default:
        r = loop->be->submit ? loop->be->submit(loop->be_state, op) : iop__emu_submit(loop, op);
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
