/* What a serving process of ioplexd does: start every service on its loop, serve
 * each listener with a service host (one coroutine per connection), and when told
 * to stop, drain them all at once: no more accepting, idle connections closed now,
 * busy ones given until the drain deadline. Worker 0 also prints the stats line. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "ioplexd.h"
#include "proc_ident.h"

#define SEC 1000000000ull

typedef struct drain_job {
    iop_service_host_t *host;
    uint64_t deadline;
    int res;
} drain_job_t;

static void *drain_one(void *arg)
{
    drain_job_t *j = arg;
    j->res = iop_service_host_drain(j->host, j->deadline);
    return NULL;
}

typedef struct ticker {
    daemon_t *d;
    iop_loop_t *loop;
} ticker_t;

static void *stats_ticker(void *arg)
{
    ticker_t *t = arg;
    uint64_t last = iop_now(t->loop);
    stats_line(t->d, NULL, 0);    /* counters of earlier generations are not this second's */
    while (iop_sleep_until(last + t->d->stats_ns) == 0) {
        uint64_t now = iop_now(t->loop);
        stats_line(t->d, iop_loop_backend(t->loop), (double)(now - last) / 1e9);
        last = now;
    }
    return NULL;
}

/* A free cell first, else one whose writer is gone (exited, or died: the
 * supervisor has reaped it before it starts a replacement, and its pid may belong
 * to another process by now, hence identities rather than pids). Totals carry on;
 * the dead writer's open connections are closed. */
void daemon_claim_cell(daemon_t *d, uint32_t worker)
{
    uint64_t me = iop_app_proc_ident(getpid());
    for (int pass = 0; pass < 2; pass++)
        for (uint32_t c = 0; c < STAT_CELLS; c++) {
            uint64_t *o = &d->owners[worker * STAT_CELLS + c];
            uint64_t cur = __atomic_load_n(o, __ATOMIC_ACQUIRE);
            if (pass == 0 ? cur != 0 : (cur == me || iop_app_proc_alive(cur)))
                continue;
            if (__atomic_compare_exchange_n(o, &cur, me, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
                d->cell = c;
                for (size_t s = 0; s < d->nsvc; s++)
                    daemon_cell(d, worker, c, s)->open = 0;
                return;
            }
        }
    /* Every cell has a live writer: more generations of this worker draining at once
     * than cells (SIGHUPs faster than drains). Share the first; its open count may
     * then be off until that generation ends. */
    fprintf(stderr, PROG ": worker %u: %u generations still running: its --stats counts are shared\n",
            worker, (unsigned)STAT_CELLS);
    d->cell = 0;
}

void daemon_slot_stats(daemon_t *d, uint32_t worker, size_t svc, iop_service_stats_t *out)
{
    memset(out, 0, sizeof *out);
    for (uint32_t c = 0; c < STAT_CELLS; c++) {
        const volatile iop_service_stats_t *x = daemon_cell(d, worker, c, svc);
        out->connections += x->connections;
        out->requests += x->requests;
        out->bytes_in += x->bytes_in;
        out->bytes_out += x->bytes_out;
        out->errors += x->errors;
        uint64_t open = x->open;
        if (open && iop_app_proc_alive(__atomic_load_n(&d->owners[worker * STAT_CELLS + c],
                                                       __ATOMIC_ACQUIRE)))
            out->open += open;
    }
}

/* Each listener's service host and what drains it. */
typedef struct listener_run {
    iop_service_host_t host;
    drain_job_t job;
    iop_coro_t *drainer;
} listener_run_t;

int worker_serve(worker_run_t *wr)
{
    daemon_t *d = wr->d;
    daemon_claim_cell(d, wr->index);
    size_t started = 0, hooked = 0;
    int r = 0;
    listener_run_t *runs = calloc(wr->nlisten ? wr->nlisten : 1, sizeof *runs);
    if (!runs) {
        fprintf(stderr, PROG ": worker %u: out of memory for %zu listeners\n", wr->index, wr->nlisten);
        return -ENOMEM;
    }
    /* Every service's worker_start before any accepting: a worker is ready (and a
     * rolling restart drains the one it replaces) at its first accept, so a service
     * that cannot start must fail before any listener is served. Once per service,
     * however many addresses it listens on. */
    for (; hooked < d->nsvc; hooked++) {
        service_slot_t *s = &d->svc[hooked];
        if (!s->desc->worker_start)
            continue;
        char err[256] = "";
        r = s->desc->worker_start(s->state, wr->loop, (int)wr->index, err, sizeof err);
        if (r < 0) {
            fprintf(stderr, PROG ": worker %u: service %s cannot start: %s\n", wr->index,
                    s->name, err[0] ? err : iop_strerror(r));
            break;
        }
    }
    /* A host per listener; the hosts of one service's addresses share its state and
     * its counters (one process, one thread: their plain increments stay exact). */
    for (size_t i = 0; r == 0 && i < wr->nlisten; i++) {
        const listener_t *l = &wr->listeners[i];
        service_slot_t *s = &d->svc[l->svc];
        iop_service_host_t *h = &runs[i].host;
        h->desc = s->desc;
        h->state = s->state;
        h->loop = wr->loop;
        h->listen_fd = l->fd;
        h->worker = (int)wr->index;
        h->stats = daemon_counters(d, wr->index, l->svc);
        h->accept = wr->accept;
        h->accept_arg = l->accept_arg;
        r = iop_service_host_start(h);
        if (r < 0) {
            fprintf(stderr, PROG ": worker %u: service %s: %s\n", wr->index, s->name, iop_last_error());
            break;
        }
        started++;
    }

    iop_coro_t *tick = NULL;
    ticker_t t = { .d = d, .loop = wr->loop };
    if (r == 0 && d->stats && wr->index == 0)
        iop_go(wr->loop, stats_ticker, &t, NULL, &tick);
    if (r == 0)
        wr->wait_stop(wr->stop_arg);

    /* The stats line stops with the drain: on a rolling restart the new worker 0
     * prints it, and two tickers would count the same shared counters twice. */
    if (tick) {
        iop_cancel(tick);
        iop_join(tick, NULL, 0);
    }
    /* Drain every listener's host at once, each in its own coroutine, to one deadline. */
    uint64_t deadline = wr->drain_deadline(wr->stop_arg);
    for (size_t i = 0; i < started; i++) {
        listener_run_t *lr = &runs[i];
        lr->job = (drain_job_t){ .host = &lr->host, .deadline = deadline };
        if (iop_go(wr->loop, drain_one, &lr->job, NULL, &lr->drainer) < 0) {
            lr->drainer = NULL;
            drain_one(&lr->job);
        }
    }
    int late = 0;
    for (size_t i = 0; i < started; i++) {
        if (runs[i].drainer)
            iop_join(runs[i].drainer, NULL, 0);
        late |= runs[i].job.res == -ETIMEDOUT;
    }
    for (size_t i = 0; i < hooked; i++)   /* those whose worker_start ran */
        if (d->svc[i].desc->worker_stop)
            d->svc[i].desc->worker_stop(d->svc[i].state);
    if (late)
        fprintf(stderr, PROG ": worker %u: some connections were still busy at the drain deadline "
                "and were closed\n", wr->index);
    free(runs);
    return r;
}

/* ---- the stats line ------------------------------------------------------------------ */

static void human_bytes(double v, char *buf, size_t len)
{
    static const char *const unit[] = { "B", "KB", "MB", "GB" };
    int u = 0;
    while (v >= 1000 && u < 3) {
        v /= 1000;
        u++;
    }
    snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
}

void stats_line(daemon_t *d, const char *backend, double secs)
{
    /* Previous totals per worker, to turn counters into rates. */
    static uint64_t prev_req[256], prev_in, prev_out;
    uint32_t nw = d->workers ? d->workers : 1;
    uint64_t conns = 0, open = 0, req = 0, in = 0, out = 0, errs = 0;
    /* Room for all 256 workers (it stopped at ~46); static: this runs on a small
     * coroutine stack, in one place only. */
    static char per[256 * 64];
    per[0] = '\0';
    size_t off = 0;
    for (uint32_t w = 0; w < nw; w++) {
        uint64_t wreq = 0, wopen = 0;
        for (size_t s = 0; s < d->nsvc; s++) {
            iop_service_stats_t c;
            daemon_slot_stats(d, w, s, &c);
            conns += c.connections;
            wopen += c.open;
            wreq += c.requests;
            in += c.bytes_in;
            out += c.bytes_out;
            errs += c.errors;
        }
        open += wopen;
        req += wreq;
        if (secs > 0 && nw > 1 && w < 256 && off < sizeof per - 64)
            off += (size_t)snprintf(per + off, sizeof per - off, "%s%u: %.0f req/s, %" PRIu64 " open",
                                    w ? "; " : "", w, (double)(wreq - prev_req[w]) / secs, wopen);
        if (w < 256)
            prev_req[w] = wreq;
    }
    static uint64_t prev_total;
    if (secs <= 0) {             /* only take the starting point */
        prev_total = req;
        prev_in = in;
        prev_out = out;
        return;
    }
    char rin[32], rout[32];
    human_bytes((double)(in - prev_in) / secs, rin, sizeof rin);
    human_bytes((double)(out - prev_out) / secs, rout, sizeof rout);
    fprintf(stderr, PROG ": stats: %" PRIu64 " connections, %" PRIu64 " open, %.0f req/s, in %s/s, "
            "out %s/s, %" PRIu64 " errors, backend %s%s%s%s\n", conns, open,
            (double)(req - prev_total) / secs, rin, rout, errs, backend,
            per[0] ? "; workers: " : "", per, "");
    prev_total = req;
    prev_in = in;
    prev_out = out;
}
