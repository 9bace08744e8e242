#include "url.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ERR(...) (snprintf(err, errlen, __VA_ARGS__), -1)

/* The components of a URI reference (RFC 3986 section 3); the fragment is dropped. */
typedef struct url_parts {
    const char *scheme, *auth, *path, *query;   /* query starts after '?' */
    size_t scheme_len, auth_len, path_len, query_len;
    int has_scheme, has_auth, has_query;
} url_parts_t;

static void split(const char *s, url_parts_t *p)
{
    memset(p, 0, sizeof *p);
    const char *c = s;
    if (isalpha((unsigned char)*c)) {
        while (isalnum((unsigned char)*c) || *c == '+' || *c == '-' || *c == '.')
            c++;
        if (*c == ':') {
            p->has_scheme = 1;
            p->scheme = s;
            p->scheme_len = (size_t)(c - s);
            s = c + 1;
        }
    }
    if (s[0] == '/' && s[1] == '/') {
        p->has_auth = 1;
        p->auth = s + 2;
        p->auth_len = strcspn(p->auth, "/?#");
        s = p->auth + p->auth_len;
    }
    p->path = s;
    p->path_len = strcspn(s, "?#");
    s += p->path_len;
    if (*s == '?') {
        p->has_query = 1;
        p->query = s + 1;
        p->query_len = strcspn(p->query, "#");
    }
}

void url_remove_dot_segments(char *buf)
{
    size_t i = 0, o = 0, n = strlen(buf);   /* read and write positions: o <= i always */
    while (i < n) {
        const char *in = buf + i;
        if (strncmp(in, "../", 3) == 0) {
            i += 3;
        } else if (strncmp(in, "./", 2) == 0 || strncmp(in, "/./", 3) == 0) {
            i += 2;
        } else if (strcmp(in, "/.") == 0) {
            buf[i + 1] = '/';              /* "/." at the end becomes "/" */
            i += 1;
        } else if (strncmp(in, "/../", 4) == 0 || strcmp(in, "/..") == 0) {
            if (in[3] == '\0')
                buf[i + 2] = '/';
            i += 3 - (in[3] == '\0');      /* leaves the input starting at a '/' */
            while (o > 0 && buf[--o] != '/')
                ;                          /* drop the output's last segment */
        } else if (strcmp(in, ".") == 0 || strcmp(in, "..") == 0) {
            i = n;
        } else {
            size_t seg = 1 + strcspn(in + 1, "/");   /* a '/' (if any) and the segment */
            if (in[0] != '/')
                seg = strcspn(in, "/");
            memmove(buf + o, in, seg);
            o += seg;
            i += seg;
        }
    }
    buf[o] = '\0';
}

/* Bytes a request line cannot carry as they are. */
static int needs_escape(unsigned char ch)
{
    return ch <= 0x20 || ch >= 0x7f || strchr("\"<>\\^`{|}", ch) != NULL;
}

static void append_escaped(char *dst, size_t *n, const char *src, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)src[i];
        if (needs_escape(ch)) {
            dst[(*n)++] = '%';
            dst[(*n)++] = hex[ch >> 4];
            dst[(*n)++] = hex[ch & 15];
        } else {
            dst[(*n)++] = (char)ch;
        }
    }
    dst[*n] = '\0';
}

static int parse_host(const url_parts_t *p, fetch_url_t *u, char *err, size_t errlen)
{
    const char *a = p->auth, *end = p->auth + p->auth_len, *port = NULL;
    if (memchr(a, '@', p->auth_len))
        return ERR("user names and passwords in URLs are not supported");
    const char *h = a, *h_end;
    if (*a == '[') {
        const char *close = memchr(a, ']', p->auth_len);
        if (!close)
            return ERR("missing ']' after the IPv6 address");
        h = a + 1;
        h_end = close;
        if (close + 1 < end && close[1] != ':')
            return ERR("unexpected text after the IPv6 address");
        port = close + 1 < end ? close + 2 : NULL;
        u->ipv6 = 1;
    } else {
        h_end = memchr(a, ':', p->auth_len);
        if (h_end)
            port = h_end + 1;
        else
            h_end = end;
    }
    size_t hlen = (size_t)(h_end - h);
    if (hlen == 0)
        return ERR("no host name");
    if (hlen >= sizeof u->host)
        return ERR("host name too long");
    for (size_t i = 0; i < hlen; i++)
        u->host[i] = (char)tolower((unsigned char)h[i]);
    u->host[hlen] = '\0';
    if (u->ipv6) {
        struct in6_addr tmp;
        if (strchr(u->host, '%'))
            return ERR("IPv6 zone ids are not supported");
        if (inet_pton(AF_INET6, u->host, &tmp) != 1)
            return ERR("'%s' is not an IPv6 address", u->host);
        /* One spelling per address (RFC 5952): [0:0::1] and [::1] share a host entry
         * and its kept-alive connections. */
        inet_ntop(AF_INET6, &tmp, u->host, sizeof u->host);
    } else {
        for (size_t i = 0; i < hlen; i++)
            if (!isalnum((unsigned char)u->host[i]) && !strchr("-._~", u->host[i]))
                return ERR("invalid character '%c' in the host name", u->host[i]);
    }
    u->port = 80;
    if (port && port < end) {
        unsigned long v = 0;
        for (const char *c = port; c < end; c++) {
            if (!isdigit((unsigned char)*c) || (v = v * 10 + (unsigned long)(*c - '0')) > 65535)
                return ERR("bad port '%.*s'", (int)(end - port), port);
        }
        if (v == 0)
            return ERR("port 0");
        u->port = (uint16_t)v;
    }
    return 0;
}

int url_parse(const char *s, fetch_url_t *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof *u);
    size_t n = strlen(s);
    if (n == 0)
        return ERR("empty URL");
    if (n > URL_MAX)
        return ERR("URL longer than %d bytes", URL_MAX);
    url_parts_t p;
    split(s, &p);
    if (!p.has_scheme)
        return ERR("not an http:// URL");
    if (p.scheme_len == 5 && strncasecmp(p.scheme, "https", 5) == 0)
        return ERR("https is not supported");
    if (p.scheme_len != 4 || strncasecmp(p.scheme, "http", 4) != 0)
        return ERR("unsupported scheme '%.*s' (only http:// is)", (int)p.scheme_len, p.scheme);
    if (!p.has_auth)
        return ERR("expected '//' after 'http:'");
    if (parse_host(&p, u, err, errlen) < 0)
        return -1;
    char *path = malloc(p.path_len + 2);
    size_t cap = 3 * (p.path_len + 1 + p.query_len + 1) + 1;
    char *target = malloc(cap);
    if (!path || !target) {
        free(path);
        free(target);
        return ERR("out of memory");
    }
    if (p.path_len == 0)
        strcpy(path, "/");
    else
        snprintf(path, p.path_len + 1, "%s", p.path);
    url_remove_dot_segments(path);
    if (path[0] != '/') {          /* "http://h/.." leaves "" */
        memmove(path + 1, path, strlen(path) + 1);
        path[0] = '/';
    }
    size_t tn = 0;
    append_escaped(target, &tn, path, strlen(path));
    if (p.has_query) {
        target[tn++] = '?';
        append_escaped(target, &tn, p.query, p.query_len);
    }
    u->path = path;
    u->target = target;
    return 0;
}

void url_free(fetch_url_t *u)
{
    free(u->path);
    free(u->target);
    u->path = u->target = NULL;
}

void url_host_header(const fetch_url_t *u, char *buf, size_t len)
{
    const char *l = u->ipv6 ? "[" : "", *r = u->ipv6 ? "]" : "";
    if (u->port == 80)
        snprintf(buf, len, "%s%s%s", l, u->host, r);
    else
        snprintf(buf, len, "%s%s%s:%u", l, u->host, r, (unsigned)u->port);
}

/* Appends src[0..len) to dst at *n (dst has room: sized by the caller). */
static void put(char *dst, size_t *n, const char *src, size_t len)
{
    if (len)                       /* an absent part is (NULL, 0): no memcpy from NULL */
        memcpy(dst + *n, src, len);
    *n += len;
    dst[*n] = '\0';
}

char *url_resolve(const char *base, const char *ref)
{
    url_parts_t b, r;
    split(base, &b);
    split(ref, &r);
    size_t blen = strlen(base), rlen = strlen(ref);
    if (blen > URL_MAX || rlen > URL_MAX)
        return NULL;
    char *out = malloc(blen + rlen + 8), *path = malloc(blen + rlen + 4);
    if (!out || !path) {
        free(out);
        free(path);
        return NULL;
    }
    const url_parts_t *auth = r.has_scheme || r.has_auth ? &r : &b;
    const url_parts_t *query = &r;
    size_t pn = 0;
    path[0] = '\0';
    if (r.has_scheme || r.has_auth || (r.path_len && r.path[0] == '/')) {
        put(path, &pn, r.path, r.path_len);
    } else if (r.path_len == 0) {
        put(path, &pn, b.path, b.path_len);
        if (!r.has_query)
            query = &b;
    } else {                       /* merge: the base path up to its last '/' */
        const char *slash = NULL;
        for (const char *c = b.path; c < b.path + b.path_len; c++)
            if (*c == '/')
                slash = c;
        if (b.has_auth && b.path_len == 0)
            put(path, &pn, "/", 1);
        else if (slash)
            put(path, &pn, b.path, (size_t)(slash - b.path) + 1);
        put(path, &pn, r.path, r.path_len);
    }
    url_remove_dot_segments(path);
    size_t n = 0;
    out[0] = '\0';
    const url_parts_t *scheme = r.has_scheme ? &r : &b;
    put(out, &n, scheme->scheme, scheme->scheme_len);
    put(out, &n, ":", 1);
    if (auth->has_auth) {
        put(out, &n, "//", 2);
        put(out, &n, auth->auth, auth->auth_len);
    }
    put(out, &n, path, strlen(path));
    if (query->has_query) {
        put(out, &n, "?", 1);
        put(out, &n, query->query, query->query_len);
    }
    free(path);
    return out;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

void url_file_name(const char *path, char *out, size_t len)
{
    const char *seg = strrchr(path, '/');
    seg = seg ? seg + 1 : path;
    size_t n = 0;
    for (const char *c = seg; *c && n + 1 < len; c++) {
        unsigned char ch = (unsigned char)*c;
        if (ch == '%' && hexval(c[1]) >= 0 && hexval(c[2]) >= 0) {
            ch = (unsigned char)(hexval(c[1]) * 16 + hexval(c[2]));
            c += 2;
        }
        if (ch < 0x20 || ch == 0x7f || ch == '/' || (n == 0 && ch == '-'))
            ch = '_';
        out[n++] = (char)ch;
    }
    out[n] = '\0';
    if (n == 0 || strcmp(out, ".") == 0 || strcmp(out, "..") == 0)
        snprintf(out, len, "index.html");
}
