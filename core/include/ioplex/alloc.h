/* ioplex — the one allocator seam. Backed by jemalloc (mallocx / sdallocx) unless
 * built with IOPLEX_WITH_JEMALLOC=OFF (sanitizer builds), then by libc. Counts live
 * per thread so that benchmarks can show how many allocations a hot path makes. */
#ifndef IOPLEX_ALLOC_H
#define IOPLEX_ALLOC_H

#include "common.h"

IOP_EXPORT void *iop_malloc(size_t size);
IOP_EXPORT void *iop_calloc(size_t n, size_t size);
IOP_EXPORT void *iop_realloc(void *ptr, size_t size);
IOP_EXPORT void iop_free(void *ptr);

typedef struct iop_alloc_stats {
    uint64_t allocs;    /* iop_malloc / iop_calloc / growing iop_realloc on this thread */
    uint64_t frees;
} iop_alloc_stats_t;

/* This thread's counts since it started. */
IOP_EXPORT void iop_alloc_stats(iop_alloc_stats_t *out);

/* Name of the allocator behind the seam: "jemalloc" or "libc". */
IOP_EXPORT const char *iop_alloc_name(void);

/* ---- tests only: not part of the API ----------------------------------------------
 * Allocation-failure injection for out-of-memory sweeps. After n more successful
 * allocations on the calling thread (iop_malloc / iop_calloc / iop_realloc, the
 * backends' included), the next one returns NULL with errno = ENOMEM, and so does
 * every later one until reset with n = -1 (once = 0), or only that one (once = 1).
 * Returns how many allocations it failed since the previous call. */
IOP_EXPORT long iop__alloc_fail_after(long n, int once);

#endif
