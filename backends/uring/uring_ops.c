/* The uring backend: every proactor op as an SQE. Nothing here enters the kernel
 * except forgetting an fd and registering one, which must take effect before the
 * caller's next step (close, or ops on the fixed slot). */
#include <errno.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include "uring_internal.h"

static uring_fd_t *fd_state(uring_state_t *st, int fd)
{
    return st->host->fd_state(st->host->core, fd);
}

/* Points sqe at op's fd, through its fixed slot when it has one. */
static void use_fd(uring_state_t *st, struct io_uring_sqe *sqe, int fd)
{
    uring_fd_t *f = fd_state(st, fd);
    if (f && f->fixed) {
        sqe->fd = f->fixed - 1;
        sqe->flags |= IOSQE_FIXED_FILE;
    }
}

static void fail_waiting(uring_state_t *st, uring_fd_t *f, int res);

/* The kernel sends zero-copy over TCP and UDP only; elsewhere (AF_UNIX ...) SEND_ZC
 * fails with -EOPNOTSUPP, where a plain send works. Asked once per fd. */
static int zerocopy_works(uring_state_t *st, int fd)
{
    uring_fd_t *f = fd_state(st, fd);
    if (!f->zc) {
        int dom = 0;
        socklen_t len = sizeof dom;
        (*st->host->syscalls)++;
        f->zc = getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &len) == 0 && (dom == AF_INET || dom == AF_INET6)
                    ? ZC_YES : ZC_NO;
    }
    return f->zc == ZC_YES;
}

/* A read's or write's offset as io_uring takes it: -1 = the file position. */
static uint64_t rw_offset(const iop_op_t *op)
{
    return op->u.rw.offset < 0 ? (uint64_t)-1 : (uint64_t)op->u.rw.offset;
}

static int native_multishot(const uring_state_t *st, const iop_op_t *op, unsigned need)
{
    return (op->opts & IOP_OPT_MULTISHOT) && (st->feat & need) && !(op->deadline && st->kdl);
}

/* IOP_LOOP_KERNEL_DEADLINES: links a timeout that cancels op at its absolute
 * deadline (otherwise the core's timer heap keeps deadlines). The SQE slot indexes
 * the timespec so that it lives until io_uring_enter reads it. */
static int link_deadline(uring_state_t *st, struct io_uring_sqe *sqe, iop_op_t *op)
{
    sqe->flags |= IOSQE_IO_LINK;
    struct io_uring_sqe *to = uring_sqe(st);
    if (!to)
        return -EBUSY;
    struct __kernel_timespec *ts = &st->ts[to - st->ring.sq.sqes];
    ts->tv_sec = (long long)(op->deadline / 1000000000u);
    ts->tv_nsec = (long long)(op->deadline % 1000000000u);
    io_uring_prep_link_timeout(to, ts, IORING_TIMEOUT_ABS);
    io_uring_sqe_set_data64(to, (uint64_t)(uintptr_t)op | UD_LINK_TO);
    op->backend_u32 = 2;   /* the op's CQE and the timeout's */
    return 0;
}

/* close: every op on the fd is cancelled first (the kernel holds the file while an
 * op waits on it, so a plain close would leave a recv pending and send no FIN),
 * its fixed slot is emptied, then the fd is closed; hard links keep the order even
 * when the cancel finds nothing. No cancel when nothing can be in the kernel: no
 * op in either direction whose last CQE is still out, no poll, never a positioned
 * read or write (those are not tracked). Closing an idle connection is the common
 * case, and its cancel was ~3% of the server's CPU with a connection per request. */
static int prep_close(uring_state_t *st, struct io_uring_sqe *sqe, iop_op_t *op)
{
    uring_fd_t *f = fd_state(st, op->fd);
    int fixed = f ? f->fixed : 0;
    int busy = f && (f->dir[0].holder || f->dir[1].holder || f->token || f->positional);
    if (f) {
        fail_waiting(st, f, -ECANCELED);
        f->mask = f->armed = 0;
        f->token = 0;
        f->fixed = 0;   /* the slot is free once its close_direct below is done */
    }
    if (busy) {
        io_uring_prep_cancel_fd(sqe, op->fd, IORING_ASYNC_CANCEL_ALL);
        io_uring_sqe_set_data64(sqe, UD_IGNORE);
        sqe->flags |= IOSQE_IO_HARDLINK;
        sqe = NULL;
    }
    if (fixed) {
        if (!sqe && !(sqe = uring_sqe(st)))
            return -EBUSY;
        io_uring_prep_close_direct(sqe, (unsigned)(fixed - 1));
        /* Not free before: a registration meanwhile would be emptied by it. */
        io_uring_sqe_set_data64(sqe, (uint64_t)(fixed - 1) << 3 | UD_SLOT);
        sqe->flags |= IOSQE_IO_HARDLINK;
        sqe = NULL;
    }
    if (!sqe && !(sqe = uring_sqe(st)))
        return -EBUSY;
    io_uring_prep_close(sqe, op->fd);
    io_uring_sqe_set_data(sqe, op);
    return 0;
}

/* Which uring_dir_t op waits in: 0 reading, 1 writing, -1 none (a positioned
 * read or write keeps its place by its offset, and runs in parallel). */
static int dir_of(const iop_op_t *op)
{
    switch (op->kind) {
    case IOP_OP_ACCEPT: case IOP_OP_RECV: case IOP_OP_RECV_BUF: case IOP_OP_RECVMSG:
        return 0;
    case IOP_OP_CONNECT: case IOP_OP_SEND: case IOP_OP_SENDMSG:
        return 1;
    case IOP_OP_READ:
        return op->u.rw.offset < 0 ? 0 : -1;
    case IOP_OP_WRITE:
        return op->u.rw.offset < 0 ? 1 : -1;
    default:
        return -1;
    }
}

/* op finished without reaching the kernel; poll reports it. */
static void local_complete(uring_state_t *st, iop_op_t *op, int res)
{
    op->backend_u32 = 0;
    op->backend_ptr = (uintptr_t)(intptr_t)res;
    op->next = NULL;
    if (st->local_tail)
        st->local_tail->next = op;
    else
        st->local_head = op;
    st->local_tail = op;
}

/* Every op waiting behind fd's holders fails with res. */
static void fail_waiting(uring_state_t *st, uring_fd_t *f, int res)
{
    for (int d = 0; d < 2; d++) {
        iop_op_t *op = f->dir[d].head;
        f->dir[d].head = f->dir[d].tail = NULL;
        f->dir[d].holder = NULL;
        while (op) {
            iop_op_t *next = op->next;
            local_complete(st, op, res);
            op = next;
        }
    }
}

static int issue(uring_state_t *st, iop_op_t *op);

int uring_submit_op(uring_state_t *st, iop_op_t *op)
{
    op->backend_u32 = 0;
    op->backend_ptr = 0;
    int d = dir_of(op);
    uring_fd_t *f = d >= 0 ? fd_state(st, op->fd) : NULL;
    if (f && f->dir[d].holder) {
        uring_dir_t *q = &f->dir[d];
        op->backend_u32 = OP_WAITING;
        op->next = NULL;
        if (q->tail)
            q->tail->next = op;
        else
            q->head = op;
        q->tail = op;
        st->inflight++;
        /* Its linked timeout goes with it to the kernel; until then the core's. */
        return st->kdl && op->deadline ? 1 : 0;
    }
    int r = issue(st, op);
    if (r == 0) {
        st->inflight++;
        if (f) {
            f->dir[d].holder = op;
        } else if ((op->kind == IOP_OP_READ || op->kind == IOP_OP_WRITE) && (f = fd_state(st, op->fd))) {
            f->positional = 1;   /* in flight untracked: its close must cancel */
        }
    }
    return r;
}

/* op's last CQE is in: the next op waiting in its direction goes to the kernel. */
void uring_op_finished(uring_state_t *st, iop_op_t *op)
{
    int d = dir_of(op);
    uring_fd_t *f = d >= 0 ? fd_state(st, op->fd) : NULL;
    if (!f || f->dir[d].holder != op)
        return;
    uring_dir_t *q = &f->dir[d];
    q->holder = NULL;
    while (q->head) {
        iop_op_t *next = q->head;
        q->head = next->next;
        if (!q->head)
            q->tail = NULL;
        next->backend_u32 = 0;
        int r = issue(st, next);
        if (r == 0) {
            q->holder = next;
            return;
        }
        local_complete(st, next, r);
    }
}

/* Cancel: a target still waiting behind another op never reached the kernel and
 * is taken out of its queue here; one in the kernel gets an async cancel, whose
 * -ENOENT means the target finished and its completion is on its way (-EALREADY). */
static int submit_cancel(uring_state_t *st, iop_op_t *op)
{
    iop_op_t *target = op->u.cancel.target;
    if (target->backend_u32 & OP_WAITING) {
        uring_fd_t *f = fd_state(st, target->fd);
        uring_dir_t *q = f ? &f->dir[dir_of(target)] : NULL;
        iop_op_t *prev = NULL;
        for (iop_op_t *o = q ? q->head : NULL; o; prev = o, o = o->next) {
            if (o != target)
                continue;
            if (prev)
                prev->next = o->next;
            else
                q->head = o->next;
            if (q->tail == o)
                q->tail = prev;
            break;
        }
        local_complete(st, target, -ECANCELED);
        local_complete(st, op, 0);
        return 0;   /* counted in flight by uring_submit_op */
    }
    struct io_uring_sqe *sqe = uring_sqe(st);
    if (!sqe)
        return -EBUSY;
    io_uring_prep_cancel(sqe, target, 0);
    io_uring_sqe_set_data(sqe, op);
    return 0;
}

/* One op to one SQE (two with a deadline). */
static int issue(uring_state_t *st, iop_op_t *op)
{
    if (op->kind == IOP_OP_CANCEL)
        return submit_cancel(st, op);
    /* The whole chain in one submit: a close is up to three linked SQEs, an op
     * with a kernel deadline two. */
    unsigned chain = op->kind == IOP_OP_CLOSE ? CHAIN_MAX : op->deadline && st->kdl ? 2u : 1u;
    if (chain > 1 && uring_room(st, chain) < 0)
        return -EBUSY;
    struct io_uring_sqe *sqe = uring_sqe(st);
    if (!sqe)
        return -EBUSY;
    int fd = op->fd;
    switch (op->kind) {
    case IOP_OP_ACCEPT:
        if (native_multishot(st, op, F_MULTISHOT_ACCEPT))
            io_uring_prep_multishot_accept(sqe, fd, op->u.accept.addr, op->u.accept.addrlen,
                                           SOCK_NONBLOCK | SOCK_CLOEXEC);
        else
            io_uring_prep_accept(sqe, fd, op->u.accept.addr, op->u.accept.addrlen,
                                 SOCK_NONBLOCK | SOCK_CLOEXEC);
        break;
    case IOP_OP_CONNECT:
        io_uring_prep_connect(sqe, fd, op->u.connect.addr, op->u.connect.addrlen);
        break;
    case IOP_OP_RECV:
        io_uring_prep_recv(sqe, fd, op->u.io.buf, op->u.io.len, op->u.io.msg_flags);
        break;
    case IOP_OP_RECV_BUF:
        if (op->u.pooled.buf) {   /* the core lent the buffer: no provided buffers here */
            io_uring_prep_recv(sqe, fd, op->u.pooled.buf, op->u.pooled.len, op->u.pooled.msg_flags);
            break;
        }
        if (native_multishot(st, op, F_MULTISHOT_RECV))
            io_uring_prep_recv_multishot(sqe, fd, NULL, 0, op->u.pooled.msg_flags);
        else
            io_uring_prep_recv(sqe, fd, NULL, st->pool_size, op->u.pooled.msg_flags);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = 0;
        break;
    case IOP_OP_SEND:
        if ((op->opts & IOP_OPT_ZEROCOPY) && (st->feat & F_SEND_ZC) && !(op->deadline && st->kdl) &&
            zerocopy_works(st, fd)) {
            if (op->opts & IOP_OPT_FIXED_BUF)   /* the pages are pinned already */
                io_uring_prep_send_zc_fixed(sqe, fd, op->u.io.buf, op->u.io.len,
                                            op->u.io.msg_flags | MSG_NOSIGNAL, 0, op->buf_index);
            else
                io_uring_prep_send_zc(sqe, fd, op->u.io.buf, op->u.io.len,
                                      op->u.io.msg_flags | MSG_NOSIGNAL, 0);
        } else
            io_uring_prep_send(sqe, fd, op->u.io.buf, op->u.io.len, op->u.io.msg_flags | MSG_NOSIGNAL);
        break;
    case IOP_OP_READ:
        if (op->opts & IOP_OPT_FIXED_BUF)
            io_uring_prep_read_fixed(sqe, fd, op->u.rw.buf, (unsigned)op->u.rw.len, rw_offset(op),
                                     op->buf_index);
        else
            io_uring_prep_read(sqe, fd, op->u.rw.buf, (unsigned)op->u.rw.len, rw_offset(op));
        break;
    case IOP_OP_WRITE:
        if (op->opts & IOP_OPT_SOCKET)   /* the core saw a socket: no SIGPIPE */
            io_uring_prep_send(sqe, fd, op->u.rw.buf, op->u.rw.len, MSG_NOSIGNAL);
        else if (op->opts & IOP_OPT_FIXED_BUF)
            io_uring_prep_write_fixed(sqe, fd, op->u.rw.buf, (unsigned)op->u.rw.len, rw_offset(op),
                                      op->buf_index);
        else
            io_uring_prep_write(sqe, fd, op->u.rw.buf, (unsigned)op->u.rw.len, rw_offset(op));
        break;
    case IOP_OP_RECVMSG:
        io_uring_prep_recvmsg(sqe, fd, op->u.msg.msg, (unsigned)op->u.msg.msg_flags);
        break;
    case IOP_OP_SENDMSG:
        io_uring_prep_sendmsg(sqe, fd, op->u.msg.msg, (unsigned)(op->u.msg.msg_flags | MSG_NOSIGNAL));
        break;
    case IOP_OP_CLOSE:
        return prep_close(st, sqe, op);
    default:
        /* An unused SQE must still go somewhere: make it a no-op nobody hears of. */
        io_uring_prep_nop(sqe);
        io_uring_sqe_set_data64(sqe, UD_IGNORE);
        return -EINVAL;
    }
    /* ioprio is the recv/send flags only for those kinds (accept's are others). */
    if ((op->opts & IOP_OPT_POLL_FIRST) && (op->kind == IOP_OP_RECV || op->kind == IOP_OP_SEND ||
                                            op->kind == IOP_OP_RECVMSG || op->kind == IOP_OP_SENDMSG))
        sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    use_fd(st, sqe, fd);
    io_uring_sqe_set_data(sqe, op);
    if (op->deadline && st->kdl)
        return link_deadline(st, sqe, op);
    return 0;
}

/* Cancels every request on fd and empties its slot, at once: the caller closes fd
 * next, after which "fd" would name another file. */
void uring_forget(uring_state_t *st, int fd, uring_fd_t *f)
{
    int fixed = 0;
    if (f) {
        fail_waiting(st, f, -ECANCELED);
        fixed = f->fixed;
        f->fixed = 0;
        f->mask = f->armed = 0;
        f->token = 0;
    }
    if (!(st->feat & F_CANCEL_FD))
        return;
    struct io_uring_sqe *sqe = uring_sqe(st);
    if (sqe) {
        io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
        io_uring_sqe_set_data64(sqe, UD_IGNORE);
    }
    uring_submit(st);
    if (st->sqpoll)
        uring_sqpoll_settle(st);   /* the cancel must run before the caller's close */
    if (fixed) {
        int minus1 = -1;
        (*st->host->syscalls)++;
        io_uring_register_files_update(&st->ring, (unsigned)(fixed - 1), &minus1, 1);
        st->fixed_free[st->nfixed_free++] = fixed - 1;
    }
}

#define FIXED_SLOTS 4096u
#define FIXED_SLOTS_MIN 16u

/* The sparse table, on first use: FIXED_SLOTS, but the kernel refuses a table
 * longer than RLIMIT_NOFILE allows (EMFILE; 1024 by default), so no more than that,
 * halved again on EMFILE / ENOMEM. A final refusal clears the cap: iop_fd_register
 * then does nothing, and the loop's report says why. */
static int fixed_table(uring_state_t *st)
{
    uint32_t n = FIXED_SLOTS;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < n)
        n = (uint32_t)rl.rlim_cur;
    int r = -EMFILE;
    while (n >= FIXED_SLOTS_MIN) {
        (*st->host->syscalls)++;
        r = io_uring_register_files_sparse(&st->ring, n);
        if (r == 0 || (r != -EMFILE && r != -ENOMEM))
            break;
        n /= 2;
    }
    if (r == 0 && !(st->fixed_free = st->host->alloc(n * sizeof *st->fixed_free))) {
        (*st->host->syscalls)++;
        io_uring_unregister_files(&st->ring);
        r = -ENOMEM;
    }
    if (r < 0) {
        st->feat &= ~F_FIXED_FILES;
        *st->host->caps &= ~IOP_CAP_REGISTERED_FILES;
        return r;
    }
    st->nfixed = n;
    for (uint32_t i = 0; i < n; i++)
        st->fixed_free[i] = (int32_t)(n - 1 - i);
    st->nfixed_free = n;
    return 0;
}

/* Gives fd a slot in the fixed-file table, made sparse on first use. */
int uring_fd_register(uring_state_t *st, int fd, uring_fd_t *f)
{
    if (!(st->feat & F_FIXED_FILES) || !f)
        return 0;
    if (f->fixed)
        return 1;
    if (!st->nfixed) {
        int r = fixed_table(st);
        if (r < 0)
            return r;
    }
    if (!st->nfixed_free)
        return -ENFILE;
    int32_t slot = st->fixed_free[--st->nfixed_free];
    (*st->host->syscalls)++;
    int r = io_uring_register_files_update(&st->ring, (unsigned)slot, &fd, 1);
    if (r < 0) {
        st->fixed_free[st->nfixed_free++] = slot;
        return r;
    }
    f->fixed = slot + 1;
    return 1;
}
