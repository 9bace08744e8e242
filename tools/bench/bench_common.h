/* Helpers shared by the standalone bench tools (iop-echo-load, epoll-echo-ref):
 * address parsing, CPU pinning, strict number parsing. No ioplex dependency, so
 * the load generator and the yardstick server are the same for every server. */
#ifndef IOP_BENCH_COMMON_H
#define IOP_BENCH_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include "hostport.h"   /* iop_app_format_addr prints addresses */

/* Resolves "HOST:PORT" or "[IPv6]:PORT" (numeric or a name) for TCP into *ss;
 * passive for an address to listen on (an empty host is any, port 0 any free
 * port), else one to connect to. 0, or -errno with a reason in err
 * (iop_app_resolve). */
int bench_parse_hostport(const char *s, int passive, struct sockaddr_storage *ss, socklen_t *len,
                         char *err, size_t errlen);


/* Pins the calling process to one CPU. 0 or -errno. */
int bench_pin_cpu(int cpu);


/* CLOCK_MONOTONIC in ns. */
uint64_t bench_now_ns(void);

#endif
