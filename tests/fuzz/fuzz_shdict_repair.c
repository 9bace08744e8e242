/* libFuzzer harness for the shared dict's repair (core/src/ipc/shdict_check.c): what
 * the next locker does after a process died holding the lock, whatever the dead
 * one left in the shared memory. The input is a program: set and delete keys, then
 * scribble on the memory (table slots, chain links, chunk bytes, the active table
 * index, the derived counts) and "die" (the next lock reports its owner died).
 * Properties:
 *  - after the repair, the dict passes its own consistency check (iop_shdict_validate),
 *    whatever was scribbled, and every later set, get and delete keeps it so;
 *  - a key set (or deleted) reads back as such until the next scribble, and the
 *    dict takes a new key after the repair.
 * The lock is stood in for (one process, no contention).
 * Built with clang -fsanitize=fuzzer (run-fuzz.sh) and by gcc with replay_main.c. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ioplex.h"
#include "shdict_internal.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)
#define NKEYS 8
#define MAX_VALUE 40
#define UNKNOWN (-1)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- the stand-ins ------------------------------------------------------------------------ */

static int owner_died;

int iop__fail(int err, const char *fmt, ...);
int iop__fail(int err, const char *fmt, ...) { (void)fmt; return err; }
const char *iop_strerror(int err) { return strerror(err < 0 ? -err : err); }
int iop_plock_init(iop_plock_t *l) { (void)l; return 0; }
void iop_plock_fini(iop_plock_t *l) { (void)l; }
int iop_plock_unlock(iop_plock_t *l) { (void)l; return 0; }

int iop_plock_lock(iop_plock_t *l, uint64_t deadline)
{
    (void)l, (void)deadline;
    if (owner_died) {
        owner_died = 0;
        return IOP_PLOCK_OWNER_DIED;
    }
    return 0;
}

/* ---- the program ---------------------------------------------------------------------------- */

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader_t;

static unsigned take(reader_t *r)
{
    if (!r->n)
        return 0;
    r->n--;
    return *r->p++;
}

static uint32_t take32(reader_t *r) { return take(r) | take(r) << 8 | take(r) << 16 | (uint32_t)take(r) << 24; }

/* Keys "k0" .. "k7" and longer ones, so that entries span several chunks. */
static void key_name(unsigned i, char *key)
{
    static const char *const names[NKEYS] = { "k0", "k1", "key-two", "a-rather-long-k3",
                                               "k4", "kkkkkkkkkkkkkkk5", "6", "seven" };
    strcpy(key, names[i % NKEYS]);
}

static size_t value_of(unsigned i, unsigned gen, uint8_t *v)
{
    size_t len = (i * 7 + gen * 3) % (MAX_VALUE + 1);
    for (size_t k = 0; k < len; k++)
        v[k] = (uint8_t)(i * 31 + gen * 17 + k);
    return len;
}

static void check_valid(iop_shdict_t *d)
{
    char why[256];
    CHECK(iop_shdict_validate(d, why, sizeof why) == 0);
}

/* One byte of the shared memory that a dying writer (or a stray pointer) may have
 * touched: anywhere from the active table to the end of the chunks, the active
 * index and the derived fields. */
static void scribble(iop_shdict_t *d, reader_t *r)
{
    unsigned what = take(r) % 6;
    uint32_t at = take32(r), v = take32(r);
    switch (what) {
    case 0: {                      /* a table slot: empty, tomb, a chunk, or anything */
        _Atomic uint32_t *t = iop__shdict_active(d);
        uint32_t kinds[4] = { IOP__SLOT_EMPTY, IOP__SLOT_TOMB, IOP__SLOT_REF(v % (d->nchunks + 2)), v };
        atomic_store(&t[at % d->nslots], kinds[(v >> 30) & 3]);
        break;
    }
    case 1:                        /* a chain link */
        iop__shdict_next(d)[at % d->nchunks] = (v & 1) ? IOP__CHAIN_END : (v >> 1) % (d->nchunks + 2);
        break;
    case 2: {                      /* a byte of a chunk: entry headers, keys, values */
        uint64_t bytes = (uint64_t)d->nchunks << d->chunk_shift;
        iop__shdict_chunk(d, 0)[at % bytes] = (unsigned char)v;
        break;
    }
    case 3:
        atomic_store(&d->active, v & 1);
        break;
    case 4:                        /* the derived state: the repair rebuilds it */
        d->count = v;
        d->tombs = at;
        break;
    default:
        d->free_head = v % (d->nchunks + 2);
        d->free_count = at;
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    iop_shdict_opts_t o = { .size = sizeof o, .max_entries = NKEYS, .max_key = 16,
                            .max_value = MAX_VALUE, .chunk_size = 32 };
    iop_shdict_t *d;
    CHECK(iop_shdict_create(&d, &o) == 0);
    owner_died = 0;
    int state[NKEYS];              /* UNKNOWN, 0 = absent, else the generation of its value */
    for (int i = 0; i < NKEYS; i++)
        state[i] = 0;
    int scribbled = 0;
    reader_t r = { data, size };
    char key[32];
    uint8_t v[MAX_VALUE], got[MAX_VALUE];
    for (int ops = 0; r.n && ops < 64; ops++) {
        unsigned op = take(&r), i = (op >> 3) % NKEYS;
        key_name(i, key);
        switch (op & 3) {
        case 0: {
            int g = (int)take(&r) + 1;
            size_t len = value_of(i, (unsigned)g, v);
            int e = iop_shdict_set(d, key, v, len);
            CHECK(e == 0 || (e == -ENOSPC && scribbled));
            state[i] = e == 0 ? g : UNKNOWN;
            break;
        }
        case 1: {
            int e = iop_shdict_delete(d, key);
            CHECK(state[i] == UNKNOWN || e == (state[i] ? 0 : -ENOENT));
            state[i] = 0;
            break;
        }
        case 2:
            break;                 /* a read */
        default:
            /* A writer scribbles and dies holding the lock: the next call repairs,
             * and what the keys hold is anybody's guess until they are set again. */
            scribble(d, &r);
            owner_died = 1;
            scribbled = 1;
            for (int k = 0; k < NKEYS; k++)
                state[k] = UNKNOWN;
            continue;
        }
        ssize_t n = iop_shdict_get(d, key, got, sizeof got);
        CHECK(!owner_died);        /* a call above repaired */
        if (state[i] > 0) {
            size_t len = value_of(i, (unsigned)state[i], v);
            CHECK(n == (ssize_t)len && memcmp(got, v, len) == 0);
        } else if (state[i] == 0) {
            CHECK(n == -ENOENT);
        }
        check_valid(d);
    }
    check_valid(d);                /* after a repair, if one is due */
    /* The repaired dict still takes a key, unless it is full (or a scribble made
     * it so). */
    size_t len = value_of(3, 1000, v);
    int e = iop_shdict_set(d, "fresh", v, len);
    CHECK(e == 0 || (e == -ENOSPC && (scribbled || iop_shdict_len(d) == NKEYS)));
    if (e == 0)
        CHECK(iop_shdict_get(d, "fresh", got, sizeof got) == (ssize_t)len && memcmp(got, v, len) == 0);
    check_valid(d);
    iop_shdict_free(d);
    return 0;
}
