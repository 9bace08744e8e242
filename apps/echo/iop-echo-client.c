/* iop-echo-client: sends data through an echo server and reads it back; one
 * coroutine per connection.
 *
 * Each connection carries one message at a time. A message is sent by the
 * connection's sender coroutine while the connection's own coroutine receives it
 * back (a large message would deadlock if we sent it all before reading); two
 * semaphores hand each message over and back. Messages come from stdin (echoed to
 * stdout) or, with --check, are random and verified byte for byte. The first
 * failure cancels every other coroutine, so the client ends at once. */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ioplex.h>
#include "hostport.h"

#define PROG "iop-echo-client"
#define STDIN_CHUNK (16 * 1024)
#define DEFAULT_MAX_SIZE 4096
#define DEFAULT_MIN_SIZE 64
#define MAX_SIZE_LIMIT (64ull * 1024 * 1024)
#define MAX_CONNECTIONS 1024

enum { EXIT_USAGE = 2 };

typedef struct client client_t;

typedef struct cconn {
    client_t *cl;
    unsigned id;
    int fd;
    iop_coro_t *coro, *sender;
    iop_sem_t to_send, sent;     /* message handed to the sender, and back */
    int quit;                    /* tells the sender there is nothing more */
    ssize_t send_res;            /* bytes sent, or -errno */
    unsigned char *out, *in;     /* the message, and what came back */
    size_t len;
    uint64_t msg_no;             /* 1-based, over all connections */
} cconn_t;

struct client {
    iop_loop_t *loop;
    const char *target;
    struct addrinfo *addrs;
    cconn_t *conns;
    unsigned nconns;
    int check;                   /* random verified messages, else stdin → stdout */
    uint64_t total, started, completed, bytes;
    size_t min_size, max_size, bufsize;
    uint64_t seed, rng;
    uint64_t timeout_ns;
    int failed;
};

/* xorshift64*: fast, and reproducible from the seed printed on failure. */
static uint64_t next_rand(client_t *cl)
{
    cl->rng ^= cl->rng >> 12;
    cl->rng ^= cl->rng << 25;
    cl->rng ^= cl->rng >> 27;
    return cl->rng * 0x2545F4914F6CDD1Dull;
}

static void fail(client_t *cl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reports the first failure and cancels every coroutine but the caller's: what
 * they fail with after that is only the cancel, not worth reading. */
static void fail(client_t *cl, const char *fmt, ...)
{
    if (cl->failed)
        return;
    cl->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, PROG ": FAIL: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (cl->check)
        fprintf(stderr, " (seed %llu)", (unsigned long long)cl->seed);
    fputc('\n', stderr);
    iop_coro_t *self = iop_self();
    for (unsigned i = 0; i < cl->nconns; i++) {
        cconn_t *c = &cl->conns[i];
        if (c->coro && c->coro != self)
            iop_cancel(c->coro);
        if (c->sender && c->sender != self)
            iop_cancel(c->sender);
    }
}

static uint64_t deadline(const client_t *cl)
{
    return iop_now(cl->loop) + cl->timeout_ns;
}

/* ---- one connection --------------------------------------------------------------- */

/* Fills c->out with the next message; 0 when there is none left. */
static int next_message(cconn_t *c)
{
    client_t *cl = c->cl;
    if (cl->check) {
        if (cl->started == cl->total)
            return 0;
        c->msg_no = ++cl->started;
        c->len = cl->min_size + (size_t)(next_rand(cl) % (cl->max_size - cl->min_size + 1));
        for (size_t i = 0; i < c->len; i += 8) {
            uint64_t v = next_rand(cl);
            memcpy(c->out + i, &v, c->len - i < 8 ? c->len - i : 8);
        }
        return 1;
    }
    ssize_t n = iop_read(STDIN_FILENO, c->out, cl->bufsize, 0);   /* no deadline: a person may type */
    if (n < 0) {
        if (n != -ECANCELED)
            fail(cl, "reading stdin: %s", iop_strerror((int)n));
        return 0;
    }
    c->len = (size_t)n;
    return n > 0;
}

/* The connection's sender: sends each message it is handed, whole. */
static void *sender_main(void *arg)
{
    cconn_t *c = arg;
    client_t *cl = c->cl;
    for (;;) {
        if (iop_sem_acquire(&c->to_send, 0) < 0 || c->quit)
            return NULL;
        size_t sent = 0;
        while (sent < c->len) {
            ssize_t n = iop_send(c->fd, c->out + sent, c->len - sent, 0, deadline(cl));
            if (n < 0) {
                if (n != -ECANCELED)
                    fail(cl, "connection %u: send after %zu of %zu bytes: %s", c->id, sent,
                         c->len, iop_strerror((int)n));
                return NULL;
            }
            sent += (size_t)n;
        }
        iop_sem_release(&c->sent);
    }
}

/* Receives the message coming back and checks it against what went out. */
static int receive_echo(cconn_t *c)
{
    client_t *cl = c->cl;
    size_t got = 0;
    while (got < c->len) {
        ssize_t n = iop_recv(c->fd, c->in + got, c->len - got, 0, deadline(cl));
        if (n == -ECANCELED)
            return -1;
        if (n < 0) {
            fail(cl, "connection %u: recv after %zu of %zu bytes came back: %s", c->id, got,
                 c->len, iop_strerror((int)n));
            return -1;
        }
        if (n == 0) {
            fail(cl, "connection %u: the server closed the connection after %zu of %zu bytes came back",
                 c->id, got, c->len);
            return -1;
        }
        if (memcmp(c->in + got, c->out + got, (size_t)n) != 0) {
            size_t i = got;
            while (c->in[i] == c->out[i])
                i++;
            fail(cl, "connection %u: message %llu (%zu bytes) differs at byte %zu: sent 0x%02x, got 0x%02x",
                 c->id, (unsigned long long)c->msg_no, c->len, i, c->out[i], c->in[i]);
            return -1;
        }
        got += (size_t)n;
    }
    return 0;
}

/* Connects to the first address that answers (a name may resolve to several), all
 * of them within one --timeout: one that does not answer leaves the next ones only
 * what is left of it. */
static int connect_any(cconn_t *c)
{
    client_t *cl = c->cl;
    int r = -EADDRNOTAVAIL;
    uint64_t by = deadline(cl);
    const struct addrinfo *ai;
    for (ai = cl->addrs; ai; ai = ai->ai_next) {
        c->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (c->fd < 0) {
            fail(cl, "socket: %s", strerror(errno));
            return -1;
        }
        int one = 1;   /* a message's short tail must not wait for a delayed ACK */
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        r = iop_connect(c->fd, ai->ai_addr, ai->ai_addrlen, by);
        if (r == 0)
            return 0;
        iop_close(c->fd);
        c->fd = -1;
        if (r == -ECANCELED)
            return -1;
        if (r == -ETIMEDOUT || !ai->ai_next)
            break;
    }
    char where[128];
    iop_app_format_addr(ai->ai_addr, ai->ai_addrlen, where, sizeof where);
    int same = strcmp(where, cl->target) == 0;   /* name the address only if it adds something */
    fail(cl, "connection %u: cannot connect to %s%s%s%s: %s", c->id, cl->target,
         same ? "" : " (", same ? "" : where, same ? "" : ")",
         r == -ETIMEDOUT ? "no answer within --timeout" : iop_strerror(r));
    return -1;
}

static void *conn_main(void *arg)
{
    cconn_t *c = arg;
    client_t *cl = c->cl;
    if (connect_any(c) < 0)
        return NULL;
    while (next_message(c)) {
        iop_sem_release(&c->to_send);
        if (receive_echo(c) < 0 || iop_sem_acquire(&c->sent, 0) < 0)
            break;
        cl->completed++;
        cl->bytes += c->len;
        if (!cl->check && (fwrite(c->in, 1, c->len, stdout) != c->len || fflush(stdout) != 0)) {
            fail(cl, "writing stdout: %s", strerror(errno));
            break;
        }
    }
    c->quit = 1;                 /* the sender ends, unless it is sending: then cancel */
    iop_sem_release(&c->to_send);
    iop_close(c->fd);
    c->fd = -1;
    return NULL;
}

/* Starts every connection, then waits for all of them and their senders. */
static void *client_main(void *arg)
{
    client_t *cl = arg;
    static const iop_coro_opts_t conn_opts = { .size = sizeof conn_opts, .name = "conn" };
    static const iop_coro_opts_t send_opts = { .size = sizeof send_opts, .name = "sender" };
    for (unsigned i = 0; i < cl->nconns && !cl->failed; i++) {
        cconn_t *c = &cl->conns[i];
        int r = iop_go(cl->loop, sender_main, c, &send_opts, &c->sender);
        if (r == 0)
            r = iop_go(cl->loop, conn_main, c, &conn_opts, &c->coro);
        if (r < 0)
            fail(cl, "cannot start connection %u: %s", i, iop_last_error());
    }
    for (unsigned i = 0; i < cl->nconns; i++) {
        cconn_t *c = &cl->conns[i];
        if (c->coro)
            iop_join(c->coro, NULL, 0);
        if (c->sender)
            iop_join(c->sender, NULL, 0);
        c->coro = c->sender = NULL;
    }
    return NULL;
}

/* ---- command line ---------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
        "usage: " PROG " [options] HOST:PORT\n"
        "       " PROG " --check N [--size BYTES] [--connections C] [options] HOST:PORT\n"
        "\n"
        "Without --check: sends stdin through the echo server and prints what comes back.\n"
        "With --check: sends N random messages, verifies every byte that comes back and\n"
        "prints 'ok: N messages, B bytes verified, backend X'.\n"
        "\n"
        "  --check N            number of random messages to send and verify\n"
        "  --size BYTES         largest message (default 4096); sizes are random from\n"
        "                       64 up to BYTES (from 1 when BYTES is below 64)\n"
        "  --connections C      spread the messages over C connections (default 1)\n"
        "  --timeout SECONDS    give up on a connect (all of HOST's addresses together),\n"
        "                       a send or a recv after this (default 10; fractions\n"
        "                       allowed)\n"
        "  --seed S             random seed (default: from the clock)\n"
        "  --backend NAME       select, poll, epoll, sigio, uring or auto\n"
        "                       (default: $IOPLEX_BACKEND, then auto)\n"
        "  --plugin-path DIRS   ':'-separated dirs searched first for backend modules\n"
        "  --help               this text\n"
        "\n"
        "Exit status: 0 when everything came back intact, 1 on a mismatch or failure\n"
        "(too few file descriptors or too little memory to start included), 2 on a\n"
        "usage error or when the event loop cannot start (backend unavailable).\n");
}

static int bad_value(const char *opt, const char *val)
{
    fprintf(stderr, PROG ": bad value '%s' for --%s (try --help)\n", val, opt);
    return EXIT_USAGE;
}

static void client_free(client_t *cl)
{
    iop_loop_destroy(cl->loop);
    for (unsigned i = 0; cl->conns && i < cl->nconns; i++) {
        iop_free(cl->conns[i].out);
        iop_free(cl->conns[i].in);
    }
    iop_free(cl->conns);
    freeaddrinfo(cl->addrs);
}

int main(int argc, char **argv)
{
    const char *backend = NULL, *plugin_path = NULL;
    uint64_t check = 0, size = DEFAULT_MAX_SIZE, conns = 1, seed = 0;
    double timeout_s = 10;
    int have_check = 0, have_seed = 0, have_size = 0, have_conns = 0;
    static const struct option longopts[] = {
        { "check", required_argument, NULL, 'c' },
        { "size", required_argument, NULL, 's' },
        { "connections", required_argument, NULL, 'n' },
        { "timeout", required_argument, NULL, 't' },
        { "seed", required_argument, NULL, 'S' },
        { "backend", required_argument, NULL, 'b' },
        { "plugin-path", required_argument, NULL, 'p' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    opterr = 0;                  /* one line of our own instead of getopt's */
    while ((ch = getopt_long(argc, argv, ":c:s:n:t:S:b:p:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            if (iop_app_parse_u64(optarg, 1, UINT64_MAX, &check) < 0)
                return bad_value("check", optarg);
            have_check = 1;
            break;
        case 's':
            if (iop_app_parse_u64(optarg, 1, MAX_SIZE_LIMIT, &size) < 0)
                return bad_value("size", optarg);
            have_size = 1;
            break;
        case 'n':
            if (iop_app_parse_u64(optarg, 1, MAX_CONNECTIONS, &conns) < 0)
                return bad_value("connections", optarg);
            have_conns = 1;
            break;
        case 't':
            if (iop_app_parse_seconds(optarg, 24 * 3600, &timeout_s) < 0 || timeout_s < 0.001)
                return bad_value("timeout", optarg);
            break;
        case 'S':
            if (iop_app_parse_u64(optarg, 0, UINT64_MAX, &seed) < 0)
                return bad_value("seed", optarg);
            have_seed = 1;
            break;
        case 'b': backend = optarg; break;
        case 'p': plugin_path = optarg; break;
        case 'h': usage(stdout); return 0;
        default:   /* ':' (no value) or '?' (unknown) */
            return iop_app_getopt_fail(PROG, ch, argv);
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, PROG ": %s (try --help)\n",
                optind == argc ? "expected HOST:PORT" : "expected one HOST:PORT, got more arguments");
        return EXIT_USAGE;
    }
    if (!have_check && (have_size || have_conns)) {
        fprintf(stderr, PROG ": --size and --connections go with --check (try --help)\n");
        return EXIT_USAGE;
    }

    client_t cl = {
        .target = argv[optind], .check = have_check, .total = check,
        .timeout_ns = (uint64_t)(timeout_s * 1e9),
    };
    char err[512];
    if (iop_app_resolve(cl.target, 0, &cl.addrs, err, sizeof err) < 0) {
        fprintf(stderr, PROG ": %s\n", err);
        return EXIT_USAGE;
    }
    if (cl.check) {
        cl.max_size = (size_t)size;
        cl.min_size = size < DEFAULT_MIN_SIZE ? 1 : DEFAULT_MIN_SIZE;
        cl.bufsize = cl.max_size;
        cl.nconns = (unsigned)conns;
        cl.seed = have_seed ? seed : (uint64_t)time(NULL) * 1000003u ^ (uint64_t)getpid();
        cl.rng = cl.seed ? cl.seed : 0x9E3779B97F4A7C15ull;   /* xorshift needs non-zero */
    } else {
        cl.bufsize = STDIN_CHUNK;
        cl.nconns = 1;
    }
    signal(SIGPIPE, SIG_IGN);

    iop_loop_opts_t opts = { .size = sizeof opts, .backend = backend, .plugin_path = plugin_path };
    int r = iop_loop_create(&cl.loop, &opts);
    if (r < 0) {
        fprintf(stderr, PROG ": cannot start the event loop: %s\n",
                iop_last_error()[0] ? iop_last_error() : iop_strerror(r));
        freeaddrinfo(cl.addrs);
        return iop_app_loop_exit_status(r);
    }
    cl.conns = iop_calloc(cl.nconns, sizeof *cl.conns);
    if (!cl.conns) {
        fprintf(stderr, PROG ": out of memory\n");
        client_free(&cl);
        return EXIT_FAILURE;
    }
    for (unsigned i = 0; i < cl.nconns; i++) {
        cconn_t *c = &cl.conns[i];
        *c = (cconn_t){ .cl = &cl, .id = i, .fd = -1 };
        iop_sem_init(&c->to_send, 0);
        iop_sem_init(&c->sent, 0);
        c->out = iop_malloc(cl.bufsize);
        c->in = iop_malloc(cl.bufsize);
        if (!c->out || !c->in) {
            fprintf(stderr, PROG ": out of memory\n");
            client_free(&cl);
            return EXIT_FAILURE;
        }
    }
    iop_coro_t *main_coro;
    static const iop_coro_opts_t main_opts = { .size = sizeof main_opts, .name = "client" };
    r = iop_go(cl.loop, client_main, &cl, &main_opts, &main_coro);
    if (r == 0)
        r = iop_join(main_coro, NULL, 0);   /* runs the loop until every connection ends */
    if (r < 0)
        fail(&cl, "the event loop failed: %s", iop_last_error());
    else if (cl.check && cl.completed != cl.total && !cl.failed)
        fail(&cl, "only %llu of %llu messages came back",
             (unsigned long long)cl.completed, (unsigned long long)cl.total);
    int status = cl.failed ? EXIT_FAILURE : EXIT_SUCCESS;
    if (!cl.failed && cl.check) {
        printf("ok: %llu messages, %llu bytes verified, backend %s\n",
               (unsigned long long)cl.completed, (unsigned long long)cl.bytes,
               iop_loop_backend(cl.loop));
        if (fflush(stdout) != 0 || ferror(stdout)) {
            fprintf(stderr, PROG ": writing the result failed: %s\n", strerror(errno));
            status = EXIT_FAILURE;
        }
    }
    client_free(&cl);
    return status;
}
