/* Sends behind (iop_send_behind / iop_send_behind_wait) over real loopback TCP, on
 * the backend named by argv[1]: the coroutine goes on while its send runs; a send
 * far larger than the socket buffers arrives whole and in order (the wait sends the
 * rest of short sends), also while nobody waits for it; a send the peer never takes
 * ends at the deadline, and the peer gets exactly what iop_send_behind_sent counts;
 * a cancel does not cut a send short before its deadline but does at once without
 * one; a reset peer is an error; a send after the wait follows it; idle records and
 * misuse. */
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "sched_test.h"

static int fds[2];                 /* [0] client, [1] server side */

static unsigned char pattern(size_t i) { return (unsigned char)(i * 131 + (i >> 9)); }

#define BIG (4u << 20)             /* far more than loopback's socket buffers */
static unsigned char big[BIG];

static void fill_big(void)
{
    for (size_t i = 0; i < BIG; i++)
        big[i] = pattern(i);
}

/* Small socket buffers, so that a big send is short many times over. */
static void small_buffers(void)
{
    int sz = 16384;
    assert_int_equal(setsockopt(fds[1], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz), 0);
    assert_int_equal(setsockopt(fds[0], SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz), 0);
}

/* Reads len bytes of pattern from offset on fd; how many matched in order. */
static size_t read_pattern(int fd, size_t offset, size_t len, unsigned pause_every)
{
    static char buf[65536];
    size_t got = 0;
    unsigned k = 0;
    while (got < len) {
        size_t want = len - got < sizeof buf ? len - got : sizeof buf;
        ssize_t n = iop_recv(fd, buf, want, 0, st_after_ms(10000));
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            if ((unsigned char)buf[i] != pattern(offset + got + (size_t)i))
                return got + (size_t)i;
        got += (size_t)n;
        if (pause_every && ++k % pause_every == 0)
            iop_sleep(1 * MS);    /* a slow reader: the sender's socket fills up */
    }
    return got;
}

/* ---- the coroutine goes on while the send runs ------------------------------------- */

static void *ping(void *arg)
{
    (void)arg;
    iop_send_behind_t sb;
    CHECK_EQ(iop_send_behind(&sb, fds[1], "ping", 4, 0), 0);
    /* Not waited for: the answer to it can be received first. */
    char buf[8];
    CHECK_EQ(iop_recv(fds[1], buf, sizeof buf, 0, st_after_ms(5000)), 4);
    CHECK(memcmp(buf, "pong", 4) == 0);
    CHECK_EQ(iop_send_behind_wait(&sb, st_after_ms(5000)), 4);
    CHECK_EQ(iop_send_behind_wait(&sb, st_after_ms(5000)), 0);   /* collected: idle */
    st_done++;
    return NULL;
}

static void *pong(void *arg)
{
    (void)arg;
    char buf[8];
    CHECK_EQ(iop_recv(fds[0], buf, sizeof buf, 0, st_after_ms(5000)), 4);
    CHECK(memcmp(buf, "ping", 4) == 0);
    CHECK_EQ(iop_send(fds[0], "pong", 4, 0, st_after_ms(5000)), 4);
    st_done++;
    return NULL;
}

static void test_goes_on_while_sending(void **state)
{
    (void)state;
    tu_tcp_pair(fds);
    st_go(ping, NULL, "ping");
    st_go(pong, NULL, "pong");
    st_run_until_done(2, 10000);
    iop_fd_close(st_loop, fds[0]);
    iop_fd_close(st_loop, fds[1]);
}

/* ---- a big send through small buffers, then a plain send after its wait ----------------- */

static size_t big_got;

static void *big_sender(void *arg)
{
    (void)arg;
    iop_send_behind_t sb;
    CHECK_EQ(iop_send_behind(&sb, fds[1], big, BIG - 1000, 0), 0);
    CHECK_EQ(iop_send_behind_wait(&sb, st_after_ms(20000)), BIG - 1000);
    /* A plain send after the wait comes after it on the wire. */
    CHECK_EQ(iop_send(fds[1], big + BIG - 1000, 1000, 0, st_after_ms(20000)), 1000);
    CHECK_EQ(shutdown(fds[1], SHUT_WR), 0);
    st_done++;
    return NULL;
}

static void *big_reader(void *arg)
{
    (void)arg;
    big_got = read_pattern(fds[0], 0, BIG, 16);
    CHECK_EQ(big_got, BIG);
    char c;
    CHECK_EQ(iop_recv(fds[0], &c, 1, 0, st_after_ms(5000)), 0);   /* nothing more */
    st_done++;
    return NULL;
}

static void test_big_send_whole_and_in_order(void **state)
{
    (void)state;
    tu_tcp_pair(fds);
    small_buffers();
    fill_big();
    st_go(big_sender, NULL, "sender");
    st_go(big_reader, NULL, "reader");
    st_run_until_done(2, 30000);
    assert_int_equal(big_got, BIG);
    iop_fd_close(st_loop, fds[0]);
    iop_fd_close(st_loop, fds[1]);
}

/* ---- a short send goes on while nobody waits for it ------------------------------------ */

/* The sender waits for the reader's word that all of it came before it collects the
 * send: the rest of each short send must go out without the wait, as a server's
 * response must while it waits for the next request. */
static void *unwaited_sender(void *arg)
{
    (void)arg;
    iop_send_behind_t sb;
    CHECK_EQ(iop_send_behind(&sb, fds[1], big, BIG / 4, 0), 0);
    char c;
    CHECK_EQ(iop_recv(fds[1], &c, 1, 0, st_after_ms(20000)), 1);
    CHECK_EQ(iop_send_behind_wait(&sb, st_after_ms(1000)), BIG / 4);
    st_done++;
    return NULL;
}

static void *acking_reader(void *arg)
{
    (void)arg;
    big_got = read_pattern(fds[0], 0, BIG / 4, 4);
    CHECK_EQ(iop_send(fds[0], "k", 1, 0, st_after_ms(1000)), 1);
    st_done++;
    return NULL;
}

static void test_short_send_goes_on_unwaited(void **state)
{
    (void)state;
    tu_tcp_pair(fds);
    small_buffers();
    fill_big();
    big_got = 0;
    st_go(unwaited_sender, NULL, "sender");
    st_go(acking_reader, NULL, "reader");
    st_run_until_done(2, 30000);
    assert_int_equal(big_got, BIG / 4);
    iop_fd_close(st_loop, fds[0]);
    iop_fd_close(st_loop, fds[1]);
}

/* ---- deadlines and cancel ----------------------------------------------------------- */

static uint64_t elapsed_ns;

static size_t stuck_sent;          /* what the stuck send got into the socket */
static ssize_t stuck_more;         /* the plain send after it: 1 or -ETIMEDOUT */

/* The peer does not read: the wait ends at its deadline and the record is idle after;
 * iop_send_behind_sent says how much went. */
static void *stuck_sender(void *arg)
{
    (void)arg;
    iop_send_behind_t sb;
    CHECK_EQ(iop_send_behind(&sb, fds[1], big, BIG, 0), 0);
    uint64_t t0 = iop_update_time(st_loop);
    CHECK_EQ(iop_send_behind_wait(&sb, st_after_ms(50)), -ETIMEDOUT);
    elapsed_ns = iop_update_time(st_loop) - t0;
    stuck_sent = iop_send_behind_sent(&sb);
    CHECK(stuck_sent > 0 && stuck_sent < BIG);
    CHECK_EQ(iop_send_behind_wait(&sb, st_after_ms(50)), 0);
    CHECK_EQ(iop_send_behind_sent(&sb), stuck_sent);
    /* The fd is usable: a plain send goes into what room there is, or times out. */
    stuck_more = iop_send(fds[1], "x", 1, 0, st_after_ms(20));
    CHECK(stuck_more == 1 || stuck_more == -ETIMEDOUT);
    shutdown(fds[1], SHUT_WR);
    st_done++;
    return NULL;
}

/* Then the peer reads: exactly what was counted as sent, then the plain send, then
 * the end. */
static void *stuck_reader(void *arg)
{
    (void)arg;
    CHECK_EQ(read_pattern(fds[0], 0, stuck_sent, 0), stuck_sent);
    char c[2];
    if (stuck_more == 1) {
        CHECK_EQ(iop_recv(fds[0], c, 1, 0, st_after_ms(5000)), 1);
        CHECK_EQ(c[0], 'x');
    }
    CHECK_EQ(iop_recv(fds[0], c, sizeof c, 0, st_after_ms(5000)), 0);
    st_done++;
    return NULL;
}

static void test_deadline_ends_a_stuck_send(void **state)
{
    (void)state;
    tu_tcp_pair(fds);
    small_buffers();
    fill_big();
    st_go(stuck_sender, NULL, "stuck");
    st_run_until_done(1, 10000);
    assert_true(elapsed_ns >= 45 * MS && elapsed_ns < 2000 * MS);
    assert_int_equal(iop_loop_run(st_loop, IOP_RUN_NOWAIT), 0);   /* nothing left in flight */
    st_go(stuck_reader, NULL, "reader");
    st_run_until_done(2, 10000);
    iop_fd_close(st_loop, fds[0]);
    iop_fd_close(st_loop, fds[1]);
}

/* The same with the cancel at the deadline refused twice (a backend with a full
 * queue): it is sent again, and the wait still ends soon after its deadline. */
static void test_deadline_retries_a_refused_cancel(void **state)
{
    (void)state;
    tu_tcp_pair(fds);
    small_buffers();
    fill_big();
    iop__cancel_refuse_next(2);
    st_go(stuck_sender, NULL, "stuck");
    st_run_until_done(1, 10000);
    assert_int_equal(iop__cancel_refuse_next(-1), 2);
    assert_true(elapsed_ns >= 45 * MS && elapsed_ns < 2000 * MS);
    assert_int_equal(iop_loop_run(st_loop, IOP_RUN_NOWAIT), 0);
    st_go(stuck_reader, NULL, "reader");
    st_run_until_done(2, 10000);
    iop_fd_close(st_loop, fds[0]);
    iop_fd_close(st_loop, fds[1]);
}

/* ---- no memory for the deadline's timer ------------------------------------------- */

static int ender_asleep;

/* Ends the shortage: its sleep's timer was armed before the heap was filled. */
static void *shortage_ender(void *arg)
{
    (void)arg;
    ender_asleep = 1;
    CHECK_EQ(iop_sleep(30 * MS), 0);
    st_timers_unstarve();
    st_done++;
    return NULL;
}

/* The wait begins while the timer heap is full and cannot grow: its deadline takes
 * the slot its coroutine keeps there, and still ends the wait (it was dropped, and
 * the wait went on for ever). */
static void *starved_sender(void *arg)
{
    (void)arg;
    CHECK(ender_asleep);
    iop_send_behind_t sb;
    CHECK_EQ(iop_send_behind(&sb, fds[1], big, BIG, 0), 0);
    CHECK(st_timers_starve());
    uint64_t t0 = iop_update_time(st_loop);
    CHECK_EQ(iop_send_behind_wait(&sb, st_after_ms(50)), -ETIMEDOUT);
    elapsed_ns = iop_update_time(st_loop) - t0;
    CHECK(iop_send_behind_sent(&sb) < BIG);
    st_done++;
    return NULL;
}

static void test_deadline_without_memory(void **state)
{
    (void)state;
    tu_tcp_pair(fds);
    small_buffers();
    fill_big();
    ender_asleep = 0;
    st_go(shortage_ender, NULL, "ender");
    st_go(starved_sender, NULL, "starved");
    st_run_until_done(2, 3000);
    iop__alloc_fail_after(-1, 0);
    assert_true(elapsed_ns >= 45 * MS && elapsed_ns < 2000 * MS);
    assert_int_equal(iop_loop_run(st_loop, IOP_RUN_NOWAIT), 0);   /* nothing left in flight */
    iop_fd_close(st_loop, fds[0]);
    iop_fd_close(st_loop, fds[1]);
}

static iop_coro_t *waiter;

/* Cancelled while waiting with a deadline: the send goes on and completes. */
static void *lingering_sender(void *arg)
{
    (void)arg;
    iop_send_behind_t sb;
    CHECK_EQ(iop_send_behind(&sb, fds[1], big, BIG / 4, 0), 0);
    CHECK_EQ(iop_send_behind_wait(&sb, st_after_ms(20000)), BIG / 4);
    char c;
    CHECK_EQ(iop_recv(fds[1], &c, 1, 0, 0), -ECANCELED);   /* the cancel stands */
    st_done++;
    return (void *)1;
}

static void *slow_reader(void *arg)
{
    (void)arg;
    big_got = read_pattern(fds[0], 0, BIG / 4, 4);
    st_done++;
    return NULL;
}

static void test_cancel_lingers_until_the_deadline(void **state)
{
    (void)state;
    tu_tcp_pair(fds);
    small_buffers();
    fill_big();
    big_got = 0;
    assert_int_equal(iop_go(st_loop, lingering_sender, NULL, NULL, &waiter), 0);
    tu_run_for(st_loop, 5);        /* parked in the wait, the peer not reading yet */
    assert_int_equal(iop_cancel(waiter), 0);
    st_go(slow_reader, NULL, "reader");
    void *res = NULL;
    assert_int_equal(iop_join(waiter, &res, iop_now(st_loop) + 20000 * MS), 0);
    assert_ptr_equal(res, (void *)1);
    st_run_until_done(2, 20000);
    assert_int_equal(big_got, BIG / 4);
    iop_fd_close(st_loop, fds[0]);
    iop_fd_close(st_loop, fds[1]);
}

/* Cancelled while waiting without a deadline: the send is cancelled at once. */
static void *unbounded_sender(void *arg)
{
    (void)arg;
    iop_send_behind_t sb;
    CHECK_EQ(iop_send_behind(&sb, fds[1], big, BIG, 0), 0);
    CHECK_EQ(iop_send_behind_wait(&sb, 0), -ECANCELED);
    CHECK_EQ(iop_send_behind_wait(&sb, 0), 0);
    st_done++;
    return (void *)1;
}

static void test_cancel_without_deadline_is_at_once(void **state)
{
    (void)state;
    tu_tcp_pair(fds);
    small_buffers();
    fill_big();
    assert_int_equal(iop_go(st_loop, unbounded_sender, NULL, NULL, &waiter), 0);
    tu_run_for(st_loop, 5);
    assert_int_equal(iop_cancel(waiter), 0);
    void *res = NULL;
    assert_int_equal(iop_join(waiter, &res, iop_now(st_loop) + 2000 * MS), 0);
    assert_ptr_equal(res, (void *)1);
    st_assert_ok();
    assert_int_equal(iop_loop_run(st_loop, IOP_RUN_NOWAIT), 0);
    iop_fd_close(st_loop, fds[0]);
    iop_fd_close(st_loop, fds[1]);
}

/* A send already done when a cancelled coroutine collects it: all of it went. */
static void *done_before_cancel(void *arg)
{
    (void)arg;
    iop_send_behind_t sb;
    CHECK_EQ(iop_send_behind(&sb, fds[1], "abc", 3, 0), 0);
    CHECK_EQ(iop_sleep(10000 * MS), -ECANCELED);
    CHECK_EQ(iop_send_behind_wait(&sb, 0), 3);
    CHECK_EQ(iop_send_behind(&sb, fds[1], "abc", 3, 0), -ECANCELED);   /* nothing new starts */
    st_done++;
    return (void *)1;
}

static void test_cancelled_collects_a_finished_send(void **state)
{
    (void)state;
    tu_tcp_pair(fds);
    assert_int_equal(iop_go(st_loop, done_before_cancel, NULL, NULL, &waiter), 0);
    tu_run_for(st_loop, 20);
    assert_int_equal(iop_cancel(waiter), 0);
    assert_int_equal(iop_join(waiter, NULL, iop_now(st_loop) + 2000 * MS), 0);
    st_assert_ok();
    char buf[8];
    assert_int_equal(recv(fds[0], buf, sizeof buf, MSG_DONTWAIT), 3);
    iop_fd_close(st_loop, fds[0]);
    iop_fd_close(st_loop, fds[1]);
}

/* ---- a peer that resets --------------------------------------------------------------- */

static void *reset_sender(void *arg)
{
    (void)arg;
    iop_send_behind_t sb;
    CHECK_EQ(iop_send_behind(&sb, fds[1], big, BIG, 0), 0);
    iop_sleep(20 * MS);
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    CHECK_EQ(setsockopt(fds[0], SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    CHECK_EQ(close(fds[0]), 0);    /* unread data and SO_LINGER 0: a reset */
    fds[0] = -1;
    ssize_t r = iop_send_behind_wait(&sb, st_after_ms(5000));
    CHECK(r == -ECONNRESET || r == -EPIPE);
    st_done++;
    return NULL;
}

static void test_reset_peer_is_an_error(void **state)
{
    (void)state;
    tu_tcp_pair(fds);
    small_buffers();
    fill_big();
    st_go(reset_sender, NULL, "sender");
    st_run_until_done(1, 10000);
    iop_fd_close(st_loop, fds[1]);
}

/* ---- idle records and misuse ---------------------------------------------------------- */

static void *idle_record(void *arg)
{
    (void)arg;
    iop_send_behind_t sb = { 0 };
    CHECK_EQ(iop_send_behind_wait(&sb, 0), 0);
    /* A bad fd: refused at once, or reported by the wait. */
    int r = iop_send_behind(&sb, -1, "x", 1, 0);
    CHECK(r == 0 || r == -EBADF);
    CHECK_EQ(iop_send_behind_wait(&sb, st_after_ms(1000)), r == 0 ? -EBADF : 0);
    st_done++;
    return NULL;
}

static void test_idle_record_and_outside(void **state)
{
    (void)state;
    st_go(idle_record, NULL, "idle");
    st_run_until_done(1, 5000);
    iop_send_behind_t sb = { 0 };
    assert_int_equal(iop_send_behind(&sb, 0, "x", 1, 0), -EPERM);   /* not in a coroutine */
    assert_int_equal(iop_send_behind_wait(&sb, 0), -EPERM);
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
        T(test_goes_on_while_sending),
        T(test_big_send_whole_and_in_order),
        T(test_short_send_goes_on_unwaited),
        T(test_deadline_ends_a_stuck_send),
        T(test_deadline_retries_a_refused_cancel),
        T(test_deadline_without_memory),
        T(test_cancel_lingers_until_the_deadline),
        T(test_cancel_without_deadline_is_at_once),
        T(test_cancelled_collects_a_finished_send),
        T(test_reset_peer_is_an_error),
        T(test_idle_record_and_outside),
    };
    char name[64];
    snprintf(name, sizeof name, "coro.send_behind.%s", spec ? spec : "default");
    return cmocka_run_group_tests_name(name, tests, NULL, NULL);
}
