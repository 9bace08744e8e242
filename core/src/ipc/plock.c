/* Robust process lock: a robust, process-shared, error-checking pthread mutex, plus
 * an eventfd of wake-one tokens for coroutines that wait without blocking their loop.
 *
 * Ownership without a system call. The mutex knows its owning thread (by TID, kept
 * current across fork by libc), and an error-checking trylock by that thread answers
 * EDEADLK without touching the mutex; the lock's owner field says which coroutine
 * of that thread (or 1: none) took it. So "does the caller hold it?" is one trylock
 * and one compare; gettid() would cost a system call on every unlock. The price is
 * paid by misuse only: an unlock by a non-holder finds a free lock taken for an
 * instant (and given back), so a trylock elsewhere may see -EBUSY meanwhile.
 *
 * Lost wake-ups: a coroutine waiter counts itself in waiters, fences, and tries the
 * lock again before it waits; unlock releases the mutex, fences, and posts a token
 * only if it sees waiters. One of the two always sees the other.
 *
 * Tokens do not pile up: unlock posts only when no token is outstanding (posted),
 * and every waiter that wakes, by a token or at the end of its slice, clears posted
 * before it tries the lock again. So a process killed while counted in waiters
 * costs one stale token, not one per unlock forever; and one killed between taking
 * a token and clearing posted is healed by the next waiter's slice. */
#include <errno.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include "error_internal.h"
#include "ioplex/coro.h"
#include "ioplex/loop.h"
#include "ioplex/plock.h"

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PLOCK_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__) && !defined(PLOCK_TSAN)
#define PLOCK_TSAN 1
#endif
#if PLOCK_TSAN
/* TSan intercepts pthread_mutex_timedlock but not pthread_mutex_clocklock (GCC 12,
 * LLVM 14): without these it sees a lock taken with a deadline as never taken, and
 * reports the data it guards as raced and its unlock as one of a free mutex. The
 * flags are tsan_interface.h's, declared here as fiber.c does (its header trips
 * -Wstrict-prototypes). */
void __tsan_mutex_pre_lock(void *addr, unsigned flags);
void __tsan_mutex_post_lock(void *addr, unsigned flags, int recursion);
#define PLOCK_TSAN_TRY_LOCK (1u << 4)
#define PLOCK_TSAN_TRY_LOCK_FAILED (1u << 5)
#endif

#define PLOCK_MAPPED 0x1u          /* made by iop_plock_create: unmap in free */
#define OWNER_THREAD ((uintptr_t)1) /* held outside any coroutine (never a pointer) */
#define HELD_BY_SIBLING (-EALREADY) /* internal: another context of this thread holds it */

static uintptr_t caller_tag(void)
{
    iop_coro_t *self = iop_self();
    return self ? (uintptr_t)self : OWNER_THREAD;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int iop_plock_init(iop_plock_t *l)
{
    if (!l)
        return iop__fail(-EINVAL, "iop_plock_init: NULL lock");
    pthread_mutexattr_t a;
    int r = pthread_mutexattr_init(&a);
    if (r == 0)
        r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (r == 0)
        r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (r == 0)
        r = pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
    if (r == 0)
        r = pthread_mutex_init(&l->mu, &a);
    pthread_mutexattr_destroy(&a);
    if (r != 0)
        return iop__fail(-r, "iop_plock_init: robust process-shared mutex: %s", iop_strerror(r));
    int efd = eventfd(0, EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) {
        r = -errno;
        pthread_mutex_destroy(&l->mu);
        return iop__fail(r, "iop_plock_init: eventfd: %s", iop_strerror(r));
    }
    atomic_init(&l->waiters, 0);
    atomic_init(&l->posted, 0);
    l->died = 0;
    l->owner = 0;
    l->efd = efd;
    l->flags = 0;
    return 0;
}

void iop_plock_fini(iop_plock_t *l)
{
    if (!l)
        return;
    /* Only this process's fd is closed; the number stays in the shared struct,
     * where the other processes still use their own copies of it. */
    if (l->efd < 0)
        return;
    iop_coro_t *self = iop_self();
    if (self)
        iop_fd_forget(iop_coro_loop(self), l->efd);
    close(l->efd);
}

int iop_plock_create(iop_plock_t **out)
{
    if (!out)
        return iop__fail(-EINVAL, "iop_plock_create: out is NULL");
    size_t len = (size_t)sysconf(_SC_PAGESIZE);
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        int r = -errno;
        return iop__fail(r, "iop_plock_create: mmap of a shared page: %s", iop_strerror(r));
    }
    iop_plock_t *l = p;
    int r = iop_plock_init(l);
    if (r < 0) {
        munmap(p, len);
        return r;
    }
    l->flags |= PLOCK_MAPPED;
    *out = l;
    return 0;
}

void iop_plock_free(iop_plock_t *l)
{
    if (!l)
        return;
    iop_plock_fini(l);
    if (l->flags & PLOCK_MAPPED)
        munmap(l, (size_t)sysconf(_SC_PAGESIZE));
}

/* Records the new holder; reports a death seen earlier by a non-holder's unlock. */
static int take(iop_plock_t *l, uintptr_t tag, int res)
{
    l->owner = tag;
    if (l->died) {
        l->died = 0;
        res = IOP_PLOCK_OWNER_DIED;
    }
    return res;
}

/* Makes a lock whose holder died consistent; its data is the new holder's to check. */
static int recover(iop_plock_t *l, uintptr_t tag)
{
    int r = pthread_mutex_consistent(&l->mu);
    if (r != 0) {                  /* cannot happen for a robust mutex we just got */
        pthread_mutex_unlock(&l->mu);
        return iop__fail(-r, "iop_plock: pthread_mutex_consistent: %s", iop_strerror(r));
    }
    l->died = 0;
    return take(l, tag, IOP_PLOCK_OWNER_DIED);
}

/* Maps the result of a pthread lock call to ours: 0 / OWNER_DIED (held), -EBUSY,
 * -EDEADLK (the caller holds it), HELD_BY_SIBLING, or -errno. */
static int acquired(iop_plock_t *l, uintptr_t tag, int r)
{
    switch (r) {
    case 0:
        return take(l, tag, 0);
    case EOWNERDEAD:
        return recover(l, tag);
    case EBUSY:
        return -EBUSY;
    case EDEADLK:                  /* this thread holds it: which context? */
        return l->owner == tag ? -EDEADLK : HELD_BY_SIBLING;
    case ENOTRECOVERABLE:
        return iop__fail(-ENOTRECOVERABLE, "iop_plock: the lock was left unrecoverable");
    default:
        return -r;
    }
}

int iop_plock_trylock(iop_plock_t *l)
{
    if (!l)
        return iop__fail(-EINVAL, "iop_plock_trylock: NULL lock");
    int r = acquired(l, caller_tag(), pthread_mutex_trylock(&l->mu));
    return r == HELD_BY_SIBLING ? -EBUSY : r;
}

/* Posts a token if someone waits on the eventfd (see the top of the file). */
static void wake_one(iop_plock_t *l)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&l->waiters, memory_order_relaxed) > 0 &&
        atomic_exchange(&l->posted, 1) == 0) {
        uint64_t one = 1;
        ssize_t n = write(l->efd, &one, sizeof one);
        (void)n;                   /* EAGAIN only at 2^64-2 tokens: waiters re-check anyway */
    }
}

/* Waits in the kernel; a dead holder's waiter is woken by the kernel at once. */
static int lock_in_thread(iop_plock_t *l, uint64_t deadline)
{
    int r;
    if (deadline) {
        struct timespec ts = { .tv_sec = (time_t)(deadline / 1000000000u),
                               .tv_nsec = (long)(deadline % 1000000000u) };
#if PLOCK_TSAN
        __tsan_mutex_pre_lock(&l->mu, PLOCK_TSAN_TRY_LOCK);
#endif
        r = pthread_mutex_clocklock(&l->mu, CLOCK_MONOTONIC, &ts);
#if PLOCK_TSAN
        __tsan_mutex_post_lock(&l->mu, r == 0 || r == EOWNERDEAD ? PLOCK_TSAN_TRY_LOCK
                               : PLOCK_TSAN_TRY_LOCK | PLOCK_TSAN_TRY_LOCK_FAILED, 0);
#endif
    } else {
        r = pthread_mutex_lock(&l->mu);
    }
    if (r == ETIMEDOUT)
        return -ETIMEDOUT;
    r = acquired(l, OWNER_THREAD, r);
    if (r == HELD_BY_SIBLING)
        return iop__fail(-EDEADLK, "iop_plock_lock: a coroutine of this thread holds the lock; "
                                   "waiting outside coroutines would block its loop");
    return r;
}

/* Parks the coroutine on the eventfd, a slice at a time, until the lock is taken. */
static int lock_in_coroutine(iop_plock_t *l, uintptr_t tag, uint64_t deadline)
{
    uint64_t scoped = iop_deadline_current();
    uint64_t end = deadline && (!scoped || deadline < scoped) ? deadline : scoped;
    for (;;) {
        atomic_fetch_add(&l->waiters, 1);
        atomic_thread_fence(memory_order_seq_cst);
        int r = acquired(l, tag, pthread_mutex_trylock(&l->mu));
        if (r != -EBUSY && r != HELD_BY_SIBLING) {
            atomic_fetch_sub(&l->waiters, 1);
            return r;
        }
        uint64_t now = mono_ns();
        if (end && now >= end) {
            atomic_fetch_sub(&l->waiters, 1);
            return -ETIMEDOUT;
        }
        uint64_t slice = now + IOP_PLOCK_SLICE_NS;
        uint64_t token;
        ssize_t n = iop_read(l->efd, &token, sizeof token, end && end < slice ? end : slice);
        atomic_store(&l->posted, 0);
        atomic_fetch_sub(&l->waiters, 1);
        if (n == -ETIMEDOUT || n == -EAGAIN || n == -EINTR || n == (ssize_t)sizeof token)
            continue;              /* a token, a slice over, or a spurious wake: try again */
        if (n == -ECANCELED)
            return -ECANCELED;
        return iop__fail(n < 0 ? (int)n : -EIO, "iop_plock_lock: waiting on the eventfd: %s",
                         iop_strerror(n < 0 ? (int)n : EIO));
    }
}

int iop_plock_lock(iop_plock_t *l, uint64_t deadline)
{
    if (!l)
        return iop__fail(-EINVAL, "iop_plock_lock: NULL lock");
    uintptr_t tag = caller_tag();
    int r = acquired(l, tag, pthread_mutex_trylock(&l->mu));
    if (r != -EBUSY && r != HELD_BY_SIBLING)
        return r;
    if (tag != OWNER_THREAD)
        return lock_in_coroutine(l, tag, deadline);
    if (r == HELD_BY_SIBLING)
        return iop__fail(-EDEADLK, "iop_plock_lock: a coroutine of this thread holds the lock; "
                                   "waiting outside coroutines would block its loop");
    return lock_in_thread(l, deadline);
}

int iop_plock_unlock(iop_plock_t *l)
{
    if (!l)
        return iop__fail(-EINVAL, "iop_plock_unlock: NULL lock");
    uintptr_t tag = caller_tag();
    int r = pthread_mutex_trylock(&l->mu);
    if (r == EDEADLK) {            /* this thread holds it */
        if (l->owner != tag)
            return iop__fail(-EPERM, "iop_plock_unlock: another coroutine of this thread holds the lock");
        l->owner = 0;
        pthread_mutex_unlock(&l->mu);
        wake_one(l);
        return 0;
    }
    /* Not ours. The probe may have taken a free lock, or one whose holder died:
     * give it back as it was, keeping the death for the next locker to hear of. */
    if (r == EOWNERDEAD && pthread_mutex_consistent(&l->mu) == 0)
        l->died = 1;
    if (r == 0 || r == EOWNERDEAD) {
        pthread_mutex_unlock(&l->mu);
        wake_one(l);
    }
    return iop__fail(-EPERM, "iop_plock_unlock: the caller does not hold the lock");
}
