#include "proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* A temporary file with no name, for a child's stderr. */
static int temp_file(void)
{
    int fd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
    char path[] = "/tmp/iop-test-XXXXXX";
    fd = mkostemp(path, O_CLOEXEC);
    if (fd >= 0)
        unlink(path);
    return fd;
}

/* Forks argv with the given fds as its stdin, stdout and stderr. */
static pid_t spawn(char *const argv[], int in, int out, int err, long nofile)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return pid < 0 ? -errno : pid;
    /* child: only async-signal-safe calls from here to exec */
    /* Dies with the test: a failed assertion leaves the test function without
     * stopping what it started (an ioplexd's workers then die with it). */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
        _exit(127);
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
        _exit(127);
    if (nofile > 0) {
        /* The limit counts from stdio: fds the test inherited without close-on-exec
         * (ctest's log) would take the room it leaves. */
        close_range(3, ~0u, 0);
        struct rlimit rl = { .rlim_cur = (rlim_t)nofile, .rlim_max = (rlim_t)nofile };
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            _exit(127);
    }
    /* Start from a clean slate: the test ignores SIGPIPE, the apps must not inherit it. */
    struct sigaction dfl = { .sa_handler = SIG_DFL };
    sigaction(SIGPIPE, &dfl, NULL);
    sigaction(SIGINT, &dfl, NULL);
    sigaction(SIGTERM, &dfl, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execv(argv[0], argv);
    _exit(127);
}

int proc_start(proc_t *p, char *const argv[], long nofile)
{
    int pipefd[2], r;
    *p = (proc_t){ .pid = 0, .out_fd = -1, .err_fd = -1 };
    int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return -errno;
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        r = -errno;
        close(in);
        return r;
    }
    p->err_fd = temp_file();
    if (p->err_fd < 0) {
        r = -errno;
        close(in);
        close(pipefd[0]);
        close(pipefd[1]);
        return r;
    }
    pid_t pid = spawn(argv, in, pipefd[1], p->err_fd, nofile);
    close(in);
    close(pipefd[1]);
    if (pid < 0) {
        close(pipefd[0]);
        close_fd(&p->err_fd);
        return (int)pid;
    }
    p->pid = pid;
    p->out_fd = pipefd[0];
    return 0;
}

int proc_read_line(proc_t *p, char *buf, size_t len, int timeout_ms)
{
    size_t n = 0;
    long long until = now_ms() + timeout_ms;
    while (n + 1 < len) {
        long long left = until - now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd pfd = { .fd = p->out_fd, .events = POLLIN };
        int pr = poll(&pfd, 1, (int)left);
        if (pr < 0 && errno != EINTR)
            return -errno;
        if (pr <= 0)
            continue;
        ssize_t got = read(p->out_fd, buf + n, 1);   /* one byte: never read past the line */
        if (got < 0 && errno != EINTR)
            return -errno;
        if (got == 0) {
            buf[n] = '\0';
            return -EPIPE;
        }
        if (got == 1 && buf[n++] == '\n') {
            buf[--n] = '\0';
            return (int)n;
        }
    }
    buf[n] = '\0';
    return (int)n;
}

int proc_wait(proc_t *p, int timeout_ms)
{
    if (!p->pid)
        return 0;
    long long until = now_ms() + timeout_ms;
    for (;;) {
        pid_t r = waitpid(p->pid, &p->status, WNOHANG);
        if (r == p->pid) {
            p->pid = 0;
            return 0;
        }
        if (r < 0 && errno != EINTR)
            return -errno;
        if (now_ms() >= until)
            return -ETIMEDOUT;
        poll(NULL, 0, 5);
    }
}

int proc_exit_code(pid_t pid, int timeout_ms)
{
    proc_t p = { .pid = pid, .out_fd = -1, .err_fd = -1 };
    if (proc_wait(&p, timeout_ms) < 0) {
        proc_cleanup(&p);
        return -1;
    }
    return WIFEXITED(p.status) ? WEXITSTATUS(p.status) : 128 + WTERMSIG(p.status);
}

void proc_cleanup(proc_t *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        while (waitpid(p->pid, &p->status, 0) < 0 && errno == EINTR)
            ;
        p->pid = 0;
    }
    close_fd(&p->out_fd);
    close_fd(&p->err_fd);
}

char *proc_stderr(proc_t *p, char *buf, size_t len)
{
    ssize_t n = p->err_fd >= 0 ? pread(p->err_fd, buf, len - 1, 0) : 0;
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

bool proc_stderr_wait(proc_t *p, const char *needle, int timeout_ms)
{
    size_t len = 1 << 16;
    char *buf = malloc(len);
    if (!buf)
        return false;
    long long t0 = now_ms();
    bool found;
    while (!(found = strstr(proc_stderr(p, buf, len), needle) != NULL) && now_ms() - t0 < timeout_ms)
        poll(NULL, 0, 20);
    free(buf);
    return found;
}

/* Appends what fd has to buf; closes fd at end of file. */
static void drain(int *fd, char *buf, size_t len, size_t *n)
{
    char tmp[4096];
    ssize_t got = read(*fd, tmp, sizeof tmp);
    if (got <= 0) {
        if (got == 0 || (errno != EINTR && errno != EAGAIN))
            close_fd(fd);
        return;
    }
    size_t room = len - 1 - *n, take = (size_t)got < room ? (size_t)got : room;
    memcpy(buf + *n, tmp, take);
    *n += take;
    buf[*n] = '\0';
}

int proc_run(char *const argv[], const char *in, size_t inlen, char *out, size_t outlen,
             char *err, size_t errlen, int timeout_ms)
{
    int ip[2], op[2], ep[2];
    if (pipe2(ip, O_CLOEXEC) < 0)
        return -errno;
    if (pipe2(op, O_CLOEXEC) < 0) {
        close(ip[0]);
        close(ip[1]);
        return -errno;
    }
    if (pipe2(ep, O_CLOEXEC) < 0) {
        close(ip[0]);
        close(ip[1]);
        close(op[0]);
        close(op[1]);
        return -errno;
    }
    pid_t pid = spawn(argv, ip[0], op[1], ep[1], 0);
    close(ip[0]);
    close(op[1]);
    close(ep[1]);
    int wfd = ip[1], ofd = op[0], efd = ep[0];
    if (pid < 0) {
        close_fd(&wfd);
        close_fd(&ofd);
        close_fd(&efd);
        return (int)pid;
    }
    fcntl(wfd, F_SETFL, O_NONBLOCK);
    size_t on = 0, en = 0, written = 0;
    out[0] = err[0] = '\0';
    if (!in || inlen == 0)
        close_fd(&wfd);
    long long until = now_ms() + timeout_ms;
    int timed_out = 0;
    while (ofd >= 0 || efd >= 0) {
        long long left = until - now_ms();
        if (left <= 0) {
            timed_out = 1;
            break;
        }
        struct pollfd pfd[3] = {
            { .fd = ofd, .events = POLLIN }, { .fd = efd, .events = POLLIN },
            { .fd = wfd, .events = POLLOUT },
        };
        if (poll(pfd, 3, (int)left) < 0 && errno != EINTR)
            break;
        if (pfd[0].revents)
            drain(&ofd, out, outlen, &on);
        if (pfd[1].revents)
            drain(&efd, err, errlen, &en);
        if (pfd[2].revents) {
            ssize_t w = write(wfd, in + written, inlen - written);
            if (w > 0)
                written += (size_t)w;
            if ((w < 0 && errno != EAGAIN && errno != EINTR) || written == inlen)
                close_fd(&wfd);   /* all written (or the child stopped reading): EOF */
        }
    }
    close_fd(&wfd);
    close_fd(&ofd);
    close_fd(&efd);
    proc_t p = { .pid = pid, .out_fd = -1, .err_fd = -1 };
    if (timed_out || proc_wait(&p, (int)(until - now_ms() > 0 ? until - now_ms() : 0) + 100) < 0) {
        proc_cleanup(&p);
        return -ETIMEDOUT;
    }
    return p.status;
}

double proc_cpu_seconds(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf - 1)) < 0 && errno == EINTR)
        ;
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    /* The command name may hold spaces and parentheses: fields restart after the
     * last ')'. Then: state(3) ... utime(14) stime(15). */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long long utime, stime;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

int proc_open_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -errno;
    int n = 0;
    for (struct dirent *de; (de = readdir(d));)
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}
