/* The scheduler: coroutine records, the ready queue, parking and waking, greenlet
 * switches, join, cancel and scoped deadlines.
 *
 * One scheduler per loop, made on first use. Its own context is the thread's stack
 * (the "main" context): loop callbacks run there and switch into coroutines. A
 * coroutine that stops running (parks, yields, ends) switches back to main, or, while
 * main drains the ready queue, straight to the next ready coroutine; other
 * coroutine-to-coroutine switches are explicit iop_switch transfers and a greenlet
 * ending into its parent.
 *
 * Who resumes whom:
 *  - an op completion, a timer or any other wake from main resumes the parked
 *    coroutine at once (it runs until it stops, then the callback goes on);
 *  - spawned and woken-by-a-coroutine ones wait in the ready queue, which a NOP op
 *    drains once per loop iteration (a turn); coroutines woken during the turn run
 *    in it too, up to a budget, so a hand-off between coroutines costs no loop
 *    iteration. A coroutine that yields waits for the next turn: the loop polls I/O
 *    in between and every yielder gets one run per turn.
 *
 * A coroutine that ends cannot free the stack it runs on: it leaves itself in
 * tl.dead and whoever runs next (main, a parent, a fresh coroutine) releases it right
 * after the switch. */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include "loop_internal.h"
#include "sched_private.h"

#define DEFAULT_STACK_SIZE (64u * 1024u)
#define DEFAULT_POOL_MAX 1024u
#define REC_CHUNK 64               /* coroutine records allocated at a time */

typedef struct rec_chunk {
    struct rec_chunk *next;
    iop_coro_t rec[REC_CHUNK];
} rec_chunk_t;

struct iop__sched {
    iop_loop_t *loop;
    iop__stack_pool_t *pool;
    size_t stack_size;             /* default for this loop's coroutines */
    uint32_t flags;                /* default IOP_CORO_* */
    uint32_t pool_max;
    uint64_t spawned;              /* configure is refused after the first */
    iop_coro_t *ready_head, *ready_tail;   /* spawned or woken: run this turn */
    iop_coro_t *yield_head, *yield_tail;   /* yielded: run next turn */
    uint32_t nready;
    iop_op_t ready_op;             /* NOP armed while either queue is non-empty */
    uint8_t ready_armed;
    uint8_t draining;              /* inside ready_run: it re-arms at its end */
    uint32_t budget;               /* resumes left in this turn */
    iop_coro_t *all;               /* live coroutines, newest first (gdb walks this) */
    uint32_t nlive;
    iop_coro_t *free_recs;         /* recycled records, linked through next_ready */
    rec_chunk_t *chunks;
    iop__sched_t *next_sched;      /* this thread's schedulers (gdb starts here) */
};

/* Per-thread state, the only mutable state outside loops. initial-exec: one
 * thread-pointer-relative access instead of a __tls_get_addr call per use (the
 * library is linked, not dlopen'ed). */
struct iop__coro_tls {
    iop_coro_t *current;           /* running coroutine, NULL on main */
    iop_coro_t *dead;              /* ended: its stack is released after the switch */
    iop__sched_t *scheds;          /* every scheduler made on this thread */
    iop_coro_t main;               /* the thread's own stack, as a switch target */
};
static _Thread_local struct iop__coro_tls iop__coro_tls __attribute__((tls_model("initial-exec")));
#define tl iop__coro_tls

iop_coro_t *iop__current(void) { return tl.current; }

/* ---- records ------------------------------------------------------------------------- */

static iop_coro_t *rec_alloc(iop__sched_t *s)
{
    if (!s->free_recs) {
        rec_chunk_t *ch = iop_malloc(sizeof *ch);
        if (!ch)
            return NULL;
        ch->next = s->chunks;
        s->chunks = ch;
        for (int i = REC_CHUNK - 1; i >= 0; i--) {
            ch->rec[i].next_ready = s->free_recs;
            s->free_recs = &ch->rec[i];
        }
    }
    iop_coro_t *c = s->free_recs;
    s->free_recs = c->next_ready;
    return c;
}

static void rec_free(iop__sched_t *s, iop_coro_t *c)
{
    c->state = IOP__CS_DONE;       /* a stale handle reads as ended and detached: */
    c->detached = 1;               /* join and free refuse it instead of freeing twice */
    c->next_ready = s->free_recs;
    s->free_recs = c;
}

static void all_link(iop__sched_t *s, iop_coro_t *c)
{
    c->all_prev = NULL;
    c->all_next = s->all;
    if (s->all)
        s->all->all_prev = c;
    s->all = c;
    s->nlive++;
}

static void all_unlink(iop__sched_t *s, iop_coro_t *c)
{
    if (c->all_prev)
        c->all_prev->all_next = c->all_next;
    else if (s->all == c)
        s->all = c->all_next;
    else
        return;                    /* not linked */
    if (c->all_next)
        c->all_next->all_prev = c->all_prev;
    c->all_prev = c->all_next = NULL;
    s->nlive--;
}

/* Gives back what a coroutine holds besides its record: its stack and context. */
static void release_stack(iop_coro_t *c)
{
    iop__sched_t *s = c->sched;
    iop__ctx_unmake(&c->ctx);
    iop__stack_put(s->pool, &c->stack);
    iop__timer_unreserve(s->loop);   /* its timer slot (coro_new) */
    all_unlink(s, c);
}

/* Runs right after every switch, on whatever stack we landed on. */
static inline void reap(void)
{
    iop_coro_t *d = tl.dead;
    if (!d)
        return;
    tl.dead = NULL;
    release_stack(d);
    if (d->detached)
        rec_free(d->sched, d);
}

/* ---- the scheduler ------------------------------------------------------------------- */

static int sched_new(iop_loop_t *loop, iop__sched_t **out);

static inline int sched_get(iop_loop_t *loop, iop__sched_t **out)
{
    if (loop->sched) {
        *out = loop->sched;
        return 0;
    }
    return sched_new(loop, out);
}

static int sched_new(iop_loop_t *loop, iop__sched_t **out)
{
    iop__sched_t *s = iop_calloc(1, sizeof *s);
    if (!s)
        return iop__fail(-ENOMEM, "coroutines: out of memory for the scheduler");
    s->loop = loop;
    s->stack_size = DEFAULT_STACK_SIZE;
    s->pool_max = DEFAULT_POOL_MAX;
    int r = iop__stack_pool_new(&s->pool, s->pool_max);
    if (r < 0) {
        iop_free(s);
        return iop__fail(r, "coroutines: cannot make the stack pool: %s", iop_strerror(r));
    }
    s->next_sched = tl.scheds;
    tl.scheds = s;
    loop->sched = s;
    *out = s;
    return 0;
}

void iop__sched_destroy(iop_loop_t *loop)
{
    iop__sched_t *s = loop->sched;
    if (!s)
        return;
    loop->sched = NULL;
    while (s->all)                 /* parked or never-run ones: their stacks go back */
        release_stack(s->all);
    iop__stack_pool_free(s->pool);
    for (rec_chunk_t *ch = s->chunks, *next; ch; ch = next) {
        next = ch->next;
        iop_free(ch);
    }
    for (iop__sched_t **p = &tl.scheds; *p; p = &(*p)->next_sched)
        if (*p == s) {
            *p = s->next_sched;
            break;
        }
    iop_free(s);
}

int iop_sched_configure(iop_loop_t *loop, const iop_sched_opts_t *opts)
{
    if (!loop || !opts)
        return iop__fail(-EINVAL, "iop_sched_configure: NULL loop or opts");
    if (opts->size < offsetof(iop_sched_opts_t, flags) + sizeof opts->flags)
        return iop__fail(-EINVAL, "iop_sched_configure: opts.size %u is too small (set it to sizeof(iop_sched_opts_t))",
                         opts->size);
    iop_sched_opts_t o = { 0 };
    memcpy(&o, opts, opts->size < sizeof o ? opts->size : sizeof o);
    if (o.flags & ~IOP_CORO_CANARY)
        return iop__fail(-EINVAL, "iop_sched_configure: unknown flags 0x%x", o.flags);
    iop__sched_t *s = NULL;
    int r = sched_get(loop, &s);
    if (r < 0)
        return r;
    if (s->spawned)
        return iop__fail(-EBUSY, "iop_sched_configure: this loop already has coroutines");
    uint32_t pool_max = o.pool_max ? o.pool_max : DEFAULT_POOL_MAX;
    if (pool_max != s->pool_max) {
        iop__stack_pool_t *p;
        r = iop__stack_pool_new(&p, pool_max);
        if (r < 0)
            return iop__fail(r, "iop_sched_configure: cannot make the stack pool: %s", iop_strerror(r));
        iop__stack_pool_free(s->pool);
        s->pool = p;
        s->pool_max = pool_max;
    }
    s->flags = o.flags;
    s->stack_size = o.stack_size ? o.stack_size : DEFAULT_STACK_SIZE;
    return 0;
}

/* ---- switching ------------------------------------------------------------------------ */

/* From main: runs c until it stops. */
static void resume(iop_coro_t *c)
{
    c->state = IOP__CS_RUNNING;
    tl.current = c;
    iop__fiber_switch(&tl.main.ctx, NULL, &c->ctx, &c->stack, 0);
    reap();
}

/* From the running coroutine self (its state already set): back to main. */
static void to_main(iop_coro_t *self)
{
    tl.current = NULL;
    iop__fiber_switch(&self->ctx, &self->stack, &tl.main.ctx, NULL, 0);
    reap();
}

/* The next coroutine of this turn's ready queue, within the turn's budget. */
static iop_coro_t *ready_next(iop__sched_t *s)
{
    iop_coro_t *c;
    while (s->budget && (c = s->ready_head) != NULL) {
        s->ready_head = c->next_ready;
        if (!s->ready_head)
            s->ready_tail = NULL;
        s->nready--;
        s->budget--;
        c->next_ready = NULL;
        if (c->state == IOP__CS_READY)
            return c;
    }
    return NULL;
}

/* The running coroutine self stops (parks, yields or has ended: dying). While the
 * scheduler drains its ready queue, it switches straight to the next ready one
 * instead of going through main: one switch per hand-off instead of two. */
static inline __attribute__((always_inline)) void switch_away(iop_coro_t *self, int dying)
{
    iop__sched_t *s = self->sched;
    iop_coro_t *next = s->draining ? ready_next(s) : NULL;
    if (next) {
        next->state = IOP__CS_RUNNING;
        tl.current = next;
        iop__fiber_switch(&self->ctx, &self->stack, &next->ctx, &next->stack, dying);
    } else {
        tl.current = NULL;
        iop__fiber_switch(&self->ctx, &self->stack, &tl.main.ctx, NULL, dying);
    }
    reap();                        /* not reached when dying */
}

/* From the running coroutine self (its state already set) to coroutine target. */
static void to_coro(iop_coro_t *self, iop_coro_t *target)
{
    target->state = IOP__CS_RUNNING;
    tl.current = target;
    iop__fiber_switch(&self->ctx, &self->stack, &target->ctx, &target->stack, 0);
    reap();
}

/* c ends: the greenlets whose parent it was get its parent instead (greenlet's own
 * rule), so that none later ends into its record, perhaps reused by then. They may
 * belong to any loop of this thread (a greenlet's parent is whoever created it). */
static void reparent_kids(iop_coro_t *c)
{
    for (iop__sched_t *s = tl.scheds; s && c->greenlet_kids; s = s->next_sched) {
        for (iop_coro_t *x = s->all; x && c->greenlet_kids; x = x->all_next) {
            if (x->parent != c)
                continue;
            x->parent = c->parent;
            c->greenlet_kids--;
            if (c->parent)
                c->parent->greenlet_kids++;
        }
    }
}

/* c's function returned: wake who waits for it, then leave its stack for good. */
static void finish(iop_coro_t *c)
{
    c->state = IOP__CS_DONE;
    if (c->nursery)
        iop__nursery_child_done(c);
    if (c->joiner && c->joiner != &tl.main)
        iop__wake(c->joiner, 0);   /* queued: we are a coroutine (main polls for the end) */
    if (c->parent)
        c->parent->greenlet_kids--;
    if (c->greenlet_kids)
        reparent_kids(c);
    tl.dead = c;
    iop_coro_t *p = c->greenlet ? c->parent : NULL;
    if (p && p != &tl.main && p->state == IOP__CS_SWITCHED) {
        p->switch_value = c->result;
        p->state = IOP__CS_RUNNING;
        tl.current = p;
        iop__fiber_switch(&c->ctx, &c->stack, &p->ctx, &p->stack, 1);
    } else {
        /* A greenlet whose parent is main hands it the result if main waits in
         * iop_switch; any other ending just goes back to the scheduler. */
        if (c->greenlet && (!p || p == &tl.main) && tl.main.state == IOP__CS_SWITCHED) {
            tl.main.switch_value = c->result;
            tl.main.state = IOP__CS_RUNNING;
        }
        switch_away(c, 1);
    }
    /* not reached: nothing switches to a dead context */
}

static void coro_entry(void *arg)
{
    iop_coro_t *c = arg;
    reap();
    c->result = c->fn(c->arg);
    finish(c);
}

/* ---- the ready queue ------------------------------------------------------------------- */

/* Resumes past the turn's starting queue: coroutines that wake each other (a channel
 * hand-off, a join) go on within the turn up to this many, then the loop polls. */
#define TURN_EXTRA_BUDGET 1024u

static void ready_run(iop_op_t *op, int res);

static void ready_arm(iop__sched_t *s)
{
    if (s->ready_armed || s->draining)
        return;
    iop_prep_nop(&s->ready_op, ready_run, s);
    s->ready_armed = iop_submit(s->loop, &s->ready_op) == 0;
}

static void ready_push(iop_coro_t *c)
{
    iop__sched_t *s = c->sched;
    c->state = IOP__CS_READY;
    c->next_ready = NULL;
    if (s->ready_tail)
        s->ready_tail->next_ready = c;
    else
        s->ready_head = c;
    s->ready_tail = c;
    s->nready++;
    ready_arm(s);
}

/* A yielder waits for the next turn, behind the ones that were ready before. */
static void yield_push(iop_coro_t *c)
{
    iop__sched_t *s = c->sched;
    c->state = IOP__CS_READY;
    c->next_ready = NULL;
    if (s->yield_tail)
        s->yield_tail->next_ready = c;
    else
        s->yield_head = c;
    s->yield_tail = c;
    ready_arm(s);
}

/* The NOP's callback, once per loop iteration: last turn's yielders join the ready
 * queue, which then runs in order, including coroutines woken meanwhile (within a
 * budget); yielders of this turn wait for the next. */
static void ready_run(iop_op_t *op, int res)
{
    (void)res;
    iop__sched_t *s = op->data;
    s->ready_armed = 0;
    for (iop_coro_t *y = s->yield_head; y; y = y->next_ready)
        s->nready++;
    if (s->yield_head) {
        if (s->ready_tail)
            s->ready_tail->next_ready = s->yield_head;
        else
            s->ready_head = s->yield_head;
        s->ready_tail = s->yield_tail;
        s->yield_head = s->yield_tail = NULL;
    }
    s->budget = s->nready + TURN_EXTRA_BUDGET;
    s->draining = 1;
    iop_coro_t *c;
    while ((c = ready_next(s)) != NULL)
        resume(c);                 /* may run several: see switch_away */
    s->draining = 0;
    if (s->ready_head || s->yield_head)
        ready_arm(s);
}

/* ---- spawn ------------------------------------------------------------------------------ */

static void set_name(iop_coro_t *c, const char *name)
{
    if (!name || !name[0]) {
        memcpy(c->name, "coro", 5);   /* the common case, without strnlen */
        return;
    }
    size_t n = strnlen(name, IOP__CORO_NAME_MAX - 1);
    memcpy(c->name, name, n);
    c->name[n] = '\0';
}

/* A record with a stack and a context ready to run fn(arg), state NEW. */
static int coro_new(iop_loop_t *loop, iop_coro_fn fn, void *arg, const iop_coro_opts_t *opts,
                    const char *who, iop_coro_t **out)
{
    if (!loop || !fn)
        return iop__fail(-EINVAL, "%s: NULL loop or function", who);
    iop_coro_opts_t o = { 0 };
    if (opts) {
        if (opts->size < offsetof(iop_coro_opts_t, flags) + sizeof opts->flags)
            return iop__fail(-EINVAL, "%s: opts.size %u is too small (set it to sizeof(iop_coro_opts_t))",
                             who, opts->size);
        memcpy(&o, opts, opts->size < sizeof o ? opts->size : sizeof o);
        if (o.flags & ~IOP_CORO_CANARY)
            return iop__fail(-EINVAL, "%s: unknown flags 0x%x", who, o.flags);
        if (o.arg_size && !arg)
            return iop__fail(-EINVAL, "%s: arg_size %zu with a NULL arg", who, o.arg_size);
    }
    iop__sched_t *s = NULL;
    int r = sched_get(loop, &s);
    if (r < 0)
        return r;
    iop_coro_t *c = rec_alloc(s);
    if (!c)
        return iop__fail(-ENOMEM, "%s: out of memory for coroutine records", who);
    /* The loop's canary default holds even for coroutines that only give a name. */
    r = iop__stack_get(s->pool, o.stack_size ? o.stack_size : s->stack_size,
                       (s->flags | o.flags) & IOP_CORO_CANARY, &c->stack);
    if (r < 0) {
        rec_free(s, c);
        return r;                  /* iop_last_error() says why (map count, memory) */
    }
    /* A copied argument sits at the top of the stack, above the first frame. */
    iop__stack_t run = c->stack;
    if (o.arg_size) {
        size_t room = (o.arg_size + 63) & ~(size_t)63;
        if (o.arg_size > run.size / 4) {
            iop__stack_put(s->pool, &c->stack);
            rec_free(s, c);
            return iop__fail(-EINVAL, "%s: arg_size %zu is over a quarter of the %zu-byte stack", who,
                             o.arg_size, run.size);
        }
        run.size -= room;
        arg = memcpy((char *)run.lo + run.size, arg, o.arg_size);
    }
    /* A timer slot of its own (iop__coro_timer_start): its parked call's deadline
     * and the retry of a cancel the backend refused must not need memory then, or
     * the deadline or the cancel would be lost. It parks in one call at a time. */
    r = iop__timer_reserve(loop);
    if (r < 0) {
        iop__stack_put(s->pool, &c->stack);
        rec_free(s, c);
        return r;
    }
    c->sched = s;
    c->fn = fn;
    c->arg = arg;
    c->result = NULL;
    c->parent = NULL;
    c->greenlet_kids = 0;
    c->next_ready = NULL;
    c->joiner = NULL;
    c->nursery = NULL;
    c->sib_prev = c->sib_next = NULL;
    c->switch_value = NULL;
    c->wake_res = 0;
    c->wait_op = NULL;
    c->waiter = NULL;
    c->ndeadlines = 0;
    c->state = IOP__CS_NEW;
    c->cancelled = 0;
    c->detached = 0;
    c->greenlet = 0;
    set_name(c, o.name);
    c->stack.owner = c->name;
    memset(&c->ctx, 0, sizeof c->ctx);
    iop__ctx_make(&c->ctx, &run, coro_entry, c);
    all_link(s, c);
    s->spawned++;
    *out = c;
    return 0;
}

int iop__spawn(iop_loop_t *loop, iop_coro_fn fn, void *arg, const iop_coro_opts_t *opts,
               int detached, iop_coro_t **out)
{
    iop_coro_t *c;
    int r = coro_new(loop, fn, arg, opts, "iop_go", &c);
    if (r < 0)
        return r;
    c->detached = (uint8_t)detached;
    ready_push(c);
    if (out)
        *out = c;
    return 0;
}

int iop_go(iop_loop_t *loop, iop_coro_fn fn, void *arg, const iop_coro_opts_t *opts, iop_coro_t **out)
{
    if (out)
        *out = NULL;
    return iop__spawn(loop, fn, arg, opts, out == NULL, out);
}

int iop_coro_create(iop_loop_t *loop, iop_coro_fn fn, void *arg, const iop_coro_opts_t *opts,
                    iop_coro_t **out)
{
    if (!out)
        return iop__fail(-EINVAL, "iop_coro_create: out is NULL");
    *out = NULL;
    if (opts && opts->size >= offsetof(iop_coro_opts_t, arg_size) + sizeof opts->arg_size && opts->arg_size)
        return iop__fail(-EINVAL, "iop_coro_create: arg_size is for iop_go (a greenlet's fn gets the value of "
                         "its first iop_switch)");
    iop_coro_t *c;
    int r = coro_new(loop, fn, arg, opts, "iop_coro_create", &c);
    if (r < 0)
        return r;
    c->greenlet = 1;
    c->parent = tl.current;        /* NULL = main */
    if (c->parent)
        c->parent->greenlet_kids++;
    *out = c;
    return 0;
}

/* ---- introspection ------------------------------------------------------------------------ */

iop_coro_t *iop_self(void) { return tl.current; }

const char *iop_coro_name(const iop_coro_t *c)
{
    if (!c)
        return "";
    return c == &tl.main ? "main" : c->name;
}

iop_loop_t *iop_coro_loop(const iop_coro_t *c)
{
    return c && c->sched ? c->sched->loop : NULL;
}

iop_coro_t *iop_main(void) { return &tl.main; }

int iop_coro_done(const iop_coro_t *c)
{
    return c && c != &tl.main && c->state == IOP__CS_DONE;
}

int iop_cancelled(void) { return tl.current && tl.current->cancelled; }

/* ---- parking and waking --------------------------------------------------------------------- */

uint64_t iop__deadline(uint64_t deadline)
{
    iop_coro_t *c = tl.current ? tl.current : &tl.main;
    if (!c->ndeadlines)
        return deadline;
    uint32_t top = c->ndeadlines < IOP__DEADLINE_DEPTH ? c->ndeadlines : IOP__DEADLINE_DEPTH;
    uint64_t scope = c->deadlines[top - 1];
    return !deadline || (scope && scope < deadline) ? scope : deadline;
}

static void drop_waiter(iop_coro_t *c)
{
    if (c->waiter)
        iop__waitq_remove(c->waiter);
}

static void park_expired(iop_timer_t *t)
{
    iop_coro_t *c = t->data;
    if (c->state != IOP__CS_PARKED)
        return;                    /* woken already, not run yet */
    drop_waiter(c);
    iop__wake(c, -ETIMEDOUT);
}

/* With c->wait_op set (coro_io.c), the op carries the deadline and a cancel goes to
 * the op: park only sleeps until the op's callbacks wake it. Otherwise a timer in
 * this frame stands for the deadline, and a timeout or cancel removes c->waiter (the
 * first waiter of a select: the caller removes its others). */
int iop__park(uint64_t deadline)
{
    iop_coro_t *c = tl.current;
    if (!c)
        return iop__fail(-EPERM, "a blocking call outside any coroutine: the scheduler itself must never block");
    if (c->wait_op) {
        c->state = IOP__CS_PARKED;
        switch_away(c, 0);
        return c->wake_res;
    }
    if (c->cancelled) {
        drop_waiter(c);
        return -ECANCELED;
    }
    uint64_t d = iop__deadline(deadline);
    iop_timer_t timer;
    if (d) {
        iop_loop_t *loop = c->sched->loop;
        uint64_t now = iop_now(loop);
        if (d <= now) {
            drop_waiter(c);
            return -ETIMEDOUT;
        }
        memset(&timer, 0, sizeof timer);
        timer.data = c;
        /* In c's own slot (coro_new): a full heap does not fail the call. */
        int r = iop__coro_timer_start(loop, c, &timer, d - now, park_expired);
        if (r < 0) {
            drop_waiter(c);
            return r;
        }
    }
    c->state = IOP__CS_PARKED;
    c->wake_res = 0;
    switch_away(c, 0);
    if (d)
        iop_timer_stop(&timer);
    return c->wake_res;
}

int iop__park_shielded(void)
{
    iop_coro_t *c = tl.current;
    if (!c)
        return iop__fail(-EPERM, "a blocking call outside any coroutine: the scheduler itself must never block");
    c->state = IOP__CS_PARKED;
    c->wake_res = 0;
    switch_away(c, 0);
    return c->wake_res;
}

void iop__wake(iop_coro_t *c, int res)
{
    if (c->state != IOP__CS_PARKED)
        return;                    /* a second wake (deadline after a hand-off): too late */
    c->wake_res = res;
    if (tl.current)
        ready_push(c);             /* never switch away from a running coroutine */
    else
        resume(c);
}

void iop__wake_later(iop_coro_t *c, int res)
{
    if (c->state != IOP__CS_PARKED)
        return;
    c->wake_res = res;
    ready_push(c);
}

int iop_yield(void)
{
    iop_coro_t *c = tl.current;
    if (!c)
        return iop__fail(-EPERM, "iop_yield: outside any coroutine");
    if (c->cancelled)
        return -ECANCELED;
    yield_push(c);
    switch_away(c, 0);
    return 0;
}

/* ---- wait queues --------------------------------------------------------------------------- */

void iop__waitq_push(iop_waitq_t *q, iop__waiter_t *w)
{
    iop__waiter_t *tail = q->tail;
    w->q = q;
    w->next = NULL;
    w->prev = tail;
    if (tail)
        tail->next = w;
    else
        q->head = w;
    q->tail = w;
}

iop__waiter_t *iop__waitq_pop(iop_waitq_t *q)
{
    iop__waiter_t *w = q->head;
    if (w)
        iop__waitq_remove(w);
    return w;
}

void iop__waitq_remove(iop__waiter_t *w)
{
    iop_waitq_t *q = w->q;
    if (!q)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        q->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        q->tail = w->prev;
    w->next = w->prev = NULL;
    w->q = NULL;
}

/* ---- scoped deadlines ------------------------------------------------------------------------ */

/* Each slot holds the effective deadline of its scope (the earliest so far), so the
 * innermost is read in O(1). Past IOP__DEADLINE_DEPTH scopes the deepest ones share
 * the last slot: stricter than asked until they are popped, never laxer. */
void iop_deadline_push(uint64_t deadline)
{
    iop_coro_t *c = tl.current ? tl.current : &tl.main;
    uint64_t eff = iop__deadline(deadline);
    if (c->ndeadlines < IOP__DEADLINE_DEPTH)
        c->deadlines[c->ndeadlines] = eff;
    else
        c->deadlines[IOP__DEADLINE_DEPTH - 1] = eff;
    if (c->ndeadlines < UINT32_MAX)
        c->ndeadlines++;
}

void iop_deadline_pop(void)
{
    iop_coro_t *c = tl.current ? tl.current : &tl.main;
    if (c->ndeadlines)
        c->ndeadlines--;
}

uint64_t iop_deadline_current(void) { return iop__deadline(0); }

/* ---- join, cancel ---------------------------------------------------------------------------- */

static void guard_fired(iop_timer_t *t) { (void)t; }

static int coro_ended(void *arg) { return ((iop_coro_t *)arg)->state == IOP__CS_DONE; }

int iop__run_until(iop_loop_t *loop, int (*done)(void *arg), void *arg, uint64_t deadline)
{
    if (iop__loop_running(loop))
        return iop__fail(-EBUSY, "cannot wait for coroutines from inside a loop callback");
    iop_update_time(loop);
    iop_timer_t guard;
    memset(&guard, 0, sizeof guard);
    int r = 0;
    while (!done(arg)) {
        uint64_t now = iop_now(loop);
        if (deadline && now >= deadline) {
            r = -ETIMEDOUT;
            break;
        }
        /* The guard makes ONCE return by the deadline even if nothing else happens. */
        if (deadline && !iop_timer_active(&guard) &&
            (r = iop_timer_start(loop, &guard, deadline - now, 0, guard_fired)) < 0)
            break;
        /* ONCE would block for good on a loop with nothing pending. Posts another
         * thread has already queued are pending: ONCE runs them. */
        if (!loop->active && !loop->done_head && !atomic_load(&loop->posts)) {
            r = iop__fail(-EDEADLK, "coroutines: nothing left that could wake what is waited for (a deadlock)");
            break;
        }
        int n = iop_loop_run(loop, IOP_RUN_ONCE);
        if (n < 0) {
            r = n;
            break;
        }
    }
    iop_timer_stop(&guard);
    return r;
}

int iop_join(iop_coro_t *c, void **result, uint64_t deadline)
{
    iop_coro_t *self = tl.current;
    if (!c || c == &tl.main)
        return iop__fail(-EINVAL, "iop_join: no such coroutine");
    if (c == self)
        return iop__fail(-EDEADLK, "iop_join: a coroutine cannot join itself");
    if (c->detached)
        return iop__fail(-EINVAL, "iop_join: coroutine '%s' is detached (spawned without out)", c->name);
    int r = 0;
    if (c->state != IOP__CS_DONE) {
        /* One joiner at a time, main included: each successful join frees the record. */
        if (c->joiner)
            return iop__fail(-EBUSY, "iop_join: '%s' is already joined by '%s'", c->name,
                             iop_coro_name(c->joiner));
        c->joiner = self ? self : &tl.main;
        if (self)
            r = iop__park(deadline);
        else
            r = iop__run_until(c->sched->loop, coro_ended, c, iop__deadline(deadline));
        c->joiner = NULL;
        if (c->state != IOP__CS_DONE)
            return r < 0 ? r : -EAGAIN;
    }
    if (result)
        *result = c->result;
    rec_free(c->sched, c);
    return 0;
}

int iop_cancel(iop_coro_t *c)
{
    if (!c || c == &tl.main)
        return iop__fail(-EINVAL, "iop_cancel: no such coroutine");
    if (c->state == IOP__CS_DONE)
        return -ESRCH;
    c->cancelled = 1;
    if (c->state != IOP__CS_PARKED)
        return 0;                  /* its next blocking call fails */
    if (c->wait_op) {
        iop__io_cancel(c);         /* it wakes once the op's callbacks have run */
        return 0;
    }
    drop_waiter(c);
    iop__wake(c, -ECANCELED);
    return 0;
}

/* ---- greenlet style ----------------------------------------------------------------------------- */

int iop_coro_set_parent(iop_coro_t *c, iop_coro_t *parent)
{
    if (!c || c == &tl.main)
        return iop__fail(-EINVAL, "iop_coro_set_parent: no such coroutine");
    if (c->state == IOP__CS_DONE)
        return iop__fail(-EINVAL, "iop_coro_set_parent: '%s' has ended", c->name);
    if (parent == &tl.main)
        parent = NULL;
    for (iop_coro_t *p = parent; p; p = p->parent)
        if (p == c)
            return iop__fail(-EINVAL, "iop_coro_set_parent: '%s' would be its own ancestor", c->name);
    if (parent && parent->state == IOP__CS_DONE)
        return iop__fail(-EINVAL, "iop_coro_set_parent: '%s' has ended", parent->name);
    if (c->parent)
        c->parent->greenlet_kids--;
    c->parent = parent;
    if (parent)
        parent->greenlet_kids++;
    return 0;
}

static int main_switched(void *arg)
{
    (void)arg;
    return tl.main.state != IOP__CS_SWITCHED;
}

/* Main waits in iop_switch: if the coroutines it started park, it runs their loop
 * (like a hub) until one of them switches back to it or a child of it ends. */
static void *switch_from_main(iop_coro_t *target, void *value)
{
    /* Called again from a loop callback while main already waits in an outer
     * iop_switch: this call takes the first value that comes to main, and the
     * outer one goes on waiting. */
    int outer_state = tl.main.state;
    void *outer_value = tl.main.switch_value;
    if (target->state == IOP__CS_NEW)
        target->arg = value;
    else
        target->switch_value = value;
    tl.main.state = IOP__CS_SWITCHED;
    tl.main.switch_value = NULL;
    resume(target);
    void *got = NULL;
    if (tl.main.state == IOP__CS_SWITCHED) {
        int r = iop__run_until(target->sched->loop, main_switched, NULL, 0);
        if (r < 0)
            errno = -r;
        else
            got = tl.main.switch_value;
    } else {
        got = tl.main.switch_value;
    }
    tl.main.state = outer_state == IOP__CS_SWITCHED ? IOP__CS_SWITCHED : IOP__CS_RUNNING;
    tl.main.switch_value = outer_value;
    return got;
}

void *iop_switch(iop_coro_t *target, void *value)
{
    iop_coro_t *self = tl.current;
    if (!target || target == self) {
        errno = EINVAL;
        return NULL;
    }
    if (target == &tl.main) {
        if (tl.main.state != IOP__CS_SWITCHED) {
            errno = EINVAL;        /* main is not suspended in iop_switch */
            return NULL;
        }
        tl.main.switch_value = value;
        tl.main.state = IOP__CS_RUNNING;
        self->state = IOP__CS_SWITCHED;
        to_main(self);
        return self->switch_value;
    }
    if (target->state != IOP__CS_NEW && target->state != IOP__CS_SWITCHED) {
        errno = EINVAL;
        return NULL;
    }
    if (!self)
        return switch_from_main(target, value);
    if (target->state == IOP__CS_NEW)
        target->arg = value;
    else
        target->switch_value = value;
    self->state = IOP__CS_SWITCHED;
    to_coro(self, target);
    return self->switch_value;
}

void iop_coro_free(iop_coro_t *c)
{
    if (!c || c == &tl.main || c->joiner)
        return;                    /* a join waiting on c frees it */
    iop__sched_t *s = c->sched;
    switch (c->state) {
    case IOP__CS_NEW:
        release_stack(c);
        rec_free(s, c);
        break;
    case IOP__CS_DONE:
        if (!c->detached)          /* a detached one is freed already */
            rec_free(s, c);
        break;
    default:
        c->detached = 1;           /* still running somewhere: freed when it ends */
        break;
    }
}
