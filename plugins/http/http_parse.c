/* The HTTP/1.x request parser; the rules it enforces are listed in http_parse.h.
 * A cursor walks the head once; every "need more bytes" returns 0 so that the same
 * function checks a complete head and the start of one that filled the buffer. */
#include <arpa/inet.h>
#include <string.h>
#include "http_parse.h"

#define NEED_MORE 0

/* Byte classes, one table lookup per byte in the loops that walk a head; the
 * table is computed by the compiler from these definitions. */
enum { C_TCHAR = 1, C_VCHAR = 2, C_HOST = 4 };
#define IS_ALNUM(c) (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z') || ((c) >= '0' && (c) <= '9'))
#define IS_TCHAR(c) (IS_ALNUM(c) || (c) == '!' || (c) == '#' || (c) == '$' || (c) == '%' || \
                     (c) == '&' || (c) == '\'' || (c) == '*' || (c) == '+' || (c) == '-' || \
                     (c) == '.' || (c) == '^' || (c) == '_' || (c) == '`' || (c) == '|' || (c) == '~')
#define IS_VCHAR(c) ((c) > 0x20 && (c) != 0x7f)   /* VCHAR and obs-text: a field value's bytes */
#define IS_HOST(c) (IS_ALNUM(c) || (c) == '-' || (c) == '.' || (c) == '_' || (c) == '~' || \
                    (c) == '%' || (c) == '!' || (c) == '$' || (c) == '&' || (c) == '\'' || \
                    (c) == '(' || (c) == ')' || (c) == '*' || (c) == '+' || (c) == ',' || \
                    (c) == ';' || (c) == '=')
#define CLASS(c) ((IS_TCHAR(c) ? C_TCHAR : 0) | (IS_VCHAR(c) ? C_VCHAR : 0) | (IS_HOST(c) ? C_HOST : 0))
#define ROW(r) CLASS(r), CLASS(r + 1), CLASS(r + 2), CLASS(r + 3), CLASS(r + 4), CLASS(r + 5), \
               CLASS(r + 6), CLASS(r + 7), CLASS(r + 8), CLASS(r + 9), CLASS(r + 10), CLASS(r + 11), \
               CLASS(r + 12), CLASS(r + 13), CLASS(r + 14), CLASS(r + 15)
static const unsigned char classes[256] = {
    ROW(0x00), ROW(0x10), ROW(0x20), ROW(0x30), ROW(0x40), ROW(0x50), ROW(0x60), ROW(0x70),
    ROW(0x80), ROW(0x90), ROW(0xa0), ROW(0xb0), ROW(0xc0), ROW(0xd0), ROW(0xe0), ROW(0xf0),
};

static int is_class(unsigned char c, unsigned k) { return classes[c] & k; }

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static unsigned char lower(unsigned char c) { return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c; }

int http_str_ieq(http_str_t s, const char *lit)
{
    size_t n = strlen(lit);
    if (s.n != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)s.p[i]) != (unsigned char)lit[i])
            return 0;
    return 1;
}

static int has_iprefix(const char *p, size_t n, const char *lit)
{
    size_t k = strlen(lit);
    return n >= k && http_str_ieq((http_str_t){ p, k }, lit);
}

size_t http_skip_empty_lines(const char *buf, size_t len)
{
    size_t i = 0;
    for (;;) {
        if (i < len && buf[i] == '\n')
            i++;
        else if (i + 1 < len && buf[i] == '\r' && buf[i + 1] == '\n')
            i += 2;
        else
            return i;
    }
}

size_t http_head_end(const char *buf, size_t len, size_t *scan)
{
    size_t i = *scan;
    while (i < len) {
        const char *nl = memchr(buf + i, '\n', len - i);
        if (!nl)
            break;
        size_t k = (size_t)(nl - buf);
        if (k + 1 >= len) {
            *scan = k;                    /* decide when the next byte is here */
            return 0;
        }
        if (buf[k + 1] == '\n')
            return k + 2;
        if (buf[k + 1] == '\r') {
            if (k + 2 >= len) {
                *scan = k;
                return 0;
            }
            if (buf[k + 2] == '\n')
                return k + 3;
        }
        i = k + 1;
    }
    *scan = len;
    return 0;
}

/* At a line end: 1 (consumed, *i moved), 0 (need more), -1 (not a line end, or a
 * bare CR). */
static int eat_eol(const char *b, size_t n, size_t *i)
{
    if (*i >= n)
        return 0;
    if (b[*i] == '\n') {
        (*i)++;
        return 1;
    }
    if (b[*i] != '\r')
        return -1;
    if (*i + 1 >= n)
        return 0;
    if (b[*i + 1] != '\n')
        return -1;
    *i += 2;
    return 1;
}

/* ---- request line ----------------------------------------------------------------- */

/* Splits the request-target into path and query. */
static int split_target(http_request_t *rq)
{
    const char *p = rq->target.p;
    size_t n = rq->target.n;
    if (n == 1 && p[0] == '*') {
        rq->path = rq->target;
        return 0;
    }
    if (p[0] != '/') {
        /* absolute-form: scheme "://" authority, then the path (maybe empty). */
        size_t skip;
        if (has_iprefix(p, n, "http://"))
            skip = 7;
        else if (has_iprefix(p, n, "https://"))
            skip = 8;
        else
            return -400;
        size_t k = skip;
        while (k < n && p[k] != '/' && p[k] != '?')
            k++;
        if (k == skip)
            return -400;                  /* no authority */
        p += k;
        n -= k;
    }
    const char *q = memchr(p, '?', n);
    size_t plen = q ? (size_t)(q - p) : n;
    if (plen == 0)
        rq->path = (http_str_t){ "/", 1 };
    else
        rq->path = (http_str_t){ p, plen };
    if (q)
        rq->query = (http_str_t){ q + 1, n - plen - 1 };
    return 0;
}

static int parse_request_line(const char *b, size_t n, size_t *ip, http_request_t *rq)
{
    size_t i = *ip, start = i;
    while (i < n && is_class((unsigned char)b[i], C_TCHAR)) {
        if (++i - start > HTTP_MAX_METHOD)
            return -400;
    }
    if (i == n)
        return NEED_MORE;
    if (i == start || b[i] != ' ')
        return -400;
    rq->method_name = (http_str_t){ b + start, i - start };
    if (rq->method_name.n == 3 && memcmp(b + start, "GET", 3) == 0)
        rq->method = HTTP_GET;
    else if (rq->method_name.n == 4 && memcmp(b + start, "HEAD", 4) == 0)
        rq->method = HTTP_HEAD;            /* methods are case-sensitive */
    else
        rq->method = HTTP_OTHER;

    start = ++i;
    while (i < n && (unsigned char)b[i] > 0x20 && (unsigned char)b[i] < 0x7f) {
        if (++i - start > HTTP_MAX_TARGET)
            return -414;
    }
    if (i == n)
        return NEED_MORE;
    if (i == start || b[i] != ' ')
        return -400;
    rq->target = (http_str_t){ b + start, i - start };
    i++;

    static const char proto[] = "HTTP/";
    for (size_t k = 0; k < 5; k++, i++) {
        if (i == n)
            return NEED_MORE;
        if (b[i] != proto[k])
            return -400;
    }
    /* DIGIT "." DIGIT, checked byte by byte so that a short head fails here too. */
    for (size_t k = 0; k < 3; k++) {
        if (i + k == n)
            return NEED_MORE;
        if (k == 1 ? b[i + k] != '.' : !is_digit((unsigned char)b[i + k]))
            return -400;
    }
    if (b[i] != '1')
        return -505;
    rq->minor = b[i + 2] == '0' ? 0 : 1;
    i += 3;
    int r = eat_eol(b, n, &i);
    if (r <= 0)
        return r == 0 ? NEED_MORE : -400;
    if (split_target(rq) < 0)
        return -400;
    *ip = i;
    return 1;
}

/* ---- header fields ------------------------------------------------------------------ */

static int parse_content_length(http_str_t v, int64_t *out)
{
    if (v.n == 0)
        return -400;
    int64_t x = 0;
    for (size_t i = 0; i < v.n; i++) {
        if (!is_digit((unsigned char)v.p[i]))
            return -400;
        if (x > (INT64_MAX - 9) / 10) {
            x = HTTP_CL_TOO_BIG;          /* keep checking the syntax */
            continue;
        }
        x = x * 10 + (v.p[i] - '0');
    }
    *out = x;
    return 0;
}

/* Comma-separated tokens of Connection: we care about close and keep-alive. */
static unsigned parse_connection(http_str_t v)
{
    unsigned flags = 0;
    size_t i = 0;
    while (i < v.n) {
        while (i < v.n && (v.p[i] == ' ' || v.p[i] == '\t' || v.p[i] == ','))
            i++;
        size_t s = i;
        while (i < v.n && v.p[i] != ',' && v.p[i] != ' ' && v.p[i] != '\t')
            i++;
        http_str_t tok = { v.p + s, i - s };
        if (http_str_ieq(tok, "close"))
            flags |= HTTP_CONN_CLOSE;
        else if (http_str_ieq(tok, "keep-alive"))
            flags |= HTTP_CONN_KEEPALIVE;
    }
    return flags;
}

static void keep_first(http_str_t *slot, http_str_t v)
{
    if (!slot->p)
        *slot = v;
}

/* reg-name and IPv4 characters (RFC 3986: unreserved, pct-encoded, sub-delims). */
static int host_char(unsigned char c) { return is_class(c, C_HOST); }

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* What RFC 3986 allows between the brackets of an IP-literal: an IPv6 address, or
 * IPvFuture ("v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )). A name, an
 * IPv4 address or a zone id ("%25eth0", RFC 6874: for URIs, never a Host) is not. */
static int valid_ip_literal(const char *p, size_t n)
{
    if (n >= 2 && (p[0] == 'v' || p[0] == 'V')) {
        size_t i = 1;
        while (i < n && hex_value((unsigned char)p[i]) >= 0)
            i++;
        if (i == 1 || i + 1 >= n || p[i] != '.')
            return 0;
        for (i++; i < n; i++)
            if ((!host_char((unsigned char)p[i]) || p[i] == '%') && p[i] != ':')
                return 0;
        return 1;
    }
    char addr[INET6_ADDRSTRLEN];
    struct in6_addr a;
    if (n >= sizeof addr)
        return 0;
    memcpy(addr, p, n);
    addr[n] = '\0';
    return inet_pton(AF_INET6, addr, &a) == 1;
}

/* uri-host [ ":" port ] (RFC 3986: reg-name, IPv4, "[" IP-literal "]"; port is
 * digits); may be empty. */
static int valid_host(http_str_t v)
{
    size_t i = 0;
    if (v.n && v.p[0] == '[') {
        const char *close = memchr(v.p, ']', v.n);
        if (!close || !valid_ip_literal(v.p + 1, (size_t)(close - v.p) - 1))
            return 0;                      /* "[::1", "[]", "[a.b]", "[1.2.3.4]" */
        i = (size_t)(close - v.p) + 1;
    } else {
        while (i < v.n && host_char((unsigned char)v.p[i]))
            i++;
    }
    if (i == v.n)
        return 1;
    if (v.p[i] != ':')
        return 0;                          /* "::1" unbracketed, "a b", "a/b" */
    for (i++; i < v.n; i++)
        if (!is_digit((unsigned char)v.p[i]))
            return 0;
    return 1;
}

static int header_field(http_request_t *rq, http_str_t name, http_str_t v)
{
    switch (lower((unsigned char)name.p[0])) {
    case 'h':
        if (http_str_ieq(name, "host")) {
            if (rq->host.p || !valid_host(v))
                return -400;               /* two Hosts, or not a host: RFC 9112 3.2 */
            rq->host = v;
        }
        break;
    case 'c':
        if (http_str_ieq(name, "connection")) {
            rq->connection |= parse_connection(v);
        } else if (http_str_ieq(name, "content-length")) {
            int64_t cl;
            if (parse_content_length(v, &cl) < 0)
                return -400;
            if (rq->content_length >= 0 && rq->content_length != cl)
                return -400;
            rq->content_length = cl;
        }
        break;
    case 't':
        if (http_str_ieq(name, "transfer-encoding"))
            rq->transfer_encoding = 1;
        break;
    case 'i':
        if (http_str_ieq(name, "if-modified-since"))
            keep_first(&rq->if_modified_since, v);
        else if (http_str_ieq(name, "if-range"))
            keep_first(&rq->if_range, v);
        else if (http_str_ieq(name, "if-match"))
            keep_first(&rq->if_match, v);
        else if (http_str_ieq(name, "if-none-match"))
            keep_first(&rq->if_none_match, v);
        else if (http_str_ieq(name, "if-unmodified-since"))
            keep_first(&rq->if_unmodified_since, v);
        break;
    case 'e':
        if (http_str_ieq(name, "expect") && http_str_ieq(v, "100-continue"))
            rq->expect_continue = 1;
        break;
    case 'r':
        if (http_str_ieq(name, "range"))   /* not a list: two make it invalid, ignored */
            rq->range = rq->range.p ? (http_str_t){ v.p, 0 } : v;
        break;
    default:
        break;
    }
    return 0;
}

/* One header line at *ip: 1 = a field, 2 = the empty line that ends the head,
 * 0 = need more, < 0 = error. */
static int parse_header_line(const char *b, size_t n, size_t *ip, http_request_t *rq)
{
    size_t i = *ip;
    if (i == n)
        return NEED_MORE;
    if (b[i] == '\r' || b[i] == '\n') {
        int r = eat_eol(b, n, &i);
        if (r <= 0)
            return r == 0 ? NEED_MORE : -400;
        *ip = i;
        return 2;
    }
    if (b[i] == ' ' || b[i] == '\t')
        return -400;                       /* obs-fold (RFC 9112 5.2) */
    if (++rq->nheaders > HTTP_MAX_HEADERS)
        return -431;
    size_t start = i;
    while (i < n && is_class((unsigned char)b[i], C_TCHAR))
        i++;
    if (i == n)
        return NEED_MORE;
    if (i == start || b[i] != ':')
        return -400;                       /* also "Name :" (RFC 9112 5.1) */
    http_str_t name = { b + start, i - start };
    i++;
    while (i < n && (b[i] == ' ' || b[i] == '\t'))
        i++;
    size_t vs = i, ve = i;
    while (i < n) {                        /* runs of visible bytes, then what ends them */
        size_t run = i;
        while (i < n && is_class((unsigned char)b[i], C_VCHAR))
            i++;
        if (i > run)
            ve = i;                        /* trailing whitespace is not part of the value */
        if (i == n || b[i] == '\r' || b[i] == '\n')
            break;
        if (b[i] != ' ' && b[i] != '\t')
            return -400;                   /* a control character, DEL */
        i++;
    }
    int r = eat_eol(b, n, &i);
    if (r <= 0)
        return r == 0 ? NEED_MORE : -400;
    r = header_field(rq, name, (http_str_t){ b + vs, ve - vs });
    if (r < 0)
        return r;
    *ip = i;
    return 1;
}

int http_parse_request(const char *b, size_t n, http_request_t *rq)
{
    /* Field by field: the compiler made a memset of the whole record a `rep stos`,
     * ~6 ns of the ~50 that a short request takes. */
    static const http_str_t none = { 0 };
    rq->method = HTTP_OTHER;
    rq->minor = 0;
    rq->method_name = rq->target = rq->path = none;
    rq->query = rq->host = rq->if_modified_since = rq->if_range = rq->range = none;
    rq->if_match = rq->if_none_match = rq->if_unmodified_since = none;
    rq->connection = 0;
    rq->content_length = -1;
    rq->transfer_encoding = rq->expect_continue = 0;
    rq->nheaders = 0;
    size_t i = http_skip_empty_lines(b, n);
    int r = parse_request_line(b, n, &i, rq);
    if (r <= 0)
        return r;
    while ((r = parse_header_line(b, n, &i, rq)) == 1)
        ;
    if (r <= 0)
        return r;
    if (rq->minor >= 1 && !rq->host.p)
        return -400;                       /* RFC 9112 3.2 */
    if (rq->transfer_encoding && rq->content_length >= 0)
        return -400;                       /* RFC 9112 6.1: a smuggling attempt */
    return i > (size_t)INT32_MAX ? -431 : (int)i;
}

/* ---- path ------------------------------------------------------------------------------ */

static int bad_segment(const char *s, size_t n)
{
    return (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.');
}

int http_decode_path(const char *p, size_t n, char *out, size_t cap)
{
    if (n == 0 || p[0] != '/')
        return -400;
    if (cap < 2 || n > (size_t)INT32_MAX)
        return -414;
    size_t o = 0, seg = 1;
    out[o++] = '/';
    for (size_t i = 1; i < n;) {
        unsigned char c = (unsigned char)p[i];
        if (c == '/') {
            if (bad_segment(out + seg, o - seg))
                return -400;
            if (o > seg) {                 /* an empty segment ("//") adds nothing */
                if (o + 1 >= cap)
                    return -414;
                out[o++] = '/';
            }
            seg = o;
            i++;
            continue;
        }
        if (c == '%') {
            int hi = i + 2 < n ? hex_value((unsigned char)p[i + 1]) : -1;
            int lo = i + 2 < n ? hex_value((unsigned char)p[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return -400;
            c = (unsigned char)(hi * 16 + lo);
            if (c == '/')
                return -400;               /* "a%2Fb" would name another file */
            i += 3;
        } else {
            i++;
        }
        if (c == 0 || c == '\\')
            return -400;
        if (o + 1 >= cap)
            return -414;
        out[o++] = (char)c;
    }
    if (bad_segment(out + seg, o - seg))
        return -400;
    out[o] = '\0';
    return (int)o;
}

/* ---- Range ----------------------------------------------------------------------------- */

/* Digits at *i into *v (saturating); 0 if there were none. */
static int read_u64(const char *p, size_t n, size_t *i, uint64_t *v)
{
    size_t s = *i;
    uint64_t x = 0;
    while (*i < n && is_digit((unsigned char)p[*i])) {
        unsigned d = (unsigned)(p[*i] - '0');
        x = x > (UINT64_MAX - d) / 10 ? UINT64_MAX : x * 10 + d;
        (*i)++;
    }
    *v = x;
    return *i > s;
}

http_range_t http_parse_range(const char *p, size_t n, uint64_t size, uint64_t *first, uint64_t *last)
{
    if (!p || !has_iprefix(p, n, "bytes="))
        return HTTP_RANGE_NONE;
    size_t i = 6;
    while (i < n && (p[i] == ' ' || p[i] == '\t'))
        i++;
    if (memchr(p + i, ',', n - i))
        return HTTP_RANGE_NONE;            /* several ranges: the whole file instead */
    uint64_t a = 0, b = 0;
    int has_a = read_u64(p, n, &i, &a);
    if (i >= n || p[i] != '-')
        return HTTP_RANGE_NONE;
    i++;
    int has_b = read_u64(p, n, &i, &b);
    while (i < n && (p[i] == ' ' || p[i] == '\t'))
        i++;
    if (i != n || (!has_a && !has_b))
        return HTTP_RANGE_NONE;
    if (!has_a) {                          /* "-N": the last N bytes */
        if (b == 0)
            return HTTP_RANGE_UNSATISFIABLE;
        /* Satisfiable (RFC 9110 14.1.1) but no 206 can describe zero bytes:
         * the range is ignored and the empty file sent whole (14.2 allows it). */
        if (size == 0)
            return HTTP_RANGE_NONE;
        *first = b >= size ? 0 : size - b;
        *last = size - 1;
        return HTTP_RANGE_OK;
    }
    if (has_b && b < a)
        return HTTP_RANGE_NONE;            /* invalid: ignored (RFC 9110 14.1.1) */
    if (a >= size)
        return HTTP_RANGE_UNSATISFIABLE;
    *first = a;
    *last = !has_b || b >= size ? size - 1 : b;
    return HTTP_RANGE_OK;
}
