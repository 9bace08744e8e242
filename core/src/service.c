/* Service plugins: loading iop_service_<name>.so through the plugin loader and
 * checking its descriptor; the host-side helpers for options. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ioplex.h"
#include "ioplex/service.h"
#include "error_internal.h"
#include "loader.h"

struct iop_service {
    iop__module_t mod;
};

/* Refuses a descriptor too small, without serve, or named unlike its file (the
 * loader refused one of another ABI before reading anything else of it). */
static int check_desc(const void *sym, const char *name, char *why, size_t whylen)
{
    const iop_service_desc_t *d = sym;
    if (d->desc_size < sizeof *d) {
        snprintf(why, whylen, "descriptor is %u bytes, service ABI %u needs %zu",
                 d->desc_size, IOP_SERVICE_ABI_VERSION, sizeof *d);
        return -EPROTO;
    }
    if (!d->name || !d->serve) {
        snprintf(why, whylen, "descriptor has no %s", !d->name ? "name" : "serve");
        return -EPROTO;
    }
    if (strcmp(d->name, name) != 0) {
        snprintf(why, whylen, "descriptor names itself '%.63s', the file name says '%s'",
                 d->name, name);
        return -EPROTO;
    }
    return 0;
}

int iop_service_open(iop_service_t **out, const char *name, const char *plugin_path)
{
    if (!out || !name)
        return iop__fail(-EINVAL, "iop_service_open: NULL argument");
    *out = NULL;
    iop_service_t *s = iop_calloc(1, sizeof *s);
    if (!s)
        return iop__fail(-ENOMEM, "iop_service_open: out of memory");
    char why[1024];
    int r = iop__module_open("service", name, plugin_path, IOP_SERVICE_SYMBOL, &s->mod,
                             why, sizeof why);
    if (r == 0) {
        r = check_desc(s->mod.desc, name, why, sizeof why);
        if (r < 0) {
            iop__fail(r, "%s: %s", s->mod.path, why);
            iop__module_close(&s->mod);
            iop_free(s);
            return r;
        }
    }
    if (r < 0) {
        iop_free(s);
        return iop__fail(r, "%s", why);
    }
    *out = s;
    return 0;
}

const iop_service_desc_t *iop_service_desc(const iop_service_t *s)
{
    return s ? (const iop_service_desc_t *)(const void *)s->mod.desc : NULL;
}

const char *iop_service_path(const iop_service_t *s)
{
    return s ? s->mod.path : "";
}

void iop_service_close(iop_service_t *s)
{
    if (!s)
        return;
    iop__module_close(&s->mod);
    iop_free(s);
}

/* ---- listing ------------------------------------------------------------------------ */

/* The allocation: a header with the count, the entries, then the modules (kept
 * open so the descriptors stay valid until iop_service_list_free). */
typedef union list_head {
    size_t count;
    max_align_t align;
} list_head_t;

static iop__module_t *list_mods(iop_service_info_t *list, size_t count)
{
    return (iop__module_t *)(void *)(list + count);
}

int iop_service_list(const char *plugin_path, iop_service_info_t **out, size_t *count)
{
    if (!out || !count)
        return iop__fail(-EINVAL, "iop_service_list: NULL argument");
    *out = NULL;
    *count = 0;
    iop__found_t *v = NULL;
    size_t n = 0;
    int r = iop__module_list("service", plugin_path, &v, &n);
    if (r < 0)
        return iop__fail(r, "iop_service_list: %s", iop_strerror(r));
    list_head_t *head = iop_calloc(1, sizeof *head + n * (sizeof(iop_service_info_t) + sizeof(iop__module_t)));
    if (!head) {
        iop_free(v);
        return iop__fail(-ENOMEM, "iop_service_list: out of memory");
    }
    head->count = n;
    iop_service_info_t *list = (iop_service_info_t *)(head + 1);
    iop__module_t *mods = list_mods(list, n);
    for (size_t i = 0; i < n; i++) {
        iop_service_info_t *info = &list[i];
        memcpy(info->name, v[i].name, sizeof info->name);
        memcpy(info->path, v[i].path, sizeof info->path);
        info->load_err = iop__module_load("service", &v[i], IOP_SERVICE_SYMBOL, &mods[i],
                                          info->why, sizeof info->why);
        if (info->load_err == 0)
            info->load_err = check_desc(mods[i].desc, info->name, info->why, sizeof info->why);
        if (info->load_err < 0) {
            iop__module_close(&mods[i]);
            continue;
        }
        info->desc = (const iop_service_desc_t *)(const void *)mods[i].desc;
    }
    iop_free(v);
    *out = list;
    *count = n;
    return 0;
}

void iop_service_list_free(iop_service_info_t *list)
{
    if (!list)
        return;
    list_head_t *head = (list_head_t *)list - 1;
    iop__module_t *mods = list_mods(list, head->count);
    for (size_t i = 0; i < head->count; i++)
        iop__module_close(&mods[i]);
    iop_free(head);
}

/* ---- options ------------------------------------------------------------------------- */

int iop_service_parse_opts(char *text, iop_service_opt_t *opts, size_t max)
{
    size_t n = 0;
    if (!text || !*text)
        return 0;
    for (char *p = text; p;) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        char *eq = strchr(p, '=');
        if (eq)
            *eq = '\0';
        if (!*p)
            return -EINVAL;
        if (n == max)
            return -E2BIG;
        opts[n].key = p;
        opts[n].value = eq ? eq + 1 : "";
        n++;
        p = comma ? comma + 1 : NULL;
    }
    return (int)n;
}

const char *iop_service_opt(const iop_service_cfg_t *cfg, const char *key)
{
    for (size_t i = 0; cfg && i < cfg->nopts; i++)
        if (strcmp(cfg->opts[i].key, key) == 0)
            return cfg->opts[i].value;
    return NULL;
}

int iop_service_opt_number(const char *service, const iop_service_opt_t *opt, long long lo, long long hi,
                           long long *out, char *err, size_t errlen)
{
    const char *v = opt->value;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);   /* digits only: no sign, no space */
    if (*v < '0' || *v > '9' || *end || errno || x < lo || x > hi) {
        snprintf(err, errlen, "%s: %s=%s: want a number from %lld to %lld", service, opt->key, v, lo, hi);
        return -EINVAL;
    }
    *out = x;
    return 0;
}
