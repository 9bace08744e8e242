/* Small public helpers: the allocator seam, error and capability strings, op kind
 * names, and loop creation failures. */
#include <stdio.h>
#include <stdlib.h>
#include "test_core.h"

void test_alloc_seam_counts(void **state)
{
    (void)state;
    iop_alloc_stats_t a, b, c;
    iop_alloc_stats(&a);
    void *p = iop_malloc(100);
    assert_non_null(p);
    memset(p, 0xab, 100);
    iop_alloc_stats(&b);
    assert_int_equal(b.allocs, a.allocs + 1);
    assert_int_equal(b.frees, a.frees);
    iop_free(p);
    iop_alloc_stats(&c);
    assert_int_equal(c.allocs, b.allocs);
    assert_int_equal(c.frees, b.frees + 1);

    /* calloc zeroes and counts; a growing realloc counts and keeps the contents. */
    unsigned char *z = iop_calloc(64, 16);
    assert_non_null(z);
    for (int i = 0; i < 64 * 16; i++)
        assert_int_equal(z[i], 0);
    z[0] = 42;
    z[1023] = 7;
    unsigned char *g = iop_realloc(z, 1 << 20);
    assert_non_null(g);
    assert_int_equal(g[0], 42);
    assert_int_equal(g[1023], 7);
    iop_free(g);
    iop_alloc_stats(&a);
    assert_int_equal(a.allocs, c.allocs + 2);
    assert_int_equal(a.frees, c.frees + 1);

    const char *name = iop_alloc_name();
    assert_non_null(name);
    assert_true(strcmp(name, "jemalloc") == 0 || strcmp(name, "libc") == 0);
}

void test_strerror(void **state)
{
    (void)state;
    assert_string_equal(iop_strerror(-ENOENT), strerror(ENOENT));
    assert_string_equal(iop_strerror(ENOENT), strerror(ENOENT));
    assert_string_equal(iop_strerror(-ECONNREFUSED), strerror(ECONNREFUSED));
    const char *unknown = iop_strerror(-987654);
    assert_non_null(unknown);
    assert_non_null(iop_strerror(0));
}

static int count_words(const char *s)
{
    int words = 0, in_word = 0;
    for (; *s; s++) {
        if (*s == ' ') {
            in_word = 0;
        } else if (!in_word) {
            in_word = 1;
            words++;
        }
    }
    return words;
}

void test_caps_str(void **state)
{
    (void)state;
    char buf[512];
    assert_ptr_equal(iop_caps_str(0, buf, sizeof buf), buf);
    assert_string_equal(buf, "");

    /* Each of the defined bits has its own one-word name. */
    char names[14][64];
    for (int i = 0; i < 14; i++) {
        iop_caps_str(1u << i, buf, sizeof buf);
        assert_int_equal(count_words(buf), 1);
        assert_true(strlen(buf) < sizeof names[i]);
        memcpy(names[i], buf, strlen(buf) + 1);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(names[i], names[j]);
    }
    iop_caps_str(IOP_CAP_UNLIMITED_FDS | IOP_CAP_O1_POLL | IOP_CAP_NEED_REINIT, buf, sizeof buf);
    assert_int_equal(count_words(buf), 3);
    assert_non_null(strstr(buf, names[0]));
    assert_non_null(strstr(buf, names[1]));
    assert_non_null(strstr(buf, names[11]));

    /* A short buffer is never overrun and stays a string. */
    char small[8];
    memset(small, 'x', sizeof small);
    iop_caps_str(0xfffu, small, 6);
    assert_true(strlen(small) < 6);
    assert_int_equal(small[6], 'x');
    assert_int_equal(small[7], 'x');
}

void test_op_kind_names(void **state)
{
    (void)state;
    assert_string_equal(iop_op_kind_name(IOP_OP_RECV), "recv");
    assert_string_equal(iop_op_kind_name(IOP_OP_SEND), "send");
    assert_string_equal(iop_op_kind_name(IOP_OP_ACCEPT), "accept");
    assert_string_equal(iop_op_kind_name(IOP_OP_CANCEL), "cancel");
    for (int k = 0; k < IOP_OP_KIND_COUNT; k++) {
        const char *n = iop_op_kind_name(k);
        assert_non_null(n);
        assert_true(strlen(n) > 0);
    }
    assert_non_null(iop_op_kind_name(IOP_OP_KIND_COUNT));
    assert_non_null(iop_op_kind_name(-1));
}

void test_create_unknown_backend(void **state)
{
    (void)state;
    iop_loop_opts_t opts = { .size = sizeof opts, .backend = "nonexistent" };
    iop_loop_t *loop = (iop_loop_t *)&opts;   /* must be overwritten or left alone, never used */
    int r = iop_loop_create(&loop, &opts);
    assert_true(r < 0);
    const char *msg = iop_last_error();
    assert_non_null(msg);
    assert_true(strlen(msg) > 0);
    if (!strstr(msg, "nonexistent"))
        fail_msg("iop_last_error() does not name the backend: \"%s\"", msg);
    print_message("unknown backend: %s (%s)\n", iop_strerror(r), msg);
}

void test_create_bad_opts(void **state)
{
    (void)state;
    iop_loop_opts_t opts = { .size = 4, .backend = tu_backend };   /* far too small */
    iop_loop_t *loop = NULL;
    assert_int_equal(iop_loop_create(&loop, &opts), -EINVAL);
    assert_null(loop);
    assert_true(strlen(iop_last_error()) > 0);
}

void test_create_default(void **state)
{
    (void)state;
    iop_loop_t *loop = NULL;
    const char *saved = getenv("IOPLEX_BACKEND");
    if (saved && saved[0]) {
        print_message("IOPLEX_BACKEND is set: checking it instead of auto\n");
    }
    assert_int_equal(iop_loop_create(&loop, NULL), 0);
    assert_non_null(loop);
    const char *name = iop_loop_backend(loop);
    assert_non_null(name);
    assert_true(strlen(name) > 0);
    if (saved && saved[0])
        assert_string_equal(name, saved);
    assert_non_null(iop_loop_backend_report(loop));
    char caps[256];
    iop_caps_str(iop_loop_caps(loop), caps, sizeof caps);
    print_message("default backend: %s [%s]\n", name, caps);
    assert_int_equal(iop_loop_run(loop, IOP_RUN_NOWAIT), 0);
    iop_loop_destroy(loop);
}

static int fired_a;
static void count_fire(iop_timer_t *t) { (void)t; fired_a++; }

/* A timer armed on one loop and started on another leaves the first loop's heap:
 * the first loop neither fires it nor keeps waiting for it. */
void test_timer_moves_between_loops(void **state)
{
    (void)state;
    iop_loop_t *a = tu_loop_new(), *b = tu_loop_new();
    iop_timer_t t;
    memset(&t, 0, sizeof t);
    fired_a = 0;
    assert_int_equal(iop_timer_start(a, &t, 1000000, 0, count_fire), 0);
    assert_int_equal(iop_timer_start(b, &t, 1000000, 0, count_fire), 0);
    iop_timer_stop(&t);
    tu_sleep_ms(3);
    assert_int_equal(iop_loop_run(a, IOP_RUN_NOWAIT), 0);   /* nothing pending */
    assert_int_equal(iop_loop_run(b, IOP_RUN_NOWAIT), 0);
    assert_int_equal(fired_a, 0);
    assert_int_equal(iop_timer_start(a, &t, 1000000, 0, count_fire), 0);
    assert_int_equal(iop_timer_start(b, &t, 1000000, 0, count_fire), 0);
    tu_sleep_ms(3);
    assert_int_equal(iop_loop_run(a, IOP_RUN_NOWAIT), 0);
    assert_int_equal(iop_loop_run(b, IOP_RUN_ONCE), 0);
    assert_int_equal(fired_a, 1);                           /* once, on b */
    iop_loop_destroy(a);
    iop_loop_destroy(b);
}

static void never_cb(iop_op_t *op, int res)
{
    (void)op;
    fail_msg("a refused op's callback ran (%d)", res);
}

/* Options a caller built before backend ABI 2 passes (size ends at busy_poll_us):
 * the fields past its size are never read, whatever the memory holds. The receive
 * pool's limits are refused with a message; an odd buffer size is kept as asked. */
void test_create_opts_size_and_pool(void **state)
{
    (void)state;
    iop_loop_t *loop = NULL;
    iop_loop_opts_t old = { .size = offsetof(iop_loop_opts_t, sqpoll_idle_ms), .backend = tu_backend,
                            .buf_count = 5, .buf_size = 1 };   /* garbage past size */
    assert_int_equal(iop_loop_create(&loop, &old), 0);
    assert_int_equal(iop_buf_size(loop), 0);
    assert_null(iop_buf_addr(loop, 0));
    iop_op_t op;
    iop_prep_recv_buf(&op, 0, 0, never_cb, NULL);
    assert_int_equal(iop_submit(loop, &op), -EINVAL);   /* no pool */
    iop_loop_destroy(loop);

    assert_int_equal(iop_loop_create(NULL, NULL), -EINVAL);
    static const struct { uint32_t count, size; } bad[] = {
        { 32769, 64 }, { 4, (1u << 24) + 1 }, { 32768, 1u << 24 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        iop_loop_opts_t o = { .size = sizeof o, .backend = tu_backend, .buf_count = bad[i].count,
                              .buf_size = bad[i].size };
        loop = (iop_loop_t *)&o;
        assert_int_equal(iop_loop_create(&loop, &o), -EINVAL);
        assert_null(loop);
        assert_non_null(strstr(iop_last_error(), "too big"));
    }

    iop_loop_opts_t odd = { .size = sizeof odd, .backend = tu_backend, .buf_count = 4, .buf_size = 100 };
    assert_int_equal(iop_loop_create(&loop, &odd), 0);
    assert_int_equal(iop_buf_size(loop), 100);
    char *b0 = iop_buf_addr(loop, 0), *b3 = iop_buf_addr(loop, 3);
    assert_non_null(b0);
    assert_ptr_equal(b3, b0 + 300);
    assert_null(iop_buf_addr(loop, 4));
    iop_buf_release(loop, 2);    /* never lent: ignored */
    iop_buf_release(loop, 99);   /* out of range: ignored */
    iop_loop_destroy(loop);
}
