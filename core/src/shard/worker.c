/* A worker process, from the fork to _exit: tie its life to the supervisor, keep
 * only its own descriptors, pin it, make its own loop, then run two coroutines: the
 * user's worker and a watcher of the control socket, which turns the supervisor's
 * drain message (or its disappearance) into "draining": the listeners are
 * forgotten by the loop (which fails a parked accept with -ECANCELED) and closed. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include "sanitizer_internal.h"
#include "shard_internal.h"


/* ---- messages to the supervisor ------------------------------------------------------- */

static void say(int ctl, char type, const void *head, size_t headlen, const char *text)
{
    char msg[IOP__MSG_MAX];
    size_t n = 0;
    msg[n++] = type;
    if (headlen)
        memcpy(msg + n, head, headlen);
    n += headlen;
    size_t tl = text ? strlen(text) : 0;
    if (tl > sizeof msg - n)
        tl = sizeof msg - n;
    if (tl)
        memcpy(msg + n, text, tl);
    (void)send(ctl, msg, n + tl, MSG_NOSIGNAL | MSG_DONTWAIT);
}

static _Noreturn void leave(int status)
{
    fflush(NULL);                  /* the parent flushed before the fork: only ours */
    iop__exit_checked(status);
}

static _Noreturn void fatal(int ctl, int err, const char *what)
{
    int32_t e = err;
    say(ctl, IOP__MSG_FATAL, &e, sizeof e, what);
    leave(2);
}

int iop_shard_ready(iop_shard_worker_t *w)
{
    if (!w)
        return -EINVAL;
    if (w->ready_sent)
        return 0;
    w->ready_sent = 1;
    return send(w->ctl, "R", 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1 ? 0 : -errno;
}

/* ---- draining ------------------------------------------------------------------------------ */

/* Parked accepts are cancelled here; the listeners stay open until each acceptor
 * has swept them (iop_shard_accept) or the worker ends. */
static void begin_drain(iop_shard_worker_t *w, uint64_t deadline)
{
    if (w->draining)
        return;
    w->draining = 1;
    w->drain_deadline = deadline ? deadline : iop__ns_after(iop_now(w->loop), w->drain_timeout);
    for (uint32_t i = 0; i < w->nlisten; i++)
        if (w->fds[i] >= 0)
            iop_fd_forget(w->loop, w->fds[i]);   /* parked accepts end with -ECANCELED */
    iop_wg_done(&w->drain_wg);
}

static void *watch_ctl(void *arg)
{
    iop_shard_worker_t *w = arg;
    for (;;) {
        unsigned char msg[IOP__MSG_MAX];
        ssize_t n = iop_recv(w->ctl, msg, sizeof msg, 0, 0);
        if (n == -ECANCELED)
            break;                 /* the worker has ended */
        if (n == -EINTR || n == -EAGAIN)
            continue;
        if (n > 0 && msg[0] == IOP__MSG_DRAIN && n >= 9) {
            uint64_t deadline;
            memcpy(&deadline, msg + 1, sizeof deadline);
            begin_drain(w, deadline);
            continue;
        }
        if (n > 0)
            continue;
        begin_drain(w, 0);         /* the supervisor has gone */
        break;
    }
    return NULL;
}

int iop_shard_draining(const iop_shard_worker_t *w) { return w ? w->draining : 1; }
uint64_t iop_shard_drain_deadline(const iop_shard_worker_t *w) { return w ? w->drain_deadline : 0; }

int iop_shard_wait_drain(iop_shard_worker_t *w, uint64_t deadline)
{
    if (!w)
        return -EINVAL;
    iop_shard_ready(w);            /* a worker that waits for the drain is serving */
    return iop_wg_wait(&w->drain_wg, deadline);
}

/* ---- accessors -------------------------------------------------------------------------------- */

uint32_t iop_shard_index(const iop_shard_worker_t *w) { return w->index; }
uint32_t iop_shard_count(const iop_shard_worker_t *w) { return w->count; }
iop_loop_t *iop_shard_loop(const iop_shard_worker_t *w) { return w->loop; }
void *iop_shard_arg(const iop_shard_worker_t *w) { return w->arg; }
uint32_t iop_shard_nlisteners(const iop_shard_worker_t *w) { return w->nlisten; }

uint32_t iop_shard_listener_entry(const iop_shard_worker_t *w, uint32_t i)
{
    return w && i < w->nlisten ? w->entry[i] : UINT32_MAX;
}

int iop_shard_listener(const iop_shard_worker_t *w, uint32_t i)
{
    return w && i < w->nlisten && !w->draining ? w->fds[i] : -1;
}

/* Draining: takes what is already queued on listener i, then closes our copy of it
 * (the supervisor's and a successor's keep the socket). The sweep matters on
 * io_uring, whose accept waits for an exclusive wake-up: one that came just before
 * the cancel is used up, and without the sweep its connection would wait for the
 * next one's wake-up to be accepted by anybody. */
static int accept_draining(iop_shard_worker_t *w, uint32_t i, struct sockaddr *addr, socklen_t *addrlen)
{
    while (w->fds[i] >= 0) {
        /* bounded: under a steady stream the queue may never run dry */
        int fd = w->sweep_left ? accept4(w->fds[i], addr, addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC) : -1;
        if (fd >= 0) {
            w->sweep_left--;
            return fd;
        }
        if (w->sweep_left && (errno == EINTR || errno == ECONNABORTED))
            continue;
        if (w->parked[i])
            break;                 /* another acceptor's cancel is still on its way */
        close(w->fds[i]);
        w->fds[i] = -1;
    }
    return -ECANCELED;
}

int iop_shard_accept(iop_shard_worker_t *w, uint32_t i, struct sockaddr *addr, socklen_t *addrlen,
                     uint64_t deadline)
{
    if (!w || i >= w->nlisten)
        return iop__fail(-EINVAL, "iop_shard_accept: no listener %u", i);
    iop_shard_ready(w);
    int fd = -ECANCELED;
    if (!w->draining) {
        w->parked[i]++;
        fd = iop_accept(w->fds[i], addr, addrlen, deadline);
        w->parked[i]--;
    }
    /* fd >= 0: accepted just before the drain began, and ours to serve */
    if (fd < 0 && w->draining)
        fd = accept_draining(w, i, addr, addrlen);
    if (fd >= 0 && w->cell)
        atomic_fetch_add_explicit(&w->cell->accepted, 1, memory_order_relaxed);
    return fd;
}

/* ---- the process ------------------------------------------------------------------------------- */

/* Closes what belongs to the supervisor and to the other workers. */
static void close_inherited(iop__shard_sup_t *s, uint32_t slot)
{
    close(s->sigfd);
    for (iop__shard_proc_t *p = s->procs; p; p = p->next) {
        if (p->pidfd >= 0)
            close(p->pidfd);
        if (p->ctl >= 0)
            close(p->ctl);
    }
    for (uint32_t a = 0; a < s->lst.naddr; a++)
        for (uint32_t k = 0; k < s->lst.per_addr; k++) {
            int fd = s->lst.fds[a * s->lst.per_addr + k];
            if (fd >= 0 && fd != iop__shard_listener_fd(&s->lst, a, slot))
                close(fd);
        }
}

struct worker_run {
    iop_shard_worker_t *w;
    iop_shard_worker_fn fn;
    int result;
};

static void *call_worker(void *arg)
{
    struct worker_run *run = arg;
    run->result = run->fn(run->w);
    return NULL;
}

_Noreturn void iop__shard_worker_main(iop__shard_sup_t *s, uint32_t slot, int ctl, iop__shard_cell_t *cell)
{
    /* Die with the supervisor; if it died before this line, the signal never comes. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != s->self)
        leave(0);
    signal(SIGINT, SIG_IGN);       /* the supervisor's: it tells us to drain */
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    sigprocmask(SIG_SETMASK, &s->oldmask, NULL);
    close_inherited(s, slot);

    if ((s->o.flags & IOP_SHARD_PIN_CPU)) {
        int r = iop__shard_pin(&s->cpus, slot);
        if (r < 0)
            fatal(ctl, r, iop_last_error());
    }
    iop_loop_opts_t lo = { 0 };
    if (s->o.loop_opts)
        memcpy(&lo, s->o.loop_opts, s->o.loop_opts->size && s->o.loop_opts->size < sizeof lo
                                        ? s->o.loop_opts->size : sizeof lo);
    lo.size = sizeof lo;
    if (s->o.backend)
        lo.backend = s->o.backend;
    iop_loop_t *loop;
    int r = iop_loop_create(&loop, &lo);
    if (r < 0) {
        char why[IOP__MSG_MAX];
        snprintf(why, sizeof why, "loop: %s", iop_last_error()[0] ? iop_last_error() : iop_strerror(r));
        fatal(ctl, r, why);
    }

    int fds[s->lst.naddr ? s->lst.naddr : 1];
    uint32_t parked[s->lst.naddr ? s->lst.naddr : 1];
    for (uint32_t a = 0; a < s->lst.naddr; a++) {
        fds[a] = iop__shard_listener_fd(&s->lst, a, slot);
        parked[a] = 0;
    }
    iop_shard_worker_t w = {
        .index = slot, .count = s->n, .loop = loop, .arg = s->o.arg, .ctl = ctl,
        .nlisten = s->lst.naddr, .fds = fds, .entry = s->lst.entry, .parked = parked,
        .sweep_left = 64 * s->lst.naddr,
        .drain_timeout = s->o.drain_timeout_ns, .cell = cell,
    };
    iop_wg_init(&w.drain_wg);
    iop_wg_add(&w.drain_wg, 1);
    struct worker_run run = { .w = &w, .fn = s->o.worker, .result = 0 };
    iop_coro_t *watcher = NULL, *main_c = NULL;
    iop_coro_opts_t wo = { .size = sizeof wo, .name = "shard-ctl" };
    iop_coro_opts_t mo = { .size = sizeof mo, .name = "shard-worker" };
    if ((r = iop_go(loop, watch_ctl, &w, &wo, &watcher)) < 0 ||
        (r = iop_go(loop, call_worker, &run, &mo, &main_c)) < 0)
        fatal(ctl, r, iop_last_error());
    r = iop_join(main_c, NULL, 0);
    int status = run.result;
    char note[IOP__MSG_MAX] = "";
    if (r < 0) {
        snprintf(note, sizeof note, "worker coroutine: %s: %s", iop_strerror(r), iop_last_error());
        status = 1;
    } else if (status < 0) {
        snprintf(note, sizeof note, "worker returned %d (%s)%s%s", status, iop_strerror(status),
                 iop_last_error()[0] ? ": " : "", iop_last_error());
    }
    if (note[0])
        say(ctl, IOP__MSG_EXIT, NULL, 0, note);
    iop_cancel(watcher);
    iop_join(watcher, NULL, 0);
    for (uint32_t a = 0; a < w.nlisten; a++)
        if (w.fds[a] >= 0)
            iop_fd_close(loop, w.fds[a]);
    iop_fd_close(loop, ctl);
    iop_loop_destroy(loop);
    leave(status == 0 ? 0 : status > 0 && status < 256 ? status : 1);
}
