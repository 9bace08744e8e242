/* Internal: the supervisor's records and what its files share. */
#ifndef IOP_SHARD_INTERNAL_H
#define IOP_SHARD_INTERNAL_H

#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/types.h>
#include "ioplex/alloc.h"
#include "ioplex/coro.h"
#include "ioplex/shard.h"
#include "clock_internal.h"
#include "error_internal.h"

#define IOP__NS 1000000000ull
#define IOP__MS 1000000ull
#define IOP__SHARD_MAX_WORKERS 4096u

/* ---- control messages (SOCK_SEQPACKET socketpair, one per worker process) ------
 * supervisor → worker: 'D' + u64 deadline   drain now, finish by deadline
 * worker → supervisor: 'R'                  ready
 *                      'F' + i32 err + text setup failed (before running the worker)
 *                      'E' + text           the worker function failed (at its end) */
#define IOP__MSG_DRAIN 'D'
#define IOP__MSG_READY 'R'
#define IOP__MSG_FATAL 'F'
#define IOP__MSG_EXIT  'E'
#define IOP__MSG_MAX   256

/* ---- shared counters (stats.c) -------------------------------------------------------
 * A cell per worker process, so that a process that dies takes only its own open
 * count with it: the supervisor folds a dead cell's accepted count into its slot. */
typedef struct iop__shard_cell {
    _Atomic uint32_t slot_plus1;   /* 0 = free */
    _Atomic uint64_t accepted;
    _Atomic int64_t open;
} iop__shard_cell_t;

typedef struct iop__shard_slot_stats {
    _Atomic int32_t pid;
    _Atomic uint32_t ready, generation, crashes;
    _Atomic uint64_t accepted_dead;   /* from cells already folded */
} iop__shard_slot_stats_t;

struct iop_shard_stats {
    size_t map_len;
    uint32_t nslots, ncells;
    iop__shard_slot_stats_t *slots;
    iop__shard_cell_t *cells;
};

iop__shard_cell_t *iop__shard_cell_take(iop_shard_stats_t *s, uint32_t slot);
void iop__shard_cell_put(iop_shard_stats_t *s, iop__shard_cell_t *c, uint32_t slot);

/* ---- listeners (listeners.c) ---------------------------------------------------------- */

typedef struct iop__shard_listeners {
    uint32_t naddr;                /* addresses bound: one per opts.listen entry, more for a
                                    * name with several under IOP_SHARD_ALL_ADDRESSES */
    uint32_t per_addr;             /* sockets per address: workers, or 1 when shared */
    uint32_t *entry;               /* [addr]: the opts.listen index it came from */
    int *fds;                      /* [addr * per_addr + k] */
} iop__shard_listeners_t;

/* Resolves every opts.listen entry, binds and listens every socket (in worker order,
 * so that a reuseport group indexes them as workers). -errno with a message naming
 * the address, every socket closed. */
int iop__shard_listeners_open(iop__shard_listeners_t *l, const iop_shard_opts_t *o,
                              uint32_t nworkers);
void iop__shard_listeners_close(iop__shard_listeners_t *l);
void iop__shard_listeners_free(iop__shard_listeners_t *l);   /* closes them too */
/* The socket of address a that worker i accepts on. */
int iop__shard_listener_fd(const iop__shard_listeners_t *l, uint32_t a, uint32_t i);

/* ---- CPUs (cpus.c) ---------------------------------------------------------------------- */

typedef struct iop__shard_cpus {
    uint32_t n;                    /* CPUs this process may run on */
    uint16_t *ids;                 /* their numbers, ascending */
} iop__shard_cpus_t;

int iop__shard_cpus_get(iop__shard_cpus_t *c);
void iop__shard_cpus_free(iop__shard_cpus_t *c);
/* Pins the calling process to the CPU of worker i. */
int iop__shard_pin(const iop__shard_cpus_t *c, uint32_t i);
/* Attaches the CPU-steering program to the reuseport group of fd (nworkers <= c->n). */
int iop__shard_steer(int fd, const iop__shard_cpus_t *c, uint32_t nworkers);

/* ---- the supervisor (supervisor.c, procs.c, restart.c) -------------------------------- */

enum { IOP__P_STARTING, IOP__P_READY, IOP__P_DRAINING };
enum { IOP__R_CUR, IOP__R_NEXT, IOP__R_OLD };
enum { IOP__KILL_NONE, IOP__KILL_NOT_READY, IOP__KILL_DRAIN, IOP__KILL_STOP };

typedef struct iop__shard_proc {
    struct iop__shard_proc *next;
    uint32_t slot;
    pid_t pid;
    int pidfd;                     /* -1: none (no pidfd_open): polled with waitpid */
    int ctl;                       /* our end of the control socket, -1 after EOF */
    int state, role, killed;
    uint64_t started;              /* monotonic ns */
    uint64_t deadline;             /* STARTING: ready by; DRAINING: SIGKILL at */
    iop__shard_cell_t *cell;
    char note[IOP__MSG_MAX];       /* what it said at its end ('E' / 'F') */
    int fatal_err;                 /* from an 'F' message */
} iop__shard_proc_t;

typedef struct iop__shard_slot {
    iop__shard_proc_t *cur, *next;
    uint64_t respawn_at;           /* 0 = none pending */
    uint64_t backoff;
    uint64_t *crash_at;            /* ring of the last crash_limit + 1 crash times */
    uint32_t ncrash;
} iop__shard_slot_t;

typedef struct iop__shard_sup {
    iop_shard_opts_t o;            /* with defaults filled in */
    uint32_t n;                    /* workers */
    pid_t self;
    iop__shard_cpus_t cpus;
    iop__shard_listeners_t lst;
    iop_shard_stats_t *stats;
    int own_stats;
    iop__shard_slot_t *slots;
    iop__shard_proc_t *procs;
    uint32_t nprocs;
    int sigfd;
    sigset_t oldmask;
    int stopping;                  /* draining everything */
    int ever_ready;                /* some worker has been ready */
    int restart_slot;              /* rolling restart position, -1 = none */
    int restart_again;             /* a SIGHUP came during one */
    int restart_stepping;          /* inside iop__shard_restart_step (it is not re-entered) */
    uint64_t restart_began;
    int result;
    char error[512];
} iop__shard_sup_t;

uint64_t iop__shard_now(void);
void iop__shard_log(iop__shard_sup_t *s, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Records the first failure (result and message) and starts stopping. */
void iop__shard_fail(iop__shard_sup_t *s, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void iop__shard_stop(iop__shard_sup_t *s, const char *why);

/* procs.c: fork a worker process for slot (role CUR or NEXT), tell one to drain,
 * read what it says, reap it. */
int iop__shard_spawn(iop__shard_sup_t *s, uint32_t slot, int role);
void iop__shard_drain_proc(iop__shard_sup_t *s, iop__shard_proc_t *p, uint64_t deadline);
void iop__shard_read_ctl(iop__shard_sup_t *s, iop__shard_proc_t *p);
void iop__shard_reap(iop__shard_sup_t *s);
void iop__shard_kill(iop__shard_sup_t *s, iop__shard_proc_t *p, int why);
/* "killed by SIGKILL", "exited with status 3" */
void iop__shard_describe_status(int status, char *buf, size_t len);

/* restart.c: rolling restart, respawns and crash accounting */
void iop__shard_restart_begin(iop__shard_sup_t *s);
void iop__shard_restart_step(iop__shard_sup_t *s);
void iop__shard_on_ready(iop__shard_sup_t *s, iop__shard_proc_t *p);
void iop__shard_on_exit(iop__shard_sup_t *s, iop__shard_proc_t *p, int status);
void iop__shard_timers(iop__shard_sup_t *s, uint64_t now);
uint64_t iop__shard_next_timer(const iop__shard_sup_t *s);

/* ---- the worker side (worker.c, serve.c) ------------------------------------------------ */

struct iop_shard_worker {
    uint32_t index, count;
    iop_loop_t *loop;
    void *arg;
    int ctl;                       /* control socket to the supervisor */
    uint32_t nlisten;
    int *fds;                      /* listeners, -1 once closed by the drain */
    const uint32_t *entry;         /* [listener]: its opts.listen index */
    uint32_t *parked;              /* accepts parked on each listener */
    uint32_t sweep_left;           /* connections the drain may still sweep up */
    int draining, ready_sent;
    uint64_t drain_deadline;
    uint64_t drain_timeout;        /* if the supervisor vanishes without a deadline */
    iop_wg_t drain_wg;             /* 1 until draining starts */
    iop__shard_cell_t *cell;       /* counters, may be NULL */
};

/* worker.c: the worker process's life after fork; never returns. */
_Noreturn void iop__shard_worker_main(iop__shard_sup_t *s, uint32_t slot, int ctl,
                                      iop__shard_cell_t *cell);

#endif
