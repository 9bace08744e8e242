/* The echo service: every byte a client sends comes back. A request is one read's
 * worth of bytes. The smallest complete service: no options, no state. */
#include <errno.h>
#include <ioplex.h>

#define ECHO_BUF 16384          /* on the connection's coroutine stack */

static int echo_serve(void *state, iop_service_conn_t *conn)
{
    (void)state;
    char buf[ECHO_BUF];
    for (;;) {
        /* A session: a drain lets it go on until the client ends it or the drain
         * deadline comes (the host then cancels us). idle only matters to hosts of
         * services flagged IOP_SERVICE_DRAIN_IDLE; it costs nothing to keep true. */
        conn->idle = 1;
        ssize_t n = iop_recv(conn->fd, buf, sizeof buf, 0, 0);
        conn->idle = 0;
        if (n <= 0)
            return n == 0 || n == -ECANCELED || n == -ECONNRESET ? 0 : (int)n;
        conn->stats->requests++;
        conn->stats->bytes_in += (uint64_t)n;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = iop_send(conn->fd, buf + off, (size_t)(n - off), 0, 0);
            if (w < 0)
                return w == -ECANCELED || w == -ECONNRESET || w == -EPIPE ? 0 : (int)w;
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
    .serve = echo_serve,
};
