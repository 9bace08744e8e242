/* SIGHUP rolling restart on one backend (argv[1]) and listener mode (argv[2]:
 * reuseport or shared): a client connects in a tight loop for two seconds while the
 * supervisor gets SIGHUP twice; not one connection may be refused or reset, every
 * worker pid must change, and the old workers must have drained away. */
#include "test_shard_harness.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

static uint32_t mode;

static int pid_in(pid_t p, const pid_t *set, int n)
{
    for (int i = 0; i < n; i++)
        if (set[i] == p)
            return 1;
    return 0;
}

static void test_sighup_no_refused_connection(void **state)
{
    (void)state;
    sh_config_t c = { .mode = mode, .workers = 2 };
    sh_start(&c);
    assert_true(sh_wait_ready(NULL, 0, 10000));
    pid_t first[2] = { sh_worker_pid(0), sh_worker_pid(1) };
    int ok = 0, failed = 0, hups = 0, last_err = 0;
    pid_t served_by_old_after = 0;
    uint64_t t0 = tu_clock_ms(), end = t0 + 2000;
    while (tu_clock_ms() < end) {
        uint64_t t = tu_clock_ms() - t0;
        if ((hups == 0 && t >= 300) || (hups == 1 && t >= 900)) {
            kill(sh_sup, SIGHUP);
            hups++;
        }
        pid_t p;
        int r = sh_request(0, "ping", NULL, &p);
        if (r < 0) {
            failed++;
            last_err = r;
        } else {
            ok++;
            if (t > 1900 && pid_in(p, first, 2))
                served_by_old_after = p;
        }
    }
    fprintf(stderr, "# %s: %d connections in 2 s across two SIGHUPs, %d failed%s%s\n",
            mode == IOP_SHARD_SHARED ? "shared" : "reuseport", ok, failed,
            failed ? ", the last with " : "", failed ? iop_strerror(last_err) : "");
    if (failed)
        sh_dump_log();
    assert_int_equal(failed, 0);
    assert_true(ok > 20);           /* a few in each phase; a loaded TSan run made 49 */
    /* every slot now runs a process started after the SIGHUPs */
    if (!sh_wait_ready(first, 2, 10000)) {
        sh_dump_log();
        fail_msg("the workers were not all replaced");
    }
    assert_int_equal(served_by_old_after, 0);
    /* the old ones drained and were reaped by the supervisor */
    uint64_t gone_by = tu_clock_ms() + 5000;
    while ((kill(first[0], 0) == 0 || kill(first[1], 0) == 0) && tu_clock_ms() < gone_by)
        tu_sleep_ms(10);
    assert_int_equal(kill(first[0], 0), -1);
    assert_int_equal(kill(first[1], 0), -1);
    assert_null(strstr(sh->log, "WARN"));   /* no crash, no kill on the way */
    iop_shard_worker_stats_t ws;
    assert_int_equal(iop_shard_stats_read(sh_stats, 0, &ws), 0);
    assert_int_equal(ws.generation, 3);
    assert_int_equal(ws.crashes, 0);
    assert_int_equal(sh_stop(SIGTERM, 10000), 0);
}

int main(int argc, char **argv)
{
    sh_init(argc, argv);
    mode = argc > 2 && strcmp(argv[2], "shared") == 0 ? IOP_SHARD_SHARED : IOP_SHARD_REUSEPORT;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sighup_no_refused_connection, sh_setup, sh_teardown),
    };
    char name[80];
    snprintf(name, sizeof name, "shard.sighup.%s.%s", sh_backend ? sh_backend : "default",
             mode == IOP_SHARD_SHARED ? "shared" : "reuseport");
    return cmocka_run_group_tests_name(name, tests, NULL, NULL);
}
