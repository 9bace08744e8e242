/* Out-of-fds sweep: `test_fds BACKEND` creates loops on one backend (and on auto)
 * with RLIMIT_NOFILE lowered so that each fd-creating call in turn fails with
 * EMFILE; `test_fds ipc` does the same with the multi-process primitives. Each
 * call that fails must say so with -EMFILE and a message, leave no fd behind
 * (/proc/self/fd counted before and after), and work once the fds are back. The
 * service host under EMFILE: its accept failures back off (no spin on a readable
 * listener) and it serves again once some fds are free. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include "test_util.h"

#define SEC 1000000000ull
#define MAX_FDS 64        /* more fds than any call here makes */

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += de->d_name[0] != '.';
    closedir(d);
    return n - 1;              /* the directory's own */
}

static int lowest_free_fd(void)
{
    int fd = dup(0);
    assert_true(fd >= 0);
    close(fd);
    return fd;
}

static rlim_t soft_limit;

/* Lets the process open n more fds (those below the lowest free one stay). */
static void allow_fds(int n)
{
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = (rlim_t)(lowest_free_fd() + n);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
}

static void restore_fds(void)
{
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = soft_limit;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
}

/* After each test, even a failed one: the next starts with the limit it had. */
static int restore_after(void **state)
{
    (void)state;
    restore_fds();
    return 0;
}

/* One thing to make: 0 (*obj set) or -errno with iop_last_error() filled; use
 * (optional) checks that what was made works, drop undoes it. */
typedef struct fd_case {
    const char *name;
    int (*make)(void **obj);
    int (*use)(void *obj);
    void (*drop)(void *obj);
} fd_case_t;

/* Makes it with n = 0, 1, 2 ... fds to spare until it succeeds. */
static void fd_sweep(const fd_case_t *fc)
{
    int before = count_fds();
    for (int n = 0; n < MAX_FDS; n++) {
        void *obj = NULL;
        allow_fds(n);
        int r = fc->make(&obj);
        restore_fds();
        if (r < 0) {
            if (r != -EMFILE)
                fail_msg("%s with %d fds to spare: %s (%s), not EMFILE", fc->name, n, iop_strerror(r),
                         iop_last_error());
            if (!iop_last_error()[0])
                fail_msg("%s with %d fds to spare: -EMFILE without a message", fc->name, n);
            if (count_fds() != before)
                fail_msg("%s with %d fds to spare failed and left %d fds open", fc->name, n,
                         count_fds() - before);
            continue;
        }
        if (fc->use)
            assert_int_equal(fc->use(obj), 0);
        fc->drop(obj);
        assert_int_equal(count_fds(), before);
        print_message("%s: %d fds, each shortfall handled\n", fc->name, n);
        return;
    }
    fail_msg("%s: still failing with %d fds to spare", fc->name, MAX_FDS);
}

/* ---- loops ------------------------------------------------------------------------------ */

static const char *loop_backend;

static int make_loop(void **obj)
{
    iop_loop_opts_t o = { .size = sizeof o, .backend = loop_backend };
    iop_loop_t *loop = NULL;
    int r = iop_loop_create(&loop, &o);
    if (r < 0)
        assert_null(loop);
    *obj = loop;
    return r;
}

static void count_cb(iop_op_t *op, int res)
{
    assert_int_equal(res, 0);
    (*(int *)op->data)++;
}

/* A nop and a timeout complete. */
static int use_loop(void *obj)
{
    int done = 0;
    iop_op_t nop, tmo;
    iop_prep_nop(&nop, count_cb, &done);
    iop_prep_timeout(&tmo, 1000000, count_cb, &done);
    assert_int_equal(iop_submit(obj, &nop), 0);
    assert_int_equal(iop_submit(obj, &tmo), 0);
    return tu_run_until_count(obj, &done, 2, 3000) ? 0 : -ETIMEDOUT;
}

static void drop_loop(void *obj) { iop_loop_destroy(obj); }

static void test_loop(void **state)
{
    (void)state;
    loop_backend = tu_backend;
    const fd_case_t c = { "iop_loop_create", make_loop, use_loop, drop_loop };
    fd_sweep(&c);
}

/* auto tries each backend; when they all fail for want of fds, that is the error,
 * not "no usable backend on this machine". */
static void test_loop_auto(void **state)
{
    (void)state;
    loop_backend = "auto";
    const fd_case_t c = { "iop_loop_create auto", make_loop, use_loop, drop_loop };
    fd_sweep(&c);
}

/* ---- the service host: accept out of fds ------------------------------------------------ */

static void *echo_once(void *arg)
{
    struct sockaddr_in *addr = arg;
    int fd = tu_tcp_socket(), r;
    char in[8];
    uint64_t soon = iop_now(iop_coro_loop(iop_self())) + 10 * SEC;
    if ((r = iop_connect(fd, (struct sockaddr *)addr, sizeof *addr, soon)) == 0 &&
        (r = (int)iop_send(fd, "ping", 4, 0, soon)) == 4)
        r = (int)iop_recv(fd, in, 4, MSG_WAITALL, soon);
    iop_close(fd);
    return (void *)(intptr_t)(r == 4 ? 0 : r < 0 ? r : -EPROTO);
}

static void *drain(void *arg)
{
    return (void *)(intptr_t)iop_service_host_drain(arg, iop_now(iop_coro_loop(iop_self())) + SEC);
}

static int shedding(void *arg) { return ((iop_service_host_t *)arg)->shed > 0; }

/* A client connects while the server has no fd for it: the acceptor says so once,
 * naming its worker (two workers would otherwise print the same line), then tries
 * again after a growing pause; with fds back, the client is served. */
static void test_service_accept(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    iop_service_t *svc = NULL;
    iop_service_stats_t stats = { 0 };
    iop_service_host_t h = { .loop = loop, .stats = &stats, .worker = 3 };
    struct sockaddr_in addr;
    h.listen_fd = tu_tcp_listener(&addr, 8);
    assert_int_equal(iop_service_open(&svc, "echo", NULL), 0);
    h.desc = iop_service_desc(svc);
    const iop_service_cfg_t cfg = { .size = sizeof cfg, .name = "echo", .listen = "test", .nworkers = 1 };
    char err[256] = "";
    assert_int_equal(h.desc->create(&h.state, &cfg, err, sizeof err), 0);
    assert_int_equal(iop_service_host_start(&h), 0);
    /* the host's lines, from stderr: the redirect's fds are made before the count */
    FILE *log = tmpfile();
    assert_non_null(log);
    int saved_stderr = dup(2);
    assert_true(saved_stderr >= 0);
    assert_int_equal(dup2(fileno(log), 2), 2);
    int before = count_fds();

    int cfd = tu_tcp_socket();
    assert_true(connect(cfd, (struct sockaddr *)&addr, sizeof addr) == 0 || errno == EINPROGRESS);
    allow_fds(0);
    if (!tu_run_until(loop, shedding, &h, 3000))
        fail_msg("the acceptor never met EMFILE");
    /* Pauses of 50, 100, 200 ... ms: a handful of tries in half a second; an
     * acceptor that spun on the readable listener would make thousands. */
    tu_run_for(loop, 500);
    unsigned tries = h.shed;
    restore_fds();
    if (tries > 10)
        fail_msg("%u accepts failed with EMFILE in half a second: the acceptor spins", tries);

    iop_coro_t *c = NULL;
    void *res = NULL;
    assert_int_equal(iop_go(loop, echo_once, &addr, NULL, &c), 0);
    assert_int_equal(iop_join(c, &res, tu_clock_ns() + 10 * SEC), 0);
    assert_int_equal((intptr_t)res, 0);
    dup2(saved_stderr, 2);
    assert_int_equal(h.shed, 0);    /* accepting again */
    close(cfd);
    char text[1024] = "";
    rewind(log);
    text[fread(text, 1, sizeof text - 1, log)] = '\0';
    const char *line = "ioplex: worker 3: service echo: accept: Too many open files; "
                       "new connections wait until some close\n";
    const char *at = strstr(text, line);
    if (!at || strstr(at + 1, line) || !strstr(text, "ioplex: worker 3: service echo: accepting again\n"))
        fail_msg("want one out-of-fds line and one 'accepting again', naming worker 3:\n%s", text);

    iop_coro_t *d = NULL;
    assert_int_equal(iop_go(loop, drain, &h, NULL, &d), 0);
    assert_int_equal(iop_join(d, &res, tu_clock_ns() + 10 * SEC), 0);
    assert_int_equal((intptr_t)res, 0);
    assert_int_equal(count_fds(), before);
    close(saved_stderr);
    fclose(log);
    h.desc->destroy(h.state);
    iop_service_close(svc);
    iop_fd_close(loop, h.listen_fd);
    iop_loop_destroy(loop);
}

/* ---- the http service: a file it cannot open for want of fds ---------------------------- */

typedef struct http_ask {
    int fd;
    char got[4096];
} http_ask_t;

/* One request on the connection; the response head's first line into got. */
static void *http_get(void *arg)
{
    http_ask_t *a = arg;
    static const char req[] = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    uint64_t soon = iop_now(iop_coro_loop(iop_self())) + 10 * SEC;
    size_t got = 0;
    a->got[0] = '\0';
    if (iop_send(a->fd, req, sizeof req - 1, 0, soon) != (ssize_t)sizeof req - 1)
        return (void *)(intptr_t)-EPIPE;
    while (!strstr(a->got, "\r\n\r\n") && got < sizeof a->got - 1) {
        ssize_t n = iop_recv(a->fd, a->got + got, sizeof a->got - 1 - got, 0, soon);
        if (n <= 0)
            return (void *)(intptr_t)(n ? n : -EPIPE);
        got += (size_t)n;
        a->got[got] = '\0';
    }
    /* The body of a 200 follows: take it so that the next response starts clean. */
    const char *len = strstr(a->got, "Content-Length: ");
    const char *body = strstr(a->got, "\r\n\r\n");
    if (len && body) {
        size_t want = (size_t)atol(len + 16), have = got - (size_t)(body + 4 - a->got);
        char sink[4096];
        while (have < want) {
            ssize_t n = iop_recv(a->fd, sink, sizeof sink, 0, soon);
            if (n <= 0)
                return (void *)(intptr_t)(n ? n : -EPIPE);
            have += (size_t)n;
        }
    }
    return NULL;
}

static void ask(iop_loop_t *loop, http_ask_t *a, const char *want)
{
    iop_coro_t *c = NULL;
    void *res = NULL;
    assert_int_equal(iop_go(loop, http_get, a, NULL, &c), 0);
    assert_int_equal(iop_join(c, &res, tu_clock_ns() + 10 * SEC), 0);
    assert_int_equal((intptr_t)res, 0);
    if (strncmp(a->got, want, strlen(want)) != 0)
        fail_msg("wanted \"%s\", got \"%.40s\"", want, a->got);
}

/* On an open connection, a file the server has no fd for is a 503 (try again
 * later), and the same request is a 200 once fds are back. */
static void test_http_file(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    iop_service_t *svc = NULL;
    iop_service_stats_t stats = { 0 };
    iop_service_host_t h = { .loop = loop, .stats = &stats };
    struct sockaddr_in addr;
    h.listen_fd = tu_tcp_listener(&addr, 8);
    assert_int_equal(iop_service_open(&svc, "http", NULL), 0);
    h.desc = iop_service_desc(svc);
    const iop_service_opt_t opts[] = { { "root", IOPLEX_SOURCE_DIR "/plugins/http/www" } };
    const iop_service_cfg_t cfg = { .size = sizeof cfg, .name = "http", .listen = "test", .opts = opts,
                                    .nopts = 1, .nworkers = 1 };
    char err[256] = "";
    assert_int_equal(h.desc->create(&h.state, &cfg, err, sizeof err), 0);
    assert_int_equal(iop_service_host_start(&h), 0);
    http_ask_t a = { .fd = tu_tcp_socket() };
    assert_true(connect(a.fd, (struct sockaddr *)&addr, sizeof addr) == 0 || errno == EINPROGRESS);
    ask(loop, &a, "HTTP/1.1 200");    /* accepted, served */
    allow_fds(0);
    ask(loop, &a, "HTTP/1.1 503");
    restore_fds();
    ask(loop, &a, "HTTP/1.1 200");
    iop_close(a.fd);

    iop_coro_t *d = NULL;
    assert_int_equal(iop_go(loop, drain, &h, NULL, &d), 0);
    assert_int_equal(iop_join(d, NULL, tu_clock_ns() + 10 * SEC), 0);
    h.desc->destroy(h.state);
    iop_service_close(svc);
    iop_fd_close(loop, h.listen_fd);
    iop_loop_destroy(loop);
}

/* ---- the multi-process layer (`test_fds ipc`) ------------------------------------------- */

static int make_ppipe(void **obj)
{
    iop_ppipe_t **ends = calloc(2, sizeof *ends);
    assert_non_null(ends);
    int r = iop_ppipe_create(ends, NULL);
    if (r < 0)
        free(ends);
    else
        *obj = ends;
    return r;
}

static void drop_ppipe(void *obj)
{
    iop_ppipe_t **ends = obj;
    iop_ppipe_close(ends[0]);
    iop_ppipe_close(ends[1]);
    free(ends);
}

static int make_pqueue(void **obj) { return iop_pqueue_create((iop_pqueue_t **)obj, 4, 64); }

static int use_pqueue(void *obj)
{
    char m[8];
    int r = iop_pqueue_put(obj, "msg", 4, 0);
    return r < 0 ? r : iop_pqueue_get(obj, m, sizeof m, 0) == 4 ? 0 : -EPROTO;
}

static void drop_pqueue(void *obj) { iop_pqueue_destroy(obj); }

static int make_shdict(void **obj) { return iop_shdict_create((iop_shdict_t **)obj, NULL); }
static int use_shdict(void *obj) { return iop_shdict_set(obj, "k", "v", 1); }
static void drop_shdict(void *obj) { iop_shdict_free(obj); }

static int make_plock(void **obj) { return iop_plock_create((iop_plock_t **)obj); }

static int use_plock(void *obj)
{
    int r = iop_plock_lock(obj, 0);
    return r < 0 ? r : iop_plock_unlock(obj);
}

static void drop_plock(void *obj) { iop_plock_free(obj); }

static int square(const void *in, size_t len, iop_pool_out_t *out)
{
    assert_int_equal(len, sizeof(int));
    int v = *(const int *)in;
    v *= v;
    return iop_pool_out_set(out, &v, sizeof v);
}

/* A pool whose worker has run a task: the workers' start under the limit too. */
static int make_pool(void **obj)
{
    iop_pool_opts_t o = { .size = sizeof o, .nworkers = 1 };
    iop_pool_t *pool = NULL;
    iop_future_t *f = NULL;
    int v = 7;
    int r = iop_pool_create(&pool, &o);
    if (r == 0)
        r = iop_pool_apply_async(pool, square, &v, sizeof v, &f);
    if (r == 0)
        r = iop_future_wait(f, tu_clock_ns() + 10 * SEC);
    if (r == 0) {
        size_t len;
        const int *res = iop_future_result(f, &len);
        assert_int_equal(*res, 49);
    }
    iop_future_free(f);
    if (r < 0)
        iop_pool_free(pool);
    else
        *obj = pool;
    return r;
}

static void drop_pool(void *obj) { iop_pool_free(obj); }

static void test_ipc(void **state)
{
    (void)state;
    const fd_case_t cases[] = {
        { "iop_ppipe_create", make_ppipe, NULL, drop_ppipe },
        { "iop_pqueue_create", make_pqueue, use_pqueue, drop_pqueue },
        { "iop_shdict_create", make_shdict, use_shdict, drop_shdict },
        { "iop_plock_create", make_plock, use_plock, drop_plock },
        { "iop_pool_create", make_pool, NULL, drop_pool },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        fd_sweep(&cases[i]);
}

/* ---- main ------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    const char *spec = tu_backend_from_args(argc, argv);
    if (!spec) {
        fprintf(stderr, "usage: %s BACKEND | ipc\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    soft_limit = rl.rlim_cur;
    if (strcmp(spec, "ipc") == 0) {
        const struct CMUnitTest ipc[] = { cmocka_unit_test_teardown(test_ipc, restore_after) };
        return cmocka_run_group_tests_name("ipc", ipc, NULL, NULL);
    }
    tu_backend = spec;
    iop_loop_opts_t o = { .size = sizeof o, .backend = spec };
    iop_loop_t *probe = NULL;
    if (iop_loop_create(&probe, &o) < 0) {
        printf("backend %s unavailable: %s\n", spec, iop_last_error());
        return 77;
    }
    iop_loop_destroy(probe);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_loop, restore_after),
        cmocka_unit_test_teardown(test_loop_auto, restore_after),
        cmocka_unit_test_teardown(test_service_accept, restore_after),
        cmocka_unit_test_teardown(test_http_file, restore_after),
    };
    return cmocka_run_group_tests_name(spec, tests, NULL, NULL);
}
