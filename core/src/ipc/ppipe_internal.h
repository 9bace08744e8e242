/* Internal: the process pipe's end (ppipe.c: messages and fragments; ppipe_io.c:
 * one datagram in or out, waiting the coroutine way or the poll(2) way). */
#ifndef IOP_PPIPE_INTERNAL_H
#define IOP_PPIPE_INTERNAL_H

#include <sys/socket.h>
#include <sys/types.h>
#include "ioplex.h"
#include "ioplex/ppipe.h"
#include "ppipe_wire.h"

/* A message begun but not delivered: a deadline struck between its fragments, or it
 * did not fit what the caller offered. The next receive starts from here. */
typedef struct iop__ppipe_part {
    int active;
    uint32_t total;                /* message length */
    uint32_t len;                  /* bytes received so far */
    uint8_t *data;                 /* total bytes */
    int nfds;
    int fds[IOP_PPIPE_MAX_FDS];
} iop__ppipe_part_t;

struct iop_ppipe {
    int fd;
    uint32_t max_msg;
    uint32_t frag_payload;         /* message bytes per fragment */
    iop_loop_t *loop;              /* whose coroutines have parked on fd (forgotten at close) */
    pid_t loop_pid;                /* ... in this process, not in a forked copy */
    iop_mutex_t send_mx, recv_mx;  /* coroutines of this end take turns */
    uint8_t *scratch;              /* frag_payload bytes: a fragment that overflows the room */
    iop__ppipe_part_t part;
};

/* One datagram out (sending) or in, waiting until deadline. Maps a closed peer to
 * -EPIPE. */
ssize_t iop__ppipe_xfer(iop_ppipe_t *p, struct msghdr *m, int flags, int sending,
                        uint64_t deadline);

/* The direction's turn: a coroutine waits for it; plain code gets -EBUSY while a
 * parked coroutine holds it. */
int iop__ppipe_lock(iop_mutex_t *mx, uint64_t deadline);
void iop__ppipe_unlock(iop_mutex_t *mx);

#endif
