/* Where bodies go: a file per URL named after its path (made unique among this
 * run's names and the files already there), written under a temporary hidden name
 * and renamed at the end, so a failed download never leaves a file under the final
 * name. The rename never replaces anything: a name someone took meanwhile (a file,
 * a symlink planted in a shared directory) gets the next suffix instead. -O NAME
 * is the one name that may be replaced; if it is a device or a FIFO (-O /dev/null)
 * it is written through, and if it is a symlink the file it leads to is replaced
 * at the end, the link kept. With --stdout each body goes to an unnamed temporary
 * file instead and is copied to stdout whole, in the order of the URLs. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch.h"
#include "url.h"

#define NAME_MAX_BYTES 200          /* leaves room for ".NAME.part-XXXXXX" */
#define SUFFIX_MAX 100000
#define COPY_CHUNK (64 * 1024)

/* ---- unique names ----------------------------------------------------------- */

typedef struct name_entry {
    char *name;
    unsigned next;                  /* as a base name: the next suffix to try */
} name_entry_t;

typedef struct name_set {
    name_entry_t *slot;
    size_t cap;                     /* a power of two, at least twice the names */
} name_set_t;

static size_t name_hash(const char *s)
{
    size_t h = 5381;
    while (*s)
        h = h * 33 + (unsigned char)*s++;
    return h;
}

/* name's entry, added if missing, with *fresh = 1 then (NULL: out of memory). */
static name_entry_t *name_add(name_set_t *set, const char *name, int *fresh)
{
    size_t i = name_hash(name) & (set->cap - 1);
    *fresh = 0;
    while (set->slot[i].name) {
        if (strcmp(set->slot[i].name, name) == 0)
            return &set->slot[i];
        i = (i + 1) & (set->cap - 1);
    }
    *fresh = 1;
    return (set->slot[i].name = strdup(name)) ? &set->slot[i] : NULL;
}

static int name_taken(const name_set_t *set, const char *name)
{
    size_t i = name_hash(name) & (set->cap - 1);
    for (; set->slot[i].name; i = (i + 1) & (set->cap - 1))
        if (strcmp(set->slot[i].name, name) == 0)
            return 1;
    return 0;
}

static char *join_path(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 || errno != ENOENT;
}

/* "name.ext" → "name.N.ext", "name" → "name.N" (a leading dot is no extension). */
static void with_suffix(const char *base, unsigned k, char *out, size_t len)
{
    const char *dot = strrchr(base, '.');
    if (!dot || dot == base)
        snprintf(out, len, "%s.%u", base, k);
    else
        snprintf(out, len, "%.*s.%u%s", (int)(dot - base), base, k, dot);
}

/* The job's path: dir/base, or dir/base-with-a-suffix if that is taken. The base
 * remembers the suffix it got to, so many URLs with one name cost one try each. */
static int unique_path(name_set_t *set, const char *dir, const char *base, char **out)
{
    int fresh;
    name_entry_t *b = name_add(set, base, &fresh);   /* taken from now on: by this job or the disk */
    if (!b)
        return -ENOMEM;
    if (!fresh && b->next == 0)
        b->next = 1;                 /* the name itself is taken (it was another's suffix) */
    char name[NAME_MAX_BYTES + 16];
    for (unsigned k = b->next; k < SUFFIX_MAX; k++) {
        if (k == 0)
            snprintf(name, sizeof name, "%s", base);
        else
            with_suffix(base, k, name, sizeof name);
        b->next = k + 1;
        if (k > 0 && name_taken(set, name))
            continue;
        char *path = join_path(dir, name);
        if (!path)
            return -ENOMEM;
        if (!exists(path)) {
            if (k > 0 && !name_add(set, name, &fresh)) {
                free(path);
                return -ENOMEM;
            }
            *out = path;
            return 0;
        }
        free(path);
    }
    return -EEXIST;
}

/* mkdir -p */
static int make_dir(const char *dir)
{
    if (!*dir)
        return -ENOENT;
    char *p = strdup(dir);
    if (!p)
        return -ENOMEM;
    for (char *c = p + 1; ; c++) {
        if (*c == '/' || *c == '\0') {
            char saved = *c;
            *c = '\0';
            if (mkdir(p, 0777) < 0 && errno != EEXIST) {
                int r = -errno;
                free(p);
                return r;
            }
            *c = saved;
            if (!saved)
                break;
        }
    }
    free(p);
    struct stat st;
    if (stat(dir, &st) < 0)
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

int output_assign_names(fetch_t *f)
{
    if (f->o.to_stdout)
        return 0;
    if (f->o.out_name) {
        f->jobs[0].path = strdup(f->o.out_name);
        return f->jobs[0].path ? 0 : -1;
    }
    int r = make_dir(f->o.dir);
    if (r < 0) {
        fprintf(stderr, PROG ": cannot create the output directory '%s': %s\n", f->o.dir,
                strerror(-r));
        return -1;
    }
    name_set_t set = { .cap = 16 };
    while (set.cap < 4 * f->njobs)       /* a base and a suffixed name per job, at most */
        set.cap *= 2;
    set.slot = calloc(set.cap, sizeof *set.slot);
    if (!set.slot)
        r = -ENOMEM;
    for (size_t i = 0; r == 0 && i < f->njobs; i++) {
        fetch_url_t u;
        char err[128], base[NAME_MAX_BYTES];
        if (url_parse(f->jobs[i].url, &u, err, sizeof err) < 0)
            continue;                /* the job fails with the reason when it runs */
        url_file_name(u.path, base, sizeof base);
        url_free(&u);
        r = unique_path(&set, f->o.dir, base, &f->jobs[i].path);
    }
    for (size_t i = 0; set.slot && i < set.cap; i++)
        free(set.slot[i].name);
    free(set.slot);
    if (r < 0)
        fprintf(stderr, PROG ": cannot choose output file names: %s\n", strerror(-r));
    return r < 0 ? -1 : 0;
}

/* ---- one body --------------------------------------------------------------- */

static int fail(fetch_job_t *j, int r, const char *what, const char *path)
{
    snprintf(j->err, sizeof j->err, "%s %s: %s", what, path, strerror(-r));
    return r;
}

/* An unnamed temporary file for a body bound for stdout. */
static int stdout_tmpfile(void)
{
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir)
        dir = "/tmp";
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
        return fd;
    char *path = join_path(dir, "iop-fetch-XXXXXX");   /* no O_TMPFILE here */
    if (!path)
        return -1;
    fd = mkostemp(path, O_CLOEXEC);
    if (fd >= 0)
        unlink(path);
    free(path);
    return fd;
}

int output_open(fetch_t *f, fetch_job_t *j)
{
    if (f->o.to_stdout) {
        j->tmp_fd = stdout_tmpfile();
        return j->tmp_fd >= 0 ? 0 : fail(j, -errno, "cannot create a temporary file in", "$TMPDIR");
    }
    struct stat st;
    if (f->o.out_name && stat(j->path, &st) == 0 && !S_ISREG(st.st_mode)) {
        /* -O /dev/null, a FIFO: written through (a FIFO without a reader fails with
         * ENXIO instead of blocking the loop). */
        j->tmp_fd = open(j->path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (j->tmp_fd < 0)
            return fail(j, -errno, "cannot open", j->path);
        j->direct = 1;
        return 0;
    }
    if (f->o.out_name && lstat(j->path, &st) == 0 && S_ISLNK(st.st_mode)) {
        /* -O LINK: the file it leads to is replaced at the end, the link kept. */
        char *real = realpath(j->path, NULL);
        if (real) {
            free(j->path);
            j->path = real;
        }
    }
    const char *slash = strrchr(j->path, '/');
    const char *base = slash ? slash + 1 : j->path;
    int dirlen = slash ? (int)(slash - j->path) + 1 : 0;
    size_t n = strlen(j->path) + 20;
    j->tmp_path = malloc(n);
    if (!j->tmp_path)
        return fail(j, -ENOMEM, "cannot create", j->path);
    snprintf(j->tmp_path, n, "%.*s.%s.part-XXXXXX", dirlen, j->path, base);
    j->tmp_fd = mkostemp(j->tmp_path, O_CLOEXEC);
    if (j->tmp_fd < 0) {
        int r = fail(j, -errno, "cannot create", j->tmp_path);
        free(j->tmp_path);
        j->tmp_path = NULL;
        return r;
    }
    return 0;
}

static int write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EAGAIN) {           /* a non-blocking stdout */
            struct pollfd p = { .fd = fd, .events = POLLOUT };
            poll(&p, 1, -1);
            continue;
        }
        if (n < 0 && errno != EINTR)
            return -errno;
        if (n > 0) {
            data += n;
            len -= (size_t)n;
        }
    }
    return 0;
}

int output_write(fetch_t *f, fetch_job_t *j, const char *data, size_t len)
{
    int r = write_all(j->tmp_fd, data, len);
    if (r < 0)
        return fail(j, r, "writing", f->o.to_stdout ? "a temporary file" : j->direct ? j->path : j->tmp_path);
    j->bytes += len;
    f->bytes += len;
    return 0;
}

/* Renames tmp to path without replacing anything (0, or -errno). */
static int rename_noreplace(const char *tmp, const char *path)
{
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS)
        return -errno;
    /* A file system without RENAME_NOREPLACE: link() refuses an existing name too. */
    if (link(tmp, path) < 0)
        return -errno;
    unlink(tmp);
    return 0;
}

/* The name chosen at the start, or, if something took it meanwhile, the next free
 * suffix of it (j->path follows). */
static int commit_unique(fetch_job_t *j)
{
    int r = rename_noreplace(j->tmp_path, j->path);
    const char *slash = strrchr(j->path, '/');
    int dirlen = slash ? (int)(slash - j->path) : 0;
    char *base = strdup(slash ? slash + 1 : j->path);
    if (!base && r == -EEXIST)
        r = -ENOMEM;
    for (unsigned k = 1; r == -EEXIST && k < 1000; k++) {
        char name[NAME_MAX_BYTES + 32];
        with_suffix(base, k, name, sizeof name);
        size_t n = (size_t)dirlen + strlen(name) + 2;
        char *path = malloc(n);
        if (!path) {
            r = -ENOMEM;
            break;
        }
        snprintf(path, n, "%.*s%s%s", dirlen, j->path, slash ? "/" : "", name);
        r = rename_noreplace(j->tmp_path, path);
        if (r == 0) {
            free(j->path);
            j->path = path;
        } else {
            free(path);
        }
    }
    free(base);
    return r < 0 ? fail(j, r, "cannot rename the download to", j->path) : 0;
}

int output_commit(fetch_t *f, fetch_job_t *j)
{
    if (f->o.to_stdout)
        return 0;                    /* output_emit_ready copies it out in turn */
    int r = 0;
    if (j->direct) {
        if (close(j->tmp_fd) < 0)
            r = fail(j, -errno, "writing", j->path);
        j->tmp_fd = -1;
        return r;
    }
    if (fchmod(j->tmp_fd, f->file_mode) < 0 || close(j->tmp_fd) < 0)
        r = fail(j, -errno, "writing", j->tmp_path);
    j->tmp_fd = -1;
    if (r == 0 && f->o.out_name && rename(j->tmp_path, j->path) < 0)
        r = fail(j, -errno, "cannot rename the download to", j->path);
    else if (r == 0 && !f->o.out_name)
        r = commit_unique(j);
    if (r < 0)
        unlink(j->tmp_path);
    free(j->tmp_path);
    j->tmp_path = NULL;
    return r;
}

void output_abort(fetch_t *f, fetch_job_t *j)
{
    (void)f;
    if (j->tmp_fd >= 0)
        close(j->tmp_fd);
    j->tmp_fd = -1;
    if (j->tmp_path)
        unlink(j->tmp_path);
    free(j->tmp_path);
    j->tmp_path = NULL;
}

/* To stdout, which may be a slow pipe: from a coroutine the write waits through
 * the loop (a blocking write would stop every other download and its timers);
 * after the loop, plainly. */
static int write_stdout(const char *data, size_t len)
{
    if (!iop_self())
        return write_all(STDOUT_FILENO, data, len);
    while (len > 0) {
        ssize_t n = iop_write(STDOUT_FILENO, data, len, 0);
        if (n < 0)
            return (int)n;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Copies a finished body from its temporary file to stdout. */
static int copy_to_stdout(fetch_job_t *j)
{
    char *buf = malloc(COPY_CHUNK);
    if (!buf)
        return -ENOMEM;
    int r = 0;
    off_t off = 0;
    for (;;) {
        ssize_t n = pread(j->tmp_fd, buf, COPY_CHUNK, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            r = n < 0 ? -errno : 0;
            break;
        }
        off += n;
        if ((r = write_stdout(buf, (size_t)n)) < 0)
            break;
    }
    free(buf);
    return r;
}

void output_emit_ready(fetch_t *f)
{
    /* One emitter at a time: while it waits on stdout another worker may finish a
     * body; the emitter reaches it in turn. */
    if (f->emitting)
        return;
    f->emitting = 1;
    while (f->next_emit < f->njobs) {
        fetch_job_t *j = &f->jobs[f->next_emit];
        if (j->state == JOB_PENDING || j->state == JOB_RUNNING)
            break;
        if (j->state == JOB_OK) {
            int r = j->tmp_fd >= 0 ? copy_to_stdout(j) : 0;
            if (r < 0) {
                snprintf(j->err, sizeof j->err, "writing stdout: %s", strerror(-r));
                j->state = JOB_FAILED;
                f->failed++;
            }
            progress_job_done(f, j);   /* ok or FAILED, now that it is out (or not) */
        }
        if (j->tmp_fd >= 0)
            close(j->tmp_fd);
        j->tmp_fd = -1;
        f->next_emit++;
    }
    f->emitting = 0;
}

void output_cleanup(fetch_t *f)
{
    for (size_t i = 0; i < f->njobs; i++) {
        output_abort(f, &f->jobs[i]);
        free(f->jobs[i].path);
        f->jobs[i].path = NULL;
    }
}
