/* Shared by the process queue tests (test_pqueue.c, test_pqueue_chaos.c): the
 * queue under test and its setup; child processes come from kids.h. */
#ifndef TEST_PQUEUE_H
#define TEST_PQUEUE_H

#include "sched_test.h"

#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include "ioplex/pqueue.h"
#include "kids.h"

extern iop_pqueue_t *pq;             /* the queue under test, made by the setup */

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
void test_ended_thread_slot_is_repaired(void **state);
void test_scribbled_length_is_dropped(void **state);
void test_scribbled_header_is_not_trusted(void **state);
void test_kill_chaos(void **state);

#endif
