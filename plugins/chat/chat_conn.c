/* One connection: serve() is its controller. It starts a receiver (chat_lines.c)
 * and a sender, then waits until something ends the session: the client left
 * (/quit, end of input, an error), its backlog overflowed, a send failed, or the
 * host drains. It then stops the receiver, announces the leave, gives the sender a
 * short grace to deliver the last lines, and returns.
 *
 * Why three coroutines: the receiver must be stoppable at once (iop_cancel) when
 * the session ends for a reason it cannot see, and a cancelled coroutine cannot
 * take the lock any more; the controller, never cancelled but by the host's drain
 * deadline, does the leave. The sender is separate so that a client that does not
 * read never holds up anyone: the worker's reader only appends to its outbox. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "chat_internal.h"

static const iop_coro_opts_t recv_opts = { .size = sizeof recv_opts, .name = "chat-recv" };
static const iop_coro_opts_t send_opts = { .size = sizeof send_opts, .name = "chat-send" };

static void kick(chat_client_t *c)
{
    if (!c->kicked) {
        c->kicked = 1;
        iop_sem_release(&c->kick);
    }
}

void chat_client_end(chat_client_t *c)
{
    c->ending = 1;
    chat_worker_unhold(c->w, c);
    if (!c->end_posted) {
        c->end_posted = 1;
        iop_sem_release(&c->end);
    }
}

/* The backlog is over the limit: what is queued goes (except a chunk that may be in
 * a send right now), the reason takes its place, and the session ends. */
static void overflow(chat_client_t *c)
{
    char reason[128];
    int n = snprintf(reason, sizeof reason, "* disconnected: too slow (over %zu bytes unsent)\n",
                     c->w->st->max_backlog);
    c->overflow = 1;
    chat_outbox_drop_tail(&c->out);
    chat_outbox_put(&c->out, reason, (size_t)n);
    kick(c);
    chat_client_end(c);
}

void chat_client_queue(chat_client_t *c, const char *p, size_t n)
{
    if (c->overflow || c->send_failed)
        return;
    if (!c->out.queued) {
        /* Nothing waits, so no send is in flight either (the sender consumes only
         * after its send completed): straight into the socket. Only what the kernel
         * does not take is backlog, and a burst of lines that a healthy client
         * absorbs never looks like a slow one. */
        ssize_t w = send(c->conn->fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            c->send_failed = 1;
            chat_client_end(c);
            return;
        }
        if (w > 0) {
            c->conn->stats->bytes_out += (uint64_t)w;
            p += w;
            n -= (size_t)w;
        }
        if (!n)
            return;
    }
    if (c->out.queued + n > c->w->st->max_backlog || chat_outbox_put(&c->out, p, n) < 0) {
        overflow(c);
        return;
    }
    kick(c);
}

void chat_client_queue_str(chat_client_t *c, const char *s)
{
    chat_client_queue(c, s, strlen(s));
}

static void *sender_main(void *arg)
{
    chat_client_t *c = arg;
    for (;;) {
        const char *p;
        size_t n = chat_outbox_peek(&c->out, &p);
        if (!n) {
            if (c->closing)
                break;
            c->kicked = 0;
            if (iop_sem_acquire(&c->kick, 0) < 0)
                break;
            continue;
        }
        ssize_t w = iop_send(c->conn->fd, p, n, MSG_NOSIGNAL, 0);
        if (w < 0) {
            c->send_failed = 1;
            chat_client_end(c);
            break;
        }
        c->conn->stats->bytes_out += (uint64_t)w;
        chat_outbox_consume(&c->out, (size_t)w);
        if (c->out.queued <= c->w->pace_mark)
            chat_worker_unhold(c->w, c);
    }
    return NULL;
}

static chat_client_t *client_new(chat_worker_t *w, iop_service_conn_t *conn)
{
    chat_state_t *st = w->st;
    chat_client_t *c = iop_calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->in_cap = st->max_line + 2 > 4096 ? st->max_line + 2 : 4096;
    c->in = iop_malloc(c->in_cap);
    c->line = iop_malloc(st->log->line_cap);
    if (!c->in || !c->line) {
        iop_free(c->in);
        iop_free(c->line);
        iop_free(c);
        return NULL;
    }
    c->w = w;
    c->conn = conn;
    c->from_seq = UINT64_MAX;    /* nothing from the log until it has joined */
    iop_sem_init(&c->kick, 0);
    iop_sem_init(&c->end, 0);
    iop_sem_init(&c->recv_done, 0);
    iop_nursery_init(&c->kids, w->loop);
    return c;
}

static void list_add(chat_worker_t *w, chat_client_t *c)
{
    c->prev = NULL;
    c->next = w->clients;
    if (c->next)
        c->next->prev = c;
    w->clients = c;
}

static void list_remove(chat_worker_t *w, chat_client_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else if (w->clients == c)
        w->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void finish(chat_client_t *c)
{
    chat_worker_t *w = c->w;
    chat_client_end(c);
    list_remove(w, c);
    /* The receiver first: once it is gone, whether we joined is settled. */
    if (c->receiver)
        iop_cancel(c->receiver);
    if (c->recv_running)
        iop_sem_acquire(&c->recv_done, 0);   /* fails only if we are cancelled too */
    if (c->recv_running)
        iop_nursery_close(&c->kids, iop_now(w->loop));   /* then stop both right now */
    if (c->joined) {
        chat_worker_leave(w, c->nick);
        c->joined = 0;
    }
    c->closing = 1;
    kick(c);
    iop_nursery_close(&c->kids, iop_now(w->loop) + CHAT_CLOSE_GRACE_NS);
    if (c->out.queued) {
        /* Undelivered: reset rather than leave the kernel retrying for a client
         * that does not read. */
        struct linger lg = { .l_onoff = 1, .l_linger = 0 };
        setsockopt(c->conn->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
}

static chat_worker_t *worker_of(chat_state_t *st, int index)
{
    return index >= 0 && index < st->nworkers ? st->workers[index] : NULL;
}

int chat_serve(void *state, iop_service_conn_t *conn)
{
    chat_state_t *st = state;
    chat_worker_t *w = worker_of(st, conn->worker);
    if (!w)
        return -ENXIO;           /* worker_start was not called for this worker */
    conn->idle = 1;              /* only matters with IOP_SERVICE_DRAIN_IDLE; a session */
    if (*conn->draining) {
        static const char bye[] = "* server restarting\n";
        iop_send(conn->fd, bye, sizeof bye - 1, MSG_NOSIGNAL, iop_now(w->loop) + CHAT_CLOSE_GRACE_NS);
        return 0;
    }
    if (st->sndbuf)
        setsockopt(conn->fd, SOL_SOCKET, SO_SNDBUF, &st->sndbuf, sizeof st->sndbuf);
    chat_client_t *c = client_new(w, conn);
    if (!c)
        return -ENOMEM;
    if (!w->draining)
        w->draining = conn->draining;
    list_add(w, c);
    c->recv_running = 1;
    if (iop_nursery_go(&c->kids, chat_receiver_main, c, &recv_opts) < 0)
        c->recv_running = 0;
    else if (iop_nursery_go(&c->kids, sender_main, c, &send_opts) == 0)
        iop_sem_acquire(&c->end, 0);     /* -ECANCELED: the host's drain deadline */
    finish(c);
    chat_outbox_free(&c->out);
    iop_free(c->in);
    iop_free(c->line);
    iop_free(c);
    return 0;
}
