/* Child processes for the IPC tests: each dies with the test process
 * (PR_SET_PDEATHSIG, checked against getppid) and after its own alarm, is killed
 * and reaped by PID in the teardown even when an assertion failed, and reports its
 * first failed check through shared memory, never through cmocka. */
#ifndef TEST_IPC_KIDS_H
#define TEST_IPC_KIDS_H

#include <stddef.h>
#include <sys/types.h>

/* cmocka setup / teardown halves: a fresh report and no children; then every child
 * still running killed and reaped. */
void kids_begin(void);
void kids_end(void);

/* Forks a child that runs fn(arg), then exits 0. */
pid_t kids_spawn(void (*fn)(void *), void *arg);

/* Waits up to limit_ms for pid, killing it after that. Its wait status, or -1 if it
 * had to be killed. */
int kids_reap(pid_t pid, unsigned limit_ms);

/* Forgets pid after the caller killed and reaped it itself. */
void kids_forget(pid_t pid);

/* Fails the test if a child reported a failure. */
void kids_assert_ok(void);

/* Reaps pid and fails the test unless it exited 0 and nobody reported a failure. */
void kids_assert_exited_ok(pid_t pid, unsigned limit_ms);

/* SIGKILL, then reap; fails the test unless it died of that signal. */
void kids_kill_and_reap(pid_t pid);

/* In a child: records the first failed check (with iop_last_error()) and exits 1. */
void kids_check_at(int ok, const char *what, int line);
#define KID_CHECK(cond) kids_check_at((cond), #cond, __LINE__)

#endif
