/* Guard-page overflow reports.
 *
 * A coroutine that runs off the low end of a guarded stack faults in its PROT_NONE
 * page. The SIGSEGV handler runs on the thread's alternate signal stack (the faulting
 * stack is full), looks the address up in a fixed table of guard ranges, writes the
 * coroutine's name to stderr and dies of the SIGSEGV with the default action. Any
 * other SIGSEGV goes to the handler that was there before, or gets the default
 * action, as if this one did not exist.
 *
 * The handler does only async-signal-safe things: atomic loads from the table (made
 * once with mmap, never moved or freed), write(2), sigaction, raise. Writers take a
 * mutex; the handler takes none. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "stack_guard.h"

#define NO_SLOT        UINT32_MAX
#define MIN_SLOTS      65536u
#define MAX_SLOTS      (4u << 20)
#define ALTSTACK_SIZE  (64u * 1024u)
#define NAME_MAX_SHOWN 64

struct guard_range {
    _Atomic uintptr_t lo, hi;                 /* lo = 0: free */
    _Atomic(const iop__stack_t *) user;
};

/* Process-wide by nature: one SIGSEGV disposition per process. */
static struct {
    pthread_once_t once;
    pthread_mutex_t lock;
    struct guard_range *ranges;   /* cap entries, then cap free-slot indices */
    uint32_t *free_slots;
    uint32_t cap;
    uint32_t nfree;
    _Atomic uint32_t used;        /* slots [0, used) have been handed out */
    struct sigaction prev;        /* the SIGSEGV action before ours */
    pthread_key_t altstack_key;
} g = { .once = PTHREAD_ONCE_INIT, .lock = PTHREAD_MUTEX_INITIALIZER };

/* ---- the report (async-signal-safe) ------------------------------------------------ */

struct line { char buf[320]; size_t n; };

static void put_str(struct line *l, const char *s, size_t max)
{
    for (size_t i = 0; i < max && s[i] != '\0' && l->n < sizeof l->buf - 1; i++)
        l->buf[l->n++] = s[i];
}

static void put_num(struct line *l, uintptr_t v, unsigned base)
{
    char tmp[24];
    int k = 0;
    do {
        tmp[k++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v != 0);
    if (base == 16)
        put_str(l, "0x", 2);
    while (k > 0 && l->n < sizeof l->buf - 1)
        l->buf[l->n++] = tmp[--k];
}

void iop__guard_report(const iop__stack_t *s, const char *what)
{
    struct line l = { .n = 0 };
    put_str(&l, "ioplex: stack overflow in coroutine \"", 64);
    put_str(&l, s->owner != NULL ? s->owner : "(unnamed)", NAME_MAX_SHOWN);
    put_str(&l, "\" (", 4);
    put_num(&l, s->size, 10);
    put_str(&l, "-byte stack at ", 32);
    put_num(&l, (uintptr_t)s->lo, 16);
    put_str(&l, "): ", 4);
    put_str(&l, what, 128);
    put_str(&l, "; give it a bigger stack_size\n", 64);
    ssize_t w = write(STDERR_FILENO, l.buf, l.n);
    (void)w;   /* nothing better to do on the way to dying */
}

/* ---- the handler ------------------------------------------------------------------- */

static const struct guard_range *find_range(uintptr_t addr)
{
    uint32_t used = atomic_load_explicit(&g.used, memory_order_acquire);
    for (uint32_t i = 0; i < used; i++) {
        uintptr_t lo = atomic_load_explicit(&g.ranges[i].lo, memory_order_acquire);
        if (lo != 0 && addr >= lo && addr < atomic_load_explicit(&g.ranges[i].hi, memory_order_relaxed))
            return &g.ranges[i];
    }
    return NULL;
}

static void die_by_default(int sig)
{
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(sig, &dfl, NULL);
    /* Pending until the handler returns (sig is blocked in it); then it kills us,
     * before the faulting instruction could run again. */
    raise(sig);
}

static void on_segv(int sig, siginfo_t *si, void *uctx)
{
    uintptr_t addr = (uintptr_t)si->si_addr;
    const struct guard_range *r = si->si_code > 0 && g.ranges != NULL ? find_range(addr) : NULL;
    if (r != NULL) {
        iop__stack_t unknown = { .lo = (void *)atomic_load_explicit(&r->hi, memory_order_relaxed) };
        const iop__stack_t *s = atomic_load_explicit(&r->user, memory_order_acquire);
        /* The record names the stack only if it still describes this mapping. */
        if (s == NULL || (uintptr_t)s->map != atomic_load_explicit(&r->lo, memory_order_relaxed))
            s = &unknown;
        iop__guard_report(s, "it ran into its guard page");
        die_by_default(sig);
        return;
    }
    /* Not ours: exactly what would have happened without us. */
    if (g.prev.sa_flags & SA_SIGINFO) {
        g.prev.sa_sigaction(sig, si, uctx);
    } else if (g.prev.sa_handler == SIG_IGN) {
        if (si->si_code > 0)   /* a real fault cannot be ignored: the kernel kills */
            die_by_default(sig);
    } else if (g.prev.sa_handler == SIG_DFL) {
        die_by_default(sig);
    } else {
        g.prev.sa_handler(sig);
    }
}

/* ---- set-up -------------------------------------------------------------------------- */

static void altstack_release(void *mem)
{
    stack_t off = { .ss_flags = SS_DISABLE };
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && cur.ss_sp == mem && sigaltstack(&off, NULL) == 0)
        munmap(mem, ALTSTACK_SIZE);
}

/* A fork copies the table's lock as it is: held by another thread that was adding
 * or removing a stack, it would stay held in the child, whose first coroutine
 * would then wait for ever. fork takes it first. */
static void fork_prepare(void) { pthread_mutex_lock(&g.lock); }
static void fork_release(void) { pthread_mutex_unlock(&g.lock); }

static void process_init(void)
{
    long maps = iop__max_map_count();
    uint64_t want = maps > 0 ? (uint64_t)maps / 2 + 1024 : MIN_SLOTS;
    uint32_t cap = want < MIN_SLOTS ? MIN_SLOTS : want > MAX_SLOTS ? MAX_SLOTS : (uint32_t)want;
    size_t len = (size_t)cap * (sizeof(struct guard_range) + sizeof(uint32_t));
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (m == MAP_FAILED)
        return;   /* overflows will be plain SIGSEGVs, unnamed */
    g.ranges = m;
    g.free_slots = (uint32_t *)(g.ranges + cap);
    g.cap = cap;
    pthread_key_create(&g.altstack_key, altstack_release);
    pthread_atfork(fork_prepare, fork_release, fork_release);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g.prev);
}

void iop__guard_thread_init(void)
{
    static _Thread_local int tl_done;
    if (tl_done)
        return;
    tl_done = 1;
    pthread_once(&g.once, process_init);
    if (g.ranges == NULL)
        return;
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE))
        return;   /* the thread has one already (its own, or a sanitizer's) */
    void *mem = mmap(NULL, ALTSTACK_SIZE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (mem == MAP_FAILED)
        return;
    stack_t ss = { .ss_sp = mem, .ss_size = ALTSTACK_SIZE, .ss_flags = 0 };
    if (sigaltstack(&ss, NULL) != 0) {
        munmap(mem, ALTSTACK_SIZE);
        return;
    }
    pthread_setspecific(g.altstack_key, mem);   /* freed when the thread exits */
}

/* ---- the table ------------------------------------------------------------------------- */

uint32_t iop__guard_add(void *guard, size_t len, const iop__stack_t *user)
{
    if (g.ranges == NULL)
        return NO_SLOT;
    pthread_mutex_lock(&g.lock);
    uint32_t slot = NO_SLOT;
    uint32_t used = atomic_load_explicit(&g.used, memory_order_relaxed);
    if (g.nfree > 0)
        slot = g.free_slots[--g.nfree];
    else if (used < g.cap)
        slot = used;
    if (slot != NO_SLOT) {
        struct guard_range *r = &g.ranges[slot];
        atomic_store_explicit(&r->user, user, memory_order_relaxed);
        atomic_store_explicit(&r->hi, (uintptr_t)guard + len, memory_order_relaxed);
        atomic_store_explicit(&r->lo, (uintptr_t)guard, memory_order_release);
        if (slot == used)
            atomic_store_explicit(&g.used, used + 1, memory_order_release);
    }
    pthread_mutex_unlock(&g.lock);
    return slot;
}

void iop__guard_remove(uint32_t slot)
{
    pthread_mutex_lock(&g.lock);
    atomic_store_explicit(&g.ranges[slot].lo, 0, memory_order_release);
    atomic_store_explicit(&g.ranges[slot].user, NULL, memory_order_relaxed);
    g.free_slots[g.nfree++] = slot;
    pthread_mutex_unlock(&g.lock);
}

void iop__guard_set_user(uint32_t slot, const iop__stack_t *user)
{
    atomic_store_explicit(&g.ranges[slot].user, user, memory_order_release);
}
