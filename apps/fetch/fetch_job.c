/* One URL: request, response head, redirects, body to the output; a request on a
 * reused connection that the server closed meanwhile is retried once on a fresh
 * one. Every wait is bounded by --timeout: connect and the response head together,
 * then each read of the body. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "fetch.h"
#include "http_resp.h"
#include "url.h"

#define DISCARD_MAX (256 * 1024)     /* a redirect or error body longer than this:
                                      * close the connection instead of reading it */

/* Says why the job failed; returns r. */
static int job_fail(fetch_job_t *j, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int job_fail(fetch_job_t *j, int r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->err, sizeof j->err, fmt, ap);
    va_end(ap);
    return r;
}

static const char *io_error(ssize_t r)
{
    return r == -ETIMEDOUT ? "timed out" : r == -ECANCELED ? "interrupted" : iop_strerror((int)r);
}

static uint64_t deadline_from_now(const fetch_t *f)
{
    return iop_now(f->loop) + f->o.timeout_ns;
}

static int send_request(fetch_conn_t *c, const fetch_url_t *u, uint64_t deadline, fetch_job_t *j)
{
    char host[URL_HOST_MAX + 16];
    url_host_header(u, host, sizeof host);
    size_t cap = strlen(u->target) + strlen(host) + 160;
    char *req = malloc(cap);
    if (!req)
        return job_fail(j, -ENOMEM, "out of memory");
    size_t len = (size_t)snprintf(req, cap,
        "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: " PROG "/" IOPLEX_VERSION "\r\n"
        "Accept: */*\r\nAccept-Encoding: identity\r\n\r\n", u->target, host);
    ssize_t r = 0;
    for (size_t sent = 0; sent < len; sent += (size_t)r) {
        r = iop_send(c->fd, req + sent, len - sent, MSG_NOSIGNAL, deadline);
        if (r < 0)
            break;
    }
    free(req);
    return r < 0 ? job_fail(j, (int)r, "sending the request: %s", io_error(r)) : 0;
}

/* Receives more into c's buffer. The bytes read, 0 at end of stream, or -errno. */
static ssize_t conn_fill(fetch_conn_t *c, uint64_t deadline)
{
    if (c->rpos > 0) {
        memmove(c->buf, c->buf + c->rpos, c->wpos - c->rpos);
        c->wpos -= c->rpos;
        c->rpos = 0;
    }
    if (c->wpos == CONN_BUF_SIZE)
        return -ENOBUFS;             /* cannot happen: the parser bounds its lines */
    ssize_t n = iop_recv(c->fd, c->buf + c->wpos, CONN_BUF_SIZE - c->wpos, 0, deadline);
    if (n > 0)
        c->wpos += (size_t)n;
    return n;
}

/* Reads up to the end of the (final) response head. 0, -EPROTO (malformed),
 * -ECONNRESET (closed before any byte came: *silent = 1) or another -errno. */
static int read_head(fetch_conn_t *c, http_resp_t *resp, uint64_t deadline, int *silent,
                     fetch_job_t *j)
{
    uint64_t received = 0;
    *silent = 0;
    for (;;) {
        size_t used;
        int r = http_resp_head(resp, c->buf + c->rpos, c->wpos - c->rpos, &used);
        c->rpos += used;
        if (r == 1)
            return 0;
        if (r < 0)
            return job_fail(j, -EPROTO, "bad response: %s", resp->err);
        ssize_t n = conn_fill(c, deadline);
        if (n > 0) {
            received += (uint64_t)n;
            continue;
        }
        *silent = received == 0 && (n == 0 || n == -ECONNRESET);
        if (n < 0)
            return job_fail(j, (int)n, "waiting for the response head: %s", io_error(n));
        return job_fail(j, -ECONNRESET, "the server closed the connection %s",
                        received ? "inside the response head" : "without a response");
    }
}

/* Sends the request and reads the head, retrying once on a fresh connection when
 * a reused one turns out closed. On success *out is the connection. */
static int exchange(fetch_t *f, fetch_job_t *j, const fetch_url_t *u, http_resp_t *resp,
                    fetch_conn_t **out)
{
    for (int attempt = 0;; attempt++) {
        uint64_t deadline = deadline_from_now(f);
        fetch_conn_t *c;
        int reused, silent = 0;
        int r = pool_get(&f->pool, u, attempt > 0, deadline, &c, &reused, j->err, sizeof j->err);
        if (r < 0)
            return r;
        http_resp_init(resp, 0);
        r = send_request(c, u, deadline, j);
        if (r == -EPIPE || r == -ECONNRESET)
            silent = 1;
        if (r == 0)
            r = read_head(c, resp, deadline, &silent, j);
        if (r == 0) {
            c->requests++;
            *out = c;
            return 0;
        }
        pool_discard(c);
        http_resp_free(resp);
        if (!(reused && silent && attempt == 0))
            return r;
        j->err[0] = '\0';            /* the server dropped an idle connection: again */
    }
}

/* Reads the body through; each span goes to the output unless discard. 0 when it
 * ended (*at_eof if by the end of the stream), -EFBIG when a discarded body is too
 * long to bother, or -errno with j->err. */
static int read_body(fetch_t *f, fetch_job_t *j, fetch_conn_t *c, http_resp_t *resp,
                     int discard, int *at_eof)
{
    *at_eof = 0;
    for (;;) {
        size_t used, dlen;
        const char *data;
        int r = http_resp_body(resp, c->buf + c->rpos, c->wpos - c->rpos, &used, &data, &dlen);
        c->rpos += used;
        if (dlen && !discard && output_write(f, j, data, dlen) < 0)
            return -EIO;
        if (r == 1)
            return 0;
        if (r < 0)
            return job_fail(j, -EPROTO, "bad response body: %s", resp->err);
        if (used > 0)
            continue;
        if (discard && resp->body_bytes > DISCARD_MAX)
            return -EFBIG;
        ssize_t n = conn_fill(c, deadline_from_now(f));
        if (n == 0) {
            *at_eof = 1;
            if (http_resp_eof(resp) == 1)
                return 0;
            return job_fail(j, -EPROTO, "%s", resp->err);
        }
        if (n < 0)
            return job_fail(j, (int)n, "receiving the body after %llu bytes: %s",
                            (unsigned long long)resp->body_bytes, io_error(n));
    }
}

/* The response is over: the connection goes back to the pool if it can carry
 * another request, else it is closed. */
static void release(fetch_t *f, fetch_conn_t *c, const http_resp_t *resp, int body_ok, int at_eof)
{
    if (body_ok && !at_eof && resp->keep_alive)
        pool_put(&f->pool, c);
    else
        pool_discard(c);
}

/* Reads and drops a body we do not keep (a redirect's, an error's). */
static void skip_body(fetch_t *f, fetch_job_t *j, fetch_conn_t *c, http_resp_t *resp)
{
    int at_eof = 0, r = -1;
    if (resp->body != HTTP_BODY_CLOSE) {
        char saved[sizeof j->err];
        memcpy(saved, j->err, sizeof saved);
        r = read_body(f, j, c, resp, 1, &at_eof);
        memcpy(j->err, saved, sizeof saved);   /* a failure here is not the job's */
    }
    release(f, c, resp, r == 0, at_eof);
}

static int is_redirect(int status)
{
    return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

/* Fetches url (the job's, or a redirect target); 1 = follow *next, 0 = done,
 * -1 = failed. */
static int fetch_once(fetch_t *f, fetch_job_t *j, const char *url, char **next)
{
    fetch_url_t u;
    char why[160];
    if (url_parse(url, &u, why, sizeof why) < 0) {
        if (j->redirects)
            return job_fail(j, -1, "redirected to '%.120s': %s", url, why);
        return job_fail(j, -1, "%s", why);
    }
    http_resp_t resp;
    fetch_conn_t *c = NULL;
    int r = exchange(f, j, &u, &resp, &c);
    url_free(&u);
    if (r < 0)
        return -1;
    j->status = resp.status;
    if (is_redirect(resp.status)) {
        if (!resp.location)
            r = job_fail(j, -1, "HTTP %d %s without a Location header", resp.status, resp.reason);
        else if (j->redirects >= f->o.max_redirects)
            r = job_fail(j, -1, "too many redirects (more than %u)", f->o.max_redirects);
        else if (!(*next = url_resolve(url, resp.location)))
            r = job_fail(j, -1, "cannot follow the redirect to '%.120s'", resp.location);
        else
            r = 1;
        skip_body(f, j, c, &resp);
        http_resp_free(&resp);
        return r;
    }
    if (resp.status >= 300) {    /* 4xx, 5xx, and a 3xx with no body to save (304, 300) */
        job_fail(j, -1, "HTTP %d %s", resp.status, resp.reason);
        skip_body(f, j, c, &resp);
        http_resp_free(&resp);
        return -1;
    }
    int at_eof = 0;
    r = output_open(f, j);
    if (r == 0)
        r = read_body(f, j, c, &resp, 0, &at_eof);
    release(f, c, &resp, r == 0, at_eof);
    http_resp_free(&resp);
    if (r == 0)
        r = output_commit(f, j);
    if (r < 0) {
        output_abort(f, j);
        return -1;
    }
    return 0;
}

void fetch_job_run(fetch_t *f, fetch_job_t *j)
{
    j->state = JOB_RUNNING;
    j->t_start = iop_update_time(f->loop);
    char *url = strdup(j->url);
    int r = url ? 1 : job_fail(j, -1, "out of memory");
    while (r == 1) {
        char *next = NULL;
        r = fetch_once(f, j, url, &next);
        if (r == 1) {
            j->redirects++;
            free(url);
            url = next;
        }
    }
    free(url);
    if (r < 0 && iop_cancelled())
        snprintf(j->err, sizeof j->err, "interrupted");
    j->state = r == 0 ? JOB_OK : JOB_FAILED;
    j->t_end = iop_update_time(f->loop);
}
