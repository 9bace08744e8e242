#include "latency_hist.h"

static unsigned bucket_of(uint64_t v)
{
    if (v < LAT_SUB_COUNT)
        return (unsigned)v;
    unsigned exp = 63u - (unsigned)__builtin_clzll(v);   /* v's top bit, >= LAT_SUB_BITS */
    if (exp >= LAT_MAX_EXP)
        return LAT_BUCKETS - 1;
    unsigned sub = (unsigned)(v >> (exp - LAT_SUB_BITS)) & (LAT_SUB_COUNT - 1);
    return (exp - LAT_SUB_BITS + 1) * LAT_SUB_COUNT + sub;
}

/* The middle of bucket b: the inverse of bucket_of. */
static uint64_t bucket_mid(unsigned b)
{
    if (b < LAT_SUB_COUNT)
        return b;
    unsigned exp = b / LAT_SUB_COUNT + LAT_SUB_BITS - 1;
    uint64_t sub = b % LAT_SUB_COUNT;
    uint64_t width = 1ull << (exp - LAT_SUB_BITS);
    return (LAT_SUB_COUNT + sub) * width + width / 2;
}

void latency_hist_add(latency_hist_t *h, uint64_t ns)
{
    h->buckets[bucket_of(ns)]++;
    h->count++;
}

uint64_t latency_hist_quantile(const latency_hist_t *h, double q)
{
    if (h->count == 0)
        return 0;
    /* rank of the wanted value, 1-based: the smallest value with >= q of all at or below */
    uint64_t rank = (uint64_t)(q * (double)h->count);
    if ((double)rank < q * (double)h->count)
        rank++;
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned b = 0; b < LAT_BUCKETS; b++) {
        seen += h->buckets[b];
        if (seen >= rank)
            return bucket_mid(b);
    }
    return bucket_mid(LAT_BUCKETS - 1);
}
