/* floor-server: the least work a server can do per message, to measure how far any
 * server can go under the same load on this machine (a floor for server CPU per
 * message, a ceiling for messages/s).
 *
 * One thread. --proto http (default), no parser: every "\r\n\r\n" received
 * counts as one request (wrk sends GETs without bodies, one at a time), and one send
 * answers that many with copies of a fixed 200 response with the same headers as
 * ioplexd's /hello (Date refreshed once a second). --proto echo: the bytes received
 * go back with one send. Two ways, each the cheapest of its kind:
 *   epoll (default): level-triggered, one read and one write per readable socket;
 *   --uring: io_uring with deferred task work, multishot accept into fixed files,
 *            multishot recv from a provided buffer ring, one send per batch.
 * A request split across reads or a short write is not handled: the connection is
 * closed, which wrk reports as an error. It is a yardstick for benchmarks, not a
 * server. SIGTERM / SIGINT end it. */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>

#include "bench_common.h"

#define PROG "floor-server"
#define MAX_EVENTS 256
#define MAX_BATCH 64   /* requests answered by one write */

static char response[256];
static size_t response_len;
static time_t response_second;
static int echo_proto;   /* --proto echo */

/* The response with the current Date; rebuilt when the second changes. */
static void refresh_response(void)
{
    time_t now = time(NULL);
    if (now == response_second)
        return;
    response_second = now;
    struct tm tm;
    char date[64];
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    response_len = (size_t)snprintf(response, sizeof response,
                                    "HTTP/1.1 200 OK\r\nServer: ioplex\r\nContent-Type: text/plain\r\n"
                                    "Content-Length: 13\r\nDate: %s\r\nConnection: keep-alive\r\n\r\n"
                                    "Hello, World!", date);
}

static int count_requests(const char *p, size_t n)
{
    int count = 0;
    for (size_t i = 3; i < n; i++)
        if (p[i] == '\n' && p[i - 1] == '\r' && p[i - 2] == '\n' && p[i - 3] == '\r')
            count++;
    return count;
}

/* Copies of the response for count requests, in a buffer that stays as it is until
 * the same slot comes round again (a send the kernel could not finish at once
 * reads it later). */
static const char *responses(int count, size_t *len)
{
    static char out[8][MAX_BATCH * sizeof response];
    static unsigned next;
    char *p = out[next++ % 8];
    refresh_response();
    for (int i = 0; i < count; i++)
        memcpy(p + (size_t)i * response_len, response, response_len);
    *len = (size_t)count * response_len;
    return p;
}

/* One read, one write; 0 to keep the connection, -1 to close it. */
static int serve(int fd)
{
    static char in[16384];
    ssize_t n = read(fd, in, sizeof in);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    if (n == 0)
        return -1;
    if (echo_proto)
        return write(fd, in, (size_t)n) == n ? 0 : -1;
    int count = count_requests(in, (size_t)n);
    if (count == 0 || count > MAX_BATCH)
        return -1;
    size_t len;
    const char *out = responses(count, &len);
    return write(fd, out, len) == (ssize_t)len ? 0 : -1;
}

static int run_epoll(int lfd, int sfd)
{
    int one = 1;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd };
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0 ||
        epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &(struct epoll_event){ .events = EPOLLIN, .data.fd = sfd }) < 0) {
        fprintf(stderr, PROG ": epoll: %s\n", strerror(errno));
        return 1;
    }
    for (;;) {
        struct epoll_event evs[MAX_EVENTS];
        int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, PROG ": epoll_wait: %s\n", strerror(errno));
            return 1;
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == sfd)
                return 0;
            if (fd != lfd) {
                if (serve(fd) < 0)
                    close(fd);   /* also leaves the epoll set */
                continue;
            }
            int c;
            while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                ev = (struct epoll_event){ .events = EPOLLIN, .data.fd = c };
                if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) < 0)
                    close(c);
            }
        }
    }
}

/* ---- io_uring ---- */

#define URING_FILES 4096
#define URING_BUFS 1024       /* a power of two */
#define URING_BUF_SIZE 2048
enum { UD_ACCEPT = 1, UD_RECV, UD_SEND, UD_CLOSE, UD_SIGNAL };
#define UD(kind, slot) ((uint64_t)(kind) | (uint64_t)(slot) << 8)

static struct io_uring_sqe *sqe_get(struct io_uring *ring)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe) {
        io_uring_submit(ring);
        sqe = io_uring_get_sqe(ring);
    }
    return sqe;
}

static void arm_recv(struct io_uring *ring, int slot)
{
    struct io_uring_sqe *sqe = sqe_get(ring);
    io_uring_prep_recv_multishot(sqe, slot, NULL, 0, 0);
    sqe->flags |= IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT;
    sqe->buf_group = 0;
    io_uring_sqe_set_data64(sqe, UD(UD_RECV, slot));
}

static void drop(struct io_uring *ring, int slot)
{
    struct io_uring_sqe *sqe = sqe_get(ring);
    io_uring_prep_close_direct(sqe, (unsigned)slot);
    io_uring_sqe_set_data64(sqe, UD(UD_CLOSE, slot));
}

static void arm_accept(struct io_uring *ring, int lfd)
{
    struct io_uring_sqe *sqe = sqe_get(ring);
    io_uring_prep_multishot_accept_direct(sqe, lfd, NULL, NULL, 0);
    io_uring_sqe_set_data64(sqe, UD(UD_ACCEPT, 0));
}

static void arm_signal(struct io_uring *ring, int sfd)
{
    struct io_uring_sqe *sqe = sqe_get(ring);
    io_uring_prep_poll_add(sqe, sfd, POLLIN);
    io_uring_sqe_set_data64(sqe, UD(UD_SIGNAL, 0));
}

static int run_uring(int lfd, int sfd)
{
    struct io_uring ring;
    struct io_uring_params p = { .flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                                          IORING_SETUP_CQSIZE, .cq_entries = 16384 };
    int r = io_uring_queue_init_params(4096, &ring, &p);
    if (r < 0) {
        fprintf(stderr, PROG ": io_uring_queue_init: %s\n", strerror(-r));
        return 1;
    }
    static unsigned char pool[URING_BUFS][URING_BUF_SIZE];
    struct io_uring_buf_ring *br = mmap(NULL, URING_BUFS * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
                                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct io_uring_buf_reg reg = { .ring_addr = (uint64_t)(uintptr_t)br, .ring_entries = URING_BUFS };
    if (br == MAP_FAILED || (r = io_uring_register_buf_ring(&ring, &reg, 0)) < 0 ||
        (r = io_uring_register_files_sparse(&ring, URING_FILES)) < 0) {
        fprintf(stderr, PROG ": io_uring registration: %s\n", strerror(r < 0 ? -r : errno));
        return 1;
    }
    unsigned mask = io_uring_buf_ring_mask(URING_BUFS);
    io_uring_buf_ring_init(br);
    for (int i = 0; i < URING_BUFS; i++)
        io_uring_buf_ring_add(br, pool[i], URING_BUF_SIZE, (unsigned short)i, mask, i);
    io_uring_buf_ring_advance(br, URING_BUFS);
    arm_accept(&ring, lfd);
    arm_signal(&ring, sfd);
    for (;;) {
        struct io_uring_cqe *cqe;
        r = io_uring_submit_and_wait(&ring, 1);
        if (r < 0 && r != -EINTR && r != -ETIME) {
            fprintf(stderr, PROG ": io_uring_enter: %s\n", strerror(-r));
            return 1;
        }
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            seen++;
            int slot = (int)(cqe->user_data >> 8 & 0xffffff), res = cqe->res;
            switch (cqe->user_data & 0xff) {
            case UD_SIGNAL:
                return 0;
            case UD_ACCEPT:
                if (res >= 0)
                    arm_recv(&ring, res);   /* TCP_NODELAY: below, through a plain fd it has not */
                if (!(cqe->flags & IORING_CQE_F_MORE))
                    arm_accept(&ring, lfd);
                break;
            case UD_RECV: {
                int more = (cqe->flags & IORING_CQE_F_MORE) != 0;
                if (res > 0) {
                    unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
                    struct io_uring_sqe *sqe;
                    if (echo_proto) {
                        /* the buffer goes back to the ring when the send is done */
                        sqe = sqe_get(&ring);
                        io_uring_prep_send(sqe, slot, pool[bid], (size_t)res, 0);
                        sqe->flags |= IOSQE_FIXED_FILE;
                        io_uring_sqe_set_data64(sqe, UD(UD_SEND, slot) | (uint64_t)bid << 32 |
                                                         (uint64_t)res << 48);
                    } else {
                        int count = count_requests((const char *)pool[bid], (size_t)res);
                        io_uring_buf_ring_add(br, pool[bid], URING_BUF_SIZE, (unsigned short)bid, mask, 0);
                        io_uring_buf_ring_advance(br, 1);
                        if (count == 0 || count > MAX_BATCH) {
                            drop(&ring, slot);
                            break;
                        }
                        size_t len;
                        const char *out = responses(count, &len);
                        sqe = sqe_get(&ring);
                        io_uring_prep_send(sqe, slot, out, len, 0);
                        sqe->flags |= IOSQE_FIXED_FILE | IOSQE_CQE_SKIP_SUCCESS;
                        io_uring_sqe_set_data64(sqe, UD(UD_SEND, slot));
                    }
                    if (!more)
                        arm_recv(&ring, slot);
                } else if (res == -ENOBUFS && !more) {
                    arm_recv(&ring, slot);
                } else if (!more) {
                    drop(&ring, slot);
                }
                break;
            }
            case UD_SEND:   /* http: only failures post (CQE_SKIP_SUCCESS) */
                if (echo_proto) {
                    unsigned bid = (unsigned)(cqe->user_data >> 32) & 0xffff;
                    io_uring_buf_ring_add(br, pool[bid], URING_BUF_SIZE, (unsigned short)bid, mask, 0);
                    io_uring_buf_ring_advance(br, 1);
                    if (res != (int)(cqe->user_data >> 48))
                        drop(&ring, slot);
                } else {
                    drop(&ring, slot);
                }
                break;
            default:
                break;
            }
        }
        io_uring_cq_advance(&ring, seen);
    }
}

static int usage(FILE *f, int status)
{
    fprintf(f, "usage: " PROG " [--proto http|echo] [--uring] [--listen HOST:PORT]\n"
               "A yardstick for tools/bench/http-bench and echo-bench. http: answers every\n"
               "request with a fixed 200 \"Hello, World!\" response, with no parsing; echo:\n"
               "sends back what it receives. epoll with one read and one write per batch,\n"
               "or with --uring io_uring's multishot recv and one send. Prints 'listening\n"
               "on ADDR'; SIGTERM ends it.\n");
    return status;
}

int main(int argc, char **argv)
{
    const char *listen_at = "127.0.0.1:8080";
    int uring = 0;
    static const struct option longopts[] = {
        { "listen", required_argument, NULL, 'l' },
        { "uring", no_argument, NULL, 'u' },
        { "proto", required_argument, NULL, 'p' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "l:up:h", longopts, NULL)) != -1) {
        if (ch == 'l') {
            listen_at = optarg;
        } else if (ch == 'u') {
            uring = 1;
        } else if (ch == 'p') {
            if (strcmp(optarg, "http") != 0 && strcmp(optarg, "echo") != 0) {
                fprintf(stderr, PROG ": --proto wants http or echo, not '%s'\n", optarg);
                return 2;
            }
            echo_proto = strcmp(optarg, "echo") == 0;
        } else {
            return ch == 'h' ? usage(stdout, 0) : usage(stderr, 2);
        }
    }
    if (optind != argc)
        return usage(stderr, 2);
    struct sockaddr_storage ss;
    socklen_t sslen;
    char err[128];
    if (bench_parse_hostport(listen_at, 1, &ss, &sslen, err, sizeof err) < 0) {
        fprintf(stderr, PROG ": bad --listen '%s': %s\n", listen_at, err);
        return 2;
    }
    int one = 1;
    int lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        /* accepted sockets inherit it (Linux), which the io_uring way needs */
        setsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0 ||
        bind(lfd, (struct sockaddr *)&ss, sslen) < 0 || listen(lfd, 1024) < 0) {
        fprintf(stderr, PROG ": cannot listen on %s: %s\n", listen_at, strerror(errno));
        return 1;
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0) {
        fprintf(stderr, PROG ": signalfd: %s\n", strerror(errno));
        return 1;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    char where[128];
    getsockname(lfd, (struct sockaddr *)&bound, &blen);
    printf(PROG ": listening on %s\n", iop_app_format_addr((struct sockaddr *)&bound, blen, where, sizeof where));
    fflush(stdout);
    return uring ? run_uring(lfd, sfd) : run_epoll(lfd, sfd);
}
