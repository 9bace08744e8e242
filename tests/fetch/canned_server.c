/* The canned HTTP server (see canned_server.h): an acceptor coroutine per listener
 * and one coroutine per connection, in a nursery on the server thread's own loop;
 * a byte on stop_pipe makes the main coroutine close the nursery (every coroutine
 * cancelled) and the thread end. */
#include "canned_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ioplex.h>
#include "test_util.h"

#define IO_TIMEOUT_NS (15ull * 1000000000ull)   /* any wait of the server, at most */
#define REQ_MAX 8192

typedef struct srv {
    canned_server_t *s;
    iop_loop_t *loop;
    iop_nursery_t nursery;
} srv_t;

typedef struct accept_ctx {
    srv_t *srv;
    int lfd;
} accept_ctx_t;

typedef struct sconn {
    srv_t *srv;
    int fd;
} sconn_t;

void canned_body(unsigned char *buf, size_t n, unsigned seed)
{
    tu_fill_pattern(buf, n, seed);
}

static uint64_t io_deadline(srv_t *srv)
{
    return iop_now(srv->loop) + IO_TIMEOUT_NS;
}

static int send_all(sconn_t *c, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = iop_send(c->fd, p, len, MSG_NOSIGNAL, io_deadline(c->srv));
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int send_str(sconn_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int send_str(sconn_t *c, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return send_all(c, buf, (size_t)n);
}

/* Waits until the client goes away (or the server's own limit). */
static int stall(sconn_t *c)
{
    char b[256];
    while (iop_recv(c->fd, b, sizeof b, 0, io_deadline(c->srv)) > 0)
        ;
    return 0;
}

static unsigned char *make_body(size_t n, unsigned seed)
{
    unsigned char *b = malloc(n ? n : 1);
    if (b)
        canned_body(b, n, seed);
    return b;
}

/* canned_body(n, seed), made a piece at a time as it goes out: a body of tens of
 * MB made whole first kept the server thread from its other connections. */
static int send_body(sconn_t *c, size_t n, unsigned seed)
{
    enum { PIECE = 64 * 1024 };
    unsigned char *piece = malloc(PIECE);   /* its own: the sends park */
    if (!piece)
        return -1;
    uint32_t st = tu_pattern_start(seed);
    int r = 0;
    for (size_t off = 0; r == 0 && off < n;) {
        size_t len = n - off < PIECE ? n - off : PIECE;
        tu_pattern_fill(&st, piece, len);
        r = send_all(c, piece, len);
        off += len;
    }
    free(piece);
    return r;
}

static int send_chunked(sconn_t *c, const unsigned char *body, size_t n, unsigned seed)
{
    uint32_t rng = seed | 1;
    int r = send_str(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (size_t off = 0, i = 0; r == 0 && off < n; i++) {
        size_t len = 1 + tu_rand(&rng) % 3000;
        if (len > n - off)
            len = n - off;
        if (i % 3 == 0)
            r = send_str(c, "%zX;ext=\"v\";e\r\n", len);
        else
            r = send_str(c, "%zx\r\n", len);
        if (r == 0)
            r = send_all(c, body + off, len);
        if (r == 0)
            r = send_str(c, "\r\n");
        off += len;
    }
    if (r == 0)
        r = send_str(c, "0\r\nX-Trailer: one\r\nX-Other: two\r\n\r\n");
    return r;
}

/* Sends the response for path. 1 = keep the connection for another request. */
static int respond(sconn_t *c, const char *path)
{
    canned_server_t *s = c->srv->s;
    unsigned n = 0, seed = 0;
    int k = 0, keep = 1;
    char name[256] = "";
    if (sscanf(path, "/len/%u/%u/%255s", &n, &seed, name) == 3 ||
        sscanf(path, "/info/%u/%u/%255s", &n, &seed, name) == 3 ||
        sscanf(path, "/chunk/%u/%u/%255s", &n, &seed, name) == 3 ||
        sscanf(path, "/close/%u/%u/%255s", &n, &seed, name) == 3) {
        int r;
        if (strncmp(path, "/chunk/", 7) == 0) {
            unsigned char *body = make_body(n, seed);
            if (!body)
                return 0;
            r = send_chunked(c, body, n, seed);
            free(body);
        } else if (strncmp(path, "/close/", 7) == 0) {
            r = send_str(c, "HTTP/1.0 200 OK\r\nServer: canned\r\n\r\n");
            keep = 0;
        } else {
            r = 0;
            if (strncmp(path, "/info/", 6) == 0)
                r = send_str(c, "HTTP/1.1 100 Continue\r\n\r\n"
                                "HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n");
            if (r == 0)
                r = send_str(c, "HTTP/1.1 200 OK\r\nContent-Length: %u\r\n\r\n", n);
        }
        if (r == 0 && strncmp(path, "/chunk/", 7) != 0)
            r = send_body(c, n, seed);
        return r == 0 && keep;
    }
    if (sscanf(path, "/rel/%d/%255s", &k, name) == 2 || sscanf(path, "/abs/%d/%255s", &k, name) == 2) {
        if (k == 0)
            return respond(c, "/len/64/7/end");
        if (path[1] == 'r')
            return send_str(c, "HTTP/1.1 302 Found\r\nLocation: ../%d/%s\r\n"
                               "Content-Length: 13\r\n\r\nredirect body", k - 1, name) == 0;
        return send_str(c, "HTTP/1.1 301 Moved Permanently\r\nLocation: http://127.0.0.1:%d/abs/%d/%s\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n4\r\nmove\r\n0\r\n\r\n",
                        s->port, k - 1, name) == 0;
    }
    if (strcmp(path, "/esc") == 0)     /* terminal escapes in what an error quotes */
        return send_str(c, "HTTP/1.1 302 Found\r\nLocation: ftp://x/\x1b]0;TITLE\x07\x1b[2J\r\n"
                           "Content-Length: 0\r\n\r\n") == 0;
    if (strcmp(path, "/loop") == 0)
        return send_str(c, "HTTP/1.1 302 Found\r\nLocation: /loop\r\nContent-Length: 0\r\n\r\n") == 0;
    if (strcmp(path, "/https") == 0)
        return send_str(c, "HTTP/1.1 302 Found\r\nLocation: https://127.0.0.1/x\r\n"
                           "Content-Length: 0\r\n\r\n") == 0;
    if (strncmp(path, "/204/", 5) == 0)
        return send_str(c, "HTTP/1.1 204 No Content\r\n\r\n") == 0;
    if (strncmp(path, "/304/", 5) == 0)         /* unasked for: no conditional request came */
        return send_str(c, "HTTP/1.1 304 Not Modified\r\n\r\n") == 0;
    if (strncmp(path, "/slow/", 6) == 0)
        return stall(c);
    if (sscanf(path, "/delay/%d/%255s", &k, name) == 2) {
        iop_sleep((uint64_t)k * 1000000ull);
        return send_str(c, "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\ndelayed") == 0;
    }
    if (sscanf(path, "/slowbody/%u/%255s", &n, name) == 2 || sscanf(path, "/trunc/%u/%255s", &n, name) == 2) {
        unsigned char *body = make_body(n, 1);
        int r = body ? send_str(c, "HTTP/1.1 200 OK\r\nContent-Length: %u\r\n\r\n", n) : -1;
        if (r == 0)
            r = send_all(c, body, n / 2);
        free(body);
        if (r == 0 && path[1] == 's')
            stall(c);
        return 0;
    }
    if (strcmp(path, "/bad") == 0) {
        send_str(c, "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n");
        return 0;
    }
    return send_str(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found") == 0;
}

/* Reads one request head into buf; its length (up to and including the blank
 * line), or -1 when the client went away, waited too long, or sent too much. */
static int read_request(sconn_t *c, char *buf, size_t *have, uint64_t deadline)
{
    for (;;) {
        buf[*have] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end)
            return (int)(end + 4 - buf);
        if (*have == REQ_MAX)
            return -1;
        ssize_t n = iop_recv(c->fd, buf + *have, REQ_MAX - *have, 0, deadline);
        if (n <= 0)
            return -1;
        *have += (size_t)n;
    }
}

static void *conn_main(void *arg)
{
    sconn_t *c = arg;
    canned_server_t *s = c->srv->s;
    char *buf = malloc(REQ_MAX + 1);
    size_t have = 0;
    for (int nreq = 0; buf; nreq++) {
        uint64_t deadline = io_deadline(c->srv);
        if (nreq > 0 && s->idle_close_ms)
            deadline = iop_now(c->srv->loop) + (uint64_t)s->idle_close_ms * 1000000ull;
        int len = read_request(c, buf, &have, deadline);
        if (len < 0)
            break;
        atomic_fetch_add(&s->requests, 1);
        if (s->drop_second && nreq == 1)
            break;                     /* as if it closed the idle connection just now */
        char path[1024];
        if (sscanf(buf, "GET %1023s HTTP/1.1\r\n", path) != 1 || !strstr(buf, "\r\nHost: "))
            break;
        memmove(buf, buf + len, have - (size_t)len);
        have -= (size_t)len;
        if (!respond(c, path))
            break;
    }
    free(buf);
    iop_close(c->fd);
    free(c);
    return NULL;
}

static void *acceptor_main(void *arg)
{
    accept_ctx_t *a = arg;
    for (;;) {
        int fd = iop_accept(a->lfd, NULL, NULL, 0);
        if (fd < 0) {
            if (fd == -ECANCELED)
                return NULL;
            iop_sleep(10 * 1000000ull);   /* EMFILE and the like: try again */
            continue;
        }
        atomic_fetch_add(&a->srv->s->connections, 1);
        sconn_t *c = malloc(sizeof *c);
        if (c)
            *c = (sconn_t){ .srv = a->srv, .fd = fd };
        if (!c || iop_nursery_go(&a->srv->nursery, conn_main, c, NULL) < 0) {
            free(c);
            iop_close(fd);
        }
    }
}

static void *server_main(void *arg)
{
    srv_t *srv = arg;
    canned_server_t *s = srv->s;
    accept_ctx_t a4 = { srv, s->lfd }, a6 = { srv, s->lfd6 };
    iop_nursery_init(&srv->nursery, srv->loop);
    iop_nursery_go(&srv->nursery, acceptor_main, &a4, NULL);
    if (s->lfd6 >= 0)
        iop_nursery_go(&srv->nursery, acceptor_main, &a6, NULL);
    char b;
    iop_read(s->stop_pipe[0], &b, 1, 0);
    iop_nursery_close(&srv->nursery, iop_now(srv->loop));
    return NULL;
}

static void *server_thread(void *arg)
{
    canned_server_t *s = arg;
    srv_t srv = { .s = s };
    /* epoll unless FETCH_SERVER_BACKEND says otherwise: the server is the tests'
     * fixed point, the backend under test is iop-fetch's */
    const char *be = getenv("FETCH_SERVER_BACKEND");
    iop_loop_opts_t opts = { .size = sizeof opts, .backend = be && *be ? be : "epoll" };
    if (iop_loop_create(&srv.loop, &opts) < 0) {
        fprintf(stderr, "canned server: no loop: %s\n", iop_last_error());
        return NULL;
    }
    iop_coro_t *m;
    if (iop_go(srv.loop, server_main, &srv, NULL, &m) == 0)
        iop_join(m, NULL, 0);
    iop_loop_destroy(srv.loop);
    return NULL;
}

/* [::1]:0, or -1 when the machine has no IPv6 loopback. */
static int listen6(int *port)
{
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 128) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin6_port);
    return fd;
}

int canned_start(canned_server_t *s)
{
    struct sockaddr_in a;
    s->lfd = tu_tcp_listener(&a, 256);
    s->port = ntohs(a.sin_port);
    s->lfd6 = listen6(&s->port6);
    if (s->lfd6 < 0)
        s->port6 = 0;
    atomic_init(&s->connections, 0);
    atomic_init(&s->requests, 0);
    if (pipe2(s->stop_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
        return -errno;
    int r = pthread_create(&s->thread, NULL, server_thread, s);
    if (r != 0)
        return -r;
    s->started = 1;
    return 0;
}

void canned_stop(canned_server_t *s)
{
    if (!s->started)
        return;
    char b = 'x';
    if (write(s->stop_pipe[1], &b, 1) != 1)
        fprintf(stderr, "canned server: cannot signal stop\n");
    pthread_join(s->thread, NULL);
    s->started = 0;
    close(s->stop_pipe[0]);
    close(s->stop_pipe[1]);
    close(s->lfd);
    if (s->lfd6 >= 0)
        close(s->lfd6);
}
