/* iop_wait_fd: park the current coroutine until an fd is ready. A one-shot use of
 * the reactor interface: a watch in the caller's frame, stopped by its first
 * callback (or after a timeout or cancel), so nothing of it outlives the call. */
#include <errno.h>
#include "loop_internal.h"
#include "sched_private.h"

typedef struct fd_wait {
    iop_watch_t watch;
    iop_coro_t *coro;
} fd_wait_t;

static void fd_ready(iop_watch_t *w, unsigned revents)
{
    fd_wait_t *fw = w->data;
    if (!(w->active & IOP__W_ACTIVE)) {
        /* The fd was forgotten (iop_close, iop_fd_close): fail like an op on it
         * would. Woken later, not here: the closer may be main, mid-call. */
        iop__wake_later(fw->coro, -ECANCELED);
        return;
    }
    iop_watch_stop(w);
    iop__wake(fw->coro, (int)(revents ? revents : IOP_ERR));
}

int iop_wait_fd(int fd, unsigned events, uint64_t deadline)
{
    iop_coro_t *c = iop__current();
    if (!c)
        return iop__fail(-EPERM, "iop_wait_fd: outside any coroutine (the scheduler itself must never block)");
    if (c->cancelled)
        return -ECANCELED;
    events &= IOP_READ | IOP_WRITE;
    if (!events)
        return iop__fail(-EINVAL, "iop_wait_fd: ask for IOP_READ and/or IOP_WRITE");
    fd_wait_t fw = { .coro = c };
    fw.watch.data = &fw;
    int r = iop_watch_start(iop_coro_loop(c), &fw.watch, fd, events, fd_ready);
    if (r < 0)
        return r;
    fw.watch.active |= IOP__W_FORGET_CB;
    r = iop__park(deadline);
    iop_watch_stop(&fw.watch);     /* timed out or cancelled: still active */
    return r;
}
