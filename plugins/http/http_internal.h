/* The http service's shared pieces: its state (made once per host by create), one
 * connection's buffers, and the helpers the connection loop and the static file
 * code share. */
#ifndef IOPLEX_HTTP_INTERNAL_H
#define IOPLEX_HTTP_INTERNAL_H

#include <limits.h>
#include <ioplex.h>
#include "http_date.h"
#include "http_parse.h"

#define HTTP_IN_CAP 16384            /* receive buffer: a longer head is 431 */
#define HTTP_OUT_CAP 16384           /* a batch of responses, or a small file with its headers */
#define HTTP_SMALL_OUT 192           /* the record's own room: one /hello response (131 B), say */
#define HTTP_SMALL_FILE 8192         /* bodies up to this go through the out buffer */
#define HTTP_INDEX_MAX 255           /* longest index file name */

/* http_state_t.recv_mode: how a connection receives (option recv=) */
enum { HTTP_RECV_AUTO, HTTP_RECV_STREAM, HTTP_RECV_PLAIN };

typedef struct http_state {
    int root_fd;                     /* O_PATH dir, -1: no root (only /hello) */
    int use_openat2;                 /* else realpath + prefix check */
    uint64_t header_timeout_ns;      /* for a whole request head (and its body) */
    uint64_t send_timeout_ns;        /* for each step of a response's progress */
    uint64_t idle_release_ns;        /* quiet keep-alive: buffers' pages go back; 0 = never */
    int64_t max_body;                /* a larger request body: 413 */
    int recv_mode;                   /* HTTP_RECV_* */
    char index[HTTP_INDEX_MAX + 1];
    char root_real[PATH_MAX];        /* realpath of the root, for the fallback */
} http_state_t;

/* A connection's buffers, allocated with it, apart from its record: while it idles
 * their pages go back to the kernel (see read_more in http_conn.c), all of them. */
#define HTTP_PATH_CAP (HTTP_MAX_TARGET + 2 + HTTP_INDEX_MAX)
typedef struct http_bufs {
    char in[HTTP_IN_CAP];
    char out[HTTP_OUT_CAP];
    char path[HTTP_PATH_CAP];        /* decoded path (+ index name) */
    char full[PATH_MAX], real[PATH_MAX];   /* realpath fallback scratch */
} http_bufs_t;

/* One connection, on its coroutine's stack: the lines it touches on every request
 * share that stack's pages, which the request's frames touch anyway (as a heap
 * record it cost an extra page and cache lines per request, and more memory idle). */
typedef struct http_conn {
    const http_state_t *st;
    iop_service_conn_t *svc;
    iop_service_stats_t *stats;      /* svc->stats, or own_stats for a host without */
    iop_loop_t *loop;
    const char *in;                  /* what is parsed: bufs->in, or a pool buffer of the stream */
    size_t in_pos, in_len;           /* unparsed bytes: in[in_pos .. in_len) */
    size_t scan;                     /* http_head_end's progress, relative to in_pos */
    uint64_t discard;                /* request body bytes still to skip */
    uint64_t req_deadline;           /* for the request being received, 0 = not started */
    char *out;                       /* where responses go: small, or bufs->out once they outgrow it */
    size_t out_len, out_cap;         /* written to out, and its size */
    int minor;                       /* the request at hand: HTTP/1.<minor> */
    int head;                        /* ... is a HEAD */
    int peer_gone;                   /* EOF or an error from recv: no lingering */
    int answered;                    /* a request was answered on it: idle between them */
    int asked_close;                 /* the last one asked to close and has no body: no lingering */
    int streaming;                   /* receives through rs */
    int64_t date_sec;                /* Date, formatted once a second */
    uint64_t date_until;             /* loop time (iop_now) when date_sec may be over */
    char date[HTTP_DATE_LEN + 1];
    iop_service_stats_t own_stats;
    void *bufs_mem;                  /* the allocation, */
    void *bufs_pages;                /* its first page boundary, */
    size_t bufs_len;                 /* and the whole pages from there that hold bufs */
    http_bufs_t *bufs;
    iop_send_behind_t sb;            /* the last batch of responses, sent while the next request is read */
    iop_recv_stream_t rs;            /* used when streaming */
    /* A batch of responses that fits here is written and sent from the stack's page
     * the request touches anyway, not from another page (the first store into the
     * buffer's was ~7% of the server's user CPU under wrk). Larger, and it must keep
     * the coroutine's stack within the page that it touches now: see README. */
    char small[HTTP_SMALL_OUT];
} http_conn_t;

/* The handlers return 1 (keep the connection), 0 (close it once the response is
 * out) or -errno (it failed: drop it). */

/* http_conn.c */
int http_serve(void *state, iop_service_conn_t *conn);
const char *http_date_now(http_conn_t *c);
uint64_t http_send_deadline(const http_conn_t *c);
int http_send_all(http_conn_t *c, const char *p, size_t n, int flags);
int http_flush(http_conn_t *c, int flags);
int http_send_wait(http_conn_t *c);   /* the send behind done: before out or fd is used again */
/* Makes room for need more bytes at out + out_len (need <= HTTP_OUT_CAP): waits for
 * the send behind, moves to the buffer or flushes when less is free. */
int http_out_room(http_conn_t *c, size_t need);
const char *http_connection_header(const http_conn_t *c, int keep);
/* A small text/plain error response; extra: more header lines ("K: V\r\n...") or NULL. */
int http_error(http_conn_t *c, int status, int keep, const char *extra);
const char *http_reason(int status);

/* http_static.c */
int http_static(http_conn_t *c, const http_request_t *rq, int keep);

#endif
