/* The request parser, path decoding, ranges and dates, called directly. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "http_date.h"
#include "http_parse.h"

static int parse(const char *text, http_request_t *rq)
{
    return http_parse_request(text, strlen(text), rq);
}

static void test_request_fields(void **state)
{
    (void)state;
    const char *t = "GET /a/b%20c?x=1&y HTTP/1.1\r\nHost: example\r\nConnection: Keep-Alive, Upgrade\r\n"
                    "Range: bytes=1-2\r\nIf-Modified-Since:  Sun, 06 Nov 1994 08:49:37 GMT  \r\n"
                    "If-Range: x\r\nX-Other: \t anything \xff\r\n\r\nGET";
    http_request_t rq;
    int n = parse(t, &rq);
    assert_int_equal(n, (int)(strstr(t, "\r\n\r\n") - t) + 4);
    assert_int_equal(rq.method, HTTP_GET);
    assert_int_equal(rq.minor, 1);
    assert_true(rq.path.n == 8 && memcmp(rq.path.p, "/a/b%20c", 8) == 0);
    assert_true(rq.query.n == 5 && memcmp(rq.query.p, "x=1&y", 5) == 0);
    assert_true(rq.host.n == 7 && memcmp(rq.host.p, "example", 7) == 0);
    assert_int_equal(rq.connection, HTTP_CONN_KEEPALIVE);
    assert_true(rq.range.n == 9);
    assert_true(rq.if_modified_since.n == 29);   /* OWS trimmed on both sides */
    assert_int_equal(rq.content_length, -1);
    assert_int_equal(rq.nheaders, 6);
    /* Every pointer lies inside the buffer. */
    assert_true(rq.path.p >= t && rq.path.p + rq.path.n <= t + n);
}

static void test_request_forms(void **state)
{
    (void)state;
    http_request_t rq;
    assert_true(parse("HEAD http://h:80/p?q HTTP/1.0\n\n", &rq) > 0);
    assert_int_equal(rq.method, HTTP_HEAD);
    assert_int_equal(rq.minor, 0);
    assert_true(rq.path.n == 2 && memcmp(rq.path.p, "/p", 2) == 0);
    assert_true(parse("GET HTTP://h HTTP/1.0\r\n\r\n", &rq) > 0);
    assert_true(rq.path.n == 1 && rq.path.p[0] == '/');
    assert_true(parse("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", &rq) > 0);
    assert_int_equal(rq.method, HTTP_OTHER);
    assert_true(parse("get / HTTP/1.0\r\n\r\n", &rq) > 0);
    assert_int_equal(rq.method, HTTP_OTHER);     /* methods are case-sensitive */
    assert_true(parse("\r\n\nGET / HTTP/1.9\r\nHost: h\r\n\r\n", &rq) > 0);
    assert_int_equal(rq.minor, 1);
    assert_true(parse("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\nContent-Length: 7\r\n\r\n", &rq) > 0);
    assert_int_equal(rq.content_length, 7);
    assert_true(parse("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 123456789012345678901234\r\n\r\n", &rq) > 0);
    assert_int_equal(rq.content_length, HTTP_CL_TOO_BIG);
    assert_true(parse("GET / HTTP/1.1\r\nHost:\r\n\r\n", &rq) > 0);   /* empty Host is allowed */
    assert_true(parse("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", &rq) > 0);
    assert_true(parse("GET / HTTP/1.1\r\nHost: a-b.example_x~:80\r\n\r\n", &rq) > 0);
    assert_true(parse("GET / HTTP/1.1\r\nHost: [::ffff:127.0.0.1]\r\n\r\n", &rq) > 0);
    assert_true(parse("GET / HTTP/1.1\r\nHost: [v1.fe:80]:8080\r\n\r\n", &rq) > 0);   /* IPvFuture */
    assert_true(parse("GET / HTTP/1.1\r\nHost: [2001:DB8::A]\r\n\r\n", &rq) > 0);
    assert_true(parse("GET / HTTP/1.1\r\nHost: h:\r\n\r\n", &rq) > 0);   /* port = *DIGIT */
    /* Range is not a list: a second one makes it invalid, and an invalid one is ignored */
    assert_true(parse("GET / HTTP/1.1\r\nHost: h\r\nRange: bytes=0-1\r\nRange: bytes=5-9\r\n\r\n", &rq) > 0);
    uint64_t first, last;
    assert_int_equal(http_parse_range(rq.range.p, rq.range.n, 100, &first, &last), HTTP_RANGE_NONE);
}

static void test_request_errors(void **state)
{
    (void)state;
    static const struct { const char *text; int want; } cases[] = {
        { "GET / HTTP/1.1\r\n\r\n", -400 },                    /* no Host */
        { " GET / HTTP/1.1\r\nHost: h\r\n\r\n", -400 },
        { "GET /  HTTP/1.1\r\nHost: h\r\n\r\n", -400 },
        { "GET / http/1.1\r\nHost: h\r\n\r\n", -400 },
        { "GET / HTTP/1.1 \r\nHost: h\r\n\r\n", -400 },
        { "GET / HTTP/11\r\nHost: h\r\n\r\n", -400 },
        { "GET / HTTP/2.0\r\nHost: h\r\n\r\n", -505 },
        { "GET / HTTP/0.9\r\nHost: h\r\n\r\n", -505 },
        { "GET x HTTP/1.1\r\nHost: h\r\n\r\n", -400 },
        { "GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n", -400 },
        { "GET http:/// HTTP/1.1\r\nHost: h\r\n\r\n", -400 },
        { "GET / HTTP/1.1\r\nHost: h\r\n obs-fold\r\n\r\n", -400 },
        { "GET / HTTP/1.1\r\n Host: h\r\n\r\n", -400 },
        { "GET / HTTP/1.1\r\nHost : h\r\n\r\n", -400 },
        { "GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n", -400 },
        { "GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", -400 },    /* bare CR */
        { "GET / HTTP/1.1\rHost: h\r\n\r\n", -400 },
        { "GET / HTTP/1.1\r\nHost: h\r\nX: a\x01" "b\r\n\r\n", -400 },
        { "GET / HTTP/1.1\r\nHost: h\r\nX: a\x7f\r\n\r\n", -400 },
        { "GET / HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n", -400 },
        { "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", -400 },      /* not a host (RFC 9112 3.2) */
        { "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", -400 },
        { "GET / HTTP/1.1\r\nHost: a\"b\r\n\r\n", -400 },
        { "GET / HTTP/1.1\r\nHost: ::1\r\n\r\n", -400 },        /* IPv6 without brackets */
        { "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", -400 },
        { "GET / HTTP/1.1\r\nHost: []:80\r\n\r\n", -400 },
        { "GET / HTTP/1.1\r\nHost: [::1]:x\r\n\r\n", -400 },    /* a port is digits */
        { "GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", -400 },
        { "GET / HTTP/1.1\r\nHost: [localhost]\r\n\r\n", -400 },  /* brackets hold an IP-literal */
        { "GET / HTTP/1.1\r\nHost: [127.0.0.1]:80\r\n\r\n", -400 },
        { "GET / HTTP/1.1\r\nHost: [:::::]\r\n\r\n", -400 },
        { "GET / HTTP/1.1\r\nHost: [fe80::1%25eth0]\r\n\r\n", -400 },
        { "GET / HTTP/1.1\r\nHost: [v1.]\r\n\r\n", -400 },
        { "GET / HTTP/1.1\r\nHost: [vx.a]\r\n\r\n", -400 },
        { "GET / HTTP/1.1\r\nHost: h:8:0\r\n\r\n", -400 },
        { "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", -400 },
        { "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 1\r\n\r\n", -400 },
        { "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", -400 },
        { "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", -400 },
        { "GET /\x80 HTTP/1.1\r\nHost: h\r\n\r\n", -400 },
        { "G\"T / HTTP/1.1\r\nHost: h\r\n\r\n", -400 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        http_request_t rq;
        int r = parse(cases[i].text, &rq);
        if (r != cases[i].want)
            fail_msg("case %zu: %d, want %d", i, r, cases[i].want);
    }
}

static void test_incomplete_and_limits(void **state)
{
    (void)state;
    const char *t = "GET /x HTTP/1.1\r\nHost: h\r\n\r\n";
    size_t n = strlen(t);
    http_request_t rq;
    size_t scan = 0;
    for (size_t k = 0; k < n; k++) {
        assert_int_equal(http_parse_request(t, k, &rq), 0);   /* no error on any prefix */
        assert_int_equal(http_head_end(t, k, &scan), 0);      /* scanned incrementally */
    }
    assert_int_equal(http_head_end(t, n, &scan), n);
    assert_int_equal(http_parse_request(t, n, &rq), (int)n);
    /* 414 as soon as the target is too long, complete or not. */
    static char big[HTTP_MAX_TARGET + 64];
    memcpy(big, "GET /", 5);
    memset(big + 5, 'a', sizeof big - 5);
    assert_int_equal(http_parse_request(big, sizeof big, &rq), -414);
    /* 431 past HTTP_MAX_HEADERS lines. */
    static char many[8192];
    int k = sprintf(many, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < HTTP_MAX_HEADERS; i++)
        k += sprintf(many + k, "Host%d: h\r\n", i);
    assert_int_equal(http_parse_request(many, (size_t)k, &rq), 0);
    k += sprintf(many + k, "One-More: h\r\n");
    assert_int_equal(http_parse_request(many, (size_t)k, &rq), -431);
    /* Leading empty lines and a bare-LF head end. */
    assert_int_equal(http_skip_empty_lines("\r\n\n\r\nG", 6), 5);
    assert_int_equal(http_skip_empty_lines("\r", 1), 0);
    scan = 0;
    assert_int_equal(http_head_end("GET / HTTP/1.0\n\nrest", 20, &scan), 16);
}

static void test_decode_path(void **state)
{
    (void)state;
    char out[64];
    static const struct { const char *in, *out; } ok[] = {
        { "/", "/" }, { "/a%20b", "/a b" }, { "//a///b/", "/a/b/" }, { "/%41%6a", "/Aj" },
        { "/a.b/..c/...", "/a.b/..c/..." }, { "/%25", "/%" },
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        int n = http_decode_path(ok[i].in, strlen(ok[i].in), out, sizeof out);
        assert_int_equal(n, (int)strlen(ok[i].out));
        assert_string_equal(out, ok[i].out);
    }
    static const char *bad[] = {
        "", "a", "/..", "/../x", "/a/../b", "/.", "/./a", "/%2e%2e/x", "/%2E./x", "/a%2fb",
        "/a%2F..", "/a\\b", "/a%5cb", "/a%00", "/%", "/%4", "/%g0",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (http_decode_path(bad[i], strlen(bad[i]), out, sizeof out) != -400)
            fail_msg("'%s' accepted", bad[i]);
    assert_int_equal(http_decode_path("/abcdef", 7, out, 7), -414);
    assert_int_equal(http_decode_path("/abcdef", 7, out, 8), 7);
}

static void test_range(void **state)
{
    (void)state;
    static const struct { const char *h; uint64_t size; http_range_t want; uint64_t a, b; } cases[] = {
        { "bytes=0-0", 10, HTTP_RANGE_OK, 0, 0 },     { "bytes=2-", 10, HTTP_RANGE_OK, 2, 9 },
        { "bytes=-3", 10, HTTP_RANGE_OK, 7, 9 },      { "bytes=-30", 10, HTTP_RANGE_OK, 0, 9 },
        { "BYTES=1-99999999999999999999999", 10, HTTP_RANGE_OK, 1, 9 },
        { "bytes=10-", 10, HTTP_RANGE_UNSATISFIABLE, 0, 0 },
        { "bytes=99999999999999999999999-", 10, HTTP_RANGE_UNSATISFIABLE, 0, 0 },
        { "bytes=-0", 10, HTTP_RANGE_UNSATISFIABLE, 0, 0 },
        { "bytes=-5", 0, HTTP_RANGE_NONE, 0, 0 },      /* satisfiable, but empty: 200 */
        { "bytes=0-", 0, HTTP_RANGE_UNSATISFIABLE, 0, 0 },
        { "bytes=1-2,4-5", 10, HTTP_RANGE_NONE, 0, 0 }, { "bytes=5-1", 10, HTTP_RANGE_NONE, 0, 0 },
        { "bytes=-", 10, HTTP_RANGE_NONE, 0, 0 },      { "bytes=a-b", 10, HTTP_RANGE_NONE, 0, 0 },
        { "bytes 1-2", 10, HTTP_RANGE_NONE, 0, 0 },    { "bytes=1-2x", 10, HTTP_RANGE_NONE, 0, 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint64_t a = 0, b = 0;
        http_range_t r = http_parse_range(cases[i].h, strlen(cases[i].h), cases[i].size, &a, &b);
        if (r != cases[i].want || (r == HTTP_RANGE_OK && (a != cases[i].a || b != cases[i].b)))
            fail_msg("%s: %d %llu-%llu", cases[i].h, r, (unsigned long long)a, (unsigned long long)b);
    }
}

static void test_dates(void **state)
{
    (void)state;
    char d[HTTP_DATE_LEN + 1];
    http_format_date(784111777, d);
    assert_string_equal(d, "Sun, 06 Nov 1994 08:49:37 GMT");
    http_format_date(0, d);
    assert_string_equal(d, "Thu, 01 Jan 1970 00:00:00 GMT");
    http_format_date(951782400, d);                   /* a leap day */
    assert_string_equal(d, "Tue, 29 Feb 2000 00:00:00 GMT");
    /* Any int64 (a file's mtime): clamped whole to the format's years, no overflow
     * (INT64_MIN printed hour 39 of year 9999). */
    http_format_date(INT64_MIN, d);
    assert_string_equal(d, "Sat, 01 Jan 0000 00:00:00 GMT");
    http_format_date(INT64_MAX, d);
    assert_string_equal(d, "Fri, 31 Dec 9999 23:59:59 GMT");
    int64_t t;
    assert_int_equal(http_parse_date("Sun, 06 Nov 1994 08:49:37 GMT", 29, &t), 0);
    assert_int_equal(t, 784111777);
    assert_int_equal(http_parse_date("Sunday, 06-Nov-94 08:49:37 GMT", 30, &t), 0);
    assert_int_equal(t, 784111777);
    assert_int_equal(http_parse_date("Sun Nov  6 08:49:37 1994", 24, &t), 0);
    assert_int_equal(t, 784111777);
    /* Round trips over a few centuries. */
    for (int64_t x = -2208988800LL; x < 7258118400LL; x += 86400LL * 37 + 3607) {
        http_format_date(x, d);
        assert_int_equal(http_parse_date(d, HTTP_DATE_LEN, &t), 0);
        assert_int_equal(t, x);
    }
    static const char *bad[] = { "", "Sun", "Sun, 06 Nov 1994 08:49:37", "Sun, 6 Nov 1994 08:49:37 GMT",
                                 "Sun, 06 Foo 1994 08:49:37 GMT", "Sun, 06 Nov 1994 24:00:00 GMT",
                                 "Sun, 06 Nov 1994 08:49:37 GMT ", "Sun, 00 Nov 1994 08:49:37 GMT",
                                 /* days a month does not have (31 Feb was 2 Mar) */
                                 "Mon, 31 Feb 2020 00:00:00 GMT", "Sat, 29 Feb 2100 00:00:00 GMT",
                                 "Sun, 31 Nov 1994 08:49:37 GMT", "Thu Feb 30 08:49:37 1994" };
    assert_int_equal(http_parse_date("Sat, 29 Feb 2020 00:00:00 GMT", 29, &t), 0);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(http_parse_date(bad[i], strlen(bad[i]), &t), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_fields),
        cmocka_unit_test(test_request_forms),
        cmocka_unit_test(test_request_errors),
        cmocka_unit_test(test_incomplete_and_limits),
        cmocka_unit_test(test_decode_path),
        cmocka_unit_test(test_range),
        cmocka_unit_test(test_dates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
