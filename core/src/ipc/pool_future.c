/* Futures of the process pool: the result of one task, owned by the caller, filled
 * by the pool. A future dropped before it is done stays with the pool, which frees
 * it when the task ends (or, queued, when its turn comes). */
#include <errno.h>
#include <string.h>
#include "pool_internal.h"

static void future_free(iop_future_t *f)
{
    iop_free(f->arg);
    iop_free(f->result);
    iop_free(f->error);
    iop_free(f);
}

void iop__future_reclaim(iop_future_t *f)
{
    if (f->abandoned && f->state == IOP__F_DONE && !f->pinned)
        future_free(f);
}

void iop__future_complete(iop_future_t *f, int res, const char *msg, size_t msg_len,
                          const void *data, size_t len)
{
    if (f->state == IOP__F_DONE)
        return;
    if (!f->pinned) {              /* else being sent: the sender frees it */
        iop_free(f->arg);
        f->arg = NULL;
    }
    if (msg && msg_len && (f->error = iop_malloc(msg_len + 1)) != NULL) {
        memcpy(f->error, msg, msg_len);
        f->error[msg_len] = '\0';
    }
    if (data && len) {
        if ((f->result = iop_malloc(len)) != NULL) {
            memcpy(f->result, data, len);
            f->result_len = len;
        } else if (res >= 0) {
            res = -ENOMEM;
        }
    }
    f->res = res;
    f->state = IOP__F_DONE;
    if (f->abandoned) {
        iop__future_reclaim(f);
        return;
    }
    iop_wg_done(&f->wg);           /* may run a waiting coroutine right here */
}

int iop_future_done(const iop_future_t *f) { return f->state == IOP__F_DONE; }
pid_t iop_future_worker(const iop_future_t *f) { return f->worker; }

const void *iop_future_result(const iop_future_t *f, size_t *len)
{
    if (len)
        *len = f->state == IOP__F_DONE ? f->result_len : 0;
    return f->state == IOP__F_DONE ? f->result : NULL;
}

const char *iop_future_error(const iop_future_t *f)
{
    if (f->state != IOP__F_DONE || f->res >= 0)
        return "";
    return f->error ? f->error : iop_strerror(f->res);
}

void iop_future_free(iop_future_t *f)
{
    if (!f)
        return;
    if (f->state != IOP__F_DONE || f->pinned) {
        f->abandoned = 1;          /* the pool frees it when done with it */
        return;
    }
    future_free(f);
}
