/* ioplex — the proactor interface: caller-owned operation records.
 *
 * Fill a record with an iop_prep_* call, then iop_submit() it. A submit that returns
 * 0 has accepted the op: its callback then runs exactly once, from the loop (never
 * inside iop_submit), with a result >= 0 or -errno. A submit that returns < 0 has
 * refused it (bad arguments, op already in flight) and no callback will run.
 * The record and every buffer it points at belong to the caller and must stay valid
 * until the callback runs; the callback may resubmit or free the record.
 *
 * Results: accept → new fd (non-blocking, close-on-exec); connect → 0; recv/read/
 * recvmsg → bytes (0 = end of file); send/write/sendmsg → bytes; close → 0;
 * timeout → 0 when it expires; cancel → 0 when the target was cancelled (the target
 * then completes with -ECANCELED), -ENOENT when the target is not in flight,
 * -EALREADY when it has finished and only its callback is pending or another cancel
 * of it is under way (the first cancel's result tells whether it was cancelled).
 * An op whose deadline passes completes with -ETIMEDOUT (a timeout op too, if its
 * deadline comes first); cancel and close ops ignore deadlines.
 *
 * Ops on one fd start in submit order, each direction on its own; like send(2), a
 * send or write may complete short. Several sends queued on one stream socket are
 * therefore not a stream: when the first comes back short, the next one's bytes
 * follow at once, and the first one's remainder, resubmitted from its callback,
 * lands after them. Keep one send in flight per stream socket and resubmit the rest
 * (one coroutine calling iop_send in a loop does), or frame messages so that order
 * does not matter.
 *
 * Multishot ops (iop_op_set_multishot on accept and recv_buf) and zero-copy sends
 * (iop_op_set_zerocopy) may run their callback more than once: while
 * iop_op_more(op) is true inside the callback, another callback for the same record
 * follows and the record stays in flight. The last callback has iop_op_more(op) == 0.
 * A backend without the native feature gets the same contract from the core (a
 * multishot op is rearmed after each result; a zero-copy send is a plain send with
 * one callback). */
#ifndef IOPLEX_OP_H
#define IOPLEX_OP_H

#include <sys/socket.h>
#include <sys/types.h>
#include "common.h"
#include "timer.h"

typedef enum iop_op_kind {
    IOP_OP_NOP = 0,
    IOP_OP_ACCEPT,
    IOP_OP_CONNECT,
    IOP_OP_RECV,
    IOP_OP_SEND,
    IOP_OP_READ,
    IOP_OP_WRITE,
    IOP_OP_RECVMSG,
    IOP_OP_SENDMSG,
    IOP_OP_CLOSE,
    IOP_OP_TIMEOUT,
    IOP_OP_CANCEL,
    IOP_OP_RECV_BUF,           /* recv into a buffer of the loop's pool, chosen at completion */
    IOP_OP_KIND_COUNT
} iop_op_kind_t;

typedef void (*iop_op_cb)(iop_op_t *op, int res);

struct iop_op {
    /* public: set by iop_prep_*, read-only while the op is in flight */
    uint8_t kind;              /* iop_op_kind_t */
    uint8_t state;             /* private: iop_submit's double-submit guard, reset by prep */
    uint8_t opts;              /* IOP_OPT_*, reset by prep */
    uint8_t cflags;            /* IOP_CF_* of the result being delivered */
    uint32_t flags;            /* private */
    int32_t fd;
    uint16_t buf_index;        /* IOP_OPT_FIXED_BUF: the registered buffer holding buf */
    uint16_t reserved;
    iop_op_cb cb;
    void *data;                /* the caller's */
    uint64_t deadline;         /* absolute loop-clock ns, 0 = none */
    union {
        struct { void *buf; size_t len; int msg_flags; } io;            /* recv, send */
        struct { void *buf; size_t len; int64_t offset; } rw;           /* read, write: offset -1 = file position */
        struct { struct msghdr *msg; int msg_flags; } msg;              /* recvmsg, sendmsg */
        struct { struct sockaddr *addr; socklen_t *addrlen; } accept;   /* both may be NULL */
        struct { const struct sockaddr *addr; socklen_t addrlen; } connect;
        struct { uint64_t ns; } timeout;                                /* relative */
        struct { iop_op_t *target; } cancel;
        /* recv_buf: on a result > 0, buf/bid name the pool buffer holding it; give it
         * back with iop_buf_release(loop, bid) once done with it. */
        struct { void *buf; uint32_t bid; int msg_flags; uint32_t len; } pooled;
    } u;
    /* private to the core and the backend */
    iop_loop_t *loop;
    iop_op_t *next;
    int32_t res;
    uint32_t backend_u32;
    uintptr_t backend_ptr;
    iop_timer_t timer;         /* timeout ops and deadlines */
};

/* iop_op_t.opts: asked for after prep, before submit. */
#define IOP_OPT_MULTISHOT 0x01u    /* accept, recv_buf: keep delivering results */
#define IOP_OPT_ZEROCOPY  0x02u    /* send: no copy; the buffer is the kernel's until !more */
#define IOP_OPT_POLL_FIRST 0x04u   /* recv/send/recv_buf: expect to wait, skip the first try */
#define IOP_OPT_FIXED_BUF  0x10u   /* recv/send/read/write: buf lies in registered buffer buf_index */
/* Set by the core on a write (no offset) to a socket: a backend sends it with
 * MSG_NOSIGNAL, so a reset peer gives -EPIPE instead of SIGPIPE. A write to a pipe
 * nobody reads raises SIGPIPE as write(2) does: ignore SIGPIPE to get -EPIPE. */
#define IOP_OPT_SOCKET     0x08u

/* iop_op_t.cflags: what the callback being run delivers. */
#define IOP_CF_MORE  0x01u         /* another callback follows for this record */
#define IOP_CF_NOTIF 0x02u         /* zero-copy send: the buffer is the caller's again */

/* Submit a prepared op to loop. 0 = accepted; -EBUSY = this record is already in
 * flight; -EBADF = fd out of range; -EINVAL = malformed op. */
IOP_EXPORT int iop_submit(iop_loop_t *loop, iop_op_t *op);

/* Name of an op kind ("recv", ...). */
IOP_EXPORT const char *iop_op_kind_name(int kind);

/* Non-zero between an accepted submit and the start of the op's last callback. */
static inline int iop_op_in_flight(const iop_op_t *op) { return op->state == 0x5a; }

/* Inside a callback: does another callback follow for this record? */
static inline int iop_op_more(const iop_op_t *op) { return op->cflags & IOP_CF_MORE; }

static inline void iop_op_set_multishot(iop_op_t *op) { op->opts |= IOP_OPT_MULTISHOT; }
static inline void iop_op_set_zerocopy(iop_op_t *op) { op->opts |= IOP_OPT_ZEROCOPY; }
/* The op's buffer lies inside buffer `index` of the loop's registered set
 * (iop_buf_register); iop_submit refuses it with -EINVAL otherwise. Natively (io_uring)
 * a read or write then runs as READ_FIXED / WRITE_FIXED and a zero-copy send uses the
 * registered pages; a recv, a plain send and a write to a socket, and every op on a
 * backend without IOP_CAP_REGISTERED_BUFFERS, run as they would without it. */
static inline void iop_op_set_fixed_buf(iop_op_t *op, uint16_t index)
{
    op->opts |= IOP_OPT_FIXED_BUF;
    op->buf_index = index;
}

/* Every iop_prep_* makes the record a fresh, idle op: that is how a record on the
 * stack or from malloc becomes usable. Re-preparing a record that is still in flight
 * is a caller bug ioplex cannot see; submitting it twice without re-preparing is
 * refused with -EBUSY. */
static inline void iop__prep(iop_op_t *op, int kind, int fd, iop_op_cb cb, void *data)
{
    op->state = 0;
    op->opts = 0;
    op->cflags = 0;
    op->flags = 0;
    op->kind = (uint8_t)kind;
    op->fd = fd;
    op->cb = cb;
    op->data = data;
    op->deadline = 0;
}

static inline void iop_prep_nop(iop_op_t *op, iop_op_cb cb, void *data)
{ iop__prep(op, IOP_OP_NOP, -1, cb, data); }

static inline void iop_prep_accept(iop_op_t *op, int fd, struct sockaddr *addr,
                                   socklen_t *addrlen, iop_op_cb cb, void *data)
{ iop__prep(op, IOP_OP_ACCEPT, fd, cb, data); op->u.accept.addr = addr; op->u.accept.addrlen = addrlen; }

static inline void iop_prep_connect(iop_op_t *op, int fd, const struct sockaddr *addr,
                                    socklen_t addrlen, iop_op_cb cb, void *data)
{ iop__prep(op, IOP_OP_CONNECT, fd, cb, data); op->u.connect.addr = addr; op->u.connect.addrlen = addrlen; }

static inline void iop_prep_recv(iop_op_t *op, int fd, void *buf, size_t len, int flags,
                                 iop_op_cb cb, void *data)
{ iop__prep(op, IOP_OP_RECV, fd, cb, data); op->u.io.buf = buf; op->u.io.len = len; op->u.io.msg_flags = flags; }

static inline void iop_prep_send(iop_op_t *op, int fd, const void *buf, size_t len, int flags,
                                 iop_op_cb cb, void *data)
{ iop__prep(op, IOP_OP_SEND, fd, cb, data); op->u.io.buf = (void *)buf; op->u.io.len = len; op->u.io.msg_flags = flags; }

static inline void iop_prep_read(iop_op_t *op, int fd, void *buf, size_t len, int64_t offset,
                                 iop_op_cb cb, void *data)
{ iop__prep(op, IOP_OP_READ, fd, cb, data); op->u.rw.buf = buf; op->u.rw.len = len; op->u.rw.offset = offset; }

static inline void iop_prep_write(iop_op_t *op, int fd, const void *buf, size_t len, int64_t offset,
                                  iop_op_cb cb, void *data)
{ iop__prep(op, IOP_OP_WRITE, fd, cb, data); op->u.rw.buf = (void *)buf; op->u.rw.len = len; op->u.rw.offset = offset; }

static inline void iop_prep_recvmsg(iop_op_t *op, int fd, struct msghdr *msg, int flags,
                                    iop_op_cb cb, void *data)
{ iop__prep(op, IOP_OP_RECVMSG, fd, cb, data); op->u.msg.msg = msg; op->u.msg.msg_flags = flags; }

static inline void iop_prep_sendmsg(iop_op_t *op, int fd, const struct msghdr *msg, int flags,
                                    iop_op_cb cb, void *data)
{ iop__prep(op, IOP_OP_SENDMSG, fd, cb, data); op->u.msg.msg = (struct msghdr *)msg; op->u.msg.msg_flags = flags; }

/* Receives into a buffer of the loop's pool (see iop_buf_pool in loop.h); the
 * buffer is chosen when data arrives, so idle connections hold none. */
static inline void iop_prep_recv_buf(iop_op_t *op, int fd, int flags, iop_op_cb cb, void *data)
{ iop__prep(op, IOP_OP_RECV_BUF, fd, cb, data); op->u.pooled.buf = NULL; op->u.pooled.bid = 0; op->u.pooled.msg_flags = flags; op->u.pooled.len = 0; }

/* Closes fd after failing every op still waiting on it with -ECANCELED. */
static inline void iop_prep_close(iop_op_t *op, int fd, iop_op_cb cb, void *data)
{ iop__prep(op, IOP_OP_CLOSE, fd, cb, data); }

static inline void iop_prep_timeout(iop_op_t *op, uint64_t ns, iop_op_cb cb, void *data)
{ iop__prep(op, IOP_OP_TIMEOUT, -1, cb, data); op->u.timeout.ns = ns; }

static inline void iop_prep_cancel(iop_op_t *op, iop_op_t *target, iop_op_cb cb, void *data)
{ iop__prep(op, IOP_OP_CANCEL, -1, cb, data); op->u.cancel.target = target; }

/* Gives a prepared op an absolute deadline on the loop clock (see iop_now()). A
 * deadline already passed at submit fails the op with -ETIMEDOUT before it is
 * tried, data waiting or not; a multishot op's deadline ends the whole series. */
static inline void iop_op_set_deadline(iop_op_t *op, uint64_t abs_ns) { op->deadline = abs_ns; }

#endif
