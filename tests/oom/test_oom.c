/* Out-of-memory sweep: `test_oom BACKEND` runs the loop scenarios on one backend,
 * `test_oom ipc` the multi-process primitives, `test_oom shard` a supervisor with
 * one worker (the failure injected from the supervisor's start, which its worker
 * inherits at the fork).
 *
 * Each scenario runs again and again with the allocator seam failing allocation n
 * (iop__alloc_fail_after), n = 0, 1, 2 ..., until one run completes without
 * meeting an injected failure: once with every allocation from the n-th on
 * failing (the run gives up at the first error), once with only the n-th failing
 * (the run goes on after it, and what the failure left behind gets used). Every run must end cleanly:
 * each call succeeds or returns -ENOMEM (with iop_last_error() filled where the
 * API promises it), nothing crashes or waits forever, and what failed leaves the
 * loop usable: once allocations work again the same loop still runs ops, timers
 * and watches, and destroys without a leak (LeakSanitizer checks at exit in the
 * sanitizer build). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
#include "test_util.h"

#define MAX_N 4000        /* more allocations than any scenario makes */
#define RUN_MS 3000       /* a wait longer than this is a hang */
#define SEC 1000000000ull

/* ---- the sweep ---------------------------------------------------------------------- */

static long injected;    /* failures injected during this run */
static int once;         /* the sweep's mode: only allocation n fails */

static void inject(long n) { injected += iop__alloc_fail_after(n, once); }

/* The first error a run met, and where: later ones often follow from it (a peer's
 * EOF, a cancel) and need not be -ENOMEM. */
typedef struct outcome {
    int err;
    const char *what;
    char msg[256];
} outcome_t;

static outcome_t oc;

/* r < 0: notes it if it is the run's first error. Returns r. */
static int note(int r, const char *what)
{
    if (r < 0 && !oc.err) {
        oc.err = r;
        oc.what = what;
        snprintf(oc.msg, sizeof oc.msg, "%s", iop_last_error());
    }
    return r;
}

typedef void (*scenario_fn)(void);

/* $OOM_N=n runs the one step n (to debug it); $OOM_VERBOSE=1 tells every step. */
static void sweep_mode(const char *name, scenario_fn run)
{
    const char *only = getenv("OOM_N");
    const char *mode = once ? "only" : "from";
    for (long n = only ? atol(only) : 0; n < MAX_N; n++) {
        memset(&oc, 0, sizeof oc);
        injected = 0;
        inject(n);
        run();
        inject(-1);
        if (getenv("OOM_VERBOSE"))
            print_message("%s: failing %s allocation %ld: %s\n", name, mode, n, oc.err ? oc.what : "absorbed");
        if (oc.err && oc.err != -ENOMEM)
            fail_msg("%s, failing %s allocation %ld: %s gave %s (%s)", name, mode, n, oc.what,
                     iop_strerror(oc.err), oc.msg);
        if (!injected) {
            if (oc.err)
                fail_msg("%s: %s failed without an injected failure: %s", name, oc.what, iop_strerror(oc.err));
            print_message("%s: %ld allocations, each failure handled (%s n on)\n", name, n,
                          once ? "only" : "every one from");
            return;
        }
        if (only)
            return;
    }
    fail_msg("%s: still failing after %d allocations", name, MAX_N);
}

/* Both modes; $OOM_ONCE=0 or 1 picks one. */
static void sweep(const char *name, scenario_fn run)
{
    const char *m = getenv("OOM_ONCE");
    for (once = 0; once < 2; once++)
        if (!m || atoi(m) == once)
            sweep_mode(name, run);
}

/* Loop creation under the sweep: NULL (the error noted) when it failed. */
static iop_loop_t *loop_new_flags(uint32_t buf_count, uint32_t flags)
{
    iop_loop_opts_t o = { .size = sizeof o, .backend = tu_backend, .flags = flags, .buf_count = buf_count,
                          .buf_size = 2048 };
    iop_loop_t *loop = NULL;
    int r = iop_loop_create(&loop, &o);
    if (r < 0) {
        note(r, "iop_loop_create");
        assert_null(loop);
        assert_true(iop_last_error()[0] != '\0');
        return NULL;
    }
    return loop;
}

static iop_loop_t *loop_new(uint32_t buf_count) { return loop_new_flags(buf_count, 0); }

/* ---- after a failure: the same loop still works --------------------------------------- */

static void count_cb(iop_op_t *op, int res)
{
    int *n = op->data;
    assert_true(res >= 0);
    (*n)++;
}

static void count_timer(iop_timer_t *t) { (*(int *)t->data)++; }

static void stop_post(iop_post_t *p) { iop_loop_stop(p->data); }

/* Level-triggered: fires each iteration while its fd stays writable; stops at 3. */
static void watch_thrice(iop_watch_t *w, unsigned revents)
{
    (void)revents;
    if (++*(int *)w->data == 3)
        iop_watch_stop(w);
}

static void count_watch(iop_watch_t *w, unsigned revents)
{
    (void)revents;
    (*(int *)w->data)++;
    iop_watch_stop(w);
}

static void *post_later(void *arg)
{
    static iop_post_t p;
    tu_sleep_ms(20);
    p.data = arg;
    assert_int_equal(iop_loop_post(arg, &p, stop_post), 0);
    return NULL;
}

/* With allocation back, a nop, a timeout op, a timer, a watch and a pipe's
 * write and read, all through loop; each must complete. Then a post from another
 * thread must wake the loop blocked in its backend. */
static void still_works(iop_loop_t *loop)
{
    inject(-1);
    pthread_t th;
    int unused = 0;
    iop_timer_t far = { .data = &unused };
    assert_int_equal(iop_timer_start(loop, &far, 10 * SEC, 0, count_timer), 0);
    assert_int_equal(pthread_create(&th, NULL, post_later, loop), 0);
    uint64_t t0 = tu_clock_ms();
    assert_true(iop_loop_run(loop, IOP_RUN_DEFAULT) >= 0);
    if (tu_clock_ms() - t0 > 2000)
        fail_msg("a post from another thread no longer wakes the loop");
    pthread_join(th, NULL);
    iop_timer_stop(&far);
    int done = 0, p[2];
    char wbuf[16] = "still works", rbuf[16];
    tu_pipe(p);
    iop_op_t nop, tmo, wr, rd;
    iop_timer_t t = { .data = &done };
    iop_watch_t w = { .data = &done };
    iop_prep_nop(&nop, count_cb, &done);
    iop_prep_timeout(&tmo, 1000000, count_cb, &done);
    iop_prep_write(&wr, p[1], wbuf, sizeof wbuf, -1, count_cb, &done);
    iop_prep_read(&rd, p[0], rbuf, sizeof rbuf, -1, count_cb, &done);
    assert_int_equal(iop_submit(loop, &nop), 0);
    assert_int_equal(iop_submit(loop, &tmo), 0);
    assert_int_equal(iop_submit(loop, &rd), 0);
    assert_int_equal(iop_submit(loop, &wr), 0);
    assert_int_equal(iop_timer_start(loop, &t, 1000000, 0, count_timer), 0);
    assert_int_equal(iop_watch_start(loop, &w, p[1], IOP_WRITE, count_watch), 0);
    if (!tu_run_until_count(loop, &done, 6, RUN_MS))
        fail_msg("the loop no longer works after a failure (%d of 6 done)", done);
    assert_memory_equal(rbuf, wbuf, sizeof wbuf);
    assert_int_equal(iop_fd_close(loop, p[0]), 0);
    assert_int_equal(iop_fd_close(loop, p[1]), 0);
}

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

static void test_proactor(void **state)
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

static void test_many(void **state)
{
    (void)state;
    sweep("many connections", many_scenario);
}

/* ---- coroutines: spawn, I/O, channels, sleep, join, cancel, greenlets ------------------ */

typedef struct echo {
    int lfd;
    struct sockaddr_in addr;
    iop_chan_t *ch;       /* the server tells the counter each chunk's size */
    long counted;
} echo_t;

static uint64_t soon(void) { return iop_now(iop_coro_loop(iop_self())) + 10 * SEC; }

static void *as_ptr(intptr_t v) { return (void *)v; }

/* Receives through a receive stream (into the loop's pool of two buffers). */
static void *server(void *arg)
{
    echo_t *e = arg;
    char buf[1024];
    iop_recv_stream_t rs;
    int fd = note(iop_accept(e->lfd, NULL, NULL, soon()), "iop_accept"), r = fd;
    int streaming = fd >= 0 && (r = note(iop_recv_stream_open(&rs, fd, 0), "iop_recv_stream_open")) == 0;
    while (streaming) {
        const char *data;
        ssize_t n = iop_recv_stream_next(&rs, buf, sizeof buf, &data, soon());
        if (n <= 0) {
            r = note((int)n, "iop_recv (server)");
            break;
        }
        int len = (int)n;
        if ((r = note(iop_chan_send(e->ch, &len, soon()), "iop_chan_send")) < 0)
            break;
        for (ssize_t off = 0; off < n;) {
            ssize_t m = iop_send(fd, data + off, (size_t)(n - off), 0, soon());
            if (m < 0) {
                r = note((int)m, "iop_send (server)");
                break;
            }
            off += m;
        }
        if (r < 0)
            break;
    }
    if (streaming)
        iop_recv_stream_close(&rs);
    if (fd >= 0)
        iop_close(fd);
    iop_chan_close(e->ch);
    return as_ptr(r < 0 ? r : 0);
}

static void *client(void *arg)
{
    echo_t *e = arg;
    int fd = tu_tcp_socket(), r;
    char out[2000], in[2000];
    tu_fill_pattern(out, sizeof out, 3);
    if ((r = note(iop_connect(fd, (struct sockaddr *)&e->addr, sizeof e->addr, soon()), "iop_connect")) < 0)
        goto out;
    for (int round = 0; round < 3 && r >= 0; round++) {
        ssize_t m = iop_send(fd, out, sizeof out, 0, soon());
        if (m < 0) {
            r = note((int)m, "iop_send (client)");
            break;
        }
        for (ssize_t got = 0; got < m;) {
            ssize_t n = iop_recv(fd, in + got, (size_t)(m - got), 0, soon());
            if (n <= 0) {
                r = note(n ? (int)n : -EPIPE, "iop_recv (client)");
                break;
            }
            got += n;
        }
        if (r >= 0)
            assert_memory_equal(in, out, (size_t)m);
        if ((r = note(iop_sleep(100000), "iop_sleep")) < 0)
            break;
    }
out:
    iop_close(fd);
    return as_ptr(r);
}

static void *counter(void *arg)
{
    echo_t *e = arg;
    int len, r;
    while ((r = iop_chan_recv(e->ch, &len, soon())) == 0)
        e->counted += len;
    return as_ptr(r == -EPIPE ? 0 : note(r, "iop_chan_recv"));
}

/* A greenlet: doubles what it is switched to, until given 0. */
static void *doubler(void *arg)
{
    intptr_t v = (intptr_t)arg;
    while (v)
        v = (intptr_t)iop_switch(iop_main(), as_ptr(v * 2));
    return NULL;
}

static void *sleeper(void *arg)
{
    (void)arg;
    int r = iop_sleep(SEC);        /* cancelled long before */
    assert_true(r == -ECANCELED || r == -ENOMEM);
    return NULL;
}

/* Joins c from main; a join that times out is a hang. Its result, noted. */
static int join(iop_coro_t *c, const char *what)
{
    void *res = NULL;
    int r = iop_join(c, &res, tu_clock_ns() + 5 * SEC);
    if (r == -ETIMEDOUT || r == -EDEADLK)
        fail_msg("joining %s: %s (%s)", what, iop_strerror(r), iop_last_error());
    if (r < 0)
        return note(r, "iop_join");
    return note((int)(intptr_t)res, what);
}

static void coro_scenario(void)
{
    iop_loop_t *loop = loop_new(2);
    if (!loop)
        return;
    echo_t e = { .lfd = tu_tcp_listener(&e.addr, 8) };
    iop_coro_t *srv = NULL, *cli = NULL, *cnt = NULL, *slp = NULL, *g = NULL;
    iop_coro_opts_t named = { .size = sizeof named, .name = "server" };
    if (note(iop_chan_new(&e.ch, sizeof(int), 2), "iop_chan_new") < 0 ||
        note(iop_go(loop, sleeper, NULL, NULL, &slp), "iop_go sleeper") < 0)
        goto out;
    if (note(iop_go(loop, server, &e, &named, &srv), "iop_go server") == 0 &&
        (note(iop_go(loop, counter, &e, NULL, &cnt), "iop_go counter") < 0 ||
         note(iop_go(loop, client, &e, NULL, &cli), "iop_go client") < 0)) {
        /* Nothing will connect: the ones started are cancelled, then joined. */
        iop_cancel(srv);
        if (cnt)
            iop_cancel(cnt);
    }
    if (cli && join(cli, "client") < 0) {
        iop_cancel(srv);           /* no client: its accept would wait for good */
        iop_cancel(cnt);
    }
    tu_run_nowait(loop, 2);        /* let the sleeper park */
    int r = iop_cancel(slp);
    assert_true(r == 0 || r == -ESRCH);   /* -ESRCH: it ended with -ENOMEM already */
    join(slp, "sleeper");
    if (srv)
        join(srv, "server");
    if (cnt && join(cnt, "counter") == 0 && !oc.err)
        assert_int_equal(e.counted, 3 * 2000);
    if (!oc.err && note(iop_coro_create(loop, doubler, NULL, NULL, &g), "iop_coro_create") == 0) {
        assert_int_equal((intptr_t)iop_switch(g, as_ptr(21)), 42);
        assert_null(iop_switch(g, NULL));
        assert_true(iop_coro_done(g));
        iop_coro_free(g);
    }
out:
    if (oc.err)
        still_works(loop);
    iop_fd_close(loop, e.lfd);
    iop_loop_destroy(loop);
    iop_chan_free(e.ch);
}

static void test_coro(void **state)
{
    (void)state;
    sweep("coroutines", coro_scenario);
}

/* ---- a crowd of coroutines: records past the first chunk, a nursery, a mutex ---------- */

#define NCORO 70          /* past the scheduler's first 64 coroutine records */

typedef struct crowd_ctx {
    iop_mutex_t m;
    int ran;
    int p[2];             /* a pipe for iop_wait_fd */
    iop_chan_t *a, *b;
} crowd_ctx_t;

static void *crowd_child(void *arg)
{
    crowd_ctx_t *cx = arg;
    int r = note(iop_mutex_lock(&cx->m, 0), "iop_mutex_lock");
    if (r == 0) {
        r = note(iop_sleep(10000), "iop_sleep");
        iop_mutex_unlock(&cx->m);
    }
    if (r == 0)
        cx->ran++;
    return NULL;
}

/* Waits for the pipe, then takes one value from either channel. */
static void *selector(void *arg)
{
    crowd_ctx_t *cx = arg;
    int v = 0, w = 0;
    if (note(iop_wait_fd(cx->p[1], IOP_WRITE, soon()), "iop_wait_fd") < 0)
        return NULL;
    iop_select_case_t cases[2] = { { .ch = cx->a, .elem = &v }, { .ch = cx->b, .elem = &w } };
    int i = note(iop_select(cases, 2, soon()), "iop_select");
    if (i >= 0)
        assert_int_equal(i ? w : v, 5);
    return NULL;
}

static void *feeder(void *arg)
{
    crowd_ctx_t *cx = arg;
    int five = 5;
    note(iop_chan_send(cx->b, &five, soon()), "iop_chan_send");
    return NULL;
}

static void crowd_scenario(void)
{
    iop_loop_t *loop = loop_new(0);
    if (!loop)
        return;
    crowd_ctx_t cx = { .ran = 0 };
    iop_mutex_init(&cx.m);
    tu_pipe(cx.p);
    iop_nursery_t n;
    iop_nursery_init(&n, loop);
    int spawned = 0;
    if (note(iop_chan_new(&cx.a, sizeof(int), 0), "iop_chan_new") < 0 ||
        note(iop_chan_new(&cx.b, sizeof(int), 0), "iop_chan_new") < 0)
        goto out;
    if (note(iop_nursery_go(&n, selector, &cx, NULL), "iop_nursery_go") == 0 &&
        note(iop_nursery_go(&n, feeder, &cx, NULL), "iop_nursery_go") < 0) {
        /* nothing will feed the selector: close its channels */
        iop_chan_close(cx.a);
        iop_chan_close(cx.b);
    }
    for (; spawned < NCORO; spawned++)
        if (note(iop_nursery_go(&n, crowd_child, &cx, NULL), "iop_nursery_go") < 0)
            break;
    int r = iop_nursery_close(&n, tu_clock_ns() + 5 * SEC);
    if (r == -ETIMEDOUT || r == -EDEADLK)
        fail_msg("crowd: %s (%s)", iop_strerror(r), iop_last_error());
    note(r, "iop_nursery_close");
    if (!oc.err)
        assert_int_equal(cx.ran, NCORO);
out:
    if (oc.err)
        still_works(loop);
    iop_fd_close(loop, cx.p[0]);
    iop_fd_close(loop, cx.p[1]);
    iop_loop_destroy(loop);
    iop_chan_free(cx.a);
    iop_chan_free(cx.b);
}

static void test_crowd(void **state)
{
    (void)state;
    sweep("coroutine crowd", crowd_scenario);
}

/* ---- coroutines: scheduler options, sync primitives with deadlines, a send behind ------ */

#define BEHIND (256 * 1024) /* more than the socket buffers hold: the send goes on in pieces */

typedef struct sync_ctx {
    iop_mutex_t m;
    iop_cond_t cv;
    iop_sem_t sem;
    iop_wg_t wg;
    int ready, woke;
    int fds[2];           /* a TCP pair: [0] sends behind, [1] receives as a stream */
    char *big;
    size_t got;
} sync_ctx_t;

typedef struct copied {
    sync_ctx_t *x;
    int tag;
} copied_t;

/* Spawned with its argument copied onto its stack (arg_size). */
static void *cv_waiter(void *arg)
{
    const copied_t *a = arg;
    sync_ctx_t *x = a->x;
    assert_int_equal(a->tag, 42);
    int r = note(iop_mutex_lock(&x->m, soon()), "iop_mutex_lock");
    if (r < 0)
        goto out;
    while (!x->ready && (r = note(iop_cond_wait(&x->cv, &x->m, soon()), "iop_cond_wait")) == 0)
        ;
    if (r == 0)
        x->woke++;
    iop_mutex_unlock(&x->m);   /* held after any return of cond_wait */
out:
    iop_sem_release(&x->sem);
    iop_wg_done(&x->wg);
    return NULL;
}

/* Takes what the peer sends behind through a receive stream, giving some back. */
static void *stream_reader(void *arg)
{
    sync_ctx_t *x = arg;
    iop_recv_stream_t rs;
    char buf[512];
    int r = note(iop_recv_stream_open(&rs, x->fds[1], 0), "iop_recv_stream_open");
    int opened = r == 0, gave_back = 0;
    while (r == 0 && x->got < BEHIND) {
        const char *data;
        ssize_t n = iop_recv_stream_next(&rs, buf, sizeof buf, &data, soon());
        if (n <= 0) {
            r = note(n ? (int)n : -EPIPE, "iop_recv_stream_next");
            break;
        }
        if (!gave_back && n > 1 && data != buf) {   /* a pool buffer: its last byte back */
            assert_int_equal(iop_recv_stream_unread(&rs, 1), 0);
            n--;
            gave_back = 1;
        }
        assert_memory_equal(data, x->big + x->got, (size_t)n);
        x->got += (size_t)n;
    }
    if (x->got < BEHIND)
        shutdown(x->fds[0], SHUT_RDWR);   /* the sender must not wait for this reader */
    if (opened)
        iop_recv_stream_close(&rs);
    return NULL;
}

static void *sender_behind(void *arg)
{
    sync_ctx_t *x = arg;
    iop_send_behind_t sb;
    memset(&sb, 0, sizeof sb);
    if (note(iop_send_behind(&sb, x->fds[0], x->big, BEHIND, 0), "iop_send_behind") < 0) {
        shutdown(x->fds[0], SHUT_RDWR);   /* the reader sees the end */
        return NULL;
    }
    /* A scope deadline: a sleep past it ends at it. */
    iop_deadline_push(iop_now(iop_coro_loop(iop_self())) + 2000000);
    int r = iop_sleep(SEC);
    iop_deadline_pop();
    if (r != -ETIMEDOUT)
        note(r, "iop_sleep in a scope");
    ssize_t n = iop_send_behind_wait(&sb, soon());
    if (note((int)(n < 0 ? n : 0), "iop_send_behind_wait") == 0)
        assert_int_equal(n, BEHIND);
    else
        shutdown(x->fds[0], SHUT_RDWR);
    return NULL;
}

static void sync_scenario(void)
{
    iop_loop_t *loop = loop_new(16);
    if (!loop)
        return;
    static char big[BEHIND];
    sync_ctx_t x = { .big = big };
    tu_fill_pattern(big, sizeof big, 5);
    iop_mutex_init(&x.m);
    iop_cond_init(&x.cv);
    iop_sem_init(&x.sem, 0);
    iop_wg_init(&x.wg);
    tu_tcp_pair(x.fds);
    iop_coro_t *rd = NULL, *sd = NULL;
    int waiters = 0;
    const iop_sched_opts_t so = { .size = sizeof so, .flags = IOP_CORO_CANARY, .stack_size = 48 * 1024,
                                  .pool_max = 2 };
    if (note(iop_sched_configure(loop, &so), "iop_sched_configure") < 0)
        goto out;
    const copied_t a = { .x = &x, .tag = 42 };
    const iop_coro_opts_t co = { .size = sizeof co, .flags = IOP_CORO_GUARD, .name = "cv-waiter",
                                 .arg_size = sizeof a };
    for (; waiters < 3; waiters++) {
        iop_wg_add(&x.wg, 1);
        if (note(iop_go(loop, cv_waiter, (void *)&a, &co, NULL), "iop_go waiter") < 0) {
            iop_wg_done(&x.wg);
            break;
        }
    }
    if (note(iop_go(loop, stream_reader, &x, NULL, &rd), "iop_go reader") == 0 &&
        note(iop_go(loop, sender_behind, &x, NULL, &sd), "iop_go sender") < 0)
        shutdown(x.fds[0], SHUT_RDWR);
    tu_run_nowait(loop, 3);    /* the waiters park */
    x.ready = 1;
    iop_cond_broadcast(&x.cv);
    for (int i = 0; i < waiters; i++) {
        int r = iop_sem_acquire(&x.sem, tu_clock_ns() + 5 * SEC);
        if (r == -ETIMEDOUT)
            fail_msg("a waiter never released the semaphore");
        note(r, "iop_sem_acquire");
    }
    int r = iop_wg_wait(&x.wg, tu_clock_ns() + 5 * SEC);
    if (r == -ETIMEDOUT)
        fail_msg("the wait group never came to 0");
    note(r, "iop_wg_wait");
    if (sd)
        join(sd, "sender behind");
    if (rd)
        join(rd, "stream reader");
    if (!oc.err) {
        assert_int_equal(x.woke, 3);
        assert_int_equal(x.got, BEHIND);
    }
out:
    if (oc.err)
        still_works(loop);
    iop_fd_close(loop, x.fds[0]);
    iop_fd_close(loop, x.fds[1]);
    iop_loop_destroy(loop);
}

static void test_sync(void **state)
{
    (void)state;
    sweep("coroutine sync and streams", sync_scenario);
}

/* ---- the service host: each service plugin, an accept loop, a client, a drain ---------- */

typedef struct svc_run {
    iop_service_host_t *h;
    struct sockaddr_in addr;
} svc_run_t;

/* One service to sweep: its options and a client coroutine (given the svc_run_t)
 * that exercises it and returns 0 or its first error, noted. */
typedef struct svc_case {
    const char *name;
    const iop_service_opt_t *opts;
    size_t nopts;
    void *(*client)(void *arg);
} svc_case_t;

static const svc_case_t *svc_now;
static const iop_service_desc_t *svc_real;

/* The service's own serve, its failure noted: a connection that fails for want of
 * memory ends with the service's -ENOMEM before the client sees the socket close. */
static int noted_serve(void *state, iop_service_conn_t *conn)
{
    int r = svc_real->serve(state, conn);
    if (r != -ECANCELED)
        note(r, "serve");
    return r;
}

static void *svc_echo_client(void *arg)
{
    svc_run_t *sr = arg;
    echo_t e = { .addr = sr->addr };
    return client(&e);
}

/* Sends text, then receives until want has come (or the peer's end, noted). The
 * service's answer for "no memory for that now", when it has one, is -ENOMEM. */
static int say_expect(int fd, const char *text, const char *want, const char *oom_answer, const char *what)
{
    size_t len = strlen(text);
    for (size_t off = 0; off < len;) {
        ssize_t m = iop_send(fd, text + off, len - off, 0, soon());
        if (m < 0)
            return note((int)m, what);
        off += (size_t)m;
    }
    char in[4096];
    size_t got = 0;
    in[0] = '\0';
    while (!strstr(in, want)) {
        if (oom_answer && strstr(in, oom_answer))
            return note(-ENOMEM, what);
        if (got == sizeof in - 1)
            fail_msg("%s: no \"%s\" in %s", what, want, in);
        ssize_t n = iop_recv(fd, in + got, sizeof in - 1 - got, 0, soon());
        if (n <= 0)
            return note(n ? (int)n : -EPIPE, what);
        got += (size_t)n;
        in[got] = '\0';
    }
    return 0;
}

static void *svc_http_client(void *arg)
{
    svc_run_t *sr = arg;
    int fd = tu_tcp_socket(), r;
    if ((r = note(iop_connect(fd, (struct sockaddr *)&sr->addr, sizeof sr->addr, soon()), "iop_connect")) == 0 &&
        (r = say_expect(fd, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\n\r\n",
                        "World!HTTP/1.1 200", NULL, "http /hello twice")) == 0)
        r = say_expect(fd, "GET / HTTP/1.1\r\nHost: t\r\n\r\n", "</html>", NULL, "http index.html");
    iop_close(fd);
    return as_ptr(r);
}

static void *svc_chat_client(void *arg)
{
    svc_run_t *sr = arg;
    int fd = tu_tcp_socket(), r;
    if ((r = note(iop_connect(fd, (struct sockaddr *)&sr->addr, sizeof sr->addr, soon()), "iop_connect")) == 0 &&
        (r = say_expect(fd, "/nick ann\n", "* ann joined\n", NULL, "chat /nick")) == 0 &&
        (r = say_expect(fd, "hello\n", "<ann> hello\n", NULL, "chat message")) == 0)
        r = say_expect(fd, "/who\n", "(1): ann\n", "* cannot list the room now\n", "chat /who");
    iop_close(fd);
    return as_ptr(r);
}

static void *svc_drain(void *arg)
{
    return as_ptr(iop_service_host_drain(arg, iop_now(iop_coro_loop(iop_self())) + SEC));
}

static void service_scenario(void)
{
    const svc_case_t *sc = svc_now;
    iop_loop_t *loop = loop_new(0);
    if (!loop)
        return;
    iop_service_t *svc = NULL;
    iop_service_stats_t stats = { 0 };
    iop_service_desc_t desc;
    iop_service_host_t h = { .loop = loop, .stats = &stats };
    svc_run_t sr = { .h = &h };
    h.listen_fd = tu_tcp_listener(&sr.addr, 8);
    int started = 0, hooked = 0;
    char err[256] = "";
    if (note(iop_service_open(&svc, sc->name, NULL), "iop_service_open") < 0)
        goto out;
    svc_real = iop_service_desc(svc);
    desc = *svc_real;
    desc.serve = noted_serve;
    h.desc = &desc;
    const iop_service_cfg_t cfg = { .size = sizeof cfg, .name = sc->name, .listen = "test",
                                    .opts = sc->opts, .nopts = sc->nopts, .nworkers = 1 };
    if (desc.create && note(desc.create(&h.state, &cfg, err, sizeof err), "create") < 0)
        goto out;
    if (desc.worker_start && note(desc.worker_start(h.state, loop, 0, err, sizeof err), "worker_start") < 0)
        goto out;
    hooked = 1;
    if (note(iop_service_host_start(&h), "iop_service_host_start") < 0)
        goto out;
    started = 1;
    iop_coro_t *cli = NULL, *dr = NULL;
    if (note(iop_go(loop, sc->client, &sr, NULL, &cli), "iop_go client") == 0)
        join(cli, "client");
    if (note(iop_go(loop, svc_drain, &h, NULL, &dr), "iop_go drain") == 0) {
        join(dr, "iop_service_host_drain");
        started = 0;
    }
out:
    if (oc.err && (!strcmp(oc.what, "create") || !strcmp(oc.what, "worker_start")) && !err[0])
        fail_msg("%s: %s failed without a reason", sc->name, oc.what);
    if (oc.err)
        still_works(loop);
    if (started) {             /* the drain could not start: again, with memory */
        iop_coro_t *d = NULL;
        assert_int_equal(iop_go(loop, svc_drain, &h, NULL, &d), 0);
        assert_int_equal(iop_join(d, NULL, tu_clock_ns() + 5 * SEC), 0);
    }
    if (hooked && desc.worker_stop)
        desc.worker_stop(h.state);
    if (h.state)
        desc.destroy(h.state);
    iop_service_close(svc);
    iop_fd_close(loop, h.listen_fd);
    iop_loop_destroy(loop);
}

static void sweep_service(const svc_case_t *sc)
{
    char name[64];
    snprintf(name, sizeof name, "service %s", sc->name);
    svc_now = sc;
    sweep(name, service_scenario);
}

static void test_service(void **state)
{
    (void)state;
    static const svc_case_t echo = { .name = "echo", .client = svc_echo_client };
    sweep_service(&echo);
}

static void test_service_http(void **state)
{
    (void)state;
    static const iop_service_opt_t opts[] = { { "root", IOPLEX_SOURCE_DIR "/plugins/http/www" } };
    static const svc_case_t http = { .name = "http", .opts = opts, .nopts = 1, .client = svc_http_client };
    sweep_service(&http);
}

static void test_service_chat(void **state)
{
    (void)state;
    static const svc_case_t chat = { .name = "chat", .client = svc_chat_client };
    sweep_service(&chat);
}

/* Arms timers until the loop's timer heap is full (the next one would need memory
 * to grow it): how many it armed, or -1 if max did not fill it. */
static int fill_timer_heap(iop_loop_t *loop, iop_timer_t *t, int max, int *data)
{
    for (int i = 0; i < max; i++) {
        memset(&t[i], 0, sizeof t[i]);
        t[i].data = data;
        iop__alloc_fail_after(0, 1);
        int r = iop_timer_start(loop, &t[i], 100 * SEC, 0, count_timer);
        iop__alloc_fail_after(-1, 0);
        if (r == -ENOMEM)
            return i;
        if (r < 0)
            return -1;
    }
    return -1;
}

/* ---- the service host's acceptor out of memory: it waits, it does not give up ---------- */

#define MAX_TIMERS 512    /* more than the timer heap holds before it grows */

/* An accept that fails for want of memory sends the acceptor to a back-off sleep;
 * with the memory for that sleep's timer short too, it must still accept once
 * memory is back. The listener's fd number is new to the loop (its fd table must
 * grow for it) and the timer heap is full (the sleep's timer must grow it). */
static void test_service_accept_oom(void **state)
{
    (void)state;
    iop_loop_t *loop = loop_new(0);
    assert_non_null(loop);
    iop_service_t *svc = NULL;
    iop_service_stats_t stats = { 0 };
    iop_service_host_t h = { .loop = loop, .stats = &stats };
    svc_run_t sr = { .h = &h };
    int l0 = tu_tcp_listener(&sr.addr, 8);
    h.listen_fd = fcntl(l0, F_DUPFD_CLOEXEC, 900);
    assert_true(h.listen_fd >= 900);
    close(l0);
    assert_int_equal(iop_service_open(&svc, "echo", NULL), 0);
    h.desc = iop_service_desc(svc);
    const iop_service_cfg_t cfg = { .size = sizeof cfg, .name = "echo", .listen = "test", .nworkers = 1 };
    char err[256] = "";
    assert_int_equal(h.desc->create(&h.state, &cfg, err, sizeof err), 0);
    assert_int_equal(iop_service_host_start(&h), 0);
    static iop_timer_t timers[MAX_TIMERS];
    int unused = 0, ntimers = fill_timer_heap(loop, timers, MAX_TIMERS, &unused);
    assert_true(ntimers >= 0);

    once = 0;
    injected = 0;
    inject(0);                 /* the acceptor's first turns, without memory */
    tu_run_nowait(loop, 3);
    inject(-1);
    assert_true(injected > 0);

    memset(&oc, 0, sizeof oc);
    iop_coro_t *cli = NULL, *dr = NULL;
    assert_int_equal(iop_go(loop, svc_echo_client, &sr, NULL, &cli), 0);
    if (join(cli, "client") < 0)
        fail_msg("the service no longer accepts after an accept and its back-off failed for want of memory: "
                 "%s: %s", oc.what, iop_strerror(oc.err));
    assert_int_equal(iop_go(loop, svc_drain, &h, NULL, &dr), 0);
    assert_int_equal(iop_join(dr, NULL, tu_clock_ns() + 5 * SEC), 0);
    for (int i = 0; i < ntimers; i++)
        iop_timer_stop(&timers[i]);
    h.desc->destroy(h.state);
    iop_service_close(svc);
    iop_fd_close(loop, h.listen_fd);
    iop_loop_destroy(loop);
}

/* ---- the chat reader when its wait has no memory: it must let the others run -------- */

static int square(const void *in, size_t len, iop_pool_out_t *out);

static volatile sig_atomic_t window_open;
static long window_ticks;

static void window_close(int sig)
{
    (void)sig;
    iop__alloc_fail_after(-1, 0);  /* thread-locals of this (the only) thread */
    window_open = 0;
}

static int window_closed(void *arg)
{
    (void)arg;
    return !window_open;
}

/* Counts its turns while the window is open. */
static void *ticker(void *arg)
{
    (void)arg;
    while (iop_yield() == 0)
        if (window_open)
            window_ticks++;
    return NULL;
}

/* The chat reader's first wait on its eventfd finds the loop's fd table too small
 * for the fd's number (every low fd taken before the service was created), and no
 * memory to grow it: the reader must not go round without letting the loop's other
 * coroutines run. A timer signal gives the memory back after a while. */
static void test_chat_reader_oom(void **state)
{
    (void)state;
    int fillers[200], nfill = 0;
    while (nfill < 200 && (fillers[nfill] = dup(0)) >= 0 && fillers[nfill] < 190)
        nfill++;
    iop_loop_t *loop = loop_new(0);
    assert_non_null(loop);
    iop_service_t *svc = NULL;
    void *st = NULL;
    char err[256] = "";
    assert_int_equal(iop_service_open(&svc, "chat", NULL), 0);
    const iop_service_desc_t *d = iop_service_desc(svc);
    const iop_service_cfg_t cfg = { .size = sizeof cfg, .name = "chat", .listen = "test", .nworkers = 1 };
    assert_int_equal(d->create(&st, &cfg, err, sizeof err), 0);
    for (int i = 0; i <= nfill && i < 200; i++)
        if (fillers[i] >= 0)
            close(fillers[i]);
    iop_coro_t *tk = NULL;
    assert_int_equal(iop_go(loop, ticker, NULL, NULL, &tk), 0);
    tu_run_nowait(loop, 1);
    assert_int_equal(d->worker_start(st, loop, 0, err, sizeof err), 0);

    struct sigaction sa = { .sa_handler = window_close };
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGALRM, &sa, NULL), 0);
    window_ticks = 0;
    window_open = 1;
    struct itimerval it = { .it_value = { .tv_usec = 300000 } };
    once = 0;
    inject(0);
    assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
    /* Turns without waiting (no memory for a timer to bound a wait); their
     * -ENOMEM results are what this test is about. */
    uint64_t end = tu_clock_ms() + 5000;
    while (!window_closed(NULL) && tu_clock_ms() < end)
        (void)iop_loop_run(loop, IOP_RUN_NOWAIT);
    inject(-1);
    signal(SIGALRM, SIG_DFL);
    if (window_ticks < 10)
        fail_msg("other coroutines ran %ld times in 300 ms while the chat reader had no memory for "
                 "its wait: it spins without yielding", window_ticks);

    d->worker_stop(st);
    iop_cancel(tk);
    iop_join(tk, NULL, tu_clock_ns() + 5 * SEC);
    d->destroy(st);
    iop_service_close(svc);
    iop_loop_destroy(loop);
}

/* Lets loop turn (without waiting: no memory for a timer to bound a wait) with no
 * memory at all for 300 ms, as a timer signal measures them; how many turns ticker
 * had meanwhile. */
static long starve_window(iop_loop_t *loop)
{
    struct sigaction sa = { .sa_handler = window_close };
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGALRM, &sa, NULL), 0);
    window_ticks = 0;
    window_open = 1;
    struct itimerval it = { .it_value = { .tv_usec = 300000 } };
    once = 0;
    inject(0);
    assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
    uint64_t end = tu_clock_ms() + 5000;
    while (!window_closed(NULL) && tu_clock_ms() < end)
        (void)iop_loop_run(loop, IOP_RUN_NOWAIT);
    inject(-1);
    signal(SIGALRM, SIG_DFL);
    return window_ticks;
}

/* The pool's dispatcher, its first wait without memory for its timer: it must not
 * go round without letting the loop's other coroutines run. */
static void test_pool_dispatcher_oom(void **state)
{
    (void)state;
    iop_loop_t *loop = loop_new(0);
    assert_non_null(loop);
    iop_coro_t *tk = NULL;
    assert_int_equal(iop_go(loop, ticker, NULL, NULL, &tk), 0);
    tu_run_nowait(loop, 1);
    iop_pool_t *pool = NULL;
    iop_pool_opts_t o = { .size = sizeof o, .nworkers = 1, .loop = loop };
    assert_int_equal(iop_pool_create(&pool, &o), 0);
    static iop_timer_t timers[MAX_TIMERS];
    int unused = 0, n = fill_timer_heap(loop, timers, MAX_TIMERS, &unused);
    assert_true(n >= 0);
    long ticks = starve_window(loop);
    if (ticks < 10)
        fail_msg("other coroutines ran %ld times in 300 ms while the pool's dispatcher had no memory for "
                 "its wait: it spins without yielding", ticks);
    for (int i = 0; i < n; i++)
        iop_timer_stop(&timers[i]);
    /* The worker starts that failed meanwhile may have broken the pool (see
     * init_attempts): a task then fails with their -ENOMEM, and says so. */
    iop_future_t *f = NULL;
    int v = 3;
    int r = iop_pool_apply_async(pool, square, &v, sizeof v, &f);
    if (r == 0)
        r = iop_future_wait(f, tu_clock_ns() + 10 * SEC);
    if (r < 0 && (r != -ENOMEM || !iop_last_error()[0]))
        fail_msg("the pool after its dispatcher went without memory: %s (%s)", iop_strerror(r), iop_last_error());
    iop_future_free(f);
    iop_pool_free(pool);
    iop_cancel(tk);
    iop_join(tk, NULL, tu_clock_ns() + 5 * SEC);
    iop_loop_destroy(loop);
}

/* ---- the loader: listing modules, opening a service ------------------------------------- */

static void loader_scenario(void)
{
    iop_backend_info_t *bl = NULL;
    iop_service_info_t *sl = NULL;
    iop_service_t *svc = NULL;
    size_t nb = 0, ns = 0;
    if (note(iop_backend_list(NULL, &bl, &nb), "iop_backend_list") == 0) {
        assert_true(nb >= 1);
        iop_backend_list_free(bl);
    } else {
        assert_null(bl);
    }
    if (note(iop_service_list(NULL, &sl, &ns), "iop_service_list") == 0) {
        assert_true(ns >= 3);
        iop_service_list_free(sl);
    } else {
        assert_null(sl);
    }
    if (note(iop_service_open(&svc, "chat", NULL), "iop_service_open") == 0) {
        assert_string_equal(iop_service_desc(svc)->name, "chat");
        iop_service_close(svc);
    }
    /* What failed left nothing behind: the same calls work with memory back. */
    if (oc.err) {
        inject(-1);
        assert_int_equal(iop_backend_list(NULL, &bl, &nb), 0);
        iop_backend_list_free(bl);
        assert_int_equal(iop_service_open(&svc, "chat", NULL), 0);
        iop_service_close(svc);
    }
}

static void test_loader(void **state)
{
    (void)state;
    sweep("loader", loader_scenario);
}

/* ---- the multi-process layer (`test_oom ipc`, default backend) ------------------------- */

typedef struct ipc_ctx {
    iop_ppipe_t *ends[2];
    iop_pqueue_t *q;
    char *big;
} ipc_ctx_t;

#define BIG (300 * 1024)  /* more than a socket buffer: sent in fragments */

static void *pipe_sender(void *arg)
{
    ipc_ctx_t *x = arg;
    int fds[1] = { STDERR_FILENO };
    ssize_t r = iop_ppipe_send(x->ends[0], x->big, BIG, soon());
    if (note((int)(r < 0 ? r : 0), "iop_ppipe_send") == 0) {
        r = iop_ppipe_send_fds(x->ends[0], "fd", 2, fds, 1, soon());
        note((int)(r < 0 ? r : 0), "iop_ppipe_send_fds");
    }
    if (oc.err) {              /* the receiver must not wait for what will not come */
        iop_ppipe_close(x->ends[0]);
        x->ends[0] = NULL;
    }
    return NULL;
}

static void *pipe_receiver(void *arg)
{
    ipc_ctx_t *x = arg;
    char *buf = malloc(BIG);
    assert_non_null(buf);
    ssize_t r = iop_ppipe_recv(x->ends[1], buf, BIG, soon());
    if (r >= 0) {
        assert_int_equal(r, BIG);
        assert_memory_equal(buf, x->big, BIG);
        int fd = -1, nfds = 1;
        r = iop_ppipe_recv_fds(x->ends[1], buf, BIG, &fd, &nfds, soon());
        if (r >= 0) {
            assert_int_equal(nfds, 1);
            assert_true(fd >= 0);
            close(fd);
        }
    }
    if (r < 0 && r != -EPIPE)  /* -EPIPE: the sender gave up (its error is noted) */
        note((int)r, "iop_ppipe_recv");
    free(buf);
    return NULL;
}

static void *queue_user(void *arg)
{
    ipc_ctx_t *x = arg;
    char m[16];
    for (int i = 0; i < 3; i++) {
        if (note(iop_pqueue_put(x->q, "message", 8, soon()), "iop_pqueue_put") < 0)
            return NULL;
        ssize_t n = iop_pqueue_get(x->q, m, sizeof m, soon());
        if (note((int)(n < 0 ? n : 0), "iop_pqueue_get") < 0)
            return NULL;
        assert_int_equal(n, 8);
    }
    return NULL;
}

static int square(const void *in, size_t len, iop_pool_out_t *out)
{
    assert_int_equal(len, sizeof(int));
    int v = *(const int *)in;
    v *= v;
    return iop_pool_out_set(out, &v, sizeof v);
}

static void ipc_scenario(void)
{
    ipc_ctx_t x = { 0 };
    iop_shdict_t *d = NULL;
    iop_plock_t *l = NULL;
    iop_pool_t *pool = NULL;
    iop_future_t *f = NULL;
    iop_loop_t *loop = NULL;
    x.big = malloc(BIG);
    assert_non_null(x.big);
    tu_fill_pattern(x.big, BIG, 11);

    if (note(iop_plock_create(&l), "iop_plock_create") == 0) {
        assert_int_equal(iop_plock_lock(l, 0), 0);
        assert_int_equal(iop_plock_unlock(l), 0);
    }
    if (note(iop_shdict_create(&d, NULL), "iop_shdict_create") == 0) {
        int64_t v = 0;
        if (note(iop_shdict_set(d, "k", "v", 1), "iop_shdict_set") == 0)
            note(iop_shdict_incr(d, "n", 2, &v), "iop_shdict_incr");
    }
    iop_ppipe_opts_t po = { .size = sizeof po, .max_msg = BIG };
    if (note(iop_ppipe_create(x.ends, &po), "iop_ppipe_create") < 0 ||
        note(iop_pqueue_create(&x.q, 4, 64), "iop_pqueue_create") < 0 || !(loop = loop_new(0)))
        goto out;
    iop_coro_t *snd = NULL, *rcv = NULL, *qu = NULL;
    if (note(iop_go(loop, pipe_receiver, &x, NULL, &rcv), "iop_go") < 0)
        goto out;
    if (note(iop_go(loop, pipe_sender, &x, NULL, &snd), "iop_go") < 0) {
        iop_ppipe_close(x.ends[0]);   /* the receiver sees -EPIPE */
        x.ends[0] = NULL;
    }
    if (note(iop_go(loop, queue_user, &x, NULL, &qu), "iop_go") == 0)
        join(qu, "queue user");
    if (snd)
        join(snd, "pipe sender");
    join(rcv, "pipe receiver");

    /* A pool of one worker, driven from plain code. */
    iop_pool_opts_t o = { .size = sizeof o, .nworkers = 1 };
    int v = 7;
    if (note(iop_pool_create(&pool, &o), "iop_pool_create") < 0 ||
        note(iop_pool_apply_async(pool, square, &v, sizeof v, &f), "iop_pool_apply_async") < 0)
        goto out;
    int r = iop_future_wait(f, tu_clock_ns() + 5 * SEC);
    if (r == -ETIMEDOUT)
        fail_msg("the pool's future never came");
    if (note(r, "iop_future_wait") == 0) {
        size_t len;
        const int *res = iop_future_result(f, &len);
        assert_int_equal(len, sizeof *res);
        assert_int_equal(*res, 49);
    }
out:
    iop_future_free(f);
    iop_pool_free(pool);
    if (loop && oc.err)
        still_works(loop);
    /* A ppipe end remembers the loop that waited on it: closed before it goes. A
     * queue is destroyed after its loop (pqueue.h). */
    iop_ppipe_close(x.ends[0]);
    iop_ppipe_close(x.ends[1]);
    iop_loop_destroy(loop);
    iop_pqueue_destroy(x.q);
    iop_shdict_free(d);
    iop_plock_free(l);
    free(x.big);
}

static void test_ipc(void **state)
{
    (void)state;
    sweep("ipc", ipc_scenario);
}

/* ---- the shard layer (`test_oom shard`): a supervisor with one worker ------------------ */

/* What the supervisor child tells the test, in shared memory. */
typedef struct shard_share {
    _Atomic int port;
    _Atomic int finished;
    _Atomic long worker_failed;   /* injected failures a worker met (counted at its end) */
    int result;
    char msg[256];
} shard_share_t;

static shard_share_t *shs;

static void shard_on_listen(void *arg, uint32_t index, const struct sockaddr *addr, socklen_t len)
{
    (void)arg;
    (void)index;
    (void)len;
    atomic_store(&shs->port, ntohs(((const struct sockaddr_in *)addr)->sin_port));
}

static void shard_quiet(void *arg, int level, const char *line)
{
    (void)arg;
    if (getenv("OOM_VERBOSE"))
        fprintf(stderr, "[supervisor %d] %s", level, line);
}

static void shard_echo(iop_shard_worker_t *w, int fd, void *arg)
{
    (void)w;
    (void)arg;
    char b[64];
    uint64_t end = iop_now(iop_coro_loop(iop_self())) + 10 * SEC;
    ssize_t n = iop_recv(fd, b, sizeof b, 0, end);
    if (n > 0)
        iop_send(fd, b, (size_t)n, 0, end);
}

/* A worker that fails to start cannot count; its supervisor says why. */
static int shard_worker(iop_shard_worker_t *w)
{
    int r = iop_shard_serve(w, shard_echo, NULL);
    atomic_fetch_add(&shs->worker_failed, iop__alloc_fail_after(-1, 0));
    return r < 0 ? 1 : 0;
}

/* The supervisor, in a child of the test (iop_shard_run wants a process without
 * threads of its own), with the sweep's failure injected from its start. exit(),
 * not _exit(): LeakSanitizer checks the supervisor at its end. */
static void ignore_signal(int sig) { (void)sig; }

static _Noreturn void shard_child(long n)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    /* The test's SIGTERM may come after a failed run has ended: then it is pending
     * when the run restores the signal mask, and must not kill this process. */
    signal(SIGTERM, ignore_signal);
    /* Low fds taken: the worker's control socket gets a number past its loop's
     * first fd table, whose growth is then among the allocations swept. */
    for (int fd = dup(0); fd >= 0 && fd < 100; fd = dup(0))
        ;
    static const char *const listen[] = { "127.0.0.1:0", NULL };
    iop_shard_opts_t o = { .size = sizeof o, .workers = 1, .listen = listen, .worker = shard_worker,
                           .on_listen = shard_on_listen, .on_event = shard_quiet, .crash_limit = 1,
                           .backoff_min_ns = 1000000, .drain_timeout_ns = 2 * SEC };
    iop__alloc_fail_after(n, once);
    int r = iop_shard_run(&o);
    long failed = iop__alloc_fail_after(-1, 0);
    shs->result = r;
    snprintf(shs->msg, sizeof shs->msg, "%s", r < 0 ? iop_last_error() : "");
    atomic_store(&shs->finished, failed > 0 ? 2 : 1);   /* 2: an injected failure met here */
    fflush(NULL);
    exit(0);
}

static long shard_n;

/* A client of the worker: the echo comes back, or the connection ends (the worker
 * failed); either way the supervisor is then stopped and must end. */
static void shard_scenario(void)
{
    int echoed = 0;
    memset(shs, 0, sizeof *shs);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        shard_child(shard_n);
    uint64_t end = tu_clock_ms() + 10000;
    while (!atomic_load(&shs->port) && !atomic_load(&shs->finished)) {
        if (tu_clock_ms() > end)
            fail_msg("the supervisor neither listened nor ended");
        tu_sleep_ms(2);
    }
    if (atomic_load(&shs->port)) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)shs->port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct timeval tv = { .tv_sec = 5 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char in[8] = "";
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 && send(fd, "ping", 4, MSG_NOSIGNAL) == 4) {
            ssize_t m = recv(fd, in, 4, MSG_WAITALL);
            if (m < 0 && errno == EAGAIN && !atomic_load(&shs->finished))
                fail_msg("the worker neither answered nor closed within 5 s");
            echoed = m == 4 && memcmp(in, "ping", 4) == 0;
        }
        close(fd);
        kill(pid, SIGTERM);
    }
    int status = 0;
    end = tu_clock_ms() + 15000;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (tu_clock_ms() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fail_msg("the supervisor did not end within 15 s of SIGTERM");
        }
        tu_sleep_ms(2);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("the supervisor died: status %#x", status);
    assert_true(atomic_load(&shs->finished));
    /* A worker that could not start met a failure (the supervisor's message says
     * which); so did a run that failed. */
    injected = atomic_load(&shs->finished) == 2 || atomic_load(&shs->worker_failed) > 0 || shs->result < 0;
    if (!injected && !echoed)
        fail_msg("shard: a run without an injected failure did not echo");
    if (shs->result < 0 && shs->result != -ENOMEM && shs->result != -ECHILD)
        note(shs->result, "iop_shard_run");
    else if (shs->result < 0 && !shs->msg[0])
        fail_msg("iop_shard_run: %s without saying why", iop_strerror(shs->result));
    else if (strstr(shs->msg, "without being asked to"))
        fail_msg("iop_shard_run: a worker short of memory stopped by itself as if its supervisor had "
                 "gone: %s", shs->msg);
    else if (strstr(shs->msg, "could not start") && !strstr(shs->msg, "memory"))
        fail_msg("iop_shard_run: a worker start failed for want of memory, and the reason given is: %s",
                 shs->msg);
}

static void shard_sweep_mode(void)
{
    const char *only = getenv("OOM_N");
    for (shard_n = only ? atol(only) : 0; shard_n < MAX_N; shard_n++) {
        memset(&oc, 0, sizeof oc);
        shard_scenario();
        if (getenv("OOM_VERBOSE"))
            print_message("shard: failing %s allocation %ld: %d %s\n", once ? "only" : "from", shard_n,
                          shs->result, shs->msg);
        if (oc.err)
            fail_msg("shard, failing allocation %ld: %s gave %s (%s)", shard_n, oc.what, iop_strerror(oc.err),
                     shs->msg);
        if (!injected || only) {
            print_message("shard: %ld allocations in the supervisor and its worker, each failure handled\n",
                          shard_n);
            return;
        }
    }
    fail_msg("shard: still failing after %d allocations", MAX_N);
}

static void test_shard(void **state)
{
    (void)state;
    shs = mmap(NULL, sizeof *shs, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(shs != MAP_FAILED);
    const char *m = getenv("OOM_ONCE");
    for (once = 0; once < 2; once++)
        if (!m || atoi(m) == once)
            shard_sweep_mode();
    munmap(shs, sizeof *shs);
}

/* ---- a shard worker's acceptor out of fds, then of memory for its pause ---------------- */

typedef struct sabotage {
    _Atomic int done;     /* the first worker only */
    iop_timer_t timers[MAX_TIMERS];
    int unused;
} sabotage_t;

static sabotage_t *sab;

/* Gives the fds and the memory back once the acceptor has had many turns. */
static void *restorer(void *arg)
{
    (void)arg;
    for (int i = 0; i < 2000; i++)
        iop_yield();
    iop__alloc_fail_after(-1, 0);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    return NULL;
}

/* The first worker: a full timer heap (the acceptor's pause must grow it), no fd
 * left for an accepted connection, and no memory, until the restorer's end. */
static int sabotaged_worker(iop_shard_worker_t *w)
{
    if (!atomic_exchange(&sab->done, 1)) {
        iop_loop_t *loop = iop_shard_loop(w);
        if (fill_timer_heap(loop, sab->timers, MAX_TIMERS, &sab->unused) < 0)
            return 2;
        if (iop_go(loop, restorer, NULL, NULL, NULL) < 0)
            return 2;
        int fd = dup(0);
        close(fd);
        struct rlimit rl;
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = (rlim_t)fd;
        setrlimit(RLIMIT_NOFILE, &rl);
        iop__alloc_fail_after(0, 0);
    }
    iop_shard_serve(w, shard_echo, NULL);
    return 0;
}

/* A connection that waits in the backlog while the worker has no fd for it is
 * served once the worker has fds again, by that same worker. */
static void test_shard_accept_oom(void **state)
{
    (void)state;
    shs = mmap(NULL, sizeof *shs, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    sab = mmap(NULL, sizeof *sab, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(shs != MAP_FAILED && sab != MAP_FAILED);
    memset(shs, 0, sizeof *shs);
    memset(sab, 0, sizeof *sab);
    iop_shard_stats_t *stats = NULL;
    assert_int_equal(iop_shard_stats_create(&stats, 1), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        signal(SIGTERM, ignore_signal);
        static const char *const listen[] = { "127.0.0.1:0", NULL };
        iop_shard_opts_t o = { .size = sizeof o, .workers = 1, .listen = listen, .worker = sabotaged_worker,
                               .backend = tu_backend, .on_listen = shard_on_listen, .on_event = shard_quiet,
                               .stats = stats, .drain_timeout_ns = 2 * SEC };
        shs->result = iop_shard_run(&o);
        atomic_store(&shs->finished, 1);
        exit(0);
    }
    uint64_t end = tu_clock_ms() + 10000;
    while (!atomic_load(&shs->port) && tu_clock_ms() < end)
        tu_sleep_ms(2);
    assert_true(atomic_load(&shs->port) != 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)shs->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = { .tv_sec = 10 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char in[8] = "";
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(send(fd, "ping", 4, MSG_NOSIGNAL), 4);
    ssize_t m = recv(fd, in, 4, MSG_WAITALL);
    close(fd);
    iop_shard_worker_stats_t ws;
    assert_int_equal(iop_shard_stats_read(stats, 0, &ws), 0);
    kill(pid, SIGTERM);
    int status;
    waitpid(pid, &status, 0);
    if (m != 4)
        fail_msg("the connection was never served (%s)", m < 0 ? strerror(errno) : "closed");
    if (ws.generation != 1)
        fail_msg("the connection was served by worker generation %u: the first one stopped serving",
                 ws.generation);
    assert_true(WIFEXITED(status));
    assert_int_equal(shs->result, 0);
    iop_shard_stats_free(stats);
    munmap(sab, sizeof *sab);
    munmap(shs, sizeof *shs);
}

/* ---- main ------------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    const char *spec = tu_backend_from_args(argc, argv);
    if (!spec) {
        fprintf(stderr, "usage: %s BACKEND | ipc | shard\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (strcmp(spec, "shard") == 0) {
        const struct CMUnitTest shard[] = { cmocka_unit_test(test_shard), cmocka_unit_test(test_shard_accept_oom) };
        return cmocka_run_group_tests_name("shard", shard, NULL, NULL);
    }
    if (strcmp(spec, "ipc") == 0) {
        const struct CMUnitTest ipc[] = { cmocka_unit_test(test_ipc) };
        return cmocka_run_group_tests_name("ipc", ipc, NULL, NULL);
    }
    tu_backend = spec;
    /* A backend this machine cannot run (no io_uring) is skipped, not swept. */
    iop_loop_opts_t o = { .size = sizeof o, .backend = spec };
    iop_loop_t *probe = NULL;
    int r = iop_loop_create(&probe, &o);
    if (r < 0) {
        printf("backend %s unavailable: %s\n", spec, iop_last_error());
        return 77;
    }
    iop_loop_destroy(probe);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proactor),
        cmocka_unit_test(test_many),
        cmocka_unit_test(test_coro),
        cmocka_unit_test(test_crowd),
        cmocka_unit_test(test_sync),
        cmocka_unit_test(test_service),
        cmocka_unit_test(test_service_http),
        cmocka_unit_test(test_service_chat),
        cmocka_unit_test(test_service_accept_oom),
        cmocka_unit_test(test_chat_reader_oom),
        cmocka_unit_test(test_pool_dispatcher_oom),
        cmocka_unit_test(test_loader),
    };
    return cmocka_run_group_tests_name(spec, tests, NULL, NULL);
}
