/* HOST:PORT as the shard's listeners and the sample apps spell an address. Plain
 * libc, no other part of ioplex: apps/common compiles this file too, into the
 * library iop-echo-load links without ioplex. */
#ifndef IOP_ADDR_SPEC_H
#define IOP_ADDR_SPEC_H

#include <stddef.h>
#include <sys/socket.h>

/* Splits "HOST:PORT", "[IPv6]:PORT" or ":PORT" (empty host) into its parts; brackets
 * hold an IPv6 address (with a zone, "[fe80::1%eth0]", if need be), never nothing,
 * and an IPv6 address needs them. PORT is decimal, 0 to 65535. NULL, or why s is
 * malformed ("expected HOST:PORT", ...: a static string). */
const char *iop__split_hostport(const char *s, char *host, size_t hostlen, char *port, size_t portlen);

/* An IPv6 link-local address without a zone: bind and connect would say only
 * "Invalid argument" (the kernel cannot tell which link). */
int iop__unzoned_link_local(const struct sockaddr *sa);

#endif
