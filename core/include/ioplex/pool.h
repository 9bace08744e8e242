/* ioplex — the process pool (Python's multiprocessing.Pool): N forked worker
 * processes run tasks; a task is a function of this binary plus argument bytes
 * (copied), its result is bytes or an error.
 *
 * Each worker talks to the pool over its own process pipe, one task at a time. A
 * worker killed or crashing mid-task fails that task with -ECHILD (the message names
 * the signal or exit status) and is replaced; the other tasks go on. A worker whose
 * initializer fails, or that dies before it is ready, counts as a failed start;
 * init_attempts failed starts in a row break the pool (every task fails with the
 * initializer's error) instead of respawning forever. A start that fails in this
 * process (no memory, fds or processes for the pipe or the fork) counts too, but
 * the next try waits a second, so that a brief shortage does not break the pool
 * (in iop_pool_create it is tried again at once: create then fails with it).
 *
 * Who drives it: with opts.loop (or once any pool call is made from a coroutine, the
 * coroutine's loop) a dispatcher coroutine on that loop sends tasks and collects
 * results while the loop runs; futures are then awaited from coroutines without
 * blocking the loop, or from plain code (which runs the loop meanwhile). Without a
 * loop, the pool progresses inside its own calls (apply_async, waits, join).
 * Workers are forked from plain code or from a loop callback, never from a
 * coroutine's small stack, so a task has the whole main stack.
 *
 * Waits take an absolute deadline (CLOCK_MONOTONIC ns, 0 = none). One pool belongs
 * to one thread of the process that created it; free it before its loop. In any
 * other process (a forked child, or a task in one of its workers) the pool's calls
 * fail with -EPERM and iop_pool_free frees only that process's copy (its memory and
 * fds), leaving the owner's workers alone. Workers get SIGKILL when the thread that
 * forked them ends (PR_SET_PDEATHSIG). */
#ifndef IOPLEX_POOL_H
#define IOPLEX_POOL_H

#include <sys/types.h>
#include "common.h"

typedef struct iop_pool iop_pool_t;
typedef struct iop_future iop_future_t;
typedef struct iop_pool_out iop_pool_out_t;

/* A task, run in a worker: in/len is the argument. Returns 0 (success, the result is
 * what was put in out, possibly nothing) or a negative error code (the failure is
 * reported with the message given to iop_pool_out_error, if any). */
typedef int (*iop_pool_fn)(const void *in, size_t len, iop_pool_out_t *out);

/* Runs once in each new worker before its first task: 0, or a negative error code
 * (with an optional message through iop_pool_out_error) that fails the start. */
typedef int (*iop_pool_init_fn)(void *arg, iop_pool_out_t *out);

typedef struct iop_pool_opts {
    uint32_t size;                     /* sizeof(iop_pool_opts_t) */
    uint32_t nworkers;                 /* 0 = online CPUs */
    uint32_t max_tasks_per_worker;     /* a worker is retired and replaced after this
                                        * many tasks; 0 = never */
    uint32_t init_attempts;            /* failed starts in a row that break the pool; 0 = 3 */
    iop_pool_init_fn initializer;      /* may be NULL */
    void *init_arg;
    size_t max_msg;                    /* largest argument or result; 0 = 1 MiB */
    iop_loop_t *loop;                  /* where the dispatcher runs; NULL = see above */
} iop_pool_opts_t;

/* Forks the workers (they start in the background: a failing initializer shows in
 * the futures, not here). opts may be NULL. */
IOP_EXPORT int iop_pool_create(iop_pool_t **out, const iop_pool_opts_t *opts);

/* Queues fn(arg) (len bytes copied); *out is the caller's to wait on and free.
 * -EPIPE once the pool is closed or terminated; the pool's error once broken;
 * -EMSGSIZE for len > max_msg. */
IOP_EXPORT int iop_pool_apply_async(iop_pool_t *p, iop_pool_fn fn, const void *arg, size_t len,
                                    iop_future_t **out);

/* fn over n items of item_size bytes each: out[i] is item i's future (the caller
 * frees them all, whatever the result). Waits until all are done or the deadline:
 * 0 when every task succeeded, else the first failure in input order, or
 * -ETIMEDOUT (the futures not done yet keep going). If queuing fails, no future is
 * left and out[] is all NULL. */
IOP_EXPORT int iop_pool_map(iop_pool_t *p, iop_pool_fn fn, const void *items, size_t item_size,
                            size_t n, iop_future_t **out, uint64_t deadline);

/* No new tasks; the queued ones still run. */
IOP_EXPORT void iop_pool_close(iop_pool_t *p);

/* After close or terminate: waits until every task is done and every worker has
 * exited and been reaped. 0, -ETIMEDOUT (call again), -EINVAL if still open. */
IOP_EXPORT int iop_pool_join(iop_pool_t *p, uint64_t deadline);

/* Kills the workers at once (SIGKILL); every task not done fails with -ECANCELED. */
IOP_EXPORT void iop_pool_terminate(iop_pool_t *p);

/* Terminates if needed, joins, frees. Futures stay valid (the caller frees them). */
IOP_EXPORT void iop_pool_free(iop_pool_t *p);

typedef struct iop_pool_info {
    uint32_t live;                     /* workers now (starting or ready) */
    uint64_t spawned;                  /* workers forked since creation */
    uint64_t lost;                     /* workers that died unexpectedly */
    uint64_t done;                     /* tasks finished (succeeded or failed) */
    uint64_t queued;                   /* tasks waiting for a worker */
    int broken;                        /* 0, or the error that broke the pool */
} iop_pool_info_t;

/* Counters, and the pids of the live workers (up to cap of them into pids, which
 * may be NULL). Returns the number of live workers. */
IOP_EXPORT int iop_pool_info(const iop_pool_t *p, iop_pool_info_t *info, pid_t *pids, int cap);

/* ---- futures ------------------------------------------------------------------------ */

/* Waits until the task is done or the deadline. Returns 0 (success), the task's
 * error, -ECHILD (its worker died: see iop_future_error), -ECANCELED (terminated),
 * or -ETIMEDOUT (not done yet; wait again or free). In a coroutine it parks. */
IOP_EXPORT int iop_future_wait(iop_future_t *f, uint64_t deadline);

IOP_EXPORT int iop_future_done(const iop_future_t *f);
/* The result bytes of a done future (NULL and 0 if none); valid until freed. */
IOP_EXPORT const void *iop_future_result(const iop_future_t *f, size_t *len);
/* A done future's error message ("" on success). */
IOP_EXPORT const char *iop_future_error(const iop_future_t *f);
/* The worker that ran (or runs) the task, 0 if none yet. */
IOP_EXPORT pid_t iop_future_worker(const iop_future_t *f);
/* Frees f; one not done yet is dropped (its result discarded when it comes). No
 * coroutine may still be waiting on it. */
IOP_EXPORT void iop_future_free(iop_future_t *f);

/* ---- inside a task or initializer ------------------------------------------------- */

/* Sets the result to a copy of data (replacing any earlier one). 0 or -ENOMEM. */
IOP_EXPORT int iop_pool_out_set(iop_pool_out_t *out, const void *data, size_t len);
/* Sets the result to len bytes for the caller to fill; NULL if out of memory. */
IOP_EXPORT void *iop_pool_out_alloc(iop_pool_out_t *out, size_t len);
/* Sets the failure message (printf-style; cut at 512 bytes). */
IOP_EXPORT void iop_pool_out_error(iop_pool_out_t *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
