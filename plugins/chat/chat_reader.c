/* One worker's side of the room: its reader coroutine follows the log from where
 * the worker started and copies every record into the outbox of each local client
 * that had joined by then (all in log order, so every client of every worker sees
 * one order), a batch of records at a time. It waits a little for a member whose
 * backlog is near its limit (hold_for_backlog), never long: a full outbox drops
 * that member. It publishes how far it got, which slows down the writers of every
 * worker before it falls a ring behind (chat_worker_throttle). It also notices the
 * host's drain, dead workers (whose nicks it sweeps), and does the leaves that
 * cancelled connections could not do. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "chat_internal.h"

#define BATCH 256                  /* records per batch, and per turn before others run */

chat_owner_t chat_worker_owner(const chat_worker_t *w)
{
    return (chat_owner_t){ .pid = (int32_t)getpid(), .slot = (uint32_t)w->slot, .gen = w->gen,
                           .worker = (uint32_t)w->index };
}

static int leave_now(chat_worker_t *w, const char *nick, const chat_owner_t *me)
{
    chat_log_t *log = w->st->log;
    char line[CHAT_NICK_MAX + 16];
    int r = chat_log_lock(log);
    if (r < 0)
        return r;
    r = chat_names_release(w->st, nick, me);
    if (r == 0) {
        int n = snprintf(line, sizeof line, "* %s left\n", nick);
        chat_log_put(log, line, (size_t)n);
    }
    chat_log_unlock(log, r == 0);
    return r;
}

void chat_worker_leave(chat_worker_t *w, const char *nick)
{
    chat_owner_t me = chat_worker_owner(w);
    if (leave_now(w, nick, &me) == 0)
        return;
    chat_pending_t *p = iop_calloc(1, sizeof *p);
    if (!p)
        return;                  /* the nick stays until this worker ends and is swept */
    snprintf(p->nick, sizeof p->nick, "%s", nick);
    p->owner = me;
    p->next = w->pending;
    w->pending = p;
}

static void run_pending(chat_worker_t *w)
{
    while (w->pending) {
        chat_pending_t *p = w->pending;
        if (leave_now(w, p->nick, &p->owner) < 0)
            return;
        w->pending = p->next;
        iop_free(p);
    }
}

/* ---- delivery ------------------------------------------------------------------------- */

/* Hands records [first, first + n) of the batch to every member who had joined by
 * then: one piece (one send, mostly) per member, not one per record. */
static void deliver(chat_worker_t *w, uint64_t first, size_t n)
{
    if (!n)
        return;
    for (chat_client_t *c = w->clients; c; c = c->next) {
        if (c->ending || c->from_seq >= first + n)
            continue;
        size_t k = c->from_seq > first ? (size_t)(c->from_seq - first) : 0;
        /* queueing never unlinks (the controller does, later) */
        chat_client_queue(c, w->batch + w->batch_off[k], w->batch_off[n] - w->batch_off[k]);
    }
}

/* Records [from, to) were overwritten before we read them. */
static void missed(chat_worker_t *w, uint64_t from, uint64_t to)
{
    char line[80];
    for (chat_client_t *c = w->clients; c; c = c->next) {
        uint64_t first = c->from_seq > from ? c->from_seq : from;
        if (c->ending || first >= to)
            continue;
        int n = snprintf(line, sizeof line, "* missed %" PRIu64 " messages\n", to - first);
        chat_client_queue(c, line, (size_t)n);
    }
}

/* Delivers up to BATCH records; returns whether some are left. */
static int follow(chat_worker_t *w)
{
    chat_log_t *log = w->st->log;
    uint64_t head = chat_log_head(log), start = w->pos, first = w->pos;
    size_t n = 0;
    w->batch_off[0] = 0;
    while (w->pos < head && n < BATCH && w->batch_off[n] + log->line_cap <= w->batch_cap) {
        ssize_t len = head - w->pos > log->nrec ? -1
                      : chat_log_read(log, w->pos, w->batch + w->batch_off[n]);
        if (len >= 0) {
            w->batch_off[n + 1] = w->batch_off[n] + (size_t)len;
            n++;
            w->pos++;
            continue;
        }
        /* Lapped: start again half a ring behind the head, so the writers do not
         * overtake us again at once. */
        deliver(w, first, n);
        head = chat_log_head(log);
        uint64_t to = head - log->nrec / 2;
        if (to <= w->pos)
            to = w->pos + 1;
        missed(w, w->pos, to);
        w->pos = first = to;
        n = 0;
    }
    deliver(w, first, n);
    if (w->pos != start) {
        atomic_store(&log->slots[w->slot].pos, w->pos);
        iop_cond_broadcast(&w->advanced);
    }
    return w->pos < chat_log_head(log);
}

int chat_worker_wait_delivered(chat_worker_t *w, uint64_t seq)
{
    /* Unbounded, or the member's next reply could overtake its own line: the reader
     * always moves on (it holds for a slow member at most CHAT_THROTTLE_NS, and a
     * lapped record counts as passed), unless it has ended. Only this member's next
     * line waits meanwhile. */
    int r = iop_mutex_lock(&w->mu, 0);
    if (r < 0)
        return r;
    while (w->pos <= seq && (r == 0 || r == -ETIMEDOUT) && w->reader && !iop_coro_done(w->reader))
        r = iop_cond_wait(&w->advanced, &w->mu, iop_now(w->loop) + CHAT_SLICE_NS);
    iop_mutex_unlock(&w->mu);
    return r == -ECANCELED ? r : 0;
}

int chat_worker_throttle(chat_worker_t *w)
{
    chat_log_t *log = w->st->log;
    uint64_t since = 0;
    for (;;) {
        uint64_t head = chat_log_head(log);
        int lagging = -1;
        for (uint32_t i = 0; i < log->nslots && lagging < 0; i++) {
            chat_slot_t *s = &log->slots[i];
            uint64_t pos = atomic_load(&s->pos);
            if (atomic_load(&s->pid) && head - pos > log->nrec / 2 && w->stuck[i] != pos + 1)
                lagging = (int)i;
        }
        if (lagging < 0)
            return 0;
        chat_slot_t *s = &log->slots[lagging];
        uint64_t now = iop_now(w->loop);
        if (!since)
            since = now;
        /* A dead or stopped reader is not waited for (again, until it moves). */
        if (now - since >= CHAT_THROTTLE_NS || !chat_pid_alive(atomic_load(&s->pid))) {
            w->stuck[lagging] = atomic_load(&s->pos) + 1;
            continue;
        }
        int r = iop_sleep(CHAT_MS);
        if (r == -ECANCELED)
            return r;
    }
}

/* ---- pacing by the members' backlogs --------------------------------------------------- */

/* A member whose backlog the next batch could push over max_backlog holds the reader
 * (and so, through the log's flow control, the writers of every worker) until its
 * sender has brought it back under the mark: under a flood the room slows to what
 * the members' sockets take instead of dropping members that read as fast as they
 * can. At most CHAT_THROTTLE_NS at a time: a member that stays over the mark that
 * long is slower than the room, and is not waited for again until it is back under
 * (its backlog may then overflow, which drops it). 1 after a wait, 0 when nobody
 * holds the reader. */
static int hold_for_backlog(chat_worker_t *w)
{
    /* Every member over the mark starts its time now, not when the one before it is
     * done with: N members that never read hold the room CHAT_THROTTLE_NS in all,
     * not N times that. */
    uint64_t now = iop_now(w->loop), until = 0;
    chat_client_t *hold = NULL;
    for (chat_client_t *c = w->clients; c; c = c->next) {
        if (c->ending || c->pace_skip || c->out.queued <= w->pace_mark)
            continue;
        if (!c->pace_since)
            c->pace_since = now;
        if (now >= c->pace_since + CHAT_THROTTLE_NS) {
            c->pace_skip = 1;
            continue;
        }
        if (!hold) {
            hold = c;
            until = c->pace_since + CHAT_THROTTLE_NS;
        }
    }
    if (!hold)
        return 0;
    if (until > now + CHAT_SLICE_NS)
        until = now + CHAT_SLICE_NS;   /* the reader's other duties come round */
    w->held_by = hold;
    iop_sem_acquire(&w->unheld, until);   /* -ETIMEDOUT, -ECANCELED: looked at next */
    w->held_by = NULL;
    return 1;
}

void chat_worker_unhold(chat_worker_t *w, chat_client_t *c)
{
    c->pace_since = 0;
    c->pace_skip = 0;
    if (w->held_by == c) {
        w->held_by = NULL;
        iop_sem_release(&w->unheld);
    }
}

static void watch_drain(chat_worker_t *w)
{
    if (w->drain_seen || !w->draining || !*w->draining)
        return;
    w->drain_seen = 1;
    for (chat_client_t *c = w->clients; c; c = c->next) {
        if (c->ending)
            continue;
        chat_client_queue_str(c, "* server restarting\n");
        chat_client_end(c);
    }
}

static void *reader_main(void *arg)
{
    chat_worker_t *w = arg;
    chat_state_t *st = w->st;
    chat_names_sweep(st);        /* the nicks of the worker we may replace */
    uint64_t next_check = iop_now(w->loop) + CHAT_CHECK_NS;
    while (!iop_cancelled()) {
        run_pending(w);
        watch_drain(w);
        uint64_t now = iop_now(w->loop);
        if (now >= next_check) {
            if (chat_names_dead_slots(st))
                chat_names_sweep(st);
            next_check = now + CHAT_CHECK_NS;
        }
        if (hold_for_backlog(w))
            continue;
        if (follow(w)) {
            iop_yield();
            continue;
        }
        int r = chat_log_wait(st->log, w->slot, w->pos, now + CHAT_SLICE_NS);
        if (r == -ECANCELED)
            break;
        /* A wait that could not start (no memory for its timer or its fd's entry)
         * returns at once: without a yield the reader would go round for good and
         * starve every coroutine of the worker. */
        if (r < 0)
            iop_yield();
    }
    return NULL;
}

/* ---- life ------------------------------------------------------------------------------- */

/* The batch: up to BATCH records, at most half the backlog limit (a burst to a
 * member whose socket is full must not look like a slow member at once), but room
 * for two of the longest lines. */
static int batch_alloc(chat_worker_t *w, const chat_state_t *st)
{
    size_t cap = st->max_backlog / 2;
    if (cap > 65536)
        cap = 65536;
    if (cap < 2u * st->log->line_cap)
        cap = 2u * st->log->line_cap;
    w->batch_cap = cap;
    /* Over the mark, a whole batch could overflow a member's backlog. */
    w->pace_mark = st->max_backlog > cap ? st->max_backlog - cap : st->max_backlog / 2;
    w->batch = iop_malloc(cap);
    w->batch_off = iop_malloc((BATCH + 1) * sizeof *w->batch_off);
    w->stuck = iop_calloc(st->log->nslots, sizeof *w->stuck);
    return w->batch && w->batch_off && w->stuck ? 0 : -ENOMEM;
}

static void worker_free(chat_worker_t *w)
{
    if (!w)
        return;
    iop_free(w->batch);
    iop_free(w->batch_off);
    iop_free(w->stuck);
    iop_free(w);
}

int chat_worker_start(void *state, iop_loop_t *loop, int worker, char *err, size_t errlen)
{
    chat_state_t *st = state;
    if (worker < 0 || worker >= st->nworkers || st->workers[worker]) {
        snprintf(err, errlen, "chat: worker %d: %s", worker,
                 worker < 0 || worker >= st->nworkers ? "no such worker" : "already started");
        return -EINVAL;
    }
    chat_worker_t *w = iop_calloc(1, sizeof *w);
    if (!w || batch_alloc(w, st) < 0) {
        worker_free(w);
        snprintf(err, errlen, "chat: out of memory");
        return -ENOMEM;
    }
    w->st = st;
    w->loop = loop;
    w->index = worker;
    w->slot = chat_log_claim_slot(st->log, &w->gen);
    if (w->slot < 0) {
        snprintf(err, errlen, "chat: no free reader slot (%u live workers already)", st->log->nslots);
        worker_free(w);
        return -EBUSY;
    }
    w->pos = chat_log_head(st->log);
    iop_mutex_init(&w->mu);
    iop_cond_init(&w->advanced);
    iop_sem_init(&w->unheld, 0);
    static const iop_coro_opts_t opts = { .size = sizeof opts, .name = "chat-reader" };
    int r = iop_go(loop, reader_main, w, &opts, &w->reader);
    if (r < 0) {
        snprintf(err, errlen, "chat: cannot start the reader: %s", iop_last_error());
        chat_log_release_slot(st->log, w->slot);
        worker_free(w);
        return r;
    }
    st->workers[worker] = w;
    return 0;
}

/* The worker of the calling coroutine's loop; outside coroutines, the only one this
 * process runs. */
static int find_worker(chat_state_t *st)
{
    iop_coro_t *self = iop_self();
    iop_loop_t *loop = self ? iop_coro_loop(self) : NULL;
    int found = -1;
    for (int i = 0; i < st->nworkers; i++) {
        if (!st->workers[i])
            continue;
        if (loop ? st->workers[i]->loop == loop : found < 0)
            found = i;
        else if (!loop)
            return -1;           /* several, and no way to tell which */
    }
    return found;
}

void chat_worker_stop(void *state)
{
    chat_state_t *st = state;
    int i = find_worker(st);
    if (i < 0)
        return;
    chat_worker_t *w = st->workers[i];
    if (w->reader) {
        iop_cancel(w->reader);
        iop_join(w->reader, NULL, 0);
    }
    run_pending(w);
    iop_fd_forget(w->loop, st->log->slots[w->slot].efd);
    chat_log_release_slot(st->log, w->slot);
    for (chat_pending_t *p = w->pending, *next; p; p = next) {
        next = p->next;
        iop_free(p);
    }
    st->workers[i] = NULL;
    worker_free(w);
}
