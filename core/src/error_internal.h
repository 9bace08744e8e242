/* Internal: setting the thread's detailed error message. */
#ifndef IOP_ERROR_INTERNAL_H
#define IOP_ERROR_INTERNAL_H

#include "ioplex/error.h"

/* Records a one-line message for iop_last_error() and returns err (a -errno). */
int iop__fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
