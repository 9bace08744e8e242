#include "stdio_guard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>

void iop_app_guard_stdio(void)
{
    /* Not close-on-exec: a closed fd 0-2 refilled here stays refilled in what the
     * program runs (a worker re-executed, a test child). */
    for (int fd = 0; fd <= 2; fd++)
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF && open("/dev/null", O_RDWR) < 0)
            exit(EXIT_FAILURE);
}
