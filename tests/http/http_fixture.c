/* See http_fixture.h. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>
#include "http_fixture.h"

unsigned char hf_big_byte(uint64_t i) { return (unsigned char)((i * 2654435761u) >> 13); }

/* write(2) of all of data, through EINTR and short writes: 0 or -1. */
static int write_all(int fd, const char *data, size_t len)
{
    while (len) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static int put(const char *dir, const char *name, const void *data, size_t len)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write_all(fd, data, len) < 0) {
        fprintf(stderr, "http fixture: %s: %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    struct timeval tv[2] = { { HF_MTIME, 0 }, { HF_MTIME, 0 } };
    futimes(fd, tv);
    close(fd);
    return 0;
}

static int putstr(const char *dir, const char *name, const char *text) { return put(dir, name, text, strlen(text)); }

static int link_to(const char *target, const char *dir, const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (symlink(target, path) < 0) {
        fprintf(stderr, "http fixture: symlink %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

int hf_make(hf_root_t *r)
{
    snprintf(r->base, sizeof r->base, "/tmp/ioplex-http-XXXXXX");
    if (!mkdtemp(r->base)) {
        fprintf(stderr, "http fixture: mkdtemp: %s\n", strerror(errno));
        return -1;
    }
    snprintf(r->www, sizeof r->www, "%s/www", r->base);
    char sub[128], empty[128], fifo[128], abs_secret[128];
    snprintf(sub, sizeof sub, "%s/sub", r->www);
    snprintf(empty, sizeof empty, "%s/empty", r->www);
    snprintf(fifo, sizeof fifo, "%s/fifo", r->www);
    snprintf(abs_secret, sizeof abs_secret, "%s/secret.txt", r->base);
    if (mkdir(r->www, 0755) < 0 || mkdir(sub, 0755) < 0 || mkdir(empty, 0755) < 0 ||
        mkfifo(fifo, 0644) < 0) {
        fprintf(stderr, "http fixture: mkdir: %s\n", strerror(errno));
        return -1;
    }
    unsigned char *big = malloc(HF_BIG_SIZE);
    if (!big)
        return -1;
    for (uint64_t i = 0; i < HF_BIG_SIZE; i++)
        big[i] = hf_big_byte(i);
    int bad = putstr(r->base, "secret.txt", HF_SECRET) | putstr(r->www, "index.html", HF_INDEX) |
              putstr(r->www, "hello.txt", HF_HELLO_TXT) | putstr(r->www, "style.css", "p{}\n") |
              putstr(r->www, "data.bin", "\x01\x02\x03") | putstr(r->www, "a b.txt", "space\n") |
              put(r->www, "big.bin", big, HF_BIG_SIZE) | putstr(sub, "index.html", HF_SUB_INDEX) |
              link_to("hello.txt", r->www, "link_in") | link_to("../secret.txt", r->www, "link_out") |
              link_to(abs_secret, r->www, "link_abs") | link_to("..", r->www, "dir_out");
    free(big);
    return bad ? -1 : 0;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void hf_remove(hf_root_t *r)
{
    if (r->base[0])
        nftw(r->base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}
