/* Service plugins.
 *
 * usage: test_service --loader   loading good and broken modules, listing, options
 *        test_service BACKEND    the echo service behind iop_service_host on BACKEND:
 *                                many clients, counters, and drains (a session
 *                                service vs one whose idle connections go at once),
 *                                echo receiving plain and through a receive stream */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

#ifndef SVC_MODULE_DIR
#error "SVC_MODULE_DIR must name the dir of the test service modules"
#endif

/* ---- loading ------------------------------------------------------------------------ */

static void test_open_echo(void **state)
{
    (void)state;
    iop_service_t *s;
    assert_int_equal(iop_service_open(&s, "echo", NULL), 0);
    const iop_service_desc_t *d = iop_service_desc(s);
    assert_string_equal(d->name, "echo");
    assert_non_null(d->serve);
    assert_non_null(strstr(iop_service_path(s), "iop_service_echo.so"));
    iop_service_close(s);
}

static void test_missing_lists_available(void **state)
{
    (void)state;
    iop_service_t *s = (iop_service_t *)1;
    assert_int_equal(iop_service_open(&s, "nosuchservice", NULL), -ENOENT);
    assert_null(s);
    assert_non_null(strstr(iop_last_error(), "nosuchservice"));
    assert_non_null(strstr(iop_last_error(), "echo"));   /* what there is instead */
}

/* Each broken module is refused with its reason and the file named. */
static void test_broken_modules_refused(void **state)
{
    (void)state;
    static const struct { const char *name; int err; const char *why; } cases[] = {
        { "wrongabi", -EPROTO, "service ABI 99" },
        { "noserve", -EPROTO, "no serve" },
        { "misnamed", -EPROTO, "names itself 'other'" },
        { "nosym", -ENOEXEC, "no descriptor symbol" },
        { "garbage", -ENOEXEC, "not a loadable module" },
        { "unresolved", -ENOEXEC, "undefined symbol: iop_test_nowhere_defined" },   /* at load */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        iop_service_t *s;
        int r = iop_service_open(&s, cases[i].name, SVC_MODULE_DIR);
        if (r != cases[i].err || !strstr(iop_last_error(), cases[i].why))
            fprintf(stderr, "%s: %d, '%s'\n", cases[i].name, r, iop_last_error());
        assert_int_equal(r, cases[i].err);
        assert_non_null(strstr(iop_last_error(), cases[i].why));
        assert_non_null(strstr(iop_last_error(), SVC_MODULE_DIR));
    }
    iop_service_t *s;
    assert_int_equal(iop_service_open(&s, "good", SVC_MODULE_DIR), 0);
    iop_service_close(s);
}

static void test_list(void **state)
{
    (void)state;
    iop_service_info_t *list;
    size_t n;
    assert_int_equal(iop_service_list(SVC_MODULE_DIR, &list, &n), 0);
    int seen_echo = 0, seen_good = 0, refused = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(list[i].name, "echo") == 0 && list[i].desc)
            seen_echo = 1;
        if (strcmp(list[i].name, "good") == 0 && list[i].desc && list[i].load_err == 0)
            seen_good = 1;
        if (list[i].load_err < 0) {
            assert_null(list[i].desc);
            assert_true(strlen(list[i].why) > 0);
            refused++;
        }
    }
    iop_service_list_free(list);
    assert_true(seen_echo);
    assert_true(seen_good);
    assert_int_equal(refused, 6);   /* wrongabi noserve misnamed nosym garbage unresolved */
}

static void test_parse_opts(void **state)
{
    (void)state;
    iop_service_opt_t o[4];
    char a[] = "root=./www,index=index.html,verbose";
    assert_int_equal(iop_service_parse_opts(a, o, 4), 3);
    assert_string_equal(o[0].key, "root");
    assert_string_equal(o[0].value, "./www");
    assert_string_equal(o[1].value, "index.html");
    assert_string_equal(o[2].key, "verbose");
    assert_string_equal(o[2].value, "");
    iop_service_cfg_t cfg = { .size = sizeof cfg, .opts = o, .nopts = 3 };
    assert_string_equal(iop_service_opt(&cfg, "index"), "index.html");
    assert_null(iop_service_opt(&cfg, "nope"));
    char b[] = "a=1,,b=2";
    assert_int_equal(iop_service_parse_opts(b, o, 4), -EINVAL);
    char c[] = "a,b,c,d,e";
    assert_int_equal(iop_service_parse_opts(c, o, 4), -E2BIG);
    char d[] = "";
    assert_int_equal(iop_service_parse_opts(d, o, 4), 0);
}

/* iop_service_opt_number: whole decimal numbers in [lo, hi] only; anything else
 * (a sign, a space, a suffix, nothing, out of range, past long long) is -EINVAL with
 * the option and the range in the message, and *out left alone. */
static void test_opt_number(void **state)
{
    (void)state;
    static const struct { const char *v; int ok; long long want; } cases[] = {
        { "0", 1, 0 }, { "7", 1, 7 }, { "65535", 1, 65535 }, { "007", 1, 7 },
        { "65536", 0, 0 }, { "", 0, 0 }, { "-1", 0, 0 }, { "+5", 0, 0 }, { " 5", 0, 0 },
        { "5 ", 0, 0 }, { "5x", 0, 0 }, { "0x10", 0, 0 }, { "99999999999999999999999", 0, 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        iop_service_opt_t opt = { "port", cases[i].v };
        long long out = -42;
        char err[128] = "";
        int r = iop_service_opt_number("svc", &opt, 0, 65535, &out, err, sizeof err);
        if (cases[i].ok) {
            assert_int_equal(r, 0);
            assert_int_equal(out, cases[i].want);
            assert_string_equal(err, "");
        } else {
            if (r != -EINVAL)
                fail_msg("'%s' accepted as %lld", cases[i].v, out);
            assert_int_equal(out, -42);
            char want[128];
            snprintf(want, sizeof want, "svc: port=%s: want a number from 0 to 65535", cases[i].v);
            assert_string_equal(err, want);
        }
    }
    /* a lower bound above zero */
    iop_service_opt_t low = { "workers", "0" };
    long long out = 0;
    char err[128];
    assert_int_equal(iop_service_opt_number("svc", &low, 1, 64, &out, err, sizeof err), -EINVAL);
    low.value = "64";
    assert_int_equal(iop_service_opt_number("svc", &low, 1, 64, &out, err, sizeof err), 0);
    assert_int_equal(out, 64);
}

/* ---- the host ------------------------------------------------------------------------ */

#define NCLIENTS 40
#define ROUNDS 25

typedef struct fixture {
    iop_loop_t *loop;
    iop_service_t *svc;
    iop_service_host_t host;
    iop_service_stats_t stats;
    struct sockaddr_in addr;
    int ok_clients;
    int idle_eof;
    int drain_result;
    int done;
} fixture_t;

static fixture_t *fx;

static int client_socket(void)
{
    int fd = tu_tcp_socket();
    if (iop_connect(fd, (struct sockaddr *)&fx->addr, sizeof fx->addr, iop_now(fx->loop) + 5000000000ull) < 0) {
        iop_close(fd);
        return -1;
    }
    return fd;
}

/* ROUNDS messages of growing size, each checked when it comes back. */
static void *echo_client(void *arg)
{
    int id = (int)(intptr_t)arg;
    int fd = client_socket();
    if (fd < 0)
        return NULL;
    char out[2048], in[2048];
    int good = 1;
    for (int r = 0; r < ROUNDS && good; r++) {
        size_t len = 1 + (size_t)((id * 131 + r * 71) % (int)sizeof out);
        tu_fill_pattern(out, len, (uint32_t)(id * 1000 + r + 1));
        uint64_t dl = iop_now(fx->loop) + 5000000000ull;
        if (iop_send(fd, out, len, 0, dl) != (ssize_t)len) {
            good = 0;
            break;
        }
        for (size_t got = 0; got < len;) {
            ssize_t n = iop_recv(fd, in + got, len - got, 0, dl);
            if (n <= 0) {
                good = 0;
                break;
            }
            got += (size_t)n;
        }
        good = good && memcmp(in, out, len) == 0;
    }
    iop_close(fd);
    fx->ok_clients += good;
    return NULL;
}

static void *run_clients(void *arg)
{
    (void)arg;
    iop_nursery_t n;
    iop_nursery_init(&n, fx->loop);
    for (int i = 0; i < NCLIENTS; i++)
        iop_nursery_go(&n, echo_client, (void *)(intptr_t)i, NULL);
    iop_nursery_close(&n, iop_now(fx->loop) + 20000000000ull);
    fx->done = 1;
    return NULL;
}

/* The echo service receiving as recv_mode says: "plain" on a loop without a
 * receive pool, "stream" on one with a pool (the core's or the kernel's). */
static int fixture_up_as(void **state, const char *recv_mode)
{
    static fixture_t f;
    memset(&f, 0, sizeof f);
    fx = &f;
    int stream = strcmp(recv_mode, "stream") == 0;
    iop_loop_opts_t o = { .size = sizeof o, .buf_count = stream ? 64 : 0, .buf_size = 2048 };
    f.loop = tu_loop_new_opts(&o);
    assert_int_equal(iop_service_open(&f.svc, "echo", NULL), 0);
    f.host.desc = iop_service_desc(f.svc);
    /* As a host does: create with the options (a short send timeout for
     * test_echo_send_timeout). */
    const iop_service_opt_t opts[] = { { "send_timeout_ms", "300" }, { "recv", recv_mode } };
    const iop_service_cfg_t cfg = { .size = sizeof cfg, .name = "echo", .listen = "test", .opts = opts,
                                    .nopts = 2, .nworkers = 1 };
    char err[256] = "";
    if (f.host.desc->create && f.host.desc->create(&f.host.state, &cfg, err, sizeof err) < 0)
        fail_msg("echo create: %s", err);
    f.host.loop = f.loop;
    f.host.listen_fd = tu_tcp_listener(&f.addr, 128);
    f.host.stats = &f.stats;
    assert_int_equal(iop_service_host_start(&f.host), 0);
    *state = &f;
    return 0;
}

static int fixture_up(void **state) { return fixture_up_as(state, "plain"); }
static int fixture_up_stream(void **state) { return fixture_up_as(state, "stream"); }

static int fixture_down(void **state)
{
    fixture_t *f = *state;
    close(f->host.listen_fd);
    const iop_service_desc_t *d = iop_service_desc(f->svc);
    if (d->destroy)
        d->destroy(f->host.state);
    iop_service_close(f->svc);
    iop_loop_destroy(f->loop);
    return 0;
}

static int done(void *arg) { return *(int *)arg; }

static void test_many_clients(void **state)
{
    fixture_t *f = *state;
    iop_go(f->loop, run_clients, NULL, NULL, NULL);
    assert_true(tu_run_until(f->loop, done, &f->done, 30000));
    assert_int_equal(f->ok_clients, NCLIENTS);
    /* Counters: every connection counted and closed, every message a request at least. */
    tu_run_for(f->loop, 50);
    assert_int_equal(f->stats.connections, NCLIENTS);
    assert_int_equal(f->stats.open, 0);
    assert_true(f->stats.requests >= (uint64_t)NCLIENTS * ROUNDS);
    assert_int_equal(f->stats.bytes_in, f->stats.bytes_out);
    assert_int_equal(f->stats.errors, 0);
}

/* A drain: echo is a session service, so its idle connection is served until the
 * drain deadline and only then cancelled; the same service flagged
 * IOP_SERVICE_DRAIN_IDLE has it closed at once. Either way nothing new is served
 * afterwards. */
static void *idle_client(void *arg)
{
    (void)arg;
    int fd = client_socket();
    char c;
    if (fd >= 0 && iop_recv(fd, &c, 1, 0, iop_now(fx->loop) + 10000000000ull) == 0)
        fx->idle_eof = 1;
    if (fd >= 0)
        iop_close(fd);
    return NULL;
}

static uint64_t drain_took;
static uint64_t drain_within;     /* the drain's deadline, from its start */

static void *drainer(void *arg)
{
    (void)arg;
    iop_sleep(200000000ull);      /* the client connected and parked */
    uint64_t t0 = iop_now(fx->loop);
    fx->drain_result = iop_service_host_drain(&fx->host, t0 + drain_within);
    drain_took = iop_now(fx->loop) - t0;
    fx->done = 1;
    return NULL;
}

static void drain_with(fixture_t *f, const iop_service_desc_t *desc, uint64_t within)
{
    drain_within = within;
    f->host.desc = desc;          /* before any connection: the acceptor reads it later */
    iop_go(f->loop, idle_client, NULL, NULL, NULL);
    iop_go(f->loop, drainer, NULL, NULL, NULL);
    assert_true(tu_run_until(f->loop, done, &f->done, 10000));
    tu_run_for(f->loop, 100);
    assert_int_equal(f->idle_eof, 1);
    assert_int_equal(f->stats.open, 0);
    /* No longer accepting: a new connection is not served. */
    int fd = tu_tcp_socket();
    int r = connect(fd, (struct sockaddr *)&f->addr, sizeof f->addr);
    (void)r;                      /* queued in the backlog, but nobody reads it */
    char c = 'x';
    send(fd, &c, 1, MSG_NOSIGNAL);
    tu_run_for(f->loop, 200);
    assert_int_equal(recv(fd, &c, 1, MSG_DONTWAIT), -1);
    assert_int_equal(errno, EAGAIN);
    close(fd);
}

/* A drain hands over what the listener still has queued, one connection per call,
 * as iop_shard_accept does; the host serves every one of them, not only the first
 * (the rest hung until reset, and the listener stayed open). 100 of them: the
 * cancelled acceptor cannot yield, and its ring of 64 handoffs wrapped before the
 * connections' coroutines ran (two got one fd, another none; the last read the
 * acceptor's stack after it had ended). */
static int sweep_fd = -1;

static int sweep_accept(void *arg, struct sockaddr *addr, socklen_t *addrlen)
{
    (void)arg;
    if (!iop_cancelled())
        iop_sleep_until(0);        /* a busy worker: nothing accepted until the drain */
    int fd = accept4(sweep_fd, addr, addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    return fd >= 0 ? fd : -ECANCELED;
}

static int sweep_done;

static void *sweep_drainer(void *arg)
{
    iop_service_host_t *h = arg;
    iop_sleep(20000000ull);
    iop_service_host_drain(h, iop_now(h->loop) + 5000000000ull);   /* ends sooner: EOFs */
    sweep_done = 1;
    return NULL;
}

static void test_drain_serves_whole_queue(void **state)
{
    fixture_t *f = *state;
    struct sockaddr_in a;
    enum { N = 100 };
    sweep_fd = tu_tcp_listener(&a, 128);
    iop_service_stats_t stats = { 0 };
    iop_service_host_t h = { .desc = f->host.desc, .state = f->host.state, .loop = f->loop, .listen_fd = sweep_fd,
                             .accept = sweep_accept };
    assert_int_equal(iop_service_host_start(&h), -EINVAL);   /* no counters */
    h.stats = &stats;
    assert_int_equal(iop_service_host_start(&h), 0);
    int c[N];
    for (int i = 0; i < N; i++) {
        c[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);   /* blocking: connected at once */
        assert_int_equal(connect(c[i], (struct sockaddr *)&a, sizeof a), 0);
        assert_int_equal(send(c[i], "abc", 3, 0), 3);
        shutdown(c[i], SHUT_WR);   /* each session ends once it has echoed */
    }
    sweep_done = 0;
    iop_go(f->loop, sweep_drainer, &h, NULL, NULL);
    assert_true(tu_run_until(f->loop, done, &sweep_done, 10000));
    for (int i = 0; i < N; i++) {
        char buf[8];
        ssize_t n = recv(c[i], buf, sizeof buf, MSG_DONTWAIT);
        if (n != 3)
            fail_msg("connection %d of %d: recv gave %zd (%s)", i, N, n, n < 0 ? strerror(errno) : "");
        close(c[i]);
    }
    assert_int_equal(stats.connections, N);
    close(sweep_fd);
}

static void test_drain_session(void **state)
{
    fixture_t *f = *state;
    drain_with(f, iop_service_desc(f->svc), 500000000ull);
    assert_int_equal(f->drain_result, -ETIMEDOUT);
    assert_true(drain_took >= 450000000ull);
}

static void test_drain_idle(void **state)
{
    fixture_t *f = *state;
    static iop_service_desc_t quick;
    quick = *iop_service_desc(f->svc);
    quick.flags |= IOP_SERVICE_DRAIN_IDLE;
    drain_with(f, &quick, 5000000000ull);
    assert_int_equal(f->drain_result, 0);
    assert_true(drain_took < 2500000000ull);   /* not waiting for the deadline */
}

/* The host turns Nagle off on every TCP connection before the service sees it: a
 * reply's tail would otherwise wait for the peer's delayed ACK (40 ms a time). */
static int nodelay_seen = -1;

static int nodelay_serve(void *state, iop_service_conn_t *conn)
{
    (void)state;
    int v = 0;
    socklen_t len = sizeof v;
    nodelay_seen = getsockopt(conn->fd, IPPROTO_TCP, TCP_NODELAY, &v, &len) == 0 ? v : -2;
    return 0;
}

static void *nodelay_client(void *arg)
{
    (void)arg;
    int fd = client_socket();
    if (fd >= 0) {
        char c;
        (void)iop_recv(fd, &c, 1, 0, iop_now(fx->loop) + 5000000000ull);   /* until the host closes */
        iop_close(fd);
    }
    fx->done = 1;
    return NULL;
}

/* A host without listen_fd: its accept function's connections. */
static int other_listener = -1;

static int accept_other(void *arg, struct sockaddr *addr, socklen_t *addrlen)
{
    (void)arg;
    return iop_accept(other_listener, addr, addrlen, 0);
}

static void *drain_host(void *arg)
{
    iop_service_host_t *h = arg;
    iop_service_host_drain(h, iop_now(h->loop) + 300000000ull);
    fx->done = 1;
    return NULL;
}

static void test_host_sets_nodelay(void **state)
{
    fixture_t *f = *state;
    static iop_service_desc_t probe;
    probe = *iop_service_desc(f->svc);
    probe.serve = nodelay_serve;
    f->host.desc = &probe;        /* before any connection: the acceptor reads it later */
    nodelay_seen = -1;
    iop_coro_t *c;
    assert_int_equal(iop_go(f->loop, nodelay_client, NULL, NULL, &c), 0);
    assert_true(tu_run_until(f->loop, done, &f->done, 5000));
    assert_int_equal(iop_join(c, NULL, 0), 0);
    assert_int_equal(nodelay_seen, 1);   /* inherited from the listener */

    /* Through an accept function, from a listener the host was not given. */
    struct sockaddr_in a;
    other_listener = tu_tcp_listener(&a, 16);
    iop_service_stats_t stats = { 0 };
    iop_service_host_t h = { .desc = &probe, .state = f->host.state, .loop = f->loop, .listen_fd = -1,
                             .stats = &stats, .accept = accept_other };
    assert_int_equal(iop_service_host_start(&h), 0);
    f->addr = a;                  /* where nodelay_client connects */
    nodelay_seen = -1;
    f->done = 0;
    assert_int_equal(iop_go(f->loop, nodelay_client, NULL, NULL, &c), 0);
    assert_true(tu_run_until(f->loop, done, &f->done, 5000));
    assert_int_equal(iop_join(c, NULL, 0), 0);
    assert_int_equal(nodelay_seen, 1);   /* set on the connection */
    f->done = 0;
    assert_int_equal(iop_go(f->loop, drain_host, &h, NULL, NULL), 0);
    assert_true(tu_run_until(f->loop, done, &f->done, 5000));
    close(other_listener);
}

/* echo drops a client that sends and never reads once its echo has stalled for
 * send_timeout_ms (300 here); it held the connection until the client left. */
static int stalled_closed;

static void *stalled_client(void *arg)
{
    (void)arg;
    int fd = tu_tcp_socket();
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    if (iop_connect(fd, (struct sockaddr *)&fx->addr, sizeof fx->addr, iop_now(fx->loop) + 5000000000ull) == 0) {
        static char chunk[65536];
        uint64_t until = iop_now(fx->loop) + 5000000000ull;
        /* Send, never read, until the server gives up on us (a reset or a broken
         * pipe) or 5 s pass. */
        for (;;) {
            ssize_t w = iop_send(fd, chunk, sizeof chunk, MSG_NOSIGNAL, until);
            if (w < 0) {
                stalled_closed = w == -ECONNRESET || w == -EPIPE;
                break;
            }
        }
    }
    iop_close(fd);
    fx->done = 1;
    return NULL;
}

static void test_echo_send_timeout(void **state)
{
    fixture_t *f = *state;
    stalled_closed = 0;
    uint64_t t0 = tu_clock_ms();
    iop_coro_t *c;
    assert_int_equal(iop_go(f->loop, stalled_client, NULL, NULL, &c), 0);
    assert_true(tu_run_until(f->loop, done, &f->done, 10000));
    assert_int_equal(iop_join(c, NULL, 0), 0);
    uint64_t took = tu_clock_ms() - t0;
    if (!stalled_closed || took > 4000)
        fail_msg("a client that never reads: closed by the server %d, after %llu ms", stalled_closed,
                 (unsigned long long)took);
}

/* The send deadline is per step of progress, not for a whole echo: a client that
 * reads slowly but steadily (1 KiB every 30 ms) keeps its connection although
 * echoing one read's worth (up to 16 KiB) takes longer than send_timeout_ms (300).
 * The server's socket gets a small send buffer (accepted sockets inherit the
 * listener's), so its sends really wait on the client. */
#define SLOW_BYTES (48 * 1024)
static int slow_fd, slow_sent_all, slow_bad;
static size_t slow_got;

static unsigned char slow_byte(size_t i) { return (unsigned char)(i * 7 + (i >> 8)); }

static void *slow_sender(void *arg)
{
    (void)arg;
    static unsigned char src[SLOW_BYTES];
    for (size_t i = 0; i < SLOW_BYTES; i++)
        src[i] = slow_byte(i);
    size_t off = 0;
    while (off < SLOW_BYTES) {
        ssize_t w = iop_send(slow_fd, src + off, SLOW_BYTES - off, MSG_NOSIGNAL, iop_now(fx->loop) + 10000000000ull);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    slow_sent_all = off == SLOW_BYTES && shutdown(slow_fd, SHUT_WR) == 0;
    return NULL;
}

static void *slow_reader(void *arg)
{
    (void)arg;
    slow_fd = tu_tcp_socket();
    int small = 4096;
    setsockopt(slow_fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    if (iop_connect(slow_fd, (struct sockaddr *)&fx->addr, sizeof fx->addr, iop_now(fx->loop) + 5000000000ull) == 0) {
        iop_coro_t *sender;
        iop_go(fx->loop, slow_sender, NULL, NULL, &sender);
        char buf[1024];
        for (;;) {
            ssize_t n = iop_recv(slow_fd, buf, sizeof buf, 0, iop_now(fx->loop) + 5000000000ull);
            if (n <= 0) {
                slow_bad |= n < 0;     /* a reset: the server gave up on us */
                break;
            }
            for (ssize_t i = 0; i < n; i++)
                slow_bad |= (unsigned char)buf[i] != slow_byte(slow_got + (size_t)i);
            slow_got += (size_t)n;
            iop_sleep(30000000ull);
        }
        iop_join(sender, NULL, 0);
    }
    iop_close(slow_fd);
    fx->done = 1;
    return NULL;
}

static void test_echo_slow_reader_kept(void **state)
{
    fixture_t *f = *state;
    int small = 4096;
    assert_int_equal(setsockopt(f->host.listen_fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    slow_got = 0;
    slow_bad = slow_sent_all = 0;
    uint64_t t0 = tu_clock_ms();
    iop_coro_t *c;
    assert_int_equal(iop_go(f->loop, slow_reader, NULL, NULL, &c), 0);
    assert_true(tu_run_until(f->loop, done, &f->done, 20000));
    assert_int_equal(iop_join(c, NULL, 0), 0);
    uint64_t took = tu_clock_ms() - t0;
    if (slow_bad || !slow_sent_all || slow_got != SLOW_BYTES)
        fail_msg("slow reader: %zu of %d bytes echoed, sent all %d, error or corruption %d, after %llu ms",
                 slow_got, SLOW_BYTES, slow_sent_all, slow_bad, (unsigned long long)took);
    /* It must have outlasted the send timeout several times over to mean anything. */
    assert_true(took > 3 * 300);
}

/* Out of descriptors: the acceptor's accept fails with EMFILE; it backs off (the
 * connection waits in the backlog, nothing spins) and, once a connection closes and
 * frees one, accepts and serves the waiting one. */
typedef struct echo_wait {
    iop_loop_t *loop;
    int fd;
    char want;
} echo_wait_t;

static int echoed(void *arg)
{
    echo_wait_t *w = arg;
    char c;
    return recv(w->fd, &c, 1, MSG_DONTWAIT) == 1 && c == w->want;
}

static int highest_open_fd(void)
{
    int top = -1;
    for (int fd = 0; fd < 65536; fd++)
        if (fcntl(fd, F_GETFD) >= 0)
            top = fd;
    return top;
}

static void test_accept_out_of_fds(void **state)
{
    fixture_t *f = *state;
    int c1 = tu_tcp_socket(), c2 = tu_tcp_socket();
    /* Every number up to the highest open fd taken, and a limit one above it: the
     * process can open exactly one more fd. */
    static int holes[1024];
    int nholes = 0, top = highest_open_fd();
    for (int fd; nholes < 1024 && (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) {
        if (fd > top) {
            close(fd);
            break;
        }
        holes[nholes++] = fd;
    }
    struct rlimit old, low;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = (rlim_t)top + 2;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);

    echo_wait_t w1 = { f->loop, c1, 'a' }, w2 = { f->loop, c2, 'b' };
    (void)connect(c1, (struct sockaddr *)&f->addr, sizeof f->addr);
    int first = 0, second_early = 0, second = 0;
    uint64_t connections_while_out = 0;
    tu_run_for(f->loop, 20);
    if (send(c1, "a", 1, MSG_NOSIGNAL) == 1)
        first = tu_run_until(f->loop, echoed, &w1, 3000);
    (void)connect(c2, (struct sockaddr *)&f->addr, sizeof f->addr);
    tu_run_for(f->loop, 20);
    if (send(c2, "b", 1, MSG_NOSIGNAL) == 1) {
        tu_run_for(f->loop, 300);   /* several accept attempts with backoff */
        second_early = echoed(&w2);
        connections_while_out = f->stats.connections;
        close(c1);                  /* its server side closes: one fd free again */
        second = tu_run_until(f->loop, echoed, &w2, 3000);
    }
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    for (int i = 0; i < nholes; i++)
        close(holes[i]);

    assert_true(first);
    assert_false(second_early);
    assert_int_equal(connections_while_out, 1);
    assert_true(second);
    assert_int_equal(f->stats.connections, 2);
    close(c2);
    tu_run_for(f->loop, 50);
    assert_int_equal(f->stats.open, 0);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--loader") == 0) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_open_echo),
            cmocka_unit_test(test_missing_lists_available),
            cmocka_unit_test(test_broken_modules_refused),
            cmocka_unit_test(test_list),
            cmocka_unit_test(test_parse_opts),
            cmocka_unit_test(test_opt_number),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
    }
    tu_backend = tu_backend_from_args(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_many_clients, fixture_up, fixture_down),
        cmocka_unit_test_setup_teardown(test_drain_session, fixture_up, fixture_down),
        cmocka_unit_test_setup_teardown(test_drain_serves_whole_queue, fixture_up, fixture_down),
        cmocka_unit_test_setup_teardown(test_drain_idle, fixture_up, fixture_down),
        cmocka_unit_test_setup_teardown(test_host_sets_nodelay, fixture_up, fixture_down),
        cmocka_unit_test_setup_teardown(test_echo_send_timeout, fixture_up, fixture_down),
        cmocka_unit_test_setup_teardown(test_echo_slow_reader_kept, fixture_up, fixture_down),
        cmocka_unit_test_setup_teardown(test_accept_out_of_fds, fixture_up, fixture_down),
        /* echo receiving through a receive stream */
        cmocka_unit_test_setup_teardown(test_many_clients, fixture_up_stream, fixture_down),
        cmocka_unit_test_setup_teardown(test_drain_session, fixture_up_stream, fixture_down),
        cmocka_unit_test_setup_teardown(test_drain_idle, fixture_up_stream, fixture_down),
        cmocka_unit_test_setup_teardown(test_echo_send_timeout, fixture_up_stream, fixture_down),
        cmocka_unit_test_setup_teardown(test_echo_slow_reader_kept, fixture_up_stream, fixture_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
