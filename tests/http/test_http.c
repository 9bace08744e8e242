/* The http service on one backend (argv[1]), over raw loopback sockets: the hello
 * route, pipelining, split requests, keep-alive, HEAD, every error status, the
 * header timeout, path traversal and symlinks (with openat2 and with the realpath
 * fallback), Range, If-Modified-Since, index files and redirects, a 5 MiB file
 * through sendfile, the counters and drains. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http_date.h"
#include "http_fixture.h"
#include "http_harness.h"
#include "test_util.h"

static const char *backend;
static hf_root_t root;
static hh_server_t srv;                /* root=www, the default resolve (openat2 here) */

#define H11 " HTTP/1.1\r\nHost: t\r\n"

static void start(hh_server_t *s, const char *opts)
{
    if (hh_start(s, backend, opts, 0) < 0)
        fail_msg("http server (%s): %s", opts, s->err);
}

static int group_up(void **state)
{
    (void)state;
    if (hf_make(&root) < 0)
        return -1;
    char opts[256];
    snprintf(opts, sizeof opts, "root=%s", root.www);
    if (hh_start(&srv, backend, opts, 0) < 0) {
        fprintf(stderr, "http server: %s\n", srv.err);
        return -1;
    }
    return 0;
}

static int group_down(void **state)
{
    (void)state;
    hh_stop(&srv);
    hf_remove(&root);
    return 0;
}

/* One request on its own connection; the response must parse. */
static void get(const hh_server_t *s, const char *req, hh_resp_t *r)
{
    if (hh_get(s, req, r, strncmp(req, "HEAD ", 5) == 0) < 0)
        fail_msg("no response to %.60s", req);
}

static void expect_header(const hh_resp_t *r, const char *name, const char *value)
{
    char v[512];
    if (!hh_header(r, name, v, sizeof v))
        fail_msg("no %s in\n%s", name, r->head);
    if (strcmp(v, value) != 0)
        fail_msg("%s: '%s', want '%s'", name, v, value);
}

static hh_conn_t *conn_new(const hh_server_t *s)
{
    hh_conn_t *c = malloc(sizeof *c);
    assert_non_null(c);
    assert_int_equal(hh_connect(c, s), 0);
    return c;
}

/* A slow reader: its receive buffer is 4 KiB from the start (set after connecting,
 * the window already offered shrinks and loopback drops what overflows it: 200 ms
 * retransmits). Blocking with 5 s timeouts, or non-blocking. */
static hh_conn_t *conn_small_rcvbuf(const hh_server_t *s, int nonblock)
{
    hh_conn_t *c = malloc(sizeof *c);
    assert_non_null(c);
    c->len = 0;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    assert_true(c->fd >= 0);
    int small = 4096;
    struct timeval tv = { 5, 0 };
    assert_int_equal(setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
    assert_int_equal(setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    assert_int_equal(setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), 0);
    assert_true(connect(c->fd, (const struct sockaddr *)&s->addr, sizeof s->addr) == 0 ||
                (nonblock && errno == EINPROGRESS));
    return c;
}

static void conn_free(hh_conn_t *c)
{
    hh_close(c);
    free(c);
}

/* ---- basics ------------------------------------------------------------------------- */

static void test_hello(void **state)
{
    (void)state;
    hh_resp_t r;
    get(&srv, "GET /hello" H11 "\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 13);
    assert_string_equal(r.body, "Hello, World!");
    expect_header(&r, "Content-Type", "text/plain");
    expect_header(&r, "Content-Length", "13");
    expect_header(&r, "Server", "ioplex");
    char date[64];
    assert_non_null(hh_header(&r, "Date", date, sizeof date));
    int64_t t;
    assert_int_equal(http_parse_date(date, strlen(date), &t), 0);
    assert_true(llabs((long long)(t - time(NULL))) <= 5);
    assert_null(hh_header(&r, "Connection", date, sizeof date));   /* 1.1 keeps it open */
    hh_resp_free(&r);
}

static int64_t date_of_next_hello(hh_conn_t *c)
{
    hh_resp_t r;
    char date[64];
    int64_t t = -1;
    assert_int_equal(hh_sends(c, "GET /hello" H11 "\r\n"), 0);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    assert_non_null(hh_header(&r, "Date", date, sizeof date));
    assert_int_equal(http_parse_date(date, strlen(date), &t), 0);
    hh_resp_free(&r);
    return t;
}

/* The Date value is kept per connection and formatted once a second: a keep-alive
 * connection still gets the time of each response, not of its first one. */
static void test_date_moves_on(void **state)
{
    (void)state;
    hh_conn_t *c = conn_new(&srv);
    int64_t t1 = date_of_next_hello(c);
    /* Just past the next second (the server's coarse clock lags by a tick at most). */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    assert_true(ts.tv_sec >= t1);
    usleep((useconds_t)((1000000000L - ts.tv_nsec) / 1000 + 50000));
    int64_t t2 = date_of_next_hello(c);
    int64_t now = (int64_t)time(NULL);
    assert_true(t2 >= (int64_t)ts.tv_sec + 1);
    assert_true(t2 <= now && now - t2 <= 1);
    conn_free(c);
}

static void test_pipelining(void **state)
{
    (void)state;
    hh_conn_t *c = conn_new(&srv);
    assert_int_equal(hh_sends(c, "GET /hello" H11 "\r\nGET /hello.txt" H11 "\r\nHEAD /index.html" H11 "\r\n"), 0);
    hh_resp_t r;
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "Hello, World!");
    hh_resp_free(&r);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, HF_HELLO_TXT);
    hh_resp_free(&r);
    assert_int_equal(hh_read_response(c, &r, 1), 0);
    assert_int_equal(r.status, 200);
    char v[32];
    snprintf(v, sizeof v, "%zu", strlen(HF_INDEX));
    expect_header(&r, "Content-Length", v);
    expect_header(&r, "Content-Type", "text/html; charset=utf-8");
    hh_resp_free(&r);
    /* Nothing stray after the HEAD: the next response starts cleanly. */
    assert_int_equal(hh_sends(c, "GET /hello" H11 "\r\n"), 0);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    assert_string_equal(r.body, "Hello, World!");
    hh_resp_free(&r);
    conn_free(c);
}

/* Responses of every size in one long pipeline: those that fit the connection's
 * own small room, a larger one after them (what is pending moves to the buffer),
 * HEADs, and batches past the buffer's 16 KiB (flushed in the middle): all come
 * whole and in order. */
static void test_pipelined_mix(void **state)
{
    (void)state;
    enum { ROUNDS = 80 };
    static const char *const reqs[] = {
        "GET /hello" H11 "\r\n", "GET /hello" H11 "\r\n", "GET /nope" H11 "\r\n",
        "HEAD /hello" H11 "\r\n", "GET /hello.txt" H11 "\r\n",
    };
    enum { NREQ = sizeof reqs / sizeof *reqs };
    static char all[ROUNDS * NREQ * 40];
    size_t n = 0;
    for (int i = 0; i < ROUNDS; i++)
        for (int k = 0; k < NREQ; k++)
            n += (size_t)snprintf(all + n, sizeof all - n, "%s", reqs[k]);
    hh_conn_t *c = conn_new(&srv);
    assert_int_equal(hh_send(c, all, n), 0);
    for (int i = 0; i < ROUNDS; i++) {
        for (int k = 0; k < NREQ; k++) {
            hh_resp_t r;
            assert_int_equal(hh_read_response(c, &r, k == 3), 0);
            switch (k) {
            case 2:
                assert_int_equal(r.status, 404);
                break;
            case 3:
                assert_int_equal(r.status, 200);
                expect_header(&r, "Content-Length", "13");
                break;
            case 4:
                assert_int_equal(r.status, 200);
                assert_string_equal(r.body, HF_HELLO_TXT);
                break;
            default:
                assert_int_equal(r.status, 200);
                assert_string_equal(r.body, "Hello, World!");
            }
            hh_resp_free(&r);
        }
    }
    conn_free(c);
}

/* A long random pipeline of every kind of response the service writes: the
 * small ones that fit the connection's own room (/hello, HEAD, 304), the larger
 * ones that move what is pending to the buffer (404, 405, small files, ranges),
 * redirects of a directory (which need the whole buffer), ranges too large for the
 * buffer (sendfile), past 16 KiB per batch, sent by another thread while a slow
 * reader with a small receive buffer reads: every response comes whole, in order. */
typedef struct pipe_req {
    const char *text;
    int status, no_body;
    const char *body;              /* NULL: checked apart */
} pipe_req_t;

static const pipe_req_t pipe_reqs[] = {
    { "GET /hello" H11 "\r\n", 200, 0, "Hello, World!" },
    { "HEAD /hello" H11 "\r\n", 200, 1, "" },
    { "GET /nope" H11 "\r\n", 404, 0, "404 Not Found\n" },
    { "HEAD /nope" H11 "\r\n", 404, 1, "" },
    { "GET /sub" H11 "\r\n", 301, 0, "301 Moved Permanently\n" },
    { "HEAD /sub" H11 "\r\n", 301, 1, "" },
    { "GET /sub?x=1" H11 "\r\n", 301, 0, "301 Moved Permanently\n" },
    { "GET /hello.txt" H11 "\r\n", 200, 0, HF_HELLO_TXT },
    { "GET /hello.txt" H11 "If-Modified-Since: " HF_MTIME_TEXT "\r\n\r\n", 304, 1, "" },
    { "GET /sub/" H11 "\r\n", 200, 0, HF_SUB_INDEX },
    { "POST /hello" H11 "Content-Length: 3\r\n\r\nabc", 405, 0, "405 Method Not Allowed\n" },
    { "GET /big.bin" H11 "Range: bytes=5-4000\r\n\r\n", 206, 0, NULL },
    { "GET /big.bin" H11 "Range: bytes=1000-10999\r\n\r\n", 206, 0, NULL },
    { "HEAD /big.bin" H11 "\r\n", 200, 1, "" },
};
enum { NPIPE = sizeof pipe_reqs / sizeof *pipe_reqs, PIPE_N = 3000 };

typedef struct pipe_sender {
    hh_conn_t *c;
    const char *p;
    size_t n;
    int rc;
} pipe_sender_t;

static void *pipe_send(void *arg)
{
    pipe_sender_t *s = arg;
    s->rc = hh_send(s->c, s->p, s->n);
    return NULL;
}

static void check_range(const hh_resp_t *r, const char *req)
{
    unsigned long long a, b;
    const char *rg = strstr(req, "bytes=");
    assert_non_null(rg);
    assert_int_equal(sscanf(rg, "bytes=%llu-%llu", &a, &b), 2);
    assert_int_equal(r->body_len, b - a + 1);
    for (unsigned long long i = a; i <= b; i++)
        if ((unsigned char)r->body[i - a] != hf_big_byte(i))
            fail_msg("range %llu-%llu: byte %llu differs", a, b, i);
}

static void test_pipelined_random(void **state)
{
    (void)state;
    static int kinds[PIPE_N];
    static char all[PIPE_N * 96];
    uint32_t rnd = 0x9E3779B9u;
    size_t n = 0;
    for (int i = 0; i < PIPE_N; i++) {
        rnd ^= rnd << 13, rnd ^= rnd >> 17, rnd ^= rnd << 5;
        /* Mostly small responses, in runs, so that batches of them fill the room. */
        kinds[i] = rnd % 4 ? (int)(rnd >> 8) % 2 : (int)(rnd >> 8) % NPIPE;
        n += (size_t)snprintf(all + n, sizeof all - n, "%s", pipe_reqs[kinds[i]].text);
    }
    hh_conn_t *c = conn_small_rcvbuf(&srv, 0);
    pipe_sender_t s = { c, all, n, -1 };
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, pipe_send, &s), 0);
    for (int i = 0; i < PIPE_N; i++) {
        const pipe_req_t *q = &pipe_reqs[kinds[i]];
        hh_resp_t r;
        if (hh_read_response(c, &r, q->no_body) < 0)
            fail_msg("response %d (%.30s): none", i, q->text);
        if (r.status != q->status)
            fail_msg("response %d (%.30s): status %d, want %d", i, q->text, r.status, q->status);
        if (q->body)
            assert_string_equal(r.body, q->body);
        else
            check_range(&r, q->text);
        if (q->status == 301) {
            char loc[64];
            assert_non_null(hh_header(&r, "Location", loc, sizeof loc));
            assert_string_equal(loc, strstr(q->text, "?x=1") ? "/sub/?x=1" : "/sub/");
        }
        if (i % 500 == 0)
            usleep(20 * 1000);     /* a slow reader now and then: the server's sends stall */
        hh_resp_free(&r);
    }
    pthread_join(th, NULL);
    assert_int_equal(s.rc, 0);
    conn_free(c);
}

static void test_split_requests(void **state)
{
    (void)state;
    hh_conn_t *c = conn_new(&srv);
    const char *req = "GET /hello.txt HTTP/1.1\r\nHost: t\r\nUser-Agent: byte-by-byte\r\n\r\n";
    for (const char *p = req; *p; p++) {
        assert_int_equal(hh_send(c, p, 1), 0);
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    hh_resp_t r;
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, HF_HELLO_TXT);
    hh_resp_free(&r);
    /* One request and a half, then the rest: both answered in order. */
    assert_int_equal(hh_sends(c, "GET /hello" H11 "\r\nGET /index.ht"), 0);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    assert_string_equal(r.body, "Hello, World!");
    hh_resp_free(&r);
    assert_int_equal(hh_sends(c, "ml HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    assert_string_equal(r.body, HF_INDEX);
    hh_resp_free(&r);
    /* Empty lines before a request are ignored (RFC 9112 2.2), bare LF ends lines. */
    assert_int_equal(hh_sends(c, "\r\n\r\nGET /hello HTTP/1.1\nHost: t\n\n"), 0);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    assert_int_equal(r.status, 200);
    hh_resp_free(&r);
    /* ... also when a read ends between an empty line's CR and its LF. */
    assert_int_equal(hh_sends(c, "\r"), 0);
    struct timespec pause = { 0, 20000000 };
    nanosleep(&pause, NULL);
    assert_int_equal(hh_sends(c, "\n\r\nGET /hello" H11 "\r\n"), 0);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    assert_int_equal(r.status, 200);
    hh_resp_free(&r);
    conn_free(c);
}

static void test_keepalive(void **state)
{
    (void)state;
    hh_resp_t r;
    char v[64];
    /* HTTP/1.1: reused until asked to close. */
    hh_conn_t *c = conn_new(&srv);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(hh_sends(c, "GET /hello" H11 "\r\n"), 0);
        assert_int_equal(hh_read_response(c, &r, 0), 0);
        assert_int_equal(r.status, 200);
        hh_resp_free(&r);
    }
    assert_int_equal(hh_sends(c, "GET /hello" H11 "Connection: close\r\n\r\n"), 0);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    expect_header(&r, "Connection", "close");
    hh_resp_free(&r);
    assert_true(hh_wait_eof(c, 3000));
    conn_free(c);
    /* HTTP/1.0: closed unless keep-alive is asked for. */
    c = conn_new(&srv);
    assert_int_equal(hh_sends(c, "GET /hello HTTP/1.0\r\n\r\n"), 0);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    assert_int_equal(r.status, 200);
    expect_header(&r, "Connection", "close");
    hh_resp_free(&r);
    assert_true(hh_wait_eof(c, 3000));
    conn_free(c);
    c = conn_new(&srv);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(hh_sends(c, "GET /hello.txt HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"), 0);
        assert_int_equal(hh_read_response(c, &r, 0), 0);
        assert_int_equal(r.status, 200);
        expect_header(&r, "Connection", "keep-alive");
        hh_resp_free(&r);
    }
    assert_false(hh_wait_eof(c, 100));
    conn_free(c);
    (void)v;
}

/* After the server's FIN: sends one byte and waits up to ms for the RST of a socket
 * the server has closed (1), or sees the connection still open, the server reading
 * and dropping what comes (0). */
static int reset_after_eof(hh_conn_t *c, int ms)
{
    assert_true(hh_wait_eof(c, 3000));
    assert_int_equal(send(c->fd, "x", 1, MSG_NOSIGNAL), 1);
    for (int waited = 0; waited < ms; waited += 10) {
        struct tcp_info ti;
        socklen_t len = sizeof ti;
        assert_int_equal(getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &ti, &len), 0);
        if (ti.tcpi_state == TCP_CLOSE)
            return 1;
        struct timespec ts = { 0, 10000000 };
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* A client that asked to close sends nothing more: its connection is closed at
 * once, not kept until its own FIN. One that may still be sending (pipelined bytes
 * after the close, a body refused with 413) is read and dropped for a while, so
 * that the kernel does not answer them with a reset that could cost the client our
 * response. */
static void test_close_linger(void **state)
{
    (void)state;
    hh_resp_t r;
    hh_conn_t *c = conn_new(&srv);
    assert_int_equal(hh_sends(c, "GET /hello" H11 "Connection: close\r\n\r\n"), 0);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    hh_resp_free(&r);
    if (!reset_after_eof(c, 2000))
        fail_msg("asked to close: still open after the response");
    conn_free(c);
    c = conn_new(&srv);
    assert_int_equal(hh_sends(c, "GET /hello HTTP/1.0\r\n\r\n"), 0);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    hh_resp_free(&r);
    if (!reset_after_eof(c, 2000))
        fail_msg("HTTP/1.0 without keep-alive: still open after the response");
    conn_free(c);
    static const char *const more[] = {
        "GET /hello" H11 "Connection: close\r\n\r\nGET /hello" H11 "\r\n",
        "GET /hello" H11 "Content-Length: 999999999999\r\n\r\nbody...",
    };
    for (size_t i = 0; i < sizeof more / sizeof *more; i++) {
        c = conn_new(&srv);
        assert_int_equal(hh_sends(c, more[i]), 0);
        assert_int_equal(hh_read_response(c, &r, 0), 0);
        assert_int_equal(r.status, i == 0 ? 200 : 413);
        hh_resp_free(&r);
        if (reset_after_eof(c, 300))
            fail_msg("%s: reset while the client may still be sending", i == 0 ? "pipelined" : "413");
        conn_free(c);
    }
}

/* http is a client-first service: its host has the kernel hand a connection over
 * only once the request is in, so a silent one is not accepted (for about a
 * second), while one that sends is served at once. */
static void test_deferred_accept(void **state)
{
    (void)state;
    hh_server_t s;
    start(&s, "");
    hh_conn_t *silent = conn_new(&s);
    struct timespec ts = { 0, 200000000 };
    nanosleep(&ts, NULL);
    uint64_t accepted = atomic_load(&s.accepted);
    if (accepted != 0)
        fail_msg("a connection that sent nothing was accepted within 200 ms");
    hh_resp_t r;
    hh_conn_t *c = conn_new(&s);
    assert_int_equal(hh_sends(c, "GET /hello" H11 "\r\n"), 0);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    assert_int_equal(r.status, 200);
    hh_resp_free(&r);
    for (int i = 0; i < 100 && atomic_load(&s.accepted) == 0; i++)
        nanosleep(&(struct timespec){ 0, 10000000 }, NULL);   /* published within 10 ms */
    assert_int_equal(atomic_load(&s.accepted), 1);
    conn_free(c);
    conn_free(silent);
    assert_int_equal(hh_stop(&s), 0);
}

/* Where the backend lends receive buffers (io_uring), a keep-alive connection
 * receives through a stream after its first request: one multishot receive for all
 * of its requests, not one receive each. */
static void test_stream_engages(void **state)
{
    (void)state;
    enum { N = 300 };
    hh_server_t s;
    start(&s, "");
    hh_conn_t *c = conn_new(&s);
    hh_resp_t r;
    for (int i = 0; i < N; i++) {
        assert_int_equal(hh_sends(c, "GET /hello" H11 "\r\n"), 0);
        assert_int_equal(hh_read_response(c, &r, 0), 0);
        hh_resp_free(&r);
    }
    conn_free(c);
    assert_int_equal(hh_stop(&s), 0);
    uint64_t ops = s.loop_stats.ops_submitted;
    fprintf(stderr, "%d requests on one connection: %llu ops submitted\n", N, (unsigned long long)ops);
    /* A send each, and a receive each without the stream. */
    const char *mode = getenv("HH_RECV");
    int streams = mode ? strcmp(mode, "stream") == 0 : strncmp(backend, "uring", 5) == 0;
    if (streams && ops > N * 3 / 2)
        fail_msg("%llu ops for %d requests: no stream", (unsigned long long)ops, N);
}

static void test_head(void **state)
{
    (void)state;
    hh_conn_t *c = conn_new(&srv);
    hh_resp_t r;
    assert_int_equal(hh_sends(c, "HEAD /hello.txt" H11 "\r\nHEAD /hello" H11 "\r\nGET /hello" H11 "\r\n"), 0);
    assert_int_equal(hh_read_response(c, &r, 1), 0);
    assert_int_equal(r.status, 200);
    expect_header(&r, "Content-Length", "11");
    expect_header(&r, "Last-Modified", HF_MTIME_TEXT);
    hh_resp_free(&r);
    assert_int_equal(hh_read_response(c, &r, 1), 0);
    expect_header(&r, "Content-Length", "13");
    hh_resp_free(&r);
    /* Had a HEAD sent a body, this would start in the middle of it. */
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "Hello, World!");
    hh_resp_free(&r);
    conn_free(c);
}

/* ---- errors ------------------------------------------------------------------------------- */

/* Sends req on a new connection; the response must have status and, if closes, say
 * Connection: close and be followed by EOF. A HEAD's answer has no body, also when
 * it is an error (nothing may follow its head but the EOF). */
static void expect_status(const hh_server_t *s, const char *req, size_t len, int status, int closes)
{
    hh_conn_t *c = conn_new(s);
    assert_int_equal(hh_send(c, req, len), 0);
    hh_resp_t r;
    int head = strncmp(req, "HEAD ", 5) == 0;
    if (hh_read_response(c, &r, head) < 0)
        fail_msg("no response to %.60s", req);
    if (r.status != status)
        fail_msg("%d for %.60s (want %d)", r.status, req, status);
    char v[64];
    const char *conn = hh_header(&r, "Connection", v, sizeof v);
    if (closes) {
        assert_non_null(conn);
        assert_string_equal(conn, "close");
        assert_true(hh_wait_eof(c, 3000));
    } else {
        assert_true(!conn || strcmp(conn, "close") != 0);
    }
    if (head)
        assert_int_equal(r.body_len, 0);
    else
        assert_true(r.body_len > 0);       /* a small text body */
    hh_resp_free(&r);
    conn_free(c);
}

static void expect_status_s(const char *req, int status, int closes)
{
    expect_status(&srv, req, strlen(req), status, closes);
}

static void test_errors(void **state)
{
    (void)state;
    expect_status_s("GARBAGE\r\n\r\n", 400, 1);
    expect_status_s("GET /hello HTTP/1.1\r\n\r\n", 400, 1);                    /* no Host */
    expect_status_s("HEAD /hello HTTP/1.1\r\n\r\n", 400, 1);
    expect_status_s("GET /hello" H11 "Host: u\r\n\r\n", 400, 1);              /* two Hosts */
    expect_status_s("GET /hello" H11 "X-A: 1\r\n folded\r\n\r\n", 400, 1);   /* obs-fold */
    expect_status_s("GET /hello" H11 "X-A: a\rb\r\n\r\n", 400, 1);           /* bare CR */
    expect_status_s("GET /hello" H11 "Bad Name: 1\r\n\r\n", 400, 1);
    expect_status_s("GET /hello" H11 "X-A : 1\r\n\r\n", 400, 1);
    expect_status_s("GET  /hello HTTP/1.1\r\nHost: t\r\n\r\n", 400, 1);
    expect_status_s("GET /hello HTTP/1.1\r\nHost: [localhost]:80\r\n\r\n", 400, 1);   /* not an IP-literal */
    expect_status_s("GET /hello HTTP/1.1\r\nHost: [127.0.0.1]\r\n\r\n", 400, 1);
    expect_status_s("GET /nothing-here HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", 404, 0);
    expect_status_s("GET /hello" H11 "Content-Length: 1x\r\n\r\n", 400, 1);
    expect_status_s("GET /hello" H11 "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", 400, 1);
    expect_status_s("GET /hello HTTP/2.0\r\nHost: t\r\n\r\n", 505, 1);
    expect_status_s("GET /hello" H11 "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501, 1);
    expect_status_s("GET /nothing-here" H11 "\r\n", 404, 0);
    expect_status_s("GET /hello" H11 "Content-Length: 99999999999999999999999\r\n\r\n", 413, 1);
    expect_status_s("GET /hello" H11 "Content-Length: 20000\r\n\r\n", 413, 1);
    /* 405 with Allow; a body it can frame is skipped and the connection kept. */
    hh_resp_t r;
    get(&srv, "POST /hello" H11 "\r\n", &r);
    assert_int_equal(r.status, 405);
    expect_header(&r, "Allow", "GET, HEAD");
    hh_resp_free(&r);
    hh_conn_t *c = conn_new(&srv);
    assert_int_equal(hh_sends(c, "PUT /x" H11 "Content-Length: 5\r\n\r\nhelloGET /hello" H11
                                 "Content-Length: 3\r\n\r\nabcGET /hello.txt" H11 "\r\n"), 0);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    assert_int_equal(r.status, 405);
    hh_resp_free(&r);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    assert_string_equal(r.body, "Hello, World!");
    hh_resp_free(&r);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    assert_string_equal(r.body, HF_HELLO_TXT);
    hh_resp_free(&r);
    conn_free(c);
    /* 414: a target over 8 KiB, complete or filling the buffer. */
    size_t big = 20000;
    char *req = malloc(big + 64);
    assert_non_null(req);
    int n = sprintf(req, "GET /");
    memset(req + n, 'a', 9000);
    n += 9000;
    n += sprintf(req + n, H11 "\r\n");
    expect_status(&srv, req, (size_t)n, 414, 1);
    n = sprintf(req, "GET /");
    memset(req + n, 'a', big - (size_t)n);
    expect_status(&srv, req, big, 414, 1);
    /* 431: a head larger than the 16 KiB buffer, or too many header lines. */
    n = sprintf(req, "GET /hello" H11 "X-Big: ");
    memset(req + n, 'b', big - (size_t)n);
    expect_status(&srv, req, big, 431, 1);
    n = sprintf(req, "GET /hello" H11);
    for (int i = 0; i < 101; i++)
        n += sprintf(req + n, "X-%d: y\r\n", i);
    n += sprintf(req + n, "\r\n");
    expect_status(&srv, req, (size_t)n, 431, 1);
    memmove(req + 4, req + 3, (size_t)n - 3);   /* the same head as a HEAD: */
    memcpy(req, "HEAD", 4);                       /* the same answer, no body */
    expect_status(&srv, req, (size_t)n + 1, 431, 1);
    n = sprintf(req, "HEAD /");
    memset(req + n, 'a', big - (size_t)n);
    expect_status(&srv, req, big, 414, 1);
    free(req);
}

/* A request head that does not arrive within header_timeout_ms: 408, then closed;
 * a connection that sends nothing is closed without a response. */
static void test_header_timeout(void **state)
{
    (void)state;
    hh_server_t s;
    start(&s, "header_timeout_ms=300");
    hh_conn_t *c = conn_new(&s);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(hh_sends(c, "GET /hello HTTP/1.1\r\nHo"), 0);
    hh_resp_t r;
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_int_equal(r.status, 408);
    expect_header(&r, "Connection", "close");
    assert_true(ms >= 250 && ms < 3000);
    hh_resp_free(&r);
    assert_true(hh_wait_eof(c, 3000));
    conn_free(c);
    /* Answered, then its body stalls: closed without a second response (408) for
     * the request already answered. */
    c = conn_new(&s);
    assert_int_equal(hh_sends(c, "GET /hello" H11 "Content-Length: 10\r\n\r\nabc"), 0);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    assert_int_equal(r.status, 200);
    hh_resp_free(&r);
    assert_true(hh_wait_eof(c, 3000));
    conn_free(c);
    /* Idle after a request: closed quietly; also after the CR of an empty line,
     * which is no request. */
    const char *idle[] = { "GET /hello" H11 "\r\n", "GET /hello" H11 "\r\n\r" };
    for (int i = 0; i < 2; i++) {
        c = conn_new(&s);
        assert_int_equal(hh_sends(c, idle[i]), 0);
        assert_int_equal(hh_read_response(c, &r, 0), 0);
        hh_resp_free(&r);
        assert_true(hh_wait_eof(c, 3000));
        conn_free(c);
    }
    /* A HEAD that stalls gets its 408 without a body. */
    c = conn_new(&s);
    assert_int_equal(hh_sends(c, "HEAD /hello HTTP/1.1\r\nHo"), 0);
    assert_int_equal(hh_read_response(c, &r, 1), 0);
    assert_int_equal(r.status, 408);
    hh_resp_free(&r);
    assert_true(hh_wait_eof(c, 3000));
    conn_free(c);
    hh_stop(&s);
    assert_int_equal(s.stats.errors, 2);
}

/* ---- the root's boundary -------------------------------------------------------------- */

/* A request for a FIFO is refused without opening it: the open released a local
 * writer blocked on it (whose next write then broke its pipe). */
static void fifo_left_closed(const hh_server_t *s)
{
    char fifo[256];
    snprintf(fifo, sizeof fifo, "%s/fifo", root.www);
    pid_t writer = fork();
    assert_true(writer >= 0);
    if (writer == 0) {
        alarm(10);
        _exit(open(fifo, O_WRONLY) >= 0 ? 0 : 1);   /* blocks until someone reads */
    }
    struct timespec pause = { 0, 100 * 1000 * 1000 };
    nanosleep(&pause, NULL);       /* the writer is in its open by now */
    hh_resp_t r;
    get(s, "GET /fifo" H11 "\r\n", &r);
    assert_int_equal(r.status, 404);
    hh_resp_free(&r);
    nanosleep(&pause, NULL);
    int status;
    pid_t gone = waitpid(writer, &status, WNOHANG);
    int rd = open(fifo, O_RDONLY | O_NONBLOCK);   /* let it go */
    if (gone == 0)
        assert_int_equal(waitpid(writer, &status, 0), writer);
    if (rd >= 0)
        close(rd);
    assert_int_equal(gone, 0);     /* still blocked after the request */
}

static void no_escape(const hh_server_t *s)
{
    static const char *paths[] = {
        "/../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E/secret.txt", "/.%2e/secret.txt",
        "/sub/../../secret.txt", "/sub/%2e%2e/%2e%2e/secret.txt", "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt", "/..\\secret.txt", "/..%5csecret.txt", "/sub%5c..%5c..%5csecret.txt",
        "/hello.txt%00", "/%00/../secret.txt", "/link_out", "/link_abs", "/dir_out/secret.txt",
        "/./hello.txt", "http://t/../secret.txt", "/sub/..", "/%", "/%zz",
    };
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
        char req[256];
        snprintf(req, sizeof req, "GET %s" H11 "\r\n", paths[i]);
        hh_resp_t r;
        get(s, req, &r);
        if ((r.status != 400 && r.status != 404) || strstr(r.body, "SECRET"))
            fail_msg("%s: %d '%s'", paths[i], r.status, r.body);
        hh_resp_free(&r);
    }
    /* A symlink that stays inside is fine; a FIFO is not a file (and must not hang). */
    hh_resp_t r;
    get(s, "GET /link_in" H11 "\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, HF_HELLO_TXT);
    hh_resp_free(&r);
    get(s, "GET /fifo" H11 "\r\n", &r);
    assert_int_equal(r.status, 404);
    hh_resp_free(&r);
    fifo_left_closed(s);
}

static void test_traversal(void **state)
{
    (void)state;
    no_escape(&srv);
}

static void test_traversal_realpath(void **state)
{
    (void)state;
    hh_server_t s;
    char opts[256];
    snprintf(opts, sizeof opts, "root=%s,resolve=realpath", root.www);
    start(&s, opts);
    no_escape(&s);
    hh_stop(&s);
}

/* ---- conditional and partial requests --------------------------------------------------- */

static void expect_range(const char *range, int status, const char *content_range, const char *body)
{
    char req[512];
    snprintf(req, sizeof req, "GET /hello.txt" H11 "Range: %s\r\n\r\n", range);
    hh_resp_t r;
    get(&srv, req, &r);
    if (r.status != status)
        fail_msg("Range %s: %d, want %d", range, r.status, status);
    char v[128];
    if (content_range)
        expect_header(&r, "Content-Range", content_range);
    else
        assert_null(hh_header(&r, "Content-Range", v, sizeof v));
    if (body)
        assert_string_equal(r.body, body);
    hh_resp_free(&r);
}

static void test_range(void **state)
{
    (void)state;
    expect_range("bytes=0-4", 206, "bytes 0-4/11", "hello");
    expect_range("bytes=-5", 206, "bytes 6-10/11", "file\n");
    expect_range("bytes=6-", 206, "bytes 6-10/11", "file\n");
    expect_range("bytes=6-999", 206, "bytes 6-10/11", "file\n");
    expect_range("bytes=-99", 206, "bytes 0-10/11", HF_HELLO_TXT);
    expect_range("bytes=11-", 416, "bytes */11", NULL);
    expect_range("bytes=-0", 416, "bytes */11", NULL);
    expect_range("bytes=0-1,3-4", 200, NULL, HF_HELLO_TXT);     /* several: the whole file */
    expect_range("bytes=5-2", 200, NULL, HF_HELLO_TXT);         /* invalid: ignored */
    expect_range("lines=1-2", 200, NULL, HF_HELLO_TXT);
    /* Range is for GET only: HEAD tells the whole length (RFC 9110 14.2). */
    hh_resp_t h;
    get(&srv, "HEAD /hello.txt" H11 "Range: bytes=0-4\r\n\r\n", &h);
    assert_int_equal(h.status, 200);
    expect_header(&h, "Content-Length", "11");
    hh_resp_free(&h);
    /* If-Range: the range only if the file is still the version the client has. */
    hh_resp_t r;
    get(&srv, "GET /hello.txt" H11 "Range: bytes=0-4\r\nIf-Range: " HF_MTIME_TEXT "\r\n\r\n", &r);
    assert_int_equal(r.status, 206);
    hh_resp_free(&r);
    get(&srv, "GET /hello.txt" H11 "Range: bytes=0-4\r\nIf-Range: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    hh_resp_free(&r);
    /* A range of the large file: sendfile from an offset. */
    get(&srv, "GET /big.bin" H11 "Range: bytes=1000000-3999999\r\n\r\n", &r);
    assert_int_equal(r.status, 206);
    assert_int_equal(r.body_len, 3000000);
    for (size_t i = 0; i < r.body_len; i++)
        if ((unsigned char)r.body[i] != hf_big_byte(1000000 + i))
            fail_msg("big.bin range: wrong byte at %zu", i);
    hh_resp_free(&r);
}

static void test_if_modified_since(void **state)
{
    (void)state;
    hh_conn_t *c = conn_new(&srv);
    hh_resp_t r;
    assert_int_equal(hh_sends(c, "GET /hello.txt" H11 "If-Modified-Since: " HF_MTIME_TEXT "\r\n\r\n"), 0);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    assert_int_equal(r.status, 304);
    expect_header(&r, "Last-Modified", HF_MTIME_TEXT);
    hh_resp_free(&r);
    /* The same connection goes on: a 304 has no body. Older, asctime, RFC 850. */
    assert_int_equal(hh_sends(c, "GET /hello.txt" H11 "If-Modified-Since: Tue, 31 Dec 2019 12:00:00 GMT\r\n\r\n"), 0);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, HF_HELLO_TXT);
    hh_resp_free(&r);
    assert_int_equal(hh_sends(c, "GET /hello.txt" H11 "If-Modified-Since: Sat Feb  1 00:00:00 2020\r\n\r\n"), 0);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    assert_int_equal(r.status, 304);
    hh_resp_free(&r);
    assert_int_equal(hh_sends(c, "GET /hello.txt" H11 "If-Modified-Since: Saturday, 01-Feb-20 00:00:00 GMT\r\n\r\n"), 0);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    assert_int_equal(r.status, 304);
    hh_resp_free(&r);
    /* Invalid or in the future: ignored. */
    assert_int_equal(hh_sends(c, "GET /hello.txt" H11 "If-Modified-Since: yesterday\r\n\r\n"), 0);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    assert_int_equal(r.status, 200);
    hh_resp_free(&r);
    assert_int_equal(hh_sends(c, "GET /hello.txt" H11 "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n\r\n"), 0);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    assert_int_equal(r.status, 200);
    hh_resp_free(&r);
    conn_free(c);
}

/* The other preconditions (RFC 9110 13.2.2) for files, which have no entity tags. */
static void test_preconditions(void **state)
{
    (void)state;
    static const struct { const char *headers; int status; } cases[] = {
        { "If-None-Match: \"v1\"\r\nIf-Modified-Since: " HF_MTIME_TEXT "\r\n", 200 },   /* IMS ignored */
        { "If-None-Match: *\r\n", 304 },
        { "If-Match: \"v1\"\r\n", 412 },
        { "If-Match: *\r\n", 200 },
        { "If-Unmodified-Since: Tue, 31 Dec 2019 12:00:00 GMT\r\nRange: bytes=4-\r\n", 412 },
        { "If-Unmodified-Since: " HF_MTIME_TEXT "\r\n", 200 },
        { "If-Unmodified-Since: garbage\r\n", 200 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char req[512];
        snprintf(req, sizeof req, "GET /hello.txt" H11 "%s\r\n", cases[i].headers);
        hh_resp_t r;
        get(&srv, req, &r);
        if (r.status != cases[i].status)
            fail_msg("%s: %d, want %d", cases[i].headers, r.status, cases[i].status);
        hh_resp_free(&r);
    }
}

/* Last-Modified is never later than Date (RFC 9110 8.8.2.1). */
static void test_future_mtime(void **state)
{
    (void)state;
    char path[600];
    snprintf(path, sizeof path, "%s/future.txt", root.www);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("later\n", f);
    fclose(f);
    struct timespec t[2] = { { 4102444800, 0 }, { 4102444800, 0 } };   /* 2100 */
    assert_int_equal(utimensat(AT_FDCWD, path, t, 0), 0);
    hh_resp_t r;
    get(&srv, "GET /future.txt" H11 "\r\n", &r);
    assert_int_equal(r.status, 200);
    char lm[64], date[64];
    assert_non_null(hh_header(&r, "Last-Modified", lm, sizeof lm));
    assert_non_null(hh_header(&r, "Date", date, sizeof date));
    int64_t tl, td;
    assert_int_equal(http_parse_date(lm, strlen(lm), &tl), 0);
    assert_int_equal(http_parse_date(date, strlen(date), &td), 0);
    assert_true(tl <= td);
    hh_resp_free(&r);
    unlink(path);
}

/* Expect: 100-continue with a body: the answer closes the connection, since the
 * client may hold the body back and send its next request instead. An unknown
 * method is 501, a known one not allowed here 405. */
static void test_expect_and_methods(void **state)
{
    (void)state;
    hh_conn_t *c = conn_new(&srv);
    hh_resp_t r;
    assert_int_equal(hh_sends(c, "GET /hello" H11 "Expect: 100-continue\r\nContent-Length: 10\r\n\r\n"), 0);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    assert_int_equal(r.status, 200);
    expect_header(&r, "Connection", "close");
    hh_resp_free(&r);
    assert_int_equal(hh_wait_eof(c, 3000), 1);
    conn_free(c);
    get(&srv, "FOO /hello" H11 "\r\n", &r);
    assert_int_equal(r.status, 501);
    hh_resp_free(&r);
    get(&srv, "DELETE /hello" H11 "\r\n", &r);
    assert_int_equal(r.status, 405);
    hh_resp_free(&r);
}

/* ---- directories and types ----------------------------------------------------------------- */

static void test_index_and_redirect(void **state)
{
    (void)state;
    hh_resp_t r;
    get(&srv, "GET /" H11 "\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, HF_INDEX);
    expect_header(&r, "Content-Type", "text/html; charset=utf-8");
    hh_resp_free(&r);
    get(&srv, "GET /sub/" H11 "\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, HF_SUB_INDEX);
    hh_resp_free(&r);
    get(&srv, "GET /sub" H11 "\r\n", &r);
    assert_int_equal(r.status, 301);
    expect_header(&r, "Location", "/sub/");
    hh_resp_free(&r);
    get(&srv, "GET //sub?x=1" H11 "\r\n", &r);     /* never a "//host" Location */
    assert_int_equal(r.status, 301);
    expect_header(&r, "Location", "/sub/?x=1");
    hh_resp_free(&r);
    get(&srv, "HEAD /sub" H11 "\r\n", &r);
    assert_int_equal(r.status, 301);
    hh_resp_free(&r);
    get(&srv, "GET /empty/" H11 "\r\n", &r);       /* no index file: 404, never a listing */
    assert_int_equal(r.status, 404);
    hh_resp_free(&r);
    get(&srv, "GET /sub/index.html?v=2" H11 "\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, HF_SUB_INDEX);
    hh_resp_free(&r);
    /* Another index name. */
    hh_server_t s;
    char opts[256];
    snprintf(opts, sizeof opts, "root=%s,index=hello.txt", root.www);
    start(&s, opts);
    get(&s, "GET /" H11 "\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, HF_HELLO_TXT);
    hh_resp_free(&r);
    hh_stop(&s);
}

static void test_content_types(void **state)
{
    (void)state;
    static const struct { const char *path, *type; } cases[] = {
        { "/style.css", "text/css" }, { "/hello.txt", "text/plain; charset=utf-8" },
        { "/data.bin", "application/octet-stream" }, { "/a%20b.txt", "text/plain; charset=utf-8" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char req[256];
        snprintf(req, sizeof req, "GET %s" H11 "\r\n", cases[i].path);
        hh_resp_t r;
        get(&srv, req, &r);
        assert_int_equal(r.status, 200);
        expect_header(&r, "Content-Type", cases[i].type);
        expect_header(&r, "Accept-Ranges", "bytes");
        hh_resp_free(&r);
    }
}

/* 5 MiB through sendfile arrive intact, twice on one connection. */
static void test_big_file(void **state)
{
    (void)state;
    hh_conn_t *c = conn_new(&srv);
    assert_int_equal(hh_sends(c, "GET /big.bin" H11 "\r\nHEAD /big.bin" H11 "\r\nGET /big.bin" H11 "\r\n"), 0);
    for (int k = 0; k < 3; k++) {
        hh_resp_t r;
        assert_int_equal(hh_read_response(c, &r, k == 1), 0);
        assert_int_equal(r.status, 200);
        expect_header(&r, "Content-Length", "5242880");
        assert_int_equal(r.body_len, k == 1 ? 0 : HF_BIG_SIZE);
        for (size_t i = 0; i < r.body_len; i++)
            if ((unsigned char)r.body[i] != hf_big_byte(i))
                fail_msg("big.bin: wrong byte at %zu", i);
        hh_resp_free(&r);
    }
    conn_free(c);
}

/* A client that does not read blocks only its own response (sendfile waits in
 * iop_wait_fd, the loop goes on); one that resets in the middle of a sendfile
 * does not kill the server with SIGPIPE (this program does not ignore it). */
static void test_slow_and_vanishing_readers(void **state)
{
    (void)state;
    hh_conn_t *slow = conn_new(&srv);
    assert_int_equal(hh_sends(slow, "GET /big.bin" H11 "\r\n"), 0);
    struct timespec ts = { 0, 200000000 };
    nanosleep(&ts, NULL);                  /* its socket buffers fill up */
    hh_resp_t r;
    get(&srv, "GET /hello" H11 "\r\n", &r);
    assert_int_equal(r.status, 200);
    hh_resp_free(&r);
    assert_int_equal(hh_read_response(slow, &r, 0), 0);
    assert_int_equal(r.body_len, HF_BIG_SIZE);
    for (size_t i = 0; i < r.body_len; i += 4093)
        if ((unsigned char)r.body[i] != hf_big_byte(i))
            fail_msg("big.bin: wrong byte at %zu", i);
    hh_resp_free(&r);
    conn_free(slow);
    for (int k = 0; k < 3; k++) {
        hh_conn_t *gone = conn_new(&srv);
        assert_int_equal(hh_sends(gone, "GET /big.bin" H11 "\r\n"), 0);
        char some[1000];
        assert_true(recv(gone->fd, some, sizeof some, 0) > 0);
        struct linger lg = { 1, 0 };       /* close with RST */
        setsockopt(gone->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        conn_free(gone);
    }
    nanosleep(&ts, NULL);
    get(&srv, "GET /hello" H11 "\r\n", &r);
    assert_int_equal(r.status, 200);
    hh_resp_free(&r);
}

static void test_no_root(void **state)
{
    (void)state;
    hh_server_t s;
    start(&s, "");
    hh_resp_t r;
    get(&s, "GET /hello" H11 "\r\n", &r);
    assert_int_equal(r.status, 200);
    hh_resp_free(&r);
    get(&s, "GET /index.html" H11 "\r\n", &r);
    assert_int_equal(r.status, 404);
    hh_resp_free(&r);
    hh_stop(&s);
}

/* ---- counters and drain -------------------------------------------------------------------- */

static void test_stats(void **state)
{
    (void)state;
    hh_server_t s;
    start(&s, "");
    hh_conn_t *c = conn_new(&s);
    const char *reqs = "GET /hello" H11 "\r\nGET /hello" H11 "\r\nGET /nope" H11 "\r\n";
    assert_int_equal(hh_sends(c, reqs), 0);
    size_t out = 0;
    for (int i = 0; i < 3; i++) {
        hh_resp_t r;
        assert_int_equal(hh_read_response(c, &r, 0), 0);
        out += strlen(r.head) + r.body_len;
        hh_resp_free(&r);
    }
    conn_free(c);
    expect_status(&s, "BAD\r\n\r\n", 7, 400, 1);
    hh_stop(&s);
    assert_int_equal(s.stats.connections, 2);
    assert_int_equal(s.stats.open, 0);
    assert_int_equal(s.stats.requests, 4);
    assert_int_equal(s.stats.errors, 2);
    assert_int_equal(s.stats.bytes_in, strlen(reqs) + 7);
    assert_true(s.stats.bytes_out > out);  /* and the 400 */
}

static long rss_kb(void)
{
    long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    assert_non_null(f);
    assert_int_equal(fscanf(f, "%ld %ld", &size, &resident), 2);
    fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* A host whose receive pool has buffers larger than the connection's own (16 KiB):
 * a head that lands whole in one of them is still 431, and the unfinished rest of
 * a read parsed in place never overruns the connection's buffer. */
static void test_large_pool_buffers(void **state)
{
    (void)state;
    hh_server_t s;
    if (hh_start_pool(&s, backend, "recv=stream", 0, 8, 65536) < 0)
        fail_msg("http server: %s", s.err);
    enum { PAD = 60000 };
    static char req[PAD + 256];
    hh_resp_t r;
    /* A whole 20 KB head in one read (the connection's second: the stream is
     * opened after the first request). */
    int n = snprintf(req, sizeof req, "GET /hello" H11 "X-Pad: ");
    memset(req + n, 'a', 20000);
    n += 20000;
    n += snprintf(req + n, sizeof req - (size_t)n, "\r\n\r\n");
    hh_conn_t *c = conn_new(&s);
    assert_int_equal(hh_sends(c, "GET /hello" H11 "\r\n"), 0);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    hh_resp_free(&r);
    assert_int_equal(hh_send(c, req, (size_t)n), 0);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    assert_int_equal(r.status, 431);
    hh_resp_free(&r);
    assert_true(hh_wait_eof(c, 3000));
    conn_free(c);
    /* A request, then 60 KB of a head that does not end, in one read. */
    n = snprintf(req, sizeof req, "GET /hello" H11 "\r\nGET /hello" H11 "X-Pad: ");
    memset(req + n, 'a', PAD);
    n += PAD;
    c = conn_new(&s);
    assert_int_equal(hh_sends(c, "GET /hello" H11 "\r\n"), 0);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    hh_resp_free(&r);
    assert_int_equal(hh_send(c, req, (size_t)n), 0);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    assert_int_equal(r.status, 200);
    hh_resp_free(&r);
    assert_int_equal(hh_read_response(c, &r, 0), 0);
    assert_int_equal(r.status, 431);
    hh_resp_free(&r);
    assert_true(hh_wait_eof(c, 3000));
    conn_free(c);
    /* The server is still fine. */
    get(&s, "GET /hello" H11 "\r\n", &r);
    assert_int_equal(r.status, 200);
    hh_resp_free(&r);
    hh_stop(&s);
}

/* Keep-alive connections quiet past idle_release_ms give their buffers' pages
 * back: the server's memory falls by at least a page per connection (two were
 * touched: the request's and the response's); half of them then answer pipelined
 * requests as before, and a drain still closes them all at once. */
static void test_idle_release(void **state)
{
    (void)state;
    enum { N = 200 };
    hh_server_t s;
    char opts[512];
    /* Its connections must all be made before the first is released. */
    snprintf(opts, sizeof opts, "root=%s,idle_release_ms=%d", root.www, TU_SANITIZED ? 2500 : 800);
    start(&s, opts);
    hh_conn_t *c[N];
    hh_resp_t r;
    long before = rss_kb();
    for (int i = 0; i < N; i++) {
        c[i] = conn_new(&s);
        assert_int_equal(hh_sends(c[i], "GET /hello.txt" H11 "\r\n"), 0);
        assert_int_equal(hh_read_response(c[i], &r, 0), 0);
        assert_int_equal(r.status, 200);
        hh_resp_free(&r);
    }
    long busy = rss_kb();
    long idle = busy;
    for (int step = 0; busy - idle < N * 4 && step < 50; step++) {   /* up to 5 s */
        struct timespec ts = { 0, 100000000 };
        nanosleep(&ts, NULL);
        idle = rss_kb();
    }
    fprintf(stderr, "idle release: %d connections: rss %ld kB, busy %ld kB, idle %ld kB\n", N, before, busy, idle);
    if (busy - idle < N * 4)
        fail_msg("rss went from %ld to %ld kB: less than a page back per connection", busy, idle);
    for (int i = 0; i < N / 2; i++) {   /* the other half stays released for the drain */
        assert_int_equal(hh_sends(c[i], "GET /hello.txt" H11 "\r\nGET /hello" H11 "\r\n"), 0);
        assert_int_equal(hh_read_response(c[i], &r, 0), 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, HF_HELLO_TXT);
        hh_resp_free(&r);
        assert_int_equal(hh_read_response(c[i], &r, 0), 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "Hello, World!");
        hh_resp_free(&r);
    }
    hh_drain(&s, 5000);
    for (int i = 0; i < N; i++) {
        assert_true(hh_wait_eof(c[i], 2000));
        conn_free(c[i]);
    }
    assert_int_equal(hh_stop(&s), 0);
}

/* A drain closes an idle keep-alive connection at once; a request under way is
 * finished, with Connection: close, and then the connection closes. */
static void test_drain(void **state)
{
    (void)state;
    hh_server_t s;
    start(&s, "");
    hh_conn_t *idle = conn_new(&s), *busy = conn_new(&s);
    hh_resp_t r;
    assert_int_equal(hh_sends(idle, "GET /hello" H11 "\r\n"), 0);
    assert_int_equal(hh_read_response(idle, &r, 0), 0);
    hh_resp_free(&r);
    assert_int_equal(hh_sends(busy, "GET /hello HTTP/1.1\r\n"), 0);
    struct timespec ts = { 0, 100000000 };
    nanosleep(&ts, NULL);
    hh_drain(&s, 5000);
    assert_true(hh_wait_eof(idle, 2000));
    assert_int_equal(hh_sends(busy, "Host: t\r\n\r\n"), 0);
    assert_int_equal(hh_read_response(busy, &r, 0), 0);
    assert_int_equal(r.status, 200);
    expect_header(&r, "Connection", "close");
    hh_resp_free(&r);
    assert_true(hh_wait_eof(busy, 3000));
    conn_free(idle);
    conn_free(busy);
    assert_int_equal(hh_stop(&s), 0);
}

/* A client that stops reading while its responses are still going out holds the
 * drain no longer than its deadline (the send lingers after the connection's cancel,
 * but not past the drain's end): 300 ms here, against a send timeout of 8 s. */
static void test_drain_with_stalled_reader(void **state)
{
    (void)state;
    hh_server_t s;
    char opts[512];
    snprintf(opts, sizeof opts, "root=%s,send_timeout_ms=8000", root.www);
    start(&s, opts);
    hh_conn_t *c = conn_small_rcvbuf(&s, 1);
    /* One request per read, so that each response is a send behind, until the
     * server's buffers and ours are full. */
    struct timespec gap = { 0, 200000 };
    for (int i = 0; i < 2000; i++) {
        char req[128];
        int n = snprintf(req, sizeof req, "GET /big.bin" H11 "Range: bytes=%d-%d\r\n\r\n", i, i + 8191);
        if (send(c->fd, req, (size_t)n, MSG_NOSIGNAL) != n)
            break;
        nanosleep(&gap, NULL);
    }
    struct timespec settle = { 0, 300000000 };
    nanosleep(&settle, NULL);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    hh_drain(&s, 300);
    int r = hh_stop(&s);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_int_equal(r, -ETIMEDOUT);
    if (ms > 3000)
        fail_msg("a drain with a 300 ms deadline took %ld ms", ms);
    conn_free(c);
}

/* A response stalled past send_timeout_ms ends the connection with a reset: a
 * plain close would leave the rest of the file queued in the kernel behind a zero
 * window, retried for minutes for a client that does not read, and the client
 * would never see the end. */
static void test_send_timeout_resets(void **state)
{
    (void)state;
    hh_server_t s;
    char opts[512];
    snprintf(opts, sizeof opts, "root=%s,send_timeout_ms=300", root.www);
    start(&s, opts);
    hh_conn_t *c = conn_small_rcvbuf(&s, 0);
    assert_int_equal(hh_sends(c, "GET /big.bin" H11 "\r\n"), 0);
    struct pollfd p = { .fd = c->fd, .events = 0 };   /* POLLHUP, POLLERR only */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int n = poll(&p, 1, 5000);     /* never reading: only the reset can end it */
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_int_equal(n, 1);
    assert_true(p.revents & (POLLHUP | POLLERR));
    assert_true(ms >= 250);
    int err = 0;
    socklen_t len = sizeof err;
    assert_int_equal(getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len), 0);
    assert_int_equal(err, ECONNRESET);
    conn_free(c);
    hh_stop(&s);
}

static void test_bad_options(void **state)
{
    (void)state;
    static const char *bad[] = {
        "root=/nonexistent/ioplex", "index=a/b", "index=..", "header_timeout_ms=0",
        "max_body=-1", "resolve=magic", "colour=blue", "idle_release_ms=-5",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        hh_server_t s;
        assert_int_equal(hh_start(&s, backend, bad[i], 0), -1);
        assert_non_null(strstr(s.err, "http"));
    }
}

int main(int argc, char **argv)
{
    backend = argc > 1 ? argv[1] : NULL;
    alarm(120);                            /* a hung test dies instead of hanging ctest */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello),
        cmocka_unit_test(test_date_moves_on),
        cmocka_unit_test(test_pipelining),
        cmocka_unit_test(test_pipelined_mix),
        cmocka_unit_test(test_pipelined_random),
        cmocka_unit_test(test_split_requests),
        cmocka_unit_test(test_keepalive),
        cmocka_unit_test(test_close_linger),
        cmocka_unit_test(test_deferred_accept),
        cmocka_unit_test(test_stream_engages),
        cmocka_unit_test(test_head),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_header_timeout),
        cmocka_unit_test(test_traversal),
        cmocka_unit_test(test_traversal_realpath),
        cmocka_unit_test(test_range),
        cmocka_unit_test(test_if_modified_since),
        cmocka_unit_test(test_preconditions),
        cmocka_unit_test(test_future_mtime),
        cmocka_unit_test(test_expect_and_methods),
        cmocka_unit_test(test_index_and_redirect),
        cmocka_unit_test(test_content_types),
        cmocka_unit_test(test_big_file),
        cmocka_unit_test(test_slow_and_vanishing_readers),
        cmocka_unit_test(test_no_root),
        cmocka_unit_test(test_stats),
        cmocka_unit_test(test_drain),
        cmocka_unit_test(test_drain_with_stalled_reader),
        cmocka_unit_test(test_send_timeout_resets),
        cmocka_unit_test(test_idle_release),
        cmocka_unit_test(test_large_pool_buffers),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, group_up, group_down);
}
