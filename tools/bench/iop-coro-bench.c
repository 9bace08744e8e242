/* iop-coro-bench: what coroutines cost, side by side in one run.
 *
 * Machine layer (core/src/coro: ctx.h, stack.h), ping-pong between the main context
 * and one coroutine, ns per switch (one round trip = two switches):
 *   call        an empty call + return, for scale
 *   ctx         iop__ctx_switch, the raw assembly switch
 *   fiber       iop__fiber_switch on a guarded stack (what the scheduler calls)
 *   fiber-can   the same on a canary stack: the canary is checked on every switch away
 *   swapctx     glibc swapcontext, the yardstick (saves the signal mask: a syscall)
 *   stack-pool  iop__stack_get + iop__stack_put of a pooled stack
 * Scheduler, through the public API (a loop on the default backend):
 *   spawn       iop_go + iop_join of an empty coroutine from a coroutine (pooled stacks)
 *   chan        one element through an unbuffered channel, producer to consumer
 *   rss         KiB of resident memory per parked coroutine, --parked of them parked in
 *               iop_chan_recv, canary stacks (guard pages would stop near 32,000)
 *
 * Each measurement runs --repeat times and the fastest run is shown: the noise on a
 * shared machine only ever adds time. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <ioplex.h>
#include <ioplex/coro.h>
#include "ctx.h"
#include "stack.h"

#define PROG "iop-coro-bench"

enum { EXIT_USAGE = 2 };

struct opts {
    long iters;      /* round trips for the fast measurements */
    int repeat;
    long parked;     /* coroutines for the rss row */
};

static struct opts g_opts;

/* One row of the table. unit is "ns" or "KiB"; base marks the row others are compared to. */
struct row {
    const char *name;
    double value;
    const char *unit;
    int base;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static iop__stack_pool_t *pool;

/* ---- empty call ------------------------------------------------------------------------ */

static __attribute__((noinline)) void empty_call(void)
{
    __asm__ volatile("");
}

static double run_call(long n)
{
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++)
        empty_call();
    return (double)(now_ns() - t0) / (double)n;
}

/* ---- ping-pong on the ioplex switch -------------------------------------------------------- */

static iop__ctx_t main_ctx, co_ctx;
static iop__stack_t co_stack;
static int use_fiber;   /* 0: iop__ctx_switch, 1: iop__fiber_switch */

static void pong(void *arg)
{
    (void)arg;
    for (;;) {
        if (use_fiber)
            iop__fiber_switch(&co_ctx, &co_stack, &main_ctx, NULL, 0);
        else
            iop__ctx_switch(&co_ctx, &main_ctx);
    }
}

/* ns per switch; the coroutine is left suspended and its stack given back. */
static double run_switch(long n, int fiber, uint32_t stack_flags)
{
    if (iop__stack_get(pool, 0, stack_flags, &co_stack) != 0) {
        fprintf(stderr, PROG ": no stack: %s\n", iop_last_error());
        exit(1);
    }
    co_stack.owner = "bench";
    iop__ctx_make(&co_ctx, &co_stack, pong, NULL);
    use_fiber = fiber;
    uint64_t t0 = now_ns();
    if (fiber)
        for (long i = 0; i < n; i++)
            iop__fiber_switch(&main_ctx, NULL, &co_ctx, &co_stack, 0);
    else
        for (long i = 0; i < n; i++)
            iop__ctx_switch(&main_ctx, &co_ctx);
    double ns = (double)(now_ns() - t0) / (2.0 * (double)n);
    iop__ctx_unmake(&co_ctx);
    iop__stack_put(pool, &co_stack);
    return ns;
}

static double run_ctx(long n) { return run_switch(n, 0, IOP_CORO_GUARD); }
static double run_fiber(long n) { return run_switch(n, 1, IOP_CORO_GUARD); }
static double run_fiber_canary(long n) { return run_switch(n, 1, IOP_CORO_CANARY); }

/* ---- ping-pong on glibc swapcontext ------------------------------------------------------- */

static ucontext_t uc_main, uc_co;

static void uc_pong(void)
{
    for (;;)
        swapcontext(&uc_co, &uc_main);
}

static double run_swapcontext(long n)
{
    iop__stack_t s;
    if (iop__stack_get(pool, 0, IOP_CORO_GUARD, &s) != 0) {
        fprintf(stderr, PROG ": no stack: %s\n", iop_last_error());
        exit(1);
    }
    getcontext(&uc_co);
    uc_co.uc_stack.ss_sp = s.lo;
    uc_co.uc_stack.ss_size = s.size;
    uc_co.uc_link = NULL;
    makecontext(&uc_co, uc_pong, 0);
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++)
        swapcontext(&uc_main, &uc_co);
    double ns = (double)(now_ns() - t0) / (2.0 * (double)n);
    iop__stack_put(pool, &s);
    return ns;
}

/* ---- pooled stacks --------------------------------------------------------------------------- */

static double run_stack_pool(long n)
{
    iop__stack_t s;
    iop__stack_get(pool, 0, IOP_CORO_GUARD, &s);   /* the pool has one from here on */
    iop__stack_put(pool, &s);
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        iop__stack_get(pool, 0, IOP_CORO_GUARD, &s);
        iop__stack_put(pool, &s);
    }
    return (double)(now_ns() - t0) / (double)n;
}

/* ---- the scheduler ---------------------------------------------------------------------------- */

static void die(const char *what, int rc)
{
    fprintf(stderr, PROG ": %s: %s (%s)\n", what, iop_strerror(rc), iop_last_error());
    exit(1);
}

/* A loop configured for flags (the scheduler is configured once, before its first
 * coroutine); destroyed by the caller. */
static iop_loop_t *sched_loop(uint32_t flags)
{
    iop_loop_t *loop;
    int rc = iop_loop_create(&loop, NULL);
    if (rc != 0)
        die("iop_loop_create", rc);
    iop_sched_opts_t so = { .size = sizeof so, .flags = flags, .pool_max = 1024 };
    if ((rc = iop_sched_configure(loop, &so)) != 0)
        die("iop_sched_configure", rc);
    return loop;
}

/* Runs fn(arg) as a coroutine of loop, from outside, until it ends. */
static void run_in_coroutine(iop_loop_t *loop, iop_coro_fn fn, void *arg)
{
    iop_coro_t *c;
    int rc = iop_go(loop, fn, arg, NULL, &c);
    if (rc != 0 || (rc = iop_join(c, NULL, 0)) != 0)
        die("running the driver coroutine", rc);
}

struct sched_job {
    iop_loop_t *loop;
    long n;
    double ns;
    iop_chan_t *ch;
    int rc;
};

static void *empty_coro(void *arg) { return arg; }

static void *spawn_driver(void *arg)
{
    struct sched_job *j = arg;
    uint64_t t0 = now_ns();
    for (long i = 0; i < j->n && j->rc == 0; i++) {
        iop_coro_t *c;
        j->rc = iop_go(j->loop, empty_coro, NULL, NULL, &c);
        if (j->rc == 0)
            j->rc = iop_join(c, NULL, 0);
    }
    j->ns = (double)(now_ns() - t0) / (double)j->n;
    return NULL;
}

static double run_spawn(long n)
{
    struct sched_job j = { .loop = sched_loop(IOP_CORO_GUARD), .n = n };
    run_in_coroutine(j.loop, spawn_driver, &j);
    if (j.rc != 0)
        die("spawn + join", j.rc);
    iop_loop_destroy(j.loop);
    return j.ns;
}

static void *chan_producer(void *arg)
{
    struct sched_job *j = arg;
    for (long i = 0; i < j->n; i++)
        if (iop_chan_send(j->ch, &i, 0) != 0)
            break;
    return NULL;
}

static void *chan_consumer(void *arg)
{
    struct sched_job *j = arg;
    iop_coro_t *prod;
    if ((j->rc = iop_go(j->loop, chan_producer, j, NULL, &prod)) != 0)
        return NULL;
    uint64_t t0 = now_ns();
    for (long i = 0; i < j->n && j->rc == 0; i++) {
        long v = -1;
        j->rc = iop_chan_recv(j->ch, &v, 0);
        if (j->rc == 0 && v != i)
            j->rc = -EPROTO;   /* an element lost, repeated or out of order */
    }
    j->ns = (double)(now_ns() - t0) / (double)j->n;
    iop_chan_close(j->ch);
    iop_join(prod, NULL, 0);
    return NULL;
}

static double run_chan(long n)
{
    struct sched_job j = { .loop = sched_loop(IOP_CORO_GUARD), .n = n };
    int rc = iop_chan_new(&j.ch, sizeof(long), 0);
    if (rc != 0)
        die("iop_chan_new", rc);
    run_in_coroutine(j.loop, chan_consumer, &j);
    if (j.rc != 0)
        die("channel hand-off", j.rc);
    iop_chan_free(j.ch);
    iop_loop_destroy(j.loop);
    return j.ns;
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, resident = 0;
    if (f != NULL) {
        if (fscanf(f, "%ld %ld", &size, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

struct park_state {
    iop_chan_t *ch;
    long parked, ended;
};

static void *parked_coro(void *arg)
{
    struct park_state *ps = arg;
    long v;
    ps->parked++;
    iop_chan_recv(ps->ch, &v, 0);   /* until the channel closes: -EPIPE */
    ps->ended++;
    return NULL;
}

/* Runs loop without waiting until *counter reaches n (bounded: gives up after as many
 * idle turns as a slow machine could need). */
static int run_until(iop_loop_t *loop, const long *counter, long n)
{
    for (long turn = 0; *counter < n && turn < 1000000; turn++)
        if (iop_loop_run(loop, IOP_RUN_NOWAIT) < 0)
            return -1;
    return *counter >= n ? 0 : -1;
}

/* KiB per parked coroutine; n is ignored (--parked decides), one run is enough. */
static double run_rss(long n)
{
    (void)n;
    long count = g_opts.parked;
    iop_loop_t *loop = sched_loop(IOP_CORO_CANARY);
    struct park_state ps = { 0 };
    int rc = iop_chan_new(&ps.ch, sizeof(long), 0);
    if (rc != 0)
        die("iop_chan_new", rc);
    iop_loop_run(loop, IOP_RUN_NOWAIT);
    long before = rss_kib();
    for (long i = 0; i < count; i++)
        if ((rc = iop_go(loop, parked_coro, &ps, NULL, NULL)) != 0)
            die("iop_go (parked)", rc);
    if (run_until(loop, &ps.parked, count) != 0)
        die("parking the coroutines", -ETIMEDOUT);
    long after = rss_kib();
    iop_chan_close(ps.ch);
    if (run_until(loop, &ps.ended, count) != 0)
        die("ending the parked coroutines", -ETIMEDOUT);
    iop_chan_free(ps.ch);
    iop_loop_destroy(loop);
    return (double)(after - before) / (double)count;
}

/* ---- the table ---------------------------------------------------------------------------------- */

struct section {
    const char *name;           /* for --only */
    const char *label;          /* the table's first column */
    double (*run)(long n);      /* value per operation for n operations */
    int divisor;                /* n = iters / divisor: slow ones run fewer; 0 = run once */
    int base;                   /* the row ratios are taken against */
    const char *unit;
};

static const struct section SECTIONS[] = {
    { "call", "empty call + return", run_call, 1, 0, "ns" },
    { "ctx", "iop__ctx_switch (raw)", run_ctx, 1, 1, "ns" },
    { "fiber", "iop__fiber_switch, guard-page stack", run_fiber, 1, 0, "ns" },
    { "fiber-can", "iop__fiber_switch, canary stack", run_fiber_canary, 1, 0, "ns" },
    { "swapctx", "glibc swapcontext", run_swapcontext, 20, 0, "ns" },
    { "stack-pool", "stack get + put (pooled)", run_stack_pool, 1, 0, "ns" },
    { "spawn", "iop_go + iop_join, empty coroutine", run_spawn, 20, 0, "ns" },
    { "chan", "unbuffered channel hand-off", run_chan, 20, 0, "ns" },
    { "rss", "RSS per parked coroutine (canary)", run_rss, 0, 0, "KiB" },
};
#define NSECTIONS (sizeof SECTIONS / sizeof SECTIONS[0])

static double best_of(const struct section *s, const struct opts *o)
{
    if (s->divisor == 0)
        return s->run(0);
    long n = o->iters / s->divisor;
    if (n < 1)
        n = 1;
    s->run(n / 10 + 1);   /* warm-up: caches, branch predictors, page faults */
    double best = 0;
    for (int r = 0; r < o->repeat; r++) {
        double v = s->run(n);
        if (r == 0 || v < best)
            best = v;
    }
    return best;
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: " PROG " [--iters N] [--repeat R] [--parked N] [--only NAME[,NAME...]]\n"
        "\n"
        "Prints a markdown table: ns per context switch for ioplex's switch and for\n"
        "glibc swapcontext in the same run, their ratio, an empty call for scale, and\n"
        "the scheduler's costs: spawn + join, channel hand-off, RSS per parked coroutine.\n"
        "\n"
        "  --iters N    round trips per run for the fast rows (default 2000000;\n"
        "               swapcontext runs N/20)\n"
        "  --repeat R   runs per row, the fastest is shown (default 5)\n"
        "  --parked N   coroutines parked for the rss row (default 100000)\n"
        "  --only LIST  rows to run, from:");
    for (size_t i = 0; i < NSECTIONS; i++)
        fprintf(f, " %s", SECTIONS[i].name);
    fprintf(f, "\n  --help       this text\n");
}

/* The raw switch bypasses the fiber layer that tells ASan about stack changes: under
 * ASan the coroutine's first entry aborts ("finishing a fiber switch that has not
 * started"), so that row is left out of sanitizer builds. */
static int runnable(const struct section *s)
{
#if defined(__SANITIZE_ADDRESS__)
    return s->run != run_ctx;
#else
    (void)s;
    return 1;
#endif
}

/* Every name in a --only list is a row's. */
static int only_known(const char *only)
{
    for (const char *p = only;; p++) {
        size_t len = strcspn(p, ",");
        size_t i = 0;
        while (i < NSECTIONS && (strlen(SECTIONS[i].name) != len || strncmp(SECTIONS[i].name, p, len) != 0))
            i++;
        if (i == NSECTIONS) {
            fprintf(stderr, PROG ": --only: no row named '%.*s' (try --help)\n", (int)len, p);
            return 0;
        }
        p += len;
        if (!*p)
            return 1;
    }
}

static int selected(const char *only, const char *name)
{
    if (only == NULL)
        return 1;
    size_t len = strlen(name);
    for (const char *p = only; (p = strstr(p, name)) != NULL; p += len)
        if ((p == only || p[-1] == ',') && (p[len] == '\0' || p[len] == ','))
            return 1;
    return 0;
}

/* A whole positive decimal number for option `name` into *out; else says so. */
static int count_arg(const char *name, const char *arg, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (errno || end == arg || *end || v < 1) {
        fprintf(stderr, PROG ": --%s wants a positive whole number, not '%s'\n", name, arg);
        return -1;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o = { .iters = 2000000, .repeat = 5, .parked = 100000 };
    const char *only = NULL;
    long repeat;
    static const struct option longopts[] = {
        { "iters", required_argument, NULL, 'n' },
        { "repeat", required_argument, NULL, 'r' },
        { "parked", required_argument, NULL, 'p' },
        { "only", required_argument, NULL, 'o' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, "n:r:p:o:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'n': if (count_arg("iters", optarg, &o.iters) < 0) return EXIT_USAGE; break;
        case 'r': if (count_arg("repeat", optarg, &repeat) < 0) return EXIT_USAGE;
                  o.repeat = repeat > INT_MAX ? INT_MAX : (int)repeat; break;
        case 'p': if (count_arg("parked", optarg, &o.parked) < 0) return EXIT_USAGE; break;
        case 'o':
            only = optarg;
            if (!only_known(only))
                return EXIT_USAGE;
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind != argc || o.iters < 1 || o.repeat < 1 || o.parked < 1) {
        usage(stderr);
        return EXIT_USAGE;
    }
    g_opts = o;
    if (iop__stack_pool_new(&pool, 16) != 0) {
        fprintf(stderr, PROG ": %s\n", iop_last_error());
        return 1;
    }

    struct row rows[NSECTIONS];
    size_t nrows = 0;
    double base = 0, swap = 0;
    for (size_t i = 0; i < NSECTIONS; i++) {
        if (!selected(only, SECTIONS[i].name) || !runnable(&SECTIONS[i]))
            continue;
        double v = best_of(&SECTIONS[i], &o);
        rows[nrows++] = (struct row){ SECTIONS[i].label, v, SECTIONS[i].unit, SECTIONS[i].base };
        if (SECTIONS[i].base)
            base = v;
        if (SECTIONS[i].run == run_swapcontext)
            swap = v;
    }

    printf("| %-40s | %10s | %4s | %14s |\n", "measure", "value", "unit", "× raw switch");
    printf("|%s|%s|%s|%s|\n", "------------------------------------------", "-----------:",
           "------", "---------------:");
    for (size_t i = 0; i < nrows; i++) {
        char ratio[32] = "";
        if (base > 0 && strcmp(rows[i].unit, "ns") == 0)
            snprintf(ratio, sizeof ratio, "%.2f", rows[i].value / base);
        printf("| %-40s | %10.2f | %4s | %14s |\n", rows[i].name, rows[i].value, rows[i].unit, ratio);
    }
    if (base > 0 && swap > 0)
        printf("\nswapcontext / iop__ctx_switch: %.0f× (target ≥ 40×)\n", swap / base);
    printf("(%ld round trips per run, best of %d; one round trip = two switches)\n",
           o.iters, o.repeat);
    iop__stack_pool_free(pool);
    return 0;
}
