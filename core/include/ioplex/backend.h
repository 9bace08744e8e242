/* ioplex — the backend plugin ABI. A backend module sees only this header.
 *
 * A module exports one `const iop_backend_desc_t iop_backend_descriptor`. The loader
 * reads abi_version first and refuses the module before calling any function of
 * the descriptor if it differs from IOP_BACKEND_ABI_VERSION. (The dynamic linker
 * runs a module's ELF constructors when it maps it, before any check: a module has
 * none it could not do without.) A module links nothing of ioplex: what it
 * needs from the core comes through the iop_backend_host_t it is created with.
 *
 * Readiness backends (select, poll, epoll, sigio) implement watch + poll; the core
 * runs proactor ops over them. Completion backends (uring) also implement submit and
 * report op completions from poll; the core routes every op to them, close and
 * cancel included. A backend instance belongs to one loop on one
 * thread; the core never calls it re-entrantly. */
#ifndef IOPLEX_BACKEND_H
#define IOPLEX_BACKEND_H

#include "common.h"
#include "op.h"

#define IOP_BACKEND_ABI_VERSION 2u
#define IOP_BACKEND_SYMBOL "iop_backend_descriptor"

enum iop_model {
    IOP_MODEL_READINESS = 1,
    IOP_MODEL_COMPLETION = 2
};

/* What the core gives a backend instance. */
typedef struct iop_backend_host {
    void *core;                                   /* pass back to the calls below */
    uint64_t *syscalls;                           /* add one per syscall made */
    void *(*alloc)(size_t size);                  /* the ioplex allocator seam */
    void *(*realloc)(void *ptr, size_t size);
    void (*free)(void *ptr);
    /* fd_state_size bytes of per-fd storage kept by the core, zeroed when the core
     * first sees fd and when it forgets it; NULL if fd has no entry. The pointer is
     * valid until the backend call returns. */
    void *(*fd_state)(void *core, int fd);
    /* Completion backends, on destroy: op will get no callback; the core makes the
     * record idle again. */
    void (*drop)(void *core, iop_op_t *op);
    /* This instance's capabilities, preset to the descriptor's: create clears the
     * bits this kernel or configuration cannot honour. */
    uint32_t *caps;
} iop_backend_host_t;

/* Creation settings (from iop_loop_opts_t). */
typedef struct iop_backend_config {
    uint32_t size;
    uint32_t flags;
    uint32_t entries;
    uint32_t busy_poll_us;
    uint32_t sqpoll_idle_ms;
    uint32_t sqpoll_cpu1;      /* CPU + 1, 0 = unpinned */
} iop_backend_config_t;

/* watch masks: see watch() below */
#define IOP_WATCH_EXCLUSIVE 0x10u

/* iop_event_t.flags (completions) */
#define IOP_EVF_MORE   0x1u    /* the op stays in flight: more completions follow */
#define IOP_EVF_NOTIF  0x2u    /* zero-copy send: buffer released */
#define IOP_EVF_BUFFER 0x4u    /* res bytes landed in pool buffer (flags >> 16) */
#define IOP_EVF_BID(flags) ((flags) >> 16)

/* iop_event_t.revents, besides the IOP_READ..IOP_HUP bits: fd is not open any more
 * (poll's POLLNVAL, select's EBADF). The core fails the fd's ops with -EBADF, gives
 * its watch one IOP_ERR, stops it and unregisters the fd: otherwise a readiness
 * backend would report it (or fail as a whole) on every wait. */
#define IOP_EV_NVAL 0x100u

/* One readiness event (fd, revents) or one completion (op, res). */
typedef struct iop_event {
    int32_t fd;
    uint32_t revents;          /* IOP_READ | IOP_WRITE | IOP_ERR | IOP_HUP | IOP_EV_NVAL */
    iop_op_t *op;              /* completion backends: the op, else NULL */
    int32_t res;
    uint32_t flags;
} iop_event_t;

typedef struct iop_backend_desc {
    uint32_t abi_version;      /* IOP_BACKEND_ABI_VERSION, always first */
    uint32_t desc_size;        /* sizeof(iop_backend_desc_t) */
    const char *name;
    const char *summary;       /* one line for iop-plugins */
    uint32_t model;            /* enum iop_model */
    uint32_t caps;             /* IOP_CAP_* */
    uint32_t fd_state_size;    /* per-fd bytes the core keeps for the backend */
    uint32_t reserved;

    /* Can this backend run here? No side effects beyond what it opens and closes
     * itself. 0, or -errno with a reason written to why. */
    int (*probe)(char *why, size_t whylen);
    /* New instance in *state, or -errno with a reason written to why. */
    int (*create)(void **state, const iop_backend_host_t *host,
                  const iop_backend_config_t *cfg, char *why, size_t whylen);
    void (*destroy)(void *state);
    /* Changes fd's registered interest from old_mask to new_mask (IOP_READ|IOP_WRITE,
     * either may be 0). fd_state is fd's per-fd storage. A backend with
     * IOP_CAP_EXCLUSIVE_WAKE may also get IOP_WATCH_EXCLUSIVE with IOP_READ: only
     * accepts wait on fd, a listener other processes may wait on too, so waking one
     * waiter per connection is enough (EPOLLEXCLUSIVE). */
    int (*watch)(void *state, int fd, unsigned old_mask, unsigned new_mask, void *fd_state);
    /* Completion model: start op natively. NULL for readiness backends. Gets every
     * kind but nop and timeout, and the op options the caps say it has. op->deadline
     * (absolute CLOCK_MONOTONIC ns) is the backend's to enforce only if the instance
     * keeps IOP_CAP_KERNEL_DEADLINES (a deadline that passes completes the op with
     * -ETIMEDOUT); otherwise the core cancels the op when it passes. Such a backend
     * returns 1 for an op it accepts but holds back (queued behind another op on the
     * fd): the core then keeps that op's deadline until it completes. A cancel
     * completes with 0, -ENOENT or -EALREADY for its target; a close first fails
     * every op on the fd with -ECANCELED. A write with IOP_OPT_SOCKET (set by the
     * core) goes to a socket: send it with MSG_NOSIGNAL, as send and sendmsg are. */
    int (*submit)(void *state, iop_op_t *op);
    /* Waits up to timeout_ns (-1 = forever, 0 = don't block) and fills up to max
     * events. Returns the count, or -errno (-EINTR counts as 0 events; -EXDEV says
     * the instance serves only the thread that created it, and the core says so). */
    int (*poll)(void *state, iop_event_t *events, int max, int64_t timeout_ns);
    /* Optional: wake a poll blocked in another thread. NULL = the core's eventfd. */
    int (*wake)(void *state);

    /* --- ABI 2: completion backends; NULL where not offered --- */
    /* fd is about to be closed by the caller: cancel everything in flight on it now
     * (its ops complete with -ECANCELED later, from poll) and drop its registration. */
    void (*forget)(void *state, int fd, void *fd_state);
    /* The receive pool: count buffers of size bytes at base; the backend lends them
     * to recv_buf ops (IOP_CAP_PROVIDED_BUFFERS). buf_return gives one back. */
    int (*buf_pool)(void *state, void *base, uint32_t count, uint32_t size);
    void (*buf_return)(void *state, uint32_t bid);
    /* Registers fd for cheaper ops (IOP_CAP_REGISTERED_FILES): 1, or -errno. */
    int (*fd_register)(void *state, int fd, void *fd_state);

    /* --- optional, read only where desc_size covers it --- */
    /* Destroy in a process forked from the one that created the instance: free its
     * memory and close its own fds, touching nothing the parent shares (an io_uring
     * ring, an epoll set's members, the O_ASYNC of watched files). NULL: the core
     * leaves the instance alone there (its memory stays allocated in the child). */
    void (*abandon)(void *state);
    /* Registers buffers for ops with IOP_OPT_FIXED_BUF (IOP_CAP_REGISTERED_BUFFERS); n
     * == 0 drops them. 0, or -errno: the core then runs such ops as plain ones. */
    int (*buf_register)(void *state, const struct iovec *iov, unsigned n);
} iop_backend_desc_t;

/* The descriptor size of ABI 2 before the optional members: the loader's minimum. */
#define IOP_BACKEND_DESC_MIN_SIZE offsetof(iop_backend_desc_t, abandon)

#define IOP_BACKEND_EXPORT IOP_EXPORT

#endif
