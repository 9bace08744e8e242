/* http-serve: the http service on one backend in this process, for benchmarks
 * (wrk -t1 -c50 -d5s http://127.0.0.1:PORT/hello) until SIGINT / SIGTERM or the
 * given number of seconds. Prints the port and, at the end, the counters.
 *
 * usage: http-serve [BACKEND|auto] [PORT] [OPTIONS] [SECONDS] */
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "http_harness.h"

static volatile sig_atomic_t quit;

static void on_signal(int sig) { (void)sig; quit = 1; }

int main(int argc, char **argv)
{
    const char *backend = argc > 1 && strcmp(argv[1], "auto") != 0 ? argv[1] : NULL;
    uint16_t port = argc > 2 ? (uint16_t)atoi(argv[2]) : 0;
    const char *opts = argc > 3 ? argv[3] : "";
    int seconds = argc > 4 ? atoi(argv[4]) : 0;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    static hh_server_t s;
    if (hh_start(&s, backend, opts, port) < 0) {
        fprintf(stderr, "http-serve: %s\n", s.err);
        return 1;
    }
    printf("http-serve: %s on 127.0.0.1:%d\n", backend ? backend : "default", ntohs(s.addr.sin_port));
    fflush(stdout);
    for (int t = 0; !quit && (seconds <= 0 || t < seconds * 10); t++) {
        struct timespec ts = { 0, 100000000 };
        nanosleep(&ts, NULL);
    }
    hh_stop(&s);
    printf("connections %llu requests %llu errors %llu bytes in %llu out %llu\n",
           (unsigned long long)s.stats.connections, (unsigned long long)s.stats.requests,
           (unsigned long long)s.stats.errors, (unsigned long long)s.stats.bytes_in,
           (unsigned long long)s.stats.bytes_out);
    return 0;
}
