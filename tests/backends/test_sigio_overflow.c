/* Real-time signal queue overflow. A forked child lowers RLIMIT_SIGPENDING far below
 * the number of signals a flood of many sockets raises; the kernel then drops the
 * surplus and queues a plain SIGIO instead, and the backend must rescan every
 * watched fd so that every byte still arrives.
 *
 * The overflow is observed independently of the backend: right after each flood,
 * before the loop runs, sigpending() shows whether the kernel queued SIGIO; after
 * the loop has received everything, SIGIO must be gone (read by the backend). The
 * child talks to the parent only through a pipe and its exit status: cmocka stays
 * in the parent. */
#include "sigio_test.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include "test_util.h"

#define PAIRS 200
#define ROUNDS 4
#define CHUNKS 4            /* writes per connection per round: one signal each */
#define CHUNK 250
#define SIGPENDING_LIMIT 16

typedef struct overflow_report {
    int step_failed;        /* 0, or which step of the child failed */
    int rounds;
    int overflowed;         /* rounds after whose flood SIGIO was pending */
    int sigio_consumed;     /* of those, rounds after which the loop had read it */
    long expected, received;
    int errors;
    char sigq[64];          /* /proc/self/status SigQ after the first flood */
    uint64_t polls, syscalls;
} overflow_report_t;

static int sigio_pending(void)
{
    sigset_t set;
    return sigpending(&set) == 0 && sigismember(&set, SIGIO);
}

/* "queued/limit" of this user's pending signals. */
static void read_sigq(char *out, size_t len)
{
    snprintf(out, len, "?");
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return;
    char line[128];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "SigQ:", 5) == 0) {
            snprintf(out, len, "%s", line + 5 + strspn(line + 5, " \t"));
            out[strcspn(out, "\n")] = 0;
        }
    }
    fclose(f);
}

static void overflow_child(overflow_report_t *rep)
{
    static int clients[PAIRS];
    static sink_t sinks[PAIRS];
    struct rlimit rl;
    if (getrlimit(RLIMIT_SIGPENDING, &rl) < 0) {
        rep->step_failed = 1;
        return;
    }
    rl.rlim_cur = SIGPENDING_LIMIT;
    if (setrlimit(RLIMIT_SIGPENDING, &rl) < 0) {
        rep->step_failed = 2;
        return;
    }
    iop_loop_t *loop = st_loop_new();
    if (!loop) {
        rep->step_failed = 3;
        return;
    }
    for (int i = 0; i < PAIRS; i++) {
        int fds[2];
        if (st_tcp_pair(fds) < 0 ||
            st_sink_start(loop, &sinks[i], fds[1], &rep->received, &rep->errors) < 0) {
            rep->step_failed = 4;
            return;
        }
        clients[i] = fds[0];
    }
    iop_loop_run(loop, IOP_RUN_NOWAIT);   /* arms every server fd */
    for (int r = 0; r < ROUNDS; r++) {
        for (int k = 0; k < CHUNKS; k++)
            for (int i = 0; i < PAIRS; i++)
                if (st_write_chunks(clients[i], CHUNK, CHUNK) < 0) {
                    rep->step_failed = 5;
                    return;
                }
        rep->expected += (long)PAIRS * CHUNKS * CHUNK;
        int overflowed = sigio_pending();
        if (r == 0)
            read_sigq(rep->sigq, sizeof rep->sigq);
        if (st_run_until_bytes(loop, &rep->received, rep->expected, 5000) != 1) {
            rep->step_failed = 6;
            return;
        }
        rep->rounds++;
        rep->overflowed += overflowed;
        rep->sigio_consumed += overflowed && !sigio_pending();
    }
    iop_loop_stats_t s;
    iop_loop_get_stats(loop, &s);
    rep->polls = s.polls;
    rep->syscalls = s.syscalls;
    for (int i = 0; i < PAIRS; i++) {
        iop_fd_close(loop, sinks[i].fd);
        close(clients[i]);
    }
    iop_loop_destroy(loop);
}

void test_sigio_queue_overflow_loses_nothing(void **state)
{
    (void)state;
    char why[160];
    if (tu_raise_nofile(2 * PAIRS + 64, why, sizeof why) < 0)
        skip();
    int p[2];
    tu_pipe(p);
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        overflow_report_t rep = { 0 };
        overflow_child(&rep);
        ssize_t n = write(p[1], &rep, sizeof rep);
        _exit(n == (ssize_t)sizeof rep ? 0 : 1);
    }
    close(p[1]);

    /* Bounded: the child's own waits add up to ROUNDS * 5 s at most. */
    int status = 0, exited = 0;
    for (int i = 0; i < 3000 && !exited; i++) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            exited = 1;
        else
            tu_sleep_ms(10);
    }
    if (!exited) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    overflow_report_t rep = { 0 };
    ssize_t n = 0;
    for (int i = 0; i < 100 && n == 0; i++) {
        n = read(p[0], &rep, sizeof rep);
        if (n < 0 && errno == EAGAIN) {
            n = 0;
            tu_sleep_ms(1);
        }
    }
    close(p[0]);
    assert_true(exited);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(n, (ssize_t)sizeof rep);

    printf("sigio overflow: %d connections, RLIMIT_SIGPENDING %d, %d floods of %d signals each;\n"
           "  SIGIO queued by the kernel after %d floods (SigQ after the first: %s),\n"
           "  read by the backend in %d of them; %ld of %ld bytes arrived; %llu waits, %llu syscalls\n",
           PAIRS, SIGPENDING_LIMIT, rep.rounds, PAIRS * CHUNKS, rep.overflowed, rep.sigq,
           rep.sigio_consumed, rep.received, rep.expected,
           (unsigned long long)rep.polls, (unsigned long long)rep.syscalls);
    if (rep.step_failed)
        fail_msg("child failed at step %d (round %d, %ld of %ld bytes)", rep.step_failed, rep.rounds,
                 rep.received, rep.expected);
    assert_int_equal(rep.rounds, ROUNDS);
    assert_int_equal(rep.errors, 0);
    assert_int_equal(rep.received, rep.expected);
    assert_true(rep.overflowed >= 1);   /* the test did force an overflow */
    assert_int_equal(rep.sigio_consumed, rep.overflowed);
}
