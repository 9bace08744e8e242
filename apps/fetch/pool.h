/* Connections for iop-fetch: one entry per host:port holding its resolved
 * addresses and a small LIFO pool of idle keep-alive connections. */
#ifndef IOP_FETCH_POOL_H
#define IOP_FETCH_POOL_H

#include <netdb.h>
#include <stddef.h>
#include <stdint.h>

#include <ioplex.h>
#include "url.h"

#define CONN_BUF_SIZE (32 * 1024)   /* receive buffer per connection */
#define POOL_BUCKETS 256

typedef struct fetch_host fetch_host_t;

typedef struct fetch_conn {
    int fd;
    fetch_host_t *host;
    char *buf;                      /* received bytes buf[rpos..wpos) not yet parsed */
    size_t rpos, wpos;
    unsigned requests;              /* responses read on it so far */
    struct fetch_conn *next;        /* in its host's idle list */
    struct fetch_conn *older, *newer;   /* idle: in the pool's list, oldest first */
} fetch_conn_t;

typedef struct fetch_pool {
    fetch_host_t *buckets[POOL_BUCKETS];
    unsigned idle, idle_max;        /* idle connections now, and at most (all hosts) */
    fetch_conn_t *oldest, *newest;  /* every idle connection, by when it went idle */
    unsigned host_idle_max;         /* at most per host */
    uint64_t opened, reused;        /* connections opened, and requests on reused ones */
} fetch_pool_t;

void pool_init(fetch_pool_t *p, unsigned idle_max, unsigned host_idle_max);

/* Closes every idle connection and frees the hosts. From a coroutine (the fds
 * are closed through the loop). */
void pool_destroy(fetch_pool_t *p);

/* A connection to u's host:port: an idle one that still looks alive (*reused = 1),
 * unless fresh is set, else a new one (the name resolved once per host, the
 * addresses tried in turn, the one that answered tried first next time). 0, or
 * -errno with a reason in err. From a coroutine. */
int pool_get(fetch_pool_t *p, const fetch_url_t *u, int fresh, uint64_t deadline,
             fetch_conn_t **out, int *reused, char *err, size_t errlen);

/* A connection whose last response ended cleanly: kept idle, closing the pool's
 * longest idle one if the pool is full (a host that is done with must not keep
 * the hosts still being fetched from reusing theirs); closed if its host has its
 * most idle connections already. */
void pool_put(fetch_pool_t *p, fetch_conn_t *c);

/* Closes and frees a connection. */
void pool_discard(fetch_conn_t *c);

#endif
