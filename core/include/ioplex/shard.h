/* ioplex — sharded workers under a supervisor (pre-fork).
 *
 * iop_shard_run makes the calling process a supervisor: it binds the listeners,
 * forks N workers and watches them until it is told to stop. Each worker makes its
 * OWN loop (and scheduler) after the fork and runs the worker function as a
 * coroutine on it. A worker that dies is respawned with backoff (a crash loop stops
 * everything); SIGTERM / SIGINT drain gracefully; SIGHUP restarts the workers one by
 * one without refusing a connection (a replacement that fails crash_limit + 1 times
 * in a row ends that worker's restart and leaves the old one serving, instead of
 * stopping everything); workers die with the supervisor.
 *
 * Call it outside any coroutine, in a process without threads (fork copies only
 * the calling thread). The worker processes end with _exit() and never return
 * into the caller's code; stdio buffers are flushed before each fork and at a
 * worker's end. Workers ignore SIGINT, SIGTERM and SIGHUP (a terminal's Ctrl-C and
 * systemd's stop reach the whole group: the supervisor turns them into a drain) and
 * otherwise keep the caller's signal mask and handlers. */
#ifndef IOPLEX_SHARD_H
#define IOPLEX_SHARD_H

#include <sys/socket.h>
#include "common.h"
#include "loop.h"

typedef struct iop_shard_worker iop_shard_worker_t;   /* a worker's view, in the worker */
typedef struct iop_shard_stats iop_shard_stats_t;     /* counters in shared memory */

/* The worker: runs as a coroutine on the worker's own loop. Its return value is
 * the process's exit status. Once the worker is draining, 0 is a clean end and
 * anything else is logged; before that, any return, 0 included, counts as a crash
 * and the worker is respawned (a worker that ends by itself would otherwise be
 * respawned in a tight loop). */
typedef int (*iop_shard_worker_fn)(iop_shard_worker_t *w);

/* One connection served by iop_shard_serve, in its own coroutine; fd is closed
 * after fn returns. */
typedef void (*iop_shard_conn_fn)(iop_shard_worker_t *w, int fd, void *arg);

/* iop_shard_opts_t.listener_mode */
#define IOP_SHARD_REUSEPORT 0u   /* one SO_REUSEPORT socket per worker (default) */
#define IOP_SHARD_SHARED    1u   /* one socket all workers accept on (select and poll
                                  * wake every worker: a thundering herd; refused
                                  * with sigio, which signals only one of them) */

/* iop_shard_opts_t.flags */
#define IOP_SHARD_PIN_CPU   (1u << 0)   /* worker i runs on the i-th allowed CPU (mod count) */
#define IOP_SHARD_STEER_CPU (1u << 1)   /* with PIN_CPU + REUSEPORT: a connection goes to
                                         * the worker pinned to the CPU that received it */
#define IOP_SHARD_ALL_ADDRESSES (1u << 2) /* a host name listens on every distinct address
                                         * it resolves to (one listener each, in the
                                         * resolver's order), not on its first only; a
                                         * numeric host stays one listener */

/* iop_shard_opts_t.crash_limit: the largest limit (the supervisor keeps that many
 * crash times per worker), and "never stop respawning" */
#define IOP_SHARD_MAX_CRASH_LIMIT 1024u
#define IOP_SHARD_NO_CRASH_LIMIT  UINT32_MAX

/* on_event levels */
#define IOP_SHARD_INFO 0
#define IOP_SHARD_WARN 1

typedef struct iop_shard_opts {
    uint32_t size;                 /* sizeof(iop_shard_opts_t) */
    uint32_t flags;                /* IOP_SHARD_PIN_CPU | IOP_SHARD_STEER_CPU */
    uint32_t workers;              /* 0 = one per CPU this process may run on */
    uint32_t listener_mode;        /* IOP_SHARD_REUSEPORT / IOP_SHARD_SHARED */
    /* NULL-terminated "HOST:PORT" list: "127.0.0.1:8080", "[::1]:0", "*:80" (any
     * IPv4), "[::]:80" (any IPv6, v6 only), "[fe80::1%eth0]:80" (link-local: the
     * zone is required), host names too (their first address, or all with
     * IOP_SHARD_ALL_ADDRESSES). Port 0 = a free port, the same for every worker and
     * every address of a name; on_listen tells which. A failure to bind any address
     * fails the run, naming it. NULL = no listener. */
    const char *const *listen;
    int backlog;                   /* 0 = SOMAXCONN */
    const char *backend;           /* each worker's backend; NULL = loop_opts' or auto */
    const iop_loop_opts_t *loop_opts;   /* each worker's loop; NULL = defaults */
    iop_shard_worker_fn worker;    /* required */
    void *arg;                     /* iop_shard_arg() in the workers (copied by fork) */
    uint64_t drain_timeout_ns;     /* open connections may take this long; 0 = 10 s */
    uint64_t ready_timeout_ns;     /* a new worker must be ready by then; 0 = 10 s */
    uint32_t crash_limit;          /* more crashes of one worker than this within
                                    * (at most IOP_SHARD_MAX_CRASH_LIMIT, or
                                    * IOP_SHARD_NO_CRASH_LIMIT: respawn forever) */
    uint64_t crash_window_ns;      /* ... this window stop everything; 0 = 5 and 10 s */
    uint64_t backoff_min_ns;       /* respawn delay after a crash, doubling; 0 = 50 ms */
    uint64_t backoff_max_ns;       /* its ceiling; 0 = 5 s. A worker that ran for a
                                    * crash window before dying starts again at min */
    /* In the supervisor, after binding and before any fork, once per address bound:
     * its entry's index in listen and the address (the port chosen for port 0). */
    void (*on_listen)(void *arg, uint32_t index, const struct sockaddr *addr, socklen_t len);
    /* In the supervisor: one line per event (started, ready, died, respawning,
     * draining ...). NULL = IOP_SHARD_WARN lines to stderr. */
    void (*on_event)(void *arg, int level, const char *line);
    void *event_arg;               /* for on_listen and on_event */
    iop_shard_stats_t *stats;      /* counters to fill (see below); NULL = private ones */
} iop_shard_opts_t;

/* Runs the supervisor until SIGTERM / SIGINT (a second one kills at once) or a
 * failure. Blocks SIGINT, SIGTERM and SIGHUP meanwhile (read through a signalfd)
 * and restores the mask before returning.
 *  0           a clean drain: every worker finished by itself;
 *  -ETIMEDOUT  the drain timed out and some worker had to be killed;
 *  -EINTR      a second SIGINT / SIGTERM killed the workers without waiting;
 *  -ECHILD     the crash-loop limit (which worker, how it died: iop_last_error());
 *  a worker's own -errno when its setup failed before any worker was ready (an
 *  unknown backend, CPU pinning refused ...);
 *  -EINVAL / -EADDRINUSE / ... for bad options and failed binds, before any fork. */
IOP_EXPORT int iop_shard_run(const iop_shard_opts_t *opts);

/* Binds and listens listen (opts.listen's syntax and rules, IOP_SHARD_ALL_ADDRESSES
 * from flags, backlog as opts.backlog) in this process, for a program serving them
 * without workers: the same addresses, checks and messages as iop_shard_run.
 * fds[k] (non-blocking) and entry[k] (its listen index) for k < the count returned;
 * -errno with a message naming the address, nothing left open (-ENOSPC beyond max). */
IOP_EXPORT int iop_shard_listen(const char *const *listen, uint32_t flags, int backlog,
                                int *fds, uint32_t *entry, uint32_t max);

/* ---- in a worker ----------------------------------------------------------------- */

IOP_EXPORT uint32_t iop_shard_index(const iop_shard_worker_t *w);   /* 0 .. count-1 */
IOP_EXPORT uint32_t iop_shard_count(const iop_shard_worker_t *w);
IOP_EXPORT iop_loop_t *iop_shard_loop(const iop_shard_worker_t *w);
IOP_EXPORT void *iop_shard_arg(const iop_shard_worker_t *w);
/* Listeners: one per opts.listen entry, in order, or under IOP_SHARD_ALL_ADDRESSES
 * one per address bound (the addresses of an entry next to each other). */
IOP_EXPORT uint32_t iop_shard_nlisteners(const iop_shard_worker_t *w);
/* Listener i's fd (non-blocking); -1 once draining. */
IOP_EXPORT int iop_shard_listener(const iop_shard_worker_t *w, uint32_t i);
/* The opts.listen index listener i serves (i itself without IOP_SHARD_ALL_ADDRESSES);
 * UINT32_MAX for no such listener. */
IOP_EXPORT uint32_t iop_shard_listener_entry(const iop_shard_worker_t *w, uint32_t i);

/* Tells the supervisor this worker serves (a rolling restart waits for it before
 * draining the worker it replaces). The first iop_shard_accept or
 * iop_shard_wait_drain does it for you; a worker not ready within
 * opts.ready_timeout_ns is killed and counted as a crash. */
IOP_EXPORT int iop_shard_ready(iop_shard_worker_t *w);

/* Draining: the supervisor asked this worker to stop (or has gone). The listeners
 * are closed at that moment; open connections should finish by the drain deadline
 * (absolute, loop clock; 0 while not draining). */
IOP_EXPORT int iop_shard_draining(const iop_shard_worker_t *w);
IOP_EXPORT uint64_t iop_shard_drain_deadline(const iop_shard_worker_t *w);
/* Parks until draining starts: 0, -ETIMEDOUT, -ECANCELED. */
IOP_EXPORT int iop_shard_wait_drain(iop_shard_worker_t *w, uint64_t deadline);

/* Accepts on listener i (a coroutine call). Returns the connection's fd
 * (non-blocking, close-on-exec), -ECANCELED once draining starts (a connection
 * accepted just before is still returned), or another -errno. */
IOP_EXPORT int iop_shard_accept(iop_shard_worker_t *w, uint32_t i, struct sockaddr *addr,
                                socklen_t *addrlen, uint64_t deadline);

/* The common case in one call: accepts on every listener until draining, serves each
 * connection with fn in its own coroutine, then waits for the open ones until the
 * drain deadline and cancels those left. 0, or -ETIMEDOUT if some were cancelled.
 * Keeps the accepted / open counters of the stats. */
IOP_EXPORT int iop_shard_serve(iop_shard_worker_t *w, iop_shard_conn_fn fn, void *arg);

/* ---- counters in shared memory ------------------------------------------------------ */

typedef struct iop_shard_worker_stats {
    int32_t pid;                   /* the worker serving this slot, 0 while none */
    uint32_t ready;                /* 1 once it has said so */
    uint32_t generation;           /* processes started for the slot so far */
    uint32_t crashes;              /* unrequested deaths */
    uint64_t accepted;             /* connections accepted, every generation */
    uint64_t open;                 /* connections open in iop_shard_serve now */
} iop_shard_worker_stats_t;

/* Makes counters for nworkers slots in anonymous shared memory. Create them before
 * forking whatever process should read them (a supervisor run in a child, say). */
IOP_EXPORT int iop_shard_stats_create(iop_shard_stats_t **out, uint32_t nworkers);
IOP_EXPORT void iop_shard_stats_free(iop_shard_stats_t *s);
IOP_EXPORT uint32_t iop_shard_stats_count(const iop_shard_stats_t *s);
/* A snapshot of slot i (each field read atomically, the set not at one instant). */
IOP_EXPORT int iop_shard_stats_read(const iop_shard_stats_t *s, uint32_t i,
                                    iop_shard_worker_stats_t *out);

#endif
