/*
 * gdb_target.c: a program for tests/test_gdb.sh: tasks suspended in a
 * sleep, a channel receive and a join on two loops (one of them a task
 * group's child), then a SIGTRAP so gdb stops with all of them in place.
 */
#include <signal.h>
#include <stdatomic.h>

#include "corio.h"

static corio_chan *chan;
static _Atomic int started; /* tasks about to wait */

static void *sleeper_in_depth(void *arg)
{
    atomic_fetch_add(&started, 1);
    corio_sleep(60 * CORIO_SEC);
    return arg;
}

static void *gdb_sleeper(void *arg) { return sleeper_in_depth(arg); }

static void *gdb_receiver(void *arg)
{
    long v;
    atomic_fetch_add(&started, 1);
    corio_chan_recv(chan, &v);
    return NULL;
}

/* A task group's child: listed under its own function, not the group's
 * wrapper. */
static int gdb_group_child(void *arg)
{
    atomic_fetch_add(&started, 1);
    corio_sleep(60 * CORIO_SEC);
    return 0;
}

static void *gdb_probe(void *arg) { return arg; }

static void *gdb_main(void *arg)
{
    corio_task *t[3];
    corio_chan_new(&chan, sizeof(long), 1);
    corio_spawn_on(&t[0], 0, gdb_sleeper, NULL);
    corio_spawn_on(&t[1], 1, gdb_sleeper, NULL);
    corio_spawn_on(&t[2], 1, gdb_receiver, NULL);
    corio_group *group;
    corio_spawn_opts on1;
    corio_spawn_opts_init(&on1);
    on1.loop = 1;
    corio_group_new(&group, 0);
    corio_group_spawn_ex(group, gdb_group_child, NULL, &on1);
    /* Every task has started (a fixed 100 ms assumed loop 1's thread got
     * a CPU by then) and, once a task pinned behind it has run on each
     * loop, is in its wait: a loop runs one task at a time, and these
     * only give up their loop by waiting. */
    while (atomic_load(&started) < 4)
        corio_sleep(CORIO_MSEC);
    for (unsigned l = 0; l < 2; l++) {
        corio_task *probe;
        corio_spawn_on(&probe, l, gdb_probe, NULL);
        corio_join(probe, NULL);
    }
    /* Pinned to this loop and not started: this task keeps the loop until
     * the trap. */
    corio_spawn_on(NULL, (unsigned)corio_loop_index(), gdb_probe, NULL);
    raise(SIGTRAP);
    return NULL;
}

int main(void)
{
    corio_config cfg;
    corio_config_init(&cfg);
    cfg.loops = 2;
    return corio_run(&cfg, gdb_main, NULL, NULL) != 0;
}
