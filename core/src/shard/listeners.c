/* Listeners, made by the supervisor before any fork and kept open by it for its
 * whole run. Each opts.listen entry gives one address, or with
 * IOP_SHARD_ALL_ADDRESSES every address of its host name. In reuseport mode each
 * address gets one SO_REUSEPORT socket per worker slot; a worker inherits its
 * slot's socket, and so does the worker that replaces it (respawn, rolling
 * restart): connections queued in that socket's backlog wait for the new worker
 * instead of being reset, which closing a reuseport socket would do. In shared
 * mode each address gets one socket that every worker accepts on. */
#include <errno.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "shard_internal.h"
#include "addr/addr_spec.h"

/* Splits spec as the apps do (addr_spec.c); an empty host or "*" is any IPv4 address. */
static const char *split_addr(const char *spec, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *why = iop__split_hostport(spec, host, hostlen, port, portlen);
    if (!why && (host[0] == '\0' || strcmp(host, "*") == 0))
        strcpy(host, "0.0.0.0");
    return why;
}

/* One address to bind: where it came from (an opts.listen index) and where it is. */
typedef struct bind_addr {
    uint32_t entry;
    socklen_t len;
    struct sockaddr_storage ss;
} bind_addr_t;

typedef struct addr_list {
    bind_addr_t *a;
    uint32_t n, cap;
} addr_list_t;

static int addr_list_has(const addr_list_t *l, uint32_t entry, const struct addrinfo *ai)
{
    for (uint32_t i = 0; i < l->n; i++)
        if (l->a[i].entry == entry && l->a[i].len == ai->ai_addrlen &&
            memcmp(&l->a[i].ss, ai->ai_addr, ai->ai_addrlen) == 0)
            return 1;
    return 0;
}

static int addr_list_add(addr_list_t *l, uint32_t entry, const struct addrinfo *ai)
{
    if (l->n == l->cap) {
        uint32_t cap = l->cap ? l->cap * 2 : 8;
        bind_addr_t *a = iop_realloc(l->a, (size_t)cap * sizeof *a);
        if (!a)
            return iop__fail(-ENOMEM, "iop_shard_run: out of memory for the listeners");
        l->a = a;
        l->cap = cap;
    }
    bind_addr_t *b = &l->a[l->n++];
    memset(b, 0, sizeof *b);
    b->entry = entry;
    b->len = ai->ai_addrlen;
    memcpy(&b->ss, ai->ai_addr, ai->ai_addrlen);
    return 0;
}

/* Appends the address of spec (opts.listen[entry]) to l: its first one, or (every)
 * each distinct one getaddrinfo gives: a name in /etc/hosts for both ::1 and
 * 127.0.0.1 gives both, a numeric host its one. */
static int resolve(const char *spec, uint32_t entry, int every, addr_list_t *l)
{
    char host[256], port[16];
    const char *why = split_addr(spec, host, sizeof host, port, sizeof port);
    if (why)
        return iop__fail(-EINVAL, "listen address '%s': %s", spec, why);
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *res = NULL;
    int g = getaddrinfo(host, port, &hints, &res);
    if (g != 0)
        return iop__fail(-EINVAL, "listen address '%s': %s", spec, gai_strerror(g));
    int r = 0;
    for (const struct addrinfo *ai = res; ai && r == 0; ai = every ? ai->ai_next : NULL) {
        /* IPv6 listeners are v6-only: a v4-mapped address cannot be bound. */
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)ai->ai_addr;
        if (ai->ai_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr))
            r = iop__fail(-EINVAL, "listen address '%s': an IPv4-mapped address; listen on its IPv4 "
                          "address instead", spec);
        else if (iop__unzoned_link_local(ai->ai_addr))
            r = iop__fail(-EINVAL, "listen address '%s': a link-local address needs a zone naming "
                          "its interface, as in [%s%%lo]:%s", spec, host, port);
        else if (ai->ai_addrlen <= sizeof(struct sockaddr_storage) && !addr_list_has(l, entry, ai))
            r = addr_list_add(l, entry, ai);
    }
    freeaddrinfo(res);
    return r;
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

static int open_one(const char *label, const struct sockaddr_storage *ss, socklen_t len,
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
    return iop__fail(-err, "listen %s: %s: %s", label, what, strerror(err));
}

/* SO_REUSEPORT lets any socket of this user with the option join a port: another
 * ioplexd, or another service of this one on the same address, would silently share
 * the connections. A plain bind first (no SO_REUSEPORT) fails on a port someone
 * listens on, which is the error to report. */
static int probe_free(const char *label, const struct sockaddr_storage *ss, socklen_t len)
{
    const char *what;
    int fd = bound_socket(ss, len, 0, &what);
    if (fd < 0)
        return iop__fail(fd, "listen %s: %s: %s%s", label, what, strerror(-fd),
                         fd == -EADDRINUSE ? " (another socket is bound there)" : "");
    close(fd);
    return 0;
}

/* "localhost:7000 (127.0.0.1:7000)" for a failure's message: the spec, and the
 * address it stands for when that is not the spec itself. */
static const char *describe(const char *spec, const struct sockaddr_storage *ss, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN] = "?", addr[INET6_ADDRSTRLEN + 16];
    int v6 = ss->ss_family == AF_INET6;
    inet_ntop(ss->ss_family, v6 ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
                                : (const void *)&((const struct sockaddr_in *)ss)->sin_addr,
              ip, sizeof ip);
    snprintf(addr, sizeof addr, v6 ? "[%s]:%u" : "%s:%u", ip, (unsigned)ntohs(get_port(ss)));
    if (strcmp(addr, spec) == 0)
        snprintf(buf, len, "%s", spec);
    else
        snprintf(buf, len, "%s (%s)", spec, addr);
    return buf;
}

/* Every socket of address a: a probe that the port is free (reuseport), then one
 * socket per worker, socket k listening k-th (the reuseport group's index of
 * worker k's socket). Port 0 is taken by the first socket and shared by the others. */
static int open_addr(iop__shard_listeners_t *l, uint32_t a, bind_addr_t *b, const char *spec,
                     int reuseport, int backlog)
{
    char what[300];
    describe(spec, &b->ss, what, sizeof what);
    int r = 0;
    if (reuseport && get_port(&b->ss) != 0)
        r = probe_free(what, &b->ss, b->len);
    for (uint32_t k = 0; r == 0 && k < l->per_addr; k++) {
        r = open_one(what, &b->ss, b->len, reuseport, backlog, &l->fds[a * l->per_addr + k]);
        if (r == 0 && k == 0 && get_port(&b->ss) == 0) {
            struct sockaddr_storage bound;
            socklen_t blen = sizeof bound;
            if (getsockname(l->fds[a * l->per_addr], (struct sockaddr *)&bound, &blen) < 0)
                r = iop__fail(-errno, "listen %s: getsockname: %s", what, strerror(errno));
            else
                set_port(&b->ss, get_port(&bound));
        }
    }
    return r;
}

/* A port 0 name whose first address picked a port taken on another of its
 * addresses starts over with a new port, this many times at most. */
#define PORT0_TRIES 32

/* Closes the sockets of addresses [from, to). */
static void close_range_of(iop__shard_listeners_t *l, uint32_t from, uint32_t to)
{
    for (uint32_t i = from * l->per_addr; i < to * l->per_addr; i++)
        if (l->fds[i] >= 0) {
            close(l->fds[i]);
            l->fds[i] = -1;
        }
}

int iop__shard_listeners_open(iop__shard_listeners_t *l, const iop_shard_opts_t *o, uint32_t nworkers)
{
    memset(l, 0, sizeof *l);
    l->per_addr = o->listener_mode == IOP_SHARD_SHARED ? 1 : nworkers;
    addr_list_t al = { 0 };
    int r = 0;
    for (uint32_t e = 0; r == 0 && o->listen && o->listen[e]; e++)
        r = resolve(o->listen[e], e, (o->flags & IOP_SHARD_ALL_ADDRESSES) != 0, &al);
    if (r == 0 && al.n) {
        l->fds = iop_malloc((size_t)al.n * l->per_addr * sizeof *l->fds);
        l->entry = iop_malloc((size_t)al.n * sizeof *l->entry);
        if (!l->fds || !l->entry)
            r = iop__fail(-ENOMEM, "iop_shard_run: out of memory for the listeners");
    }
    if (r == 0) {
        l->naddr = al.n;
        for (uint32_t i = 0; i < al.n * l->per_addr; i++)
            l->fds[i] = -1;
    }
    int backlog = o->backlog > 0 ? o->backlog : SOMAXCONN;
    int reuseport = o->listener_mode != IOP_SHARD_SHARED;
    uint16_t picked = 0;           /* the port the entry's first address took for port 0 */
    uint32_t first_a = 0, tries = 0;
    for (uint32_t a = 0; r == 0 && a < al.n;) {
        bind_addr_t *b = &al.a[a];
        const char *spec = o->listen[b->entry];
        l->entry[a] = b->entry;
        int first = a == 0 || al.a[a - 1].entry != b->entry;
        int port0 = get_port(&b->ss) == 0;
        if (first) {
            picked = 0;
            if (a != first_a)        /* a new entry, not the start over of this one */
                tries = 0;
            first_a = a;
        } else if (port0) {
            set_port(&b->ss, picked);   /* one port for every address of a name */
        }
        r = open_addr(l, a, b, spec, reuseport, backlog);
        if (r == -EADDRINUSE && port0 && !first && ++tries < PORT0_TRIES) {
            /* The port the first address picked is another socket's on this one:
             * every address of the name lets go of it and tries a new one. */
            close_range_of(l, first_a, a + 1);
            for (uint32_t k = first_a; k <= a; k++)
                set_port(&al.a[k].ss, 0);
            a = first_a;
            r = 0;
            continue;
        }
        if (r < 0 && port0 && !first) {
            char why[512];
            snprintf(why, sizeof why, "%s", iop_last_error());
            iop__fail(r, "%s; for port 0, port %u was picked on the first address of %s, and every "
                      "address of a name listens on that one port (%u tries)", why,
                      (unsigned)ntohs(picked), spec, tries);
        }
        if (r == 0 && first && port0)
            picked = get_port(&b->ss);
        a++;
    }
    iop_free(al.a);
    if (r < 0)
        iop__shard_listeners_close(l);
    return r;
}

void iop__shard_listeners_close(iop__shard_listeners_t *l)
{
    for (uint32_t i = 0; l->fds && i < l->naddr * l->per_addr; i++)
        if (l->fds[i] >= 0) {
            close(l->fds[i]);
            l->fds[i] = -1;
        }
}

void iop__shard_listeners_free(iop__shard_listeners_t *l)
{
    iop__shard_listeners_close(l);
    iop_free(l->fds);
    iop_free(l->entry);
    l->fds = NULL;
    l->entry = NULL;
}

int iop__shard_listener_fd(const iop__shard_listeners_t *l, uint32_t a, uint32_t i)
{
    if (!l->fds || a >= l->naddr)
        return -1;
    return l->fds[a * l->per_addr + (l->per_addr == 1 ? 0 : i)];
}

int iop_shard_listen(const char *const *listen, uint32_t flags, int backlog, int *fds, uint32_t *entry,
                     uint32_t max)
{
    const iop_shard_opts_t o = { .listener_mode = IOP_SHARD_SHARED, .listen = listen, .flags = flags,
                                 .backlog = backlog };
    iop__shard_listeners_t l;
    int r = iop__shard_listeners_open(&l, &o, 1);
    if (r == 0 && l.naddr > max)
        r = iop__fail(-ENOSPC, "iop_shard_listen: %u addresses to listen on, room for %u", l.naddr, max);
    if (r < 0) {
        iop__shard_listeners_free(&l);
        return r;
    }
    for (uint32_t a = 0; a < l.naddr; a++) {
        fds[a] = l.fds[a];
        entry[a] = l.entry[a];
    }
    r = (int)l.naddr;
    iop_free(l.fds);               /* the sockets are the caller's now */
    iop_free(l.entry);
    return r;
}
