/* ioplex — finding and inspecting plugin modules.
 *
 * Search order for a module `iop_<kind>_<name>.so`: the caller's path (an option such
 * as --plugin-path), then $IOPLEX_PLUGIN_PATH, then the build tree, then the install
 * dir. A copy of libioplex installed (a shared library outside its build tree)
 * never searches the build tree, and looks in <its own dir>/ioplex/<kind>s before
 * the install dir configured at build time. The first file found for a name is the
 * one used; if it is broken it is refused, never silently replaced by a later one. */
#ifndef IOPLEX_PLUGIN_H
#define IOPLEX_PLUGIN_H

#include "common.h"
#include "backend.h"

typedef struct iop_backend_info {
    char name[64];
    char path[4096];           /* file it was (or would be) loaded from */
    const iop_backend_desc_t *desc;  /* NULL if the module was refused */
    int load_err;              /* 0, or -errno when refused */
    int probe_err;             /* 0 when the probe passes here, else -errno */
    char why[512];             /* reason for a refusal or a failed probe */
} iop_backend_info_t;

/* Lists every backend module found on the search path (first of each name), loads
 * each and runs its probe, except for those named in $IOPLEX_BACKEND_AVOID (probe_err
 * -ECANCELED: some sandboxes kill a process on a probe's syscall). *out is an array
 * of *count entries, freed with iop_backend_list_free. Returns 0 or -errno. */
IOP_EXPORT int iop_backend_list(const char *plugin_path, iop_backend_info_t **out, size_t *count);
IOP_EXPORT void iop_backend_list_free(iop_backend_info_t *list);

/* The directories searched, in order, as one ':'-separated string written to buf. */
IOP_EXPORT const char *iop_plugin_search_path(const char *plugin_path, char *buf, size_t len);

/* The order auto probes backends in. */
#define IOP_AUTO_ORDER "uring,epoll,poll,select"

#endif
