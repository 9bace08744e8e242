/* libuv-echo: a comparison echo server on libuv, written the idiomatic way.
 *
 * uv_listen / uv_accept, then uv_read_start with an alloc callback that hands out
 * the connection's own buffer (allocated once with the connection, so no allocation
 * per message), and uv_write of what was read. libuv tries the write at once and
 * only falls back to waiting for POLLOUT when the socket does not take it all; the
 * write callback comes on the next loop turn either way. With --try-write,
 * uv_try_write goes first and uv_write only takes what the socket left (see
 * try_write_first).
 *
 * The buffer belongs to the write until its callback: a read that comes before that
 * (a client that sends again before its echo arrived) gets no buffer, which libuv
 * reports as UV_ENOBUFS; reading then stops and the write callback restarts it.
 * So nothing is buffered without bound, and a closed-loop client with messages
 * smaller than the buffer never hits that path. EOF or an error closes. SIGTERM / SIGINT stop the loop; the CPU time goes
 * to stderr. */
#include <getopt.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <uv.h>

#include "bench_common.h"
#include "hostport.h"

#define PROG "libuv-echo"
#define BUF_SIZE (16 * 1024)

enum { EXIT_USAGE = 2 };

/* --try-write: uv_try_write first, uv_write only for what the socket did not take
 * (what Node.js streams do). Plain uv_write costs an epoll_ctl per message in
 * libuv 1.44: the finished write stops POLLOUT, which requeues the watcher. */
static int try_write_first;

typedef struct conn {
    uv_tcp_t tcp;           /* first: a handle pointer is a conn pointer */
    uv_write_t req;
    uv_buf_t out;
    int writing;            /* buf is lent to req until its callback */
    int read_stopped;       /* a read found buf lent out; restart after the write */
    char buf[BUF_SIZE];
} conn_t;

static void on_conn_closed(uv_handle_t *h)
{
    free(h->data);   /* its conn_t */
}

static void close_conn(conn_t *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn_t *c = (conn_t *)h;
    (void)suggested;
    *buf = c->writing ? uv_buf_init(NULL, 0) : uv_buf_init(c->buf, sizeof c->buf);
}

static void on_written(uv_write_t *req, int status);

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = (conn_t *)stream;
    (void)buf;
    if (nread == UV_ENOBUFS) {
        uv_read_stop(stream);
        c->read_stopped = 1;
        return;
    }
    if (nread < 0) {            /* UV_EOF or an error */
        close_conn(c);
        return;
    }
    if (nread == 0)             /* EAGAIN: nothing to do */
        return;
    size_t done = 0;
    if (try_write_first) {
        c->out = uv_buf_init(c->buf, (unsigned)nread);
        int w = uv_try_write(stream, &c->out, 1);
        if (w == nread)
            return;             /* all sent: no request, no callback */
        if (w < 0 && w != UV_EAGAIN) {
            close_conn(c);
            return;
        }
        done = w > 0 ? (size_t)w : 0;
    }
    c->out = uv_buf_init(c->buf + done, (unsigned)((size_t)nread - done));
    c->writing = 1;
    if (uv_write(&c->req, stream, &c->out, 1, on_written) < 0) {
        c->writing = 0;
        close_conn(c);
    }
}

static void on_written(uv_write_t *req, int status)
{
    conn_t *c = (conn_t *)req->handle;
    c->writing = 0;
    if (status < 0) {           /* includes UV_ECANCELED from a close */
        close_conn(c);
        return;
    }
    if (c->read_stopped && !uv_is_closing((uv_handle_t *)&c->tcp)) {
        c->read_stopped = 0;
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0)
            close_conn(c);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0) {
        /* out of fds or a connection reset before accept: keep serving the others */
        fprintf(stderr, PROG ": accept: %s\n", uv_strerror(status));
        return;
    }
    conn_t *c = calloc(1, sizeof *c);
    if (!c || uv_tcp_init(server->loop, &c->tcp) < 0) {
        /* libuv accepts no more until uv_accept: this server is done taking new
         * connections, and says so */
        fprintf(stderr, PROG ": out of memory for a connection; no longer accepting\n");
        free(c);
        return;
    }
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        close_conn(c);
        return;
    }
    /* an echo is a reply: send it now, not after the peer's delayed ACK */
    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0)
        close_conn(c);
}

static void on_signal(uv_signal_t *h, int sig)
{
    fprintf(stderr, PROG ": %s\n", strsignal(sig));
    uv_stop(h->loop);
}

/* At exit. A connection's data is its conn_t, freed when closed; the other handles
 * (data NULL) live on main's stack. */
static void close_any(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, h->data ? on_conn_closed : NULL);
}

static void print_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    double sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    fprintf(stderr, PROG ": cpu %.3f s (user %.3f, sys %.3f)\n", user + sys, user, sys);
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: " PROG " --listen HOST:PORT [--cpu N] [--try-write]\n"
        "\n"
        "An echo server on libuv (uv_read_start into a per-connection buffer, uv_write),\n"
        "a yardstick for the echo benchmark. Prints 'listening on HOST:PORT' (the real\n"
        "port when PORT is 0), echoes until SIGTERM or SIGINT, then prints its CPU\n"
        "seconds on stderr and exits 0.\n"
        "\n"
        "  --listen HOST:PORT   address to listen on (IPv4, [IPv6] or a name)\n"
        "  --cpu N              pin the process to CPU N\n"
        "  --try-write          uv_try_write first, uv_write for the rest only\n"
        "  --help               this text\n");
}

/* 0: run; 1: --help was printed; -1: bad usage (said on stderr). */
static int parse_args(int argc, char **argv, const char **listen_addr, int *cpu)
{
    static const struct option longopts[] = {
        { "listen", required_argument, NULL, 'l' },
        { "cpu", required_argument, NULL, 'C' },
        { "try-write", no_argument, NULL, 't' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    uint64_t v;
    int ch;
    while ((ch = getopt_long(argc, argv, "l:C:th", longopts, NULL)) != -1) {
        switch (ch) {
        case 'l': *listen_addr = optarg; break;
        case 'C':
            if (iop_app_parse_u64(optarg, 0, CPU_SETSIZE - 1, &v) < 0) {
                fprintf(stderr, PROG ": bad --cpu '%s'\n", optarg);
                return -1;
            }
            *cpu = (int)v;
            break;
        case 't': try_write_first = 1; break;
        case 'h': usage(stdout); return 1;
        default: usage(stderr); return -1;
        }
    }
    if (!*listen_addr || optind != argc) {
        fprintf(stderr, PROG ": expected --listen HOST:PORT and nothing else (try --help)\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *listen_addr = NULL;
    int cpu = -1;
    int r = parse_args(argc, argv, &listen_addr, &cpu);
    if (r != 0)
        return r > 0 ? EXIT_SUCCESS : EXIT_USAGE;
    struct sockaddr_storage ss;
    socklen_t sslen;
    char err[512];
    if (bench_parse_hostport(listen_addr, 1, &ss, &sslen, err, sizeof err) < 0) {
        fprintf(stderr, PROG ": --listen %s\n", err);
        return EXIT_USAGE;
    }
    r = cpu >= 0 ? bench_pin_cpu(cpu) : 0;
    if (r < 0) {
        fprintf(stderr, PROG ": cannot pin to CPU %d: %s\n", cpu, strerror(-r));
        return EXIT_FAILURE;
    }
    signal(SIGPIPE, SIG_IGN);

    uv_loop_t loop;
    uv_tcp_t server;
    uv_signal_t sigterm, sigint;
    if ((r = uv_loop_init(&loop)) < 0) {
        fprintf(stderr, PROG ": uv_loop_init: %s\n", uv_strerror(r));
        return EXIT_FAILURE;
    }
    if ((r = uv_tcp_init(&loop, &server)) < 0 ||
        (r = uv_tcp_bind(&server, (const struct sockaddr *)&ss, 0)) < 0 ||
        (r = uv_listen((uv_stream_t *)&server, SOMAXCONN, on_connection)) < 0) {
        fprintf(stderr, PROG ": cannot listen on %s: %s\n", listen_addr, uv_strerror(r));
        return EXIT_FAILURE;
    }
    server.data = NULL;   /* not a connection: see close_any */
    if ((r = uv_signal_init(&loop, &sigterm)) < 0 || (r = uv_signal_init(&loop, &sigint)) < 0 ||
        (r = uv_signal_start(&sigterm, on_signal, SIGTERM)) < 0 ||
        (r = uv_signal_start(&sigint, on_signal, SIGINT)) < 0) {
        fprintf(stderr, PROG ": cannot set up signal handling: %s\n", uv_strerror(r));
        return EXIT_FAILURE;
    }
    sigterm.data = sigint.data = NULL;

    struct sockaddr_storage bound;
    int blen = sizeof bound;
    char where[128];
    uv_tcp_getsockname(&server, (struct sockaddr *)&bound, &blen);
    printf("listening on %s, libuv %s%s\n",
           iop_app_format_addr((struct sockaddr *)&bound, (socklen_t)blen, where, sizeof where),
           uv_version_string(), try_write_first ? ", uv_try_write first" : "");
    fflush(stdout);

    r = uv_run(&loop, UV_RUN_DEFAULT);   /* returns after uv_stop */

    /* Close everything and let the close callbacks run: every handle is closing,
     * so this run ends once they have. */
    uv_walk(&loop, close_any, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    int status = EXIT_SUCCESS;
    if ((r = uv_loop_close(&loop)) < 0) {
        fprintf(stderr, PROG ": uv_loop_close: %s\n", uv_strerror(r));
        status = EXIT_FAILURE;
    }
    print_cpu();
    return status;
}
