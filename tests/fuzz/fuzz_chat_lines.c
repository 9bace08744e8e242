/* libFuzzer harness for the chat service's receiver (plugins/chat/chat_lines.c):
 * what a client sends, split into lines and acted on. The receiver runs against
 * stand-ins for the socket, the log, the nick table and the outbox, which record
 * what it does. The first input bytes pick max_line, how the bytes arrive (in
 * pieces of which sizes) and what the nick table answers; the rest is the stream.
 * Properties:
 *  - what the receiver does (lines put into the room, replies to the client), in
 *    order, is what a model of the protocol in plugins/chat/README.md says, written
 *    here from the whole stream at once: segmentation never matters;
 *  - a line put into the room or a reply is one line: it ends with its only '\n'
 *    and carries no other control character but tab; a room line fits the log's
 *    record;
 *  - the receiver never asks the socket for 0 bytes (that would read as the end).
 * Built with clang -fsanitize=fuzzer (run-fuzz.sh) and by gcc with replay_main.c. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "chat_internal.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- what happened: room lines ('R') and replies ('Q'), in order -------------------- */

typedef struct events {
    char *buf;
    size_t len, cap;
} events_t;

static void ev_add(events_t *e, char kind, const char *p, size_t n)
{
    if (e->len + n + 2 > e->cap) {
        size_t cap = (e->len + n + 2) * 2;
        char *b = realloc(e->buf, cap);
        CHECK(b);
        e->buf = b;
        e->cap = cap;
    }
    e->buf[e->len++] = kind;
    memcpy(e->buf + e->len, p, n);
    e->len += n;
}

static void ev_add_str(events_t *e, char kind, const char *s) { ev_add(e, kind, s, strlen(s)); }

/* One line: its only '\n' at the end, no control character but tab before it. */
static void check_one_line(const char *p, size_t n)
{
    CHECK(n >= 1 && p[n - 1] == '\n');
    for (size_t i = 0; i + 1 < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        CHECK((ch >= 0x20 && ch != 0x7f) || ch == '\t');
    }
}

/* ---- the stand-ins --------------------------------------------------------------------- */

static struct {
    const uint8_t *in;             /* the client's bytes */
    size_t size, pos;
    uint32_t seed;                 /* piece sizes */
    int small_pieces;
    uint8_t claims;                /* 2 bits a claim: what the nick table answers */
    unsigned nclaims;
    uint64_t seq;
    events_t got;
} S;

static int claim_answer(uint8_t claims, unsigned k)
{
    static const int answers[4] = { 0, -EEXIST, -ENOSPC, 0 };
    return answers[(claims >> (2 * (k % 4))) & 3];
}

ssize_t iop_recv(int fd, void *buf, size_t len, int flags, uint64_t deadline)
{
    (void)fd, (void)flags, (void)deadline;
    CHECK(len > 0);
    if (S.pos == S.size)
        return 0;
    S.seed = S.seed * 1103515245u + 12345u;
    size_t piece = 1 + (S.seed >> 16) % (S.small_pieces ? 7 : 6000);
    size_t n = S.size - S.pos;
    if (n > piece)
        n = piece;
    if (n > len)
        n = len;
    memcpy(buf, S.in + S.pos, n);
    S.pos += n;
    return (ssize_t)n;
}

iop_coro_t *iop_self(void) { return NULL; }
int iop_cancelled(void) { return 0; }
void iop_free(void *p) { free(p); }
void iop_sem_release(iop_sem_t *s) { (void)s; }

int chat_log_lock(chat_log_t *log) { (void)log; return 0; }
void chat_log_unlock(chat_log_t *log, int put) { (void)log, (void)put; }

uint64_t chat_log_put(chat_log_t *log, const char *line, size_t len)
{
    CHECK(len <= log->line_cap);
    check_one_line(line, len);
    ev_add(&S.got, 'R', line, len);
    return S.seq++;
}

int chat_names_claim(chat_state_t *st, const char *nick, const chat_owner_t *me, int *stale)
{
    (void)st, (void)me;
    CHECK(chat_nick_valid(nick, strlen(nick)));
    *stale = 0;
    return claim_answer(S.claims, S.nclaims++);
}

int chat_nick_valid(const char *nick, size_t len)
{
    if (len < 1 || len > CHAT_NICK_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", nick[i]) || !nick[i])
            return 0;
    return 1;
}

char *chat_names_who(chat_state_t *st, size_t *len)
{
    (void)st;
    static const char line[] = "* in the room (1): a\n";
    char *p = malloc(sizeof line);
    CHECK(p);
    memcpy(p, line, sizeof line);
    *len = sizeof line - 1;
    return p;
}

chat_owner_t chat_worker_owner(const chat_worker_t *w)
{
    (void)w;
    chat_owner_t o = { 0 };
    return o;
}

int chat_worker_wait_delivered(chat_worker_t *w, uint64_t seq) { (void)w, (void)seq; return 0; }
int chat_worker_throttle(chat_worker_t *w) { (void)w; return 0; }

void chat_client_queue(chat_client_t *c, const char *p, size_t n)
{
    (void)c;
    check_one_line(p, n);
    ev_add(&S.got, 'Q', p, n);
}

void chat_client_queue_str(chat_client_t *c, const char *s) { chat_client_queue(c, s, strlen(s)); }
void chat_client_end(chat_client_t *c) { c->ending = 1; }

/* ---- the model: the protocol, from the whole stream ------------------------------------ */

static char safe_char(char c)
{
    unsigned char ch = (unsigned char)c;
    return (char)((ch < 0x20 && ch != '\t') || ch == 0x7f ? '?' : ch);
}

static int starts_command(const char *p, size_t n, const char *cmd)
{
    size_t k = strlen(cmd);
    return n >= k && memcmp(p, cmd, k) == 0 && (n == k || p[k] == ' ');
}

typedef struct model {
    events_t want;
    char nick[CHAT_NICK_MAX + 1];
    int joined;
    unsigned nclaims;
    uint8_t claims;
} model_t;

static void model_say(model_t *m, const char *p, size_t n)
{
    char *line = malloc(n + CHAT_NICK_MAX + 8);
    CHECK(line);
    size_t k = (size_t)sprintf(line, "<%s> ", m->nick);
    for (size_t i = 0; i < n; i++)
        line[k++] = safe_char(p[i]);
    line[k++] = '\n';
    ev_add(&m->want, 'R', line, k);
    free(line);
}

static void model_nick(model_t *m, const char *p, size_t n)
{
    char buf[64 + CHAT_NICK_MAX];
    while (n && *p == ' ')
        p++, n--;
    while (n && p[n - 1] == ' ')
        n--;
    if (m->joined) {
        snprintf(buf, sizeof buf, "* you are %s\n", m->nick);
        ev_add_str(&m->want, 'Q', buf);
        return;
    }
    if (n < 1 || n > CHAT_NICK_MAX || memchr(p, '\0', n) || !chat_nick_valid(p, n)) {
        ev_add_str(&m->want, 'Q', "* bad nick: use 1 to 32 letters, digits, _ or -\n");
        return;
    }
    int r = claim_answer(m->claims, m->nclaims++);
    if (r == 0) {
        memcpy(m->nick, p, n);
        m->nick[n] = '\0';
        m->joined = 1;
        snprintf(buf, sizeof buf, "* %s joined\n", m->nick);
        ev_add_str(&m->want, 'R', buf);
    } else if (r == -EEXIST) {
        snprintf(buf, sizeof buf, "* nick %.*s is taken\n", (int)n, p);
        ev_add_str(&m->want, 'Q', buf);
    } else {
        ev_add_str(&m->want, 'Q', "* the room is full\n");
    }
}

/* One line, without its end: 0 to go on, 1 once the client quits. */
static int model_line(model_t *m, const char *p, size_t n, uint32_t max_line)
{
    if (n > max_line) {
        ev_add_str(&m->want, 'Q', "* line too long\n");
        return 0;
    }
    if (starts_command(p, n, "/quit"))
        return 1;
    if (starts_command(p, n, "/nick")) {
        model_nick(m, p + 5, n - 5);
        return 0;
    }
    if (n == 0)
        return 0;
    if (!m->joined) {
        ev_add_str(&m->want, 'Q', "* say /nick NAME first\n");
    } else if (p[0] != '/') {
        model_say(m, p, n);
    } else if (n >= 2 && p[1] == '/') {
        model_say(m, p + 1, n - 1);
    } else if (starts_command(p, n, "/who")) {
        ev_add_str(&m->want, 'Q', "* in the room (1): a\n");
    } else {
        char buf[160];
        size_t w = 0;
        while (w < n && w < 40 && p[w] != ' ')
            w++;
        size_t k = (size_t)snprintf(buf, sizeof buf, "* unknown command ");
        for (size_t i = 0; i < w; i++)
            buf[k++] = safe_char(p[i]);
        snprintf(buf + k, sizeof buf - k, " (try /who, /quit, or // to start a line with /)\n");
        ev_add_str(&m->want, 'Q', buf);
    }
    return 0;
}

/* Lines end with "\n" or "\r\n"; the last one may lack its end (the client closed). */
static void model_run(model_t *m, const char *s, size_t size, uint32_t max_line)
{
    size_t start = 0;
    while (start < size) {
        const char *nl = memchr(s + start, '\n', size - start);
        size_t end = nl ? (size_t)(nl - s) : size;
        size_t n = end - start;
        if (n && s[start + n - 1] == '\r')
            n--;
        if (model_line(m, s + start, n, max_line))
            return;
        start = end + 1;
    }
}

/* ---- one input ----------------------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint32_t max_lines[] = { CHAT_MIN_LINE, 65, 100, 1024, 4094, 4095, 5000 };
    if (size < 3)
        return 0;
    uint32_t max_line = max_lines[data[0] % (sizeof max_lines / sizeof *max_lines)];
    memset(&S, 0, sizeof S);
    S.seed = data[1];
    S.small_pieces = data[1] & 1;
    S.claims = data[2];
    S.in = data + 3;
    S.size = size - 3;

    chat_log_t *log = calloc(1, sizeof *log);
    CHECK(log);
    log->line_cap = max_line + CHAT_NICK_MAX + 4;      /* as chat_service.c makes it */
    chat_state_t st = { .max_line = max_line, .log = log };
    chat_worker_t w = { .st = &st };
    iop_service_stats_t stats = { 0 };
    iop_service_conn_t conn = { .fd = -1, .stats = &stats };
    chat_client_t c = { .w = &w, .conn = &conn };
    c.in_cap = st.max_line + 2 > 4096 ? st.max_line + 2 : 4096;   /* as chat_conn.c does */
    c.in = malloc(c.in_cap);
    c.line = malloc(log->line_cap);
    CHECK(c.in && c.line);

    chat_receiver_main(&c);
    CHECK(c.ending);

    model_t m = { .claims = S.claims };
    model_run(&m, (const char *)S.in, S.size, max_line);
    CHECK(S.got.len == m.want.len && (!m.want.len || memcmp(S.got.buf, m.want.buf, m.want.len) == 0));

    free(m.want.buf);
    free(S.got.buf);
    free(c.in);
    free(c.line);
    free(log);
    return 0;
}
