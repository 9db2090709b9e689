/* camserve common definitions: status codes and the caller-owned error struct.
 *
 * Every fallible function in camserve returns a cs_status and, when it fails,
 * writes a one-line human-readable message into a cs_error that the caller
 * owns (usually on the stack).  Passing a NULL cs_error is allowed: the
 * status alone is then reported.  Nothing in camserve calls exit() or abort()
 * on bad input. */
#ifndef CAMSERVE_COMMON_H
#define CAMSERVE_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cs_status {
    CS_OK = 0,
    CS_EINVAL,       /* bad argument or bad user input */
    CS_ENOMEM,       /* allocation failed */
    CS_EIO,          /* file could not be read or written */
    CS_EFORMAT,      /* malformed data (ONNX, image, npy) */
    CS_EUNSUPPORTED, /* valid but not supported (unknown op, dtype) */
    CS_ENOTFOUND,    /* a named thing (tensor, layer, model) does not exist */
    CS_ELIMIT,       /* a configured limit was exceeded */
    CS_EBACKEND,     /* the kernel library (oneDNN, ...) failed */
    CS_EINTERNAL,    /* a bug: an invariant did not hold */
    CS_ECANCELED     /* the caller asked to stop (a deadline, a shutdown) */
} cs_status;

#define CS_ERROR_MSG_MAX 1024

typedef struct cs_error {
    cs_status code;
    char msg[CS_ERROR_MSG_MAX];
} cs_error;

/* Records code and a printf-style message in err (if non-NULL) and returns
 * code, so that failure paths read `return cs_errorf(err, CS_EINVAL, ...)`. */
cs_status cs_errorf(cs_error *err, cs_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes the message already in err with "what: ", keeping the code.
 * Used when a lower layer's message needs the caller's context. */
cs_status cs_error_prefix(cs_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void cs_error_clear(cs_error *err);
const char *cs_status_str(cs_status s);

/* 1 when n bytes at s are UTF-8 that a JSON answer can carry (no NUL, no
 * overlong forms or surrogates: RFC 3629), else 0. */
int cs_utf8_valid(const char *s, size_t n);

/* Monotonic clock in milliseconds, for timings reported to users. */
double cs_now_ms(void);

#ifdef __cplusplus
}
#endif
#endif
