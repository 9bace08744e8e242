#include "addr_spec.h"

#include <netinet/in.h>
#include <string.h>

/* 0..65535 in decimal, digits only: getaddrinfo's numeric service takes "99999"
 * and keeps its low 16 bits, which would bind a port nobody asked for. */
static int valid_port(const char *p)
{
    unsigned long v = 0;
    if (!*p)
        return 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return 0;
        v = v * 10 + (unsigned long)(*p - '0');
        if (v > 65535)
            return 0;
    }
    return 1;
}

static int copy_part(char *dst, size_t dstlen, const char *src, size_t n)
{
    if (n >= dstlen)
        return -1;
    memcpy(dst, src, n);
    dst[n] = '\0';
    return 0;
}

const char *iop__split_hostport(const char *s, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *host_start = s, *host_end, *colon;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return "expected [IPv6]:PORT";
        host_start = s + 1;
        host_end = close;
        colon = close + 1;
        /* "[]" would mean "any" (or the loopback) without saying so, and brackets
         * around a name or an IPv4 address are a mistake, not a spelling. */
        if (host_end == host_start || !memchr(host_start, ':', (size_t)(host_end - host_start)))
            return "brackets are for an IPv6 address, as in [::1]:PORT";
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return "expected HOST:PORT";
        if (memchr(s, ':', (size_t)(colon - s)))
            return "put an IPv6 address in brackets: [ADDR]:PORT";
        host_end = colon;
    }
    if (!valid_port(colon + 1))
        return "port must be a number from 0 to 65535";
    if (copy_part(host, hostlen, host_start, (size_t)(host_end - host_start)) < 0 ||
        copy_part(port, portlen, colon + 1, strlen(colon + 1)) < 0)
        return "too long";
    return NULL;
}

int iop__unzoned_link_local(const struct sockaddr *sa)
{
    const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)sa;
    return sa->sa_family == AF_INET6 && IN6_IS_ADDR_LINKLOCAL(&v6->sin6_addr) && !v6->sin6_scope_id;
}
