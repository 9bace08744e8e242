/* ioplexd and iop-client as a user runs them: the real binaries over loopback.
 *
 * usage: test_ioplexd BACKEND   serving, stats, a rolling restart under load with no
 *                               failed request, drains
 *        test_ioplexd BACKEND --supervisor
 *                               worker deaths and failed starts, stats across
 *                               generations, a stop hook that hangs
 *        test_ioplexd --cli     the command line, --no-defer-accept */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proc.h"

#ifndef IOPLEXD_PATH
#error "IOPLEXD_PATH must name the ioplexd binary"
#endif
#ifndef CLIENT_PATH
#error "CLIENT_PATH must name the iop-client binary"
#endif

static const char *backend;

typedef struct daemon_proc {
    proc_t p;
    char addr[128];               /* the echo service's address as printed */
    char out[4096];               /* its stdout lines so far */
} daemon_proc_t;

static void start_daemon_on(daemon_proc_t *d, const char *workers, const char *extra, const char *service);

/* Starts ioplexd with an echo service on a free port and waits for its lines. */
static void start_daemon(daemon_proc_t *d, const char *workers, const char *extra)
{
    start_daemon_on(d, workers, extra, "echo=127.0.0.1:0");
}

static void start_daemon_on(daemon_proc_t *d, const char *workers, const char *extra, const char *service)
{
    char *argv[12];
    int i = 0;
    argv[i++] = IOPLEXD_PATH;
    argv[i++] = "--backend";
    argv[i++] = (char *)backend;
    argv[i++] = "--workers";
    argv[i++] = (char *)workers;
    argv[i++] = "--service";
    argv[i++] = (char *)service;
    argv[i++] = "--drain-timeout";
    argv[i++] = "3";
    if (extra)
        argv[i++] = (char *)extra;
    argv[i] = NULL;
    assert_int_equal(proc_start(&d->p, argv, 0), 0);
    d->out[0] = d->addr[0] = '\0';
    char line[512];
    while (!d->addr[0]) {
        int r = proc_read_line(&d->p, line, sizeof line, 10000);
        if (r < 0) {
            char err[4096];
            fprintf(stderr, "ioplexd gave no address (%s); stderr:\n%s\n", strerror(-r),
                    proc_stderr(&d->p, err, sizeof err));
            fail();
        }
        strncat(d->out, line, sizeof d->out - strlen(d->out) - 2);
        strcat(d->out, "\n");
        const char *at = strstr(line, "echo listening on ");
        if (at)
            sscanf(at + strlen("echo listening on "), "%127s", d->addr);
    }
    char want[64];
    snprintf(want, sizeof want, "ioplexd: backend %s", backend);
    assert_non_null(strstr(d->out, want));
}

static int stop_daemon(daemon_proc_t *d, int sig, int timeout_ms)
{
    kill(d->p.pid, sig);
    int r = proc_wait(&d->p, timeout_ms);
    if (r < 0)
        return r;
    return WIFEXITED(d->p.status) ? WEXITSTATUS(d->p.status) : 128 + WTERMSIG(d->p.status);
}

/* iop-client load echo against addr: its result line in out; its exit code. */
static int run_load(const char *addr, const char *conns, const char *secs, char *out, size_t outlen)
{
    char err[2048];
    char *argv[] = { CLIENT_PATH, "load", "echo", (char *)addr, "--connections", (char *)conns,
                     "--duration", (char *)secs, "--warmup", "0", "--backend", (char *)backend, NULL };
    int st = proc_run(argv, NULL, 0, out, outlen, err, sizeof err, 60000);
    if (st < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fprintf(stderr, "iop-client load: status 0x%x\nstdout: %s\nstderr: %s\n", st, out, err);
    return st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The interactive echo mode: lines through the service and back. */
static void test_echo_session(void **state)
{
    (void)state;
    daemon_proc_t d;
    start_daemon(&d, "0", NULL);
    static const char in[] = "first line\nsecond line\n";
    char out[256], err[1024];
    char *argv[] = { CLIENT_PATH, "echo", d.addr, "--backend", (char *)backend, NULL };
    int st = proc_run(argv, in, sizeof in - 1, out, sizeof out, err, sizeof err, 20000);
    assert_true(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_string_equal(out, in);
    assert_int_equal(stop_daemon(&d, SIGTERM, 5000), 0);
    proc_cleanup(&d.p);
}

/* Two workers: load goes through without errors, both workers take connections,
 * the stats line shows them, SIGTERM drains and exits 0. */
static void test_workers_serve_and_drain(void **state)
{
    (void)state;
    daemon_proc_t d;
    start_daemon(&d, "2", "--stats-interval=0.2");
    char out[1024];
    assert_int_equal(run_load(d.addr, "40", "1", out, sizeof out), 0);
    assert_non_null(strstr(out, " 0 errors"));
    poll(NULL, 0, 300);           /* at least one stats line */
    assert_int_equal(stop_daemon(&d, SIGTERM, 10000), 0);
    char err[16384];
    proc_stderr(&d.p, err, sizeof err);
    assert_non_null(strstr(err, "stats: "));
    assert_non_null(strstr(err, "workers: 0: "));
    unsigned long long c0 = 0, c1 = 0;
    const char *per = strstr(err, "connections per worker: ");
    assert_non_null(per);
    assert_int_equal(sscanf(per, "connections per worker: 0: %llu, 1: %llu", &c0, &c1), 2);
    fprintf(stderr, "connections per worker: %llu, %llu\n", c0, c1);
    assert_int_equal(c0 + c1, 40);
    assert_true(c0 > 0 && c1 > 0);
    proc_cleanup(&d.p);
}

/* Waits up to timeout_ms for the last "stats: " line to contain want; that line
 * (NULL if none) is left in *last, within err. */
static int last_stats_says(proc_t *p, const char *want, int timeout_ms, char *err, size_t len,
                           const char **last)
{
    long long t0 = now_ms();
    for (;;) {
        *last = NULL;
        for (const char *at = proc_stderr(p, err, len); (at = strstr(at, "stats: ")); at++)
            *last = at;
        const char *at = *last ? strstr(*last, want) : NULL;
        if (at && at < *last + strcspn(*last, "\n"))
            return 1;
        if (now_ms() - t0 >= timeout_ms)
            return 0;
        poll(NULL, 0, 50);
    }
}

/* --stats lists every worker: the list stopped at about 46 of them. */
static void test_stats_lists_every_worker(void **state)
{
    (void)state;
    char *argv[] = { IOPLEXD_PATH, "--backend", "poll", "--workers", "64", "--service", "echo=127.0.0.1:0",
                     "--stats-interval=0.2", NULL };
    proc_t p;
    assert_int_equal(proc_start(&p, argv, 0), 0);
    static char err[1 << 18];
    const char *last = NULL;
    int found = last_stats_says(&p, "; 63: ", 20000, err, sizeof err, &last);
    kill(p.pid, SIGTERM);
    int r = proc_wait(&p, 20000);
    if (!found)
        fail_msg("no stats line lists worker 63; the last one: %.*s", last ? (int)strcspn(last, "\n") : 4,
                 last ? last : "none");
    assert_int_equal(r, 0);
    assert_true(WIFEXITED(p.status) && WEXITSTATUS(p.status) == 0);
    proc_cleanup(&p);
}

/* A worker killed with connections open: its replacement serves on, and --stats
 * no longer counts the dead worker's connections as open once the clients left. */
static void test_stats_after_worker_death(void **state)
{
    (void)state;
    daemon_proc_t d;
    start_daemon(&d, "2", "--stats-interval=0.2");
    char host[64];
    int port = 0;
    assert_int_equal(sscanf(d.addr, "%63[^:]:%d", host, &port), 2);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, host, &a.sin_addr);
    int fds[10];
    for (int i = 0; i < 10; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_int_equal(connect(fds[i], (struct sockaddr *)&a, sizeof a), 0);
        char c = 'x';
        assert_int_equal(send(fds[i], &c, 1, MSG_NOSIGNAL), 1);
        struct pollfd p = { .fd = fds[i], .events = POLLIN };
        assert_int_equal(poll(&p, 1, 5000), 1);
        assert_int_equal(recv(fds[i], &c, 1, 0), 1);
    }
    /* worker 0's pid, from its "worker 0: pid N ready" line */
    char err[16384];
    int w0 = 0;
    for (long long t0 = now_ms(); !w0 && now_ms() - t0 < 5000; poll(NULL, 0, 50)) {
        const char *at = strstr(proc_stderr(&d.p, err, sizeof err), "worker 0: pid ");
        if (at)
            w0 = atoi(at + strlen("worker 0: pid "));
    }
    assert_true(w0 > 0);
    assert_int_equal(kill(w0, SIGKILL), 0);
    poll(NULL, 0, 600);           /* its replacement starts, stats lines go on */
    for (int i = 0; i < 10; i++)
        close(fds[i]);
    const char *last;             /* a line every 0.2 s: one soon says all are closed */
    if (!last_stats_says(&d.p, " 0 open,", 5000, err, sizeof err, &last))
        fail_msg("a dead worker's connections still counted: %.*s",
                 last ? (int)strcspn(last, "\n") : 6, last ? last : "(none)");
    assert_int_equal(stop_daemon(&d, SIGTERM, 10000), 0);
    proc_cleanup(&d.p);
}

static int echo_connect(const char *addr)
{
    char host[64];
    int port = 0;
    assert_int_equal(sscanf(addr, "%63[^:]:%d", host, &port), 2);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, host, &a.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char c = 'x';
    assert_int_equal(send(fd, &c, 1, MSG_NOSIGNAL), 1);
    struct pollfd p = { .fd = fd, .events = POLLIN };
    assert_int_equal(poll(&p, 1, 5000), 1);
    assert_int_equal(recv(fd, &c, 1, 0), 1);
    return fd;
}

static int count_lines(const char *text, const char *what)
{
    int n = 0;
    for (const char *at = text; (at = strstr(at, what)); at++)
        n++;
    return n;
}

/* Two SIGHUPs while the first generation still drains: three generations of worker
 * 0 alive at once. The third shared the first one's stats cell, and once the first
 * had gone its connection no longer counted as open ("0 open" with one open). */
static void test_stats_three_generations(void **state)
{
    (void)state;
    daemon_proc_t d;
    start_daemon(&d, "1", "--stats-interval=0.2");
    int a = echo_connect(d.addr);
    kill(d.p.pid, SIGHUP);
    poll(NULL, 0, 800);
    int b = echo_connect(d.addr);
    kill(d.p.pid, SIGHUP);
    poll(NULL, 0, 800);
    int c = echo_connect(d.addr);
    /* One stats line every 0.2 s while generations drain: each draining worker 0
     * used to go on printing its own, counting the same counters twice. */
    char err[32768];
    int before = count_lines(proc_stderr(&d.p, err, sizeof err), "stats: ");
    poll(NULL, 0, 1000);
    int during = count_lines(proc_stderr(&d.p, err, sizeof err), "stats: ") - before;
    if (during > 7)
        fail_msg("%d stats lines in 1 s (one each 0.2 s) with three generations of worker 0", during);
    close(a);                     /* the two draining generations end */
    close(b);
    const char *last;
    if (!last_stats_says(&d.p, " 1 open,", 5000, err, sizeof err, &last))
        fail_msg("one connection open, the last stats line says: %.*s",
                 last ? (int)strcspn(last, "\n") : 6, last ? last : "(none)");
    close(c);
    assert_int_equal(stop_daemon(&d, SIGTERM, 10000), 0);
    proc_cleanup(&d.p);
}

/* A rolling restart whose replacement fails to start past the crash-loop limit
 * leaves the old worker serving (it stopped the whole server, status 1), and a
 * replacement is ready only once every service's worker_start ran: with echo
 * listed before the failing service it was reported ready at its first accept and
 * the old worker drained for a process about to die. */
static void test_restart_fails_past_crash_limit(void **state)
{
    (void)state;
    char flag[] = "/tmp/iop-fail-start-XXXXXX";
    int fd = mkstemp(flag);
    assert_true(fd >= 0);
    close(fd);
    unlink(flag);
    setenv("IOP_TEST_FAIL_START", flag, 1);
    char *argv[] = { IOPLEXD_PATH, "--backend", (char *)backend, "--workers", "1", "--plugin-path", SVC_MODULE_DIR,
                     "--service", "echo=127.0.0.1:0", "--service", "flakystart=127.0.0.1:0", NULL };
    proc_t p;
    assert_int_equal(proc_start(&p, argv, 0), 0);
    char line[512], addr[128] = "";
    int listening = 0;
    while (listening < 2 && proc_read_line(&p, line, sizeof line, 10000) >= 0) {
        const char *at = strstr(line, "echo listening on ");
        if (at)
            sscanf(at + strlen("echo listening on "), "%127s", addr);
        listening += strstr(line, " listening on ") != NULL;
    }
    assert_int_equal(listening, 2);
    /* The flag is made only once worker 0's services started: made before, it
     * fails the first worker too, which is a crash loop, not a restart. */
    assert_true(proc_stderr_wait(&p, "worker 0: pid ", 10000));
    fd = open(flag, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    close(fd);
    kill(p.pid, SIGHUP);
    char err[32768];
    proc_stderr_wait(&p, "leaves pid", 10000);
    proc_stderr(&p, err, sizeof err);
    unlink(flag);
    if (!strstr(err, "leaves pid") || strstr(err, "draining pid") || strstr(err, "crash-loop"))
        fail_msg("ioplexd stderr:\n%s", err);
    int c = echo_connect(addr);   /* the old worker serves on */
    close(c);
    /* The next SIGHUP, with the cause gone, replaces it. */
    kill(p.pid, SIGHUP);
    assert_true(proc_stderr_wait(&p, "draining pid", 10000));
    kill(p.pid, SIGTERM);
    assert_int_equal(proc_wait(&p, 15000), 0);
    if (!WIFEXITED(p.status) || WEXITSTATUS(p.status) != 0)
        fail_msg("status 0x%x\nstderr:\n%s", p.status, proc_stderr(&p, err, sizeof err));
    proc_cleanup(&p);
    unsetenv("IOP_TEST_FAIL_START");
}

/* [::] is IPv6 only with workers and without: an IPv4 client is refused, an IPv6
 * one served (it took IPv4 too without workers, whatever bindv6only said). */
static void test_v6_wildcard_is_v6_only(void **state)
{
    (void)state;
    int probe = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in6 lo6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
    int have_v6 = probe >= 0 && bind(probe, (struct sockaddr *)&lo6, sizeof lo6) == 0;
    if (probe >= 0)
        close(probe);
    if (!have_v6)
        skip();                    /* no ::1 on this host */
    static const char *const workers[] = { "0", "1" };
    for (int w = 0; w < 2; w++) {
        daemon_proc_t d;
        start_daemon_on(&d, workers[w], NULL, "echo=[::]:0");
        const char *colon = strrchr(d.addr, ':');
        assert_non_null(colon);
        uint16_t port = (uint16_t)atoi(colon + 1);
        struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_port = htons(port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int r = connect(fd, (struct sockaddr *)&a4, sizeof a4);
        if (r == 0 || errno != ECONNREFUSED)
            fail_msg("--workers %s, [::]: an IPv4 connect gave %d (%s)", workers[w], r, strerror(errno));
        close(fd);
        lo6.sin6_port = htons(port);
        fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_int_equal(connect(fd, (struct sockaddr *)&lo6, sizeof lo6), 0);
        char c = 'v';
        assert_int_equal(send(fd, &c, 1, MSG_NOSIGNAL), 1);
        struct pollfd p = { .fd = fd, .events = POLLIN };
        assert_int_equal(poll(&p, 1, 5000), 1);
        assert_int_equal(recv(fd, &c, 1, 0), 1);
        assert_int_equal(c, 'v');
        close(fd);
        assert_int_equal(stop_daemon(&d, SIGTERM, 10000), 0);
        proc_cleanup(&d.p);
    }
}

/* SIGHUP during load: the workers are replaced one by one, and not one request of
 * the load fails (connections open at the restart finish on the old workers, new
 * ones go to the new ones, none is refused). */
static void test_rolling_restart_under_load(void **state)
{
    (void)state;
    daemon_proc_t d;
    start_daemon(&d, "2", NULL);
    pid_t load = fork();
    assert_true(load >= 0);
    if (load == 0) {
        char out[1024];
        _exit(run_load(d.addr, "20", "2", out, sizeof out) == 0 && strstr(out, " 0 errors") ? 0 : 1);
    }
    poll(NULL, 0, 700);                   /* the restart takes well under a second */
    kill(d.p.pid, SIGHUP);
    assert_int_equal(proc_exit_code(load, 30000), 0);
    bool done = proc_stderr_wait(&d.p, "rolling restart done", 10000);   /* slower than the load under a busy machine */
    assert_int_equal(stop_daemon(&d, SIGTERM, 10000), 0);
    char err[16384];
    if (!done)
        fail_msg("no 'rolling restart done'; stderr:\n%s", proc_stderr(&d.p, err, sizeof err));
    proc_cleanup(&d.p);
}

/* A rolling restart whose new worker cannot start its services (worker_start
 * fails) leaves the old worker serving: a worker is ready only after its hooks
 * ran, and the old one is drained only for a ready one. */
static void test_restart_with_failing_start(void **state)
{
    (void)state;
    char flag[] = "/tmp/iop-fail-start-XXXXXX";
    int fd = mkstemp(flag);
    assert_true(fd >= 0);
    close(fd);
    unlink(flag);
    setenv("IOP_TEST_FAIL_START", flag, 1);
    char *argv[] = { IOPLEXD_PATH, "--backend", (char *)backend, "--workers", "1",
                     "--plugin-path", SVC_MODULE_DIR, "--service", "flakystart=127.0.0.1:0", NULL };
    proc_t p;
    assert_int_equal(proc_start(&p, argv, 0), 0);
    char line[512];
    int listening = 0;
    while (!listening && proc_read_line(&p, line, sizeof line, 10000) >= 0)
        listening = strstr(line, "flakystart listening on") != NULL;
    assert_true(listening);
    assert_true(proc_stderr_wait(&p, "worker 0: pid ", 10000));   /* worker 0 is ready */
    fd = open(flag, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    close(fd);
    kill(p.pid, SIGHUP);
    char err[16384];
    proc_stderr_wait(&p, "told to fail", 5000);   /* the first failed start (slow under load) */
    poll(NULL, 0, 300);                  /* a few more, well under the crash limit */
    proc_stderr(&p, err, sizeof err);
    unlink(flag);
    if (!strstr(err, "told to fail") || strstr(err, "draining pid"))
        fprintf(stderr, "ioplexd stderr:\n%s\n", err);
    assert_non_null(strstr(err, "told to fail"));
    assert_null(strstr(err, "draining pid"));   /* the old worker was left alone */
    kill(p.pid, SIGTERM);
    assert_int_equal(proc_wait(&p, 10000), 0);
    assert_true(WIFEXITED(p.status) && WEXITSTATUS(p.status) == 0);
    proc_cleanup(&p);
    unsetenv("IOP_TEST_FAIL_START");
}

/* --workers 0 has no supervisor to kill a worker that is still stopping after the
 * drain: a service whose worker_stop hangs must not hold the process forever. */
static void test_solo_stop_bounded(void **state)
{
    (void)state;
    char flag[] = "/tmp/iop-hang-stop-XXXXXX";
    int fd = mkstemp(flag);
    assert_true(fd >= 0);
    close(fd);
    setenv("IOP_TEST_HANG_STOP", flag, 1);
    char *argv[] = { IOPLEXD_PATH, "--backend", (char *)backend, "--workers", "0", "--drain-timeout", "1",
                     "--plugin-path", SVC_MODULE_DIR, "--service", "flakystart=127.0.0.1:0", NULL };
    proc_t p;
    assert_int_equal(proc_start(&p, argv, 0), 0);
    char line[512];
    int serving = 0;
    while (!serving && proc_read_line(&p, line, sizeof line, 10000) >= 0)
        serving = strstr(line, "serving in this process") != NULL;
    assert_true(serving);
    kill(p.pid, SIGTERM);
    int r = proc_wait(&p, 20000);         /* 1 s drain + 3 s grace; the hook would take 60 s */
    unlink(flag);
    unsetenv("IOP_TEST_HANG_STOP");
    if (r < 0)
        kill(p.pid, SIGKILL), proc_wait(&p, 5000);
    assert_int_equal(r, 0);
    assert_true(WIFEXITED(p.status) && WEXITSTATUS(p.status) == 1);
    char err[16384];
    proc_stderr(&p, err, sizeof err);
    assert_non_null(strstr(err, "still stopping after the drain timeout"));
    proc_cleanup(&p);
}

/* --workers 0: a second SIGTERM during the drain stops at once (status 1), as the
 * supervisor does with its workers; it was ignored until the drain timeout. */
static void test_solo_second_signal(void **state)
{
    (void)state;
    daemon_proc_t d;
    start_daemon(&d, "0", "--drain-timeout=60");   /* far longer than any wait below */
    int fd = echo_connect(d.addr);   /* a session the drain waits for */
    kill(d.p.pid, SIGTERM);
    /* Two signals sent close together can arrive as one: the second goes once the
     * first has started the drain. */
    assert_true(proc_stderr_wait(&d.p, "draining", 10000));
    long long t0 = now_ms();
    int code = stop_daemon(&d, SIGTERM, 20000);
    long long took = now_ms() - t0;
    close(fd);
    char err[16384];
    proc_stderr(&d.p, err, sizeof err);
    if (code != 1 || took > 10000)
        fail_msg("exit %d after %lld ms; stderr:\n%s", code, took, err);
    assert_non_null(strstr(err, "stopping without waiting for the drain"));
    proc_cleanup(&d.p);
}

/* ---- command line ------------------------------------------------------------------------ */

static int run_daemon_argv(char *const argv[], char *out, size_t outlen, char *err, size_t errlen)
{
    int st = proc_run(argv, NULL, 0, out, outlen, err, errlen, 20000);
    return st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* One command line: its exit status, and what stdout / stderr must contain (NULL:
 * anything). */
typedef struct cli_case {
    const char *argv[12];
    int status;
    const char *in_out, *in_err;
} cli_case_t;

static void test_cli(void **state)
{
    (void)state;
    static const cli_case_t cases[] = {
        { { IOPLEXD_PATH, "--help" }, 0, "usage: ioplexd", NULL },
        { { IOPLEXD_PATH, "--list" }, 0, "echo", NULL },
        { { IOPLEXD_PATH }, 2, NULL, "--service" },
        { { IOPLEXD_PATH, "--service", "nosuch=127.0.0.1:0" }, 2, NULL, "nosuch" },
        { { IOPLEXD_PATH, "--service", "nosuch=127.0.0.1:0" }, 2, NULL, "echo" },   /* what there is */
        { { IOPLEXD_PATH, "--service", "echo" }, 2, NULL, NULL },
        { { IOPLEXD_PATH, "--service", "echo=127.0.0.1:0,x=1", "--workers", "0" }, 2, NULL, "unknown option 'x'" },
        { { IOPLEXD_PATH, "--service", "echo=127.0.0.1:0,send_timeout_ms=0", "--workers", "0" }, 2, NULL, "from 1 to" },
        { { IOPLEXD_PATH, "--service", "echo=127.0.0.1:0,recv=fast", "--workers", "0" }, 2, NULL,
          "recv=fast: want auto, stream or plain" },
        { { IOPLEXD_PATH, "--plugin-path", SVC_MODULE_DIR, "--service", "flakystart=127.0.0.1:0,x=1", "--workers", "0" }, 2, NULL,
          "takes no options" },
        { { IOPLEXD_PATH, "--service", "echo=127.0.0.1:99999", "--workers", "0" }, 2, NULL, "99999" },
        { { IOPLEXD_PATH, "--service", "echo=127.0.0.1:0,a=1,a=2", "--workers", "0" }, 2, NULL, "'a' given twice" },
        { { IOPLEXD_PATH, "--service", "echo=127.0.0.1:0,", "--workers", "0" }, 2, NULL, "an option without a name" },
        { { IOPLEXD_PATH, "--service", "echo=127.0.0.1:0", "--backend", "" }, 2, NULL, "--backend wants a name" },
        { { IOPLEXD_PATH, "--service", "echo=127.0.0.1:0", "--stats-interval", "0.01" }, 2, NULL,
          "--stats-interval wants seconds (0.05 to 3600)" },
        { { IOPLEXD_PATH, "--service", "echo=127.0.0.1:0", "--stats-interval", "soon" }, 2, NULL,
          "not 'soon'" },
        { { IOPLEXD_PATH, "--service", "echo=127.0.0.1:0", "--backend", "nosuch" }, 2, NULL, "nosuch" },
        /* brackets hold an IPv6 address; a v4-mapped one cannot be listened on; the
         * same words in both modes */
        { { IOPLEXD_PATH, "--service", "echo=[]:0", "--workers", "0" }, 2, NULL, "brackets are for an IPv6" },
        { { IOPLEXD_PATH, "--service", "echo=[]:0", "--workers", "1" }, 2, NULL, "brackets are for an IPv6" },
        { { IOPLEXD_PATH, "--service", "echo=[127.0.0.1]:0", "--workers", "1" }, 2, NULL, "brackets are for" },
        { { IOPLEXD_PATH, "--service", "echo=[127.0.0.1]:0", "--workers", "0" }, 2, NULL, "brackets are for" },
        { { IOPLEXD_PATH, "--service", "echo=[::ffff:127.0.0.1]:0", "--workers", "0" }, 2, NULL,
          "an IPv4-mapped address" },
        { { IOPLEXD_PATH, "--service", "echo=[::ffff:127.0.0.1]:0", "--workers", "1" }, 2, NULL,
          "an IPv4-mapped address" },
        /* a link-local address names no link without its zone: said, in both modes
         * and in the client, instead of bind's or connect's "Invalid argument" */
        { { IOPLEXD_PATH, "--service", "echo=[fe80::1]:0", "--workers", "0" }, 2, NULL,
          "a link-local address needs a zone naming its interface, as in [fe80::1%lo]:0" },
        { { IOPLEXD_PATH, "--service", "echo=[fe80::1]:0", "--workers", "1" }, 2, NULL,
          "a link-local address needs a zone naming its interface, as in [fe80::1%lo]:0" },
        { { CLIENT_PATH, "echo", "[fe80::1]:7" }, 2, NULL,
          "a link-local address needs a zone naming its interface, as in [fe80::1%lo]:7" },
        { { CLIENT_PATH, "echo", "[::1]:0" }, 2, NULL, "port 0 is for listening" },
        { { CLIENT_PATH, "echo", "[]:7" }, 2, NULL, "brackets are for an IPv6" },
        { { CLIENT_PATH, "--help" }, 0, "usage: iop-client", NULL },
        { { CLIENT_PATH, "load", "ftp", "127.0.0.1:1" }, 2, NULL, NULL },
        { { CLIENT_PATH, "chat", "127.0.0.1:1", "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn" },
          2, NULL, "NICK wants" },
        { { CLIENT_PATH, "chat", "127.0.0.1:1", "a\nb" }, 2, NULL, "NICK wants" },
        /* the option is named, not its value */
        { { CLIENT_PATH, "load", "echo", "127.0.0.1:1", "--timeout", "0" }, 2, NULL,
          "--timeout wants seconds (0.001 to 3600; fractions allowed), not '0'" },
        { { CLIENT_PATH, "load", "echo", "127.0.0.1:1", "--warmup", "-1" }, 2, NULL,
          "--warmup wants seconds (0 to 600; fractions allowed), not '-1'" },
        { { CLIENT_PATH, "load", "echo", "127.0.0.1:1", "--duration", "1", "--warmup", "0" }, 1, NULL,
          "Connection refused" },
    };
    char out[8192], err[8192];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const cli_case_t *c = &cases[i];
        int st = run_daemon_argv((char *const *)c->argv, out, sizeof out, err, sizeof err);
        if (st != c->status || (c->in_out && !strstr(out, c->in_out)) || (c->in_err && !strstr(err, c->in_err)))
            fail_msg("%s %s %s...: status %d (want %d)\nstdout: %s\nstderr: %s", c->argv[0],
                     c->argv[1] ? c->argv[1] : "", c->argv[1] && c->argv[2] ? c->argv[2] : "", st,
                     c->status, out, err);
    }
    /* A bad port with workers: refused before any worker starts or anything listens. */
    char *badaddr_w[] = { IOPLEXD_PATH, "--service", "echo=127.0.0.1:99999", "--workers", "1", NULL };
    assert_int_equal(run_daemon_argv(badaddr_w, out, sizeof out, err, sizeof err), 2);
    assert_non_null(strstr(err, "99999"));
    assert_null(strstr(out, "listening"));
    assert_null(strstr(err, "connections per worker"));
}

/* A root for the http service in a new temporary directory (root: a mkdtemp
 * template) with one file of size bytes; its path in file. */
static void make_http_root(char *root, const char *name, int size, char *file, size_t filelen)
{
    assert_non_null(mkdtemp(root));
    snprintf(file, filelen, "%s/%s", root, name);
    FILE *fp = fopen(file, "w");
    assert_non_null(fp);
    for (int i = 0; i < size; i++)
        fputc('a' + i % 26, fp);
    fclose(fp);
}

/* Starts ioplexd (argv) and waits for the http service's address. */
static void start_http_daemon(proc_t *p, char **argv, char *addr, size_t addrlen)
{
    assert_int_equal(proc_start(p, argv, 0), 0);
    char line[512];
    addr[0] = '\0';
    while (!addr[0] && proc_read_line(p, line, sizeof line, 10000) >= 0) {
        const char *at = strstr(line, "http listening on ");
        if (at)
            snprintf(addr, addrlen, "%.*s", (int)strcspn(at + strlen("http listening on "), " \n"),
                     at + strlen("http listening on "));
    }
    assert_true(addr[0] != '\0');
}

/* iop-client load http: a body larger than its buffer counts as one response; an
 * answer that is not 2xx/3xx is an error (status 1, the status named); a path that
 * is not one is refused before any request (status 2). */
static void test_load_http(void **state)
{
    (void)state;
    char root[] = "/tmp/iop-load-http-XXXXXX", file[128];
    make_http_root(root, "big.bin", 150000, file, sizeof file);
    char svc[160];
    snprintf(svc, sizeof svc, "http=127.0.0.1:0,root=%s", root);
    char *argv[] = { IOPLEXD_PATH, "--backend", (char *)backend, "--workers", "2", "--service", svc, NULL };
    proc_t p;
    char addr[128];
    start_http_daemon(&p, argv, addr, sizeof addr);
    static const struct { const char *path; int status; const char *says; } runs[] = {
        { "/big.bin", 0, " 0 errors" },
        { "/hello", 0, " 0 errors" },
        { "/nope", 1, "HTTP status 404" },
        { "nope", 2, "--path wants" },
    };
    for (size_t i = 0; i < sizeof runs / sizeof *runs; i++) {
        char out[2048], err[2048];
        char *c[] = { CLIENT_PATH, "load", "http", addr, "--path", (char *)runs[i].path, "--connections", "2",
                      "--duration", "0.3", "--warmup", "0", "--backend", (char *)backend, NULL };
        int st = proc_run(c, NULL, 0, out, sizeof out, err, sizeof err, 60000);
        assert_true(st >= 0 && WIFEXITED(st));
        if (WEXITSTATUS(st) != runs[i].status || (!strstr(out, runs[i].says) && !strstr(err, runs[i].says)))
            fail_msg("load http %s: status %d\nstdout: %s\nstderr: %s", runs[i].path, WEXITSTATUS(st), out, err);
    }
    /* A rolling restart closes idle kept-alive connections as requests go out on
     * them: the client sends those again on a new connection, and nothing fails. */
    pid_t load = fork();
    assert_true(load >= 0);
    if (load == 0) {
        char out[2048], err[2048];
        char *c[] = { CLIENT_PATH, "load", "http", addr, "--connections", "10", "--duration", "1.8",
                      "--warmup", "0", "--backend", (char *)backend, NULL };
        int st = proc_run(c, NULL, 0, out, sizeof out, err, sizeof err, 60000);
        int ok = st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0 && strstr(out, " 0 errors");
        if (!ok)
            fprintf(stderr, "load http during SIGHUP: status 0x%x\nstdout: %s\nstderr: %s\n", st, out, err);
        _exit(ok ? 0 : 1);
    }
    poll(NULL, 0, 600);
    kill(p.pid, SIGHUP);
    assert_int_equal(proc_exit_code(load, 30000), 0);
    kill(p.pid, SIGTERM);
    assert_int_equal(proc_wait(&p, 10000), 0);
    unlink(file);
    rmdir(root);
}

/* A connection to http that sends nothing: with --no-defer-accept it is accepted
 * at once and closed by the header timeout (200 ms); by default the kernel holds it
 * back for about a second first (TCP_DEFER_ACCEPT), in either worker mode. */
static void test_defer_accept_option(void **state)
{
    (void)state;
    static const char *const modes[][2] = { { "0", NULL }, { "0", "--no-defer-accept" },
                                            { "1", NULL }, { "1", "--no-defer-accept" } };
    for (size_t m = 0; m < sizeof modes / sizeof *modes; m++) {
        char *argv[12];
        int n = 0;
        argv[n++] = IOPLEXD_PATH;
        argv[n++] = "--backend";
        argv[n++] = "epoll";
        argv[n++] = "--workers";
        argv[n++] = (char *)modes[m][0];
        argv[n++] = "--service";
        argv[n++] = "http=127.0.0.1:0,header_timeout_ms=200";
        if (modes[m][1])
            argv[n++] = (char *)modes[m][1];
        argv[n] = NULL;
        proc_t p;
        char addr[128], host[64];
        start_http_daemon(&p, argv, addr, sizeof addr);
        int port = 0;
        assert_int_equal(sscanf(addr, "%63[^:]:%d", host, &port), 2);
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
        assert_int_equal(inet_pton(AF_INET, host, &sa.sin_addr), 1);
        /* Serving first (the listener's option is set as its host starts): one
         * request answered. */
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
        static const char req[] = "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_int_equal(send(fd, req, sizeof req - 1, MSG_NOSIGNAL), (ssize_t)sizeof req - 1);
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        assert_int_equal(poll(&pf, 1, 5000), 1);
        close(fd);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
        pf.fd = fd;
        int closed = poll(&pf, 1, 700) == 1;
        close(fd);
        kill(p.pid, SIGTERM);
        assert_int_equal(proc_wait(&p, 10000), 0);
        if (closed != (modes[m][1] != NULL))
            fail_msg("--workers %s %s: a silent connection %s within 700 ms", modes[m][0],
                     modes[m][1] ? modes[m][1] : "(defer)", closed ? "was closed" : "stayed open");
        proc_cleanup(&p);
    }
}

/* SIGTERM while an http client has stopped reading in the middle of its responses
 * (sends behind among them): the drain ends at its deadline and ioplexd exits 0,
 * instead of waiting on the stalled sends until its watchdog ends it (status 1, at
 * the drain timeout + 3 s, "still stopping ..."). */
static void test_drain_with_stalled_http_reader(void **state)
{
    (void)state;
    char root[] = "/tmp/iop-stalled-http-XXXXXX", file[128];
    make_http_root(root, "small.bin", 8000, file, sizeof file);   /* small: out of the send buffer, behind */
    char svc[200];
    snprintf(svc, sizeof svc, "http=127.0.0.1:0,root=%s,send_timeout_ms=20000", root);
    char *argv[] = { IOPLEXD_PATH, "--backend", (char *)backend, "--workers", "0", "--drain-timeout", "1",
                     "--service", svc, NULL };
    proc_t p;
    char addr[128];
    start_http_daemon(&p, argv, addr, sizeof addr);
    char host[64];
    int port = 0;
    assert_int_equal(sscanf(addr, "%63[^:]:%d", host, &port), 2);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    int small = 4096;
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    assert_int_equal(inet_pton(AF_INET, host, &sa.sin_addr), 1);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    /* One request per read of the server's (each response then leaves as a send
     * behind, the coroutine going on to read), until its sends are stuck behind our
     * unread bytes: far more than every socket buffer on the way holds. */
    static const char req[] = "GET /small.bin HTTP/1.1\r\nHost: x\r\n\r\n";
    for (int i = 0; i < 2000; i++) {
        if (send(fd, req, sizeof req - 1, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)sizeof req - 1)
            break;
        poll(NULL, 0, i % 5 == 0);  /* ~0.2 ms apart on average */
    }
    poll(NULL, 0, 300);
    long long t0 = now_ms();
    kill(p.pid, SIGTERM);
    int r = proc_wait(&p, 10000);
    long long took = now_ms() - t0;
    /* The watchdog's exit is status 1 with its own line; the time alone says
     * little on a loaded machine (a sanitizer's leak check runs after the drain). */
    char err[4096];
    proc_stderr(&p, err, sizeof err);
    if (r != 0 || strstr(err, "still stopping"))
        fail_msg("ioplexd: %d after %lld ms (drain timeout 1 s)\nstderr:\n%s", r, took, err);
    close(fd);
    proc_cleanup(&p);
    unlink(file);
    rmdir(root);
}

/* Started with stdout closed, ioplexd writes nothing into its own descriptors: fd 1
 * is /dev/null, not the chat log's eventfd that took the free number (its
 * "listening" lines went there), and it serves and stops as usual. */
static int holds_fd_to(pid_t pid, const char *prefix)
{
    char path[64], link[256];
    for (int fd = 3; fd < 64; fd++) {
        snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)pid, fd);
        ssize_t n = readlink(path, link, sizeof link - 1);
        if (n > 0 && (link[n] = '\0', strncmp(link, prefix, strlen(prefix)) == 0))
            return 1;
    }
    return 0;
}

static void test_stdout_closed(void **state)
{
    (void)state;
    int errp[2];
    assert_int_equal(pipe2(errp, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(errp[1], 2);
        close(1);
        execl(IOPLEXD_PATH, IOPLEXD_PATH, "--workers", "0", "--service", "chat=127.0.0.1:0", (char *)NULL);
        _exit(127);
    }
    close(errp[1]);
    char path[64], link[256] = "";
    snprintf(path, sizeof path, "/proc/%d/fd/1", (int)pid);
    long long until = now_ms() + 10000;
    char exe[64], what[512];
    snprintf(exe, sizeof exe, "/proc/%d/exe", (int)pid);
    for (;;) {                     /* ioplexd, listening: set up by now */
        ssize_t e = readlink(exe, what, sizeof what - 1);
        what[e > 0 ? e : 0] = '\0';
        if ((strstr(what, "ioplexd") && holds_fd_to(pid, "socket:")) || now_ms() > until)
            break;
        poll(NULL, 0, 20);
    }
    ssize_t n = readlink(path, link, sizeof link - 1);
    link[n > 0 ? n : 0] = '\0';
    kill(pid, SIGTERM);
    int code = proc_exit_code(pid, 10000);
    close(errp[0]);
    if (strcmp(link, "/dev/null") != 0 || code != 0)
        fail_msg("fd 1 of ioplexd started with stdout closed: '%s', exit %d", link, code);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--cli") == 0) {
        const struct CMUnitTest tests[] = { cmocka_unit_test(test_cli), cmocka_unit_test(test_defer_accept_option),
                                            cmocka_unit_test(test_stdout_closed),
                                            cmocka_unit_test(test_stats_lists_every_worker) };
        return cmocka_run_group_tests(tests, NULL, NULL);
    }
    backend = argc > 1 ? argv[1] : "epoll";
    if (argc > 2 && strcmp(argv[2], "--supervisor") == 0) {
        /* What only the supervisor and the service hooks decide, whatever the
         * workers' backend: run once, not once per backend. */
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_restart_with_failing_start),
            cmocka_unit_test(test_solo_stop_bounded),
            cmocka_unit_test(test_stats_after_worker_death),
            cmocka_unit_test(test_stats_three_generations),
            cmocka_unit_test(test_restart_fails_past_crash_limit),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_echo_session),
        cmocka_unit_test(test_workers_serve_and_drain),
        cmocka_unit_test(test_rolling_restart_under_load),
        cmocka_unit_test(test_solo_second_signal),
        cmocka_unit_test(test_load_http),
        cmocka_unit_test(test_drain_with_stalled_http_reader),
        cmocka_unit_test(test_v6_wildcard_is_v6_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
