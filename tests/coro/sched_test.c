/* Helpers shared by the scheduler tests; see sched_test.h. */
#include "sched_test.h"

iop_loop_t *st_loop;
int st_done;
char st_failure[256];

int st_setup(void **state)
{
    (void)state;
    st_loop = tu_loop_new();
    st_done = 0;
    st_failure[0] = '\0';
    return 0;
}

int st_teardown(void **state)
{
    (void)state;
    iop_loop_destroy(st_loop);
    st_loop = NULL;
    return 0;
}

void st_assert_ok(void)
{
    if (st_failure[0])
        fail_msg("in a coroutine: %s", st_failure);
}

void st_run_until_done(int n, unsigned limit_ms)
{
    int ok = tu_run_until_count(st_loop, &st_done, n, limit_ms);
    st_assert_ok();
    if (!ok)
        fail_msg("only %d of %d coroutines ended within %u ms", st_done, n, limit_ms);
}

void st_go(iop_coro_fn fn, void *arg, const char *name)
{
    iop_coro_opts_t o = { .size = sizeof o, .name = name };
    int r = iop_go(st_loop, fn, arg, &o, NULL);
    if (r < 0)
        fail_msg("iop_go(%s): %s: %s", name, iop_strerror(r), iop_last_error());
}

enum { FILL = 1 << 16 };
static iop_timer_t fill[FILL];     /* what fills the timer heap */
static int nfill;

static void never_due(iop_timer_t *t) { (void)t; }

int st_timers_starve(void)
{
    memset(fill, 0, sizeof fill);
    iop__alloc_fail_after(0, 0);   /* from here the heap cannot grow */
    nfill = 0;
    while (nfill < FILL && iop_timer_start(st_loop, &fill[nfill], 60000 * MS, 0, never_due) == 0)
        nfill++;
    return nfill < FILL;
}

void st_timers_unstarve(void)
{
    iop__alloc_fail_after(-1, 0);
    for (int i = 0; i < nfill; i++)
        iop_timer_stop(&fill[i]);
    nfill = 0;
}
