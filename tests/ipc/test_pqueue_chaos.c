/* Process queue: processes that die in the middle of an operation.
 *
 * Two exact cases first, set up by writing a slot's control word the way a process
 * leaves it when killed at that instruction (the test links the static library and
 * reads the private layout): a put that claimed a slot and died before publishing,
 * and a get that died while copying out (its pid a zombie, not yet reaped); a put
 * left by a thread that ended in this process; a slot whose length was written
 * over, and a shared header written over. Then
 * kill -9 at random: producers and consumers are killed and replaced over and
 * over while they run, and every message whose put returned must arrive exactly
 * once, except at most one per killed consumer; afterwards the queue still works. */
#include "test_pqueue.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "pqueue_internal.h"

/* A pid that is certainly dead: a child that exited. Reaped unless keep_zombie. */
static pid_t dead_pid(int keep_zombie)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(0);
    siginfo_t si;
    assert_int_equal(waitid(P_PID, (id_t)pid, &si, WEXITED | (keep_zombie ? WNOWAIT : 0)), 0);
    return pid;
}

/* Leaves position pos as a process killed inside put or get would: a put that
 * claimed it (even seq), or a get that claimed it (odd seq); the index moved on. */
static void leave_claimed(uint64_t pos, pid_t who, int getter)
{
    pq_slot_t *s = pq_slot(pq, pos);
    atomic_store(&s->word, pq_word((uint32_t)who, 2 * (uint32_t)pos + (getter ? 1 : 0)));
    atomic_store(getter ? &pq->head : &pq->tail, pos + 1);
}

/* Three laps over the 4-slot queue: every slot takes a message and gives it back,
 * in order, and a fifth put finds the queue full. */
static void assert_laps_in_order(void)
{
    for (uint32_t lap = 0; lap < 3; lap++) {
        for (uint32_t i = 0; i < 4; i++) {
            uint32_t v = lap * 4 + i;
            assert_int_equal(iop_pqueue_try_put(pq, &v, sizeof v), 0);
        }
        assert_int_equal(iop_pqueue_try_put(pq, "x", 1), -EAGAIN);
        for (uint32_t i = 0; i < 4; i++) {
            uint32_t v = 99;
            assert_int_equal(iop_pqueue_try_get(pq, &v, sizeof v), sizeof v);
            assert_int_equal(v, lap * 4 + i);
        }
    }
}

void test_dead_putter_is_skipped(void **state)
{
    (void)state;
    pq_recreate(4, 16);
    char buf[16] = "";
    assert_int_equal(iop_pqueue_put(pq, "a", 2, 0), 0);       /* position 0 */
    leave_claimed(1, dead_pid(0), 0);                          /* position 1: dead put */
    assert_int_equal(iop_pqueue_put(pq, "c", 2, 0), 0);       /* position 2 */
    assert_int_equal(iop_pqueue_get(pq, buf, sizeof buf, pq_after_ms(2000)), 2);
    assert_string_equal(buf, "a");
    uint64_t t0 = tu_clock_ns();
    assert_int_equal(iop_pqueue_get(pq, buf, sizeof buf, pq_after_ms(2000)), 2);
    assert_string_equal(buf, "c");                             /* the dead one skipped */
    assert_true(tu_clock_ns() - t0 < 1500 * MS);   /* well before the 2 s deadline */
    assert_int_equal(atomic_load(&pq->repaired), 1);
    assert_int_equal(iop_pqueue_try_get(pq, buf, sizeof buf), -EAGAIN);

    /* Every slot, the repaired one included, carries messages again, in order. */
    assert_laps_in_order();
}

void test_dead_getter_slot_is_reclaimed(void **state)
{
    (void)state;
    pq_recreate(2, 16);
    char buf[16] = "";
    assert_int_equal(iop_pqueue_put(pq, "a", 2, 0), 0);
    assert_int_equal(iop_pqueue_put(pq, "b", 2, 0), 0);
    pid_t zombie = dead_pid(1);
    leave_claimed(0, zombie, 1);     /* a get of "a" died copying it; not yet reaped */
    assert_int_equal(iop_pqueue_get(pq, buf, sizeof buf, 0), 2);
    assert_string_equal(buf, "b");
    /* "a" went down with its getter. The put needs the dead getter's slot back. */
    uint64_t t0 = tu_clock_ns();
    assert_int_equal(iop_pqueue_put(pq, "c", 2, pq_after_ms(2000)), 0);
    assert_true(tu_clock_ns() - t0 < 1500 * MS);   /* well before the 2 s deadline */
    assert_int_equal(atomic_load(&pq->repaired), 1);
    assert_int_equal(iop_pqueue_put(pq, "d", 2, pq_after_ms(2000)), 0);
    assert_int_equal(iop_pqueue_get(pq, buf, sizeof buf, 0), 2);
    assert_string_equal(buf, "c");
    assert_int_equal(iop_pqueue_get(pq, buf, sizeof buf, 0), 2);
    assert_string_equal(buf, "d");
    assert_int_equal(waitpid(zombie, NULL, 0), zombie);
}

/* A put claimed by a thread of this very process that ended before publishing
 * (the claim written with that thread's own owner id), and one naming the calling
 * thread itself (an id reused after its holder died): neither is a sibling at work,
 * so both are repaired, and the slot carries messages again. */
static void *claim_and_end(void *arg)
{
    *(pid_t *)arg = pq_self(pq);
    leave_claimed(0, pq_self(pq), 0);
    return NULL;
}

/* pthread_join returns once the kernel has cleared the thread's tid word, a moment
 * before the thread is gone: wait for that (bounded). */
static void wait_thread_gone(pid_t tid)
{
    for (int i = 0; i < 2000 && !iop__pq_tid_dead(tid); i++)
        tu_sleep_ms(1);
    assert_int_equal(iop__pq_tid_dead(tid), 1);
}

static void assert_claim_repaired(uint64_t repaired)
{
    char buf[16];
    /* The get repairs the claim and skips the tombstone; nothing else is there. */
    assert_int_equal(iop_pqueue_get(pq, buf, sizeof buf, pq_after_ms(20)), -ETIMEDOUT);
    assert_int_equal(atomic_load(&pq->repaired), repaired);
    assert_int_equal(iop_pqueue_try_put(pq, "m", 2), 0);
    assert_int_equal(iop_pqueue_try_get(pq, buf, sizeof buf), 2);
    assert_string_equal(buf, "m");
}

/* A child's first thread starts with the forking thread's cached id: it must not
 * claim slots under it, even after another thread made the process's first call. */
static void *first_call(void *arg)
{
    *(pid_t *)arg = pq_self(pq);
    return NULL;
}

static void self_is_own_pid(void *arg)
{
    (void)arg;
    pthread_t t;
    pid_t other = 0;
    KID_CHECK(pthread_create(&t, NULL, first_call, &other) == 0 && pthread_join(t, NULL) == 0);
    KID_CHECK(other > 0 && other != getpid());
    KID_CHECK(pq_self(pq) == getpid());
}

/* Runs until its pipe is closed: a sibling thread at work. */
typedef struct sibling {
    int fds[2];
    _Atomic pid_t tid;
} sibling_t;

static void *wait_for_eof(void *arg)
{
    sibling_t *sb = arg;
    atomic_store(&sb->tid, (pid_t)syscall(SYS_gettid));
    char c;
    while (read(sb->fds[0], &c, 1) < 0 && errno == EINTR)
        ;
    return NULL;
}

void test_ended_thread_slot_is_repaired(void **state)
{
    (void)state;
    pq_recreate(1, 16);
    pthread_t t;
    pid_t ended = 0;
    assert_int_equal(pthread_create(&t, NULL, claim_and_end, &ended), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_true(ended > 0 && ended != getpid());
    wait_thread_gone(ended);
    assert_claim_repaired(1);

    leave_claimed(atomic_load(&pq->tail), pq_self(pq), 0);
    assert_claim_repaired(2);

    assert_int_equal(pq_self(pq), (pid_t)syscall(SYS_gettid));    /* cached here now */
    kids_assert_exited_ok(kids_spawn(self_is_own_pid, NULL), 5000);

    /* A live sibling's claim is left alone: its id reads as alive, until it ends. */
    sibling_t sb = { .tid = 0 };
    assert_int_equal(pipe(sb.fds), 0);
    assert_int_equal(pthread_create(&t, NULL, wait_for_eof, &sb), 0);
    for (int i = 0; i < 5000 && !atomic_load(&sb.tid); i++)
        tu_sleep_ms(1);
    pid_t sibling = atomic_load(&sb.tid);
    assert_true(sibling > 0 && sibling != getpid());
    assert_int_equal(iop__pq_tid_dead(sibling), 0);
    close(sb.fds[1]);
    assert_int_equal(pthread_join(t, NULL), 0);
    close(sb.fds[0]);
    wait_thread_gone(sibling);
}

/* A slot whose length was written over (by a stray write in any process sharing
 * the queue) is dropped with -EBADMSG: its length is never used to copy (the
 * buffers offered here would let a copy run far past the slot and the mapping),
 * and the messages around it still come out, in order. */
void test_scribbled_length_is_dropped(void **state)
{
    (void)state;
    pq_recreate(4, 16);
    static char buf[1 << 17];
    assert_int_equal(iop_pqueue_put(pq, "a", 2, 0), 0);       /* position 0 */
    assert_int_equal(iop_pqueue_put(pq, "b", 2, 0), 0);       /* position 1: scribbled */
    assert_int_equal(iop_pqueue_put(pq, "c", 2, 0), 0);       /* position 2: scribbled */
    assert_int_equal(iop_pqueue_put(pq, "d", 2, 0), 0);       /* position 3 */
    atomic_store(&pq_slot(pq, 1)->len, 1u << 16);              /* fits buf, not the slot */
    atomic_store(&pq_slot(pq, 2)->len, UINT32_MAX);            /* fits nothing */

    assert_int_equal(iop_pqueue_get(pq, buf, sizeof buf, 0), 2);
    assert_string_equal(buf, "a");
    assert_int_equal(iop_pqueue_get(pq, buf, sizeof buf, pq_after_ms(2000)), -EBADMSG);
    assert_non_null(strstr(iop_last_error(), "65536 bytes"));
    assert_int_equal(iop_pqueue_try_get(pq, buf, 4), -EBADMSG);   /* not -EMSGSIZE for good */
    assert_non_null(strstr(iop_last_error(), "max_msg (16)"));
    assert_int_equal(iop_pqueue_get(pq, buf, sizeof buf, pq_after_ms(2000)), 2);
    assert_string_equal(buf, "d");
    assert_int_equal(iop_pqueue_try_get(pq, buf, sizeof buf), -EAGAIN);

    /* Both dropped slots carry messages again, lap after lap. */
    assert_laps_in_order();
    assert_int_equal(iop_pqueue_len(pq), 0);
}

/* Every word of the shared header (indices, flags, wait counts) written over with
 * the number of an fd the process has open for something else. The queue's
 * geometry and eventfds are the process's own copies, so the calls that follow
 * index inside the ring, answer with the real capacity and size, and never write
 * to that fd; what they return may differ (the indices are garbage), but each
 * answer is one a queue can give. In a child: a call that strays may crash it. */
static void scribble_header_then_use(void *arg)
{
    (void)arg;
    int fds[2];
    KID_CHECK(pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0);
    uint32_t fd = (uint32_t)fds[1];
    for (uint32_t *w = (uint32_t *)pq; w < (uint32_t *)pq->slots; w++)
        *w = fd;

    KID_CHECK(iop_pqueue_try_put(pq, "x", 2) == -EPIPE);      /* closed reads as set */
    atomic_store(&pq->closed, 0);
    char buf[16];
    for (int i = 0; i < 6; i++) {
        int p = i < 3 ? iop_pqueue_try_put(pq, "x", 2) : iop_pqueue_put(pq, "x", 2, pq_after_ms(20));
        KID_CHECK(p == 0 || p == -EAGAIN || p == -ETIMEDOUT);
        ssize_t g = i < 3 ? iop_pqueue_try_get(pq, buf, sizeof buf)
                          : iop_pqueue_get(pq, buf, sizeof buf, pq_after_ms(20));
        KID_CHECK(g == 2 || g == -EAGAIN || g == -ETIMEDOUT || g == -EBADMSG);
    }
    KID_CHECK(iop_pqueue_capacity(pq) == 4 && iop_pqueue_max_msg(pq) == 16);
    KID_CHECK(iop_pqueue_len(pq) <= 4);
    KID_CHECK(iop_pqueue_try_put(pq, "x", 17) == -EMSGSIZE);
    iop_pqueue_close(pq);           /* wakes the (scribbled) waiters: through its own fds */
    KID_CHECK(read(fds[0], buf, sizeof buf) < 0 && errno == EAGAIN);
    iop_pqueue_destroy(pq);
}

void test_scribbled_header_is_not_trusted(void **state)
{
    (void)state;
    pq_recreate(4, 16);
    kids_assert_exited_ok(kids_spawn(scribble_header_then_use, NULL), 10000);
}

/* ---- kill -9 at random ------------------------------------------------------------------ */

#define CH_PRODUCERS 3
#define CH_CONSUMERS 3
#define CH_INCARNATIONS 200           /* producer processes over the whole run */
#define CH_PER_INC 16384              /* messages one producer process puts at most */
#define CH_RUN_MS 2500

typedef struct chaos {
    _Atomic int stop_producers, stop_consumers;
    _Atomic uint64_t completed[CH_INCARNATIONS];   /* puts returned 0, per producer */
    _Atomic uint64_t seen[CH_INCARNATIONS][CH_PER_INC / 64];
    _Atomic uint64_t got, dups, bad;
} chaos_t;

static chaos_t *ch;

/* Messages of 16 bytes to 8 KiB: copying the long ones keeps a slot claimed for a
 * while, so that kills often land between a claim and its end. */
#define CH_MAX_MSG 8192

typedef struct ch_msg {
    uint32_t inc, seq;
    uint64_t check;
    unsigned char body[CH_MAX_MSG - 16];
} ch_msg_t;

static uint64_t ch_check(uint32_t inc, uint32_t seq) { return ((uint64_t)inc << 32 | seq) * 0x9e3779b97f4a7c15ull; }
static size_t ch_len(uint32_t inc, uint32_t seq) { return 16 + (size_t)(ch_check(inc, seq) >> 40) % (CH_MAX_MSG - 15); }

static void ch_producer(void *arg)
{
    uint32_t inc = (uint32_t)(intptr_t)arg;
    static ch_msg_t m;
    m.inc = inc;
    for (m.seq = 0; m.seq < CH_PER_INC && !ch->stop_producers; m.seq++) {
        m.check = ch_check(inc, m.seq);
        size_t len = ch_len(inc, m.seq);
        memset(m.body, (int)(m.check >> 56), len - 16);
        int r;
        while ((r = iop_pqueue_put(pq, &m, len, pq_after_ms(200))) == -ETIMEDOUT && !ch->stop_producers)
            ;                        /* a put that timed out enqueued nothing: retry */
        if (r != 0)
            break;
        ch->completed[inc] = m.seq + 1;
        if (m.seq % 256 == 255)
            usleep(300);             /* bursts: both full and empty queues happen */
    }
    while (!ch->stop_producers)
        usleep(1000);
}

static void ch_record(const ch_msg_t *m, ssize_t n)
{
    if (n < 16 || m->inc >= CH_INCARNATIONS || m->seq >= CH_PER_INC ||
        m->check != ch_check(m->inc, m->seq) || (size_t)n != ch_len(m->inc, m->seq)) {
        ch->bad++;
        return;
    }
    for (size_t i = 0; i < (size_t)n - 16; i++) {
        if (m->body[i] != (unsigned char)(m->check >> 56)) {
            ch->bad++;
            return;
        }
    }
    uint64_t bit = 1ull << (m->seq % 64);
    if (atomic_fetch_or(&ch->seen[m->inc][m->seq / 64], bit) & bit)
        ch->dups++;
    ch->got++;
}

static void ch_consumer(void *arg)
{
    (void)arg;
    static ch_msg_t m;
    while (!ch->stop_consumers) {
        ssize_t n = iop_pqueue_get(pq, &m, sizeof m, pq_after_ms(100));
        if (n == -ETIMEDOUT)
            continue;
        if (n == -EPIPE)
            break;
        ch_record(&m, n);
    }
}

static int ch_bit(uint32_t inc, uint64_t seq)
{
    return (ch->seen[inc][seq / 64] >> (seq % 64)) & 1;
}

void test_kill_chaos(void **state)
{
    (void)state;
    pq_recreate(64, CH_MAX_MSG);
    ch = pq_shared(sizeof *ch);
    pid_t prod[CH_PRODUCERS], cons[CH_CONSUMERS];
    uint32_t next_inc = 0;
    for (int i = 0; i < CH_PRODUCERS; i++)
        prod[i] = kids_spawn(ch_producer, (void *)(intptr_t)next_inc++);
    for (int i = 0; i < CH_CONSUMERS; i++)
        cons[i] = kids_spawn(ch_consumer, NULL);

    uint32_t rng = 12345;
    int producer_kills = 0, consumer_kills = 0;
    uint64_t end = tu_clock_ms() + CH_RUN_MS;
    while (tu_clock_ms() < end && next_inc < CH_INCARNATIONS) {
        usleep(2000 + tu_rand(&rng) % 15000);
        int victim = (int)(tu_rand(&rng) % (CH_PRODUCERS + CH_CONSUMERS));
        pid_t *slot = victim < CH_PRODUCERS ? &prod[victim] : &cons[victim - CH_PRODUCERS];
        kill(*slot, SIGKILL);
        waitpid(*slot, NULL, 0);     /* reaped at once: the pid is gone */
        kids_forget(*slot);
        if (victim < CH_PRODUCERS) {
            producer_kills++;
            *slot = kids_spawn(ch_producer, (void *)(intptr_t)next_inc++);
        } else {
            consumer_kills++;
            *slot = kids_spawn(ch_consumer, NULL);
        }
    }

    /* Producers finish, consumers drain what is left, then stop. */
    ch->stop_producers = 1;
    for (int i = 0; i < CH_PRODUCERS; i++)
        assert_int_equal(kids_reap(prod[i], 5000), 0);
    uint64_t before = (uint64_t)-1, drain_end = tu_clock_ms() + 5000;
    while (tu_clock_ms() < drain_end && ch->got != before) {
        before = ch->got;
        tu_sleep_ms(300);
    }
    ch->stop_consumers = 1;
    for (int i = 0; i < CH_CONSUMERS; i++)
        assert_int_equal(kids_reap(cons[i], 5000), 0);
    kids_assert_ok();
    static ch_msg_t m;
    for (;;) {                       /* anything still queued, by us */
        ssize_t n = iop_pqueue_get(pq, &m, sizeof m, pq_after_ms(300));
        if (n == -ETIMEDOUT)
            break;
        ch_record(&m, n);
    }

    uint64_t missing = 0, put = 0;
    for (uint32_t inc = 0; inc < next_inc; inc++) {
        uint64_t done = ch->completed[inc];
        put += done;
        for (uint64_t seq = 0; seq < done; seq++)
            missing += !ch_bit(inc, seq);
        for (uint64_t seq = done + 1; seq < CH_PER_INC; seq++)   /* done: its put may have been under way */
            if (ch_bit(inc, seq))
                fail_msg("producer %u's message %llu was never put, yet arrived", inc, (unsigned long long)seq);
    }
    print_message("chaos: %d producers and %d consumers killed, %llu puts returned, %llu gets, "
                  "%llu lost with killed consumers, %llu slots of killed processes repaired\n",
                  producer_kills, consumer_kills, (unsigned long long)put, (unsigned long long)ch->got,
                  (unsigned long long)missing, (unsigned long long)atomic_load(&pq->repaired));
    assert_int_equal(ch->bad, 0);
    assert_int_equal(ch->dups, 0);
    if (missing > (uint64_t)consumer_kills)
        fail_msg("%llu messages of returned puts lost, %d consumers killed", (unsigned long long)missing, consumer_kills);
    assert_true(producer_kills + consumer_kills >= 20);
    assert_true(put >= 1000);

    /* Not wedged: every slot takes a message and gives it back, in order. */
    for (uint32_t lap = 0; lap < 2; lap++) {
        for (uint32_t i = 0; i < 64; i++) {
            m.inc = lap;
            m.seq = i;
            assert_int_equal(iop_pqueue_put(pq, &m, sizeof m, pq_after_ms(2000)), 0);
        }
        for (uint32_t i = 0; i < 64; i++) {
            assert_int_equal(iop_pqueue_get(pq, &m, sizeof m, pq_after_ms(2000)), sizeof m);
            assert_int_equal(m.seq, i);
        }
    }
    assert_int_equal(iop_pqueue_len(pq), 0);
}
