/* iop-queue-bench: messages per second and latency of ioplex's process queue
 * against a queue over a pipe(2) and Python's multiprocessing.Queue, with one
 * producer process and one consumer process pinned to different CPUs.
 *
 *   iop-queue-bench [--count N] [--size 64] [--capacity 1024] [--rounds 3]
 *                   [--python | --no-python] [--py-count N] [--only iop|pipe] [--quick]
 *
 * Every message carries its sequence number and the CLOCK_MONOTONIC time taken just
 * before put; the consumer checks the order and records the latency at get. After
 * a warmup (the first tenth) it measures messages/s and the latency percentiles.
 * Rounds alternate the queues (A B C A B C ...); the table shows medians over the
 * rounds, and each ratio is the median of the same-round ratios. The Python peer
 * (py-queue-bench.py, next to this source) runs in every round when python3 is
 * found. Children are killed by PID if a run takes too long. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include "bench_common.h"
#include "hostport.h"
#include "ioplex/error.h"
#include "ioplex/pqueue.h"
#include "latency_hist.h"

#ifndef IOP_BENCH_SRC_DIR
#define IOP_BENCH_SRC_DIR "."
#endif

typedef struct msg_head {
    uint64_t seq;
    uint64_t ts;
} msg_head_t;

typedef struct run_result {          /* written by the consumer, in shared memory */
    double msgs_per_s;
    double p50_us, p99_us;
    uint64_t errors;
    int done;
} run_result_t;

typedef struct bench {
    uint64_t count;
    size_t size;
    size_t capacity;
    int cpus[2];                     /* producer, consumer; -1 = not pinned */
    run_result_t *res;               /* shared */
    iop_pqueue_t *q;
    int pipefd[2];
} bench_t;

/* ---- the consumer's bookkeeping, the same for every queue -------------------------- */

typedef struct meter {
    uint64_t warmup, next, t0, t1, errors;
    latency_hist_t hist;
} meter_t;

static void meter_take(meter_t *m, const void *msg, size_t len, size_t want)
{
    uint64_t now = bench_now_ns();
    msg_head_t h;
    memcpy(&h, msg, sizeof h);
    if (len != want || h.seq != m->next)
        m->errors++;
    if (m->next == m->warmup)
        m->t0 = now;
    if (m->next >= m->warmup)
        latency_hist_add(&m->hist, now - h.ts);
    m->t1 = now;
    m->next++;
}

static void meter_report(const meter_t *m, run_result_t *r)
{
    double secs = (double)(m->t1 - m->t0) / 1e9;
    r->msgs_per_s = secs > 0 ? (double)(m->next - m->warmup - 1) / secs : 0;
    r->p50_us = (double)latency_hist_quantile(&m->hist, 0.50) / 1000;
    r->p99_us = (double)latency_hist_quantile(&m->hist, 0.99) / 1000;
    r->errors = m->errors;
    r->done = 1;
}

static void stamp(unsigned char *msg, uint64_t seq)
{
    msg_head_t h = { seq, bench_now_ns() };
    memcpy(msg, &h, sizeof h);
}

/* ---- ioplex process queue ------------------------------------------------------------- */

static void iop_producer(bench_t *b)
{
    unsigned char msg[65536] = { 0 };
    for (uint64_t i = 0; i < b->count; i++) {
        stamp(msg, i);
        int r = iop_pqueue_put(b->q, msg, b->size, 0);
        if (r < 0) {
            fprintf(stderr, "iop_pqueue_put: %s\n", iop_strerror(r));
            _exit(1);
        }
    }
}

static void iop_consumer(bench_t *b)
{
    static meter_t m;
    unsigned char buf[65536];
    m.warmup = b->count / 10;
    for (uint64_t i = 0; i < b->count; i++) {
        ssize_t n = iop_pqueue_get(b->q, buf, sizeof buf, 0);
        if (n < 0) {
            fprintf(stderr, "iop_pqueue_get: %s\n", iop_strerror((int)n));
            _exit(1);
        }
        meter_take(&m, buf, (size_t)n, b->size);
    }
    meter_report(&m, b->res);
}

/* ---- a queue over a pipe: length-prefixed, blocking ---------------------------------- */

static int write_all(int fd, const void *p, size_t len)
{
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p = (const char *)p + n;
        len -= (size_t)n;
    }
    return 0;
}

static int read_all(int fd, void *p, size_t len)
{
    while (len) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p = (char *)p + n;
        len -= (size_t)n;
    }
    return 0;
}

/* put: one write of length + message; get: read the length, then the message. */
static void pipe_producer(bench_t *b)
{
    unsigned char msg[4 + 65536] = { 0 };
    uint32_t len = (uint32_t)b->size;
    memcpy(msg, &len, 4);
    for (uint64_t i = 0; i < b->count; i++) {
        stamp(msg + 4, i);
        if (write_all(b->pipefd[1], msg, 4 + b->size) < 0)
            _exit(1);
    }
}

static void pipe_consumer(bench_t *b)
{
    static meter_t m;
    unsigned char buf[65536];
    m.warmup = b->count / 10;
    for (uint64_t i = 0; i < b->count; i++) {
        uint32_t len;
        if (read_all(b->pipefd[0], &len, 4) < 0 || len > sizeof buf ||
            read_all(b->pipefd[0], buf, len) < 0)
            _exit(1);
        meter_take(&m, buf, len, b->size);
    }
    meter_report(&m, b->res);
}

/* ---- running a pair ---------------------------------------------------------------------- */

static pid_t spawn(bench_t *b, int cpu, void (*fn)(bench_t *))
{
    pid_t pid = fork();
    if (pid == 0) {
        if (cpu >= 0)
            bench_pin_cpu(cpu);
        fn(b);
        _exit(0);
    }
    return pid;
}

/* Waits for both children for at most limit_s; kills the ones left (by PID). */
static int reap_pair(pid_t kids[2], unsigned limit_s)
{
    uint64_t end = bench_now_ns() + (uint64_t)limit_s * 1000000000u;
    int left = 2, ok = 1;
    while (left && bench_now_ns() < end) {
        for (int i = 0; i < 2; i++) {
            int st;
            if (kids[i] > 0 && waitpid(kids[i], &st, WNOHANG) == kids[i]) {
                ok &= WIFEXITED(st) && WEXITSTATUS(st) == 0;
                kids[i] = -1;
                left--;
            }
        }
        if (left)
            usleep(2000);
    }
    for (int i = 0; i < 2; i++) {
        if (kids[i] > 0) {
            kill(kids[i], SIGKILL);
            waitpid(kids[i], NULL, 0);
            ok = 0;
        }
    }
    return ok;
}

static int run_iop(bench_t *b, run_result_t *out)
{
    int r = iop_pqueue_create(&b->q, b->capacity, b->size);
    if (r < 0) {
        fprintf(stderr, "iop_pqueue_create: %s (%s)\n", iop_strerror(r), iop_last_error());
        return -1;
    }
    memset(b->res, 0, sizeof *b->res);
    pid_t kids[2] = { spawn(b, b->cpus[1], iop_consumer), spawn(b, b->cpus[0], iop_producer) };
    int ok = reap_pair(kids, 120);
    iop_pqueue_destroy(b->q);
    *out = *b->res;
    return ok && out->done && !out->errors ? 0 : -1;
}

static int run_pipe(bench_t *b, run_result_t *out)
{
    if (pipe(b->pipefd) < 0)
        return -1;
    memset(b->res, 0, sizeof *b->res);
    pid_t kids[2] = { spawn(b, b->cpus[1], pipe_consumer), spawn(b, b->cpus[0], pipe_producer) };
    close(b->pipefd[0]);
    close(b->pipefd[1]);
    int ok = reap_pair(kids, 120);
    *out = *b->res;
    return ok && out->done && !out->errors ? 0 : -1;
}

/* Runs the Python peer and parses its JSON line. */
static int run_python(const bench_t *b, const char *script, uint64_t count, run_result_t *out)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "timeout -s KILL 300 python3 '%s' --count %llu --size %zu --producer-cpu %d --consumer-cpu %d",
             script, (unsigned long long)count, b->size, b->cpus[0], b->cpus[1]);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    char line[1024] = "";
    int got = fgets(line, sizeof line, p) != NULL;
    int st = pclose(p);
    memset(out, 0, sizeof *out);
    const char *v;
    if (!got || st != 0)
        return -1;
    if ((v = strstr(line, "\"msgs_per_s\": ")))
        out->msgs_per_s = strtod(v + 14, NULL);
    if ((v = strstr(line, "\"p50_us\": ")))
        out->p50_us = strtod(v + 10, NULL);
    if ((v = strstr(line, "\"p99_us\": ")))
        out->p99_us = strtod(v + 10, NULL);
    out->done = 1;
    return out->msgs_per_s > 0 ? 0 : -1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median over n rounds of the double at offset `field`; v (n doubles) is left
 * holding the sorted values. */
static double median_of(const run_result_t *r, uint64_t n, size_t field, double *v)
{
    for (uint64_t i = 0; i < n; i++)
        memcpy(&v[i], (const char *)&r[i] + field, sizeof v[i]);
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: iop-queue-bench [--count N] [--size 64] [--capacity 1024] [--rounds 3]\n"
               "                       [--python | --no-python] [--py-count N] [--py-script PATH]\n"
               "                       [--only iop|pipe] [--quick]\n"
               "Sends N messages of --size bytes from one process to another, pinned to\n"
               "different CPUs, through iop_pqueue, through a pipe (length-prefixed) and\n"
               "through Python's multiprocessing.Queue; prints messages/s (median, min-max\n"
               "over the rounds), p50 and p99 latency, and how much faster iop_pqueue is.\n");
}

int main(int argc, char **argv)
{
    bench_t b = { .count = 2000000, .size = 64, .capacity = 1024, .cpus = { -1, -1 } };
    uint64_t rounds = 3, py_count = 0, v;
    int python = -1;                 /* -1: if python3 is there */
    int want_iop = 1, want_pipe = 1;
    const char *script = IOP_BENCH_SRC_DIR "/py-queue-bench.py";
    static const struct option opts[] = {
        { "count", 1, 0, 'n' }, { "size", 1, 0, 's' }, { "capacity", 1, 0, 'c' },
        { "rounds", 1, 0, 'r' }, { "python", 0, 0, 'p' }, { "no-python", 0, 0, 'P' },
        { "py-count", 1, 0, 'N' }, { "py-script", 1, 0, 'S' }, { "quick", 0, 0, 'q' },
        { "only", 1, 0, 'o' }, { "help", 0, 0, 'h' }, { 0, 0, 0, 0 } };
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'n': if (iop_app_parse_u64(optarg, 100, 1000000000, &b.count)) goto bad; break;
        case 's': if (iop_app_parse_u64(optarg, sizeof(msg_head_t), 65536, &v)) goto bad; b.size = v; break;
        case 'c': if (iop_app_parse_u64(optarg, 1, 1u << 20, &v)) goto bad; b.capacity = v; break;
        case 'r': if (iop_app_parse_u64(optarg, 1, 100, &rounds)) goto bad; break;
        case 'p': python = 1; break;
        case 'P': python = 0; break;
        case 'N': if (iop_app_parse_u64(optarg, 100, 100000000, &py_count)) goto bad; break;
        case 'S': script = optarg; break;
        case 'q': b.count = 300000; rounds = 1; break;
        case 'o':
            want_iop = strcmp(optarg, "iop") == 0;
            want_pipe = strcmp(optarg, "pipe") == 0;
            if (!want_iop && !want_pipe)
                goto bad;
            python = 0;
            break;
        case 'h': usage(stdout); return 0;
        default: goto bad;
        }
    }
    if (optind != argc)
        goto bad;
    if (!py_count)
        py_count = b.count / 20 < 20000 ? 20000 : b.count / 20;
    if (python < 0)
        python = system("command -v python3 >/dev/null 2>&1") == 0 && access(script, R_OK) == 0;

    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu >= 2)
        b.cpus[0] = 0, b.cpus[1] = 1;
    b.res = mmap(NULL, sizeof *b.res, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (b.res == MAP_FAILED)
        return 1;

    /* Rounds alternate the queues, so that drift of a shared machine touches all of
     * them alike; a ratio is the median of the same-round ratios. */
    enum { Q_IOP, Q_PIPE, Q_PY, NQ };
    static const char *names[NQ] = { "iop_pqueue", "pipe (length-prefixed)", "Python multiprocessing.Queue" };
    int want[NQ] = { want_iop, want_pipe, python };
    run_result_t *res[NQ];
    int failed = 0;
    for (int k = 0; k < NQ; k++)
        res[k] = calloc(rounds, sizeof *res[k]);
    for (uint64_t i = 0; i < rounds; i++) {
        for (int k = 0; k < NQ; k++) {
            if (!want[k])
                continue;
            int r = k == Q_IOP ? run_iop(&b, &res[k][i]) : k == Q_PIPE ? run_pipe(&b, &res[k][i])
                                                                       : run_python(&b, script, py_count, &res[k][i]);
            if (r < 0) {
                fprintf(stderr, "%s: round %llu failed\n", names[k], (unsigned long long)i + 1);
                failed = 1;
                want[k] = 0;
            }
        }
    }

    printf("%llu messages of %zu bytes (Python: %llu), one producer and one consumer process, %s; "
           "capacity %zu (pipe: 64 KiB; Python: unbounded); median of %llu round%s\n\n",
           (unsigned long long)b.count, b.size, (unsigned long long)py_count,
           ncpu >= 2 ? "pinned to CPUs 0 and 1" : "one CPU, not pinned", b.capacity,
           (unsigned long long)rounds, rounds > 1 ? "s" : "");
    printf("| queue | msgs/s (min-max) | p50 µs | p99 µs | iop_pqueue is |\n|---|---:|---:|---:|---:|\n");
    double *sorted = calloc(rounds, sizeof *sorted);
    for (int k = 0; k < NQ; k++) {
        if (!want[k]) {
            printf("| %s | skipped%s | | | |\n", names[k], k == Q_PY && python ? " (failed)" : "");
            continue;
        }
        double rate = median_of(res[k], rounds, offsetof(run_result_t, msgs_per_s), sorted);
        double lo = sorted[0], hi = sorted[rounds - 1];
        double p50 = median_of(res[k], rounds, offsetof(run_result_t, p50_us), sorted);
        double p99 = median_of(res[k], rounds, offsetof(run_result_t, p99_us), sorted);
        printf("| %s | %.0f (%.0f-%.0f) | %.1f | %.1f |", names[k], rate, lo, hi, p50, p99);
        if (k == Q_IOP || !want[Q_IOP]) {
            printf(" |\n");
            continue;
        }
        run_result_t *ratio = calloc(rounds, sizeof *ratio);
        for (uint64_t i = 0; i < rounds; i++)
            ratio[i].msgs_per_s = res[Q_IOP][i].msgs_per_s / res[k][i].msgs_per_s;
        printf(" %.1f× faster |\n", median_of(ratio, rounds, offsetof(run_result_t, msgs_per_s), sorted));
        free(ratio);
    }
    free(sorted);
    for (int k = 0; k < NQ; k++)
        free(res[k]);
    return failed;
bad:
    usage(stderr);
    return 2;
}
