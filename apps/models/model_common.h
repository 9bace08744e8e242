/* What the two model servers share: the command line, the listener, the CPU report
 * at exit. No ioplex: these servers show the models without it. */
#ifndef IOP_MODEL_COMMON_H
#define IOP_MODEL_COMMON_H

#include <stddef.h>

#define MODEL_BUF_SIZE (16 * 1024)   /* one read's worth, as the other echo servers */

typedef struct model_opts {
    const char *listen;         /* HOST:PORT */
    int cpu;                    /* --cpu N, -1 = not pinned */
} model_opts_t;

/* Parses --listen HOST:PORT [--cpu N] [--help]. Returns -1 to go on, or the exit
 * status (0 after --help, 2 on a usage error, printed). */
int model_parse_args(int argc, char **argv, const char *prog, const char *summary,
                     model_opts_t *o);

/* A TCP listener on o->listen (SO_REUSEADDR, backlog SOMAXCONN, blocking or not),
 * pinned first when asked. Prints "PROG: listening on ADDR (what)" on stdout and
 * flushes it. The fd, or minus the exit status (printed): -EXIT_USAGE for a bad
 * address, -1 when listening fails. */
int model_listen(const model_opts_t *o, const char *prog, int nonblocking, const char *what);

/* TCP_NODELAY on an accepted socket, as every echo server of the benchmark sets it. */
void model_nodelay(int fd);

/* Prints the process CPU time (user + system, all threads) on stderr. */
void model_report_cpu(const char *prog, unsigned long long connections);

#endif
