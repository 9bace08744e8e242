/* libevent-echo: a comparison echo server on libevent 2, in two styles.
 *
 * Default: plain events (event_new + EV_READ|EV_PERSIST) with read() and write() in
 * the callback, the way a libevent user who cares about speed writes it. A
 * bufferevent asks the kernel how much is readable (ioctl FIONREAD) before each
 * read, copies into an evbuffer, and sends the echo only from a later EV_WRITE
 * callback, which costs an extra loop turn and epoll_ctl calls per message; plain
 * events do one read and one write per message, the same work as epoll-echo-ref, so
 * the difference measured is the cost of libevent's loop itself. A short write keeps
 * the rest for that connection and switches it from its read event to a write event
 * until the rest drains (no unbounded buffering).
 *
 * --bufferevent: the idiomatic way, the one most libevent users write: one
 * bufferevent per connection (bufferevent_socket_new, BEV_OPT_CLOSE_ON_FREE), a read
 * callback that moves the whole input evbuffer to the output (evbuffer_add_buffer:
 * the chains change hands, no copy) and lets the bufferevent write it, an event
 * callback that frees the connection on EOF or error. So that a peer that sends
 * without reading cannot grow the output without bound, past BEV_OUTPUT_MAX the
 * connection stops reading until half of it has drained (a write low watermark), as
 * libevent's own proxy sample does; the closed-loop benchmark never gets there.
 *
 * Both: accepting is evconnlistener's (accept4, nonblocking), signals are evsignal
 * events, the ordinary libevent way. EOF or an error closes. SIGTERM / SIGINT end
 * the loop; the CPU time goes to stderr. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "bench_common.h"
#include "hostport.h"

#define PROG "libevent-echo"
#define BUF_SIZE (16 * 1024)
/* --bufferevent: echo output a connection may hold before it stops reading */
#define BEV_OUTPUT_MAX (256 * 1024)

enum { EXIT_USAGE = 2 };

typedef struct conn conn_t;
typedef struct bev_conn bev_conn_t;

typedef struct server {
    struct event_base *base;
    conn_t *conns;          /* every open connection, to free them at exit */
    bev_conn_t *bev_conns;  /* the same in --bufferevent mode */
    char buf[BUF_SIZE];     /* one read buffer: an echo leaves it before the next read */
} server_t;

struct conn {
    server_t *srv;
    conn_t *prev, *next;
    evutil_socket_t fd;
    struct event *rev;      /* EV_READ | EV_PERSIST: the normal state */
    struct event *wev;      /* EV_WRITE | EV_PERSIST, made on the first short write */
    char *pending;          /* the part of an echo the socket has not taken yet */
    size_t pending_len, pending_off;
};

static void close_conn(conn_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        c->srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    event_free(c->rev);
    if (c->wev)
        event_free(c->wev);
    free(c->pending);
    evutil_closesocket(c->fd);
    free(c);
}

static void on_writable(evutil_socket_t fd, short what, void *arg);

/* Keeps data[0..len) and waits for the socket to take it before reading again. */
static int stash(conn_t *c, const char *data, size_t len)
{
    if (!c->wev) {
        c->wev = event_new(c->srv->base, c->fd, EV_WRITE | EV_PERSIST, on_writable, c);
        if (!c->wev)
            return -1;
    }
    c->pending = malloc(len);
    if (!c->pending)
        return -1;
    memcpy(c->pending, data, len);
    c->pending_len = len;
    c->pending_off = 0;
    if (event_del(c->rev) < 0 || event_add(c->wev, NULL) < 0)
        return -1;
    return 0;
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    conn_t *c = arg;
    char *buf = c->srv->buf;
    (void)what;
    ssize_t n = read(fd, buf, BUF_SIZE);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        close_conn(c);
        return;
    }
    if (n < 0)
        return;
    ssize_t w = write(fd, buf, (size_t)n);
    if (w < 0) {
        if (errno != EAGAIN && errno != EINTR) {
            close_conn(c);
            return;
        }
        w = 0;
    }
    if (w < n && stash(c, buf + w, (size_t)(n - w)) < 0)
        close_conn(c);
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    conn_t *c = arg;
    (void)what;
    ssize_t w = write(fd, c->pending + c->pending_off, c->pending_len - c->pending_off);
    if (w < 0) {
        if (errno != EAGAIN && errno != EINTR)
            close_conn(c);
        return;
    }
    c->pending_off += (size_t)w;
    if (c->pending_off < c->pending_len)
        return;
    free(c->pending);
    c->pending = NULL;
    if (event_del(c->wev) < 0 || event_add(c->rev, NULL) < 0)
        close_conn(c);
}

/* An echo is a reply: send it now, not after the peer's delayed ACK. */
static void set_nodelay(evutil_socket_t fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    server_t *s = arg;
    (void)l;
    (void)sa;
    (void)salen;
    set_nodelay(fd);
    conn_t *c = calloc(1, sizeof *c);
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    c->srv = s;
    c->fd = fd;
    c->rev = event_new(s->base, fd, EV_READ | EV_PERSIST, on_readable, c);
    if (!c->rev || event_add(c->rev, NULL) < 0) {
        if (c->rev)
            event_free(c->rev);
        evutil_closesocket(fd);
        free(c);
        return;
    }
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
}

/* ---- --bufferevent mode ------------------------------------------------------- */

struct bev_conn {
    server_t *srv;
    bev_conn_t *prev, *next;
    struct bufferevent *bev;
};

static void bev_conn_free(bev_conn_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        c->srv->bev_conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    bufferevent_free(c->bev);   /* BEV_OPT_CLOSE_ON_FREE: closes the socket too */
    free(c);
}

static void bev_on_event(struct bufferevent *bev, short what, void *arg);
static void bev_on_drained(struct bufferevent *bev, void *arg);

static void bev_on_read(struct bufferevent *bev, void *arg)
{
    struct evbuffer *out = bufferevent_get_output(bev);
    evbuffer_add_buffer(out, bufferevent_get_input(bev));
    if (evbuffer_get_length(out) < BEV_OUTPUT_MAX)
        return;
    /* the peer is not reading its echoes: read no more until half has gone out */
    bufferevent_setcb(bev, bev_on_read, bev_on_drained, bev_on_event, arg);
    bufferevent_setwatermark(bev, EV_WRITE, BEV_OUTPUT_MAX / 2, 0);
    bufferevent_disable(bev, EV_READ);
}

/* The output fell to the low watermark: back to plain echoing. */
static void bev_on_drained(struct bufferevent *bev, void *arg)
{
    bufferevent_setcb(bev, bev_on_read, NULL, bev_on_event, arg);
    bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
    if (bufferevent_enable(bev, EV_READ) < 0)
        bev_conn_free(arg);
}

static void bev_on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        bev_conn_free(arg);
}

static void on_accept_bev(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                          int salen, void *arg)
{
    server_t *s = arg;
    (void)l;
    (void)sa;
    (void)salen;
    set_nodelay(fd);
    bev_conn_t *c = calloc(1, sizeof *c);
    struct bufferevent *bev = c ? bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE) : NULL;
    if (!bev) {
        evutil_closesocket(fd);
        free(c);
        return;
    }
    c->srv = s;
    c->bev = bev;
    bufferevent_setcb(bev, bev_on_read, NULL, bev_on_event, c);
    if (bufferevent_enable(bev, EV_READ) < 0) {
        bufferevent_free(bev);
        free(c);
        return;
    }
    c->next = s->bev_conns;
    if (s->bev_conns)
        s->bev_conns->prev = c;
    s->bev_conns = c;
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    (void)arg;
    (void)l;
    int e = EVUTIL_SOCKET_ERROR();
    /* out of fds or a connection reset before accept: keep serving the others */
    fprintf(stderr, PROG ": accept: %s\n", evutil_socket_error_to_string(e));
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    server_t *s = arg;
    (void)what;
    fprintf(stderr, PROG ": %s\n", strsignal((int)sig));
    event_base_loopbreak(s->base);
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
        "usage: " PROG " --listen HOST:PORT [--cpu N] [--bufferevent]\n"
        "\n"
        "An echo server on libevent 2 (plain events, read/write), a yardstick for the\n"
        "echo benchmark. Prints 'listening on HOST:PORT' (the real port when PORT is 0),\n"
        "echoes until SIGTERM or SIGINT, then prints its CPU seconds on stderr and exits 0.\n"
        "\n"
        "  --listen HOST:PORT   address to listen on (IPv4, [IPv6] or a name)\n"
        "  --cpu N              pin the process to CPU N\n"
        "  --bufferevent        the idiomatic style instead: a bufferevent per\n"
        "                       connection, input moved to output (evbuffer_add_buffer)\n"
        "  --help               this text\n");
}

/* 0: run; 1: --help was printed; -1: bad usage (said on stderr). */
static int parse_args(int argc, char **argv, const char **listen_addr, int *cpu,
                      bool *bufferevent)
{
    static const struct option longopts[] = {
        { "listen", required_argument, NULL, 'l' },
        { "cpu", required_argument, NULL, 'C' },
        { "bufferevent", no_argument, NULL, 'b' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    uint64_t v;
    int ch;
    while ((ch = getopt_long(argc, argv, "l:C:bh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'l': *listen_addr = optarg; break;
        case 'C':
            if (iop_app_parse_u64(optarg, 0, CPU_SETSIZE - 1, &v) < 0) {
                fprintf(stderr, PROG ": bad --cpu '%s'\n", optarg);
                return -1;
            }
            *cpu = (int)v;
            break;
        case 'b': *bufferevent = true; break;
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
    bool bufferevent = false;
    int r = parse_args(argc, argv, &listen_addr, &cpu, &bufferevent);
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

    static server_t s;   /* holds the 16 KiB buffer */
    s.base = event_base_new();
    if (!s.base) {
        fprintf(stderr, PROG ": event_base_new failed\n");
        return EXIT_FAILURE;
    }
    struct evconnlistener *l = evconnlistener_new_bind(
        s.base, bufferevent ? on_accept_bev : on_accept, &s, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE,
        SOMAXCONN, (struct sockaddr *)&ss, (int)sslen);
    if (!l) {
        fprintf(stderr, PROG ": cannot listen on %s: %s\n", listen_addr, strerror(errno));
        event_base_free(s.base);
        return EXIT_FAILURE;
    }
    evconnlistener_set_error_cb(l, on_accept_error);
    struct event *sigterm = evsignal_new(s.base, SIGTERM, on_signal, &s);
    struct event *sigint = evsignal_new(s.base, SIGINT, on_signal, &s);
    if (!sigterm || !sigint || event_add(sigterm, NULL) < 0 || event_add(sigint, NULL) < 0) {
        fprintf(stderr, PROG ": cannot set up signal handling\n");
        return EXIT_FAILURE;
    }

    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    char where[128];
    getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&bound, &blen);
    printf("listening on %s, libevent %s, method %s\n",
           iop_app_format_addr((struct sockaddr *)&bound, blen, where, sizeof where),
           event_get_version(), event_base_get_method(s.base));
    fflush(stdout);

    int status = event_base_dispatch(s.base) < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
    if (status != EXIT_SUCCESS)
        fprintf(stderr, PROG ": event_base_dispatch failed\n");

    while (s.conns)
        close_conn(s.conns);
    while (s.bev_conns)
        bev_conn_free(s.bev_conns);
    evconnlistener_free(l);
    event_free(sigterm);
    event_free(sigint);
    event_base_free(s.base);
    print_cpu();
    return status;
}
