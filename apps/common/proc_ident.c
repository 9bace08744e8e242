/* Process identities: pid plus start time (see proc_ident.h). */
#include "proc_ident.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Field 22 of /proc/PID/stat (starttime), in clock ticks after boot. 0 if it cannot
 * be read (the process is gone: *gone set), or /proc is not there. */
static uint64_t start_time(pid_t pid, int *gone)
{
    char path[32], buf[1024];
    *gone = 0;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *gone = errno == ENOENT || errno == ESRCH;
        return 0;
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) {
        *gone = n < 0 && errno == ESRCH;   /* it exited between the open and the read */
        return 0;
    }
    buf[n] = '\0';
    /* The command name (field 2) may hold spaces and ')': count from the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    p++;
    for (int field = 3; field < 22 && p; field++)
        p = strchr(p + 1, ' ');
    if (!p)
        return 0;
    char *end;
    errno = 0;
    unsigned long long t = strtoull(p + 1, &end, 10);
    if (errno || end == p + 1)
        return 0;
    return (uint64_t)t;
}

uint64_t iop_app_proc_ident(pid_t pid)
{
    if (pid <= 0 || (uint64_t)pid >> IOP_APP_PID_BITS)
        return 0;
    int gone;
    uint64_t t = start_time(pid, &gone);
    if (gone)
        return 0;
    return t << IOP_APP_PID_BITS | (uint64_t)pid;
}

int iop_app_proc_alive(uint64_t ident)
{
    pid_t pid = iop_app_ident_pid(ident);
    if (pid <= 0)
        return 0;
    uint64_t want = ident >> IOP_APP_PID_BITS;
    if (want) {
        int gone;
        uint64_t t = start_time(pid, &gone);
        if (gone)
            return 0;
        if (t)
            return t == want;
    }
    return kill(pid, 0) == 0 || errno == EPERM;
}
