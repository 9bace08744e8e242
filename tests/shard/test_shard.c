/* Sharded workers on one backend (argv[1]): connections spread over two workers with
 * per-worker reuseport sockets and with one shared listener, IPv4 and IPv6; a worker
 * killed with SIGKILL comes back under a new pid while service goes on; SIGTERM
 * lets an open connection finish, refuses new ones, and the supervisor exits 0
 * with no worker left; SIGKILL of the supervisor takes the workers with it. */
#include "test_shard_harness.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

/* n requests on fresh connections to listener l; counts per worker. */
static void spread(uint32_t l, int n, int counts[2])
{
    for (int i = 0; i < n; i++) {
        int w = -1;
        int r = sh_request(l, "spread", &w, NULL);
        if (r < 0) {
            sh_dump_log();
            fail_msg("request %d on listener %u: %s", i, l, iop_strerror(r));
        }
        assert_true(w == 0 || w == 1);
        counts[w]++;
    }
}

static void test_spread_reuseport(void **state)
{
    (void)state;
    int v6 = sh_have_ipv6();
    sh_config_t c = { .mode = IOP_SHARD_REUSEPORT, .listen = { "127.0.0.1:0", v6 ? "[::1]:0" : NULL } };
    sh_start(&c);
    int counts[2] = { 0, 0 }, counts6[2] = { 0, 0 };
    spread(0, 64, counts);
    if (v6)
        spread(1, 32, counts6);
    fprintf(stderr, "# reuseport spread over 2 workers: IPv4 %d / %d, IPv6 %d / %d\n",
            counts[0], counts[1], counts6[0], counts6[1]);
    /* the kernel hashes each connection's 4-tuple: both get some */
    assert_true(counts[0] > 0 && counts[1] > 0);
    if (v6)
        assert_true(counts6[0] > 0 && counts6[1] > 0);
    iop_shard_worker_stats_t a, b;
    assert_int_equal(iop_shard_stats_read(sh_stats, 0, &a), 0);
    assert_int_equal(iop_shard_stats_read(sh_stats, 1, &b), 0);
    assert_int_equal(a.accepted + b.accepted, 64 + (v6 ? 32 : 0));
    assert_int_equal(sh_stop(SIGTERM, 10000), 0);
    assert_null(strstr(sh->log, "WARN"));   /* every worker drained and exited 0 */
}

static void test_spread_shared(void **state)
{
    (void)state;
    sh_config_t c = { .mode = IOP_SHARD_SHARED };
    sh_start(&c);
    assert_true(sh_wait_ready(NULL, 0, 10000));
    /* Whoever wakes first takes a connection: go on until both have served some. */
    int counts[2] = { 0, 0 }, n = 0;
    uint64_t end = tu_clock_ms() + 10000;
    while ((counts[0] < 4 || counts[1] < 4) && n < 2000 && tu_clock_ms() < end) {
        spread(0, 1, counts);
        n++;
    }
    int more[2] = { 0, 0 };
    spread(0, 64, more);
    fprintf(stderr, "# shared listener: both served after %d connections; next 64: %d / %d\n",
            n, more[0], more[1]);
    assert_true(counts[0] >= 4 && counts[1] >= 4);
    assert_int_equal(sh_stop(SIGTERM, 10000), 0);
    assert_null(strstr(sh->log, "WARN"));   /* every worker drained and exited 0 */
}

static void test_respawn_after_kill(void **state)
{
    (void)state;
    sh_config_t c = { 0 };
    sh_start(&c);
    assert_true(sh_wait_ready(NULL, 0, 10000));
    pid_t old0 = sh_worker_pid(0), old1 = sh_worker_pid(1);
    assert_true(old0 > 0 && old1 > 0 && old0 != old1);
    assert_int_equal(kill(old0, SIGKILL), 0);
    pid_t avoid[1] = { old0 };
    if (!sh_wait_ready(avoid, 1, 10000)) {
        sh_dump_log();
        fail_msg("worker 0 was not respawned");
    }
    pid_t new0 = sh_worker_pid(0);
    assert_true(new0 > 0 && new0 != old0);
    assert_int_equal(sh_worker_pid(1), old1);   /* the other one was left alone */
    /* Service goes on, from both, with the new pid for worker 0. */
    int seen[2] = { 0, 0 };
    for (int i = 0; i < 200 && !(seen[0] && seen[1]); i++) {
        int w;
        pid_t p;
        assert_int_equal(sh_request(0, "again", &w, &p), 0);
        assert_int_equal(p, w == 0 ? new0 : old1);
        seen[w] = 1;
    }
    assert_true(seen[0] && seen[1]);
    iop_shard_worker_stats_t ws;
    assert_int_equal(iop_shard_stats_read(sh_stats, 0, &ws), 0);
    assert_int_equal(ws.crashes, 1);
    assert_int_equal(ws.generation, 2);
    assert_non_null(strstr(sh->log, "killed by SIGKILL"));
    assert_int_equal(sh_stop(SIGTERM, 10000), 0);
}

static void drain_with_open_connection(uint32_t mode)
{
    sh_config_t c = { .mode = mode, .drain_timeout_ns = 5000 * SH_MS };
    sh_start(&c);
    assert_true(sh_wait_ready(NULL, 0, 10000));
    pid_t w0 = sh_worker_pid(0), w1 = sh_worker_pid(1);
    int fd = sh_connect(0);
    assert_true(fd >= 0);
    int w1st, w2nd;
    assert_int_equal(sh_exchange(fd, "first half", &w1st, NULL), 0);
    uint64_t t0 = tu_clock_ms();
    kill(sh_sup, SIGTERM);
    tu_sleep_ms(300);
    /* draining: the listeners are closed, new connections refused */
    int r = sh_request(0, "late", NULL, NULL);
    assert_int_equal(r, -ECONNREFUSED);
    /* the open one is still served, by the same worker */
    assert_int_equal(sh_exchange(fd, "second half", &w2nd, NULL), 0);
    assert_int_equal(w1st, w2nd);
    close(fd);
    int res = sh_stop(0, 10000);   /* signal 0: just wait for it */
    if (res != 0)
        sh_dump_log();
    assert_int_equal(res, 0);
    assert_null(strstr(sh->log, "WARN"));
    assert_true(tu_clock_ms() - t0 < 5000);     /* well before the drain timeout */
    /* no worker left: none is ours (subreaper) and none exists */
    pid_t kids[8];
    assert_int_equal(sh_children(kids, 8), 0);
    assert_int_equal(kill(w0, 0), -1);
    assert_int_equal(kill(w1, 0), -1);
}

static void test_drain_reuseport(void **state)
{
    (void)state;
    drain_with_open_connection(IOP_SHARD_REUSEPORT);
}

static void test_drain_shared(void **state)
{
    (void)state;
    drain_with_open_connection(IOP_SHARD_SHARED);
}

static void test_workers_die_with_supervisor(void **state)
{
    (void)state;
    sh_config_t c = { 0 };
    sh_start(&c);
    assert_true(sh_wait_ready(NULL, 0, 10000));
    pid_t w[2] = { sh_worker_pid(0), sh_worker_pid(1) };
    kill(sh_sup, SIGKILL);
    int st;
    assert_int_equal(waitpid(sh_sup, &st, 0), sh_sup);
    sh_sup = 0;
    /* They come back to us (subreaper) and end: killed by their PDEATHSIG, or, if
     * they saw their control socket close first, drained and exited with 0. */
    int gone = 0;
    uint64_t end = tu_clock_ms() + 5000;
    while (gone < 2 && tu_clock_ms() < end) {
        for (int i = 0; i < 2; i++) {
            if (w[i] <= 0)
                continue;
            pid_t r = waitpid(w[i], &st, WNOHANG);
            if (r == w[i]) {
                assert_true((WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) ||
                            (WIFEXITED(st) && WEXITSTATUS(st) == 0));
                w[i] = 0;
                gone++;
            }
        }
        tu_sleep_ms(5);
    }
    assert_int_equal(gone, 2);
}

int main(int argc, char **argv)
{
    sh_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_spread_reuseport, sh_setup, sh_teardown),
        cmocka_unit_test_setup_teardown(test_spread_shared, sh_setup, sh_teardown),
        cmocka_unit_test_setup_teardown(test_respawn_after_kill, sh_setup, sh_teardown),
        cmocka_unit_test_setup_teardown(test_drain_reuseport, sh_setup, sh_teardown),
        cmocka_unit_test_setup_teardown(test_drain_shared, sh_setup, sh_teardown),
        cmocka_unit_test_setup_teardown(test_workers_die_with_supervisor, sh_setup, sh_teardown),
    };
    char name[64];
    snprintf(name, sizeof name, "shard.%s", sh_backend ? sh_backend : "default");
    return cmocka_run_group_tests_name(name, tests, NULL, NULL);
}
