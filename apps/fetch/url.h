/* http:// URLs for iop-fetch: parsing, resolving a reference (a Location header)
 * against a base URL (RFC 3986 section 5.2), and the file name a URL saves to. */
#ifndef IOP_FETCH_URL_H
#define IOP_FETCH_URL_H

#include <stddef.h>
#include <stdint.h>

#define URL_MAX 8192             /* longer URLs are refused */
#define URL_HOST_MAX 256

typedef struct fetch_url {
    char host[URL_HOST_MAX];     /* lower-cased; an IPv6 literal without brackets */
    int ipv6;                    /* host is an IPv6 literal */
    uint16_t port;
    char *target;                /* path + query for the request line, percent-encoded
                                  * where needed, dot segments removed; "/" at least */
    char *path;                  /* the same path without the query (for file names) */
} fetch_url_t;

/* Parses an absolute http:// URL (the fragment is dropped). 0, or -1 with a reason
 * in err ("https is not supported", "unsupported scheme 'ftp'", ...). On success
 * free with url_free. */
int url_parse(const char *s, fetch_url_t *u, char *err, size_t errlen);
void url_free(fetch_url_t *u);

/* The Host header value: "host", "host:port", "[::1]:port" (port only if not 80). */
void url_host_header(const fetch_url_t *u, char *buf, size_t len);

/* Resolves ref (absolute, network-path, absolute-path or relative) against the
 * absolute URL base. A new string (free()), or NULL when out of memory or too long. */
char *url_resolve(const char *base, const char *ref);

/* RFC 3986 remove_dot_segments on a path, in place. */
void url_remove_dot_segments(char *path);

/* The file name a URL path saves to: its last segment, percent-decoded, with '/',
 * control characters and a leading '-' replaced by '_'; "index.html" for an empty
 * last segment (a trailing slash), "." or "..". Truncated to fit len. */
void url_file_name(const char *path, char *out, size_t len);

#endif
