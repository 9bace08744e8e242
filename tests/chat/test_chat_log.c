/* The chat service's broadcast log and outbox on their own (plugins/chat/chat_log.c,
 * chat_outbox.c compiled in): order and lapping, an appender killed in the middle of
 * an append, reader slots of dead processes, wake-ups across processes.
 *
 * usage: test_chat_log [BACKEND] */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "chat_internal.h"
#include "test_util.h"

#define LINE_CAP 64

static chat_log_t *new_log(uint32_t nrec, uint32_t nslots)
{
    chat_log_t *log;
    char err[256];
    assert_int_equal(chat_log_create(&log, nrec, LINE_CAP, nslots, err, sizeof err), 0);
    return log;
}

static uint64_t put(chat_log_t *log, const char *s)
{
    assert_int_equal(chat_log_lock(log), 0);
    uint64_t seq = chat_log_put(log, s, strlen(s));
    chat_log_unlock(log, 1);
    return seq;
}

static void expect_rec(chat_log_t *log, uint64_t seq, const char *want)
{
    char buf[LINE_CAP];
    ssize_t n = chat_log_read(log, seq, buf);
    assert_int_equal(n, (ssize_t)strlen(want));
    assert_memory_equal(buf, want, (size_t)n);
}

static void test_order_and_lapping(void **state)
{
    (void)state;
    chat_log_t *log = new_log(16, 2);
    char line[32];
    for (int i = 0; i < 40; i++) {
        snprintf(line, sizeof line, "line %d\n", i);
        assert_int_equal(put(log, line), (uint64_t)i);
    }
    assert_int_equal(chat_log_head(log), 40);
    for (int i = 24; i < 40; i++) {          /* the last ring's worth is there */
        snprintf(line, sizeof line, "line %d\n", i);
        expect_rec(log, (uint64_t)i, line);
    }
    char buf[LINE_CAP];
    assert_int_equal(chat_log_read(log, 23, buf), -1);   /* overwritten: a lapped reader */
    assert_int_equal(chat_log_read(log, 0, buf), -1);
    chat_log_destroy(log);
}

/* A child takes the lock, half-writes the next record and dies. The next locker
 * gets the lock, nothing was published, and the record is written afresh. */
static void test_appender_killed_mid_append(void **state)
{
    (void)state;
    chat_log_t *log = new_log(16, 2);
    put(log, "before\n");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (chat_log_lock(log) != 0)
            _exit(1);
        chat_rec_t *rec = (chat_rec_t *)((char *)log + log->rec_off + 1 * log->rec_size);
        atomic_store(&rec->stamp, 0);        /* what chat_log_put does first */
        memset(rec->line, 'X', 10);
        kill(getpid(), SIGKILL);             /* dies holding the lock */
        _exit(2);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(chat_log_head(log), 1);  /* nothing published */
    char buf[LINE_CAP];
    assert_int_equal(chat_log_read(log, 1, buf), -1);
    assert_int_equal(put(log, "after\n"), 1);   /* the lock recovered, the record rewritten */
    expect_rec(log, 0, "before\n");
    expect_rec(log, 1, "after\n");
    chat_log_destroy(log);
}

static void test_slots(void **state)
{
    (void)state;
    chat_log_t *log = new_log(16, 2);
    uint32_t g0, g1, g;
    int s0 = chat_log_claim_slot(log, &g0);
    int s1 = chat_log_claim_slot(log, &g1);
    assert_true(s0 >= 0 && s1 >= 0 && s0 != s1);
    assert_int_equal(chat_log_claim_slot(log, &g), -EBUSY);   /* both held by live workers */
    chat_log_release_slot(log, s1);
    assert_int_equal(chat_log_claim_slot(log, &g), s1);
    assert_int_equal(g, g1 + 1);              /* a new generation */
    chat_log_release_slot(log, s1);

    /* A slot whose process died is taken over. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        uint32_t gen;
        _exit(chat_log_claim_slot(log, &gen) == s1 ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(atomic_load(&log->slots[s1].pid), pid);
    assert_int_equal(chat_log_claim_slot(log, &g), s1);
    assert_int_equal(atomic_load(&log->slots[s1].pid), getpid());
    chat_log_release_slot(log, s0);
    chat_log_release_slot(log, s1);
    chat_log_destroy(log);
}

/* ---- wake-ups: a reader coroutine parked in chat_log_wait, an appender process ---- */

typedef struct waiter {
    chat_log_t *log;
    int slot;
    int result;
    uint64_t woke_ms;
    int done;
} waiter_t;

static void *wait_main(void *arg)
{
    waiter_t *w = arg;
    uint64_t deadline = iop_now(iop_coro_loop(iop_self())) + 5000000000ull;
    /* Slices of the real reader are short; here one long wait shows the wake-up. */
    while (chat_log_head(w->log) == 0 && (w->result = chat_log_wait(w->log, w->slot, 0, deadline)) == 0 &&
           iop_now(iop_coro_loop(iop_self())) < deadline)
        ;
    w->woke_ms = tu_clock_ms();
    w->done = 1;
    return NULL;
}

static void test_wake_across_processes(void **state)
{
    (void)state;
    chat_log_t *log = new_log(16, 2);
    uint32_t gen;
    iop_loop_t *loop = tu_loop_new();
    waiter_t w = { .log = log, .slot = chat_log_claim_slot(log, &gen) };
    assert_true(w.slot >= 0);
    assert_int_equal(iop_go(loop, wait_main, &w, NULL, NULL), 0);
    tu_run_for(loop, 50);                    /* parked, sleeping flag set */
    assert_false(w.done);
    uint64_t t0 = tu_clock_ms();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (chat_log_lock(log) != 0)
            _exit(1);
        chat_log_put(log, "wake\n", 5);
        chat_log_unlock(log, 1);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(tu_run_until_count(loop, &w.done, 1, 3000));
    assert_int_equal(w.result, 0);
    assert_true(w.woke_ms - t0 < 1000);      /* woken, not timed out */
    expect_rec(log, 0, "wake\n");
    iop_fd_forget(loop, log->slots[w.slot].efd);
    iop_loop_destroy(loop);
    chat_log_release_slot(log, w.slot);
    chat_log_destroy(log);
}

/* ---- the outbox ------------------------------------------------------------------ */

static void test_outbox(void **state)
{
    (void)state;
    chat_outbox_t o = { 0 };
    const char *p;
    assert_int_equal(chat_outbox_peek(&o, &p), 0);
    static char big[10000];
    memset(big, 'b', sizeof big);
    big[sizeof big - 1] = '\n';               /* one long line, across chunks */
    assert_int_equal(chat_outbox_put(&o, "hello\n", 6), 0);
    assert_int_equal(chat_outbox_put(&o, big, sizeof big), 0);
    assert_int_equal(chat_outbox_put(&o, "next\n", 5), 0);
    assert_int_equal(o.queued, 6 + sizeof big + 5);
    size_t n = chat_outbox_peek(&o, &p);
    assert_true(n >= 6);
    assert_memory_equal(p, "hello\n", 6);
    chat_outbox_consume(&o, 3);
    n = chat_outbox_peek(&o, &p);
    assert_memory_equal(p, "lo\n", 3);
    /* The head stays (a send may use it), and so does the rest of the line it ends
     * in the middle of; what follows goes. */
    chat_chunk_t *head = o.head;
    chat_outbox_drop_tail(&o);
    assert_ptr_equal(o.head, head);
    assert_int_equal(o.queued, 3 + sizeof big);
    size_t total = 0;
    char last = 0;
    while ((n = chat_outbox_peek(&o, &p)) > 0) {
        total += n;
        last = p[n - 1];
        chat_outbox_consume(&o, n);
    }
    assert_int_equal(o.queued, 0);
    assert_null(o.head);                     /* an idle client holds no chunk */
    assert_int_equal(total, 3 + sizeof big);
    assert_int_equal(last, '\n');
    assert_int_equal(chat_outbox_put(&o, "x", 1), 0);
    chat_outbox_free(&o);
    assert_null(o.head);
}

int main(int argc, char **argv)
{
    if (tu_backend_set(tu_backend_from_args(argc, argv)) < 0)
        return 2;
    alarm(60);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_lapping),
        cmocka_unit_test(test_appender_killed_mid_append),
        cmocka_unit_test(test_slots),
        cmocka_unit_test(test_wake_across_processes),
        cmocka_unit_test(test_outbox),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
