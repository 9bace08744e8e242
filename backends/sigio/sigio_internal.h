/* Private to the sigio backend: its state, and the signal plumbing in
 * sigio_signal.c (which signal, blocking it, arming fds) that sigio.c builds on. */
#ifndef IOP_SIGIO_INTERNAL_H
#define IOP_SIGIO_INTERNAL_H

#include <poll.h>
#include <sys/signalfd.h>
#include <sys/types.h>
#include "ioplex/backend.h"

#define SIGIO_ENV "IOPLEX_SIGIO_SIGNAL"
#define SIGIO_DEFAULT_OFFSET 8        /* default signal: SIGRTMIN + 8 */
#define SIGIO_BATCH 64                /* signalfd_siginfo records read per read(2) */

typedef struct sigio_state sigio_state_t;

struct sigio_state {
    const iop_backend_host_t *host;
    int sig;                          /* the real-time signal every armed fd queues */
    pid_t tid;                        /* the loop thread: owner of every armed fd */
    int sfd;                          /* signalfd for sig + SIGIO, non-blocking */
    /* The check set, verified with one poll(2) per backend poll: [0] is sfd, then
     * fds that cannot signal (kept while watched) and fds believed ready
     * (dropped once a check finds them not ready). */
    struct pollfd *checks;
    uint8_t *polled;                  /* parallel to checks: 1 = kept while watched */
    int nchecks, checks_cap;
    int32_t *watched;                 /* every watched fd: for rescans and destroy */
    int nwatched, watched_cap;
    int cursor;                       /* check entry the next report starts at */
    int rescan;                       /* SIGIO seen: put every watched fd in checks */
    struct signalfd_siginfo *sigbuf;  /* SIGIO_BATCH records */
    uint8_t *armed;                   /* bitmap by fd number: armed by this loop */
    size_t armed_bytes;
    sigio_state_t *next_on_thread;    /* the thread's other sigio instances */
    sigio_state_t **thread_list;      /* head of that list (the owner thread's) */
};

/* Per-fd storage kept by the core (fd_state_size). Slots are index + 1, 0 = none;
 * an index is trusted only if the array entry there names the fd. */
typedef struct sigio_fd {
    int32_t watch_slot;
    int32_t check_slot;
    uint8_t mask;                     /* IOP_READ | IOP_WRITE asked for */
    uint8_t polled;                   /* fd has no O_ASYNC support */
    uint8_t write_kind;               /* SIGIO_WRITE_*, learnt on the first IOP_WRITE */
    uint8_t pad;
} sigio_fd_t;

#define SIGIO_WRITE_UNKNOWN 0
#define SIGIO_WRITE_SIGNALLED 1       /* the kernel signals when room comes back */
#define SIGIO_WRITE_POLLED 2          /* it may not: poll while IOP_WRITE is asked */

/* Picks st->sig (IOPLEX_SIGIO_SIGNAL or the default, skipping signals that another
 * sigio loop of this thread uses or that have a handler), blocks it and SIGIO in the
 * calling thread, opens st->sfd and links st into the thread's list. 0 or -errno
 * with a reason in why. */
int sigio_signals_open(sigio_state_t *st, char *why, size_t whylen);

/* Unlinks st from its thread's list and closes sfd. The signals stay blocked. */
void sigio_signals_close(sigio_state_t *st);

/* Makes every sigio instance of the calling thread rescan (one SIGIO was read by
 * one of them, but the overflow may have dropped any of their signals). */
void sigio_thread_rescan(void);

/* 1 if st was created on the calling thread. */
int sigio_on_own_thread(const sigio_state_t *st);

/* Arms fd: owner = the loop thread, signal = st->sig, O_ASYNC. *polled is set when
 * the file ignores O_ASYNC (eventfd, timerfd, regular files). 0 or -errno. */
int sigio_arm(sigio_state_t *st, int fd, int *polled);

/* SIGIO_WRITE_SIGNALLED if fd's kind signals every return of write room to a
 * writer that poll(2) found blocked: TCP/UDP sockets, AF_UNIX datagram and
 * seqpacket sockets, pipes and FIFOs. Otherwise (AF_UNIX stream, whose poll does not
 * arm the space signal; ttys, devices, other families) SIGIO_WRITE_POLLED. */
int sigio_write_kind(sigio_state_t *st, int fd);

/* Clears O_ASYNC if fd is still armed for st (same owner thread and signal). */
void sigio_disarm(sigio_state_t *st, int fd);

/* Disarms every fd this loop armed and has not disarmed since (watched or left
 * armed at an unwatch): at destroy, so that none keeps queueing signals nobody
 * reads. */
void sigio_disarm_all(sigio_state_t *st);

#endif
