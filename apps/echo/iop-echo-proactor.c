/* iop-echo-proactor: the echo server written straight on the proactor interface,
 * callbacks and caller-owned op records, with every fast-path mode of the loop
 * (multishot, provided buffers, fixed files). iop-echo-server is the same service
 * in coroutines; this one is the yardstick for what the coroutine layer costs and
 * the benchmark server for the kernel-bypass modes.
 *
 * One accept op stays in flight on each listener (a --listen name listens on each
 * of its addresses, bound by iop_shard_listen as the other servers bind). Each
 * connection is a caller-owned record with its fd, a recv op, a send op and a
 * buffer; it has exactly one op in flight at any time: recv → send (again for a
 * partial write) → recv ..., and a close op at end of file or on an error. Records come from a free list that grows in
 * chunks, so a message costs no allocation. SIGTERM / SIGINT arrive on a signalfd
 * watched by the loop, which stops it; then everything is closed and freed. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ioplex.h>
#include "hostport.h"
#include "listen_all.h"

#define PROG "iop-echo-proactor"
#define CONN_BUF_SIZE (16 * 1024)
#define CONNS_PER_CHUNK 64
#define BACKOFF_MIN_NS (50ull * 1000 * 1000)
#define BACKOFF_MAX_NS (1000ull * 1000 * 1000)
#define SHED_MAX_PER_ATTEMPT 64   /* pending connections dropped per attempt */
#define DRAIN_LIMIT_NS (1000ull * 1000 * 1000)

enum { EXIT_USAGE = 2 };

typedef struct server server_t;

typedef struct conn {
    server_t *srv;
    struct conn *prev, *next;    /* live list, or free list (next only) */
    int fd;                      /* -1 once a close has been started */
    int ops;                     /* ops in flight: the record is freed at 0 once closing */
    uint8_t closing, recv_live, send_live, eof;
    size_t len, sent;            /* bytes in buf (or the head pool buffer), echoed so far */
    uint32_t q_head, q_tail;     /* pool mode: received buffers to echo, bid + 1 (0 = none) */
    iop_op_t recv_op;
    iop_op_t send_op;
    iop_op_t close_op;
    char buf[CONN_BUF_SIZE];     /* copy mode only */
} conn_t;

typedef struct conn_chunk {
    struct conn_chunk *next;
    conn_t conns[CONNS_PER_CHUNK];
} conn_chunk_t;

typedef struct listener {        /* one per address: its accept op and back-off */
    server_t *srv;
    int fd;                      /* -1 once closed */
    iop_op_t accept_op;
    iop_timer_t backoff_timer;
    uint64_t backoff_ns;
} listener_t;

struct server {
    iop_loop_t *loop;
    listener_t ls[IOP_APP_MAX_LISTENERS];
    uint32_t nlisten;
    int spare_fd;                /* given up to accept-and-drop under EMFILE */
    int sig_fd;
    iop_watch_t sig_watch;
    int shedding;                /* inside an out-of-fds episode */
    uint64_t shed_count;
    conn_t *live;
    conn_t *free_list;
    conn_chunk_t *chunks;
    size_t nlive;
    uint64_t echoes;             /* recv completions with data */
    uint64_t conns_accepted;
    int multishot, fixed_files, pooled;
    uint32_t *bid_next;          /* pool mode: per buffer, the next in its queue (bid + 1) */
    uint32_t *bid_len;           /* pool mode: bytes received into each buffer */
    int stopping;
    int failed;
};

/* ---- connection records ------------------------------------------------------ */

static conn_t *conn_get(server_t *s)
{
    if (!s->free_list) {
        conn_chunk_t *ch = iop_malloc(sizeof *ch);
        if (!ch)
            return NULL;
        ch->next = s->chunks;
        s->chunks = ch;
        for (int i = CONNS_PER_CHUNK - 1; i >= 0; i--) {
            ch->conns[i].next = s->free_list;
            s->free_list = &ch->conns[i];
        }
    }
    conn_t *c = s->free_list;
    s->free_list = c->next;
    memset(&c->recv_op, 0, sizeof c->recv_op);
    memset(&c->send_op, 0, sizeof c->send_op);
    memset(&c->close_op, 0, sizeof c->close_op);
    c->srv = s;
    c->fd = -1;
    c->ops = 0;
    c->closing = c->recv_live = c->send_live = c->eof = 0;
    c->len = c->sent = 0;
    c->q_head = c->q_tail = 0;
    c->prev = NULL;
    c->next = s->live;
    if (s->live)
        s->live->prev = c;
    s->live = c;
    s->nlive++;
    return c;
}

static void conn_release(conn_t *c)
{
    server_t *s = c->srv;
    while (c->q_head) {          /* pool buffers still queued go back */
        uint32_t bid = c->q_head - 1;
        c->q_head = s->bid_next[bid];
        iop_buf_release(s->loop, bid);
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        s->live = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nlive--;
    c->next = s->free_list;
    s->free_list = c;
}

/* ---- the echo cycle ---------------------------------------------------------- */

/* Copy mode: recv into the connection's buffer, send it back, recv again.
 * Pool mode (--provided-buffers): recv_buf lands in a buffer of the loop's pool
 * (io_uring provided buffers where available), which is sent back from where it
 * landed and then returned; with --multishot one recv_buf keeps delivering. */

static void on_recv(iop_op_t *op, int res);
static void on_send(iop_op_t *op, int res);

static void on_closed(iop_op_t *op, int res)
{
    conn_t *c = op->data;
    (void)res;   /* Linux frees the fd whatever close says */
    if (--c->ops == 0)
        conn_release(c);
}

static void conn_close(conn_t *c)
{
    if (c->closing)
        return;
    int fd = c->fd;
    c->closing = 1;
    c->fd = -1;
    iop_prep_close(&c->close_op, fd, on_closed, c);
    if (iop_submit(c->srv->loop, &c->close_op) < 0) {
        iop_fd_close(c->srv->loop, fd);
        if (c->ops == 0)
            conn_release(c);
        return;
    }
    c->ops++;
}

/* An op of c finished: 1 if c is going away (the caller must not touch it). */
static int op_done(conn_t *c)
{
    c->ops--;
    if (c->srv->stopping || c->closing) {
        if (!c->closing)
            c->closing = 1;      /* the server closes the fd itself */
        if (c->ops == 0)
            conn_release(c);
        return 1;
    }
    return 0;
}

static void submit_recv(conn_t *c)
{
    server_t *s = c->srv;
    if (s->pooled) {
        iop_prep_recv_buf(&c->recv_op, c->fd, 0, on_recv, c);
        if (s->multishot)
            iop_op_set_multishot(&c->recv_op);
    } else {
        iop_prep_recv(&c->recv_op, c->fd, c->buf, sizeof c->buf, 0, on_recv, c);
    }
    if (iop_submit(s->loop, &c->recv_op) < 0) {
        conn_close(c);
        return;
    }
    c->recv_live = 1;
    c->ops++;
}

static void submit_send(conn_t *c)
{
    server_t *s = c->srv;
    const char *base = c->buf;
    if (s->pooled)
        base = iop_buf_addr(s->loop, c->q_head - 1);
    iop_prep_send(&c->send_op, c->fd, base + c->sent, c->len - c->sent, 0, on_send, c);
    if (iop_submit(s->loop, &c->send_op) < 0) {
        conn_close(c);
        return;
    }
    c->send_live = 1;
    c->ops++;
}

/* Pool mode: the head of the queue becomes what is being sent. */
static void send_head(conn_t *c)
{
    c->len = c->srv->bid_len[c->q_head - 1];
    c->sent = 0;
    submit_send(c);
}

static void on_recv(iop_op_t *op, int res)
{
    conn_t *c = op->data;
    server_t *s = c->srv;
    int more = iop_op_more(op);
    if (!more)
        c->recv_live = 0;
    if (s->pooled && res > 0 && (s->stopping || c->closing)) {
        iop_buf_release(s->loop, op->u.pooled.bid);
        res = 0;
    }
    if (more ? (s->stopping || c->closing) : op_done(c))
        return;
    if (res > 0)
        s->echoes++;
    if (s->pooled && res > 0) {
        uint32_t bid = op->u.pooled.bid;
        s->bid_len[bid] = (uint32_t)res;
        s->bid_next[bid] = 0;
        if (c->q_tail)
            s->bid_next[c->q_tail - 1] = bid + 1;
        else
            c->q_head = bid + 1;
        c->q_tail = bid + 1;
        if (!c->send_live)
            send_head(c);
        if (!more && !s->multishot && !c->send_live)
            submit_recv(c);
        return;
    }
    if (res == -ENOBUFS && s->pooled) {
        if (!c->send_live)       /* nothing of ours to give back: the pool is others' */
            submit_recv(c);
        return;                  /* else: asked again once a send returns a buffer */
    }
    if (res <= 0) {              /* end of file, reset, ... */
        c->eof = 1;
        if (!c->send_live)
            conn_close(c);
        return;
    }
    c->len = (size_t)res;
    c->sent = 0;
    submit_send(c);
}

static void on_send(iop_op_t *op, int res)
{
    conn_t *c = op->data;
    server_t *s = c->srv;
    c->send_live = 0;
    if (op_done(c))
        return;
    if (res <= 0) {
        conn_close(c);
        return;
    }
    c->sent += (size_t)res;
    if (c->sent < c->len) {
        submit_send(c);          /* partial write: send the rest */
        return;
    }
    if (s->pooled) {
        uint32_t bid = c->q_head - 1;
        c->q_head = s->bid_next[bid];
        if (!c->q_head)
            c->q_tail = 0;
        iop_buf_release(s->loop, bid);
        if (c->q_head) {
            send_head(c);
            return;
        }
    }
    if (c->eof)
        conn_close(c);
    else if (!c->recv_live)
        submit_recv(c);
}

static void conn_start(server_t *s, int fd)
{
    conn_t *c = conn_get(s);
    if (!c) {
        fprintf(stderr, PROG ": warning: out of memory, dropping a connection\n");
        close(fd);
        return;
    }
    c->fd = fd;
    s->conns_accepted++;
    /* Echoes go out in pieces as they come in; Nagle would hold a short last piece
     * back until the peer's delayed ACK, costing ~40 ms a message. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (s->fixed_files)
        iop_fd_register(s->loop, fd);   /* 0 where the backend has none: fine */
    submit_recv(c);
}

/* ---- accepting, and shedding when out of fds --------------------------------- */

static void on_accept(iop_op_t *op, int res);

static void fail(server_t *s, const char *what, int err)
{
    fprintf(stderr, PROG ": %s: %s\n", what, iop_strerror(err));
    s->failed = 1;
    iop_loop_stop(s->loop);
}

static void submit_accept(listener_t *l)
{
    server_t *s = l->srv;
    iop_prep_accept(&l->accept_op, l->fd, NULL, NULL, on_accept, l);
    if (s->multishot)
        iop_op_set_multishot(&l->accept_op);
    int r = iop_submit(s->loop, &l->accept_op);
    if (r < 0)
        fail(s, "cannot submit accept", r);
}

static void on_backoff(iop_timer_t *t)
{
    submit_accept(t->data);
}

static void back_off(listener_t *l)
{
    iop_timer_start(l->srv->loop, &l->backoff_timer, l->backoff_ns, 0, on_backoff);
    l->backoff_ns = l->backoff_ns * 2 > BACKOFF_MAX_NS ? BACKOFF_MAX_NS : l->backoff_ns * 2;
}

/* Out of fds: the pending connections would keep the listener readable forever. Free
 * the spare fd, accept and drop what is queued, take the spare back, and wait a while
 * before accepting again, so the loop sleeps instead of spinning. */
static void shed(listener_t *l, int err)
{
    server_t *s = l->srv;
    if (!s->shedding) {
        s->shedding = 1;
        fprintf(stderr, PROG ": warning: accept: %s with %zu connections open; "
                "dropping new connections until some close\n", iop_strerror(err), s->nlive);
    }
    s->shed_count += iop_app_shed(l->fd, &s->spare_fd, SHED_MAX_PER_ATTEMPT);
    back_off(l);
}

static void on_accept(iop_op_t *op, int res)
{
    listener_t *l = op->data;
    server_t *s = l->srv;
    if (s->stopping)
        return;
    if (res >= 0) {
        if (s->shedding) {
            s->shedding = 0;
            fprintf(stderr, PROG ": accepting again (%llu connections were dropped)\n",
                    (unsigned long long)s->shed_count);
            s->shed_count = 0;
        }
        l->backoff_ns = BACKOFF_MIN_NS;
        conn_start(s, res);
        if (!iop_op_more(op))
            submit_accept(l);
        return;
    }
    switch (-res) {
    case EMFILE:
    case ENFILE:
        shed(l, res);
        break;
    case ENOBUFS:
    case ENOMEM:
        back_off(l);             /* the kernel is short of memory: give it time */
        break;
    case ECONNABORTED:
    case EINTR:
    case EAGAIN:
    case EPROTO:
    case EPERM:                  /* a firewall refused this one */
    case ETIMEDOUT:
        submit_accept(l);        /* that connection is gone; take the next */
        break;
    default:
        fail(s, "accept failed", res);
        break;
    }
}

/* ---- signals ------------------------------------------------------------------ */

static void on_signal(iop_watch_t *w, unsigned revents)
{
    server_t *s = w->data;
    struct signalfd_siginfo si;
    (void)revents;
    while (read(s->sig_fd, &si, sizeof si) == (ssize_t)sizeof si)
        iop_loop_stop(s->loop);
}

/* Blocks SIGTERM and SIGINT and routes them to a signalfd: no handler, no race with
 * the loop's wait. */
static int signals_open(void)
{
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    /* An ignored signal is dropped before it can queue on the signalfd, and a shell
     * starts background jobs with SIGINT ignored: take both back to the default. */
    struct sigaction dfl = { .sa_handler = SIG_DFL };
    sigaction(SIGTERM, &dfl, NULL);
    sigaction(SIGINT, &dfl, NULL);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
        return -errno;
    int fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

/* ---- listening ------------------------------------------------------------------ */


/* ---- start, run, stop ----------------------------------------------------------- */

static void on_drain_limit(iop_timer_t *t)
{
    (void)t;
}

static int accepts_in_flight(const server_t *s)
{
    for (uint32_t i = 0; i < s->nlisten; i++)
        if (iop_op_in_flight(&s->ls[i].accept_op))
            return 1;
    return 0;
}

/* Closes every connection and the listeners, then lets the cancelled ops finish so
 * that no op still points into a record when the records are freed. */
static void shut_down(server_t *s)
{
    s->stopping = 1;
    for (conn_t *c = s->live, *next; c; c = next) {
        next = c->next;
        if (c->fd >= 0) {
            iop_fd_close(s->loop, c->fd);
            c->fd = -1;
        }
        if (c->ops == 0)
            conn_release(c);     /* idle, waiting for pool buffers */
    }
    for (uint32_t i = 0; i < s->nlisten; i++) {
        iop_fd_close(s->loop, s->ls[i].fd);
        s->ls[i].fd = -1;
        iop_timer_stop(&s->ls[i].backoff_timer);
    }
    iop_watch_stop(&s->sig_watch);

    iop_timer_t limit = { .data = s };
    iop_timer_start(s->loop, &limit, DRAIN_LIMIT_NS, 0, on_drain_limit);
    while ((s->nlive || accepts_in_flight(s)) && iop_timer_active(&limit))
        if (iop_loop_run(s->loop, IOP_RUN_ONCE) < 0)
            break;
    iop_timer_stop(&limit);
    if (s->nlive)
        fprintf(stderr, PROG ": warning: %zu connections did not finish closing\n", s->nlive);
}

/* What serving cost, between the listening line and the stop signal. Allocations
 * are counted on this thread by the ioplex allocator seam (records come in chunks
 * of CONNS_PER_CHUNK, so only new connections may allocate). */
static void print_stats(const server_t *s, const iop_alloc_stats_t *a0,
                        const iop_alloc_stats_t *a1)
{
    iop_loop_stats_t st;
    iop_loop_get_stats(s->loop, &st);
    fprintf(stderr,
            PROG ": stats: %" PRIu64 " reads echoed, %" PRIu64 " connections, %" PRIu64
            " heap allocations while serving; loop: %" PRIu64 " iterations, %" PRIu64
            " ops submitted, %" PRIu64 " completed, %" PRIu64 " syscalls, %" PRIu64 " waits\n",
            s->echoes, s->conns_accepted, a1->allocs - a0->allocs, st.iterations,
            st.ops_submitted, st.ops_completed, st.syscalls, st.polls);
}

static void server_free(server_t *s)
{
    if (s->loop)
        iop_loop_destroy(s->loop);   /* drops whatever is still in flight */
    free(s->bid_next);
    free(s->bid_len);
    while (s->chunks) {
        conn_chunk_t *next = s->chunks->next;
        iop_free(s->chunks);
        s->chunks = next;
    }
    for (uint32_t i = 0; i < s->nlisten; i++)
        if (s->ls[i].fd >= 0)
            close(s->ls[i].fd);
    if (s->spare_fd >= 0)
        close(s->spare_fd);
    if (s->sig_fd >= 0)
        close(s->sig_fd);
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: " PROG " [--backend NAME] [--listen HOST:PORT] [--plugin-path DIRS]\n"
        "\n"
        "Echoes back every byte it receives, until SIGTERM or SIGINT (then exits 0).\n"
        "Prints a line on stdout per address once it listens: the address and the\n"
        "backend.\n"
        "\n"
        "  --backend NAME       select, poll, epoll, sigio, uring or auto\n"
        "                       (default: $IOPLEX_BACKEND, then auto)\n"
        "  --listen HOST:PORT   HOST is IPv4, [IPv6] or a name; PORT 0 picks a free\n"
        "                       port (default 127.0.0.1:7000); a name listens on each\n"
        "                       of its addresses (one port for all), one line each\n"
        "  --plugin-path DIRS   ':'-separated dirs searched first for backend modules\n"
        "  --busy-poll US       spin up to US microseconds before sleeping in the kernel\n"
        "  --multishot          one accept (and, with --provided-buffers, one recv)\n"
        "                       keeps delivering; emulated where not native\n"
        "  --provided-buffers   receive into a pool the backend lends buffers from\n"
        "                       (io_uring provided buffers; a plain pool elsewhere)\n"
        "  --pool N             buffers in that pool (default 4096, 2 KiB each)\n"
        "  --fixed-files        register each connection with the backend at accept (io_uring\n"
        "                       fixed files); without it a connection is registered at its\n"
        "                       32nd recv/send (IOP_LOOP_REGISTER_BUSY_FDS)\n"
        "  --uring-sqpoll       io_uring: a kernel thread polls the submission queue\n"
        "                       (burns a CPU while busy; never the default)\n"
        "  --sqpoll-idle MS     idle time before that thread sleeps (default 1000)\n"
        "  --sqpoll-cpu N       pin that thread to CPU N\n"
        "  --stats              on exit, print to stderr what serving cost: reads\n"
        "                       echoed, connections, heap allocations, loop counters\n"
        "  --help               this text\n"
        "\n"
        "Exit status: 0 after a signal, 1 on a runtime failure (too few file descriptors\n"
        "or too little memory to start included), 2 on a usage error (an address in\n"
        "use included) or when the event loop cannot start (backend unavailable: the\n"
        "reason is printed).\n");
}

int main(int argc, char **argv)
{
    const char *backend = NULL, *listen_addr = "127.0.0.1:7000", *plugin_path = NULL;
    int want_stats = 0, multishot = 0, pooled = 0, fixed_files = 0;
    unsigned long busy_poll = 0, pool = 4096, sq_idle = 0, sq_cpu1 = 0;
    unsigned long flags = IOP_LOOP_REGISTER_BUSY_FDS;   /* connections close through the loop */
    static const struct option longopts[] = {
        { "backend", required_argument, NULL, 'b' },
        { "listen", required_argument, NULL, 'l' },
        { "plugin-path", required_argument, NULL, 'p' },
        { "stats", no_argument, NULL, 's' },
        { "busy-poll", required_argument, NULL, 'B' },
        { "multishot", no_argument, NULL, 'M' },
        { "provided-buffers", no_argument, NULL, 'P' },
        { "pool", required_argument, NULL, 'N' },
        { "fixed-files", no_argument, NULL, 'F' },
        { "uring-sqpoll", no_argument, NULL, 'Q' },
        { "sqpoll-idle", required_argument, NULL, 'I' },
        { "sqpoll-cpu", required_argument, NULL, 'C' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    opterr = 0;                  /* one line of our own instead of getopt's */
    while ((ch = getopt_long(argc, argv, ":b:l:p:shB:MPN:FQI:C:", longopts, NULL)) != -1) {
        switch (ch) {
        case 'b': backend = optarg; break;
        case 'l': listen_addr = optarg; break;
        case 'p': plugin_path = optarg; break;
        case 's': want_stats = 1; break;
        case 'M': multishot = 1; break;
        case 'P': pooled = 1; break;
        case 'F': fixed_files = 1; break;
        case 'Q': flags |= IOP_LOOP_SQPOLL; break;
        case 'B': case 'N': case 'I': case 'C': {
            uint64_t v;
            if (ch == 'N' ? iop_app_parse_u64(optarg, 1, 32768, &v) < 0
                          : iop_app_parse_u64(optarg, 0, 1000000000ull, &v) < 0) {
                fprintf(stderr, PROG ": %s wants a number from %s, not '%s'\n", iop_app_opt_name(longopts, ch),
                        ch == 'N' ? "1 to 32768" : "0 to 1000000000", optarg);
                return EXIT_USAGE;
            }
            if (ch == 'B') busy_poll = v;
            else if (ch == 'N') pool = v;
            else if (ch == 'I') sq_idle = v;
            else sq_cpu1 = v + 1;
            break;
        }
        case 'h': usage(stdout); return 0;
        default:   /* ':' (no value) or '?' (unknown) */
            return iop_app_getopt_fail(PROG, ch, argv);
        }
    }
    if (optind < argc) {
        fprintf(stderr, PROG ": unexpected argument '%s' (try --help)\n", argv[optind]);
        return EXIT_USAGE;
    }

    char err[512];
    struct addrinfo *addrs;
    if (iop_app_resolve(listen_addr, 1, &addrs, err, sizeof err) < 0) {
        fprintf(stderr, PROG ": --listen %s\n", err);
        return EXIT_USAGE;
    }
    freeaddrinfo(addrs);         /* checked for the usage error; iop_app_listen_all binds */

    server_t s = { .spare_fd = -1, .sig_fd = -1 };
    s.sig_watch.data = &s;
    signal(SIGPIPE, SIG_IGN);    /* a peer that resets must not kill the server */

    s.multishot = multishot;
    s.pooled = pooled;
    s.fixed_files = fixed_files;
    iop_loop_opts_t opts = {
        .size = sizeof opts, .backend = backend, .plugin_path = plugin_path,
        .flags = (uint32_t)flags, .busy_poll_us = (uint32_t)busy_poll,
        .sqpoll_idle_ms = (uint32_t)sq_idle, .sqpoll_cpu1 = (uint32_t)sq_cpu1,
        .buf_count = pooled ? (uint32_t)pool : 0, .buf_size = pooled ? 2048 : 0,
    };
    if (pooled) {
        s.bid_next = calloc(pool, sizeof *s.bid_next);
        s.bid_len = calloc(pool, sizeof *s.bid_len);
        if (!s.bid_next || !s.bid_len) {
            fprintf(stderr, PROG ": out of memory\n");
            free(s.bid_next);
            free(s.bid_len);
            return EXIT_FAILURE;
        }
    }
    int r = iop_loop_create(&s.loop, &opts);
    if (r < 0) {
        fprintf(stderr, PROG ": cannot start the event loop: %s\n",
                iop_last_error()[0] ? iop_last_error() : iop_strerror(r));
        free(s.bid_next);
        free(s.bid_len);
        return iop_app_loop_exit_status(r);
    }

    int status = EXIT_FAILURE;
    /* Every address of a name, one port for all, as iop-echo-server and ioplexd bind. */
    int fds[IOP_APP_MAX_LISTENERS];
    r = iop_app_listen_all(PROG, listen_addr, fds, &status);
    if (r < 0)
        goto out;
    s.nlisten = (uint32_t)r;
    for (uint32_t i = 0; i < s.nlisten; i++) {
        s.ls[i] = (listener_t){ .srv = &s, .fd = fds[i], .backoff_ns = BACKOFF_MIN_NS };
        s.ls[i].backoff_timer.data = &s.ls[i];
    }
    s.spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (s.spare_fd < 0) {
        fprintf(stderr, PROG ": cannot open /dev/null: %s\n", strerror(errno));
        goto out;
    }
    r = signals_open();
    if (r < 0) {
        fprintf(stderr, PROG ": cannot set up signal handling: %s\n", iop_strerror(r));
        goto out;
    }
    s.sig_fd = r;
    r = iop_watch_start(s.loop, &s.sig_watch, s.sig_fd, IOP_READ, on_signal);
    if (r < 0) {
        fprintf(stderr, PROG ": cannot watch for signals: %s\n", iop_strerror(r));
        goto out;
    }
    for (uint32_t i = 0; i < s.nlisten && !s.failed; i++)
        submit_accept(&s.ls[i]);
    if (s.failed)
        goto out;

    iop_app_say_listening(PROG, fds, s.nlisten, s.loop);

    iop_alloc_stats_t a0, a1;
    iop_alloc_stats(&a0);
    r = iop_loop_run(s.loop, IOP_RUN_DEFAULT);
    iop_alloc_stats(&a1);
    if (want_stats)
        print_stats(&s, &a0, &a1);
    if (r < 0) {
        fprintf(stderr, PROG ": the event loop failed: %s\n", iop_last_error());
        s.failed = 1;
    }
    shut_down(&s);
    status = s.failed ? EXIT_FAILURE : EXIT_SUCCESS;
out:
    server_free(&s);
    return status;
}
