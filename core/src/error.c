/* Error strings, and the per-thread detail message behind iop_last_error(). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "error_internal.h"

static _Thread_local char tl_msg[1024];

int iop__fail(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_msg, sizeof tl_msg, fmt, ap);
    va_end(ap);
    return err;
}

const char *iop_last_error(void) { return tl_msg; }

const char *iop_strerror(int err)
{
    if (err < 0)
        err = -err;
    const char *s = strerrordesc_np(err);
    return s ? s : "unknown error";
}
