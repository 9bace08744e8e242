/* libFuzzer harness for the apps' address and number parsing (apps/common/hostport.c):
 * what ioplexd, iop-client and the echo apps take from their command lines. The
 * first input byte picks the sizes of the host and port buffers; the rest is the
 * text. Properties:
 *  - a split "HOST:PORT" puts back together into exactly the text it came from
 *    ("[HOST]:PORT" when the host holds a ':'), with a port of digits up to 65535,
 *    and fits the buffers it was given (exact-size copies: ASan sees overflows);
 *  - a refusal says why, in a terminated string;
 *  - a number parse_u64 accepts prints back as the text without its leading zeros,
 *    and parse_seconds gives a finite number within its bounds;
 *  - an address formatted for printing splits back into the same address and port.
 * Built with clang -fsanitize=fuzzer (run-fuzz.sh) and by gcc with replay_main.c. */
#include <arpa/inet.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "hostport.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_split(const char *s, size_t hostlen, size_t portlen)
{
    char *host = malloc(hostlen), *port = malloc(portlen), err[200];
    CHECK(host && port);
    err[0] = '\0';
    if (iop_app_split_hostport(s, host, hostlen, port, portlen, err, sizeof err) < 0) {
        CHECK(err[0] && memchr(err, '\0', sizeof err));
        free(host);
        free(port);
        return;
    }
    CHECK(strlen(host) < hostlen && strlen(port) < portlen);
    uint64_t num;
    CHECK(iop_app_parse_u64(port, 0, 65535, &num) == 0);
    int bracket = strchr(host, ':') != NULL;
    CHECK(!bracket || (host[0] && !strchr(host, ']')));
    size_t n = strlen(host) + strlen(port) + 4;
    char *back = malloc(n);
    CHECK(back);
    snprintf(back, n, bracket ? "[%s]:%s" : "%s:%s", host, port);
    CHECK(strcmp(back, s) == 0);
    free(back);
    free(host);
    free(port);
}

static void check_numbers(const char *s)
{
    uint64_t v;
    if (iop_app_parse_u64(s, 0, UINT64_MAX, &v) == 0) {
        char text[24];
        snprintf(text, sizeof text, "%" PRIu64, v);
        const char *digits = s;
        while (digits[0] == '0' && digits[1])
            digits++;
        CHECK(strcmp(text, digits) == 0);
        uint64_t w;
        CHECK(iop_app_parse_u64(s, v, v, &w) == 0 && w == v);
        CHECK(v == 0 || iop_app_parse_u64(s, 0, v - 1, &w) < 0);
    }
    double d;
    if (iop_app_parse_seconds(s, 3600.0, &d) == 0)
        CHECK(isfinite(d) && d >= 0.0 && d <= 3600.0);
}

/* The bytes as an IPv4 or IPv6 address and port: printed, then split back. */
static void check_format(const uint8_t *data, size_t size)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (size >= 1 + 4 + 2 && (data[0] & 1)) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, data + 1, 4);
        memcpy(&in->sin_port, data + 5, 2);
        len = sizeof *in;
    } else if (size >= 1 + 16 + 2) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_addr, data + 1, 16);
        memcpy(&in6->sin6_port, data + 17, 2);
        in6->sin6_scope_id = data[0] >> 4;     /* a zone now and then (1 is lo) */
        len = sizeof *in6;
    } else {
        return;
    }
    char text[128], host[128], port[16], err[200];
    iop_app_format_addr((struct sockaddr *)&ss, len, text, sizeof text);
    CHECK(iop_app_split_hostport(text, host, sizeof host, port, sizeof port, err, sizeof err) == 0);
    uint64_t p;
    CHECK(iop_app_parse_u64(port, 0, 65535, &p) == 0);
    unsigned char addr[16];
    char *zone = strchr(host, '%');
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        CHECK(p == ntohs(in->sin_port) && !zone);
        CHECK(inet_pton(AF_INET, host, addr) == 1 && memcmp(addr, &in->sin_addr, 4) == 0);
    } else {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        CHECK(p == ntohs(in6->sin6_port) && !zone == !in6->sin6_scope_id);
        if (zone)
            *zone = '\0';
        CHECK(inet_pton(AF_INET6, host, addr) == 1 && memcmp(addr, &in6->sin6_addr, 16) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    check_format(data, size);
    size_t hostlen = 1 + (data[0] & 15) * 17, portlen = 1 + (data[0] >> 4);
    char *s = malloc(size);
    CHECK(s);
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    if (strlen(s) == size - 1) {   /* a C string: no NUL inside */
        check_split(s, hostlen, portlen);
        check_split(s, 256, 16);   /* iop_app_resolve's sizes */
        check_numbers(s);
    }
    free(s);
    return 0;
}
