/* Supervisor behaviour that does not depend on the backend (run on the default
 * one): the crash-loop limit, a drain that times out, a worker whose setup fails,
 * options refused before any fork, CPU pinning and reuseport steering by the
 * receiving CPU, a worker's leak reported in an ASan build, a stats cell written
 * over by its worker, the stats header that cannot be. */
#include "test_shard_harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "shard_internal.h"   /* the stats cells' layout */

/* Worker 1 aborts at once, every time; worker 0 serves. */
static int crashing_worker(iop_shard_worker_t *w)
{
    if (iop_shard_index(w) == 1) {
        struct rlimit none = { 0, 0 };
        setrlimit(RLIMIT_CORE, &none);   /* no core file from the test */
        raise(SIGABRT);
    }
    return sh_echo_worker(w);
}

static void test_crash_loop_limit(void **state)
{
    (void)state;
    sh_config_t c = { .worker = crashing_worker, .crash_limit = 3, .crash_window_ns = 10000 * SH_MS,
                      .backoff_min_ns = 20 * SH_MS };
    uint64_t t0 = tu_clock_ms();
    sh_start(&c);
    int r = sh_stop(0, 15000);     /* it stops by itself */
    fprintf(stderr, "# crash loop stopped after %llu ms: %s\n", (unsigned long long)(tu_clock_ms() - t0), sh->error);
    assert_int_equal(r, -ECHILD);
    assert_non_null(strstr(sh->error, "worker 1"));
    assert_non_null(strstr(sh->error, "SIGABRT"));
    assert_non_null(strstr(sh->error, "crash-loop limit"));
    iop_shard_worker_stats_t ws;
    assert_int_equal(iop_shard_stats_read(sh_stats, 1, &ws), 0);
    assert_int_equal(ws.crashes, 4);   /* limit 3: the fourth stops it */
    assert_int_equal(iop_shard_stats_read(sh_stats, 0, &ws), 0);
    assert_int_equal(ws.crashes, 0);
    pid_t kids[8];
    assert_int_equal(sh_children(kids, 8), 0);
}

/* A rolling restart that gives up on one slot (its replacement fails past the
 * crash-loop limit; the old worker serves on) goes on with the next slot: its
 * replacement, failing once for the same reason, is retried after the backoff and
 * replaces the old one. The slot given up was skipped twice over (the step in
 * progress and the one the give-up ran both moved on), and slot 1's retry then did
 * nothing: its old worker was never replaced. The reason here: the supervisor's
 * fd limit, lowered for the moment of the SIGHUP. */
static char slot0_flag[64];

static int crash_once_worker(iop_shard_worker_t *w)
{
    if (iop_shard_index(w) == 0 && access(slot0_flag, F_OK) != 0) {
        FILE *f = fopen(slot0_flag, "w");
        if (f)
            fclose(f);
        return 1;                  /* slot 0's first start fails: one crash counted */
    }
    return sh_echo_worker(w);
}

static int lowest_free_fd(pid_t pid)
{
    char path[64], fd[32];
    for (int n = 0; n < 4096; n++) {
        snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)pid, n);
        if (readlink(path, fd, sizeof fd) < 0)
            return n;
    }
    return 4096;
}

static void test_restart_goes_on_after_giving_up(void **state)
{
    (void)state;
    snprintf(slot0_flag, sizeof slot0_flag, "/tmp/iop-shard-slot0-%d", (int)getpid());
    unlink(slot0_flag);
    sh_config_t c = { .workers = 2, .worker = crash_once_worker, .crash_limit = 1,
                      .crash_window_ns = 30000 * SH_MS, .backoff_min_ns = 1500 * SH_MS };
    sh_start(&c);
    assert_true(sh_wait_ready(NULL, 0, 10000));
    pid_t old0 = sh_worker_pid(0), old1 = sh_worker_pid(1);
    struct rlimit was, low;
    assert_int_equal(prlimit(sh_sup, RLIMIT_NOFILE, NULL, &was), 0);
    low = was;
    low.rlim_cur = (rlim_t)lowest_free_fd(sh_sup);   /* no socketpair for a new worker */
    assert_int_equal(prlimit(sh_sup, RLIMIT_NOFILE, &low, NULL), 0);
    kill(sh_sup, SIGHUP);
    tu_sleep_ms(300);
    assert_int_equal(prlimit(sh_sup, RLIMIT_NOFILE, &was, NULL), 0);
    uint64_t until = tu_clock_ms() + 8000;
    while (sh_worker_pid(1) == old1 && tu_clock_ms() < until)
        tu_sleep_ms(20);
    unlink(slot0_flag);
    if (sh_worker_pid(1) == old1 || sh_worker_pid(0) != old0 || !strstr(sh->log, "leaves pid")) {
        sh_dump_log();
        fail_msg("slot 0: %d (was %d), slot 1: %d (was %d)", (int)sh_worker_pid(0), (int)old0,
                 (int)sh_worker_pid(1), (int)old1);
    }
    const char *done = strstr(sh->log, "rolling restart done");
    assert_non_null(done);
    assert_null(strstr(done + 1, "rolling restart done"));   /* one round, ended once */
    assert_int_equal(sh_stop(SIGTERM, 10000), 0);
}

/* "Never give up": worker 1 keeps crashing and keeps being respawned, past any
 * limit a ring of crash times could hold. */
static void test_no_crash_limit(void **state)
{
    (void)state;
    sh_config_t c = { .worker = crashing_worker, .crash_limit = IOP_SHARD_NO_CRASH_LIMIT,
                      .crash_window_ns = 10000 * SH_MS, .backoff_min_ns = 5 * SH_MS };
    sh_start(&c);
    iop_shard_worker_stats_t ws = { 0 };
    uint64_t end = tu_clock_ms() + 15000;
    while (ws.crashes < 8 && tu_clock_ms() < end && !atomic_load(&sh->finished)) {
        tu_sleep_ms(20);
        assert_int_equal(iop_shard_stats_read(sh_stats, 1, &ws), 0);
    }
    fprintf(stderr, "# no crash limit: %llu crashes of worker 1\n", (unsigned long long)ws.crashes);
    assert_false(atomic_load(&sh->finished));
    assert_true(ws.crashes >= 8);
    assert_int_equal(iop_shard_stats_read(sh_stats, 0, &ws), 0);
    assert_int_equal(ws.crashes, 0);   /* the other worker served on, untouched */
    assert_int_equal(sh_stop(SIGTERM, 10000), 0);
}

/* Timeouts of "forever" wait forever: a worker is not killed as late the moment it
 * starts, nor at the start of a drain. */
static void test_forever_timeouts(void **state)
{
    (void)state;
    sh_config_t c = { .ready_timeout_ns = UINT64_MAX, .drain_timeout_ns = UINT64_MAX };
    sh_start(&c);
    assert_true(sh_wait_ready(NULL, 0, 10000));
    int fd = sh_connect(0);
    assert_true(fd >= 0);
    assert_int_equal(sh_exchange(fd, "before", NULL, NULL), 0);
    kill(sh_sup, SIGTERM);
    tu_sleep_ms(500);
    assert_int_equal(sh_exchange(fd, "during the drain", NULL, NULL), 0);
    close(fd);
    int r = sh_stop(0, 10000);
    if (r != 0)
        sh_dump_log();
    assert_int_equal(r, 0);
    assert_null(strstr(sh->log, "killing"));
}

/* Ignores draining and never ends by itself. */
static int stubborn_worker(iop_shard_worker_t *w)
{
    iop_shard_ready(w);
    for (;;)
        iop_sleep(10 * SH_MS);
    return 0;
}

static void test_drain_timeout_kills(void **state)
{
    (void)state;
    sh_config_t c = { .worker = stubborn_worker, .drain_timeout_ns = 300 * SH_MS };
    sh_start(&c);
    assert_true(sh_wait_ready(NULL, 0, 10000));
    uint64_t t0 = tu_clock_ms();
    int r = sh_stop(SIGTERM, 10000);
    uint64_t took = tu_clock_ms() - t0;
    fprintf(stderr, "# drain timeout 300 ms: stopped after %llu ms: %s\n", (unsigned long long)took, sh->error);
    assert_int_equal(r, -ETIMEDOUT);
    assert_non_null(strstr(sh->error, "drain timeout"));
    assert_true(took >= 300 && took < 3000);
}

/* The first worker ignores draining; the ones after it serve. The flag file is
 * made with O_EXCL: exactly one worker is the first, however they race. */
static char stubborn_flag[64];

static int stubborn_once_worker(iop_shard_worker_t *w)
{
    int fd = open(stubborn_flag, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd >= 0) {
        close(fd);
        return stubborn_worker(w);
    }
    return sh_echo_worker(w);
}

/* A worker killed at its drain deadline during a rolling restart does not make a
 * later clean stop report -ETIMEDOUT: the restart replaced it and the run went on. */
static void test_restart_kill_is_not_the_stop(void **state)
{
    (void)state;
    snprintf(stubborn_flag, sizeof stubborn_flag, "/tmp/iop-shard-stubborn-%d", (int)getpid());
    unlink(stubborn_flag);
    sh_config_t c = { .workers = 1, .worker = stubborn_once_worker, .drain_timeout_ns = 300 * SH_MS };
    sh_start(&c);
    assert_true(sh_wait_ready(NULL, 0, 10000));
    pid_t old = sh_worker_pid(0);
    kill(sh_sup, SIGHUP);
    assert_true(sh_wait_ready(&old, 1, 10000));
    uint64_t until = tu_clock_ms() + 10000;
    while ((!strstr(sh->log, "rolling restart done") || !strstr(sh->log, "still busy")) &&
           tu_clock_ms() < until)
        tu_sleep_ms(20);
    unlink(stubborn_flag);
    assert_non_null(strstr(sh->log, "killed: still busy at the drain deadline"));
    assert_non_null(strstr(sh->log, "rolling restart done"));
    int fd = sh_connect(0);
    assert_true(fd >= 0);
    assert_int_equal(sh_exchange(fd, "after the restart", NULL, NULL), 0);
    close(fd);
    int r = sh_stop(SIGTERM, 10000);
    if (r != 0)
        sh_dump_log();
    assert_int_equal(r, 0);
}

static void test_second_sigterm_kills_at_once(void **state)
{
    (void)state;
    sh_config_t c = { .worker = stubborn_worker, .drain_timeout_ns = 20000 * SH_MS };
    sh_start(&c);
    assert_true(sh_wait_ready(NULL, 0, 10000));
    uint64_t t0 = tu_clock_ms();
    kill(sh_sup, SIGTERM);
    tu_sleep_ms(100);
    int r = sh_stop(SIGINT, 5000);
    assert_int_equal(r, -EINTR);
    assert_true(tu_clock_ms() - t0 < 3000);
}

/* Worker 1, on its first start, writes a slot number out of range into its stats
 * cell (as a stray write of its own could) and ends. */
static char scribble_flag[64];

static int cell_scribbling_worker(iop_shard_worker_t *w)
{
    if (iop_shard_index(w) == 1 && access(scribble_flag, F_OK) != 0) {
        FILE *f = fopen(scribble_flag, "w");
        if (f)
            fclose(f);
        for (uint32_t c = 0; c < sh_stats->ncells; c++)
            if (atomic_load(&sh_stats->cells[c].slot_plus1) == 2)
                atomic_store(&sh_stats->cells[c].slot_plus1, 0x7fffffffu);
        return 1;
    }
    return sh_echo_worker(w);
}

/* The supervisor folds an ended worker's cell into the slot it started the worker
 * for, whatever the cell says: the slot number written there used to be taken as
 * an index into the slots, and the supervisor died writing far past them. */
static void test_scribbled_stats_cell(void **state)
{
    (void)state;
    snprintf(scribble_flag, sizeof scribble_flag, "/tmp/iop-shard-scribble-%d", (int)getpid());
    unlink(scribble_flag);
    sh_config_t c = { .workers = 2, .worker = cell_scribbling_worker, .backoff_min_ns = 20 * SH_MS };
    sh_start(&c);
    int ready = sh_wait_ready(NULL, 0, 10000);
    unlink(scribble_flag);
    if (!ready) {
        sh_dump_log();
        fail_msg("the workers are not ready (supervisor finished: %d)", atomic_load(&sh->finished));
    }
    iop_shard_worker_stats_t ws;
    assert_int_equal(iop_shard_stats_read(sh_stats, 1, &ws), 0);
    assert_true(ws.crashes >= 1);
    int worker = -1;
    pid_t pid;
    for (int i = 0; i < 8 && worker != 1; i++)
        assert_int_equal(sh_request(0, "hello", &worker, &pid), 0);
    assert_int_equal(sh_stop(SIGTERM, 10000), 0);
}

/* The stats' header (how many slots and cells, where they are, the map's length)
 * cannot be written over: a process that tries faults at once, and every other
 * process reads the counters and unmaps them by what was set at creation. */
static void test_stats_header_is_read_only(void **state)
{
    (void)state;
    iop_shard_stats_t *st;
    assert_int_equal(iop_shard_stats_create(&st, 3), 0);
    pid_t kid = fork();
    assert_true(kid >= 0);
    if (kid == 0) {
        struct rlimit none = { 0, 0 };
        setrlimit(RLIMIT_CORE, &none);
        signal(SIGSEGV, SIG_DFL);      /* not the test runner's handler */
        *(volatile uint32_t *)&st->ncells = 1u << 30;
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(kid, &status, 0), kid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGSEGV);
    assert_int_equal(iop_shard_stats_count(st), 3);
    iop_shard_worker_stats_t ws;
    assert_int_equal(iop_shard_stats_read(st, 2, &ws), 0);
    assert_int_equal(ws.open, 0);
    assert_int_equal(iop_shard_stats_read(st, 3, &ws), -EINVAL);
    iop_shard_stats_free(st);
}

static void test_worker_setup_failure(void **state)
{
    (void)state;
    sh_config_t c = { .backend = "no-such-backend" };
    sh_start(&c);
    int r = sh_stop(0, 10000);
    fprintf(stderr, "# setup failure: %d %s\n", r, sh->error);
    assert_true(r < 0 && r != 1000 && r != -ECHILD);
    assert_non_null(strstr(sh->error, "could not start"));
    assert_non_null(strstr(sh->error, "no-such-backend"));
}

static int never_called(iop_shard_worker_t *w)
{
    (void)w;
    return 99;
}

#if TU_ASAN
/* Loses a block, then serves. */
static int leaking_worker(iop_shard_worker_t *w)
{
    char *volatile lost = malloc(48);
    if (lost)
        lost[0] = 1;
    lost = NULL;
    return sh_echo_worker(w);
}
#endif

/* A worker ends with _exit, past the leak checker's atexit run: in an ASan build
 * it checks for leaks itself, and one it finds makes its exit status non-zero,
 * which the supervisor reports. */
static void test_worker_leak_is_reported(void **state)
{
    (void)state;
#if TU_ASAN
    const char *opts = getenv("ASAN_OPTIONS");
    if (opts && strstr(opts, "detect_leaks=0"))
        skip();
    sh_config_t c = { .worker = leaking_worker, .workers = 1 };
    sh_start(&c);
    assert_true(sh_wait_ready(NULL, 0, 10000));
    assert_int_equal(sh_stop(SIGTERM, 20000), 0);
    fprintf(stderr, "# supervisor log: %s\n", sh->log);
    assert_non_null(strstr(sh->log, "exited with status 23 while draining"));
#else
    skip();                        /* no leak checker in this build */
#endif
}

/* Refused before any fork, in this very process, leaving the signal mask alone. */
static void test_bad_options(void **state)
{
    (void)state;
    sigset_t before, after;
    sigprocmask(SIG_SETMASK, NULL, &before);
    const char *bad_addr[] = { "nonsense", NULL };
    iop_shard_opts_t o = { .size = sizeof o, .worker = never_called, .listen = bad_addr, .workers = 1 };
    assert_int_equal(iop_shard_run(&o), -EINVAL);
    assert_non_null(strstr(iop_last_error(), "nonsense"));

    const char *v6_no_brackets[] = { "::1:80", NULL };
    o.listen = v6_no_brackets;
    assert_int_equal(iop_shard_run(&o), -EINVAL);

    /* the reasons are the apps' (one parser, core/src/addr): ioplexd's --workers 0
     * and --workers N say the same */
    struct { const char *spec, *why; } said[] = {
        { "nonsense", "'nonsense': expected HOST:PORT" },
        { "::1:80", "put an IPv6 address in brackets: [ADDR]:PORT" },
        { "[]:80", "brackets are for an IPv6 address, as in [::1]:PORT" },
        { "[::1]80", "expected [IPv6]:PORT" },
        { "127.0.0.1:99999", "port must be a number from 0 to 65535" },
        { "[fe80::1]:0", "a link-local address needs a zone naming its interface, as in [fe80::1%lo]:0" },
    };
    for (size_t i = 0; i < sizeof said / sizeof *said; i++) {
        const char *one[] = { said[i].spec, NULL };
        o.listen = one;
        assert_int_equal(iop_shard_run(&o), -EINVAL);
        if (!strstr(iop_last_error(), said[i].why))
            fail_msg("%s: '%s', not '%s'", said[i].spec, iop_last_error(), said[i].why);
    }

    /* getaddrinfo alone would take these and bind 34463, 65535 and 0 */
    const char *ports[] = { "127.0.0.1:99999", "127.0.0.1:131071", "127.0.0.1:-1", "127.0.0.1:",
                            "127.0.0.1:80x", "[::1]:65536" };
    for (size_t i = 0; i < sizeof ports / sizeof *ports; i++) {
        const char *one[] = { ports[i], NULL };
        o.listen = one;
        assert_int_equal(iop_shard_run(&o), -EINVAL);
        assert_non_null(strstr(iop_last_error(), ports[i]));
    }

    o.listen = NULL;
    o.flags = IOP_SHARD_STEER_CPU;      /* without PIN_CPU */
    assert_int_equal(iop_shard_run(&o), -EINVAL);
    o.flags = 0;
    o.crash_limit = IOP_SHARD_MAX_CRASH_LIMIT + 1;   /* a ring of crash times that big: refused */
    assert_int_equal(iop_shard_run(&o), -EINVAL);
    assert_non_null(strstr(iop_last_error(), "crash_limit"));
    o.crash_limit = 0;
    o.worker = NULL;
    assert_int_equal(iop_shard_run(&o), -EINVAL);
    o.worker = never_called;

    /* sigio signals one owner per socket: a shared listener would feed one worker */
    const char *loopback[] = { "127.0.0.1:0", NULL };
    o.listen = loopback;
    o.workers = 2;
    o.listener_mode = IOP_SHARD_SHARED;
    o.backend = "sigio";
    assert_int_equal(iop_shard_run(&o), -EINVAL);
    assert_non_null(strstr(iop_last_error(), "sigio"));
    o.backend = NULL;
    iop_loop_opts_t lo = { .size = sizeof lo, .backend = "sigio" };
    o.loop_opts = &lo;
    assert_int_equal(iop_shard_run(&o), -EINVAL);
    o.loop_opts = NULL;
    o.listener_mode = IOP_SHARD_REUSEPORT;
    o.workers = 1;
    o.listen = NULL;

    /* a port someone else holds (no SO_REUSEPORT on theirs) */
    struct sockaddr_in a;
    int busy = tu_tcp_listener(&a, 4);
    char spec[64];
    snprintf(spec, sizeof spec, "127.0.0.1:%d", ntohs(a.sin_port));
    const char *taken[] = { spec, NULL };
    o.worker = never_called;
    o.listen = taken;
    assert_int_equal(iop_shard_run(&o), -EADDRINUSE);
    assert_non_null(strstr(iop_last_error(), spec));
    close(busy);

    /* ... one that another reuseport listener of this user holds: the kernel would
     * let ours join its group and split the connections with it */
    int rp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    assert_true(rp >= 0);
    assert_int_equal(setsockopt(rp, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one), 0);
    a.sin_port = 0;
    assert_int_equal(bind(rp, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(rp, 4), 0);
    socklen_t alen = sizeof a;
    assert_int_equal(getsockname(rp, (struct sockaddr *)&a, &alen), 0);
    snprintf(spec, sizeof spec, "127.0.0.1:%d", ntohs(a.sin_port));
    assert_int_equal(iop_shard_run(&o), -EADDRINUSE);
    assert_non_null(strstr(iop_last_error(), spec));
    close(rp);

    /* ... and the same address twice in one run */
    close(tu_tcp_listener(&a, 1));   /* a port that was free a moment ago */
    snprintf(spec, sizeof spec, "127.0.0.1:%d", ntohs(a.sin_port));
    const char *twice[] = { spec, spec, NULL };
    o.listen = twice;
    assert_int_equal(iop_shard_run(&o), -EADDRINUSE);

    sigprocmask(SIG_SETMASK, NULL, &after);
    assert_int_equal(sigismember(&before, SIGTERM), sigismember(&after, SIGTERM));
    assert_int_equal(sigismember(&before, SIGHUP), sigismember(&after, SIGHUP));
    pid_t kids[8];
    assert_int_equal(sh_children(kids, 8), 0);
}

static int allowed_cpus(int *ids, int max)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) < 0)
        return 0;
    int n = 0;
    for (int c = 0; c < CPU_SETSIZE && n < max; c++)
        if (CPU_ISSET(c, &set))
            ids[n++] = c;
    return n;
}

static void test_pinning_and_steering(void **state)
{
    (void)state;
    int cpus[2];
    cpu_set_t mine;
    sched_getaffinity(0, sizeof mine, &mine);
    if (allowed_cpus(cpus, 2) < 2) {
        fprintf(stderr, "# one CPU only: steering cannot be told apart from chance\n");
        skip();
    }
    sh_config_t c = { .workers = 2, .flags = IOP_SHARD_PIN_CPU | IOP_SHARD_STEER_CPU };
    sh_start(&c);                  /* attaching the program failed otherwise */
    assert_true(sh_wait_ready(NULL, 0, 10000));
    for (int i = 0; i < 2; i++) {  /* worker i runs on the i-th CPU only */
        cpu_set_t set;
        assert_int_equal(sched_getaffinity(sh_worker_pid((uint32_t)i), sizeof set, &set), 0);
        assert_int_equal(CPU_COUNT(&set), 1);
        assert_true(CPU_ISSET(cpus[i], &set));
    }
    /* On loopback the SYN is received on the sender's CPU: a client pinned to CPU k
     * is served by worker k. */
    int wrong = 0;
    for (int k = 0; k < 2; k++) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpus[k], &one);
        assert_int_equal(sched_setaffinity(0, sizeof one, &one), 0);
        for (int i = 0; i < 20; i++) {
            int w = -1;
            assert_int_equal(sh_request(0, "steer", &w, NULL), 0);
            wrong += w != k;
        }
    }
    sched_setaffinity(0, sizeof mine, &mine);
    fprintf(stderr, "# steering: %d of 40 connections went to another CPU's worker\n", wrong);
    assert_int_equal(wrong, 0);
    assert_int_equal(sh_stop(SIGTERM, 10000), 0);
}

int main(int argc, char **argv)
{
    sh_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bad_options, sh_setup, sh_teardown),
        cmocka_unit_test_setup_teardown(test_crash_loop_limit, sh_setup, sh_teardown),
        cmocka_unit_test_setup_teardown(test_no_crash_limit, sh_setup, sh_teardown),
        cmocka_unit_test_setup_teardown(test_restart_goes_on_after_giving_up, sh_setup, sh_teardown),
        cmocka_unit_test_setup_teardown(test_forever_timeouts, sh_setup, sh_teardown),
        cmocka_unit_test_setup_teardown(test_drain_timeout_kills, sh_setup, sh_teardown),
        cmocka_unit_test_setup_teardown(test_restart_kill_is_not_the_stop, sh_setup, sh_teardown),
        cmocka_unit_test_setup_teardown(test_second_sigterm_kills_at_once, sh_setup, sh_teardown),
        cmocka_unit_test_setup_teardown(test_worker_setup_failure, sh_setup, sh_teardown),
        cmocka_unit_test_setup_teardown(test_scribbled_stats_cell, sh_setup, sh_teardown),
        cmocka_unit_test(test_stats_header_is_read_only),
        cmocka_unit_test_setup_teardown(test_pinning_and_steering, sh_setup, sh_teardown),
        cmocka_unit_test_setup_teardown(test_worker_leak_is_reported, sh_setup, sh_teardown),
    };
    return cmocka_run_group_tests_name("shard.misc", tests, NULL, NULL);
}
