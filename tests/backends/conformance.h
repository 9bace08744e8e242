/* The backend conformance suite: what every backend must do, tested through the
 * public API only. Each conf_*.c file holds one area; conformance_main.c lists them
 * and runs them on the backend named by argv[1] (or $IOPLEX_BACKEND). */
#ifndef IOPLEX_CONFORMANCE_H
#define IOPLEX_CONFORMANCE_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>
#include <unistd.h>
#include "ioplex.h"
#include "test_util.h"

/* An op record that remembers how it completed. */
typedef struct rec {
    iop_op_t op;
    int calls;        /* callbacks run so far */
    int res;          /* the last result */
    int order;        /* completion sequence number (from rec_seq) */
    uint64_t at;      /* iop_now() when the callback ran */
} rec_t;

extern int rec_seq;   /* bumped by every rec_cb */
void rec_cb(iop_op_t *op, int res);   /* op->data must be the rec_t */

/* Loop-visible fds are closed through the loop, as the API asks. */
void conf_close(iop_loop_t *loop, int fd);

/* conf_watch.c */
void test_watch_read_level_triggered(void **state);
void test_watch_write_on_empty_pipe(void **state);
void test_watch_modify_zero_pauses(void **state);
void test_watch_stop_inside_callback(void **state);
void test_watch_free_inside_callback(void **state);
void test_watch_second_on_same_fd(void **state);
void test_watch_peer_close_reads_eof(void **state);
void test_watch_and_op_share_fd(void **state);
void test_watch_closed_behind_the_loop(void **state);
void test_watch_closed_others_served(void **state);
void test_watch_closed_before_first_wait(void **state);
void test_watch_fd_reused_within_batch(void **state);

/* conf_fixed_buf.c */
void test_fixed_buf_file_rw(void **state);
void test_fixed_buf_send_recv(void **state);
void test_fixed_buf_refused(void **state);
void test_fixed_buf_fork_child(void **state);

/* conf_ops.c */
void test_op_tcp_accept_connect_send_recv(void **state);
void test_op_pipe_read_write(void **state);
void test_op_file_read_write(void **state);
void test_op_udp_sendmsg_recvmsg(void **state);
void test_op_close(void **state);
void test_op_close_fails_waiting_ops(void **state);
void test_op_timeout(void **state);
void test_op_recv_waits_for_data(void **state);
void test_op_fifo_per_direction(void **state);
void test_op_large_transfer(void **state);

/* conf_errors.c */
void test_eof_after_peer_close(void **state);
void test_peer_reset(void **state);
void test_connection_refused(void **state);
void test_submit_in_flight_ebusy(void **state);
void test_submit_fd_out_of_range(void **state);
void test_submit_malformed(void **state);
void test_op_on_closed_fd(void **state);
void test_watch_bad_fd(void **state);
void test_fd_number_reused_after_close(void **state);

/* conf_cancel.c */
void test_cancel_pending_recv(void **state);
void test_cancel_twice(void **state);
void test_timeout_op_huge(void **state);
void test_cancel_not_in_flight(void **state);
void test_cancel_finished_op(void **state);
void test_cancel_multishot_final_result(void **state);
void test_cancel_timeout_op(void **state);
void test_deadline_expires(void **state);
void test_deadline_not_reached(void **state);
void test_deadline_already_past(void **state);
void test_deadline_many(void **state);
void test_deadline_races_data(void **state);
void test_deadline_queued_behind_op(void **state);

/* conf_timers.c */
void test_timers_fire_in_order(void **state);
void test_timer_repeat_then_stop(void **state);
void test_timer_huge_repeat(void **state);
void test_timer_stop_from_own_callback(void **state);
void test_timer_restart_active(void **state);
void test_timer_stop_other_pending(void **state);
void test_timeout_op_order(void **state);

/* conf_many.c */
void test_many_tcp_connections(void **state);

/* conf_threads.c */
void test_post_wakes_blocked_loop(void **state);
void test_many_posts_from_threads(void **state);
void test_stop_from_other_thread(void **state);
void test_run_on_other_thread(void **state);
void test_once_waits_through_signals(void **state);
void test_destroy_after_other_thread_spares_own_loop(void **state);
void test_run_refused_while_another_thread_runs(void **state);

/* conf_once.c */
void test_exactly_once_never_inside_submit(void **state);
void test_resubmit_from_callback(void **state);

/* conf_loop.c */
void test_loop_stats(void **state);
void test_loop_run_return_values(void **state);
void test_loop_run_default_until_idle(void **state);

void test_shared_listener_processes(void **state);
void test_loop_create_leaves_calls_uninterrupted(void **state);
void test_fork_child_makes_own_loop(void **state);

/* conf_features.c */
void test_multishot_accept(void **state);
void test_recv_buf_single(void **state);
void test_recv_buf_multishot(void **state);
void test_recv_buf_pool_exhausted(void **state);
void test_multishot_cancel_in_callback(void **state);
void test_multishot_deadline(void **state);
void test_zerocopy_send(void **state);
void test_options_misplaced(void **state);
void test_registered_fd(void **state);
void test_completion_burst_tiny_queue(void **state);
void test_loop_destroy_from_callback_refused(void **state);
void test_queue_hint_beyond_kernel_limit(void **state);

/* conf_edges.c */
void test_recv_buf_multishot_rearm(void **state);
void test_recv_buf_multishot_cancel_busy(void **state);
void test_deadline_with_data_waiting(void **state);
void test_register_after_close_op(void **state);
void test_zerocopy_send_unix(void **state);
void test_buf_release_twice(void **state);
void test_unpollable_device(void **state);
void test_dup_after_forget(void **state);
void test_forget_ends_waiting_multishot(void **state);

/* conf_register.c */
void test_register_busy_fds(void **state);
void test_register_under_low_fd_limit(void **state);

/* conf_queued.c */
void test_cancel_queued_behind_op(void **state);
void test_close_fails_every_queued_op(void **state);
void test_blocking_sockets(void **state);
void test_poll_first_asked(void **state);
void test_busy_poll(void **state);
void test_watch_regular_file(void **state);
void test_destroy_with_armed_records(void **state);
void test_registered_fd_watch(void **state);

#endif
