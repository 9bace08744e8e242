/* The receiver: splits what a client sends into lines and acts on each one (the
 * protocol is in README.md). A line longer than max_line gets "* line too long"
 * once and the rest of it is skipped; the connection stays usable. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "chat_internal.h"

/* A reply to this client alone; fmt takes one "%.*s" (arg, arglen). */
/* arg is the client's own text: its control characters come back as '?', as they
 * do in the room, so that a reply never carries terminal escapes. */
static void reply(chat_client_t *c, const char *fmt, const char *arg, size_t arglen)
{
    char safe[64], buf[CHAT_NICK_MAX + 160];
    if (arglen > sizeof safe)
        arglen = sizeof safe;
    for (size_t i = 0; i < arglen; i++) {
        unsigned char ch = (unsigned char)arg[i];
        safe[i] = (char)((ch < 0x20 && ch != '\t') || ch == 0x7f ? '?' : ch);
    }
    int n = snprintf(buf, sizeof buf, fmt, (int)arglen, safe);
    chat_client_queue(c, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* Takes nick (checked) and announces the join, both under the log lock. */
static int join(chat_client_t *c, const char *nick, size_t len)
{
    chat_worker_t *w = c->w;
    chat_state_t *st = w->st;
    char name[CHAT_NICK_MAX + 1], line[CHAT_NICK_MAX + 16];
    memcpy(name, nick, len);
    name[len] = '\0';
    chat_owner_t me = chat_worker_owner(w);
    int r = chat_log_lock(st->log);
    if (r < 0)
        return r;
    int stale = 0;
    r = chat_names_claim(st, name, &me, &stale);
    if (r == 0) {
        if (stale) {             /* its owner's worker died: say so first */
            int n = snprintf(line, sizeof line, "* %s left\n", name);
            chat_log_put(st->log, line, (size_t)n);
        }
        int n = snprintf(line, sizeof line, "* %s joined\n", name);
        c->from_seq = chat_log_put(st->log, line, (size_t)n);
        memcpy(c->nick, name, len + 1);
        c->joined = 1;
    }
    chat_log_unlock(st->log, r == 0);
    if (r == 0)
        return chat_worker_wait_delivered(w, c->from_seq);
    if (r == -EEXIST)
        reply(c, "* nick %.*s is taken\n", name, len);
    else if (r == -ENOSPC)
        chat_client_queue_str(c, "* the room is full\n");
    else if (r < 0)
        return r;
    return 0;
}

static int nick_command(chat_client_t *c, const char *arg, size_t len)
{
    while (len && *arg == ' ') {
        arg++;
        len--;
    }
    while (len && arg[len - 1] == ' ')
        len--;
    if (c->joined) {
        reply(c, "* you are %.*s\n", c->nick, strlen(c->nick));
        return 0;
    }
    if (!chat_nick_valid(arg, len)) {
        chat_client_queue_str(c, "* bad nick: use 1 to 32 letters, digits, _ or -\n");
        return 0;
    }
    return join(c, arg, len);
}

/* "<nick> text": control characters become '?' (a line cannot fake another). */
static int say(chat_client_t *c, const char *text, size_t len)
{
    chat_log_t *log = c->w->st->log;
    size_t n = (size_t)snprintf(c->line, log->line_cap, "<%s> ", c->nick);
    for (size_t i = 0; i < len && n < log->line_cap - 1; i++) {
        unsigned char ch = (unsigned char)text[i];
        c->line[n++] = (char)((ch < 0x20 && ch != '\t') || ch == 0x7f ? '?' : ch);
    }
    c->line[n++] = '\n';
    int r = chat_log_lock(log);
    if (r < 0)
        return r;
    uint64_t seq = chat_log_put(log, c->line, n);
    chat_log_unlock(log, 1);
    r = chat_worker_wait_delivered(c->w, seq);
    return r < 0 ? r : chat_worker_throttle(c->w);
}

static int who(chat_client_t *c)
{
    size_t len;
    char *line = chat_names_who(c->w->st, &len);
    if (!line) {
        if (iop_cancelled())
            return -ECANCELED;
        chat_client_queue_str(c, "* cannot list the room now\n");
        return 0;
    }
    chat_client_queue(c, line, len);
    iop_free(line);
    return 0;
}

static int is_command(const char *line, size_t len, const char *cmd)
{
    size_t k = strlen(cmd);
    return len >= k && memcmp(line, cmd, k) == 0 && (len == k || line[k] == ' ');
}

/* 0: go on; 1: the client quits; -errno: stop (cancelled). */
static int handle_line(chat_client_t *c, const char *line, size_t len)
{
    if (is_command(line, len, "/quit"))
        return 1;
    if (is_command(line, len, "/nick"))
        return nick_command(c, line + 5, len - 5);
    if (len == 0)
        return 0;                          /* ignored, joined or not */
    if (!c->joined) {
        chat_client_queue_str(c, "* say /nick NAME first\n");
        return 0;
    }
    if (line[0] != '/')
        return say(c, line, len);
    if (len >= 2 && line[1] == '/')          /* "//text" says "/text" */
        return say(c, line + 1, len - 1);
    if (is_command(line, len, "/who"))
        return who(c);
    size_t word = 0;
    while (word < len && word < 40 && line[word] != ' ')
        word++;
    reply(c, "* unknown command %.*s (try /who, /quit, or // to start a line with /)\n", line, word);
    return 0;
}

/* Acts on every complete line in the buffer and keeps the partial one. */
static int split_lines(chat_client_t *c)
{
    uint32_t max_line = c->w->st->max_line;
    size_t start = 0;
    for (;;) {
        char *line = c->in + start;
        char *nl = memchr(line, '\n', c->in_len - start);
        if (!nl)
            break;
        size_t len = (size_t)(nl - line);
        start += len + 1;
        if (c->discarding) {     /* the end of a line already refused */
            c->discarding = 0;
            continue;
        }
        if (len && line[len - 1] == '\r')
            len--;
        c->conn->stats->requests++;
        if (len > max_line) {
            chat_client_queue_str(c, "* line too long\n");
            continue;
        }
        int r = handle_line(c, line, len);
        if (r != 0)
            return r;
        if (c->ending)
            return 1;
    }
    size_t rest = c->in_len - start;
    if (c->discarding) {
        rest = 0;
    } else if (rest > (size_t)max_line + 1) {  /* + 1: a '\r' may still come before '\n' */
        chat_client_queue_str(c, "* line too long\n");
        c->discarding = 1;
        rest = 0;
    }
    memmove(c->in, c->in + start, rest);
    c->in_len = rest;
    return 0;
}

void *chat_receiver_main(void *arg)
{
    chat_client_t *c = arg;
    c->receiver = iop_self();
    while (!c->ending) {
        ssize_t n = iop_recv(c->conn->fd, c->in + c->in_len, c->in_cap - c->in_len, 0, 0);
        if (n == 0 && c->in_len && !c->discarding && c->in_len < c->in_cap) {
            /* The client's last line lacked its newline: it still counts. */
            c->in[c->in_len++] = '\n';
            (void)split_lines(c);
        }
        if (n <= 0)
            break;
        c->conn->stats->bytes_in += (uint64_t)n;
        c->in_len += (size_t)n;
        if (split_lines(c) != 0)
            break;
    }
    c->receiver = NULL;
    c->recv_running = 0;
    iop_sem_release(&c->recv_done);
    chat_client_end(c);
    return NULL;
}
