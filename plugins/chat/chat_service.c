/* The chat service: its descriptor, options, and the state made once per host
 * (before workers fork): the broadcast log and the nick table in shared memory.
 * A session, not request/response: no IOP_SERVICE_DRAIN_IDLE; at a drain every
 * client is told "* server restarting" and let go (chat_reader.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "chat_internal.h"

#define DEFAULT_MAX_LINE 1024
#define DEFAULT_MAX_BACKLOG (256u * 1024)
#define DEFAULT_RING 1024
#define DEFAULT_MAX_NICKS 4096

static int apply_opt(chat_state_t *st, const iop_service_opt_t *o, char *err, size_t errlen)
{
    long long x;
    int r;
    if (strcmp(o->key, "max_line") == 0) {
        /* At least "/nick " and the longest nick, which is a line too. */
        if ((r = iop_service_opt_number("chat", o, CHAT_MIN_LINE, 65536, &x, err, errlen)) == 0)
            st->max_line = (uint32_t)x;
    } else if (strcmp(o->key, "max_backlog") == 0) {
        if ((r = iop_service_opt_number("chat", o, 1024, 1ll << 30, &x, err, errlen)) == 0)
            st->max_backlog = (size_t)x;
    } else if (strcmp(o->key, "ring") == 0) {
        if ((r = iop_service_opt_number("chat", o, 16, 1 << 20, &x, err, errlen)) == 0 && (x & (x - 1))) {
            snprintf(err, errlen, "chat: ring=%s: want a power of two", o->value);
            r = -EINVAL;
        }
        if (r == 0)
            st->ring = (uint32_t)x;
    } else if (strcmp(o->key, "sndbuf") == 0) {
        if ((r = iop_service_opt_number("chat", o, 0, 1 << 30, &x, err, errlen)) == 0)
            st->sndbuf = (int)x;
    } else if (strcmp(o->key, "max_nicks") == 0) {
        if ((r = iop_service_opt_number("chat", o, 1, 1 << 20, &x, err, errlen)) == 0)
            st->max_nicks = (uint32_t)x;
    } else {
        snprintf(err, errlen, "chat: unknown option '%s' (known: max_line, max_backlog, ring, max_nicks, sndbuf)",
                 o->key);
        r = -EINVAL;
    }
    return r;
}

static void chat_destroy(void *state)
{
    chat_state_t *st = state;
    if (!st)
        return;
    if (st->names)
        iop_shdict_free(st->names);
    chat_log_destroy(st->log);
    iop_free(st->workers);
    iop_free(st);
}

static int chat_create(void **state, const iop_service_cfg_t *cfg, char *err, size_t errlen)
{
    chat_state_t *st = iop_calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "chat: out of memory");
        return -ENOMEM;
    }
    st->max_line = DEFAULT_MAX_LINE;
    st->max_backlog = DEFAULT_MAX_BACKLOG;
    st->ring = DEFAULT_RING;
    st->max_nicks = DEFAULT_MAX_NICKS;
    st->nworkers = cfg->nworkers > 0 ? cfg->nworkers : 1;
    int r = 0;
    for (size_t i = 0; i < cfg->nopts && r == 0; i++)
        r = apply_opt(st, &cfg->opts[i], err, errlen);
    if (r == 0 && st->max_backlog < 2u * (st->max_line + 64)) {
        snprintf(err, errlen, "chat: max_backlog=%zu is less than two lines of max_line=%u",
                 st->max_backlog, st->max_line);
        r = -EINVAL;
    }
    if (r == 0 && !(st->workers = iop_calloc((size_t)st->nworkers, sizeof *st->workers))) {
        snprintf(err, errlen, "chat: out of memory");
        r = -ENOMEM;
    }
    /* A line in the log: "<" nick "> " text "\n". Reader slots (an eventfd each):
     * four generations of every worker (a rolling restart runs a new worker next
     * to the old one, and SIGHUPs faster than drains pile up old ones) and some
     * spare. A worker that finds none free fails to start; a rolling restart then
     * leaves the old one serving. */
    uint32_t line_cap = st->max_line + CHAT_NICK_MAX + 4;
    if (r == 0)
        r = chat_log_create(&st->log, st->ring, line_cap, 4u * (uint32_t)st->nworkers + 2, err, errlen);
    if (r == 0)
        r = chat_names_create(st, err, errlen);
    if (r < 0) {
        chat_destroy(st);
        return r;
    }
    *state = st;
    return 0;
}

IOP_SERVICE_EXPORT const iop_service_desc_t iop_service_descriptor = {
    .abi_version = IOP_SERVICE_ABI_VERSION,
    .desc_size = sizeof(iop_service_desc_t),
    .name = "chat",
    .summary = "a line-based chat room shared by every worker (/nick NAME, /who, /quit)",
    .options_help =
        "max_line=N            longest line a client may send (default 1024)\n"
        "max_backlog=BYTES     unsent bytes a slow client may have before it is dropped (default 262144)\n"
        "ring=N                messages kept in the shared log, a power of two (default 1024)\n"
        "max_nicks=N           people in the room at most (default 4096)\n"
        "sndbuf=BYTES          kernel send buffer per connection (default: the kernel's; smaller finds slow clients sooner)\n",
    .create = chat_create,
    .worker_start = chat_worker_start,
    .serve = chat_serve,
    .worker_stop = chat_worker_stop,
    .destroy = chat_destroy,
};
