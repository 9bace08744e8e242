/* The io_uring fallback as a user meets it: the real iop-echo-server (and, in a
 * forked child, the library itself) run under a seccomp filter that makes
 * io_uring_setup fail with EPERM or ENOSYS, the way container runtimes and hardened
 * hosts deny it. auto must pass uring over and say why, a named uring must fail
 * saying why, and IOPLEX_BACKEND_AVOID=uring must keep auto from even probing it
 * (proved with a filter that kills the process on io_uring_setup).
 *
 * The filter is installed by this same binary re-executed as a wrapper,
 *     test_uring_fallback --filtered eperm|enosys|kill [--avoid-uring] PROGRAM ARGS...
 * which sets the filter and the environment and then execs PROGRAM, so proc.c starts
 * it like any other child. Every server line and reason seen is printed with a
 * "fallback:" prefix. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ioplex/error.h>
#include <ioplex/loop.h>
#include <ioplex/op.h>

#include "proc.h"

#ifndef ECHO_SERVER_PATH
#error "ECHO_SERVER_PATH must name the iop-echo-server binary"
#endif
#ifndef ECHO_CLIENT_PATH
#error "ECHO_CLIENT_PATH must name the iop-echo-client binary"
#endif

/* The filter compares syscall numbers, which mean something only for one ABI. */
#if defined(__x86_64__) && !defined(__ILP32__)
#define FILTER_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__) && !defined(__ILP32__)
#define FILTER_ARCH AUDIT_ARCH_AARCH64
#endif
#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425   /* the same on every architecture since 5.1 */
#endif
#ifndef __NR_io_uring_register
#define __NR_io_uring_register 427
#endif
#ifndef __NR_io_uring_enter
#define __NR_io_uring_enter 426
#endif
#define REGISTER_BUFFERS 0        /* IORING_REGISTER_BUFFERS: io_uring_register's opcodes */
#define REGISTER_PROBE 8          /* IORING_REGISTER_PROBE */
#define REGISTER_PBUF_RING 22     /* IORING_REGISTER_PBUF_RING */
#define ANY_ARG UINT32_MAX

#define LINE_TIMEOUT_MS 10000     /* server start-up, generous for sanitizer builds */
#define RUN_TIMEOUT_MS 20000      /* the client's --check run */
#define EXIT_TIMEOUT_MS 10000     /* a server that must fail at start-up */
#define STOP_TIMEOUT_MS 2000      /* SIGTERM → exit 0, as the server promises */
#define EXIT_NO_SECCOMP 125       /* the wrapper could not install its filter */

typedef struct deny {
    const char *name;             /* as the wrapper takes it */
    uint32_t action;              /* what the filter returns for io_uring_setup */
    int err;                      /* the errno io_uring_setup fails with; 0 = killed */
} deny_t;

static const deny_t deny_eperm = { "eperm", SECCOMP_RET_ERRNO | EPERM, EPERM };
static const deny_t deny_enosys = { "enosys", SECCOMP_RET_ERRNO | ENOSYS, ENOSYS };
static const deny_t deny_kill = { "kill", SECCOMP_RET_KILL_PROCESS, 0 };

static char self_path[4096];      /* this binary, re-executed as the wrapper */
static const char *no_seccomp;    /* why seccomp filters cannot be used here, or NULL */

/* ---- the filter ------------------------------------------------------------------- */

#ifdef FILTER_ARCH
/* Installs a filter returning `action` for syscall nr (when its second argument's
 * low 32 bits are arg1, unless arg1 is ANY_ARG; little-endian ABIs only) and
 * allowing every other call. 0, or -errno with the call that failed in *what. */
static int install_filter_on(int nr, uint32_t arg1, uint32_t action, const char **what)
{
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, FILTER_ARCH, 0, 5),   /* other ABI: allow */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, arg1, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, action),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    if (arg1 == ANY_ARG)          /* no argument test: on to the action */
        code[5] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JA, 0, 0, 0);
    struct sock_fprog prog = { .len = (unsigned short)(sizeof code / sizeof code[0]), .filter = code };
    /* Without it an unprivileged process may not install a filter. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
        *what = "prctl(PR_SET_NO_NEW_PRIVS)";
        return -errno;
    }
    if (syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) {
        *what = "seccomp(SECCOMP_SET_MODE_FILTER)";
        return -errno;
    }
    return 0;
}
#else
static int install_filter_on(int nr, uint32_t arg1, uint32_t action, const char **what)
{
    (void)nr;
    (void)arg1;
    (void)action;
    *what = "this architecture (the filter knows x86_64 and aarch64 only)";
    return -ENOTSUP;
}
#endif

/* The filter most tests use: `action` for io_uring_setup. */
static int install_filter(uint32_t action, const char **what)
{
    return install_filter_on(__NR_io_uring_setup, ANY_ARG, action, what);
}

/* Errors that mean "no seccomp filters here" rather than a broken test: a kernel
 * without seccomp (EINVAL, ENOSYS), or an outer policy denying seccomp itself
 * (EPERM: with no_new_privs set, the call has no other reason to refuse). */
static int means_unavailable(int err)
{
    return err == -EINVAL || err == -ENOSYS || err == -EPERM || err == -ENOTSUP;
}

/* Once per run, in a throw-away child: can a filter be installed, and does it make
 * io_uring_setup fail as asked? Sets no_seccomp when filters are unavailable. */
static int probe_seccomp(void **state)
{
    (void)state;
    static char why[256];
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        const char *what = "";
        int r = install_filter(deny_eperm.action, &what);
        if (r == 0) {
            long s = syscall(__NR_io_uring_setup, 1, NULL);
            r = s < 0 && errno == EPERM ? 0 : -EBADE;   /* EBADE: the filter did not bite */
            what = "io_uring_setup under the filter";
        }
        dprintf(pfd[1], "%d %s\n", r, what);
        _exit(0);
    }
    close(pfd[1]);
    proc_t p = { .pid = pid, .out_fd = pfd[0], .err_fd = -1 };
    char line[256];
    int n = proc_read_line(&p, line, sizeof line, LINE_TIMEOUT_MS);
    proc_cleanup(&p);
    if (n <= 0 && WIFSIGNALED(p.status) && WTERMSIG(p.status) == SIGSYS) {
        /* Filters stack, the strictest action wins: an outer policy kills on it. */
        no_seccomp = "an outer seccomp policy kills io_uring_setup";
        fprintf(stderr, "fallback: %s; every test skips\n", no_seccomp);
        return 0;
    }
    if (n <= 0) {
        fprintf(stderr, "fallback: the seccomp probe child said nothing (%s)\n", strerror(-n));
        return -1;
    }
    char *rest;
    long r = strtol(line, &rest, 10);
    if (r == 0)
        return 0;
    if (!means_unavailable((int)r)) {
        fprintf(stderr, "fallback: seccomp probe failed:%s: %s\n", rest, strerror((int)-r));
        return -1;
    }
    snprintf(why, sizeof why, "%s: %s", rest + 1, strerror((int)-r));
    no_seccomp = why;
    fprintf(stderr, "fallback: seccomp filters unavailable (%s); every test skips\n", why);
    return 0;
}

#define SKIP_WITHOUT_SECCOMP()                                                           \
    do {                                                                                 \
        if (no_seccomp) {                                                                \
            fprintf(stderr, "fallback: skipped: %s\n", no_seccomp);                     \
            skip();                                                                      \
        }                                                                                \
    } while (0)

/* SECCOMP_RET_KILL_PROCESS came with Linux 4.14; skips the test without it. */
static void skip_without_kill_process(void)
{
    uint32_t action = SECCOMP_RET_KILL_PROCESS;
    if (syscall(__NR_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &action) < 0) {
        fprintf(stderr, "fallback: skipped: SECCOMP_RET_KILL_PROCESS unavailable: %s\n", strerror(errno));
        skip();
    }
}

/* ---- the wrapper ------------------------------------------------------------------ */

/* argv: self --filtered MODE [--avoid-uring] PROGRAM ARGS... Never returns. */
static int wrapper_main(int argc, char **argv)
{
    const deny_t *modes[] = { &deny_eperm, &deny_enosys, &deny_kill };
    const deny_t *d = NULL;
    int i = 2;
    for (size_t m = 0; i < argc && m < sizeof modes / sizeof modes[0]; m++)
        if (strcmp(argv[i], modes[m]->name) == 0)
            d = modes[m];
    i++;
    int avoid = i < argc && strcmp(argv[i], "--avoid-uring") == 0;
    i += avoid;
    if (!d || i >= argc) {
        fprintf(stderr, "usage: %s --filtered eperm|enosys|kill [--avoid-uring] PROGRAM ARGS...\n", argv[0]);
        _exit(2);
    }
    /* The backend is the program's own choice (auto unless its argv names one). */
    unsetenv("IOPLEX_BACKEND");
    unsetenv("IOPLEX_BACKEND_AVOID");
    if (avoid)
        setenv("IOPLEX_BACKEND_AVOID", "uring", 1);
    struct rlimit none = { 0, 0 };
    setrlimit(RLIMIT_CORE, &none);   /* a process the filter kills leaves no core file */
    const char *what = "";
    int r = install_filter(d->action, &what);
    if (r < 0) {
        fprintf(stderr, "fallback-wrapper: %s: %s\n", what, strerror(-r));
        _exit(EXIT_NO_SECCOMP);
    }
    execv(argv[i], argv + i);
    fprintf(stderr, "fallback-wrapper: exec %s: %s\n", argv[i], strerror(errno));
    _exit(127);
}

/* ---- the server under a filter ---------------------------------------------------- */

typedef struct fixture {
    const deny_t *deny;
    proc_t srv;
    char line[1024];              /* the server's one line */
    char where[128];              /* its address, as printed */
    char backend[64];             /* the backend it names */
    char report[900];             /* the report in parentheses, "" if none */
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->deny = *state;
    f->srv = (proc_t){ .pid = 0, .out_fd = -1, .err_fd = -1 };
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    proc_cleanup(&f->srv);
    free(f);
    return 0;
}

/* argv for the wrapper running the server; backend NULL = none named (auto). */
static void server_argv(char *argv[], const deny_t *d, int avoid, const char *backend)
{
    int i = 0;
    argv[i++] = self_path;
    argv[i++] = "--filtered";
    argv[i++] = (char *)d->name;
    if (avoid)
        argv[i++] = "--avoid-uring";
    argv[i++] = ECHO_SERVER_PATH;
    if (backend) {
        argv[i++] = "--backend";
        argv[i++] = (char *)backend;
    }
    argv[i++] = "--listen";
    argv[i++] = "127.0.0.1:0";
    argv[i] = NULL;
}

/* Splits "iop-echo-server: listening on ADDR, backend NAME (REPORT)". 0 or -1. */
static int parse_line(fixture_t *f)
{
    static const char prefix[] = "iop-echo-server: listening on ";
    const char *comma = strstr(f->line, ", backend ");
    if (strncmp(f->line, prefix, sizeof prefix - 1) != 0 || !comma)
        return -1;
    const char *addr = f->line + sizeof prefix - 1;
    snprintf(f->where, sizeof f->where, "%.*s", (int)(comma - addr), addr);
    const char *name = comma + strlen(", backend ");
    size_t n = strcspn(name, " ");
    snprintf(f->backend, sizeof f->backend, "%.*s", (int)n, name);
    const char *open = name[n] == ' ' && name[n + 1] == '(' ? name + n + 2 : NULL;
    size_t len = open ? strlen(open) : 0;
    if (open && len && open[len - 1] == ')')
        snprintf(f->report, sizeof f->report, "%.*s", (int)(len - 1), open);
    return 0;
}

/* Starts the server under the fixture's filter and reads its line. */
static void start_filtered_server(fixture_t *f, const deny_t *d, int avoid, const char *label)
{
    char *argv[12];
    server_argv(argv, d, avoid, NULL);
    assert_int_equal(proc_start(&f->srv, argv, 0), 0);
    int r = proc_read_line(&f->srv, f->line, sizeof f->line, LINE_TIMEOUT_MS);
    char err[4096];
    if (r < 0) {
        fprintf(stderr, "fallback: [%s] server gave no line (%s); stderr:\n%s\n", label,
                strerror(-r), proc_stderr(&f->srv, err, sizeof err));
        fail();
    }
    fprintf(stderr, "fallback: [%s] server line: %s\n", label, f->line);
    if (parse_line(f) < 0)
        fail_msg("unexpected server line: %s", f->line);
}

/* The server answers `iop-echo-client --check N`, then exits 0 on SIGTERM. */
static void check_serves_then_stops(fixture_t *f, const char *label, const char *count)
{
    char out[4096], err[4096];
    char *argv[] = { ECHO_CLIENT_PATH, "--check", (char *)count, f->where, NULL };
    int st = proc_run(argv, NULL, 0, out, sizeof out, err, sizeof err, RUN_TIMEOUT_MS);
    int ok = st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    fprintf(stderr, "fallback: [%s] iop-echo-client --check %s %s: %s\n", label, count, f->where,
            ok ? "exit 0" : "FAILED");
    if (!ok)
        fprintf(stderr, "fallback: client wait status %d\nstdout: %s\nstderr: %s\n", st, out, err);
    assert_true(ok);

    assert_int_equal(kill(f->srv.pid, SIGTERM), 0);
    int r = proc_wait(&f->srv, STOP_TIMEOUT_MS);
    if (r < 0 || !WIFEXITED(f->srv.status) || WEXITSTATUS(f->srv.status) != 0)
        fprintf(stderr, "fallback: [%s] server did not exit 0 on SIGTERM (%s, status 0x%x); stderr:\n%s\n",
                label, r < 0 ? strerror(-r) : "exited", (unsigned)f->srv.status,
                proc_stderr(&f->srv, err, sizeof err));
    assert_int_equal(r, 0);
    assert_true(WIFEXITED(f->srv.status));
    assert_int_equal(WEXITSTATUS(f->srv.status), 0);
    fprintf(stderr, "fallback: [%s] SIGTERM: server exited 0\n", label);
}

/* The reason io_uring_setup failed, as the uring backend words it. */
static void reason_for(const deny_t *d, char *buf, size_t len)
{
    snprintf(buf, len, "io_uring_setup: %s", strerror(d->err));
}

/* 1. No backend named: auto passes uring over, says why, and serves on epoll. */
static void test_auto_passes_over_uring(void **state)
{
    SKIP_WITHOUT_SECCOMP();
    fixture_t *f = *state;
    char label[64], reason[128];
    snprintf(label, sizeof label, "auto, io_uring_setup -> %s", f->deny->name);
    reason_for(f->deny, reason, sizeof reason);
    start_filtered_server(f, f->deny, 0, label);

    assert_string_equal(f->backend, "epoll");
    assert_true(strncmp(f->report, "auto: took epoll", strlen("auto: took epoll")) == 0);
    const char *uring = strstr(f->report, "passed over uring (");
    if (!uring || !strstr(uring, reason))
        fail_msg("report does not pass uring over with \"%s\": %s", reason, f->report);
    fprintf(stderr, "fallback: [%s] uring passed over: %s\n", label, uring + strlen("passed over "));
    check_serves_then_stops(f, label, "50");
}

/* 2. --backend uring: exit 2, no listening line, the reason on stderr. */
static void test_named_uring_fails(void **state)
{
    SKIP_WITHOUT_SECCOMP();
    fixture_t *f = *state;
    char label[64], reason[128], out[4096], err[4096];
    snprintf(label, sizeof label, "--backend uring, io_uring_setup -> %s", f->deny->name);
    reason_for(f->deny, reason, sizeof reason);
    char *argv[12];
    server_argv(argv, f->deny, 0, "uring");
    int st = proc_run(argv, NULL, 0, out, sizeof out, err, sizeof err, EXIT_TIMEOUT_MS);
    err[strcspn(err, "\n")] = '\0';
    fprintf(stderr, "fallback: [%s] wait status 0x%x, stdout \"%s\", stderr: %s\n", label,
            (unsigned)st, out, err);
    assert_true(st >= 0 && WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 2);
    assert_null(strstr(out, "listening"));
    assert_non_null(strstr(err, "iop-echo-server: cannot start the event loop: "));
    if (!strstr(err, reason))
        fail_msg("stderr does not give \"%s\": %s", reason, err);
}

/* The kill filter bites: a server that probes uring under it dies of SIGSYS. Without
 * this, test_avoid_never_probes_uring could pass with a filter that does nothing. */
static void test_kill_filter_kills_a_probe(void **state)
{
    SKIP_WITHOUT_SECCOMP();
    skip_without_kill_process();
    (void)state;
    char out[4096], err[4096];
    char *argv[12];
    server_argv(argv, &deny_kill, 0, NULL);
    int st = proc_run(argv, NULL, 0, out, sizeof out, err, sizeof err, EXIT_TIMEOUT_MS);
    fprintf(stderr, "fallback: [auto, io_uring_setup -> kill] wait status 0x%x (%s %d), stdout \"%s\"\n",
            (unsigned)st, st >= 0 && WIFSIGNALED(st) ? "signal" : "not signalled",
            st >= 0 && WIFSIGNALED(st) ? WTERMSIG(st) : -1, out);
    assert_true(st >= 0 && WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGSYS);
    assert_null(strstr(out, "listening"));
}

/* 3. IOPLEX_BACKEND_AVOID=uring under the kill filter: auto never touches uring. */
static void test_avoid_never_probes_uring(void **state)
{
    SKIP_WITHOUT_SECCOMP();
    skip_without_kill_process();
    fixture_t *f = *state;
    const char *label = "IOPLEX_BACKEND_AVOID=uring, io_uring_setup -> kill";
    start_filtered_server(f, &deny_kill, 1, label);
    assert_string_equal(f->backend, "epoll");
    assert_non_null(strstr(f->report, "auto: took epoll"));
    if (!strstr(f->report, "uring (skipped: in IOPLEX_BACKEND_AVOID)"))
        fail_msg("report does not say uring was avoided: %s", f->report);
    check_serves_then_stops(f, label, "20");
}

/* iop-plugins lists and probes every backend: with IOPLEX_BACKEND_AVOID=uring it must
 * not probe uring either, or a sandbox that kills on io_uring_setup kills the lister
 * (it died of SIGSYS with no output). */
static void test_plugins_list_avoids_uring(void **state)
{
    SKIP_WITHOUT_SECCOMP();
    skip_without_kill_process();
    (void)state;
    char out[16384], err[4096];
    char *argv[] = { self_path, "--filtered", "kill", "--avoid-uring", PLUGINS_PATH, NULL };
    int st = proc_run(argv, NULL, 0, out, sizeof out, err, sizeof err, EXIT_TIMEOUT_MS);
    if (!(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0))
        fail_msg("iop-plugins: wait status 0x%x\nstdout: %s\nstderr: %s", (unsigned)st, out, err);
    assert_non_null(strstr(out, "not probed (in IOPLEX_BACKEND_AVOID)"));
    assert_non_null(strstr(out, "auto would take: epoll"));
}

/* ---- the library in a forked child -------------------------------------------------- */

/* In the child: the filter, then iop_loop_create with "uring" and with NULL. One
 * line per result goes to fd: "filter RC WHAT", "named RC ERROR", "auto RC NAME REPORT". */
static void library_child(const deny_t *d, int fd)
{
    const char *what = "";
    int r = install_filter(d->action, &what);
    dprintf(fd, "filter %d %s\n", r, what);
    if (r < 0)
        _exit(1);
    iop_loop_t *loop = NULL;
    iop_loop_opts_t opts = { .size = sizeof opts, .backend = "uring" };
    r = iop_loop_create(&loop, &opts);
    dprintf(fd, "named %d %s\n", r, r < 0 ? iop_last_error() : iop_loop_backend(loop));
    if (r == 0)
        iop_loop_destroy(loop);
    loop = NULL;
    r = iop_loop_create(&loop, NULL);
    if (r < 0)
        dprintf(fd, "auto %d - %s\n", r, iop_last_error());
    else
        dprintf(fd, "auto %d %s %s\n", r, iop_loop_backend(loop), iop_loop_backend_report(loop));
    if (r == 0)
        iop_loop_destroy(loop);
    _exit(0);
}

/* Reads "KEY RC REST" from the child; returns REST and sets *rc. */
static const char *read_result(proc_t *p, const char *key, char *line, size_t len, long *rc)
{
    int n = proc_read_line(p, line, len, LINE_TIMEOUT_MS);
    if (n < 0)
        fail_msg("the library child gave no \"%s\" line (%s)", key, strerror(-n));
    size_t k = strlen(key);
    if (strncmp(line, key, k) != 0 || line[k] != ' ')
        fail_msg("expected a \"%s\" line, got: %s", key, line);
    char *rest;
    *rc = strtol(line + k + 1, &rest, 10);
    return *rest == ' ' ? rest + 1 : rest;
}

/* 4. The library itself: a named uring fails with the errno and says io_uring_setup;
 *    no name gets epoll. */
static void test_library_falls_back(void **state)
{
    SKIP_WITHOUT_SECCOMP();
    fixture_t *f = *state;
    char label[64], reason[128], line[2048];
    snprintf(label, sizeof label, "library, io_uring_setup -> %s", f->deny->name);
    reason_for(f->deny, reason, sizeof reason);
    int pfd[2];
    assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
    fflush(NULL);   /* nothing buffered may be written twice */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        library_child(f->deny, pfd[1]);
    }
    close(pfd[1]);
    f->srv = (proc_t){ .pid = pid, .out_fd = pfd[0], .err_fd = -1 };

    long rc;
    const char *rest = read_result(&f->srv, "filter", line, sizeof line, &rc);
    if (rc != 0)
        fail_msg("the filter did not install in the child: %s: %s", rest, strerror((int)-rc));

    rest = read_result(&f->srv, "named", line, sizeof line, &rc);
    fprintf(stderr, "fallback: [%s] iop_loop_create(\"uring\") = %ld (%s): %s\n", label, rc,
            rc < 0 ? strerror((int)-rc) : "ok", rest);
    assert_int_equal(rc, -f->deny->err);
    assert_non_null(strstr(rest, "io_uring_setup"));
    if (!strstr(rest, reason))
        fail_msg("iop_last_error() does not give \"%s\": %s", reason, rest);

    rest = read_result(&f->srv, "auto", line, sizeof line, &rc);
    fprintf(stderr, "fallback: [%s] iop_loop_create(NULL) = %ld, backend %s\n", label, rc, rest);
    assert_int_equal(rc, 0);
    assert_true(strncmp(rest, "epoll auto: took epoll", strlen("epoll auto: took epoll")) == 0);
    const char *uring = strstr(rest, "passed over uring (");
    if (!uring || !strstr(uring, reason))
        fail_msg("auto's report does not pass uring over with \"%s\": %s", reason, rest);

    assert_int_equal(proc_wait(&f->srv, EXIT_TIMEOUT_MS), 0);
    assert_true(WIFEXITED(f->srv.status));
    assert_int_equal(WEXITSTATUS(f->srv.status), 0);
}

/* The caps of a uring loop made here; skips the test where io_uring is missing. */
static uint32_t uring_caps_or_skip(void)
{
    iop_loop_t *probe = NULL;
    iop_loop_opts_t popts = { .size = sizeof popts, .backend = "uring" };
    if (iop_loop_create(&probe, &popts) < 0)
        skip();                   /* no io_uring here at all */
    uint32_t caps = iop_loop_caps(probe);
    iop_loop_destroy(probe);
    return caps;
}

/* 4b. A policy that allows io_uring_setup but denies the calls after it: auto
 *     passes over uring with the call that failed (it took uring, whose first
 *     wait then failed with EPERM, when only io_uring_enter was denied). */
static void later_refusal_child(int nr, uint32_t arg1, int fd)
{
    const char *what = "";
    int r = install_filter_on(nr, arg1, SECCOMP_RET_ERRNO | EPERM, &what);
    dprintf(fd, "filter %d %s\n", r, what);
    if (r < 0)
        _exit(1);
    iop_loop_t *loop = NULL;
    r = iop_loop_create(&loop, NULL);
    if (r < 0) {
        dprintf(fd, "auto %d - %s\n", r, iop_last_error());
        _exit(0);
    }
    dprintf(fd, "auto %d %s %s\n", r, iop_loop_backend(loop), iop_loop_backend_report(loop));
    iop_loop_destroy(loop);
    _exit(0);
}

static void expect_passed_over(int nr, uint32_t arg1, const char *reason)
{
    int pfd[2];
    assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        later_refusal_child(nr, arg1, pfd[1]);
    }
    close(pfd[1]);
    proc_t p = { .pid = pid, .out_fd = pfd[0], .err_fd = -1 };
    char line[2048];
    long rc;
    const char *rest = read_result(&p, "filter", line, sizeof line, &rc);
    if (rc != 0)
        fail_msg("the filter did not install in the child: %s: %s", rest, strerror((int)-rc));
    rest = read_result(&p, "auto", line, sizeof line, &rc);
    fprintf(stderr, "fallback: [%s denied] iop_loop_create(NULL) = %ld, backend %s\n", reason, rc, rest);
    assert_int_equal(rc, 0);
    assert_true(strncmp(rest, "epoll auto: took epoll", strlen("epoll auto: took epoll")) == 0);
    const char *uring = strstr(rest, "passed over uring (");
    if (!uring || !strstr(uring, reason) || !strstr(uring, "Operation not permitted"))
        fail_msg("auto's report does not pass uring over with \"%s\": %s", reason, rest);
    assert_int_equal(proc_wait(&p, EXIT_TIMEOUT_MS), 0);
    assert_true(WIFEXITED(p.status));
    assert_int_equal(WEXITSTATUS(p.status), 0);
    close(pfd[0]);
}

static void test_later_calls_denied(void **state)
{
    (void)state;
    SKIP_WITHOUT_SECCOMP();
    (void)uring_caps_or_skip();
    expect_passed_over(__NR_io_uring_enter, ANY_ARG, "io_uring_enter");
    expect_passed_over(__NR_io_uring_register, REGISTER_PROBE, "IORING_REGISTER_PROBE");
}

/* ---- provided buffers refused -------------------------------------------------------- */

static void pool_recv_cb(iop_op_t *op, int res)
{
    int *out = op->data;
    *out = res;
}

/* A connected loopback TCP pair: fds[0] the client, fds[1] the accepted side. */
static int loopback_pair(int fds[2])
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t alen = sizeof a;
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1) < 0 ||
        getsockname(l, (struct sockaddr *)&a, &alen) < 0)
        return -errno;
    fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fds[0] < 0 || connect(fds[0], (struct sockaddr *)&a, sizeof a) < 0)
        return -errno;
    fds[1] = accept4(l, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    close(l);
    return fds[1] < 0 ? -errno : 0;
}

/* In the child: a filter failing io_uring_register(opcode) with ENOMEM (what a low
 * memlock limit does), then a uring loop with a receive pool, one recv_buf through
 * it, a registered buffer and a file read into it. Lines: "filter RC WHAT",
 * "loop RC NATIVE-POOL REPORT", "recv RES DATA", "bufs RC NATIVE-BUFS REPORT",
 * "read RES DATA". */
static void refusal_child(int fd, uint32_t opcode)
{
    const char *what = "";
    int r = install_filter_on(__NR_io_uring_register, opcode, SECCOMP_RET_ERRNO | ENOMEM, &what);
    dprintf(fd, "filter %d %s\n", r, what);
    if (r < 0)
        _exit(1);
    iop_loop_t *loop = NULL;
    iop_loop_opts_t opts = { .size = sizeof opts, .backend = "uring", .buf_count = 8, .buf_size = 256 };
    r = iop_loop_create(&loop, &opts);
    if (r < 0) {
        dprintf(fd, "loop %d - %s\n", r, iop_last_error());
        _exit(1);
    }
    dprintf(fd, "loop 0 %d %s\n", (iop_loop_caps(loop) & IOP_CAP_PROVIDED_BUFFERS) != 0,
            iop_loop_backend_report(loop));
    int s[2] = { -1, -1 }, res = 1;
    if ((r = loopback_pair(s)) < 0) {
        dprintf(fd, "recv %d loopback pair\n", r);
        _exit(1);
    }
    iop_op_t op;
    iop_prep_recv_buf(&op, s[1], 0, pool_recv_cb, &res);
    r = iop_submit(loop, &op);
    if (r == 0 && send(s[0], "pooled bytes", 12, 0) != 12)
        r = -errno;
    while (r == 0 && res == 1 && (r = iop_loop_run(loop, IOP_RUN_ONCE)) >= 0)
        r = 0;
    if (r < 0)
        dprintf(fd, "recv %d -\n", r);
    else
        dprintf(fd, "recv %d %.*s\n", res, res > 0 ? res : 0, (const char *)op.u.pooled.buf);
    if (res > 0)
        iop_buf_release(loop, op.u.pooled.bid);

    static char reg[4096];
    struct iovec iov = { reg, sizeof reg };
    r = iop_buf_register(loop, &iov, 1);
    dprintf(fd, "bufs %d %d %s\n", r, (iop_loop_caps(loop) & IOP_CAP_REGISTERED_BUFFERS) != 0,
            iop_loop_backend_report(loop));
    char path[] = "/tmp/ioplex-fallback-XXXXXX";
    int file = mkostemp(path, O_CLOEXEC);
    res = 1;
    if (file < 0 || unlink(path) < 0 || pwrite(file, "file bytes", 10, 0) != 10)
        r = -errno;
    else {
        iop_prep_read(&op, file, reg + 100, 200, 0, pool_recv_cb, &res);
        iop_op_set_fixed_buf(&op, 0);
        r = iop_submit(loop, &op);
    }
    while (r == 0 && res == 1 && (r = iop_loop_run(loop, IOP_RUN_ONCE)) >= 0)
        r = 0;
    dprintf(fd, "read %d %.*s\n", r < 0 ? r : res, res > 0 ? res : 0, reg + 100);
    close(file);
    close(s[0]);
    close(s[1]);
    iop_loop_destroy(loop);
    _exit(0);
}

/* Runs refusal_child with opcode refused; reads its lines into the five strings
 * (each line[5][512], "" where none came) and checks its exit. */
static void run_refusal_child(uint32_t opcode, char lines[5][512])
{
    int pfd[2];
    assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        refusal_child(pfd[1], opcode);
    }
    close(pfd[1]);
    proc_t p = { .pid = pid, .out_fd = pfd[0], .err_fd = -1 };
    static const char *const keys[5] = { "filter", "loop", "recv", "bufs", "read" };
    char line[2048];
    for (int i = 0; i < 5; i++) {
        long rc;
        const char *rest = read_result(&p, keys[i], line, sizeof line, &rc);
        if (i == 0 && rc != 0)
            fail_msg("the filter did not install in the child: %s: %s", rest, strerror((int)-rc));
        snprintf(lines[i], 512, "%ld %s", rc, rest);
        fprintf(stderr, "fallback: [io_uring_register opcode %u -> ENOMEM] %s %s\n", opcode, keys[i], lines[i]);
    }
    assert_int_equal(proc_wait(&p, EXIT_TIMEOUT_MS), 0);
    assert_true(WIFEXITED(p.status));
    assert_int_equal(WEXITSTATUS(p.status), 0);
    close(pfd[0]);
}

/* Skips unless this kernel gives uring loops both provided buffers and registered
 * buffers (so that a refusal shows) and seccomp filters work. */
static void skip_without_both(void)
{
    uint32_t caps = uring_caps_or_skip();
    if (!(caps & IOP_CAP_PROVIDED_BUFFERS) || !(caps & IOP_CAP_REGISTERED_BUFFERS)) {
        fprintf(stderr, "fallback: this kernel lacks provided-buffer rings or registered buffers: skipped\n");
        skip();
    }
}

/* 5. The kernel refuses the provided-buffer ring: the loop still serves recv_buf
 *    (from the core's pool), and its caps and report say the backend does not. */
static void test_provided_buffers_refused(void **state)
{
    (void)state;
    SKIP_WITHOUT_SECCOMP();
    skip_without_both();
    char l[5][512];
    run_refusal_child(REGISTER_PBUF_RING, l);
    assert_true(strncmp(l[1], "0 0 ", 4) == 0);   /* the cap is cleared */
    assert_non_null(strstr(l[1], "provided buffers refused (Cannot allocate memory)"));
    assert_string_equal(l[2], "12 pooled bytes");
    assert_true(strncmp(l[3], "1 1 ", 4) == 0);   /* registered buffers unaffected */
    assert_string_equal(l[4], "10 file bytes");
}

/* 6. The kernel refuses registered buffers: iop_buf_register says 0, ops naming
 *    them run as plain ones, the caps and report say so. */
static void test_registered_buffers_refused(void **state)
{
    (void)state;
    SKIP_WITHOUT_SECCOMP();
    skip_without_both();
    char l[5][512];
    run_refusal_child(REGISTER_BUFFERS, l);
    assert_true(strncmp(l[1], "0 1 ", 4) == 0);   /* provided buffers unaffected */
    assert_string_equal(l[2], "12 pooled bytes");
    assert_true(strncmp(l[3], "0 0 ", 4) == 0);
    assert_non_null(strstr(l[3], "registered buffers refused (Cannot allocate memory)"));
    assert_string_equal(l[4], "10 file bytes");
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "--filtered") == 0)
        return wrapper_main(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    ssize_t n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
    if (n <= 0 || (size_t)n >= sizeof self_path - 1) {
        fprintf(stderr, "fallback: cannot find this binary: %s\n", strerror(errno));
        return 1;
    }
    self_path[n] = '\0';
    /* Whatever the caller's environment says, the servers choose for themselves and
     * the client is not steered onto a filtered-out backend. */
    unsetenv("IOPLEX_BACKEND");
    unsetenv("IOPLEX_BACKEND_AVOID");

    /* Named by what they deny, since most run twice (EPERM and ENOSYS). */
#define FALLBACK_TEST(fn, mode) \
    { .name = #fn " (" #mode ")", .test_func = fn, .setup_func = setup, \
      .teardown_func = teardown, .initial_state = (void *)&deny_##mode }
    const struct CMUnitTest tests[] = {
        FALLBACK_TEST(test_auto_passes_over_uring, eperm),
        FALLBACK_TEST(test_auto_passes_over_uring, enosys),
        FALLBACK_TEST(test_named_uring_fails, eperm),
        FALLBACK_TEST(test_named_uring_fails, enosys),
        cmocka_unit_test(test_kill_filter_kills_a_probe),
        cmocka_unit_test(test_plugins_list_avoids_uring),
        FALLBACK_TEST(test_avoid_never_probes_uring, kill),
        FALLBACK_TEST(test_library_falls_back, eperm),
        FALLBACK_TEST(test_library_falls_back, enosys),
        cmocka_unit_test(test_later_calls_denied),
        cmocka_unit_test(test_provided_buffers_refused),
        cmocka_unit_test(test_registered_buffers_refused),
    };
    int failed = cmocka_run_group_tests_name("uring fallback under seccomp", tests, probe_seccomp, NULL);
    /* All skipped: ctest shows the test as not run rather than passed. */
    return failed == 0 && no_seccomp ? 77 : failed;
}
