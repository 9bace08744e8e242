/* A fixed log-linear latency histogram (HdrHistogram's idea, in miniature): values
 * below 32 ns have a bucket each; above, each power of two is split into 32 equal
 * buckets, so any value is kept within ~3%. The array is fixed, so recording a
 * value costs a few instructions and never allocates. */
#ifndef IOP_APP_LATENCY_HIST_H
#define IOP_APP_LATENCY_HIST_H

#include <stdint.h>

#define LAT_SUB_BITS 5
#define LAT_SUB_COUNT (1u << LAT_SUB_BITS)
#define LAT_MAX_EXP 40                    /* values clamp at 2^40 ns (~18 minutes) */
#define LAT_BUCKETS ((LAT_MAX_EXP - LAT_SUB_BITS + 1) * LAT_SUB_COUNT)

typedef struct latency_hist {
    uint64_t count;
    uint64_t buckets[LAT_BUCKETS];
} latency_hist_t;

void latency_hist_add(latency_hist_t *h, uint64_t ns);

/* The value at quantile q (0..1) in ns: the middle of the bucket holding it; 0 when
 * empty. */
uint64_t latency_hist_quantile(const latency_hist_t *h, double q);

#endif
