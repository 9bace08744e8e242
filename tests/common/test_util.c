/* Shared test helpers; see test_util.h. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "test_util.h"

const char *tu_backend;

const char *tu_backend_from_args(int argc, char **argv)
{
    if (argc > 1 && argv[1][0])
        return argv[1];
    const char *env = getenv("IOPLEX_BACKEND");
    return env && env[0] ? env : NULL;
}

uint32_t tu_loop_flags;

int tu_backend_set(const char *spec)
{
    static char name[64];
    const char *plus = spec ? strchr(spec, '+') : NULL;
    if (!plus) {
        tu_backend = spec;
        return 0;
    }
    if ((size_t)(plus - spec) >= sizeof name)
        return -1;
    if (strcmp(plus + 1, "sqpoll") == 0)
        tu_loop_flags |= IOP_LOOP_SQPOLL;
    else if (strcmp(plus + 1, "kernel-deadlines") == 0)
        tu_loop_flags |= IOP_LOOP_KERNEL_DEADLINES;
    else
        return -1;
    memcpy(name, spec, (size_t)(plus - spec));
    name[plus - spec] = '\0';
    tu_backend = name;
    return 0;
}

iop_loop_t *tu_loop_new(void)
{
    iop_loop_opts_t opts = { 0 };
    return tu_loop_new_opts(&opts);
}

iop_loop_t *tu_loop_new_opts(iop_loop_opts_t *opts_in)
{
    iop_loop_opts_t opts = *opts_in;
    opts.size = sizeof opts;
    opts.backend = tu_backend;
    opts.flags |= tu_loop_flags;
    iop_loop_t *loop = NULL;
    int r = iop_loop_create(&loop, &opts);
    if (r < 0)
        fail_msg("iop_loop_create(%s): %s: %s", tu_backend ? tu_backend : "default",
                 iop_strerror(r), iop_last_error());
    assert_non_null(loop);
    if (tu_backend)
        assert_string_equal(iop_loop_backend(loop), tu_backend);
    if (opts.flags & IOP_LOOP_SQPOLL)   /* the mode under test, not a silent fallback */
        assert_true(iop_loop_caps(loop) & IOP_CAP_SQPOLL);
    if (opts.flags & IOP_LOOP_KERNEL_DEADLINES)
        assert_true(iop_loop_caps(loop) & IOP_CAP_KERNEL_DEADLINES);
    return loop;
}

uint64_t tu_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t tu_clock_ms(void) { return tu_clock_ns() / 1000000u; }

void tu_sleep_ms(unsigned ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---- bounded runs ------------------------------------------------------------ */

static void guard_fired(iop_timer_t *t) { (void)t; }

int tu_run_until(iop_loop_t *loop, int (*done)(void *arg), void *arg, unsigned limit_ms)
{
    uint64_t end = tu_clock_ns() + (uint64_t)limit_ms * 1000000u;
    iop_timer_t guard = { 0 };
    int ok = 0;
    for (int passes = 0;; passes++) {
        if (done(arg)) {
            ok = 1;
            break;
        }
        /* At least one iteration, however late this thread got here: callers of
         * short runs count on what is ready having run. */
        uint64_t now = tu_clock_ns();
        if (now >= end && passes > 0)
            break;
        /* Re-armed every pass: the loop clock may lag the wall clock a little. */
        if (!iop_timer_active(&guard)) {
            uint64_t left = end - now;
            assert_int_equal(iop_timer_start(loop, &guard, left < 1000000u ? 1000000u : left, 0,
                                             guard_fired), 0);
        }
        int r = iop_loop_run(loop, IOP_RUN_ONCE);
        if (r < 0)
            fail_msg("iop_loop_run: %s: %s", iop_strerror(r), iop_last_error());
    }
    iop_timer_stop(&guard);
    return ok;
}

struct count_goal {
    const int *counter;
    int target;
};

static int count_reached(void *arg)
{
    struct count_goal *g = arg;
    return *g->counter >= g->target;
}

int tu_run_until_count(iop_loop_t *loop, const int *counter, int target, unsigned limit_ms)
{
    struct count_goal g = { counter, target };
    return tu_run_until(loop, count_reached, &g, limit_ms);
}

static int never(void *arg)
{
    (void)arg;
    return 0;
}

void tu_run_for(iop_loop_t *loop, unsigned ms) { (void)tu_run_until(loop, never, NULL, ms); }

void tu_run_nowait(iop_loop_t *loop, int n)
{
    for (int i = 0; i < n; i++) {
        int r = iop_loop_run(loop, IOP_RUN_NOWAIT);
        if (r < 0)
            fail_msg("iop_loop_run(NOWAIT): %s: %s", iop_strerror(r), iop_last_error());
    }
}

/* ---- sockets and pipes --------------------------------------------------------- */

static void loopback_any(struct sockaddr_in *addr)
{
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr->sin_port = 0;
}

static void bind_loopback(int fd, struct sockaddr_in *addr)
{
    struct sockaddr_in a;
    loopback_any(&a);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0)
        fail_msg("bind 127.0.0.1:0: %s", strerror(errno));
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    if (addr)
        *addr = a;
}

int tu_tcp_socket(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fail_msg("socket(TCP): %s", strerror(errno));
    return fd;
}

int tu_tcp_listener(struct sockaddr_in *addr, int backlog)
{
    int fd = tu_tcp_socket();
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    bind_loopback(fd, addr);
    if (listen(fd, backlog) < 0)
        fail_msg("listen: %s", strerror(errno));
    return fd;
}

int tu_connect(int fd, const struct sockaddr *sa, socklen_t len)
{
    if (connect(fd, sa, len) == 0)
        return 0;
    if (errno != EINTR)
        return -1;
    /* Interrupted, the handshake goes on (connect again would say EALREADY): wait
     * for its end, then read its outcome. */
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    uint64_t end = tu_clock_ms() + 10000;
    int r;
    do
        r = poll(&p, 1, 100);
    while ((r == 0 || (r < 0 && errno == EINTR)) && tu_clock_ms() < end);
    if (r <= 0) {
        errno = r == 0 ? ETIMEDOUT : errno;
        return -1;
    }
    int err = 0;
    socklen_t elen = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
        return -1;
    errno = err;
    return err ? -1 : 0;
}

int tu_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* A blocking handshake outside any loop, for tests about what happens after it. */
void tu_tcp_pair(int fds[2])
{
    struct sockaddr_in addr;
    int lfd = tu_tcp_listener(&addr, 1);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(c >= 0);
    if (tu_connect(c, (struct sockaddr *)&addr, sizeof addr) < 0)
        fail_msg("connect: %s", strerror(errno));
    int s = -1;
    for (int i = 0; i < 1000 && s < 0; i++) {
        s = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (s < 0 && errno == EAGAIN)
            tu_sleep_ms(1);
        else if (s < 0 && errno == EINTR)
            i--;                    /* not a try: the call was cut short */
    }
    if (s < 0)
        fail_msg("accept4: %s", strerror(errno));
    assert_int_equal(fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK), 0);
    close(lfd);
    fds[0] = c;
    fds[1] = s;
}

int tu_udp_socket(struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fail_msg("socket(UDP): %s", strerror(errno));
    bind_loopback(fd, addr);
    return fd;
}

void tu_pipe(int fds[2])
{
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
        fail_msg("pipe2: %s", strerror(errno));
}

/* Bound but never listening: a connect there is refused at once by the stack. */
void tu_closed_port(struct sockaddr_in *addr)
{
    int fd = tu_tcp_socket();
    bind_loopback(fd, addr);
    close(fd);
}

int tu_tmpfile(const void *data, size_t len)
{
    char path[] = "/tmp/ioplex-test-XXXXXX";
    int fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0)
        fail_msg("mkostemp: %s", strerror(errno));
    unlink(path);
    if (tu_write_all(fd, data, len) < 0)
        fail_msg("write: %s", strerror(errno));
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    return fd;
}

/* New fds take the lowest free number, so one above 1000 stays closed while the test
 * opens its handful of others. */
int tu_closed_fd(void)
{
    int fd = fcntl(0, F_DUPFD_CLOEXEC, 1000);
    if (fd < 0)
        fail_msg("F_DUPFD: %s", strerror(errno));
    close(fd);
    return fd;
}

int tu_raise_nofile(rlim_t need, char *why, size_t whylen)
{
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur >= need)
        return 0;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
        snprintf(why, whylen, "RLIMIT_NOFILE hard limit is %llu, the test needs %llu",
                 (unsigned long long)rl.rlim_max, (unsigned long long)need);
        return -1;
    }
    rl.rlim_cur = need;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        snprintf(why, whylen, "setrlimit(RLIMIT_NOFILE, %llu): %s", (unsigned long long)need,
                 strerror(errno));
        return -1;
    }
    return 0;
}

uint32_t tu_rand(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

uint32_t tu_pattern_start(uint32_t seed)
{
    return seed ? seed : 1;
}

/* Four bytes a step: bodies of tens of MB are made in the sanitizer builds too,
 * where every store is a call. Any length is a prefix of a longer fill. */
void tu_pattern_fill(uint32_t *state, void *buf, size_t len)
{
    unsigned char *p = buf;
    size_t i = 0;
    for (; i + 4 <= len; i += 4) {
        uint32_t x = tu_rand(state);
        memcpy(p + i, &x, 4);
    }
    if (i < len) {
        uint32_t x = tu_rand(state);
        memcpy(p + i, &x, len - i);
    }
}

void tu_fill_pattern(void *buf, size_t len, uint32_t seed)
{
    uint32_t st = tu_pattern_start(seed);
    tu_pattern_fill(&st, buf, len);
}

int tu_fdinfo_each(const char *link, int (*fn)(FILE *fdinfo, void *arg), void *arg)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 0;
    int r = 0;
    struct dirent *de;
    while (!r && (de = readdir(d))) {
        char path[300], target[64];
        snprintf(path, sizeof path, "/proc/self/fd/%s", de->d_name);
        ssize_t n = readlink(path, target, sizeof target - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        if (strcmp(target, link) != 0)
            continue;
        snprintf(path, sizeof path, "/proc/self/fdinfo/%s", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        r = fn(f, arg);
        fclose(f);
    }
    closedir(d);
    return r;
}
