/* What the user sees on stderr: on a terminal one progress line redrawn at most 10
 * times a second (failures printed above it); otherwise one plain line per
 * finished URL. At the end a table of every URL and a totals line. --quiet keeps
 * only the failure lines. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "fetch.h"

#define REDRAW_NS 100000000ull      /* 10 times a second at most */

static uint64_t clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void format_bytes(uint64_t n, char *buf, size_t len)
{
    static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%llu B", (unsigned long long)n);
    else
        snprintf(buf, len, "%.1f %s", v, unit[u]);
}

static void format_rate(uint64_t bytes, uint64_t ns, char *buf, size_t len)
{
    char b[24];
    uint64_t per_s = ns ? (uint64_t)((double)bytes * 1e9 / (double)ns) : 0;
    format_bytes(per_s, b, sizeof b);
    snprintf(buf, len, "%s/s", b);
}

static void clear_bar(fetch_t *f)
{
    if (f->bar_shown)
        fputs("\r\033[K", stderr);
    f->bar_shown = 0;
}

void progress_redraw(fetch_t *f, int force)
{
    if (!f->tty || f->o.quiet)
        return;
    uint64_t now = clock_ns();
    if (!force && f->bar_shown && now - f->bar_drawn_at < REDRAW_NS)
        return;
    char bytes[32], rate[32];
    format_bytes(f->bytes, bytes, sizeof bytes);
    format_rate(f->bytes, now - f->t_start, rate, sizeof rate);
    fprintf(stderr, "\r\033[K" PROG ": %zu/%zu URLs  %zu active  %zu failed  %s  %s",
            f->finished, f->njobs, f->active, f->failed, bytes, rate);
    f->bar_shown = 1;
    f->bar_drawn_at = now;
}

static double seconds(const fetch_job_t *j)
{
    return j->t_end > j->t_start ? (double)(j->t_end - j->t_start) / 1e9 : 0.0;
}

/* Text a server chose (a status line, a header, a Location quoted in an error) is
 * printed with its control characters as '?': an ESC sequence must not reach the
 * terminal. */
static void put_clean(const char *s)
{
    for (; *s; s++)
        fputc((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s, stderr);
}

void progress_job_done(fetch_t *f, const fetch_job_t *j)
{
    int failed = j->state != JOB_OK;
    if (!failed && (f->o.quiet || f->tty))
        return;                      /* the bar shows it */
    clear_bar(f);
    if (failed) {
        fprintf(stderr, PROG ": FAILED ");
        put_clean(j->url);
        fprintf(stderr, ": ");
        put_clean(j->err);
        fputc('\n', stderr);
    } else {
        fprintf(stderr, PROG ": ok %d %llu bytes %.2f s ", j->status, (unsigned long long)j->bytes,
                seconds(j));
        put_clean(j->url);
        fprintf(stderr, " -> ");
        put_clean(j->path ? j->path : "stdout");
        fputc('\n', stderr);
    }
    progress_redraw(f, 1);
}

void progress_summary(fetch_t *f)
{
    clear_bar(f);
    if (f->o.quiet)
        return;
    size_t ok = 0, failed = 0, skipped = 0;
    fprintf(stderr, "\n%6s %12s %9s  %-7s %s\n", "status", "bytes", "time", "result", "url");
    for (size_t i = 0; i < f->njobs; i++) {
        const fetch_job_t *j = &f->jobs[i];
        char status[8] = "-";
        if (j->status)
            snprintf(status, sizeof status, "%d", j->status);
        const char *result = j->state == JOB_OK ? "ok" : j->state == JOB_FAILED ? "FAILED" : "skipped";
        ok += j->state == JOB_OK;
        failed += j->state == JOB_FAILED;
        skipped += j->state != JOB_OK && j->state != JOB_FAILED;
        fprintf(stderr, "%6s %12llu %8.2fs  %-7s ", status, (unsigned long long)j->bytes,
                seconds(j), result);
        put_clean(j->url);
        if (j->state == JOB_OK && j->path) {
            fprintf(stderr, " -> ");
            put_clean(j->path);
        } else if (j->state == JOB_FAILED) {
            fprintf(stderr, " (");
            put_clean(j->err);
            fputc(')', stderr);
        }
        fputc('\n', stderr);
    }
    uint64_t ns = clock_ns() - f->t_start;
    char bytes[32], rate[32];
    format_bytes(f->bytes, bytes, sizeof bytes);
    format_rate(f->bytes, ns, rate, sizeof rate);
    fprintf(stderr, "total: %zu URLs, %zu ok, %zu failed", f->njobs, ok, failed);
    if (skipped)
        fprintf(stderr, ", %zu not started", skipped);
    fprintf(stderr, "; %s in %.2f s (%s); %llu connections opened, %llu requests on reused ones\n",
            bytes, (double)ns / 1e9, rate, (unsigned long long)f->pool.opened,
            (unsigned long long)f->pool.reused);
}
