/* Nicks: a shared dict nick -> owner, seen by every worker.
 *
 * An owner is a reader slot of the log, that slot's generation and the pid that
 * claimed it. It is alive while the slot still has that pid and generation and the
 * process exists: a worker killed with -9 leaves its nicks behind, but they count
 * as free at once (a claim takes them over), and the next sweep (by the worker
 * that replaces it, or by any reader within a second) deletes them and announces
 * that their owners left. Every change of the table happens with the log lock
 * held, so a claim, a release and a sweep never interleave, and the announcement
 * of a join or leave sits in the log at the very point the table changed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "chat_internal.h"

int chat_nick_valid(const char *nick, size_t len)
{
    if (len < 1 || len > CHAT_NICK_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = nick[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

int chat_names_create(chat_state_t *st, char *err, size_t errlen)
{
    iop_shdict_opts_t o = {
        .size = sizeof o, .max_entries = st->max_nicks, .max_key = CHAT_NICK_MAX,
        .max_value = sizeof(chat_owner_t), .chunk_size = 64,
    };
    int r = iop_shdict_create(&st->names, &o);
    if (r < 0)
        snprintf(err, errlen, "chat: the nick table: %s", iop_last_error());
    return r;
}

/* Which slots belong to a live process now: one kill(0) per slot, not per nick. */
static unsigned char *slots_alive(const chat_log_t *log)
{
    unsigned char *alive = iop_calloc(log->nslots, 1);
    if (!alive)
        return NULL;
    for (uint32_t i = 0; i < log->nslots; i++)
        alive[i] = (unsigned char)chat_pid_alive(atomic_load(&((chat_log_t *)log)->slots[i].pid));
    return alive;
}

static int owner_alive(const chat_log_t *log, const unsigned char *alive, const void *val, size_t len)
{
    chat_owner_t o;
    if (len != sizeof o)
        return 0;
    memcpy(&o, val, sizeof o);
    if (o.slot >= log->nslots)
        return 0;
    chat_slot_t *s = &((chat_log_t *)log)->slots[o.slot];
    if (atomic_load(&s->pid) != o.pid || atomic_load(&s->gen) != o.gen)
        return 0;
    return alive ? alive[o.slot] : chat_pid_alive(o.pid);
}

int chat_names_dead_slots(chat_state_t *st)
{
    for (uint32_t i = 0; i < st->log->nslots; i++) {
        int32_t p = atomic_load(&st->log->slots[i].pid);
        if (p && !chat_pid_alive(p))
            return 1;
    }
    return 0;
}

/* ---- claim and release ------------------------------------------------------------------- */

typedef struct claim {
    const chat_log_t *log;
    const chat_owner_t *me;
    int stale;
} claim_t;

static ssize_t claim_fn(const void *old, ssize_t old_len, void *out, size_t cap, void *arg)
{
    claim_t *c = arg;
    if (old) {
        if (owner_alive(c->log, NULL, old, (size_t)old_len))
            return -EEXIST;
        c->stale = 1;
    }
    if (cap < sizeof *c->me)
        return -EMSGSIZE;
    memcpy(out, c->me, sizeof *c->me);
    return (ssize_t)sizeof *c->me;
}

int chat_names_claim(chat_state_t *st, const char *nick, const chat_owner_t *me, int *stale)
{
    claim_t c = { .log = st->log, .me = me };
    ssize_t r = iop_shdict_update(st->names, nick, claim_fn, &c);
    *stale = c.stale;
    return r < 0 ? (int)r : 0;
}

int chat_names_release(chat_state_t *st, const char *nick, const chat_owner_t *me)
{
    chat_owner_t o;
    ssize_t n = iop_shdict_get(st->names, nick, &o, sizeof o);
    if (n == -ENOENT || (n >= 0 && (n != (ssize_t)sizeof o || memcmp(&o, me, sizeof o) != 0)))
        return 0;                /* not ours (any more) */
    if (n < 0)
        return (int)n;
    int r = iop_shdict_delete(st->names, nick);
    return r == -ENOENT ? 0 : r;
}

/* ---- walking the table -------------------------------------------------------------------- */

typedef struct nick_list {
    const chat_log_t *log;
    const unsigned char *alive;
    int want_alive;                /* 1: live owners (/who), 0: dead ones (sweep) */
    char (*names)[CHAT_NICK_MAX + 1];
    size_t n, cap;
} nick_list_t;

static int collect(const char *key, const void *val, size_t len, void *arg)
{
    nick_list_t *l = arg;
    if (owner_alive(l->log, l->alive, val, len) != l->want_alive)
        return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        void *p = iop_realloc(l->names, cap * sizeof *l->names);
        if (!p)
            return -ENOMEM;
        l->names = p;
        l->cap = cap;
    }
    snprintf(l->names[l->n++], sizeof *l->names, "%s", key);
    return 0;
}

/* The nicks whose owners are (want_alive) or are not alive in the snapshot alive. */
static int list_nicks(chat_state_t *st, int want_alive, const unsigned char *alive, nick_list_t *l)
{
    memset(l, 0, sizeof *l);
    l->log = st->log;
    l->want_alive = want_alive;
    l->alive = alive;
    int r = iop_shdict_foreach(st->names, collect, l);
    if (r < 0) {
        iop_free(l->names);
        l->names = NULL;
    }
    return r;
}

static int by_name(const void *a, const void *b) { return strcmp(a, b); }

char *chat_names_who(chat_state_t *st, size_t *len)
{
    nick_list_t l;
    unsigned char *alive = slots_alive(st->log);
    int r = alive ? list_nicks(st, 1, alive, &l) : -ENOMEM;
    iop_free(alive);
    if (r < 0)
        return NULL;
    qsort(l.names, l.n, sizeof *l.names, by_name);
    size_t cap = 64 + l.n * (CHAT_NICK_MAX + 1);
    char *line = iop_malloc(cap);
    if (line) {
        size_t off = (size_t)snprintf(line, cap, "* in the room (%zu):", l.n);
        for (size_t i = 0; i < l.n; i++)
            off += (size_t)snprintf(line + off, cap - off, " %s", l.names[i]);
        off += (size_t)snprintf(line + off, cap - off, "\n");
        *len = off;
    }
    iop_free(l.names);
    return line;
}

int chat_names_sweep(chat_state_t *st)
{
    chat_log_t *log = st->log;
    int r = chat_log_lock(log);
    if (r < 0)
        return r;
    unsigned char *alive = slots_alive(log);
    nick_list_t l;
    r = alive ? list_nicks(st, 0, alive, &l) : -ENOMEM;
    if (r == 0) {
        char line[CHAT_NICK_MAX + 16];
        for (size_t i = 0; i < l.n; i++) {
            iop_shdict_delete(st->names, l.names[i]);
            int n = snprintf(line, sizeof line, "* %s left\n", l.names[i]);
            chat_log_put(log, line, (size_t)n);
        }
        /* The dead workers' slots are free again (their nicks are gone). */
        for (uint32_t i = 0; i < log->nslots; i++) {
            int32_t p = atomic_load(&log->slots[i].pid);
            if (p && !alive[i] && !chat_pid_alive(p)) {   /* not reclaimed since */
                atomic_store(&log->slots[i].sleeping, 0);
                atomic_compare_exchange_strong(&log->slots[i].pid, &p, 0);
            }
        }
        chat_log_unlock(log, l.n > 0);
        iop_free(l.names);
    } else {
        chat_log_unlock(log, 0);
    }
    iop_free(alive);
    return r;
}
