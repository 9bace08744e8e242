#include "hostport.h"
#include "addr/addr_spec.h"

#include <errno.h>
#include <getopt.h>
#include <fcntl.h>
#include <unistd.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int iop_app_loop_exit_status(int err)
{
    return err == -ENOMEM || err == -EMFILE || err == -ENFILE ? 1 : 2;
}

int iop_app_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return -EINVAL;   /* strtoull would accept " 1", "+1" and "-1" */
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

int iop_app_parse_seconds(const char *s, double max, double *out)
{
    if (!s || ((*s < '0' || *s > '9') && *s != '.'))
        return -EINVAL;   /* strtod would accept " 1", "-1", "inf" and "nan" */
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !(v >= 0.0) || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

const char *iop_app_opt_name(const struct option *longopts, int ch)
{
    static char buf[64];
    for (const struct option *o = longopts; o && o->name; o++)
        if (!o->flag && o->val == ch) {
            snprintf(buf, sizeof buf, "--%s", o->name);
            return buf;
        }
    snprintf(buf, sizeof buf, "-%c", ch);
    return buf;
}

/* s is a group of short options ("-qZ") holding c; s may be NULL (argv's end). */
static int in_short_group(const char *s, int c)
{
    return s && s[0] == '-' && s[1] && s[1] != '-' && strchr(s + 1, c);
}

int iop_app_getopt_fail(const char *prog, int ch, char *const argv[])
{
    /* after getopt_long, argv[optind - 1] is the option it stopped at, except for
     * an unknown short one inside a group ("-Zq": optind has not moved past it
     * yet, so look at argv[optind] too); optopt names that one. (A long option
     * given a value it does not take, "--json=1", sets optopt as well.) */
    if (ch == ':')
        fprintf(stderr, "%s: option '%s' needs a value (try --help)\n", prog, argv[optind - 1]);
    else if (optopt && (in_short_group(argv[optind], optopt) || in_short_group(argv[optind - 1], optopt)))
        fprintf(stderr, "%s: unknown option '-%c' (try --help)\n", prog, optopt);
    else
        fprintf(stderr, "%s: unknown option '%s' (try --help)\n", prog, argv[optind - 1]);
    return 2;
}

int iop_app_split_hostport(const char *s, char *host, size_t hostlen, char *port,
                           size_t portlen, char *err, size_t errlen)
{
    const char *why = iop__split_hostport(s, host, hostlen, port, portlen);
    if (!why)
        return 0;
    snprintf(err, errlen, "'%s': %s", s, why);
    return -EINVAL;
}

/* Every address is IPv6 link-local without a zone: none can be bound or reached. */
static int all_unzoned_link_local(const struct addrinfo *ai)
{
    for (; ai; ai = ai->ai_next)
        if (!iop__unzoned_link_local(ai->ai_addr))
            return 0;
    return 1;
}

int iop_app_resolve(const char *hostport, int passive, struct addrinfo **out,
                    char *err, size_t errlen)
{
    char host[256], port[16];
    int r = iop_app_split_hostport(hostport, host, sizeof host, port, sizeof port, err, errlen);
    if (r < 0)
        return r;
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_protocol = IPPROTO_TCP,
        .ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0),
    };
    if (!passive && strtoul(port, NULL, 10) == 0) {   /* "0", "00" ... (checked digits) */
        snprintf(err, errlen, "'%s': port 0 is for listening (any free port), not a port to connect to", hostport);
        return -EINVAL;
    }
    int g = getaddrinfo(host[0] ? host : NULL, port, &hints, out);
    if (g != 0) {
        snprintf(err, errlen, "'%s': cannot resolve '%s': %s", hostport, host,
                 g == EAI_SYSTEM ? strerror(errno) : gai_strerror(g));
        return -ENOENT;
    }
    /* Listeners are IPv6-only (as the workers' are): a v4-mapped address cannot be
     * bound, and would only mean its IPv4 address. */
    const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)(*out)->ai_addr;
    if (passive && (*out)->ai_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
        char v4[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &v6->sin6_addr.s6_addr[12], v4, sizeof v4);
        snprintf(err, errlen, "'%s': an IPv4-mapped address; listen on %s:%s instead", hostport, v4, port);
        freeaddrinfo(*out);
        *out = NULL;
        return -EINVAL;
    }
    if (all_unzoned_link_local(*out)) {
        snprintf(err, errlen, "'%s': a link-local address needs a zone naming its interface, as in "
                 "[%s%%lo]:%s", hostport, host, port);
        freeaddrinfo(*out);
        *out = NULL;
        return -EINVAL;
    }
    return 0;
}

char *iop_app_format_addr(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen)
{
    char ip[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        snprintf(buf, buflen, "%s:%u", ip, (unsigned)ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
        /* A link-local address is only usable with its zone: print it. */
        char zone[IF_NAMESIZE + 1] = "";
        if (in6->sin6_scope_id) {
            zone[0] = '%';
            if (!if_indextoname(in6->sin6_scope_id, zone + 1))
                snprintf(zone + 1, sizeof zone - 1, "%u", (unsigned)in6->sin6_scope_id);
        }
        snprintf(buf, buflen, "[%s%s]:%u", ip, zone, (unsigned)ntohs(in6->sin6_port));
    } else {
        snprintf(buf, buflen, "(address family %d)", sa->sa_family);
    }
    return buf;
}

unsigned iop_app_shed(int listen_fd, int *spare_fd, unsigned max)
{
    unsigned dropped = 0;
    if (*spare_fd >= 0) {
        close(*spare_fd);
        *spare_fd = -1;
    }
    for (unsigned i = 0; i < max; i++) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            break;
        }
        close(fd);
        dropped++;
    }
    *spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return dropped;
}
