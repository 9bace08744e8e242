/* ioplex backend: epoll(7), level-triggered.
 *
 * The kernel keeps the interest set, so there is no per-fd storage: each
 * registration's epoll data carries the fd and the mask asked for, which is all
 * poll needs to translate an event. The instance is an fd shared across fork, hence
 * NEED_REINIT. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>
#include "ioplex/backend.h"

#define MIN_EVENTS 64

typedef struct epoll_state {
    const iop_backend_host_t *host;
    int epfd;
    struct epoll_event *events;   /* what epoll_wait fills, translated after */
    int cap;                      /* entries allocated in events */
} epoll_state_t;

/* Rounds up so a 0.3 ms timer sleeps 1 ms instead of spinning on 0. */
static int timeout_ms(int64_t ns)
{
    if (ns < 0)
        return -1;
    int64_t ms = ns / 1000000 + (ns % 1000000 != 0);
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* EPOLLRDHUP is not asked for: EPOLLIN already fires on a peer's shutdown, and a
 * persistent HUP would make the core retry writes on a half-closed socket. */
static uint32_t to_epoll(unsigned mask)
{
    return ((mask & IOP_READ) ? EPOLLIN : 0u) | ((mask & IOP_WRITE) ? EPOLLOUT : 0u) |
           ((mask & IOP_WATCH_EXCLUSIVE) ? EPOLLEXCLUSIVE : 0u);
}

/* Reports only what was asked for, plus ERR/HUP. On ERR/HUP the core retries the
 * syscall of both directions, so the asked-for directions are set too. */
static unsigned from_epoll(uint32_t ev, unsigned asked)
{
    asked &= IOP_READ | IOP_WRITE;
    unsigned r = ((ev & EPOLLIN) ? IOP_READ : 0u) | ((ev & EPOLLOUT) ? IOP_WRITE : 0u);
    if (ev & EPOLLERR)
        r |= IOP_ERR;
    if (ev & (EPOLLHUP | EPOLLRDHUP))
        r |= IOP_HUP;
    if (r & (IOP_ERR | IOP_HUP))
        r |= asked;
    return r & (asked | IOP_ERR | IOP_HUP);
}

/* Sizes the wait buffer for max events, doubling so it settles after a few calls. */
static int grow_events(epoll_state_t *st, int max)
{
    if (max <= st->cap)
        return 0;
    int cap = st->cap ? st->cap : MIN_EVENTS;
    while (cap < max)
        cap = cap > INT_MAX / 2 ? max : cap * 2;
    struct epoll_event *events = st->host->realloc(st->events, (size_t)cap * sizeof *events);
    if (!events)
        return -ENOMEM;
    st->events = events;
    st->cap = cap;
    return 0;
}

/* One epoll_ctl, counted. 0 or -errno. */
static int ctl(epoll_state_t *st, int op, int fd, unsigned mask)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = to_epoll(mask);
    ev.data.u64 = (uint64_t)(uint32_t)fd | (uint64_t)mask << 32;
    (*st->host->syscalls)++;
    return epoll_ctl(st->epfd, op, fd, &ev) < 0 ? -errno : 0;
}

static int backend_probe(char *why, size_t whylen)
{
    int fd = epoll_create1(EPOLL_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        snprintf(why, whylen, "epoll_create1: %s", strerror(err));
        return -err;
    }
    close(fd);
    return 0;
}

static int backend_create(void **state, const iop_backend_host_t *host,
                        const iop_backend_config_t *cfg, char *why, size_t whylen)
{
    (void)cfg;
    epoll_state_t *st = host->alloc(sizeof *st);
    if (!st) {
        snprintf(why, whylen, "epoll: out of memory");
        return -ENOMEM;
    }
    *st = (epoll_state_t){ .host = host };
    if (grow_events(st, MIN_EVENTS) < 0) {
        host->free(st);
        snprintf(why, whylen, "epoll: out of memory");
        return -ENOMEM;
    }
    (*host->syscalls)++;
    st->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (st->epfd < 0) {
        int err = errno;
        snprintf(why, whylen, "epoll_create1: %s", strerror(err));
        host->free(st->events);
        host->free(st);
        return -err;
    }
    *state = st;
    return 0;
}

static void backend_destroy(void *state)
{
    epoll_state_t *st = state;
    (*st->host->syscalls)++;
    close(st->epfd);
    st->host->free(st->events);
    st->host->free(st);
}

static int backend_watch(void *state, int fd, unsigned old_mask, unsigned new_mask, void *fd_state)
{
    epoll_state_t *st = state;
    (void)fd_state;
    old_mask &= IOP_READ | IOP_WRITE | IOP_WATCH_EXCLUSIVE;
    new_mask &= IOP_READ | IOP_WRITE | IOP_WATCH_EXCLUSIVE;
    if (old_mask == new_mask)
        return 0;
    if (!new_mask) {
        int r = ctl(st, EPOLL_CTL_DEL, fd, 0);
        /* ENOENT/EBADF: the fd was closed behind our back, which removed it. */
        return r == -ENOENT || r == -EBADF ? 0 : r;
    }
    /* Only EPOLL_CTL_ADD takes (or drops) EPOLLEXCLUSIVE: such a change registers
     * anew, as does an EEXIST (a reused fd number still in the set). */
    int excl = ((old_mask | new_mask) & IOP_WATCH_EXCLUSIVE) != 0;
    if (!old_mask || excl) {
        int r = old_mask ? ctl(st, EPOLL_CTL_DEL, fd, 0) : 0;
        if (r < 0 && r != -ENOENT)
            return r;
        r = ctl(st, EPOLL_CTL_ADD, fd, new_mask);
        if (r != -EEXIST)
            return r;
        if (!excl)
            return ctl(st, EPOLL_CTL_MOD, fd, new_mask);
        ctl(st, EPOLL_CTL_DEL, fd, 0);
        return ctl(st, EPOLL_CTL_ADD, fd, new_mask);
    }
    int r = ctl(st, EPOLL_CTL_MOD, fd, new_mask);
    /* ENOENT: closed and reopened under the same number; register the new file. */
    return r == -ENOENT ? ctl(st, EPOLL_CTL_ADD, fd, new_mask) : r;
}

static int backend_poll(void *state, iop_event_t *events, int max, int64_t timeout_ns)
{
    epoll_state_t *st = state;
    if (max <= 0)
        return 0;
    /* Allocation only until the buffer reaches the core's batch size; if it fails,
     * wait for fewer events rather than fail the loop. */
    if (grow_events(st, max) < 0)
        max = st->cap;
    (*st->host->syscalls)++;
    int n = epoll_wait(st->epfd, st->events, max, timeout_ms(timeout_ns));
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    for (int i = 0; i < n; i++) {
        uint64_t data = st->events[i].data.u64;
        events[i] = (iop_event_t){
            .fd = (int32_t)(uint32_t)data,
            .revents = from_epoll(st->events[i].events, (unsigned)(data >> 32)),
        };
    }
    return n;
}

IOP_BACKEND_EXPORT const iop_backend_desc_t iop_backend_descriptor = {
    .abi_version = IOP_BACKEND_ABI_VERSION,
    .desc_size = sizeof(iop_backend_desc_t),
    .name = "epoll",
    .summary = "epoll(7), level-triggered, O(1) wait",
    .model = IOP_MODEL_READINESS,
    .caps = IOP_CAP_UNLIMITED_FDS | IOP_CAP_O1_POLL | IOP_CAP_EXCLUSIVE_WAKE | IOP_CAP_NEED_REINIT,
    .fd_state_size = 0,
    .probe = backend_probe,
    .create = backend_create,
    .destroy = backend_destroy,
    .abandon = backend_destroy,   /* closing our copy of the epoll fd leaves the set to the parent */
    .watch = backend_watch,
    .submit = NULL,
    .poll = backend_poll,
    .wake = NULL,
};
