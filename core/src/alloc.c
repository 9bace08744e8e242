/* The allocator seam: jemalloc's non-standard API when built with it (sized frees,
 * no malloc interposition needed), libc otherwise. Counts are per thread so that a
 * benchmark can read its own thread's allocations without contention.
 *
 * Under valgrind, or with IOPLEX_ALLOC=libc, a jemalloc build uses libc too:
 * memcheck sees malloc/free but not mallocx/dallocx, so it could neither check
 * nor leak-track our blocks. Decided once at load time, before any allocation. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "ioplex/alloc.h"
#ifdef IOPLEX_USE_JEMALLOC
#include <jemalloc/jemalloc.h>
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif
#endif

static _Thread_local iop_alloc_stats_t tl_stats;

/* Failure injection (tests only, see alloc.h): allocations left before they start
 * failing, -1 = never. One predictable branch per allocation when unset. */
static _Thread_local long tl_fail_after = -1;
static _Thread_local int tl_fail_once;
static _Thread_local long tl_failed;

static inline int fail_now(void)
{
    if (__builtin_expect(tl_fail_after < 0, 1))
        return 0;
    if (tl_fail_after > 0) {
        tl_fail_after--;
        return 0;
    }
    tl_failed++;
    if (tl_fail_once)
        tl_fail_after = -1;
    errno = ENOMEM;
    return 1;
}

long iop__alloc_fail_after(long n, int once)
{
    long failed = tl_failed;
    tl_fail_after = n < 0 ? -1 : n;
    tl_fail_once = once;
    tl_failed = 0;
    return failed;
}

#ifdef IOPLEX_USE_JEMALLOC
static int use_libc;

__attribute__((constructor)) static void alloc_choose(void)
{
    const char *e = getenv("IOPLEX_ALLOC");
    use_libc = RUNNING_ON_VALGRIND || (e && strcmp(e, "libc") == 0);
}
#define JE (!use_libc)
#endif

void *iop_malloc(size_t size)
{
    if (fail_now())
        return NULL;
    tl_stats.allocs++;
#ifdef IOPLEX_USE_JEMALLOC
    if (JE)
        return mallocx(size ? size : 1, 0);
#endif
    return malloc(size ? size : 1);
}

void *iop_calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size) {
        errno = ENOMEM;
        return NULL;
    }
    if (fail_now())
        return NULL;
    tl_stats.allocs++;
#ifdef IOPLEX_USE_JEMALLOC
    if (JE) {
        size_t bytes = n * size;
        return mallocx(bytes ? bytes : 1, MALLOCX_ZERO);
    }
#endif
    return calloc(n ? n : 1, size ? size : 1);
}

void *iop_realloc(void *ptr, size_t size)
{
    if (!ptr)
        return iop_malloc(size);
    if (fail_now())
        return NULL;
    tl_stats.allocs++;
#ifdef IOPLEX_USE_JEMALLOC
    if (JE)
        return rallocx(ptr, size ? size : 1, 0);
#endif
    return realloc(ptr, size ? size : 1);
}

void iop_free(void *ptr)
{
    if (!ptr)
        return;
    tl_stats.frees++;
#ifdef IOPLEX_USE_JEMALLOC
    if (JE) {
        dallocx(ptr, 0);
        return;
    }
#endif
    free(ptr);
}

void iop_alloc_stats(iop_alloc_stats_t *out) { *out = tl_stats; }

const char *iop_alloc_name(void)
{
#ifdef IOPLEX_USE_JEMALLOC
    if (JE)
        return "jemalloc";
#endif
    return "libc";
}
