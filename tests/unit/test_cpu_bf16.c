/* The CPU's bf16 precision (--device cpu --precision bf16) against its
 * fp32, on every golden family (tests/golden/<family>/model.onnx +
 * input.npy) and the embedded default model:
 *   the same top-1 on every image;
 *   logits max rel err (max |d| / max |fp32|) <= 0.1;
 *   the Grad-CAM map (default layer, top-1 class) correlates >= 0.98 with
 *   the fp32 map, worst image;
 *   the model reports bf16, and a second bf16 session computes the same
 *   logits bit for bit (the plans are deterministic).
 * Why not the GPU's 2e-2 / 0.99 (issue 8): rounding inputs and weights to
 * bf16's 8 bits is the error, and PyTorch's own torch.autocast("cpu",
 * bfloat16) misses 2e-2 on 6 of these 16 architectures (up to 0.084 on
 * inception_v3; bench/peer_torch_precision.py --device cpu, compared in
 * docs/benchmarks.md).  The bars above sit above both and far below what a
 * wrong layout or a lost post-op gives (unrelated logits, maps near 0). 
 * A middle layer's map (the backward then crosses bf16 convolutions) is
 * printed, not checked: those maps are ill-conditioned even in fp32
 * (docs/benchmarks.md, explanations).
 * On a CPU without native bf16 (cs_cpu_has_bf16) the load must be refused
 * with a message, and the rest is skipped (exit 77).  ctest also runs it
 * as unit/test_cpu_bf16_refused, with oneDNN held to AVX-512 without bf16
 * (ONEDNN_MAX_CPU_ISA) and CS_TEST_EXPECT_NO_BF16=1: there the refusal is
 * the whole test and passes with 0. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "camserve/cam.h"
#include "camserve/engine.h"
#include "unit/golden_set.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FAMILIES 64

typedef golden_family family;
static family g_fam[MAX_FAMILIES];
static char g_names[MAX_FAMILIES][300];

#define CHECK(call) GOLDEN_CHECK(f, call)

static double worst_corr(const float *a, const float *b, int batch, const int64_t dims[4]) {
    int64_t hw = dims[2] * dims[3];
    double c = 1;
    for (int i = 0; i < batch; i++) c = fmin(c, golden_correlation(a + i * hw, b + i * hw, hw));
    return c;
}

static void test_family(void **state) {
    const family *f = *state;
    cs_model *m32 = golden_load_or_fail(f, "cpu", CS_PRECISION_FP32);
    cs_model *m16 = golden_load_or_fail(f, "cpu", CS_PRECISION_BF16);
    assert_int_equal(cs_model_precision(m16), CS_PRECISION_BF16);
    assert_string_equal(cs_model_device(m16), "cpu");
    cs_model_info info;
    cs_model_get_info(m32, &info);
    int batch;
    float *x = golden_input_or_fail(f, m32, &batch);
    int ncls = (int)info.num_classes;
    int64_t nl = (int64_t)batch * ncls;
    float *ref = malloc((size_t)nl * sizeof(float)), *got = malloc((size_t)nl * sizeof(float)),
          *again = malloc((size_t)nl * sizeof(float));
    int *cls = malloc((size_t)batch * sizeof(int));
    assert_true(ref && got && again && cls);
    cs_session *s32, *s16, *s16b;
    CHECK(cs_session_create(m32, &s32, err));
    CHECK(cs_session_create(m16, &s16, err));
    CHECK(cs_session_create(m16, &s16b, err));
    CHECK(cs_session_run(s32, x, batch, ref, err));
    CHECK(cs_session_run(s16, x, batch, got, err));
    CHECK(cs_session_run(s16b, x, batch, again, err));
    for (int i = 0; i < batch; i++) cls[i] = (int)golden_argmax(ref + (int64_t)i * ncls, ncls);
    int top1 = 0;
    for (int i = 0; i < batch; i++) top1 += golden_argmax(got + (int64_t)i * ncls, ncls) == cls[i];
    double e = golden_rel_err(got, ref, nl);
    int same = memcmp(got, again, (size_t)nl * sizeof(float)) == 0;

    int layer = cs_model_default_layer(m32), mid = cs_model_num_layers(m32) / 2;
    int64_t d32[4], d16[4];
    float *c32 = golden_gradcam(f, s32, x, batch, layer, cls, again, d32);
    float *c16 = golden_gradcam(f, s16, x, batch, layer, cls, again, d16);
    assert_memory_equal(d32, d16, sizeof d32);
    double corr = worst_corr(c16, c32, batch, d32);
    free(c32);
    free(c16);
    double corr_mid = NAN;
    if (mid != layer) {
        c32 = golden_gradcam(f, s32, x, batch, mid, cls, again, d32);
        c16 = golden_gradcam(f, s16, x, batch, mid, cls, again, d16);
        corr_mid = worst_corr(c16, c32, batch, d32);
        free(c32);
        free(c16);
    }
    printf("  %-24s logits %.3g top1 %d/%d gradcam %.4f (middle layer %s: %.4f) repeat %s\n", f->name, e, top1,
           batch, corr, cs_model_layer_name(m32, mid), corr_mid, same ? "bit-exact" : "DIFFERS");
    fflush(stdout);
    cs_session_free(s32);
    cs_session_free(s16);
    cs_session_free(s16b);
    cs_model_free(m32);
    cs_model_free(m16);
    free(x);
    free(ref);
    free(got);
    free(again);
    free(cls);
    if (top1 != batch) fail_msg("%s: bf16 top-1 agrees with fp32 on %d of %d images", f->name, top1, batch);
    if (!(e <= 0.1)) fail_msg("%s: bf16 logits max rel err %g > 0.1", f->name, e);
    if (!(corr >= 0.98)) fail_msg("%s: bf16 Grad-CAM correlation %.4f < 0.98", f->name, corr);
    if (!same) fail_msg("%s: two bf16 sessions computed different logits", f->name);
}

int main(void) {
    int expect_none = getenv("CS_TEST_EXPECT_NO_BF16") != NULL;
    if (expect_none && cs_cpu_has_bf16()) {
        printf("test_cpu_bf16: FAIL: CS_TEST_EXPECT_NO_BF16 is set but oneDNN reports native bf16\n");
        return 1;
    }
    if (!cs_cpu_has_bf16()) {
        /* the refusal is the behaviour to check here */
        cs_model_options o = {.device = "cpu", .precision = CS_PRECISION_BF16};
        golden_family d;
        golden_add_default(&d, 0);
        cs_model *m = NULL;
        cs_error err = {0};
        cs_status st = golden_load(&d, &o, &m, &err);
        if (st != CS_EUNSUPPORTED || !strstr(err.msg, "AVX512_BF16")) {
            printf("test_cpu_bf16: FAIL: bf16 on a CPU without it: status %d, '%s'\n", (int)st, err.msg);
            cs_model_free(m);
            return 1;
        }
        printf("test_cpu_bf16: %s: no native bf16 here, and the load is refused: %s\n",
               expect_none ? "PASSED" : "SKIPPED", err.msg);
        return expect_none ? 0 : 77;
    }
    int n = golden_parity_families(g_fam, MAX_FAMILIES);
    struct CMUnitTest tests[MAX_FAMILIES];
    for (int i = 0; i < n; i++) {
        snprintf(g_names[i], sizeof g_names[i], "cpu_bf16_%.200s", g_fam[i].name);
        tests[i] = (struct CMUnitTest){.name = g_names[i], .test_func = test_family, .initial_state = &g_fam[i]};
    }
    return _cmocka_run_group_tests("cpu_bf16", tests, (size_t)n, NULL, NULL);
}
