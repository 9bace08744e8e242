/* Static files under the root: open beneath the root only, directories and their
 * index file, conditional and range requests, and the body: small files through
 * the out buffer with their headers, larger ones with sendfile(2) straight from
 * the page cache to the socket. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#ifdef SYS_openat2
#include <linux/openat2.h>
#endif
#include "http_internal.h"

#define YIELD_BYTES (4u << 20)         /* let other coroutines run this often on a fast peer */
#define OPEN_FLAGS (O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)   /* O_NONBLOCK: a FIFO must not hang us */

static const struct { const char *ext, *type; } TYPES[] = {
    { "html", "text/html; charset=utf-8" }, { "htm", "text/html; charset=utf-8" },
    { "css", "text/css" }, { "js", "text/javascript" }, { "json", "application/json" },
    { "txt", "text/plain; charset=utf-8" }, { "png", "image/png" }, { "jpg", "image/jpeg" },
    { "jpeg", "image/jpeg" }, { "gif", "image/gif" }, { "svg", "image/svg+xml" },
    { "ico", "image/x-icon" }, { "wasm", "application/wasm" }, { "pdf", "application/pdf" },
    { "mjs", "text/javascript" }, { "xml", "application/xml" }, { "webp", "image/webp" },
    { "avif", "image/avif" }, { "mp4", "video/mp4" }, { "webm", "video/webm" },
    { "woff2", "font/woff2" }, { "csv", "text/csv; charset=utf-8" },
};

static const char *content_type(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(slash ? slash : path, '.');
    if (dot)
        for (size_t i = 0; i < sizeof TYPES / sizeof *TYPES; i++)
            if (strcasecmp(dot + 1, TYPES[i].ext) == 0)
                return TYPES[i].type;
    return "application/octet-stream";
}

/* ---- opening beneath the root ------------------------------------------------------ */

/* Fallback without openat2: resolve every symlink with realpath and check that the
 * result is still under the root's real path. A symlink swapped in between the
 * check and the open could still escape; openat2 has no such window. */
static int open_checked(http_conn_t *c, const char *rel, int flags)
{
    const http_state_t *st = c->st;
    if ((size_t)snprintf(c->bufs->full, PATH_MAX, "%s/%s", st->root_real, rel) >= PATH_MAX)
        return -ENAMETOOLONG;
    if (!realpath(c->bufs->full, c->bufs->real))
        return -errno;
    size_t n = strlen(st->root_real);
    if (!(n == 1 && st->root_real[0] == '/') &&
        (strncmp(c->bufs->real, st->root_real, n) != 0 || (c->bufs->real[n] != '/' && c->bufs->real[n] != '\0')))
        return -EXDEV;
    int fd = open(c->bufs->real, flags | O_NOFOLLOW);
    return fd < 0 ? -errno : fd;
}

static int resolve(http_conn_t *c, const char *rel, int flags)
{
#ifdef SYS_openat2
    if (c->st->use_openat2) {
        /* The kernel refuses ".." above the root, absolute symlinks and symlinks
         * that lead out (EXDEV), and /proc magic links. */
        struct open_how how = { .flags = (uint64_t)flags,
                                .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS };
        long r = syscall(SYS_openat2, c->st->root_fd, rel, &how, sizeof how);
        return r < 0 ? -errno : (int)r;
    }
#endif
    return open_checked(c, rel, flags);
}

static int fstat_or_close(int fd, struct stat *sb)
{
    if (fstat(fd, sb) == 0)
        return fd;
    int e = -errno;
    close(fd);
    return e;
}

/* path: decoded, starts with '/'. A directory comes back as an O_PATH fd (only its
 * type is wanted), a regular file open for reading; anything else is -ENODEV. */
static int open_beneath(http_conn_t *c, const char *path, struct stat *sb)
{
    const char *rel = path[1] ? path + 1 : ".";
    /* Look before opening: opening a FIFO releases a writer blocked on it, opening
     * a device runs its driver; an O_PATH fd only names the file. */
    int pfd = resolve(c, rel, O_PATH | O_CLOEXEC);
    if (pfd < 0 || (pfd = fstat_or_close(pfd, sb)) < 0)
        return pfd;
    if (S_ISDIR(sb->st_mode))
        return pfd;
    if (!S_ISREG(sb->st_mode)) {
        close(pfd);
        return -ENODEV;
    }
    /* The very file looked at, through its /proc link (sb stays true); without
     * /proc, by name again, if that still names the same file. */
    char link[32];
    snprintf(link, sizeof link, "/proc/self/fd/%d", pfd);
    int fd = open(link, OPEN_FLAGS);
    int err = fd < 0 ? errno : 0;
    close(pfd);
    if (err != ENOENT)
        return fd >= 0 ? fd : -err;
    struct stat looked = *sb;
    if ((fd = resolve(c, rel, OPEN_FLAGS)) < 0 || (fd = fstat_or_close(fd, sb)) < 0)
        return fd;
    if (sb->st_dev != looked.st_dev || sb->st_ino != looked.st_ino) {
        close(fd);
        return -ENOENT;                    /* replaced in between */
    }
    return fd;
}

static int status_for(int err)
{
    switch (-err) {
    case EACCES:
    case EPERM:
        return 403;
    case EMFILE:
    case ENFILE:
    case ENOMEM:
        return 503;
    case ENOENT: case ENOTDIR: case ELOOP: case EXDEV: case ENAMETOOLONG: case ENXIO:
    case EAGAIN: case ENODEV: case EISDIR:
        return 404;                        /* outside the root reads as "not there" */
    default:
        return 500;
    }
}

/* ---- responses without a file body --------------------------------------------------- */

/* The decoded path, percent-encoded again where needed, for Location. */
static int encode_path(const char *path, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
        int plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                    strchr("-._~!$&'()*+,;=:@/", *p);
        if (o + 4 > cap)
            return -1;
        if (plain) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    return (int)o;
}

/* A directory named without its trailing slash: 301 to the slash form, so that
 * relative links in its index resolve against the directory. */
static int redirect_dir(http_conn_t *c, const http_request_t *rq, int keep)
{
    int r = http_out_room(c, HTTP_OUT_CAP);   /* the whole out buffer for a long Location */
    if (r < 0)
        return r;
    static const char body[] = "301 Moved Permanently\n";
    int n = snprintf(c->out, HTTP_OUT_CAP, "HTTP/1.1 301 Moved Permanently\r\nServer: ioplex\r\n"
                     "Date: %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n%sLocation: ",
                     http_date_now(c), sizeof body - 1, http_connection_header(c, keep));
    size_t tail = 5 + rq->query.n + 4 + sizeof body;
    int e = (size_t)n + tail < HTTP_OUT_CAP ? encode_path(c->bufs->path, c->out + n, HTTP_OUT_CAP - (size_t)n - tail) : -1;
    if (e < 0)
        return http_error(c, 414, keep, NULL);
    n += e;
    n += snprintf(c->out + n, HTTP_OUT_CAP - (size_t)n, "/%s%.*s\r\n\r\n%s", rq->query.n ? "?" : "",
                  (int)rq->query.n, rq->query.p, c->head ? "" : body);
    c->out_len = (size_t)n;
    return keep;
}

static int not_modified(http_conn_t *c, const char *last_modified, int keep)
{
    int r = http_out_room(c, 512);
    if (r < 0)
        return r;
    c->out_len += (size_t)snprintf(c->out + c->out_len, c->out_cap - c->out_len,
                                   "HTTP/1.1 304 Not Modified\r\nServer: ioplex\r\nDate: %s\r\n"
                                   "Last-Modified: %s\r\n%s\r\n",
                                   http_date_now(c), last_modified, http_connection_header(c, keep));
    return keep;
}

/* If-Modified-Since: a valid date not in the future, at or after the file's mtime. */
static int unchanged_since(http_conn_t *c, const http_request_t *rq, int64_t mtime)
{
    int64_t t;
    if (!rq->if_modified_since.p ||
        http_parse_date(rq->if_modified_since.p, rq->if_modified_since.n, &t) < 0)
        return 0;
    http_date_now(c);
    return mtime <= t && t <= c->date_sec;
}

static int is_star(http_str_t v) { return v.n == 1 && v.p[0] == '*'; }

/* The preconditions of RFC 9110 13.2.2 for a file, which has no entity tags: 0 to
 * go on, 304 or 412. If-Match holds only as "*"; If-Unmodified-Since (without
 * If-Match) fails when the file changed after it; If-None-Match "*" means the
 * client has it, any list of tags matches nothing, and either way it makes
 * If-Modified-Since ignored. */
static int precondition(http_conn_t *c, const http_request_t *rq, int64_t mtime)
{
    int64_t t;
    if (rq->if_match.p) {
        if (!is_star(rq->if_match))
            return 412;
    } else if (rq->if_unmodified_since.p &&
               http_parse_date(rq->if_unmodified_since.p, rq->if_unmodified_since.n, &t) == 0 && mtime > t) {
        return 412;
    }
    if (rq->if_none_match.p)
        return is_star(rq->if_none_match) ? 304 : 0;
    return unchanged_since(c, rq, mtime) ? 304 : 0;
}

/* ---- the body ---------------------------------------------------------------------------- */

/* sendfile(2) has no MSG_NOSIGNAL: block SIGPIPE around it and take back the one a
 * reset peer raised, so that a host that did not ignore SIGPIPE survives. */
static ssize_t sendfile_nosigpipe(int sock, int fd, off_t *off, size_t n)
{
    sigset_t pipe_set, old, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    ssize_t r = sendfile(sock, fd, off, n);
    int err = errno;
    if (r < 0 && err == EPIPE && !sigismember(&old, SIGPIPE) && sigpending(&pending) == 0 &&
        sigismember(&pending, SIGPIPE)) {
        struct timespec zero = { 0, 0 };
        sigtimedwait(&pipe_set, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = err;
    return r;
}

static int send_file_body(http_conn_t *c, int fd, uint64_t first, uint64_t len)
{
    int r = http_flush(c, MSG_MORE);       /* the headers leave with the first segment */
    if (r < 0)
        return r;
    off_t off = (off_t)first;
    uint64_t burst = 0;
    while (len) {
        ssize_t n = sendfile_nosigpipe(c->svc->fd, fd, &off, len > (1u << 30) ? (1u << 30) : (size_t)len);
        if (n > 0) {
            len -= (uint64_t)n;
            c->stats->bytes_out += (uint64_t)n;
            if ((burst += (uint64_t)n) >= YIELD_BYTES) {
                burst = 0;
                if ((r = iop_yield()) < 0)
                    return r;
            }
            continue;
        }
        if (n == 0)
            return -EIO;                   /* the file shrank: the length we sent is wrong */
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN)
            return -errno;
        burst = 0;
        r = iop_wait_fd(c->svc->fd, IOP_WRITE, http_send_deadline(c));
        if (r < 0)
            return r;
    }
    return 0;
}

/* Small bodies: read into the out buffer after the headers, one send for both. */
static int copy_file_body(http_conn_t *c, int fd, uint64_t first, uint64_t len)
{
    char *p = c->out + c->out_len;
    for (uint64_t got = 0; got < len;) {
        ssize_t n = pread(fd, p + got, (size_t)(len - got), (off_t)(first + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        got += (uint64_t)n;
    }
    c->out_len += (size_t)len;
    return 0;
}

static int send_file(http_conn_t *c, const http_request_t *rq, int fd, const struct stat *sb, int keep)
{
    uint64_t size = (uint64_t)sb->st_size;
    /* Never later than Date (RFC 9110 8.8.2.1): a file dated in the future is
     * modified "now". */
    int64_t mtime = sb->st_mtim.tv_sec;
    http_date_now(c);
    if (mtime > c->date_sec)
        mtime = c->date_sec;
    char last_modified[HTTP_DATE_LEN + 1];
    http_format_date(mtime, last_modified);
    switch (precondition(c, rq, mtime)) {
    case 304:
        return not_modified(c, last_modified, keep);
    case 412:
        return http_error(c, 412, keep, NULL);
    }

    uint64_t first = 0, last = size ? size - 1 : 0;
    int status = 200;
    /* If-Range: the range applies only to the version the client has (our date).
     * Range is defined for GET only: HEAD tells the whole size (RFC 9110 14.2). */
    if (rq->range.p && rq->method == HTTP_GET && (!rq->if_range.p || (rq->if_range.n == HTTP_DATE_LEN &&
                                            memcmp(rq->if_range.p, last_modified, HTTP_DATE_LEN) == 0))) {
        switch (http_parse_range(rq->range.p, rq->range.n, size, &first, &last)) {
        case HTTP_RANGE_OK:
            status = 206;
            break;
        case HTTP_RANGE_UNSATISFIABLE: {
            char cr[64];
            snprintf(cr, sizeof cr, "Content-Range: bytes */%" PRIu64 "\r\n", size);
            return http_error(c, 416, keep, cr);
        }
        case HTTP_RANGE_NONE:
            break;
        }
    }
    uint64_t len = size ? last - first + 1 : 0;
    int small = !c->head && len <= HTTP_SMALL_FILE;
    int r = http_out_room(c, 1024 + (small ? len : 0));
    if (r < 0)
        return r;
    size_t head_at = c->out_len;
    char range[96] = "";
    if (status == 206)
        snprintf(range, sizeof range, "Content-Range: bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64 "\r\n",
                 first, last, size);
    c->out_len += (size_t)snprintf(c->out + c->out_len, c->out_cap - c->out_len,
                                   "HTTP/1.1 %d %s\r\nServer: ioplex\r\nDate: %s\r\n"
                                   "Content-Type: %s\r\nContent-Length: %" PRIu64 "\r\n"
                                   "Last-Modified: %s\r\nAccept-Ranges: bytes\r\n%s%s\r\n",
                                   status, http_reason(status), http_date_now(c),
                                   content_type(c->bufs->path), len, last_modified, range,
                                   http_connection_header(c, keep));
    if (c->head || len == 0)
        return keep;
    if (small) {
        /* Nothing of this response has left yet: a file that shrank since its
         * fstat gets a 500 in place of headers promising what it no longer has. */
        if (copy_file_body(c, fd, first, len) < 0) {
            c->out_len = head_at;
            return http_error(c, 500, keep, NULL);
        }
        return keep;
    }
    r = send_file_body(c, fd, first, len);
    return r < 0 ? r : keep;
}

int http_static(http_conn_t *c, const http_request_t *rq, int keep)
{
    /* Room is left after the path for "/" and the index name. */
    int n = http_decode_path(rq->path.p, rq->path.n, c->bufs->path, HTTP_PATH_CAP - HTTP_INDEX_MAX - 1);
    if (n < 0)
        return http_error(c, -n, keep, NULL);
    struct stat sb;
    int fd = open_beneath(c, c->bufs->path, &sb);
    if (fd < 0)
        return http_error(c, status_for(fd), keep, NULL);
    if (S_ISDIR(sb.st_mode)) {
        close(fd);
        if (c->bufs->path[n - 1] != '/')
            return redirect_dir(c, rq, keep);
        strcpy(c->bufs->path + n, c->st->index);
        fd = open_beneath(c, c->bufs->path, &sb);
        if (fd < 0)
            return http_error(c, status_for(fd), keep, NULL);   /* no index: 404, no listing */
    }
    int r;
    if (!S_ISREG(sb.st_mode))
        r = http_error(c, 404, keep, NULL);    /* devices, FIFOs, a directory as index */
    else
        r = send_file(c, rq, fd, &sb, keep);
    close(fd);
    return r;
}
