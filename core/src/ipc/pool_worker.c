/* The worker side of the pool, in the forked child: run the initializer, say READY,
 * then run tasks one at a time until told to QUIT or the pool's end goes away.
 * The child leaves with _exit: the parent's atexit handlers and stdio buffers are
 * the parent's, not ours to run or flush. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>
#include "pool_internal.h"
#include "sanitizer_internal.h"

int iop_pool_out_set(iop_pool_out_t *out, const void *data, size_t len)
{
    void *d = iop_pool_out_alloc(out, len);
    if (!d)
        return -ENOMEM;
    if (len)
        memcpy(d, data, len);
    return 0;
}

void *iop_pool_out_alloc(iop_pool_out_t *out, size_t len)
{
    iop_free(out->data);
    out->data = iop_malloc(len ? len : 1);
    out->len = out->data ? len : 0;
    return out->data;
}

void iop_pool_out_error(iop_pool_out_t *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->msg, sizeof out->msg, fmt, ap);
    va_end(ap);
}

static void out_reset(iop_pool_out_t *out)
{
    iop_free(out->data);
    out->data = NULL;
    out->len = 0;
    out->msg[0] = '\0';
}

/* One message to the pool: header, message text, then the result on success. */
static int report(iop_ppipe_t *end, uint32_t type, int status, uint64_t id, const iop_pool_out_t *out)
{
    size_t mlen = strnlen(out->msg, sizeof out->msg);
    iop__pool_result_hdr_t h = { .type = type, .status = status, .id = id, .msg_len = (uint32_t)mlen };
    struct iovec v[3] = {
        { &h, sizeof h },
        { (void *)out->msg, mlen },
        { out->data, status >= 0 ? out->len : 0 },
    };
    return iop_ppipe_sendv(end, v, 3, NULL, 0, 0) < 0 ? -1 : 0;
}

/* Runs tasks until the pool says quit or goes; returns the receive buffer. */
static uint8_t *serve_tasks(size_t max_msg, iop_ppipe_t *end, iop_pool_out_t *out)
{
    size_t cap = 64 * 1024;
    uint8_t *buf = iop_malloc(cap);
    while (buf) {
        ssize_t n = iop_ppipe_recv(end, buf, cap, 0);
        if (n == -EMSGSIZE) {
            ssize_t need = iop_ppipe_peek(end, NULL, 0);
            if (need <= (ssize_t)cap)
                return buf;        /* not something the pool sends */
            iop_free(buf);
            buf = iop_malloc((size_t)need);
            cap = (size_t)need;
            continue;
        }
        iop__pool_task_hdr_t h;
        if (n < (ssize_t)sizeof h)
            return buf;            /* -EPIPE: the pool is gone */
        memcpy(&h, buf, sizeof h);
        if (h.type != IOP__PM_TASK)
            return buf;            /* QUIT */
        iop_pool_fn fn;
        memcpy(&fn, &h.fn, sizeof fn);
        out_reset(out);
        int r = fn(buf + sizeof h, (size_t)n - sizeof h, out);
        if (r >= 0 && out->len > max_msg) {
            iop_pool_out_error(out, "pool: the task's result (%zu bytes) is above max_msg (%zu)",
                               out->len, max_msg);
            r = -EMSGSIZE;
        }
        if (report(end, IOP__PM_RESULT, r, h.id, out) < 0)
            return buf;
    }
    return NULL;
}

/* What the worker holds is freed before it leaves, so that the leak check of a
 * sanitizer build (iop__exit_checked) sees only what tasks lost. */
static void run_tasks(size_t max_msg, iop_ppipe_t *end, iop_pool_out_t *out)
{
    iop_free(serve_tasks(max_msg, end, out));
    out_reset(out);
}

_Noreturn void iop__pool_worker_main(iop_pool_t *p, uint32_t slot, iop_ppipe_t *end, pid_t parent)
{
    /* Die with the pool's thread; if it already died, the signal would never come. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        iop__exit_checked(0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    iop__pool_drop_copy(p, slot);   /* only our own end is ours */
    size_t max_msg = p->opts.max_msg;   /* p is a copy a task may free */
    iop_pool_out_t out = { 0 };
    if (p->opts.initializer) {
        int r = p->opts.initializer(p->opts.init_arg, &out);
        if (r < 0) {
            report(end, IOP__PM_INIT_FAILED, r, 0, &out);
            out_reset(&out);
            iop__exit_checked(1);
        }
        out_reset(&out);
    }
    if (report(end, IOP__PM_READY, 0, 0, &out) == 0)
        run_tasks(max_msg, end, &out);
    iop__exit_checked(0);
}
