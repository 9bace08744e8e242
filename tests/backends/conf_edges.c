/* Edges of the kernel-bypass-aware options, on every backend: a multishot series
 * the kernel ends by itself and the core rearms, a cancel or a deadline while the
 * next result already waits, a fixed-file slot freed by a close op, zero-copy
 * where the kernel has none, buffers given back twice, and files no backend can
 * poll. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include "conformance.h"

#define MS 1000000ull

/* A multishot recv_buf that gathers its bytes (releasing each buffer) and counts
 * its callbacks; optionally feeds its peer back what it got, so the socket always
 * has data. */
typedef struct stream {
    iop_op_t op;
    iop_loop_t *loop;
    unsigned char got[8192];
    size_t len;
    long calls, finals, zeros;
    int last;             /* the final result */
    int feed_fd;          /* >= 0: send the bytes back into this peer */
} stream_t;

static void stream_cb(iop_op_t *op, int res)
{
    stream_t *s = op->data;
    s->calls++;
    if (res > 0) {
        size_t room = sizeof s->got - s->len, n = (size_t)res < room ? (size_t)res : room;
        memcpy(s->got + s->len, op->u.pooled.buf, n);
        s->len += n;
        if (s->feed_fd >= 0)
            (void)send(s->feed_fd, op->u.pooled.buf, (size_t)res, MSG_DONTWAIT);
        iop_buf_release(s->loop, op->u.pooled.bid);
    }
    if (res == 0)
        s->zeros++;
    if (!iop_op_more(op)) {
        s->finals++;
        s->last = res;
    }
}

/* Reads exactly n bytes from a peer socket, waiting up to 3 s for them (loopback
 * TCP may pace a segment out a little later than the send returned). */
static ssize_t recv_n(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, 3000) != 1)
            break;
        ssize_t r = recv(fd, (char *)buf + got, n - got, MSG_DONTWAIT);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

static int stream_ended(void *arg) { return ((stream_t *)arg)->finals > 0; }

static int got_4k_or_ended(void *arg)
{
    stream_t *s = arg;
    return s->len >= 4096 || s->finals;
}

static int five_calls(void *arg) { return ((stream_t *)arg)->calls >= 5; }

static iop_loop_t *pool_loop(uint32_t entries, uint32_t count, uint32_t size)
{
    iop_loop_opts_t o = { .entries = entries, .buf_count = count, .buf_size = size };
    return tu_loop_new_opts(&o);
}

/* 4 KiB waiting, 64-byte buffers and a one-entry ring: the kernel ends a multishot
 * recv early (its completion queue overflows), and with a deadline each shot is
 * rearmed by the core. No shot may come back as a false end of file. */
void test_recv_buf_multishot_rearm(void **state)
{
    (void)state;
    for (int with_deadline = 0; with_deadline < 2; with_deadline++) {
        iop_loop_t *loop = pool_loop(1, 64, 64);
        int s[2];
        tu_tcp_pair(s);
        unsigned char out[4096];
        tu_fill_pattern(out, sizeof out, 7);
        assert_int_equal(send(s[0], out, sizeof out, 0), (ssize_t)sizeof out);
        stream_t st = { .loop = loop, .feed_fd = -1 };
        iop_prep_recv_buf(&st.op, s[1], 0, stream_cb, &st);
        iop_op_set_multishot(&st.op);
        if (with_deadline)
            iop_op_set_deadline(&st.op, iop_now(loop) + 5000 * MS);
        assert_int_equal(iop_submit(loop, &st.op), 0);
        assert_true(tu_run_until(loop, got_4k_or_ended, &st, 3000));
        assert_int_equal(st.finals, 0);
        assert_int_equal(st.zeros, 0);
        assert_int_equal(st.len, sizeof out);
        assert_memory_equal(st.got, out, sizeof out);
        close(s[0]);
        assert_true(tu_run_until(loop, stream_ended, &st, 3000));
        assert_int_equal(st.last, 0);
        assert_int_equal(st.zeros, 1);
        conf_close(loop, s[1]);
        iop_loop_destroy(loop);
    }
}

/* A cancel from outside the callbacks while the socket always has data: the next
 * result may already wait for its callback, yet the series ends with -ECANCELED
 * soon after, instead of running on. */
void test_recv_buf_multishot_cancel_busy(void **state)
{
    (void)state;
    iop_loop_t *loop = pool_loop(0, 512, 64);   /* never short: -ENOBUFS would end it */
    int s[2];
    tu_tcp_pair(s);
    unsigned char out[256];
    tu_fill_pattern(out, sizeof out, 3);
    assert_int_equal(send(s[0], out, sizeof out, 0), (ssize_t)sizeof out);
    stream_t st = { .loop = loop, .feed_fd = s[0] };
    iop_prep_recv_buf(&st.op, s[1], 0, stream_cb, &st);
    iop_op_set_multishot(&st.op);
    assert_int_equal(iop_submit(loop, &st.op), 0);
    assert_true(tu_run_until(loop, five_calls, &st, 3000));
    assert_int_equal(st.finals, 0);
    rec_t c = { 0 };
    iop_prep_cancel(&c.op, &st.op, rec_cb, &c);
    assert_int_equal(iop_submit(loop, &c.op), 0);
    long at_cancel = st.calls;
    assert_true(tu_run_until(loop, stream_ended, &st, 3000));
    assert_int_equal(st.last, -ECANCELED);
    assert_true(st.calls - at_cancel < 100);
    tu_run_nowait(loop, 2);
    assert_int_equal(c.calls, 1);
    assert_true(c.res == 0 || c.res == -EALREADY);
    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

/* A deadline binds even when data is always there: a multishot series ends with
 * -ETIMEDOUT at its deadline, and an op whose deadline has passed fails before it
 * is tried, data waiting or not. */
void test_deadline_with_data_waiting(void **state)
{
    (void)state;
    iop_loop_t *loop = pool_loop(0, 64, 64);
    int s[2];
    tu_tcp_pair(s);
    assert_int_equal(send(s[0], "ready", 5, 0), 5);
    char buf[16];
    rec_t r = { 0 };
    iop_prep_recv(&r.op, s[1], buf, sizeof buf, 0, rec_cb, &r);
    iop_update_time(loop);
    iop_op_set_deadline(&r.op, iop_now(loop));
    assert_int_equal(iop_submit(loop, &r.op), 0);
    tu_run_nowait(loop, 2);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.res, -ETIMEDOUT);

    stream_t st = { .loop = loop, .feed_fd = s[0] };
    iop_prep_recv_buf(&st.op, s[1], 0, stream_cb, &st);
    iop_op_set_multishot(&st.op);
    uint64_t t0 = iop_update_time(loop);
    iop_op_set_deadline(&st.op, t0 + 30 * MS);
    assert_int_equal(iop_submit(loop, &st.op), 0);
    assert_true(tu_run_until(loop, stream_ended, &st, 3000));
    assert_int_equal(st.last, -ETIMEDOUT);
    assert_true(st.calls > 1);            /* the 5 bytes went round meanwhile */
    assert_true(iop_now(loop) - t0 >= 25 * MS);
    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

/* A close op frees the fd's fixed slot only once the kernel has emptied it: a
 * socket registered right after, before the loop runs, keeps working. */
void test_register_after_close_op(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int a[2], b[2];
    tu_tcp_pair(a);
    int ra = iop_fd_register(loop, a[1]);
    assert_true(ra == 0 || ra == 1);
    rec_t cl = { 0 };
    iop_prep_close(&cl.op, a[1], rec_cb, &cl);
    assert_int_equal(iop_submit(loop, &cl.op), 0);
    tu_tcp_pair(b);
    assert_int_equal(iop_fd_register(loop, b[1]), ra);
    char buf[8];
    rec_t rv = { 0 }, sd = { 0 };
    iop_prep_recv(&rv.op, b[1], buf, sizeof buf, 0, rec_cb, &rv);
    iop_prep_send(&sd.op, b[1], "fixed", 5, 0, rec_cb, &sd);
    assert_int_equal(iop_submit(loop, &rv.op), 0);
    assert_int_equal(iop_submit(loop, &sd.op), 0);
    assert_int_equal(send(b[0], "abc", 3, 0), 3);
    assert_true(tu_run_until_count(loop, &rv.calls, 1, 3000));
    assert_true(tu_run_until_count(loop, &sd.calls, 1, 3000));
    assert_true(tu_run_until_count(loop, &cl.calls, 1, 3000));
    assert_int_equal(cl.res, 0);
    assert_int_equal(rv.res, 3);
    assert_int_equal(sd.res, 5);
    assert_int_equal(recv_n(b[0], buf, 5), 5);
    /* ... and ops after the close's chain has run, too */
    for (int i = 0; i < 2; i++) {
        rec_t again = { 0 };
        iop_prep_send(&again.op, b[1], "later", 5, 0, rec_cb, &again);
        assert_int_equal(iop_submit(loop, &again.op), 0);
        assert_true(tu_run_until_count(loop, &again.calls, 1, 3000));
        assert_int_equal(again.res, 5);
        assert_int_equal(recv_n(b[0], buf, 5), 5);
    }
    close(a[0]);
    close(b[0]);
    conf_close(loop, b[1]);
    iop_loop_destroy(loop);
}

typedef struct zc {
    iop_op_t op;
    int calls, finals, last;
} zc_t;

static void zc_cb(iop_op_t *op, int res)
{
    zc_t *z = op->data;
    z->calls++;
    if (!iop_op_more(op)) {
        z->finals++;
        z->last = res;
    } else {
        z->last = res;   /* the send's result; the notification follows */
    }
}

static int zc_ended(void *arg) { return ((zc_t *)arg)->finals > 0; }

/* Zero-copy where the kernel has none (AF_UNIX): still a send that sends. */
void test_zerocopy_send_unix(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    static unsigned char out[8192], in[8192];
    tu_fill_pattern(out, sizeof out, 11);
    zc_t z = { 0 };
    iop_prep_send(&z.op, sv[0], out, sizeof out, 0, zc_cb, &z);
    iop_op_set_zerocopy(&z.op);
    assert_int_equal(iop_submit(loop, &z.op), 0);
    assert_true(tu_run_until(loop, zc_ended, &z, 3000));
    assert_int_equal(z.finals, 1);
    assert_int_equal(recv_n(sv[1], in, sizeof in), (ssize_t)sizeof out);
    assert_memory_equal(in, out, sizeof out);
    conf_close(loop, sv[0]);
    close(sv[1]);
    iop_loop_destroy(loop);
}

/* A buffer given back twice, or one never lent, is ignored: the pool never lends
 * one buffer to two receives. */
void test_buf_release_twice(void **state)
{
    (void)state;
    iop_loop_t *loop = pool_loop(0, 4, 64);
    int s[2];
    tu_tcp_pair(s);
    iop_buf_release(loop, 3);              /* never lent */
    stream_t one = { .loop = loop, .feed_fd = -1 };
    iop_prep_recv_buf(&one.op, s[1], 0, stream_cb, &one);
    assert_int_equal(send(s[0], "x", 1, 0), 1);
    assert_int_equal(iop_submit(loop, &one.op), 0);
    assert_true(tu_run_until(loop, stream_ended, &one, 3000));
    assert_int_equal(one.last, 1);
    iop_buf_release(loop, one.op.u.pooled.bid);   /* stream_cb gave it back once */

    /* Hold every buffer: four messages, four distinct buffers, then none. */
    uint32_t held[5];
    int nheld = 0, last = 1;
    for (int i = 0; i < 5 && last > 0; i++) {
        rec_t r = { 0 };
        iop_prep_recv_buf(&r.op, s[1], 0, rec_cb, &r);
        assert_int_equal(send(s[0], "y", 1, 0), 1);
        assert_int_equal(iop_submit(loop, &r.op), 0);
        assert_true(tu_run_until_count(loop, &r.calls, 1, 3000));
        last = r.res;
        if (r.res > 0)
            held[nheld++] = r.op.u.pooled.bid;
    }
    assert_int_equal(nheld, 4);
    assert_int_equal(last, -ENOBUFS);
    for (int i = 0; i < nheld; i++)
        for (int j = i + 1; j < nheld; j++)
            assert_true(held[i] != held[j]);
    conf_close(loop, s[1]);
    close(s[0]);
    iop_loop_destroy(loop);
}

/* Files no backend can poll (/dev/null, /dev/zero: epoll refuses them with EPERM)
 * are always ready, as poll(2) says: a read, a write and a POLL_FIRST recv-style
 * wait complete at once, in order, on every backend. */
void test_unpollable_device(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC), zero_fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    assert_true(null_fd >= 0 && zero_fd >= 0);
    char buf[64], out[32] = "to nowhere";
    memset(buf, 'x', sizeof buf);
    rec_t rd = { 0 }, wr = { 0 }, rd2 = { 0 }, z = { 0 };
    iop_prep_read(&rd.op, null_fd, buf, sizeof buf, -1, rec_cb, &rd);
    iop_prep_write(&wr.op, null_fd, out, sizeof out, -1, rec_cb, &wr);
    iop_prep_read(&rd2.op, null_fd, buf, sizeof buf, -1, rec_cb, &rd2);
    iop_prep_read(&z.op, zero_fd, buf, sizeof buf, -1, rec_cb, &z);
    assert_int_equal(iop_submit(loop, &rd.op), 0);
    assert_int_equal(iop_submit(loop, &wr.op), 0);
    assert_int_equal(iop_submit(loop, &rd2.op), 0);
    assert_int_equal(iop_submit(loop, &z.op), 0);
    assert_true(tu_run_until_count(loop, &z.calls, 1, 3000));
    assert_true(tu_run_until_count(loop, &rd2.calls, 1, 3000));
    assert_int_equal(rd.res, 0);                  /* end of file */
    assert_int_equal(wr.res, (int)sizeof out);
    assert_int_equal(rd2.res, 0);
    assert_true(rd.order < rd2.order);          /* in the order submitted */
    assert_int_equal(z.res, (int)sizeof buf);
    assert_int_equal(buf[0], 0);
    /* and again, once the loop knows what the file is */
    rec_t again = { 0 };
    iop_prep_write(&again.op, null_fd, out, sizeof out, -1, rec_cb, &again);
    assert_int_equal(iop_submit(loop, &again.op), 0);
    assert_true(tu_run_until_count(loop, &again.calls, 1, 3000));
    assert_int_equal(again.res, (int)sizeof out);
    conf_close(loop, null_fd);
    conf_close(loop, zero_fd);
    iop_loop_destroy(loop);
}

/* A socket the loop saw under one number, forgotten, then used under another (a
 * dup, the first number closed): the loop serves the new number. On sigio the
 * kernel kept naming the old number in every signal, and the op never completed. */
void test_dup_after_forget(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    char buf[16];
    rec_t r = { 0 };
    iop_prep_recv(&r.op, s[1], buf, sizeof buf, 0, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_int_equal(send(s[0], "one", 3, 0), 3);
    assert_true(tu_run_until_count(loop, &r.calls, 1, 3000));
    assert_int_equal(r.res, 3);
    iop_fd_forget(loop, s[1]);
    int y = dup(s[1]);
    assert_true(y >= 0);
    close(s[1]);
    rec_t r2 = { 0 };
    iop_prep_recv(&r2.op, y, buf, sizeof buf, 0, rec_cb, &r2);
    assert_int_equal(iop_submit(loop, &r2.op), 0);
    tu_run_nowait(loop, 2);
    assert_int_equal(send(s[0], "two", 3, 0), 3);
    assert_true(tu_run_until_count(loop, &r2.calls, 1, 3000));
    assert_int_equal(r2.res, 3);
    conf_close(loop, y);
    close(s[0]);
    iop_loop_destroy(loop);
}

/* A multishot recv_buf whose next result already waits (read by a readiness backend,
 * or in a CQE that beats the backend's cancel) when its fd is forgotten: the series
 * ends there. Started again, it read the rest of the old socket after the forget and
 * then, once the number was reused, another connection's bytes. */
void test_forget_ends_waiting_multishot(void **state)
{
    (void)state;
    iop_loop_t *loop = pool_loop(0, 4, 512);
    int s[2];
    tu_tcp_pair(s);
    static char big[65536];
    memset(big, 'A', sizeof big);
    assert_int_equal(send(s[0], big, sizeof big, 0), (ssize_t)sizeof big);
    stream_t st = { .loop = loop, .feed_fd = -1 };
    iop_prep_recv_buf(&st.op, s[1], 0, stream_cb, &st);
    iop_op_set_multishot(&st.op);
    /* a deadline: in kernel-deadline mode the core rearms every shot itself */
    iop_op_set_deadline(&st.op, iop_now(loop) + 10000 * MS);
    assert_int_equal(iop_submit(loop, &st.op), 0);
    iop_fd_forget(loop, s[1]);
    assert_true(tu_run_until(loop, stream_ended, &st, 3000));
    /* what was already read may come (io_uring posts every CQE its recv made before
     * the cancel: up to the pool), then the end; never the whole socket */
    assert_true(st.len <= 4 * 512);
    assert_true(st.last == -ECANCELED || st.last == -ENOBUFS);
    assert_false(iop_op_in_flight(&st.op));

    close(s[1]);
    close(s[0]);
    int t[2];
    tu_tcp_pair(t);   /* likely the same numbers again */
    size_t before = st.len;
    long calls = st.calls;
    assert_int_equal(send(t[0], "other", 5, 0), 5);
    tu_run_for(loop, 50);
    assert_int_equal(st.calls, calls);
    assert_int_equal(st.len, before);
    conf_close(loop, t[1]);
    close(t[0]);
    iop_loop_destroy(loop);
}
