/* Timers and timeout ops: order, repetition, stop and restart from anywhere. */
#include "conformance.h"

#define MS 1000000ull
#define NTIMERS 200

typedef struct trec {
    iop_timer_t t;
    int index;
    int calls;
    uint64_t delay;
    uint64_t at[8];       /* iop_now() at the first fires */
    int stop_at;          /* stop itself at this many calls (0 = never) */
    int restart_left;     /* one-shot: re-arm itself this many more times */
    iop_timer_t *victim;  /* a timer this one stops when it fires */
} trec_t;

static int fire_log[NTIMERS];
static int fire_count;

static void trec_cb(iop_timer_t *t)
{
    trec_t *r = t->data;
    if (r->calls < 8)
        r->at[r->calls] = iop_now(t->loop);
    r->calls++;
    if (fire_count < NTIMERS)
        fire_log[fire_count] = r->index;
    fire_count++;
    if (r->stop_at && r->calls == r->stop_at)
        iop_timer_stop(t);
    if (r->victim)
        iop_timer_stop(r->victim);
    if (r->restart_left > 0) {
        r->restart_left--;
        assert_int_equal(iop_timer_start(t->loop, t, MS, 0, trec_cb), 0);
    }
}

void test_timers_fire_in_order(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    static trec_t recs[NTIMERS];
    memset(recs, 0, sizeof recs);
    fire_count = 0;
    uint32_t seed = 0xC0FFEEu;
    for (int i = 0; i < NTIMERS; i++) {
        recs[i].index = i;
        recs[i].delay = (1 + tu_rand(&seed) % 50) * MS;
    }
    /* A run of equal delays started back to back, and some spread out. */
    for (int i = 40; i < 50; i++)
        recs[i].delay = 25 * MS;
    recs[3].delay = recs[120].delay = recs[199].delay = 7 * MS;

    uint64_t start = iop_update_time(loop);
    for (int i = 0; i < NTIMERS; i++) {
        recs[i].t.data = &recs[i];
        assert_int_equal(iop_timer_start(loop, &recs[i].t, recs[i].delay, 0, trec_cb), 0);
        assert_true(iop_timer_active(&recs[i].t));
    }
    assert_int_equal(iop_now(loop), start);   /* every timer measured from one instant */
    assert_true(tu_run_until_count(loop, &fire_count, NTIMERS, 5000));
    tu_run_for(loop, 10);
    assert_int_equal(fire_count, NTIMERS);

    for (int k = 0; k < NTIMERS; k++) {
        trec_t *r = &recs[fire_log[k]];
        assert_int_equal(r->calls, 1);
        assert_false(iop_timer_active(&r->t));
        assert_true(r->at[0] >= start + r->delay);
        if (k == 0)
            continue;
        trec_t *prev = &recs[fire_log[k - 1]];
        if (prev->delay == r->delay && prev->index > r->index)
            fail_msg("equal delays fired out of start order: timer %d before %d", prev->index, r->index);
        if (prev->delay > r->delay)
            fail_msg("timer %d (%llu ms) fired before timer %d (%llu ms)", prev->index,
                     (unsigned long long)(prev->delay / MS), r->index,
                     (unsigned long long)(r->delay / MS));
    }
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);
    iop_loop_destroy(loop);
}

void test_timer_repeat_then_stop(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    fire_count = 0;
    trec_t r = { .stop_at = 5 };
    r.t.data = &r;
    uint64_t start = iop_update_time(loop);
    assert_int_equal(iop_timer_start(loop, &r.t, 5 * MS, 5 * MS, trec_cb), 0);
    assert_true(tu_run_until_count(loop, &r.calls, 5, 2000));
    assert_false(iop_timer_active(&r.t));
    tu_run_for(loop, 30);
    assert_int_equal(r.calls, 5);
    for (int k = 0; k < 5; k++)
        assert_true(r.at[k] >= start + (uint64_t)(k + 1) * 5 * MS);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);
    iop_loop_destroy(loop);
}

/* A repeat of nearly 2^64 ns fires once: the next time saturates instead of wrapping. */
void test_timer_huge_repeat(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    fire_count = 0;
    trec_t r = { 0 };
    r.t.data = &r;
    assert_int_equal(iop_timer_start(loop, &r.t, MS, UINT64_MAX - 10, trec_cb), 0);
    assert_true(tu_run_until_count(loop, &r.calls, 1, 2000));
    tu_run_for(loop, 20);
    assert_int_equal(r.calls, 1);
    assert_true(iop_timer_active(&r.t));
    iop_timer_stop(&r.t);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);
    iop_loop_destroy(loop);
}

void test_timer_stop_from_own_callback(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    fire_count = 0;
    trec_t r = { .stop_at = 1 };
    r.t.data = &r;
    assert_int_equal(iop_timer_start(loop, &r.t, 2 * MS, 2 * MS, trec_cb), 0);
    assert_true(tu_run_until_count(loop, &r.calls, 1, 2000));
    tu_run_for(loop, 30);
    assert_int_equal(r.calls, 1);
    assert_false(iop_timer_active(&r.t));

    /* A one-shot that re-arms itself from its own callback. */
    trec_t again = { .restart_left = 3 };
    again.t.data = &again;
    assert_int_equal(iop_timer_start(loop, &again.t, MS, 0, trec_cb), 0);
    assert_true(tu_run_until_count(loop, &again.calls, 4, 2000));
    tu_run_for(loop, 20);
    assert_int_equal(again.calls, 4);
    assert_false(iop_timer_active(&again.t));
    iop_loop_destroy(loop);
}

void test_timer_restart_active(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    fire_count = 0;
    /* Sooner: a 10 s timer restarted at 10 ms fires once, at 10 ms. */
    trec_t r = { 0 };
    r.t.data = &r;
    assert_int_equal(iop_timer_start(loop, &r.t, 10000 * MS, 0, trec_cb), 0);
    uint64_t start = iop_update_time(loop);
    assert_int_equal(iop_timer_start(loop, &r.t, 10 * MS, 0, trec_cb), 0);
    assert_true(tu_run_until_count(loop, &r.calls, 1, 2000));
    assert_true(r.at[0] >= start + 10 * MS);
    assert_false(iop_timer_active(&r.t));
    tu_run_for(loop, 30);
    assert_int_equal(r.calls, 1);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);   /* the 10 s arming is gone */

    /* Later: a 10 ms timer restarted at 80 ms has not fired at 40 ms. */
    trec_t l = { 0 };
    l.t.data = &l;
    start = iop_update_time(loop);
    assert_int_equal(iop_timer_start(loop, &l.t, 10 * MS, 0, trec_cb), 0);
    assert_int_equal(iop_timer_start(loop, &l.t, 80 * MS, 0, trec_cb), 0);
    tu_run_for(loop, 40);
    assert_int_equal(l.calls, 0);
    assert_true(iop_timer_active(&l.t));
    assert_true(tu_run_until_count(loop, &l.calls, 1, 2000));
    assert_true(l.at[0] >= start + 80 * MS);

    /* Stopping an inactive timer is a no-op; stopping an active one disarms it. */
    iop_timer_stop(&l.t);
    assert_int_equal(iop_timer_start(loop, &l.t, 5 * MS, 0, trec_cb), 0);
    iop_timer_stop(&l.t);
    assert_false(iop_timer_active(&l.t));
    tu_run_for(loop, 20);
    assert_int_equal(l.calls, 1);
    iop_loop_destroy(loop);
}

void test_timer_stop_other_pending(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    fire_count = 0;
    /* Both due in the same iteration: the first stops the second, which must not run. */
    trec_t a = { .index = 0 }, b = { .index = 1 };
    a.t.data = &a;
    b.t.data = &b;
    a.victim = &b.t;
    assert_int_equal(iop_timer_start(loop, &a.t, 5 * MS, 0, trec_cb), 0);
    assert_int_equal(iop_timer_start(loop, &b.t, 5 * MS, 0, trec_cb), 0);
    assert_true(tu_run_until_count(loop, &a.calls, 1, 2000));
    tu_run_for(loop, 20);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 0);
    assert_false(iop_timer_active(&b.t));
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);
    iop_loop_destroy(loop);
}

void test_timeout_op_order(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    static const unsigned delays[] = { 30, 10, 20, 15, 15, 1 };
    enum { N = sizeof delays / sizeof delays[0] };
    rec_t r[N];
    memset(r, 0, sizeof r);
    uint64_t start = iop_update_time(loop);
    for (int i = 0; i < N; i++) {
        iop_prep_timeout(&r[i].op, delays[i] * MS, rec_cb, &r[i]);
        assert_int_equal(iop_submit(loop, &r[i].op), 0);
    }
    int done = 0;
    for (int spins = 0; spins < 200 && done < N; spins++) {
        tu_run_for(loop, 5);
        done = 0;
        for (int i = 0; i < N; i++)
            done += r[i].calls;
    }
    assert_int_equal(done, N);
    /* Expected completion order by index: 1 ms, 10, 15 (first), 15 (second), 20, 30. */
    static const int expect[] = { 5, 1, 3, 4, 2, 0 };
    for (int k = 0; k < N; k++) {
        rec_t *x = &r[expect[k]];
        assert_int_equal(x->calls, 1);
        assert_int_equal(x->res, 0);
        assert_true(x->at >= start + delays[expect[k]] * MS);
        if (k > 0)
            assert_true(r[expect[k - 1]].order < x->order);
    }
    iop_loop_destroy(loop);
}
