/* Shared by the sample apps: fds 0, 1 and 2 are open before anything else is. */
#ifndef IOP_APP_STDIO_GUARD_H
#define IOP_APP_STDIO_GUARD_H

/* Opens /dev/null on each of fds 0-2 that is closed. Started with one closed, a
 * program's first descriptors (an event loop's epoll set or ring, a service's
 * eventfd) would take its number, and its output would be written into them.
 * Exits with status 1 if /dev/null cannot be opened. */
void iop_app_guard_stdio(void);

#endif
