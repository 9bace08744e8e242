/* Listeners, made by the supervisor before any fork and kept open by it for its
 * whole run. In reuseport mode each address gets one SO_REUSEPORT socket per worker
 * slot; a worker inherits its slot's socket, and so does the worker that replaces it
 * (respawn, rolling restart): connections queued in that socket's backlog wait for
 * the new worker instead of being reset, which closing a reuseport socket would do.
 * In shared mode each address gets one socket that every worker accepts on. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "shard_internal.h"

/* 0..65535 in decimal: getaddrinfo's numeric service takes "99999" and keeps its
 * low 16 bits, which would bind a port nobody asked for. */
static int valid_port(const char *p)
{
    unsigned long v = 0;
    size_t n = 0;
    for (; p[n] >= '0' && p[n] <= '9' && n < 6; n++)
        v = v * 10 + (unsigned long)(p[n] - '0');
    return n > 0 && p[n] == '\0' && v <= 65535;
}

/* Splits "HOST:PORT" / "[V6]:PORT" / "*:PORT" into host (NULL = any IPv4) and port. */
static int split_addr(const char *spec, char *host, size_t hostlen, const char **port)
{
    const char *colon;
    if (spec[0] == '[') {
        const char *end = strchr(spec, ']');
        if (!end || end[1] != ':')
            return -EINVAL;
        if ((size_t)(end - spec - 1) >= hostlen || !memchr(spec + 1, ':', (size_t)(end - spec - 1)))
            return -EINVAL;        /* brackets hold an IPv6 address, never nothing */
        memcpy(host, spec + 1, (size_t)(end - spec - 1));
        host[end - spec - 1] = '\0';
        colon = end + 1;
    } else {
        colon = strrchr(spec, ':');
        if (!colon || (size_t)(colon - spec) >= hostlen)
            return -EINVAL;
        memcpy(host, spec, (size_t)(colon - spec));
        host[colon - spec] = '\0';
        if (strchr(host, ':'))
            return -EINVAL;        /* an IPv6 address needs its brackets */
        if (host[0] == '\0' || strcmp(host, "*") == 0)
            strcpy(host, "0.0.0.0");
    }
    *port = colon + 1;
    return valid_port(*port) ? 0 : -EINVAL;
}

static int resolve(const char *spec, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[256];
    const char *port;
    if (split_addr(spec, host, sizeof host, &port) < 0)
        return iop__fail(-EINVAL, "listen address '%s': expected HOST:PORT, [IPV6]:PORT or *:PORT, "
                         "PORT from 0 to 65535", spec);
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *res = NULL;
    int g = getaddrinfo(host, port, &hints, &res);
    if (g != 0)
        return iop__fail(-EINVAL, "listen address '%s': %s", spec, gai_strerror(g));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    /* IPv6 listeners are v6-only: a v4-mapped address cannot be bound. */
    const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)ss;
    if (ss->ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr))
        return iop__fail(-EINVAL, "listen address '%s': an IPv4-mapped address; listen on its IPv4 "
                         "address instead", spec);
    return 0;
}

static void set_port(struct sockaddr_storage *ss, uint16_t port_be)
{
    if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = port_be;
    else
        ((struct sockaddr_in *)ss)->sin_port = port_be;
}

static uint16_t get_port(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)ss)->sin6_port
                                     : ((const struct sockaddr_in *)ss)->sin_port;
}

/* A stream socket of ss's family bound to ss: SO_REUSEADDR (TIME_WAIT does not stop
 * a restart), SO_REUSEPORT if asked, v6-only for IPv6. The fd, or -errno with the
 * step that failed in *what. */
static int bound_socket(const struct sockaddr_storage *ss, socklen_t len, int reuseport, const char **what)
{
    *what = "socket";
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    *what = "setsockopt";
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
        (!reuseport || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == 0) &&
        (ss->ss_family != AF_INET6 || setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) == 0) &&
        (*what = "bind", bind(fd, (const struct sockaddr *)ss, len) == 0))
        return fd;
    int err = errno;
    close(fd);
    return -err;
}

static int open_one(const char *spec, const struct sockaddr_storage *ss, socklen_t len,
                    int reuseport, int backlog, int *out)
{
    const char *what;
    int fd = bound_socket(ss, len, reuseport, &what);
    if (fd >= 0 && (what = "listen", listen(fd, backlog) == 0)) {
        *out = fd;
        return 0;
    }
    int err = fd < 0 ? -fd : errno;
    if (fd >= 0)
        close(fd);
    return iop__fail(-err, "listen %s: %s: %s", spec, what, strerror(err));
}

/* SO_REUSEPORT lets any socket of this user with the option join a port: another
 * ioplexd, or another service of this one on the same address, would silently share
 * the connections. A plain bind first (no SO_REUSEPORT) fails on a port someone
 * listens on, which is the error to report. */
static int probe_free(const char *spec, const struct sockaddr_storage *ss, socklen_t len)
{
    const char *what;
    int fd = bound_socket(ss, len, 0, &what);
    if (fd < 0)
        return iop__fail(fd, "listen %s: %s: %s%s", spec, what, strerror(-fd),
                         fd == -EADDRINUSE ? " (another socket is bound there)" : "");
    close(fd);
    return 0;
}

int iop__shard_listeners_open(iop__shard_listeners_t *l, const iop_shard_opts_t *o, uint32_t nworkers)
{
    memset(l, 0, sizeof *l);
    uint32_t naddr = 0;
    while (o->listen && o->listen[naddr])
        naddr++;
    l->naddr = naddr;
    l->per_addr = o->listener_mode == IOP_SHARD_SHARED ? 1 : nworkers;
    if (naddr == 0)
        return 0;
    l->fds = iop_malloc((size_t)naddr * l->per_addr * sizeof *l->fds);
    if (!l->fds)
        return iop__fail(-ENOMEM, "iop_shard_run: out of memory for the listeners");
    for (uint32_t i = 0; i < naddr * l->per_addr; i++)
        l->fds[i] = -1;
    int backlog = o->backlog > 0 ? o->backlog : SOMAXCONN;
    int reuseport = o->listener_mode != IOP_SHARD_SHARED;
    for (uint32_t a = 0; a < naddr; a++) {
        struct sockaddr_storage ss;
        socklen_t len = 0;
        int r = resolve(o->listen[a], &ss, &len);
        if (r == 0 && reuseport && get_port(&ss) != 0)
            r = probe_free(o->listen[a], &ss, len);
        /* Socket k listens k-th: the reuseport group's index of worker k's socket. */
        for (uint32_t k = 0; r == 0 && k < l->per_addr; k++) {
            r = open_one(o->listen[a], &ss, len, reuseport, backlog, &l->fds[a * l->per_addr + k]);
            if (r == 0 && k == 0 && get_port(&ss) == 0) {   /* port 0: the others share it */
                struct sockaddr_storage bound;
                socklen_t blen = sizeof bound;
                if (getsockname(l->fds[a * l->per_addr], (struct sockaddr *)&bound, &blen) < 0)
                    r = iop__fail(-errno, "listen %s: getsockname: %s", o->listen[a], strerror(errno));
                else
                    set_port(&ss, get_port(&bound));
            }
        }
        if (r < 0) {
            iop__shard_listeners_close(l);
            return r;
        }
    }
    return 0;
}

void iop__shard_listeners_close(iop__shard_listeners_t *l)
{
    for (uint32_t i = 0; l->fds && i < l->naddr * l->per_addr; i++)
        if (l->fds[i] >= 0) {
            close(l->fds[i]);
            l->fds[i] = -1;
        }
}

int iop__shard_listener_fd(const iop__shard_listeners_t *l, uint32_t a, uint32_t i)
{
    if (!l->fds || a >= l->naddr)
        return -1;
    return l->fds[a * l->per_addr + (l->per_addr == 1 ? 0 : i)];
}
