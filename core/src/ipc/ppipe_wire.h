/* Internal: how a process-pipe message travels (ppipe.c; the tests forge it too).
 *
 * The pipe is an AF_UNIX SOCK_SEQPACKET pair, so the kernel keeps each datagram
 * whole. A datagram cannot exceed the socket's send buffer, so a message travels as
 * fragments of at most IOP__PPIPE_FRAG_BYTES, each a header plus a slice of the
 * payload. The first fragment carries the message length and the descriptors. A
 * sender that stops halfway (deadline, cancel) simply starts its next message with a
 * new first fragment: the receiver drops the unfinished one when it sees it, and
 * skips continuation fragments that belong to no message. */
#ifndef IOP_PPIPE_WIRE_H
#define IOP_PPIPE_WIRE_H

#include <stdint.h>

#define IOP__PPIPE_FIRST 0x31465050u   /* "PPF1": first fragment of a message */
#define IOP__PPIPE_MORE  0x4d465050u   /* "PPFM": a continuation */

/* Upper bound of one datagram, header included: small enough for the kernel to build
 * it from order-0 pages plus a 16 KiB head, large enough to amortise the syscall. */
#define IOP__PPIPE_FRAG_BYTES 65536u

typedef struct iop__ppipe_frag {
    uint32_t magic;                /* IOP__PPIPE_FIRST or IOP__PPIPE_MORE */
    uint32_t total;                /* length of the whole message */
    uint32_t offset;               /* where this fragment's payload goes in it */
    uint32_t nfds;                 /* first fragment: descriptors attached to it */
} iop__ppipe_frag_t;

#endif
