/* The coroutine machine layer: context switch, fiber switch, stacks.
 *
 * Contexts here are driven by hand, without the scheduler: the test's main function
 * switches into a context, the context switches back. Death tests (overflows) run in a
 * forked child whose stderr the parent reads. Also built for aarch64 and run under
 * qemu-user by tests/coro/cross-aarch64.sh (with a small cmocka stand-in). */
#include <errno.h>
#include <fenv.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "ioplex.h"
#include "ioplex/coro.h"
#include "ctx.h"
#include "stack.h"

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

static iop__stack_pool_t *pool;
static iop__ctx_t main_ctx;   /* the test thread's own stack */

/* ---- a hand-driven context ----------------------------------------------------------- */

struct tco {
    iop__ctx_t ctx;
    iop__stack_t stack;
    void (*body)(struct tco *);
    void *data;
    int finished;
};

static void tco_entry(void *arg)
{
    struct tco *t = arg;
    t->body(t);
    t->finished = 1;
    iop__fiber_switch(&t->ctx, &t->stack, &main_ctx, NULL, 1);
    __builtin_trap();   /* a dying context is never resumed */
}

static void tco_start(struct tco *t, void (*body)(struct tco *), void *data,
                      uint32_t flags, size_t size, const char *name)
{
    memset(t, 0, sizeof *t);
    t->body = body;
    t->data = data;
    assert_int_equal(iop__stack_get(pool, size, flags, &t->stack), 0);
    t->stack.owner = name;
    iop__ctx_make(&t->ctx, &t->stack, tco_entry, t);
}

/* From the main function into t, until t switches back. */
static void tco_resume(struct tco *t)
{
    iop__fiber_switch(&main_ctx, NULL, &t->ctx, &t->stack, 0);
}

/* From t back to the main function. */
static void tco_yield(struct tco *t)
{
    iop__fiber_switch(&t->ctx, &t->stack, &main_ctx, NULL, 0);
}

static void tco_end(struct tco *t)
{
    iop__ctx_unmake(&t->ctx);
    iop__stack_put(pool, &t->stack);
}

static int setup(void **state)
{
    (void)state;
    return iop__stack_pool_new(&pool, 16);
}

static int teardown(void **state)
{
    (void)state;
    iop__stack_pool_free(pool);
    return 0;
}

/* ---- ping-pong --------------------------------------------------------------------------- */

#define PING_ROUNDS 1000

static volatile long shared;

static void pong_body(struct tco *t)
{
    for (long i = 0; i < PING_ROUNDS; i++) {
        long got = shared;
        shared = got * 3 + 1;   /* the main side checks we saw its value */
        tco_yield(t);
    }
}

static void ping_pong(uint32_t flags)
{
    struct tco t;
    tco_start(&t, pong_body, NULL, flags, 0, "pong");
    for (long i = 0; i < PING_ROUNDS; i++) {
        shared = i;
        tco_resume(&t);
        assert_int_equal(shared, i * 3 + 1);
        assert_false(t.finished);
    }
    tco_resume(&t);
    assert_true(t.finished);
    tco_end(&t);
}

static void test_ping_pong_guard(void **state) { (void)state; ping_pong(IOP_CORO_GUARD); }
static void test_ping_pong_canary(void **state) { (void)state; ping_pong(IOP_CORO_CANARY); }

/* ---- callee-saved registers ------------------------------------------------------------------ */

/* What test_switch_keeping passes to iop__fiber_switch. */
struct sw_args {
    iop__ctx_t *from;
    const iop__stack_t *from_stack;
    iop__ctx_t *to;
    const iop__stack_t *to_stack;
};

/* test_switch_keeping(in, out, sw): loads every callee-saved register from in, calls
 * iop__fiber_switch(sw...), and when something switches back stores those registers
 * into out. Written in assembly so that no compiler-saved copy can hide a register
 * the switch failed to restore. */
void test_switch_keeping(const uint64_t *in, uint64_t *out, const struct sw_args *sw);

#if defined(__x86_64__)
#define NKEPT 6   /* rbx rbp r12 r13 r14 r15 */
__asm__(
    "    .text\n"
    "    .globl test_switch_keeping\n"
    "    .type test_switch_keeping, @function\n"
    "test_switch_keeping:\n"
    "    pushq %rbx\n    pushq %rbp\n    pushq %r12\n    pushq %r13\n    pushq %r14\n    pushq %r15\n"
    "    pushq %rsi\n"                       /* out; 7 pushes leave rsp 16-aligned */
    "    movq %rdx, %rax\n"
    "    movq 0(%rdi), %rbx\n    movq 8(%rdi), %rbp\n    movq 16(%rdi), %r12\n"
    "    movq 24(%rdi), %r13\n    movq 32(%rdi), %r14\n    movq 40(%rdi), %r15\n"
    "    movq 0(%rax), %rdi\n    movq 8(%rax), %rsi\n    movq 16(%rax), %rdx\n"
    "    movq 24(%rax), %rcx\n    xorl %r8d, %r8d\n"
    "    call iop__fiber_switch\n"
    "    popq %rax\n"
    "    movq %rbx, 0(%rax)\n    movq %rbp, 8(%rax)\n    movq %r12, 16(%rax)\n"
    "    movq %r13, 24(%rax)\n    movq %r14, 32(%rax)\n    movq %r15, 40(%rax)\n"
    "    popq %r15\n    popq %r14\n    popq %r13\n    popq %r12\n    popq %rbp\n    popq %rbx\n"
    "    ret\n"
    "    .size test_switch_keeping, . - test_switch_keeping\n");
#elif defined(__aarch64__)
#define NKEPT 19  /* x19-x29, d8-d15 */
__asm__(
    "    .text\n"
    "    .globl test_switch_keeping\n"
    "    .type test_switch_keeping, %function\n"
    "test_switch_keeping:\n"
    "    stp x29, x30, [sp, #-0xb0]!\n"
    "    stp x19, x20, [sp, #0x10]\n    stp x21, x22, [sp, #0x20]\n    stp x23, x24, [sp, #0x30]\n"
    "    stp x25, x26, [sp, #0x40]\n    stp x27, x28, [sp, #0x50]\n"
    "    stp d8, d9, [sp, #0x60]\n    stp d10, d11, [sp, #0x70]\n"
    "    stp d12, d13, [sp, #0x80]\n    stp d14, d15, [sp, #0x90]\n"
    "    str x1, [sp, #0xa0]\n"
    "    mov x9, x2\n"
    "    ldp x19, x20, [x0, #0]\n    ldp x21, x22, [x0, #16]\n    ldp x23, x24, [x0, #32]\n"
    "    ldp x25, x26, [x0, #48]\n    ldp x27, x28, [x0, #64]\n    ldr x29, [x0, #80]\n"
    "    ldp d8, d9, [x0, #88]\n    ldp d10, d11, [x0, #104]\n"
    "    ldp d12, d13, [x0, #120]\n    ldp d14, d15, [x0, #136]\n"
    "    ldp x0, x1, [x9]\n    ldp x2, x3, [x9, #16]\n    mov w4, #0\n"
    "    bl iop__fiber_switch\n"
    "    ldr x9, [sp, #0xa0]\n"
    "    stp x19, x20, [x9, #0]\n    stp x21, x22, [x9, #16]\n    stp x23, x24, [x9, #32]\n"
    "    stp x25, x26, [x9, #48]\n    stp x27, x28, [x9, #64]\n    str x29, [x9, #80]\n"
    "    stp d8, d9, [x9, #88]\n    stp d10, d11, [x9, #104]\n"
    "    stp d12, d13, [x9, #120]\n    stp d14, d15, [x9, #136]\n"
    "    ldp x19, x20, [sp, #0x10]\n    ldp x21, x22, [sp, #0x20]\n    ldp x23, x24, [sp, #0x30]\n"
    "    ldp x25, x26, [sp, #0x40]\n    ldp x27, x28, [sp, #0x50]\n"
    "    ldp d8, d9, [sp, #0x60]\n    ldp d10, d11, [sp, #0x70]\n"
    "    ldp d12, d13, [sp, #0x80]\n    ldp d14, d15, [sp, #0x90]\n"
    "    ldp x29, x30, [sp], #0xb0\n"
    "    ret\n"
    "    .size test_switch_keeping, . - test_switch_keeping\n");
#endif

#ifdef NKEPT
struct regs_test {
    uint64_t co_in[NKEPT], co_out[NKEPT];
};

static void fill_pattern(uint64_t *v, uint64_t seed)
{
    for (int i = 0; i < NKEPT; i++)
        v[i] = seed * 0x0101010101010101ull + (uint64_t)i * 0x1111;
}

static void regs_body(struct tco *t)
{
    struct regs_test *rt = t->data;
    struct sw_args back = { &t->ctx, &t->stack, &main_ctx, NULL };
    fill_pattern(rt->co_in, 0xb0);
    test_switch_keeping(rt->co_in, rt->co_out, &back);
}

static void test_callee_saved_registers(void **state)
{
    (void)state;
    struct regs_test rt;
    uint64_t in1[NKEPT], out1[NKEPT], in2[NKEPT], out2[NKEPT];
    struct tco t;
    tco_start(&t, regs_body, &rt, IOP_CORO_GUARD, 0, "regs");
    struct sw_args go = { &main_ctx, NULL, &t.ctx, &t.stack };

    fill_pattern(in1, 0xa0);
    test_switch_keeping(in1, out1, &go);          /* the context loads its own values */
    for (int i = 0; i < NKEPT; i++)
        assert_int_equal(out1[i], in1[i]);

    fill_pattern(in2, 0xc0);
    test_switch_keeping(in2, out2, &go);          /* resumes it: its values are back */
    for (int i = 0; i < NKEPT; i++) {
        assert_int_equal(rt.co_out[i], rt.co_in[i]);
        assert_int_equal(out2[i], in2[i]);
    }
    assert_true(t.finished);
    tco_end(&t);
}
#endif

/* ---- floating point ---------------------------------------------------------------------------- */

#if defined(__x86_64__)
static unsigned read_mxcsr(void) { return __builtin_ia32_stmxcsr(); }
static unsigned read_x87_cw(void)
{
    unsigned short cw;
    __asm__ volatile("fnstcw %0" : "=m"(cw));
    return cw;
}
#endif

/* 1/3 in the current rounding mode: rounding up and down differ in the last bit. */
static double third(void)
{
    volatile double one = 1.0, three = 3.0;
    return one / three;
}

struct fenv_test {
    int co_mode_at_start;
    double co_third_at_start;
    int co_mode_after;
#if defined(__x86_64__)
    unsigned co_mxcsr, co_x87;
#endif
};

static void fenv_body(struct tco *t)
{
    struct fenv_test *ft = t->data;
    ft->co_mode_at_start = fegetround();
    ft->co_third_at_start = third();
    fesetround(FE_DOWNWARD);
    tco_yield(t);
    ft->co_mode_after = fegetround();   /* still ours after the main side's mode ran */
#if defined(__x86_64__)
    ft->co_mxcsr = read_mxcsr();
    ft->co_x87 = read_x87_cw();
#endif
}

static void test_fp_control_preserved(void **state)
{
    (void)state;
    struct fenv_test ft;
    memset(&ft, 0, sizeof ft);
    double nearest = third();
    fesetround(FE_DOWNWARD);
    double down = third();
    fesetround(FE_UPWARD);
    double up = third();
    fesetround(FE_TONEAREST);
    /* valgrind keeps the rounding mode but computes in round-to-nearest */
    int rounding_real = !RUNNING_ON_VALGRIND;
    assert_true(down < up || !rounding_real);

    struct tco t;
    tco_start(&t, fenv_body, &ft, IOP_CORO_GUARD, 0, "fenv");   /* made in nearest mode */
    fesetround(FE_UPWARD);
    tco_resume(&t);
    /* The context started with its creator's mode, not the one we switched from. */
    assert_int_equal(ft.co_mode_at_start, FE_TONEAREST);
    assert_true(ft.co_third_at_start == nearest);
    /* Its FE_DOWNWARD did not leak into us. */
    assert_int_equal(fegetround(), FE_UPWARD);
    assert_true(third() == up || !rounding_real);
#if defined(__x86_64__)
    unsigned main_mxcsr = read_mxcsr(), main_x87 = read_x87_cw();
    assert_int_equal(main_mxcsr & 0x6000, 0x4000);   /* MXCSR RC = up */
    assert_int_equal(main_x87 & 0x0c00, 0x0800);     /* x87 RC = up */
#endif
    tco_resume(&t);
    assert_true(t.finished);
    assert_int_equal(ft.co_mode_after, FE_DOWNWARD);
#if defined(__x86_64__)
    assert_int_equal(ft.co_mxcsr & 0x6000, 0x2000);
    assert_int_equal(ft.co_x87 & 0x0c00, 0x0400);
    assert_int_equal(read_mxcsr(), main_mxcsr);
    assert_int_equal(read_x87_cw(), main_x87);
#endif
    assert_int_equal(fegetround(), FE_UPWARD);
    fesetround(FE_TONEAREST);
    tco_end(&t);
}

struct fp_work { double sum; long double lsum; char text[64]; };

static void fp_body(struct tco *t)
{
    struct fp_work *w = t->data;
    double s = 0;
    long double ls = 0;
    for (int k = 1; k <= 1000; k++) {
        s += 1.0 / ((double)k * k);
        ls += 1.0L / ((long double)k * k);
        if (k % 250 == 0)
            tco_yield(t);   /* the sums live in registers / on this stack across switches */
    }
    w->sum = s;
    w->lsum = ls;
    /* varargs with doubles: the callee spills vector registers with aligned stores */
    snprintf(w->text, sizeof w->text, "%.6f %.6Lf", s, ls);
}

static void test_fp_on_coroutine_stack(void **state)
{
    (void)state;
    struct fp_work w;
    memset(&w, 0, sizeof w);
    struct tco t;
    tco_start(&t, fp_body, &w, IOP_CORO_GUARD, 0, "fp");
    for (int i = 0; i < 10 && !t.finished; i++) {
        volatile double noise = 0;   /* FP work on the main side in between */
        for (int k = 1; k < 100; k++)
            noise += 3.0 / k;
        tco_resume(&t);
    }
    assert_true(t.finished);
    double s = 0;
    for (int k = 1; k <= 1000; k++)
        s += 1.0 / ((double)k * k);
    assert_true(w.sum == s);
    assert_true(w.lsum > 1.6438L && w.lsum < 1.6440L);
    assert_string_equal(w.text, "1.643935 1.643935");
    tco_end(&t);
}

/* ---- alignment at entry ----------------------------------------------------------------------- */

struct align_test { uintptr_t frame, local, ld; };

static __attribute__((noinline)) void align_body(struct tco *t)
{
    struct align_test *a = t->data;
    volatile long double ld = 1.5L;
    _Alignas(max_align_t) volatile char local[32];
    local[0] = 1;
    a->frame = (uintptr_t)__builtin_frame_address(0);
    a->local = (uintptr_t)&local[0];
    a->ld = (uintptr_t)&ld;
}

static void test_stack_alignment(void **state)
{
    (void)state;
    for (size_t size = 16384; size <= 65536 + 4096; size += 12288) {
        struct align_test a;
        struct tco t;
        tco_start(&t, align_body, &a, IOP_CORO_GUARD, size, "align");
        tco_resume(&t);
        assert_true(t.finished);
        assert_int_equal(a.frame % 16, 0);
        assert_int_equal(a.local % _Alignof(max_align_t), 0);
        assert_int_equal(a.ld % _Alignof(long double), 0);
        /* (locals may live in ASan's fake stack; the frame is always on ours) */
        assert_true(a.frame > (uintptr_t)t.stack.lo &&
                    a.frame < (uintptr_t)t.stack.lo + t.stack.size);
        tco_end(&t);
    }
}

/* ---- the pool ------------------------------------------------------------------------------------ */

/* Leaves the stack dirty (and, under ASan, with poisoned redzones) for the next user. */
static void scribble_body(struct tco *t)
{
    volatile char big[8192];
    memset((char *)big, 0x77, sizeof big);
    tco_yield(t);
    (void)big[100];
}

/* A mark in the lowest word of a stack, which the shallow coroutines here never reach:
 * finding it again proves the stack was kept, not unmapped and mapped anew at the same
 * address (a fresh mapping reads as zeros). */
#define REUSE_MARK 0x5eed5eed5eed5eedull

static void mark_stack(const iop__stack_t *s) { *(volatile uint64_t *)s->lo = REUSE_MARK; }
static int stack_marked(const iop__stack_t *s) { return *(volatile uint64_t *)s->lo == REUSE_MARK; }

static void test_pool_reuses_stacks(void **state)
{
    (void)state;
    iop__stack_pool_t *shared_pool = pool;   /* a fresh pool: no classes taken yet */
    assert_int_equal(iop__stack_pool_new(&pool, 8), 0);
    static const uint32_t kinds[] = { IOP_CORO_GUARD, IOP_CORO_CANARY };
    for (int k = 0; k < 2; k++) {
        iop__stack_t a, b, c;
        assert_int_equal(iop__stack_get(pool, 40000, kinds[k], &a), 0);
        assert_true(a.size >= 40000);
        assert_int_equal((uintptr_t)a.lo % 16, 0);
        assert_true((char *)a.lo >= (char *)a.map &&
                    (char *)a.lo + a.size == (char *)a.map + a.map_size);
        void *map = a.map;
        assert_false(stack_marked(&a));
        mark_stack(&a);
        iop__stack_put(pool, &a);
        assert_int_equal(iop__stack_get(pool, 40000, kinds[k], &b), 0);
        assert_ptr_equal(b.map, map);                 /* the same stack, reused */
        assert_true(stack_marked(&b));
        assert_int_equal(iop__stack_get(pool, 40000, kinds[k], &c), 0);
        assert_ptr_not_equal(c.map, map);             /* b still holds it */
        iop__stack_put(pool, &b);
        iop__stack_put(pool, &c);
        iop__stack_t d;
        assert_int_equal(iop__stack_get(pool, 200000, kinds[k], &d), 0);
        assert_true(d.map != map && d.map != c.map);  /* another size, another stack */
        assert_true(d.size >= 200000);
        iop__stack_put(pool, &d);
    }

    /* A coroutine on a reused stack runs clean (ASan: no false underflow). */
    void *first = NULL;
    for (int round = 0; round < 3; round++) {
        struct tco t;
        tco_start(&t, scribble_body, NULL, IOP_CORO_GUARD, 0, "scribble");
        if (round == 0) {
            first = t.stack.map;
        } else {
            assert_ptr_equal(t.stack.map, first);
            assert_true(stack_marked(&t.stack));
        }
        tco_resume(&t);
        tco_resume(&t);
        assert_true(t.finished);
        mark_stack(&t.stack);
        tco_end(&t);
    }
    iop__stack_pool_free(pool);
    pool = shared_pool;
}

/* ---- overflows, in a forked child ------------------------------------------------------------------ */

struct child {
    int exited, code, signo;
    char err[4096];
};

/* Runs fn in a child with stderr captured; fn should not return. 0, or -1 if the child
 * could not be run. */
static int run_child(void (*fn)(void), struct child *c)
{
    memset(c, 0, sizeof *c);
    int p[2];
    if (pipe(p) != 0)
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        close(p[0]);
        dup2(p[1], STDERR_FILENO);
        alarm(20);   /* a hang fails the test instead of blocking it */
        fn();
        _exit(99);
    }
    close(p[1]);
    size_t n = 0;
    ssize_t r;
    while (n < sizeof c->err - 1 && (r = read(p[0], c->err + n, sizeof c->err - 1 - n)) > 0)
        n += (size_t)r;
    c->err[n] = '\0';
    close(p[0]);
    int status;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    c->exited = WIFEXITED(status);
    c->code = c->exited ? WEXITSTATUS(status) : -1;
    c->signo = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    return 0;
}

/* cmocka catches SIGSEGV during each test (and the handler it finds at a test's start
 * is the one it restores at its end), so the children that must die of a signal are
 * forked by main() before cmocka starts, from a process that has no stack yet; the
 * tests check what they did. */
static struct child guard_result, canary_result, wild_result;

static void show_child(const char *what, const struct child *c)
{
    print_message("%s: exited %d code %d signal %d, stderr: %s", what, c->exited, c->code,
                  c->signo, c->err[0] ? c->err : "(empty)\n");
}

static int recurse(int depth)
{
    volatile char buf[512];
    buf[0] = (char)depth;
    buf[sizeof buf - 1] = (char)depth;
    if (depth >= 1000000)   /* far deeper than any test stack: the guard stops it first */
        return buf[0];
    return recurse(depth + 1) + buf[sizeof buf - 1];
}

static void deep_body(struct tco *t)
{
    (void)t;
    shared = recurse(0);
}

static void guard_child(void)
{
    struct tco t;
    if (setup(NULL) != 0)
        _exit(5);
    tco_start(&t, deep_body, NULL, IOP_CORO_GUARD, 32768, "deep-recursion");
    tco_resume(&t);
    _exit(3);   /* the overflow was not caught */
}

static void test_guard_overflow_reported(void **state)
{
    (void)state;
    const struct child c = guard_result;
    show_child("overflowing child", &c);
    assert_int_equal(c.signo, SIGSEGV);
    assert_non_null(strstr(c.err, "stack overflow in coroutine \"deep-recursion\""));
    assert_non_null(strstr(c.err, "guard page"));
}

/* Recurses until the frames run `past` bytes below the low end of the stack: through
 * the canary into the cushion mapped below it. Not instrumented by ASan, whose
 * use-after-return detection would move buf to a fake stack off the coroutine's. */
__attribute__((no_sanitize_address)) static int recurse_below(const iop__stack_t *s, size_t past, int depth)
{
    volatile char buf[256];
    memset((char *)buf, depth & 0xff, sizeof buf);
    if ((char *)__builtin_frame_address(0) < (char *)s->lo - past || depth >= 100000)
        return buf[0];
    return recurse_below(s, past, depth + 1) + buf[1];
}

static void smash_body(struct tco *t)
{
    shared = recurse_below(&t->stack, 512, 0);
    tco_yield(t);   /* the canary check on this switch away aborts */
}

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

static void canary_child(void)
{
    if (setup(NULL) != 0)
        _exit(5);
    /* A canary cannot stop the overflow from writing below the stack; map 64 KiB of our
     * own there so that the test corrupts nothing else. Mapped first, the stack lands
     * right above it where mappings grow upwards (valgrind); the kernel places them
     * downwards, so there it goes right below the stack, if that is free (else try
     * another stack: a few tries at most). */
    static struct tco tries[16];
    size_t cushion = 65536;
    for (int i = 0; i < 16; i++) {
        struct tco *t = &tries[i];
        char *first = mmap(NULL, cushion, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        tco_start(t, smash_body, NULL, IOP_CORO_CANARY, 32768, "canary-victim");
        char *below = (char *)t->stack.map - cushion;
        if (first == below || mmap(below, cushion, PROT_READ | PROT_WRITE,
                                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) == below) {
            tco_resume(t);
            _exit(3);
        }
    }
    _exit(4);
}

static void test_canary_overflow_reported(void **state)
{
    (void)state;
    const struct child c = canary_result;
    show_child("overflowing child", &c);
    assert_int_equal(c.signo, SIGABRT);
    assert_non_null(strstr(c.err, "stack overflow in coroutine \"canary-victim\""));
    assert_non_null(strstr(c.err, "canary"));
}

/* An ordinary SIGSEGV (not in a guard page) goes to the handler that was there before
 * ours: ASan's in a sanitizer build, else the one main() installs. */
#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif

#define PREVIOUS_HANDLER_EXIT 42

#if !TEST_ASAN
static void previous_segv_handler(int sig)
{
    static const char msg[] = "the previous SIGSEGV handler ran\n";
    (void)sig;
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
    _exit(PREVIOUS_HANDLER_EXIT);
}
#endif

static void wild_child(void)
{
    struct tco t;
    if (setup(NULL) != 0)
        _exit(5);
    tco_start(&t, pong_body, NULL, IOP_CORO_GUARD, 0, "bystander");   /* handler installed */
    volatile uintptr_t wild = 16;   /* an unmapped page, far from any guard */
    *(volatile int *)wild = 1;
    _exit(3);
}

static void test_other_segv_chained(void **state)
{
    (void)state;
    const struct child c = wild_result;
    show_child("faulting child", &c);
    assert_null(strstr(c.err, "stack overflow"));
#if TEST_ASAN
    assert_non_null(strstr(c.err, "AddressSanitizer: SEGV"));
#else
    assert_true(c.exited);
    if (!RUNNING_ON_VALGRIND)   /* which turns the exit code into its own on an error */
        assert_int_equal(c.code, PREVIOUS_HANDLER_EXIT);
    assert_non_null(strstr(c.err, "the previous SIGSEGV handler ran"));
#endif
}

/* ---- the map count limit -------------------------------------------------------------------------- */

static long read_max_map_count(void)
{
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    long v = -1;
    if (f != NULL) {
        if (fscanf(f, "%ld", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

#define MAPLIMIT_MAX_STACKS 140000

/* Takes guarded stacks until the kernel says no; exit 0 if that failure is -ENOMEM
 * with the explanation, after roughly max_map_count / 2 stacks. */
static void maplimit_child(void)
{
    iop__stack_pool_t *p;
    if (iop__stack_pool_new(&p, 0) != 0)
        _exit(10);
    static iop__stack_t stacks[MAPLIMIT_MAX_STACKS];
    long limit = read_max_map_count();
    int got = 0, rc = 0;
    while (got < MAPLIMIT_MAX_STACKS && (rc = iop__stack_get(p, 4096, IOP_CORO_GUARD, &stacks[got])) == 0)
        got++;
    const char *msg = iop_last_error();
    fprintf(stderr, "stacks: %d, rc %d, message: %s\n", got, rc, msg);
    if (rc != -ENOMEM)
        _exit(11);
    if (got < limit / 2 - 2000 || got > limit / 2)
        _exit(12);
    if (strstr(msg, "vm.max_map_count") == NULL || strstr(msg, "sysctl vm.max_map_count=") == NULL ||
        strstr(msg, "IOP_CORO_CANARY") == NULL)
        _exit(13);
    /* Giving one back makes room again. */
    iop__stack_put(p, &stacks[got - 1]);
    if (iop__stack_get(p, 4096, IOP_CORO_GUARD, &stacks[got - 1]) != 0)
        _exit(14);
    _exit(0);
}

static void test_map_count_limit_explained(void **state)
{
    (void)state;
    long limit = read_max_map_count();
    if (RUNNING_ON_VALGRIND || getenv("IOPLEX_TEST_QEMU") != NULL || limit <= 0 ||
        limit > 2 * MAPLIMIT_MAX_STACKS) {
        print_message("skipped: needs a modest vm.max_map_count (%ld) and no valgrind/qemu\n", limit);
        skip();
    }
    struct child c;
    assert_int_equal(run_child(maplimit_child, &c), 0);
    show_child("map-filling child", &c);
    assert_true(c.exited);
    assert_int_equal(c.code, 0);
}

int main(void)
{
#if !TEST_ASAN
    /* Before any stack exists, so that ours finds it as the previous handler. */
    signal(SIGSEGV, previous_segv_handler);
#endif
    if (run_child(guard_child, &guard_result) != 0 || run_child(canary_child, &canary_result) != 0 ||
        run_child(wild_child, &wild_result) != 0) {
        perror("test_ctx: fork");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ping_pong_guard),
        cmocka_unit_test(test_ping_pong_canary),
#ifdef NKEPT
        cmocka_unit_test(test_callee_saved_registers),
#endif
        cmocka_unit_test(test_fp_control_preserved),
        cmocka_unit_test(test_fp_on_coroutine_stack),
        cmocka_unit_test(test_stack_alignment),
        cmocka_unit_test(test_pool_reuses_stacks),
        cmocka_unit_test(test_guard_overflow_reported),
        cmocka_unit_test(test_canary_overflow_reported),
        cmocka_unit_test(test_other_segv_chained),
        cmocka_unit_test(test_map_count_limit_explained),
    };
    return cmocka_run_group_tests_name("coro.ctx", tests, setup, teardown);
}
