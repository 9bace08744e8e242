/* Internal: the process queue's shared layout.
 *
 * The ring is Vyukov's bounded MPMC queue, made crash-safe: each slot has one
 * 64-bit control word, seq (low 32 bits) | owner (high 32 bits). For position pos
 * (64-bit, counting up forever; slot pos % capacity; seq compared modulo 2^32 and
 * counting two per position, so that even a one-slot ring tells its states apart):
 *
 *   (0, 2pos)           free: a put for pos may claim it
 *   (tid, 2pos)         a put by thread tid is writing it
 *   (0, 2pos + 1)       full: a get for pos may claim it
 *   (TOMB, 2pos + 1)    a put that never finished: gets skip it
 *   (tid, 2pos + 1)     a get by thread tid is copying it out
 *   (0, 2(pos + cap))   free again, for the next lap
 *
 * Claiming is one CAS on the slot word that writes the claimer's thread id, then a
 * CAS of the tail (head) index that anyone may help along, so a process (or thread)
 * that dies between any two instructions leaves a slot naming it: whoever finds
 * that slot in its way checks the id and, if the thread is gone, turns a
 * half-written slot into a tombstone or frees a half-read one. Nothing else ever
 * needs repair. A thread id rather than the pid: a slot of a thread that ended in
 * a process that lives on is told from one a sibling thread is working on. A
 * process's main thread has the pid as its id. */
#ifndef IOP_PQUEUE_INTERNAL_H
#define IOP_PQUEUE_INTERNAL_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>
#include "ioplex/pqueue.h"

#define PQ_MAGIC 0x696f705f70717565ull      /* "iop_pque" */
#define PQ_LINE 64

#define PQ_OWNER_TOMB 0x7fffffffu           /* no thread id is this large (pid_max <= 2^22) */
#define PQ_MAX_CAPACITY (1u << 30)          /* 2 * capacity must fit seq's signed range */
#define PQ_MAX_MSG (64u << 20)

enum { PQ_NOT_EMPTY = 0, PQ_NOT_FULL = 1 }; /* what getters / putters wait for */

typedef struct pq_slot {
    _Atomic uint64_t word;                  /* seq | owner << 32 */
    _Atomic uint32_t len;                   /* written before the slot is published */
    uint32_t pad;
    unsigned char data[];
} pq_slot_t;

/* One per direction. waiters: callers registered to sleep on efd (in every process);
 * token_out: a wake-up token is on its way, so a notifier need not write another. */
typedef struct pq_waitset {
    _Atomic uint32_t waiters;
    _Atomic uint32_t token_out;
} pq_waitset_t;

/* Memory private to each process (mapped MADV_WIPEONFORK: zero in every child, so
 * a child sets it up again on its first call). */
typedef struct pq_local {
    _Atomic pid_t pid;                      /* getpid(); 0 = not set up yet in this process */
    _Atomic uint32_t light;                 /* registered for membarrier: may skip fences */
    _Atomic uint32_t stuck_seen;            /* try_* calls blocked by an owned slot */
} pq_local_t;

/* What each process keeps for itself: the geometry and the eventfd numbers, set at
 * creation and read-only afterwards. It sits in a private page just below the
 * shared mapping (pq_priv), inherited copy-on-write by fork, so no pointer to it
 * and nothing it holds is in memory that another process can write: a scribbled
 * shared page cannot make a process index past its mapping or use an unrelated
 * fd of its own. */
typedef struct pq_priv {
    uint64_t capacity;
    uint64_t mask;                          /* capacity - 1 when a power of two, else 0 */
    uint32_t max_msg;
    uint32_t slot_size;                     /* multiple of PQ_LINE */
    void *base;                             /* the whole mapping: private page, then shared */
    size_t map_size;
    pq_local_t *local;                      /* NULL where the kernel cannot wipe on fork */
    int efd[2];                             /* EFD_SEMAPHORE wake tokens, by direction */
} pq_priv_t;

/* The shared part; the handle points at it. */
struct iop_pqueue {
    uint64_t magic;
    _Atomic uint32_t closed;
    _Atomic uint32_t asym;                  /* sleepers fence everyone (membarrier) */
    _Atomic uint64_t repaired;              /* slots of dead processes cleared (for tests) */
    /* each index on a line of its own: producers touch tail, consumers head */
    alignas(PQ_LINE) _Atomic uint64_t tail;
    alignas(PQ_LINE) _Atomic uint64_t head;
    /* read by every operation, written only around sleeps */
    alignas(PQ_LINE) pq_waitset_t wait[2];
    alignas(PQ_LINE) unsigned char slots[];
};

/* The page below the handle holds this process's pq_priv_t, at its top end. */
static inline const pq_priv_t *pq_priv(const iop_pqueue_t *q) { return (const pq_priv_t *)q - 1; }

static inline uint64_t pq_word(uint32_t owner, uint32_t seq) { return (uint64_t)owner << 32 | seq; }
static inline uint32_t pq_seq(uint64_t w) { return (uint32_t)w; }
static inline uint32_t pq_owner(uint64_t w) { return (uint32_t)(w >> 32); }

static inline pq_slot_t *pq_slot(const iop_pqueue_t *q, uint64_t pos)
{
    const pq_priv_t *p = pq_priv(q);
    uint64_t i = p->mask ? pos & p->mask : pos % p->capacity;
    return (pq_slot_t *)((unsigned char *)q->slots + i * p->slot_size);
}

/* The calling thread's id, cached per thread. A child's first thread starts with a
 * copy of the forking thread's cache, so the first call on a queue in each process
 * (its private page wiped) moves iop__pq_epoch on, which makes every cache taken
 * before stale. */
typedef struct pq_tid_cache {
    pid_t tid;
    uint32_t epoch;                         /* iop__pq_epoch when tid was read (a new
                                             * thread's 0 is stale: the epoch starts at 1
                                             * and wraps after 2^32 processes' first calls) */
} pq_tid_cache_t;
extern _Thread_local pq_tid_cache_t iop__pq_tid __attribute__((tls_model("initial-exec")));
extern _Atomic uint32_t iop__pq_epoch;

/* The owner id this caller writes into a slot: its thread id. The first call in a
 * process sets up its private page (and its membarrier registration). */
pid_t iop__pq_self_slow(const iop_pqueue_t *q);
static inline pid_t pq_self(const iop_pqueue_t *q)
{
    pq_local_t *l = pq_priv(q)->local;
    if (l && atomic_load_explicit(&l->pid, memory_order_relaxed) &&
        iop__pq_tid.epoch == atomic_load_explicit(&iop__pq_epoch, memory_order_relaxed))
        return iop__pq_tid.tid;
    return iop__pq_self_slow(q);
}

/* One attempt, no waiting. stuck (out): the owner word of a slot held by another
 * thread that stood in the way (0 if none), for a liveness check before sleeping. */
int iop__pq_put_once(iop_pqueue_t *q, const void *data, uint32_t len, uint32_t *stuck);
ssize_t iop__pq_get_once(iop_pqueue_t *q, void *buf, size_t cap, uint32_t *stuck);

/* Clears the slot at the tail (dir PQ_NOT_FULL) or head (PQ_NOT_EMPTY) if the
 * thread holding it is gone, or if it is a tombstone. 1 if it changed it. */
int iop__pq_unstick(iop_pqueue_t *q, int dir);

/* 1 if the thread is gone (exited; a process's main thread: the process exited or
 * is a zombie), 0 if it may still run. */
int iop__pq_tid_dead(pid_t tid);

/* Writes a wake-up token for dir's sleepers if any sleep and none is on its way
 * (a seq_cst fence must precede it). */
void iop__pq_notify(iop_pqueue_t *q, int dir);

/* After an operation that made a message (dir PQ_NOT_EMPTY) or room (PQ_NOT_FULL):
 * wakes a sleeper of dir, and one of the other direction if it can proceed too. */
void iop__pq_wake(iop_pqueue_t *q, int dir);

/* The "full fence, then read waiters" half of the no-lost-wake-up handshake. A
 * process registered for MEMBARRIER_CMD_GLOBAL_EXPEDITED needs only a compiler
 * barrier: a sleeper runs membarrier() between registering and looking again,
 * which puts a full fence into every registered process that runs meanwhile. */
static inline void pq_after_op(iop_pqueue_t *q, int dir)
{
    pq_local_t *l = pq_priv(q)->local;
    if (l && atomic_load_explicit(&l->light, memory_order_relaxed) &&
        atomic_load_explicit(&q->asym, memory_order_relaxed))
        atomic_signal_fence(memory_order_seq_cst);
    else
        atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&q->wait[0].waiters, memory_order_relaxed) |
        atomic_load_explicit(&q->wait[1].waiters, memory_order_relaxed))
        iop__pq_wake(q, dir);
}

/* The sleeper's half: after registering in waiters, before looking again. */
void iop__pq_heavy_fence(iop_pqueue_t *q);

/* Can this kernel fence other processes (MEMBARRIER_CMD_GLOBAL_EXPEDITED)? Registers
 * the calling process if so. */
int iop__pq_membarrier_usable(void);

/* Sleeps until a token arrives on dir's eventfd, the slice ends or until passes
 * (0 = none), after the caller has registered in q->wait[dir].waiters and found the
 * queue still blocked. 0 (time to look again), -ETIMEDOUT (until passed), or
 * -ECANCELED. */
int iop__pq_sleep(iop_pqueue_t *q, int dir, uint64_t until);

#endif
