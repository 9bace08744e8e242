/* Core tests: behaviour that does not depend on the backend. */
#ifndef IOPLEX_TEST_CORE_H
#define IOPLEX_TEST_CORE_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>
#include "ioplex.h"
#include "test_util.h"

/* test_timer_heap.c */
void test_timer_heap_stress(void **state);
void test_far_timers_with_holes(void **state);

/* test_clock.c */
void test_now_monotonic(void **state);
void test_now_cached_within_iteration(void **state);
void test_update_time(void **state);

/* test_misc.c */
void test_alloc_seam_counts(void **state);
void test_strerror(void **state);
void test_caps_str(void **state);
void test_op_kind_names(void **state);
void test_create_unknown_backend(void **state);
void test_create_bad_opts(void **state);
void test_create_default(void **state);
void test_timer_moves_between_loops(void **state);
void test_create_opts_size_and_pool(void **state);

#endif
