#include "listen_all.h"

#include <errno.h>
#include <stdio.h>
#include <sys/socket.h>
#include <ioplex/shard.h>

#include "hostport.h"

int iop_app_listen_all(const char *prog, const char *addr, int fds[IOP_APP_MAX_LISTENERS], int *status)
{
    const char *listen[] = { addr, NULL };
    uint32_t entry[IOP_APP_MAX_LISTENERS];   /* all 0: there is one entry */
    int r = iop_shard_listen(listen, IOP_SHARD_ALL_ADDRESSES, 0, fds, entry, IOP_APP_MAX_LISTENERS);
    if (r >= 0)
        return r;
    fprintf(stderr, "%s: cannot listen: %s\n", prog, iop_last_error()[0] ? iop_last_error() : iop_strerror(r));
    *status = r == -EINVAL || r == -EADDRINUSE || r == -EADDRNOTAVAIL || r == -EACCES ? 2 : 1;
    return -1;
}

void iop_app_say_listening(const char *prog, const int *fds, uint32_t n, iop_loop_t *loop)
{
    const char *report = iop_loop_backend_report(loop);
    for (uint32_t i = 0; i < n; i++) {
        struct sockaddr_storage ss;
        socklen_t sslen = sizeof ss;
        char where[128];
        getsockname(fds[i], (struct sockaddr *)&ss, &sslen);
        iop_app_format_addr((struct sockaddr *)&ss, sslen, where, sizeof where);
        printf("%s: listening on %s, backend %s%s%s%s\n", prog, where, iop_loop_backend(loop),
               report[0] ? " (" : "", report, report[0] ? ")" : "");
    }
    fflush(stdout);
}
