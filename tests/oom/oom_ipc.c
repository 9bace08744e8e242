/* The multi-process layer under the sweep (`test_oom ipc`, on the default backend). */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>
#include "oom_sweep.h"

typedef struct ipc_ctx {
    iop_ppipe_t *ends[2];
    iop_pqueue_t *q;
    char *big;
} ipc_ctx_t;

#define BIG (300 * 1024)  /* more than a socket buffer: sent in fragments */

static void *pipe_sender(void *arg)
{
    ipc_ctx_t *x = arg;
    int fds[1] = { STDERR_FILENO };
    ssize_t r = iop_ppipe_send(x->ends[0], x->big, BIG, soon());
    if (note((int)(r < 0 ? r : 0), "iop_ppipe_send") == 0) {
        r = iop_ppipe_send_fds(x->ends[0], "fd", 2, fds, 1, soon());
        note((int)(r < 0 ? r : 0), "iop_ppipe_send_fds");
    }
    if (oc.err) {              /* the receiver must not wait for what will not come */
        iop_ppipe_close(x->ends[0]);
        x->ends[0] = NULL;
    }
    return NULL;
}

static void *pipe_receiver(void *arg)
{
    ipc_ctx_t *x = arg;
    char *buf = malloc(BIG);
    assert_non_null(buf);
    ssize_t r = iop_ppipe_recv(x->ends[1], buf, BIG, soon());
    if (r >= 0) {
        assert_int_equal(r, BIG);
        assert_memory_equal(buf, x->big, BIG);
        int fd = -1, nfds = 1;
        r = iop_ppipe_recv_fds(x->ends[1], buf, BIG, &fd, &nfds, soon());
        if (r >= 0) {
            assert_int_equal(nfds, 1);
            assert_true(fd >= 0);
            close(fd);
        }
    }
    if (r < 0 && r != -EPIPE)  /* -EPIPE: the sender gave up (its error is noted) */
        note((int)r, "iop_ppipe_recv");
    free(buf);
    return NULL;
}

static void *queue_user(void *arg)
{
    ipc_ctx_t *x = arg;
    char m[16];
    for (int i = 0; i < 3; i++) {
        if (note(iop_pqueue_put(x->q, "message", 8, soon()), "iop_pqueue_put") < 0)
            return NULL;
        ssize_t n = iop_pqueue_get(x->q, m, sizeof m, soon());
        if (note((int)(n < 0 ? n : 0), "iop_pqueue_get") < 0)
            return NULL;
        assert_int_equal(n, 8);
    }
    return NULL;
}

static void ipc_scenario(void)
{
    ipc_ctx_t x = { 0 };
    iop_shdict_t *d = NULL;
    iop_plock_t *l = NULL;
    iop_pool_t *pool = NULL;
    iop_future_t *f = NULL;
    iop_loop_t *loop = NULL;
    x.big = malloc(BIG);
    assert_non_null(x.big);
    tu_fill_pattern(x.big, BIG, 11);

    if (note(iop_plock_create(&l), "iop_plock_create") == 0) {
        assert_int_equal(iop_plock_lock(l, 0), 0);
        assert_int_equal(iop_plock_unlock(l), 0);
    }
    if (note(iop_shdict_create(&d, NULL), "iop_shdict_create") == 0) {
        int64_t v = 0;
        if (note(iop_shdict_set(d, "k", "v", 1), "iop_shdict_set") == 0)
            note(iop_shdict_incr(d, "n", 2, &v), "iop_shdict_incr");
    }
    iop_ppipe_opts_t po = { .size = sizeof po, .max_msg = BIG };
    if (note(iop_ppipe_create(x.ends, &po), "iop_ppipe_create") < 0 ||
        note(iop_pqueue_create(&x.q, 4, 64), "iop_pqueue_create") < 0 || !(loop = loop_new(0)))
        goto out;
    iop_coro_t *snd = NULL, *rcv = NULL, *qu = NULL;
    if (note(iop_go(loop, pipe_receiver, &x, NULL, &rcv), "iop_go") < 0)
        goto out;
    if (note(iop_go(loop, pipe_sender, &x, NULL, &snd), "iop_go") < 0) {
        iop_ppipe_close(x.ends[0]);   /* the receiver sees -EPIPE */
        x.ends[0] = NULL;
    }
    if (note(iop_go(loop, queue_user, &x, NULL, &qu), "iop_go") == 0)
        join(qu, "queue user");
    if (snd)
        join(snd, "pipe sender");
    join(rcv, "pipe receiver");

    /* A pool of one worker, driven from plain code. */
    iop_pool_opts_t o = { .size = sizeof o, .nworkers = 1 };
    int v = 7;
    if (note(iop_pool_create(&pool, &o), "iop_pool_create") < 0 ||
        note(iop_pool_apply_async(pool, square, &v, sizeof v, &f), "iop_pool_apply_async") < 0)
        goto out;
    int r = iop_future_wait(f, tu_clock_ns() + 5 * SEC);
    if (r == -ETIMEDOUT)
        fail_msg("the pool's future never came");
    if (note(r, "iop_future_wait") == 0) {
        size_t len;
        const int *res = iop_future_result(f, &len);
        assert_int_equal(len, sizeof *res);
        assert_int_equal(*res, 49);
    }
out:
    iop_future_free(f);
    iop_pool_free(pool);
    if (loop && oc.err)
        still_works(loop);
    /* A ppipe end remembers the loop that waited on it: closed before it goes. A
     * queue is destroyed after its loop (pqueue.h). */
    iop_ppipe_close(x.ends[0]);
    iop_ppipe_close(x.ends[1]);
    iop_loop_destroy(loop);
    iop_pqueue_destroy(x.q);
    iop_shdict_free(d);
    iop_plock_free(l);
    free(x.big);
}

void test_ipc(void **state)
{
    (void)state;
    sweep("ipc", ipc_scenario);
}
