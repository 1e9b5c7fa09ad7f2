/*
 * test_million.c: a million tasks. Light tasks spawned in one burst and
 * gathered at once; regular tasks spawned and gathered in windows (each
 * window needs a stack per task, so the whole million at once would be
 * 140 GB of address space).
 */
#include <stdatomic.h>

#include "test.h"

static _Atomic long ran;

static void *ret_index(void *arg)
{
    atomic_fetch_add_explicit(&ran, 1, memory_order_relaxed);
    return arg;
}

/* Every 64th one suspends once, so the shared stack's save/restore path
 * is part of the million too. */
static void *ret_index_sometimes_yield(void *arg)
{
    if ((INT_OF(arg) & 63) == 0)
        corio_yield();
    atomic_fetch_add_explicit(&ran, 1, memory_order_relaxed);
    return arg;
}

static void *main_light_million(void *arg)
{
    long n = INT_OF(arg);
    corio_task **t = malloc((size_t)n * sizeof *t);
    void **res = malloc((size_t)n * sizeof *res);
    CHECK(t && res);
    corio_spawn_opts o;
    corio_spawn_opts_init(&o);
    o.flags = CORIO_TASK_LIGHT;
    for (long i = 0; i < n; i++) {
        int rc = corio_spawn_ex(&t[i], ret_index_sometimes_yield, PTR_OF(i), &o);
        if (rc != 0)
            FAIL_("spawn %ld of %ld: %s", i, n, corio_err_name(rc));
    }
    memset(res, 0xff, (size_t)n * sizeof *res);
    CHECK_OK(corio_gather(t, (size_t)n, res));
    for (long i = 0; i < n; i++)
        if (INT_OF(res[i]) != i)
            CHECK_EQ(INT_OF(res[i]), i);
    free(t);
    free(res);
    return PTR_OF(n);
}

#define MILLION 1000000

TEST(million_light_tasks)
{
    long n = test_scaled_starts(MILLION);
    atomic_store(&ran, 0);
    corio_time_t t0 = corio_now();
    CHECK_EQ(INT_OF(run_main_checked(2, main_light_million, PTR_OF(n))), n);
    CHECK_EQ(atomic_load(&ran), n);
    fprintf(stderr, "   %ld light tasks in %.2f s\n", n, (corio_now() - t0) / 1e9);
}

#define WINDOW 10000

static void *main_regular_windows(void *arg)
{
    long n = INT_OF(arg);
    static corio_task *t[WINDOW];
    static void *res[WINDOW];
    for (long base = 0; base < n; base += WINDOW) {
        long m = n - base < WINDOW ? n - base : WINDOW;
        for (long i = 0; i < m; i++) {
            int rc = corio_spawn(&t[i], ret_index, PTR_OF(base + i));
            if (rc != 0)
                FAIL_("spawn %ld: %s", base + i, corio_err_name(rc));
        }
        CHECK_OK(corio_gather(t, (size_t)m, res));
        for (long i = 0; i < m; i++)
            if (INT_OF(res[i]) != base + i)
                CHECK_EQ(INT_OF(res[i]), base + i);
    }
    return PTR_OF(n);
}

TEST(million_regular_tasks_in_windows)
{
    long n = test_scaled_starts(MILLION);
    atomic_store(&ran, 0);
    corio_time_t t0 = corio_now();
    CHECK_EQ(INT_OF(run_main_checked(2, main_regular_windows, PTR_OF(n))), n);
    CHECK_EQ(atomic_load(&ran), n);
    fprintf(stderr, "   %ld regular tasks in %.2f s\n", n, (corio_now() - t0) / 1e9);
}

int main(int argc, char **argv)
{
    RUN(million_light_tasks);
    RUN(million_regular_tasks_in_windows);
    return test_summary();
}
