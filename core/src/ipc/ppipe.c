/* The process pipe: messages over an AF_UNIX SOCK_SEQPACKET pair, cut into
 * fragments when larger than one datagram may be (see ppipe_wire.h).
 *
 * Receiving reads each fragment straight into the caller's buffer; a fragment that
 * does not fit lands in a per-end scratch buffer instead, and the message begun is
 * kept in the end (part) so that nothing is lost: the caller gets -EMSGSIZE and the
 * message stays first in line. A deadline between fragments keeps the part too. */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>
#include "error_internal.h"
#include "ppipe_internal.h"

#define DEFAULT_MAX_MSG (1u << 20)
#define LIMIT_MAX_MSG (1u << 30)
#define HDR ((uint32_t)sizeof(iop__ppipe_frag_t))

typedef union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * IOP_PPIPE_MAX_FDS)];
} fd_cmsg_t;

/* ---- life ------------------------------------------------------------------------------ */

/* A bigger send buffer lets more fragments be in flight; the kernel caps it at
 * net.core.wmem_max, so ask and then use what was granted: a datagram may take up to
 * the whole buffer, half of it leaves room for the next. */
static uint32_t frag_bytes(int fd)
{
    int want = 1 << 20, got = 0;
    socklen_t len = sizeof got;
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof want);
    if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &got, &len) < 0 || got < 4096)
        got = 4096;
    return (uint32_t)got / 2 < IOP__PPIPE_FRAG_BYTES ? (uint32_t)got / 2 : IOP__PPIPE_FRAG_BYTES;
}

static int end_new(iop_ppipe_t **out, int fd, uint32_t max_msg, uint32_t frag)
{
    iop_ppipe_t *p = iop_calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->fd = fd;
    p->max_msg = max_msg;
    p->frag_payload = frag - HDR;
    iop_mutex_init(&p->send_mx);
    iop_mutex_init(&p->recv_mx);
    *out = p;
    return 0;
}

int iop_ppipe_create(iop_ppipe_t *ends[2], const iop_ppipe_opts_t *opts)
{
    size_t max_msg = opts && opts->max_msg ? opts->max_msg : DEFAULT_MAX_MSG;
    if (max_msg > LIMIT_MAX_MSG)
        return iop__fail(-EINVAL, "iop_ppipe_create: max_msg %zu is above the 1 GiB limit", max_msg);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        return iop__fail(-errno, "iop_ppipe_create: socketpair: %s", strerror(errno));
    uint32_t f0 = frag_bytes(sv[0]), f1 = frag_bytes(sv[1]);
    uint32_t frag = f0 < f1 ? f0 : f1;     /* both ends agree on the largest datagram */
    int r = end_new(&ends[0], sv[0], (uint32_t)max_msg, frag);
    if (r == 0 && (r = end_new(&ends[1], sv[1], (uint32_t)max_msg, frag)) < 0)
        iop_free(ends[0]);
    if (r < 0) {
        close(sv[0]);
        close(sv[1]);
        ends[0] = ends[1] = NULL;
    }
    return r;
}

static void close_fds(const int *fds, int n)
{
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

static void part_drop(iop__ppipe_part_t *part)
{
    close_fds(part->fds, part->nfds);
    iop_free(part->data);
    memset(part, 0, offsetof(iop__ppipe_part_t, fds));
}

void iop_ppipe_close(iop_ppipe_t *p)
{
    if (!p)
        return;
    /* A forked copy must not touch the loop: its backend is the parent's. */
    if (p->loop && p->loop_pid == getpid())
        iop_fd_forget(p->loop, p->fd);
    close(p->fd);
    part_drop(&p->part);
    iop_free(p->scratch);
    iop_free(p);
}

int iop_ppipe_fd(const iop_ppipe_t *p) { return p->fd; }
size_t iop_ppipe_max_msg(const iop_ppipe_t *p) { return p->max_msg; }

/* ---- sending ------------------------------------------------------------------------------- */

/* Fills out[] with the pieces of iov covering [off, off + len); returns their count. */
static int slice_iov(const struct iovec *iov, int iovcnt, size_t off, size_t len, struct iovec *out)
{
    int n = 0;
    for (int i = 0; i < iovcnt && len; i++) {
        if (off >= iov[i].iov_len) {
            off -= iov[i].iov_len;
            continue;
        }
        size_t take = iov[i].iov_len - off < len ? iov[i].iov_len - off : len;
        out[n].iov_base = (char *)iov[i].iov_base + off;
        out[n].iov_len = take;
        n++;
        len -= take;
        off = 0;
    }
    return n;
}

static ssize_t send_locked(iop_ppipe_t *p, const struct iovec *iov, int iovcnt, size_t total,
                           const int *fds, int nfds, uint64_t deadline)
{
    fd_cmsg_t cm;
    size_t off = 0;
    do {
        size_t chunk = total - off < p->frag_payload ? total - off : p->frag_payload;
        iop__ppipe_frag_t h = {
            .magic = off ? IOP__PPIPE_MORE : IOP__PPIPE_FIRST,
            .total = (uint32_t)total,
            .offset = (uint32_t)off,
            .nfds = off ? 0 : (uint32_t)nfds,
        };
        struct iovec v[IOP_PPIPE_MAX_IOV + 1];
        v[0].iov_base = &h;
        v[0].iov_len = HDR;
        struct msghdr m = { .msg_iov = v };
        m.msg_iovlen = 1 + (size_t)slice_iov(iov, iovcnt, off, chunk, v + 1);
        if (!off && nfds) {
            memset(&cm, 0, sizeof cm);
            m.msg_control = cm.buf;
            m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
            struct cmsghdr *c = CMSG_FIRSTHDR(&m);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
            memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
        }
        ssize_t n = iop__ppipe_xfer(p, &m, 0, 1, deadline);
        if (n < 0)
            return n;              /* a message cut short is dropped by the receiver */
        off += chunk;
    } while (off < total);
    return (ssize_t)total;
}

ssize_t iop_ppipe_sendv(iop_ppipe_t *p, const struct iovec *iov, int iovcnt, const int *fds,
                        int nfds, uint64_t deadline)
{
    if (!p)
        return iop__fail(-EINVAL, "ppipe send: NULL pipe end");
    if (iovcnt < 0 || iovcnt > IOP_PPIPE_MAX_IOV || nfds < 0 || nfds > IOP_PPIPE_MAX_FDS ||
        (nfds && !fds))
        return iop__fail(-EINVAL, "ppipe send: at most %d iovecs and %d fds per message",
                         IOP_PPIPE_MAX_IOV, IOP_PPIPE_MAX_FDS);
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (total > p->max_msg)
        return iop__fail(-EMSGSIZE, "ppipe send: a message of %zu bytes is above this pipe's "
                                    "max_msg (%u)", total, p->max_msg);
    int r = iop__ppipe_lock(&p->send_mx, deadline);
    if (r < 0)
        return r;
    ssize_t n = send_locked(p, iov, iovcnt, total, fds, nfds, deadline);
    iop__ppipe_unlock(&p->send_mx);
    return n;
}

ssize_t iop_ppipe_send_fds(iop_ppipe_t *p, const void *msg, size_t len, const int *fds, int nfds,
                           uint64_t deadline)
{
    struct iovec v = { .iov_base = (void *)msg, .iov_len = len };
    return iop_ppipe_sendv(p, &v, 1, fds, nfds, deadline);
}

ssize_t iop_ppipe_send(iop_ppipe_t *p, const void *msg, size_t len, uint64_t deadline)
{
    return iop_ppipe_send_fds(p, msg, len, NULL, 0, deadline);
}

/* ---- receiving ------------------------------------------------------------------------------- */

/* Where one fragment's payload landed: room bytes at dst, the rest in p->scratch. */
typedef struct frag_in {
    iop__ppipe_frag_t h;
    uint8_t *dst;
    size_t room;
    size_t n;                      /* payload bytes */
    int nfds;
    int fds[IOP_PPIPE_MAX_FDS];
} frag_in_t;

static void frag_copy(const iop_ppipe_t *p, const frag_in_t *f, uint8_t *out)
{
    size_t a = f->n < f->room ? f->n : f->room;
    if (a && out != f->dst)
        memmove(out, f->dst, a);
    if (f->n > a)
        memcpy(out + a, p->scratch, f->n - a);
}

static int bad_frag(frag_in_t *f, const char *why)
{
    close_fds(f->fds, f->nfds);
    f->nfds = 0;
    return iop__fail(-EPROTO, "ppipe recv: malformed fragment (%s)", why);
}

/* What is wrong with a fragment header, given the payload bytes and descriptors
 * that came with it; NULL if nothing. The counts come from another process (or a
 * stranger on the socket): they are checked before they size or index anything. */
static const char *frag_fault(const iop_ppipe_t *p, const iop__ppipe_frag_t *h, size_t payload,
                              int nfds)
{
    if (h->magic != IOP__PPIPE_FIRST && h->magic != IOP__PPIPE_MORE)
        return "bad magic";
    if (h->total > p->max_msg || h->offset > h->total || payload > h->total - h->offset)
        return "bad length";
    if (h->magic == IOP__PPIPE_FIRST && h->nfds != (uint32_t)nfds)
        return "descriptor count unlike the descriptors attached";
    return NULL;
}

/* Collects the descriptors of m's SCM_RIGHTS messages into fds (room for
 * IOP_PPIPE_MAX_FDS); returns how many. */
static int take_fds(struct msghdr *m, int *fds)
{
    int n = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        if (k > IOP_PPIPE_MAX_FDS - n)
            k = IOP_PPIPE_MAX_FDS - n;
        memcpy(fds + n, CMSG_DATA(c), sizeof(int) * (size_t)k);
        n += k;
    }
    return n;
}

/* A datagram of 0 bytes reads like the end of the stream: the peer is gone only if
 * the socket says it was shut down (an empty datagram is no fragment of ours). */
static int peer_gone(const iop_ppipe_t *p)
{
    struct pollfd pfd = { .fd = p->fd, .events = POLLRDHUP };
    return poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLHUP | POLLRDHUP));
}

/* Reads one fragment into f->dst (f->room bytes), overflow into the scratch buffer. */
static int read_frag(iop_ppipe_t *p, frag_in_t *f, uint64_t deadline)
{
    int spill = f->room < p->frag_payload;    /* a whole fragment might not fit */
    if (spill && !p->scratch && !(p->scratch = iop_malloc(p->frag_payload)))
        return -ENOMEM;
    fd_cmsg_t cm;
    struct iovec v[3] = {
        { .iov_base = &f->h, .iov_len = HDR },
        { .iov_base = f->dst, .iov_len = f->room },
        { .iov_base = p->scratch, .iov_len = spill ? p->frag_payload : 0 },
    };
    struct msghdr m = { .msg_iov = v, .msg_iovlen = 3, .msg_control = cm.buf,
                        .msg_controllen = sizeof cm.buf };
    ssize_t n = iop__ppipe_xfer(p, &m, 0, 0, deadline);
    f->nfds = 0;
    if (n < 0)
        return (int)n;
    f->nfds = take_fds(&m, f->fds);
    if (n == 0 && peer_gone(p))
        return iop__fail(-EPIPE, "ppipe recv: the other end is closed (or its process died)");
    if ((size_t)n >= HDR && (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) == MSG_CTRUNC) {
        /* Room for every fd was offered: the kernel dropped them because this
         * process has no free descriptor. They are gone; so is their message. */
        close_fds(f->fds, f->nfds);
        f->nfds = 0;
        return iop__fail(-EMFILE, "ppipe recv: no free file descriptor in this process: the kernel dropped "
                         "the descriptors sent with a message, which is lost (raise RLIMIT_NOFILE)");
    }
    if ((size_t)n < HDR || (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
        return bad_frag(f, "truncated");
    f->n = (size_t)n - HDR;
    const char *why = frag_fault(p, &f->h, f->n, f->nfds);
    return why ? bad_frag(f, why) : 0;
}

/* Keeps a message begun in the end: the first got bytes are at buf, then fragment f
 * (if any), and fds (closed if this fails). */
static int part_keep(iop_ppipe_t *p, uint32_t total, const uint8_t *buf, size_t got,
                     const frag_in_t *f, const int *fds, int nfds)
{
    iop__ppipe_part_t *part = &p->part;
    uint8_t *data = iop_malloc(total ? total : 1);
    if (!data) {
        close_fds(fds, nfds);
        return -ENOMEM;
    }
    if (got)
        memcpy(data, buf, got);
    if (f) {
        frag_copy(p, f, data + got);
        got += f->n;
    }
    part->active = 1;
    part->total = total;
    part->len = (uint32_t)got;
    part->data = data;
    part->nfds = nfds;
    memcpy(part->fds, fds, sizeof(int) * (size_t)nfds);
    return 0;
}

static ssize_t too_big(const iop_ppipe_t *p, size_t cap, int fdcap)
{
    return iop__fail(-EMSGSIZE, "ppipe recv: the next message (%u bytes, %d fds) does not fit "
                                "%zu bytes and %d fds; it stays first in line (iop_ppipe_peek)",
                     p->part.total, p->part.nfds, cap, fdcap);
}

static ssize_t recv_locked(iop_ppipe_t *p, uint8_t *buf, size_t cap, int *fds, int *nfds,
                           uint64_t deadline)
{
    int fdcap = nfds ? *nfds : 0;
    int got_fds[IOP_PPIPE_MAX_FDS];
    frag_in_t f;
    for (;;) {
        size_t got;
        uint32_t total;
        int ngot;
        if (p->part.active) {
            iop__ppipe_part_t *part = &p->part;
            if (part->total > cap || part->nfds > fdcap)
                return too_big(p, cap, fdcap);
            if (part->len)
                memcpy(buf, part->data, part->len);
            got = part->len;
            total = part->total;
            ngot = part->nfds;
            memcpy(got_fds, part->fds, sizeof(int) * (size_t)ngot);
            part->nfds = 0;
            part_drop(part);
        } else {
            f.dst = buf;
            f.room = cap;
            int r = read_frag(p, &f, deadline);
            if (r < 0)
                return r;
            if (f.h.magic == IOP__PPIPE_MORE) {       /* the rest of a dropped message */
                close_fds(f.fds, f.nfds);
                continue;
            }
            if (f.h.offset != 0)
                return bad_frag(&f, "first fragment with an offset");
            total = f.h.total;
            if (total > cap || f.nfds > fdcap) {
                r = part_keep(p, total, buf, 0, &f, f.fds, f.nfds);
                return r < 0 ? r : too_big(p, cap, fdcap);
            }
            got = f.n;
            ngot = f.nfds;
            memcpy(got_fds, f.fds, sizeof(int) * (size_t)ngot);
        }
        int restart = 0;
        while (got < total && !restart) {
            f.dst = buf + got;
            f.room = cap - got;
            int r = read_frag(p, &f, deadline);
            if (r == -ETIMEDOUT || r == -ECANCELED || r == -ENOMEM) {
                int k = part_keep(p, total, buf, got, NULL, got_fds, ngot);
                return k < 0 ? k : r;
            }
            if (r < 0) {
                close_fds(got_fds, ngot);   /* the sender died halfway: nothing to deliver */
                return r;
            }
            if (f.h.magic == IOP__PPIPE_FIRST) {
                /* The sender withdrew the message in progress; this one replaces it
                 * (and starts at its beginning, as any first fragment does). */
                close_fds(got_fds, ngot);
                if (f.h.offset != 0)
                    return bad_frag(&f, "first fragment with an offset");
                r = part_keep(p, f.h.total, NULL, 0, &f, f.fds, f.nfds);
                if (r < 0)
                    return r;
                restart = 1;
            } else if (f.h.total != total || f.h.offset != got) {
                close_fds(got_fds, ngot);
                return bad_frag(&f, "out of order");
            } else {
                close_fds(f.fds, f.nfds);
                got += f.n;
            }
        }
        if (restart)
            continue;
        if (ngot)
            memcpy(fds, got_fds, sizeof(int) * (size_t)ngot);
        if (nfds)
            *nfds = ngot;
        return (ssize_t)total;
    }
}

ssize_t iop_ppipe_recv_fds(iop_ppipe_t *p, void *buf, size_t cap, int *fds, int *nfds,
                           uint64_t deadline)
{
    if (!p)
        return iop__fail(-EINVAL, "ppipe recv: NULL pipe end");
    if (nfds && (*nfds < 0 || (*nfds && !fds)))
        return iop__fail(-EINVAL, "ppipe recv: fds must hold *nfds descriptors");
    if (!buf && cap)
        return -EINVAL;
    int r = iop__ppipe_lock(&p->recv_mx, deadline);
    if (r < 0)
        return r;
    ssize_t n = recv_locked(p, buf, cap, fds, nfds, deadline);
    iop__ppipe_unlock(&p->recv_mx);
    return n;
}

ssize_t iop_ppipe_recv(iop_ppipe_t *p, void *buf, size_t cap, uint64_t deadline)
{
    return iop_ppipe_recv_fds(p, buf, cap, NULL, NULL, deadline);
}

/* Looks at the next first fragment without taking it; continuation fragments of a
 * dropped message on the way are consumed. The descriptors a peek receives (copies:
 * the message keeps its own) are counted against the header's count, then closed.
 * A malformed first fragment stays where it is: the next receive drops it. */
static ssize_t peek_locked(iop_ppipe_t *p, int *nfds, uint64_t deadline)
{
    for (;;) {
        if (p->part.active) {
            if (nfds)
                *nfds = p->part.nfds;
            return p->part.total;
        }
        iop__ppipe_frag_t h;
        fd_cmsg_t cm;
        int fds[IOP_PPIPE_MAX_FDS];
        struct iovec v = { .iov_base = &h, .iov_len = HDR };
        struct msghdr m = { .msg_iov = &v, .msg_iovlen = 1, .msg_control = cm.buf,
                            .msg_controllen = sizeof cm.buf };
        ssize_t n = iop__ppipe_xfer(p, &m, MSG_PEEK, 0, deadline);
        if (n < 0)
            return n;
        int got = take_fds(&m, fds);
        close_fds(fds, got);
        if (n == 0 && peer_gone(p))
            return iop__fail(-EPIPE, "ppipe recv: the other end is closed (or its process died)");
        if ((size_t)n < HDR)
            return iop__fail(-EPROTO, "ppipe recv: malformed fragment (truncated)");
        if (h.magic == IOP__PPIPE_FIRST) {
            /* The room offered holds the most the kernel passes (SCM_MAX_FD). */
            if (m.msg_flags & MSG_CTRUNC)
                return iop__fail(-EMFILE, "ppipe peek: no free file descriptor in this process "
                                 "to count the descriptors of the next message (raise RLIMIT_NOFILE)");
            const char *why = h.offset ? "first fragment with an offset" : frag_fault(p, &h, 0, got);
            if (why)
                return iop__fail(-EPROTO, "ppipe recv: malformed fragment (%s)", why);
            if (nfds)
                *nfds = got;
            return h.total;
        }
        frag_in_t f = { .dst = NULL, .room = 0 };   /* a stray continuation: drop it */
        int r = read_frag(p, &f, deadline);
        if (r < 0)
            return r;
        close_fds(f.fds, f.nfds);
    }
}

ssize_t iop_ppipe_peek(iop_ppipe_t *p, int *nfds, uint64_t deadline)
{
    if (!p)
        return iop__fail(-EINVAL, "ppipe peek: NULL pipe end");
    int r = iop__ppipe_lock(&p->recv_mx, deadline);
    if (r < 0)
        return r;
    ssize_t n = peek_locked(p, nfds, deadline);
    iop__ppipe_unlock(&p->recv_mx);
    return n;
}
