/* iop-model-busypoll: the non-blocking I/O model, one of the five iop-bench
 * --models measures. An echo server in one thread that never sleeps: every socket
 * is non-blocking, and the thread goes round all of them forever, trying accept(2)
 * on the listener and read(2) on each connection, most of which answer EAGAIN. The
 * latency is as good as a round is short; the CPU is always fully used, and a round
 * costs a system call per connection, idle ones included.
 *
 * A read's bytes go straight back with one write(2); what the socket does not take
 * is kept for that connection and written in the next rounds before it is read
 * again. SIGTERM / SIGINT set a flag the loop checks every round. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "model_common.h"

#define PROG "iop-model-busypoll"

typedef struct conn {
    int fd;
    char *pending;              /* unsent part of an echo, or NULL */
    size_t pending_len, pending_off;
} conn_t;

typedef struct server {
    int listen_fd;
    conn_t *conns;
    size_t nconns, cap;
    unsigned long long accepted;
    int accept_warned;
    char buf[MODEL_BUF_SIZE];
} server_t;

static volatile sig_atomic_t stop;

static void on_stop(int sig)
{
    (void)sig;
    stop = 1;
}

static void accept_all(server_t *s)
{
    for (;;) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED &&
                !s->accept_warned++)
                perror(PROG ": accept");
            return;
        }
        if (s->nconns == s->cap) {
            size_t cap = s->cap ? s->cap * 2 : 64;
            conn_t *c = realloc(s->conns, cap * sizeof *c);
            if (!c) {
                close(fd);
                return;
            }
            s->conns = c;
            s->cap = cap;
        }
        model_nodelay(fd);
        s->conns[s->nconns++] = (conn_t){ .fd = fd };
        s->accepted++;
    }
}

/* Keeps data[0..len) to write later. 0, or -1 when out of memory. */
static int keep_pending(conn_t *c, const char *data, size_t len)
{
    c->pending = malloc(len);
    if (!c->pending)
        return -1;
    memcpy(c->pending, data, len);
    c->pending_len = len;
    c->pending_off = 0;
    return 0;
}

/* One visit to a connection: finish its pending echo, or read and echo. 0 to keep
 * it, -1 when it is over. */
static int visit(server_t *s, conn_t *c)
{
    if (c->pending) {
        ssize_t w = write(c->fd, c->pending + c->pending_off, c->pending_len - c->pending_off);
        if (w < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
        c->pending_off += (size_t)w;
        if (c->pending_off == c->pending_len) {
            free(c->pending);
            c->pending = NULL;
        }
        return 0;
    }
    ssize_t n = read(c->fd, s->buf, sizeof s->buf);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
    if (n == 0)
        return -1;
    ssize_t w = write(c->fd, s->buf, (size_t)n);
    if (w < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return -1;
        w = 0;
    }
    return w < n ? keep_pending(c, s->buf + w, (size_t)(n - w)) : 0;
}

static void close_conn(server_t *s, size_t i)
{
    close(s->conns[i].fd);
    free(s->conns[i].pending);
    s->conns[i] = s->conns[--s->nconns];
}

int main(int argc, char **argv)
{
    model_opts_t o;
    int st = model_parse_args(argc, argv, PROG,
                              "An echo server in the non-blocking model: one thread busy-polling every\n"
                              "socket with read(2) / accept(2), never sleeping.", &o);
    if (st >= 0)
        return st;
    struct sigaction sa = { .sa_handler = on_stop };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    static server_t s;          /* the buffer is large */
    s.listen_fd = model_listen(&o, PROG, 1, "one thread busy-polling non-blocking sockets");
    if (s.listen_fd < 0)
        return -s.listen_fd;
    while (!stop) {
        accept_all(&s);
        for (size_t i = 0; i < s.nconns;) {
            if (visit(&s, &s.conns[i]) < 0)
                close_conn(&s, i);      /* the last one moved into slot i: visit it next */
            else
                i++;
        }
    }
    model_report_cpu(PROG, s.accepted);
    while (s.nconns)
        close_conn(&s, s.nconns - 1);
    free(s.conns);
    close(s.listen_fd);
    return 0;
}
