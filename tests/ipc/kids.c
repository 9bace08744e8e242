/* Child processes for the IPC tests (kids.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ioplex.h"
#include "kids.h"
#include "test_util.h"

#define MAX_KIDS 16
#define KID_ALARM_S 30

typedef struct report {
    char failure[256];            /* a child's first failed check */
} report_t;

static report_t *report;          /* shared with the children */
static pid_t kids[MAX_KIDS];
static int nkids;

static void report_map(void)
{
    if (!report) {
        report = mmap(NULL, sizeof *report, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        assert_true(report != MAP_FAILED);
    }
}

void kids_begin(void)
{
    report_map();
    memset(report, 0, sizeof *report);
    nkids = 0;
}

void kids_end(void)
{
    while (nkids > 0) {
        kill(kids[0], SIGKILL);
        kids_reap(kids[0], 5000);
    }
}

pid_t kids_spawn(void (*fn)(void *), void *arg)
{
    assert_true(nkids < MAX_KIDS);
    report_map();                 /* a suite without kids_begin still gets one */
    pid_t parent = getpid();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(3);
        alarm(KID_ALARM_S);
        fn(arg);
        _exit(0);
    }
    kids[nkids++] = pid;
    return pid;
}

void kids_forget(pid_t pid)
{
    for (int i = 0; i < nkids; i++)
        if (kids[i] == pid) {
            kids[i] = kids[--nkids];
            return;
        }
}

int kids_reap(pid_t pid, unsigned limit_ms)
{
    int status = 0;
    uint64_t end = tu_clock_ms() + limit_ms;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR))
            break;
        if (tu_clock_ms() >= end) {
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
            status = -1;
            break;
        }
        tu_sleep_ms(1);
    }
    kids_forget(pid);
    return status;
}

void kids_assert_ok(void)
{
    if (report->failure[0])
        fail_msg("%s", report->failure);
}

void kids_assert_exited_ok(pid_t pid, unsigned limit_ms)
{
    int st = kids_reap(pid, limit_ms);
    kids_assert_ok();
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("child %d did not exit cleanly (status %d)", (int)pid, st);
}

void kids_kill_and_reap(pid_t pid)
{
    kill(pid, SIGKILL);
    int st = kids_reap(pid, 5000);
    assert_true(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
}

void kids_check_at(int ok, const char *what, int line)
{
    if (ok)
        return;
    if (!report->failure[0]) {
        const char *e = iop_last_error();
        snprintf(report->failure, sizeof report->failure, "child %d, line %d: %s%s%s%s",
                 (int)getpid(), line, what, e[0] ? " (" : "", e, e[0] ? ")" : "");
    }
    _exit(1);
}
