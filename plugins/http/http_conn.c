/* One HTTP connection: read into a fixed buffer, answer every complete request in
 * it in order (pipelining) into the out buffer, send the batch with one send and
 * read again while it goes (a send behind). A request split across reads waits in
 * the buffer; a head that fills the whole buffer is 431. Errors that leave the
 * request stream in doubt close the connection after their response. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "http_internal.h"

#define LINGER_NS (2000ull * 1000 * 1000)   /* reading what a client still sends after our close */
#define LINGER_BYTES (1u << 20)

static uintptr_t page_size(void)
{
    long sz = sysconf(_SC_PAGESIZE);
    return sz > 0 ? (uintptr_t)sz : 4096;
}

static uintptr_t page_up(uintptr_t n, uintptr_t page) { return (n + page - 1) & ~(page - 1); }

#define COLORS 64                    /* cache lines a connection's buffers may start at */

/* The buffers own whole pages of their allocation, from a page boundary (the
 * allocator may start a large block anywhere in a page), so that idling can give
 * back every page they touched. Within the first page they start at one of
 * COLORS cache lines, a different one for each new connection: buffers all at
 * the same page offset would compete for the same few cache sets (the reason
 * allocators place large blocks at random offsets), which cost ~3% of the
 * server's CPU under wrk. */
static int bufs_alloc(http_conn_t *c)
{
    static _Thread_local unsigned color;
    uintptr_t page = page_size();
    c->bufs_len = page_up(sizeof(http_bufs_t) + (COLORS - 1) * 64, page);
    c->bufs_mem = iop_malloc(c->bufs_len + page);
    if (!c->bufs_mem)
        return -ENOMEM;
    c->bufs_pages = (void *)page_up((uintptr_t)c->bufs_mem, page);
    c->bufs = (http_bufs_t *)((char *)c->bufs_pages + (color++ * 7 % COLORS) * 64);
    return 0;
}

/* Drops the buffers' pages; they come back zeroed when touched. */
static void release_pages(http_conn_t *c)
{
    (void)madvise(c->bufs_pages, c->bufs_len, MADV_DONTNEED);
}

const char *http_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 416: return "Range Not Satisfiable";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Internal Server Error";
    }
}

/* The Date of the thread's connections, formatted once a second for all of them:
 * each new connection formatted its own anew (~5% of the server's user CPU when
 * every request comes on a connection of its own). Each connection keeps a copy,
 * so that its responses touch only its own lines. */
static _Thread_local struct {
    int64_t sec;
    uint64_t until;                /* loop time (iop_now, CLOCK_MONOTONIC) when sec may be over */
    char text[HTTP_DATE_LEN + 1];
} thread_date = { .sec = -1 };

/* The wall clock is read only when the loop's clock (read once per iteration
 * anyway) says the second formatted last may be over: a clock read per response
 * cost ~2% of the server's user CPU under wrk. A wall clock set meanwhile shows
 * within a second. */
const char *http_date_now(http_conn_t *c)
{
    uint64_t now = iop_now(c->loop);
    if (now >= c->date_until) {
        if (now >= thread_date.until) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME_COARSE, &ts);   /* vDSO: no system call */
            if (ts.tv_sec != thread_date.sec) {
                thread_date.sec = ts.tv_sec;
                http_format_date(ts.tv_sec, thread_date.text);
            }
            thread_date.until = now + 1000000000u - (uint64_t)ts.tv_nsec;
        }
        if (c->date_sec != thread_date.sec) {
            c->date_sec = thread_date.sec;
            memcpy(c->date, thread_date.text, sizeof c->date);
        }
        c->date_until = thread_date.until;
    }
    return c->date;
}

uint64_t http_send_deadline(const http_conn_t *c)
{
    return iop_now(c->loop) + c->st->send_timeout_ns;
}

int http_send_wait(http_conn_t *c)
{
    ssize_t r = iop_send_behind_wait(&c->sb, http_send_deadline(c));
    if (r < 0) {
        c->stats->bytes_out += iop_send_behind_sent(&c->sb);   /* what went before it failed */
        return (int)r;
    }
    c->stats->bytes_out += (uint64_t)r;
    return 0;
}

int http_send_all(http_conn_t *c, const char *p, size_t n, int flags)
{
    int r = http_send_wait(c);
    if (r < 0)
        return r;
    while (n) {
        ssize_t w = iop_send(c->svc->fd, p, n, flags, http_send_deadline(c));
        if (w < 0)
            return (int)w;
        c->stats->bytes_out += (uint64_t)w;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Nothing pending: responses start in the record's own room again. */
static void out_reset(http_conn_t *c)
{
    c->out = c->small;
    c->out_len = 0;
    c->out_cap = HTTP_SMALL_OUT;
}

static void out_to_buffer(http_conn_t *c)
{
    memcpy(c->bufs->out, c->out, c->out_len);
    c->out = c->bufs->out;
    c->out_cap = HTTP_OUT_CAP;
}

int http_flush(http_conn_t *c, int flags)
{
    if (!c->out_len)
        return http_send_wait(c);
    int r = http_send_all(c, c->out, c->out_len, flags);
    out_reset(c);
    return r;
}

int http_out_room(http_conn_t *c, size_t need)
{
    int r = http_send_wait(c);
    if (r < 0 || c->out_cap - c->out_len >= need)
        return r;
    if (c->out == c->bufs->out || c->out_len + need > HTTP_OUT_CAP) {
        r = http_flush(c, 0);
        if (r < 0 || need <= HTTP_SMALL_OUT)
            return r;
    }
    out_to_buffer(c);
    return 0;
}

/* Starts sending the out buffer and returns: the coroutine goes on to read the
 * next request (parking once per exchange, not twice), and whatever writes into
 * out or sends next waits for it first (http_out_room, http_send_all). */
static int flush_behind(http_conn_t *c)
{
    if (!c->out_len)
        return 0;
    int r = iop_send_behind(&c->sb, c->svc->fd, c->out, c->out_len, 0);
    out_reset(c);                  /* (the next writer waits for the send first) */
    return r;
}

const char *http_connection_header(const http_conn_t *c, int keep)
{
    if (!keep)
        return "Connection: close\r\n";
    return c->minor == 0 ? "Connection: keep-alive\r\n" : "";
}

int http_error(http_conn_t *c, int status, int keep, const char *extra)
{
    int r = http_out_room(c, 1024);
    if (r < 0)
        return r;
    const char *reason = http_reason(status);
    int body = (int)strlen(reason) + 5;    /* "404 Not Found\n" */
    int n = snprintf(c->out + c->out_len, c->out_cap - c->out_len,
                     "HTTP/1.1 %d %s\r\nServer: ioplex\r\nDate: %s\r\n"
                     "Content-Type: text/plain\r\nContent-Length: %d\r\n%s%s\r\n",
                     status, reason, http_date_now(c), body, extra ? extra : "",
                     http_connection_header(c, keep));
    if (!c->head)
        n += snprintf(c->out + c->out_len + n, c->out_cap - c->out_len - n, "%d %s\n", status, reason);
    c->out_len += (size_t)n;
    c->stats->errors++;
    return keep;
}

/* The built-in benchmark route: memcpy of fixed parts and the cached Date. */
static int hello(http_conn_t *c, int keep)
{
    static const char head[] = "HTTP/1.1 200 OK\r\nServer: ioplex\r\nContent-Type: text/plain\r\n"
                               "Content-Length: 13\r\nDate: ";
    static const char body[] = "Hello, World!";
    int r = http_out_room(c, sizeof head + HTTP_DATE_LEN + 32 + sizeof body);
    if (r < 0)
        return r;
    char *p = c->out + c->out_len;
    memcpy(p, head, sizeof head - 1);
    p += sizeof head - 1;
    memcpy(p, http_date_now(c), HTTP_DATE_LEN);
    p += HTTP_DATE_LEN;
    const char *conn = http_connection_header(c, keep);
    size_t cl = strlen(conn);
    memcpy(p, "\r\n", 2);
    memcpy(p + 2, conn, cl);
    memcpy(p + 2 + cl, "\r\n", 2);
    p += 4 + cl;
    if (!c->head) {
        memcpy(p, body, sizeof body - 1);
        p += sizeof body - 1;
    }
    c->out_len = (size_t)(p - c->out);
    return keep;
}

static int wants_keepalive(const http_request_t *rq)
{
    if (rq->connection & HTTP_CONN_CLOSE)
        return 0;
    return rq->minor >= 1 || (rq->connection & HTTP_CONN_KEEPALIVE);
}

/* The methods RFC 9110 and RFC 5789 define (case-sensitive): these get 405 and
 * Allow; a method the server does not know at all gets 501 (RFC 9110 9.1). */
static int known_method(http_str_t m)
{
    static const char *const names[] = { "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH" };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (m.n == strlen(names[i]) && memcmp(m.p, names[i], m.n) == 0)
            return 1;
    return 0;
}

static int answer(http_conn_t *c, const http_request_t *rq)
{
    const http_state_t *st = c->st;
    c->minor = rq->minor;
    c->head = rq->method == HTTP_HEAD;
    int keep = wants_keepalive(rq) && !*c->svc->draining;
    c->answered = 1;
    int64_t body = rq->content_length > 0 ? rq->content_length : 0;
    /* A client that asks to close sends nothing after this request (RFC 9112 9.6). */
    c->asked_close = !wants_keepalive(rq) && body == 0 && !rq->transfer_encoding;
    /* A client that asked "100-continue" may hold the body back until told, and
     * after a final answer send its next request instead: skipping the body would
     * then eat that request. Answer and close (RFC 9110 10.1.1). */
    if (rq->expect_continue && body > 0)
        keep = 0;
    if (rq->method == HTTP_OTHER) {
        /* A body we cannot frame or do not want to read: close instead of skipping it. */
        if (rq->transfer_encoding || body > st->max_body)
            keep = 0;
        else
            c->discard = (uint64_t)body;
        if (!known_method(rq->method_name))
            return http_error(c, 501, keep, NULL);
        return http_error(c, 405, keep, "Allow: GET, HEAD\r\n");
    }
    if (rq->transfer_encoding)
        return http_error(c, 501, 0, NULL);    /* a chunked body on GET/HEAD: not supported */
    if (body > st->max_body)
        return http_error(c, 413, 0, NULL);
    c->discard = (uint64_t)body;
    if (rq->path.p[0] != '/')
        return http_error(c, 400, keep, NULL); /* "*" is for OPTIONS */
    if (rq->path.n == 6 && memcmp(rq->path.p, "/hello", 6) == 0)
        return hello(c, keep);
    if (st->root_fd < 0)
        return http_error(c, 404, keep, NULL);
    return http_static(c, rq, keep);
}

/* Answers the complete requests in the buffer: 1 (read more), 0 (close), -errno. */
static int answer_buffered(http_conn_t *c)
{
    for (;;) {
        if (c->discard) {
            size_t take = c->in_len - c->in_pos;
            if (take > c->discard)
                take = (size_t)c->discard;
            c->in_pos += take;
            c->discard -= take;
            if (c->discard)
                return 1;
            c->req_deadline = 0;           /* the next request gets its own time */
        }
        if (c->scan == 0) {
            c->in_pos += http_skip_empty_lines(c->in + c->in_pos, c->in_len - c->in_pos);
            /* A read that ends on the CR of an empty line: wait for its LF. */
            if (c->in_len - c->in_pos == 1 && c->in[c->in_pos] == '\r')
                return 1;
        }
        if (c->in_pos == c->in_len) {
            c->in_pos = c->in_len = 0;
            return 1;
        }
        const char *start = c->in + c->in_pos;
        size_t avail = c->in_len - c->in_pos;
        http_request_t rq;
        int e = 0;
        size_t head = 0;
        if (c->scan == 0) {
            /* A new head: most arrive whole, so parse it at once rather than first
             * look for its end. A parse error on a prefix holds for any head that
             * starts with it; an incomplete one is scanned for its end from now on. */
            e = http_parse_request(start, avail, &rq);
            head = e > 0 ? (size_t)e : 0;
        }
        if (!head && e == 0)
            head = http_head_end(start, avail, &c->scan);
        if (!head && e == 0) {
            if (c->in_pos > 0 || c->in_len < HTTP_IN_CAP)
                return 1;
            /* The buffer is full of one head: its start may say why (414, 400). */
            c->stats->requests++;
            e = http_parse_request(start, avail, &rq);
            c->head = rq.method == HTTP_HEAD;   /* its answer has no body either */
            return http_error(c, e < 0 ? -e : 431, 0, NULL);
        }
        if (e == 0)
            e = http_parse_request(start, head, &rq);
        c->in_pos += head;
        c->scan = 0;
        c->req_deadline = 0;
        c->stats->requests++;
        if (e <= 0) {
            c->head = rq.method == HTTP_HEAD;   /* set once the method was read */
            return http_error(c, e < 0 ? -e : 400, 0, NULL);
        }
        int r = answer(c, &rq);
        if (r <= 0)
            return r;
    }
}

/* Receives after in[in_len]: the byte count, 0 at the end, -errno. With a stream
 * and nothing pending, the bytes stay in the pool buffer they landed in and are
 * parsed there (c->in points at them); else they are copied behind what is pending
 * (what does not fit comes again at the next read). */
static ssize_t receive(http_conn_t *c, uint64_t deadline)
{
    char *room = c->bufs->in + c->in_len;
    size_t space = HTTP_IN_CAP - c->in_len;
    if (!c->streaming)
        return iop_recv(c->svc->fd, room, space, 0, deadline);
    const char *data;
    ssize_t n = iop_recv_stream_next(&c->rs, room, space, &data, deadline);
    if (n <= 0 || data == room)    /* the pool was dry: it came into ours */
        return n;
    /* Parsed in place only if it would fit ours: the unfinished rest moves there
     * (read_more), and a longer head must still fill ours to be 431 (the pool's
     * buffers may be larger than HTTP_IN_CAP). */
    if (c->in_len == 0 && (size_t)n <= space) {
        c->in = data;
        return n;
    }
    if ((size_t)n > space) {
        (void)iop_recv_stream_unread(&c->rs, (size_t)n - space);
        n = (ssize_t)space;
    }
    memcpy(room, data, (size_t)n);
    return n;
}

/* More bytes of a request: 1, 0 (closed, or timed out), -errno. */
static int read_more(http_conn_t *c)
{
    /* The unparsed rest (part of a request) moves to the front of our buffer; one
     * parsed where it landed moves into it, since the next read gives that pool
     * buffer back. */
    if (c->in_pos > 0 || c->in != c->bufs->in) {
        size_t rest = c->in_len - c->in_pos;
        memmove(c->bufs->in, c->in + c->in_pos, rest);
        c->in = c->bufs->in;
        c->in_len = rest;
        c->in_pos = 0;
    }
    if (!c->req_deadline)
        c->req_deadline = iop_now(c->loop) + c->st->header_timeout_ns;
    /* Idle (a drain may close it at once) only between requests: a connection the
     * acceptor just took has a request on its way, which closing would reset. */
    int idle = c->in_len == 0 && !c->discard && c->answered;
    c->svc->idle = idle;
    uint64_t deadline = c->req_deadline;
    /* A keep-alive connection quiet for idle_release (3 s) gives its buffers' pages
     * back to the kernel until its next request: idle, it costs its small record
     * and its coroutine's stack (~5 KiB), not the pages of the buffers that its
     * last request touched (~8 KiB more). A busy one never waits that long and
     * makes no system call for it. The default keeps this deadline seconds away,
     * where the loop parks timers unsorted and cancelling one costs nothing; under
     * two seconds it would go through the timer heap on every request (~2% of the
     * server's CPU under wrk). */
    uint64_t release = c->st->idle_release_ns;
    if (idle && c->out_len == 0 && release && iop_now(c->loop) + release < deadline)
        deadline = iop_now(c->loop) + release;
    ssize_t n = receive(c, deadline);
    if (n == -ETIMEDOUT && deadline != c->req_deadline) {
        int r = http_send_wait(c); /* done long ago, unless the peer does not read */
        if (r < 0)
            return r;
        release_pages(c);          /* quiet for a while: wait on without them */
        n = receive(c, c->req_deadline);
    }
    c->svc->idle = 0;
    if (n == -ETIMEDOUT) {
        /* An idle keep-alive connection, or the body of a request already answered
         * stalled: there is no request to answer with 408, close quietly. The CR
         * of an empty line (kept until its LF) is no request either. */
        if (c->in_len == 0 || (c->in_len == 1 && c->in[0] == '\r'))
            return 0;
        http_request_t rq;
        (void)http_parse_request(c->in, c->in_len, &rq);
        c->head = rq.method == HTTP_HEAD;   /* a HEAD's 408 has no body */
        c->minor = 1;
        c->stats->requests++;
        int r = http_error(c, 408, 0, NULL);
        return r < 0 ? r : 0;
    }
    if (n <= 0) {
        c->peer_gone = 1;
        return (int)n;
    }
    c->stats->bytes_in += (uint64_t)n;
    c->in_len += (size_t)n;
    return 1;
}

/* Closing while the client may still be sending (a rejected body, pipelined
 * requests after a close) would make the kernel answer with RST and the client
 * could lose our response: send FIN, then read and drop for a moment. A client
 * that asked to close sends no more: unless bytes wait unread after all, the close
 * goes out at once (one peek instead of a shutdown and a wait for the client's FIN,
 * ~a sixth of the server's CPU per connection when each request has its own). */
static void linger(http_conn_t *c)
{
    char byte;
    if (c->asked_close && c->in_pos == c->in_len && recv(c->svc->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) <= 0)
        return;                    /* nothing unread (or the client has already gone) */
    if (shutdown(c->svc->fd, SHUT_WR) < 0)
        return;
    uint64_t deadline = iop_now(c->loop) + LINGER_NS;
    for (size_t total = 0; total < LINGER_BYTES;) {
        ssize_t n = iop_recv(c->svc->fd, c->bufs->in, HTTP_IN_CAP, 0, deadline);
        if (n <= 0)
            return;
        total += (size_t)n;
    }
}

static int quiet(int r)
{
    /* The peer left or the host cancelled us: not an error of this service. */
    return r == -ECONNRESET || r == -EPIPE || r == -ECANCELED ? 0 : r;
}

int http_serve(void *state, iop_service_conn_t *conn)
{
    const http_state_t *st = state;
    iop_loop_t *loop = iop_coro_loop(iop_self());
    int stream = iop_buf_size(loop) &&
                 (st->recv_mode == HTTP_RECV_STREAM ||
                  (st->recv_mode == HTTP_RECV_AUTO && (iop_loop_caps(loop) & IOP_CAP_PROVIDED_BUFFERS)));
    http_conn_t rec, *c = &rec;
    if (bufs_alloc(c) < 0)
        return -ENOMEM;
    c->st = state;
    c->svc = conn;
    c->own_stats = (iop_service_stats_t){ 0 };
    c->stats = conn->stats ? conn->stats : &c->own_stats;
    c->loop = loop;
    c->in = c->bufs->in;
    c->in_pos = c->in_len = c->scan = 0;
    out_reset(c);
    c->discard = c->req_deadline = 0;
    c->minor = 1;
    c->head = 0;
    c->peer_gone = 0;
    c->answered = c->asked_close = 0;
    c->date_sec = -1;
    c->date_until = 0;
    c->sb = (iop_send_behind_t){ 0 };
    c->streaming = 0;
    int r;
    for (;;) {
        r = answer_buffered(c);
        int f = r > 0 ? flush_behind(c) : http_flush(c, 0);
        if (r > 0 && f < 0)
            r = f;
        if (r <= 0)
            break;
        /* Draining: stop between requests. A connection the drain took from the
         * listener's queue has its first request on the way: closing now would reset it. */
        if (*conn->draining && c->answered && c->in_pos == c->in_len && !c->discard) {
            r = 0;                         /* nothing begun: stop before reading another */
            break;
        }
        /* The stream from the second request on: its multishot receive costs more
         * to arm and to cancel than one receive, which is all the first request
         * needs (the kernel hands the connection over with it: TCP_DEFER_ACCEPT),
         * and all a connection per request ever needs. */
        if (stream && c->answered) {
            c->streaming = iop_recv_stream_open(&c->rs, conn->fd, 0) == 0;
            stream = 0;
        }
        r = read_more(c);
        if (r <= 0) {
            int g = http_flush(c, 0);      /* the 408, if any */
            if (r == 0 && g < 0)
                r = g;
            break;
        }
    }
    int w = http_send_wait(c);     /* before the FIN, and before the fd and out go */
    if (r == 0 && w < 0)
        r = w;
    if (c->streaming)              /* before linger's plain receives, and before the fd goes */
        iop_recv_stream_close(&c->rs);
    if (r == 0 && !c->peer_gone)
        linger(c);
    if (r == -ETIMEDOUT) {
        /* A response stalled past send_timeout: reset rather than leave the kernel
         * holding (and retrying) up to a send buffer for a client that does not read. */
        struct linger lg = { .l_onoff = 1, .l_linger = 0 };
        (void)setsockopt(conn->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    iop_free(c->bufs_mem);
    return quiet(r);
}
