/* The http service as curl sees it: headers, HEAD (-I), Range (-r), a 404 with -f,
 * a redirect with -L, and two URLs on one reused connection. Skipped (77) when
 * curl is not installed. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "http_fixture.h"
#include "http_harness.h"

static hf_root_t root;
static hh_server_t srv;
static char base_url[64];
static char out[65536], err[65536];

static void slurp(const char *path, char *buf, size_t cap)
{
    buf[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (!f)
        return;
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
}

/* Runs curl with args (NULL-terminated), stdout into out, stderr into err; its exit
 * code, or -1. Killed (by its PID) if it runs past 15 s. */
static int curl(const char *first, ...)
{
    const char *argv[32] = { "curl", "--max-time", "10", "--no-progress-meter" };
    int argc = 4;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && argc < 31; a = va_arg(ap, const char *))
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    char outp[96], errp[96];
    snprintf(outp, sizeof outp, "%s/curl.out", root.base);
    snprintf(errp, sizeof errp, "%s/curl.err", root.base);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int o = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
            _exit(126);
        execvp("curl", (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    for (int i = 0; i < 1500; i++) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        if (i == 1499) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        struct timespec ts = { 0, 10000000 };
        nanosleep(&ts, NULL);
    }
    slurp(outp, out, sizeof out);
    slurp(errp, err, sizeof err);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static const char *url(const char *path)
{
    static char bufs[4][256];
    static int k;
    char *u = bufs[k++ % 4];
    snprintf(u, 256, "%s%s", base_url, path);
    return u;
}

static void test_headers(void **state)
{
    (void)state;
    assert_int_equal(curl("-sS", "-D", "-", url("/hello.txt"), NULL), 0);
    assert_non_null(strstr(out, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(out, "Content-Type: text/plain; charset=utf-8\r\n"));
    assert_non_null(strstr(out, "Content-Length: 11\r\n"));
    assert_non_null(strstr(out, "Last-Modified: " HF_MTIME_TEXT "\r\n"));
    assert_non_null(strstr(out, "Server: ioplex\r\n"));
    size_t n = strlen(out);
    assert_true(n > 11 && strcmp(out + n - 11, HF_HELLO_TXT) == 0);
}

static void test_head(void **state)
{
    (void)state;
    assert_int_equal(curl("-sS", "-I", url("/hello.txt"), NULL), 0);
    assert_non_null(strstr(out, "HTTP/1.1 200 OK"));
    assert_non_null(strstr(out, "Content-Length: 11"));
    assert_null(strstr(out, "hello file"));
}

static void test_range(void **state)
{
    (void)state;
    assert_int_equal(curl("-sS", "-r", "0-4", url("/hello.txt"), NULL), 0);
    assert_string_equal(out, "hello");
    assert_int_equal(curl("-sS", "-r", "-5", url("/hello.txt"), NULL), 0);
    assert_string_equal(out, "file\n");
}

static void test_not_found(void **state)
{
    (void)state;
    assert_int_equal(curl("-sS", "-f", url("/missing.html"), NULL), 22);
    assert_non_null(strstr(err, "404"));
    assert_int_equal(curl("-sS", "-L", url("/sub"), NULL), 0);
    assert_string_equal(out, HF_SUB_INDEX);
}

static void test_reuse(void **state)
{
    (void)state;
    assert_int_equal(curl("-sS", "-v", url("/hello"), url("/hello.txt"), NULL), 0);
    assert_string_equal(out, "Hello, World!" HF_HELLO_TXT);
    if (!strstr(err, "Re-using existing connection"))
        fail_msg("no connection reuse in curl -v:\n%s", err);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (system("curl --version >/dev/null 2>&1") != 0) {
        fprintf(stderr, "curl is not installed: skipped\n");
        return 77;
    }
    alarm(60);
    if (hf_make(&root) < 0)
        return 1;
    char opts[256];
    snprintf(opts, sizeof opts, "root=%s", root.www);
    if (hh_start(&srv, NULL, opts, 0) < 0) {
        fprintf(stderr, "http server: %s\n", srv.err);
        hf_remove(&root);
        return 1;
    }
    snprintf(base_url, sizeof base_url, "http://127.0.0.1:%d", ntohs(srv.addr.sin_port));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_head),
        cmocka_unit_test(test_range),
        cmocka_unit_test(test_not_found),
        cmocka_unit_test(test_reuse),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    hh_stop(&srv);
    hf_remove(&root);
    return r;
}
