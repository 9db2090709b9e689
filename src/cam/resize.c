/* Bilinear resizing of single-channel float maps.
 *
 * cs_cam_resize reproduces cv2.resize(..., INTER_LINEAR) for float32, which
 * pytorch-grad-cam's scale_cam_image calls: OpenCV's resizeGeneric computes,
 * per destination index d,
 *   f = (float)((d + 0.5) * scale - 0.5), scale = 1 / (dsize / ssize) (double)
 *   s = floor(f); f -= s;  s < 0 -> (s, f) = (0, 0);  s >= n-1 -> (n-1, 0)
 * and blends horizontally first (S[s]*(1-f) + S[s+1]*f, float), then
 * vertically (h0*(1-g) + h1*g, float).  PyTorch's
 * F.interpolate(mode="bilinear", align_corners=False, antialias=False) uses
 * the same source coordinates and clamping, so the two agree to rounding for
 * up- and downsampling; OpenCV's only special case (exact 2x shrink switches
 * to INTER_AREA) gives the same 2x2 mean.
 *
 * cam_resize_align_corners is torch.nn.UpsamplingBilinear2d (align_corners
 * = True), which ScoreCAM uses: s = d * (n_in - 1) / (n_out - 1). */
#include "cam_internal.h"

#include <math.h>

typedef struct lin_tap {
    int i0, i1;
    float a0, a1;
} lin_tap;

static lin_tap cv_tap(int d, double scale, int n) {
    float f = (float)((d + 0.5) * scale - 0.5);
    int s = (int)floorf(f);
    f -= (float)s;
    if (s < 0) {
        s = 0;
        f = 0;
    }
    if (s >= n - 1) {
        s = n - 1;
        f = 0;
    }
    lin_tap t = {s, s + 1 < n ? s + 1 : s, 1.f - f, f};
    return t;
}

cs_status cs_cam_resize(const float *src, int sh, int sw, float *dst, int dh, int dw,
                        cs_error *err) {
    if (!src || !dst) return cs_errorf(err, CS_EINVAL, "cam resize: NULL buffer");
    if (sh <= 0 || sw <= 0 || dh <= 0 || dw <= 0)
        return cs_errorf(err, CS_EINVAL, "cam resize: bad size %dx%d -> %dx%d", sh, sw, dh, dw);
    const double sx = 1.0 / ((double)dw / sw), sy = 1.0 / ((double)dh / sh);
    for (int y = 0; y < dh; y++) {
        lin_tap ty = cv_tap(y, sy, sh);
        const float *r0 = src + (size_t)ty.i0 * sw, *r1 = src + (size_t)ty.i1 * sw;
        float *out = dst + (size_t)y * dw;
        for (int x = 0; x < dw; x++) {
            /* Taps are recomputed per pixel rather than tabled: a 224-wide
             * row costs less than the allocation a table would need. */
            lin_tap tx = cv_tap(x, sx, sw);
            float h0 = r0[tx.i0] * tx.a0 + r0[tx.i1] * tx.a1;
            float h1 = r1[tx.i0] * tx.a0 + r1[tx.i1] * tx.a1;
            out[x] = h0 * ty.a0 + h1 * ty.a1;
        }
    }
    return CS_OK;
}

static lin_tap ac_tap(int d, float scale, int n) {
    float real = scale * (float)d;
    int i0 = (int)real;
    if (i0 > n - 1) i0 = n - 1;
    float l1 = real - (float)i0;
    l1 = l1 < 0 ? 0 : l1 > 1 ? 1 : l1;
    lin_tap t = {i0, i0 < n - 1 ? i0 + 1 : i0, 1.f - l1, l1};
    return t;
}

void cam_resize_align_corners(const float *src, int sh, int sw, float *dst, int dh, int dw) {
    const float sy = dh > 1 ? (float)(sh - 1) / (float)(dh - 1) : 0.f;
    const float sx = dw > 1 ? (float)(sw - 1) / (float)(dw - 1) : 0.f;
    for (int y = 0; y < dh; y++) {
        lin_tap ty = sh == dh ? (lin_tap){y, y, 1.f, 0.f} : ac_tap(y, sy, sh);
        const float *r0 = src + (size_t)ty.i0 * sw, *r1 = src + (size_t)ty.i1 * sw;
        float *out = dst + (size_t)y * dw;
        for (int x = 0; x < dw; x++) {
            lin_tap tx = sw == dw ? (lin_tap){x, x, 1.f, 0.f} : ac_tap(x, sx, sw);
            out[x] = ty.a0 * (tx.a0 * r0[tx.i0] + tx.a1 * r0[tx.i1]) +
                     ty.a1 * (tx.a0 * r1[tx.i0] + tx.a1 * r1[tx.i1]);
        }
    }
}
