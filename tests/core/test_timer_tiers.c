/* The timer set's two tiers (heap and far bag) on a simulated clock: timers due
 * from now to 5 s out are pushed, removed and taken as the clock moves in steps
 * of up to 300 ms; after every advance the tiers' invariants hold, every due timer
 * is taken in (when, seq) order, none early, none lost, none twice. Removing from
 * the bag leaves a hole and touches no other timer's record. A reserved slot is
 * kept free for its holder. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "ioplex/alloc.h"
#include "timer_heap.h"

#define N 20000
#define SPAN_NS (5000ull * 1000 * 1000)

typedef struct rec {
    iop_timer_t t;
    int armed, taken;
} rec_t;

static uint32_t rng = 0x2545F491u;
static uint32_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

static uint64_t seq;

static void arm(iop__heap_t *h, rec_t *r, uint64_t when)
{
    if (r->armed)
        iop__heap_remove(h, &r->t);
    r->t.when = when;
    r->t.seq = seq++;
    assert_int_equal(iop__heap_push(h, &r->t), 0);
    r->armed = 1;
}

/* The bag's holes are exactly those on its free list. */
static void check_holes(const iop__heap_t *h)
{
    uint32_t holes = 0, listed = 0;
    for (uint32_t i = 0; i < h->nfar; i++)
        holes += !h->far[i].t;
    assert_int_equal(holes, h->holes);
    for (uint32_t i = h->free_hole; i; i = (uint32_t)h->far[i - 1].when) {
        assert_true(i <= h->nfar);
        assert_null(h->far[i - 1].t);
        assert_true(++listed <= holes);
    }
    assert_int_equal(listed, holes);
}

/* Every armed record is where its heap_idx says; the bag holds no timer due before
 * the horizon or before far_min; the heap is ordered. */
static void check(const iop__heap_t *h, const rec_t *v, int nrec)
{
    uint32_t armed = 0;
    for (int i = 0; i < nrec; i++)
        armed += (uint32_t)v[i].armed;
    assert_int_equal(h->n + h->nfar - h->holes, armed);
    check_holes(h);
    for (uint32_t i = 0; i < h->n; i++) {
        assert_int_equal(h->v[i].t->heap_idx, i + 1);
        assert_true(h->v[i].when == h->v[i].t->when);
        if (i)
            assert_true(h->v[(i - 1) / 4].when <= h->v[i].when);
    }
    for (uint32_t i = 0; i < h->nfar; i++) {
        if (!h->far[i].t)
            continue;
        assert_int_equal(h->far[i].t->heap_idx, (i + 1) | IOP__HEAP_FAR);
        assert_true(h->far[i].when >= h->horizon);
        assert_true(h->far[i].when >= h->far_min);
    }
}

static void test_tiers_simulated_clock(void **state)
{
    (void)state;
    rec_t *v = calloc(N, sizeof *v);
    assert_non_null(v);
    iop__heap_t h;
    iop__heap_init(&h);
    uint64_t now = 1000000000ull;
    for (int i = 0; i < N; i++)
        arm(&h, &v[i], now + next_rand() % SPAN_NS);
    int taken = 0, removed = 0, bag_seen = 0;
    uint64_t last_when = 0, last_seq = 0;
    for (int step = 0; step < 200 || h.n + h.nfar - h.holes; step++) {
        iop__heap_advance(&h, now);
        check(&h, v, N);
        bag_seen |= h.nfar > 0;
        /* Every timer due by now is in the heap: take them in order. */
        for (uint32_t i = 0; i < h.nfar; i++)
            assert_true(!h.far[i].t || h.far[i].when > now);
        /* The loop may sleep until next_when: no armed timer is due before it. */
        uint64_t first = UINT64_MAX;
        for (int i = 0; i < N; i++)
            if (v[i].armed && v[i].t.when < first)
                first = v[i].t.when;
        assert_true(iop__heap_next_when(&h) <= first);
        iop_timer_t *t;
        while (iop__heap_top_when(&h) <= now && (t = iop__heap_top(&h))) {
            rec_t *r = (rec_t *)((char *)t - offsetof(rec_t, t));
            iop__heap_remove(&h, t);
            assert_int_equal(t->heap_idx, 0);
            assert_false(r->taken);
            assert_true(t->when <= now);
            assert_true(t->when > last_when || (t->when == last_when && t->seq > last_seq) || !taken);
            last_when = t->when;
            last_seq = t->seq;
            r->armed = 0;
            r->taken = 1;
            taken++;
        }
        /* Some churn: removals anywhere, re-arms later and sooner, while the test runs. */
        if (step < 200) {
            for (int k = 0; k < 200; k++) {
                rec_t *r = &v[next_rand() % N];
                if (r->taken)
                    continue;
                if (next_rand() % 3 == 0 && r->armed) {
                    iop__heap_remove(&h, &r->t);
                    r->armed = 0;
                    removed++;
                } else {
                    uint64_t when = now + 1 + next_rand() % SPAN_NS;
                    if (when <= last_when)
                        when = last_when + 1;   /* never before what was already taken */
                    arm(&h, r, when);
                }
            }
        }
        uint64_t next = iop__heap_next_when(&h);
        /* The clock moves up to 300 ms, never past the next wake-up by much. */
        now += 1 + next_rand() % 300000000u;
        if (next != UINT64_MAX && now > next + 300000000u)
            now = next + 300000000u;
    }
    int never = 0;
    for (int i = 0; i < N; i++)
        never += !v[i].taken && !v[i].armed;
    assert_int_equal(taken + never, N);
    assert_true(removed > 0 && never > 0);
    assert_true(bag_seen);
    assert_int_equal(h.far_min, UINT64_MAX);
    iop__heap_free(&h);
    free(v);
}

/* A timer pushed for a time the clock has long passed, while others wait in the
 * bag, still goes to the heap after an advance and is due at once. */
static void test_tiers_past_deadline(void **state)
{
    (void)state;
    rec_t v[3] = { 0 };
    iop__heap_t h;
    iop__heap_init(&h);
    uint64_t now = 5000000000ull;
    iop__heap_advance(&h, now);
    arm(&h, &v[0], now + 10 * SPAN_NS);   /* far */
    assert_int_equal(h.nfar, 1);
    now += 3 * SPAN_NS;                   /* a long callback: the horizon is behind */
    arm(&h, &v[1], now - 1);
    arm(&h, &v[2], UINT64_MAX);           /* "never" */
    assert_true(iop__heap_next_when(&h) <= now);
    iop__heap_advance(&h, now);
    assert_true(iop__heap_top(&h) == &v[1].t);
    assert_true(iop__heap_top_when(&h) <= now);
    iop__heap_remove(&h, &v[1].t);
    uint64_t gone = v[0].t.when;
    iop__heap_remove(&h, &v[0].t);
    /* The bound stays where the removed timer was (a wake-up a little early at
     * worst) until an advance close to it walks the bag again. */
    assert_true(iop__heap_next_when(&h) <= gone);
    iop__heap_advance(&h, gone - IOP__HEAP_FAR_NS / 2);
    assert_int_equal(iop__heap_next_when(&h), UINT64_MAX);
    assert_int_equal(h.nfar, 1);
    iop__heap_remove(&h, &v[2].t);
    assert_int_equal(h.n + h.nfar, 0);
    iop__heap_free(&h);
}

/* A removal from the bag's middle writes no other record (it used to move the
 * last timer into the hole); the hole is taken by the next far timer, and when
 * holes are all the room left, a push closes them instead of growing. */
static void test_bag_holes(void **state)
{
    (void)state;
    enum { M = 64 };                      /* the arrays' first capacity */
    rec_t v[M + 8] = { 0 };
    iop__heap_t h;
    iop__heap_init(&h);
    uint64_t now = 1000000000ull;
    iop__heap_advance(&h, now);
    for (int i = 0; i < M; i++)
        arm(&h, &v[i], now + 10 * SPAN_NS + (uint64_t)i);
    assert_int_equal(h.nfar, M);
    assert_int_equal(h.cap, M);
    uint32_t idx[M];
    for (int i = 0; i < M; i++)
        idx[i] = v[i].t.heap_idx;
    for (int i = 10; i < 20; i++) {
        iop__heap_remove(&h, &v[i].t);
        v[i].armed = 0;
        for (int j = 0; j < M; j++)
            if (v[j].armed)
                assert_int_equal(v[j].t.heap_idx, idx[j]);
    }
    assert_int_equal(h.holes, 10);
    check(&h, v, M + 8);
    arm(&h, &v[10], now + 20 * SPAN_NS); /* into a hole */
    assert_int_equal(h.holes, 9);
    assert_int_equal(h.nfar, M);
    check(&h, v, M + 8);
    /* Near timers need heap room: the holes give it up, the arrays stay as they are. */
    for (int i = M; i < M + 8; i++)
        arm(&h, &v[i], now + 1000 + (uint64_t)i);
    assert_int_equal(h.cap, M);
    assert_int_equal(h.holes, 0);
    check(&h, v, M + 8);
    assert_true(iop__heap_top(&h) == &v[M].t);
    for (int i = 0; i < M + 8; i++)
        if (v[i].armed)
            iop__heap_remove(&h, &v[i].t);
    assert_int_equal(h.n + h.nfar + h.holes, 0);
    assert_int_equal(h.far_min, UINT64_MAX);
    iop__heap_free(&h);
}

/* A reserved slot stays free for its holder: ordinary pushes fill the arrays up to
 * it, and with no memory to grow them the holder's timer still goes in, once per
 * reservation; its removal gives the slot back to the holder. */
static void test_spare_slots(void **state)
{
    (void)state;
    enum { M = 64 };                      /* the arrays' first capacity */
    rec_t v[M + 2] = { 0 };
    iop__heap_t h;
    iop__heap_init(&h);
    uint64_t now = 1000000000ull;
    iop__heap_advance(&h, now);
    assert_int_equal(iop__heap_reserve(&h), 0);
    assert_int_equal(iop__heap_reserve(&h), 0);
    iop__alloc_fail_after(0, 0);         /* the arrays cannot grow from here */
    int n = 0;
    while (n < M + 2) {
        v[n].t.when = now + 1000 + (uint64_t)n;
        v[n].t.seq = seq++;
        if (iop__heap_push(&h, &v[n].t) < 0)
            break;
        n++;
    }
    assert_int_equal(n, M - 2);           /* two slots left for the holders */
    for (int i = n; i < M; i++) {
        v[i].t.when = now + 1000 + (uint64_t)i;
        v[i].t.seq = seq++;
        assert_int_equal(iop__heap_push_spare(&h, &v[i].t), 0);
        assert_true(v[i].t.flags & IOP__TF_SPARE);
    }
    v[M].t.when = now + 5000;
    v[M].t.seq = seq++;
    assert_int_equal(iop__heap_push_spare(&h, &v[M].t), -ENOMEM);   /* none left */
    iop__heap_remove(&h, &v[M - 1].t);   /* its holder's again */
    assert_false(v[M - 1].t.flags & IOP__TF_SPARE);
    assert_int_equal(iop__heap_push(&h, &v[M].t), -ENOMEM);
    assert_int_equal(iop__heap_push_spare(&h, &v[M].t), 0);
    assert_int_equal(h.n, M);
    iop__alloc_fail_after(-1, 0);
    iop__heap_remove(&h, &v[M].t);
    iop__heap_unreserve(&h);
    iop__heap_unreserve(&h);
    assert_int_equal(h.spare, 0);
    assert_int_equal(iop__heap_push(&h, &v[M].t), 0);   /* the holders' room is anyone's */
    assert_int_equal(h.cap, M);
    iop__heap_free(&h);
}

/* Few timers, so that the arrays' capacity is often reached: timers in and out of
 * the bag at random (most removed before they are due, the rest re-armed sooner or
 * later) against a plain list of what is armed. Every due timer is taken, in
 * (when, seq) order, none early; the bag's holes stay on its free list; the last
 * timer out of the bag takes every hole with it; and holes are reused or closed,
 * never grown over (the capacity stays within twice the most timers ever armed). */
static void test_bag_churn_model(void **state)
{
    (void)state;
    enum { K = 150, STEPS = 40000 };
    static rec_t v[K];
    memset(v, 0, sizeof v);
    iop__heap_t h;
    iop__heap_init(&h);
    uint64_t now = 3000000000ull;
    uint32_t most = 0, live = 0;
    int taken = 0, resets = 0, reused = 0;
    for (int step = 0; step < STEPS; step++) {
        rec_t *r = &v[next_rand() % K];
        /* Phases that fill the arrays and phases that empty them. */
        int fill = step / 2000 % 2 == 0;
        uint32_t op = next_rand() % 16;
        if (fill && op >= 8 && op < 12)
            op = 0;                       /* more arms than removals */
        else if (!fill && op < 8)
            op = 8 + op % 6;              /* no arms: they end up removed */
        if (op < 6) {                     /* a deadline seconds away: the bag */
            uint32_t holes = h.holes;
            live += !r->armed;
            arm(&h, r, now + IOP__HEAP_FAR_NS + next_rand() % (4 * IOP__HEAP_FAR_NS));
            reused += h.holes < holes && (r->t.heap_idx & IOP__HEAP_FAR);
        } else if (op < 8) {              /* a short one, the heap */
            live += !r->armed;
            arm(&h, r, now + next_rand() % (IOP__HEAP_FAR_NS / 2));
        } else if (op < 14) {             /* done before its deadline */
            if (r->armed) {
                int last = (r->t.heap_idx & IOP__HEAP_FAR) && h.nfar - h.holes == 1;
                iop__heap_remove(&h, &r->t);
                assert_int_equal(r->t.heap_idx, 0);
                r->armed = 0;
                live--;
                if (last) {
                    assert_int_equal(h.nfar, 0);
                    assert_int_equal(h.holes, 0);
                    assert_int_equal(h.free_hole, 0);
                    assert_int_equal(h.far_min, UINT64_MAX);
                    resets++;
                }
            }
        } else {                          /* the clock moves: take what is due */
            now += next_rand() % (IOP__HEAP_FAR_NS / 30);
            iop__heap_advance(&h, now);
            uint64_t last_when = 0, last_seq = 0;
            int first = 1;
            iop_timer_t *t;
            while (iop__heap_top_when(&h) <= now && (t = iop__heap_top(&h))) {
                rec_t *d = (rec_t *)((char *)t - offsetof(rec_t, t));
                assert_true(d->armed);
                assert_true(first || t->when > last_when || (t->when == last_when && t->seq > last_seq));
                first = 0;
                last_when = t->when;
                last_seq = t->seq;
                iop__heap_remove(&h, t);
                d->armed = 0;
                live--;
                taken++;
            }
            for (int i = 0; i < K; i++)
                assert_true(!v[i].armed || v[i].t.when > now);
            uint64_t low = UINT64_MAX;
            for (int i = 0; i < K; i++)
                if (v[i].armed && v[i].t.when < low)
                    low = v[i].t.when;
            assert_true(iop__heap_next_when(&h) <= low);
        }
        if (live > most)
            most = live;
        check(&h, v, K);
    }
    assert_true(h.cap <= 2 * most);
    print_message("taken %d resets %d reused %d most %u cap %u\n", taken, resets, reused, most, h.cap);
    assert_true(taken > 0 && resets > 0 && reused > 0);
    for (int i = 0; i < K; i++)
        if (v[i].armed)
            iop__heap_remove(&h, &v[i].t);
    assert_int_equal(h.n + h.nfar + h.holes, 0);
    iop__heap_free(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiers_simulated_clock),
        cmocka_unit_test(test_tiers_past_deadline),
        cmocka_unit_test(test_bag_holes),
        cmocka_unit_test(test_bag_churn_model),
        cmocka_unit_test(test_spare_slots),
    };
    return cmocka_run_group_tests_name("timer_tiers", tests, NULL, NULL);
}
