/* Shared dict across real processes: basic operations and their errors, a full
 * table and a full arena, iteration, atomic updates, tombstone churn, four writer
 * processes incrementing shared counters (plain and from coroutines: exact totals),
 * and writers killed with SIGKILL in the middle of a tight set / delete / update
 * loop (one while another keeps writing), again and again: afterwards the dict validates, no published entry was
 * lost to corruption, every value is intact, and the counters add up.
 * Runs on the backend named by argv[1] (for the coroutine writers).
 *
 * Children die with the test process, have their own alarm, and are killed and
 * reaped by PID in the teardown; they report failures through shared memory. */
#include "sched_test.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include "ioplex/plock.h"
#include "ioplex/shdict.h"
#include "kids.h"
#include "ipc/shdict_internal.h"

/* ---- processes --------------------------------------------------------------------- */

typedef struct shared {
    _Atomic int64_t progress;      /* a writer's completed counter increments */
    _Atomic int started;
} shared_t;

static shared_t *sh;
static iop_shdict_t *dict;


static void assert_valid(void)
{
    char why[256] = "";
    int r = iop_shdict_validate(dict, why, sizeof why);
    if (r != 0)
        fail_msg("validate: %d: %s", r, why);
}

static int make_dict(const iop_shdict_opts_t *o)
{
    int r = iop_shdict_create(&dict, o);
    if (r < 0)
        fail_msg("iop_shdict_create: %s: %s", iop_strerror(r), iop_last_error());
    return r;
}

static int setup(void **state)
{
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(sh != MAP_FAILED);
    memset(sh, 0, sizeof *sh);
    dict = NULL;
    kids_begin();
    alarm(45);
    return st_setup(state);
}

static int teardown(void **state)
{
    kids_end();
    int r = st_teardown(state);    /* the loop first: it may hold the lock's eventfd */
    iop_shdict_free(dict);
    munmap(sh, sizeof *sh);
    alarm(0);
    return r;
}

/* ---- basic operations --------------------------------------------------------------------- */

static void test_basic(void **state)
{
    (void)state;
    iop_shdict_opts_t o = { .size = sizeof o, .max_entries = 16, .max_key = 40, .max_value = 300 };
    make_dict(&o);
    char buf[400];
    assert_int_equal(iop_shdict_len(dict), 0);
    assert_int_equal(iop_shdict_get(dict, "a", buf, sizeof buf), -ENOENT);
    assert_int_equal(iop_shdict_delete(dict, "a"), -ENOENT);

    assert_int_equal(iop_shdict_set(dict, "a", "one", 3), 0);
    assert_int_equal(iop_shdict_set(dict, "", "empty key", 9), 0);
    assert_int_equal(iop_shdict_set(dict, "novalue", NULL, 0), 0);
    assert_int_equal(iop_shdict_len(dict), 3);
    assert_int_equal(iop_shdict_get(dict, "a", buf, sizeof buf), 3);
    assert_memory_equal(buf, "one", 3);
    assert_int_equal(iop_shdict_get(dict, "", buf, sizeof buf), 9);
    assert_memory_equal(buf, "empty key", 9);
    assert_int_equal(iop_shdict_get(dict, "novalue", buf, sizeof buf), 0);
    assert_int_equal(iop_shdict_get(dict, "a", NULL, 0), 3);     /* just the length */
    memset(buf, 'x', sizeof buf);
    assert_int_equal(iop_shdict_get(dict, "a", buf, 2), 3);      /* truncated copy */
    assert_memory_equal(buf, "onx", 3);

    /* replace with values of other sizes, across chunk boundaries */
    unsigned char big[300], got[300];
    tu_fill_pattern(big, sizeof big, 99);
    for (uint32_t len = 0; len <= 300; len += 37) {
        tu_fill_pattern(big, len, len + 1);
        assert_int_equal(iop_shdict_set(dict, "a", big, len), 0);
        assert_int_equal(iop_shdict_get(dict, "a", got, sizeof got), (ssize_t)len);
        assert_memory_equal(got, big, len);
    }
    assert_int_equal(iop_shdict_len(dict), 3);

    /* limits */
    char key[64];
    memset(key, 'k', sizeof key);
    key[40] = '\0';
    assert_int_equal(iop_shdict_set(dict, key, "x", 1), 0);      /* exactly max_key */
    assert_int_equal(iop_shdict_get(dict, key, buf, sizeof buf), 1);
    key[40] = 'k';
    key[41] = '\0';
    assert_int_equal(iop_shdict_set(dict, key, "x", 1), -ENAMETOOLONG);
    assert_int_equal(iop_shdict_get(dict, key, buf, sizeof buf), -ENAMETOOLONG);
    assert_int_equal(iop_shdict_delete(dict, key), -ENAMETOOLONG);
    assert_int_equal(iop_shdict_set(dict, "a", big, 300), 0);    /* exactly max_value */
    assert_int_equal(iop_shdict_set(dict, "a", big, 301), -EMSGSIZE);
    assert_int_equal(iop_shdict_get(dict, "a", got, sizeof got), 300);   /* unchanged */
    assert_memory_equal(got, big, 300);
    assert_int_equal(iop_shdict_set(dict, NULL, "x", 1), -EINVAL);

    assert_int_equal(iop_shdict_delete(dict, "a"), 0);
    assert_int_equal(iop_shdict_get(dict, "a", buf, sizeof buf), -ENOENT);
    assert_int_equal(iop_shdict_len(dict), 3);
    assert_valid();
}

static void test_full(void **state)
{
    (void)state;
    iop_shdict_opts_t o = { .size = sizeof o, .max_entries = 8, .max_value = 100 };
    make_dict(&o);
    char key[16];
    for (int i = 0; i < 8; i++) {
        snprintf(key, sizeof key, "key%d", i);
        assert_int_equal(iop_shdict_set(dict, key, &i, sizeof i), 0);
    }
    assert_int_equal(iop_shdict_set(dict, "one-more", "x", 1), -ENOSPC);
    assert_int_equal(iop_shdict_set(dict, "key3", "replaced", 8), 0);   /* replacing fits */
    assert_int_equal(iop_shdict_delete(dict, "key5"), 0);
    assert_int_equal(iop_shdict_set(dict, "one-more", "x", 1), 0);
    assert_int_equal(iop_shdict_len(dict), 8);
    assert_valid();
    iop_shdict_free(dict);
    dict = NULL;

    /* an arena that holds 4 entries of 16 + 4 + 100 bytes in 64-byte chunks (2 each) */
    iop_shdict_opts_t small = { .size = sizeof small, .max_entries = 32, .max_value = 100,
                                .arena_bytes = 8 * 64 };
    make_dict(&small);
    unsigned char v[100] = { 0 };
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof key, "k%02d", i);
        assert_int_equal(iop_shdict_set(dict, key, v, sizeof v), 0);
    }
    assert_int_equal(iop_shdict_set(dict, "k99", v, sizeof v), -ENOSPC);
    assert_int_equal(iop_shdict_set(dict, "k00", v, sizeof v), -ENOSPC);  /* no room for a copy */
    assert_int_equal(iop_shdict_set(dict, "k99", v, 10), -ENOSPC);        /* 1 chunk, none left */
    assert_int_equal(iop_shdict_len(dict), 4);
    assert_int_equal(iop_shdict_delete(dict, "k01"), 0);
    assert_int_equal(iop_shdict_set(dict, "k99", v, 10), 0);
    assert_int_equal(iop_shdict_set(dict, "k99", v, 20), 0);              /* replace: 1 + 1 */
    iop_shdict_stats_t st;
    assert_int_equal(iop_shdict_stats(dict, &st), 0);
    assert_int_equal(st.chunks, 8);
    assert_int_equal(st.chunks_free, 1);
    assert_int_equal(st.entries, 4);
    assert_valid();
    iop_shdict_free(dict);
    dict = NULL;

    /* Default room: every key at its largest value, and still an update of each
     * (the new entry is built before the old one goes). */
    make_dict(NULL);
    static unsigned char big[1024];
    for (int i = 0; i < 1024; i++) {
        snprintf(key, sizeof key, "d%d", i);
        assert_int_equal(iop_shdict_set(dict, key, big, sizeof big), 0);
    }
    assert_int_equal(iop_shdict_set(dict, "d17", "small", 5), 0);
    assert_int_equal(iop_shdict_set(dict, "d18", big, sizeof big), 0);
    assert_valid();
}

/* Bad arguments are errors, not crashes or a terabyte of shared memory. */
static void test_bad_arguments(void **state)
{
    (void)state;
    assert_int_equal(iop_shdict_create(NULL, NULL), -EINVAL);
    iop_shdict_t *d = (iop_shdict_t *)&d;
    iop_shdict_opts_t unsized = { .max_entries = 8 };
    assert_int_equal(iop_shdict_create(&d, &unsized), -EINVAL);
    assert_null(d);
    iop_shdict_opts_t huge = { .size = sizeof huge, .max_value = 1u << 30, .chunk_size = 65536 };
    assert_int_equal(iop_shdict_create(&d, &huge), -ENOMEM);
    assert_non_null(strstr(iop_last_error(), "more than half of the machine's memory"));
    make_dict(NULL);
    assert_int_equal(iop_shdict_stats(dict, NULL), -EINVAL);
    assert_int_equal(iop_plock_init(NULL), -EINVAL);
    assert_int_equal(iop_plock_create(NULL), -EINVAL);
}

/* ---- iteration and updates ---------------------------------------------------------------- */

#define ITER_KEYS 50

typedef struct seen {
    int count[ITER_KEYS];
    int bad;
    int visits;
    int stop_after;
} seen_t;

static int visit(const char *key, const void *val, size_t len, void *arg)
{
    seen_t *s = arg;
    int i;
    s->visits++;
    if (sscanf(key, "it%d", &i) != 1 || i < 0 || i >= ITER_KEYS || len != sizeof i ||
        memcmp(val, &i, sizeof i) != 0)
        s->bad++;
    else
        s->count[i]++;
    if (iop_shdict_get(dict, key, NULL, 0) != -EDEADLK)   /* the lock is held: ours */
        s->bad++;
    return s->stop_after && s->visits >= s->stop_after ? 42 : 0;
}

static void test_foreach(void **state)
{
    (void)state;
    make_dict(NULL);
    char key[16];
    for (int i = 0; i < ITER_KEYS; i++) {
        snprintf(key, sizeof key, "it%d", i);
        assert_int_equal(iop_shdict_set(dict, key, &i, sizeof i), 0);
    }
    for (int i = 0; i < ITER_KEYS; i += 5) {   /* some gone, some replaced */
        snprintf(key, sizeof key, "it%d", i);
        assert_int_equal(iop_shdict_delete(dict, key), 0);
    }
    for (int i = 1; i < ITER_KEYS; i += 5) {
        snprintf(key, sizeof key, "it%d", i);
        assert_int_equal(iop_shdict_set(dict, key, &i, sizeof i), 0);
    }
    seen_t s = { { 0 }, 0, 0, 0 };
    assert_int_equal(iop_shdict_foreach(dict, visit, &s), 0);
    assert_int_equal(s.bad, 0);
    assert_int_equal(s.visits, ITER_KEYS - ITER_KEYS / 5);
    for (int i = 0; i < ITER_KEYS; i++)
        assert_int_equal(s.count[i], i % 5 == 0 ? 0 : 1);
    seen_t stop = { { 0 }, 0, 0, 7 };
    assert_int_equal(iop_shdict_foreach(dict, visit, &stop), 42);
    assert_int_equal(stop.visits, 7);
    assert_int_equal(iop_shdict_len(dict), ITER_KEYS - ITER_KEYS / 5);   /* lock released */
}

/* Appends arg's string to the value; refuses past 20 bytes. */
static ssize_t append(const void *old, ssize_t old_len, void *out, size_t cap, void *arg)
{
    const char *tail = arg;
    size_t n = old_len < 0 ? 0 : (size_t)old_len, t = strlen(tail);
    if (n + t > 20 || n + t > cap)
        return -EFBIG;
    if (n)
        memcpy(out, old, n);
    memcpy((char *)out + n, tail, t);
    return (ssize_t)(n + t);
}

static ssize_t too_big(const void *old, ssize_t old_len, void *out, size_t cap, void *arg)
{
    (void)old, (void)old_len, (void)out, (void)arg;
    return (ssize_t)cap + 1;
}

static void test_update(void **state)
{
    (void)state;
    iop_shdict_opts_t o = { .size = sizeof o, .max_value = 64 };
    make_dict(&o);
    char buf[64];
    assert_int_equal(iop_shdict_update(dict, "s", append, "abc"), 3);    /* missing: created */
    assert_int_equal(iop_shdict_update(dict, "s", append, "defg"), 7);
    assert_int_equal(iop_shdict_get(dict, "s", buf, sizeof buf), 7);
    assert_memory_equal(buf, "abcdefg", 7);
    assert_int_equal(iop_shdict_update(dict, "s", append, "0123456789abcdef"), -EFBIG);
    assert_int_equal(iop_shdict_get(dict, "s", buf, sizeof buf), 7);    /* unchanged */
    assert_int_equal(iop_shdict_update(dict, "s", too_big, NULL), -EMSGSIZE);
    assert_int_equal(iop_shdict_get(dict, "s", buf, sizeof buf), 7);

    int64_t v = 0;
    assert_int_equal(iop_shdict_incr(dict, "n", 5, &v), 0);
    assert_int_equal(v, 5);
    assert_int_equal(iop_shdict_incr(dict, "n", -7, &v), 0);
    assert_int_equal(v, -2);
    assert_int_equal(iop_shdict_incr(dict, "s", 1, &v), -EINVAL);      /* not a counter */
    assert_int_equal(iop_shdict_len(dict), 2);
    assert_valid();
}

/* Many deletes: tombstones pile up and the table is rebuilt; every key stays findable. */
static void test_churn(void **state)
{
    (void)state;
    iop_shdict_opts_t o = { .size = sizeof o, .max_entries = 64, .max_value = 32 };
    make_dict(&o);
    char key[16];
    uint32_t rng = 7;
    int present[200] = { 0 };
    for (int round = 0; round < 5000; round++) {
        int k = (int)(tu_rand(&rng) % 200);
        snprintf(key, sizeof key, "c%d", k);
        if (present[k]) {
            assert_int_equal(iop_shdict_delete(dict, key), 0);
            present[k] = 0;
        } else {
            int r = iop_shdict_set(dict, key, &k, sizeof k);
            assert_true(r == 0 || r == -ENOSPC);
            present[k] = r == 0;
        }
    }
    int n = 0, v;
    for (int k = 0; k < 200; k++) {
        snprintf(key, sizeof key, "c%d", k);
        ssize_t r = iop_shdict_get(dict, key, &v, sizeof v);
        if (present[k]) {
            assert_int_equal(r, sizeof v);
            assert_int_equal(v, k);
            n++;
        } else {
            assert_int_equal(r, -ENOENT);
        }
    }
    assert_int_equal(iop_shdict_len(dict), n);
    iop_shdict_stats_t st;
    assert_int_equal(iop_shdict_stats(dict, &st), 0);
    assert_true(st.tombstones <= st.slots / 4);
    assert_valid();
}

/* ---- concurrent writers ------------------------------------------------------------------------ */

#define INCR_ROUNDS 1000
#define SHARED_KEYS 4

static void incr_round(int i, const char *own)
{
    char key[16];
    snprintf(key, sizeof key, "shared%d", i % SHARED_KEYS);
    KID_CHECK(iop_shdict_incr(dict, key, 1, NULL) == 0);
    KID_CHECK(iop_shdict_incr(dict, own, 2, NULL) == 0);
}

static void plain_writer(void *arg)
{
    for (int i = 0; i < INCR_ROUNDS; i++)
        incr_round(i, arg);
}

static int coro_done;

static void *coro_writer(void *arg)
{
    for (int i = 0; i < INCR_ROUNDS / 2; i++) {
        incr_round(i, arg);
        if (i % 16 == 0)
            iop_yield();
    }
    coro_done++;
    return NULL;
}

static void noop_timer(iop_timer_t *t) { (void)t; }

/* Two coroutines on this process's own loop share its rounds. */
static void coroutine_writer(void *arg)
{
    iop_loop_opts_t o = { .size = sizeof o, .backend = tu_backend, .flags = tu_loop_flags };
    iop_loop_t *loop = NULL;
    KID_CHECK(iop_loop_create(&loop, &o) == 0);
    coro_done = 0;
    for (int i = 0; i < 2; i++)
        KID_CHECK(iop_go(loop, coro_writer, arg, NULL, NULL) == 0);
    iop_timer_t guard = { 0 };
    uint64_t end = tu_clock_ms() + 15000;
    while (coro_done < 2 && tu_clock_ms() < end) {
        iop_timer_start(loop, &guard, 5 * MS, 0, noop_timer);
        iop_loop_run(loop, IOP_RUN_ONCE);
    }
    iop_timer_stop(&guard);
    KID_CHECK(coro_done == 2);
}

static void test_concurrent_increments(void **state)
{
    (void)state;
    make_dict(NULL);
    static char own[4][16];
    pid_t p[4];
    for (int i = 0; i < 4; i++) {
        snprintf(own[i], sizeof own[i], "own%d", i);
        p[i] = kids_spawn(i < 2 ? plain_writer : coroutine_writer, own[i]);
    }
    for (int i = 0; i < 4; i++)
        kids_assert_exited_ok(p[i], 20000);
    int64_t v, total = 0;
    for (int k = 0; k < SHARED_KEYS; k++) {
        char key[16];
        snprintf(key, sizeof key, "shared%d", k);
        assert_int_equal(iop_shdict_get(dict, key, &v, sizeof v), sizeof v);
        assert_int_equal(v, 4 * INCR_ROUNDS / SHARED_KEYS);
        total += v;
    }
    assert_int_equal(total, 4 * INCR_ROUNDS);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(iop_shdict_get(dict, own[i], &v, sizeof v), sizeof v);
        assert_int_equal(v, 2 * INCR_ROUNDS);
    }
    assert_int_equal(iop_shdict_len(dict), SHARED_KEYS + 4);
    assert_valid();
}

/* ---- writers killed at random instructions -------------------------------------------------------- */

#define KILL_KEYS 32
#define KILL_ROUNDS 50
#define KILL_MAXVAL 2000
static const char *const sentinels[] = { "s-alpha", "s-beta", "s-gamma", "s-delta" };

/* A value that proves itself: [seq:8][len:4][pattern from key hash and seq]. */
static size_t make_value(unsigned char *v, int key, uint64_t seq, size_t len)
{
    if (len < 12)
        len = 12;
    memcpy(v, &seq, 8);
    uint32_t l32 = (uint32_t)len;
    memcpy(v + 8, &l32, 4);
    tu_fill_pattern(v + 12, len - 12, (uint32_t)(key * 7919) ^ (uint32_t)seq);
    return len;
}

static int value_ok(const unsigned char *v, ssize_t len, int key)
{
    static unsigned char want[KILL_MAXVAL];
    if (len < 12 || len > KILL_MAXVAL)
        return 0;
    uint64_t seq;
    uint32_t l32;
    memcpy(&seq, v, 8);
    memcpy(&l32, v + 8, 4);
    if (l32 != (uint32_t)len)
        return 0;
    make_value(want, key, seq, (size_t)len);
    return memcmp(want, v, (size_t)len) == 0;
}

typedef struct rewrite_args {
    int key;
    uint64_t seq;
    size_t len;
} rewrite_args_t;

/* An update that rewrites the value from scratch under the lock (slow on purpose). */
static ssize_t rewrite(const void *old, ssize_t old_len, void *out, size_t cap, void *arg)
{
    (void)old, (void)old_len;
    rewrite_args_t *a = arg;
    if (a->len > cap)
        return -EMSGSIZE;
    return (ssize_t)make_value(out, a->key, a->seq, a->len);
}

/* Sets, deletes and rewrites random keys as fast as it can, counting in "ops"
 * (and in shared memory after each counted increment returned), until killed. */
static void frantic_writer(void *arg)
{
    uint32_t rng = (uint32_t)(uintptr_t)arg * 2654435761u + 1;
    static unsigned char v[KILL_MAXVAL];
    char key[16];
    atomic_fetch_add(&sh->started, 1);
    for (uint64_t seq = 1;; seq++) {
        int k = (int)(tu_rand(&rng) % KILL_KEYS);
        snprintf(key, sizeof key, "k%d", k);
        size_t len = 12 + tu_rand(&rng) % (KILL_MAXVAL - 12);
        int r;
        switch (tu_rand(&rng) % 4) {
        case 0:
        case 1:
            r = iop_shdict_set(dict, key, v, make_value(v, k, seq, len));
            KID_CHECK(r == 0 || r == -ENOSPC);
            break;
        case 2:
            r = iop_shdict_delete(dict, key);
            KID_CHECK(r == 0 || r == -ENOENT);
            break;
        default: {
            rewrite_args_t a = { k, seq, len };
            ssize_t n = iop_shdict_update(dict, key, rewrite, &a);
            KID_CHECK(n >= 12 || n == -ENOSPC);
        }
        }
        KID_CHECK(iop_shdict_incr(dict, "ops", 1, NULL) == 0);
        atomic_fetch_add(&sh->progress, 1);
    }
}

typedef struct census {
    int entries;
    int bad;
} census_t;

static int count_entry(const char *key, const void *val, size_t len, void *arg)
{
    census_t *c = arg;
    int k;
    c->entries++;
    if (key[0] == 'k' && sscanf(key, "k%d", &k) == 1 && !value_ok(val, (ssize_t)len, k))
        c->bad++;
    return 0;
}

/* Everything the writers may have left: all readable, intact and adding up. */
static void check_after_kill(int64_t progress)
{
    static unsigned char v[KILL_MAXVAL];
    assert_valid();                /* repairs first if the writer died holding the lock */
    iop_shdict_stats_t st;
    assert_int_equal(iop_shdict_stats(dict, &st), 0);
    assert_int_equal(st.dropped, 0);
    int present = 0;
    for (int k = 0; k < KILL_KEYS; k++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", k);
        ssize_t n = iop_shdict_get(dict, key, v, sizeof v);
        assert_true(n == -ENOENT || (n >= 12 && n <= KILL_MAXVAL));
        if (n >= 0) {
            assert_true(value_ok(v, n, k));
            present++;
        }
    }
    for (size_t i = 0; i < sizeof sentinels / sizeof *sentinels; i++) {
        assert_int_equal(iop_shdict_get(dict, sentinels[i], v, sizeof v), (ssize_t)strlen(sentinels[i]));
        assert_memory_equal(v, sentinels[i], strlen(sentinels[i]));
    }
    int64_t ops = 0;
    assert_int_equal(iop_shdict_get(dict, "ops", &ops, sizeof ops), sizeof ops);
    /* each killed writer's last increment may have landed uncounted */
    assert_true(ops >= progress && ops <= progress + 2);
    census_t c = { 0, 0 };
    assert_int_equal(iop_shdict_foreach(dict, count_entry, &c), 0);
    assert_int_equal(c.bad, 0);
    assert_int_equal(c.entries, present + 5);
    assert_int_equal(iop_shdict_len(dict), present + 5);
}

static void test_writer_killed(void **state)
{
    (void)state;
    iop_shdict_opts_t o = { .size = sizeof o, .max_entries = 40, .max_key = 16,
                            .max_value = KILL_MAXVAL, .arena_bytes = 24 * 2048 };
    make_dict(&o);    /* room for ~24 big values: -ENOSPC happens too */
    for (size_t i = 0; i < sizeof sentinels / sizeof *sentinels; i++)
        assert_int_equal(iop_shdict_set(dict, sentinels[i], sentinels[i], strlen(sentinels[i])), 0);
    assert_int_equal(iop_shdict_incr(dict, "ops", 0, NULL), 0);
    uint32_t rng = 12345;
    int64_t progress = 0;
    for (int round = 0; round < KILL_ROUNDS; round++) {
        /* Two writers; the first is killed while the second keeps writing (and so
         * repairs after it), then the second is killed too. */
        atomic_store(&sh->started, 0);
        atomic_store(&sh->progress, progress);
        pid_t a = kids_spawn(frantic_writer, (void *)(uintptr_t)(2 * round + 1));
        pid_t b = kids_spawn(frantic_writer, (void *)(uintptr_t)(2 * round + 2));
        uint64_t end = tu_clock_ms() + 5000;
        while (atomic_load(&sh->started) < 2 && tu_clock_ms() < end)
            tu_sleep_ms(1);
        for (int i = 0; i < 2; i++) {
            tu_sleep_ms(1 + tu_rand(&rng) % 10);
            pid_t pid = i == 0 ? a : b;
            kill(pid, SIGKILL);
            int st = kids_reap(pid, 5000);
            kids_assert_ok();
            assert_true(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        }
        progress = atomic_load(&sh->progress);
        int64_t ops = 0;
        iop_shdict_get(dict, "ops", &ops, sizeof ops);
        check_after_kill(progress);
        progress = ops;            /* the next writers count on from what landed */
    }
    iop_shdict_stats_t st;
    assert_int_equal(iop_shdict_stats(dict, &st), 0);
    print_message("    %d kills, %llu repairs, %lld writer ops\n", 2 * KILL_ROUNDS,
                  (unsigned long long)st.repairs, (long long)progress);
    assert_true(st.repairs >= 1);  /* at least one kill hit a writer holding the lock */
    /* and the dict is fully usable afterwards */
    assert_int_equal(iop_shdict_set(dict, "after", "ok", 2), 0);
    assert_int_equal(iop_shdict_delete(dict, "after"), 0);
    assert_valid();
}

/* ---- a table scribbled on ------------------------------------------------------------------ */

typedef struct twins {
    uint32_t old_ref, new_ref;     /* the table slot values of a key's old and new entry */
} twins_t;

/* The value of the one used slot of the active table. */
static uint32_t only_ref(void)
{
    _Atomic uint32_t *t = iop__shdict_active(dict);
    for (uint32_t i = 0; i < dict->nslots; i++) {
        uint32_t v = atomic_load(&t[i]);
        if (v != IOP__SLOT_EMPTY && v != IOP__SLOT_TOMB)
            return v;
    }
    fail_msg("no entry in the table");
    return 0;
}

/* Dies holding the lock after leaving two well-formed entries of one key, both cut
 * off from the key's probe path: the new one two slots past its place, the old one
 * (its freed chain closed again) three slots past, and its place emptied. */
static void scribbling_writer(void *arg)
{
    const twins_t *tw = arg;
    KID_CHECK(iop_plock_lock(&dict->lock, 0) == 0);
    _Atomic uint32_t *t = iop__shdict_active(dict);
    uint32_t home = 0, mask = dict->nslots - 1;
    while (home < dict->nslots && atomic_load(&t[home]) != tw->new_ref)
        home++;
    KID_CHECK(home < dict->nslots);
    iop__shdict_next(dict)[IOP__SLOT_CHUNK(tw->old_ref)] = IOP__CHAIN_END;
    atomic_store(&t[(home + 2) & mask], tw->new_ref);
    atomic_store(&t[(home + 3) & mask], tw->old_ref);
    atomic_store(&t[home], IOP__SLOT_EMPTY);
}

/* The repair keeps one entry of a key found twice in the table even when no lookup
 * reaches either (it used to keep both: the dict then failed its own check, and a
 * delete uncovered the other copy). */
static void test_repair_drops_unreachable_twins(void **state)
{
    (void)state;
    iop_shdict_opts_t o = { .size = sizeof o, .max_entries = 8 };
    make_dict(&o);
    twins_t tw;
    assert_int_equal(iop_shdict_set(dict, "k", "old", 3), 0);
    tw.old_ref = only_ref();
    assert_int_equal(iop_shdict_set(dict, "k", "new", 3), 0);
    tw.new_ref = only_ref();
    kids_assert_exited_ok(kids_spawn(scribbling_writer, &tw), 5000);
    assert_valid();                /* repairs first */
    char v[8];
    assert_int_equal(iop_shdict_len(dict), 1);
    assert_int_equal(iop_shdict_get(dict, "k", v, sizeof v), 3);
    assert_true(memcmp(v, "old", 3) == 0 || memcmp(v, "new", 3) == 0);
    assert_int_equal(iop_shdict_delete(dict, "k"), 0);
    assert_int_equal(iop_shdict_get(dict, "k", v, sizeof v), -ENOENT);
    assert_valid();
}

/* ---- sizes and links written over ------------------------------------------------------- */

/* The header of key's entry (short keys: in its first chunk). */
static iop__shdict_entry_t *entry_of(const char *key)
{
    _Atomic uint32_t *t = iop__shdict_active(dict);
    size_t len = strlen(key);
    for (uint32_t i = 0; i < dict->nslots; i++) {
        uint32_t v = atomic_load(&t[i]);
        if (v == IOP__SLOT_EMPTY || v == IOP__SLOT_TOMB)
            continue;
        iop__shdict_entry_t *e = iop__shdict_entry(dict, IOP__SLOT_CHUNK(v));
        if (e->key_len == len && memcmp(e + 1, key, len) == 0)
            return e;
    }
    fail_msg("no entry for %s", key);
    return NULL;
}

static int visit_count(const char *key, const void *val, size_t len, void *arg)
{
    (void)key, (void)val, (void)len;
    ++*(int *)arg;
    return 0;
}

/* Sizes, free-list links and table references that no operation wrote (a stray
 * write in some process) are never used to copy or to index: the operation that
 * meets a damaged entry drops it with -EUCLEAN (get, update, delete, foreach after
 * visiting the rest) or replaces it (set), a damaged free list is rebuilt, and the
 * other keys and the dict's consistency survive. */
static void test_damaged_sizes_and_links(void **state)
{
    (void)state;
    iop_shdict_opts_t o = { .size = sizeof o, .max_entries = 16, .max_value = 64 };
    make_dict(&o);
    const char *keys[] = { "get", "upd", "del", "set", "each", "keep" };
    for (size_t i = 0; i < 6; i++)
        assert_int_equal(iop_shdict_set(dict, keys[i], "value", 5), 0);
    char v[64];

    entry_of("get")->val_len = UINT32_MAX;
    assert_int_equal(iop_shdict_get(dict, "get", v, sizeof v), -EUCLEAN);
    assert_non_null(strstr(iop_last_error(), "dropped"));
    assert_int_equal(iop_shdict_get(dict, "get", v, sizeof v), -ENOENT);

    entry_of("upd")->val_len = 65;
    assert_int_equal(iop_shdict_incr(dict, "upd", 1, NULL), -EUCLEAN);
    int64_t sum = 0;
    assert_int_equal(iop_shdict_incr(dict, "upd", 2, &sum), 0);   /* a new counter */
    assert_int_equal(sum, 2);

    entry_of("del")->val_len = 1u << 30;
    assert_int_equal(iop_shdict_delete(dict, "del"), -EUCLEAN);
    assert_int_equal(iop_shdict_delete(dict, "del"), -ENOENT);

    entry_of("set")->val_len = 1u << 30;
    assert_int_equal(iop_shdict_set(dict, "set", "fresh", 5), 0);
    assert_int_equal(iop_shdict_get(dict, "set", v, sizeof v), 5);
    assert_memory_equal(v, "fresh", 5);

    entry_of("each")->key_len = 1u << 30;   /* no lookup finds it now; foreach would copy it */
    _Atomic uint32_t *t = iop__shdict_active(dict);
    for (uint32_t i = 0; i < dict->nslots; i++)
        if (atomic_load(&t[i]) == IOP__SLOT_EMPTY) {
            atomic_store(&t[i], IOP__SLOT_REF(0x7fffff00u));   /* far past the arena */
            break;
        }
    int visited = 0;
    assert_int_equal(iop_shdict_foreach(dict, visit_count, &visited), -EUCLEAN);
    assert_int_equal(visited, 3);                  /* upd, set, keep */
    visited = 0;
    assert_int_equal(iop_shdict_foreach(dict, visit_count, &visited), 0);
    assert_int_equal(visited, 3);
    assert_valid();

    dict->free_head = 0x7fffff00u;                 /* the free list leaves the arena */
    assert_int_equal(iop_shdict_set(dict, "after", "ok", 2), 0);
    assert_int_equal(iop_shdict_get(dict, "keep", v, sizeof v), 5);
    assert_memory_equal(v, "value", 5);
    assert_int_equal(iop_shdict_len(dict), 4);
    assert_valid();
    iop_shdict_stats_t st;
    assert_int_equal(iop_shdict_stats(dict, &st), 0);
    assert_int_equal(st.dropped, 6);   /* get, upd, del, set, each, the stray reference */
}

int main(int argc, char **argv)
{
    if (tu_backend_set(tu_backend_from_args(argc, argv)) < 0) {
        fprintf(stderr, "unknown backend mode '%s'\n", argv[1]);
        return 2;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_basic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreach, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update, setup, teardown),
        cmocka_unit_test_setup_teardown(test_churn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_increments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_killed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repair_drops_unreachable_twins, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_sizes_and_links, setup, teardown),
    };
    return cmocka_run_group_tests_name("ipc.shdict", tests, NULL, NULL);
}
