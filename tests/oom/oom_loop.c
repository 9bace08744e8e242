/* The loop scenarios: the proactor's ops with timers, watches and posts; many
 * connections at once. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "oom_sweep.h"

/* ---- proactor: accept, connect, send / recv / recv_buf, timers, watches, posts -------- */

typedef struct rec {
    iop_op_t op;
    int calls;
    int res;
} rec_t;

static void rec_cb(iop_op_t *op, int res)
{
    rec_t *r = op->data;
    r->calls++;
    r->res = res;
}

static int rec_done(void *arg) { return ((rec_t *)arg)->calls > 0; }

/* Submits r's op; 0, or the error noted. */
static int submit(iop_loop_t *loop, rec_t *r, const char *what)
{
    r->calls = 0;
    r->res = 0;
    return note(iop_submit(loop, &r->op), what);
}

static void guard_fired(iop_timer_t *t) { (void)t; }

/* Runs loop until done(arg): 1, or 0 when the loop failed (noted). Waiting past
 * RUN_MS is a hang. A guard timer bounds each blocking turn; without memory for
 * it the turns do not block. */
static int run_until(iop_loop_t *loop, int (*done)(void *arg), void *arg, const char *what)
{
    uint64_t end = tu_clock_ns() + RUN_MS * 1000000ull;
    iop_timer_t guard = { 0 };
    int ok = 1;
    while (!done(arg)) {
        if (tu_clock_ns() >= end)
            fail_msg("%s: not done within %d ms", what, RUN_MS);
        int r = 0;
        if (!iop_timer_active(&guard) && iop_timer_start(loop, &guard, 5000000, 0, guard_fired) < 0)
            r = 1;
        r = iop_loop_run(loop, r ? IOP_RUN_NOWAIT : IOP_RUN_ONCE);
        if (r < 0) {
            note(r, "iop_loop_run");
            ok = 0;
            break;
        }
    }
    iop_timer_stop(&guard);
    return ok;
}

typedef struct count_goal {
    const int *n;
    int goal;
} count_goal_t;

static int count_reached(void *arg)
{
    count_goal_t *g = arg;
    return *g->n >= g->goal;
}

static int run_until_count(iop_loop_t *loop, const int *n, int goal, const char *what)
{
    count_goal_t g = { n, goal };
    return run_until(loop, count_reached, &g, what);
}

/* Waits for r's callback; its result (noted). */
static int await(iop_loop_t *loop, rec_t *r, const char *what)
{
    if (!run_until(loop, rec_done, r, what))
        return oc.err;
    assert_int_equal(r->calls, 1);
    return note(r->res, what);
}

static void bump_timer(iop_timer_t *t) { (*(int *)t->data)++; }
static void bump_post(iop_post_t *p) { (*(int *)p->data)++; }

/* Level-triggered: fires each iteration while its fd stays writable; stops at 3. */
static void watch_thrice(iop_watch_t *w, unsigned revents)
{
    (void)revents;
    if (++*(int *)w->data == 3)
        iop_watch_stop(w);
}

#define NTIMERS 70        /* past the timer heap's first 64 slots */
#define CHUNK 3000

static void proactor_scenario(void)
{
    iop_loop_t *loop = loop_new(4);
    if (!loop)
        return;
    struct sockaddr_in addr;
    int lfd = tu_tcp_listener(&addr, 8), sfd = -1;
    /* A high fd number: the loop's fd table must grow for it. */
    int c0 = tu_tcp_socket(), cfd = fcntl(c0, F_DUPFD_CLOEXEC, 300);
    assert_true(cfd >= 300);
    close(c0);
    rec_t acc, con, snd, rcv, tmo;
    iop_timer_t timers[NTIMERS];
    int fired = 0, posted = 0, started = 0;
    memset(timers, 0, sizeof timers);
    char out[CHUNK], in[CHUNK];
    tu_fill_pattern(out, sizeof out, 7);

    iop_prep_accept(&acc.op, lfd, NULL, NULL, rec_cb, &acc);
    iop_op_set_deadline(&acc.op, iop_now(loop) + 10 * SEC);
    if (submit(loop, &acc, "submit accept") < 0)
        goto out;
    iop_prep_connect(&con.op, cfd, (struct sockaddr *)&addr, sizeof addr, rec_cb, &con);
    if (submit(loop, &con, "submit connect") < 0 ||
        await(loop, &con, "connect") < 0 || await(loop, &acc, "accept") < 0)
        goto out;
    sfd = acc.res;

    /* Timers, a timeout op, a post. */
    for (; started < NTIMERS; started++) {
        timers[started].data = &fired;
        if (note(iop_timer_start(loop, &timers[started], 1000000 + (uint64_t)started * 1000, 0, bump_timer),
                 "iop_timer_start") < 0)
            break;
    }
    iop_post_t post = { .data = &posted };
    if (note(iop_loop_post(loop, &post, bump_post), "iop_loop_post") < 0)
        goto out;
    iop_prep_timeout(&tmo.op, 2000000, rec_cb, &tmo);
    if (submit(loop, &tmo, "submit timeout") < 0 || await(loop, &tmo, "timeout") < 0)
        goto out;
    if (!run_until_count(loop, &fired, started, "timers") || !run_until_count(loop, &posted, 1, "post") ||
        oc.err)
        goto out;

    /* Bytes both ways: send / recv, then send / recv_buf from the pool. */
    for (int round = 0; round < 4; round++) {
        int a = round & 1 ? sfd : cfd, b = round & 1 ? cfd : sfd;
        iop_prep_send(&snd.op, a, out, sizeof out, 0, rec_cb, &snd);
        if (round == 2)
            iop_op_set_deadline(&snd.op, iop_now(loop) + 10 * SEC);
        if (submit(loop, &snd, "submit send") < 0)
            goto out;
        size_t got = 0;
        while (got < sizeof out) {
            if (round == 3) {
                iop_prep_recv_buf(&rcv.op, b, 0, rec_cb, &rcv);
            } else {
                iop_prep_recv(&rcv.op, b, in + got, sizeof in - got, 0, rec_cb, &rcv);
                if (round == 2)
                    iop_op_set_deadline(&rcv.op, iop_now(loop) + 10 * SEC);
            }
            if (submit(loop, &rcv, "submit recv") < 0 || await(loop, &rcv, "recv") < 0)
                goto out;
            assert_true(rcv.res > 0);
            if (round == 3) {
                memcpy(in + got, rcv.op.u.pooled.buf, (size_t)rcv.res);
                iop_buf_release(loop, rcv.op.u.pooled.bid);
            }
            got += (size_t)rcv.res;
        }
        if (await(loop, &snd, "send") < 0)
            goto out;
        assert_int_equal(snd.res, sizeof out);
        assert_memory_equal(in, out, sizeof out);
    }

    /* A watch, then a close op. */
    iop_watch_t w = { .data = &fired };
    fired = 0;
    if (note(iop_watch_start(loop, &w, cfd, IOP_WRITE, watch_thrice), "iop_watch_start") < 0)
        goto out;
    if (!run_until_count(loop, &fired, 3, "a watch firing 3 times"))
        goto out;
    iop_prep_close(&acc.op, sfd, rec_cb, &acc);
    if (submit(loop, &acc, "submit close") < 0)
        goto out;
    sfd = -1;   /* closed whatever the result */
    await(loop, &acc, "close");
out:
    for (int i = 0; i < started; i++)
        iop_timer_stop(&timers[i]);
    if (oc.err)
        still_works(loop);
    if (sfd >= 0)
        iop_fd_close(loop, sfd);
    iop_fd_close(loop, cfd);
    iop_fd_close(loop, lfd);
    iop_loop_destroy(loop);
}

void test_proactor(void **state)
{
    (void)state;
    sweep("proactor", proactor_scenario);
}

/* ---- many connections: multishot accept, per-fd growth, deadlines, cancel ------------- */

#define NCONN 70          /* past the 64 first slots of the fd, poll and timer arrays */

typedef struct crowd {
    int sfd[NCONN];
    int naccepted;
    int accept_over;
} crowd_t;

static void accepted(iop_op_t *op, int res)
{
    crowd_t *c = op->data;
    if (res >= 0 && c->naccepted < NCONN)
        c->sfd[c->naccepted++] = res;
    else if (res >= 0)
        close(res);
    else if (res != -ECANCELED)
        note(res, "multishot accept");
    if (!iop_op_more(op))
        c->accept_over = 1;
}

static int recs_done(rec_t *r, int n)
{
    for (int i = 0; i < n; i++)
        if (!r[i].calls)
            return 0;
    return 1;
}

static int cons_done(void *arg) { return recs_done(arg, NCONN); }

static int nrecv;         /* recvs submitted */

static int recvs_done(void *arg) { return recs_done(arg, nrecv); }

static int accept_over(void *arg) { return ((crowd_t *)arg)->accept_over; }

static int all_accepted(void *arg)
{
    crowd_t *c = arg;
    return c->naccepted == NCONN || c->accept_over;
}

static void many_scenario(void)
{
    iop_loop_t *loop = loop_new_flags(8, IOP_LOOP_REGISTER_BUSY_FDS);
    if (!loop)
        return;
    struct sockaddr_in addr;
    static crowd_t c;
    static rec_t con[NCONN], rcv[NCONN];
    static char bytes[NCONN];
    static int cfd[NCONN];
    memset(&c, 0, sizeof c);
    int lfd = tu_tcp_listener(&addr, NCONN), nclients = 0;
    iop_op_t acc;
    rec_t cancel;
    iop_prep_accept(&acc, lfd, NULL, NULL, accepted, &c);
    iop_op_set_multishot(&acc);
    iop_op_set_deadline(&acc, iop_now(loop) + 20 * SEC);
    if (note(iop_submit(loop, &acc), "submit multishot accept") < 0) {
        c.accept_over = 1;
        goto out;
    }
    for (; nclients < NCONN; nclients++) {
        cfd[nclients] = tu_tcp_socket();
        iop_prep_connect(&con[nclients].op, cfd[nclients], (struct sockaddr *)&addr, sizeof addr, rec_cb,
                         &con[nclients]);
        if (submit(loop, &con[nclients], "submit connect") < 0) {
            close(cfd[nclients]);
            goto out;
        }
    }
    if (!run_until(loop, cons_done, con, "connects"))
        goto out;
    for (int i = 0; i < NCONN; i++)
        if (note(con[i].res, "connect") < 0)
            goto out;
    if (!run_until(loop, all_accepted, &c, "accepts") || c.naccepted < NCONN) {
        assert_true(oc.err);       /* the series ended early: with an error */
        goto out;
    }
    /* One recv with a deadline on each server side, one byte from each client. */
    for (nrecv = 0; nrecv < NCONN; nrecv++) {
        iop_prep_recv(&rcv[nrecv].op, c.sfd[nrecv], &bytes[nrecv], 1, 0, rec_cb, &rcv[nrecv]);
        iop_op_set_deadline(&rcv[nrecv].op, iop_now(loop) + 20 * SEC);
        if (submit(loop, &rcv[nrecv], "submit recv") < 0)
            break;
    }
    for (int i = 0; i < NCONN; i++)
        assert_int_equal(send(cfd[i], "x", 1, 0), 1);
    if (!run_until(loop, recvs_done, rcv, "recvs"))
        goto out;
    for (int i = 0; i < nrecv; i++)
        if (note(rcv[i].res, "recv") < 0)
            goto out;
out:
    if (!c.accept_over) {
        iop_prep_cancel(&cancel.op, &acc, rec_cb, &cancel);
        if (submit(loop, &cancel, "submit cancel") == 0)
            await(loop, &cancel, "cancel");
        if (!oc.err)
            run_until(loop, accept_over, &c, "the multishot accept's end");
    }
    if (oc.err)
        still_works(loop);
    for (int i = 0; i < c.naccepted; i++)
        iop_fd_close(loop, c.sfd[i]);
    for (int i = 0; i < nclients; i++)
        iop_fd_close(loop, cfd[i]);
    iop_fd_close(loop, lfd);
    iop_loop_destroy(loop);
}

void test_many(void **state)
{
    (void)state;
    sweep("many connections", many_scenario);
}
