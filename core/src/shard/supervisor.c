/* The supervisor: options, listeners, the first workers, then one poll(2) loop over
 * a signalfd (SIGINT, SIGTERM, SIGHUP, blocked meanwhile: no handler runs any code),
 * the workers' pidfds and their control sockets, with the next deadline (a respawn,
 * a ready timeout, a drain deadline) as its timeout. It owns no ioplex loop: a
 * supervisor that forks must not hold a backend instance its children would share. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>
#include "loader.h"
#include "shard_internal.h"

#define DEFAULT_DRAIN    (10 * IOP__NS)
#define DEFAULT_READY    (10 * IOP__NS)
#define DEFAULT_CRASHES  5u
#define DEFAULT_WINDOW   (10 * IOP__NS)
#define DEFAULT_BACKOFF  (50 * IOP__MS)
#define DEFAULT_BACKOFF_MAX (5 * IOP__NS)

uint64_t iop__shard_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * IOP__NS + (uint64_t)ts.tv_nsec;
}

void iop__shard_log(iop__shard_sup_t *s, int level, const char *fmt, ...)
{
    char line[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (s->o.on_event)
        s->o.on_event(s->o.event_arg, level, line);
    else if (level >= IOP_SHARD_WARN)
        fprintf(stderr, "ioplex shard [%d]: %s\n", (int)s->self, line);
}

void iop__shard_fail(iop__shard_sup_t *s, int err, const char *fmt, ...)
{
    char msg[sizeof s->error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (s->result == 0 || s->result == -ETIMEDOUT) {
        s->result = err;
        snprintf(s->error, sizeof s->error, "%s", msg);
    }
    iop__shard_log(s, IOP_SHARD_WARN, "%s", msg);
    iop__shard_stop(s, "stopping after a failure");
}

void iop__shard_stop(iop__shard_sup_t *s, const char *why)
{
    if (s->stopping)
        return;
    s->stopping = 1;
    s->restart_slot = -1;
    /* Our copies of the listeners go now; each socket closes when its last worker
     * has stopped accepting, and new connections are refused from then on. */
    iop__shard_listeners_close(&s->lst);
    uint64_t deadline = iop__ns_after(iop__shard_now(), s->o.drain_timeout_ns);
    for (iop__shard_proc_t *p = s->procs; p; p = p->next)
        iop__shard_drain_proc(s, p, deadline);
    for (uint32_t i = 0; i < s->n; i++)
        s->slots[i].respawn_at = 0;
    iop__shard_log(s, IOP_SHARD_INFO, "%s: draining %u worker processes (any still running in %.1f s is "
                   "killed)", why, s->nprocs, (double)s->o.drain_timeout_ns / (double)IOP__NS);
}

static int check_opts(const iop_shard_opts_t *in, iop_shard_opts_t *o)
{
    if (!in || in->size == 0)
        return iop__fail(-EINVAL, "iop_shard_run: opts.size must be set");
    memset(o, 0, sizeof *o);
    memcpy(o, in, in->size < sizeof *o ? in->size : sizeof *o);
    o->size = sizeof *o;
    if (!o->worker)
        return iop__fail(-EINVAL, "iop_shard_run: opts.worker is required");
    if (o->flags & ~(IOP_SHARD_PIN_CPU | IOP_SHARD_STEER_CPU | IOP_SHARD_ALL_ADDRESSES))
        return iop__fail(-EINVAL, "iop_shard_run: unknown flags 0x%x", o->flags);
    if (o->listener_mode > IOP_SHARD_SHARED)
        return iop__fail(-EINVAL, "iop_shard_run: unknown listener mode %u", o->listener_mode);
    if ((o->flags & IOP_SHARD_STEER_CPU) &&
        (!(o->flags & IOP_SHARD_PIN_CPU) || o->listener_mode != IOP_SHARD_REUSEPORT))
        return iop__fail(-EINVAL, "iop_shard_run: CPU steering needs IOP_SHARD_PIN_CPU and reuseport listeners");
    if (o->workers > IOP__SHARD_MAX_WORKERS)
        return iop__fail(-EINVAL, "iop_shard_run: at most %u workers", IOP__SHARD_MAX_WORKERS);
    if (!o->drain_timeout_ns)
        o->drain_timeout_ns = DEFAULT_DRAIN;
    if (!o->ready_timeout_ns)
        o->ready_timeout_ns = DEFAULT_READY;
    if (!o->crash_limit)
        o->crash_limit = DEFAULT_CRASHES;
    if (o->crash_limit > IOP_SHARD_MAX_CRASH_LIMIT && o->crash_limit != IOP_SHARD_NO_CRASH_LIMIT)
        return iop__fail(-EINVAL, "iop_shard_run: crash_limit %u: at most %u, or IOP_SHARD_NO_CRASH_LIMIT",
                         o->crash_limit, IOP_SHARD_MAX_CRASH_LIMIT);
    if (!o->crash_window_ns)
        o->crash_window_ns = DEFAULT_WINDOW;
    if (!o->backoff_min_ns)
        o->backoff_min_ns = DEFAULT_BACKOFF;
    if (!o->backoff_max_ns)
        o->backoff_max_ns = DEFAULT_BACKOFF_MAX;
    if (o->backoff_max_ns < o->backoff_min_ns)
        o->backoff_max_ns = o->backoff_min_ns;
    return 0;
}

/* Will the workers' loops ask for sigio? (o->backend overrides the loop opts'.) */
static int is_sigio(const iop_shard_opts_t *o)
{
    const char *b = iop__backend_asked(o->backend);
    if (!b && o->loop_opts)
        b = iop__backend_asked(o->loop_opts->backend);
    return b && strcmp(b, "sigio") == 0;
}

/* Everything before the first fork; -errno with a message. */
static int setup(iop__shard_sup_t *s, const iop_shard_opts_t *in)
{
    int r = check_opts(in, &s->o);
    if (r < 0)
        return r;
    if ((r = iop__shard_cpus_get(&s->cpus)) < 0)
        return r;
    s->n = s->o.workers ? s->o.workers : s->cpus.n;
    if (s->o.listener_mode == IOP_SHARD_SHARED && s->n > 1 && s->o.listen && is_sigio(&s->o))
        return iop__fail(-EINVAL, "iop_shard_run: a shared listener does not suit the sigio backend "
                         "(a socket signals one owner process, so one worker would take every "
                         "connection): use IOP_SHARD_REUSEPORT");
    if (s->o.stats) {
        if (iop_shard_stats_count(s->o.stats) < s->n)
            return iop__fail(-EINVAL, "iop_shard_run: opts.stats has %u slots for %u workers",
                             iop_shard_stats_count(s->o.stats), s->n);
        s->stats = s->o.stats;
    } else {
        if ((r = iop_shard_stats_create(&s->stats, s->n)) < 0)
            return r;
        s->own_stats = 1;
    }
    s->slots = iop_calloc(s->n, sizeof *s->slots);
    if (!s->slots)
        return iop__fail(-ENOMEM, "iop_shard_run: out of memory for %u worker slots", s->n);
    for (uint32_t i = 0; i < s->n; i++) {
        uint32_t ring = s->o.crash_limit == IOP_SHARD_NO_CRASH_LIMIT ? 1 : s->o.crash_limit + 1;
        s->slots[i].crash_at = iop_calloc(ring, sizeof(uint64_t));
        if (!s->slots[i].crash_at)
            return iop__fail(-ENOMEM, "iop_shard_run: out of memory for the crash records");
    }
    if ((r = iop__shard_listeners_open(&s->lst, &s->o, s->n)) < 0)
        return r;
    /* The signals are ours before on_listen says where we listen: a SIGTERM sent as
     * soon as that appears stops us cleanly instead of killing us. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &set, &s->oldmask) < 0)
        return iop__fail(-errno, "sigprocmask: %s", strerror(errno));
    s->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s->sigfd < 0) {
        int err = errno;
        sigprocmask(SIG_SETMASK, &s->oldmask, NULL);
        return iop__fail(-err, "signalfd: %s", strerror(err));
    }
    for (uint32_t a = 0; a < s->lst.naddr; a++) {
        int fd = iop__shard_listener_fd(&s->lst, a, 0);
        if ((s->o.flags & IOP_SHARD_STEER_CPU) && (r = iop__shard_steer(fd, &s->cpus, s->n)) < 0)
            return r;
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
            return iop__fail(-errno, "listen %s: getsockname: %s", s->o.listen[s->lst.entry[a]],
                             strerror(errno));
        if (s->o.on_listen)
            s->o.on_listen(s->o.event_arg, s->lst.entry[a], (struct sockaddr *)&ss, len);
    }
    return 0;
}

static void on_signals(iop__shard_sup_t *s)
{
    struct signalfd_siginfo si;
    while (read(s->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
        int sig = (int)si.ssi_signo;
        if (sig == SIGHUP) {
            iop__shard_restart_begin(s);
        } else if (!s->stopping) {
            iop__shard_stop(s, sig == SIGINT ? "SIGINT" : "SIGTERM");
        } else {
            /* A second one: the operator does not want to wait. */
            for (iop__shard_proc_t *p = s->procs; p; p = p->next)
                iop__shard_kill(s, p, IOP__KILL_STOP);
            if (s->result == 0) {
                s->result = -EINTR;
                snprintf(s->error, sizeof s->error, "second %s: killed %u worker processes without waiting",
                         sig == SIGINT ? "SIGINT" : "SIGTERM", s->nprocs);
            }
            iop__shard_log(s, IOP_SHARD_WARN, "%s", s->error);
        }
    }
}

/* One turn: wait for a signal, a process event or the next deadline, handle them.
 * Nothing here gives up: workers must always be reaped before the supervisor
 * returns, so a failed allocation or poll just makes this turn a short sleep. */
static void turn(iop__shard_sup_t *s, struct pollfd **pfds, size_t *cap)
{
    size_t need = 1 + 2 * (size_t)s->nprocs;
    if (need > *cap) {
        struct pollfd *n = iop_realloc(*pfds, need * sizeof **pfds);
        if (n) {
            *pfds = n;
            *cap = need;
        }
    }
    struct pollfd *pf = *pfds;
    size_t k = 0;
    int room = need <= *cap, blind = !room;   /* blind: wake up often to reap */
    if (room) {
        pf[k++] = (struct pollfd){ .fd = s->sigfd, .events = POLLIN };
        for (iop__shard_proc_t *p = s->procs; p; p = p->next) {
            if (p->pidfd >= 0)
                pf[k++] = (struct pollfd){ .fd = p->pidfd, .events = POLLIN };
            if (p->ctl >= 0)
                pf[k++] = (struct pollfd){ .fd = p->ctl, .events = POLLIN };
        }
    }
    for (iop__shard_proc_t *p = s->procs; p; p = p->next)
        blind |= p->pidfd < 0;     /* no pidfd_open: waitpid finds its exit */
    uint64_t now = iop__shard_now(), next = iop__shard_next_timer(s);
    int timeout = blind ? 100 : 1000;
    if (next) {
        uint64_t ms = next > now ? (next - now + IOP__MS - 1) / IOP__MS : 0;
        if (ms < (uint64_t)timeout)
            timeout = (int)ms;
    }
    /* A signal of the program's own (a handler without SA_RESTART) ends the poll
     * early: that is no failure to wait on. */
    if (!room || (poll(pf, k, timeout) < 0 && errno != EINTR)) {
        struct timespec ts = { 0, 10 * (long)IOP__MS };
        nanosleep(&ts, NULL);
    }
    on_signals(s);
    for (iop__shard_proc_t *p = s->procs; p; p = p->next)
        iop__shard_read_ctl(s, p);
    iop__shard_reap(s);
    iop__shard_timers(s, iop__shard_now());
}

static void cleanup(iop__shard_sup_t *s, int blocked)
{
    /* Only reached with no worker left, or before the first fork. */
    if (s->sigfd >= 0) {
        struct signalfd_siginfo si;
        while (read(s->sigfd, &si, sizeof si) == (ssize_t)sizeof si)
            ;                      /* consumed here, not delivered once unblocked */
        close(s->sigfd);
    }
    if (blocked)
        sigprocmask(SIG_SETMASK, &s->oldmask, NULL);
    iop__shard_listeners_free(&s->lst);
    for (uint32_t i = 0; s->slots && i < s->n; i++)
        iop_free(s->slots[i].crash_at);
    iop_free(s->slots);
    if (s->own_stats)
        iop_shard_stats_free(s->stats);
    iop__shard_cpus_free(&s->cpus);
}

int iop_shard_run(const iop_shard_opts_t *opts)
{
    if (iop_self())
        return iop__fail(-EPERM, "iop_shard_run: call it outside any coroutine (the supervisor blocks)");
    iop__shard_sup_t *s = iop_calloc(1, sizeof *s);
    if (!s)
        return iop__fail(-ENOMEM, "iop_shard_run: out of memory");
    s->self = getpid();
    s->sigfd = -1;
    s->restart_slot = -1;
    int r = setup(s, opts);
    if (r < 0) {
        cleanup(s, s->sigfd >= 0);
        iop_free(s);
        return r;
    }
    iop__shard_log(s, IOP_SHARD_INFO, "supervisor %d: %u workers, %s listeners", (int)s->self, s->n,
                   s->o.listener_mode == IOP_SHARD_SHARED ? "shared" : "reuseport");
    for (uint32_t i = 0; i < s->n; i++)
        s->slots[i].respawn_at = 1;    /* due at once: the first turn starts them all */
    iop__shard_timers(s, iop__shard_now());
    struct pollfd *pfds = NULL;
    size_t cap = 0;
    while (!(s->stopping && s->nprocs == 0))
        turn(s, &pfds, &cap);
    iop_free(pfds);
    int result = s->result;
    if (result < 0)
        result = iop__fail(result, "%s", s->error);
    else
        iop__shard_log(s, IOP_SHARD_INFO, "supervisor %d: every worker has stopped", (int)s->self);
    cleanup(s, 1);
    iop_free(s);
    return result;
}
