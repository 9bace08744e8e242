/* Per-worker counters in anonymous shared memory: written by the workers (accepted,
 * open) and the supervisor (pid, ready, generation, crashes), read by anyone who
 * mapped them before forking. Each worker process counts in a cell of its own, so a
 * killed process takes its open connections with it; the supervisor folds a dead
 * cell's accepted count into the slot's. */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "shard_internal.h"

#define CELLS_PER_SLOT 4u   /* serving + starting + draining ones of a restart */

int iop_shard_stats_create(iop_shard_stats_t **out, uint32_t nworkers)
{
    if (!out || nworkers == 0 || nworkers > IOP__SHARD_MAX_WORKERS)
        return iop__fail(-EINVAL, "iop_shard_stats_create: nworkers must be 1..%u", IOP__SHARD_MAX_WORKERS);
    uint32_t ncells = nworkers * CELLS_PER_SLOT;
    /* The header (counts, pointers, length) has a page of its own, read-only once
     * set: every process trusts it to size its loops and its munmap, and a stray
     * write to it faults in the writer instead of misleading the readers. */
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t head = (sizeof(iop_shard_stats_t) + page - 1) / page * page;
    size_t len = head + nworkers * sizeof(iop__shard_slot_stats_t) + ncells * sizeof(iop__shard_cell_t);
    /* Pages come from MAP_POPULATE up front: a later lack of memory is not a SIGBUS. */
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (m == MAP_FAILED)
        return iop__fail(-errno, "iop_shard_stats_create: mmap %zu bytes: %s", len, strerror(errno));
    iop_shard_stats_t *s = m;
    s->map_len = len;
    s->nslots = nworkers;
    s->ncells = ncells;
    s->slots = (iop__shard_slot_stats_t *)((char *)m + head);
    s->cells = (iop__shard_cell_t *)(s->slots + nworkers);
    if (mprotect(m, head, PROT_READ) < 0) {
        int err = -errno;
        munmap(m, len);
        return iop__fail(err, "iop_shard_stats_create: mprotect: %s", strerror(-err));
    }
    *out = s;                      /* the mapping is zero-filled: all counters 0 */
    return 0;
}

void iop_shard_stats_free(iop_shard_stats_t *s)
{
    if (s)
        munmap(s, s->map_len);
}

uint32_t iop_shard_stats_count(const iop_shard_stats_t *s) { return s ? s->nslots : 0; }

int iop_shard_stats_read(const iop_shard_stats_t *s, uint32_t i, iop_shard_worker_stats_t *out)
{
    if (!s || !out || i >= s->nslots)
        return -EINVAL;
    iop__shard_slot_stats_t *st = &s->slots[i];
    memset(out, 0, sizeof *out);
    out->pid = atomic_load_explicit(&st->pid, memory_order_relaxed);
    out->ready = atomic_load_explicit(&st->ready, memory_order_relaxed);
    out->generation = atomic_load_explicit(&st->generation, memory_order_relaxed);
    out->crashes = atomic_load_explicit(&st->crashes, memory_order_relaxed);
    out->accepted = atomic_load_explicit(&st->accepted_dead, memory_order_relaxed);
    int64_t open = 0;
    for (uint32_t c = 0; c < s->ncells; c++) {
        iop__shard_cell_t *cell = &s->cells[c];
        if (atomic_load_explicit(&cell->slot_plus1, memory_order_acquire) != i + 1)
            continue;
        out->accepted += atomic_load_explicit(&cell->accepted, memory_order_relaxed);
        open += atomic_load_explicit(&cell->open, memory_order_relaxed);
    }
    out->open = open > 0 ? (uint64_t)open : 0;
    return 0;
}

/* A free cell for a new process of slot, zeroed; NULL when all are taken (that
 * process then counts nothing). Only the supervisor takes and puts cells. */
iop__shard_cell_t *iop__shard_cell_take(iop_shard_stats_t *s, uint32_t slot)
{
    if (!s || slot >= s->nslots)
        return NULL;
    for (uint32_t c = 0; c < s->ncells; c++) {
        iop__shard_cell_t *cell = &s->cells[c];
        if (atomic_load_explicit(&cell->slot_plus1, memory_order_relaxed) != 0)
            continue;
        atomic_store_explicit(&cell->accepted, 0, memory_order_relaxed);
        atomic_store_explicit(&cell->open, 0, memory_order_relaxed);
        atomic_store_explicit(&cell->slot_plus1, slot + 1, memory_order_release);
        return cell;
    }
    return NULL;
}

/* The cell of a process of slot that has ended: its accepted count moves to the
 * slot. The slot comes from the supervisor's own record, not from the cell: the
 * worker wrote next to it, and an index read back from there could point anywhere. */
void iop__shard_cell_put(iop_shard_stats_t *s, iop__shard_cell_t *cell, uint32_t slot)
{
    if (!s || !cell || slot >= s->nslots)
        return;
    uint64_t acc = atomic_load_explicit(&cell->accepted, memory_order_relaxed);
    atomic_store_explicit(&cell->slot_plus1, 0, memory_order_release);
    atomic_fetch_add_explicit(&s->slots[slot].accepted_dead, acc, memory_order_relaxed);
}
