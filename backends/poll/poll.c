/* ioplex backend: poll(2).
 *
 * One dense pollfd array. Each fd's per-fd storage (kept by the core) holds the
 * index + 1 of its entry, so add, modify and remove are O(1): removal moves the last
 * entry into the hole and fixes that entry's stored index. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include "ioplex/backend.h"

#define MIN_SLOTS 64

typedef struct poll_state {
    const iop_backend_host_t *host;
    struct pollfd *fds;
    int nfds;                  /* entries in use */
    int cap;                   /* entries allocated */
    int cursor;                /* entry the next scan starts at (fairness) */
} poll_state_t;

/* Rounds up so a 0.3 ms timer sleeps 1 ms instead of spinning on 0. */
static int timeout_ms(int64_t ns)
{
    if (ns < 0)
        return -1;
    int64_t ms = ns / 1000000 + (ns % 1000000 != 0);
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

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

/* Makes room for one more entry, doubling so growth is rare. */
static int grow_slots(poll_state_t *st)
{
    if (st->nfds < st->cap)
        return 0;
    if (st->cap > INT_MAX / 2)
        return -ENOMEM;
    int cap = st->cap ? st->cap * 2 : MIN_SLOTS;
    struct pollfd *fds = st->host->realloc(st->fds, (size_t)cap * sizeof *fds);
    if (!fds)
        return -ENOMEM;
    st->fds = fds;
    st->cap = cap;
    return 0;
}

/* Adds an event for every entry in [lo, hi) with revents, up to max in total;
 * stops early once all *left entries poll() counted have been seen. */
static int scan_range(poll_state_t *st, int lo, int hi, iop_event_t *events, int n, int max,
                      int *left)
{
    for (int i = lo; i < hi && n < max && *left > 0; i++) {
        const struct pollfd *p = &st->fds[i];
        if (!p->revents)
            continue;
        --*left;
        unsigned revents = from_poll(p->revents, p->events);
        if (revents)
            events[n++] = (iop_event_t){ .fd = p->fd, .revents = revents };
        st->cursor = i + 1;
    }
    return n;
}

static int backend_probe(char *why, size_t whylen)
{
    (void)why;
    (void)whylen;
    return 0;   /* poll(2) exists on every Linux */
}

static int backend_create(void **state, const iop_backend_host_t *host,
                       const iop_backend_config_t *cfg, char *why, size_t whylen)
{
    (void)cfg;
    poll_state_t *st = host->alloc(sizeof *st);
    if (!st) {
        snprintf(why, whylen, "poll: out of memory");
        return -ENOMEM;
    }
    *st = (poll_state_t){ .host = host };
    if (grow_slots(st) < 0) {
        host->free(st);
        snprintf(why, whylen, "poll: out of memory");
        return -ENOMEM;
    }
    *state = st;
    return 0;
}

static void backend_destroy(void *state)
{
    poll_state_t *st = state;
    st->host->free(st->fds);
    st->host->free(st);
}

static int backend_watch(void *state, int fd, unsigned old_mask, unsigned new_mask, void *fd_state)
{
    poll_state_t *st = state;
    int32_t *slot = fd_state;
    (void)old_mask;
    if (fd < 0 || !slot)
        return -EBADF;
    /* Trust our own array over old_mask: the entry is ours if it names this fd. */
    int i = *slot - 1;
    if (i < 0 || i >= st->nfds || st->fds[i].fd != fd)
        i = -1;

    if (new_mask & (IOP_READ | IOP_WRITE)) {
        if (i < 0) {
            if (grow_slots(st) < 0)
                return -ENOMEM;
            i = st->nfds++;
            st->fds[i].fd = fd;
            *slot = i + 1;
        }
        st->fds[i].events = to_poll(new_mask);
        st->fds[i].revents = 0;
        return 0;
    }
    *slot = 0;
    if (i < 0)
        return 0;
    int last = --st->nfds;
    if (i != last) {
        st->fds[i] = st->fds[last];
        int32_t *moved = st->host->fd_state(st->host->core, st->fds[i].fd);
        if (moved)
            *moved = i + 1;
    }
    return 0;
}

static int backend_poll(void *state, iop_event_t *events, int max, int64_t timeout_ns)
{
    poll_state_t *st = state;
    (*st->host->syscalls)++;
    int ready = poll(st->fds, (nfds_t)st->nfds, timeout_ms(timeout_ns));
    if (ready < 0)
        return errno == EINTR ? 0 : -errno;
    if (ready == 0 || max <= 0)
        return 0;

    /* Start where the last full batch stopped, so early entries cannot starve later
     * ones. revents of entries not reached are rewritten by the next poll(). */
    int cursor = st->cursor < st->nfds ? st->cursor : 0;
    int n = scan_range(st, cursor, st->nfds, events, 0, max, &ready);
    return scan_range(st, 0, cursor, events, n, max, &ready);
}

IOP_BACKEND_EXPORT const iop_backend_desc_t iop_backend_descriptor = {
    .abi_version = IOP_BACKEND_ABI_VERSION,
    .desc_size = sizeof(iop_backend_desc_t),
    .name = "poll",
    .summary = "poll(2) over a dense pollfd array",
    .model = IOP_MODEL_READINESS,
    .caps = IOP_CAP_UNLIMITED_FDS,
    .fd_state_size = sizeof(int32_t),
    .probe = backend_probe,
    .create = backend_create,
    .destroy = backend_destroy,
    .abandon = backend_destroy,   /* memory only */
    .watch = backend_watch,
    .submit = NULL,
    .poll = backend_poll,
    .wake = NULL,
};
