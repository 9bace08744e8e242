/* The echo service: every byte a client sends comes back. A request is one read's
 * worth of bytes. The smallest complete service: two options, no shared state.
 *
 * It receives in one of two ways (option recv=): plain, a receive per read into a
 * buffer on the connection's coroutine stack; or stream, one multishot receive per
 * connection into the loop's receive pool, each read echoed from the pool buffer it
 * landed in. A stream holds no buffer while its connection is quiet, so an idle
 * connection keeps only the stack pages its calls touch; the plain buffer's pages,
 * once written, stay with the connection. auto (the default) streams where the
 * kernel fills the pool (io_uring provided buffers): elsewhere the core would do
 * the same receives a plain read does. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ioplex.h>

#define ECHO_BUF 16384          /* plain: on the connection's coroutine stack */
#define ECHO_DRY_BUF 2048       /* stream: where a read goes when the pool is dry */
#define MS 1000000ull

enum { RECV_AUTO, RECV_STREAM, RECV_PLAIN };

typedef struct echo_state {
    uint64_t send_timeout_ns;   /* a peer that takes none of our bytes for this long is dropped */
    int recv_mode;              /* RECV_* */
} echo_state_t;

static int set_option(echo_state_t *st, const iop_service_opt_t *o, char *err, size_t errlen)
{
    long long v;
    if (strcmp(o->key, "send_timeout_ms") == 0) {
        int r = iop_service_opt_number("echo", o, 1, 86400000, &v, err, errlen);
        if (r == 0)
            st->send_timeout_ns = (uint64_t)v * MS;
        return r;
    }
    if (strcmp(o->key, "recv") == 0) {
        if (strcmp(o->value, "auto") == 0)
            st->recv_mode = RECV_AUTO;
        else if (strcmp(o->value, "stream") == 0)
            st->recv_mode = RECV_STREAM;
        else if (strcmp(o->value, "plain") == 0)
            st->recv_mode = RECV_PLAIN;
        else {
            snprintf(err, errlen, "echo: recv=%s: want auto, stream or plain", o->value);
            return -EINVAL;
        }
        return 0;
    }
    snprintf(err, errlen, "echo: unknown option '%s' (there are send_timeout_ms and recv)", o->key);
    return -EINVAL;
}

static int echo_create(void **state, const iop_service_cfg_t *cfg, char *err, size_t errlen)
{
    echo_state_t *st = malloc(sizeof *st);
    if (!st) {
        snprintf(err, errlen, "echo: out of memory");
        return -ENOMEM;
    }
    *st = (echo_state_t){ .send_timeout_ns = 30000 * MS, .recv_mode = RECV_AUTO };
    for (size_t i = 0; i < cfg->nopts; i++) {
        int r = set_option(st, &cfg->opts[i], err, errlen);
        if (r < 0) {
            free(st);
            return r;
        }
    }
    *state = st;
    return 0;
}

static void echo_destroy(void *state) { free(state); }

/* The peer left or the host cancelled us: not an error of this service. */
static int quiet(ssize_t r)
{
    return r == 0 || r == -ECANCELED || r == -ECONNRESET || r == -EPIPE || r == -ETIMEDOUT ? 0 : (int)r;
}

/* Sends n bytes back. A peer that sends and never reads would hold the connection
 * forever: it has send_timeout from each byte it takes to take the next. */
static ssize_t echo_back(const echo_state_t *st, iop_service_conn_t *conn, const char *p, ssize_t n)
{
    iop_loop_t *loop = iop_coro_loop(iop_self());
    conn->stats->requests++;
    conn->stats->bytes_in += (uint64_t)n;
    for (ssize_t off = 0; off < n;) {
        ssize_t w = iop_send(conn->fd, p + off, (size_t)(n - off), 0, iop_now(loop) + st->send_timeout_ns);
        if (w < 0)
            return w;
        off += w;
        conn->stats->bytes_out += (uint64_t)w;
    }
    return n;
}

/* A session: a drain lets it go on until the client ends it or the drain deadline
 * comes (the host then cancels us). idle only matters to hosts of services flagged
 * IOP_SERVICE_DRAIN_IDLE; it costs nothing to keep true. A client may stay quiet as
 * long as it likes: no receive deadline. */
static int serve_plain(const echo_state_t *st, iop_service_conn_t *conn)
{
    char buf[ECHO_BUF];
    for (;;) {
        conn->idle = 1;
        ssize_t n = iop_recv(conn->fd, buf, sizeof buf, 0, 0);
        conn->idle = 0;
        if (n <= 0 || (n = echo_back(st, conn, buf, n)) < 0)
            return quiet(n);
    }
}

static int serve_stream(const echo_state_t *st, iop_service_conn_t *conn)
{
    iop_recv_stream_t rs;
    char dry[ECHO_DRY_BUF];
    ssize_t n = iop_recv_stream_open(&rs, conn->fd, 0);
    if (n < 0)
        return serve_plain(st, conn);   /* (refused before anything was received) */
    while (n == 0) {
        const char *data;
        conn->idle = 1;
        n = iop_recv_stream_next(&rs, dry, sizeof dry, &data, 0);
        conn->idle = 0;
        if (n <= 0 || (n = echo_back(st, conn, data, n)) < 0)
            break;
        n = 0;
    }
    iop_recv_stream_close(&rs);   /* before the host closes the fd */
    return quiet(n);
}

static int echo_serve(void *state, iop_service_conn_t *conn)
{
    const echo_state_t *st = state;
    iop_loop_t *loop = iop_coro_loop(iop_self());
    int stream = iop_buf_size(loop) &&
                 (st->recv_mode == RECV_STREAM ||
                  (st->recv_mode == RECV_AUTO && (iop_loop_caps(loop) & IOP_CAP_PROVIDED_BUFFERS)));
    return stream ? serve_stream(st, conn) : serve_plain(st, conn);
}

IOP_SERVICE_EXPORT const iop_service_desc_t iop_service_descriptor = {
    .abi_version = IOP_SERVICE_ABI_VERSION,
    .desc_size = sizeof(iop_service_desc_t),
    .name = "echo",
    .summary = "echoes every byte back",
    .options_help = "send_timeout_ms=N     time a client may take none of its echo (default 30000)\n"
                    "recv=MODE             stream: one multishot receive per connection into the loop's\n"
                    "                      receive pool; plain: a receive per read into a 16 KiB buffer\n"
                    "                      of the connection's; auto (default): stream where the kernel\n"
                    "                      fills the pool (io_uring provided buffers), else plain\n",
    .create = echo_create,
    .serve = echo_serve,
    .destroy = echo_destroy,
};
