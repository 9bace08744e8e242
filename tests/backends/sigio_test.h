/* Tests of what only the sigio backend has: real-time signal queue overflow, signals
 * routed per thread, the signal choice, fds that cannot signal.
 *
 * Some tests run in a forked child or in extra threads, where cmocka must not be
 * called; the helpers below therefore report failure by return value, never
 * through cmocka. */
#ifndef IOPLEX_SIGIO_TEST_H
#define IOPLEX_SIGIO_TEST_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sys/types.h>
#include "ioplex.h"

#define SINK_BUF 4096

/* The receiving end of one connection: a recv op resubmitted after every chunk. */
typedef struct sink {
    iop_op_t op;
    int fd;
    long *total;         /* shared byte counter of all sinks of a test */
    int *errors;         /* shared error counter */
    char buf[SINK_BUF];
} sink_t;

/* A sigio loop, or NULL with the reason in iop_last_error(). */
iop_loop_t *st_loop_new(void);

/* A connected loopback TCP pair, both ends non-blocking, [0] with TCP_NODELAY so
 * that each write is its own segment. 0 or -errno. */
int st_tcp_pair(int fds[2]);

/* Starts receiving on fd into *total. 0 or -errno. */
int st_sink_start(iop_loop_t *loop, sink_t *s, int fd, long *total, int *errors);

/* Writes len bytes to fd in chunks of chunk bytes; 0, or -1 if a write fell short. */
int st_write_chunks(int fd, size_t len, size_t chunk);

/* Runs loop (IOP_RUN_ONCE, never blocking more than 20 ms) until *total >= want or
 * limit_ms pass. 1 if reached, 0 on timeout, -errno if the loop failed. */
int st_run_until_bytes(iop_loop_t *loop, const long *total, long want, unsigned limit_ms);

/* The signal and owner thread fd is armed with: F_GETSIG, F_GETOWN_EX. */
int st_armed_signal(int fd);
pid_t st_armed_owner(int fd);

/* test_sigio_overflow.c */
void test_sigio_queue_overflow_loses_nothing(void **state);

/* test_sigio_threads.c */
void test_sigio_two_threads_two_loops(void **state);
void test_sigio_two_loops_one_thread(void **state);

/* test_sigio.c */
void test_sigio_signal_from_env(void **state);
void test_sigio_user_handlers_keep_working(void **state);
void test_sigio_skips_signal_the_thread_reads(void **state);
void test_sigio_refuses_user_sigio_handler(void **state);
void test_sigio_destroy_disarms(void **state);
void test_sigio_fds_without_o_async(void **state);
void test_sigio_unix_stream_write_room(void **state);

#endif
