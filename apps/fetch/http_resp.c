#include "http_resp.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { PH_STATUS, PH_HEADERS, PH_BODY };
enum { CH_SIZE, CH_DATA, CH_DATA_END, CH_TRAILER, CH_DONE };

#define LENGTH_MAX (UINT64_C(1) << 62)

static int fail(http_resp_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(http_resp_t *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, sizeof r->err, fmt, ap);
    va_end(ap);
    return -1;
}

/* Starts a new head (the first, or the one after a 1xx). */
static void reset_head(http_resp_t *r)
{
    free(r->location);
    r->location = NULL;
    r->status = r->minor = 0;
    r->reason[0] = '\0';
    r->has_length = r->conn_close = r->conn_keep_alive = r->chunked = 0;
    r->important_prev = 0;
    r->te_other[0] = '\0';
    r->content_length = 0;
    r->nheaders = 0;
    r->phase = PH_STATUS;
}

void http_resp_init(http_resp_t *r, int head_request)
{
    memset(r, 0, sizeof *r);
    r->head_request = head_request;
    reset_head(r);
}

void http_resp_free(http_resp_t *r)
{
    free(r->location);
    r->location = NULL;
}

/* Finds the next line in buf: its length without CR LF / LF, and the bytes it
 * takes with its end. 0 if no complete line yet. */
static int next_line(const char *buf, size_t len, size_t *line_len, size_t *taken)
{
    const char *lf = memchr(buf, '\n', len);
    if (!lf)
        return 0;
    *taken = (size_t)(lf - buf) + 1;
    *line_len = *taken - 1;
    if (*line_len > 0 && buf[*line_len - 1] == '\r')
        (*line_len)--;
    return 1;
}

static int parse_status_line(http_resp_t *r, const char *s, size_t n)
{
    if (n < 12 || memcmp(s, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)s[7]) || s[8] != ' ')
        return fail(r, "malformed status line '%.*s'", (int)(n < 60 ? n : 60), s);
    r->minor = s[7] - '0';
    for (int i = 9; i < 12; i++)
        if (!isdigit((unsigned char)s[i]))
            return fail(r, "malformed status code in '%.*s'", (int)(n < 60 ? n : 60), s);
    if (n > 12 && s[12] != ' ')
        return fail(r, "malformed status line '%.*s'", (int)(n < 60 ? n : 60), s);
    r->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    if (r->status < 100)
        return fail(r, "invalid status code %03d", r->status);
    size_t rl = n > 13 ? n - 13 : 0;
    if (rl >= sizeof r->reason)
        rl = sizeof r->reason - 1;
    memcpy(r->reason, s + 13, rl);
    r->reason[rl] = '\0';
    for (size_t i = 0; i < rl; i++)   /* printed later: keep the terminal safe */
        if ((unsigned char)r->reason[i] < 0x20 || r->reason[i] == 0x7f)
            r->reason[i] = '?';
    r->phase = PH_HEADERS;
    return 0;
}

static int token_is(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(s, word, n) == 0;
}

/* Calls each(r, token, len) for every element of a comma-separated list. */
static int each_element(http_resp_t *r, const char *v, size_t n,
                        int (*each)(http_resp_t *, const char *, size_t))
{
    size_t i = 0;
    while (i <= n) {
        size_t j = i;
        while (j < n && v[j] != ',')
            j++;
        size_t a = i, b = j;
        while (a < b && (v[a] == ' ' || v[a] == '\t'))
            a++;
        while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t'))
            b--;
        if (b > a && each(r, v + a, b - a) < 0)
            return -1;
        i = j + 1;
    }
    return 0;
}

static int on_length(http_resp_t *r, const char *v, size_t n)
{
    uint64_t len = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)v[i]) || len > (LENGTH_MAX - 9) / 10)
            return fail(r, "bad Content-Length '%.*s'", (int)(n < 40 ? n : 40), v);
        len = len * 10 + (uint64_t)(v[i] - '0');
    }
    if (r->has_length && len != r->content_length)
        return fail(r, "conflicting Content-Length values %" PRIu64 " and %" PRIu64,
                    r->content_length, len);
    r->has_length = 1;
    r->content_length = len;
    return 0;
}

static int on_connection(http_resp_t *r, const char *v, size_t n)
{
    if (token_is(v, n, "close"))
        r->conn_close = 1;
    else if (token_is(v, n, "keep-alive"))
        r->conn_keep_alive = 1;
    return 0;
}

static int on_coding(http_resp_t *r, const char *v, size_t n)
{
    if (token_is(v, n, "chunked")) {
        if (r->chunked)
            return fail(r, "Transfer-Encoding applies chunked twice");
        r->chunked = 1;
    } else if (!r->te_other[0]) {
        snprintf(r->te_other, sizeof r->te_other, "%.*s", (int)n, v);
    }
    return 0;
}

static int parse_header(http_resp_t *r, const char *s, size_t n)
{
    if (s[0] == ' ' || s[0] == '\t') {     /* obsolete line folding */
        if (r->important_prev)
            return fail(r, "folded header line in a header that matters");
        return 0;
    }
    if (++r->nheaders > HTTP_HEADERS_MAX)
        return fail(r, "more than %d header lines", HTTP_HEADERS_MAX);
    const char *colon = memchr(s, ':', n);
    if (!colon || colon == s)
        return fail(r, "malformed header line '%.*s'", (int)(n < 60 ? n : 60), s);
    size_t nl = (size_t)(colon - s);
    for (size_t i = 0; i < nl; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f)
            return fail(r, "malformed header name '%.*s'", (int)(nl < 60 ? nl : 60), s);
    const char *v = colon + 1, *end = s + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t vl = (size_t)(end - v);
    r->important_prev = 1;
    if (token_is(s, nl, "content-length")) {
        /* "Content-Length:" with no number is not "no Content-Length" (which would
         * read to the close): a malformed response. */
        size_t k = 0;
        while (k < vl && (v[k] == ' ' || v[k] == '\t' || v[k] == ','))
            k++;
        if (k == vl)
            return fail(r, "empty Content-Length");
        return each_element(r, v, vl, on_length);
    }
    if (token_is(s, nl, "transfer-encoding"))
        return each_element(r, v, vl, on_coding);
    if (token_is(s, nl, "connection"))
        return each_element(r, v, vl, on_connection);
    if (token_is(s, nl, "location")) {
        if (!r->location && !(r->location = strndup(v, vl)))
            return fail(r, "out of memory");
        return 0;
    }
    r->important_prev = 0;
    return 0;
}

/* The head is complete: decides how the body is delimited (RFC 9112 section 6.3). */
static int end_of_head(http_resp_t *r)
{
    if (r->minor >= 1)
        r->keep_alive = !r->conn_close;
    else
        r->keep_alive = r->conn_keep_alive && !r->conn_close;
    if (r->head_request || r->status < 200 || r->status == 204 || r->status == 304) {
        r->body = HTTP_BODY_NONE;
    } else if (r->chunked || r->te_other[0]) {
        if (r->te_other[0] || !r->chunked)
            return fail(r, "unsupported Transfer-Encoding '%s'", r->te_other);
        r->body = HTTP_BODY_CHUNKED;
        r->chunk_phase = CH_SIZE;
        if (r->has_length)
            r->keep_alive = 0;         /* both framings: a smuggling risk, do not reuse */
    } else if (r->has_length) {
        r->body = HTTP_BODY_LENGTH;
        r->remaining = r->content_length;
    } else {
        r->body = HTTP_BODY_CLOSE;
        r->keep_alive = 0;
    }
    r->body_bytes = 0;
    r->phase = PH_BODY;
    return 0;
}

int http_resp_head(http_resp_t *r, const char *buf, size_t len, size_t *used)
{
    size_t pos = 0, n, taken;
    *used = 0;
    while (r->phase != PH_BODY) {
        if (!next_line(buf + pos, len - pos, &n, &taken)) {
            *used = pos;
            if (len - pos > HTTP_LINE_MAX)
                return fail(r, "response head line longer than %d bytes", HTTP_LINE_MAX);
            return 0;
        }
        const char *line = buf + pos;
        if (n > HTTP_LINE_MAX)
            return fail(r, "response head line longer than %d bytes", HTTP_LINE_MAX);
        pos += taken;
        r->head_bytes += taken;
        if (r->head_bytes > HTTP_HEAD_MAX)
            return fail(r, "response head longer than %d bytes", HTTP_HEAD_MAX);
        if (r->phase == PH_STATUS) {
            if (n == 0)
                continue;              /* stray empty lines before a status line */
            if (parse_status_line(r, line, n) < 0)
                return -1;
        } else if (n > 0) {
            if (parse_header(r, line, n) < 0)
                return -1;
        } else if (r->status == 101) {
            return fail(r, "unexpected 101 Switching Protocols");
        } else if (r->status < 200) {
            r->informational++;        /* 100 Continue, 103 Early Hints ...: skipped */
            reset_head(r);
        } else if (end_of_head(r) < 0) {
            return -1;
        }
    }
    *used = pos;
    return 1;
}

static int chunk_size_line(http_resp_t *r, const char *s, size_t n)
{
    uint64_t size = 0;
    size_t i = 0;
    for (; i < n && isxdigit((unsigned char)s[i]); i++) {
        if (size > (LENGTH_MAX >> 4))
            return fail(r, "chunk size too large");
        int c = tolower((unsigned char)s[i]);
        size = size * 16 + (uint64_t)(isdigit(c) ? c - '0' : c - 'a' + 10);
    }
    if (i == 0)
        return fail(r, "bad chunk size line '%.*s'", (int)(n < 40 ? n : 40), s);
    while (i < n && (s[i] == ' ' || s[i] == '\t'))
        i++;
    if (i < n && s[i] != ';')          /* anything after ';' is an extension: ignored */
        return fail(r, "bad chunk size line '%.*s'", (int)(n < 40 ? n : 40), s);
    r->remaining = size;
    r->chunk_phase = size ? CH_DATA : CH_TRAILER;
    return 0;
}

static int chunked_step(http_resp_t *r, const char *buf, size_t len, size_t *used,
                        const char **data, size_t *dlen)
{
    size_t n, taken;
    switch (r->chunk_phase) {
    case CH_DATA:
        n = len < r->remaining ? len : (size_t)r->remaining;
        *data = buf;
        *dlen = *used = n;
        r->remaining -= n;
        if (r->remaining == 0)
            r->chunk_phase = CH_DATA_END;
        return 0;
    case CH_DATA_END:
        if (len >= 1 && buf[0] == '\n')
            *used = 1;
        else if (len >= 2 && buf[0] == '\r' && buf[1] == '\n')
            *used = 2;
        else if (len >= 2 || (len == 1 && buf[0] != '\r'))
            return fail(r, "missing CRLF after chunk data");
        if (*used)
            r->chunk_phase = CH_SIZE;
        return 0;
    default:                           /* a size line or a trailer line */
        if (!next_line(buf, len, &n, &taken)) {
            if (len > HTTP_LINE_MAX)
                return fail(r, "chunk size or trailer line longer than %d bytes", HTTP_LINE_MAX);
            return 0;
        }
        if (n > HTTP_LINE_MAX)
            return fail(r, "chunk size or trailer line longer than %d bytes", HTTP_LINE_MAX);
        *used = taken;
        if (r->chunk_phase == CH_SIZE)
            return chunk_size_line(r, buf, n);
        r->head_bytes += taken;        /* trailers are bounded like the head */
        if (r->head_bytes > HTTP_HEAD_MAX)
            return fail(r, "trailers longer than %d bytes", HTTP_HEAD_MAX);
        if (n == 0) {
            r->chunk_phase = CH_DONE;
            return 1;
        }
        return 0;
    }
}

int http_resp_body(http_resp_t *r, const char *buf, size_t len, size_t *used,
                   const char **data, size_t *dlen)
{
    *used = 0;
    *data = buf;
    *dlen = 0;
    int res;
    switch (r->body) {
    case HTTP_BODY_NONE:
        return 1;
    case HTTP_BODY_LENGTH:
        *dlen = *used = len < r->remaining ? len : (size_t)r->remaining;
        r->remaining -= *dlen;
        res = r->remaining == 0;
        break;
    case HTTP_BODY_CLOSE:
        *dlen = *used = len;
        res = 0;
        break;
    default:
        if (r->chunk_phase == CH_DONE)
            return 1;
        res = chunked_step(r, buf, len, used, data, dlen);
        break;
    }
    r->body_bytes += *dlen;
    return res;
}

int http_resp_eof(http_resp_t *r)
{
    switch (r->body) {
    case HTTP_BODY_NONE:
        return 1;
    case HTTP_BODY_CLOSE:
        return 1;
    case HTTP_BODY_LENGTH:
        if (r->remaining == 0)
            return 1;
        return fail(r, "connection closed after %" PRIu64 " of %" PRIu64 " body bytes",
                    r->body_bytes, r->content_length);
    default:
        if (r->chunk_phase == CH_DONE)
            return 1;
        return fail(r, "connection closed inside the chunked body (after %" PRIu64 " bytes)",
                    r->body_bytes);
    }
}
