#include "pool.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "addr/addr_spec.h"
#include "hostport.h"
#include "resolve.h"

struct fetch_host {
    fetch_host_t *next;             /* hash chain */
    char name[URL_HOST_MAX];
    uint16_t port;
    iop_mutex_t lock;               /* held while resolving: one lookup per host */
    struct addrinfo *addrs;
    char *resolve_err;              /* the name does not exist: said once, kept */
    fetch_conn_t *idle;
    unsigned nidle;
};

void pool_init(fetch_pool_t *p, unsigned idle_max, unsigned host_idle_max)
{
    memset(p, 0, sizeof *p);
    p->idle_max = idle_max;
    p->host_idle_max = host_idle_max;
}

void pool_discard(fetch_conn_t *c)
{
    if (c->fd >= 0)
        iop_close(c->fd);
    free(c->buf);
    free(c);
}

/* Takes c out of its host's idle list and the pool's. */
static void idle_unlink(fetch_pool_t *p, fetch_conn_t *c)
{
    fetch_host_t *h = c->host;
    for (fetch_conn_t **at = &h->idle; *at; at = &(*at)->next)
        if (*at == c) {
            *at = c->next;
            break;
        }
    c->next = NULL;
    *(c->older ? &c->older->newer : &p->oldest) = c->newer;
    *(c->newer ? &c->newer->older : &p->newest) = c->older;
    c->older = c->newer = NULL;
    h->nidle--;
    p->idle--;
}

void pool_destroy(fetch_pool_t *p)
{
    for (unsigned b = 0; b < POOL_BUCKETS; b++) {
        while (p->buckets[b]) {
            fetch_host_t *h = p->buckets[b];
            p->buckets[b] = h->next;
            while (h->idle) {
                fetch_conn_t *c = h->idle;
                h->idle = c->next;
                pool_discard(c);
            }
            if (h->addrs)
                freeaddrinfo(h->addrs);
            free(h->resolve_err);
            free(h);
        }
    }
    p->idle = 0;
    p->oldest = p->newest = NULL;
}

static unsigned bucket_of(const char *name, uint16_t port)
{
    uint32_t h = 2166136261u ^ port;   /* FNV-1a */
    for (const char *c = name; *c; c++)
        h = (h ^ (unsigned char)*c) * 16777619u;
    return h % POOL_BUCKETS;
}

static fetch_host_t *host_get(fetch_pool_t *p, const fetch_url_t *u)
{
    unsigned b = bucket_of(u->host, u->port);
    for (fetch_host_t *h = p->buckets[b]; h; h = h->next)
        if (h->port == u->port && strcmp(h->name, u->host) == 0)
            return h;
    fetch_host_t *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    snprintf(h->name, sizeof h->name, "%s", u->host);
    h->port = u->port;
    iop_mutex_init(&h->lock);
    h->next = p->buckets[b];
    p->buckets[b] = h;
    return h;
}

/* An idle connection is reusable if the server has neither closed it nor sent
 * anything unasked. A race remains (it may close it just now): the caller retries. */
static int still_alive(const fetch_conn_t *c)
{
    char b;
    if (c->rpos != c->wpos)
        return 0;
    ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static int resolve_host(fetch_host_t *h, uint64_t deadline, char *err, size_t errlen)
{
    if (h->addrs)
        return 0;
    int r = iop_mutex_lock(&h->lock, deadline);
    if (r < 0) {
        snprintf(err, errlen, "resolving '%s': %s", h->name,
                 r == -ETIMEDOUT ? "timed out" : iop_strerror(r));
        return r;
    }
    if (!h->addrs && !h->resolve_err) {
        r = fetch_resolve(h->name, h->port, deadline, &h->addrs, err, errlen);
        if (r == -ENOENT)
            h->resolve_err = strdup(err);
    }
    if (!h->addrs && h->resolve_err) {
        snprintf(err, errlen, "%s", h->resolve_err);
        r = -ENOENT;
    }
    iop_mutex_unlock(&h->lock);
    return r;
}

/* Tries each address in turn until one accepts; the first to answer moves to the
 * front of the list. The socket, or -errno. */
static int connect_host(fetch_host_t *h, uint64_t deadline, char *err, size_t errlen)
{
    int r = -EADDRNOTAVAIL;
    unsigned tried = 0, total = 0;
    for (const struct addrinfo *ai = h->addrs; ai; ai = ai->ai_next)
        total++;
    struct addrinfo *prev = NULL, *last = h->addrs;
    for (struct addrinfo *ai = h->addrs; ai; prev = ai, ai = ai->ai_next) {
        last = ai;
        tried++;
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        ai->ai_protocol);
        if (fd < 0) {
            r = -errno;
            snprintf(err, errlen, "socket: %s", strerror(errno));
            return r;
        }
        int one = 1;                 /* a request is one small write: send it now */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        r = iop_connect(fd, ai->ai_addr, ai->ai_addrlen, deadline);
        if (r == 0) {
            if (prev) {
                prev->ai_next = ai->ai_next;
                ai->ai_next = h->addrs;
                h->addrs = ai;
            }
            return fd;
        }
        iop_close(fd);
        if (r == -ETIMEDOUT || r == -ECANCELED)
            break;
    }
    char where[128];
    if (last)
        iop_app_format_addr(last->ai_addr, last->ai_addrlen, where, sizeof where);
    else
        snprintf(where, sizeof where, "no address");
    char target[300];
    snprintf(target, sizeof target, strchr(h->name, ':') ? "[%s]:%u" : "%s:%u", h->name, (unsigned)h->port);
    int same = strcmp(target, where) == 0;    /* name the address only if it adds something */
    if (r == -ETIMEDOUT && (total > 1 || !same)) {
        /* one deadline for every address: say how far through them it got */
        snprintf(err, errlen, "cannot connect to %s: timed out after trying %u of its %u address%s "
                 "(last tried: %s)", target, tried, total, total == 1 ? "" : "es", where);
        return r;
    }
    snprintf(err, errlen, "cannot connect to %s%s%s%s: %s", target, same ? "" : " (", same ? "" : where,
             same ? "" : ")", r == -ETIMEDOUT ? "timed out"
                              : last && iop__unzoned_link_local(last->ai_addr) ? "a link-local address needs a "
                                "zone (its interface), and URLs here cannot carry one"
                              : iop_strerror(r));
    return r;
}

int pool_get(fetch_pool_t *p, const fetch_url_t *u, int fresh, uint64_t deadline,
             fetch_conn_t **out, int *reused, char *err, size_t errlen)
{
    *reused = 0;
    fetch_host_t *h = host_get(p, u);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    while (!fresh && h->idle) {
        fetch_conn_t *c = h->idle;
        idle_unlink(p, c);
        if (still_alive(c)) {
            *reused = 1;
            p->reused++;
            *out = c;
            return 0;
        }
        pool_discard(c);
    }
    int r = resolve_host(h, deadline, err, errlen);
    if (r < 0)
        return r;
    int fd = connect_host(h, deadline, err, errlen);
    if (fd < 0)
        return fd;
    fetch_conn_t *c = calloc(1, sizeof *c);
    char *buf = malloc(CONN_BUF_SIZE);
    if (!c || !buf) {
        free(c);
        free(buf);
        iop_close(fd);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    c->fd = fd;
    c->host = h;
    c->buf = buf;
    p->opened++;
    *out = c;
    return 0;
}

void pool_put(fetch_pool_t *p, fetch_conn_t *c)
{
    fetch_host_t *h = c->host;
    if (c->rpos != c->wpos || !p->idle_max || h->nidle >= p->host_idle_max) {
        pool_discard(c);
        return;
    }
    if (p->idle >= p->idle_max) {
        fetch_conn_t *old = p->oldest;
        idle_unlink(p, old);
        pool_discard(old);
    }
    c->rpos = c->wpos = 0;
    c->next = h->idle;
    h->idle = c;
    c->older = p->newest;
    c->newer = NULL;
    *(p->newest ? &p->newest->newer : &p->oldest) = c;
    p->newest = c;
    h->nidle++;
    p->idle++;
}
