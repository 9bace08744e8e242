/* epoll-echo-ref: the yardstick echo server, written the way a careful C programmer
 * would write one by hand, with nothing clever in it.
 *
 * One thread, level-triggered epoll, nonblocking sockets. A readable connection gets
 * one read into a 16 KiB buffer, and the bytes go straight back with one write. If
 * the write is short, the rest is kept for that connection, which then waits for
 * EPOLLOUT instead of EPOLLIN (so a slow reader cannot make us buffer without
 * bound). End of file or an error closes the connection. SIGTERM / SIGINT arrive on
 * a signalfd and end the loop; the process CPU time is then printed on stderr. */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench_common.h"
#include "hostport.h"

#define PROG "epoll-echo-ref"
#define BUF_SIZE (16 * 1024)
#define MAX_EVENTS 256

enum { EXIT_USAGE = 2 };

/* The part of an echo the socket did not take yet. */
typedef struct pending {
    size_t len, off;
    char data[];
} pending_t;

typedef struct server {
    int ep, listen_fd, sig_fd;
    pending_t **pending;    /* indexed by fd; NULL when nothing waits */
    size_t npending;
    char buf[BUF_SIZE];
} server_t;

static void close_conn(server_t *s, int fd)
{
    if ((size_t)fd < s->npending) {
        free(s->pending[fd]);
        s->pending[fd] = NULL;
    }
    close(fd);   /* also drops it from the epoll set */
}

static int set_interest(server_t *s, int fd, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.fd = fd };
    return epoll_ctl(s->ep, EPOLL_CTL_MOD, fd, &ev);
}

/* Keeps data[0..len) for fd and switches it to waiting for EPOLLOUT. */
static int stash(server_t *s, int fd, const char *data, size_t len)
{
    if ((size_t)fd >= s->npending) {
        size_t n = (size_t)fd * 2 + 1;
        pending_t **p = realloc(s->pending, n * sizeof *p);
        if (!p)
            return -1;
        memset(p + s->npending, 0, (n - s->npending) * sizeof *p);
        s->pending = p;
        s->npending = n;
    }
    pending_t *pd = malloc(sizeof *pd + len);
    if (!pd)
        return -1;
    pd->len = len;
    pd->off = 0;
    memcpy(pd->data, data, len);
    s->pending[fd] = pd;
    return set_interest(s, fd, EPOLLOUT);
}

static void on_readable(server_t *s, int fd)
{
    ssize_t n = read(fd, s->buf, sizeof s->buf);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        close_conn(s, fd);
        return;
    }
    if (n < 0)
        return;
    ssize_t w = write(fd, s->buf, (size_t)n);
    if (w < 0) {
        if (errno != EAGAIN && errno != EINTR) {
            close_conn(s, fd);
            return;
        }
        w = 0;
    }
    if (w < n && stash(s, fd, s->buf + w, (size_t)(n - w)) < 0)
        close_conn(s, fd);
}

static void on_writable(server_t *s, int fd)
{
    pending_t *pd = (size_t)fd < s->npending ? s->pending[fd] : NULL;
    if (!pd)
        return;
    ssize_t w = write(fd, pd->data + pd->off, pd->len - pd->off);
    if (w < 0) {
        if (errno != EAGAIN && errno != EINTR)
            close_conn(s, fd);
        return;
    }
    pd->off += (size_t)w;
    if (pd->off < pd->len)
        return;
    free(pd);
    s->pending[fd] = NULL;
    if (set_interest(s, fd, EPOLLIN) < 0)
        close_conn(s, fd);
}

/* Takes every connection waiting on the listener. */
static void on_accept(server_t *s)
{
    for (;;) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                fprintf(stderr, PROG ": accept4: %s\n", strerror(errno));
            return;
        }
        /* an echo is a reply: send it now, not after the peer's delayed ACK */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
        if (epoll_ctl(s->ep, EPOLL_CTL_ADD, fd, &ev) < 0)
            close(fd);
    }
}

static int open_listener(const struct sockaddr_storage *ss, socklen_t len)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)ss, len) < 0 || listen(fd, SOMAXCONN) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static int open_signals(void)
{
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
        return -1;
    return signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
}

/* Says which signal ended the run and who sent it: a stray kill shows up here. */
static int on_signal(server_t *s)
{
    struct signalfd_siginfo si;
    if (read(s->sig_fd, &si, sizeof si) != (ssize_t)sizeof si)
        return 0;
    fprintf(stderr, PROG ": %s from pid %u\n", strsignal((int)si.ssi_signo), si.ssi_pid);
    return 1;
}

static int watch(server_t *s, int fd)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
    return epoll_ctl(s->ep, EPOLL_CTL_ADD, fd, &ev);
}

static void print_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    double sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    fprintf(stderr, PROG ": cpu %.3f s (user %.3f, sys %.3f)\n", user + sys, user, sys);
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: " PROG " --listen HOST:PORT [--cpu N]\n"
        "\n"
        "A minimal hand-written epoll echo server, the yardstick for the echo benchmark.\n"
        "Prints 'listening on HOST:PORT' (the real port when PORT is 0), echoes until\n"
        "SIGTERM or SIGINT, then prints its CPU seconds on stderr and exits 0.\n"
        "\n"
        "  --listen HOST:PORT   address to listen on (IPv4, [IPv6] or a name)\n"
        "  --cpu N              pin the process to CPU N\n"
        "  --help               this text\n");
}

int main(int argc, char **argv)
{
    const char *listen_addr = NULL;
    uint64_t cpu = 0;
    int pin = 0;
    static const struct option longopts[] = {
        { "listen", required_argument, NULL, 'l' },
        { "cpu", required_argument, NULL, 'C' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "l:C:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'l': listen_addr = optarg; break;
        case 'C':
            if (iop_app_parse_u64(optarg, 0, CPU_SETSIZE - 1, &cpu) < 0) {
                fprintf(stderr, PROG ": bad --cpu '%s'\n", optarg);
                return EXIT_USAGE;
            }
            pin = 1;
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (!listen_addr || optind != argc) {
        fprintf(stderr, PROG ": expected --listen HOST:PORT and nothing else (try --help)\n");
        return EXIT_USAGE;
    }
    struct sockaddr_storage ss;
    socklen_t sslen;
    char err[512];
    if (bench_parse_hostport(listen_addr, 1, &ss, &sslen, err, sizeof err) < 0) {
        fprintf(stderr, PROG ": --listen %s\n", err);
        return EXIT_USAGE;
    }
    int r = pin ? bench_pin_cpu((int)cpu) : 0;
    if (r < 0) {
        fprintf(stderr, PROG ": cannot pin to CPU %llu: %s\n", (unsigned long long)cpu,
                strerror(-r));
        return EXIT_FAILURE;
    }
    signal(SIGPIPE, SIG_IGN);

    static server_t s;   /* holds the 16 KiB buffer */
    s.ep = epoll_create1(EPOLL_CLOEXEC);
    s.listen_fd = open_listener(&ss, sslen);
    if (s.listen_fd < 0) {
        fprintf(stderr, PROG ": cannot listen on %s: %s\n", listen_addr, strerror(errno));
        return EXIT_FAILURE;
    }
    s.sig_fd = open_signals();
    if (s.ep < 0 || s.sig_fd < 0 || watch(&s, s.listen_fd) < 0 || watch(&s, s.sig_fd) < 0) {
        fprintf(stderr, PROG ": setup failed: %s\n", strerror(errno));
        return EXIT_FAILURE;
    }

    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    char where[128];
    getsockname(s.listen_fd, (struct sockaddr *)&bound, &blen);
    printf("listening on %s\n", iop_app_format_addr((struct sockaddr *)&bound, blen, where, sizeof where));
    fflush(stdout);

    struct epoll_event evs[MAX_EVENTS];
    int stop = 0, status = EXIT_SUCCESS;
    while (!stop) {
        int n = epoll_wait(s.ep, evs, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, PROG ": epoll_wait: %s\n", strerror(errno));
            status = EXIT_FAILURE;
            break;
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == s.listen_fd)
                on_accept(&s);
            else if (fd == s.sig_fd)
                stop = on_signal(&s);
            else if (evs[i].events & EPOLLOUT)
                on_writable(&s, fd);
            else
                on_readable(&s, fd);   /* EPOLLIN, or EPOLLERR / EPOLLHUP: read tells which */
        }
    }

    for (size_t fd = 0; fd < s.npending; fd++)
        free(s.pending[fd]);
    free(s.pending);
    close(s.listen_fd);
    close(s.sig_fd);
    close(s.ep);
    print_cpu();
    return status;
}
