/* Every op kind over real fds: TCP and UDP on 127.0.0.1, pipes, regular files. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/uio.h>
#include "conformance.h"

static int both_done(void *arg)
{
    rec_t **r = arg;
    return r[0]->calls > 0 && r[1]->calls > 0;
}

/* Submits a and b, runs until both have completed, checks each ran once. */
static void run_pair(iop_loop_t *loop, rec_t *a, rec_t *b)
{
    assert_int_equal(iop_submit(loop, &a->op), 0);
    assert_int_equal(iop_submit(loop, &b->op), 0);
    rec_t *both[2] = { a, b };
    assert_true(tu_run_until(loop, both_done, both, 3000));
    assert_int_equal(a->calls, 1);
    assert_int_equal(b->calls, 1);
}

static uint16_t local_port(int fd)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    return ntohs(a.sin_port);
}

void test_op_tcp_accept_connect_send_recv(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    struct sockaddr_in addr;
    int lfd = tu_tcp_listener(&addr, 16);
    int c = tu_tcp_socket();

    struct sockaddr_in peer = { 0 };
    socklen_t peerlen = sizeof peer;
    rec_t acc = { 0 }, con = { 0 };
    iop_prep_accept(&acc.op, lfd, (struct sockaddr *)&peer, &peerlen, rec_cb, &acc);
    iop_prep_connect(&con.op, c, (struct sockaddr *)&addr, sizeof addr, rec_cb, &con);
    run_pair(loop, &acc, &con);
    assert_int_equal(con.res, 0);
    assert_true(acc.res >= 0);
    int s = acc.res;
    /* The accepted fd is non-blocking and close-on-exec, and the peer address is the
     * connecting socket's. */
    assert_true(fcntl(s, F_GETFL) & O_NONBLOCK);
    assert_true(fcntl(s, F_GETFD) & FD_CLOEXEC);
    assert_int_equal(peerlen, sizeof peer);
    assert_int_equal(peer.sin_family, AF_INET);
    assert_int_equal(ntohs(peer.sin_port), local_port(c));

    /* send → recv, then the other way with write → read on the same sockets. */
    char buf[64] = { 0 };
    rec_t snd = { 0 }, rcv = { 0 };
    iop_prep_send(&snd.op, c, "hello world", 11, 0, rec_cb, &snd);
    iop_prep_recv(&rcv.op, s, buf, sizeof buf, 0, rec_cb, &rcv);
    run_pair(loop, &rcv, &snd);
    assert_int_equal(snd.res, 11);
    assert_int_equal(rcv.res, 11);
    assert_memory_equal(buf, "hello world", 11);

    rec_t wr = { 0 }, rd = { 0 };
    memset(buf, 0, sizeof buf);
    iop_prep_read(&rd.op, c, buf, sizeof buf, -1, rec_cb, &rd);
    iop_prep_write(&wr.op, s, "back", 4, -1, rec_cb, &wr);
    run_pair(loop, &rd, &wr);
    assert_int_equal(wr.res, 4);
    assert_int_equal(rd.res, 4);
    assert_memory_equal(buf, "back", 4);

    /* accept without an address buffer. */
    int c2 = tu_tcp_socket();
    rec_t acc2 = { 0 }, con2 = { 0 };
    iop_prep_accept(&acc2.op, lfd, NULL, NULL, rec_cb, &acc2);
    iop_prep_connect(&con2.op, c2, (struct sockaddr *)&addr, sizeof addr, rec_cb, &con2);
    run_pair(loop, &con2, &acc2);
    assert_int_equal(con2.res, 0);
    assert_true(acc2.res >= 0);

    conf_close(loop, acc2.res);
    conf_close(loop, c2);
    conf_close(loop, s);
    conf_close(loop, c);
    conf_close(loop, lfd);
    iop_loop_destroy(loop);
}

void test_op_pipe_read_write(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int p[2];
    tu_pipe(p);
    char buf[32] = { 0 };
    rec_t rd = { 0 }, wr = { 0 };
    /* The read waits first, then the write feeds it. */
    iop_prep_read(&rd.op, p[0], buf, sizeof buf, -1, rec_cb, &rd);
    assert_int_equal(iop_submit(loop, &rd.op), 0);
    tu_run_nowait(loop, 2);
    assert_int_equal(rd.calls, 0);
    iop_prep_write(&wr.op, p[1], "through a pipe", 14, -1, rec_cb, &wr);
    assert_int_equal(iop_submit(loop, &wr.op), 0);
    assert_true(tu_run_until_count(loop, &rd.calls, 1, 2000));
    assert_int_equal(wr.calls, 1);
    assert_int_equal(wr.res, 14);
    assert_int_equal(rd.res, 14);
    assert_memory_equal(buf, "through a pipe", 14);

    /* A write bigger than the pipe takes what fits; the rest is the caller's. */
    size_t big = 1u << 20;
    char *data = malloc(big);
    assert_non_null(data);
    memset(data, 'z', big);
    iop_prep_write(&wr.op, p[1], data, big, -1, rec_cb, &wr);
    assert_int_equal(iop_submit(loop, &wr.op), 0);
    assert_true(tu_run_until_count(loop, &wr.calls, 2, 2000));
    assert_true(wr.res > 0);
    assert_true((size_t)wr.res < big);
    free(data);

    /* Closing the write end: a read sees end of file after the data. */
    conf_close(loop, p[1]);
    size_t total = 0;
    char chunk[8192];
    for (int i = 0; i < 1000; i++) {
        int want = rd.calls + 1;
        iop_prep_read(&rd.op, p[0], chunk, sizeof chunk, -1, rec_cb, &rd);
        assert_int_equal(iop_submit(loop, &rd.op), 0);
        assert_true(tu_run_until_count(loop, &rd.calls, want, 2000));
        assert_true(rd.res >= 0);
        if (rd.res == 0)
            break;
        assert_int_equal(chunk[0], 'z');
        total += (size_t)rd.res;
    }
    assert_int_equal(rd.res, 0);
    assert_int_equal(total, (size_t)wr.res);

    conf_close(loop, p[0]);
    iop_loop_destroy(loop);
}

void test_op_file_read_write(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    const char text[] = "0123456789abcdef";
    int fd = tu_tmpfile(text, 16);
    char buf[32] = { 0 };
    rec_t r = { 0 };

    iop_prep_read(&r.op, fd, buf, sizeof buf, 4, rec_cb, &r);   /* pread at 4 */
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_true(tu_run_until_count(loop, &r.calls, 1, 2000));
    assert_int_equal(r.res, 12);
    assert_memory_equal(buf, text + 4, 12);

    iop_prep_write(&r.op, fd, "XY", 2, 8, rec_cb, &r);          /* pwrite at 8 */
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_true(tu_run_until_count(loop, &r.calls, 2, 2000));
    assert_int_equal(r.res, 2);

    memset(buf, 0, sizeof buf);
    iop_prep_read(&r.op, fd, buf, 10, -1, rec_cb, &r);          /* file position: 0 */
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_true(tu_run_until_count(loop, &r.calls, 3, 2000));
    assert_int_equal(r.res, 10);
    assert_memory_equal(buf, "01234567XY", 10);
    assert_int_equal(lseek(fd, 0, SEEK_CUR), 10);

    iop_prep_read(&r.op, fd, buf, sizeof buf, 100, rec_cb, &r); /* past the end */
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_true(tu_run_until_count(loop, &r.calls, 4, 2000));
    assert_int_equal(r.res, 0);

    conf_close(loop, fd);
    iop_loop_destroy(loop);
}

void test_op_udp_sendmsg_recvmsg(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    struct sockaddr_in aaddr, baddr;
    int a = tu_udp_socket(&aaddr);
    int b = tu_udp_socket(&baddr);

    char in[32] = { 0 };
    struct sockaddr_in from = { 0 };
    struct iovec riov = { in, sizeof in };
    struct msghdr rmsg = { .msg_name = &from, .msg_namelen = sizeof from,
                           .msg_iov = &riov, .msg_iovlen = 1 };
    rec_t rcv = { 0 }, snd = { 0 };
    iop_prep_recvmsg(&rcv.op, b, &rmsg, 0, rec_cb, &rcv);
    assert_int_equal(iop_submit(loop, &rcv.op), 0);
    tu_run_nowait(loop, 2);
    assert_int_equal(rcv.calls, 0);   /* nothing sent yet */

    /* Two iovecs, one datagram, addressed with msg_name. */
    struct iovec siov[2] = { { "data", 4 }, { "gram", 4 } };
    struct msghdr smsg = { .msg_name = &baddr, .msg_namelen = sizeof baddr,
                           .msg_iov = siov, .msg_iovlen = 2 };
    iop_prep_sendmsg(&snd.op, a, &smsg, 0, rec_cb, &snd);
    assert_int_equal(iop_submit(loop, &snd.op), 0);
    rec_t *both[2] = { &rcv, &snd };
    assert_true(tu_run_until(loop, both_done, both, 2000));
    assert_int_equal(snd.res, 8);
    assert_int_equal(rcv.res, 8);
    assert_memory_equal(in, "datagram", 8);
    assert_int_equal(rmsg.msg_namelen, sizeof from);
    assert_int_equal(from.sin_family, AF_INET);
    assert_int_equal(from.sin_port, aaddr.sin_port);
    assert_int_equal(from.sin_addr.s_addr, htonl(INADDR_LOOPBACK));

    /* Datagram boundaries hold: two sends, two receives. */
    assert_true(connect(a, (struct sockaddr *)&baddr, sizeof baddr) == 0);
    rec_t s1 = { 0 }, s2 = { 0 }, r1 = { 0 }, r2 = { 0 };
    char b1[16] = { 0 }, b2[16] = { 0 };
    iop_prep_send(&s1.op, a, "one", 3, 0, rec_cb, &s1);
    iop_prep_send(&s2.op, a, "three", 5, 0, rec_cb, &s2);
    run_pair(loop, &s1, &s2);
    iop_prep_recv(&r1.op, b, b1, sizeof b1, 0, rec_cb, &r1);
    iop_prep_recv(&r2.op, b, b2, sizeof b2, 0, rec_cb, &r2);
    run_pair(loop, &r1, &r2);
    assert_int_equal(r1.res, 3);
    assert_int_equal(r2.res, 5);
    assert_memory_equal(b1, "one", 3);
    assert_memory_equal(b2, "three", 5);

    conf_close(loop, a);
    conf_close(loop, b);
    iop_loop_destroy(loop);
}

void test_op_close(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int fd = tu_tcp_socket();
    rec_t r = { 0 };
    iop_prep_close(&r.op, fd, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_true(tu_run_until_count(loop, &r.calls, 1, 2000));
    assert_int_equal(r.res, 0);
    errno = 0;
    assert_int_equal(fcntl(fd, F_GETFD), -1);
    assert_int_equal(errno, EBADF);
    iop_loop_destroy(loop);
}

void test_op_close_fails_waiting_ops(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    char buf[8];
    rec_t rcv = { 0 }, cls = { 0 };
    iop_prep_recv(&rcv.op, s[1], buf, sizeof buf, 0, rec_cb, &rcv);
    assert_int_equal(iop_submit(loop, &rcv.op), 0);
    tu_run_nowait(loop, 1);
    assert_int_equal(rcv.calls, 0);
    iop_prep_close(&cls.op, s[1], rec_cb, &cls);
    assert_int_equal(iop_submit(loop, &cls.op), 0);
    rec_t *both[2] = { &rcv, &cls };
    assert_true(tu_run_until(loop, both_done, both, 2000));
    assert_int_equal(rcv.res, -ECANCELED);
    assert_int_equal(cls.res, 0);
    tu_run_nowait(loop, 2);
    assert_int_equal(rcv.calls, 1);
    assert_int_equal(cls.calls, 1);

    conf_close(loop, s[0]);

    /* iop_fd_close does the same for an fd closed outside any op. */
    int t[2];
    tu_tcp_pair(t);
    rec_t rcv2 = { 0 };
    iop_prep_recv(&rcv2.op, t[0], buf, sizeof buf, 0, rec_cb, &rcv2);
    assert_int_equal(iop_submit(loop, &rcv2.op), 0);
    tu_run_nowait(loop, 1);
    assert_int_equal(rcv2.calls, 0);
    assert_int_equal(iop_fd_close(loop, t[0]), 0);
    assert_true(tu_run_until_count(loop, &rcv2.calls, 1, 2000));
    assert_int_equal(rcv2.res, -ECANCELED);
    conf_close(loop, t[1]);
    iop_loop_destroy(loop);
}

void test_op_timeout(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    rec_t r = { 0 };
    uint64_t wall0 = tu_clock_ns();   /* first: the loop's clock then reads no earlier */
    uint64_t t0 = iop_update_time(loop);
    iop_prep_timeout(&r.op, 30 * 1000000ull, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_true(tu_run_until_count(loop, &r.calls, 1, 2000));
    assert_int_equal(r.res, 0);
    assert_true(r.at >= t0 + 30 * 1000000ull);
    assert_true(tu_clock_ns() - wall0 >= 30 * 1000000ull);
    tu_run_for(loop, 20);
    assert_int_equal(r.calls, 1);

    /* A zero timeout still completes from the loop, not from submit. */
    iop_prep_timeout(&r.op, 0, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_int_equal(r.calls, 1);
    assert_true(tu_run_until_count(loop, &r.calls, 2, 2000));
    assert_int_equal(r.res, 0);

    /* A deadline before the timeout's end ends it with -ETIMEDOUT; one after it
     * changes nothing. */
    uint64_t t1 = iop_update_time(loop);
    iop_prep_timeout(&r.op, 5000 * 1000000ull, rec_cb, &r);
    iop_op_set_deadline(&r.op, t1 + 20 * 1000000ull);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_true(tu_run_until_count(loop, &r.calls, 3, 3000));
    assert_int_equal(r.res, -ETIMEDOUT);
    assert_true(r.at >= t1 + 20 * 1000000ull && r.at < t1 + 2500 * 1000000ull);
    iop_prep_timeout(&r.op, 10 * 1000000ull, rec_cb, &r);
    iop_op_set_deadline(&r.op, iop_update_time(loop) + 5000 * 1000000ull);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_true(tu_run_until_count(loop, &r.calls, 4, 3000));
    assert_int_equal(r.res, 0);

    /* A nop: its deadline already passed fails it, one ahead does not. */
    iop_prep_nop(&r.op, rec_cb, &r);
    iop_op_set_deadline(&r.op, 1);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_true(tu_run_until_count(loop, &r.calls, 5, 2000));
    assert_int_equal(r.res, -ETIMEDOUT);
    iop_prep_nop(&r.op, rec_cb, &r);
    iop_op_set_deadline(&r.op, iop_update_time(loop) + 5000 * 1000000ull);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_true(tu_run_until_count(loop, &r.calls, 6, 2000));
    assert_int_equal(r.res, 0);
    iop_loop_destroy(loop);
}

void test_op_recv_waits_for_data(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    char b1[16] = { 0 }, b2[16] = { 0 };
    rec_t r1 = { 0 }, r2 = { 0 };
    iop_prep_recv(&r1.op, s[1], b1, sizeof b1, 0, rec_cb, &r1);
    iop_prep_recv(&r2.op, s[1], b2, sizeof b2, 0, rec_cb, &r2);
    assert_int_equal(iop_submit(loop, &r1.op), 0);
    assert_int_equal(iop_submit(loop, &r2.op), 0);
    assert_true(iop_op_in_flight(&r1.op));
    tu_run_nowait(loop, 3);
    assert_int_equal(r1.calls + r2.calls, 0);

    /* Ops waiting on one fd are served in submit order. */
    assert_int_equal(send(s[0], "AB", 2, 0), 2);
    assert_true(tu_run_until_count(loop, &r1.calls, 1, 2000));
    assert_int_equal(r1.res, 2);
    assert_memory_equal(b1, "AB", 2);
    assert_false(iop_op_in_flight(&r1.op));
    tu_run_nowait(loop, 2);
    assert_int_equal(r2.calls, 0);

    assert_int_equal(send(s[0], "C", 1, 0), 1);
    assert_true(tu_run_until_count(loop, &r2.calls, 1, 2000));
    assert_int_equal(r2.res, 1);
    assert_memory_equal(b2, "C", 1);
    assert_int_equal(r1.calls, 1);

    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

/* ---- large transfer ---------------------------------------------------------- */

#define XFER_TOTAL (4u << 20)
#define XFER_CHUNK (64u << 10)

typedef struct xfer {
    iop_loop_t *loop;
    const unsigned char *src;
    unsigned char *dst;
    size_t sent, got;
    int sends, recvs;
    int error;
    iop_op_t send_op, recv_op;
    int sfd, rfd;
} xfer_t;

static void xfer_sent(iop_op_t *op, int res);
static void xfer_recvd(iop_op_t *op, int res);

static void xfer_send_more(xfer_t *x)
{
    iop_prep_send(&x->send_op, x->sfd, x->src + x->sent, XFER_TOTAL - x->sent, 0, xfer_sent, x);
    assert_int_equal(iop_submit(x->loop, &x->send_op), 0);
}

static void xfer_recv_more(xfer_t *x)
{
    size_t left = XFER_TOTAL - x->got;
    iop_prep_recv(&x->recv_op, x->rfd, x->dst + x->got, left < XFER_CHUNK ? left : XFER_CHUNK, 0,
                  xfer_recvd, x);
    assert_int_equal(iop_submit(x->loop, &x->recv_op), 0);
}

static void xfer_sent(iop_op_t *op, int res)
{
    xfer_t *x = op->data;
    x->sends++;
    if (res <= 0) {
        x->error = res ? res : -EIO;
        return;
    }
    x->sent += (size_t)res;
    assert_true(x->sent <= XFER_TOTAL);
    if (x->sent < XFER_TOTAL)
        xfer_send_more(x);   /* a partial send: the rest is ours to resubmit */
}

static void xfer_recvd(iop_op_t *op, int res)
{
    xfer_t *x = op->data;
    x->recvs++;
    if (res <= 0) {
        x->error = res ? res : -EPIPE;   /* EOF before the end is an error here */
        return;
    }
    x->got += (size_t)res;
    if (x->got < XFER_TOTAL)
        xfer_recv_more(x);
}

static int xfer_finished(void *arg)
{
    xfer_t *x = arg;
    return x->error || (x->got == XFER_TOTAL && x->sent == XFER_TOTAL);
}

void test_op_large_transfer(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    unsigned char *src = malloc(XFER_TOTAL), *dst = calloc(1, XFER_TOTAL);
    assert_non_null(src);
    assert_non_null(dst);
    tu_fill_pattern(src, XFER_TOTAL, 0x1234567u);
    xfer_t x = { .loop = loop, .src = src, .dst = dst, .sfd = s[0], .rfd = s[1] };
    xfer_send_more(&x);
    xfer_recv_more(&x);
    assert_true(tu_run_until(loop, xfer_finished, &x, 15000));
    assert_int_equal(x.error, 0);
    assert_int_equal(x.sent, XFER_TOTAL);
    assert_int_equal(x.got, XFER_TOTAL);
    assert_true(memcmp(src, dst, XFER_TOTAL) == 0);
    assert_true(x.recvs >= (int)(XFER_TOTAL / XFER_CHUNK));

    free(src);
    free(dst);
    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

/* Ops of one direction on one fd run in submission order, whatever the fd number
 * (fds above the core's first table size included): three sends in flight at once
 * put their bytes on the stream one after the other, and three recvs in flight get
 * consecutive pieces of it in their order. */
void test_op_fifo_per_direction(void **state)
{
    (void)state;
    enum { N = 3, SEND_LEN = 512 * 1024, RECV_LEN = 1000 };
    iop_loop_t *loop = tu_loop_new();
    int p[2];
    tu_tcp_pair(p);
    int s[2];
    for (int i = 0; i < 2; i++) {
        s[i] = fcntl(p[i], F_DUPFD_CLOEXEC, 300);   /* well past the first 64 table slots */
        assert_true(s[i] >= 300);
        close(p[i]);
    }
    int small = 16384;
    assert_int_equal(setsockopt(s[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    assert_int_equal(setsockopt(s[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);

    static char out[N][SEND_LEN], in[N * SEND_LEN];
    rec_t snd[N];
    memset(snd, 0, sizeof snd);
    for (int i = 0; i < N; i++) {
        tu_fill_pattern(out[i], SEND_LEN, (uint32_t)(11 + i));
        iop_prep_send(&snd[i].op, s[0], out[i], SEND_LEN, 0, rec_cb, &snd[i]);
        assert_int_equal(iop_submit(loop, &snd[i].op), 0);
    }
    size_t got = 0;
    int done = 0;
    for (int spins = 0; spins < 20000 && done < N; spins++) {
        tu_run_nowait(loop, 1);
        ssize_t n = recv(s[1], in + got, sizeof in - got, MSG_DONTWAIT);
        if (n > 0)
            got += (size_t)n;
        done = 0;
        for (int i = 0; i < N; i++)
            done += snd[i].calls;
        if (n <= 0 && done < N)
            tu_sleep_ms(1);
    }
    assert_int_equal(done, N);
    size_t want = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(snd[i].calls, 1);
        assert_true(snd[i].res > 0);
        want += (size_t)snd[i].res;
    }
    for (int tries = 0; got < want && tries < 2000; tries++) {
        ssize_t n = recv(s[1], in + got, sizeof in - got, MSG_DONTWAIT);
        if (n > 0)
            got += (size_t)n;
        else
            tu_sleep_ms(1);
    }
    assert_int_equal(got, want);
    size_t at = 0;
    for (int i = 0; i < N; i++) {   /* each send's bytes whole, in submission order */
        assert_memory_equal(in + at, out[i], (size_t)snd[i].res);
        at += (size_t)snd[i].res;
    }

    /* Three recvs in flight, then the data: consecutive pieces, in order. */
    static char piece[N][RECV_LEN];
    rec_t rcv[N];
    memset(rcv, 0, sizeof rcv);
    for (int i = 0; i < N; i++) {
        iop_prep_recv(&rcv[i].op, s[1], piece[i], RECV_LEN, 0, rec_cb, &rcv[i]);
        assert_int_equal(iop_submit(loop, &rcv[i].op), 0);
    }
    tu_run_nowait(loop, 2);
    static char stream[N * RECV_LEN];
    tu_fill_pattern(stream, sizeof stream, 99);
    assert_int_equal(send(s[0], stream, sizeof stream, 0), (ssize_t)sizeof stream);
    at = 0;
    for (int i = 0; i < N; i++) {
        assert_true(tu_run_until_count(loop, &rcv[i].calls, 1, 3000));
        assert_true(rcv[i].res > 0);
        assert_memory_equal(piece[i], stream + at, (size_t)rcv[i].res);
        at += (size_t)rcv[i].res;
    }
    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}
