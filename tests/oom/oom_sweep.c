/* The out-of-memory sweep (oom_sweep.h), the check that a loop still works after a
 * failure, and the helpers several scenario groups use. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "oom_sweep.h"

/* ---- the sweep ---------------------------------------------------------------------- */

long injected;
int once;
outcome_t oc;

void inject(long n) { injected += iop__alloc_fail_after(n, once); }

int note(int r, const char *what)
{
    if (r < 0 && !oc.err) {
        oc.err = r;
        oc.what = what;
        snprintf(oc.msg, sizeof oc.msg, "%s", iop_last_error());
    }
    return r;
}

/* $OOM_N=n runs the one step n (to debug it); $OOM_VERBOSE=1 tells every step. */
static void sweep_mode(const char *name, scenario_fn run)
{
    const char *only = getenv("OOM_N");
    const char *mode = once ? "only" : "from";
    for (long n = only ? atol(only) : 0; n < MAX_N; n++) {
        memset(&oc, 0, sizeof oc);
        injected = 0;
        inject(n);
        run();
        inject(-1);
        if (getenv("OOM_VERBOSE"))
            print_message("%s: failing %s allocation %ld: %s\n", name, mode, n, oc.err ? oc.what : "absorbed");
        if (oc.err && oc.err != -ENOMEM)
            fail_msg("%s, failing %s allocation %ld: %s gave %s (%s)", name, mode, n, oc.what,
                     iop_strerror(oc.err), oc.msg);
        if (!injected) {
            if (oc.err)
                fail_msg("%s: %s failed without an injected failure: %s", name, oc.what, iop_strerror(oc.err));
            print_message("%s: %ld allocations, each failure handled (%s n on)\n", name, n,
                          once ? "only" : "every one from");
            return;
        }
        if (only)
            return;
    }
    fail_msg("%s: still failing after %d allocations", name, MAX_N);
}

/* Both modes; $OOM_ONCE=0 or 1 picks one. */
void sweep(const char *name, scenario_fn run)
{
    const char *m = getenv("OOM_ONCE");
    for (once = 0; once < 2; once++)
        if (!m || atoi(m) == once)
            sweep_mode(name, run);
}

iop_loop_t *loop_new_flags(uint32_t buf_count, uint32_t flags)
{
    iop_loop_opts_t o = { .size = sizeof o, .backend = tu_backend, .flags = flags, .buf_count = buf_count,
                          .buf_size = 2048 };
    iop_loop_t *loop = NULL;
    int r = iop_loop_create(&loop, &o);
    if (r < 0) {
        note(r, "iop_loop_create");
        assert_null(loop);
        assert_true(iop_last_error()[0] != '\0');
        return NULL;
    }
    return loop;
}

iop_loop_t *loop_new(uint32_t buf_count) { return loop_new_flags(buf_count, 0); }

/* ---- after a failure: the same loop still works --------------------------------------- */

static void count_cb(iop_op_t *op, int res)
{
    int *n = op->data;
    assert_true(res >= 0);
    (*n)++;
}

static void count_timer(iop_timer_t *t) { (*(int *)t->data)++; }

static void stop_post(iop_post_t *p) { iop_loop_stop(p->data); }

static void count_watch(iop_watch_t *w, unsigned revents)
{
    (void)revents;
    (*(int *)w->data)++;
    iop_watch_stop(w);
}

static void *post_later(void *arg)
{
    static iop_post_t p;
    tu_sleep_ms(20);
    p.data = arg;
    assert_int_equal(iop_loop_post(arg, &p, stop_post), 0);
    return NULL;
}

/* With allocation back, a nop, a timeout op, a timer, a watch and a pipe's
 * write and read, all through loop; each must complete. Then a post from another
 * thread must wake the loop blocked in its backend. */
void still_works(iop_loop_t *loop)
{
    inject(-1);
    pthread_t th;
    int unused = 0;
    iop_timer_t far = { .data = &unused };
    assert_int_equal(iop_timer_start(loop, &far, 10 * SEC, 0, count_timer), 0);
    assert_int_equal(pthread_create(&th, NULL, post_later, loop), 0);
    uint64_t t0 = tu_clock_ms();
    assert_true(iop_loop_run(loop, IOP_RUN_DEFAULT) >= 0);
    if (tu_clock_ms() - t0 > 2000)
        fail_msg("a post from another thread no longer wakes the loop");
    pthread_join(th, NULL);
    iop_timer_stop(&far);
    int done = 0, p[2];
    char wbuf[16] = "still works", rbuf[16];
    tu_pipe(p);
    iop_op_t nop, tmo, wr, rd;
    iop_timer_t t = { .data = &done };
    iop_watch_t w = { .data = &done };
    iop_prep_nop(&nop, count_cb, &done);
    iop_prep_timeout(&tmo, 1000000, count_cb, &done);
    iop_prep_write(&wr, p[1], wbuf, sizeof wbuf, -1, count_cb, &done);
    iop_prep_read(&rd, p[0], rbuf, sizeof rbuf, -1, count_cb, &done);
    assert_int_equal(iop_submit(loop, &nop), 0);
    assert_int_equal(iop_submit(loop, &tmo), 0);
    assert_int_equal(iop_submit(loop, &rd), 0);
    assert_int_equal(iop_submit(loop, &wr), 0);
    assert_int_equal(iop_timer_start(loop, &t, 1000000, 0, count_timer), 0);
    assert_int_equal(iop_watch_start(loop, &w, p[1], IOP_WRITE, count_watch), 0);
    if (!tu_run_until_count(loop, &done, 6, RUN_MS))
        fail_msg("the loop no longer works after a failure (%d of 6 done)", done);
    assert_memory_equal(rbuf, wbuf, sizeof wbuf);
    assert_int_equal(iop_fd_close(loop, p[0]), 0);
    assert_int_equal(iop_fd_close(loop, p[1]), 0);
}

/* ---- helpers several scenario groups use -------------------------------------------- */

/* Arms timers until the loop's timer heap is full (the next one would need memory
 * to grow it): how many it armed, or -1 if max did not fill it. */
int fill_timer_heap(iop_loop_t *loop, iop_timer_t *t, int max, int *data)
{
    for (int i = 0; i < max; i++) {
        memset(&t[i], 0, sizeof t[i]);
        t[i].data = data;
        iop__alloc_fail_after(0, 1);
        int r = iop_timer_start(loop, &t[i], 100 * SEC, 0, count_timer);
        iop__alloc_fail_after(-1, 0);
        if (r == -ENOMEM)
            return i;
        if (r < 0)
            return -1;
    }
    return -1;
}

uint64_t soon(void) { return iop_now(iop_coro_loop(iop_self())) + 10 * SEC; }

void *as_ptr(intptr_t v) { return (void *)v; }

int join(iop_coro_t *c, const char *what)
{
    void *res = NULL;
    int r = iop_join(c, &res, tu_clock_ns() + 5 * SEC);
    if (r == -ETIMEDOUT || r == -EDEADLK)
        fail_msg("joining %s: %s (%s)", what, iop_strerror(r), iop_last_error());
    if (r < 0)
        return note(r, "iop_join");
    return note((int)(intptr_t)res, what);
}

void *echo_client(void *arg)
{
    echo_t *e = arg;
    int fd = tu_tcp_socket(), r;
    char out[2000], in[2000];
    tu_fill_pattern(out, sizeof out, 3);
    if ((r = note(iop_connect(fd, (struct sockaddr *)&e->addr, sizeof e->addr, soon()), "iop_connect")) < 0)
        goto out;
    for (int round = 0; round < 3 && r >= 0; round++) {
        ssize_t m = iop_send(fd, out, sizeof out, 0, soon());
        if (m < 0) {
            r = note((int)m, "iop_send (client)");
            break;
        }
        for (ssize_t got = 0; got < m;) {
            ssize_t n = iop_recv(fd, in + got, (size_t)(m - got), 0, soon());
            if (n <= 0) {
                r = note(n ? (int)n : -EPIPE, "iop_recv (client)");
                break;
            }
            got += n;
        }
        if (r >= 0)
            assert_memory_equal(in, out, (size_t)m);
        if ((r = note(iop_sleep(100000), "iop_sleep")) < 0)
            break;
    }
out:
    iop_close(fd);
    return as_ptr(r);
}

int square(const void *in, size_t len, iop_pool_out_t *out)
{
    assert_int_equal(len, sizeof(int));
    int v = *(const int *)in;
    v *= v;
    return iop_pool_out_set(out, &v, sizeof v);
}
