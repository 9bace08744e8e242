/* Every accepted op completes exactly once, from the loop, never inside the submit
 * call, including ops whose syscall succeeds (or fails) at once. */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/uio.h>
#include "conformance.h"

static int in_submit;     /* set around every iop_submit made by this file */

typedef struct orec {
    iop_op_t op;
    const char *what;
    int calls;
    int inside;           /* callbacks that ran while in_submit was set */
    int res;
} orec_t;

static int xsubmit(iop_loop_t *loop, iop_op_t *op)
{
    int saved = in_submit;
    in_submit = 1;
    int r = iop_submit(loop, op);
    in_submit = saved;
    return r;
}

static void once_cb(iop_op_t *op, int res)
{
    orec_t *r = op->data;
    r->calls++;
    r->res = res;
    if (in_submit)
        r->inside++;
}

enum {
    O_SEND, O_RECV_READY, O_READ_FILE, O_WRITE_FILE, O_NOP, O_CLOSE, O_PIPE_WRITE, O_PIPE_READ,
    O_TIMEOUT0, O_CANCEL_NOTHING, O_ACCEPT_READY, O_CONNECT, O_SENDMSG, O_RECVMSG_READY,
    O_RECV_BADF, O_PAST_DEADLINE, O_RECV_LATER, O_COUNT
};

typedef struct once_all {
    orec_t r[O_COUNT];
} once_all_t;

static int all_called(void *arg)
{
    once_all_t *a = arg;
    for (int i = 0; i < O_COUNT; i++)
        if (a->r[i].calls == 0)
            return 0;
    return 1;
}

void test_exactly_once_never_inside_submit(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    once_all_t a;
    memset(&a, 0, sizeof a);
    orec_t *r = a.r;

    int s[2], late[2], p[2];
    tu_tcp_pair(s);
    tu_tcp_pair(late);
    tu_pipe(p);
    assert_int_equal(write(p[1], "pipe", 4), 4);
    assert_int_equal(send(s[1], "ready", 5, 0), 5);
    int file = tu_tmpfile("0123456789abcdef", 16);
    int doomed = tu_tcp_socket();
    int closed = tu_closed_fd();
    struct sockaddr_in laddr, uaddr, vaddr;
    int lfd = tu_tcp_listener(&laddr, 8);
    int pre = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);   /* queued before accept */
    assert_int_equal(connect(pre, (struct sockaddr *)&laddr, sizeof laddr), 0);
    int conn = tu_tcp_socket();
    int u = tu_udp_socket(&uaddr), v = tu_udp_socket(&vaddr);
    assert_int_equal(sendto(u, "dgram", 5, 0, (struct sockaddr *)&vaddr, sizeof vaddr), 5);
    tu_sleep_ms(5);   /* let loopback deliver what was sent */

    char rbuf[16], fbuf[16], pbuf[16], mbuf[16], lbuf[16], bbuf[16], dbuf[16];
    struct iovec siov = { "msg", 3 }, miov = { mbuf, sizeof mbuf };
    struct msghdr smsg = { .msg_name = &vaddr, .msg_namelen = sizeof vaddr, .msg_iov = &siov, .msg_iovlen = 1 };
    struct msghdr mmsg = { .msg_iov = &miov, .msg_iovlen = 1 };
    orec_t idle = { 0 };
    iop_prep_nop(&idle.op, once_cb, &idle);

    iop_prep_send(&r[O_SEND].op, s[0], "abc", 3, 0, once_cb, &r[O_SEND]);
    iop_prep_recv(&r[O_RECV_READY].op, s[0], rbuf, sizeof rbuf, 0, once_cb, &r[O_RECV_READY]);
    iop_prep_read(&r[O_READ_FILE].op, file, fbuf, sizeof fbuf, 0, once_cb, &r[O_READ_FILE]);
    iop_prep_write(&r[O_WRITE_FILE].op, file, "zz", 2, 16, once_cb, &r[O_WRITE_FILE]);
    iop_prep_nop(&r[O_NOP].op, once_cb, &r[O_NOP]);
    iop_prep_close(&r[O_CLOSE].op, doomed, once_cb, &r[O_CLOSE]);
    iop_prep_write(&r[O_PIPE_WRITE].op, p[1], "more", 4, -1, once_cb, &r[O_PIPE_WRITE]);
    iop_prep_read(&r[O_PIPE_READ].op, p[0], pbuf, 4, -1, once_cb, &r[O_PIPE_READ]);
    iop_prep_timeout(&r[O_TIMEOUT0].op, 0, once_cb, &r[O_TIMEOUT0]);
    iop_prep_cancel(&r[O_CANCEL_NOTHING].op, &idle.op, once_cb, &r[O_CANCEL_NOTHING]);
    iop_prep_accept(&r[O_ACCEPT_READY].op, lfd, NULL, NULL, once_cb, &r[O_ACCEPT_READY]);
    iop_prep_connect(&r[O_CONNECT].op, conn, (struct sockaddr *)&laddr, sizeof laddr, once_cb, &r[O_CONNECT]);
    iop_prep_sendmsg(&r[O_SENDMSG].op, u, &smsg, 0, once_cb, &r[O_SENDMSG]);
    iop_prep_recvmsg(&r[O_RECVMSG_READY].op, v, &mmsg, 0, once_cb, &r[O_RECVMSG_READY]);
    iop_prep_recv(&r[O_RECV_BADF].op, closed, bbuf, sizeof bbuf, 0, once_cb, &r[O_RECV_BADF]);
    iop_prep_recv(&r[O_PAST_DEADLINE].op, late[0], dbuf, sizeof dbuf, 0, once_cb, &r[O_PAST_DEADLINE]);
    iop_op_set_deadline(&r[O_PAST_DEADLINE].op, 1);
    iop_prep_recv(&r[O_RECV_LATER].op, late[1], lbuf, sizeof lbuf, 0, once_cb, &r[O_RECV_LATER]);

    for (int i = 0; i < O_COUNT; i++) {
        assert_int_equal(xsubmit(loop, &r[i].op), 0);
        assert_int_equal(r[i].calls, 0);
    }
    for (int i = 0; i < O_COUNT; i++)
        assert_int_equal(r[i].calls, 0);   /* nothing ran before the loop did */

    tu_run_nowait(loop, 2);
    assert_int_equal(send(late[0], "late", 4, 0), 4);
    assert_true(tu_run_until(loop, all_called, &a, 3000));
    tu_run_nowait(loop, 3);
    for (int i = 0; i < O_COUNT; i++) {
        if (r[i].calls != 1 || r[i].inside != 0)
            fail_msg("op #%d (%s): %d callbacks, %d inside submit", i,
                     iop_op_kind_name(r[i].op.kind), r[i].calls, r[i].inside);
    }
    assert_int_equal(idle.calls, 0);

    assert_int_equal(r[O_SEND].res, 3);
    assert_int_equal(r[O_RECV_READY].res, 5);
    assert_memory_equal(rbuf, "ready", 5);
    assert_int_equal(r[O_READ_FILE].res, 16);
    assert_memory_equal(fbuf, "0123456789abcdef", 16);
    assert_int_equal(r[O_WRITE_FILE].res, 2);
    assert_int_equal(r[O_NOP].res, 0);
    assert_int_equal(r[O_CLOSE].res, 0);
    assert_int_equal(r[O_PIPE_WRITE].res, 4);
    assert_int_equal(r[O_PIPE_READ].res, 4);
    assert_memory_equal(pbuf, "pipe", 4);
    assert_int_equal(r[O_TIMEOUT0].res, 0);
    assert_int_equal(r[O_CANCEL_NOTHING].res, -ENOENT);
    assert_true(r[O_ACCEPT_READY].res >= 0);
    assert_int_equal(r[O_CONNECT].res, 0);
    assert_int_equal(r[O_SENDMSG].res, 3);
    assert_int_equal(r[O_RECVMSG_READY].res, 5);
    assert_memory_equal(mbuf, "dgram", 5);
    assert_int_equal(r[O_RECV_BADF].res, -EBADF);
    assert_int_equal(r[O_PAST_DEADLINE].res, -ETIMEDOUT);
    assert_int_equal(r[O_RECV_LATER].res, 4);
    assert_memory_equal(lbuf, "late", 4);

    /* The connect above was accepted nowhere yet; its peer sits in the backlog. */
    close(pre);
    conf_close(loop, r[O_ACCEPT_READY].res);
    int fds[] = { s[0], s[1], late[0], late[1], p[0], p[1], file, lfd, conn, u, v };
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
        conf_close(loop, fds[i]);
    iop_fd_forget(loop, closed);
    iop_loop_destroy(loop);
}

/* ---- resubmitting and freeing from callbacks ---------------------------------- */

typedef struct chain {
    iop_loop_t *loop;
    int calls;
    int inside;
    int limit;
} chain_t;

static void chain_cb(iop_op_t *op, int res)
{
    chain_t *c = op->data;
    assert_int_equal(res, 0);
    c->calls++;
    if (in_submit)
        c->inside++;
    if (c->calls < c->limit) {
        iop_prep_nop(op, chain_cb, c);
        assert_int_equal(xsubmit(c->loop, op), 0);
    }
}

static int freed_ops;

static void free_self_cb(iop_op_t *op, int res)
{
    (void)res;
    freed_ops++;
    free(op);   /* the record is the caller's: ASan catches any later touch */
}

void test_resubmit_from_callback(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    /* A nop resubmitted from its own callback: one completion per submit. */
    chain_t c = { .loop = loop, .limit = 50 };
    iop_op_t op;
    iop_prep_nop(&op, chain_cb, &c);
    assert_int_equal(xsubmit(loop, &op), 0);
    assert_true(tu_run_until_count(loop, &c.calls, 50, 3000));
    tu_run_nowait(loop, 3);
    assert_int_equal(c.calls, 50);
    assert_int_equal(c.inside, 0);

    /* Records freed inside their callbacks, for ops done at once and ops that wait. */
    int s[2];
    tu_tcp_pair(s);
    freed_ops = 0;
    iop_op_t *n = malloc(sizeof *n), *w = malloc(sizeof *w), *t = malloc(sizeof *t);
    assert_true(n && w && t);
    static char buf[8];
    iop_prep_nop(n, free_self_cb, NULL);
    iop_prep_recv(w, s[1], buf, sizeof buf, 0, free_self_cb, NULL);
    iop_prep_timeout(t, 1000000, free_self_cb, NULL);
    assert_int_equal(xsubmit(loop, n), 0);
    assert_int_equal(xsubmit(loop, w), 0);
    assert_int_equal(xsubmit(loop, t), 0);
    tu_run_nowait(loop, 1);
    assert_int_equal(send(s[0], "x", 1, 0), 1);
    assert_true(tu_run_until_count(loop, &freed_ops, 3, 2000));
    tu_run_nowait(loop, 3);
    assert_int_equal(freed_ops, 3);

    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}
