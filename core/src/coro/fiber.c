/* The switch every caller uses: the raw iop__ctx_switch plus what the tools need to
 * follow a stack switch. Without sanitizers this is a canary check and a tail call.
 *
 *  - ASan: __sanitizer_start_switch_fiber right before the switch names the stack we
 *    go to and saves our fake stack (use-after-return frames) in from; the resumed
 *    side calls __sanitizer_finish_switch_fiber with ITS saved fake stack right after.
 *    A new context finishes in iop__ctx_boot with none. A dying context passes NULL
 *    so that ASan frees its fake stack.
 *  - TSan: one fiber per context (made in ctx_make, the thread's own context adopts
 *    __tsan_get_current_fiber), __tsan_switch_to_fiber right before the switch.
 *  - valgrind: each coroutine stack is registered, so memcheck knows a jump of the
 *    stack pointer into it is a switch, not a wild stack change. */
#include <pthread.h>
#include "ctx_arch.h"
#include "ioplex/coro.h"

#include "sanitizer_internal.h"

#if IOP__ASAN
#include <sanitizer/common_interface_defs.h>
#endif
#if IOP__TSAN
/* Declared here: GCC 12's tsan_interface.h has an old-style declaration that
 * -Wstrict-prototypes rejects. */
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
#endif
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define IOP__VALGRIND 1
#endif
#endif

void iop__ctx_make(iop__ctx_t *c, const iop__stack_t *s, void (*entry)(void *), void *arg)
{
    c->asan_fake_stack = NULL;
    c->tsan_fiber = NULL;
    c->valgrind_id = 0;
    iop__ctx_arch_make(c, s->lo, s->size, entry, arg);
#if IOP__VALGRIND
    c->valgrind_id = VALGRIND_STACK_REGISTER(s->lo, (char *)s->lo + s->size);
#endif
#if IOP__TSAN
    c->tsan_fiber = __tsan_create_fiber(0);
#endif
}

void iop__ctx_unmake(iop__ctx_t *c)
{
#if IOP__VALGRIND
    if (c->valgrind_id != 0)
        VALGRIND_STACK_DEREGISTER(c->valgrind_id);
#endif
    c->valgrind_id = 0;
#if IOP__TSAN
    if (c->tsan_fiber != NULL)
        __tsan_destroy_fiber(c->tsan_fiber);
#endif
    c->tsan_fiber = NULL;
}

#if IOP__ASAN
/* The bounds of the calling thread's own stack, for switches back to it. */
static void thread_stack_bounds(const void **bottom, size_t *size)
{
    static _Thread_local const void *tl_bottom;
    static _Thread_local size_t tl_size;
    if (tl_size == 0) {
        pthread_attr_t attr;
        void *addr = NULL;
        size_t len = 0;
        if (pthread_getattr_np(pthread_self(), &attr) == 0) {
            pthread_attr_getstack(&attr, &addr, &len);
            pthread_attr_destroy(&attr);
        }
        tl_bottom = addr;
        tl_size = len;
    }
    *bottom = tl_bottom;
    *size = tl_size;
}
#endif

void iop__ctx_boot(void (*entry)(void *), void *arg)
{
#if IOP__ASAN
    __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
#endif
    entry(arg);
    __builtin_trap();   /* entry must switch away for good instead of returning */
}

#if !IOP__ASAN && !IOP__TSAN

/* The canary path out of line, so that the common one is two tests and a jump. */
static __attribute__((noinline)) void switch_checked(iop__ctx_t *from, const iop__stack_t *from_stack,
                                                     iop__ctx_t *to)
{
    iop__stack_check(from_stack);
    iop__ctx_switch(from, to);
}

void iop__fiber_switch(iop__ctx_t *from, const iop__stack_t *from_stack,
                       iop__ctx_t *to, const iop__stack_t *to_stack, int dying)
{
    (void)to_stack;
    (void)dying;
    if (from_stack != NULL && (from_stack->flags & IOP_CORO_CANARY))
        switch_checked(from, from_stack, to);
    else
        iop__ctx_switch(from, to);
}

#else

void iop__fiber_switch(iop__ctx_t *from, const iop__stack_t *from_stack,
                       iop__ctx_t *to, const iop__stack_t *to_stack, int dying)
{
    if (from_stack != NULL && (from_stack->flags & IOP_CORO_CANARY))
        iop__stack_check(from_stack);
#if IOP__ASAN
    const void *bottom;
    size_t size;
    if (to_stack != NULL) {
        bottom = to_stack->lo;
        size = to_stack->size;
    } else {
        thread_stack_bounds(&bottom, &size);
    }
    __sanitizer_start_switch_fiber(dying ? NULL : &from->asan_fake_stack, bottom, size);
#else
    (void)to_stack;
    (void)dying;
#endif
#if IOP__TSAN
    if (from->tsan_fiber == NULL)
        from->tsan_fiber = __tsan_get_current_fiber();
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
    iop__ctx_switch(from, to);
#if IOP__ASAN
    __sanitizer_finish_switch_fiber(from->asan_fake_stack, NULL, NULL);
#endif
}

#endif
