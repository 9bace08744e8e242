/* Ops waiting behind others on one fd, and fds in a state the tests elsewhere never
 * hand over: a cancel taken out of the middle of a queue, a close that fails every
 * op queued in both directions, blocking sockets, POLL_FIRST asked for by the
 * caller, a busy-polling loop, watches on regular files, and a loop destroyed with
 * records still armed. */
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include "conformance.h"

#define MS 1000000ull

/* Three recvs queued on one socket; the second and third are cancelled while the
 * first still waits: the first then gets the data, the cancelled ones -ECANCELED
 * each once, and a recv submitted after them is served next, in order. */
void test_cancel_queued_behind_op(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    char b[4][8];
    memset(b, 0, sizeof b);
    rec_t r[4], c[2];
    memset(r, 0, sizeof r);
    memset(c, 0, sizeof c);
    for (int i = 0; i < 3; i++) {
        iop_prep_recv(&r[i].op, s[1], b[i], 3, 0, rec_cb, &r[i]);
        assert_int_equal(iop_submit(loop, &r[i].op), 0);
    }
    tu_run_nowait(loop, 2);
    assert_int_equal(r[0].calls + r[1].calls + r[2].calls, 0);

    /* the middle one first, then the (new) last one */
    iop_prep_cancel(&c[0].op, &r[1].op, rec_cb, &c[0]);
    assert_int_equal(iop_submit(loop, &c[0].op), 0);
    iop_prep_cancel(&c[1].op, &r[2].op, rec_cb, &c[1]);
    assert_int_equal(iop_submit(loop, &c[1].op), 0);
    assert_true(tu_run_until_count(loop, &r[2].calls, 1, 2000));
    assert_true(tu_run_until_count(loop, &r[1].calls, 1, 2000));
    assert_true(tu_run_until_count(loop, &c[1].calls, 1, 2000));
    assert_int_equal(r[1].res, -ECANCELED);
    assert_int_equal(r[2].res, -ECANCELED);
    assert_int_equal(c[0].res, 0);
    assert_int_equal(c[1].res, 0);
    assert_int_equal(r[0].calls, 0);   /* the head still waits */

    iop_prep_recv(&r[3].op, s[1], b[3], 3, 0, rec_cb, &r[3]);
    assert_int_equal(iop_submit(loop, &r[3].op), 0);
    assert_int_equal(send(s[0], "onetwo", 6, 0), 6);
    assert_true(tu_run_until_count(loop, &r[3].calls, 1, 2000));
    assert_int_equal(r[0].calls, 1);
    assert_int_equal(r[0].res, 3);
    assert_memory_equal(b[0], "one", 3);
    assert_int_equal(r[3].res, 3);
    assert_memory_equal(b[3], "two", 3);
    assert_true(r[0].order < r[3].order);
    tu_run_nowait(loop, 2);
    for (int i = 0; i < 4; i++)
        assert_int_equal(r[i].calls, 1);
    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

/* A close op on a socket with ops queued in both directions, several deep: every
 * one of them completes once with -ECANCELED, not only the first of each queue. */
void test_close_fails_every_queued_op(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    /* fill the send side so that sends wait too */
    int small = 4096;
    (void)setsockopt(s[1], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    static char fill[1 << 16];
    for (;;) {   /* and staying full: loopback may still move queued bytes to the peer */
        while (send(s[1], fill, sizeof fill, MSG_DONTWAIT) > 0)
            ;
        struct pollfd p = { .fd = s[1], .events = POLLOUT };
        if (poll(&p, 1, 50) == 0)
            break;
    }
    char rb[3][8];
    rec_t rd[3], wr[3], cls = { 0 };
    memset(rd, 0, sizeof rd);
    memset(wr, 0, sizeof wr);
    for (int i = 0; i < 3; i++) {
        iop_prep_recv(&rd[i].op, s[1], rb[i], sizeof rb[i], 0, rec_cb, &rd[i]);
        assert_int_equal(iop_submit(loop, &rd[i].op), 0);
        iop_prep_send(&wr[i].op, s[1], fill, sizeof fill, 0, rec_cb, &wr[i]);
        assert_int_equal(iop_submit(loop, &wr[i].op), 0);
    }
    tu_run_nowait(loop, 2);
    for (int i = 0; i < 3; i++)
        assert_int_equal(rd[i].calls + wr[i].calls, 0);
    iop_prep_close(&cls.op, s[1], rec_cb, &cls);
    assert_int_equal(iop_submit(loop, &cls.op), 0);
    assert_true(tu_run_until_count(loop, &cls.calls, 1, 2000));
    for (int i = 0; i < 3; i++) {
        assert_true(tu_run_until_count(loop, &rd[i].calls, 1, 2000));
        assert_true(tu_run_until_count(loop, &wr[i].calls, 1, 2000));
    }
    tu_run_nowait(loop, 2);
    assert_int_equal(cls.res, 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(rd[i].calls, 1);
        assert_int_equal(rd[i].res, -ECANCELED);
        assert_int_equal(wr[i].calls, 1);
        assert_int_equal(wr[i].res, -ECANCELED);
    }
    conf_close(loop, s[0]);
    iop_loop_destroy(loop);
}

static int count_cb_timer;
static void count_timer(iop_timer_t *t) { (void)t; count_cb_timer++; }

/* Blocking sockets handed to accept, read and write ops: the loop never blocks in
 * them (a timer keeps firing while they wait) and they complete once the peer acts. */
void test_blocking_sockets(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    struct sockaddr_in addr;
    int lfd = tu_tcp_listener(&addr, 8);
    assert_int_equal(fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) & ~O_NONBLOCK), 0);
    iop_timer_t tick = { 0 };
    count_cb_timer = 0;
    assert_int_equal(iop_timer_start(loop, &tick, 2 * MS, 2 * MS, count_timer), 0);

    rec_t acc = { 0 };
    iop_prep_accept(&acc.op, lfd, NULL, NULL, rec_cb, &acc);
    assert_int_equal(iop_submit(loop, &acc.op), 0);
    assert_true(tu_run_until_count(loop, &count_cb_timer, 3, 2000));   /* not stuck in accept */
    assert_int_equal(acc.calls, 0);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(c >= 0);
    assert_int_equal(connect(c, (struct sockaddr *)&addr, sizeof addr), 0);   /* blocking too */
    assert_true(tu_run_until_count(loop, &acc.calls, 1, 2000));
    assert_true(acc.res >= 0);
    int srv = acc.res;

    /* a read op on the blocking client socket waits without blocking the loop */
    char buf[16] = { 0 };
    rec_t rd = { 0 }, wr = { 0 };
    iop_prep_read(&rd.op, c, buf, sizeof buf, -1, rec_cb, &rd);
    assert_int_equal(iop_submit(loop, &rd.op), 0);
    int seen = count_cb_timer;
    assert_true(tu_run_until_count(loop, &count_cb_timer, seen + 3, 2000));
    assert_int_equal(rd.calls, 0);
    iop_prep_write(&wr.op, srv, "block", 5, -1, rec_cb, &wr);
    assert_int_equal(iop_submit(loop, &wr.op), 0);
    assert_true(tu_run_until_count(loop, &rd.calls, 1, 2000));
    assert_true(tu_run_until_count(loop, &wr.calls, 1, 2000));
    assert_int_equal(wr.res, 5);
    assert_int_equal(rd.res, 5);
    assert_memory_equal(buf, "block", 5);

    iop_timer_stop(&tick);
    conf_close(loop, c);
    conf_close(loop, srv);
    conf_close(loop, lfd);
    iop_loop_destroy(loop);
}

/* IOP_OPT_POLL_FIRST asked for by the caller, on every kind it names and on a read
 * of a regular file (which nothing can wait on): each completes with its data. */
void test_poll_first_asked(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    char rb[8] = { 0 }, mb[8] = { 0 }, fb[8] = { 0 };
    struct iovec siov = { .iov_base = "msg", .iov_len = 3 }, riov = { .iov_base = mb, .iov_len = sizeof mb };
    struct msghdr smsg = { .msg_iov = &siov, .msg_iovlen = 1 }, rmsg = { .msg_iov = &riov, .msg_iovlen = 1 };
    rec_t rv = { 0 }, sd = { 0 }, rm = { 0 }, sm = { 0 }, fr = { 0 };

    /* recv first, with nothing there: it waits for the send */
    iop_prep_recv(&rv.op, s[1], rb, sizeof rb, 0, rec_cb, &rv);
    rv.op.opts |= IOP_OPT_POLL_FIRST;
    assert_int_equal(iop_submit(loop, &rv.op), 0);
    tu_run_nowait(loop, 1);
    assert_int_equal(rv.calls, 0);
    iop_prep_send(&sd.op, s[0], "poll", 4, 0, rec_cb, &sd);
    sd.op.opts |= IOP_OPT_POLL_FIRST;
    assert_int_equal(iop_submit(loop, &sd.op), 0);
    assert_true(tu_run_until_count(loop, &rv.calls, 1, 2000));
    assert_true(tu_run_until_count(loop, &sd.calls, 1, 2000));
    assert_int_equal(sd.res, 4);
    assert_int_equal(rv.res, 4);
    assert_memory_equal(rb, "poll", 4);

    iop_prep_recvmsg(&rm.op, s[0], &rmsg, 0, rec_cb, &rm);
    rm.op.opts |= IOP_OPT_POLL_FIRST;
    iop_prep_sendmsg(&sm.op, s[1], &smsg, 0, rec_cb, &sm);
    sm.op.opts |= IOP_OPT_POLL_FIRST;
    assert_int_equal(iop_submit(loop, &rm.op), 0);
    assert_int_equal(iop_submit(loop, &sm.op), 0);
    assert_true(tu_run_until_count(loop, &rm.calls, 1, 2000));
    assert_true(tu_run_until_count(loop, &sm.calls, 1, 2000));
    assert_int_equal(sm.res, 3);
    assert_int_equal(rm.res, 3);
    assert_memory_equal(mb, "msg", 3);

    int f = tu_tmpfile("filedata", 8);
    iop_prep_read(&fr.op, f, fb, sizeof fb, 0, rec_cb, &fr);
    fr.op.opts |= IOP_OPT_POLL_FIRST;
    assert_int_equal(iop_submit(loop, &fr.op), 0);
    assert_true(tu_run_until_count(loop, &fr.calls, 1, 2000));
    assert_int_equal(fr.res, 8);
    assert_memory_equal(fb, "filedata", 8);

    conf_close(loop, f);
    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

/* iop_loop_opts_t.busy_poll_us: the loop spins with zero timeouts before sleeping,
 * but never past a timer due sooner than the spin would end, and it still delivers
 * I/O that arrives while it spins or sleeps. */
void test_busy_poll(void **state)
{
    (void)state;
    iop_loop_opts_t o = { .size = sizeof o, .busy_poll_us = 5000000 };   /* a 5 s spin */
    iop_loop_t *loop = tu_loop_new_opts(&o);
    iop_timer_t t = { 0 };
    count_cb_timer = 0;
    uint64_t t0 = tu_clock_ns();
    iop_update_time(loop);   /* the timer counts from the loop's clock: no older than t0 */
    assert_int_equal(iop_timer_start(loop, &t, 5 * MS, 0, count_timer), 0);
    assert_true(tu_run_until_count(loop, &count_cb_timer, 1, 8000));
    uint64_t took = tu_clock_ns() - t0;
    assert_true(took >= 5 * MS);
    assert_true(took < 2500 * MS);   /* cut at the timer, not at the end of the spin */

    int s[2];
    tu_tcp_pair(s);
    char buf[8] = { 0 };
    rec_t r = { 0 };
    iop_prep_recv(&r.op, s[1], buf, sizeof buf, 0, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    tu_run_nowait(loop, 1);
    assert_int_equal(r.calls, 0);
    assert_int_equal(send(s[0], "spin", 4, 0), 4);
    assert_true(tu_run_until_count(loop, &r.calls, 1, 2000));
    assert_int_equal(r.res, 4);
    assert_memory_equal(buf, "spin", 4);

    iop_loop_stats_t st;
    iop_loop_get_stats(loop, &st);
    assert_true(st.polls > 0);
    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

static unsigned file_revents;
static int file_calls;
static void file_watch_cb(iop_watch_t *w, unsigned revents)
{
    file_revents |= revents;
    if (++file_calls >= 2)
        iop_watch_stop(w);
}

/* A watch on a regular file: epoll refuses it at start (-EPERM) and the watch stays
 * inactive; every other backend calls a regular file always ready, as poll(2) does. */
void test_watch_regular_file(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int f = tu_tmpfile("x", 1);
    iop_watch_t w = { 0 };
    file_revents = 0;
    file_calls = 0;
    int r = iop_watch_start(loop, &w, f, IOP_READ | IOP_WRITE, file_watch_cb);
    if (strcmp(iop_loop_backend(loop), "epoll") == 0) {
        assert_int_equal(r, -EPERM);
        assert_non_null(strstr(iop_last_error(), "refused"));
        /* nothing was left behind: the fd takes a watch of another kind of file later,
         * and the loop has nothing pending */
        assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);
    } else {
        assert_int_equal(r, 0);
        assert_true(tu_run_until_count(loop, &file_calls, 2, 2000));
        assert_true(file_revents & IOP_READ);
        assert_true(file_revents & IOP_WRITE);
        assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);
    }
    conf_close(loop, f);
    iop_loop_destroy(loop);
}

/* A loop destroyed with a timer, a timeout op and an op with a deadline still armed
 * leaves every record idle: the caller may reuse them on another loop. */
void test_destroy_with_armed_records(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    char buf[8];
    iop_timer_t near = { 0 }, far = { 0 };
    rec_t to = { 0 }, r = { 0 }, farto = { 0 };
    /* near: in the timer heap's near tier (under 1 s), yet not due before the loop
     * is destroyed, even under valgrind on a busy machine */
    assert_int_equal(iop_timer_start(loop, &near, 500 * MS, 0, count_timer), 0);
    assert_int_equal(iop_timer_start(loop, &far, 60000 * MS, 0, count_timer), 0);
    iop_prep_timeout(&to.op, 400 * MS, rec_cb, &to);
    assert_int_equal(iop_submit(loop, &to.op), 0);
    iop_prep_timeout(&farto.op, 30000 * MS, rec_cb, &farto);
    assert_int_equal(iop_submit(loop, &farto.op), 0);
    iop_prep_recv(&r.op, s[1], buf, sizeof buf, 0, rec_cb, &r);
    iop_op_set_deadline(&r.op, iop_now(loop) + 20000 * MS);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    tu_run_nowait(loop, 2);
    assert_true(iop_timer_active(&near) && iop_timer_active(&far));
    assert_true(iop_op_in_flight(&to.op) && iop_op_in_flight(&r.op) && iop_op_in_flight(&farto.op));
    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
    assert_false(iop_timer_active(&near));
    assert_false(iop_timer_active(&far));
    assert_false(iop_op_in_flight(&to.op));
    assert_false(iop_op_in_flight(&farto.op));
    assert_false(iop_op_in_flight(&r.op));
    assert_int_equal(to.calls + r.calls + farto.calls, 0);   /* dropped without callbacks */

    /* and they work on a new loop */
    loop = tu_loop_new();
    count_cb_timer = 0;
    assert_int_equal(iop_timer_start(loop, &near, 1 * MS, 0, count_timer), 0);
    iop_prep_timeout(&to.op, 1 * MS, rec_cb, &to);
    assert_int_equal(iop_submit(loop, &to.op), 0);
    assert_true(tu_run_until_count(loop, &to.calls, 1, 2000));
    assert_true(tu_run_until_count(loop, &count_cb_timer, 1, 2000));
    assert_int_equal(to.res, 0);
    iop_loop_destroy(loop);
}

static unsigned reg_revents;
static int reg_calls;
static void reg_watch_cb(iop_watch_t *w, unsigned revents)
{
    reg_revents = revents;
    reg_calls++;
    iop_watch_modify(w, 0);   /* once per arming */
}

/* A registered fd (io_uring: a fixed file; elsewhere a no-op) registered a second
 * time is still registered once, and a watch on it works in both directions next to
 * ops; iop_fd_close then releases it. */
void test_registered_fd_watch(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    int r = iop_fd_register(loop, s[1]);
    assert_true(r == 0 || r == 1);
    assert_int_equal(iop_fd_register(loop, s[1]), r);   /* again: same answer, no second slot */
    iop_watch_t w = { 0 };
    reg_calls = 0;
    reg_revents = 0;
    assert_int_equal(iop_watch_start(loop, &w, s[1], IOP_READ, reg_watch_cb), 0);
    tu_run_nowait(loop, 2);
    assert_int_equal(reg_calls, 0);
    assert_int_equal(send(s[0], "reg", 3, 0), 3);
    assert_true(tu_run_until_count(loop, &reg_calls, 1, 2000));
    assert_true(reg_revents & IOP_READ);
    char buf[8] = { 0 };
    rec_t rcv = { 0 };
    iop_prep_recv(&rcv.op, s[1], buf, sizeof buf, 0, rec_cb, &rcv);
    assert_int_equal(iop_submit(loop, &rcv.op), 0);
    assert_true(tu_run_until_count(loop, &rcv.calls, 1, 2000));
    assert_int_equal(rcv.res, 3);
    assert_memory_equal(buf, "reg", 3);

    assert_int_equal(iop_watch_modify(&w, IOP_WRITE), 0);
    assert_true(tu_run_until_count(loop, &reg_calls, 2, 2000));
    assert_true(reg_revents & IOP_WRITE);
    iop_watch_stop(&w);

    assert_int_equal(iop_fd_close(loop, s[1]), 0);
    /* the peer sees the close: the registration did not keep the socket open */
    char c;
    ssize_t n = -1;
    for (int tries = 0; tries < 2000; tries++) {
        n = recv(s[0], &c, 1, MSG_DONTWAIT);
        if (n >= 0 || errno != EAGAIN)
            break;
        tu_sleep_ms(1);
    }
    assert_int_equal(n, 0);
    conf_close(loop, s[0]);
    iop_loop_destroy(loop);
}
