/* The CUDA backend against the CPU backend (ctest label gpu), and the
 * backend's host-side helpers (--host-only, label unit).
 *
 * On a GPU, for every golden family (tests/golden/<family>/model.onnx +
 * input.npy) and the embedded default model:
 *   fp32: max |gpu - cpu| <= 1e-3 * max |cpu| over the logits;
 *   fp16, bf16: the same top-1 per image and max rel err <= 2e-2;
 *   GradCAM (the device map of cs_session_gradcam, default layer, top-1
 *   class) correlates >= 0.99 with the CPU fp32 map (src/cam);
 *   the captured graph's replay equals the first (eager) run within 1e-5,
 *   two replays are bit-identical, and an eager session
 *   (CS_CUDA_GRAPHS=0) agrees with the graphs within 1e-5;
 *   batch N equals N runs of batch 1 (within 1e-3 relative);
 *   run_with_layer fed the layer's own values gives the plain logits.
 * And the GPU image path (gpuprep.h) with each nvJPEG decoder against the
 * CPU path's full-resolution decode (tensor within 1 level on average, 16
 * at most; display image within 1.5 on average; the same crop box), up to
 * a 4000x3000 JPEG; skipped with a message where nvJPEG is absent.  Its
 * speed is bench/gpu.sh's (the server's decode stage with and without it).
 * Where camserve was built without CUDA or no GPU is usable, it prints why
 * and exits 77, which ctest reports as skipped. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "camserve/cam.h"
#include "camserve/cuda.h"
#include "camserve/engine.h"
#include "camserve/models.h"
#include "camserve/npy.h"
#include "unit/golden_set.h"
#ifdef CS_HAVE_CUDA
#include "cuda/cublas_lazy.h"
#include "cuda/cuda_internal.h"
#include "camserve/gpuprep.h"
#include "unit/gpuprep_fixture.h"
#endif

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* CS_GOLDEN_DIR=DIR (golden_set.h): another reference set (bench/gpu.sh runs the binary
 * away from the source tree it was built in) */
#define MAX_FAMILIES 64

/* ---- host-side helpers ------------------------------------------------------------ */
#ifdef CS_HAVE_CUDA

static void test_f16_rounding(void **state) {
    (void)state;
    struct { float x; uint16_t h; } cases[] = {
        {1.f, 0x3c00}, {-2.f, 0xc000}, {65504.f, 0x7bff}, {65519.f, 0x7bff}, {65520.f, 0x7c00},
        {1e9f, 0x7c00}, {0.1f, 0x2e66}, {0.f, 0x0000}, {-0.f, 0x8000},
        {5.9604644775390625e-08f, 0x0001},         /* 2^-24, smallest subnormal */
        {2.98023223876953125e-08f, 0x0000},        /* 2^-25: a tie, to even (0) */
        {4.470348358154296875e-08f, 0x0001},       /* 1.5 * 2^-25 */
        {6.103515625e-05f, 0x0400},                /* 2^-14, smallest normal */
        {1.00048828125f, 0x3c00},                  /* 1 + 2^-11: a tie, to even */
        {1.00146484375f, 0x3c02},                  /* 1 + 3 * 2^-11: a tie, to even (up) */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint16_t h = cs_cuda_f32_to_f16(cases[i].x);
        if (h != cases[i].h) fail_msg("f16(%g) = 0x%04x, want 0x%04x", (double)cases[i].x, h, cases[i].h);
    }
    uint16_t nan = cs_cuda_f32_to_f16(NAN);
    assert_true((nan & 0x7c00) == 0x7c00 && (nan & 0x3ff) != 0);
    /* every finite half survives a round trip through fp32 */
    for (uint32_t b = 0; b < 0x10000; b++) {
        if ((b & 0x7c00) == 0x7c00) continue;
        float f = cs_cuda_f16_to_f32((uint16_t)b);
        if (cs_cuda_f32_to_f16(f) != b) fail_msg("half 0x%04x -> %g -> 0x%04x", b, (double)f, cs_cuda_f32_to_f16(f));
    }
    assert_true(cs_cuda_f16_to_f32(0x3555) > 0.3332f && cs_cuda_f16_to_f32(0x3555) < 0.3334f);
}

static void test_bf16_rounding(void **state) {
    (void)state;
    assert_int_equal(cs_cuda_f32_to_bf16(1.f), 0x3f80);
    assert_int_equal(cs_cuda_f32_to_bf16(-2.f), 0xc000);
    assert_int_equal(cs_cuda_f32_to_bf16(1.00390625f), 0x3f80);  /* tie, to even */
    assert_int_equal(cs_cuda_f32_to_bf16(1.01171875f), 0x3f82);  /* tie, to even (up) */
    assert_int_equal(cs_cuda_f32_to_bf16(1.0078125f), 0x3f81);
    for (uint32_t b = 0; b < 0x10000; b++) {
        if ((b & 0x7f80) == 0x7f80) continue;
        float f = cs_cuda_bf16_to_f32((uint16_t)b);
        if (cs_cuda_f32_to_bf16(f) != b) fail_msg("bf16 0x%04x round trip", b);
    }
    uint16_t nan = cs_cuda_f32_to_bf16(NAN);
    assert_true((nan & 0x7f80) == 0x7f80 && (nan & 0x7f) != 0);
}

static void test_filter_layout(void **state) {
    (void)state;
    enum { O = 3, I = 2, KH = 2, KW = 3 };
    float src[O * I * KH * KW], dst[O * I * KH * KW];
    for (int i = 0; i < O * I * KH * KW; i++) src[i] = (float)i;
    cs_cuda_oihw_to_ohwi(src, dst, O, I, KH, KW);
    for (int o = 0; o < O; o++)
        for (int i = 0; i < I; i++)
            for (int h = 0; h < KH; h++)
                for (int w = 0; w < KW; w++)
                    assert_true(dst[((o * KH + h) * KW + w) * I + i] == src[((o * I + i) * KH + h) * KW + w]);
    int64_t d[4] = {2, 3, 4, 5}, s[4];
    cs_cuda_nhwc_strides(d, s);
    assert_true(s[0] == 60 && s[1] == 1 && s[2] == 15 && s[3] == 3);
}

/* what k_strided does, on the host */
static void walk_run(const cs_cuda_walk *w, int op, float *out, const float *a, const float *b) {
    int64_t n = 1;
    for (int d = 0; d < w->nd; d++) n *= w->dims[d];
    for (int64_t i = 0; i < n; i++) {
        int64_t r = i, oo = 0, oa = 0, ob = 0;
        for (int d = w->nd - 1; d >= 0; d--) {
            int64_t c = r % w->dims[d];
            r /= w->dims[d];
            oo += c * w->so[d];
            oa += c * w->sa[d];
            ob += c * w->sb[d];
        }
        out[oo] = op == CS_BIN_ADD ? a[oa] + b[ob] : a[oa];
    }
}

static void test_walks(void **state) {
    (void)state;
    int64_t d[4] = {2, 3, 4, 5}, nchw[4], nhwc[4];
    cs_cuda_dense_strides(4, d, nchw);
    cs_cuda_nhwc_strides(d, nhwc);
    float x[120], y[120], z[120];
    for (int i = 0; i < 120; i++) x[i] = (float)i;
    /* NCHW -> NHWC, and back */
    cs_cuda_walk w;
    assert_int_equal(cs_cuda_walk_make(&w, 4, d, nhwc, nchw, NULL), 0);
    assert_true(w.so[w.nd - 1] == 1); /* writes walk the output in memory order */
    walk_run(&w, CS_BIN_COPY, y, x, NULL);
    for (int n = 0; n < 2; n++)
        for (int c = 0; c < 3; c++)
            for (int h = 0; h < 4; h++)
                for (int ww = 0; ww < 5; ww++)
                    assert_true(y[n * 60 + h * 15 + ww * 3 + c] == x[n * 60 + c * 20 + h * 5 + ww]);
    assert_int_equal(cs_cuda_walk_make(&w, 4, d, nchw, nhwc, NULL), 0);
    walk_run(&w, CS_BIN_COPY, z, y, NULL);
    assert_memory_equal(x, z, sizeof x);
    /* a dense copy collapses to one dim */
    assert_int_equal(cs_cuda_walk_make(&w, 4, d, nchw, nchw, NULL), 0);
    assert_int_equal(w.nd, 1);
    assert_true(w.dims[0] == 120);
    /* broadcast add of a per-channel [1,3,1,1] onto NHWC */
    float bias[3] = {100.f, 200.f, 300.f};
    int64_t sb[4] = {0, 1, 0, 0};
    assert_int_equal(cs_cuda_walk_make(&w, 4, d, nhwc, nhwc, sb), 0);
    walk_run(&w, CS_BIN_ADD, z, y, bias);
    for (int i = 0; i < 120; i++) assert_true(z[i] == y[i] + bias[i % 3]);
    /* size-1 dims drop out; too many dims is refused */
    int64_t d1[3] = {1, 7, 1}, s1[3] = {7, 1, 1};
    assert_int_equal(cs_cuda_walk_make(&w, 3, d1, s1, s1, NULL), 0);
    assert_true(w.nd == 1 && w.dims[0] == 7);
    int64_t d8[8] = {2, 2, 2, 2, 2, 2, 2, 2}, s8[8], t8[8];
    cs_cuda_dense_strides(8, d8, s8);
    for (int i = 0; i < 8; i++) t8[i] = s8[7 - i]; /* a full reversal cannot merge */
    assert_int_equal(cs_cuda_walk_make(&w, 8, d8, s8, t8, NULL), -1);
}

/* cuBLAS is not linked but loaded on first use (cublas_lazy.c): where the
 * toolkit this binary was built against is installed, the loader finds it
 * and every function the backend calls */
static void test_cublas_loads(void **state) {
    (void)state;
    cs_error err = {0};
    const cs_cublas_api *b = cs_cublas(&err);
    if (!b) fail_msg("%s", err.msg);
    assert_true(b->create && b->destroy && b->set_stream && b->set_workspace && b->status_string && b->gemm_ex);
    assert_string_equal(cs_cublas_status(CUBLAS_STATUS_SUCCESS), b->status_string(CUBLAS_STATUS_SUCCESS));
}

static int run_host_tests(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cublas_loads),
        cmocka_unit_test(test_f16_rounding),
        cmocka_unit_test(test_bf16_rounding),
        cmocka_unit_test(test_filter_layout),
        cmocka_unit_test(test_walks),
    };
    return cmocka_run_group_tests_name("cuda_host", tests, NULL, NULL);
}

/* ---- GPU parity ---------------------------------------------------------------------- */

typedef golden_family family;
static family g_fam[MAX_FAMILIES];
static char g_names[MAX_FAMILIES][300];

#define CHECK(call) GOLDEN_CHECK(f, call)

/* CPU fp32 GradCAM (raw, batch x h x w) of the default layer at top-1 */
static float *cpu_gradcam(const family *f, cs_session *s, const float *x, int batch, int layer, int ncls,
                          const int *cls, int64_t dims[4]) {
    float *logits = malloc((size_t)(batch * ncls) * sizeof(float));
    assert_non_null(logits);
    float *raw = golden_gradcam(f, s, x, batch, layer, cls, logits, dims);
    free(logits);
    return raw;
}

/* One precision of one family.  Every check records its figure and goes
 * on (a GPU run is scarce: one run must show every discrepancy, not the
 * first); an API error ends this precision.  Returns the number of failed
 * checks and prints one summary line. */
#define SOFT(cond, ...)                                                                  \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            printf("  FAIL %s %s: ", f->name, cs_precision_name(pr));                   \
            printf(__VA_ARGS__);                                                         \
            printf("\n");                                                                \
            nfail++;                                                                     \
        }                                                                                \
    } while (0)
#define TRY(call)                                                                        \
    do {                                                                                 \
        cs_error e_ = {0};                                                               \
        cs_error *err = &e_;                                                             \
        if ((call) != CS_OK) {                                                           \
            printf("  FAIL %s %s: %s: %s\n", f->name, cs_precision_name(pr), #call, e_.msg); \
            nfail++;                                                                     \
            goto done;                                                                   \
        }                                                                                \
        (void)err;                                                                       \
    } while (0)

static int check_precision(const family *f, cs_precision pr, const cs_model_info *info, const float *x, int batch,
                           const float *ref, const int *cls, int layer, const float *cam_ref, const int64_t ldims[4]) {
    int nfail = 0, ncls = (int)info->num_classes;
    int64_t nl = (int64_t)batch * ncls;
    double e = NAN, er = NAN, cmin = NAN, e2 = NAN, e3 = NAN, e4 = NAN;
    int top1 = 0, bitexact = -1;
    float *got = malloc((size_t)nl * sizeof(float)), *again = malloc((size_t)nl * sizeof(float));
    assert_true(got && again);
    cs_model *mg = NULL;
    cs_session *sg = NULL, *se = NULL;
    {
        cs_model_options o = {.device = "cuda:0", .precision = pr};
        TRY(golden_load(f, &o, &mg, err));
    }
    assert_string_equal(cs_model_device(mg), "cuda:0");
    TRY(cs_session_create(mg, &sg, err));
    TRY(cs_session_run(sg, x, batch, got, err));
    SOFT(cs_session_device_ms(sg) > 0, "no device time measured (%g ms)", cs_session_device_ms(sg));
    e = golden_rel_err(got, ref, nl);
    double tol = pr == CS_PRECISION_FP32 ? 1e-3 : 2e-2;
    SOFT(e <= tol, "logits max rel err %g > %g", e, tol);
    for (int i = 0; i < batch; i++) top1 += golden_argmax(got + (int64_t)i * ncls, ncls) == cls[i];
    SOFT(pr == CS_PRECISION_FP32 || top1 == batch, "top-1 agrees on %d of %d images", top1, batch);
    /* run 1 was eager, run 2 is captured and replayed, run 3 replays:
     * the same computation (cuDNN/cuBLAS could in principle pick other
     * kernels inside a capture, hence a tolerance for 1 vs 2), and a
     * replay is deterministic (bit for bit, 2 vs 3) */
    TRY(cs_session_run(sg, x, batch, again, err));
    er = golden_rel_err(again, got, nl);
    SOFT(er <= 1e-5, "the graph replay differs from the eager run by %g", er);
    TRY(cs_session_run(sg, x, batch, got, err));
    bitexact = memcmp(got, again, (size_t)nl * sizeof(float)) == 0;
    SOFT(bitexact, "two CUDA-Graph replays differ");
    /* Grad-CAM on the device */
    TRY(cs_session_forward_keep(sg, x, batch, &layer, 1, got, err));
    TRY(cs_session_backward(sg, cls, err));
    const float *map;
    int64_t md[3];
    TRY(cs_session_gradcam(sg, layer, &map, md, err));
    SOFT(md[0] == batch && md[1] == ldims[2] && md[2] == ldims[3], "map dims %lldx%lldx%lld",
         (long long)md[0], (long long)md[1], (long long)md[2]);
    if (md[0] == batch && md[1] == ldims[2] && md[2] == ldims[3]) {
        cmin = 1;
        for (int i = 0; i < batch; i++) {
            int64_t hw = md[1] * md[2];
            cmin = fmin(cmin, golden_correlation(map + i * hw, cam_ref + i * hw, hw));
        }
        SOFT(cmin >= 0.99, "GradCAM correlation (worst image) %.4f < 0.99", cmin);
    }
    const float *a, *g;
    int64_t d4[4];
    TRY(cs_session_layer(sg, layer, &a, &g, d4, err));
    SOFT(g != NULL, "no gradient at the layer");
    if (pr == CS_PRECISION_FP32) {
        /* AblationCAM's pass: the layer's own values in, the logits out */
        size_t nel = (size_t)(d4[0] * d4[1] * d4[2] * d4[3]);
        float *own = malloc(nel * sizeof(float));
        assert_non_null(own);
        memcpy(own, a, nel * sizeof(float));
        cs_status st;
        {
            cs_error e_ = {0};
            st = cs_session_run_with_layer(sg, x, batch, layer, own, again, &e_);
            if (st != CS_OK) printf("  FAIL %s %s: run_with_layer: %s\n", f->name, cs_precision_name(pr), e_.msg);
        }
        free(own);
        if (st != CS_OK) {
            nfail++;
            goto done;
        }
        e2 = golden_rel_err(again, ref, nl);
        SOFT(e2 <= 1e-3, "run_with_layer(own values) max rel err %g", e2);
        /* batch N = N runs of batch 1 */
        cs_model_info gi;
        cs_model_get_info(mg, &gi);
        if (gi.input_dims[0] < 0 && batch > 1) {
            int64_t per = info->input_dims[1] * info->input_dims[2] * info->input_dims[3];
            e3 = 0;
            for (int i = 0; i < batch; i++) {
                TRY(cs_session_run(sg, x + i * per, 1, again, err));
                e3 = fmax(e3, golden_rel_err(again, ref + (int64_t)i * ncls, ncls));
            }
            SOFT(e3 <= 1e-3, "batch-1 runs: max rel err %g", e3);
        }
        /* an eager session (no graphs) computes the same */
        setenv("CS_CUDA_GRAPHS", "0", 1);
        cs_status cst;
        {
            cs_error e_ = {0};
            cst = cs_session_create(mg, &se, &e_);
            if (cst != CS_OK) printf("  FAIL %s eager session: %s\n", f->name, e_.msg);
        }
        unsetenv("CS_CUDA_GRAPHS");
        if (cst != CS_OK) {
            nfail++;
            goto done;
        }
        TRY(cs_session_run(se, x, batch, again, err));
        TRY(cs_session_run(sg, x, batch, got, err));
        e4 = golden_rel_err(again, got, nl);
        SOFT(e4 <= 1e-5, "eager vs graph max rel err %g", e4);
    }
done:
    printf("  %-24s %-4s logits %.3g top1 %d/%d replay %.3g bitexact %d gradcam %.4f own %.3g b1 %.3g eager %.3g%s\n",
           f->name, cs_precision_name(pr), e, top1, batch, er, bitexact, cmin, e2, e3, e4, nfail ? "  FAIL" : "");
    fflush(stdout);
    cs_session_free(se);
    cs_session_free(sg);
    cs_model_free(mg);
    free(got);
    free(again);
    return nfail;
}

static void test_family(void **state) {
    const family *f = *state;
    cs_model *mc = golden_load_or_fail(f, "cpu", CS_PRECISION_FP32);
    cs_model_info info;
    cs_model_get_info(mc, &info);
    int batch;
    float *x = golden_input_or_fail(f, mc, &batch);
    int ncls = (int)info.num_classes;
    int64_t nl = (int64_t)batch * ncls;
    float *ref = malloc((size_t)nl * sizeof(float));
    int *cls = malloc((size_t)batch * sizeof(int));
    assert_true(ref && cls);
    cs_session *sc;
    CHECK(cs_session_create(mc, &sc, err));
    CHECK(cs_session_run(sc, x, batch, ref, err));
    for (int i = 0; i < batch; i++) cls[i] = (int)golden_argmax(ref + (int64_t)i * ncls, ncls);
    int layer = cs_model_default_layer(mc);
    int64_t ldims[4];
    float *cam_ref = cpu_gradcam(f, sc, x, batch, layer, ncls, cls, ldims);

    const cs_precision precs[] = {CS_PRECISION_FP32, CS_PRECISION_FP16, CS_PRECISION_BF16};
    int nfail = 0;
    for (int pi = 0; pi < 3; pi++)
        nfail += check_precision(f, precs[pi], &info, x, batch, ref, cls, layer, cam_ref, ldims);
    free(cam_ref);
    cs_session_free(sc);
    cs_model_free(mc);
    free(x);
    free(ref);
    free(cls);
    if (nfail) fail_msg("%s: %d failed checks (lines above)", f->name, nfail);
}

/* ---- the GPU image path (gpuprep.h) against the CPU path -------------------------- */

/* One decoder on one JPEG: the tensor and the display image against the
 * CPU path's full-resolution decode.  nvJPEG's colour conversion and chroma
 * upsampling are not libjpeg-turbo's, so the bytes differ by a few levels;
 * the resize is the same integer plan, so nothing else may differ.
 * Returns the failed checks. */
static int gpuprep_case(cs_gpuprep *g, const char *dec, int w, int h, int o) {
    size_t len;
    uint8_t *jpg = make_jpeg(w, h, o, &len);
    const cs_preproc p = cs_img_preproc_default();
    const size_t n = (size_t)3 * p.crop_w * p.crop_h;
    float *want = malloc(n * sizeof *want), *got = malloc(n * sizeof *got);
    cs_image wd = {0};
    float wbox[4];
    cpu_prep(jpg, len, &p, 1, want, &wd, wbox);
    cs_gpuprep_out out = {.tensor = got, .want_display = 1};
    cs_error err = {0};
    int nfail = 0;
    cs_status st = cs_gpuprep_run(g, jpg, len, NULL, &p, &out, &err);
    if (st != CS_OK) {
        printf("  gpuprep %-10s %dx%d o%d: %s (%s)\n", dec, w, h, o, cs_status_str(st), err.msg);
        nfail = st == CS_EUNSUPPORTED && !strcmp(dec, "hardware") ? 0 : 1; /* no engine: not a failure */
        goto done;
    }
    double tmax = 0, tsum = 0;
    for (size_t i = 0; i < n; i++) {
        const int c = (int)(i / (n / 3));
        const double lv = fabs((double)got[i] - want[i]) * p.std[c] / p.scale; /* in 0..255 levels */
        tmax = lv > tmax ? lv : tmax;
        tsum += lv;
    }
    double dmax = 0, dsum = 0;
    const int same = out.display.width == wd.width && out.display.height == wd.height;
    const size_t nd = (size_t)wd.width * wd.height * 3;
    for (size_t i = 0; same && i < nd; i++) {
        const double d = abs((int)out.display.rgb[i] - (int)wd.rgb[i]);
        dmax = d > dmax ? d : dmax;
        dsum += d;
    }
    int boxok = 1;
    for (int i = 0; i < 4; i++) boxok &= out.box[i] == wbox[i];
    const double tmean = tsum / n, dmean = same ? dsum / nd : 1e9;
    nfail = !same + !boxok + (tmean > 1.0) + (tmax > 16.0) + (dmean > 1.5) + (strcmp(out.decoder, dec) != 0);
    printf("  gpuprep %-10s %dx%d o%d: tensor |diff| mean %.3f max %.1f levels; display %dx%d mean %.3f max %.0f; box %s%s\n",
           out.decoder, w, h, o, tmean, tmax, out.display.width, out.display.height, dmean, dmax,
           boxok ? "equal" : "DIFFERS", nfail ? "  FAIL" : "");
done:
    fflush(stdout);
    cs_img_free(&out.display);
    cs_img_free(&wd);
    free(want);
    free(got);
    free(jpg);
    return nfail;
}

static void test_gpuprep(void **state) {
    (void)state;
    int nfail = 0;
    static const char *const decs[2] = {"hardware", "gpu_hybrid"};
    for (int d = 0; d < 2; d++) {
        setenv("CS_NVJPEG_BACKEND", decs[d], 1);
        cs_gpuprep *g = NULL;
        cs_error err = {0};
        cs_status st = cs_gpuprep_open(0, &g, &err);
        unsetenv("CS_NVJPEG_BACKEND");
        if (st == CS_EUNSUPPORTED) {
            printf("  gpuprep: SKIPPED: %s\n", err.msg);
            skip();
        }
        if (st != CS_OK) fail_msg("gpuprep open: %s", err.msg);
        nfail += gpuprep_case(g, decs[d], 1203, 905, 1);
        nfail += gpuprep_case(g, decs[d], 1203, 905, 6);
        nfail += gpuprep_case(g, decs[d], 4000, 3000, 1);
        cs_gpuprep_close(g);
    }
    if (nfail) fail_msg("gpuprep: %d failed checks (lines above)", nfail);
}

#endif /* CS_HAVE_CUDA */

int main(int argc, char **argv) {
    int host_only = argc > 1 && strcmp(argv[1], "--host-only") == 0;
#ifndef CS_HAVE_CUDA
    (void)host_only;
    printf("test_cuda: SKIPPED: camserve was built without CUDA support\n");
    return 77;
#else
    if (host_only) return run_host_tests();
    int ndev = 0;
    cs_error err = {0};
    if (cs_cuda_device_count(&ndev, &err) != CS_OK || ndev == 0) {
        printf("test_cuda: SKIPPED: no usable GPU (%s)\n", ndev == 0 && err.msg[0] ? err.msg : "0 devices");
        return 77;
    }
    char desc[256];
    if (cs_cuda_device_describe(0, desc, sizeof desc, &err) == CS_OK) printf("test_cuda: on %s\n", desc);
    int n = golden_parity_families(g_fam, MAX_FAMILIES);
    struct CMUnitTest tests[MAX_FAMILIES + 1];
    for (int i = 0; i < n; i++) {
        snprintf(g_names[i], sizeof g_names[i], "cuda_%.200s", g_fam[i].name);
        tests[i] = (struct CMUnitTest){.name = g_names[i], .test_func = test_family, .initial_state = &g_fam[i]};
    }
    tests[n] = (struct CMUnitTest){.name = "cuda_gpuprep", .test_func = test_gpuprep};
    return _cmocka_run_group_tests("cuda", tests, (size_t)n + 1, NULL, NULL);
#endif
}
