/* Shared dict: the storage helpers every operation and the repair use: byte streams
 * over an entry's chain of chunks, the key hash, open-addressing lookup (linear
 * probing, tombstones) and the table rebuild that switches tables with one store. */
#include <string.h>
#include "shdict_internal.h"

/* ---- byte streams over chains ------------------------------------------------------ */

/* The next contiguous piece of the stream at *p, at most want bytes (*got = 0 when
 * the chain ends early); advances *p past it. */
static unsigned char *piece(const iop_shdict_t *d, iop__chain_pos_t *p, size_t want, size_t *got)
{
    if (p->off >= d->chunk_size) {
        uint32_t nx = iop__shdict_next(d)[p->chunk];
        if (nx >= d->nchunks) {
            *got = 0;
            return NULL;
        }
        p->chunk = nx;
        p->off = 0;
    }
    size_t room = d->chunk_size - p->off;
    *got = want < room ? want : room;
    unsigned char *at = iop__shdict_chunk(d, p->chunk) + p->off;
    p->off += (uint32_t)*got;
    return at;
}

int iop__chain_read(const iop_shdict_t *d, iop__chain_pos_t *p, void *dst, size_t len)
{
    unsigned char *out = dst;
    for (size_t n; len; len -= n, out += n) {
        const unsigned char *at = piece(d, p, len, &n);
        if (!n)
            return -1;
        memcpy(out, at, n);
    }
    return 0;
}

int iop__chain_write(const iop_shdict_t *d, iop__chain_pos_t *p, const void *src, size_t len)
{
    const unsigned char *in = src;
    for (size_t n; len; len -= n, in += n) {
        unsigned char *at = piece(d, p, len, &n);
        if (!n)
            return -1;
        memcpy(at, in, n);
    }
    return 0;
}

int iop__chain_skip(const iop_shdict_t *d, iop__chain_pos_t *p, size_t len)
{
    for (size_t n; len; len -= n) {
        piece(d, p, len, &n);
        if (!n)
            return -1;
    }
    return 0;
}

int iop__chain_equal(const iop_shdict_t *d, iop__chain_pos_t *p, const void *src, size_t len)
{
    const unsigned char *in = src;
    for (size_t n; len; len -= n, in += n) {
        const unsigned char *at = piece(d, p, len, &n);
        if (!n || memcmp(at, in, n) != 0)
            return 0;
    }
    return 1;
}

/* ---- hashing and lookup ------------------------------------------------------------ */

/* FNV-1a, folded, then mixed so that the low bits (the home slot) depend on all. */
uint32_t iop__shdict_hash(const char *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 0x100000001b3ull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    return (uint32_t)(h ^ (h >> 32));
}

static int entry_is(const iop_shdict_t *d, uint32_t first, const char *key, uint32_t key_len,
                    uint32_t hash)
{
    if (first >= d->nchunks)
        return 0;
    const iop__shdict_entry_t *e = iop__shdict_entry(d, first);
    if (e->magic != IOP__ENTRY_MAGIC || e->hash != hash || e->key_len != key_len)
        return 0;
    iop__chain_pos_t p = iop__chain_start(first);
    return iop__chain_equal(d, &p, key, key_len);
}

int64_t iop__shdict_find(const iop_shdict_t *d, const _Atomic uint32_t *t, const char *key,
                         uint32_t key_len, uint32_t hash, uint32_t *insert)
{
    uint32_t mask = d->nslots - 1, i = hash & mask, ins = UINT32_MAX;
    for (uint32_t n = 0; n < d->nslots; n++, i = (i + 1) & mask) {
        uint32_t v = atomic_load_explicit(&t[i], memory_order_relaxed);
        if (v == IOP__SLOT_EMPTY) {
            if (ins == UINT32_MAX)
                ins = i;
            break;
        }
        if (v == IOP__SLOT_TOMB) {
            if (ins == UINT32_MAX)
                ins = i;
            continue;
        }
        if (entry_is(d, IOP__SLOT_CHUNK(v), key, key_len, hash))
            return i;
    }
    if (insert)
        *insert = ins;
    return -1;
}

void iop__shdict_rehash(iop_shdict_t *d)
{
    uint32_t cur = atomic_load_explicit(&d->active, memory_order_relaxed) & 1u;
    _Atomic uint32_t *from = iop__shdict_table(d, cur), *to = iop__shdict_table(d, cur ^ 1u);
    uint32_t mask = d->nslots - 1;
    for (uint32_t i = 0; i < d->nslots; i++)
        atomic_store_explicit(&to[i], IOP__SLOT_EMPTY, memory_order_relaxed);
    for (uint32_t i = 0; i < d->nslots; i++) {
        uint32_t v = atomic_load_explicit(&from[i], memory_order_relaxed);
        if (v == IOP__SLOT_EMPTY || v == IOP__SLOT_TOMB)
            continue;
        /* A reference outside the arena (written over) has no hash to read: it
         * keeps its index, for the repair to drop. */
        uint32_t c = IOP__SLOT_CHUNK(v);
        uint32_t j = c < d->nchunks ? iop__shdict_entry(d, c)->hash & mask : i;
        while (atomic_load_explicit(&to[j], memory_order_relaxed) != IOP__SLOT_EMPTY)
            j = (j + 1) & mask;
        atomic_store_explicit(&to[j], v, memory_order_relaxed);
    }
    atomic_store_explicit(&d->active, cur ^ 1u, memory_order_release);   /* publish */
    d->tombs = 0;
}
