/* The document root the http tests serve, made in a temporary directory:
 *   BASE/secret.txt            outside the root: no request may ever read it
 *   BASE/www/                  the root: index.html, hello.txt, style.css, data.bin,
 *                              "a b.txt", big.bin (5 MiB), sub/index.html, empty/,
 *                              link_in -> hello.txt, link_out -> ../secret.txt,
 *                              link_abs -> BASE/secret.txt, dir_out -> .., fifo */
#ifndef IOPLEX_HTTP_FIXTURE_H
#define IOPLEX_HTTP_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#define HF_SECRET "TOP SECRET, outside the root"
#define HF_HELLO_TXT "hello file\n"
#define HF_INDEX "<h1>home</h1>\n"
#define HF_SUB_INDEX "<p>sub</p>\n"
#define HF_BIG_SIZE (5u << 20)
#define HF_MTIME 1577880000            /* 2020-01-01 12:00:00 GMT, every file's mtime */
#define HF_MTIME_TEXT "Wed, 01 Jan 2020 12:00:00 GMT"

typedef struct hf_root {
    char base[64];
    char www[96];
} hf_root_t;

/* 0, or -1 with a message on stderr. */
int hf_make(hf_root_t *r);
void hf_remove(hf_root_t *r);
/* The byte at offset i of big.bin. */
unsigned char hf_big_byte(uint64_t i);

#endif
