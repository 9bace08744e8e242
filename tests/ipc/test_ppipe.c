/* The process pipe between real processes: round trips both ways, framing (many
 * small messages, sizes from 0 to max_msg), -EMSGSIZE without loss, -EPIPE after
 * the peer's close and kill -9, descriptor passing, messages cut short by a deadline
 * on either side, forged headers; then from coroutines on the backend named by argv[1] ("plain"
 * runs the plain-process group): parked receives that leave the loop running, large
 * messages, concurrent senders, fds through recvmsg ops.
 *
 * Children never call cmocka: they _exit with a code the parent checks, after closing
 * their end; their buffers are static, so that nothing of theirs is left for a leak
 * checker (valgrind follows the fork) to report. Every child
 * is reaped by pid within a bounded time (killed if it overstays), and dies with the
 * test process (PR_SET_PDEATHSIG). */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "sched_test.h"
#include "ioplex/ppipe.h"
#include "kids.h"
#include "ipc/ppipe_wire.h"

#define MIB (1024 * 1024)
#define FRAG_PAYLOAD (IOP__PPIPE_FRAG_BYTES - (int)sizeof(iop__ppipe_frag_t))

/* ---- children (kids.h) ----------------------------------------------------------------- */

typedef int (*child_fn)(iop_ppipe_t *end, void *arg);

typedef struct child_start {
    iop_ppipe_t **ends;
    child_fn fn;
    void *arg;
} child_start_t;

static void child_main(void *arg)
{
    child_start_t *cs = arg;
    iop_ppipe_close(cs->ends[0]);
    int code = cs->fn(cs->ends[1], cs->arg);
    iop_ppipe_close(cs->ends[1]);
    _exit(code);                            /* exit code = its return */
}

/* Forks fn(ends[1], arg) in a child; the parent keeps ends[0]. */
static pid_t spawn_child(iop_ppipe_t *ends[2], child_fn fn, void *arg)
{
    child_start_t cs = { .ends = ends, .fn = fn, .arg = arg };
    pid_t pid = kids_spawn(child_main, &cs);
    iop_ppipe_close(ends[1]);
    ends[1] = NULL;
    return pid;
}

/* Waits up to limit_ms for the child to end (fails the test past that). Its wait
 * status. */
static int reap_child(pid_t pid, unsigned limit_ms)
{
    int status = kids_reap(pid, limit_ms);
    if (status == -1)
        fail_msg("child %d did not end within %u ms", (int)pid, limit_ms);
    return status;
}

static void expect_child_ok(pid_t pid)
{
    int st = reap_child(pid, 10000);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("child failed: %s %d", WIFEXITED(st) ? "exit" : "signal",
                 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

static int teardown_kids(void **state)
{
    (void)state;
    kids_end();
    return 0;
}

static uint64_t after_ms(unsigned ms) { return tu_clock_ns() + (uint64_t)ms * 1000000u; }

static int check_pattern(const uint8_t *buf, size_t len, uint32_t seed)
{
    uint8_t *want = malloc(len ? len : 1);
    tu_fill_pattern(want, len, seed);
    int ok = memcmp(buf, want, len) == 0;
    free(want);
    return ok;
}

/* Echoes every message back (fds too) until the pool end closes. */
static int echo_child(iop_ppipe_t *end, void *arg)
{
    (void)arg;
    static uint8_t buf[MIB];
    for (;;) {
        int fds[4], nfds = 4;
        ssize_t n = iop_ppipe_recv_fds(end, buf, MIB, fds, &nfds, after_ms(15000));
        if (n == -EPIPE)
            return 0;
        if (n < 0)
            return 10;
        if (iop_ppipe_send_fds(end, buf, (size_t)n, fds, nfds, after_ms(15000)) != n)
            return 11;
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
    }
}

/* ---- plain processes -------------------------------------------------------------------- */

static int hello_child(iop_ppipe_t *end, void *arg)
{
    (void)arg;
    if (iop_ppipe_send(end, "hello from the child", 20, 0) != 20)
        return 1;
    char buf[64];
    ssize_t n = iop_ppipe_recv(end, buf, sizeof buf, after_ms(5000));
    if (n != 4 || memcmp(buf, "ping", 4) != 0)
        return 2;
    return iop_ppipe_send(end, "pong", 4, 0) == 4 ? 0 : 3;
}

static void test_round_trip_both_ways(void **state)
{
    (void)state;
    iop_ppipe_t *ends[2];
    assert_int_equal(iop_ppipe_create(ends, NULL), 0);
    pid_t pid = spawn_child(ends, hello_child, NULL);
    char buf[64];
    assert_int_equal(iop_ppipe_recv(ends[0], buf, sizeof buf, after_ms(5000)), 20);
    assert_memory_equal(buf, "hello from the child", 20);
    assert_int_equal(iop_ppipe_send(ends[0], "ping", 4, 0), 4);
    assert_int_equal(iop_ppipe_recv(ends[0], buf, sizeof buf, after_ms(5000)), 4);
    assert_memory_equal(buf, "pong", 4);
    expect_child_ok(pid);
    assert_int_equal(iop_ppipe_recv(ends[0], buf, sizeof buf, after_ms(5000)), -EPIPE);
    iop_ppipe_close(ends[0]);
}

/* 3,000 messages of 0..299 bytes, 50 in flight at a time, each echoed intact. */
static void test_many_small_messages(void **state)
{
    (void)state;
    iop_ppipe_t *ends[2];
    assert_int_equal(iop_ppipe_create(ends, NULL), 0);
    pid_t pid = spawn_child(ends, echo_child, NULL);
    uint8_t out[300], in[300];
    for (int batch = 0; batch < 60; batch++) {
        for (int i = 0; i < 50; i++) {
            int k = batch * 50 + i;
            tu_fill_pattern(out, (size_t)(k % 300), (uint32_t)k + 1);
            assert_int_equal(iop_ppipe_send(ends[0], out, (size_t)(k % 300), after_ms(5000)), k % 300);
        }
        for (int i = 0; i < 50; i++) {
            int k = batch * 50 + i;
            assert_int_equal(iop_ppipe_recv(ends[0], in, sizeof in, after_ms(5000)), k % 300);
            assert_true(check_pattern(in, (size_t)(k % 300), (uint32_t)k + 1));
        }
    }
    iop_ppipe_close(ends[0]);
    expect_child_ok(pid);
}

/* Sizes around the fragment edges up to max_msg, each echoed intact. */
static void test_sizes_up_to_max(void **state)
{
    (void)state;
    iop_ppipe_t *ends[2];
    assert_int_equal(iop_ppipe_create(ends, NULL), 0);
    assert_int_equal(iop_ppipe_max_msg(ends[0]), MIB);
    pid_t pid = spawn_child(ends, echo_child, NULL);
    const size_t sizes[] = { 0, 1, 15, 16, 17, FRAG_PAYLOAD - 1, FRAG_PAYLOAD, FRAG_PAYLOAD + 1,
                             2 * FRAG_PAYLOAD + 7, 200000, MIB - 1, MIB };
    uint8_t *out = malloc(MIB), *in = malloc(MIB);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        tu_fill_pattern(out, sizes[i], (uint32_t)i + 7);
        memset(in, 0, MIB);
        assert_int_equal(iop_ppipe_send(ends[0], out, sizes[i], after_ms(5000)), sizes[i]);
        assert_int_equal(iop_ppipe_recv(ends[0], in, MIB, after_ms(5000)), sizes[i]);
        assert_true(check_pattern(in, sizes[i], (uint32_t)i + 7));
    }
    assert_int_equal(iop_ppipe_send(ends[0], out, MIB + 1, 0), -EMSGSIZE);
    free(out);
    free(in);
    iop_ppipe_close(ends[0]);
    expect_child_ok(pid);
}

static int big_then_small_child(iop_ppipe_t *end, void *arg)
{
    (void)arg;
    static uint8_t buf[100000];
    tu_fill_pattern(buf, 100000, 42);
    int p[2];
    if (pipe(p) < 0)
        return 1;
    if (iop_ppipe_send(end, buf, 100000, 0) != 100000 || iop_ppipe_send(end, "small", 5, 0) != 5 ||
        iop_ppipe_send_fds(end, "fds", 3, p, 2, 0) != 3)
        return 2;
    char ack[4];
    return iop_ppipe_recv(end, ack, sizeof ack, after_ms(5000)) == 2 ? 0 : 3;
}

/* A message too big for the buffer (or with fds for a receive without room for
 * them) stays first in line; peek says what it needs. */
static void test_emsgsize_keeps_the_message(void **state)
{
    (void)state;
    iop_ppipe_t *ends[2];
    assert_int_equal(iop_ppipe_create(ends, NULL), 0);
    pid_t pid = spawn_child(ends, big_then_small_child, NULL);
    uint8_t *buf = malloc(100000);
    int nfds = -1;
    assert_int_equal(iop_ppipe_recv(ends[0], buf, 1000, after_ms(5000)), -EMSGSIZE);
    assert_int_equal(iop_ppipe_peek(ends[0], &nfds, 0), 100000);
    assert_int_equal(nfds, 0);
    assert_int_equal(iop_ppipe_recv(ends[0], buf, 99999, 0), -EMSGSIZE);
    assert_int_equal(iop_ppipe_recv(ends[0], buf, 100000, 0), 100000);
    assert_true(check_pattern(buf, 100000, 42));
    assert_int_equal(iop_ppipe_peek(ends[0], &nfds, after_ms(5000)), 5);
    assert_int_equal(iop_ppipe_recv(ends[0], buf, 5, 0), 5);
    assert_memory_equal(buf, "small", 5);
    /* fds: a receive with no room for them does not take the message */
    assert_int_equal(iop_ppipe_recv(ends[0], buf, 100, after_ms(5000)), -EMSGSIZE);
    assert_int_equal(iop_ppipe_peek(ends[0], &nfds, 0), 3);
    assert_int_equal(nfds, 2);
    int fds[2], n = 1;
    assert_int_equal(iop_ppipe_recv_fds(ends[0], buf, 100, fds, &n, 0), -EMSGSIZE);
    n = 2;
    assert_int_equal(iop_ppipe_recv_fds(ends[0], buf, 100, fds, &n, 0), 3);
    assert_int_equal(n, 2);
    assert_memory_equal(buf, "fds", 3);
    assert_int_equal(write(fds[1], "x", 1), 1);      /* the two ends of one pipe */
    char c = 0;
    assert_int_equal(read(fds[0], &c, 1), 1);
    assert_int_equal(c, 'x');
    close(fds[0]);
    close(fds[1]);
    assert_int_equal(iop_ppipe_send(ends[0], "ok", 2, 0), 2);
    free(buf);
    expect_child_ok(pid);
    iop_ppipe_close(ends[0]);
}

static int send_then_close_child(iop_ppipe_t *end, void *arg)
{
    (void)arg;
    return iop_ppipe_send(end, "last words", 10, 0) == 10 ? 0 : 1;   /* child_main closes */
}

/* What was sent before the close still arrives; then -EPIPE both ways. */
static void test_epipe_after_peer_close(void **state)
{
    (void)state;
    iop_ppipe_t *ends[2];
    assert_int_equal(iop_ppipe_create(ends, NULL), 0);
    pid_t pid = spawn_child(ends, send_then_close_child, NULL);
    expect_child_ok(pid);
    char buf[32];
    assert_int_equal(iop_ppipe_recv(ends[0], buf, sizeof buf, after_ms(5000)), 10);
    assert_memory_equal(buf, "last words", 10);
    assert_int_equal(iop_ppipe_recv(ends[0], buf, sizeof buf, after_ms(5000)), -EPIPE);
    assert_int_equal(iop_ppipe_peek(ends[0], NULL, after_ms(5000)), -EPIPE);
    assert_int_equal(iop_ppipe_send(ends[0], "x", 1, after_ms(5000)), -EPIPE);
    assert_non_null(strstr(iop_last_error(), "closed"));
    iop_ppipe_close(ends[0]);
}

static int sleep_forever_child(iop_ppipe_t *end, void *arg)
{
    (void)arg;
    char buf[8];
    iop_ppipe_recv(end, buf, sizeof buf, 0);
    return 0;
}

static int kill_self_child(iop_ppipe_t *end, void *arg)
{
    (void)end;
    (void)arg;
    tu_sleep_ms(100);
    raise(SIGKILL);
    return 1;
}

/* kill -9 of the peer: a receive parked on it wakes with -EPIPE, sends fail. */
static void test_epipe_after_peer_kill(void **state)
{
    (void)state;
    iop_ppipe_t *ends[2];
    assert_int_equal(iop_ppipe_create(ends, NULL), 0);
    pid_t pid = spawn_child(ends, sleep_forever_child, NULL);
    assert_int_equal(kill(pid, SIGKILL), 0);
    int st = reap_child(pid, 5000);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(iop_ppipe_send(ends[0], "x", 1, after_ms(5000)), -EPIPE);
    char buf[8];
    assert_int_equal(iop_ppipe_recv(ends[0], buf, sizeof buf, after_ms(5000)), -EPIPE);
    iop_ppipe_close(ends[0]);

    assert_int_equal(iop_ppipe_create(ends, NULL), 0);
    pid = spawn_child(ends, kill_self_child, NULL);
    uint64_t t0 = tu_clock_ms();
    assert_int_equal(iop_ppipe_recv(ends[0], buf, sizeof buf, after_ms(5000)), -EPIPE);
    assert_true(tu_clock_ms() - t0 < 3000);
    st = reap_child(pid, 5000);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    iop_ppipe_close(ends[0]);
}

/* The child gets a pipe's write end and writes through it; it sends back one end of
 * a socketpair of its own, which the parent then uses. */
static int fd_child(iop_ppipe_t *end, void *arg)
{
    (void)arg;
    char buf[16];
    int fd = -1, n = 1;
    if (iop_ppipe_recv_fds(end, buf, sizeof buf, &fd, &n, after_ms(5000)) != 4 || n != 1)
        return 1;
    if (!(fcntl(fd, F_GETFD) & FD_CLOEXEC))
        return 2;
    if (write(fd, "via-fd", 6) != 6)
        return 3;
    close(fd);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        return 4;
    if (iop_ppipe_send_fds(end, "sock", 4, &sv[1], 1, 0) != 4)
        return 5;
    close(sv[1]);
    if (read(sv[0], buf, 5) != 5 || memcmp(buf, "hello", 5) != 0)
        return 6;
    return 0;
}

static void test_fd_passing(void **state)
{
    (void)state;
    iop_ppipe_t *ends[2];
    assert_int_equal(iop_ppipe_create(ends, NULL), 0);
    pid_t pid = spawn_child(ends, fd_child, NULL);
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(iop_ppipe_send_fds(ends[0], "take", 4, &p[1], 1, 0), 4);
    close(p[1]);                   /* the child's copy is the only writer now */
    char buf[16] = { 0 };
    ssize_t got = 0, n;
    while ((n = read(p[0], buf + got, sizeof buf - (size_t)got)) > 0)
        got += n;
    assert_int_equal(got, 6);
    assert_memory_equal(buf, "via-fd", 6);
    close(p[0]);
    int fd = -1, nfds = 1;
    assert_int_equal(iop_ppipe_recv_fds(ends[0], buf, sizeof buf, &fd, &nfds, after_ms(5000)), 4);
    assert_int_equal(nfds, 1);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    assert_int_equal(write(fd, "hello", 5), 5);
    close(fd);
    expect_child_ok(pid);
    int many[IOP_PPIPE_MAX_FDS + 1] = { 0 };
    assert_int_equal(iop_ppipe_send_fds(ends[0], "x", 1, many, IOP_PPIPE_MAX_FDS + 1, 0), -EINVAL);
    iop_ppipe_close(ends[0]);
}

/* A child that holds this process's RLIMIT_NOFILE soft limit in the kernel at a
 * lower value, with prlimit on this pid, until told to put it back. Not setrlimit
 * here: a process's calls on its own limit are emulated under valgrind (which keeps
 * fds of its own above the limit it shows), so they would leave the kernel's limit,
 * which recvmsg obeys, where it was. And not a child forked later to put it back:
 * under valgrind a child starting with so few fds allowed dies on its first step. */
typedef struct nofile_hold {
    rlim_t cur;
    pid_t parent;
    int ack[2], back[2];
} nofile_hold_t;

static void nofile_holder(void *arg)
{
    nofile_hold_t *h = arg;
    close(h->ack[0]);
    close(h->back[1]);
    struct rlimit was, now;
    KID_CHECK(prlimit(h->parent, RLIMIT_NOFILE, NULL, &was) == 0);
    now = was;
    now.rlim_cur = h->cur;
    KID_CHECK(prlimit(h->parent, RLIMIT_NOFILE, &now, NULL) == 0);
    KID_CHECK(write(h->ack[1], "s", 1) == 1);
    char c;
    while (read(h->back[0], &c, 1) < 0 && errno == EINTR)   /* end of file: put it back */
        ;
    KID_CHECK(prlimit(h->parent, RLIMIT_NOFILE, &was, NULL) == 0);
}

static pid_t nofile_limit_hold(nofile_hold_t *h, rlim_t cur)
{
    h->cur = cur;
    h->parent = getpid();
    assert_int_equal(pipe2(h->ack, O_CLOEXEC), 0);
    assert_int_equal(pipe2(h->back, O_CLOEXEC), 0);
    pid_t pid = kids_spawn(nofile_holder, h);
    close(h->ack[1]);
    close(h->back[0]);
    char c;
    ssize_t n;
    while ((n = read(h->ack[0], &c, 1)) < 0 && errno == EINTR)
        ;
    close(h->ack[0]);
    if (n != 1) {
        kids_assert_exited_ok(pid, 5000);
        fail_msg("the limit holder ended before setting the limit");
    }
    return pid;
}

static void nofile_limit_release(nofile_hold_t *h, pid_t pid)
{
    close(h->back[1]);
    kids_assert_exited_ok(pid, 5000);
}

/* A message with fds that arrives while this process's fd table is full: the kernel
 * drops the fds, the call says so (-EMFILE, not a malformed wire), the next message
 * is whole. The table is filled up to a limit set just above the lowest free fd. */
static void test_fd_passing_full_table(void **state)
{
    (void)state;
    iop_ppipe_t *ends[2];
    assert_int_equal(iop_ppipe_create(ends, NULL), 0);
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(iop_ppipe_send_fds(ends[0], "with-fd", 7, &p[1], 1, 0), 7);
    assert_int_equal(iop_ppipe_send(ends[0], "next", 4, 0), 4);
    close(p[1]);
    int filler[64], nfill = 0, top = dup(0);
    assert_true(top >= 0);
    close(top);
    nofile_hold_t hold;
    pid_t holder = nofile_limit_hold(&hold, (rlim_t)top + 8);
    int f;
    while (nfill < 64 && (f = dup(0)) >= 0)
        filler[nfill++] = f;
    assert_int_equal(errno, EMFILE);
    char buf[16];
    int fd = -1, nfds = 1;
    ssize_t r = iop_ppipe_recv_fds(ends[1], buf, sizeof buf, &fd, &nfds, after_ms(5000));
    for (int i = 0; i < nfill; i++)
        close(filler[i]);
    nofile_limit_release(&hold, holder);
    assert_int_equal(r, -EMFILE);
    assert_non_null(strstr(iop_last_error(), "RLIMIT_NOFILE"));
    nfds = 1;
    assert_int_equal(iop_ppipe_recv_fds(ends[1], buf, sizeof buf, &fd, &nfds, after_ms(5000)), 4);
    assert_int_equal(nfds, 0);
    assert_memory_equal(buf, "next", 4);
    char c;
    assert_int_equal(read(p[0], &c, 1), 0);   /* the dropped copy was closed: EOF */
    close(p[0]);
    iop_ppipe_close(ends[0]);
    iop_ppipe_close(ends[1]);
}

/* ---- messages cut short: forged on the wire by the child ------------------------------- */

static int raw_frag(iop_ppipe_t *end, uint32_t magic, uint32_t total, uint32_t off,
                    const uint8_t *data, size_t len)
{
    iop__ppipe_frag_t h = { .magic = magic, .total = total, .offset = off };
    struct iovec v[2] = { { &h, sizeof h }, { (void *)data, len } };
    struct msghdr m = { .msg_iov = v, .msg_iovlen = 2 };
    return sendmsg(iop_ppipe_fd(end), &m, 0) == (ssize_t)(sizeof h + len) ? 0 : -1;
}

static int slow_sender_child(iop_ppipe_t *end, void *arg)
{
    (void)arg;
    uint8_t msg[100];
    tu_fill_pattern(msg, sizeof msg, 5);
    int fl = fcntl(iop_ppipe_fd(end), F_GETFL);
    fcntl(iop_ppipe_fd(end), F_SETFL, fl & ~O_NONBLOCK);
    if (raw_frag(end, IOP__PPIPE_FIRST, 100, 0, msg, 40) < 0)
        return 1;
    tu_sleep_ms(300);
    if (raw_frag(end, IOP__PPIPE_MORE, 100, 40, msg + 40, 60) < 0)
        return 2;
    /* a message withdrawn halfway, a stray continuation, then a whole one */
    if (raw_frag(end, IOP__PPIPE_FIRST, 100, 0, msg, 40) < 0 ||
        raw_frag(end, IOP__PPIPE_FIRST, 5, 0, (const uint8_t *)"whole", 5) < 0 ||
        raw_frag(end, IOP__PPIPE_MORE, 100, 40, msg + 40, 60) < 0 ||
        raw_frag(end, IOP__PPIPE_FIRST, 4, 0, (const uint8_t *)"next", 4) < 0)
        return 3;
    return 0;
}

/* A deadline between fragments keeps the part received; the next call finishes it.
 * A message replaced halfway by a new first fragment is dropped, strays skipped. */
static void test_receiver_deadline_mid_message(void **state)
{
    (void)state;
    iop_ppipe_t *ends[2];
    assert_int_equal(iop_ppipe_create(ends, NULL), 0);
    pid_t pid = spawn_child(ends, slow_sender_child, NULL);
    uint8_t buf[128];
    assert_int_equal(iop_ppipe_peek(ends[0], NULL, after_ms(5000)), 100);
    assert_int_equal(iop_ppipe_recv(ends[0], buf, sizeof buf, after_ms(100)), -ETIMEDOUT);
    assert_int_equal(iop_ppipe_peek(ends[0], NULL, 0), 100);
    assert_int_equal(iop_ppipe_recv(ends[0], buf, sizeof buf, after_ms(5000)), 100);
    assert_true(check_pattern(buf, 100, 5));
    assert_int_equal(iop_ppipe_recv(ends[0], buf, sizeof buf, after_ms(5000)), 5);
    assert_memory_equal(buf, "whole", 5);
    assert_int_equal(iop_ppipe_recv(ends[0], buf, sizeof buf, after_ms(5000)), 4);
    assert_memory_equal(buf, "next", 4);
    expect_child_ok(pid);
    iop_ppipe_close(ends[0]);
}

/* A first fragment that claims to start midway is malformed wherever it comes,
 * also in the middle of another message: taken as the start of a message, its
 * bytes would land at the wrong place and a matching continuation would complete
 * it. The receive fails; the stray continuation is skipped; the next message is
 * whole. */
static void test_first_fragment_with_offset_midway(void **state)
{
    (void)state;
    iop_ppipe_t *ends[2];
    assert_int_equal(iop_ppipe_create(ends, NULL), 0);
    uint8_t msg[100], buf[128];
    tu_fill_pattern(msg, sizeof msg, 7);
    assert_int_equal(raw_frag(ends[1], IOP__PPIPE_FIRST, 100, 0, msg, 40), 0);
    assert_int_equal(raw_frag(ends[1], IOP__PPIPE_FIRST, 100, 40, msg + 40, 20), 0);
    assert_int_equal(raw_frag(ends[1], IOP__PPIPE_MORE, 100, 20, msg + 20, 80), 0);
    assert_int_equal(raw_frag(ends[1], IOP__PPIPE_FIRST, 4, 0, (const uint8_t *)"next", 4), 0);
    assert_int_equal(iop_ppipe_recv(ends[0], buf, sizeof buf, after_ms(5000)), -EPROTO);
    assert_int_equal(iop_ppipe_recv(ends[0], buf, sizeof buf, after_ms(5000)), 4);
    assert_memory_equal(buf, "next", 4);
    iop_ppipe_close(ends[0]);
    iop_ppipe_close(ends[1]);
}

/* An empty datagram reads as 0 bytes, as the end of the stream does; the peer is
 * still there, so it is a malformed fragment (-EPROTO), not -EPIPE, and the next
 * message comes through. */
static void test_empty_datagram_is_not_the_end(void **state)
{
    (void)state;
    iop_ppipe_t *ends[2];
    assert_int_equal(iop_ppipe_create(ends, NULL), 0);
    struct msghdr m = { 0 };
    uint8_t buf[16];
    assert_int_equal(sendmsg(iop_ppipe_fd(ends[1]), &m, 0), 0);
    assert_int_equal(iop_ppipe_peek(ends[0], NULL, after_ms(5000)), -EPROTO);
    assert_int_equal(iop_ppipe_recv(ends[0], buf, sizeof buf, after_ms(5000)), -EPROTO);
    assert_int_equal(iop_ppipe_send(ends[1], "next", 4, 0), 4);
    assert_int_equal(iop_ppipe_recv(ends[0], buf, sizeof buf, after_ms(5000)), 4);
    assert_memory_equal(buf, "next", 4);
    iop_ppipe_close(ends[1]);           /* the real end still reads as one */
    assert_int_equal(iop_ppipe_recv(ends[0], buf, sizeof buf, after_ms(5000)), -EPIPE);
    assert_int_equal(iop_ppipe_peek(ends[0], NULL, after_ms(5000)), -EPIPE);
    iop_ppipe_close(ends[0]);
}

/* Descriptors this process holds. */
static int fds_open(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1;                  /* not the one opendir holds */
}

/* A first fragment whose header says hdr_nfds descriptors, with nfds attached. */
static int raw_first_fds(iop_ppipe_t *end, const char *msg, uint32_t hdr_nfds, const int *fds,
                         int nfds)
{
    uint32_t len = (uint32_t)strlen(msg);
    iop__ppipe_frag_t h = { .magic = IOP__PPIPE_FIRST, .total = len, .nfds = hdr_nfds };
    struct iovec v[2] = { { &h, sizeof h }, { (void *)msg, len } };
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int) * 4)]; } cm;
    memset(&cm, 0, sizeof cm);
    struct msghdr m = { .msg_iov = v, .msg_iovlen = 2, .msg_control = cm.buf,
                        .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds) };
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    return sendmsg(iop_ppipe_fd(end), &m, 0) == (ssize_t)(sizeof h + len) ? 0 : -1;
}

/* A header's descriptor count unlike the descriptors that came with it (more, or
 * fewer) is a malformed message: peek does not pass the count on (a caller would
 * size its room by it), the receive fails and closes what came (the pipe's
 * reader sees EOF: no copy of the write end is left), and the next message is
 * whole. A peek of a good message counts the descriptors and holds none after. */
static void test_forged_fd_count(void **state)
{
    (void)state;
    iop_ppipe_t *ends[2];
    assert_int_equal(iop_ppipe_create(ends, NULL), 0);
    int p[2];
    assert_int_equal(pipe(p), 0);
    int base = fds_open();
    int two[2] = { p[1], p[1] };
    assert_int_equal(raw_first_fds(ends[1], "says-5", 5, &p[1], 1), 0);
    assert_int_equal(raw_first_fds(ends[1], "says-0", 0, two, 2), 0);
    assert_int_equal(iop_ppipe_send_fds(ends[1], "good", 4, two, 2, 0), 4);
    close(p[1]);

    char buf[16];
    int fds[8], nfds = -1;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(iop_ppipe_peek(ends[0], &nfds, after_ms(5000)), -EPROTO);
        assert_non_null(strstr(iop_last_error(), "descriptor count"));
        assert_int_equal(fds_open(), base - 1);      /* the peek's copies are closed */
        nfds = 8;
        assert_int_equal(iop_ppipe_recv_fds(ends[0], buf, sizeof buf, fds, &nfds, after_ms(5000)),
                         -EPROTO);
        assert_int_equal(fds_open(), base - 1);
    }
    assert_int_equal(iop_ppipe_peek(ends[0], &nfds, after_ms(5000)), 4);
    assert_int_equal(nfds, 2);
    assert_int_equal(fds_open(), base - 1);
    nfds = 2;
    assert_int_equal(iop_ppipe_recv_fds(ends[0], buf, sizeof buf, fds, &nfds, after_ms(5000)), 4);
    assert_int_equal(nfds, 2);
    assert_memory_equal(buf, "good", 4);
    close(fds[0]);
    close(fds[1]);
    char c;
    assert_int_equal(read(p[0], &c, 1), 0);   /* every copy of the write end is closed */
    close(p[0]);
    iop_ppipe_close(ends[0]);
    iop_ppipe_close(ends[1]);
}

/* Sends 1 MiB messages nobody reads yet until the socket buffer is full and a
 * deadline strikes halfway through one; exits with the number sent whole. */
static int withdrawing_child(iop_ppipe_t *end, void *arg)
{
    (void)arg;
    static uint8_t big[MIB];
    int whole = 0;
    for (;;) {
        tu_fill_pattern(big, MIB, (uint32_t)whole + 1);
        ssize_t n = iop_ppipe_send(end, big, MIB, after_ms(100));
        if (n == -ETIMEDOUT)
            break;
        if (n != MIB || ++whole > 32)
            return 100;
    }
    if (iop_ppipe_send(end, "after", 5, after_ms(5000)) != 5)
        return 101;
    char ack[4];
    return iop_ppipe_recv(end, ack, sizeof ack, after_ms(5000)) == 2 ? whole : 102;
}

/* A send cut short by its deadline is never delivered; the next message is. */
static void test_sender_deadline_withdraws(void **state)
{
    (void)state;
    iop_ppipe_t *ends[2];
    assert_int_equal(iop_ppipe_create(ends, NULL), 0);
    pid_t pid = spawn_child(ends, withdrawing_child, NULL);
    tu_sleep_ms(300);
    uint8_t *buf = malloc(MIB);
    int whole = 0;
    ssize_t n;
    while ((n = iop_ppipe_recv(ends[0], buf, MIB, after_ms(5000))) == MIB) {
        whole++;
        assert_true(check_pattern(buf, MIB, (uint32_t)whole));
    }
    assert_int_equal(n, 5);
    assert_memory_equal(buf, "after", 5);
    assert_int_equal(iop_ppipe_send(ends[0], "ok", 2, 0), 2);
    free(buf);
    int st = reap_child(pid, 10000);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), whole);
    iop_ppipe_close(ends[0]);
}

/* Sends one 64 MiB message carrying the write end of a pipe, with no deadline: it
 * blocks halfway, since nobody reads yet, until the parent kills it. */
#define STUCK_BYTES (64 * MIB)
static int stuck_sender_child(iop_ppipe_t *end, void *arg)
{
    int wfd = *(int *)arg;
    static uint8_t big[STUCK_BYTES];
    iop_ppipe_send_fds(end, big, STUCK_BYTES, &wfd, 1, 0);
    return 1;   /* never gets here: the socket buffer holds far less */
}

/* The sender killed halfway through a message with a descriptor: the receiver gets
 * -EPIPE, not a partial message, and the descriptor that came with the first
 * fragment is closed (the pipe it belongs to reads end of file). */
static void test_sender_killed_mid_message(void **state)
{
    (void)state;
    iop_ppipe_opts_t o = { .size = sizeof o, .max_msg = STUCK_BYTES };
    iop_ppipe_t *ends[2];
    assert_int_equal(iop_ppipe_create(ends, &o), 0);
    int pfd[2];
    assert_int_equal(pipe2(pfd, O_CLOEXEC | O_NONBLOCK), 0);
    pid_t pid = spawn_child(ends, stuck_sender_child, &pfd[1]);
    close(pfd[1]);   /* the child's copy, and the one in flight, are the only others */
    int nfds = -1;
    assert_int_equal(iop_ppipe_peek(ends[0], &nfds, after_ms(5000)), STUCK_BYTES);
    assert_int_equal(nfds, 1);
    tu_sleep_ms(50);   /* let it fill the socket buffer and block */
    kids_kill_and_reap(pid);

    uint8_t *buf = malloc(STUCK_BYTES);
    int fds[2] = { -1, -1 }, n = 2;
    assert_int_equal(iop_ppipe_recv_fds(ends[0], buf, STUCK_BYTES, fds, &n, after_ms(5000)), -EPIPE);
    assert_int_equal(fds[0], -1);   /* nothing handed over */
    char c;
    assert_int_equal(read(pfd[0], &c, 1), 0);   /* every write end is closed: no leak */
    assert_int_equal(iop_ppipe_recv(ends[0], buf, MIB, after_ms(5000)), -EPIPE);
    free(buf);
    close(pfd[0]);
    iop_ppipe_close(ends[0]);
}

/* ---- coroutines ------------------------------------------------------------------------------ */

static int ticks;
static void tick(iop_timer_t *t) { (void)t; ticks++; }

static int late_sender_child(iop_ppipe_t *end, void *arg)
{
    (void)arg;
    tu_sleep_ms(300);
    if (iop_ppipe_send(end, "late", 4, 0) != 4)
        return 1;
    char ack[4];
    return iop_ppipe_recv(end, ack, sizeof ack, after_ms(5000)) == 2 ? 0 : 2;
}

static void *parked_receiver(void *arg)
{
    iop_ppipe_t *end = arg;
    char buf[16];
    CHECK_EQ(iop_ppipe_recv(end, buf, sizeof buf, st_after_ms(100)), -ETIMEDOUT);
    int before = ticks;
    CHECK_EQ(iop_ppipe_recv(end, buf, sizeof buf, st_after_ms(5000)), 4);
    CHECK(memcmp(buf, "late", 4) == 0);
    CHECK(ticks - before >= 5);    /* the loop kept running while we waited */
    CHECK_EQ(iop_ppipe_send(end, "ok", 2, 0), 2);
    st_done++;
    return NULL;
}

/* A coroutine parked in recv leaves the loop running: a 10 ms timer keeps firing. */
static void test_coro_recv_does_not_block_the_loop(void **state)
{
    (void)state;
    iop_ppipe_t *ends[2];
    assert_int_equal(iop_ppipe_create(ends, NULL), 0);
    pid_t pid = spawn_child(ends, late_sender_child, NULL);
    iop_timer_t t = { 0 };
    ticks = 0;
    assert_int_equal(iop_timer_start(st_loop, &t, 10 * MS, 10 * MS, tick), 0);
    st_go(parked_receiver, ends[0], "receiver");
    st_run_until_done(1, 10000);
    iop_timer_stop(&t);
    expect_child_ok(pid);
    iop_ppipe_close(ends[0]);
}

static void *big_echo_client(void *arg)
{
    iop_ppipe_t *end = arg;
    uint8_t *out = malloc(MIB), *in = malloc(MIB);
    for (int round = 0; round < 3; round++) {
        size_t len = round == 0 ? MIB : round == 1 ? 3 * FRAG_PAYLOAD + 1 : 0;
        tu_fill_pattern(out, len, (uint32_t)round + 100);
        CHECK_EQ(iop_ppipe_send(end, out, len, st_after_ms(5000)), len);
        CHECK_EQ(iop_ppipe_recv(end, in, MIB, st_after_ms(5000)), len);
        CHECK(check_pattern(in, len, (uint32_t)round + 100));
    }
    free(out);
    free(in);
    st_done++;
    return NULL;
}

/* 1 MiB each way from a coroutine: sends and receives park fragment by fragment. */
static void test_coro_large_messages(void **state)
{
    (void)state;
    iop_ppipe_t *ends[2];
    assert_int_equal(iop_ppipe_create(ends, NULL), 0);
    pid_t pid = spawn_child(ends, echo_child, NULL);
    st_go(big_echo_client, ends[0], "big");
    st_run_until_done(1, 15000);
    iop_ppipe_close(ends[0]);
    expect_child_ok(pid);
}

#define CONC_LEN (300 * 1000)
#define CONC_EACH 4

static void *concurrent_sender(void *arg)
{
    iop_ppipe_t *end = arg;
    static uint32_t next_seed = 1;
    uint8_t *buf = malloc(CONC_LEN);
    for (int i = 0; i < CONC_EACH; i++) {
        uint32_t seed = next_seed++;
        memcpy(buf, &seed, 4);
        tu_fill_pattern(buf + 4, CONC_LEN - 4, seed);
        CHECK_EQ(iop_ppipe_send(end, buf, CONC_LEN, st_after_ms(5000)), CONC_LEN);
    }
    free(buf);
    st_done++;
    return NULL;
}

/* Checks every message is whole (the pattern named by its first 4 bytes). */
static int checking_child(iop_ppipe_t *end, void *arg)
{
    (void)arg;
    static uint8_t buf[CONC_LEN];
    for (int i = 0; i < 3 * CONC_EACH; i++) {
        if (iop_ppipe_recv(end, buf, CONC_LEN, after_ms(10000)) != CONC_LEN)
            return 1;
        uint32_t seed;
        memcpy(&seed, buf, 4);
        if (!check_pattern(buf + 4, CONC_LEN - 4, seed))
            return 2;
    }
    return 0;
}

/* Three coroutines send large messages on one end at once: they go out whole. */
static void test_coro_concurrent_senders(void **state)
{
    (void)state;
    iop_ppipe_t *ends[2];
    assert_int_equal(iop_ppipe_create(ends, NULL), 0);
    pid_t pid = spawn_child(ends, checking_child, NULL);
    for (int i = 0; i < 3; i++)
        st_go(concurrent_sender, ends[0], "sender");
    st_run_until_done(3, 15000);
    expect_child_ok(pid);
    iop_ppipe_close(ends[0]);
}

static void *fd_receiver(void *arg)
{
    iop_ppipe_t *end = arg;
    char buf[16];
    int fd = -1, n = 1;
    CHECK_EQ(iop_ppipe_recv_fds(end, buf, sizeof buf, &fd, &n, st_after_ms(5000)), 4);
    CHECK_EQ(n, 1);
    CHECK(fd >= 0 && (fcntl(fd, F_GETFD) & FD_CLOEXEC));
    if (fd >= 0) {
        CHECK_EQ(write(fd, "via-fd", 6), 6);
        close(fd);
    }
    st_done++;
    return NULL;
}

static int fd_sender_child(iop_ppipe_t *end, void *arg)
{
    (void)arg;
    int p[2];
    if (pipe(p) < 0)
        return 1;
    tu_sleep_ms(100);              /* let the parent park in recvmsg first */
    if (iop_ppipe_send_fds(end, "take", 4, &p[1], 1, 0) != 4)
        return 2;
    close(p[1]);
    char buf[8];
    return read(p[0], buf, 6) == 6 && memcmp(buf, "via-fd", 6) == 0 ? 0 : 3;
}

/* A descriptor received by a parked recvmsg op is close-on-exec and works. */
static void test_coro_fd_passing(void **state)
{
    (void)state;
    iop_ppipe_t *ends[2];
    assert_int_equal(iop_ppipe_create(ends, NULL), 0);
    pid_t pid = spawn_child(ends, fd_sender_child, NULL);
    st_go(fd_receiver, ends[0], "fd");
    st_run_until_done(1, 10000);
    expect_child_ok(pid);
    iop_ppipe_close(ends[0]);
}

static void *epipe_receiver(void *arg)
{
    iop_ppipe_t *end = arg;
    char buf[8];
    CHECK_EQ(iop_ppipe_recv(end, buf, sizeof buf, st_after_ms(5000)), -EPIPE);
    st_done++;
    return NULL;
}

/* The peer killed while a coroutine is parked on it: -EPIPE, promptly. */
static void test_coro_epipe_on_peer_kill(void **state)
{
    (void)state;
    iop_ppipe_t *ends[2];
    assert_int_equal(iop_ppipe_create(ends, NULL), 0);
    pid_t pid = spawn_child(ends, kill_self_child, NULL);
    uint64_t t0 = tu_clock_ms();
    st_go(epipe_receiver, ends[0], "epipe");
    st_run_until_done(1, 5000);
    assert_true(tu_clock_ms() - t0 < 3000);
    int st = reap_child(pid, 5000);
    assert_true(WIFSIGNALED(st));
    iop_ppipe_close(ends[0]);
}

static int coro_setup(void **state) { return st_setup(state); }
static int coro_teardown(void **state)
{
    teardown_kids(state);
    return st_teardown(state);
}

int main(int argc, char **argv)
{
    alarm(120);                    /* the whole program, whatever happens */
    const char *mode = tu_backend_from_args(argc, argv);
    if (mode && strcmp(mode, "plain") == 0) {
        const struct CMUnitTest plain[] = {
            cmocka_unit_test_teardown(test_round_trip_both_ways, teardown_kids),
            cmocka_unit_test_teardown(test_many_small_messages, teardown_kids),
            cmocka_unit_test_teardown(test_sizes_up_to_max, teardown_kids),
            cmocka_unit_test_teardown(test_emsgsize_keeps_the_message, teardown_kids),
            cmocka_unit_test_teardown(test_epipe_after_peer_close, teardown_kids),
            cmocka_unit_test_teardown(test_epipe_after_peer_kill, teardown_kids),
            cmocka_unit_test_teardown(test_fd_passing, teardown_kids),
            cmocka_unit_test_teardown(test_fd_passing_full_table, teardown_kids),
            cmocka_unit_test_teardown(test_receiver_deadline_mid_message, teardown_kids),
            cmocka_unit_test_teardown(test_first_fragment_with_offset_midway, teardown_kids),
            cmocka_unit_test_teardown(test_empty_datagram_is_not_the_end, teardown_kids),
            cmocka_unit_test_teardown(test_forged_fd_count, teardown_kids),
            cmocka_unit_test_teardown(test_sender_deadline_withdraws, teardown_kids),
            cmocka_unit_test_teardown(test_sender_killed_mid_message, teardown_kids),
        };
        return cmocka_run_group_tests_name("ppipe.plain", plain, NULL, NULL);
    }
    if (tu_backend_set(mode) < 0)
        return 2;
    const struct CMUnitTest coro[] = {
        cmocka_unit_test_setup_teardown(test_coro_recv_does_not_block_the_loop, coro_setup, coro_teardown),
        cmocka_unit_test_setup_teardown(test_coro_large_messages, coro_setup, coro_teardown),
        cmocka_unit_test_setup_teardown(test_coro_concurrent_senders, coro_setup, coro_teardown),
        cmocka_unit_test_setup_teardown(test_coro_fd_passing, coro_setup, coro_teardown),
        cmocka_unit_test_setup_teardown(test_coro_epipe_on_peer_kill, coro_setup, coro_teardown),
    };
    return cmocka_run_group_tests_name("ppipe.coro", coro, NULL, NULL);
}
