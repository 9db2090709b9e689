/* CUDA kernels of the camserve CUDA backend: everything that is not a
 * convolution (cuDNN) or a matrix product (cuBLAS).
 *
 * Each kernel is a template over the storage type (float, __half,
 * __nv_bfloat16); values are loaded to fp32, computed in fp32, stored once.
 * Kernels use grid-stride loops over int64 indices: the shapes come from
 * model files, and a batch-64 activation can pass 2^31 elements in the
 * index products of a strided walk.  The hot element-wise ones (epilogue,
 * strided walk) take 32-bit indices whenever everything fits.  Backward kernels accumulate (see
 * cuda_internal.h).  The formulas mirror src/engine/ops.c (forward) and
 * src/engine/backward.c (gradients) so CPU and GPU agree up to rounding. */
#include "cuda/cuda_internal.h"
#include "cuda/launch.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdint.h>

namespace {

__device__ __forceinline__ float ld(const float *p) { return *p; }
__device__ __forceinline__ float ld(const __half *p) { return __half2float(*p); }
__device__ __forceinline__ float ld(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ void st(float *p, float v) { *p = v; }
__device__ __forceinline__ void st(__half *p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void st(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }

using cs_launch::blocks_for;
using cs_launch::kThreads;
using cs_launch::launched;
using cs_launch::S;

__device__ __forceinline__ float apply_fn(const cs_cuda_act &a, float x) {
    switch (a.fn) {
    case CS_FN_RELU: return x > 0.f ? x : 0.f;
    case CS_FN_CLIP: return fminf(fmaxf(x, a.alpha), a.beta);
    case CS_FN_LEAKYRELU: return x > 0.f ? x : a.alpha * x;
    case CS_FN_SIGMOID: return 1.f / (1.f + expf(-x));
    case CS_FN_HARDSIGMOID: return fminf(fmaxf(a.alpha * x + a.beta, 0.f), 1.f);
    case CS_FN_HARDSWISH: return x * fminf(fmaxf(x / 6.f + 0.5f, 0.f), 1.f);
    case CS_FN_TANH: return tanhf(x);
    case CS_FN_GELU_ERF: return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
    case CS_FN_SWISH: return x / (1.f + expf(-a.alpha * x));
    case CS_FN_ERF: return erff(x);
    case CS_FN_SQRT: return sqrtf(x);
    case CS_FN_EXP: return expf(x);
    case CS_FN_NEG: return -x;
    case CS_FN_RECIPROCAL: return 1.f / x;
    default: return x;
    }
}

/* d fn / dx, from the input x and the output y, as backward.c's act_grad. */
__device__ __forceinline__ float fn_grad(const cs_cuda_act &a, float x, float y) {
    switch (a.fn) {
    case CS_FN_RELU: return y > 0.f ? 1.f : 0.f;
    case CS_FN_CLIP: return (x > a.alpha && x < a.beta) ? 1.f : 0.f;
    case CS_FN_LEAKYRELU: return x > 0.f ? 1.f : a.alpha;
    case CS_FN_SIGMOID: return y * (1.f - y);
    case CS_FN_TANH: return 1.f - y * y;
    case CS_FN_HARDSIGMOID: {
        float t = a.alpha * x + a.beta;
        return (t > 0.f && t < 1.f) ? a.alpha : 0.f;
    }
    case CS_FN_HARDSWISH: return x < -3.f ? 0.f : x <= 3.f ? (2.f * x + 3.f) / 6.f : 1.f;
    case CS_FN_ERF: return 1.1283791670955126f * expf(-x * x);
    case CS_FN_GELU_ERF: {
        float cdf = 0.5f * (1.f + erff(x * 0.70710678118654752f));
        float pdf = 0.3989422804014327f * expf(-0.5f * x * x);
        return cdf + x * pdf;
    }
    case CS_FN_SWISH: {
        float s = 1.f / (1.f + expf(-a.alpha * x));
        return s + a.alpha * x * s * (1.f - s);
    }
    case CS_FN_SQRT: return 0.5f / y;
    case CS_FN_EXP: return y;
    case CS_FN_NEG: return -1.f;
    case CS_FN_RECIPROCAL: return -y * y;
    default: return 1.f;
    }
}

/* ---- strided walks ------------------------------------------------------------- */

/* I: the index type.  32-bit whenever every index and offset fits
 * (strided_to checks): 64-bit division and remainder are emulated in many
 * instructions and made these walks compute-bound at batch 64. */
template <typename TO, typename TI, typename I>
__global__ void k_strided(int op, int accum, TO *out, const TI *a, const TI *b, cs_cuda_walk w, I n) {
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
        I r = i, oo = 0, oa = 0, ob = 0;
        for (int d = w.nd - 1; d >= 0; d--) {
            I dim = (I)w.dims[d], c = r % dim;
            r /= dim;
            oo += c * (I)w.so[d];
            oa += c * (I)w.sa[d];
            ob += c * (I)w.sb[d];
        }
        float x = ld(a + oa), v;
        switch (op) {
        case CS_BIN_ADD: v = x + ld(b + ob); break;
        case CS_BIN_SUB: v = x - ld(b + ob); break;
        case CS_BIN_MUL: v = x * ld(b + ob); break;
        case CS_BIN_DIV: v = x / ld(b + ob); break;
        case CS_BIN_POW: v = powf(x, ld(b + ob)); break;
        default: v = x; break;
        }
        if (accum) v += ld(out + oo);
        st(out + oo, v);
    }
}

template <typename T>
__global__ void k_unary(const T *x, T *y, int64_t n, cs_cuda_act a) {
    GRID_LOOP(i, n) st(y + i, apply_fn(a, ld(x + i)));
}

template <typename T>
__global__ void k_unary_bwd(cs_cuda_act a, const T *x, const T *y, const T *gy, T *gx, int64_t n) {
    GRID_LOOP(i, n) {
        float xv = x ? ld(x + i) : 0.f, yv = y ? ld(y + i) : 0.f;
        st(gx + i, ld(gx + i) + ld(gy + i) * fn_grad(a, xv, yv));
    }
}

template <typename T, typename I>
__global__ void k_epilogue(const T *x, T *y, I n, I C, I inner, const float *scale, const float *bias,
                           const T *sum, cs_cuda_acts acts) {
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
        I c = inner == 1 ? i % C : (i / inner) % C; /* NHWC: inner is 1 */
        float v = ld(x + i);
        if (scale) v *= scale[c];
        if (bias) v += bias[c];
        if (sum) v += ld(sum + i);
        for (int k = 0; k < acts.n; k++) v = apply_fn(acts.a[k], v);
        st(y + i, v);
    }
}

/* The NHWC case (inner 1) with C a multiple of the vector width: each
 * thread moves 16 bytes (8 halves or 4 floats) of one pixel's channels.
 * The scalar kernel took 4.0 of batch-64 ResNet-50's 8.6 GPU ms on an
 * H200, ~5x what its memory traffic needs; this one 3.2 of 5.1
 * (bench/results/gpu-h200-run3-probe.txt, -run4.md).  Convolutions now use
 * cuDNN's fused epilogue where it takes them (cuda_backend.c, conv_fuse_trial):
 * this kernel remains for the rest. */
template <typename T, int V>
__global__ void k_epilogue_vec(const T *x, T *y, uint32_t nv, uint32_t C, const float *scale,
                               const float *bias, const T *sum, cs_cuda_acts acts) {
    for (uint32_t v = blockIdx.x * blockDim.x + threadIdx.x; v < nv; v += gridDim.x * blockDim.x) {
        uint32_t i = v * V, c = i % C;
        uint4 xr = *(const uint4 *)(x + i), sr = make_uint4(0u, 0u, 0u, 0u), yr;
        if (sum) sr = *(const uint4 *)(sum + i);
        const T *xv = (const T *)&xr, *sv = (const T *)&sr;
        T *yv = (T *)&yr;
#pragma unroll
        for (int k = 0; k < V; k++) {
            float f = ld(xv + k);
            if (scale) f *= scale[c + k];
            if (bias) f += bias[c + k];
            if (sum) f += ld(sv + k);
            for (int a = 0; a < acts.n; a++) f = apply_fn(acts.a[a], f);
            st(yv + k, f);
        }
        *(uint4 *)(y + i) = yr;
    }
}

template <typename T>
__global__ void k_chan_scale_bwd(const T *gy, T *gx, int64_t n, int64_t C, int64_t inner,
                                 const float *scale) {
    GRID_LOOP(i, n) {
        int64_t c = (i / inner) % C;
        st(gx + i, ld(gx + i) + ld(gy + i) * scale[c]);
    }
}

/* ---- pooling -------------------------------------------------------------------- */

/* The window of output (oh, ow) along one dim: start, clipped end, and the
 * divisor share of torch's AvgPool (see ops.c run_pool). */
struct win {
    int64_t lo, hi, span, valid;
};
__device__ __forceinline__ win window(int64_t o, int s, int pb, int pe, int k, int d, int64_t in) {
    win w;
    w.lo = o * s - pb;
    int64_t end = w.lo + (int64_t)(k - 1) * d + 1;
    int64_t pend = end < in + pe ? end : in + pe;
    w.span = pend - w.lo;
    w.hi = end < in ? end : in;
    int64_t vlo = w.lo < 0 ? 0 : w.lo;
    w.valid = w.hi > vlo ? w.hi - vlo : 0;
    return w;
}

/* Output elements are walked in y's memory order when ys is NHWC-like
 * (ys[1] == 1), else in NCHW order: consecutive threads write consecutive
 * addresses either way. */
__device__ __forceinline__ void pool_coords(const cs_cuda_pool &p, int64_t i, int64_t &n, int64_t &c,
                                            int64_t &oh, int64_t &ow) {
    if (p.ys[1] == 1) {
        c = i % p.C;
        i /= p.C;
        ow = i % p.OW;
        i /= p.OW;
        oh = i % p.OH;
        n = i / p.OH;
    } else {
        ow = i % p.OW;
        i /= p.OW;
        oh = i % p.OH;
        i /= p.OH;
        c = i % p.C;
        n = i / p.C;
    }
}

/* First maximum of the window in scan order (ops.c: strict >). */
template <typename T>
__device__ __forceinline__ int64_t window_argmax(const cs_cuda_pool &p, const T *xp, const win &wh,
                                                 const win &ww, float *best_out) {
    float best = -INFINITY;
    int64_t bi = -1;
    for (int64_t h = wh.lo; h < wh.hi; h += p.dh) {
        if (h < 0) continue;
        for (int64_t w = ww.lo; w < ww.hi; w += p.dw) {
            if (w < 0) continue;
            float v = ld(xp + h * p.xs[2] + w * p.xs[3]);
            if (v > best || bi < 0) {
                best = v;
                bi = h * p.W + w;
            }
        }
    }
    *best_out = best;
    return bi;
}

template <typename T>
__global__ void k_pool(cs_cuda_pool p, const T *x, T *y, int64_t total) {
    GRID_LOOP(i, total) {
        int64_t n, c, oh, ow;
        pool_coords(p, i, n, c, oh, ow);
        const T *xp = x + n * p.xs[0] + c * p.xs[1];
        win wh = window(oh, p.sh, p.ph, p.peh, p.kh, p.dh, p.H);
        win ww = window(ow, p.sw, p.pw, p.pew, p.kw, p.dw, p.W);
        float v;
        if (p.is_max) {
            window_argmax(p, xp, wh, ww, &v);
        } else {
            float acc = 0.f;
            for (int64_t h = wh.lo < 0 ? 0 : wh.lo; h < wh.hi; h++)
                for (int64_t w = ww.lo < 0 ? 0 : ww.lo; w < ww.hi; w++)
                    acc += ld(xp + h * p.xs[2] + w * p.xs[3]);
            int64_t cnt = p.include_pad ? wh.span * ww.span : wh.valid * ww.valid;
            v = cnt > 0 ? acc / (float)cnt : 0.f;
        }
        st(y + n * p.ys[0] + c * p.ys[1] + oh * p.ys[2] + ow * p.ys[3], v);
    }
}

/* Gather form (no atomics, deterministic): each input element sums the
 * contributions of the output windows that contain it. */
template <typename T>
__global__ void k_pool_bwd(cs_cuda_pool p, const T *x, const T *gy, T *gx, int64_t total) {
    GRID_LOOP(i, total) {
        int64_t n, c, h, w, r = i;
        if (p.xs[1] == 1) {
            c = r % p.C;
            r /= p.C;
            w = r % p.W;
            r /= p.W;
            h = r % p.H;
            n = r / p.H;
        } else {
            w = r % p.W;
            r /= p.W;
            h = r % p.H;
            r /= p.H;
            c = r % p.C;
            n = r / p.C;
        }
        const T *xp = x + n * p.xs[0] + c * p.xs[1];
        const T *gp = gy + n * p.ys[0] + c * p.ys[1];
        int64_t span_h = (int64_t)(p.kh - 1) * p.dh, span_w = (int64_t)(p.kw - 1) * p.dw;
        /* oh with oh*sh - ph <= h <= oh*sh - ph + span_h */
        int64_t oh0 = h + p.ph - span_h;
        oh0 = oh0 <= 0 ? 0 : (oh0 + p.sh - 1) / p.sh;
        int64_t oh1 = (h + p.ph) / p.sh;
        if (oh1 > p.OH - 1) oh1 = p.OH - 1;
        int64_t ow0 = w + p.pw - span_w;
        ow0 = ow0 <= 0 ? 0 : (ow0 + p.sw - 1) / p.sw;
        int64_t ow1 = (w + p.pw) / p.sw;
        if (ow1 > p.OW - 1) ow1 = p.OW - 1;
        float acc = 0.f;
        for (int64_t oh = oh0; oh <= oh1; oh++) {
            win wh = window(oh, p.sh, p.ph, p.peh, p.kh, p.dh, p.H);
            if ((h - wh.lo) % p.dh) continue;
            for (int64_t ow = ow0; ow <= ow1; ow++) {
                win ww = window(ow, p.sw, p.pw, p.pew, p.kw, p.dw, p.W);
                if ((w - ww.lo) % p.dw) continue;
                float g = ld(gp + oh * p.ys[2] + ow * p.ys[3]);
                if (p.is_max) {
                    float best;
                    if (window_argmax(p, xp, wh, ww, &best) == h * p.W + w) acc += g;
                } else {
                    int64_t cnt = p.include_pad ? wh.span * ww.span : wh.valid * ww.valid;
                    if (cnt > 0) acc += g / (float)cnt;
                }
            }
        }
        T *o = gx + n * p.xs[0] + c * p.xs[1] + h * p.xs[2] + w * p.xs[3];
        st(o, ld(o) + acc);
    }
}

/* ---- global pooling: block = 32 channels x 8 rows over hw ------------------------- */

template <typename TI, typename TO>
__global__ void k_gpool(const TI *x, int64_t N, int64_t C, int64_t HW, int64_t xn, int64_t xc,
                        int64_t xhw, TO *y, int64_t yn, int64_t yc, int is_max) {
    __shared__ float part[8][33];
    int64_t n = blockIdx.y, c = (int64_t)blockIdx.x * 32 + threadIdx.x;
    float acc = is_max ? -INFINITY : 0.f;
    if (c < C) {
        const TI *xp = x + n * xn + c * xc;
        for (int64_t j = threadIdx.y; j < HW; j += 8) {
            float v = ld(xp + j * xhw);
            acc = is_max ? fmaxf(acc, v) : acc + v;
        }
    }
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        for (int k = 1; k < 8; k++) acc = is_max ? fmaxf(acc, part[k][threadIdx.x]) : acc + part[k][threadIdx.x];
        st(y + n * yn + c * yc, is_max ? acc : acc / (float)HW);
    }
}

template <typename T>
__global__ void k_gpool_bwd(const T *x, const T *gy, T *gx, int64_t N, int64_t C, int64_t HW,
                            int64_t xn, int64_t xc, int64_t xhw, int64_t yn, int64_t yc, int is_max) {
    if (is_max) { /* one thread per (n, c): the first maximum takes it all */
        GRID_LOOP(i, N * C) {
            int64_t n = i / C, c = i % C;
            const T *xp = x + n * xn + c * xc;
            int64_t best = 0;
            for (int64_t j = 1; j < HW; j++)
                if (ld(xp + j * xhw) > ld(xp + best * xhw)) best = j;
            T *o = gx + n * xn + c * xc + best * xhw;
            st(o, ld(o) + ld(gy + n * yn + c * yc));
        }
        return;
    }
    float inv = 1.f / (float)HW;
    GRID_LOOP(i, N * C * HW) { /* i walks (n, hw, c): coalesced for NHWC */
        int64_t c = i % C, r = i / C, j = r % HW, n = r / HW;
        T *o = gx + n * xn + c * xc + j * xhw;
        st(o, ld(o) + ld(gy + n * yn + c * yc) * inv);
    }
}

/* ---- softmax and layer norm (dense rows, fp32 maths) --------------------------- */

template <typename T>
__global__ void k_softmax(const T *x, T *y, int64_t outer, int64_t len, int64_t inner) {
    GRID_LOOP(i, outer * inner) {
        int64_t base = (i / inner) * len * inner + i % inner;
        float mx = -INFINITY;
        for (int64_t k = 0; k < len; k++) mx = fmaxf(mx, ld(x + base + k * inner));
        float sum = 0.f;
        for (int64_t k = 0; k < len; k++) sum += expf(ld(x + base + k * inner) - mx);
        for (int64_t k = 0; k < len; k++) st(y + base + k * inner, expf(ld(x + base + k * inner) - mx) / sum);
    }
}

template <typename T>
__global__ void k_softmax_bwd(const T *y, const T *gy, T *gx, int64_t outer, int64_t len, int64_t inner) {
    GRID_LOOP(i, outer * inner) {
        int64_t base = (i / inner) * len * inner + i % inner;
        float dot = 0.f;
        for (int64_t k = 0; k < len; k++) dot += ld(gy + base + k * inner) * ld(y + base + k * inner);
        for (int64_t k = 0; k < len; k++) {
            int64_t o = base + k * inner;
            st(gx + o, ld(gx + o) + ld(y + o) * (ld(gy + o) - dot));
        }
    }
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* one warp per row; blockDim = (32, 4) */
template <typename T>
__global__ void k_layernorm(const T *x, T *y, int64_t rows, int64_t len, const float *gamma,
                            const float *beta, float eps) {
    int64_t r = (int64_t)blockIdx.x * 4 + threadIdx.y;
    if (r >= rows) return;
    const T *xr = x + r * len;
    float s = 0.f;
    for (int64_t k = threadIdx.x; k < len; k += 32) s += ld(xr + k);
    float mean = warp_sum(s) / (float)len, v = 0.f;
    for (int64_t k = threadIdx.x; k < len; k += 32) {
        float d = ld(xr + k) - mean;
        v += d * d;
    }
    float rstd = rsqrtf(warp_sum(v) / (float)len + eps);
    for (int64_t k = threadIdx.x; k < len; k += 32) {
        float o = (ld(xr + k) - mean) * rstd;
        if (gamma) o *= gamma[k];
        if (beta) o += beta[k];
        st(y + r * len + k, o);
    }
}

template <typename T>
__global__ void k_layernorm_bwd(const T *x, const T *gy, T *gx, int64_t rows, int64_t len,
                                const float *gamma, float eps) {
    int64_t r = (int64_t)blockIdx.x * 4 + threadIdx.y;
    if (r >= rows) return;
    const T *xr = x + r * len, *gr = gy + r * len;
    float s = 0.f;
    for (int64_t k = threadIdx.x; k < len; k += 32) s += ld(xr + k);
    float mean = warp_sum(s) / (float)len, v = 0.f;
    for (int64_t k = threadIdx.x; k < len; k += 32) {
        float d = ld(xr + k) - mean;
        v += d * d;
    }
    float rstd = rsqrtf(warp_sum(v) / (float)len + eps);
    /* dx = rstd · (g − mean(g) − x̂·mean(g·x̂)), g = dy·γ (backward.c) */
    float mg = 0.f, mgx = 0.f;
    for (int64_t k = threadIdx.x; k < len; k += 32) {
        float g = ld(gr + k) * (gamma ? gamma[k] : 1.f), xh = (ld(xr + k) - mean) * rstd;
        mg += g;
        mgx += g * xh;
    }
    mg = warp_sum(mg) / (float)len;
    mgx = warp_sum(mgx) / (float)len;
    for (int64_t k = threadIdx.x; k < len; k += 32) {
        float g = ld(gr + k) * (gamma ? gamma[k] : 1.f), xh = (ld(xr + k) - mean) * rstd;
        T *o = gx + r * len + k;
        st(o, ld(o) + rstd * (g - mg - xh * mgx));
    }
}

/* ---- broadcast reduction (binary backward) -------------------------------------- */

template <typename T>
__global__ void k_bcast_reduce(int mode, const T *gy, const T *f, const T *f2, T *ga, cs_cuda_red r,
                               int64_t nk, int64_t nr) {
    GRID_LOOP(i, nk) {
        int64_t q = i, oga = 0, ogy = 0, of = 0, of2 = 0;
        for (int d = r.nk - 1; d >= 0; d--) {
            int64_t c = q % r.kd[d];
            q /= r.kd[d];
            oga += c * r.kga[d];
            ogy += c * r.kgy[d];
            of += c * r.kf[d];
            of2 += c * r.kf2[d];
        }
        float acc = 0.f;
        for (int64_t j = 0; j < nr; j++) {
            int64_t q2 = j, pgy = ogy, pf = of, pf2 = of2;
            for (int d = r.nr - 1; d >= 0; d--) {
                int64_t c = q2 % r.rd[d];
                q2 /= r.rd[d];
                pgy += c * r.rgy[d];
                pf += c * r.rf[d];
                pf2 += c * r.rf2[d];
            }
            float g = ld(gy + pgy);
            if (mode == 1) g *= ld(f + pf);
            else if (mode == 2) g /= ld(f + pf);
            else if (mode == 3) {
                float fv = ld(f + pf);
                g *= -ld(f2 + pf2) / (fv * fv);
            } else if (mode == 4) g = -g;
            acc += g;
        }
        st(ga + oga, ld(ga + oga) + acc);
    }
}

/* ---- Grad-CAM ------------------------------------------------------------------- */

/* One block per map pixel (n, y, x): the block's threads split the
 * channels and reduce in registers, then across warps.  (One thread per
 * pixel looping over C = 2048 channels left 49 threads doing all of
 * ResNet-50's layer4 map: backward + map took 0.95 ms on an H200,
 * bench/results/gpu-h200-run1.md.)  Deterministic order. */
template <typename T>
__global__ void k_cam(const T *A, const float *w, float *map, int64_t N, int64_t C, int64_t H,
                      int64_t W, int64_t an, int64_t ac, int64_t ah, int64_t aw) {
    __shared__ float part[32];
    int64_t i = blockIdx.x;
    int64_t x = i % W, r = i / W, y = r % H, n = r / H;
    const T *ap = A + n * an + y * ah + x * aw;
    const float *wp = w + n * C;
    float acc = 0.f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) acc += wp[c] * ld(ap + c * ac);
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, o);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = acc;
    __syncthreads();
    if (threadIdx.x < 32) {
        acc = threadIdx.x < (blockDim.x >> 5) ? part[threadIdx.x] : 0.f;
        for (int o = 16; o > 0; o >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, o);
        if (threadIdx.x == 0) map[i] = acc > 0.f ? acc : 0.f;
    }
}

template <typename T>
__global__ void k_fill(T *y, int64_t n, float v) {
    GRID_LOOP(i, n) st(y + i, v);
}

template <typename T>
__global__ void k_cast(const float *x, T *y, int64_t n) {
    GRID_LOOP(i, n) st(y + i, x[i]);
}



} // namespace

/* Instantiates body once per storage type: T is the type in scope. */
#define DISPATCH(dt, body)                                                               \
    do {                                                                                 \
        switch (dt) {                                                                    \
        case CS_CUDA_F32: { typedef float T; body; } break;                              \
        case CS_CUDA_F16: { typedef __half T; body; } break;                             \
        case CS_CUDA_BF16: { typedef __nv_bfloat16 T; body; } break;                     \
        default: return (int)cudaErrorInvalidValue;                                      \
        }                                                                                \
    } while (0)

static int64_t walk_numel(const cs_cuda_walk *w) {
    int64_t n = 1;
    for (int d = 0; d < w->nd; d++) n *= w->dims[d];
    return n;
}

/* every index and offset of the walk below 2^31 (non-negative strides) */
static bool walk_fits_i32(const cs_cuda_walk *w, int64_t n) {
    if (n >= INT32_MAX) return false;
    const int64_t *ss[3] = {w->so, w->sa, w->sb};
    for (int k = 0; k < 3; k++) {
        int64_t ext = 0;
        for (int d = 0; d < w->nd; d++) {
            if (ss[k][d] < 0) return false;
            ext += (w->dims[d] - 1) * ss[k][d];
        }
        if (ext >= INT32_MAX) return false;
    }
    return true;
}

template <typename TO>
static int strided_to(cs_cuda_stream s, int op, int accum, TO *out, cs_cuda_dt ti, const void *a,
                      const void *b, const cs_cuda_walk *w) {
    int64_t n = walk_numel(w);
    if (n <= 0) return 0;
    if (walk_fits_i32(w, n))
        DISPATCH(ti, (k_strided<TO, T, uint32_t><<<blocks_for(n), kThreads, 0, S(s)>>>(
                         op, accum, out, (const T *)a, (const T *)b, *w, (uint32_t)n)));
    else
        DISPATCH(ti, (k_strided<TO, T, int64_t><<<blocks_for(n), kThreads, 0, S(s)>>>(
                         op, accum, out, (const T *)a, (const T *)b, *w, n)));
    return launched();
}

extern "C" int cs_cuda_k_strided(cs_cuda_stream s, int op, int accum, cs_cuda_dt to, void *out,
                                 cs_cuda_dt ti, const void *a, const void *b, const cs_cuda_walk *w) {
    if (op != CS_BIN_COPY && to != ti) return (int)cudaErrorInvalidValue;
    DISPATCH(to, return strided_to<T>(s, op, accum, (T *)out, ti, a, b, w));
    return 0;
}

extern "C" int cs_cuda_k_unary(cs_cuda_stream s, cs_cuda_dt dt, const void *x, void *y, int64_t n,
                               cs_cuda_act a) {
    if (n <= 0) return 0;
    DISPATCH(dt, (k_unary<T><<<blocks_for(n), kThreads, 0, S(s)>>>((const T *)x, (T *)y, n, a)));
    return launched();
}

extern "C" int cs_cuda_k_unary_bwd(cs_cuda_stream s, cs_cuda_dt dt, cs_cuda_act a, const void *x,
                                   const void *y, const void *gy, void *gx, int64_t n) {
    if (n <= 0) return 0;
    DISPATCH(dt, (k_unary_bwd<T><<<blocks_for(n), kThreads, 0, S(s)>>>(a, (const T *)x, (const T *)y,
                                                                      (const T *)gy, (T *)gx, n)));
    return launched();
}

extern "C" int cs_cuda_k_epilogue(cs_cuda_stream s, cs_cuda_dt dt, const void *x, void *y, int64_t n,
                                  int64_t C, int64_t inner, const float *scale, const float *bias,
                                  const void *sum, cs_cuda_acts acts) {
    if (n <= 0) return 0;
    if (C < 1 || inner < 1) return (int)cudaErrorInvalidValue;
    int vw = dt == CS_CUDA_F32 ? 4 : 8; /* elements per 16 bytes */
    bool aligned = (((uintptr_t)x | (uintptr_t)y | (uintptr_t)sum) & 15) == 0;
    if (inner == 1 && C % vw == 0 && n % vw == 0 && n < INT32_MAX && aligned) {
        uint32_t nv = (uint32_t)(n / vw);
        if (dt == CS_CUDA_F32)
            k_epilogue_vec<float, 4><<<blocks_for(nv), kThreads, 0, S(s)>>>(
                (const float *)x, (float *)y, nv, (uint32_t)C, scale, bias, (const float *)sum, acts);
        else if (dt == CS_CUDA_F16)
            k_epilogue_vec<__half, 8><<<blocks_for(nv), kThreads, 0, S(s)>>>(
                (const __half *)x, (__half *)y, nv, (uint32_t)C, scale, bias, (const __half *)sum, acts);
        else
            k_epilogue_vec<__nv_bfloat16, 8><<<blocks_for(nv), kThreads, 0, S(s)>>>(
                (const __nv_bfloat16 *)x, (__nv_bfloat16 *)y, nv, (uint32_t)C, scale, bias,
                (const __nv_bfloat16 *)sum, acts);
        return launched();
    }
    if (n < INT32_MAX)
        DISPATCH(dt, (k_epilogue<T, uint32_t><<<blocks_for(n), kThreads, 0, S(s)>>>(
                         (const T *)x, (T *)y, (uint32_t)n, (uint32_t)C, (uint32_t)inner, scale, bias,
                         (const T *)sum, acts)));
    else
        DISPATCH(dt, (k_epilogue<T, int64_t><<<blocks_for(n), kThreads, 0, S(s)>>>(
                         (const T *)x, (T *)y, n, C, inner, scale, bias, (const T *)sum, acts)));
    return launched();
}

extern "C" int cs_cuda_k_chan_scale_bwd(cs_cuda_stream s, cs_cuda_dt dt, const void *gy, void *gx,
                                        int64_t n, int64_t C, int64_t inner, const float *scale) {
    if (n <= 0) return 0;
    if (C < 1 || inner < 1) return (int)cudaErrorInvalidValue;
    DISPATCH(dt, (k_chan_scale_bwd<T><<<blocks_for(n), kThreads, 0, S(s)>>>((const T *)gy, (T *)gx, n, C,
                                                                           inner, scale)));
    return launched();
}

extern "C" int cs_cuda_k_pool(cs_cuda_stream s, cs_cuda_dt dt, const cs_cuda_pool *p, const void *x,
                              void *y) {
    int64_t n = p->N * p->C * p->OH * p->OW;
    if (n <= 0) return 0;
    if (p->sh < 1 || p->sw < 1 || p->dh < 1 || p->dw < 1) return (int)cudaErrorInvalidValue;
    DISPATCH(dt, (k_pool<T><<<blocks_for(n), kThreads, 0, S(s)>>>(*p, (const T *)x, (T *)y, n)));
    return launched();
}

extern "C" int cs_cuda_k_pool_bwd(cs_cuda_stream s, cs_cuda_dt dt, const cs_cuda_pool *p,
                                  const void *x, const void *gy, void *gx) {
    int64_t n = p->N * p->C * p->H * p->W;
    if (n <= 0) return 0;
    if (p->sh < 1 || p->sw < 1 || p->dh < 1 || p->dw < 1) return (int)cudaErrorInvalidValue;
    DISPATCH(dt, (k_pool_bwd<T><<<blocks_for(n), kThreads, 0, S(s)>>>(*p, (const T *)x, (const T *)gy,
                                                                     (T *)gx, n)));
    return launched();
}

template <typename TI>
static int gpool_from(cs_cuda_stream s, const TI *x, int64_t N, int64_t C, int64_t HW, int64_t xn,
                      int64_t xc, int64_t xhw, cs_cuda_dt ty, void *y, int64_t yn, int64_t yc,
                      int is_max) {
    dim3 grid((unsigned)((C + 31) / 32), (unsigned)N), block(32, 8);
    DISPATCH(ty, (k_gpool<TI, T><<<grid, block, 0, S(s)>>>(x, N, C, HW, xn, xc, xhw, (T *)y, yn, yc,
                                                            is_max)));
    return launched();
}

extern "C" int cs_cuda_k_gpool(cs_cuda_stream s, cs_cuda_dt tx, const void *x, int64_t N, int64_t C,
                               int64_t HW, int64_t xn, int64_t xc, int64_t xhw, cs_cuda_dt ty, void *y,
                               int64_t yn, int64_t yc, int is_max) {
    if (N <= 0 || C <= 0 || HW <= 0) return 0;
    if (N > 65535) return (int)cudaErrorInvalidValue; /* grid.y */
    DISPATCH(tx, return gpool_from<T>(s, (const T *)x, N, C, HW, xn, xc, xhw, ty, y, yn, yc, is_max));
    return 0;
}

extern "C" int cs_cuda_k_gpool_bwd(cs_cuda_stream s, cs_cuda_dt dt, const void *x, const void *gy,
                                   void *gx, int64_t N, int64_t C, int64_t HW, int64_t xn, int64_t xc,
                                   int64_t xhw, int64_t yn, int64_t yc, int is_max) {
    int64_t n = is_max ? N * C : N * C * HW;
    if (n <= 0) return 0;
    DISPATCH(dt, (k_gpool_bwd<T><<<blocks_for(n), kThreads, 0, S(s)>>>((const T *)x, (const T *)gy,
                                                                      (T *)gx, N, C, HW, xn, xc, xhw,
                                                                      yn, yc, is_max)));
    return launched();
}

extern "C" int cs_cuda_k_softmax(cs_cuda_stream s, cs_cuda_dt dt, const void *x, void *y, int64_t outer,
                                 int64_t len, int64_t inner) {
    int64_t n = outer * inner;
    if (n <= 0 || len <= 0) return 0;
    DISPATCH(dt, (k_softmax<T><<<blocks_for(n), kThreads, 0, S(s)>>>((const T *)x, (T *)y, outer, len,
                                                                    inner)));
    return launched();
}

extern "C" int cs_cuda_k_softmax_bwd(cs_cuda_stream s, cs_cuda_dt dt, const void *y, const void *gy,
                                     void *gx, int64_t outer, int64_t len, int64_t inner) {
    int64_t n = outer * inner;
    if (n <= 0 || len <= 0) return 0;
    DISPATCH(dt, (k_softmax_bwd<T><<<blocks_for(n), kThreads, 0, S(s)>>>((const T *)y, (const T *)gy,
                                                                        (T *)gx, outer, len, inner)));
    return launched();
}

extern "C" int cs_cuda_k_layernorm(cs_cuda_stream s, cs_cuda_dt dt, const void *x, void *y,
                                   int64_t rows, int64_t len, const float *gamma, const float *beta,
                                   float eps) {
    if (rows <= 0 || len <= 0) return 0;
    if ((rows + 3) / 4 > 0x7fffffff) return (int)cudaErrorInvalidValue;
    dim3 grid((unsigned)((rows + 3) / 4)), block(32, 4);
    DISPATCH(dt, (k_layernorm<T><<<grid, block, 0, S(s)>>>((const T *)x, (T *)y, rows, len, gamma, beta,
                                                           eps)));
    return launched();
}

extern "C" int cs_cuda_k_layernorm_bwd(cs_cuda_stream s, cs_cuda_dt dt, const void *x, const void *gy,
                                       void *gx, int64_t rows, int64_t len, const float *gamma,
                                       float eps) {
    if (rows <= 0 || len <= 0) return 0;
    if ((rows + 3) / 4 > 0x7fffffff) return (int)cudaErrorInvalidValue;
    dim3 grid((unsigned)((rows + 3) / 4)), block(32, 4);
    DISPATCH(dt, (k_layernorm_bwd<T><<<grid, block, 0, S(s)>>>((const T *)x, (const T *)gy, (T *)gx, rows,
                                                               len, gamma, eps)));
    return launched();
}

extern "C" int cs_cuda_k_bcast_reduce(cs_cuda_stream s, cs_cuda_dt dt, int mode, const void *gy,
                                      const void *f, const void *f2, void *ga, const cs_cuda_red *r) {
    int64_t nk = 1, nr = 1;
    for (int d = 0; d < r->nk; d++) nk *= r->kd[d];
    for (int d = 0; d < r->nr; d++) nr *= r->rd[d];
    if (nk <= 0 || nr <= 0) return 0;
    DISPATCH(dt, (k_bcast_reduce<T><<<blocks_for(nk), kThreads, 0, S(s)>>>(
                      mode, (const T *)gy, (const T *)f, (const T *)f2, (T *)ga, *r, nk, nr)));
    return launched();
}

extern "C" int cs_cuda_k_cam(cs_cuda_stream s, cs_cuda_dt dt, const void *A, const float *w, float *map,
                             int64_t N, int64_t C, int64_t H, int64_t W, int64_t an, int64_t ac,
                             int64_t ah, int64_t aw) {
    int64_t n = N * H * W;
    if (n <= 0) return 0;
    if (n > INT32_MAX) return (int)cudaErrorInvalidValue; /* one block per pixel */
    DISPATCH(dt, (k_cam<T><<<(unsigned)n, kThreads, 0, S(s)>>>((const T *)A, w, map, N, C, H, W, an, ac, ah,
                                                              aw)));
    return launched();
}

extern "C" int cs_cuda_k_fill(cs_cuda_stream s, cs_cuda_dt dt, void *y, int64_t n, float v) {
    if (n <= 0) return 0;
    DISPATCH(dt, (k_fill<T><<<blocks_for(n), kThreads, 0, S(s)>>>((T *)y, n, v)));
    return launched();
}

extern "C" int cs_cuda_k_cast_from_f32(cs_cuda_stream s, cs_cuda_dt dt, const float *x, void *y,
                                       int64_t n) {
    if (n <= 0) return 0;
    DISPATCH(dt, (k_cast<T><<<blocks_for(n), kThreads, 0, S(s)>>>(x, (T *)y, n)));
    return launched();
}
