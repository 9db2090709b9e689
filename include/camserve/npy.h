/* NumPy .npy files (format 1.0/2.0 read, 1.0 write): float32, little-endian,
 * C order only -- the form `camserve --tensor` and `--save-*` use. */
#ifndef CAMSERVE_NPY_H
#define CAMSERVE_NPY_H

#include "camserve/common.h"

#define CS_NPY_MAX_DIMS 8

typedef struct cs_npy {
    int ndim;
    int64_t dims[CS_NPY_MAX_DIMS];
    float *data; /* owned: free with cs_npy_free() */
} cs_npy;

cs_status cs_npy_load(const char *path, cs_npy *out, cs_error *err);
/* Parses an in-memory .npy image (the loader and the fuzzer use this). */
cs_status cs_npy_parse(const void *buf, size_t len, cs_npy *out, cs_error *err);
cs_status cs_npy_save(const char *path, const float *data, int ndim, const int64_t *dims,
                      cs_error *err);
void cs_npy_free(cs_npy *npy);
int64_t cs_npy_count(const cs_npy *npy);

#endif
