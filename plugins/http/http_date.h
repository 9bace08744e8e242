/* HTTP dates (RFC 9110 5.6.7): formatting IMF-fixdate, parsing all three forms.
 * Pure C on seconds since the epoch, no locale, no time zone. */
#ifndef IOPLEX_HTTP_DATE_H
#define IOPLEX_HTTP_DATE_H

#include <stddef.h>
#include <stdint.h>

#define HTTP_DATE_LEN 29             /* "Sun, 06 Nov 1994 08:49:37 GMT" */

/* Writes t as an IMF-fixdate into out (HTTP_DATE_LEN bytes and a NUL). */
void http_format_date(int64_t t, char out[HTTP_DATE_LEN + 1]);

/* Parses an IMF-fixdate, an RFC 850 date or an asctime date into *t: 0, or -1 if
 * it is none of them (the header is then ignored, RFC 9110 13.1.3). */
int http_parse_date(const char *p, size_t n, int64_t *t);

#endif
