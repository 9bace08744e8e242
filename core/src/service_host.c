/* Serving a listener with a service plugin: an acceptor coroutine, one coroutine
 * per connection in a nursery. Each connection's record lives on its coroutine's
 * stack and sits in the host's list while it is served, so that a drain can cancel
 * the idle ones at once (request/response services) and leave the others until the
 * deadline, when it cancels them and shuts their sockets down. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "ioplex.h"
#include "error_internal.h"
#include "coro/coro_internal.h"

#define BACKOFF_MIN_NS (50ull * 1000 * 1000)
#define BACKOFF_MAX_NS (1000ull * 1000 * 1000)

typedef struct host_conn {
    iop_service_conn_t pub;
    struct host_conn *prev, *next;
    iop_coro_t *coro;
    struct sockaddr_storage peer;
} host_conn_t;

/* What the acceptor hands a new connection coroutine: copied onto that coroutine's
 * stack when it is spawned (iop_coro_opts_t.arg_size), so it does not matter when
 * the coroutine first runs: after more accepts, or after the acceptor has ended
 * (a drain hands over the queued connections in one sweep, and a cancelled
 * acceptor cannot yield). The acceptor yields every YIELD_EVERY accepts so that a
 * burst does not keep the connections it took from being served. */
#define YIELD_EVERY 32

typedef struct handoff {
    iop_service_host_t *h;
    int fd;
    struct sockaddr_storage peer;
    socklen_t peerlen;
} handoff_t;

static void *conn_main(void *arg)
{
    const handoff_t *ho = arg;
    iop_service_host_t *h = ho->h;
    host_conn_t c;
    memset(&c, 0, sizeof c);
    c.peer = ho->peer;
    c.pub.fd = ho->fd;
    c.pub.peer = (const struct sockaddr *)&c.peer;
    c.pub.peerlen = ho->peerlen;
    c.pub.worker = h->worker;
    c.pub.stats = h->stats;
    c.pub.draining = &h->draining;
    /* Services write whole replies: Nagle would hold a reply's last segment back
     * until the peer's (delayed) ACK of the one before, 40 ms a time. A connection
     * from listen_fd has TCP_NODELAY from it (set at start); others set it here. */
    if (h->listen_fd < 0 && (c.peer.ss_family == AF_INET || c.peer.ss_family == AF_INET6)) {
        int one = 1;
        (void)setsockopt(c.pub.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    c.coro = iop_self();
    c.next = h->live;
    if (c.next)
        c.next->prev = &c;
    h->live = &c;

    int r = h->desc->serve(h->state, &c.pub);
    if (r < 0 && r != -ECANCELED && h->stats)
        h->stats->errors++;

    if (c.prev)
        c.prev->next = c.next;
    else
        h->live = c.next;
    if (c.next)
        c.next->prev = c.prev;
    iop_close(c.pub.fd);
    if (h->stats)
        h->stats->open--;
    return NULL;
}

static void *acceptor_main(void *arg)
{
    iop_service_host_t *h = arg;
    uint64_t backoff = BACKOFF_MIN_NS;
    static const iop_coro_opts_t conn_opts = { .size = sizeof conn_opts, .name = "service-conn",
                                               .arg_size = sizeof(handoff_t) };
    unsigned next = 0;
    /* Ends on -ECANCELED only: a draining shard accept hands over what is still
     * queued, one at a time, and closes its listener when that is done; stopping
     * at the first would leave the listener open and its queue unserved. */
    for (;;) {
        handoff_t ho = { .h = h, .peerlen = sizeof ho.peer };
        int fd = h->accept ? h->accept(h->accept_arg, (struct sockaddr *)&ho.peer, &ho.peerlen)
                           : iop_accept(h->listen_fd, (struct sockaddr *)&ho.peer, &ho.peerlen, 0);
        if (fd >= 0) {
            if (h->shed) {
                fprintf(stderr, "ioplex: worker %d: service %s: accepting again\n", h->worker, h->desc->name);
                h->shed = 0;
            }
            backoff = BACKOFF_MIN_NS;
            ho.fd = fd;
            if (iop_nursery_go(&h->conns, conn_main, &ho, &conn_opts) < 0) {
                fprintf(stderr, "ioplex: worker %d: service %s: cannot start a connection coroutine: %s\n",
                        h->worker, h->desc->name, iop_last_error());
                close(fd);
                if (h->stats)
                    h->stats->errors++;
                continue;
            }
            if (h->stats) {
                h->stats->connections++;
                h->stats->open++;
            }
            if (++next % YIELD_EVERY == 0)
                iop_yield();     /* let the connections taken so far start */
            continue;
        }
        switch (-fd) {
        case ECANCELED:
            return NULL;
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM:
            /* Out of fds or memory: the pending connections wait in the backlog
             * until some close; sleep instead of spinning on a readable listener. */
            if (!h->shed++)
                fprintf(stderr, "ioplex: worker %d: service %s: accept: %s; new connections wait "
                        "until some close\n", h->worker, h->desc->name, iop_strerror(fd));
            if (iop__pause(backoff) < 0)   /* never ends over a want of memory */
                return NULL;
            backoff = backoff * 2 > BACKOFF_MAX_NS ? BACKOFF_MAX_NS : backoff * 2;
            break;
        case ECONNABORTED:
        case EINTR:
        case EAGAIN:
        case EPROTO:
        case EPERM:
        case ETIMEDOUT:
            break;               /* that connection is gone; take the next */
        default:
            fprintf(stderr, "ioplex: worker %d: service %s: accept failed: %s\n", h->worker,
                    h->desc->name, iop_strerror(fd));
            return NULL;
        }
    }
}

int iop_service_host_start(iop_service_host_t *h)
{
    if (!h || !h->desc || !h->loop || !h->stats || (h->listen_fd < 0 && !h->accept))
        return iop__fail(-EINVAL, "iop_service_host_start: incomplete host record (desc, loop, stats, "
                         "and a listener or an accept function are required)");
    if (h->listen_fd >= 0) {
        /* Options accepted sockets inherit: one system call per host, not per
         * connection (not TCP: no-ops). Accepting a client-first connection before
         * its request is in costs a failed receive, a readiness registration and a
         * wake (a third of the CPU per connection on epoll with a connection per
         * request); 1 s is the shortest deferral, one SYN-ACK retransmit, after
         * which a silent client is accepted anyway. */
        int one = 1;
        (void)setsockopt(h->listen_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (h->desc->flags & IOP_SERVICE_CLIENT_FIRST)
            (void)setsockopt(h->listen_fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &one, sizeof one);
    }
    h->draining = 0;
    h->live = NULL;
    h->shed = 0;
    iop_nursery_init(&h->conns, h->loop);
    static const iop_coro_opts_t opts = { .size = sizeof opts, .name = "service-accept" };
    return iop_go(h->loop, acceptor_main, h, &opts, &h->acceptor);
}

/* The drain's end: the sockets of the connections still served are shut down and
 * their waiting ops fail. Their cancel does not end everything at once (a send
 * behind lingers after a cancel until its own deadline, which may be far later).
 * The shutdown alone would not reach an op on every backend (sigio gets no signal
 * for a shutdown of our own): forgetting the fd fails its waiting ops everywhere. */
static void drain_over(iop_timer_t *t)
{
    iop_service_host_t *h = t->data;
    for (host_conn_t *c = h->live; c; c = c->next) {
        (void)shutdown(c->pub.fd, SHUT_RDWR);
        iop_fd_forget(h->loop, c->pub.fd);
    }
}

int iop_service_host_drain(iop_service_host_t *h, uint64_t deadline)
{
    if (!h)
        return iop__fail(-EINVAL, "iop_service_host_drain: NULL host");
    h->draining = 1;
    h->drain_deadline = deadline;
    if (h->acceptor) {
        iop_cancel(h->acceptor);
        iop_join(h->acceptor, NULL, 0);
        h->acceptor = NULL;
    }
    if (h->desc->flags & IOP_SERVICE_DRAIN_IDLE)
        for (host_conn_t *c = h->live; c; c = c->next)
            if (c->pub.idle)
                iop_cancel(c->coro);
    uint64_t now = iop_now(h->loop), end = deadline ? deadline : now;
    iop_timer_t over;
    memset(&over, 0, sizeof over);
    over.data = h;
    int timed = iop_timer_start(h->loop, &over, end > now ? end - now : 0, 0, drain_over) == 0;
    int r = iop_nursery_close(&h->conns, end);
    if (timed)
        iop_timer_stop(&over);
    return r;
}
