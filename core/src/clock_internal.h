/* Internal: deadline arithmetic. A time plus a caller's duration saturates at
 * UINT64_MAX ("never") instead of wrapping into the past, where a huge timeout or
 * repeat would fire at once. */
#ifndef IOP_CLOCK_INTERNAL_H
#define IOP_CLOCK_INTERNAL_H

#include <stdint.h>

static inline uint64_t iop__ns_after(uint64_t t, uint64_t ns)
{
    return ns > UINT64_MAX - t ? UINT64_MAX : t + ns;
}

#endif
