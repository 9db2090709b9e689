/* The two methods whose channel weights come from extra forward passes,
 * served by the engine through cs_cam_forward callbacks, batched.
 *
 * ScoreCAM (pytorch-grad-cam score_cam.py), per image b:
 *   U_c   = UpsamplingBilinear2d(A_c) to the input size (align_corners=True)
 *   M_c   = (U_c - min U_c) / (max U_c - min U_c + 1e-8)
 *   s_c   = target(model(input_b * M_c))   (M_c broadcast over input channels)
 *   w     = softmax over channels of s     (torch.nn.Softmax(dim=-1))
 * The c masked inputs go to score_inputs in batches of `batch` (default 16),
 * channel order, as pytorch-grad-cam batches them.
 *
 * AblationCAM (ablation_cam.py + ablation_layer.py), ratio 1.0, per image b:
 *   o     = target score of the unmodified activations
 *   s_c   = target score with channel c of A "ablated"
 *   w_c   = (o - s_c) / o                  (float32)
 * Channels go to score_activations in batches of `batch` (default 32); item j
 * of a batch ablates channel i+j.  AblationLayer's ablation value: 0 when
 * min(A_b) == 0; otherwise it sets the channel to torch.min(output) - 1e7,
 * where output is the batch being edited item by item, so item j gets
 * m - (j+1) * 1e7 (computed step by step in float32, m = min A_b).  This
 * batch-dependence is pytorch-grad-cam's and is reproduced on purpose.
 *
 * Channels that cannot change the answer are not sent, which changes no
 * value: a late layer after a ReLU often has channels that are all zero for
 * a given image, and each is a whole forward pass here (bench/cam_forward.sh
 * times it on real models).
 *   ScoreCAM: a channel whose mask M_c is 0 everywhere (a constant
 *     channel) scores target(model(0)); one forward serves all of them.
 *   AblationCAM, when min(A_b) == 0: ablating an all-zero channel writes 0
 *     over 0, so s_c = o and w_c * A_c = 0 whatever the float noise of a
 *     batched forward; w_c = 0 without a forward. */
#include "cam_internal.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

size_t cam_scorecam_bytes(int c, const cs_cam_forward *fwd, int batch) {
    size_t in = (size_t)fwd->in_c * fwd->in_h * fwd->in_w;
    size_t plane = (size_t)fwd->in_h * fwd->in_w;
    return cam_round((size_t)batch * in * sizeof(float)) + cam_round(plane * sizeof(float)) +
           cam_round((size_t)c * sizeof(float)) + 2 * cam_round((size_t)c * sizeof(int)) +
           cam_round((size_t)batch * sizeof(float));
}

size_t cam_ablation_bytes(int c, int hw, int batch) {
    return cam_round((size_t)batch * c * hw * sizeof(float)) + cam_round((size_t)c * sizeof(float)) +
           cam_round((size_t)c * sizeof(int)) + cam_round((size_t)batch * sizeof(float));
}

static bool all_equal(const float *v, size_t n) {
    for (size_t i = 1; i < n; i++)
        if (v[i] != v[0]) return false;
    return true;
}

/* M_c of channel a (hw values) into mask (plane values); false when the
 * mask is 0 everywhere (max == min after the upsampling). */
static bool scorecam_mask(const float *a, int h, int w, float *mask, int ih, int iw) {
    const size_t plane = (size_t)ih * iw;
    cam_resize_align_corners(a, h, w, mask, ih, iw);
    float mn = mask[0], mx = mask[0];
    for (size_t r = 1; r < plane; r++) {
        mn = mask[r] < mn ? mask[r] : mn;
        mx = mask[r] > mx ? mask[r] : mx;
    }
    const float den = mx - mn + 1e-8f;
    for (size_t r = 0; r < plane; r++) mask[r] = (mask[r] - mn) / den;
    return mx != mn;
}

static cs_status call_fn(cs_cam_score_fn fn, const cs_cam_forward *fwd, const float *items, int k,
                         int b, float *scores, const char *what, cs_error *err) {
    for (int j = 0; j < k; j++) scores[j] = NAN; /* so an unwritten score shows */
    cs_status st = fn(fwd->ctx, items, k, b, fwd->class_idx[b], scores, err);
    if (st) {
        if (err && err->code == st) return cs_error_prefix(err, "%s (image %d)", what, b);
        return cs_errorf(err, st, "%s (image %d): callback failed: %s", what, b, cs_status_str(st));
    }
    for (int j = 0; j < k; j++)
        if (scores[j] != scores[j])
            return cs_errorf(err, CS_EINTERNAL, "%s (image %d): callback left score %d unset or NaN",
                             what, b, j);
    return CS_OK;
}

cs_status cam_scorecam_weights(const float *act, int b, int c, int h, int w,
                               const cs_cam_forward *fwd, int batch, float *wts, cam_arena *a,
                               cs_error *err) {
    const int ic = fwd->in_c, ih = fwd->in_h, iw = fwd->in_w;
    const size_t plane = (size_t)ih * iw, in = (size_t)ic * plane, hw = (size_t)h * w;
    const float *input = fwd->input + (size_t)b * in;
    const float *ab = act + (size_t)b * c * hw;
    size_t mark = a->used;
    float *items = cam_arena_take(a, (size_t)batch * in * sizeof(float));
    float *mask = cam_arena_take(a, plane * sizeof(float));
    float *scores = cam_arena_take(a, (size_t)c * sizeof(float));
    float *ks = cam_arena_take(a, (size_t)batch * sizeof(float));
    int *run = cam_arena_take(a, (size_t)c * sizeof(int));  /* the channels sent, in order */
    int *from = cam_arena_take(a, (size_t)c * sizeof(int)); /* whose score each channel takes */
    /* a zero mask needs a constant channel: only those are upsampled here */
    int nrun = 0, zero = -1;
    for (int ci = 0; ci < c; ci++) {
        from[ci] = ci;
        if (all_equal(ab + (size_t)ci * hw, hw) && !scorecam_mask(ab + (size_t)ci * hw, h, w, mask, ih, iw)) {
            if (zero >= 0) {
                from[ci] = zero;
                continue;
            }
            zero = ci;
        }
        run[nrun++] = ci;
    }
    cs_status st = CS_OK;
    for (int r0 = 0; r0 < nrun; r0 += batch) {
        int k = nrun - r0 < batch ? nrun - r0 : batch;
        for (int j = 0; j < k; j++) {
            scorecam_mask(ab + (size_t)run[r0 + j] * hw, h, w, mask, ih, iw);
            float *item = items + (size_t)j * in;
            for (int ci = 0; ci < ic; ci++)
                for (size_t r = 0; r < plane; r++)
                    item[(size_t)ci * plane + r] = input[(size_t)ci * plane + r] * mask[r];
        }
        st = call_fn(fwd->score_inputs, fwd, items, k, b, ks, "scorecam forward", err);
        if (st) goto out;
        for (int j = 0; j < k; j++) scores[run[r0 + j]] = ks[j];
    }
    for (int ci = 0; ci < c; ci++) scores[ci] = scores[from[ci]];
    /* Softmax over the channel axis, max-shifted as torch does. */
    float smax = scores[0];
    for (int ci = 1; ci < c; ci++) smax = scores[ci] > smax ? scores[ci] : smax;
    double z = 0;
    for (int ci = 0; ci < c; ci++) z += exp((double)scores[ci] - smax);
    for (int ci = 0; ci < c; ci++) wts[ci] = (float)(exp((double)scores[ci] - smax) / z);
out:
    a->used = mark;
    return st;
}

cs_status cam_ablation_weights(const float *act, int b, int c, int h, int w,
                               const cs_cam_forward *fwd, int batch, float *wts, cam_arena *a,
                               cs_error *err) {
    const size_t hw = (size_t)h * w, chw = (size_t)c * hw;
    const float *ab = act + (size_t)b * chw;
    size_t mark = a->used;
    float *items = cam_arena_take(a, (size_t)batch * chw * sizeof(float));
    float *scores = cam_arena_take(a, (size_t)c * sizeof(float));
    float *ks = cam_arena_take(a, (size_t)batch * sizeof(float));
    int *run = cam_arena_take(a, (size_t)c * sizeof(int)); /* the channels sent, in order */
    float orig;
    cs_status st = call_fn(fwd->score_activations, fwd, ab, 1, b, &orig, "ablationcam forward", err);
    if (st) goto out;
    if (orig == 0) {
        st = cs_errorf(err, CS_EINVAL,
                       "ablationcam (image %d): the target score is 0, so the weights "
                       "(score - ablated) / score are undefined",
                       b);
        goto out;
    }
    float amin = ab[0];
    for (size_t i = 1; i < chw; i++) amin = ab[i] < amin ? ab[i] : amin;
    /* with a nonzero minimum every channel is sent, in its pytorch-grad-cam
     * batch position (the ablation value depends on it) */
    int nrun = 0;
    for (int ci = 0; ci < c; ci++) {
        if (amin == 0.f && ab[(size_t)ci * hw] == 0.f && all_equal(ab + (size_t)ci * hw, hw)) {
            scores[ci] = orig;
            continue;
        }
        run[nrun++] = ci;
    }
    for (int r0 = 0; r0 < nrun; r0 += batch) {
        int k = nrun - r0 < batch ? nrun - r0 : batch;
        float running = amin; /* torch.min(output) as the batch is edited */
        for (int j = 0; j < k; j++) {
            float *item = items + (size_t)j * chw;
            memcpy(item, ab, chw * sizeof(float));
            float v = 0.f;
            if (running != 0.f) {
                v = running - 1e7f;
                running = v < running ? v : running;
            }
            float *ch = item + (size_t)run[r0 + j] * hw;
            for (size_t r = 0; r < hw; r++) ch[r] = v;
        }
        st = call_fn(fwd->score_activations, fwd, items, k, b, ks, "ablationcam forward", err);
        if (st) goto out;
        for (int j = 0; j < k; j++) scores[run[r0 + j]] = ks[j];
    }
    for (int ci = 0; ci < c; ci++) wts[ci] = (orig - scores[ci]) / orig;
out:
    a->used = mark;
    return st;
}
