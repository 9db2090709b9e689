/* CUDA backend internals: the kernel launchers of kernels.cu (C linkage, so
 * the host code in cuda_backend.c stays C11) and the small POD structs they
 * take by value.
 *
 * Data layout: a device tensor is described by its logical (ONNX, NCHW)
 * dims and its element strides per logical dim; 4-D activations are stored
 * NHWC (channels last, the layout cuDNN's tensor-core kernels want), the
 * rest dense C order.  The launchers never allocate and only enqueue work on
 * the given stream, so every one of them may be captured into a CUDA Graph.
 * Each returns the cudaError_t of the launch (0 = cudaSuccess) as an int.
 *
 * Storage types: CS_CUDA_F32 / F16 / BF16.  Every kernel computes in fp32
 * and rounds once when it stores (autocast semantics).  Backward kernels
 * *accumulate* into the gradient (gx += ...): the backward clears the whole
 * gradient arena once and every contribution adds, so the order of
 * contributions never matters. */
#ifndef CS_CUDA_INTERNAL_H
#define CS_CUDA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct CUstream_st *cs_cuda_stream; /* = cudaStream_t, without cuda_runtime.h */

typedef enum cs_cuda_dt { CS_CUDA_F32 = 0, CS_CUDA_F16 = 1, CS_CUDA_BF16 = 2 } cs_cuda_dt;

/* Element-wise functions: fused activations and unary ops (same numbering
 * on both sides of the launcher boundary). */
typedef enum cs_cuda_fn {
    CS_FN_IDENTITY = 0, CS_FN_RELU, CS_FN_CLIP, CS_FN_LEAKYRELU, CS_FN_SIGMOID, CS_FN_HARDSIGMOID,
    CS_FN_HARDSWISH, CS_FN_TANH, CS_FN_GELU_ERF, CS_FN_SWISH, CS_FN_ERF, CS_FN_SQRT, CS_FN_EXP,
    CS_FN_NEG, CS_FN_RECIPROCAL
} cs_cuda_fn;

typedef struct cs_cuda_act {
    int fn; /* cs_cuda_fn */
    float alpha, beta; /* Clip: min, max; LeakyRelu: alpha; HardSigmoid: alpha, beta */
} cs_cuda_act;

#define CS_CUDA_MAX_ACTS 4
typedef struct cs_cuda_acts {
    int n;
    cs_cuda_act a[CS_CUDA_MAX_ACTS];
} cs_cuda_acts;

/* A strided walk of up to CS_CUDA_MAXD dims: element i of the walk (C order
 * over dims) is at sum(coord[d] * s?[d]) in each operand.  The output of
 * cs_cuda_k_strided is walked through so[] too (it need not be dense). */
#define CS_CUDA_MAXD 6
typedef struct cs_cuda_walk {
    int nd;
    int64_t dims[CS_CUDA_MAXD];
    int64_t so[CS_CUDA_MAXD], sa[CS_CUDA_MAXD], sb[CS_CUDA_MAXD];
} cs_cuda_walk;

typedef enum cs_cuda_binop {
    CS_BIN_COPY = 0, /* out = a (b unused); converts the type */
    CS_BIN_ADD, CS_BIN_SUB, CS_BIN_MUL, CS_BIN_DIV, CS_BIN_POW
} cs_cuda_binop;

/* out (type to) = op(a, b) (a, b of type ti); accum: out += op(a, b). */
int cs_cuda_k_strided(cs_cuda_stream st, int op, int accum, cs_cuda_dt to, void *out,
                      cs_cuda_dt ti, const void *a, const void *b, const cs_cuda_walk *w);

/* y[i] = fn(x[i]) for n elements; y may be x. */
int cs_cuda_k_unary(cs_cuda_stream st, cs_cuda_dt dt, const void *x, void *y, int64_t n,
                    cs_cuda_act a);
/* gx[i] += gy[i] * fn'(x[i], y[i]) (PyTorch's conventions, see backward.c). */
int cs_cuda_k_unary_bwd(cs_cuda_stream st, cs_cuda_dt dt, cs_cuda_act a, const void *x,
                        const void *y, const void *gy, void *gx, int64_t n);

/* y = acts(x * scale[c] + bias[c] + sum) over n elements, c = (i / inner) % C.
 * scale, bias: fp32 device arrays or NULL; sum: same layout as y or NULL.
 * y may be x (the Conv/Gemm epilogue runs in place). */
int cs_cuda_k_epilogue(cs_cuda_stream st, cs_cuda_dt dt, const void *x, void *y, int64_t n,
                       int64_t C, int64_t inner, const float *scale, const float *bias,
                       const void *sum, cs_cuda_acts acts);
/* gx += gy * scale[c]: the input gradient of a per-channel affine op. */
int cs_cuda_k_chan_scale_bwd(cs_cuda_stream st, cs_cuda_dt dt, const void *gy, void *gx,
                             int64_t n, int64_t C, int64_t inner, const float *scale);

typedef struct cs_cuda_pool {
    int64_t N, C, H, W, OH, OW;
    int64_t xs[4], ys[4]; /* strides of x and y per logical n, c, h, w */
    int kh, kw, sh, sw, ph, pw, peh, pew, dh, dw; /* pe*: end padding of the attribute */
    int is_max, include_pad;
} cs_cuda_pool;
int cs_cuda_k_pool(cs_cuda_stream st, cs_cuda_dt dt, const cs_cuda_pool *p, const void *x, void *y);
/* gx += dPool/dx · gy; gx and gy use the strides of x and y. */
int cs_cuda_k_pool_bwd(cs_cuda_stream st, cs_cuda_dt dt, const cs_cuda_pool *p, const void *x,
                       const void *gy, void *gx);

/* Global pooling over HW of x (strides xn, xc, xhw per n, c, flat hw — an
 * NHWC or NCHW 4-D tensor both have a flat hw stride) into y[n*yn + c*yc]
 * of type ty (fp32 for the CAM weights). */
int cs_cuda_k_gpool(cs_cuda_stream st, cs_cuda_dt tx, const void *x, int64_t N, int64_t C,
                    int64_t HW, int64_t xn, int64_t xc, int64_t xhw, cs_cuda_dt ty, void *y,
                    int64_t yn, int64_t yc, int is_max);
int cs_cuda_k_gpool_bwd(cs_cuda_stream st, cs_cuda_dt dt, const void *x, const void *gy, void *gx,
                        int64_t N, int64_t C, int64_t HW, int64_t xn, int64_t xc, int64_t xhw,
                        int64_t yn, int64_t yc, int is_max);

/* Dense softmax over len (stride inner), for outer x inner rows. */
int cs_cuda_k_softmax(cs_cuda_stream st, cs_cuda_dt dt, const void *x, void *y, int64_t outer,
                      int64_t len, int64_t inner);
int cs_cuda_k_softmax_bwd(cs_cuda_stream st, cs_cuda_dt dt, const void *y, const void *gy, void *gx,
                          int64_t outer, int64_t len, int64_t inner);
/* Dense LayerNormalization over the last len elements of each row. */
int cs_cuda_k_layernorm(cs_cuda_stream st, cs_cuda_dt dt, const void *x, void *y, int64_t rows,
                        int64_t len, const float *gamma, const float *beta, float eps);
int cs_cuda_k_layernorm_bwd(cs_cuda_stream st, cs_cuda_dt dt, const void *x, const void *gy,
                            void *gx, int64_t rows, int64_t len, const float *gamma, float eps);

/* Broadcast binary backward: ga[k] += sum over r of g(k, r), with g = gy
 * (mode 0), gy*f (1), gy/f (2), -gy*f2/f² (3), -gy (4); k walks the dims a
 * keeps, r the dims it broadcasts over. */
typedef struct cs_cuda_red {
    int nk, nr;
    int64_t kd[CS_CUDA_MAXD], kga[CS_CUDA_MAXD], kgy[CS_CUDA_MAXD], kf[CS_CUDA_MAXD], kf2[CS_CUDA_MAXD];
    int64_t rd[CS_CUDA_MAXD], rgy[CS_CUDA_MAXD], rf[CS_CUDA_MAXD], rf2[CS_CUDA_MAXD];
} cs_cuda_red;
int cs_cuda_k_bcast_reduce(cs_cuda_stream st, cs_cuda_dt dt, int mode, const void *gy, const void *f,
                           const void *f2, void *ga, const cs_cuda_red *r);

/* Grad-CAM on the device: map[n,h,w] = relu(sum_c w[n*C + c] * A[n,c,h,w])
 * in fp32, A with strides an, ac, ah, aw; map dense N x H x W. */
int cs_cuda_k_cam(cs_cuda_stream st, cs_cuda_dt dt, const void *A, const float *w, float *map,
                  int64_t N, int64_t C, int64_t H, int64_t W, int64_t an, int64_t ac, int64_t ah,
                  int64_t aw);

/* y[0..n) = v */
int cs_cuda_k_fill(cs_cuda_stream st, cs_cuda_dt dt, void *y, int64_t n, float v);
/* fp32 host-side values to the storage type, dense (weights at upload). */
int cs_cuda_k_cast_from_f32(cs_cuda_stream st, cs_cuda_dt dt, const float *x, void *y, int64_t n);

/* ---- host-side helpers (cuda_host.c: plain C, no GPU needed, unit-tested
 * by tests/unit/test_cuda.c --host-only) ---- */

/* IEEE fp16 / bfloat16 bits of x, round to nearest even (what
 * __float2half_rn / __float2bfloat16_rn do), NaN kept NaN. */
uint16_t cs_cuda_f32_to_f16(float x);
uint16_t cs_cuda_f32_to_bf16(float x);
float cs_cuda_f16_to_f32(uint16_t h);
float cs_cuda_bf16_to_f32(uint16_t h);
size_t cs_cuda_dt_size(cs_cuda_dt dt);
/* n fp32 values to dt's representation in dst (dst may not alias src). */
void cs_cuda_convert(cs_cuda_dt dt, const float *src, void *dst, int64_t n);
/* Conv weights O x I x KH x KW (C order) to O x KH x KW x I (cuDNN's NHWC
 * filter layout, "KRSC"). */
void cs_cuda_oihw_to_ohwi(const float *src, float *dst, int64_t O, int64_t I, int64_t KH, int64_t KW);
/* Element strides of a 4-D NCHW-dims tensor stored NHWC (per logical dim). */
void cs_cuda_nhwc_strides(const int64_t dims[4], int64_t strides[4]);
/* Dense C-order strides of dims. */
void cs_cuda_dense_strides(int nd, const int64_t *dims, int64_t *strides);
/* Builds a walk over nd logical dims: drops size-1 dims, orders the rest
 * by descending output stride (coalesced writes), merges dims that are
 * contiguous in all three operands.  sb may be NULL.  Returns 0, or -1 when
 * more than CS_CUDA_MAXD dims remain. */
int cs_cuda_walk_make(cs_cuda_walk *w, int nd, const int64_t *dims, const int64_t *so,
                      const int64_t *sa, const int64_t *sb);

#ifdef __cplusplus
}
#endif
#endif
