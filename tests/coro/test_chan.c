/* Channels and select, between coroutines of one loop: FIFO order through bounded
 * channels, unbuffered rendezvous, close, select (ready cases, fairness, deadline,
 * cancel), and -EPERM outside coroutines. Runs on the backend named by argv[1].
 *
 * Coroutines do not call cmocka's asserts (a failure would longjmp off their stack):
 * CHECK records the first failure and the test asserts there was none once the loop
 * has run. */
#include "sched_test.h"

/* Yields until *flag is set, at most max times; returns the flag. */
static int yield_until(const int *flag, int max)
{
    for (int i = 0; i < max && !*flag; i++)
        iop_yield();
    return *flag;
}

static iop_chan_t *chan_new(size_t elem_size, size_t cap)
{
    iop_chan_t *ch = NULL;
    assert_int_equal(iop_chan_new(&ch, elem_size, cap), 0);
    assert_non_null(ch);
    return ch;
}

/* ---- outside coroutines ------------------------------------------------------------------- */

static void test_new_and_outside_coroutine(void **state)
{
    (void)state;
    iop_chan_t *ch = NULL;
    assert_int_equal(iop_chan_new(NULL, 4, 1), -EINVAL);
    assert_int_equal(iop_chan_new(&ch, SIZE_MAX / 2, 4), -EINVAL);
    assert_null(ch);

    /* What completes at once works anywhere; what would wait is -EPERM here. */
    ch = chan_new(sizeof(int), 2);
    int v = 1, out = 0;
    assert_int_equal(iop_chan_send(ch, &v, 0), 0);
    v = 2;
    assert_int_equal(iop_chan_send(ch, &v, 0), 0);
    assert_int_equal(iop_chan_send(ch, &v, 0), -EPERM);   /* full */
    assert_int_equal(iop_chan_recv(ch, &out, 0), 0);
    assert_int_equal(out, 1);
    iop_select_case_t cases[2] = { { .ch = ch, .elem = &out }, { .ch = NULL } };
    assert_int_equal(iop_select(cases, 2, 0), 0);
    assert_int_equal(out, 2);
    assert_int_equal(cases[0].res, 0);
    assert_int_equal(iop_chan_recv(ch, &out, 0), -EPERM);  /* empty */
    assert_int_equal(iop_select(cases, 2, 0), -EPERM);
    assert_int_equal(iop_select(cases, -1, 0), -EINVAL);
    iop_chan_close(ch);
    assert_int_equal(iop_chan_recv(ch, &out, 0), -EPIPE);
    iop_chan_free(ch);

    iop_chan_t *u = chan_new(sizeof(int), 0);
    assert_int_equal(iop_chan_send(u, &v, 0), -EPERM);     /* no receiver */
    iop_chan_free(u);
}

/* ---- FIFO through a bounded channel -------------------------------------------------------- */

#define FIFO_PRODUCERS 4
#define FIFO_PER_PRODUCER 100

static struct {
    iop_chan_t *ch;
    int entered[FIFO_PRODUCERS * FIFO_PER_PRODUCER];   /* in the order sends began */
    int nentered;
    int received[FIFO_PRODUCERS * FIFO_PER_PRODUCER];
    int nreceived;
} fifo;

static void *fifo_producer(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < FIFO_PER_PRODUCER; i++) {
        int v = id * 1000 + i;
        fifo.entered[fifo.nentered++] = v;   /* nothing runs between this and the send */
        CHECK_EQ(iop_chan_send(fifo.ch, &v, 0), 0);
        if (i % 3 == id % 3)
            iop_yield();
    }
    st_done++;
    return NULL;
}

static void *fifo_consumer(void *arg)
{
    (void)arg;
    for (int i = 0; i < FIFO_PRODUCERS * FIFO_PER_PRODUCER; i++) {
        int v = -1;
        CHECK_EQ(iop_chan_recv(fifo.ch, &v, 0), 0);
        fifo.received[fifo.nreceived++] = v;
        if (i % 7 == 0)
            iop_yield();
    }
    st_done++;
    return NULL;
}

/* Several producers, blocked senders included, one consumer: elements come out in
 * exactly the order their sends began. */
static void test_bounded_fifo(void **state)
{
    (void)state;
    memset(&fifo, 0, sizeof fifo);
    fifo.ch = chan_new(sizeof(int), 3);
    for (int p = 0; p < FIFO_PRODUCERS; p++)
        st_go(fifo_producer, (void *)(intptr_t)p, NULL);
    st_go(fifo_consumer, NULL, NULL);
    st_run_until_done(FIFO_PRODUCERS + 1, 10000);
    assert_int_equal(fifo.nreceived, FIFO_PRODUCERS * FIFO_PER_PRODUCER);
    assert_memory_equal(fifo.received, fifo.entered, sizeof fifo.received);
    iop_chan_free(fifo.ch);
}

#define MPMC_N 3
#define MPMC_PER 200

static struct {
    iop_chan_t *ch;
    int producers_left;
    unsigned char seen[MPMC_N][MPMC_PER];
    int total;
    int ended_with_epipe;
} mpmc;

static void *mpmc_producer(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < MPMC_PER; i++) {
        int v = id * 1000 + i;
        CHECK_EQ(iop_chan_send(mpmc.ch, &v, 0), 0);
        if ((i + id) % 5 == 0)
            iop_yield();
    }
    if (--mpmc.producers_left == 0)
        iop_chan_close(mpmc.ch);
    st_done++;
    return NULL;
}

static void *mpmc_consumer(void *arg)
{
    int id = (int)(intptr_t)arg;
    int last[MPMC_N] = { -1, -1, -1 };
    for (int guard = 0; guard < MPMC_N * MPMC_PER + 1; guard++) {
        int v;
        int r = iop_chan_recv(mpmc.ch, &v, 0);
        if (r == -EPIPE) {
            mpmc.ended_with_epipe++;
            break;
        }
        CHECK_EQ(r, 0);
        int p = v / 1000, i = v % 1000;
        CHECK(p >= 0 && p < MPMC_N && i >= 0 && i < MPMC_PER);
        if (p < 0 || p >= MPMC_N || i < 0 || i >= MPMC_PER)
            break;
        CHECK(i > last[p]);        /* each consumer sees each producer in order */
        last[p] = i;
        CHECK(!mpmc.seen[p][i]);   /* and every element is received once */
        mpmc.seen[p][i] = 1;
        mpmc.total++;
        if ((guard + id) % 4 == 0)
            iop_yield();
    }
    st_done++;
    return NULL;
}

static void test_bounded_mpmc_close(void **state)
{
    (void)state;
    memset(&mpmc, 0, sizeof mpmc);
    mpmc.ch = chan_new(sizeof(int), 4);
    mpmc.producers_left = MPMC_N;
    for (int i = 0; i < MPMC_N; i++) {
        st_go(mpmc_consumer, (void *)(intptr_t)i, NULL);
        st_go(mpmc_producer, (void *)(intptr_t)i, NULL);
    }
    st_run_until_done(2 * MPMC_N, 10000);
    assert_int_equal(mpmc.total, MPMC_N * MPMC_PER);
    assert_int_equal(mpmc.ended_with_epipe, MPMC_N);
    iop_chan_free(mpmc.ch);
}

/* Receivers that wait are served in the order they came. */
static struct {
    iop_chan_t *ch;
    int parked;
    int got[3];
} rq;

static void *rq_receiver(void *arg)
{
    int id = (int)(intptr_t)arg;
    rq.parked++;
    CHECK_EQ(iop_chan_recv(rq.ch, &rq.got[id], 0), 0);
    st_done++;
    return NULL;
}

static void *rq_sender(void *arg)
{
    (void)arg;
    for (int i = 0; i < 20 && rq.parked < 3; i++)
        iop_yield();
    CHECK_EQ(rq.parked, 3);         /* counted just before they park */
    for (int i = 0; i < 3; i++) {
        int v = 10 + i;
        CHECK_EQ(iop_chan_send(rq.ch, &v, 0), 0);
    }
    st_done++;
    return NULL;
}

static void test_receivers_fifo(void **state)
{
    (void)state;
    for (size_t cap = 0; cap <= 2; cap += 2) {
        memset(&rq, 0, sizeof rq);
        st_done = 0;
        rq.ch = chan_new(sizeof(int), cap);
        for (int i = 0; i < 3; i++)
            st_go(rq_receiver, (void *)(intptr_t)i, NULL);
        st_go(rq_sender, NULL, NULL);
        st_run_until_done(4, 10000);
        assert_int_equal(rq.got[0], 10);
        assert_int_equal(rq.got[1], 11);
        assert_int_equal(rq.got[2], 12);
        iop_chan_free(rq.ch);
    }
}

/* ---- unbuffered rendezvous ---------------------------------------------------------------- */

static struct {
    iop_chan_t *ch;
    int send_returned;
    int value;                     /* the receiver's destination */
    int receiver_waiting;
} rv;

static void *rv_sender_first(void *arg)
{
    (void)arg;
    int v = 42;
    CHECK_EQ(iop_chan_send(rv.ch, &v, 0), 0);
    rv.send_returned = 1;
    CHECK_EQ(rv.value, 42);
    st_done++;
    return NULL;
}

static void *rv_late_receiver(void *arg)
{
    (void)arg;
    for (int i = 0; i < 5; i++) {   /* the sender waits all this time */
        iop_yield();
        CHECK(!rv.send_returned);
    }
    CHECK_EQ(iop_chan_recv(rv.ch, &rv.value, 0), 0);
    CHECK_EQ(rv.value, 42);
    st_done++;
    return NULL;
}

static void *rv_receiver_first(void *arg)
{
    (void)arg;
    rv.receiver_waiting = 1;
    CHECK_EQ(iop_chan_recv(rv.ch, &rv.value, 0), 0);
    CHECK_EQ(rv.value, 43);
    st_done++;
    return NULL;
}

static void *rv_late_sender(void *arg)
{
    (void)arg;
    CHECK(yield_until(&rv.receiver_waiting, 10));
    iop_yield();
    int v = 43;
    CHECK_EQ(iop_chan_send(rv.ch, &v, 0), 0);
    CHECK_EQ(rv.value, 43);        /* in the receiver's hands before we go on */
    st_done++;
    return NULL;
}

static void *rv_timeouts(void *arg)
{
    (void)arg;
    int v = 44, out = 0;
    uint64_t t0 = tu_clock_ns();
    CHECK_EQ(iop_chan_send(rv.ch, &v, st_after_ms(20)), -ETIMEDOUT);
    CHECK(tu_clock_ns() - t0 >= 15 * MS);
    /* the timed-out element was withdrawn: nobody is there to take from */
    CHECK_EQ(iop_chan_recv(rv.ch, &out, st_after_ms(10)), -ETIMEDOUT);
    CHECK_EQ(out, 0);
    st_done++;
    return NULL;
}

static void test_unbuffered_rendezvous(void **state)
{
    (void)state;
    memset(&rv, 0, sizeof rv);
    rv.ch = chan_new(sizeof(int), 0);
    st_go(rv_sender_first, NULL, NULL);
    st_go(rv_late_receiver, NULL, NULL);
    st_run_until_done(2, 10000);
    assert_int_equal(rv.value, 42);

    iop_chan_t *ch = rv.ch;         /* left empty: used again */
    memset(&rv, 0, sizeof rv);
    rv.ch = ch;
    st_go(rv_receiver_first, NULL, NULL);
    st_go(rv_late_sender, NULL, NULL);
    st_run_until_done(4, 10000);

    st_go(rv_timeouts, NULL, NULL);
    st_run_until_done(5, 10000);
    iop_chan_free(rv.ch);
}

/* ---- close ---------------------------------------------------------------------------------- */

static struct {
    iop_chan_t *ch;
    int parked;
    int epipe;
} cl;

static void *cl_drain(void *arg)
{
    (void)arg;
    iop_chan_t *ch = chan_new(sizeof(int), 4);
    for (int v = 1; v <= 3; v++)
        CHECK_EQ(iop_chan_send(ch, &v, 0), 0);
    iop_chan_close(ch);
    iop_chan_close(ch);            /* twice is harmless */
    int v = 9;
    CHECK_EQ(iop_chan_send(ch, &v, 0), -EPIPE);
    for (int want = 1; want <= 3; want++) {
        CHECK_EQ(iop_chan_recv(ch, &v, 0), 0);
        CHECK_EQ(v, want);
    }
    CHECK_EQ(iop_chan_recv(ch, &v, 0), -EPIPE);
    CHECK_EQ(iop_chan_recv(ch, &v, 0), -EPIPE);
    iop_chan_free(ch);
    st_done++;
    return NULL;
}

static void *cl_waiting_receiver(void *arg)
{
    (void)arg;
    int v;
    cl.parked++;
    if (iop_chan_recv(cl.ch, &v, 0) == -EPIPE)
        cl.epipe++;
    st_done++;
    return NULL;
}

static void *cl_waiting_sender(void *arg)
{
    int v = (int)(intptr_t)arg;
    cl.parked++;
    if (iop_chan_send(cl.ch, &v, 0) == -EPIPE)
        cl.epipe++;
    st_done++;
    return NULL;
}

static void *cl_closer(void *arg)
{
    int want = (int)(intptr_t)arg;
    for (int i = 0; i < 20 && cl.parked < want; i++)
        iop_yield();
    CHECK_EQ(cl.parked, want);
    iop_yield();                    /* the last one parks */
    iop_chan_close(cl.ch);
    st_done++;
    return NULL;
}

static void test_close(void **state)
{
    (void)state;
    st_go(cl_drain, NULL, NULL);
    st_run_until_done(1, 10000);

    /* receivers waiting on an empty channel */
    memset(&cl, 0, sizeof cl);
    cl.ch = chan_new(sizeof(int), 2);
    st_go(cl_waiting_receiver, NULL, NULL);
    st_go(cl_waiting_receiver, NULL, NULL);
    st_go(cl_closer, (void *)(intptr_t)2, NULL);
    st_run_until_done(4, 10000);
    assert_int_equal(cl.epipe, 2);
    iop_chan_free(cl.ch);

    /* senders waiting on a full channel: -EPIPE, and the buffered element stays */
    memset(&cl, 0, sizeof cl);
    cl.ch = chan_new(sizeof(int), 1);
    int v = 5;
    assert_int_equal(iop_chan_send(cl.ch, &v, 0), 0);
    st_go(cl_waiting_sender, (void *)(intptr_t)6, NULL);
    st_go(cl_waiting_sender, (void *)(intptr_t)7, NULL);
    st_go(cl_closer, (void *)(intptr_t)2, NULL);
    st_run_until_done(7, 10000);
    assert_int_equal(cl.epipe, 2);
    v = 0;
    assert_int_equal(iop_chan_recv(cl.ch, &v, 0), 0);
    assert_int_equal(v, 5);
    assert_int_equal(iop_chan_recv(cl.ch, &v, 0), -EPIPE);
    iop_chan_free(cl.ch);

    /* a sender waiting on an unbuffered channel */
    memset(&cl, 0, sizeof cl);
    cl.ch = chan_new(sizeof(int), 0);
    st_go(cl_waiting_sender, (void *)(intptr_t)8, NULL);
    st_go(cl_closer, (void *)(intptr_t)1, NULL);
    st_run_until_done(9, 10000);
    assert_int_equal(cl.epipe, 1);
    iop_chan_free(cl.ch);
}

/* ---- select ------------------------------------------------------------------------------- */

static void *sel_ready(void *arg)
{
    (void)arg;
    iop_chan_t *b[3];
    for (int i = 0; i < 3; i++)
        b[i] = chan_new(sizeof(int), 1);
    int v = 77, out[3] = { 0, 0, 0 };
    CHECK_EQ(iop_chan_send(b[1], &v, 0), 0);

    /* the one receive that can proceed */
    iop_select_case_t rc[4] = {
        { .ch = b[0], .elem = &out[0] }, { .ch = NULL }, { .ch = b[1], .elem = &out[1] },
        { .ch = b[2], .elem = &out[2] },
    };
    rc[2].res = 1;
    CHECK_EQ(iop_select(rc, 4, 0), 2);
    CHECK_EQ(rc[2].res, 0);
    CHECK_EQ(out[1], 77);

    /* a send that can proceed, next to a receive that cannot */
    int s = 88;
    iop_select_case_t mixed[2] = { { .ch = b[0], .elem = &out[0] }, { .ch = b[2], .send = 1, .elem = &s } };
    CHECK_EQ(iop_select(mixed, 2, st_after_ms(1000)), 1);
    CHECK_EQ(mixed[1].res, 0);
    CHECK_EQ(iop_chan_recv(b[2], &v, 0), 0);
    CHECK_EQ(v, 88);

    /* a closed channel is ready, with -EPIPE */
    iop_chan_close(b[0]);
    iop_select_case_t cc[1] = { { .ch = b[0], .elem = &out[0] } };
    CHECK_EQ(iop_select(cc, 1, 0), 0);
    CHECK_EQ(cc[0].res, -EPIPE);
    cc[0].send = 1;
    cc[0].res = 0;
    CHECK_EQ(iop_select(cc, 1, 0), 0);
    CHECK_EQ(cc[0].res, -EPIPE);

    for (int i = 0; i < 3; i++)
        iop_chan_free(b[i]);
    st_done++;
    return NULL;
}

static void test_select_ready(void **state)
{
    (void)state;
    st_go(sel_ready, NULL, NULL);
    st_run_until_done(1, 10000);
}

/* A parked select is woken once, by the first case that fires; its other waiters
 * are gone at once. */
static struct {
    iop_chan_t *u[3];
    int parked;
    int returns;
    int index;
    int res;
    int value;
} sp;

static void *sp_selector(void *arg)
{
    (void)arg;
    int out0 = 0, s = 5;
    iop_select_case_t c[3] = {
        { .ch = sp.u[0], .elem = &out0 },
        { .ch = sp.u[1], .elem = &sp.value },
        { .ch = sp.u[2], .send = 1, .elem = &s },
    };
    sp.parked = 1;
    sp.index = iop_select(c, 3, 0);
    sp.returns++;
    if (sp.index >= 0)
        sp.res = c[sp.index].res;
    CHECK_EQ(out0, 0);
    st_done++;
    return NULL;
}

static void *sp_sender(void *arg)
{
    (void)arg;
    CHECK(yield_until(&sp.parked, 10));
    int v = 7;
    CHECK_EQ(iop_chan_send(sp.u[1], &v, 0), 0);
    CHECK_EQ(sp.value, 7);
    /* the selector's other cases no longer wait */
    v = 8;
    CHECK_EQ(iop_chan_send(sp.u[0], &v, st_after_ms(20)), -ETIMEDOUT);
    CHECK_EQ(iop_chan_recv(sp.u[2], &v, st_after_ms(10)), -ETIMEDOUT);
    st_done++;
    return NULL;
}

static void *sp_receiver(void *arg)
{
    (void)arg;
    CHECK(yield_until(&sp.parked, 10));
    int v = 0;
    CHECK_EQ(iop_chan_recv(sp.u[2], &v, 0), 0);   /* takes the selector's send */
    CHECK_EQ(v, 5);
    st_done++;
    return NULL;
}

static void test_select_parks(void **state)
{
    (void)state;
    memset(&sp, 0, sizeof sp);
    for (int i = 0; i < 3; i++)
        sp.u[i] = chan_new(sizeof(int), 0);
    st_go(sp_selector, NULL, NULL);
    st_go(sp_sender, NULL, NULL);
    st_run_until_done(2, 10000);
    assert_int_equal(sp.returns, 1);
    assert_int_equal(sp.index, 1);
    assert_int_equal(sp.res, 0);
    assert_int_equal(sp.value, 7);

    /* the send case wins this time */
    sp.parked = sp.returns = 0;
    sp.index = -1;
    st_go(sp_selector, NULL, NULL);
    st_go(sp_receiver, NULL, NULL);
    st_run_until_done(4, 10000);
    assert_int_equal(sp.returns, 1);
    assert_int_equal(sp.index, 2);
    assert_int_equal(sp.res, 0);

    /* closing a channel fires its case with -EPIPE */
    sp.parked = sp.returns = 0;
    sp.index = -1;
    st_go(sp_selector, NULL, NULL);
    tu_run_nowait(st_loop, 3);
    assert_int_equal(sp.parked, 1);
    assert_int_equal(sp.returns, 0);
    iop_chan_close(sp.u[0]);
    st_run_until_done(5, 10000);
    assert_int_equal(sp.returns, 1);
    assert_int_equal(sp.index, 0);
    assert_int_equal(sp.res, -EPIPE);
    for (int i = 0; i < 3; i++)
        iop_chan_free(sp.u[i]);
}

/* Among cases ready together each is taken about as often: 3,000 selects over three
 * always-ready channels put each between 20 % and 47 % (expected 33 %, sd 0.9 %). */
#define FAIR_ROUNDS 3000

static int fair_counts[3];

static void *fair_selector(void *arg)
{
    (void)arg;
    iop_chan_t *ch[3];
    int v = 1, out = 0;
    iop_select_case_t c[3];
    for (int i = 0; i < 3; i++) {
        ch[i] = chan_new(sizeof(int), 1);
        CHECK_EQ(iop_chan_send(ch[i], &v, 0), 0);
        c[i] = (iop_select_case_t){ .ch = ch[i], .elem = &out };
    }
    for (int r = 0; r < FAIR_ROUNDS; r++) {
        int k = iop_select(c, 3, 0);
        CHECK(k >= 0 && k < 3);
        if (k < 0 || k >= 3)
            break;
        fair_counts[k]++;
        CHECK_EQ(iop_chan_send(ch[k], &v, 0), 0);   /* ready again */
    }
    for (int i = 0; i < 3; i++)
        iop_chan_free(ch[i]);
    st_done++;
    return NULL;
}

static void test_select_fair(void **state)
{
    (void)state;
    memset(fair_counts, 0, sizeof fair_counts);
    st_go(fair_selector, NULL, NULL);
    st_run_until_done(1, 10000);
    assert_int_equal(fair_counts[0] + fair_counts[1] + fair_counts[2], FAIR_ROUNDS);
    for (int i = 0; i < 3; i++) {
        print_message("case %d chosen %d times of %d\n", i, fair_counts[i], FAIR_ROUNDS);
        assert_in_range(fair_counts[i], FAIR_ROUNDS * 20 / 100, FAIR_ROUNDS * 47 / 100);
    }
}

/* A select that timed out leaves no waiter behind, even while its coroutine is
 * parked again elsewhere (where a stale waiter would look alive). */
static struct {
    iop_chan_t *a, *b, *c, *done;
    int timed_out;
} sd;

static void *sd_selector(void *arg)
{
    (void)arg;
    int out = 0, s = 3, x = 0;
    iop_select_case_t c[3] = {
        { .ch = sd.a, .send = 1, .elem = &s }, { .ch = sd.b, .elem = &out }, { .ch = sd.c, .elem = &out },
    };
    uint64_t t0 = tu_clock_ns();
    CHECK_EQ(iop_select(c, 3, st_after_ms(20)), -ETIMEDOUT);
    CHECK(tu_clock_ns() - t0 >= 15 * MS);
    sd.timed_out = 1;
    CHECK_EQ(iop_chan_recv(sd.done, &x, st_after_ms(1000)), 0);   /* parked while probed */
    CHECK_EQ(x, 1);
    CHECK_EQ(out, 0);
    /* no case at all: only the deadline */
    CHECK_EQ(iop_select(NULL, 0, st_after_ms(5)), -ETIMEDOUT);
    st_done++;
    return NULL;
}

static void *sd_prober(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000 && !sd.timed_out; i++)
        iop_sleep(MS);
    CHECK(sd.timed_out);
    int v = 0;
    CHECK_EQ(iop_chan_recv(sd.a, &v, st_after_ms(5)), -ETIMEDOUT);
    CHECK_EQ(v, 0);
    v = 4;
    CHECK_EQ(iop_chan_send(sd.b, &v, st_after_ms(5)), -ETIMEDOUT);
    CHECK_EQ(iop_chan_send(sd.c, &v, 0), 0);      /* stays in the buffer */
    v = 0;
    CHECK_EQ(iop_chan_recv(sd.c, &v, 0), 0);
    CHECK_EQ(v, 4);
    v = 1;
    CHECK_EQ(iop_chan_send(sd.done, &v, 0), 0);
    st_done++;
    return NULL;
}

static void test_select_deadline(void **state)
{
    (void)state;
    memset(&sd, 0, sizeof sd);
    sd.a = chan_new(sizeof(int), 0);
    sd.b = chan_new(sizeof(int), 0);
    sd.c = chan_new(sizeof(int), 2);
    sd.done = chan_new(sizeof(int), 0);
    st_go(sd_selector, NULL, NULL);
    st_go(sd_prober, NULL, NULL);
    st_run_until_done(2, 10000);
    iop_chan_free(sd.a);
    iop_chan_free(sd.b);
    iop_chan_free(sd.c);
    iop_chan_free(sd.done);
}

/* Cancelling a coroutine parked in select takes all its waiters away. */
static struct {
    iop_chan_t *u0, *b1, *u2;
    int parked;
    int resumed;
    int res;
    iop_coro_t *selector;
} sc;

static void *sc_selector(void *arg)
{
    (void)arg;
    int o0 = 0, o1 = 0, s = 9;
    iop_select_case_t c[3] = {
        { .ch = sc.u0, .elem = &o0 }, { .ch = sc.b1, .elem = &o1 }, { .ch = sc.u2, .send = 1, .elem = &s },
    };
    sc.parked = 1;
    sc.res = iop_select(c, 3, 0);
    sc.resumed++;
    CHECK_EQ(o0, 0);
    CHECK_EQ(o1, 0);
    /* cancelled for good: even calls that would not wait fail, so loops unwind */
    iop_chan_t *room = chan_new(sizeof(int), 1);
    CHECK_EQ(iop_chan_send(room, &s, 0), -ECANCELED);
    CHECK_EQ(iop_chan_recv(room, &o0, 0), -ECANCELED);
    iop_select_case_t r[1] = { { .ch = room, .send = 1, .elem = &s } };
    CHECK_EQ(iop_select(r, 1, 0), -ECANCELED);
    iop_chan_free(room);
    return NULL;
}

static void *sc_canceller(void *arg)
{
    (void)arg;
    CHECK(yield_until(&sc.parked, 10));
    CHECK_EQ(iop_cancel(sc.selector), 0);
    /* right away, before the selector has run again (its waiters in b1 and u2 are
     * still queued then) ... */
    int v = 2;
    CHECK_EQ(iop_chan_send(sc.b1, &v, 0), 0);     /* into the buffer, not to the selector */
    CHECK_EQ(iop_chan_recv(sc.u2, &v, st_after_ms(10)), -ETIMEDOUT);
    CHECK_EQ(v, 2);
    /* ... and once it has */
    CHECK_EQ(iop_chan_send(sc.u0, &v, st_after_ms(10)), -ETIMEDOUT);
    CHECK_EQ(iop_chan_recv(sc.u2, &v, st_after_ms(10)), -ETIMEDOUT);
    v = 0;
    CHECK_EQ(iop_chan_recv(sc.b1, &v, 0), 0);
    CHECK_EQ(v, 2);
    st_done++;
    return NULL;
}

static void test_select_cancel(void **state)
{
    (void)state;
    memset(&sc, 0, sizeof sc);
    sc.u0 = chan_new(sizeof(int), 0);
    sc.b1 = chan_new(sizeof(int), 1);
    sc.u2 = chan_new(sizeof(int), 0);
    assert_int_equal(iop_go(st_loop, sc_selector, NULL, NULL, &sc.selector), 0);
    st_go(sc_canceller, NULL, NULL);
    st_run_until_done(1, 10000);
    void *result = (void *)1;
    assert_int_equal(iop_join(sc.selector, &result, 0), 0);
    assert_null(result);
    assert_int_equal(sc.resumed, 1);
    assert_int_equal(sc.res, -ECANCELED);
    iop_chan_free(sc.u0);
    iop_chan_free(sc.b1);
    iop_chan_free(sc.u2);
}

/* ---- the hot path ------------------------------------------------------------------------------ */

#define PINGS 1000

static struct {
    iop_chan_t *ch;
    uint64_t allocs;
    int sum;
} hp;

static void *hp_sender(void *arg)
{
    (void)arg;
    iop_alloc_stats_t a, b;
    int i = 1;
    for (; i <= 100; i++)          /* warm-up: the loop's and backend's first turns */
        CHECK_EQ(iop_chan_send(hp.ch, &i, 0), 0);
    iop_alloc_stats(&a);
    for (; i < PINGS; i++)
        CHECK_EQ(iop_chan_send(hp.ch, &i, 0), 0);
    /* before the last one: the receiver cannot have ended (which may allocate) */
    iop_alloc_stats(&b);
    hp.allocs = b.allocs - a.allocs;
    int last = PINGS;
    CHECK_EQ(iop_chan_send(hp.ch, &last, 0), 0);
    st_done++;
    return NULL;
}

static void *hp_receiver(void *arg)
{
    (void)arg;
    for (int i = 1; i <= PINGS; i++) {
        int v = 0;
        CHECK_EQ(iop_chan_recv(hp.ch, &v, 0), 0);
        CHECK_EQ(v, i);
        hp.sum += v;
    }
    st_done++;
    return NULL;
}

/* An unbuffered hand-off allocates nothing. */
static void test_handoff_no_alloc(void **state)
{
    (void)state;
    memset(&hp, 0, sizeof hp);
    hp.ch = chan_new(sizeof(int), 0);
    st_go(hp_receiver, NULL, NULL);
    st_go(hp_sender, NULL, NULL);
    st_run_until_done(2, 10000);
    assert_int_equal(hp.sum, PINGS * (PINGS + 1) / 2);
    assert_int_equal(hp.allocs, 0);
    iop_chan_free(hp.ch);
}

/* ---- element sizes ------------------------------------------------------------------------- */

/* Elements of every size the copy treats apart (0, 8, 16) and others (1, 24), through
 * a buffered channel small enough that senders wait, and an unbuffered one: each
 * arrives whole and in order. 0-byte elements carry no data (elem may be NULL) and
 * allow a capacity no memory could hold. */
#define ES_N 12

static struct {
    iop_chan_t *ch;
    size_t size;
    unsigned char got[ES_N][24];
} es;

static void es_fill(unsigned char *b, size_t size, int i)
{
    for (size_t k = 0; k < size; k++)
        b[k] = (unsigned char)(i * 31 + (int)k * 7 + 1);
}

static void *es_sender(void *arg)
{
    (void)arg;
    for (int i = 0; i < ES_N; i++) {
        unsigned char b[24];
        es_fill(b, es.size, i);
        CHECK_EQ(iop_chan_send(es.ch, es.size ? b : NULL, 0), 0);
        memset(b, 0xee, sizeof b);   /* the channel kept its own copy */
        if (i % 4 == 0)
            iop_yield();
    }
    iop_chan_close(es.ch);
    st_done++;
    return NULL;
}

static void *es_receiver(void *arg)
{
    (void)arg;
    for (int i = 0; i < ES_N; i++) {
        CHECK_EQ(iop_chan_recv(es.ch, es.size ? es.got[i] : NULL, 0), 0);
        if (i % 3 == 0)
            iop_yield();
    }
    CHECK_EQ(iop_chan_recv(es.ch, es.size ? es.got[0] + 0 : NULL, 0), -EPIPE);
    st_done++;
    return NULL;
}

static void test_element_sizes(void **state)
{
    (void)state;
    static const size_t sizes[] = { 0, 1, 8, 16, 24 };
    static const size_t caps[] = { 0, 3 };
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        for (size_t ci = 0; ci < 2; ci++) {
            memset(&es, 0, sizeof es);
            es.size = sizes[si];
            es.ch = chan_new(es.size, caps[ci]);
            st_done = 0;
            st_go(es_receiver, NULL, NULL);
            st_go(es_sender, NULL, NULL);
            st_run_until_done(2, 10000);
            for (int i = 0; i < ES_N; i++) {
                unsigned char want[24];
                es_fill(want, es.size, i);
                if (es.size)
                    assert_memory_equal(es.got[i], want, es.size);
            }
            iop_chan_free(es.ch);
        }
    }

    /* 0-byte elements: a capacity of 2^40 costs nothing, and counts exactly */
    iop_chan_t *sig = chan_new(0, (size_t)1 << 40);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(iop_chan_send(sig, NULL, 0), 0);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(iop_chan_recv(sig, NULL, 0), 0);
    assert_int_equal(iop_chan_recv(sig, NULL, 0), -EPERM);   /* empty, outside a coroutine */
    iop_chan_free(sig);
}

int main(int argc, char **argv)
{
    if (tu_backend_set(tu_backend_from_args(argc, argv)) < 0) {
        fprintf(stderr, "unknown backend mode '%s'\n", argv[1]);
        return 2;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_and_outside_coroutine),
        cmocka_unit_test_setup_teardown(test_bounded_fifo, st_setup, st_teardown),
        cmocka_unit_test_setup_teardown(test_bounded_mpmc_close, st_setup, st_teardown),
        cmocka_unit_test_setup_teardown(test_receivers_fifo, st_setup, st_teardown),
        cmocka_unit_test_setup_teardown(test_unbuffered_rendezvous, st_setup, st_teardown),
        cmocka_unit_test_setup_teardown(test_close, st_setup, st_teardown),
        cmocka_unit_test_setup_teardown(test_select_ready, st_setup, st_teardown),
        cmocka_unit_test_setup_teardown(test_select_parks, st_setup, st_teardown),
        cmocka_unit_test_setup_teardown(test_select_fair, st_setup, st_teardown),
        cmocka_unit_test_setup_teardown(test_select_deadline, st_setup, st_teardown),
        cmocka_unit_test_setup_teardown(test_select_cancel, st_setup, st_teardown),
        cmocka_unit_test_setup_teardown(test_handoff_no_alloc, st_setup, st_teardown),
        cmocka_unit_test_setup_teardown(test_element_sizes, st_setup, st_teardown),
    };
    return cmocka_run_group_tests_name("coro.chan", tests, NULL, NULL);
}
