/* The shard layer (`test_oom shard`): a supervisor with one worker under the sweep,
 * and a worker's acceptor out of fds and memory. */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
#include "oom_sweep.h"

/* ---- the shard layer (`test_oom shard`): a supervisor with one worker ------------------ */

/* What the supervisor child tells the test, in shared memory. */
typedef struct shard_share {
    _Atomic int port;
    _Atomic int finished;
    _Atomic long worker_failed;   /* injected failures a worker met (counted at its end) */
    int result;
    char msg[256];
} shard_share_t;

static shard_share_t *shs;

static void shard_on_listen(void *arg, uint32_t index, const struct sockaddr *addr, socklen_t len)
{
    (void)arg;
    (void)index;
    (void)len;
    atomic_store(&shs->port, ntohs(((const struct sockaddr_in *)addr)->sin_port));
}

static void shard_quiet(void *arg, int level, const char *line)
{
    (void)arg;
    if (getenv("OOM_VERBOSE"))
        fprintf(stderr, "[supervisor %d] %s", level, line);
}

static void shard_echo(iop_shard_worker_t *w, int fd, void *arg)
{
    (void)w;
    (void)arg;
    char b[64];
    uint64_t end = iop_now(iop_coro_loop(iop_self())) + 10 * SEC;
    ssize_t n = iop_recv(fd, b, sizeof b, 0, end);
    if (n > 0)
        iop_send(fd, b, (size_t)n, 0, end);
}

/* A worker that fails to start cannot count; its supervisor says why. */
static int shard_worker(iop_shard_worker_t *w)
{
    int r = iop_shard_serve(w, shard_echo, NULL);
    atomic_fetch_add(&shs->worker_failed, iop__alloc_fail_after(-1, 0));
    return r < 0 ? 1 : 0;
}

/* The supervisor, in a child of the test (iop_shard_run wants a process without
 * threads of its own), with the sweep's failure injected from its start. exit(),
 * not _exit(): LeakSanitizer checks the supervisor at its end. */
static void ignore_signal(int sig) { (void)sig; }

static _Noreturn void shard_child(long n)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    /* The test's SIGTERM may come after a failed run has ended: then it is pending
     * when the run restores the signal mask, and must not kill this process. */
    signal(SIGTERM, ignore_signal);
    /* Low fds taken: the worker's control socket gets a number past its loop's
     * first fd table, whose growth is then among the allocations swept. */
    for (int fd = dup(0); fd >= 0 && fd < 100; fd = dup(0))
        ;
    static const char *const listen[] = { "127.0.0.1:0", NULL };
    iop_shard_opts_t o = { .size = sizeof o, .workers = 1, .listen = listen, .worker = shard_worker,
                           .on_listen = shard_on_listen, .on_event = shard_quiet, .crash_limit = 1,
                           .backoff_min_ns = 1000000, .drain_timeout_ns = 2 * SEC };
    iop__alloc_fail_after(n, once);
    int r = iop_shard_run(&o);
    long failed = iop__alloc_fail_after(-1, 0);
    shs->result = r;
    snprintf(shs->msg, sizeof shs->msg, "%s", r < 0 ? iop_last_error() : "");
    atomic_store(&shs->finished, failed > 0 ? 2 : 1);   /* 2: an injected failure met here */
    fflush(NULL);
    exit(0);
}

static long shard_n;

/* A client of the worker: the echo comes back, or the connection ends (the worker
 * failed); either way the supervisor is then stopped and must end. */
static void shard_scenario(void)
{
    int echoed = 0;
    memset(shs, 0, sizeof *shs);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        shard_child(shard_n);
    uint64_t end = tu_clock_ms() + 10000;
    while (!atomic_load(&shs->port) && !atomic_load(&shs->finished)) {
        if (tu_clock_ms() > end)
            fail_msg("the supervisor neither listened nor ended");
        tu_sleep_ms(2);
    }
    if (atomic_load(&shs->port)) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)shs->port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct timeval tv = { .tv_sec = 5 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char in[8] = "";
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 && send(fd, "ping", 4, MSG_NOSIGNAL) == 4) {
            ssize_t m = recv(fd, in, 4, MSG_WAITALL);
            if (m < 0 && errno == EAGAIN && !atomic_load(&shs->finished))
                fail_msg("the worker neither answered nor closed within 5 s");
            echoed = m == 4 && memcmp(in, "ping", 4) == 0;
        }
        close(fd);
        kill(pid, SIGTERM);
    }
    int status = 0;
    end = tu_clock_ms() + 15000;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (tu_clock_ms() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fail_msg("the supervisor did not end within 15 s of SIGTERM");
        }
        tu_sleep_ms(2);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("the supervisor died: status %#x", status);
    assert_true(atomic_load(&shs->finished));
    /* A worker that could not start met a failure (the supervisor's message says
     * which); so did a run that failed. */
    injected = atomic_load(&shs->finished) == 2 || atomic_load(&shs->worker_failed) > 0 || shs->result < 0;
    if (!injected && !echoed)
        fail_msg("shard: a run without an injected failure did not echo");
    if (shs->result < 0 && shs->result != -ENOMEM && shs->result != -ECHILD)
        note(shs->result, "iop_shard_run");
    else if (shs->result < 0 && !shs->msg[0])
        fail_msg("iop_shard_run: %s without saying why", iop_strerror(shs->result));
    else if (strstr(shs->msg, "without being asked to"))
        fail_msg("iop_shard_run: a worker short of memory stopped by itself as if its supervisor had "
                 "gone: %s", shs->msg);
    else if (strstr(shs->msg, "could not start") && !strstr(shs->msg, "memory"))
        fail_msg("iop_shard_run: a worker start failed for want of memory, and the reason given is: %s",
                 shs->msg);
}

static void shard_sweep_mode(void)
{
    const char *only = getenv("OOM_N");
    for (shard_n = only ? atol(only) : 0; shard_n < MAX_N; shard_n++) {
        memset(&oc, 0, sizeof oc);
        shard_scenario();
        if (getenv("OOM_VERBOSE"))
            print_message("shard: failing %s allocation %ld: %d %s\n", once ? "only" : "from", shard_n,
                          shs->result, shs->msg);
        if (oc.err)
            fail_msg("shard, failing allocation %ld: %s gave %s (%s)", shard_n, oc.what, iop_strerror(oc.err),
                     shs->msg);
        if (!injected || only) {
            print_message("shard: %ld allocations in the supervisor and its worker, each failure handled\n",
                          shard_n);
            return;
        }
    }
    fail_msg("shard: still failing after %d allocations", MAX_N);
}

void test_shard(void **state)
{
    (void)state;
    shs = mmap(NULL, sizeof *shs, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(shs != MAP_FAILED);
    const char *m = getenv("OOM_ONCE");
    for (once = 0; once < 2; once++)
        if (!m || atoi(m) == once)
            shard_sweep_mode();
    munmap(shs, sizeof *shs);
}

/* ---- a shard worker's acceptor out of fds, then of memory for its pause ---------------- */

typedef struct sabotage {
    _Atomic int done;     /* the first worker only */
    iop_timer_t timers[MAX_TIMERS];
    int unused;
} sabotage_t;

static sabotage_t *sab;

/* Gives the fds and the memory back once the acceptor has had many turns. */
static void *restorer(void *arg)
{
    (void)arg;
    for (int i = 0; i < 2000; i++)
        iop_yield();
    iop__alloc_fail_after(-1, 0);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    return NULL;
}

/* The first worker: a full timer heap (the acceptor's pause must grow it), no fd
 * left for an accepted connection, and no memory, until the restorer's end. */
static int sabotaged_worker(iop_shard_worker_t *w)
{
    if (!atomic_exchange(&sab->done, 1)) {
        iop_loop_t *loop = iop_shard_loop(w);
        if (fill_timer_heap(loop, sab->timers, MAX_TIMERS, &sab->unused) < 0)
            return 2;
        if (iop_go(loop, restorer, NULL, NULL, NULL) < 0)
            return 2;
        int fd = dup(0);
        close(fd);
        struct rlimit rl;
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = (rlim_t)fd;
        setrlimit(RLIMIT_NOFILE, &rl);
        iop__alloc_fail_after(0, 0);
    }
    iop_shard_serve(w, shard_echo, NULL);
    return 0;
}

/* A connection that waits in the backlog while the worker has no fd for it is
 * served once the worker has fds again, by that same worker. */
void test_shard_accept_oom(void **state)
{
    (void)state;
    shs = mmap(NULL, sizeof *shs, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    sab = mmap(NULL, sizeof *sab, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(shs != MAP_FAILED && sab != MAP_FAILED);
    memset(shs, 0, sizeof *shs);
    memset(sab, 0, sizeof *sab);
    iop_shard_stats_t *stats = NULL;
    assert_int_equal(iop_shard_stats_create(&stats, 1), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        signal(SIGTERM, ignore_signal);
        static const char *const listen[] = { "127.0.0.1:0", NULL };
        iop_shard_opts_t o = { .size = sizeof o, .workers = 1, .listen = listen, .worker = sabotaged_worker,
                               .backend = tu_backend, .on_listen = shard_on_listen, .on_event = shard_quiet,
                               .stats = stats, .drain_timeout_ns = 2 * SEC };
        shs->result = iop_shard_run(&o);
        atomic_store(&shs->finished, 1);
        exit(0);
    }
    uint64_t end = tu_clock_ms() + 10000;
    while (!atomic_load(&shs->port) && tu_clock_ms() < end)
        tu_sleep_ms(2);
    assert_true(atomic_load(&shs->port) != 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)shs->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = { .tv_sec = 10 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char in[8] = "";
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(send(fd, "ping", 4, MSG_NOSIGNAL), 4);
    ssize_t m = recv(fd, in, 4, MSG_WAITALL);
    close(fd);
    iop_shard_worker_stats_t ws;
    assert_int_equal(iop_shard_stats_read(stats, 0, &ws), 0);
    kill(pid, SIGTERM);
    int status;
    waitpid(pid, &status, 0);
    if (m != 4)
        fail_msg("the connection was never served (%s)", m < 0 ? strerror(errno) : "closed");
    if (ws.generation != 1)
        fail_msg("the connection was served by worker generation %u: the first one stopped serving",
                 ws.generation);
    assert_true(WIFEXITED(status));
    assert_int_equal(shs->result, 0);
    iop_shard_stats_free(stats);
    munmap(sab, sizeof *sab);
    munmap(shs, sizeof *shs);
}
