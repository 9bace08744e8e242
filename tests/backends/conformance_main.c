/* Runs the conformance suite on one backend: `test_conformance NAME[+sqpoll|+kernel-deadlines] [FILTER]`
 * (NAME may come from $IOPLEX_BACKEND instead; FILTER is a cmocka test-name glob). */
#include <stdio.h>
#include "conformance.h"

int rec_seq;

void rec_cb(iop_op_t *op, int res)
{
    rec_t *r = op->data;
    assert_ptr_equal(&r->op, op);
    r->calls++;
    r->res = res;
    r->order = ++rec_seq;
    r->at = iop_now(op->loop);
}

void conf_close(iop_loop_t *loop, int fd)
{
    if (fd >= 0)
        assert_int_equal(iop_fd_close(loop, fd), 0);
}

int main(int argc, char **argv)
{
    const char *spec = tu_backend_from_args(argc, argv);
    if (!spec || tu_backend_set(spec) < 0) {
        fprintf(stderr, "usage: %s BACKEND[+sqpoll|+kernel-deadlines] [FILTER]  (or set IOPLEX_BACKEND)\n", argv[0]);
        return 2;
    }
    if (argc > 2)
        cmocka_set_test_filter(argv[2]);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_watch_read_level_triggered),
        cmocka_unit_test(test_watch_write_on_empty_pipe),
        cmocka_unit_test(test_watch_modify_zero_pauses),
        cmocka_unit_test(test_watch_stop_inside_callback),
        cmocka_unit_test(test_watch_free_inside_callback),
        cmocka_unit_test(test_watch_second_on_same_fd),
        cmocka_unit_test(test_watch_peer_close_reads_eof),
        cmocka_unit_test(test_watch_and_op_share_fd),
        cmocka_unit_test(test_watch_closed_behind_the_loop),
        cmocka_unit_test(test_watch_closed_others_served),
        cmocka_unit_test(test_watch_closed_before_first_wait),
        cmocka_unit_test(test_watch_fd_reused_within_batch),

        cmocka_unit_test(test_op_tcp_accept_connect_send_recv),
        cmocka_unit_test(test_op_pipe_read_write),
        cmocka_unit_test(test_op_file_read_write),
        cmocka_unit_test(test_op_udp_sendmsg_recvmsg),
        cmocka_unit_test(test_op_close),
        cmocka_unit_test(test_op_close_fails_waiting_ops),
        cmocka_unit_test(test_op_timeout),
        cmocka_unit_test(test_op_recv_waits_for_data),
        cmocka_unit_test(test_op_large_transfer),
        cmocka_unit_test(test_op_fifo_per_direction),

        cmocka_unit_test(test_eof_after_peer_close),
        cmocka_unit_test(test_peer_reset),
        cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_submit_in_flight_ebusy),
        cmocka_unit_test(test_submit_fd_out_of_range),
        cmocka_unit_test(test_submit_malformed),
        cmocka_unit_test(test_op_on_closed_fd),
        cmocka_unit_test(test_watch_bad_fd),
        cmocka_unit_test(test_fd_number_reused_after_close),

        cmocka_unit_test(test_cancel_pending_recv),
        cmocka_unit_test(test_cancel_twice),
        cmocka_unit_test(test_timeout_op_huge),
        cmocka_unit_test(test_cancel_not_in_flight),
        cmocka_unit_test(test_cancel_finished_op),
        cmocka_unit_test(test_cancel_multishot_final_result),
        cmocka_unit_test(test_cancel_timeout_op),
        cmocka_unit_test(test_deadline_expires),
        cmocka_unit_test(test_deadline_not_reached),
        cmocka_unit_test(test_deadline_already_past),
        cmocka_unit_test(test_deadline_many),
        cmocka_unit_test(test_deadline_races_data),
        cmocka_unit_test(test_deadline_queued_behind_op),

        cmocka_unit_test(test_timers_fire_in_order),
        cmocka_unit_test(test_timer_repeat_then_stop),
        cmocka_unit_test(test_timer_huge_repeat),
        cmocka_unit_test(test_timer_stop_from_own_callback),
        cmocka_unit_test(test_timer_restart_active),
        cmocka_unit_test(test_timer_stop_other_pending),
        cmocka_unit_test(test_timeout_op_order),

        cmocka_unit_test(test_many_tcp_connections),

        cmocka_unit_test(test_post_wakes_blocked_loop),
        cmocka_unit_test(test_many_posts_from_threads),
        cmocka_unit_test(test_stop_from_other_thread),
        cmocka_unit_test(test_run_on_other_thread),
        cmocka_unit_test(test_once_waits_through_signals),
        cmocka_unit_test(test_destroy_after_other_thread_spares_own_loop),
        cmocka_unit_test(test_run_refused_while_another_thread_runs),

        cmocka_unit_test(test_exactly_once_never_inside_submit),
        cmocka_unit_test(test_resubmit_from_callback),

        cmocka_unit_test(test_loop_stats),
        cmocka_unit_test(test_loop_run_return_values),
        cmocka_unit_test(test_loop_run_default_until_idle),
        cmocka_unit_test(test_fork_child_makes_own_loop),
        cmocka_unit_test(test_shared_listener_processes),
        cmocka_unit_test(test_loop_create_leaves_calls_uninterrupted),

        cmocka_unit_test(test_multishot_accept),
        cmocka_unit_test(test_recv_buf_single),
        cmocka_unit_test(test_recv_buf_multishot),
        cmocka_unit_test(test_recv_buf_pool_exhausted),
        cmocka_unit_test(test_multishot_cancel_in_callback),
        cmocka_unit_test(test_zerocopy_send),
        cmocka_unit_test(test_multishot_deadline),
        cmocka_unit_test(test_options_misplaced),
        cmocka_unit_test(test_registered_fd),
        cmocka_unit_test(test_register_busy_fds),
        cmocka_unit_test(test_register_under_low_fd_limit),
        cmocka_unit_test(test_completion_burst_tiny_queue),
        cmocka_unit_test(test_loop_destroy_from_callback_refused),
        cmocka_unit_test(test_queue_hint_beyond_kernel_limit),
        cmocka_unit_test(test_recv_buf_multishot_rearm),
        cmocka_unit_test(test_recv_buf_multishot_cancel_busy),
        cmocka_unit_test(test_deadline_with_data_waiting),
        cmocka_unit_test(test_register_after_close_op),
        cmocka_unit_test(test_zerocopy_send_unix),
        cmocka_unit_test(test_buf_release_twice),
        cmocka_unit_test(test_unpollable_device),
        cmocka_unit_test(test_dup_after_forget),
        cmocka_unit_test(test_forget_ends_waiting_multishot),

        cmocka_unit_test(test_fixed_buf_file_rw),
        cmocka_unit_test(test_fixed_buf_send_recv),
        cmocka_unit_test(test_fixed_buf_refused),
        cmocka_unit_test(test_fixed_buf_fork_child),

        cmocka_unit_test(test_cancel_queued_behind_op),
        cmocka_unit_test(test_close_fails_every_queued_op),
        cmocka_unit_test(test_blocking_sockets),
        cmocka_unit_test(test_poll_first_asked),
        cmocka_unit_test(test_busy_poll),
        cmocka_unit_test(test_watch_regular_file),
        cmocka_unit_test(test_destroy_with_armed_records),
        cmocka_unit_test(test_registered_fd_watch),
    };
    char name[64];
    snprintf(name, sizeof name, "conformance.%s", spec);
    return cmocka_run_group_tests_name(name, tests, NULL, NULL);
}
