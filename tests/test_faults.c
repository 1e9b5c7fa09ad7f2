/*
 * test_faults.c: fail every wrapped call in turn, and check that each
 * failure comes back as a clean error.
 *
 * Every allocation and fallible system call of the library goes through
 * src/sys.c, where corio__fault_arm(n) makes the n-th call from now fail
 * as the real call would (NULL, MAP_FAILED, -1 with errno). For each
 * scenario below, this test runs the whole scenario (runtime start, work,
 * shutdown) once per n = 1, 2, 3, ... until an n that the scenario never
 * reaches, and requires of every run:
 *
 *   - no crash (the test would die) and no hang (the watchdog would fire);
 *   - corio_run returns 0, or a corio error value (never something else);
 *   - the scenario's own result is 0 or a corio error value: every call in
 *     it checks its result and gives up cleanly on failure;
 *   - nothing leaks: the library's live allocations and mappings are back
 *     to what they were before (src/sys.h counters).
 *
 * With two loops the order of wrapped calls varies a little between runs,
 * so "the n-th call" is not always the same call; every n still has to
 * behave. The number of n covered per scenario is printed.
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <netdb.h>
#include <stdatomic.h>

#include "test.h"

/* Deadline for every wait inside a scenario: a fault can make a peer give
 * up (a server whose accept failed), and the scenario must then end with
 * CORIO_ETIMEDOUT, not hang. 2 s in the sweep, where such runs wait it out
 * (one n at a time); stretched for slow lanes in the last, fault-free run,
 * where every wait must succeed (a loop held up or slowed for 2 s there
 * failed the test). */
static int64_t step_ns = 2 * CORIO_SEC;
#define STEP_NS step_ns

static bool is_corio_error(intptr_t rc)
{
    return rc == 0 || (rc < 0 && strcmp(corio_err_name((int)rc), "UNKNOWN") != 0);
}

/* ---- scenarios: each returns 0 or the first error it met ---- */

static void *small_task(void *arg)
{
    int rc = corio_sleep(CORIO_MSEC);
    return rc ? PTR_OF(rc) : arg;
}

static void *scenario_spawn(void *arg)
{
    enum { N = 24 };
    corio_task *tasks[N];
    void *results[N];
    size_t spawned = 0;
    intptr_t rc = 0;
    for (size_t i = 0; i < N && rc == 0; i++) {
        corio_spawn_opts opts;
        corio_spawn_opts_init(&opts);
        if (i % 3 == 1)
            opts.flags = CORIO_TASK_LIGHT;
        if (i % 3 == 2)
            opts.loop = (int)(i % corio_loop_count());
        rc = corio_spawn_ex(&tasks[i], small_task, PTR_OF(i + 1), &opts);
        if (rc == 0)
            spawned++;
    }
    int grc = corio_gather_until(tasks, spawned, results, corio_deadline_in(STEP_NS));
    if (grc == CORIO_ETIMEDOUT)
        return PTR_OF(grc); /* cannot happen without a bug: nothing here blocks long */
    if (rc == 0)
        rc = grc;
    /* Tasks that could not get a stack report CORIO_ENOMEM through the
     * gather; the others must have their own result. */
    for (size_t i = 0; i < spawned && rc == 0; i++)
        if (INT_OF(results[i]) != (intptr_t)(i + 1))
            rc = INT_OF(results[i]) < 0 ? INT_OF(results[i]) : CORIO_EPROTO;
    return PTR_OF(rc);
}

static void *echo_server(void *arg)
{
    int listener = (int)INT_OF(arg);
    int fd = corio_accept_until(listener, NULL, NULL, corio_deadline_in(STEP_NS));
    if (fd < 0)
        return PTR_OF(fd);
    char buf[64];
    ssize_t n = corio_read_until(fd, buf, sizeof buf, corio_deadline_in(STEP_NS));
    intptr_t rc = n < 0 ? n : 0;
    if (n > 0) {
        ssize_t w = corio_write_until(fd, buf, (size_t)n, corio_deadline_in(STEP_NS));
        rc = w < 0 ? w : 0;
    }
    corio_close(fd);
    return PTR_OF(rc);
}

static void *scenario_io(void *arg)
{
    int listener = corio_listen_tcp("127.0.0.1", 0, 16, 0);
    if (listener < 0)
        return PTR_OF(listener);
    int port = corio_local_port(listener);
    corio_task *server;
    intptr_t rc = corio_spawn_on(&server, 1 % corio_loop_count(), echo_server, PTR_OF(listener));
    if (rc != 0) {
        corio_close(listener);
        return PTR_OF(rc);
    }
    int fd = corio_connect_tcp("127.0.0.1", (uint16_t)port, corio_deadline_in(STEP_NS));
    rc = fd < 0 ? fd : 0;
    if (fd >= 0) {
        ssize_t n = corio_write_until(fd, "ping", 4, corio_deadline_in(STEP_NS));
        char buf[8];
        if (n >= 0)
            n = corio_read_until(fd, buf, sizeof buf, corio_deadline_in(STEP_NS));
        /* End of stream: the server gave up after a fault of its own. */
        if (n < 0)
            rc = (int)n;
        else if (n == 0)
            rc = CORIO_EPIPE;
        else
            rc = n == 4 && memcmp(buf, "ping", 4) == 0 ? 0 : CORIO_EPROTO;
        corio_close(fd);
    }
    void *server_rc = NULL;
    int jrc = corio_join(server, &server_rc);
    corio_close(listener);
    if (rc == 0)
        rc = jrc ? jrc : INT_OF(server_rc);
    return PTR_OF(rc);
}

static void *consumer(void *arg)
{
    corio_chan *ch = arg;
    long sum = 0, v;
    int rc;
    while ((rc = corio_chan_recv_until(ch, &v, corio_deadline_in(STEP_NS))) == 0)
        sum += v;
    return rc == CORIO_EPIPE ? PTR_OF(sum) : PTR_OF(rc);
}

static void *scenario_chan(void *arg)
{
    corio_chan *bounded, *unbounded;
    intptr_t rc = corio_chan_new(&bounded, sizeof(long), 4);
    if (rc != 0)
        return PTR_OF(rc);
    rc = corio_chan_new(&unbounded, sizeof(long), CORIO_CHAN_UNBOUNDED);
    if (rc != 0) {
        corio_chan_free(bounded);
        return PTR_OF(rc);
    }
    corio_task *c;
    rc = corio_spawn_on(&c, 1 % corio_loop_count(), consumer, bounded);
    long expect = 0;
    for (long i = 1; i <= 200 && rc == 0; i++) {
        rc = corio_chan_send_until(bounded, &i, corio_deadline_in(STEP_NS));
        if (rc == 0)
            expect += i;
    }
    for (long i = 0; i < 300 && rc == 0; i++)
        rc = corio_chan_send(unbounded, &i); /* grows: allocations */
    corio_chan_close(bounded);
    if (c) {
        void *got = NULL;
        int jrc = corio_join(c, &got);
        if (rc == 0 && jrc != 0)
            rc = jrc;
        else if (rc == 0 && INT_OF(got) != expect)
            rc = INT_OF(got) < 0 ? INT_OF(got) : CORIO_EPROTO;
    }
    corio_chan_free(bounded);
    corio_chan_free(unbounded);
    return PTR_OF(rc);
}

static void *double_it(void *arg) { return PTR_OF(INT_OF(arg) * 2); }

static void *scenario_blocking(void *arg)
{
    intptr_t rc = 0;
    for (intptr_t i = 1; i <= 4 && rc == 0; i++) {
        void *r = NULL;
        rc = corio_run_blocking_until(double_it, PTR_OF(i), &r, corio_deadline_in(STEP_NS));
        if (rc == 0 && INT_OF(r) != 2 * i)
            rc = CORIO_EPROTO;
    }
    if (rc == 0) {
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
        struct addrinfo *res = NULL;
        rc = corio_getaddrinfo_until("127.0.0.1", "80", &hints, &res, corio_deadline_in(STEP_NS));
        if (res)
            freeaddrinfo(res);
    }
    return PTR_OF(rc);
}

static int group_child(void *arg)
{
    corio_sem *sem = arg;
    int rc = corio_sem_acquire_until(sem, corio_deadline_in(STEP_NS));
    if (rc != 0)
        return rc;
    rc = corio_sleep(CORIO_MSEC / 4);
    corio_sem_release(sem);
    return rc;
}

static void *scenario_sync(void *arg)
{
    corio_sem *sem = NULL;
    corio_group *group = NULL;
    corio_event *event = NULL;
    intptr_t rc = corio_sem_new(&sem, 2);
    if (rc == 0)
        rc = corio_event_new(&event);
    if (rc == 0)
        rc = corio_group_new(&group, CORIO_GROUP_CANCEL_ON_ERROR);
    for (int i = 0; i < 8 && rc == 0; i++)
        rc = corio_group_spawn(group, group_child, sem);
    if (rc == 0)
        rc = corio_group_wait_until(group, corio_deadline_in(STEP_NS));
    if (rc == 0)
        rc = corio_group_error(group);
    if (group) {
        int grc = corio_group_close(group);
        if (rc == 0)
            rc = grc;
    }
    if (rc == 0) {
        corio_event_set(event);
        rc = corio_event_wait_until(event, corio_deadline_in(STEP_NS));
    }
    corio_event_free(event);
    corio_sem_free(sem);
    return PTR_OF(rc);
}

/* ---- the harness ---- */

static void sweep(const char *name, corio_fn scenario, unsigned loops)
{
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = loops;
    cfg.blocking_threads = 2;
    long max_n = test_scaled(100000);
    long n, failed_runs = 0;
    for (n = 1; n <= max_n; n++) {
        snprintf(test_watchdog_note, sizeof test_watchdog_note, "%s, failing call %ld", name, n);
        test_baseline base = test_baseline_take();
        void *result = NULL;
        corio__fault_arm((uint64_t)n);
        int rc = corio_run(&cfg, scenario, NULL, &result);
        bool fired = corio__fault_fired();
        corio__fault_arm(0);
        if (!is_corio_error(rc) || !is_corio_error(INT_OF(result)))
            FAIL_("%s, failing call %ld: corio_run %d, scenario %ld", name, n, rc,
                  (long)INT_OF(result));
        if (rc == 0 && INT_OF(result) == CORIO_EPROTO)
            FAIL_("%s, failing call %ld: wrong results after a clean error path", name, n);
        CHECK_NO_LEAKS(base);
        failed_runs += rc != 0 || result != NULL;
        if (!fired)
            break; /* the scenario never reached the n-th call: all covered */
    }
    CHECK_LE(n, max_n); /* the sweep ended because it covered everything */
    fprintf(stderr, "%s: %ld failing calls injected, %ld runs ended in an error\n", name, n - 1,
            failed_runs);
    /* And with no fault at all the scenario succeeds. */
    int64_t sweep_step = step_ns;
    step_ns = sweep_step * TEST_SLOW;
    void *result = PTR_OF(-1);
    CHECK_OK(corio_run(&cfg, scenario, NULL, &result));
    step_ns = sweep_step;
    CHECK_EQ(INT_OF(result), 0);
}

TEST(spawn_gather_sleep) { sweep("spawn/gather/sleep", scenario_spawn, 2); }
TEST(io) { sweep("io", scenario_io, 2); }
TEST(channels) { sweep("channels", scenario_chan, 2); }
TEST(run_blocking) { sweep("run_blocking", scenario_blocking, 2); }
TEST(sync_and_groups) { sweep("sync/groups", scenario_sync, 2); }
TEST(single_loop_start_stop) { sweep("start/stop, 1 loop", scenario_spawn, 1); }

int main(int argc, char **argv)
{
    RUN(spawn_gather_sleep);
    RUN(io);
    RUN(channels);
    RUN(run_blocking);
    RUN(sync_and_groups);
    RUN(single_loop_start_stop);
    return test_summary();
}
