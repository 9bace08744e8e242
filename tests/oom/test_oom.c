/* Out-of-memory sweep: `test_oom BACKEND` runs the loop scenarios on one backend,
 * `test_oom ipc` the multi-process primitives, `test_oom shard` a supervisor with
 * one worker (the failure injected from the supervisor's start, which its worker
 * inherits at the fork).
 *
 * The sweep (oom_sweep.h) is in oom_sweep.c, the scenarios in one oom_*.c file per
 * group; this file lists them. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include "oom_sweep.h"

int main(int argc, char **argv)
{
    const char *spec = tu_backend_from_args(argc, argv);
    if (!spec) {
        fprintf(stderr, "usage: %s BACKEND | ipc | shard\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (strcmp(spec, "shard") == 0) {
        const struct CMUnitTest shard[] = { cmocka_unit_test(test_shard), cmocka_unit_test(test_shard_accept_oom) };
        return cmocka_run_group_tests_name("shard", shard, NULL, NULL);
    }
    if (strcmp(spec, "ipc") == 0) {
        const struct CMUnitTest ipc[] = { cmocka_unit_test(test_ipc) };
        return cmocka_run_group_tests_name("ipc", ipc, NULL, NULL);
    }
    tu_backend = spec;
    /* A backend this machine cannot run (no io_uring) is skipped, not swept. */
    iop_loop_opts_t o = { .size = sizeof o, .backend = spec };
    iop_loop_t *probe = NULL;
    int r = iop_loop_create(&probe, &o);
    if (r < 0) {
        printf("backend %s unavailable: %s\n", spec, iop_last_error());
        return 77;
    }
    iop_loop_destroy(probe);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proactor),
        cmocka_unit_test(test_many),
        cmocka_unit_test(test_coro),
#if !TU_TSAN
        /* Some 70 coroutines per step of the sweep: under TSan (TU_TSAN) this test
         * alone took most of a minute per backend. Its failure paths are
         * single-threaded; the other builds sweep it. */
        cmocka_unit_test(test_crowd),
#endif
        cmocka_unit_test(test_sync),
        cmocka_unit_test(test_service),
        cmocka_unit_test(test_service_http),
        cmocka_unit_test(test_service_chat),
        cmocka_unit_test(test_service_accept_oom),
        cmocka_unit_test(test_chat_reader_oom),
        cmocka_unit_test(test_pool_dispatcher_oom),
        cmocka_unit_test(test_loader),
    };
    return cmocka_run_group_tests_name(spec, tests, NULL, NULL);
}
