/* Internal: which sanitizer this file is built with (IOP__ASAN, IOP__TSAN), the
 * same under gcc (__SANITIZE_*__) and clang (__has_feature), and the exit of a
 * forked process that leaves with _exit. */
#ifndef IOP_SANITIZER_INTERNAL_H
#define IOP_SANITIZER_INTERNAL_H

#include <unistd.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define IOP__ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#define IOP__TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(IOP__ASAN)
#define IOP__ASAN 1
#endif
#if defined(__SANITIZE_THREAD__) && !defined(IOP__TSAN)
#define IOP__TSAN 1
#endif

#if IOP__ASAN
#include <sanitizer/lsan_interface.h>
#endif

/* _exit(status) for a forked worker (shard or pool). _exit skips the leak
 * checker's atexit run, so in an ASan build the check runs here: a leak makes the
 * status 23 if it was 0, which the parent reports. */
static inline _Noreturn void iop__exit_checked(int status)
{
#if IOP__ASAN
    if (__lsan_do_recoverable_leak_check())
        _exit(status ? status : 23);
#endif
    _exit(status);
}

#endif
