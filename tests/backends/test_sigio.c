/* The sigio backend's own tests: `test_sigio [FILTER]`. Helpers that must work
 * without cmocka (in a forked child, in threads) and the small single-thread tests
 * live here; the overflow and thread tests have their own files. */
#include "sigio_test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include "test_util.h"

/* ---- helpers without cmocka --------------------------------------------------- */

iop_loop_t *st_loop_new(void)
{
    iop_loop_opts_t opts = { .size = sizeof opts, .backend = "sigio" };
    iop_loop_t *loop = NULL;
    return iop_loop_create(&loop, &opts) < 0 ? NULL : loop;
}

int st_tcp_pair(int fds[2])
{
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof addr;
    int one = 1, c = -1, s = -1, err = 0;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        return -errno;
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 1) < 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &len) < 0)
        goto fail;
    c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&addr, sizeof addr) < 0)
        goto fail;
    s = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (s < 0 || fcntl(c, F_SETFL, O_NONBLOCK) < 0 ||
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
        goto fail;
    close(lfd);
    fds[0] = c;
    fds[1] = s;
    return 0;
fail:
    err = -errno;
    close(lfd);
    if (c >= 0)
        close(c);
    if (s >= 0)
        close(s);
    return err;
}

static void sink_recvd(iop_op_t *op, int res)
{
    sink_t *s = op->data;
    if (res <= 0) {
        (*s->errors)++;
        return;
    }
    *s->total += res;
    iop_prep_recv(&s->op, s->fd, s->buf, sizeof s->buf, 0, sink_recvd, s);
    if (iop_submit(op->loop, &s->op) < 0)
        (*s->errors)++;
}

int st_sink_start(iop_loop_t *loop, sink_t *s, int fd, long *total, int *errors)
{
    s->fd = fd;
    s->total = total;
    s->errors = errors;
    iop_prep_recv(&s->op, fd, s->buf, sizeof s->buf, 0, sink_recvd, s);
    return iop_submit(loop, &s->op);
}

int st_write_chunks(int fd, size_t len, size_t chunk)
{
    static const char bytes[1024];
    for (size_t done = 0; done < len;) {
        size_t n = len - done < chunk ? len - done : chunk;
        if (n > sizeof bytes || write(fd, bytes, n) != (ssize_t)n)
            return -1;
        done += n;
    }
    return 0;
}

static void tick(iop_timer_t *t) { (void)t; }

int st_run_until_bytes(iop_loop_t *loop, const long *total, long want, unsigned limit_ms)
{
    iop_timer_t ticker = { 0 };
    uint64_t end = tu_clock_ms() + limit_ms;
    int r = iop_timer_start(loop, &ticker, 20000000u, 20000000u, tick);
    while (r >= 0 && *total < want && tu_clock_ms() < end)
        r = iop_loop_run(loop, IOP_RUN_ONCE);
    iop_timer_stop(&ticker);
    return r < 0 ? r : *total >= want;
}

int st_armed_signal(int fd) { return fcntl(fd, F_GETSIG); }

pid_t st_armed_owner(int fd)
{
    struct f_owner_ex owner;
    if (fcntl(fd, F_GETOWN_EX, &owner) < 0 || owner.type != F_OWNER_TID)
        return -1;
    return owner.pid;
}

/* ---- the signal choice -------------------------------------------------------- */

static void count_cb(iop_watch_t *w, unsigned revents)
{
    (void)revents;
    (*(int *)w->data)++;
}

/* The signal a fresh loop arms a watched pipe with, or a negative errno from
 * iop_loop_create. */
static int signal_of_new_loop(void)
{
    iop_loop_t *loop = st_loop_new();
    if (!loop)
        return -1;
    int p[2], calls = 0;
    tu_pipe(p);
    iop_watch_t w = { .data = &calls };
    assert_int_equal(iop_watch_start(loop, &w, p[0], IOP_READ, count_cb), 0);
    tu_run_nowait(loop, 1);
    int sig = st_armed_signal(p[0]);
    assert_int_equal(st_armed_owner(p[0]), gettid());
    iop_watch_stop(&w);
    assert_int_equal(iop_fd_close(loop, p[0]), 0);
    close(p[1]);
    iop_loop_destroy(loop);
    return sig;
}

void test_sigio_signal_from_env(void **state)
{
    (void)state;
    unsetenv("IOPLEX_SIGIO_SIGNAL");
    assert_int_equal(signal_of_new_loop(), SIGRTMIN + 8);   /* the documented default */

    setenv("IOPLEX_SIGIO_SIGNAL", "RTMIN+3", 1);
    assert_int_equal(signal_of_new_loop(), SIGRTMIN + 3);
    setenv("IOPLEX_SIGIO_SIGNAL", "SIGRTMAX-1", 1);
    assert_int_equal(signal_of_new_loop(), SIGRTMAX - 1);
    char num[16];
    snprintf(num, sizeof num, "%d", SIGRTMIN + 5);
    setenv("IOPLEX_SIGIO_SIGNAL", num, 1);
    assert_int_equal(signal_of_new_loop(), SIGRTMIN + 5);

    /* Not a real-time signal: refused with a reason that names the variable. */
    const char *bad[] = { "SIGUSR1", "RTMIN+999", "10", "RTMIN+x" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        setenv("IOPLEX_SIGIO_SIGNAL", bad[i], 1);
        iop_loop_opts_t opts = { .size = sizeof opts, .backend = "sigio" };
        iop_loop_t *loop = NULL;
        assert_int_equal(iop_loop_create(&loop, &opts), -EINVAL);
        assert_null(loop);
        assert_non_null(strstr(iop_last_error(), "IOPLEX_SIGIO_SIGNAL"));
    }
    unsetenv("IOPLEX_SIGIO_SIGNAL");
}

/* ---- coexistence with the user's signals ---------------------------------------- */

static volatile sig_atomic_t rt_hits, rt_value, usr1_hits;

static void on_rt(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    (void)ctx;
    rt_hits++;
    rt_value = si->si_value.sival_int;
}

static void on_usr1(int sig) { (void)sig; usr1_hits++; }

typedef struct coexist {
    int chosen;        /* the signal the loop armed its fd with */
    int calls_before, calls_after;   /* watch callbacks around the user's signals */
    int failed_at;     /* 0, or the step that failed */
} coexist_t;

/* Runs in a fresh thread whose mask is emptied first, as in a program that never
 * made a sigio loop before: the test thread itself keeps its old loops' signals
 * blocked. */
static void *coexist_thread(void *arg)
{
    coexist_t *c = arg;
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL);

    iop_loop_t *loop = st_loop_new();
    int p[2], calls = 0;
    if (!loop || pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) {
        c->failed_at = 1;
        if (loop)
            iop_loop_destroy(loop);
        return NULL;
    }
    iop_watch_t w = { .data = &calls };
    iop_watch_start(loop, &w, p[0], IOP_READ, count_cb);
    iop_loop_run(loop, IOP_RUN_NOWAIT);
    c->chosen = st_armed_signal(p[0]);
    if (write(p[1], "x", 1) != 1)
        c->failed_at = 2;
    iop_loop_run(loop, IOP_RUN_NOWAIT);
    c->calls_before = calls;

    /* The user's handlers run while the loop lives: neither signal is blocked. */
    pthread_kill(pthread_self(), SIGUSR1);
    pthread_sigqueue(pthread_self(), SIGRTMIN + 8, (union sigval){ .sival_int = 77 });

    char b;
    if (read(p[0], &b, 1) != 1)
        c->failed_at = 3;
    iop_loop_run(loop, IOP_RUN_NOWAIT);   /* drained: no callback */
    if (write(p[1], "y", 1) != 1)
        c->failed_at = 4;
    iop_loop_run(loop, IOP_RUN_NOWAIT);
    c->calls_after = calls;
    iop_watch_stop(&w);
    iop_fd_close(loop, p[0]);
    close(p[1]);
    iop_loop_destroy(loop);
    return NULL;
}

void test_sigio_user_handlers_keep_working(void **state)
{
    (void)state;
    unsetenv("IOPLEX_SIGIO_SIGNAL");
    struct sigaction rt = { .sa_sigaction = on_rt, .sa_flags = SA_SIGINFO }, usr1 = { .sa_handler = on_usr1 };
    struct sigaction old_rt, old_usr1;
    sigemptyset(&rt.sa_mask);
    sigemptyset(&usr1.sa_mask);
    /* The user owns the default signal: the loop must take the next one. */
    assert_int_equal(sigaction(SIGRTMIN + 8, &rt, &old_rt), 0);
    assert_int_equal(sigaction(SIGUSR1, &usr1, &old_usr1), 0);
    rt_hits = usr1_hits = rt_value = 0;

    coexist_t c = { 0 };
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, coexist_thread, &c), 0);
    pthread_join(th, NULL);
    sigaction(SIGRTMIN + 8, &old_rt, NULL);
    sigaction(SIGUSR1, &old_usr1, NULL);

    assert_int_equal(c.failed_at, 0);
    assert_int_equal(c.chosen, SIGRTMIN + 9);
    assert_int_equal(usr1_hits, 1);
    assert_int_equal(rt_hits, 1);
    assert_int_equal(rt_value, 77);
    assert_int_equal(c.calls_before, 1);
    assert_int_equal(c.calls_after, 2);   /* one more after the drain and new data */
}

/* A thread that reads a real-time signal synchronously keeps it blocked and has no
 * handler for it: a loop that took that signal too would share its queue with the
 * user's signalfd, which would then read the loop's readiness reports (and the
 * loop would miss them). */
typedef struct sync_reader {
    int chosen;        /* the signal the loop armed its pipe with */
    int stolen;        /* readiness reports the user's signalfd read */
    int user_value;    /* the value of the user's own signal, as the user read it */
    int calls;         /* watch callbacks after the pipe got data */
    int failed_at;
} sync_reader_t;

static void *sync_reader_thread(void *arg)
{
    sync_reader_t *c = arg;
    sigset_t mine;
    sigemptyset(&mine);
    sigaddset(&mine, SIGRTMIN + 8);
    pthread_sigmask(SIG_SETMASK, &mine, NULL);   /* only the user's signal blocked */
    int sfd = signalfd(-1, &mine, SFD_NONBLOCK | SFD_CLOEXEC);
    iop_loop_t *loop = st_loop_new();
    int p[2];
    if (sfd < 0 || !loop || pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) {
        c->failed_at = 1;
        if (loop)
            iop_loop_destroy(loop);
        return NULL;
    }
    iop_watch_t w = { .data = &c->calls };
    iop_watch_start(loop, &w, p[0], IOP_READ, count_cb);
    iop_loop_run(loop, IOP_RUN_NOWAIT);          /* not ready: out of the check set */
    c->chosen = st_armed_signal(p[0]);
    if (write(p[1], "x", 1) != 1)                /* the kernel queues a readiness report */
        c->failed_at = 2;
    pthread_sigqueue(pthread_self(), SIGRTMIN + 8, (union sigval){ .sival_int = 55 });
    struct signalfd_siginfo si;
    while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_code > 0)
            c->stolen++;
        else
            c->user_value = si.ssi_int;
    }
    for (int i = 0; i < 3; i++)
        iop_loop_run(loop, IOP_RUN_NOWAIT);
    iop_watch_stop(&w);
    iop_fd_close(loop, p[0]);
    close(p[1]);
    iop_loop_destroy(loop);
    close(sfd);
    return NULL;
}

/* A thread that blocks every signal (a program that waits for its signals in a
 * thread of its own) still gets a loop, on the default signal. */
static void *all_blocked_thread(void *arg)
{
    int *chosen = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, NULL);
    iop_loop_t *loop = st_loop_new();
    int p[2], calls = 0;
    if (!loop || pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) {
        if (loop)
            iop_loop_destroy(loop);
        return NULL;
    }
    iop_watch_t w = { .data = &calls };
    iop_watch_start(loop, &w, p[0], IOP_READ, count_cb);
    iop_loop_run(loop, IOP_RUN_NOWAIT);
    if (write(p[1], "x", 1) == 1)
        iop_loop_run(loop, IOP_RUN_NOWAIT);
    if (calls == 1)
        *chosen = st_armed_signal(p[0]);
    iop_watch_stop(&w);
    iop_fd_close(loop, p[0]);
    close(p[1]);
    iop_loop_destroy(loop);
    return NULL;
}

void test_sigio_skips_signal_the_thread_reads(void **state)
{
    (void)state;
    unsetenv("IOPLEX_SIGIO_SIGNAL");
    sync_reader_t c = { 0 };
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, sync_reader_thread, &c), 0);
    pthread_join(th, NULL);
    assert_int_equal(c.failed_at, 0);
    assert_int_equal(c.stolen, 0);             /* the user reads only its own signal */
    assert_int_equal(c.user_value, 55);
    assert_true(c.calls > 0);                  /* and the loop hears of the pipe */
    assert_int_equal(c.chosen, SIGRTMIN + 9);

    int chosen = 0;
    assert_int_equal(pthread_create(&th, NULL, all_blocked_thread, &chosen), 0);
    pthread_join(th, NULL);
    assert_int_equal(chosen, SIGRTMIN + 8);
}

/* A SIGIO handler of the application's would be silenced (the backend blocks SIGIO
 * and reads it as its overflow report): creating the loop says so instead. */
static void on_sigio(int sig) { (void)sig; }

void test_sigio_refuses_user_sigio_handler(void **state)
{
    (void)state;
    struct sigaction sa = { .sa_handler = on_sigio }, old;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGIO, &sa, &old), 0);
    iop_loop_t *loop = st_loop_new();
    const char *why = iop_last_error();
    sigaction(SIGIO, &old, NULL);
    assert_null(loop);
    assert_non_null(strstr(why, "own SIGIO handler"));
    loop = st_loop_new();                  /* without the handler: fine */
    assert_non_null(loop);
    iop_loop_destroy(loop);
}

/* Destroying the loop disarms every fd it armed, also those it stopped watching
 * (or forgot) and left armed: none keeps queueing signals nobody reads. */
void test_sigio_destroy_disarms(void **state)
{
    (void)state;
    iop_loop_t *loop = st_loop_new();
    assert_non_null(loop);
    int s[2];
    tu_tcp_pair(s);
    int calls = 0;
    iop_watch_t w = { .data = &calls };
    assert_int_equal(iop_watch_start(loop, &w, s[1], IOP_READ, count_cb), 0);
    tu_run_nowait(loop, 1);
    assert_true(fcntl(s[1], F_GETFL) & O_ASYNC);
    iop_watch_stop(&w);
    iop_fd_forget(loop, s[1]);
    tu_run_nowait(loop, 1);
    iop_loop_destroy(loop);
    assert_false(fcntl(s[1], F_GETFL) & O_ASYNC);
    close(s[0]);
    close(s[1]);
}

/* ---- fds that cannot signal ------------------------------------------------------ */

/* eventfd ignores O_ASYNC (as the core's wake-up fd shows): the backend polls it
 * with the signalfd. A regular file is always ready, as poll(2) says. */
void test_sigio_fds_without_o_async(void **state)
{
    (void)state;
    iop_loop_t *loop = st_loop_new();
    assert_non_null(loop);
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    assert_true(efd >= 0);
    int calls = 0;
    iop_watch_t w = { .data = &calls };
    assert_int_equal(iop_watch_start(loop, &w, efd, IOP_READ, count_cb), 0);
    tu_run_nowait(loop, 2);
    assert_int_equal(calls, 0);
    assert_false(fcntl(efd, F_GETFL) & O_ASYNC);

    /* An idle loop with a polled fd sleeps instead of spinning. */
    iop_loop_stats_t s0, s1;
    iop_loop_get_stats(loop, &s0);
    uint64_t t0 = tu_clock_ms();
    tu_run_for(loop, 60);
    iop_loop_get_stats(loop, &s1);
    assert_true(tu_clock_ms() - t0 >= 55);
    assert_true(s1.iterations - s0.iterations < 10);
    assert_int_equal(calls, 0);

    uint64_t one = 1;
    assert_int_equal(write(efd, &one, sizeof one), (ssize_t)sizeof one);
    tu_run_nowait(loop, 3);
    assert_int_equal(calls, 3);   /* level-triggered: every iteration while readable */
    assert_int_equal(read(efd, &one, sizeof one), (ssize_t)sizeof one);
    tu_run_nowait(loop, 2);
    assert_int_equal(calls, 3);
    iop_watch_stop(&w);
    assert_int_equal(iop_fd_close(loop, efd), 0);

    int file = tu_tmpfile("data", 4);
    calls = 0;
    assert_int_equal(iop_watch_start(loop, &w, file, IOP_READ, count_cb), 0);
    tu_run_nowait(loop, 2);
    assert_int_equal(calls, 2);
    iop_watch_stop(&w);
    assert_int_equal(iop_fd_close(loop, file), 0);
    iop_loop_destroy(loop);
}

/* An AF_UNIX stream socket's poll(2) does not arm the write-space signal, so a
 * writer that was only ever told "not writable" by poll hears nothing when the
 * reader makes room: the backend must poll such a writer itself. */
void test_sigio_unix_stream_write_room(void **state)
{
    (void)state;
    iop_loop_t *loop = st_loop_new();
    assert_non_null(loop);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    /* Fill until poll says "not writable", without a write ever failing (a failed
     * send would arm the signal and hide the problem). */
    static const char chunk[1000];
    int writes = 0;
    for (;;) {
        struct pollfd p = { .fd = sv[0], .events = POLLOUT };
        assert_true(poll(&p, 1, 0) >= 0);
        if (!(p.revents & POLLOUT))
            break;
        assert_int_equal(write(sv[0], chunk, sizeof chunk), (ssize_t)sizeof chunk);
        assert_true(++writes < 100000);
    }
    int calls = 0;
    iop_watch_t w = { .data = &calls };
    assert_int_equal(iop_watch_start(loop, &w, sv[0], IOP_WRITE, count_cb), 0);
    tu_run_nowait(loop, 2);
    assert_int_equal(calls, 0);

    char sink[65536];
    while (read(sv[1], sink, sizeof sink) > 0)
        ;
    assert_true(tu_run_until_count(loop, &calls, 1, 2000));
    iop_watch_stop(&w);
    assert_int_equal(iop_fd_close(loop, sv[0]), 0);
    close(sv[1]);
    iop_loop_destroy(loop);
}

int main(int argc, char **argv)
{
    tu_backend = "sigio";
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigio_signal_from_env),
        cmocka_unit_test(test_sigio_user_handlers_keep_working),
        cmocka_unit_test(test_sigio_skips_signal_the_thread_reads),
        cmocka_unit_test(test_sigio_refuses_user_sigio_handler),
        cmocka_unit_test(test_sigio_destroy_disarms),
        cmocka_unit_test(test_sigio_fds_without_o_async),
        cmocka_unit_test(test_sigio_unix_stream_write_room),
        cmocka_unit_test(test_sigio_two_loops_one_thread),
        cmocka_unit_test(test_sigio_two_threads_two_loops),
        cmocka_unit_test(test_sigio_queue_overflow_loses_nothing),
    };
    return cmocka_run_group_tests_name("sigio", tests, NULL, NULL);
}
