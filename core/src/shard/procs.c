/* Worker processes as the supervisor sees them: fork one, tell it to drain, read its
 * control messages, kill it, reap it. Each process has a pidfd (readable when it
 * exits, so the supervisor's poll wakes up) and a SOCK_SEQPACKET control socket
 * (one message per send, no framing needed). Reaping is waitpid(pid, WNOHANG) on
 * our own children only, so it works without pidfds too (the poll then wakes every
 * 100 ms). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "shard_internal.h"

static int pidfd_open_compat(pid_t pid)
{
#ifdef SYS_pidfd_open
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);   /* close-on-exec by itself */
    if (fd >= 0)
        return fd;
#else
    (void)pid;
#endif
    return -1;
}

int iop__shard_spawn(iop__shard_sup_t *s, uint32_t slot, int role)
{
    iop__shard_proc_t *p = iop_calloc(1, sizeof *p);
    if (!p)
        return iop__fail(-ENOMEM, "worker %u: out of memory for its record", slot);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
        int err = -errno;
        iop_free(p);
        return iop__fail(err, "worker %u: socketpair: %s", slot, strerror(-err));
    }
    p->cell = iop__shard_cell_take(s->stats, slot);
    fflush(NULL);                  /* or the child would flush our buffered output again */
    pid_t pid = fork();
    if (pid < 0) {
        int err = -errno;
        close(sv[0]);
        close(sv[1]);
        iop__shard_cell_put(s->stats, p->cell, slot);
        iop_free(p);
        return iop__fail(err, "worker %u: fork: %s", slot, strerror(-err));
    }
    if (pid == 0) {
        close(sv[0]);
        iop__shard_worker_main(s, slot, sv[1], p->cell);
    }
    close(sv[1]);
    p->slot = slot;
    p->pid = pid;
    p->pidfd = pidfd_open_compat(pid);
    p->ctl = sv[0];
    p->state = IOP__P_STARTING;
    p->role = role;
    p->started = iop__shard_now();
    p->deadline = iop__ns_after(p->started, s->o.ready_timeout_ns);
    p->next = s->procs;
    s->procs = p;
    s->nprocs++;
    if (role == IOP__R_CUR)
        s->slots[slot].cur = p;
    else
        s->slots[slot].next = p;
    iop__shard_slot_stats_t *st = &s->stats->slots[slot];
    atomic_fetch_add_explicit(&st->generation, 1, memory_order_relaxed);
    if (role == IOP__R_CUR) {
        atomic_store_explicit(&st->ready, 0, memory_order_relaxed);
        atomic_store_explicit(&st->pid, pid, memory_order_relaxed);
    }
    iop__shard_log(s, IOP_SHARD_INFO, "worker %u: started pid %d%s", slot, (int)pid,
                   role == IOP__R_NEXT ? " (rolling restart)" : "");
    return 0;
}

/* Asks p to stop accepting and finish by deadline; it is killed a grace period
 * later (so that a worker cancelling its last connections at the deadline still
 * exits by itself). */
void iop__shard_drain_proc(iop__shard_sup_t *s, iop__shard_proc_t *p, uint64_t deadline)
{
    if (p->state == IOP__P_DRAINING)
        return;
    uint64_t t = s->o.drain_timeout_ns;
    uint64_t grace = 250 * IOP__MS + t / 10;
    if (grace > 2 * IOP__NS)
        grace = 2 * IOP__NS;
    p->state = IOP__P_DRAINING;
    p->deadline = iop__ns_after(deadline, grace);   /* deadline may be "never" */
    if (p->ctl >= 0) {
        unsigned char msg[9];
        msg[0] = IOP__MSG_DRAIN;
        memcpy(msg + 1, &deadline, sizeof deadline);
        /* A full or closed socket means the worker is gone or going: the deadline
         * still applies. */
        (void)send(p->ctl, msg, sizeof msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
}

void iop__shard_read_ctl(iop__shard_sup_t *s, iop__shard_proc_t *p)
{
    while (p->ctl >= 0) {
        char msg[IOP__MSG_MAX];
        ssize_t n = recv(p->ctl, msg, sizeof msg - 1, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n <= 0) {              /* EOF / reset: it is exiting; the pidfd tells when */
            close(p->ctl);
            p->ctl = -1;
            return;
        }
        msg[n] = '\0';
        if (msg[0] == IOP__MSG_READY) {
            iop__shard_on_ready(s, p);
        } else if (msg[0] == IOP__MSG_FATAL && n >= 5) {
            int32_t err;
            memcpy(&err, msg + 1, sizeof err);
            p->fatal_err = err < 0 ? err : -EIO;
            snprintf(p->note, sizeof p->note, "%s", msg + 5);
        } else if (msg[0] == IOP__MSG_EXIT) {
            snprintf(p->note, sizeof p->note, "%s", msg + 1);
        }
    }
}

void iop__shard_kill(iop__shard_sup_t *s, iop__shard_proc_t *p, int why)
{
    (void)s;
    if (p->killed == IOP__KILL_NONE)
        p->killed = why;
    kill(p->pid, SIGKILL);         /* our own child, not reaped yet: the pid is still its */
}

void iop__shard_describe_status(int status, char *buf, size_t len)
{
    if (status == -1) {
        snprintf(buf, len, "ended (reaped elsewhere: SIGCHLD ignored?)");
    } else if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        const char *abbrev = sigabbrev_np(sig);
        snprintf(buf, len, "killed by SIG%s (%s)%s", abbrev ? abbrev : "?", strsignal(sig),
                 WCOREDUMP(status) ? ", core dumped" : "");
    } else if (WIFEXITED(status)) {
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    } else {
        snprintf(buf, len, "ended (wait status 0x%x)", (unsigned)status);
    }
}

static void unlink_proc(iop__shard_sup_t *s, iop__shard_proc_t *p)
{
    for (iop__shard_proc_t **pp = &s->procs; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            s->nprocs--;
            break;
        }
    iop__shard_slot_t *sl = &s->slots[p->slot];
    if (sl->cur == p)
        sl->cur = NULL;
    if (sl->next == p)
        sl->next = NULL;
}

/* Reaps every worker process that has ended, handling each once. */
void iop__shard_reap(iop__shard_sup_t *s)
{
    for (iop__shard_proc_t *p = s->procs, *next; p; p = next) {
        next = p->next;
        int status = 0;
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == 0 || (r < 0 && errno == EINTR))
            continue;
        if (r < 0)                 /* ECHILD: reaped behind our back (SIGCHLD ignored) */
            status = -1;           /* status unknown */
        iop__shard_read_ctl(s, p); /* its last words, written before it exited */
        if (p->ctl >= 0)
            close(p->ctl);
        if (p->pidfd >= 0)
            close(p->pidfd);
        p->ctl = p->pidfd = -1;
        iop__shard_cell_put(s->stats, p->cell, p->slot);
        p->cell = NULL;
        unlink_proc(s, p);
        iop__shard_on_exit(s, p, status);
        iop_free(p);
    }
}
