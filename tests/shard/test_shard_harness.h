/* Harness of the shard tests: runs a supervisor (iop_shard_run) in a forked child
 * of the test, with an echo worker that tags each reply with its worker index and
 * pid, and gives the test what it needs to watch it: the bound ports, the shared
 * counters, the supervisor's result and its event lines.
 *
 * Nothing outlives a test: the test process is a child subreaper (orphaned workers
 * come back to it), the supervisor child dies with the test (PDEATHSIG) and its
 * workers with it, and sh_teardown kills and reaps every remaining descendant by
 * pid, within a bounded time. */
#ifndef SHARD_HARNESS_H
#define SHARD_HARNESS_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include "ioplex.h"
#include "ioplex/shard.h"
#include "test_util.h"

#define SH_MAX_WORKERS 8
#define SH_MAX_LISTEN 4

/* What the supervisor child should run. Zero fields mean the library's defaults. */
typedef struct sh_config {
    uint32_t workers;
    uint32_t mode;                 /* IOP_SHARD_REUSEPORT / IOP_SHARD_SHARED */
    uint32_t flags;
    const char *listen[SH_MAX_LISTEN + 1];   /* NULL-terminated; default 127.0.0.1:0 */
    iop_shard_worker_fn worker;    /* default sh_echo_worker */
    const char *backend;           /* default: the backend under test */
    uint64_t drain_timeout_ns, ready_timeout_ns, crash_window_ns, backoff_min_ns;
    uint32_t crash_limit;
} sh_config_t;

/* Shared between the test, the supervisor child and the workers. */
typedef struct sh_shared {
    _Atomic int port[SH_MAX_LISTEN];
    _Atomic int listening;         /* on_listen ran for every address */
    _Atomic int finished;          /* iop_shard_run returned: result, error */
    int result;
    char error[512];
    _Atomic uint32_t log_len;
    char log[16384];               /* the supervisor's event lines */
} sh_shared_t;

extern sh_shared_t *sh;
extern iop_shard_stats_t *sh_stats;
extern pid_t sh_sup;               /* the supervisor child, 0 when none */
extern const char *sh_backend;     /* the backend under test (argv[1]) */

/* Once per program: subreaper, shared memory, backend from argv. */
void sh_init(int argc, char **argv);

/* cmocka per-test setup / teardown (teardown kills and reaps everything). */
int sh_setup(void **state);
int sh_teardown(void **state);

/* Forks the supervisor and waits until it listens (5 s). */
void sh_start(const sh_config_t *cfg);
/* Forks a supervisor that should fail by itself and waits up to ms for it: its
 * iop_shard_run result (error text in sh->error), 1000 if it did not end. */
int sh_start_failing(const sh_config_t *cfg, unsigned ms);

/* Waits until every slot has a ready worker whose pid is not in avoid[] (avoid
 * may be NULL; n entries). 1 when so within ms. */
int sh_wait_ready(const pid_t *avoid, unsigned n, unsigned ms);

/* The pid serving slot i now (0 if none). */
pid_t sh_worker_pid(uint32_t i);

/* Sends sig (0: none) and waits up to ms for the supervisor to exit; returns its
 * iop_shard_run result, 1000 if it did not exit in time, 2000 if it died before
 * returning, 3000 if it exited non-zero after a 0 result (valgrind / sanitizer). */
int sh_stop(int sig, unsigned ms);

/* One request on a fresh connection to listener l ("hello" → "w<i> p<pid>: hello").
 * 0 and *worker / *pid, or -errno (ECONNREFUSED, ECONNRESET, ETIMEDOUT, EPROTO ...). */
int sh_request(uint32_t l, const char *msg, int *worker, pid_t *pid);

/* The same on the loopback address of family (AF_INET, AF_INET6) at listener l's
 * port, whatever listen[l] says (a name may listen on both). */
int sh_request_family(uint32_t l, int family, const char *msg, int *worker, pid_t *pid);

/* A connected client socket (blocking, 5 s timeouts) to listener l (or to the
 * loopback address of family at its port); -errno. */
int sh_connect(uint32_t l);
int sh_connect_family(uint32_t l, int family);
/* One exchange on an open connection: 0 and the tag, or -errno. */
int sh_exchange(int fd, const char *msg, int *worker, pid_t *pid);

/* The echo worker (iop_shard_serve with a tagging echo). */
int sh_echo_worker(iop_shard_worker_t *w);

/* The descendants of the test process (children listed by /proc); up to max. */
int sh_children(pid_t *out, int max);

/* Is the IPv6 loopback usable here? */
int sh_have_ipv6(void);

/* Prints the supervisor's event log (for a failing test). */
void sh_dump_log(void);

#define SH_MS 1000000ull

#endif
