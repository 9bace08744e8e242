/* Process queue across real processes.
 *
 * Without an argument (ctest ipc.pqueue), plain processes: FIFO from one producer,
 * sizes 0..max and -EMSGSIZE, try variants at several capacities, deadlines,
 * close, many producers x many consumers moving every message exactly once, and
 * (test_pqueue_chaos.c) processes and threads that die holding a slot, a slot length or the
 * shared header written over, and kill -9 at random.
 *
 * With a backend name (ctest ipc.pqueue.<backend>), coroutines: gets and puts that
 * park while another process feeds the queue and the loop keeps firing a timer,
 * deadlines (their own and the scope's), cancel, close, and several coroutines
 * draining one producer. */
#include "test_pqueue.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- shared memory, setup ------------------------------------------------------------- */

iop_pqueue_t *pq;
static struct { void *p; size_t n; } maps[8];
static int nmaps;


void *pq_shared(size_t size)
{
    assert_true(nmaps < 8);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    maps[nmaps].p = p;
    maps[nmaps++].n = size;
    return p;
}

void pq_recreate(size_t capacity, size_t max_msg)
{
    if (st_loop && pq)
        iop_pqueue_forget(pq, st_loop);
    iop_pqueue_destroy(pq);
    pq = NULL;
    int r = iop_pqueue_create(&pq, capacity, max_msg);
    if (r < 0)
        fail_msg("iop_pqueue_create(%zu, %zu): %s: %s", capacity, max_msg, iop_strerror(r), iop_last_error());
}

int pq_setup(void **state)
{
    (void)state;
    alarm(50);
    kids_begin();
    nmaps = 0;
    pq = NULL;
    pq_recreate(8, 256);
    st_done = 0;
    st_failure[0] = '\0';
    return 0;
}

int pq_teardown(void **state)
{
    (void)state;
    kids_end();
    if (st_loop && pq)              /* the loop lives on: it must forget the eventfds */
        iop_pqueue_forget(pq, st_loop);
    iop_pqueue_destroy(pq);
    pq = NULL;
    while (nmaps > 0) {
        nmaps--;
        munmap(maps[nmaps].p, maps[nmaps].n);
    }
    alarm(0);
    return 0;
}

/* Message i: its number, then bytes that depend on it; 4 + i % 200 bytes long. */
static size_t make_msg(unsigned char *buf, uint32_t i)
{
    size_t len = 4 + i % 200;
    memcpy(buf, &i, 4);
    tu_fill_pattern(buf + 4, len - 4, i + 1);
    return len;
}

static int msg_ok(const unsigned char *buf, size_t len, uint32_t i)
{
    unsigned char want[256];
    return len == make_msg(want, i) && memcmp(buf, want, len) == 0;
}

/* ---- plain processes ---------------------------------------------------------------------- */

static void test_create_and_arguments(void **state)
{
    (void)state;
    iop_pqueue_t *q = (iop_pqueue_t *)&q;
    assert_int_equal(iop_pqueue_create(NULL, 4, 8), -EINVAL);
    assert_int_equal(iop_pqueue_create(&q, 0, 8), -EINVAL);
    assert_null(q);
    assert_int_equal(iop_pqueue_create(&q, (1u << 30) + 1, 8), -EINVAL);
    assert_int_equal(iop_pqueue_create(&q, 4, (64u << 20) + 1), -EINVAL);
    assert_true(strstr(iop_last_error(), "out of range") != NULL);

    assert_int_equal(iop_pqueue_create(&q, 5, 100), 0);
    assert_int_equal(iop_pqueue_capacity(q), 5);
    assert_int_equal(iop_pqueue_max_msg(q), 100);
    assert_int_equal(iop_pqueue_len(q), 0);
    assert_int_equal(iop_pqueue_closed(q), 0);
    assert_int_equal(iop_pqueue_put(q, NULL, 1, 0), -EINVAL);
    assert_int_equal(iop_pqueue_get(q, NULL, 1, 0), -EINVAL);
    iop_pqueue_destroy(q);
    iop_pqueue_destroy(NULL);
}

#define FIFO_N 20000

static void fifo_producer(void *arg)
{
    (void)arg;
    unsigned char buf[256];
    for (uint32_t i = 0; i < FIFO_N; i++) {
        size_t len = make_msg(buf, i);
        KID_CHECK(iop_pqueue_put(pq, buf, len, pq_after_ms(10000)) == 0);
    }
}

/* A small ring so that both sides wait on each other many times. */
static void test_fifo_from_one_producer(void **state)
{
    (void)state;
    pid_t p = kids_spawn(fifo_producer, NULL);
    unsigned char buf[256];
    for (uint32_t i = 0; i < FIFO_N; i++) {
        ssize_t n = iop_pqueue_get(pq, buf, sizeof buf, pq_after_ms(10000));
        if (n < 0 || !msg_ok(buf, (size_t)n, i))
            fail_msg("message %u: got %zd bytes starting %02x%02x%02x%02x", i, n, buf[0], buf[1], buf[2], buf[3]);
    }
    assert_int_equal(kids_reap(p, 5000), 0);
    kids_assert_ok();
    assert_int_equal(iop_pqueue_try_get(pq, buf, sizeof buf), -EAGAIN);
}

static void test_sizes_and_emsgsize(void **state)
{
    (void)state;
    pq_recreate(4, 300);
    unsigned char in[301], out[301];
    for (size_t len = 0; len <= 300; len++) {
        tu_fill_pattern(in, len, (uint32_t)len + 7);
        assert_int_equal(iop_pqueue_put(pq, in, len, 0), 0);
        memset(out, 0xee, sizeof out);
        assert_int_equal(iop_pqueue_get(pq, out, 300, 0), (ssize_t)len);
        assert_memory_equal(in, out, len);
        assert_int_equal(out[len], 0xee);          /* nothing written past it */
    }
    assert_int_equal(iop_pqueue_put(pq, in, 301, 0), -EMSGSIZE);
    assert_int_equal(iop_pqueue_try_put(pq, in, 301), -EMSGSIZE);

    /* Too long for the buffer: the message stays, whole, for a bigger buffer. */
    tu_fill_pattern(in, 100, 42);
    assert_int_equal(iop_pqueue_put(pq, in, 100, 0), 0);
    assert_int_equal(iop_pqueue_put(pq, in, 0, 0), 0);
    assert_int_equal(iop_pqueue_get(pq, out, 99, 0), -EMSGSIZE);
    assert_int_equal(iop_pqueue_try_get(pq, out, 10), -EMSGSIZE);
    assert_int_equal(iop_pqueue_len(pq), 2);
    assert_int_equal(iop_pqueue_get(pq, out, 100, 0), 100);
    assert_memory_equal(in, out, 100);
    assert_int_equal(iop_pqueue_get(pq, NULL, 0, 0), 0);   /* an empty message */
    assert_int_equal(iop_pqueue_len(pq), 0);
}

static void test_try_and_capacities(void **state)
{
    (void)state;
    static const size_t caps[] = { 1, 2, 3, 5, 8, 100 };
    for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
        pq_recreate(caps[c], 8);
        uint32_t v, out;
        for (v = 0; v < caps[c]; v++)
            assert_int_equal(iop_pqueue_try_put(pq, &v, sizeof v), 0);
        assert_int_equal(iop_pqueue_try_put(pq, &v, sizeof v), -EAGAIN);
        assert_int_equal(iop_pqueue_len(pq), caps[c]);
        /* Many laps, always full: every slot is reused many times. */
        for (uint32_t i = 0; i < 1000; i++) {
            assert_int_equal(iop_pqueue_try_get(pq, &out, sizeof out), sizeof out);
            assert_int_equal(out, i);
            v = i + (uint32_t)caps[c];
            assert_int_equal(iop_pqueue_try_put(pq, &v, sizeof v), 0);
        }
        for (uint32_t i = 1000; i < 1000 + caps[c]; i++) {
            assert_int_equal(iop_pqueue_try_get(pq, &out, sizeof out), sizeof out);
            assert_int_equal(out, i);
        }
        assert_int_equal(iop_pqueue_try_get(pq, &out, sizeof out), -EAGAIN);
        assert_int_equal(iop_pqueue_len(pq), 0);
    }
}

static void expect_timeout(ssize_t r, uint64_t t0, unsigned ms)
{
    uint64_t took = (tu_clock_ns() - t0) / MS;
    assert_int_equal(r, -ETIMEDOUT);
    assert_true(took + 1 >= ms);
    if (took > ms + 500)
        fail_msg("a %u ms deadline returned after %llu ms", ms, (unsigned long long)took);
}

static void test_deadlines(void **state)
{
    (void)state;
    pq_recreate(2, 8);
    char buf[8] = "x";
    uint64_t t0 = tu_clock_ns();
    expect_timeout(iop_pqueue_get(pq, buf, sizeof buf, pq_after_ms(80)), t0, 80);
    t0 = tu_clock_ns();
    expect_timeout(iop_pqueue_get(pq, buf, sizeof buf, t0 - 1), t0, 0);   /* already passed */
    assert_int_equal(iop_pqueue_put(pq, buf, 1, 0), 0);
    assert_int_equal(iop_pqueue_put(pq, buf, 1, 0), 0);
    t0 = tu_clock_ns();
    expect_timeout(iop_pqueue_put(pq, buf, 1, pq_after_ms(80)), t0, 80);
    assert_int_equal(iop_pqueue_len(pq), 2);
}

typedef struct wake_probe {
    _Atomic uint64_t parked_at, woke_at;
    _Atomic int result;
} wake_probe_t;

static wake_probe_t *probe;

static void blocked_getter(void *arg)
{
    (void)arg;
    char buf[8];
    probe->parked_at = tu_clock_ns();
    probe->result = (int)iop_pqueue_get(pq, buf, sizeof buf, pq_after_ms(10000));
    probe->woke_at = tu_clock_ns();
}

/* A getter asleep in another process wakes at once on a put (well within a slice),
 * then on close. */
static void test_put_wakes_a_sleeping_getter(void **state)
{
    (void)state;
    probe = pq_shared(sizeof *probe);
    pid_t p = kids_spawn(blocked_getter, NULL);
    while (!probe->parked_at)
        tu_sleep_ms(1);
    /* Long past its spin, asleep in poll, half-way through its third slice: the
     * slice alone would wake it some 25 ms after the put. */
    tu_sleep_ms(125);
    uint64_t t0 = tu_clock_ns();
    assert_int_equal(iop_pqueue_put(pq, "hi", 2, 0), 0);
    assert_int_equal(kids_reap(p, 5000), 0);
    assert_int_equal(probe->result, 2);
    uint64_t lag = (probe->woke_at - t0) / 1000;
    if (lag > pq_wake_bound_ms() * 1000)
        fail_msg("woke %llu us after the put", (unsigned long long)lag);
}

static void blocked_putter(void *arg)
{
    (void)arg;
    probe->parked_at = tu_clock_ns();
    probe->result = iop_pqueue_put(pq, "x", 1, pq_after_ms(10000));
    probe->woke_at = tu_clock_ns();
}

static void test_close(void **state)
{
    (void)state;
    char buf[8];
    for (int i = 0; i < 3; i++)
        assert_int_equal(iop_pqueue_put(pq, &i, sizeof i, 0), 0);
    iop_pqueue_close(pq);
    assert_int_equal(iop_pqueue_closed(pq), 1);
    assert_int_equal(iop_pqueue_put(pq, "x", 1, 0), -EPIPE);
    assert_int_equal(iop_pqueue_try_put(pq, "x", 1), -EPIPE);
    for (int i = 0; i < 3; i++) {               /* what was in it still comes out */
        int v = -1;
        assert_int_equal(iop_pqueue_get(pq, &v, sizeof v, 0), sizeof v);
        assert_int_equal(v, i);
    }
    assert_int_equal(iop_pqueue_get(pq, buf, sizeof buf, 0), -EPIPE);
    assert_int_equal(iop_pqueue_try_get(pq, buf, sizeof buf), -EPIPE);

    /* Sleepers in other processes wake with -EPIPE: a getter on an empty queue... */
    probe = pq_shared(sizeof *probe);
    pq_recreate(1, 8);
    pid_t p = kids_spawn(blocked_getter, NULL);
    while (!probe->parked_at)
        tu_sleep_ms(1);
    tu_sleep_ms(100);
    iop_pqueue_close(pq);
    assert_int_equal(kids_reap(p, 5000), 0);
    assert_int_equal(probe->result, -EPIPE);

    /* ...and a putter on a full one. */
    memset(probe, 0, sizeof *probe);
    pq_recreate(1, 8);
    assert_int_equal(iop_pqueue_put(pq, "a", 1, 0), 0);
    p = kids_spawn(blocked_putter, NULL);
    while (!probe->parked_at)
        tu_sleep_ms(1);
    tu_sleep_ms(125);                /* mid-slice, as above */
    uint64_t t0 = tu_clock_ns();
    iop_pqueue_close(pq);
    assert_int_equal(kids_reap(p, 5000), 0);
    assert_int_equal(probe->result, -EPIPE);
    assert_true(probe->woke_at - t0 < pq_wake_bound_ms() * MS);
    assert_int_equal(iop_pqueue_get(pq, buf, sizeof buf, 0), 1);   /* "a" is still there */
    assert_int_equal(iop_pqueue_get(pq, buf, sizeof buf, 0), -EPIPE);
}

/* ---- many producers x many consumers --------------------------------------------------------- */

#define MP_PRODUCERS 4
#define MP_CONSUMERS 3
#define MP_PER_PRODUCER 5000

typedef struct mp_state {
    _Atomic uint64_t seen[MP_PRODUCERS][(MP_PER_PRODUCER + 63) / 64];
    _Atomic int dups, disorder, got;
} mp_state_t;

static mp_state_t *mp;

typedef struct mp_msg {
    uint32_t producer, seq;
    unsigned char pad[24];
} mp_msg_t;

static void mp_producer(void *arg)
{
    mp_msg_t m = { .producer = (uint32_t)(intptr_t)arg };
    for (m.seq = 0; m.seq < MP_PER_PRODUCER; m.seq++) {
        memset(m.pad, (int)(m.seq ^ m.producer), sizeof m.pad);
        /* every size from 8 to 32 bytes */
        KID_CHECK(iop_pqueue_put(pq, &m, 8 + m.seq % 25, pq_after_ms(20000)) == 0);
    }
}

static void mp_consumer(void *arg)
{
    (void)arg;
    int64_t last[MP_PRODUCERS];
    for (int i = 0; i < MP_PRODUCERS; i++)
        last[i] = -1;
    for (;;) {
        mp_msg_t m;
        ssize_t n = iop_pqueue_get(pq, &m, sizeof m, pq_after_ms(20000));
        if (n == -EPIPE)
            return;
        KID_CHECK(n >= 8 && m.producer < MP_PRODUCERS && m.seq < MP_PER_PRODUCER);
        KID_CHECK((size_t)n == 8 + m.seq % 25);
        for (size_t i = 0; i + 8 < (size_t)n; i++)
            KID_CHECK(m.pad[i] == (unsigned char)(m.seq ^ m.producer));
        uint64_t bit = 1ull << (m.seq % 64);
        if (atomic_fetch_or(&mp->seen[m.producer][m.seq / 64], bit) & bit)
            mp->dups++;
        /* one producer's messages reach any one consumer in order */
        if ((int64_t)m.seq <= last[m.producer])
            mp->disorder++;
        last[m.producer] = m.seq;
        mp->got++;
    }
}

static void test_many_producers_many_consumers(void **state)
{
    (void)state;
    pq_recreate(16, 64);
    mp = pq_shared(sizeof *mp);
    pid_t prod[MP_PRODUCERS], cons[MP_CONSUMERS];
    for (int i = 0; i < MP_CONSUMERS; i++)
        cons[i] = kids_spawn(mp_consumer, NULL);
    for (int i = 0; i < MP_PRODUCERS; i++)
        prod[i] = kids_spawn(mp_producer, (void *)(intptr_t)i);
    for (int i = 0; i < MP_PRODUCERS; i++)
        assert_int_equal(kids_reap(prod[i], 25000), 0);
    iop_pqueue_close(pq);           /* the consumers drain it, then see -EPIPE */
    for (int i = 0; i < MP_CONSUMERS; i++)
        assert_int_equal(kids_reap(cons[i], 10000), 0);
    kids_assert_ok();
    assert_int_equal(mp->got, MP_PRODUCERS * MP_PER_PRODUCER);
    assert_int_equal(mp->dups, 0);
    assert_int_equal(mp->disorder, 0);
    for (int p = 0; p < MP_PRODUCERS; p++)
        for (int s = 0; s < MP_PER_PRODUCER; s++)
            if (!(mp->seen[p][s / 64] & (1ull << (s % 64))))
                fail_msg("message %d of producer %d never arrived", s, p);
}

/* ---- coroutines --------------------------------------------------------------------------------- */

static int ticks;
static void tick(iop_timer_t *t) { (void)t; ticks++; }

typedef struct coro_get {
    ssize_t n;
    uint32_t value;
    uint64_t deadline_ms;
    uint64_t woke_at;
} coro_get_t;

static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *getter(void *arg)
{
    coro_get_t *g = arg;
    g->n = iop_pqueue_get(pq, &g->value, sizeof g->value, g->deadline_ms ? pq_after_ms(g->deadline_ms) : 0);
    g->woke_at = tu_clock_ns();
    st_done++;
    return NULL;
}

static void late_putter(void *arg)
{
    uint32_t n = (uint32_t)(intptr_t)arg;
    tu_sleep_ms(125);                /* mid-slice: see test_put_wakes_a_sleeping_getter */
    probe->parked_at = tu_clock_ns();
    for (uint32_t v = 1; v <= n; v++)
        KID_CHECK(iop_pqueue_put(pq, &v, sizeof v, pq_after_ms(5000)) == 0);
}

/* Three coroutines park in get while another process puts 125 ms later; the loop
 * keeps firing a 5 ms timer meanwhile, the process sleeps (no busy loop), and the
 * puts wake the coroutines at once, not at the end of a slice. */
static void test_coro_gets_park_while_loop_runs(void **state)
{
    (void)state;
    probe = pq_shared(sizeof *probe);
    coro_get_t g[3] = { { .deadline_ms = 5000 }, { .deadline_ms = 5000 }, { .deadline_ms = 0 } };
    for (int i = 0; i < 3; i++)
        st_go(getter, &g[i], "getter");
    iop_timer_t t = { 0 };
    ticks = 0;
    iop_timer_start(st_loop, &t, 5 * MS, 5 * MS, tick);
    uint64_t t0 = tu_clock_ns(), cpu0 = cpu_ns();
    pid_t p = kids_spawn(late_putter, (void *)(intptr_t)3);
    st_run_until_done(3, 5000);
    uint64_t took = (tu_clock_ns() - t0) / MS, cpu = (cpu_ns() - cpu0) / MS;
    iop_timer_stop(&t);
    assert_int_equal(kids_reap(p, 5000), 0);
    kids_assert_ok();
    uint32_t seen = 0;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(g[i].n, sizeof(uint32_t));
        assert_true(g[i].value >= 1 && g[i].value <= 3);
        seen |= 1u << g[i].value;
        uint64_t lag = (g[i].woke_at - probe->parked_at) / 1000;
        if (lag > pq_wake_bound_ms() * 1000)
            fail_msg("a getter woke %llu us after the puts began", (unsigned long long)lag);
    }
    assert_int_equal(seen, 0xe);                /* each message to one coroutine */
    assert_true(took >= 120);
    if (ticks < 10)
        fail_msg("the timer fired %d times in %llu ms: the loop was blocked", ticks, (unsigned long long)took);
    if (cpu * 2 > took)
        fail_msg("%llu ms of CPU in %llu ms of waiting: not asleep", (unsigned long long)cpu, (unsigned long long)took);
}

typedef struct coro_put {
    int r;
    uint32_t value;
} coro_put_t;

static void *putter(void *arg)
{
    coro_put_t *p = arg;
    p->r = iop_pqueue_put(pq, &p->value, sizeof p->value, pq_after_ms(5000));
    st_done++;
    return NULL;
}

static void late_getter(void *arg)
{
    (void)arg;
    tu_sleep_ms(150);
    uint32_t got = 0;
    for (int i = 0; i < 4; i++) {
        uint32_t v = 0;
        KID_CHECK(iop_pqueue_get(pq, &v, sizeof v, pq_after_ms(5000)) == sizeof v);
        KID_CHECK(i >= 2 || v == (uint32_t)i + 1);   /* the two put before come first */
        got |= 1u << v;
    }
    KID_CHECK(got == 0x1e);
}

static void test_coro_puts_park_on_full_queue(void **state)
{
    (void)state;
    pq_recreate(2, 8);
    for (uint32_t v = 1; v <= 2; v++)
        assert_int_equal(iop_pqueue_put(pq, &v, sizeof v, 0), 0);
    coro_put_t p[2] = { { .value = 3 }, { .value = 4 } };
    st_go(putter, &p[0], "putter");
    st_go(putter, &p[1], "putter");
    iop_timer_t t = { 0 };
    ticks = 0;
    iop_timer_start(st_loop, &t, 5 * MS, 5 * MS, tick);
    pid_t k = kids_spawn(late_getter, NULL);
    st_run_until_done(2, 5000);
    iop_timer_stop(&t);
    assert_int_equal(kids_reap(k, 5000), 0);
    kids_assert_ok();
    assert_int_equal(p[0].r, 0);
    assert_int_equal(p[1].r, 0);
    assert_true(ticks >= 10);
}

static void *deadline_checks(void *arg)
{
    (void)arg;
    uint32_t v = 0;
    uint64_t t0 = tu_clock_ns();
    CHECK_EQ(iop_pqueue_get(pq, &v, sizeof v, pq_after_ms(60)), -ETIMEDOUT);
    uint64_t took = (tu_clock_ns() - t0) / MS;
    CHECK(took >= 59 && took < 1000);

    iop_deadline_push(pq_after_ms(60));         /* the scope's deadline applies too */
    t0 = tu_clock_ns();
    CHECK_EQ(iop_pqueue_get(pq, &v, sizeof v, 0), -ETIMEDOUT);
    took = (tu_clock_ns() - t0) / MS;
    CHECK(took >= 59 && took < 1000);
    CHECK_EQ(iop_pqueue_try_get(pq, &v, sizeof v), -EAGAIN);
    iop_deadline_pop();

    CHECK_EQ(iop_pqueue_put(pq, &v, sizeof v, 0), 0);        /* capacity 1: now full */
    t0 = tu_clock_ns();
    CHECK_EQ(iop_pqueue_put(pq, &v, sizeof v, pq_after_ms(60)), -ETIMEDOUT);
    took = (tu_clock_ns() - t0) / MS;
    CHECK(took >= 59 && took < 1000);
    st_done++;
    return NULL;
}

static void test_coro_deadlines(void **state)
{
    (void)state;
    pq_recreate(1, 8);
    st_go(deadline_checks, NULL, "deadlines");
    st_run_until_done(1, 5000);
}

static void *cancel_after(void *arg)
{
    iop_coro_t *victim = arg;
    iop_sleep(50 * MS);
    CHECK_EQ(iop_cancel(victim), 0);
    void *res = NULL;
    CHECK_EQ(iop_join(victim, &res, 0), 0);
    st_done++;
    return NULL;
}

static void test_coro_cancel(void **state)
{
    (void)state;
    coro_get_t g = { .deadline_ms = 0 };
    iop_coro_t *c = NULL;
    iop_coro_opts_t o = { .size = sizeof o, .name = "getter" };
    assert_int_equal(iop_go(st_loop, getter, &g, &o, &c), 0);
    st_go(cancel_after, c, "canceller");
    st_run_until_done(2, 5000);
    assert_int_equal(g.n, -ECANCELED);
    assert_int_equal(iop_pqueue_len(pq), 0);
}

static void late_closer(void *arg)
{
    (void)arg;
    tu_sleep_ms(100);
    iop_pqueue_close(pq);
}

static void test_coro_close_wakes(void **state)
{
    (void)state;
    coro_get_t g[2] = { { .deadline_ms = 5000 }, { .deadline_ms = 0 } };
    st_go(getter, &g[0], "getter");
    st_go(getter, &g[1], "getter");
    pid_t k = kids_spawn(late_closer, NULL);
    uint64_t t0 = tu_clock_ns();
    st_run_until_done(2, 5000);
    assert_true(tu_clock_ns() - t0 < 1000 * MS);
    assert_int_equal(kids_reap(k, 5000), 0);
    assert_int_equal(g[0].n, -EPIPE);
    assert_int_equal(g[1].n, -EPIPE);
}

#define DRAIN_N 3000

static struct {
    int got[DRAIN_N];
    int total, bad;
} drain;

static void *drainer(void *arg)
{
    (void)arg;
    for (;;) {
        unsigned char buf[256];
        ssize_t n = iop_pqueue_get(pq, buf, sizeof buf, pq_after_ms(10000));
        if (n == -EPIPE)
            break;
        uint32_t i;
        memcpy(&i, buf, 4);
        if (n < 4 || i >= DRAIN_N || !msg_ok(buf, (size_t)n, i)) {
            drain.bad++;
            break;
        }
        drain.got[i]++;
        drain.total++;
    }
    st_done++;
    return NULL;
}

static void drain_producer(void *arg)
{
    (void)arg;
    unsigned char buf[256];
    for (uint32_t i = 0; i < DRAIN_N; i++) {
        size_t len = make_msg(buf, i);
        KID_CHECK(iop_pqueue_put(pq, buf, len, pq_after_ms(10000)) == 0);
        if (i % 500 == 0)
            tu_sleep_ms(5);          /* let the coroutines fall asleep now and then */
    }
    iop_pqueue_close(pq);
}

/* Three coroutines of one loop share the queue's eventfd with one producer
 * process: each message reaches exactly one of them. */
static void test_coro_drain(void **state)
{
    (void)state;
    memset(&drain, 0, sizeof drain);
    for (int i = 0; i < 3; i++)
        st_go(drainer, NULL, "drainer");
    pid_t k = kids_spawn(drain_producer, NULL);
    st_run_until_done(3, 20000);
    assert_int_equal(kids_reap(k, 5000), 0);
    kids_assert_ok();
    assert_int_equal(drain.bad, 0);
    assert_int_equal(drain.total, DRAIN_N);
    for (int i = 0; i < DRAIN_N; i++)
        assert_int_equal(drain.got[i], 1);
}

/* ---- main ------------------------------------------------------------------------------------------ */

#define T(f) cmocka_unit_test_setup_teardown(f, pq_setup, pq_teardown)

/* The coroutine tests share one loop. (A loop per test made ASan builds report a
 * stack-buffer-underflow in liburing: the destroyed loop's coroutine stacks were
 * unmapped with their shadow still poisoned, and the next io_uring ring was mapped
 * at the same address.) */
static int coro_group_setup(void **state)
{
    return st_setup(state);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        const struct CMUnitTest plain[] = {
            T(test_create_and_arguments),
            T(test_fifo_from_one_producer),
            T(test_sizes_and_emsgsize),
            T(test_try_and_capacities),
            T(test_deadlines),
            T(test_put_wakes_a_sleeping_getter),
            T(test_close),
            T(test_many_producers_many_consumers),
            T(test_dead_putter_is_skipped),
            T(test_dead_getter_slot_is_reclaimed),
            T(test_ended_thread_slot_is_repaired),
            T(test_scribbled_length_is_dropped),
            T(test_scribbled_header_is_not_trusted),
            T(test_kill_chaos),
        };
        return cmocka_run_group_tests_name("ipc.pqueue", plain, NULL, NULL);
    }
    if (tu_backend_set(argv[1]) < 0) {
        fprintf(stderr, "unknown backend mode '%s'\n", argv[1]);
        return 2;
    }
    const struct CMUnitTest coro[] = {
        T(test_coro_gets_park_while_loop_runs),
        T(test_coro_puts_park_on_full_queue),
        T(test_coro_deadlines),
        T(test_coro_cancel),
        T(test_coro_close_wakes),
        T(test_coro_drain),
    };
    /* One loop for the whole group: see the note at coro_group_setup. */
    return cmocka_run_group_tests_name("ipc.pqueue.coro", coro, coro_group_setup, st_teardown);
}
