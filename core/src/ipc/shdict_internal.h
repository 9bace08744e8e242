/* Internal: the shared dict's memory layout and the helpers shdict.c (operations),
 * shdict_store.c (streams, lookup, rebuild) and shdict_check.c (validation, repair
 * after a death) share.
 *
 * One mapping, addressed by offsets from its start (no pointers in shared memory):
 *
 *   header | table 0 | table 1 | next[nchunks] | marks | scratch | chunks
 *
 * A table slot is EMPTY, TOMB (deleted) or REF(first chunk of an entry). One table
 * is active; the other is scratch for a rebuild, which switches tables with one
 * store. An entry is a chain of chunks (next[] links them; next[] also links the
 * free list): a 16-byte header (iop__shdict_entry_t) at the start of its first chunk,
 * then the key, then the value, as one byte stream across the chain.
 *
 * The published state is the active table index, the active table, and the chunks
 * and links of the entries it references; a writer never changes those except by
 * one store. Everything else (free list, counts) is derived, and rebuilt from the
 * published state by iop__shdict_repair after a writer died. */
#ifndef IOP_SHDICT_INTERNAL_H
#define IOP_SHDICT_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "ioplex/plock.h"
#include "ioplex/shdict.h"

#define IOP__SHDICT_MAGIC 0x74636964786c706full   /* "oplxdict" */
#define IOP__ENTRY_MAGIC 0x6e747279u              /* "ntry" */

#define IOP__SLOT_EMPTY 0u
#define IOP__SLOT_TOMB 1u
#define IOP__SLOT_REF(chunk) ((uint32_t)(chunk) + 2u)
#define IOP__SLOT_CHUNK(slot) ((uint32_t)(slot) - 2u)
#define IOP__CHAIN_END UINT32_MAX

typedef struct iop__shdict_entry {
    uint32_t magic;
    uint32_t hash;
    uint32_t key_len;
    uint32_t val_len;
} iop__shdict_entry_t;

struct iop_shdict {
    uint64_t magic;
    uint64_t map_size;
    iop_plock_t lock;
    /* geometry, fixed at creation */
    uint32_t max_entries, max_key, max_value;
    uint32_t chunk_size, chunk_shift, nchunks, nslots;
    uint64_t off_table[2], off_next, off_marks, off_scratch, off_chunks;
    /* published */
    _Atomic uint32_t active;       /* 0 or 1: which table */
    /* derived (rebuilt by repair) */
    uint32_t count, tombs, free_head, free_count;
    /* statistics */
    uint64_t repairs, dropped;
};

static inline _Atomic uint32_t *iop__shdict_table(const iop_shdict_t *d, uint32_t which)
{
    return (_Atomic uint32_t *)((char *)d + d->off_table[which]);
}

static inline _Atomic uint32_t *iop__shdict_active(const iop_shdict_t *d)
{
    return iop__shdict_table(d, atomic_load_explicit(&d->active, memory_order_acquire) & 1u);
}

static inline uint32_t *iop__shdict_next(const iop_shdict_t *d)
{
    return (uint32_t *)((char *)d + d->off_next);
}

static inline uint64_t *iop__shdict_marks(const iop_shdict_t *d)
{
    return (uint64_t *)((char *)d + d->off_marks);
}

static inline unsigned char *iop__shdict_chunk(const iop_shdict_t *d, uint32_t c)
{
    return (unsigned char *)d + d->off_chunks + ((uint64_t)c << d->chunk_shift);
}

static inline iop__shdict_entry_t *iop__shdict_entry(const iop_shdict_t *d, uint32_t c)
{
    return (iop__shdict_entry_t *)iop__shdict_chunk(d, c);
}

/* Scratch for callbacks, used under the lock only: a key with its NUL, then two
 * values (old and new). */
static inline char *iop__shdict_scratch_key(const iop_shdict_t *d)
{
    return (char *)d + d->off_scratch;
}

static inline unsigned char *iop__shdict_scratch_val(const iop_shdict_t *d, int which)
{
    return (unsigned char *)d + d->off_scratch + d->max_key + 1 + (uint64_t)which * d->max_value;
}

/* Chunks an entry of these sizes takes. */
static inline uint32_t iop__shdict_chunks_for(const iop_shdict_t *d, uint32_t key_len, uint32_t val_len)
{
    uint64_t bytes = sizeof(iop__shdict_entry_t) + (uint64_t)key_len + val_len;
    return (uint32_t)((bytes + d->chunk_size - 1) >> d->chunk_shift);
}

/* A position in an entry's byte stream. */
typedef struct iop__chain_pos {
    uint32_t chunk;
    uint32_t off;
} iop__chain_pos_t;

static inline iop__chain_pos_t iop__chain_start(uint32_t first)
{
    iop__chain_pos_t p = { first, (uint32_t)sizeof(iop__shdict_entry_t) };
    return p;
}

/* Stream helpers: 0, or -1 when the chain ends (or leaves the arena) early, which a
 * well-formed entry never does. They never read or write outside the mapping. */
int iop__chain_read(const iop_shdict_t *d, iop__chain_pos_t *p, void *dst, size_t len);
int iop__chain_write(const iop_shdict_t *d, iop__chain_pos_t *p, const void *src, size_t len);
int iop__chain_skip(const iop_shdict_t *d, iop__chain_pos_t *p, size_t len);
int iop__chain_equal(const iop_shdict_t *d, iop__chain_pos_t *p, const void *src, size_t len);

uint32_t iop__shdict_hash(const char *key, size_t len);

/* Finds key in table t: its slot, or -1. *insert (may be NULL) gets the slot a new
 * key would go to: the first tombstone or empty slot on the probe path. Safe on a
 * table with broken references (they never match). */
int64_t iop__shdict_find(const iop_shdict_t *d, const _Atomic uint32_t *t, const char *key,
                         uint32_t key_len, uint32_t hash, uint32_t *insert);

/* Rebuilds the active table into the other one without tombstones, then switches. */
void iop__shdict_rehash(iop_shdict_t *d);

/* After a holder died (under the lock): drops broken published entries, rebuilds
 * the free list and counts, rehashes. */
void iop__shdict_repair(iop_shdict_t *d);

/* Full consistency check (under the lock): 0 or -EUCLEAN, with why. */
int iop__shdict_check(iop_shdict_t *d, char *why, size_t whylen);

#endif
