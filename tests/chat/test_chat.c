/* The chat service hosted in this process (chat_room.c: one thread and loop per
 * worker, the shared state between them), driven over loopback by raw sockets.
 *
 * usage: test_chat BACKEND */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat_peer.h"
#include "chat_room.h"
#include "test_util.h"

#define T 3000                   /* ms: a line that should come */

static room_t room;

static peer_t *connect_to(int worker)
{
    peer_t *p = peer_connect(&room.w[worker].addr, 0);
    assert_non_null(p);
    return p;
}

/* Connects to worker and joins as nick; the first line a member gets is its join. */
static peer_t *join_as(int worker, const char *nick)
{
    peer_t *p = connect_to(worker);
    snprintf(p->name, sizeof p->name, "%s", nick);
    char line[64];
    snprintf(line, sizeof line, "/nick %s\n", nick);
    assert_int_equal(peer_send(p, line), 0);
    snprintf(line, sizeof line, "* %s joined", nick);
    assert_int_equal(peer_expect(p, line, T), 0);
    return p;
}

static void say(peer_t *p, const char *text)
{
    char line[4096];
    snprintf(line, sizeof line, "%s\n", text);
    assert_int_equal(peer_send(p, line), 0);
}

static void expect(peer_t *p, const char *line) { assert_int_equal(peer_expect(p, line, T), 0); }

static int room_down(void **state)
{
    (void)state;
    room_close(&room);
    return 0;
}

#define ROOM_SETUP(name, nworkers, opts) \
    static int name(void **state) { (void)state; return room_open(&room, nworkers, opts) < 0 ? -1 : 0; }
ROOM_SETUP(one_worker, 1, NULL)
ROOM_SETUP(two_workers, 2, NULL)
ROOM_SETUP(two_workers_short_lines, 2, "max_line=64")
ROOM_SETUP(small_backlog, 2, "max_backlog=16384,sndbuf=4096")
ROOM_SETUP(small_ring, 2, "ring=16")
ROOM_SETUP(ring_64, 2, "ring=64")

/* ---- nicks ----------------------------------------------------------------------------- */

static void test_nick_rules(void **state)
{
    (void)state;
    peer_t *a = connect_to(0);
    say(a, "");                                   /* empty lines are ignored, even now */
    say(a, "hello");
    expect(a, "* say /nick NAME first");
    say(a, "/who");
    expect(a, "* say /nick NAME first");
    say(a, "/nick bad nick!");
    assert_int_equal(peer_expect_prefix(a, "* bad nick", T), 0);
    say(a, "/nick");
    assert_int_equal(peer_expect_prefix(a, "* bad nick", T), 0);
    say(a, "/nick abcdefghijklmnopqrstuvwxyz0123456");       /* 33 */
    assert_int_equal(peer_expect_prefix(a, "* bad nick", T), 0);
    say(a, "/nick ann");
    expect(a, "* ann joined");
    say(a, "/nick other");
    expect(a, "* you are ann");

    peer_t *b = connect_to(1);
    say(b, "/nick ann");                       /* taken, across workers */
    expect(b, "* nick ann is taken");
    assert_int_equal(peer_send(b, "/nick Bob_2-x\r\n"), 0);   /* and may try again */
    expect(b, "* Bob_2-x joined");
    expect(a, "* Bob_2-x joined");

    peer_t *c = connect_to(0);
    say(c, "/nick abcdefghijklmnopqrstuvwxyz012345");          /* 32: the longest */
    expect(c, "* abcdefghijklmnopqrstuvwxyz012345 joined");
    expect(a, "* abcdefghijklmnopqrstuvwxyz012345 joined");
    expect(b, "* abcdefghijklmnopqrstuvwxyz012345 joined");
    say(b, "hi");
    expect(a, "<Bob_2-x> hi");
    expect(b, "<Bob_2-x> hi");
    expect(c, "<Bob_2-x> hi");
    peer_close(a);
    peer_close(b);
    peer_close(c);
}

/* ---- fan-out: 50 clients over two workers, one global order -------------------------------- */

#define FAN 50

static void test_fanout(void **state)
{
    (void)state;
    peer_t *p[FAN];
    char nick[16], line[256];
    for (int i = 0; i < FAN; i++) {
        snprintf(nick, sizeof nick, "p%02d", i);
        p[i] = join_as(i % 2, nick);
    }
    for (int i = 0; i < FAN; i++) {
        snprintf(line, sizeof line, "message from p%02d", i);
        say(p[i], line);
    }
    /* Each member: the later joins, then every message exactly once, in the same
     * order as everybody else. */
    static int order[FAN][FAN];
    for (int i = 0; i < FAN; i++) {
        int seen[FAN] = { 0 }, n = 0;
        while (n < FAN) {
            int r = peer_line(p[i], line, sizeof line, 5000);
            if (r < 0)
                fail_msg("p%02d: after %d messages: %s", i, n, strerror(-r));
            int who;
            if (sscanf(line, "<p%d> message from p", &who) == 1) {
                assert_true(who >= 0 && who < FAN);
                assert_int_equal(seen[who], 0);
                seen[who] = 1;
                order[i][n++] = who;
            } else {
                assert_int_equal(line[0], '*');   /* a join */
            }
        }
        assert_memory_equal(order[i], order[0], sizeof order[0]);
    }
    assert_true(peer_quiet(p[0], 100));
    assert_true(peer_quiet(p[FAN - 1], 100));
    for (int i = 0; i < FAN; i++)
        peer_close(p[i]);
}

/* ---- flow control: bursts from both workers into a small ring (ring=64) ---------------- */

#define BURST_PEERS 20
#define BURST_SENDERS 4
#define BURST_LINES 250

/* Four members pipeline 250 lines each at once. Their writes are slowed down to
 * the slowest reader, so nobody misses anything although the ring holds only 64. */
static void test_burst(void **state)
{
    (void)state;
    peer_t *p[BURST_PEERS];
    char nick[16];
    for (int i = 0; i < BURST_PEERS; i++) {
        snprintf(nick, sizeof nick, "q%02d", i);
        p[i] = join_as(i % 2, nick);
    }
    static char burst[BURST_LINES * 16];
    for (int s = 0; s < BURST_SENDERS; s++) {
        size_t off = 0;
        for (int k = 0; k < BURST_LINES; k++)
            off += (size_t)snprintf(burst + off, sizeof burst - off, "b%d.%03d\n", s, k);
        assert_int_equal(peer_send_bytes(p[s], burst, off), 0);
    }
    enum { TOTAL = BURST_SENDERS * BURST_LINES };
    static int order[BURST_PEERS][TOTAL];
    char line[256];
    for (int i = 0; i < BURST_PEERS; i++) {
        int next[BURST_SENDERS] = { 0 }, n = 0;
        while (n < TOTAL) {
            int r = peer_line(p[i], line, sizeof line, 5000);
            if (r < 0)
                fail_msg("q%02d: %s after %d lines", i, strerror(-r), n);
            int who, s, k;
            if (line[0] == '*') {
                assert_null(strstr(line, "missed"));
                continue;        /* a later join */
            }
            assert_int_equal(sscanf(line, "<q%d> b%d.%d", &who, &s, &k), 3);
            assert_int_equal(who, s);
            assert_int_equal(k, next[s]++);      /* each sender's lines in its order */
            order[i][n++] = s * BURST_LINES + k;
        }
        assert_memory_equal(order[i], order[0], sizeof order[0]);
    }
    for (int i = 0; i < BURST_PEERS; i++)
        peer_close(p[i]);
}

/* ---- /who, joins and leaves --------------------------------------------------------------------- */

static void test_who_across_workers(void **state)
{
    (void)state;
    peer_t *a = join_as(0, "carol");
    peer_t *b = join_as(1, "alice");
    peer_t *c = join_as(1, "bob");
    expect(a, "* alice joined");
    expect(a, "* bob joined");
    expect(b, "* bob joined");
    say(a, "/who");
    expect(a, "* in the room (3): alice bob carol");
    say(c, "/quit");
    assert_int_equal(peer_wait_eof(c, T), 0);
    expect(a, "* bob left");
    expect(b, "* bob left");
    say(b, "/who");
    expect(b, "* in the room (2): alice carol");
    peer_close(a);
    peer_close(b);
    peer_close(c);
}

static void test_join_leave(void **state)
{
    (void)state;
    peer_t *a = join_as(0, "a");
    peer_t *b = join_as(1, "b");
    expect(a, "* b joined");
    peer_close(b);                              /* gone without /quit */
    expect(a, "* b left");
    peer_t *c = join_as(1, "c");
    expect(a, "* c joined");
    peer_reset(c);                              /* gone with a reset */
    expect(a, "* c left");
    b = join_as(0, "b");                        /* the nick is free again */
    expect(a, "* b joined");
    peer_t *d = connect_to(1);                  /* never joined: no announcement */
    peer_close(d);
    peer_t *e = join_as(1, "e");
    expect(a, "* e joined");
    assert_int_equal(peer_send(e, "said, then gone"), 0);   /* no newline before EOF */
    assert_int_equal(shutdown(e->fd, SHUT_WR), 0);
    expect(a, "<e> said, then gone");
    expect(a, "* e left");
    peer_close(e);
    say(b, "/quit");
    assert_int_equal(peer_wait_eof(b, T), 0);
    expect(a, "* b left");
    assert_true(peer_quiet(a, 200));
    peer_close(a);
    peer_close(b);
}

/* ---- long lines (max_line=64) -------------------------------------------------------------------- */

static void test_long_line(void **state)
{
    (void)state;
    peer_t *a = join_as(0, "a");
    peer_t *b = join_as(1, "b");
    expect(a, "* b joined");
    char text[2048];

    memset(text, 'x', 65);                      /* one byte over */
    text[65] = '\0';
    say(a, text);
    expect(a, "* line too long");

    memset(text, 'y', 64);                      /* exactly the limit, with \r\n too */
    memcpy(text + 64, "\r\n", 3);
    assert_int_equal(peer_send(a, text), 0);
    text[64] = '\0';
    char want[128] = "<a> ";
    memcpy(want + 4, text, 65);
    expect(a, want);
    expect(b, want);

    /* A long line in pieces: refused once, the rest skipped, then usable again. */
    memset(text, 'z', 50);
    text[50] = '\0';
    for (int i = 0; i < 4; i++) {
        assert_int_equal(peer_send(a, text), 0);
        tu_sleep_ms(20);
    }
    assert_int_equal(peer_send(a, "end of the long one\nafter\n"), 0);
    expect(a, "* line too long");
    expect(a, "<a> after");
    expect(b, "<a> after");

    /* Much longer than the buffer. */
    memset(text, 'w', sizeof text - 2);
    text[sizeof text - 2] = '\n';
    text[sizeof text - 1] = '\0';
    for (int i = 0; i < 4; i++)
        assert_int_equal(peer_send(a, text), 0);
    say(a, "still here");
    for (int i = 0; i < 4; i++)
        expect(a, "* line too long");
    expect(a, "<a> still here");
    expect(b, "<a> still here");
    assert_true(peer_quiet(b, 100));
    peer_close(a);
    peer_close(b);
}

/* ---- commands and odd lines --------------------------------------------------------------------- */

static void test_commands(void **state)
{
    (void)state;
    peer_t *a = join_as(0, "a");
    say(a, "//slash");
    expect(a, "<a> /slash");
    say(a, "/bogus x y");
    assert_int_equal(peer_expect_prefix(a, "* unknown command /bogus", T), 0);
    say(a, "/x\033[2J");                         /* not echoed back raw either */
    assert_int_equal(peer_expect_prefix(a, "* unknown command /x?[2J (", T), 0);
    say(a, "");                                  /* nothing to say */
    say(a, "a\001b\tc\033[2Jd");                 /* control characters cannot fake lines */
    expect(a, "<a> a?b\tc?[2Jd");
    assert_int_equal(peer_send(a, "one\ntwo\r\nthree\n"), 0);   /* several lines in one send */
    expect(a, "<a> one");
    expect(a, "<a> two");
    expect(a, "<a> three");
    say(a, "/who");
    expect(a, "* in the room (1): a");
    peer_close(a);
}

/* ---- a slow client (max_backlog=16384, small kernel buffers) ---------------------------------------------------------- */

/* The next message line of p (skipping "* slow joined/left", noting the leave):
 * its number. */
static int next_message(peer_t *p, int *left)
{
    char line[1200];
    for (;;) {
        int r = peer_line(p, line, sizeof line, 5000);
        if (r < 0)
            fail_msg("%s: %s", p->name, strerror(-r));
        if (strcmp(line, "* slow left") == 0) {
            *left = 1;
            continue;
        }
        int m = -1;
        if (sscanf(line, "<fast> m%d", &m) == 1)
            return m;
        fail_msg("%s: unexpected '%.80s'", p->name, line);
    }
}

static void test_slow_client(void **state)
{
    (void)state;
    peer_t *fast = join_as(0, "fast");
    peer_t *slow = peer_connect(&room.w[1].addr, 4096);   /* never reads */
    assert_non_null(slow);
    assert_int_equal(peer_send(slow, "/nick slow\n"), 0);
    expect(fast, "* slow joined");
    peer_t *watch = join_as(1, "watch");
    expect(fast, "* watch joined");
    char text[1100];
    int sent = 0, gone = 0, gone_fast = 0;
    /* Until the slow one is dropped: its kernel buffers fill first, then its
     * outbox; the other members keep getting every message meanwhile. */
    while (!gone && sent < 20000) {
        for (int k = 0; k < 20; k++, sent++) {
            snprintf(text, sizeof text, "m%05d %0900d", sent, 0);
            say(fast, text);
        }
        for (int k = sent - 20; k < sent; k++) {
            assert_int_equal(next_message(watch, &gone), k);
            assert_int_equal(next_message(fast, &gone_fast), k);
        }
    }
    fprintf(stderr, "slow client dropped after ~%d messages of 900 bytes\n", sent);
    assert_true(gone);
    for (int k = 0; k < 20; k++, sent++) {        /* the room goes on */
        snprintf(text, sizeof text, "m%05d after", sent);
        say(fast, text);
        assert_int_equal(next_message(watch, &gone), sent);
        assert_int_equal(next_message(fast, &gone_fast), sent);
    }
    assert_true(gone_fast);
    /* The slow one's connection ends once it reads: what it gets is whole lines,
     * the last of them the reason. */
    char line[1200];
    int r, lines = 0, last_reason = 0;
    while ((r = peer_line(slow, line, sizeof line, 10000)) >= 0) {
        int m;
        lines++;
        last_reason = strncmp(line, "* disconnected: too slow", 24) == 0;
        if (line[0] == '*' && line[1] == ' ')
            continue;
        if (sscanf(line, "<fast> m%d", &m) != 1 || strlen(line) != 914)
            fail_msg("slow client: a cut line (%zu bytes): '%.40s...%s'", strlen(line), line,
                     strlen(line) > 40 ? line + strlen(line) - 40 : "");
    }
    assert_true(r == -EPIPE || r == -ECONNRESET);
    assert_true(lines > 0);
    if (r == -EPIPE)
        assert_true(last_reason);
    peer_close(slow);
    say(fast, "/who");
    expect(fast, "* in the room (2): fast watch");
    peer_close(fast);
    peer_close(watch);
}

/* ---- a flood with small socket buffers (max_backlog=16384, sndbuf=4096) ----------------------------- */

#define FLOOD_LINES 1000
#define FLOOD_TEXT 900

typedef struct flooded {         /* one member's side of the flood, read without blocking */
    peer_t *p;
    size_t len;                  /* bytes in p->buf */
    int next;                    /* the message it expects next */
    int lost;                    /* a line out of order, dropped, or missed */
    char what[120];
} flooded_t;

/* Takes the whole lines in f->p->buf: flood messages must come in order; other
 * room lines (joins) are skipped; a drop or a gap ends it. */
static void flood_lines(flooded_t *f)
{
    char *b = f->p->buf, *nl;
    size_t used = 0;
    while (!f->lost && (nl = memchr(b + used, '\n', f->len - used))) {
        *nl = '\0';
        const char *line = b + used;
        int m;
        if (sscanf(line, "<w> m%d ", &m) == 1) {
            if (m != f->next) {
                f->lost = 1;
                snprintf(f->what, sizeof f->what, "message %d instead of %d", m, f->next);
            }
            f->next++;
        } else if (strncmp(line, "* disconnected", 14) == 0 || strncmp(line, "* missed", 8) == 0) {
            f->lost = 1;
            snprintf(f->what, sizeof f->what, "'%.100s' at message %d", line, f->next);
        }
        used = (size_t)(nl - b) + 1;
    }
    memmove(b, b + used, f->len - used);
    f->len -= used;
}

/* f[0] floods the room with FLOOD_LINES lines as fast as its socket takes them while
 * all n members read as fast as they can (within deadline_ms); each must get every
 * line in order. Returns the longest wait between two lines at f[n - 1]. */
static uint64_t flood_room(flooded_t *f, int n, unsigned deadline_ms)
{
    size_t line_len = 6 + 1 + FLOOD_TEXT + 1, total = line_len * FLOOD_LINES, off = 0;
    char *out = malloc(total + 1);  /* + the last snprintf's '\0' */
    assert_non_null(out);
    for (int i = 0; i < FLOOD_LINES; i++)
        snprintf(out + (size_t)i * line_len, line_len + 1, "m%05d %0*d\n", i, FLOOD_TEXT, 0);
    for (int i = 0; i < n; i++)
        f[i].len = f[i].p->len;    /* what join_as read ahead */
    uint64_t deadline = tu_clock_ns() + deadline_ms * 1000000ull, last = tu_clock_ns(), gap = 0;
    int done = 0;
    struct pollfd pf[4];
    assert_true(n <= 4);
    while (done < n && tu_clock_ns() < deadline) {
        for (int i = 0; i < n; i++)
            pf[i] = (struct pollfd){ .fd = f[i].p->fd, .events = POLLIN };
        if (off < total)
            pf[0].events |= POLLOUT;
        assert_true(poll(pf, (nfds_t)n, 1000) >= 0);
        if (pf[0].revents & POLLOUT) {
            ssize_t k = send(f[0].p->fd, out + off, total - off, MSG_DONTWAIT | MSG_NOSIGNAL);
            assert_true(k > 0 || errno == EAGAIN);
            if (k > 0)
                off += (size_t)k;
        }
        done = 0;
        for (int i = 0; i < n; i++) {
            if (pf[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                ssize_t k = recv(f[i].p->fd, f[i].p->buf + f[i].len, PEER_BUF - f[i].len, MSG_DONTWAIT);
                if (k == 0 || (k < 0 && errno != EAGAIN)) {
                    f[i].lost = 1;
                    snprintf(f[i].what, sizeof f[i].what, "closed at message %d", f[i].next);
                }
                if (k > 0) {
                    f[i].len += (size_t)k;
                    int before = f[i].next;
                    flood_lines(&f[i]);
                    if (i == n - 1 && f[i].next != before) {
                        uint64_t now = tu_clock_ns();
                        if (before > 0 && now - last > gap)
                            gap = now - last;
                        last = now;
                    }
                }
            }
            done += f[i].lost || f[i].next == FLOOD_LINES;
        }
    }
    free(out);
    for (int i = 0; i < n; i++) {
        if (f[i].lost || f[i].next != FLOOD_LINES)
            fail_msg("%s: %s (got %d of %d messages)", f[i].p->name, f[i].lost ? f[i].what : "timed out",
                     f[i].next, FLOOD_LINES);
        f[i].p->len = 0;
    }
    return gap;
}

/* One member floods the room with FLOOD_LINES lines as fast as its socket takes them,
 * while every member (the writer too, on either worker) reads as fast as it can. The
 * members' sockets take at most ~8 KiB a turn and their backlog limit is 16 KiB, so
 * the room must slow down to them: each gets every line, in order, and none is
 * dropped as too slow. */
static void test_flood_keeps_fast_readers(void **state)
{
    (void)state;
    flooded_t f[3] = { { .p = join_as(0, "w") }, { .p = join_as(0, "r0") }, { .p = join_as(1, "r1") } };
    expect(f[0].p, "* r0 joined");
    expect(f[0].p, "* r1 joined");
    expect(f[1].p, "* r1 joined");
    (void)flood_room(f, 3, 20000);
    say(f[1].p, "/who");                          /* nobody was dropped */
    assert_int_equal(peer_wait_for(f[1].p, "* in the room (3): r0 r1 w", T) >= 0, 1);
    for (int i = 0; i < 3; i++)
        peer_close(f[i].p);
}

/* Members that never read hold the room once, together: each one over the pace mark
 * held the reader for its own 500 ms, one after the other, so six of them stopped
 * every member's lines for three seconds. The longest gap between two lines at a
 * member that reads must stay well under that. */
#define NONREADERS 6

static void test_nonreaders_hold_once(void **state)
{
    (void)state;
    flooded_t f[2] = { { .p = join_as(0, "w") }, { .p = join_as(0, "r") } };
    expect(f[0].p, "* r joined");
    peer_t *idle[NONREADERS];
    for (int i = 0; i < NONREADERS; i++) {
        char line[64];
        idle[i] = peer_connect(&room.w[0].addr, 2048);   /* never reads */
        assert_non_null(idle[i]);
        snprintf(line, sizeof line, "/nick s%d\n", i);
        assert_int_equal(peer_send(idle[i], line), 0);
        snprintf(line, sizeof line, "* s%d joined", i);
        assert_true(peer_wait_for(f[1].p, line, T) >= 0);
    }
    uint64_t gap = flood_room(f, 2, 30000);
    fprintf(stderr, "# %d members that never read: the longest wait between two lines was %llu ms\n",
            NONREADERS, (unsigned long long)(gap / 1000000));
    if (gap >= 1200 * 1000000ull)   /* one hold: 500 ms; two in a row were the bug */
        fail_msg("the room stood still for %llu ms", (unsigned long long)(gap / 1000000));
    for (int i = 0; i < NONREADERS; i++)
        peer_close(idle[i]);
    for (int i = 0; i < 2; i++)
        peer_close(f[i].p);
}

/* ---- a reader that falls behind the ring (ring=16) ------------------------------------------------ */

static void test_missed(void **state)
{
    (void)state;
    peer_t *a = join_as(0, "a");
    peer_t *b = join_as(1, "b");
    expect(a, "* b joined");
    room_pause(&room, 1, 1);                     /* worker 1 stops reading the log */
    char text[64];
    for (int i = 0; i < 40; i++) {
        snprintf(text, sizeof text, "n%02d", i);
        say(a, text);
        snprintf(text, sizeof text, "<a> n%02d", i);
        expect(a, text);
    }
    room_pause(&room, 1, 0);
    char line[256];
    assert_true(peer_line(b, line, sizeof line, T) > 0);
    unsigned missed = 0;
    assert_int_equal(sscanf(line, "* missed %u messages", &missed), 1);
    assert_true(missed > 0 && missed < 40);
    for (unsigned i = missed; i < 40; i++) {   /* then the rest, in order */
        snprintf(text, sizeof text, "<a> n%02u", i);
        expect(b, text);
    }
    say(b, "back");
    expect(a, "<b> back");
    expect(b, "<b> back");
    peer_close(a);
    peer_close(b);
}

/* ---- drain ------------------------------------------------------------------------------------------ */

static void test_drain(void **state)
{
    (void)state;
    peer_t *a = join_as(0, "a");
    peer_t *b = join_as(1, "b");
    peer_t *c = connect_to(1);                   /* connected, not joined */
    say(c, "hi");
    expect(c, "* say /nick NAME first");          /* (so it is served when the drain comes) */
    expect(a, "* b joined");
    uint64_t t0 = tu_clock_ms();
    room_stop_worker(&room, 1, 5000);
    expect(b, "* server restarting");
    assert_int_equal(peer_wait_eof(b, T), 0);
    expect(c, "* server restarting");
    assert_int_equal(peer_wait_eof(c, T), 0);
    expect(a, "* b left");
    assert_int_equal(room_join_worker(&room, 1), 0);
    assert_int_equal(room.w[1].drain_result, 0);   /* everybody left before the deadline */
    assert_true(tu_clock_ms() - t0 < 3000);
    assert_int_equal(room.w[1].stats.open, 0);
    say(a, "/who");
    expect(a, "* in the room (1): a");
    peer_close(a);
    peer_close(b);
    peer_close(c);
}

/* ---- counters ---------------------------------------------------------------------------------------- */

static void test_stats(void **state)
{
    (void)state;
    peer_t *a = join_as(0, "a");
    static const char more[] = "one\ntwo\n/who\n";
    assert_int_equal(peer_send(a, more), 0);
    expect(a, "<a> one");
    expect(a, "<a> two");
    expect(a, "* in the room (1): a");
    say(a, "/quit");
    assert_int_equal(peer_wait_eof(a, T), 0);
    peer_close(a);
    room_stop_worker(&room, 0, 1000);
    assert_int_equal(room_join_worker(&room, 0), 0);
    iop_service_stats_t *s = &room.w[0].stats;
    assert_int_equal(s->connections, 1);
    assert_int_equal(s->open, 0);
    assert_int_equal(s->requests, 5);            /* /nick, two messages, /who, /quit */
    assert_int_equal(s->bytes_in, strlen("/nick a\n") + strlen(more) + strlen("/quit\n"));
    size_t out = strlen("* a joined\n<a> one\n<a> two\n* in the room (1): a\n");
    assert_int_equal(s->bytes_out, out);
    assert_int_equal(s->errors, 0);
}

/* ---- options ------------------------------------------------------------------------------------------ */

static void test_bad_options(void **state)
{
    (void)state;
    /* max_line=63: a 32-character "/nick NAME" would not fit */
    static const char *const bad[] = { "max_line=5", "max_line=63", "ring=100", "max_backlog=abc", "colour=red",
                                       "max_line= 100", "max_line=+100",
                                       "max_line=65536,max_backlog=1024" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        room_t r;
        fprintf(stderr, "(expected) ");
        assert_int_equal(room_open(&r, 1, bad[i]), -1);
    }
}

int main(int argc, char **argv)
{
    if (getenv("CHAT_TEST_FILTER"))
        cmocka_set_test_filter(getenv("CHAT_TEST_FILTER"));
    if (tu_backend_set(tu_backend_from_args(argc, argv)) < 0)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    alarm(120);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_nick_rules, two_workers, room_down),
        cmocka_unit_test_setup_teardown(test_fanout, two_workers, room_down),
        cmocka_unit_test_setup_teardown(test_burst, ring_64, room_down),
        cmocka_unit_test_setup_teardown(test_who_across_workers, two_workers, room_down),
        cmocka_unit_test_setup_teardown(test_join_leave, two_workers, room_down),
        cmocka_unit_test_setup_teardown(test_long_line, two_workers_short_lines, room_down),
        cmocka_unit_test_setup_teardown(test_commands, one_worker, room_down),
        cmocka_unit_test_setup_teardown(test_slow_client, small_backlog, room_down),
        cmocka_unit_test_setup_teardown(test_flood_keeps_fast_readers, small_backlog, room_down),
        cmocka_unit_test_setup_teardown(test_nonreaders_hold_once, small_backlog, room_down),
        cmocka_unit_test_setup_teardown(test_missed, small_ring, room_down),
        cmocka_unit_test_setup_teardown(test_drain, two_workers, room_down),
        cmocka_unit_test_setup_teardown(test_stats, one_worker, room_down),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
