/* A chat client for tests: a blocking loopback socket read line by line, every
 * wait bounded by a timeout. Nothing here asserts: each call says what happened,
 * and the expect helpers print what came instead of what was wanted. */
#ifndef TEST_CHAT_PEER_H
#define TEST_CHAT_PEER_H

#include <netinet/in.h>
#include <stddef.h>

#define PEER_BUF 65536

typedef struct peer {
    int fd;
    int eof;                     /* 1 after EOF, -errno after a receive error */
    size_t len;                  /* buffered bytes */
    char name[40];               /* for messages */
    char buf[PEER_BUF];
} peer_t;

/* Connects to addr (rcvbuf > 0: that SO_RCVBUF first). NULL on failure. */
peer_t *peer_connect(const struct sockaddr_in *addr, int rcvbuf);
/* Reads lines from fd (a pipe, say), which it owns from now on. */
peer_t *peer_from_fd(int fd, const char *name);
void peer_close(peer_t *p);
/* Closes with a reset (SO_LINGER 0) instead of a FIN. */
void peer_reset(peer_t *p);

/* Sends all of s (bounded by 5 s): 0 or -errno. */
int peer_send(peer_t *p, const char *s);
int peer_send_bytes(peer_t *p, const void *data, size_t len);

/* The next line without its '\n' into out: its length, or -ETIMEDOUT, -EPIPE (the
 * server closed), -E2BIG (a line longer than the buffer), -errno. */
int peer_line(peer_t *p, char *out, size_t cap, int timeout_ms);

/* 0 if the next line is want; else prints what came and returns -1. */
int peer_expect(peer_t *p, const char *want, int timeout_ms);
/* 0 if the next line starts with prefix. */
int peer_expect_prefix(peer_t *p, const char *prefix, int timeout_ms);
/* Skips lines until one is want: how many were skipped, or -1. */
int peer_wait_for(peer_t *p, const char *want, int timeout_ms);
/* Reads and drops everything until the server closes: 0, or -ETIMEDOUT. */
int peer_wait_eof(peer_t *p, int timeout_ms);
/* 1 if no byte arrives within ms (nothing buffered either). */
int peer_quiet(peer_t *p, int ms);

#endif
