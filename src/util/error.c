#define _POSIX_C_SOURCE 200809L
#include "camserve/common.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

cs_status cs_errorf(cs_error *err, cs_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

cs_status cs_error_prefix(cs_error *err, const char *fmt, ...) {
    if (!err) return CS_EINTERNAL;
    char prefix[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(prefix, sizeof prefix - 2, fmt, ap);
    va_end(ap);
    if (n < 0) return err->code;
    size_t pl = strlen(prefix);
    prefix[pl++] = ':';
    prefix[pl++] = ' ';
    size_t ml = strnlen(err->msg, sizeof err->msg - 1);
    if (pl + ml > sizeof err->msg - 1) ml = sizeof err->msg - 1 - pl;
    memmove(err->msg + pl, err->msg, ml);
    memcpy(err->msg, prefix, pl);
    err->msg[pl + ml] = '\0';
    return err->code;
}

void cs_error_clear(cs_error *err) {
    if (err) {
        err->code = CS_OK;
        err->msg[0] = '\0';
    }
}

const char *cs_status_str(cs_status s) {
    switch (s) {
    case CS_OK: return "ok";
    case CS_EINVAL: return "invalid argument";
    case CS_ENOMEM: return "out of memory";
    case CS_EIO: return "i/o error";
    case CS_EFORMAT: return "malformed data";
    case CS_EUNSUPPORTED: return "unsupported";
    case CS_ENOTFOUND: return "not found";
    case CS_ELIMIT: return "limit exceeded";
    case CS_EBACKEND: return "backend error";
    case CS_EINTERNAL: return "internal error";
    case CS_ECANCELED: return "cancelled";
    }
    return "unknown status";
}

double cs_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}
