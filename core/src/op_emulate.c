/* Proactor ops over a readiness backend: try the syscall first; only when it would
 * block, queue the op on its fd and let readiness retry it. Each readiness event
 * retries at most one op per direction, so one busy fd cannot starve the others.
 *
 * Hints: a read that came back short or with EAGAIN marks the fd drained; while it
 * stays registered for reading, the next read op waits for readiness instead of
 * paying for a syscall that would only say EAGAIN. A level-triggered backend reports
 * any data that arrives meanwhile, so the hint never loses a wake-up. Writes alike. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include "loop_internal.h"

static inline int is_read_kind(int kind)
{
    return kind == IOP_OP_RECV || kind == IOP_OP_READ || kind == IOP_OP_RECVMSG ||
           kind == IOP_OP_ACCEPT || kind == IOP_OP_RECV_BUF;
}

/* accept/connect/read/write need to know whether fd can block. Sockets are made
 * non-blocking; other blocking fds (a terminal, a pipe shared with a shell) are left
 * alone and only touched after readiness. Regular files never wait. */
static int classify(iop_loop_t *loop, int fd)
{
    iop__fd_t *e = &loop->fds.v[fd];
    struct stat st;
    loop->stats.syscalls += 2;
    if (fstat(fd, &st) < 0)
        return -errno;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -errno;
    if (S_ISSOCK(st.st_mode))
        e->flags |= IOP__FD_SOCKET;
    e->flags |= IOP__FD_SOCK_KNOWN;
    if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)) {
        e->flags |= IOP__FD_REGULAR;
    } else if (!(fl & O_NONBLOCK)) {
        if (S_ISSOCK(st.st_mode)) {
            loop->stats.syscalls++;
            if (fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
                return -errno;
        } else {
            e->flags |= IOP__FD_BLOCKING;
        }
    }
    e->flags |= IOP__FD_KNOWN;
    return 0;
}

static int connect_result(iop_loop_t *loop, int fd)
{
    int err = 0;
    socklen_t len = sizeof err;
    loop->stats.syscalls++;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return -errno;
    if (err)
        return -err;
    /* A stale readiness report must not pass for success: still in progress? */
    struct sockaddr_storage ss;
    len = sizeof ss;
    loop->stats.syscalls++;
    if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
        return errno == ENOTCONN ? -EAGAIN : -errno;
    return 0;
}

/* recv_buf over readiness: the buffer is taken only when data is there, like a
 * provided buffer, and goes back to the pool if the recv brings nothing. */
static ssize_t recv_pooled(iop_loop_t *loop, iop_op_t *op)
{
    uint32_t bid;
    if (iop__pool_take(loop, &bid) < 0) {
        errno = ENOBUFS;
        return -1;
    }
    void *buf = loop->pool + (size_t)bid * loop->pool_size;
    ssize_t n = recv(op->fd, buf, loop->pool_size, op->u.pooled.msg_flags | MSG_DONTWAIT);
    if (n > 0) {
        op->u.pooled.buf = buf;
        op->u.pooled.bid = bid;
    } else {
        int e = errno;
        iop_buf_release(loop, bid);
        errno = e;
    }
    return n;
}

/* One attempt at op's syscall: its result, or -EAGAIN to wait for readiness. */
static int perform(iop_loop_t *loop, iop_op_t *op)
{
    int fd = op->fd;
    ssize_t n;
    if (op->kind == IOP_OP_CONNECT && (op->flags & IOP__OPF_CONNECTING))
        return connect_result(loop, fd);
    size_t wlen = op->u.rw.len;
    if (op->kind == IOP_OP_WRITE && (loop->fds.v[fd].flags & IOP__FD_BLOCKING) && wlen > PIPE_BUF)
        wlen = PIPE_BUF;   /* readiness promises PIPE_BUF bytes of room, no more */
    do {
        loop->stats.syscalls++;
        switch (op->kind) {
        case IOP_OP_ACCEPT:
            n = accept4(fd, op->u.accept.addr, op->u.accept.addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC);
            break;
        case IOP_OP_CONNECT:
            n = connect(fd, op->u.connect.addr, op->u.connect.addrlen);
            if (n < 0 && errno == EINPROGRESS) {
                op->flags |= IOP__OPF_CONNECTING;
                return -EAGAIN;
            }
            break;
        case IOP_OP_RECV:
            n = recv(fd, op->u.io.buf, op->u.io.len, op->u.io.msg_flags | MSG_DONTWAIT);
            break;
        case IOP_OP_RECV_BUF:
            n = recv_pooled(loop, op);
            break;
        case IOP_OP_SEND:
            n = send(fd, op->u.io.buf, op->u.io.len, op->u.io.msg_flags | MSG_DONTWAIT | MSG_NOSIGNAL);
            break;
        case IOP_OP_READ:
            n = op->u.rw.offset < 0 ? read(fd, op->u.rw.buf, op->u.rw.len)
                                    : pread(fd, op->u.rw.buf, op->u.rw.len, op->u.rw.offset);
            break;
        case IOP_OP_WRITE:
            if (op->u.rw.offset >= 0)
                n = pwrite(fd, op->u.rw.buf, wlen, op->u.rw.offset);
            else if (loop->fds.v[fd].flags & IOP__FD_SOCKET)
                n = send(fd, op->u.rw.buf, wlen, MSG_DONTWAIT | MSG_NOSIGNAL);   /* no SIGPIPE */
            else
                n = write(fd, op->u.rw.buf, wlen);
            break;
        case IOP_OP_RECVMSG:
            n = recvmsg(fd, op->u.msg.msg, op->u.msg.msg_flags | MSG_DONTWAIT);
            break;
        case IOP_OP_SENDMSG:
            n = sendmsg(fd, op->u.msg.msg, op->u.msg.msg_flags | MSG_DONTWAIT | MSG_NOSIGNAL);
            break;
        default:
            return -EINVAL;
        }
    } while (n < 0 && errno == EINTR);
    if (n >= 0)
        return n > INT_MAX ? INT_MAX : (int)n;
    return errno == EWOULDBLOCK ? -EAGAIN : -errno;
}

/* Performs op and records what the result says about the fd's buffers. */
static int attempt(iop_loop_t *loop, iop_op_t *op)
{
    int r = perform(loop, op);
    iop__fd_t *e = &loop->fds.v[op->fd];
    size_t len = op->kind == IOP_OP_RECV || op->kind == IOP_OP_SEND ? op->u.io.len : op->u.rw.len;
    int sized = op->kind == IOP_OP_RECV || op->kind == IOP_OP_SEND || op->kind == IOP_OP_READ ||
                op->kind == IOP_OP_WRITE;
    int drained = r == -EAGAIN || (sized && r >= 0 && (size_t)r < len);
    if (drained)
        e->flags |= is_read_kind(op->kind) ? IOP__FD_RD_EMPTY : IOP__FD_WR_FULL;
    return r;
}

static void deadline_fired(iop_timer_t *t)
{
    iop_op_t *op = (iop_op_t *)((char *)t - offsetof(iop_op_t, timer));
    iop__emu_unqueue(t->loop, op);
    op->cflags = 0;   /* a multishot op between shots: this is its last callback */
    iop__complete(t->loop, op, -ETIMEDOUT);
}

static void enqueue(iop_loop_t *loop, iop_op_t *op)
{
    /* (A deadline already passed never gets here: start() fails the op first.)
     * Without memory for its timer the op fails with that, not as timed out. */
    int r;
    if (op->deadline && (r = iop__timer_arm(loop, &op->timer, op->deadline, deadline_fired)) < 0) {
        iop__defer(loop, op, r);
        return;
    }
    iop__fd_t *e = &loop->fds.v[op->fd];
    int rd = is_read_kind(op->kind);
    iop_op_t **head = rd ? &e->rd_head : &e->wr_head, **tail = rd ? &e->rd_tail : &e->wr_tail;
    op->next = NULL;
    if (*tail)
        (*tail)->next = op;
    else
        *head = op;
    *tail = op;
    op->flags |= IOP__OPF_QUEUED;
    iop__mark_change(loop, op->fd);
}

void iop__emu_unqueue(iop_loop_t *loop, iop_op_t *op)
{
    iop__fd_t *e = &loop->fds.v[op->fd];
    int rd = is_read_kind(op->kind);
    iop_op_t **head = rd ? &e->rd_head : &e->wr_head, **tail = rd ? &e->rd_tail : &e->wr_tail;
    iop_op_t *prev = NULL;
    for (iop_op_t *o = *head; o; prev = o, o = o->next) {
        if (o != op)
            continue;
        if (prev)
            prev->next = o->next;
        else
            *head = o->next;
        if (*tail == o)
            *tail = prev;
        break;
    }
    op->flags &= ~IOP__OPF_QUEUED;
    iop__mark_change(loop, op->fd);
}

int iop__emu_submit(iop_loop_t *loop, iop_op_t *op)
{
    int fd = op->fd;
    int r = iop__fd_reserve(loop, fd);
    if (r < 0)
        return r;
    iop__fd_t *e = &loop->fds.v[fd];
    int rd = is_read_kind(op->kind);
    int k = op->kind;
    if ((k == IOP_OP_ACCEPT || k == IOP_OP_CONNECT || k == IOP_OP_READ || k == IOP_OP_WRITE) &&
        !(e->flags & IOP__FD_KNOWN)) {
        r = classify(loop, fd);
        if (r < 0) {
            iop__defer(loop, op, r);   /* e.g. -EBADF: a result, reported from the loop */
            return 0;
        }
    }
    iop_op_t *queued = rd ? e->rd_head : e->wr_head;
    unsigned dir = rd ? IOP_READ : IOP_WRITE;
    unsigned hint = rd ? IOP__FD_RD_EMPTY : IOP__FD_WR_FULL;
    int wait_first = queued != NULL ||                       /* keep FIFO order */
                     ((op->opts & IOP_OPT_POLL_FIRST) &&     /* the caller expects to wait */
                      !(e->flags & IOP__FD_REGULAR)) ||      /* (nothing can wait on a file) */
                     (e->flags & IOP__FD_BLOCKING) ||        /* would block the loop */
                     ((e->flags & hint) && (e->reg & dir));  /* known empty, and watched */
    if (!wait_first) {
        r = attempt(loop, op);
        if (r != -EAGAIN) {
            iop__defer(loop, op, r);
            return 0;
        }
    }
    enqueue(loop, op);
    return 0;
}

/* Retries the first op waiting in one direction of fd. */
static void service(iop_loop_t *loop, int fd, int rd)
{
    iop__fd_t *e = &loop->fds.v[fd];
    iop_op_t *op = rd ? e->rd_head : e->wr_head;
    int r = attempt(loop, op);
    if (r == -EAGAIN)
        return;
    iop__emu_unqueue(loop, op);
    iop__deliver(loop, op, r, 0);
}

void iop__emu_ready(iop_loop_t *loop, int fd, unsigned revents)
{
    if (fd < 0 || (uint32_t)fd >= loop->fds.cap)
        return;
    /* Re-read the entry after every callback: callbacks may grow the table. */
    if (revents & (IOP_READ | IOP_ERR | IOP_HUP)) {
        loop->fds.v[fd].flags &= ~IOP__FD_RD_EMPTY;
        if (loop->fds.v[fd].rd_head)
            service(loop, fd, 1);
    }
    if (revents & (IOP_WRITE | IOP_ERR | IOP_HUP)) {
        loop->fds.v[fd].flags &= ~IOP__FD_WR_FULL;
        if (loop->fds.v[fd].wr_head)
            service(loop, fd, 0);
    }
    iop_watch_t *w = loop->fds.v[fd].watch;
    if (w && w->events) {
        unsigned mask = revents & (w->events | IOP_ERR | IOP_HUP);
        if (mask)
            w->cb(w, mask);
    }
}

/* Takes every op queued on fd and defers its result: err, or (err 0) the result of
 * trying it once now. */
static void settle_queued(iop_loop_t *loop, int fd, int err)
{
    iop__fd_t *e = &loop->fds.v[fd];
    iop_op_t *lists[2] = { e->rd_head, e->wr_head };
    e->rd_head = e->rd_tail = e->wr_head = e->wr_tail = NULL;
    for (int i = 0; i < 2; i++) {
        for (iop_op_t *op = lists[i]; op;) {
            iop_op_t *next = op->next;
            op->flags &= ~IOP__OPF_QUEUED;
            iop__defer(loop, op, err ? err : perform(loop, op));   /* -EAGAIN too: nothing can wait */
            op = next;
        }
    }
    iop__mark_change(loop, fd);
}

/* The backend cannot watch fd at all (epoll says EPERM for /dev/null, /dev/zero and
 * other files without poll support): poll(2) calls such a file always ready, and so
 * does the emulation. Its waiting ops are tried now, in order, and later ones at
 * once. */
void iop__emu_unwatchable(iop_loop_t *loop, int fd)
{
    iop__fd_t *e = &loop->fds.v[fd];
    e->flags = (uint8_t)((e->flags & ~(IOP__FD_BLOCKING | IOP__FD_RD_EMPTY | IOP__FD_WR_FULL)) |
                         IOP__FD_REGULAR);
    settle_queued(loop, fd, 0);
}

void iop__fd_fail_ops(iop_loop_t *loop, int fd, int err)
{
    settle_queued(loop, fd, err);
}
