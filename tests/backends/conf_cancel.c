/* Cancellation and deadlines. */
#include "conformance.h"

#define MS 1000000ull

static int both_done(void *arg)
{
    rec_t **r = arg;
    return r[0]->calls > 0 && r[1]->calls > 0;
}

void test_cancel_pending_recv(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    char buf[16] = { 0 };
    rec_t r = { 0 }, c = { 0 };
    iop_prep_recv(&r.op, s[1], buf, sizeof buf, 0, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    tu_run_nowait(loop, 1);
    assert_int_equal(r.calls, 0);

    iop_prep_cancel(&c.op, &r.op, rec_cb, &c);
    assert_int_equal(iop_submit(loop, &c.op), 0);
    assert_int_equal(r.calls + c.calls, 0);   /* never inside submit */
    rec_t *both[2] = { &r, &c };
    assert_true(tu_run_until(loop, both_done, both, 2000));
    assert_int_equal(r.res, -ECANCELED);
    assert_int_equal(c.res, 0);

    /* Data arriving afterwards is not consumed by the cancelled op. */
    assert_int_equal(send(s[0], "kept", 4, 0), 4);
    tu_run_nowait(loop, 3);
    assert_int_equal(r.calls, 1);
    assert_int_equal(c.calls, 1);
    iop_prep_recv(&r.op, s[1], buf, sizeof buf, 0, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_true(tu_run_until_count(loop, &r.calls, 2, 2000));
    assert_int_equal(r.res, 4);
    assert_memory_equal(buf, "kept", 4);

    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

/* Two cancels of one op: the first cancels it, the second is told a cancel is under
 * way (-EALREADY), on every backend, and the op completes once. */
void test_cancel_twice(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    char buf[16];
    rec_t r = { 0 }, c1 = { 0 }, c2 = { 0 };
    iop_prep_recv(&r.op, s[1], buf, sizeof buf, 0, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    tu_run_nowait(loop, 1);
    iop_prep_cancel(&c1.op, &r.op, rec_cb, &c1);
    iop_prep_cancel(&c2.op, &r.op, rec_cb, &c2);
    assert_int_equal(iop_submit(loop, &c1.op), 0);
    assert_int_equal(iop_submit(loop, &c2.op), 0);
    rec_t *both[2] = { &c1, &c2 };
    assert_true(tu_run_until(loop, both_done, both, 2000));
    assert_true(tu_run_until_count(loop, &r.calls, 1, 2000));
    assert_int_equal(r.res, -ECANCELED);
    assert_int_equal(c1.res, 0);
    assert_int_equal(c2.res, -EALREADY);
    tu_run_nowait(loop, 2);
    assert_int_equal(r.calls, 1);

    /* Resubmitted, the op can be cancelled again: the mark went with its completion. */
    iop_prep_recv(&r.op, s[1], buf, sizeof buf, 0, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    tu_run_nowait(loop, 1);
    iop_prep_cancel(&c1.op, &r.op, rec_cb, &c1);
    assert_int_equal(iop_submit(loop, &c1.op), 0);
    assert_true(tu_run_until_count(loop, &c1.calls, 2, 2000));
    assert_true(tu_run_until_count(loop, &r.calls, 2, 2000));
    assert_int_equal(c1.res, 0);
    assert_int_equal(r.res, -ECANCELED);

    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

void test_cancel_not_in_flight(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    rec_t idle = { 0 }, c = { 0 };
    iop_prep_nop(&idle.op, rec_cb, &idle);   /* prepared, never submitted */
    iop_prep_cancel(&c.op, &idle.op, rec_cb, &c);
    assert_int_equal(iop_submit(loop, &c.op), 0);
    assert_true(tu_run_until_count(loop, &c.calls, 1, 2000));
    assert_int_equal(c.res, -ENOENT);
    assert_int_equal(idle.calls, 0);

    /* An op whose callback already ran is not in flight either. */
    assert_int_equal(iop_submit(loop, &idle.op), 0);
    assert_true(tu_run_until_count(loop, &idle.calls, 1, 2000));
    iop_prep_cancel(&c.op, &idle.op, rec_cb, &c);
    assert_int_equal(iop_submit(loop, &c.op), 0);
    assert_true(tu_run_until_count(loop, &c.calls, 2, 2000));
    assert_int_equal(c.res, -ENOENT);
    assert_int_equal(idle.calls, 1);
    iop_loop_destroy(loop);
}

void test_cancel_finished_op(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    /* A nop has finished at submit; only its callback is pending. */
    rec_t n = { 0 }, c = { 0 };
    iop_prep_nop(&n.op, rec_cb, &n);
    assert_int_equal(iop_submit(loop, &n.op), 0);
    iop_prep_cancel(&c.op, &n.op, rec_cb, &c);
    assert_int_equal(iop_submit(loop, &c.op), 0);
    rec_t *both[2] = { &n, &c };
    assert_true(tu_run_until(loop, both_done, both, 2000));
    assert_int_equal(c.res, -EALREADY);
    assert_int_equal(n.res, 0);

    /* A recv with data already there: it either finished (-EALREADY, data kept in
     * the record) or a completion backend still had it (0, target -ECANCELED). */
    int s[2];
    tu_tcp_pair(s);
    assert_int_equal(send(s[0], "ready", 5, 0), 5);
    tu_sleep_ms(5);
    char buf[16];
    rec_t r = { 0 }, c2 = { 0 };
    iop_prep_recv(&r.op, s[1], buf, sizeof buf, 0, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    iop_prep_cancel(&c2.op, &r.op, rec_cb, &c2);
    assert_int_equal(iop_submit(loop, &c2.op), 0);
    rec_t *both2[2] = { &r, &c2 };
    assert_true(tu_run_until(loop, both_done, both2, 2000));
    if (c2.res == -EALREADY)
        assert_int_equal(r.res, 5);
    else if (c2.res == 0)
        assert_int_equal(r.res, -ECANCELED);
    else
        fail_msg("cancel of a finished recv gave %d (%s)", c2.res, iop_strerror(c2.res));
    tu_run_nowait(loop, 2);
    assert_int_equal(r.calls, 1);
    assert_int_equal(c2.calls, 1);
    assert_int_equal(n.calls, 1);

    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

/* A multishot op whose result waits: a cancel says 0 only if the op then ends with
 * -ECANCELED. A waiting result that ends the series anyway (an error, a passed
 * deadline) is final, and the cancel is told -EALREADY, as for a single shot. */
static int op_idle(void *arg) { return !iop_op_in_flight(arg); }

static void cancel_right_after(iop_loop_t *loop, iop_op_t *target, rec_t *r)
{
    rec_t c = { 0 };
    assert_int_equal(iop_submit(loop, target), 0);
    iop_prep_cancel(&c.op, target, rec_cb, &c);
    assert_int_equal(iop_submit(loop, &c.op), 0);
    rec_t *both[2] = { r, &c };
    assert_true(tu_run_until(loop, both_done, both, 2000));
    assert_true(tu_run_until(loop, op_idle, target, 2000));
    if (c.res == 0)
        assert_int_equal(r->res, -ECANCELED);
    else if (c.res == -EALREADY)
        assert_int_not_equal(r->res, -ECANCELED);
    else
        fail_msg("cancel gave %d (%s)", c.res, iop_strerror(c.res));
}

void test_cancel_multishot_final_result(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    struct sockaddr_in addr;
    int ls = tu_tcp_listener(&addr, 16);
    rec_t r = { 0 };
    iop_prep_accept(&r.op, ls, NULL, NULL, rec_cb, &r);   /* a deadline long passed */
    iop_op_set_multishot(&r.op);
    iop_op_set_deadline(&r.op, 1);
    cancel_right_after(loop, &r.op, &r);
    int idle = tu_tcp_socket();    /* not listening: accept fails */
    r = (rec_t){ 0 };
    iop_prep_accept(&r.op, idle, NULL, NULL, rec_cb, &r);
    iop_op_set_multishot(&r.op);
    cancel_right_after(loop, &r.op, &r);
    assert_int_equal(r.res, -EINVAL);   /* found before any cancel could be */
    conf_close(loop, idle);
    conf_close(loop, ls);
    iop_loop_destroy(loop);
}

void test_cancel_timeout_op(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    rec_t t = { 0 }, c = { 0 };
    iop_prep_timeout(&t.op, 10000 * MS, rec_cb, &t);
    assert_int_equal(iop_submit(loop, &t.op), 0);
    tu_run_nowait(loop, 1);
    uint64_t wall0 = tu_clock_ns();
    iop_prep_cancel(&c.op, &t.op, rec_cb, &c);
    assert_int_equal(iop_submit(loop, &c.op), 0);
    rec_t *both[2] = { &t, &c };
    assert_true(tu_run_until(loop, both_done, both, 2000));
    assert_int_equal(t.res, -ECANCELED);
    assert_int_equal(c.res, 0);
    assert_true(tu_clock_ns() - wall0 < 1000 * MS);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);   /* nothing left behind */
    iop_loop_destroy(loop);
}

/* A timeout op of nearly 2^64 ns means "never": it must not wrap into the past. */
void test_timeout_op_huge(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    rec_t t = { 0 }, c = { 0 };
    iop_prep_timeout(&t.op, UINT64_MAX - 1000, rec_cb, &t);
    assert_int_equal(iop_submit(loop, &t.op), 0);
    tu_run_for(loop, 20);
    assert_int_equal(t.calls, 0);
    iop_prep_cancel(&c.op, &t.op, rec_cb, &c);
    assert_int_equal(iop_submit(loop, &c.op), 0);
    assert_true(tu_run_until_count(loop, &t.calls, 1, 2000));
    assert_int_equal(t.res, -ECANCELED);
    iop_loop_destroy(loop);
}

void test_deadline_expires(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    char buf[16] = { 0 };
    rec_t r = { 0 };
    iop_prep_recv(&r.op, s[1], buf, sizeof buf, 0, rec_cb, &r);
    uint64_t wall0 = tu_clock_ns();
    uint64_t deadline = iop_update_time(loop) + 20 * MS;
    iop_op_set_deadline(&r.op, deadline);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_true(tu_run_until_count(loop, &r.calls, 1, 2000));
    assert_int_equal(r.res, -ETIMEDOUT);
    assert_true(r.at >= deadline);
    assert_true(tu_clock_ns() - wall0 >= 20 * MS);

    /* The data that comes later waits for the next recv. */
    assert_int_equal(send(s[0], "late", 4, 0), 4);
    tu_run_nowait(loop, 2);
    assert_int_equal(r.calls, 1);
    iop_prep_recv(&r.op, s[1], buf, sizeof buf, 0, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_true(tu_run_until_count(loop, &r.calls, 2, 2000));
    assert_int_equal(r.res, 4);

    /* accept has deadlines too. */
    struct sockaddr_in addr;
    int lfd = tu_tcp_listener(&addr, 4);
    rec_t a = { 0 };
    iop_prep_accept(&a.op, lfd, NULL, NULL, rec_cb, &a);
    iop_op_set_deadline(&a.op, iop_update_time(loop) + 20 * MS);
    assert_int_equal(iop_submit(loop, &a.op), 0);
    assert_true(tu_run_until_count(loop, &a.calls, 1, 2000));
    assert_int_equal(a.res, -ETIMEDOUT);

    conf_close(loop, lfd);
    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

void test_deadline_not_reached(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    char buf[16] = { 0 };
    rec_t r = { 0 };
    iop_prep_recv(&r.op, s[1], buf, sizeof buf, 0, rec_cb, &r);
    iop_op_set_deadline(&r.op, iop_update_time(loop) + 100 * MS);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    tu_run_nowait(loop, 1);
    assert_int_equal(send(s[0], "fast", 4, 0), 4);
    assert_true(tu_run_until_count(loop, &r.calls, 1, 2000));
    assert_int_equal(r.res, 4);
    /* Past the deadline: it must not complete a second time. */
    tu_run_for(loop, 150);
    assert_int_equal(r.calls, 1);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);   /* its timer is gone */
    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

void test_deadline_already_past(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    char buf[16];
    rec_t r = { 0 };
    iop_prep_recv(&r.op, s[1], buf, sizeof buf, 0, rec_cb, &r);
    iop_op_set_deadline(&r.op, 1);   /* long gone (0 would mean "none") */
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_int_equal(r.calls, 0);
    assert_true(tu_run_until_count(loop, &r.calls, 1, 2000));
    assert_int_equal(r.res, -ETIMEDOUT);
    tu_run_nowait(loop, 2);
    assert_int_equal(r.calls, 1);
    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

/* More deadlines passing at once than the core keeps cancel records for (a
 * completion backend's deadlines are the core's): every one times out, none is
 * lost, and the ones whose data came first get their data. */
void test_deadline_many(void **state)
{
    (void)state;
    enum { N = 60 };
    iop_loop_t *loop = tu_loop_new();
    int s[N][2];
    char buf[N][8];
    rec_t r[N];
    int calls = 0;
    memset(r, 0, sizeof r);
    for (int i = 0; i < N; i++)
        tu_tcp_pair(s[i]);
    /* From here the early data must come before the deadline: 100 ms is room enough
     * even under valgrind on a loaded machine (60 connects are not in it). */
    uint64_t deadline = iop_update_time(loop) + 100 * MS;
    for (int i = 0; i < N; i++) {
        iop_prep_recv(&r[i].op, s[i][1], buf[i], sizeof buf[i], 0, rec_cb, &r[i]);
        iop_op_set_deadline(&r[i].op, deadline);
        assert_int_equal(iop_submit(loop, &r[i].op), 0);
    }
    tu_run_nowait(loop, 1);
    for (int i = 0; i < N; i += 10)
        assert_int_equal(send(s[i][0], "early", 5, 0), 5);
    for (int i = 0; i < N; i++) {
        assert_true(tu_run_until_count(loop, &r[i].calls, 1, 3000));
        calls += r[i].calls;
        if (i % 10 == 0) {
            assert_int_equal(r[i].res, 5);
            assert_memory_equal(buf[i], "early", 5);
        } else {
            assert_int_equal(r[i].res, -ETIMEDOUT);
        }
    }
    assert_int_equal(calls, N);
    /* Each socket still works: data sent now reaches a new recv. */
    for (int i = 0; i < N; i++) {
        assert_int_equal(send(s[i][0], "later", 5, 0), 5);
        iop_prep_recv(&r[i].op, s[i][1], buf[i], sizeof buf[i], 0, rec_cb, &r[i]);
        assert_int_equal(iop_submit(loop, &r[i].op), 0);
    }
    for (int i = 0; i < N; i++) {
        assert_true(tu_run_until_count(loop, &r[i].calls, 2, 3000));
        assert_int_equal(r[i].res, 5);
        assert_memory_equal(buf[i], "later", 5);
    }
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);   /* no timer or cancel left */
    for (int i = 0; i < N; i++) {
        conf_close(loop, s[i][0]);
        conf_close(loop, s[i][1]);
    }
    iop_loop_destroy(loop);
}

/* Data and the deadline both due when the loop next looks: the op ends either with
 * the data or with -ETIMEDOUT, and then the data waits in the socket; it is read
 * exactly once either way. */
void test_deadline_races_data(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    for (int round = 0; round < 6; round++) {
        char buf[16] = { 0 };
        rec_t r = { 0 };
        iop_prep_recv(&r.op, s[1], buf, sizeof buf, 0, rec_cb, &r);
        iop_op_set_deadline(&r.op, iop_update_time(loop) + 5 * MS);
        assert_int_equal(iop_submit(loop, &r.op), 0);
        tu_run_nowait(loop, 1);
        assert_int_equal(send(s[0], "race", 4, 0), 4);
        tu_sleep_ms(10);
        assert_true(tu_run_until_count(loop, &r.calls, 1, 2000));
        if (r.res == -ETIMEDOUT) {
            iop_prep_recv(&r.op, s[1], buf, sizeof buf, 0, rec_cb, &r);
            assert_int_equal(iop_submit(loop, &r.op), 0);
            assert_true(tu_run_until_count(loop, &r.calls, 2, 2000));
        }
        assert_int_equal(r.res, 4);
        assert_memory_equal(buf, "race", 4);
        int calls = r.calls;
        tu_run_nowait(loop, 2);
        assert_int_equal(r.calls, calls);   /* one result per submit, no late second one */
    }
    /* Nothing left over: a probe recv sees only what is sent now. */
    char buf[16];
    rec_t p = { 0 };
    assert_int_equal(send(s[0], "end", 3, 0), 3);
    iop_prep_recv(&p.op, s[1], buf, sizeof buf, 0, rec_cb, &p);
    assert_int_equal(iop_submit(loop, &p.op), 0);
    assert_true(tu_run_until_count(loop, &p.calls, 1, 2000));
    assert_int_equal(p.res, 3);
    assert_memory_equal(buf, "end", 3);
    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

/* A recv with a deadline queued behind another recv on the same socket times out at
 * its deadline while the first still waits. With deadlines kept by the kernel (a
 * linked timeout that goes with the op) it waited until the first had data. */
void test_deadline_queued_behind_op(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    char a_buf[8], b_buf[8];
    rec_t a = { 0 }, b = { 0 };
    iop_prep_recv(&a.op, s[1], a_buf, sizeof a_buf, 0, rec_cb, &a);
    iop_prep_recv(&b.op, s[1], b_buf, sizeof b_buf, 0, rec_cb, &b);
    uint64_t deadline = iop_update_time(loop) + 30 * MS;
    iop_op_set_deadline(&b.op, deadline);
    assert_int_equal(iop_submit(loop, &a.op), 0);
    assert_int_equal(iop_submit(loop, &b.op), 0);
    assert_true(tu_run_until_count(loop, &b.calls, 1, 1000));
    assert_int_equal(b.res, -ETIMEDOUT);
    assert_true(b.at >= deadline);
    assert_int_equal(a.calls, 0);
    /* the first one still gets the data */
    assert_int_equal(send(s[0], "x", 1, 0), 1);
    assert_true(tu_run_until_count(loop, &a.calls, 1, 2000));
    assert_int_equal(a.res, 1);
    assert_int_equal(b.calls, 1);
    conf_close(loop, s[1]);
    close(s[0]);
    iop_loop_destroy(loop);
}
