/* ioplex backend: io_uring (liburing), completion model.
 *
 * Ops run natively as SQEs (uring_ops.c); watches are one-shot polls armed again
 * after each report, which keeps the reactor level-triggered: a poll armed on an fd
 * that is still ready completes at once. SQEs gather during an iteration and go to
 * the kernel in the same io_uring_enter that waits, so the steady state makes at
 * most one syscall per iteration (none under SQPOLL while the queues are busy).
 * See README.md in this folder for the choices. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <sched.h>
#include <unistd.h>

#include "uring_internal.h"

#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define UNDER_VALGRIND() (RUNNING_ON_VALGRIND != 0)
#else
#define UNDER_VALGRIND() 0
#endif

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define URING_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__) && !defined(URING_TSAN)
#define URING_TSAN 1
#endif

/* liburing maps and unmaps a ring with raw system calls, which ThreadSanitizer does
 * not see: a ring mapped where another thread's ring was unmapped looks to it like
 * that ring's memory, written by both threads. Every unmap releases, and every map
 * acquires, one sync object: the order the kernel gives them. */
#if URING_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
static char ring_reuse;
static void ring_mapped(void) { __tsan_acquire(&ring_reuse); }
static void ring_exit(struct io_uring *ring)
{
    __tsan_release(&ring_reuse);
    io_uring_queue_exit(ring);
}
#else
static void ring_mapped(void) {}
static void ring_exit(struct io_uring *ring) { io_uring_queue_exit(ring); }
#endif

#define DEFAULT_ENTRIES 1024u
#define MIN_ENTRIES 8u
#define MAX_ENTRIES 32768u         /* the kernel's IORING_MAX_ENTRIES: more is EINVAL */

static uring_fd_t *fd_state(uring_state_t *st, int fd)
{
    return st->host->fd_state(st->host->core, fd);
}

/* A ring set up with SINGLE_ISSUER belongs to the task that enables it: that is
 * done on the first entry, which comes from the thread running the loop (a loop may
 * be created on one thread and run on another). A registered ring fd is a slot in
 * the registering thread's own table, and io_uring_queue_exit frees that slot
 * number in the table of whichever thread destroys the ring: a loop run elsewhere
 * and destroyed by its creator would free a slot of the creator's own rings. So
 * only a loop run on its creator's thread registers its fd. */
static void ring_enable(uring_state_t *st)
{
    if (!st->first_entry)
        return;
    st->first_entry = 0;
    if (st->disabled) {
        st->disabled = 0;
        (*st->host->syscalls)++;
        /* liburing 2.3 declares io_uring_enable_rings but does not export it. */
        syscall(__NR_io_uring_register, st->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
    }
    if (gettid() != st->creator)
        return;
    (*st->host->syscalls)++;
    if (io_uring_register_ring_fd(&st->ring) == 1)
        st->feat |= F_REG_RING_FD;
}

/* Counts the io_uring_enter that a submit is about to make. Under SQPOLL, a submit
 * only enters to wake a kernel thread that went idle. */
void uring_count_enter(uring_state_t *st)
{
    ring_enable(st);
    if (!st->sqpoll || (IO_URING_READ_ONCE(*st->ring.sq.kflags) & IORING_SQ_NEED_WAKEUP))
        (*st->host->syscalls)++;
}

/* SQPOLL: a zero-timeout poll waits (briefly) for the kernel thread to take what was
 * just queued. It does not wait for the results: the thread posts them after taking
 * the entries, so an op that can finish at once is usually reported by the next
 * call, not this one (a plain ring reports it in this one). */
static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

void uring_sqpoll_settle(uring_state_t *st)
{
    for (int spins = 0; spins < 2000 && io_uring_sq_ready(&st->ring); spins++)
        cpu_relax();
    /* A thread waking from idle, or one that needs this CPU: give it up to 20 ms. */
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (io_uring_sq_ready(&st->ring)) {
        sched_yield();
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) > 20000000L)
            break;
    }
}

#ifdef VALGRIND_CHECK_MEM_IS_DEFINED
#define CHECK_DEFINED(p, n) ((void)VALGRIND_CHECK_MEM_IS_DEFINED((p), (n)))

/* What sendmsg (sending) or recvmsg reads of a msghdr, by memcheck's own rules for
 * those syscalls. */
static void check_msghdr_read(const struct msghdr *m, int sending)
{
    CHECK_DEFINED(&m->msg_name, sizeof m->msg_name);
    CHECK_DEFINED(&m->msg_namelen, sizeof m->msg_namelen);
    CHECK_DEFINED(&m->msg_iov, sizeof m->msg_iov);
    CHECK_DEFINED(&m->msg_iovlen, sizeof m->msg_iovlen);
    CHECK_DEFINED(&m->msg_control, sizeof m->msg_control);
    CHECK_DEFINED(&m->msg_controllen, sizeof m->msg_controllen);
    if (m->msg_iov)
        CHECK_DEFINED(m->msg_iov, m->msg_iovlen * sizeof *m->msg_iov);
    if (!sending)
        return;
    if (m->msg_name)
        CHECK_DEFINED(m->msg_name, m->msg_namelen);
    if (m->msg_control)
        CHECK_DEFINED(m->msg_control, m->msg_controllen);
    for (size_t i = 0; m->msg_iov && i < m->msg_iovlen; i++)
        CHECK_DEFINED(m->msg_iov[i].iov_base, m->msg_iov[i].iov_len);
}

/* memcheck does not see the kernel read an SQE, nor what it points to: under
 * valgrind, check them before they go, as memcheck checks a plain syscall's
 * arguments (uninitialised bytes sent, or a half-filled SQE, are reported). */
static void check_unsubmitted(const uring_state_t *st)
{
    if (!st->valgrind)
        return;
    const struct io_uring_sq *sq = &st->ring.sq;
    for (unsigned i = sq->sqe_head; i != sq->sqe_tail; i++) {
        const struct io_uring_sqe *sqe = &sq->sqes[i & sq->ring_mask];
        CHECK_DEFINED(sqe, sizeof *sqe);
        const void *addr = (const void *)(uintptr_t)sqe->addr;
        switch (sqe->opcode) {
        case IORING_OP_SEND:
        case IORING_OP_SEND_ZC:
        case IORING_OP_WRITE:
        case IORING_OP_WRITE_FIXED:
            CHECK_DEFINED(addr, sqe->len);
            break;
        case IORING_OP_SENDMSG:
        case IORING_OP_RECVMSG:
            check_msghdr_read(addr, sqe->opcode == IORING_OP_SENDMSG);
            break;
        case IORING_OP_CONNECT:
            CHECK_DEFINED(addr, (size_t)sqe->off);   /* off holds the address length */
            break;
        default:
            break;
        }
    }
}
#else
static void check_unsubmitted(const uring_state_t *st) { (void)st; }
#endif

int uring_submit(uring_state_t *st)
{
    check_unsubmitted(st);
    uring_count_enter(st);
    /* With DEFER_TASKRUN, finished work waits for an entry that asks for events. */
    return st->defer ? io_uring_submit_and_get_events(&st->ring) : io_uring_submit(&st->ring);
}

/* Room for n SQEs, pushing what is queued to the kernel when there is less. A
 * linked chain asks for all of its SQEs first: split across two submits, the
 * kernel would end the chain at the first and take the rest for a new one (a
 * linked timeout alone is -EINVAL, its op left without a deadline). 0 or -EBUSY. */
int uring_room(uring_state_t *st, unsigned n)
{
    for (int tries = 0; io_uring_sq_space_left(&st->ring) < n; tries++) {
        if (tries == 3)
            return -EBUSY;
        uring_submit(st);
        if (st->sqpoll) {
            uring_sqpoll_settle(st);
            if (io_uring_sq_space_left(&st->ring) < n) {
                (*st->host->syscalls)++;
                io_uring_sqring_wait(&st->ring);   /* the kernel thread is behind */
            }
        }
    }
    return 0;
}

/* A free SQE, pushing what is queued to the kernel when the ring is full. */
struct io_uring_sqe *uring_sqe(uring_state_t *st)
{
    return uring_room(st, 1) == 0 ? io_uring_get_sqe(&st->ring) : NULL;
}

/* ---- probe / create / destroy ------------------------------------------------ */

/* Why io_uring_setup failed, in words a user can act on. */
static void explain_setup(int err, char *why, size_t whylen)
{
    const char *hint = "";
    int disabled = -1;
    FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "r");
    if (f) {
        if (fscanf(f, "%d", &disabled) != 1)
            disabled = -1;
        fclose(f);
    }
    if (err == ENOSYS)
        hint = " (kernel without io_uring, or a seccomp policy denies it)";
    else if (err == EPERM && disabled > 0)
        hint = disabled == 2 ? " (sysctl kernel.io_uring_disabled=2)"
                             : " (sysctl kernel.io_uring_disabled=1 and not in io_uring_group)";
    else if (err == EPERM)
        hint = " (denied, most likely by a seccomp policy)";
    else if (err == ENOMEM)
        hint = " (RLIMIT_MEMLOCK too low even for the smallest ring)";
    snprintf(why, whylen, "io_uring_setup: %s%s", strerror(err), hint);
}

/* The kernel's opcodes, asked through IORING_REGISTER_PROBE (called directly, not
 * through io_uring_get_probe_ring, which would hide why it failed). 0 with *out, or
 * -errno and a reason: the probe refused (seccomp), or no async cancel. */
static int find_features(struct io_uring *ring, unsigned *out, char *why, size_t whylen)
{
    enum { OPS = 256 };
    union {
        struct io_uring_probe probe;
        char room[sizeof(struct io_uring_probe) + OPS * sizeof(struct io_uring_probe_op)];
    } u;
    memset(&u, 0, sizeof u);
    struct io_uring_probe *p = &u.probe;
    unsigned f = 0;
    int r = io_uring_register_probe(ring, p, OPS);
    if (r < 0) {
        snprintf(why, whylen, "io_uring_register(IORING_REGISTER_PROBE): %s%s", strerror(-r),
                 r == -EPERM ? " (denied, most likely by a seccomp policy)" : "");
        return r;
    }
    if (io_uring_opcode_supported(p, IORING_OP_ASYNC_CANCEL))
        f |= F_CANCEL_FD;   /* refined by the kernel's answer to the first use */
    if (io_uring_opcode_supported(p, IORING_OP_SEND_ZC))
        f |= F_SEND_ZC;     /* SEND_ZC arrived with 6.0, as did multishot recv */
    if (io_uring_opcode_supported(p, IORING_OP_SOCKET))
        f |= F_MULTISHOT_ACCEPT | F_BUF_RING;   /* 5.19 brought all three */
    if (f & F_SEND_ZC)
        f |= F_MULTISHOT_RECV;
    if (io_uring_opcode_supported(p, IORING_OP_FILES_UPDATE))
        f |= F_FIXED_FILES;
    if (io_uring_opcode_supported(p, IORING_OP_READ_FIXED) && io_uring_opcode_supported(p, IORING_OP_WRITE_FIXED))
        f |= F_FIXED_BUFS;
    if (!(f & F_CANCEL_FD)) {
        snprintf(why, whylen, "io_uring: kernel lacks async cancel (need Linux 5.19 or later)");
        return -ENOTSUP;
    }
    *out = f;
    return 0;
}

static int probe_ring(char *why, size_t whylen)
{
    struct io_uring ring;
    int r = io_uring_queue_init(MIN_ENTRIES, &ring, 0);
    if (r < 0) {
        explain_setup(-r, why, whylen);
        return r;
    }
    ring_mapped();
    /* A policy may allow the setup and deny the rest: enter the ring once (nothing
     * to submit, nothing to wait for), or auto would take a backend whose first
     * wait fails. No entry is written: under ThreadSanitizer a write into a ring
     * mapped by raw system calls shadows whatever is mapped there later. */
    r = io_uring_enter(ring.ring_fd, 0, 0, 0, NULL);   /* liburing: -errno */
    if (r < 0) {
        snprintf(why, whylen, "io_uring_enter: %s%s", strerror(-r),
                 r == -EPERM ? " (denied, most likely by a seccomp policy)" : "");
        ring_exit(&ring);
        return r;
    }
    unsigned f;
    r = find_features(&ring, &f, why, whylen);
    ring_exit(&ring);
    return r;
}

typedef struct probe_job {
    char *why;
    size_t whylen;
    int r;
} probe_job_t;

static void *probe_thread(void *arg)
{
    probe_job_t *j = arg;
    j->r = probe_ring(j->why, j->whylen);
    return NULL;
}

/* The probe's ring lives on a thread of its own, ended before we return. A closed
 * ring's teardown, some ms later, queues task work with TWA_SIGNAL on each thread
 * that created it: on the caller, a blocking call with a timeout (SO_RCVTIMEO,
 * epoll_wait) failed with EINTR and no signal sent. An ended thread is off the
 * ring's list. The thread blocks every signal, so none is delivered there. */
static int probe_on_thread(char *why, size_t whylen)
{
    probe_job_t j = { .why = why, .whylen = whylen };
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    int e = pthread_create(&t, NULL, probe_thread, &j);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e != 0)
        return probe_ring(why, whylen);   /* no thread to spare: probe here, as before */
    pthread_join(t, NULL);
    return j.r;
}

/* A probe that passed is not run again in the same process (the thread and the
 * throwaway ring cost ~150 us, on every loop create before). A forked child
 * probes again: it may have a seccomp policy of its own. A policy installed later
 * in the same process shows as the loop's create failing, with its reason, which
 * auto passes over as it does a failed probe. */
static _Atomic pid_t probe_passed_in;

static int backend_probe(char *why, size_t whylen)
{
    pid_t self = getpid();
    if (atomic_load_explicit(&probe_passed_in, memory_order_relaxed) == self)
        return 0;
    int r = probe_on_thread(why, whylen);
    if (r == 0)
        atomic_store_explicit(&probe_passed_in, self, memory_order_relaxed);
    return r;
}

/* Sets the ring up, trying the cheaper task-run modes first and halving the ring
 * on ENOMEM (a low RLIMIT_MEMLOCK on kernels that charge rings to it). */
static int ring_init(uring_state_t *st, const iop_backend_config_t *cfg)
{
    unsigned entries = cfg->entries ? cfg->entries : DEFAULT_ENTRIES;
    if (entries < CHAIN_MAX)
        entries = CHAIN_MAX;       /* a linked chain must fit in one submit */
    if (entries > MAX_ENTRIES)
        entries = MAX_ENTRIES;     /* a hint, not a reason to fail the loop */
    struct io_uring_params p;
    int r = -EINVAL;
    for (;;) {
        /* DEFER_TASKRUN (6.1): completions are run in our own io_uring_enter, in a
         * batch, never by interrupting the loop; it needs a single issuer. */
        static const unsigned extra[] = {
            IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                IORING_SETUP_R_DISABLED,
            IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
            IORING_SETUP_SUBMIT_ALL,
            0,
        };
        /* Under valgrind only the plain setups (the last two): see wait_in_ppoll. */
        for (size_t i = st->valgrind ? 2 : 0; i < sizeof extra / sizeof extra[0]; i++) {
            memset(&p, 0, sizeof p);
            p.flags = IORING_SETUP_CQSIZE | extra[i];
            /* Room for a burst: a CQ four times the SQ unless the caller sized it. */
            p.cq_entries = cfg->entries ? entries * 2 : entries * 4;
            if (st->sqpoll) {
                /* Completions must not wait for this task to enter the kernel. */
                p.flags = (p.flags & ~(IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG |
                                       IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                                       IORING_SETUP_R_DISABLED)) |
                          IORING_SETUP_SQPOLL;
                p.sq_thread_idle = cfg->sqpoll_idle_ms ? cfg->sqpoll_idle_ms : 1000;
                if (cfg->sqpoll_cpu1) {
                    p.flags |= IORING_SETUP_SQ_AFF;
                    p.sq_thread_cpu = cfg->sqpoll_cpu1 - 1;
                }
            }
            (*st->host->syscalls)++;
            r = io_uring_queue_init_params(entries, &st->ring, &p);
            if (r != -EINVAL)
                break;
        }
        if (r == 0) {
            ring_mapped();
            st->defer = (p.flags & IORING_SETUP_DEFER_TASKRUN) != 0;
            st->disabled = (p.flags & IORING_SETUP_R_DISABLED) != 0;
        }
        if (r != -ENOMEM || entries <= MIN_ENTRIES)
            return r;
        entries /= 2;
    }
}

static int backend_create(void **state, const iop_backend_host_t *host,
                          const iop_backend_config_t *cfg, char *why, size_t whylen)
{
    uring_state_t *st = host->alloc(sizeof *st);
    if (!st) {
        snprintf(why, whylen, "uring: out of memory");
        return -ENOMEM;
    }
    memset(st, 0, sizeof *st);
    st->host = host;
    st->poll_seq = 1;
    st->sqpoll = (cfg->flags & IOP_LOOP_SQPOLL) != 0;
    st->kdl = (cfg->flags & IOP_LOOP_KERNEL_DEADLINES) != 0;
    st->valgrind = UNDER_VALGRIND();
    int r = ring_init(st, cfg);
    if (r < 0 && st->sqpoll && r != -ENOMEM) {
        /* No SQPOLL here (privilege, kernel): run without it, and say so in caps. */
        st->sqpoll = 0;
        r = ring_init(st, cfg);
    }
    if (r < 0) {
        explain_setup(-r, why, whylen);
        host->free(st);
        return r;
    }
    if (!(st->ring.features & IORING_FEAT_NODROP)) {
        snprintf(why, whylen, "io_uring: kernel may drop completions (no IORING_FEAT_NODROP; need Linux 5.5+)");
        ring_exit(&st->ring);
        host->free(st);
        return -ENOTSUP;
    }
    r = find_features(&st->ring, &st->feat, why, whylen);
    if (r < 0) {
        ring_exit(&st->ring);
        host->free(st);
        return r;
    }
    if (!st->sqpoll)
        *host->caps &= ~IOP_CAP_SQPOLL;   /* the cap says "running with SQPOLL" */
    if (!st->kdl)
        *host->caps &= ~IOP_CAP_KERNEL_DEADLINES;   /* the core's timer heap keeps them */
    if (!(st->feat & F_MULTISHOT_ACCEPT))
        *host->caps &= ~IOP_CAP_MULTISHOT_ACCEPT;
    if (!(st->feat & F_MULTISHOT_RECV))
        *host->caps &= ~IOP_CAP_MULTISHOT_RECV;
    if (!(st->feat & F_BUF_RING))
        *host->caps &= ~IOP_CAP_PROVIDED_BUFFERS;
    if (!(st->feat & F_SEND_ZC))
        *host->caps &= ~IOP_CAP_ZEROCOPY_SEND;
    if (!(st->feat & F_FIXED_FILES))
        *host->caps &= ~IOP_CAP_REGISTERED_FILES;
    if (!(st->feat & F_FIXED_BUFS))
        *host->caps &= ~IOP_CAP_REGISTERED_BUFFERS;
    /* The ring's memory must not be shared with a forked child. valgrind cannot
     * follow mappings a fork drops (it asserts on the child's next mmap), so there
     * the child keeps a copy, which it cannot use anyway: the core fails a loop run
     * in a forked child with -ECHILD. */
    if (!st->valgrind)
        io_uring_ring_dontfork(&st->ring);
    st->first_entry = 1;
    st->creator = gettid();
    st->ts = host->alloc(st->ring.sq.ring_entries * sizeof *st->ts);
    if (!st->ts) {
        ring_exit(&st->ring);
        host->free(st);
        snprintf(why, whylen, "uring: out of memory");
        return -ENOMEM;
    }
    *state = st;
    return 0;
}

/* Translates one CQE into an event, or returns 0 when it is bookkeeping. */
static int translate(uring_state_t *st, const struct io_uring_cqe *cqe, iop_event_t *ev);

/* In a forked child: the ring is the parent's (its memory is not mapped here, see
 * io_uring_ring_dontfork), so only our copy of its fd and our memory go. */
static void backend_abandon(void *state)
{
    uring_state_t *st = state;
    if (st->br)
        munmap(st->br, st->br_bytes);   /* a private copy here */
    close(st->ring.ring_fd);
    st->host->free(st->fixed_free);
    st->host->free(st->rearm);
    st->host->free(st->ts);
    st->host->free(st);
}

/* Ops still in the kernel are cancelled and reaped (for a second at most) so that
 * none writes into a record or buffer its owner frees after the loop. */
static void backend_destroy(void *state)
{
    uring_state_t *st = state;
    /* Ops queued behind others never reached the kernel. */
    uring_fd_t *f;
    for (int fd = 0; (f = fd_state(st, fd)) != NULL; fd++) {
        for (int d = 0; d < 2; d++) {
            for (iop_op_t *op = f->dir[d].head; op; op = op->next, st->inflight--)
                st->host->drop(st->host->core, op);
            f->dir[d] = (uring_dir_t){ 0 };
        }
    }
    for (iop_op_t *op = st->local_head; op; op = op->next, st->inflight--)
        st->host->drop(st->host->core, op);
    st->local_head = st->local_tail = NULL;
    if (st->inflight) {
        struct io_uring_sqe *sqe = uring_sqe(st);
        if (sqe) {
            io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
            io_uring_sqe_set_data64(sqe, UD_IGNORE);
        }
        for (int round = 0; st->inflight && round < 20; round++) {
            struct __kernel_timespec ts = { .tv_nsec = 50000000 };
            struct io_uring_cqe *cqe;
            io_uring_submit_and_wait_timeout(&st->ring, &cqe, 1, &ts, NULL);
            unsigned head, n = 0;
            io_uring_for_each_cqe(&st->ring, head, cqe) {
                iop_event_t ev;
                if (translate(st, cqe, &ev) && ev.op && !(ev.flags & IOP_EVF_MORE))
                    st->host->drop(st->host->core, ev.op);
                n++;
            }
            io_uring_cq_advance(&st->ring, n);
        }
    }
    if (st->br)
        munmap(st->br, st->br_bytes);
    ring_exit(&st->ring);
    st->host->free(st->fixed_free);
    st->host->free(st->rearm);
    st->host->free(st->ts);
    st->host->free(st);
}

/* ---- watches ----------------------------------------------------------------- */

static unsigned to_poll(unsigned mask)
{
    return ((mask & IOP_READ) ? POLLIN : 0u) | ((mask & IOP_WRITE) ? POLLOUT : 0u);
}

static int arm(uring_state_t *st, int fd, uring_fd_t *f)
{
    struct io_uring_sqe *sqe = uring_sqe(st);
    if (!sqe)
        return -EBUSY;
    f->token = st->poll_seq++ & ((1ull << (61 - FD_BITS)) - 1);
    if (!f->token)
        f->token = st->poll_seq++;
    f->armed = f->mask;
    io_uring_prep_poll_add(sqe, fd, to_poll(f->mask));
    if (f->fixed) {
        sqe->fd = f->fixed - 1;
        sqe->flags |= IOSQE_FIXED_FILE;
    }
    io_uring_sqe_set_data64(sqe, ((f->token << FD_BITS | (uint64_t)fd) << 3) | UD_POLL);
    return 0;
}

static void disarm(uring_state_t *st, int fd, uring_fd_t *f)
{
    struct io_uring_sqe *sqe = uring_sqe(st);
    if (sqe) {
        io_uring_prep_poll_remove(sqe, ((f->token << FD_BITS | (uint64_t)fd) << 3) | UD_POLL);
        io_uring_sqe_set_data64(sqe, UD_IGNORE);
    }
    f->token = 0;   /* whatever the old poll still reports is stale now */
    f->armed = 0;
}

static int backend_watch(void *state, int fd, unsigned old_mask, unsigned new_mask, void *fd_st)
{
    uring_state_t *st = state;
    uring_fd_t *f = fd_st;
    (void)old_mask;
    f->mask = new_mask & (IOP_READ | IOP_WRITE);
    if (f->armed && f->armed != f->mask)
        disarm(st, fd, f);
    if (f->mask && !f->armed)
        return arm(st, fd, f);
    return 0;
}

static void queue_rearm(uring_state_t *st, int fd, uring_fd_t *f)
{
    if (f->queued)
        return;
    if (st->nrearm == st->rearm_cap) {
        uint32_t cap = st->rearm_cap ? st->rearm_cap * 2 : 64;
        int32_t *v = st->host->realloc(st->rearm, cap * sizeof *v);
        if (!v) {
            /* No room to defer it: arm it now. Left unarmed, its watch (the loop's
             * wake-up eventfd among them) would never fire again. */
            arm(st, fd, f);
            return;
        }
        st->rearm = v;
        st->rearm_cap = cap;
    }
    st->rearm[st->nrearm++] = fd;
    f->queued = 1;
}

static void rearm_all(uring_state_t *st)
{
    for (uint32_t i = 0; i < st->nrearm; i++) {
        int fd = st->rearm[i];
        uring_fd_t *f = fd_state(st, fd);
        if (!f)
            continue;
        f->queued = 0;
        if (f->mask && !f->armed)
            arm(st, fd, f);
    }
    st->nrearm = 0;
}

/* ---- completions ---------------------------------------------------------------- */

static unsigned from_poll(int res, unsigned asked)
{
    if (res < 0)
        return IOP_ERR | asked;
    unsigned r = ((res & (POLLIN | POLLPRI | POLLRDHUP)) ? IOP_READ : 0u) |
                 ((res & POLLOUT) ? IOP_WRITE : 0u);
    if (res & POLLERR)
        r |= IOP_ERR | asked;
    if (res & POLLHUP)
        r |= IOP_HUP | asked;
    return r & (asked | IOP_ERR | IOP_HUP);
}

/* An op with a linked timeout completes when both CQEs are in, with the result and
 * buffer of its own CQE (*flags in and out): -ECANCELED caused by the timeout
 * becomes -ETIMEDOUT. Returns 1 when the op is done. */
static int deadline_part(iop_op_t *op, int from_timeout, int res, unsigned *flags, int *final)
{
    if (from_timeout) {
        if (res == -ETIME)
            op->backend_u32 |= LT_FIRED;
    } else {
        op->backend_ptr = (uintptr_t)(intptr_t)res;
        if (*flags & IOP_EVF_BUFFER)
            op->backend_u32 |= LT_BUFFER | (*flags & 0xffff0000u);
    }
    op->backend_u32--;
    if (op->backend_u32 & LT_PENDING_MASK)
        return 0;
    *flags = (op->backend_u32 & LT_BUFFER) ? IOP_EVF_BUFFER | (op->backend_u32 & 0xffff0000u) : 0;
    *final = (int)(intptr_t)op->backend_ptr;
    if (*final == -ECANCELED && (op->backend_u32 & LT_FIRED))
        *final = -ETIMEDOUT;
    return 1;
}

/* memcheck does not see the kernel fill memory behind an SQE: under valgrind, say
 * what a finished op wrote, so that reading it is not reported as uninitialised. */
static void mark_written(const uring_state_t *st, const iop_op_t *op, int res, unsigned flags)
{
#ifdef VALGRIND_MAKE_MEM_DEFINED
    if (!st->valgrind || res < 0)
        return;
    switch (op->kind) {
    case IOP_OP_RECV:
        VALGRIND_MAKE_MEM_DEFINED(op->u.io.buf, (size_t)res);
        break;
    case IOP_OP_READ:
        VALGRIND_MAKE_MEM_DEFINED(op->u.rw.buf, (size_t)res);
        break;
    case IOP_OP_RECV_BUF:
        if (flags & IOP_EVF_BUFFER)
            VALGRIND_MAKE_MEM_DEFINED(st->pool + (size_t)(flags >> 16) * st->pool_size, (size_t)res);
        else if (op->u.pooled.buf)
            VALGRIND_MAKE_MEM_DEFINED(op->u.pooled.buf, (size_t)res);
        break;
    case IOP_OP_ACCEPT:
        if (op->u.accept.addrlen) {
            VALGRIND_MAKE_MEM_DEFINED(op->u.accept.addrlen, sizeof *op->u.accept.addrlen);
            if (op->u.accept.addr) {
                socklen_t len = *op->u.accept.addrlen;
                VALGRIND_MAKE_MEM_DEFINED(op->u.accept.addr, len < sizeof(struct sockaddr_storage)
                                                                 ? len : sizeof(struct sockaddr_storage));
            }
        }
        break;
    case IOP_OP_RECVMSG: {
        struct msghdr *m = op->u.msg.msg;
        VALGRIND_MAKE_MEM_DEFINED(&m->msg_namelen, sizeof m->msg_namelen);
        VALGRIND_MAKE_MEM_DEFINED(&m->msg_controllen, sizeof m->msg_controllen);
        VALGRIND_MAKE_MEM_DEFINED(&m->msg_flags, sizeof m->msg_flags);
        if (m->msg_name)
            VALGRIND_MAKE_MEM_DEFINED(m->msg_name, m->msg_namelen);
        if (m->msg_control)
            VALGRIND_MAKE_MEM_DEFINED(m->msg_control, m->msg_controllen);
        size_t left = (size_t)res;
        for (size_t i = 0; i < m->msg_iovlen && left; i++) {
            size_t n = m->msg_iov[i].iov_len < left ? m->msg_iov[i].iov_len : left;
            VALGRIND_MAKE_MEM_DEFINED(m->msg_iov[i].iov_base, n);
            left -= n;
        }
        break;
    }
    default:
        break;
    }
#else
    (void)st, (void)op, (void)res, (void)flags;
#endif
}

static int translate(uring_state_t *st, const struct io_uring_cqe *cqe, iop_event_t *ev)
{
    uint64_t ud = cqe->user_data;
    switch (UD_TAG(ud)) {
    case UD_POLL: {
        int fd = (int)((ud >> 3) & ((1u << FD_BITS) - 1));
        uint64_t token = ud >> (3 + FD_BITS);
        uring_fd_t *f = fd_state(st, fd);
        if (!f || f->token != token)
            return 0;   /* removed, or from before the fd was forgotten */
        f->token = 0;
        unsigned asked = f->armed;
        f->armed = 0;
        if (cqe->res == -ECANCELED)
            return 0;
        if (cqe->res == -EBADF) {
            /* Closed behind the loop's back (or never open): not armed again, the
             * core stops its watch. Rearmed, it failed at once every iteration. */
            f->mask = 0;
            *ev = (iop_event_t){ .fd = fd, .revents = IOP_EV_NVAL };
            return 1;
        }
        queue_rearm(st, fd, f);
        *ev = (iop_event_t){ .fd = fd, .revents = from_poll(cqe->res, asked) };
        return ev->revents != 0;
    }
    case UD_SLOT:
        st->fixed_free[st->nfixed_free++] = (int32_t)(ud >> 3);
        return 0;
    case UD_OP:
    case UD_LINK_TO: {
        iop_op_t *op = UD_PTR(ud);
        int res = cqe->res;
        unsigned flags = 0;
        if (cqe->flags & IORING_CQE_F_MORE)
            flags |= IOP_EVF_MORE;
        if (cqe->flags & IORING_CQE_F_NOTIF)
            flags |= IOP_EVF_NOTIF;
        if (cqe->flags & IORING_CQE_F_BUFFER)
            flags |= IOP_EVF_BUFFER | (cqe->flags >> IORING_CQE_BUFFER_SHIFT) << 16;
        if (op->backend_u32 & LT_PENDING_MASK) {
            if (!deadline_part(op, UD_TAG(ud) == UD_LINK_TO, res, &flags, &res))
                return 0;
        } else if (UD_TAG(ud) == UD_LINK_TO) {
            return 0;
        }
        if (!(flags & IOP_EVF_MORE)) {
            st->inflight--;
            uring_op_finished(st, op);
            if (op->kind == IOP_OP_CANCEL && res == -ENOENT)
                res = -EALREADY;   /* the core saw the target in flight: it just finished */
        }
        mark_written(st, op, res, flags);
        *ev = (iop_event_t){ .fd = op->fd, .op = op, .res = res, .flags = flags };
        return 1;
    }
    default:
        return 0;
    }
}

/* Moves up to max CQEs into events; a CQ that overflowed into the kernel's backlog
 * is flushed back once the ring has room, so nothing is ever dropped. */
static int reap(uring_state_t *st, iop_event_t *events, int max)
{
    int n = 0;
    while (st->local_head && n < max) {
        iop_op_t *op = st->local_head;
        st->local_head = op->next;
        if (!st->local_head)
            st->local_tail = NULL;
        st->inflight--;
        events[n++] = (iop_event_t){ .fd = op->fd, .op = op, .res = (int32_t)(intptr_t)op->backend_ptr };
    }
    for (int pass = 0; pass < 2 && n < max; pass++) {
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&st->ring, head, cqe) {
            if (n == max)
                break;
            n += translate(st, cqe, &events[n]);
            seen++;
        }
        io_uring_cq_advance(&st->ring, seen);
        unsigned kflags = IO_URING_READ_ONCE(*st->ring.sq.kflags);
        if (!(kflags & (IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN)) || n == max)
            break;
        (*st->host->syscalls)++;
        ring_enable(st);
        io_uring_get_events(&st->ring);
    }
    return n;
}

/* valgrind 3.19 does not know io_uring_enter may block: a thread waiting in it
 * keeps valgrind's lock, so no other thread of the process runs and a post or a
 * wake from one never comes. Under valgrind the ring is a plain one (no deferred
 * task work: a completion is posted, and the ring fd turns readable, without our
 * entering the kernel) and the loop sleeps in ppoll on the ring fd instead. */
static int wait_in_ppoll(uring_state_t *st, const struct __kernel_timespec *tsp)
{
    int r = uring_submit(st);
    if (r < 0 || io_uring_cq_ready(&st->ring))
        return r;
    struct timespec ts, *tp = NULL;
    if (tsp) {
        ts.tv_sec = (time_t)tsp->tv_sec;
        ts.tv_nsec = (long)tsp->tv_nsec;
        tp = &ts;
    }
    struct pollfd p = { .fd = st->ring.ring_fd, .events = POLLIN };
    (*st->host->syscalls)++;
    return ppoll(&p, 1, tp, NULL) < 0 ? -errno : 0;
}

static int backend_poll(void *state, iop_event_t *events, int max, int64_t timeout_ns)
{
    uring_state_t *st = state;
    rearm_all(st);
    int r;
    if (timeout_ns == 0 || st->local_head || io_uring_cq_ready(&st->ring)) {
        if (io_uring_sq_ready(&st->ring) || (st->defer && timeout_ns == 0)) {
            r = uring_submit(st);
            if (st->sqpoll && r > 0 && timeout_ns == 0)
                uring_sqpoll_settle(st);
        } else {
            r = 0;
        }
    } else {
        struct __kernel_timespec ts, *tsp = NULL;
        if (timeout_ns > 0) {
            ts.tv_sec = timeout_ns / 1000000000;
            ts.tv_nsec = timeout_ns % 1000000000;
            tsp = &ts;
        }
        ring_enable(st);
        if (st->valgrind) {
            r = wait_in_ppoll(st, tsp);
        } else {
            struct io_uring_cqe *cqe;
            (*st->host->syscalls)++;
            r = io_uring_submit_and_wait_timeout(&st->ring, &cqe, 1, tsp, NULL);
        }
    }
    if (r < 0 && r != -ETIME && r != -EINTR && r != -EBUSY && r != -EAGAIN)
        return r;
    return reap(st, events, max);
}

/* ---- pool, registration -------------------------------------------------------- */

static int backend_buf_pool(void *state, void *base, uint32_t count, uint32_t size)
{
    uring_state_t *st = state;
    if (!(st->feat & F_BUF_RING) || count > 32768)
        return -ENOTSUP;
    unsigned entries = 1;
    while (entries < count)
        entries <<= 1;
    size_t bytes = entries * sizeof(struct io_uring_buf);
    void *ring = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ring == MAP_FAILED)
        return -errno;
    struct io_uring_buf_reg reg = { .ring_addr = (uint64_t)(uintptr_t)ring, .ring_entries = entries, .bgid = 0 };
    (*st->host->syscalls)++;
    int r = io_uring_register_buf_ring(&st->ring, &reg, 0);
    if (r < 0) {
        munmap(ring, bytes);
        return r;
    }
    st->br = ring;
    st->br_bytes = bytes;
    st->br_mask = io_uring_buf_ring_mask(entries);
    st->pool = base;
    st->pool_size = size;
    io_uring_buf_ring_init(st->br);
    for (uint32_t i = 0; i < count; i++)
        io_uring_buf_ring_add(st->br, st->pool + (size_t)i * size, size, (unsigned short)i, st->br_mask, (int)i);
    io_uring_buf_ring_advance(st->br, (int)count);
    return 0;
}

static void backend_buf_return(void *state, uint32_t bid)
{
    uring_state_t *st = state;
    io_uring_buf_ring_add(st->br, st->pool + (size_t)bid * st->pool_size, st->pool_size,
                          (unsigned short)bid, st->br_mask, 0);
    io_uring_buf_ring_advance(st->br, 1);
}

/* iop_buf_register's set becomes the ring's fixed buffers (n == 0: dropped). The
 * kernel pins the pages now, counted against RLIMIT_MEMLOCK without CAP_IPC_LOCK. */
static int backend_buf_register(void *state, const struct iovec *iov, unsigned n)
{
    uring_state_t *st = state;
    (*st->host->syscalls)++;
    if (n == 0) {
        if (st->bufs_registered)
            (void)io_uring_unregister_buffers(&st->ring);
        st->bufs_registered = 0;
        return 0;
    }
    int r = io_uring_register_buffers(&st->ring, iov, n);
    if (r < 0)
        return r;
    st->bufs_registered = 1;
    return 0;
}

static int backend_submit(void *state, iop_op_t *op)
{
    return uring_submit_op(state, op);
}

static void backend_forget(void *state, int fd, void *fd_st)
{
    uring_forget(state, fd, fd_st);
}

static int backend_fd_register(void *state, int fd, void *fd_st)
{
    return uring_fd_register(state, fd, fd_st);
}

IOP_BACKEND_EXPORT const iop_backend_desc_t iop_backend_descriptor = {
    .abi_version = IOP_BACKEND_ABI_VERSION,
    .desc_size = sizeof(iop_backend_desc_t),
    .name = "uring",
    .summary = "io_uring (liburing): ops run in the kernel, batched submission",
    .model = IOP_MODEL_COMPLETION,
    .caps = IOP_CAP_UNLIMITED_FDS | IOP_CAP_O1_POLL | IOP_CAP_NATIVE_OPS | IOP_CAP_MULTISHOT_ACCEPT |
            IOP_CAP_MULTISHOT_RECV | IOP_CAP_PROVIDED_BUFFERS | IOP_CAP_ZEROCOPY_SEND |
            IOP_CAP_REGISTERED_FILES | IOP_CAP_SQPOLL | IOP_CAP_BUSY_POLL | IOP_CAP_NEED_REINIT |
            IOP_CAP_KERNEL_DEADLINES | IOP_CAP_REGISTERED_BUFFERS,
    .fd_state_size = sizeof(uring_fd_t),
    .probe = backend_probe,
    .create = backend_create,
    .destroy = backend_destroy,
    .watch = backend_watch,
    .submit = backend_submit,
    .poll = backend_poll,
    .wake = NULL,
    .forget = backend_forget,
    .buf_pool = backend_buf_pool,
    .buf_return = backend_buf_return,
    .fd_register = backend_fd_register,
    .abandon = backend_abandon,
    .buf_register = backend_buf_register,
};
