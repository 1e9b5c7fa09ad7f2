/*
 * error.c: corio_strerror() and corio_err_name(), generated from the one
 * error table in corio.h (CORIO_ERROR_MAP) so the enum, the messages and
 * the names can never drift apart.
 */
#include "corio.h"

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
    default:
        return "unknown error";
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
    default:
        return "UNKNOWN";
    }
}
