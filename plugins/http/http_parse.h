/* The HTTP/1.x request parser: zero-copy (every string points into the caller's
 * buffer, or at a static "/"), no allocation, no state between calls. Pure C, no
 * ioplex dependency, so the fuzzer and the unit tests link it alone.
 *
 * Errors are negative HTTP status codes (-400, -414, -431, -505) so that the caller
 * can answer with them directly. What is accepted:
 *  - lines end with CRLF or a bare LF (RFC 9112 2.2 allows LF); a bare CR anywhere
 *    in the head is 400;
 *  - empty lines before the request line are skipped (RFC 9112 2.2);
 *  - request line: token SP request-target SP "HTTP/" DIGIT "." DIGIT, single spaces;
 *    major version other than 1 is 505; HTTP/1.2+ is treated as 1.1;
 *  - request-target: origin-form ("/path?query"), absolute-form
 *    ("http://host/path"), asterisk-form ("*"); visible ASCII only; > 8 KiB is 414;
 *  - header lines: token ":" OWS value OWS, no space before the colon; a line that
 *    starts with SP/HTAB (obs-fold) is 400; control characters other than HTAB in a
 *    value are 400; more than HTTP_MAX_HEADERS lines is 431;
 *  - HTTP/1.1 without exactly one Host is 400, and so is a Host that is not
 *    uri-host [":" port] (between brackets: an IPv6 address or IPvFuture);
 *    Content-Length must be digits, a second one with another value is 400;
 *    Content-Length together with Transfer-Encoding is 400 (request smuggling). */
#ifndef IOPLEX_HTTP_PARSE_H
#define IOPLEX_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_TARGET 8192         /* longer request-targets: 414 */
#define HTTP_MAX_HEADERS 100         /* more header lines: 431 */
#define HTTP_MAX_METHOD 32           /* longer methods: 400 */
#define HTTP_CL_TOO_BIG INT64_MAX    /* a Content-Length with more digits than we count */

typedef struct http_str {
    const char *p;
    size_t n;
} http_str_t;

typedef enum http_method { HTTP_OTHER = 0, HTTP_GET, HTTP_HEAD } http_method_t;

#define HTTP_CONN_CLOSE     0x1u     /* "Connection: close" */
#define HTTP_CONN_KEEPALIVE 0x2u     /* "Connection: keep-alive" */

/* http_parse_request sets every field by name (no memset): a new one must be set there. */
typedef struct http_request {
    http_method_t method;
    http_str_t method_name;
    http_str_t target;               /* as sent */
    http_str_t path;                 /* still percent-encoded, starts with '/' or is "*" */
    http_str_t query;                /* after '?' (n = 0: none or empty) */
    int minor;                       /* HTTP/1.<minor>: 0 or 1 */
    unsigned connection;             /* HTTP_CONN_* seen in Connection */
    int64_t content_length;          /* -1 = none, HTTP_CL_TOO_BIG = huge */
    int transfer_encoding;           /* 1 if the request had one */
    http_str_t host, if_modified_since, if_range, range;   /* p = NULL: absent */
    http_str_t if_match, if_none_match, if_unmodified_since;
    int expect_continue;             /* Expect: 100-continue */
    unsigned nheaders;
} http_request_t;

/* Length of the empty lines (CRLF or LF) at the start of buf, to be discarded. */
size_t http_skip_empty_lines(const char *buf, size_t len);

/* Where the head (request line + headers + the empty line) that starts buf ends:
 * its length, or 0 if it does not end within len. *scan (0 at first) remembers how
 * far a previous call looked, so that a head arriving byte by byte costs O(n).
 * buf must not start with an empty line (skip them first). */
size_t http_head_end(const char *buf, size_t len, size_t *scan);

/* Parses the head at the start of buf (len bytes, possibly an incomplete head):
 * > 0 = its length (as http_head_end says, plus the empty lines skipped first),
 * 0 = incomplete and no error so far, < 0 = -status. req is filled on success. */
int http_parse_request(const char *buf, size_t len, http_request_t *req);

/* Percent-decodes an origin-form path into out (NUL-terminated) and checks it:
 * "//" collapses to "/"; "." and ".." segments, NUL, backslashes and an encoded
 * "/" (%2F) are refused. The decoded length, -400 (malformed or refused) or -414
 * (does not fit in cap). */
int http_decode_path(const char *p, size_t n, char *out, size_t cap);

/* A Range header against a representation of size bytes. */
typedef enum http_range {
    HTTP_RANGE_NONE,                 /* absent, malformed or multiple: send it all (200) */
    HTTP_RANGE_OK,                   /* one satisfiable range [*first, *last]: 206 */
    HTTP_RANGE_UNSATISFIABLE,        /* 416 */
} http_range_t;
http_range_t http_parse_range(const char *p, size_t n, uint64_t size, uint64_t *first, uint64_t *last);

/* Case-insensitive comparison of an http_str_t with a lower-case literal. */
int http_str_ieq(http_str_t s, const char *lower);

#endif
