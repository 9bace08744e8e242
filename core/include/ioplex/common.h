/* ioplex — types and constants shared by the user API and the backend ABI. */
#ifndef IOPLEX_COMMON_H
#define IOPLEX_COMMON_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define IOP_EXPORT __attribute__((visibility("default")))
#else
#define IOP_EXPORT
#endif

typedef struct iop_loop iop_loop_t;
typedef struct iop_op iop_op_t;

/* Readiness bits: asked for with IOP_READ / IOP_WRITE, reported with any of them. */
#define IOP_READ  0x1u  /* readable, or a peer closed (read returns 0) */
#define IOP_WRITE 0x2u  /* writable */
#define IOP_ERR   0x4u  /* error pending on the fd (reported, never asked for) */
#define IOP_HUP   0x8u  /* hang-up (reported, never asked for) */

/* Capability bits: what a backend does natively. A missing capability is emulated
 * by the core or refused with -ENOTSUP, never silently ignored. */
#define IOP_CAP_UNLIMITED_FDS    (1u << 0)  /* no FD_SETSIZE-style ceiling */
#define IOP_CAP_O1_POLL          (1u << 1)  /* wait cost independent of watched fds */
#define IOP_CAP_NATIVE_OPS       (1u << 2)  /* proactor ops run in the kernel */
#define IOP_CAP_MULTISHOT_ACCEPT (1u << 3)
#define IOP_CAP_MULTISHOT_RECV   (1u << 4)
#define IOP_CAP_PROVIDED_BUFFERS (1u << 5)
#define IOP_CAP_ZEROCOPY_SEND    (1u << 6)
#define IOP_CAP_REGISTERED_FILES (1u << 7)
#define IOP_CAP_SQPOLL           (1u << 8)
#define IOP_CAP_BUSY_POLL        (1u << 9)
#define IOP_CAP_EXCLUSIVE_WAKE   (1u << 10) /* EPOLLEXCLUSIVE-style shared listeners */
#define IOP_CAP_NEED_REINIT      (1u << 11) /* instance must be rebuilt after fork */
#define IOP_CAP_KERNEL_DEADLINES (1u << 12) /* the backend enforces op deadlines itself */
#define IOP_CAP_REGISTERED_BUFFERS (1u << 13) /* iop_buf_register: buffers mapped once */

/* Loop creation flags (iop_loop_opts_t.flags), passed on to the backend. */
#define IOP_LOOP_SQPOLL (1u << 0)  /* completion backends: a kernel thread polls the
                                    * submission queue (burns a CPU; opt-in) */
#define IOP_LOOP_KERNEL_DEADLINES (1u << 1) /* completion backends: op deadlines as kernel
                                    * timers (io_uring linked timeouts) instead of the
                                    * loop's timer heap; slower, see core/README.md */
#define IOP_LOOP_REGISTER_BUSY_FDS (1u << 2) /* backends with registered files: a socket
                                    * that has carried 32 recv/send ops is registered
                                    * (io_uring fixed file) for cheaper ops after. Every
                                    * socket the loop sees must then be closed through it
                                    * (close op, iop_fd_close) or forgotten first: the
                                    * backend's table would keep it open */

/* Writes a space-separated list of capability names into buf; returns buf. */
IOP_EXPORT char *iop_caps_str(uint32_t caps, char *buf, size_t len);

#endif
