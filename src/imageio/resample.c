/* Resampling and preprocessing that reproduce torchvision on PIL images.
 *
 * The resampler follows PIL's Resample.c (9.x) step by step, because users'
 * training code ran it and any deviation moves the tensor:
 *   - filters: triangle (support 1) for BILINEAR, Keys a=-0.5 (support 2)
 *     for BICUBIC, stretched by the downscale factor (antialiasing);
 *   - per output pixel, taps from (int)(center -/+ support + 0.5), weights
 *     normalised in double, then rounded to 22-bit fixed point;
 *   - horizontal pass first into uint8 (rounded, clipped), then vertical.
 * With the same source pixels the bytes are identical to PIL's.
 *
 * Only the output window that survives the center crop is computed: the
 * horizontal pass covers the crop's columns and the rows the vertical taps
 * of the crop's rows read, nothing else.  When the decoder already shrank a
 * JPEG in the DCT domain, the source box is the full-resolution frame
 * expressed in scaled pixels, so geometry (resize size, crop offsets) stays
 * what torchvision computes from the full-resolution image. */
#include "camserve/imageio.h"
#include "imageio/imageio_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS (32 - 8 - 2)

typedef struct filter {
    double (*fn)(double x);
    double support;
} filter;

static double bilinear_filter(double x) {
    if (x < 0.0) x = -x;
    if (x < 1.0) return 1.0 - x;
    return 0.0;
}

static double bicubic_filter(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

static const filter FILTERS[] = {{bilinear_filter, 1.0}, {bicubic_filter, 2.0}};

typedef struct coeffs {
    int ksize;
    int *bounds;   /* per output: first tap, tap count */
    int32_t *kk;   /* per output: ksize fixed-point weights */
} coeffs;

static void coeffs_free(coeffs *c) {
    free(c->bounds);
    free(c->kk);
}

/* PIL's precompute_coeffs + normalize_coeffs_8bpc for outputs
 * [first, first+count) of an out_size resize of [in0, in1). */
static cs_status precompute(int in_size, float in0, float in1, int out_size, int first,
                            int count, const filter *f, coeffs *c, cs_error *err) {
    double scale = (double)(in1 - in0) / out_size, filterscale = scale;
    if (filterscale < 1.0) filterscale = 1.0;
    double support = f->support * filterscale;
    if (!(support < 1e6)) return cs_errorf(err, CS_EINVAL, "resize factor out of range");
    int ksize = (int)ceil(support) * 2 + 1;
    c->ksize = ksize;
    c->bounds = malloc(sizeof(int) * 2 * (size_t)(count > 0 ? count : 1));
    c->kk = malloc(sizeof(int32_t) * (size_t)ksize * (size_t)(count > 0 ? count : 1));
    double *k = malloc(sizeof(double) * (size_t)ksize);
    if (!c->bounds || !c->kk || !k) {
        free(k);
        coeffs_free(c);
        return cs_errorf(err, CS_ENOMEM, "out of memory for resampling coefficients");
    }
    for (int i = 0; i < count; i++) {
        int xx = first + i;
        double center = in0 + (xx + 0.5) * scale;
        double ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        if (xmax < 0) xmax = 0;
        if (xmax > ksize) xmax = ksize;
        for (int x = 0; x < xmax; x++) {
            double w = f->fn((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        int32_t *kk = c->kk + (size_t)i * ksize;
        for (int x = 0; x < ksize; x++) {
            double v = x < xmax ? (ww != 0.0 ? k[x] / ww : k[x]) : 0.0;
            kk[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS))
                          : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        c->bounds[i * 2] = xmin;
        c->bounds[i * 2 + 1] = xmax;
    }
    free(k);
    return CS_OK;
}

static inline uint8_t clip8(int32_t in) {
    if (in >= (1 << PRECISION_BITS << 8)) return 255;
    if (in <= 0) return 0;
    return (uint8_t)(in >> PRECISION_BITS);
}

cs_status cs_img_resample_window(const uint8_t *src, int sw, int sh, int channels,
                                 const float box[4], int rw, int rh, int x0, int x1, int y0,
                                 int y1, cs_img_interp interp, uint8_t *dst, size_t dst_stride,
                                 cs_error *err) {
    if (x1 <= x0 || y1 <= y0) return CS_OK;
    if (channels != 1 && channels != 3) return cs_errorf(err, CS_EINVAL, "bad channel count");
    const filter *f = &FILTERS[interp == CS_IMG_INTERP_BICUBIC ? 1 : 0];
    const int C = channels, ow = x1 - x0, oh = y1 - y0;
    coeffs hz = {0}, vt = {0};
    cs_status st = precompute(sw, box[0], box[2], rw, x0, ow, f, &hz, err);
    if (st != CS_OK) return st;
    if ((st = precompute(sh, box[1], box[3], rh, y0, oh, f, &vt, err)) != CS_OK) {
        coeffs_free(&hz);
        return st;
    }
    int ylo = sh, yhi = 0;
    for (int i = 0; i < oh; i++) {
        int a = vt.bounds[i * 2], b = a + vt.bounds[i * 2 + 1];
        if (vt.bounds[i * 2 + 1] > 0 && a < ylo) ylo = a;
        if (b > yhi) yhi = b;
    }
    if (yhi <= ylo) ylo = yhi = 0;
    const int th = yhi - ylo;
    const size_t tstride = (size_t)ow * C;
    uint8_t *tmp = malloc(tstride * (size_t)(th > 0 ? th : 1));
    if (!tmp) {
        coeffs_free(&hz);
        coeffs_free(&vt);
        return cs_errorf(err, CS_ENOMEM, "out of memory for resampling");
    }
    /* horizontal pass over the rows the vertical taps need */
    for (int y = 0; y < th; y++) {
        const uint8_t *row = src + (size_t)(ylo + y) * sw * C;
        uint8_t *trow = tmp + (size_t)y * tstride;
        for (int x = 0; x < ow; x++) {
            const int xmin = hz.bounds[x * 2], xn = hz.bounds[x * 2 + 1];
            const int32_t *k = hz.kk + (size_t)x * hz.ksize;
            const uint8_t *p = row + (size_t)xmin * C;
            if (C == 3) {
                int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
                for (int t = 0; t < xn; t++, p += 3) {
                    s0 += p[0] * k[t];
                    s1 += p[1] * k[t];
                    s2 += p[2] * k[t];
                }
                trow[x * 3 + 0] = clip8(s0);
                trow[x * 3 + 1] = clip8(s1);
                trow[x * 3 + 2] = clip8(s2);
            } else {
                int32_t s0 = 1 << (PRECISION_BITS - 1);
                for (int t = 0; t < xn; t++) s0 += p[t] * k[t];
                trow[x] = clip8(s0);
            }
        }
    }
    /* vertical pass: blocks of 16 bytes of a row, all taps of the block
     * summed in registers.  The fixed block length lets the compiler
     * vectorise at -O2 (its cheapest cost model takes only loops without a
     * remainder); the sums are the same integers PIL accumulates, only in a
     * different order, so the bytes are identical. */
    enum { VB = 16 };
    for (int y = 0; y < oh; y++) {
        const int ymin = vt.bounds[y * 2] - ylo, yn = vt.bounds[y * 2 + 1];
        const int32_t *k = vt.kk + (size_t)y * vt.ksize;
        const uint8_t *rows = tmp + (size_t)ymin * tstride;
        uint8_t *drow = dst + (size_t)y * dst_stride;
        size_t x = 0;
        for (; x + VB <= tstride; x += VB) {
            int32_t acc[VB];
            for (int j = 0; j < VB; j++) acc[j] = 1 << (PRECISION_BITS - 1);
            for (int t = 0; t < yn; t++) {
                const uint8_t *p = rows + (size_t)t * tstride + x;
                const int32_t kt = k[t];
                for (int j = 0; j < VB; j++) acc[j] += p[j] * kt;
            }
            for (int j = 0; j < VB; j++) drow[x + j] = clip8(acc[j]);
        }
        for (; x < tstride; x++) {
            int32_t a = 1 << (PRECISION_BITS - 1);
            for (int t = 0; t < yn; t++) a += rows[(size_t)t * tstride + x] * k[t];
            drow[x] = clip8(a);
        }
    }
    free(tmp);
    coeffs_free(&hz);
    coeffs_free(&vt);
    return CS_OK;
}

/* ---- preprocessing --------------------------------------------------- */

cs_preproc cs_img_preproc_default(void) {
    cs_preproc p = {
        .resize = 256,
        .crop_w = 224,
        .crop_h = 224,
        .interp = CS_IMG_INTERP_BILINEAR,
        .mean = {0.485f, 0.456f, 0.406f},
        .std = {0.229f, 0.224f, 0.225f},
        .scale = 1.0f / 255.0f,
        .order = CS_IMG_ORDER_RGB,
    };
    return p;
}

cs_status cs_img_preproc_validate(const cs_preproc *p, cs_error *err) {
    const int lim = 1 << 15;
    if (!p) return cs_errorf(err, CS_EINVAL, "preprocess: no config");
    if (p->crop_w <= 0 || p->crop_h <= 0 || p->crop_w > lim || p->crop_h > lim)
        return cs_errorf(err, CS_EINVAL, "preprocess: crop %dx%d out of range (1..%d)", p->crop_w,
                         p->crop_h, lim);
    if (p->resize < 0 || p->resize > lim)
        return cs_errorf(err, CS_EINVAL, "preprocess: resize %d out of range (0..%d)", p->resize, lim);
    if ((p->resize_w > 0) != (p->resize_h > 0) || p->resize_w < 0 || p->resize_h < 0 ||
        p->resize_w > lim || p->resize_h > lim)
        return cs_errorf(err, CS_EINVAL, "preprocess: resize %dx%d invalid", p->resize_w,
                         p->resize_h);
    for (int c = 0; c < 3; c++) {
        if (!isfinite(p->mean[c]) || !isfinite(p->std[c]) || p->std[c] == 0.0f)
            return cs_errorf(err, CS_EINVAL, "preprocess: mean/std[%d] invalid (std must be non-zero)",
                             c);
    }
    if (!isfinite(p->scale) || p->scale == 0.0f)
        return cs_errorf(err, CS_EINVAL, "preprocess: scale must be finite and non-zero");
    if (p->interp != CS_IMG_INTERP_BILINEAR && p->interp != CS_IMG_INTERP_BICUBIC)
        return cs_errorf(err, CS_EINVAL, "preprocess: unknown interpolation");
    if (p->order != CS_IMG_ORDER_RGB && p->order != CS_IMG_ORDER_BGR)
        return cs_errorf(err, CS_EINVAL, "preprocess: unknown channel order");
    return CS_OK;
}

void cs_img_preproc_need(const cs_preproc *p, int *need_w, int *need_h) {
    int w = 0, h = 0;
    if (p->resize_w > 0 && p->resize_h > 0) {
        w = 2 * p->resize_w;
        h = 2 * p->resize_h;
    } else if (p->resize > 0) {
        w = h = 2 * p->resize;
    }
    /* no resize: the crop reads full-resolution pixels, so decode full size */
    *need_w = w;
    *need_h = h;
}

/* Python's round(): half to even, which torchvision's center crop uses. */
static int round_half_even(double v) { return (int)nearbyint(v); }

void cs_img_preproc_geometry(const cs_preproc *p, int ow, int oh, int *rw, int *rh,
                             int *crop_x, int *crop_y) {
    int w = ow, h = oh;
    if (p->resize_w > 0 && p->resize_h > 0) {
        w = p->resize_w;
        h = p->resize_h;
    } else if (p->resize > 0) {
        /* torchvision's _compute_resized_output_size: the long side is
         * truncated, computed in double like Python's int(a * b / c) */
        int s = ow <= oh ? ow : oh, l = ow <= oh ? oh : ow;
        int ns = p->resize, nl = (int)((double)p->resize * l / s);
        if (ow <= oh) {
            w = ns;
            h = nl;
        } else {
            w = nl;
            h = ns;
        }
    }
    *rw = w;
    *rh = h;
    *crop_x = p->crop_w > w ? -((p->crop_w - w) / 2) : round_half_even((w - p->crop_w) / 2.0);
    *crop_y = p->crop_h > h ? -((p->crop_h - h) / 2) : round_half_even((h - p->crop_h) / 2.0);
}

/* Where the full-resolution frame lies in img's pixels: for a DCT-scaled
 * JPEG, width = ceil(orig_width / d) and the frame ends at orig / d. */
static void source_box(const cs_image *img, float box[4]) {
    box[0] = box[1] = 0.0f;
    box[2] = (float)img->width;
    box[3] = (float)img->height;
    if (img->orig_width <= 0 || img->orig_height <= 0 ||
        (img->orig_width == img->width && img->orig_height == img->height))
        return;
    for (int d = 2; d <= 8; d *= 2) {
        if ((img->orig_width + d - 1) / d == img->width &&
            (img->orig_height + d - 1) / d == img->height) {
            box[2] = (float)((double)img->orig_width / d);
            box[3] = (float)((double)img->orig_height / d);
            return;
        }
    }
}

static void frame_size(const cs_image *img, int *w, int *h) {
    *w = img->orig_width > 0 ? img->orig_width : img->width;
    *h = img->orig_height > 0 ? img->orig_height : img->height;
}

void cs_img_preproc_crop_box(const cs_preproc *p, const cs_image *img, float box[4]) {
    int ow, oh, rw, rh, cx, cy;
    frame_size(img, &ow, &oh);
    cs_img_preproc_geometry(p, ow, oh, &rw, &rh, &cx, &cy);
    float sb[4];
    source_box(img, sb);
    const double fx = (sb[2] - sb[0]) / rw, fy = (sb[3] - sb[1]) / rh;
    box[0] = (float)(sb[0] + cx * fx);
    box[1] = (float)(sb[1] + cy * fy);
    box[2] = (float)(sb[0] + (cx + p->crop_w) * fx);
    box[3] = (float)(sb[1] + (cy + p->crop_h) * fy);
}

static cs_status check_image(const cs_image *img, cs_error *err) {
    if (!img || !img->rgb || img->width <= 0 || img->height <= 0 ||
        (img->channels != 3 && img->channels != 1))
        return cs_errorf(err, CS_EINVAL, "no image");
    return CS_OK;
}

cs_status cs_img_preprocess_u8(const cs_image *img, const cs_preproc *p, cs_image *out,
                               cs_error *err) {
    cs_status st = check_image(img, err);
    if (st == CS_OK) st = cs_img_preproc_validate(p, err);
    if (st != CS_OK) return st;
    if (img->channels != 3) return cs_errorf(err, CS_EINVAL, "preprocess needs an RGB image");
    int ow, oh, rw, rh, cx, cy;
    frame_size(img, &ow, &oh);
    cs_img_preproc_geometry(p, ow, oh, &rw, &rh, &cx, &cy);
    if (rw <= 0 || rh <= 0)
        return cs_errorf(err, CS_EINVAL, "preprocess: image %dx%d resizes to nothing", ow, oh);
    const int cw = p->crop_w, ch = p->crop_h;
    uint8_t *px = calloc((size_t)cw * ch, 3); /* zeros = torchvision's padding */
    if (!px) return cs_errorf(err, CS_ENOMEM, "out of memory for a %dx%d crop", cw, ch);
    int x0 = cx < 0 ? 0 : cx, y0 = cy < 0 ? 0 : cy;
    int x1 = cx + cw > rw ? rw : cx + cw, y1 = cy + ch > rh ? rh : cy + ch;
    float box[4];
    source_box(img, box);
    uint8_t *dst = px + ((size_t)(y0 - cy) * cw + (size_t)(x0 - cx)) * 3;
    st = cs_img_resample_window(img->rgb, img->width, img->height, 3, box, rw, rh, x0, x1, y0, y1,
                                p->interp, dst, (size_t)cw * 3, err);
    if (st != CS_OK) {
        free(px);
        return st;
    }
    out->width = out->orig_width = cw;
    out->height = out->orig_height = ch;
    out->channels = 3;
    out->rgb = px;
    return CS_OK;
}

cs_status cs_img_preprocess(const cs_image *img, const cs_preproc *p, float *out_chw,
                            cs_error *err) {
    if (!out_chw) return cs_errorf(err, CS_EINVAL, "preprocess: no output buffer");
    cs_image u8 = {0};
    cs_status st = cs_img_preprocess_u8(img, p, &u8, err);
    if (st != CS_OK) return st;
    const size_t plane = (size_t)u8.width * u8.height;
    for (int c = 0; c < 3; c++) {
        const int sc = p->order == CS_IMG_ORDER_BGR ? 2 - c : c;
        const float mean = p->mean[c], std = p->std[c], scale = p->scale;
        float *o = out_chw + (size_t)c * plane;
        const uint8_t *s = u8.rgb + sc;
        /* a 256-entry table: the affine map is the same for every pixel, and
         * dividing (as Normalize does) costs nothing here */
        float lut[256];
        for (int v = 0; v < 256; v++) lut[v] = ((float)v * scale - mean) / std;
        for (size_t i = 0; i < plane; i++) o[i] = lut[s[i * 3]];
    }
    cs_img_free(&u8);
    return CS_OK;
}

cs_status cs_img_resize(const cs_image *img, int w, int h, cs_img_interp interp, cs_image *out,
                        cs_error *err) {
    cs_status st = check_image(img, err);
    if (st != CS_OK) return st;
    if (w <= 0 || h <= 0 || w > (1 << 15) || h > (1 << 15))
        return cs_errorf(err, CS_EINVAL, "resize to %dx%d out of range", w, h);
    const int C = img->channels;
    uint8_t *px = malloc((size_t)w * h * C);
    if (!px) return cs_errorf(err, CS_ENOMEM, "out of memory for a %dx%d image", w, h);
    float box[4] = {0.0f, 0.0f, (float)img->width, (float)img->height};
    st = cs_img_resample_window(img->rgb, img->width, img->height, C, box, w, h, 0, w, 0, h,
                                interp, px, (size_t)w * C, err);
    if (st != CS_OK) {
        free(px);
        return st;
    }
    out->width = out->orig_width = w;
    out->height = out->orig_height = h;
    out->channels = C;
    out->rgb = px;
    return CS_OK;
}
