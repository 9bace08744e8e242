/* A template service plugin, built out of tree against an installed ioplex: every
 * line a client sends comes back in upper case, prefixed with an optional
 * greeting. Copy this folder, rename "upper" (file names, the CMake target and
 * .name), and write serve() as blocking code: it runs in a coroutine per
 * connection, and iop_recv / iop_send park that coroutine instead of blocking the
 * process.
 *
 *   ioplexd --plugin-path build --service 'upper=127.0.0.1:7100,prefix=> '
 *
 * The contract (ioplex/service.h, plugins/README.md in the ioplex sources):
 *  - export one symbol, iop_service_descriptor;
 *  - create (optional): once, before the workers fork: check options, make state;
 *  - serve: one call per connection; return when done (the host closes the fd);
 *  - destroy (optional): free the state. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ioplex.h>

typedef struct upper {
    char prefix[32];
} upper_t;

static int upper_create(void **state, const iop_service_cfg_t *cfg, char *err, size_t errlen)
{
    for (size_t i = 0; i < cfg->nopts; i++)
        if (strcmp(cfg->opts[i].key, "prefix") != 0) {
            snprintf(err, errlen, "unknown option '%s' (upper takes prefix=TEXT)", cfg->opts[i].key);
            return -EINVAL;
        }
    const char *p = iop_service_opt(cfg, "prefix");
    if (p && strlen(p) >= sizeof ((upper_t *)0)->prefix) {
        snprintf(err, errlen, "prefix is too long (at most 31 bytes)");
        return -EINVAL;
    }
    upper_t *u = calloc(1, sizeof *u);
    if (!u)
        return -ENOMEM;
    if (p)
        snprintf(u->prefix, sizeof u->prefix, "%s", p);
    *state = u;
    return 0;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = iop_send(fd, p, n, 0, 0);
        if (w < 0)
            return (int)w;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* prefix + the line in upper case, into out at *o; sends out first when it is full. */
static int put_line(iop_service_conn_t *conn, const upper_t *u, char *out, size_t cap, size_t *o,
                    const char *line, size_t len)
{
    size_t plen = strlen(u->prefix);
    if (*o + plen + len > cap) {
        int r = send_all(conn->fd, out, *o);
        if (r < 0)
            return r;
        conn->stats->bytes_out += *o;
        *o = 0;
    }
    memcpy(out + *o, u->prefix, plen);
    *o += plen;
    for (size_t i = 0; i < len; i++)
        out[(*o)++] = (char)toupper((unsigned char)line[i]);
    conn->stats->requests++;
    return 0;
}

/* Lines, not reads: a line may arrive in pieces, and one read may hold several.
 * Every reply a read completes goes out in one send. */
static int upper_serve(void *state, iop_service_conn_t *conn)
{
    const upper_t *u = state;
    char in[4096], out[8192];
    size_t have = 0;
    for (;;) {
        ssize_t n = iop_recv(conn->fd, in + have, sizeof in - have, 0, 0);
        size_t o = 0;
        int r = 0;
        if (n <= 0) {              /* the end: a last line without its newline too */
            if (have && n == 0 && (r = put_line(conn, u, out, sizeof out, &o, in, have)) == 0 &&
                (r = send_all(conn->fd, out, o)) == 0)
                conn->stats->bytes_out += o;
            if (n < 0)
                r = (int)n;
            return r == -ECANCELED ? 0 : r;
        }
        conn->stats->bytes_in += (uint64_t)n;
        have += (size_t)n;
        size_t used = 0;
        for (;;) {
            const char *nl = memchr(in + used, '\n', have - used);
            /* a line longer than the buffer goes out in buffer-sized pieces */
            size_t len = nl ? (size_t)(nl - (in + used)) + 1 : have == sizeof in && !used ? have : 0;
            if (!len || (r = put_line(conn, u, out, sizeof out, &o, in + used, len)) < 0)
                break;
            used += len;
        }
        memmove(in, in + used, have - used);
        have -= used;
        if (r == 0 && o && (r = send_all(conn->fd, out, o)) == 0)
            conn->stats->bytes_out += o;
        if (r < 0)
            return r == -ECANCELED ? 0 : r;
    }
}

static void upper_destroy(void *state)
{
    free(state);
}

IOP_SERVICE_EXPORT const iop_service_desc_t iop_service_descriptor = {
    .abi_version = IOP_SERVICE_ABI_VERSION,
    .desc_size = sizeof(iop_service_desc_t),
    .name = "upper",
    .summary = "template service: sends every line back in upper case",
    .options_help = "  prefix=TEXT    put TEXT before every line sent back\n",
    .create = upper_create,
    .serve = upper_serve,
    .destroy = upper_destroy,
};
