/* iop-loop-bench: what making and ending a loop costs, per backend, through the
 * public API: microseconds per iop_loop_create + iop_loop_destroy, best of
 * --repeat runs of --count pairs each,
 *
 *   alone   no other loop of that backend alive (a backend module that is unloaded
 *           with its last loop is loaded again each time)
 *   beside  another loop of that backend alive the whole time
 *
 * A backend this machine cannot run is listed with its reason. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ioplex.h>

#define PROG "iop-loop-bench"

enum { EXIT_USAGE = 2 };

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* Best of repeat runs of count create + destroy pairs: us per pair, or -1. */
static double time_pairs(const char *backend, unsigned count, unsigned repeat)
{
    double best = -1;
    for (unsigned k = 0; k < repeat; k++) {
        double t0 = now_us();
        for (unsigned i = 0; i < count; i++) {
            iop_loop_opts_t o = { .size = sizeof o, .backend = backend };
            iop_loop_t *loop;
            if (iop_loop_create(&loop, &o) < 0)
                return -1;
            iop_loop_destroy(loop);
        }
        double per = (now_us() - t0) / count;
        if (best < 0 || per < best)
            best = per;
    }
    return best;
}

static int parse_count(const char *opt, const char *s, unsigned max, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || s[0] < '0' || s[0] > '9' || v < 1 || v > max) {
        fprintf(stderr, PROG ": %s must be from 1 to %u, not '%s'\n", opt, max, s);
        return -1;
    }
    *out = (unsigned)v;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: " PROG " [--count N] [--repeat R] [--backends LIST]\n"
        "\n"
        "Times iop_loop_create + iop_loop_destroy per backend, with no other loop of\n"
        "the backend alive (alone) and beside one (beside): microseconds per pair,\n"
        "best of R runs of N pairs. Prints a markdown table.\n"
        "\n"
        "  --count N        pairs per run (default 300)\n"
        "  --repeat R       runs, the fastest is shown (default 3)\n"
        "  --backends LIST  comma-separated (default select,poll,epoll,sigio,uring)\n"
        "  --help           this text\n");
}

int main(int argc, char **argv)
{
    unsigned count = 300, repeat = 3;
    char list[256] = "select,poll,epoll,sigio,uring";
    static const struct option longopts[] = {
        { "count", required_argument, NULL, 'n' },
        { "repeat", required_argument, NULL, 'r' },
        { "backends", required_argument, NULL, 'b' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "n:r:b:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'n': if (parse_count("--count", optarg, 1000000, &count) < 0) return EXIT_USAGE; break;
        case 'r': if (parse_count("--repeat", optarg, 1000, &repeat) < 0) return EXIT_USAGE; break;
        case 'b':
            if (!optarg[0] || strlen(optarg) >= sizeof list) {
                fprintf(stderr, PROG ": --backends wants a list of names, not '%s'\n", optarg);
                return EXIT_USAGE;
            }
            snprintf(list, sizeof list, "%s", optarg);
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, PROG ": unexpected argument '%s' (try --help)\n", argv[optind]);
        return EXIT_USAGE;
    }
    printf("| backend | us per create + destroy, alone | beside another loop |\n|---|---:|---:|\n");
    int failed = 0;
    for (char *save = NULL, *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        iop_loop_opts_t o = { .size = sizeof o, .backend = name };
        iop_loop_t *keep;
        if (iop_loop_create(&keep, &o) < 0) {
            printf("| %s | unavailable: %s | |\n", name, iop_last_error());
            continue;
        }
        double beside = time_pairs(name, count, repeat);
        iop_loop_destroy(keep);
        double alone = time_pairs(name, count, repeat);
        if (alone < 0 || beside < 0) {
            fprintf(stderr, PROG ": %s: a create failed: %s\n", name, iop_last_error());
            failed = 1;
            continue;
        }
        printf("| %s | %.1f | %.1f |\n", name, alone, beside);
    }
    printf("(%u pairs per run, best of %u)\n", count, repeat);
    return failed ? EXIT_FAILURE : 0;
}
