/* Shared by the process queue tests (test_pqueue.c, test_pqueue_chaos.c): child
 * processes that die with the test, are killed and reaped by PID in the teardown
 * even when an assertion failed, and report through shared memory, never through
 * cmocka. */
#ifndef TEST_PQUEUE_H
#define TEST_PQUEUE_H

#include "sched_test.h"

#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include "ioplex/pqueue.h"

#define PQ_MAX_KIDS 16

/* State every child can write: the first failed check. */
typedef struct pq_report {
    char failure[256];
} pq_report_t;

extern pq_report_t *pq_report;
extern iop_pqueue_t *pq;             /* the queue under test, made by the setup */

#define KID_CHECK(cond) pq_kid_check((cond), #cond, __LINE__)
void pq_kid_check(int ok, const char *what, int line);

/* Forks a child that runs fn(arg) and exits 0; it dies with us and after 30 s. */
pid_t pq_spawn(void (*fn)(void *), void *arg);

/* Waits up to limit_ms for pid (a child from pq_spawn), killing it after that.
 * Its wait status, or -1 if it had to be killed. */
int pq_reap(pid_t pid, unsigned limit_ms);

/* Forgets pid after the caller killed and reaped it itself. */
void pq_forget(pid_t pid);

/* Fails the test if a child reported a failure. */
void pq_assert_kids_ok(void);

/* Anonymous shared memory, zeroed; freed by the teardown. */
void *pq_shared(size_t size);

/* cmocka setup / teardown: a queue of capacity 8 and max_msg 256 in pq (tests may
 * replace it: pq_recreate), the loop of sched_test, a 50 s alarm. */
int pq_setup(void **state);
int pq_teardown(void **state);
void pq_recreate(size_t capacity, size_t max_msg);

/* How soon a sleeper must wake after the put or close meant for it: well under
 * the 25 ms a slice would take in the tests that check it; valgrind translating
 * the wake-up paths on their first run needs more. */
static inline uint64_t pq_wake_bound_ms(void)
{
    const char *pre = getenv("LD_PRELOAD");
    return pre && strstr(pre, "vgpreload") ? 200 : 15;
}

/* Absolute CLOCK_MONOTONIC deadline ms from now (usable outside coroutines too). */
static inline uint64_t pq_after_ms(uint64_t ms) { return tu_clock_ns() + ms * MS; }

/* test_pqueue_chaos.c */
void test_dead_putter_is_skipped(void **state);
void test_dead_getter_slot_is_reclaimed(void **state);
void test_kill_chaos(void **state);

#endif
