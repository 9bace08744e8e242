/* iop-echo-server: echoes every byte back; one coroutine per connection, in one
 * process or (--workers N) in N worker processes under a supervisor (shard.h).
 *
 * Written as blocking code: an acceptor coroutine loops on iop_accept and starts a
 * coroutine per connection in a nursery; each loops iop_recv → iop_send into a
 * buffer on its own stack, so a message costs no allocation. A third coroutine
 * reads SIGTERM / SIGINT from a signalfd and wakes the server's main coroutine,
 * which stops the acceptor and closes the nursery: every connection coroutine is
 * cancelled, closes its socket and ends before the process exits. With workers, the
 * supervisor takes the signals and drains them: each stops accepting and lets its
 * connections finish until the drain deadline. There is an acceptor per listener,
 * in one process as in a worker: a name listens on each of its addresses
 * (IOP_SHARD_ALL_ADDRESSES, bound by iop_shard_listen without workers).
 *
 * With --multishot each connection receives through a receive stream instead: one
 * multishot receive into the loop's pool, echoed from the pool buffer it landed in.
 *
 * iop-echo-proactor is the same service written with callbacks on the proactor
 * interface, with the loop's fast-path modes (multishot, provided buffers). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ioplex.h>
#include <ioplex/shard.h>
#include "hostport.h"
#include "listen_all.h"

#define PROG "iop-echo-server"
#define CONN_BUF_SIZE (16 * 1024)     /* on the connection's 64 KiB stack */
#define BACKOFF_MIN_NS (50ull * 1000 * 1000)
#define BACKOFF_MAX_NS (1000ull * 1000 * 1000)
#define SHED_MAX_PER_ATTEMPT 64       /* pending connections dropped per attempt */
#define POOL_BUFS 256                 /* --multishot: the receive pool */
#define POOL_BUF_SIZE 2048

enum { EXIT_USAGE = 2 };

typedef struct server {
    iop_loop_t *loop;
    int listen_fds[IOP_APP_MAX_LISTENERS];   /* one process: one per address; workers: unused */
    uint32_t nlisten;
    int spare_fd;                /* given up to accept-and-drop under EMFILE */
    int sig_fd;
    int fixed_files;
    int multishot;               /* receive streams */
    int want_stats;
    iop_shard_worker_t *worker;  /* with --workers: this worker, else NULL */
    iop_nursery_t conns;         /* one coroutine per connection */
    iop_sem_t stop;              /* released by a signal or a fatal accept error */
    size_t nlive;
    uint64_t echoes;             /* recvs that returned data */
    uint64_t conns_accepted;
    uint64_t shed_count;
    int shedding;                /* inside an out-of-fds episode */
    int spawn_warned;
    int failed;
    iop_alloc_stats_t a0, a1;    /* allocator counters at start and at the stop */
} server_t;

static server_t *server;         /* the one server of this process */

typedef struct listener {        /* one acceptor's: which listener it accepts on */
    server_t *s;
    uint32_t index;              /* the shard's listener index (with --workers) */
    int fd;
    iop_coro_t *acc;
} listener_t;

/* ---- a connection ------------------------------------------------------------------ */

static void *serve_conn(void *arg)
{
    server_t *s = server;
    int fd = (int)(intptr_t)arg;
    char buf[CONN_BUF_SIZE];
    iop_recv_stream_t rs;
    int streaming = s->multishot && iop_recv_stream_open(&rs, fd, 0) == 0;
    for (;;) {
        const char *data = buf;  /* with a stream: the pool buffer, or buf when it ran dry */
        ssize_t n = streaming ? iop_recv_stream_next(&rs, buf, sizeof buf, &data, 0)
                              : iop_recv(fd, buf, sizeof buf, 0, 0);
        if (n <= 0)              /* end of file, reset, or cancelled at shutdown */
            break;
        s->echoes++;
        for (ssize_t off = 0, w; off < n; off += w) {
            w = iop_send(fd, data + off, (size_t)(n - off), 0, 0);
            if (w <= 0)
                goto out;
        }
    }
out:
    if (streaming)
        iop_recv_stream_close(&rs);   /* before the fd goes; runs even when cancelled */
    iop_close(fd);               /* runs to the end even when cancelled */
    s->nlive--;
    return NULL;
}

static void conn_start(server_t *s, int fd)
{
    /* Echoes go out in pieces as they come in; Nagle would hold a short last piece
     * back until the peer's delayed ACK, costing ~40 ms a message. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (s->fixed_files)
        iop_fd_register(s->loop, fd);   /* 0 where the backend has none: fine */
    static const iop_coro_opts_t opts = { .size = sizeof opts, .name = "conn" };
    int r = iop_nursery_go(&s->conns, serve_conn, (void *)(intptr_t)fd, &opts);
    if (r < 0) {
        if (!s->spawn_warned++)
            fprintf(stderr, PROG ": warning: cannot start a connection coroutine (%s); "
                    "dropping connections until it works again\n", iop_last_error());
        close(fd);
        return;
    }
    s->spawn_warned = 0;
    s->nlive++;
    s->conns_accepted++;
}

/* ---- accepting, and shedding when out of fds ---------------------------------------- */

/* Out of fds: the pending connections would keep the listener readable forever. Free
 * the spare fd, accept and drop what is queued, take the spare back; the caller then
 * sleeps before accepting again, so the loop sleeps instead of spinning. */
static void shed(server_t *s, int listen_fd, int err)
{
    if (!s->shedding) {
        s->shedding = 1;
        fprintf(stderr, PROG ": warning: accept: %s with %zu connections open; "
                "dropping new connections until some close\n", iop_strerror(err), s->nlive);
    }
    s->shed_count += iop_app_shed(listen_fd, &s->spare_fd, SHED_MAX_PER_ATTEMPT);
}

static void *acceptor(void *arg)
{
    listener_t *l = arg;
    server_t *s = l->s;
    uint64_t backoff = BACKOFF_MIN_NS;
    for (;;) {
        int fd = s->worker ? iop_shard_accept(s->worker, l->index, NULL, NULL, 0)
                           : iop_accept(l->fd, NULL, NULL, 0);
        if (fd >= 0) {
            if (s->shedding) {
                s->shedding = 0;
                fprintf(stderr, PROG ": accepting again (%" PRIu64 " connections were dropped)\n",
                        s->shed_count);
                s->shed_count = 0;
            }
            backoff = BACKOFF_MIN_NS;
            conn_start(s, fd);
            continue;
        }
        switch (-fd) {
        case ECANCELED:          /* shutting down, or a worker's drain began */
            iop_sem_release(&s->stop);
            return NULL;
        case EMFILE:
        case ENFILE:
            shed(s, l->fd, fd);
            __attribute__((fallthrough));   /* then wait before trying again */
        case ENOBUFS:
        case ENOMEM:             /* the kernel is short of memory: give it time */
            if (iop_sleep(backoff) == -ECANCELED)
                return NULL;
            backoff = backoff * 2 > BACKOFF_MAX_NS ? BACKOFF_MAX_NS : backoff * 2;
            break;
        case ECONNABORTED:
        case EINTR:
        case EAGAIN:
        case EPROTO:
        case EPERM:              /* a firewall refused this one */
        case ETIMEDOUT:
            break;               /* that connection is gone; take the next */
        default:
            fprintf(stderr, PROG ": accept failed: %s\n", iop_strerror(fd));
            s->failed = 1;
            iop_sem_release(&s->stop);
            return NULL;
        }
    }
}

/* ---- signals ----------------------------------------------------------------------- */

static void *signal_waiter(void *arg)
{
    server_t *s = arg;
    struct signalfd_siginfo si;
    for (;;) {
        ssize_t n = iop_read(s->sig_fd, &si, sizeof si, 0);
        if (n == (ssize_t)sizeof si)
            break;
        if (n == -ECANCELED)
            return NULL;
        if (n != -EAGAIN && n != -EINTR) {
            fprintf(stderr, PROG ": reading signals: %s\n", n < 0 ? iop_strerror((int)n) : "short read");
            s->failed = 1;
            break;
        }
    }
    iop_sem_release(&s->stop);
    return NULL;
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

/* ---- the server's main coroutine ---------------------------------------------------- */

static void *server_main(void *arg)
{
    server_t *s = arg;
    iop_coro_t *sig = NULL;
    static const iop_coro_opts_t acc_opts = { .size = sizeof acc_opts, .name = "acceptor" };
    static const iop_coro_opts_t sig_opts = { .size = sizeof sig_opts, .name = "signals" };
    uint32_t n = s->worker ? iop_shard_nlisteners(s->worker) : s->nlisten;
    listener_t *ls = calloc(n ? n : 1, sizeof *ls);
    int r = ls ? 0 : -ENOMEM;
    for (uint32_t i = 0; i < n && r == 0; i++) {
        ls[i] = (listener_t){ .s = s, .index = i,
                              .fd = s->worker ? iop_shard_listener(s->worker, i) : s->listen_fds[i] };
        r = iop_go(s->loop, acceptor, &ls[i], &acc_opts, &ls[i].acc);
    }
    if (r == 0 && !s->worker)    /* a worker learns of the stop from its accept */
        r = iop_go(s->loop, signal_waiter, s, &sig_opts, &sig);
    if (r < 0) {
        fprintf(stderr, PROG ": cannot start: %s\n", ls ? iop_last_error() : "out of memory");
        s->failed = 1;
    } else {
        iop_alloc_stats(&s->a0);  /* serving starts: what follows is per connection */
        iop_sem_acquire(&s->stop, 0);
    }
    iop_alloc_stats(&s->a1);
    /* Stop accepting first, then cancel every connection and wait for them. */
    for (uint32_t i = 0; ls && i < n; i++)
        if (ls[i].acc) {
            iop_cancel(ls[i].acc);
            iop_join(ls[i].acc, NULL, 0);
        }
    free(ls);
    if (sig) {
        iop_cancel(sig);
        iop_join(sig, NULL, 0);
    }
    /* One process: close every connection now. A worker: let them finish until the
     * supervisor's drain deadline. */
    iop_nursery_close(&s->conns, s->worker ? iop_shard_drain_deadline(s->worker) : iop_now(s->loop));
    return NULL;
}

/* ---- listening ------------------------------------------------------------------------ */


/* What serving cost, between the listening line and the stop signal. Allocations
 * are counted on this thread by the ioplex allocator seam (coroutine records and
 * stacks are pooled, so only new connections may allocate). */
static void print_stats(const server_t *s)
{
    iop_loop_stats_t st;
    iop_loop_get_stats(s->loop, &st);
    char who[32] = "";
    if (s->worker)
        snprintf(who, sizeof who, "worker %u: ", iop_shard_index(s->worker));
    fprintf(stderr,
            PROG ": %sstats: %" PRIu64 " reads echoed, %" PRIu64 " connections, %" PRIu64
            " heap allocations while serving; loop: %" PRIu64 " iterations, %" PRIu64
            " ops submitted, %" PRIu64 " completed, %" PRIu64 " syscalls, %" PRIu64 " waits\n",
            who, s->echoes, s->conns_accepted, s->a1.allocs - s->a0.allocs, st.iterations,
            st.ops_submitted, st.ops_completed, st.syscalls, st.polls);
}

/* ---- --workers N: a supervisor and worker processes ----------------------------------- */

typedef struct sharded {
    const char *backend_line;    /* "backend X (why)", learnt before the fork */
    int fixed_files, multishot, want_stats;
} sharded_t;

static void on_listen(void *arg, uint32_t index, const struct sockaddr *addr, socklen_t len)
{
    sharded_t *sh = arg;
    (void)index;
    char where[128];
    iop_app_format_addr(addr, len, where, sizeof where);
    printf(PROG ": listening on %s, %s\n", where, sh->backend_line);
    fflush(stdout);
}

static void on_event(void *arg, int level, const char *line)
{
    (void)arg;
    fprintf(stderr, PROG ": %s%s\n", level == IOP_SHARD_WARN ? "warning: " : "", line);
}

/* One worker: the same server as in one process, on the worker's loop and listeners. */
static int echo_worker(iop_shard_worker_t *w)
{
    sharded_t *sh = iop_shard_arg(w);
    server_t s = { .loop = iop_shard_loop(w), .spare_fd = -1,
                   .sig_fd = -1, .fixed_files = sh->fixed_files, .multishot = sh->multishot,
                   .want_stats = sh->want_stats,
                   .worker = w };
    server = &s;
    iop_nursery_init(&s.conns, s.loop);
    iop_sem_init(&s.stop, 0);
    s.spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    server_main(&s);             /* a worker function runs as a coroutine already */
    if (s.want_stats)
        print_stats(&s);
    if (s.spare_fd >= 0)
        close(s.spare_fd);
    return s.failed;
}

static int run_workers(uint32_t workers, const char *listen_addr, const iop_loop_opts_t *lo,
                       int fixed_files, int multishot, int want_stats)
{
    /* Each worker makes its own loop after the fork; ask once here which backend that
     * will be, to say so in the listening line and to fail early. */
    iop_loop_t *probe;
    int r = iop_loop_create(&probe, lo);
    if (r < 0) {
        fprintf(stderr, PROG ": cannot start the event loop: %s\n", iop_last_error());
        return iop_app_loop_exit_status(r);
    }
    char line[600];
    const char *report = iop_loop_backend_report(probe);
    snprintf(line, sizeof line, "backend %s%s%s%s, %u workers", iop_loop_backend(probe),
             report[0] ? " (" : "", report, report[0] ? ")" : "", workers);
    iop_loop_destroy(probe);

    iop_shard_stats_t *stats = NULL;
    if (iop_shard_stats_create(&stats, workers) < 0) {
        fprintf(stderr, PROG ": %s\n", iop_last_error());
        return EXIT_FAILURE;
    }
    sharded_t sh = { .backend_line = line, .fixed_files = fixed_files, .multishot = multishot,
                     .want_stats = want_stats };
    const char *listen[] = { listen_addr, NULL };
    iop_shard_opts_t so = {
        .size = sizeof so, .flags = IOP_SHARD_ALL_ADDRESSES, .workers = workers, .listen = listen,
        .loop_opts = lo,
        .backend = lo->backend, .worker = echo_worker, .arg = &sh, .on_listen = on_listen,
        .on_event = on_event, .event_arg = &sh, .stats = stats,
        .drain_timeout_ns = 2000000000ull,
    };
    r = iop_shard_run(&so);
    int usage_err = r == -EINVAL || r == -EADDRINUSE || r == -EADDRNOTAVAIL || r == -EACCES;
    if (!usage_err) {              /* workers ran: how the connections were spread */
        fprintf(stderr, PROG ": connections per worker:");
        for (uint32_t i = 0; i < workers; i++) {
            iop_shard_worker_stats_t ws;
            if (iop_shard_stats_read(stats, i, &ws) == 0)
                fprintf(stderr, " %u: %llu%s", i, (unsigned long long)ws.accepted, i + 1 < workers ? "," : "");
        }
        fputc('\n', stderr);
    }
    iop_shard_stats_free(stats);
    if (r == 0 || r == -ETIMEDOUT)
        return EXIT_SUCCESS;
    fprintf(stderr, PROG ": %s\n", iop_last_error()[0] ? iop_last_error() : iop_strerror(r));
    return usage_err ? EXIT_USAGE : EXIT_FAILURE;
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: " PROG " [--backend NAME] [--listen HOST:PORT] [--plugin-path DIRS]\n"
        "\n"
        "Echoes back every byte it receives, one coroutine per connection, until\n"
        "SIGTERM or SIGINT (then closes every connection and exits 0).\n"
        "Prints a line on stdout per address once it listens: the address and the\n"
        "backend.\n"
        "\n"
        "  --backend NAME       select, poll, epoll, sigio, uring or auto\n"
        "                       (default: $IOPLEX_BACKEND, then auto)\n"
        "  --listen HOST:PORT   HOST is IPv4, [IPv6] or a name; PORT 0 picks a free\n"
        "                       port (default 127.0.0.1:7000); a name listens on each\n"
        "                       of its addresses (one port for all), one line each\n"
        "  --plugin-path DIRS   ':'-separated dirs searched first for backend modules\n"
        "  --workers N          serve in N worker processes (SO_REUSEPORT listeners) under\n"
        "                       a supervisor that respawns them; SIGTERM drains them\n"
        "                       (default 0: serve in this process)\n"
        "  --busy-poll US       spin up to US microseconds before sleeping in the kernel\n"
        "  --fixed-files        register each connection with the backend at accept (io_uring\n"
        "                       fixed files); without it a connection is registered at its\n"
        "                       32nd recv/send (IOP_LOOP_REGISTER_BUSY_FDS)\n"
        "  --multishot          each connection receives through a receive stream: one\n"
        "                       multishot receive into a pool of %d x %d B buffers\n"
        "                       (io_uring provided buffers; elsewhere the loop lends them)\n"
        "  --uring-sqpoll       io_uring: a kernel thread polls the submission queue\n"
        "                       (burns a CPU while busy; never the default)\n"
        "  --sqpoll-idle MS     idle time before that thread sleeps (default 1000)\n"
        "  --sqpoll-cpu N       pin that thread to CPU N\n"
        "  --stats              on exit, print to stderr what serving cost: reads\n"
        "                       echoed, connections, heap allocations, loop counters\n"
        "  --help               this text\n"
        "\n"
        "The callback-style iop-echo-proactor has the same modes and more.\n"
        "\n"
        "Exit status: 0 after a signal, 1 on a runtime failure (too few file descriptors\n"
        "or too little memory to start included), 2 on a usage error (an address in\n"
        "use included) or when the event loop cannot start (backend unavailable: the\n"
        "reason is printed).\n", POOL_BUFS, POOL_BUF_SIZE);
}

int main(int argc, char **argv)
{
    const char *backend = NULL, *listen_addr = "127.0.0.1:7000", *plugin_path = NULL;
    int want_stats = 0, fixed_files = 0, multishot = 0;
    unsigned long busy_poll = 0, sq_idle = 0, sq_cpu1 = 0, workers = 0;
    unsigned long flags = IOP_LOOP_REGISTER_BUSY_FDS;   /* connections close through the loop */
    static const struct option longopts[] = {
        { "backend", required_argument, NULL, 'b' },
        { "listen", required_argument, NULL, 'l' },
        { "plugin-path", required_argument, NULL, 'p' },
        { "stats", no_argument, NULL, 's' },
        { "busy-poll", required_argument, NULL, 'B' },
        { "fixed-files", no_argument, NULL, 'F' },
        { "uring-sqpoll", no_argument, NULL, 'Q' },
        { "sqpoll-idle", required_argument, NULL, 'I' },
        { "sqpoll-cpu", required_argument, NULL, 'C' },
        { "workers", required_argument, NULL, 'W' },
        { "multishot", no_argument, NULL, 'M' },
        { "provided-buffers", no_argument, NULL, 'X' },
        { "pool", required_argument, NULL, 'X' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    opterr = 0;                  /* one line of our own instead of getopt's */
    while ((ch = getopt_long(argc, argv, ":b:l:p:shB:FQI:C:W:", longopts, NULL)) != -1) {
        switch (ch) {
        case 'b': backend = optarg; break;
        case 'l': listen_addr = optarg; break;
        case 'p': plugin_path = optarg; break;
        case 's': want_stats = 1; break;
        case 'F': fixed_files = 1; break;
        case 'M': multishot = 1; break;
        case 'Q': flags |= IOP_LOOP_SQPOLL; break;
        case 'B': case 'I': case 'C': case 'W': {
            uint64_t v;
            if (iop_app_parse_u64(optarg, 0, ch == 'W' ? 256 : 1000000000ull, &v) < 0) {
                fprintf(stderr, PROG ": %s wants a number from 0 to %s, not '%s'\n",
                        iop_app_opt_name(longopts, ch), ch == 'W' ? "256" : "1000000000", optarg);
                return EXIT_USAGE;
            }
            if (ch == 'B') busy_poll = v;
            else if (ch == 'W') workers = v;
            else if (ch == 'I') sq_idle = v;
            else sq_cpu1 = v + 1;
            break;
        }
        case 'X':
            fprintf(stderr, PROG ": %s is a mode of iop-echo-proactor, the callback-style "
                    "server (here --multishot receives into a pool of its own)\n",
                    argv[optind - 1]);
            return EXIT_USAGE;
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
    signal(SIGPIPE, SIG_IGN);    /* a peer that resets must not kill the server */

    iop_loop_opts_t opts = {
        .size = sizeof opts, .backend = backend, .plugin_path = plugin_path,
        .flags = (uint32_t)flags, .busy_poll_us = (uint32_t)busy_poll,
        .sqpoll_idle_ms = (uint32_t)sq_idle, .sqpoll_cpu1 = (uint32_t)sq_cpu1,
        .buf_count = multishot ? POOL_BUFS : 0, .buf_size = multishot ? POOL_BUF_SIZE : 0,
    };
    /* Checked here for the usage error; the shard's code binds, in both modes. */
    freeaddrinfo(addrs);
    if (workers)                 /* the supervisor binds (SO_REUSEPORT, one per worker) */
        return run_workers((uint32_t)workers, listen_addr, &opts, fixed_files, multishot, want_stats);
    server_t s = { .spare_fd = -1, .sig_fd = -1, .fixed_files = fixed_files,
                   .multishot = multishot };
    server = &s;
    int r = iop_loop_create(&s.loop, &opts);
    if (r < 0) {
        fprintf(stderr, PROG ": cannot start the event loop: %s\n",
                iop_last_error()[0] ? iop_last_error() : iop_strerror(r));
        return iop_app_loop_exit_status(r);
    }
    iop_nursery_init(&s.conns, s.loop);
    iop_sem_init(&s.stop, 0);

    int status = EXIT_FAILURE;
    /* Every address of a name, one port for all, as the workers' supervisor binds. */
    r = iop_app_listen_all(PROG, listen_addr, s.listen_fds, &status);
    if (r < 0)
        goto out;
    s.nlisten = (uint32_t)r;
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

    iop_app_say_listening(PROG, s.listen_fds, s.nlisten, s.loop);

    iop_coro_t *srv;
    static const iop_coro_opts_t srv_opts = { .size = sizeof srv_opts, .name = "server" };
    r = iop_go(s.loop, server_main, &s, &srv_opts, &srv);
    if (r == 0)
        r = iop_join(srv, NULL, 0);   /* runs the loop until the server coroutine ends */
    if (r < 0) {
        fprintf(stderr, PROG ": the event loop failed: %s\n", iop_last_error());
        s.failed = 1;
    }
    if (want_stats)
        print_stats(&s);
    if (s.nlive)
        fprintf(stderr, PROG ": warning: %zu connections did not finish closing\n", s.nlive);
    status = s.failed ? EXIT_FAILURE : EXIT_SUCCESS;
out:
    iop_loop_destroy(s.loop);
    for (uint32_t i = 0; i < s.nlisten; i++)
        close(s.listen_fds[i]);
    if (s.spare_fd >= 0)
        close(s.spare_fd);
    if (s.sig_fd >= 0)
        close(s.sig_fd);
    return status;
}
