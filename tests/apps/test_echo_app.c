/* The echo apps as a user runs them: the real server (iop-echo-server, in
 * coroutines, or iop-echo-proactor, with callbacks: one build of this file each)
 * and iop-echo-client binaries, started with fork/exec on 127.0.0.1 port 0.
 *
 * usage: test_echo_app BACKEND   the echo tests on one backend
 *        test_echo_app --cli     command-line behaviour (help, errors, addresses) */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proc.h"

#ifndef ECHO_SERVER_PATH
#error "ECHO_SERVER_PATH must name the echo server binary"
#endif
#ifndef ECHO_SERVER_NAME
#define ECHO_SERVER_NAME "iop-echo-server"
#endif
#ifndef ECHO_CLIENT_PATH
#error "ECHO_CLIENT_PATH must name the iop-echo-client binary"
#endif

#define LINE_TIMEOUT_MS 10000     /* server start-up, generous for sanitizer builds */
#define RUN_TIMEOUT_MS 60000
#define STOP_TIMEOUT_MS 2000      /* SIGTERM → exit, as promised */
#define MAX_SOCKS 160

static const char *backend;       /* NULL in the --cli group: the apps' default */
static int with_stats;            /* start the server with --stats */

typedef struct fixture {
    proc_t srv;
    int port;
    char where[128];              /* the address as the server printed it */
    char line[1024];
    int socks[MAX_SOCKS];
    int nsocks;
} fixture_t;

/* ---- starting and stopping the server ------------------------------------------- */

/* Starts the server and learns its address from its one line. */
static int start_server(fixture_t *f, const char *be, const char *listen, long nofile)
{
    char *argv[10];
    int i = 0;
    argv[i++] = ECHO_SERVER_PATH;
    if (be) {
        argv[i++] = "--backend";
        argv[i++] = (char *)be;
    }
    argv[i++] = "--listen";
    argv[i++] = (char *)listen;
    if (with_stats)
        argv[i++] = "--stats";
    /* One more flag for every server of the run (ctest: --multishot). */
    const char *extra = getenv("ECHO_SERVER_EXTRA");
    if (extra && *extra)
        argv[i++] = (char *)extra;
    argv[i] = NULL;
    int r = proc_start(&f->srv, argv, nofile);
    if (r < 0)
        return r;
    r = proc_read_line(&f->srv, f->line, sizeof f->line, LINE_TIMEOUT_MS);
    if (r < 0) {
        char err[4096];
        fprintf(stderr, "server gave no line (%s); stderr:\n%s\n", strerror(-r),
                proc_stderr(&f->srv, err, sizeof err));
        return r;
    }
    static const char prefix[] = ECHO_SERVER_NAME ": listening on ";
    const char *comma = strstr(f->line, ", backend ");
    if (strncmp(f->line, prefix, sizeof prefix - 1) != 0 || !comma) {
        fprintf(stderr, "unexpected server line: %s\n", f->line);
        return -EPROTO;
    }
    const char *addr = f->line + sizeof prefix - 1;
    snprintf(f->where, sizeof f->where, "%.*s", (int)(comma - addr), addr);
    const char *colon = strrchr(f->where, ':');
    f->port = colon ? atoi(colon + 1) : 0;
    return f->port > 0 ? 0 : -EPROTO;
}

/* True if the server's line names backend `be` as the one it runs on. */
static int line_names_backend(const char *line, const char *be)
{
    char want[96];
    snprintf(want, sizeof want, ", backend %s", be);
    const char *p = strstr(line, want);
    if (!p)
        return 0;
    char next = p[strlen(want)];
    return next == '\0' || next == ' ';
}

/* SIGTERM, then the promised clean exit within STOP_TIMEOUT_MS. */
static int stop_server(fixture_t *f, int sig)
{
    if (!f->srv.pid)
        return 0;
    kill(f->srv.pid, sig);
    long long t0 = now_ms();
    int r = proc_wait(&f->srv, STOP_TIMEOUT_MS);
    char err[4096];
    if (r < 0) {
        fprintf(stderr, "server did not exit within %d ms of signal %d; stderr:\n%s\n",
                STOP_TIMEOUT_MS, sig, proc_stderr(&f->srv, err, sizeof err));
        return -1;
    }
    if (!WIFEXITED(f->srv.status) || WEXITSTATUS(f->srv.status) != 0) {
        fprintf(stderr, "server ended with wait status 0x%x after %lld ms; stderr:\n%s\n",
                f->srv.status, now_ms() - t0, proc_stderr(&f->srv, err, sizeof err));
        return -1;
    }
    return 0;
}

static int setup_server(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    *state = f;
    if (start_server(f, backend, "127.0.0.1:0", 0) < 0)
        return -1;
    if (!line_names_backend(f->line, backend)) {
        fprintf(stderr, "server line does not name backend %s: %s\n", backend, f->line);
        return -1;
    }
    return 0;
}

static int setup_empty(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    *state = f;
    return f ? 0 : -1;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (!f)
        return 0;
    for (int i = 0; i < f->nsocks; i++)
        if (f->socks[i] >= 0)
            close(f->socks[i]);
    int r = stop_server(f, SIGTERM);
    proc_cleanup(&f->srv);
    free(f);
    return r;
}

/* ---- sockets ------------------------------------------------------------------------ */

/* A blocking TCP connection to 127.0.0.1:port whose reads and writes give up after
 * 5 s, registered with the fixture for closing. */
static int connect_local(fixture_t *f, int port, int nonblock)
{
    assert_true(f->nsocks < MAX_SOCKS);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    assert_true(fd >= 0);
    f->socks[f->nsocks++] = fd;
    struct timeval tv = { .tv_sec = 5 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    assert_true(r == 0 || (nonblock && errno == EINPROGRESS));
    return fd;
}

static void send_all(int fd, const void *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = send(fd, (const char *)buf + done, len - done, MSG_NOSIGNAL);
        assert_true(n > 0);
        done += (size_t)n;
    }
}

static void recv_exact(int fd, void *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = recv(fd, (char *)buf + done, len - done, 0);
        assert_true(n > 0);       /* 0: closed early; -1: error or the 5 s timeout */
        done += (size_t)n;
    }
}

/* recv returns 0 (orderly close) or ECONNRESET within timeout_ms. */
static int closed_by_peer(int fd, int timeout_ms)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    if (poll(&pfd, 1, timeout_ms) <= 0)
        return 0;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

/* ---- running the client ----------------------------------------------------------- */

typedef struct run {
    int status;
    char out[8192], err[8192];
} run_t;

static void run_client(run_t *r, const char *in, size_t inlen, ...)
{
    char *argv[24];
    int i = 0;
    argv[i++] = ECHO_CLIENT_PATH;
    va_list ap;
    va_start(ap, inlen);
    for (char *a; (a = va_arg(ap, char *)) != NULL && i < 23;)
        argv[i++] = a;
    va_end(ap);
    argv[i] = NULL;
    r->status = proc_run(argv, in, inlen, r->out, sizeof r->out, r->err, sizeof r->err,
                         RUN_TIMEOUT_MS);
}

static int exit_code(const run_t *r)
{
    return r->status >= 0 && WIFEXITED(r->status) ? WEXITSTATUS(r->status) : -1;
}

/* The run exited 0; if not, shows what it said before failing the test. */
static void assert_ran_ok(const run_t *r)
{
    if (exit_code(r) != 0)
        fprintf(stderr, "wait status 0x%x\nstdout: %s\nstderr: %s\n", r->status, r->out, r->err);
    assert_int_equal(exit_code(r), 0);
}

static void run_server_argv(run_t *r, char *const argv[])
{
    r->status = proc_run(argv, NULL, 0, r->out, sizeof r->out, r->err, sizeof r->err,
                         RUN_TIMEOUT_MS);
}

/* ---- the echo tests, one backend ------------------------------------------------- */

static void test_client_check(void **state)
{
    fixture_t *f = *state;
    run_t r;
    char want[64];
    run_client(&r, NULL, 0, "--check", "200", "--backend", (char *)backend, f->where, (char *)NULL);
    assert_ran_ok(&r);
    assert_non_null(strstr(r.out, "ok: 200 messages, "));
    snprintf(want, sizeof want, "verified, backend %s\n", backend);
    assert_non_null(strstr(r.out, want));
}

static void test_client_check_many_connections(void **state)
{
    fixture_t *f = *state;
    run_t r;
    run_client(&r, NULL, 0, "--check", "300", "--connections", "8", "--size", "70000",
               "--backend", (char *)backend, f->where, (char *)NULL);
    assert_ran_ok(&r);
    assert_non_null(strstr(r.out, "ok: 300 messages, "));
}

static void test_client_pipes_stdin(void **state)
{
    fixture_t *f = *state;
    char in[6000];
    size_t n = (size_t)snprintf(in, sizeof in, "hello\nsecond line\n\n");
    for (; n < sizeof in - 2; n++)   /* plus one line longer than a pipe write */
        in[n] = (char)('a' + n % 26);
    in[n++] = '\n';
    run_t r;
    run_client(&r, in, n, "--backend", (char *)backend, f->where, (char *)NULL);
    assert_ran_ok(&r);
    assert_int_equal(strlen(r.out), n);
    assert_memory_equal(r.out, in, n);
}

static void test_raw_echo_and_close(void **state)
{
    fixture_t *f = *state;
    int fd = connect_local(f, f->port, 0);
    char buf[64];
    for (int round = 0; round < 3; round++) {
        char msg[32];
        int len = snprintf(msg, sizeof msg, "ping %d\n", round);
        send_all(fd, msg, (size_t)len);
        recv_exact(fd, buf, (size_t)len);
        assert_memory_equal(buf, msg, (size_t)len);
    }
    /* Our end of file makes the server close its side. */
    shutdown(fd, SHUT_WR);
    assert_true(closed_by_peer(fd, 5000));
}

/* The hot path allocates nothing: over 2,000 round trips on one connection the
 * server's heap allocations stay at what accepting one connection may cost (a chunk
 * of connection records or a coroutine, the fd tables growing to reach its fd), far
 * below one per message. */
static void test_no_allocation_per_message(void **state)
{
    fixture_t *f = *state;
    with_stats = 1;
    int r = start_server(f, backend, "127.0.0.1:0", 0);
    with_stats = 0;
    assert_int_equal(r, 0);
    int fd = connect_local(f, f->port, 0);
    char msg[64], buf[64];
    for (int i = 0; i < 2000; i++) {
        memset(msg, 'a' + i % 26, sizeof msg);
        send_all(fd, msg, sizeof msg);
        recv_exact(fd, buf, sizeof buf);
        assert_memory_equal(buf, msg, sizeof msg);
    }
    close(fd);
    f->nsocks = 0;
    assert_int_equal(stop_server(f, SIGTERM), 0);
    char err[4096];
    const char *line = strstr(proc_stderr(&f->srv, err, sizeof err), "stats: ");
    assert_non_null(line);
    unsigned long long reads = 0, conns = 0, allocs = ~0ull;
    assert_int_equal(sscanf(line, "stats: %llu reads echoed, %llu connections, %llu heap",
                            &reads, &conns, &allocs), 3);
    assert_true(reads >= 2000);
    assert_int_equal(conns, 1);
    assert_true(allocs <= 4);
}

/* 1 MiB each way at once: the server must keep reading while its sends are partial. */
static void test_raw_echo_1mib(void **state)
{
    fixture_t *f = *state;
    size_t len = 1u << 20;
    unsigned char *out = malloc(len), *in = malloc(len);
    assert_non_null(out);
    assert_non_null(in);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out[i] = (unsigned char)x;
    }
    int fd = connect_local(f, f->port, 1);
    size_t sent = 0, got = 0;
    long long until = now_ms() + 30000;
    while (got < len && now_ms() < until) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN | (sent < len ? POLLOUT : 0) };
        if (poll(&pfd, 1, 1000) <= 0)
            continue;
        if ((pfd.revents & POLLOUT) && sent < len) {
            ssize_t n = send(fd, out + sent, len - sent, MSG_NOSIGNAL);
            if (n > 0)
                sent += (size_t)n;
        }
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = recv(fd, in + got, len - got, 0);
            assert_true(n > 0 || (n < 0 && errno == EAGAIN));
            if (n > 0)
                got += (size_t)n;
        }
    }
    assert_int_equal(sent, len);
    assert_int_equal(got, len);
    assert_memory_equal(in, out, len);
    free(out);
    free(in);
}

static void stop_with_open_connections(void **state, int sig)
{
    fixture_t *f = *state;
    int idle = connect_local(f, f->port, 0);
    int busy = connect_local(f, f->port, 0);
    char buf[8];
    send_all(busy, "abc", 3);
    recv_exact(busy, buf, 3);
    assert_int_equal(stop_server(f, sig), 0);
    assert_true(closed_by_peer(idle, 1000));
    assert_true(closed_by_peer(busy, 1000));
}

static void test_sigterm_exits_zero(void **state) { stop_with_open_connections(state, SIGTERM); }
static void test_sigint_exits_zero(void **state) { stop_with_open_connections(state, SIGINT); }

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* One out-of-fds episode, the n-th of the server's run: connections beyond the limit
 * are shed without burning CPU, the ones already open keep being served, the
 * episode is logged once (not once per failed accept, and not only the first
 * time), and the server recovers once fds are free again. */
static void emfile_episode(fixture_t *f, int n)
{
    int base = f->nsocks;
    for (int i = 0; i < 80; i++)
        connect_local(f, f->port, 1);
    poll(NULL, 0, 300);           /* let it fill up and start shedding */

    double cpu0 = proc_cpu_seconds(f->srv.pid);
    long long t0 = now_ms();
    while (now_ms() - t0 < 1000) {
        for (int i = 0; i < 5 && f->nsocks < MAX_SOCKS; i++)
            connect_local(f, f->port, 1);   /* keep the backlog busy */
        poll(NULL, 0, 100);
    }
    double cpu1 = proc_cpu_seconds(f->srv.pid);
    assert_true(cpu0 >= 0 && cpu1 >= 0);
    fprintf(stderr, "episode %d: server CPU while shedding: %.3f s in %lld ms\n", n, cpu1 - cpu0,
            now_ms() - t0);
    assert_true(cpu1 - cpu0 < 0.3);

    /* Some were shed (closed by the server); the accepted ones still echo. */
    int shed = 0, served = 0;
    int alive[MAX_SOCKS];
    for (int i = base; i < f->nsocks; i++) {
        alive[i] = !closed_by_peer(f->socks[i], 0);
        shed += !alive[i];
        if (alive[i] && send(f->socks[i], "x", 1, MSG_NOSIGNAL) != 1)
            alive[i] = 0;
    }
    long long until = now_ms() + 3000;
    for (int i = base; i < f->nsocks; i++) {
        struct pollfd pfd = { .fd = f->socks[i], .events = POLLIN };
        char c;
        if (alive[i] && poll(&pfd, 1, (int)(until - now_ms() > 0 ? until - now_ms() : 0)) > 0 &&
            recv(f->socks[i], &c, 1, MSG_DONTWAIT) == 1 && c == 'x')
            served++;
    }
    fprintf(stderr, "episode %d: connections shed: %d, served: %d\n", n, shed, served);
    assert_true(shed > 0);
    assert_true(served >= 5);

    char err[16384];
    proc_stderr(&f->srv, err, sizeof err);
    if (count_of(err, "warning: accept:") != n)   /* one line per episode */
        fail_msg("episode %d: not one warning per episode:\n%s", n, err);

    /* Free the fds: a new client is served again. */
    for (int i = base; i < f->nsocks; i++) {
        close(f->socks[i]);
        f->socks[i] = -1;
    }
    f->nsocks = base;
    /* Until the server has seen those closes, a new connection is still dropped. */
    long long t1 = now_ms();
    while (proc_open_fds(f->srv.pid) > 16 && now_ms() - t1 < 5000)
        poll(NULL, 0, 10);
    assert_in_range(proc_open_fds(f->srv.pid), 1, 16);
    run_t r;
    run_client(&r, NULL, 0, "--check", "20", "--timeout", "5", "--backend", (char *)backend,
               f->where, (char *)NULL);
    assert_ran_ok(&r);
    if (count_of(proc_stderr(&f->srv, err, sizeof err), "accepting again") != n)
        fail_msg("episode %d: not one 'accepting again' per episode:\n%s", n, err);
}

/* Out of fds twice over: each episode sheds without spinning, is logged once, and
 * ends with the server accepting again. */
static void test_emfile_sheds_without_spinning(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(start_server(f, backend, "127.0.0.1:0", 32), 0);
    emfile_episode(f, 1);
    emfile_episode(f, 2);
}

/* RLIMIT_NOFILE lowered under a running server, its accept already waiting (on
 * io_uring with --multishot, a multishot accept armed in the kernel, which keeps
 * the limit of when it was armed until it ends): whichever limit the backend
 * meets, the server does not spin, keeps its listener, logs an episode at most
 * once, and serves a new client once the connections are gone. */
static void test_emfile_limit_lowered(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(start_server(f, backend, "127.0.0.1:0", 0), 0);
    run_t r;
    run_client(&r, NULL, 0, "--check", "5", "--timeout", "5", "--backend", (char *)backend, f->where,
               (char *)NULL);
    assert_ran_ok(&r);           /* the accept is armed */
    int open_fds = proc_open_fds(f->srv.pid);
    assert_true(open_fds > 0);
    struct rlimit low = { .rlim_cur = (rlim_t)open_fds + 8, .rlim_max = RLIM_INFINITY }, old;
    assert_int_equal(prlimit(f->srv.pid, RLIMIT_NOFILE, NULL, &old), 0);
    low.rlim_max = old.rlim_max;
    assert_int_equal(prlimit(f->srv.pid, RLIMIT_NOFILE, &low, NULL), 0);
    for (int i = 0; i < 40; i++)
        connect_local(f, f->port, 1);
    poll(NULL, 0, 300);
    double cpu0 = proc_cpu_seconds(f->srv.pid);
    long long t0 = now_ms();
    while (now_ms() - t0 < 1000) {
        for (int i = 0; i < 5 && f->nsocks < MAX_SOCKS; i++)
            connect_local(f, f->port, 1);   /* keep the backlog busy */
        poll(NULL, 0, 100);
    }
    double cpu1 = proc_cpu_seconds(f->srv.pid);
    char err[16384];
    fprintf(stderr, "server CPU with the limit lowered: %.3f s; %d fds open (limit %d)\nstderr: %s\n",
            cpu1 - cpu0, proc_open_fds(f->srv.pid), (int)low.rlim_cur, proc_stderr(&f->srv, err, sizeof err));
    assert_true(cpu0 >= 0 && cpu1 - cpu0 < 0.3);
    assert_in_range(count_of(err, "warning: accept:"), 0, 1);
    for (int i = 0; i < f->nsocks; i++) {
        close(f->socks[i]);
        f->socks[i] = -1;
    }
    f->nsocks = 0;
    long long t1 = now_ms();
    while (proc_open_fds(f->srv.pid) > open_fds && now_ms() - t1 < 5000)
        poll(NULL, 0, 10);
    run_client(&r, NULL, 0, "--check", "20", "--timeout", "5", "--backend", (char *)backend, f->where,
               (char *)NULL);
    assert_ran_ok(&r);
}

/* ---- command line --------------------------------------------------------------------- */

static void test_help(void **state)
{
    (void)state;
    run_t r;
    char *srv[] = { ECHO_SERVER_PATH, "--help", NULL };
    run_server_argv(&r, srv);
    assert_ran_ok(&r);
    assert_non_null(strstr(r.out, "usage: " ECHO_SERVER_NAME));
    run_client(&r, NULL, 0, "--help", (char *)NULL);
    assert_ran_ok(&r);
    assert_non_null(strstr(r.out, "usage: iop-echo-client"));
}

static void test_unknown_backend(void **state)
{
    (void)state;
    run_t r;
    char *srv[] = { ECHO_SERVER_PATH, "--backend", "nosuchbackend", "--listen", "127.0.0.1:0", NULL };
    run_server_argv(&r, srv);
    assert_true(exit_code(&r) > 0);
    assert_non_null(strstr(r.err, "nosuchbackend"));
    assert_null(strstr(r.out, "listening"));
    run_client(&r, NULL, 0, "--backend", "nosuchbackend", "--check", "1", "127.0.0.1:9", (char *)NULL);
    assert_true(exit_code(&r) > 0);
    assert_non_null(strstr(r.err, "nosuchbackend"));
}

static void test_usage_errors_exit_2(void **state)
{
    (void)state;
    static const char *const bad_listen[] = {
        "127.0.0.1", "127.0.0.1:99999", "127.0.0.1:x", "::1:80", "[::1]80", "",
    };
    run_t r;
    for (size_t i = 0; i < sizeof bad_listen / sizeof *bad_listen; i++) {
        char *srv[] = { ECHO_SERVER_PATH, "--listen", (char *)bad_listen[i], NULL };
        run_server_argv(&r, srv);
        assert_int_equal(exit_code(&r), 2);
        assert_true(strlen(r.err) > 0);
        assert_non_null(strchr(r.err, '\n'));
    }
    char *opt[] = { ECHO_SERVER_PATH, "--no-such-option", NULL };
    run_server_argv(&r, opt);
    assert_int_equal(exit_code(&r), 2);
    assert_non_null(strstr(r.err, "--no-such-option"));
    char *noval[] = { ECHO_SERVER_PATH, "--listen", NULL };
    run_server_argv(&r, noval);
    assert_int_equal(exit_code(&r), 2);
    assert_non_null(strstr(r.err, "needs a value"));
    run_client(&r, NULL, 0, (char *)NULL);                       /* no HOST:PORT */
    assert_int_equal(exit_code(&r), 2);
    run_client(&r, NULL, 0, "--check", "0", "127.0.0.1:9", (char *)NULL);
    assert_int_equal(exit_code(&r), 2);
    run_client(&r, NULL, 0, "--size", "10", "127.0.0.1:9", (char *)NULL);
    assert_int_equal(exit_code(&r), 2);
}

static void test_port_in_use(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(start_server(f, NULL, "127.0.0.1:0", 0), 0);
    run_t r;
    char *srv[] = { ECHO_SERVER_PATH, "--listen", f->where, NULL };
    run_server_argv(&r, srv);
    assert_int_equal(exit_code(&r), 2);
    assert_non_null(strstr(r.err, "cannot listen"));
    assert_non_null(strstr(r.err, "in use"));
    if (strcmp(ECHO_SERVER_NAME, "iop-echo-server") != 0)
        return;
    /* the same with workers (no spread of connections that never were) */
    char *workers[] = { ECHO_SERVER_PATH, "--listen", f->where, "--workers", "2", NULL };
    run_server_argv(&r, workers);
    assert_int_equal(exit_code(&r), 2);
    assert_non_null(strstr(r.err, "in use"));
    assert_null(strstr(r.err, "connections per worker"));
}

static void test_connect_refused(void **state)
{
    (void)state;
    /* A port bound but not listening refuses connections. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    char where[64];
    snprintf(where, sizeof where, "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
    run_t r;
    run_client(&r, NULL, 0, "--check", "5", where, (char *)NULL);
    close(fd);
    assert_int_equal(exit_code(&r), 1);
    assert_non_null(strstr(r.err, "cannot connect"));
    assert_non_null(strstr(r.err, "refused"));
}

/* A fake server in a child that echoes with one byte changed: the client must say
 * where the data went wrong and exit 1. */
static void test_client_detects_corruption(void **state)
{
    (void)state;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(lfd, 4), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &len), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(20);   /* never outlive the test */
        int c = accept(lfd, NULL, NULL);
        char buf[4096];
        ssize_t n;
        int first = 1;
        while (c >= 0 && (n = read(c, buf, sizeof buf)) > 0) {
            if (first && n > 10)
                buf[10] ^= 0x5a;
            first = 0;
            if (write(c, buf, (size_t)n) != n)
                break;
        }
        _exit(0);
    }
    close(lfd);
    char where[64];
    snprintf(where, sizeof where, "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
    run_t r;
    run_client(&r, NULL, 0, "--check", "5", "--size", "1000", "--seed", "7", where, (char *)NULL);
    kill(pid, SIGKILL);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    assert_int_equal(exit_code(&r), 1);
    assert_non_null(strstr(r.err, "differs at byte 10"));
    assert_null(strstr(r.out, "ok:"));
}

static int have_ipv6_loopback(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
    int ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

static void test_ipv6_listen(void **state)
{
    fixture_t *f = *state;
    if (!have_ipv6_loopback())
        skip();
    assert_int_equal(start_server(f, NULL, "[::1]:0", 0), 0);
    assert_true(strncmp(f->where, "[::1]:", 6) == 0);
    run_t r;
    run_client(&r, NULL, 0, "--check", "20", f->where, (char *)NULL);
    assert_ran_ok(&r);
}

static void test_name_listen(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(start_server(f, NULL, "localhost:0", 0), 0);
    assert_true(strncmp(f->where, "127.0.0.1:", 10) == 0 || strncmp(f->where, "[::1]:", 6) == 0);
    char target[64];
    snprintf(target, sizeof target, "localhost:%d", f->port);   /* the client resolves too */
    run_t r;
    run_client(&r, NULL, 0, "--check", "20", target, (char *)NULL);
    assert_ran_ok(&r);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc != 2) {
        fprintf(stderr, "usage: %s BACKEND | --cli\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "--cli") == 0) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_help),
            cmocka_unit_test(test_unknown_backend),
            cmocka_unit_test(test_usage_errors_exit_2),
            cmocka_unit_test(test_connect_refused),
            cmocka_unit_test(test_client_detects_corruption),
            cmocka_unit_test_setup_teardown(test_port_in_use, setup_empty, teardown),
            cmocka_unit_test_setup_teardown(test_ipv6_listen, setup_empty, teardown),
            cmocka_unit_test_setup_teardown(test_name_listen, setup_empty, teardown),
        };
        return cmocka_run_group_tests_name("echo apps: command line", tests, NULL, NULL);
    }
    backend = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_client_check, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_client_check_many_connections, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_client_pipes_stdin, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_raw_echo_and_close, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_raw_echo_1mib, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_no_allocation_per_message, setup_empty, teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_exits_zero, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_sigint_exits_zero, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_emfile_sheds_without_spinning, setup_empty, teardown),
        cmocka_unit_test_setup_teardown(test_emfile_limit_lowered, setup_empty, teardown),
    };
    char name[64];
    snprintf(name, sizeof name, "echo apps on %s", backend);
    return cmocka_run_group_tests_name(name, tests, NULL, NULL);
}
