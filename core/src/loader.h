/* Internal: loading backend modules (libltdl) and choosing one for a loop. */
#ifndef IOP_LOADER_H
#define IOP_LOADER_H

#include "ioplex/backend.h"
#include "ioplex/loop.h"

typedef struct iop__module {
    void *handle;                     /* lt_dlhandle, NULL when closed */
    const iop_backend_desc_t *desc;
    char name[64];
    char path[4096];
} iop__module_t;

/* Finds iop_backend_<name>.so on the search path (plugin_path, $IOPLEX_PLUGIN_PATH,
 * build tree, install dir), opens it, checks the ABI and the descriptor, runs the
 * probe. 0 with *mod filled, or -errno with a one-line reason (naming the file) in
 * why: -ENOENT no such module, -ENOEXEC not a loadable module or no descriptor,
 * -EPROTO wrong ABI / malformed descriptor, the probe's own error if it fails. */
int iop__module_open(const char *kind, const char *name, const char *plugin_path,
                     const char *symbol, iop__module_t *mod, char *why, size_t whylen);
void iop__module_close(iop__module_t *mod);

/* A module file found on the search path. */
typedef struct iop__found {
    char name[64];
    char path[4096];
} iop__found_t;

/* Every iop_<kind>_*.so on the search path (the first of each name), sorted by
 * name; *out is freed with iop_free. 0 or -errno. */
int iop__module_list(const char *kind, const char *plugin_path, iop__found_t **out, size_t *count);

/* Opens the module found at f->path and looks up symbol (no probe; for kinds
 * other than backend the descriptor's ABI only). 0 or -errno with why. */
int iop__module_load(const char *kind, const iop__found_t *f, const char *symbol,
                     iop__module_t *mod, char *why, size_t whylen);

/* Called by the chooser for each candidate that loaded and probed: 0 when an
 * instance was made, -errno (reason in why) to pass it over. */
typedef int (*iop__try_fn)(void *ctx, iop__module_t *mod, char *why, size_t whylen);

/* Chooses the backend: opts->backend > $IOPLEX_BACKEND > "auto". An explicit name
 * is loaded and tried, or fails (an unknown name lists the available ones). auto
 * tries IOP_AUTO_ORDER, skipping names in opts->avoid / $IOPLEX_BACKEND_AVOID, and
 * takes the first whose try succeeds. On success *mod holds the module and report
 * says what was taken and why each earlier candidate was passed over. On failure
 * returns -errno with the reason set via iop__fail (iop_last_error). */
int iop__backend_choose(const iop_loop_opts_t *opts, iop__try_fn try_create, void *ctx,
                        iop__module_t *mod, char *report, size_t reportlen);

/* The backend name iop__backend_choose will load for a request of name (NULL, ""
 * and "auto" defer to $IOPLEX_BACKEND), or NULL when auto will choose. */
const char *iop__backend_asked(const char *name);

/* Checks a module file before the dynamic linker maps it (module_check.c): a
 * regular ELF shared object for this machine whose segments are all in the file,
 * and, with symbol, one that defines it among its dynamic symbols. 1 with *first =
 * the first 4 bytes of symbol's value (a descriptor's ABI version) and *sym_size =
 * its size as the symbol table gives it (0 = unknown), 0 when that cannot be read
 * from the file (or symbol is NULL), or -errno with the reason in why (-ENOEXEC "no
 * descriptor symbol" when the file does not define symbol). */
int iop__module_check(const char *path, const char *symbol, uint32_t *first, uint64_t *sym_size,
                      char *why, size_t whylen);

#endif
