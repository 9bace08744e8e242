/* ioplex — service plugins: a module iop_service_<name>.so serves connections.
 *
 * A host (ioplexd, or any program) loads a service by name from the plugin search
 * path (see plugin.h), creates it once with its options (before any worker forks),
 * starts it in each worker with that worker's loop, and then calls serve() once per
 * accepted connection, each call in its own coroutine: a service is written as
 * blocking code with the coroutine API (coro.h) and never blocks the loop.
 *
 * A service module links libioplex (shared) for the coroutine API; the host must
 * link the shared library too, so that both use one copy of it. It exports one
 * symbol, IOP_SERVICE_SYMBOL, a descriptor whose first field is the ABI version:
 *
 *     IOP_SERVICE_EXPORT const iop_service_desc_t iop_service_descriptor = {
 *         .abi_version = IOP_SERVICE_ABI_VERSION, .desc_size = sizeof(iop_service_desc_t),
 *         .name = "echo", .summary = "echoes bytes", .serve = echo_serve, ...
 *     };
 *
 * A module whose ABI differs, whose descriptor is smaller than this one, which
 * lacks serve, or whose name differs from its file name is refused with a reason. */
#ifndef IOPLEX_SERVICE_H
#define IOPLEX_SERVICE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include "common.h"
#include "coro.h"

#define IOP_SERVICE_ABI_VERSION 1u
#define IOP_SERVICE_SYMBOL "iop_service_descriptor"
#define IOP_SERVICE_EXPORT IOP_EXPORT

/* One option of a service, from "--service NAME=ADDR,key=value,key2=value2". */
typedef struct iop_service_opt {
    const char *key;
    const char *value;         /* "" for a bare key */
} iop_service_opt_t;

/* What create() gets. Everything stays valid until destroy(). */
typedef struct iop_service_cfg {
    uint32_t size;             /* sizeof(iop_service_cfg_t) */
    const char *name;          /* the service's name */
    const char *listen;        /* the address it listens on, as given */
    const iop_service_opt_t *opts;
    size_t nopts;
    int nworkers;              /* processes that will serve it (1 = the host itself) */
} iop_service_cfg_t;

/* Counters of one worker, in memory the supervisor can read (shared across fork).
 * The host counts connections; a service adds its requests and bytes. */
typedef struct iop_service_stats {
    uint64_t connections;      /* accepted */
    uint64_t open;             /* open now */
    uint64_t requests;         /* what a service calls a request (a message, an HTTP request) */
    uint64_t bytes_in, bytes_out;
    uint64_t errors;           /* requests answered with an error, connections failed */
} iop_service_stats_t;

/* One connection, for one serve() call. */
typedef struct iop_service_conn {
    int fd;                    /* non-blocking, close-on-exec; the host closes it */
    const struct sockaddr *peer;
    socklen_t peerlen;
    int worker;                /* 0 .. nworkers - 1 */
    iop_service_stats_t *stats;   /* this worker's counters */
    /* Set by the service: 1 while it waits for the next request (between requests
     * of a keep-alive connection), 0 while it works on one. With
     * IOP_SERVICE_DRAIN_IDLE, a drain cancels idle connections at once; every other
     * connection is cancelled at the drain deadline if it has not ended by then. */
    int idle;
    const volatile int *draining; /* 1 once the host drains: finish the request at
                                   * hand and return instead of reading another */
} iop_service_conn_t;

/* iop_service_desc_t.flags */
#define IOP_SERVICE_DRAIN_IDLE 0x1u   /* request/response protocols (HTTP keep-alive):
                                       * at a drain the host cancels connections that
                                       * are idle (conn->idle) at once; without it, every
                                       * connection keeps being served until it ends or
                                       * the drain deadline (sessions like echo, chat) */
#define IOP_SERVICE_CLIENT_FIRST 0x2u /* the client speaks first (HTTP): the host has the
                                       * kernel hold a new TCP connection back until its
                                       * first bytes are in (TCP_DEFER_ACCEPT on the
                                       * listener), so serving it starts with a receive
                                       * that succeeds; one that sends nothing is handed
                                       * over after about a second */

typedef struct iop_service_desc {
    uint32_t abi_version;      /* IOP_SERVICE_ABI_VERSION, always first */
    uint32_t desc_size;        /* sizeof(iop_service_desc_t) */
    uint32_t flags;            /* IOP_SERVICE_* */
    const char *name;
    const char *summary;       /* one line for iop-plugins and --help */
    const char *options_help;  /* "key=VALUE   what it does" lines, or NULL */

    /* Once per host, before workers fork: checks the options and makes the state
     * every worker inherits (shared memory for state that crosses workers). 0, or
     * -errno with a one-line reason in err. NULL: no state, no options. */
    int (*create)(void **state, const iop_service_cfg_t *cfg, char *err, size_t errlen);
    /* In each worker, after the fork, before its first connection: may start
     * coroutines of its own on loop (e.g. a reader of a cross-worker channel). */
    int (*worker_start)(void *state, iop_loop_t *loop, int worker, char *err, size_t errlen);
    /* Serves one connection; runs in its own coroutine and returns when done with it
     * (0, or -errno counted as an error). Cancelled coroutines see -ECANCELED from
     * their blocking calls and must return. The host closes conn->fd after serve
     * returns: serve must not close it, and no coroutine it started may use it
     * afterwards (the number goes to the next connection). */
    int (*serve)(void *state, iop_service_conn_t *conn);
    /* In each worker, once its connections are done (optional). */
    void (*worker_stop)(void *state);
    /* Once per host, last (optional). */
    void (*destroy)(void *state);
} iop_service_desc_t;

/* ---- for hosts ------------------------------------------------------------------- */

typedef struct iop_service iop_service_t;   /* a loaded module */

/* Finds iop_service_<name>.so on the search path, loads it and checks its
 * descriptor. 0, or -errno with the reason in iop_last_error() (-ENOENT: no such
 * service, the message lists those available). */
IOP_EXPORT int iop_service_open(iop_service_t **out, const char *name, const char *plugin_path);
IOP_EXPORT const iop_service_desc_t *iop_service_desc(const iop_service_t *s);
IOP_EXPORT const char *iop_service_path(const iop_service_t *s);
IOP_EXPORT void iop_service_close(iop_service_t *s);

typedef struct iop_service_info {
    char name[64];
    char path[4096];
    const iop_service_desc_t *desc;   /* NULL if refused */
    int load_err;              /* 0, or -errno */
    char why[512];
} iop_service_info_t;

/* Every service module on the search path (first of each name), loaded and
 * checked; freed with iop_service_list_free. */
IOP_EXPORT int iop_service_list(const char *plugin_path, iop_service_info_t **out, size_t *count);
IOP_EXPORT void iop_service_list_free(iop_service_info_t *list);

/* The directories searched for services, in order, as one ':'-separated string
 * written to buf (iop_plugin_search_path gives the backends'). */
IOP_EXPORT const char *iop_service_search_path(const char *plugin_path, char *buf, size_t len);

/* Serving one listener with a service in one process (a worker): an accept loop in
 * a coroutine that starts one coroutine per connection calling desc->serve. The
 * caller owns the record (zero it, then fill the public part); nothing is
 * allocated per connection (each one's record lives on its coroutine's stack). */
typedef struct iop_service_host {
    const iop_service_desc_t *desc;
    void *state;               /* from desc->create */
    iop_loop_t *loop;
    int listen_fd;             /* non-blocking listener; the host sets TCP_NODELAY (and for
                                * IOP_SERVICE_CLIENT_FIRST, TCP_DEFER_ACCEPT) on it, which
                                * its connections inherit: an accept function below must
                                * take them from it, or leave this -1 */
    int worker;
    iop_service_stats_t *stats;   /* this worker's counters (may be shared memory); required:
                                   * services count into conn->stats */
    /* Optional: how to accept (a coroutine call returning an fd or -errno, and
     * -ECANCELED once no more should be accepted), e.g. iop_shard_accept; NULL =
     * iop_accept on listen_fd. */
    int (*accept)(void *arg, struct sockaddr *addr, socklen_t *addrlen);
    void *accept_arg;
    /* private */
    volatile int draining;
    uint64_t drain_deadline;
    iop_coro_t *acceptor;
    iop_nursery_t conns;
    void *live;                /* connections, for cancelling the idle ones */
    uint32_t shed;             /* accept failures for lack of fds, in a row */
} iop_service_host_t;

/* Starts the accept loop (from a coroutine or not): 0 or -errno. */
IOP_EXPORT int iop_service_host_start(iop_service_host_t *h);
/* Stops accepting, cancels idle connections now (IOP_SERVICE_DRAIN_IDLE) and the
 * others at deadline (0 = now), when it also shuts down the sockets of those left
 * (a send lingering after a cancel then fails), and waits for every connection
 * coroutine to end. Call it from a coroutine
 * of h->loop. 0, or -ETIMEDOUT when some connections had to be cancelled busy. */
IOP_EXPORT int iop_service_host_drain(iop_service_host_t *h, uint64_t deadline);

/* Splits "k=v,k2=v2,bare" in place into opts (at most max); the count, or
 * -EINVAL (empty key) / -E2BIG (more than max). There is no escape: a value cannot
 * hold a ','. */
IOP_EXPORT int iop_service_parse_opts(char *text, iop_service_opt_t *opts, size_t max);

/* The value of key in cfg's options, or NULL. */
IOP_EXPORT const char *iop_service_opt(const iop_service_cfg_t *cfg, const char *key);

/* For a service's create(): opt's value as a whole decimal number in [lo, hi] into
 * *out; else -EINVAL and "SERVICE: key=value: want a number from lo to hi" in err. */
IOP_EXPORT int iop_service_opt_number(const char *service, const iop_service_opt_t *opt, long long lo,
                                      long long hi, long long *out, char *err, size_t errlen);

#endif
