/* iop-echo-client: sends data through an echo server and reads it back, with the
 * loop's proactor ops (connect, send, recv).
 *
 * Each connection carries one message at a time: the send op and the recv op run
 * side by side (a large message would deadlock if we sent it all before reading),
 * and the message is done when both finished. Messages come from stdin (echoed to
 * stdout) or, with --check, are random and verified byte for byte. */
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
    const struct addrinfo *ai;   /* the address being tried */
    iop_op_t connect_op, send_op, recv_op;
    unsigned char *out, *in;     /* the message, and what came back */
    size_t len, sent, got;
    uint64_t msg_no;             /* 1-based, over all connections */
    int send_done;
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

static void fail(client_t *cl, const char *fmt, ...)
{
    if (cl->failed)
        return;              /* the first failure is the one worth reading */
    cl->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, PROG ": FAIL: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (cl->check)
        fprintf(stderr, " (seed %llu)", (unsigned long long)cl->seed);
    fputc('\n', stderr);
    iop_loop_stop(cl->loop);
}

static void deadline(cconn_t *c, iop_op_t *op)
{
    iop_op_set_deadline(op, iop_now(c->cl->loop) + c->cl->timeout_ns);
}

/* ---- the message cycle --------------------------------------------------------- */

static void on_send(iop_op_t *op, int res);
static void on_recv(iop_op_t *op, int res);

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
    ssize_t n;
    do
        n = read(STDIN_FILENO, c->out, cl->bufsize);
    while (n < 0 && errno == EINTR);
    iop_update_time(cl->loop);   /* we may have waited on a person typing */
    if (n < 0) {
        fail(cl, "reading stdin: %s", strerror(errno));
        return 0;
    }
    c->len = (size_t)n;
    return n > 0;
}

static void submit_send(cconn_t *c)
{
    iop_prep_send(&c->send_op, c->fd, c->out + c->sent, c->len - c->sent, 0, on_send, c);
    deadline(c, &c->send_op);
    int r = iop_submit(c->cl->loop, &c->send_op);
    if (r < 0)
        fail(c->cl, "connection %u: cannot submit send: %s", c->id, iop_strerror(r));
}

static void submit_recv(cconn_t *c)
{
    iop_prep_recv(&c->recv_op, c->fd, c->in + c->got, c->len - c->got, 0, on_recv, c);
    deadline(c, &c->recv_op);
    int r = iop_submit(c->cl->loop, &c->recv_op);
    if (r < 0)
        fail(c->cl, "connection %u: cannot submit recv: %s", c->id, iop_strerror(r));
}

static void start_message(cconn_t *c)
{
    if (!next_message(c)) {
        iop_fd_close(c->cl->loop, c->fd);   /* nothing in flight: done with it */
        c->fd = -1;
        return;
    }
    c->sent = c->got = 0;
    c->send_done = 0;
    submit_send(c);
    submit_recv(c);
}

static void message_done(cconn_t *c)
{
    client_t *cl = c->cl;
    cl->completed++;
    cl->bytes += c->len;
    if (!cl->check && (fwrite(c->in, 1, c->len, stdout) != c->len || fflush(stdout) != 0)) {
        fail(cl, "writing stdout: %s", strerror(errno));
        return;
    }
    start_message(c);
}

static void on_send(iop_op_t *op, int res)
{
    cconn_t *c = op->data;
    if (c->cl->failed)
        return;
    if (res < 0) {
        fail(c->cl, "connection %u: send after %zu of %zu bytes: %s", c->id, c->sent, c->len,
             iop_strerror(res));
        return;
    }
    c->sent += (size_t)res;
    if (c->sent < c->len) {
        submit_send(c);
        return;
    }
    c->send_done = 1;
    if (c->got == c->len)
        message_done(c);
}

static void on_recv(iop_op_t *op, int res)
{
    cconn_t *c = op->data;
    client_t *cl = c->cl;
    if (cl->failed)
        return;
    if (res < 0) {
        fail(cl, "connection %u: recv after %zu of %zu bytes came back: %s", c->id, c->got,
             c->len, iop_strerror(res));
        return;
    }
    if (res == 0) {
        fail(cl, "connection %u: the server closed the connection after %zu of %zu bytes came back",
             c->id, c->got, c->len);
        return;
    }
    size_t n = (size_t)res;
    if (memcmp(c->in + c->got, c->out + c->got, n) != 0) {
        size_t i = c->got;
        while (c->in[i] == c->out[i])
            i++;
        fail(cl, "connection %u: message %llu (%zu bytes) differs at byte %zu: sent 0x%02x, got 0x%02x",
             c->id, (unsigned long long)c->msg_no, c->len, i, c->out[i], c->in[i]);
        return;
    }
    c->got += n;
    if (c->got < c->len)
        submit_recv(c);
    else if (c->send_done)
        message_done(c);
}

/* ---- connecting ------------------------------------------------------------------ */

static void on_connect(iop_op_t *op, int res);

static void try_connect(cconn_t *c)
{
    client_t *cl = c->cl;
    const struct addrinfo *ai = c->ai;
    c->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (c->fd < 0) {
        fail(cl, "socket: %s", strerror(errno));
        return;
    }
    int one = 1;   /* a message's short tail must not wait for a delayed ACK */
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    iop_prep_connect(&c->connect_op, c->fd, ai->ai_addr, ai->ai_addrlen, on_connect, c);
    deadline(c, &c->connect_op);
    int r = iop_submit(cl->loop, &c->connect_op);
    if (r < 0)
        fail(cl, "connection %u: cannot submit connect: %s", c->id, iop_strerror(r));
}

static void on_connect(iop_op_t *op, int res)
{
    cconn_t *c = op->data;
    client_t *cl = c->cl;
    if (cl->failed)
        return;
    if (res == 0) {
        start_message(c);
        return;
    }
    iop_fd_close(cl->loop, c->fd);
    c->fd = -1;
    if (c->ai->ai_next) {        /* a name may resolve to several addresses */
        c->ai = c->ai->ai_next;
        try_connect(c);
        return;
    }
    char where[128];
    iop_app_format_addr(c->ai->ai_addr, c->ai->ai_addrlen, where, sizeof where);
    int same = strcmp(where, cl->target) == 0;   /* name the address only if it adds something */
    fail(cl, "connection %u: cannot connect to %s%s%s%s: %s", c->id, cl->target,
         same ? "" : " (", same ? "" : where, same ? "" : ")", iop_strerror(res));
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
        "                       min(64, BYTES) up to BYTES\n"
        "  --connections C      spread the messages over C connections (default 1)\n"
        "  --timeout SECONDS    give up on a connect, send or recv after this (default 10)\n"
        "  --seed S             random seed (default: from the clock)\n"
        "  --backend NAME       select, poll, epoll, sigio, uring or auto\n"
        "                       (default: $IOPLEX_BACKEND, then auto)\n"
        "  --plugin-path DIRS   ':'-separated dirs searched first for backend modules\n"
        "  --help               this text\n"
        "\n"
        "Exit status: 0 when everything came back intact, 1 on a mismatch or failure,\n"
        "2 on a usage error or when the event loop cannot start (backend unavailable).\n");
}

static int bad_value(const char *opt, const char *val)
{
    fprintf(stderr, PROG ": bad value '%s' for --%s (try --help)\n", val, opt);
    return EXIT_USAGE;
}

static void client_free(client_t *cl)
{
    for (unsigned i = 0; i < cl->nconns; i++)
        if (cl->conns[i].fd >= 0)
            iop_fd_close(cl->loop, cl->conns[i].fd);
    iop_loop_destroy(cl->loop);   /* drops ops still in flight after a failure */
    for (unsigned i = 0; i < cl->nconns; i++) {
        iop_free(cl->conns[i].out);
        iop_free(cl->conns[i].in);
    }
    iop_free(cl->conns);
    freeaddrinfo(cl->addrs);
}

int main(int argc, char **argv)
{
    const char *backend = NULL, *plugin_path = NULL;
    uint64_t check = 0, size = DEFAULT_MAX_SIZE, conns = 1, timeout_s = 10, seed = 0;
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
            if (iop_app_parse_u64(optarg, 1, 24 * 3600, &timeout_s) < 0)
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
        case ':':
            fprintf(stderr, PROG ": option '%s' needs a value (try --help)\n", argv[optind - 1]);
            return EXIT_USAGE;
        default:
            fprintf(stderr, PROG ": unknown option '%s' (try --help)\n", argv[optind - 1]);
            return EXIT_USAGE;
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
        .timeout_ns = timeout_s * 1000000000ull,
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
        return EXIT_USAGE;
    }
    cl.conns = iop_calloc(cl.nconns, sizeof *cl.conns);
    if (!cl.conns) {
        fprintf(stderr, PROG ": out of memory\n");
        client_free(&cl);
        return EXIT_FAILURE;
    }
    for (unsigned i = 0; i < cl.nconns; i++) {
        cconn_t *c = &cl.conns[i];
        *c = (cconn_t){ .cl = &cl, .id = i, .fd = -1, .ai = cl.addrs };
        c->out = iop_malloc(cl.bufsize);
        c->in = iop_malloc(cl.bufsize);
        if (!c->out || !c->in) {
            fprintf(stderr, PROG ": out of memory\n");
            client_free(&cl);
            return EXIT_FAILURE;
        }
    }
    for (unsigned i = 0; i < cl.nconns && !cl.failed; i++)
        try_connect(&cl.conns[i]);

    if (!cl.failed) {
        r = iop_loop_run(cl.loop, IOP_RUN_DEFAULT);
        if (r < 0)
            fail(&cl, "the event loop failed: %s", iop_last_error());
        else if (cl.check && cl.completed != cl.total)
            fail(&cl, "only %llu of %llu messages came back",
                 (unsigned long long)cl.completed, (unsigned long long)cl.total);
    }
    if (!cl.failed && cl.check)
        printf("ok: %llu messages, %llu bytes verified, backend %s\n",
               (unsigned long long)cl.completed, (unsigned long long)cl.bytes,
               iop_loop_backend(cl.loop));
    int status = cl.failed ? EXIT_FAILURE : EXIT_SUCCESS;
    client_free(&cl);
    return status;
}
