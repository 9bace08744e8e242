/* The plugin loader, through the public API: iop_loop_create with an explicit backend,
 * $IOPLEX_BACKEND and auto; refusals of broken modules with the exact error and a
 * message naming the file; the search order; iop_backend_list.
 *
 * LOADER_MODULE_DIR holds testnull (works) and broken modules; LOADER_SHADOW_DIR holds
 * an epoll that works but is marked with IOP_CAP_SQPOLL, a poll with the wrong ABI and
 * a testnull marked with IOP_CAP_BUSY_POLL (see CMakeLists.txt). */
#include <elf.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "ioplex.h"

#define MODULES LOADER_MODULE_DIR
#define SHADOW LOADER_SHADOW_DIR
#define MARKER "IOPLEX_TEST_LOADED_SHADOW_EPOLL"

static iop_loop_opts_t opts_for(const char *backend, const char *plugin_path, const char *avoid)
{
    iop_loop_opts_t o = { .size = sizeof o, .backend = backend, .plugin_path = plugin_path,
                          .avoid = avoid };
    return o;
}

/* Creates a loop that must fail with err; returns iop_last_error(). */
static const char *create_fails(const char *backend, const char *plugin_path, const char *avoid, int err)
{
    iop_loop_opts_t o = opts_for(backend, plugin_path, avoid);
    iop_loop_t *loop = (iop_loop_t *)&o;   /* must be reset to NULL */
    int r = iop_loop_create(&loop, &o);
    if (r != err)
        print_error("backend %s: got %d (%s), want %d; message: %s\n", backend ? backend : "(auto)", r,
                    iop_strerror(r), err, iop_last_error());
    assert_int_equal(r, err);
    assert_null(loop);
    return iop_last_error();
}

static void assert_contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle))
        fail_msg("\"%s\"\n  does not contain \"%s\"", hay, needle);
}

/* A working module: the loop is made, runs one iteration, and says how it was chosen. */
static void test_good_module_runs(void **state)
{
    (void)state;
    iop_loop_opts_t o = opts_for("testnull", MODULES, NULL);
    iop_loop_t *loop = NULL;
    assert_int_equal(iop_loop_create(&loop, &o), 0);
    assert_non_null(loop);
    assert_string_equal(iop_loop_backend(loop), "testnull");
    assert_int_equal(iop_loop_caps(loop), IOP_CAP_UNLIMITED_FDS);
    assert_string_equal(iop_loop_backend_report(loop), "asked for");
    assert_true(iop_loop_run(loop, IOP_RUN_NOWAIT) >= 0);
    iop_loop_destroy(loop);
}

/* Each broken module is refused with its own error code, and the message names the
 * file and the reason. */
static void test_broken_modules_refused(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int err;
        const char *reason;
    } cases[] = {
        { "wrongabi", -EPROTO, "built for ABI 999, this ioplex speaks ABI 2" },
        { "nosym", -ENOEXEC, "no descriptor symbol 'iop_backend_descriptor'" },
        { "garbage", -ENOEXEC, "not a loadable module" },
        { "failprobe", -EPERM, "probe failed: test backend: disabled here on purpose" },
        { "failcreate", -EMFILE, "create failed: test backend: no instance today" },
        { "misnamed", -EPROTO, "descriptor names itself 'other', the file name says 'misnamed'" },
        { "nowatch", -EPROTO, "readiness backend without watch" },
        { "noreturn", -EPROTO, "buf_pool without buf_return" },
        { "shortdesc", -EPROTO, "descriptor claims" },
    };
    static const char *const markers[] = { "IOPLEX_TEST_LOADED_WRONGABI", "IOPLEX_TEST_LOADED_NOSYM",
                                           "IOPLEX_TEST_LOADED_MISNAMED" };
    for (size_t i = 0; i < sizeof markers / sizeof *markers; i++)
        unsetenv(markers[i]);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char file[512];
        snprintf(file, sizeof file, MODULES "/iop_backend_%s.so", cases[i].name);
        const char *msg = create_fails(cases[i].name, MODULES, NULL, cases[i].err);
        assert_contains(msg, file);
        assert_contains(msg, cases[i].reason);
        assert_null(strchr(msg, '\n'));
    }
    /* A wrong ABI and a missing descriptor are seen in the file: none of the
     * module's code ran (its constructor sets the marker). A wrong name is only seen
     * in the loaded descriptor, so that module's constructor did run. */
    assert_null(getenv(markers[0]));
    assert_null(getenv(markers[1]));
    assert_non_null(getenv(markers[2]));
    unsetenv(markers[2]);
    /* The dynamic linker's reason, not libltdl's blanket "file not found". */
    const char *msg = create_fails("garbage", MODULES, NULL, -ENOEXEC);
    assert_null(strstr(msg, "file not found"));
}

/* Files damaged or of the wrong kind, made here: each is refused with its reason (a
 * truncated module killed the process with SIGBUS inside dlopen, a FIFO blocked the
 * open for good), and a broken first entry is never passed over for a good one
 * later on the path. */
static void test_damaged_files(void **state)
{
    (void)state;
    char dir[] = "/tmp/iop-loader-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[512], src[512];
    snprintf(src, sizeof src, MODULES "/iop_backend_testnull.so");
    FILE *in = fopen(src, "rb");
    assert_non_null(in);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, in);
    fclose(in);
    assert_true(n > 4096);
    static const size_t cuts[] = { 600, 3000 };
    for (size_t i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/iop_backend_cut%zu.so", dir, i);
        FILE *out = fopen(path, "wb");
        assert_non_null(out);
        assert_int_equal(fwrite(buf, 1, cuts[i], out), cuts[i]);
        fclose(out);
    }
    /* Without section headers the file's symbols cannot be read before loading: a
     * good module still loads, and a wrong ABI is still refused, once loaded. */
    static const char *const unsectioned[] = { "testnull", "wrongabi" };
    for (size_t i = 0; i < 2; i++) {
        char from[512];
        snprintf(from, sizeof from, MODULES "/iop_backend_%s.so", unsectioned[i]);
        in = fopen(from, "rb");
        assert_non_null(in);
        static char mod[1 << 20];
        size_t len = fread(mod, 1, sizeof mod, in);
        fclose(in);
        ElfW(Ehdr) eh;
        memcpy(&eh, mod, sizeof eh);
        eh.e_shoff = 0;
        eh.e_shnum = 0;
        eh.e_shstrndx = 0;
        memcpy(mod, &eh, sizeof eh);
        snprintf(path, sizeof path, "%s/iop_backend_nosec%s.so", dir, unsectioned[i]);
        FILE *out = fopen(path, "wb");
        assert_non_null(out);
        assert_int_equal(fwrite(mod, 1, len, out), len);
        fclose(out);
    }
    snprintf(path, sizeof path, "%s/iop_backend_fifo.so", dir);
    assert_int_equal(mkfifo(path, 0600), 0);
    snprintf(path, sizeof path, "%s/iop_backend_adir.so", dir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof path, "%s/iop_backend_testnull.so", dir);
    assert_int_equal(symlink("/nonexistent-ioplex-module", path), 0);
    static const struct { const char *name, *reason; } cases[] = {
        { "cut0", "truncated" }, { "cut1", "truncated" }, { "fifo", "not a regular file" },
        { "adir", "a directory" }, { "testnull", "a symlink to nothing" },
    };
    char search[600];
    snprintf(search, sizeof search, "%s:" MODULES, dir);   /* a good testnull comes second */
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        iop_loop_opts_t o = opts_for(cases[i].name, search, NULL);
        iop_loop_t *loop = NULL;
        int r = iop_loop_create(&loop, &o);
        if (r >= 0)
            fail_msg("%s: loaded", cases[i].name);
        assert_contains(iop_last_error(), dir);
        assert_contains(iop_last_error(), cases[i].reason);
    }
    /* The descriptors name themselves testnull / wrongabi, not nosec...: the
     * loaded module is checked, and says so. */
    unsetenv("IOPLEX_TEST_LOADED_WRONGABI");
    static const struct { const char *name, *reason; } loaded[] = {
        { "nosectestnull", "descriptor names itself 'testnull'" },
        { "nosecwrongabi", "built for ABI 999" },
    };
    for (size_t i = 0; i < 2; i++) {
        iop_loop_opts_t o = opts_for(loaded[i].name, search, NULL);
        iop_loop_t *loop = NULL;
        if (iop_loop_create(&loop, &o) >= 0)
            fail_msg("%s: loaded", loaded[i].name);
        assert_contains(iop_last_error(), loaded[i].reason);
    }
    assert_non_null(getenv("IOPLEX_TEST_LOADED_WRONGABI"));   /* it had to be loaded to tell */
    unsetenv("IOPLEX_TEST_LOADED_WRONGABI");
    snprintf(path, sizeof path, "rm -rf '%s'", dir);
    assert_int_equal(system(path), 0);
}

/* An unknown name says where it looked and what there is instead. */
static void test_unknown_name_lists_available(void **state)
{
    (void)state;
    const char *msg = create_fails("nosuch", MODULES, NULL, -ENOENT);
    assert_contains(msg, "no backend 'nosuch' (looked in: " MODULES ", ");
    assert_contains(msg, LOADER_BUILD_BACKEND_DIR);
    assert_contains(msg, "available: ");
    const char *avail = strstr(msg, "available: ");
    assert_contains(avail, "epoll");       /* from the build tree */
    assert_contains(avail, "testnull");    /* from the caller's dir */
    assert_contains(avail, "wrongabi");    /* present, even if it would be refused */

    assert_null(strstr(msg, MODULES " (missing)"));

    /* A mistyped dir is flagged, as is a file given as a dir. */
    msg = create_fails("nosuch", "/nonexistent-ioplex-dir:" MODULES "/iop_backend_testnull.so", NULL, -ENOENT);
    assert_contains(msg, "/nonexistent-ioplex-dir (missing), ");
    assert_contains(msg, MODULES "/iop_backend_testnull.so (not a directory), ");

    /* A name that is not a plain word never becomes a file name. */
    msg = create_fails("../modules/iop_backend_testnull", MODULES, NULL, -EINVAL);
    assert_contains(msg, "invalid backend name");
}

/* The caller's dirs come first (in their order), then $IOPLEX_PLUGIN_PATH, then the
 * build tree; the first file of a name is used even when it is broken. */
static void test_search_order(void **state)
{
    (void)state;
    iop_loop_t *loop = NULL;
    iop_loop_opts_t o = opts_for("testnull", SHADOW ":" MODULES, NULL);
    assert_int_equal(iop_loop_create(&loop, &o), 0);
    assert_int_equal(iop_loop_caps(loop), IOP_CAP_BUSY_POLL);
    iop_loop_destroy(loop);

    o.plugin_path = MODULES ":" SHADOW;
    assert_int_equal(iop_loop_create(&loop, &o), 0);
    assert_int_equal(iop_loop_caps(loop), IOP_CAP_UNLIMITED_FDS);
    iop_loop_destroy(loop);

    /* The caller's epoll shadows the build tree's. */
    o = opts_for("epoll", SHADOW, NULL);
    assert_int_equal(iop_loop_create(&loop, &o), 0);
    assert_int_equal(iop_loop_caps(loop), IOP_CAP_SQPOLL);
    iop_loop_destroy(loop);
    o.plugin_path = NULL;
    assert_int_equal(iop_loop_create(&loop, &o), 0);
    assert_true(iop_loop_caps(loop) & IOP_CAP_O1_POLL);   /* the real one */
    iop_loop_destroy(loop);

    /* A broken poll first on the path is refused, not replaced by the build tree's. */
    const char *msg = create_fails("poll", SHADOW, NULL, -EPROTO);
    assert_contains(msg, SHADOW "/iop_backend_poll.so: built for ABI 7, this ioplex speaks ABI 2");

    /* $IOPLEX_PLUGIN_PATH: after the caller's dirs, before the build tree. */
    assert_int_equal(setenv("IOPLEX_PLUGIN_PATH", SHADOW, 1), 0);
    o = opts_for("testnull", MODULES, NULL);
    assert_int_equal(iop_loop_create(&loop, &o), 0);
    assert_int_equal(iop_loop_caps(loop), IOP_CAP_UNLIMITED_FDS);
    iop_loop_destroy(loop);
    o = opts_for("epoll", NULL, NULL);
    assert_int_equal(iop_loop_create(&loop, &o), 0);
    assert_int_equal(iop_loop_caps(loop), IOP_CAP_SQPOLL);
    iop_loop_destroy(loop);
    unsetenv("IOPLEX_PLUGIN_PATH");

    char buf[8192];
    iop_plugin_search_path("/a::/b:/a", buf, sizeof buf);
    assert_contains(buf, "/a:/b:" LOADER_BUILD_BACKEND_DIR);
    assert_int_equal(strncmp(buf, "/a:/b:", 6), 0);
}

/* auto skips avoided names without opening their modules, passes over broken ones,
 * and says so. uring is avoided so the result does not depend on the kernel. */
static void test_auto_avoid(void **state)
{
    (void)state;
    iop_loop_t *loop = NULL;
    unsetenv(MARKER);
    iop_loop_opts_t o = opts_for(NULL, SHADOW, "uring, epoll ");
    assert_int_equal(iop_loop_create(&loop, &o), 0);
    assert_string_equal(iop_loop_backend(loop), "select");
    const char *report = iop_loop_backend_report(loop);
    assert_contains(report, "auto: took select; passed over ");
    assert_contains(report, "uring (skipped: in the avoid list)");
    assert_contains(report, "epoll (skipped: in the avoid list)");
    assert_contains(report, "poll (" SHADOW "/iop_backend_poll.so: built for ABI 7");
    assert_null(getenv(MARKER));   /* the avoided epoll module was never opened */
    iop_loop_destroy(loop);

    o.avoid = "uring";
    assert_int_equal(iop_loop_create(&loop, &o), 0);
    assert_string_equal(iop_loop_backend(loop), "epoll");
    assert_int_equal(iop_loop_caps(loop), IOP_CAP_SQPOLL);
    assert_string_equal(iop_loop_backend_report(loop),
                        "auto: took epoll; passed over uring (skipped: in the avoid list)");
    assert_non_null(getenv(MARKER));
    iop_loop_destroy(loop);
    unsetenv(MARKER);

    /* A name auto never tries avoids nothing: the report says so. */
    o.avoid = "urnig, uring,e poll";
    assert_int_equal(iop_loop_create(&loop, &o), 0);
    assert_string_equal(iop_loop_backend(loop), "epoll");
    assert_string_equal(iop_loop_backend_report(loop),
                        "auto: took epoll; passed over uring (skipped: in the avoid list); the avoid list: "
                        "'urnig', 'e poll' not in auto's order (" IOP_AUTO_ORDER ")");
    iop_loop_destroy(loop);
    unsetenv(MARKER);

    /* "auto" spelled out is the same as NULL. */
    o = opts_for("auto", MODULES, "uring");
    assert_int_equal(iop_loop_create(&loop, &o), 0);
    assert_string_equal(iop_loop_backend(loop), "epoll");
    iop_loop_destroy(loop);

    const char *msg = create_fails(NULL, MODULES, "uring,epoll,poll,select", -ENODEV);
    assert_contains(msg, "auto: no usable backend; passed over uring (skipped");
    assert_contains(msg, "select (skipped: in the avoid list)");
}

/* $IOPLEX_BACKEND_AVOID is read when opts.avoid is NULL, in a child so the test
 * process's environment stays as it was. */
static int child_env_avoid(void)
{
    alarm(10);   /* a stuck child dies rather than hanging the test */
    if (setenv("IOPLEX_BACKEND_AVOID", " uring , epoll", 1) != 0)
        return 10;
    unsetenv(MARKER);
    iop_loop_opts_t o = opts_for(NULL, SHADOW, NULL);
    iop_loop_t *loop = NULL;
    if (iop_loop_create(&loop, &o) != 0)
        return 11;
    const char *report = iop_loop_backend_report(loop);
    int bad = strcmp(iop_loop_backend(loop), "select") != 0 ? 12 :
              !strstr(report, "uring (skipped: in IOPLEX_BACKEND_AVOID)") ? 13 :
              !strstr(report, "epoll (skipped: in IOPLEX_BACKEND_AVOID)") ? 14 :
              getenv(MARKER) ? 15 : 0;
    iop_loop_destroy(loop);
    if (bad)
        return bad;
    o.avoid = "uring";   /* an explicit list replaces the variable */
    if (iop_loop_create(&loop, &o) != 0)
        return 16;
    bad = strcmp(iop_loop_backend(loop), "epoll") != 0 ? 17 : 0;
    iop_loop_destroy(loop);
    return bad;
}

static void test_auto_env_avoid(void **state)
{
    (void)state;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(child_env_avoid());
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* opts.backend > $IOPLEX_BACKEND > auto. */
static void test_explicit_beats_env(void **state)
{
    (void)state;
    iop_loop_t *loop = NULL;
    assert_int_equal(setenv("IOPLEX_BACKEND", "failprobe", 1), 0);

    iop_loop_opts_t o = opts_for("testnull", MODULES, NULL);
    assert_int_equal(iop_loop_create(&loop, &o), 0);
    assert_string_equal(iop_loop_backend_report(loop), "asked for");
    iop_loop_destroy(loop);

    const char *msg = create_fails(NULL, MODULES, NULL, -EPERM);
    assert_contains(msg, "IOPLEX_BACKEND: backend 'failprobe' refused: " MODULES "/iop_backend_failprobe.so");

    assert_int_equal(setenv("IOPLEX_BACKEND", "testnull", 1), 0);
    for (int i = 0; i < 2; i++) {   /* NULL, then "auto": both defer to the variable */
        o = opts_for(i ? "auto" : NULL, MODULES, NULL);
        assert_int_equal(iop_loop_create(&loop, &o), 0);
        assert_string_equal(iop_loop_backend(loop), "testnull");
        assert_string_equal(iop_loop_backend_report(loop), "asked for by IOPLEX_BACKEND");
        iop_loop_destroy(loop);
    }

    assert_int_equal(setenv("IOPLEX_BACKEND", "auto", 1), 0);
    o = opts_for(NULL, SHADOW, "uring");
    assert_int_equal(iop_loop_create(&loop, &o), 0);
    assert_contains(iop_loop_backend_report(loop), "auto: took epoll");
    iop_loop_destroy(loop);
    unsetenv("IOPLEX_BACKEND");
}

static const iop_backend_info_t *find_info(const iop_backend_info_t *list, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i].name, name) == 0)
            return &list[i];
    fail_msg("backend %s not listed", name);
    return NULL;
}

/* Every module on the path is listed once, sorted, with what went wrong. */
static void test_backend_list(void **state)
{
    (void)state;
    iop_backend_info_t *list = NULL;
    size_t n = 0;
    assert_int_equal(iop_backend_list(SHADOW ":" MODULES, &list, &n), 0);
    assert_non_null(list);
    assert_true(n >= 10);   /* 8 + epoll + poll from shadow/ (+ select from the build tree) */
    for (size_t i = 1; i < n; i++)
        assert_true(strcmp(list[i - 1].name, list[i].name) < 0);

    const iop_backend_info_t *e = find_info(list, n, "testnull");
    assert_string_equal(e->path, SHADOW "/iop_backend_testnull.so");
    assert_non_null(e->desc);
    assert_int_equal(e->desc->caps, IOP_CAP_BUSY_POLL);
    assert_int_equal(e->load_err, 0);
    assert_int_equal(e->probe_err, 0);

    e = find_info(list, n, "epoll");
    assert_string_equal(e->path, SHADOW "/iop_backend_epoll.so");
    e = find_info(list, n, "select");
    assert_string_equal(e->path, LOADER_BUILD_BACKEND_DIR "/iop_backend_select.so");
    assert_non_null(e->desc);
    assert_string_equal(e->desc->name, "select");

    static const struct {
        const char *name;
        int err;
        const char *reason;
    } refused[] = {
        { "poll", -EPROTO, "built for ABI 7, this ioplex speaks ABI 2" },
        { "wrongabi", -EPROTO, "built for ABI 999" },
        { "nosym", -ENOEXEC, "no descriptor symbol" },
        { "garbage", -ENOEXEC, "not a loadable module" },
        { "misnamed", -EPROTO, "names itself 'other'" },
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        e = find_info(list, n, refused[i].name);
        assert_null(e->desc);
        assert_int_equal(e->load_err, refused[i].err);
        assert_contains(e->why, refused[i].reason);
    }

    e = find_info(list, n, "failprobe");
    assert_non_null(e->desc);
    assert_int_equal(e->load_err, 0);
    assert_int_equal(e->probe_err, -EPERM);
    assert_string_equal(e->why, "test backend: disabled here on purpose");

    /* Listed modules stay loaded: their descriptors are readable until freed. */
    e = find_info(list, n, "failcreate");
    assert_string_equal(e->desc->summary, "loader test module");
    iop_backend_list_free(list);
    iop_backend_list_free(NULL);

    /* An empty path still lists the build tree's modules. */
    assert_int_equal(iop_backend_list(NULL, &list, &n), 0);
    assert_true(n >= 3);
    iop_backend_list_free(list);
}

/* Loops on several threads load and unload modules at once, while the modules are
 * listed (loaded and probed) too. Each io_uring ring is likely mapped where another
 * thread's was just unmapped (the uring backend tells ThreadSanitizer so). */
static void *churn(void *arg)
{
    const char *name = arg;
    for (int i = 0; i < 50; i++) {
        iop_loop_opts_t o = opts_for(name, MODULES, NULL);
        iop_loop_t *loop = NULL;
        if (iop_loop_create(&loop, &o) != 0)
            return (void *)1;
        iop_loop_destroy(loop);
        if (i % 10 == 0) {
            iop_backend_info_t *list = NULL;
            size_t n = 0;
            if (iop_backend_list(MODULES, &list, &n) != 0)
                return (void *)1;
            iop_backend_list_free(list);
        }
    }
    return NULL;
}

static void test_threads_share_loader(void **state)
{
    (void)state;
    static char *names[] = { "testnull", "poll", "uring", "select", "uring" };
    enum { N = sizeof names / sizeof names[0] };
    pthread_t t[N];
    for (int i = 0; i < N; i++)
        assert_int_equal(pthread_create(&t[i], NULL, churn, names[i]), 0);
    for (int i = 0; i < N; i++) {
        void *res = (void *)1;
        assert_int_equal(pthread_join(t[i], &res), 0);
        assert_null(res);
    }
}

/* A child forked while another thread creates loops makes its own loop. The
 * loader's lock was copied held by whichever thread was inside libltdl at the fork,
 * and the child, where that thread does not exist, waited for it for ever. */
static atomic_int fork_churn_stop;

static void *churn_until_stopped(void *arg)
{
    (void)arg;
    while (!atomic_load(&fork_churn_stop)) {
        iop_loop_opts_t o = opts_for("poll", MODULES, NULL);
        iop_loop_t *loop = NULL;
        if (iop_loop_create(&loop, &o) != 0)
            return (void *)1;
        iop_loop_destroy(loop);
    }
    return NULL;
}

static void test_fork_while_threads_load(void **state)
{
    (void)state;
    atomic_store(&fork_churn_stop, 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, churn_until_stopped, NULL), 0);
    int hung = 0, failed = 0;
    for (int i = 0; i < 40 && !hung && !failed; i++) {
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            alarm(10);   /* a child stuck on the lock dies of SIGALRM */
            iop_loop_opts_t o = opts_for("poll", MODULES, NULL);
            iop_loop_t *loop = NULL;
            _exit(iop_loop_create(&loop, &o) == 0 ? 0 : 1);
        }
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        hung = WIFSIGNALED(status);
        failed = WIFEXITED(status) && WEXITSTATUS(status) != 0;
    }
    atomic_store(&fork_churn_stop, 1);
    void *res = (void *)1;
    assert_int_equal(pthread_join(t, &res), 0);
    assert_null(res);
    assert_false(hung);
    assert_false(failed);
}

int main(void)
{
    /* The tests set what they need; nothing from the caller's shell may leak in. */
    unsetenv("IOPLEX_BACKEND");
    unsetenv("IOPLEX_BACKEND_AVOID");
    unsetenv("IOPLEX_PLUGIN_PATH");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_module_runs),
        cmocka_unit_test(test_broken_modules_refused),
        cmocka_unit_test(test_damaged_files),
        cmocka_unit_test(test_unknown_name_lists_available),
        cmocka_unit_test(test_search_order),
        cmocka_unit_test(test_auto_avoid),
        cmocka_unit_test(test_auto_env_avoid),
        cmocka_unit_test(test_explicit_beats_env),
        cmocka_unit_test(test_backend_list),
        cmocka_unit_test(test_threads_share_loader),
        cmocka_unit_test(test_fork_while_threads_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
