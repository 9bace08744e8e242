/* Internal: the loop's per-fd table, indexed by fd. It holds what waits on each fd
 * (queued ops, one watch), what is registered with the backend, and the backend's own
 * per-fd bytes in a parallel array. Entries are reached by index only: the arrays
 * move when the table grows. */
#ifndef IOP_FDTABLE_H
#define IOP_FDTABLE_H

#include "ioplex/op.h"
#include "ioplex/watch.h"

#define IOP__FD_MAX (1 << 24)   /* fds at or above this are "out of range" */

/* iop__fd_t.flags */
#define IOP__FD_IN_CHANGES 0x01u  /* queued for the pre-poll flush */
#define IOP__FD_RD_EMPTY   0x02u  /* last read drained it: wait for readiness */
#define IOP__FD_WR_FULL    0x04u  /* last write filled it: wait for readiness */
#define IOP__FD_KNOWN      0x08u  /* kind classified (the flags below are valid) */
#define IOP__FD_REGULAR    0x10u  /* regular file / block device: never waits */
#define IOP__FD_BLOCKING   0x20u  /* a blocking non-socket: wait for readiness first */
#define IOP__FD_SOCK_KNOWN 0x40u  /* IOP__FD_SOCKET is valid */
#define IOP__FD_SOCKET     0x80u  /* a socket: write ops go out as send(MSG_NOSIGNAL) */

typedef struct iop__fd {
    iop_op_t *rd_head, *rd_tail;   /* accept, recv, read, recvmsg: FIFO */
    iop_op_t *wr_head, *wr_tail;   /* connect, send, write, sendmsg: FIFO */
    iop_watch_t *watch;
    uint8_t reg;                   /* interest registered with the backend */
    uint8_t flags;
    uint16_t nops;                 /* recv/send ops started, up to IOP__FD_BUSY_OPS */
    uint16_t gen;                  /* bumped each time the loop forgets the fd */
} iop__fd_t;

/* IOP_LOOP_REGISTER_BUSY_FDS registers an fd when its op count reaches this: long
 * enough to skip short-lived connections (a registration is a syscall), soon
 * enough that a keep-alive connection spends almost all its ops registered. */
#define IOP__FD_BUSY_OPS 32u

typedef struct iop__fdtable {
    iop__fd_t *v;
    unsigned char *bstate;         /* cap * bstate_size bytes for the backend */
    uint32_t cap;
    uint32_t bstate_size;
} iop__fdtable_t;

/* Makes fd addressable; 0, -EBADF when out of range, -ENOMEM. */
int iop__fdtable_reserve(iop__fdtable_t *t, int fd);
void iop__fdtable_free(iop__fdtable_t *t);

static inline void *iop__fdtable_bstate(iop__fdtable_t *t, int fd)
{
    return t->bstate_size ? t->bstate + (size_t)fd * t->bstate_size : NULL;
}

/* Back to a fresh entry of the next generation; keeps IN_CHANGES so the change list
 * stays consistent. */
void iop__fdtable_reset(iop__fdtable_t *t, int fd);

#endif
