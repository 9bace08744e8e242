/* The pool's pump: one round of "collect what the workers said, bury the dead,
 * replace them, hand queued tasks to idle workers, let go of the unneeded".
 *
 * Results are read without waiting (a result still arriving waits in its pipe end
 * for the next round). Only sending a task may wait: an idle worker is reading, so
 * that takes as long as the copy, and a worker that does not read for
 * IOP__POOL_SEND_NS is killed as stuck. A death is learnt from the worker's pidfd,
 * never from its pipe alone (a process it forked may hold the pipe open); where
 * pidfd_open is missing (before Linux 5.3, some seccomp filters, valgrind) every
 * round asks waitpid(WNOHANG) instead, and rounds come at least once a slice. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "error_internal.h"
#include "pool_internal.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

_Static_assert(sizeof(iop_pool_fn) <= sizeof(uint64_t), "a task function travels in 8 bytes");

#define EV_PIPE 0u
#define EV_PID 1u

uint64_t iop__pool_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int ep_add(iop_pool_t *p, int fd, uint32_t slot, uint32_t kind)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = ((uint64_t)slot << 1) | kind };
    return epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static void ep_del(iop_pool_t *p, int fd)
{
    (void)epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, NULL);
}

/* ---- the end of a worker ----------------------------------------------------------------- */

/* Only ever a worker of ours: through its pidfd, which names that process even if
 * it was reaped behind our back (SIGCHLD ignored) and its pid reused; else by its
 * pid (never 0 or -1, which mean groups), not reaped yet so still its own. */
static void kill_worker(const iop__pool_worker_t *w)
{
    if (w->pidfd >= 0 && syscall(SYS_pidfd_send_signal, w->pidfd, SIGKILL, NULL, 0) == 0)
        return;
    if (w->pidfd >= 0 && errno != ENOSYS)
        return;                    /* ESRCH: it is gone already */
    if (w->pid > 1)
        kill(w->pid, SIGKILL);
}

static void pipe_dead(iop_pool_t *p, iop__pool_worker_t *w)
{
    if (!w->pipe_dead) {
        w->pipe_dead = 1;
        ep_del(p, iop_ppipe_fd(w->end));   /* an EOF would stay readable for ever */
    }
}

/* Forgets a reaped (or abandoned) worker's descriptors; the slot becomes free. */
static void worker_forget(iop_pool_t *p, iop__pool_worker_t *w)
{
    pipe_dead(p, w);
    if (w->pidfd >= 0) {
        ep_del(p, w->pidfd);
        close(w->pidfd);
    }
    iop_ppipe_close(w->end);
    memset(w, 0, sizeof *w);
    w->pidfd = -1;
}

/* Asks a worker to exit after what it is doing; kills it if it cannot be asked. */
static void retire(iop_pool_t *p, iop__pool_worker_t *w)
{
    iop__pool_task_hdr_t h = { .type = IOP__PM_QUIT };
    if (w->pipe_dead || iop_ppipe_send(w->end, &h, sizeof h, 1) < 0) {
        kill_worker(w);     /* not reaped yet, so the pid is still this worker's */
        pipe_dead(p, w);
    }
    w->state = IOP__W_EXITING;
}

void iop__pool_kill_all(iop_pool_t *p)
{
    for (uint32_t i = 0; i < p->opts.nworkers; i++) {
        iop__pool_worker_t *w = &p->w[i];
        if (w->state != IOP__W_EMPTY) {
            kill_worker(w);
            w->state = IOP__W_EXITING;
        }
    }
}

void iop__pool_fail_all(iop_pool_t *p, int err, const char *msg)
{
    iop_future_t *list = p->qhead;
    p->qhead = p->qtail = NULL;
    p->nqueued = 0;
    for (uint32_t i = 0; i < p->opts.nworkers; i++) {
        iop__pool_worker_t *w = &p->w[i];
        if (w->task) {
            w->task->next = list;
            list = w->task;
            w->task = NULL;
        }
    }
    p->running = 0;
    /* Completing may run waiting coroutines at once: the pool is consistent by now. */
    while (list) {
        iop_future_t *f = list;
        list = f->next;
        f->next = NULL;
        iop__future_complete(f, err, msg, strlen(msg), NULL, 0);
    }
}

static void break_pool(iop_pool_t *p, int err, const char *why)
{
    snprintf(p->broken_msg, sizeof p->broken_msg,
             "pool: %u worker starts failed in a row (no more respawns); the last: %.700s",
             p->failed_starts, why);
    p->broken = err < 0 ? err : -ECHILD;
    p->state = IOP__POOL_BROKEN;
    iop__pool_kill_all(p);
    iop__pool_fail_all(p, p->broken, p->broken_msg);
}

static void failed_start(iop_pool_t *p, int err, const char *why)
{
    p->failed_starts++;
    if (p->failed_starts >= p->opts.init_attempts && p->state < IOP__POOL_TERMINATED)
        break_pool(p, err, why);
}

/* ---- spawning ------------------------------------------------------------------------------ */

static int wants_workers(const iop_pool_t *p)
{
    return !p->quit && (p->state == IOP__POOL_RUNNING || (p->state == IOP__POOL_CLOSED && p->qhead)) &&
           (!p->spawn_after || iop__pool_now() >= p->spawn_after);
}

static int spawn_one(iop_pool_t *p, uint32_t slot)
{
    iop__pool_worker_t *w = &p->w[slot];
    iop_ppipe_t *ends[2];
    iop_ppipe_opts_t po = { .size = sizeof po,
        .max_msg = p->opts.max_msg + sizeof(iop__pool_result_hdr_t) + IOP__POOL_MSG_MAX };
    int r = iop_ppipe_create(ends, &po);
    if (r < 0)
        return r;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        iop_ppipe_close(ends[0]);
        iop__pool_worker_main(p, slot, ends[1], parent);
    }
    iop_ppipe_close(ends[1]);
    if (pid < 0) {
        r = -errno;
        iop_ppipe_close(ends[0]);
        return iop__fail(r, "pool: fork: %s", strerror(-r));
    }
    int pidfd = p->no_pidfd ? -1 : (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0 && !p->no_pidfd && errno != ENOSYS && errno != EPERM)
        r = iop__fail(-errno, "pool: pidfd_open: %s", strerror(errno));
    else if (pidfd < 0)
        p->no_pidfd = 1;           /* waitpid polling from now on */
    if (r == 0 && (pidfd < 0 || (r = ep_add(p, pidfd, slot, EV_PID)) == 0) &&
        (r = ep_add(p, iop_ppipe_fd(ends[0]), slot, EV_PIPE)) < 0 && pidfd >= 0)
        ep_del(p, pidfd);
    if (r < 0) {
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        if (pidfd >= 0)
            close(pidfd);
        iop_ppipe_close(ends[0]);
        return iop__fail(r, "pool: watching worker %d: %s", (int)pid, iop_strerror(r));
    }
    memset(w, 0, sizeof *w);
    w->state = IOP__W_STARTING;
    w->pid = pid;
    w->pidfd = pidfd;
    w->end = ends[0];
    p->spawned++;
    return 0;
}

int iop__pool_wants_spawn(const iop_pool_t *p)
{
    if (!wants_workers(p))
        return 0;
    for (uint32_t i = 0; i < p->opts.nworkers; i++)
        if (p->w[i].state == IOP__W_EMPTY)
            return 1;
    return 0;
}

void iop__pool_spawn_missing(iop_pool_t *p)
{
    for (uint32_t i = 0; i < p->opts.nworkers && wants_workers(p); i++) {
        if (p->w[i].state != IOP__W_EMPTY)
            continue;
        int r = spawn_one(p, i);
        if (r < 0) {
            /* Short of memory, fds or processes here, not in a worker: the next try
             * waits a while, so that a brief shortage does not use up init_attempts
             * in a moment and break the pool for good. */
            if (!p->creating)
                p->spawn_after = iop__pool_now() + IOP__POOL_SPAWN_PAUSE_NS;
            failed_start(p, r, iop_last_error());
        } else {
            p->spawn_after = 0;
        }
    }
}

/* ---- what workers say ------------------------------------------------------------------------- */

static void on_message(iop_pool_t *p, iop__pool_worker_t *w, size_t n)
{
    iop__pool_result_hdr_t h;
    if (n < sizeof h) {
        kill_worker(w);     /* not our protocol: make it a death */
        pipe_dead(p, w);
        return;
    }
    memcpy(&h, p->rbuf, sizeof h);
    const char *msg = (const char *)p->rbuf + sizeof h;
    size_t mlen = h.msg_len <= n - sizeof h ? h.msg_len : n - sizeof h;
    const uint8_t *data = (const uint8_t *)msg + mlen;
    size_t dlen = n - sizeof h - mlen;
    if (h.type == IOP__PM_READY && w->state == IOP__W_STARTING) {
        w->state = IOP__W_IDLE;
        p->failed_starts = 0;
    } else if (h.type == IOP__PM_INIT_FAILED) {
        size_t k = mlen < sizeof w->why - 1 ? mlen : sizeof w->why - 1;
        memcpy(w->why, msg, k);
        w->why[k] = '\0';
        w->why_code = h.status < 0 ? h.status : -ECHILD;
    } else if (h.type == IOP__PM_RESULT) {
        iop_future_t *f = w->task;
        if (w->state != IOP__W_BUSY || !f || f->id != h.id)
            return;                /* a task failed meanwhile (terminate) */
        w->task = NULL;
        w->state = IOP__W_IDLE;
        w->tasks++;
        p->running--;
        p->done++;
        if (p->opts.max_tasks_per_worker && w->tasks >= p->opts.max_tasks_per_worker)
            retire(p, w);
        iop__future_complete(f, h.status, msg, mlen, h.status >= 0 ? data : NULL, dlen);
    }
}

/* Reads every complete message the worker has sent, without waiting. */
static void drain(iop_pool_t *p, iop__pool_worker_t *w)
{
    while (w->state != IOP__W_EMPTY && !w->pipe_dead) {
        ssize_t n = iop_ppipe_recv(w->end, p->rbuf, p->rbuf_cap, 1);
        if (n == -ETIMEDOUT)
            return;                /* nothing complete yet */
        if (n == -EMSGSIZE) {
            ssize_t need = iop_ppipe_peek(w->end, NULL, 1);
            uint8_t *nb = need > (ssize_t)p->rbuf_cap ? iop_realloc(p->rbuf, (size_t)need) : NULL;
            if (nb) {
                p->rbuf = nb;
                p->rbuf_cap = (size_t)need;
                continue;
            }
            n = need > (ssize_t)p->rbuf_cap ? -ENOMEM : -EPROTO;
        }
        if (n < 0) {
            if (n != -EPIPE)
                kill_worker(w);
            pipe_dead(p, w);
            return;
        }
        on_message(p, w, (size_t)n);
    }
}

static void describe(int status, int reaped, char *buf, size_t len)
{
    if (!reaped)
        snprintf(buf, len, "exit status unknown (reaped elsewhere)");
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
}

/* Reaps the worker if it has exited (its pidfd is readable, or we poll) and settles
 * what it leaves: its task, a failed start. */
static void bury(iop_pool_t *p, iop__pool_worker_t *w)
{
    int status = 0;
    pid_t r;
    while ((r = waitpid(w->pid, &status, WNOHANG)) < 0 && errno == EINTR)
        ;
    if (r == 0)
        return;                    /* still running */
    drain(p, w);                   /* what it said before dying counts */
    char how[128], msg[IOP__POOL_MSG_MAX + 128];
    describe(status, r > 0, how, sizeof how);
    pid_t pid = w->pid;
    int state = w->state, code = w->why_code;
    iop_future_t *task = w->task;
    if (code)
        snprintf(msg, sizeof msg, "worker %d: initializer failed: %s", (int)pid,
                 w->why[0] ? w->why : iop_strerror(code));
    worker_forget(p, w);
    if (state == IOP__W_EXITING)
        return;
    p->lost++;
    if (task) {
        p->running--;
        p->done++;
        snprintf(msg, sizeof msg, "pool: worker %d died while running the task: %s", (int)pid, how);
        iop__future_complete(task, -ECHILD, msg, strlen(msg), NULL, 0);
    } else if (state == IOP__W_STARTING) {
        if (!code)
            snprintf(msg, sizeof msg, "worker %d died before it was ready: %s", (int)pid, how);
        failed_start(p, code ? code : -ECHILD, msg);
    }
}

static void handle_events(iop_pool_t *p)
{
    struct epoll_event ev[64];
    int n = epoll_wait(p->epfd, ev, 64, 0);
    for (int pass = 0; pass < 2; pass++) {            /* results before deaths */
        for (int i = 0; i < n; i++) {
            uint32_t slot = (uint32_t)(ev[i].data.u64 >> 1), kind = (uint32_t)(ev[i].data.u64 & 1);
            iop__pool_worker_t *w = &p->w[slot];
            if (w->state == IOP__W_EMPTY)
                continue;
            if (pass == 0 && kind == EV_PIPE)
                drain(p, w);
            else if (pass == 1 && kind == EV_PID)
                bury(p, w);
        }
    }
}

/* ---- handing out tasks ----------------------------------------------------------------------- */

static iop__pool_worker_t *idle_worker(iop_pool_t *p)
{
    for (uint32_t i = 0; i < p->opts.nworkers; i++) {
        uint32_t slot = (p->rr + i) % p->opts.nworkers;
        iop__pool_worker_t *w = &p->w[slot];
        if (w->state == IOP__W_IDLE && !w->pipe_dead) {
            p->rr = slot + 1;
            return w;
        }
    }
    return NULL;
}

static iop_future_t *dequeue(iop_pool_t *p)
{
    iop_future_t *f = p->qhead;
    p->qhead = f->next;
    if (!p->qhead)
        p->qtail = NULL;
    f->next = NULL;
    p->nqueued--;
    return f;
}

static void requeue_first(iop_pool_t *p, iop_future_t *f)
{
    f->state = IOP__F_QUEUED;
    f->worker = 0;
    f->next = p->qhead;
    p->qhead = f;
    if (!p->qtail)
        p->qtail = f;
    p->nqueued++;
}

static uint64_t send_deadline(void)
{
    iop_coro_t *self = iop_self();
    return (self ? iop_now(iop_coro_loop(self)) : iop__pool_now()) + IOP__POOL_SEND_NS;
}

static void send_task(iop_pool_t *p, iop__pool_worker_t *w, iop_future_t *f)
{
    iop__pool_task_hdr_t h = { .type = IOP__PM_TASK, .id = f->id };
    memcpy(&h.fn, &f->fn, sizeof f->fn);
    struct iovec v[2] = { { &h, sizeof h }, { f->arg, f->arg_len } };
    f->state = IOP__F_RUNNING;
    f->worker = w->pid;
    f->pinned = 1;
    w->state = IOP__W_BUSY;
    w->task = f;
    p->running++;
    /* May park (a coroutine) until the worker has read it all; meanwhile terminate
     * may fail f, which then stays ours until unpinned. */
    ssize_t r = iop_ppipe_sendv(w->end, v, 2, NULL, 0, send_deadline());
    f->pinned = 0;
    if (r < 0) {
        if (w->task == f) {        /* never delivered: it goes back to the queue */
            w->task = NULL;
            w->state = IOP__W_IDLE;
            p->running--;
        }
        if (r != -EPIPE)
            kill_worker(w); /* stuck: its death frees the slot */
        pipe_dead(p, w);
    }
    if (f->state != IOP__F_DONE && r < 0) {
        requeue_first(p, f);
        return;
    }
    iop_free(f->arg);              /* delivered (or failed meanwhile): not needed again */
    f->arg = NULL;
    iop__future_reclaim(f);
}

static void dispatch(iop_pool_t *p)
{
    iop__pool_worker_t *w;
    while (p->state <= IOP__POOL_CLOSED && !p->quit && p->qhead && (w = idle_worker(p)) != NULL) {
        iop_future_t *f = dequeue(p);
        if (f->abandoned) {        /* dropped by its owner before it ran */
            f->state = IOP__F_DONE;
            iop__future_reclaim(f);
            continue;
        }
        send_task(p, w, f);
    }
}

/* Closed and out of work: the workers may go. */
static void release_idle(iop_pool_t *p)
{
    if (p->state != IOP__POOL_CLOSED || p->qhead || p->running)
        return;
    for (uint32_t i = 0; i < p->opts.nworkers; i++) {
        iop__pool_worker_t *w = &p->w[i];
        if (w->state == IOP__W_IDLE || w->state == IOP__W_STARTING)
            retire(p, w);
    }
}

int iop__pool_finished(const iop_pool_t *p)
{
    if (p->state == IOP__POOL_RUNNING || p->qhead || p->running)
        return 0;
    for (uint32_t i = 0; i < p->opts.nworkers; i++)
        if (p->w[i].state != IOP__W_EMPTY)
            return 0;
    return 1;
}

void iop__pool_pump(iop_pool_t *p)
{
    handle_events(p);
    for (uint32_t i = 0; p->no_pidfd && i < p->opts.nworkers; i++)
        if (p->w[i].state != IOP__W_EMPTY)
            bury(p, &p->w[i]);
    if (p->loop)
        iop__pool_request_spawn(p);   /* forks happen in a loop callback */
    else
        iop__pool_spawn_missing(p);
    dispatch(p);
    release_idle(p);
}
