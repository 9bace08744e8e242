/* The process pool's public calls, and waiting the three ways: a coroutine parks on
 * a wait group the dispatcher releases; plain code with a loop runs the loop (the
 * dispatcher does the work); plain code without one pumps the pool itself between
 * poll(2)s on its epoll set, at least once per IOP__POOL_SLICE_NS. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>
#include "coro/sched_private.h"
#include "error_internal.h"
#include "pool_internal.h"

#define DEFAULT_MAX_MSG (1u << 20)
#define LIMIT_MAX_MSG ((1u << 30) - 4096)
#define LIMIT_WORKERS 4096
#define FREE_GRACE_NS 5000000000ull

/* A pool's workers, pipes and epoll set belong to the process that created it. A
 * forked child (or a task, in a worker) holds a copy of the record whose use would
 * kill the owner's workers, take its results or unregister its fds from the epoll
 * set they share: its calls fail instead. */
static int foreign(const iop_pool_t *p, const char *call)
{
    pid_t self = getpid();
    if (p->owner == self)
        return 0;
    return iop__fail(-EPERM, "%s: the pool belongs to process %d, not to this one (%d)",
                     call, (int)p->owner, (int)self);
}

/* A call from a coroutine puts the pool on that coroutine's loop (once). */
static int enter(iop_pool_t *p)
{
    iop_coro_t *self = iop_self();
    if (!self)
        return 0;
    iop_loop_t *loop = iop_coro_loop(self);
    if (!p->loop)
        return iop__pool_bind(p, loop);
    if (p->loop != loop)
        return iop__fail(-EINVAL, "pool: used from a coroutine of another loop than its own");
    return 0;
}

static int wait_plain(iop_pool_t *p, int (*done)(void *), void *arg, uint64_t deadline)
{
    for (;;) {
        iop__pool_pump(p);
        if (done(arg))
            return 0;
        uint64_t now = iop__pool_now(), left = IOP__POOL_SLICE_NS;
        if (deadline && now >= deadline)
            return -ETIMEDOUT;
        if (deadline && deadline - now < left)
            left = deadline - now;
        struct pollfd pfd = { .fd = p->epfd, .events = POLLIN };
        (void)poll(&pfd, 1, (int)((left + 999999u) / 1000000u));
    }
}

/* Waits until done(arg); in a coroutine that is when wg reaches 0. */
static int pool_wait(iop_pool_t *p, int (*done)(void *), void *arg, iop_wg_t *wg, uint64_t deadline)
{
    if (done(arg))
        return 0;
    int r = enter(p);
    if (r < 0)
        return r;
    if (iop_self())
        return iop_wg_wait(wg, deadline);
    if (p->loop)
        return iop__run_until(p->loop, done, arg, deadline);
    return wait_plain(p, done, arg, deadline);
}

/* ---- life ------------------------------------------------------------------------------- */

static void opts_fill(iop_pool_opts_t *o, const iop_pool_opts_t *in)
{
    memset(o, 0, sizeof *o);
    if (in) {
        size_t n = in->size && in->size < sizeof *o ? in->size : sizeof *o;
        memcpy(o, in, n);
    }
    o->size = sizeof *o;
    if (!o->nworkers) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        o->nworkers = cpus > 0 ? (uint32_t)cpus : 1;
    }
    if (!o->init_attempts)
        o->init_attempts = 3;
    if (!o->max_msg)
        o->max_msg = DEFAULT_MAX_MSG;
}

int iop_pool_create(iop_pool_t **out, const iop_pool_opts_t *opts)
{
    if (!out)
        return iop__fail(-EINVAL, "iop_pool_create: NULL out");
    *out = NULL;
    iop_pool_opts_t o;
    opts_fill(&o, opts);
    if (o.nworkers > LIMIT_WORKERS || o.max_msg > LIMIT_MAX_MSG)
        return iop__fail(-EINVAL, "iop_pool_create: at most %d workers and max_msg %u",
                         LIMIT_WORKERS, LIMIT_MAX_MSG);
    iop_pool_t *p = iop_calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->opts = o;
    p->owner = getpid();
    p->rbuf_cap = 64 * 1024;
    p->w = iop_calloc(o.nworkers, sizeof *p->w);
    p->rbuf = iop_malloc(p->rbuf_cap);
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    int r = !p->w || !p->rbuf ? -ENOMEM : p->epfd < 0 ? -errno : 0;
    if (r == 0) {
        iop_loop_t *loop = o.loop ? o.loop : iop_self() ? iop_coro_loop(iop_self()) : NULL;
        if (loop)
            r = iop__pool_bind(p, loop);   /* the dispatcher forks them */
        else {
            p->creating = 1;
            iop__pool_spawn_missing(p);
            p->creating = 0;
        }
        if (r == 0 && p->state == IOP__POOL_BROKEN)
            r = iop__fail(p->broken, "%s", p->broken_msg);
    }
    if (r < 0) {
        if (p->w)
            iop__pool_kill_all(p);
        for (uint32_t i = 0; i < o.nworkers && p->w; i++)
            if (p->w[i].state != IOP__W_EMPTY) {
                while (waitpid(p->w[i].pid, NULL, 0) < 0 && errno == EINTR)
                    ;
                if (p->w[i].pidfd >= 0)
                    close(p->w[i].pidfd);
                iop_ppipe_close(p->w[i].end);
            }
        if (p->epfd >= 0)
            close(p->epfd);
        iop_free(p->w);
        iop_free(p->rbuf);
        iop_free(p);
        return r;
    }
    *out = p;
    return 0;
}

void iop_pool_close(iop_pool_t *p)
{
    if (!p || foreign(p, "iop_pool_close") < 0)
        return;
    if (p->state == IOP__POOL_RUNNING) {
        p->state = IOP__POOL_CLOSED;
        iop__pool_kick(p);
    }
}

void iop_pool_terminate(iop_pool_t *p)
{
    if (!p || foreign(p, "iop_pool_terminate") < 0)
        return;
    if (p->state >= IOP__POOL_TERMINATED)
        return;
    p->state = IOP__POOL_TERMINATED;
    iop__pool_kill_all(p);
    iop__pool_fail_all(p, -ECANCELED, "pool: terminated before the task was done");
    iop__pool_kick(p);
}

static int join_done(void *arg)
{
    iop_pool_t *p = arg;
    return p->loop ? p->stopped.count == 0 : iop__pool_finished(p);
}

int iop_pool_join(iop_pool_t *p, uint64_t deadline)
{
    if (!p)
        return iop__fail(-EINVAL, "iop_pool_join: NULL pool");
    if (foreign(p, "iop_pool_join") < 0)
        return -EPERM;
    if (p->state == IOP__POOL_RUNNING)
        return iop__fail(-EINVAL, "iop_pool_join: close or terminate the pool first");
    int r = enter(p);
    if (r == 0)
        r = pool_wait(p, join_done, p, &p->stopped, deadline);
    if (r == 0 && p->dispatcher) {
        iop_join(p->dispatcher, NULL, 0);   /* it has ended: this only frees it */
        p->dispatcher = NULL;
    }
    return r;
}

void iop__pool_drop_copy(iop_pool_t *p, uint32_t keep)
{
    if (p->epfd >= 0)
        close(p->epfd);
    p->epfd = -1;
    for (uint32_t i = 0; i < p->opts.nworkers; i++) {
        iop__pool_worker_t *w = &p->w[i];
        if (i != keep && w->state != IOP__W_EMPTY) {
            if (w->pidfd >= 0)
                close(w->pidfd);
            iop_ppipe_close(w->end);   /* else their workers would not see the pool go */
        }
        w->state = IOP__W_EMPTY;
        w->pidfd = -1;
        w->end = NULL;
    }
}

void iop_pool_free(iop_pool_t *p)
{
    if (!p)
        return;
    if (p->owner != getpid()) {    /* a copy: its memory and fds only */
        iop__pool_drop_copy(p, UINT32_MAX);
        iop_free(p->w);
        iop_free(p->rbuf);
        iop_free(p);
        return;
    }
    iop_pool_terminate(p);
    iop_coro_t *self = iop_self();
    uint64_t now = self && p->loop ? iop_now(p->loop) : iop__pool_now();
    if (iop_pool_join(p, now + FREE_GRACE_NS) < 0 && p->dispatcher) {
        p->quit = 1;               /* workers that do not die: stop looking */
        iop__pool_kick(p);
        iop_join(p->dispatcher, NULL, 0);
        p->dispatcher = NULL;
    }
    for (uint32_t i = 0; i < p->opts.nworkers; i++) {
        iop__pool_worker_t *w = &p->w[i];
        if (w->state == IOP__W_EMPTY)
            continue;
        waitpid(w->pid, NULL, WNOHANG);
        if (w->pidfd >= 0)
            close(w->pidfd);
        iop_ppipe_close(w->end);
    }
    if (p->loop)
        iop_fd_close(p->loop, p->epfd);
    else
        close(p->epfd);
    iop_free(p->w);
    iop_free(p->rbuf);
    iop_free(p);
}

int iop_pool_info(const iop_pool_t *p, iop_pool_info_t *info, pid_t *pids, int cap)
{
    if (!p)
        return iop__fail(-EINVAL, "iop_pool_info: NULL pool");
    int live = 0;
    for (uint32_t i = 0; i < p->opts.nworkers; i++) {
        const iop__pool_worker_t *w = &p->w[i];
        if (w->state == IOP__W_EMPTY || w->state == IOP__W_EXITING)
            continue;
        if (pids && live < cap)
            pids[live] = w->pid;
        live++;
    }
    if (info) {
        info->live = (uint32_t)live;
        info->spawned = p->spawned;
        info->lost = p->lost;
        info->done = p->done;
        info->queued = p->nqueued;
        info->broken = p->state == IOP__POOL_BROKEN ? p->broken : 0;
    }
    return live;
}

/* ---- tasks -------------------------------------------------------------------------------- */

int iop_pool_apply_async(iop_pool_t *p, iop_pool_fn fn, const void *arg, size_t len,
                         iop_future_t **out)
{
    if (!out)
        return iop__fail(-EINVAL, "iop_pool_apply_async: NULL out");
    *out = NULL;
    if (!p || !fn || (len && !arg))
        return iop__fail(-EINVAL, "iop_pool_apply_async: no pool, no function, or no argument bytes");
    int r = foreign(p, "iop_pool_apply_async");
    if (r == 0)
        r = enter(p);
    if (r < 0)
        return r;
    if (p->state == IOP__POOL_BROKEN)
        return iop__fail(p->broken, "%s", p->broken_msg);
    if (p->state != IOP__POOL_RUNNING)
        return iop__fail(-EPIPE, "iop_pool_apply_async: the pool is closed");
    if (len > p->opts.max_msg)
        return iop__fail(-EMSGSIZE, "iop_pool_apply_async: %zu argument bytes, max_msg is %zu",
                         len, p->opts.max_msg);
    iop_future_t *f = iop_calloc(1, sizeof *f);
    if (!f || !(f->arg = iop_malloc(len ? len : 1))) {
        iop_free(f);
        return -ENOMEM;
    }
    if (len)
        memcpy(f->arg, arg, len);
    f->arg_len = len;
    f->fn = fn;
    f->pool = p;
    f->id = ++p->next_id;
    iop_wg_init(&f->wg);
    iop_wg_add(&f->wg, 1);
    if (p->qtail)
        p->qtail->next = f;
    else
        p->qhead = f;
    p->qtail = f;
    p->nqueued++;
    *out = f;
    if (p->loop)
        iop__pool_kick(p);
    else
        iop__pool_pump(p);         /* hand it out now if a worker is idle */
    return 0;
}

static int future_done(void *arg) { return iop_future_done(arg); }

int iop_future_wait(iop_future_t *f, uint64_t deadline)
{
    if (!f)
        return iop__fail(-EINVAL, "iop_future_wait: NULL future");
    if (f->state == IOP__F_DONE)
        return f->res;
    if (foreign(f->pool, "iop_future_wait") < 0)
        return -EPERM;
    int r = pool_wait(f->pool, future_done, f, &f->wg, deadline);
    return r < 0 ? r : f->res;
}

int iop_pool_map(iop_pool_t *p, iop_pool_fn fn, const void *items, size_t item_size, size_t n,
                 iop_future_t **out, uint64_t deadline)
{
    if (n && (!out || !items))
        return iop__fail(-EINVAL, "iop_pool_map: NULL items or out");
    for (size_t i = 0; i < n; i++) {
        int r = iop_pool_apply_async(p, fn, (const char *)items + i * item_size, item_size, &out[i]);
        if (r < 0) {
            for (size_t j = 0; j < i; j++)
                iop_future_free(out[j]);
            for (size_t j = 0; j < n; j++)   /* the whole array: the caller frees all */
                out[j] = NULL;
            return r;
        }
    }
    int first = 0;
    for (size_t i = 0; i < n; i++) {
        int r = iop_future_wait(out[i], deadline);
        if (r < 0 && !iop_future_done(out[i]))
            return r;              /* the deadline, or a cancelled coroutine */
        if (r < 0 && !first)
            first = r;
    }
    return first;
}
