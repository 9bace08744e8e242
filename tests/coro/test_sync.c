/* Mutex, condition, semaphore and wait group between coroutines of one loop: mutual
 * exclusion across yields, FIFO hand-off, condition signal / broadcast / deadline /
 * cancel (always returning with the mutex held), counting, waiting for N coroutines,
 * and -EPERM outside coroutines. Runs on the backend named by argv[1].
 *
 * Coroutines do not call cmocka's asserts (a failure would longjmp off their stack):
 * CHECK records the first failure and the test asserts there was none once the loop
 * has run. */
#include "sched_test.h"

/* Yields until *v >= want, at most max times; returns whether it got there. */
static int yield_until_at_least(const int *v, int want, int max)
{
    for (int i = 0; i < max && *v < want; i++)
        iop_yield();
    return *v >= want;
}

/* Sleeps 1 ms at a time until *v >= want, at most max_ms. */
static int sleep_until_at_least(const int *v, int want, int max_ms)
{
    for (int i = 0; i < max_ms && *v < want; i++)
        iop_sleep(MS);
    return *v >= want;
}

/* ---- outside coroutines --------------------------------------------------------------------- */

static void test_outside_coroutine(void **state)
{
    (void)state;
    iop_mutex_t m;
    iop_cond_t c;
    iop_sem_t s;
    iop_wg_t wg;
    iop_mutex_init(&m);
    iop_cond_init(&c);
    iop_sem_init(&s, 1);
    iop_wg_init(&wg);
    assert_int_equal(iop_mutex_lock(&m, 0), -EPERM);   /* the owner must be a coroutine */
    assert_int_equal(iop_mutex_trylock(&m), -EPERM);
    assert_int_equal(iop_mutex_unlock(&m), -EPERM);
    assert_int_equal(iop_cond_wait(&c, &m, 0), -EPERM);
    assert_int_equal(iop_sem_acquire(&s, 0), 0);       /* would not wait */
    assert_int_equal(iop_sem_acquire(&s, 0), -EPERM);  /* would */
    iop_sem_release(&s);
    assert_int_equal(s.count, 1);
    assert_int_equal(iop_wg_wait(&wg, 0), 0);          /* count 0: at once */
    iop_wg_add(&wg, 1);
    assert_int_equal(iop_wg_wait(&wg, 0), -EPERM);
    iop_wg_done(&wg);
    assert_int_equal(iop_wg_wait(&wg, 0), 0);
}

/* ---- mutex ------------------------------------------------------------------------------------- */

#define EXCL_WORKERS 4
#define EXCL_ROUNDS 50

static struct {
    iop_mutex_t m;
    int inside;
    int max_inside;
    int total;
} ex;

static void *ex_worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < EXCL_ROUNDS; i++) {
        CHECK_EQ(iop_mutex_lock(&ex.m, 0), 0);
        CHECK(ex.m.owner == iop_self());
        if (++ex.inside > ex.max_inside)
            ex.max_inside = ex.inside;
        iop_yield();               /* the others run, and must wait */
        iop_yield();
        ex.total++;
        ex.inside--;
        CHECK_EQ(iop_mutex_unlock(&ex.m), 0);
        iop_yield();
    }
    st_done++;
    return NULL;
}

static void test_mutex_exclusion(void **state)
{
    (void)state;
    memset(&ex, 0, sizeof ex);
    iop_mutex_init(&ex.m);
    for (int i = 0; i < EXCL_WORKERS; i++)
        st_go(ex_worker, NULL, NULL);
    st_run_until_done(EXCL_WORKERS, 10000);
    assert_int_equal(ex.max_inside, 1);
    assert_int_equal(ex.total, EXCL_WORKERS * EXCL_ROUNDS);
    assert_null(ex.m.owner);
}

/* Waiters get the mutex in the order they asked; an unlock hands it to the first
 * one, so the unlocker cannot take it back before it has run. */
static struct {
    iop_mutex_t m;
    int locked;
    int arrived;                   /* waiters about to park, in id order */
    int order[4];
    int norder;
} fo;

static void *fo_waiter(void *arg)
{
    int id = (int)(intptr_t)arg;
    CHECK(yield_until_at_least(&fo.locked, 1, 20));
    CHECK(yield_until_at_least(&fo.arrived, id, 20));   /* the ones before us wait */
    CHECK_EQ(fo.arrived, id);
    fo.arrived++;                  /* nothing runs between this and the park */
    CHECK_EQ(iop_mutex_lock(&fo.m, 0), 0);
    fo.order[fo.norder++] = id;
    iop_yield();
    CHECK_EQ(iop_mutex_unlock(&fo.m), 0);
    st_done++;
    return NULL;
}

static void *fo_holder(void *arg)
{
    (void)arg;
    CHECK_EQ(iop_mutex_lock(&fo.m, 0), 0);
    fo.locked = 1;
    CHECK(yield_until_at_least(&fo.arrived, 3, 50));
    CHECK_EQ(iop_mutex_unlock(&fo.m), 0);
    CHECK_EQ(iop_mutex_trylock(&fo.m), -EBUSY);   /* waiter 0 owns it already */
    CHECK_EQ(iop_mutex_lock(&fo.m, 0), 0);        /* behind waiters 1 and 2 */
    fo.order[fo.norder++] = 3;
    CHECK_EQ(iop_mutex_unlock(&fo.m), 0);
    st_done++;
    return NULL;
}

static void test_mutex_fifo(void **state)
{
    (void)state;
    memset(&fo, 0, sizeof fo);
    iop_mutex_init(&fo.m);
    /* spawned in reverse: the order comes from the queue, not the spawn order */
    for (int i = 2; i >= 0; i--)
        st_go(fo_waiter, (void *)(intptr_t)i, NULL);
    st_go(fo_holder, NULL, NULL);
    st_run_until_done(4, 10000);
    assert_int_equal(fo.norder, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(fo.order[i], i);
    assert_null(fo.m.owner);
}

static struct {
    iop_mutex_t m;
    int held;
    int timed_out;
} me;

static void *me_owner(void *arg)
{
    (void)arg;
    CHECK_EQ(iop_mutex_unlock(&me.m), -EPERM);   /* not locked */
    CHECK_EQ(iop_mutex_lock(&me.m, 0), 0);
    CHECK_EQ(iop_mutex_lock(&me.m, 0), -EDEADLK);
    CHECK_EQ(iop_mutex_trylock(&me.m), -EBUSY);
    me.held = 1;
    CHECK(sleep_until_at_least(&me.timed_out, 1, 1000));
    CHECK(me.m.owner == iop_self());   /* the timed-out waiter did not get it */
    CHECK_EQ(iop_mutex_unlock(&me.m), 0);
    CHECK(me.m.owner == NULL);         /* nor does it get it now */
    st_done++;
    return NULL;
}

static void *me_other(void *arg)
{
    (void)arg;
    CHECK(yield_until_at_least(&me.held, 1, 20));
    CHECK_EQ(iop_mutex_unlock(&me.m), -EPERM);   /* not the owner */
    CHECK_EQ(iop_mutex_trylock(&me.m), -EBUSY);
    uint64_t t0 = tu_clock_ns();
    CHECK_EQ(iop_mutex_lock(&me.m, st_after_ms(20)), -ETIMEDOUT);
    CHECK(tu_clock_ns() - t0 >= 15 * MS);
    me.timed_out = 1;
    st_done++;
    return NULL;
}

static void test_mutex_errors_and_deadline(void **state)
{
    (void)state;
    memset(&me, 0, sizeof me);
    iop_mutex_init(&me.m);
    st_go(me_owner, NULL, NULL);
    st_go(me_other, NULL, NULL);
    st_run_until_done(2, 10000);
}

/* ---- condition -------------------------------------------------------------------------------- */

static struct {
    iop_mutex_t m;
    iop_cond_t c;
    int waiting;                   /* waiters inside cond_wait */
    int tickets;
    int wakeups;                   /* returns from cond_wait */
    int served;
} cv;

static void *cv_waiter(void *arg)
{
    (void)arg;
    CHECK_EQ(iop_mutex_lock(&cv.m, 0), 0);
    for (int i = 0; i < 10 && cv.tickets == 0; i++) {
        cv.waiting++;
        CHECK_EQ(iop_cond_wait(&cv.c, &cv.m, 0), 0);
        cv.waiting--;
        cv.wakeups++;
        CHECK(cv.m.owner == iop_self());
    }
    CHECK(cv.tickets > 0);
    cv.tickets--;
    cv.served++;
    CHECK_EQ(iop_mutex_unlock(&cv.m), 0);
    st_done++;
    return NULL;
}

static void *cv_controller(void *arg)
{
    (void)arg;
    CHECK(yield_until_at_least(&cv.waiting, 3, 20));
    CHECK_EQ(iop_mutex_lock(&cv.m, 0), 0);
    cv.tickets = 1;
    iop_cond_signal(&cv.c);
    iop_yield();                   /* the signalled one waits for the mutex we hold */
    CHECK_EQ(cv.wakeups, 0);
    CHECK_EQ(iop_mutex_unlock(&cv.m), 0);
    for (int i = 0; i < 10; i++)
        iop_yield();
    CHECK_EQ(cv.wakeups, 1);       /* one signal, one waiter */
    CHECK_EQ(cv.served, 1);
    CHECK_EQ(cv.waiting, 2);

    CHECK_EQ(iop_mutex_lock(&cv.m, 0), 0);
    cv.tickets = 2;
    iop_cond_broadcast(&cv.c);
    CHECK_EQ(iop_mutex_unlock(&cv.m), 0);
    CHECK(yield_until_at_least(&cv.served, 3, 20));
    CHECK_EQ(cv.wakeups, 3);
    iop_cond_signal(&cv.c);        /* no one waits: nothing happens */
    iop_cond_broadcast(&cv.c);
    st_done++;
    return NULL;
}

static void test_cond_signal_broadcast(void **state)
{
    (void)state;
    memset(&cv, 0, sizeof cv);
    iop_mutex_init(&cv.m);
    iop_cond_init(&cv.c);
    for (int i = 0; i < 3; i++)
        st_go(cv_waiter, NULL, NULL);
    st_go(cv_controller, NULL, NULL);
    st_run_until_done(4, 10000);
    assert_int_equal(cv.served, 3);
    assert_int_equal(cv.tickets, 0);
    assert_null(cv.m.owner);
}

/* A wait that ends by deadline or cancel still returns with the mutex held, even
 * when someone else holds it at that moment. */
static struct {
    iop_mutex_t m;
    iop_cond_t c;
    int waiting;
    int holder_done;
    iop_coro_t *victim;
} cd;

static void *cd_timed_waiter(void *arg)
{
    (void)arg;
    CHECK_EQ(iop_mutex_lock(&cd.m, 0), 0);
    cd.waiting = 1;
    uint64_t t0 = tu_clock_ns();
    CHECK_EQ(iop_cond_wait(&cd.c, &cd.m, st_after_ms(20)), -ETIMEDOUT);
    CHECK(tu_clock_ns() - t0 >= 15 * MS);
    CHECK(cd.m.owner == iop_self());
    CHECK_EQ(cd.holder_done, 1);   /* it waited for the holder to let go */
    CHECK_EQ(iop_mutex_unlock(&cd.m), 0);
    st_done++;
    return NULL;
}

static void *cd_holder(void *arg)
{
    (void)arg;
    CHECK(yield_until_at_least(&cd.waiting, 1, 20));
    CHECK_EQ(iop_mutex_lock(&cd.m, 0), 0);   /* free while the other waits */
    iop_sleep(40 * MS);            /* past the waiter's deadline */
    cd.holder_done = 1;
    CHECK_EQ(iop_mutex_unlock(&cd.m), 0);
    st_done++;
    return NULL;
}

static void *cd_cancelled_waiter(void *arg)
{
    (void)arg;
    CHECK_EQ(iop_mutex_lock(&cd.m, 0), 0);
    cd.waiting = 1;
    CHECK_EQ(iop_cond_wait(&cd.c, &cd.m, 0), -ECANCELED);
    CHECK(cd.m.owner == iop_self());
    CHECK_EQ(cd.holder_done, 1);
    CHECK_EQ(iop_cond_wait(&cd.c, &cd.m, 0), -ECANCELED);   /* and stays cancelled */
    CHECK(cd.m.owner == iop_self());
    CHECK_EQ(iop_mutex_unlock(&cd.m), 0);
    return NULL;
}

static void *cd_canceller(void *arg)
{
    (void)arg;
    CHECK(yield_until_at_least(&cd.waiting, 1, 20));
    CHECK_EQ(iop_mutex_lock(&cd.m, 0), 0);
    CHECK_EQ(iop_cancel(cd.victim), 0);
    iop_sleep(5 * MS);             /* the victim must wait for the mutex meanwhile */
    cd.holder_done = 1;
    CHECK_EQ(iop_mutex_unlock(&cd.m), 0);
    st_done++;
    return NULL;
}

/* The same with the deadline from a scope (iop_deadline_push), still in force while
 * the mutex is taken back. */
static void *cd_scoped_waiter(void *arg)
{
    (void)arg;
    CHECK_EQ(iop_mutex_lock(&cd.m, 0), 0);
    cd.waiting = 1;
    iop_deadline_push(st_after_ms(20));
    CHECK_EQ(iop_cond_wait(&cd.c, &cd.m, 0), -ETIMEDOUT);
    iop_deadline_pop();
    CHECK(cd.m.owner == iop_self());
    CHECK_EQ(cd.holder_done, 1);
    CHECK_EQ(iop_mutex_unlock(&cd.m), 0);
    st_done++;
    return NULL;
}

static void test_cond_deadline_and_cancel(void **state)
{
    (void)state;
    memset(&cd, 0, sizeof cd);
    iop_mutex_init(&cd.m);
    iop_cond_init(&cd.c);
    st_go(cd_timed_waiter, NULL, NULL);
    st_go(cd_holder, NULL, NULL);
    st_run_until_done(2, 10000);

    memset(&cd, 0, sizeof cd);
    iop_mutex_init(&cd.m);
    iop_cond_init(&cd.c);
    assert_int_equal(iop_go(st_loop, cd_cancelled_waiter, NULL, NULL, &cd.victim), 0);
    st_go(cd_canceller, NULL, NULL);
    st_run_until_done(3, 10000);
    assert_int_equal(iop_join(cd.victim, NULL, 0), 0);
    st_assert_ok();
    assert_null(cd.m.owner);

    memset(&cd, 0, sizeof cd);
    iop_mutex_init(&cd.m);
    iop_cond_init(&cd.c);
    st_go(cd_scoped_waiter, NULL, NULL);
    st_go(cd_holder, NULL, NULL);
    st_run_until_done(5, 10000);
    assert_null(cd.m.owner);
}

/* A signalled waiter whose deadline passes (or who is cancelled) while it waits to
 * get the mutex back keeps the signal: it returns 0 holding the mutex. Failing then
 * lost the signal, and the item it announced stayed unconsumed with a waiter idle. */
static struct {
    iop_mutex_t m;
    iop_cond_t c;
    int items, waiting, consumed_by_first, consumed_by_second, cancel_first;
    int first_res, second_res;
    iop_coro_t *first;
} cs;

static void *cs_waiter(void *arg)
{
    int first = arg != NULL;
    CHECK_EQ(iop_mutex_lock(&cs.m, 0), 0);
    cs.waiting++;
    int r = 0;
    while (!cs.items && r == 0)
        r = iop_cond_wait(&cs.c, &cs.m, first && !cs.cancel_first ? st_after_ms(20) : st_after_ms(300));
    if (r == 0) {
        cs.items--;
        (*(first ? &cs.consumed_by_first : &cs.consumed_by_second))++;
    }
    *(first ? &cs.first_res : &cs.second_res) = r;
    if (first && cs.cancel_first) {
        CHECK(iop_cancelled());                         /* kept for the next call */
        CHECK_EQ(iop_cond_wait(&cs.c, &cs.m, 0), -ECANCELED);
    }
    CHECK_EQ(iop_mutex_unlock(&cs.m), 0);
    st_done++;
    return NULL;
}

static void *cs_producer(void *arg)
{
    (void)arg;
    CHECK(yield_until_at_least(&cs.waiting, 2, 20));
    CHECK_EQ(iop_mutex_lock(&cs.m, 0), 0);
    cs.items = 1;
    iop_cond_signal(&cs.c);        /* the first waiter: it now waits for the mutex */
    if (cs.cancel_first)
        CHECK_EQ(iop_cancel(cs.first), 0);
    iop_sleep(50 * MS);            /* past the first waiter's deadline */
    CHECK_EQ(iop_mutex_unlock(&cs.m), 0);
    st_done++;
    return NULL;
}

static void test_cond_signal_not_lost(void **state)
{
    (void)state;
    for (int cancel = 0; cancel < 2; cancel++) {
        memset(&cs, 0, sizeof cs);
        st_done = 0;
        cs.cancel_first = cancel;
        iop_mutex_init(&cs.m);
        iop_cond_init(&cs.c);
        assert_int_equal(iop_go(st_loop, cs_waiter, &cs, NULL, &cs.first), 0);
        st_go(cs_waiter, NULL, NULL);
        st_go(cs_producer, NULL, NULL);
        st_run_until_done(3, 10000);
        assert_int_equal(iop_join(cs.first, NULL, 0), 0);
        assert_int_equal(cs.first_res, 0);
        assert_int_equal(cs.consumed_by_first, 1);
        assert_int_equal(cs.items, 0);
        assert_int_equal(cs.second_res, -ETIMEDOUT);
        assert_null(cs.m.owner);
    }
}

/* ---- semaphore --------------------------------------------------------------------------------- */

static struct {
    iop_sem_t s;
    int inside;
    int max_inside;
    int total;
} se;

static void *se_worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10; i++) {
        CHECK_EQ(iop_sem_acquire(&se.s, 0), 0);
        if (++se.inside > se.max_inside)
            se.max_inside = se.inside;
        iop_yield();
        iop_yield();
        se.inside--;
        se.total++;
        iop_sem_release(&se.s);
    }
    st_done++;
    return NULL;
}

static void *se_timeout(void *arg)
{
    (void)arg;
    iop_sem_t s;
    iop_sem_init(&s, 0);
    CHECK_EQ(iop_sem_acquire(&s, st_after_ms(10)), -ETIMEDOUT);
    iop_sem_release(&s);
    CHECK_EQ(s.count, 1);          /* the unit was not given to the one that left */
    CHECK_EQ(iop_sem_acquire(&s, 0), 0);
    CHECK_EQ(s.count, 0);
    iop_sem_init(&s, -1);          /* a debt: two releases before one acquire */
    iop_sem_release(&s);
    CHECK_EQ(iop_sem_acquire(&s, st_after_ms(5)), -ETIMEDOUT);
    iop_sem_release(&s);
    CHECK_EQ(iop_sem_acquire(&s, 0), 0);
    st_done++;
    return NULL;
}

static void test_semaphore(void **state)
{
    (void)state;
    memset(&se, 0, sizeof se);
    iop_sem_init(&se.s, 2);
    for (int i = 0; i < 5; i++)
        st_go(se_worker, NULL, NULL);
    st_go(se_timeout, NULL, NULL);
    st_run_until_done(6, 10000);
    assert_int_equal(se.max_inside, 2);   /* two at a time, never more */
    assert_int_equal(se.total, 50);
    assert_int_equal(se.s.count, 2);
    iop_sem_t top;
    iop_sem_init(&top, INT64_MAX);
    iop_sem_release(&top);         /* saturates instead of wrapping negative */
    assert_int_equal(top.count, INT64_MAX);
}

/* ---- wait group -------------------------------------------------------------------------------- */

#define WG_N 5

static struct {
    iop_wg_t wg;
    int done;
    int waited;
} wgs;

static void *wg_worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    iop_sleep((uint64_t)(id + 1) * MS);
    wgs.done++;
    iop_wg_done(&wgs.wg);
    st_done++;
    return NULL;
}

static void *wg_waiter(void *arg)
{
    (void)arg;
    CHECK_EQ(iop_wg_wait(&wgs.wg, 0), 0);
    CHECK_EQ(wgs.done, WG_N);      /* not before the last one */
    wgs.waited++;
    st_done++;
    return NULL;
}

static void *wg_edges(void *arg)
{
    (void)arg;
    iop_wg_t wg;
    iop_wg_init(&wg);
    CHECK_EQ(iop_wg_wait(&wg, 0), 0);            /* 0: at once */
    iop_wg_add(&wg, 1);
    CHECK_EQ(iop_wg_wait(&wg, st_after_ms(5)), -ETIMEDOUT);
    iop_wg_add(&wg, -3);                          /* below zero: clamped */
    CHECK_EQ(wg.count, 0);
    CHECK_EQ(iop_wg_wait(&wg, 0), 0);
    st_done++;
    return NULL;
}

static void test_wait_group(void **state)
{
    (void)state;
    memset(&wgs, 0, sizeof wgs);
    iop_wg_init(&wgs.wg);
    iop_wg_add(&wgs.wg, WG_N);
    st_go(wg_waiter, NULL, NULL);
    st_go(wg_waiter, NULL, NULL);
    for (int i = 0; i < WG_N; i++)
        st_go(wg_worker, (void *)(intptr_t)i, NULL);
    st_go(wg_edges, NULL, NULL);
    st_run_until_done(WG_N + 3, 10000);
    assert_int_equal(wgs.waited, 2);
    assert_int_equal(wgs.wg.count, 0);
}

/* ---- a cancelled coroutine, and calls without the mutex ------------------------------------ */

/* trylock takes a free mutex; cond_wait without holding the mutex is -EPERM; and a
 * cancelled coroutine gets -ECANCELED from lock, acquire and wait even where they
 * would not have waited (a free mutex, a unit left, a wait group at zero), so that a
 * loop around them unwinds. */
static struct {
    iop_mutex_t m;
    iop_cond_t c;
    iop_sem_t s;
    iop_wg_t wg;
    iop_coro_t *victim;
    int ready, cancelled;
} cc;

static void *cc_victim(void *arg)
{
    (void)arg;
    CHECK_EQ(iop_mutex_trylock(&cc.m), 0);
    CHECK(cc.m.owner == iop_self());
    CHECK_EQ(iop_mutex_unlock(&cc.m), 0);
    CHECK_EQ(iop_cond_wait(&cc.c, &cc.m, 0), -EPERM);   /* not holding it */
    cc.ready = 1;
    CHECK(yield_until_at_least(&cc.cancelled, 1, 20));
    CHECK(iop_cancelled());
    CHECK(cc.m.owner == NULL);
    CHECK_EQ(iop_mutex_lock(&cc.m, 0), -ECANCELED);
    CHECK(cc.m.owner == NULL);                          /* not taken either */
    CHECK_EQ(iop_sem_acquire(&cc.s, 0), -ECANCELED);
    CHECK_EQ(cc.s.count, 1);                            /* the unit is still there */
    CHECK_EQ(iop_wg_wait(&cc.wg, 0), -ECANCELED);
    st_done++;
    return NULL;
}

static void *cc_canceller(void *arg)
{
    (void)arg;
    CHECK(yield_until_at_least(&cc.ready, 1, 20));
    CHECK_EQ(iop_cancel(cc.victim), 0);
    cc.cancelled = 1;
    st_done++;
    return NULL;
}

static void test_cancelled_and_unowned(void **state)
{
    (void)state;
    memset(&cc, 0, sizeof cc);
    iop_mutex_init(&cc.m);
    iop_cond_init(&cc.c);
    iop_sem_init(&cc.s, 1);
    iop_wg_init(&cc.wg);
    assert_int_equal(iop_go(st_loop, cc_victim, NULL, NULL, &cc.victim), 0);
    st_go(cc_canceller, NULL, NULL);
    st_run_until_done(2, 10000);
    assert_int_equal(iop_join(cc.victim, NULL, 0), 0);
    st_assert_ok();
    assert_null(cc.m.owner);
}

int main(int argc, char **argv)
{
    if (tu_backend_set(tu_backend_from_args(argc, argv)) < 0) {
        fprintf(stderr, "unknown backend mode '%s'\n", argv[1]);
        return 2;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outside_coroutine),
        cmocka_unit_test_setup_teardown(test_mutex_exclusion, st_setup, st_teardown),
        cmocka_unit_test_setup_teardown(test_mutex_fifo, st_setup, st_teardown),
        cmocka_unit_test_setup_teardown(test_mutex_errors_and_deadline, st_setup, st_teardown),
        cmocka_unit_test_setup_teardown(test_cond_signal_broadcast, st_setup, st_teardown),
        cmocka_unit_test_setup_teardown(test_cond_deadline_and_cancel, st_setup, st_teardown),
        cmocka_unit_test_setup_teardown(test_cond_signal_not_lost, st_setup, st_teardown),
        cmocka_unit_test_setup_teardown(test_semaphore, st_setup, st_teardown),
        cmocka_unit_test_setup_teardown(test_wait_group, st_setup, st_teardown),
        cmocka_unit_test_setup_teardown(test_cancelled_and_unowned, st_setup, st_teardown),
    };
    return cmocka_run_group_tests_name("coro.sync", tests, NULL, NULL);
}
