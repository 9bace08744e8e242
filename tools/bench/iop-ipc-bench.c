/* iop-ipc-bench: what the robust process lock and the shared dict cost.
 *
 *   iop-ipc-bench [-n ITERATIONS] [-b BACKEND]
 *
 * Lock: lock + unlock uncontended (outside coroutines, inside one, and a bare robust
 * pthread mutex for reference), then contended by two processes (plain waiters in
 * the kernel, and coroutine waiters on the eventfd). Dict: set, get and incr of a
 * 16-byte key with a 64-byte value, then incr contended by two processes. Numbers
 * are ns per operation (wall clock; a contended pair counts both processes' ops). */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "ioplex.h"
#include "ioplex/coro.h"
#include "ioplex/plock.h"
#include "ioplex/shdict.h"

static long iters = 1000000;
static const char *backend;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void report(const char *what, uint64_t ns, long ops)
{
    printf("%-44s %8.1f ns/op  (%ld ops)\n", what, (double)ns / (double)ops, ops);
}

static void die(const char *what, int err)
{
    fprintf(stderr, "iop-ipc-bench: %s: %s (%s)\n", what, iop_strerror(err), iop_last_error());
    exit(1);
}

/* ---- running something in two processes ------------------------------------------- */

typedef void (*work_fn)(void *arg, long n);

/* Runs fn(arg, n) in two forked processes at once; the wall time of the pair. */
static uint64_t in_two_processes(work_fn fn, void *arg, long n)
{
    _Atomic int *ready = mmap(NULL, sizeof *ready, PROT_READ | PROT_WRITE,
                              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (ready == MAP_FAILED)
        die("mmap", -errno);
    atomic_store(ready, 0);
    pid_t parent = getpid(), pid[2];
    for (int i = 0; i < 2; i++) {
        pid[i] = fork();
        if (pid[i] < 0)
            die("fork", -errno);
        if (pid[i] == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent)
                _exit(1);
            alarm(120);
            atomic_fetch_add(ready, 1);
            while (atomic_load(ready) < 3)
                ;                  /* start together */
            fn(arg, n);
            _exit(0);
        }
    }
    while (atomic_load(ready) < 2)
        usleep(100);
    uint64_t t0 = now_ns();
    atomic_store(ready, 3);
    for (int i = 0; i < 2; i++) {
        int st;
        waitpid(pid[i], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "iop-ipc-bench: a worker failed\n");
            exit(1);
        }
    }
    uint64_t t = now_ns() - t0;
    munmap((void *)ready, sizeof *ready);
    return t;
}

/* Runs fn(arg, n) in a coroutine of a fresh loop until it returns. */
typedef struct coro_job {
    work_fn fn;
    void *arg;
    long n;
    int done;
} coro_job_t;

static void *coro_job(void *p)
{
    coro_job_t *j = p;
    j->fn(j->arg, j->n);
    j->done = 1;
    return NULL;
}

static void in_coroutine(work_fn fn, void *arg, long n)
{
    iop_loop_opts_t o = { .size = sizeof o, .backend = backend };
    iop_loop_t *loop;
    int r = iop_loop_create(&loop, &o);
    if (r < 0)
        die("iop_loop_create", r);
    coro_job_t j = { fn, arg, n, 0 };
    if ((r = iop_go(loop, coro_job, &j, NULL, NULL)) < 0)
        die("iop_go", r);
    while (!j.done)
        iop_loop_run(loop, IOP_RUN_ONCE);
    iop_loop_destroy(loop);
}

static void in_coroutine_work(void *arg, long n)
{
    coro_job_t *inner = arg;
    in_coroutine(inner->fn, inner->arg, n);
}

/* ---- the lock ------------------------------------------------------------------------ */

static void lock_pairs(void *arg, long n)
{
    iop_plock_t *l = arg;
    for (long i = 0; i < n; i++) {
        int r = iop_plock_lock(l, 0);
        if (r < 0)
            die("iop_plock_lock", r);
        iop_plock_unlock(l);
    }
}

static void pthread_pairs(void *arg, long n)
{
    pthread_mutex_t *m = arg;
    for (long i = 0; i < n; i++) {
        pthread_mutex_lock(m);
        pthread_mutex_unlock(m);
    }
}

static void bench_lock(void)
{
    iop_plock_t *l;
    int r = iop_plock_create(&l);
    if (r < 0)
        die("iop_plock_create", r);
    uint64_t t0 = now_ns();
    lock_pairs(l, iters);
    report("plock lock+unlock, uncontended", now_ns() - t0, iters);

    pthread_mutex_t m;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&m, &a);
    t0 = now_ns();
    pthread_pairs(&m, iters);
    report("  (bare robust pthread mutex, for reference)", now_ns() - t0, iters);

    t0 = now_ns();
    in_coroutine(lock_pairs, l, iters);
    report("plock lock+unlock in a coroutine, uncontended", now_ns() - t0, iters);

    long n = iters / 4;
    report("plock contended, 2 processes, plain", in_two_processes(lock_pairs, l, n), 2 * n);
    coro_job_t inner = { lock_pairs, l, 0, 0 };
    report("plock contended, 2 processes, coroutines",
           in_two_processes(in_coroutine_work, &inner, n), 2 * n);
    iop_plock_free(l);
}

/* ---- the dict ------------------------------------------------------------------------- */

static const char *const bench_keys[] = { "bench-key-0000a", "bench-key-0000b",
                                          "bench-key-0000c", "bench-key-0000d" };

static void incr_loop(void *arg, long n)
{
    iop_shdict_t *d = arg;
    for (long i = 0; i < n; i++) {
        int r = iop_shdict_incr(d, bench_keys[i & 3], 1, NULL);
        if (r < 0)
            die("iop_shdict_incr", r);
    }
}

static void bench_dict(void)
{
    iop_shdict_t *d;
    int r = iop_shdict_create(&d, NULL);
    if (r < 0)
        die("iop_shdict_create", r);
    char val[64];
    memset(val, 'v', sizeof val);
    uint64_t t0 = now_ns();
    for (long i = 0; i < iters; i++)
        if ((r = iop_shdict_set(d, bench_keys[i & 3], val, sizeof val)) < 0)
            die("iop_shdict_set", r);
    report("shdict set (16 B key, 64 B value)", now_ns() - t0, iters);
    t0 = now_ns();
    for (long i = 0; i < iters; i++)
        if (iop_shdict_get(d, bench_keys[i & 3], val, sizeof val) != sizeof val)
            die("iop_shdict_get", -EIO);
    report("shdict get", now_ns() - t0, iters);
    for (int k = 0; k < 4; k++)
        iop_shdict_delete(d, bench_keys[k]);
    t0 = now_ns();
    incr_loop(d, iters);
    report("shdict incr", now_ns() - t0, iters);
    long n = iters / 4;
    report("shdict incr contended, 2 processes", in_two_processes(incr_loop, d, n), 2 * n);
    int64_t sum = 0, v;
    for (int k = 0; k < 4; k++)
        if (iop_shdict_get(d, bench_keys[k], &v, sizeof v) == sizeof v)
            sum += v;
    if (sum != iters + 2 * n) {
        fprintf(stderr, "iop-ipc-bench: counters add up to %lld, not %ld\n", (long long)sum, iters + 2 * n);
        exit(1);
    }
    iop_shdict_free(d);
}

static int usage(FILE *f, int status)
{
    fprintf(f, "usage: iop-ipc-bench [-n ITERATIONS] [-b BACKEND] [--help]\n"
               "What the robust process lock and the shared dict cost, in ns per operation:\n"
               "lock + unlock uncontended and contended by two processes, dict set / get /\n"
               "incr. -n: operations per measure (at least 4; default %ld); -b: the loop\n"
               "backend for the coroutine rows (default auto).\n", iters);
    return status;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int opt;
    opterr = 0;                  /* one line of our own instead of getopt's */
    while ((opt = getopt_long(argc, argv, ":n:b:h", longopts, NULL)) != -1) {
        if (opt == 'n') {
            char *end;
            errno = 0;
            iters = strtol(optarg, &end, 10);
            if (errno || end == optarg || *end || iters < 4) {
                fprintf(stderr, "iop-ipc-bench: -n wants a number of at least 4, not '%s'\n", optarg);
                return 2;
            }
        } else if (opt == 'b') {
            backend = optarg;
        } else if (opt == 'h') {
            return usage(stdout, 0);
        } else if (opt == ':') {
            fprintf(stderr, "iop-ipc-bench: option '%s' needs a value (try --help)\n", argv[optind - 1]);
            return 2;
        } else {
            fprintf(stderr, "iop-ipc-bench: unknown option '%s' (try --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "iop-ipc-bench: unexpected argument '%s' (try --help)\n", argv[optind]);
        return 2;
    }
    bench_lock();
    bench_dict();
    return 0;
}
