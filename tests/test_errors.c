/*
 * test_errors.c: the error table (CORIO_ERRNO_MAP) and the functions
 * generated from it.
 */
#include <fcntl.h>
#include <netinet/in.h>

#include "test.h"

struct entry {
    int value;
    int sys_errno;
    const char *name;
    const char *msg;
};

/*
 * The table has had two shapes: X(name, msg) with every value -errno
 * (CORIO_ERRNO_MAP), and X(name, value, msg), which adds corio's own
 * values below -4000 for failures errno has no name for (CORIO_ERROR_MAP).
 * sys_errno is the errno number a value mirrors, or 0 for corio's own.
 */
#if defined(CORIO_ERROR_MAP)
#define ENTRY_(name, value, msg) {CORIO_##name, (value) > -4000 ? -(value) : 0, #name, msg},
static const struct entry table[] = {CORIO_ERROR_MAP(ENTRY_)};
#undef ENTRY_
#elif defined(CORIO_ERRNO_MAP)
#define ENTRY_(name, msg) {CORIO_##name, name, #name, msg},
static const struct entry table[] = {CORIO_ERRNO_MAP(ENTRY_)};
#undef ENTRY_
#else
#error "corio.h has no error table"
#endif
#define NENTRIES (sizeof table / sizeof table[0])

TEST(every_entry)
{
    CHECK_GE(NENTRIES, 30);
    for (size_t i = 0; i < NENTRIES; i++) {
        const struct entry *e = &table[i];
        CHECK_LT(e->value, 0);
        if (e->sys_errno)
            CHECK_EQ(e->value, -e->sys_errno);
        else
            CHECK_LE(e->value, -4000); /* corio's own, clear of errno */
        CHECK_STR_EQ(corio_err_name(e->value), e->name);
        CHECK_STR_EQ(corio_strerror(e->value), e->msg);
        CHECK_GT(strlen(e->msg), 0);
        /* Values are distinct: the switch in error.c depends on it, and a
         * duplicate would make two names collide. */
        for (size_t j = 0; j < i; j++)
            CHECK_NE(table[j].value, e->value);
        /* So are names and messages: a message copied from its neighbour
         * (EMFILE's for ENFILE) would tell two failures apart no more. */
        for (size_t j = 0; j < i; j++) {
            if (strcmp(table[j].name, e->name) == 0 || strcmp(table[j].msg, e->msg) == 0)
                FAIL_("entries %s and %s share a name or message (\"%s\")", table[j].name,
                      e->name, e->msg);
        }
    }
}

TEST(named_values)
{
    CHECK_EQ(CORIO_ENOMEM, -ENOMEM);
    CHECK_EQ(CORIO_EINVAL, -EINVAL);
    CHECK_EQ(CORIO_EAGAIN, -EAGAIN);
    CHECK_EQ(CORIO_EPERM, -EPERM);
    CHECK_EQ(CORIO_ETIMEDOUT, -ETIMEDOUT);
    CHECK_EQ(CORIO_ECANCELED, -ECANCELED);
    CHECK_EQ(CORIO_EDEADLK, -EDEADLK);
    CHECK_EQ(CORIO_EBUSY, -EBUSY);
    CHECK_EQ(CORIO_EMFILE, -EMFILE);
    CHECK_EQ(CORIO_ESHUTDOWN, -ESHUTDOWN);
    CHECK_EQ(CORIO_EPIPE, -EPIPE);
    CHECK_STR_EQ(corio_err_name(CORIO_ENOMEM), "ENOMEM");
    CHECK_STR_EQ(corio_strerror(CORIO_ENOMEM), "out of memory");
    CHECK_STR_EQ(corio_err_name(CORIO_ETIMEDOUT), "ETIMEDOUT");
}

TEST(zero_and_unknown)
{
    CHECK_STR_EQ(corio_strerror(0), "success");
    CHECK_STR_EQ(corio_err_name(0), "OK");
    /* Positive values (a raw errno by mistake), values outside the table
     * and extremes are all "unknown", never NULL. */
    const int unknown[] = {1, ENOMEM, -100000, 100000, -4095, INT32_MIN, INT32_MAX, -1000};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        int v = unknown[i];
        bool in_table = false;
        for (size_t j = 0; j < NENTRIES; j++)
            in_table |= table[j].value == v;
        if (in_table)
            continue;
        CHECK_STR_EQ(corio_strerror(v), "unknown error");
        CHECK_STR_EQ(corio_err_name(v), "UNKNOWN");
    }
}

/* corio passes system errors through as -errno (corio.h: "corio_strerror()
 * names them"), including ones the table does not list: a read of a
 * directory (which the descriptor rules say is always ready and gets the
 * system call directly) fails with EISDIR, a socket of an unknown protocol
 * with EPROTONOSUPPORT. Those must be named, not "unknown error". */
static void *passed_through_main(void *arg)
{
    int dir = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    CHECK_GE(dir, 0);
    char buf[16];
    ssize_t n = corio_read(dir, buf, sizeof buf);
    CHECK_EQ(n, -EISDIR);
    CHECK_STR_EQ(corio_err_name((int)n), "EISDIR");
    CHECK_STR_EQ(corio_strerror((int)n), strerror(EISDIR));
    CHECK_OK(corio_close(dir));
    int fd = corio_socket(AF_INET, SOCK_STREAM, IPPROTO_UDP);
    CHECK_EQ(fd, -EPROTONOSUPPORT);
    CHECK_STR_EQ(corio_err_name(fd), "EPROTONOSUPPORT");
    CHECK_STR_EQ(corio_strerror(fd), strerror(EPROTONOSUPPORT));
    return PTR_OF(1);
}

TEST(system_errors_outside_the_table)
{
    CHECK_EQ(INT_OF(run_main_checked(1, passed_through_main, NULL)), 1);
    /* Every errno value the system can describe has a message and a name,
     * whether or not the table lists it. */
    for (int e = 1; e < 4000; e++) {
        const char *sys = strerror(e);
        if (strncmp(sys, "Unknown error", 13) == 0)
            continue;
        if (strcmp(corio_strerror(-e), "unknown error") == 0 ||
            strcmp(corio_err_name(-e), "UNKNOWN") == 0)
            FAIL_("-%d (%s): corio_strerror \"%s\", corio_err_name \"%s\"", e, sys,
                  corio_strerror(-e), corio_err_name(-e));
    }
}

int main(int argc, char **argv)
{
    RUN(every_entry);
    RUN(named_values);
    RUN(zero_and_unknown);
    RUN(system_errors_outside_the_table);
    return test_summary();
}
