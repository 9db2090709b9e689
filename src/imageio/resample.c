/* Resampling and preprocessing that reproduce torchvision on PIL images.
 *
 * The resampler follows PIL's Resample.c (9.x) step by step, because users'
 * training code ran it and any deviation moves the tensor:
 *   - filters: triangle (support 1) for BILINEAR, Keys a=-0.5 (support 2)
 *     for BICUBIC, stretched by the downscale factor (antialiasing);
 *   - per output pixel, taps from (int)(center -/+ support + 0.5), weights
 *     normalised in double, then rounded to 22-bit fixed point;
 *   - horizontal pass first into uint8 (rounded, clipped), then vertical.
 * With the same source pixels the bytes are identical to PIL's.  Only the
 * way the same integer sums are formed differs: every output of the
 * horizontal pass gets the same number of taps (zero weights pad the short
 * ones, same_tap_count), and on x86-64 both passes multiply with SSE2's
 * pmaddwd (make_pairs).
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
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__SSE2__) && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define CS_HAVE_AVX2_PATH 1
#endif

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
    int32_t *kp;   /* the same as 16-bit pairs for SSE2 (make_pairs), or NULL */
} coeffs;

static void coeffs_free(coeffs *c) {
    free(c->bounds);
    free(c->kk);
    free(c->kp);
    c->bounds = NULL;
    c->kk = c->kp = NULL;
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

/* Gives every output of c the same number of taps, the most any of them
 * uses: a window that would then run past the input's end moves left, and
 * the weights are padded with zeros.  A zero weight adds nothing, so the
 * sums stay PIL's, and the horizontal pass runs loops of one length. */
static cs_status same_tap_count(coeffs *c, int count, int in_size, cs_error *err) {
    int taps = 1;
    for (int i = 0; i < count; i++)
        if (c->bounds[i * 2 + 1] > taps) taps = c->bounds[i * 2 + 1];
    if (taps > in_size) taps = in_size;
    int32_t *kk = calloc((size_t)taps * (size_t)count, sizeof(int32_t));
    if (!kk) return cs_errorf(err, CS_ENOMEM, "out of memory for resampling coefficients");
    for (int i = 0; i < count; i++) {
        const int xmin = c->bounds[i * 2], n = c->bounds[i * 2 + 1];
        const int shift = xmin + taps > in_size ? xmin + taps - in_size : 0;
        for (int t = 0; t < n; t++) kk[(size_t)i * taps + shift + t] = c->kk[(size_t)i * c->ksize + t];
        c->bounds[i * 2] = xmin - shift;
        c->bounds[i * 2 + 1] = taps;
    }
    free(c->kk);
    c->kk = kk;
    c->ksize = taps;
    return CS_OK;
}

/* horizontal pass, one row, outputs [x, ow); every output has c->ksize taps */
static void hrow3(const uint8_t *row, uint8_t *out, int x, int ow, const coeffs *c) {
    const int K = c->ksize;
    for (; x < ow; x++) {
        const uint8_t *p = row + (size_t)c->bounds[x * 2] * 3;
        const int32_t *k = c->kk + (size_t)x * K;
        int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
        for (int t = 0; t < K; t++) {
            s0 += p[t * 3 + 0] * k[t];
            s1 += p[t * 3 + 1] * k[t];
            s2 += p[t * 3 + 2] * k[t];
        }
        out[x * 3 + 0] = clip8(s0);
        out[x * 3 + 1] = clip8(s1);
        out[x * 3 + 2] = clip8(s2);
    }
}

static void hrow1(const uint8_t *row, uint8_t *out, int ow, const coeffs *c) {
    const int K = c->ksize;
    for (int x = 0; x < ow; x++) {
        const uint8_t *p = row + c->bounds[x * 2];
        const int32_t *k = c->kk + (size_t)x * K;
        int32_t s0 = 1 << (PRECISION_BITS - 1);
        for (int t = 0; t < K; t++) s0 += p[t] * k[t];
        out[x] = clip8(s0);
    }
}

/* Vertical pass, one output row, bytes [x, n): blocks of 16 bytes with all
 * taps summed in registers.  The fixed block length lets gcc vectorise at
 * -O2 where the target has a 32-bit vector multiply (its cheapest cost
 * model takes only loops without a remainder); on x86-64 vrow_sse2 does the
 * blocks and this only the tail. */
static void vrow(const uint8_t *rows, size_t stride, const int32_t *k, int yn, size_t x, size_t n,
                 uint8_t *out) {
    enum { VB = 16 };
    for (; x + VB <= n; x += VB) {
        int32_t acc[VB];
        for (int j = 0; j < VB; j++) acc[j] = 1 << (PRECISION_BITS - 1);
        for (int t = 0; t < yn; t++) {
            const uint8_t *p = rows + (size_t)t * stride + x;
            const int32_t kt = k[t];
            for (int j = 0; j < VB; j++) acc[j] += p[j] * kt;
        }
        for (int j = 0; j < VB; j++) out[x + j] = clip8(acc[j]);
    }
    for (; x < n; x++) {
        int32_t a = 1 << (PRECISION_BITS - 1);
        for (int t = 0; t < yn; t++) a += rows[(size_t)t * stride + x] * k[t];
        out[x] = clip8(a);
    }
}

#if defined(__SSE2__)
/* SSE2 (every x86-64) has no 32-bit vector multiply, but PIL's products of
 * an 8-bit pixel p and a 22-bit weight k are exact in pmaddwd's 16 x 16 ->
 * 32 bits when k is split as kl + 128 * kh (kh = floor(k / 128) capped at
 * 32767, kl the rest): p * k = p * kl + (p << 7) * kh is one pmaddwd lane
 * of the pair (p, p << 7) against (kl, kh).  Every sum is then the same
 * integer as PIL's, so the bytes are too.  make_pairs stores each weight as
 * that pair, or nothing when one does not fit in 16 + 16 bits (weights
 * outside about -1..1.008: bilinear never has them, bicubic only where an
 * image edge cuts its kernel while upsampling), and the scalar code runs
 * instead. */
static cs_status make_pairs(coeffs *c, int count, cs_error *err) {
    const size_t n = (size_t)c->ksize * (size_t)count;
    for (size_t i = 0; i < n; i++)
        if (c->kk[i] < -(1 << 22) || c->kk[i] > 32767 * 128 + 32767) return CS_OK;
    if (!(c->kp = malloc(sizeof(int32_t) * n)))
        return cs_errorf(err, CS_ENOMEM, "out of memory for resampling coefficients");
    for (size_t i = 0; i < n; i++) {
        const int32_t k = c->kk[i];
        int32_t kh = k >= 0 ? k / 128 : -((-k + 127) / 128); /* floor(k / 128) */
        if (kh > 32767) kh = 32767;
        const int32_t kl = k - kh * 128;
        c->kp[i] = (int32_t)((uint32_t)(uint16_t)kl | (uint32_t)(uint16_t)kh << 16);
    }
    return CS_OK;
}

/* (p, p << 7) pairs of the 8 16-bit pixels of v, low or high half */
static inline __m128i pairs_lo(__m128i v) { return _mm_unpacklo_epi16(v, _mm_slli_epi16(v, 7)); }
static inline __m128i pairs_hi(__m128i v) { return _mm_unpackhi_epi16(v, _mm_slli_epi16(v, 7)); }

/* clip8 of four sums, as bytes: >> 22, then saturate to 0..255 */
static inline __m128i pack_clip(__m128i a, __m128i b, __m128i c, __m128i d) {
    return _mm_packus_epi16(_mm_packs_epi32(_mm_srai_epi32(a, PRECISION_BITS),
                                            _mm_srai_epi32(b, PRECISION_BITS)),
                            _mm_packs_epi32(_mm_srai_epi32(c, PRECISION_BITS),
                                            _mm_srai_epi32(d, PRECISION_BITS)));
}

/* Horizontal pass of RGB from output x0: one pixel's three channels (and a
 * fourth byte, ignored) per register, one pmaddwd per tap.  Each 4-byte
 * load and store reaches one byte past the pixel, so the last output and
 * any window ending at the row's end are left to hrow3; returns where it
 * stopped. */
static int hrow3_sse2(const uint8_t *row, uint8_t *out, int x0, int ow, int sw, const coeffs *c) {
    const int K = c->ksize;
    const __m128i zero = _mm_setzero_si128(), half = _mm_set1_epi32(1 << (PRECISION_BITS - 1));
    int x = x0;
    for (; x + 1 < ow && c->bounds[x * 2] + K < sw; x++) {
        const uint8_t *p = row + (size_t)c->bounds[x * 2] * 3;
        const int32_t *w = c->kp + (size_t)x * K;
        __m128i acc = half;
        for (int t = 0; t < K; t++) {
            int32_t v;
            memcpy(&v, p + t * 3, 4);
            const __m128i px = _mm_unpacklo_epi8(_mm_cvtsi32_si128(v), zero);
            acc = _mm_add_epi32(acc, _mm_madd_epi16(pairs_lo(px), _mm_set1_epi32(w[t])));
        }
        const int32_t o = _mm_cvtsi128_si32(pack_clip(acc, acc, acc, acc));
        memcpy(out + x * 3, &o, 4); /* byte 4 is the next pixel's, written next */
    }
    return x;
}

#if defined(CS_HAVE_AVX2_PATH)
/* hrow3_sse2 with two output pixels per 256-bit register, one per 128-bit
 * lane: half the multiply-adds (a photo's overlay at 800 px, which resizes
 * 1000x750 -> 800x600, 3.48 -> 2.85 ms: bench/bench_image.sh against
 * CS_NO_AVX2=1).  Same integers, same bytes.
 * Called where the CPU has AVX2 (use_avx2); stops before the pair whose
 * second window reaches the row's end, for hrow3_sse2 to go on. */
__attribute__((target("avx2"))) static int hrow3_avx2(const uint8_t *row, uint8_t *out, int ow, int sw,
                                                      const coeffs *c) {
    const int K = c->ksize;
    const __m256i half = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
    int x = 0;
    for (; x + 2 < ow && c->bounds[(x + 1) * 2] + K < sw; x += 2) {
        const uint8_t *p0 = row + (size_t)c->bounds[x * 2] * 3, *p1 = row + (size_t)c->bounds[x * 2 + 2] * 3;
        const int32_t *w0 = c->kp + (size_t)x * K, *w1 = w0 + K;
        __m256i acc = half;
        for (int t = 0; t < K; t++) {
            int32_t v0, v1;
            memcpy(&v0, p0 + t * 3, 4);
            memcpy(&v1, p1 + t * 3, 4);
            /* 16-bit lanes: pixel x at 0..3, pixel x+1 at 8..11 */
            const __m256i px = _mm256_cvtepu8_epi16(_mm_set_epi32(0, v1, 0, v0));
            const __m256i pr = _mm256_unpacklo_epi16(px, _mm256_slli_epi16(px, 7));
            const __m256i kw = _mm256_setr_epi32(w0[t], w0[t], w0[t], w0[t], w1[t], w1[t], w1[t], w1[t]);
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pr, kw));
        }
        /* clip8 as pack_clip does: >> 22, saturate to 16 then 8 bits */
        const __m256i s = _mm256_srai_epi32(acc, PRECISION_BITS);
        const __m256i b = _mm256_packus_epi16(_mm256_packs_epi32(s, s), _mm256_packs_epi32(s, s));
        const int32_t o0 = _mm256_cvtsi256_si32(b), o1 = _mm_cvtsi128_si32(_mm256_extracti128_si256(b, 1));
        memcpy(out + x * 3, &o0, 4);
        memcpy(out + (x + 1) * 3, &o1, 4); /* each fourth byte is the next pixel's, written next */
    }
    return x;
}

/* AVX2 where the CPU has it, unless CS_NO_AVX2 is set (ctest runs the
 * resampling tests both ways).  Asked once per resample. */
static int use_avx2(void) { return __builtin_cpu_supports("avx2") && !getenv("CS_NO_AVX2"); }
#endif

/* Vertical pass of one output row, 16 bytes at a time; returns where the
 * last whole block ended. */
static size_t vrow_sse2(const uint8_t *rows, size_t stride, const int32_t *w, int yn, size_t n,
                        uint8_t *out) {
    const __m128i zero = _mm_setzero_si128(), half = _mm_set1_epi32(1 << (PRECISION_BITS - 1));
    size_t x = 0;
    for (; x + 16 <= n; x += 16) {
        __m128i a0 = half, a1 = half, a2 = half, a3 = half;
        for (int t = 0; t < yn; t++) {
            const __m128i v = _mm_loadu_si128((const __m128i *)(rows + (size_t)t * stride + x));
            const __m128i kw = _mm_set1_epi32(w[t]);
            const __m128i lo = _mm_unpacklo_epi8(v, zero), hi = _mm_unpackhi_epi8(v, zero);
            a0 = _mm_add_epi32(a0, _mm_madd_epi16(pairs_lo(lo), kw));
            a1 = _mm_add_epi32(a1, _mm_madd_epi16(pairs_hi(lo), kw));
            a2 = _mm_add_epi32(a2, _mm_madd_epi16(pairs_lo(hi), kw));
            a3 = _mm_add_epi32(a3, _mm_madd_epi16(pairs_hi(hi), kw));
        }
        _mm_storeu_si128((__m128i *)(out + x), pack_clip(a0, a1, a2, a3));
    }
    return x;
}
#endif

/* The source rows [*ylo, *yhi) the vertical taps of oh outputs read. */
static void tap_rows(const coeffs *vt, int oh, int sh, int *ylo, int *yhi) {
    int lo = sh, hi = 0;
    for (int i = 0; i < oh; i++) {
        int a = vt->bounds[i * 2], b = a + vt->bounds[i * 2 + 1];
        if (vt->bounds[i * 2 + 1] > 0 && a < lo) lo = a;
        if (b > hi) hi = b;
    }
    if (hi <= lo) lo = hi = 0;
    *ylo = lo;
    *yhi = hi;
}

/* The two passes' coefficients for output window [x0,x1) x [y0,y1): the
 * horizontal ones with one tap count for every output (same_tap_count). */
static cs_status window_coeffs(int sw, int sh, const float box[4], int rw, int rh, int x0, int x1, int y0,
                               int y1, cs_img_interp interp, coeffs *hz, coeffs *vt, cs_error *err) {
    const filter *f = &FILTERS[interp == CS_IMG_INTERP_BICUBIC ? 1 : 0];
    cs_status st = precompute(sw, box[0], box[2], rw, x0, x1 - x0, f, hz, err);
    if (st == CS_OK) st = same_tap_count(hz, x1 - x0, sw, err);
    if (st == CS_OK) st = precompute(sh, box[1], box[3], rh, y0, y1 - y0, f, vt, err);
    return st;
}

cs_status cs_img_resample_window(const uint8_t *src, int sw, int sh, int channels,
                                 const float box[4], int rw, int rh, int x0, int x1, int y0,
                                 int y1, cs_img_interp interp, uint8_t *dst, size_t dst_stride,
                                 cs_error *err) {
    if (x1 <= x0 || y1 <= y0) return CS_OK;
    if (channels != 1 && channels != 3) return cs_errorf(err, CS_EINVAL, "bad channel count");
    const int C = channels, ow = x1 - x0, oh = y1 - y0;
    coeffs hz = {0}, vt = {0};
    uint8_t *tmp = NULL;
    cs_status st = window_coeffs(sw, sh, box, rw, rh, x0, x1, y0, y1, interp, &hz, &vt, err);
#if defined(__SSE2__)
    if (st == CS_OK) st = make_pairs(&hz, ow, err);
    if (st == CS_OK) st = make_pairs(&vt, oh, err);
#endif
    if (st != CS_OK) goto done;
    int ylo, yhi;
    tap_rows(&vt, oh, sh, &ylo, &yhi);
    const int th = yhi - ylo;
    const size_t tstride = (size_t)ow * C;
    if (!(tmp = malloc(tstride * (size_t)(th > 0 ? th : 1)))) {
        st = cs_errorf(err, CS_ENOMEM, "out of memory for resampling");
        goto done;
    }
#if defined(CS_HAVE_AVX2_PATH)
    const int avx2 = C == 3 && hz.kp && use_avx2();
#endif
    /* horizontal pass over the rows the vertical taps need */
    for (int y = 0; y < th; y++) {
        const uint8_t *row = src + (size_t)(ylo + y) * sw * C;
        uint8_t *trow = tmp + (size_t)y * tstride;
        if (C == 1) {
            hrow1(row, trow, ow, &hz);
            continue;
        }
        int x = 0;
#if defined(__SSE2__)
#if defined(CS_HAVE_AVX2_PATH)
        if (avx2) x = hrow3_avx2(row, trow, ow, sw, &hz);
#endif
        if (hz.kp) x = hrow3_sse2(row, trow, x, ow, sw, &hz);
#endif
        hrow3(row, trow, x, ow, &hz);
    }
    /* vertical pass; the sums are the same integers PIL accumulates, in a
     * different order, so the bytes are identical */
    for (int y = 0; y < oh; y++) {
        const int ymin = vt.bounds[y * 2] - ylo, yn = vt.bounds[y * 2 + 1];
        const uint8_t *rows = tmp + (size_t)ymin * tstride;
        uint8_t *drow = dst + (size_t)y * dst_stride;
        size_t x = 0;
#if defined(__SSE2__)
        if (vt.kp) x = vrow_sse2(rows, tstride, vt.kp + (size_t)y * vt.ksize, yn, tstride, drow);
#endif
        vrow(rows, tstride, vt.kk + (size_t)y * vt.ksize, yn, x, tstride, drow);
    }
done:
    free(tmp);
    coeffs_free(&hz);
    coeffs_free(&vt);
    return st;
}

void cs_img_taps_free(cs_img_taps *t) {
    if (!t) return;
    free(t->hfirst); /* the one block */
    memset(t, 0, sizeof *t);
}

cs_status cs_img_resample_taps(int sw, int sh, const float box[4], int rw, int rh, int x0, int x1,
                               int y0, int y1, cs_img_interp interp, cs_img_taps *out,
                               cs_error *err) {
    if (sw <= 0 || sh <= 0 || rw <= 0 || rh <= 0 || x0 < 0 || y0 < 0 || x1 <= x0 || y1 <= y0 ||
        x1 > rw || y1 > rh)
        return cs_errorf(err, CS_EINVAL, "resample plan: bad window");
    const int ow = x1 - x0, oh = y1 - y0;
    coeffs hz = {0}, vt = {0};
    cs_status st = window_coeffs(sw, sh, box, rw, rh, x0, x1, y0, y1, interp, &hz, &vt, err);
    if (st != CS_OK) goto done;
    const size_t n = (size_t)ow * (1 + (size_t)hz.ksize) + (size_t)oh * (2 + (size_t)vt.ksize);
    int32_t *blk = malloc(n * sizeof *blk);
    if (!blk) {
        st = cs_errorf(err, CS_ENOMEM, "out of memory for a resampling plan");
        goto done;
    }
    cs_img_taps t = {.ow = ow, .oh = oh, .hk = hz.ksize, .vk = vt.ksize};
    t.hfirst = blk;
    t.hw = t.hfirst + ow;
    t.vfirst = t.hw + (size_t)ow * hz.ksize;
    t.vn = t.vfirst + oh;
    t.vw = t.vn + oh;
    for (int i = 0; i < ow; i++) t.hfirst[i] = hz.bounds[i * 2];
    memcpy(t.hw, hz.kk, sizeof(int32_t) * (size_t)ow * hz.ksize);
    for (int j = 0; j < oh; j++) {
        t.vfirst[j] = vt.bounds[j * 2];
        t.vn[j] = vt.bounds[j * 2 + 1];
    }
    memcpy(t.vw, vt.kk, sizeof(int32_t) * (size_t)oh * vt.ksize);
    tap_rows(&vt, oh, sh, &t.ylo, &t.yhi);
    *out = t;
done:
    coeffs_free(&hz);
    coeffs_free(&vt);
    return st;
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

/* A 256-entry table per channel: the affine map is the same for every
 * pixel, and dividing (as Normalize does) costs nothing here. */
void cs_img_preproc_lut(const cs_preproc *p, float lut[3][256]) {
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) lut[c][v] = ((float)v * p->scale - p->mean[c]) / p->std[c];
}

cs_status cs_img_preprocess(const cs_image *img, const cs_preproc *p, float *out_chw,
                            cs_error *err) {
    if (!out_chw) return cs_errorf(err, CS_EINVAL, "preprocess: no output buffer");
    cs_image u8 = {0};
    cs_status st = cs_img_preprocess_u8(img, p, &u8, err);
    if (st != CS_OK) return st;
    const size_t plane = (size_t)u8.width * u8.height;
    float lut[3][256];
    cs_img_preproc_lut(p, lut);
    for (int c = 0; c < 3; c++) {
        float *o = out_chw + (size_t)c * plane;
        const uint8_t *s = u8.rgb + (p->order == CS_IMG_ORDER_BGR ? 2 - c : c);
        for (size_t i = 0; i < plane; i++) o[i] = lut[c][s[i * 3]];
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
