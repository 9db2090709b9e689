/* The golden reference set, shared by the tests that walk it (test_golden,
 * test_cuda, test_cuda_emul): tests/golden/<family>/ with model.onnx,
 * input.npy and (made by tools/make_golden.py) the PyTorch references.
 * CS_GOLDEN_DIR=DIR walks another set of the same layout (the full-size
 * models of tools/make_golden.py --full DIR).  Test-only, header-only. */
#ifndef CS_TEST_GOLDEN_SET_H
#define CS_TEST_GOLDEN_SET_H

#include "camserve/cam.h"
#include "camserve/engine.h"
#include "camserve/models.h"
#include "camserve/npy.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct golden_family {
    char name[256];
    char dir[1024]; /* "" for the embedded default model (golden_add_default) */
} golden_family;

static inline const char *golden_dir(void) {
    const char *d = getenv("CS_GOLDEN_DIR");
    return d && *d ? d : CS_SOURCE_DIR "/tests/golden";
}

static inline int golden_has(const char *dir, const char *name) {
    char p[1400];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static inline int golden_cmp(const void *a, const void *b) {
    return strcmp(((const golden_family *)a)->name, ((const golden_family *)b)->name);
}

/* The families (at most max) whose folder holds every file of need (a
 * NULL-terminated list), sorted by name. */
static inline int golden_families(golden_family *out, int max, const char *const *need) {
    DIR *d = opendir(golden_dir());
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        if (e->d_name[0] == '.') continue;
        golden_family *f = &out[n];
        snprintf(f->name, sizeof f->name, "%s", e->d_name);
        snprintf(f->dir, sizeof f->dir, "%s/%s", golden_dir(), e->d_name);
        int ok = 1;
        for (int i = 0; need[i] && ok; i++) ok = golden_has(f->dir, need[i]);
        n += ok;
    }
    closedir(d);
    qsort(out, (size_t)n, sizeof *out, golden_cmp);
    return n;
}

/* Appends the embedded default model as a family named "default_model". */
static inline int golden_add_default(golden_family *out, int n) {
    snprintf(out[n].name, sizeof out[n].name, "default_model");
    out[n].dir[0] = 0;
    return n + 1;
}

/* Comparisons the parity tests share. */

/* max |a - ref| / max |ref| (INFINITY on a NaN) */
static inline double golden_rel_err(const float *a, const float *ref, int64_t n) {
    double d = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)ref[i]);
        if (isnan(e)) return INFINITY;
        d = fmax(d, e);
        m = fmax(m, fabs((double)ref[i]));
    }
    return d / (m + 1e-12);
}

static inline int64_t golden_argmax(const float *x, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* Pearson correlation; two flat maps are the same map (1) */
static inline double golden_correlation(const float *a, const float *b, int64_t n) {
    double ma = 0, mb = 0, sab = 0, saa = 0, sbb = 0;
    for (int64_t i = 0; i < n; i++) ma += a[i], mb += b[i];
    ma /= (double)n;
    mb /= (double)n;
    for (int64_t i = 0; i < n; i++) {
        sab += (a[i] - ma) * (b[i] - mb);
        saa += (a[i] - ma) * (a[i] - ma);
        sbb += (b[i] - mb) * (b[i] - mb);
    }
    if (saa < 1e-20 && sbb < 1e-20) return 1.0;
    return sab / sqrt(saa * sbb + 1e-30);
}

/* Every family with a model and an input, then the embedded default model. */
static inline int golden_parity_families(golden_family *out, int max) {
    static const char *const need[] = {"model.onnx", "input.npy", NULL};
    return golden_add_default(out, golden_families(out, max - 1, need));
}

/* Loads a family's model (the embedded one for dir ""). */
static inline cs_status golden_load(const golden_family *f, const cs_model_options *o, cs_model **m,
                                    cs_error *err) {
    if (f->dir[0]) {
        char p[1400];
        snprintf(p, sizeof p, "%s/model.onnx", f->dir);
        return cs_model_load(p, o, m, err);
    }
    const void *buf;
    size_t len;
    const char *sc, *lb;
    cs_status st = cs_models_default(&buf, &len, &sc, &lb, err);
    return st == CS_OK ? cs_model_load_buffer(buf, len, o, m, err) : st;
}

/* The family's input.npy (batch from its first dim), or for the default
 * model a deterministic batch-2 pattern of its input shape; NULL with err
 * set when the file cannot be read.  The caller frees it. */
static inline float *golden_input(const golden_family *f, const cs_model *m, int *batch, cs_error *err) {
    *batch = 0;
    if (f->dir[0]) {
        char p[1400];
        cs_npy in;
        snprintf(p, sizeof p, "%s/input.npy", f->dir);
        if (cs_npy_load(p, &in, err) != CS_OK) return NULL;
        *batch = (int)in.dims[0];
        return in.data;
    }
    cs_model_info info;
    cs_model_get_info(m, &info);
    int64_t per = info.input_dims[1] * info.input_dims[2] * info.input_dims[3];
    *batch = 2;
    float *x = malloc((size_t)(2 * per) * sizeof(float));
    if (!x) {
        cs_errorf(err, CS_ENOMEM, "out of memory");
        return NULL;
    }
    for (int64_t i = 0; i < 2 * per; i++) x[i] = (float)sin(0.01 * (double)i) * 1.5f;
    return x;
}

#ifdef cmocka_unit_test
/* Fails the test with the family's name, the call and its message when call
 * (which may use `err`) does not return CS_OK. */
#define GOLDEN_CHECK(fam, call)                                                          \
    do {                                                                                 \
        cs_error e_ = {0};                                                               \
        cs_error *err = &e_;                                                             \
        if ((call) != CS_OK) fail_msg("%s: %s: %s", (fam)->name, #call, e_.msg);         \
        (void)err;                                                                       \
    } while (0)

/* The raw Grad-CAM maps (batch x h x w, malloc'd) of a CPU session's layer
 * for classes cls, computed by src/cam from the layer's activation and
 * gradient; the logits (batch x classes) land in logits. */
static inline float *golden_gradcam(const golden_family *f, cs_session *s, const float *x, int batch, int layer,
                                    const int *cls, float *logits, int64_t dims[4]) {
    GOLDEN_CHECK(f, cs_session_forward_keep(s, x, batch, &layer, 1, logits, err));
    GOLDEN_CHECK(f, cs_session_backward(s, cls, err));
    const float *a, *g;
    GOLDEN_CHECK(f, cs_session_layer(s, layer, &a, &g, dims, err));
    assert_non_null(g);
    int64_t hw = dims[2] * dims[3];
    float *raw = malloc((size_t)(batch * hw) * sizeof(float));
    assert_non_null(raw);
    GOLDEN_CHECK(f, cs_cam_compute_raw(CS_CAM_METHOD_GRADCAM, a, g, batch, (int)dims[1], (int)dims[2],
                                       (int)dims[3], NULL, raw, err));
    return raw;
}

/* For cmocka tests (cmocka.h included first): the family's model on device
 * and precision, or its input -- a failure fails the test. */
static inline cs_model *golden_load_or_fail(const golden_family *f, const char *device, cs_precision prec) {
    cs_model_options o = {.device = device, .precision = prec};
    cs_model *m = NULL;
    cs_error err = {0};
    if (golden_load(f, &o, &m, &err) != CS_OK)
        fail_msg("%s on %s/%s: %s", f->name, device, cs_precision_name(prec), err.msg);
    return m;
}

static inline float *golden_input_or_fail(const golden_family *f, const cs_model *m, int *batch) {
    cs_error err = {0};
    float *x = golden_input(f, m, batch, &err);
    if (!x) fail_msg("%s: %s", f->name, err.msg);
    return x;
}
#endif

#endif
