/* ioplex — process queue: Python's multiprocessing.Queue in C. A bounded,
 * multi-producer multi-consumer queue of messages (0 to max_msg bytes each) in
 * shared memory, for processes forked after it was created.
 *
 * Create it before fork; every child forked afterwards uses the same pointer. Each
 * process that is done with it calls iop_pqueue_destroy (the memory goes away with
 * the last one). Messages are copied in by put and out by get; a message goes to
 * exactly one getter, in the order the puts took their places (FIFO from any one
 * producer).
 *
 * Waiting. put waits while the queue is full, get while it is empty, until the
 * deadline: an absolute CLOCK_MONOTONIC time in ns (iop_now()), 0 = no deadline.
 * Inside a coroutine only the coroutine waits (on an eventfd, through the loop: the
 * loop and the process's other coroutines keep running) and the scoped deadline
 * (iop_deadline_current()) applies as well; outside any coroutine the thread
 * sleeps in poll(2). Before sleeping a caller spins briefly, so a busy queue costs
 * no system call per message.
 *
 * Crashes. A process may die at any instruction (kill -9) without wedging the
 * queue or the others: a put it had not returned from is either delivered whole or
 * not at all, a message it was getting is lost with it, everything else arrives
 * exactly once. So may a thread that ends inside a call while its process lives on.
 * A dead process's (or thread's) half-done operation is detected (the thread id is
 * kept in the slot it holds) and cleared by whoever waits on it, within a slice
 * (IOP_PQUEUE_SLICE_NS) of the moment it matters. Caveat: if the dead thread's id
 * is reused by a new thread or process before that, the slot waits until the new
 * one ends (unless the new one is the waiter itself).
 *
 * Every call returns >= 0 or -errno; none is async-signal-safe. */
#ifndef IOPLEX_PQUEUE_H
#define IOPLEX_PQUEUE_H

#include <sys/types.h>
#include "common.h"

typedef struct iop_pqueue iop_pqueue_t;

/* The longest one wait sleeps before the waiter looks at the queue again on its
 * own (a wake-up lost with a killed process costs at most this). */
#define IOP_PQUEUE_SLICE_NS 50000000ull

/* Maps a queue of `capacity` messages (1 .. 2^30) of at most `max_msg` bytes
 * each (up to 64 MiB), with every page allocated now (a lack of memory is an
 * error here, not a SIGBUS later). 0, -EINVAL, -ENOMEM, or another -errno. */
IOP_EXPORT int iop_pqueue_create(iop_pqueue_t **out, size_t capacity, size_t max_msg);

/* Unmaps the queue and closes its eventfds in this process only; other processes
 * keep theirs. Nobody in this process may be using it. A loop whose coroutines
 * waited on the queue has seen those eventfds: destroy that loop first, or call
 * iop_pqueue_forget for it. */
IOP_EXPORT void iop_pqueue_destroy(iop_pqueue_t *q);

/* Makes loop forget the queue's eventfds (iop_fd_forget), before iop_pqueue_destroy
 * while the loop lives on. No coroutine of loop may be waiting on the queue. */
IOP_EXPORT void iop_pqueue_forget(iop_pqueue_t *q, iop_loop_t *loop);

/* Copies len bytes in as one message, waiting for room until deadline. 0,
 * -EMSGSIZE (len > max_msg), -EPIPE (closed), -ETIMEDOUT, -ECANCELED (the calling
 * coroutine was cancelled). */
IOP_EXPORT int iop_pqueue_put(iop_pqueue_t *q, const void *data, size_t len, uint64_t deadline);

/* put without waiting: -EAGAIN instead of waiting. */
IOP_EXPORT int iop_pqueue_try_put(iop_pqueue_t *q, const void *data, size_t len);

/* Takes the oldest message into buf, waiting for one until deadline. Its length,
 * -EMSGSIZE (it is longer than cap: it stays in the queue), -EPIPE (closed and
 * drained), -ETIMEDOUT, -ECANCELED, or -EBADMSG: the oldest slot's length was
 * written over (more than max_msg); that slot is dropped, the next get takes the
 * message after it. */
IOP_EXPORT ssize_t iop_pqueue_get(iop_pqueue_t *q, void *buf, size_t cap, uint64_t deadline);

/* get without waiting: -EAGAIN instead of waiting. */
IOP_EXPORT ssize_t iop_pqueue_try_get(iop_pqueue_t *q, void *buf, size_t cap);

/* Closes the queue for every process: puts fail with -EPIPE from now on, gets
 * take what is left and then fail with -EPIPE; every waiter wakes. */
IOP_EXPORT void iop_pqueue_close(iop_pqueue_t *q);

/* Messages in the queue right now (a snapshot; includes puts under way). */
IOP_EXPORT size_t iop_pqueue_len(const iop_pqueue_t *q);
IOP_EXPORT int iop_pqueue_closed(const iop_pqueue_t *q);
IOP_EXPORT size_t iop_pqueue_capacity(const iop_pqueue_t *q);
IOP_EXPORT size_t iop_pqueue_max_msg(const iop_pqueue_t *q);

#endif
