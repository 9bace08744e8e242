/* The shard tests' harness; see test_shard_harness.h. */
#include "test_shard_harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

sh_shared_t *sh;
iop_shard_stats_t *sh_stats;
pid_t sh_sup;
const char *sh_backend;

static sh_config_t sh_cfg;         /* what the supervisor child runs (copied by fork) */

void sh_init(int argc, char **argv)
{
    sh_backend = tu_backend_from_args(argc, argv);
    /* Workers orphaned by a dying supervisor come back to us, to be reaped. */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
        perror("PR_SET_CHILD_SUBREAPER");
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    signal(SIGPIPE, SIG_IGN);
}

/* ---- descendants ------------------------------------------------------------------- */

int sh_children(pid_t *out, int max)
{
    pid_t self = getpid();
    int n = 0;
    DIR *d = opendir("/proc");
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < max) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0)
            continue;
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/%ld/stat", pid);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = '\0';
        char *rp = strrchr(buf, ')');   /* comm may hold spaces and parentheses */
        char state;
        int ppid;
        if (rp && sscanf(rp + 1, " %c %d", &state, &ppid) == 2 && ppid == self)
            out[n++] = (pid_t)pid;
    }
    closedir(d);
    return n;
}

/* Kills (by pid: each is our own child, unreaped) and reaps every child, 5 s at most. */
static void reap_all(void)
{
    uint64_t end = tu_clock_ms() + 5000;
    for (;;) {
        int st;
        while (waitpid(-1, &st, WNOHANG) > 0)
            ;
        pid_t kids[64];
        int n = sh_children(kids, 64);
        if (n == 0 || tu_clock_ms() > end)
            break;
        for (int i = 0; i < n; i++)
            kill(kids[i], SIGKILL);
        tu_sleep_ms(10);
    }
    sh_sup = 0;
}

int sh_setup(void **state)
{
    (void)state;
    alarm(60);                     /* nothing may hang: SIGALRM ends the test process */
    memset(sh, 0, sizeof *sh);
    if (sh_stats)
        iop_shard_stats_free(sh_stats);
    sh_stats = NULL;
    return iop_shard_stats_create(&sh_stats, SH_MAX_WORKERS) == 0 ? 0 : -1;
}

int sh_teardown(void **state)
{
    (void)state;
    if (sh_sup > 0)
        kill(sh_sup, SIGKILL);
    reap_all();
    alarm(0);
    return 0;
}

void sh_dump_log(void)
{
    uint32_t len = atomic_load(&sh->log_len);
    if (len > sizeof sh->log)
        len = sizeof sh->log;
    fprintf(stderr, "---- supervisor events ----\n%.*s---- end ----\n", (int)len, sh->log);
}

/* ---- the supervisor child ------------------------------------------------------------ */

static void on_listen(void *arg, uint32_t index, const struct sockaddr *addr, socklen_t len)
{
    (void)arg;
    (void)len;
    int port = addr->sa_family == AF_INET6 ? ntohs(((const struct sockaddr_in6 *)addr)->sin6_port)
                                           : ntohs(((const struct sockaddr_in *)addr)->sin_port);
    if (index < SH_MAX_LISTEN)
        atomic_store(&sh->port[index], port);
}

static void on_event(void *arg, int level, const char *line)
{
    (void)arg;
    char buf[600];
    int n = snprintf(buf, sizeof buf, "%s%s\n", level ? "WARN " : "", line);
    if (n <= 0)
        return;
    uint32_t at = atomic_fetch_add(&sh->log_len, (uint32_t)n);
    if (at + (uint32_t)n <= sizeof sh->log)
        memcpy(sh->log + at, buf, (size_t)n);
    if (getenv("SH_VERBOSE"))
        fprintf(stderr, "[sup] %s", buf);
}

static _Noreturn void supervisor_child(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);   /* the test dies → we die → workers die */
    if (getppid() == 1)
        _exit(3);
    iop_shard_opts_t o = { .size = sizeof o };
    o.workers = sh_cfg.workers;
    o.listener_mode = sh_cfg.mode;
    o.flags = sh_cfg.flags;
    o.listen = sh_cfg.listen;
    o.backend = sh_cfg.backend;
    o.worker = sh_cfg.worker;
    o.drain_timeout_ns = sh_cfg.drain_timeout_ns;
    o.ready_timeout_ns = sh_cfg.ready_timeout_ns;
    o.crash_limit = sh_cfg.crash_limit;
    o.crash_window_ns = sh_cfg.crash_window_ns;
    o.backoff_min_ns = sh_cfg.backoff_min_ns;
    o.on_listen = on_listen;
    o.on_event = on_event;
    o.stats = sh_stats;
    int r = iop_shard_run(&o);
    sh->result = r;
    snprintf(sh->error, sizeof sh->error, "%s", r < 0 ? iop_last_error() : "");
    atomic_store(&sh->finished, 1);
    fflush(NULL);
    _exit(r == 0 ? 0 : 1);
}

/* Forks the supervisor child for cfg (defaults filled in); its number of addresses. */
static uint32_t fork_supervisor(const sh_config_t *cfg)
{
    sh_cfg = *cfg;
    if (!sh_cfg.listen[0])
        sh_cfg.listen[0] = "127.0.0.1:0";
    if (!sh_cfg.worker)
        sh_cfg.worker = sh_echo_worker;
    if (!sh_cfg.backend)
        sh_cfg.backend = sh_backend;
    if (!sh_cfg.workers)
        sh_cfg.workers = 2;
    uint32_t naddr = 0;
    while (sh_cfg.listen[naddr])
        naddr++;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        supervisor_child();
    sh_sup = pid;
    return naddr;
}

int sh_start_failing(const sh_config_t *cfg, unsigned ms)
{
    fork_supervisor(cfg);
    return sh_stop(0, ms);
}

void sh_start(const sh_config_t *cfg)
{
    uint32_t naddr = fork_supervisor(cfg);
    uint64_t end = tu_clock_ms() + 5000;
    for (;;) {
        uint32_t got = 0;
        for (uint32_t a = 0; a < naddr; a++)
            got += atomic_load(&sh->port[a]) != 0;
        if (got == naddr)
            break;
        if (atomic_load(&sh->finished))
            fail_msg("the supervisor ended at once: %d (%s)", sh->result, sh->error);
        if (tu_clock_ms() > end)
            fail_msg("the supervisor did not listen within 5 s");
        tu_sleep_ms(5);
    }
}

pid_t sh_worker_pid(uint32_t i)
{
    iop_shard_worker_stats_t ws;
    if (iop_shard_stats_read(sh_stats, i, &ws) < 0)
        return 0;
    return ws.ready ? ws.pid : 0;
}

int sh_wait_ready(const pid_t *avoid, unsigned n, unsigned ms)
{
    uint64_t end = tu_clock_ms() + ms;
    for (;;) {
        uint32_t ok = 0;
        for (uint32_t i = 0; i < sh_cfg.workers; i++) {
            pid_t p = sh_worker_pid(i);
            int old = 0;
            for (unsigned k = 0; avoid && k < n; k++)
                old |= avoid[k] == p;
            ok += p > 0 && !old;
        }
        if (ok == sh_cfg.workers)
            return 1;
        if (tu_clock_ms() > end)
            return 0;
        tu_sleep_ms(5);
    }
}

int sh_stop(int sig, unsigned ms)
{
    if (sh_sup <= 0)
        return 1000;
    kill(sh_sup, sig);
    uint64_t end = tu_clock_ms() + ms;
    for (;;) {
        int st;
        pid_t r = waitpid(sh_sup, &st, WNOHANG);
        if (r == sh_sup) {
            sh_sup = 0;
            if (!atomic_load(&sh->finished))
                return 2000;
            /* exit status 1 after a 0 result: valgrind or a sanitizer found errors */
            if (sh->result == 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
                return 3000;
            return sh->result;
        }
        if (tu_clock_ms() > end)
            return 1000;
        tu_sleep_ms(5);
    }
}

/* ---- clients ----------------------------------------------------------------------------- */

int sh_connect(uint32_t l)
{
    return sh_connect_family(l, sh_cfg.listen[l][0] == '[' ? AF_INET6 : AF_INET);
}

int sh_connect_family(uint32_t l, int family)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        a->sin6_port = htons((uint16_t)atomic_load(&sh->port[l]));
        len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a->sin_port = htons((uint16_t)atomic_load(&sh->port[l]));
        len = sizeof *a;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct timeval tv = { 5, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&ss, len) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

int sh_exchange(int fd, const char *msg, int *worker, pid_t *pid)
{
    size_t mlen = strlen(msg);
    if (send(fd, msg, mlen, MSG_NOSIGNAL) != (ssize_t)mlen)
        return errno ? -errno : -EIO;
    char buf[256];
    size_t got = 0;
    /* The reply is "w<i> p<pid>: <msg>": read until it ends with msg. */
    while (got < sizeof buf - 1) {
        ssize_t n = recv(fd, buf + got, sizeof buf - 1 - got, 0);
        if (n < 0)
            return errno == EAGAIN ? -ETIMEDOUT : -errno;
        if (n == 0)
            return -ECONNRESET;    /* closed before the whole reply */
        got += (size_t)n;
        buf[got] = '\0';
        if (got >= mlen && memcmp(buf + got - mlen, msg, mlen) == 0)
            break;
    }
    int w, p, off = 0;
    if (sscanf(buf, "w%d p%d: %n", &w, &p, &off) != 2 || strcmp(buf + off, msg) != 0)
        return -EPROTO;
    if (worker)
        *worker = w;
    if (pid)
        *pid = p;
    return 0;
}

static int request_on(int fd, const char *msg, int *worker, pid_t *pid)
{
    if (fd < 0)
        return fd;
    int r = sh_exchange(fd, msg, worker, pid);
    close(fd);
    return r;
}

int sh_request(uint32_t l, const char *msg, int *worker, pid_t *pid)
{
    return request_on(sh_connect(l), msg, worker, pid);
}

int sh_request_family(uint32_t l, int family, const char *msg, int *worker, pid_t *pid)
{
    return request_on(sh_connect_family(l, family), msg, worker, pid);
}

int sh_have_ipv6(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
    int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* ---- the echo worker ------------------------------------------------------------------------ */

static void echo_conn(iop_shard_worker_t *w, int fd, void *arg)
{
    (void)arg;
    char in[128], out[200];
    for (;;) {
        ssize_t n = iop_recv(fd, in, sizeof in, 0, 0);
        if (n <= 0)
            return;
        int head = snprintf(out, sizeof out, "w%u p%d: ", iop_shard_index(w), (int)getpid());
        memcpy(out + head, in, (size_t)n);
        size_t len = (size_t)head + (size_t)n, off = 0;
        while (off < len) {
            ssize_t s = iop_send(fd, out + off, len - off, MSG_NOSIGNAL, 0);
            if (s <= 0)
                return;
            off += (size_t)s;
        }
    }
}

int sh_echo_worker(iop_shard_worker_t *w)
{
    return iop_shard_serve(w, echo_conn, NULL);
}
