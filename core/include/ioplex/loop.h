/* ioplex — the event loop: one per thread, owning one backend instance.
 *
 * A loop runs timers, the callbacks of completed ops, readiness watches and work
 * posted from other threads. Everything here is called from the loop's own thread
 * except iop_loop_wake, iop_loop_post and iop_loop_stop, which any thread may call. */
#ifndef IOPLEX_LOOP_H
#define IOPLEX_LOOP_H

#include <sys/uio.h>
#include "common.h"

/* Loop creation options. Zero-initialise, set size = sizeof(iop_loop_opts_t), then
 * what you need; every zero field means "the default". */
typedef struct iop_loop_opts {
    uint32_t size;
    uint32_t flags;              /* IOP_LOOP_* */
    const char *backend;         /* name; NULL or "auto" → $IOPLEX_BACKEND → auto */
    const char *plugin_path;     /* ':'-separated dirs searched before the others */
    const char *avoid;           /* ','-separated backends auto must skip; NULL → $IOPLEX_BACKEND_AVOID */
    uint32_t entries;            /* queue depth hint for completion backends */
    uint32_t busy_poll_us;       /* spin this long with a zero timeout before sleeping */
    /* added with backend ABI 2; a caller built before them passes a smaller size */
    uint32_t sqpoll_idle_ms;     /* IOP_LOOP_SQPOLL: kernel thread idle time (default 1000) */
    uint32_t sqpoll_cpu1;        /* IOP_LOOP_SQPOLL: CPU + 1 to pin the kernel thread to; 0 = unpinned */
    uint32_t buf_count;          /* buffers in the receive pool (0 = no pool) */
    uint32_t buf_size;           /* bytes per pool buffer (default 4096) */
} iop_loop_opts_t;

/* iop_loop_opts_t.flags: IOP_LOOP_* in common.h (backends read them too). */


typedef enum iop_run_mode {
    IOP_RUN_DEFAULT = 0,         /* until iop_loop_stop or nothing is left to wait for */
    IOP_RUN_ONCE,                /* one iteration, blocking if nothing is ready (with
                                    nothing pending, until iop_loop_wake / post / stop;
                                    a signal that interrupts the wait does not end it) */
    IOP_RUN_NOWAIT               /* one iteration, never blocking */
} iop_run_mode_t;

typedef struct iop_loop_stats {
    uint64_t iterations;
    uint64_t ops_submitted;
    uint64_t ops_completed;
    uint64_t syscalls;           /* made by the loop and its backend, not by callbacks */
    uint64_t polls;              /* backend waits */
    uint64_t events;             /* readiness events or completions delivered */
    uint64_t timers_fired;
} iop_loop_stats_t;

/* Creates a loop with the backend chosen by opts (NULL = all defaults). On failure
 * returns -errno and leaves a one-line reason in iop_last_error(). */
IOP_EXPORT int iop_loop_create(iop_loop_t **out, const iop_loop_opts_t *opts);

/* Frees the loop. Ops still in flight are dropped without their callbacks (their
 * records are the caller's), and so are posts that have not run yet; fds are not
 * closed. Destroy it on the thread that last ran it: io_uring can cancel the ops
 * still in flight only from that thread (elsewhere they stay marked in flight and
 * the kernel drops them when the ring goes). Not while the loop runs: called
 * from one of its callbacks or coroutines it does nothing but leave -EBUSY's
 * reason in iop_last_error() (stop the loop, destroy it after iop_loop_run), and so
 * does another thread while one runs it. A loop is never shared across
 * fork: in a child, run, iop_submit, iop_watch_start, iop_fd_register and
 * iop_buf_register fail with -ECHILD, iop_fd_forget and iop_buf_release do nothing
 * (iop_fd_close just closes), iop_buf_unregister and destroy free only the core's
 * memory, leaving the parent's backend (an io_uring ring, an epoll set) alone. It waits
 * for threads still inside iop_loop_post / wake / stop on it (a post's callback may
 * run before its poster has returned); none may call them after it begins. */
IOP_EXPORT void iop_loop_destroy(iop_loop_t *loop);

/* Runs the loop. Returns 1 if something is still pending (a watch, a timer, an op),
 * 0 if nothing is, or -errno if the backend failed; -EBUSY from one of its own
 * callbacks or while another thread runs it, -EPERM from inside a coroutine (of
 * any loop). */
IOP_EXPORT int iop_loop_run(iop_loop_t *loop, iop_run_mode_t mode);

/* Makes iop_loop_run return after the current iteration. Thread-safe. Called while
 * the loop is not running, it makes the next iop_loop_run return without waiting:
 * after running what is already due (expired timers, completed ops' callbacks,
 * posts). */
IOP_EXPORT void iop_loop_stop(iop_loop_t *loop);

/* The loop clock: CLOCK_MONOTONIC in ns, cached once per iteration. */
IOP_EXPORT uint64_t iop_now(const iop_loop_t *loop);
IOP_EXPORT uint64_t iop_update_time(iop_loop_t *loop);

/* Wakes a loop blocked in its backend. Thread-safe, async-signal-safe. */
IOP_EXPORT int iop_loop_wake(iop_loop_t *loop);

/* Work posted to a loop from any thread: cb(p) runs on the loop's thread during a
 * later iteration. The record is the caller's until cb runs, and must not be posted
 * again before that (nothing checks it: the loop's list would go round in a
 * circle). 0; -EINVAL for a NULL loop, record or cb (nothing posted); or the
 * -errno of a failed wake-up (posted all the same: it runs once the loop wakes). */
typedef struct iop_post iop_post_t;
typedef void (*iop_post_cb)(iop_post_t *p);
struct iop_post {
    iop_post_cb cb;
    void *data;
    iop_post_t *next;            /* private */
};
IOP_EXPORT int iop_loop_post(iop_loop_t *loop, iop_post_t *p, iop_post_cb cb);

IOP_EXPORT void iop_loop_get_stats(const iop_loop_t *loop, iop_loop_stats_t *out);

/* The backend this loop runs on, its capabilities, and how it was chosen (for auto:
 * which backends were passed over and why). */
IOP_EXPORT const char *iop_loop_backend(const iop_loop_t *loop);
IOP_EXPORT uint32_t iop_loop_caps(const iop_loop_t *loop);
IOP_EXPORT const char *iop_loop_backend_report(const iop_loop_t *loop);

/* The receive pool behind recv_buf ops (sized by opts.buf_count / buf_size): the
 * backend's provided buffers where it has them (IOP_CAP_PROVIDED_BUFFERS), a plain
 * free list otherwise (also when the kernel refused them: the loop's caps then lack
 * the flag and its report says why). iop_buf_release gives buffer bid back after a recv_buf; a
 * bid not lent out (given back already, or never handed over) is ignored. */
IOP_EXPORT void iop_buf_release(iop_loop_t *loop, uint32_t bid);
IOP_EXPORT void *iop_buf_addr(const iop_loop_t *loop, uint32_t bid);
IOP_EXPORT uint32_t iop_buf_size(const iop_loop_t *loop);

/* Registers n buffers (iov[i].iov_base, iov_len: 1 byte to 1 GiB each, n at most
 * IOP_BUF_REGISTER_MAX) for ops that name one (iop_op_set_fixed_buf): io_uring then
 * pins and maps them once instead of on every op. One set per loop. 1 = registered
 * with the backend; 0 = the backend has no such thing, or the kernel refused (a low
 * memlock limit): the set is kept by the core, which checks ops against it and runs
 * them as plain ones (the caps lack IOP_CAP_REGISTERED_BUFFERS, the report says
 * why); -EINVAL for a bad set, -EBUSY if one is registered already, -ENOMEM. The
 * memory stays the caller's and must stay valid until iop_buf_unregister or the
 * loop's destruction. */
#define IOP_BUF_REGISTER_MAX 1024
IOP_EXPORT int iop_buf_register(iop_loop_t *loop, const struct iovec *iov, unsigned n);
/* Drops the set (no op naming one of its buffers may still be in flight). 0, or
 * -ENOENT if none is registered. */
IOP_EXPORT int iop_buf_unregister(iop_loop_t *loop);

/* Registers fd with the backend for cheaper ops on it (io_uring fixed files).
 * 1 = registered, 0 = the backend has no such thing (nothing to do), -errno on
 * failure (the fd then works unregistered): -ENFILE when the table is full (io_uring:
 * 4096 slots, no more than RLIMIT_NOFILE allowed when it was made); if the kernel
 * refuses the table itself, the caps lose IOP_CAP_REGISTERED_FILES and the report
 * says why. iop_fd_forget unregisters. */
IOP_EXPORT int iop_fd_register(iop_loop_t *loop, int fd);

/* An fd the loop has seen (ops, watches) must be forgotten before it is closed
 * outside the loop: ops still waiting on it fail with -ECANCELED and its
 * registration is dropped. iop_fd_close does both, then closes. */
IOP_EXPORT void iop_fd_forget(iop_loop_t *loop, int fd);
IOP_EXPORT int iop_fd_close(iop_loop_t *loop, int fd);

#endif
