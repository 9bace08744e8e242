/* Reactor watches. Starting one registers with the backend at once so that a
 * refused fd (say, a regular file under epoll) is an error here, not a silent hang;
 * later changes go through the pre-poll flush like the ops' do. */
#include <errno.h>
#include "loop_internal.h"

int iop__watch_start(iop_loop_t *loop, iop_watch_t *w, int fd, unsigned events,
                     iop_watch_cb cb, unsigned internal)
{
    if (!loop || !w || !cb)
        return iop__fail(-EINVAL, "iop_watch_start: NULL argument");
    if (w->active & IOP__W_ACTIVE)
        return iop__fail(-EBUSY, "iop_watch_start: watch is already active on fd %d", w->fd);
    if (iop__forked(loop))
        return iop__fail_forked(loop, "iop_watch_start");
    int r = iop__fd_reserve(loop, fd);
    if (r < 0)
        return r;
    iop__fd_t *e = &loop->fds.v[fd];
    if (e->watch)
        return iop__fail(-EEXIST, "iop_watch_start: fd %d already has a watch", fd);
    w->loop = loop;
    w->fd = fd;
    w->events = events & (IOP_READ | IOP_WRITE);
    w->cb = cb;
    w->active = IOP__W_ACTIVE | (internal ? IOP__W_INTERNAL : 0);
    e->watch = w;

    unsigned want = iop__fd_want(e, loop->caps);
    if (want != e->reg) {
        r = loop->be->watch(loop->be_state, fd, e->reg, want, iop__fdtable_bstate(&loop->fds, fd));
        if (r < 0) {
            e->watch = NULL;
            w->active = 0;
            return iop__fail(r, "iop_watch_start: backend %s refused fd %d: %s", loop->be->name, fd,
                             iop_strerror(r));
        }
        e->reg = (uint8_t)want;
    }
    if (!internal)
        loop->active++;
    return 0;
}

int iop_watch_start(iop_loop_t *loop, iop_watch_t *w, int fd, unsigned events, iop_watch_cb cb)
{
    return iop__watch_start(loop, w, fd, events, cb, 0);
}

int iop_watch_modify(iop_watch_t *w, unsigned events)
{
    if (!w || !(w->active & IOP__W_ACTIVE))
        return iop__fail(-EINVAL, "iop_watch_modify: watch is not active");
    w->events = events & (IOP_READ | IOP_WRITE);
    return iop__mark_change(w->loop, w->fd);
}

void iop_watch_stop(iop_watch_t *w)
{
    if (!w || !(w->active & IOP__W_ACTIVE))
        return;
    iop_loop_t *loop = w->loop;
    iop__fd_t *e = &loop->fds.v[w->fd];
    if (e->watch == w) {
        e->watch = NULL;
        iop__mark_change(loop, w->fd);
    }
    if (!(w->active & IOP__W_INTERNAL))
        loop->active--;
    w->active = 0;
}
