/* HTTP dates: civil calendar arithmetic on days since 1970-01-01 (the proleptic
 * Gregorian calendar, which is what GMT dates in HTTP use). */
#include <string.h>
#include "http_date.h"

static const char WDAY[7][4] = { "Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed" };   /* day 0 was a Thursday */
static const char MONTH[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };

/* Days since 1970-01-01 of y-m-d (m 1..12), with March-based years so that the
 * leap day comes last. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static void put2(char *p, int v)
{
    p[0] = (char)('0' + v / 10);
    p[1] = (char)('0' + v % 10);
}

#define DATE_MIN (-62167219200ll)   /* 0000-01-01T00:00:00: the format has four digits */
#define DATE_MAX 253402300799ll     /* 9999-12-31T23:59:59 */

void http_format_date(int64_t t, char out[HTTP_DATE_LEN + 1])
{
    /* Clamped whole (a time, not only its year): a file's mtime may be any int64. */
    if (t < DATE_MIN)
        t = DATE_MIN;
    else if (t > DATE_MAX)
        t = DATE_MAX;
    int64_t days = t >= 0 ? t / 86400 : (t - 86399) / 86400;
    int64_t secs = t - days * 86400;
    int64_t y;
    int m, d;
    civil_from_days(days, &y, &m, &d);
    memcpy(out, "Thu, 01 Jan 1970 00:00:00 GMT", HTTP_DATE_LEN + 1);
    memcpy(out, WDAY[((days % 7) + 7) % 7], 3);
    put2(out + 5, d);
    memcpy(out + 8, MONTH[m - 1], 3);
    put2(out + 12, (int)(y / 100));
    put2(out + 14, (int)(y % 100));
    put2(out + 17, (int)(secs / 3600));
    put2(out + 20, (int)(secs / 60 % 60));
    put2(out + 23, (int)(secs % 60));
}

/* ---- parsing ------------------------------------------------------------------------- */

typedef struct cur {
    const char *p;
    size_t n, i;
} cur_t;

static int eat(cur_t *c, char ch)
{
    if (c->i < c->n && c->p[c->i] == ch) {
        c->i++;
        return 1;
    }
    return 0;
}

/* Exactly width digits. */
static int digits(cur_t *c, int width, int *v)
{
    int x = 0;
    for (int k = 0; k < width; k++, c->i++) {
        if (c->i >= c->n || c->p[c->i] < '0' || c->p[c->i] > '9')
            return 0;
        x = x * 10 + (c->p[c->i] - '0');
    }
    *v = x;
    return 1;
}

static int month(cur_t *c, int *m)
{
    if (c->n - c->i < 3)
        return 0;
    for (int k = 0; k < 12; k++) {
        if (memcmp(c->p + c->i, MONTH[k], 3) == 0) {
            *m = k + 1;
            c->i += 3;
            return 1;
        }
    }
    return 0;
}

static int clock_time(cur_t *c, int *hh, int *mm, int *ss)
{
    return digits(c, 2, hh) && eat(c, ':') && digits(c, 2, mm) && eat(c, ':') && digits(c, 2, ss);
}

int http_parse_date(const char *p, size_t n, int64_t *t)
{
    cur_t c = { p, n, 0 };
    while (c.i < n && ((p[c.i] >= 'A' && p[c.i] <= 'Z') || (p[c.i] >= 'a' && p[c.i] <= 'z')))
        c.i++;                             /* the day name: not checked against the date */
    if (c.i < 3)
        return -1;
    int y = 0, m = 0, d = 0, hh = 0, mm = 0, ss = 0, ok;
    if (eat(&c, ',') && eat(&c, ' ')) {
        if (c.i + 2 < n && p[c.i + 2] == '-') {   /* RFC 850: 06-Nov-94 */
            ok = digits(&c, 2, &d) && eat(&c, '-') && month(&c, &m) && eat(&c, '-') &&
                 digits(&c, 2, &y) && eat(&c, ' ');
            y += y < 70 ? 2000 : 1900;
        } else {                                  /* IMF-fixdate: 06 Nov 1994 */
            ok = digits(&c, 2, &d) && eat(&c, ' ') && month(&c, &m) && eat(&c, ' ') &&
                 digits(&c, 4, &y) && eat(&c, ' ');
        }
        ok = ok && clock_time(&c, &hh, &mm, &ss) && eat(&c, ' ') && eat(&c, 'G') &&
             eat(&c, 'M') && eat(&c, 'T');
    } else if (eat(&c, ' ')) {                    /* asctime: Nov  6 08:49:37 1994 */
        ok = month(&c, &m) && eat(&c, ' ');
        if (ok && eat(&c, ' '))
            ok = digits(&c, 1, &d);
        else
            ok = ok && digits(&c, 2, &d);
        ok = ok && eat(&c, ' ') && clock_time(&c, &hh, &mm, &ss) && eat(&c, ' ') && digits(&c, 4, &y);
    } else {
        return -1;
    }
    static const int mdays[12] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    int leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    /* No 31 Feb (it was taken for 2 Mar): a date that does not exist is no date. */
    if (!ok || c.i != n || d < 1 || d > mdays[m - 1] - (m == 2 && !leap) || hh > 23 || mm > 59 || ss > 60)
        return -1;
    *t = days_from_civil(y, m, d) * 86400 + hh * 3600 + mm * 60 + ss;
    return 0;
}
