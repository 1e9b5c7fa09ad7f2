/*
 * test_context.c: the raw context switch (src/ctx.h) without a runtime.
 *
 * Contexts here are switched by hand between the test's main stack and
 * mmap'd stacks. Under ASan and TSan the switches are annotated exactly as
 * the runtime does it (sanitize.h), so the checkers follow the stacks.
 */
#define _GNU_SOURCE
#include <fenv.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>

#include "ctx.h"
#include "test.h"

#ifdef TEST_ASAN
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef TEST_TSAN
#include <sanitizer/tsan_interface.h>
#endif
/* Under Valgrind, stacks must be registered or every switch reads as an
 * access beyond the stack (the macros do nothing outside Valgrind). */
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define TEST_HAVE_VALGRIND_H 1
#endif
#endif

#define STACK_SIZE ((size_t)256 * 1024)

typedef struct node {
    corio__ctx ctx;
    void *lo;
    size_t size;
    void *fake_stack;  /* ASan */
    void *tsan_fiber;  /* TSan */
    unsigned vg_id;    /* Valgrind */
    bool owns_stack;
} node;

static node main_node;

static void node_main_init(void)
{
    memset(&main_node, 0, sizeof main_node);
    pthread_attr_t attr;
    CHECK_EQ(pthread_getattr_np(pthread_self(), &attr), 0);
    CHECK_EQ(pthread_attr_getstack(&attr, &main_node.lo, &main_node.size), 0);
    pthread_attr_destroy(&attr);
#ifdef TEST_TSAN
    main_node.tsan_fiber = __tsan_get_current_fiber();
#endif
}

static void node_init(node *n, corio__ctx_entry entry, void *arg)
{
    memset(n, 0, sizeof *n);
    n->size = STACK_SIZE;
    n->lo = mmap(NULL, n->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK,
                 -1, 0);
    CHECK(n->lo != MAP_FAILED);
    n->owns_stack = true;
#ifdef TEST_HAVE_VALGRIND_H
    n->vg_id = VALGRIND_STACK_REGISTER(n->lo, (char *)n->lo + n->size);
#endif
#ifdef TEST_TSAN
    n->tsan_fiber = __tsan_create_fiber(0);
#endif
    corio__ctx_make(&n->ctx, n->lo, n->size, entry, arg);
}

static void node_free(node *n)
{
#ifdef TEST_HAVE_VALGRIND_H
    VALGRIND_STACK_DEREGISTER(n->vg_id);
#endif
#ifdef TEST_TSAN
    __tsan_destroy_fiber(n->tsan_fiber);
#endif
    if (n->owns_stack)
        munmap(n->lo, n->size);
}

static void sw(node *from, node *to)
{
#ifdef TEST_ASAN
    __sanitizer_start_switch_fiber(&from->fake_stack, to->lo, to->size);
#endif
#ifdef TEST_TSAN
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
    corio__ctx_switch(&from->ctx, &to->ctx);
#ifdef TEST_ASAN
    __sanitizer_finish_switch_fiber(from->fake_stack, NULL, NULL);
#endif
}

static void first_entry(void)
{
#ifdef TEST_ASAN
    __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
#endif
}

/* ---- ping-pong ---- */

struct pingpong {
    node self;
    long counter;
    long rounds;
};

static void pingpong_entry(void *arg)
{
    first_entry();
    struct pingpong *p = arg;
    for (;;) {
        p->counter++;
        sw(&p->self, &main_node);
    }
}

TEST(ping_pong)
{
    static struct pingpong p;
    p.counter = 0;
    p.rounds = test_scaled(1000000);
    node_init(&p.self, pingpong_entry, &p);
    for (long i = 0; i < p.rounds; i++) {
        sw(&main_node, &p.self);
        if (p.counter != i + 1)
            CHECK_EQ(p.counter, i + 1);
    }
    CHECK_EQ(p.counter, p.rounds);
    node_free(&p.self);
}

/* ---- arguments, and several contexts at once ---- */

#define NCTX 8

struct argcheck {
    node self;
    void *seen_arg;
    int index;
    int entered;
    uintptr_t frame_mod16;
};

static struct argcheck args_ctx[NCTX];

static void argcheck_entry(void *arg)
{
    first_entry();
    struct argcheck *a = arg;
    a->seen_arg = arg;
    a->entered++;
    /* SysV / AAPCS64: the stack is 16-byte aligned at a call; forcing a
     * frame pointer here makes the frame address show it. */
    a->frame_mod16 = (uintptr_t)__builtin_frame_address(0) % 16;
    /* Bounce between all contexts through main, in order. */
    for (;;) {
        a->entered++;
        sw(&a->self, &main_node);
    }
}

TEST(arguments)
{
    for (int i = 0; i < NCTX; i++) {
        args_ctx[i].index = i;
        args_ctx[i].entered = 0;
        args_ctx[i].seen_arg = NULL;
        node_init(&args_ctx[i].self, argcheck_entry, &args_ctx[i]);
    }
    for (int round = 0; round < 100; round++) {
        for (int i = NCTX - 1; i >= 0; i--) {
            sw(&main_node, &args_ctx[i].self);
            CHECK_PTR_EQ(args_ctx[i].seen_arg, &args_ctx[i]);
            CHECK_EQ(args_ctx[i].entered, round + 2);
            CHECK_EQ(args_ctx[i].frame_mod16, 0);
        }
    }
    for (int i = 0; i < NCTX; i++)
        node_free(&args_ctx[i].self);
}

/* ---- callee-saved registers ---- */

struct regs {
    node self;
    uint64_t junk;
};

static void clobber_entry(void *arg)
{
    first_entry();
    struct regs *r = arg;
    /* Keep plenty of values of our own alive across our switches so the
     * compiler parks them in callee-saved registers, and scribble over
     * every callee-saved register explicitly too. */
    uint64_t a = r->junk, b = a * 7 + 1, c = b ^ 0x5555, d = c + a, e = d * 3, f = e ^ b;
    for (;;) {
#if defined(__x86_64__)
        __asm__ volatile("movq $0x1111111111111111, %%rbx\n\t"
                         "movq $0x2222222222222222, %%r12\n\t"
                         "movq $0x3333333333333333, %%r13\n\t"
                         "movq $0x4444444444444444, %%r14\n\t"
                         "movq $0x5555555555555555, %%r15\n\t"
                         ::: "rbx", "r12", "r13", "r14", "r15", "memory");
#elif defined(__aarch64__)
        __asm__ volatile("mov x19, #0x1111\n\t"
                         "mov x20, #0x2222\n\t"
                         "mov x21, #0x3333\n\t"
                         "mov x22, #0x4444\n\t"
                         "mov x23, #0x5555\n\t"
                         "mov x24, #0x6666\n\t"
                         "mov x25, #0x7777\n\t"
                         "mov x26, #0x8888\n\t"
                         "mov x27, #0x9999\n\t"
                         "mov x28, #0xaaaa\n\t"
                         "fmov d8, x19\n\t"
                         "fmov d9, x20\n\t"
                         "fmov d10, x21\n\t"
                         "fmov d11, x22\n\t"
                         "fmov d12, x23\n\t"
                         "fmov d13, x24\n\t"
                         "fmov d14, x25\n\t"
                         "fmov d15, x26\n\t"
                         ::: "x19", "x20", "x21", "x22", "x23", "x24", "x25", "x26", "x27",
                             "x28", "d8", "d9", "d10", "d11", "d12", "d13", "d14", "d15",
                             "memory");
#endif
        sw(&r->self, &main_node);
        a += 1, b += a, c ^= b, d += c, e += d, f ^= e;
        r->junk = a ^ b ^ c ^ d ^ e ^ f;
    }
}

/* The volatile keeps the compiler from treating mix() as pure and
 * sharing its results between the two computations below. */
static volatile uint64_t mix_salt = 12345;

static __attribute__((noinline)) uint64_t mix(uint64_t x)
{
    return x * 0x9E3779B97F4A7C15ull + mix_salt;
}

TEST(callee_saved_registers)
{
    static struct regs r;
    r.junk = 42;
    node_init(&r.self, clobber_entry, &r);
    /* Values computed before the switches, kept live across them, and
     * recomputed after: any register the switch failed to restore shows. */
    uint64_t v0 = mix(1), v1 = mix(v0), v2 = mix(v1), v3 = mix(v2), v4 = mix(v3), v5 = mix(v4);
    double d0 = (double)v0 / 3.0, d1 = (double)v1 / 7.0;
    for (int i = 0; i < 1000; i++) {
        sw(&main_node, &r.self);
        v0 += 1, v1 += v0, v2 ^= v1, v3 += v2, v4 ^= v3, v5 += v4;
        d0 += 1.0, d1 -= 1.0;
    }
    uint64_t w0 = mix(1), w1 = mix(w0), w2 = mix(w1), w3 = mix(w2), w4 = mix(w3), w5 = mix(w4);
    double e0 = (double)w0 / 3.0, e1 = (double)w1 / 7.0;
    for (int i = 0; i < 1000; i++) {
        w0 += 1, w1 += w0, w2 ^= w1, w3 += w2, w4 ^= w3, w5 += w4;
        e0 += 1.0, e1 -= 1.0;
    }
    CHECK(v0 == w0 && v1 == w1 && v2 == w2);
    CHECK(v3 == w3 && v4 == w4 && v5 == w5);
    CHECK(d0 == e0 && d1 == e1);
    node_free(&r.self);
}

/* ---- floating-point control state ---- */

static volatile double fp_num = 1.0, fp_den = 10.0;
static double quotient_nearest, quotient_towardzero, quotient_upward;
static bool fp_values_follow_mode;

/* 1/10 is inexact and its nearest double rounds up, so the three modes
 * give observably different SSE / FP results. */
static double fp_quotient(void) { return fp_num / fp_den; }

#if defined(__x86_64__)
static unsigned mxcsr_rounding(void)
{
    return (__builtin_ia32_stmxcsr() >> 13) & 3u; /* 0 nearest, 3 toward zero */
}
#endif

struct fpctx {
    node self;
    int phase;
    int errors;
    int new_ctx_mode;       /* fegetround() on the first entry */
    double new_ctx_quotient;
};

static struct fpctx fp_a, fp_b;

/* A: round toward zero; each time it runs it checks that it still does. */
static void fp_a_entry(void *arg)
{
    first_entry();
    struct fpctx *c = arg;
    c->new_ctx_mode = fegetround();
    c->new_ctx_quotient = fp_quotient();
    fesetround(FE_TOWARDZERO);
    for (;;) {
        if (fegetround() != FE_TOWARDZERO ||
            (fp_values_follow_mode && fp_quotient() != quotient_towardzero))
            c->errors++;
#if defined(__x86_64__)
        if (mxcsr_rounding() != 3)
            c->errors++;
#endif
        c->phase++;
        sw(&c->self, &fp_b.self);
    }
}

/* B: never changes the mode; it must keep rounding to nearest although A
 * (which ran just before it) rounds toward zero. */
static void fp_b_entry(void *arg)
{
    first_entry();
    struct fpctx *c = arg;
    c->new_ctx_mode = fegetround();
    c->new_ctx_quotient = fp_quotient();
    for (;;) {
        if (fegetround() != FE_TONEAREST ||
            (fp_values_follow_mode && fp_quotient() != quotient_nearest))
            c->errors++;
#if defined(__x86_64__)
        if (mxcsr_rounding() != 0)
            c->errors++;
#endif
        c->phase++;
        sw(&c->self, &main_node);
    }
}

TEST(fp_control_per_context)
{
    CHECK_EQ(fesetround(FE_TOWARDZERO), 0);
    quotient_towardzero = fp_quotient();
    CHECK_EQ(fesetround(FE_UPWARD), 0);
    quotient_upward = fp_quotient();
    CHECK_EQ(fesetround(FE_TONEAREST), 0);
    quotient_nearest = fp_quotient();
    /* Valgrind computes SSE arithmetic to nearest whatever MXCSR says;
     * there only the control words themselves can be checked. */
    fp_values_follow_mode = quotient_nearest != quotient_towardzero;
    if (fp_values_follow_mode)
        CHECK(quotient_upward != quotient_towardzero);
    else
        fprintf(stderr, "   arithmetic ignores the rounding mode here (Valgrind?): "
                        "checking the control words only\n");

    /* The main context rounds upward throughout. */
    CHECK_EQ(fesetround(FE_UPWARD), 0);
    node_init(&fp_a.self, fp_a_entry, &fp_a);
    node_init(&fp_b.self, fp_b_entry, &fp_b);
    for (int i = 0; i < 1000; i++) {
        sw(&main_node, &fp_a.self); /* A runs, switches to B, B back here */
        CHECK_EQ(fegetround(), FE_UPWARD);
        if (fp_values_follow_mode)
            CHECK(fp_quotient() == quotient_upward);
#if defined(__x86_64__)
        CHECK_EQ(mxcsr_rounding(), 2);
#endif
    }
    fesetround(FE_TONEAREST);
    CHECK_EQ(fp_a.phase, 1000);
    CHECK_EQ(fp_b.phase, 1000);
    CHECK_EQ(fp_a.errors, 0);
    CHECK_EQ(fp_b.errors, 0);
#ifndef CORIO_CTX_UCONTEXT
    /* A new context starts with the default environment, not whatever the
     * thread that first switched to it had (main rounded upward). */
    CHECK_EQ(fp_a.new_ctx_mode, FE_TONEAREST);
    CHECK_EQ(fp_b.new_ctx_mode, FE_TONEAREST);
    if (fp_values_follow_mode) {
        CHECK(fp_a.new_ctx_quotient == quotient_nearest);
        CHECK(fp_b.new_ctx_quotient == quotient_nearest);
    }
#endif
    node_free(&fp_a.self);
    node_free(&fp_b.self);
}

/* ---- a context switching to a third one (not just back and forth) ---- */

static node ring[3];
static int ring_trace[30];
static int ring_pos;

static void ring_entry(void *arg)
{
    first_entry();
    int me = (int)(intptr_t)arg;
    for (;;) {
        ring_trace[ring_pos++] = me;
        if (ring_pos % 3 == 0)
            sw(&ring[me], &main_node);
        else
            sw(&ring[me], &ring[(me + 1) % 3]);
    }
}

TEST(ring_of_three)
{
    for (int i = 0; i < 3; i++)
        node_init(&ring[i], ring_entry, (void *)(intptr_t)i);
    ring_pos = 0;
    /* First pass enters 0, which starts 1, which starts 2. Later passes
     * resume 0 -> 1 -> 2 the same way. */
    for (int pass = 0; pass < 10; pass++)
        sw(&main_node, &ring[0]);
    CHECK_EQ(ring_pos, 30);
    for (int i = 0; i < 30; i++)
        CHECK_EQ(ring_trace[i], i % 3);
    for (int i = 0; i < 3; i++)
        node_free(&ring[i]);
}

int main(int argc, char **argv)
{
    node_main_init();
    RUN(ping_pong);
    RUN(arguments);
    RUN(callee_saved_registers);
    RUN(fp_control_per_context);
    RUN(ring_of_three);
    return test_summary();
}
