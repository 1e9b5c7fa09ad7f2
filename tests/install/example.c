/* The README's example, built against an installed corio by test_install.sh. */
#include <corio.h>
#include <stdio.h>

static void *fetch(void *arg)
{
    corio_sleep(10 * CORIO_MSEC); /* stands in for network IO */
    return (void *)((uintptr_t)arg * 2);
}

static void *main_task(void *arg)
{
    corio_task *tasks[1000];
    void *results[1000];
    for (uintptr_t i = 0; i < 1000; i++)
        if (corio_spawn(&tasks[i], fetch, (void *)i) != 0)
            return NULL;
    corio_gather(tasks, 1000, results); /* results in task order */
    printf("%zu\n", (size_t)(uintptr_t)results[999]);
    return NULL;
}

int main(void)
{
    int rc = corio_run(NULL, main_task, NULL, NULL); /* all cores */
    if (rc != 0)
        fprintf(stderr, "corio: %s\n", corio_strerror(rc));
    return rc != 0;
}
