/* Receive streams (iop_recv_stream_*) over real loopback TCP, on the backend named
 * by argv[1]: bytes come in order and whole, also when the receive pool runs dry and
 * the stream falls back to plain receives; unread; deadlines leave the series
 * running; a cancelled reader still closes its stream; close gives every queued
 * buffer back; a loop without a pool is refused; a dry pool's fallback under unread,
 * deadline and cancel; two streams sharing a small pool; an fd closed under a stream;
 * a stream whose coroutine takes nothing holds only its share of the pool. */
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>
#include "sched_test.h"

#define POOL_BUFS 4
#define POOL_SIZE 256

static int pool_setup(void **state)
{
    (void)state;
    iop_loop_opts_t o = { .size = sizeof o, .buf_count = POOL_BUFS, .buf_size = POOL_SIZE };
    st_loop = tu_loop_new_opts(&o);
    st_done = 0;
    st_failure[0] = '\0';
    return 0;
}

static int fds[2];                 /* [0] client, [1] server side */

/* ---- every byte, in order, through a pool far smaller than the data ---------------- */

static unsigned char pattern(size_t i) { return (unsigned char)(i * 131 + (i >> 9)); }

/* One transfer: a writer sends total bytes of pattern in chunks, a reader takes them
 * through a stream (with a buffer of own_len for a dry pool), giving half of every
 * unread_every-th pool buffer back, and pauses now and then so that results pile up
 * and the pool runs dry. */
typedef struct bulk {
    int *pair;                     /* [0] writer, [1] reader */
    size_t total, chunk, own_len;
    unsigned unread_every;         /* 0 = never */
    size_t fallbacks, pooled;      /* reads into the own buffer, into the pool */
} bulk_t;

static void *bulk_reader(void *arg)
{
    bulk_t *b = arg;
    iop_recv_stream_t s;
    CHECK_EQ(iop_recv_stream_open(&s, b->pair[1], 0), 0);
    char own[1000];
    size_t got = 0;
    int bad = 0;
    unsigned k = 0;
    for (;;) {
        const char *data;
        ssize_t n = iop_recv_stream_next(&s, own, b->own_len, &data, st_after_ms(10000));
        CHECK(n >= 0);
        if (n <= 0)
            break;
        if (data == own) {
            b->fallbacks++;
        } else {
            b->pooled++;
            if (b->unread_every && n > 3 && ++k % b->unread_every == 0) {
                CHECK_EQ(iop_recv_stream_unread(&s, (size_t)n / 2), 0);
                n -= n / 2;
            }
        }
        for (ssize_t i = 0; i < n && !bad; i++)
            if ((unsigned char)data[i] != pattern(got + (size_t)i))
                bad = 1;
        got += (size_t)n;
        if ((got / 4096) % 8 == 0)
            iop_sleep(1 * MS);
    }
    CHECK(!bad);
    CHECK_EQ(got, b->total);
    CHECK_EQ(iop_recv_stream_next(&s, own, b->own_len, &(const char *){ 0 }, 0), 0);   /* end stays */
    CHECK_EQ(iop_recv_stream_close(&s), 0);
    st_done++;
    return NULL;
}

#define BULK_MAX (512 * 1024)

static void *bulk_writer(void *arg)
{
    bulk_t *b = arg;
    static unsigned char src[BULK_MAX];
    for (size_t i = 0; i < b->total; i++)
        src[i] = pattern(i);
    for (size_t off = 0; off < b->total;) {
        size_t chunk = b->total - off < b->chunk ? b->total - off : b->chunk;
        ssize_t n = iop_send(b->pair[0], src + off, chunk, 0, st_after_ms(10000));
        CHECK(n > 0);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    CHECK_EQ(shutdown(b->pair[0], SHUT_WR), 0);
    st_done++;
    return NULL;
}

static void test_bulk_in_order_with_a_dry_pool(void **state)
{
    (void)state;
    tu_tcp_pair(fds);
    bulk_t b = { .pair = fds, .total = BULK_MAX, .chunk = 3000, .own_len = 1000 };
    st_go(bulk_reader, &b, "reader");
    st_go(bulk_writer, &b, "writer");
    st_run_until_done(2, 30000);
    /* Both ways of receiving ran: the pool, and the plain recv once it was dry. */
    assert_true(b.pooled > 0);
    assert_true(b.fallbacks > 0);
    assert_int_equal(iop_loop_run(st_loop, IOP_RUN_NOWAIT), 0);   /* nothing left armed */
    iop_fd_close(st_loop, fds[0]);
    iop_fd_close(st_loop, fds[1]);
}

/* ---- unread, deadlines, small messages one by one ----------------------------------- */

static void *chat_reader(void *arg)
{
    (void)arg;
    iop_recv_stream_t s;
    const char *data;
    char own[64];
    CHECK_EQ(iop_recv_stream_open(&s, fds[1], 0), 0);
    /* Nothing yet: the deadline ends the wait, not the series. */
    CHECK_EQ(iop_recv_stream_next(&s, own, sizeof own, &data, st_after_ms(20)), -ETIMEDOUT);
    CHECK_EQ(write(fds[0], "hello world", 11), 11);
    ssize_t n = iop_recv_stream_next(&s, own, sizeof own, &data, st_after_ms(5000));
    CHECK_EQ(n, 11);
    if (n == 11) {
        CHECK(data != own && memcmp(data, "hello world", 11) == 0);
        CHECK_EQ(iop_recv_stream_unread(&s, 5), 0);    /* "world" again */
        CHECK_EQ(iop_recv_stream_unread(&s, 7), -EINVAL);
        CHECK_EQ(iop_recv_stream_next(&s, own, sizeof own, &data, st_after_ms(5000)), 5);
        CHECK(memcmp(data, "world", 5) == 0);
        CHECK_EQ(iop_recv_stream_unread(&s, 5), 0);
        CHECK_EQ(iop_recv_stream_unread(&s, 1), -EINVAL);
        CHECK_EQ(iop_recv_stream_next(&s, own, sizeof own, &data, st_after_ms(5000)), 5);
        CHECK(memcmp(data, "world", 5) == 0);
    }
    /* One message after another, each waited for. */
    for (int i = 0; i < 50; i++) {
        char msg[16];
        int len = snprintf(msg, sizeof msg, "m%d.", i);
        CHECK_EQ(write(fds[0], msg, (size_t)len), len);
        char got[16];
        int have = 0;
        while (have < len) {
            n = iop_recv_stream_next(&s, own, sizeof own, &data, st_after_ms(5000));
            CHECK(n > 0 && have + n <= len);
            if (n <= 0 || have + n > len)
                break;
            memcpy(got + have, data, (size_t)n);
            have += (int)n;
        }
        CHECK(have == len && memcmp(got, msg, (size_t)len) == 0);
    }
    CHECK_EQ(iop_recv_stream_unread(&s, 0), 0);
    CHECK_EQ(iop_recv_stream_close(&s), 0);
    /* The fd is the caller's again: a plain recv works. */
    CHECK_EQ(write(fds[0], "x", 1), 1);
    CHECK_EQ(iop_recv(fds[1], own, sizeof own, 0, st_after_ms(5000)), 1);
    st_done++;
    return NULL;
}

static void test_unread_and_deadlines(void **state)
{
    (void)state;
    tu_tcp_pair(fds);
    st_go(chat_reader, NULL, "reader");
    st_run_until_done(1, 10000);
    iop_fd_close(st_loop, fds[0]);
    iop_fd_close(st_loop, fds[1]);
}

/* ---- cancel, close with data queued, a reset peer ------------------------------------ */

static void *cancelled_reader(void *arg)
{
    (void)arg;
    iop_recv_stream_t s;
    const char *data;
    char own[8];
    CHECK_EQ(iop_recv_stream_open(&s, fds[1], 0), 0);
    CHECK_EQ(iop_recv_stream_next(&s, own, sizeof own, &data, 0), -ECANCELED);
    CHECK_EQ(iop_recv_stream_next(&s, own, sizeof own, &data, 0), -ECANCELED);   /* sticky */
    CHECK_EQ(iop_recv_stream_close(&s), 0);    /* runs to the end anyway */
    st_done++;
    return (void *)1;
}

static void test_cancelled_reader_closes(void **state)
{
    (void)state;
    tu_tcp_pair(fds);
    iop_coro_t *c;
    assert_int_equal(iop_go(st_loop, cancelled_reader, NULL, NULL, &c), 0);
    tu_run_for(st_loop, 5);
    assert_int_equal(iop_cancel(c), 0);
    void *res;
    assert_int_equal(iop_join(c, &res, iop_now(st_loop) + 5000 * MS), 0);
    assert_ptr_equal(res, (void *)1);
    st_assert_ok();
    assert_int_equal(iop_loop_run(st_loop, IOP_RUN_NOWAIT), 0);   /* the series has ended */
    iop_fd_close(st_loop, fds[0]);
    iop_fd_close(st_loop, fds[1]);
}

/* Fills every pool buffer of the stream without reading, closes it, then checks
 * that a second stream gets the whole pool back: nothing leaked. */
static void *hoarder(void *arg)
{
    (void)arg;
    iop_recv_stream_t s;
    const char *data;
    char own[8];
    CHECK_EQ(iop_recv_stream_open(&s, fds[1], 0), 0);
    for (int i = 0; i < POOL_BUFS; i++) {
        CHECK_EQ(write(fds[0], "abc", 3), 3);
        iop_sleep(5 * MS);        /* each lands in a buffer of its own */
    }
    CHECK_EQ(iop_recv_stream_next(&s, own, sizeof own, &data, st_after_ms(5000)), 3);
    CHECK_EQ(iop_recv_stream_close(&s), 0);
    /* Drain what the first stream left in the socket, if anything. */
    while (recv(fds[1], own, sizeof own, MSG_DONTWAIT) > 0)
        ;
    CHECK_EQ(iop_recv_stream_open(&s, fds[1], 0), 0);
    int pooled = 0, plain = 0;
    for (int i = 0; i < POOL_BUFS; i++) {
        CHECK_EQ(write(fds[0], "defg", 4), 4);
        iop_sleep(5 * MS);
    }
    for (int got = 0; got < 4 * POOL_BUFS;) {
        ssize_t n = iop_recv_stream_next(&s, own, sizeof own, &data, st_after_ms(5000));
        CHECK(n > 0);
        if (n <= 0)
            break;
        pooled += data != own;
        plain += data == own;
        got += (int)n;
    }
    CHECK(pooled > 0);
    CHECK_EQ(plain, 0);           /* the whole pool was there to take them */
    /* The peer resets: queued data first, then the error, which stays. */
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    CHECK_EQ(setsockopt(fds[0], SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    CHECK_EQ(write(fds[0], "zz", 2), 2);
    iop_sleep(5 * MS);
    CHECK_EQ(close(fds[0]), 0);
    fds[0] = -1;
    ssize_t n = iop_recv_stream_next(&s, own, sizeof own, &data, st_after_ms(5000));
    if (n == 2)                   /* the data, if the reset did not overtake it */
        n = iop_recv_stream_next(&s, own, sizeof own, &data, st_after_ms(5000));
    CHECK_EQ(n, -ECONNRESET);
    CHECK_EQ(iop_recv_stream_next(&s, own, sizeof own, &data, st_after_ms(5000)), -ECONNRESET);
    CHECK_EQ(iop_recv_stream_close(&s), 0);
    st_done++;
    return NULL;
}

static void test_close_returns_buffers(void **state)
{
    (void)state;
    tu_tcp_pair(fds);
    st_go(hoarder, NULL, "hoarder");
    st_run_until_done(1, 10000);
    iop_fd_close(st_loop, fds[1]);
}

/* A refused cancel at close is sent again: close still ends the stream, and the fd
 * and the pool serve a new one. */
static void *refused_closer(void *arg)
{
    (void)arg;
    char own[64];
    const char *data;
    for (int round = 0; round < 2; round++) {
        iop_recv_stream_t s;
        CHECK_EQ(iop_recv_stream_open(&s, fds[1], 0), 0);
        CHECK_EQ(write(fds[0], "abcd", 4), 4);
        CHECK_EQ(iop_recv_stream_next(&s, own, sizeof own, &data, st_after_ms(5000)), 4);
        CHECK(data != own && memcmp(data, "abcd", 4) == 0);
        if (round == 0)
            iop__cancel_refuse_next(2);
        CHECK_EQ(iop_recv_stream_close(&s), 0);
        if (round == 0)
            CHECK_EQ(iop__cancel_refuse_next(-1), 2);
    }
    st_done++;
    return NULL;
}

static void test_close_retries_a_refused_cancel(void **state)
{
    (void)state;
    tu_tcp_pair(fds);
    st_go(refused_closer, NULL, "closer");
    st_run_until_done(1, 10000);
    assert_int_equal(iop_loop_run(st_loop, IOP_RUN_NOWAIT), 0);   /* nothing left in flight */
    iop_fd_close(st_loop, fds[0]);
    iop_fd_close(st_loop, fds[1]);
}

static void *no_pool(void *arg)
{
    (void)arg;
    iop_recv_stream_t s;
    CHECK_EQ(iop_recv_stream_open(&s, fds[1], 0), -EINVAL);
    CHECK(strstr(iop_last_error(), "receive pool") != NULL);
    st_done++;
    return NULL;
}

static void test_no_pool(void **state)
{
    (void)state;
    tu_tcp_pair(fds);
    st_go(no_pool, NULL, "no pool");
    st_run_until_done(1, 5000);
    iop_recv_stream_t s;
    assert_int_equal(iop_recv_stream_open(&s, fds[1], 0), -EPERM);   /* not in a coroutine */
    iop_fd_close(st_loop, fds[0]);
    iop_fd_close(st_loop, fds[1]);
}

/* ---- a dry pool: the fallback receive, unread and cancel there ------------------------ */

static int fds2[2];
static iop_recv_stream_t hog_s;
static int hog_state;              /* 1 = holding the pool, 2 = release it */

/* Holds every pool buffer: a stream whose results it never takes. */
static void *hog(void *arg)
{
    int *pair = arg;
    CHECK_EQ(iop_recv_stream_open(&hog_s, pair[1], 0), 0);
    for (int i = 0; i < POOL_BUFS; i++) {
        CHECK_EQ(write(pair[0], "abc", 3), 3);
        iop_sleep(5 * MS);
    }
    hog_state = 1;
    while (hog_state != 2)
        iop_sleep(1 * MS);
    CHECK_EQ(iop_recv_stream_close(&hog_s), 0);
    hog_state = 3;
    st_done++;
    return NULL;
}

/* Receives with the pool dry: into its own buffer, which unread refuses; a deadline,
 * then a cancel, end waits of the fallback (readiness backends) or of the stream. */
static iop_coro_t *victim_c;
static ssize_t victim_res[3];
static void *victim(void *arg)
{
    (void)arg;
    iop_recv_stream_t s;
    const char *data;
    char own[64];
    while (hog_state != 1)
        iop_sleep(1 * MS);
    CHECK_EQ(iop_recv_stream_open(&s, fds2[1], 0), 0);
    CHECK_EQ(write(fds2[0], "xy", 2), 2);
    victim_res[0] = iop_recv_stream_next(&s, own, sizeof own, &data, st_after_ms(5000));
    CHECK(victim_res[0] == 2 && data == own);     /* the pool is dry */
    CHECK_EQ(iop_recv_stream_unread(&s, 1), -EINVAL);  /* not a pool buffer */
    victim_res[1] = iop_recv_stream_next(&s, own, sizeof own, &data, st_after_ms(50));
    CHECK_EQ(victim_res[1], -ETIMEDOUT);
    victim_res[2] = iop_recv_stream_next(&s, own, sizeof own, &data, 0);   /* cancelled here */
    CHECK_EQ(victim_res[2], -ECANCELED);
    CHECK_EQ(iop_recv_stream_close(&s), 0);
    st_done++;
    return NULL;
}

static void test_cancel_in_fallback(void **state)
{
    (void)state;
    tu_tcp_pair(fds);
    tu_tcp_pair(fds2);
    hog_state = 0;
    memset(victim_res, 0, sizeof victim_res);
    st_go(hog, fds, "hog");
    assert_int_equal(iop_go(st_loop, victim, NULL, NULL, &victim_c), 0);
    for (int i = 0; i < 200 && victim_res[1] != -ETIMEDOUT; i++)
        tu_run_for(st_loop, 5);
    tu_run_for(st_loop, 20);
    assert_int_equal(iop_cancel(victim_c), 0);
    assert_int_equal(iop_join(victim_c, NULL, iop_now(st_loop) + 5000 * MS), 0);
    hog_state = 2;
    st_run_until_done(2, 5000);
    assert_int_equal(iop_loop_run(st_loop, IOP_RUN_NOWAIT), 0);
    iop_fd_close(st_loop, fds[0]);
    iop_fd_close(st_loop, fds[1]);
    iop_fd_close(st_loop, fds2[0]);
    iop_fd_close(st_loop, fds2[1]);
}

/* ---- two bulk transfers through one small pool at once, with unreads -------------------- */

static void test_two_streams_one_pool(void **state)
{
    (void)state;
    tu_tcp_pair(fds);
    tu_tcp_pair(fds2);
    bulk_t b1 = { .pair = fds, .total = 256 * 1024, .chunk = 1500, .own_len = 700, .unread_every = 3 };
    bulk_t b2 = b1;
    b2.pair = fds2;
    st_go(bulk_reader, &b1, "r1");
    st_go(bulk_reader, &b2, "r2");
    st_go(bulk_writer, &b1, "w1");
    st_go(bulk_writer, &b2, "w2");
    st_run_until_done(4, 30000);
    assert_int_equal(iop_loop_run(st_loop, IOP_RUN_NOWAIT), 0);
    iop_fd_close(st_loop, fds[0]);
    iop_fd_close(st_loop, fds[1]);
    iop_fd_close(st_loop, fds2[0]);
    iop_fd_close(st_loop, fds2[1]);
}

/* ---- another coroutine closes the fd under a parked reader: an error, not a hang ----- */

static ssize_t closed_res;
static void *closed_reader(void *arg)
{
    (void)arg;
    iop_recv_stream_t s;
    const char *data;
    char own[64];
    CHECK_EQ(iop_recv_stream_open(&s, fds[1], 0), 0);
    closed_res = iop_recv_stream_next(&s, own, sizeof own, &data, st_after_ms(3000));
    CHECK(closed_res < 0 && closed_res != -ETIMEDOUT);
    CHECK_EQ(iop_recv_stream_close(&s), 0);
    st_done++;
    return NULL;
}

static void *closer(void *arg)
{
    (void)arg;
    iop_sleep(20 * MS);
    CHECK_EQ(iop_close(fds[1]), 0);
    st_done++;
    return NULL;
}

static void test_fd_closed_under_stream(void **state)
{
    (void)state;
    tu_tcp_pair(fds);
    st_go(closed_reader, NULL, "reader");
    st_go(closer, NULL, "closer");
    st_run_until_done(2, 10000);
    assert_int_equal(iop_loop_run(st_loop, IOP_RUN_NOWAIT), 0);
    iop_fd_close(st_loop, fds[0]);
}

/* Without a buffer of its own a stream can only wait for the pool: once the pool
 * has run dry and refilled, the next call arms the series again and gets data. */
static void *bufless(void *arg)
{
    (void)arg;
    iop_recv_stream_t s;
    const char *data;
    CHECK_EQ(iop_recv_stream_open(&s, fds[1], 0), 0);
    /* Every pool buffer queued, then one more message: the series ends dry. */
    for (int i = 0; i <= POOL_BUFS; i++) {
        CHECK_EQ(write(fds[0], "abc", 3), 3);
        iop_sleep(5 * MS);
    }
    int got = 0;
    for (int i = 0; i < 2 * POOL_BUFS && got < 3 * (POOL_BUFS + 1); i++) {
        ssize_t n = iop_recv_stream_next(&s, NULL, 0, &data, st_after_ms(5000));
        CHECK(n > 0);
        if (n <= 0)
            break;
        got += (int)n;
    }
    CHECK_EQ(got, 3 * (POOL_BUFS + 1));   /* the last one came after the pool refilled */
    CHECK_EQ(iop_recv_stream_close(&s), 0);
    st_done++;
    return NULL;
}

static void test_no_buffer_after_a_dry_pool(void **state)
{
    (void)state;
    tu_tcp_pair(fds);
    st_go(bufless, NULL, "bufless");
    st_run_until_done(1, 10000);
    iop_fd_close(st_loop, fds[0]);
    iop_fd_close(st_loop, fds[1]);
}

/* ---- a stream whose coroutine is busy elsewhere leaves the pool to the others ---------- */

#define SHARE_POOL 32               /* a stream may hold a quarter: 8 */
#define SHARE_TOTAL (32 * 1024)     /* four times the pool */

static int share_setup(void **state)
{
    (void)state;
    iop_loop_opts_t o = { .size = sizeof o, .buf_count = SHARE_POOL, .buf_size = POOL_SIZE };
    st_loop = tu_loop_new_opts(&o);
    st_done = 0;
    st_failure[0] = '\0';
    return 0;
}

static iop_recv_stream_t greedy_s;
static int greedy_open, trickle_done, polite_done;
static unsigned greedy_most;       /* the most buffers the greedy stream's queue held */

/* Sends SHARE_TOTAL bytes of pattern to the greedy stream in small pieces, as a
 * peer that goes on sending would, so that the series runs on while its queue grows. */
static void *trickle_writer(void *arg)
{
    (void)arg;
    unsigned char piece[512];
    for (size_t off = 0; off < SHARE_TOTAL; off += sizeof piece) {
        for (size_t i = 0; i < sizeof piece; i++)
            piece[i] = pattern(off + i);
        CHECK_EQ(iop_send(fds[0], piece, sizeof piece, 0, st_after_ms(10000)), (ssize_t)sizeof piece);
        iop_sleep(MS / 2);
        if (greedy_s.queued > greedy_most)
            greedy_most = greedy_s.queued;
    }
    CHECK_EQ(shutdown(fds[0], SHUT_WR), 0);
    trickle_done = 1;
    st_done++;
    return NULL;
}

/* Opens its stream and takes nothing until the polite one is done, then all of it. */
static void *greedy_reader(void *arg)
{
    (void)arg;
    CHECK_EQ(iop_recv_stream_open(&greedy_s, fds[1], 0), 0);
    greedy_open = 1;
    for (int i = 0; i < 2000 && !polite_done; i++)
        iop_sleep(5 * MS);
    char own[256];
    size_t got = 0;
    int bad = 0;
    for (;;) {
        const char *data;
        ssize_t n = iop_recv_stream_next(&greedy_s, own, sizeof own, &data, st_after_ms(10000));
        CHECK(n >= 0);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n && !bad; i++)
            bad = (unsigned char)data[i] != pattern(got + (size_t)i);
        got += (size_t)n;
    }
    CHECK(!bad);
    CHECK_EQ(got, SHARE_TOTAL);     /* (io_uring may take every free buffer at a time here) */
    CHECK_EQ(iop_recv_stream_close(&greedy_s), 0);
    st_done++;
    return NULL;
}

/* Once the greedy stream's peer has sent everything, another stream still receives
 * into the pool. */
static void *polite_reader(void *arg)
{
    (void)arg;
    for (int i = 0; i < 2000 && !(greedy_open && trickle_done); i++)
        iop_sleep(5 * MS);
    iop_sleep(20 * MS);              /* whatever the series would still take, it has */
    iop_recv_stream_t s;
    const char *data;
    char own[64];
    CHECK_EQ(iop_recv_stream_open(&s, fds2[1], 0), 0);
    CHECK_EQ(write(fds2[0], "polite", 6), 6);
    ssize_t n = iop_recv_stream_next(&s, own, sizeof own, &data, st_after_ms(5000));
    CHECK_EQ(n, 6);
    CHECK(n == 6 && data != own && memcmp(data, "polite", 6) == 0);   /* from the pool */
    CHECK_EQ(iop_recv_stream_close(&s), 0);
    polite_done = 1;
    st_done++;
    return NULL;
}

static void test_stream_holds_its_share(void **state)
{
    (void)state;
    tu_tcp_pair(fds);
    tu_tcp_pair(fds2);
    greedy_open = trickle_done = polite_done = 0;
    greedy_most = 0;
    st_go(greedy_reader, NULL, "greedy");
    st_go(trickle_writer, NULL, "writer");
    st_go(polite_reader, NULL, "polite");
    st_run_until_done(3, 30000);
    /* A quarter of the pool, and what the series took before its cancel landed. */
    if (greedy_most > SHARE_POOL / 4 + 4)
        fail_msg("the greedy stream held %u of %d buffers", greedy_most, SHARE_POOL);
    assert_int_equal(iop_loop_run(st_loop, IOP_RUN_NOWAIT), 0);
    iop_fd_close(st_loop, fds[0]);
    iop_fd_close(st_loop, fds[1]);
    iop_fd_close(st_loop, fds2[0]);
    iop_fd_close(st_loop, fds2[1]);
}

/* The same close while the stream holds its share (paused), or the pool ran dry:
 * nothing is in flight for the close to fail, and the fd number is soon another
 * connection's (an accept takes it). The stream gives what it had queued, then
 * -ECANCELED, never a byte of that other connection: it used to arm again on the
 * number. */
static int other[2], reused_fd = -1, stopped;
static iop_recv_stream_t paused_s;

static void *paused_reader(void *arg)
{
    (void)arg;
    CHECK_EQ(iop_recv_stream_open(&paused_s, fds[1], 0), 0);
    static char blob[32768];
    memset(blob, 'a', sizeof blob);
    CHECK_EQ(send(fds[0], blob, sizeof blob, MSG_DONTWAIT), (ssize_t)sizeof blob);
    iop_sleep(50 * MS);            /* at its share, or the pool dry: nothing in flight */
    stopped = 1;
    while (reused_fd < 0)
        iop_sleep(1 * MS);
    char own[POOL_SIZE];
    size_t mine = 0, theirs = 0;
    ssize_t n;
    for (int i = 0; i < 400; i++) {
        const char *data;
        n = iop_recv_stream_next(&paused_s, own, sizeof own, &data, st_after_ms(1000));
        if (n <= 0)
            break;
        for (ssize_t j = 0; j < n; j++)
            *(data[j] == 'a' ? &mine : &theirs) += 1;
    }
    CHECK_EQ(theirs, 0);
    CHECK(mine > 0);
    CHECK_EQ(n, -ECANCELED);
    CHECK_EQ(iop_recv_stream_close(&paused_s), 0);
    st_done++;
    return NULL;
}

static void *closer_then_accept(void *arg)
{
    (void)arg;
    while (!stopped)
        iop_sleep(1 * MS);
    int num = fds[1];
    CHECK_EQ(iop_close(fds[1]), 0);
    reused_fd = fcntl(other[1], F_DUPFD, num);   /* the number comes back, as from accept */
    CHECK_EQ(reused_fd, num);
    CHECK_EQ(write(other[0], "INTRUDER", 8), 8);
    st_done++;
    return NULL;
}

static void test_fd_closed_under_paused_stream(void **state)
{
    (void)state;
    tu_tcp_pair(other);
    tu_tcp_pair(fds);
    reused_fd = -1;
    stopped = 0;
    st_go(paused_reader, NULL, "reader");
    st_go(closer_then_accept, NULL, "closer");
    st_run_until_done(2, 10000);
    iop_fd_close(st_loop, fds[0]);
    iop_fd_close(st_loop, other[0]);
    iop_fd_close(st_loop, other[1]);
    if (reused_fd >= 0)
        iop_fd_close(st_loop, reused_fd);
}

/* A begin that fails (here: the coroutine is cancelled already) leaves the record
 * idle, as coro.h says: nothing sent, and a wait or a close on it returns at once.
 * Both records were left as they were, and the wait read their garbage. */
static void *cancelled_begins(void *arg)
{
    (void)arg;
    iop_send_behind_t sb;
    iop_recv_stream_t rs;
    memset(&sb, 0xab, sizeof sb);
    memset(&rs, 0xab, sizeof rs);
    iop_cancel(iop_self());
    CHECK_EQ(iop_send_behind(&sb, fds[1], "hello", 5, 0), -ECANCELED);
    CHECK_EQ(iop_send_behind_sent(&sb), 0);
    CHECK_EQ(iop_send_behind_wait(&sb, 0), 0);
    CHECK_EQ(iop_recv_stream_open(&rs, fds[1], 0), -ECANCELED);
    CHECK_EQ(iop_recv_stream_close(&rs), 0);
    st_done++;
    return NULL;
}

static void test_failed_begins_leave_records_idle(void **state)
{
    (void)state;
    tu_tcp_pair(fds);
    st_go(cancelled_begins, NULL, "cancelled");
    st_run_until_done(1, 5000);
    iop_fd_close(st_loop, fds[0]);
    iop_fd_close(st_loop, fds[1]);
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
#define T(f) cmocka_unit_test_setup_teardown(f, pool_setup, st_teardown)
    const struct CMUnitTest tests[] = {
        T(test_bulk_in_order_with_a_dry_pool),
        T(test_unread_and_deadlines),
        T(test_cancelled_reader_closes),
        T(test_close_returns_buffers),
        T(test_close_retries_a_refused_cancel),
        T(test_cancel_in_fallback),
        T(test_two_streams_one_pool),
        T(test_fd_closed_under_stream),
        T(test_no_buffer_after_a_dry_pool),
        cmocka_unit_test_setup_teardown(test_no_pool, st_setup, st_teardown),
        cmocka_unit_test_setup_teardown(test_stream_holds_its_share, share_setup, st_teardown),
        cmocka_unit_test_setup_teardown(test_fd_closed_under_paused_stream, share_setup, st_teardown),
        cmocka_unit_test_setup_teardown(test_failed_begins_leave_records_idle, share_setup, st_teardown),
    };
    char name[64];
    snprintf(name, sizeof name, "coro.recv_stream.%s", spec ? spec : "default");
    return cmocka_run_group_tests_name(name, tests, NULL, NULL);
}
