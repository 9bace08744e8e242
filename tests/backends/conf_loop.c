/* The loop itself: statistics, iop_loop_run's return values and RUN_DEFAULT's end. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include "conformance.h"

#define MS 1000000ull

/* A thread that stops the loop after limit_ms unless told to go home first, so that
 * a RUN_DEFAULT that never ends fails the test instead of hanging it. */
typedef struct stopper {
    iop_loop_t *loop;
    unsigned limit_ms;
    atomic_int done;
    atomic_int fired;
    pthread_t th;
} stopper_t;

static void *stopper_main(void *arg)
{
    stopper_t *s = arg;
    for (unsigned waited = 0; waited < s->limit_ms && !atomic_load(&s->done); waited += 5)
        tu_sleep_ms(5);
    if (!atomic_load(&s->done)) {
        atomic_store(&s->fired, 1);
        iop_loop_stop(s->loop);
    }
    return NULL;
}

static void stopper_start(stopper_t *s, iop_loop_t *loop, unsigned limit_ms)
{
    s->loop = loop;
    s->limit_ms = limit_ms;
    atomic_store(&s->done, 0);
    atomic_store(&s->fired, 0);
    assert_int_equal(pthread_create(&s->th, NULL, stopper_main, s), 0);
}

static int stopper_finish(stopper_t *s)
{
    atomic_store(&s->done, 1);
    pthread_join(s->th, NULL);
    return atomic_load(&s->fired);
}

static int recs_done(void *arg)
{
    rec_t **r = arg;
    for (; *r; r++)
        if ((*r)->calls == 0)
            return 0;
    return 1;
}

static int timer_fires;

static void count_timer(iop_timer_t *t)
{
    (void)t;
    timer_fires++;
}

void test_loop_stats(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    iop_loop_stats_t st;
    iop_loop_get_stats(loop, &st);
    assert_int_equal(st.ops_submitted, 0);
    assert_int_equal(st.ops_completed, 0);

    int s[2];
    tu_tcp_pair(s);
    char buf[8];
    rec_t nop = { 0 }, tmo = { 0 }, rcv = { 0 }, snd = { 0 }, bad = { 0 };
    iop_prep_recv(&rcv.op, s[1], buf, sizeof buf, 0, rec_cb, &rcv);
    assert_int_equal(iop_submit(loop, &rcv.op), 0);       /* waits for readiness */
    assert_int_equal(iop_submit(loop, &rcv.op), -EBUSY);  /* refused: not counted */
    iop_prep_recv(&bad.op, -1, buf, sizeof buf, 0, rec_cb, &bad);
    assert_int_equal(iop_submit(loop, &bad.op), -EBADF);  /* refused: not counted */
    iop_prep_nop(&nop.op, rec_cb, &nop);
    assert_int_equal(iop_submit(loop, &nop.op), 0);
    iop_prep_timeout(&tmo.op, MS, rec_cb, &tmo);
    assert_int_equal(iop_submit(loop, &tmo.op), 0);
    tu_run_nowait(loop, 1);
    iop_prep_send(&snd.op, s[0], "stat", 4, 0, rec_cb, &snd);
    assert_int_equal(iop_submit(loop, &snd.op), 0);

    iop_loop_get_stats(loop, &st);
    assert_int_equal(st.ops_submitted, 4);
    rec_t *all[] = { &nop, &tmo, &rcv, &snd, NULL };
    assert_true(tu_run_until(loop, recs_done, all, 2000));
    tu_run_nowait(loop, 2);
    iop_loop_get_stats(loop, &st);
    assert_int_equal(st.ops_submitted, 4);
    assert_int_equal(st.ops_completed, 4);
    assert_true(st.iterations > 0);
    assert_true(st.syscalls > 0);
    assert_true(st.polls > 0);
    assert_true(st.events > 0);   /* the recv waited for a readiness event */

    /* Each NOWAIT run is at least one iteration; a user timer counts as fired. */
    uint64_t iters = st.iterations, fired = st.timers_fired;
    tu_run_nowait(loop, 3);
    iop_loop_get_stats(loop, &st);
    assert_true(st.iterations >= iters + 3);
    timer_fires = 0;
    iop_timer_t t = { 0 };
    assert_int_equal(iop_timer_start(loop, &t, MS, 0, NULL), -EINVAL);
    assert_int_equal(iop_timer_start(loop, &t, MS, 0, count_timer), 0);
    assert_true(tu_run_until_count(loop, &timer_fires, 1, 2000));
    iop_loop_get_stats(loop, &st);
    assert_true(st.timers_fired >= fired + 1);
    assert_int_equal(st.ops_completed, 4);

    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

/* iop_loop_destroy from the loop's own callbacks is refused: the iteration that
 * called them goes on, and the loop with it. */
static void destroy_from_op(iop_op_t *op, int res)
{
    rec_cb(op, res);
    iop_loop_destroy(op->loop);
}

static void destroy_from_watch(iop_watch_t *w, unsigned revents)
{
    (void)revents;
    (*(int *)w->data)++;
    iop_loop_destroy(w->loop);
    iop_watch_stop(w);
}

void test_loop_destroy_from_callback_refused(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int pair[2];
    tu_tcp_pair(pair);
    rec_t nop = { 0 }, rx = { 0 };
    char buf[8];
    iop_prep_nop(&nop.op, destroy_from_op, &nop);
    iop_prep_recv(&rx.op, pair[1], buf, sizeof buf, 0, destroy_from_op, &rx);
    assert_int_equal(iop_submit(loop, &nop.op), 0);
    assert_int_equal(iop_submit(loop, &rx.op), 0);
    iop_watch_t w = { 0 };
    int watch_calls = 0;
    w.data = &watch_calls;
    assert_int_equal(iop_watch_start(loop, &w, pair[0], IOP_WRITE, destroy_from_watch), 0);
    assert_int_equal(send(pair[0], "ok", 2, 0), 2);
    uint64_t end = tu_clock_ms() + 5000;
    while ((nop.calls == 0 || rx.calls == 0 || watch_calls == 0) && tu_clock_ms() < end)
        assert_true(iop_loop_run(loop, IOP_RUN_ONCE) >= 0);
    assert_int_equal(nop.calls, 1);
    assert_int_equal(rx.calls, 1);
    assert_int_equal(rx.res, 2);
    assert_int_equal(watch_calls, 1);
    assert_non_null(strstr(iop_last_error(), "iop_loop_destroy"));
    /* Still a loop: it runs what comes next. */
    rec_t after = { 0 };
    iop_prep_nop(&after.op, rec_cb, &after);
    assert_int_equal(iop_submit(loop, &after.op), 0);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_DEFAULT), 0);
    assert_int_equal(after.calls, 1);
    conf_close(loop, pair[1]);
    close(pair[0]);
    iop_loop_destroy(loop);
}

static void noop_watch(iop_watch_t *w, unsigned revents)
{
    (void)w;
    (void)revents;
}

void test_loop_run_return_values(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    stopper_t stop;

    /* Nothing pending: 0 from every mode that cannot block forever. */
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);
    /* No such mode (it ran as RUN_ONCE: on an empty loop, forever) */
    assert_int_equal(iop_loop_run(loop, (iop_run_mode_t)7), -EINVAL);
    assert_non_null(strstr(iop_last_error(), "unknown mode"));
    iop_post_t post;
    assert_int_equal(iop_loop_post(loop, &post, NULL), -EINVAL);
    assert_non_null(strstr(iop_last_error(), "iop_loop_post"));
    stopper_start(&stop, loop, 3000);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_DEFAULT), 0);
    assert_false(stopper_finish(&stop));

    /* A timer still pending after a RUN_ONCE that fired another: 1. */
    timer_fires = 0;
    iop_timer_t soon = { 0 }, far = { 0 };
    assert_int_equal(iop_timer_start(loop, &soon, 5 * MS, 0, count_timer), 0);
    assert_int_equal(iop_timer_start(loop, &far, 10000 * MS, 0, count_timer), 0);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 1);
    int r = 1;
    for (int i = 0; i < 100 && timer_fires == 0 && r == 1; i++)
        r = iop_loop_run(loop, IOP_RUN_ONCE);   /* blocks until `soon` is due */
    assert_int_equal(r, 1);
    assert_int_equal(timer_fires, 1);
    assert_false(iop_timer_active(&soon));
    assert_true(iop_timer_active(&far));
    iop_timer_stop(&far);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);

    /* A watch and an op in flight count as pending too. */
    int p[2];
    tu_pipe(p);
    iop_watch_t w = { 0 };
    assert_int_equal(iop_watch_start(loop, &w, p[0], IOP_READ, noop_watch), 0);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 1);
    iop_watch_modify(&w, 0);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 1);   /* paused, not stopped */
    iop_watch_stop(&w);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);

    char buf[4];
    rec_t rd = { 0 }, cancel = { 0 };
    iop_prep_read(&rd.op, p[0], buf, sizeof buf, -1, rec_cb, &rd);
    assert_int_equal(iop_submit(loop, &rd.op), 0);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 1);
    iop_prep_cancel(&cancel.op, &rd.op, rec_cb, &cancel);
    assert_int_equal(iop_submit(loop, &cancel.op), 0);
    rec_t *both[] = { &rd, &cancel, NULL };
    assert_true(tu_run_until(loop, recs_done, both, 2000));
    assert_int_equal(rd.res, -ECANCELED);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);

    conf_close(loop, p[0]);
    conf_close(loop, p[1]);
    iop_loop_destroy(loop);
}

typedef struct idle_ctx {
    int fd;
    iop_op_t send_op;
    int fires;
} idle_ctx_t;

static void idle_sent(iop_op_t *op, int res)
{
    (void)op;
    assert_int_equal(res, 5);
}

static void idle_timer(iop_timer_t *t)
{
    idle_ctx_t *c = t->data;
    if (++c->fires == 2) {   /* the second timer feeds the waiting recv */
        iop_prep_send(&c->send_op, c->fd, "later", 5, 0, idle_sent, c);
        assert_int_equal(iop_submit(t->loop, &c->send_op), 0);
    }
}

void test_loop_run_default_until_idle(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    idle_ctx_t ctx = { .fd = s[0] };
    iop_timer_t t[3] = { { .data = &ctx }, { .data = &ctx }, { .data = &ctx } };
    uint64_t t0 = tu_clock_ms();
    iop_update_time(loop);   /* timers count from the loop clock: make it current */
    for (int i = 0; i < 3; i++)
        assert_int_equal(iop_timer_start(loop, &t[i], (uint64_t)(5 + 10 * i) * MS, 0, idle_timer), 0);
    char buf[8] = { 0 };
    rec_t rcv = { 0 };
    iop_prep_recv(&rcv.op, s[1], buf, sizeof buf, 0, rec_cb, &rcv);
    assert_int_equal(iop_submit(loop, &rcv.op), 0);

    stopper_t stop;
    stopper_start(&stop, loop, 3000);
    int r = iop_loop_run(loop, IOP_RUN_DEFAULT);   /* returns once nothing is left */
    assert_false(stopper_finish(&stop));
    assert_int_equal(r, 0);
    assert_int_equal(ctx.fires, 3);
    assert_int_equal(rcv.calls, 1);
    assert_int_equal(rcv.res, 5);
    assert_memory_equal(buf, "later", 5);
    assert_true(tu_clock_ms() - t0 >= 25);   /* the last timer's delay */

    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

/* A forked child cannot use its parent's loop (an io_uring ring, an epoll set and
 * the parent's registrations are shared with the parent): running it fails with a
 * clear error, and a loop the child creates itself works. */
void test_fork_child_makes_own_loop(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    char buf[8];
    rec_t r = { 0 };
    iop_prep_recv(&r.op, s[1], buf, sizeof buf, 0, rec_cb, &r);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    tu_run_nowait(loop, 1);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int code = 0;
        if (iop_loop_run(loop, IOP_RUN_NOWAIT) != -ECHILD || !strstr(iop_last_error(), "forked child"))
            code |= 1;
        /* Nothing done through the parent's loop here reaches its backend: a close
         * here once removed s[1] from the parent's epoll set (its recv never came)
         * and crashed on io_uring, whose ring is not mapped in a child. */
        rec_t late = { 0 };
        iop_prep_recv(&late.op, s[1], buf, sizeof buf, 0, rec_cb, &late);
        if (iop_submit(loop, &late.op) != -ECHILD)
            code |= 16;
        iop_watch_t w = { 0 };
        if (iop_watch_start(loop, &w, s[0], IOP_READ, noop_watch) != -ECHILD)
            code |= 32;
        int reg = iop_fd_register(loop, s[1]);   /* 0: nothing to register on this backend */
        if (reg != 0 && reg != -ECHILD)
            code |= 64;
        if (iop_fd_close(loop, s[1]) != 0)
            code |= 64;
        iop_loop_t *own = NULL;
        iop_loop_opts_t o = { .size = sizeof o, .backend = tu_backend, .flags = tu_loop_flags };
        if (iop_loop_create(&own, &o) < 0) {
            code |= 2;
        } else {
            rec_t t = { 0 };
            iop_prep_timeout(&t.op, 1000000, rec_cb, &t);
            if (iop_submit(own, &t.op) < 0)
                code |= 4;
            for (int i = 0; i < 1000 && !t.calls; i++)
                iop_loop_run(own, IOP_RUN_ONCE);
            if (t.calls != 1 || t.res != 0)
                code |= 8;
            iop_loop_destroy(own);
        }
        /* The parent's loop: only its memory goes, the backend's too (exit, not
         * _exit: under the sanitizers LeakSanitizer checks the child). */
        iop_loop_destroy(loop);
        exit(code);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    /* The parent's loop is untouched by the child. */
    assert_int_equal(send(s[0], "after", 5, 0), 5);
    assert_true(tu_run_until_count(loop, &r.calls, 1, 2000));
    assert_int_equal(r.res, 5);
    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}

/* ---- one listener, several processes (shard's shared-listener mode) ---------- */

enum { SHARE_KIDS = 3, SHARE_CONNS = 30 };

typedef struct share_kid {
    iop_loop_t *loop;
    iop_op_t accept, stop;
    char stop_buf[1];
    int lfd, out;        /* out: the pipe each connection's id byte goes to */
    int acc;             /* a byte for each connection accepted, before its id is read */
    int fails, done;
} share_kid_t;

/* 2 if an epoll set lists lfd with EPOLLEXCLUSIVE, 1 without it, 0 not there. */
static int exclusive_in(FILE *fdinfo, void *arg)
{
    int lfd = *(int *)arg, tfd;
    unsigned events;
    char line[256];
    while (fgets(line, sizeof line, fdinfo))
        if (sscanf(line, "tfd: %d events: %x", &tfd, &events) == 2 && tfd == lfd)
            return (events & EPOLLEXCLUSIVE) ? 2 : 1;
    return 0;
}

/* Does this process's epoll set hold lfd with EPOLLEXCLUSIVE? From /proc's fdinfo
 * of every epoll fd: 1 yes, 0 registered without it, -1 not found. */
static int epoll_exclusive(int lfd)
{
    return tu_fdinfo_each("anon_inode:[eventpoll]", exclusive_in, &lfd) - 1;
}

/* The connection's id byte, waited for 2 s at most: 0, or -1. An interrupted
 * wait goes on: a uring child's blocking read (SO_RCVTIMEO) failed with EINTR
 * with no signal pending (5 in 700 runs under load: the teardown of the probe's
 * ring, see backends/uring/README.md), and the connection it had accepted was
 * dropped as failed. */
static int read_id(int fd, char *id)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    uint64_t end = tu_clock_ms() + 2000;
    for (;;) {
        ssize_t n = read(fd, id, 1);
        if (n == 1)
            return 0;
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            return -1;
        uint64_t now = tu_clock_ms();
        if (now >= end)
            return -1;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        (void)poll(&p, 1, (int)(end - now));   /* EINTR too: read again */
    }
}

static void share_accepted(iop_op_t *op, int res)
{
    share_kid_t *k = op->data;
    if (res >= 0) {
        char id;
        if (write(k->acc, "a", 1) != 1 || read_id(res, &id) < 0 || write(k->out, &id, 1) != 1)
            k->fails++;
        close(res);
    } else if (res != -EAGAIN && res != -EINTR && res != -ECONNABORTED) {
        k->fails++;
    }
    iop_prep_accept(&k->accept, k->lfd, NULL, NULL, share_accepted, k);
    if (iop_submit(k->loop, &k->accept) < 0)
        k->fails++;
}

static void share_stopped(iop_op_t *op, int res)
{
    (void)res;
    ((share_kid_t *)op->data)->done = 1;
}

static void share_kid_tick(iop_timer_t *t) { (void)t; }

static void share_kid_signal(int sig) { (void)sig; }

/* Serves lfd in a forked child until the parent closes `stop` (20 s at most): exit
 * 0, or a bit per failure. */
static void share_kid_main(int lfd, int out, int acc, int stop, int ready)
{
    share_kid_t k = { .lfd = lfd, .out = out, .acc = acc };
    struct sigaction sa = { .sa_handler = share_kid_signal };   /* no SA_RESTART: calls end in EINTR */
    sigaction(SIGUSR1, &sa, NULL);
    iop_loop_opts_t o = { .size = sizeof o, .backend = tu_backend, .flags = tu_loop_flags };
    if (iop_loop_create(&k.loop, &o) < 0)
        _exit(1);
    iop_prep_accept(&k.accept, lfd, NULL, NULL, share_accepted, &k);
    if (iop_submit(k.loop, &k.accept) < 0)
        _exit(2);
    iop_loop_run(k.loop, IOP_RUN_NOWAIT);   /* the accept now waits, registered */
    int code = 0;
    /* A backend that claims exclusive wake-ups must use them for a waiting accept. */
    if ((iop_loop_caps(k.loop) & IOP_CAP_EXCLUSIVE_WAKE) && strcmp(iop_loop_backend(k.loop), "epoll") == 0 &&
        epoll_exclusive(lfd) != 1)
        code |= 4;
    if (write(ready, "r", 1) != 1)   /* the parent connects once every accept waits */
        code |= 32;
    iop_prep_read(&k.stop, stop, k.stop_buf, 1, -1, share_stopped, &k);   /* 0 at the close */
    iop_timer_t tick = { 0 };
    if (iop_submit(k.loop, &k.stop) < 0 || iop_timer_start(k.loop, &tick, 100 * MS, 100 * MS, share_kid_tick) < 0)
        _exit(16);
    uint64_t end = tu_clock_ms() + 20000;
    while (!k.done && tu_clock_ms() < end)
        iop_loop_run(k.loop, IOP_RUN_ONCE);
    if (k.fails)
        code |= 8;
    _exit(code);
}

/* waitpid with a bound: the child's pid, or -1 after SIGKILL at the limit. */
static pid_t reap_ms(pid_t pid, int *status, unsigned ms)
{
    for (unsigned waited = 0; waited < ms; waited += 10) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r != 0)
            return r;
        tu_sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, status, 0);
    return -1;
}

/* Creating a loop leaves the caller's next blocking calls alone: a recv with a
 * 200 ms SO_RCVTIMEO on an idle socket made right after times out. uring's probe
 * closed a ring, whose teardown some ms later queued TWA_SIGNAL task work on its
 * creator, and such a recv failed with EINTR, no signal sent (every time on 6.18).
 * In a fresh child: the parent's earlier loops were destroyed, and the rings of
 * those interrupt the parent the same way (backends/uring/README.md). */
void test_loop_create_leaves_calls_uninterrupted(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int code = 0, s[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s) < 0)
            _exit(1);
        struct timeval tv = { .tv_usec = 200000 };
        setsockopt(s[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        iop_loop_t *loop = NULL;
        iop_loop_opts_t o = { .size = sizeof o, .backend = tu_backend, .flags = tu_loop_flags };
        if (iop_loop_create(&loop, &o) < 0)
            _exit(2);
        char c;
        ssize_t n = recv(s[0], &c, 1, 0);
        if (n >= 0 || errno != EAGAIN)
            code |= errno == EINTR ? 4 : 8;
        iop_loop_destroy(loop);
        close(s[0]);
        close(s[1]);
        exit(code);   /* exit, not _exit: under the sanitizers LeakSanitizer checks the child */
    }
    int status = 0;
    assert_int_equal(reap_ms(pid, &status, 5000), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* Three processes, three loops, one listening socket: every connection is accepted
 * by exactly one of them, none is lost; on epoll the accept waits with
 * EPOLLEXCLUSIVE, so a connection wakes one process instead of all three. Every
 * tenth connection's id comes only after a signal has interrupted the children,
 * the one that accepted it waiting for that id. */
void test_shared_listener_processes(void **state)
{
    (void)state;
    struct sockaddr_in addr;
    int lfd = tu_tcp_listener(&addr, 64);
    int out[2], acc[2], ready[2], stop[SHARE_KIDS][2];   /* a stop pipe each: sigio owns one file per process */
    assert_int_equal(pipe(out), 0);
    assert_int_equal(pipe(acc), 0);
    assert_int_equal(pipe(ready), 0);
    pid_t kids[SHARE_KIDS];
    for (int i = 0; i < SHARE_KIDS; i++) {
        assert_int_equal(pipe(stop[i]), 0);
        kids[i] = fork();
        assert_true(kids[i] >= 0);
        if (kids[i] == 0) {
            close(out[0]);
            close(acc[0]);
            close(ready[0]);
            close(stop[i][1]);
            share_kid_main(lfd, out[1], acc[1], stop[i][0], ready[1]);
        }
        close(stop[i][0]);
    }
    close(out[1]);
    close(acc[1]);
    close(ready[1]);
    for (int i = 0; i < SHARE_KIDS; i++) {
        char r;
        struct pollfd p = { .fd = ready[0], .events = POLLIN };
        assert_int_equal(poll(&p, 1, 5000), 1);
        assert_int_equal(read(ready[0], &r, 1), 1);
    }
    close(ready[0]);
    int seen[SHARE_CONNS] = { 0 };
    for (int i = 0; i < SHARE_CONNS; i++) {
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_int_equal(connect(c, (struct sockaddr *)&addr, sizeof addr), 0);
        char a;
        struct pollfd p = { .fd = acc[0], .events = POLLIN };
        assert_int_equal(poll(&p, 1, 5000), 1);   /* one at a time: each wakes someone */
        assert_int_equal(read(acc[0], &a, 1), 1);
        if (i % 10 == 0) {
            tu_sleep_ms(20);                      /* its acceptor waits for the id by now */
            for (int j = 0; j < SHARE_KIDS; j++)
                assert_int_equal(kill(kids[j], SIGUSR1), 0);
            tu_sleep_ms(5);
        }
        char id = (char)i;
        assert_int_equal(write(c, &id, 1), 1);
        char id_back;
        p = (struct pollfd){ .fd = out[0], .events = POLLIN };
        assert_int_equal(poll(&p, 1, 5000), 1);   /* and it is served */
        assert_int_equal(read(out[0], &id_back, 1), 1);
        assert_true((unsigned char)id_back < SHARE_CONNS);
        seen[(unsigned char)id_back]++;
        close(c);
    }
    for (int i = 0; i < SHARE_CONNS; i++)
        assert_int_equal(seen[i], 1);
    for (int i = 0; i < SHARE_KIDS; i++)
        close(stop[i][1]);
    for (int i = 0; i < SHARE_KIDS; i++) {
        int status = 0;
        assert_int_equal(reap_ms(kids[i], &status, 5000), kids[i]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    close(out[0]);
    close(acc[0]);
    close(lfd);
}
