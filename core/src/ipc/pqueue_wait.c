/* The process queue's waiting: wake-up tokens on an eventfd per direction, sleeping
 * (a coroutine parks on the eventfd through its loop, a plain thread polls it), and
 * telling whether the process that holds a slot is still alive.
 *
 * No lost wake-up: a sleeper registers (waiters++, seq_cst), fences every process
 * (membarrier, where the kernel has it), tries once more, then sleeps; an operation
 * publishes, fences (only a compiler barrier in a process the membarrier covers),
 * then reads waiters. One of the two sees the other. A notifier writes a token only
 * when none is out already (token_out), and whoever wakes clears token_out before
 * looking again, so a burst of operations costs one write, not one per operation;
 * a woken caller that completes passes the wake on when more can proceed
 * (iop__pq_wake). A token lost with a killed process, or a token_out left set by
 * one, costs at most a slice: every sleep ends after IOP_PQUEUE_SLICE_NS and clears
 * token_out. A sleeper killed while registered leaves waiters one too high for
 * good: operations then look at token_out and the ring once more each, nothing
 * worse. */
#include <errno.h>
#include <linux/membarrier.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "ioplex/coro.h"
#include "pqueue_internal.h"

static int membarrier(int cmd)
{
#ifdef SYS_membarrier
    return (int)syscall(SYS_membarrier, cmd, 0, 0);
#else
    (void)cmd;
    errno = ENOSYS;
    return -1;
#endif
}

int iop__pq_membarrier_usable(void)
{
    int cmds = membarrier(MEMBARRIER_CMD_QUERY);
    return cmds > 0 && (cmds & MEMBARRIER_CMD_GLOBAL_EXPEDITED) &&
           membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0;
}

_Thread_local pq_tid_cache_t iop__pq_tid __attribute__((tls_model("initial-exec")));
_Atomic uint32_t iop__pq_epoch = 1;

pid_t iop__pq_self_slow(const iop_pqueue_t *q)
{
    pq_local_t *l = pq_priv(q)->local;
    pid_t tid = (pid_t)syscall(SYS_gettid);
    if (!l)
        return tid;                 /* no wiped page to tell a fork by: no cache */
    if (!atomic_load_explicit(&l->pid, memory_order_relaxed)) {
        /* First call in this process (the page is wiped in every child). Registered
         * before it may skip a fence; threads racing here all register, harmlessly. */
        if (atomic_load_explicit(&q->asym, memory_order_relaxed) &&
            membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0)
            atomic_store_explicit(&l->light, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&iop__pq_epoch, 1, memory_order_relaxed);
        atomic_store_explicit(&l->pid, getpid(), memory_order_relaxed);
    }
    iop__pq_tid.tid = tid;
    iop__pq_tid.epoch = atomic_load_explicit(&iop__pq_epoch, memory_order_relaxed);
    return tid;
}

void iop__pq_heavy_fence(iop_pqueue_t *q)
{
    if (!atomic_load_explicit(&q->asym, memory_order_relaxed))
        return;
    /* Should it ever fail, every process goes back to fencing for itself; a
     * wake-up missed meanwhile costs a slice. */
    if (membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) < 0)
        atomic_store_explicit(&q->asym, 0, memory_order_seq_cst);
}

/* Without pidfds, and for a thread other than a main thread (pidfd_open takes
 * only those): kill(tid, 0) finds any live thread by its id, but a zombie still
 * answers it, so read its state. */
static int tid_dead_procfs(pid_t tid)
{
    if (kill(tid, 0) < 0 && errno == ESRCH)
        return 1;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)tid);
    FILE *f = fopen(path, "re");
    if (!f)
        return errno == ENOENT;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = 0;
    const char *paren = strrchr(line, ')');   /* the name may hold spaces or ')' */
    return paren && (paren[2] == 'Z' || paren[2] == 'X');
}

int iop__pq_tid_dead(pid_t tid)
{
#ifdef SYS_pidfd_open
    int fd = (int)syscall(SYS_pidfd_open, tid, 0);
    if (fd >= 0) {                  /* readable once the process has exited (zombie too) */
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int r = poll(&p, 1, 0);
        close(fd);
        return r > 0;
    }
    if (errno == ESRCH)
        return 1;
#endif
    return tid_dead_procfs(tid);   /* EINVAL: not a main thread */
}

void iop__pq_notify(iop_pqueue_t *q, int dir)
{
    pq_waitset_t *ws = &q->wait[dir];
    if (!atomic_load_explicit(&ws->waiters, memory_order_relaxed) ||
        atomic_load_explicit(&ws->token_out, memory_order_relaxed))
        return;                     /* (a plain look first: a failing CAS costs as much) */
    uint32_t none = 0;
    if (!atomic_compare_exchange_strong(&ws->token_out, &none, 1))
        return;
    uint64_t one = 1;
    /* Can only fail with EAGAIN when ~2^64 tokens wait: enough. */
    ssize_t r = write(pq_priv(q)->efd[dir], &one, sizeof one);
    (void)r;
}

/* Could an operation of direction dir proceed now? (Only a hint for passing a
 * wake-up on.) */
static int can_proceed(const iop_pqueue_t *q, int dir)
{
    const _Atomic uint64_t *ix = dir == PQ_NOT_FULL ? &q->tail : &q->head;
    uint64_t pos = atomic_load_explicit(ix, memory_order_relaxed);
    uint64_t w = atomic_load_explicit(&pq_slot(q, pos)->word, memory_order_relaxed);
    uint32_t want = 2 * (uint32_t)pos + (dir == PQ_NOT_EMPTY);
    return (int32_t)(pq_seq(w) - want) >= 0 || atomic_load_explicit(&q->closed, memory_order_relaxed);
}

void iop__pq_wake(iop_pqueue_t *q, int dir)
{
    if (atomic_load_explicit(&q->wait[dir].waiters, memory_order_relaxed))
        iop__pq_notify(q, dir);
    if (atomic_load_explicit(&q->wait[!dir].waiters, memory_order_relaxed) && can_proceed(q, !dir))
        iop__pq_notify(q, !dir);
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int iop__pq_sleep(iop_pqueue_t *q, int dir, uint64_t until)
{
    uint64_t now = mono_ns();
    if (until && now >= until)
        return -ETIMEDOUT;
    uint64_t end = now + IOP_PQUEUE_SLICE_NS;
    if (until && until < end)
        end = until;
    int efd = pq_priv(q)->efd[dir], r = 0;
    uint64_t token;
    if (iop_self()) {
        ssize_t n = iop_read(efd, &token, sizeof token, end);
        if (n < 0 && n != -ETIMEDOUT && n != -EAGAIN)
            r = (int)n;             /* -ECANCELED, or a broken fd */
    } else {
        struct pollfd p = { .fd = efd, .events = POLLIN };
        uint64_t left = end - now;
        struct timespec ts = { (time_t)(left / 1000000000u), (long)(left % 1000000000u) };
        if (ppoll(&p, 1, &ts, NULL) > 0 && (p.revents & POLLIN)) {
            ssize_t n = read(efd, &token, sizeof token);   /* EAGAIN: another took it */
            (void)n;
        }
    }
    atomic_store_explicit(&q->wait[dir].token_out, 0, memory_order_seq_cst);
    return r;
}
