/* ioplexd: the sample server. Hosts service plugins (echo, http, chat, or your own)
 * on the listeners the command line names (each address of a host name), with one
 * coroutine per connection, in one process (--workers 0) or in N worker processes
 * under a supervisor that respawns them, drains them on SIGTERM and restarts them
 * one by one on SIGHUP.
 *
 *   ioplexd --backend epoll --workers 2 --service echo=127.0.0.1:7000 \
 *           --service http=127.0.0.1:8080,root=./www --stats */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/time.h>
#include <unistd.h>

#include "hostport.h"
#include "ioplexd.h"
#include "stdio_guard.h"

#define DEFAULT_DRAIN_S 10

/* ---- the command line -------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
        "usage: " PROG " --service NAME=HOST:PORT[,KEY=VALUE...] [--service ...]\n"
        "               [--backend NAME] [--workers N] [--stats] [--stats-interval S]\n"
        "               [--drain-timeout S] [--recv-pool N] [--no-defer-accept]\n"
        "               [--plugin-path DIRS]\n"
        "\n"
        "Serves each --service on its address with the service plugin of that name\n"
        "(iop_service_NAME.so on the plugin path), one coroutine per connection. Stays in\n"
        "the foreground; prints the backend it took and where each service listens.\n"
        "SIGTERM / SIGINT: stop accepting, let open connections finish (up to the drain\n"
        "timeout), exit 0; a second one stops at once (exit 1). SIGHUP: restart the\n"
        "workers one by one.\n"
        "\n"
        "  --service SPEC       NAME=HOST:PORT followed by the service's options, e.g.\n"
        "                       echo=127.0.0.1:7000  http=127.0.0.1:8080,root=./www\n"
        "                       (HOST: IPv4, [IPv6] or a name, which listens on every\n"
        "                       address it resolves to, on one port; [::] is IPv6 only;\n"
        "                       PORT 0 picks a free port; a value cannot hold a ',',\n"
        "                       which ends it)\n"
        "  --backend NAME       select, poll, epoll, sigio, uring or auto\n"
        "                       (default: $IOPLEX_BACKEND, then auto)\n"
        "  --workers N          worker processes, one loop each (default 1; 0 = serve in\n"
        "                       this process, without a supervisor)\n"
        "  --stats              print a line per second: connections, requests/s,\n"
        "                       bytes/s, errors, backend, per worker\n"
        "  --stats-interval S   ... every S seconds instead, fractions allowed (0.05 to\n"
        "                       3600); implies --stats\n"
        "  --drain-timeout S    how long open connections may take at a stop (default %d);\n"
        "                       a worker, or --workers 0 itself, still stopping a few\n"
        "                       seconds later is ended (exit status 1)\n"
        "  --recv-pool N        receive buffers per worker loop (%d B each, default %d;\n"
        "                       0 = none): services receive into them where the backend\n"
        "                       lends them (io_uring provided buffers)\n"
        "  --no-defer-accept    accept every connection as soon as it is made; by default\n"
        "                       the kernel holds one to a service where the client speaks\n"
        "                       first (http) until its first bytes are in, or about a\n"
        "                       second (TCP_DEFER_ACCEPT)\n"
        "  --plugin-path DIRS   ':'-separated dirs searched first for backend and service\n"
        "                       modules\n"
        "  --list               list the service plugins found, with their options\n"
        "  --help               this text\n"
        "\n"
        "Exit status: 0 after a clean stop, 1 on a runtime failure (too few file\n"
        "descriptors or too little memory to start included), 2 on a usage error, an\n"
        "unknown service or a backend that cannot run here, or an address that cannot\n"
        "be bound.\n",
        DEFAULT_DRAIN_S, RECV_POOL_BUF, RECV_POOL_DEFAULT);
}

static int add_service(daemon_t *d, const char *arg)
{
    if (d->nsvc == MAX_SERVICES) {
        fprintf(stderr, PROG ": at most %d services\n", MAX_SERVICES);
        return -1;
    }
    service_slot_t *s = &d->svc[d->nsvc];
    s->spec = strdup(arg);
    char *eq = s->spec ? strchr(s->spec, '=') : NULL;
    if (!eq || eq == s->spec || !eq[1]) {
        fprintf(stderr, PROG ": --service wants NAME=HOST:PORT[,KEY=VALUE...], not '%s'\n", arg);
        free(s->spec);
        return -1;
    }
    *eq = '\0';
    s->name = s->spec;
    s->listen = eq + 1;
    char *comma = strchr(eq + 1, ',');
    if (comma) {
        *comma = '\0';
        /* A comma promises an option: "echo=HOST:PORT," is a typo, not none. */
        int n = comma[1] ? iop_service_parse_opts(comma + 1, s->opts, MAX_SERVICE_OPTS) : -EINVAL;
        if (n < 0) {
            fprintf(stderr, PROG ": --service %s: %s\n", arg,
                    n == -E2BIG ? "too many options" : "an option without a name");
            free(s->spec);
            return -1;
        }
        s->nopts = (size_t)n;
        for (size_t a = 0; a < s->nopts; a++)
            for (size_t b = a + 1; b < s->nopts; b++)
                if (strcmp(s->opts[a].key, s->opts[b].key) == 0) {
                    fprintf(stderr, PROG ": --service %s: option '%s' given twice\n", arg, s->opts[a].key);
                    free(s->spec);
                    return -1;
                }
    }
    /* The address's spelling is checked here, before anything starts, in the same
     * words whatever --workers says; binding it (and a name's lookup) comes later. */
    char host[256], port[16], err[512];
    if (iop_app_split_hostport(s->listen, host, sizeof host, port, sizeof port, err, sizeof err) < 0) {
        fprintf(stderr, PROG ": --service %s: %s\n", s->name, err);
        free(s->spec);
        return -1;
    }
    d->nsvc++;
    return 0;
}

static int list_services(const char *plugin_path)
{
    iop_service_info_t *list;
    size_t n;
    if (iop_service_list(plugin_path, &list, &n) < 0) {
        fprintf(stderr, PROG ": %s\n", iop_last_error());
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        if (!list[i].desc) {
            printf("%-10s refused: %s (%s)\n", list[i].name, list[i].why, list[i].path);
            continue;
        }
        const char *summary = list[i].desc->summary ? list[i].desc->summary : "";
        printf("%-10s %s%s(%s)\n", list[i].name, summary, summary[0] ? " " : "", list[i].path);
        if (list[i].desc->options_help)
            printf("%s", list[i].desc->options_help);
    }
    if (!n)
        printf("no service plugins on the search path\n");
    iop_service_list_free(list);
    return 0;
}

/* ---- setting up ---------------------------------------------------------------------- */

/* Loads each service and creates its state (before any fork: workers inherit it). */
static int services_create(daemon_t *d)
{
    for (size_t i = 0; i < d->nsvc; i++) {
        service_slot_t *s = &d->svc[i];
        if (iop_service_open(&s->module, s->name, d->plugin_path) < 0) {
            fprintf(stderr, PROG ": --service %s: %s\n", s->name, iop_last_error());
            return -1;
        }
        s->desc = iop_service_desc(s->module);
        if (d->no_defer_accept && (s->desc->flags & IOP_SERVICE_CLIENT_FIRST)) {
            s->own_desc = *s->desc;
            s->own_desc.flags &= ~IOP_SERVICE_CLIENT_FIRST;
            s->desc = &s->own_desc;
        }
        iop_service_cfg_t cfg = {
            .size = sizeof cfg, .name = s->name, .listen = s->listen, .opts = s->opts,
            .nopts = s->nopts, .nworkers = d->workers ? (int)d->workers : 1,
        };
        if (s->desc->create) {
            char err[512] = "";
            int r = s->desc->create(&s->state, &cfg, err, sizeof err);
            if (r < 0) {
                fprintf(stderr, PROG ": --service %s: %s\n", s->name, err[0] ? err : iop_strerror(r));
                return -1;
            }
        } else if (s->nopts) {
            fprintf(stderr, PROG ": --service %s: this service takes no options (got '%s')\n",
                    s->name, s->opts[0].key);
            return -1;
        }
    }
    return 0;
}

static void services_destroy(daemon_t *d)
{
    for (size_t i = 0; i < d->nsvc; i++) {
        service_slot_t *s = &d->svc[i];
        if (s->desc && s->desc->destroy && s->state)
            s->desc->destroy(s->state);
        iop_service_close(s->module);
        free(s->spec);
    }
    for (size_t i = 0; i < d->nsolo; i++)
        close(d->solo[i].fd);
    free(d->solo);
}

/* Counters for every worker and service, shared with the workers when there are. */
static int counters_create(daemon_t *d)
{
    size_t slots = d->workers ? d->workers : 1;
    d->ncounters = slots * STAT_CELLS * d->nsvc;
    size_t bytes = d->ncounters * sizeof *d->counters + slots * STAT_CELLS * sizeof *d->owners;
    void *p = mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, PROG ": cannot map the stats counters: %s\n", strerror(errno));
        return -1;
    }
    d->counters = p;
    d->owners = (uint64_t *)(d->counters + d->ncounters);   /* counters are 8-byte aligned */
    return 0;
}

/* Every service's listeners, bound here as the shard binds them for workers (a
 * name on each of its addresses, one port for all): one parser, one set of rules,
 * whatever --workers says. 0, or -1 after saying which address failed. */
static int solo_listen(daemon_t *d)
{
    const char *listen[MAX_SERVICES + 1];
    for (size_t i = 0; i < d->nsvc; i++)
        listen[i] = d->svc[i].listen;
    listen[d->nsvc] = NULL;
    enum { MAX_SOLO = 64 * MAX_SERVICES };
    int fds[MAX_SOLO];
    uint32_t entry[MAX_SOLO];
    int n = iop_shard_listen(listen, IOP_SHARD_ALL_ADDRESSES, 0, fds, entry, MAX_SOLO);
    if (n < 0) {
        fprintf(stderr, PROG ": %s\n", iop_last_error());
        return -1;
    }
    d->solo = calloc((size_t)n ? (size_t)n : 1, sizeof *d->solo);
    if (!d->solo) {
        while (n > 0)
            close(fds[--n]);
        fprintf(stderr, PROG ": out of memory for the listeners\n");
        return -1;
    }
    for (int k = 0; k < n; k++)
        d->solo[k] = (listener_t){ .fd = fds[k], .svc = entry[k] };
    d->nsolo = (size_t)n;
    return 0;
}

void print_service_line(const service_slot_t *s, const char *where)
{
    printf(PROG ": %s listening on %s", s->name, where);
    for (size_t k = 0; k < s->nopts; k++)
        printf("%s%s%s%s", k ? "," : " (", s->opts[k].key, s->opts[k].value[0] ? "=" : "",
               s->opts[k].value);
    printf("%s\n", s->nopts ? ")" : "");
}

/* ---- one process: --workers 0 ------------------------------------------------------ */

typedef struct solo {
    daemon_t *d;
    iop_loop_t *loop;
    int sig_fd;
    int result;
} solo_t;

/* With workers, the supervisor kills one that is still stopping a grace period after
 * the drain deadline. Alone, a service whose worker_stop (or a connection that
 * ignores its cancel) never returns would hold the process forever: a timer ends it
 * at the same bound, with a reason and status 1. */
#define SOLO_GRACE_NS (3 * 1000000000ull)

static void solo_overdue(int sig)
{
    (void)sig;
    static const char msg[] = PROG ": still stopping after the drain timeout and a grace period: exiting\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
    _exit(EXIT_FAILURE);
}

static void solo_arm_watchdog(uint64_t drain_ns)
{
    if (drain_ns > UINT64_MAX - SOLO_GRACE_NS)
        return;                      /* a drain that may last forever */
    uint64_t t = drain_ns + SOLO_GRACE_NS;
    struct sigaction sa = { .sa_handler = solo_overdue };
    sigemptyset(&sa.sa_mask);
    struct itimerval it = { .it_value = { .tv_sec = (time_t)(t / 1000000000u),
                                          .tv_usec = (suseconds_t)(t % 1000000000u / 1000u) } };
    if (sigaction(SIGALRM, &sa, NULL) < 0 || setitimer(ITIMER_REAL, &it, NULL) < 0)
        fprintf(stderr, PROG ": cannot bound the stop (%s): a stuck service will hold it\n", strerror(errno));
}

/* The next SIGTERM or SIGINT (SIGHUP aside); its number, or -errno. */
static int solo_next_stop(solo_t *so)
{
    struct signalfd_siginfo si;
    for (;;) {
        ssize_t n = iop_read(so->sig_fd, &si, sizeof si, 0);
        if (n != (ssize_t)sizeof si)
            return n < 0 ? (int)n : -EIO;
        if (si.ssi_signo != SIGHUP)
            return (int)si.ssi_signo;
        fprintf(stderr, PROG ": SIGHUP: no workers to restart (--workers 0)\n");
    }
}

/* During the drain, a second stop signal ends the process at once, as it ends the
 * workers at once under the supervisor. */
static void *solo_second_signal(void *arg)
{
    int sig = solo_next_stop(arg);
    if (sig > 0) {
        fprintf(stderr, PROG ": second %s: stopping without waiting for the drain\n", strsignal(sig));
        fflush(stderr);
        _exit(EXIT_FAILURE);
    }
    return NULL;
}

static int solo_wait_stop(void *arg)
{
    solo_t *so = arg;
    int sig = solo_next_stop(so);
    if (sig < 0)
        return sig;
    fprintf(stderr, PROG ": %s: draining\n", strsignal(sig));
    solo_arm_watchdog(so->d->drain_ns);
    if (iop_go(so->loop, solo_second_signal, so, NULL, NULL) < 0)
        fprintf(stderr, PROG ": %s: a second signal will not cut the drain short\n", iop_last_error());
    return 0;
}

static uint64_t solo_drain_deadline(void *arg)
{
    solo_t *so = arg;
    return iop_now(so->loop) + so->d->drain_ns;
}

static void *solo_main(void *arg)
{
    solo_t *so = arg;
    worker_run_t wr = {
        .d = so->d, .loop = so->loop, .index = 0, .listeners = so->d->solo, .nlisten = so->d->nsolo,
        .wait_stop = solo_wait_stop, .stop_arg = so, .drain_deadline = solo_drain_deadline,
    };
    so->result = worker_serve(&wr);
    return NULL;
}

static int signals_block(sigset_t *mask)
{
    sigemptyset(mask);
    sigaddset(mask, SIGTERM);
    sigaddset(mask, SIGINT);
    sigaddset(mask, SIGHUP);
    /* A shell starts background jobs with SIGINT ignored, and an ignored signal never
     * reaches a signalfd: take them back to the default first. */
    struct sigaction dfl = { .sa_handler = SIG_DFL };
    sigaction(SIGTERM, &dfl, NULL);
    sigaction(SIGINT, &dfl, NULL);
    sigaction(SIGHUP, &dfl, NULL);
    return sigprocmask(SIG_BLOCK, mask, NULL);
}

static int run_solo(daemon_t *d)
{
    solo_t so = { .d = d, .sig_fd = -1 };
    iop_loop_opts_t lo = { .size = sizeof lo, .flags = IOPLEXD_LOOP_FLAGS, .backend = d->backend,
                           .plugin_path = d->plugin_path, .buf_count = d->recv_pool,
                           .buf_size = RECV_POOL_BUF };
    int r = iop_loop_create(&so.loop, &lo);
    if (r < 0) {
        fprintf(stderr, PROG ": cannot start the event loop: %s\n", iop_last_error());
        return iop_app_loop_exit_status(r);
    }
    const char *report = iop_loop_backend_report(so.loop);
    printf(PROG ": backend %s%s%s%s\n", iop_loop_backend(so.loop), report[0] ? " (" : "",
           report, report[0] ? ")" : "");
    /* Signals are ours before the lines that say where we listen: a SIGTERM sent as
     * soon as they appear drains, it does not kill. */
    sigset_t mask;
    int status = EXIT_FAILURE;
    if (signals_block(&mask) < 0 || (so.sig_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC)) < 0) {
        fprintf(stderr, PROG ": cannot set up signal handling: %s\n", strerror(errno));
        goto out;
    }
    status = EXIT_USAGE;
    if (solo_listen(d) < 0)
        goto out;
    /* Said once every address is bound: a script that reads a line may connect. */
    for (size_t i = 0; i < d->nsolo; i++) {
        char where[128];
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        getsockname(d->solo[i].fd, (struct sockaddr *)&ss, &len);
        print_service_line(&d->svc[d->solo[i].svc], iop_app_format_addr((struct sockaddr *)&ss, len,
                                                                         where, sizeof where));
    }
    printf(PROG ": serving in this process (--workers 0)\n");
    fflush(stdout);
    status = EXIT_FAILURE;
    iop_coro_t *c;
    if (iop_go(so.loop, solo_main, &so, NULL, &c) < 0 || iop_join(c, NULL, 0) < 0) {
        fprintf(stderr, PROG ": %s\n", iop_last_error());
        goto out;
    }
    status = so.result < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
out:
    if (so.sig_fd >= 0)
        close(so.sig_fd);
    iop_loop_destroy(so.loop);
    return status;
}

/* ---- main ------------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    iop_app_guard_stdio();
    static daemon_t d = { .workers = 1, .drain_ns = DEFAULT_DRAIN_S * 1000000000ull,
                          .recv_pool = RECV_POOL_DEFAULT, .stats_ns = 1000000000ull };
    int list = 0;
    static const struct option longopts[] = {
        { "service", required_argument, NULL, 'S' },
        { "backend", required_argument, NULL, 'b' },
        { "workers", required_argument, NULL, 'w' },
        { "stats", no_argument, NULL, 's' },
        { "stats-interval", required_argument, NULL, 'I' },
        { "drain-timeout", required_argument, NULL, 'D' },
        { "plugin-path", required_argument, NULL, 'p' },
        { "recv-pool", required_argument, NULL, 'P' },
        { "no-defer-accept", no_argument, NULL, 'A' },
        { "list", no_argument, NULL, 'L' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    uint64_t v;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":S:b:w:sI:D:p:P:ALh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'S':
            if (add_service(&d, optarg) < 0)
                return EXIT_USAGE;
            break;
        case 'b':
            if (!optarg[0]) {
                fprintf(stderr, PROG ": --backend wants a name (select, poll, epoll, sigio, uring or auto)\n");
                return EXIT_USAGE;
            }
            d.backend = optarg;
            break;
        case 'p': d.plugin_path = optarg; break;
        case 's': d.stats = 1; break;
        case 'I': {
            double secs;
            if (iop_app_parse_seconds(optarg, 3600, &secs) < 0 || secs < 0.05) {
                fprintf(stderr, PROG ": --stats-interval wants seconds (0.05 to 3600), not '%s'\n", optarg);
                return EXIT_USAGE;
            }
            d.stats = 1;
            d.stats_ns = (uint64_t)(secs * 1e9);
            break;
        }
        case 'A': d.no_defer_accept = 1; break;
        case 'L': list = 1; break;
        case 'w':
            if (iop_app_parse_u64(optarg, 0, 256, &v) < 0) {
                fprintf(stderr, PROG ": --workers wants a number from 0 to 256, not '%s'\n", optarg);
                return EXIT_USAGE;
            }
            d.workers = (uint32_t)v;
            break;
        case 'D':
            if (iop_app_parse_u64(optarg, 0, 3600, &v) < 0) {
                fprintf(stderr, PROG ": --drain-timeout wants seconds (0 to 3600), not '%s'\n", optarg);
                return EXIT_USAGE;
            }
            d.drain_ns = v * 1000000000ull;
            break;
        case 'P':
            if (iop_app_parse_u64(optarg, 0, 32768, &v) < 0) {
                fprintf(stderr, PROG ": --recv-pool wants a number of buffers from 0 to 32768, not '%s'\n", optarg);
                return EXIT_USAGE;
            }
            d.recv_pool = (uint32_t)v;
            break;
        case 'h': usage(stdout); return 0;
        default:   /* ':' (no value) or '?' (unknown) */
            return iop_app_getopt_fail(PROG, ch, argv);
        }
    }
    if (optind < argc) {
        fprintf(stderr, PROG ": unexpected argument '%s' (try --help)\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (list)
        return list_services(d.plugin_path);
    if (!d.nsvc) {
        fprintf(stderr, PROG ": nothing to serve: give at least one --service (try --help)\n");
        return EXIT_USAGE;
    }
    signal(SIGPIPE, SIG_IGN);    /* a peer that resets must not kill a worker */
    int status = EXIT_USAGE;
    if (services_create(&d) == 0 && counters_create(&d) == 0)
        status = d.workers ? run_workers(&d) : run_solo(&d);
    services_destroy(&d);
    return status;
}
