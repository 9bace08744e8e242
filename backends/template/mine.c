/* A template backend plugin, built out of tree against an installed ioplex: the
 * smallest complete readiness backend, on epoll(7), level-triggered. Copy this
 * folder, rename "mine" (file names, the CMake target and .name), and fill in
 * your own mechanism.
 *
 * The contract (ioplex/backend.h, backends/README.md in the ioplex sources):
 *  - export one symbol, iop_backend_descriptor; keep everything else static;
 *  - probe: can it run here? create / destroy: one instance per loop;
 *  - watch: an fd's interest changes from old_mask to new_mask (0 = none);
 *  - poll: wait up to timeout_ns, report ready fds level-triggered;
 *  - allocate only through host->alloc/free, count syscalls in *host->syscalls. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <ioplex/backend.h>

#define MAX_BATCH 256

typedef struct mine {
    const iop_backend_host_t *host;
    int epfd;
    struct epoll_event evs[MAX_BATCH];
} mine_t;

static int mine_probe(char *why, size_t whylen)
{
    int fd = epoll_create1(EPOLL_CLOEXEC);
    if (fd < 0) {
        snprintf(why, whylen, "mine: epoll_create1: %s", strerror(errno));
        return -errno;
    }
    close(fd);
    return 0;
}

static int mine_create(void **state, const iop_backend_host_t *host,
                       const iop_backend_config_t *cfg, char *why, size_t whylen)
{
    (void)cfg;
    mine_t *m = host->alloc(sizeof *m);
    if (!m) {
        snprintf(why, whylen, "mine: out of memory");
        return -ENOMEM;
    }
    m->host = host;
    m->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (m->epfd < 0) {
        int e = errno;
        snprintf(why, whylen, "mine: epoll_create1: %s", strerror(e));
        host->free(m);
        return -e;
    }
    *state = m;
    return 0;
}

static void mine_destroy(void *state)
{
    mine_t *m = state;
    close(m->epfd);
    m->host->free(m);
}

static int mine_watch(void *state, int fd, unsigned old_mask, unsigned new_mask, void *fd_state)
{
    mine_t *m = state;
    (void)fd_state;
    struct epoll_event ev = { .data.fd = fd,
        .events = ((new_mask & IOP_READ) ? EPOLLIN | EPOLLRDHUP : 0u) | ((new_mask & IOP_WRITE) ? EPOLLOUT : 0u) };
    int op = !old_mask ? EPOLL_CTL_ADD : new_mask ? EPOLL_CTL_MOD : EPOLL_CTL_DEL;
    (*m->host->syscalls)++;
    if (epoll_ctl(m->epfd, op, fd, &ev) == 0)
        return 0;
    /* A removal must not fail because the fd is already closed. */
    return op == EPOLL_CTL_DEL && (errno == EBADF || errno == ENOENT) ? 0 : -errno;
}

static int mine_poll(void *state, iop_event_t *events, int max, int64_t timeout_ns)
{
    mine_t *m = state;
    /* Round up: a 0.3 ms timer must sleep 1 ms, not spin on 0. */
    int ms = timeout_ns < 0 ? -1 : (int)((timeout_ns + 999999) / 1000000);
    (*m->host->syscalls)++;
    int n = epoll_wait(m->epfd, m->evs, max < MAX_BATCH ? max : MAX_BATCH, ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    for (int i = 0; i < n; i++) {
        uint32_t e = m->evs[i].events;
        unsigned r = ((e & (EPOLLIN | EPOLLRDHUP)) ? IOP_READ : 0u) | ((e & EPOLLOUT) ? IOP_WRITE : 0u);
        if (e & EPOLLERR)
            r |= IOP_ERR | IOP_READ | IOP_WRITE;   /* the core retries the syscalls */
        if (e & EPOLLHUP)
            r |= IOP_HUP | IOP_READ;
        events[i] = (iop_event_t){ .fd = m->evs[i].data.fd, .revents = r };
    }
    return n;
}

IOP_BACKEND_EXPORT const iop_backend_desc_t iop_backend_descriptor = {
    .abi_version = IOP_BACKEND_ABI_VERSION,
    .desc_size = sizeof(iop_backend_desc_t),
    .name = "mine",
    .summary = "template backend: epoll, level-triggered, nothing more",
    .model = IOP_MODEL_READINESS,
    .caps = IOP_CAP_UNLIMITED_FDS,
    .probe = mine_probe,
    .create = mine_create,
    .destroy = mine_destroy,
    .watch = mine_watch,
    .poll = mine_poll,
};
