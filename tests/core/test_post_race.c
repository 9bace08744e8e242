/* A thread posting to a loop can be preempted between pushing its record and
 * writing the loop's wake-up: meanwhile the loop may run the post's callback (it
 * runs posts every iteration), return, and be destroyed. destroy must wait for the
 * poster to leave, or its late write lands in a freed loop and an fd number the
 * application has since reused.
 *
 * The preemption is made certain: this program's write() sleeps 50 ms when the
 * posting thread calls it (the library's calls resolve to this definition first). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include "ioplex.h"
#include "test_util.h"

static _Thread_local int slow_writer;

ssize_t write(int fd, const void *buf, size_t n)
{
    static ssize_t (*real)(int, const void *, size_t);
    if (!real)
        real = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    if (slow_writer) {
        struct timespec ts = { 0, 50 * 1000000L };
        nanosleep(&ts, NULL);
    }
    return real(fd, buf, n);
}

static iop_loop_t *loop;
static iop_post_t post;
static atomic_int ran;

static void post_ran(iop_post_t *p) { (void)p; atomic_store(&ran, 1); }
static void tick(iop_timer_t *t) { (void)t; }

static void *poster(void *arg)
{
    (void)arg;
    slow_writer = 1;
    iop_loop_post(loop, &post, post_ran);
    return NULL;
}

static void test_destroy_waits_for_poster(void **state)
{
    (void)state;
    loop = tu_loop_new();
    /* A 1 ms tick: the loop sees the post without its wake-up. */
    iop_timer_t t = { 0 };
    assert_int_equal(iop_timer_start(loop, &t, 1000000, 1000000, tick), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, poster, NULL), 0);
    uint64_t end = tu_clock_ms() + 5000;
    while (!atomic_load(&ran) && tu_clock_ms() < end)
        iop_loop_run(loop, IOP_RUN_ONCE);
    assert_true(atomic_load(&ran));
    iop_timer_stop(&t);
    iop_loop_destroy(loop);        /* the poster may still be inside iop_loop_post */
    int mine[8];
    for (int i = 0; i < 8; i++)
        mine[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);   /* reuse freed numbers */
    assert_int_equal(pthread_join(th, NULL), 0);
    for (int i = 0; i < 8; i++) {
        uint64_t v = 0;
        assert_int_equal(read(mine[i], &v, sizeof v), -1);   /* nothing stray arrived */
        close(mine[i]);
    }
}

int main(int argc, char **argv)
{
    tu_backend = tu_backend_from_args(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_destroy_waits_for_poster),
    };
    return cmocka_run_group_tests_name("core.post_race", tests, NULL, NULL);
}
