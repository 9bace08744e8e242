/* iop-pingpong: greenlet-style explicit switching. Two coroutines hand a counter
 * back and forth with iop_switch until it reaches N; the one that sees N returns,
 * which sends its result to its parent (the main context), and main resumes the
 * other so that it ends too. No loop I/O is involved: a switch is a plain transfer. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ioplex.h>
#include "hostport.h"

#define PROG "iop-pingpong"

static iop_coro_t *ping, *pong;
static intptr_t limit;
static int verbose;

/* Each side: print, pass value + 1 to the other, until the limit is reached. */
static void *player(void *arg)
{
    iop_coro_t *me = iop_self();
    intptr_t v = (intptr_t)arg;   /* the value of the first switch to us */
    while (v < limit) {
        if (verbose)
            printf("%s %" PRIdPTR "\n", iop_coro_name(me), v);
        v = (intptr_t)iop_switch(me == ping ? pong : ping, (void *)(v + 1));
    }
    if (verbose)
        printf("%s %" PRIdPTR " (done)\n", iop_coro_name(me), v);
    return (void *)v;             /* goes to our parent, main */
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: " PROG " [--count N] [--quiet] [--backend NAME] [--plugin-path DIRS]\n"
        "\n"
        "Two coroutines pass a counter back and forth with iop_switch (greenlet style)\n"
        "until it reaches N (default 10), printing each hand-off, then report how\n"
        "control came back to main.\n"
        "\n"
        "  --count N   how far to count (1 to 100000000)\n"
        "  --quiet     print only the summary\n"
        "  --backend NAME       the loop's backend (default $IOPLEX_BACKEND, then auto)\n"
        "  --plugin-path DIRS   ':'-separated dirs searched first for backend modules\n"
        "  --help      this text\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "count", required_argument, NULL, 'n' },
        { "quiet", no_argument, NULL, 'q' },
        { "backend", required_argument, NULL, 'b' },
        { "plugin-path", required_argument, NULL, 'p' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    long count = 10;
    const char *backend = NULL, *plugin_path = NULL;
    int ch;
    verbose = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":n:qb:p:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'n': {
            char *end;
            errno = 0;
            count = strtol(optarg, &end, 10);
            if (errno || *end || end == optarg || count < 1 || count > 100000000) {
                fprintf(stderr, PROG ": --count wants a number from 1 to 100000000, not '%s'\n", optarg);
                return 2;
            }
            break;
        }
        case 'q': verbose = 0; break;
        case 'b': backend = optarg; break;
        case 'p': plugin_path = optarg; break;
        case 'h': usage(stdout); return 0;
        case ':':
            fprintf(stderr, PROG ": %s wants a value (try --help)\n", argv[optind - 1]);
            return 2;
        default:
            fprintf(stderr, PROG ": bad option '%s' (try --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, PROG ": unexpected argument '%s' (try --help)\n", argv[optind]);
        return 2;
    }
    limit = count;

    iop_loop_t *loop;
    iop_loop_opts_t lo = { .size = sizeof lo, .backend = backend, .plugin_path = plugin_path };
    int r = iop_loop_create(&loop, &lo);
    if (r < 0) {
        fprintf(stderr, PROG ": cannot start the event loop: %s\n", iop_last_error());
        return iop_app_loop_exit_status(r);
    }
    iop_coro_opts_t po = { .size = sizeof po, .name = "ping" }, qo = { .size = sizeof qo, .name = "pong" };
    if (iop_coro_create(loop, player, NULL, &po, &ping) < 0 ||
        iop_coro_create(loop, player, NULL, &qo, &pong) < 0) {
        fprintf(stderr, PROG ": cannot create the coroutines: %s\n", iop_last_error());
        return 1;
    }
    /* Start ping with 0; the first player to reach the limit returns it to us. */
    intptr_t first = (intptr_t)iop_switch(ping, (void *)(intptr_t)0);
    iop_coro_t *finished = iop_coro_done(ping) ? ping : pong;
    iop_coro_t *other = finished == ping ? pong : ping;
    /* The other one waits in its switch: hand it the final value so it ends too. */
    intptr_t second = (intptr_t)iop_switch(other, (void *)first);
    printf("main: %s returned %" PRIdPTR ", then %s returned %" PRIdPTR "; %ld hand-offs\n",
           iop_coro_name(finished), first, iop_coro_name(other), second, count);
    int ok = iop_coro_done(ping) && iop_coro_done(pong) && first == count && second == count;
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, PROG ": writing the result failed: %s\n", strerror(errno));
        ok = 0;
    }
    iop_coro_free(ping);
    iop_coro_free(pong);
    iop_loop_destroy(loop);
    return ok ? 0 : 1;
}
