/* iop-herd-bench: what one listening socket shared by several processes costs per
 * connection (iop_shard's "shared" listener mode). Each worker process runs its own
 * loop with an accept op on the listener; the parent opens connections one at a
 * time, waiting until one is accepted before the next, so that every worker is
 * asleep when a connection arrives. Per connection it prints:
 *
 *   wake-ups  voluntary context switches of all workers: 1 when one worker is woken,
 *             N when every worker is (the thundering herd: the losers wake, find
 *             nothing and sleep again, mostly inside the kernel)
 *   events    readiness events the loops saw (losers usually see none: epoll drops
 *             a level-triggered event whose file is no longer ready)
 *
 * and which worker accepted how many. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ioplex.h>
#include "bench_common.h"
#include "hostport.h"

#define PROG "iop-herd-bench"
#define MAX_WORKERS 64

enum { EXIT_USAGE = 2 };

typedef struct worker {
    iop_loop_t *loop;
    iop_op_t accept, stop;
    char stop_byte;
    int lfd, tell;        /* tell: one byte per accepted connection, to the parent */
    int done, failed;
    long accepted;
} worker_t;

typedef struct report {   /* what a worker writes back when it ends */
    long accepted, wakeups;
    unsigned long long events;
    int failed;
} report_t;

static void accepted(iop_op_t *op, int res)
{
    worker_t *w = op->data;
    if (res >= 0) {
        w->accepted++;
        close(res);
        char x = 1;
        if (write(w->tell, &x, 1) != 1)
            w->failed = 1;
    } else if (res != -EAGAIN && res != -EINTR && res != -ECONNABORTED) {
        fprintf(stderr, PROG ": accept: %s\n", iop_strerror(res));
        w->failed = 1;
    }
    iop_prep_accept(&w->accept, w->lfd, NULL, NULL, accepted, w);
    if (iop_submit(w->loop, &w->accept) < 0)
        w->failed = 1, w->done = 1;
}

static void stopped(iop_op_t *op, int res)
{
    (void)res;   /* 0: the parent closed its end */
    ((worker_t *)op->data)->done = 1;
}

static long voluntary_switches(void)
{
    long v = -1;
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        sscanf(line, "voluntary_ctxt_switches: %ld", &v);
    if (f)
        fclose(f);
    return v;
}

static void worker_main(const char *backend, int lfd, int tell, int stop, int out)
{
    worker_t w = { .lfd = lfd, .tell = tell };
    iop_loop_opts_t o = { .size = sizeof o, .backend = backend };
    if (iop_loop_create(&w.loop, &o) < 0) {
        fprintf(stderr, PROG ": worker: %s\n", iop_last_error());
        _exit(1);
    }
    iop_prep_accept(&w.accept, lfd, NULL, NULL, accepted, &w);
    iop_prep_read(&w.stop, stop, &w.stop_byte, 1, -1, stopped, &w);
    if (iop_submit(w.loop, &w.accept) < 0 || iop_submit(w.loop, &w.stop) < 0)
        _exit(1);
    long before = voluntary_switches();
    while (!w.done)
        if (iop_loop_run(w.loop, IOP_RUN_ONCE) < 0)
            break;
    iop_loop_stats_t st;
    iop_loop_get_stats(w.loop, &st);
    /* Zeroed whole: the struct's padding goes down the pipe too. */
    report_t r;
    memset(&r, 0, sizeof r);
    r.accepted = w.accepted;
    r.wakeups = voluntary_switches() - before;
    r.events = st.events;
    r.failed = w.failed;
    _exit(write(out, &r, sizeof r) == (ssize_t)sizeof r && !w.failed ? 0 : 1);
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: " PROG " [--backend NAME] [--workers N] [--connections M]\n"
        "\n"
        "N worker processes (default 4, at most %d), each with its own loop, accept from\n"
        "one listening socket on 127.0.0.1; M connections (default 2000) are opened one\n"
        "at a time. Prints, per connection, the workers' wake-ups (voluntary context\n"
        "switches: N means every worker woke for each one) and readiness events, and\n"
        "how many connections each worker took.\n"
        "\n"
        "  --backend NAME     loop backend of the workers (default: auto)\n"
        "  --workers N        worker processes\n"
        "  --connections M    connections to open\n"
        "  --help             this text\n", MAX_WORKERS);
}

static long number(const char *opt, const char *s, uint64_t lo, uint64_t hi)
{
    uint64_t v;
    if (iop_app_parse_u64(s, lo, hi, &v) < 0) {
        fprintf(stderr, PROG ": %s wants a number from %" PRIu64 " to %" PRIu64 ", not '%s'\n", opt, lo, hi, s);
        exit(EXIT_USAGE);
    }
    return (long)v;
}

int main(int argc, char **argv)
{
    const char *backend = NULL;
    long nworkers = 4, nconns = 2000;
    static const struct option longopts[] = {
        { "backend", required_argument, NULL, 'b' }, { "workers", required_argument, NULL, 'w' },
        { "connections", required_argument, NULL, 'c' }, { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'b': backend = optarg; break;
        case 'w': nworkers = number("--workers", optarg, 1, MAX_WORKERS); break;
        case 'c': nconns = number("--connections", optarg, 1, 1000000); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, PROG ": unexpected argument '%s' (try --help)\n", argv[optind]);
        return EXIT_USAGE;
    }

    /* Fails here, not in every worker, when the backend is unknown or unavailable. */
    iop_loop_t *probe;
    iop_loop_opts_t po = { .size = sizeof po, .backend = backend };
    if (iop_loop_create(&probe, &po) < 0) {
        fprintf(stderr, PROG ": %s\n", iop_last_error());
        return EXIT_USAGE;
    }
    const char *name = iop_loop_backend(probe);
    char be[32];
    snprintf(be, sizeof be, "%s", name);
    iop_loop_destroy(probe);

    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t alen = sizeof addr;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 128) < 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0) {
        perror(PROG ": listener");
        return 1;
    }
    int tell[2], out[2], stop[MAX_WORKERS][2];
    pid_t pids[MAX_WORKERS];
    if (pipe(tell) < 0 || pipe(out) < 0) {
        perror(PROG ": pipe");
        return 1;
    }
    for (long i = 0; i < nworkers; i++) {
        if (pipe(stop[i]) < 0 || (pids[i] = fork()) < 0) {
            perror(PROG ": worker");
            return 1;
        }
        if (pids[i] == 0) {
            for (long j = 0; j <= i; j++)
                close(stop[j][1]);   /* EOF on its own pipe when the parent closes it */
            close(tell[0]);
            close(out[0]);
            worker_main(be, lfd, tell[1], stop[i][0], out[1]);
        }
        close(stop[i][0]);
    }
    close(tell[1]);
    close(out[1]);

    int bad = 0;
    for (long i = 0; i < nconns && !bad; i++) {
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        char x;
        if (c < 0 || connect(c, (struct sockaddr *)&addr, sizeof addr) < 0) {
            perror(PROG ": connect");
            bad = 1;
        } else if (read(tell[0], &x, 1) != 1) {
            fprintf(stderr, PROG ": a worker died\n");
            bad = 1;
        }
        if (c >= 0)
            close(c);
    }
    for (long i = 0; i < nworkers; i++)
        close(stop[i][1]);
    long wakeups = 0, total = 0;
    unsigned long long events = 0;
    char spread[MAX_WORKERS * 12] = "";
    size_t used = 0;
    for (long i = 0; i < nworkers; i++) {
        int status = 0;
        report_t r;
        if (waitpid(pids[i], &status, 0) != pids[i] || !WIFEXITED(status) || WEXITSTATUS(status))
            bad = 1;
        if (read(out[0], &r, sizeof r) != (ssize_t)sizeof r) {
            bad = 1;
            continue;
        }
        wakeups += r.wakeups;
        events += r.events;
        total += r.accepted;
        used += (size_t)snprintf(spread + used, sizeof spread - used, "%s%ld", i ? " / " : "", r.accepted);
    }
    if (bad || total != nconns) {
        fprintf(stderr, PROG ": failed (%ld of %ld connections accepted)\n", total, nconns);
        return 1;
    }
    printf("%s, %ld workers, %ld connections: %.2f wake-ups and %.2f events per connection; "
           "accepted per worker: %s\n", be, nworkers, nconns, (double)wakeups / (double)nconns,
           (double)events / (double)nconns, spread);
    return 0;
}
