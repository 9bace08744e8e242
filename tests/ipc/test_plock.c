/* Robust process lock across real processes: mutual exclusion (plain and coroutine
 * lockers in four processes), a holder killed with SIGKILL (the next locker gets
 * IOP_PLOCK_OWNER_DIED, waiting or not), deadlines, unlock by a non-holder, and
 * coroutines that wait for a lock held by another process while the loop keeps
 * firing a timer; and threads of one process taking turns. Runs on the backend
 * named by argv[1].
 *
 * Every child dies with the test process (PR_SET_PDEATHSIG), has its own alarm,
 * and is killed and reaped by PID in the teardown even when an assertion failed.
 * Children report failures through shared memory, never through cmocka. */
#include "sched_test.h"

#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include "ioplex/plock.h"
#include "kids.h"

/* ---- processes --------------------------------------------------------------------- */

typedef struct shared {
    iop_plock_t lock;              /* iop_plock_init'ed here: caller memory */
    long counter;                  /* guarded by lock; deliberately not atomic */
    _Atomic int inside;            /* lockers inside at once: must stay <= 1 */
    _Atomic int holding;           /* a child says it holds the lock */
    _Atomic int go;                /* the parent lets a child go on */
    _Atomic uint64_t released_at;  /* when a holder unlocked (CLOCK_MONOTONIC ns) */
    _Atomic uint64_t parked_at;    /* when a child's coroutine began to wait */
    _Atomic uint64_t waited[8];    /* a child's measured hand-off latencies */
} shared_t;

static shared_t *sh;
static iop_plock_t *lk;            /* the lock under test: &sh->lock, or a created one */


static int wait_flag(_Atomic int *flag, int want, unsigned limit_ms)
{
    uint64_t end = tu_clock_ms() + limit_ms;
    while (atomic_load(flag) != want && tu_clock_ms() < end)
        tu_sleep_ms(1);
    return atomic_load(flag) == want;
}

static int setup(void **state)
{
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(sh != MAP_FAILED);
    memset(sh, 0, sizeof *sh);
    lk = &sh->lock;
    assert_int_equal(iop_plock_init(lk), 0);
    kids_begin();
    alarm(40);
    return st_setup(state);
}

static int teardown(void **state)
{
    kids_end();
    int r = st_teardown(state);    /* the loop first: it may hold the eventfd */
    iop_plock_fini(&sh->lock);
    munmap(sh, sizeof *sh);
    alarm(0);
    return r;
}

/* A child's own loop on the backend under test (never the parent's: a loop is not
 * shared across fork). */
static iop_loop_t *kid_loop(void)
{
    iop_loop_opts_t o = { .size = sizeof o, .backend = tu_backend, .flags = tu_loop_flags };
    iop_loop_t *loop = NULL;
    KID_CHECK(iop_loop_create(&loop, &o) == 0);
    return loop;
}

static void noop_timer(iop_timer_t *t) { (void)t; }

/* Runs loop until *done >= n, at most limit_ms. */
static void kid_run(iop_loop_t *loop, const int *done, int n, unsigned limit_ms)
{
    uint64_t end = tu_clock_ms() + limit_ms;
    iop_timer_t guard = { 0 };
    while (*done < n && tu_clock_ms() < end) {
        iop_timer_start(loop, &guard, 5 * MS, 0, noop_timer);
        iop_loop_run(loop, IOP_RUN_ONCE);
    }
    iop_timer_stop(&guard);
    KID_CHECK(*done >= n);
}

/* ---- mutual exclusion --------------------------------------------------------------- */

#define EXCL_ROUNDS 1500

/* One locked increment of the shared counter, with a window for the others. */
static int locked_increment(int yield_inside)
{
    int r = iop_plock_lock(lk, 0);
    if (r != 0)
        return r < 0 ? r : -EPROTO;
    int inside = atomic_fetch_add(&sh->inside, 1) + 1;
    long v = sh->counter;
    if (yield_inside)
        iop_yield();               /* park holding it: siblings must wait, not deadlock */
    else if ((v & 63) == 0)
        sched_yield();
    sh->counter = v + 1;
    atomic_fetch_sub(&sh->inside, 1);
    if (inside != 1)
        return -EEXIST;
    return iop_plock_unlock(lk);
}

static void plain_incrementer(void *arg)
{
    (void)arg;
    for (int i = 0; i < EXCL_ROUNDS; i++)
        KID_CHECK(locked_increment(0) == 0);
}

static int coro_done;

static void *coro_incrementer(void *arg)
{
    (void)arg;
    for (int i = 0; i < EXCL_ROUNDS / 2; i++)
        KID_CHECK(locked_increment(i % 8 == 0) == 0);
    coro_done++;
    return NULL;
}

/* Two coroutines of one loop share this process's half of the work. */
static void coroutine_incrementer(void *arg)
{
    (void)arg;
    iop_loop_t *loop = kid_loop();
    coro_done = 0;
    for (int i = 0; i < 2; i++)
        KID_CHECK(iop_go(loop, coro_incrementer, NULL, NULL, NULL) == 0);
    kid_run(loop, &coro_done, 2, 15000);
}

static void test_mutual_exclusion(void **state)
{
    (void)state;
    pid_t p[4];
    p[0] = kids_spawn(plain_incrementer, NULL);
    p[1] = kids_spawn(plain_incrementer, NULL);
    p[2] = kids_spawn(coroutine_incrementer, NULL);
    p[3] = kids_spawn(coroutine_incrementer, NULL);
    for (int i = 0; i < 4; i++)
        kids_assert_exited_ok(p[i], 20000);
    assert_int_equal(sh->counter, 4 * EXCL_ROUNDS);
    assert_int_equal(iop_plock_trylock(lk), 0);   /* left unlocked, no death */
    assert_int_equal(iop_plock_unlock(lk), 0);
}

/* ---- a holder killed --------------------------------------------------------------------- */

/* Takes the lock, says so, then holds it until killed (or kills itself after
 * *(int *)arg ms when that is non-zero). */
static void holder(void *arg)
{
    int die_after_ms = arg ? *(int *)arg : 0;
    KID_CHECK(iop_plock_lock(lk, 0) == 0);
    sh->counter = -1;              /* "half-updated" data */
    atomic_store(&sh->holding, 1);
    if (die_after_ms) {
        tu_sleep_ms((unsigned)die_after_ms);
        raise(SIGKILL);
    }
    for (int i = 0; i < 20000; i++)
        tu_sleep_ms(1);
}

static void test_holder_killed(void **state)
{
    (void)state;
    iop_plock_t *own = NULL;
    assert_int_equal(iop_plock_create(&own), 0);   /* a page of its own this time */
    lk = own;
    pid_t pid = kids_spawn(holder, NULL);
    assert_true(wait_flag(&sh->holding, 1, 5000));
    assert_int_equal(iop_plock_trylock(lk), -EBUSY);
    kids_kill_and_reap(pid);
    assert_int_equal(iop_plock_lock(lk, tu_clock_ns() + 2000 * MS), IOP_PLOCK_OWNER_DIED);
    assert_int_equal(sh->counter, -1);            /* what the holder left half-done */
    sh->counter = 0;                              /* "repaired" */
    assert_int_equal(iop_plock_unlock(lk), 0);
    assert_int_equal(iop_plock_lock(lk, 0), 0);   /* reported once; works on */
    assert_int_equal(iop_plock_unlock(lk), 0);
    assert_int_equal(iop_plock_trylock(lk), 0);
    assert_int_equal(iop_plock_unlock(lk), 0);
    lk = &sh->lock;
    iop_plock_free(own);
}

/* A plain waiter already blocked in lock is woken by the kernel when the holder dies. */
static void test_holder_killed_while_waiting_plain(void **state)
{
    (void)state;
    static int die_after = 150;
    pid_t pid = kids_spawn(holder, &die_after);
    assert_true(wait_flag(&sh->holding, 1, 5000));
    uint64_t t0 = tu_clock_ns();
    assert_int_equal(iop_plock_lock(lk, t0 + 5000 * MS), IOP_PLOCK_OWNER_DIED);
    uint64_t waited = tu_clock_ns() - t0;
    assert_true(waited < 3000 * MS);
    assert_int_equal(iop_plock_unlock(lk), 0);
    int st = kids_reap(pid, 5000);
    assert_true(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
}

/* ---- coroutines waiting while the loop runs ------------------------------------------------- */

static int ticks;

static void tick(iop_timer_t *t)
{
    (void)t;
    ticks++;
}

typedef struct waiter_result {
    int res;
    uint64_t waited_ns;
    uint64_t got_at;               /* when lock returned (CLOCK_MONOTONIC ns) */
} waiter_result_t;

static void *coro_waiter(void *arg)
{
    waiter_result_t *w = arg;
    uint64_t t0 = tu_clock_ns();
    w->res = iop_plock_lock(lk, st_after_ms(5000));
    w->got_at = tu_clock_ns();
    w->waited_ns = w->got_at - t0;
    if (w->res >= 0) {
        CHECK_EQ(atomic_fetch_add(&sh->inside, 1), 0);
        iop_sleep(5 * MS);         /* park holding it */
        atomic_fetch_sub(&sh->inside, 1);
        CHECK_EQ(iop_plock_unlock(lk), 0);
    }
    st_done++;
    return NULL;
}

/* Holds the lock until the parent says go, then unlocks and exits cleanly. */
static void polite_holder(void *arg)
{
    (void)arg;
    KID_CHECK(iop_plock_lock(lk, 0) == 0);
    atomic_store(&sh->holding, 1);
    for (int i = 0; i < 15000 && !atomic_load(&sh->go); i++)
        tu_sleep_ms(1);
    atomic_store(&sh->released_at, tu_clock_ns());
    KID_CHECK(iop_plock_unlock(lk) == 0);
}

static void test_coroutines_wait_while_timer_fires(void **state)
{
    (void)state;
    pid_t pid = kids_spawn(polite_holder, NULL);
    assert_true(wait_flag(&sh->holding, 1, 5000));
    iop_timer_t timer = { 0 };
    assert_int_equal(iop_timer_start(st_loop, &timer, 2 * MS, 2 * MS, tick), 0);
    waiter_result_t w[3] = { { 0 } };
    for (int i = 0; i < 3; i++)
        st_go(coro_waiter, &w[i], "waiter");
    ticks = 0;
    tu_run_for(st_loop, 300);      /* all three parked on the lock: the loop runs on */
    assert_int_equal(st_done, 0);
    assert_true(ticks >= 20);      /* ~150 expected; far fewer means the loop blocked */
    atomic_store(&sh->go, 1);
    st_run_until_done(3, 5000);
    iop_timer_stop(&timer);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(w[i].res, 0);
        /* Not before the holder let go. (Not "waited 250 ms": under valgrind a
         * waiter's first run can come late in the 300 ms the loop ran.) */
        assert_true(w[i].got_at >= atomic_load(&sh->released_at));
    }
    kids_assert_exited_ok(pid, 5000);
}

/* A coroutine waiting when the holder dies gets OWNER_DIED within about a slice. */
static void test_holder_killed_while_waiting_coroutine(void **state)
{
    (void)state;
    static int die_after = 200;
    iop_timer_t timer = { 0 };
    assert_int_equal(iop_timer_start(st_loop, &timer, 2 * MS, 2 * MS, tick), 0);
    pid_t pid = kids_spawn(holder, &die_after);
    assert_true(wait_flag(&sh->holding, 1, 5000));
    waiter_result_t w = { 0 };
    ticks = 0;
    st_go(coro_waiter, &w, "waiter");
    st_run_until_done(1, 5000);
    iop_timer_stop(&timer);
    assert_int_equal(w.res, IOP_PLOCK_OWNER_DIED);
    assert_true(w.waited_ns < 2000 * MS);
    assert_true(ticks >= 20);
    int st = kids_reap(pid, 5000);
    assert_true(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
}

/* Coroutines in another process wake on the unlock's token, well within a slice. */
static void *handoff_coro(void *arg)
{
    int *round = arg;
    atomic_store(&sh->parked_at, tu_clock_ns());
    KID_CHECK(iop_plock_lock(lk, 0) == 0);
    uint64_t now = tu_clock_ns();
    atomic_store(&sh->waited[*round], now - atomic_load(&sh->released_at));
    KID_CHECK(iop_plock_unlock(lk) == 0);
    coro_done++;
    return NULL;
}

/* Each round: wait for the parent to hold the lock, then wait for it in a coroutine. */
static void handoff_child(void *arg)
{
    (void)arg;
    iop_loop_t *loop = kid_loop();
    static int rounds[5];
    coro_done = 0;
    for (int i = 0; i < 5; i++) {
        rounds[i] = i;
        while (atomic_load(&sh->go) != i + 1)
            tu_sleep_ms(1);
        KID_CHECK(iop_go(loop, handoff_coro, &rounds[i], NULL, NULL) == 0);
        kid_run(loop, &coro_done, i + 1, 5000);
    }
}

static void test_token_handoff_across_processes(void **state)
{
    (void)state;
    pid_t pid = kids_spawn(handoff_child, NULL);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(iop_plock_lock(lk, 0), 0);
        atomic_store(&sh->parked_at, 0);
        atomic_store(&sh->go, i + 1);
        uint64_t end = tu_clock_ms() + 5000;
        while (atomic_load(&sh->parked_at) == 0 && tu_clock_ms() < end)
            tu_sleep_ms(1);
        tu_sleep_ms(20);           /* unlock 30 ms before the waiter's slice would end */
        atomic_store(&sh->released_at, tu_clock_ns());
        assert_int_equal(iop_plock_unlock(lk), 0);
        end = tu_clock_ms() + 5000;
        while (atomic_load(&sh->waited[i]) == 0 && tu_clock_ms() < end)
            tu_sleep_ms(1);
        assert_true(atomic_load(&sh->waited[i]) != 0);
    }
    kids_assert_exited_ok(pid, 5000);
    uint64_t best = UINT64_MAX;
    for (int i = 0; i < 5; i++)
        best = sh->waited[i] < best ? sh->waited[i] : best;
    /* A waiter that only woke at the end of its slice would take about 30 ms. */
    assert_true(best < 15 * MS);
}

/* A waiter killed while parked leaves itself counted; unlocks must not pile up a
 * token each for it (a later waiter would spin through them). */
static void *parked_forever(void *arg)
{
    (void)arg;
    atomic_store(&sh->parked_at, tu_clock_ns());
    iop_plock_lock(lk, 0);
    coro_done++;
    return NULL;
}

static void parked_child(void *arg)
{
    (void)arg;
    iop_loop_t *loop = kid_loop();
    coro_done = 0;
    KID_CHECK(iop_go(loop, parked_forever, NULL, NULL, NULL) == 0);
    kid_run(loop, &coro_done, 1, 20000);
}

static void test_killed_waiter_leaves_no_token_pile(void **state)
{
    (void)state;
    assert_int_equal(iop_plock_lock(lk, 0), 0);
    pid_t pid = kids_spawn(parked_child, NULL);
    uint64_t end = tu_clock_ms() + 5000;
    while (atomic_load(&sh->parked_at) == 0 && tu_clock_ms() < end)
        tu_sleep_ms(1);
    tu_sleep_ms(10);               /* in iop_read by now */
    kids_kill_and_reap(pid);
    assert_int_equal(iop_plock_unlock(lk), 0);
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(iop_plock_lock(lk, 0), 0);
        assert_int_equal(iop_plock_unlock(lk), 0);
    }
    int tokens = 0;
    uint64_t v;
    while (tokens < 2000 && read(lk->efd, &v, sizeof v) == (ssize_t)sizeof v)
        tokens++;
    assert_true(tokens <= 1);
    /* and a real waiter is still woken by a token */
    waiter_result_t w = { 0 };
    assert_int_equal(iop_plock_lock(lk, 0), 0);
    st_go(coro_waiter, &w, "waiter");
    tu_run_for(st_loop, 20);
    uint64_t t0 = tu_clock_ns();
    assert_int_equal(iop_plock_unlock(lk), 0);
    st_run_until_done(1, 5000);
    assert_int_equal(w.res, 0);
    assert_true(tu_clock_ns() - t0 < 2000 * MS);
}

/* ---- deadlines ------------------------------------------------------------------------------ */

static void *coro_deadline(void *arg)
{
    (void)arg;
    uint64_t t0 = tu_clock_ns();
    CHECK_EQ(iop_plock_lock(lk, st_after_ms(100)), -ETIMEDOUT);
    uint64_t waited = tu_clock_ns() - t0;
    CHECK(waited >= 90 * MS && waited < 2000 * MS);
    CHECK_EQ(iop_plock_trylock(lk), -EBUSY);
    iop_deadline_push(st_after_ms(60));   /* a scoped deadline applies as well */
    CHECK_EQ(iop_plock_lock(lk, 0), -ETIMEDOUT);
    iop_deadline_pop();
    st_done++;
    return NULL;
}

static void test_deadline(void **state)
{
    (void)state;
    pid_t pid = kids_spawn(holder, NULL);
    assert_true(wait_flag(&sh->holding, 1, 5000));
    uint64_t t0 = tu_clock_ns();
    assert_int_equal(iop_plock_lock(lk, t0 + 100 * MS), -ETIMEDOUT);
    uint64_t waited = tu_clock_ns() - t0;
    assert_true(waited >= 90 * MS && waited < 2000 * MS);
    st_go(coro_deadline, NULL, "deadline");
    st_run_until_done(1, 5000);
    kids_kill_and_reap(pid);
    assert_int_equal(iop_plock_lock(lk, tu_clock_ns() + 2000 * MS), IOP_PLOCK_OWNER_DIED);
    assert_int_equal(iop_plock_unlock(lk), 0);
}

/* ---- unlock by a non-holder, EDEADLK, siblings --------------------------------------------------- */

static void test_unlock_by_non_holder(void **state)
{
    (void)state;
    assert_int_equal(iop_plock_unlock(lk), -EPERM);   /* free */
    assert_int_equal(iop_plock_lock(lk, 0), 0);       /* and still fine, no death */
    assert_int_equal(iop_plock_unlock(lk), 0);
    assert_int_equal(iop_plock_unlock(lk), -EPERM);   /* twice */

    pid_t pid = kids_spawn(polite_holder, NULL);                   /* held by another process */
    assert_true(wait_flag(&sh->holding, 1, 5000));
    assert_int_equal(iop_plock_unlock(lk), -EPERM);
    assert_int_equal(iop_plock_trylock(lk), -EBUSY);  /* still the child's */
    atomic_store(&sh->go, 1);
    kids_assert_exited_ok(pid, 5000);
    assert_int_equal(iop_plock_lock(lk, 0), 0);       /* released normally */
    assert_int_equal(iop_plock_unlock(lk), 0);

    atomic_store(&sh->holding, 0);                           /* held by a dead process */
    pid = kids_spawn(holder, NULL);
    assert_true(wait_flag(&sh->holding, 1, 5000));
    kids_kill_and_reap(pid);
    assert_int_equal(iop_plock_unlock(lk), -EPERM);
    /* the death is still reported, to the next real locker */
    assert_int_equal(iop_plock_lock(lk, 0), IOP_PLOCK_OWNER_DIED);
    assert_int_equal(iop_plock_unlock(lk), 0);
    assert_int_equal(iop_plock_lock(lk, 0), 0);
    assert_int_equal(iop_plock_unlock(lk), 0);
}

static int a_holds;

static void *sibling_holder(void *arg)
{
    (void)arg;
    CHECK_EQ(iop_plock_lock(lk, 0), 0);
    CHECK_EQ(iop_plock_lock(lk, 0), -EDEADLK);        /* the holder again */
    CHECK_EQ(iop_plock_trylock(lk), -EDEADLK);
    a_holds = 1;
    iop_sleep(80 * MS);            /* parks holding it */
    a_holds = 0;
    CHECK_EQ(iop_plock_unlock(lk), 0);
    st_done++;
    return NULL;
}

static void *sibling_waiter(void *arg)
{
    (void)arg;
    CHECK(a_holds);
    CHECK_EQ(iop_plock_trylock(lk), -EBUSY);
    CHECK_EQ(iop_plock_unlock(lk), -EPERM);           /* the sibling holds it */
    uint64_t t0 = tu_clock_ns();
    CHECK_EQ(iop_plock_lock(lk, st_after_ms(3000)), 0);
    CHECK(!a_holds);
    CHECK(tu_clock_ns() - t0 >= 40 * MS);
    CHECK_EQ(iop_plock_unlock(lk), 0);
    st_done++;
    return NULL;
}

static int holds(void *arg) { (void)arg; return a_holds; }

static void test_same_process_and_thread(void **state)
{
    (void)state;
    assert_int_equal(iop_plock_lock(lk, 0), 0);       /* outside coroutines */
    assert_int_equal(iop_plock_lock(lk, 0), -EDEADLK);
    assert_int_equal(iop_plock_trylock(lk), -EDEADLK);
    assert_int_equal(iop_plock_unlock(lk), 0);

    a_holds = 0;
    st_go(sibling_holder, NULL, "holder");
    assert_true(tu_run_until(st_loop, holds, NULL, 2000));
    /* the thread's main context while a coroutine of it holds the lock */
    assert_int_equal(iop_plock_lock(lk, 0), -EDEADLK);
    assert_int_equal(iop_plock_trylock(lk), -EBUSY);
    assert_int_equal(iop_plock_unlock(lk), -EPERM);
    st_go(sibling_waiter, NULL, "waiter");
    st_run_until_done(2, 5000);
    assert_int_equal(iop_plock_trylock(lk), 0);
    assert_int_equal(iop_plock_unlock(lk), 0);
}

/* ---- threads of one process ------------------------------------------------------------- */

#define THREAD_LOCKERS 4
#define THREAD_ROUNDS 2000

/* Every other round waits with a deadline (pthread_mutex_clocklock, which TSan
 * does not intercept: plock.c tells it about that lock by hand). */
static void *thread_incrementer(void *arg)
{
    long bad = 0;
    (void)arg;
    for (int i = 0; i < THREAD_ROUNDS; i++) {
        uint64_t deadline = i % 2 ? tu_clock_ns() + 5000 * MS : 0;
        if (iop_plock_lock(lk, deadline) != 0) {
            bad++;
            continue;
        }
        if (atomic_fetch_add(&sh->inside, 1) != 0)
            bad++;
        sh->counter++;
        atomic_fetch_sub(&sh->inside, 1);
        if (iop_plock_unlock(lk) != 0)
            bad++;
    }
    return (void *)bad;
}

static void test_threads_of_one_process(void **state)
{
    (void)state;
    pthread_t th[THREAD_LOCKERS];
    for (int i = 0; i < THREAD_LOCKERS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, thread_incrementer, NULL), 0);
    for (int i = 0; i < THREAD_LOCKERS; i++) {
        void *bad = (void *)1;
        assert_int_equal(pthread_join(th[i], &bad), 0);
        assert_null(bad);
    }
    assert_int_equal(sh->counter, THREAD_LOCKERS * THREAD_ROUNDS);
    assert_int_equal(iop_plock_trylock(lk), 0);
    assert_int_equal(iop_plock_unlock(lk), 0);
}

int main(int argc, char **argv)
{
    if (tu_backend_set(tu_backend_from_args(argc, argv)) < 0) {
        fprintf(stderr, "unknown backend mode '%s'\n", argv[1]);
        return 2;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_mutual_exclusion, setup, teardown),
        cmocka_unit_test_setup_teardown(test_holder_killed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_holder_killed_while_waiting_plain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coroutines_wait_while_timer_fires, setup, teardown),
        cmocka_unit_test_setup_teardown(test_holder_killed_while_waiting_coroutine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_handoff_across_processes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_killed_waiter_leaves_no_token_pile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unlock_by_non_holder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_process_and_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads_of_one_process, setup, teardown),
    };
    return cmocka_run_group_tests_name("ipc.plock", tests, NULL, NULL);
}
