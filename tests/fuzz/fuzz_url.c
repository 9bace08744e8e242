/* libFuzzer harness for iop-fetch's URLs (apps/fetch/url.c): what a user types and
 * what a server's Location header says. The input is a URL, or a base URL and a
 * reference separated by a newline. Properties:
 *  - a parsed URL's request target is "/..." with no byte a request line cannot
 *    carry (nothing a server reads as a separator or a line end), no "." or ".."
 *    segment; its host is a lower-case name or a valid IPv6 literal; the Host
 *    header value built from it carries no separator either;
 *  - the file a URL saves to is one plain name in the output directory: no '/',
 *    not "." or "..", no control character, no leading '-';
 *  - removing dot segments from an absolute path leaves none, and doing it twice
 *    changes nothing;
 *  - a reference resolved against a parsed base parses; an absolute one keeps its
 *    own host.
 * Built with clang -fsanitize=fuzzer (run-fuzz.sh) and by gcc with replay_main.c. */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "url.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int dot_segment(const char *path, size_t end)
{
    for (size_t i = 0; i < end;) {
        size_t j = i + 1;
        while (j < end && path[j] != '/')
            j++;
        size_t n = j - i - 1;      /* the segment after the '/' at i */
        if ((n == 1 && path[i + 1] == '.') || (n == 2 && path[i + 1] == '.' && path[i + 2] == '.'))
            return 1;
        i = j;
    }
    return 0;
}

static void check_file_name(const char *path)
{
    char name[256];
    url_file_name(path, name, sizeof name);
    CHECK(name[0] && name[0] != '-' && !strchr(name, '/'));
    CHECK(strcmp(name, ".") != 0 && strcmp(name, "..") != 0);
    for (const char *c = name; *c; c++)
        CHECK((unsigned char)*c >= 0x20 && *c != 0x7f);
}

static void check_url(const fetch_url_t *u)
{
    const char *t = u->target;
    CHECK(t[0] == '/');
    size_t path_end = strcspn(t, "?");
    for (const char *c = t; *c; c++)
        CHECK((unsigned char)*c > 0x20 && (unsigned char)*c < 0x7f);
    CHECK(!dot_segment(t, path_end));
    CHECK(u->path[0] == '/' && !dot_segment(u->path, strlen(u->path)));
    CHECK(u->host[0] && u->port != 0);
    if (u->ipv6) {
        struct in6_addr a;
        CHECK(inet_pton(AF_INET6, u->host, &a) == 1);
    } else {
        for (const char *c = u->host; *c; c++)
            CHECK((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || strchr("-._~", *c));
    }
    char host[URL_HOST_MAX + 16];
    url_host_header(u, host, sizeof host);
    for (const char *c = host; *c; c++)
        CHECK((unsigned char)*c > 0x20 && (unsigned char)*c < 0x7f && *c != '/' && *c != '@');
    check_file_name(u->path);
}

static void check_dot_segments(const char *s)
{
    size_t n = strlen(s);
    char *once = malloc(n + 2);
    CHECK(once);
    once[0] = '/';                 /* an absolute path, as url_parse gives it */
    memcpy(once + 1, s, n + 1);
    url_remove_dot_segments(once);
    size_t m = strlen(once);
    CHECK(m <= n + 1 && !dot_segment(once, m));
    CHECK(m == 0 || once[0] == '/');
    char *twice = strdup(once);
    CHECK(twice);
    url_remove_dot_segments(twice);
    CHECK(strcmp(once, twice) == 0);
    free(twice);
    free(once);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    CHECK(s);
    memcpy(s, data, size);
    s[size] = '\0';
    if (strlen(s) != size) {       /* a C string: no NUL inside */
        free(s);
        return 0;
    }
    char *ref = strchr(s, '\n');
    if (ref)
        *ref++ = '\0';

    fetch_url_t base;
    char err[160];
    int base_ok = url_parse(s, &base, err, sizeof err) == 0;
    if (base_ok)
        check_url(&base);
    else
        CHECK(err[0]);
    check_file_name(s);
    check_dot_segments(s);

    if (ref && base_ok) {
        fetch_url_t r, abs;
        int ref_abs = url_parse(ref, &r, err, sizeof err) == 0;
        char *joined = url_resolve(s, ref);
        if (joined) {
            if (url_parse(joined, &abs, err, sizeof err) == 0) {
                check_url(&abs);
                if (ref_abs)
                    CHECK(strcmp(abs.host, r.host) == 0 && abs.port == r.port);
                url_free(&abs);
            } else {
                /* Only a reference with a scheme or an authority of its own may
                 * fail (a bad host or port in it; the base's is known good), or
                 * one that makes the URL too long. */
                CHECK(strstr(ref, "//") || strchr(ref, ':') || strlen(joined) > URL_MAX);
            }
            free(joined);
        }
        if (ref_abs)
            url_free(&r);
    }
    if (base_ok)
        url_free(&base);
    free(s);
    return 0;
}
