/* The broadcast log: a ring of records in shared memory that every worker appends
 * to (under a robust process lock) and follows (without it).
 *
 * Crash safety: an appender first marks the record invalid (stamp 0), writes it,
 * stamps it with its sequence number, and only then advances head. Killed at any
 * instruction, it leaves head pointing before its record; the next appender gets
 * the lock back (the lock reports the death, nothing needs repair) and rewrites
 * that record. Readers copy a record between two reads of its stamp (a seqlock):
 * a stamp that is not the one they want means the writers have lapped them.
 *
 * Wake-ups: a reader sets its slot's sleeping flag, re-reads head, then waits on
 * its slot's eventfd for at most a slice; an appender that sees the flag writes
 * the eventfd. The flag and head are both seq_cst, so one of the two sees the
 * other: no lost wake-up, and a wake-up lost anyway (a writer killed between its
 * append and its write) costs one slice. One reader per eventfd, so a plain
 * counter (not EFD_SEMAPHORE): a read takes every pending wake-up at once. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>
#include "chat_internal.h"

#define ALIGN 64u

static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

static chat_rec_t *rec_at(const chat_log_t *log, uint64_t seq)
{
    return (chat_rec_t *)((char *)log + log->rec_off + (size_t)(seq & (log->nrec - 1)) * log->rec_size);
}

int chat_pid_alive(pid_t pid)
{
    return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

int chat_log_create(chat_log_t **out, uint32_t nrec, uint32_t line_cap, uint32_t nslots,
                    char *err, size_t errlen)
{
    size_t head = round_up(sizeof(chat_log_t) + nslots * sizeof(chat_slot_t), ALIGN);
    size_t rec_size = round_up(sizeof(chat_rec_t) + line_cap, ALIGN);
    size_t bytes = head + rec_size * nrec;
    /* Shared anonymous memory, every page touched now: a lack of memory is an error
     * here, not a fault in a worker later. */
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        snprintf(err, errlen, "chat: cannot map the message log (%zu bytes): %s", bytes, strerror(e));
        return -e;
    }
    chat_log_t *log = p;
    log->nrec = nrec;
    log->rec_size = (uint32_t)rec_size;
    log->line_cap = line_cap;
    log->nslots = nslots;
    log->rec_off = head;
    log->bytes = bytes;
    atomic_init(&log->head, 0);
    for (uint32_t i = 0; i < nslots; i++)
        log->slots[i].efd = -1;
    int r = iop_plock_init(&log->lock);
    if (r < 0) {
        snprintf(err, errlen, "chat: %s", iop_last_error());
        munmap(p, bytes);
        return r;
    }
    for (uint32_t i = 0; i < nslots; i++) {
        chat_slot_t *s = &log->slots[i];
        atomic_init(&s->pid, 0);
        atomic_init(&s->gen, 0);
        atomic_init(&s->sleeping, 0);
        atomic_init(&s->pos, 0);
        s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (s->efd < 0) {
            r = -errno;
            snprintf(err, errlen, "chat: eventfd: %s", strerror(-r));
            chat_log_destroy(log);
            return r;
        }
    }
    *out = log;
    return 0;
}

void chat_log_destroy(chat_log_t *log)
{
    if (!log)
        return;
    for (uint32_t i = 0; i < log->nslots; i++)
        if (log->slots[i].efd >= 0)
            close(log->slots[i].efd);
    iop_plock_fini(&log->lock);
    munmap(log, log->bytes);
}

int chat_log_lock(chat_log_t *log)
{
    int r = iop_plock_lock(&log->lock, 0);
    return r == IOP_PLOCK_OWNER_DIED ? 0 : r;
}

uint64_t chat_log_put(chat_log_t *log, const char *line, size_t len)
{
    uint64_t seq = atomic_load_explicit(&log->head, memory_order_relaxed);
    chat_rec_t *rec = rec_at(log, seq);
    if (len > log->line_cap)
        len = log->line_cap;
    atomic_store_explicit(&rec->stamp, 0, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);     /* readers see 0 before new bytes */
    atomic_store_explicit(&rec->len, (uint32_t)len, memory_order_relaxed);
    memcpy(rec->line, line, len);
    atomic_store_explicit(&rec->stamp, seq + 1, memory_order_release);
    atomic_store_explicit(&log->head, seq + 1, memory_order_seq_cst);
    return seq;
}

static void wake_readers(chat_log_t *log)
{
    static const uint64_t one = 1;
    for (uint32_t i = 0; i < log->nslots; i++) {
        chat_slot_t *s = &log->slots[i];
        if (atomic_load_explicit(&s->pid, memory_order_relaxed) &&
            atomic_load_explicit(&s->sleeping, memory_order_seq_cst)) {
            ssize_t n = write(s->efd, &one, sizeof one);
            (void)n;     /* a full counter (never in practice) already means "wake up" */
        }
    }
}

void chat_log_unlock(chat_log_t *log, int put)
{
    iop_plock_unlock(&log->lock);
    if (put)
        wake_readers(log);
}

uint64_t chat_log_head(const chat_log_t *log)
{
    return atomic_load_explicit(&((chat_log_t *)log)->head, memory_order_seq_cst);
}

ssize_t chat_log_read(const chat_log_t *log, uint64_t seq, char *buf)
{
    chat_rec_t *rec = rec_at(log, seq);
    if (atomic_load_explicit(&rec->stamp, memory_order_acquire) != seq + 1)
        return -1;
    uint32_t len = atomic_load_explicit(&rec->len, memory_order_relaxed);
    if (len > log->line_cap)
        return -1;
    /* May race with a writer that laps us: the second stamp read tells. */
    memcpy(buf, rec->line, len);
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&rec->stamp, memory_order_relaxed) != seq + 1)
        return -1;
    return len;
}

int chat_log_claim_slot(chat_log_t *log, uint32_t *gen)
{
    int32_t me = (int32_t)getpid();
    for (uint32_t i = 0; i < log->nslots; i++) {
        chat_slot_t *s = &log->slots[i];
        int32_t p = atomic_load(&s->pid);
        /* Free, or left behind by a dead worker (its nicks become stale with the
         * new generation). A live one of our own process is another worker's. */
        if (p != 0 && (p == me || chat_pid_alive(p)))
            continue;
        if (atomic_compare_exchange_strong(&s->pid, &p, me)) {
            atomic_store(&s->sleeping, 0);
            atomic_store(&s->pos, chat_log_head(log));
            *gen = atomic_fetch_add(&s->gen, 1) + 1;
            return (int)i;
        }
    }
    return -EBUSY;
}

void chat_log_release_slot(chat_log_t *log, int slot)
{
    chat_slot_t *s = &log->slots[slot];
    atomic_store(&s->sleeping, 0);
    int32_t me = (int32_t)getpid();
    atomic_compare_exchange_strong(&s->pid, &me, 0);
}

int chat_log_wait(chat_log_t *log, int slot, uint64_t pos, uint64_t deadline)
{
    chat_slot_t *s = &log->slots[slot];
    atomic_store_explicit(&s->sleeping, 1, memory_order_seq_cst);
    if (chat_log_head(log) != pos) {
        atomic_store(&s->sleeping, 0);
        return 0;
    }
    uint64_t v;
    ssize_t n = iop_read(s->efd, &v, sizeof v, deadline);
    if (n == -EAGAIN) {          /* a backend that does not wait on non-blocking files */
        n = iop_wait_fd(s->efd, IOP_READ, deadline);
        if (n > 0 && read(s->efd, &v, sizeof v) < 0)
            n = -EAGAIN;
    }
    atomic_store(&s->sleeping, 0);
    if (n == -EAGAIN || n == -ETIMEDOUT || n >= 0)
        return 0;
    return (int)n;
}
