/* ioplexd: what its files share. ioplexd.c parses the command line and runs either
 * one process (--workers 0) or a supervisor with workers (shard.h); worker.c is
 * what each serving process does: start the services on its loop, serve their
 * listeners until a drain, print stats. */
#ifndef IOPLEXD_H
#define IOPLEXD_H

#include <ioplex.h>
#include <ioplex/shard.h>

#define PROG "ioplexd"
#define MAX_SERVICES 16
#define MAX_SERVICE_OPTS 32
/* The service host closes every connection through the loop, so long-lived ones may
 * be registered with the backend (io_uring fixed files: no file lookup per op). */
#define IOPLEXD_LOOP_FLAGS IOP_LOOP_REGISTER_BUSY_FDS
#define RECV_POOL_DEFAULT 256          /* receive pool buffers per loop (--recv-pool) */
#define RECV_POOL_BUF 2048             /* bytes each: a request head, usually */

enum { EXIT_USAGE = 2 };

typedef struct service_slot {
    char *spec;                  /* "NAME=ADDR,k=v" as given (owned copy, split in place) */
    const char *name, *listen;
    iop_service_opt_t opts[MAX_SERVICE_OPTS];
    size_t nopts;
    iop_service_t *module;
    const iop_service_desc_t *desc;
    iop_service_desc_t own_desc; /* the plugin's, with flags changed (--no-defer-accept) */
    void *state;                 /* from desc->create, inherited by the workers */
    size_t naddr;                /* addresses it listens on (a name may have several) */
} service_slot_t;

typedef struct daemon {
    const char *backend, *plugin_path;
    uint32_t workers;            /* 0 = serve in this process */
    int stats;                   /* print a stats line every stats_ns */
    uint64_t stats_ns;           /* --stats-interval, default a second */
    int no_defer_accept;         /* accept client-first services' connections at once */
    uint64_t drain_ns;
    uint32_t recv_pool;          /* receive pool buffers per loop, 0 = none */
    service_slot_t svc[MAX_SERVICES];
    size_t nsvc;
    size_t listening;            /* services the supervisor bound (with workers) */
    struct listener *solo;       /* --workers 0: our own listeners */
    size_t nsolo;
    /* Counters: [worker slot][cell][service] and the writer of each [slot][cell],
     * in shared memory. A slot has STAT_CELLS cells so that a worker and the ones
     * replacing it (SIGHUP, respawn) never write the same counters: each cell has
     * one writer, and the host's plain increments stay exact. Each SIGHUP sent
     * while the previous generation still drains adds a live writer to the slot. */
    iop_service_stats_t *counters;
    uint64_t *owners;            /* writers' identities (proc_ident.h): pids get reused */
    size_t ncounters;
    uint32_t cell;               /* this process's cell in its slot (daemon_claim_cell) */
} daemon_t;

#define STAT_CELLS 8

static inline iop_service_stats_t *daemon_cell(daemon_t *d, uint32_t worker, uint32_t cell, size_t svc)
{
    return &d->counters[((size_t)worker * STAT_CELLS + cell) * d->nsvc + svc];
}

/* This process's counters for service svc. */
static inline iop_service_stats_t *daemon_counters(daemon_t *d, uint32_t worker, size_t svc)
{
    return daemon_cell(d, worker, d->cell, svc);
}

/* Takes a cell of slot worker for this process (worker.c). */
void daemon_claim_cell(daemon_t *d, uint32_t worker);
/* The totals of slot worker for service svc over its cells; open counts only cells
 * whose writer still runs (a dead worker's connections died with it). */
void daemon_slot_stats(daemon_t *d, uint32_t worker, size_t svc, iop_service_stats_t *out);

/* A listening socket and the service it serves: one per address of each service. */
typedef struct listener {
    int fd;
    size_t svc;                  /* index in daemon_t.svc */
    void *accept_arg;            /* for worker_run_t.accept */
} listener_t;

/* Serves every service on loop (a service host per listener) until *stop is set (by
 * the caller's signal handling or a supervisor's drain), then drains by deadline_ns
 * from then. 0, or -errno after printing why. */
typedef struct worker_run {
    daemon_t *d;
    iop_loop_t *loop;
    uint32_t index;
    const listener_t *listeners;
    size_t nlisten;
    int (*wait_stop)(void *arg); /* parks until the drain starts (coroutine call) */
    void *stop_arg;
    uint64_t (*drain_deadline)(void *arg);
    /* Optional: accept on a listener, given its accept_arg (see
     * iop_service_host_t.accept). */
    int (*accept)(void *arg, struct sockaddr *addr, socklen_t *addrlen);
} worker_run_t;

int worker_serve(worker_run_t *wr);

/* "ioplexd: NAME listening on WHERE (options)" on stdout. */
void print_service_line(const service_slot_t *s, const char *where);

/* --workers N: the supervisor (supervise.c). An exit status. */
int run_workers(daemon_t *d);

/* One stats line over all workers (every second with --stats); secs 0 only takes
 * the starting point of the rates. */
void stats_line(daemon_t *d, const char *backend, double secs);

#endif
