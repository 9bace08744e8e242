/* The coroutine scenarios: an echo over coroutines, a crowd of them, the sync
 * primitives and streams. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include "oom_sweep.h"

/* ---- coroutines: spawn, I/O, channels, sleep, join, cancel, greenlets ------------------ */

/* Receives through a receive stream (into the loop's pool of two buffers). */
static void *server(void *arg)
{
    echo_t *e = arg;
    char buf[1024];
    iop_recv_stream_t rs;
    int fd = note(iop_accept(e->lfd, NULL, NULL, soon()), "iop_accept"), r = fd;
    int streaming = fd >= 0 && (r = note(iop_recv_stream_open(&rs, fd, 0), "iop_recv_stream_open")) == 0;
    while (streaming) {
        const char *data;
        ssize_t n = iop_recv_stream_next(&rs, buf, sizeof buf, &data, soon());
        if (n <= 0) {
            r = note((int)n, "iop_recv (server)");
            break;
        }
        int len = (int)n;
        if ((r = note(iop_chan_send(e->ch, &len, soon()), "iop_chan_send")) < 0)
            break;
        for (ssize_t off = 0; off < n;) {
            ssize_t m = iop_send(fd, data + off, (size_t)(n - off), 0, soon());
            if (m < 0) {
                r = note((int)m, "iop_send (server)");
                break;
            }
            off += m;
        }
        if (r < 0)
            break;
    }
    if (streaming)
        iop_recv_stream_close(&rs);
    if (fd >= 0)
        iop_close(fd);
    iop_chan_close(e->ch);
    return as_ptr(r < 0 ? r : 0);
}

static void *counter(void *arg)
{
    echo_t *e = arg;
    int len, r;
    while ((r = iop_chan_recv(e->ch, &len, soon())) == 0)
        e->counted += len;
    return as_ptr(r == -EPIPE ? 0 : note(r, "iop_chan_recv"));
}

/* A greenlet: doubles what it is switched to, until given 0. */
static void *doubler(void *arg)
{
    intptr_t v = (intptr_t)arg;
    while (v)
        v = (intptr_t)iop_switch(iop_main(), as_ptr(v * 2));
    return NULL;
}

static void *sleeper(void *arg)
{
    (void)arg;
    int r = iop_sleep(SEC);        /* cancelled long before */
    assert_true(r == -ECANCELED || r == -ENOMEM);
    return NULL;
}

static void coro_scenario(void)
{
    iop_loop_t *loop = loop_new(2);
    if (!loop)
        return;
    echo_t e = { .lfd = tu_tcp_listener(&e.addr, 8) };
    iop_coro_t *srv = NULL, *cli = NULL, *cnt = NULL, *slp = NULL, *g = NULL;
    iop_coro_opts_t named = { .size = sizeof named, .name = "server" };
    if (note(iop_chan_new(&e.ch, sizeof(int), 2), "iop_chan_new") < 0 ||
        note(iop_go(loop, sleeper, NULL, NULL, &slp), "iop_go sleeper") < 0)
        goto out;
    if (note(iop_go(loop, server, &e, &named, &srv), "iop_go server") == 0 &&
        (note(iop_go(loop, counter, &e, NULL, &cnt), "iop_go counter") < 0 ||
         note(iop_go(loop, echo_client, &e, NULL, &cli), "iop_go client") < 0)) {
        /* Nothing will connect: the ones started are cancelled, then joined. */
        iop_cancel(srv);
        if (cnt)
            iop_cancel(cnt);
    }
    if (cli && join(cli, "client") < 0) {
        iop_cancel(srv);           /* no client: its accept would wait for good */
        iop_cancel(cnt);
    }
    tu_run_nowait(loop, 2);        /* let the sleeper park */
    int r = iop_cancel(slp);
    assert_true(r == 0 || r == -ESRCH);   /* -ESRCH: it ended with -ENOMEM already */
    join(slp, "sleeper");
    if (srv)
        join(srv, "server");
    if (cnt && join(cnt, "counter") == 0 && !oc.err)
        assert_int_equal(e.counted, 3 * 2000);
    if (!oc.err && note(iop_coro_create(loop, doubler, NULL, NULL, &g), "iop_coro_create") == 0) {
        assert_int_equal((intptr_t)iop_switch(g, as_ptr(21)), 42);
        assert_null(iop_switch(g, NULL));
        assert_true(iop_coro_done(g));
        iop_coro_free(g);
    }
out:
    if (oc.err)
        still_works(loop);
    iop_fd_close(loop, e.lfd);
    iop_loop_destroy(loop);
    iop_chan_free(e.ch);
}

void test_coro(void **state)
{
    (void)state;
    sweep("coroutines", coro_scenario);
}

/* ---- a crowd of coroutines: records past the first chunk, a nursery, a mutex ---------- */

#define NCORO 70          /* past the scheduler's first 64 coroutine records */

typedef struct crowd_ctx {
    iop_mutex_t m;
    int ran;
    int p[2];             /* a pipe for iop_wait_fd */
    iop_chan_t *a, *b;
} crowd_ctx_t;

static void *crowd_child(void *arg)
{
    crowd_ctx_t *cx = arg;
    int r = note(iop_mutex_lock(&cx->m, 0), "iop_mutex_lock");
    if (r == 0) {
        r = note(iop_sleep(10000), "iop_sleep");
        iop_mutex_unlock(&cx->m);
    }
    if (r == 0)
        cx->ran++;
    return NULL;
}

/* Waits for the pipe, then takes one value from either channel. */
static void *selector(void *arg)
{
    crowd_ctx_t *cx = arg;
    int v = 0, w = 0;
    if (note(iop_wait_fd(cx->p[1], IOP_WRITE, soon()), "iop_wait_fd") < 0)
        return NULL;
    iop_select_case_t cases[2] = { { .ch = cx->a, .elem = &v }, { .ch = cx->b, .elem = &w } };
    int i = note(iop_select(cases, 2, soon()), "iop_select");
    if (i >= 0)
        assert_int_equal(i ? w : v, 5);
    return NULL;
}

static void *feeder(void *arg)
{
    crowd_ctx_t *cx = arg;
    int five = 5;
    note(iop_chan_send(cx->b, &five, soon()), "iop_chan_send");
    return NULL;
}

static void crowd_scenario(void)
{
    iop_loop_t *loop = loop_new(0);
    if (!loop)
        return;
    crowd_ctx_t cx = { .ran = 0 };
    iop_mutex_init(&cx.m);
    tu_pipe(cx.p);
    iop_nursery_t n;
    iop_nursery_init(&n, loop);
    int spawned = 0;
    if (note(iop_chan_new(&cx.a, sizeof(int), 0), "iop_chan_new") < 0 ||
        note(iop_chan_new(&cx.b, sizeof(int), 0), "iop_chan_new") < 0)
        goto out;
    if (note(iop_nursery_go(&n, selector, &cx, NULL), "iop_nursery_go") == 0 &&
        note(iop_nursery_go(&n, feeder, &cx, NULL), "iop_nursery_go") < 0) {
        /* nothing will feed the selector: close its channels */
        iop_chan_close(cx.a);
        iop_chan_close(cx.b);
    }
    for (; spawned < NCORO; spawned++)
        if (note(iop_nursery_go(&n, crowd_child, &cx, NULL), "iop_nursery_go") < 0)
            break;
    int r = iop_nursery_close(&n, tu_clock_ns() + 5 * SEC);
    if (r == -ETIMEDOUT || r == -EDEADLK)
        fail_msg("crowd: %s (%s)", iop_strerror(r), iop_last_error());
    note(r, "iop_nursery_close");
    if (!oc.err)
        assert_int_equal(cx.ran, NCORO);
out:
    if (oc.err)
        still_works(loop);
    iop_fd_close(loop, cx.p[0]);
    iop_fd_close(loop, cx.p[1]);
    iop_loop_destroy(loop);
    iop_chan_free(cx.a);
    iop_chan_free(cx.b);
}

void test_crowd(void **state)
{
    (void)state;
    sweep("coroutine crowd", crowd_scenario);
}

/* ---- coroutines: scheduler options, sync primitives with deadlines, a send behind ------ */

#define BEHIND (256 * 1024) /* more than the socket buffers hold: the send goes on in pieces */

typedef struct sync_ctx {
    iop_mutex_t m;
    iop_cond_t cv;
    iop_sem_t sem;
    iop_wg_t wg;
    int ready, woke;
    int fds[2];           /* a TCP pair: [0] sends behind, [1] receives as a stream */
    char *big;
    size_t got;
} sync_ctx_t;

typedef struct copied {
    sync_ctx_t *x;
    int tag;
} copied_t;

/* Spawned with its argument copied onto its stack (arg_size). */
static void *cv_waiter(void *arg)
{
    const copied_t *a = arg;
    sync_ctx_t *x = a->x;
    assert_int_equal(a->tag, 42);
    int r = note(iop_mutex_lock(&x->m, soon()), "iop_mutex_lock");
    if (r < 0)
        goto out;
    while (!x->ready && (r = note(iop_cond_wait(&x->cv, &x->m, soon()), "iop_cond_wait")) == 0)
        ;
    if (r == 0)
        x->woke++;
    iop_mutex_unlock(&x->m);   /* held after any return of cond_wait */
out:
    iop_sem_release(&x->sem);
    iop_wg_done(&x->wg);
    return NULL;
}

/* Takes what the peer sends behind through a receive stream, giving some back. */
static void *stream_reader(void *arg)
{
    sync_ctx_t *x = arg;
    iop_recv_stream_t rs;
    char buf[512];
    int r = note(iop_recv_stream_open(&rs, x->fds[1], 0), "iop_recv_stream_open");
    int opened = r == 0, gave_back = 0;
    while (r == 0 && x->got < BEHIND) {
        const char *data;
        ssize_t n = iop_recv_stream_next(&rs, buf, sizeof buf, &data, soon());
        if (n <= 0) {
            r = note(n ? (int)n : -EPIPE, "iop_recv_stream_next");
            break;
        }
        if (!gave_back && n > 1 && data != buf) {   /* a pool buffer: its last byte back */
            assert_int_equal(iop_recv_stream_unread(&rs, 1), 0);
            n--;
            gave_back = 1;
        }
        assert_memory_equal(data, x->big + x->got, (size_t)n);
        x->got += (size_t)n;
    }
    if (x->got < BEHIND)
        shutdown(x->fds[0], SHUT_RDWR);   /* the sender must not wait for this reader */
    if (opened)
        iop_recv_stream_close(&rs);
    return NULL;
}

static void *sender_behind(void *arg)
{
    sync_ctx_t *x = arg;
    iop_send_behind_t sb;
    memset(&sb, 0, sizeof sb);
    if (note(iop_send_behind(&sb, x->fds[0], x->big, BEHIND, 0), "iop_send_behind") < 0) {
        shutdown(x->fds[0], SHUT_RDWR);   /* the reader sees the end */
        return NULL;
    }
    /* A scope deadline: a sleep past it ends at it. */
    iop_deadline_push(iop_now(iop_coro_loop(iop_self())) + 2000000);
    int r = iop_sleep(SEC);
    iop_deadline_pop();
    if (r != -ETIMEDOUT)
        note(r, "iop_sleep in a scope");
    ssize_t n = iop_send_behind_wait(&sb, soon());
    if (note((int)(n < 0 ? n : 0), "iop_send_behind_wait") == 0)
        assert_int_equal(n, BEHIND);
    else
        shutdown(x->fds[0], SHUT_RDWR);
    return NULL;
}

static void sync_scenario(void)
{
    iop_loop_t *loop = loop_new(16);
    if (!loop)
        return;
    static char big[BEHIND];
    sync_ctx_t x = { .big = big };
    tu_fill_pattern(big, sizeof big, 5);
    iop_mutex_init(&x.m);
    iop_cond_init(&x.cv);
    iop_sem_init(&x.sem, 0);
    iop_wg_init(&x.wg);
    tu_tcp_pair(x.fds);
    iop_coro_t *rd = NULL, *sd = NULL;
    int waiters = 0;
    const iop_sched_opts_t so = { .size = sizeof so, .flags = IOP_CORO_CANARY, .stack_size = 48 * 1024,
                                  .pool_max = 2 };
    if (note(iop_sched_configure(loop, &so), "iop_sched_configure") < 0)
        goto out;
    const copied_t a = { .x = &x, .tag = 42 };
    const iop_coro_opts_t co = { .size = sizeof co, .flags = IOP_CORO_GUARD, .name = "cv-waiter",
                                 .arg_size = sizeof a };
    for (; waiters < 3; waiters++) {
        iop_wg_add(&x.wg, 1);
        if (note(iop_go(loop, cv_waiter, (void *)&a, &co, NULL), "iop_go waiter") < 0) {
            iop_wg_done(&x.wg);
            break;
        }
    }
    if (note(iop_go(loop, stream_reader, &x, NULL, &rd), "iop_go reader") == 0 &&
        note(iop_go(loop, sender_behind, &x, NULL, &sd), "iop_go sender") < 0)
        shutdown(x.fds[0], SHUT_RDWR);
    tu_run_nowait(loop, 3);    /* the waiters park */
    x.ready = 1;
    iop_cond_broadcast(&x.cv);
    for (int i = 0; i < waiters; i++) {
        int r = iop_sem_acquire(&x.sem, tu_clock_ns() + 5 * SEC);
        if (r == -ETIMEDOUT)
            fail_msg("a waiter never released the semaphore");
        note(r, "iop_sem_acquire");
    }
    int r = iop_wg_wait(&x.wg, tu_clock_ns() + 5 * SEC);
    if (r == -ETIMEDOUT)
        fail_msg("the wait group never came to 0");
    note(r, "iop_wg_wait");
    if (sd)
        join(sd, "sender behind");
    if (rd)
        join(rd, "stream reader");
    if (!oc.err) {
        assert_int_equal(x.woke, 3);
        assert_int_equal(x.got, BEHIND);
    }
out:
    if (oc.err)
        still_works(loop);
    iop_fd_close(loop, x.fds[0]);
    iop_fd_close(loop, x.fds[1]);
    iop_loop_destroy(loop);
}

void test_sync(void **state)
{
    (void)state;
    sweep("coroutine sync and streams", sync_scenario);
}
