/* Capability bits as words, for tools and reports. */
#include <stdio.h>
#include <string.h>
#include "ioplex/common.h"

static const char *const cap_names[] = {
    "unlimited-fds", "o1-poll", "native-ops", "multishot-accept", "multishot-recv",
    "provided-buffers", "zerocopy-send", "registered-files", "sqpoll", "busy-poll",
    "exclusive-wake", "need-reinit", "kernel-deadlines", "registered-buffers",
};

char *iop_caps_str(uint32_t caps, char *buf, size_t len)
{
    size_t used = 0;
    if (!len)
        return buf;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof cap_names / sizeof cap_names[0]; i++) {
        if (!(caps & (1u << i)))
            continue;
        int n = snprintf(buf + used, len - used, "%s%s", used ? " " : "", cap_names[i]);
        if (n < 0 || (size_t)n >= len - used)
            break;
        used += (size_t)n;
    }
    return buf;
}
