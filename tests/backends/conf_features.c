/* The kernel-bypass-aware options, on every backend: multishot accept and recv,
 * receives into the loop's pool, zero-copy send, registered fds, and a completion
 * burst larger than a tiny queue. Where a backend lacks a feature natively the
 * core must give the same contract, so the assertions do not depend on caps. */
#include <arpa/inet.h>
#include <stdio.h>
#include <sys/socket.h>
#include "conformance.h"

#define MS 1000000ull

/* Remembers every callback of a multi-callback op. */
typedef struct multi {
    iop_op_t op;
    int calls, finals;
    int res[64];
    int more[64];
    uint32_t bid[64];
    char data[64][32];
    iop_loop_t *loop;
    int release;          /* give pool buffers back in the callback */
    int cancel_after;     /* submit a cancel of itself at this call (0 = never) */
    iop_op_t cancel;
    int cancel_res;
} multi_t;

static void cancel_cb(iop_op_t *op, int res)
{
    multi_t *m = op->data;
    m->cancel_res = res;
}

static void multi_cb(iop_op_t *op, int res)
{
    multi_t *m = op->data;
    assert_true(m->calls < 64);
    int i = m->calls++;
    m->res[i] = res;
    m->more[i] = iop_op_more(op);
    if (!m->more[i])
        m->finals++;
    assert_int_equal(iop_op_in_flight(op), m->more[i] ? 1 : 0);
    if (op->kind == IOP_OP_RECV_BUF && res > 0) {
        assert_non_null(op->u.pooled.buf);
        assert_ptr_equal(op->u.pooled.buf, iop_buf_addr(m->loop, op->u.pooled.bid));
        m->bid[i] = op->u.pooled.bid;
        memcpy(m->data[i], op->u.pooled.buf, res < 31 ? (size_t)res : 31);
        if (m->release)
            iop_buf_release(m->loop, op->u.pooled.bid);
    }
    if (m->cancel_after && m->calls == m->cancel_after && m->more[i]) {
        iop_prep_cancel(&m->cancel, op, cancel_cb, m);
        assert_int_equal(iop_submit(m->loop, &m->cancel), 0);
    }
}

static int finals_reached(void *arg)
{
    return ((multi_t *)arg)->finals > 0;
}

/* One multishot accept serves several connections, one callback each with
 * "more", until it is cancelled: then exactly one last callback. */
void test_multishot_accept(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    struct sockaddr_in addr;
    int lfd = tu_tcp_listener(&addr, 16);
    multi_t m = { .loop = loop };
    iop_prep_accept(&m.op, lfd, NULL, NULL, multi_cb, &m);
    iop_op_set_multishot(&m.op);
    assert_int_equal(iop_submit(loop, &m.op), 0);

    int clients[4];
    for (int i = 0; i < 4; i++) {
        clients[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_int_equal(connect(clients[i], (struct sockaddr *)&addr, sizeof addr), 0);
    }
    assert_true(tu_run_until_count(loop, &m.calls, 4, 3000));
    for (int i = 0; i < 4; i++) {
        assert_true(m.res[i] >= 0);
        assert_true(m.more[i]);
        conf_close(loop, m.res[i]);
    }
    assert_true(iop_op_in_flight(&m.op));
    rec_t c = { 0 };
    iop_prep_cancel(&c.op, &m.op, rec_cb, &c);
    assert_int_equal(iop_submit(loop, &c.op), 0);
    assert_true(tu_run_until(loop, finals_reached, &m, 3000));
    assert_int_equal(m.calls, 5);
    assert_int_equal(m.res[4], -ECANCELED);
    assert_false(m.more[4]);
    assert_false(iop_op_in_flight(&m.op));
    tu_run_nowait(loop, 2);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.res, 0);
    for (int i = 0; i < 4; i++)
        close(clients[i]);
    conf_close(loop, lfd);
    iop_loop_destroy(loop);
}

static iop_loop_t *pool_loop(uint32_t count, uint32_t size)
{
    iop_loop_opts_t o = { .buf_count = count, .buf_size = size };
    return tu_loop_new_opts(&o);
}

/* recv_buf: the data lands in a pool buffer named by the op; end of file is 0. */
void test_recv_buf_single(void **state)
{
    (void)state;
    iop_loop_t *loop = pool_loop(4, 64);
    assert_int_equal(iop_buf_size(loop), 64);
    int s[2];
    tu_tcp_pair(s);
    multi_t m = { .loop = loop, .release = 1 };
    iop_prep_recv_buf(&m.op, s[1], 0, multi_cb, &m);
    assert_int_equal(iop_submit(loop, &m.op), 0);
    tu_run_nowait(loop, 2);
    assert_int_equal(m.calls, 0);            /* nothing to read yet */
    assert_int_equal(send(s[0], "pooled", 6, 0), 6);
    assert_true(tu_run_until(loop, finals_reached, &m, 3000));
    assert_int_equal(m.res[0], 6);
    assert_memory_equal(m.data[0], "pooled", 6);
    assert_true(m.bid[0] < 4);

    close(s[0]);
    m.finals = 0;
    iop_prep_recv_buf(&m.op, s[1], 0, multi_cb, &m);
    assert_int_equal(iop_submit(loop, &m.op), 0);
    assert_true(tu_run_until(loop, finals_reached, &m, 3000));
    assert_int_equal(m.res[1], 0);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

/* Multishot recv_buf: every arrival is one callback with "more"; the peer's close
 * ends it with 0. The bytes come in order. */
void test_recv_buf_multishot(void **state)
{
    (void)state;
    iop_loop_t *loop = pool_loop(8, 64);
    int s[2];
    tu_tcp_pair(s);
    multi_t m = { .loop = loop, .release = 1 };
    iop_prep_recv_buf(&m.op, s[1], 0, multi_cb, &m);
    iop_op_set_multishot(&m.op);
    assert_int_equal(iop_submit(loop, &m.op), 0);
    const char *msgs[3] = { "one", "two", "three" };
    for (int i = 0; i < 3; i++) {
        assert_int_equal(send(s[0], msgs[i], strlen(msgs[i]), 0), (ssize_t)strlen(msgs[i]));
        assert_true(tu_run_until_count(loop, &m.calls, i + 1, 3000));
        assert_int_equal(m.res[i], (int)strlen(msgs[i]));
        assert_memory_equal(m.data[i], msgs[i], strlen(msgs[i]));
        assert_true(m.more[i]);
    }
    close(s[0]);
    assert_true(tu_run_until(loop, finals_reached, &m, 3000));
    assert_int_equal(m.calls, 4);
    assert_int_equal(m.res[3], 0);
    assert_false(m.more[3]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

/* An exhausted pool ends a multishot recv with -ENOBUFS and loses nothing: the
 * bytes wait in the socket until buffers come back. */
void test_recv_buf_pool_exhausted(void **state)
{
    (void)state;
    iop_loop_t *loop = pool_loop(2, 64);
    int s[2];
    tu_tcp_pair(s);
    multi_t m = { .loop = loop, .release = 0 };
    iop_prep_recv_buf(&m.op, s[1], 0, multi_cb, &m);
    iop_op_set_multishot(&m.op);
    assert_int_equal(iop_submit(loop, &m.op), 0);
    const char *msgs[3] = { "aa", "bbb", "cccc" };
    for (int i = 0; i < 2; i++) {
        assert_int_equal(send(s[0], msgs[i], strlen(msgs[i]), 0), (ssize_t)strlen(msgs[i]));
        assert_true(tu_run_until_count(loop, &m.calls, i + 1, 3000));
    }
    assert_int_equal(send(s[0], msgs[2], 4, 0), 4);
    assert_true(tu_run_until(loop, finals_reached, &m, 3000));
    assert_int_equal(m.calls, 3);
    assert_int_equal(m.res[2], -ENOBUFS);
    assert_false(m.more[2]);
    assert_true(m.bid[0] != m.bid[1]);

    iop_buf_release(loop, m.bid[0]);
    iop_buf_release(loop, m.bid[1]);
    m.finals = 0;
    m.release = 1;
    iop_prep_recv_buf(&m.op, s[1], 0, multi_cb, &m);
    assert_int_equal(iop_submit(loop, &m.op), 0);
    assert_true(tu_run_until(loop, finals_reached, &m, 3000));
    assert_int_equal(m.res[3], 4);
    assert_memory_equal(m.data[3], "cccc", 4);
    close(s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

/* A multishot op cancelled from its own callback: that callback's result stands,
 * one last callback follows with -ECANCELED. */
void test_multishot_cancel_in_callback(void **state)
{
    (void)state;
    iop_loop_t *loop = pool_loop(8, 64);
    int s[2];
    tu_tcp_pair(s);
    multi_t m = { .loop = loop, .release = 1, .cancel_after = 1, .cancel_res = 1 };
    iop_prep_recv_buf(&m.op, s[1], 0, multi_cb, &m);
    iop_op_set_multishot(&m.op);
    assert_int_equal(iop_submit(loop, &m.op), 0);
    assert_int_equal(send(s[0], "x", 1, 0), 1);
    assert_true(tu_run_until(loop, finals_reached, &m, 3000));
    tu_run_nowait(loop, 2);
    assert_int_equal(m.res[0], 1);
    assert_int_equal(m.calls, 2);
    assert_int_equal(m.res[1], -ECANCELED);
    assert_int_equal(m.cancel_res, 0);
    close(s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

/* Zero-copy send: however many callbacks, the last one says the buffer is the
 * caller's again, and the peer gets every byte reported sent. */
void test_zerocopy_send(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    static char out[48 * 1024], in[48 * 1024];
    tu_fill_pattern(out, sizeof out, 7);
    multi_t m = { .loop = loop };
    iop_prep_send(&m.op, s[0], out, sizeof out, 0, multi_cb, &m);
    iop_op_set_zerocopy(&m.op);
    assert_int_equal(iop_submit(loop, &m.op), 0);
    assert_true(tu_run_until(loop, finals_reached, &m, 3000));
    assert_true(m.calls == 1 || m.calls == 2);
    int sent = m.res[0];
    assert_true(sent > 0);
    if (m.calls == 2) {
        assert_true(m.more[0]);
        assert_false(m.more[1]);
        assert_int_equal(m.res[1], 0);
        assert_true(iop_loop_caps(loop) & IOP_CAP_ZEROCOPY_SEND);
    }
    size_t got = 0;
    for (int tries = 0; got < (size_t)sent && tries < 2000; tries++) {
        ssize_t n = recv(s[1], in + got, sizeof in - got, MSG_DONTWAIT);
        if (n > 0)
            got += (size_t)n;
        else
            tu_sleep_ms(1);
    }
    assert_int_equal(got, (size_t)sent);
    assert_memory_equal(in, out, got);
    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

/* Options on the wrong op, or a pool op without a pool, are refused at submit. */
void test_options_misplaced(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    char buf[8];
    rec_t r = { 0 };
    iop_prep_recv(&r.op, s[1], buf, sizeof buf, 0, rec_cb, &r);
    iop_op_set_multishot(&r.op);
    assert_int_equal(iop_submit(loop, &r.op), -EINVAL);
    iop_prep_recv(&r.op, s[1], buf, sizeof buf, 0, rec_cb, &r);
    iop_op_set_zerocopy(&r.op);
    assert_int_equal(iop_submit(loop, &r.op), -EINVAL);
    iop_prep_recv_buf(&r.op, s[1], 0, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), -EINVAL);
    assert_non_null(strstr(iop_last_error(), "pool"));
    tu_run_nowait(loop, 2);
    assert_int_equal(r.calls, 0);
    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

/* A registered fd works like any other, and close through an op releases it. */
void test_registered_fd(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    int r = iop_fd_register(loop, s[1]);
    assert_true(r == 0 || r == 1);
    assert_int_equal(r == 1, (iop_loop_caps(loop) & IOP_CAP_REGISTERED_FILES) != 0);
    char buf[16];
    rec_t rcv = { 0 }, snd = { 0 }, cls = { 0 };
    iop_prep_recv(&rcv.op, s[1], buf, sizeof buf, 0, rec_cb, &rcv);
    assert_int_equal(iop_submit(loop, &rcv.op), 0);
    assert_int_equal(send(s[0], "fixed", 5, 0), 5);
    assert_true(tu_run_until_count(loop, &rcv.calls, 1, 3000));
    assert_int_equal(rcv.res, 5);
    assert_memory_equal(buf, "fixed", 5);
    iop_prep_send(&snd.op, s[1], "back", 4, 0, rec_cb, &snd);
    assert_int_equal(iop_submit(loop, &snd.op), 0);
    assert_true(tu_run_until_count(loop, &snd.calls, 1, 3000));
    assert_int_equal(snd.res, 4);
    iop_prep_close(&cls.op, s[1], rec_cb, &cls);
    assert_int_equal(iop_submit(loop, &cls.op), 0);
    assert_true(tu_run_until_count(loop, &cls.calls, 1, 3000));
    assert_int_equal(cls.res, 0);
    /* The peer sees the close: the echo came, then end of file. */
    char back[8];
    for (int tries = 0; tries < 2000 && recv(s[0], back, 4, MSG_PEEK | MSG_DONTWAIT) < 4; tries++)
        tu_sleep_ms(1);
    assert_int_equal(recv(s[0], back, sizeof back, 0), 4);
    ssize_t n = -1;
    for (int tries = 0; tries < 2000; tries++) {
        n = recv(s[0], back, sizeof back, MSG_DONTWAIT);
        if (n >= 0 || errno != EAGAIN)
            break;
        tu_sleep_ms(1);
    }
    assert_int_equal(n, 0);
    close(s[0]);
    iop_loop_destroy(loop);
}

#define BURST 64

/* More completions at once than a tiny queue holds (entries = 4): none is lost,
 * none comes twice, each carries its own data. */
void test_completion_burst_tiny_queue(void **state)
{
    (void)state;
    iop_loop_opts_t o = { .entries = 4 };
    iop_loop_t *loop = tu_loop_new_opts(&o);
    static int pairs[BURST][2];
    static char bufs[BURST][16];
    static rec_t recs[BURST];
    for (int i = 0; i < BURST; i++) {
        tu_tcp_pair(pairs[i]);
        char msg[16];
        int len = snprintf(msg, sizeof msg, "m%03d", i);
        assert_int_equal(send(pairs[i][0], msg, (size_t)len, 0), len);
    }
    tu_sleep_ms(5);
    for (int i = 0; i < BURST; i++) {
        recs[i] = (rec_t){ 0 };
        iop_prep_recv(&recs[i].op, pairs[i][1], bufs[i], sizeof bufs[i], 0, rec_cb, &recs[i]);
        assert_int_equal(iop_submit(loop, &recs[i].op), 0);
    }
    int done = 0;
    uint64_t end = tu_clock_ms() + 5000;
    while (done < BURST && tu_clock_ms() < end) {
        tu_run_for(loop, 5);
        done = 0;
        for (int i = 0; i < BURST; i++)
            done += recs[i].calls;
    }
    tu_run_nowait(loop, 3);
    for (int i = 0; i < BURST; i++) {
        char msg[16];
        snprintf(msg, sizeof msg, "m%03d", i);
        assert_int_equal(recs[i].calls, 1);
        assert_int_equal(recs[i].res, 4);
        assert_memory_equal(bufs[i], msg, 4);
        conf_close(loop, pairs[i][1]);
        close(pairs[i][0]);
    }
    iop_loop_destroy(loop);
}

/* entries is a queue depth hint: one beyond what the kernel allows (io_uring
 * takes at most 32768) still makes a loop on the backend asked for, which runs ops. */
void test_queue_hint_beyond_kernel_limit(void **state)
{
    (void)state;
    static const uint32_t hints[] = { 32769, 1u << 20, UINT32_MAX };
    for (size_t i = 0; i < sizeof hints / sizeof hints[0]; i++) {
        iop_loop_opts_t o = { .entries = hints[i] };
        iop_loop_t *loop = tu_loop_new_opts(&o);
        int pair[2];
        tu_tcp_pair(pair);
        assert_int_equal(send(pair[0], "hint", 4, 0), 4);
        char buf[8];
        rec_t r = { 0 };
        iop_prep_recv(&r.op, pair[1], buf, sizeof buf, 0, rec_cb, &r);
        assert_int_equal(iop_submit(loop, &r.op), 0);
        uint64_t end = tu_clock_ms() + 5000;
        while (r.calls == 0 && tu_clock_ms() < end)
            tu_run_for(loop, 5);
        assert_int_equal(r.calls, 1);
        assert_int_equal(r.res, 4);
        assert_memory_equal(buf, "hint", 4);
        conf_close(loop, pair[1]);
        close(pair[0]);
        iop_loop_destroy(loop);
    }
}

/* A deadline on a multishot op ends the series: results before it come with
 * "more", then one last callback with -ETIMEDOUT; bytes that arrive later wait
 * in the socket. A zero-copy send with a deadline that does not pass completes
 * as usual. */
void test_multishot_deadline(void **state)
{
    (void)state;
    iop_loop_t *loop = pool_loop(8, 64);
    struct sockaddr_in addr;
    int lfd = tu_tcp_listener(&addr, 16);
    multi_t a = { .loop = loop };
    iop_prep_accept(&a.op, lfd, NULL, NULL, multi_cb, &a);
    iop_op_set_multishot(&a.op);
    iop_op_set_deadline(&a.op, iop_update_time(loop) + 150 * MS);
    assert_int_equal(iop_submit(loop, &a.op), 0);
    int clients[2];
    for (int i = 0; i < 2; i++) {
        clients[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_int_equal(connect(clients[i], (struct sockaddr *)&addr, sizeof addr), 0);
    }
    assert_true(tu_run_until_count(loop, &a.calls, 2, 3000));
    assert_true(a.more[0] && a.more[1]);
    assert_true(a.res[0] >= 0 && a.res[1] >= 0);
    assert_true(tu_run_until(loop, finals_reached, &a, 3000));
    assert_int_equal(a.calls, 3);
    assert_int_equal(a.res[2], -ETIMEDOUT);
    assert_false(a.more[2]);

    int srv = a.res[0];
    multi_t r = { .loop = loop, .release = 1 };
    iop_prep_recv_buf(&r.op, srv, 0, multi_cb, &r);
    iop_op_set_multishot(&r.op);
    iop_op_set_deadline(&r.op, iop_update_time(loop) + 150 * MS);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_int_equal(send(clients[0], "one", 3, 0), 3);
    assert_true(tu_run_until_count(loop, &r.calls, 1, 3000));
    assert_int_equal(r.res[0], 3);
    assert_memory_equal(r.data[0], "one", 3);
    assert_true(r.more[0]);
    assert_true(tu_run_until(loop, finals_reached, &r, 3000));
    assert_int_equal(r.calls, 2);
    assert_int_equal(r.res[1], -ETIMEDOUT);
    assert_int_equal(send(clients[0], "two", 3, 0), 3);
    tu_run_nowait(loop, 2);
    assert_int_equal(r.calls, 2);             /* over: nothing more delivered */
    char buf[8];
    rec_t p = { 0 };
    iop_prep_recv(&p.op, srv, buf, sizeof buf, 0, rec_cb, &p);
    assert_int_equal(iop_submit(loop, &p.op), 0);
    assert_true(tu_run_until_count(loop, &p.calls, 1, 3000));
    assert_int_equal(p.res, 3);
    assert_memory_equal(buf, "two", 3);

    static char out[32 * 1024];
    tu_fill_pattern(out, sizeof out, 3);
    multi_t z = { .loop = loop };
    iop_prep_send(&z.op, srv, out, sizeof out, 0, multi_cb, &z);
    iop_op_set_zerocopy(&z.op);
    iop_op_set_deadline(&z.op, iop_update_time(loop) + 2000 * MS);
    assert_int_equal(iop_submit(loop, &z.op), 0);
    assert_true(tu_run_until(loop, finals_reached, &z, 3000));
    assert_true(z.res[0] > 0);
    assert_int_equal(z.res[z.calls - 1], z.calls == 2 ? 0 : z.res[0]);
    size_t got = 0;
    static char in[32 * 1024];
    for (int tries = 0; got < (size_t)z.res[0] && tries < 2000; tries++) {
        ssize_t n = recv(clients[0], in + got, sizeof in - got, MSG_DONTWAIT);
        if (n > 0)
            got += (size_t)n;
        else
            tu_sleep_ms(1);
    }
    assert_int_equal(got, (size_t)z.res[0]);
    assert_memory_equal(in, out, got);

    for (int i = 0; i < 2; i++) {
        close(clients[i]);
        conf_close(loop, a.res[i]);
    }
    conf_close(loop, lfd);
    iop_loop_destroy(loop);
}
