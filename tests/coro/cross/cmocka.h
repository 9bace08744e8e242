/* A stand-in for the few cmocka calls test_ctx.c makes, for the aarch64 cross build
 * (Debian ships no arm64 libcmocka for the cross toolchain). Same names, same
 * behaviour: a failed assertion ends the test, the group goes on, main's exit status
 * counts the failures. Used only by tests/coro/cross-aarch64.sh. */
#ifndef IOPLEX_CMOCKA_STANDIN_H
#define IOPLEX_CMOCKA_STANDIN_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

struct CMUnitTest {
    const char *name;
    void (*test_func)(void **state);
};

static jmp_buf cm_jump;
enum { CM_FAILED = 1, CM_SKIPPED = 2 };

static void cm_fail(const char *file, int line, const char *what)
{
    printf("[  ERROR   ] --- %s\n[   LINE   ] --- %s:%d: error: Failure!\n", what, file, line);
    longjmp(cm_jump, CM_FAILED);
}

static void print_message(const char *fmt, ...) __attribute__((format(printf, 1, 2), unused));
static void print_message(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
}

#define cm_check(cond, text) ((cond) ? (void)0 : cm_fail(__FILE__, __LINE__, text))
#define assert_true(c) cm_check((c), #c)
#define assert_false(c) cm_check(!(c), "!(" #c ")")
#define assert_int_equal(a, b) cm_check((intmax_t)(a) == (intmax_t)(b), #a " == " #b)
#define assert_ptr_equal(a, b) cm_check((const void *)(a) == (const void *)(b), #a " == " #b)
#define assert_ptr_not_equal(a, b) cm_check((const void *)(a) != (const void *)(b), #a " != " #b)
#define assert_non_null(p) cm_check((p) != NULL, #p " != NULL")
#define assert_null(p) cm_check((p) == NULL, #p " == NULL")
#define assert_string_equal(a, b) cm_check(strcmp((a), (b)) == 0, #a " equals " #b)
#define skip() longjmp(cm_jump, CM_SKIPPED)
#define cmocka_unit_test(f) { #f, f }

static int cm_run(const char *group, const struct CMUnitTest *tests, size_t n,
                  int (*setup)(void **), int (*teardown)(void **))
{
    void *state = NULL;
    volatile int failed = 0;
    printf("[==========] %s: running %zu test(s).\n", group, n);
    if (setup != NULL && setup(&state) != 0)
        return 1;
    for (size_t i = 0; i < n; i++) {
        printf("[ RUN      ] %s\n", tests[i].name);
        fflush(stdout);
        int r = setjmp(cm_jump);
        if (r == 0)
            tests[i].test_func(&state);
        printf("%s %s\n", r == CM_FAILED ? "[  FAILED  ]" : r == CM_SKIPPED ? "[  SKIPPED ]" : "[       OK ]",
               tests[i].name);
        failed += r == CM_FAILED;
    }
    if (teardown != NULL)
        teardown(&state);
    printf("[==========] %s: %d failed.\n", group, failed);
    return failed;
}

#define cmocka_run_group_tests_name(name, tests, setup, teardown) \
    cm_run((name), (tests), sizeof(tests) / sizeof((tests)[0]), (setup), (teardown))

#endif
