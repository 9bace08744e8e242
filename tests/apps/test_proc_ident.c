/* The apps' process identities (apps/common/proc_ident.c): pid plus start time, so
 * that a process whose pid the kernel handed out again is not taken for the one
 * that held it. ioplexd keeps them for the writers of its shared stats cells.
 *
 * Real processes: this one, a child while it runs, as a zombie and once reaped;
 * an identity with a live pid but another start time (what a reused pid looks
 * like); and, where this process may set /proc/sys/kernel/ns_last_pid (root in
 * its pid namespace), a real reuse: a new child given the reaped child's pid. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>
#include "proc_ident.h"

/* A child that sleeps until killed (and dies with us). */
static pid_t sleeper(void)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(30);
        for (;;)
            pause();
    }
    return pid;
}

static void end_child(pid_t pid)
{
    kill(pid, SIGKILL);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
}

static void test_self_and_nobody(void **state)
{
    (void)state;
    uint64_t me = iop_app_proc_ident(getpid());
    assert_int_equal(iop_app_ident_pid(me), getpid());
    assert_true(me >> IOP_APP_PID_BITS);          /* a start time was read */
    assert_int_equal(iop_app_proc_ident(getpid()), me);   /* stable */
    assert_int_equal(iop_app_proc_alive(me), 1);
    assert_int_equal(iop_app_proc_ident(0), 0);
    assert_int_equal(iop_app_proc_ident(-5), 0);
    assert_int_equal(iop_app_proc_alive(0), 0);
}

/* A live pid with another start time is another process: what a reused pid looks
 * like to whoever recorded the old one. kill(pid, 0) would call it alive. */
static void test_live_pid_other_start_is_gone(void **state)
{
    (void)state;
    pid_t kid = sleeper();
    uint64_t id = iop_app_proc_ident(kid);
    assert_int_equal(iop_app_ident_pid(id), kid);
    assert_int_equal(iop_app_proc_alive(id), 1);
    uint64_t older = id - (1ull << IOP_APP_PID_BITS);   /* the pid's earlier holder */
    assert_int_equal(kill(kid, 0), 0);
    assert_int_equal(iop_app_proc_alive(older), 0);
    assert_int_equal(iop_app_proc_alive(id + (1ull << IOP_APP_PID_BITS)), 0);

    kill(kid, SIGKILL);               /* a zombie still holds its pid: still there */
    siginfo_t si;
    assert_int_equal(waitid(P_PID, (id_t)kid, &si, WEXITED | WNOWAIT), 0);
    assert_int_equal(iop_app_proc_alive(id), 1);
    assert_int_equal(waitpid(kid, NULL, 0), kid);
    assert_int_equal(iop_app_proc_alive(id), 0);
    assert_int_equal(iop_app_proc_ident(kid), 0);
}

/* Asks the kernel to give the next new process the pid want; 0 if it may. */
static int next_pid_is(pid_t want)
{
    int fd = open("/proc/sys/kernel/ns_last_pid", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char buf[16];
    int n = snprintf(buf, sizeof buf, "%d", (int)want - 1);
    int r = write(fd, buf, (size_t)n) == n ? 0 : -1;
    close(fd);
    return r;
}

static void test_real_reuse(void **state)
{
    (void)state;
    for (int attempt = 0; attempt < 20; attempt++) {
        pid_t kid = sleeper();
        uint64_t id = iop_app_proc_ident(kid);
        end_child(kid);
        usleep(30000);                /* start times count clock ticks (10 ms) */
        if (next_pid_is(kid) < 0) {
            skip();                   /* not allowed to choose pids here */
            return;
        }
        pid_t again = sleeper();
        if (again != kid) {           /* another process took it first: try again */
            end_child(again);
            continue;
        }
        assert_int_equal(kill(again, 0), 0);
        assert_int_equal(iop_app_proc_alive(id), 0);
        assert_int_equal(iop_app_proc_alive(iop_app_proc_ident(again)), 1);
        end_child(again);
        return;
    }
    fail_msg("no pid could be reused in 20 attempts");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_self_and_nobody),
        cmocka_unit_test(test_live_pid_other_start_is_gone),
        cmocka_unit_test(test_real_reuse),
    };
    return cmocka_run_group_tests_name("apps.proc_ident", tests, NULL, NULL);
}
