#include "chat_room.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "test_util.h"

#define MS 1000000ull

static void *stopper(void *arg)
{
    room_worker_t *w = arg;
    w->drain_result = iop_service_host_drain(&w->host, iop_now(w->loop) + w->drain_ms * MS);
    if (w->room->desc->worker_stop)
        w->room->desc->worker_stop(w->room->state);
    return NULL;
}

static void *worker_thread(void *arg)
{
    room_worker_t *w = arg;
    room_t *r = w->room;
    iop_loop_opts_t lo = { .size = sizeof lo, .backend = tu_backend, .flags = tu_loop_flags };
    if (iop_loop_create(&w->loop, &lo) < 0) {
        snprintf(w->err, sizeof w->err, "loop: %s", iop_last_error());
        atomic_store(&w->phase, -1);
        return NULL;
    }
    if (r->desc->worker_start(r->state, w->loop, w->index, w->err, sizeof w->err) < 0) {
        iop_loop_destroy(w->loop);
        atomic_store(&w->phase, -1);
        return NULL;
    }
    w->host.desc = r->desc;
    w->host.state = r->state;
    w->host.loop = w->loop;
    w->host.listen_fd = w->listen_fd;
    w->host.worker = w->index;
    w->host.stats = &w->stats;
    if (iop_service_host_start(&w->host) < 0) {
        snprintf(w->err, sizeof w->err, "host: %s", iop_last_error());
        atomic_store(&w->phase, -1);
        return NULL;             /* the loop leaks: the test fails anyway */
    }
    atomic_store(&w->phase, 1);
    while (!atomic_load(&w->stop)) {
        if (atomic_load(&w->pause)) {
            atomic_store(&w->paused, 1);
            tu_sleep_ms(1);
            continue;
        }
        atomic_store(&w->paused, 0);
        iop_loop_run(w->loop, IOP_RUN_ONCE);
    }
    iop_coro_t *c;
    if (iop_go(w->loop, stopper, w, NULL, &c) == 0)
        iop_join(c, NULL, 0);
    iop_loop_destroy(w->loop);
    atomic_store(&w->phase, 2);
    return NULL;
}

int room_open(room_t *r, int nworkers, const char *opts)
{
    memset(r, 0, sizeof *r);
    if (iop_service_open(&r->svc, "chat", NULL) < 0) {
        fprintf(stderr, "room: %s\n", iop_last_error());
        return -1;
    }
    r->desc = iop_service_desc(r->svc);
    r->nworkers = nworkers;
    char text[256] = "";
    iop_service_opt_t o[8];
    int nopts = 0;
    if (opts) {
        snprintf(text, sizeof text, "%s", opts);
        nopts = iop_service_parse_opts(text, o, 8);
    }
    iop_service_cfg_t cfg = { .size = sizeof cfg, .name = "chat", .listen = "127.0.0.1:0",
                              .opts = o, .nopts = nopts > 0 ? (size_t)nopts : 0, .nworkers = nworkers };
    char err[256] = "";
    if (nopts < 0 || r->desc->create(&r->state, &cfg, err, sizeof err) < 0) {
        fprintf(stderr, "room: create: %s\n", nopts < 0 ? "bad options" : err);
        iop_service_close(r->svc);
        return -1;
    }
    for (int i = 0; i < nworkers; i++) {
        room_worker_t *w = &r->w[i];
        w->room = r;
        w->index = i;
        w->listen_fd = tu_tcp_listener(&w->addr, 256);
        if (pthread_create(&w->thread, NULL, worker_thread, w) != 0) {
            fprintf(stderr, "room: pthread_create failed\n");
            room_close(r);
            return -1;
        }
        w->running = 1;
        for (int k = 0; k < 5000 && atomic_load(&w->phase) == 0; k++)
            tu_sleep_ms(1);
        if (atomic_load(&w->phase) != 1) {
            fprintf(stderr, "room: worker %d did not start: %s\n", i, w->err);
            room_close(r);
            return -1;
        }
    }
    return 0;
}

void room_stop_worker(room_t *r, int i, unsigned drain_ms)
{
    room_worker_t *w = &r->w[i];
    w->drain_ms = drain_ms;
    atomic_store(&w->pause, 0);
    atomic_store(&w->stop, 1);
    if (atomic_load(&w->phase) == 1)
        iop_loop_wake(w->loop);
}

int room_join_worker(room_t *r, int i)
{
    room_worker_t *w = &r->w[i];
    if (!w->running)
        return 0;
    for (int k = 0; k < 20000 && atomic_load(&w->phase) == 1; k++)
        tu_sleep_ms(1);
    if (atomic_load(&w->phase) == 1) {
        fprintf(stderr, "room: worker %d does not end\n", i);
        return -1;
    }
    pthread_join(w->thread, NULL);
    w->running = 0;
    close(w->listen_fd);
    return 0;
}

void room_pause(room_t *r, int i, int on)
{
    room_worker_t *w = &r->w[i];
    atomic_store(&w->pause, on);
    iop_loop_wake(w->loop);
    for (int k = 0; k < 5000 && atomic_load(&w->paused) != on; k++)
        tu_sleep_ms(1);
}

void room_close(room_t *r)
{
    /* One after the other: each worker's stop runs alone. */
    for (int i = 0; i < r->nworkers; i++) {
        if (!r->w[i].running)
            continue;
        room_stop_worker(r, i, 2000);
        if (room_join_worker(r, i) < 0)
            return;              /* leave the state alone: a thread still uses it */
    }
    if (r->state && r->desc->destroy)
        r->desc->destroy(r->state);
    r->state = NULL;
    iop_service_close(r->svc);
    r->svc = NULL;
}
