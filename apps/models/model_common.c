#include "model_common.h"

#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench_common.h"
#include "hostport.h"

enum { EXIT_USAGE = 2 };

static void usage(FILE *f, const char *prog, const char *summary)
{
    fprintf(f,
        "usage: %s --listen HOST:PORT [--cpu N]\n"
        "\n"
        "%s\n"
        "Prints \"PROG: listening on ADDR (model)\" (the real port when 0). SIGTERM / SIGINT: prints\n"
        "its CPU seconds on stderr and exits 0.\n"
        "\n"
        "  --listen HOST:PORT   where to listen (IPv4, [IPv6], or a name: its first address;\n"
        "                       port 0 picks one)\n"
        "  --cpu N              pin the process to CPU N\n"
        "  --help               this text\n",
        prog, summary);
}

int model_parse_args(int argc, char **argv, const char *prog, const char *summary,
                     model_opts_t *o)
{
    static const struct option longopts[] = {
        { "listen", required_argument, NULL, 'l' },
        { "cpu", required_argument, NULL, 'c' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    o->listen = NULL;
    o->cpu = -1;
    int ch;
    uint64_t v;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":l:c:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'l': o->listen = optarg; break;
        case 'c':
            if (iop_app_parse_u64(optarg, 0, 4095, &v) < 0) {
                fprintf(stderr, "%s: --cpu wants a CPU number, not '%s'\n", prog, optarg);
                return EXIT_USAGE;
            }
            o->cpu = (int)v;
            break;
        case 'h': usage(stdout, prog, summary); return 0;
        default:   /* ':' (no value) or '?' (unknown) */
            return iop_app_getopt_fail(prog, ch, argv);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s' (try --help)\n", prog, argv[optind]);
        return EXIT_USAGE;
    }
    if (!o->listen) {
        fprintf(stderr, "%s: --listen HOST:PORT is required (try --help)\n", prog);
        return EXIT_USAGE;
    }
    return -1;
}

int model_listen(const model_opts_t *o, const char *prog, int nonblocking, const char *what)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char err[256], shown[128];
    if (bench_parse_hostport(o->listen, 1, &ss, &len, err, sizeof err) < 0) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return -EXIT_USAGE;
    }
    int r = o->cpu >= 0 ? bench_pin_cpu(o->cpu) : 0;
    if (r < 0) {
        fprintf(stderr, "%s: cannot pin to CPU %d: %s\n", prog, o->cpu, strerror(-r));
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) {
        fprintf(stderr, "%s: socket: %s\n", prog, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)&ss, len) < 0 || listen(fd, SOMAXCONN) < 0) {
        fprintf(stderr, "%s: cannot listen on %s: %s\n", prog, o->listen, strerror(errno));
        close(fd);
        return -1;
    }
    len = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &len);
    printf("%s: listening on %s (%s)\n", prog, iop_app_format_addr((struct sockaddr *)&ss, len, shown, sizeof shown),
           what);
    fflush(stdout);
    return fd;
}

void model_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void model_report_cpu(const char *prog, unsigned long long connections)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    fprintf(stderr, "%s: %llu connections, cpu %.3f s (user + system)\n", prog, connections, cpu);
}
