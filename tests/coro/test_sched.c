/* The scheduler: spawn and join, fair turns, the loop staying live while coroutines
 * yield, greenlet switches with values and parents, scoped deadlines, cancel,
 * nurseries, and what blocking outside a coroutine does. Runs on the backend named
 * by argv[1]. */
#include <pthread.h>
#include <string.h>
#include <unistd.h>
#include "sched_test.h"

/* ---- spawn and join ------------------------------------------------------------------- */

static int start_order[8], nstarted;

static void *double_it(void *arg)
{
    start_order[nstarted++] = (int)(intptr_t)arg;
    CHECK(iop_self() != NULL);
    CHECK(iop_coro_loop(iop_self()) == st_loop);
    return (void *)((intptr_t)arg * 2);
}

static void test_spawn_join_from_outside(void **state)
{
    (void)state;
    nstarted = 0;
    iop_coro_t *c[4];
    for (int i = 0; i < 4; i++) {
        iop_coro_opts_t o = { .size = sizeof o, .name = i == 0 ? "first" : NULL };
        assert_int_equal(iop_go(st_loop, double_it, (void *)(intptr_t)(i + 1), &o, &c[i]), 0);
    }
    assert_string_equal(iop_coro_name(c[0]), "first");
    assert_int_equal(nstarted, 0);               /* runnable, not run: the loop's next turn */
    assert_false(iop_coro_done(c[3]));
    /* Joining the last runs the loop; all four run in spawn order in one turn. */
    void *res = NULL;
    assert_int_equal(iop_join(c[3], &res, 0), 0);
    assert_int_equal((intptr_t)res, 8);
    assert_int_equal(nstarted, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(start_order[i], i + 1);
    for (int i = 0; i < 3; i++) {
        assert_true(iop_coro_done(c[i]));
        assert_int_equal(iop_join(c[i], &res, 0), 0);
        assert_int_equal((intptr_t)res, 2 * (i + 1));
    }
    assert_null(iop_self());
    st_assert_ok();
}

static void *sleeper(void *arg)
{
    int r = iop_sleep((uint64_t)(intptr_t)arg * MS);
    CHECK_EQ(r, 0);
    return (void *)(intptr_t)(r == 0 ? 77 : r);
}

static void *joiner(void *arg)
{
    (void)arg;
    iop_coro_t *child;
    CHECK_EQ(iop_go(st_loop, sleeper, (void *)(intptr_t)30, NULL, &child), 0);
    void *res = NULL;
    uint64_t t0 = tu_clock_ns();
    CHECK_EQ(iop_join(child, &res, st_after_ms(5)), -ETIMEDOUT);   /* still sleeping */
    CHECK(tu_clock_ns() - t0 >= 4 * MS);
    CHECK(!iop_coro_done(child));
    CHECK_EQ(iop_join(child, &res, 0), 0);
    CHECK_EQ((intptr_t)res, 77);
    CHECK_EQ(iop_join(iop_self(), &res, 0), -EDEADLK);
    st_done++;
    return NULL;
}

static void test_join_from_coroutine(void **state)
{
    (void)state;
    st_go(joiner, NULL, "joiner");
    st_run_until_done(1, 5000);
}

/* Join from outside: a deadline, then a deadlock (nothing can end it), then a cancel. */
static void *wait_forever(void *arg)
{
    (void)arg;
    int r = iop_sleep_until(0);   /* only a cancel ends this */
    return (void *)(intptr_t)r;
}

static void test_join_outside_deadline_deadlock(void **state)
{
    (void)state;
    iop_coro_t *c;
    assert_int_equal(iop_go(st_loop, wait_forever, NULL, NULL, &c), 0);
    uint64_t t0 = tu_clock_ns();
    void *res = NULL;
    assert_int_equal(iop_join(c, &res, st_after_ms(20)), -ETIMEDOUT);
    assert_true(tu_clock_ns() - t0 >= 15 * MS);
    assert_int_equal(iop_join(c, &res, 0), -EDEADLK);   /* nothing left to wake it */
    assert_int_equal(iop_cancel(c), 0);                 /* from main: it runs at once */
    assert_true(iop_coro_done(c));
    assert_int_equal(iop_join(c, &res, 0), 0);
    assert_int_equal((intptr_t)res, -ECANCELED);
}

/* Work another thread has already posted is on the loop: a join from main runs it
 * (here it cancels the coroutine joined) instead of calling the wait a deadlock.
 * The poster is joined before iop_join, so the post is queued when the join
 * looks; it used to see no op, watch or timer and fail with -EDEADLK at once. */
static iop_post_t cancel_post;
static iop_coro_t *to_cancel;

static void cancel_posted(iop_post_t *p)
{
    (void)p;
    iop_cancel(to_cancel);
}

static void *post_cancel_thread(void *arg)
{
    (void)arg;
    iop_loop_post(st_loop, &cancel_post, cancel_posted);
    return NULL;
}

static void test_join_runs_posted_work(void **state)
{
    (void)state;
    assert_int_equal(iop_go(st_loop, wait_forever, NULL, NULL, &to_cancel), 0);
    assert_int_equal(iop_loop_run(st_loop, IOP_RUN_NOWAIT), 0);   /* it parks */
    assert_false(iop_coro_done(to_cancel));
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, post_cancel_thread, NULL), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    void *res = NULL;
    assert_int_equal(iop_join(to_cancel, &res, 0), 0);
    assert_int_equal((intptr_t)res, -ECANCELED);
}

/* Detached coroutines free themselves; records and pooled stacks are reused, so
 * spawn + run + join allocates nothing once warm. */
static void *count_up(void *arg)
{
    (void)arg;
    st_done++;
    return NULL;
}

/* Coroutines per round below; fewer under TSan (TU_TSAN). */
#define MANY (TU_TSAN ? 200 : 1000)

static void test_detached_and_no_alloc(void **state)
{
    (void)state;
    for (int i = 0; i < MANY; i++)
        st_go(count_up, NULL, NULL);
    st_run_until_done(MANY, 5000);

    iop_coro_t *c;
    for (int i = 0; i < 200; i++) {   /* warm up */
        assert_int_equal(iop_go(st_loop, count_up, NULL, NULL, &c), 0);
        assert_int_equal(iop_join(c, NULL, 0), 0);
    }
    iop_alloc_stats_t a, b;
    iop_alloc_stats(&a);
    for (int i = 0; i < MANY; i++) {
        assert_int_equal(iop_go(st_loop, count_up, NULL, NULL, &c), 0);
        assert_int_equal(iop_join(c, NULL, 0), 0);
    }
    iop_alloc_stats(&b);
    assert_int_equal(b.allocs, a.allocs);
    assert_int_equal(st_done, 2 * MANY + 200);
}

/* opts.arg_size: the argument is copied onto the new coroutine's stack at spawn,
 * so the caller's copy may change or go away before it runs. */
typedef struct copied {
    uint64_t words[40];
    char tag[24];
} copied_t;

static void *read_copy(void *arg)
{
    const copied_t *a = arg;
    CHECK(((uintptr_t)a & 15) == 0);
    for (int i = 0; i < 40; i++)
        CHECK_EQ(a->words[i], (uint64_t)i * 0x9E3779B97F4A7C15ull);
    CHECK(strcmp(a->tag, "copied at spawn") == 0);
    uint64_t big[64];            /* the coroutine's own frames sit below the copy */
    memset(big, 0xA5, sizeof big);
    CHECK_EQ(a->words[39], 39 * 0x9E3779B97F4A7C15ull);
    st_done++;
    return (void *)(uintptr_t)big[3];
}

static void test_go_copies_arg(void **state)
{
    (void)state;
    static const iop_coro_opts_t o = { .size = sizeof o, .arg_size = sizeof(copied_t) };
    for (int k = 0; k < 20; k++) {
        copied_t a;
        for (int i = 0; i < 40; i++)
            a.words[i] = (uint64_t)i * 0x9E3779B97F4A7C15ull;
        snprintf(a.tag, sizeof a.tag, "copied at spawn");
        assert_int_equal(iop_go(st_loop, read_copy, &a, &o, NULL), 0);
        memset(&a, 0, sizeof a);   /* the caller's copy changes before the coroutine runs */
    }
    st_run_until_done(20, 5000);
    /* A NULL argument with a size, and a size past a quarter of the stack. */
    iop_coro_opts_t bad = o;
    assert_int_equal(iop_go(st_loop, read_copy, NULL, &bad, NULL), -EINVAL);
    static char huge[32 * 1024];
    bad.arg_size = sizeof huge;
    assert_int_equal(iop_go(st_loop, read_copy, huge, &bad, NULL), -EINVAL);
    assert_non_null(strstr(iop_last_error(), "quarter"));
    /* A greenlet's fn gets its first switch's value: no copy to give it. */
    bad = o;
    iop_coro_t *g = NULL;
    copied_t a;
    assert_int_equal(iop_coro_create(st_loop, read_copy, &a, &bad, &g), -EINVAL);
    assert_null(g);
    /* An opts record from before arg_size (a smaller size) copies nothing. */
    bad = (iop_coro_opts_t){ .size = offsetof(iop_coro_opts_t, arg_size), .arg_size = 1 << 30 };
    iop_coro_t *c;
    assert_int_equal(iop_go(st_loop, count_up, NULL, &bad, &c), 0);
    assert_int_equal(iop_join(c, NULL, 0), 0);
}

/* ---- fairness ------------------------------------------------------------------------------ */

#define FAIR_N 3
#define FAIR_ROUNDS 50
static int fair_seq[FAIR_N * FAIR_ROUNDS], fair_len;

static void *fair_worker(void *arg)
{
    for (int i = 0; i < FAIR_ROUNDS; i++) {
        fair_seq[fair_len++] = (int)(intptr_t)arg;
        CHECK_EQ(iop_yield(), 0);
    }
    st_done++;
    return NULL;
}

static void test_yield_round_robin(void **state)
{
    (void)state;
    fair_len = 0;
    for (int i = 0; i < FAIR_N; i++)
        st_go(fair_worker, (void *)(intptr_t)i, "fair");
    st_run_until_done(FAIR_N, 5000);
    assert_int_equal(fair_len, FAIR_N * FAIR_ROUNDS);
    /* Every turn runs each worker once, in the same order: none starves another. */
    for (int i = 0; i < fair_len; i++)
        assert_int_equal(fair_seq[i], i % FAIR_N);
}

/* Coroutines woken by other coroutines run in the same turn: a hundred spawn + join
 * rounds take a couple of loop iterations, not a hundred. */
static void *twice(void *arg) { return (void *)((intptr_t)arg * 2); }

static void *spawn_join_rounds(void *arg)
{
    (void)arg;
    for (int i = 0; i < 100; i++) {
        iop_coro_t *c;
        CHECK_EQ(iop_go(st_loop, twice, (void *)(intptr_t)i, NULL, &c), 0);
        void *res = NULL;
        CHECK_EQ(iop_join(c, &res, 0), 0);
        CHECK_EQ((intptr_t)res, 2 * i);
    }
    return NULL;
}

static void test_wakeups_run_in_same_turn(void **state)
{
    (void)state;
    iop_loop_stats_t a, b;
    iop_loop_get_stats(st_loop, &a);
    iop_coro_t *c;
    assert_int_equal(iop_go(st_loop, spawn_join_rounds, NULL, NULL, &c), 0);
    assert_int_equal(iop_join(c, NULL, 0), 0);
    iop_loop_get_stats(st_loop, &b);
    st_assert_ok();
    assert_true(b.iterations - a.iterations <= 3);
}

/* A coroutine that only yields must not stop the loop: an op (pipe read) and a
 * timer still complete while it spins. */
static int io_seen, timer_seen, spins;
static int spin_pipe[2];

static void pipe_read_done(iop_op_t *op, int res)
{
    (void)op;
    io_seen = res;
}

static void spin_timer_fired(iop_timer_t *t)
{
    (void)t;
    timer_seen = 1;
}

static void *spinner(void *arg)
{
    (void)arg;
    CHECK_EQ(write(spin_pipe[1], "x", 1), 1);   /* the data arrives while we spin */
    while ((!io_seen || !timer_seen) && spins < 1000000) {
        spins++;
        iop_yield();
    }
    st_done++;
    return NULL;
}

static void test_loop_serves_io_while_yielding(void **state)
{
    (void)state;
    io_seen = timer_seen = spins = 0;
    tu_pipe(spin_pipe);
    char buf[4];
    iop_op_t op;
    iop_prep_read(&op, spin_pipe[0], buf, sizeof buf, -1, pipe_read_done, NULL);
    assert_int_equal(iop_submit(st_loop, &op), 0);
    iop_timer_t t = { 0 };
    assert_int_equal(iop_timer_start(st_loop, &t, 2 * MS, 0, spin_timer_fired), 0);
    st_go(spinner, NULL, "spinner");
    st_run_until_done(1, 5000);
    assert_int_equal(io_seen, 1);
    assert_int_equal(timer_seen, 1);
    assert_true(spins > 0 && spins < 1000000);
    iop_fd_close(st_loop, spin_pipe[0]);
    iop_fd_close(st_loop, spin_pipe[1]);
}

/* ---- greenlet style ------------------------------------------------------------------------ */

static intptr_t gl_seq[16];
static int gl_len;
static iop_coro_t *ping, *pong;

static void *ping_fn(void *arg)
{
    intptr_t v = (intptr_t)arg;            /* the value of the first switch */
    gl_seq[gl_len++] = v;
    v = (intptr_t)iop_switch(pong, (void *)(v + 1));
    gl_seq[gl_len++] = v;
    v = (intptr_t)iop_switch(pong, (void *)(v + 1));
    gl_seq[gl_len++] = v;                  /* main switched back to us */
    return (void *)(intptr_t)99;           /* to our parent: main */
}

static void *pong_fn(void *arg)
{
    intptr_t v = (intptr_t)arg;
    gl_seq[gl_len++] = v;
    v = (intptr_t)iop_switch(ping, (void *)(v + 1));
    gl_seq[gl_len++] = v;
    return (void *)(intptr_t)50;           /* ping waits in a switch, but our parent is main */
}

static void test_greenlet_ping_pong(void **state)
{
    (void)state;
    gl_len = 0;
    assert_int_equal(iop_coro_create(st_loop, ping_fn, (void *)(intptr_t)-1, NULL, &ping), 0);
    assert_int_equal(iop_coro_create(st_loop, pong_fn, NULL, NULL, &pong), 0);
    assert_ptr_equal(iop_main(), iop_main());
    assert_string_equal(iop_coro_name(iop_main()), "main");
    errno = 0;
    assert_null(iop_switch(iop_main(), NULL));   /* main is not waiting in a switch */
    assert_int_equal(errno, EINVAL);

    /* 1 → ping, 2 → pong, 3 → ping, 4 → pong, pong ends: 50 to main. */
    assert_int_equal((intptr_t)iop_switch(ping, (void *)(intptr_t)1), 50);
    assert_true(iop_coro_done(pong));
    assert_false(iop_coro_done(ping));
    errno = 0;
    assert_null(iop_switch(pong, NULL));        /* ended: not a target */
    assert_int_equal(errno, EINVAL);
    /* ping waits in its second switch: 7 resumes it, its return comes back. */
    assert_int_equal((intptr_t)iop_switch(ping, (void *)(intptr_t)7), 99);
    assert_true(iop_coro_done(ping));
    intptr_t want[] = { 1, 2, 3, 4, 7 };
    assert_int_equal(gl_len, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(gl_seq[i], want[i]);
    iop_coro_free(ping);
    iop_coro_free(pong);
}

/* A greenlet made inside a coroutine has that coroutine as parent: its return value
 * comes back as the parent's iop_switch result; set_parent moves one made elsewhere.
 * A greenlet can also hand a value to main while main waits in iop_switch. */
static void *times_ten(void *arg) { return (void *)((intptr_t)arg * 10); }

static void *add_thousand(void *arg) { return (void *)((intptr_t)arg + 1000); }

static void *switch_back_to_main(void *arg)
{
    intptr_t v = (intptr_t)iop_switch(iop_main(), (void *)((intptr_t)arg + 1));
    return (void *)(v + 1000);
}

static void *greenlet_parent(void *arg)
{
    iop_coro_t *g, *h = arg;
    CHECK_EQ(iop_coro_create(st_loop, times_ten, NULL, NULL, &g), 0);
    CHECK_EQ((intptr_t)iop_switch(g, (void *)(intptr_t)4), 40);
    CHECK(iop_coro_done(g));
    iop_coro_free(g);
    CHECK_EQ(iop_coro_set_parent(h, iop_self()), 0);   /* made by main, now ours */
    CHECK_EQ((intptr_t)iop_switch(h, (void *)(intptr_t)5), 1005);
    iop_coro_free(h);
    st_done++;
    return NULL;
}

static void test_greenlet_parent(void **state)
{
    (void)state;
    iop_coro_t *h, *p, *a, *b;
    assert_int_equal(iop_coro_create(st_loop, add_thousand, NULL, NULL, &h), 0);
    assert_int_equal(iop_go(st_loop, greenlet_parent, h, NULL, &p), 0);
    assert_int_equal(iop_join(p, NULL, 0), 0);
    assert_int_equal(st_done, 1);
    st_assert_ok();

    assert_int_equal(iop_coro_create(st_loop, switch_back_to_main, NULL, NULL, &a), 0);
    assert_int_equal(iop_coro_create(st_loop, times_ten, NULL, NULL, &b), 0);
    assert_int_equal(iop_coro_set_parent(a, b), 0);
    assert_int_equal(iop_coro_set_parent(b, a), -EINVAL);    /* a cycle */
    assert_int_equal(iop_coro_set_parent(iop_main(), a), -EINVAL);
    assert_int_equal(iop_coro_set_parent(a, iop_main()), 0);
    /* main → a (5), a → main (6); main → a (1), a ends: 1001 to its parent, main. */
    assert_int_equal((intptr_t)iop_switch(a, (void *)(intptr_t)5), 6);
    assert_false(iop_coro_done(a));
    assert_int_equal((intptr_t)iop_switch(a, (void *)(intptr_t)1), 1001);
    assert_true(iop_coro_done(a));
    iop_coro_free(a);
    iop_coro_free(b);                          /* never started */
}

/* A greenlet that blocks on I/O while main waits in iop_switch: main runs the loop
 * until the greenlet ends. */
static void *sleepy_greenlet(void *arg)
{
    CHECK_EQ(iop_sleep(5 * MS), 0);
    return (void *)((intptr_t)arg + 1);
}

static void test_greenlet_blocking(void **state)
{
    (void)state;
    iop_coro_t *g;
    assert_int_equal(iop_coro_create(st_loop, sleepy_greenlet, NULL, NULL, &g), 0);
    uint64_t t0 = tu_clock_ns();
    assert_int_equal((intptr_t)iop_switch(g, (void *)(intptr_t)41), 42);
    assert_true(tu_clock_ns() - t0 >= 4 * MS);
    assert_true(iop_coro_done(g));
    iop_coro_free(g);
    st_assert_ok();
}

/* ---- scoped deadlines ------------------------------------------------------------------------ */

static void *scoped(void *arg)
{
    (void)arg;
    CHECK_EQ(iop_deadline_current(), 0);
    uint64_t outer = st_after_ms(1500);   /* far from inner, so a slow run tells them apart */
    iop_deadline_push(outer);
    CHECK_EQ(iop_deadline_current(), outer);
    CHECK_EQ(iop_sleep(5 * MS), 0);            /* its own deadline comes first */
    uint64_t t0 = tu_clock_ns();               /* before inner: took >= 20 ms however late */
    uint64_t inner = st_after_ms(20);
    iop_deadline_push(inner);
    CHECK_EQ(iop_deadline_current(), inner);
    CHECK_EQ(iop_sleep(1000 * MS), -ETIMEDOUT);  /* the inner scope wins */
    uint64_t took = tu_clock_ns() - t0;
    CHECK(took >= 10 * MS && took < 1000 * MS);
    iop_deadline_push(st_after_ms(5000));      /* a later one changes nothing */
    CHECK_EQ(iop_deadline_current(), inner);
    CHECK_EQ(iop_sleep(1000 * MS), -ETIMEDOUT);  /* inner has passed: at once */
    iop_deadline_pop();
    iop_deadline_pop();
    CHECK_EQ(iop_deadline_current(), outer);
    CHECK_EQ(iop_sleep_until(st_after_ms(10000)), -ETIMEDOUT);   /* outer */
    CHECK(iop_now(st_loop) >= outer);
    iop_deadline_pop();
    CHECK_EQ(iop_deadline_current(), 0);
    CHECK_EQ(iop_sleep(1 * MS), 0);
    st_done++;
    return NULL;
}

static void test_scoped_deadlines(void **state)
{
    (void)state;
    st_go(scoped, NULL, "scoped");
    st_run_until_done(1, 5000);
}

/* ---- cancel ----------------------------------------------------------------------------------- */

static void *cancel_sleeper(void *arg)
{
    (void)arg;
    uint64_t t0 = tu_clock_ns();
    CHECK_EQ(iop_sleep(10000 * MS), -ECANCELED);
    CHECK(tu_clock_ns() - t0 < 5000 * MS);
    CHECK(iop_cancelled());
    CHECK_EQ(iop_sleep(1 * MS), -ECANCELED);    /* sticky */
    CHECK_EQ(iop_yield(), -ECANCELED);
    st_done++;
    return (void *)(intptr_t)1;
}

static void *canceller(void *arg)
{
    CHECK_EQ(iop_sleep(5 * MS), 0);
    CHECK_EQ(iop_cancel(arg), 0);              /* queued: it runs after us */
    CHECK(!iop_coro_done(arg));
    st_done++;
    return NULL;
}

static void test_cancel_sleep(void **state)
{
    (void)state;
    iop_coro_t *a, *b;
    /* From a coroutine. */
    assert_int_equal(iop_go(st_loop, cancel_sleeper, NULL, NULL, &a), 0);
    st_go(canceller, a, "canceller");
    void *res;
    assert_int_equal(iop_join(a, &res, iop_now(st_loop) + 5000 * MS), 0);
    assert_int_equal((intptr_t)res, 1);
    /* From main, while it sleeps: it runs to its end inside iop_cancel. */
    assert_int_equal(iop_go(st_loop, cancel_sleeper, NULL, NULL, &b), 0);
    tu_run_for(st_loop, 5);
    assert_false(iop_coro_done(b));
    assert_int_equal(iop_cancel(b), 0);
    assert_true(iop_coro_done(b));
    assert_int_equal(iop_cancel(b), -ESRCH);
    assert_int_equal(iop_join(b, NULL, 0), 0);
    assert_int_equal(st_done, 3);
    st_assert_ok();
}

/* ---- no memory for a timer ---------------------------------------------------------- */

/* A sleep, and a wait bounded by a scope's deadline, while the timer heap is full
 * and cannot grow: their timers take the slot the coroutine keeps there (they
 * failed with -ENOMEM). */
static void *starved_sleeper(void *arg)
{
    (void)arg;
    CHECK(st_timers_starve());
    uint64_t t0 = tu_clock_ns();
    CHECK_EQ(iop_sleep(20 * MS), 0);
    CHECK(tu_clock_ns() - t0 >= 20 * MS);
    iop_deadline_push(st_after_ms(10));
    CHECK_EQ(iop_sleep_until(0), -ETIMEDOUT);   /* only the scope's deadline ends it */
    iop_deadline_pop();
    st_timers_unstarve();
    st_done++;
    return NULL;
}

static void test_sleep_without_memory(void **state)
{
    (void)state;
    st_go(starved_sleeper, NULL, "starved");
    st_run_until_done(1, 3000);
    iop__alloc_fail_after(-1, 0);
}

/* Cancelled before it first runs: its first blocking call fails. */
static void *blocks_once(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)iop_sleep(1000 * MS);
}

static void test_cancel_before_start(void **state)
{
    (void)state;
    iop_coro_t *c;
    assert_int_equal(iop_go(st_loop, blocks_once, NULL, NULL, &c), 0);
    assert_int_equal(iop_cancel(c), 0);
    void *res;
    assert_int_equal(iop_join(c, &res, 0), 0);
    assert_int_equal((intptr_t)res, -ECANCELED);
}

/* ---- nursery ------------------------------------------------------------------------------------ */

static int child_results[3];

static void *nursery_child(void *arg)
{
    intptr_t i = (intptr_t)arg;
    /* children 0 and 1 end by themselves, child 2 would sleep for 10 s */
    child_results[i] = iop_sleep(i == 2 ? 10000 * MS : (uint64_t)(i + 1) * MS);
    st_done++;
    return NULL;
}

static void spawn_children(iop_nursery_t *n)
{
    for (intptr_t i = 0; i < 3; i++) {
        child_results[i] = 1;
        iop_coro_opts_t o = { .size = sizeof o, .name = "child" };
        int r = iop_nursery_go(n, nursery_child, (void *)i, &o);
        CHECK_EQ(r, 0);
    }
}

static void *nursery_owner(void *arg)
{
    (void)arg;
    iop_nursery_t n;
    iop_nursery_init(&n, st_loop);
    spawn_children(&n);
    CHECK_EQ(n.nchildren, 3);
    uint64_t t0 = tu_clock_ns();
    /* Long enough for children 0 and 1 (1-2 ms) on a loaded machine or under
     * valgrind, far short of child 2's 10 s. */
    CHECK_EQ(iop_nursery_close(&n, st_after_ms(300)), -ETIMEDOUT);
    uint64_t took = tu_clock_ns() - t0;
    CHECK(took >= 250 * MS && took < 5000 * MS);
    CHECK_EQ(n.nchildren, 0);
    CHECK_EQ(child_results[0], 0);
    CHECK_EQ(child_results[1], 0);
    CHECK_EQ(child_results[2], -ECANCELED);
    CHECK(!iop_cancelled());                   /* closing cancels the children only */
    /* All ending in time: 0. */
    iop_nursery_go(&n, nursery_child, (void *)(intptr_t)0, NULL);
    CHECK_EQ(iop_nursery_close(&n, st_after_ms(5000)), 0);
    st_done++;
    return NULL;
}

static void test_nursery_close_cancels(void **state)
{
    (void)state;
    st_go(nursery_owner, NULL, "owner");
    st_run_until_done(5, 5000);
}

static void test_nursery_close_from_main(void **state)
{
    (void)state;
    iop_nursery_t n;
    iop_nursery_init(&n, st_loop);
    spawn_children(&n);
    assert_int_equal(iop_nursery_close(&n, st_after_ms(300)), -ETIMEDOUT);
    assert_int_equal(n.nchildren, 0);
    assert_int_equal(st_done, 3);
    assert_int_equal(child_results[0], 0);
    assert_int_equal(child_results[2], -ECANCELED);
    st_assert_ok();
}

/* A cancelled owner still waits for its children (cancelling them at once). */
static void *cancelled_owner(void *arg)
{
    iop_nursery_t *n = arg;
    CHECK_EQ(iop_nursery_close(n, 0), -ECANCELED);
    CHECK_EQ(n->nchildren, 0);
    CHECK_EQ(child_results[2], -ECANCELED);
    CHECK(iop_cancelled());
    st_done++;
    return NULL;
}

static void test_nursery_owner_cancelled(void **state)
{
    (void)state;
    iop_nursery_t n;
    iop_nursery_init(&n, st_loop);
    spawn_children(&n);
    iop_coro_t *owner;
    assert_int_equal(iop_go(st_loop, cancelled_owner, &n, NULL, &owner), 0);
    /* Children 0 and 1 end (1-2 ms; up to 5 s on a loaded sanitizer run), the
     * owner waits for child 2 (10 s). */
    for (int i = 0; i < 500 && n.nchildren > 1; i++)
        tu_run_for(st_loop, 10);
    assert_int_equal(n.nchildren, 1);
    assert_int_equal(iop_cancel(owner), 0);
    assert_int_equal(iop_join(owner, NULL, iop_now(st_loop) + 5000 * MS), 0);
    assert_int_equal(st_done, 4);
    st_assert_ok();
}

/* ---- outside a coroutine --------------------------------------------------------------------- */

static void test_blocking_outside_coroutine(void **state)
{
    (void)state;
    char buf[4];
    assert_null(iop_self());
    assert_int_equal(iop_sleep(1), -EPERM);
    assert_non_null(strstr(iop_last_error(), "coroutine"));
    assert_int_equal(iop_sleep_until(1), -EPERM);
    assert_int_equal(iop_yield(), -EPERM);
    assert_int_equal(iop_recv(0, buf, sizeof buf, 0, 0), -EPERM);
    assert_int_equal(iop_send(1, buf, 1, 0, 0), -EPERM);
    assert_int_equal(iop_read(0, buf, sizeof buf, 0), -EPERM);
    assert_int_equal(iop_write(1, buf, 1, 0), -EPERM);
    assert_int_equal(iop_accept(0, NULL, NULL, 0), -EPERM);
    assert_int_equal(iop_connect(0, NULL, 0, 0), -EPERM);
    assert_int_equal(iop_close(-1), -EPERM);
    assert_false(iop_cancelled());
}

static void *nothing(void *arg) { return arg; }

static void test_configure(void **state)
{
    (void)state;
    iop_sched_opts_t o = { .size = sizeof o, .stack_size = 128 * 1024, .pool_max = 4 };
    assert_int_equal(iop_sched_configure(st_loop, &o), 0);
    o.flags = 0x80;
    assert_int_equal(iop_sched_configure(st_loop, &o), -EINVAL);
    o.flags = IOP_CORO_CANARY;
    assert_int_equal(iop_sched_configure(st_loop, &o), 0);
    iop_coro_t *c;
    iop_coro_opts_t co = { .size = sizeof co, .name = "a-name-longer-than-the-thirty-one-bytes-kept" };
    assert_int_equal(iop_go(st_loop, nothing, (void *)(intptr_t)3, &co, &c), 0);
    assert_int_equal(strlen(iop_coro_name(c)), 31);
    assert_int_equal(iop_sched_configure(st_loop, &o), -EBUSY);   /* too late now */
    void *res;
    assert_int_equal(iop_join(c, &res, 0), 0);
    assert_int_equal((intptr_t)res, 3);
    co.size = 0;
    assert_int_equal(iop_go(st_loop, nothing, NULL, &co, NULL), -EINVAL);
    assert_int_equal(iop_go(st_loop, NULL, NULL, NULL, NULL), -EINVAL);
}

/* One joiner at a time, main included: a second gets -EBUSY, whichever came first.
 * (Two successful joins freed the record twice; later spawns shared it.) */
static iop_coro_t *jt_target;
static int jt_res, jt_joining;

static int flag_set(void *arg) { return *(const int *)arg != 0; }

static void *join_target(void *arg)
{
    (void)arg;
    void *res = NULL;
    jt_joining = 1;                /* and parked in the join when the iteration ends */
    jt_res = iop_join(jt_target, &res, 0);
    if (jt_res == 0)
        CHECK_EQ((intptr_t)res, 77);
    st_done++;
    return NULL;
}

static void test_join_from_main_and_coroutine(void **state)
{
    (void)state;
    void *res = NULL;
    /* a coroutine joins first, then main */
    assert_int_equal(iop_go(st_loop, sleeper, (void *)(intptr_t)200, NULL, &jt_target), 0);
    jt_joining = 0;
    st_go(join_target, NULL, "joiner");
    assert_true(tu_run_until(st_loop, flag_set, &jt_joining, 5000));
    assert_int_equal(iop_join(jt_target, &res, 0), -EBUSY);
    st_run_until_done(1, 5000);
    assert_int_equal(jt_res, 0);
    /* main joins first, then a coroutine (it runs while main waits) */
    st_done = 0;
    assert_int_equal(iop_go(st_loop, sleeper, (void *)(intptr_t)20, NULL, &jt_target), 0);
    st_go(join_target, NULL, "joiner");
    assert_int_equal(iop_join(jt_target, &res, 0), 0);
    assert_int_equal((intptr_t)res, 77);
    st_run_until_done(1, 5000);
    assert_int_equal(jt_res, -EBUSY);
    /* records are whole: two live coroutines never share one */
    iop_coro_t *a, *b;
    assert_int_equal(iop_go(st_loop, sleeper, (void *)(intptr_t)1, NULL, &a), 0);
    assert_int_equal(iop_go(st_loop, sleeper, (void *)(intptr_t)1, NULL, &b), 0);
    assert_ptr_not_equal(a, b);
    assert_int_equal(iop_join(a, NULL, 0), 0);
    assert_int_equal(iop_join(b, NULL, 0), 0);
    st_assert_ok();
}

/* iop_coro_free of a coroutine that a join waits on leaves it to that join. It used
 * to be freed at its end and then again by the join: two later coroutines got the
 * same record. */
static void test_free_while_joined(void **state)
{
    (void)state;
    /* 200 ms: still asleep when freed, however late this thread runs */
    assert_int_equal(iop_go(st_loop, sleeper, (void *)(intptr_t)200, NULL, &jt_target), 0);
    jt_joining = 0;
    st_go(join_target, NULL, "joiner");
    assert_true(tu_run_until(st_loop, flag_set, &jt_joining, 5000));
    iop_coro_free(jt_target);      /* the joiner waits on it */
    st_run_until_done(1, 5000);
    assert_int_equal(jt_res, 0);   /* and it got the result */
    iop_coro_t *c[6];
    for (int i = 0; i < 6; i++)
        assert_int_equal(iop_go(st_loop, sleeper, (void *)(intptr_t)1, NULL, &c[i]), 0);
    for (int i = 0; i < 6; i++)
        for (int j = i + 1; j < 6; j++)
            assert_ptr_not_equal(c[i], c[j]);
    for (int i = 0; i < 6; i++)
        assert_int_equal(iop_join(c[i], NULL, 0), 0);
    st_assert_ok();
}

/* Main waits in iop_switch(g1) (g1 sleeps, so main runs the loop); a timer callback
 * switches into g2, which returns at once: that inner switch gets g2's value, the
 * outer one goes on waiting for g1's. */
static iop_coro_t *nest_g2;
static void *nest_inner;

static void *return_222(void *arg) { (void)arg; return (void *)222; }
static void *sleep_return_111(void *arg)
{
    (void)arg;
    CHECK_EQ(iop_sleep(20 * MS), 0);
    return (void *)111;
}
static void nest_timer(iop_timer_t *t)
{
    (void)t;
    nest_inner = iop_switch(nest_g2, NULL);
}

static void test_greenlet_switch_nested_in_callback(void **state)
{
    (void)state;
    iop_coro_t *g1;
    assert_int_equal(iop_coro_create(st_loop, sleep_return_111, NULL, NULL, &g1), 0);
    assert_int_equal(iop_coro_create(st_loop, return_222, NULL, NULL, &nest_g2), 0);
    iop_timer_t t;
    memset(&t, 0, sizeof t);
    assert_int_equal(iop_timer_start(st_loop, &t, 2 * MS, 0, nest_timer), 0);
    assert_int_equal((intptr_t)iop_switch(g1, NULL), 111);
    assert_int_equal((intptr_t)nest_inner, 222);
    assert_true(iop_coro_done(g1));
    iop_coro_free(g1);
    iop_coro_free(nest_g2);
    st_assert_ok();
}

/* A greenlet whose parent ended goes to its grandparent (here main) at its end,
 * not into the parent's record. */
static iop_coro_t *orphan;

static void *make_orphan(void *arg)
{
    (void)arg;
    CHECK_EQ(iop_coro_create(st_loop, add_thousand, NULL, NULL, &orphan), 0);
    return NULL;                   /* ends without ever switching to it */
}

static void test_greenlet_orphan(void **state)
{
    (void)state;
    iop_coro_t *p;
    assert_int_equal(iop_go(st_loop, make_orphan, NULL, NULL, &p), 0);
    assert_int_equal(iop_join(p, NULL, 0), 0);
    assert_non_null(orphan);
    assert_int_equal(iop_coro_set_parent(orphan, p), -EINVAL);   /* p has ended */
    /* p's record is free: a new coroutine may take it */
    iop_coro_t *q;
    assert_int_equal(iop_go(st_loop, sleeper, (void *)(intptr_t)1, NULL, &q), 0);
    assert_int_equal((intptr_t)iop_switch(orphan, (void *)(intptr_t)5), 1005);
    assert_true(iop_coro_done(orphan));
    iop_coro_free(orphan);
    assert_int_equal(iop_join(q, NULL, 0), 0);
    st_assert_ok();
}

/* The same with the greenlet on another loop of this thread than its parent's: the
 * parent's end handed it on only among its own loop's coroutines, so the greenlet
 * kept the ended record as its parent and later ended into whoever took it. */
static iop_loop_t *other_loop;

static void *make_orphan_elsewhere(void *arg)
{
    (void)arg;
    CHECK_EQ(iop_coro_create(other_loop, add_thousand, NULL, NULL, &orphan), 0);
    return NULL;
}

static void *wait_for_main(void *arg)
{
    (void)arg;
    intptr_t v = (intptr_t)iop_switch(iop_main(), (void *)(intptr_t)1);
    return (void *)(v + 99);       /* resumed by main only, with 2 */
}

static void test_greenlet_orphan_across_loops(void **state)
{
    (void)state;
    other_loop = tu_loop_new();
    orphan = NULL;
    iop_coro_t *p, *q;
    assert_int_equal(iop_go(st_loop, make_orphan_elsewhere, NULL, NULL, &p), 0);
    assert_int_equal(iop_join(p, NULL, 0), 0);
    assert_non_null(orphan);
    /* p's record is free: q takes it, and waits for main. */
    assert_int_equal(iop_coro_create(st_loop, wait_for_main, NULL, NULL, &q), 0);
    assert_int_equal((intptr_t)iop_switch(q, NULL), 1);
    assert_int_equal((intptr_t)iop_switch(orphan, (void *)(intptr_t)5), 1005);
    assert_true(iop_coro_done(orphan));
    assert_false(iop_coro_done(q));
    assert_int_equal((intptr_t)iop_switch(q, (void *)(intptr_t)2), 101);
    iop_coro_free(orphan);
    iop_coro_free(q);
    iop_loop_destroy(other_loop);
    st_assert_ok();
}

/* A coroutine cannot run a loop: the scheduler would return into the wrong stack. */
static int lr_res[2];

static void *run_a_loop(void *arg)
{
    lr_res[0] = iop_loop_run(arg, IOP_RUN_NOWAIT);
    lr_res[1] = iop_loop_run(st_loop, IOP_RUN_NOWAIT);
    CHECK(iop_self() != NULL);
    CHECK_EQ(iop_sleep(1 * MS), 0);   /* still a working coroutine */
    st_done++;
    return NULL;
}

static void test_loop_run_in_coroutine(void **state)
{
    (void)state;
    iop_loop_t *other = tu_loop_new();
    st_go(run_a_loop, other, "runner");
    st_run_until_done(1, 5000);
    assert_int_equal(lr_res[0], -EPERM);
    assert_true(lr_res[1] == -EBUSY || lr_res[1] == -EPERM);
    iop_loop_destroy(other);
}

/* Closing a nursery from main whose children wait for what nothing pending can
 * bring: they are cancelled, none outlives the close. */
static void *wait_for_nothing(void *arg)
{
    (void)arg;
    int r = iop_sleep_until(0);
    st_done++;
    return (void *)(intptr_t)r;
}

static void test_nursery_close_deadlock_from_main(void **state)
{
    (void)state;
    iop_nursery_t n;
    iop_nursery_init(&n, st_loop);
    for (int i = 0; i < 2; i++)
        assert_int_equal(iop_nursery_go(&n, wait_for_nothing, NULL, NULL), 0);
    assert_int_equal(iop_nursery_close(&n, 0), -EDEADLK);
    assert_int_equal(n.nchildren, 0);
    assert_int_equal(st_done, 2);
}

/* Sleeping until exactly the scope's deadline reaches its own deadline: success. */
static void *sleep_to_scope(void *arg)
{
    (void)arg;
    uint64_t d = st_after_ms(10);
    iop_deadline_push(d);
    CHECK_EQ(iop_sleep_until(d), 0);
    CHECK_EQ(iop_sleep_until(d + 10 * MS), -ETIMEDOUT);   /* the scope is earlier */
    iop_deadline_pop();
    st_done++;
    return NULL;
}

static void test_sleep_until_scope_deadline(void **state)
{
    (void)state;
    st_go(sleep_to_scope, NULL, "sleeper");
    st_run_until_done(1, 5000);
}

/* A stack size that would wrap when rounded to pages is refused, not mapped as 0. */
static void test_huge_stack_size(void **state)
{
    (void)state;
    size_t sizes[] = { SIZE_MAX, SIZE_MAX - 4094, SIZE_MAX - 4095 };
    for (size_t i = 0; i < 3; i++) {
        iop_coro_opts_t o = { .size = sizeof o, .stack_size = sizes[i] };
        iop_coro_t *c = NULL;
        assert_int_equal(iop_go(st_loop, nothing, NULL, &o, &c), -EINVAL);
        assert_null(c);
    }
}

int main(int argc, char **argv)
{
    const char *spec = tu_backend_from_args(argc, argv);
    if (spec && tu_backend_set(spec) < 0) {
        fprintf(stderr, "usage: %s [BACKEND[+sqpoll]] [FILTER]\n", argv[0]);
        return 2;
    }
    if (argc > 2)
        cmocka_set_test_filter(argv[2]);
#define T(f) cmocka_unit_test_setup_teardown(f, st_setup, st_teardown)
    const struct CMUnitTest tests[] = {
        T(test_spawn_join_from_outside),
        T(test_join_from_coroutine),
        T(test_join_outside_deadline_deadlock),
        T(test_join_runs_posted_work),
        T(test_detached_and_no_alloc),
        T(test_go_copies_arg),
        T(test_yield_round_robin),
        T(test_wakeups_run_in_same_turn),
        T(test_loop_serves_io_while_yielding),
        T(test_greenlet_ping_pong),
        T(test_greenlet_parent),
        T(test_greenlet_blocking),
        T(test_scoped_deadlines),
        T(test_cancel_sleep),
        T(test_sleep_without_memory),
        T(test_cancel_before_start),
        T(test_nursery_close_cancels),
        T(test_nursery_close_from_main),
        T(test_nursery_owner_cancelled),
        T(test_blocking_outside_coroutine),
        T(test_configure),
        T(test_join_from_main_and_coroutine),
        T(test_greenlet_orphan),
        T(test_greenlet_orphan_across_loops),
        T(test_free_while_joined),
        T(test_greenlet_switch_nested_in_callback),
        T(test_loop_run_in_coroutine),
        T(test_nursery_close_deadlock_from_main),
        T(test_sleep_until_scope_deadline),
        T(test_huge_stack_size),
    };
    char name[64];
    snprintf(name, sizeof name, "coro.sched.%s", spec ? spec : "default");
    return cmocka_run_group_tests_name(name, tests, NULL, NULL);
}
