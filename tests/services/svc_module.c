/* A service module for the tests, built several times with defines that break it
 * in one way each: SVC_NAME (what the descriptor says), SVC_ABI, SVC_NO_SERVE,
 * SVC_NO_DESCRIPTOR, SVC_UNRESOLVED (serve calls a function nothing defines); and
 * SVC_FLAKY_START, whose worker_start fails while the file named by
 * $IOP_TEST_FAIL_START exists and whose worker_stop hangs (60 s at most) while the
 * file named by $IOP_TEST_HANG_STOP does. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <ioplex/service.h>

#ifdef SVC_UNRESOLVED
int iop_test_nowhere_defined(void);
#endif

#ifndef SVC_ABI
#define SVC_ABI IOP_SERVICE_ABI_VERSION
#endif

__attribute__((unused)) static int serve(void *state, iop_service_conn_t *conn)
{
    (void)state;
    (void)conn;
#ifdef SVC_UNRESOLVED
    return iop_test_nowhere_defined();
#else
    return 0;
#endif
}

#ifdef SVC_FLAKY_START
static int flaky_start(void *state, iop_loop_t *loop, int worker, char *err, size_t errlen)
{
    (void)state, (void)loop, (void)worker;
    const char *flag = getenv("IOP_TEST_FAIL_START");
    if (flag && access(flag, F_OK) == 0) {
        snprintf(err, errlen, "told to fail (%s exists)", flag);
        return -EIO;
    }
    return 0;
}

static void hang_stop(void *state)
{
    (void)state;
    const char *flag = getenv("IOP_TEST_HANG_STOP");
    for (int i = 0; i < 600 && flag && access(flag, F_OK) == 0; i++)
        usleep(100 * 1000);
}
#endif

#ifndef SVC_NO_DESCRIPTOR
IOP_SERVICE_EXPORT const iop_service_desc_t iop_service_descriptor = {
    .abi_version = SVC_ABI,
    .desc_size = sizeof(iop_service_desc_t),
    .name = SVC_NAME,
    .summary = "a test service",
#ifndef SVC_NO_SERVE
    .serve = serve,
#endif
#ifdef SVC_FLAKY_START
    .worker_start = flaky_start,
    .worker_stop = hang_stop,
#endif
};
#else
IOP_SERVICE_EXPORT int not_a_descriptor = 1;
#endif
