/* An echo server with one coroutine per connection (children of a nursery) and
 * 1,000 client coroutines (200 under TSan), all in one process and one loop over loopback TCP. Every
 * client sends its own pseudo-random bytes in pieces of varying size, reads each
 * piece back and compares every byte. Runs on the backend named by argv[1]. */
#include <arpa/inet.h>
#include <sys/socket.h>
#include "sched_test.h"

/* Under TSan (TU_TSAN) 2,000 coroutines' fibers were most of the 25-50 s this test
 * took; what TSan checks here does not depend on the count. */
#define CLIENTS (TU_TSAN ? 200 : 1000)
#define BYTES_PER_CLIENT 6000
#define PIECE_MAX 1500

static struct sockaddr_in server_addr;
static int accepted, served_bytes, clients_ok, conns_closed;

/* Sends all of buf: a send may take only part of it. */
static int send_all(int fd, const unsigned char *buf, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = iop_send(fd, buf + off, len - off, 0, st_after_ms(20000));
        if (n <= 0)
            return n < 0 ? (int)n : -EIO;
        off += (size_t)n;
    }
    return 0;
}

static void *serve_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    unsigned char buf[2048];
    for (;;) {
        ssize_t n = iop_recv(fd, buf, sizeof buf, 0, st_after_ms(20000));
        CHECK_EQ(n < 0 ? n : 0, 0);
        if (n <= 0)
            break;
        CHECK_EQ(send_all(fd, buf, (size_t)n), 0);
        served_bytes += (int)n;
    }
    CHECK_EQ(iop_close(fd), 0);
    conns_closed++;
    return NULL;
}

static void *acceptor(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    iop_nursery_t conns;
    iop_nursery_init(&conns, st_loop);
    for (;;) {
        int fd = iop_accept(lfd, NULL, NULL, 0);
        if (fd < 0) {
            CHECK_EQ(fd, -ECANCELED);   /* how the test stops us */
            break;
        }
        accepted++;
        iop_coro_opts_t o = { .size = sizeof o, .name = "conn" };
        int r = iop_nursery_go(&conns, serve_conn, (void *)(intptr_t)fd, &o);
        CHECK_EQ(r, 0);
    }
    /* Every connection has ended by now: nothing left to cancel. */
    CHECK_EQ(conns.nchildren, 0);
    CHECK_EQ(iop_nursery_close(&conns, st_after_ms(10000)), 0);
    CHECK_EQ(iop_close(lfd), 0);
    return NULL;
}

static void *client(void *arg)
{
    uint32_t id = (uint32_t)(uintptr_t)arg;
    unsigned char out[BYTES_PER_CLIENT], in[PIECE_MAX];
    tu_fill_pattern(out, sizeof out, id + 1);
    int fd = tu_tcp_socket();
    int r = iop_connect(fd, (struct sockaddr *)&server_addr, sizeof server_addr, st_after_ms(20000));
    CHECK_EQ(r, 0);
    uint32_t rng = id * 2654435761u + 1;
    size_t off = 0;
    int ok = r == 0;
    while (ok && off < sizeof out) {
        size_t piece = 1 + tu_rand(&rng) % PIECE_MAX;
        if (piece > sizeof out - off)
            piece = sizeof out - off;
        ok = send_all(fd, out + off, piece) == 0;
        size_t got = 0;
        while (ok && got < piece) {
            ssize_t n = iop_recv(fd, in + got, piece - got, 0, st_after_ms(20000));
            ok = n > 0;
            got += ok ? (size_t)n : 0;
        }
        ok = ok && memcmp(in, out + off, piece) == 0;
        off += piece;
    }
    CHECK(ok);
    CHECK_EQ(iop_close(fd), 0);
    clients_ok += ok;
    st_done++;
    return NULL;
}

static void test_echo_1000_clients(void **state)
{
    (void)state;
    char why[128];
    if (tu_raise_nofile(2 * CLIENTS + 64, why, sizeof why) < 0)
        fail_msg("%s", why);
    accepted = served_bytes = clients_ok = conns_closed = 0;
    int lfd = tu_tcp_listener(&server_addr, CLIENTS);
    iop_coro_t *server;
    iop_coro_opts_t o = { .size = sizeof o, .name = "acceptor" };
    assert_int_equal(iop_go(st_loop, acceptor, (void *)(intptr_t)lfd, &o, &server), 0);
    for (uintptr_t i = 0; i < CLIENTS; i++)
        st_go(client, (void *)i, "client");
    st_run_until_done(CLIENTS, 60000);
    assert_int_equal(clients_ok, CLIENTS);
    assert_int_equal(accepted, CLIENTS);
    assert_int_equal(served_bytes, CLIENTS * BYTES_PER_CLIENT);
    /* Each connection ends by itself at its client's close. */
    assert_true(tu_run_until_count(st_loop, &conns_closed, CLIENTS, 20000));

    assert_int_equal(iop_cancel(server), 0);
    assert_int_equal(iop_join(server, NULL, iop_now(st_loop) + 20000 * MS), 0);
    st_assert_ok();
    assert_int_equal(conns_closed, CLIENTS);
    assert_int_equal(iop_loop_run(st_loop, IOP_RUN_NOWAIT), 0);   /* nothing left behind */
}

int main(int argc, char **argv)
{
    const char *spec = tu_backend_from_args(argc, argv);
    if (spec && tu_backend_set(spec) < 0) {
        fprintf(stderr, "usage: %s [BACKEND[+sqpoll]]\n", argv[0]);
        return 2;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_echo_1000_clients, st_setup, st_teardown),
    };
    char name[64];
    snprintf(name, sizeof name, "coro.echo.%s", spec ? spec : "default");
    return cmocka_run_group_tests_name(name, tests, NULL, NULL);
}
