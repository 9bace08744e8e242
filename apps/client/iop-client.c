/* iop-client: a client for ioplexd's services, in coroutines.
 *
 *   iop-client echo HOST:PORT           stdin → server → stdout
 *   iop-client chat HOST:PORT NICK      a chat room session: your lines go out,
 *                                       everybody's come in
 *   iop-client load echo|http HOST:PORT [options]
 *                                       closed-loop load: C connections, each with
 *                                       one request in flight; a result line with
 *                                       rate, p50, p99 and errors (--churn: a new
 *                                       connection per request; --idle N: N more
 *                                       connections held open and silent; --json)
 *
 * The interactive modes run two coroutines: one copies stdin to the socket, one the
 * socket to stdout, so that lines arriving from others show while you type. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ioplex.h>
#include "hostport.h"
#include "http_resp.h"
#include "latency_hist.h"
#include "stdio_guard.h"

#define PROG "iop-client"
#define SEC 1000000000ull
#define MAX_CONNS 10000
#define MAX_IDLE 100000
#define IDLE_DIALERS 32          /* coroutines opening the idle connections */
#define IO_BUF 16384
#define END_GRACE_NS SEC         /* load: how long a request in flight at the end may take */

enum { EXIT_USAGE = 2 };

static iop_loop_t *loop;
static struct addrinfo *addrs;
static const char *target;
static uint64_t timeout_ns = 10 * SEC;

/* Connects to the first address that answers by deadline, which bounds the whole
 * attempt (an address that does not answer leaves the next ones only what is left
 * of it, as curl's --connect-timeout does); an address whose family this host
 * cannot make a socket for is skipped. The fd, or -errno (printed unless quiet). */
static int dial(int quiet, uint64_t deadline)
{
    int r = -EADDRNOTAVAIL;
    for (const struct addrinfo *ai = addrs; ai && r != -ETIMEDOUT; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            r = -errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        r = iop_connect(fd, ai->ai_addr, ai->ai_addrlen, deadline);
        if (r == 0)
            return fd;
        iop_close(fd);
    }
    if (!quiet && r == -ETIMEDOUT)
        fprintf(stderr, PROG ": cannot connect to %s: no answer within --timeout (%g s)\n",
                target, (double)timeout_ns / 1e9);
    else if (!quiet)
        fprintf(stderr, PROG ": cannot connect to %s: %s\n", target, iop_strerror(r));
    return r;
}

/* ---- echo and chat: two coroutines per session --------------------------------------- */

typedef struct session {
    int fd;
    const char *hello;           /* sent first (chat: the nick), or NULL */
    const char *nick;            /* chat: wait for the room to take it */
    iop_coro_t *up, *down;
    int failed;
} session_t;

static int write_all_fd(int fd, const char *p, size_t n, int use_send)
{
    while (n) {
        ssize_t w = use_send ? iop_send(fd, p, n, 0, iop_now(loop) + timeout_ns)
                             : iop_write(fd, p, n, 0);
        if (w < 0)
            return (int)w;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* stdin → socket; at end of input, half-close so the server knows. */
static void *upstream(void *arg)
{
    session_t *s = arg;
    char buf[IO_BUF];
    if (!s->nick && s->hello && write_all_fd(s->fd, s->hello, strlen(s->hello), 1) < 0) {
        s->failed = 1;
        return NULL;
    }
    for (;;) {
        ssize_t n = iop_read(STDIN_FILENO, buf, sizeof buf, 0);
        if (n == -ECANCELED)
            return NULL;
        if (n < 0) {
            fprintf(stderr, PROG ": reading stdin: %s\n", iop_strerror((int)n));
            s->failed = 1;
            break;
        }
        if (n == 0)
            break;
        int r = write_all_fd(s->fd, buf, (size_t)n, 1);
        if (r == -ECANCELED)
            return NULL;         /* downstream ended the session and said why */
        if (r < 0) {
            fprintf(stderr, PROG ": sending: %s\n", iop_strerror(r));
            s->failed = 1;
            if (s->down)
                iop_cancel(s->down);   /* the session is over: nothing more can go out */
            return NULL;
        }
    }
    shutdown(s->fd, SHUT_WR);
    return NULL;
}

/* socket → stdout, until the server closes; then the session is over. */
static void *downstream(void *arg)
{
    session_t *s = arg;
    char buf[IO_BUF];
    for (;;) {
        ssize_t n = iop_recv(s->fd, buf, sizeof buf, 0, 0);
        if (n == 0)
            break;
        if (n < 0) {
            if (n != -ECANCELED) {
                fprintf(stderr, PROG ": receiving: %s\n", iop_strerror((int)n));
                s->failed = 1;
            }
            break;
        }
        int w = write_all_fd(STDOUT_FILENO, buf, (size_t)n, 0);
        if (w == -ECANCELED)
            break;
        if (w < 0) {
            fprintf(stderr, PROG ": writing stdout: %s\n", iop_strerror(w));
            s->failed = 1;
            break;
        }
    }
    iop_cancel(s->up);           /* a person may still be typing: stop reading stdin */
    return NULL;
}

static int starts(const char *p, size_t n, const char *prefix)
{
    size_t k = strlen(prefix);
    return n >= k && memcmp(p, prefix, k) == 0;
}

/* chat: the room answers the nick with "* NICK joined", or says why not ("* nick
 * NICK is taken", "* bad nick: ...", "* the room is full"). A refused nick ends the
 * session (status 1) instead of chatting on as nobody. Lines before the answer go
 * to stdout; so do the bytes after it. */
static int chat_join(session_t *s)
{
    char buf[IO_BUF], joined[128];
    size_t len = 0;
    int jl = snprintf(joined, sizeof joined, "* %s joined\n", s->nick);
    if (jl < 0 || (size_t)jl >= sizeof joined)
        return -ENAMETOOLONG;    /* main refuses such nicks; never compare past joined */
    int r = write_all_fd(s->fd, s->hello, strlen(s->hello), 1);
    if (r < 0) {
        fprintf(stderr, PROG ": sending: %s\n", iop_strerror(r));
        return r;
    }
    uint64_t deadline = iop_now(loop) + timeout_ns;
    for (;;) {
        char *nl;
        while ((nl = memchr(buf, '\n', len))) {
            size_t n = (size_t)(nl - buf) + 1;
            int ok = (size_t)jl == n && memcmp(buf, joined, n) == 0;
            int refused = !ok && (starts(buf, n, "* nick ") || starts(buf, n, "* bad nick") ||
                                  starts(buf, n, "* the room is full"));
            write_all_fd(refused ? STDERR_FILENO : STDOUT_FILENO, buf, n, 0);
            memmove(buf, buf + n, len - n);
            len -= n;
            if (refused)
                return -EINVAL;
            if (ok)
                return len ? write_all_fd(STDOUT_FILENO, buf, len, 0) : 0;
        }
        if (len == sizeof buf) {   /* a line longer than the buffer: not the answer */
            write_all_fd(STDOUT_FILENO, buf, len, 0);
            len = 0;
        }
        ssize_t n = iop_recv(s->fd, buf + len, sizeof buf - len, 0, deadline);
        if (n <= 0) {
            fprintf(stderr, PROG ": no answer to /nick %s: %s\n", s->nick,
                    n == 0 ? "the server closed the connection" : iop_strerror((int)n));
            return n == 0 ? -ECONNRESET : (int)n;
        }
        len += (size_t)n;
    }
}

static void *session_main(void *arg)
{
    session_t *s = arg;
    s->fd = dial(0, iop_now(loop) + timeout_ns);
    if (s->fd < 0) {
        s->failed = 1;
        return NULL;
    }
    if (s->nick && chat_join(s) < 0) {
        s->failed = 1;
        iop_close(s->fd);
        return NULL;
    }
    /* Both directions or neither: one left alone would run until the server closes. */
    if (iop_go(loop, upstream, s, NULL, &s->up) < 0) {
        fprintf(stderr, PROG ": %s\n", iop_last_error());
        s->failed = 1;
        iop_close(s->fd);
        return NULL;
    }
    if (iop_go(loop, downstream, s, NULL, &s->down) < 0) {
        fprintf(stderr, PROG ": %s\n", iop_last_error());
        s->failed = 1;
        iop_cancel(s->up);
    } else {
        iop_join(s->down, NULL, 0);
    }
    iop_join(s->up, NULL, 0);
    iop_close(s->fd);
    return NULL;
}

/* ---- load ------------------------------------------------------------------------------ */

typedef struct load {
    int http;
    int churn;                   /* a new connection for every request */
    const char *path;            /* http: the request path */
    char request[1024];          /* http: the request, sent as is */
    size_t reqlen;
    size_t size;                 /* echo: message size */
    uint64_t conns;              /* active connections */
    uint64_t warmup_ns, duration_ns;
    uint64_t start_ns, measure_ns, end_ns;   /* set once the idle ones are open */
    uint64_t done, errors, bytes;
    uint64_t done_all;           /* requests completed, warmup included */
    uint64_t connects;           /* connections opened by the active side */
    uint64_t resent;             /* http: requests sent again on a new connection */
    uint64_t sent;               /* echo: the number the next message carries */
    int sig_fd;                  /* signalfd for SIGINT / SIGTERM, -1 without */
    int interrupted;             /* one came: the run ended early */
    int *idle_fds;               /* the idle connections (-1: not opened) */
    uint64_t idle, idle_next, idle_dropped;
    uint64_t idle_setup_ns;      /* opening them, their first requests included */
    char first_error[200];       /* what the first error was, for the result */
    latency_hist_t hist;
} load_t;

static load_t *ld;

static void load_error(const char *what, int err)
{
    if (!ld->errors++)
        snprintf(ld->first_error, sizeof ld->first_error, "%s: %s", what, iop_strerror(err));
}


/* What a load needs of an HTTP answer. */
typedef struct http_head {
    int status;
    int close;                   /* the server ends the connection after this answer */
} http_head_t;

/* Per connection, not per request; too big for a coroutine stack. */
enum { LOAD_BUF = 65536 };

/* The request a load connection sends, into out: its length. */
static size_t load_request(char *out)
{
    size_t len = ld->http ? ld->reqlen : ld->size;
    if (ld->http)
        memcpy(out, ld->request, len);
    else
        memset(out, 'x', len);
    return len;
}

/* echo: each message starts with its own number, so that an echo of an older one
 * (or of anything else) does not pass for the answer. */
static void number_message(char *out, size_t len, uint64_t seq)
{
    memcpy(out, &seq, len < sizeof seq ? len : sizeof seq);
}

/* The answer to an HTTP request on fd, read with iop-fetch's response parser
 * (interim 1xx heads skipped; bodies by Content-Length, chunked, or to the close):
 * its length, or -errno with what failed in *what. in (LOAD_BUF bytes) holds the
 * head; the body only passes through it (it is counted, not kept). */
static ssize_t http_answer(int fd, char *in, uint64_t dl, const char **what, http_head_t *h, uint64_t *received)
{
    http_resp_t rs;
    http_resp_init(&rs, 0);
    size_t have = 0;             /* bytes in `in` not parsed yet */
    int head_done = 0, done = 0;
    ssize_t res = -EBADMSG;
    *what = "receive";
    while (!done) {
        if (have == LOAD_BUF) {
            *what = "response (a head over 64 KiB)";
            goto out;
        }
        ssize_t n = iop_recv(fd, in + have, LOAD_BUF - have, 0, dl);
        if (n == 0 && head_done && http_resp_eof(&rs) == 1)
            break;               /* a body that ends with the close */
        if (n <= 0) {
            if (n == 0)
                *what = *received ? "response (the connection closed before its end)"
                                  : "receive (the server closed the connection before answering)";
            res = n ? n : -ECONNRESET;
            goto out;
        }
        have += (size_t)n;
        *received += (uint64_t)n;
        size_t pos = 0, used;
        if (!head_done) {
            int r = http_resp_head(&rs, in, have, &used);
            pos = used;
            if (r < 0) {
                *what = "response";
                goto out;
            }
            head_done = r;
            done = r && rs.body == HTTP_BODY_NONE;
        }
        /* Also with nothing after the head: an empty body (Content-Length: 0) is
         * complete already, and only http_resp_body says so. */
        while (head_done && !done) {
            const char *data;
            size_t dlen;
            int r = http_resp_body(&rs, in + pos, have - pos, &used, &data, &dlen);
            if (r < 0) {
                *what = rs.body == HTTP_BODY_CHUNKED ? "response (malformed chunked body)" : "response";
                goto out;
            }
            pos += used;
            done = r;
            if (!used)
                break;           /* a partial chunk-size line: wait for the rest */
        }
        if (done && pos < have) {
            *what = "response (more than one came back)";
            goto out;            /* closed-loop: nothing else may be in flight */
        }
        memmove(in, in + pos, have - pos);
        have -= pos;
    }
    h->status = rs.status;
    h->close = !rs.keep_alive || rs.body == HTTP_BODY_CLOSE;
    res = (ssize_t)*received;
out:
    http_resp_free(&rs);
    return res;
}

/* One request on fd and its whole response, by deadline dl: the response's length,
 * or -errno with what failed in *what. */
static ssize_t round_trip(int fd, const char *out, size_t len, char *in, uint64_t dl, const char **what,
                          http_head_t *h, uint64_t *received)
{
    *received = 0;
    *what = "send";
    int err = write_all_fd(fd, out, len, 1);
    if (err < 0)
        return err;
    if (ld->http)
        return http_answer(fd, in, dl, what, h, received);
    size_t got = 0;
    *what = "receive";
    while (got < len) {
        ssize_t n = iop_recv(fd, in + got, LOAD_BUF - got, 0, dl);
        if (n <= 0) {
            if (n == 0 && got == 0)
                *what = "receive (the server closed the connection before answering)";
            return n ? n : -ECONNRESET;
        }
        got += (size_t)n;
        *received = got;
    }
    if (got != len) {
        *what = "response (more than one came back)";
        return -EBADMSG;         /* closed-loop: nothing else may be in flight */
    }
    if (memcmp(in, out, len) != 0) {
        *what = "echo (the bytes differ from those sent)";
        return -EBADMSG;
    }
    return (ssize_t)got;
}

/* One connection of the closed loop: a request, its whole answer, the next one,
 * until the end of the run. A failed request is an error, counted, and the
 * connection is made again (after a pause, so that a server refusing connections
 * is not hammered): the run keeps its C connections to the end. A request still
 * unanswered when the run ends gets END_GRACE_NS more, then counts as an error. */
#define RETRY_PAUSE_NS (100 * 1000000ull)

static void *load_conn(void *arg)
{
    (void)arg;
    char *out = iop_malloc(LOAD_BUF), *in = iop_malloc(LOAD_BUF);
    if (!out || !in) {
        load_error("connection buffers", -ENOMEM);
        iop_free(out);
        iop_free(in);
        return NULL;
    }
    int fd = -1;
    size_t len = load_request(out);
    uint64_t served = 0;         /* answers on fd so far */
    while (iop_now(loop) < ld->end_ns) {
        uint64_t t0 = iop_now(loop);
        uint64_t dl = t0 + timeout_ns;
        const char *what = "connect";
        ssize_t got;
        http_head_t h = { 0 };
        uint64_t rcvd = 0;
        if (!ld->http)
            number_message(out, len, ld->sent++);
        if (fd < 0) {            /* the first request, --churn, or after an error */
            fd = dial(1, dl);
            if (fd < 0) {
                got = fd;
                goto failed;
            }
            ld->connects++;
            served = 0;
        }
        got = round_trip(fd, out, len, in, dl, &what, &h, &rcvd);
        if (got < 0 && ld->http && served && !rcvd && got != -ETIMEDOUT && got != -ECANCELED) {
            /* The server closed a kept-alive connection as this request went out (its
             * idle timeout, a drain): no byte of an answer came, so the GET goes once
             * more on a new connection, as HTTP clients do with idempotent requests
             * (RFC 9112, 9.3.1). A new connection gets no second chance: a server
             * that drops those has a bug to show. */
            iop_close(fd);
            served = 0;
            what = "connect";
            if ((fd = dial(1, dl)) < 0) {
                got = fd;
                goto failed;
            }
            ld->connects++;
            ld->resent++;
            got = round_trip(fd, out, len, in, dl, &what, &h, &rcvd);
        }
        if (got < 0)
            goto failed;
        served++;
        if (ld->churn || h.close) {   /* the server ends it: the next request redials */
            iop_close(fd);
            fd = -1;
        }
        if (ld->http && (h.status < 200 || h.status > 399)) {
            /* An answer, but not the one asked for: an error, counted, and on. */
            if (!ld->errors++)
                snprintf(ld->first_error, sizeof ld->first_error, "response: HTTP status %d", h.status);
            continue;
        }
        iop_update_time(loop);
        uint64_t t1 = iop_now(loop);
        ld->done_all++;
        if (t0 >= ld->measure_ns) {
            ld->done++;
            ld->bytes += (uint64_t)got;
            latency_hist_add(&ld->hist, t1 - t0);
        }
        continue;
    failed:
        /* Cancelled: the run ended and this request had no answer by END_GRACE_NS
         * after it (a stalled server), which is an error too. */
        if (got == -ECANCELED)
            load_error("no answer by the end of the run", -ETIMEDOUT);
        else
            load_error(what, (int)got);
        if (fd >= 0)
            iop_close(fd);
        fd = -1;
        if (got == -ECANCELED)
            break;
        iop_update_time(loop);
        uint64_t pause = iop_now(loop) + RETRY_PAUSE_NS;
        if (iop_sleep_until(pause < ld->end_ns ? pause : ld->end_ns) == -ECANCELED)
            break;
    }
    if (fd >= 0)
        iop_close(fd);
    iop_free(out);
    iop_free(in);
    return NULL;
}

/* --idle: one of the coroutines opening the idle connections, taking the next
 * slot until all are open or one fails. Each makes one request first: its answer
 * says the server has taken the connection in (accepted it, given it a thread or
 * a coroutine), so the measurement starts with all of them being served, not with
 * a backlog still to accept. */
static void *idle_dialer(void *arg)
{
    (void)arg;
    char *out = iop_malloc(LOAD_BUF), *in = iop_malloc(LOAD_BUF);
    if (!out || !in) {
        load_error("idle connections", -ENOMEM);
        goto out;
    }
    size_t len = load_request(out);
    while (ld->idle_next < ld->idle && !ld->errors) {
        uint64_t i = ld->idle_next++;
        int fd = dial(1, iop_now(loop) + timeout_ns);
        if (fd < 0) {
            load_error("idle connect", fd);
            break;
        }
        ld->idle_fds[i] = fd;
        const char *what;
        http_head_t h = { 0 };
        uint64_t rcvd;
        ssize_t r = round_trip(fd, out, len, in, iop_now(loop) + timeout_ns, &what, &h, &rcvd);
        if (r < 0) {
            char w[64];
            snprintf(w, sizeof w, "idle connection's first request: %s", what);
            load_error(w, (int)r);
            break;
        }
    }
out:
    iop_free(out);
    iop_free(in);
    return NULL;
}

/* Opens the idle connections before the load starts (they never send a byte).
 * 0, or -1 when one could not be opened. */
static int idle_open(void)
{
    iop_nursery_t n;
    iop_nursery_init(&n, loop);
    for (uint64_t i = 0; i < IDLE_DIALERS && i < ld->idle; i++)
        if (iop_nursery_go(&n, idle_dialer, NULL, NULL) < 0) {
            load_error("starting an idle connection coroutine", -ENOMEM);
            break;
        }
    iop_nursery_close(&n, 0);
    return ld->errors ? -1 : 0;
}

/* Closes the idle connections, counting those the server closed or reset while
 * they waited: a server that drops idle connections has not served them. */
static void idle_close(void)
{
    for (uint64_t i = 0; i < ld->idle; i++) {
        int fd = ld->idle_fds[i];
        if (fd < 0)
            continue;
        char c;
        ssize_t r = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            ld->idle_dropped++;
        iop_close(fd);
    }
}

/* The first SIGINT or SIGTERM ends the run where it is: the requests in flight are
 * finished and the result is printed for the time measured so far. The signals are
 * then the default again, so a second one ends the process at once. */
static void *signal_watch(void *arg)
{
    (void)arg;
    struct signalfd_siginfo si;
    if (iop_read(ld->sig_fd, &si, sizeof si, 0) != (ssize_t)sizeof si)
        return NULL;             /* cancelled: the run ended by itself */
    ld->interrupted = 1;
    iop_update_time(loop);
    if (ld->end_ns > iop_now(loop))
        ld->end_ns = iop_now(loop);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigprocmask(SIG_UNBLOCK, &mask, NULL);
    return NULL;
}

static void *load_main(void *arg)
{
    (void)arg;
    uint64_t t0 = iop_now(loop);
    ld->end_ns = UINT64_MAX;     /* until the load starts, a signal only marks the run */
    iop_coro_t *watch = NULL;
    if (ld->sig_fd >= 0 && iop_go(loop, signal_watch, NULL, NULL, &watch) < 0)
        watch = NULL;
    if ((ld->idle && idle_open() < 0) || ld->interrupted) {
        idle_close();
        if (watch) {
            iop_cancel(watch);
            iop_join(watch, NULL, 0);
        }
        return NULL;
    }
    iop_update_time(loop);
    ld->start_ns = iop_now(loop);
    ld->idle_setup_ns = ld->start_ns - t0;
    if (ld->idle) {
        /* tools measuring the server from here on wait for this line */
        fprintf(stderr, PROG ": %" PRIu64 " idle connections open in %.3f s; load starting\n", ld->idle,
                (double)ld->idle_setup_ns / 1e9);
        fflush(stderr);
    }
    ld->measure_ns = ld->start_ns + ld->warmup_ns;
    ld->end_ns = ld->measure_ns + ld->duration_ns;
    iop_nursery_t n;
    iop_nursery_init(&n, loop);
    for (uint64_t i = 0; i < ld->conns; i++)
        if (iop_nursery_go(&n, load_conn, NULL, NULL) < 0) {
            load_error("starting a connection coroutine", -ENOMEM);
            break;
        }
    iop_nursery_close(&n, ld->end_ns + END_GRACE_NS);
    idle_close();
    if (ld->idle_dropped)
        load_error("idle connections", -ECONNRESET);
    if (watch) {
        iop_cancel(watch);
        iop_join(watch, NULL, 0);
    }
    return NULL;
}

/* Room for the connections: the soft RLIMIT_NOFILE raised towards the hard one.
 * 0, or -1 (printed) when the hard limit is too low. */
static int raise_fd_limit(uint64_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= want)
        return 0;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) {
        fprintf(stderr, PROG ": %" PRIu64 " connections need %" PRIu64 " file descriptors; the "
                "hard limit is %llu (ulimit -Hn)\n", want - 32, want, (unsigned long long)rl.rlim_max);
        return -1;
    }
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        fprintf(stderr, PROG ": cannot raise RLIMIT_NOFILE to %" PRIu64 ": %s\n", want, strerror(errno));
        return -1;
    }
    return 0;
}

/* The result as one JSON line (after the text line), for tools. */
static void print_json(const load_t *l, const char *kind, double warmup_s, double duration_s)
{
    char err[sizeof l->first_error * 2];
    size_t k = 0;
    for (const char *p = l->errors ? l->first_error : ""; *p && k + 2 < sizeof err; p++) {
        if (*p == '"' || *p == '\\')
            err[k++] = '\\';
        err[k++] = (unsigned char)*p < 0x20 ? ' ' : *p;
    }
    err[k] = '\0';
    printf("{\"mode\":\"%s\",\"target\":\"%s\",\"connections\":%" PRIu64 ",\"idle\":%" PRIu64
           ",\"churn\":%s,\"size\":%zu,\"warmup_s\":%g,\"duration_s\":%g,\"requests\":%" PRIu64
           ",\"req_per_s\":%.1f,\"requests_incl_warmup\":%" PRIu64 ",\"connects\":%" PRIu64
           ",\"bytes\":%" PRIu64 ",\"p50_us\":%.1f,\"p99_us\":%.1f,\"errors\":%" PRIu64
           ",\"first_error\":\"%s\",\"idle_dropped\":%" PRIu64 ",\"idle_setup_s\":%.3f"
           ",\"backend\":\"%s\"}\n",
           kind, target, l->conns, l->idle, l->churn ? "true" : "false", l->http ? 0 : l->size,
           warmup_s, duration_s, l->done, (double)l->done / duration_s, l->done_all, l->connects,
           l->bytes, (double)latency_hist_quantile(&l->hist, 0.50) / 1000.0,
           (double)latency_hist_quantile(&l->hist, 0.99) / 1000.0, l->errors, err, l->idle_dropped,
           (double)l->idle_setup_ns / 1e9, iop_loop_backend(loop));
}

/* ---- the command line -------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
        "usage: " PROG " echo HOST:PORT\n"
        "       " PROG " chat HOST:PORT NICK\n"
        "       " PROG " load echo|http HOST:PORT [--connections C] [--size BYTES]\n"
        "                  [--duration S] [--warmup S] [--path PATH] [--churn]\n"
        "                  [--idle N] [--json]\n"
        "\n"
        "echo: sends stdin to an echo service and prints what comes back.\n"
        "chat: joins a chat service as NICK: your lines go to everybody, theirs show\n"
        "      here (commands: /who, /quit).\n"
        "load: a closed-loop load generator: C connections (default 50), each with one\n"
        "      request in flight, for S seconds (default 5) after a warm-up (default 1);\n"
        "      echo sends BYTES-byte messages (default 64), http sends GET PATH (default\n"
        "      /hello) with keep-alive (an answer that is not 2xx or 3xx is an error;\n"
        "      bodies by Content-Length, chunked, or to the close; after \"Connection:\n"
        "      close\" the next request reconnects). Prints one line: requests/s,\n"
        "      p50 and p99 latency, errors. S may have a fraction.\n"
        "      A failed request (an echo that differs from the message, a malformed\n"
        "      answer, a timeout, a closed connection) is an error; the connection is\n"
        "      made again after 100 ms. A request still unanswered 1 s after the end\n"
        "      of the run is an error too.\n"
        "      --churn    a new connection for every request, closed after the answer\n"
        "                 (the connect counts in the latency): the accept rate\n"
        "      --idle N   first open N more connections, each making one request, then\n"
        "                 silent until the end (one dropped by the server is an error);\n"
        "                 a line on stderr says when they are open and the load starts\n"
        "      --json     also print the result as one JSON line\n"
        "\n"
        "  --backend NAME       select, poll, epoll, sigio, uring or auto\n"
        "  --plugin-path DIRS   ':'-separated dirs searched first for backend modules\n"
        "  --timeout S          limit on connecting, all of a name's addresses together,\n"
        "                       and on each request (load: a request that needs a new\n"
        "                       connection has S for both; default 10, fractions allowed)\n"
        "  --help               this text\n"
        "\n"
        "Exit status: 0 on success, 1 on a failure (load: any error; also too few file\n"
        "descriptors or too little memory to start), 2 on a usage error (a backend that\n"
        "cannot run here included), 130 for a load ended by SIGINT or SIGTERM (its\n"
        "result is printed for the time measured until then; a second signal ends it\n"
        "at once).\n");
}

/* A nick goes out in one line and comes back in "* NICK joined": no line breaks or
 * other control characters, and short (the room has its own rules on top). */
#define NICK_MAX 64

static int nick_ok(const char *nick)
{
    size_t n = strlen(nick);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)nick[i] < 0x20 || nick[i] == 0x7f)
            return 0;
    return n >= 1 && n <= NICK_MAX;
}

int main(int argc, char **argv)
{
    iop_app_guard_stdio();
    const char *backend = NULL, *plugin_path = NULL;
    uint64_t conns = 50, size = 64, idle = 0;
    double duration = 5, warmup = 1, tmo = 10;
    int churn = 0, json = 0;
    const char *path = "/hello";
    static const struct option longopts[] = {
        { "connections", required_argument, NULL, 'c' },
        { "size", required_argument, NULL, 's' },
        { "duration", required_argument, NULL, 'd' },
        { "warmup", required_argument, NULL, 'w' },
        { "path", required_argument, NULL, 'P' },
        { "backend", required_argument, NULL, 'b' },
        { "plugin-path", required_argument, NULL, 'p' },
        { "timeout", required_argument, NULL, 't' },
        { "idle", required_argument, NULL, 'i' },
        { "churn", no_argument, NULL, 'C' },
        { "json", no_argument, NULL, 'j' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":c:s:d:w:P:b:p:t:i:Cjh", longopts, NULL)) != -1) {
        uint64_t *dst = NULL, lo = 0, hi = 0;
        double *secs = NULL, smax = 0;
        switch (ch) {
        case 'c': dst = &conns; lo = 1; hi = MAX_CONNS; break;
        case 's': dst = &size; lo = 1; hi = 65536; break;
        case 'd': secs = &duration; smax = 3600; break;
        case 'w': secs = &warmup; smax = 600; break;
        case 't': secs = &tmo; smax = 3600; break;
        case 'i': dst = &idle; lo = 0; hi = MAX_IDLE; break;
        case 'C': churn = 1; break;
        case 'j': json = 1; break;
        case 'P': path = optarg; break;
        case 'b': backend = optarg; break;
        case 'p': plugin_path = optarg; break;
        case 'h': usage(stdout); return 0;
        default:   /* ':' (no value) or '?' (unknown) */
            return iop_app_getopt_fail(PROG, ch, argv);
        }
        if (dst && iop_app_parse_u64(optarg, lo, hi, dst) < 0) {
            fprintf(stderr, PROG ": %s wants a number from %" PRIu64 " to %" PRIu64 ", not '%s'\n",
                    iop_app_opt_name(longopts, ch), lo, hi, optarg);
            return EXIT_USAGE;
        }
        if (secs && (iop_app_parse_seconds(optarg, smax, secs) < 0 ||
                     ((secs == &duration || secs == &tmo) && *secs < 0.001))) {
            fprintf(stderr, PROG ": %s wants seconds (%s to %g; fractions allowed), not '%s'\n",
                    iop_app_opt_name(longopts, ch), secs == &warmup ? "0" : "0.001", smax, optarg);
            return EXIT_USAGE;
        }
    }
    /* getopt has moved the operands to the end: options may come anywhere. */
    char *ops[4];
    int nops = 0;
    while (optind < argc) {
        if (nops == 4) {
            fprintf(stderr, PROG ": too many arguments (try --help)\n");
            return EXIT_USAGE;
        }
        ops[nops++] = argv[optind++];
    }
    const char *mode = nops ? ops[0] : "";
    int want = !strcmp(mode, "echo") ? 2 : !strcmp(mode, "chat") ? 3 : !strcmp(mode, "load") ? 3 : 0;
    if (!want) {
        fprintf(stderr, PROG ": %s (try --help)\n", nops ? "unknown mode: say echo, chat or load" : "no mode given");
        return EXIT_USAGE;
    }
    if (nops != want) {
        fprintf(stderr, PROG ": %s wants %d argument%s (try --help)\n", mode, want - 1, want > 2 ? "s" : "");
        return EXIT_USAGE;
    }
    int is_load = !strcmp(mode, "load");
    if (is_load && strcmp(ops[1], "echo") && strcmp(ops[1], "http")) {
        fprintf(stderr, PROG ": load echo or load http, not '%s'\n", ops[1]);
        return EXIT_USAGE;
    }
    target = is_load ? ops[2] : ops[1];
    char err[512];
    if (iop_app_resolve(target, 0, &addrs, err, sizeof err) < 0) {
        fprintf(stderr, PROG ": %s\n", err);
        return EXIT_USAGE;
    }
    timeout_ns = (uint64_t)(tmo * 1e9);
    if (is_load && raise_fd_limit(conns + idle + 32) < 0) {
        freeaddrinfo(addrs);
        return EXIT_FAILURE;
    }
    signal(SIGPIPE, SIG_IGN);
    iop_loop_opts_t lo = { .size = sizeof lo, .backend = backend, .plugin_path = plugin_path };
    int r = iop_loop_create(&loop, &lo);
    if (r < 0) {
        fprintf(stderr, PROG ": cannot start the event loop: %s\n", iop_last_error());
        freeaddrinfo(addrs);
        return iop_app_loop_exit_status(r);
    }
    int status = EXIT_SUCCESS;
    iop_coro_t *c;
    if (!is_load) {
        static session_t s;
        char hello[256];
        if (!strcmp(mode, "chat")) {
            /* The room trims spaces around a nick and says "* NICK joined" with the
             * trimmed one: trimmed here too, or that line would not be recognised. */
            char *nick = ops[2];
            while (*nick == ' ')
                nick++;
            for (size_t n = strlen(nick); n && nick[n - 1] == ' ';)
                nick[--n] = '\0';
            ops[2] = nick;
            if (!nick_ok(ops[2])) {
                fprintf(stderr, PROG ": NICK wants 1 to %d characters and no control characters\n",
                        NICK_MAX);
                iop_loop_destroy(loop);
                freeaddrinfo(addrs);
                return EXIT_USAGE;
            }
            snprintf(hello, sizeof hello, "/nick %s\n", ops[2]);
            s.hello = hello;
            s.nick = ops[2];
        }
        if (iop_go(loop, session_main, &s, NULL, &c) < 0 || iop_join(c, NULL, 0) < 0) {
            fprintf(stderr, PROG ": %s\n", iop_last_error());
            s.failed = 1;
        }
        status = s.failed ? EXIT_FAILURE : EXIT_SUCCESS;
    } else {
        static load_t l;         /* the histogram is large */
        ld = &l;
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        l.sig_fd = sigprocmask(SIG_BLOCK, &mask, NULL) == 0 ? signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC) : -1;
        l.http = !strcmp(ops[1], "http");
        l.size = (size_t)size;
        l.conns = conns;
        l.churn = churn;
        l.idle = idle;
        l.warmup_ns = (uint64_t)(warmup * 1e9);
        l.duration_ns = (uint64_t)(duration * 1e9);
        if (idle && !(l.idle_fds = calloc(idle, sizeof *l.idle_fds))) {
            fprintf(stderr, PROG ": out of memory for %" PRIu64 " idle connections\n", idle);
            iop_loop_destroy(loop);
            freeaddrinfo(addrs);
            return EXIT_FAILURE;
        }
        for (uint64_t i = 0; i < idle; i++)
            l.idle_fds[i] = -1;
        if (l.http) {
            for (const char *p = path; p == path || *p; p++)
                if (path[0] != '/' || (unsigned char)*p <= ' ' || *p == 0x7f) {
                    fprintf(stderr, PROG ": --path wants an absolute path without spaces or "
                            "control characters (percent-encode them), not '%s'\n", path);
                    iop_loop_destroy(loop);
                    freeaddrinfo(addrs);
                    return EXIT_USAGE;
                }
            int n = snprintf(l.request, sizeof l.request,
                             "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: " PROG "\r\n\r\n", path, target);
            if (n < 0 || (size_t)n >= sizeof l.request) {
                fprintf(stderr, PROG ": --path is too long\n");
                iop_loop_destroy(loop);
                freeaddrinfo(addrs);
                return EXIT_USAGE;
            }
            l.reqlen = (size_t)n;
        }
        if (iop_go(loop, load_main, NULL, NULL, &c) < 0 || iop_join(c, NULL, 0) < 0) {
            fprintf(stderr, PROG ": %s\n", iop_last_error());
            l.errors++;
        }
        if (l.errors)
            fprintf(stderr, PROG ": first error: %s\n", l.first_error);
        if (l.resent)
            fprintf(stderr, PROG ": %" PRIu64 " request%s sent again on a new connection (the server "
                    "closed a kept-alive one before answering)\n", l.resent, l.resent == 1 ? "" : "s");
        /* interrupted: the time measured until then */
        uint64_t measured = !l.interrupted ? l.duration_ns
                            : l.end_ns > l.measure_ns && l.end_ns != UINT64_MAX ? l.end_ns - l.measure_ns : 0;
        double secs = (double)measured / 1e9;
        if (l.interrupted)
            fprintf(stderr, PROG ": interrupted after %.3f s of measuring\n", secs);
        printf("load %s %s: %" PRIu64 " connections, %g s: %.0f req/s, p50 %.1f us, "
               "p99 %.1f us, %" PRIu64 " errors, backend %s\n", ops[1], target, conns,
               secs, secs > 0 ? (double)l.done / secs : 0.0,
               (double)latency_hist_quantile(&l.hist, 0.50) / 1000.0,
               (double)latency_hist_quantile(&l.hist, 0.99) / 1000.0, l.errors, iop_loop_backend(loop));
        if (json)
            print_json(&l, ops[1], warmup, secs > 0 ? secs : duration);
        free(l.idle_fds);
        status = l.interrupted ? 128 + SIGINT : l.errors || !l.done ? EXIT_FAILURE : EXIT_SUCCESS;
        if (l.sig_fd >= 0)
            close(l.sig_fd);
        /* The result line is the point of a load: one that could not be written
         * (a full disk, a closed pipe) is a failure, not a quiet success. */
        if (fflush(stdout) != 0 || ferror(stdout)) {
            fprintf(stderr, PROG ": writing the result: %s\n", strerror(errno));
            status = EXIT_FAILURE;
        }
    }
    iop_loop_destroy(loop);
    freeaddrinfo(addrs);
    return status;
}
