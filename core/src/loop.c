/* The loop: creation, the iteration (timers → done callbacks → posts → flush →
 * backend wait → dispatch), timers, cross-thread wake-ups, fd forgetting. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include "loop_internal.h"

/* ---- backend host ---------------------------------------------------------- */

static void *host_fd_state(void *core, int fd)
{
    iop_loop_t *loop = core;
    if (fd < 0 || (uint32_t)fd >= loop->fds.cap)
        return NULL;
    return iop__fdtable_bstate(&loop->fds, fd);
}

static void host_drop(void *core, iop_op_t *op)
{
    (void)core;
    op->state = IOP__OP_IDLE;
    op->flags = 0;
}

struct create_ctx {
    iop_loop_t *loop;
    iop_backend_config_t cfg;
};

static int try_create(void *ctx, iop__module_t *mod, char *why, size_t whylen)
{
    struct create_ctx *c = ctx;
    c->loop->fds.bstate_size = mod->desc->fd_state_size;
    c->loop->caps = mod->desc->caps;
    return mod->desc->create(&c->loop->be_state, &c->loop->host, &c->cfg, why, whylen);
}

/* A feature the backend has but the kernel refused: the loop's report says so. */
static void report_refusal(iop_loop_t *loop, const char *what, int err, const char *instead)
{
    size_t used = strlen(loop->report);
    snprintf(loop->report + used, sizeof loop->report - used, "%s%s refused (%s): %s",
             used ? "; " : "", what, strerror(-err), instead);
}

/* ---- the receive pool ------------------------------------------------------ */

/* count x size bytes of page-aligned memory, lent by the backend when it can
 * (provided buffers), else handed out by the core from a free stack. */
static int pool_create(iop_loop_t *loop, uint32_t count, uint32_t size)
{
    if (count > 32768 || size > (1u << 24) || (uint64_t)count * size > (1ull << 32))
        return iop__fail(-EINVAL, "iop_loop_create: receive pool of %u x %u bytes is too big "
                         "(at most 32768 buffers, 16 MiB each, 4 GiB in all)", count, size);
    size_t bytes = (size_t)count * size;
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return iop__fail(-errno, "iop_loop_create: receive pool of %zu bytes: %s", bytes, strerror(errno));
    loop->pool = p;
    loop->pool_count = count;
    loop->pool_size = size;
    loop->pool_out = iop_calloc(count ? count : 1, 1);
    loop->pool_link = iop_malloc((count ? count : 1) * sizeof *loop->pool_link);
    if (!loop->pool_out || !loop->pool_link)
        return iop__fail(-ENOMEM, "iop_loop_create: out of memory");
    if (loop->be->buf_pool && (loop->caps & IOP_CAP_PROVIDED_BUFFERS)) {
        int r = loop->be->buf_pool(loop->be_state, p, count, size);
        if (r == 0) {
            loop->pool_native = 1;
            return 0;
        }
        /* The kernel refused (a low memlock limit, a seccomp policy): the core lends
         * the buffers instead, and the caps and the report say so. */
        loop->caps &= ~IOP_CAP_PROVIDED_BUFFERS;
        report_refusal(loop, "provided buffers", r, "the core lends the receive pool");
    }
    loop->pool_free = iop_malloc(count * sizeof *loop->pool_free);
    if (!loop->pool_free)
        return iop__fail(-ENOMEM, "iop_loop_create: out of memory");
    for (uint32_t i = 0; i < count; i++)
        loop->pool_free[i] = count - 1 - i;   /* bid 0 on top */
    loop->pool_nfree = count;
    return 0;
}

/* ---- registered buffers ---------------------------------------------------- */

static int backend_has_buf_register(const iop_loop_t *loop)
{
    const iop_backend_desc_t *be = loop->be;
    return be->desc_size >= offsetof(iop_backend_desc_t, buf_register) + sizeof be->buf_register &&
           be->buf_register && (loop->caps & IOP_CAP_REGISTERED_BUFFERS);
}

int iop_buf_register(iop_loop_t *loop, const struct iovec *iov, unsigned n)
{
    if (!loop || !iov || n == 0 || n > IOP_BUF_REGISTER_MAX)
        return iop__fail(-EINVAL, "iop_buf_register: want 1 to %d buffers", IOP_BUF_REGISTER_MAX);
    if (iop__forked(loop))
        return iop__fail_forked(loop, "iop_buf_register");
    if (loop->fixed)
        return iop__fail(-EBUSY, "iop_buf_register: a set is registered already (iop_buf_unregister it first)");
    for (unsigned i = 0; i < n; i++)
        if (!iov[i].iov_base || iov[i].iov_len == 0 || iov[i].iov_len > (1u << 30))
            return iop__fail(-EINVAL, "iop_buf_register: buffer %u: want an address and 1 byte to 1 GiB", i);
    struct iovec *copy = iop_malloc(n * sizeof *copy);
    if (!copy)
        return iop__fail(-ENOMEM, "iop_buf_register: out of memory");
    memcpy(copy, iov, n * sizeof *copy);
    loop->fixed = copy;
    loop->nfixed = n;
    loop->fixed_native = 0;
    if (!backend_has_buf_register(loop))
        return 0;
    int r = loop->be->buf_register(loop->be_state, copy, n);
    if (r == 0) {
        loop->fixed_native = 1;
        return 1;
    }
    /* The kernel refused (memlock): the ops still run, as plain ones; say so once. */
    loop->caps &= ~IOP_CAP_REGISTERED_BUFFERS;
    report_refusal(loop, "registered buffers", r, "ops run with plain buffers");
    return 0;
}

int iop_buf_unregister(iop_loop_t *loop)
{
    if (!loop || !loop->fixed)
        return -ENOENT;
    /* In a forked child the ring is the parent's: free only our copy of the set. */
    if (loop->fixed_native && !iop__forked(loop))
        (void)loop->be->buf_register(loop->be_state, NULL, 0);
    iop_free(loop->fixed);
    loop->fixed = NULL;
    loop->nfixed = 0;
    loop->fixed_native = 0;
    return 0;
}

int iop__pool_take(iop_loop_t *loop, uint32_t *bid)
{
    if (!loop->pool_nfree)
        return -ENOBUFS;
    *bid = loop->pool_free[--loop->pool_nfree];
    loop->pool_out[*bid] = 1;
    return 0;
}

/* A buffer given back twice, or never lent, is ignored: giving it to the backend
 * again would lend it to two receives at once. */
void iop_buf_release(iop_loop_t *loop, uint32_t bid)
{
    if (!loop->pool || bid >= loop->pool_count || !loop->pool_out[bid] || iop__forked(loop))
        return;
    loop->pool_out[bid] = 0;
    if (loop->pool_native)
        loop->be->buf_return(loop->be_state, bid);
    else if (loop->pool_nfree < loop->pool_count)
        loop->pool_free[loop->pool_nfree++] = bid;
}

void *iop_buf_addr(const iop_loop_t *loop, uint32_t bid)
{
    return loop->pool && bid < loop->pool_count ? loop->pool + (size_t)bid * loop->pool_size : NULL;
}

uint32_t iop_buf_size(const iop_loop_t *loop) { return loop->pool_size; }

/* ---- create / destroy ------------------------------------------------------ */

static void wake_cb(iop_watch_t *w, unsigned revents);

/* Fork detection without a getpid syscall per run (glibc does not cache the pid):
 * fork(2) runs this child handler, and only when the count moved does run ask
 * getpid. */
atomic_uint iop__fork_gen;
static pthread_once_t fork_hook_once = PTHREAD_ONCE_INIT;
static void on_fork_child(void) { atomic_fetch_add_explicit(&iop__fork_gen, 1, memory_order_relaxed); }
static void fork_hook(void) { pthread_atfork(NULL, NULL, on_fork_child); }

int iop_loop_create(iop_loop_t **out, const iop_loop_opts_t *opts)
{
    iop_loop_opts_t dflt = { .size = sizeof dflt };
    if (!out)
        return iop__fail(-EINVAL, "iop_loop_create: out is NULL");
    *out = NULL;
    if (!opts)
        opts = &dflt;
    if (opts->size < offsetof(iop_loop_opts_t, busy_poll_us) + sizeof opts->busy_poll_us)
        return iop__fail(-EINVAL, "iop_loop_create: opts.size %u is too small (set it to sizeof(iop_loop_opts_t))", opts->size);

    iop_loop_t *loop = iop_calloc(1, sizeof *loop);
    if (!loop)
        return iop__fail(-ENOMEM, "iop_loop_create: out of memory");
    loop->wake_fd = -1;
    pthread_once(&fork_hook_once, fork_hook);
    loop->fork_gen = atomic_load_explicit(&iop__fork_gen, memory_order_relaxed);
    loop->pid = getpid();
    iop__heap_init(&loop->timers);
    loop->busy_poll_us = opts->busy_poll_us;
    for (int i = 0; i < IOP__DL_CANCELS; i++) {
        loop->dl_cancel[i].op.next = loop->dl_free;
        loop->dl_free = &loop->dl_cancel[i].op;
    }
    loop->host = (iop_backend_host_t){
        .core = loop, .syscalls = &loop->stats.syscalls,
        .alloc = iop_malloc, .realloc = iop_realloc, .free = iop_free,
        .fd_state = host_fd_state, .drop = host_drop, .caps = &loop->caps,
    };
    /* Fields past busy_poll_us exist only for callers built with ABI 2 headers. */
    iop_loop_opts_t o = { 0 };
    memcpy(&o, opts, opts->size < sizeof o ? opts->size : sizeof o);
    struct create_ctx ctx = {
        .loop = loop,
        .cfg = { .size = sizeof ctx.cfg, .flags = o.flags, .entries = o.entries,
                 .busy_poll_us = o.busy_poll_us, .sqpoll_idle_ms = o.sqpoll_idle_ms,
                 .sqpoll_cpu1 = o.sqpoll_cpu1 },
    };
    int r = iop__backend_choose(opts, try_create, &ctx, &loop->mod, loop->report, sizeof loop->report);
    if (r < 0) {
        iop_free(loop);
        return r;
    }
    loop->be = loop->mod.desc;
    loop->register_busy = (o.flags & IOP_LOOP_REGISTER_BUSY_FDS) && loop->be->submit &&
                          loop->be->fd_register && (loop->caps & IOP_CAP_REGISTERED_FILES);
    iop_update_time(loop);
    if (o.buf_count) {
        r = pool_create(loop, o.buf_count, o.buf_size ? o.buf_size : 4096);
        if (r < 0) {
            iop_loop_destroy(loop);
            return r;
        }
    }

    loop->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->wake_fd < 0) {
        r = iop__fail(-errno, "iop_loop_create: eventfd: %s", strerror(errno));
        iop_loop_destroy(loop);
        return r;
    }
    r = iop__watch_start(loop, &loop->wake_watch, loop->wake_fd, IOP_READ, wake_cb, 1);
    if (r < 0) {
        iop_loop_destroy(loop);
        return r;
    }
    *out = loop;
    return 0;
}

/* Ops, watches and timers still registered become idle records again, so that the
 * caller may reuse or free them without touching the freed loop. */
static void release_records(iop_loop_t *loop)
{
    for (uint32_t fd = 0; fd < loop->fds.cap; fd++) {
        iop__fd_t *e = &loop->fds.v[fd];
        iop_op_t *lists[2] = { e->rd_head, e->wr_head };
        for (int i = 0; i < 2; i++)
            for (iop_op_t *op = lists[i]; op; op = op->next)
                op->state = IOP__OP_IDLE;
        if (e->watch)
            e->watch->active = 0;
    }
    for (iop_op_t *op = loop->done_head; op; op = op->next)
        op->state = IOP__OP_IDLE;
    for (uint32_t i = 0; i < loop->timers.n + loop->timers.nfar; i++) {
        iop_timer_t *t = iop__heap_at(&loop->timers, i);
        if (!t)
            continue;              /* a hole in the bag */
        t->heap_idx = 0;
        if (t->flags & IOP__TF_INTERNAL) {
            iop_op_t *op = (iop_op_t *)((char *)t - offsetof(iop_op_t, timer));
            op->state = IOP__OP_IDLE;
        }
    }
}

void iop_loop_destroy(iop_loop_t *loop)
{
    if (!loop)
        return;
    /* From one of its own callbacks or coroutines the iteration under way would
     * go on in freed memory: refused, the loop goes on; so is another thread
     * while one runs it. (A child forked from a callback frees its copy: nothing
     * runs the loop there.) */
    uintptr_t runner = atomic_load_explicit(&loop->runner, memory_order_acquire);
    if (runner && loop->pid == getpid()) {
        if (runner == iop__thread_id())
            iop__fail(-EBUSY, "iop_loop_destroy: the loop is running (called from its own callback?): "
                      "destroy it after iop_loop_run returns");
        else
            iop__fail(-EBUSY, "iop_loop_destroy: the loop is running on another thread: stop it "
                      "(iop_loop_stop) and destroy it there after iop_loop_run returns");
        return;
    }
    /* A thread may still be leaving post / wake / stop (see caller_enter). */
    while (atomic_load_explicit(&loop->callers, memory_order_acquire))
        sched_yield();
    if (loop->be_state) {
        release_records(loop);
        /* A forked child shares the parent's kernel objects, and a ring's memory is
         * not even mapped in it: there the backend only frees its memory. */
        if (loop->pid == getpid())
            loop->be->destroy(loop->be_state);
        else if (loop->be->desc_size >= offsetof(iop_backend_desc_t, abandon) + sizeof loop->be->abandon &&
                 loop->be->abandon)
            loop->be->abandon(loop->be_state);
    }
    if (loop->sched)   /* after the records: parked coroutines' ops live on their stacks */
        iop__sched_destroy(loop);
    if (loop->wake_fd >= 0)
        close(loop->wake_fd);
    if (loop->pool)
        munmap(loop->pool, (size_t)loop->pool_count * loop->pool_size);
    iop_free(loop->pool_free);
    iop_free(loop->pool_out);
    iop_free(loop->pool_link);
    iop_free(loop->fixed);
    iop__module_close(&loop->mod);
    iop__fdtable_free(&loop->fds);
    iop__heap_free(&loop->timers);
    iop_free(loop->changes);
    iop_free(loop);
}

/* ---- clock ------------------------------------------------------------------ */

uint64_t iop_now(const iop_loop_t *loop) { return loop->now; }

uint64_t iop_update_time(iop_loop_t *loop)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    loop->now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    return loop->now;
}

/* ---- timers ----------------------------------------------------------------- */

int iop__timer_arm(iop_loop_t *loop, iop_timer_t *t, uint64_t when, iop_timer_cb cb)
{
    if (t->heap_idx)
        iop__heap_remove(&loop->timers, t);
    t->loop = loop;
    t->cb = cb;
    t->when = when;
    t->repeat = 0;
    t->seq = loop->timer_seq++;
    t->flags = IOP__TF_INTERNAL;
    return iop__heap_push(&loop->timers, t);
}

/* iop_timer_start; spare: in a slot the caller reserved (iop__timer_reserve). */
static int timer_start(iop_loop_t *loop, iop_timer_t *t, uint64_t after_ns, uint64_t repeat_ns,
                       iop_timer_cb cb, int spare)
{
    if (!loop || !t || !cb)
        return iop__fail(-EINVAL, "iop_timer_start: NULL argument");
    if (t->heap_idx && t->loop != loop)
        iop_timer_stop(t);         /* armed on another loop: out of that heap first */
    if (t->heap_idx)
        iop__heap_remove(&loop->timers, t);
    else
        loop->active++;
    t->loop = loop;
    t->cb = cb;
    t->when = iop__ns_after(loop->now, after_ns);
    t->repeat = repeat_ns;
    t->seq = loop->timer_seq++;
    t->flags = 0;
    int r = spare ? iop__heap_push_spare(&loop->timers, t) : iop__heap_push(&loop->timers, t);
    if (r < 0) {
        loop->active--;
        return iop__fail(r, "iop_timer_start: out of memory");
    }
    return 0;
}

int iop_timer_start(iop_loop_t *loop, iop_timer_t *t, uint64_t after_ns, uint64_t repeat_ns,
                    iop_timer_cb cb)
{
    return timer_start(loop, t, after_ns, repeat_ns, cb, 0);
}

int iop__timer_reserve(iop_loop_t *loop)
{
    return iop__heap_reserve(&loop->timers) < 0 ? iop__fail(-ENOMEM, "timers: out of memory") : 0;
}

void iop__timer_unreserve(iop_loop_t *loop) { iop__heap_unreserve(&loop->timers); }

int iop__timer_start_spare(iop_loop_t *loop, iop_timer_t *t, uint64_t after_ns, iop_timer_cb cb)
{
    return timer_start(loop, t, after_ns, 0, cb, 1);
}

void iop_timer_stop(iop_timer_t *t)
{
    if (!t || !t->heap_idx)
        return;
    iop__heap_remove(&t->loop->timers, t);
    if (!(t->flags & IOP__TF_INTERNAL))
        t->loop->active--;
}

int iop_timer_active(const iop_timer_t *t) { return t && t->heap_idx != 0; }

/* Fires due timers. Only those armed before this pass: a callback that re-arms a
 * timer for "now" runs it next iteration instead of spinning here. */
static void run_timers(iop_loop_t *loop)
{
    uint64_t seq_limit = loop->timer_seq;
    iop_timer_t *t;
    iop__heap_advance(&loop->timers, loop->now);
    while (iop__heap_top_when(&loop->timers) <= loop->now &&
           (t = iop__heap_top(&loop->timers))->seq < seq_limit) {
        iop__heap_remove(&loop->timers, t);
        if (t->repeat) {
            uint64_t next = iop__ns_after(t->when, t->repeat);
            t->when = next > loop->now ? next : iop__ns_after(loop->now, t->repeat);
            t->seq = loop->timer_seq++;
            iop__heap_push(&loop->timers, t);   /* a slot was just freed: cannot fail */
        } else if (!(t->flags & IOP__TF_INTERNAL)) {
            loop->active--;
        }
        loop->stats.timers_fired++;
        t->cb(t);
    }
}

/* ---- cross-thread ------------------------------------------------------------ */

/* Other threads inside wake, post or stop are counted: the loop may run a post's
 * callback, return and be destroyed while its poster is still between the push and
 * the wake-up write, and destroy waits for it to leave. */
static void caller_enter(iop_loop_t *loop) { atomic_fetch_add_explicit(&loop->callers, 1, memory_order_acquire); }
static void caller_leave(iop_loop_t *loop) { atomic_fetch_sub_explicit(&loop->callers, 1, memory_order_release); }

static int wake(iop_loop_t *loop)
{
    if (atomic_exchange(&loop->wake_pending, 1))
        return 0;   /* a wake-up is already on its way */
    uint64_t one = 1;
    if (write(loop->wake_fd, &one, sizeof one) < 0 && errno != EAGAIN)
        return -errno;
    return 0;
}

int iop_loop_wake(iop_loop_t *loop)
{
    caller_enter(loop);
    int r = wake(loop);
    caller_leave(loop);
    return r;
}

int iop_loop_post(iop_loop_t *loop, iop_post_t *p, iop_post_cb cb)
{
    if (!loop || !p || !cb)
        return iop__fail(-EINVAL, "iop_loop_post: NULL loop, record or callback");
    caller_enter(loop);
    p->cb = cb;
    iop_post_t *head = atomic_load(&loop->posts);
    do
        p->next = head;
    while (!atomic_compare_exchange_weak(&loop->posts, &head, p));
    int r = wake(loop);
    caller_leave(loop);
    return r;
}

static int run_posts(iop_loop_t *loop)
{
    if (!atomic_load_explicit(&loop->posts, memory_order_relaxed))
        return 0;
    int ran = 0;
    iop_post_t *p = atomic_exchange(&loop->posts, NULL), *fifo = NULL;
    while (p) {                 /* the stack is newest-first: reverse it */
        iop_post_t *next = p->next;
        p->next = fifo;
        fifo = p;
        p = next;
    }
    while (fifo) {
        iop_post_t *next = fifo->next;
        fifo->cb(fifo);
        fifo = next;
        ran++;
    }
    return ran;
}

static void wake_cb(iop_watch_t *w, unsigned revents)
{
    iop_loop_t *loop = w->loop;
    uint64_t v;
    (void)revents;
    loop->stats.syscalls++;
    if (read(loop->wake_fd, &v, sizeof v) < 0 && errno != EAGAIN)
        return;
    /* Clear before draining: a post pushed after this point wakes us again. */
    atomic_store(&loop->wake_pending, 0);
    run_posts(loop);
}

void iop_loop_stop(iop_loop_t *loop)
{
    caller_enter(loop);
    atomic_store(&loop->stop, 1);
    wake(loop);            /* also covers a signal landing just before the wait */
    caller_leave(loop);
}

/* ---- the iteration ----------------------------------------------------------- */

int iop__mark_change(iop_loop_t *loop, int fd)
{
    iop__fd_t *e = &loop->fds.v[fd];
    if (e->flags & IOP__FD_IN_CHANGES)
        return 0;
    /* changes_cap >= fds.cap (see iop__fd_reserve): an fd appears at most once. */
    loop->changes[loop->nchanges++] = fd;
    e->flags |= IOP__FD_IN_CHANGES;
    return 0;
}

/* fd's watch can never fire again (the backend refused the fd, or found it closed):
 * one IOP_ERR, then it is stopped. */
static void watch_gone(iop_loop_t *loop, int fd)
{
    iop_watch_t *w = loop->fds.v[fd].watch;
    if (w && w->events) {
        w->cb(w, IOP_ERR);
        if (loop->fds.v[fd].watch == w)   /* re-read: the callback may grow the table */
            iop_watch_stop(w);
    }
}

/* Applies the interest changes gathered since the last wait. Doing it here rather
 * than at each op means a recv that completes and is resubmitted from its callback
 * costs no registration syscall at all. */
static void flush_changes(iop_loop_t *loop)
{
    uint32_t n = loop->nchanges;
    for (uint32_t i = 0; i < n; i++) {
        int fd = loop->changes[i];
        iop__fd_t *e = &loop->fds.v[fd];
        e->flags &= ~IOP__FD_IN_CHANGES;
        unsigned want = iop__fd_want(e, loop->caps);
        if (want == e->reg)
            continue;
        int r = loop->be->watch(loop->be_state, fd, e->reg, want, iop__fdtable_bstate(&loop->fds, fd));
        if (r >= 0) {
            e->reg = (uint8_t)want;
            continue;
        }
        /* The backend refused the fd (closed behind the loop's back, a kind it
         * cannot watch): nothing would ever wake its waiters. The watch gets one
         * IOP_ERR and is stopped; asking again would be refused again. Ops on a
         * file that cannot be polled at all (EPERM) are tried at once instead. */
        e->reg = 0;
        if (r == -EPERM && (e->flags & IOP__FD_KNOWN) && !(e->flags & IOP__FD_SOCKET))
            iop__emu_unwatchable(loop, fd);
        else
            iop__fd_fail_ops(loop, fd, r);
        watch_gone(loop, fd);
    }
    /* Entries marked by those callbacks (failed ops, stopped watches) wait for the
     * next flush, each fd once. */
    memmove(loop->changes, loop->changes + n, (loop->nchanges - n) * sizeof *loop->changes);
    loop->nchanges -= n;
}

/* Nanoseconds until the first timer is due (0: it is), -1 with none, or none
 * before the int64 range ends (a saturated "never"). */
static int64_t until_first_timer(const iop_loop_t *loop)
{
    uint64_t when = iop__heap_next_when(&loop->timers);
    if (when <= loop->now)
        return 0;
    return when - loop->now > (uint64_t)INT64_MAX ? -1 : (int64_t)(when - loop->now);
}

static int64_t wait_timeout(iop_loop_t *loop, iop_run_mode_t mode)
{
    if (mode == IOP_RUN_NOWAIT || loop->done_head || atomic_load(&loop->stop) ||
        atomic_load_explicit(&loop->posts, memory_order_relaxed))
        return 0;
    return until_first_timer(loop);
}

static int backend_wait(iop_loop_t *loop, int64_t timeout)
{
    loop->stats.polls++;
    if (loop->busy_poll_us && timeout != 0) {
        /* Poll-mode habit: spin with zero timeouts before paying for a sleep. */
        uint64_t until = loop->now + (uint64_t)loop->busy_poll_us * 1000u;
        if (timeout > 0 && loop->now + (uint64_t)timeout < until)
            until = loop->now + (uint64_t)timeout;
        do {
            int n = loop->be->poll(loop->be_state, loop->events, IOP__MAX_EVENTS, 0);
            if (n != 0)
                return n;
        } while (iop_update_time(loop) < until);
        timeout = until_first_timer(loop);
    }
    return loop->be->poll(loop->be_state, loop->events, IOP__MAX_EVENTS, timeout);
}

/* fd was closed behind the loop's back (a readiness backend says so): as when the
 * backend refuses it at a flush, its ops fail, its watch gets one IOP_ERR and is
 * stopped, and the next flush unregisters it. */
static void fd_invalid(iop_loop_t *loop, int fd)
{
    if (fd < 0 || (uint32_t)fd >= loop->fds.cap)
        return;
    iop__fd_fail_ops(loop, fd, -EBADF);
    watch_gone(loop, fd);
}

static void dispatch(iop_loop_t *loop, int n)
{
    loop->stats.events += (uint64_t)n;
    loop->disp_n = n;
    for (int i = 0; i < n; i++) {
        iop_event_t *ev = &loop->events[i];
        loop->disp_next = i + 1;
        if (ev->op)
            iop__deliver(loop, ev->op, ev->res, ev->flags);
        else if (ev->revents & IOP_EV_NVAL)
            fd_invalid(loop, ev->fd);
        else if (ev->revents)      /* 0: its fd was forgotten earlier in this batch */
            iop__emu_ready(loop, ev->fd, ev->revents);
    }
    loop->disp_n = loop->disp_next = 0;
}

/* Did a blocking wait end before its timeout with nothing to show for it? A signal
 * (a handler installed without SA_RESTART) does that: the backends report EINTR as
 * 0 events. ONCE then waits again for what is left, as it promises to block until
 * something is ready. */
static int interrupted(iop_loop_t *loop, int n, uint64_t wait_from, int64_t timeout)
{
    if ((n != 0 && n != -EINTR) || timeout == 0 || loop->done_head || atomic_load(&loop->stop) ||
        atomic_load_explicit(&loop->posts, memory_order_relaxed))
        return 0;
    return timeout < 0 || loop->now - wait_from < (uint64_t)timeout;
}

uintptr_t iop__thread_id(void)
{
    static _Thread_local char self;   /* its address differs between live threads */
    return (uintptr_t)&self;
}

int iop__fail_forked(const iop_loop_t *loop, const char *what)
{
    return iop__fail(-ECHILD, "%s: this loop belongs to process %d; a forked child must create its own loop",
                     what, (int)loop->pid);
}

static int run_refused(int same_thread)
{
    if (same_thread)
        return iop__fail(-EBUSY, "iop_loop_run: the loop is already running (called from a callback?)");
    return iop__fail(-EBUSY, "iop_loop_run: the loop is running on another thread (one thread runs a "
                     "loop; others may only iop_loop_post, iop_loop_wake and iop_loop_stop)");
}

int iop_loop_run(iop_loop_t *loop, iop_run_mode_t mode)
{
    if (mode != IOP_RUN_DEFAULT && mode != IOP_RUN_ONCE && mode != IOP_RUN_NOWAIT)
        return iop__fail(-EINVAL, "iop_loop_run: unknown mode %d", (int)mode);
    if (iop__forked(loop))
        return iop__fail_forked(loop, "iop_loop_run");
    /* One runner at a time: a second thread would share every structure of the
     * loop with the first. Claimed atomically so that the refusal is certain. */
    uintptr_t runner = atomic_load_explicit(&loop->runner, memory_order_acquire), me = iop__thread_id();
    if (runner)
        return run_refused(runner == me);
    /* The scheduler switches back to the thread's own stack, not to a coroutine
     * that runs a loop of its own: its coroutines would end in the wrong place. */
    iop_coro_t *self = iop_self();
    if (self)
        return iop__fail(-EPERM, "iop_loop_run: called from coroutine '%s' (run loops from the thread's main "
                         "context; a coroutine waits with the blocking calls instead)", iop_coro_name(self));
    if (!atomic_compare_exchange_strong_explicit(&loop->runner, &runner, me, memory_order_acquire,
                                                 memory_order_acquire))
        return run_refused(runner == me);
    int r = 0, polled = 0;
    iop_update_time(loop);
    for (;;) {
        uint64_t before = loop->stats.ops_completed + loop->stats.timers_fired;
        run_timers(loop);
        iop__run_done(loop);
        int posted = run_posts(loop);
        if (atomic_exchange(&loop->stop, 0))
            break;
        if (mode != IOP_RUN_DEFAULT ? polled : !(loop->active || loop->done_head))
            break;
        /* ONCE blocks only if nothing has happened yet in this call. */
        int ran = posted || loop->stats.ops_completed + loop->stats.timers_fired != before;
        flush_changes(loop);
        uint64_t wait_from = iop_update_time(loop);
        int64_t timeout = wait_timeout(loop, mode == IOP_RUN_ONCE && ran ? IOP_RUN_NOWAIT : mode);
        int n = backend_wait(loop, timeout);
        loop->stats.iterations++;
        iop_update_time(loop);
        polled = polled || !interrupted(loop, n, wait_from, timeout);
        if (n < 0 && n != -EINTR) {
            /* -EXDEV: a backend tied to its creator's thread (sigio's signals go there) */
            r = iop__fail(n, "iop_loop_run: backend %s failed: %s%s", loop->be->name, iop_strerror(n),
                          n == -EXDEV ? " (it serves only the thread that created the loop: run it there)" : "");
            break;
        }
        if (n > 0)
            dispatch(loop, n);
    }
    atomic_store_explicit(&loop->runner, 0, memory_order_release);
    if (r < 0)
        return r;
    return loop->active || loop->done_head ? 1 : 0;
}

/* ---- fds --------------------------------------------------------------------- */

int iop__fd_reserve(iop_loop_t *loop, int fd)
{
    int r = iop__fdtable_reserve(&loop->fds, fd);
    if (r < 0)
        return r == -EBADF ? iop__fail(r, "fd %d is out of range", fd)
                           : iop__fail(r, "fd %d: no memory for the loop's fd table", fd);
    if (loop->changes_cap < loop->fds.cap) {
        int32_t *c = iop_realloc(loop->changes, loop->fds.cap * sizeof *c);
        if (!c)
            return iop__fail(-ENOMEM, "fd %d: no memory for the loop's fd table", fd);
        loop->changes = c;
        loop->changes_cap = loop->fds.cap;
    }
    return 0;
}

/* The core's side of forgetting fd: queued ops, the watch, the registration of a
 * readiness backend, the table entry. A completion backend's side is its forget. */
void iop__fd_forget_core(iop_loop_t *loop, int fd)
{
    if (loop->more_op && loop->more_op->fd == fd)
        loop->more_op->flags |= IOP__OPF_STOP;   /* no rearm on a closed fd */
    /* Readiness of fd still to be dispatched from this batch is the forgotten file's,
     * not that of whatever gets the number next (a watch started on it meanwhile). */
    for (int i = loop->disp_next; i < loop->disp_n; i++)
        if (!loop->events[i].op && loop->events[i].fd == fd)
            loop->events[i].revents = 0;
    if (fd < 0 || (uint32_t)fd >= loop->fds.cap)
        return;
    iop__fd_fail_ops(loop, fd, -ECANCELED);
    iop__fd_t *e = &loop->fds.v[fd];
    iop_watch_t *w = e->watch, *tell = NULL;
    if (w && !(w->active & IOP__W_INTERNAL)) {
        if (w->active & IOP__W_FORGET_CB)
            tell = w;
        w->active = 0;
        e->watch = NULL;
        loop->active--;
    }
    if (e->reg && !loop->be->submit)
        loop->be->watch(loop->be_state, fd, e->reg, 0, iop__fdtable_bstate(&loop->fds, fd));
    e->reg = 0;
    iop__fdtable_reset(&loop->fds, fd);
    if (tell)
        tell->cb(tell, IOP_ERR | IOP_HUP);   /* it sees itself inactive: the fd is gone */
}

void iop_fd_forget(iop_loop_t *loop, int fd)
{
    /* In a forked child the backend's kernel objects are the parent's (an epoll
     * set, a ring not even mapped here): leave them alone. */
    if (fd < 0 || fd >= IOP__FD_MAX || iop__forked(loop))
        return;
    if (loop->be->forget)
        loop->be->forget(loop->be_state, fd, host_fd_state(loop, fd));
    iop__fd_forget_core(loop, fd);
}

int iop_fd_register(iop_loop_t *loop, int fd)
{
    if (!loop->be->fd_register || !(loop->caps & IOP_CAP_REGISTERED_FILES))
        return 0;
    if (iop__forked(loop))
        return iop__fail_forked(loop, "iop_fd_register");
    int r = iop__fd_reserve(loop, fd);
    if (r < 0)
        return r;
    r = loop->be->fd_register(loop->be_state, fd, iop__fdtable_bstate(&loop->fds, fd));
    if (r >= 0)
        return r;
    if (!(loop->caps & IOP_CAP_REGISTERED_FILES)) {   /* refused for good: said once */
        report_refusal(loop, "registered files", r, "ops name plain fds");
        return iop__fail(r, "iop_fd_register: the kernel refused a table of registered files: %s",
                         strerror(-r));
    }
    return iop__fail(r, "iop_fd_register: fd %d: %s", fd,
                     r == -ENFILE ? "the table of registered files is full" : strerror(-r));
}

int iop_fd_close(iop_loop_t *loop, int fd)
{
    iop_fd_forget(loop, fd);
    return close(fd) < 0 ? -errno : 0;
}

/* ---- introspection ------------------------------------------------------------ */

void iop_loop_get_stats(const iop_loop_t *loop, iop_loop_stats_t *out) { *out = loop->stats; }
const char *iop_loop_backend(const iop_loop_t *loop) { return loop->be->name; }
uint32_t iop_loop_caps(const iop_loop_t *loop) { return loop->caps; }
const char *iop_loop_backend_report(const iop_loop_t *loop) { return loop->report; }
