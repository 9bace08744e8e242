/* The chat service end to end: the real ioplexd with two worker processes, raw
 * socket clients and the real iop-client.
 *
 * usage: test_chat_daemon BACKEND */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "chat_peer.h"
#include "proc.h"

#ifndef IOPLEXD_PATH
#error "IOPLEXD_PATH must name the ioplexd binary"
#endif

#define T 5000                   /* ms: a line that should come */

static const char *backend = "epoll";

typedef struct daemon {
    proc_t p;
    struct sockaddr_in addr;
    char where[64];
} daemon_t;

static daemon_t dmn;
static pid_t client_pid;         /* iop-client, while it runs */

/* ---- the daemon --------------------------------------------------------------------- */

/* The pid in the last "worker W: started pid N" line of its stderr, or 0. */
static pid_t worker_pid(daemon_t *d, int worker, int *generations)
{
    static char err[65536];
    proc_stderr(&d->p, err, sizeof err);
    char key[64];
    snprintf(key, sizeof key, "worker %d: started pid ", worker);
    pid_t pid = 0;
    int n = 0;
    for (const char *at = strstr(err, key); at; at = strstr(at + 1, key), n++)
        pid = (pid_t)atoi(at + strlen(key));
    if (generations)
        *generations = n;
    return pid;
}

/* Has worker pid said it is ready? */
static int worker_ready(daemon_t *d, pid_t pid)
{
    static char err[65536];
    char key[64];
    snprintf(key, sizeof key, "pid %d ready", (int)pid);
    return strstr(proc_stderr(&d->p, err, sizeof err), key) != NULL;
}

static int wait_workers_ready(daemon_t *d, int min_generations_1)
{
    long long end = now_ms() + 10000;
    while (now_ms() < end) {
        int g1 = 0;
        pid_t p0 = worker_pid(d, 0, NULL), p1 = worker_pid(d, 1, &g1);
        if (p0 && p1 && g1 >= min_generations_1 && worker_ready(d, p0) && worker_ready(d, p1))
            return 0;
        poll(NULL, 0, 20);
    }
    return -1;
}

static void daemon_start(daemon_t *d)
{
    char *argv[] = { IOPLEXD_PATH, "--workers", "2", "--backend", (char *)backend,
                     "--drain-timeout", "5", "--service", "chat=127.0.0.1:0", NULL };
    assert_int_equal(proc_start(&d->p, argv, 0), 0);
    char line[512];
    for (;;) {
        int n = proc_read_line(&d->p, line, sizeof line, 10000);
        if (n < 0) {
            char err[4096];
            fail_msg("ioplexd said no listening line (%s); stderr: %s", strerror(-n),
                     proc_stderr(&d->p, err, sizeof err));
        }
        const char *at = strstr(line, "chat listening on ");
        if (at) {
            sscanf(at + strlen("chat listening on "), "%63s", d->where);
            break;
        }
    }
    char *colon = strrchr(d->where, ':');
    assert_non_null(colon);
    d->addr.sin_family = AF_INET;
    d->addr.sin_port = htons((uint16_t)atoi(colon + 1));
    d->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(wait_workers_ready(d, 1), 0);
}

/* After a SIGTERM (a second one would kill the workers at once): its exit status
 * and stderr. */
static int daemon_wait(daemon_t *d, char *err, size_t errlen)
{
    if (proc_wait(&d->p, 15000) < 0)
        return -1;
    proc_stderr(&d->p, err, errlen);
    if (strstr(err, "Sanitizer") || strstr(err, "runtime error:")) {
        fprintf(stderr, "ioplexd's stderr:\n%s\n", err);
        return -1;               /* a sanitizer report from the daemon or a worker */
    }
    return WIFEXITED(d->p.status) ? WEXITSTATUS(d->p.status) : 128 + WTERMSIG(d->p.status);
}

static int teardown(void **state)
{
    (void)state;
    if (client_pid > 0) {
        kill(client_pid, SIGKILL);
        waitpid(client_pid, NULL, 0);
        client_pid = 0;
    }
    proc_cleanup(&dmn.p);
    return 0;
}

static peer_t *join_as(const char *nick)
{
    peer_t *p = peer_connect(&dmn.addr, 0);
    assert_non_null(p);
    snprintf(p->name, sizeof p->name, "%s", nick);
    char line[64];
    snprintf(line, sizeof line, "/nick %s\n", nick);
    assert_int_equal(peer_send(p, line), 0);
    snprintf(line, sizeof line, "* %s joined", nick);
    assert_int_equal(peer_expect(p, line, T), 0);
    return p;
}

static void say(peer_t *p, const char *text)
{
    char line[1024];
    snprintf(line, sizeof line, "%s\n", text);
    assert_int_equal(peer_send(p, line), 0);
}

/* ---- two workers, one room, a worker killed -------------------------------------------- */

#define N 20
#define NEW 12

static void test_two_workers(void **state)
{
    (void)state;
    daemon_start(&dmn);
    peer_t *c[N];
    char nick[16], line[512];
    for (int i = 0; i < N; i++) {
        snprintf(nick, sizeof nick, "c%02d", i);
        c[i] = join_as(nick);
    }
    for (int i = 0; i < N; i++) {
        snprintf(line, sizeof line, "hello from c%02d", i);
        say(c[i], line);
    }
    /* Every message exactly once, in one order for all. */
    int order[N][N];
    for (int i = 0; i < N; i++) {
        int seen[N] = { 0 }, n = 0;
        while (n < N) {
            int r = peer_line(c[i], line, sizeof line, T);
            if (r < 0)
                fail_msg("c%02d: %s after %d messages", i, strerror(-r), n);
            int who;
            if (sscanf(line, "<c%d> hello from", &who) != 1)
                continue;        /* a later join */
            assert_true(who >= 0 && who < N);
            assert_int_equal(seen[who]++, 0);
            order[i][n++] = who;
        }
        assert_memory_equal(order[i], order[0], sizeof order[0]);
    }
    /* /who sees both workers' members. */
    say(c[0], "/who");
    char want[1024];
    int off = snprintf(want, sizeof want, "* in the room (%d):", N);
    for (int i = 0; i < N; i++)
        off += snprintf(want + off, sizeof want - (size_t)off, " c%02d", i);
    assert_int_equal(peer_expect(c[0], want, T), 0);

    /* kill -9 worker 1: its members lose their connection; the others are told
     * they left (by the replacement worker or a reader's check for dead workers). */
    pid_t victim = worker_pid(&dmn, 1, NULL);
    assert_true(victim > 0);
    assert_int_equal(kill(victim, SIGKILL), 0);
    int dead[N] = { 0 }, left[N][N], ndead = 0;
    memset(left, 0, sizeof left);
    long long end = now_ms() + 10000;
    for (int settled = 0; !settled && now_ms() < end;) {
        for (int i = 0; i < N; i++) {
            while (!dead[i]) {
                int r = peer_line(c[i], line, sizeof line, 0);
                if (r == -ETIMEDOUT)
                    break;
                if (r < 0) {
                    dead[i] = 1;
                    ndead++;
                    break;
                }
                int who;
                if (sscanf(line, "* c%d left", &who) == 1 && who >= 0 && who < N)
                    left[i][who]++;
                else
                    fail_msg("c%02d: unexpected '%s'", i, line);
            }
        }
        settled = ndead > 0;
        for (int i = 0; i < N && settled; i++)
            for (int j = 0; j < N && !dead[i]; j++)
                settled &= left[i][j] == dead[j];
        if (!settled)
            poll(NULL, 0, 20);
    }
    fprintf(stderr, "kill -9 of worker 1 (pid %d) dropped %d of %d members\n", (int)victim, ndead, N);
    assert_true(ndead > 0 && ndead < N);          /* both workers had members */
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N && !dead[i]; j++)
            assert_int_equal(left[i][j], dead[j]);    /* exactly the dead ones, once */

    /* The others go on chatting. */
    int first = 0;
    while (dead[first])
        first++;
    say(c[first], "still here");
    snprintf(want, sizeof want, "<c%02d> still here", first);
    for (int i = 0; i < N; i++)
        if (!dead[i])
            assert_int_equal(peer_expect(c[i], want, T), 0);

    /* A new worker 1 serves newcomers, and the dead members' nicks are free again. */
    assert_int_equal(wait_workers_ready(&dmn, 2), 0);
    assert_true(worker_pid(&dmn, 1, NULL) != victim);
    peer_t *n[N + NEW];
    int nn = 0;
    for (int j = 0; j < N; j++) {
        if (!dead[j])
            continue;
        peer_close(c[j]);
        c[j] = NULL;
        snprintf(nick, sizeof nick, "c%02d", j);
        n[nn++] = join_as(nick);
    }
    for (int k = 0; k < NEW; k++) {
        snprintf(nick, sizeof nick, "n%02d", k);
        n[nn++] = join_as(nick);
    }
    say(n[nn - 1], "from the new ones");
    snprintf(want, sizeof want, "<n%02d> from the new ones", NEW - 1);
    for (int i = 0; i < N; i++)
        if (c[i])
            assert_true(peer_wait_for(c[i], want, T) >= 0);
    for (int k = 0; k < nn; k++)
        assert_true(peer_wait_for(n[k], want, T) >= 0);
    say(n[0], "/who");
    snprintf(want, sizeof want, "* in the room (%d):", N + NEW);
    assert_int_equal(peer_expect_prefix(n[0], want, T), 0);

    /* A drain: everybody is told, then let go; both workers served members. */
    kill(dmn.p.pid, SIGTERM);
    for (int i = 0; i < N; i++)
        if (c[i]) {
            assert_true(peer_wait_for(c[i], "* server restarting", T) >= 0);
            assert_int_equal(peer_wait_eof(c[i], T), 0);
        }
    for (int k = 0; k < nn; k++) {
        assert_true(peer_wait_for(n[k], "* server restarting", T) >= 0);
        assert_int_equal(peer_wait_eof(n[k], T), 0);
    }
    static char err[65536];
    assert_int_equal(daemon_wait(&dmn, err, sizeof err), 0);
    const char *per = strstr(err, "connections per worker: ");
    assert_non_null(per);
    unsigned long long w0 = 0, w1 = 0;
    assert_int_equal(sscanf(per, "connections per worker: 0: %llu, 1: %llu", &w0, &w1), 2);
    fprintf(stderr, "connections per worker: 0: %llu, 1: %llu\n", w0, w1);
    assert_true(w0 > 0);
    assert_true(w1 > (unsigned long long)ndead);   /* the new worker 1 had some too */
    assert_int_equal(w0 + w1, (unsigned long long)(N + nn));
    for (int i = 0; i < N; i++)
        peer_close(c[i]);
    for (int k = 0; k < nn; k++)
        peer_close(n[k]);
}

/* ---- the real iop-client ------------------------------------------------------------------ */

/* Starts iop-client chat with its stdin and stdout on pipes (*to_stdin, *from_stdout). */
static pid_t start_client(const char *nick, int *to_stdin, int *from_stdout)
{
    int in[2], out[2];
    assert_int_equal(pipe2(in, O_CLOEXEC), 0);
    assert_int_equal(pipe2(out, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        signal(SIGPIPE, SIG_DFL);
        char *argv[] = { CLIENT_PATH, "--backend", (char *)backend, "chat", dmn.where, (char *)nick, NULL };
        execv(argv[0], argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    *to_stdin = in[1];
    *from_stdout = out[0];
    return pid;
}

static void test_iop_client(void **state)
{
    (void)state;
    daemon_start(&dmn);
    peer_t *raw = join_as("raw");

    /* A nick the room refuses (taken, malformed) ends the client with status 1,
     * whatever it was about to say. */
    static const char *refused[] = { "raw", "bad nick" };
    for (size_t i = 0; i < 2; i++) {
        int to, from;
        client_pid = start_client(refused[i], &to, &from);
        static const char line[] = "not sent\n";
        assert_int_equal(write(to, line, sizeof line - 1), (ssize_t)sizeof line - 1);
        assert_int_equal(proc_exit_code(client_pid, T), 1);
        client_pid = 0;
        close(to);
        close(from);
    }
    int to_client, from_client;
    client_pid = start_client(" cli ", &to_client, &from_client);   /* trimmed, as the room does */
    peer_t *cli = peer_from_fd(from_client, "iop-client");
    assert_int_equal(peer_expect(raw, "* cli joined", T), 0);
    assert_int_equal(peer_expect(cli, "* cli joined", T), 0);

    static const char hello[] = "hello from cli\n";
    assert_int_equal(write(to_client, hello, sizeof hello - 1), (ssize_t)sizeof hello - 1);
    assert_int_equal(peer_expect(raw, "<cli> hello from cli", T), 0);
    assert_int_equal(peer_expect(cli, "<cli> hello from cli", T), 0);
    say(raw, "hi cli");
    assert_int_equal(peer_expect(cli, "<raw> hi cli", T), 0);
    assert_int_equal(peer_expect(raw, "<raw> hi cli", T), 0);

    /* End of its input: it half-closes, the server takes that as leaving, closes,
     * and the client ends cleanly. */
    close(to_client);
    assert_int_equal(peer_expect(raw, "* cli left", T), 0);
    assert_int_equal(peer_wait_eof(cli, T), 0);
    assert_int_equal(proc_exit_code(client_pid, T), 0);
    client_pid = 0;
    peer_close(cli);

    static char err[65536];
    kill(dmn.p.pid, SIGTERM);
    assert_true(peer_wait_for(raw, "* server restarting", T) >= 0);
    assert_int_equal(daemon_wait(&dmn, err, sizeof err), 0);
    peer_close(raw);
}

/* A test that runs too long must not leave its children behind. */
static void on_alarm(int sig)
{
    (void)sig;
    if (client_pid > 0)
        kill(client_pid, SIGKILL);
    if (dmn.p.pid > 0)
        kill(dmn.p.pid, SIGKILL);
    static const char msg[] = "test_chat_daemon: timed out\n";
    ssize_t n = write(2, msg, sizeof msg - 1);
    (void)n;
    _exit(124);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        backend = argv[1];
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    alarm(80);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_two_workers, teardown),
        cmocka_unit_test_teardown(test_iop_client, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
