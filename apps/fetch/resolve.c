#include "resolve.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <ioplex.h>

/* Shared by the waiting coroutine and the helper thread; whichever lets go last
 * frees it (the coroutine may give up at its deadline while the thread still runs). */
typedef struct resolve_job {
    atomic_int refs;
    atomic_int done;             /* the results below are written (release / acquire) */
    int efd;
    char host[256], port[8];
    struct addrinfo *res;
    int gai, sys_errno;
} resolve_job_t;

static void job_unref(resolve_job_t *j)
{
    if (atomic_fetch_sub_explicit(&j->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (j->res)
        freeaddrinfo(j->res);
    close(j->efd);
    free(j);
}

static void *resolve_thread(void *arg)
{
    resolve_job_t *j = arg;
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP,
        .ai_flags = AI_NUMERICSERV,   /* no AI_ADDRCONFIG: it hides localhost when only lo is up */
    };
    j->gai = getaddrinfo(j->host, j->port, &hints, &j->res);
    j->sys_errno = errno;
    atomic_store_explicit(&j->done, 1, memory_order_release);
    uint64_t one = 1;
    if (write(j->efd, &one, sizeof one) < 0) {
        /* cannot happen on an eventfd far from its limit; the waiter times out */
    }
    job_unref(j);
    return NULL;
}

/* An IPv4 or IPv6 literal, converted without a thread; 1 if host was one. */
static int numeric(const char *host, const char *port, struct addrinfo **out)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP,
        .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
    };
    return getaddrinfo(host, port, &hints, out) == 0;
}

static int start_thread(resolve_job_t *j)
{
    pthread_attr_t attr;
    pthread_t t;
    if (pthread_attr_init(&attr) != 0)
        return -ENOMEM;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int r = pthread_create(&t, &attr, resolve_thread, j);
    pthread_attr_destroy(&attr);
    return -r;
}

int fetch_resolve(const char *host, uint16_t port, uint64_t deadline,
                  struct addrinfo **out, char *err, size_t errlen)
{
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%u", (unsigned)port);
    if (numeric(host, portstr, out))
        return 0;
    resolve_job_t *j = calloc(1, sizeof *j);
    if (!j) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    snprintf(j->host, sizeof j->host, "%s", host);
    snprintf(j->port, sizeof j->port, "%s", portstr);
    atomic_init(&j->refs, 2);
    atomic_init(&j->done, 0);
    j->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int r = j->efd < 0 ? -errno : start_thread(j);
    if (r < 0) {
        snprintf(err, errlen, "cannot resolve '%s': %s", host, strerror(-r));
        if (j->efd >= 0)
            close(j->efd);
        free(j);
        return r;
    }
    uint64_t v;
    ssize_t n = iop_read(j->efd, &v, sizeof v, deadline);
    iop_fd_forget(iop_coro_loop(iop_self()), j->efd);   /* the last ref closes it */
    if (n >= 0 && !atomic_load_explicit(&j->done, memory_order_acquire))
        n = -EAGAIN;                   /* cannot happen: the thread writes after done */
    if (n < 0) {
        snprintf(err, errlen, "resolving '%s': %s", host,
                 n == -ETIMEDOUT ? "timed out" : iop_strerror((int)n));
        job_unref(j);
        return (int)n;
    }
    if (j->gai != 0) {
        snprintf(err, errlen, "cannot resolve '%s': %s", host,
                 j->gai == EAI_SYSTEM ? strerror(j->sys_errno) : gai_strerror(j->gai));
        /* -ENOENT is remembered for the host (the name does not exist); a failure
         * that may pass (EAI_AGAIN: no answer from the name server yet, a system
         * error) fails only this URL, and the next one asks again. */
        int passing = j->gai == EAI_AGAIN || j->gai == EAI_SYSTEM || j->gai == EAI_MEMORY;
        job_unref(j);
        return passing ? -EAGAIN : -ENOENT;
    }
    *out = j->res;
    j->res = NULL;
    job_unref(j);
    return 0;
}
