/* libFuzzer harness for the http request parser (plugins/http/http_parse.c) and
 * what the service feeds it: head detection, the parse, path decoding, Range and
 * dates. It checks properties, not just crashes:
 *  - http_head_end and http_parse_request agree on where a head ends;
 *  - a prefix of a head is never accepted; every string points into the input;
 *  - a decoded path never holds "..", ".", "//", a backslash or a NUL;
 *  - a range lies inside the file; a date formats and parses back to itself.
 * Built with clang -fsanitize=fuzzer (run-fuzz.sh) and by gcc with replay_main.c. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "http_date.h"
#include "http_parse.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int inside(http_str_t s, const char *b, size_t n)
{
    return !s.p || (s.p >= b && s.p + s.n <= b + n);
}

static void check_path(http_str_t path)
{
    static char out[HTTP_MAX_TARGET + 2];
    int n = http_decode_path(path.p, path.n, out, sizeof out);
    if (n < 0) {
        CHECK(n == -400 || n == -414);
        return;
    }
    CHECK(out[0] == '/' && strlen(out) == (size_t)n && !strchr(out, '\\'));
    CHECK(!strstr(out, "//") && !strstr(out, "/./") && !strstr(out, "/../"));
    CHECK(strcmp(out, "/.") != 0 && strcmp(out, "/..") != 0);
    CHECK(!(n >= 2 && strcmp(out + n - 2, "/.") == 0) && !(n >= 3 && strcmp(out + n - 3, "/..") == 0));
}

static void check_range(http_str_t range)
{
    static const uint64_t sizes[] = { 0, 1, 11, 5u << 20, UINT64_MAX };
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        uint64_t a = 0, b = 0;
        if (http_parse_range(range.p, range.n, sizes[i], &a, &b) == HTTP_RANGE_OK)
            CHECK(a <= b && b < sizes[i]);
    }
}

static void check_date(http_str_t d)
{
    int64_t t, t2;
    if (!d.p || http_parse_date(d.p, d.n, &t) < 0)
        return;
    char text[HTTP_DATE_LEN + 1];
    if (t >= 0 && t < 253402300800LL) {    /* years 1970 .. 9999 */
        http_format_date(t, text);
        CHECK(http_parse_date(text, HTTP_DATE_LEN, &t2) == 0 && t2 == t);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *b = (const char *)data;
    size_t skip = http_skip_empty_lines(b, size);
    CHECK(skip <= size);
    size_t scan = 0;
    size_t head = http_head_end(b + skip, size - skip, &scan);
    CHECK(head <= size - skip);

    http_request_t rq;
    int whole = http_parse_request(b, size, &rq);
    if (whole > 0)
        CHECK(head && (size_t)whole == skip + head);   /* both find the same end */
    if (!head) {
        CHECK(whole <= 0);
        return 0;
    }
    /* The head alone, as the service passes it; a prefix never succeeds. */
    int r = http_parse_request(b, skip + head, &rq);
    CHECK(r < 0 || (size_t)r == skip + head);
    if (skip + head > 1)
        CHECK(http_parse_request(b, skip + head - 1, &rq) <= 0);
    if (r < 0) {
        CHECK(r == -400 || r == -414 || r == -431 || r == -505);
        return 0;
    }
    size_t n = skip + head;
    CHECK(inside(rq.method_name, b, n) && inside(rq.target, b, n) && inside(rq.query, b, n));
    CHECK(inside(rq.host, b, n) && inside(rq.range, b, n) && inside(rq.if_range, b, n));
    CHECK(inside(rq.if_modified_since, b, n));
    CHECK(rq.path.n >= 1 && (rq.path.p[0] == '/' || rq.path.p[0] == '*'));
    CHECK(rq.target.n <= HTTP_MAX_TARGET && rq.nheaders <= HTTP_MAX_HEADERS);
    CHECK(rq.minor == 0 || rq.minor == 1);
    CHECK(!(rq.transfer_encoding && rq.content_length >= 0));
    if (rq.path.p[0] == '/')
        check_path(rq.path);
    if (rq.range.p)
        check_range(rq.range);
    check_date(rq.if_modified_since);
    return 0;
}
