/* iop_shard_serve: the usual worker in one call. One acceptor coroutine per
 * listener (a nursery of them) hands each connection to its own coroutine (a second
 * nursery); when draining starts the acceptors end, and the connections get until
 * the drain deadline before the nursery cancels those left. */
#include <errno.h>
#include "shard_internal.h"
#include "coro/coro_internal.h"

typedef struct serve {
    iop_shard_worker_t *w;
    iop_shard_conn_fn fn;
    void *arg;
    iop_nursery_t conns;
} serve_t;

typedef struct acceptor {
    serve_t *sv;
    uint32_t listener;
} acceptor_t;

typedef struct conn_start {        /* copied onto the new coroutine's stack at spawn */
    serve_t *sv;
    int fd;
} conn_start_t;

static void *serve_conn(void *arg)
{
    conn_start_t start = *(conn_start_t *)arg;
    iop_shard_worker_t *w = start.sv->w;
    if (w->cell)
        atomic_fetch_add_explicit(&w->cell->open, 1, memory_order_relaxed);
    start.sv->fn(w, start.fd, start.sv->arg);
    iop_close(start.fd);
    if (w->cell)
        atomic_fetch_sub_explicit(&w->cell->open, 1, memory_order_relaxed);
    return NULL;
}

/* After a failed accept: 0 to go on, < 0 to stop. A connection aborted before we
 * took it says nothing about the listener; anything else (EMFILE ...) waits a
 * little so that the loop does not spin on it. A deadline of the caller's scope
 * stops the acceptor. Without memory for that pause's timer it is a yield: the
 * acceptor must not end for it, or the listener would go unserved. */
static int accept_failed(int err)
{
    switch (-err) {
    case ECONNABORTED: case EINTR: case EAGAIN: case EPROTO: case EPERM:
        return 0;
    case ETIMEDOUT:
        return err;
    default:
        return iop__pause(10 * IOP__MS);
    }
}

static void *accept_loop(void *arg)
{
    acceptor_t *a = arg;
    serve_t *sv = a->sv;
    iop_coro_opts_t co = { .size = sizeof co, .name = "shard-conn", .arg_size = sizeof(conn_start_t) };
    for (;;) {
        int fd = iop_shard_accept(sv->w, a->listener, NULL, NULL, 0);
        if (fd == -ECANCELED)
            break;                 /* draining, or we were cancelled */
        if (fd < 0) {
            if (accept_failed(fd) < 0)
                break;
            continue;
        }
        conn_start_t start = { .sv = sv, .fd = fd };
        if (iop_nursery_go(&sv->conns, serve_conn, &start, &co) < 0)
            iop_close(fd);         /* no memory for it: the client sees a close */
    }
    return NULL;
}

int iop_shard_serve(iop_shard_worker_t *w, iop_shard_conn_fn fn, void *arg)
{
    if (!w || !fn)
        return iop__fail(-EINVAL, "iop_shard_serve: worker and fn are required");
    serve_t sv = { .w = w, .fn = fn, .arg = arg };
    iop_nursery_init(&sv.conns, w->loop);
    iop_nursery_t acceptors;
    iop_nursery_init(&acceptors, w->loop);
    acceptor_t a[w->nlisten ? w->nlisten : 1];
    iop_coro_opts_t ao = { .size = sizeof ao, .name = "shard-accept" };
    int r = 0;
    for (uint32_t i = 0; i < w->nlisten && r == 0; i++) {
        a[i] = (acceptor_t){ .sv = &sv, .listener = i };
        r = iop_nursery_go(&acceptors, accept_loop, &a[i], &ao);
    }
    if (r < 0) {                   /* could not start them all: a deadline long past */
        iop_nursery_close(&acceptors, 1);   /* cancels those that did start */
        iop_nursery_close(&sv.conns, 1);
        return r;
    }
    if (w->nlisten == 0) {
        iop_shard_ready(w);
        iop_shard_wait_drain(w, 0);
    }
    iop_nursery_close(&acceptors, 0);  /* they end when draining starts */
    return iop_nursery_close(&sv.conns, w->drain_deadline);
}
