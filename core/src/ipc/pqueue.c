/* The process queue: creation in shared memory, and the public calls, which try the
 * lock-free ring (pqueue_ring.c) and, when it is full or empty, spin a little and
 * then sleep on the direction's eventfd (pqueue_wait.c). */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include "error_internal.h"
#include "ioplex/coro.h"
#include "ioplex/loop.h"
#include "pqueue_internal.h"

/* How long a caller spins before it sleeps: long enough to ride out the other
 * side's next operations on a busy queue without a system call; a coroutine spins
 * less, since its whole loop waits meanwhile. Between two looks a spinner pauses
 * longer and longer (up to PQ_SPIN_PAUSES): every look pulls the slot's cache line
 * away from the process that is about to write it. */
#define PQ_SPIN_NS 50000u
#define PQ_SPIN_CORO_NS 2000u
#define PQ_SPIN_PAUSES 16u
/* try_* calls look for a dead owner once per this many times they find one in the way. */
#define PQ_TRY_CHECK_EVERY 64

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

/* ---- life ------------------------------------------------------------------------ */

/* Maps size bytes of shared memory at `at`, over the reservation there. */
static int map_shared(void *at, size_t size)
{
    /* A memfd with every page allocated now: running out of memory is an error
     * here, not a SIGBUS at some later first touch. */
    int fd = memfd_create("iop_pqueue", MFD_CLOEXEC);
    if (fd < 0)
        return iop__fail(-errno, "iop_pqueue_create: memfd_create: %s", strerror(errno));
    int r = 0;
    if (ftruncate(fd, (off_t)size) < 0)
        r = iop__fail(-errno, "iop_pqueue_create: ftruncate(%zu): %s", size, strerror(errno));
    else if (fallocate(fd, 0, 0, (off_t)size) < 0 && errno != EOPNOTSUPP)
        r = iop__fail(errno == ENOSPC ? -ENOMEM : -errno,
                      "iop_pqueue_create: cannot allocate %zu bytes of shared memory: %s", size,
                      strerror(errno));
    else if (mmap(at, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED)
        r = iop__fail(-errno, "iop_pqueue_create: mmap(%zu): %s", size, strerror(errno));
    close(fd);
    return r;
}

/* Reserves one private page and the shared part right after it, in one range, so
 * the process's own pq_priv_t is found from the handle without a pointer. */
static int map_queue(size_t page, size_t size, void **base)
{
    void *m = mmap(NULL, page + size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        return iop__fail(-errno, "iop_pqueue_create: mmap(%zu): %s", page + size, strerror(errno));
    int r = mprotect(m, page, PROT_READ | PROT_WRITE) < 0
            ? iop__fail(-errno, "iop_pqueue_create: mprotect: %s", strerror(errno))
            : map_shared((unsigned char *)m + page, size);
    if (r) {
        munmap(m, page + size);
        return r;
    }
    *base = m;
    return 0;
}

/* A page private to each process and zeroed in every child (tells the first call
 * in a process). NULL where the kernel cannot wipe on fork: then gettid() is called
 * each time. */
static pq_local_t *map_local(void)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    void *m = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    if (madvise(m, page, MADV_WIPEONFORK) < 0) {
        munmap(m, page);
        return NULL;
    }
    return m;
}

int iop_pqueue_create(iop_pqueue_t **out, size_t capacity, size_t max_msg)
{
    if (!out)
        return iop__fail(-EINVAL, "iop_pqueue_create: out is NULL");
    *out = NULL;
    if (capacity < 1 || capacity > PQ_MAX_CAPACITY || max_msg > PQ_MAX_MSG)
        return iop__fail(-EINVAL, "iop_pqueue_create: capacity %zu (1 .. %u) or max_msg %zu (0 .. %u) out of range",
                         capacity, PQ_MAX_CAPACITY, max_msg, PQ_MAX_MSG);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t slot_size = round_up(sizeof(pq_slot_t) + max_msg, PQ_LINE);
    size_t size = round_up(offsetof(iop_pqueue_t, slots) + capacity * slot_size, page);
    size_t phys = (size_t)sysconf(_SC_PHYS_PAGES) * page;
    if (size > phys / 2)            /* would only end in the OOM killer */
        return iop__fail(-ENOMEM, "iop_pqueue_create: %zu bytes is more than half of the machine's memory", size);

    void *base = NULL;
    int r = map_queue(page, size, &base);
    if (r)
        return r;
    iop_pqueue_t *q = (iop_pqueue_t *)((unsigned char *)base + page);
    pq_priv_t *p = (pq_priv_t *)q - 1;
    p->efd[0] = p->efd[1] = -1;
    for (int i = 0; i < 2; i++) {
        p->efd[i] = eventfd(0, EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC);
        if (p->efd[i] < 0) {
            r = iop__fail(-errno, "iop_pqueue_create: eventfd: %s", strerror(errno));
            if (i)
                close(p->efd[0]);
            munmap(base, page + size);
            return r;
        }
    }
    p->capacity = capacity;
    p->mask = (capacity & (capacity - 1)) == 0 ? capacity - 1 : 0;
    p->max_msg = (uint32_t)max_msg;
    p->slot_size = (uint32_t)slot_size;
    p->base = base;
    p->map_size = page + size;
    p->local = map_local();
    /* Nothing writes it again: a stray write in this process faults here, too. */
    mprotect(base, page, PROT_READ);
    q->magic = PQ_MAGIC;
    atomic_init(&q->asym, p->local && iop__pq_membarrier_usable());
    for (uint64_t pos = 0; pos < capacity; pos++)   /* slot pos free for position pos */
        atomic_init(&pq_slot(q, pos)->word, pq_word(0, 2 * (uint32_t)pos));
    *out = q;
    return 0;
}

void iop_pqueue_destroy(iop_pqueue_t *q)
{
    if (!q)
        return;
    const pq_priv_t *p = pq_priv(q);
    close(p->efd[0]);
    close(p->efd[1]);
    if (p->local)
        munmap(p->local, (size_t)sysconf(_SC_PAGESIZE));
    munmap(p->base, p->map_size);   /* p itself goes with it */
}

void iop_pqueue_forget(iop_pqueue_t *q, iop_loop_t *loop)
{
    if (!q || !loop)
        return;
    iop_fd_forget(loop, pq_priv(q)->efd[0]);
    iop_fd_forget(loop, pq_priv(q)->efd[1]);
}

void iop_pqueue_close(iop_pqueue_t *q)
{
    if (!q)
        return;
    atomic_store_explicit(&q->closed, 1, memory_order_seq_cst);
    for (int dir = 0; dir < 2; dir++) {   /* wake everyone who sleeps now */
        uint64_t n = atomic_load_explicit(&q->wait[dir].waiters, memory_order_seq_cst);
        if (n) {
            ssize_t r = write(pq_priv(q)->efd[dir], &n, sizeof n);
            (void)r;
        }
    }
}

size_t iop_pqueue_len(const iop_pqueue_t *q)
{
    if (!q)
        return 0;
    uint64_t head = atomic_load_explicit(&q->head, memory_order_acquire);
    uint64_t tail = atomic_load_explicit(&q->tail, memory_order_acquire);
    if (tail <= head)
        return 0;
    uint64_t cap = pq_priv(q)->capacity;
    return tail - head > cap ? cap : (size_t)(tail - head);
}

int iop_pqueue_closed(const iop_pqueue_t *q) { return q ? (int)atomic_load(&q->closed) : 1; }
size_t iop_pqueue_capacity(const iop_pqueue_t *q) { return q ? pq_priv(q)->capacity : 0; }
size_t iop_pqueue_max_msg(const iop_pqueue_t *q) { return q ? pq_priv(q)->max_msg : 0; }

/* ---- put and get ------------------------------------------------------------------ */

typedef struct pq_call {
    const void *data;               /* put */
    size_t len;
    void *buf;                      /* get */
    size_t cap;
} pq_call_t;

/* One attempt at the call in direction dir (PQ_NOT_FULL: put, PQ_NOT_EMPTY: get);
 * what succeeds wakes whoever it made room or a message for. */
static ssize_t attempt(iop_pqueue_t *q, int dir, const pq_call_t *c, uint32_t *stuck)
{
    if (dir == PQ_NOT_FULL) {
        int r = iop__pq_put_once(q, c->data, (uint32_t)c->len, stuck);
        if (r == 0)
            pq_after_op(q, PQ_NOT_EMPTY);
        return r;
    }
    ssize_t r = iop__pq_get_once(q, c->buf, c->cap, stuck);
    if (r >= 0 || r == -EBADMSG)    /* a dropped slot is room too */
        pq_after_op(q, PQ_NOT_FULL);
    return r;
}

/* Is it time for a try_* call to check a slot's owner (a few system calls)? */
static int try_should_check(iop_pqueue_t *q, uint32_t owner)
{
    pq_local_t *l = pq_priv(q)->local;
    if (owner == PQ_OWNER_TOMB || !l)
        return 1;
    uint32_t n = atomic_fetch_add_explicit(&l->stuck_seen, 1, memory_order_relaxed);
    return n % PQ_TRY_CHECK_EVERY == 0;
}

static ssize_t wait_and_call(iop_pqueue_t *q, int dir, const pq_call_t *c, uint64_t deadline,
                             uint32_t stuck)
{
    int in_coro = iop_self() != NULL;
    uint64_t until = deadline;
    if (in_coro) {
        uint64_t scope = iop_deadline_current();
        if (scope && (!until || scope < until))
            until = scope;
    }
    ssize_t r;
    uint64_t spin_end = 0;
    for (unsigned i = 1;; i++) {
        for (unsigned k = i < PQ_SPIN_PAUSES ? i : PQ_SPIN_PAUSES; k; k--)
            cpu_relax();
        if ((r = attempt(q, dir, c, &stuck)) != -EAGAIN)
            return r;
        if (i % 16 == 0) {          /* the clock costs more than a look */
            uint64_t now = mono_ns();
            if (!spin_end)
                spin_end = now + (in_coro ? PQ_SPIN_CORO_NS : PQ_SPIN_NS);
            else if (now >= spin_end || (until && now >= until))
                break;
        }
    }
    pq_waitset_t *ws = &q->wait[dir];
    for (;;) {
        if (stuck && iop__pq_unstick(q, dir)) {
            if ((r = attempt(q, dir, c, &stuck)) != -EAGAIN)
                return r;
            continue;
        }
        atomic_fetch_add_explicit(&ws->waiters, 1, memory_order_seq_cst);
        iop__pq_heavy_fence(q);
        r = attempt(q, dir, c, &stuck);
        int s = r == -EAGAIN ? iop__pq_sleep(q, dir, until) : 0;
        atomic_fetch_sub_explicit(&ws->waiters, 1, memory_order_seq_cst);
        if (r != -EAGAIN)
            return r;
        if (s < 0)
            return s;
        if ((r = attempt(q, dir, c, &stuck)) != -EAGAIN)
            return r;
    }
}

static ssize_t call(iop_pqueue_t *q, int dir, const pq_call_t *c, uint64_t deadline, int may_wait)
{
    uint32_t stuck;
    ssize_t r = attempt(q, dir, c, &stuck);
    if (r != -EAGAIN)
        return r;
    if (may_wait)
        return wait_and_call(q, dir, c, deadline, stuck);
    if (stuck && try_should_check(q, stuck) &&
        iop__pq_unstick(q, dir))
        r = attempt(q, dir, c, &stuck);
    return r;
}

static int check_put(const iop_pqueue_t *q, const void *data, size_t len)
{
    if (!q || (!data && len))
        return iop__fail(-EINVAL, "iop_pqueue_put: %s is NULL", q ? "data" : "the queue");
    uint32_t max_msg = pq_priv(q)->max_msg;
    if (len > max_msg)
        return iop__fail(-EMSGSIZE, "iop_pqueue_put: %zu bytes, the queue takes at most %u",
                         len, max_msg);
    return 0;
}

int iop_pqueue_put(iop_pqueue_t *q, const void *data, size_t len, uint64_t deadline)
{
    int r = check_put(q, data, len);
    if (r)
        return r;
    pq_call_t c = { .data = data, .len = len };
    return (int)call(q, PQ_NOT_FULL, &c, deadline, 1);
}

int iop_pqueue_try_put(iop_pqueue_t *q, const void *data, size_t len)
{
    int r = check_put(q, data, len);
    if (r)
        return r;
    pq_call_t c = { .data = data, .len = len };
    return (int)call(q, PQ_NOT_FULL, &c, 0, 0);
}

ssize_t iop_pqueue_get(iop_pqueue_t *q, void *buf, size_t cap, uint64_t deadline)
{
    if (!q || (!buf && cap))
        return iop__fail(-EINVAL, "iop_pqueue_get: %s is NULL", q ? "buf" : "the queue");
    pq_call_t c = { .buf = buf, .cap = cap };
    return call(q, PQ_NOT_EMPTY, &c, deadline, 1);
}

ssize_t iop_pqueue_try_get(iop_pqueue_t *q, void *buf, size_t cap)
{
    if (!q || (!buf && cap))
        return iop__fail(-EINVAL, "iop_pqueue_try_get: %s is NULL", q ? "buf" : "the queue");
    pq_call_t c = { .buf = buf, .cap = cap };
    return call(q, PQ_NOT_EMPTY, &c, 0, 0);
}
