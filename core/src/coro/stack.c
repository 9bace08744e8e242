/* Coroutine stacks: mmap'ed, pooled, protected by a guard page or a canary.
 *
 * Layout of one mapping (the stack grows down, towards map):
 *   guard:  [ PROT_NONE page | usable stack ]    two kernel memory regions
 *   canary: [ 64-byte canary | usable stack ]    one region (neighbours may merge)
 * lo is the start of the usable part; the size asked for is rounded up so that the
 * usable part is at least that big.
 *
 * A pool keeps released stacks by (size, protection) class for reuse: a pooled get
 * or put is an array push or pop, a fresh one an mmap (+ mprotect) and later a
 * munmap, thousands of times slower.
 *
 * Process-wide state (a signal handler is process-wide, and so is the kernel's map
 * count limit): a table of guard ranges that the SIGSEGV handler searches, and the
 * count of regions made here for the map-limit message. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include "error_internal.h"
#include "ioplex/alloc.h"
#include "ioplex/coro.h"
#include "stack.h"
#include "stack_guard.h"

#include "sanitizer_internal.h"
#if IOP__ASAN
#include <sanitizer/asan_interface.h>
#define IOP__NO_ASAN __attribute__((no_sanitize_address))
#else
#define IOP__NO_ASAN
#endif

#define DEFAULT_SIZE   (64u * 1024u)
#define CANARY_WORDS   8
#define CANARY_BYTES   (CANARY_WORDS * sizeof(uint64_t))
#define CANARY_SEED    0x10b1e5c0a57ac4e5ull
#define POOL_CLASSES   8
#define NO_SLOT        UINT32_MAX

/* Stacks of one size and protection kept for reuse, most recently put last. */
struct stack_class {
    size_t size;          /* usable size; 0 = class unused */
    uint32_t flags;
    uint32_t n;
    iop__stack_t *kept;   /* max_kept entries, allocated on first put */
};

struct iop__stack_pool {
    uint32_t max_kept;
    uint32_t nkept;
    size_t page;
    struct stack_class cls[POOL_CLASSES];
};

/* Memory regions (kernel VMAs) made here and still mapped, for the limit message. */
static atomic_long g_regions;

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

/* ---- canary ------------------------------------------------------------------------ */

/* Each word depends on its address, so a stale copy of another stack's canary does
 * not pass. */
static uint64_t canary_word(const uint64_t *at)
{
    return CANARY_SEED ^ (uint64_t)(uintptr_t)at;
}

static void canary_write(const iop__stack_t *s)
{
    uint64_t *w = (uint64_t *)s->map;
    for (int i = 0; i < CANARY_WORDS; i++)
        w[i] = canary_word(&w[i]);
}

/* An overflowing frame may be poisoned by ASan: read the canary as raw memory. */
IOP__NO_ASAN void iop__stack_check(const iop__stack_t *s)
{
    const volatile uint64_t *w = (const volatile uint64_t *)s->map;
    uint64_t diff = 0;
    for (int i = 0; i < CANARY_WORDS; i++)
        diff |= w[i] ^ canary_word((const uint64_t *)&w[i]);
    if (diff == 0)
        return;
    iop__guard_report(s, "its canary (the lowest bytes of the stack) was overwritten");
    abort();   /* the stack below this coroutine's frames is corrupt: a broken invariant */
}

/* ---- mapping ------------------------------------------------------------------------ */

/* Lines of /proc/self/maps: the process's memory regions right now. -1 if unknown. */
static long count_process_maps(void)
{
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char buf[16384];
    long lines = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; i++)
            lines += buf[i] == '\n';
    close(fd);
    return lines;
}

/* Regions the kernel allows per process (vm.max_map_count); -1 if unknown. */
long iop__max_map_count(void)
{
    int fd = open("/proc/sys/vm/max_map_count", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char buf[32];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    return strtol(buf, NULL, 10);
}

/* The error for a failed mmap / mprotect: when the process is at the kernel's map
 * count limit, say so, with the two ways out. */
static int map_failure(int err, const char *what, size_t len, uint32_t flags)
{
    if (err == ENOMEM) {
        /* Reading the map list costs milliseconds with tens of thousands of regions:
         * a program spawning on at the limit re-reads it at most once a second. */
        static _Atomic long last_in_use;
        static _Atomic time_t last_read;
        time_t now = time(NULL);
        long limit = iop__max_map_count();
        long in_use = atomic_load_explicit(&last_in_use, memory_order_relaxed);
        if (atomic_exchange_explicit(&last_read, now, memory_order_relaxed) != now) {
            in_use = count_process_maps();
            atomic_store_explicit(&last_in_use, in_use, memory_order_relaxed);
        }
        /* A few regions of slack: an mprotect split needs one or two more. */
        if (limit > 0 && in_use >= limit - 8)
            return iop__fail(-ENOMEM,
                "coroutine stack: the process has reached the kernel's limit of %ld memory "
                "mappings (vm.max_map_count; %ld in use, %ld of them coroutine stacks, "
                "%s); raise it (sysctl vm.max_map_count=%ld) or use IOP_CORO_CANARY "
                "stacks (one mapping each instead of two)",
                limit, in_use, atomic_load_explicit(&g_regions, memory_order_relaxed),
                (flags & IOP_CORO_CANARY) ? "one per canary stack" : "two per guarded stack",
                limit * 4);
    }
    return iop__fail(-err, "coroutine stack: %s of %zu bytes failed: %s", what, len,
                     strerror(err));
}

static int stack_map(size_t usable, uint32_t flags, size_t page, iop__stack_t *out)
{
    size_t below = (flags & IOP_CORO_CANARY) ? CANARY_BYTES : page;
    size_t len = round_up(usable + below, page);
    char *m = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (m == MAP_FAILED)
        return map_failure(errno, "mmap", len, flags);
    long regions = 1;
    if (!(flags & IOP_CORO_CANARY)) {
        if (mprotect(m, page, PROT_NONE) != 0) {
            int err = errno;
            munmap(m, len);
            return map_failure(err, "mprotect (guard page)", len, flags);
        }
        regions = 2;
    }
    atomic_fetch_add_explicit(&g_regions, regions, memory_order_relaxed);
    out->map = m;
    out->map_size = len;
    out->lo = m + below;
    out->size = len - below;
    out->flags = flags;
    out->owner = NULL;
    out->slot = NO_SLOT;
    if (flags & IOP_CORO_CANARY)
        canary_write(out);
    else
        out->slot = iop__guard_add(m, page, out);
    return 0;
}

static void stack_unmap(iop__stack_t *s)
{
    if (s->slot != NO_SLOT)
        iop__guard_remove(s->slot);
#if IOP__ASAN
    /* ASan keeps its shadow of these pages after munmap: the next mapping at the same
     * address (an io_uring ring, say) would inherit a dead frame's redzones and be
     * reported as a stack-buffer-underflow. */
    ASAN_UNPOISON_MEMORY_REGION(s->lo, s->size);
#endif
    munmap(s->map, s->map_size);
    atomic_fetch_sub_explicit(&g_regions, (s->flags & IOP_CORO_CANARY) ? 1 : 2,
                              memory_order_relaxed);
    s->map = NULL;
}

/* ---- pool ------------------------------------------------------------------------------ */

int iop__stack_pool_new(iop__stack_pool_t **out, uint32_t max_kept)
{
    iop__stack_pool_t *p = iop_calloc(1, sizeof *p);
    if (p == NULL)
        return iop__fail(-ENOMEM, "coroutine stack pool: out of memory");
    p->max_kept = max_kept;
    p->page = (size_t)sysconf(_SC_PAGESIZE);
    *out = p;
    return 0;
}

void iop__stack_pool_free(iop__stack_pool_t *p)
{
    if (p == NULL)
        return;
    for (int c = 0; c < POOL_CLASSES; c++) {
        for (uint32_t i = 0; i < p->cls[c].n; i++)
            stack_unmap(&p->cls[c].kept[i]);
        iop_free(p->cls[c].kept);
    }
    iop_free(p);
}

/* The usable size a request gets: pages for a guarded stack, pages less the canary
 * for a canary stack, so that one class holds every request that rounds alike. */
static size_t usable_size(const iop__stack_pool_t *p, size_t size, uint32_t flags)
{
    if (size == 0)
        size = DEFAULT_SIZE;
    if (flags & IOP_CORO_CANARY)
        return round_up(size + CANARY_BYTES, p->page) - CANARY_BYTES;
    return round_up(size, p->page);
}

static struct stack_class *find_class(iop__stack_pool_t *p, size_t size, uint32_t flags)
{
    for (int c = 0; c < POOL_CLASSES; c++)
        if (p->cls[c].size == size && p->cls[c].flags == flags)
            return &p->cls[c];
    return NULL;
}

/* A class for a size no class holds: an unused one, else the one keeping the fewest
 * stacks, whose stacks are unmapped (a program that changes its stack size keeps
 * pooling the sizes it uses now). */
static struct stack_class *repurpose_class(iop__stack_pool_t *p, size_t size, uint32_t flags)
{
    struct stack_class *victim = &p->cls[0];
    for (int c = 0; c < POOL_CLASSES && victim->size != 0; c++)
        if (p->cls[c].size == 0 || p->cls[c].n < victim->n)
            victim = &p->cls[c];
    for (uint32_t i = 0; i < victim->n; i++)
        stack_unmap(&victim->kept[i]);
    p->nkept -= victim->n;
    victim->n = 0;
    victim->size = size;
    victim->flags = flags;
    return victim;
}

int iop__stack_get(iop__stack_pool_t *p, size_t size, uint32_t flags, iop__stack_t *out)
{
    flags &= IOP_CORO_CANARY;
    /* Far beyond any machine's memory, and rounding it up to pages would wrap. */
    if (size > SIZE_MAX / 4)
        return iop__fail(-EINVAL, "coroutine stack of %zu bytes: too large", size);
    if (!(flags & IOP_CORO_CANARY))
        iop__guard_thread_init();
    size_t usable = usable_size(p, size, flags);
    struct stack_class *cls = find_class(p, usable, flags);
    if (cls == NULL || cls->n == 0) {
        int rc = stack_map(usable, flags, p->page, out);
#if IOP__ASAN
        /* The address range may have held an earlier stack whose shadow is stale. */
        if (rc == 0)
            ASAN_UNPOISON_MEMORY_REGION(out->lo, out->size);
#endif
        return rc;
    }
    *out = cls->kept[--cls->n];
    p->nkept--;
    out->owner = NULL;
#if IOP__ASAN
    /* Frames of the previous user that never returned (it switched away for good) left
     * redzones poisoned: without this, ASan reports stack-buffer-underflows in the
     * next one. */
    ASAN_UNPOISON_MEMORY_REGION(out->lo, out->size);
#endif
    if (out->slot != NO_SLOT)
        iop__guard_set_user(out->slot, out);
    return 0;
}

void iop__stack_put(iop__stack_pool_t *p, iop__stack_t *s)
{
    if (s->map == NULL)
        return;
    if (s->flags & IOP_CORO_CANARY)
        iop__stack_check(s);
    if (s->slot != NO_SLOT)
        iop__guard_set_user(s->slot, NULL);
    struct stack_class *cls = NULL;
    if (p->max_kept > 0) {
        cls = find_class(p, s->size, s->flags);
        if (cls == NULL)
            cls = repurpose_class(p, s->size, s->flags);
        if (cls->kept == NULL)
            cls->kept = iop_malloc((size_t)p->max_kept * sizeof *cls->kept);
        if (p->nkept >= p->max_kept)
            cls = NULL;
    }
    if (cls == NULL || cls->kept == NULL) {
        stack_unmap(s);
        return;
    }
    s->owner = NULL;
    cls->kept[cls->n++] = *s;
    p->nkept++;
    s->map = NULL;
}
