/* The CAM methods of pytorch-grad-cam over one layer, plus its scaling and
 * multi-layer aggregation.  Per image b, with A = act[b], G = grad[b] (c x hw
 * channel-major) and sums over the hw spatial positions:
 *
 *   GradCAM      w_c = mean(G_c)                       grad_cam.py
 *   GradCAM++    w_c = sum(max(G,0) * aij),            grad_cam_plusplus.py
 *                aij = G^2 / (2 G^2 + sum(A_c) G^3 + 1e-6), 0 where G == 0
 *   XGradCAM     w_c = sum(G * A) / (sum(A_c) + 1e-7)  xgrad_cam.py
 *   ScoreCAM, AblationCAM: w_c from extra forwards (forward.c)
 *     cam = sum_c w_c A_c       (base_cam.get_cam_image)
 *   HiResCAM     cam = sum_c G*A                       hirescam.py
 *   LayerCAM     cam = sum_c max(G,0)*A                layer_cam.py
 *   ElementWise  cam = sum_c max(G*A, 0)               grad_cam_elementwise.py
 *   EigenCAM     cam = P(A)                            eigen_cam.py
 *   EigenGradCAM cam = P(G*A)                          eigen_grad_cam.py
 * With eigen_smooth the channel sum of the other methods becomes P(.) of the
 * same c x hw product (P = get_2d_projection, eigen.c).  Then, for every
 * method, raw = max(cam, 0) (base_cam.compute_cam_per_layer) and
 * map = scale(raw) (utils/image.py scale_cam_image).
 *
 * Products are formed in float as NumPy does on float32 arrays; reductions
 * accumulate in double, which is at least as close to the exact value as
 * NumPy's float32 pairwise sums. */
#include "cam_internal.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const METHOD_NAMES[CS_CAM_METHOD_COUNT] = {
    "gradcam",  "hirescam",     "gradcampp", "xgradcam",    "layercam",
    "gradcamelementwise", "eigencam", "eigengradcam", "scorecam", "ablationcam",
};

static const struct {
    const char *alias;
    cs_cam_method m;
} ALIASES[] = {
    {"gradcam++", CS_CAM_METHOD_GRADCAMPP},
    {"gradcamplusplus", CS_CAM_METHOD_GRADCAMPP},
};

const char *cs_cam_method_name(cs_cam_method m) {
    return (unsigned)m < CS_CAM_METHOD_COUNT ? METHOD_NAMES[m] : "?";
}

const char *cs_cam_method_list(void) {
    return "gradcam, hirescam, gradcam++ (gradcampp), xgradcam, layercam, "
           "gradcamelementwise, eigencam, eigengradcam, scorecam, ablationcam";
}

cs_status cs_cam_method_parse(const char *name, cs_cam_method *out, cs_error *err) {
    if (!name) return cs_errorf(err, CS_EINVAL, "no method given; valid: %s", cs_cam_method_list());
    /* Normalise "Grad-CAM++", "grad_cam", "GradCAMPlusPlus" to one key. */
    char key[64];
    size_t k = 0;
    for (const char *p = name; *p; p++) {
        if (*p == '-' || *p == '_' || *p == ' ') continue;
        if (k + 1 >= sizeof key) goto unknown;
        key[k++] = (char)tolower((unsigned char)*p);
    }
    key[k] = '\0';
    for (int i = 0; i < CS_CAM_METHOD_COUNT; i++)
        if (strcmp(key, METHOD_NAMES[i]) == 0) {
            *out = (cs_cam_method)i;
            return CS_OK;
        }
    for (size_t i = 0; i < sizeof ALIASES / sizeof ALIASES[0]; i++)
        if (strcmp(key, ALIASES[i].alias) == 0) {
            *out = ALIASES[i].m;
            return CS_OK;
        }
unknown:
    return cs_errorf(err, CS_EINVAL, "unknown method '%.64s'; valid: %s", name,
                     cs_cam_method_list());
}

int cs_cam_method_uses_gradients(cs_cam_method m) {
    return m != CS_CAM_METHOD_EIGENCAM && m != CS_CAM_METHOD_SCORECAM &&
           m != CS_CAM_METHOD_ABLATIONCAM;
}

int cs_cam_method_needs_forward(cs_cam_method m) {
    return m == CS_CAM_METHOD_SCORECAM || m == CS_CAM_METHOD_ABLATIONCAM;
}

cs_cam_options cs_cam_default_options(void) {
    cs_cam_options o;
    memset(&o, 0, sizeof o);
    o.ratio_channels_to_ablate = 1.0;
    return o;
}

cs_status cam_arena_init(cam_arena *a, const cs_cam_options *opt, size_t need, cs_error *err) {
    memset(a, 0, sizeof *a);
    if (opt && opt->scratch && opt->scratch_bytes >= need) {
        a->base = opt->scratch;
        a->size = opt->scratch_bytes;
    } else {
        a->base = malloc(need);
        if (!a->base) return cs_errorf(err, CS_ENOMEM, "cam: cannot allocate %zu bytes", need);
        a->size = need;
        a->owned = 1;
    }
    /* Start carving at an aligned address; need includes CS_CAM_ALIGN spare
     * bytes for this (cs_cam_scratch_bytes). */
    a->used = (size_t)(-(uintptr_t)a->base & (CS_CAM_ALIGN - 1));
    return CS_OK;
}

void *cam_arena_take(cam_arena *a, size_t bytes) {
    size_t n = cam_round(bytes);
    if (a->used + n > a->size) abort(); /* sizing bug: cs_cam_scratch_bytes is wrong */
    void *p = a->base + a->used;
    a->used += n;
    return p;
}

void cam_arena_release(cam_arena *a) {
    if (a->owned) free(a->base);
    memset(a, 0, sizeof *a);
}

int cs_cam_forward_batch(cs_cam_method m, const cs_cam_options *opt) {
    if (opt && opt->batch_size > 0) return opt->batch_size;
    return m == CS_CAM_METHOD_SCORECAM ? 16 : 32;
}

size_t cs_cam_scratch_bytes(cs_cam_method method, int n, int c, int h, int w,
                            const cs_cam_options *opt, const cs_cam_forward *fwd) {
    if (n <= 0 || c <= 0 || h <= 0 || w <= 0) return 0;
    int hw = h * w;
    int eigen = method == CS_CAM_METHOD_EIGENCAM || method == CS_CAM_METHOD_EIGENGRADCAM ||
                (opt && opt->eigen_smooth);
    size_t bytes = cam_round((size_t)c * sizeof(float)) + cam_round((size_t)hw * sizeof(int)) +
                   cam_round((size_t)hw * sizeof(double)) +
                   cam_round((size_t)4 * hw * sizeof(float));
    if (eigen) bytes += cam_round((size_t)c * hw * sizeof(float)) + cam_project_bytes(c, hw);
    if (method == CS_CAM_METHOD_SCORECAM && fwd)
        bytes += cam_scorecam_bytes(c, fwd, cs_cam_forward_batch(method, opt));
    if (method == CS_CAM_METHOD_ABLATIONCAM)
        bytes += cam_ablation_bytes(c, hw, cs_cam_forward_batch(method, opt));
    return bytes + CS_CAM_ALIGN; /* room to align the start of a lent buffer */
}

void cam_weighted(const float *act, const float *wts, int c, int hw, int eigen_smooth,
                  float *raw, cam_arena *a) {
    size_t mark = a->used;
    if (eigen_smooth) {
        float *x = cam_arena_take(a, (size_t)c * hw * sizeof(float));
        for (int ci = 0; ci < c; ci++)
            for (int r = 0; r < hw; r++) x[(size_t)ci * hw + r] = wts[ci] * act[(size_t)ci * hw + r];
        cam_project_2d(x, c, hw, raw, a);
        for (int r = 0; r < hw; r++) raw[r] = raw[r] > 0 ? raw[r] : 0;
    } else {
        double *acc = cam_arena_take(a, (size_t)hw * sizeof(double));
        memset(acc, 0, (size_t)hw * sizeof(double));
        /* Four channels per pass over acc: a quarter of the loads and stores
         * of the accumulator row, which is what bounds this loop. */
        int ci = 0;
        for (; ci + 4 <= c; ci += 4) {
            const float *a0 = act + (size_t)ci * hw, *a1 = a0 + hw, *a2 = a1 + hw, *a3 = a2 + hw;
            const float w0 = wts[ci], w1 = wts[ci + 1], w2 = wts[ci + 2], w3 = wts[ci + 3];
            for (int r = 0; r < hw; r++)
                acc[r] += ((double)(w0 * a0[r]) + (w1 * a1[r])) + ((double)(w2 * a2[r]) + (w3 * a3[r]));
        }
        for (; ci < c; ci++) {
            const float *ar = act + (size_t)ci * hw;
            const float wc = wts[ci];
            for (int r = 0; r < hw; r++) acc[r] += wc * ar[r];
        }
        for (int r = 0; r < hw; r++) raw[r] = acc[r] > 0 ? (float)acc[r] : 0.f;
    }
    a->used = mark;
}

/* max(v, 0) without a branch: gradients' signs are random, and a compare
 * and jump per element mispredicts half the time.  Exact: v + |v| is 2v or
 * 0, and halving is exact; NaN stays NaN as with np.maximum. */
static inline float relu_f(float v) {
    return (v + fabsf(v)) * 0.5f;
}

/* Sums with four partial accumulators: the reductions are short (h*w) and a
 * single double accumulator would serialise on the add latency. */
static double sum_f(const float *x, int n) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += x[i];
        s1 += x[i + 1];
        s2 += x[i + 2];
        s3 += x[i + 3];
    }
    for (; i < n; i++) s0 += x[i];
    return (s0 + s1) + (s2 + s3);
}

/* sum(x * y) with the products rounded to float, as NumPy forms g * a. */
static double dot_f(const float *x, const float *y, int n) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += x[i] * y[i];
        s1 += x[i + 1] * y[i + 1];
        s2 += x[i + 2] * y[i + 2];
        s3 += x[i + 3] * y[i + 3];
    }
    for (; i < n; i++) s0 += x[i] * y[i];
    return (s0 + s1) + (s2 + s3);
}

/* Channel weights of the gradient methods that have them. */
static void grad_weights(cs_cam_method m, const float *act, const float *grad, int c, int hw,
                         float *wts, int *pos) {
    for (int ci = 0; ci < c; ci++) {
        const float *g = grad + (size_t)ci * hw, *ar = act + (size_t)ci * hw;
        double s = 0;
        if (m == CS_CAM_METHOD_GRADCAM) {
            s = sum_f(g, hw) / hw;
        } else if (m == CS_CAM_METHOD_GRADCAMPP) {
            /* Eq. 19 of arXiv:1710.11063 as pytorch-grad-cam writes it.
             * In double: with signed activations the denominator can
             * nearly cancel, and float32 (pytorch-grad-cam's) then loses
             * ~1e-5 of the normalised map. */
            const double sa = sum_f(ar, hw);
            /* max(G,0) * aij is 0 wherever G <= 0 (aij := 0 at G == 0), so
             * only positive gradients are visited; they are gathered first
             * without a branch, since their signs are random. */
            int np = 0;
            for (int r = 0; r < hw; r++) {
                pos[np] = r;
                np += g[r] > 0;
            }
            for (int i = 0; i < np; i++) {
                double g1 = g[pos[i]];
                double g2 = g1 * g1, g3 = g2 * g1;
                s += g1 * (g2 / (2 * g2 + sa * g3 + 1e-6));
            }
        } else { /* XGradCAM; sum(A_c) + eps in float32 as broadcast by NumPy */
            s = dot_f(g, ar, hw) / ((float)sum_f(ar, hw) + 1e-7);
        }
        wts[ci] = (float)s;
    }
}

/* One channel row of the elementwise methods' x = f(G, A), in float as
 * NumPy forms it; the switch sits outside the loops. */
static void elementwise_row(cs_cam_method m, const float *ar, const float *g, float *x, int hw) {
    switch (m) {
    case CS_CAM_METHOD_EIGENCAM:
        memcpy(x, ar, (size_t)hw * sizeof(float));
        break;
    case CS_CAM_METHOD_LAYERCAM:
        for (int r = 0; r < hw; r++) x[r] = relu_f(g[r]) * ar[r];
        break;
    case CS_CAM_METHOD_GRADCAM_ELEMENTWISE:
        for (int r = 0; r < hw; r++) x[r] = relu_f(g[r] * ar[r]);
        break;
    default: /* HiResCAM, EigenGradCAM */
        for (int r = 0; r < hw; r++) x[r] = g[r] * ar[r];
        break;
    }
}

/* The elementwise methods: x = f(G, A), cam = sum_c x or P(x). */
static void elementwise(cs_cam_method m, const float *act, const float *grad, int c, int hw,
                        int eigen, float *raw, cam_arena *a) {
    size_t mark = a->used;
    if (eigen) {
        float *x = cam_arena_take(a, (size_t)c * hw * sizeof(float));
        for (int ci = 0; ci < c; ci++)
            elementwise_row(m, act + (size_t)ci * hw, grad ? grad + (size_t)ci * hw : NULL,
                            x + (size_t)ci * hw, hw);
        cam_project_2d(x, c, hw, raw, a);
        for (int r = 0; r < hw; r++) raw[r] = raw[r] > 0 ? raw[r] : 0;
    } else {
        /* Rows go through a 4-row tile so that the double accumulator row
         * is read and written once per four channels. */
        double *acc = cam_arena_take(a, (size_t)hw * sizeof(double));
        float *tile = cam_arena_take(a, (size_t)4 * hw * sizeof(float));
        memset(acc, 0, (size_t)hw * sizeof(double));
        for (int c0 = 0; c0 < c; c0 += 4) {
            int k = c - c0 < 4 ? c - c0 : 4;
            for (int j = 0; j < k; j++)
                elementwise_row(m, act + (size_t)(c0 + j) * hw, grad + (size_t)(c0 + j) * hw,
                                tile + (size_t)j * hw, hw);
            for (int j = k; j < 4; j++) memset(tile + (size_t)j * hw, 0, (size_t)hw * sizeof(float));
            const float *t0 = tile, *t1 = t0 + hw, *t2 = t1 + hw, *t3 = t2 + hw;
            for (int r = 0; r < hw; r++)
                acc[r] += ((double)t0[r] + t1[r]) + ((double)t2[r] + t3[r]);
        }
        for (int r = 0; r < hw; r++) raw[r] = acc[r] > 0 ? (float)acc[r] : 0.f;
    }
    a->used = mark;
}

void cs_cam_scale(float *maps, int n, int hw) {
    for (int b = 0; b < n; b++) {
        float *m = maps + (size_t)b * hw;
        float mn = m[0];
        for (int r = 1; r < hw; r++) mn = m[r] < mn ? m[r] : mn;
        float mx = m[0] - mn;
        for (int r = 0; r < hw; r++) {
            m[r] -= mn;
            mx = m[r] > mx ? m[r] : mx;
        }
        const float den = 1e-7f + mx;
        for (int r = 0; r < hw; r++) m[r] /= den;
    }
}

cs_status cs_cam_compute_ex(cs_cam_method method, const float *act, const float *grad, int n,
                            int c, int h, int w, const cs_cam_options *opt,
                            const cs_cam_forward *fwd, float *raw_out, float *map_out,
                            cs_error *err) {
    if ((unsigned)method >= CS_CAM_METHOD_COUNT)
        return cs_errorf(err, CS_EINVAL, "cam: method %d out of range; valid: %s", (int)method,
                         cs_cam_method_list());
    const char *name = METHOD_NAMES[method];
    if (n <= 0 || c <= 0 || h <= 0 || w <= 0)
        return cs_errorf(err, CS_EINVAL, "%s: bad layer shape %dx%dx%dx%d (all must be > 0)",
                         name, n, c, h, w);
    if ((int64_t)h * w == 1)
        return cs_errorf(err, CS_EINVAL,
                         "%s: layer has no spatial extent (1x1); choose an earlier layer", name);
    if ((int64_t)c * h * w > INT32_MAX)
        return cs_errorf(err, CS_ELIMIT, "%s: layer too large (%dx%dx%d)", name, c, h, w);
    if (!act) return cs_errorf(err, CS_EINVAL, "%s: no activations", name);
    if (!grad && cs_cam_method_uses_gradients(method))
        return cs_errorf(err, CS_EINVAL, "%s: needs the layer gradients", name);
    if (!raw_out && !map_out) return cs_errorf(err, CS_EINVAL, "%s: no output buffer", name);
    if (cs_cam_method_needs_forward(method)) {
        if (!fwd || !fwd->class_idx)
            return cs_errorf(err, CS_EINVAL, "%s: needs forward callbacks and target classes",
                             name);
        if (method == CS_CAM_METHOD_SCORECAM &&
            (!fwd->score_inputs || !fwd->input || fwd->in_c <= 0 || fwd->in_h <= 0 ||
             fwd->in_w <= 0))
            return cs_errorf(err, CS_EINVAL, "scorecam: needs score_inputs and the model input");
        if (method == CS_CAM_METHOD_ABLATIONCAM && !fwd->score_activations)
            return cs_errorf(err, CS_EINVAL, "ablationcam: needs score_activations");
        if (method == CS_CAM_METHOD_ABLATIONCAM && opt && opt->ratio_channels_to_ablate != 1.0)
            return cs_errorf(err, CS_EUNSUPPORTED,
                             "ablationcam: ratio_channels_to_ablate %g (only 1.0 is supported)",
                             opt->ratio_channels_to_ablate);
    }
    const cs_cam_options defaults = cs_cam_default_options();
    if (!opt) opt = &defaults;
    const int hw = h * w;
    const int eigen = opt->eigen_smooth;
    const int batch = cs_cam_forward_batch(method, opt);

    cam_arena a;
    cs_status st = cam_arena_init(&a, opt, cs_cam_scratch_bytes(method, n, c, h, w, opt, fwd), err);
    if (st) return st;
    float *wts = cam_arena_take(&a, (size_t)c * sizeof(float));
    int *pos = cam_arena_take(&a, (size_t)hw * sizeof(int));
    float *dest = raw_out ? raw_out : map_out;
    for (int b = 0; b < n; b++) {
        const float *ab = act + (size_t)b * c * hw;
        const float *gb = grad ? grad + (size_t)b * c * hw : NULL;
        float *raw = dest + (size_t)b * hw;
        switch (method) {
        case CS_CAM_METHOD_GRADCAM:
        case CS_CAM_METHOD_GRADCAMPP:
        case CS_CAM_METHOD_XGRADCAM:
            grad_weights(method, ab, gb, c, hw, wts, pos);
            cam_weighted(ab, wts, c, hw, eigen, raw, &a);
            break;
        case CS_CAM_METHOD_SCORECAM:
            st = cam_scorecam_weights(act, b, c, h, w, fwd, batch, wts, &a, err);
            if (st) goto done;
            cam_weighted(ab, wts, c, hw, eigen, raw, &a);
            break;
        case CS_CAM_METHOD_ABLATIONCAM:
            st = cam_ablation_weights(act, b, c, h, w, fwd, batch, wts, &a, err);
            if (st) goto done;
            cam_weighted(ab, wts, c, hw, eigen, raw, &a);
            break;
        case CS_CAM_METHOD_EIGENCAM:
        case CS_CAM_METHOD_EIGENGRADCAM:
            elementwise(method, ab, gb, c, hw, 1, raw, &a);
            break;
        default:
            elementwise(method, ab, gb, c, hw, eigen, raw, &a);
            break;
        }
    }
    if (raw_out && map_out) memcpy(map_out, raw_out, (size_t)n * hw * sizeof(float));
    if (map_out) cs_cam_scale(map_out, n, hw);
done:
    cam_arena_release(&a);
    return st;
}

cs_status cs_cam_compute(cs_cam_method method, const float *act, const float *grad, int n, int c,
                         int h, int w, const cs_cam_options *opt, float *map_out, cs_error *err) {
    if (cs_cam_method_needs_forward(method))
        return cs_errorf(err, CS_EINVAL, "%s: needs forward callbacks; use cs_cam_compute_ex",
                         cs_cam_method_name(method));
    return cs_cam_compute_ex(method, act, grad, n, c, h, w, opt, NULL, NULL, map_out, err);
}

cs_status cs_cam_compute_raw(cs_cam_method method, const float *act, const float *grad, int n,
                             int c, int h, int w, const cs_cam_options *opt, float *raw_out,
                             cs_error *err) {
    if (cs_cam_method_needs_forward(method))
        return cs_errorf(err, CS_EINVAL, "%s: needs forward callbacks; use cs_cam_compute_ex",
                         cs_cam_method_name(method));
    if (!raw_out) return cs_errorf(err, CS_EINVAL, "%s: no output buffer", cs_cam_method_name(method));
    return cs_cam_compute_ex(method, act, grad, n, c, h, w, opt, NULL, raw_out, NULL, err);
}

cs_status cs_cam_aggregate(const float *const *raw, const int *h, const int *w, int num_layers,
                           int n, int dh, int dw, float *out, cs_error *err) {
    if (!raw || !h || !w || !out || num_layers <= 0 || n <= 0 || dh <= 0 || dw <= 0)
        return cs_errorf(err, CS_EINVAL, "cam aggregate: bad arguments (%d layers, %d images, %dx%d)",
                         num_layers, n, dh, dw);
    size_t maxhw = 0;
    for (int l = 0; l < num_layers; l++) {
        if (!raw[l] || h[l] <= 0 || w[l] <= 0)
            return cs_errorf(err, CS_EINVAL, "cam aggregate: layer %d has no map or size %dx%d", l,
                             h[l], w[l]);
        size_t hw = (size_t)h[l] * w[l];
        maxhw = hw > maxhw ? hw : maxhw;
    }
    const size_t dhw = (size_t)dh * dw;
    float *tmp = malloc((maxhw + dhw) * sizeof(float));
    if (!tmp) return cs_errorf(err, CS_ENOMEM, "cam aggregate: out of memory");
    float *res = tmp + maxhw;
    for (int b = 0; b < n; b++) {
        float *o = out + (size_t)b * dhw;
        for (int l = 0; l < num_layers; l++) {
            const size_t hw = (size_t)h[l] * w[l];
            memcpy(tmp, raw[l] + (size_t)b * hw, hw * sizeof(float));
            cs_cam_scale(tmp, 1, (int)hw);
            cs_cam_resize(tmp, h[l], w[l], l ? res : o, dh, dw, NULL);
            if (l == 0)
                for (size_t i = 0; i < dhw; i++) o[i] = o[i] > 0 ? o[i] : 0.f;
            else
                for (size_t i = 0; i < dhw; i++) o[i] += res[i] > 0 ? res[i] : 0.f;
        }
        if (num_layers > 1)
            for (size_t i = 0; i < dhw; i++) o[i] /= (float)num_layers;
        cs_cam_scale(o, 1, (int)dhw);
    }
    free(tmp);
    return CS_OK;
}
