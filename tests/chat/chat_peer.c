#include "chat_peer.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "test_util.h"

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

peer_t *peer_connect(const struct sockaddr_in *addr, int rcvbuf)
{
    peer_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (p->fd >= 0 && rcvbuf > 0)
        setsockopt(p->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    if (p->fd < 0 || tu_connect(p->fd, (const struct sockaddr *)addr, sizeof *addr) < 0) {
        fprintf(stderr, "peer: connect to port %d: %s\n", ntohs(addr->sin_port), strerror(errno));
        if (p->fd >= 0)
            close(p->fd);
        free(p);
        return NULL;
    }
    snprintf(p->name, sizeof p->name, "fd %d", p->fd);
    return p;
}

peer_t *peer_from_fd(int fd, const char *name)
{
    peer_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->fd = fd;
    snprintf(p->name, sizeof p->name, "%s", name);
    return p;
}

void peer_close(peer_t *p)
{
    if (!p)
        return;
    close(p->fd);
    free(p);
}

void peer_reset(peer_t *p)
{
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    setsockopt(p->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    peer_close(p);
}

int peer_send_bytes(peer_t *p, const void *data, size_t len)
{
    const char *s = data;
    long long end = mono_ms() + 5000;
    while (len) {
        struct pollfd pfd = { .fd = p->fd, .events = POLLOUT };
        long long left = end - mono_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR)
            return -errno;
        ssize_t n = send(p->fd, s, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            return -errno;
        }
        s += n;
        len -= (size_t)n;
    }
    return 0;
}

int peer_send(peer_t *p, const char *s)
{
    return peer_send_bytes(p, s, strlen(s));
}

/* Receives more into the buffer, waiting until end: 1, 0 (EOF or error, see
 * p->eof), -ETIMEDOUT. */
static int fill(peer_t *p, long long end)
{
    if (p->eof)
        return 0;
    if (p->len == sizeof p->buf)
        return -E2BIG;
    for (;;) {
        long long left = end - mono_ms();
        struct pollfd pfd = { .fd = p->fd, .events = POLLIN };
        int r = poll(&pfd, 1, left > 0 ? (int)left : 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0)
            return -ETIMEDOUT;
        ssize_t n = read(p->fd, p->buf + p->len, sizeof p->buf - p->len);   /* sockets and pipes */
        if (n > 0) {
            p->len += (size_t)n;
            return 1;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        p->eof = n == 0 ? 1 : -errno;
        return 0;
    }
}

int peer_line(peer_t *p, char *out, size_t cap, int timeout_ms)
{
    long long end = mono_ms() + timeout_ms;
    for (;;) {
        char *nl = memchr(p->buf, '\n', p->len);
        if (nl) {
            size_t len = (size_t)(nl - p->buf);
            if (len >= cap)
                return -E2BIG;
            memcpy(out, p->buf, len);
            out[len] = '\0';
            p->len -= len + 1;
            memmove(p->buf, nl + 1, p->len);
            return (int)len;
        }
        int r = fill(p, end);
        if (r == 0)
            return p->eof < 0 ? p->eof : -EPIPE;
        if (r < 0)
            return r;
    }
}

static int expect(peer_t *p, const char *want, int timeout_ms, int prefix)
{
    static char line[PEER_BUF];
    int n = peer_line(p, line, sizeof line, timeout_ms);
    if (n >= 0 && (prefix ? strncmp(line, want, strlen(want)) == 0 : strcmp(line, want) == 0))
        return 0;
    if (n >= 0)
        fprintf(stderr, "peer %s: wanted %s'%s', got '%.200s'\n", p->name, prefix ? "a line starting with " : "",
                want, line);
    else
        fprintf(stderr, "peer %s: wanted '%s', got %s\n", p->name, want, strerror(-n));
    return -1;
}

int peer_expect(peer_t *p, const char *want, int timeout_ms) { return expect(p, want, timeout_ms, 0); }
int peer_expect_prefix(peer_t *p, const char *prefix, int timeout_ms) { return expect(p, prefix, timeout_ms, 1); }

int peer_wait_for(peer_t *p, const char *want, int timeout_ms)
{
    static char line[PEER_BUF];
    long long end = mono_ms() + timeout_ms;
    for (int skipped = 0;; skipped++) {
        long long left = end - mono_ms();
        int n = peer_line(p, line, sizeof line, left > 0 ? (int)left : 0);
        if (n < 0) {
            fprintf(stderr, "peer %s: waiting for '%s': %s\n", p->name, want, strerror(-n));
            return -1;
        }
        if (strcmp(line, want) == 0)
            return skipped;
    }
}

int peer_wait_eof(peer_t *p, int timeout_ms)
{
    long long end = mono_ms() + timeout_ms;
    for (;;) {
        p->len = 0;
        int r = fill(p, end);
        if (r == 0)
            return 0;
        if (r < 0)
            return r;
    }
}

int peer_quiet(peer_t *p, int ms)
{
    if (p->len)
        return 0;
    return fill(p, mono_ms() + ms) == -ETIMEDOUT;
}
