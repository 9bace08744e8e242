/* iop-echo-load: closed-loop load for any TCP echo server.
 *
 * Each connection sends one message, waits for all of it to come back, checks every
 * byte, records the round trip and sends the next. The bytes of a message come from
 * a generator seeded by (connection, sequence number), so an echo that is stale,
 * from another connection, short, reordered or altered shows up as a mismatch.
 * Plain level-triggered epoll and nonblocking sockets, one thread, no ioplex: the
 * load side must be the same whatever server it measures.
 *
 * Timeline: connect all (bounded), warm up, measure, stop. Only messages completed
 * inside the measured window count for messages/s and latency; errors count always.
 *
 * With --rate R the load is paced instead: still one message in flight per
 * connection, but each connection sends on its own schedule, R / connections
 * messages/s, staggered so that the sends of all of them are spread evenly. A
 * connection's next send is max(its previous slot + interval, the echo's arrival):
 * a slow echo makes the schedule slip (and is counted) rather than cause a burst
 * of catching up. Waiting connections sit in a min-heap by slot; a timerfd wakes the
 * loop at the earliest one, so pacing never spins the load's CPU. */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "bench_common.h"
#include "hostport.h"
#include "latency_hist.h"

#define PROG "iop-echo-load"
#define MAX_EVENTS 512
#define SCRATCH_SIZE (64 * 1024)
#define CONNECT_LIMIT_S 5         /* --timeout's default */
#define MAX_REPORTED_ERRORS 10

enum { EXIT_USAGE = 2 };

typedef struct conn {
    int fd;                 /* -1 once dropped */
    uint32_t id;
    int out_armed;          /* EPOLLOUT in the interest set */
    uint64_t seq;           /* number of the message in flight */
    size_t sent, got;       /* bytes of it sent / echoed and checked */
    uint64_t start_ns;      /* when its first byte was sent */
    unsigned char *tx;      /* the message in flight */
    uint64_t slot_ns;       /* --rate: when its current / next message is due */
    int waiting;            /* --rate: echo complete, next message not yet due */
} conn_t;

typedef struct load {
    int ep;
    size_t size;
    conn_t *conns;
    uint32_t nconns, live;
    unsigned char *scratch;
    uint64_t warm_end_ns, end_ns;
    uint64_t stop_ns;       /* when the run ended: end_ns, or earlier if all dropped */
    uint64_t measured, warm_msgs;
    uint64_t errors;
    latency_hist_t hist;
    /* --rate only (interval_ns 0: closed loop, as fast as the echoes come) */
    uint64_t rate;          /* offered messages/s, all connections together */
    uint64_t interval_ns;   /* between two slots of one connection */
    conn_t **heap;          /* waiting connections, earliest slot first */
    uint32_t nheap;
    int tfd;                /* timerfd for the earliest slot */
    uint64_t armed_ns;      /* what tfd is set to; 0 when never set */
    uint64_t late;          /* measured-window sends whose slot slipped */
    latency_hist_t lag;     /* measured-window sends: how long after their slot */
} load_t;

/* ---- message contents -------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void fill_message(unsigned char *buf, size_t size, uint32_t id, uint64_t seq)
{
    uint64_t state = ((uint64_t)id << 40) ^ seq;
    size_t i = 0;
    for (; i + 8 <= size; i += 8) {
        uint64_t w = splitmix64(&state);
        memcpy(buf + i, &w, 8);
    }
    if (i < size) {
        uint64_t w = splitmix64(&state);
        memcpy(buf + i, &w, size - i);
    }
}

/* ---- connection life --------------------------------------------------------- */

static void report_error(load_t *l, const conn_t *c, const char *what)
{
    l->errors++;
    if (l->errors <= MAX_REPORTED_ERRORS)
        fprintf(stderr, PROG ": connection %u, message %llu, byte %zu: %s\n", c->id,
                (unsigned long long)c->seq, c->got, what);
    else if (l->errors == MAX_REPORTED_ERRORS + 1)
        fprintf(stderr, PROG ": further errors are counted, not shown\n");
}

/* A connection whose stream can no longer be trusted is dropped for good. */
static void drop(load_t *l, conn_t *c, const char *why)
{
    report_error(l, c, why);
    close(c->fd);
    c->fd = -1;
    l->live--;
}

static int set_out_interest(load_t *l, conn_t *c, int want)
{
    if (c->out_armed == want)
        return 0;
    struct epoll_event ev = { .events = EPOLLIN | (want ? EPOLLOUT : 0u), .data.ptr = c };
    if (epoll_ctl(l->ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        return -errno;
    c->out_armed = want;
    return 0;
}

/* Sends what is left of the message; arms EPOLLOUT only when the socket is full. */
static void send_rest(load_t *l, conn_t *c)
{
    while (c->sent < l->size) {
        ssize_t n = send(c->fd, c->tx + c->sent, l->size - c->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            drop(l, c, strerror(errno));
            return;
        }
        c->sent += (size_t)n;
    }
    if (set_out_interest(l, c, c->sent < l->size) < 0)
        drop(l, c, "epoll_ctl failed");
}

static void start_message(load_t *l, conn_t *c, uint64_t now)
{
    c->seq++;
    c->sent = c->got = 0;
    c->start_ns = now;
    fill_message(c->tx, l->size, c->id, c->seq);
    send_rest(l, c);
}

/* ---- pacing (--rate) ---------------------------------------------------------- */

static void heap_push(load_t *l, conn_t *c)
{
    uint32_t i = l->nheap++;
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (l->heap[parent]->slot_ns <= c->slot_ns)
            break;
        l->heap[i] = l->heap[parent];
        i = parent;
    }
    l->heap[i] = c;
}

static conn_t *heap_pop(load_t *l)
{
    conn_t *top = l->heap[0], *last = l->heap[--l->nheap];
    uint32_t i = 0;
    for (;;) {
        uint32_t child = 2 * i + 1;
        if (child >= l->nheap)
            break;
        if (child + 1 < l->nheap && l->heap[child + 1]->slot_ns < l->heap[child]->slot_ns)
            child++;
        if (last->slot_ns <= l->heap[child]->slot_ns)
            break;
        l->heap[i] = l->heap[child];
        i = child;
    }
    if (l->nheap > 0)
        l->heap[i] = last;
    return top;
}

/* Sends now if the slot has come, else parks the connection until it does. */
static void send_at_slot(load_t *l, conn_t *c, uint64_t now)
{
    if (c->slot_ns <= now) {
        c->waiting = 0;
        if (now >= l->warm_end_ns && now < l->end_ns)
            latency_hist_add(&l->lag, now - c->slot_ns);
        start_message(l, c, now);
    } else {
        c->waiting = 1;
        heap_push(l, c);
    }
}

/* Starts every connection whose slot has come (dropped ones leave the heap here). */
static void send_due(load_t *l, uint64_t now)
{
    while (l->nheap > 0 && l->heap[0]->slot_ns <= now) {
        conn_t *c = heap_pop(l);
        if (c->fd >= 0)
            send_at_slot(l, c, now);
    }
}

/* Points the timerfd at the earliest slot; a stale earlier setting only costs one
 * spurious wakeup. 0, or -1 after saying why. */
static int arm_timer(load_t *l)
{
    if (l->nheap == 0 || l->heap[0]->slot_ns == l->armed_ns)
        return 0;
    uint64_t at = l->heap[0]->slot_ns;
    struct itimerspec its = { .it_value = { .tv_sec = (time_t)(at / 1000000000u),
                                            .tv_nsec = (long)(at % 1000000000u) } };
    if (timerfd_settime(l->tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0) {
        fprintf(stderr, PROG ": timerfd_settime: %s\n", strerror(errno));
        return -1;
    }
    l->armed_ns = at;
    return 0;
}

static void complete_message(load_t *l, conn_t *c)
{
    uint64_t now = bench_now_ns();
    int measured = now >= l->warm_end_ns && now < l->end_ns;
    if (measured) {
        latency_hist_add(&l->hist, now - c->start_ns);
        l->measured++;
    } else if (now < l->warm_end_ns) {
        l->warm_msgs++;
    }
    if (l->interval_ns == 0) {
        start_message(l, c, now);
        return;
    }
    /* next slot: one interval on, or now if the echo came after that (a slip) */
    c->slot_ns += l->interval_ns;
    if (c->slot_ns < now) {
        c->slot_ns = now;
        l->late += measured;
    }
    send_at_slot(l, c, now);
}

/* A paced connection between messages has nothing in flight: anything readable is
 * bytes never sent, an EOF or an error, and each ends the connection. */
static void receive_while_waiting(load_t *l, conn_t *c)
{
    ssize_t n = read(c->fd, l->scratch, 1);
    if (n > 0)
        drop(l, c, "received bytes that were never sent");
    else if (n == 0)
        drop(l, c, "the server closed the connection");
    else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        drop(l, c, strerror(errno));
}

/* Reads the echo in chunks and checks each against what was sent. Stops at the end
 * of the message: what follows belongs to the next one, which is not sent yet. */
static void receive(load_t *l, conn_t *c)
{
    if (c->waiting) {
        receive_while_waiting(l, c);
        return;
    }
    while (c->got < l->size) {
        size_t want = l->size - c->got;
        if (want > SCRATCH_SIZE)
            want = SCRATCH_SIZE;
        ssize_t n = read(c->fd, l->scratch, want);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EINTR)
                continue;
            drop(l, c, strerror(errno));
            return;
        }
        if (n == 0) {
            drop(l, c, "the server closed the connection");
            return;
        }
        if (c->got + (size_t)n > c->sent) {
            drop(l, c, "received bytes that were never sent");
            return;
        }
        if (memcmp(l->scratch, c->tx + c->got, (size_t)n) != 0) {
            size_t i = 0;
            while (l->scratch[i] == c->tx[c->got + i])
                i++;
            c->got += i;
            drop(l, c, "echoed data differs from what was sent");
            return;
        }
        c->got += (size_t)n;
        if ((size_t)n < want)
            return;   /* drained for now; level-triggered epoll calls again */
    }
    complete_message(l, c);
}

/* ---- setup ------------------------------------------------------------------- */

static int raise_fd_limit(uint32_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -errno;
    if (rl.rlim_cur >= need)
        return 0;
    if (rl.rlim_max < need)
        return -EMFILE;
    rl.rlim_cur = need;
    return setrlimit(RLIMIT_NOFILE, &rl) < 0 ? -errno : 0;
}

/* Connects connection 0 to the first of the target's addresses that takes it, and
 * copies that address into *ss for the others: a name can resolve to ::1 before
 * 127.0.0.1 with only one of them listening. All addresses together get until
 * deadline (one that does not answer leaves the next only what is left). 0, or -1
 * after saying why. */
static int connect_first(load_t *l, const char *target, const struct addrinfo *ai,
                         struct sockaddr_storage *ss, socklen_t *sslen, uint64_t deadline)
{
    int err = EADDRNOTAVAIL;
    /* A signal that interrupts the wait was sent to stop the run (SIGINT's default
     * ends the process before that; a handler would mean it): it is not this
     * address's failure, and the next one is not tried. */
    for (; ai && err != ETIMEDOUT && err != EINTR; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
            err = errno;
        } else {
            struct pollfd p = { .fd = fd, .events = POLLOUT };
            uint64_t now = bench_now_ns();
            int n = now >= deadline ? 0 : poll(&p, 1, (int)((deadline - now + 999999) / 1000000));
            socklen_t len = sizeof err;
            if (n < 0)
                err = errno;
            else if (n == 0)
                err = ETIMEDOUT;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                err = errno;
        }
        if (err == 0) {
            l->conns[0].fd = fd;
            memcpy(ss, ai->ai_addr, ai->ai_addrlen);
            *sslen = ai->ai_addrlen;
            return 0;
        }
        close(fd);
    }
    if (err == ETIMEDOUT)
        fprintf(stderr, PROG ": connection 0: connect to %s: no answer within --timeout\n", target);
    else if (err == EINTR)
        fprintf(stderr, PROG ": connection 0: connect to %s: interrupted by a signal\n", target);
    else
        fprintf(stderr, PROG ": connection 0: connect to %s: %s\n", target, strerror(err));
    return -1;
}

/* Opens every connection but the first (connect_first's) with a nonblocking
 * connect and waits until all are established, up to deadline. 0, or -1 after
 * saying why. */
static int connect_all(load_t *l, const struct sockaddr_storage *ss, socklen_t sslen, uint64_t deadline)
{
    uint32_t pending = 0;
    for (uint32_t i = 0; i < l->nconns; i++) {
        conn_t *c = &l->conns[i];
        if (c->fd >= 0) {          /* connection 0: already established */
            struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
            if (epoll_ctl(l->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
                fprintf(stderr, PROG ": epoll_ctl: %s\n", strerror(errno));
                return -1;
            }
            continue;
        }
        c->fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0) {
            fprintf(stderr, PROG ": socket: %s\n", strerror(errno));
            return -1;
        }
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(c->fd, (const struct sockaddr *)ss, sslen) < 0 && errno != EINPROGRESS) {
            fprintf(stderr, PROG ": connection %u: connect: %s\n", i, strerror(errno));
            return -1;
        }
        struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };
        if (epoll_ctl(l->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
            fprintf(stderr, PROG ": epoll_ctl: %s\n", strerror(errno));
            return -1;
        }
        c->out_armed = 1;
        pending++;
    }

    struct epoll_event evs[MAX_EVENTS];
    while (pending > 0) {
        uint64_t now = bench_now_ns();
        if (now >= deadline) {
            fprintf(stderr, PROG ": %u of %u connections not established within --timeout\n",
                    pending, l->nconns);
            return -1;
        }
        int n = epoll_wait(l->ep, evs, MAX_EVENTS, (int)((deadline - now) / 1000000 + 1));
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, PROG ": epoll_wait: %s\n", strerror(errno));
            return -1;
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            int err = 0;
            socklen_t len = sizeof err;
            if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                err = errno;
            if (err) {
                struct sockaddr_storage local;
                socklen_t llen = sizeof local;
                char where[128] = "?";
                if (getsockname(c->fd, (struct sockaddr *)&local, &llen) == 0)
                    iop_app_format_addr((struct sockaddr *)&local, llen, where, sizeof where);
                fprintf(stderr, PROG ": connection %u (from %s), %u of %u still connecting: "
                        "connect: %s\n", c->id, where, pending, l->nconns, strerror(err));
                return -1;
            }
            struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
            epoll_ctl(l->ep, EPOLL_CTL_MOD, c->fd, &ev);   /* stops this fd reporting */
            c->out_armed = 0;
            pending--;
        }
    }
    l->live = l->nconns;
    return 0;
}

/* ---- the run ----------------------------------------------------------------- */

/* --rate: the timerfd in the epoll set (data.ptr NULL marks it), and the heap. */
static int setup_pacing(load_t *l)
{
    l->interval_ns = (uint64_t)((double)l->nconns * 1e9 / (double)l->rate + 0.5);
    if (l->interval_ns == 0)
        l->interval_ns = 1;
    l->heap = calloc(l->nconns, sizeof *l->heap);
    l->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);   /* bench_now_ns's clock */
    if (!l->heap || l->tfd < 0) {
        fprintf(stderr, PROG ": cannot set up pacing: %s\n", l->heap ? strerror(errno) : "out of memory");
        return -1;
    }
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
    if (epoll_ctl(l->ep, EPOLL_CTL_ADD, l->tfd, &ev) < 0) {
        fprintf(stderr, PROG ": epoll_ctl: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

static int run(load_t *l, uint64_t warmup_ns, uint64_t duration_ns)
{
    if (l->rate && setup_pacing(l) < 0)
        return -1;
    uint64_t now = bench_now_ns();
    l->warm_end_ns = now + warmup_ns;
    l->end_ns = l->warm_end_ns + duration_ns;
    for (uint32_t i = 0; i < l->nconns; i++) {
        conn_t *c = &l->conns[i];
        if (l->interval_ns == 0) {
            start_message(l, c, now);
            continue;
        }
        /* staggered first slots: the sends of all connections spread evenly */
        c->slot_ns = now + (uint64_t)((double)i * 1e9 / (double)l->rate);
        send_at_slot(l, c, now);
    }

    struct epoll_event evs[MAX_EVENTS];
    while (l->live > 0) {
        now = bench_now_ns();
        if (now >= l->end_ns)
            break;
        if (l->interval_ns) {
            send_due(l, now);
            if (arm_timer(l) < 0)
                return -1;
        }
        int n = epoll_wait(l->ep, evs, MAX_EVENTS, (int)((l->end_ns - now) / 1000000 + 1));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, PROG ": epoll_wait: %s\n", strerror(errno));
            return -1;
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (!c) {   /* the pacing timer: clear it, send_due does the rest */
                uint64_t ticks;
                if (read(l->tfd, &ticks, sizeof ticks) < 0 && errno != EAGAIN)
                    fprintf(stderr, PROG ": timerfd read: %s\n", strerror(errno));
                continue;
            }
            if (c->fd >= 0 && (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                receive(l, c);
            if (c->fd >= 0 && (evs[i].events & EPOLLOUT))
                send_rest(l, c);
        }
    }
    now = bench_now_ns();
    l->stop_ns = now < l->end_ns ? now : l->end_ns;
    if (l->live == 0)
        fprintf(stderr, PROG ": every connection was dropped; stopping early\n");
    return 0;
}

static void print_results(const load_t *l, const char *target, double warmup_s, int json)
{
    /* the window actually measured: shorter than asked if every connection dropped */
    double duration_s = l->stop_ns > l->warm_end_ns ? (double)(l->stop_ns - l->warm_end_ns) / 1e9 : 0.0;
    double mps = duration_s > 0 ? (double)l->measured / duration_s : 0.0;
    double p50 = (double)latency_hist_quantile(&l->hist, 0.50) / 1000.0;
    double p99 = (double)latency_hist_quantile(&l->hist, 0.99) / 1000.0;
    printf("%s: %u conns x %zu B, %.1f s: %.0f msgs/s, p50 %.1f us, p99 %.1f us, "
           "errors %llu, messages %llu", target, l->nconns, l->size, duration_s, mps,
           p50, p99, (unsigned long long)l->errors, (unsigned long long)l->measured);
    double lag50 = (double)latency_hist_quantile(&l->lag, 0.50) / 1000.0;
    double lag99 = (double)latency_hist_quantile(&l->lag, 0.99) / 1000.0;
    if (l->rate)
        printf("; offered %llu msgs/s, achieved %.1f%% of it, late sends %llu, "
               "send lag p50 %.1f us, p99 %.1f us", (unsigned long long)l->rate,
               100.0 * mps / (double)l->rate, (unsigned long long)l->late, lag50, lag99);
    printf("\n");
    if (json) {
        printf("{\"target\":\"%s\",\"connections\":%u,\"size\":%zu,\"warmup_s\":%.3f,"
               "\"duration_s\":%.3f,\"msgs_per_s\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f,"
               "\"errors\":%llu,\"messages\":%llu,\"messages_incl_warmup\":%llu",
               target, l->nconns, l->size, warmup_s, duration_s, mps, p50, p99,
               (unsigned long long)l->errors, (unsigned long long)l->measured,
               (unsigned long long)(l->measured + l->warm_msgs));
        if (l->rate)
            printf(",\"rate\":%llu,\"achieved_msgs_per_s\":%.1f,\"late_sends\":%llu,"
                   "\"send_lag_p50_us\":%.1f,\"send_lag_p99_us\":%.1f",
                   (unsigned long long)l->rate, mps, (unsigned long long)l->late, lag50, lag99);
        printf("}\n");
    }
    fflush(stdout);
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: " PROG " [options] HOST:PORT\n"
        "\n"
        "Closed-loop load for a TCP echo server: every connection sends one message,\n"
        "waits for the whole echo, checks every byte, and sends the next. Reports\n"
        "messages/s, p50 and p99 round-trip latency, errors and the message count of\n"
        "the measured window. Stops by itself after warmup + duration.\n"
        "\n"
        "With --rate R the load is paced: R messages/s in all, each connection on its\n"
        "own schedule of R / connections messages/s (still one message in flight);\n"
        "a connection whose echo comes after its next slot sends at once and its\n"
        "schedule slips (a late send). Reports the achieved rate and late sends.\n"
        "\n"
        "  --connections N   concurrent connections (default 100)\n"
        "  --size BYTES      message size (default 64)\n"
        "  --duration S      measured seconds, fractions allowed (default 10)\n"
        "  --warmup S        seconds run before measuring (default 2)\n"
        "  --rate R          offered load: R messages/s in all (default: closed\n"
        "                    loop, each echo answered by the next message at once)\n"
        "  --timeout S       limit on opening every connection, all of HOST's\n"
        "                    addresses tried together, fractions allowed (default 5)\n"
        "  --cpu N           pin this process to CPU N\n"
        "  --json            also print the results as one JSON line\n"
        "  --help            this text\n"
        "\n"
        "Exit status: 0 when every echo matched, 1 on an error or mismatch (or no\n"
        "message completed), 2 on a usage error. SIGINT / SIGTERM end it at once,\n"
        "without results, even where it was started with them ignored.\n");
}

int main(int argc, char **argv)
{
    uint64_t nconns = 100, size = 64, cpu = 0, rate = 0;
    double duration_s = 10, warmup_s = 2, timeout_s = CONNECT_LIMIT_S;
    int json = 0, pin = 0;
    static const struct option longopts[] = {
        { "connections", required_argument, NULL, 'c' },
        { "size", required_argument, NULL, 's' },
        { "duration", required_argument, NULL, 'd' },
        { "warmup", required_argument, NULL, 'w' },
        { "cpu", required_argument, NULL, 'C' },
        { "rate", required_argument, NULL, 'r' },
        { "timeout", required_argument, NULL, 't' },
        { "json", no_argument, NULL, 'j' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch, bad = 0;
    opterr = 0;                  /* its messages name the program by path, then ours the usage */
    while ((ch = getopt_long(argc, argv, ":c:s:d:w:C:r:t:jh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c': bad |= iop_app_parse_u64(optarg, 1, 1000000, &nconns) < 0; break;
        case 's': bad |= iop_app_parse_u64(optarg, 1, 64u << 20, &size) < 0; break;
        case 'd': bad |= iop_app_parse_seconds(optarg, 86400, &duration_s) < 0 || duration_s <= 0; break;
        case 'w': bad |= iop_app_parse_seconds(optarg, 86400, &warmup_s) < 0; break;
        case 'C': bad |= iop_app_parse_u64(optarg, 0, CPU_SETSIZE - 1, &cpu) < 0; pin = 1; break;
        case 'r': bad |= iop_app_parse_u64(optarg, 1, 1000000000, &rate) < 0; break;
        case 't': bad |= iop_app_parse_seconds(optarg, 3600, &timeout_s) < 0 || timeout_s < 0.001; break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); return 0;
        default:   /* ':' (no value) or '?' (unknown) */
            return iop_app_getopt_fail(PROG, ch, argv);
        }
        if (bad) {
            fprintf(stderr, PROG ": bad value '%s' for %s (try --help)\n", optarg,
                    iop_app_opt_name(longopts, ch));
            return EXIT_USAGE;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, PROG ": expected one HOST:PORT (try --help)\n");
        return EXIT_USAGE;
    }
    const char *target = argv[optind];
    struct addrinfo *addrs;
    char err[512];
    if (iop_app_resolve(target, 0, &addrs, err, sizeof err) < 0) {
        fprintf(stderr, PROG ": %s\n", err);
        return EXIT_USAGE;
    }
    int r = pin ? bench_pin_cpu((int)cpu) : 0;
    if (r < 0) {
        fprintf(stderr, PROG ": cannot pin to CPU %llu: %s\n", (unsigned long long)cpu,
                strerror(-r));
        return EXIT_FAILURE;
    }
    r = raise_fd_limit((uint32_t)nconns + 16);
    if (r < 0) {
        fprintf(stderr, PROG ": cannot open %llu connections: %s\n",
                (unsigned long long)nconns, strerror(-r));
        return EXIT_FAILURE;
    }
    signal(SIGPIPE, SIG_IGN);
    /* SIGINT / SIGTERM end the run, as they end the other programs here: a shell
     * starts a background job with SIGINT ignored, which would leave it running
     * through the connect wait and the whole duration. */
    struct sigaction dfl = { .sa_handler = SIG_DFL };
    sigaction(SIGINT, &dfl, NULL);
    sigaction(SIGTERM, &dfl, NULL);

    static load_t l;   /* the histogram is large: keep it off the stack */
    l.size = size;
    l.nconns = (uint32_t)nconns;
    l.rate = rate;
    l.tfd = -1;
    l.ep = epoll_create1(EPOLL_CLOEXEC);
    l.conns = calloc(nconns, sizeof *l.conns);
    l.scratch = malloc(SCRATCH_SIZE);
    unsigned char *tx = malloc(nconns * size);
    if (l.ep < 0 || !l.conns || !l.scratch || !tx) {
        fprintf(stderr, PROG ": out of memory or fds\n");
        return EXIT_FAILURE;
    }
    for (uint32_t i = 0; i < l.nconns; i++) {
        l.conns[i].fd = -1;
        l.conns[i].id = i;
        l.conns[i].tx = tx + (size_t)i * size;
    }

    int status = EXIT_FAILURE;
    struct sockaddr_storage ss;
    socklen_t sslen;
    uint64_t connect_by = bench_now_ns() + (uint64_t)(timeout_s * 1e9);
    if (connect_first(&l, target, addrs, &ss, &sslen, connect_by) == 0 &&
        connect_all(&l, &ss, sslen, connect_by) == 0 &&
        run(&l, (uint64_t)(warmup_s * 1e9), (uint64_t)(duration_s * 1e9)) == 0) {
        print_results(&l, target, warmup_s, json);
        if (l.measured == 0)
            fprintf(stderr, PROG ": no message completed in the measured window\n");
        status = (l.errors == 0 && l.measured > 0) ? EXIT_SUCCESS : EXIT_FAILURE;
    }
    for (uint32_t i = 0; i < l.nconns; i++)
        if (l.conns[i].fd >= 0)
            close(l.conns[i].fd);
    if (l.tfd >= 0)
        close(l.tfd);
    close(l.ep);
    free(l.heap);
    free(tx);
    free(l.scratch);
    free(l.conns);
    freeaddrinfo(addrs);
    return status;
}
