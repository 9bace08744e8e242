/* Shared by the sample apps: HOST:PORT parsing, resolution, listening and printing,
 * plus the strict number parsing their command lines need. */
#ifndef IOP_APP_HOSTPORT_H
#define IOP_APP_HOSTPORT_H

#include <netdb.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Splits "HOST:PORT", "[IPv6]:PORT" or ":PORT" (empty host) into its parts; brackets
 * hold an IPv6 address (with a zone, "[fe80::1%eth0]", if need be), never nothing.
 * 0, or -EINVAL with a reason in err. */
int iop_app_split_hostport(const char *s, char *host, size_t hostlen, char *port,
                           size_t portlen, char *err, size_t errlen);

/* Resolves "HOST:PORT" for TCP with getaddrinfo. passive: an empty host means every
 * local address (for a listener; an IPv4-mapped IPv6 address is refused, listeners
 * being IPv6-only); otherwise it means the loopback, and port 0 is refused. The list
 * is freed with freeaddrinfo. 0, or -EINVAL (malformed; also an IPv6 link-local
 * address without its zone) / -ENOENT (does not resolve) with a reason in err. */
int iop_app_resolve(const char *hostport, int passive, struct addrinfo **out,
                    char *err, size_t errlen);

/* Writes "1.2.3.4:80", "[::1]:80" or "[fe80::1%eth0]:80" into buf; returns buf. */
char *iop_app_format_addr(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen);

/* Out of fds (EMFILE / ENFILE): the pending connections would keep the listener
 * readable forever. Frees the spare fd (*spare_fd, opened on /dev/null, reopened
 * afterwards), accepts and closes up to max queued connections, and returns how many
 * it dropped; the caller then waits before accepting again instead of spinning. */
unsigned iop_app_shed(int listen_fd, int *spare_fd, unsigned max);

/* The exit status for a loop that iop_loop_create could not make (err, its -errno):
 * short of memory or fds (-ENOMEM, -EMFILE, -ENFILE) is a run-time failure (1);
 * anything else means the backend asked for cannot run here, a usage error (2). */
int iop_app_loop_exit_status(int err);

/* Parses a whole decimal number in [min, max]. 0 or -EINVAL. */
int iop_app_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Parses seconds, fractions allowed ("2", "0.5"), in [0, max]. 0 or -EINVAL. */
int iop_app_parse_seconds(const char *s, double max, double *out);

/* "--NAME" of the long option whose getopt value is ch, for messages about its
 * value (after getopt_long, argv[optind - 1] is the value when it came as a separate
 * argument); "-c" when only a short one has it. A static buffer. */
struct option;
const char *iop_app_opt_name(const struct option *longopts, int ch);

/* getopt_long (with opterr = 0 and ':' leading the option string) gave ch = ':'
 * (an option without its value) or '?' (an unknown option): says so on stderr as
 * "PROG: option '-x' needs a value (try --help)" / "PROG: unknown option '--y'
 * (try --help)" (an unknown short option alone, '-Z', also out of "-Zq") and
 * returns the usage exit status, 2. */
int iop_app_getopt_fail(const char *prog, int ch, char *const argv[]);

#endif
