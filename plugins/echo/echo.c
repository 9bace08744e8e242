/* The echo service: every byte a client sends comes back. A request is one read's
 * worth of bytes. The smallest complete service: one option, no shared state. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ioplex.h>

#define ECHO_BUF 16384          /* on the connection's coroutine stack */
#define MS 1000000ull

typedef struct echo_state {
    uint64_t send_timeout_ns;   /* a peer that takes none of our bytes for this long is dropped */
} echo_state_t;

static int echo_create(void **state, const iop_service_cfg_t *cfg, char *err, size_t errlen)
{
    echo_state_t *st = malloc(sizeof *st);
    if (!st) {
        snprintf(err, errlen, "echo: out of memory");
        return -ENOMEM;
    }
    st->send_timeout_ns = 30000 * MS;
    for (size_t i = 0; i < cfg->nopts; i++) {
        const iop_service_opt_t *o = &cfg->opts[i];
        long long v;
        int r = -EINVAL;
        if (strcmp(o->key, "send_timeout_ms") != 0)
            snprintf(err, errlen, "echo: unknown option '%s' (there is send_timeout_ms)", o->key);
        else if ((r = iop_service_opt_number("echo", o, 1, 86400000, &v, err, errlen)) == 0)
            st->send_timeout_ns = (uint64_t)v * MS;
        if (r < 0) {
            free(st);
            return r;
        }
    }
    *state = st;
    return 0;
}

static void echo_destroy(void *state) { free(state); }

static int echo_serve(void *state, iop_service_conn_t *conn)
{
    const echo_state_t *st = state;
    char buf[ECHO_BUF];
    for (;;) {
        /* A session: a drain lets it go on until the client ends it or the drain
         * deadline comes (the host then cancels us). idle only matters to hosts of
         * services flagged IOP_SERVICE_DRAIN_IDLE; it costs nothing to keep true.
         * A client may stay quiet as long as it likes: no receive deadline. */
        conn->idle = 1;
        ssize_t n = iop_recv(conn->fd, buf, sizeof buf, 0, 0);
        conn->idle = 0;
        if (n <= 0)
            return n == 0 || n == -ECANCELED || n == -ECONNRESET ? 0 : (int)n;
        conn->stats->requests++;
        conn->stats->bytes_in += (uint64_t)n;
        /* But one that sends and never reads would hold the connection forever: it
         * has send_timeout from each byte it takes to take the next. */
        iop_loop_t *loop = iop_coro_loop(iop_self());
        for (ssize_t off = 0; off < n;) {
            ssize_t w = iop_send(conn->fd, buf + off, (size_t)(n - off), 0, iop_now(loop) + st->send_timeout_ns);
            if (w < 0)
                return w == -ECANCELED || w == -ECONNRESET || w == -EPIPE || w == -ETIMEDOUT ? 0 : (int)w;
            off += w;
            conn->stats->bytes_out += (uint64_t)w;
        }
    }
}

IOP_SERVICE_EXPORT const iop_service_desc_t iop_service_descriptor = {
    .abi_version = IOP_SERVICE_ABI_VERSION,
    .desc_size = sizeof(iop_service_desc_t),
    .name = "echo",
    .summary = "echoes every byte back",
    .options_help = "send_timeout_ms=N     time a client may take none of its echo (default 30000)\n",
    .create = echo_create,
    .serve = echo_serve,
    .destroy = echo_destroy,
};
