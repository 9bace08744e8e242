/* evhttp-hello: a comparison HTTP server on libevent's evhttp, the one-file way a
 * libevent user writes it: evhttp_bind_socket_with_handle, one callback for
 * /hello answering 200 "Hello, World!" (text/plain), keep-alive as evhttp does it.
 * SIGTERM / SIGINT end the loop.
 *
 *   evhttp-hello --listen 127.0.0.1:8080 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "bench_common.h"

static const char body[] = "Hello, World!";

static void on_hello(struct evhttp_request *req, void *arg)
{
    (void)arg;
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    evbuffer_add(out, body, sizeof body - 1);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain");
    evhttp_send_reply(req, HTTP_OK, "OK", NULL);
}

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:8080";
    static const struct option longopts[] = {
        { "listen", required_argument, NULL, 'l' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "l:h", longopts, NULL)) != -1) {
        if (ch == 'l') {
            listen = optarg;
        } else {
            fprintf(ch == 'h' ? stdout : stderr,
                    "usage: evhttp-hello [--listen HOST:PORT]\n"
                    "A comparison server: libevent's evhttp answering GET /hello with\n"
                    "\"Hello, World!\". Prints 'listening on ADDR'; SIGTERM ends it.\n");
            return ch == 'h' ? 0 : 2;
        }
    }
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (bench_parse_hostport(listen, &ss, &sslen, NULL, 0) < 0) {
        fprintf(stderr, "evhttp-hello: bad --listen '%s'\n", listen);
        return 2;
    }
    char host[128];
    const char *colon = strrchr(listen, ':');
    snprintf(host, sizeof host, "%.*s", (int)(colon - listen), listen);
    struct event_base *base = event_base_new();
    struct evhttp *http = base ? evhttp_new(base) : NULL;
    if (!http) {
        fprintf(stderr, "evhttp-hello: cannot make the event base\n");
        return 1;
    }
    evhttp_set_cb(http, "/hello", on_hello, NULL);
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(http, host, (uint16_t)atoi(colon + 1));
    if (!bs) {
        fprintf(stderr, "evhttp-hello: cannot listen on %s\n", listen);
        return 1;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&bound, &blen);
    char where[128];
    printf("evhttp-hello: listening on %s\n", bench_format_addr((struct sockaddr *)&bound, blen, where, sizeof where));
    fflush(stdout);
    signal(SIGPIPE, SIG_IGN);
    struct event *term = evsignal_new(base, SIGTERM, on_signal, base);
    struct event *intr = evsignal_new(base, SIGINT, on_signal, base);
    event_add(term, NULL);
    event_add(intr, NULL);
    event_base_dispatch(base);
    event_free(term);
    event_free(intr);
    evhttp_free(http);
    event_base_free(base);
    return 0;
}
