/* libFuzzer harness for the process pipe's receiving side (core/src/ipc/ppipe.c):
 * what one process reads of the fragments another one wrote, when they are not
 * what a healthy sender writes (a sender killed halfway, memory scribbled on, a
 * stranger on the socket). The input is a little program: forge a fragment (any
 * magic, total, offset and length, with descriptors attached or cut short), send a
 * real message, receive (with a buffer and room for descriptors of some size) or
 * peek. Every payload byte at offset k of a message of length total is
 * PAT(k, total), whoever wrote it. Properties:
 *  - a message received is whole and in order: byte k of an n-byte message is
 *    PAT(k, n); it fits the buffer, and its descriptors the room offered;
 *  - a receive fails only as documented (-EMSGSIZE, -EPROTO, -ETIMEDOUT), and after
 *    -EMSGSIZE a peek says what the message needs;
 *  - no descriptor leaks: once both ends are closed, the process holds the fds it
 *    held before.
 * The rest of the core is stood in for: plain code, no coroutine (so the waits are
 * poll(2) with a deadline already past).
 * Built with clang -fsanitize=fuzzer (run-fuzz.sh) and by gcc with replay_main.c. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "ioplex.h"
#include "ppipe_wire.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)
#define PAT(k, total) ((uint8_t)((k) * 131u + (total) * 7u + 1u))
#define MAX_OPS 48
#define PAST 1                     /* a deadline already gone: never block */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- the stand-ins for the rest of the core --------------------------------------------- */

int iop__fail(int err, const char *fmt, ...);
int iop__fail(int err, const char *fmt, ...) { (void)fmt; return err; }
void *iop_malloc(size_t n) { return malloc(n); }
void *iop_calloc(size_t n, size_t size) { return calloc(n, size); }
void iop_free(void *p) { free(p); }
void iop_mutex_init(iop_mutex_t *m) { memset(m, 0, sizeof *m); }
int iop_mutex_lock(iop_mutex_t *m, uint64_t deadline) { (void)m, (void)deadline; abort(); }
int iop_mutex_unlock(iop_mutex_t *m) { (void)m; abort(); }
iop_coro_t *iop_self(void) { return NULL; }
iop_loop_t *iop_coro_loop(const iop_coro_t *c) { (void)c; abort(); }
void iop_fd_forget(iop_loop_t *loop, int fd) { (void)loop, (void)fd; abort(); }

ssize_t iop_recvmsg(int fd, struct msghdr *msg, int flags, uint64_t deadline)
{
    (void)fd, (void)msg, (void)flags, (void)deadline;
    abort();
}

ssize_t iop_sendmsg(int fd, const struct msghdr *msg, int flags, uint64_t deadline)
{
    (void)fd, (void)msg, (void)flags, (void)deadline;
    abort();
}

/* ---- the program ------------------------------------------------------------------------- */

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader_t;

static unsigned take(reader_t *r)
{
    if (!r->n)
        return 0;
    r->n--;
    return *r->p++;
}

static unsigned take16(reader_t *r) { return take(r) | take(r) << 8; }

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    CHECK(d);
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1;                  /* not the one opendir holds */
}

/* A fragment as the program says, written raw to the sending end's socket. */
static void forge(int fd, unsigned op, reader_t *r, uint32_t max_msg)
{
    static const uint32_t magics[] = { IOP__PPIPE_FIRST, IOP__PPIPE_MORE, 0x31465051u, 0 };
    iop__ppipe_frag_t h = {
        .magic = magics[(op >> 2) & 3],
        .total = take16(r) % (max_msg + 32),
        .nfds = take(r) & 7,
    };
    h.offset = take16(r) % (h.total + 8);
    size_t len = take16(r) % 1200;
    uint8_t *d = malloc(sizeof h + len);
    CHECK(d);
    memcpy(d, &h, sizeof h);
    for (size_t i = 0; i < len; i++)
        d[sizeof h + i] = PAT(h.offset + i, h.total);
    size_t n = sizeof h + len;
    if (op & 0x80)                 /* cut short, header included */
        n = take(r) % (n + 1);
    struct iovec v = { .iov_base = d, .iov_len = n };
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int) * 2)]; } cm = { 0 };
    struct msghdr m = { .msg_iov = &v, .msg_iovlen = 1 };
    int nfds = (op >> 4) & 3, fds[2];
    if (nfds == 3)
        nfds = 0;
    for (int i = 0; i < nfds; i++)
        CHECK((fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0);
    if (nfds) {
        m.msg_control = cm.buf;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    (void)sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);   /* a full socket drops it */
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    free(d);
}

/* A message as a healthy sender writes it. */
static void send_real(iop_ppipe_t *end, reader_t *r, uint32_t max_msg)
{
    size_t len = take16(r) % (max_msg + 1);
    uint8_t *d = malloc(len ? len : 1);
    CHECK(d);
    for (size_t i = 0; i < len; i++)
        d[i] = PAT(i, len);
    ssize_t n = iop_ppipe_send(end, d, len, PAST);
    CHECK(n == (ssize_t)len || n == -ETIMEDOUT);
    free(d);
}

static void receive(iop_ppipe_t *end, unsigned op, reader_t *r, uint32_t max_msg)
{
    size_t caps[] = { 0, 1, 16, 100, max_msg, max_msg + 100, take16(r) % (max_msg + 1), 1000 };
    size_t cap = caps[(op >> 2) & 7];
    uint8_t *buf = malloc(cap ? cap : 1);  /* exact size: overruns show */
    CHECK(buf);
    int fds[4], room = (op & 0x20) ? 4 : (op & 0x40) ? 1 : 0, nfds = room;
    ssize_t n = iop_ppipe_recv_fds(end, cap ? buf : NULL, cap, fds, &nfds, PAST);
    if (n >= 0) {
        CHECK((size_t)n <= cap && (size_t)n <= max_msg && nfds >= 0 && nfds <= room);
        for (ssize_t k = 0; k < n; k++)
            CHECK(buf[k] == PAT((size_t)k, (size_t)n));
        for (int i = 0; i < nfds; i++)
            CHECK(close(fds[i]) == 0);
    } else {
        CHECK(n == -EMSGSIZE || n == -EPROTO || n == -ETIMEDOUT);
        if (n == -EMSGSIZE) {
            int need = -1;
            ssize_t total = iop_ppipe_peek(end, &need, PAST);
            CHECK(total >= 0 && (size_t)total <= max_msg && ((size_t)total > cap || need > room));
        }
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint32_t max_msgs[] = { 64, 300, 4096 };
    if (size < 1)
        return 0;
    int before = open_fds();
    uint32_t max_msg = max_msgs[data[0] % 3];
    iop_ppipe_opts_t o = { .size = sizeof o, .max_msg = max_msg };
    iop_ppipe_t *ends[2];
    CHECK(iop_ppipe_create(ends, &o) == 0);
    reader_t r = { data + 1, size - 1 };
    for (int ops = 0; r.n && ops < MAX_OPS; ops++) {
        unsigned op = take(&r);
        switch (op & 3) {
        case 0:
            forge(iop_ppipe_fd(ends[1]), op, &r, max_msg);
            break;
        case 1:
            send_real(ends[1], &r, max_msg);
            break;
        case 2:
            receive(ends[0], op, &r, max_msg);
            break;
        default: {
            int need = -1;
            ssize_t total = iop_ppipe_peek(ends[0], &need, PAST);
            CHECK(total == -EPROTO || total == -ETIMEDOUT ||
                  (total >= 0 && (size_t)total <= max_msg && need >= 0 && need <= IOP_PPIPE_MAX_FDS));
            break;
        }
        }
    }
    iop_ppipe_close(ends[0]);
    iop_ppipe_close(ends[1]);
    CHECK(open_fds() == before);
    return 0;
}
