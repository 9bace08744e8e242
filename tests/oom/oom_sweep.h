/* The out-of-memory sweep, and what the scenario files (oom_*.c) share; test_oom.c
 * lists the scenarios.
 *
 * Each scenario runs again and again with the allocator seam failing allocation n
 * (iop__alloc_fail_after), n = 0, 1, 2 ..., until one run completes without
 * meeting an injected failure: once with every allocation from the n-th on
 * failing (the run gives up at the first error), once with only the n-th failing
 * (the run goes on after it, and what the failure left behind gets used). Every run must end cleanly:
 * each call succeeds or returns -ENOMEM (with iop_last_error() filled where the
 * API promises it), nothing crashes or waits forever, and what failed leaves the
 * loop usable: once allocations work again the same loop still runs ops, timers
 * and watches, and destroys without a leak (LeakSanitizer checks at exit in the
 * sanitizer build). */
#ifndef IOPLEX_OOM_SWEEP_H
#define IOPLEX_OOM_SWEEP_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>
#include "test_util.h"

#define MAX_N 4000        /* more allocations than any scenario makes */
#define RUN_MS 3000       /* a wait longer than this is a hang */
#define SEC 1000000000ull
#define MAX_TIMERS 512    /* more than the timer heap holds before it grows */

/* ---- the sweep (oom_sweep.c) ---------------------------------------------------------- */

extern long injected;    /* failures injected during this run */
extern int once;         /* the sweep's mode: only allocation n fails */

/* Fails allocation n on (only n when once), or none (n = -1); adds the failures
 * injected meanwhile to injected. */
void inject(long n);

/* The first error a run met, and where: later ones often follow from it (a peer's
 * EOF, a cancel) and need not be -ENOMEM. */
typedef struct outcome {
    int err;
    const char *what;
    char msg[256];
} outcome_t;

extern outcome_t oc;     /* this run's */

/* r < 0: notes it if it is the run's first error. Returns r. */
int note(int r, const char *what);

typedef void (*scenario_fn)(void);

/* Runs name's scenario once per allocation n until a run meets no injected failure,
 * in both modes ($OOM_ONCE=0 or 1 picks one; $OOM_N=n runs the one step n). */
void sweep(const char *name, scenario_fn run);

/* Loop creation under the sweep: NULL (the error noted) when it failed. */
iop_loop_t *loop_new_flags(uint32_t buf_count, uint32_t flags);
iop_loop_t *loop_new(uint32_t buf_count);

/* After a failure, with allocation back: loop must still run ops, timers, watches
 * and posts from another thread. */
void still_works(iop_loop_t *loop);

/* ---- helpers several scenario groups use (oom_sweep.c) ------------------------------- */

/* Arms timers until the loop's timer heap is full: how many, or -1 if max did not. */
int fill_timer_heap(iop_loop_t *loop, iop_timer_t *t, int max, int *data);

/* In a coroutine: a deadline 10 s from now. */
uint64_t soon(void);

/* A coroutine's result from an int. */
void *as_ptr(intptr_t v);

/* Joins c from main; a join that times out is a hang. Its result, noted. */
int join(iop_coro_t *c, const char *what);

/* An echo over TCP: the coroutine scenario's server and client, the echo service's
 * client. */
typedef struct echo {
    int lfd;
    struct sockaddr_in addr;
    iop_chan_t *ch;       /* the server tells the counter each chunk's size */
    long counted;
} echo_t;

/* A coroutine: connects to e->addr and has 2000 bytes echoed three times, a sleep
 * after each; 0, or its first error (noted). */
void *echo_client(void *arg);

/* A pool task: the square of an int. */
int square(const void *in, size_t len, iop_pool_out_t *out);

/* ---- the tests ----------------------------------------------------------------------- */

/* oom_loop.c */
void test_proactor(void **state);
void test_many(void **state);

/* oom_coro.c */
void test_coro(void **state);
void test_crowd(void **state);
void test_sync(void **state);

/* oom_services.c */
void test_service(void **state);
void test_service_http(void **state);
void test_service_chat(void **state);
void test_service_accept_oom(void **state);

/* oom_starve.c */
void test_chat_reader_oom(void **state);
void test_pool_dispatcher_oom(void **state);

/* oom_loader.c */
void test_loader(void **state);

/* oom_ipc.c (`test_oom ipc`) */
void test_ipc(void **state);

/* oom_shard.c (`test_oom shard`) */
void test_shard(void **state);
void test_shard_accept_oom(void **state);

#endif
