/* The program tools.gdb debugs: three coroutines park at known places (a sleep, a
 * channel receive, an explicit switch away), then main calls gdb_all_parked(),
 * where the test's breakpoint lists them and prints their backtraces. */
#include <stdio.h>
#include <ioplex.h>

static iop_chan_t *chan;

__attribute__((noinline)) void gdb_all_parked(void) { __asm__ volatile("" ::: "memory"); }

__attribute__((noinline)) static void deep_in_sleeper(int depth)
{
    if (depth)
        deep_in_sleeper(depth - 1);
    else
        iop_sleep(1000ull * 1000 * 1000);
    __asm__ volatile("" ::: "memory");   /* keeps the recursion a real call */
}

static void *sleeper(void *arg) { (void)arg; deep_in_sleeper(3); return NULL; }

__attribute__((noinline)) static void waiting_on_channel(void)
{
    int v;
    iop_chan_recv(chan, &v, 0);
}

static void *receiver(void *arg) { (void)arg; waiting_on_channel(); return NULL; }

__attribute__((noinline)) static void switched_away(void) { iop_switch(iop_main(), NULL); }

static void *greenlet(void *arg) { (void)arg; switched_away(); return NULL; }

int main(void)
{
    iop_loop_t *loop;
    iop_loop_opts_t opts = { .size = sizeof opts, .backend = "poll" };
    if (iop_loop_create(&loop, &opts) < 0 || iop_chan_new(&chan, sizeof(int), 0) < 0) {
        fprintf(stderr, "gdb_target: %s\n", iop_last_error());
        return 1;
    }
    iop_coro_t *a, *b, *g;
    iop_coro_opts_t o1 = { .size = sizeof o1, .name = "sleeper" };
    iop_coro_opts_t o2 = { .size = sizeof o2, .name = "receiver" };
    iop_coro_opts_t o3 = { .size = sizeof o3, .name = "greenlet" };
    iop_go(loop, sleeper, NULL, &o1, &a);
    iop_go(loop, receiver, NULL, &o2, &b);
    iop_coro_create(loop, greenlet, NULL, &o3, &g);
    iop_switch(g, NULL);                     /* g runs until it switches back */
    iop_loop_run(loop, IOP_RUN_NOWAIT);      /* a and b start and park */
    gdb_all_parked();
    iop_cancel(a);
    iop_cancel(b);
    iop_join(a, NULL, 0);
    iop_join(b, NULL, 0);
    iop_switch(g, NULL);                     /* g returns */
    iop_coro_free(g);
    iop_chan_free(chan);
    iop_loop_destroy(loop);
    puts("gdb_target: done");
    return 0;
}
