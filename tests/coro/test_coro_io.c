/* Coroutine I/O over real loopback TCP and pipes: every call, deadlines (own and
 * scoped), cancel of a coroutine parked in recv (the op is cancelled, the fd still
 * works; a refused cancel is sent again, even with no memory for its timer), close
 * failing a parked reader. Runs on the backend named by argv[1]. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>
#include "sched_test.h"

static void *tcp_server(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    struct sockaddr_in peer;
    socklen_t plen = sizeof peer;
    int fd = iop_accept(lfd, (struct sockaddr *)&peer, &plen, st_after_ms(5000));
    CHECK(fd >= 0);
    if (fd < 0)
        return NULL;
    CHECK_EQ(plen, sizeof peer);
    CHECK_EQ(ntohl(peer.sin_addr.s_addr), INADDR_LOOPBACK);
    char buf[16] = { 0 };
    CHECK_EQ(iop_recv(fd, buf, 5, MSG_WAITALL, 0), 5);
    CHECK(memcmp(buf, "hello", 5) == 0);
    CHECK_EQ(iop_send(fd, "world", 5, 0, 0), 5);
    CHECK_EQ(iop_recv(fd, buf, sizeof buf, 0, st_after_ms(5000)), 0);   /* peer closed */
    CHECK_EQ(iop_close(fd), 0);
    st_done++;
    return NULL;
}

static void *tcp_client(void *arg)
{
    struct sockaddr_in *addr = arg;
    int fd = tu_tcp_socket();
    CHECK_EQ(iop_connect(fd, (struct sockaddr *)addr, sizeof *addr, st_after_ms(5000)), 0);
    CHECK_EQ(iop_send(fd, "hello", 5, 0, 0), 5);
    char buf[8] = { 0 };
    size_t got = 0;
    while (got < 5) {
        ssize_t n = iop_recv(fd, buf + got, 5 - got, 0, st_after_ms(5000));
        CHECK(n > 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    CHECK(memcmp(buf, "world", 5) == 0);
    CHECK_EQ(iop_close(fd), 0);
    st_done++;
    return NULL;
}

static void test_tcp_accept_connect_send_recv(void **state)
{
    (void)state;
    struct sockaddr_in addr;
    int lfd = tu_tcp_listener(&addr, 8);
    st_go(tcp_server, (void *)(intptr_t)lfd, "server");
    st_go(tcp_client, &addr, "client");
    st_run_until_done(2, 10000);
    iop_fd_close(st_loop, lfd);
}

/* 256 KiB through a pipe: the writer parks whenever the pipe is full. */
#define PIPE_BYTES (256 * 1024)
static unsigned char pipe_src[PIPE_BYTES], pipe_dst[PIPE_BYTES];
static int pipe_fds[2];

static void *pipe_writer(void *arg)
{
    (void)arg;
    size_t off = 0;
    while (off < PIPE_BYTES) {
        size_t chunk = PIPE_BYTES - off < 7000 ? PIPE_BYTES - off : 7000;
        ssize_t n = iop_write(pipe_fds[1], pipe_src + off, chunk, st_after_ms(5000));
        CHECK(n > 0);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    CHECK_EQ(iop_close(pipe_fds[1]), 0);
    st_done++;
    return NULL;
}

static void *pipe_reader(void *arg)
{
    (void)arg;
    size_t off = 0;
    for (;;) {
        size_t want = PIPE_BYTES - off < 5000 ? PIPE_BYTES - off : 5000;
        ssize_t n = iop_read(pipe_fds[0], pipe_dst + off, want, st_after_ms(5000));
        CHECK(n >= 0);
        if (n <= 0)
            break;
        off += (size_t)n;
        if (off == PIPE_BYTES) {
            char extra;
            CHECK_EQ(iop_read(pipe_fds[0], &extra, 1, st_after_ms(5000)), 0);   /* EOF */
            break;
        }
    }
    CHECK_EQ(off, PIPE_BYTES);
    CHECK(memcmp(pipe_src, pipe_dst, PIPE_BYTES) == 0);
    CHECK_EQ(iop_close(pipe_fds[0]), 0);
    st_done++;
    return NULL;
}

static void test_pipe_read_write(void **state)
{
    (void)state;
    tu_fill_pattern(pipe_src, sizeof pipe_src, 7);
    memset(pipe_dst, 0, sizeof pipe_dst);
    tu_pipe(pipe_fds);
    st_go(pipe_writer, NULL, "writer");
    st_go(pipe_reader, NULL, "reader");
    st_run_until_done(2, 10000);
}

/* ---- deadlines ---------------------------------------------------------------------------- */

static int dl_fds[2];

static void *deadline_calls(void *arg)
{
    (void)arg;
    char buf[8];
    /* The call's own deadline. */
    uint64_t t0 = tu_clock_ns();
    CHECK_EQ(iop_recv(dl_fds[1], buf, sizeof buf, 0, st_after_ms(20)), -ETIMEDOUT);
    CHECK(tu_clock_ns() - t0 >= 15 * MS);
    /* A scope's deadline, the call giving none; nested: the inner (earlier) wins. */
    t0 = tu_clock_ns();   /* before the deadlines: however late this runs, took >= 20 ms */
    iop_deadline_push(st_after_ms(1500));   /* far from the inner one: a slow run tells them apart */
    iop_deadline_push(st_after_ms(20));
    CHECK_EQ(iop_recv(dl_fds[1], buf, sizeof buf, 0, 0), -ETIMEDOUT);
    uint64_t took = tu_clock_ns() - t0;
    CHECK(took >= 15 * MS && took < 1000 * MS);
    CHECK_EQ(iop_read(dl_fds[1], buf, sizeof buf, 0), -ETIMEDOUT);   /* passed: at once */
    iop_deadline_pop();
    /* The outer scope: the call's own later deadline does not extend it. */
    t0 = tu_clock_ns();
    CHECK_EQ(iop_recv(dl_fds[1], buf, sizeof buf, 0, st_after_ms(10000)), -ETIMEDOUT);
    CHECK(tu_clock_ns() - t0 < 5000 * MS);
    iop_deadline_pop();
    CHECK_EQ(iop_deadline_current(), 0);
    /* Accept with a deadline on a listener nobody connects to. */
    struct sockaddr_in addr;
    int lfd = tu_tcp_listener(&addr, 1);
    CHECK_EQ(iop_accept(lfd, NULL, NULL, st_after_ms(10)), -ETIMEDOUT);
    CHECK_EQ(iop_close(lfd), 0);
    /* The fd still works after all those timeouts. */
    CHECK_EQ(write(dl_fds[0], "abc", 3), 3);
    CHECK_EQ(iop_recv(dl_fds[1], buf, sizeof buf, 0, st_after_ms(5000)), 3);
    CHECK(memcmp(buf, "abc", 3) == 0);
    st_done++;
    return NULL;
}

static void test_deadlines(void **state)
{
    (void)state;
    tu_tcp_pair(dl_fds);
    st_go(deadline_calls, NULL, "deadlines");
    st_run_until_done(1, 10000);
    iop_fd_close(st_loop, dl_fds[0]);
    iop_fd_close(st_loop, dl_fds[1]);
}

static void *refused_connect(void *arg)
{
    (void)arg;
    struct sockaddr_in addr;
    tu_closed_port(&addr);
    int fd = tu_tcp_socket();
    CHECK_EQ(iop_connect(fd, (struct sockaddr *)&addr, sizeof addr, st_after_ms(5000)), -ECONNREFUSED);
    CHECK_EQ(iop_close(fd), 0);
    st_done++;
    return NULL;
}

static void test_connect_refused(void **state)
{
    (void)state;
    st_go(refused_connect, NULL, "refused");
    st_run_until_done(1, 5000);
}

/* ---- cancel --------------------------------------------------------------------------------- */

static int cx_fds[2];

static void *parked_reader(void *arg)
{
    (void)arg;
    char buf[8];
    ssize_t r = iop_recv(cx_fds[1], buf, sizeof buf, 0, 0);
    CHECK_EQ(r, -ECANCELED);
    CHECK_EQ(iop_recv(cx_fds[1], buf, sizeof buf, 0, 0), -ECANCELED);   /* at once */
    CHECK_EQ(iop_send(cx_fds[1], "x", 1, 0, 0), -ECANCELED);
    st_done++;
    return (void *)(intptr_t)r;
}

static void *fresh_reader(void *arg)
{
    (void)arg;
    char buf[8] = { 0 };
    CHECK_EQ(iop_recv(cx_fds[1], buf, sizeof buf, 0, st_after_ms(5000)), 4);
    CHECK(memcmp(buf, "ping", 4) == 0);
    st_done++;
    return NULL;
}

static void *cancel_from_coro(void *arg)
{
    CHECK_EQ(iop_sleep(5 * MS), 0);
    CHECK_EQ(iop_cancel(arg), 0);
    CHECK(!iop_coro_done(arg));
    st_done++;
    return NULL;
}

/* After the cancel, the reader and every op of it have gone: the fd serves a new
 * reader and the loop has nothing left in flight. */
static void check_fd_still_works(void)
{
    assert_int_equal(write(cx_fds[0], "ping", 4), 4);
    iop_coro_t *c;
    assert_int_equal(iop_go(st_loop, fresh_reader, NULL, NULL, &c), 0);
    assert_int_equal(iop_join(c, NULL, iop_now(st_loop) + 5000 * MS), 0);
    assert_int_equal(iop_loop_run(st_loop, IOP_RUN_NOWAIT), 0);   /* nothing pending */
}

static void test_cancel_recv_from_main(void **state)
{
    (void)state;
    tu_tcp_pair(cx_fds);
    iop_coro_t *r;
    assert_int_equal(iop_go(st_loop, parked_reader, NULL, NULL, &r), 0);
    tu_run_for(st_loop, 5);
    assert_false(iop_coro_done(r));
    assert_int_equal(iop_cancel(r), 0);
    /* The recv op's callback (and the cancel op's) run from the loop, never inside
     * iop_cancel: until then the reader stays parked, its op on its stack. */
    assert_false(iop_coro_done(r));
    void *res;
    assert_int_equal(iop_join(r, &res, iop_now(st_loop) + 5000 * MS), 0);
    assert_int_equal((intptr_t)res, -ECANCELED);
    check_fd_still_works();
    assert_int_equal(st_done, 2);
    st_assert_ok();
    iop_fd_close(st_loop, cx_fds[0]);
    iop_fd_close(st_loop, cx_fds[1]);
}

static void test_cancel_recv_from_coroutine(void **state)
{
    (void)state;
    tu_tcp_pair(cx_fds);
    iop_coro_t *r;
    assert_int_equal(iop_go(st_loop, parked_reader, NULL, NULL, &r), 0);
    st_go(cancel_from_coro, r, "canceller");
    void *res;
    assert_int_equal(iop_join(r, &res, iop_now(st_loop) + 5000 * MS), 0);
    assert_int_equal((intptr_t)res, -ECANCELED);
    check_fd_still_works();
    assert_int_equal(st_done, 3);
    st_assert_ok();
    iop_fd_close(st_loop, cx_fds[0]);
    iop_fd_close(st_loop, cx_fds[1]);
}

/* A backend that refuses the cancel (a full queue) gets it again a moment later:
 * the reader, parked with no deadline, still ends with -ECANCELED. */
static void test_cancel_refused_is_retried(void **state)
{
    (void)state;
    tu_tcp_pair(cx_fds);
    iop_coro_t *r;
    assert_int_equal(iop_go(st_loop, parked_reader, NULL, NULL, &r), 0);
    tu_run_for(st_loop, 5);
    iop__cancel_refuse_next(2);
    assert_int_equal(iop_cancel(r), 0);
    void *res;
    assert_int_equal(iop_join(r, &res, iop_now(st_loop) + 5000 * MS), 0);
    assert_int_equal((intptr_t)res, -ECANCELED);
    assert_int_equal(iop__cancel_refuse_next(-1), 2);   /* the first two were refused */
    check_fd_still_works();
    st_assert_ok();
    iop_fd_close(st_loop, cx_fds[0]);
    iop_fd_close(st_loop, cx_fds[1]);
}

/* A refused cancel whose retry finds the timer heap full and no memory to grow it:
 * the retry takes the slot the reader's coroutine keeps for it, instead of being
 * lost (the reader, parked with no deadline, waited for ever). */
static void test_cancel_refused_without_memory(void **state)
{
    (void)state;
    tu_tcp_pair(cx_fds);
    iop_coro_t *r;
    assert_int_equal(iop_go(st_loop, parked_reader, NULL, NULL, &r), 0);
    tu_run_for(st_loop, 5);
    assert_true(st_timers_starve());
    iop__cancel_refuse_next(1);
    assert_int_equal(iop_cancel(r), 0);
    st_timers_unstarve();
    void *res;
    assert_int_equal(iop_join(r, &res, iop_now(st_loop) + 2000 * MS), 0);
    assert_int_equal((intptr_t)res, -ECANCELED);
    assert_int_equal(iop__cancel_refuse_next(-1), 1);
    check_fd_still_works();
    st_assert_ok();
    iop_fd_close(st_loop, cx_fds[0]);
    iop_fd_close(st_loop, cx_fds[1]);
}

/* The op ends before the refused cancel's retry: the retry is dropped, and nothing
 * is left pointing into the finished call's frame. */
static void test_op_ends_before_cancel_retry(void **state)
{
    (void)state;
    tu_tcp_pair(cx_fds);
    iop_coro_t *r;
    assert_int_equal(iop_go(st_loop, fresh_reader, NULL, NULL, &r), 0);
    tu_run_for(st_loop, 5);
    iop__cancel_refuse_next(1);
    assert_int_equal(iop_cancel(r), 0);
    assert_int_equal(write(cx_fds[0], "ping", 4), 4);   /* the recv completes first */
    void *res;
    assert_int_equal(iop_join(r, &res, iop_now(st_loop) + 5000 * MS), 0);
    assert_int_equal(iop__cancel_refuse_next(-1), 1);
    tu_run_for(st_loop, 5);                             /* past the retry's moment */
    assert_int_equal(iop_loop_run(st_loop, IOP_RUN_NOWAIT), 0);
    assert_int_equal(st_done, 1);
    st_assert_ok();
    iop_fd_close(st_loop, cx_fds[0]);
    iop_fd_close(st_loop, cx_fds[1]);
}

/* iop_close through the loop fails a coroutine parked on the fd. */
static void *closer(void *arg)
{
    (void)arg;
    CHECK_EQ(iop_sleep(5 * MS), 0);
    CHECK_EQ(iop_close(cx_fds[1]), 0);
    st_done++;
    return NULL;
}

static void *reader_of_closed(void *arg)
{
    (void)arg;
    char buf[8];
    CHECK_EQ(iop_recv(cx_fds[1], buf, sizeof buf, 0, st_after_ms(5000)), -ECANCELED);
    CHECK(!iop_cancelled());          /* the op was failed, not the coroutine */
    st_done++;
    return NULL;
}

static void test_close_fails_parked_reader(void **state)
{
    (void)state;
    tu_tcp_pair(cx_fds);
    st_go(reader_of_closed, NULL, "reader");
    st_go(closer, NULL, "closer");
    st_run_until_done(2, 5000);
    assert_int_equal(fcntl(cx_fds[1], F_GETFD), -1);   /* really closed */
    iop_fd_close(st_loop, cx_fds[0]);
}

/* A cancelled coroutine still closes its fds: iop_close runs to the end. */
static void *cancelled_closer(void *arg)
{
    int fd = (int)(intptr_t)arg;
    CHECK_EQ(iop_sleep(1000 * MS), -ECANCELED);
    CHECK_EQ(iop_close(fd), 0);
    st_done++;
    return NULL;
}

static void test_close_when_cancelled(void **state)
{
    (void)state;
    int p[2];
    tu_pipe(p);
    iop_coro_t *c;
    assert_int_equal(iop_go(st_loop, cancelled_closer, (void *)(intptr_t)p[0], NULL, &c), 0);
    tu_run_for(st_loop, 2);
    assert_int_equal(iop_cancel(c), 0);
    assert_int_equal(iop_join(c, NULL, iop_now(st_loop) + 5000 * MS), 0);
    assert_int_equal(fcntl(p[0], F_GETFD), -1);
    close(p[1]);
    st_assert_ok();
}

/* ---- waiting for readiness (iop_wait_fd) ------------------------------------------------ */

static int wf_fds[2];
static iop_coro_t *wf_waiter;

static void *wait_fd_calls(void *arg)
{
    (void)arg;
    /* Nothing to read: the deadline. Then a second waiter on the same fd is refused. */
    CHECK_EQ(iop_wait_fd(wf_fds[0], IOP_READ, st_after_ms(20)), -ETIMEDOUT);
    /* Writable at once; readable once the other end writes (see wait_fd_writer). */
    CHECK(iop_wait_fd(wf_fds[1], IOP_WRITE, st_after_ms(1000)) & IOP_WRITE);
    int r = iop_wait_fd(wf_fds[0], IOP_READ, st_after_ms(5000));
    CHECK(r > 0 && (r & IOP_READ));
    char c;
    CHECK_EQ(read(wf_fds[0], &c, 1), 1);
    /* Cancelled while waiting (wait_fd_canceller): -ECANCELED, and the watch is gone. */
    CHECK_EQ(iop_wait_fd(wf_fds[0], IOP_READ, 0), -ECANCELED);
    CHECK_EQ(iop_wait_fd(wf_fds[0], IOP_READ, 0), -ECANCELED);   /* sticky */
    st_done++;
    return NULL;
}

static void *wait_fd_rival(void *arg)
{
    (void)arg;
    CHECK_EQ(iop_wait_fd(wf_fds[0], IOP_READ, st_after_ms(5)), -EEXIST);
    st_done++;
    return NULL;
}

static void *wait_fd_writer(void *arg)
{
    (void)arg;
    iop_sleep(50 * MS);
    CHECK_EQ(write(wf_fds[1], "x", 1), 1);
    iop_sleep(50 * MS);
    CHECK_EQ(iop_cancel(wf_waiter), 0);
    iop_sleep(10 * MS);
    /* The fd's watch was released by the cancelled wait: a new one may start. */
    CHECK_EQ(write(wf_fds[1], "y", 1), 1);
    CHECK(iop_wait_fd(wf_fds[0], IOP_READ, st_after_ms(1000)) & IOP_READ);
    st_done++;
    return NULL;
}

static void test_wait_fd(void **state)
{
    (void)state;
    tu_pipe(wf_fds);
    CHECK_EQ(iop_go(st_loop, wait_fd_calls, NULL, NULL, &wf_waiter), 0);
    st_go(wait_fd_rival, NULL, "rival");
    st_go(wait_fd_writer, NULL, "writer");
    st_run_until_done(3, 10000);
    assert_int_equal(iop_join(wf_waiter, NULL, 0), 0);
    assert_int_equal(iop_wait_fd(wf_fds[0], IOP_READ, 0), -EPERM);   /* outside a coroutine */
    close(wf_fds[0]);
    close(wf_fds[1]);
}

/* Closing the fd wakes a coroutine waiting for it, as it fails an op on it: through
 * the loop from a coroutine (iop_close) or from main (iop_fd_close). */
static int wfc_res;

static void *wait_fd_until_closed(void *arg)
{
    uint64_t t0 = tu_clock_ns();
    wfc_res = iop_wait_fd((int)(intptr_t)arg, IOP_READ, st_after_ms(5000));
    CHECK(tu_clock_ns() - t0 < 2000 * MS);
    st_done++;
    return NULL;
}

static void *close_soon(void *arg)
{
    iop_sleep(20 * MS);
    CHECK_EQ(iop_close((int)(intptr_t)arg), 0);
    st_done++;
    return NULL;
}

static void test_wait_fd_close(void **state)
{
    (void)state;
    int p[2];
    tu_pipe(p);
    st_go(wait_fd_until_closed, (void *)(intptr_t)p[0], "waiter");
    st_go(close_soon, (void *)(intptr_t)p[0], "closer");
    st_run_until_done(2, 10000);
    assert_int_equal(wfc_res, -ECANCELED);
    assert_int_equal(fcntl(p[0], F_GETFD), -1);
    close(p[1]);

    tu_pipe(p);
    st_done = 0;
    st_go(wait_fd_until_closed, (void *)(intptr_t)p[0], "waiter");
    tu_run_for(st_loop, 2);                 /* parked on the fd */
    assert_int_equal(st_done, 0);
    assert_int_equal(iop_fd_close(st_loop, p[0]), 0);
    assert_int_equal(st_done, 0);           /* woken later, not inside the close */
    st_run_until_done(1, 10000);
    assert_int_equal(wfc_res, -ECANCELED);
    close(p[1]);
}

/* ---- messages with ancillary data --------------------------------------------------------- */

/* iop_sendmsg / iop_recvmsg with SCM_RIGHTS over a unix socketpair: the receiver parks
 * first, gets the bytes and a working copy of the fd passed; a datagram pair keeps
 * message boundaries. */
static int msg_fds[2], msg_pipe[2];

static void *msg_receiver(void *arg)
{
    (void)arg;
    char data[8] = { 0 };
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int))]; } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = { .iov_base = data, .iov_len = sizeof data };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                        .msg_controllen = sizeof ctl.buf };
    CHECK_EQ(iop_recvmsg(msg_fds[1], &m, MSG_CMSG_CLOEXEC, st_after_ms(5000)), 4);
    CHECK(memcmp(data, "pass", 4) == 0);
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    CHECK(c != NULL && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS);
    if (c) {
        int got;
        memcpy(&got, CMSG_DATA(c), sizeof got);
        CHECK(got >= 0 && got != msg_pipe[1]);
        CHECK_EQ(iop_write(got, "via", 3, st_after_ms(5000)), 3);   /* the passed pipe end */
        CHECK_EQ(iop_close(got), 0);
    }
    char back[8] = { 0 };
    CHECK_EQ(iop_read(msg_pipe[0], back, sizeof back, st_after_ms(5000)), 3);
    CHECK(memcmp(back, "via", 3) == 0);
    st_done++;
    return NULL;
}

static void *msg_sender(void *arg)
{
    (void)arg;
    iop_sleep(5 * MS);   /* the receiver waits first */
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int))]; } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = { .iov_base = "pass", .iov_len = 4 };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                        .msg_controllen = sizeof ctl.buf };
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &msg_pipe[1], sizeof(int));
    CHECK_EQ(iop_sendmsg(msg_fds[0], &m, 0, st_after_ms(5000)), 4);

    /* two datagrams on a SOCK_DGRAM pair stay two */
    int d[2];
    CHECK_EQ(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, d), 0);
    struct iovec a = { .iov_base = "one", .iov_len = 3 }, b = { .iov_base = "three", .iov_len = 5 };
    struct msghdr ma = { .msg_iov = &a, .msg_iovlen = 1 }, mb = { .msg_iov = &b, .msg_iovlen = 1 };
    CHECK_EQ(iop_sendmsg(d[0], &ma, 0, 0), 3);
    CHECK_EQ(iop_sendmsg(d[0], &mb, 0, 0), 5);
    char buf[16] = { 0 };
    struct iovec r = { .iov_base = buf, .iov_len = sizeof buf };
    struct msghdr mr = { .msg_iov = &r, .msg_iovlen = 1 };
    CHECK_EQ(iop_recvmsg(d[1], &mr, 0, st_after_ms(5000)), 3);
    CHECK(memcmp(buf, "one", 3) == 0);
    CHECK_EQ(iop_recvmsg(d[1], &mr, 0, st_after_ms(5000)), 5);
    CHECK(memcmp(buf, "three", 5) == 0);
    CHECK_EQ(iop_close(d[0]), 0);
    CHECK_EQ(iop_close(d[1]), 0);
    st_done++;
    return NULL;
}

static void test_sendmsg_recvmsg_rights(void **state)
{
    (void)state;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, msg_fds), 0);
    tu_pipe(msg_pipe);
    st_go(msg_receiver, NULL, "receiver");
    st_go(msg_sender, NULL, "sender");
    st_run_until_done(2, 10000);
    assert_int_equal(iop_fd_close(st_loop, msg_fds[0]), 0);
    assert_int_equal(iop_fd_close(st_loop, msg_fds[1]), 0);
    assert_int_equal(iop_fd_close(st_loop, msg_pipe[0]), 0);
    assert_int_equal(iop_fd_close(st_loop, msg_pipe[1]), 0);
}

int main(int argc, char **argv)
{
    const char *spec = tu_backend_from_args(argc, argv);
    if (spec && tu_backend_set(spec) < 0) {
        fprintf(stderr, "usage: %s [BACKEND[+sqpoll]] [FILTER]\n", argv[0]);
        return 2;
    }
    if (argc > 2)
        cmocka_set_test_filter(argv[2]);
#define T(f) cmocka_unit_test_setup_teardown(f, st_setup, st_teardown)
    const struct CMUnitTest tests[] = {
        T(test_wait_fd_close),
        T(test_tcp_accept_connect_send_recv),
        T(test_pipe_read_write),
        T(test_deadlines),
        T(test_connect_refused),
        T(test_cancel_recv_from_main),
        T(test_cancel_recv_from_coroutine),
        T(test_cancel_refused_is_retried),
        T(test_cancel_refused_without_memory),
        T(test_op_ends_before_cancel_retry),
        T(test_close_fails_parked_reader),
        T(test_close_when_cancelled),
        T(test_wait_fd),
        T(test_sendmsg_recvmsg_rights),
    };
    char name[64];
    snprintf(name, sizeof name, "coro.io.%s", spec ? spec : "default");
    return cmocka_run_group_tests_name(name, tests, NULL, NULL);
}
