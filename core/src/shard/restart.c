/* What happens to a worker slot over time: a process becomes ready, dies (a crash
 * unless it was asked to drain: respawn after a doubling backoff, stop everything
 * past the crash-loop limit), times out; and the rolling restart of SIGHUP, which
 * walks the slots in order: start a new process for the slot, wait for its ready
 * message, then drain the old one. The old and the new process share the slot's
 * listener, so no connection is refused or reset meanwhile. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include "shard_internal.h"

static double secs(uint64_t ns) { return (double)ns / (double)IOP__NS; }

void iop__shard_on_ready(iop__shard_sup_t *s, iop__shard_proc_t *p)
{
    if (p->state != IOP__P_STARTING)
        return;                    /* draining already: it serves no one new */
    p->state = IOP__P_READY;
    s->ever_ready = 1;
    iop__shard_slot_t *sl = &s->slots[p->slot];
    if (p->role == IOP__R_NEXT) {
        iop__shard_proc_t *old = sl->cur;
        sl->next = NULL;
        sl->cur = p;
        p->role = IOP__R_CUR;
        if (old) {
            old->role = IOP__R_OLD;
            iop__shard_drain_proc(s, old, iop__ns_after(iop__shard_now(), s->o.drain_timeout_ns));
            iop__shard_log(s, IOP_SHARD_INFO, "worker %u: pid %d ready, draining pid %d",
                           p->slot, (int)p->pid, (int)old->pid);
        }
    } else {
        iop__shard_log(s, IOP_SHARD_INFO, "worker %u: pid %d ready", p->slot, (int)p->pid);
    }
    iop__shard_slot_stats_t *st = &s->stats->slots[p->slot];
    atomic_store_explicit(&st->pid, p->pid, memory_order_relaxed);
    atomic_store_explicit(&st->ready, 1, memory_order_relaxed);
    if (s->restart_slot == (int)p->slot)
        iop__shard_restart_step(s);
}

/* Counts a crash of slot; 1 if it exceeds the crash-loop limit. */
static int count_crash(iop__shard_sup_t *s, iop__shard_slot_t *sl, uint64_t now)
{
    if (s->o.crash_limit == IOP_SHARD_NO_CRASH_LIMIT)
        return 0;
    uint32_t ring = s->o.crash_limit + 1;
    sl->crash_at[sl->ncrash % ring] = now;
    sl->ncrash++;
    if (sl->ncrash < ring)
        return 0;
    uint64_t oldest = sl->crash_at[sl->ncrash % ring];   /* ring crashes ago */
    return now - oldest <= s->o.crash_window_ns;
}

static void schedule_respawn(iop__shard_sup_t *s, uint32_t slot, uint64_t now, uint64_t ran,
                             const char *how)
{
    iop__shard_slot_t *sl = &s->slots[slot];
    if (ran >= s->o.crash_window_ns)
        sl->backoff = 0;           /* it had been running fine for a while */
    if (!sl->backoff)
        sl->backoff = s->o.backoff_min_ns;
    else if (sl->backoff > s->o.backoff_max_ns / 2)
        sl->backoff = s->o.backoff_max_ns;   /* doubling would pass it (or wrap) */
    else
        sl->backoff *= 2;
    if (sl->backoff > s->o.backoff_max_ns)
        sl->backoff = s->o.backoff_max_ns;
    sl->respawn_at = iop__ns_after(now, sl->backoff);
    iop__shard_log(s, IOP_SHARD_WARN, "worker %u %s; respawning in %llu ms", slot, how,
                   (unsigned long long)(sl->backoff / IOP__MS));
}

/* A crash (or a failed start) of slot, described by how. replacing: the process
 * was a rolling restart's replacement, or would have been. */
static void crashed(iop__shard_sup_t *s, uint32_t slot, uint64_t ran, const char *how, int replacing)
{
    uint64_t now = iop__shard_now();
    iop__shard_slot_t *sl = &s->slots[slot];
    atomic_fetch_add_explicit(&s->stats->slots[slot].crashes, 1, memory_order_relaxed);
    if (s->stopping) {
        iop__shard_log(s, IOP_SHARD_WARN, "worker %u %s", slot, how);
        return;
    }
    int looping = count_crash(s, sl, now);
    if (looping && replacing && sl->cur && sl->cur->state == IOP__P_READY) {
        /* The old process still serves: a replacement that keeps failing (a
         * resource its service is short of while older generations drain, a bad
         * new config) ends the restart of this slot, not the server. */
        iop__shard_log(s, IOP_SHARD_WARN, "worker %u %s: %u failed starts within %.1f s; the rolling restart "
                       "leaves pid %d serving in this slot", slot, how, s->o.crash_limit + 1,
                       secs(s->o.crash_window_ns), (int)sl->cur->pid);
        sl->ncrash = 0;
        sl->backoff = 0;
        sl->respawn_at = 0;
        if (s->restart_slot == (int)slot) {
            s->restart_slot++;     /* the step in progress (if any) goes on from there */
            if (!s->restart_stepping)
                iop__shard_restart_step(s);
        }
        return;
    }
    if (looping) {
        iop__shard_fail(s, -ECHILD, "worker %u %s: %u crashes or failed starts within %.1f s (crash-loop limit %u)",
                        slot, how, s->o.crash_limit + 1, secs(s->o.crash_window_ns), s->o.crash_limit);
        return;
    }
    schedule_respawn(s, slot, now, ran, how);
}

void iop__shard_on_exit(iop__shard_sup_t *s, iop__shard_proc_t *p, int status)
{
    char how[IOP__MSG_MAX + 192], st[96];
    iop__shard_describe_status(status, st, sizeof st);
    snprintf(how, sizeof how, "(pid %d) %s%s%s%s", (int)p->pid, st,
             p->killed == IOP__KILL_NOT_READY ? " (not ready in time)" : "",
             p->note[0] ? ": " : "", p->note);
    int clean = status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (clean && p->state != IOP__P_DRAINING)
        snprintf(how + strlen(how), sizeof how - strlen(how), " without being asked to");
    iop__shard_slot_stats_t *sst = &s->stats->slots[p->slot];
    if (p->role == IOP__R_CUR && atomic_load_explicit(&sst->pid, memory_order_relaxed) == p->pid) {
        atomic_store_explicit(&sst->pid, 0, memory_order_relaxed);
        atomic_store_explicit(&sst->ready, 0, memory_order_relaxed);
    }
    if (p->state == IOP__P_DRAINING) {
        if (p->killed == IOP__KILL_DRAIN) {
            /* Only the final drain decides the run's result: an old worker killed
             * in a rolling restart was replaced, and the run went on. */
            if (s->stopping && s->result == 0) {
                s->result = -ETIMEDOUT;
                snprintf(s->error, sizeof s->error, "drain timeout: worker %u (pid %d) killed after %.1f s",
                         p->slot, (int)p->pid, secs(s->o.drain_timeout_ns));
            }
            iop__shard_log(s, IOP_SHARD_WARN, "worker %u (pid %d) killed: still busy at the drain deadline",
                           p->slot, (int)p->pid);
        } else if (!clean && p->killed != IOP__KILL_STOP) {
            iop__shard_log(s, IOP_SHARD_WARN, "worker %u %s while draining", p->slot, how);
        } else {
            iop__shard_log(s, IOP_SHARD_INFO, "worker %u (pid %d) drained", p->slot, (int)p->pid);
        }
        return;
    }
    /* Nobody asked it to go. */
    if (p->fatal_err && !s->ever_ready && !s->stopping) {
        iop__shard_fail(s, p->fatal_err, "worker %u (pid %d) could not start: %s", p->slot, (int)p->pid, p->note);
        return;
    }
    crashed(s, p->slot, iop__shard_now() - p->started, how, p->role == IOP__R_NEXT);
}

/* Starts what slot lacks: a serving process, or the replacement a rolling restart
 * waits for. */
static void fill_slot(iop__shard_sup_t *s, uint32_t slot)
{
    iop__shard_slot_t *sl = &s->slots[slot];
    int role = -1;
    if (!sl->cur && !sl->next)
        role = IOP__R_CUR;
    else if (s->restart_slot == (int)slot && sl->cur && !sl->next && sl->cur->started < s->restart_began &&
             sl->cur->state == IOP__P_READY)
        role = IOP__R_NEXT;
    if (role < 0)
        return;
    int r = iop__shard_spawn(s, slot, role);
    if (r < 0) {
        char how[600];
        snprintf(how, sizeof how, "could not start: %s", iop_last_error());
        crashed(s, slot, 0, how, role == IOP__R_NEXT);
    }
}

void iop__shard_timers(iop__shard_sup_t *s, uint64_t now)
{
    for (iop__shard_proc_t *p = s->procs; p; p = p->next) {
        if (p->killed || now < p->deadline)
            continue;
        if (p->state == IOP__P_STARTING) {
            iop__shard_log(s, IOP_SHARD_WARN, "worker %u (pid %d) not ready after %.1f s: killing it",
                           p->slot, (int)p->pid, secs(s->o.ready_timeout_ns));
            iop__shard_kill(s, p, IOP__KILL_NOT_READY);
        } else if (p->state == IOP__P_DRAINING) {
            iop__shard_kill(s, p, IOP__KILL_DRAIN);
        }
    }
    if (s->stopping)
        return;
    for (uint32_t i = 0; i < s->n; i++) {
        iop__shard_slot_t *sl = &s->slots[i];
        if (sl->respawn_at && now >= sl->respawn_at) {
            sl->respawn_at = 0;
            fill_slot(s, i);
        }
    }
}

uint64_t iop__shard_next_timer(const iop__shard_sup_t *s)
{
    uint64_t t = 0;
    for (const iop__shard_proc_t *p = s->procs; p; p = p->next)
        if (!p->killed && p->state != IOP__P_READY && (!t || p->deadline < t))
            t = p->deadline;
    for (uint32_t i = 0; !s->stopping && i < s->n; i++)
        if (s->slots[i].respawn_at && (!t || s->slots[i].respawn_at < t))
            t = s->slots[i].respawn_at;
    return t;
}

void iop__shard_restart_begin(iop__shard_sup_t *s)
{
    if (s->stopping)
        return;
    if (s->restart_slot >= 0) {
        s->restart_again = 1;      /* finish this round, then go again from slot 0 */
        iop__shard_log(s, IOP_SHARD_INFO, "SIGHUP during a rolling restart: another one follows");
        return;
    }
    s->restart_slot = 0;
    s->restart_began = iop__shard_now();
    iop__shard_log(s, IOP_SHARD_INFO, "SIGHUP: restarting %u workers one by one", s->n);
    iop__shard_restart_step(s);
}

void iop__shard_restart_step(iop__shard_sup_t *s)
{
    if (s->restart_stepping)
        return;
    s->restart_stepping = 1;
    while (s->restart_slot >= 0 && (uint32_t)s->restart_slot < s->n && !s->stopping) {
        int slot = s->restart_slot;
        iop__shard_slot_t *sl = &s->slots[slot];
        if (sl->next)
            break;                 /* its replacement is starting: wait for ready */
        iop__shard_proc_t *cur = sl->cur;
        if (cur && cur->started < s->restart_began) {
            if (cur->state == IOP__P_STARTING)
                break;             /* replace it once it is ready */
            fill_slot(s, (uint32_t)slot);
            if (s->restart_slot != slot)
                continue;          /* the slot's restart was given up: already moved on */
            if (sl->next || sl->respawn_at)
                break;             /* starting, or retried after the backoff */
        }
        s->restart_slot++;         /* this slot runs a process newer than the SIGHUP */
    }
    s->restart_stepping = 0;
    if (s->restart_slot < 0 || (uint32_t)s->restart_slot < s->n || s->stopping)
        return;
    s->restart_slot = -1;
    iop__shard_log(s, IOP_SHARD_INFO, "rolling restart done");
    if (s->restart_again) {
        s->restart_again = 0;
        iop__shard_restart_begin(s);
    }
}
