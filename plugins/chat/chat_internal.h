/* The chat service's shared pieces (see README.md for the protocol and the design).
 *
 * Shared by every worker process (made by create, before the fork):
 *   - the broadcast log (chat_log.c): a ring of fixed-size records, each one finished
 *     line ("<ann> hi\n", "* ann joined\n"), appended under a robust process lock
 *     with a global sequence number; one reader slot (an eventfd) per reading worker;
 *   - the nick table (chat_names.c): a shared dict nick -> owner (reader slot, its
 *     generation, pid), so that "taken" and /who see every worker.
 * Private to each worker (made by worker_start):
 *   - chat_worker_t: its reader coroutine (chat_reader.c) that follows the log and
 *     copies each record into the outbox of every local client;
 *   - one chat_client_t per connection (chat_conn.c, chat_lines.c): a controller
 *     (the serve coroutine), a receiver and a sender coroutine, a bounded outbox. */
#ifndef IOPLEX_CHAT_INTERNAL_H
#define IOPLEX_CHAT_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <ioplex.h>
#include <ioplex/plock.h>
#include <ioplex/shdict.h>

#define CHAT_NICK_MAX 32
#define CHAT_MIN_LINE 64        /* max_line's floor: "/nick " and the longest nick fit */
#define CHAT_MS 1000000ull
#define CHAT_SLICE_NS (100 * CHAT_MS)      /* longest a reader sleeps before it looks again */
#define CHAT_CLOSE_GRACE_NS (2000 * CHAT_MS) /* a leaving client's last lines may take this long */
#define CHAT_CHECK_NS (1000 * CHAT_MS)     /* how often a reader looks for dead workers */
#define CHAT_THROTTLE_NS (500 * CHAT_MS)   /* longest a line waits for a slow reader */

/* ---- the broadcast log (shared memory) ------------------------------------------------ */

typedef struct chat_slot {         /* one reading worker */
    _Atomic int32_t pid;           /* its process, 0 = free */
    _Atomic uint32_t gen;          /* claims of this slot so far */
    _Atomic uint32_t sleeping;     /* its reader waits on efd: appenders must write it */
    int efd;                       /* wake-ups (a counter, one reader per slot) */
    _Atomic uint64_t pos;          /* the next record its reader delivers (flow control) */
} chat_slot_t;

typedef struct chat_rec {
    _Atomic uint64_t stamp;        /* seq + 1 once complete, 0 while being (re)written */
    _Atomic uint32_t len;
    uint32_t pad;
    char line[];                   /* the line as sent to clients, '\n' included */
} chat_rec_t;

typedef struct chat_log {
    iop_plock_t lock;              /* appends and nick changes */
    _Atomic uint64_t head;         /* the next sequence number */
    uint32_t nrec;                 /* records in the ring (a power of two) */
    uint32_t rec_size;             /* bytes per record */
    uint32_t line_cap;             /* longest line a record holds */
    uint32_t nslots;
    size_t rec_off;                /* where record 0 starts */
    size_t bytes;                  /* the whole mapping */
    chat_slot_t slots[];
} chat_log_t;

int chat_log_create(chat_log_t **out, uint32_t nrec, uint32_t line_cap, uint32_t nslots,
                    char *err, size_t errlen);
void chat_log_destroy(chat_log_t *log);             /* in the process that made it */
/* Takes the lock (0, or -errno such as -ECANCELED). A dead holder is no concern:
 * the log is consistent at every instruction (a record counts once head says so). */
int chat_log_lock(chat_log_t *log);
/* With the lock held: appends line (len <= line_cap), returns its sequence number. */
uint64_t chat_log_put(chat_log_t *log, const char *line, size_t len);
/* Unlocks, then wakes the sleeping readers if something was put. */
void chat_log_unlock(chat_log_t *log, int put);
uint64_t chat_log_head(const chat_log_t *log);
/* Copies record seq into buf (line_cap bytes): its length, or -1 once it has been
 * overwritten (the reader was lapped). */
ssize_t chat_log_read(const chat_log_t *log, uint64_t seq, char *buf);
/* Claims a free slot (or one whose process died) for this process: its index, or
 * -EBUSY. *gen gets the slot's new generation. */
int chat_log_claim_slot(chat_log_t *log, uint32_t *gen);
void chat_log_release_slot(chat_log_t *log, int slot);
/* Parks the reader of slot until something past pos is appended or deadline. */
int chat_log_wait(chat_log_t *log, int slot, uint64_t pos, uint64_t deadline);
int chat_pid_alive(pid_t pid);

/* ---- the service state ------------------------------------------------------------------ */

typedef struct chat_worker chat_worker_t;

typedef struct chat_state {
    uint32_t max_line;             /* longest line a client may send, without its end */
    size_t max_backlog;            /* unsent bytes a client may have before it is dropped */
    uint32_t ring;                 /* records in the log */
    uint32_t max_nicks;
    int sndbuf;                    /* SO_SNDBUF of each connection, 0 = the kernel's */
    int nworkers;
    chat_log_t *log;
    iop_shdict_t *names;
    chat_worker_t **workers;       /* [nworkers]; each process fills in its own */
} chat_state_t;

/* ---- nicks (chat_names.c) -------------------------------------------------------------------- */

typedef struct chat_owner {        /* the value of a nick in the table */
    int32_t pid;
    uint32_t slot, gen;
    uint32_t worker;
} chat_owner_t;

int chat_nick_valid(const char *nick, size_t len);
int chat_names_create(chat_state_t *st, char *err, size_t errlen);
/* With the log lock held: takes nick for me. 0, -EEXIST (a live owner has it),
 * -ENOSPC (the room is full) or -errno; *stale = 1 if it took the nick over from a
 * dead owner (whose leave is still to be announced). */
int chat_names_claim(chat_state_t *st, const char *nick, const chat_owner_t *me, int *stale);
/* With the log lock held: frees nick if me still owns it. 0, or -errno when the
 * table could not be asked (a cancelled coroutine). */
int chat_names_release(chat_state_t *st, const char *nick, const chat_owner_t *me);
/* "* in the room (N): a b c\n", sorted, live owners only: a malloc'ed line. */
char *chat_names_who(chat_state_t *st, size_t *len);
/* Frees the nicks of dead workers (and the slots of those) and announces that they
 * left. Takes the log lock. 0 or -errno. */
int chat_names_sweep(chat_state_t *st);
/* Is any claimed reader slot held by a dead process? (cheap: one kill(0) a slot) */
int chat_names_dead_slots(chat_state_t *st);

/* ---- a client's outbox (chat_outbox.c) ------------------------------------------------------- */

typedef struct chat_chunk {
    struct chat_chunk *next;
    uint32_t len, cap;
    char data[];
} chat_chunk_t;

/* Bytes waiting to be sent, in chunks appended at the tail and sent from the head.
 * A chunk never moves, so a send in flight on the head stays valid while lines are
 * appended. */
typedef struct chat_outbox {
    chat_chunk_t *head, *tail;
    uint32_t off;                  /* sent bytes of head */
    size_t queued;                 /* unsent bytes */
} chat_outbox_t;

int chat_outbox_put(chat_outbox_t *o, const char *p, size_t n);
/* The next bytes to send (0 = nothing). */
size_t chat_outbox_peek(const chat_outbox_t *o, const char **p);
void chat_outbox_consume(chat_outbox_t *o, size_t n);
/* Drops everything after the head chunk (which may be in a send right now) and
 * the end of the line it is in the middle of, if any. */
void chat_outbox_drop_tail(chat_outbox_t *o);
void chat_outbox_free(chat_outbox_t *o);

/* ---- one connection (chat_conn.c, chat_lines.c) ------------------------------------------------ */

typedef struct chat_client {
    struct chat_client *prev, *next;   /* in the worker's list while served */
    chat_worker_t *w;
    iop_service_conn_t *conn;
    char nick[CHAT_NICK_MAX + 1];
    int joined;                    /* owns nick in the table */
    uint64_t from_seq;             /* log records delivered to it: seq >= this */
    chat_outbox_t out;
    iop_sem_t kick;                /* the sender: something to send, or closing */
    int kicked;
    iop_sem_t end;                 /* the controller: time to end the session */
    int ending;                    /* no more lines into the outbox from the log */
    int closing;                   /* the sender stops once the outbox is empty */
    int overflow;                  /* dropped for its backlog */
    int send_failed;
    int end_posted;
    uint64_t pace_since;           /* when its backlog went over the worker's pace_mark */
    int pace_skip;                 /* over it too long: not waited for until back under */
    iop_coro_t *receiver;          /* while it runs */
    int recv_running;              /* spawned and not ended yet */
    iop_sem_t recv_done;
    iop_nursery_t kids;            /* receiver and sender */
    /* the receiver's buffers */
    size_t in_len, in_cap;
    int discarding;                /* the rest of a too long line */
    char *in;
    char *line;                    /* a formatted line, line_cap bytes */
} chat_client_t;

int chat_serve(void *state, iop_service_conn_t *conn);
/* Queues bytes for c and wakes its sender; a backlog over the limit drops it. */
void chat_client_queue(chat_client_t *c, const char *p, size_t n);
void chat_client_queue_str(chat_client_t *c, const char *s);
/* Ends the session from outside the controller (drain, backlog, a failed send). */
void chat_client_end(chat_client_t *c);
/* The receiver coroutine: reads lines and acts on them until the client leaves. */
void *chat_receiver_main(void *arg);

/* ---- one worker (chat_reader.c) ----------------------------------------------------------------- */

typedef struct chat_pending {      /* a leave a cancelled connection could not do */
    struct chat_pending *next;
    char nick[CHAT_NICK_MAX + 1];
    chat_owner_t owner;
} chat_pending_t;

struct chat_worker {
    chat_state_t *st;
    iop_loop_t *loop;
    int index;
    int slot;                      /* our reader slot in the log */
    uint32_t gen;
    uint64_t pos;                  /* the next record to deliver */
    chat_client_t *clients;        /* every open connection of this worker */
    iop_coro_t *reader;
    const volatile int *draining;  /* the host's flag, from the first connection */
    int drain_seen;
    chat_pending_t *pending;
    iop_mutex_t mu;                /* for advanced (coroutines of this worker only) */
    iop_cond_t advanced;           /* pos moved on */
    char *batch;                   /* records read, back to back, batch_cap bytes */
    size_t batch_cap;
    size_t *batch_off;             /* where each one starts, and the end */
    uint64_t *stuck;               /* per slot: 1 + the pos at which we stopped waiting for it */
    size_t pace_mark;              /* a member's backlog above this holds the reader */
    chat_client_t *held_by;        /* the member the reader waits for, if any */
    iop_sem_t unheld;              /* its sender got it back under the mark */
};

int chat_worker_start(void *state, iop_loop_t *loop, int worker, char *err, size_t errlen);
void chat_worker_stop(void *state);
chat_owner_t chat_worker_owner(const chat_worker_t *w);
/* The leave of a joined client: "* NAME left" and its nick freed. When the lock
 * cannot be had (the coroutine was cancelled), the reader does it later. */
void chat_worker_leave(chat_worker_t *w, const char *nick);
/* Parks until the reader has delivered record seq (a client's next line waits for
 * its last one to come back, so replies and the room stay in order). */
int chat_worker_wait_delivered(chat_worker_t *w, uint64_t seq);
/* Parks while some live reader (of any worker) is half a ring behind, so that
 * bursts slow the writers down instead of making readers miss messages. */
int chat_worker_throttle(chat_worker_t *w);
/* c's backlog is back under the pace mark, or c is ending: the reader need not wait
 * for it (any more). */
void chat_worker_unhold(chat_worker_t *w, chat_client_t *c);

#endif
