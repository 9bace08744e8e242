/* The http service hosted in-process for tests and the benchmark server: a thread
 * runs a loop on the chosen backend with iop_service_host, the test talks to it
 * over loopback with plain blocking sockets. No cmocka here: errors are returned. */
#ifndef IOPLEX_HTTP_HARNESS_H
#define IOPLEX_HTTP_HARNESS_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "ioplex.h"

typedef struct hh_server {
    struct sockaddr_in addr;       /* where it listens */
    iop_service_stats_t stats;     /* read them after hh_stop */
    _Atomic uint64_t accepted;     /* stats.connections, published by the server thread
                                    * every iteration (within 10 ms): read it any time */
    iop_loop_stats_t loop_stats;   /* the loop's, after hh_stop */
    char err[512];                 /* why hh_start failed */
    /* private */
    const char *backend;
    char opts_text[2048];
    iop_service_opt_t opts[16];
    int nopts;
    uint16_t port;
    pthread_t thread;
    atomic_int phase;              /* 0 starting, 1 serving, -1 failed, 2 drained */
    atomic_int stop;
    atomic_int drain_ms;           /* > 0: start a drain with this deadline */
    int drain_result;
    uint32_t buf_count, buf_size;  /* the loop's receive pool */
} hh_server_t;

/* Starts the http service with opts ("root=DIR,index=NAME", may be "") on backend
 * (NULL = default) at 127.0.0.1:port (0 = any). 0, or -1 with s->err. */
int hh_start(hh_server_t *s, const char *backend, const char *opts, uint16_t port);
/* The same with a receive pool of buf_count x buf_size B (hh_start: 64 x 2048). */
int hh_start_pool(hh_server_t *s, const char *backend, const char *opts, uint16_t port,
                  uint32_t buf_count, uint32_t buf_size);
/* Starts a drain (idle connections closed at once, busy ones after ms). */
void hh_drain(hh_server_t *s, int ms);
/* Drains (if not yet), stops the loop and joins the thread. Returns the drain's
 * result (0 or -ETIMEDOUT). */
int hh_stop(hh_server_t *s);

/* ---- a blocking client --------------------------------------------------------------- */

typedef struct hh_conn {
    int fd;
    size_t len;                    /* buffered bytes not yet returned */
    char buf[65536];
} hh_conn_t;

typedef struct hh_resp {
    int status;
    char head[16384];              /* status line and headers, NUL-terminated */
    char *body;                    /* malloc'ed (NUL-terminated), free with hh_resp_free */
    size_t body_len;
} hh_resp_t;

/* Connects with 5 s receive / send timeouts. -1 on failure. */
int hh_connect(hh_conn_t *c, const hh_server_t *s);
void hh_close(hh_conn_t *c);
int hh_send(hh_conn_t *c, const void *p, size_t n);      /* 0 or -1 */
int hh_sends(hh_conn_t *c, const char *text);            /* a C string */
/* Reads one response; no_body: a HEAD's (Content-Length is not followed). 0, or -1
 * on EOF / timeout / a response we cannot read. */
int hh_read_response(hh_conn_t *c, hh_resp_t *r, int no_body);
void hh_resp_free(hh_resp_t *r);
/* The value of header name (case-insensitive) copied into out, or NULL. */
const char *hh_header(const hh_resp_t *r, const char *name, char *out, size_t cap);
/* 1 if the server closed the connection (EOF) within ms, having sent nothing more. */
int hh_wait_eof(hh_conn_t *c, int ms);

/* One request on a new connection, its response read: 0 or -1. */
int hh_get(const hh_server_t *s, const char *request, hh_resp_t *r, int no_body);

#endif
