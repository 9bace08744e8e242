/* ioplex — coroutines: blocking-style code that never blocks the loop.
 *
 * Each loop has one scheduler (made on first use). A coroutine runs on its own stack
 * until it blocks; blocking calls (iop_recv, iop_sleep, iop_chan_recv, ...) submit a
 * proactor op or join a wait list, park the coroutine and let the loop run; the op's
 * completion resumes it. Coroutines never move between threads; a loop and its
 * coroutines belong to the thread that runs the loop.
 *
 * Two styles mix freely:
 *  - gevent style: iop_go() schedules a coroutine; blocking calls switch for you;
 *  - greenlet style: iop_coro_create() makes one that runs only when switched to;
 *    iop_switch(target, value) transfers control explicitly, with a value; when a
 *    coroutine's function returns, control goes to its parent with the return value.
 *
 * Blocking calls return >= 0 or -errno: -ETIMEDOUT when the deadline passes (an
 * absolute time on the loop clock, iop_now(); 0 = none but the scope's), -ECANCELED
 * once the coroutine has been cancelled, -EPERM when called outside a coroutine (the
 * scheduler itself must never block). */
#ifndef IOPLEX_CORO_H
#define IOPLEX_CORO_H

#include <sys/socket.h>
#include <sys/types.h>
#include "common.h"
#include "op.h"

typedef struct iop_coro iop_coro_t;
typedef void *(*iop_coro_fn)(void *arg);

/* iop_coro_opts_t.flags */
#define IOP_CORO_GUARD  0x0u   /* overflow caught by a guard page (default) */
#define IOP_CORO_CANARY 0x1u   /* overflow caught by a canary checked at every switch;
                                * one memory region per stack instead of two. Only an
                                * overflow that writes across the canary is caught: see
                                * core/src/coro/README.md before using it for deep calls */

typedef struct iop_coro_opts {
    uint32_t size;             /* sizeof(iop_coro_opts_t) */
    uint32_t flags;            /* IOP_CORO_* */
    const char *name;          /* for debugging and overflow reports (copied) */
    size_t stack_size;         /* 0 = the scheduler's default (64 KiB) */
    size_t arg_size;           /* > 0: arg points to this many bytes, copied onto the
                                * new coroutine's own stack when it is spawned; fn
                                * gets the copy, so the caller's may go away before
                                * it runs. At most a quarter of the stack. iop_go
                                * only (iop_coro_create refuses it). */
} iop_coro_opts_t;

/* Scheduler settings for a loop, before its first coroutine (optional). */
typedef struct iop_sched_opts {
    uint32_t size;
    uint32_t flags;            /* default IOP_CORO_* for coroutines of this loop */
    size_t stack_size;         /* default stack size, 0 = 64 KiB */
    uint32_t pool_max;         /* stacks kept for reuse, 0 = 1024 */
} iop_sched_opts_t;
IOP_EXPORT int iop_sched_configure(iop_loop_t *loop, const iop_sched_opts_t *opts);

/* ---- life ---------------------------------------------------------------------- */

/* Spawns fn(arg) as a runnable coroutine of loop; it starts at the loop's next turn.
 * *out (may be NULL) names it until it is joined or, if never joined, until it ends
 * (iop_go then frees it at the end: pass out only if you will join). */
IOP_EXPORT int iop_go(iop_loop_t *loop, iop_coro_fn fn, void *arg,
                      const iop_coro_opts_t *opts, iop_coro_t **out);

/* Waits until c ends; *result gets fn's return value. Frees c. From a coroutine it
 * parks; from outside any coroutine it runs the loop until c ends. 0, -ETIMEDOUT at
 * the deadline, -ECANCELED; from main also -EDEADLK as soon as nothing on the loop
 * (an op, a watch, a timer, a queued callback, a post already made) could wake c
 * any more. What another thread will iop_loop_post later is not on the loop yet and
 * does not count: a join waiting for such work needs a deadline (whose timer counts). */
IOP_EXPORT int iop_join(iop_coro_t *c, void **result, uint64_t deadline);

IOP_EXPORT iop_coro_t *iop_self(void);          /* NULL outside a coroutine */
IOP_EXPORT const char *iop_coro_name(const iop_coro_t *c);
IOP_EXPORT iop_loop_t *iop_coro_loop(const iop_coro_t *c);

/* Lets the other runnable coroutines run, then continues. */
IOP_EXPORT int iop_yield(void);

/* Wakes c if it is parked: its blocking call returns -ECANCELED (its op cancelled in
 * the backend first). Every later blocking call of c returns -ECANCELED too, so that
 * it unwinds. 0, or -ESRCH if c has ended. */
IOP_EXPORT int iop_cancel(iop_coro_t *c);
IOP_EXPORT int iop_cancelled(void);             /* has the current coroutine been? */

/* ---- greenlet style ---------------------------------------------------------------- */

/* A coroutine that runs only when switched to; its parent is the caller's coroutine
 * (or the thread's main context outside any), unless opts says otherwise. When it
 * returns, control and its result go to its parent; a parent that ended before it
 * hands that role to its own parent. */
IOP_EXPORT int iop_coro_create(iop_loop_t *loop, iop_coro_fn fn, void *arg,
                               const iop_coro_opts_t *opts, iop_coro_t **out);
IOP_EXPORT int iop_coro_set_parent(iop_coro_t *c, iop_coro_t *parent);   /* NULL = main */

/* Suspends the current coroutine (or the main context) and runs target, handing it
 * value: a target that has not started yet gets it in place of its arg; one
 * suspended in iop_switch gets it as that call's return value. Returns the value of
 * the switch that comes back to us, or the return value of a child that ended and
 * had us as parent. target must be new or suspended in iop_switch (or be iop_main()
 * while that is suspended); otherwise returns NULL with errno = EINVAL. */
IOP_EXPORT void *iop_switch(iop_coro_t *target, void *value);
IOP_EXPORT iop_coro_t *iop_main(void);          /* the thread's main context, as a target */
IOP_EXPORT int iop_coro_done(const iop_coro_t *c);
/* Frees a finished or never-started coroutine; one still running is freed when it
 * ends. One that an iop_join waits on is left to that join, which frees it. */
IOP_EXPORT void iop_coro_free(iop_coro_t *c);

/* ---- I/O: park on a proactor op ------------------------------------------------------ */

IOP_EXPORT ssize_t iop_recv(int fd, void *buf, size_t len, int flags, uint64_t deadline);
IOP_EXPORT ssize_t iop_send(int fd, const void *buf, size_t len, int flags, uint64_t deadline);
IOP_EXPORT ssize_t iop_read(int fd, void *buf, size_t len, uint64_t deadline);
IOP_EXPORT ssize_t iop_write(int fd, const void *buf, size_t len, uint64_t deadline);
/* With ancillary data (SCM_RIGHTS): msg and what it points at stay the caller's. */
IOP_EXPORT ssize_t iop_recvmsg(int fd, struct msghdr *msg, int flags, uint64_t deadline);
IOP_EXPORT ssize_t iop_sendmsg(int fd, const struct msghdr *msg, int flags, uint64_t deadline);
IOP_EXPORT int iop_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, uint64_t deadline);
IOP_EXPORT int iop_connect(int fd, const struct sockaddr *addr, socklen_t addrlen, uint64_t deadline);
/* Closes fd through the coroutine's loop, failing its waiters. Outside a coroutine
 * there is no loop to go through: -EPERM and fd stays open (iop_fd_close then). */
IOP_EXPORT int iop_close(int fd);
IOP_EXPORT int iop_sleep(uint64_t ns);          /* at least ns from now; 0 = yield */
/* Parks until fd is ready for events (IOP_READ / IOP_WRITE), for calls the proactor
 * does not cover (sendfile, splice ...) on a non-blocking fd. Returns the readiness
 * seen (> 0, may include IOP_ERR / IOP_HUP), -ETIMEDOUT, -ECANCELED, or -EEXIST when
 * the fd already has a watch in this loop (another coroutine waiting on it). */
IOP_EXPORT int iop_wait_fd(int fd, unsigned events, uint64_t deadline);
IOP_EXPORT int iop_sleep_until(uint64_t deadline);

/* ---- receive streams: one multishot receive per connection ------------------------------
 *
 * A receive that stays armed: one multishot recv_buf op on fd (the loop needs a
 * receive pool, iop_loop_opts_t.buf_count), whose results wait in the stream until
 * the coroutine takes them. With io_uring's provided buffers (IOP_CAP_PROVIDED_BUFFERS)
 * the kernel receives into a pool buffer as data arrives and nothing is armed per
 * read; elsewhere the core lends the buffers and the results are the same. The
 * record is the caller's (nothing is allocated) and must stay put from open to close;
 * one coroutine uses it; no other receive may run on fd meanwhile. A stream whose
 * coroutine takes its data slower than it comes holds at most a quarter of a pool
 * of 16 buffers or more: it then stops receiving, the data waits in the socket (TCP
 * slows the sender down), and it goes on once the coroutine has taken what it holds,
 * so that one connection cannot leave the others without buffers. */
typedef struct iop_recv_stream {
    iop_op_t op;               /* private, every field: the multishot receive */
    iop_loop_t *loop;
    iop_coro_t *waiter;        /* parked in next or close */
    int fd, flags;
    int16_t end;               /* 1 = running; 2 = ended after data (arm again); else its last result */
    uint16_t gen;              /* the loop's generation of fd when armed: a change means it was closed */
    uint32_t head, tail;       /* queued pool buffers, bid + 1 (0 = none) */
    uint32_t cur;              /* bid + 1 of the buffer the last next returned */
    uint32_t cur_last;         /* where what it returned began in that buffer */
    uint32_t cur_off, cur_len; /* its bytes not handed out yet: [cur_off, cur_len) */
    uint8_t cancel_live;       /* cancels of op in flight: close's, the pause's */
    uint8_t pausing;           /* the series is being stopped for holding its share */
    uint16_t queued;           /* pool buffers in the queue */
} iop_recv_stream_t;

/* Arms the stream on fd (flags: recv flags, usually 0). 0, or -errno: -EINVAL when
 * the loop has no receive pool, -EPERM outside a coroutine. */
IOP_EXPORT int iop_recv_stream_open(iop_recv_stream_t *s, int fd, int flags);
/* The next bytes received, waiting for them until deadline: > 0 with *data
 * pointing at them, valid until the next call on the stream (the pool buffer that
 * held the previous ones goes back then); 0 at end of stream; -errno (-ETIMEDOUT,
 * -ECANCELED, a socket error). Data already queued comes before an error or the
 * end. When the pool has run dry the kernel has nowhere to put data: the stream
 * then receives into buf (len bytes) with one plain recv and *data == buf; with
 * no buf (NULL or len 0) it tries the pool once more and returns -ENOBUFS if
 * that is still dry. */
IOP_EXPORT ssize_t iop_recv_stream_next(iop_recv_stream_t *s, void *buf, size_t len,
                                        const char **data, uint64_t deadline);
/* The caller used only part of what next returned in a pool buffer: its last n
 * bytes come back first from the next call. -EINVAL if n is more than that. */
IOP_EXPORT int iop_recv_stream_unread(iop_recv_stream_t *s, size_t n);
/* Stops the receive, waits until the backend has let go of the record and gives
 * back the buffers still queued (their data is dropped). Runs to the end even in a
 * cancelled coroutine; must come before the record goes and before fd is closed. */
IOP_EXPORT int iop_recv_stream_close(iop_recv_stream_t *s);

/* ---- sends behind: the coroutine goes on while the backend sends ------------------------
 *
 * iop_send parks until the send is done. A server that answers and then reads the
 * next request can instead start the send and go straight to its receive: the send
 * completes in the backend meanwhile, and the coroutine parks once per exchange
 * instead of twice. The record is the caller's (nothing is allocated); buf must stay
 * as it is, and the record where it is, until iop_send_behind_wait has returned.
 * No other send on fd until then: the rest of a short send goes on by itself (not
 * only once waited for), and would come after whatever was sent meanwhile. */
typedef struct iop_send_behind {
    iop_op_t op;               /* private, every field */
    iop_loop_t *loop;
    iop_coro_t *waiter;        /* parked in wait */
    const char *buf;
    size_t len, done;          /* asked, sent so far */
    int fd, flags;
    int res;                   /* the first error, else 0 */
    uint8_t busy;              /* begun and not waited for */
    uint8_t in_flight, cancel_live, due;
    uint8_t stopping;          /* the wait ends it: a short send goes no further */
} iop_send_behind_t;

/* Starts sending len bytes of buf on fd (send flags) and returns without waiting:
 * 0, or -errno (nothing was started; the record is then idle). A record must not be
 * begun again before iop_send_behind_wait has collected it. */
IOP_EXPORT int iop_send_behind(iop_send_behind_t *s, int fd, const void *buf, size_t len, int flags);
/* Waits until every byte is sent (a short send goes on with the rest): len, or
 * -errno (a socket error; -ETIMEDOUT at the deadline, the send then cancelled;
 * iop_send_behind_sent tells how much of it went). 0 for an idle record (zeroed, or
 * already waited for). Like SO_LINGER on a close: a cancel of the coroutine does
 * not cut a send short before its deadline, since its bytes were promised to the
 * peer; with no deadline (deadline 0 and no scope) a cancel cancels it at once
 * (-ECANCELED). */
IOP_EXPORT ssize_t iop_send_behind_wait(iop_send_behind_t *s, uint64_t deadline);
/* After a wait that returned -errno: how many of the bytes the socket took, and so
 * what the peer gets (those, in order, and nothing after). Also after one that
 * returned len (len), or a begin that failed (0); until the record is begun again. */
IOP_EXPORT size_t iop_send_behind_sent(const iop_send_behind_t *s);

/* ---- scoped deadlines (gevent's Timeout) ------------------------------------------------ */

/* Every blocking call of the current coroutine until the matching pop also stops at
 * deadline (the earliest of the nested scopes and the call's own wins). */
IOP_EXPORT void iop_deadline_push(uint64_t deadline);
IOP_EXPORT void iop_deadline_pop(void);
IOP_EXPORT uint64_t iop_deadline_current(void);   /* 0 = none */

/* ---- nursery: structured concurrency ---------------------------------------------------- */

typedef struct iop_nursery {
    iop_loop_t *loop;
    iop_coro_t *children;      /* private: live children */
    uint32_t nchildren;
    iop_coro_t *waiter;        /* private */
} iop_nursery_t;

/* A nursery must be closed (iop_nursery_close) before its memory goes: a child that
 * ends writes to it, so one in a coroutine's frame is closed before that coroutine
 * returns. */
IOP_EXPORT void iop_nursery_init(iop_nursery_t *n, iop_loop_t *loop);
IOP_EXPORT int iop_nursery_go(iop_nursery_t *n, iop_coro_fn fn, void *arg, const iop_coro_opts_t *opts);
/* Waits for every child until deadline, then cancels those left and waits for them
 * to end. 0, or -ETIMEDOUT if some had to be cancelled; from main also -EDEADLK if
 * they were cancelled because nothing pending could ever wake them (as for
 * iop_join: posts from other threads yet to come do not count), and -EBUSY from
 * a loop callback (nothing waited for: close it from elsewhere). */
IOP_EXPORT int iop_nursery_close(iop_nursery_t *n, uint64_t deadline);

/* ---- channels ---------------------------------------------------------------------------- */

typedef struct iop_chan iop_chan_t;
/* cap 0 = unbuffered (a send waits for its receiver). */
IOP_EXPORT int iop_chan_new(iop_chan_t **out, size_t elem_size, size_t cap);
IOP_EXPORT void iop_chan_free(iop_chan_t *ch);   /* no one may be waiting on it */
/* 0, -EPIPE once closed (send), -ETIMEDOUT, -ECANCELED. recv on a closed, drained
 * channel returns -EPIPE. */
IOP_EXPORT int iop_chan_send(iop_chan_t *ch, const void *elem, uint64_t deadline);
IOP_EXPORT int iop_chan_recv(iop_chan_t *ch, void *elem, uint64_t deadline);
IOP_EXPORT void iop_chan_close(iop_chan_t *ch);   /* wakes every waiter */

typedef struct iop_select_case {
    iop_chan_t *ch;
    int send;                  /* 1 = send *elem, 0 = receive into elem */
    void *elem;
    int res;                   /* out: 0 or -EPIPE for the case chosen */
} iop_select_case_t;
/* Waits until one case can proceed, performs it and returns its index; chooses
 * uniformly at random among the cases ready together. -ETIMEDOUT, -ECANCELED. */
IOP_EXPORT int iop_select(iop_select_case_t *cases, int n, uint64_t deadline);

/* ---- synchronisation ----------------------------------------------------------------------- */

typedef struct iop_waitq { void *head, *tail; } iop_waitq_t;   /* private */

typedef struct iop_mutex { iop_coro_t *owner; iop_waitq_t q; } iop_mutex_t;
IOP_EXPORT void iop_mutex_init(iop_mutex_t *m);
/* 0, -ETIMEDOUT, -ECANCELED, or -EDEADLK when the caller already holds m. */
IOP_EXPORT int iop_mutex_lock(iop_mutex_t *m, uint64_t deadline);
IOP_EXPORT int iop_mutex_trylock(iop_mutex_t *m);    /* 0 or -EBUSY; -EPERM outside a coroutine */
IOP_EXPORT int iop_mutex_unlock(iop_mutex_t *m);     /* -EPERM if not the owner */

typedef struct iop_cond { iop_waitq_t q; } iop_cond_t;
IOP_EXPORT void iop_cond_init(iop_cond_t *c);
IOP_EXPORT int iop_cond_wait(iop_cond_t *c, iop_mutex_t *m, uint64_t deadline);
IOP_EXPORT void iop_cond_signal(iop_cond_t *c);
IOP_EXPORT void iop_cond_broadcast(iop_cond_t *c);

typedef struct iop_sem { int64_t count; iop_waitq_t q; } iop_sem_t;
IOP_EXPORT void iop_sem_init(iop_sem_t *s, int64_t count);
IOP_EXPORT int iop_sem_acquire(iop_sem_t *s, uint64_t deadline);
IOP_EXPORT void iop_sem_release(iop_sem_t *s);

typedef struct iop_wg { int64_t count; iop_waitq_t q; } iop_wg_t;
IOP_EXPORT void iop_wg_init(iop_wg_t *wg);
IOP_EXPORT void iop_wg_add(iop_wg_t *wg, int64_t n);
IOP_EXPORT void iop_wg_done(iop_wg_t *wg);
IOP_EXPORT int iop_wg_wait(iop_wg_t *wg, uint64_t deadline);

/* Tests only: the next n cancels that coroutine calls send to the backend (iop_cancel
 * of a parked I/O call, the end of a send behind or of a receive stream) are refused
 * as a backend with a full queue would refuse them, so that their retry runs. n < 0
 * stops it. Returns how many it refused since the previous call; this thread only. */
IOP_EXPORT long iop__cancel_refuse_next(long n);

#endif
