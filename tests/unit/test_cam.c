/* Tests of the CAM mathematics against tests/golden/cam/, which
 * tools/cam_reference.py computes from pytorch-grad-cam's formulas.  Every
 * normalised map must match to 1e-5; the largest difference per case is
 * printed so drift shows before it fails. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "camserve/cam.h"
#include "camserve/npy.h"

#define TOL 1e-5

static double g_worst; /* largest difference seen over all cases */

static cs_npy load(const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/golden/cam/%s.npy", CS_SOURCE_DIR, name);
    cs_npy npy;
    cs_error err;
    if (cs_npy_load(path, &npy, &err) != CS_OK) fail_msg("%s: %s", path, err.msg);
    return npy;
}

static double max_diff(const float *a, const float *b, size_t n) {
    double d = 0;
    for (size_t i = 0; i < n; i++) {
        double x = fabs((double)a[i] - b[i]);
        if (!(x <= d)) d = x; /* NaN counts as a failure */
    }
    return d;
}

static void expect_close(const char *what, const float *got, const cs_npy *want) {
    size_t n = (size_t)cs_npy_count(want);
    double d = max_diff(got, want->data, n);
    print_message("  %-34s max|diff| = %.2e\n", what, d);
    if (d > g_worst || d != d) g_worst = d;
    if (!(d <= TOL)) fail_msg("%s: max|diff| %.3e > %.0e", what, d, TOL);
}

/* ---- gradient methods and Eigen*, at layer resolution ------------------ */

static const cs_cam_method GRAD_METHODS[] = {
    CS_CAM_METHOD_GRADCAM,  CS_CAM_METHOD_HIRESCAM, CS_CAM_METHOD_GRADCAMPP,
    CS_CAM_METHOD_XGRADCAM, CS_CAM_METHOD_LAYERCAM, CS_CAM_METHOD_GRADCAM_ELEMENTWISE,
    CS_CAM_METHOD_EIGENCAM, CS_CAM_METHOD_EIGENGRADCAM,
};

static void check_set(const char *set) {
    char name[128];
    snprintf(name, sizeof name, "%s_act", set);
    cs_npy act = load(name);
    snprintf(name, sizeof name, "%s_grad", set);
    cs_npy grad = load(name);
    int n = (int)act.dims[0], c = (int)act.dims[1], h = (int)act.dims[2], w = (int)act.dims[3];
    size_t hw = (size_t)h * w;
    float *map = calloc((size_t)n * hw, sizeof(float));
    float *raw = calloc((size_t)n * hw, sizeof(float));
    float *map2 = calloc((size_t)n * hw, sizeof(float));
    for (size_t i = 0; i < sizeof GRAD_METHODS / sizeof GRAD_METHODS[0]; i++) {
        cs_cam_method m = GRAD_METHODS[i];
        for (int es = 0; es < 2; es++) {
            if (es && (m == CS_CAM_METHOD_EIGENCAM || m == CS_CAM_METHOD_EIGENGRADCAM)) continue;
            cs_cam_options opt = cs_cam_default_options();
            opt.eigen_smooth = es;
            cs_error err = {0};
            cs_status st = cs_cam_compute(m, act.data, grad.data, n, c, h, w, &opt, map, &err);
            if (st) fail_msg("%s: %s", cs_cam_method_name(m), err.msg);
            snprintf(name, sizeof name, "%s_%s_es%d", set, cs_cam_method_name(m), es);
            cs_npy want = load(name);
            expect_close(name, map, &want);
            cs_npy_free(&want);
            if (es) continue;
            /* The raw map, and compute_ex writing both at once. */
            assert_int_equal(cs_cam_compute_raw(m, act.data, grad.data, n, c, h, w, NULL, raw, &err),
                             CS_OK);
            snprintf(name, sizeof name, "%s_%s_raw", set, cs_cam_method_name(m));
            want = load(name);
            double scale = 0;
            for (size_t k = 0; k < (size_t)n * hw; k++)
                scale = fabs(want.data[k]) > scale ? fabs(want.data[k]) : scale;
            double d = max_diff(raw, want.data, (size_t)n * hw) / (scale > 0 ? scale : 1);
            if (!(d <= TOL)) fail_msg("%s: relative max|diff| %.3e", name, d);
            cs_npy_free(&want);
            assert_int_equal(cs_cam_compute_ex(m, act.data, grad.data, n, c, h, w, NULL, NULL, raw,
                                               map2, &err),
                             CS_OK);
            cs_cam_compute(m, act.data, grad.data, n, c, h, w, NULL, map, &err);
            assert_memory_equal(map, map2, (size_t)n * hw * sizeof(float));
        }
    }
    free(map);
    free(raw);
    free(map2);
    cs_npy_free(&act);
    cs_npy_free(&grad);
}

/* h*w (49) <= c (64): hw x hw Gram, Lanczos restarted (49 > 32 steps). */
static void test_methods_main(void **state) {
    (void)state;
    check_set("main");
}

/* c (16) < h*w (81), signed activations: c x c Gram. */
static void test_methods_wide(void **state) {
    (void)state;
    check_set("wide");
}

static void test_eigencam_big(void **state) {
    (void)state;
    cs_npy act = load("big_act"), want = load("big_eigencam");
    int c = (int)act.dims[1], h = (int)act.dims[2], w = (int)act.dims[3];
    float *map = malloc((size_t)h * w * sizeof(float));
    cs_error err;
    assert_int_equal(cs_cam_compute(CS_CAM_METHOD_EIGENCAM, act.data, NULL, 1, c, h, w, NULL, map,
                                    &err),
                     CS_OK);
    expect_close("big_eigencam (256 x 14x14)", map, &want);
    free(map);
    cs_npy_free(&act);
    cs_npy_free(&want);
}

/* A lent scratch buffer of exactly the advertised size gives the same maps
 * (the arena aborts if the sizing is short, so this also checks it). */
static void test_scratch(void **state) {
    (void)state;
    const char *sets[] = {"main", "wide"};
    for (int si = 0; si < 2; si++) {
        char name[64];
        snprintf(name, sizeof name, "%s_act", sets[si]);
        cs_npy act = load(name);
        snprintf(name, sizeof name, "%s_grad", sets[si]);
        cs_npy grad = load(name);
        int n = (int)act.dims[0], c = (int)act.dims[1], h = (int)act.dims[2], w = (int)act.dims[3];
        size_t bytes_map = (size_t)n * h * w * sizeof(float);
        float *a = malloc(bytes_map), *b = malloc(bytes_map);
        for (size_t i = 0; i < sizeof GRAD_METHODS / sizeof GRAD_METHODS[0]; i++) {
            for (int es = 0; es < 2; es++) {
                cs_cam_options opt = cs_cam_default_options();
                opt.eigen_smooth = es;
                size_t bytes = cs_cam_scratch_bytes(GRAD_METHODS[i], n, c, h, w, &opt, NULL);
                assert_true(bytes > 0);
                assert_int_equal(cs_cam_compute(GRAD_METHODS[i], act.data, grad.data, n, c, h, w,
                                                &opt, a, NULL),
                                 CS_OK);
                opt.scratch_bytes = bytes;
                opt.scratch = malloc(opt.scratch_bytes);
                assert_int_equal(cs_cam_compute(GRAD_METHODS[i], act.data, grad.data, n, c, h, w,
                                                &opt, b, NULL),
                                 CS_OK);
                free(opt.scratch);
                assert_memory_equal(a, b, bytes_map);
            }
        }
        free(a);
        free(b);
        cs_npy_free(&act);
        cs_npy_free(&grad);
    }
    assert_int_equal(cs_cam_scratch_bytes(CS_CAM_METHOD_GRADCAM, 0, 1, 2, 2, NULL, NULL), 0);
}

/* ---- resize and aggregation --------------------------------------------- */

static void test_resize(void **state) {
    (void)state;
    for (int i = 0; i < 7; i++) {
        char name[64];
        snprintf(name, sizeof name, "resize%d_src", i);
        cs_npy src = load(name);
        snprintf(name, sizeof name, "resize%d_dst", i);
        cs_npy dst = load(name);
        int sh = (int)src.dims[0], sw = (int)src.dims[1], dh = (int)dst.dims[0],
            dw = (int)dst.dims[1];
        float *out = malloc((size_t)dh * dw * sizeof(float));
        cs_error err;
        assert_int_equal(cs_cam_resize(src.data, sh, sw, out, dh, dw, &err), CS_OK);
        snprintf(name, sizeof name, "resize %dx%d -> %dx%d", sh, sw, dh, dw);
        expect_close(name, out, &dst);
        free(out);
        cs_npy_free(&src);
        cs_npy_free(&dst);
    }
    float one = 3.5f, out4[4];
    assert_int_equal(cs_cam_resize(&one, 1, 1, out4, 2, 2, NULL), CS_OK);
    for (int i = 0; i < 4; i++) assert_true(out4[i] == 3.5f);
    cs_error err;
    assert_int_equal(cs_cam_resize(&one, 0, 1, out4, 2, 2, &err), CS_EINVAL);
    assert_int_equal(cs_cam_resize(&one, 1, 1, out4, 2, -1, &err), CS_EINVAL);
}

static void test_aggregate(void **state) {
    (void)state;
    cs_npy ma = load("main_act"), mg = load("main_grad"), wa = load("wide_act"),
           wg = load("wide_grad");
    float raw0[2 * 7 * 7], raw1[2 * 9 * 9], out[2 * 30 * 32];
    cs_error err;
    assert_int_equal(cs_cam_compute_raw(CS_CAM_METHOD_GRADCAM, ma.data, mg.data, 2, 64, 7, 7, NULL,
                                        raw0, &err),
                     CS_OK);
    assert_int_equal(cs_cam_compute_raw(CS_CAM_METHOD_GRADCAM, wa.data, wg.data, 2, 16, 9, 9, NULL,
                                        raw1, &err),
                     CS_OK);
    const float *raws[2] = {raw0, raw1};
    int hs[2] = {7, 9}, ws[2] = {7, 9};
    assert_int_equal(cs_cam_aggregate(raws, hs, ws, 2, 2, 30, 32, out, &err), CS_OK);
    cs_npy want = load("agg2");
    expect_close("aggregate 2 layers -> 30x32", out, &want);
    cs_npy_free(&want);
    assert_int_equal(cs_cam_aggregate(raws, hs, ws, 1, 2, 28, 28, out, &err), CS_OK);
    want = load("agg1");
    expect_close("aggregate 1 layer -> 28x28", out, &want);
    cs_npy_free(&want);
    assert_int_equal(cs_cam_aggregate(raws, hs, ws, 0, 2, 28, 28, out, &err), CS_EINVAL);
    cs_npy_free(&ma);
    cs_npy_free(&mg);
    cs_npy_free(&wa);
    cs_npy_free(&wg);
}

/* ---- ScoreCAM / AblationCAM with closed-form "models" ------------------- */

typedef struct toy {
    cs_npy W, bias;     /* ScoreCAM: logits = W . x + bias */
    cs_npy V, vb;       /* AblationCAM: logits = V . mean_hw(relu(A)) + vb */
    const float *act;   /* AblationCAM: the unmodified activations */
    cs_npy values;      /* AblationCAM: expected ablation value per channel */
    int c, hw, in_size; /* item sizes */
    int calls, max_k, fail_at;
    int checked_values;
    int items; /* every item scored, over all calls */
} toy;

static cs_status toy_inputs(void *ctx, const float *items, int k, int image, int cls, float *out,
                            cs_error *err) {
    toy *t = ctx;
    if (++t->calls == t->fail_at) return cs_errorf(err, CS_EBACKEND, "toy engine failed");
    if (k > t->max_k) t->max_k = k;
    t->items += k;
    const float *wt = t->W.data + (size_t)cls * t->in_size;
    for (int j = 0; j < k; j++) {
        double s = t->bias.data[cls];
        for (int i = 0; i < t->in_size; i++) s += (double)items[(size_t)j * t->in_size + i] * wt[i];
        out[j] = (float)s;
    }
    (void)image;
    return CS_OK;
}

static cs_status toy_head(void *ctx, const float *items, int k, int image, int cls, float *out,
                          cs_error *err) {
    toy *t = ctx;
    (void)err;
    if (k > t->max_k) t->max_k = k;
    t->items += k;
    const float *orig = t->act + (size_t)image * t->c * t->hw;
    for (int j = 0; j < k; j++) {
        const float *a = items + (size_t)j * t->c * t->hw;
        double s = t->vb.data[cls];
        for (int ci = 0; ci < t->c; ci++) {
            double m = 0;
            for (int r = 0; r < t->hw; r++) {
                float v = a[(size_t)ci * t->hw + r];
                m += v > 0 ? v : 0;
            }
            s += m / t->hw * t->V.data[(size_t)cls * t->c + ci];
            /* An ablated channel is constant and differs from the original:
             * its value must be AblationLayer's. */
            if (k > 1 && memcmp(a + (size_t)ci * t->hw, orig + (size_t)ci * t->hw,
                                (size_t)t->hw * sizeof(float)) != 0) {
                float want = t->values.data[(size_t)image * t->c + ci];
                if (a[(size_t)ci * t->hw] != want)
                    return cs_errorf(err, CS_EINTERNAL, "image %d channel %d ablated to %g, want %g",
                                     image, ci, a[(size_t)ci * t->hw], want);
                t->checked_values++;
            }
        }
        out[j] = (float)s;
    }
    return CS_OK;
}

static void test_scorecam(void **state) {
    (void)state;
    cs_npy act = load("main_act"), inp = load("score_input"), cls = load("score_class");
    toy t = {0};
    t.W = load("score_W");
    t.bias = load("score_bias");
    int n = (int)act.dims[0], c = (int)act.dims[1], h = (int)act.dims[2], w = (int)act.dims[3];
    int classes[2] = {(int)cls.data[0], (int)cls.data[1]};
    t.in_size = (int)(inp.dims[1] * inp.dims[2] * inp.dims[3]);
    cs_cam_forward fwd = {.ctx = &t, .score_inputs = toy_inputs, .input = inp.data,
                          .in_c = (int)inp.dims[1], .in_h = (int)inp.dims[2],
                          .in_w = (int)inp.dims[3], .class_idx = classes};
    float map[2 * 49];
    cs_error err = {0};
    cs_npy want = load("scorecam");
    assert_int_equal(cs_cam_compute_ex(CS_CAM_METHOD_SCORECAM, act.data, NULL, n, c, h, w, NULL,
                                       &fwd, NULL, map, &err),
                     CS_OK);
    expect_close("scorecam (batch 16)", map, &want);
    assert_int_equal(t.max_k, 16);
    assert_int_equal(t.calls, 2 * 4);
    /* The batch size only changes how work is split. */
    cs_cam_options opt = cs_cam_default_options();
    opt.batch_size = 5;
    t.calls = t.max_k = 0;
    assert_int_equal(cs_cam_compute_ex(CS_CAM_METHOD_SCORECAM, act.data, NULL, n, c, h, w, &opt,
                                       &fwd, NULL, map, &err),
                     CS_OK);
    expect_close("scorecam (batch 5)", map, &want);
    assert_int_equal(t.max_k, 5);
    opt.scratch_bytes = cs_cam_scratch_bytes(CS_CAM_METHOD_SCORECAM, n, c, h, w, &opt, &fwd);
    opt.scratch = malloc(opt.scratch_bytes);
    assert_int_equal(cs_cam_compute_ex(CS_CAM_METHOD_SCORECAM, act.data, NULL, n, c, h, w, &opt,
                                       &fwd, NULL, map, &err),
                     CS_OK);
    expect_close("scorecam (batch 5, lent scratch)", map, &want);
    free(opt.scratch);
    opt.scratch = NULL;
    opt.scratch_bytes = 0;
    /* A failing callback aborts with its own message, prefixed. */
    t.calls = 0;
    t.fail_at = 3;
    assert_int_equal(cs_cam_compute_ex(CS_CAM_METHOD_SCORECAM, act.data, NULL, n, c, h, w, &opt,
                                       &fwd, NULL, map, &err),
                     CS_EBACKEND);
    assert_non_null(strstr(err.msg, "toy engine failed"));
    assert_non_null(strstr(err.msg, "scorecam"));
    /* ScoreCAM without callbacks is refused by the plain entry points. */
    assert_int_equal(cs_cam_compute(CS_CAM_METHOD_SCORECAM, act.data, NULL, n, c, h, w, NULL, map,
                                    &err),
                     CS_EINVAL);
    assert_int_equal(cs_cam_compute_ex(CS_CAM_METHOD_SCORECAM, act.data, NULL, n, c, h, w, NULL,
                                       NULL, NULL, map, &err),
                     CS_EINVAL);
    cs_npy_free(&want);
    cs_npy_free(&act);
    cs_npy_free(&inp);
    cs_npy_free(&cls);
    cs_npy_free(&t.W);
    cs_npy_free(&t.bias);
}

/* UpsamplingBilinear2d (align_corners=True) of one channel, written out
 * here so the reference below does not share the module's code. */
static void upsample_ac(const float *a, int h, int w, double *out, int H, int W) {
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            double sy = H > 1 ? (double)y * (h - 1) / (H - 1) : 0, sx = W > 1 ? (double)x * (w - 1) / (W - 1) : 0;
            int y0 = (int)sy, x0 = (int)sx, y1 = y0 + 1 < h ? y0 + 1 : y0, x1 = x0 + 1 < w ? x0 + 1 : x0;
            double fy = sy - y0, fx = sx - x0;
            out[y * W + x] = (1 - fy) * ((1 - fx) * a[y0 * w + x0] + fx * a[y0 * w + x1]) +
                             fy * ((1 - fx) * a[y1 * w + x0] + fx * a[y1 * w + x1]);
        }
}

/* Channels that cannot change the map are not sent to the callbacks: a
 * constant channel's ScoreCAM mask is 0 (one forward serves them all), and
 * with min(A) == 0 ablating an all-zero channel changes nothing.  The maps
 * must still be the definitions', computed here channel by channel. */
static void test_forward_skips(void **state) {
    (void)state;
    cs_error err = {0};
    /* ScoreCAM: image 0 gets three all-zero channels and one at 0.25 */
    cs_npy act = load("main_act"), inp = load("score_input"), cls = load("score_class");
    toy t = {0};
    t.W = load("score_W");
    t.bias = load("score_bias");
    const int n = (int)act.dims[0], c = (int)act.dims[1], h = (int)act.dims[2], w = (int)act.dims[3];
    const int hw = h * w, ic = (int)inp.dims[1], ih = (int)inp.dims[2], iw = (int)inp.dims[3];
    t.in_size = ic * ih * iw;
    const int consts[4] = {3, 5, 10, 17};
    for (int q = 0; q < 4; q++)
        for (int r = 0; r < hw; r++) act.data[(size_t)consts[q] * hw + r] = consts[q] == 5 ? 0.25f : 0.f;
    int classes[2] = {(int)cls.data[0], (int)cls.data[1]};
    cs_cam_forward fwd = {.ctx = &t, .score_inputs = toy_inputs, .input = inp.data, .in_c = ic, .in_h = ih,
                          .in_w = iw, .class_idx = classes};
    float raw[2 * 49], map[2 * 49];
    assert_true(n == 2 && hw <= 49);
    assert_int_equal(cs_cam_compute_ex(CS_CAM_METHOD_SCORECAM, act.data, NULL, n, c, h, w, NULL, &fwd, raw, map,
                                       &err),
                     CS_OK);
    assert_int_equal(t.items, (c - 3) + c); /* image 0: one forward for its four constant channels */
    double *m = malloc((size_t)ih * iw * sizeof(double)), *sc = malloc((size_t)c * sizeof(double));
    float *item = malloc((size_t)t.in_size * sizeof(float));
    assert_true(m && sc && item);
    double worst = 0;
    for (int b = 0; b < n; b++) {
        const float *ab = act.data + (size_t)b * c * hw;
        double smax = -INFINITY;
        for (int ci = 0; ci < c; ci++) {
            upsample_ac(ab + (size_t)ci * hw, h, w, m, ih, iw);
            double mn = m[0], mx = m[0];
            for (int r = 1; r < ih * iw; r++) {
                mn = fmin(mn, m[r]);
                mx = fmax(mx, m[r]);
            }
            for (int ch = 0; ch < ic; ch++)
                for (int r = 0; r < ih * iw; r++)
                    item[ch * ih * iw + r] =
                        inp.data[(size_t)b * t.in_size + ch * ih * iw + r] * (float)((m[r] - mn) / (mx - mn + 1e-8));
            float s;
            assert_int_equal(toy_inputs(&t, item, 1, b, classes[b], &s, &err), CS_OK);
            sc[ci] = s;
            smax = fmax(smax, s);
        }
        double z = 0;
        for (int ci = 0; ci < c; ci++) z += exp(sc[ci] - smax);
        for (int r = 0; r < hw; r++) {
            double v = 0;
            for (int ci = 0; ci < c; ci++) v += exp(sc[ci] - smax) / z * ab[(size_t)ci * hw + r];
            worst = fmax(worst, fabs(fmax(v, 0) - raw[b * hw + r]) / (fabs(v) + 1e-3));
        }
    }
    printf("scorecam with constant channels: max relative |diff| from the definition %.3g\n", worst);
    assert_true(worst < 1e-4);

    /* AblationCAM on non-negative activations with three all-zero channels
     * in image 0: 1 + 61 items there, 1 + 64 in image 1 */
    cs_npy aact = load("abl_act");
    t.V = load("abl_V");
    t.vb = load("abl_vb");
    const int ac = (int)aact.dims[1], ahw = (int)(aact.dims[2] * aact.dims[3]);
    for (size_t i = 0; i < (size_t)n * ac * ahw; i++) aact.data[i] = aact.data[i] > 0 ? aact.data[i] : 0;
    for (int q = 0; q < 3; q++) memset(aact.data + (size_t)(q * 7 + 1) * ahw, 0, (size_t)ahw * sizeof(float));
    float *zeros = calloc((size_t)n * ac, sizeof(float)); /* min(A) == 0: every ablation writes 0 */
    assert_non_null(zeros);
    t.values.data = zeros;
    t.act = aact.data;
    t.c = ac;
    t.hw = ahw;
    t.items = 0;
    cs_cam_forward afwd = {.ctx = &t, .score_activations = toy_head, .class_idx = classes};
    assert_int_equal(cs_cam_compute_ex(CS_CAM_METHOD_ABLATIONCAM, aact.data, NULL, n, ac, (int)aact.dims[2],
                                       (int)aact.dims[3], NULL, &afwd, raw, map, &err),
                     CS_OK);
    assert_int_equal(t.items, (1 + ac - 3) + (1 + ac));
    float *ab2 = malloc((size_t)ac * ahw * sizeof(float));
    assert_non_null(ab2);
    worst = 0;
    for (int b = 0; b < n; b++) {
        const float *ab = aact.data + (size_t)b * ac * ahw;
        float o, s;
        assert_int_equal(toy_head(&t, ab, 1, b, classes[b], &o, &err), CS_OK);
        for (int r = 0; r < ahw; r++) {
            double v = 0;
            for (int ci = 0; ci < ac; ci++) {
                memcpy(ab2, ab, (size_t)ac * ahw * sizeof(float));
                memset(ab2 + (size_t)ci * ahw, 0, (size_t)ahw * sizeof(float));
                assert_int_equal(toy_head(&t, ab2, 1, b, classes[b], &s, &err), CS_OK);
                v += (double)((o - s) / o) * ab[(size_t)ci * ahw + r];
            }
            worst = fmax(worst, fabs(fmax(v, 0) - raw[b * ahw + r]) / (fabs(v) + 1e-3));
        }
    }
    printf("ablationcam with all-zero channels: max relative |diff| from the definition %.3g\n", worst);
    assert_true(worst < 1e-4);
    /* with negative activations an ablated channel gets min - (j+1) * 1e7,
     * not 0: an all-zero channel changes the score and is sent */
    cs_npy neg = load("abl_act"), values = load("abl_values");
    float *img1 = neg.data + (size_t)ac * ahw, amin = img1[0];
    for (size_t i = 0; i < (size_t)ac * ahw; i++) amin = fminf(amin, img1[i]);
    assert_true(amin < 0);
    memset(img1 + ahw, 0, (size_t)ahw * sizeof(float)); /* image 1, channel 1 */
    t.values = values;
    t.act = neg.data;
    t.items = 0;
    assert_int_equal(cs_cam_compute_ex(CS_CAM_METHOD_ABLATIONCAM, neg.data, NULL, n, ac, (int)aact.dims[2],
                                       (int)aact.dims[3], NULL, &afwd, raw, map, &err),
                     CS_OK);
    assert_int_equal(t.items, 2 * (1 + ac));
    cs_npy_free(&neg);
    cs_npy_free(&values);
    free(ab2);
    free(zeros);
    free(m);
    free(sc);
    free(item);
    cs_npy_free(&aact);
    cs_npy_free(&t.V);
    cs_npy_free(&t.vb);
    cs_npy_free(&act);
    cs_npy_free(&inp);
    cs_npy_free(&cls);
    cs_npy_free(&t.W);
    cs_npy_free(&t.bias);
}

static void test_ablationcam(void **state) {
    (void)state;
    cs_npy act = load("abl_act"), cls = load("score_class");
    toy t = {0};
    t.V = load("abl_V");
    t.vb = load("abl_vb");
    t.values = load("abl_values");
    t.act = act.data;
    int n = (int)act.dims[0], c = (int)act.dims[1], h = (int)act.dims[2], w = (int)act.dims[3];
    t.c = c;
    t.hw = h * w;
    int classes[2] = {(int)cls.data[0], (int)cls.data[1]};
    cs_cam_forward fwd = {.ctx = &t, .score_activations = toy_head, .class_idx = classes};
    float map[2 * 49];
    cs_error err = {0};
    cs_npy want = load("ablationcam");
    cs_status st = cs_cam_compute_ex(CS_CAM_METHOD_ABLATIONCAM, act.data, NULL, n, c, h, w, NULL,
                                     &fwd, NULL, map, &err);
    if (st) fail_msg("%s", err.msg);
    expect_close("ablationcam (batch 32)", map, &want);
    assert_int_equal(t.max_k, 32);
    assert_true(t.checked_values >= c); /* image 1's channels at least */
    cs_cam_options opt = cs_cam_default_options();
    opt.scratch_bytes = cs_cam_scratch_bytes(CS_CAM_METHOD_ABLATIONCAM, n, c, h, w, &opt, &fwd);
    opt.scratch = malloc(opt.scratch_bytes);
    assert_int_equal(cs_cam_compute_ex(CS_CAM_METHOD_ABLATIONCAM, act.data, NULL, n, c, h, w, &opt,
                                       &fwd, NULL, map, &err),
                     CS_OK);
    expect_close("ablationcam (lent scratch)", map, &want);
    free(opt.scratch);
    opt.scratch = NULL;
    opt.ratio_channels_to_ablate = 0.5;
    assert_int_equal(cs_cam_compute_ex(CS_CAM_METHOD_ABLATIONCAM, act.data, NULL, n, c, h, w, &opt,
                                       &fwd, NULL, map, &err),
                     CS_EUNSUPPORTED);
    /* A zero original score cannot be divided by. */
    float vb0[3] = {0, 0, 0};
    float *saved = t.vb.data;
    t.vb.data = vb0;
    float zeros[2 * 64 * 49] = {0};
    t.act = zeros;
    assert_int_equal(cs_cam_compute_ex(CS_CAM_METHOD_ABLATIONCAM, zeros, NULL, n, c, h, w, NULL,
                                       &fwd, NULL, map, &err),
                     CS_EINVAL);
    assert_non_null(strstr(err.msg, "score is 0"));
    t.vb.data = saved;
    cs_npy_free(&want);
    cs_npy_free(&act);
    cs_npy_free(&cls);
    cs_npy_free(&t.V);
    cs_npy_free(&t.vb);
    cs_npy_free(&t.values);
}

/* ---- names and bad input ------------------------------------------------- */

static void test_parse(void **state) {
    (void)state;
    static const struct {
        const char *name;
        cs_cam_method m;
    } ok[] = {
        {"gradcam", CS_CAM_METHOD_GRADCAM},
        {"GradCAM", CS_CAM_METHOD_GRADCAM},
        {"Grad-CAM", CS_CAM_METHOD_GRADCAM},
        {"hirescam", CS_CAM_METHOD_HIRESCAM},
        {"gradcam++", CS_CAM_METHOD_GRADCAMPP},
        {"gradcampp", CS_CAM_METHOD_GRADCAMPP},
        {"GradCAMPlusPlus", CS_CAM_METHOD_GRADCAMPP},
        {"XGradCAM", CS_CAM_METHOD_XGRADCAM},
        {"LayerCAM", CS_CAM_METHOD_LAYERCAM},
        {"GradCAMElementWise", CS_CAM_METHOD_GRADCAM_ELEMENTWISE},
        {"EigenCAM", CS_CAM_METHOD_EIGENCAM},
        {"eigen_grad_cam", CS_CAM_METHOD_EIGENGRADCAM},
        {"ScoreCAM", CS_CAM_METHOD_SCORECAM},
        {"AblationCAM", CS_CAM_METHOD_ABLATIONCAM},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        cs_cam_method m = CS_CAM_METHOD_COUNT;
        assert_int_equal(cs_cam_method_parse(ok[i].name, &m, NULL), CS_OK);
        assert_int_equal(m, ok[i].m);
    }
    for (int i = 0; i < CS_CAM_METHOD_COUNT; i++) {
        cs_cam_method m;
        assert_int_equal(cs_cam_method_parse(cs_cam_method_name((cs_cam_method)i), &m, NULL), CS_OK);
        assert_int_equal(m, i);
    }
    cs_error err = {0};
    cs_cam_method m;
    assert_int_equal(cs_cam_method_parse("fullgrad", &m, &err), CS_EINVAL);
    assert_non_null(strstr(err.msg, "unknown method 'fullgrad'; valid: gradcam, "));
    assert_non_null(strstr(err.msg, "ablationcam"));
    assert_int_equal(cs_cam_method_parse("", &m, &err), CS_EINVAL);
    assert_int_equal(cs_cam_method_parse(NULL, &m, &err), CS_EINVAL);
    char longname[300];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(cs_cam_method_parse(longname, &m, &err), CS_EINVAL);
    assert_string_equal(cs_cam_method_name(CS_CAM_METHOD_COUNT), "?");
}

static void test_bad_shapes(void **state) {
    (void)state;
    float a[64] = {0}, g[64] = {0}, out[64];
    cs_error err = {0};
    const int shapes[][4] = {{0, 1, 2, 2}, {1, 0, 2, 2}, {1, 1, 0, 2}, {1, 1, 2, -1}};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(cs_cam_compute(CS_CAM_METHOD_GRADCAM, a, g, shapes[i][0], shapes[i][1],
                                        shapes[i][2], shapes[i][3], NULL, out, &err),
                         CS_EINVAL);
        assert_non_null(strstr(err.msg, "bad layer shape"));
    }
    for (int m = 0; m < CS_CAM_METHOD_COUNT; m++) {
        assert_int_equal(cs_cam_compute_ex((cs_cam_method)m, a, g, 2, 4, 1, 1, NULL, NULL, out,
                                           NULL, &err),
                         CS_EINVAL);
        assert_non_null(strstr(err.msg, "layer has no spatial extent"));
    }
    assert_int_equal(cs_cam_compute(CS_CAM_METHOD_GRADCAM, a, NULL, 1, 4, 2, 2, NULL, out, &err),
                     CS_EINVAL);
    assert_non_null(strstr(err.msg, "gradients"));
    assert_int_equal(cs_cam_compute(CS_CAM_METHOD_EIGENCAM, a, NULL, 1, 4, 2, 2, NULL, out, &err),
                     CS_OK); /* EigenCAM needs no gradients; all-zero input is fine */
    for (int i = 0; i < 4; i++) assert_true(out[i] == 0.f);
    assert_int_equal(cs_cam_compute(CS_CAM_METHOD_GRADCAM, NULL, g, 1, 4, 2, 2, NULL, out, &err),
                     CS_EINVAL);
    assert_int_equal(cs_cam_compute(CS_CAM_METHOD_GRADCAM, a, g, 1, 4, 2, 2, NULL, NULL, &err),
                     CS_EINVAL);
    assert_int_equal(cs_cam_compute((cs_cam_method)99, a, g, 1, 4, 2, 2, NULL, out, &err),
                     CS_EINVAL);
    assert_int_equal(cs_cam_compute(CS_CAM_METHOD_GRADCAM, a, g, 1, 4, 2, 2, NULL, out, NULL),
                     CS_OK); /* a NULL cs_error is allowed */
}

/* Constant or degenerate input must not produce NaN (1e-7 guards). */
static void test_degenerate(void **state) {
    (void)state;
    enum { C = 8, HW = 16 };
    float a[C * HW], g[C * HW], out[HW];
    for (int i = 0; i < C * HW; i++) {
        a[i] = 1.f;
        g[i] = 0.5f;
    }
    for (int m = 0; m < CS_CAM_METHOD_SCORECAM; m++) {
        assert_int_equal(cs_cam_compute((cs_cam_method)m, a, g, 1, C, 4, 4, NULL, out, NULL), CS_OK);
        for (int r = 0; r < HW; r++) assert_true(out[r] == out[r] && out[r] >= 0 && out[r] <= 1);
    }
    /* Rank one: the projection is exactly the single pattern, positive where
     * the activations are large. */
    for (int ci = 0; ci < C; ci++)
        for (int r = 0; r < HW; r++) a[ci * HW + r] = (float)(ci + 1) * (float)r;
    assert_int_equal(cs_cam_compute(CS_CAM_METHOD_EIGENCAM, a, NULL, 1, C, 4, 4, NULL, out, NULL),
                     CS_OK);
    for (int r = 0; r < HW; r++) assert_true(fabs(out[r] - (r < 8 ? 0.0 : (r - 7.5) / 7.5)) < 1e-5);
    /* NaN activations become 0 in the projection, as in get_2d_projection. */
    a[3] = NAN;
    assert_int_equal(cs_cam_compute(CS_CAM_METHOD_EIGENCAM, a, NULL, 1, C, 4, 4, NULL, out, NULL),
                     CS_OK);
    for (int r = 0; r < HW; r++) assert_true(out[r] == out[r]);
}

/* Per-request cost at ResNet-50 layer4 (2048 x 7 x 7); printed, and bounded
 * loosely so that a shared, sanitised build still passes. */
static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void test_cost(void **state) {
    (void)state;
    const int c = 2048, h = 7, w = 7;
    float *a = malloc((size_t)c * h * w * sizeof(float)), *g = malloc((size_t)c * h * w * sizeof(float));
    float out[49];
    uint32_t s = 1;
    for (int i = 0; i < c * h * w; i++) {
        s = s * 1664525u + 1013904223u;
        a[i] = (float)(s >> 8) / 16777216.f;
        g[i] = a[i] - 0.5f;
    }
    const cs_cam_method ms[] = {CS_CAM_METHOD_GRADCAM, CS_CAM_METHOD_EIGENCAM};
    for (int i = 0; i < 2; i++) {
        int reps = 20;
        double t0 = now_ms();
        for (int r = 0; r < reps; r++)
            assert_int_equal(cs_cam_compute(ms[i], a, g, 1, c, h, w, NULL, out, NULL), CS_OK);
        double ms_each = (now_ms() - t0) / reps;
        print_message("  %-12s 2048x7x7: %.3f ms per map\n", cs_cam_method_name(ms[i]), ms_each);
        assert_true(ms_each < 200);
    }
    free(a);
    free(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_methods_main), cmocka_unit_test(test_methods_wide),
        cmocka_unit_test(test_eigencam_big), cmocka_unit_test(test_scratch),
        cmocka_unit_test(test_resize),       cmocka_unit_test(test_aggregate),
        cmocka_unit_test(test_scorecam),     cmocka_unit_test(test_ablationcam),
        cmocka_unit_test(test_forward_skips),
        cmocka_unit_test(test_parse),        cmocka_unit_test(test_bad_shapes),
        cmocka_unit_test(test_degenerate),   cmocka_unit_test(test_cost),
    };
    int failed = cmocka_run_group_tests_name("cam", tests, NULL, NULL);
    print_message("largest difference from the references: %.2e (tolerance %.0e)\n", g_worst, TOL);
    return failed;
}
