/* See http_harness.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "http_harness.h"

#define MS 1000000ull

typedef struct server_run {
    hh_server_t *s;
    iop_loop_t *loop;
    iop_service_host_t host;
    iop_timer_t tick;
    int draining;
} server_run_t;

static void tick(iop_timer_t *t) { (void)t; }   /* wakes the loop to look at the flags */

static void *drainer(void *arg)
{
    server_run_t *run = arg;
    int ms = atomic_load(&run->s->drain_ms);
    run->s->drain_result = iop_service_host_drain(&run->host, iop_now(run->loop) + (uint64_t)ms * MS);
    atomic_store(&run->s->phase, 2);
    return NULL;
}

static int listen_loopback(uint16_t port, struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 512) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        close(fd);
        return -1;
    }
    *addr = a;
    return fd;
}

static void *server_main(void *arg)
{
    hh_server_t *s = arg;
    server_run_t run = { .s = s };
    iop_service_t *svc = NULL;
    void *state = NULL;
    int lfd = -1;
    /* A small receive pool, so that many connections run it dry (see hh_start). */
    iop_loop_opts_t lo = { .size = sizeof lo, .backend = s->backend, .buf_count = s->buf_count,
                           .buf_size = s->buf_size };
    if (iop_loop_create(&run.loop, &lo) < 0) {
        snprintf(s->err, sizeof s->err, "loop on %s: %s", s->backend ? s->backend : "default", iop_last_error());
        goto fail;
    }
    if (iop_service_open(&svc, "http", NULL) < 0) {
        snprintf(s->err, sizeof s->err, "open http: %s", iop_last_error());
        goto fail;
    }
    const iop_service_desc_t *d = iop_service_desc(svc);
    iop_service_cfg_t cfg = { .size = sizeof cfg, .name = "http", .listen = "127.0.0.1",
                              .opts = s->opts, .nopts = (size_t)s->nopts, .nworkers = 1 };
    char why[256] = "";
    if (d->create(&state, &cfg, why, sizeof why) < 0) {
        snprintf(s->err, sizeof s->err, "create: %s", why);
        goto fail;
    }
    if ((lfd = listen_loopback(s->port, &s->addr)) < 0) {
        snprintf(s->err, sizeof s->err, "listen: %s", strerror(errno));
        goto fail;
    }
    run.host.desc = d;
    run.host.state = state;
    run.host.loop = run.loop;
    run.host.listen_fd = lfd;
    run.host.stats = &s->stats;
    if (iop_service_host_start(&run.host) < 0) {
        snprintf(s->err, sizeof s->err, "host: %s", iop_last_error());
        goto fail;
    }
    iop_timer_start(run.loop, &run.tick, 10 * MS, 10 * MS, tick);
    atomic_store(&s->phase, 1);
    for (;;) {
        if ((atomic_load(&s->stop) || atomic_load(&s->drain_ms) > 0) && !run.draining) {
            if (atomic_load(&s->drain_ms) <= 0)
                atomic_store(&s->drain_ms, 1000);
            run.draining = 1;
            iop_go(run.loop, drainer, &run, NULL, NULL);
        }
        if (atomic_load(&s->stop) && atomic_load(&s->phase) == 2)
            break;
        iop_loop_run(run.loop, IOP_RUN_ONCE);
        atomic_store(&s->accepted, s->stats.connections);
    }
    iop_timer_stop(&run.tick);
    close(lfd);
    d->destroy(state);
    iop_service_close(svc);
    iop_loop_get_stats(run.loop, &s->loop_stats);
    iop_loop_destroy(run.loop);
    return NULL;
fail:
    if (lfd >= 0)
        close(lfd);
    if (state)
        iop_service_desc(svc)->destroy(state);
    if (svc)
        iop_service_close(svc);
    if (run.loop)
        iop_loop_destroy(run.loop);
    atomic_store(&s->phase, -1);
    return NULL;
}

int hh_start(hh_server_t *s, const char *backend, const char *opts, uint16_t port)
{
    return hh_start_pool(s, backend, opts, port, 64, 2048);
}

int hh_start_pool(hh_server_t *s, const char *backend, const char *opts, uint16_t port,
                  uint32_t buf_count, uint32_t buf_size)
{
    memset(s, 0, sizeof *s);
    s->backend = backend;
    s->buf_count = buf_count;
    s->buf_size = buf_size;
    s->port = port;
    /* $HH_RECV (stream, plain) sets how every connection receives, unless the test
     * says: ctest runs the suite once with the service's choice for the backend
     * and once with the other. */
    const char *recv = getenv("HH_RECV");
    opts = opts ? opts : "";
    if (recv && *recv && !strstr(opts, "recv="))
        snprintf(s->opts_text, sizeof s->opts_text, "%s%srecv=%s", opts, *opts ? "," : "", recv);
    else
        snprintf(s->opts_text, sizeof s->opts_text, "%s", opts);
    s->nopts = iop_service_parse_opts(s->opts_text, s->opts, sizeof s->opts / sizeof *s->opts);
    if (s->nopts < 0) {
        snprintf(s->err, sizeof s->err, "bad options '%s'", opts);
        return -1;
    }
    if (pthread_create(&s->thread, NULL, server_main, s) != 0) {
        snprintf(s->err, sizeof s->err, "pthread_create failed");
        return -1;
    }
    for (int i = 0; i < 10000 && atomic_load(&s->phase) == 0; i++) {
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    if (atomic_load(&s->phase) != 1) {
        atomic_store(&s->stop, 1);
        pthread_join(s->thread, NULL);
        if (!s->err[0])
            snprintf(s->err, sizeof s->err, "the server did not start within 10 s");
        return -1;
    }
    return 0;
}

void hh_drain(hh_server_t *s, int ms) { atomic_store(&s->drain_ms, ms > 0 ? ms : 1); }

int hh_stop(hh_server_t *s)
{
    atomic_store(&s->stop, 1);
    pthread_join(s->thread, NULL);
    return s->drain_result;
}

/* ---- client ------------------------------------------------------------------------------ */

/* connect(2) through EINTR: the handshake goes on after it (connect again would say
 * EALREADY), so wait for its end (5 s, as SO_SNDTIMEO) and read its outcome. */
static int connect_through_eintr(int fd, const struct sockaddr *sa, socklen_t len)
{
    if (connect(fd, sa, len) == 0)
        return 0;
    if (errno != EINTR)
        return -1;
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    int r;
    while ((r = poll(&p, 1, 5000)) < 0 && errno == EINTR)
        ;
    if (r != 1) {
        errno = r == 0 ? ETIMEDOUT : errno;
        return -1;
    }
    int err = 0;
    socklen_t elen = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0 || err) {
        errno = err ? err : errno;
        return -1;
    }
    return 0;
}

int hh_connect(hh_conn_t *c, const hh_server_t *s)
{
    c->len = 0;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    struct timeval tv = { 5, 0 };
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect_through_eintr(c->fd, (const struct sockaddr *)&s->addr, sizeof s->addr) < 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    return 0;
}

void hh_close(hh_conn_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

int hh_send(hh_conn_t *c, const void *p, size_t n)
{
    const char *q = p;
    while (n) {
        ssize_t w = send(c->fd, q, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        q += w;
        n -= (size_t)w;
    }
    return 0;
}

int hh_sends(hh_conn_t *c, const char *text) { return hh_send(c, text, strlen(text)); }

/* Reads more into the buffer: bytes read, 0 at EOF, -1 on error / timeout. */
static ssize_t fill(hh_conn_t *c)
{
    if (c->len == sizeof c->buf)
        return -1;
    for (;;) {
        ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n > 0)
            c->len += (size_t)n;
        return n;
    }
}

static void consume(hh_conn_t *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

const char *hh_header(const hh_resp_t *r, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    for (const char *line = strchr(r->head, '\n'); line && line[1]; line = strchr(line + 1, '\n')) {
        const char *p = line + 1;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            p += nl + 1;
            while (*p == ' ')
                p++;
            size_t k = strcspn(p, "\r\n");
            if (k >= cap)
                k = cap - 1;
            memcpy(out, p, k);
            out[k] = '\0';
            return out;
        }
    }
    return NULL;
}

int hh_read_response(hh_conn_t *c, hh_resp_t *r, int no_body)
{
    memset(r, 0, sizeof *r);
    char *end;
    for (;;) {
        end = c->len ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL;
        if (end)
            break;
        if (fill(c) <= 0)
            return -1;
    }
    size_t hl = (size_t)(end - c->buf) + 4;
    if (hl >= sizeof r->head)
        return -1;
    memcpy(r->head, c->buf, hl);
    r->head[hl] = '\0';
    consume(c, hl);
    if (sscanf(r->head, "HTTP/1.1 %d ", &r->status) != 1)
        return -1;
    char v[64];
    size_t want = 0;
    if (!no_body && r->status != 304 && hh_header(r, "Content-Length", v, sizeof v))
        want = (size_t)strtoull(v, NULL, 10);
    r->body = malloc(want + 1);
    if (!r->body)
        return -1;
    while (r->body_len < want) {
        if (!c->len && fill(c) <= 0)
            return -1;
        size_t k = c->len < want - r->body_len ? c->len : want - r->body_len;
        memcpy(r->body + r->body_len, c->buf, k);
        r->body_len += k;
        consume(c, k);
    }
    r->body[want] = '\0';
    return 0;
}

void hh_resp_free(hh_resp_t *r)
{
    free(r->body);
    r->body = NULL;
}

int hh_wait_eof(hh_conn_t *c, int ms)
{
    if (c->len)
        return 0;
    struct pollfd p = { .fd = c->fd, .events = POLLIN };
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int r, left = ms;
    /* A signal cuts the wait short: wait again for what is left of ms. */
    while ((r = poll(&p, 1, left)) < 0 && errno == EINTR) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        left = ms - (int)((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
        if (left < 0)
            left = 0;
    }
    if (r != 1)
        return 0;
    char x;
    ssize_t n = recv(c->fd, &x, 1, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

int hh_get(const hh_server_t *s, const char *request, hh_resp_t *r, int no_body)
{
    hh_conn_t *c = malloc(sizeof *c);
    if (!c)
        return -1;
    int rc = -1;
    if (hh_connect(c, s) == 0) {
        rc = hh_sends(c, request) == 0 ? hh_read_response(c, r, no_body) : -1;
        hh_close(c);
    }
    free(c);
    return rc;
}
