/* ioplex backend: signal-driven I/O (O_ASYNC + F_SETSIG + signalfd), level-triggered.
 *
 * Each watched fd queues a real-time signal carrying si_fd to the loop thread when
 * its state changes; the signals are blocked and read in batches from a signalfd.
 * A signal only says "something changed", so it puts the fd in the check set, and
 * every poll verifies the whole check set with one poll(2): fds still ready are
 * reported (and stay, level-triggered), the others leave until their next signal.
 * When the real-time queue overflows the kernel sends a plain SIGIO instead, and
 * every watched fd goes back into the check set. Files that cannot signal (the
 * core's eventfd, timerfds, regular files), and writers waiting for room on an fd
 * whose kind does not signal it (AF_UNIX stream), stay in the check set while
 * watched and are waited on together with the signalfd. See README.md. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "sigio_internal.h"

#define MIN_SLOTS 64

static short to_poll(unsigned mask)
{
    return (short)(((mask & IOP_READ) ? POLLIN : 0) | ((mask & IOP_WRITE) ? POLLOUT : 0));
}

/* Reports only what was asked for, plus ERR/HUP. On ERR/HUP the core retries the
 * syscall of both directions, so the asked-for directions are set too. */
static unsigned from_poll(short revents, short asked)
{
    unsigned r = ((revents & POLLIN) ? IOP_READ : 0u) | ((revents & POLLOUT) ? IOP_WRITE : 0u);
    if (revents & (POLLERR | POLLNVAL))
        r |= IOP_ERR;
    if (revents & POLLHUP)
        r |= IOP_HUP;
    if (revents & POLLNVAL)
        r |= IOP_EV_NVAL;          /* closed behind the loop's back: the core drops it */
    if (r & (IOP_ERR | IOP_HUP))
        r |= ((asked & POLLIN) ? IOP_READ : 0u) | ((asked & POLLOUT) ? IOP_WRITE : 0u);
    return r;
}

static uint64_t clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Room for need watched fds, and as many check entries plus the signalfd's: the
 * check set never holds more, so adding to it on the poll path cannot fail. */
static int grow_slots(sigio_state_t *st, int need)
{
    if (need <= st->watched_cap)
        return 0;
    int cap = st->watched_cap ? st->watched_cap : MIN_SLOTS;
    while (cap < need) {
        if (cap > INT_MAX / 4)
            return -ENOMEM;
        cap *= 2;
    }
    const iop_backend_host_t *h = st->host;
    int32_t *watched = h->realloc(st->watched, (size_t)cap * sizeof *watched);
    if (!watched)
        return -ENOMEM;
    st->watched = watched;
    struct pollfd *checks = h->realloc(st->checks, (size_t)(cap + 1) * sizeof *checks);
    if (!checks)
        return -ENOMEM;
    st->checks = checks;
    uint8_t *polled = h->realloc(st->polled, (size_t)cap + 1);
    if (!polled)
        return -ENOMEM;
    st->polled = polled;
    st->watched_cap = cap;   /* only now: every array holds cap entries */
    st->checks_cap = cap + 1;
    return 0;
}

static sigio_fd_t *fd_state_of(sigio_state_t *st, int fd)
{
    return st->host->fd_state(st->host->core, fd);
}

static int watched_index(const sigio_state_t *st, int fd, const sigio_fd_t *fs)
{
    int i = fs->watch_slot - 1;
    return i >= 0 && i < st->nwatched && st->watched[i] == fd ? i : -1;
}

static int check_index(const sigio_state_t *st, int fd, const sigio_fd_t *fs)
{
    int i = fs->check_slot - 1;
    return i >= 1 && i < st->nchecks && st->checks[i].fd == fd ? i : -1;
}

/* Whether fd's check entry stays while watched: the fd cannot signal, or asks for
 * write room that its kind does not signal. */
static uint8_t kept_in_checks(const sigio_fd_t *fs)
{
    return fs->polled || ((fs->mask & IOP_WRITE) && fs->write_kind == SIGIO_WRITE_POLLED);
}

static void check_add(sigio_state_t *st, int fd, sigio_fd_t *fs)
{
    int i = st->nchecks++;
    st->checks[i] = (struct pollfd){ .fd = fd, .events = to_poll(fs->mask) };
    st->polled[i] = kept_in_checks(fs);
    fs->check_slot = i + 1;
}

/* Removes entry i; the last entry moves into the hole. */
static void check_remove(sigio_state_t *st, int i)
{
    sigio_fd_t *fs = fd_state_of(st, st->checks[i].fd);
    if (fs)
        fs->check_slot = 0;
    int last = --st->nchecks;
    if (i == last)
        return;
    st->checks[i] = st->checks[last];
    st->polled[i] = st->polled[last];
    sigio_fd_t *moved = fd_state_of(st, st->checks[i].fd);
    if (moved)
        moved->check_slot = i + 1;
}

static void watched_remove(sigio_state_t *st, int i)
{
    int last = --st->nwatched;
    if (i == last)
        return;
    st->watched[i] = st->watched[last];
    sigio_fd_t *moved = fd_state_of(st, st->watched[i]);
    if (moved)
        moved->watch_slot = i + 1;
}

/* After an overflow any watched fd may have lost its signal: check them all. */
static void rescan(sigio_state_t *st)
{
    st->rescan = 0;
    for (int i = 0; i < st->nwatched; i++) {
        int fd = st->watched[i];
        sigio_fd_t *fs = fd_state_of(st, fd);
        if (fs && check_index(st, fd, fs) < 0)
            check_add(st, fd, fs);
    }
}

/* One signal read from the signalfd. *stray is the last fd found armed but not
 * watched, so a burst of its signals costs one disarm. */
static void note_signal(sigio_state_t *st, const struct signalfd_siginfo *si, int *stray)
{
    if ((int)si->ssi_signo == SIGIO) {
        sigio_thread_rescan();   /* the overflow may have dropped anyone's signals */
        return;
    }
    /* si_code > 0 (POLL_IN ... POLL_HUP) only for the kernel's readiness reports;
     * kill() or sigqueue() of the same signal number carries no fd. */
    if ((int)si->ssi_signo != st->sig || si->ssi_code <= 0)
        return;
    int fd = si->ssi_fd;
    sigio_fd_t *fs = fd >= 0 ? fd_state_of(st, fd) : NULL;
    if (fs && watched_index(st, fd, fs) >= 0) {
        if (check_index(st, fd, fs) < 0)
            check_add(st, fd, fs);
        return;
    }
    /* An fd unwatched earlier stays armed (the core unwatches just before most
     * closes, where disarming would be wasted): stop it signalling now. */
    if (fd >= 0 && fd != *stray) {
        sigio_disarm(st, fd);
        *stray = fd;
    }
}

/* Reads every queued signal, in batches. 0 or -errno. */
static int drain(sigio_state_t *st)
{
    int stray = -1;
    for (;;) {
        (*st->host->syscalls)++;
        ssize_t got = read(st->sfd, st->sigbuf, SIGIO_BATCH * sizeof *st->sigbuf);
        if (got < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -errno;
        int n = (int)((size_t)got / sizeof *st->sigbuf);
        for (int i = 0; i < n; i++)
            note_signal(st, &st->sigbuf[i], &stray);
        if (n < SIGIO_BATCH)
            return 0;
    }
}

/* Reports the check entries with revents, up to max, starting where the last full
 * batch stopped; then drops the entries found not ready (polled fds stay). */
static int collect(sigio_state_t *st, iop_event_t *events, int max)
{
    int span = st->nchecks - 1, n = 0;
    int start = st->cursor < span ? st->cursor : 0;
    for (int k = 0; k < span && n < max; k++) {
        int pos = (start + k) % span;
        const struct pollfd *p = &st->checks[1 + pos];
        if (!p->revents)
            continue;
        events[n++] = (iop_event_t){ .fd = p->fd, .revents = from_poll(p->revents, p->events) };
        st->cursor = pos + 1;
    }
    /* Backwards: the entry moved into a hole has been looked at already. */
    for (int i = st->nchecks - 1; i >= 1; i--)
        if (!st->checks[i].revents && !st->polled[i])
            check_remove(st, i);
    return n;
}

/* The zero-timeout verification: one poll(2) over the check set, then the signals
 * that queued meanwhile. If nothing was ready but signals named new fds, verify
 * those at once. Returns the events filled, or -errno. */
static int check(sigio_state_t *st, iop_event_t *events, int max)
{
    int n = 0;
    for (int round = 0; round < 2; round++) {
        if (st->rescan)
            rescan(st);
        (*st->host->syscalls)++;
        if (poll(st->checks, (nfds_t)st->nchecks, 0) < 0)
            return errno == EINTR ? 0 : -errno;
        n = collect(st, events, max);
        if (!(st->checks[0].revents & POLLIN))
            return n;
        int r = drain(st);
        if (r < 0)
            return r;
        if (n > 0)
            return n;   /* the new fds are verified by the next call */
    }
    return n;
}

/* Sleeps until a signal is queued, a polled fd is ready or timeout_ns passes (-1:
 * no limit); reads the signals. 0 on timeout, 1 if woken, or -errno. */
static int wait_signals(sigio_state_t *st, int64_t timeout_ns)
{
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000);
        ts.tv_nsec = (long)(timeout_ns % 1000000000);
        tsp = &ts;
    }
    (*st->host->syscalls)++;
    int r = ppoll(st->checks, (nfds_t)st->nchecks, tsp, NULL);
    if (r <= 0)
        return r == 0 || errno == EINTR ? 0 : -errno;
    if (st->checks[0].revents & POLLIN) {
        r = drain(st);
        if (r < 0)
            return r;
    }
    return 1;
}

static int backend_probe(char *why, size_t whylen)
{
    if (SIGRTMIN + SIGIO_DEFAULT_OFFSET > SIGRTMAX) {
        snprintf(why, whylen, "sigio: no real-time signal SIGRTMIN+%d here", SIGIO_DEFAULT_OFFSET);
        return -ENOTSUP;
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGIO);
    int fd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        snprintf(why, whylen, "signalfd: %s", strerror(err));
        return -err;
    }
    close(fd);
    return 0;
}

static void free_state(sigio_state_t *st)
{
    const iop_backend_host_t *h = st->host;
    h->free(st->sigbuf);
    h->free(st->checks);
    h->free(st->polled);
    h->free(st->watched);
    h->free(st->armed);
    h->free(st);
}

static int backend_create(void **state, const iop_backend_host_t *host,
                          const iop_backend_config_t *cfg, char *why, size_t whylen)
{
    (void)cfg;
    sigio_state_t *st = host->alloc(sizeof *st);
    if (!st) {
        snprintf(why, whylen, "sigio: out of memory");
        return -ENOMEM;
    }
    *st = (sigio_state_t){ .host = host, .sfd = -1 };
    st->sigbuf = host->alloc(SIGIO_BATCH * sizeof *st->sigbuf);
    if (!st->sigbuf || grow_slots(st, MIN_SLOTS) < 0) {
        free_state(st);
        snprintf(why, whylen, "sigio: out of memory");
        return -ENOMEM;
    }
    int r = sigio_signals_open(st, why, whylen);
    if (r < 0) {
        free_state(st);
        return r;
    }
    st->checks[0] = (struct pollfd){ .fd = st->sfd, .events = POLLIN };
    st->polled[0] = 1;
    st->nchecks = 1;
    *state = st;
    return 0;
}

/* In a forked child the watched files' O_ASYNC and owner are the parent's: only
 * our signalfd and memory go. */
static void backend_abandon(void *state)
{
    sigio_state_t *st = state;
    sigio_signals_close(st);
    free_state(st);
}

/* Disarms every fd it armed, so that no signal reaches the thread for this loop
 * any more, and reads what already queued. The signals stay blocked: one
 * still in flight would otherwise kill the process (their default action). */
static void backend_destroy(void *state)
{
    sigio_state_t *st = state;
    sigio_disarm_all(st);    /* the watched fds and those left armed at an unwatch */
    st->nwatched = 0;
    st->nchecks = 1;
    drain(st);
    sigio_signals_close(st);
    free_state(st);
}

static int backend_watch(void *state, int fd, unsigned old_mask, unsigned new_mask, void *fd_state)
{
    sigio_state_t *st = state;
    sigio_fd_t *fs = fd_state;
    (void)old_mask;   /* our own arrays are the truth, as in poll */
    if (fd < 0 || !fs)
        return -EBADF;
    new_mask &= IOP_READ | IOP_WRITE;
    int w = watched_index(st, fd, fs);
    int c = check_index(st, fd, fs);
    if (!new_mask) {
        /* Left armed: the fd is usually about to be closed, which disarms it. */
        if (c >= 0)
            check_remove(st, c);
        if (w >= 0)
            watched_remove(st, w);
        *fs = (sigio_fd_t){ 0 };
        return 0;
    }
    if (w < 0) {
        if (grow_slots(st, st->nwatched + 1) < 0)
            return -ENOMEM;
        /* Re-armed on every new watch: the number may name a new file by now. */
        int polled = 0;
        int r = sigio_arm(st, fd, &polled);
        if (r < 0)
            return r;
        w = st->nwatched++;
        st->watched[w] = fd;
        *fs = (sigio_fd_t){ .watch_slot = w + 1, .polled = (uint8_t)polled };
        c = -1;
    }
    fs->mask = (uint8_t)new_mask;
    if ((new_mask & IOP_WRITE) && fs->write_kind == SIGIO_WRITE_UNKNOWN)
        fs->write_kind = (uint8_t)sigio_write_kind(st, fd);
    /* A direction already ready when asked for sends no signal: check it now. */
    if (c < 0) {
        check_add(st, fd, fs);
    } else {
        st->checks[c].events = to_poll(new_mask);
        st->polled[c] = kept_in_checks(fs);
    }
    return 0;
}

static int backend_poll(void *state, iop_event_t *events, int max, int64_t timeout_ns)
{
    sigio_state_t *st = state;
    /* Signals go to the thread that created the instance; elsewhere none arrive. */
    if (!sigio_on_own_thread(st))
        return -EXDEV;
    if (max <= 0)
        return 0;
    uint64_t deadline = timeout_ns > 0 ? clock_ns() + (uint64_t)timeout_ns : 0;
    for (;;) {
        int n = check(st, events, max);
        if (n != 0 || timeout_ns == 0)
            return n;
        int64_t left = -1;
        if (timeout_ns > 0) {
            uint64_t now = clock_ns();
            if (now >= deadline)
                return 0;   /* also under a stream of SIGIOs, each asking a rescan */
            left = (int64_t)(deadline - now);
        }
        if (st->rescan)
            continue;   /* a SIGIO came with the last signals: check before sleeping */
        /* The failed check left the signalfd, the polled fds and at most the fds
         * named by its last signals, which this wait verifies as well. */
        int r = wait_signals(st, left);
        if (r <= 0)
            return r;
    }
}

IOP_BACKEND_EXPORT const iop_backend_desc_t iop_backend_descriptor = {
    .abi_version = IOP_BACKEND_ABI_VERSION,
    .desc_size = sizeof(iop_backend_desc_t),
    .name = "sigio",
    .summary = "signal-driven I/O: O_ASYNC + F_SETSIG real-time signals read from a signalfd",
    .model = IOP_MODEL_READINESS,
    .caps = IOP_CAP_UNLIMITED_FDS | IOP_CAP_NEED_REINIT,
    .fd_state_size = sizeof(sigio_fd_t),
    .probe = backend_probe,
    .create = backend_create,
    .destroy = backend_destroy,
    .abandon = backend_abandon,
    .watch = backend_watch,
    .submit = NULL,
    .poll = backend_poll,
    .wake = NULL,
};
