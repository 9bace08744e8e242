/* Readiness watches: level-triggered on every backend, changed or stopped from
 * anywhere, including their own callbacks. */
#include <stdlib.h>
#include "conformance.h"

typedef struct wstat {
    int calls;
    unsigned last;      /* revents of the last callback */
} wstat_t;

static void count_cb(iop_watch_t *w, unsigned revents)
{
    wstat_t *s = w->data;
    s->calls++;
    s->last = revents;
}

/* Until a watch's first report: under SQPOLL it comes through the kernel's SQ
 * thread, maybe after the next iteration; a level-triggered watch then reports once
 * per iteration, so exact counts hold from there. */
static void first_report(iop_loop_t *loop, const int *calls, int want)
{
    assert_true(tu_run_until_count(loop, calls, want, 5000));
    assert_int_equal(*calls, want);
}

static void drain(int fd)
{
    char buf[4096];
    while (read(fd, buf, sizeof buf) > 0)
        ;
}

void test_watch_read_level_triggered(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int p[2];
    tu_pipe(p);
    wstat_t s = { 0 };
    iop_watch_t w = { .data = &s };
    assert_int_equal(iop_watch_start(loop, &w, p[0], IOP_READ, count_cb), 0);

    tu_run_nowait(loop, 2);
    assert_int_equal(s.calls, 0);   /* empty pipe: nothing to report */

    assert_int_equal(write(p[1], "abc", 3), 3);
    /* The first report may take a moment (under SQPOLL a kernel thread posts it);
     * from then on, once per iteration while unread. */
    assert_true(tu_run_until_count(loop, &s.calls, 1, 2000));
    tu_run_nowait(loop, 2);
    assert_int_equal(s.calls, 3);
    assert_true(s.last & IOP_READ);
    assert_false(s.last & IOP_WRITE);

    drain(p[0]);
    tu_run_nowait(loop, 3);
    assert_int_equal(s.calls, 3);   /* drained: silent */

    assert_int_equal(write(p[1], "d", 1), 1);
    assert_true(tu_run_until_count(loop, &s.calls, 4, 2000));   /* a blocking run wakes */
    assert_true(s.last & IOP_READ);

    iop_watch_stop(&w);
    conf_close(loop, p[0]);
    conf_close(loop, p[1]);
    iop_loop_destroy(loop);
}

void test_watch_write_on_empty_pipe(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int p[2];
    tu_pipe(p);
    wstat_t s = { 0 };
    iop_watch_t w = { .data = &s };
    assert_int_equal(iop_watch_start(loop, &w, p[1], IOP_WRITE, count_cb), 0);
    first_report(loop, &s.calls, 1);
    tu_run_nowait(loop, 1);
    assert_int_equal(s.calls, 2);
    assert_true(s.last & IOP_WRITE);
    assert_false(s.last & IOP_READ);

    /* Fill the pipe: no longer writable, so no more callbacks. */
    char chunk[4096] = { 0 };
    while (write(p[1], chunk, sizeof chunk) > 0)
        ;
    assert_int_equal(errno, EAGAIN);
    int before = s.calls;
    tu_run_nowait(loop, 3);
    assert_int_equal(s.calls, before);

    drain(p[0]);
    assert_true(tu_run_until_count(loop, &s.calls, before + 1, 2000));
    assert_int_equal(s.calls, before + 1);

    iop_watch_stop(&w);
    conf_close(loop, p[0]);
    conf_close(loop, p[1]);
    iop_loop_destroy(loop);
}

void test_watch_modify_zero_pauses(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int p[2];
    tu_pipe(p);
    wstat_t s = { 0 };
    iop_watch_t w = { .data = &s };
    assert_int_equal(iop_watch_start(loop, &w, p[0], IOP_READ, count_cb), 0);
    assert_int_equal(write(p[1], "x", 1), 1);
    first_report(loop, &s.calls, 1);

    assert_int_equal(iop_watch_modify(&w, 0), 0);
    tu_run_nowait(loop, 3);
    assert_int_equal(s.calls, 1);   /* paused although still readable */

    assert_int_equal(iop_watch_modify(&w, IOP_READ), 0);
    first_report(loop, &s.calls, 2);
    tu_run_nowait(loop, 1);
    assert_int_equal(s.calls, 3);

    /* Switching direction: the read end is never writable. */
    assert_int_equal(iop_watch_modify(&w, IOP_WRITE), 0);
    tu_run_nowait(loop, 2);
    assert_int_equal(s.calls, 3);

    iop_watch_stop(&w);
    assert_int_equal(iop_watch_modify(&w, IOP_READ), -EINVAL);   /* not active any more */
    conf_close(loop, p[0]);
    conf_close(loop, p[1]);
    iop_loop_destroy(loop);
}

static void stop_self_cb(iop_watch_t *w, unsigned revents)
{
    (void)revents;
    count_cb(w, revents);
    iop_watch_stop(w);
}

void test_watch_stop_inside_callback(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int p[2];
    tu_pipe(p);
    assert_int_equal(write(p[1], "x", 1), 1);
    wstat_t s = { 0 };
    iop_watch_t w = { .data = &s };
    assert_int_equal(iop_watch_start(loop, &w, p[0], IOP_READ, stop_self_cb), 0);
    first_report(loop, &s.calls, 1);
    tu_run_nowait(loop, 2);
    assert_int_equal(s.calls, 1);

    /* The fd is free again: the same record can watch it anew. */
    assert_int_equal(iop_watch_start(loop, &w, p[0], IOP_READ, count_cb), 0);
    first_report(loop, &s.calls, 2);
    iop_watch_stop(&w);
    iop_watch_stop(&w);   /* a no-op on an inactive watch */

    conf_close(loop, p[0]);
    conf_close(loop, p[1]);
    iop_loop_destroy(loop);
}

static int freed_calls;

static void free_self_cb(iop_watch_t *w, unsigned revents)
{
    (void)revents;
    freed_calls++;
    iop_watch_stop(w);
    free(w);   /* under ASan any later touch of w by the loop is caught */
}

void test_watch_free_inside_callback(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int p[2];
    tu_pipe(p);
    assert_int_equal(write(p[1], "x", 1), 1);
    freed_calls = 0;
    iop_watch_t *w = calloc(1, sizeof *w);
    assert_non_null(w);
    assert_int_equal(iop_watch_start(loop, w, p[0], IOP_READ, free_self_cb), 0);
    first_report(loop, &freed_calls, 1);
    tu_run_nowait(loop, 2);
    assert_int_equal(freed_calls, 1);

    wstat_t s = { 0 };
    iop_watch_t w2 = { .data = &s };
    assert_int_equal(iop_watch_start(loop, &w2, p[0], IOP_READ, count_cb), 0);
    first_report(loop, &s.calls, 1);
    iop_watch_stop(&w2);

    conf_close(loop, p[0]);
    conf_close(loop, p[1]);
    iop_loop_destroy(loop);
}

void test_watch_second_on_same_fd(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int p[2], q[2];
    tu_pipe(p);
    tu_pipe(q);
    wstat_t s1 = { 0 }, s2 = { 0 };
    iop_watch_t w1 = { .data = &s1 }, w2 = { .data = &s2 };
    assert_int_equal(iop_watch_start(loop, &w1, p[0], IOP_READ, count_cb), 0);
    assert_int_equal(iop_watch_start(loop, &w2, p[0], IOP_READ, count_cb), -EEXIST);
    assert_int_equal(iop_watch_start(loop, &w2, p[0], IOP_WRITE, count_cb), -EEXIST);
    /* An active record cannot start again elsewhere. */
    assert_int_equal(iop_watch_start(loop, &w1, q[0], IOP_READ, count_cb), -EBUSY);

    assert_int_equal(write(p[1], "x", 1), 1);
    /* Until the first report (with SQPOLL the poll reaches the kernel through the
     * SQ thread, maybe after this iteration): one iteration reports it once. */
    assert_true(tu_run_until_count(loop, &s1.calls, 1, 5000));
    assert_int_equal(s1.calls, 1);   /* the first watch is untouched by the refusals */
    assert_int_equal(s2.calls, 0);

    iop_watch_stop(&w1);
    assert_int_equal(iop_watch_start(loop, &w2, p[0], IOP_READ, count_cb), 0);
    assert_true(tu_run_until_count(loop, &s2.calls, 1, 5000));
    assert_int_equal(s2.calls, 1);
    assert_int_equal(s1.calls, 1);
    iop_watch_stop(&w2);

    conf_close(loop, p[0]);
    conf_close(loop, p[1]);
    conf_close(loop, q[0]);
    conf_close(loop, q[1]);
    iop_loop_destroy(loop);
}

void test_watch_peer_close_reads_eof(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int p[2];
    tu_pipe(p);
    wstat_t s = { 0 };
    iop_watch_t w = { .data = &s };
    assert_int_equal(iop_watch_start(loop, &w, p[0], IOP_READ, count_cb), 0);
    tu_run_nowait(loop, 1);
    assert_int_equal(s.calls, 0);

    conf_close(loop, p[1]);
    assert_true(tu_run_until_count(loop, &s.calls, 1, 2000));
    assert_int_equal(s.calls, 1);
    assert_true(s.last & IOP_READ);   /* "readable, or a peer closed" */
    char c;
    assert_int_equal(read(p[0], &c, 1), 0);

    iop_watch_stop(&w);
    conf_close(loop, p[0]);
    iop_loop_destroy(loop);
}

void test_watch_and_op_share_fd(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    wstat_t ws = { 0 };
    iop_watch_t w = { .data = &ws };
    assert_int_equal(iop_watch_start(loop, &w, s[1], IOP_WRITE, count_cb), 0);

    char buf[16] = { 0 };
    rec_t r = { 0 };
    iop_prep_recv(&r.op, s[1], buf, sizeof buf, 0, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    first_report(loop, &ws.calls, 1);
    /* Under SQPOLL the re-armed poll may miss an iteration when the SQ thread is
     * slow to take it: the next report, however many iterations it takes. */
    first_report(loop, &ws.calls, 2);   /* the op's read interest leaves the watch alone */
    assert_int_equal(r.calls, 0);

    assert_int_equal(send(s[0], "ping", 4, 0), 4);
    assert_true(tu_run_until_count(loop, &r.calls, 1, 2000));
    assert_int_equal(r.res, 4);
    assert_memory_equal(buf, "ping", 4);

    int before = ws.calls;
    first_report(loop, &ws.calls, before + 1);   /* and the op's end leaves it too */
    assert_true(ws.last & IOP_WRITE);

    iop_watch_stop(&w);
    iop_prep_recv(&r.op, s[1], buf, sizeof buf, 0, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_int_equal(send(s[0], "pong", 4, 0), 4);
    assert_true(tu_run_until_count(loop, &r.calls, 2, 2000));
    assert_int_equal(r.res, 4);
    assert_memory_equal(buf, "pong", 4);

    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

/* An fd closed behind the loop's back (a misuse) and then modified: the backend
 * may refuse it. Whatever it does, the loop comes back from each iteration (a
 * refusal once fed itself: the same fd refused and reported without end, past the
 * end of the change list) and reports an error at most once per iteration. */
void test_watch_closed_behind_the_loop(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int p[2];
    tu_pipe(p);
    wstat_t s = { 0 };
    iop_watch_t w = { .data = &s };
    assert_int_equal(iop_watch_start(loop, &w, p[0], IOP_READ, count_cb), 0);
    tu_run_nowait(loop, 1);
    assert_int_equal(s.calls, 0);
    close(p[0]);                   /* not through the loop */
    assert_int_equal(iop_watch_modify(&w, IOP_READ | IOP_WRITE), 0);
    for (int i = 1; i <= 3; i++) {
        tu_run_nowait(loop, 1);
        assert_true(s.calls <= i);
    }
    iop_watch_stop(&w);
    iop_fd_forget(loop, p[0]);
    close(p[1]);
    iop_loop_destroy(loop);
}

/* A watched fd closed behind the loop's back, no modify: backends that can tell
 * (poll's POLLNVAL, select's EBADF) give the watch one IOP_ERR and stop it; the
 * others see nothing. Either way the loop goes on serving every other fd (on select
 * the closed fd failed every later select(): nothing else was served, at 100% CPU). */
void test_watch_closed_others_served(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int p[2], s[2];
    tu_pipe(p);
    tu_tcp_pair(s);
    wstat_t ws = { 0 };
    iop_watch_t w = { .data = &ws };
    assert_int_equal(iop_watch_start(loop, &w, p[0], IOP_READ, count_cb), 0);
    tu_run_nowait(loop, 1);
    close(p[0]);                   /* not through the loop */
    char buf[16];
    rec_t r = { 0 };
    iop_prep_recv(&r.op, s[1], buf, sizeof buf, 0, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    tu_run_nowait(loop, 3);
    assert_int_equal(send(s[0], "live", 4, 0), 4);
    assert_true(tu_run_until_count(loop, &r.calls, 1, 3000));
    assert_int_equal(r.res, 4);
    tu_run_nowait(loop, 3);
    assert_true(ws.calls <= 1);
    if (ws.calls == 1) {
        assert_true(ws.last & IOP_ERR);
        assert_int_equal(w.active, 0);
    }
    iop_watch_stop(&w);           /* a no-op once stopped */
    iop_fd_forget(loop, p[0]);
    close(p[1]);
    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

/* A watch on an fd closed before the loop first waited (or never open): the backend
 * finds it when it registers the fd. At most one IOP_ERR, and the loop sleeps as
 * before; on io_uring the failed poll was armed again at once, every iteration
 * (half a million IOP_ERR callbacks a second, at 100% CPU). */
static int timer_fired;
static void note_timer(iop_timer_t *t) { (void)t; timer_fired = 1; }

void test_watch_closed_before_first_wait(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int p[2];
    tu_pipe(p);
    wstat_t s = { 0 };
    iop_watch_t w = { .data = &s };
    assert_int_equal(iop_watch_start(loop, &w, p[0], IOP_READ, count_cb), 0);
    close(p[0]);                   /* not through the loop */
    iop_timer_t t;
    memset(&t, 0, sizeof t);
    timer_fired = 0;
    assert_int_equal(iop_timer_start(loop, &t, 50 * 1000000ull, 0, note_timer), 0);
    iop_loop_stats_t before, after;
    iop_loop_get_stats(loop, &before);
    while (!timer_fired)
        assert_true(iop_loop_run(loop, IOP_RUN_ONCE) >= 0);
    iop_loop_get_stats(loop, &after);
    assert_true(s.calls <= 1);
    if (s.calls == 1) {
        assert_true(s.last & IOP_ERR);
        assert_int_equal(w.active, 0);
    }
    if (after.polls - before.polls > 20)
        fail_msg("%llu waits in 50 ms: the loop spins", (unsigned long long)(after.polls - before.polls));
    iop_watch_stop(&w);
    iop_fd_forget(loop, p[0]);
    close(p[1]);
    iop_loop_destroy(loop);
}

/* Two readable pipes in one wait; the first callback closes the other's read end
 * through the loop and watches a new, empty pipe under the same number. The rest of
 * that batch is about the old file: the new watch must not be told it is readable
 * (every backend did, and a blocking fd there would have hung the loop). */
typedef struct swap {
    iop_loop_t *loop;
    iop_watch_t w[2], fresh;
    int rd[2];
    int first;          /* index of the watch that ran first, -1 before */
    int fresh_calls;
    int fresh_pipe[2];
} swap_t;

static void fresh_cb(iop_watch_t *w, unsigned revents)
{
    (void)revents;
    ((swap_t *)w->data)->fresh_calls++;
}

static void swap_cb(iop_watch_t *w, unsigned revents)
{
    (void)revents;
    swap_t *s = w->data;
    int me = w == &s->w[0] ? 0 : 1, other = 1 - me;
    char c;
    assert_int_equal(read(s->rd[me], &c, 1), 1);
    if (s->first >= 0)
        return;
    s->first = me;
    iop_watch_stop(&s->w[other]);
    int num = s->rd[other];
    tu_pipe(s->fresh_pipe);        /* before the close: both ends get other numbers */
    assert_int_equal(iop_fd_close(s->loop, num), 0);
    assert_int_equal(dup2(s->fresh_pipe[0], num), num);
    close(s->fresh_pipe[0]);
    s->fresh_pipe[0] = num;
    s->fresh.data = s;
    assert_int_equal(iop_watch_start(s->loop, &s->fresh, num, IOP_READ, fresh_cb), 0);
}

void test_watch_fd_reused_within_batch(void **state)
{
    (void)state;
    swap_t s = { .loop = tu_loop_new(), .first = -1 };
    int a[2], b[2];
    tu_pipe(a);
    tu_pipe(b);
    s.rd[0] = a[0];
    s.rd[1] = b[0];
    for (int i = 0; i < 2; i++) {
        s.w[i].data = &s;
        assert_int_equal(iop_watch_start(s.loop, &s.w[i], s.rd[i], IOP_READ, swap_cb), 0);
    }
    assert_int_equal(write(a[1], "x", 1), 1);
    assert_int_equal(write(b[1], "y", 1), 1);
    for (int i = 0; i < 5 && s.first < 0; i++)
        tu_run_nowait(s.loop, 1);
    assert_true(s.first >= 0);
    tu_run_nowait(s.loop, 2);
    assert_int_equal(s.fresh_calls, 0);   /* its pipe is empty */
    iop_watch_stop(&s.fresh);
    iop_watch_stop(&s.w[s.first]);
    iop_fd_close(s.loop, s.fresh_pipe[0]);
    close(s.fresh_pipe[1]);
    iop_fd_forget(s.loop, s.rd[s.first]);
    close(a[0] == s.rd[s.first] ? a[0] : b[0]);
    close(a[1]);
    close(b[1]);
    iop_loop_destroy(s.loop);
}
