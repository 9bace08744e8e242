/* The sigio backend's signal plumbing: which real-time signal a loop uses, blocking
 * it in the loop thread, the signalfd that reads it, and arming fds to queue it.
 *
 * No handler is ever installed: the loop's signal and SIGIO are blocked in the loop
 * thread only and read synchronously from a signalfd, so the user's handlers and
 * other threads' signal masks are untouched. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include "sigio_internal.h"

/* The live sigio instances created on this thread. Thread-local, not global: two
 * loops on one thread must not share a signal (a signalfd read by one would steal
 * the other's), and a SIGIO read by one concerns all of them. */
static __thread sigio_state_t *thread_loops;

/* The signals sigio loops of this thread have blocked (they stay blocked after
 * destroy), bit sig - 1: a blocked signal not among them is the user's. */
static __thread uint64_t blocked_by_loops;

static uint64_t signal_bit(int sig) { return (uint64_t)1 << (sig - 1); }

static int signal_taken(int sig)
{
    for (sigio_state_t *s = thread_loops; s; s = s->next_on_thread)
        if (s->sig == sig)
            return 1;
    return 0;
}

/* Parses "N", "RTMIN", "RTMIN+N", "RTMAX-N" (a "SIG" prefix allowed) into a
 * signal number in [SIGRTMIN, SIGRTMAX]; -1 if it is none of those. */
static int parse_signal(const char *s)
{
    if (strncmp(s, "SIG", 3) == 0)
        s += 3;
    int base = 0, sign = 1;
    if (strncmp(s, "RTMIN", 5) == 0) {
        base = SIGRTMIN;
        s += 5;
    } else if (strncmp(s, "RTMAX", 5) == 0) {
        base = SIGRTMAX;
        s += 5;
    }
    long n = 0;
    if (base && *s) {
        if (*s != '+' && *s != '-')
            return -1;
        sign = *s == '-' ? -1 : 1;
        s++;
    }
    if (!base || *s) {
        char *end;
        errno = 0;
        n = strtol(s, &end, 10);
        if (errno || end == s || *end || n < 0 || n > 1024)
            return -1;
    }
    long sig = base + sign * n;
    return sig >= SIGRTMIN && sig <= SIGRTMAX ? (int)sig : -1;
}

/* Is sig free for a loop of this thread: not used by another sigio loop of it,
 * without a handler (a handler means someone else owns it), and, if
 * spare_blocked, not blocked by the user (that is how a signal read with a
 * signalfd or sigwait looks, and the user's signalfd would read the loop's
 * reports too)? */
static int signal_free(int sig, const sigset_t *mask, int spare_blocked)
{
    struct sigaction sa;
    if (signal_taken(sig) || sigaction(sig, NULL, &sa) < 0)
        return 0;
    if (spare_blocked && sigismember(mask, sig) && !(blocked_by_loops & signal_bit(sig)))
        return 0;
    return !(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == SIG_DFL;
}

/* The first free signal at or above first, preferring one the user has not
 * blocked; a thread that blocks every signal (a program that waits for them in a
 * thread of its own) gets the first one without a handler. */
static int choose_signal(int first)
{
    sigset_t mask;
    if (pthread_sigmask(SIG_BLOCK, NULL, &mask) != 0)
        sigemptyset(&mask);
    for (int spare_blocked = 1; spare_blocked >= 0; spare_blocked--)
        for (int sig = first; sig <= SIGRTMAX; sig++)
            if (signal_free(sig, &mask, spare_blocked))
                return sig;
    return -1;
}

int sigio_signals_open(sigio_state_t *st, char *why, size_t whylen)
{
    int first = SIGRTMIN + SIGIO_DEFAULT_OFFSET;
    const char *env = getenv(SIGIO_ENV);
    if (env && *env) {
        first = parse_signal(env);
        if (first < 0) {
            snprintf(why, whylen, "sigio: %s=%s is not a signal in SIGRTMIN..SIGRTMAX (%d..%d)",
                     SIGIO_ENV, env, SIGRTMIN, SIGRTMAX);
            return -EINVAL;
        }
    }
    /* SIGIO is the kernel's "signal queue overflowed" report, blocked and read from
     * the signalfd: a handler of the application's would never run again. */
    struct sigaction io;
    if (sigaction(SIGIO, NULL, &io) == 0 && ((io.sa_flags & SA_SIGINFO) || (io.sa_handler != SIG_DFL &&
                                                                           io.sa_handler != SIG_IGN))) {
        snprintf(why, whylen, "sigio: the process has its own SIGIO handler, which this backend would "
                 "silence (it takes SIGIO as its overflow report): choose another backend");
        return -EBUSY;
    }
    st->sig = choose_signal(first);
    if (st->sig < 0) {
        snprintf(why, whylen, "sigio: no free real-time signal from %d to SIGRTMAX (%d) on this thread",
                 first, SIGRTMAX);
        return -EBUSY;
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, st->sig);
    sigaddset(&mask, SIGIO);
    /* Blocked before any fd is armed, so no signal can take its default action. */
    int r = pthread_sigmask(SIG_BLOCK, &mask, NULL);
    if (r != 0) {
        snprintf(why, whylen, "sigio: pthread_sigmask: %s", strerror(r));
        return -r;
    }
    blocked_by_loops |= signal_bit(st->sig);
    (*st->host->syscalls) += 2;
    st->sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (st->sfd < 0) {
        int err = errno;
        snprintf(why, whylen, "sigio: signalfd: %s", strerror(err));
        return -err;
    }
    st->tid = gettid();
    st->thread_list = &thread_loops;
    st->next_on_thread = thread_loops;
    thread_loops = st;
    return 0;
}

void sigio_signals_close(sigio_state_t *st)
{
    for (sigio_state_t **p = st->thread_list; p && *p; p = &(*p)->next_on_thread) {
        if (*p == st) {
            *p = st->next_on_thread;
            break;
        }
    }
    (*st->host->syscalls)++;
    close(st->sfd);
}

void sigio_thread_rescan(void)
{
    for (sigio_state_t *s = thread_loops; s; s = s->next_on_thread)
        s->rescan = 1;
}

int sigio_on_own_thread(const sigio_state_t *st)
{
    return st->thread_list == &thread_loops;
}

static int armed_bit(const sigio_state_t *st, int fd)
{
    return (size_t)fd / 8 < st->armed_bytes && (st->armed[fd / 8] & (1u << (fd % 8)));
}

static void armed_put(sigio_state_t *st, int fd, int on)
{
    size_t need = (size_t)fd / 8 + 1;
    if (need > st->armed_bytes) {
        if (!on)
            return;
        size_t n = st->armed_bytes ? st->armed_bytes : 64;
        while (n < need)
            n *= 2;
        uint8_t *m = st->host->realloc(st->armed, n);
        if (!m)
            return;   /* then destroy cannot disarm it; a stray signal still will */
        memset(m + st->armed_bytes, 0, n - st->armed_bytes);
        st->armed = m;
        st->armed_bytes = n;
    }
    if (on)
        st->armed[fd / 8] |= (uint8_t)(1u << (fd % 8));
    else
        st->armed[fd / 8] &= (uint8_t)~(1u << (fd % 8));
}

/* Owner and signal first, O_ASYNC last: the file starts signalling only once every
 * signal it sends reaches the right thread with si_fd filled in. */
int sigio_arm(sigio_state_t *st, int fd, int *polled)
{
    struct f_owner_ex owner = { .type = F_OWNER_TID, .pid = st->tid };
    (*st->host->syscalls) += 3;   /* the failure paths are rare: count them as done */
    if (fcntl(fd, F_SETOWN_EX, &owner) < 0 || fcntl(fd, F_SETSIG, st->sig) < 0)
        return -errno;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -errno;
    if ((fl & O_ASYNC) && !armed_bit(st, fd)) {
        /* Set through another number of the same file (a dup, a parent process):
         * the kernel names the fd that set O_ASYNC in every signal, so set it again
         * through this one, or its signals would name a number we do not watch. */
        (*st->host->syscalls)++;
        if (fcntl(fd, F_SETFL, fl & ~O_ASYNC) < 0)
            return -errno;
        fl &= ~O_ASYNC;
    }
    if (!(fl & O_ASYNC)) {
        /* A file without a fasync method accepts O_ASYNC and silently drops it, so
         * read the flags back to learn whether it will ever signal. */
        (*st->host->syscalls) += 2;
        if (fcntl(fd, F_SETFL, fl | O_ASYNC) < 0)
            return -errno;
        fl = fcntl(fd, F_GETFL);
        if (fl < 0)
            return -errno;
    }
    *polled = !(fl & O_ASYNC);
    if (!*polled)
        armed_put(st, fd, 1);
    return 0;
}

/* Socket wake-ups send the space signal only if the socket's "async no space" bit
 * is set, which a failed send sets and poll(2) sets for a socket it finds not
 * writable, except AF_UNIX stream sockets, whose poll leaves it clear: a writer
 * that only polled would never hear of the room coming back. */
int sigio_write_kind(sigio_state_t *st, int fd)
{
    int domain = 0, type = 0;
    socklen_t len = sizeof domain;
    (*st->host->syscalls)++;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0) {
        if (domain == AF_INET || domain == AF_INET6)
            return SIGIO_WRITE_SIGNALLED;
        if (domain != AF_UNIX)
            return SIGIO_WRITE_POLLED;
        len = sizeof type;
        (*st->host->syscalls)++;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type != SOCK_STREAM)
            return SIGIO_WRITE_SIGNALLED;
        return SIGIO_WRITE_POLLED;
    }
    if (errno != ENOTSOCK)
        return SIGIO_WRITE_POLLED;
    struct stat sb;
    (*st->host->syscalls)++;
    if (fstat(fd, &sb) == 0 && S_ISFIFO(sb.st_mode))
        return SIGIO_WRITE_SIGNALLED;   /* a pipe read wakes blocked writers */
    return SIGIO_WRITE_POLLED;
}

void sigio_disarm(sigio_state_t *st, int fd)
{
    armed_put(st, fd, 0);
    struct f_owner_ex owner;
    (*st->host->syscalls)++;
    if (fcntl(fd, F_GETOWN_EX, &owner) < 0 || owner.type != F_OWNER_TID || owner.pid != st->tid)
        return;   /* closed, or no longer ours: leave it alone */
    (*st->host->syscalls)++;
    if (fcntl(fd, F_GETSIG) != st->sig)
        return;
    (*st->host->syscalls)++;
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & O_ASYNC)) {
        (*st->host->syscalls)++;
        fcntl(fd, F_SETFL, fl & ~O_ASYNC);
    }
}

void sigio_disarm_all(sigio_state_t *st)
{
    for (size_t i = 0; i < st->armed_bytes; i++)
        for (int b = 0; st->armed[i] && b < 8; b++)
            if (st->armed[i] & (1u << b))
                sigio_disarm(st, (int)(i * 8 + (size_t)b));
}
