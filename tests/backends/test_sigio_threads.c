/* Signals are routed per thread: F_SETOWN_EX names the loop's thread, and a
 * signalfd reads the calling thread's signals. Two loops on two threads must each
 * get every byte meant for them; two loops on one thread must not share a signal. */
#include "sigio_test.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include "test_util.h"

#define WORKERS 2
#define PAIRS 40           /* connections per worker */
#define BYTES 20000        /* per connection */
#define CHUNK 500

typedef struct worker {
    pthread_barrier_t *ready;   /* loops and connections made */
    int clients[PAIRS];         /* written by the main thread */
    sink_t sinks[PAIRS];
    long total;
    int errors;
    int setup_failed;
    pid_t tid;
    pid_t owner;                /* the owner thread of its first server fd */
    int reached;                /* st_run_until_bytes' answer */
} worker_t;

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    w->tid = gettid();
    iop_loop_t *loop = st_loop_new();
    int made = 0;
    for (; loop && made < PAIRS; made++) {
        int fds[2];
        if (st_tcp_pair(fds) < 0)
            break;
        w->clients[made] = fds[0];
        if (st_sink_start(loop, &w->sinks[made], fds[1], &w->total, &w->errors) < 0)
            break;
    }
    w->setup_failed = made != PAIRS;
    if (loop)
        iop_loop_run(loop, IOP_RUN_NOWAIT);   /* registers (arms) every server fd */
    if (made > 0)
        w->owner = st_armed_owner(w->sinks[0].fd);
    pthread_barrier_wait(w->ready);
    if (!w->setup_failed)
        w->reached = st_run_until_bytes(loop, &w->total, (long)PAIRS * BYTES, 10000);
    for (int i = 0; i < made; i++) {
        if (loop)
            iop_fd_close(loop, w->sinks[i].fd);
        close(w->clients[i]);
    }
    if (loop)
        iop_loop_destroy(loop);
    return NULL;
}

void test_sigio_two_threads_two_loops(void **state)
{
    (void)state;
    char why[160];
    if (tu_raise_nofile(WORKERS * PAIRS * 2 + 64, why, sizeof why) < 0)
        skip();
    pthread_barrier_t ready;
    assert_int_equal(pthread_barrier_init(&ready, NULL, WORKERS + 1), 0);
    static worker_t w[WORKERS];
    pthread_t th[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        w[i] = (worker_t){ .ready = &ready };
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    pthread_barrier_wait(&ready);
    /* This thread writes, so every signal is raised here and must be routed to the
     * owner thread. Interleaved, so both loops are busy at the same time. */
    int write_failed = 0;
    for (int off = 0; off < BYTES; off += CHUNK)
        for (int i = 0; i < WORKERS; i++)
            for (int j = 0; j < PAIRS && !w[i].setup_failed; j++)
                write_failed |= st_write_chunks(w[i].clients[j], CHUNK, CHUNK) < 0;
    for (int i = 0; i < WORKERS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&ready);

    assert_false(write_failed);
    for (int i = 0; i < WORKERS; i++) {
        printf("worker %d (tid %d): %ld of %ld bytes, fds owned by tid %d\n", i, (int)w[i].tid,
               w[i].total, (long)PAIRS * BYTES, (int)w[i].owner);
        assert_false(w[i].setup_failed);
        assert_int_equal(w[i].owner, w[i].tid);
        assert_int_equal(w[i].errors, 0);
        assert_int_equal(w[i].reached, 1);
        assert_int_equal(w[i].total, (long)PAIRS * BYTES);
    }
    assert_int_not_equal(w[0].tid, w[1].tid);
}

static void count_cb(iop_watch_t *w, unsigned revents)
{
    (void)revents;
    (*(int *)w->data)++;
}

/* Each loop's signalfd would read the other's signals if they shared one. */
void test_sigio_two_loops_one_thread(void **state)
{
    (void)state;
    unsetenv("IOPLEX_SIGIO_SIGNAL");
    iop_loop_t *a = st_loop_new(), *b = st_loop_new();
    assert_non_null(a);
    assert_non_null(b);
    int pa[2], pb[2], calls_a = 0, calls_b = 0;
    tu_pipe(pa);
    tu_pipe(pb);
    iop_watch_t wa = { .data = &calls_a }, wb = { .data = &calls_b };
    assert_int_equal(iop_watch_start(a, &wa, pa[0], IOP_READ, count_cb), 0);
    assert_int_equal(iop_watch_start(b, &wb, pb[0], IOP_READ, count_cb), 0);
    tu_run_nowait(a, 1);
    tu_run_nowait(b, 1);
    assert_int_not_equal(st_armed_signal(pa[0]), st_armed_signal(pb[0]));

    /* b's data arrives while only a runs: a must leave b's signal alone. */
    assert_int_equal(write(pb[1], "b", 1), 1);
    tu_run_nowait(a, 3);
    assert_int_equal(calls_a, 0);
    tu_run_nowait(b, 1);
    assert_int_equal(calls_b, 1);
    assert_int_equal(write(pa[1], "a", 1), 1);
    tu_run_nowait(b, 1);   /* pb is still readable: level-triggered */
    assert_int_equal(calls_b, 2);
    tu_run_nowait(a, 1);
    assert_int_equal(calls_a, 1);

    iop_watch_stop(&wa);
    iop_watch_stop(&wb);
    assert_int_equal(iop_fd_close(a, pa[0]), 0);
    assert_int_equal(iop_fd_close(b, pb[0]), 0);
    close(pa[1]);
    close(pb[1]);
    iop_loop_destroy(a);
    iop_loop_destroy(b);
}
