/* A client's outbox: the bytes its sender has still to write, as a list of chunks.
 * An idle client holds no chunk; a busy one allocates a chunk per few KiB, not per
 * line. Chunks are never moved or grown, so the head chunk can be in a send while
 * the reader appends to the tail. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "chat_internal.h"

#define CHUNK_BYTES 4096u

int chat_outbox_put(chat_outbox_t *o, const char *p, size_t n)
{
    while (n) {
        chat_chunk_t *t = o->tail;
        if (!t || t->len == t->cap) {
            size_t cap = n > CHUNK_BYTES ? n : CHUNK_BYTES;
            t = iop_malloc(sizeof *t + cap);
            if (!t)
                return -ENOMEM;
            t->next = NULL;
            t->len = 0;
            t->cap = (uint32_t)cap;
            if (o->tail)
                o->tail->next = t;
            else
                o->head = t;
            o->tail = t;
        }
        size_t k = t->cap - t->len < n ? t->cap - t->len : n;
        memcpy(t->data + t->len, p, k);
        t->len += (uint32_t)k;
        o->queued += k;
        p += k;
        n -= k;
    }
    return 0;
}

size_t chat_outbox_peek(const chat_outbox_t *o, const char **p)
{
    if (!o->head)
        return 0;
    *p = o->head->data + o->off;
    return o->head->len - o->off;
}

void chat_outbox_consume(chat_outbox_t *o, size_t n)
{
    o->off += (uint32_t)n;
    o->queued -= n;
    chat_chunk_t *h = o->head;
    if (o->off < h->len)
        return;
    /* The head is done. The tail too (so nothing is queued): free it as well, an
     * idle client keeps no memory. */
    o->head = h->next;
    if (!o->head)
        o->tail = NULL;
    o->off = 0;
    iop_free(h);
}

void chat_outbox_drop_tail(chat_outbox_t *o)
{
    chat_chunk_t *keep = o->head;
    if (!keep)
        return;
    /* The head may be in a send, so it stays whole; a line it ends in the middle
     * of is kept to its end from the chunks after it, so that the client never
     * reads half a line glued to what comes next. */
    chat_chunk_t *c = keep->next;
    if (keep->data[keep->len - 1] != '\n') {
        for (; c; keep = c, c = c->next) {
            char *nl = memchr(c->data, '\n', c->len);
            if (nl) {
                uint32_t cut = (uint32_t)(nl - c->data) + 1;
                o->queued -= c->len - cut;
                c->len = cut;
                keep = c;
                c = c->next;
                break;
            }
        }
    }
    for (chat_chunk_t *next; c; c = next) {
        next = c->next;
        o->queued -= c->len;
        iop_free(c);
    }
    keep->next = NULL;
    o->tail = keep;
}

void chat_outbox_free(chat_outbox_t *o)
{
    for (chat_chunk_t *c = o->head, *next; c; c = next) {
        next = c->next;
        iop_free(c);
    }
    memset(o, 0, sizeof *o);
}
