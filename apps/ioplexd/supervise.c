/* ioplexd with workers: the supervisor (iop_shard_run) binds the listeners of every
 * service (each address of a name; SO_REUSEPORT, one socket per worker), forks the
 * workers and watches them; each worker makes its own loop and serves every
 * listener (worker.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "hostport.h"
#include "ioplexd.h"

#define SEC 1000000000ull

static void on_listen(void *arg, uint32_t i, const struct sockaddr *addr, socklen_t len)
{
    daemon_t *d = arg;
    char where[128];
    iop_app_format_addr(addr, len, where, sizeof where);
    print_service_line(&d->svc[i], where);
    fflush(stdout);
    if (d->svc[i].naddr++ == 0)
        d->listening++;
}

static void on_event(void *arg, int level, const char *line)
{
    (void)arg;
    fprintf(stderr, PROG ": %s%s\n", level == IOP_SHARD_WARN ? "warning: " : "", line);
}

typedef struct wctx {
    iop_shard_worker_t *w;
    daemon_t *d;
} wctx_t;

static int wait_stop(void *arg)
{
    return iop_shard_wait_drain(((wctx_t *)arg)->w, 0);
}

/* The worker's own deadline: the drain timeout from when the drain began; the
 * supervisor's (a second later) only catches a worker that overran it. */
static uint64_t drain_deadline(void *arg)
{
    wctx_t *c = arg;
    return iop_now(iop_shard_loop(c->w)) + c->d->drain_ns;
}

/* Accepting through the shard: at a drain it takes what the kernel already queued
 * for this worker (so no connection is lost in a rolling restart), then says
 * -ECANCELED. */
typedef struct shard_listener {
    iop_shard_worker_t *w;
    uint32_t index;
} shard_listener_t;

static int shard_accept(void *arg, struct sockaddr *addr, socklen_t *addrlen)
{
    shard_listener_t *l = arg;
    return iop_shard_accept(l->w, l->index, addr, addrlen, 0);
}

static int worker_main(iop_shard_worker_t *w)
{
    daemon_t *d = iop_shard_arg(w);
    uint32_t n = iop_shard_nlisteners(w);
    listener_t *ls = calloc(n ? n : 1, sizeof *ls);
    shard_listener_t *acc = calloc(n ? n : 1, sizeof *acc);
    int r = -ENOMEM;
    if (!ls || !acc) {
        fprintf(stderr, PROG ": worker %u: out of memory for %u listeners\n", iop_shard_index(w), n);
        goto out;
    }
    for (uint32_t i = 0; i < n; i++) {
        acc[i] = (shard_listener_t){ .w = w, .index = i };
        ls[i] = (listener_t){ .fd = iop_shard_listener(w, i), .svc = iop_shard_listener_entry(w, i),
                              .accept_arg = &acc[i] };
    }
    wctx_t c = { .w = w, .d = d };
    worker_run_t wr = {
        .d = d, .loop = iop_shard_loop(w), .index = iop_shard_index(w), .listeners = ls,
        .nlisten = n, .wait_stop = wait_stop, .stop_arg = &c, .drain_deadline = drain_deadline,
        .accept = shard_accept,
    };
    /* Ready only once the services' worker_start hooks ran: the first accept (or
     * the wait for a stop) says so. A rolling restart must not drain the old
     * worker for a new one that cannot serve. */
    r = worker_serve(&wr);
out:
    free(ls);
    free(acc);
    return r < 0 ? 1 : 0;
}

/* Which backend the workers will take (each makes its own loop after the fork):
 * asked once here, to say so up front and to fail early when it is unavailable.
 * 0, or the exit status (printed). */
static int report_backend(const daemon_t *d)
{
    iop_loop_t *loop;
    iop_loop_opts_t lo = { .size = sizeof lo, .backend = d->backend, .plugin_path = d->plugin_path,
                           .buf_count = d->recv_pool, .buf_size = RECV_POOL_BUF };
    int r = iop_loop_create(&loop, &lo);
    if (r < 0) {
        fprintf(stderr, PROG ": cannot start the event loop: %s\n", iop_last_error());
        return iop_app_loop_exit_status(r);
    }
    const char *report = iop_loop_backend_report(loop);
    printf(PROG ": backend %s%s%s%s\n", iop_loop_backend(loop), report[0] ? " (" : "", report,
           report[0] ? ")" : "");
    iop_loop_destroy(loop);
    return 0;
}

int run_workers(daemon_t *d)
{
    int status = report_backend(d);
    if (status)
        return status;
    const char *listen[MAX_SERVICES + 1];
    for (size_t i = 0; i < d->nsvc; i++)
        listen[i] = d->svc[i].listen;
    listen[d->nsvc] = NULL;
    iop_loop_opts_t lo = { .size = sizeof lo, .flags = IOPLEXD_LOOP_FLAGS, .backend = d->backend,
                           .plugin_path = d->plugin_path, .buf_count = d->recv_pool,
                           .buf_size = RECV_POOL_BUF };
    iop_shard_opts_t so = {
        .size = sizeof so, .flags = IOP_SHARD_ALL_ADDRESSES, .workers = d->workers,
        .listen = listen, .loop_opts = &lo,
        .backend = d->backend, .worker = worker_main, .arg = d,
        .drain_timeout_ns = d->drain_ns + SEC, .on_listen = on_listen, .on_event = on_event,
        .event_arg = d,
    };
    printf(PROG ": %u worker%s\n", d->workers, d->workers == 1 ? "" : "s");
    fflush(stdout);
    int r = iop_shard_run(&so);
    /* How the connections were spread over the workers (every generation), once
     * there were workers to spread them over. */
    if (d->listening == d->nsvc) {
        fprintf(stderr, PROG ": connections per worker:");
        for (uint32_t w = 0; w < d->workers; w++) {
            uint64_t n = 0;
            for (size_t i = 0; i < d->nsvc; i++) {
                iop_service_stats_t c;
                daemon_slot_stats(d, w, i, &c);
                n += c.connections;
            }
            fprintf(stderr, " %u: %llu%s", w, (unsigned long long)n, w + 1 < d->workers ? "," : "\n");
        }
    }
    if (r == 0)
        return EXIT_SUCCESS;
    fprintf(stderr, PROG ": %s\n", iop_last_error()[0] ? iop_last_error() : iop_strerror(r));
    if (r == -EINVAL || r == -EADDRINUSE || r == -EADDRNOTAVAIL || r == -EACCES)
        return EXIT_USAGE;
    return EXIT_FAILURE;
}
