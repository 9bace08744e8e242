/* A backend module for the loader tests, built once per variant from this one file.
 * The variant is picked by compile definitions:
 *   MOD_NAME "x"        the name the descriptor claims (the file is named by CMake)
 *   MOD_ABI n           abi_version to export (default IOP_BACKEND_ABI_VERSION)
 *   MOD_CAPS bits       capabilities, so a test can tell two same-named modules apart
 *   MOD_NO_DESCRIPTOR   export no descriptor at all
 *   MOD_PROBE_FAILS     probe fails with -EPERM and a reason
 *   MOD_CREATE_FAILS    create fails with -EMFILE and a reason
 *   MOD_NO_WATCH        a readiness backend that forgets watch
 *   MOD_POOL_NO_RETURN  a receive pool (buf_pool) that cannot take buffers back
 *   MOD_SHORT_DESC      a descriptor of 8 bytes (its ABI and a desc_size claiming more)
 *   MOD_LOAD_MARKER "V" sets environment variable V when loaded, so a test can
 *                       tell whether the loader opened the file at all
 * The working variant ("testnull") watches nothing and sleeps through poll: enough for
 * iop_loop_create to succeed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "ioplex/backend.h"

#ifndef MOD_ABI
#define MOD_ABI IOP_BACKEND_ABI_VERSION
#endif
#ifndef MOD_CAPS
#define MOD_CAPS 0u
#endif

#ifdef MOD_LOAD_MARKER
__attribute__((constructor)) static void mark_loaded(void) { setenv(MOD_LOAD_MARKER, "1", 1); }
#endif

#ifndef MOD_NO_DESCRIPTOR

typedef struct null_state {
    const iop_backend_host_t *host;
} null_state_t;

static int backend_probe(char *why, size_t whylen)
{
#ifdef MOD_PROBE_FAILS
    snprintf(why, whylen, "test backend: disabled here on purpose");
    return -EPERM;
#else
    (void)why;
    (void)whylen;
    return 0;
#endif
}

static int backend_create(void **state, const iop_backend_host_t *host, const iop_backend_config_t *cfg,
                          char *why, size_t whylen)
{
    (void)cfg;
#ifdef MOD_CREATE_FAILS
    (void)host;
    (void)state;
    snprintf(why, whylen, "test backend: no instance today");
    return -EMFILE;
#else
    (void)why;
    (void)whylen;
    null_state_t *st = host->alloc(sizeof *st);
    if (!st)
        return -ENOMEM;
    st->host = host;
    *state = st;
    return 0;
#endif
}

static void backend_destroy(void *state)
{
    null_state_t *st = state;
    st->host->free(st);
}

#ifndef MOD_NO_WATCH
static int backend_watch(void *state, int fd, unsigned old_mask, unsigned new_mask, void *fd_state)
{
    (void)state, (void)fd, (void)old_mask, (void)new_mask, (void)fd_state;
    return 0;
}
#endif

#ifdef MOD_POOL_NO_RETURN
static int backend_buf_pool(void *state, void *base, uint32_t count, uint32_t size)
{
    (void)state, (void)base, (void)count, (void)size;
    return 0;
}
#endif

/* Reports nothing; sleeps up to the timeout (at most 10 ms, so "forever" ends). */
static int backend_poll(void *state, iop_event_t *events, int max, int64_t timeout_ns)
{
    (void)state, (void)events, (void)max;
    if (timeout_ns < 0 || timeout_ns > 10000000)
        timeout_ns = 10000000;
    struct timespec ts = { 0, (long)timeout_ns };
    nanosleep(&ts, NULL);
    return 0;
}

IOP_BACKEND_EXPORT const iop_backend_desc_t iop_backend_descriptor = {
    .abi_version = MOD_ABI,
    .desc_size = sizeof(iop_backend_desc_t),
    .name = MOD_NAME,
    .summary = "loader test module",
    .model = IOP_MODEL_READINESS,
    .caps = MOD_CAPS,
    .probe = backend_probe,
    .create = backend_create,
    .destroy = backend_destroy,
#ifndef MOD_NO_WATCH
    .watch = backend_watch,
#endif
    .poll = backend_poll,
#ifdef MOD_POOL_NO_RETURN
    .buf_pool = backend_buf_pool,
#endif
};

#elif defined(MOD_SHORT_DESC)

/* The first two fields only: the rest would be read from whatever follows it. */
IOP_BACKEND_EXPORT const struct {
    uint32_t abi_version, desc_size;
} iop_backend_descriptor = { MOD_ABI, sizeof(iop_backend_desc_t) };

#else

/* Something exported, just not the descriptor. */
IOP_BACKEND_EXPORT const int iop_backend_something_else = 1;

#endif
