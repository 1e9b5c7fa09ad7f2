/*
 * test.h: the little test harness every test file uses.
 *
 * Typed asserts print both sides and where they failed, then abort: a
 * failing test dies with a message, never limps on. Each test file is its
 * own program (CTest runs each as a process with a timeout) made of
 * TEST(name) functions listed in main() with RUN(name).
 *
 * Timing checks use tolerances (CHECK_TIME_WITHIN), never exact values:
 * the machines running this are shared and noisy.
 */
#ifndef CORIO_TEST_H
#define CORIO_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corio.h"

#define TEST(name) static void test_##name(void)
#define RUN(name)                                                               \
    do {                                                                        \
        fprintf(stderr, "-- %s\n", #name);                                     \
        test_##name();                                                          \
    } while (0)

#define FAIL_(fmt, ...)                                                         \
    do {                                                                        \
        fprintf(stderr, "%s:%d: " fmt "\n", __FILE__, __LINE__, __VA_ARGS__);  \
        fflush(stderr);                                                         \
        abort();                                                                \
    } while (0)

#define CHECK(cond)                                                             \
    do {                                                                        \
        if (!(cond))                                                            \
            FAIL_("check failed: %s", #cond);                                  \
    } while (0)

#define CHECK_INT_(a, op, b)                                                    \
    do {                                                                        \
        long long a_ = (long long)(a), b_ = (long long)(b);                     \
        if (!(a_ op b_))                                                        \
            FAIL_("check failed: %s %s %s (%lld vs %lld)", #a, #op, #b, a_, b_); \
    } while (0)
#define CHECK_EQ(a, b) CHECK_INT_(a, ==, b)
#define CHECK_NE(a, b) CHECK_INT_(a, !=, b)
#define CHECK_LT(a, b) CHECK_INT_(a, <, b)
#define CHECK_LE(a, b) CHECK_INT_(a, <=, b)
#define CHECK_GT(a, b) CHECK_INT_(a, >, b)
#define CHECK_GE(a, b) CHECK_INT_(a, >=, b)

#define CHECK_PTR_EQ(a, b)                                                      \
    do {                                                                        \
        const void *a_ = (a), *b_ = (b);                                        \
        if (a_ != b_)                                                           \
            FAIL_("check failed: %s == %s (%p vs %p)", #a, #b, a_, b_);        \
    } while (0)

/* A corio call that must return 0; prints the error's name otherwise. */
#define CHECK_OK(expr)                                                          \
    do {                                                                        \
        int rc_ = (expr);                                                       \
        if (rc_ != 0)                                                           \
            FAIL_("%s returned %s (%s)", #expr, corio_err_name(rc_),           \
                  corio_strerror(rc_));                                         \
    } while (0)

/* A corio call that must fail with a given error. */
#define CHECK_ERR(expr, err)                                                    \
    do {                                                                        \
        int rc_ = (expr);                                                       \
        if (rc_ != (err))                                                       \
            FAIL_("%s returned %s, expected %s", #expr, corio_err_name(rc_),   \
                  corio_err_name(err));                                         \
    } while (0)

/* elapsed (ns) must lie in [expected - early, expected + late]. */
#define CHECK_TIME_WITHIN(elapsed, expected, early, late)                       \
    do {                                                                        \
        long long e_ = (long long)(elapsed), x_ = (long long)(expected);        \
        if (e_ < x_ - (long long)(early) || e_ > x_ + (long long)(late))        \
            FAIL_("time %s = %.3f ms, expected %.3f ms (-%.3f/+%.3f)", #elapsed, \
                  e_ / 1e6, x_ / 1e6, (early) / 1e6, (late) / 1e6);            \
    } while (0)

/* Run fn as the main task of a runtime with `loops` loops; returns its
 * result. Fails the test if corio_run fails. */
static inline void *run_main(unsigned loops, corio_fn fn, void *arg)
{
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = loops;
    void *result = NULL;
    CHECK_OK(corio_run(&cfg, fn, arg, &result));
    return result;
}

/* Scale iteration counts down in slow lanes (sanitizers, Valgrind):
 * CORIO_TEST_SCALE=10 divides them by ten. */
static inline long test_scaled(long n)
{
    const char *s = getenv("CORIO_TEST_SCALE");
    long div = s ? atol(s) : 1;
    if (div < 1)
        div = 1;
    long r = n / div;
    return r > 0 ? r : 1;
}

#endif /* CORIO_TEST_H */
