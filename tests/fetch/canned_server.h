/* A loopback HTTP server for the iop-fetch tests: coroutines on its own loop in a
 * thread of the test process, serving canned responses chosen by the path, and
 * counting connections and requests so that tests can check keep-alive reuse.
 *
 * Paths (N = body bytes, S = pattern seed, NAME = anything, for the file name):
 *   /len/N/S/NAME      Content-Length body (tu_fill_pattern(N, S))
 *   /chunk/N/S/NAME    the same body chunked (random sizes, extensions, trailers)
 *   /close/N/S/NAME    the same body delimited by closing the connection
 *   /info/N/S/NAME     100 Continue and 103 Early Hints, then a Content-Length body
 *   /204/NAME          204 No Content
 *   /rel/K/NAME        K > 0: 302 to the relative "../K-1/NAME"; K = 0: "/len/64/7"'s body
 *   /abs/K/NAME        the same with 301 and an absolute Location
 *   /loop              302 to itself
 *   /https             302 to https://127.0.0.1/
 *   /404/NAME          404 with a short body
 *   /slow/NAME         reads the request, never answers
 *   /delay/MS/NAME     waits MS milliseconds, then answers "delayed"
 *   /slowbody/N/NAME   the head and half the body, then nothing
 *   /trunc/N/NAME      the head and half the body, then closes
 *   /bad               a malformed status line
 *   /esc               302 to an ftp:// Location holding terminal escapes */
#ifndef TEST_FETCH_CANNED_SERVER_H
#define TEST_FETCH_CANNED_SERVER_H

#include <pthread.h>
#include <stdatomic.h>

typedef struct canned_server {
    int port;                  /* on 127.0.0.1 */
    int port6;                 /* on [::1], 0 when IPv6 is unavailable */
    atomic_int connections;    /* accepted so far */
    atomic_int requests;       /* request heads read so far */
    /* behaviour, set before canned_start */
    int drop_second;           /* each connection: answer one request, then read the
                                * next and close without answering */
    int idle_close_ms;         /* close a keep-alive connection idle this long (0 = never) */
    /* private */
    int lfd, lfd6, stop_pipe[2];
    pthread_t thread;
    int started;
} canned_server_t;

/* Listens and starts the server thread. 0 or -errno. */
int canned_start(canned_server_t *s);

/* Stops the thread (every connection closed) and joins it. */
void canned_stop(canned_server_t *s);

/* The body the /len, /chunk, /close and /info paths serve for n and seed. */
void canned_body(unsigned char *buf, size_t n, unsigned seed);

#endif
