/* Shared by the sample apps: a process named so that a reused pid is not taken for
 * it. A pid alone names whichever process holds that number now: once its process
 * is reaped the kernel hands it out again, and kill(pid, 0) then answers for a
 * stranger. The pid and the process's start time (/proc/PID/stat) together name
 * one process for the life of the machine, except for two that start in the same
 * clock tick (10 ms) with one pid: the kernel would have to hand out every other
 * pid in between. */
#ifndef IOP_APP_PROC_IDENT_H
#define IOP_APP_PROC_IDENT_H

#include <stdint.h>
#include <sys/types.h>

/* pid in the low IOP_APP_PID_BITS bits (pid_max is at most 2^22), the start time in
 * clock ticks after boot above (0: unknown, /proc unreadable). 0 for no process. */
#define IOP_APP_PID_BITS 22

/* The identity of process pid, running now; 0 if there is none. */
uint64_t iop_app_proc_ident(pid_t pid);

/* The pid in an identity. */
static inline pid_t iop_app_ident_pid(uint64_t ident)
{
    return (pid_t)(ident & ((1u << IOP_APP_PID_BITS) - 1));
}

/* 1 if the process named by ident still exists (a zombie counts), 0 if it is gone
 * or its pid now belongs to another process. An identity without a start time
 * falls back to kill(pid, 0). */
int iop_app_proc_alive(uint64_t ident);

#endif
