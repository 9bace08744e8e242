/* evhttp-hello: a comparison HTTP server on libevent's evhttp, the one-file way a
 * libevent user writes it: evhttp_bind_socket_with_handle, one callback for
 * /hello answering 200 "Hello, World!" (text/plain), keep-alive as evhttp does it.
 * SIGTERM / SIGINT end the loop.
 *
 *   evhttp-hello --listen 127.0.0.1:8080 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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
    const char *listen_at = "127.0.0.1:8080";
    static const struct option longopts[] = {
        { "listen", required_argument, NULL, 'l' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "l:h", longopts, NULL)) != -1) {
        if (ch == 'l') {
            listen_at = optarg;
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
    char err[256];
    if (bench_parse_hostport(listen_at, 1, &ss, &sslen, err, sizeof err) < 0) {
        fprintf(stderr, "evhttp-hello: bad --listen: %s\n", err);
        return 2;
    }
    /* Our own socket from the parsed address: evhttp_bind_socket takes a host
     * string and would need the brackets of an IPv6 address taken off. */
    int one = 1, fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&ss, sslen) < 0 || listen(fd, SOMAXCONN) < 0) {
        fprintf(stderr, "evhttp-hello: cannot listen on %s: %s\n", listen_at, strerror(errno));
        if (fd >= 0)
            close(fd);
        return 1;
    }
    struct event_base *base = event_base_new();
    struct evhttp *http = base ? evhttp_new(base) : NULL;
    struct evhttp_bound_socket *bs = http ? evhttp_accept_socket_with_handle(http, fd) : NULL;
    if (!bs) {
        fprintf(stderr, "evhttp-hello: cannot start libevent's http server\n");
        if (http)
            evhttp_free(http);
        if (base)
            event_base_free(base);
        close(fd);
        return 1;
    }
    evhttp_set_cb(http, "/hello", on_hello, NULL);
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&bound, &blen);
    char where[128];
    printf("evhttp-hello: listening on %s\n", iop_app_format_addr((struct sockaddr *)&bound, blen, where, sizeof where));
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
