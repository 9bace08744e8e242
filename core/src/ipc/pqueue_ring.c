/* The process queue's lock-free ring: one put or get attempt that never waits, and
 * the repair of a slot left behind by a dead process. The slot states are listed in
 * pqueue_internal.h.
 *
 * Ordering: a claim is a CAS on the slot word (it also acquires what the previous
 * holder wrote or read), publishing and freeing are release stores of the word.
 * The head and tail indices are only hints that anyone may move on; the slot words
 * alone decide who owns what. The fence that pairs with a sleeper's registration
 * comes after the operation (pq_after_op). */
#include <errno.h>
#include <string.h>
#include "error_internal.h"
#include "pqueue_internal.h"

/* Helps index *ix from pos to pos + 1 unless someone did already; returns where
 * it is now. */
static uint64_t advance(_Atomic uint64_t *ix, uint64_t pos)
{
    uint64_t seen = pos;
    if (atomic_compare_exchange_strong_explicit(ix, &seen, pos + 1, memory_order_relaxed,
                                                memory_order_relaxed))
        return pos + 1;
    return seen;
}

/* The claimer moves its index on. A plain store: it may, rarely, put the index
 * back behind a helper's move, which only costs the next caller a few steps
 * forward over slots that are visibly taken. */
static inline void move_on(_Atomic uint64_t *ix, uint64_t pos)
{
    if (atomic_load_explicit(ix, memory_order_relaxed) == pos)
        atomic_store_explicit(ix, pos + 1, memory_order_relaxed);
}

int iop__pq_put_once(iop_pqueue_t *q, const void *data, uint32_t len, uint32_t *stuck)
{
    *stuck = 0;
    if (atomic_load_explicit(&q->closed, memory_order_relaxed))
        return -EPIPE;
    uint32_t me = (uint32_t)pq_self(q);
    uint64_t pos = atomic_load_explicit(&q->tail, memory_order_relaxed);
    for (;;) {
        pq_slot_t *s = pq_slot(q, pos);
        uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
        uint32_t want = 2 * (uint32_t)pos;
        int32_t d = (int32_t)(pq_seq(w) - want);
        if (d == 0 && pq_owner(w) == 0) {
            if (!atomic_compare_exchange_weak_explicit(&s->word, &w, pq_word(me, want),
                                                       memory_order_seq_cst, memory_order_relaxed))
                continue;
            move_on(&q->tail, pos);
            /* A close that came before our claim must win (see get_once). */
            if (atomic_load_explicit(&q->closed, memory_order_seq_cst)) {
                atomic_store_explicit(&s->word, pq_word(PQ_OWNER_TOMB, want + 1), memory_order_release);
                atomic_thread_fence(memory_order_seq_cst);
                iop__pq_notify(q, PQ_NOT_EMPTY);   /* a get may wait on our claim */
                return -EPIPE;
            }
            if (len)
                memcpy(s->data, data, len);
            atomic_store_explicit(&s->len, len, memory_order_relaxed);
            atomic_store_explicit(&s->word, pq_word(0, want + 1), memory_order_release);
            return 0;
        }
        if (d >= 0) {               /* claimed by another put, or long gone: tail lags */
            pos = advance(&q->tail, pos);
            continue;
        }
        /* The slot still holds the previous lap: full, unless the tail moved on. */
        uint64_t now = atomic_load_explicit(&q->tail, memory_order_relaxed);
        if (now != pos) {
            pos = now;
            continue;
        }
        *stuck = pq_owner(w);       /* a get copying it out, a tombstone, or 0 */
        return -EAGAIN;
    }
}

/* A full slot whose length no put can have written (the slot holds max_msg bytes):
 * the shared memory was written over. Takes the slot like a get and frees it, so
 * the messages behind it still come out, and fails this get. -EAGAIN if another
 * process took the slot first. */
static int drop_scribbled(iop_pqueue_t *q, pq_slot_t *s, uint64_t w, uint64_t pos, uint32_t len)
{
    uint32_t want = pq_seq(w);
    if (!atomic_compare_exchange_strong_explicit(&s->word, &w, pq_word((uint32_t)pq_self(q), want),
                                                 memory_order_acquire, memory_order_relaxed))
        return -EAGAIN;
    move_on(&q->head, pos);
    atomic_store_explicit(&s->word, pq_word(0, 2 * (uint32_t)(pos + pq_priv(q)->capacity)),
                          memory_order_release);
    return iop__fail(-EBADMSG, "iop_pqueue_get: the message at position %llu says it is %u bytes "
                               "long, more than the queue's max_msg (%u): its slot was written "
                               "over; it is dropped, the messages after it are not",
                     (unsigned long long)pos, len, pq_priv(q)->max_msg);
}

ssize_t iop__pq_get_once(iop_pqueue_t *q, void *buf, size_t cap, uint32_t *stuck)
{
    *stuck = 0;
    /* Read before looking at the ring: a put that claims a slot after this load
     * sees the close and backs out, so "closed and empty" cannot strand a message. */
    uint32_t closed = atomic_load_explicit(&q->closed, memory_order_seq_cst);
    uint32_t me = (uint32_t)pq_self(q);
    uint64_t pos = atomic_load_explicit(&q->head, memory_order_relaxed);
    for (;;) {
        pq_slot_t *s = pq_slot(q, pos);
        uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
        uint32_t want = 2 * (uint32_t)pos + 1;
        int32_t d = (int32_t)(pq_seq(w) - want);
        uint32_t owner = pq_owner(w);
        if (d == 0 && owner == 0) {
            uint32_t len = atomic_load_explicit(&s->len, memory_order_relaxed);
            if (len > pq_priv(q)->max_msg) {
                int r = drop_scribbled(q, s, w, pos, len);
                if (r == -EAGAIN)
                    continue;
                return r;
            }
            if (len > cap) {
                /* Too long for buf: leave it, if len really was this message's. */
                atomic_thread_fence(memory_order_acquire);
                if (atomic_load_explicit(&s->word, memory_order_relaxed) == w)
                    return -EMSGSIZE;
                continue;
            }
            if (!atomic_compare_exchange_weak_explicit(&s->word, &w, pq_word(me, want),
                                                       memory_order_acquire, memory_order_relaxed))
                continue;
            move_on(&q->head, pos);
            if (len)
                memcpy(buf, s->data, len);
            atomic_store_explicit(&s->word, pq_word(0, 2 * (uint32_t)(pos + pq_priv(q)->capacity)),
                                  memory_order_release);
            return (ssize_t)len;
        }
        if (d == 0 && owner == PQ_OWNER_TOMB) {
            /* A put that died or backed out: free the slot for the next lap. */
            if (atomic_compare_exchange_strong_explicit(&s->word, &w,
                    pq_word(0, 2 * (uint32_t)(pos + pq_priv(q)->capacity)),
                    memory_order_release, memory_order_relaxed)) {
                atomic_thread_fence(memory_order_seq_cst);
                iop__pq_notify(q, PQ_NOT_FULL);
            }
        }
        if (d >= 0) {               /* taken by another get, skipped, or gone: head lags */
            pos = advance(&q->head, pos);
            continue;
        }
        uint64_t now = atomic_load_explicit(&q->head, memory_order_relaxed);
        if (now != pos) {
            pos = now;
            continue;
        }
        /* Nothing at pos yet. An owner on an even seq is a put writing it. */
        if (owner != 0 && !(pq_seq(w) & 1)) {
            *stuck = owner;
            return -EAGAIN;
        }
        return closed ? -EPIPE : -EAGAIN;
    }
}

int iop__pq_unstick(iop_pqueue_t *q, int dir)
{
    _Atomic uint64_t *ix = dir == PQ_NOT_FULL ? &q->tail : &q->head;
    pq_slot_t *s = pq_slot(q, atomic_load_explicit(ix, memory_order_relaxed));
    uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
    uint32_t owner = pq_owner(w), seq = pq_seq(w);
    uint64_t repaired;
    if (owner == 0)
        return 0;
    /* A slot naming the caller's own thread is not one it is working on (it is
     * here): a thread that had the id before it left it. */
    if (owner != PQ_OWNER_TOMB && owner != (uint32_t)pq_self(q) && !iop__pq_tid_dead((pid_t)owner))
        return 0;
    if (seq & 1)                    /* a tombstone, or a get that died: free it */
        repaired = pq_word(0, seq - 1 + 2 * (uint32_t)pq_priv(q)->capacity);
    else                            /* a put that died: its message never was */
        repaired = pq_word(PQ_OWNER_TOMB, seq + 1);
    if (!atomic_compare_exchange_strong_explicit(&s->word, &w, repaired, memory_order_acq_rel,
                                                 memory_order_relaxed))
        return 0;
    if (owner != PQ_OWNER_TOMB)
        atomic_fetch_add_explicit(&q->repaired, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    iop__pq_notify(q, PQ_NOT_FULL);
    iop__pq_notify(q, PQ_NOT_EMPTY);
    return 1;
}
