#include <errno.h>
#include <string.h>
#include "ioplex/alloc.h"
#include "fdtable.h"

int iop__fdtable_reserve(iop__fdtable_t *t, int fd)
{
    if (fd < 0 || fd >= IOP__FD_MAX)
        return -EBADF;
    if ((uint32_t)fd < t->cap)
        return 0;
    uint32_t cap = t->cap ? t->cap : 64;
    while (cap <= (uint32_t)fd)
        cap *= 2;
    iop__fd_t *v = iop_realloc(t->v, cap * sizeof *v);
    if (!v)
        return -ENOMEM;
    memset(v + t->cap, 0, (cap - t->cap) * sizeof *v);
    t->v = v;
    if (t->bstate_size) {
        unsigned char *b = iop_realloc(t->bstate, (size_t)cap * t->bstate_size);
        if (!b)
            return -ENOMEM;   /* v grew but cap did not: still consistent */
        memset(b + (size_t)t->cap * t->bstate_size, 0, (size_t)(cap - t->cap) * t->bstate_size);
        t->bstate = b;
    }
    t->cap = cap;
    return 0;
}

void iop__fdtable_reset(iop__fdtable_t *t, int fd)
{
    iop__fd_t *e = &t->v[fd];
    uint8_t keep = e->flags & IOP__FD_IN_CHANGES;
    uint16_t gen = (uint16_t)(e->gen + 1);
    memset(e, 0, sizeof *e);
    e->flags = keep;
    e->gen = gen;
    if (t->bstate_size)
        memset(iop__fdtable_bstate(t, fd), 0, t->bstate_size);
}

void iop__fdtable_free(iop__fdtable_t *t)
{
    iop_free(t->v);
    iop_free(t->bstate);
    memset(t, 0, sizeof *t);
}
