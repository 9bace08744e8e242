/* 2,000 TCP connections open at once on loopback: every client connects, sends a
 * message, and gets it echoed back by a server that accepts through accept ops. */
#include <stdio.h>
#include <stdlib.h>
#include "conformance.h"

#define NCONN 2000
#define NACCEPT 8          /* accept ops kept in flight on the listener */
#define MSG_LEN 24

typedef struct many many_t;

typedef struct side {
    many_t *m;
    int fd;
    char out[MSG_LEN];    /* client: its message; server: what it echoes */
    char in[MSG_LEN];
    size_t sent, got;
    iop_op_t op;
} side_t;

struct many {
    iop_loop_t *loop;
    int lfd;
    struct sockaddr_in addr;
    side_t *clients, *servers;
    iop_op_t accepts[NACCEPT];
    int accepts_pending;
    int accepted;
    int connected;
    int verified;          /* clients whose echo came back intact */
    int echoed;            /* servers that sent the whole message back */
    int error;
    const char *error_where;
};

static void note_error(many_t *m, int res, const char *where)
{
    if (!m->error) {
        m->error = res;
        m->error_where = where;
    }
}

static void submit_or_note(many_t *m, iop_op_t *op, const char *where)
{
    int r = iop_submit(m->loop, op);
    if (r < 0)
        note_error(m, r, where);
}

/* ---- server side -------------------------------------------------------------- */

static void server_sent(iop_op_t *op, int res)
{
    side_t *s = op->data;
    if (res <= 0) {
        note_error(s->m, res ? res : -EIO, "server send");
        return;
    }
    s->sent += (size_t)res;
    if (s->sent < MSG_LEN) {
        iop_prep_send(&s->op, s->fd, s->out + s->sent, MSG_LEN - s->sent, 0, server_sent, s);
        submit_or_note(s->m, &s->op, "server send submit");
        return;
    }
    s->m->echoed++;
}

static void server_recvd(iop_op_t *op, int res)
{
    side_t *s = op->data;
    if (res <= 0) {
        note_error(s->m, res ? res : -EPIPE, "server recv");
        return;
    }
    s->got += (size_t)res;
    if (s->got < MSG_LEN) {
        iop_prep_recv(&s->op, s->fd, s->in + s->got, MSG_LEN - s->got, 0, server_recvd, s);
        submit_or_note(s->m, &s->op, "server recv submit");
        return;
    }
    memcpy(s->out, s->in, MSG_LEN);
    iop_prep_send(&s->op, s->fd, s->out, MSG_LEN, 0, server_sent, s);
    submit_or_note(s->m, &s->op, "server send submit");
}

static void accepted_cb(iop_op_t *op, int res)
{
    many_t *m = op->data;
    m->accepts_pending--;
    if (res < 0) {
        note_error(m, res, "accept");
        return;
    }
    if (m->accepted >= NCONN) {
        close(res);
        note_error(m, -EEXIST, "accept: more connections than clients");
        return;
    }
    side_t *s = &m->servers[m->accepted++];
    s->m = m;
    s->fd = res;
    iop_prep_recv(&s->op, s->fd, s->in, MSG_LEN, 0, server_recvd, s);
    submit_or_note(m, &s->op, "server recv submit");
    if (m->accepted + m->accepts_pending < NCONN) {
        m->accepts_pending++;
        iop_prep_accept(op, m->lfd, NULL, NULL, accepted_cb, m);
        submit_or_note(m, op, "accept submit");
    }
}

/* ---- client side -------------------------------------------------------------- */

static void client_recvd(iop_op_t *op, int res)
{
    side_t *c = op->data;
    if (res <= 0) {
        note_error(c->m, res ? res : -EPIPE, "client recv");
        return;
    }
    c->got += (size_t)res;
    if (c->got < MSG_LEN) {
        iop_prep_recv(&c->op, c->fd, c->in + c->got, MSG_LEN - c->got, 0, client_recvd, c);
        submit_or_note(c->m, &c->op, "client recv submit");
        return;
    }
    if (memcmp(c->in, c->out, MSG_LEN) != 0) {
        note_error(c->m, -EBADMSG, "client: echo differs from what was sent");
        return;
    }
    c->m->verified++;
}

static void client_sent(iop_op_t *op, int res)
{
    side_t *c = op->data;
    if (res <= 0) {
        note_error(c->m, res ? res : -EIO, "client send");
        return;
    }
    c->sent += (size_t)res;
    if (c->sent < MSG_LEN) {
        iop_prep_send(&c->op, c->fd, c->out + c->sent, MSG_LEN - c->sent, 0, client_sent, c);
        submit_or_note(c->m, &c->op, "client send submit");
        return;
    }
    iop_prep_recv(&c->op, c->fd, c->in, MSG_LEN, 0, client_recvd, c);
    submit_or_note(c->m, &c->op, "client recv submit");
}

static void client_connected(iop_op_t *op, int res)
{
    side_t *c = op->data;
    if (res < 0) {
        note_error(c->m, res, "connect");
        return;
    }
    c->m->connected++;
    iop_prep_send(&c->op, c->fd, c->out, MSG_LEN, 0, client_sent, c);
    submit_or_note(c->m, &c->op, "client send submit");
}

static int many_finished(void *arg)
{
    many_t *m = arg;
    return m->error || (m->verified == NCONN && m->echoed == NCONN);
}

void test_many_tcp_connections(void **state)
{
    (void)state;
    char why[160];
    if (tu_raise_nofile(2 * NCONN + 64, why, sizeof why) < 0) {
        printf("SKIP: %d concurrent connections need more fds: %s\n", NCONN, why);
        skip();
    }
    iop_loop_t *loop = tu_loop_new();
    many_t m = { .loop = loop };
    m.clients = calloc(NCONN, sizeof *m.clients);
    m.servers = calloc(NCONN, sizeof *m.servers);
    assert_non_null(m.clients);
    assert_non_null(m.servers);
    m.lfd = tu_tcp_listener(&m.addr, NCONN);

    for (int i = 0; i < NACCEPT; i++) {
        m.accepts_pending++;
        iop_prep_accept(&m.accepts[i], m.lfd, NULL, NULL, accepted_cb, &m);
        assert_int_equal(iop_submit(loop, &m.accepts[i]), 0);
    }
    uint64_t t0 = tu_clock_ms();
    for (int i = 0; i < NCONN; i++) {
        side_t *c = &m.clients[i];
        c->m = &m;
        c->fd = tu_tcp_socket();
        snprintf(c->out, MSG_LEN, "client %06d says hi", i);
        iop_prep_connect(&c->op, c->fd, (struct sockaddr *)&m.addr, sizeof m.addr, client_connected, c);
        assert_int_equal(iop_submit(loop, &c->op), 0);
    }
    int finished = tu_run_until(loop, many_finished, &m, 20000);
    if (m.error)
        fail_msg("%s failed: %s (connected %d, accepted %d, echoed %d, verified %d)",
                 m.error_where, iop_strerror(m.error), m.connected, m.accepted, m.echoed, m.verified);
    if (!finished)
        fail_msg("timed out: connected %d, accepted %d, echoed %d, verified %d of %d",
                 m.connected, m.accepted, m.echoed, m.verified, NCONN);
    printf("%d connections echoed in %llu ms\n", NCONN, (unsigned long long)(tu_clock_ms() - t0));
    assert_int_equal(m.connected, NCONN);
    assert_int_equal(m.accepted, NCONN);
    assert_int_equal(m.accepts_pending, 0);

    for (int i = 0; i < NCONN; i++) {
        conf_close(loop, m.clients[i].fd);
        conf_close(loop, m.servers[i].fd);
    }
    conf_close(loop, m.lfd);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);   /* nothing left in flight */
    free(m.clients);
    free(m.servers);
    iop_loop_destroy(loop);
}
