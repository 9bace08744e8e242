/* ioplex backend: select(2).
 *
 * The fd sets are our own arrays of unsigned long sized at run time, not fd_set, so
 * there is no FD_SETSIZE ceiling: the kernel reads nfds bits from whatever we pass.
 * We never use the FD_* macros (with _FORTIFY_SOURCE they abort at FD_SETSIZE).
 * The registered sets are copied into working sets before each call, since select
 * overwrites its arguments with the ready subset. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/select.h>
#include "ioplex/backend.h"

#define WORD_BITS (sizeof(unsigned long) * CHAR_BIT)
#define MIN_WORDS 16                    /* 1024 fds before the first resize */

typedef struct select_state {
    const iop_backend_host_t *host;
    unsigned long *sets;                /* one block: rd, wr, rd_ready, wr_ready */
    unsigned long *rd, *wr;             /* registered interest, a bit per fd */
    unsigned long *rd_ready, *wr_ready; /* working copies handed to select() */
    size_t words;                       /* length of each of the four arrays */
    int maxfd;                          /* highest registered fd, -1 if none */
    int cursor;                         /* fd the next scan starts at (fairness) */
} select_state_t;

/* Rounds up to whole microseconds so a sub-µs wait does not spin on 0; NULL waits
 * forever. */
static struct timeval *timeout_tv(int64_t ns, struct timeval *tv)
{
    if (ns < 0)
        return NULL;
    int64_t us = ns / 1000 + (ns % 1000 != 0);
    tv->tv_sec = (time_t)(us / 1000000);
    tv->tv_usec = (suseconds_t)(us % 1000000);
    return tv;
}

static int has_bit(const unsigned long *set, int fd)
{
    return (set[(size_t)fd / WORD_BITS] >> ((size_t)fd % WORD_BITS)) & 1u;
}

static void put_bit(unsigned long *set, int fd, int on)
{
    unsigned long bit = 1ul << ((size_t)fd % WORD_BITS);
    if (on)
        set[(size_t)fd / WORD_BITS] |= bit;
    else
        set[(size_t)fd / WORD_BITS] &= ~bit;
}

/* Grows the sets to hold fd, at least doubling so growth is rare. One block for all
 * four arrays means a failed allocation leaves the old sets untouched. */
static int grow_sets(select_state_t *st, int fd)
{
    size_t need = (size_t)fd / WORD_BITS + 1;
    if (need <= st->words)
        return 0;
    size_t words = st->words ? st->words : MIN_WORDS;
    while (words < need)
        words *= 2;
    unsigned long *sets = st->host->alloc(4 * words * sizeof *sets);
    if (!sets)
        return -ENOMEM;
    memset(sets, 0, 4 * words * sizeof *sets);
    if (st->sets) {
        memcpy(sets, st->rd, st->words * sizeof *sets);
        memcpy(sets + words, st->wr, st->words * sizeof *sets);
        st->host->free(st->sets);
    }
    st->sets = sets;
    st->rd = sets;
    st->wr = sets + words;
    st->rd_ready = sets + 2 * words;
    st->wr_ready = sets + 3 * words;
    st->words = words;
    return 0;
}

/* After maxfd lost its interest: the next lower fd with any, or -1. */
static int find_maxfd(const select_state_t *st, int below)
{
    for (size_t w = (size_t)below / WORD_BITS + 1; w-- > 0;) {
        unsigned long bits = st->rd[w] | st->wr[w];
        if (w == (size_t)below / WORD_BITS)
            bits &= (1ul << ((size_t)below % WORD_BITS)) - 1;
        if (bits)
            return (int)(w * WORD_BITS + (WORD_BITS - 1 - (size_t)__builtin_clzl(bits)));
    }
    return -1;
}

/* Adds an event for every fd in [lo, hi) set in a working set, up to max in total. */
static int scan_range(select_state_t *st, int lo, int hi, iop_event_t *events, int n, int max)
{
    for (size_t w = (size_t)lo / WORD_BITS; n < max && w * WORD_BITS < (size_t)hi; w++) {
        unsigned long bits = st->rd_ready[w] | st->wr_ready[w];
        if (w == (size_t)lo / WORD_BITS)
            bits &= ~0ul << ((size_t)lo % WORD_BITS);
        if ((w + 1) * WORD_BITS > (size_t)hi)
            bits &= (1ul << ((size_t)hi % WORD_BITS)) - 1;
        while (bits && n < max) {
            int fd = (int)(w * WORD_BITS + (size_t)__builtin_ctzl(bits));
            bits &= bits - 1;
            unsigned revents = (has_bit(st->rd_ready, fd) ? IOP_READ : 0u) |
                               (has_bit(st->wr_ready, fd) ? IOP_WRITE : 0u);
            events[n++] = (iop_event_t){ .fd = fd, .revents = revents };
            st->cursor = fd + 1;
        }
    }
    return n;
}

/* select() fails as a whole with EBADF when a registered fd was closed behind our
 * back. Report each such fd as an error (like POLLNVAL) so the core can drop it. */
static int report_closed(select_state_t *st, iop_event_t *events, int max)
{
    int n = 0;
    for (int fd = 0; fd <= st->maxfd && n < max; fd++) {
        unsigned mask = (has_bit(st->rd, fd) ? IOP_READ : 0u) | (has_bit(st->wr, fd) ? IOP_WRITE : 0u);
        if (!mask)
            continue;
        (*st->host->syscalls)++;
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
            /* Out of the sets now: the next select() must not fail on it again,
             * whatever the core does with the event (it unregisters the fd). */
            put_bit(st->rd, fd, 0);
            put_bit(st->wr, fd, 0);
            events[n++] = (iop_event_t){ .fd = fd, .revents = IOP_ERR | IOP_EV_NVAL | mask };
        }
    }
    return n ? n : -EBADF;
}

static int backend_probe(char *why, size_t whylen)
{
    (void)why;
    (void)whylen;
    return 0;   /* select(2) exists on every Linux */
}

static int backend_create(void **state, const iop_backend_host_t *host,
                         const iop_backend_config_t *cfg, char *why, size_t whylen)
{
    (void)cfg;
    select_state_t *st = host->alloc(sizeof *st);
    if (!st) {
        snprintf(why, whylen, "select: out of memory");
        return -ENOMEM;
    }
    *st = (select_state_t){ .host = host, .maxfd = -1 };
    if (grow_sets(st, 0) < 0) {
        host->free(st);
        snprintf(why, whylen, "select: out of memory");
        return -ENOMEM;
    }
    *state = st;
    return 0;
}

static void backend_destroy(void *state)
{
    select_state_t *st = state;
    st->host->free(st->sets);
    st->host->free(st);
}

static int backend_watch(void *state, int fd, unsigned old_mask, unsigned new_mask, void *fd_state)
{
    select_state_t *st = state;
    (void)old_mask;
    (void)fd_state;
    if (fd < 0)
        return -EBADF;
    if (new_mask && grow_sets(st, fd) < 0)
        return -ENOMEM;
    if ((size_t)fd / WORD_BITS >= st->words)
        return 0;   /* removing an fd that never fitted: nothing registered */
    put_bit(st->rd, fd, (new_mask & IOP_READ) != 0);
    put_bit(st->wr, fd, (new_mask & IOP_WRITE) != 0);
    if (new_mask && fd > st->maxfd)
        st->maxfd = fd;
    else if (!new_mask && fd == st->maxfd)
        st->maxfd = find_maxfd(st, fd);
    return 0;
}

static int backend_poll(void *state, iop_event_t *events, int max, int64_t timeout_ns)
{
    select_state_t *st = state;
    size_t used = st->maxfd < 0 ? 0 : (size_t)st->maxfd / WORD_BITS + 1;
    memcpy(st->rd_ready, st->rd, used * sizeof *st->rd);
    memcpy(st->wr_ready, st->wr, used * sizeof *st->wr);

    struct timeval tv;
    (*st->host->syscalls)++;
    int ready = select(st->maxfd + 1, (fd_set *)(void *)st->rd_ready,
                       (fd_set *)(void *)st->wr_ready, NULL, timeout_tv(timeout_ns, &tv));
    if (ready < 0)
        return errno == EINTR ? 0 : errno == EBADF ? report_closed(st, events, max) : -errno;
    if (ready == 0 || max <= 0)
        return 0;

    /* Start where the last full batch stopped, so low fds cannot starve high ones. */
    int cursor = st->cursor <= st->maxfd ? st->cursor : 0;
    int n = scan_range(st, cursor, st->maxfd + 1, events, 0, max);
    return scan_range(st, 0, cursor, events, n, max);
}

IOP_BACKEND_EXPORT const iop_backend_desc_t iop_backend_descriptor = {
    .abi_version = IOP_BACKEND_ABI_VERSION,
    .desc_size = sizeof(iop_backend_desc_t),
    .name = "select",
    .summary = "select(2) with run-time sized fd sets (no FD_SETSIZE limit)",
    .model = IOP_MODEL_READINESS,
    .caps = IOP_CAP_UNLIMITED_FDS,
    .fd_state_size = 0,
    .probe = backend_probe,
    .create = backend_create,
    .destroy = backend_destroy,
    .abandon = backend_destroy,   /* memory only */
    .watch = backend_watch,
    .submit = NULL,
    .poll = backend_poll,
    .wake = NULL,
};
