/* Shared helpers for the cmocka suites: loops on a chosen backend, bounded runs,
 * loopback sockets and pipes. Every helper that can fail fails the current test
 * through cmocka, so tests read as straight-line examples of the API. */
#ifndef IOPLEX_TEST_UTIL_H
#define IOPLEX_TEST_UTIL_H

#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include "ioplex.h"

/* The backend under test: argv[1], else $IOPLEX_BACKEND, else NULL (the default). */
const char *tu_backend_from_args(int argc, char **argv);

/* Set by a suite's main; tu_loop_new() creates loops on it. */
extern const char *tu_backend;

/* Loop flags every tu_loop_new adds (IOP_LOOP_SQPOLL for "uring+sqpoll"). */
extern uint32_t tu_loop_flags;

/* Splits a backend spec "NAME[+sqpoll]" into tu_backend and tu_loop_flags; -1 if
 * the mode is unknown. */
int tu_backend_set(const char *spec);

/* A loop on tu_backend (checked by name when one was given). */
iop_loop_t *tu_loop_new(void);

/* The same with opts (size, backend and flags are filled in here). */
iop_loop_t *tu_loop_new_opts(iop_loop_opts_t *opts);

/* CLOCK_MONOTONIC in ns / ms, independent of any loop. */
uint64_t tu_clock_ns(void);
uint64_t tu_clock_ms(void);
void tu_sleep_ms(unsigned ms);

/* Runs loop with IOP_RUN_ONCE until done(arg) is true or limit_ms of wall-clock time
 * have passed, and at least once unless done at the start. A private guard timer
 * keeps every iteration from blocking past the limit, even when nothing else is
 * pending. Returns 1 if done, 0 on timeout. */
int tu_run_until(iop_loop_t *loop, int (*done)(void *arg), void *arg, unsigned limit_ms);

/* tu_run_until for the common case "until *counter >= target". */
int tu_run_until_count(iop_loop_t *loop, const int *counter, int target, unsigned limit_ms);

/* Runs loop with IOP_RUN_ONCE for ms of wall-clock time, whatever happens. */
void tu_run_for(iop_loop_t *loop, unsigned ms);

/* n iterations with IOP_RUN_NOWAIT. */
void tu_run_nowait(iop_loop_t *loop, int n);

/* Loopback sockets. All returned fds are non-blocking and close-on-exec. */
int tu_tcp_listener(struct sockaddr_in *addr, int backlog);   /* bound to 127.0.0.1:0 */
void tu_tcp_pair(int fds[2]);           /* [0] client, [1] accepted server side */
int tu_tcp_socket(void);                /* unconnected */
int tu_udp_socket(struct sockaddr_in *addr);                  /* bound to 127.0.0.1:0 */
void tu_pipe(int fds[2]);               /* [0] read end, [1] write end */
void tu_closed_port(struct sockaddr_in *addr);   /* 127.0.0.1 port nobody listens on */
int tu_tmpfile(const void *data, size_t len);    /* regular file holding data */
/* connect(2) that a signal does not cut short: after EINTR it waits (up to 10 s) for
 * the handshake under way. 0, or -1 with errno. */
int tu_connect(int fd, const struct sockaddr *sa, socklen_t len);
/* Writes all of data to a blocking fd, through EINTR and short writes. 0 or -1. */
int tu_write_all(int fd, const void *data, size_t len);
int tu_closed_fd(void);   /* a just-closed fd number, high enough not to be reused soon */

/* Raises the soft RLIMIT_NOFILE to at least need. 0 on success, -1 when the hard
 * limit is lower (message written to why). */
int tu_raise_nofile(rlim_t need, char *why, size_t whylen);

/* For each fd of this process whose /proc link reads `link` (an "anon_inode:[...]"
 * kind), calls fn with its open /proc fdinfo, until fn returns non-zero; returns
 * that value, or 0 when none did. */
int tu_fdinfo_each(const char *link, int (*fn)(FILE *fdinfo, void *arg), void *arg);

/* 1 in an ASan or TSan build, where everything runs several times slower: for the
 * few tests whose windows must scale. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TU_SANITIZED 1
#else
#define TU_SANITIZED 0
#endif

/* 1 in an AddressSanitizer build (gcc's or clang's way of saying so). */
#if defined(__SANITIZE_ADDRESS__)
#define TU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TU_ASAN 1
#endif
#endif
#ifndef TU_ASAN
#define TU_ASAN 0
#endif

/* 1 in a ThreadSanitizer build. TSan makes a fiber per coroutine, slowly (it clears
 * and maps a large record for each): tests that make thousands scale down with it. */
#if defined(__SANITIZE_THREAD__)
#define TU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TU_TSAN 1
#endif
#endif
#ifndef TU_TSAN
#define TU_TSAN 0
#endif

/* Fills buf with a reproducible pseudo-random pattern from seed. */
void tu_fill_pattern(void *buf, size_t len, uint32_t seed);

/* The same pattern a piece at a time: a state from tu_pattern_start(seed), then
 * tu_pattern_fill over consecutive pieces, each a multiple of 4 bytes but the last. */
uint32_t tu_pattern_start(uint32_t seed);
void tu_pattern_fill(uint32_t *state, void *buf, size_t len);

/* Small deterministic PRNG (xorshift32); state must start non-zero. */
uint32_t tu_rand(uint32_t *state);

#endif
