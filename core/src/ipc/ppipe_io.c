/* One datagram through a process-pipe end. The socket is non-blocking: the call is
 * tried first; when it would block, a coroutine parks on a recvmsg / sendmsg op of
 * its loop, plain code waits in poll(2) until the deadline. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>
#include "error_internal.h"
#include "ppipe_internal.h"

static uint64_t clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static ssize_t io_error(int err, int sending)
{
    if (err == -EPIPE || err == -ECONNRESET || err == -ENOTCONN)
        return iop__fail(-EPIPE, "ppipe %s: the other end is closed (or its process died)",
                         sending ? "send" : "recv");
    return err;
}

/* Waits for fd to be ready for events, at most until deadline (0 = forever). */
static int wait_plain(int fd, short events, uint64_t deadline)
{
    for (;;) {
        int ms = -1;
        if (deadline) {
            uint64_t now = clock_ns();
            if (now >= deadline)
                return -ETIMEDOUT;
            uint64_t left = (deadline - now + 999999u) / 1000000u;
            ms = left > INT_MAX ? INT_MAX : (int)left;
        }
        struct pollfd pfd = { .fd = fd, .events = events };
        int n = poll(&pfd, 1, ms);
        if (n > 0)
            return 0;              /* ready, or an error the next call reports */
        if (n < 0 && errno != EINTR)
            return -errno;
    }
}

/* Remembers the loop the coroutine parks on, so that close can forget fd there. */
static void note_loop(iop_ppipe_t *p, iop_loop_t *loop)
{
    if (p->loop != loop) {
        p->loop = loop;
        p->loop_pid = getpid();
    }
}

ssize_t iop__ppipe_xfer(iop_ppipe_t *p, struct msghdr *m, int flags, int sending,
                        uint64_t deadline)
{
    for (;;) {
        ssize_t n = sending ? sendmsg(p->fd, m, flags | MSG_DONTWAIT | MSG_NOSIGNAL)
                            : recvmsg(p->fd, m, flags | MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return io_error(-errno, sending);
        iop_coro_t *self = iop_self();
        if (self) {
            note_loop(p, iop_coro_loop(self));
            n = sending ? iop_sendmsg(p->fd, m, flags, deadline)
                        : iop_recvmsg(p->fd, m, flags | MSG_CMSG_CLOEXEC, deadline);
            if (n == -EAGAIN || n == -EINTR)
                continue;
            return n < 0 ? io_error((int)n, sending) : n;
        }
        int r = wait_plain(p->fd, sending ? POLLOUT : POLLIN, deadline);
        if (r < 0)
            return r;
    }
}

int iop__ppipe_lock(iop_mutex_t *mx, uint64_t deadline)
{
    if (iop_self())
        return iop_mutex_lock(mx, deadline);
    if (mx->owner)
        return iop__fail(-EBUSY, "ppipe: a coroutine of this process is halfway through a "
                                 "message on this end; plain code cannot interleave");
    return 0;
}

void iop__ppipe_unlock(iop_mutex_t *mx)
{
    if (iop_self())
        iop_mutex_unlock(mx);
}
