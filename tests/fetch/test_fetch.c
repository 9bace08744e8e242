/* iop-fetch as a user runs it: the real binary, fork/exec'ed against the canned
 * loopback server (canned_server.c) running in a thread of this process.
 *
 * usage: test_fetch BACKEND             the downloads, iop-fetch on BACKEND
 *        test_fetch BACKEND --valgrind  a subset with iop-fetch under valgrind
 *        test_fetch --cli               usage errors, --help, python3 -m http.server */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "canned_server.h"
#include "proc.h"
#include "test_util.h"

#ifndef FETCH_PATH
#error "FETCH_PATH must name the iop-fetch binary"
#endif

#define RUN_TIMEOUT_MS 60000
#define VALGRIND_TIMEOUT_MS 120000
#define OUT_MAX (1u << 20)
#define MAX_ARGS 512

static const char *backend;        /* NULL: the binary's default */
static int under_valgrind;

typedef struct fx {
    canned_server_t srv;
    char dir[64];                  /* a fresh temporary directory */
    char outdir[96];               /* dir/out: where downloads go */
    char *out, *err;               /* the last run's stdout and stderr */
    int status;                    /* its exit status, -1 if it did not exit */
    char urls[MAX_ARGS][192];
    int nurls;
} fx_t;

/* ---- fixture ---------------------------------------------------------------- */

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/iop-fetch-test-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->outdir, sizeof f->outdir, "%s/out", f->dir);
    f->out = malloc(OUT_MAX);
    f->err = malloc(OUT_MAX);
    assert_non_null(f->out);
    assert_non_null(f->err);
    *state = f;
    return 0;
}

static int setup_server(void **state)
{
    setup(state);
    fx_t *f = *state;
    assert_int_equal(canned_start(&f->srv), 0);
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    canned_stop(&f->srv);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f->out);
    free(f->err);
    free(f);
    return 0;
}

/* ---- running iop-fetch ------------------------------------------------------------ */

/* Adds a URL on the canned server (printf-style path) to the next run's list. */
static const char *add_url(fx_t *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *add_url(fx_t *f, const char *fmt, ...)
{
    assert_true(f->nurls < MAX_ARGS);
    char path[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof path, fmt, ap);
    va_end(ap);
    char *u = f->urls[f->nurls++];
    if (path[0] != '/')             /* a whole URL */
        snprintf(u, sizeof f->urls[0], "%s", path);
    else
        snprintf(u, sizeof f->urls[0], "http://127.0.0.1:%d%s", f->srv.port, path);
    return u;
}

/* Runs iop-fetch with opts (NULL-terminated), then the URLs added so far (which
 * it forgets), stdin from in. Leaves the exit status, stdout and stderr in f. */
static int run(fx_t *f, const char *in, const char *const *opts)
{
    char *argv[MAX_ARGS + 40];
    int n = 0;
    if (under_valgrind) {
        argv[n++] = "/usr/bin/valgrind";
        argv[n++] = "-q";
        argv[n++] = "--error-exitcode=99";
        argv[n++] = "--leak-check=full";
        argv[n++] = "--errors-for-leak-kinds=definite";
        argv[n++] = "--show-leak-kinds=definite";
    }
    argv[n++] = FETCH_PATH;
    if (backend) {
        argv[n++] = "--backend";
        argv[n++] = (char *)backend;
    }
    for (int i = 0; opts && opts[i]; i++)
        argv[n++] = (char *)opts[i];
    for (int i = 0; i < f->nurls; i++)
        argv[n++] = f->urls[i];
    argv[n] = NULL;
    f->nurls = 0;
    int st = proc_run(argv, in, in ? strlen(in) : 0, f->out, OUT_MAX, f->err, OUT_MAX,
                      under_valgrind ? VALGRIND_TIMEOUT_MS : RUN_TIMEOUT_MS);
    f->status = st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return f->status;
}

/* Fails the test with iop-fetch's stderr when the exit status is not want. */
static void expect_status(fx_t *f, int want)
{
    if (f->status != want)
        fail_msg("iop-fetch exited %d, expected %d; stderr:\n%s", f->status, want, f->err);
}

static void expect_err(fx_t *f, const char *text)
{
    if (!strstr(f->err, text))
        fail_msg("stderr does not say '%s':\n%s", text, f->err);
}

/* ---- checking the files ------------------------------------------------------------ */

static unsigned char *read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    fstat(fd, &st);
    unsigned char *b = malloc((size_t)st.st_size + 1);
    ssize_t n = b ? read(fd, b, (size_t)st.st_size + 1) : -1;
    close(fd);
    if (n != st.st_size) {
        free(b);
        return NULL;
    }
    *len = (size_t)n;
    return b;
}

static void expect_body(const char *path, size_t n, unsigned seed)
{
    size_t len;
    unsigned char *got = read_file(path, &len);
    if (!got)
        fail_msg("%s: missing", path);
    unsigned char *want = malloc(n ? n : 1);
    canned_body(want, n, seed);
    if (len != n || memcmp(got, want, n) != 0)
        fail_msg("%s: %zu bytes, expected %zu with seed %u%s", path, len, n, seed,
                 len == n ? " (content differs)" : "");
    free(got);
    free(want);
}

/* The file name (in outdir) holds the canned body for n and seed. */
static void expect_file(fx_t *f, const char *name, size_t n, unsigned seed)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", f->outdir, name);
    expect_body(path, n, seed);
}

static void expect_no_file(fx_t *f, const char *name)
{
    char path[512];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", f->outdir, name);
    if (lstat(path, &st) == 0)
        fail_msg("%s exists, it should not", path);
}

/* The entries of outdir: no temporary (hidden) file may be left. */
static int count_files(fx_t *f)
{
    DIR *d = opendir(f->outdir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (e->d_name[0] == '.')
            fail_msg("a temporary file was left behind: %s", e->d_name);
        n++;
    }
    closedir(d);
    return n;
}

static const char *const *opts_dir(fx_t *f, const char *extra1, const char *extra2)
{
    static const char *o[8];
    int i = 0;
    o[i++] = "-o";
    o[i++] = f->outdir;
    if (extra1)
        o[i++] = extra1;
    if (extra2)
        o[i++] = extra2;
    o[i] = NULL;
    return o;
}

/* ---- the downloads ------------------------------------------------------------------ */

/* Content-Length, chunked (extensions, trailers), close-delimited, 1xx first,
 * 204, an empty body: every framing lands intact. */
static void test_framings(void **state)
{
    fx_t *f = *state;
    add_url(f, "/len/100000/1/a.bin");
    add_url(f, "/chunk/70001/2/b.bin");
    add_url(f, "/close/50000/3/c.bin");
    add_url(f, "/info/1000/4/d.bin");
    add_url(f, "/204/e.txt");
    add_url(f, "/len/0/5/f.bin");
    add_url(f, "/chunk/0/6/g.bin");
    run(f, NULL, opts_dir(f, "-c", "3"));
    expect_status(f, 0);
    expect_file(f, "a.bin", 100000, 1);
    expect_file(f, "b.bin", 70001, 2);
    expect_file(f, "c.bin", 50000, 3);
    expect_file(f, "d.bin", 1000, 4);
    expect_file(f, "e.txt", 0, 0);
    expect_file(f, "f.bin", 0, 5);
    expect_file(f, "g.bin", 0, 6);
    assert_int_equal(count_files(f), 7);
    expect_err(f, "total: 7 URLs, 7 ok, 0 failed");
    int oks = 0;                   /* one line per URL, printed once */
    for (const char *p = f->err; (p = strstr(p, ": ok ")); p++)
        oks++;
    assert_int_equal(oks, 7);
}

/* 20 URLs on one host with -c 2: at most 2-4 connections carry them. */
static void test_keepalive_reuse(void **state)
{
    fx_t *f = *state;
    for (int i = 0; i < 20; i++)
        add_url(f, "/%s/%d/%d/k%d.bin", i % 2 ? "chunk" : "len", 1000 + i * 3001, i, i);
    run(f, NULL, opts_dir(f, "-c", "2"));
    expect_status(f, 0);
    for (int i = 0; i < 20; i++) {
        char name[32];
        snprintf(name, sizeof name, "k%d.bin", i);
        expect_file(f, name, 1000 + (size_t)i * 3001, (unsigned)i);
    }
    int conns = atomic_load(&f->srv.connections);
    if (conns > 4)
        fail_msg("20 requests with -c 2 took %d connections", conns);
    assert_int_equal(atomic_load(&f->srv.requests), 20);
}

/* A host done with does not keep its idle connection at the expense of the next
 * host's: with -c 1 (one idle connection in all), 127.0.0.1's is closed when
 * localhost's goes idle, and localhost's five requests share one connection (each
 * took a new one). */
static void test_reuse_after_other_host(void **state)
{
    fx_t *f = *state;
    add_url(f, "http://127.0.0.1:%d/len/100/1/first.bin", f->srv.port);
    for (int i = 0; i < 5; i++)
        add_url(f, "http://localhost:%d/len/%d/%d/next%d.bin", f->srv.port, 200 + i, 10 + i, i);
    run(f, NULL, opts_dir(f, "-c", "1"));
    expect_status(f, 0);
    expect_file(f, "first.bin", 100, 1);
    for (int i = 0; i < 5; i++) {
        char name[32];
        snprintf(name, sizeof name, "next%d.bin", i);
        expect_file(f, name, 200 + (size_t)i, 10u + (unsigned)i);
    }
    int conns = atomic_load(&f->srv.connections);
    if (conns > 2)
        fail_msg("6 requests to 2 hosts with -c 1 took %d connections", conns);
}

/* 200 URLs with -c 50, every body checked. */
static void test_many_concurrent(void **state)
{
    fx_t *f = *state;
    static const char *const kinds[] = { "len", "chunk", "close", "info" };
    for (int i = 0; i < 200; i++)
        add_url(f, "/%s/%d/%d/m%03d.bin", kinds[i % 4], (i * 7919) % 65536, 1000 + i, i);
    run(f, NULL, opts_dir(f, "-c", "50"));
    expect_status(f, 0);
    for (int i = 0; i < 200; i++) {
        char name[32];
        snprintf(name, sizeof name, "m%03d.bin", i);
        expect_file(f, name, (size_t)(i * 7919) % 65536, 1000u + (unsigned)i);
    }
    assert_int_equal(count_files(f), 200);
    expect_err(f, "total: 200 URLs, 200 ok, 0 failed");
    /* a quarter close after each response; the rest are reused: far fewer than 200 */
    int conns = atomic_load(&f->srv.connections);
    if (conns > 50 + 50 + 10)
        fail_msg("200 requests with -c 50 took %d connections", conns);
}

/* Relative and absolute redirect chains; the file is named after the URL given. */
static void test_redirects(void **state)
{
    fx_t *f = *state;
    add_url(f, "/rel/3/r.txt");
    add_url(f, "/abs/5/a.txt");
    run(f, NULL, opts_dir(f, NULL, NULL));
    expect_status(f, 0);
    expect_file(f, "r.txt", 64, 7);
    expect_file(f, "a.txt", 64, 7);
    assert_int_equal(atomic_load(&f->srv.requests), 4 + 6);
    assert_int_equal(count_files(f), 2);
}

/* A redirect loop fails after the limit; --max-redirects moves the limit. */
static void test_redirect_limit(void **state)
{
    fx_t *f = *state;
    add_url(f, "/loop");
    add_url(f, "/rel/5/five.txt");
    run(f, NULL, opts_dir(f, NULL, NULL));
    expect_status(f, 1);
    expect_err(f, "too many redirects (more than 5)");
    expect_file(f, "five.txt", 64, 7);
    expect_no_file(f, "loop");
    assert_int_equal(atomic_load(&f->srv.requests), 6 + 6);

    add_url(f, "/rel/3/three.txt");
    add_url(f, "/rel/2/two.txt");
    run(f, NULL, opts_dir(f, "--max-redirects", "2"));
    expect_status(f, 1);
    expect_err(f, "too many redirects (more than 2)");
    expect_no_file(f, "three.txt");
    expect_file(f, "two.txt", 64, 7);
}

/* 404 counts as a failure and leaves no file; so does a 304 nobody asked for; the
 * other URLs still succeed. */
static void test_404(void **state)
{
    fx_t *f = *state;
    add_url(f, "/404/missing.txt");
    add_url(f, "/len/10/1/ok.bin");
    add_url(f, "/304/unasked.txt");
    run(f, NULL, opts_dir(f, NULL, NULL));
    expect_status(f, 1);
    expect_err(f, "HTTP 404 Not Found");
    expect_err(f, "HTTP 304 Not Modified");   /* no body to save: not a download */
    expect_no_file(f, "missing.txt");
    expect_no_file(f, "unasked.txt");
    expect_file(f, "ok.bin", 10, 1);
    assert_int_equal(count_files(f), 1);
    expect_err(f, "total: 3 URLs, 1 ok, 2 failed");
}

/* A server that never answers, and one that stops in the middle of the body:
 * both time out after --timeout, leaving no file. */
static void test_timeout(void **state)
{
    fx_t *f = *state;
    add_url(f, "/slow/s.txt");
    add_url(f, "/slowbody/100000/sb.bin");
    add_url(f, "/len/10/1/fine.bin");
    long long t0 = now_ms();
    run(f, NULL, opts_dir(f, "--timeout", under_valgrind ? "1" : "0.5"));
    long long took = now_ms() - t0;
    expect_status(f, 1);
    expect_err(f, "waiting for the response head: timed out");
    expect_err(f, "receiving the body after 50000 bytes: timed out");
    expect_no_file(f, "s.txt");
    expect_no_file(f, "sb.bin");
    expect_file(f, "fine.bin", 10, 1);
    assert_int_equal(count_files(f), 1);
    if (took > (under_valgrind ? 20000 : 8000))
        fail_msg("a %s s timeout took %lld ms", under_valgrind ? "1" : "0.5", took);
}

/* Broken responses are per-URL errors with a reason, never a crash. */
static void test_broken(void **state)
{
    fx_t *f = *state;
    add_url(f, "/trunc/1000/t.bin");
    add_url(f, "/bad");
    add_url(f, "/https");
    add_url(f, "https://127.0.0.1:%d/len/1/1/h.bin", f->srv.port);
    add_url(f, "ftp://127.0.0.1/x");
    add_url(f, "http://[::1");
    add_url(f, "/len/20/2/good.bin");
    run(f, NULL, opts_dir(f, NULL, NULL));
    expect_status(f, 1);
    expect_err(f, "connection closed after 500 of 1000 body bytes");
    expect_err(f, "malformed status code");
    expect_err(f, "redirected to 'https://127.0.0.1/x': https is not supported");
    expect_err(f, "/len/1/1/h.bin: https is not supported");
    expect_err(f, "unsupported scheme 'ftp'");
    expect_err(f, "missing ']'");
    expect_file(f, "good.bin", 20, 2);
    assert_int_equal(count_files(f), 1);
    expect_err(f, "total: 7 URLs, 1 ok, 6 failed");
}

/* The server drops a kept-alive connection when the next request arrives: each
 * such request is retried once on a fresh connection and succeeds. */
static void test_keepalive_retry(void **state)
{
    fx_t *f = *state;
    canned_stop(&f->srv);
    f->srv = (canned_server_t){ .drop_second = 1 };
    assert_int_equal(canned_start(&f->srv), 0);
    for (int i = 0; i < 5; i++)
        add_url(f, "/len/%d/%d/d%d.bin", 5000 + i, i, i);
    run(f, NULL, opts_dir(f, "-c", "1"));
    expect_status(f, 0);
    for (int i = 0; i < 5; i++) {
        char name[32];
        snprintf(name, sizeof name, "d%d.bin", i);
        expect_file(f, name, 5000 + (size_t)i, (unsigned)i);
    }
    assert_int_equal(atomic_load(&f->srv.connections), 5);
    assert_int_equal(atomic_load(&f->srv.requests), 9);   /* 4 dropped, 5 answered */
}

/* The server closes idle connections after 100 ms: the next request on that host
 * sees it closed and opens a new one instead of failing. */
static void test_idle_closed(void **state)
{
    fx_t *f = *state;
    canned_stop(&f->srv);
    f->srv = (canned_server_t){ .idle_close_ms = 100 };
    assert_int_equal(canned_start(&f->srv), 0);
    add_url(f, "/len/10/1/first.bin");
    add_url(f, "http://localhost:%d/delay/400/slow.txt", f->srv.port);   /* another host key */
    add_url(f, "/len/10/2/second.bin");
    run(f, NULL, opts_dir(f, "-c", "1"));
    expect_status(f, 0);
    expect_file(f, "first.bin", 10, 1);
    expect_file(f, "second.bin", 10, 2);
    assert_int_equal(atomic_load(&f->srv.connections), 3);
}

/* IPv6 literals and host names. */
static void test_addresses(void **state)
{
    fx_t *f = *state;
    add_url(f, "http://localhost:%d/len/300/3/byname.bin", f->srv.port);
    add_url(f, "http://LOCALHOST:%d/chunk/301/4/upper.bin", f->srv.port);
    if (f->srv.port6)
        add_url(f, "http://[::1]:%d/len/302/5/v6.bin", f->srv.port6);
    add_url(f, "http://no-such-host.invalid:%d/len/1/1/x.bin", f->srv.port);
    run(f, NULL, opts_dir(f, NULL, NULL));
    expect_status(f, 1);
    expect_file(f, "byname.bin", 300, 3);
    expect_file(f, "upper.bin", 301, 4);
    if (f->srv.port6)
        expect_file(f, "v6.bin", 302, 5);
    else
        fprintf(stderr, "(no IPv6 loopback here: the [::1] case is skipped)\n");
    expect_err(f, "cannot resolve 'no-such-host.invalid'");
}

/* -i FILE and -i - (comments, blank lines, spaces and CR LF ends skipped). */
static void test_input_file(void **state)
{
    fx_t *f = *state;
    char list[512], path[128];
    snprintf(list, sizeof list,
             "\xef\xbb\xbf# a comment after a byte order mark\n\n   http://127.0.0.1:%d/len/11/1/one.bin  \r\n"
             "\t# indented comment\nhttp://127.0.0.1:%d/chunk/12/2/two.bin # and one after the URL\n\n",
             f->srv.port, f->srv.port);
    snprintf(path, sizeof path, "%s/urls.txt", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(list, fp);
    fclose(fp);
    const char *o1[] = { "-o", f->outdir, "-i", path, NULL };
    run(f, NULL, o1);
    expect_status(f, 0);
    expect_file(f, "one.bin", 11, 1);
    expect_file(f, "two.bin", 12, 2);
    assert_int_equal(count_files(f), 2);

    const char *o2[] = { "-o", f->outdir, "-i", "-", NULL };
    add_url(f, "/len/13/3/three.bin");   /* arguments and -i together */
    run(f, list, o2);
    expect_status(f, 0);
    expect_file(f, "three.bin", 13, 3);
    expect_file(f, "one.1.bin", 11, 1);  /* one.bin is taken: a suffix */
    expect_file(f, "two.1.bin", 12, 2);
    expect_file(f, "one.bin", 11, 1);
    assert_int_equal(count_files(f), 5);

    /* two things on a line: which line, and nothing fetched */
    const char *o3[] = { "-o", f->outdir, "-i", "-", NULL };
    run(f, "http://127.0.0.1:1/a\nhttp://127.0.0.1:1/b http://127.0.0.1:1/c\n", o3);
    expect_status(f, 2);
    expect_err(f, "-:2: one URL a line");
}

/* Output names: index.html for a trailing slash, suffixes for names taken by this
 * run or by files already there (never overwritten), -O for one URL. */
static void test_names(void **state)
{
    fx_t *f = *state;
    mkdir(f->outdir, 0777);
    char path[256];
    snprintf(path, sizeof path, "%s/a.txt", f->outdir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("old", fp);
    fclose(fp);
    add_url(f, "/len/10/1/a.txt");
    add_url(f, "/len/10/2/a.txt");
    add_url(f, "/len/10/3/dir/");
    add_url(f, "/len/10/4/noext");
    add_url(f, "/len/10/5/noext");
    run(f, NULL, opts_dir(f, NULL, NULL));
    expect_status(f, 0);
    size_t len;
    unsigned char *old = read_file(path, &len);
    assert_non_null(old);
    assert_int_equal(len, 3);
    assert_memory_equal(old, "old", 3);
    free(old);
    expect_file(f, "a.1.txt", 10, 1);
    expect_file(f, "a.2.txt", 10, 2);
    expect_file(f, "index.html", 10, 3);
    expect_file(f, "noext", 10, 4);
    expect_file(f, "noext.1", 10, 5);

    snprintf(path, sizeof path, "%s/chosen.dat", f->dir);
    const char *o[] = { "-O", path, NULL };
    add_url(f, "/chunk/777/9/whatever");
    run(f, NULL, o);
    expect_status(f, 0);
    expect_body(path, 777, 9);

    /* -O naming a symlink: the file it leads to gets the body, the link stays a
     * link (a rename of the link itself would have replaced it). */
    char link[256];
    snprintf(link, sizeof link, "%s/link.dat", f->dir);
    assert_int_equal(symlink(path, link), 0);
    const char *ol[] = { "-O", link, NULL };
    add_url(f, "/chunk/555/7/whatever");
    run(f, NULL, ol);
    expect_status(f, 0);
    struct stat st;
    assert_int_equal(lstat(link, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    expect_body(path, 555, 7);
}

/* A name taken after the names were chosen (a symlink or a file planted in the
 * directory while the download runs) is never written through or replaced: the
 * download takes the next suffix. */
static void test_name_taken_meanwhile(void **state)
{
    fx_t *f = *state;
    mkdir(f->outdir, 0777);
    char victim[128], link[160], file[160];
    snprintf(victim, sizeof victim, "%s/victim", f->dir);
    snprintf(link, sizeof link, "%s/planted", f->outdir);
    snprintf(file, sizeof file, "%s/other", f->outdir);
    FILE *fp = fopen(victim, "w");
    assert_non_null(fp);
    fputs("precious", fp);
    fclose(fp);
    pid_t p = fork();
    assert_true(p >= 0);
    if (p == 0) {                         /* while the server holds the answers back */
        poll(NULL, 0, 300);
        if (symlink(victim, link) < 0)
            _exit(1);
        FILE *o = fopen(file, "w");
        if (!o)
            _exit(1);
        fputs("someone's", o);
        fclose(o);
        _exit(0);
    }
    int hold = under_valgrind ? 1200 : 600;   /* the plant comes at 300 ms, well before */
    add_url(f, "/delay/%d/planted", hold);
    add_url(f, "/delay/%d/other", hold);
    run(f, NULL, opts_dir(f, NULL, NULL));
    assert_int_equal(proc_exit_code(p, 5000), 0);
    expect_status(f, 0);
    size_t len = 0;
    unsigned char *v = read_file(victim, &len);
    assert_non_null(v);
    assert_true(len == 8 && memcmp(v, "precious", 8) == 0);
    free(v);
    unsigned char *o = read_file(file, &len);
    assert_non_null(o);
    assert_true(len == 9 && memcmp(o, "someone's", 9) == 0);
    free(o);
    struct stat st;
    assert_int_equal(lstat(link, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    char got[160];
    snprintf(got, sizeof got, "%s/planted.1", f->outdir);
    unsigned char *d = read_file(got, &len);
    assert_non_null(d);
    assert_true(len == 7 && memcmp(d, "delayed", 7) == 0);
    free(d);
    snprintf(got, sizeof got, "%s/other.1", f->outdir);
    d = read_file(got, &len);
    assert_non_null(d);
    free(d);
    assert_int_equal(count_files(f), 4);
}

/* -O LINK to a regular file: a failed download leaves that file as it was (it was
 * truncated at the first byte); a good one replaces it, the link kept. */
static void test_output_link_failure(void **state)
{
    fx_t *f = *state;
    char target[128], link[128];
    snprintf(target, sizeof target, "%s/target.dat", f->dir);
    snprintf(link, sizeof link, "%s/link.dat", f->dir);
    FILE *fp = fopen(target, "w");
    assert_non_null(fp);
    fputs("original", fp);
    fclose(fp);
    assert_int_equal(symlink(target, link), 0);
    const char *o[] = { "-O", link, NULL };
    add_url(f, "/trunc/1000/x");
    run(f, NULL, o);
    expect_status(f, 1);
    size_t len = 0;
    unsigned char *t = read_file(target, &len);
    assert_non_null(t);
    assert_true(len == 8 && memcmp(t, "original", 8) == 0);
    free(t);
    add_url(f, "/len/300/4/x");
    run(f, NULL, o);
    expect_status(f, 0);
    expect_body(target, 300, 4);
    struct stat st;
    assert_int_equal(lstat(link, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
}

/* What a server sends is quoted in errors with its control characters made '?':
 * no escape sequence reaches the terminal. */
static void test_escapes_quoted_safely(void **state)
{
    fx_t *f = *state;
    add_url(f, "/esc");
    run(f, NULL, opts_dir(f, NULL, NULL));
    expect_status(f, 1);
    expect_err(f, "ftp://x/?]0;TITLE??[2J");
    assert_null(strchr(f->err, 0x1b));
    assert_null(strchr(f->err, 0x07));
}

/* --stdout into a pipe nobody reads for a while: the write waits through the loop,
 * so the other downloads (and their timers) go on; a blocking write stopped
 * everything, and the next download timed out. */
/* A body that cannot be written to stdout (/dev/full) is FAILED, said on stderr
 * even with -q, and never reported "ok" first (it was: ok, then FAILED in the
 * summary; with -q nothing at all). */
static void test_stdout_full(void **state)
{
    fx_t *f = *state;
    add_url(f, "/len/100000/3/x");
    for (int quiet = 0; quiet < 2; quiet++) {
        char *argv[12];
        int n = 0;
        argv[n++] = FETCH_PATH;
        if (backend) {
            argv[n++] = "--backend";
            argv[n++] = (char *)backend;
        }
        argv[n++] = "--stdout";
        if (quiet)
            argv[n++] = "-q";
        argv[n++] = f->urls[0];
        argv[n] = NULL;
        int ep[2];
        assert_int_equal(pipe2(ep, O_CLOEXEC), 0);
        pid_t p = fork();
        assert_true(p >= 0);
        if (p == 0) {
            int full = open("/dev/full", O_WRONLY);
            dup2(full, 1);
            dup2(ep[1], 2);
            execv(FETCH_PATH, argv);
            _exit(127);
        }
        close(ep[1]);
        char err[8192];
        size_t len = 0;
        ssize_t r;
        while (len < sizeof err - 1 && (r = read(ep[0], err + len, sizeof err - 1 - len)) > 0)
            len += (size_t)r;
        err[len] = '\0';
        close(ep[0]);
        int code = proc_exit_code(p, 30000);
        if (code != 1 || !strstr(err, "FAILED") || !strstr(err, "writing stdout: No space left on device") ||
            strstr(err, ": ok 200"))
            fail_msg("%s: exit %d\nstderr: %s", quiet ? "-q" : "not quiet", code, err);
    }
    f->nurls = 0;
}

/* --stdout to a reader that stalls for longer than --timeout: the body still comes
 * whole (the timeout is on the server, not on our own output). */
static void test_stdout_slow_reader(void **state)
{
    fx_t *f = *state;
    add_url(f, "/len/20000000/3/x");
    add_url(f, "/delay/300/x");
    char *argv[16];
    int n = 0;
    argv[n++] = FETCH_PATH;
    if (backend) {
        argv[n++] = "--backend";
        argv[n++] = (char *)backend;
    }
    argv[n++] = "--stdout";
    argv[n++] = "--timeout";
    argv[n++] = TU_SANITIZED ? "2" : "1";
    argv[n++] = f->urls[0];
    argv[n++] = f->urls[1];
    argv[n] = NULL;
    f->nurls = 0;
    proc_t p;                             /* stdout a pipe we do not read for a while */
    assert_int_equal(proc_start(&p, argv, 0), 0);
    poll(NULL, 0, TU_SANITIZED ? 4000 : 2500);   /* the reader is busy: longer than the timeout */
    char buf[65536];
    size_t total = 0;
    ssize_t r;
    while ((r = read(p.out_fd, buf, sizeof buf)) > 0)
        total += (size_t)r;
    int code = proc_wait(&p, 30000) == 0 && WIFEXITED(p.status) ? WEXITSTATUS(p.status) : -1;
    proc_stderr(&p, buf, sizeof buf);
    proc_cleanup(&p);
    if (code != 0 || total != 20000000 + 7)
        fail_msg("exit %d, %zu bytes on stdout\nstderr: %s", code, total, buf);
}

/* --stdout: bodies whole, in the order of the URLs, whatever order they finish in. */
static void test_stdout(void **state)
{
    fx_t *f = *state;
    size_t sizes[] = { 200000, 10, 3000, 0, 5000 };
    add_url(f, "/len/200000/1/x");
    add_url(f, "/chunk/10/2/x");
    add_url(f, "/404/x");
    add_url(f, "/close/3000/3/x");
    add_url(f, "/len/0/4/x");
    add_url(f, "/info/5000/5/x");
    const char *o[] = { "--stdout", "-c", "5", NULL };
    run(f, NULL, o);
    expect_status(f, 1);                  /* the 404 */
    size_t want = 0;
    for (int i = 0; i < 5; i++)
        want += sizes[i];
    unsigned char *exp = malloc(want), *p = exp;
    unsigned seeds[] = { 1, 2, 3, 4, 5 };
    for (int i = 0; i < 5; i++) {
        canned_body(p, sizes[i], seeds[i]);
        p += sizes[i];
    }
    assert_memory_equal(f->out, exp, want);
    free(exp);
    struct stat st;
    assert_int_not_equal(stat(f->outdir, &st), 0);   /* nothing written to disk */

    const char *o2[] = { "-O", "-", "-q", NULL };
    add_url(f, "/len/12345/6/x");
    run(f, NULL, o2);
    expect_status(f, 0);
    unsigned char body[12345];
    canned_body(body, sizeof body, 6);
    assert_memory_equal(f->out, body, sizeof body);
    assert_string_equal(f->err, "");      /* --quiet and all went well */
}

/* On a terminal: one line redrawn in place, at most 10 times a second (plus once
 * per failure printed above it), then the table. stderr is a pseudo-terminal. */
static void test_progress_tty(void **state)
{
    fx_t *f = *state;
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    assert_true(master >= 0);
    assert_int_equal(grantpt(master), 0);
    assert_int_equal(unlockpt(master), 0);
    int slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
    assert_true(slave >= 0);
    add_url(f, "/delay/800/slow.txt");
    add_url(f, "/404/x");
    for (int i = 0; i < 5; i++)
        add_url(f, "/len/1000/%d/t%d", i, i);
    char *argv[20];
    int n = 0;
    argv[n++] = FETCH_PATH;
    if (backend) {
        argv[n++] = "--backend";
        argv[n++] = (char *)backend;
    }
    argv[n++] = "-o";
    argv[n++] = f->outdir;
    for (int i = 0; i < f->nurls; i++)
        argv[n++] = f->urls[i];
    argv[n] = NULL;
    f->nurls = 0;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        dup2(slave, 2);
        signal(SIGPIPE, SIG_DFL);
        execv(argv[0], argv);
        _exit(127);
    }
    close(slave);
    size_t got = 0;
    long long until = now_ms() + RUN_TIMEOUT_MS;
    for (;;) {                            /* until the child's side closes (EIO) */
        struct pollfd p = { .fd = master, .events = POLLIN };
        long long left = until - now_ms();
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            break;
        ssize_t r = read(master, f->err + got, OUT_MAX - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    f->err[got] = '\0';
    close(master);
    proc_t child = { .pid = pid, .out_fd = -1, .err_fd = -1 };
    if (proc_wait(&child, 5000) < 0)
        proc_cleanup(&child);             /* SIGKILL by PID */
    f->status = WIFEXITED(child.status) ? WEXITSTATUS(child.status) : -1;
    expect_status(f, 1);
    expect_err(f, "FAILED http://127.0.0.1");
    expect_err(f, "total: 7 URLs, 6 ok, 1 failed");
    int draws = 0;
    for (const char *c = f->err; (c = strstr(c, "\r\033[Kiop-fetch: ")); c++)
        draws++;
    /* ~0.8 s: ticks every 100 ms, one forced redraw after the failure line */
    if (draws < 3 || draws > 14)
        fail_msg("%d progress redraws in ~0.8 s:\n%s", draws, f->err);
    expect_err(f, "/7 URLs  ");
    assert_null(strstr(f->err, "iop-fetch: ok "));   /* no per-URL lines on a terminal */
}

/* 1 if outdir holds a temporary (hidden) download file. */
static int has_partial(fx_t *f)
{
    DIR *d = opendir(f->outdir);
    int found = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        found |= strncmp(e->d_name, ".sb.bin.part-", 13) == 0;
    if (d)
        closedir(d);
    return found;
}

/* SIGINT in the middle of a body: the download stops at once, its temporary
 * file is removed, the rest is reported as not started, exit status 1. */
static void test_interrupt(void **state)
{
    fx_t *f = *state;
    add_url(f, "/slowbody/100000/sb.bin");
    for (int i = 0; i < 3; i++)
        add_url(f, "/len/10/%d/later%d", i, i);
    char *argv[20];
    int n = 0;
    argv[n++] = FETCH_PATH;
    if (backend) {
        argv[n++] = "--backend";
        argv[n++] = (char *)backend;
    }
    argv[n++] = "-c";
    argv[n++] = "1";
    argv[n++] = "-o";
    argv[n++] = f->outdir;
    for (int i = 0; i < f->nurls; i++)
        argv[n++] = f->urls[i];
    argv[n] = NULL;
    f->nurls = 0;
    proc_t p;
    assert_int_equal(proc_start(&p, argv, 0), 0);
    long long until = now_ms() + 10000;
    while (!has_partial(f) && now_ms() < until && proc_wait(&p, 20) == -ETIMEDOUT)
        ;
    int partial = has_partial(f);
    long long t0 = now_ms();
    if (p.pid)
        kill(p.pid, SIGINT);
    int r = proc_wait(&p, 5000);
    long long took = now_ms() - t0;
    proc_stderr(&p, f->err, OUT_MAX);
    proc_cleanup(&p);                     /* SIGKILL by PID if it still runs */
    if (!partial)
        fail_msg("no temporary file appeared; stderr:\n%s", f->err);
    assert_int_equal(r, 0);
    f->status = WIFEXITED(p.status) ? WEXITSTATUS(p.status) : -1;
    expect_status(f, 1);
    expect_err(f, "(interrupted)");
    expect_err(f, "3 not started");
    assert_int_equal(count_files(f), 0);  /* and no hidden file either */
    /* The body stalls for good: a stop that waited on it would not come at all.
     * The bound leaves room for a sanitizer's leak check at exit on a loaded machine. */
    if (took > 4000)
        fail_msg("SIGINT took %lld ms to stop iop-fetch", took);
}

/* ---- command line (--cli) ------------------------------------------------------------ */

static void expect_usage_error(fx_t *f, const char *const *args, const char *text)
{
    run(f, NULL, args);
    expect_status(f, 2);
    expect_err(f, text);
}

static void test_usage_errors(void **state)
{
    fx_t *f = *state;
    expect_usage_error(f, (const char *[]){ NULL }, "no URL given (try --help)");
    expect_usage_error(f, (const char *[]){ "-c", "0", "http://x/", NULL }, "bad value '0' for -c");
    expect_usage_error(f, (const char *[]){ "-c", "many", "http://x/", NULL }, "bad value 'many'");
    expect_usage_error(f, (const char *[]){ "--timeout", "0", "http://x/", NULL }, "--timeout");
    expect_usage_error(f, (const char *[]){ "--bogus", "http://x/", NULL }, "unknown option '--bogus'");
    /* inside a group of short options: the option, not argv[0] (optind has not moved) */
    expect_usage_error(f, (const char *[]){ "-Zq", "http://x/", NULL }, "unknown option '-Z'");
    expect_usage_error(f, (const char *[]){ "-qZ", "http://x/", NULL }, "unknown option '-Z'");
    expect_usage_error(f, (const char *[]){ "--stdout=1", "http://x/", NULL }, "unknown option '--stdout=1'");
    expect_usage_error(f, (const char *[]){ "http://x/", "-c", NULL }, "needs a value");
    expect_usage_error(f, (const char *[]){ "-O", "f", "http://x/", "http://y/", NULL },
                       "-O FILE takes exactly one URL, got 2");
    expect_usage_error(f, (const char *[]){ "-O", "-", "http://x/", "http://y/", NULL },
                       "-O FILE takes exactly one URL, got 2");
    expect_usage_error(f, (const char *[]){ "-o", "d", "--stdout", "http://x/", NULL }, "does not go with");
    expect_usage_error(f, (const char *[]){ "-O", "a", "-O", "b", "http://x/", NULL }, "-O given twice");
    expect_usage_error(f, (const char *[]){ "-o", "a", "-o", "b", "http://x/", NULL }, "-o given twice");
    expect_usage_error(f, (const char *[]){ "-o", "", "http://x/", NULL }, "bad value '' for -o");
    expect_usage_error(f, (const char *[]){ "-O", "", "http://x/", NULL }, "bad value '' for -O");
    expect_usage_error(f, (const char *[]){ "-i", "/nonexistent/urls", NULL }, "cannot open '/nonexistent/urls'");
    expect_usage_error(f, (const char *[]){ "-i", "-", NULL }, "no URL given");
    expect_usage_error(f, (const char *[]){ "--backend", "nosuch", "http://x/", NULL }, "cannot start the event loop");
}

/* A link-local address names no link without a zone, which a URL here cannot carry:
 * said, instead of connect's "Invalid argument". */
static void test_link_local(void **state)
{
    fx_t *f = *state;
    run(f, NULL, (const char *[]){ "-q", "-O", "/dev/null", "http://[fe80::1]:7/", NULL });
    expect_status(f, 1);
    expect_err(f, "cannot connect to [fe80::1]:7: a link-local address needs a zone");
}

static void test_help(void **state)
{
    fx_t *f = *state;
    run(f, NULL, (const char *[]){ "--help", NULL });
    expect_status(f, 0);
    const char *want[] = { "usage: iop-fetch", "-c, --concurrency N", "--max-redirects",
                           "--timeout SECONDS", "--stdout", "-i, --input FILE",
                           "like curl -f", "Exit status: 0", "https" };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(f->out, want[i]))
            fail_msg("--help does not mention '%s':\n%s", want[i], f->out);
}

/* A server nobody here wrote: python3 -m http.server on 127.0.0.1. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static int can_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

static char *find_python(void)
{
    static char path[512];
    const char *env = getenv("PATH");
    char *dirs = strdup(env ? env : "/usr/bin:/bin"), *save = NULL;
    for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(path, sizeof path, "%s/python3", d);
        if (access(path, X_OK) == 0) {
            free(dirs);
            return path;
        }
    }
    free(dirs);
    return NULL;
}

static void write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static void test_python_server(void **state)
{
    fx_t *f = *state;
    char *python = find_python();
    if (!python) {
        fprintf(stderr, "python3 not found: skipped\n");
        skip();
    }
    char www[128], path[256];
    snprintf(www, sizeof www, "%s/www", f->dir);
    mkdir(www, 0777);
    snprintf(path, sizeof path, "%s/sub", www);
    mkdir(path, 0777);
    size_t big = 1500000;
    unsigned char *body = malloc(big);
    canned_body(body, big, 42);
    snprintf(path, sizeof path, "%s/big.bin", www);
    write_file(path, body, big);
    snprintf(path, sizeof path, "%s/sub/small.txt", www);
    write_file(path, "small\n", 6);
    snprintf(path, sizeof path, "%s/sub/index.html", www);
    write_file(path, "<p>sub</p>\n", 11);

    int port = free_port();
    assert_true(port > 0);
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    char *argv[] = { python, "-m", "http.server", "--bind", "127.0.0.1", "--directory", www,
                     portstr, NULL };
    proc_t py;
    assert_int_equal(proc_start(&py, argv, 0), 0);
    long long until = now_ms() + 15000;
    while (!can_connect(port) && now_ms() < until && proc_wait(&py, 50) == -ETIMEDOUT)
        ;
    if (!py.pid || !can_connect(port)) {
        char err[2048];
        fprintf(stderr, "python3 -m http.server did not start: %s\n", proc_stderr(&py, err, sizeof err));
        proc_cleanup(&py);
        free(body);
        skip();
    }
    add_url(f, "http://127.0.0.1:%d/big.bin", port);
    add_url(f, "http://127.0.0.1:%d/sub/small.txt", port);
    add_url(f, "http://127.0.0.1:%d/sub", port);       /* 301 to /sub/ */
    add_url(f, "http://localhost:%d/sub/", port);
    add_url(f, "http://127.0.0.1:%d/nothing-here", port);
    run(f, NULL, opts_dir(f, "-c", "4"));
    kill(py.pid, SIGTERM);
    if (proc_wait(&py, 3000) < 0)
        proc_cleanup(&py);               /* SIGKILL by PID */
    proc_cleanup(&py);
    expect_status(f, 1);                 /* the 404 */
    snprintf(path, sizeof path, "%s/big.bin", f->outdir);
    expect_body(path, big, 42);
    free(body);
    size_t len;
    snprintf(path, sizeof path, "%s/small.txt", f->outdir);
    unsigned char *got = read_file(path, &len);
    assert_non_null(got);
    assert_int_equal(len, 6);
    assert_memory_equal(got, "small\n", 6);
    free(got);
    snprintf(path, sizeof path, "%s/sub", f->outdir);
    got = read_file(path, &len);
    assert_non_null(got);
    assert_int_equal(len, 11);
    free(got);
    snprintf(path, sizeof path, "%s/index.html", f->outdir);
    got = read_file(path, &len);
    assert_non_null(got);
    assert_memory_equal(got, "<p>sub</p>\n", 11);
    free(got);
    expect_no_file(f, "nothing-here");
    expect_err(f, "HTTP 404");
    assert_int_equal(count_files(f), 4);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    const char *filter = getenv("FETCH_TEST_FILTER");   /* e.g. "test_keepalive*" */
    if (filter && *filter)
        cmocka_set_test_filter(filter);
    alarm(under_valgrind ? 600 : 300);   /* a last resort: nothing may hang */
    if (argc > 1 && strcmp(argv[1], "--cli") == 0) {
        const struct CMUnitTest cli[] = {
            cmocka_unit_test_setup_teardown(test_usage_errors, setup, teardown),
            cmocka_unit_test_setup_teardown(test_help, setup, teardown),
            cmocka_unit_test_setup_teardown(test_link_local, setup, teardown),
            cmocka_unit_test_setup_teardown(test_python_server, setup, teardown),
        };
        return cmocka_run_group_tests_name("fetch.cli", cli, NULL, NULL);
    }
    backend = argc > 1 ? argv[1] : NULL;
    if (argc > 2 && strcmp(argv[2], "--valgrind") == 0) {
        if (access("/usr/bin/valgrind", X_OK) != 0) {
            printf("valgrind not installed: skipped\n");
            return 77;
        }
        under_valgrind = 1;
        alarm(600);
        const struct CMUnitTest vg[] = {
            cmocka_unit_test_setup_teardown(test_framings, setup_server, teardown),
            cmocka_unit_test_setup_teardown(test_redirects, setup_server, teardown),
            cmocka_unit_test_setup_teardown(test_404, setup_server, teardown),
            cmocka_unit_test_setup_teardown(test_broken, setup_server, teardown),
            cmocka_unit_test_setup_teardown(test_keepalive_retry, setup_server, teardown),
            cmocka_unit_test_setup_teardown(test_addresses, setup_server, teardown),
            cmocka_unit_test_setup_teardown(test_stdout, setup_server, teardown),
        };
        return cmocka_run_group_tests_name("fetch.valgrind", vg, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_framings, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive_reuse, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_reuse_after_other_host, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_many_concurrent, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_redirects, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_redirect_limit, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_404, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_broken, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive_retry, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_idle_closed, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_addresses, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_input_file, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_names, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_name_taken_meanwhile, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_output_link_failure, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_escapes_quoted_safely, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_stdout_slow_reader, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_stdout_full, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_stdout, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_progress_tty, setup_server, teardown),
        cmocka_unit_test_setup_teardown(test_interrupt, setup_server, teardown),
    };
    return cmocka_run_group_tests_name("fetch", tests, NULL, NULL);
}
