/* iop-fetch's URL and response parsers, driven directly: RFC 3986 reference
 * resolution, file names, and HTTP responses fed whole and in every small piece
 * size (the parser must not care where the reads split). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_resp.h"
#include "url.h"

/* ---- URLs --------------------------------------------------------------------- */

static void test_url_parse(void **state)
{
    (void)state;
    fetch_url_t u;
    char err[160];
    assert_int_equal(url_parse("http://Example.COM/a/b?q=1#frag", &u, err, sizeof err), 0);
    assert_string_equal(u.host, "example.com");
    assert_int_equal(u.port, 80);
    assert_int_equal(u.ipv6, 0);
    assert_string_equal(u.target, "/a/b?q=1");
    assert_string_equal(u.path, "/a/b");
    url_free(&u);

    assert_int_equal(url_parse("HTTP://[::1]:8080", &u, err, sizeof err), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.ipv6, 1);
    assert_int_equal(u.port, 8080);
    assert_string_equal(u.target, "/");
    char host[300];
    url_host_header(&u, host, sizeof host);
    assert_string_equal(host, "[::1]:8080");
    url_free(&u);

    /* one spelling per IPv6 address: the pool keys hosts by it */
    assert_int_equal(url_parse("http://[0:0:0:0:0:0:0:1]:8080/", &u, err, sizeof err), 0);
    assert_string_equal(u.host, "::1");
    url_free(&u);
    assert_int_equal(url_parse("http://[FE80:0::00AB]/", &u, err, sizeof err), 0);
    assert_string_equal(u.host, "fe80::ab");
    url_host_header(&u, host, sizeof host);
    assert_string_equal(host, "[fe80::ab]");
    url_free(&u);

    /* dot segments removed, bytes a request line cannot carry escaped */
    assert_int_equal(url_parse("http://h:81/a/./b/../c d\x01\"?x y", &u, err, sizeof err), 0);
    assert_string_equal(u.target, "/a/c%20d%01%22?x%20y");
    url_host_header(&u, host, sizeof host);
    assert_string_equal(host, "h:81");
    url_free(&u);

    assert_int_equal(url_parse("http://h/..", &u, err, sizeof err), 0);
    assert_string_equal(u.target, "/");
    url_free(&u);
}

static void expect_url_error(const char *url, const char *want)
{
    fetch_url_t u;
    char err[160] = "";
    int r = url_parse(url, &u, err, sizeof err);
    if (r == 0)
        url_free(&u);
    assert_int_equal(r, -1);
    if (!strstr(err, want))
        fail_msg("'%s': error '%s' does not say '%s'", url, err, want);
}

static void test_url_errors(void **state)
{
    (void)state;
    expect_url_error("https://example.com/", "https is not supported");
    expect_url_error("HTTPS://example.com/", "https is not supported");
    expect_url_error("ftp://example.com/", "unsupported scheme 'ftp'");
    expect_url_error("example.com/x", "not an http:// URL");
    expect_url_error("", "empty URL");
    expect_url_error("http:/x", "expected '//'");
    expect_url_error("http:///x", "no host");
    expect_url_error("http://user:pw@h/", "not supported");
    expect_url_error("http://h:0/", "port 0");
    expect_url_error("http://h:65536/", "bad port");
    expect_url_error("http://h:8x/", "bad port");
    expect_url_error("http://[::1/", "missing ']'");
    expect_url_error("http://[nope]/", "not an IPv6 address");
    expect_url_error("http://[::1]x/", "unexpected text");
    expect_url_error("http://a b/", "invalid character");
}

/* RFC 3986 section 5.4: the normal and abnormal examples. */
static void test_url_resolve(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        { "g", "http://a/b/c/g" }, { "./g", "http://a/b/c/g" }, { "g/", "http://a/b/c/g/" },
        { "/g", "http://a/g" }, { "//g", "http://g" }, { "?y", "http://a/b/c/d;p?y" },
        { "g?y", "http://a/b/c/g?y" }, { "#s", "http://a/b/c/d;p?q" },
        { "g#s", "http://a/b/c/g" }, { "g?y#s", "http://a/b/c/g?y" },
        { ";x", "http://a/b/c/;x" }, { "g;x", "http://a/b/c/g;x" }, { "", "http://a/b/c/d;p?q" },
        { ".", "http://a/b/c/" }, { "./", "http://a/b/c/" }, { "..", "http://a/b/" },
        { "../", "http://a/b/" }, { "../g", "http://a/b/g" }, { "../..", "http://a/" },
        { "../../", "http://a/" }, { "../../g", "http://a/g" },
        { "../../../g", "http://a/g" }, { "../../../../g", "http://a/g" },
        { "/./g", "http://a/g" }, { "/../g", "http://a/g" }, { "g.", "http://a/b/c/g." },
        { ".g", "http://a/b/c/.g" }, { "g..", "http://a/b/c/g.." }, { "..g", "http://a/b/c/..g" },
        { "./../g", "http://a/b/g" }, { "./g/.", "http://a/b/c/g/" },
        { "g/./h", "http://a/b/c/g/h" }, { "g/../h", "http://a/b/c/h" },
        { "g;x=1/./y", "http://a/b/c/g;x=1/y" }, { "g;x=1/../y", "http://a/b/c/y" },
        { "g?y/./x", "http://a/b/c/g?y/./x" }, { "http://x:81/p/../q", "http://x:81/q" },
        { "https://s/", "https://s/" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *r = url_resolve("http://a/b/c/d;p?q", cases[i][0]);
        assert_non_null(r);
        if (strcmp(r, cases[i][1]) != 0)
            fail_msg("'%s': got '%s', want '%s'", cases[i][0], r, cases[i][1]);
        free(r);
    }
    char *r = url_resolve("http://h:8080", "x");   /* base with an empty path */
    assert_string_equal(r, "http://h:8080/x");
    free(r);
}

static void test_url_file_name(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        { "/", "index.html" }, { "/a/b.txt", "b.txt" }, { "/a/", "index.html" },
        { "/a%20b", "a b" }, { "/x%2Fy", "x_y" }, { "/-rf", "_rf" }, { "/..", "index.html" },
        { "/%0a", "_" }, { "/100%", "100%" }, { "/%41%4a", "AJ" },
    };
    char name[64];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        url_file_name(cases[i][0], name, sizeof name);
        if (strcmp(name, cases[i][1]) != 0)
            fail_msg("'%s': got '%s', want '%s'", cases[i][0], name, cases[i][1]);
    }
    char longpath[300] = "/";
    memset(longpath + 1, 'x', 250);
    url_file_name(longpath, name, sizeof name);
    assert_int_equal(strlen(name), sizeof name - 1);
}

/* ---- responses ------------------------------------------------------------------ */

typedef struct parsed {
    http_resp_t r;
    char body[4096];
    size_t body_len;
    size_t left;              /* bytes after the response */
    int result;               /* 1 complete, -1 error */
} parsed_t;

/* Feeds resp in pieces of at most `piece` bytes (0 = all at once), as a connection
 * would deliver them; at the end of input, tells the parser about the EOF when
 * eof is set. */
static void feed(parsed_t *p, const char *resp, size_t piece, int head_request, int eof)
{
    size_t total = strlen(resp), avail = 0, pos = 0;   /* resp[pos..avail) is buffered */
    memset(p, 0, sizeof *p);
    http_resp_init(&p->r, head_request);
    int in_body = 0;
    for (;;) {
        int r;
        size_t used = 0;
        if (!in_body) {
            r = http_resp_head(&p->r, resp + pos, avail - pos, &used);
            pos += used;
            if (r == 1)
                in_body = 1;
        } else {
            const char *data;
            size_t dlen;
            r = http_resp_body(&p->r, resp + pos, avail - pos, &used, &data, &dlen);
            assert_true(p->body_len + dlen <= sizeof p->body);
            assert_true(data >= resp + pos && data + dlen <= resp + pos + used);
            memcpy(p->body + p->body_len, data, dlen);
            p->body_len += dlen;
            pos += used;
            if (r == 1)
                break;
        }
        if (r < 0) {
            p->result = -1;
            return;
        }
        if (used > 0 || (r == 1 && in_body))
            continue;
        if (avail == total) {          /* no more input */
            p->result = eof && in_body ? http_resp_eof(&p->r) : 0;
            p->left = 0;
            return;
        }
        avail = piece && avail + piece < total ? avail + piece : total;
    }
    p->result = 1;
    p->left = total - pos;
}

/* Every piece size gives the same result. */
static void parse_all_ways(parsed_t *p, const char *resp, int head_request, int eof)
{
    parsed_t whole;
    feed(&whole, resp, 0, head_request, eof);
    for (size_t piece = 1; piece <= 9; piece++) {
        feed(p, resp, piece, head_request, eof);
        assert_int_equal(p->result, whole.result);
        assert_int_equal(p->body_len, whole.body_len);
        assert_memory_equal(p->body, whole.body, whole.body_len);
        assert_int_equal(p->left, whole.left);
        http_resp_free(&p->r);
    }
    http_resp_free(&whole.r);
    feed(p, resp, 0, head_request, eof);
}

static void test_content_length(void **state)
{
    (void)state;
    parsed_t p;
    parse_all_ways(&p, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhelloNEXT", 0, 0);
    assert_int_equal(p.result, 1);
    assert_int_equal(p.r.status, 200);
    assert_string_equal(p.r.reason, "OK");
    assert_int_equal(p.r.body, HTTP_BODY_LENGTH);
    assert_int_equal(p.r.keep_alive, 1);
    assert_int_equal(p.body_len, 5);
    assert_memory_equal(p.body, "hello", 5);
    assert_int_equal(p.left, 4);       /* "NEXT" belongs to whatever follows */
    http_resp_free(&p.r);

    /* bare LF line ends, a repeated equal length, Connection: close */
    parse_all_ways(&p, "HTTP/1.1 200 OK\nContent-Length: 3, 3\nConnection: Keep-Alive, close\n\nabc", 0, 0);
    assert_int_equal(p.result, 1);
    assert_int_equal(p.r.keep_alive, 0);
    assert_memory_equal(p.body, "abc", 3);
    http_resp_free(&p.r);

    /* truncated: the EOF is an error that says how much came */
    parse_all_ways(&p, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 0, 1);
    assert_int_equal(p.result, -1);
    assert_non_null(strstr(p.r.err, "after 3 of 10"));
    http_resp_free(&p.r);
}

static void test_chunked(void **state)
{
    (void)state;
    parsed_t p;
    parse_all_ways(&p,
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5;name=value;x\r\nhello\r\n"
        "1\nX\n"
        "0a \r\n0123456789\r\n"
        "0\r\nX-Trailer: yes\r\nAnother: one\r\n\r\nrest", 0, 0);
    assert_int_equal(p.result, 1);
    assert_int_equal(p.r.body, HTTP_BODY_CHUNKED);
    assert_int_equal(p.r.keep_alive, 1);
    assert_int_equal(p.body_len, 16);
    assert_memory_equal(p.body, "helloX0123456789", 16);
    assert_int_equal(p.left, 4);
    http_resp_free(&p.r);

    /* chunked wins over Content-Length, and the connection is not reused */
    parse_all_ways(&p, "HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "2\r\nok\r\n0\r\n\r\n", 0, 0);
    assert_int_equal(p.result, 1);
    assert_int_equal(p.r.keep_alive, 0);
    assert_memory_equal(p.body, "ok", 2);
    http_resp_free(&p.r);

    /* closed inside the body */
    parse_all_ways(&p, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", 0, 1);
    assert_int_equal(p.result, -1);
    assert_non_null(strstr(p.r.err, "inside the chunked body"));
    http_resp_free(&p.r);
}

static void test_close_delimited(void **state)
{
    (void)state;
    parsed_t p;
    parse_all_ways(&p, "HTTP/1.0 200 OK\r\nServer: x\r\n\r\nall of it\r\n", 0, 1);
    assert_int_equal(p.result, 1);
    assert_int_equal(p.r.body, HTTP_BODY_CLOSE);
    assert_int_equal(p.r.keep_alive, 0);
    assert_int_equal(p.body_len, 11);
    http_resp_free(&p.r);

    /* HTTP/1.0 persistent only when it says keep-alive */
    parse_all_ways(&p, "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", 0, 0);
    assert_int_equal(p.result, 1);
    assert_int_equal(p.r.keep_alive, 1);
    assert_int_equal(p.body_len, 0);
    http_resp_free(&p.r);
    parse_all_ways(&p, "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 0, 0);
    assert_int_equal(p.r.keep_alive, 0);
    http_resp_free(&p.r);
}

static void test_no_body(void **state)
{
    (void)state;
    parsed_t p;
    /* 1xx are skipped; 204 and 304 have no body whatever they say */
    parse_all_ways(&p, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n"
                       "HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\nHTTP/1.1", 0, 0);
    assert_int_equal(p.result, 1);
    assert_int_equal(p.r.informational, 2);
    assert_int_equal(p.r.status, 204);
    assert_int_equal(p.r.body, HTTP_BODY_NONE);
    assert_int_equal(p.body_len, 0);
    assert_int_equal(p.left, 8);
    http_resp_free(&p.r);

    parse_all_ways(&p, "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 0);
    assert_int_equal(p.result, 1);
    assert_int_equal(p.r.body, HTTP_BODY_NONE);
    http_resp_free(&p.r);

    /* a response to HEAD */
    parse_all_ways(&p, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", 1, 0);
    assert_int_equal(p.result, 1);
    assert_int_equal(p.body_len, 0);
    assert_int_equal(p.r.keep_alive, 1);
    http_resp_free(&p.r);
}

static void test_location(void **state)
{
    (void)state;
    parsed_t p;
    parse_all_ways(&p, "HTTP/1.1 302 Found\r\nLocation:   /next?a=1  \r\nContent-Length: 2\r\n\r\nhi", 0, 0);
    assert_int_equal(p.result, 1);
    assert_int_equal(p.r.status, 302);
    assert_string_equal(p.r.location, "/next?a=1");
    http_resp_free(&p.r);
}

static void expect_malformed(const char *resp, const char *want)
{
    parsed_t p;
    feed(&p, resp, 0, 0, 1);
    if (p.result != -1 || !strstr(p.r.err, want))
        fail_msg("result %d, error '%s', wanted '%s' for:\n%s", p.result, p.r.err, want, resp);
    http_resp_free(&p.r);
    feed(&p, resp, 1, 0, 1);          /* byte by byte: the same verdict */
    assert_int_equal(p.result, -1);
    http_resp_free(&p.r);
}

static void test_malformed(void **state)
{
    (void)state;
    expect_malformed("HTTP/2 200 OK\r\n\r\n", "malformed status line");
    expect_malformed("SSH-2.0-OpenSSH\r\n\r\n", "malformed status line");
    expect_malformed("HTTP/1.1 2x0 OK\r\n\r\n", "malformed status code");
    expect_malformed("HTTP/1.1 200OK\r\n\r\n", "malformed status line");
    expect_malformed("HTTP/1.1 099 Low\r\n\r\n", "invalid status code");
    expect_malformed("HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", "malformed header line");
    expect_malformed("HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\nbody", "empty Content-Length");
    expect_malformed("HTTP/1.1 200 OK\r\nContent-Length: ,\r\n\r\nbody", "empty Content-Length");
    expect_malformed("HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", "malformed header name");
    expect_malformed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", "conflicting");
    expect_malformed("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length");
    expect_malformed("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", "bad Content-Length");
    expect_malformed("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "unsupported Transfer-Encoding 'gzip'");
    expect_malformed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", "chunked twice");
    expect_malformed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size line");
    expect_malformed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 x\r\n", "bad chunk size line");
    expect_malformed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n", "missing CRLF");
    expect_malformed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n", "too large");
    expect_malformed("HTTP/1.1 101 Switching Protocols\r\n\r\n", "101");
    expect_malformed("HTTP/1.1 302 Found\r\nLocation: /a\r\n  /b\r\n\r\n", "folded");

    /* limits: a line, the header count */
    size_t big = HTTP_LINE_MAX + 100;
    char *line = malloc(big + 64);
    snprintf(line, big + 64, "HTTP/1.1 200 OK\r\nX: %0*d\r\n\r\n", (int)big, 0);
    parsed_t p;
    feed(&p, line, 0, 0, 1);
    assert_int_equal(p.result, -1);
    assert_non_null(strstr(p.r.err, "longer than"));
    http_resp_free(&p.r);
    free(line);
    size_t n = 32 + (HTTP_HEADERS_MAX + 1) * 8;
    char *many = malloc(n), *w = many;
    w += sprintf(w, "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i <= HTTP_HEADERS_MAX; i++)
        w += sprintf(w, "A: b\r\n");
    sprintf(w, "\r\n");
    feed(&p, many, 0, 0, 1);
    assert_int_equal(p.result, -1);
    assert_non_null(strstr(p.r.err, "header lines"));
    http_resp_free(&p.r);
    free(many);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_parse),
        cmocka_unit_test(test_url_errors),
        cmocka_unit_test(test_url_resolve),
        cmocka_unit_test(test_url_file_name),
        cmocka_unit_test(test_content_length),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_close_delimited),
        cmocka_unit_test(test_no_body),
        cmocka_unit_test(test_location),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
