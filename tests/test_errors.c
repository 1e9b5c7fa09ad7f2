/*
 * test_errors.c: the error table (CORIO_ERRNO_MAP) and the functions
 * generated from it.
 */
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

int main(int argc, char **argv)
{
    RUN(every_entry);
    RUN(named_values);
    RUN(zero_and_unknown);
    return test_summary();
}
