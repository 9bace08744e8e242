/* Runs the core tests on the default backend ($IOPLEX_BACKEND or auto), or on the
 * one named by argv[1]. */
#include "test_core.h"

int main(int argc, char **argv)
{
    tu_backend = tu_backend_from_args(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timer_heap_stress),
        cmocka_unit_test(test_far_timers_with_holes),
        cmocka_unit_test(test_now_monotonic),
        cmocka_unit_test(test_now_cached_within_iteration),
        cmocka_unit_test(test_update_time),
        cmocka_unit_test(test_alloc_seam_counts),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_caps_str),
        cmocka_unit_test(test_op_kind_names),
        cmocka_unit_test(test_create_unknown_backend),
        cmocka_unit_test(test_create_bad_opts),
        cmocka_unit_test(test_create_default),
        cmocka_unit_test(test_timer_moves_between_loops),
        cmocka_unit_test(test_create_opts_size_and_pool),
    };
    return cmocka_run_group_tests_name("core", tests, NULL, NULL);
}
