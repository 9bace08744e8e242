/* ioplex — shared dict: string keys to byte values, shared by the processes forked
 * after its creation (Python's Manager().dict(), without a manager process).
 *
 * The whole dict is one fixed-size shared memory segment (a memfd whose pages are
 * allocated at creation, so running out of memory is an error then, not a SIGBUS
 * later): a hash table of entry references and an arena of fixed-size chunks that
 * hold each entry (key and value) as a chain. Nothing grows: a full dict says
 * -ENOSPC.
 *
 * Every call takes the dict's robust process lock (ioplex/plock.h): from a
 * coroutine it parks only that coroutine (and honours its scoped deadline,
 * -ETIMEDOUT, and cancel, -ECANCELED); outside coroutines it waits in the kernel.
 *
 * Crash safety: a process killed at any instruction, even inside a call, leaves
 * the dict readable and usable by the others. A change is written into chunks no
 * one can see, then published with one store into the table; whatever else the
 * dead writer touched (free list, counts) is rebuilt by the next caller, who gets
 * IOP_PLOCK_OWNER_DIED from the lock and runs a repair pass first. The dead
 * writer's own change is either fully there or not at all.
 *
 * Errors (-errno): -ENAMETOOLONG key longer than max_key, -EMSGSIZE value larger
 * than max_value, -ENOENT no such key, -ENOSPC no room (table or arena), -EDEADLK
 * called from inside a callback of the same dict, -EINVAL bad arguments, -EUCLEAN
 * an entry whose sizes are beyond the maxima (the shared memory was written over
 * from outside): it is dropped (counted in stats.dropped) and the call fails; a set
 * of that key replaces it, and foreach visits the others first. Sizes, links and
 * references read from the segment are checked before they size a copy or index
 * anything; a damaged free list is rebuilt by a repair pass. */
#ifndef IOPLEX_SHDICT_H
#define IOPLEX_SHDICT_H

#include <sys/types.h>
#include "common.h"

typedef struct iop_shdict iop_shdict_t;

typedef struct iop_shdict_opts {
    uint32_t size;             /* sizeof(iop_shdict_opts_t) */
    uint32_t max_entries;      /* keys it holds at most (0 = 1024) */
    uint32_t max_key;          /* longest key, in bytes without the NUL (0 = 64) */
    uint32_t max_value;        /* largest value, in bytes (0 = 1024) */
    uint32_t chunk_size;       /* arena unit, a power of two from 32 to 65536 (0 = 64) */
    uint64_t arena_bytes;      /* room for entries (0 = every entry at its largest, plus
                                * one). An entry takes 16 + key + value bytes, rounded up
                                * to whole chunks; replacing a value needs room for the
                                * new entry while the old one still exists. A dict of
                                * more than half the machine's memory is -ENOMEM. */
} iop_shdict_opts_t;

/* Creates a dict (opts NULL = all defaults). Before fork: *out is valid in this
 * process and in every child forked after. 0 or -errno. */
IOP_EXPORT int iop_shdict_create(iop_shdict_t **out, const iop_shdict_opts_t *opts);

/* Unmaps the dict in this process; the other processes keep theirs. Its lock's
 * eventfd is closed as by iop_plock_fini (see there about loops that waited). */
IOP_EXPORT void iop_shdict_free(iop_shdict_t *d);

/* Copies key's value into buf, at most cap bytes (buf may be NULL when cap is 0),
 * and returns its full length: a result above cap means buf was too small. */
IOP_EXPORT ssize_t iop_shdict_get(iop_shdict_t *d, const char *key, void *buf, size_t cap);

/* Sets key to the len bytes at val (adding the key or replacing its value). 0. */
IOP_EXPORT int iop_shdict_set(iop_shdict_t *d, const char *key, const void *val, size_t len);

/* Removes key. 0, or -ENOENT. */
IOP_EXPORT int iop_shdict_delete(iop_shdict_t *d, const char *key);

/* The number of keys. */
IOP_EXPORT ssize_t iop_shdict_len(iop_shdict_t *d);

/* Atomic read-modify-write, under the lock. fn gets key's value (old, old_len
 * bytes; or NULL and -ENOENT when the key is missing), writes the new value into
 * out (cap = max_value bytes) and returns its length; or returns a -errno to leave
 * the dict unchanged. update returns what fn returned, or an error of its own. fn
 * must not call this dict (-EDEADLK) and should be short: every other user waits. */
typedef ssize_t (*iop_shdict_update_fn)(const void *old, ssize_t old_len, void *out,
                                        size_t cap, void *arg);
IOP_EXPORT ssize_t iop_shdict_update(iop_shdict_t *d, const char *key,
                                     iop_shdict_update_fn fn, void *arg);

/* A counter: adds delta to key's value, a native int64_t (a missing key counts as
 * 0), and stores the sum in *result (may be NULL). 0, or -EINVAL if the value there
 * is not 8 bytes long. */
IOP_EXPORT int iop_shdict_incr(iop_shdict_t *d, const char *key, int64_t delta, int64_t *result);

/* Calls fn for every entry, under the lock (so it sees one consistent state, and
 * every other user waits until it is done), in no particular order. key and val
 * are copies, valid during the call. A non-zero return from fn stops the walk and
 * is returned. fn must not call this dict (-EDEADLK). */
typedef int (*iop_shdict_visit_fn)(const char *key, const void *val, size_t len, void *arg);
IOP_EXPORT int iop_shdict_foreach(iop_shdict_t *d, iop_shdict_visit_fn fn, void *arg);

typedef struct iop_shdict_stats {
    uint64_t entries;          /* keys now */
    uint64_t max_entries;
    uint64_t slots;            /* hash table slots (a power of two) */
    uint64_t tombstones;       /* deleted slots not yet reclaimed */
    uint64_t chunks;           /* arena chunks in all */
    uint64_t chunks_free;
    uint64_t chunk_size;
    uint64_t repairs;          /* repair passes run (after a holder died, or on damage) */
    uint64_t dropped;          /* published entries repairs found broken and dropped
                                * (always 0 unless memory was corrupted from outside) */
} iop_shdict_stats_t;
IOP_EXPORT int iop_shdict_stats(iop_shdict_t *d, iop_shdict_stats_t *out);

/* Checks the whole structure (every published entry well-formed and findable, no
 * chunk used twice, free list, counts): 0, or -EUCLEAN with what is wrong in why
 * (and in iop_last_error()). For tests and debugging; O(size of the dict). */
IOP_EXPORT int iop_shdict_validate(iop_shdict_t *d, char *why, size_t whylen);

#endif
