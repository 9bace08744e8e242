/* Test helpers: start the real app binaries, talk to them through pipes, and reap
 * them. Every wait is bounded; a child that outlives its deadline is killed. */
#ifndef TEST_APPS_PROC_H
#define TEST_APPS_PROC_H

#include <stddef.h>
#include <stdbool.h>
#include <sys/types.h>

typedef struct proc {
    pid_t pid;          /* 0 once reaped */
    int out_fd;         /* read end of the child's stdout, -1 if not captured */
    int err_fd;         /* a temporary file holding the child's stderr */
    int status;         /* waitpid status once reaped */
} proc_t;

/* Starts argv[0] with argv. Its stdin is /dev/null, its stdout a pipe (out_fd), its
 * stderr a temporary file. nofile > 0 sets RLIMIT_NOFILE in the child before exec,
 * after closing every fd above stderr, so that the limit leaves nofile - 3 free.
 * 0 or -errno. */
int proc_start(proc_t *p, char *const argv[], long nofile);

/* Reads one line from the child's stdout (without the newline) within timeout_ms.
 * Its length, or -ETIMEDOUT / -EPIPE (stdout closed first) / -errno. */
int proc_read_line(proc_t *p, char *buf, size_t len, int timeout_ms);

/* Waits up to timeout_ms for the child to exit: 0 (status in p->status) or -ETIMEDOUT. */
int proc_wait(proc_t *p, int timeout_ms);

/* Waits up to timeout_ms for a child started by other means (fork); kills and reaps
 * it after that. Its exit code, 128 + the signal that ended it, or -1 if killed. */
int proc_exit_code(pid_t pid, int timeout_ms);

/* Kills (SIGKILL) and reaps the child if it still runs; closes the pipes. */
void proc_cleanup(proc_t *p);

/* What the child wrote on stderr so far (NUL-terminated, truncated to len - 1). */
char *proc_stderr(proc_t *p, char *buf, size_t len);

/* Waits up to timeout_ms for the child's stderr to hold needle; true once it does. */
bool proc_stderr_wait(proc_t *p, const char *needle, int timeout_ms);

/* Runs argv to completion with `in` (may be NULL) on its stdin, collecting stdout into
 * out and stderr into err (both NUL-terminated, truncated to fit). Kills it after
 * timeout_ms. Its wait status, or -ETIMEDOUT / -errno. */
int proc_run(char *const argv[], const char *in, size_t inlen, char *out, size_t outlen,
             char *err, size_t errlen, int timeout_ms);

/* Milliseconds on CLOCK_MONOTONIC. */
long long now_ms(void);

/* CPU time (user + system) pid has used, in seconds; < 0 on error. */
double proc_cpu_seconds(pid_t pid);

/* How many fds pid has open; < 0 on error. */
int proc_open_fds(pid_t pid);

#endif
