/* Shared dict: the consistency check, and the repair a locker runs when the lock
 * says its previous holder died.
 *
 * Both walk the published state (active table → entries → chains), marking every
 * chunk an entry uses in a bitmap; a chunk marked twice, a chain that leaves the
 * arena or has the wrong length, a header that does not match its key: the entry is
 * broken. The check then wants the derived state to agree exactly (free list = the
 * unmarked chunks, counts); the repair instead rebuilds it from the marks. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "error_internal.h"
#include "shdict_internal.h"

static int marked(const iop_shdict_t *d, uint32_t c)
{
    return (int)((iop__shdict_marks(d)[c >> 6] >> (c & 63)) & 1u);
}

static void mark(const iop_shdict_t *d, uint32_t c, int on)
{
    uint64_t bit = (uint64_t)1 << (c & 63);
    uint64_t *w = &iop__shdict_marks(d)[c >> 6];
    *w = on ? *w | bit : *w & ~bit;
}

static void clear_marks(const iop_shdict_t *d)
{
    memset(iop__shdict_marks(d), 0, ((uint64_t)d->nchunks + 63) / 64 * sizeof(uint64_t));
}

/* Unmarks the first n chunks of the chain at first (a claim that failed or is undone). */
static void unmark_chain(const iop_shdict_t *d, uint32_t first, uint32_t n)
{
    uint32_t c = first;
    for (uint32_t k = 0; k < n; k++) {
        mark(d, c, 0);
        c = iop__shdict_next(d)[c];
    }
}

/* Copies the key of the entry at first (key_len bytes) into scratch, with its NUL. */
static char *load_key(const iop_shdict_t *d, uint32_t first, uint32_t key_len)
{
    char *key = iop__shdict_scratch_key(d);
    iop__chain_pos_t p = iop__chain_start(first);
    iop__chain_read(d, &p, key, key_len);
    key[key_len] = '\0';
    return key;
}

/* Checks that the entry at first is well-formed and marks its chunks. NULL, or
 * what is wrong (and then nothing stays marked). Leaves the key in scratch. */
static const char *claim_entry(const iop_shdict_t *d, uint32_t first)
{
    if (first >= d->nchunks)
        return "reference outside the arena";
    iop__shdict_entry_t e = *iop__shdict_entry(d, first);
    if (e.magic != IOP__ENTRY_MAGIC)
        return "entry header damaged";
    if (e.key_len > d->max_key || e.val_len > d->max_value)
        return "entry sizes out of range";
    uint32_t n = iop__shdict_chunks_for(d, e.key_len, e.val_len), c = first, claimed = 0;
    const char *bad = NULL;
    while (!bad && claimed < n) {
        if (claimed > 0)
            c = iop__shdict_next(d)[c];
        if (c >= d->nchunks)
            bad = "chain leaves the arena";
        else if (marked(d, c))
            bad = "chunk used twice";
        else
            mark(d, c, 1), claimed++;
    }
    if (!bad && iop__shdict_next(d)[c] != IOP__CHAIN_END)
        bad = "chain longer than its entry";
    if (!bad) {
        const char *key = load_key(d, first, e.key_len);
        if (strlen(key) != e.key_len)
            bad = "key holds a NUL";
        else if (iop__shdict_hash(key, e.key_len) != e.hash)
            bad = "hash does not match the key";
    }
    if (bad)
        unmark_chain(d, first, claimed);
    return bad;
}

/* The slot where a lookup of the entry at first (whose key claim_entry left in
 * scratch) lands: -1 if it finds none. */
static int64_t lookup_slot(const iop_shdict_t *d, const _Atomic uint32_t *t, uint32_t first)
{
    const iop__shdict_entry_t *e = iop__shdict_entry(d, first);
    return iop__shdict_find(d, t, iop__shdict_scratch_key(d), e->key_len, e->hash, NULL);
}

/* After a rehash every key sits on its probe path, so a lookup finds the first copy
 * of a key: a copy found elsewhere is a twin that no lookup reached before the
 * repair either (both cut off from their probe path, so the lookup in the repair
 * could not tell). Drops those, and returns how many. */
static uint32_t drop_twins(iop_shdict_t *d)
{
    _Atomic uint32_t *t = iop__shdict_active(d);
    uint32_t dropped = 0;
    for (uint32_t i = 0; i < d->nslots; i++) {
        uint32_t v = atomic_load_explicit(&t[i], memory_order_relaxed);
        if (v == IOP__SLOT_EMPTY || v == IOP__SLOT_TOMB)
            continue;
        uint32_t first = IOP__SLOT_CHUNK(v);
        const iop__shdict_entry_t *e = iop__shdict_entry(d, first);
        load_key(d, first, e->key_len);
        if (lookup_slot(d, t, first) == (int64_t)i)
            continue;
        unmark_chain(d, first, iop__shdict_chunks_for(d, e->key_len, e->val_len));
        atomic_store_explicit(&t[i], IOP__SLOT_TOMB, memory_order_release);
        dropped++;
    }
    return dropped;
}

void iop__shdict_repair(iop_shdict_t *d)
{
    d->repairs++;
    clear_marks(d);
    _Atomic uint32_t *t = iop__shdict_active(d);
    uint32_t live = 0;
    for (uint32_t i = 0; i < d->nslots; i++) {
        uint32_t v = atomic_load_explicit(&t[i], memory_order_relaxed);
        if (v == IOP__SLOT_EMPTY || v == IOP__SLOT_TOMB)
            continue;
        uint32_t first = IOP__SLOT_CHUNK(v);
        int broken = claim_entry(d, first) != NULL;
        if (!broken) {
            int64_t at = lookup_slot(d, t, first);
            if (at >= 0 && at != (int64_t)i) {     /* the same key twice: keep the first */
                unmark_chain(d, first, iop__shdict_chunks_for(d, iop__shdict_entry(d, first)->key_len,
                                                              iop__shdict_entry(d, first)->val_len));
                broken = 1;
            }
        }
        if (broken) {
            atomic_store_explicit(&t[i], IOP__SLOT_TOMB, memory_order_release);
            d->dropped++;
        } else {
            live++;
        }
    }
    iop__shdict_rehash(d);         /* no tombstones, every key at its probe place */
    uint32_t twins = drop_twins(d);
    if (twins) {
        live -= twins;
        d->dropped += twins;
        iop__shdict_rehash(d);     /* and no tombstones again */
    }
    /* Every chunk no entry holds is free, whatever the free list said. */
    uint32_t *next = iop__shdict_next(d);
    uint32_t head = IOP__CHAIN_END, nfree = 0;
    for (uint32_t c = d->nchunks; c-- > 0;) {
        if (!marked(d, c)) {
            next[c] = head;
            head = c;
            nfree++;
        }
    }
    d->free_head = head;
    d->free_count = nfree;
    d->count = live;
}

static int broken(char *why, size_t whylen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int broken(char *why, size_t whylen, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (why && whylen)
        snprintf(why, whylen, "%s", msg);
    return iop__fail(-EUCLEAN, "iop_shdict_validate: %s", msg);
}

int iop__shdict_check(iop_shdict_t *d, char *why, size_t whylen)
{
    if (d->magic != IOP__SHDICT_MAGIC || atomic_load(&d->active) > 1)
        return broken(why, whylen, "header damaged");
    clear_marks(d);
    _Atomic uint32_t *t = iop__shdict_active(d);
    uint32_t live = 0, tombs = 0;
    for (uint32_t i = 0; i < d->nslots; i++) {
        uint32_t v = atomic_load_explicit(&t[i], memory_order_relaxed);
        if (v == IOP__SLOT_EMPTY)
            continue;
        if (v == IOP__SLOT_TOMB) {
            tombs++;
            continue;
        }
        const char *bad = claim_entry(d, IOP__SLOT_CHUNK(v));
        if (bad)
            return broken(why, whylen, "slot %u: %s", i, bad);
        int64_t at = lookup_slot(d, t, IOP__SLOT_CHUNK(v));
        if (at != (int64_t)i)
            return broken(why, whylen, "slot %u: key \"%s\" %s", i, iop__shdict_scratch_key(d),
                          at < 0 ? "cannot be found" : "is also in another slot");
        live++;
    }
    if (live != d->count || tombs != d->tombs)
        return broken(why, whylen, "%u keys and %u tombstones, counted as %u and %u",
                      live, tombs, d->count, d->tombs);
    uint32_t nfree = 0;
    for (uint32_t c = d->free_head; c != IOP__CHAIN_END; c = iop__shdict_next(d)[c]) {
        if (c >= d->nchunks)
            return broken(why, whylen, "free list leaves the arena");
        if (marked(d, c))
            return broken(why, whylen, "chunk %u is free and in use (or free twice)", c);
        mark(d, c, 1);
        nfree++;
    }
    if (nfree != d->free_count)
        return broken(why, whylen, "%u free chunks, counted as %u", nfree, d->free_count);
    for (uint32_t c = 0; c < d->nchunks; c++)
        if (!marked(d, c))
            return broken(why, whylen, "chunk %u is neither in use nor free (leaked)", c);
    return 0;
}
