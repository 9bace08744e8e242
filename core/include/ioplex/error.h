/* ioplex — errors. Every call returns 0 / a count, or -errno. Where a bare errno
 * would not say enough (a refused plugin, a failed probe), the call also leaves a
 * one-line message for the calling thread, read with iop_last_error(). */
#ifndef IOPLEX_ERROR_H
#define IOPLEX_ERROR_H

#include "common.h"

/* strerror for a negative (or positive) errno, never NULL. */
IOP_EXPORT const char *iop_strerror(int err);

/* The calling thread's last detailed error message ("" if none); valid until the
 * next ioplex call on this thread that fails. */
IOP_EXPORT const char *iop_last_error(void);

#endif
