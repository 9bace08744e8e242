/* Coroutine I/O: each call prepares a proactor op in the caller's own stack frame
 * (nothing is allocated), gives it the effective deadline, submits it and parks.
 * The op's callback resumes the coroutine with the result.
 *
 * Cancel: iop_cancel sends a cancel op (also in the frame) for the parked op, and
 * the coroutine resumes only after both callbacks have run, so that nothing the
 * loop or the backend holds still points into its stack. The result is the op's:
 * -ECANCELED, or what it completed with if it finished first (data read is never
 * thrown away); every later blocking call returns -ECANCELED at once. A cancel the
 * backend refuses (a full queue) goes again a moment later. */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include "loop_internal.h"
#include "sched_private.h"

static void io_done(iop_op_t *op, int res)
{
    iop__io_wait_t *w = op->data;
    w->res = res;
    if (--w->pending == 0)
        iop__wake(w->coro, w->res);   /* resumes it: touch nothing after */
}

static void cancel_done(iop_op_t *op, int res)
{
    (void)res;                     /* -EALREADY / -ENOENT: the op completes anyway */
    iop__io_wait_t *w = op->data;
    if (--w->pending == 0)
        iop__wake(w->coro, w->res);
}

static void cancel_retry_due(iop_timer_t *t)
{
    iop__io_wait_t *w = t->data;
    w->retry_armed = 0;
    if (w->pending == 0)
        return;                    /* the op ended meanwhile: its coroutine is woken */
    w->cancel_sent = 0;
    iop__io_cancel(w->coro);
}

void iop__io_cancel(iop_coro_t *c)
{
    iop__io_wait_t *w = (iop__io_wait_t *)((char *)c->wait_op - offsetof(iop__io_wait_t, op));
    if (w->cancel_sent || w->shielded)
        return;
    w->cancel_sent = 1;
    /* A refused cancel is sent again a moment later: else a parked call with no
     * deadline would wait for its op to end by itself, perhaps never. */
    if (iop__cancel_or_retry(iop_coro_loop(c), c, &w->cancel, &w->op, cancel_done, w, &w->retry,
                             cancel_retry_due))
        w->pending++;
    else
        w->retry_armed = 1;
}

#define CANCEL_RETRY_NS 1000000ull

static _Thread_local long tl_refuse_next, tl_refused;

long iop__cancel_refuse_next(long n)
{
    long refused = tl_refused;
    tl_refuse_next = n < 0 ? 0 : n;
    tl_refused = 0;
    return refused;
}

int iop__cancel_or_retry(iop_loop_t *loop, iop_coro_t *owner, iop_op_t *cancel, iop_op_t *target,
                         iop_op_cb cb, void *data, iop_timer_t *retry, void (*due)(iop_timer_t *t))
{
    iop_prep_cancel(cancel, target, cb, data);
    if (tl_refuse_next > 0) {
        tl_refuse_next--;
        tl_refused++;
    } else if (iop_submit(loop, cancel) == 0) {
        return 1;
    }
    memset(retry, 0, sizeof *retry);
    retry->data = data;
    /* With no memory for a timer the cancel would be lost: owner's own slot. */
    (void)iop__coro_timer_start(loop, owner, retry, CANCEL_RETRY_NS, due);
    return 0;
}

int iop__coro_timer_start(iop_loop_t *loop, iop_coro_t *owner, iop_timer_t *t, uint64_t after_ns,
                          void (*cb)(iop_timer_t *t))
{
    /* The slot coro_new reserved; another loop's coroutine has none here. */
    if (owner && iop_coro_loop(owner) == loop)
        return iop__timer_start_spare(loop, t, after_ns, cb);
    return iop_timer_start(loop, t, after_ns, 0, cb);
}

iop_coro_t *iop__io_begin(const char *what, int *err)
{
    iop_coro_t *c = iop__current();
    if (!c)
        *err = iop__fail(-EPERM, "%s: outside any coroutine (the scheduler itself must never block)", what);
    else if (c->cancelled)
        *err = -ECANCELED, c = NULL;
    return c;
}

/* Submits the op prepared in w->op with the effective deadline and parks until its
 * callbacks have run. */
static int io_run(iop_coro_t *c, iop__io_wait_t *w, uint64_t deadline)
{
    iop_loop_t *loop = iop_coro_loop(c);
    uint64_t d = iop__deadline(deadline);
    if (d && d <= iop_now(loop))
        return -ETIMEDOUT;
    iop_op_set_deadline(&w->op, d);
    w->coro = c;
    w->res = 0;
    w->pending = 1;
    w->cancel_sent = 0;
    w->shielded = 0;
    w->retry_armed = 0;
    int r = iop_submit(loop, &w->op);
    if (r < 0)
        return r;
    c->wait_op = &w->op;
    r = iop__park(0);
    c->wait_op = NULL;
    if (w->retry_armed)            /* the op ended before the cancel went */
        iop_timer_stop(&w->retry);
    return r;
}

ssize_t iop_recv(int fd, void *buf, size_t len, int flags, uint64_t deadline)
{
    int r;
    iop_coro_t *c = iop__io_begin("iop_recv", &r);
    if (!c)
        return r;
    iop__io_wait_t w;
    iop_prep_recv(&w.op, fd, buf, len, flags, io_done, &w);
    return io_run(c, &w, deadline);
}

ssize_t iop_send(int fd, const void *buf, size_t len, int flags, uint64_t deadline)
{
    int r;
    iop_coro_t *c = iop__io_begin("iop_send", &r);
    if (!c)
        return r;
    iop__io_wait_t w;
    iop_prep_send(&w.op, fd, buf, len, flags, io_done, &w);
    return io_run(c, &w, deadline);
}

ssize_t iop_read(int fd, void *buf, size_t len, uint64_t deadline)
{
    int r;
    iop_coro_t *c = iop__io_begin("iop_read", &r);
    if (!c)
        return r;
    iop__io_wait_t w;
    iop_prep_read(&w.op, fd, buf, len, -1, io_done, &w);
    return io_run(c, &w, deadline);
}

ssize_t iop_write(int fd, const void *buf, size_t len, uint64_t deadline)
{
    int r;
    iop_coro_t *c = iop__io_begin("iop_write", &r);
    if (!c)
        return r;
    iop__io_wait_t w;
    iop_prep_write(&w.op, fd, buf, len, -1, io_done, &w);
    return io_run(c, &w, deadline);
}

ssize_t iop_recvmsg(int fd, struct msghdr *msg, int flags, uint64_t deadline)
{
    int r;
    iop_coro_t *c = iop__io_begin("iop_recvmsg", &r);
    if (!c)
        return r;
    iop__io_wait_t w;
    iop_prep_recvmsg(&w.op, fd, msg, flags, io_done, &w);
    return io_run(c, &w, deadline);
}

ssize_t iop_sendmsg(int fd, const struct msghdr *msg, int flags, uint64_t deadline)
{
    int r;
    iop_coro_t *c = iop__io_begin("iop_sendmsg", &r);
    if (!c)
        return r;
    iop__io_wait_t w;
    iop_prep_sendmsg(&w.op, fd, msg, flags, io_done, &w);
    return io_run(c, &w, deadline);
}

int iop_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, uint64_t deadline)
{
    int r;
    iop_coro_t *c = iop__io_begin("iop_accept", &r);
    if (!c)
        return r;
    iop__io_wait_t w;
    iop_prep_accept(&w.op, fd, addr, addrlen, io_done, &w);
    return io_run(c, &w, deadline);
}

int iop_connect(int fd, const struct sockaddr *addr, socklen_t addrlen, uint64_t deadline)
{
    int r;
    iop_coro_t *c = iop__io_begin("iop_connect", &r);
    if (!c)
        return r;
    iop__io_wait_t w;
    iop_prep_connect(&w.op, fd, addr, addrlen, io_done, &w);
    return io_run(c, &w, deadline);
}

/* Runs to the end even in a cancelled coroutine (else the fd would leak) and has no
 * deadline: ops still waiting on fd fail with -ECANCELED first. */
int iop_close(int fd)
{
    iop_coro_t *c = iop__current();
    if (!c)
        return iop__fail(-EPERM, "iop_close: outside any coroutine (use iop_fd_close there)");
    iop__io_wait_t w;
    iop_prep_close(&w.op, fd, io_done, &w);
    w.coro = c;
    w.res = 0;
    w.pending = 1;
    w.cancel_sent = 0;
    w.shielded = 1;
    w.retry_armed = 0;
    int r = iop_submit(iop_coro_loop(c), &w.op);
    if (r < 0)
        return r;
    c->wait_op = &w.op;
    r = iop__park(0);
    c->wait_op = NULL;
    return r;
}

int iop__pause(uint64_t ns)
{
    int r = iop_sleep(ns);
    return r == -ENOMEM ? iop_yield() : r;
}

int iop_sleep(uint64_t ns)
{
    int r;
    iop_coro_t *c = iop__io_begin("iop_sleep", &r);
    if (!c)
        return r;
    if (!ns)
        return iop_yield();
    /* From the clock as it is now, not the loop's cached one: a coroutine that runs
     * late in a long iteration must still sleep at least ns. */
    uint64_t now = iop_update_time(iop_coro_loop(c));
    return iop_sleep_until(iop__ns_after(now, ns));
}

/* Reaching its own deadline is success; an earlier scope deadline is -ETIMEDOUT.
 * deadline 0 sleeps until the scope's deadline or a cancel. */
int iop_sleep_until(uint64_t deadline)
{
    int r;
    iop_coro_t *c = iop__io_begin("iop_sleep_until", &r);
    if (!c)
        return r;
    if (!deadline)
        return iop__park(0);       /* until the scope's deadline or a cancel */
    uint64_t scope = iop__deadline(0);
    r = iop__park(deadline);
    if (r == -ETIMEDOUT && (!scope || deadline <= scope))
        r = 0;
    return r;
}
