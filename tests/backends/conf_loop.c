/* The loop itself: statistics, iop_loop_run's return values and RUN_DEFAULT's end. */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include "conformance.h"

#define MS 1000000ull

/* A thread that stops the loop after limit_ms unless told to go home first, so that
 * a RUN_DEFAULT that never ends fails the test instead of hanging it. */
typedef struct stopper {
    iop_loop_t *loop;
    unsigned limit_ms;
    atomic_int done;
    atomic_int fired;
    pthread_t th;
} stopper_t;

static void *stopper_main(void *arg)
{
    stopper_t *s = arg;
    for (unsigned waited = 0; waited < s->limit_ms && !atomic_load(&s->done); waited += 5)
        tu_sleep_ms(5);
    if (!atomic_load(&s->done)) {
        atomic_store(&s->fired, 1);
        iop_loop_stop(s->loop);
    }
    return NULL;
}

static void stopper_start(stopper_t *s, iop_loop_t *loop, unsigned limit_ms)
{
    s->loop = loop;
    s->limit_ms = limit_ms;
    atomic_store(&s->done, 0);
    atomic_store(&s->fired, 0);
    assert_int_equal(pthread_create(&s->th, NULL, stopper_main, s), 0);
}

static int stopper_finish(stopper_t *s)
{
    atomic_store(&s->done, 1);
    pthread_join(s->th, NULL);
    return atomic_load(&s->fired);
}

static int recs_done(void *arg)
{
    rec_t **r = arg;
    for (; *r; r++)
        if ((*r)->calls == 0)
            return 0;
    return 1;
}

static int timer_fires;

static void count_timer(iop_timer_t *t)
{
    (void)t;
    timer_fires++;
}

void test_loop_stats(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    iop_loop_stats_t st;
    iop_loop_get_stats(loop, &st);
    assert_int_equal(st.ops_submitted, 0);
    assert_int_equal(st.ops_completed, 0);

    int s[2];
    tu_tcp_pair(s);
    char buf[8];
    rec_t nop = { 0 }, tmo = { 0 }, rcv = { 0 }, snd = { 0 }, bad = { 0 };
    iop_prep_recv(&rcv.op, s[1], buf, sizeof buf, 0, rec_cb, &rcv);
    assert_int_equal(iop_submit(loop, &rcv.op), 0);       /* waits for readiness */
    assert_int_equal(iop_submit(loop, &rcv.op), -EBUSY);  /* refused: not counted */
    iop_prep_recv(&bad.op, -1, buf, sizeof buf, 0, rec_cb, &bad);
    assert_int_equal(iop_submit(loop, &bad.op), -EBADF);  /* refused: not counted */
    iop_prep_nop(&nop.op, rec_cb, &nop);
    assert_int_equal(iop_submit(loop, &nop.op), 0);
    iop_prep_timeout(&tmo.op, MS, rec_cb, &tmo);
    assert_int_equal(iop_submit(loop, &tmo.op), 0);
    tu_run_nowait(loop, 1);
    iop_prep_send(&snd.op, s[0], "stat", 4, 0, rec_cb, &snd);
    assert_int_equal(iop_submit(loop, &snd.op), 0);

    iop_loop_get_stats(loop, &st);
    assert_int_equal(st.ops_submitted, 4);
    rec_t *all[] = { &nop, &tmo, &rcv, &snd, NULL };
    assert_true(tu_run_until(loop, recs_done, all, 2000));
    tu_run_nowait(loop, 2);
    iop_loop_get_stats(loop, &st);
    assert_int_equal(st.ops_submitted, 4);
    assert_int_equal(st.ops_completed, 4);
    assert_true(st.iterations > 0);
    assert_true(st.syscalls > 0);
    assert_true(st.polls > 0);
    assert_true(st.events > 0);   /* the recv waited for a readiness event */

    /* Each NOWAIT run is at least one iteration; a user timer counts as fired. */
    uint64_t iters = st.iterations, fired = st.timers_fired;
    tu_run_nowait(loop, 3);
    iop_loop_get_stats(loop, &st);
    assert_true(st.iterations >= iters + 3);
    timer_fires = 0;
    iop_timer_t t = { 0 };
    assert_int_equal(iop_timer_start(loop, &t, MS, 0, NULL), -EINVAL);
    assert_int_equal(iop_timer_start(loop, &t, MS, 0, count_timer), 0);
    assert_true(tu_run_until_count(loop, &timer_fires, 1, 2000));
    iop_loop_get_stats(loop, &st);
    assert_true(st.timers_fired >= fired + 1);
    assert_int_equal(st.ops_completed, 4);

    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

static void noop_watch(iop_watch_t *w, unsigned revents)
{
    (void)w;
    (void)revents;
}

void test_loop_run_return_values(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    stopper_t stop;

    /* Nothing pending: 0 from every mode that cannot block forever. */
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);
    stopper_start(&stop, loop, 3000);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_DEFAULT), 0);
    assert_false(stopper_finish(&stop));

    /* A timer still pending after a RUN_ONCE that fired another: 1. */
    timer_fires = 0;
    iop_timer_t soon = { 0 }, far = { 0 };
    assert_int_equal(iop_timer_start(loop, &soon, 5 * MS, 0, count_timer), 0);
    assert_int_equal(iop_timer_start(loop, &far, 10000 * MS, 0, count_timer), 0);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 1);
    int r = 1;
    for (int i = 0; i < 100 && timer_fires == 0 && r == 1; i++)
        r = iop_loop_run(loop, IOP_RUN_ONCE);   /* blocks until `soon` is due */
    assert_int_equal(r, 1);
    assert_int_equal(timer_fires, 1);
    assert_false(iop_timer_active(&soon));
    assert_true(iop_timer_active(&far));
    iop_timer_stop(&far);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);

    /* A watch and an op in flight count as pending too. */
    int p[2];
    tu_pipe(p);
    iop_watch_t w = { 0 };
    assert_int_equal(iop_watch_start(loop, &w, p[0], IOP_READ, noop_watch), 0);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 1);
    iop_watch_modify(&w, 0);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 1);   /* paused, not stopped */
    iop_watch_stop(&w);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);

    char buf[4];
    rec_t rd = { 0 }, cancel = { 0 };
    iop_prep_read(&rd.op, p[0], buf, sizeof buf, -1, rec_cb, &rd);
    assert_int_equal(iop_submit(loop, &rd.op), 0);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 1);
    iop_prep_cancel(&cancel.op, &rd.op, rec_cb, &cancel);
    assert_int_equal(iop_submit(loop, &cancel.op), 0);
    rec_t *both[] = { &rd, &cancel, NULL };
    assert_true(tu_run_until(loop, recs_done, both, 2000));
    assert_int_equal(rd.res, -ECANCELED);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);

    conf_close(loop, p[0]);
    conf_close(loop, p[1]);
    iop_loop_destroy(loop);
}

typedef struct idle_ctx {
    int fd;
    iop_op_t send_op;
    int fires;
} idle_ctx_t;

static void idle_sent(iop_op_t *op, int res)
{
    (void)op;
    assert_int_equal(res, 5);
}

static void idle_timer(iop_timer_t *t)
{
    idle_ctx_t *c = t->data;
    if (++c->fires == 2) {   /* the second timer feeds the waiting recv */
        iop_prep_send(&c->send_op, c->fd, "later", 5, 0, idle_sent, c);
        assert_int_equal(iop_submit(t->loop, &c->send_op), 0);
    }
}

void test_loop_run_default_until_idle(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    idle_ctx_t ctx = { .fd = s[0] };
    iop_timer_t t[3] = { { .data = &ctx }, { .data = &ctx }, { .data = &ctx } };
    uint64_t t0 = tu_clock_ms();
    iop_update_time(loop);   /* timers count from the loop clock: make it current */
    for (int i = 0; i < 3; i++)
        assert_int_equal(iop_timer_start(loop, &t[i], (uint64_t)(5 + 10 * i) * MS, 0, idle_timer), 0);
    char buf[8] = { 0 };
    rec_t rcv = { 0 };
    iop_prep_recv(&rcv.op, s[1], buf, sizeof buf, 0, rec_cb, &rcv);
    assert_int_equal(iop_submit(loop, &rcv.op), 0);

    stopper_t stop;
    stopper_start(&stop, loop, 3000);
    int r = iop_loop_run(loop, IOP_RUN_DEFAULT);   /* returns once nothing is left */
    assert_false(stopper_finish(&stop));
    assert_int_equal(r, 0);
    assert_int_equal(ctx.fires, 3);
    assert_int_equal(rcv.calls, 1);
    assert_int_equal(rcv.res, 5);
    assert_memory_equal(buf, "later", 5);
    assert_true(tu_clock_ms() - t0 >= 25);   /* the last timer's delay */

    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

/* A forked child cannot use its parent's loop (an io_uring ring, an epoll set and
 * the parent's registrations are shared with the parent): running it fails with a
 * clear error, and a loop the child creates itself works. */
void test_fork_child_makes_own_loop(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    char buf[8];
    rec_t r = { 0 };
    iop_prep_recv(&r.op, s[1], buf, sizeof buf, 0, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    tu_run_nowait(loop, 1);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int code = 0;
        if (iop_loop_run(loop, IOP_RUN_NOWAIT) != -ECHILD || !strstr(iop_last_error(), "forked child"))
            code |= 1;
        iop_loop_t *own = NULL;
        iop_loop_opts_t o = { .size = sizeof o, .backend = tu_backend, .flags = tu_loop_flags };
        if (iop_loop_create(&own, &o) < 0) {
            code |= 2;
        } else {
            rec_t t = { 0 };
            iop_prep_timeout(&t.op, 1000000, rec_cb, &t);
            if (iop_submit(own, &t.op) < 0)
                code |= 4;
            for (int i = 0; i < 1000 && !t.calls; i++)
                iop_loop_run(own, IOP_RUN_ONCE);
            if (t.calls != 1 || t.res != 0)
                code |= 8;
            iop_loop_destroy(own);
        }
        _exit(code);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    /* The parent's loop is untouched by the child. */
    assert_int_equal(send(s[0], "after", 5, 0), 5);
    assert_true(tu_run_until_count(loop, &r.calls, 1, 2000));
    assert_int_equal(r.res, 5);
    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}
