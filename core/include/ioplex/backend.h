/* ioplex — the backend plugin ABI. A backend module sees only this header.
 *
 * A module exports one `const iop_backend_desc_t iop_backend_descriptor`. The loader
 * reads abi_version first and refuses the module before calling any of its code if
 * it differs from IOP_BACKEND_ABI_VERSION. A module links nothing of ioplex: what it
 * needs from the core comes through the iop_backend_host_t it is created with.
 *
 * Readiness backends (select, poll, epoll, sigio) implement watch + poll; the core
 * runs proactor ops over them. Completion backends (uring) also implement submit and
 * report op completions from poll. A backend instance belongs to one loop on one
 * thread; the core never calls it re-entrantly. */
#ifndef IOPLEX_BACKEND_H
#define IOPLEX_BACKEND_H

#include "common.h"
#include "op.h"

#define IOP_BACKEND_ABI_VERSION 1u
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
} iop_backend_host_t;

/* Creation settings (from iop_loop_opts_t). */
typedef struct iop_backend_config {
    uint32_t size;
    uint32_t flags;
    uint32_t entries;
    uint32_t busy_poll_us;
} iop_backend_config_t;

/* One readiness event (fd, revents) or one completion (op, res). */
typedef struct iop_event {
    int32_t fd;
    uint32_t revents;          /* IOP_READ | IOP_WRITE | IOP_ERR | IOP_HUP */
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
     * either may be 0). fd_state is fd's per-fd storage. */
    int (*watch)(void *state, int fd, unsigned old_mask, unsigned new_mask, void *fd_state);
    /* Completion model: start op natively. NULL for readiness backends. */
    int (*submit)(void *state, iop_op_t *op);
    /* Waits up to timeout_ns (-1 = forever, 0 = don't block) and fills up to max
     * events. Returns the count, or -errno (-EINTR counts as 0 events). */
    int (*poll)(void *state, iop_event_t *events, int max, int64_t timeout_ns);
    /* Optional: wake a poll blocked in another thread. NULL = the core's eventfd. */
    int (*wake)(void *state);
} iop_backend_desc_t;

#define IOP_BACKEND_EXPORT IOP_EXPORT

#endif
