/* Golden logits: every family under tests/golden/<family>/ that has
 * model.onnx + input.npy + logits.npy (made by tools/make_golden.py with
 * PyTorch, cross-checked in ONNX Runtime) must reproduce the logits:
 *
 *   max |ours - golden| <= 1e-4 * max |golden| + 1e-5
 *
 * once on the whole input batch, and once per image at batch 1 (which must
 * match the batch-N row to the same tolerance: a plan per batch size must not
 * change the numbers beyond rounding).
 *
 * Where the set has float64 references (make_golden.py --float64), the
 * distance of camserve's and of PyTorch float32's logits from the float64
 * ones is printed too (information only; the check is the one above).
 *
 * One cmocka test per family, built at run time, so that every family is
 * checked and reported even when another fails. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "camserve/engine.h"
#include "camserve/npy.h"
#include "unit/golden_set.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_FAMILIES 64

typedef golden_family family;
static family g_fam[MAX_FAMILIES];
static char g_names[MAX_FAMILIES][280];

static int find_families(void) {
    static const char *const need[] = {"model.onnx", "input.npy", "logits.npy", NULL};
    return golden_families(g_fam, MAX_FAMILIES, need);
}

static double tolerance(const float *ref, int64_t n) {
    double mx = 0;
    for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs((double)ref[i]));
    return 1e-4 * mx + 1e-5;
}

/* max |a - b|; NaN anywhere counts as infinitely far. */
static double max_diff(const float *a, const float *b, int64_t n) {
    double md = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d == d)) return INFINITY;
        md = fmax(md, d);
    }
    return md;
}

static void test_family(void **state) {
    const family *f = *state;
    char path[1200];
    cs_error err = {0};
    cs_model *m = NULL;
    cs_session *s = NULL;
    cs_npy in = {0}, ref = {0};
    float *out = NULL, *one = NULL;

    snprintf(path, sizeof path, "%s/model.onnx", f->dir);
    if (cs_model_load(path, NULL, &m, &err) != CS_OK)
        fail_msg("%s: load failed: %s", f->name, err.msg);
    snprintf(path, sizeof path, "%s/input.npy", f->dir);
    if (cs_npy_load(path, &in, &err) != CS_OK) fail_msg("%s: %s", f->name, err.msg);
    snprintf(path, sizeof path, "%s/logits.npy", f->dir);
    if (cs_npy_load(path, &ref, &err) != CS_OK) fail_msg("%s: %s", f->name, err.msg);

    cs_model_info info;
    cs_model_get_info(m, &info);
    assert_int_equal(in.ndim, 4);
    assert_int_equal(ref.ndim, 2);
    int batch = (int)in.dims[0];
    int64_t classes = ref.dims[1];
    assert_int_equal(ref.dims[0], batch);
    if (info.num_classes != classes)
        fail_msg("%s: model has %lld classes, logits.npy %lld", f->name, (long long)info.num_classes,
                 (long long)classes);
    for (int i = 1; i < 4; i++) assert_int_equal(info.input_dims[i], in.dims[i]);

    if (cs_session_create(m, &s, &err) != CS_OK) fail_msg("%s: %s", f->name, err.msg);
    out = malloc((size_t)(batch * classes) * sizeof(float));
    one = malloc((size_t)classes * sizeof(float));
    assert_non_null(out);
    assert_non_null(one);
    if (cs_session_run(s, in.data, batch, out, &err) != CS_OK)
        fail_msg("%s: batch-%d run failed: %s", f->name, batch, err.msg);
    double tol = tolerance(ref.data, batch * classes);
    double d_batch = max_diff(out, ref.data, batch * classes);

    /* each image alone, compared with its row of the batch run */
    int64_t per_image = in.dims[1] * in.dims[2] * in.dims[3];
    double d_single = 0;
    for (int b = 0; b < batch; b++) {
        if (cs_session_run(s, in.data + b * per_image, 1, one, &err) != CS_OK)
            fail_msg("%s: batch-1 run of image %d failed: %s", f->name, b, err.msg);
        d_single = fmax(d_single, max_diff(one, out + b * classes, classes));
    }
    int ok = d_batch <= tol && d_single <= tol;
    char f64[96] = "";
    if (golden_has(f->dir, "logits_f64.npy")) {
        cs_npy r64 = {0};
        snprintf(path, sizeof path, "%s/logits_f64.npy", f->dir);
        if (cs_npy_load(path, &r64, &err) != CS_OK) fail_msg("%s: %s", f->name, err.msg);
        assert_int_equal(cs_npy_count(&r64), batch * classes);
        snprintf(f64, sizeof f64, "; vs float64: camserve %.3g, PyTorch float32 %.3g",
                 max_diff(out, r64.data, batch * classes), max_diff(ref.data, r64.data, batch * classes));
        cs_npy_free(&r64);
    }
    printf("[ golden   ] %-18s batch %d: max|diff| %.3g, batch-1 vs batch-%d %.3g (tol %.3g) %s%s\n",
           f->name, batch, d_batch, batch, d_single, tol, ok ? "ok" : "FAIL", f64);
    fflush(stdout);

    free(out);
    free(one);
    cs_npy_free(&in);
    cs_npy_free(&ref);
    cs_session_free(s);
    cs_model_free(m);
    if (d_batch > tol) fail_msg("%s: logits differ from golden by %g > %g", f->name, d_batch, tol);
    if (d_single > tol)
        fail_msg("%s: batch-1 logits differ from the batch-%d row by %g > %g", f->name, batch,
                 d_single, tol);
}

int main(void) {
    int n = find_families();
    if (n == 0) {
        fprintf(stderr, "test_golden: no families with model.onnx+input.npy+logits.npy under %s\n",
                golden_dir());
        return 1;
    }
    struct CMUnitTest tests[MAX_FAMILIES];
    for (int i = 0; i < n; i++) {
        snprintf(g_names[i], sizeof g_names[i], "golden_%.200s", g_fam[i].name);
        tests[i] = (struct CMUnitTest){.name = g_names[i], .test_func = test_family,
                                       .initial_state = &g_fam[i]};
    }
    return _cmocka_run_group_tests("golden", tests, (size_t)n, NULL, NULL);
}
