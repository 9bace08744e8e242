/* Internal: the process pool. pool.c (the public calls and the waits), pool_future.c
 * (futures), pool_dispatch.c (the pump: results, deaths, respawns, sending tasks),
 * pool_loop.c (the dispatcher coroutine when the pool runs on a loop) and
 * pool_worker.c (the child side).
 *
 * All state lives in the creating process and is changed by one pump at a time: the
 * dispatcher coroutine when the pool has a loop, else the plain caller inside a pool
 * call. Workers are watched with pidfds (death) and their pipe ends (results), both
 * in one epoll set so that a single fd says "something happened". */
#ifndef IOP_POOL_INTERNAL_H
#define IOP_POOL_INTERNAL_H

#include <sys/types.h>
#include "ioplex.h"
#include "ioplex/pool.h"
#include "ioplex/ppipe.h"

#define IOP__POOL_MSG_MAX 512          /* failure messages, bytes */
#define IOP__POOL_SLICE_NS 100000000ull   /* every wait re-checks at least this often */
#define IOP__POOL_SPAWN_PAUSE_NS 1000000000ull /* after a fork or pipe that failed here */
#define IOP__POOL_SEND_NS 5000000000ull   /* a ready worker that takes longer is stuck */

/* ---- wire: the pool's messages over a worker's pipe ---------------------------------- */

enum { IOP__PM_TASK = 1, IOP__PM_QUIT, IOP__PM_READY, IOP__PM_RESULT, IOP__PM_INIT_FAILED };

typedef struct iop__pool_task_hdr {    /* pool → worker, then the argument */
    uint32_t type;                     /* TASK or QUIT */
    uint32_t pad;
    uint64_t id;
    uint64_t fn;                       /* the iop_pool_fn's bytes: same binary after fork */
} iop__pool_task_hdr_t;

typedef struct iop__pool_result_hdr {  /* worker → pool, then msg_len bytes, then the result */
    uint32_t type;                     /* READY, RESULT or INIT_FAILED */
    int32_t status;
    uint64_t id;
    uint32_t msg_len;
    uint32_t pad;
} iop__pool_result_hdr_t;

/* ---- the task / initializer side of a result ------------------------------------------ */

struct iop_pool_out {
    void *data;
    size_t len;
    char msg[IOP__POOL_MSG_MAX];
};

/* ---- futures ------------------------------------------------------------------------ */

enum { IOP__F_QUEUED = 0, IOP__F_RUNNING, IOP__F_DONE };

struct iop_future {
    iop_pool_t *pool;                  /* NULL once the pool is freed */
    iop_future_t *next;                /* in the queue */
    uint64_t id;
    iop_pool_fn fn;
    void *arg;                         /* copy, freed once delivered */
    size_t arg_len;
    uint8_t state;                     /* IOP__F_* */
    uint8_t abandoned;                 /* freed by its owner before done: the pool frees it */
    uint8_t pinned;                    /* its argument is being sent: do not free yet */
    pid_t worker;
    int res;
    void *result;
    size_t result_len;
    char *error;                       /* NULL = none */
    iop_wg_t wg;                       /* coroutines waiting: count 1 until done */
};

/* Makes f done with res and copies of msg and data (either may be NULL); wakes its
 * waiters and frees it if its owner dropped it. f may be gone on return. */
void iop__future_complete(iop_future_t *f, int res, const char *msg, size_t msg_len,
                          const void *data, size_t len);
/* Frees f if it is dropped, done and not pinned. */
void iop__future_reclaim(iop_future_t *f);

/* ---- workers and the pool ---------------------------------------------------------------- */

enum { IOP__W_EMPTY = 0, IOP__W_STARTING, IOP__W_IDLE, IOP__W_BUSY, IOP__W_EXITING };
enum { IOP__POOL_RUNNING = 0, IOP__POOL_CLOSED, IOP__POOL_TERMINATED, IOP__POOL_BROKEN };

typedef struct iop__pool_worker {
    uint8_t state;                     /* IOP__W_* */
    uint8_t pipe_dead;                 /* EOF or an error on the pipe: send nothing more */
    pid_t pid;
    int pidfd;                         /* -1 without pidfd_open */
    iop_ppipe_t *end;                  /* our end of its pipe */
    uint32_t tasks;                    /* finished by it */
    iop_future_t *task;                /* IOP__W_BUSY: the one it runs */
    char why[IOP__POOL_MSG_MAX];       /* its initializer's failure, if it reported one */
    int why_code;
} iop__pool_worker_t;

struct iop_pool {
    iop_pool_opts_t opts;              /* nworkers, init_attempts and max_msg filled in */
    uint8_t state;                     /* IOP__POOL_* */
    int broken;                        /* the error that broke it */
    char broken_msg[2 * IOP__POOL_MSG_MAX];
    pid_t owner;                       /* the creating process */
    int epfd;
    iop__pool_worker_t *w;
    uint32_t rr;                       /* where the next search for an idle worker starts */
    iop_future_t *qhead, *qtail;
    uint64_t nqueued;
    uint32_t running;                  /* tasks in workers */
    uint64_t next_id;
    uint32_t failed_starts;            /* in a row */
    uint64_t spawn_after;              /* no start before (iop__pool_now); 0 = any time */
    uint8_t creating;                  /* in iop_pool_create: a failed start is its error */
    uint8_t no_pidfd;                  /* pidfd_open is missing: poll with waitpid */
    uint64_t spawned, lost, done;
    uint8_t *rbuf;                     /* results are received here */
    size_t rbuf_cap;
    /* with a loop (pool_loop.c) */
    iop_loop_t *loop;
    iop_coro_t *dispatcher;
    iop_sem_t kick;                    /* wakes the dispatcher */
    iop_wg_t stopped;                  /* count 1 until the dispatcher has ended */
    iop_watch_t watch;                 /* on epfd */
    iop_post_t spawn_post;             /* forks happen in a loop callback, on the main stack */
    uint8_t spawn_posted;
    uint8_t quit;                      /* the dispatcher must end */
};

/* pool_dispatch.c */
void iop__pool_pump(iop_pool_t *p);          /* one round; parks only to send tasks */
int iop__pool_wants_spawn(const iop_pool_t *p);
void iop__pool_spawn_missing(iop_pool_t *p); /* from plain code or a loop callback */
void iop__pool_kill_all(iop_pool_t *p);      /* SIGKILL; they are reaped by later rounds */
int iop__pool_finished(const iop_pool_t *p); /* stopped, no task left, no worker left */
void iop__pool_fail_all(iop_pool_t *p, int err, const char *msg);
uint64_t iop__pool_now(void);

/* pool_loop.c */
int iop__pool_bind(iop_pool_t *p, iop_loop_t *loop);
void iop__pool_kick(iop_pool_t *p);
void iop__pool_request_spawn(iop_pool_t *p); /* posts iop__pool_spawn_missing to the loop */

/* pool_worker.c: the child's life; never returns. */
/* In a process other than the owner (a forked child, a worker): closes this copy's
 * epoll fd and every worker's pidfd and pipe end but keep's (UINT32_MAX: none), and
 * empties the record, so that nothing is closed twice and no call reaches the
 * owner's workers. */
void iop__pool_drop_copy(iop_pool_t *p, uint32_t keep);
_Noreturn void iop__pool_worker_main(iop_pool_t *p, uint32_t slot, iop_ppipe_t *end, pid_t parent);

#endif
