/* Sends behind (see coro.h): the send op runs in the backend while the coroutine
 * goes on, its callback sending the rest after a short send (a peer that waits for
 * all of it before it sends again would else wait until the coroutine waits);
 * iop_send_behind_wait collects it.
 *
 * The wait parks shielded from cancel, with its own timer for the deadline: a send
 * whose bytes were promised to the peer ends when it is done or at the deadline,
 * and only then is it cancelled. With no deadline a cancel cancels it at once, so
 * that nothing waits for ever on a peer that does not read.
 *
 * The callbacks wake the parked coroutine last, touching nothing after: it may
 * return from the wait and free the record before they return. */
#include <errno.h>
#include <string.h>
#include "sched_private.h"

static void on_sent(iop_op_t *op, int res);

/* The bytes not sent yet, as one send op. */
static int submit(iop_send_behind_t *s)
{
    iop_prep_send(&s->op, s->fd, s->buf + s->done, s->len - s->done, s->flags, on_sent, s);
    int r = iop_submit(s->loop, &s->op);
    if (r == 0)
        s->in_flight = 1;
    return r;
}

static void on_sent(iop_op_t *op, int res)
{
    iop_send_behind_t *s = op->data;
    s->in_flight = 0;
    if (res > 0)
        s->done += (size_t)res;
    else if (res < 0)
        s->res = res;
    else if (s->done < s->len)
        s->res = -EPIPE;           /* 0 bytes of a non-empty send: never again more */
    if (res > 0 && s->done < s->len && !s->stopping) {
        int r = submit(s);
        if (r == 0)
            return;                /* still in flight: nothing for the waiter yet */
        s->res = r;
    }
    iop__wake_waiter(&s->waiter);
}

static void on_cancelled(iop_op_t *op, int res)
{
    (void)res;                     /* -EALREADY / -ENOENT: the send ends anyway */
    iop_send_behind_t *s = op->data;
    s->cancel_live = 0;
    iop__wake_waiter(&s->waiter);
}

static void on_due(iop_timer_t *t)
{
    iop_send_behind_t *s = t->data;
    s->due = 1;
    iop__wake_waiter(&s->waiter);
}

int iop_send_behind(iop_send_behind_t *s, int fd, const void *buf, size_t len, int flags)
{
    int r;
    *s = (iop_send_behind_t){ 0 };   /* idle whatever happens: a failed begin started nothing */
    iop_coro_t *c = iop__io_begin("iop_send_behind", &r);
    if (!c)
        return r;
    *s = (iop_send_behind_t){ .loop = iop_coro_loop(c), .buf = buf, .len = len, .fd = fd, .flags = flags };
    if ((r = submit(s)) < 0)
        return r;
    s->busy = 1;
    return 0;
}

/* What the wait returns once nothing is in flight. */
static ssize_t collect(iop_send_behind_t *s, int stop)
{
    s->busy = 0;
    if (s->done == s->len)
        return (ssize_t)s->len;    /* all of it went, whatever else happened */
    return s->res < 0 && !(stop && s->res == -ECANCELED) ? s->res : stop;
}

static ssize_t wait_parked(iop_send_behind_t *s, iop_coro_t *c, uint64_t deadline)
{
    iop_loop_t *loop = s->loop;
    uint64_t d = iop__deadline(deadline);
    int stop = 0;                  /* -ETIMEDOUT / -ECANCELED (-errno: no timer) once the send is to end */
    int cancel_sent = 0;
    iop_op_t cancel;               /* in this frame: the wait outlasts its callback */
    iop_timer_t timer;
    memset(&timer, 0, sizeof timer);
    timer.data = s;
    int timed = 0, r;
    while (s->in_flight || s->cancel_live) {
        if (!stop) {
            if (s->due)
                stop = -ETIMEDOUT;
            else if (!d && c->cancelled)
                stop = -ECANCELED;
            else if (d && !timed) {
                uint64_t now = iop_now(loop);
                s->due = 0;
                if (d <= now)
                    stop = -ETIMEDOUT;
                else if ((r = iop__coro_timer_start(loop, c, &timer, d - now, on_due)) == 0)
                    timed = 1;     /* in c's own slot: a full heap does not lose the deadline */
                else
                    stop = r;      /* no timer: end it now rather than wait past the deadline */
            }
        }
        s->stopping = stop != 0;   /* a short send then ends it: no rest after the cancel */
        if (stop && s->in_flight && !cancel_sent) {
            iop_timer_stop(&timer);    /* the deadline has done its part; the retry may need it */
            cancel_sent = s->cancel_live =
                (uint8_t)iop__cancel_or_retry(loop, c, &cancel, &s->op, on_cancelled, s, &timer, on_due);
        }
        s->waiter = c;
        iop__park_shielded();
        s->waiter = NULL;
    }
    iop_timer_stop(&timer);
    return collect(s, stop);
}

ssize_t iop_send_behind_wait(iop_send_behind_t *s, uint64_t deadline)
{
    iop_coro_t *c = iop__current();
    if (!c)
        return iop__fail(-EPERM, "iop_send_behind_wait: outside any coroutine");
    if (!s->busy)
        return 0;
    if (!s->in_flight && !s->cancel_live)
        return collect(s, 0);      /* done already: the usual case, no frame to set up */
    return wait_parked(s, c, deadline);
}

size_t iop_send_behind_sent(const iop_send_behind_t *s)
{
    return s->done;
}
