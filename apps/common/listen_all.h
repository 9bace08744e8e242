/* Listening on every address of HOST:PORT, for the sample servers that take one
 * --listen (the shard's binding: the same spelling and rules as ioplexd). */
#ifndef IOP_APP_LISTEN_ALL_H
#define IOP_APP_LISTEN_ALL_H

#include <stdint.h>
#include <ioplex.h>

#define IOP_APP_MAX_LISTENERS 64   /* addresses of one --listen name */

/* Binds addr, every address of a name on one port (iop_shard_listen with
 * IOP_SHARD_ALL_ADDRESSES), into fds: how many, or -1 after saying why on stderr
 * ("PROG: cannot listen: ...") with *status the exit status, 2 for what the user
 * can change (a malformed or unusable address, one in use or not allowed), else 1. */
int iop_app_listen_all(const char *prog, const char *addr, int fds[IOP_APP_MAX_LISTENERS], int *status);

/* "PROG: listening on ADDR, backend NAME (why)" on stdout for each of fds, flushed. */
void iop_app_say_listening(const char *prog, const int *fds, uint32_t n, iop_loop_t *loop);

#endif
