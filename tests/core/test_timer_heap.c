/* The timer heap under load: 100,000 timers started, restarted and stopped (some
 * from other timers' callbacks); the survivors fire once each, in (due, start) order. */
#include <stdlib.h>
#include "test_core.h"

#define N 100000
#define MAX_DELAY_US 200000u

typedef struct stimer {
    iop_timer_t t;
    uint64_t due;        /* absolute loop-clock ns of the latest start */
    uint64_t seq;        /* order of the latest start: breaks ties */
    int calls;
    int stopped;
} stimer_t;

typedef struct stress {
    iop_loop_t *loop;
    stimer_t *v;
    uint64_t next_seq;
    int pending;         /* started and neither fired nor stopped */
    int fired;
    uint64_t last_due, last_seq;
    int out_of_order;    /* first violation's index + 1 */
    int early;           /* fired before its due time */
    uint32_t rng;
} stress_t;

static stress_t S;

static void stress_cb(iop_timer_t *t);

static void arm(stimer_t *x, uint64_t delay)
{
    x->due = iop_now(S.loop) + delay;
    x->seq = S.next_seq++;
    assert_int_equal(iop_timer_start(S.loop, &x->t, delay, 0, stress_cb), 0);
}

static void disarm(stimer_t *x)
{
    if (!iop_timer_active(&x->t))
        return;
    iop_timer_stop(&x->t);
    assert_false(iop_timer_active(&x->t));
    x->stopped = 1;
    S.pending--;
}

static void stress_cb(iop_timer_t *t)
{
    stimer_t *x = t->data;
    x->calls++;
    S.fired++;
    S.pending--;
    if (x->stopped || x->calls > 1)
        fail_msg("timer %d fired %d times (stopped: %d)", (int)(x - S.v), x->calls, x->stopped);
    if (iop_now(S.loop) < x->due)
        S.early++;
    if (!S.out_of_order && (x->due < S.last_due || (x->due == S.last_due && x->seq < S.last_seq)))
        S.out_of_order = (int)(x - S.v) + 1;
    S.last_due = x->due;
    S.last_seq = x->seq;
    /* Now and then, stop a random other timer from inside this callback. */
    if (tu_rand(&S.rng) % 8 == 0)
        disarm(&S.v[tu_rand(&S.rng) % N]);
}

static int stress_drained(void *arg)
{
    (void)arg;
    return S.pending == 0;
}

void test_timer_heap_stress(void **state)
{
    (void)state;
    memset(&S, 0, sizeof S);
    S.loop = tu_loop_new();
    S.v = calloc(N, sizeof *S.v);
    assert_non_null(S.v);
    S.rng = 0x9E3779B9u;

    iop_update_time(S.loop);
    for (int i = 0; i < N; i++) {
        S.v[i].t.data = &S.v[i];
        arm(&S.v[i], (uint64_t)(tu_rand(&S.rng) % MAX_DELAY_US) * 1000u);
        S.pending++;
    }
    /* Re-arm some while active: earlier and later, moving them both ways in the heap. */
    for (int i = 0; i < N / 20; i++)
        arm(&S.v[tu_rand(&S.rng) % N], (uint64_t)(tu_rand(&S.rng) % MAX_DELAY_US) * 1000u);
    /* Stop a random half. */
    int stopped = 0;
    for (int i = 0; i < N; i++) {
        if (tu_rand(&S.rng) & 1) {
            disarm(&S.v[i]);
            stopped++;
        }
    }
    assert_int_equal(S.pending, N - stopped);

    uint64_t t0 = tu_clock_ms();
    assert_true(tu_run_until(S.loop, stress_drained, NULL, 15000));
    tu_run_nowait(S.loop, 2);
    if (S.out_of_order)
        fail_msg("timer %d fired out of (due, start) order", S.out_of_order - 1);
    assert_int_equal(S.early, 0);

    int fired = 0, never = 0;
    for (int i = 0; i < N; i++) {
        stimer_t *x = &S.v[i];
        assert_false(iop_timer_active(&x->t));
        if (x->stopped) {
            assert_int_equal(x->calls, 0);
            never++;
        } else {
            assert_int_equal(x->calls, 1);
            fired++;
        }
    }
    assert_int_equal(fired, S.fired);
    assert_int_equal(fired + never, N);
    assert_true(never > N / 2 - N / 50);   /* the half, plus those stopped by callbacks */
    assert_int_equal(iop_loop_run(S.loop, IOP_RUN_NOWAIT), 0);
    print_message("%d timers fired, %d stopped, in %llu ms\n", fired, never,
                  (unsigned long long)(tu_clock_ms() - t0));
    free(S.v);
    iop_loop_destroy(S.loop);
}

static int far_fired;
static void far_count(iop_timer_t *t)
{
    (void)t;
    far_fired++;
}

/* Timers seconds away wait in the loop's far bag; stopping some in its middle
 * leaves holes there. A short timer and a repeating one still fire among them,
 * restarts reuse the holes, and a loop destroyed with holes in its bag leaves
 * every timer still armed inactive. */
void test_far_timers_with_holes(void **state)
{
    (void)state;
    enum { M = 300 };
    iop_loop_t *loop = tu_loop_new();
    static iop_timer_t t[M];
    memset(t, 0, sizeof t);
    far_fired = 0;
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);   /* the clock, the horizon */
    for (int i = 0; i < M; i++)
        assert_int_equal(iop_timer_start(loop, &t[i], (5000u + (unsigned)i) * 1000000ull, 0, far_count), 0);
    for (int i = 1; i < M; i += 3)
        iop_timer_stop(&t[i]);             /* holes */
    for (int i = 1; i < M / 2; i += 3)     /* into the holes again */
        assert_int_equal(iop_timer_start(loop, &t[i], (7000u + (unsigned)i) * 1000000ull, 0, far_count), 0);
    iop_timer_t near, rep;
    memset(&near, 0, sizeof near);
    memset(&rep, 0, sizeof rep);
    assert_int_equal(iop_timer_start(loop, &near, 2000000, 0, far_count), 0);
    assert_int_equal(iop_timer_start(loop, &rep, 1000000, 1000000, far_count), 0);
    for (int i = 0; i < 200 && far_fired < 4; i++)
        assert_true(iop_loop_run(loop, IOP_RUN_ONCE) >= 0);
    assert_true(far_fired >= 4);           /* near once, rep at least three times */
    assert_false(iop_timer_active(&near));
    assert_true(iop_timer_active(&rep));
    iop_timer_stop(&rep);
    int armed = 0;
    for (int i = 0; i < M; i++)
        armed += iop_timer_active(&t[i]);
    assert_int_equal(armed, M - (M / 3) + (M / 2 - 1 + 2) / 3);
    iop_loop_destroy(loop);
    for (int i = 0; i < M; i++)
        assert_false(iop_timer_active(&t[i]));
}
