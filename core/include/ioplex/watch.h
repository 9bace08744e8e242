/* ioplex — the reactor interface: persistent readiness watches.
 *
 * Level-triggered on every backend: while the fd stays readable (writable) and the
 * watch asks for it, the callback runs once per loop iteration. One watch per fd;
 * ops may wait on the same fd at the same time. A callback may modify, stop or free
 * its own watch (stop before free). A record must be zeroed before its first start.
 * An fd the backend refuses at start fails iop_watch_start (epoll refuses regular
 * files and /dev/null with -EPERM, which the other backends report always ready).
 * A watch whose fd the backend refuses later (closed behind the loop's back) gets
 * one IOP_ERR and is stopped; so does one whose fd a readiness backend finds closed
 * (poll, select), and on uring one closed before its poll reached the kernel.
 * epoll, sigio and uring cannot see a close after that: the watch just never fires.
 * select reports readiness only, never IOP_ERR or IOP_HUP (backends/README.md). */
#ifndef IOPLEX_WATCH_H
#define IOPLEX_WATCH_H

#include "common.h"

typedef struct iop_watch iop_watch_t;
typedef void (*iop_watch_cb)(iop_watch_t *w, unsigned revents);

struct iop_watch {
    iop_watch_cb cb;
    void *data;            /* the caller's */
    /* private */
    iop_loop_t *loop;
    int32_t fd;
    uint32_t events;       /* IOP_READ | IOP_WRITE */
    uint32_t active;
};

/* Starts watching fd for events (IOP_READ and/or IOP_WRITE). -EBADF: fd out of
 * range; -EEXIST: fd already has a watch; -EBUSY: w is already active. */
IOP_EXPORT int iop_watch_start(iop_loop_t *loop, iop_watch_t *w, int fd, unsigned events,
                               iop_watch_cb cb);

/* Changes what an active watch asks for (0 pauses it without stopping it). */
IOP_EXPORT int iop_watch_modify(iop_watch_t *w, unsigned events);

/* Stops w; a no-op on an inactive watch. w may be freed right after. */
IOP_EXPORT void iop_watch_stop(iop_watch_t *w);

#endif
