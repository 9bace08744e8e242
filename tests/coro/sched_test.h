/* Shared by the coroutine tests (sched, coro_io, chan, sync): one loop per test on
 * the backend under test, and checks usable inside coroutines.
 *
 * Coroutines do not call cmocka's asserts (a failure would longjmp off their stack):
 * CHECK records the first failure, and the test fails on it once back on the main
 * stack (st_run_until / st_assert_ok). */
#ifndef SCHED_TEST_H
#define SCHED_TEST_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "ioplex.h"
#include "ioplex/coro.h"
#include "test_util.h"

#define MS 1000000ull

extern iop_loop_t *st_loop;
extern int st_done;                /* coroutines that have ended (tests bump it) */
extern char st_failure[256];

#define CHECK(cond) st_check_at((cond), #cond, __LINE__)
#define CHECK_EQ(a, b) st_check_eq_at((long long)(a), (long long)(b), #a " == " #b, __LINE__)

static inline void st_check_at(int ok, const char *what, int line)
{
    if (!ok && !st_failure[0])
        snprintf(st_failure, sizeof st_failure, "line %d: %s", line, what);
}

static inline void st_check_eq_at(long long a, long long b, const char *what, int line)
{
    if (a != b && !st_failure[0])
        snprintf(st_failure, sizeof st_failure, "line %d: %s (%lld != %lld)", line, what, a, b);
}

/* cmocka group setup / teardown: a fresh loop per test. */
int st_setup(void **state);
int st_teardown(void **state);

/* Fails the test if a coroutine recorded a failure. */
void st_assert_ok(void);

/* Runs the loop until st_done >= n (at most limit_ms), then st_assert_ok. */
void st_run_until_done(int n, unsigned limit_ms);

/* Absolute loop-clock deadline ms from now. */
static inline uint64_t st_after_ms(uint64_t ms) { return iop_update_time(st_loop) + ms * MS; }

/* Spawns a detached coroutine on st_loop. */
void st_go(iop_coro_fn fn, void *arg, const char *name);

/* Fills st_loop's timer heap with far timers while every allocation fails from
 * here (iop__alloc_fail_after), so that no ordinary timer can start: 1 once it is
 * full. st_timers_unstarve lets allocations succeed again and stops the fillers. */
int st_timers_starve(void);
void st_timers_unstarve(void);

#endif
