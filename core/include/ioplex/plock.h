/* ioplex — robust process lock: mutual exclusion between processes (and threads,
 * and coroutines) that survives the death of its holder.
 *
 * The lock lives in shared memory that every user maps: iop_plock_create() maps a
 * page of its own; iop_plock_init() sets one up in shared memory the caller owns
 * (MAP_SHARED, or a memfd). Either way, before fork: the lock keeps an eventfd
 * that the children inherit.
 *
 * Owner died. When a holder dies (kill -9, a crash, a thread that exits) while it
 * holds the lock, the next locker gets the lock together with the return value
 * IOP_PLOCK_OWNER_DIED instead of 0. The lock itself is then consistent again and
 * works as before, but the data it protects may be half-updated: whatever the dead
 * holder was writing may have stopped at any instruction. Check or repair that data
 * before unlocking; the report is given once, to one locker.
 *
 * Who holds it: a coroutine (iop_self()), or a thread outside any coroutine. Only
 * the holder may unlock (-EPERM otherwise, even from another coroutine of the same
 * thread). A coroutine must unlock before it ends.
 *
 * Waiting. Outside coroutines, lock waits in the kernel (a robust futex: the kernel
 * wakes a waiter as soon as the holder dies). Inside a coroutine, lock never blocks
 * the loop: it parks only the calling coroutine, on the lock's eventfd, where an
 * unlock that sees waiters posts a token (a wake-one semaphore shared by every
 * process). A dead holder posts nothing, so each wait lasts at most a short slice
 * (IOP_PLOCK_SLICE_NS), after which the waiter tries the lock again: a holder's
 * death is noticed within a slice, and a lost token costs at most a slice.
 *
 * A holder that parks (a coroutine that sleeps or does I/O with the lock held) is
 * fine: other coroutines of its process that lock meanwhile park as above, and the
 * loop keeps running them, the holder included. Locking again from the coroutine
 * that holds it returns -EDEADLK, and so does a lock from outside any coroutine on
 * the thread whose coroutine holds it (that wait would block the very loop that
 * must run the holder to its unlock).
 *
 * Deadlines are absolute CLOCK_MONOTONIC ns (iop_now()); 0 = none. Inside a
 * coroutine the scoped deadline (iop_deadline_current()) applies as well. */
#ifndef IOPLEX_PLOCK_H
#define IOPLEX_PLOCK_H

#include <pthread.h>
#include <stdatomic.h>
#include "common.h"

/* lock / trylock: the caller holds the lock, whose previous holder died holding it. */
#define IOP_PLOCK_OWNER_DIED 1

/* The longest a coroutine waits on the eventfd before it tries the lock again. */
#define IOP_PLOCK_SLICE_NS 50000000ull

typedef struct iop_plock {     /* all private; place it in shared memory */
    pthread_mutex_t mu;        /* robust, process-shared, error-checking */
    _Atomic uint32_t waiters;  /* coroutines parked on efd, in every process */
    _Atomic uint32_t posted;   /* a token was posted and no waiter has woken since */
    uint32_t died;             /* an owner death seen by a non-holder, still to report */
    uintptr_t owner;           /* the holder within its thread: coroutine, or 1 */
    int efd;                   /* wake-one tokens (EFD_SEMAPHORE), inherited by fork */
    uint32_t flags;
} iop_plock_t;

/* Sets up a lock in shared memory the caller owns (at least sizeof(iop_plock_t),
 * suitably aligned), unlocked, and opens its eventfd in this process. Before fork;
 * never on a lock in use. 0 or -errno. */
IOP_EXPORT int iop_plock_init(iop_plock_t *l);

/* Closes this process's copy of the eventfd (each process that is done with the
 * lock may call it; no coroutine of the process may be waiting for the lock). A
 * loop that parked coroutines on the lock keeps the fd registered: call fini from a
 * coroutine of that loop (it forgets the fd there), or destroy the loop first. The
 * memory stays the caller's. */
IOP_EXPORT void iop_plock_fini(iop_plock_t *l);

/* The same on a shared page of its own: *out is valid in this process and in every
 * child forked after. 0 or -errno. */
IOP_EXPORT int iop_plock_create(iop_plock_t **out);

/* iop_plock_fini, then unmaps the page in this process (other processes keep
 * theirs). For locks made by iop_plock_create only. */
IOP_EXPORT void iop_plock_free(iop_plock_t *l);

/* Takes the lock, waiting until deadline. 0, IOP_PLOCK_OWNER_DIED (held; see
 * above), -ETIMEDOUT, -ECANCELED (the calling coroutine was cancelled), -EDEADLK
 * (the caller already holds it, or see above), or another -errno. */
IOP_EXPORT int iop_plock_lock(iop_plock_t *l, uint64_t deadline);

/* Takes the lock only if that needs no wait: 0, IOP_PLOCK_OWNER_DIED, -EBUSY (held
 * by someone else), -EDEADLK (by the caller). */
IOP_EXPORT int iop_plock_trylock(iop_plock_t *l);

/* Releases the lock and wakes one waiter. 0, or -EPERM when the caller is not the
 * holder (the lock is left as it was, though a free one is taken for an instant to
 * learn that: a trylock elsewhere may see -EBUSY then). */
IOP_EXPORT int iop_plock_unlock(iop_plock_t *l);

#endif
