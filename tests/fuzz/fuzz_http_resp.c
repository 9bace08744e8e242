/* libFuzzer harness for iop-fetch's response parser (apps/fetch/http_resp.c), the
 * part of iop-fetch that reads what a server sends. The first input byte picks the
 * request method (HEAD or GET) and how the rest arrives; the rest is the response.
 *
 * The property checked is that segmentation never matters: the response is parsed
 * as one read, as reads of sizes drawn from the input, and (for short inputs) a
 * byte at a time, the way iop-fetch drives the parser (unused bytes stay, more are
 * appended), and every way must give the same outcome: status, framing, body bytes
 * (a hash of them), bytes left over, error or not. A parser whose answer depends on
 * where TCP cut the stream could be steered by a middlebox into reading a body as
 * a response. Also: every span lies inside the buffer given; a body never exceeds
 * its Content-Length; the reason phrase has no control characters; a Location
 * resolved against the request's URL gives a request line with nothing a server
 * would read as a line end or a separator.
 * Built with clang -fsanitize=fuzzer (run-fuzz.sh) and by gcc with replay_main.c. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "http_resp.h"
#include "url.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { END_DONE = 1, END_ERROR, END_EOF_OK, END_EOF_SHORT, END_EOF_IN_HEAD };

typedef struct outcome {
    int end, status, minor, body, keep_alive;
    unsigned informational;
    uint64_t content_length, body_bytes, hash, left;
} outcome_t;

/* Read sizes: seed 0 = one read of everything, 1 = a byte at a time, else drawn. */
static size_t next_read(uint32_t *seed, size_t left)
{
    size_t n;
    if (*seed == 0)
        n = left;
    else if (*seed == 1)
        n = 1;
    else {
        *seed = *seed * 1103515245u + 12345u;
        n = 1 + (*seed >> 16) % 64;
    }
    return n < left ? n : left;
}

static void check_location(const char *loc)
{
    char *abs = url_resolve("http://fetch.example:8080/dir/page.html?q=1", loc);
    if (!abs)
        return;
    fetch_url_t u;
    char err[160];
    if (url_parse(abs, &u, err, sizeof err) == 0) {
        for (const char *c = u.target; *c; c++)
            CHECK((unsigned char)*c > 0x20 && (unsigned char)*c < 0x7f);
        CHECK(u.target[0] == '/' && u.host[0]);
        url_free(&u);
    }
    free(abs);
}

static void parse(const uint8_t *in, size_t size, int head_request, uint32_t seed, outcome_t *o)
{
    http_resp_t r;
    http_resp_init(&r, head_request);
    memset(o, 0, sizeof *o);
    o->hash = 1469598103934665603ull;
    size_t rpos = 0, wpos = 0;     /* the caller's buffer is in[rpos..wpos) */
    int in_body = 0;
    for (;;) {
        const char *buf = (const char *)in + rpos;
        size_t len = wpos - rpos, used = 0;
        int res;
        if (!in_body) {
            res = http_resp_head(&r, buf, len, &used);
            CHECK(used <= len);
            rpos += used;
            if (res == 1) {
                CHECK(r.status >= 200 && r.status <= 999 && r.minor >= 0 && r.minor <= 9);
                for (const char *c = r.reason; *c; c++)
                    CHECK((unsigned char)*c >= 0x20 && *c != 0x7f);
                if (r.location)
                    check_location(r.location);
                in_body = 1;
                continue;
            }
        } else {
            const char *d = NULL;
            size_t dlen = 0;
            res = http_resp_body(&r, buf, len, &used, &d, &dlen);
            CHECK(used <= len && dlen <= used);
            CHECK(dlen == 0 || (d >= buf && d + dlen <= buf + len));
            for (size_t i = 0; i < dlen; i++)
                o->hash = (o->hash ^ (uint8_t)d[i]) * 1099511628211ull;
            rpos += used;
            if (r.body == HTTP_BODY_LENGTH)
                CHECK(r.body_bytes <= r.content_length);
            if (res == 1) {
                if (r.body == HTTP_BODY_LENGTH)
                    CHECK(r.body_bytes == r.content_length);
                o->end = END_DONE;
                break;
            }
            if (res == 0 && used > 0)
                continue;
        }
        if (res < 0) {
            CHECK(r.err[0]);
            o->end = END_ERROR;
            break;
        }
        if (wpos == size) {        /* the server closed the connection */
            if (!in_body)
                o->end = END_EOF_IN_HEAD;
            else
                o->end = http_resp_eof(&r) == 1 ? END_EOF_OK : END_EOF_SHORT;
            break;
        }
        wpos += next_read(&seed, size - wpos);
    }
    o->status = r.status;
    o->minor = r.minor;
    o->body = in_body ? (int)r.body : -1;
    o->keep_alive = in_body ? r.keep_alive : -1;
    o->informational = r.informational;
    o->content_length = in_body ? r.content_length : 0;
    o->body_bytes = r.body_bytes;
    o->left = o->end == END_DONE ? size - rpos : 0;
    if (o->end == END_ERROR)   /* how far it got before the error may differ */
        o->status = o->minor = o->body = o->keep_alive = 0, o->informational = 0,
        o->content_length = o->body_bytes = o->hash = 0;
    http_resp_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int head_request = data[0] & 1;
    uint32_t seed = (uint32_t)data[0] * 2654435761u | 2;
    data++, size--;

    outcome_t whole, pieces;
    parse(data, size, head_request, 0, &whole);
    parse(data, size, head_request, seed, &pieces);
    CHECK(memcmp(&whole, &pieces, sizeof whole) == 0);
    if (size <= 512) {
        outcome_t bytes;
        parse(data, size, head_request, 1, &bytes);
        CHECK(memcmp(&whole, &bytes, sizeof whole) == 0);
    }
    return 0;
}
