/* The loop clock: CLOCK_MONOTONIC, cached for the whole of an iteration. */
#include "test_core.h"

#define MS 1000000ull

void test_now_monotonic(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    uint64_t prev = iop_now(loop);
    for (int i = 0; i < 50; i++) {
        assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);
        uint64_t now = iop_now(loop);
        assert_true(now >= prev);
        prev = now;
    }
    tu_sleep_ms(5);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);
    assert_true(iop_now(loop) >= prev + 5 * MS);
    iop_loop_destroy(loop);
}

typedef struct cache_probe {
    uint64_t seen[2];
    int calls;
    uint64_t inside_before, inside_after;
} cache_probe_t;

static void busy_wait_ms(unsigned ms)
{
    uint64_t end = tu_clock_ns() + ms * MS;
    while (tu_clock_ns() < end)
        ;
}

static void probe_cb(iop_timer_t *t)
{
    cache_probe_t *p = t->data;
    if (p->calls == 0) {
        p->inside_before = iop_now(t->loop);
        busy_wait_ms(3);
        p->inside_after = iop_now(t->loop);
    }
    if (p->calls < 2)
        p->seen[p->calls] = iop_now(t->loop);
    p->calls++;
}

void test_now_cached_within_iteration(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    cache_probe_t p = { 0 };
    iop_timer_t a = { .data = &p }, b = { .data = &p };
    /* Same due time: both fire in one iteration, the first spending 3 ms. */
    assert_int_equal(iop_timer_start(loop, &a, 2 * MS, 0, probe_cb), 0);
    assert_int_equal(iop_timer_start(loop, &b, 2 * MS, 0, probe_cb), 0);
    tu_sleep_ms(3);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);
    assert_int_equal(p.calls, 2);
    assert_int_equal(p.inside_before, p.inside_after);
    assert_int_equal(p.seen[0], p.seen[1]);

    /* Outside any iteration the value does not move either, until updated. */
    uint64_t before = iop_now(loop);
    busy_wait_ms(2);
    assert_int_equal(iop_now(loop), before);
    iop_loop_destroy(loop);
}

void test_update_time(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    uint64_t old = iop_now(loop);
    tu_sleep_ms(2);
    uint64_t fresh = iop_update_time(loop);
    assert_true(fresh >= old + 2 * MS);
    assert_int_equal(iop_now(loop), fresh);
    /* The loop clock is CLOCK_MONOTONIC. */
    uint64_t mono = tu_clock_ns();
    uint64_t again = iop_update_time(loop);
    assert_true(again >= mono);
    assert_true(again - mono < 50 * MS);
    iop_loop_destroy(loop);
}
