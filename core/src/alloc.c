/* The allocator seam: jemalloc's non-standard API when built with it (sized frees,
 * no malloc interposition needed), libc otherwise. Counts are per thread so that a
 * benchmark can read its own thread's allocations without contention. */
#include <errno.h>
#include <stdlib.h>
#include "ioplex/alloc.h"
#ifdef IOPLEX_USE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

static _Thread_local iop_alloc_stats_t tl_stats;

void *iop_malloc(size_t size)
{
    tl_stats.allocs++;
#ifdef IOPLEX_USE_JEMALLOC
    return mallocx(size ? size : 1, 0);
#else
    return malloc(size ? size : 1);
#endif
}

void *iop_calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size) {
        errno = ENOMEM;
        return NULL;
    }
    tl_stats.allocs++;
#ifdef IOPLEX_USE_JEMALLOC
    size_t bytes = n * size;
    return mallocx(bytes ? bytes : 1, MALLOCX_ZERO);
#else
    return calloc(n ? n : 1, size ? size : 1);
#endif
}

void *iop_realloc(void *ptr, size_t size)
{
    if (!ptr)
        return iop_malloc(size);
    tl_stats.allocs++;
#ifdef IOPLEX_USE_JEMALLOC
    return rallocx(ptr, size ? size : 1, 0);
#else
    return realloc(ptr, size ? size : 1);
#endif
}

void iop_free(void *ptr)
{
    if (!ptr)
        return;
    tl_stats.frees++;
#ifdef IOPLEX_USE_JEMALLOC
    dallocx(ptr, 0);
#else
    free(ptr);
#endif
}

void iop_alloc_stats(iop_alloc_stats_t *out) { *out = tl_stats; }

const char *iop_alloc_name(void)
{
#ifdef IOPLEX_USE_JEMALLOC
    return "jemalloc";
#else
    return "libc";
#endif
}
