/* iop-timer-bench: what ioplex timers cost, through the public API only.
 *
 *   insert       iop_timer_start of N timers with random delays (heap push)
 *   cancel       iop_timer_stop of a random half of them (heap removal from the middle)
 *   expire       iop_loop_run once every remaining timer is already due: the loop's
 *                cost per fired timer (heap pop + callback), with no waiting in it
 *   expire-live  the same timers re-armed over LIVE_SPREAD and run as they come due:
 *                loop CPU time per fired timer, backend waits included
 *
 * Delays and the cancelled half come from a fixed-seed generator, drawn before the
 * clock starts. A cancelled timer that fires, or a missing expiry, is an error. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ioplex.h>

#define PROG "iop-timer-bench"
#define SPREAD_NS (10ull * 1000 * 1000)        /* insert delays: 1 ns .. 10 ms */
#define LIVE_SPREAD_NS (200ull * 1000 * 1000)  /* expire-live delays: 1 ns .. 200 ms */

enum { EXIT_USAGE = 2 };

typedef struct bench {
    iop_timer_t *timers;
    unsigned char *cancelled;
    uint64_t *delays;
    uint32_t *order;          /* a random permutation: the first half is cancelled */
    uint32_t count;
    uint64_t fired, wrong;
} bench_t;

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void on_fire(iop_timer_t *t)
{
    bench_t *b = t->data;
    b->fired++;
    if (b->cancelled[t - b->timers])
        b->wrong++;
}

static void draw_delays(bench_t *b, uint64_t *rng, uint64_t spread)
{
    for (uint32_t i = 0; i < b->count; i++)
        b->delays[i] = 1 + xorshift64(rng) % spread;
}

static void print_row(const char *op, uint64_t count, uint64_t ns, const char *note)
{
    printf("| %-11s | %8" PRIu64 " | %9.3f | %7.1f | %s\n", op, count, (double)ns / 1e6,
           count ? (double)ns / (double)count : 0.0, note);
}

/* Sleeps until the loop clock value `until` has passed on CLOCK_MONOTONIC. */
static void sleep_until(uint64_t until)
{
    struct timespec ts = { .tv_sec = (time_t)(until / 1000000000u),
                           .tv_nsec = (long)(until % 1000000000u) };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static int run_bench(iop_loop_t *loop, bench_t *b)
{
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    uint32_t n = b->count, half = n / 2;
    draw_delays(b, &rng, SPREAD_NS);
    for (uint32_t i = 0; i < n; i++)
        b->order[i] = i;
    for (uint32_t i = n - 1; i > 0; i--) {   /* Fisher-Yates */
        uint32_t j = (uint32_t)(xorshift64(&rng) % (i + 1));
        uint32_t tmp = b->order[i];
        b->order[i] = b->order[j];
        b->order[j] = tmp;
    }

    uint64_t t0 = clock_ns(CLOCK_MONOTONIC);
    for (uint32_t i = 0; i < n; i++) {
        int r = iop_timer_start(loop, &b->timers[i], b->delays[i], 0, on_fire);
        if (r < 0) {
            fprintf(stderr, PROG ": iop_timer_start: %s\n", iop_strerror(r));
            return -1;
        }
    }
    uint64_t t1 = clock_ns(CLOCK_MONOTONIC);
    for (uint32_t i = 0; i < half; i++) {
        b->cancelled[b->order[i]] = 1;
        iop_timer_stop(&b->timers[b->order[i]]);
    }
    uint64_t t2 = clock_ns(CLOCK_MONOTONIC);

    /* Every delay counts from the loop's cached clock: past now + SPREAD all are due. */
    sleep_until(iop_now(loop) + SPREAD_NS + 1000000);
    uint64_t t3 = clock_ns(CLOCK_MONOTONIC);
    int r = iop_loop_run(loop, IOP_RUN_DEFAULT);
    uint64_t t4 = clock_ns(CLOCK_MONOTONIC);
    if (r < 0) {
        fprintf(stderr, PROG ": iop_loop_run: %s\n", iop_last_error());
        return -1;
    }
    uint64_t fired_at_once = b->fired;

    /* expire-live: the surviving half again, run in real time as they come due. The
     * cached clock stopped when the run above began; bring it to now first. */
    draw_delays(b, &rng, LIVE_SPREAD_NS);
    iop_update_time(loop);
    for (uint32_t i = half; i < n; i++) {
        uint32_t k = b->order[i];
        if (iop_timer_start(loop, &b->timers[k], b->delays[k], 0, on_fire) < 0)
            return -1;
    }
    iop_loop_stats_t before, after;
    iop_loop_get_stats(loop, &before);
    uint64_t c0 = clock_ns(CLOCK_THREAD_CPUTIME_ID), w0 = clock_ns(CLOCK_MONOTONIC);
    r = iop_loop_run(loop, IOP_RUN_DEFAULT);
    uint64_t c1 = clock_ns(CLOCK_THREAD_CPUTIME_ID), w1 = clock_ns(CLOCK_MONOTONIC);
    iop_loop_get_stats(loop, &after);
    if (r < 0) {
        fprintf(stderr, PROG ": iop_loop_run: %s\n", iop_last_error());
        return -1;
    }

    char note[128];
    printf("| operation   |    count |  total ms |   ns/op | note\n");
    printf("|-------------|---------:|----------:|--------:|------\n");
    print_row("insert", n, t1 - t0, "iop_timer_start, random delays 1 ns..10 ms");
    print_row("cancel", half, t2 - t1, "iop_timer_stop of a random half");
    print_row("expire", fired_at_once, t4 - t3, "iop_loop_run with all due: per fired timer");
    snprintf(note, sizeof note, "loop CPU per fired timer over %.0f ms wall, %" PRIu64 " iterations",
             (double)(w1 - w0) / 1e6, after.iterations - before.iterations);
    print_row("expire-live", b->fired - fired_at_once, c1 - c0, note);

    uint64_t expected = (uint64_t)(n - half) * 2;
    if (b->wrong || b->fired != expected) {
        fprintf(stderr, PROG ": ERROR: %" PRIu64 " fired (expected %" PRIu64 "), %" PRIu64
                " of them cancelled\n", b->fired, expected, b->wrong);
        return -1;
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: " PROG " [--count N] [--backend NAME]\n"
        "\n"
        "Times ioplex timers: ns per insert (iop_timer_start with random delays), per\n"
        "cancel (iop_timer_stop of a random half) and per expiry (the loop's cost per\n"
        "fired timer, once with all due and once run live). Prints a markdown table.\n"
        "\n"
        "  --count N        timers (default 100000)\n"
        "  --backend NAME   loop backend (default: $IOPLEX_BACKEND, then auto)\n"
        "  --help           this text\n");
}

int main(int argc, char **argv)
{
    uint64_t count = 100000;
    const char *backend = NULL;
    static const struct option longopts[] = {
        { "count", required_argument, NULL, 'n' },
        { "backend", required_argument, NULL, 'b' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "n:b:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'n': {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (errno || *end || optarg[0] < '0' || optarg[0] > '9' || v < 2 || v > 100000000) {
                fprintf(stderr, PROG ": --count must be from 2 to 100000000\n");
                return EXIT_USAGE;
            }
            count = v;
            break;
        }
        case 'b': backend = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, PROG ": unexpected argument '%s' (try --help)\n", argv[optind]);
        return EXIT_USAGE;
    }

    iop_loop_t *loop;
    iop_loop_opts_t opts = { .size = sizeof opts, .backend = backend };
    int r = iop_loop_create(&loop, &opts);
    if (r < 0) {
        fprintf(stderr, PROG ": cannot create a loop: %s\n",
                iop_last_error()[0] ? iop_last_error() : iop_strerror(r));
        return EXIT_FAILURE;
    }
    bench_t b = { .count = (uint32_t)count };
    b.timers = calloc(count, sizeof *b.timers);
    b.cancelled = calloc(count, 1);
    b.delays = calloc(count, sizeof *b.delays);
    b.order = calloc(count, sizeof *b.order);
    int status = EXIT_FAILURE;
    if (!b.timers || !b.cancelled || !b.delays || !b.order) {
        fprintf(stderr, PROG ": out of memory\n");
    } else {
        for (uint32_t i = 0; i < b.count; i++)
            b.timers[i].data = &b;
        printf("%s: %" PRIu64 " timers, backend %s\n\n", PROG, count, iop_loop_backend(loop));
        status = run_bench(loop, &b) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
    }
    iop_loop_destroy(loop);
    free(b.timers);
    free(b.cancelled);
    free(b.delays);
    free(b.order);
    return status;
}
