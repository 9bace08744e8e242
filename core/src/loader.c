/* The plugin loader: finds iop_<kind>_<name>.so on the search path, opens it with
 * libltdl, checks its descriptor before running any of its code, and chooses the
 * backend a loop runs on (explicit name, $IOPLEX_BACKEND, or auto). */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <ltdl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "error_internal.h"
#include "ioplex/alloc.h"
#include "ioplex/plugin.h"
#include "ioplex/service.h"
#include "ioplex_paths.h"
#include "loader.h"

#define NAME_LEN 64       /* iop__module_t.name, iop_backend_info_t.name */
#define PATH_LEN 4096     /* iop__module_t.path, iop_backend_info_t.path */
#define DIRS_LEN 8192     /* the whole ':'-joined search path */
#define WHY_LEN 1024

/* ---- small helpers ------------------------------------------------------------ */

/* Writes a reason into why and returns err, so a refusal is one statement. */
__attribute__((format(printf, 4, 5)))
static int say(int err, char *why, size_t whylen, const char *fmt, ...)
{
    if (whylen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return err;
}

/* Appends to a NUL-terminated buffer, truncating quietly when it is full. */
__attribute__((format(printf, 3, 4)))
static void append(char *buf, size_t len, const char *fmt, ...)
{
    size_t used = strnlen(buf, len);
    if (used + 1 >= len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + used, len - used, fmt, ap);
    va_end(ap);
}

/* Module names become part of a file name: letters, digits, '_' and '-' only. */
static int valid_name(const char *name, size_t n)
{
    if (n == 0 || n >= NAME_LEN)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int is_auto(const char *name) { return !name || !*name || strcmp(name, "auto") == 0; }

/* The next entry of a ','-separated list, blanks around it dropped: its start and
 * length (0 for an empty one); where the list goes on, or NULL at its end. */
static const char *list_next(const char *p, const char **start, size_t *len)
{
    while (*p == ' ' || *p == '\t' || *p == ',')
        p++;
    if (!*p)
        return NULL;
    const char *end = p;
    while (*end && *end != ',')
        end++;
    const char *last = end;
    while (last > p && (last[-1] == ' ' || last[-1] == '\t'))
        last--;
    *start = p;
    *len = (size_t)(last - p);
    return end;
}

/* Is name one of the entries of a ','-separated list (spaces around entries allowed)? */
static int in_list(const char *list, const char *name)
{
    size_t n = strlen(name), len;
    const char *start;
    for (const char *p = list; p && (p = list_next(p, &start, &len));)
        if (len == n && memcmp(start, name, n) == 0)
            return 1;
    return 0;
}

/* ---- the search path ---------------------------------------------------------- */

static int dirs_contains(const char *dirs, const char *dir, size_t n)
{
    for (const char *p = dirs; *p;) {
        const char *end = strchrnul(p, ':');
        if ((size_t)(end - p) == n && memcmp(p, dir, n) == 0)
            return 1;
        p = *end ? end + 1 : end;
    }
    return 0;
}

/* Appends each dir of a ':'-separated list, skipping empty ones and repeats. */
static int dirs_add(char *dirs, size_t len, const char *list)
{
    size_t used = strlen(dirs);
    for (const char *p = list; p && *p;) {
        const char *end = strchrnul(p, ':');
        size_t n = (size_t)(end - p);
        if (n >= PATH_LEN - NAME_LEN - 32)
            return -ENAMETOOLONG;  /* leave room for "/iop_<kind>_<name>.so" */
        if (n && !dirs_contains(dirs, p, n)) {
            if (used + (used != 0) + n + 1 > len)
                return -ENAMETOOLONG;
            if (used)
                dirs[used++] = ':';
            memcpy(dirs + used, p, n);
            used += n;
            dirs[used] = '\0';
        }
        p = *end ? end + 1 : end;
    }
    return 0;
}

/* The dir this copy of libioplex was loaded from, resolved, into buf; and in
 * *installed whether it is a shared library outside the build tree it was built in.
 * A static copy (dladdr names the program then) counts as not installed. NULL if
 * unknown. */
static const char *library_dir(char *buf, size_t len, int *installed)
{
    *installed = 0;
    Dl_info info;
    if (!dladdr((void *)&iop_backend_list, &info) || !info.dli_fname)
        return NULL;
    char lib[PATH_MAX];
    if (!realpath(info.dli_fname, lib))   /* "prefix/bin/../lib/..." through an rpath */
        return NULL;
    char *slash = strrchr(lib, '/');
    if (!slash)
        return NULL;
    *slash = '\0';
    char build[PATH_MAX];
    if (strncmp(slash + 1, "libioplex.so", strlen("libioplex.so")) == 0)
        *installed = !realpath(IOP_BUILD_LIB_DIR, build) || strcmp(build, lib) != 0;
    int n = snprintf(buf, len, "%s", lib);
    return n < 0 || (size_t)n >= len ? NULL : buf;
}

/* <the dir libioplex was loaded from>/ioplex/<kind>s when that exists and is not
 * the install dir configured at build time: a copy installed with another
 * --prefix finds its own modules. NULL otherwise. */
static const char *beside_library(const char *libdir, const char *kind, const char *install,
                                  char *buf, size_t len)
{
    if (!libdir)
        return NULL;
    int n = snprintf(buf, len, "%s/ioplex/%ss", libdir, kind);
    struct stat st;
    if (n < 0 || (size_t)n >= len || strcmp(buf, install) == 0 || stat(buf, &st) < 0 || !S_ISDIR(st.st_mode))
        return NULL;
    return buf;
}

/* The search path for a kind of module, in order. A path that does not fit keeps
 * the dirs that did and returns -ENAMETOOLONG. An installed copy of the library
 * looks beside itself, then in the configured install dir, and never in the build
 * tree: modules rebuilt there later are not the ones installed with it. */
static int search_dirs(const char *kind, const char *plugin_path, char *dirs, size_t len)
{
    const char *build, *install;
    if (strcmp(kind, "backend") == 0) {
        build = IOP_BUILD_BACKEND_DIR;
        install = IOP_INSTALL_BACKEND_DIR;
    } else if (strcmp(kind, "service") == 0) {
        build = IOP_BUILD_SERVICE_DIR;
        install = IOP_INSTALL_SERVICE_DIR;
    } else {
        return -EINVAL;
    }
    int installed;
    char libdir[PATH_LEN], beside[PATH_LEN];
    const char *own = beside_library(library_dir(libdir, sizeof libdir, &installed), kind, install,
                                     beside, sizeof beside);
    dirs[0] = '\0';
    int r = dirs_add(dirs, len, plugin_path);
    /* A set-uid program must not load code from a directory its caller picked. */
    if (r == 0)
        r = dirs_add(dirs, len, secure_getenv("IOPLEX_PLUGIN_PATH"));
    if (r == 0 && installed)
        r = dirs_add(dirs, len, own);
    if (r == 0 && !installed)
        r = dirs_add(dirs, len, build);
    if (r == 0)
        r = dirs_add(dirs, len, install);
    if (r == 0 && !installed)
        r = dirs_add(dirs, len, own);
    return r;
}

/* Copies the next dir of a ':'-joined list into dir; returns where the next one
 * starts, or NULL when there is none. */
static const char *next_dir(const char *p, char *dir, size_t len)
{
    if (!p || !*p)
        return NULL;
    const char *end = strchrnul(p, ':');
    snprintf(dir, len, "%.*s", (int)(end - p), p);
    return *end ? end + 1 : end;
}

/* The first iop_<kind>_<name>.so on the search path, in path. 0 or -ENOENT. An
 * entry that is there but broken (a dangling symlink, a directory) is the one
 * found: it is refused with its reason, never silently passed over for a later
 * one, and the listing shows the same. */
static int find_module(const char *kind, const char *name, const char *dirs, char *path, size_t len)
{
    char dir[PATH_LEN];
    struct stat st;
    for (const char *p = next_dir(dirs, dir, sizeof dir); p; p = next_dir(p, dir, sizeof dir)) {
        int n = snprintf(path, len, "%s/iop_%s_%s.so", dir, kind, name);
        if (n > 0 && (size_t)n < len && lstat(path, &st) == 0)
            return 0;
    }
    path[0] = '\0';
    return -ENOENT;
}

/* ---- listing what is on the search path --------------------------------------- */

typedef iop__found_t found_t;

static int by_name(const void *a, const void *b)
{
    return strcmp(((const found_t *)a)->name, ((const found_t *)b)->name);
}

static int found_has(const found_t *v, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].name, name) == 0)
            return 1;
    return 0;
}

/* Adds every iop_<kind>_*.so in dir not already seen in an earlier dir. */
static int scan_dir(const char *kind, const char *dir, found_t **v, size_t *n, size_t *cap)
{
    char prefix[NAME_LEN];
    snprintf(prefix, sizeof prefix, "iop_%s_", kind);
    size_t plen = strlen(prefix);
    DIR *d = opendir(dir);
    if (!d)
        return 0;   /* a missing dir on the path is normal (the install dir, often) */
    int r = 0;
    struct dirent *e;
    while (r == 0 && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len <= plen + 3 || strncmp(e->d_name, prefix, plen) != 0 ||
            strcmp(e->d_name + len - 3, ".so") != 0)
            continue;
        const char *name = e->d_name + plen;
        size_t nlen = len - plen - 3;
        if (!valid_name(name, nlen))
            continue;
        char nbuf[NAME_LEN];
        snprintf(nbuf, sizeof nbuf, "%.*s", (int)nlen, name);
        if (found_has(*v, *n, nbuf))
            continue;
        if (*n == *cap) {
            size_t ncap = *cap ? *cap * 2 : 8;
            found_t *nv = iop_realloc(*v, ncap * sizeof *nv);
            if (!nv) {
                r = -ENOMEM;
                break;
            }
            *v = nv;
            *cap = ncap;
        }
        found_t *f = &(*v)[(*n)++];
        memcpy(f->name, nbuf, sizeof f->name);
        if ((size_t)snprintf(f->path, sizeof f->path, "%s/%s", dir, e->d_name) >= sizeof f->path)
            (*n)--;   /* cannot be opened by a name that long; leave it out */
    }
    closedir(d);
    return r;
}

/* Every module of a kind on the search path (first of each name), sorted by name.
 * *out is freed with iop_free. */
static int list_modules(const char *kind, const char *dirs, found_t **out, size_t *count)
{
    found_t *v = NULL;
    size_t n = 0, cap = 0;
    char dir[PATH_LEN];
    int r = 0;
    for (const char *p = next_dir(dirs, dir, sizeof dir); p && r == 0; p = next_dir(p, dir, sizeof dir))
        r = scan_dir(kind, dir, &v, &n, &cap);
    if (r < 0) {
        iop_free(v);
        return r;
    }
    if (n > 1)
        qsort(v, n, sizeof *v, by_name);
    *out = v;
    *count = n;
    return 0;
}

/* "no backend 'foo' (looked in: a, b); available: epoll, poll" */
static int say_missing(const char *kind, const char *name, const char *dirs, char *why, size_t whylen)
{
    say(0, why, whylen, "no %s '%s' (looked in: ", kind, name);
    char dir[PATH_LEN];
    int first = 1;
    for (const char *p = next_dir(dirs, dir, sizeof dir); p; p = next_dir(p, dir, sizeof dir), first = 0) {
        /* A mistyped --plugin-path is the usual cause: say which dirs are not there. */
        struct stat st;
        int gone = stat(dir, &st) < 0 ? errno : 0;
        const char *note = gone == ENOENT ? " (missing)" : gone ? " (cannot be searched)" :
                           !S_ISDIR(st.st_mode) ? " (not a directory)" : "";
        append(why, whylen, "%s%s%s", first ? "" : ", ", dir, note);
    }
    append(why, whylen, "); available: ");
    found_t *v = NULL;
    size_t n = 0;
    if (list_modules(kind, dirs, &v, &n) < 0)
        append(why, whylen, "(out of memory listing them)");
    else if (n == 0)
        append(why, whylen, "none");
    for (size_t i = 0; i < n; i++)
        append(why, whylen, "%s%s", i ? ", " : "", v[i].name);
    iop_free(v);
    return -ENOENT;
}

/* ---- libltdl ------------------------------------------------------------------ */

/* libltdl keeps global state (its handle list, its error string) and takes no lock
 * of its own, while loops are created on many threads: every call into it holds
 * this lock. It guards the library, not data of ours. */
static pthread_mutex_t ltdl_lock = PTHREAD_MUTEX_INITIALIZER;

/* A fork copies the lock as it is: held by a thread inside libltdl, it would stay
 * held in the child, where that thread does not exist, and the child's first loop
 * would wait for ever. fork takes it first (libltdl's state is then whole in the
 * child too). Registered on first use, after the allocator has registered its
 * own handlers: prepare handlers run newest first, so the lock is taken before
 * the allocator's locks, which a thread inside libltdl may still need. */
static pthread_once_t ltdl_fork_once = PTHREAD_ONCE_INIT;
static void ltdl_fork_prepare(void) { pthread_mutex_lock(&ltdl_lock); }
static void ltdl_fork_release(void) { pthread_mutex_unlock(&ltdl_lock); }
static void ltdl_fork_hook(void) { pthread_atfork(ltdl_fork_prepare, ltdl_fork_release, ltdl_fork_release); }

static void ltdl_lock_take(void)
{
    pthread_once(&ltdl_fork_once, ltdl_fork_hook);
    pthread_mutex_lock(&ltdl_lock);
}

static const char *ltdl_reason(void)
{
    const char *e = lt_dlerror();
    return e ? e : "unknown libltdl error";
}

/* libltdl binds lazily: a module calling a function nothing defines would load,
 * list and start, and kill its process at the first call. Loading it once with
 * RTLD_NOW first resolves every symbol (or refuses the module, with the dynamic
 * linker's own reason, "invalid ELF header", "undefined symbol: x", which libltdl
 * would replace by its "file not found"); lt_dlopen then gets that same, already
 * bound object. The returned handle keeps it loaded meanwhile; NULL on refusal,
 * with why set and *err the reason's errno (EACCES, ELOOP ... or ENOEXEC). */
static void *bind_now(const char *path, int *err, char *why, size_t whylen)
{
    dlerror();
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        *err = say(-ENOEXEC, why, whylen, "not a loadable module: %s", e ? e : "refused by the dynamic linker");
    }
    return h;
}

/* Opens path with its own lt_dlinit reference (released by ltdl_close). */
static int ltdl_open(const char *path, lt_dlhandle *h, char *why, size_t whylen)
{
    int r = 0;
    ltdl_lock_take();
    if (lt_dlinit() != 0) {
        r = say(-ENOMEM, why, whylen, "libltdl failed to start: %s", ltdl_reason());
        lt_dlexit();   /* lt_dlinit counts even a failed start */
    } else {
        *h = NULL;
        int err = 0;
        void *now = bind_now(path, &err, why, whylen);
        if (!now || !(*h = lt_dlopen(path))) {
            if (now)
                err = say(-ENOEXEC, why, whylen, "not a loadable module: %s", ltdl_reason());
            r = err < 0 ? err : -ENOEXEC;
            lt_dlexit();
        }
        if (now)
            dlclose(now);
    }
    pthread_mutex_unlock(&ltdl_lock);
    return r;
}

static int ltdl_sym(lt_dlhandle h, const char *symbol, const void **sym, char *why, size_t whylen)
{
    int r = 0;
    ltdl_lock_take();
    if (!(*sym = lt_dlsym(h, symbol))) {
        lt_dlerror();   /* only says "undefined symbol", and must not linger */
        r = say(-ENOEXEC, why, whylen, "no descriptor symbol '%s'", symbol);
    }
    pthread_mutex_unlock(&ltdl_lock);
    return r;
}

static void ltdl_close(lt_dlhandle h)
{
    ltdl_lock_take();
    lt_dlclose(h);
    lt_dlexit();
    pthread_mutex_unlock(&ltdl_lock);
}

/* ---- checking a module -------------------------------------------------------- */

/* A backend's or a service's descriptor of another ABI: -EPROTO with the reason
 * (read from the file before loading, or from the loaded descriptor). */
static int check_abi(const char *kind, uint32_t abi, char *why, size_t whylen)
{
    if (strcmp(kind, "backend") == 0 && abi != IOP_BACKEND_ABI_VERSION)
        return say(-EPROTO, why, whylen, "built for ABI %u, this ioplex speaks ABI %u",
                   abi, IOP_BACKEND_ABI_VERSION);
    if (strcmp(kind, "service") == 0 && abi != IOP_SERVICE_ABI_VERSION)
        return say(-EPROTO, why, whylen, "built for service ABI %u, this ioplex speaks ABI %u",
                   abi, IOP_SERVICE_ABI_VERSION);
    return 0;
}

/* Refuses a backend descriptor missing what the core calls (its ABI checked). */
static int check_backend_desc(const void *sym, const char *name, char *why, size_t whylen)
{
    const iop_backend_desc_t *d = sym;
    if (d->desc_size < IOP_BACKEND_DESC_MIN_SIZE)
        return say(-EPROTO, why, whylen, "descriptor is %u bytes, ABI %u needs %zu",
                   d->desc_size, IOP_BACKEND_ABI_VERSION, (size_t)IOP_BACKEND_DESC_MIN_SIZE);
    const char *missing = !d->name ? "name" : !d->probe ? "probe" : !d->create ? "create" :
                          !d->destroy ? "destroy" : !d->poll ? "poll" : NULL;
    if (missing)
        return say(-EPROTO, why, whylen, "descriptor has no %s", missing);
    if (strcmp(d->name, name) != 0)
        return say(-EPROTO, why, whylen, "descriptor names itself '%.63s', the file name says '%s'",
                   d->name, name);
    if (d->model == IOP_MODEL_READINESS && !d->watch)
        return say(-EPROTO, why, whylen, "readiness backend without watch");
    if (d->model == IOP_MODEL_COMPLETION && !d->submit)
        return say(-EPROTO, why, whylen, "completion backend without submit");
    if (d->model != IOP_MODEL_READINESS && d->model != IOP_MODEL_COMPLETION)
        return say(-EPROTO, why, whylen, "unknown model %u", d->model);
    if (d->buf_pool && !d->buf_return)   /* iop_buf_release would call nothing */
        return say(-EPROTO, why, whylen, "buf_pool without buf_return");
    return 0;
}

/* Opens the module at path and checks its descriptor; the probe is not run. The
 * reason (without the path) goes to why. Of kinds other than backend only the ABI
 * is checked here; their own layer checks the rest once loaded. */
static int module_load(const char *kind, const char *name, const char *path, const char *symbol,
                       iop__module_t *mod, char *why, size_t whylen)
{
    memset(mod, 0, sizeof *mod);
    lt_dlhandle h = NULL;
    const void *sym = NULL;
    /* The file, its descriptor and the descriptor's ABI, before any of its code
     * runs (dlopen runs its constructors). */
    uint32_t abi;
    uint64_t sym_size;
    int r = iop__module_check(path, symbol, &abi, &sym_size, why, whylen);
    if (r == 1)
        r = check_abi(kind, abi, why, whylen);
    if (r < 0 || (r = ltdl_open(path, &h, why, whylen)) < 0)
        return r;
    r = ltdl_sym(h, symbol, &sym, why, whylen);
    if (r == 0)   /* again: a file without section headers could not be read before */
        r = check_abi(kind, *(const uint32_t *)sym, why, whylen);
    /* Every descriptor starts with abi_version and desc_size: the fields it claims
     * to have must lie within the object the file defines, or they are read past it. */
    if (r == 0 && sym_size && (sym_size < 8 || ((const uint32_t *)sym)[1] > sym_size))
        r = say(-EPROTO, why, whylen, "descriptor claims %u bytes, the file's symbol has %llu",
                sym_size < 8 ? 0u : ((const uint32_t *)sym)[1], (unsigned long long)sym_size);
    if (r == 0 && strcmp(kind, "backend") == 0)
        r = check_backend_desc(sym, name, why, whylen);
    if (r < 0) {
        ltdl_close(h);
        return r;
    }
    mod->handle = h;
    mod->desc = sym;
    snprintf(mod->name, sizeof mod->name, "%s", name);
    snprintf(mod->path, sizeof mod->path, "%s", path);
    return 0;
}

/* Runs a loaded backend's probe: 0, or its -errno with its reason in why. */
static int module_probe(const iop__module_t *mod, char *why, size_t whylen)
{
    why[0] = '\0';
    int r = mod->desc->probe(why, whylen);
    why[whylen - 1] = '\0';
    if (r >= 0)
        return 0;
    if (!why[0])
        say(r, why, whylen, "%s", iop_strerror(r));
    return r;
}

/* Finds, loads, checks and probes. A missing module is described in full (dirs
 * searched, what is available) unless brief, which auto uses for its report. */
static int open_module(const char *kind, const char *name, const char *dirs, const char *symbol,
                       int brief, iop__module_t *mod, char *why, size_t whylen)
{
    char path[PATH_LEN], reason[WHY_LEN];
    memset(mod, 0, sizeof *mod);
    if (!valid_name(name, strlen(name)))
        return say(-EINVAL, why, whylen, "invalid %s name '%.63s' (letters, digits, '_', '-')", kind, name);
    if (find_module(kind, name, dirs, path, sizeof path) < 0) {
        if (brief)
            return say(-ENOENT, why, whylen, "no module iop_%s_%s.so on the search path", kind, name);
        return say_missing(kind, name, dirs, why, whylen);
    }
    int r = module_load(kind, name, path, symbol, mod, reason, sizeof reason);
    if (r < 0)
        return say(r, why, whylen, "%s: %s", path, reason);
    if (strcmp(kind, "backend") == 0) {
        r = module_probe(mod, reason, sizeof reason);
        if (r < 0) {
            iop__module_close(mod);
            return say(r, why, whylen, "%s: probe failed: %s", path, reason);
        }
    }
    return 0;
}

int iop__module_open(const char *kind, const char *name, const char *plugin_path,
                     const char *symbol, iop__module_t *mod, char *why, size_t whylen)
{
    char dirs[DIRS_LEN];
    memset(mod, 0, sizeof *mod);
    if (!kind || !name || !symbol)
        return say(-EINVAL, why, whylen, "iop__module_open: NULL argument");
    int r = search_dirs(kind, plugin_path, dirs, sizeof dirs);
    if (r == -EINVAL)
        return say(r, why, whylen, "unknown plugin kind '%s'", kind);
    if (r < 0)
        return say(r, why, whylen, "plugin search path is too long");
    return open_module(kind, name, dirs, symbol, 0, mod, why, whylen);
}

void iop__module_close(iop__module_t *mod)
{
    if (!mod || !mod->handle)
        return;
    ltdl_close(mod->handle);
    mod->handle = NULL;
    mod->desc = NULL;
}

int iop__module_list(const char *kind, const char *plugin_path, iop__found_t **out, size_t *count)
{
    char dirs[DIRS_LEN];
    int r = search_dirs(kind, plugin_path, dirs, sizeof dirs);
    if (r < 0)
        return r;
    return list_modules(kind, dirs, out, count);
}

int iop__module_load(const char *kind, const iop__found_t *f, const char *symbol,
                     iop__module_t *mod, char *why, size_t whylen)
{
    return module_load(kind, f->name, f->path, symbol, mod, why, whylen);
}

/* ---- choosing a loop's backend ------------------------------------------------ */

/* A name asked for: it loads, probes and creates, or the call fails saying why. */
static int choose_named(const char *name, const char *asker, const char *dirs, iop__try_fn try_create,
                        void *ctx, iop__module_t *mod, char *report, size_t reportlen)
{
    char why[WHY_LEN];
    const char *by_env = asker ? "IOPLEX_BACKEND: " : "";
    int r = open_module("backend", name, dirs, IOP_BACKEND_SYMBOL, 0, mod, why, sizeof why);
    if (r == -ENOENT || r == -EINVAL)
        return iop__fail(r, "%s%s", by_env, why);
    if (r < 0)
        return iop__fail(r, "%sbackend '%s' refused: %s", by_env, name, why);
    why[0] = '\0';
    r = try_create(ctx, mod, why, sizeof why);
    if (r < 0) {
        r = iop__fail(r, "%sbackend '%s' (%s): create failed: %s", by_env, name, mod->path,
                      why[0] ? why : iop_strerror(r));
        iop__module_close(mod);
        return r;
    }
    say(0, report, reportlen, "asked for%s%s", asker ? " by " : "", asker ? asker : "");
    return 0;
}

/* Names in the avoid list that auto never tries (a typo avoids nothing), as
 * "; IOPLEX_BACKEND_AVOID: 'urnig' not in auto's order (...)", or "". */
static void avoid_strays(const char *avoid, const char *avoid_src, char *out, size_t outlen)
{
    char strays[WHY_LEN] = "", name[NAME_LEN];
    int count = 0;
    out[0] = '\0';
    const char *start;
    size_t len;
    for (const char *p = avoid; p && (p = list_next(p, &start, &len));) {
        snprintf(name, sizeof name, "%.*s", (int)len, start);
        if (len && !in_list(IOP_AUTO_ORDER, name)) {
            append(strays, sizeof strays, "%s'%s'", count ? ", " : "", name);
            count++;
        }
    }
    if (count)
        snprintf(out, outlen, "; %s: %s not in auto's order (%s)", avoid_src, strays, IOP_AUTO_ORDER);
}

/* Keeps the first error that says the process is short of memory or fds. */
static void note_shortage(int *short_of, int err)
{
    if (!*short_of && (err == -ENOMEM || err == -EMFILE || err == -ENFILE))
        *short_of = err;
}

/* auto: the first of IOP_AUTO_ORDER that is not avoided, loads, probes and creates.
 * A skipped name's module is never opened: some sandboxes kill a process that so
 * much as probes io_uring. */
static int choose_auto(const iop_loop_opts_t *opts, const char *dirs, iop__try_fn try_create,
                       void *ctx, iop__module_t *mod, char *report, size_t reportlen)
{
    const char *avoid = opts ? opts->avoid : NULL;
    const char *avoid_src = "the avoid list";
    if (!avoid) {
        avoid = getenv("IOPLEX_BACKEND_AVOID");
        avoid_src = "IOPLEX_BACKEND_AVOID";
    }
    char passed[WHY_LEN] = "", why[WHY_LEN], name[NAME_LEN];
    const char *order = IOP_AUTO_ORDER;
    int short_of = 0;   /* a backend failed for want of memory or fds: if none works,
                         * that is the error (it passes), not "no usable backend" */
    while (*order) {
        const char *end = strchrnul(order, ',');
        snprintf(name, sizeof name, "%.*s", (int)(end - order), order);
        order = *end ? end + 1 : end;
        const char *sep = passed[0] ? ", " : "";
        if (in_list(avoid, name)) {
            append(passed, sizeof passed, "%s%s (skipped: in %s)", sep, name, avoid_src);
            continue;
        }
        int r = open_module("backend", name, dirs, IOP_BACKEND_SYMBOL, 1, mod, why, sizeof why);
        if (r < 0) {
            note_shortage(&short_of, r);
            append(passed, sizeof passed, "%s%s (%s)", sep, name, why);
            continue;
        }
        why[0] = '\0';
        r = try_create(ctx, mod, why, sizeof why);
        if (r < 0) {
            note_shortage(&short_of, r);
            append(passed, sizeof passed, "%s%s (create failed: %s)", sep, name,
                   why[0] ? why : iop_strerror(r));
            iop__module_close(mod);
            continue;
        }
        avoid_strays(avoid, avoid_src, why, sizeof why);
        say(0, report, reportlen, "auto: took %s%s%s%s", name, passed[0] ? "; passed over " : "", passed, why);
        return 0;
    }
    avoid_strays(avoid, avoid_src, why, sizeof why);
    say(0, report, reportlen, "auto: no usable backend; passed over %s%s", passed, why);
    return iop__fail(short_of ? short_of : -ENODEV, "auto: no usable backend; passed over %s%s", passed, why);
}

int iop__backend_choose(const iop_loop_opts_t *opts, iop__try_fn try_create, void *ctx,
                        iop__module_t *mod, char *report, size_t reportlen)
{
    char dirs[DIRS_LEN];
    memset(mod, 0, sizeof *mod);
    if (reportlen)
        report[0] = '\0';
    if (!try_create)
        return iop__fail(-EINVAL, "iop__backend_choose: no create function");
    int r = search_dirs("backend", opts ? opts->plugin_path : NULL, dirs, sizeof dirs);
    if (r < 0)
        return iop__fail(r, "plugin search path is too long (over %d bytes)", DIRS_LEN);

    const char *requested = opts ? opts->backend : NULL;
    const char *asked = iop__backend_asked(requested);
    if (asked)
        return choose_named(asked, asked == requested ? NULL : "IOPLEX_BACKEND", dirs, try_create,
                            ctx, mod, report, reportlen);
    return choose_auto(opts, dirs, try_create, ctx, mod, report, reportlen);
}

/* "auto" in opts still lets $IOPLEX_BACKEND decide, so an application whose
 * --backend defaults to "auto" keeps honouring the environment. */
const char *iop__backend_asked(const char *name)
{
    if (!is_auto(name))
        return name;
    const char *env = getenv("IOPLEX_BACKEND");
    return is_auto(env) ? NULL : env;
}

/* ---- public: listing and the search path -------------------------------------- */

/* iop_backend_list's allocation: this header, the entries, then one libltdl handle
 * per entry so the descriptors stay valid until iop_backend_list_free. */
typedef union list_head {
    size_t count;
    max_align_t align;
} list_head_t;

static lt_dlhandle *list_handles(iop_backend_info_t *list, size_t count)
{
    return (lt_dlhandle *)(void *)(list + count);
}

int iop_backend_list(const char *plugin_path, iop_backend_info_t **out, size_t *count)
{
    char dirs[DIRS_LEN];
    if (!out || !count)
        return iop__fail(-EINVAL, "iop_backend_list: NULL argument");
    *out = NULL;
    *count = 0;
    int r = search_dirs("backend", plugin_path, dirs, sizeof dirs);
    if (r < 0)
        return iop__fail(r, "plugin search path is too long (over %d bytes)", DIRS_LEN);
    found_t *v = NULL;
    size_t n = 0;
    r = list_modules("backend", dirs, &v, &n);
    if (r < 0)
        return iop__fail(r, "iop_backend_list: out of memory");

    list_head_t *head = iop_calloc(1, sizeof *head + n * (sizeof(iop_backend_info_t) + sizeof(lt_dlhandle)));
    if (!head) {
        iop_free(v);
        return iop__fail(-ENOMEM, "iop_backend_list: out of memory");
    }
    head->count = n;
    iop_backend_info_t *list = (iop_backend_info_t *)(head + 1);
    lt_dlhandle *handles = list_handles(list, n);
    for (size_t i = 0; i < n; i++) {
        iop_backend_info_t *info = &list[i];
        iop__module_t m;
        memcpy(info->name, v[i].name, sizeof info->name);
        memcpy(info->path, v[i].path, sizeof info->path);
        info->load_err = module_load("backend", info->name, info->path, IOP_BACKEND_SYMBOL, &m,
                                     info->why, sizeof info->why);
        if (info->load_err < 0)
            continue;
        handles[i] = m.handle;
        info->desc = m.desc;
        /* Some sandboxes kill a process on the probe's syscall itself: the avoid
         * list keeps listing as safe as auto. */
        if (in_list(getenv("IOPLEX_BACKEND_AVOID"), info->name)) {
            info->probe_err = say(-ECANCELED, info->why, sizeof info->why, "not probed (in IOPLEX_BACKEND_AVOID)");
            continue;
        }
        info->probe_err = module_probe(&m, info->why, sizeof info->why);
    }
    iop_free(v);
    *out = list;
    *count = n;
    return 0;
}

void iop_backend_list_free(iop_backend_info_t *list)
{
    if (!list)
        return;
    list_head_t *head = (list_head_t *)list - 1;
    lt_dlhandle *handles = list_handles(list, head->count);
    for (size_t i = 0; i < head->count; i++)
        if (handles[i])
            ltdl_close(handles[i]);
    iop_free(head);
}

static const char *search_path_of(const char *kind, const char *plugin_path, char *buf, size_t len)
{
    if (!buf || !len)
        return buf;
    char dirs[DIRS_LEN];
    search_dirs(kind, plugin_path, dirs, sizeof dirs);
    snprintf(buf, len, "%s", dirs);
    return buf;
}

const char *iop_plugin_search_path(const char *plugin_path, char *buf, size_t len)
{
    return search_path_of("backend", plugin_path, buf, len);
}

const char *iop_service_search_path(const char *plugin_path, char *buf, size_t len)
{
    return search_path_of("service", plugin_path, buf, len);
}
