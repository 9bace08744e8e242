/* Shared dict: creation, and the operations (see shdict_internal.h for the layout;
 * shdict_store.c has the byte streams, hashing, lookup and table rebuild).
 *
 * Every change follows one rule: write into chunks nobody references, then publish
 * with one release store into the active table; free what was unpublished after.
 * A writer killed anywhere leaves either the old or the new published state, plus
 * derived state (free list, counts) that the next locker rebuilds. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "error_internal.h"
#include "shdict_internal.h"

/* ---- chunks --------------------------------------------------------------------------- */

/* Does the chain of n chunks from first stay in the arena? The links were written
 * by other processes: every one is checked before it indexes next[]. */
static int chain_in_arena(const iop_shdict_t *d, uint32_t first, uint32_t n)
{
    const uint32_t *next = iop__shdict_next(d);
    uint32_t c = first;
    for (uint32_t i = 0; i < n; i++) {
        if (c >= d->nchunks)
            return 0;
        if (i + 1 < n)
            c = next[c];
    }
    return 1;
}

/* Detaches the first n chunks of the free list as one chain; CHAIN_END if short
 * (or if the list leaves the arena: see set_locked). */
static uint32_t alloc_chain(iop_shdict_t *d, uint32_t n)
{
    if (n == 0 || d->free_count < n || !chain_in_arena(d, d->free_head, n))
        return IOP__CHAIN_END;
    uint32_t *next = iop__shdict_next(d);
    uint32_t first = d->free_head, last = first;
    for (uint32_t i = 1; i < n; i++)
        last = next[last];
    d->free_head = next[last];
    d->free_count -= n;
    next[last] = IOP__CHAIN_END;
    return first;
}

/* Puts an unpublished entry's chain back on the free list. A chain that leaves the
 * arena is left alone and the free list rebuilt from what is published instead. */
static void free_chain(iop_shdict_t *d, uint32_t first)
{
    const iop__shdict_entry_t *e = iop__shdict_entry(d, first);
    uint32_t n = iop__shdict_chunks_for(d, e->key_len, e->val_len);
    if (!chain_in_arena(d, first, n)) {
        iop__shdict_repair(d);
        return;
    }
    uint32_t *next = iop__shdict_next(d);
    uint32_t last = first;
    for (uint32_t i = 1; i < n; i++)
        last = next[last];
    next[last] = d->free_head;
    d->free_head = first;
    d->free_count += n;
}

/* The header of the entry a table slot value refers to, if it is one a set could
 * have written; NULL if the memory says otherwise. Its lengths size copies into
 * the caller's buffer and the scratch space. */
static const iop__shdict_entry_t *entry_sane(const iop_shdict_t *d, uint32_t v)
{
    uint32_t first = IOP__SLOT_CHUNK(v);
    if (first >= d->nchunks)
        return NULL;
    const iop__shdict_entry_t *e = iop__shdict_entry(d, first);
    if (e->magic != IOP__ENTRY_MAGIC || e->key_len > d->max_key || e->val_len > d->max_value)
        return NULL;
    return e;
}

/* A damaged entry met by an operation: the repair drops it (and whatever else is
 * broken) and rebuilds the free list and counts; the operation fails. */
static int drop_damaged(iop_shdict_t *d, const char *what, const char *key)
{
    iop__shdict_repair(d);
    return iop__fail(-EUCLEAN, "%s: the entry of key \"%s\" was damaged (its sizes are beyond the "
                               "dict's maxima: its memory was written over); it has been dropped",
                     what, key);
}

/* ---- locking ---------------------------------------------------------------------------- */

static int dict_lock(iop_shdict_t *d)
{
    if (!d)
        return iop__fail(-EINVAL, "shdict: NULL dict");
    int r = iop_plock_lock(&d->lock, 0);
    if (r == IOP_PLOCK_OWNER_DIED) {
        iop__shdict_repair(d);
        r = 0;
    }
    return r;
}

static void dict_unlock(iop_shdict_t *d)
{
    iop_plock_unlock(&d->lock);
}

/* The key's length, or -ENAMETOOLONG / -EINVAL. */
static int64_t key_length(const iop_shdict_t *d, const char *key, const char *what)
{
    if (!d || !key)
        return iop__fail(-EINVAL, "%s: NULL dict or key", what);
    size_t len = strnlen(key, (size_t)d->max_key + 1);
    if (len > d->max_key)
        return iop__fail(-ENAMETOOLONG, "%s: key longer than %u bytes", what, d->max_key);
    return (int64_t)len;
}

/* ---- operations under the lock --------------------------------------------------------- */

/* Adds or replaces key (klen bytes, hash h) with the value. */
static int set_locked(iop_shdict_t *d, const char *key, uint32_t klen, uint32_t h,
                      const void *val, uint32_t vlen)
{
    uint32_t need = iop__shdict_chunks_for(d, klen, vlen);
    /* A free list that leaves the arena (memory written over) is rebuilt before the
     * lookup: the repair moves the entries to the other table. */
    if (d->free_count >= need && !chain_in_arena(d, d->free_head, need))
        iop__shdict_repair(d);
    _Atomic uint32_t *t = iop__shdict_active(d);
    uint32_t ins;
    int64_t slot = iop__shdict_find(d, t, key, klen, h, &ins);
    if (slot >= 0 && !entry_sane(d, atomic_load_explicit(&t[slot], memory_order_relaxed))) {
        iop__shdict_repair(d);     /* drops it: the new value replaces nothing */
        t = iop__shdict_active(d);
        slot = iop__shdict_find(d, t, key, klen, h, &ins);
    }
    if (slot < 0 && (d->count >= d->max_entries || ins == UINT32_MAX))
        return iop__fail(-ENOSPC, "iop_shdict_set: the dict holds its maximum of %u keys", d->max_entries);
    uint32_t first = alloc_chain(d, need);
    if (first == IOP__CHAIN_END)
        return iop__fail(-ENOSPC, "iop_shdict_set: no room in the arena (%u chunks needed, %u free)",
                         need, d->free_count);
    iop__shdict_entry_t *e = iop__shdict_entry(d, first);
    *e = (iop__shdict_entry_t){ IOP__ENTRY_MAGIC, h, klen, vlen };
    iop__chain_pos_t p = iop__chain_start(first);
    iop__chain_write(d, &p, key, klen);
    iop__chain_write(d, &p, val, vlen);
    if (slot >= 0) {
        uint32_t old = atomic_load_explicit(&t[slot], memory_order_relaxed);
        atomic_store_explicit(&t[slot], IOP__SLOT_REF(first), memory_order_release);
        free_chain(d, IOP__SLOT_CHUNK(old));
    } else {
        if (atomic_load_explicit(&t[ins], memory_order_relaxed) == IOP__SLOT_TOMB)
            d->tombs--;
        atomic_store_explicit(&t[ins], IOP__SLOT_REF(first), memory_order_release);
        d->count++;
    }
    return 0;
}

/* Copies the value of the entry at first from the start of its value. */
static void read_value(const iop_shdict_t *d, uint32_t first, void *buf, size_t len)
{
    iop__chain_pos_t p = iop__chain_start(first);
    iop__chain_skip(d, &p, iop__shdict_entry(d, first)->key_len);
    iop__chain_read(d, &p, buf, len);
}

/* ---- the API --------------------------------------------------------------------------------- */

ssize_t iop_shdict_get(iop_shdict_t *d, const char *key, void *buf, size_t cap)
{
    int64_t klen = key_length(d, key, "iop_shdict_get");
    if (klen < 0)
        return (ssize_t)klen;
    if (cap && !buf)
        return iop__fail(-EINVAL, "iop_shdict_get: NULL buffer");
    uint32_t h = iop__shdict_hash(key, (size_t)klen);
    int r = dict_lock(d);
    if (r < 0)
        return r;
    _Atomic uint32_t *t = iop__shdict_active(d);
    int64_t slot = iop__shdict_find(d, t, key, (uint32_t)klen, h, NULL);
    ssize_t len = -ENOENT;
    if (slot >= 0) {
        uint32_t v = atomic_load_explicit(&t[slot], memory_order_relaxed);
        if (!entry_sane(d, v)) {
            len = drop_damaged(d, "iop_shdict_get", key);
        } else {
            len = iop__shdict_entry(d, IOP__SLOT_CHUNK(v))->val_len;
            read_value(d, IOP__SLOT_CHUNK(v), buf, (size_t)len < cap ? (size_t)len : cap);
        }
    }
    dict_unlock(d);
    return len;
}

int iop_shdict_set(iop_shdict_t *d, const char *key, const void *val, size_t len)
{
    int64_t klen = key_length(d, key, "iop_shdict_set");
    if (klen < 0)
        return (int)klen;
    if (len > d->max_value)
        return iop__fail(-EMSGSIZE, "iop_shdict_set: value of %zu bytes, the maximum is %u",
                         len, d->max_value);
    if (len && !val)
        return iop__fail(-EINVAL, "iop_shdict_set: NULL value");
    uint32_t h = iop__shdict_hash(key, (size_t)klen);
    int r = dict_lock(d);
    if (r < 0)
        return r;
    r = set_locked(d, key, (uint32_t)klen, h, val, (uint32_t)len);
    dict_unlock(d);
    return r;
}

int iop_shdict_delete(iop_shdict_t *d, const char *key)
{
    int64_t klen = key_length(d, key, "iop_shdict_delete");
    if (klen < 0)
        return (int)klen;
    uint32_t h = iop__shdict_hash(key, (size_t)klen);
    int r = dict_lock(d);
    if (r < 0)
        return r;
    _Atomic uint32_t *t = iop__shdict_active(d);
    int64_t slot = iop__shdict_find(d, t, key, (uint32_t)klen, h, NULL);
    if (slot < 0) {
        r = -ENOENT;
    } else if (!entry_sane(d, atomic_load_explicit(&t[slot], memory_order_relaxed))) {
        r = drop_damaged(d, "iop_shdict_delete", key);
    } else {
        uint32_t old = atomic_load_explicit(&t[slot], memory_order_relaxed);
        atomic_store_explicit(&t[slot], IOP__SLOT_TOMB, memory_order_release);
        d->count--;
        d->tombs++;
        free_chain(d, IOP__SLOT_CHUNK(old));
        if (d->tombs > d->nslots / 4)
            iop__shdict_rehash(d);
    }
    dict_unlock(d);
    return r;
}

ssize_t iop_shdict_len(iop_shdict_t *d)
{
    int r = dict_lock(d);
    if (r < 0)
        return r;
    ssize_t n = d->count;
    dict_unlock(d);
    return n;
}

ssize_t iop_shdict_update(iop_shdict_t *d, const char *key, iop_shdict_update_fn fn, void *arg)
{
    int64_t klen = key_length(d, key, "iop_shdict_update");
    if (klen < 0)
        return (ssize_t)klen;
    if (!fn)
        return iop__fail(-EINVAL, "iop_shdict_update: NULL callback");
    uint32_t h = iop__shdict_hash(key, (size_t)klen);
    int r = dict_lock(d);
    if (r < 0)
        return r;
    _Atomic uint32_t *t = iop__shdict_active(d);
    int64_t slot = iop__shdict_find(d, t, key, (uint32_t)klen, h, NULL);
    unsigned char *old = NULL, *out = iop__shdict_scratch_val(d, 1);
    ssize_t old_len = -ENOENT;
    if (slot >= 0 && !entry_sane(d, atomic_load_explicit(&t[slot], memory_order_relaxed))) {
        r = drop_damaged(d, "iop_shdict_update", key);
        dict_unlock(d);
        return r;
    }
    if (slot >= 0) {
        uint32_t first = IOP__SLOT_CHUNK(atomic_load_explicit(&t[slot], memory_order_relaxed));
        old = iop__shdict_scratch_val(d, 0);
        old_len = iop__shdict_entry(d, first)->val_len;
        read_value(d, first, old, (size_t)old_len);
    }
    ssize_t len = fn(old, old_len, out, d->max_value, arg);
    if (len > (ssize_t)d->max_value)
        len = iop__fail(-EMSGSIZE, "iop_shdict_update: the callback returned %zd bytes, the maximum is %u",
                        len, d->max_value);
    if (len >= 0) {
        r = set_locked(d, key, (uint32_t)klen, h, out, (uint32_t)len);
        if (r < 0)
            len = r;
    }
    dict_unlock(d);
    return len;
}

typedef struct incr_args {
    int64_t delta;
    int64_t sum;
} incr_args_t;

static ssize_t add_to_counter(const void *old, ssize_t old_len, void *out, size_t cap, void *arg)
{
    incr_args_t *a = arg;
    int64_t v = 0;
    if (old_len >= 0 && old_len != (ssize_t)sizeof v)
        return iop__fail(-EINVAL, "iop_shdict_incr: the value is %zd bytes, not an int64_t", old_len);
    if (cap < sizeof v)
        return iop__fail(-EMSGSIZE, "iop_shdict_incr: max_value is below 8 bytes");
    if (old)
        memcpy(&v, old, sizeof v);
    a->sum = (int64_t)((uint64_t)v + (uint64_t)a->delta);   /* wraps, never UB */
    memcpy(out, &a->sum, sizeof a->sum);
    return sizeof a->sum;
}

int iop_shdict_incr(iop_shdict_t *d, const char *key, int64_t delta, int64_t *result)
{
    incr_args_t a = { delta, 0 };
    ssize_t r = iop_shdict_update(d, key, add_to_counter, &a);
    if (r < 0)
        return (int)r;
    if (result)
        *result = a.sum;
    return 0;
}

int iop_shdict_foreach(iop_shdict_t *d, iop_shdict_visit_fn fn, void *arg)
{
    if (!d || !fn)
        return iop__fail(-EINVAL, "iop_shdict_foreach: NULL dict or callback");
    int r = dict_lock(d);
    if (r < 0)
        return r;
    /* Damaged entries are dropped before the visit, not copied by their sizes. */
    uint64_t dropped = d->dropped;
    _Atomic uint32_t *t = iop__shdict_active(d);
    for (uint32_t i = 0; i < d->nslots; i++) {
        uint32_t v = atomic_load_explicit(&t[i], memory_order_relaxed);
        if (v != IOP__SLOT_EMPTY && v != IOP__SLOT_TOMB && !entry_sane(d, v)) {
            iop__shdict_repair(d);
            t = iop__shdict_active(d);
            break;
        }
    }
    char *key = iop__shdict_scratch_key(d);
    unsigned char *val = iop__shdict_scratch_val(d, 0);
    for (uint32_t i = 0; i < d->nslots && r == 0; i++) {
        uint32_t v = atomic_load_explicit(&t[i], memory_order_relaxed);
        if (v == IOP__SLOT_EMPTY || v == IOP__SLOT_TOMB)
            continue;
        const iop__shdict_entry_t *e = iop__shdict_entry(d, IOP__SLOT_CHUNK(v));
        iop__chain_pos_t p = iop__chain_start(IOP__SLOT_CHUNK(v));
        iop__chain_read(d, &p, key, e->key_len);
        key[e->key_len] = '\0';
        iop__chain_read(d, &p, val, e->val_len);
        r = fn(key, val, e->val_len, arg);
    }
    if (r == 0 && d->dropped != dropped)
        r = iop__fail(-EUCLEAN, "iop_shdict_foreach: %llu damaged entries (memory written over) were "
                                "dropped before the visit; the others were visited",
                      (unsigned long long)(d->dropped - dropped));
    dict_unlock(d);
    return r;
}

int iop_shdict_stats(iop_shdict_t *d, iop_shdict_stats_t *out)
{
    if (!out)
        return iop__fail(-EINVAL, "iop_shdict_stats: out is NULL");
    int r = dict_lock(d);
    if (r < 0)
        return r;
    *out = (iop_shdict_stats_t){
        .entries = d->count, .max_entries = d->max_entries, .slots = d->nslots,
        .tombstones = d->tombs, .chunks = d->nchunks, .chunks_free = d->free_count,
        .chunk_size = d->chunk_size, .repairs = d->repairs, .dropped = d->dropped,
    };
    dict_unlock(d);
    return 0;
}

int iop_shdict_validate(iop_shdict_t *d, char *why, size_t whylen)
{
    int r = dict_lock(d);
    if (r < 0)
        return r;
    r = iop__shdict_check(d, why, whylen);
    dict_unlock(d);
    return r;
}

/* ---- creation ---------------------------------------------------------------------------------- */

typedef struct geometry {
    uint32_t max_entries, max_key, max_value, chunk_size, chunk_shift, nslots, nchunks;
    uint64_t off_table[2], off_next, off_marks, off_scratch, off_chunks, size;
} geometry_t;

static uint64_t align64(uint64_t v) { return (v + 63) & ~(uint64_t)63; }

/* Sizes and offsets from the options; -EINVAL with a message if out of range. */
static int plan(const iop_shdict_opts_t *o, geometry_t *g)
{
    if (o && o->size < sizeof *o)
        return iop__fail(-EINVAL, "iop_shdict_create: opts.size is %u, not sizeof(iop_shdict_opts_t) (%zu)",
                         o->size, sizeof *o);
    g->max_entries = o && o->max_entries ? o->max_entries : 1024;
    g->max_key = o && o->max_key ? o->max_key : 64;
    g->max_value = o && o->max_value ? o->max_value : 1024;
    g->chunk_size = o && o->chunk_size ? o->chunk_size : 64;
    if (g->max_entries > (1u << 28) || g->max_key > (1u << 20) || g->max_value > (1u << 30))
        return iop__fail(-EINVAL, "iop_shdict_create: max_entries <= 2^28, max_key <= 2^20 and "
                                  "max_value <= 2^30");
    if (g->chunk_size < 32 || g->chunk_size > 65536 || (g->chunk_size & (g->chunk_size - 1)))
        return iop__fail(-EINVAL, "iop_shdict_create: chunk_size must be a power of two from 32 to 65536");
    g->chunk_shift = (uint32_t)__builtin_ctz(g->chunk_size);
    g->nslots = 8;
    while (g->nslots < 2 * g->max_entries)
        g->nslots *= 2;
    uint64_t entry_max = sizeof(iop__shdict_entry_t) + (uint64_t)g->max_key + g->max_value;
    uint64_t chain_max = (entry_max + g->chunk_size - 1) >> g->chunk_shift;
    /* The default holds every entry at its largest, and one more: replacing a value
     * builds the new entry before the old one goes, so a full dict can still update. */
    uint64_t arena = o && o->arena_bytes ? o->arena_bytes
                                         : ((uint64_t)g->max_entries + 1) * (chain_max << g->chunk_shift);
    uint64_t nchunks = (arena + g->chunk_size - 1) >> g->chunk_shift;
    if (nchunks == 0 || nchunks >= UINT32_MAX - 2 || (nchunks << g->chunk_shift) > (1ull << 44))
        return iop__fail(-EINVAL, "iop_shdict_create: arena of %llu bytes out of range",
                         (unsigned long long)arena);
    g->nchunks = (uint32_t)nchunks;
    uint64_t off = align64(sizeof(struct iop_shdict));
    for (int i = 0; i < 2; i++) {
        g->off_table[i] = off;
        off = align64(off + (uint64_t)g->nslots * sizeof(uint32_t));
    }
    g->off_next = off;
    off = align64(off + nchunks * sizeof(uint32_t));
    g->off_marks = off;
    off = align64(off + (nchunks + 63) / 64 * sizeof(uint64_t));
    g->off_scratch = off;
    off = align64(off + g->max_key + 1 + 2 * (uint64_t)g->max_value);
    g->off_chunks = off;
    g->size = off + (nchunks << g->chunk_shift);
    uint64_t phys = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
    if (g->size > phys / 2)        /* allocated now, in full: it would only end in the OOM killer */
        return iop__fail(-ENOMEM, "iop_shdict_create: %llu bytes is more than half of the machine's memory "
                         "(lower max_entries, max_value or arena_bytes)", (unsigned long long)g->size);
    return 0;
}

/* A shared mapping whose pages exist now (memfd + fallocate): no SIGBUS later. */
static int map_shared(uint64_t size, void **out)
{
    int fd = memfd_create("ioplex-shdict", MFD_CLOEXEC);
    if (fd < 0)
        return iop__fail(-errno, "iop_shdict_create: memfd_create: %s", iop_strerror(errno));
    int r = 0;
    if (ftruncate(fd, (off_t)size) < 0 || fallocate(fd, 0, 0, (off_t)size) < 0)
        r = iop__fail(-errno, "iop_shdict_create: allocating %llu bytes of shared memory: %s",
                      (unsigned long long)size, iop_strerror(errno));
    void *p = r ? MAP_FAILED : mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (!r && p == MAP_FAILED)
        r = iop__fail(-errno, "iop_shdict_create: mmap: %s", iop_strerror(errno));
    close(fd);
    *out = p;
    return r;
}

int iop_shdict_create(iop_shdict_t **out, const iop_shdict_opts_t *opts)
{
    if (!out)
        return iop__fail(-EINVAL, "iop_shdict_create: out is NULL");
    *out = NULL;
    geometry_t g = { 0 };
    int r = plan(opts, &g);
    if (r < 0)
        return r;
    void *p;
    r = map_shared(g.size, &p);
    if (r < 0)
        return r;
    iop_shdict_t *d = p;           /* the memfd starts zeroed: both tables empty */
    r = iop_plock_init(&d->lock);
    if (r < 0) {
        munmap(p, g.size);
        return r;
    }
    d->map_size = g.size;
    d->max_entries = g.max_entries;
    d->max_key = g.max_key;
    d->max_value = g.max_value;
    d->chunk_size = g.chunk_size;
    d->chunk_shift = g.chunk_shift;
    d->nchunks = g.nchunks;
    d->nslots = g.nslots;
    memcpy(d->off_table, g.off_table, sizeof d->off_table);
    d->off_next = g.off_next;
    d->off_marks = g.off_marks;
    d->off_scratch = g.off_scratch;
    d->off_chunks = g.off_chunks;
    atomic_init(&d->active, 0);
    uint32_t *next = iop__shdict_next(d);
    for (uint32_t c = 0; c < g.nchunks; c++)
        next[c] = c + 1 < g.nchunks ? c + 1 : IOP__CHAIN_END;
    d->free_head = 0;
    d->free_count = g.nchunks;
    d->magic = IOP__SHDICT_MAGIC;
    *out = d;
    return 0;
}

void iop_shdict_free(iop_shdict_t *d)
{
    if (!d)
        return;
    iop_plock_fini(&d->lock);
    munmap(d, d->map_size);
}
