/* iop-model-blocking: the blocking I/O model, one of the five iop-bench --models
 * measures. An echo server with a thread per connection: each thread sits in a
 * blocking read(2) until its client sends, then write(2)s the bytes back. The
 * simplest code there is; every connection costs a thread (a stack, a kernel task,
 * a context switch per message), idle ones included.
 *
 * The main thread only waits for SIGTERM / SIGINT (sigwait: every thread has them
 * blocked, so none is interrupted); an acceptor thread accepts in a blocking loop.
 * At the signal the process reports its CPU time and exits, taking the connection
 * threads with it. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "model_common.h"

#define PROG "iop-model-blocking"
/* Small stacks, so ten thousand idle connections fit: the buffer is the only big
 * thing on it (sanitizer builds grow frames, hence the margin). */
#define CONN_STACK (128 * 1024)

static atomic_ullong accepted;

static void *serve_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[MODEL_BUF_SIZE];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;          /* end of file or an error: the connection is over */
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(fd, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                goto out;
            off += w;
        }
    }
out:
    close(fd);
    return NULL;
}

static void *acceptor(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, CONN_STACK);
    int warned = 0;
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                if (!warned++)
                    perror(PROG ": accept");
                nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000 * 1000 }, NULL);  /* do not spin */
            }
            continue;       /* EINTR, ECONNABORTED and the like: the next one */
        }
        model_nodelay(fd);
        pthread_t t;
        int r = pthread_create(&t, &attr, serve_conn, (void *)(intptr_t)fd);
        if (r != 0) {
            if (!warned++)
                fprintf(stderr, PROG ": no thread for a connection: %s; closing it\n", strerror(r));
            close(fd);
            continue;
        }
        atomic_fetch_add(&accepted, 1);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    model_opts_t o;
    int st = model_parse_args(argc, argv, PROG,
                              "An echo server in the blocking model: one thread per connection, blocking\n"
                              "read(2) and write(2).", &o);
    if (st >= 0)
        return st;
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    /* before any thread, so that all inherit it; SIGPIPE: a client that resets must
     * end its connection (write fails with EPIPE), not the server */
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);
    int lfd = model_listen(&o, PROG, 0, "a thread per connection, blocking read/write");
    if (lfd < 0)
        return -lfd;
    pthread_t t;
    int r = pthread_create(&t, NULL, acceptor, (void *)(intptr_t)lfd);
    if (r != 0) {
        fprintf(stderr, PROG ": cannot start the acceptor thread: %s\n", strerror(r));
        return 1;
    }
    int sig;
    while (sigwait(&stop, &sig) != 0)
        ;
    model_report_cpu(PROG, atomic_load(&accepted));
    /* returning ends every thread, those blocked in read(2) or accept(2) too */
    return 0;
}
