/* iop-fetch: downloads many http:// URLs at once, one coroutine per download slot
 * (the gevent crawler, in C). See README.md for how the parts fit. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch.h"
#include "hostport.h"
#include "stdio_guard.h"

#define DEFAULT_CONCURRENCY 10
#define MAX_CONCURRENCY 1000
#define DEFAULT_TIMEOUT_S 30
#define DEFAULT_MAX_REDIRECTS 5
#define HOST_IDLE_MAX 16             /* idle keep-alive connections kept per host */
#define PROGRESS_TICK_NS 100000000ull

enum { EXIT_USAGE = 2 };

/* ---- the coroutines --------------------------------------------------------- */

typedef struct run {
    fetch_t *f;
    iop_coro_t **workers;
    unsigned nworkers;
    int sigfd;
} run_t;

/* A download slot: takes the next URL until none is left. */
static void *worker_main(void *arg)
{
    fetch_t *f = arg;
    while (f->next_job < f->njobs && !f->interrupted) {
        fetch_job_t *j = &f->jobs[f->next_job++];
        f->active++;
        fetch_job_run(f, j);
        f->active--;
        f->finished++;
        f->failed += j->state != JOB_OK;
        /* A body for stdout is reported once it is out: writing it may still fail. */
        if (!f->o.to_stdout || j->state != JOB_OK)
            progress_job_done(f, j);
        if (f->o.to_stdout)
            output_emit_ready(f);
    }
    return NULL;
}

static void *progress_main(void *arg)
{
    fetch_t *f = arg;
    for (;;) {
        progress_redraw(f, 0);
        if (iop_sleep(PROGRESS_TICK_NS) < 0)
            return NULL;             /* cancelled: the work is done */
    }
}

/* SIGINT / SIGTERM: stop every download (their temporary files are removed). */
static void *signal_main(void *arg)
{
    run_t *run = arg;
    struct signalfd_siginfo si;
    if (iop_read(run->sigfd, &si, sizeof si, 0) != (ssize_t)sizeof si)
        return NULL;
    run->f->interrupted = 1;
    for (unsigned i = 0; i < run->nworkers; i++)
        if (run->workers[i])
            iop_cancel(run->workers[i]);
    return NULL;
}

static void *main_coro(void *arg)
{
    run_t *run = arg;
    fetch_t *f = run->f;
    static const iop_coro_opts_t wopts = { .size = sizeof wopts, .name = "fetch-worker" };
    static const iop_coro_opts_t popts = { .size = sizeof popts, .name = "progress" };
    static const iop_coro_opts_t sopts = { .size = sizeof sopts, .name = "signals" };
    iop_coro_t *progress = NULL, *sig = NULL;
    if (f->tty && !f->o.quiet)
        iop_go(f->loop, progress_main, f, &popts, &progress);
    if (run->sigfd >= 0)
        iop_go(f->loop, signal_main, run, &sopts, &sig);
    for (unsigned i = 0; i < run->nworkers; i++) {
        if (iop_go(f->loop, worker_main, f, &wopts, &run->workers[i]) < 0) {
            fprintf(stderr, PROG ": cannot start a download coroutine: %s\n", iop_last_error());
            run->workers[i] = NULL;
        }
    }
    for (unsigned i = 0; i < run->nworkers; i++) {
        if (run->workers[i])
            iop_join(run->workers[i], NULL, 0);
        run->workers[i] = NULL;
    }
    if (progress) {
        iop_cancel(progress);
        iop_join(progress, NULL, 0);
    }
    if (sig) {
        iop_cancel(sig);
        iop_join(sig, NULL, 0);
    }
    pool_destroy(&f->pool);
    return NULL;
}

/* ---- input ------------------------------------------------------------------ */

typedef struct url_list {
    char **v;
    size_t n, cap;
} url_list_t;

static int list_add(url_list_t *l, const char *s)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    if (!(l->v[l->n] = strdup(s)))
        return -1;
    l->n++;
    return 0;
}

static void list_free(url_list_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
}

/* One URL a line, optionally followed by a '#' comment; blank lines and lines
 * starting with '#' are skipped, and so is a UTF-8 byte order mark. */
static int read_url_file(const char *name, url_list_t *l)
{
    unsigned lineno = 0;
    FILE *in = strcmp(name, "-") == 0 ? stdin : fopen(name, "re");
    if (!in) {
        fprintf(stderr, PROG ": cannot open '%s': %s\n", name, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int r = 0;
    while (r == 0 && (n = getline(&line, &cap, in)) >= 0) {
        char *s = line, *e = line + n;
        if (++lineno == 1 && n >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0)
            s += 3;
        if (memchr(s, '\0', (size_t)(e - s))) {
            fprintf(stderr, PROG ": %s:%u: a NUL byte in the line\n", name, lineno);
            r = -1;
            break;
        }
        while (*s == ' ' || *s == '\t')
            s++;
        while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
            e--;
        *e = '\0';
        if (!*s || *s == '#')
            continue;
        char *sp = strpbrk(s, " \t");    /* a URL holds no blank: what follows is a comment */
        if (sp) {
            char *c = sp;
            while (*c == ' ' || *c == '\t')
                c++;
            if (*c != '#') {
                fprintf(stderr, PROG ": %s:%u: one URL a line (a comment after it starts with '#')\n",
                        name, lineno);
                r = -1;
                break;
            }
            *sp = '\0';
        }
        if (list_add(l, s) < 0)
            r = -1;
    }
    if (ferror(in)) {
        fprintf(stderr, PROG ": reading '%s': %s\n", name, strerror(errno));
        r = -1;
    }
    free(line);
    if (in != stdin)
        fclose(in);
    return r;
}

/* ---- command line ------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
        "usage: " PROG " [options] URL...\n"
        "       " PROG " [options] -i FILE\n"
        "\n"
        "Downloads http:// URLs concurrently, each into a file named after the URL's\n"
        "path (index.html for a trailing slash; name.1.ext, name.2.ext ... when a name\n"
        "is taken, by this run or by a file already there). A body is written under a\n"
        "hidden temporary name and renamed at the end: a failed download leaves no file,\n"
        "and nothing in DIR is ever replaced (a name taken meanwhile gets a suffix).\n"
        "Connections are kept alive and reused per host; redirects are followed.\n"
        "\n"
        "  -c, --concurrency N    downloads at once (default %d, at most %d)\n"
        "  -o, --output-dir DIR   where the files go (default: the current directory;\n"
        "                         created if missing)\n"
        "  -O, --output FILE      the file for the one URL given ('-' = stdout)\n"
        "      --stdout           write every body to stdout instead, whole, in the\n"
        "                         order of the URLs\n"
        "  -i, --input FILE       read URLs from FILE, one a line ('-' = stdin; blank\n"
        "                         lines and lines starting with '#' are skipped, and\n"
        "                         a '#' comment may follow a URL)\n"
        "      --timeout SECONDS  limit on connecting plus receiving the response head,\n"
        "                         and on each read of the body; fractions allowed\n"
        "                         (default %d)\n"
        "      --max-redirects N  redirects followed per URL (default %d)\n"
        "  -q, --quiet            print only failures\n"
        "      --backend NAME     select, poll, epoll, sigio, uring or auto\n"
        "                         (default: $IOPLEX_BACKEND, then auto)\n"
        "      --plugin-path DIRS ':'-separated dirs searched first for backend modules\n"
        "  -h, --help             this text\n"
        "\n"
        "Progress goes to stderr: a line redrawn in place on a terminal, one line per\n"
        "finished URL otherwise; then a table of every URL and a totals line.\n"
        "Only http:// is supported (an https:// URL fails with a message).\n"
        "\n"
        "Exit status: 0 when every URL was downloaded, 1 if any failed (an HTTP status\n"
        "of 300 or more that is not a redirect followed counts as a failure and saves\n"
        "nothing: 4xx and 5xx like curl -f, also 300 and 304, and so does too few file\n"
        "descriptors or too little memory to start), 2 on a usage error or when the\n"
        "backend asked for cannot run here.\n",
        DEFAULT_CONCURRENCY, MAX_CONCURRENCY, DEFAULT_TIMEOUT_S, DEFAULT_MAX_REDIRECTS);
}

static int bad_value(const char *opt, const char *val)
{
    fprintf(stderr, PROG ": bad value '%s' for %s (try --help)\n", val, opt);
    return EXIT_USAGE;
}

/* More fds for -c N downloads (a socket and a file each, plus the idle pool); where
 * the hard limit has no room for them, fewer at once (with a warning) rather than
 * downloads failing with EMFILE. The concurrency to use. */
static unsigned raise_fd_limit(unsigned concurrency)
{
    struct rlimit rl;
    rlim_t want = 2 * (rlim_t)concurrency + 64;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= want)
        return concurrency;
    rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0 && getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return concurrency;
    if (rl.rlim_cur >= want)
        return concurrency;
    /* the loop, stdio and a few idle connections need some 32 of them */
    unsigned fit = rl.rlim_cur > 32 + 2 ? (unsigned)((rl.rlim_cur - 32) / 2) : 1;
    fprintf(stderr, PROG ": warning: -c %u needs %llu file descriptors and the limit is %llu "
            "(ulimit -n): %u at once\n", concurrency, (unsigned long long)want,
            (unsigned long long)rl.rlim_cur, fit);
    return fit;
}

/* SIGINT and SIGTERM arrive on a signalfd that a coroutine reads. */
static int signal_fd(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        return -1;
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

static int run_fetch(fetch_t *f, const char *backend, const char *plugin_path)
{
    iop_loop_opts_t lo = { .size = sizeof lo, .backend = backend, .plugin_path = plugin_path };
    int r = iop_loop_create(&f->loop, &lo);
    if (r < 0) {
        fprintf(stderr, PROG ": cannot start the event loop: %s\n",
                iop_last_error()[0] ? iop_last_error() : iop_strerror(r));
        return iop_app_loop_exit_status(r);
    }
    run_t run = { .f = f, .sigfd = -1 };
    run.nworkers = f->o.concurrency < f->njobs ? f->o.concurrency : (unsigned)f->njobs;
    run.workers = calloc(run.nworkers ? run.nworkers : 1, sizeof *run.workers);
    if (!run.workers) {
        fprintf(stderr, PROG ": out of memory\n");
        iop_loop_destroy(f->loop);
        return EXIT_FAILURE;
    }
    run.sigfd = signal_fd();
    pool_init(&f->pool, f->o.concurrency, HOST_IDLE_MAX);
    f->t_start = iop_update_time(f->loop);
    iop_coro_t *m;
    static const iop_coro_opts_t mopts = { .size = sizeof mopts, .name = "fetch-main" };
    r = iop_go(f->loop, main_coro, &run, &mopts, &m);
    if (r == 0)
        r = iop_join(m, NULL, 0);   /* runs the loop until every download ended */
    if (r < 0)
        fprintf(stderr, PROG ": the event loop failed: %s\n", iop_last_error());
    if (run.sigfd >= 0)
        iop_fd_close(f->loop, run.sigfd);
    free(run.workers);
    if (f->o.to_stdout)
        output_emit_ready(f);      /* else every ok line was printed already */
    progress_summary(f);
    iop_loop_destroy(f->loop);
    if (f->interrupted)
        fprintf(stderr, PROG ": interrupted\n");
    size_t ok = 0;
    for (size_t i = 0; i < f->njobs; i++)
        ok += f->jobs[i].state == JOB_OK;
    return r == 0 && ok == f->njobs ? EXIT_SUCCESS : EXIT_FAILURE;
}

int main(int argc, char **argv)
{
    iop_app_guard_stdio();
    const char *backend = NULL, *plugin_path = NULL;
    uint64_t conc = DEFAULT_CONCURRENCY, redirects = DEFAULT_MAX_REDIRECTS;
    double timeout_s = DEFAULT_TIMEOUT_S;
    fetch_opts_t o = { .dir = NULL };
    url_list_t urls = { 0 };
    const char *inputs[16];
    int ninputs = 0;
    enum { OPT_STDOUT = 256, OPT_TIMEOUT, OPT_REDIRECTS, OPT_BACKEND, OPT_PLUGIN_PATH };
    static const struct option longopts[] = {
        { "concurrency", required_argument, NULL, 'c' },
        { "output-dir", required_argument, NULL, 'o' },
        { "output", required_argument, NULL, 'O' },
        { "input", required_argument, NULL, 'i' },
        { "quiet", no_argument, NULL, 'q' },
        { "stdout", no_argument, NULL, OPT_STDOUT },
        { "timeout", required_argument, NULL, OPT_TIMEOUT },
        { "max-redirects", required_argument, NULL, OPT_REDIRECTS },
        { "backend", required_argument, NULL, OPT_BACKEND },
        { "plugin-path", required_argument, NULL, OPT_PLUGIN_PATH },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":c:o:O:i:qh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            if (iop_app_parse_u64(optarg, 1, MAX_CONCURRENCY, &conc) < 0)
                return bad_value("-c", optarg);
            break;
        case 'o':
        case 'O':
            if (ch == 'o' ? o.dir != NULL : o.out_name != NULL) {
                fprintf(stderr, PROG ": -%c given twice (one %s)\n", ch,
                        ch == 'o' ? "output directory" : "output file, for one URL");
                return EXIT_USAGE;
            }
            if (!*optarg)
                return bad_value(ch == 'o' ? "-o" : "-O", optarg);
            *(ch == 'o' ? &o.dir : &o.out_name) = optarg;
            break;
        case 'i':
            if (ninputs == (int)(sizeof inputs / sizeof inputs[0])) {
                fprintf(stderr, PROG ": too many -i options\n");
                return EXIT_USAGE;
            }
            inputs[ninputs++] = optarg;
            break;
        case 'q': o.quiet = 1; break;
        case OPT_STDOUT: o.to_stdout = 1; break;
        case OPT_TIMEOUT:
            if (iop_app_parse_seconds(optarg, 24 * 3600, &timeout_s) < 0 || timeout_s < 0.001)
                return bad_value("--timeout", optarg);
            break;
        case OPT_REDIRECTS:
            if (iop_app_parse_u64(optarg, 0, 100, &redirects) < 0)
                return bad_value("--max-redirects", optarg);
            break;
        case OPT_BACKEND: backend = optarg; break;
        case OPT_PLUGIN_PATH: plugin_path = optarg; break;
        case 'h': usage(stdout); return EXIT_SUCCESS;
        default:   /* ':' (no value) or '?' (unknown) */
            return iop_app_getopt_fail(PROG, ch, argv);
        }
    }
    int one_url = o.out_name != NULL;   /* -O, also as -O - (stdout) */
    if (o.out_name && strcmp(o.out_name, "-") == 0) {
        o.out_name = NULL;
        o.to_stdout = 1;
    }
    if ((o.out_name || o.to_stdout) && o.dir) {
        fprintf(stderr, PROG ": -o DIR does not go with -O or --stdout (try --help)\n");
        return EXIT_USAGE;
    }
    if (o.out_name && o.to_stdout) {
        fprintf(stderr, PROG ": -O FILE and --stdout exclude each other (try --help)\n");
        return EXIT_USAGE;
    }
    int status = EXIT_USAGE;
    for (int i = optind; i < argc; i++)
        if (list_add(&urls, argv[i]) < 0)
            goto out_of_memory;
    for (int i = 0; i < ninputs; i++)
        if (read_url_file(inputs[i], &urls) < 0)
            goto out;
    if (urls.n == 0) {
        fprintf(stderr, PROG ": no URL given (try --help)\n");
        goto out;
    }
    if (one_url && urls.n != 1) {
        fprintf(stderr, PROG ": -O FILE takes exactly one URL, got %zu (try --help)\n", urls.n);
        goto out;
    }
    o.concurrency = (unsigned)conc;
    o.timeout_ns = (uint64_t)(timeout_s * 1e9);
    o.max_redirects = (unsigned)redirects;
    if (!o.dir)
        o.dir = ".";

    fetch_t f = { .o = o, .njobs = urls.n, .tty = isatty(STDERR_FILENO) };
    mode_t mask = umask(0);
    umask(mask);
    f.file_mode = 0666 & ~mask;
    f.jobs = calloc(urls.n, sizeof *f.jobs);
    if (!f.jobs)
        goto out_of_memory;
    for (size_t i = 0; i < urls.n; i++)
        f.jobs[i] = (fetch_job_t){ .url = urls.v[i], .tmp_fd = -1 };
    if (output_assign_names(&f) < 0) {
        output_cleanup(&f);
        free(f.jobs);
        goto out;
    }
    signal(SIGPIPE, SIG_IGN);
    f.o.concurrency = raise_fd_limit(f.o.concurrency);
    status = run_fetch(&f, backend, plugin_path);
    output_cleanup(&f);
    free(f.jobs);
    goto out;
out_of_memory:
    fprintf(stderr, PROG ": out of memory\n");
    status = EXIT_FAILURE;
out:
    list_free(&urls);
    return status;
}
