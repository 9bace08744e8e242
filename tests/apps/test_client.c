/* iop-client against servers that misbehave on purpose (each a forked process on
 * loopback, one child per connection): what load counts as an error, that a run
 * keeps its length and its connections, and that the interactive modes end with the
 * right status instead of hanging. Run once per backend. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>
#include "proc.h"

static const char *backend;

typedef enum {
    ECHO, WRONG_BYTES, STALL_FIRST, CLOSE_AFTER_20, BAD_LENGTH, BAD_STATUS, NO_READ,
    CHUNKED, TO_CLOSE, BAD_CHUNK, INTERIM, EMPTY_BODY
} behaviour_t;

typedef struct server {
    pid_t pid;
    char addr[64];
} server_t;

static ssize_t read_some(int fd, char *buf, size_t len)
{
    ssize_t n;
    do
        n = read(fd, buf, len);
    while (n < 0 && errno == EINTR);
    return n;
}

static void serve_conn(int fd, behaviour_t how, unsigned index)
{
    char buf[65536];
    int answered = 0;
    if (how == NO_READ || (how == STALL_FIRST && index == 0)) {
        pause();
        _exit(0);
    }
    for (;;) {
        ssize_t n = read_some(fd, buf, sizeof buf);
        if (n <= 0)
            _exit(0);
        if (how == BAD_LENGTH) {
            static const char r[] = "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n";
            (void)!write(fd, r, sizeof r - 1);
            continue;
        }
        if (how == BAD_STATUS) {
            static const char r[] = "HTTP/1.1 0200 OK\r\nContent-Length: 0\r\n\r\n";
            (void)!write(fd, r, sizeof r - 1);
            continue;
        }
        if (how == CHUNKED) {
            /* An extension, two chunks, a trailer; the first answers in pieces. */
            static const char *const parts[] = { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;e",
                                                 "xt=1\r\nHello\r", "\n8\r\n, World!\r\n0\r\nX-T",
                                                 "railer: 1\r\n\r", "\n" };
            for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
                if (write(fd, parts[i], strlen(parts[i])) < 0)
                    _exit(0);
                if (answered < 3)
                    usleep(2000);
            }
            answered++;
            continue;
        }
        if (how == TO_CLOSE) {
            static const char r[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nHello, World!";
            (void)!write(fd, r, sizeof r - 1);
            _exit(0);
        }
        if (how == INTERIM) {
            /* 103 then 200: together in one write, or apart. */
            static const char early[] = "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n";
            static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
            if (answered++ % 2) {
                char both[sizeof early + sizeof ok];
                memcpy(both, early, sizeof early - 1);
                memcpy(both + sizeof early - 1, ok, sizeof ok - 1);
                (void)!write(fd, both, sizeof early + sizeof ok - 2);
            } else {
                (void)!write(fd, early, sizeof early - 1);
                usleep(1000);
                (void)!write(fd, ok, sizeof ok - 1);
            }
            continue;
        }
        if (how == EMPTY_BODY) {
            static const char r[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
            (void)!write(fd, r, sizeof r - 1);
            continue;
        }
        if (how == BAD_CHUNK) {
            static const char r[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
            (void)!write(fd, r, sizeof r - 1);
            continue;
        }
        if (how == WRONG_BYTES)
            memset(buf, 'y', (size_t)n);
        if (write(fd, buf, (size_t)n) != n)
            _exit(0);
        if (how == CLOSE_AFTER_20 && ++answered == 20)
            _exit(0);
    }
}

/* A server in its own process; every connection gets a child that dies with it. */
static void server_start(server_t *s, behaviour_t how)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(l >= 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(l, 64), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &len), 0);
    snprintf(s->addr, sizeof s->addr, "127.0.0.1:%u", ntohs(a.sin_port));
    s->pid = fork();
    assert_true(s->pid >= 0);
    if (s->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        signal(SIGCHLD, SIG_IGN);  /* reap the connection children */
        for (unsigned i = 0;; i++) {
            int c = accept(l, NULL, NULL);
            if (c < 0)
                continue;
            pid_t p = fork();
            if (p == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                close(l);
                serve_conn(c, how, i);
            }
            close(c);
        }
    }
    close(l);
}

static void server_stop(server_t *s)
{
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
}

/* Runs iop-client with the backend and args (NULL-terminated); its exit status, the
 * time it took, and what it printed. */
static int client(long long *ms, char *out, size_t outlen, char *err, size_t errlen, const char *in,
                  size_t inlen, ...)
{
    char *argv[32] = { CLIENT_PATH, "--backend", (char *)backend };
    int n = 3;
    va_list ap;
    va_start(ap, inlen);
    for (char *a; n < 31 && (a = va_arg(ap, char *));)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    long long t0 = now_ms();
    int st = proc_run(argv, in, inlen, out, outlen, err, errlen, 60000);
    *ms = now_ms() - t0;
    assert_true(st >= 0 && WIFEXITED(st));
    return WEXITSTATUS(st);
}

/* An echo with the right length but other bytes is an error, not a success. */
static void test_load_checks_echo_bytes(void **state)
{
    (void)state;
    server_t s;
    server_start(&s, WRONG_BYTES);
    char out[2048], err[2048];
    long long ms;
    int st = client(&ms, out, sizeof out, err, sizeof err, NULL, 0, "load", "echo", s.addr, "--connections", "2",
                    "--duration", "0.3", "--warmup", "0", NULL);
    server_stop(&s);
    if (st != 1 || !strstr(err, "bytes differ"))
        fail_msg("status %d\nstdout: %s\nstderr: %s", st, out, err);
}

/* One connection of four never answers: the run still ends on time (its length plus
 * a second for requests in flight), and the unanswered request is an error. */
static void test_load_stalled_connection(void **state)
{
    (void)state;
    server_t s;
    server_start(&s, STALL_FIRST);
    char out[2048], err[2048];
    long long ms;
    int st = client(&ms, out, sizeof out, err, sizeof err, NULL, 0, "load", "echo", s.addr, "--connections", "4",
                    "--duration", "0.5", "--warmup", "0", "--timeout", "30", NULL);
    server_stop(&s);
    if (st != 1 || !strstr(err, "no answer by the end of the run") || ms > 5000 || strstr(out, " 0 errors"))
        fail_msg("status %d after %lld ms\nstdout: %s\nstderr: %s", st, ms, out, err);
}

/* A server that closes every connection after 20 echoes: each failure is counted
 * and the connection made again, so the run lasts its whole length with requests
 * served throughout. */
static void test_load_keeps_connections(void **state)
{
    (void)state;
    server_t s;
    server_start(&s, CLOSE_AFTER_20);
    char out[2048], err[2048];
    long long ms;
    int st = client(&ms, out, sizeof out, err, sizeof err, NULL, 0, "load", "echo", s.addr, "--connections", "2",
                    "--duration", "0.6", "--warmup", "0", "--json", NULL);
    server_stop(&s);
    const char *req = strstr(out, "\"requests\":"), *errs = strstr(out, "\"errors\":");
    long long nreq = req ? atoll(req + 11) : 0, nerr = errs ? atoll(errs + 9) : 0;
    /* each reconnect waits 100 ms: some 6 rounds of 20 echoes per connection */
    if (st != 1 || ms < 550 || nerr < 4 || nreq < 100)
        fail_msg("status %d after %lld ms, %lld requests, %lld errors\nstdout: %s\nstderr: %s", st, ms, nreq,
                 nerr, out, err);
}

/* A result line that cannot be written (stdout on /dev/full) is a failure. */
static void test_load_result_unwritable(void **state)
{
    (void)state;
    server_t s;
    server_start(&s, ECHO);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int full = open("/dev/full", O_WRONLY), devnull = open("/dev/null", O_WRONLY);
        dup2(full, 1);
        dup2(devnull, 2);
        execl(CLIENT_PATH, CLIENT_PATH, "--backend", backend, "load", "echo", s.addr, "--connections", "1",
              "--duration", "0.2", "--warmup", "0", (char *)NULL);
        _exit(127);
    }
    int code = proc_exit_code(pid, 10000);
    server_stop(&s);
    assert_int_equal(code, 1);
}

/* SIGINT ends a long load at once with its result for the time measured so far
 * (it was killed, printing nothing), status 130. */
static void test_load_interrupted(void **state)
{
    (void)state;
    server_t s;
    server_start(&s, ECHO);
    char *argv[] = { CLIENT_PATH, "--backend", (char *)backend, "load", "echo", s.addr, "--connections", "2",
                     "--duration", "60", "--warmup", "0", NULL };
    proc_t p;
    assert_int_equal(proc_start(&p, argv, 0), 0);
    poll(NULL, 0, 800);
    kill(p.pid, SIGINT);
    long long t0 = now_ms();
    char line[512] = "";
    int n = proc_read_line(&p, line, sizeof line, 10000);
    int r = proc_wait(&p, 10000);
    long long ms = now_ms() - t0;
    char err[2048];
    proc_stderr(&p, err, sizeof err);
    server_stop(&s);
    if (n < 0 || r < 0 || !WIFEXITED(p.status) || WEXITSTATUS(p.status) != 130 || !strstr(line, " 0 errors") ||
        strstr(line, " 0 req/s") || !strstr(err, "interrupted after") || ms > 5000)
        fail_msg("line '%s' (%d), wait %d, status 0x%x, %lld ms\nstderr: %s", line, n, r, p.status, ms, err);
    proc_cleanup(&p);
}

/* load http against a server answering how: a malformed response, status 1. */
static void expect_bad_message(behaviour_t how)
{
    server_t s;
    server_start(&s, how);
    char out[2048], err[2048];
    long long ms;
    int st = client(&ms, out, sizeof out, err, sizeof err, NULL, 0, "load", "http", s.addr, "--connections", "1",
                    "--duration", "0.3", "--warmup", "0", NULL);
    server_stop(&s);
    if (st != 1 || !strstr(err, "response: Bad message"))
        fail_msg("status %d\nstdout: %s\nstderr: %s", st, out, err);
}

/* Content-Length: abc is a malformed response, not an empty body. */
static void test_load_http_bad_length(void **state)
{
    (void)state;
    expect_bad_message(BAD_LENGTH);
}

/* A status that is not three digits is a malformed response ("0200" was 200). */
static void test_load_http_bad_status(void **state)
{
    (void)state;
    expect_bad_message(BAD_STATUS);
}

/* A chunked body that is not hex sizes is a malformed response. */
static void test_load_http_bad_chunk(void **state)
{
    (void)state;
    server_t s;
    server_start(&s, BAD_CHUNK);
    char out[2048], err[2048];
    long long ms;
    int st = client(&ms, out, sizeof out, err, sizeof err, NULL, 0, "load", "http", s.addr, "--connections", "1",
                    "--duration", "0.3", "--warmup", "0", NULL);
    server_stop(&s);
    if (st != 1 || !strstr(err, "malformed chunked body"))
        fail_msg("status %d\nstdout: %s\nstderr: %s", st, out, err);
}

/* Bodies framed by chunks (split anywhere) and by the close are answers, not errors
 * ("more than one came back" and a reset were what these got). */
static void expect_served(behaviour_t how, int reuse)
{
    server_t s;
    server_start(&s, how);
    char out[2048], err[2048];
    long long ms;
    int st = client(&ms, out, sizeof out, err, sizeof err, NULL, 0, "load", "http", s.addr, "--connections", "2",
                    "--duration", "0.5", "--warmup", "0", "--json", NULL);
    server_stop(&s);
    const char *req = strstr(out, "\"requests_incl_warmup\":"), *errs = strstr(out, "\"errors\":"),
               *con = strstr(out, "\"connects\":");
    long long nreq = req ? atoll(req + 23) : 0, nerr = errs ? atoll(errs + 9) : -1, ncon = con ? atoll(con + 11) : 0;
    /* Kept alive: fewer connections than requests. To the close: one each. */
    int framing_ok = reuse ? ncon == 2 && nreq > 4 : ncon == nreq && nreq >= 2;
    if (st != 0 || nerr != 0 || !framing_ok)
        fail_msg("status %d, %lld requests, %lld connects, %lld errors\nstdout: %s\nstderr: %s", st, nreq,
                 ncon, nerr, out, err);
}

static void test_load_http_chunked(void **state)
{
    (void)state;
    expect_served(CHUNKED, 1);
}

/* An interim 1xx answer before the final one is skipped, whether it comes with it
 * or alone (it was taken for the answer: "more than one came back", or the 200
 * left unread for the next request). */
static void test_load_http_interim(void **state)
{
    (void)state;
    expect_served(INTERIM, 1);
}

static void test_load_http_to_close(void **state)
{
    (void)state;
    expect_served(TO_CLOSE, 0);
}

/* Content-Length: 0 with nothing after the head is a whole answer (each one waited
 * for the next bytes until --timeout, then counted an error). */
static void test_load_http_empty_body(void **state)
{
    (void)state;
    expect_served(EMPTY_BODY, 1);
}

/* echo with stdin on /dev/null (a file epoll cannot poll): end of input, status 0. */
static void test_echo_stdin_devnull(void **state)
{
    (void)state;
    server_t s;
    server_start(&s, ECHO);
    char *argv[] = { CLIENT_PATH, "--backend", (char *)backend, "echo", s.addr, NULL };
    proc_t p;
    assert_int_equal(proc_start(&p, argv, 0), 0);   /* stdin: /dev/null */
    int r = proc_wait(&p, 10000);
    char err[2048];
    proc_stderr(&p, err, sizeof err);
    server_stop(&s);
    if (r < 0 || !WIFEXITED(p.status) || WEXITSTATUS(p.status) != 0)
        fail_msg("wait %d, status 0x%x\nstderr: %s", r, p.status, err);
    proc_cleanup(&p);
}

/* echo started with stdin closed: the number must not go to the loop's own fds or
 * the socket (the session then read its own wake-ups, and hung). */
static void test_echo_stdin_closed(void **state)
{
    (void)state;
    server_t s;
    server_start(&s, ECHO);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        close(0);
        execl(CLIENT_PATH, CLIENT_PATH, "--backend", backend, "echo", s.addr, (char *)NULL);
        _exit(127);
    }
    int code = proc_exit_code(pid, 10000);
    server_stop(&s);
    assert_int_equal(code, 0);
}

/* A server that never reads: the send times out, and the session ends with status 1
 * (it printed the error and then waited for the server forever). */
static void test_echo_send_timeout(void **state)
{
    (void)state;
    server_t s;
    server_start(&s, NO_READ);
    size_t n = 16u << 20;
    char *in = malloc(n);
    assert_non_null(in);
    memset(in, 'z', n);
    char out[2048], err[2048];
    long long ms;
    int st = client(&ms, out, sizeof out, err, sizeof err, in, n, "--timeout", "1", "echo", s.addr, NULL);
    free(in);
    server_stop(&s);
    if (st != 1 || !strstr(err, "sending: Connection timed out") || ms > 15000)
        fail_msg("status %d after %lld ms\nstderr: %s", st, ms, err);
}

/* Started with room for stdin, stdout, stderr and one more fd: the loop (epoll,
 * io_uring: its own fd and the wake eventfd) or else the socket cannot be had. That
 * is a run-time failure, status 1 with the reason, not the usage error's 2. */
static void test_out_of_fds(void **state)
{
    (void)state;
    server_t s;
    server_start(&s, ECHO);
    char *argv[] = { CLIENT_PATH, "--backend", (char *)backend, "echo", s.addr, NULL };
    proc_t p;
    assert_int_equal(proc_start(&p, argv, 4), 0);
    int r = proc_wait(&p, 10000);
    char err[2048];
    proc_stderr(&p, err, sizeof err);
    server_stop(&s);
    proc_cleanup(&p);
    if (r < 0 || !WIFEXITED(p.status) || WEXITSTATUS(p.status) != 1 || !strstr(err, "Too many open files"))
        fail_msg("wait %d, status 0x%x\nstderr: %s", r, p.status, err);
}

int main(int argc, char **argv)
{
    backend = argc > 1 ? argv[1] : "epoll";
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_checks_echo_bytes),
        cmocka_unit_test(test_load_stalled_connection),
        cmocka_unit_test(test_load_keeps_connections),
        cmocka_unit_test(test_load_http_bad_length),
        cmocka_unit_test(test_load_http_bad_status),
        cmocka_unit_test(test_load_http_bad_chunk),
        cmocka_unit_test(test_load_http_chunked),
        cmocka_unit_test(test_load_http_to_close),
        cmocka_unit_test(test_load_http_empty_body),
        cmocka_unit_test(test_load_http_interim),
        cmocka_unit_test(test_load_result_unwritable),
        cmocka_unit_test(test_load_interrupted),
        cmocka_unit_test(test_echo_stdin_devnull),
        cmocka_unit_test(test_echo_stdin_closed),
        cmocka_unit_test(test_echo_send_timeout),
        cmocka_unit_test(test_out_of_fds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
