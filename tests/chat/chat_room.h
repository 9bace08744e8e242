/* The chat service hosted in this process, as ioplexd would host it in workers:
 * the module is loaded and created once, then each "worker" is a thread with its
 * own loop (on tu_backend), its own listener, worker_start and a service host.
 * The state is shared by all of them, so a message crosses workers through the
 * shared log exactly as between worker processes. */
#ifndef TEST_CHAT_ROOM_H
#define TEST_CHAT_ROOM_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include "ioplex.h"

#define ROOM_MAX_WORKERS 4

typedef struct room_worker {
    struct room *room;
    int index;
    pthread_t thread;
    int running;                 /* the thread exists and has not been joined */
    iop_loop_t *loop;
    iop_service_host_t host;
    iop_service_stats_t stats;
    int listen_fd;
    struct sockaddr_in addr;     /* where its clients connect */
    _Atomic int stop;            /* drain and end */
    _Atomic int pause;           /* stop running the loop until cleared */
    _Atomic int paused;
    _Atomic int phase;           /* 0 starting, 1 serving, 2 done, -1 failed */
    unsigned drain_ms;
    int drain_result;
    char err[256];
} room_worker_t;

typedef struct room {
    iop_service_t *svc;
    const iop_service_desc_t *desc;
    void *state;
    int nworkers;
    room_worker_t w[ROOM_MAX_WORKERS];
} room_t;

/* Loads and creates the chat service with opts ("k=v,k2=v2" or NULL) and starts
 * nworkers worker threads. 0, or -1 after printing why. */
int room_open(room_t *r, int nworkers, const char *opts);
/* Asks worker i to drain (its connections get drain_ms) and end; returns at once. */
void room_stop_worker(room_t *r, int i, unsigned drain_ms);
/* Waits for worker i's thread (bounded: 20 s): 0, or -1. */
int room_join_worker(room_t *r, int i);
/* Stops (1) or resumes (0) running worker i's loop; waits until it has. */
void room_pause(room_t *r, int i, int on);
/* Stops every worker still running, then destroys the service. */
void room_close(room_t *r);

#endif
