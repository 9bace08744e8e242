/* An incremental HTTP/1.x response parser: it never buffers, it reads from the
 * caller's buffer and says how much it consumed.
 *
 * The head is parsed a whole line at a time (http_resp_head), skipping 1xx
 * responses; then the body is decoded (http_resp_body) into spans of the caller's
 * buffer: Content-Length, chunked (extensions and trailers ignored) or delimited by
 * the end of the connection. Malformed input gives -1 and a reason in err. */
#ifndef IOP_FETCH_HTTP_RESP_H
#define IOP_FETCH_HTTP_RESP_H

#include <stddef.h>
#include <stdint.h>

#define HTTP_LINE_MAX 8192           /* a head line, a chunk size line, a trailer */
#define HTTP_HEAD_MAX (64 * 1024)    /* a whole head, 1xx heads included */
#define HTTP_HEADERS_MAX 256

typedef enum http_body_kind {
    HTTP_BODY_NONE,                  /* 204, 304, 1xx, or a response to HEAD */
    HTTP_BODY_LENGTH,                /* Content-Length bytes */
    HTTP_BODY_CHUNKED,
    HTTP_BODY_CLOSE                  /* until the server closes the connection */
} http_body_kind_t;

typedef struct http_resp {
    /* the head, once http_resp_head returned 1 */
    int status;
    int minor;                       /* HTTP/1.<minor> */
    char reason[64];
    http_body_kind_t body;
    uint64_t content_length;         /* HTTP_BODY_LENGTH */
    int keep_alive;                  /* the connection may carry another request */
    char *location;                  /* the Location header (malloc'd) or NULL */
    unsigned informational;          /* 1xx responses skipped */
    uint64_t body_bytes;             /* decoded so far */
    char err[160];
    /* private */
    int head_request, phase, chunk_phase;
    size_t head_bytes;
    unsigned nheaders;
    int has_length, conn_close, conn_keep_alive, chunked, important_prev;
    char te_other[32];
    uint64_t remaining;
} http_resp_t;

/* head_request: the request was HEAD (the response has no body whatever it says). */
void http_resp_init(http_resp_t *r, int head_request);
void http_resp_free(http_resp_t *r);

/* Parses head lines from buf[0..len); *used = bytes consumed (whole lines only: pass
 * the rest again with more after it). 1 = the final head is complete, 0 = more
 * input needed, -1 = malformed (err says why). */
int http_resp_head(http_resp_t *r, const char *buf, size_t len, size_t *used);

/* Decodes body bytes from buf[0..len): *used = bytes consumed, *data / *dlen = body
 * bytes found (a span of buf, possibly empty). 1 = the body is complete (nothing
 * after *used belongs to it), 0 = call again: with the rest of buf if *used > 0,
 * else after more input has arrived; -1 = malformed. */
int http_resp_body(http_resp_t *r, const char *buf, size_t len, size_t *used,
                   const char **data, size_t *dlen);

/* The connection ended: 1 if that ends the body (close-delimited), else -1 with err
 * saying how much was missing. */
int http_resp_eof(http_resp_t *r);

#endif
