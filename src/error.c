/*
 * error.c: corio_strerror() and corio_err_name(), generated from the one
 * error table in corio.h (CORIO_ERROR_MAP) so the enum, the messages and
 * the names can never drift apart. A system error the table does not list
 * (corio passes -errno through: EISDIR from reading a directory,
 * EPROTONOSUPPORT from corio_socket) gets the C library's description and
 * name, which are constant strings, safe from any thread.
 */
#define _GNU_SOURCE
#include <string.h>

#include "corio.h"

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
#define SYSTEM_NAMES 1
#endif

/* The C library's description or name of -err, or NULL: negative errno
 * values only, clear of corio's own below -4000. */
static const char *system_text(int err, bool name)
{
#ifdef SYSTEM_NAMES
    if (err < 0 && err > -4000)
        return name ? strerrorname_np(-err) : strerrordesc_np(-err);
#else
    (void)err;
    (void)name;
#endif
    return NULL;
}

const char *corio_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
#define CORIO_STRERROR_CASE_(name, value, msg)                                        \
    case CORIO_##name:                                                         \
        return msg;
        CORIO_ERROR_MAP(CORIO_STRERROR_CASE_)
#undef CORIO_STRERROR_CASE_
    default: {
        const char *text = system_text(err, false);
        return text ? text : "unknown error";
    }
    }
}

const char *corio_err_name(int err)
{
    switch (err) {
    case 0:
        return "OK";
#define CORIO_ERR_NAME_CASE_(name, value, msg)                                        \
    case CORIO_##name:                                                         \
        return #name;
        CORIO_ERROR_MAP(CORIO_ERR_NAME_CASE_)
#undef CORIO_ERR_NAME_CASE_
    default: {
        const char *name = system_text(err, true);
        return name ? name : "UNKNOWN";
    }
    }
}
