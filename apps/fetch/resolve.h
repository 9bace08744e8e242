/* Name resolution that parks only the calling coroutine: getaddrinfo runs in a
 * short-lived helper thread that signals an eventfd the coroutine waits on (the
 * loop keeps running). IP literals are converted at once, without a thread. */
#ifndef IOP_FETCH_RESOLVE_H
#define IOP_FETCH_RESOLVE_H

#include <netdb.h>
#include <stddef.h>
#include <stdint.h>

/* Resolves host:port for TCP. 0 with *out (freeaddrinfo), or -errno (-ETIMEDOUT at
 * deadline, -ECANCELED, -ENOENT when the name does not resolve, -EAGAIN when the
 * lookup failed in a way that may pass, e.g. no answer yet) with a reason in err.
 * Must be called from a coroutine. */
int fetch_resolve(const char *host, uint16_t port, uint64_t deadline,
                  struct addrinfo **out, char *err, size_t errlen);

#endif
