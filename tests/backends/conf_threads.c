/* Other threads reach a loop only through iop_loop_post, iop_loop_wake and
 * iop_loop_stop. Each test has a watchdog so that a missed wake-up fails instead of
 * hanging: it writes to a pipe the loop watches. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include "conformance.h"

typedef struct xthread {
    iop_loop_t *loop;
    int watchdog_fd;           /* write end of the watchdog pipe */
    atomic_int loop_returned;  /* main thread: the run under test has returned */
    int do_post;               /* post (else only wake) */
    int do_stop;               /* iop_loop_stop instead */
    iop_post_t post;
    pthread_t loop_thread;
    int post_ran;
    int post_on_loop_thread;
} xthread_t;

static int watchdog_fired;

static void watchdog_cb(iop_watch_t *w, unsigned revents)
{
    (void)revents;
    char buf[16];
    while (read(w->fd, buf, sizeof buf) > 0)
        ;
    watchdog_fired = 1;
    iop_loop_stop(w->loop);   /* end a RUN_DEFAULT too */
}

static void post_cb(iop_post_t *p)
{
    xthread_t *x = p->data;
    x->post_ran++;
    x->post_on_loop_thread = pthread_equal(pthread_self(), x->loop_thread);
}

static void *poke_thread(void *arg)
{
    xthread_t *x = arg;
    tu_sleep_ms(50);   /* long enough for the loop to be blocked in its backend */
    if (x->do_stop) {
        iop_loop_stop(x->loop);
    } else if (x->do_post) {
        x->post.data = x;
        if (iop_loop_post(x->loop, &x->post, post_cb) < 0)
            return NULL;
        iop_loop_wake(x->loop);
    } else {
        iop_loop_wake(x->loop);
    }
    for (int i = 0; i < 300 && !atomic_load(&x->loop_returned); i++)
        tu_sleep_ms(10);
    if (!atomic_load(&x->loop_returned) && write(x->watchdog_fd, "!", 1) < 0)
        return NULL;
    return NULL;
}

/* Runs one cross-thread poke while the loop blocks in `mode`; returns run's result. */
static int poke_and_run(iop_loop_t *loop, xthread_t *x, iop_run_mode_t mode, uint64_t *elapsed_ms)
{
    pthread_t th;
    watchdog_fired = 0;
    atomic_store(&x->loop_returned, 0);
    x->loop = loop;
    x->loop_thread = pthread_self();
    uint64_t t0 = tu_clock_ms();   /* before the thread's 50 ms sleep can start */
    assert_int_equal(pthread_create(&th, NULL, poke_thread, x), 0);
    int r = iop_loop_run(loop, mode);
    if (mode == IOP_RUN_ONCE && x->do_post) {
        /* Where the wake lands and where posts run may be one iteration apart. */
        for (int i = 0; i < 3 && !x->post_ran && !watchdog_fired; i++)
            r = iop_loop_run(loop, mode);
    }
    *elapsed_ms = tu_clock_ms() - t0;
    atomic_store(&x->loop_returned, 1);
    pthread_join(th, NULL);
    return r;
}

void test_post_wakes_blocked_loop(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int p[2];
    tu_pipe(p);
    iop_watch_t wd = { 0 };
    assert_int_equal(iop_watch_start(loop, &wd, p[0], IOP_READ, watchdog_cb), 0);

    /* No timers: only the post's wake-up can end this blocking iteration. */
    xthread_t x = { .watchdog_fd = p[1], .do_post = 1 };
    uint64_t ms;
    int r = poke_and_run(loop, &x, IOP_RUN_ONCE, &ms);
    assert_true(r >= 0);
    assert_false(watchdog_fired);
    assert_int_equal(x.post_ran, 1);
    assert_true(x.post_on_loop_thread);
    assert_true(ms >= 40);

    /* A bare wake-up also ends a blocking iteration. The poke above may have left a
     * second wake-up behind (post and wake race with the loop draining them): flush. */
    tu_run_nowait(loop, 2);
    xthread_t y = { .watchdog_fd = p[1] };
    r = poke_and_run(loop, &y, IOP_RUN_ONCE, &ms);
    assert_int_equal(r, 1);   /* the watchdog watch is still pending */
    assert_false(watchdog_fired);
    assert_true(ms >= 40);
    assert_true(ms < 2500);

    iop_watch_stop(&wd);
    conf_close(loop, p[0]);
    conf_close(loop, p[1]);
    iop_loop_destroy(loop);
}

#define POST_THREADS 4
#define POSTS_EACH 500

typedef struct counted_post {
    iop_post_t p;
    int runs;
    int on_loop_thread;
} counted_post_t;

static counted_post_t posts[POST_THREADS][POSTS_EACH];
static int posts_ran;
static pthread_t posts_loop_thread;
static iop_loop_t *posts_loop;

static void counted_post_cb(iop_post_t *p)
{
    counted_post_t *c = p->data;
    c->runs++;
    c->on_loop_thread = pthread_equal(pthread_self(), posts_loop_thread);
    posts_ran++;
}

static void *post_many_thread(void *arg)
{
    counted_post_t *mine = arg;
    for (int i = 0; i < POSTS_EACH; i++) {
        mine[i].p.data = &mine[i];
        if (iop_loop_post(posts_loop, &mine[i].p, counted_post_cb) < 0)
            break;
        if (i % 64 == 0)
            sched_yield();
    }
    return NULL;
}

void test_many_posts_from_threads(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    memset(posts, 0, sizeof posts);
    posts_ran = 0;
    posts_loop = loop;
    posts_loop_thread = pthread_self();
    pthread_t th[POST_THREADS];
    for (int t = 0; t < POST_THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, post_many_thread, posts[t]), 0);
    int all = tu_run_until_count(loop, &posts_ran, POST_THREADS * POSTS_EACH, 5000);
    for (int t = 0; t < POST_THREADS; t++)
        pthread_join(th[t], NULL);
    assert_true(all);
    tu_run_nowait(loop, 2);
    assert_int_equal(posts_ran, POST_THREADS * POSTS_EACH);
    for (int t = 0; t < POST_THREADS; t++) {
        for (int i = 0; i < POSTS_EACH; i++) {
            assert_int_equal(posts[t][i].runs, 1);
            assert_true(posts[t][i].on_loop_thread);
        }
    }
    iop_loop_destroy(loop);
}

static int failsafe_fired;

static void failsafe_cb(iop_timer_t *t)
{
    failsafe_fired = 1;
    iop_loop_stop(t->loop);
}

void test_stop_from_other_thread(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int p[2];
    tu_pipe(p);
    iop_watch_t wd = { 0 };
    assert_int_equal(iop_watch_start(loop, &wd, p[0], IOP_READ, watchdog_cb), 0);
    /* A far timer keeps RUN_DEFAULT going; it stops the loop itself if nobody else
     * does, so that a lost stop fails the test instead of hanging it. */
    failsafe_fired = 0;
    iop_timer_t failsafe = { 0 };
    assert_int_equal(iop_timer_start(loop, &failsafe, 5000 * 1000000ull, 0, failsafe_cb), 0);

    xthread_t x = { .watchdog_fd = p[1], .do_stop = 1 };
    uint64_t ms;
    int r = poke_and_run(loop, &x, IOP_RUN_DEFAULT, &ms);
    assert_false(failsafe_fired);
    assert_false(watchdog_fired);
    assert_int_equal(r, 1);   /* the timer and the watch are still pending */
    assert_true(ms >= 40);
    assert_true(ms < 4000);
    assert_true(iop_timer_active(&failsafe));

    iop_timer_stop(&failsafe);
    iop_watch_stop(&wd);
    conf_close(loop, p[0]);
    conf_close(loop, p[1]);
    iop_loop_destroy(loop);
}

/* A loop made on one thread and run on another (only there): it serves as on its
 * own thread. On io_uring the ring fd was registered by the creating thread, and
 * every entry from the running one failed with -EINVAL. sigio's signals go to the
 * thread that made the loop: it says -EXDEV (backends/sigio/README.md). */
static iop_loop_t *other_loop;
static int other_fired, other_res;
static char other_err[512];   /* the runner's iop_last_error() after its run */

static void other_timer(iop_timer_t *t)
{
    (void)t;
    other_fired++;
}

static void *run_elsewhere(void *arg)
{
    (void)arg;
    iop_timer_t t;
    memset(&t, 0, sizeof t);
    /* From the clock now, not the one cached at creation: a thread started late on a
     * busy machine found the timer due at once, and the loop ended without waiting
     * (so sigio never got to say -EXDEV). */
    iop_update_time(other_loop);
    iop_timer_start(other_loop, &t, 50 * 1000000ull, 0, other_timer);
    other_res = iop_loop_run(other_loop, IOP_RUN_DEFAULT);
    snprintf(other_err, sizeof other_err, "%s", iop_last_error());
    iop_timer_stop(&t);
    return NULL;
}

void test_run_on_other_thread(void **state)
{
    (void)state;
    other_loop = tu_loop_new();
    other_fired = 0;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, run_elsewhere, NULL), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    if (strcmp(iop_loop_backend(other_loop), "sigio") == 0) {
        assert_int_equal(other_res, -EXDEV);
        /* and says why, not only "Invalid cross-device link" */
        assert_non_null(strstr(other_err, "thread that created the loop"));
    } else {
        assert_int_equal(other_res, 0);
        assert_int_equal(other_fired, 1);
    }
    iop_loop_destroy(other_loop);
}

/* A handler installed without SA_RESTART makes the backend's wait fail with EINTR
 * (reported as no events): RUN_ONCE must wait again for what is left, not return
 * with nothing done. Another thread sends the loop's thread SIGUSR2 every
 * millisecond while ONCE waits for its only timer. */
static atomic_int signals_seen;
static int once_timer_fired;

static void count_signal(int sig)
{
    (void)sig;
    atomic_fetch_add(&signals_seen, 1);
}

static void once_timer(iop_timer_t *t)
{
    (void)t;
    once_timer_fired++;
}

typedef struct pester {
    pthread_t target;
    atomic_int stop;
} pester_t;

static void *pester_thread(void *arg)
{
    pester_t *p = arg;
    while (!atomic_load(&p->stop)) {
        pthread_kill(p->target, SIGUSR2);
        tu_sleep_ms(1);
    }
    return NULL;
}

void test_once_waits_through_signals(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    struct sigaction sa = { .sa_handler = count_signal }, old;   /* no SA_RESTART */
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGUSR2, &sa, &old), 0);
    atomic_store(&signals_seen, 0);
    once_timer_fired = 0;
    iop_timer_t t = { 0 };
    iop_update_time(loop);
    assert_int_equal(iop_timer_start(loop, &t, 100 * 1000000ull, 0, once_timer), 0);
    pester_t p = { .target = pthread_self() };
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, pester_thread, &p), 0);
    int r = iop_loop_run(loop, IOP_RUN_ONCE);
    atomic_store(&p.stop, 1);
    pthread_join(th, NULL);
    sigaction(SIGUSR2, &old, NULL);
    assert_true(r >= 0);
    assert_true(atomic_load(&signals_seen) > 0);
    assert_int_equal(once_timer_fired, 1);
    iop_timer_stop(&t);
    iop_loop_destroy(loop);
}

/* The thread that made a loop which another thread ran destroys it, and goes on
 * with a loop of its own. On io_uring the runner registered the ring's fd in its
 * own table of registered rings; destroying from here unregistered that slot
 * number in this thread's table, which held the other loop's ring (uring+sqpoll,
 * and every ring under valgrind: without SINGLE_ISSUER the kernel allows it), and
 * the other loop's next wait failed with -EBADF. */
static int own_fired;

static void own_timer(iop_timer_t *t)
{
    (void)t;
    own_fired++;
}

static int run_one_timer(iop_loop_t *loop)
{
    iop_timer_t t;
    memset(&t, 0, sizeof t);
    iop_update_time(loop);
    assert_int_equal(iop_timer_start(loop, &t, 1000000ull, 0, own_timer), 0);
    int r = iop_loop_run(loop, IOP_RUN_DEFAULT);
    iop_timer_stop(&t);
    return r;
}

void test_destroy_after_other_thread_spares_own_loop(void **state)
{
    (void)state;
    iop_loop_t *mine = tu_loop_new();
    own_fired = 0;
    assert_int_equal(run_one_timer(mine), 0);   /* entered from this thread */
    assert_int_equal(own_fired, 1);
    if (strcmp(iop_loop_backend(mine), "sigio") == 0) {
        iop_loop_destroy(mine);
        skip();   /* a sigio loop runs only where it was made (test_run_on_other_thread) */
    }
    other_loop = tu_loop_new();
    other_fired = 0;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, run_elsewhere, NULL), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(other_res, 0);
    assert_int_equal(other_fired, 1);
    iop_loop_destroy(other_loop);

    int r = run_one_timer(mine);
    if (r < 0)
        fail_msg("own loop after destroying the other: %d %s", r, iop_last_error());
    assert_int_equal(own_fired, 2);
    iop_loop_destroy(mine);
}

/* A loop is run by one thread at a time. Another thread's iop_loop_run and
 * iop_loop_destroy while it runs are refused with -EBUSY and a reason that names
 * the other thread (they read a plain flag the runner was writing, and blamed a
 * callback of the loop's own). The runner makes the loop itself: a sigio loop
 * runs only where it was made. */
static atomic_int busy_running;
static _Atomic(iop_loop_t *) busy_loop;

static void busy_seen(iop_post_t *p)
{
    (void)p;
    atomic_store(&busy_running, 1);
}

static void *make_and_run(void *arg)
{
    (void)arg;
    iop_loop_t *loop = tu_loop_new();
    iop_timer_t keep;   /* keeps RUN_DEFAULT going until the stop */
    memset(&keep, 0, sizeof keep);
    iop_timer_start(loop, &keep, 60000 * 1000000ull, 0, other_timer);
    atomic_store(&busy_loop, loop);
    other_res = iop_loop_run(loop, IOP_RUN_DEFAULT);
    iop_timer_stop(&keep);
    return NULL;
}

void test_run_refused_while_another_thread_runs(void **state)
{
    (void)state;
    atomic_store(&busy_running, 0);
    atomic_store(&busy_loop, NULL);
    other_res = -1;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, make_and_run, NULL), 0);
    iop_loop_t *loop = NULL;
    for (int i = 0; i < 5000 && !(loop = atomic_load(&busy_loop)); i++)
        tu_sleep_ms(1);
    assert_non_null(loop);
    iop_post_t seen = { 0 };
    assert_int_equal(iop_loop_post(loop, &seen, busy_seen), 0);
    for (int i = 0; i < 5000 && !atomic_load(&busy_running); i++)
        tu_sleep_ms(1);
    assert_true(atomic_load(&busy_running));   /* the other thread is inside run */

    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), -EBUSY);
    assert_non_null(strstr(iop_last_error(), "another thread"));
    iop_loop_destroy(loop);                    /* refused: the loop goes on */
    assert_non_null(strstr(iop_last_error(), "another thread"));

    iop_loop_stop(loop);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(other_res, 1);            /* the timer was still pending */
    iop_loop_destroy(loop);
}
