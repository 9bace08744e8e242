/* The http service: its descriptor, its options and its state. The state is made
 * once per host before workers fork; each worker inherits the open root directory
 * and only reads the state afterwards. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#ifdef SYS_openat2
#include <linux/openat2.h>
#endif
#include "http_internal.h"

#define MS 1000000ull

/* Does openat2 with RESOLVE_BENEATH work here (kernel >= 5.6, no seccomp veto)? */
static int openat2_works(int dirfd)
{
#ifdef SYS_openat2
    struct open_how how = { .flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC,
                            .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS };
    long fd = syscall(SYS_openat2, dirfd, ".", &how, sizeof how);
    if (fd >= 0) {
        close((int)fd);
        return 1;
    }
#else
    (void)dirfd;
#endif
    return 0;
}

static int open_root(http_state_t *st, const char *root, const char *resolve, char *err, size_t errlen)
{
    st->root_fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (st->root_fd < 0) {
        int e = errno;
        snprintf(err, errlen, "http: root=%s: %s", root, strerror(e));
        return -e;
    }
    if (!realpath(root, st->root_real)) {
        int e = errno;
        snprintf(err, errlen, "http: root=%s: realpath: %s", root, strerror(e));
        return -e;
    }
    int can = openat2_works(st->root_fd);
    if (strcmp(resolve, "openat2") == 0 && !can) {
        snprintf(err, errlen, "http: resolve=openat2: openat2(2) with RESOLVE_BENEATH is not available here");
        return -ENOSYS;
    }
    st->use_openat2 = can && strcmp(resolve, "realpath") != 0;
    return 0;
}

static int apply_opt(http_state_t *st, const iop_service_opt_t *o, const char **root,
                     const char **resolve, char *err, size_t errlen)
{
    long long x;
    int r = 0;
    if (strcmp(o->key, "root") == 0) {
        *root = o->value;
    } else if (strcmp(o->key, "index") == 0) {
        const char *v = o->value;
        if (!*v || strchr(v, '/') || strcmp(v, ".") == 0 || strcmp(v, "..") == 0 ||
            strlen(v) > HTTP_INDEX_MAX) {
            snprintf(err, errlen, "http: index=%s: want a file name (no '/')", v);
            return -EINVAL;
        }
        strcpy(st->index, v);
    } else if (strcmp(o->key, "header_timeout_ms") == 0) {
        if ((r = iop_service_opt_number("http", o, 1, 3600000, &x, err, errlen)) == 0)
            st->header_timeout_ns = (uint64_t)x * MS;
    } else if (strcmp(o->key, "send_timeout_ms") == 0) {
        if ((r = iop_service_opt_number("http", o, 1, 3600000, &x, err, errlen)) == 0)
            st->send_timeout_ns = (uint64_t)x * MS;
    } else if (strcmp(o->key, "idle_release_ms") == 0) {
        if ((r = iop_service_opt_number("http", o, 0, 3600000, &x, err, errlen)) == 0)
            st->idle_release_ns = (uint64_t)x * MS;
    } else if (strcmp(o->key, "max_body") == 0) {
        if ((r = iop_service_opt_number("http", o, 0, 1 << 30, &x, err, errlen)) == 0)
            st->max_body = x;
    } else if (strcmp(o->key, "recv") == 0) {
        if (strcmp(o->value, "auto") == 0)
            st->recv_mode = HTTP_RECV_AUTO;
        else if (strcmp(o->value, "stream") == 0)
            st->recv_mode = HTTP_RECV_STREAM;
        else if (strcmp(o->value, "plain") == 0)
            st->recv_mode = HTTP_RECV_PLAIN;
        else {
            snprintf(err, errlen, "http: recv=%s: want auto, stream or plain", o->value);
            return -EINVAL;
        }
    } else if (strcmp(o->key, "resolve") == 0) {
        if (strcmp(o->value, "auto") && strcmp(o->value, "openat2") && strcmp(o->value, "realpath")) {
            snprintf(err, errlen, "http: resolve=%s: want auto, openat2 or realpath", o->value);
            return -EINVAL;
        }
        *resolve = o->value;
    } else {
        snprintf(err, errlen, "http: unknown option '%s' (known: root, index, header_timeout_ms, "
                 "send_timeout_ms, idle_release_ms, max_body, recv, resolve)", o->key);
        return -EINVAL;
    }
    return r;
}

static void http_destroy(void *state)
{
    http_state_t *st = state;
    if (!st)
        return;
    if (st->root_fd >= 0)
        close(st->root_fd);
    iop_free(st);
}

static int http_create(void **state, const iop_service_cfg_t *cfg, char *err, size_t errlen)
{
    http_state_t *st = iop_calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "http: out of memory");
        return -ENOMEM;
    }
    st->root_fd = -1;
    st->header_timeout_ns = 10000 * MS;
    st->send_timeout_ns = 30000 * MS;
    st->idle_release_ns = 3000 * MS;
    st->max_body = 16384;
    strcpy(st->index, "index.html");
    const char *root = NULL, *resolve = "auto";
    int r = 0;
    for (size_t i = 0; i < cfg->nopts && r == 0; i++)
        r = apply_opt(st, &cfg->opts[i], &root, &resolve, err, errlen);
    if (r == 0 && root)
        r = open_root(st, root, resolve, err, errlen);
    if (r < 0) {
        http_destroy(st);
        return r;
    }
    *state = st;
    return 0;
}

IOP_SERVICE_EXPORT const iop_service_desc_t iop_service_descriptor = {
    .abi_version = IOP_SERVICE_ABI_VERSION,
    .desc_size = sizeof(iop_service_desc_t),
    .flags = IOP_SERVICE_DRAIN_IDLE |      /* keep-alive connections between requests */
             IOP_SERVICE_CLIENT_FIRST,     /* a connection is of use once its request is in */
    .name = "http",
    .summary = "HTTP/1.1 static files (GET, HEAD, Range, keep-alive) and a /hello route",
    .options_help =
        "root=DIR              serve files from DIR (none: only /hello)\n"
        "index=NAME            a directory's index file (default index.html)\n"
        "header_timeout_ms=N   time to receive a request head, then 408 (default 10000)\n"
        "send_timeout_ms=N     time a response may stall (default 30000)\n"
        "idle_release_ms=N     a keep-alive connection quiet this long gives its buffers'\n"
        "                      memory back until its next request (default 3000; 0 = never)\n"
        "max_body=BYTES        largest request body skipped on GET/HEAD, else 413 (default 16384)\n"
        "recv=MODE             stream: one multishot receive per connection into the loop's\n"
        "                      receive pool; plain: a receive per read into the connection's\n"
        "                      buffer; auto (default): stream where the kernel fills the pool\n"
        "                      (io_uring provided buffers), else plain\n"
        "resolve=MODE          auto, openat2 or realpath: how paths are kept under root\n",
    .create = http_create,
    .serve = http_serve,
    .destroy = http_destroy,
};
