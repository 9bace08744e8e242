/* The pool on a loop: a dispatcher coroutine runs the pump whenever the pool's epoll
 * set turns readable (a watch kicks it), a task is queued, or a slice passes.
 * Workers are forked from a posted loop callback, so that they start on the main
 * stack rather than on the dispatcher's small one. */
#include <errno.h>
#include "pool_internal.h"

#define DISPATCHER_STACK (128 * 1024)

void iop__pool_kick(iop_pool_t *p)
{
    if (p->loop && p->kick.count == 0)   /* one pending kick is enough */
        iop_sem_release(&p->kick);
}

static void epoll_ready(iop_watch_t *w, unsigned revents)
{
    (void)revents;
    iop_watch_modify(w, 0);        /* until the dispatcher has looked */
    iop__pool_kick(w->data);
}

static void spawn_posted(iop_post_t *post)
{
    iop_pool_t *p = post->data;
    p->spawn_posted = 0;
    iop__pool_spawn_missing(p);
    iop__pool_kick(p);
}

void iop__pool_request_spawn(iop_pool_t *p)
{
    if (p->spawn_posted || !iop__pool_wants_spawn(p))
        return;
    p->spawn_posted = 1;
    p->spawn_post.data = p;
    (void)iop_loop_post(p->loop, &p->spawn_post, spawn_posted);   /* queued even if the wake failed */
}

static void *dispatcher_main(void *arg)
{
    iop_pool_t *p = arg;
    for (;;) {
        if (!p->quit)
            iop__pool_pump(p);
        /* A posted spawn still points at the pool: wait for it before ending. */
        if ((p->quit || iop__pool_finished(p)) && !p->spawn_posted)
            break;
        iop_watch_modify(&p->watch, IOP_READ);
        int r = iop_sem_acquire(&p->kick, iop_now(p->loop) + IOP__POOL_SLICE_NS);
        if (r == -ECANCELED)
            break;
        /* A wait that could not start (no memory for its timer) returns at once:
         * without a yield the dispatcher would go round for good and starve every
         * other coroutine of the loop. */
        if (r < 0 && r != -ETIMEDOUT)
            (void)iop_yield();
    }
    iop_watch_stop(&p->watch);
    iop_wg_done(&p->stopped);
    return NULL;
}

int iop__pool_bind(iop_pool_t *p, iop_loop_t *loop)
{
    iop_sem_init(&p->kick, 0);
    iop_wg_init(&p->stopped);
    iop_wg_add(&p->stopped, 1);
    p->watch.data = p;
    int r = iop_watch_start(loop, &p->watch, p->epfd, IOP_READ, epoll_ready);
    if (r < 0)
        return r;
    iop_coro_opts_t co = { .size = sizeof co, .name = "iop-pool", .stack_size = DISPATCHER_STACK };
    p->loop = loop;
    r = iop_go(loop, dispatcher_main, p, &co, &p->dispatcher);
    if (r < 0) {
        iop_watch_stop(&p->watch);
        p->loop = NULL;
    }
    return r;
}
