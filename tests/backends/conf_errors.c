/* Failures that must come back as results: end of file, reset, refused connections,
 * and the submit-time refusals of bad input. */
#include <fcntl.h>
#include <signal.h>
#include "conformance.h"

void test_eof_after_peer_close(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    char buf[16];
    rec_t r = { 0 };
    iop_prep_recv(&r.op, s[1], buf, sizeof buf, 0, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    tu_run_nowait(loop, 1);
    assert_int_equal(r.calls, 0);

    /* Data sent just before the close still arrives first. */
    assert_int_equal(send(s[0], "last", 4, 0), 4);
    conf_close(loop, s[0]);
    assert_true(tu_run_until_count(loop, &r.calls, 1, 2000));
    assert_int_equal(r.res, 4);

    iop_prep_recv(&r.op, s[1], buf, sizeof buf, 0, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_true(tu_run_until_count(loop, &r.calls, 2, 2000));
    assert_int_equal(r.res, 0);

    /* And again: end of file is sticky. */
    iop_prep_read(&r.op, s[1], buf, sizeof buf, -1, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_true(tu_run_until_count(loop, &r.calls, 3, 2000));
    assert_int_equal(r.res, 0);

    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

static void reset_close(iop_loop_t *loop, int fd)
{
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    conf_close(loop, fd);   /* linger {1, 0}: close sends RST */
}

void test_peer_reset(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    char buf[16];

    /* Reset while a recv waits. */
    int s[2];
    tu_tcp_pair(s);
    rec_t r = { 0 };
    iop_prep_recv(&r.op, s[1], buf, sizeof buf, 0, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    tu_run_nowait(loop, 1);
    assert_int_equal(r.calls, 0);
    reset_close(loop, s[0]);
    assert_true(tu_run_until_count(loop, &r.calls, 1, 2000));
    assert_int_equal(r.res, -ECONNRESET);
    conf_close(loop, s[1]);

    /* Reset already pending when the recv is submitted. */
    int t[2];
    tu_tcp_pair(t);
    reset_close(loop, t[0]);
    tu_sleep_ms(10);
    rec_t r2 = { 0 };
    iop_prep_recv(&r2.op, t[1], buf, sizeof buf, 0, rec_cb, &r2);
    assert_int_equal(iop_submit(loop, &r2.op), 0);
    assert_true(tu_run_until_count(loop, &r2.calls, 1, 2000));
    assert_int_equal(r2.res, -ECONNRESET);

    /* Sending on the reset connection fails too, with send and with write ops, and
     * no SIGPIPE kills us: the signal keeps its default action meanwhile (the first
     * failure reports the reset, the ones after it EPIPE, where the kernel signals). */
    void (*old_pipe)(int) = signal(SIGPIPE, SIG_DFL);
    for (int i = 0; i < 4; i++) {
        rec_t w = { 0 };
        if (i % 2)
            iop_prep_write(&w.op, t[1], "x", 1, -1, rec_cb, &w);
        else
            iop_prep_send(&w.op, t[1], "x", 1, 0, rec_cb, &w);
        assert_int_equal(iop_submit(loop, &w.op), 0);
        assert_true(tu_run_until_count(loop, &w.calls, 1, 2000));
        assert_true(w.res == -EPIPE || w.res == -ECONNRESET);
    }
    signal(SIGPIPE, old_pipe);
    conf_close(loop, t[1]);
    iop_loop_destroy(loop);
}

void test_connection_refused(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    struct sockaddr_in addr;
    tu_closed_port(&addr);
    int c = tu_tcp_socket();
    rec_t r = { 0 };
    iop_prep_connect(&r.op, c, (struct sockaddr *)&addr, sizeof addr, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_true(tu_run_until_count(loop, &r.calls, 1, 3000));
    assert_int_equal(r.res, -ECONNREFUSED);
    tu_run_nowait(loop, 2);
    assert_int_equal(r.calls, 1);
    conf_close(loop, c);
    iop_loop_destroy(loop);
}

void test_submit_in_flight_ebusy(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    char buf[16];
    rec_t r = { 0 };
    iop_prep_recv(&r.op, s[1], buf, sizeof buf, 0, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_int_equal(iop_submit(loop, &r.op), -EBUSY);
    tu_run_nowait(loop, 1);
    assert_int_equal(iop_submit(loop, &r.op), -EBUSY);

    assert_int_equal(send(s[0], "once", 4, 0), 4);
    assert_true(tu_run_until_count(loop, &r.calls, 1, 2000));
    assert_int_equal(r.res, 4);
    assert_int_equal(send(s[0], "more", 4, 0), 4);
    tu_run_nowait(loop, 3);
    assert_int_equal(r.calls, 1);   /* the refused submits queued nothing */

    /* An op finished but whose callback has not run yet is still in flight. */
    rec_t n = { 0 };
    iop_prep_nop(&n.op, rec_cb, &n);
    assert_int_equal(iop_submit(loop, &n.op), 0);
    assert_int_equal(iop_submit(loop, &n.op), -EBUSY);
    assert_true(tu_run_until_count(loop, &n.calls, 1, 2000));
    tu_run_nowait(loop, 2);
    assert_int_equal(n.calls, 1);

    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

void test_submit_fd_out_of_range(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    const int bad[] = { -1, -1000, 1 << 30, 0x7fffffff };
    char buf[8];
    struct sockaddr_in addr = { .sin_family = AF_INET };
    struct msghdr msg = { 0 };
    rec_t r = { 0 };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int fd = bad[i];
        iop_prep_recv(&r.op, fd, buf, sizeof buf, 0, rec_cb, &r);
        assert_int_equal(iop_submit(loop, &r.op), -EBADF);
        iop_prep_send(&r.op, fd, buf, sizeof buf, 0, rec_cb, &r);
        assert_int_equal(iop_submit(loop, &r.op), -EBADF);
        iop_prep_read(&r.op, fd, buf, sizeof buf, -1, rec_cb, &r);
        assert_int_equal(iop_submit(loop, &r.op), -EBADF);
        iop_prep_write(&r.op, fd, buf, sizeof buf, -1, rec_cb, &r);
        assert_int_equal(iop_submit(loop, &r.op), -EBADF);
        iop_prep_accept(&r.op, fd, NULL, NULL, rec_cb, &r);
        assert_int_equal(iop_submit(loop, &r.op), -EBADF);
        iop_prep_connect(&r.op, fd, (struct sockaddr *)&addr, sizeof addr, rec_cb, &r);
        assert_int_equal(iop_submit(loop, &r.op), -EBADF);
        iop_prep_recvmsg(&r.op, fd, &msg, 0, rec_cb, &r);
        assert_int_equal(iop_submit(loop, &r.op), -EBADF);
        iop_prep_sendmsg(&r.op, fd, &msg, 0, rec_cb, &r);
        assert_int_equal(iop_submit(loop, &r.op), -EBADF);
        iop_prep_close(&r.op, fd, rec_cb, &r);
        assert_int_equal(iop_submit(loop, &r.op), -EBADF);
        assert_false(iop_op_in_flight(&r.op));
    }
    tu_run_nowait(loop, 3);
    assert_int_equal(r.calls, 0);   /* refused: no callback, ever */
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);
    iop_loop_destroy(loop);
}

void test_submit_malformed(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    rec_t r = { 0 };
    iop_prep_nop(&r.op, NULL, &r);
    assert_int_equal(iop_submit(loop, &r.op), -EINVAL);   /* no callback */
    iop_prep_cancel(&r.op, NULL, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), -EINVAL);   /* cancel of nothing */
    iop_prep_nop(&r.op, rec_cb, &r);
    r.op.kind = IOP_OP_KIND_COUNT;
    assert_int_equal(iop_submit(loop, &r.op), -EINVAL);   /* unknown kind */
    tu_run_nowait(loop, 2);
    assert_int_equal(r.calls, 0);
    iop_loop_destroy(loop);
}

void test_op_on_closed_fd(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int fd = tu_closed_fd();
    char buf[8] = "written";   /* defined: a write hands it to the kernel */
    rec_t r = { 0 }, rd = { 0 }, wr = { 0 };
    iop_prep_recv(&r.op, fd, buf, sizeof buf, 0, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_int_equal(r.calls, 0);
    assert_true(tu_run_until_count(loop, &r.calls, 1, 2000));
    assert_int_equal(r.res, -EBADF);

    iop_prep_read(&rd.op, fd, buf, sizeof buf, -1, rec_cb, &rd);
    iop_prep_write(&wr.op, fd, buf, sizeof buf, -1, rec_cb, &wr);
    assert_int_equal(iop_submit(loop, &rd.op), 0);
    assert_int_equal(iop_submit(loop, &wr.op), 0);
    assert_true(tu_run_until_count(loop, &wr.calls, 1, 2000));
    assert_true(tu_run_until_count(loop, &rd.calls, 1, 2000));
    assert_int_equal(rd.res, -EBADF);
    assert_int_equal(wr.res, -EBADF);
    tu_run_nowait(loop, 2);
    assert_int_equal(r.calls + rd.calls + wr.calls, 3);
    iop_fd_forget(loop, fd);
    iop_loop_destroy(loop);
}

static void never_cb(iop_watch_t *w, unsigned revents)
{
    (void)w;
    (void)revents;
    fail_msg("a refused watch must never fire");
}

void test_watch_bad_fd(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    iop_watch_t w = { 0 };
    assert_int_equal(iop_watch_start(loop, &w, -1, IOP_READ, never_cb), -EBADF);
    assert_int_equal(iop_watch_start(loop, &w, 1 << 30, IOP_READ, never_cb), -EBADF);
    tu_run_nowait(loop, 2);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);   /* nothing was left active */
    iop_watch_stop(&w);   /* harmless on a refused record */
    iop_loop_destroy(loop);
}

static void count_watch(iop_watch_t *w, unsigned revents)
{
    (void)revents;
    (*(int *)w->data)++;
}

/* The kernel hands out the lowest free number, so a closed fd's number comes back at
 * once. After iop_fd_close nothing of the old fd may linger: not its watch, not its
 * ops, not its registration with the backend. */
void test_fd_number_reused_after_close(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int p[2];
    tu_pipe(p);
    int calls = 0;
    iop_watch_t w = { .data = &calls };
    assert_int_equal(iop_watch_start(loop, &w, p[0], IOP_READ, count_watch), 0);
    char buf[8];
    rec_t r = { 0 };
    iop_prep_read(&r.op, p[0], buf, sizeof buf, -1, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    tu_run_nowait(loop, 1);

    int old = p[0];
    assert_int_equal(iop_fd_close(loop, p[0]), 0);   /* drops the watch, fails the op */
    assert_true(tu_run_until_count(loop, &r.calls, 1, 2000));
    assert_int_equal(r.res, -ECANCELED);
    assert_int_equal(calls, 0);
    conf_close(loop, p[1]);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);   /* the watch is gone too */

    /* Same number, new object: a UDP socket this time. */
    struct sockaddr_in faddr;
    int fresh = tu_udp_socket(&faddr);
    if (fresh != old)
        fail_msg("fd %d was not reused (got %d); the test needs the lowest-free rule", old, fresh);
    int other = tu_udp_socket(NULL);
    assert_int_equal(iop_watch_start(loop, &w, fresh, IOP_READ, count_watch), 0);
    tu_run_nowait(loop, 2);
    assert_int_equal(calls, 0);   /* nothing stale reports the new fd ready */
    assert_int_equal(sendto(other, "new", 3, 0, (struct sockaddr *)&faddr, sizeof faddr), 3);
    /* Readiness may take a moment to arrive (a kernel thread posts it under SQPOLL);
     * the first iteration that has it runs the callback once: no second, stale
     * registration. */
    assert_true(tu_run_until_count(loop, &calls, 1, 2000));
    assert_int_equal(calls, 1);
    iop_watch_stop(&w);
    iop_prep_recv(&r.op, fresh, buf, sizeof buf, 0, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_true(tu_run_until_count(loop, &r.calls, 2, 2000));
    assert_int_equal(r.res, 3);
    assert_memory_equal(buf, "new", 3);

    conf_close(loop, fresh);
    conf_close(loop, other);
    iop_loop_destroy(loop);
}
