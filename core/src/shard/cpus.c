/* CPUs: which ones this process may run on, pinning worker i to the i-th of them,
 * and steering a reuseport group by the CPU that received a connection.
 *
 * Steering is a classic BPF program on the group (SO_ATTACH_REUSEPORT_CBPF). It
 * loads the receiving CPU (the ancillary field SKF_AD_CPU) and returns the index of
 * the worker pinned to that CPU; the kernel indexes a group's sockets in the order
 * they started listening, which is worker order. A CPU this process may not use
 * (softirqs run anywhere) falls back to cpu % nworkers. With fewer workers than
 * CPUs, worker i serves CPU ids[i] only, and the CPUs without a worker of their own
 * are spread by that modulo; with more workers than CPUs steering cannot give every
 * worker a share and is refused. */
#include <errno.h>
#include <linux/filter.h>
#include <string.h>
#include <sys/socket.h>
#include "shard_internal.h"

#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif

int iop__shard_cpus_get(iop__shard_cpus_t *c)
{
    memset(c, 0, sizeof *c);
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) < 0)
        return iop__fail(-errno, "sched_getaffinity: %s", strerror(errno));
    int n = CPU_COUNT(&set);
    c->ids = iop_calloc((size_t)(n > 0 ? n : 1), sizeof *c->ids);
    if (!c->ids)
        return iop__fail(-ENOMEM, "iop_shard_run: out of memory for the CPU list");
    for (int cpu = 0; cpu < CPU_SETSIZE && c->n < (uint32_t)n; cpu++)
        if (CPU_ISSET(cpu, &set))
            c->ids[c->n++] = (uint16_t)cpu;
    if (c->n == 0)                 /* cannot happen for a running process */
        c->ids[c->n++] = 0;
    return 0;
}

void iop__shard_cpus_free(iop__shard_cpus_t *c)
{
    iop_free(c->ids);
    c->ids = NULL;
    c->n = 0;
}

int iop__shard_pin(const iop__shard_cpus_t *c, uint32_t i)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    unsigned cpu = c->ids[i % c->n];
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) < 0)
        return iop__fail(-errno, "worker %u: sched_setaffinity(CPU %u): %s", i, cpu, strerror(errno));
    return 0;
}

int iop__shard_steer(int fd, const iop__shard_cpus_t *c, uint32_t nworkers)
{
    if (nworkers > c->n)
        return iop__fail(-EINVAL, "CPU steering needs at most one worker per CPU (%u workers, %u CPUs)",
                         nworkers, c->n);
    /* ld cpu; per worker: jeq #ids[i] → ret #i; fallback: a %= nworkers; ret a */
    uint32_t len = 1 + 2 * nworkers + 2;
    if (len > BPF_MAXINSNS)
        return iop__fail(-EINVAL, "CPU steering: %u workers make too long a BPF program", nworkers);
    struct sock_filter *code = iop_calloc(len, sizeof *code);
    if (!code)
        return iop__fail(-ENOMEM, "CPU steering: out of memory for the BPF program");
    uint32_t k = 0;
    code[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)(SKF_AD_OFF + SKF_AD_CPU));
    for (uint32_t i = 0; i < nworkers; i++) {
        code[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, c->ids[i], 0, 1);
        code[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, i);
    }
    code[k++] = (struct sock_filter)BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, nworkers);
    code[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_A, 0);
    struct sock_fprog prog;
    memset(&prog, 0, sizeof prog);     /* no uninitialised padding handed to the kernel */
    prog.len = (unsigned short)k;
    prog.filter = code;
    int r = setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog);
    int err = errno;
    iop_free(code);
    if (r < 0)
        return iop__fail(-err, "SO_ATTACH_REUSEPORT_CBPF: %s", strerror(err));
    return 0;
}
