/* The service host with each service plugin, and its acceptor out of memory. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "oom_sweep.h"

/* ---- the service host: each service plugin, an accept loop, a client, a drain ---------- */

typedef struct svc_run {
    iop_service_host_t *h;
    struct sockaddr_in addr;
} svc_run_t;

/* One service to sweep: its options and a client coroutine (given the svc_run_t)
 * that exercises it and returns 0 or its first error, noted. */
typedef struct svc_case {
    const char *name;
    const iop_service_opt_t *opts;
    size_t nopts;
    void *(*client)(void *arg);
} svc_case_t;

static const svc_case_t *svc_now;
static const iop_service_desc_t *svc_real;

/* The service's own serve, its failure noted: a connection that fails for want of
 * memory ends with the service's -ENOMEM before the client sees the socket close. */
static int noted_serve(void *state, iop_service_conn_t *conn)
{
    int r = svc_real->serve(state, conn);
    if (r != -ECANCELED)
        note(r, "serve");
    return r;
}

static void *svc_echo_client(void *arg)
{
    svc_run_t *sr = arg;
    echo_t e = { .addr = sr->addr };
    return echo_client(&e);
}

/* Sends text, then receives until want has come (or the peer's end, noted). The
 * service's answer for "no memory for that now", when it has one, is -ENOMEM. */
static int say_expect(int fd, const char *text, const char *want, const char *oom_answer, const char *what)
{
    size_t len = strlen(text);
    for (size_t off = 0; off < len;) {
        ssize_t m = iop_send(fd, text + off, len - off, 0, soon());
        if (m < 0)
            return note((int)m, what);
        off += (size_t)m;
    }
    char in[4096];
    size_t got = 0;
    in[0] = '\0';
    while (!strstr(in, want)) {
        if (oom_answer && strstr(in, oom_answer))
            return note(-ENOMEM, what);
        if (got == sizeof in - 1)
            fail_msg("%s: no \"%s\" in %s", what, want, in);
        ssize_t n = iop_recv(fd, in + got, sizeof in - 1 - got, 0, soon());
        if (n <= 0)
            return note(n ? (int)n : -EPIPE, what);
        got += (size_t)n;
        in[got] = '\0';
    }
    return 0;
}

static void *svc_http_client(void *arg)
{
    svc_run_t *sr = arg;
    int fd = tu_tcp_socket(), r;
    if ((r = note(iop_connect(fd, (struct sockaddr *)&sr->addr, sizeof sr->addr, soon()), "iop_connect")) == 0 &&
        (r = say_expect(fd, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\n\r\n",
                        "World!HTTP/1.1 200", NULL, "http /hello twice")) == 0)
        r = say_expect(fd, "GET / HTTP/1.1\r\nHost: t\r\n\r\n", "</html>", NULL, "http index.html");
    iop_close(fd);
    return as_ptr(r);
}

static void *svc_chat_client(void *arg)
{
    svc_run_t *sr = arg;
    int fd = tu_tcp_socket(), r;
    if ((r = note(iop_connect(fd, (struct sockaddr *)&sr->addr, sizeof sr->addr, soon()), "iop_connect")) == 0 &&
        (r = say_expect(fd, "/nick ann\n", "* ann joined\n", NULL, "chat /nick")) == 0 &&
        (r = say_expect(fd, "hello\n", "<ann> hello\n", NULL, "chat message")) == 0)
        r = say_expect(fd, "/who\n", "(1): ann\n", "* cannot list the room now\n", "chat /who");
    iop_close(fd);
    return as_ptr(r);
}

static void *svc_drain(void *arg)
{
    return as_ptr(iop_service_host_drain(arg, iop_now(iop_coro_loop(iop_self())) + SEC));
}

static void service_scenario(void)
{
    const svc_case_t *sc = svc_now;
    iop_loop_t *loop = loop_new(0);
    if (!loop)
        return;
    iop_service_t *svc = NULL;
    iop_service_stats_t stats = { 0 };
    iop_service_desc_t desc;
    iop_service_host_t h = { .loop = loop, .stats = &stats };
    svc_run_t sr = { .h = &h };
    h.listen_fd = tu_tcp_listener(&sr.addr, 8);
    int started = 0, hooked = 0;
    char err[256] = "";
    if (note(iop_service_open(&svc, sc->name, NULL), "iop_service_open") < 0)
        goto out;
    svc_real = iop_service_desc(svc);
    desc = *svc_real;
    desc.serve = noted_serve;
    h.desc = &desc;
    const iop_service_cfg_t cfg = { .size = sizeof cfg, .name = sc->name, .listen = "test",
                                    .opts = sc->opts, .nopts = sc->nopts, .nworkers = 1 };
    if (desc.create && note(desc.create(&h.state, &cfg, err, sizeof err), "create") < 0)
        goto out;
    if (desc.worker_start && note(desc.worker_start(h.state, loop, 0, err, sizeof err), "worker_start") < 0)
        goto out;
    hooked = 1;
    if (note(iop_service_host_start(&h), "iop_service_host_start") < 0)
        goto out;
    started = 1;
    iop_coro_t *cli = NULL, *dr = NULL;
    if (note(iop_go(loop, sc->client, &sr, NULL, &cli), "iop_go client") == 0)
        join(cli, "client");
    if (note(iop_go(loop, svc_drain, &h, NULL, &dr), "iop_go drain") == 0) {
        join(dr, "iop_service_host_drain");
        started = 0;
    }
out:
    if (oc.err && (!strcmp(oc.what, "create") || !strcmp(oc.what, "worker_start")) && !err[0])
        fail_msg("%s: %s failed without a reason", sc->name, oc.what);
    if (oc.err)
        still_works(loop);
    if (started) {             /* the drain could not start: again, with memory */
        iop_coro_t *d = NULL;
        assert_int_equal(iop_go(loop, svc_drain, &h, NULL, &d), 0);
        assert_int_equal(iop_join(d, NULL, tu_clock_ns() + 5 * SEC), 0);
    }
    if (hooked && desc.worker_stop)
        desc.worker_stop(h.state);
    if (h.state)
        desc.destroy(h.state);
    iop_service_close(svc);
    iop_fd_close(loop, h.listen_fd);
    iop_loop_destroy(loop);
}

static void sweep_service(const svc_case_t *sc)
{
    char name[64];
    snprintf(name, sizeof name, "service %s", sc->name);
    svc_now = sc;
    sweep(name, service_scenario);
}

void test_service(void **state)
{
    (void)state;
    static const svc_case_t echo = { .name = "echo", .client = svc_echo_client };
    sweep_service(&echo);
}

void test_service_http(void **state)
{
    (void)state;
    static const iop_service_opt_t opts[] = { { "root", IOPLEX_SOURCE_DIR "/plugins/http/www" } };
    static const svc_case_t http = { .name = "http", .opts = opts, .nopts = 1, .client = svc_http_client };
    sweep_service(&http);
}

void test_service_chat(void **state)
{
    (void)state;
    static const svc_case_t chat = { .name = "chat", .client = svc_chat_client };
    sweep_service(&chat);
}

/* ---- the service host's acceptor out of memory: it waits, it does not give up ---------- */

/* An accept that fails for want of memory sends the acceptor to a back-off sleep;
 * with the memory for that sleep's timer short too, it must still accept once
 * memory is back. The listener's fd number is new to the loop (its fd table must
 * grow for it) and the timer heap is full (the sleep's timer must grow it). */
void test_service_accept_oom(void **state)
{
    (void)state;
    iop_loop_t *loop = loop_new(0);
    assert_non_null(loop);
    iop_service_t *svc = NULL;
    iop_service_stats_t stats = { 0 };
    iop_service_host_t h = { .loop = loop, .stats = &stats };
    svc_run_t sr = { .h = &h };
    int l0 = tu_tcp_listener(&sr.addr, 8);
    h.listen_fd = fcntl(l0, F_DUPFD_CLOEXEC, 900);
    assert_true(h.listen_fd >= 900);
    close(l0);
    assert_int_equal(iop_service_open(&svc, "echo", NULL), 0);
    h.desc = iop_service_desc(svc);
    const iop_service_cfg_t cfg = { .size = sizeof cfg, .name = "echo", .listen = "test", .nworkers = 1 };
    char err[256] = "";
    assert_int_equal(h.desc->create(&h.state, &cfg, err, sizeof err), 0);
    assert_int_equal(iop_service_host_start(&h), 0);
    static iop_timer_t timers[MAX_TIMERS];
    int unused = 0, ntimers = fill_timer_heap(loop, timers, MAX_TIMERS, &unused);
    assert_true(ntimers >= 0);

    once = 0;
    injected = 0;
    inject(0);                 /* the acceptor's first turns, without memory */
    tu_run_nowait(loop, 3);
    inject(-1);
    assert_true(injected > 0);

    memset(&oc, 0, sizeof oc);
    iop_coro_t *cli = NULL, *dr = NULL;
    assert_int_equal(iop_go(loop, svc_echo_client, &sr, NULL, &cli), 0);
    if (join(cli, "client") < 0)
        fail_msg("the service no longer accepts after an accept and its back-off failed for want of memory: "
                 "%s: %s", oc.what, iop_strerror(oc.err));
    assert_int_equal(iop_go(loop, svc_drain, &h, NULL, &dr), 0);
    assert_int_equal(iop_join(dr, NULL, tu_clock_ns() + 5 * SEC), 0);
    for (int i = 0; i < ntimers; i++)
        iop_timer_stop(&timers[i]);
    h.desc->destroy(h.state);
    iop_service_close(svc);
    iop_fd_close(loop, h.listen_fd);
    iop_loop_destroy(loop);
}
