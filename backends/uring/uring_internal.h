/* The uring backend's private state, shared by its files. */
#ifndef IOP_URING_INTERNAL_H
#define IOP_URING_INTERNAL_H

#include <liburing.h>
#include "ioplex/backend.h"

/* user_data: op pointers are 8-aligned, so the low 3 bits say what a CQE is for. */
#define UD_OP      0x0u   /* an op's own completion: the op pointer */
#define UD_LINK_TO 0x1u   /* the linked timeout of an op with a deadline */
#define UD_POLL    0x2u   /* a watch's poll: (token << 24 | fd) << 3 */
#define UD_IGNORE  0x3u   /* bookkeeping SQEs (cancel by fd, poll remove): no event */
#define UD_SLOT    0x4u   /* a close's emptying of fixed slot ud >> 3: free once done */
#define UD_TAG(ud) ((unsigned)(ud) & 7u)
#define UD_PTR(ud) ((iop_op_t *)(uintptr_t)((ud) & ~(uint64_t)7))
#define FD_BITS 24

/* Ops of one direction on one fd, in submit order. Only the head is in the kernel:
 * two recvs in flight on one socket are not served in submit order by io_uring, and
 * on a stream that would swap the bytes between them. */
typedef struct uring_dir {
    iop_op_t *holder;        /* in the kernel now */
    iop_op_t *head, *tail;   /* waiting behind it, linked through op->next */
} uring_dir_t;

#define ZC_YES 1u
#define ZC_NO  2u

/* Per fd, kept by the core (fd_state_size). */
typedef struct uring_fd {
    uint64_t token;          /* of the poll in flight, 0 = none */
    uint32_t mask;           /* interest: IOP_READ | IOP_WRITE */
    uint32_t armed;          /* mask of the poll in flight */
    int32_t fixed;           /* fixed-file slot + 1, 0 = not registered */
    uint16_t queued;         /* in the rearm list */
    uint8_t zc;              /* zero-copy send: 0 not known yet, ZC_YES, ZC_NO */
    uint8_t positional;      /* a read or write at an offset was submitted: close cancels */
    uring_dir_t dir[2];      /* 0: accept, recv*, read; 1: connect, send*, write */
} uring_fd_t;

/* op->backend_u32 while a deadline's linked timeout is out: CQEs still to come,
 * whether the timeout fired, and the pool buffer of the op's own CQE (its id in the
 * top 16 bits). op->backend_ptr: the op's own result so far. */
#define LT_PENDING_MASK 0x3u
#define LT_FIRED        0x4u
#define LT_BUFFER       0x10u
#define OP_WAITING      0x8u   /* in a uring_dir_t queue, not in the kernel */

/* Native features found by the probe. */
#define F_MULTISHOT_ACCEPT 0x01u
#define F_MULTISHOT_RECV   0x02u
#define F_BUF_RING         0x04u
#define F_SEND_ZC          0x08u
#define F_CANCEL_FD        0x10u
#define F_REG_RING_FD      0x20u
#define F_FIXED_FILES      0x40u
#define F_FIXED_BUFS       0x80u

typedef struct uring_state {
    struct io_uring ring;
    const iop_backend_host_t *host;
    unsigned feat;           /* F_* */
    int sqpoll;
    int kdl;                 /* IOP_LOOP_KERNEL_DEADLINES: deadlines as linked timeouts */
    int defer;               /* DEFER_TASKRUN: completions run only when we ask for events */
    int disabled;            /* created R_DISABLED: enabled by the first entry, on the loop's thread */
    int first_entry;         /* no entry yet: ring_enable has work to do */
    pid_t creator;           /* the thread that made the ring (gettid) */
    int valgrind;            /* running under valgrind: see wait_in_ppoll, mark_written */
    uint64_t inflight;       /* ops whose last CQE has not come */
    uint64_t poll_seq;       /* next watch token */
    struct __kernel_timespec *ts;   /* one per SQ slot: linked timeout times */

    int32_t *rearm;          /* fds whose one-shot poll must be armed again */
    uint32_t nrearm, rearm_cap;

    struct io_uring_buf_ring *br;   /* provided buffers, group 0 */
    size_t br_bytes;
    unsigned br_mask;
    unsigned char *pool;
    uint32_t pool_size;

    iop_op_t *local_head, *local_tail;  /* finished without the kernel: res in backend_ptr */

    int bufs_registered;     /* iop_buf_register's set is the ring's */
    uint32_t nfixed;         /* slots in the sparse fixed-file table, 0 = none yet */
    int32_t *fixed_free;     /* free slot stack */
    uint32_t nfixed_free;
} uring_state_t;

/* uring.c */
struct io_uring_sqe *uring_sqe(uring_state_t *st);
int uring_room(uring_state_t *st, unsigned n);
#define CHAIN_MAX 3u   /* the longest linked chain: a close (cancel, empty slot, close) */
void uring_count_enter(uring_state_t *st);
int uring_submit(uring_state_t *st);   /* counted; also reaps deferred completions */
void uring_sqpoll_settle(uring_state_t *st);   /* until the SQPOLL thread took the SQ */

/* uring_ops.c */
int uring_submit_op(uring_state_t *st, iop_op_t *op);
void uring_op_finished(uring_state_t *st, iop_op_t *op);
void uring_forget(uring_state_t *st, int fd, uring_fd_t *f);
int uring_fd_register(uring_state_t *st, int fd, uring_fd_t *f);

#endif
