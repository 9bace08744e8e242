/* ioplex — the process pipe: a duplex message channel between two processes
 * (Python's multiprocessing.Pipe), able to carry file descriptors.
 *
 * Create it before fork; each process keeps one end and closes the other, so that
 * the end left sees the peer's close or death as -EPIPE. An end belongs to one
 * process (and one thread); its coroutines may share it: sends go out one whole
 * message at a time, receives take turns.
 *
 * Messages keep their boundaries; any size from 0 bytes to max_msg is delivered
 * whole or not at all. Nothing is ever truncated: a message larger than the buffer
 * offered (or carrying more fds than offered) is left first in line, the call
 * returns -EMSGSIZE, and iop_ppipe_peek tells what it needs.
 *
 * Every call that waits takes an absolute deadline (CLOCK_MONOTONIC ns; 0 = none; one
 * already past = try once without waiting). Inside a coroutine it parks only the
 * coroutine (the scope's deadline applies too); outside any it blocks in poll(2).
 * Results: >= 0, or -ETIMEDOUT, -EPIPE (the peer end was closed or its process
 * died), -EMSGSIZE, -ECANCELED (a cancelled coroutine), -EBUSY (plain code while a
 * parked coroutine of this process is halfway through the same direction), -errno. */
#ifndef IOPLEX_PPIPE_H
#define IOPLEX_PPIPE_H

#include <sys/types.h>
#include <sys/uio.h>
#include "common.h"

typedef struct iop_ppipe iop_ppipe_t;

#define IOP_PPIPE_MAX_FDS 253          /* SCM_RIGHTS limit per message */
#define IOP_PPIPE_MAX_IOV 16           /* iovecs per iop_ppipe_sendv */

typedef struct iop_ppipe_opts {
    uint32_t size;                     /* sizeof(iop_ppipe_opts_t) */
    uint32_t flags;                    /* none yet: 0 */
    size_t max_msg;                    /* largest message; 0 = 1 MiB; at most 1 GiB */
} iop_ppipe_opts_t;

/* Makes a connected pair: what is sent on ends[0] is received on ends[1] and the
 * other way round. opts may be NULL. */
IOP_EXPORT int iop_ppipe_create(iop_ppipe_t *ends[2], const iop_ppipe_opts_t *opts);

/* Closes this process's copy of an end and frees it (no coroutine may still be
 * using it). The peer sees -EPIPE once every process holding the end closed it.
 * An end used from coroutines tells their loop to forget its fd: close it before
 * that loop is destroyed (the opposite order would touch the freed loop). */
IOP_EXPORT void iop_ppipe_close(iop_ppipe_t *p);

/* Sends one message; returns len. -EMSGSIZE for len > max_msg. A deadline or a
 * cancel in the middle of a large message withdraws it: the peer never sees any of
 * it (the error is returned and nothing was delivered). */
IOP_EXPORT ssize_t iop_ppipe_send(iop_ppipe_t *p, const void *msg, size_t len, uint64_t deadline);

/* The same with descriptors (duplicated into the peer, close-on-exec there; ours
 * stay open), nfds <= IOP_PPIPE_MAX_FDS. */
IOP_EXPORT ssize_t iop_ppipe_send_fds(iop_ppipe_t *p, const void *msg, size_t len,
                                      const int *fds, int nfds, uint64_t deadline);

/* Gathers one message from iovcnt (<= IOP_PPIPE_MAX_IOV) pieces; fds may be NULL. */
IOP_EXPORT ssize_t iop_ppipe_sendv(iop_ppipe_t *p, const struct iovec *iov, int iovcnt,
                                   const int *fds, int nfds, uint64_t deadline);

/* Receives the next message into buf; returns its length. A message carrying fds is
 * not taken by iop_ppipe_recv (-EMSGSIZE): use iop_ppipe_recv_fds. A deadline in the
 * middle of a large message keeps the part received: the next call goes on. */
IOP_EXPORT ssize_t iop_ppipe_recv(iop_ppipe_t *p, void *buf, size_t cap, uint64_t deadline);

/* The same, also taking up to *nfds descriptors into fds (they are the caller's,
 * close-on-exec); *nfds is set to how many came. -EMFILE when this process's fd
 * table is full as a message with descriptors arrives: the kernel drops them while
 * passing them, and the message is lost (the next call gets the next one). */
IOP_EXPORT ssize_t iop_ppipe_recv_fds(iop_ppipe_t *p, void *buf, size_t cap, int *fds,
                                      int *nfds, uint64_t deadline);

/* Waits for the next message and returns its length without taking it; *nfds (may
 * be NULL) gets the number of descriptors it carries (counted as they arrive, so a
 * peek needs free descriptors for a moment: -EMFILE without them). -EPROTO for a
 * malformed message (a header unlike what came with it): it stays, the next receive
 * drops it with -EPROTO and closes its descriptors. */
IOP_EXPORT ssize_t iop_ppipe_peek(iop_ppipe_t *p, int *nfds, uint64_t deadline);

/* The socket under the end, to watch for readability; do not read or write it. */
IOP_EXPORT int iop_ppipe_fd(const iop_ppipe_t *p);

/* The largest message this pipe carries. */
IOP_EXPORT size_t iop_ppipe_max_msg(const iop_ppipe_t *p);

#endif
