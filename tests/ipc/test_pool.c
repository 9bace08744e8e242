/* The process pool over real worker processes: results of apply_async, map order
 * over 1,000 items, a failing task reported as its result, a worker killed -9 or
 * crashing mid-task (that task fails, the others succeed, the worker is replaced),
 * max_tasks_per_worker, a failing initializer (a clear error and no endless
 * respawn), terminate with pending tasks, deadlines on waits, close/join, large
 * arguments and results. argv[1] = "plain" runs the pool without a loop (driven by
 * its own calls); a backend name runs it on a loop, waited on from coroutines.
 *
 * Every pool is freed in the teardown even when an assertion fails (its workers are
 * killed and reaped by pid); workers also die with the test process. */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "sched_test.h"
#include "ioplex/plock.h"
#include "ioplex/pool.h"
#include "ioplex/ppipe.h"
#include "ioplex/pqueue.h"
#include "ioplex/shdict.h"

static iop_pool_t *pool;
static int report_fds[2] = { -1, -1 };   /* tasks write their pid here */

static uint64_t after_ms(unsigned ms) { return tu_clock_ns() + (uint64_t)ms * 1000000u; }

static iop_pool_t *make_pool(uint32_t nworkers, uint32_t max_tasks, iop_loop_t *loop)
{
    iop_pool_opts_t o = { .size = sizeof o, .nworkers = nworkers, .max_tasks_per_worker = max_tasks,
                          .loop = loop };
    int r = iop_pool_create(&pool, &o);
    if (r < 0)
        fail_msg("iop_pool_create: %s: %s", iop_strerror(r), iop_last_error());
    return pool;
}

static int setup(void **state)
{
    (void)state;
    pool = NULL;
    assert_int_equal(pipe2(report_fds, O_CLOEXEC | O_NONBLOCK), 0);
    return st_setup(state);
}

static int teardown(void **state)
{
    iop_pool_free(pool);           /* kills and reaps whatever is left */
    pool = NULL;
    close(report_fds[0]);
    close(report_fds[1]);
    return st_teardown(state);
}

/* ---- tasks (run in the workers) ---------------------------------------------------------- */

static int square(const void *in, size_t len, iop_pool_out_t *out)
{
    int32_t x;
    if (len != sizeof x)
        return -EINVAL;
    memcpy(&x, in, sizeof x);
    int64_t y = (int64_t)x * x;
    return iop_pool_out_set(out, &y, sizeof y);
}

static int whoami(const void *in, size_t len, iop_pool_out_t *out)
{
    (void)in;
    (void)len;
    pid_t pid = getpid();
    return iop_pool_out_set(out, &pid, sizeof pid);
}

static int failing(const void *in, size_t len, iop_pool_out_t *out)
{
    (void)len;
    if (*(const char *)in == 'm')
        iop_pool_out_error(out, "no good: %d", 42);
    return -EDOM;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0)
        ;
}

/* Sleeps the number of ms given (at most 20 s: nothing waits for ever). */
static int sleeper(const void *in, size_t len, iop_pool_out_t *out)
{
    (void)out;
    uint32_t ms;
    if (len != sizeof ms)
        return -EINVAL;
    memcpy(&ms, in, sizeof ms);
    sleep_ms(ms < 20000 ? ms : 20000);
    return 0;
}

/* Writes its pid to the report pipe, then sleeps until killed (20 s at most). */
static int report_and_sleep(const void *in, size_t len, iop_pool_out_t *out)
{
    (void)in;
    (void)len;
    (void)out;
    pid_t pid = getpid();
    if (write(report_fds[1], &pid, sizeof pid) != sizeof pid)
        return -EIO;
    sleep_ms(20000);
    return 0;
}

static int segfault(const void *in, size_t len, iop_pool_out_t *out)
{
    (void)in;
    (void)len;
    (void)out;
    /* A real fault (not a null store a sanitizer would report first), with the
     * default action (not a sanitizer's handler that exits instead). */
    signal(SIGSEGV, SIG_DFL);
    volatile int *page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED)
        return -errno;
    *page = 1;
    return 0;
}

static int echo(const void *in, size_t len, iop_pool_out_t *out)
{
    return iop_pool_out_set(out, in, len);
}

static int grow(const void *in, size_t len, iop_pool_out_t *out)
{
    uint32_t n;
    memcpy(&n, in, sizeof n);
    (void)len;
    void *d = iop_pool_out_alloc(out, n);
    if (!d)
        return -ENOMEM;
    memset(d, 'g', n);
    return 0;
}

/* Calls the pool it runs in (its copy, in a worker forked after `pool` was set),
 * frees that copy, and reports what the call returned: the result must still come
 * back. */
static int use_own_pool(const void *in, size_t len, iop_pool_out_t *out)
{
    (void)in;
    (void)len;
    iop_future_t *f = (iop_future_t *)1;
    int32_t r = iop_pool_apply_async(pool, echo, "x", 1, &f);
    if (f != NULL)
        r = -EFAULT;               /* a future that could never complete */
    iop_pool_free(pool);
    pool = NULL;
    return iop_pool_out_set(out, &r, sizeof r);
}

static int refuse_init(void *arg, iop_pool_out_t *out)
{
    (void)arg;
    iop_pool_out_error(out, "no database at %s", "127.0.0.1:1");
    return -ECONNREFUSED;
}

/* ---- helpers ------------------------------------------------------------------------- */

static int64_t result_i64(iop_future_t *f)
{
    size_t len = 0;
    const void *r = iop_future_result(f, &len);
    assert_int_equal(len, sizeof(int64_t));
    int64_t v;
    memcpy(&v, r, sizeof v);
    return v;
}

static pid_t result_pid(iop_future_t *f)
{
    size_t len = 0;
    const void *r = iop_future_result(f, &len);
    assert_int_equal(len, sizeof(pid_t));
    pid_t v;
    memcpy(&v, r, sizeof v);
    return v;
}

static iop_future_t *apply(iop_pool_fn fn, const void *arg, size_t len)
{
    iop_future_t *f = NULL;
    int r = iop_pool_apply_async(pool, fn, arg, len, &f);
    if (r < 0)
        fail_msg("apply_async: %s: %s", iop_strerror(r), iop_last_error());
    return f;
}

static iop_future_t *apply_u32(iop_pool_fn fn, uint32_t v) { return apply(fn, &v, sizeof v); }

/* Waits (driving the pool) until a task has written its pid to the report pipe. */
static pid_t await_report(iop_future_t *driver)
{
    pid_t pid;
    uint64_t end = tu_clock_ms() + 10000;
    while (read(report_fds[0], &pid, sizeof pid) != sizeof pid) {
        if (tu_clock_ms() > end)
            fail_msg("no task reported its pid");
        assert_int_equal(iop_future_wait(driver, after_ms(10)), -ETIMEDOUT);
    }
    return pid;
}

static int has_pid(const pid_t *pids, int n, pid_t pid)
{
    for (int i = 0; i < n; i++)
        if (pids[i] == pid)
            return 1;
    return 0;
}

/* ---- plain code ------------------------------------------------------------------------ */

static void test_apply_async_results(void **state)
{
    (void)state;
    make_pool(2, 0, NULL);
    iop_future_t *f[20];
    for (int32_t i = 0; i < 20; i++)
        f[i] = apply(square, &i, sizeof i);
    for (int32_t i = 0; i < 20; i++) {
        assert_int_equal(iop_future_wait(f[i], after_ms(10000)), 0);
        assert_true(iop_future_done(f[i]));
        assert_int_equal(result_i64(f[i]), (int64_t)i * i);
        assert_string_equal(iop_future_error(f[i]), "");
        assert_true(iop_future_worker(f[i]) > 0);
        iop_future_free(f[i]);
    }
    iop_pool_info_t info;
    assert_int_equal(iop_pool_info(pool, &info, NULL, 0), 2);
    assert_int_equal(info.done, 20);
    assert_int_equal(info.lost, 0);
}

static void test_map_order_1000(void **state)
{
    (void)state;
    make_pool(2, 0, NULL);
    enum { N = 1000 };
    static int32_t in[N];
    static iop_future_t *out[N];
    for (int i = 0; i < N; i++)
        in[i] = i - 500;
    uint64_t t0 = tu_clock_ns();
    assert_int_equal(iop_pool_map(pool, square, in, sizeof in[0], N, out, after_ms(15000)), 0);
    uint64_t us = (tu_clock_ns() - t0) / 1000;
    for (int i = 0; i < N; i++) {
        assert_int_equal(result_i64(out[i]), (int64_t)in[i] * in[i]);
        iop_future_free(out[i]);
    }
    print_message("map of %d tasks on 2 workers: %llu us (%.1f us/task)\n", N,
                  (unsigned long long)us, (double)us / N);
}

static void test_failing_task_is_its_result(void **state)
{
    (void)state;
    make_pool(2, 0, NULL);
    iop_future_t *bad = apply(failing, "m", 1), *plain_bad = apply(failing, "-", 1);
    int32_t seven = 7;
    iop_future_t *good = apply(square, &seven, sizeof seven);
    assert_int_equal(iop_future_wait(bad, after_ms(10000)), -EDOM);
    assert_string_equal(iop_future_error(bad), "no good: 42");
    size_t len = 1;
    assert_null(iop_future_result(bad, &len));
    assert_int_equal(len, 0);
    assert_int_equal(iop_future_wait(plain_bad, after_ms(10000)), -EDOM);
    assert_string_equal(iop_future_error(plain_bad), iop_strerror(-EDOM));
    assert_int_equal(iop_future_wait(good, after_ms(10000)), 0);
    assert_int_equal(result_i64(good), 49);
    iop_pool_info_t info;
    iop_pool_info(pool, &info, NULL, 0);
    assert_int_equal(info.lost, 0);    /* a failure is a result, not a crash */
    iop_future_free(bad);
    iop_future_free(plain_bad);
    iop_future_free(good);
}

/* kill -9 of the worker running a task: that task fails with -ECHILD naming the
 * signal, the others succeed, the worker is replaced. */
static void test_worker_killed_mid_task(void **state)
{
    (void)state;
    make_pool(2, 0, NULL);
    iop_future_t *victim = apply(report_and_sleep, NULL, 0);
    pid_t pid = await_report(victim);
    assert_int_equal(iop_future_worker(victim), pid);
    iop_future_t *others[10];
    for (int32_t i = 0; i < 10; i++)
        others[i] = apply(square, &i, sizeof i);
    assert_true(pid > 1);          /* only ever the worker, by pid */
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(iop_future_wait(victim, after_ms(10000)), -ECHILD);
    assert_non_null(strstr(iop_future_error(victim), "signal 9"));
    for (int32_t i = 0; i < 10; i++) {
        assert_int_equal(iop_future_wait(others[i], after_ms(10000)), 0);
        assert_int_equal(result_i64(others[i]), (int64_t)i * i);
        iop_future_free(others[i]);
    }
    iop_future_free(victim);
    pid_t pids[4];
    iop_pool_info_t info;
    assert_int_equal(iop_pool_info(pool, &info, pids, 4), 2);
    assert_false(has_pid(pids, 2, pid));
    assert_int_equal(info.lost, 1);
    assert_int_equal(info.spawned, 3);
}

static void test_segfault_in_task(void **state)
{
    (void)state;
    make_pool(2, 0, NULL);
    iop_future_t *crash = apply(segfault, NULL, 0);
    int32_t three = 3;
    iop_future_t *ok = apply(square, &three, sizeof three);
    assert_int_equal(iop_future_wait(crash, after_ms(10000)), -ECHILD);
    assert_non_null(strstr(iop_future_error(crash), "signal 11"));
    assert_int_equal(iop_future_wait(ok, after_ms(10000)), 0);
    assert_int_equal(result_i64(ok), 9);
    iop_future_free(crash);
    iop_future_free(ok);
    /* the replacement works */
    iop_future_t *again = apply(square, &three, sizeof three);
    assert_int_equal(iop_future_wait(again, after_ms(10000)), 0);
    iop_future_free(again);
    assert_int_equal(iop_pool_info(pool, NULL, NULL, 0), 2);
}

/* Each worker retires after 2 tasks: 12 tasks see at least 6 different pids, none
 * more than twice. */
static void test_max_tasks_per_worker(void **state)
{
    (void)state;
    make_pool(2, 2, NULL);
    pid_t seen[12];
    for (int i = 0; i < 12; i++) {
        iop_future_t *f = apply(whoami, NULL, 0);
        assert_int_equal(iop_future_wait(f, after_ms(10000)), 0);
        seen[i] = result_pid(f);
        iop_future_free(f);
    }
    int distinct = 0;
    for (int i = 0; i < 12; i++) {
        int count = 0;
        for (int j = 0; j < 12; j++)
            count += seen[j] == seen[i];
        assert_true(count <= 2);
        distinct += !has_pid(seen, i, seen[i]);
    }
    assert_true(distinct >= 6);
    iop_pool_info_t info;
    iop_pool_info(pool, &info, NULL, 0);
    assert_true(info.spawned >= 6);
    assert_int_equal(info.lost, 0);
}

/* An initializer that always fails breaks the pool after 3 failed starts in a row:
 * the tasks fail with its error and message, nothing respawns any more. */
static void test_failing_initializer(void **state)
{
    (void)state;
    iop_pool_opts_t o = { .size = sizeof o, .nworkers = 2, .initializer = refuse_init };
    assert_int_equal(iop_pool_create(&pool, &o), 0);
    iop_future_t *f = apply(whoami, NULL, 0);
    assert_int_equal(iop_future_wait(f, after_ms(10000)), -ECONNREFUSED);
    assert_non_null(strstr(iop_future_error(f), "initializer failed"));
    assert_non_null(strstr(iop_future_error(f), "no database at 127.0.0.1:1"));
    iop_future_free(f);
    iop_pool_info_t info;
    assert_int_equal(iop_pool_info(pool, &info, NULL, 0), 0);
    assert_int_equal(info.broken, -ECONNREFUSED);
    uint64_t spawned = info.spawned;
    assert_true(spawned >= 3 && spawned <= 2 + 3);
    assert_int_equal(iop_pool_apply_async(pool, whoami, NULL, 0, &f), -ECONNREFUSED);
    assert_null(f);
    assert_non_null(strstr(iop_last_error(), "in a row"));
    tu_sleep_ms(200);
    iop_pool_close(pool);
    assert_int_equal(iop_pool_join(pool, after_ms(5000)), 0);
    iop_pool_info(pool, &info, NULL, 0);
    assert_int_equal(info.spawned, spawned);   /* no respawn since */
}

/* terminate fails every pending task at once and kills the workers. */
static void test_terminate_with_pending_tasks(void **state)
{
    (void)state;
    make_pool(2, 0, NULL);
    iop_future_t *f[10];
    for (int i = 0; i < 10; i++)
        f[i] = apply_u32(sleeper, 5000);
    pid_t pids[2];
    uint64_t end = tu_clock_ms() + 10000;
    while (!iop_future_worker(f[0]) || !iop_future_worker(f[1])) {
        assert_true(tu_clock_ms() < end);
        assert_int_equal(iop_future_wait(f[0], after_ms(10)), -ETIMEDOUT);
    }
    assert_int_equal(iop_pool_info(pool, NULL, pids, 2), 2);
    uint64_t t0 = tu_clock_ms();
    iop_pool_terminate(pool);
    for (int i = 0; i < 10; i++) {
        assert_true(iop_future_done(f[i]));
        assert_int_equal(iop_future_wait(f[i], 0), -ECANCELED);
        iop_future_free(f[i]);
    }
    assert_int_equal(iop_pool_join(pool, after_ms(5000)), 0);
    assert_true(tu_clock_ms() - t0 < 2000);
    for (int i = 0; i < 2; i++) {
        assert_true(pids[i] > 1);
        assert_int_equal(kill(pids[i], 0), -1);   /* gone and reaped */
    }
    iop_future_t *late;
    assert_int_equal(iop_pool_apply_async(pool, whoami, NULL, 0, &late), -EPIPE);
}

static void test_wait_deadline(void **state)
{
    (void)state;
    make_pool(1, 0, NULL);
    iop_future_t *f = apply_u32(sleeper, 400);
    uint64_t t0 = tu_clock_ms();
    assert_int_equal(iop_future_wait(f, after_ms(50)), -ETIMEDOUT);
    assert_true(tu_clock_ms() - t0 < 300);
    assert_false(iop_future_done(f));
    assert_int_equal(iop_future_wait(f, 0), 0);
    iop_future_free(f);
}

/* close: no new tasks, the queued ones still run; join waits for them and for the
 * workers' exit. */
/* Every call of the multi-process layer given a NULL handle: -EINVAL (or nothing,
 * for the ones that return nothing), never a crash. */
static void test_null_handles(void **state)
{
    (void)state;
    char buf[8];
    int fds[1], nfds = 0;
    iop_future_t *f = NULL;
    iop_pqueue_close(NULL);
    assert_int_equal(iop_pqueue_len(NULL), 0);
    iop_pqueue_forget(NULL, NULL);
    iop_pqueue_destroy(NULL);
    assert_int_equal(iop_pqueue_put(NULL, "x", 1, 0), -EINVAL);
    assert_int_equal(iop_ppipe_send(NULL, "x", 1, 0), -EINVAL);
    assert_int_equal(iop_ppipe_recv(NULL, buf, sizeof buf, 0), -EINVAL);
    assert_int_equal(iop_ppipe_recv_fds(NULL, buf, sizeof buf, fds, &nfds, 0), -EINVAL);
    assert_int_equal(iop_ppipe_peek(NULL, NULL, 0), -EINVAL);
    iop_ppipe_close(NULL);
    assert_int_equal(iop_plock_lock(NULL, 0), -EINVAL);
    assert_int_equal(iop_plock_trylock(NULL), -EINVAL);
    assert_int_equal(iop_plock_unlock(NULL), -EINVAL);
    iop_plock_fini(NULL);
    iop_plock_free(NULL);
    assert_int_equal(iop_shdict_len(NULL), -EINVAL);
    assert_int_equal(iop_shdict_set(NULL, "k", "v", 1), -EINVAL);
    assert_int_equal(iop_shdict_get(NULL, "k", buf, sizeof buf), -EINVAL);
    iop_shdict_stats_t st;
    assert_int_equal(iop_shdict_stats(NULL, &st), -EINVAL);
    iop_shdict_free(NULL);
    assert_int_equal(iop_pool_create(NULL, NULL), -EINVAL);
    assert_int_equal(iop_pool_apply_async(NULL, whoami, NULL, 0, &f), -EINVAL);
    assert_null(f);
    assert_int_equal(iop_pool_apply_async(NULL, whoami, NULL, 0, NULL), -EINVAL);
    assert_int_equal(iop_pool_map(NULL, whoami, NULL, 0, 1, NULL, 0), -EINVAL);
    iop_pool_close(NULL);
    iop_pool_terminate(NULL);
    assert_int_equal(iop_pool_join(NULL, 0), -EINVAL);
    iop_pool_info_t info;
    assert_int_equal(iop_pool_info(NULL, &info, NULL, 0), -EINVAL);
    assert_int_equal(iop_future_wait(NULL, 0), -EINVAL);
    iop_future_free(NULL);
    iop_pool_free(NULL);
}

#if TU_ASAN
/* Loses a block, then answers. */
static int leaking_task(const void *in, size_t len, iop_pool_out_t *out)
{
    (void)in;
    (void)len;
    char *volatile lost = malloc(48);
    if (lost)
        lost[0] = 1;
    lost = NULL;
    return iop_pool_out_set(out, "ok", 2);
}
#endif

/* A worker leaves with _exit, past the leak checker's atexit run: in an ASan build
 * it checks for leaks itself, and reports what a task lost, and only that (the
 * worker's own buffers are freed before it leaves). */
static void test_worker_leak_is_reported(void **state)
{
    (void)state;
#if TU_ASAN
    const char *opts = getenv("ASAN_OPTIONS");
    if (opts && strstr(opts, "detect_leaks=0"))
        skip();
    char path[] = "/tmp/ioplex-pool-leak-XXXXXX";
    int log = mkstemp(path);
    assert_true(log >= 0);
    unlink(path);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_int_equal(dup2(log, STDERR_FILENO), STDERR_FILENO);   /* the worker's stderr */
    make_pool(1, 0, NULL);
    iop_future_t *f = NULL;
    int r = iop_pool_apply_async(pool, leaking_task, NULL, 0, &f);
    if (r == 0)
        r = iop_future_wait(f, after_ms(10000));
    iop_future_free(f);
    iop_pool_close(pool);
    int j = iop_pool_join(pool, after_ms(10000));
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    assert_int_equal(r, 0);
    assert_int_equal(j, 0);
    char text[8192];
    ssize_t n = pread(log, text, sizeof text - 1, 0);
    close(log);
    assert_true(n >= 0);
    text[n] = '\0';
    fprintf(stderr, "# workers' stderr: %s\n", text);
    assert_non_null(strstr(text, "Direct leak of 48 byte(s) in 1 object(s)"));
    assert_non_null(strstr(text, "SUMMARY: AddressSanitizer: 48 byte(s) leaked in 1 allocation(s)"));
#else
    skip();                        /* no leak checker in this build */
#endif
}

static void test_close_then_join(void **state)
{
    (void)state;
    make_pool(2, 0, NULL);
    iop_future_t *f[6];
    for (int i = 0; i < 6; i++)
        f[i] = apply_u32(sleeper, 50);
    assert_int_equal(iop_pool_join(pool, 0), -EINVAL);
    iop_pool_close(pool);
    iop_future_t *late;
    assert_int_equal(iop_pool_apply_async(pool, whoami, NULL, 0, &late), -EPIPE);
    /* a map that cannot queue leaves out[] all NULL, for a caller that frees all */
    uint32_t in[4] = { 1, 2, 3, 4 };
    iop_future_t *out[4];
    memset(out, 0xab, sizeof out);
    assert_int_equal(iop_pool_map(pool, sleeper, in, sizeof in[0], 4, out, 0), -EPIPE);
    for (int i = 0; i < 4; i++)
        assert_null(out[i]);
    assert_int_equal(iop_pool_join(pool, after_ms(10000)), 0);
    for (int i = 0; i < 6; i++) {
        assert_true(iop_future_done(f[i]));
        assert_int_equal(iop_future_wait(f[i], 0), 0);
        iop_future_free(f[i]);
    }
    iop_pool_info_t info;
    assert_int_equal(iop_pool_info(pool, &info, NULL, 0), 0);
    assert_int_equal(info.lost, 0);
}

static void test_large_arguments_and_results(void **state)
{
    (void)state;
    make_pool(2, 0, NULL);
    size_t big = 1024 * 1024;
    uint8_t *buf = malloc(big);
    tu_fill_pattern(buf, big, 77);
    iop_future_t *f = apply(echo, buf, big);
    assert_int_equal(iop_future_wait(f, after_ms(10000)), 0);
    size_t len = 0;
    const void *r = iop_future_result(f, &len);
    assert_int_equal(len, big);
    assert_memory_equal(r, buf, big);
    iop_future_free(f);
    iop_future_t *too_big;
    assert_int_equal(iop_pool_apply_async(pool, echo, buf, big + 1, &too_big), -EMSGSIZE);
    uint32_t n = (uint32_t)big + 1;
    f = apply(grow, &n, sizeof n);
    assert_int_equal(iop_future_wait(f, after_ms(10000)), -EMSGSIZE);
    assert_non_null(strstr(iop_future_error(f), "max_msg"));
    iop_future_free(f);
    free(buf);
}

/* Futures dropped before they are done are freed by the pool (sanitizers check). */
/* A forked child holds a copy of the pool: its calls fail with -EPERM and freeing
 * it leaves the owner's workers, pipes and epoll set alone. Before, the child's
 * free killed the owner's workers and unregistered their fds from the shared epoll
 * set, so the owner waited for ever. A task calling its own pool is the same case. */
static void test_pool_copy_in_another_process(void **state)
{
    (void)state;
    make_pool(2, 1, NULL);         /* one task per worker: all but the first two see `pool` */
    iop_future_t *slow = apply_u32(sleeper, 300);
    int32_t six = 6;
    iop_future_t *first = apply(square, &six, sizeof six);   /* the other first worker */
    assert_int_equal(iop_future_wait(first, after_ms(10000)), 0);
    iop_future_free(first);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        int bad = 0;
        iop_future_t *f = NULL;
        if (iop_pool_apply_async(pool, echo, "x", 1, &f) != -EPERM || f)
            bad |= 1;
        if (!strstr(iop_last_error(), "belongs to process"))
            bad |= 2;
        if (iop_future_wait(slow, 0) != -EPERM)
            bad |= 4;
        if (iop_pool_join(pool, 0) != -EPERM)
            bad |= 8;
        iop_pool_terminate(pool);
        iop_pool_free(pool);
        _exit(bad);
    }
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(iop_future_wait(slow, after_ms(10000)), 0);
    iop_future_free(slow);
    for (int i = 0; i < 4; i++) {
        iop_future_t *f = apply(use_own_pool, NULL, 0);
        assert_int_equal(iop_future_wait(f, after_ms(10000)), 0);
        size_t len = 0;
        const int32_t *r = iop_future_result(f, &len);
        assert_int_equal(len, sizeof *r);
        assert_int_equal(*r, -EPERM);
        iop_future_free(f);
    }
    int32_t seven = 7;
    iop_future_t *f = apply(square, &seven, sizeof seven);
    assert_int_equal(iop_future_wait(f, after_ms(10000)), 0);
    assert_int_equal(result_i64(f), 49);
    iop_future_free(f);
    iop_pool_info_t info;
    assert_true(iop_pool_info(pool, &info, NULL, 0) >= 0);   /* workers retire after a task */
    assert_int_equal(info.lost, 0);
    assert_int_equal(info.done, 7);
}

static void test_dropped_futures(void **state)
{
    (void)state;
    make_pool(2, 0, NULL);
    for (int i = 0; i < 8; i++)
        iop_future_free(apply_u32(sleeper, 20));
    iop_future_t *last = apply_u32(sleeper, 1);
    assert_int_equal(iop_future_wait(last, after_ms(10000)), 0);
    iop_future_free(last);
}

/* ---- on a loop, from coroutines ------------------------------------------------------------ */

static int ticks;
static void tick(iop_timer_t *t) { (void)t; ticks++; }

static void *coro_waiter(void *arg)
{
    (void)arg;
    iop_future_t *slow = NULL, *sq[10];
    uint32_t ms = 300;
    CHECK_EQ(iop_pool_apply_async(pool, sleeper, &ms, sizeof ms, &slow), 0);
    for (int32_t i = 0; i < 10; i++)
        CHECK_EQ(iop_pool_apply_async(pool, square, &i, sizeof i, &sq[i]), 0);
    int before = ticks;
    CHECK_EQ(iop_future_wait(slow, st_after_ms(10000)), 0);
    CHECK(ticks - before >= 10);   /* the loop ran while we waited */
    for (int32_t i = 0; i < 10; i++) {
        CHECK_EQ(iop_future_wait(sq[i], st_after_ms(10000)), 0);
        size_t len = 0;
        const int64_t *v = iop_future_result(sq[i], &len);
        CHECK(len == 8 && v && *v == (int64_t)i * i);
        iop_future_free(sq[i]);
    }
    iop_future_free(slow);
    /* a deadline on the wait */
    ms = 500;
    CHECK_EQ(iop_pool_apply_async(pool, sleeper, &ms, sizeof ms, &slow), 0);
    CHECK_EQ(iop_future_wait(slow, st_after_ms(50)), -ETIMEDOUT);
    CHECK(!iop_future_done(slow));
    iop_future_free(slow);         /* dropped while running */
    st_done++;
    return NULL;
}

static void test_coro_wait_keeps_the_loop_running(void **state)
{
    (void)state;
    make_pool(2, 0, st_loop);
    iop_timer_t t = { 0 };
    ticks = 0;
    assert_int_equal(iop_timer_start(st_loop, &t, 10 * MS, 10 * MS, tick), 0);
    st_go(coro_waiter, NULL, "waiter");
    st_run_until_done(1, 15000);
    iop_timer_stop(&t);
}

static void *coro_mapper(void *arg)
{
    (void)arg;
    enum { N = 300 };
    static int32_t in[N];
    static iop_future_t *out[N];
    for (int i = 0; i < N; i++)
        in[i] = i;
    CHECK_EQ(iop_pool_map(pool, square, in, sizeof in[0], N, out, st_after_ms(15000)), 0);
    for (int i = 0; i < N; i++) {
        size_t len = 0;
        const int64_t *v = iop_future_result(out[i], &len);
        CHECK(len == 8 && v && *v == (int64_t)i * i);
        iop_future_free(out[i]);
    }
    st_done++;
    return NULL;
}

static pid_t victim_pid;

static void *coro_victim(void *arg)
{
    (void)arg;
    iop_future_t *f = NULL;
    CHECK_EQ(iop_pool_apply_async(pool, report_and_sleep, NULL, 0, &f), 0);
    CHECK_EQ(iop_read(report_fds[0], &victim_pid, sizeof victim_pid, st_after_ms(10000)),
             sizeof victim_pid);
    CHECK(victim_pid > 1);
    if (victim_pid <= 1)           /* never kill(0) or kill(-1): only the worker, by pid */
        return NULL;
    CHECK_EQ(kill(victim_pid, SIGKILL), 0);
    CHECK_EQ(iop_future_wait(f, st_after_ms(10000)), -ECHILD);
    CHECK(strstr(iop_future_error(f), "signal 9") != NULL);
    iop_future_free(f);
    st_done++;
    return NULL;
}

/* A pool bound lazily (created without a loop, first used from a coroutine): map in
 * one coroutine while a worker is killed under another. */
static void test_coro_map_and_kill(void **state)
{
    (void)state;
    make_pool(2, 0, NULL);
    st_go(coro_mapper, NULL, "mapper");
    st_go(coro_victim, NULL, "victim");
    st_run_until_done(2, 20000);
    /* plain code waits on a loop-bound pool by running the loop */
    int32_t five = 5;
    iop_future_t *f = apply(square, &five, sizeof five);
    assert_int_equal(iop_future_wait(f, after_ms(10000)), 0);
    assert_int_equal(result_i64(f), 25);
    iop_future_free(f);
    pid_t pids[2];
    iop_pool_info_t info;
    assert_int_equal(iop_pool_info(pool, &info, pids, 2), 2);
    assert_false(has_pid(pids, 2, victim_pid));
    assert_int_equal(info.lost, 1);
}

static void *coro_terminated(void *arg)
{
    iop_future_t *f = arg;
    CHECK_EQ(iop_future_wait(f, st_after_ms(10000)), -ECANCELED);
    st_done++;
    return NULL;
}

static void test_coro_terminate_wakes_waiters(void **state)
{
    (void)state;
    make_pool(1, 0, st_loop);
    iop_future_t *f[3];
    for (int i = 0; i < 3; i++) {
        f[i] = apply_u32(sleeper, 5000);
        st_go(coro_terminated, f[i], "terminated");
    }
    tu_run_for(st_loop, 100);      /* the first one runs, the waiters park */
    assert_int_equal(st_done, 0);
    iop_pool_terminate(pool);
    st_run_until_done(3, 5000);
    assert_int_equal(iop_pool_join(pool, after_ms(5000)), 0);
    for (int i = 0; i < 3; i++)
        iop_future_free(f[i]);
}

int main(int argc, char **argv)
{
    alarm(150);                    /* the whole program, whatever happens */
    const char *mode = tu_backend_from_args(argc, argv);
    if (mode && strcmp(mode, "plain") == 0) {
        const struct CMUnitTest plain[] = {
            cmocka_unit_test_setup_teardown(test_apply_async_results, setup, teardown),
            cmocka_unit_test_setup_teardown(test_map_order_1000, setup, teardown),
            cmocka_unit_test_setup_teardown(test_failing_task_is_its_result, setup, teardown),
            cmocka_unit_test_setup_teardown(test_worker_killed_mid_task, setup, teardown),
            cmocka_unit_test_setup_teardown(test_segfault_in_task, setup, teardown),
            cmocka_unit_test_setup_teardown(test_max_tasks_per_worker, setup, teardown),
            cmocka_unit_test_setup_teardown(test_failing_initializer, setup, teardown),
            cmocka_unit_test_setup_teardown(test_terminate_with_pending_tasks, setup, teardown),
            cmocka_unit_test_setup_teardown(test_wait_deadline, setup, teardown),
            cmocka_unit_test_setup_teardown(test_close_then_join, setup, teardown),
            cmocka_unit_test_setup_teardown(test_worker_leak_is_reported, setup, teardown),
            cmocka_unit_test(test_null_handles),
            cmocka_unit_test_setup_teardown(test_large_arguments_and_results, setup, teardown),
            cmocka_unit_test_setup_teardown(test_dropped_futures, setup, teardown),
            cmocka_unit_test_setup_teardown(test_pool_copy_in_another_process, setup, teardown),
        };
        return cmocka_run_group_tests_name("pool.plain", plain, NULL, NULL);
    }
    if (tu_backend_set(mode) < 0)
        return 2;
    const struct CMUnitTest coro[] = {
        cmocka_unit_test_setup_teardown(test_coro_wait_keeps_the_loop_running, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coro_map_and_kill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coro_terminate_wakes_waiters, setup, teardown),
    };
    return cmocka_run_group_tests_name("pool.coro", coro, NULL, NULL);
}
