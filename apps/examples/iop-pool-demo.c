/* iop-pool-demo: the process pool on a loop. A coroutine counts the primes below a
 * limit by mapping chunks of the range over worker processes, while a timer on the
 * same loop keeps ticking (the waits park only the coroutine). With --crash one chunk
 * dies of SIGSEGV in its worker: that chunk fails with the signal named, the worker
 * is replaced and the other chunks are counted. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ioplex.h>
#include <ioplex/pool.h>
#include "hostport.h"

#define PROG "iop-pool-demo"

typedef struct chunk { uint64_t from, to; int crash; } chunk_t;

/* Runs in a worker: the number of primes in [from, to). */
static int count_primes(const void *in, size_t len, iop_pool_out_t *out)
{
    chunk_t c;
    if (len != sizeof c)
        return -EINVAL;
    memcpy(&c, in, sizeof c);
    if (c.crash)
        raise(SIGSEGV);
    uint64_t n = 0;
    for (uint64_t v = c.from < 2 ? 2 : c.from; v < c.to; v++) {
        int prime = 1;
        for (uint64_t d = 2; d * d <= v && prime; d++)
            prime = v % d != 0;
        n += (uint64_t)prime;
    }
    return iop_pool_out_set(out, &n, sizeof n);
}

#define LIMIT_MAX (1ull << 40)   /* limit * chunks stays within 64 bits */

static iop_pool_t *pool;
static uint64_t limit = 2000000;
static int nchunks = 32, crash, ticks, finished, out_failed, no_memory;

static void *counter(void *arg)
{
    (void)arg;
    chunk_t *chunks = calloc((size_t)nchunks, sizeof *chunks);
    iop_future_t **futs = calloc((size_t)nchunks, sizeof *futs);
    if (!chunks || !futs) {
        fprintf(stderr, PROG ": out of memory for %d chunks\n", nchunks);
        free(chunks);
        free(futs);
        no_memory = finished = 1;
        return NULL;
    }
    for (int i = 0; i < nchunks; i++) {
        chunks[i].from = limit * (uint64_t)i / (uint64_t)nchunks;
        chunks[i].to = limit * (uint64_t)(i + 1) / (uint64_t)nchunks;
        chunks[i].crash = crash && i == nchunks / 2;
    }
    int r = iop_pool_map(pool, count_primes, chunks, sizeof *chunks, (size_t)nchunks, futs, 0);
    if (r < 0 && !futs[0])
        fprintf(stderr, PROG ": map: %s: %s\n", iop_strerror(r), iop_last_error());
    uint64_t total = 0;
    for (int i = 0; i < nchunks && futs[0]; i++) {
        size_t len = 0;
        const uint64_t *n = iop_future_result(futs[i], &len);
        if (n && len == sizeof *n)
            total += *n;
        else
            printf("chunk [%llu, %llu) failed: %s\n", (unsigned long long)chunks[i].from,
                   (unsigned long long)chunks[i].to, iop_future_error(futs[i]));
        iop_future_free(futs[i]);
    }
    printf("%llu primes below %llu (%s), counted in %d chunks while the loop ticked %d times\n",
           (unsigned long long)total, (unsigned long long)limit, r < 0 ? "some chunks failed" : "all chunks",
           nchunks, ticks);
    out_failed = fflush(stdout) != 0 || ferror(stdout);
    free(chunks);
    free(futs);
    finished = 1;
    return NULL;
}

static void tick(iop_timer_t *t)
{
    ticks++;
    if (finished)
        iop_loop_stop(t->loop);
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: " PROG " [--workers N] [--limit N] [--chunks N] [--backend NAME] [--crash]\n"
        "\n"
        "Counts the primes below a limit with a process pool driven from a coroutine,\n"
        "while a 10 ms timer on the same loop keeps ticking.\n"
        "\n"
        "  --workers N     worker processes (default: online CPUs)\n"
        "  --limit N       count primes below N (default 2000000)\n"
        "  --chunks N      tasks to split the range into (default 32)\n"
        "  --backend NAME  loop backend (default: auto)\n"
        "  --crash         one chunk crashes its worker (SIGSEGV)\n"
        "  --help          this text\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "workers", required_argument, NULL, 'w' }, { "limit", required_argument, NULL, 'l' },
        { "chunks", required_argument, NULL, 'c' }, { "backend", required_argument, NULL, 'b' },
        { "crash", no_argument, NULL, 'x' }, { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    iop_loop_opts_t lo = { .size = sizeof lo };
    iop_pool_opts_t po = { .size = sizeof po };
    int ch;
    uint64_t v;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":w:l:c:b:xh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'w':
            if (iop_app_parse_u64(optarg, 0, 1024, &v) < 0) {
                fprintf(stderr, PROG ": --workers wants 0 (one per CPU) to 1024, not '%s'\n", optarg);
                return 2;
            }
            po.nworkers = (uint32_t)v;
            break;
        case 'l':
            if (iop_app_parse_u64(optarg, 0, LIMIT_MAX, &limit) < 0) {
                fprintf(stderr, PROG ": --limit wants 0 to %llu, not '%s'\n", LIMIT_MAX, optarg);
                return 2;
            }
            break;
        case 'c':
            if (iop_app_parse_u64(optarg, 1, 100000, &v) < 0) {
                fprintf(stderr, PROG ": --chunks wants 1 to 100000, not '%s'\n", optarg);
                return 2;
            }
            nchunks = (int)v;
            break;
        case 'b': lo.backend = optarg; break;
        case 'x': crash = 1; break;
        case 'h': usage(stdout); return 0;
        case ':':
            fprintf(stderr, PROG ": %s wants a value\n", argv[optind - 1]);
            return 2;
        default:
            fprintf(stderr, PROG ": unknown option '%s' (try --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, PROG ": unexpected argument '%s' (try --help)\n", argv[optind]);
        return 2;
    }
    iop_loop_t *loop;
    int r = iop_loop_create(&loop, &lo);
    if (r < 0) {
        fprintf(stderr, PROG ": %s\n", iop_last_error());
        return iop_app_loop_exit_status(r);
    }
    po.loop = loop;
    if ((r = iop_pool_create(&pool, &po)) < 0) {
        fprintf(stderr, PROG ": pool: %s: %s\n", iop_strerror(r), iop_last_error());
        iop_loop_destroy(loop);
        return 1;
    }
    iop_timer_t t = { 0 };
    iop_timer_start(loop, &t, 10000000, 10000000, tick);
    iop_go(loop, counter, NULL, NULL, NULL);
    iop_loop_run(loop, IOP_RUN_DEFAULT);
    iop_timer_stop(&t);
    iop_pool_free(pool);
    iop_loop_destroy(loop);
    if (out_failed)
        fprintf(stderr, PROG ": writing the result failed: %s\n", strerror(errno));
    return finished && !out_failed && !no_memory ? 0 : 1;
}
