/*
 * test_cross_loop_join.c: joins across loops, racing the finish.
 *
 * A joiner on one loop joins a task pinned to another loop that finishes
 * at about the moment the join starts, over and over, so that every
 * interleaving of "joiner registers" and "task publishes DONE" happens;
 * then the same with deadlines landing around the finish, where a join
 * either succeeds with the right result or times out and leaves the
 * handle joinable.
 */
#include <stdatomic.h>

#include "test.h"

#define PAIRS 8 /* concurrent joiners per direction */

static _Atomic long joins_ok, joins_timedout, wrong;

/* ---- plain joins ---- */

static void *finisher(void *arg)
{
    uintptr_t v = (uintptr_t)arg;
    unsigned yields = (unsigned)(v & 0xff) % 8;
    for (unsigned i = 0; i < yields; i++)
        corio_yield();
    return PTR_OF((intptr_t)(v >> 8) * 2 + 1);
}

static void *joiner(void *arg)
{
    long rounds = INT_OF(arg) >> 8;
    unsigned other = (unsigned)(INT_OF(arg) & 0xff);
    uint64_t rng = (uint64_t)rounds * 7919 + other * 104729 + (uint64_t)corio_task_id(corio_self());
    for (long r = 0; r < rounds; r++) {
        uint64_t x = test_rand(&rng);
        corio_task *t;
        int rc = corio_spawn_on(&t, other, finisher, (void *)(uintptr_t)((r << 8) | (x & 0xff)));
        if (rc != 0)
            return PTR_OF(rc);
        unsigned yields = (unsigned)(x >> 8) % 8;
        for (unsigned i = 0; i < yields; i++)
            corio_yield();
        void *res = NULL;
        rc = corio_join(t, &res);
        if (rc != 0)
            return PTR_OF(rc);
        if (INT_OF(res) != r * 2 + 1)
            atomic_fetch_add(&wrong, 1);
        atomic_fetch_add(&joins_ok, 1);
    }
    return PTR_OF(0);
}

static void *main_plain(void *arg)
{
    long rounds = INT_OF(arg);
    corio_task *t[2 * PAIRS];
    for (int i = 0; i < 2 * PAIRS; i++) {
        unsigned here = (unsigned)(i % 2), other = 1 - here;
        CHECK_OK(corio_spawn_on(&t[i], here, joiner, PTR_OF((rounds / (2 * PAIRS)) << 8 | other)));
    }
    void *res[2 * PAIRS];
    CHECK_OK(corio_gather(t, 2 * PAIRS, res));
    for (int i = 0; i < 2 * PAIRS; i++)
        CHECK_OK((int)INT_OF(res[i]));
    return NULL;
}

TEST(join_racing_finish)
{
    /* Each round starts a task: under TSan a fiber each (test.h), and
     * this file's 24,000 starts took 79 s of its 180 s there. */
    long rounds = test_scaled_starts(128000);
    if (rounds < 2048)
        rounds = 2048;
    atomic_store(&joins_ok, 0);
    atomic_store(&wrong, 0);
    run_main_checked(2, main_plain, PTR_OF(rounds));
    CHECK_EQ(atomic_load(&joins_ok), rounds / (2 * PAIRS) * (2 * PAIRS));
    CHECK_EQ(atomic_load(&wrong), 0);
    fprintf(stderr, "   %ld cross-loop joins\n", atomic_load(&joins_ok));
}

/* ---- joins with deadlines around the finish ---- */

struct timed_job {
    corio_time_t finish_at;
    intptr_t value;
};

static void *finish_at(void *arg)
{
    struct timed_job *j = arg;
    corio_sleep_until(j->finish_at);
    return PTR_OF(j->value);
}

static void *timed_joiner(void *arg)
{
    long rounds = INT_OF(arg) >> 8;
    unsigned other = (unsigned)(INT_OF(arg) & 0xff);
    uint64_t rng = (uint64_t)corio_task_id(corio_self()) * 31 + 17;
    for (long r = 0; r < rounds; r++) {
        uint64_t x = test_rand(&rng);
        struct timed_job job = {
            .finish_at = corio_now() + 50 * CORIO_USEC + (int64_t)(x % 100) * CORIO_USEC,
            .value = r * 3 + 2,
        };
        corio_task *t;
        int rc = corio_spawn_on(&t, other, finish_at, &job);
        if (rc != 0)
            return PTR_OF(rc);
        /* Deadline within +-60 us of the finish. */
        corio_time_t dl = job.finish_at + (int64_t)((x >> 16) % 120) * CORIO_USEC - 60 * CORIO_USEC;
        void *res = PTR_OF(-1);
        rc = corio_join_until(t, &res, dl);
        if (rc == CORIO_ETIMEDOUT) {
            if (INT_OF(res) != -1)
                atomic_fetch_add(&wrong, 1); /* a failed join wrote a result */
            atomic_fetch_add(&joins_timedout, 1);
            rc = corio_join(t, &res); /* the handle is still ours */
        } else {
            atomic_fetch_add(&joins_ok, 1);
        }
        if (rc != 0)
            return PTR_OF(rc);
        if (INT_OF(res) != job.value)
            atomic_fetch_add(&wrong, 1);
    }
    return PTR_OF(0);
}

static void *main_timed(void *arg)
{
    long rounds = INT_OF(arg);
    corio_task *t[2 * PAIRS];
    for (int i = 0; i < 2 * PAIRS; i++) {
        unsigned here = (unsigned)(i % 2), other = 1 - here;
        CHECK_OK(corio_spawn_on(&t[i], here, timed_joiner,
                                PTR_OF((rounds / (2 * PAIRS)) << 8 | other)));
    }
    void *res[2 * PAIRS];
    CHECK_OK(corio_gather(t, 2 * PAIRS, res));
    for (int i = 0; i < 2 * PAIRS; i++)
        CHECK_OK((int)INT_OF(res[i]));
    return NULL;
}

TEST(join_deadline_racing_finish)
{
    long rounds = test_scaled_starts(32000);
    if (rounds < 640)
        rounds = 640;
    atomic_store(&joins_ok, 0);
    atomic_store(&joins_timedout, 0);
    atomic_store(&wrong, 0);
    run_main_checked(2, main_timed, PTR_OF(rounds));
    long ok = atomic_load(&joins_ok), to = atomic_load(&joins_timedout);
    fprintf(stderr, "   %ld joined in time, %ld timed out (then joined)\n", ok, to);
    CHECK_EQ(ok + to, rounds / (2 * PAIRS) * (2 * PAIRS));
    CHECK_EQ(atomic_load(&wrong), 0);
}

/* ---- gather of tasks spread over all loops, finishing together ---- */

static void *spread_finisher(void *arg)
{
    uintptr_t v = (uintptr_t)arg;
    for (unsigned i = 0; i < (v & 3); i++)
        corio_yield();
    return PTR_OF((intptr_t)v);
}

static void *main_gather_spread(void *arg)
{
    enum { N = 16 };
    long rounds = INT_OF(arg);
    unsigned n = corio_loop_count();
    for (long r = 0; r < rounds; r++) {
        corio_task *t[N];
        void *res[N];
        for (int i = 0; i < N; i++)
            CHECK_OK(corio_spawn_on(&t[i], (unsigned)(i + r) % n, spread_finisher,
                                    PTR_OF(r * N + i)));
        CHECK_OK(corio_gather(t, N, res));
        for (int i = 0; i < N; i++)
            CHECK_EQ(INT_OF(res[i]), r * N + i);
    }
    return NULL;
}

TEST(gather_across_loops)
{
    long rounds = test_scaled_starts(5000); /* 16 starts a round */
    run_main_checked(4, main_gather_spread, PTR_OF(rounds < 100 ? 100 : rounds));
}

int main(int argc, char **argv)
{
    RUN(join_racing_finish);
    RUN(join_deadline_racing_finish);
    RUN(gather_across_loops);
    return test_summary();
}
