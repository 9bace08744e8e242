/* iop-fetch: the state shared by its parts (see README.md). */
#ifndef IOP_FETCH_FETCH_H
#define IOP_FETCH_FETCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <ioplex.h>
#include "pool.h"

#define PROG "iop-fetch"

typedef enum job_state { JOB_PENDING, JOB_RUNNING, JOB_OK, JOB_FAILED } job_state_t;

typedef struct fetch_job {
    const char *url;                /* as given */
    char *path;                     /* where the body goes; NULL with --stdout */
    char *tmp_path;                 /* the temporary name while downloading */
    int tmp_fd;                     /* -1 when none */
    int direct;                     /* tmp_fd is path itself (a device, FIFO or symlink) */
    job_state_t state;
    int status;                     /* the last HTTP status seen, 0 if none */
    unsigned redirects;
    uint64_t bytes;                 /* body bytes written */
    uint64_t t_start, t_end;        /* loop clock, ns */
    char err[256];
} fetch_job_t;

typedef struct fetch_opts {
    unsigned concurrency;           /* -c */
    unsigned max_redirects;
    uint64_t timeout_ns;            /* connect, head, each read */
    const char *dir;                /* -o, default "." */
    const char *out_name;           /* -O (one URL) */
    int to_stdout, quiet;
} fetch_opts_t;

typedef struct fetch {
    iop_loop_t *loop;
    fetch_opts_t o;
    fetch_pool_t pool;
    fetch_job_t *jobs;
    size_t njobs;
    size_t next_job;                /* the next one a worker takes */
    size_t finished, failed, active;
    size_t next_emit;               /* --stdout: the next body due on stdout */
    int emitting;                   /* --stdout: a coroutine is copying bodies out */
    uint64_t bytes;                 /* body bytes over all jobs, for the progress line */
    uint64_t t_start;
    int interrupted;
    mode_t file_mode;               /* 0666 & ~umask: what a new file would get */
    int tty;                        /* stderr is a terminal: redraw a progress line */
    int bar_shown;
    uint64_t bar_drawn_at;
} fetch_t;

/* fetch_job.c: downloads one URL, following redirects; sets j's state. */
void fetch_job_run(fetch_t *f, fetch_job_t *j);

/* output.c */
/* Chooses every job's output path (names from the URL, made unique). 0 or -1 with
 * a message on stderr. */
int output_assign_names(fetch_t *f);
int output_open(fetch_t *f, fetch_job_t *j);                       /* 0 / -errno, j->err */
int output_write(fetch_t *f, fetch_job_t *j, const char *data, size_t len);
int output_commit(fetch_t *f, fetch_job_t *j);                     /* rename into place */
void output_abort(fetch_t *f, fetch_job_t *j);                     /* no file left */
/* --stdout: writes the finished bodies that are next in URL order. */
void output_emit_ready(fetch_t *f);
/* Closes what is left open and frees the paths (at the end). */
void output_cleanup(fetch_t *f);

/* progress.c */
void progress_redraw(fetch_t *f, int force);       /* the terminal's one-line bar */
void progress_job_done(fetch_t *f, const fetch_job_t *j);
void progress_summary(fetch_t *f);                 /* the table and the totals line */
void format_bytes(uint64_t n, char *buf, size_t len);

#endif
