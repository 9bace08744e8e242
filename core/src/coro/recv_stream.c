/* Receive streams: one multishot recv_buf op per connection, its results queued in
 * the stream record until the coroutine takes them (see coro.h).
 *
 * The queue is a list of pool buffers linked through the loop's per-buffer links
 * (loop->pool_link), so it needs no room of its own and cannot overflow: it holds at
 * most what the pool lends. When the pool runs dry the kernel ends the series with
 * -ENOBUFS and leaves the data in the socket; the next read takes it with a plain
 * recv into the caller's buffer and arms the series again, so a dry pool slows a
 * stream down but loses nothing and never spins.
 *
 * A stream that holds a quarter of the pool (of 16 buffers or more) stops its
 * series with a cancel of the loop's own (nobody waits for it) and arms it again
 * once its coroutine has taken everything queued: a connection whose coroutine is
 * stuck elsewhere (a send to a peer that does not read) would otherwise take every
 * buffer as its peer went on sending, and every other stream of the loop would fall
 * back to plain receives. A new series waits for that cancel to be done, which
 * could otherwise end it.
 *
 * Callbacks wake the parked coroutine last, touching nothing after: it may close
 * the stream and free the record before they return. */
#include <errno.h>
#include "loop_internal.h"
#include "sched_private.h"

#define RUNNING 1                  /* s->end while the series runs */
#define REARM 2                    /* ... once it ended after data: next arms it again */

#define CLOSE_LIVE 1u              /* s->cancel_live: close's cancel */
#define PAUSE_LIVE 2u              /* ... the pause's */

/* Pool buffers a stream may hold before it pauses; 0 = no limit (a smaller pool
 * is one or two streams' own). */
static uint32_t share(const iop_loop_t *loop)
{
    return loop->pool_count >= 16 ? loop->pool_count / 4 : 0;
}

static void on_paused(iop_op_t *op, int res)
{
    (void)res;                     /* 0, or -ENOENT / -EALREADY: the series ended first */
    iop_recv_stream_t *s = op->data;
    s->cancel_live &= (uint8_t)~PAUSE_LIVE;
    iop__wake_waiter(&s->waiter);
}

/* The loop's generation of s->fd: it changes when the loop forgets the fd (a close
 * through it), after which the number may belong to another connection. */
static uint16_t fd_gen(const iop_recv_stream_t *s)
{
    const iop_loop_t *loop = s->loop;
    return s->fd >= 0 && (uint32_t)s->fd < loop->fds.cap ? loop->fds.v[s->fd].gen : 0;
}

static void on_result(iop_op_t *op, int res)
{
    iop_recv_stream_t *s = op->data;
    iop_loop_t *loop = s->loop;
    if (res > 0) {
        uint32_t bid = op->u.pooled.bid;
        loop->pool_link[bid] = (iop__pool_link_t){ .next = 0, .len = (uint32_t)res };
        if (s->tail)
            loop->pool_link[s->tail - 1].next = bid + 1;
        else
            s->head = bid + 1;
        s->tail = bid + 1;
        s->queued++;
    }
    uint32_t cap;
    if (!iop_op_more(op)) {
        /* The pause's cancel ends the series with -ECANCELED, and so does a close of
         * the fd: only the first is a pause. */
        s->end = (int16_t)(res > 0 || (res == -ECANCELED && s->pausing && fd_gen(s) == s->gen) ? REARM : res);
    } else if (!s->pausing && (cap = share(loop)) && s->queued >= cap &&
               iop__cancel_detached(loop, op, on_paused, s) == 0) {
        s->pausing = 1;            /* (every record busy: the next result tries again) */
        s->cancel_live |= PAUSE_LIVE;
    }
    iop__wake_waiter(&s->waiter);
}

static void on_cancelled(iop_op_t *op, int res)
{
    (void)res;                     /* -EALREADY / -ENOENT: the series ends anyway */
    iop_recv_stream_t *s = op->data;
    s->cancel_live &= (uint8_t)~CLOSE_LIVE;
    iop__wake_waiter(&s->waiter);
}

static void retry_due(iop_timer_t *t)
{
    iop_recv_stream_t *s = t->data;
    iop__wake_waiter(&s->waiter);
}

static int arm(iop_recv_stream_t *s)
{
    if (s->cancel_live & PAUSE_LIVE) {
        s->end = REARM;            /* next arms it once the pause is done */
        return 0;
    }
    s->pausing = 0;
    iop_prep_recv_buf(&s->op, s->fd, s->flags, on_result, s);
    iop_op_set_multishot(&s->op);
    int r = iop_submit(s->loop, &s->op);
    if (r < 0) {
        s->end = (int16_t)r;
        return r;
    }
    s->end = RUNNING;
    s->gen = fd_gen(s);            /* the fd is in the loop's table now */
    return 0;
}

/* Nothing in flight (paused, or the pool dry): a close of the fd through the loop
 * failed nothing, and the number may name another connection by now. The stream
 * ends as it would have with its receive in flight. */
static int fd_closed(iop_recv_stream_t *s)
{
    if (fd_gen(s) == s->gen)
        return 0;
    s->end = -ECANCELED;
    return 1;
}

int iop_recv_stream_open(iop_recv_stream_t *s, int fd, int flags)
{
    int r;
    *s = (iop_recv_stream_t){ .fd = -1, .end = -EBADF };   /* closed, whatever happens */
    iop_coro_t *c = iop__io_begin("iop_recv_stream_open", &r);
    if (!c)
        return r;
    iop_loop_t *loop = iop_coro_loop(c);
    if (!loop->pool)
        return iop__fail(-EINVAL, "iop_recv_stream_open: the loop has no receive pool (iop_loop_opts_t.buf_count)");
    *s = (iop_recv_stream_t){ .loop = loop, .fd = fd, .flags = flags };
    return arm(s);
}

ssize_t iop_recv_stream_next(iop_recv_stream_t *s, void *buf, size_t len, const char **data,
                             uint64_t deadline)
{
    int r;
    iop_coro_t *c = iop__io_begin("iop_recv_stream_next", &r);
    if (!c)
        return r;
    iop_loop_t *loop = s->loop;
    int rearmed = 0;
    if (s->cur) {
        char *base = iop_buf_addr(loop, s->cur - 1);
        if (s->cur_off < s->cur_len) {     /* given back with unread */
            s->cur_last = s->cur_off;
            s->cur_off = s->cur_len;
            *data = base + s->cur_last;
            return (ssize_t)(s->cur_len - s->cur_last);
        }
        iop_buf_release(loop, s->cur - 1);
        s->cur = 0;
    }
    for (;;) {
        if (s->head) {
            uint32_t bid = s->head - 1;
            iop__pool_link_t *l = &loop->pool_link[bid];
            s->head = l->next;
            s->queued--;
            if (!s->head)
                s->tail = 0;
            s->cur = bid + 1;
            s->cur_last = 0;
            s->cur_off = s->cur_len = l->len;
            *data = iop_buf_addr(loop, bid);
            return (ssize_t)l->len;
        }
        if ((s->end == -ENOBUFS || s->end == REARM) && fd_closed(s))
            continue;
        if (s->end == -ENOBUFS && buf && len) {
            ssize_t n = iop_recv(s->fd, buf, len, s->flags, deadline);
            if (n > 0) {
                *data = buf;
                (void)arm(s);              /* a failure shows at the next call */
            } else if (n == 0) {
                s->end = 0;
            }
            return n;
        }
        if (s->end != RUNNING && s->end != REARM && (s->end != -ENOBUFS || rearmed))
            return s->end;                 /* 0 at the end; errors stay */
        if (s->end != RUNNING && !(s->cancel_live & PAUSE_LIVE)) {
            rearmed |= s->end == -ENOBUFS; /* no buffer of the caller's: the pool again, once */
            if ((r = arm(s)) < 0)
                return r;
            continue;
        }
        s->waiter = c;
        r = iop__park(deadline);
        s->waiter = NULL;
        if (r < 0 && !s->head)
            return r;                      /* -ETIMEDOUT, -ECANCELED: the series goes on */
    }
}

int iop_recv_stream_unread(iop_recv_stream_t *s, size_t n)
{
    if (!s->cur || n > s->cur_off - s->cur_last)
        return iop__fail(-EINVAL, "iop_recv_stream_unread: %zu bytes are more than the last call returned "
                         "from a pool buffer", n);
    s->cur_off -= (uint32_t)n;
    return 0;
}

int iop_recv_stream_close(iop_recv_stream_t *s)
{
    iop_coro_t *c = iop__current();
    if (!c)
        return iop__fail(-EPERM, "iop_recv_stream_close: outside any coroutine");
    iop_loop_t *loop = s->loop;
    iop_op_t cancel;               /* in this frame: close waits for its callback */
    iop_timer_t retry = { 0 };
    int sent = 0;
    while (s->end == RUNNING || s->cancel_live) {
        if (s->end == RUNNING && !sent && (sent = iop__cancel_or_retry(loop, c, &cancel, &s->op, on_cancelled, s,
                                                                        &retry, retry_due)))
            s->cancel_live |= CLOSE_LIVE;
        s->waiter = c;
        iop__park_shielded();
        s->waiter = NULL;
        iop_timer_stop(&retry);
    }
    if (s->cur)
        iop_buf_release(loop, s->cur - 1);
    while (s->head) {
        uint32_t bid = s->head - 1;
        s->head = loop->pool_link[bid].next;
        iop_buf_release(loop, bid);
    }
    s->cur = s->tail = s->queued = 0;
    s->pausing = 0;
    s->end = -EBADF;
    return 0;
}
