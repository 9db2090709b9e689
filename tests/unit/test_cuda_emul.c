/* The CUDA backend's host code run without a GPU: this file defines the
 * CUDA runtime, cuDNN and cuBLAS functions src/cuda/cuda_backend.c calls
 * (device memory = host memory) and CPU versions of the kernel launchers of
 * kernels.cu, so the whole backend — device selection, planning, layouts,
 * fusion, liveness, weight upload, the backward wiring, the Grad-CAM path,
 * fp16/bf16 storage rounding — runs on the CPU and is compared with the CPU
 * backend on every golden family and the default model.
 *
 * What this does NOT check: the real kernels (their CPU versions here are
 * written from the same formulas, not compiled from kernels.cu), real cuDNN
 * and cuBLAS behaviour, CUDA Graphs (capture is refused here, so the
 * backend's eager fallback runs), anything about speed.  test_cuda does that
 * on a GPU.
 *
 * The fakes are link-time interposition: the test executable's definitions
 * win over libcudart/libcudnn/libcublas, and kernels.cu's launchers are not
 * pulled from camserve_core because every one of them is defined here. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>

#ifndef CS_HAVE_CUDA
int main(void) {
    printf("test_cuda_emul: SKIPPED: camserve was built without CUDA support\n");
    return 77;
}
#else

#include "camserve/cam.h"
#include "camserve/engine.h"
#include "camserve/explain.h"
#include "camserve/models.h"
#include "camserve/npy.h"
#include "unit/golden_set.h"
#include "cuda/cuda_internal.h"
#include "cuda/gpuprep_internal.h"
#include "camserve/gpuprep.h"
#include "camserve/imageio.h"
#include "camserve/service.h"
#include "unit/gpuprep_exec.h"
#include "unit/gpuprep_fixture.h"
#include "cli/input.h"

#include <dlfcn.h>
#include <omp.h>
#include <turbojpeg.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <dirent.h>
#include <math.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- storage types ------------------------------------------------------------------ */

static float ldv(cs_cuda_dt t, const void *p, int64_t i) {
    if (t == CS_CUDA_F32) return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    return t == CS_CUDA_F16 ? cs_cuda_f16_to_f32(h) : cs_cuda_bf16_to_f32(h);
}

static void stv(cs_cuda_dt t, void *p, int64_t i, float v) {
    if (t == CS_CUDA_F32) ((float *)p)[i] = v;
    else ((uint16_t *)p)[i] = t == CS_CUDA_F16 ? cs_cuda_f32_to_f16(v) : cs_cuda_f32_to_bf16(v);
}

/* ---- CUDA runtime --------------------------------------------------------------------- */

static int g_alloc; /* live fake device/pinned allocations, for a leak check */
static size_t g_alloc_max; /* > 0: device allocations above this fail, as on a full GPU */

cudaError_t cudaMalloc(void **p, size_t n) {
    if (g_alloc_max && n > g_alloc_max) {
        *p = NULL;
        return cudaErrorMemoryAllocation;
    }
    *p = calloc(1, n ? n : 1);
    if (*p) g_alloc++;
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void *p) {
    if (p) g_alloc--;
    free(p);
    return cudaSuccess;
}
cudaError_t cudaHostAlloc(void **p, size_t n, unsigned int flags) {
    (void)flags;
    return cudaMalloc(p, n);
}
cudaError_t cudaFreeHost(void *p) { return cudaFree(p); }
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, enum cudaMemcpyKind k) {
    (void)k;
    memmove(d, s, n);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, enum cudaMemcpyKind k, cudaStream_t st) {
    (void)st;
    return cudaMemcpy(d, s, n, k);
}
cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t st) {
    (void)st;
    memset(d, v, n);
    return cudaSuccess;
}
cudaError_t cudaGetDeviceCount(int *n) {
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaDeviceGetAttribute(int *v, enum cudaDeviceAttr a, int d) {
    (void)a, (void)d;
    *v = 9;
    return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int d) {
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "CPU emulation");
    p->major = 9;
    return d == 0 ? cudaSuccess : cudaErrorInvalidDevice;
}
const char *cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated CUDA error"; }
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
cudaError_t cudaRuntimeGetVersion(int *v) {
    *v = 0;
    return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags) {
    (void)flags;
    return cudaMalloc((void **)s, 8);
}
cudaError_t cudaStreamDestroy(cudaStream_t s) { return cudaFree(s); }
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    (void)s;
    return cudaSuccess;
}
/* events (CS_CUDA_PROFILE): the host clock at record time */
cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaMalloc((void **)e, sizeof(double)); }
cudaError_t cudaEventDestroy(cudaEvent_t e) { return cudaFree(e); }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    (void)s;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    *(double *)(void *)e = (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
    return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    *ms = (float)(*(double *)(void *)b - *(double *)(void *)a);
    return cudaSuccess;
}
static int g_capture_refused;
cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode m) {
    (void)s, (void)m;
    g_capture_refused++;
    return cudaErrorNotSupported;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g) {
    (void)s;
    *g = NULL;
    return cudaErrorNotSupported;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, unsigned long long f) {
    (void)g, (void)f;
    *e = NULL;
    return cudaErrorNotSupported;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t s) {
    (void)e, (void)s;
    return cudaErrorNotSupported;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
    (void)g;
    return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) {
    (void)e;
    return cudaSuccess;
}

/* ---- cuDNN: NHWC convolutions, checked against what the backend promises ---------- */

struct cudnnContext {
    int dummy;
};
struct cudnnTensorStruct {
    cudnnTensorFormat_t f;
    cudnnDataType_t t;
    int n, c, h, w;
};
struct cudnnFilterStruct {
    cudnnDataType_t t;
    cudnnTensorFormat_t f;
    int k, c, h, w;
};
struct cudnnConvolutionStruct {
    int ph, pw, u, v, dh, dw, groups;
    cudnnConvolutionMode_t mode;
    cudnnDataType_t ct;
    cudnnMathType_t math;
};

size_t cudnnGetVersion(void) { return 0; }
const char *cudnnGetErrorString(cudnnStatus_t s) { return s == CUDNN_STATUS_SUCCESS ? "success" : "emulated cuDNN error"; }
cudnnStatus_t cudnnCreate(cudnnHandle_t *h) {
    *h = calloc(1, sizeof **h);
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroy(cudnnHandle_t h) {
    free(h);
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetStream(cudnnHandle_t h, cudaStream_t s) {
    (void)h, (void)s;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *d) {
    *d = calloc(1, sizeof **d);
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d) {
    free(d);
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *d) {
    *d = calloc(1, sizeof **d);
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d) {
    free(d);
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *d) {
    *d = calloc(1, sizeof **d);
    (*d)->groups = 1;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d) {
    free(d);
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t f, cudnnDataType_t t,
                                         int n, int c, int h, int w) {
    if (n < 1 || c < 1 || h < 1 || w < 1) return CUDNN_STATUS_BAD_PARAM;
    *d = (struct cudnnTensorStruct){f, t, n, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t t, cudnnTensorFormat_t f,
                                         int k, int c, int h, int w) {
    if (k < 1 || c < 1 || h < 1 || w < 1) return CUDNN_STATUS_BAD_PARAM;
    *d = (struct cudnnFilterStruct){t, f, k, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int ph, int pw, int u, int v, int dh,
                                              int dw, cudnnConvolutionMode_t mode, cudnnDataType_t ct) {
    if (ph < 0 || pw < 0 || u < 1 || v < 1 || dh < 1 || dw < 1) return CUDNN_STATUS_BAD_PARAM;
    d->ph = ph, d->pw = pw, d->u = u, d->v = v, d->dh = dh, d->dw = dw, d->mode = mode, d->ct = ct;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionGroupCount(cudnnConvolutionDescriptor_t d, int g) {
    d->groups = g;
    return g >= 1 ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_BAD_PARAM;
}
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t m) {
    d->math = m;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t c,
                                                    const cudnnTensorDescriptor_t x,
                                                    const cudnnFilterDescriptor_t w, int *n, int *k, int *h,
                                                    int *wo) {
    if (x->c != w->c * c->groups || w->k % c->groups) return CUDNN_STATUS_BAD_PARAM;
    *n = x->n;
    *k = w->k;
    *h = (x->h + 2 * c->ph - ((w->h - 1) * c->dh + 1)) / c->u + 1;
    *wo = (x->w + 2 * c->pw - ((w->w - 1) * c->dw + 1)) / c->v + 1;
    return CUDNN_STATUS_SUCCESS;
}

/* the backend promises NHWC tensors and filters and a fp32 compute type */
static int conv_ok(const cudnnTensorDescriptor_t x, const cudnnFilterDescriptor_t w,
                   const cudnnConvolutionDescriptor_t c, const cudnnTensorDescriptor_t y) {
    int n, k, h, wo;
    if (x->f != CUDNN_TENSOR_NHWC || y->f != CUDNN_TENSOR_NHWC || w->f != CUDNN_TENSOR_NHWC) return 0;
    if (c->ct != CUDNN_DATA_FLOAT || c->mode != CUDNN_CROSS_CORRELATION || x->t != w->t || x->t != y->t) return 0;
    if (cudnnGetConvolution2dForwardOutputDim(c, x, w, &n, &k, &h, &wo) != CUDNN_STATUS_SUCCESS) return 0;
    return n == y->n && k == y->c && h == y->h && wo == y->w;
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t hd, const cudnnTensorDescriptor_t x,
                                                     const cudnnFilterDescriptor_t w,
                                                     const cudnnConvolutionDescriptor_t c,
                                                     const cudnnTensorDescriptor_t y, const int req, int *got,
                                                     cudnnConvolutionFwdAlgoPerf_t *perf) {
    (void)hd;
    if (req < 1) return CUDNN_STATUS_BAD_PARAM;
    memset(perf, 0, sizeof *perf);
    perf->algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
    perf->status = conv_ok(x, w, c, y) ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_NOT_SUPPORTED;
    perf->mathType = c->math;
    *got = 1;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
                                                      const cudnnFilterDescriptor_t w,
                                                      const cudnnConvolutionDescriptor_t c,
                                                      const cudnnTensorDescriptor_t y, cudnnConvolutionFwdAlgo_t a,
                                                      size_t *sz) {
    (void)h, (void)x, (void)w, (void)c, (void)y, (void)a;
    *sz = 64;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnnHandle_t hd, const cudnnFilterDescriptor_t w,
                                                          const cudnnTensorDescriptor_t dy,
                                                          const cudnnConvolutionDescriptor_t c,
                                                          const cudnnTensorDescriptor_t dx, const int req, int *got,
                                                          cudnnConvolutionBwdDataAlgoPerf_t *perf) {
    (void)hd;
    if (req < 1) return CUDNN_STATUS_BAD_PARAM;
    memset(perf, 0, sizeof *perf);
    perf->algo = CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
    perf->status = conv_ok(dx, w, c, dy) ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_NOT_SUPPORTED;
    *got = 1;
    return CUDNN_STATUS_SUCCESS;
}
/* the timed searches (conv_find, CS_CUDNN_FIND=1 in main): the heuristics'
 * answer, with a time; the backend searches twice per shape, and every
 * other such pair fails, so that both the timed path and the heuristics
 * fallback are exercised */
static int g_find_calls;
cudnnStatus_t cudnnFindConvolutionForwardAlgorithm(cudnnHandle_t hd, const cudnnTensorDescriptor_t x,
                                                   const cudnnFilterDescriptor_t w,
                                                   const cudnnConvolutionDescriptor_t c,
                                                   const cudnnTensorDescriptor_t y, const int req, int *got,
                                                   cudnnConvolutionFwdAlgoPerf_t *perf) {
    if ((g_find_calls++ / 2) % 2) return CUDNN_STATUS_NOT_SUPPORTED;
    cudnnStatus_t s = cudnnGetConvolutionForwardAlgorithm_v7(hd, x, w, c, y, req, got, perf);
    perf->time = 0.01f;
    return s;
}
cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithm(cudnnHandle_t hd, const cudnnFilterDescriptor_t w,
                                                        const cudnnTensorDescriptor_t dy,
                                                        const cudnnConvolutionDescriptor_t c,
                                                        const cudnnTensorDescriptor_t dx, const int req, int *got,
                                                        cudnnConvolutionBwdDataAlgoPerf_t *perf) {
    if ((g_find_calls++ / 2) % 2) return CUDNN_STATUS_NOT_SUPPORTED;
    cudnnStatus_t s = cudnnGetConvolutionBackwardDataAlgorithm_v7(hd, w, dy, c, dx, req, got, perf);
    perf->time = 0.01f;
    return s;
}
cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(cudnnHandle_t h, const cudnnFilterDescriptor_t w,
                                                           const cudnnTensorDescriptor_t dy,
                                                           const cudnnConvolutionDescriptor_t c,
                                                           const cudnnTensorDescriptor_t dx,
                                                           cudnnConvolutionBwdDataAlgo_t a, size_t *sz) {
    (void)h, (void)w, (void)dy, (void)c, (void)dx, (void)a;
    *sz = 128;
    return CUDNN_STATUS_SUCCESS;
}

static cs_cuda_dt of_dnn(cudnnDataType_t t) {
    return t == CUDNN_DATA_HALF ? CS_CUDA_F16 : t == CUDNN_DATA_BFLOAT16 ? CS_CUDA_BF16 : CS_CUDA_F32;
}

/* y = alpha * conv(x, w) + beta * y  (fwd), or dx = alpha * convᵀ(dy, w) + beta * dx (bwd):
 * NHWC tensors, K x R x S x C/g filters */
static cudnnStatus_t conv_emul(int bwd, const float *alpha, const cudnnTensorDescriptor_t xd, const void *x,
                               const cudnnFilterDescriptor_t wd, const void *w, const cudnnConvolutionDescriptor_t c,
                               const float *beta, const cudnnTensorDescriptor_t yd, void *y) {
    if (!conv_ok(xd, wd, c, yd)) return CUDNN_STATUS_NOT_SUPPORTED;
    cs_cuda_dt t = of_dnn(xd->t);
    int N = xd->n, C = xd->c, H = xd->h, W = xd->w, K = yd->c, OH = yd->h, OW = yd->w;
    int G = c->groups, Cg = C / G, Kg = K / G, R = wd->h, S = wd->w;
    int64_t nx = (int64_t)N * H * W * C, ny = (int64_t)N * OH * OW * K;
    float *acc = calloc((size_t)(bwd ? nx : ny), sizeof(float));
    if (!acc) return CUDNN_STATUS_ALLOC_FAILED;
    for (int n = 0; n < N; n++)
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++)
                for (int k = 0; k < K; k++) {
                    int g = k / Kg;
                    int64_t yi = (((int64_t)n * OH + oh) * OW + ow) * K + k;
                    float dyv = bwd ? ldv(t, y, yi) : 0.f, s = 0.f;
                    for (int r = 0; r < R; r++) {
                        int ih = oh * c->u - c->ph + r * c->dh;
                        if (ih < 0 || ih >= H) continue;
                        for (int q = 0; q < S; q++) {
                            int iw = ow * c->v - c->pw + q * c->dw;
                            if (iw < 0 || iw >= W) continue;
                            for (int ci = 0; ci < Cg; ci++) {
                                float wv = ldv(t, w, (((int64_t)k * R + r) * S + q) * Cg + ci);
                                int64_t xi = (((int64_t)n * H + ih) * W + iw) * C + g * Cg + ci;
                                if (bwd) acc[xi] += dyv * wv;
                                else s += ldv(t, x, xi) * wv;
                            }
                        }
                    }
                    if (!bwd) acc[yi] = s;
                }
    void *out = bwd ? (void *)x : y;
    int64_t no = bwd ? nx : ny;
    for (int64_t i = 0; i < no; i++)
        stv(t, out, i, *alpha * acc[i] + (*beta != 0.f ? *beta * ldv(t, out, i) : 0.f));
    free(acc);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void *alpha, const cudnnTensorDescriptor_t xd,
                                      const void *x, const cudnnFilterDescriptor_t wd, const void *w,
                                      const cudnnConvolutionDescriptor_t c, cudnnConvolutionFwdAlgo_t algo,
                                      void *ws, size_t wss, const void *beta, const cudnnTensorDescriptor_t yd,
                                      void *y) {
    (void)h, (void)algo;
    if (wss < 64 || !ws) return CUDNN_STATUS_BAD_PARAM; /* the workspace asked for was allocated */
    return conv_emul(0, alpha, xd, x, wd, w, c, beta, yd, y);
}
/* the fused form: y = act(alpha1 conv(x) + alpha2 z + bias), as cuDNN
 * documents it, including its limits: identity only with the precomputed
 * implicit GEMM (the emulated heuristics never pick it, so the backend's
 * unfused fallback runs for those), ReLU otherwise; a bias of the output's
 * type or fp32 */
struct cudnnActivationStruct {
    cudnnActivationMode_t mode;
};
cudnnStatus_t cudnnCreateActivationDescriptor(cudnnActivationDescriptor_t *d) {
    *d = calloc(1, sizeof **d);
    return *d ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_ALLOC_FAILED;
}
cudnnStatus_t cudnnDestroyActivationDescriptor(cudnnActivationDescriptor_t d) {
    free(d);
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetActivationDescriptor(cudnnActivationDescriptor_t d, cudnnActivationMode_t m,
                                           cudnnNanPropagation_t nan, double coef) {
    (void)nan, (void)coef;
    d->mode = m;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetStream(cudnnHandle_t h, cudaStream_t *s) {
    (void)h;
    *s = NULL;
    return CUDNN_STATUS_SUCCESS;
}
static int g_fused_runs;
cudnnStatus_t cudnnConvolutionBiasActivationForward(
    cudnnHandle_t h, const void *alpha1, const cudnnTensorDescriptor_t xd, const void *x,
    const cudnnFilterDescriptor_t wd, const void *w, const cudnnConvolutionDescriptor_t c,
    cudnnConvolutionFwdAlgo_t algo, void *ws, size_t wss, const void *alpha2, const cudnnTensorDescriptor_t zd,
    const void *z, const cudnnTensorDescriptor_t bd, const void *bias, const cudnnActivationDescriptor_t ad,
    const cudnnTensorDescriptor_t yd, void *y) {
    (void)h;
    if (ad->mode == CUDNN_ACTIVATION_IDENTITY && algo != CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM)
        return CUDNN_STATUS_NOT_SUPPORTED;
    if (ad->mode != CUDNN_ACTIVATION_IDENTITY && ad->mode != CUDNN_ACTIVATION_RELU) return CUDNN_STATUS_NOT_SUPPORTED;
    if (bd->t != yd->t && bd->t != CUDNN_DATA_FLOAT) return CUDNN_STATUS_BAD_PARAM;
    if (bd->n != 1 || bd->c != yd->c || bd->h != 1 || bd->w != 1) return CUDNN_STATUS_BAD_PARAM;
    if (zd->n != yd->n || zd->c != yd->c || zd->h != yd->h || zd->w != yd->w || zd->t != yd->t)
        return CUDNN_STATUS_BAD_PARAM;
    if (wss < 64 || !ws) return CUDNN_STATUS_BAD_PARAM;
    cs_cuda_dt ty = of_dnn(yd->t), tb = of_dnn(bd->t);
    int64_t n = (int64_t)yd->n * yd->c * yd->h * yd->w;
    float a2 = *(const float *)alpha2;
    /* z may be y (with alpha2 = 0): read it before the convolution writes y */
    float *zc = malloc((size_t)n * sizeof(float));
    if (!zc) return CUDNN_STATUS_ALLOC_FAILED;
    for (int64_t i = 0; i < n; i++) zc[i] = a2 != 0.f ? ldv(ty, z, i) : 0.f;
    const float zero_ = 0.f;
    cudnnStatus_t st = conv_emul(0, alpha1, xd, x, wd, w, c, &zero_, yd, y);
    for (int64_t i = 0; st == CUDNN_STATUS_SUCCESS && i < n; i++) { /* NHWC: the channel is i % C */
        float v = ldv(ty, y, i) + a2 * zc[i] + ldv(tb, bias, i % yd->c);
        stv(ty, y, i, ad->mode == CUDNN_ACTIVATION_RELU && v < 0.f ? 0.f : v);
    }
    free(zc);
    g_fused_runs++;
    return st;
}
cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t h, const void *alpha, const cudnnFilterDescriptor_t wd,
                                           const void *w, const cudnnTensorDescriptor_t dyd, const void *dy,
                                           const cudnnConvolutionDescriptor_t c, cudnnConvolutionBwdDataAlgo_t algo,
                                           void *ws, size_t wss, const void *beta,
                                           const cudnnTensorDescriptor_t dxd, void *dx) {
    (void)h, (void)algo;
    if (wss < 128 || !ws) return CUDNN_STATUS_BAD_PARAM;
    /* conv_emul(bwd) reads dy through its y slot and writes dx through x */
    return conv_emul(1, alpha, dxd, dx, wd, w, c, beta, dyd, (void *)dy);
}

/* ---- cuBLAS ------------------------------------------------------------------------ */

struct cublasContext {
    int dummy;
};
cublasStatus_t cublasCreate_v2(cublasHandle_t *h) {
    *h = calloc(1, sizeof **h);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t h) {
    free(h);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s) {
    (void)h, (void)s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t h, void *ws, size_t n) {
    (void)h;
    return ws && n ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}
const char *cublasGetStatusString(cublasStatus_t s) { return s == CUBLAS_STATUS_SUCCESS ? "success" : "emulated cuBLAS error"; }

static cs_cuda_dt of_blas(cudaDataType_t t) {
    return t == CUDA_R_16F ? CS_CUDA_F16 : t == CUDA_R_16BF ? CS_CUDA_BF16 : CS_CUDA_F32;
}

/* column-major C[m x n] = alpha op(A) op(B) + beta C */
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType_t at, int lda, const void *B,
                            cudaDataType_t bt, int ldb, const void *beta, void *C, cudaDataType_t ct, int ldc,
                            cublasComputeType_t comp, cublasGemmAlgo_t algo) {
    (void)h, (void)algo;
    if (comp != CUBLAS_COMPUTE_32F || at != bt || at != ct) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (lda < (ta == CUBLAS_OP_N ? m : k) || ldb < (tb == CUBLAS_OP_N ? k : n) || ldc < m)
        return CUBLAS_STATUS_INVALID_VALUE;
    cs_cuda_dt t = of_blas(at);
    float al = *(const float *)alpha, be = *(const float *)beta;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            float s = 0.f;
            for (int l = 0; l < k; l++) {
                float a = ldv(t, A, ta == CUBLAS_OP_N ? i + (int64_t)l * lda : l + (int64_t)i * lda);
                float b = ldv(t, B, tb == CUBLAS_OP_N ? l + (int64_t)j * ldb : j + (int64_t)l * ldb);
                s += a * b;
            }
            int64_t ci = i + (int64_t)j * ldc;
            stv(t, C, ci, al * s + (be != 0.f ? be * ldv(t, C, ci) : 0.f));
        }
    return CUBLAS_STATUS_SUCCESS;
}

/* ---- the kernel launchers, on the CPU -------------------------------------------------- */

static float apply_fn(const cs_cuda_act *a, float x) {
    switch (a->fn) {
    case CS_FN_RELU: return x > 0.f ? x : 0.f;
    case CS_FN_CLIP: return fminf(fmaxf(x, a->alpha), a->beta);
    case CS_FN_LEAKYRELU: return x > 0.f ? x : a->alpha * x;
    case CS_FN_SIGMOID: return 1.f / (1.f + expf(-x));
    case CS_FN_HARDSIGMOID: return fminf(fmaxf(a->alpha * x + a->beta, 0.f), 1.f);
    case CS_FN_HARDSWISH: return x * fminf(fmaxf(x / 6.f + 0.5f, 0.f), 1.f);
    case CS_FN_TANH: return tanhf(x);
    case CS_FN_GELU_ERF: return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
    case CS_FN_SWISH: return x / (1.f + expf(-a->alpha * x));
    case CS_FN_ERF: return erff(x);
    case CS_FN_SQRT: return sqrtf(x);
    case CS_FN_EXP: return expf(x);
    case CS_FN_NEG: return -x;
    case CS_FN_RECIPROCAL: return 1.f / x;
    default: return x;
    }
}

static float fn_grad(const cs_cuda_act *a, float x, float y) {
    switch (a->fn) {
    case CS_FN_RELU: return y > 0.f ? 1.f : 0.f;
    case CS_FN_CLIP: return (x > a->alpha && x < a->beta) ? 1.f : 0.f;
    case CS_FN_LEAKYRELU: return x > 0.f ? 1.f : a->alpha;
    case CS_FN_SIGMOID: return y * (1.f - y);
    case CS_FN_TANH: return 1.f - y * y;
    case CS_FN_HARDSIGMOID: {
        float t = a->alpha * x + a->beta;
        return (t > 0.f && t < 1.f) ? a->alpha : 0.f;
    }
    case CS_FN_HARDSWISH: return x < -3.f ? 0.f : x <= 3.f ? (2.f * x + 3.f) / 6.f : 1.f;
    case CS_FN_ERF: return 1.1283791670955126f * expf(-x * x);
    case CS_FN_GELU_ERF:
        return 0.5f * (1.f + erff(x * 0.70710678118654752f)) + x * 0.3989422804014327f * expf(-0.5f * x * x);
    case CS_FN_SQRT: return 0.5f / y;
    case CS_FN_EXP: return y;
    case CS_FN_NEG: return -1.f;
    case CS_FN_RECIPROCAL: return -y * y;
    default: return 1.f;
    }
}

int cs_cuda_k_strided(cs_cuda_stream s, int op, int accum, cs_cuda_dt to, void *out, cs_cuda_dt ti, const void *a,
                      const void *b, const cs_cuda_walk *w) {
    (void)s;
    if (op != CS_BIN_COPY && to != ti) return (int)cudaErrorInvalidValue;
    if (w->nd < 1 || w->nd > CS_CUDA_MAXD) return (int)cudaErrorInvalidValue;
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
        float x = ldv(ti, a, oa), v;
        switch (op) {
        case CS_BIN_ADD: v = x + ldv(ti, b, ob); break;
        case CS_BIN_SUB: v = x - ldv(ti, b, ob); break;
        case CS_BIN_MUL: v = x * ldv(ti, b, ob); break;
        case CS_BIN_DIV: v = x / ldv(ti, b, ob); break;
        case CS_BIN_POW: v = powf(x, ldv(ti, b, ob)); break;
        default: v = x;
        }
        if (accum) v += ldv(to, out, oo);
        stv(to, out, oo, v);
    }
    return 0;
}

int cs_cuda_k_unary(cs_cuda_stream s, cs_cuda_dt dt, const void *x, void *y, int64_t n, cs_cuda_act a) {
    (void)s;
    for (int64_t i = 0; i < n; i++) stv(dt, y, i, apply_fn(&a, ldv(dt, x, i)));
    return 0;
}

int cs_cuda_k_unary_bwd(cs_cuda_stream s, cs_cuda_dt dt, cs_cuda_act a, const void *x, const void *y,
                        const void *gy, void *gx, int64_t n) {
    (void)s;
    for (int64_t i = 0; i < n; i++)
        stv(dt, gx, i, ldv(dt, gx, i) + ldv(dt, gy, i) * fn_grad(&a, ldv(dt, x, i), ldv(dt, y, i)));
    return 0;
}

int cs_cuda_k_epilogue(cs_cuda_stream s, cs_cuda_dt dt, const void *x, void *y, int64_t n, int64_t C, int64_t inner,
                       const float *scale, const float *bias, const void *sum, cs_cuda_acts acts) {
    (void)s;
    if (C < 1 || inner < 1) return (int)cudaErrorInvalidValue;
    for (int64_t i = 0; i < n; i++) {
        int64_t c = (i / inner) % C;
        float v = ldv(dt, x, i);
        if (scale) v *= scale[c];
        if (bias) v += bias[c];
        if (sum) v += ldv(dt, sum, i);
        for (int k = 0; k < acts.n; k++) v = apply_fn(&acts.a[k], v);
        stv(dt, y, i, v);
    }
    return 0;
}

int cs_cuda_k_chan_scale_bwd(cs_cuda_stream s, cs_cuda_dt dt, const void *gy, void *gx, int64_t n, int64_t C,
                             int64_t inner, const float *scale) {
    (void)s;
    for (int64_t i = 0; i < n; i++) stv(dt, gx, i, ldv(dt, gx, i) + ldv(dt, gy, i) * scale[(i / inner) % C]);
    return 0;
}

/* pooling as ops.c defines it (forward) and its derivative by scattering */
static void pool_window(const cs_cuda_pool *p, int64_t o, int h, int64_t *lo, int64_t *hi, int64_t *span,
                        int64_t *valid) {
    int st = h ? p->sh : p->sw, pb = h ? p->ph : p->pw, pe = h ? p->peh : p->pew, k = h ? p->kh : p->kw;
    int d = h ? p->dh : p->dw;
    int64_t in = h ? p->H : p->W;
    *lo = o * st - pb;
    int64_t end = *lo + (int64_t)(k - 1) * d + 1, pend = end < in + pe ? end : in + pe;
    *span = pend - *lo;
    *hi = end < in ? end : in;
    int64_t vlo = *lo < 0 ? 0 : *lo;
    *valid = *hi > vlo ? *hi - vlo : 0;
}

static void pool_emul(const cs_cuda_pool *p, cs_cuda_dt dt, const void *x, void *y, const void *gy, void *gx) {
    for (int64_t n = 0; n < p->N; n++)
        for (int64_t c = 0; c < p->C; c++)
            for (int64_t oh = 0; oh < p->OH; oh++)
                for (int64_t ow = 0; ow < p->OW; ow++) {
                    int64_t hl, hh, hs, hv, wl, wh, ws, wv;
                    pool_window(p, oh, 1, &hl, &hh, &hs, &hv);
                    pool_window(p, ow, 0, &wl, &wh, &ws, &wv);
                    int64_t xb = n * p->xs[0] + c * p->xs[1], yo = n * p->ys[0] + c * p->ys[1] + oh * p->ys[2] + ow * p->ys[3];
                    int64_t best = -1;
                    float bv = -INFINITY, acc = 0.f;
                    int step_h = p->is_max ? p->dh : 1, step_w = p->is_max ? p->dw : 1;
                    for (int64_t h = hl; h < hh; h += step_h) {
                        if (h < 0) continue;
                        for (int64_t w = wl; w < wh; w += step_w) {
                            if (w < 0) continue;
                            int64_t xi = xb + h * p->xs[2] + w * p->xs[3];
                            float v = ldv(dt, x, xi);
                            acc += v;
                            if (v > bv || best < 0) bv = v, best = xi;
                        }
                    }
                    int64_t cnt = p->include_pad ? hs * ws : hv * wv;
                    if (!gx) {
                        stv(dt, y, yo, p->is_max ? bv : (cnt > 0 ? acc / (float)cnt : 0.f));
                        continue;
                    }
                    float g = ldv(dt, gy, yo);
                    if (p->is_max) {
                        if (best >= 0) stv(dt, gx, best, ldv(dt, gx, best) + g);
                    } else if (cnt > 0) {
                        for (int64_t h = hl < 0 ? 0 : hl; h < hh; h++)
                            for (int64_t w = wl < 0 ? 0 : wl; w < wh; w++) {
                                int64_t xi = xb + h * p->xs[2] + w * p->xs[3];
                                stv(dt, gx, xi, ldv(dt, gx, xi) + g / (float)cnt);
                            }
                    }
                }
}

int cs_cuda_k_pool(cs_cuda_stream s, cs_cuda_dt dt, const cs_cuda_pool *p, const void *x, void *y) {
    (void)s;
    pool_emul(p, dt, x, y, NULL, NULL);
    return 0;
}
int cs_cuda_k_pool_bwd(cs_cuda_stream s, cs_cuda_dt dt, const cs_cuda_pool *p, const void *x, const void *gy,
                       void *gx) {
    (void)s;
    pool_emul(p, dt, x, NULL, gy, gx);
    return 0;
}

int cs_cuda_k_gpool(cs_cuda_stream s, cs_cuda_dt tx, const void *x, int64_t N, int64_t C, int64_t HW, int64_t xn,
                    int64_t xc, int64_t xhw, cs_cuda_dt ty, void *y, int64_t yn, int64_t yc, int is_max) {
    (void)s;
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) {
            float acc = is_max ? -INFINITY : 0.f;
            for (int64_t j = 0; j < HW; j++) {
                float v = ldv(tx, x, n * xn + c * xc + j * xhw);
                acc = is_max ? fmaxf(acc, v) : acc + v;
            }
            stv(ty, y, n * yn + c * yc, is_max ? acc : acc / (float)HW);
        }
    return 0;
}

int cs_cuda_k_gpool_bwd(cs_cuda_stream s, cs_cuda_dt dt, const void *x, const void *gy, void *gx, int64_t N,
                        int64_t C, int64_t HW, int64_t xn, int64_t xc, int64_t xhw, int64_t yn, int64_t yc,
                        int is_max) {
    (void)s;
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) {
            float g = ldv(dt, gy, n * yn + c * yc);
            int64_t best = 0;
            if (is_max)
                for (int64_t j = 1; j < HW; j++)
                    if (ldv(dt, x, n * xn + c * xc + j * xhw) > ldv(dt, x, n * xn + c * xc + best * xhw)) best = j;
            for (int64_t j = 0; j < HW; j++) {
                int64_t i = n * xn + c * xc + j * xhw;
                float add = is_max ? (j == best ? g : 0.f) : g / (float)HW;
                stv(dt, gx, i, ldv(dt, gx, i) + add);
            }
        }
    return 0;
}

int cs_cuda_k_softmax(cs_cuda_stream s, cs_cuda_dt dt, const void *x, void *y, int64_t outer, int64_t len,
                      int64_t inner) {
    (void)s;
    for (int64_t i = 0; i < outer * inner; i++) {
        int64_t base = (i / inner) * len * inner + i % inner;
        float mx = -INFINITY, sum = 0.f;
        for (int64_t k = 0; k < len; k++) mx = fmaxf(mx, ldv(dt, x, base + k * inner));
        for (int64_t k = 0; k < len; k++) sum += expf(ldv(dt, x, base + k * inner) - mx);
        for (int64_t k = 0; k < len; k++) stv(dt, y, base + k * inner, expf(ldv(dt, x, base + k * inner) - mx) / sum);
    }
    return 0;
}
int cs_cuda_k_softmax_bwd(cs_cuda_stream s, cs_cuda_dt dt, const void *y, const void *gy, void *gx, int64_t outer,
                          int64_t len, int64_t inner) {
    (void)s;
    for (int64_t i = 0; i < outer * inner; i++) {
        int64_t base = (i / inner) * len * inner + i % inner;
        float dot = 0.f;
        for (int64_t k = 0; k < len; k++) dot += ldv(dt, gy, base + k * inner) * ldv(dt, y, base + k * inner);
        for (int64_t k = 0; k < len; k++) {
            int64_t o = base + k * inner;
            stv(dt, gx, o, ldv(dt, gx, o) + ldv(dt, y, o) * (ldv(dt, gy, o) - dot));
        }
    }
    return 0;
}

static void ln_stats(cs_cuda_dt dt, const void *x, int64_t r, int64_t len, float eps, float *mean, float *rstd) {
    float s = 0.f, v = 0.f;
    for (int64_t k = 0; k < len; k++) s += ldv(dt, x, r * len + k);
    *mean = s / (float)len;
    for (int64_t k = 0; k < len; k++) {
        float d = ldv(dt, x, r * len + k) - *mean;
        v += d * d;
    }
    *rstd = 1.f / sqrtf(v / (float)len + eps);
}
int cs_cuda_k_layernorm(cs_cuda_stream s, cs_cuda_dt dt, const void *x, void *y, int64_t rows, int64_t len,
                        const float *gamma, const float *beta, float eps) {
    (void)s;
    for (int64_t r = 0; r < rows; r++) {
        float mean, rstd;
        ln_stats(dt, x, r, len, eps, &mean, &rstd);
        for (int64_t k = 0; k < len; k++) {
            float o = (ldv(dt, x, r * len + k) - mean) * rstd;
            if (gamma) o *= gamma[k];
            if (beta) o += beta[k];
            stv(dt, y, r * len + k, o);
        }
    }
    return 0;
}
int cs_cuda_k_layernorm_bwd(cs_cuda_stream s, cs_cuda_dt dt, const void *x, const void *gy, void *gx, int64_t rows,
                            int64_t len, const float *gamma, float eps) {
    (void)s;
    for (int64_t r = 0; r < rows; r++) {
        float mean, rstd, mg = 0.f, mgx = 0.f;
        ln_stats(dt, x, r, len, eps, &mean, &rstd);
        for (int64_t k = 0; k < len; k++) {
            float g = ldv(dt, gy, r * len + k) * (gamma ? gamma[k] : 1.f), xh = (ldv(dt, x, r * len + k) - mean) * rstd;
            mg += g;
            mgx += g * xh;
        }
        mg /= (float)len;
        mgx /= (float)len;
        for (int64_t k = 0; k < len; k++) {
            float g = ldv(dt, gy, r * len + k) * (gamma ? gamma[k] : 1.f), xh = (ldv(dt, x, r * len + k) - mean) * rstd;
            stv(dt, gx, r * len + k, ldv(dt, gx, r * len + k) + rstd * (g - mg - xh * mgx));
        }
    }
    return 0;
}

int cs_cuda_k_bcast_reduce(cs_cuda_stream s, cs_cuda_dt dt, int mode, const void *gy, const void *f, const void *f2,
                           void *ga, const cs_cuda_red *r) {
    (void)s;
    int64_t nk = 1, nr = 1;
    for (int d = 0; d < r->nk; d++) nk *= r->kd[d];
    for (int d = 0; d < r->nr; d++) nr *= r->rd[d];
    for (int64_t i = 0; i < nk; i++) {
        int64_t q = i, oga = 0, ogy = 0, of = 0, of2 = 0;
        for (int d = r->nk - 1; d >= 0; d--) {
            int64_t c = q % r->kd[d];
            q /= r->kd[d];
            oga += c * r->kga[d], ogy += c * r->kgy[d], of += c * r->kf[d], of2 += c * r->kf2[d];
        }
        float acc = 0.f;
        for (int64_t j = 0; j < nr; j++) {
            int64_t q2 = j, pgy = ogy, pf = of, pf2 = of2;
            for (int d = r->nr - 1; d >= 0; d--) {
                int64_t c = q2 % r->rd[d];
                q2 /= r->rd[d];
                pgy += c * r->rgy[d], pf += c * r->rf[d], pf2 += c * r->rf2[d];
            }
            float g = ldv(dt, gy, pgy);
            if (mode == 1) g *= ldv(dt, f, pf);
            else if (mode == 2) g /= ldv(dt, f, pf);
            else if (mode == 3) g *= -ldv(dt, f2, pf2) / (ldv(dt, f, pf) * ldv(dt, f, pf));
            else if (mode == 4) g = -g;
            acc += g;
        }
        stv(dt, ga, oga, ldv(dt, ga, oga) + acc);
    }
    return 0;
}

int cs_cuda_k_cam(cs_cuda_stream s, cs_cuda_dt dt, const void *A, const float *w, float *map, int64_t N, int64_t C,
                  int64_t H, int64_t W, int64_t an, int64_t ac, int64_t ah, int64_t aw) {
    (void)s;
    for (int64_t n = 0; n < N; n++)
        for (int64_t y = 0; y < H; y++)
            for (int64_t x = 0; x < W; x++) {
                float acc = 0.f;
                for (int64_t c = 0; c < C; c++) acc += w[n * C + c] * ldv(dt, A, n * an + c * ac + y * ah + x * aw);
                map[(n * H + y) * W + x] = acc > 0.f ? acc : 0.f;
            }
    return 0;
}

int cs_cuda_k_fill(cs_cuda_stream s, cs_cuda_dt dt, void *y, int64_t n, float v) {
    (void)s;
    for (int64_t i = 0; i < n; i++) stv(dt, y, i, v);
    return 0;
}

int cs_cuda_k_cast_from_f32(cs_cuda_stream s, cs_cuda_dt dt, const float *x, void *y, int64_t n) {
    (void)s;
    for (int64_t i = 0; i < n; i++) stv(dt, y, i, x[i]);
    return 0;
}

/* ---- the comparison ------------------------------------------------------------------- */

#define MAX_FAMILIES 64

typedef golden_family family;
static family g_fam[MAX_FAMILIES];
static char g_names[MAX_FAMILIES][300];

static double rel_l2(const float *a, const float *ref, int64_t n) {
    double d = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = (double)a[i] - (double)ref[i];
        d += e * e;
        m += (double)ref[i] * ref[i];
    }
    return isnan(d) ? INFINITY : sqrt(d / (m + 1e-30));
}

#define CHECK(call) GOLDEN_CHECK(f, call)

static void test_family(void **state) {
    const family *f = *state;
    cs_model *mc = golden_load_or_fail(f, "cpu", CS_PRECISION_FP32);
    cs_model_info info;
    cs_model_get_info(mc, &info);
    int batch;
    float *x = golden_input_or_fail(f, mc, &batch);
    int ncls = (int)info.num_classes;
    int64_t nl = (int64_t)batch * ncls;
    float *ref = malloc((size_t)nl * sizeof(float)), *got = malloc((size_t)nl * sizeof(float));
    int *cls = malloc((size_t)batch * sizeof(int));
    assert_true(ref && got && cls);
    cs_session *sc;
    CHECK(cs_session_create(mc, &sc, err));
    CHECK(cs_session_run(sc, x, batch, ref, err));
    assert_true(cs_session_device_ms(sc) == -1); /* the CPU backend measures no device time */
    for (int i = 0; i < batch; i++) cls[i] = (int)golden_argmax(ref + (int64_t)i * ncls, ncls);
    /* the CPU's layers and maps at the default layer and one middle layer */
    int nlay = cs_model_num_layers(mc), lays[2] = {cs_model_default_layer(mc), nlay / 2};
    for (int pi = 0; pi < 3; pi++) {
        cs_precision pr = pi == 0 ? CS_PRECISION_FP32 : pi == 1 ? CS_PRECISION_FP16 : CS_PRECISION_BF16;
        /* fp32 and fp16 at the bars; bf16 (8 mantissa bits, 8x
         * fp16's rounding step) misses 2e-2 and even top-1 on several golden
         * models in this emulation (docs/gpu.md), so here it only gets
         * sanity bounds: logits and layers within 20%, maps >= 0.95 */
        double tol = pi == 0 ? 1e-3 : pi == 1 ? 2e-2 : 0.2;
        cs_model *mg = golden_load_or_fail(f, "cuda", pr);
        assert_string_equal(cs_model_device(mg), "cuda:0");
        cs_session *sg;
        CHECK(cs_session_create(mg, &sg, err));
        for (int rep = 0; rep < 3; rep++) { /* eager, (refused) capture, eager */
            CHECK(cs_session_run(sg, x, batch, got, err));
            assert_true(cs_session_device_ms(sg) >= 0); /* the events around the graph (host clock here) */
            double e = golden_rel_err(got, ref, nl);
            if (!(e <= tol)) fail_msg("%s %s run %d: logits max rel err %g > %g", f->name, cs_precision_name(pr), rep, e, tol);
        }
        for (int i = 0; pi == 1 && i < batch; i++) {
            /* half precision may swap near-ties: only a top-1 change with a real margin fails */
            const float *r = ref + (int64_t)i * ncls;
            int64_t gtop = golden_argmax(got + (int64_t)i * ncls, ncls);
            if (gtop != cls[i] && r[cls[i]] - r[gtop] > 1e-2 * fabs(r[cls[i]]) + 1e-3)
                fail_msg("%s %s: image %d top-1 %lld, cpu %d", f->name, cs_precision_name(pr), i, (long long)gtop, cls[i]);
        }
        for (int li = 0; li < 2; li++) {
            int layer = lays[li];
            /* bf16 gradients at a middle layer are mostly rounding noise
             * here (relative L2 error 0.5-0.9 on three golden models):
             * reported in docs/gpu.md, not tested */
            if (layer < 0 || (li == 1 && (layer == lays[0] || pi == 2))) continue;
            float *cref = malloc((size_t)nl * sizeof(float));
            assert_non_null(cref);
            CHECK(cs_session_forward_keep(sc, x, batch, &layer, 1, cref, err));
            cs_error cerr = {0};
            cs_status cst = cs_session_backward(sc, cls, &cerr);
            if (cst == CS_EUNSUPPORTED) { /* not a layer the CPU explains either */
                free(cref);
                continue;
            }
            if (cst != CS_OK) fail_msg("%s: cpu backward: %s", f->name, cerr.msg);
            const float *a, *g;
            int64_t d[4];
            CHECK(cs_session_layer(sc, layer, &a, &g, d, err));
            int64_t hw = d[2] * d[3], ln = d[0] * d[1] * hw;
            float *raw = malloc((size_t)(d[0] * hw) * sizeof(float));
            float *aref = malloc((size_t)ln * sizeof(float)), *gref = malloc((size_t)ln * sizeof(float));
            assert_true(raw && aref && gref);
            memcpy(aref, a, (size_t)ln * sizeof(float));
            memcpy(gref, g, (size_t)ln * sizeof(float));
            CHECK(cs_cam_compute_raw(CS_CAM_METHOD_GRADCAM, a, g, (int)d[0], (int)d[1], (int)d[2], (int)d[3], NULL,
                                     raw, err));
            CHECK(cs_session_forward_keep(sg, x, batch, &layer, 1, got, err));
            double e = golden_rel_err(got, ref, nl);
            if (!(e <= tol)) fail_msg("%s %s: forward_keep logits max rel err %g", f->name, cs_precision_name(pr), e);
            CHECK(cs_session_backward(sg, cls, err));
            const float *ga, *gg, *map;
            int64_t gd[4], md[3];
            CHECK(cs_session_layer(sg, layer, &ga, &gg, gd, err));
            assert_memory_equal(gd, d, sizeof d);
            assert_non_null(gg);
            /* fp16: a Relu whose input rounds across 0, a MaxPool window
             * whose maximum changes, moves whole gradient elements, so the
             * half-precision gradient gets only a sanity bound (relative L2);
             * its acceptance test is the map below.  fp32: max error. */
            double ea = golden_rel_err(ga, aref, ln), eg = pi == 0 ? golden_rel_err(gg, gref, ln) : rel_l2(gg, gref, ln);
            double tg = pi == 0 ? 1e-3 : 0.5;
            if (!(ea <= tol) || !(eg <= tg))
                fail_msg("%s %s layer '%s': activation err %g, gradient err %g", f->name, cs_precision_name(pr),
                         cs_model_layer_name(mc, layer), ea, eg);
            CHECK(cs_session_gradcam(sg, layer, &map, md, err));
            /* the bar (0.99) is for the default layer; a middle layer
             * has more half-precision backward steps behind it */
            double cmin = pi == 0 ? 0.99 : li == 1 ? 0.7 : pi == 1 ? 0.99 : 0.95;
            for (int i = 0; i < batch; i++) {
                double c = golden_correlation(map + i * hw, raw + i * hw, hw);
                if (getenv("CS_EMUL_VERBOSE"))
                    printf("  %s %s layer %s image %d: map correlation %.4f, gradient err %.3g\n", f->name,
                           cs_precision_name(pr), li ? "middle" : "default", i, c, eg);
                if (!(c >= cmin))
                    fail_msg("%s %s layer '%s': image %d GradCAM correlation %.4f", f->name, cs_precision_name(pr),
                             cs_model_layer_name(mc, layer), i, c);
            }
            if (pi == 0) {
                /* AblationCAM's pass (what only feeds the layer does not
                 * run) with the layer's own values, then with one channel
                 * ablated and the next doubled, against the CPU's */
                CHECK(cs_session_run_with_layer(sg, x, batch, layer, aref, got, err));
                double e2 = golden_rel_err(got, ref, nl);
                if (!(e2 <= 1e-3)) fail_msg("%s: run_with_layer(own values) max rel err %g", f->name, e2);
                float *alt = malloc((size_t)ln * sizeof(float));
                assert_non_null(alt);
                memcpy(alt, aref, (size_t)ln * sizeof(float));
                for (int64_t i = 0; i < d[0]; i++)
                    for (int64_t q = 0; q < hw; q++) {
                        alt[(i * d[1] + 0) * hw + q] = 0;
                        if (d[1] > 1) alt[(i * d[1] + 1) * hw + q] *= 2;
                    }
                CHECK(cs_session_run_with_layer(sc, x, batch, layer, alt, cref, err));
                CHECK(cs_session_run_with_layer(sg, x, batch, layer, alt, got, err));
                e2 = golden_rel_err(got, cref, nl);
                if (!(e2 <= 1e-3))
                    fail_msg("%s layer '%s': run_with_layer(altered values) max rel err %g against the CPU", f->name,
                             cs_model_layer_name(mc, layer), e2);
                free(alt);
            }
            free(raw);
            free(aref);
            free(gref);
            free(cref);
        }
        if (pi == 0) {
            /* batch N = N runs of batch 1 (a plan per batch size) */
            cs_model_info gi;
            cs_model_get_info(mg, &gi);
            int64_t per = info.input_dims[1] * info.input_dims[2] * info.input_dims[3];
            for (int i = 0; gi.input_dims[0] < 0 && i < batch; i++) {
                CHECK(cs_session_run(sg, x + i * per, 1, got, err));
                double e = golden_rel_err(got, ref + (int64_t)i * ncls, ncls);
                if (!(e <= 1e-3)) fail_msg("%s: batch-1 run of image %d: max rel err %g", f->name, i, e);
            }
            /* the explain pipeline: GradCAM takes the device map, XGradCAM
             * the layer copies; both must give the CPU's maps */
            const cs_cam_method meths[2] = {CS_CAM_METHOD_GRADCAM, CS_CAM_METHOD_XGRADCAM};
            for (int mi = 0; mi < 2; mi++) {
                cs_explain_options eo = cs_explain_default_options();
                eo.method = meths[mi];
                cs_explain_output oc, og;
                memset(&oc, 0, sizeof oc);
                memset(&og, 0, sizeof og);
                CHECK(cs_explain_run(sc, mc, x, batch, &eo, &oc, err));
                CHECK(cs_explain_run(sg, mg, x, batch, &eo, &og, err));
                assert_true(og.layer_h == oc.layer_h && og.layer_w == oc.layer_w);
                int64_t hw = (int64_t)oc.layer_h * oc.layer_w;
                for (int i = 0; i < batch * oc.k; i++) {
                    assert_int_equal(og.class_idx[i], oc.class_idx[i]);
                    double c = golden_correlation(og.maps_layer + i * hw, oc.maps_layer + i * hw, hw);
                    if (!(c >= 0.99)) fail_msg("%s: cs_explain_run method %d map %d correlation %.4f", f->name, mi, i, c);
                }
                cs_explain_output_free(&oc);
                cs_explain_output_free(&og);
            }
        }
        cs_session_free(sg);
        cs_model_free(mg);
    }
    cs_session_free(sc);
    cs_model_free(mc);
    free(x);
    free(ref);
    free(got);
    free(cls);
}

/* ---- the GPU image path (src/cuda/gpuprep.c) with a fake nvJPEG ----------------------------- */

/* The kernels, executed with the same per-byte functions the GPU runs. */
int cs_gpuprep_k_hpass(cs_cuda_stream s, const uint8_t *src, size_t pitch, int W, int H, int o, int ylo, int rows,
                       int ow, const int32_t *hfirst, const int32_t *hw, int hk, uint8_t *tmp) {
    (void)s;
    gp_exec_hpass(src, pitch, W, H, o, ylo, rows, ow, hfirst, hw, hk, tmp);
    return 0;
}

int cs_gpuprep_k_vpass(cs_cuda_stream s, const uint8_t *tmp, int ow, int ylo, int oh, const int32_t *vfirst,
                       const int32_t *vn, const int32_t *vw, int vk, uint8_t *dst, size_t dst_stride) {
    (void)s;
    gp_exec_vpass(tmp, ow, ylo, oh, vfirst, vn, vw, vk, dst, dst_stride);
    return 0;
}

int cs_gpuprep_k_normalize(cs_cuda_stream s, const uint8_t *rgb, int64_t n, const float *lut, int bgr,
                           float *out) {
    (void)s;
    for (int c = 0; c < 3; c++)
        for (int64_t p = 0; p < n; p++) out[c * n + p] = lut[c * 256 + rgb[p * 3 + (bgr ? 2 - c : c)]];
    return 0;
}

static void check_gpuprep(cs_gpuprep *g, const uint8_t *jpg, size_t len, const cs_preproc *p, int want_display,
                          const char *decoder, const char *what) {
    const size_t n = (size_t)3 * p->crop_w * p->crop_h;
    float *want = malloc(n * sizeof *want), *got = malloc(n * sizeof *got);
    cs_image wd = {0};
    float wbox[4];
    cpu_prep(jpg, len, p, want_display, want, &wd, wbox);
    cs_gpuprep_out o = {.tensor = got, .want_display = want_display};
    cs_error err = {0};
    if (cs_gpuprep_run(g, jpg, len, NULL, p, &o, &err) != CS_OK) fail_msg("%s: %s", what, err.msg);
    assert_string_equal(o.decoder, decoder);
    if (memcmp(want, got, n * sizeof *got) != 0) fail_msg("%s: the tensor differs from the CPU path's", what);
    for (int i = 0; i < 4; i++)
        if (o.box[i] != wbox[i]) fail_msg("%s: box[%d] %g, want %g", what, i, o.box[i], wbox[i]);
    if (want_display) {
        assert_int_equal(o.display.width, wd.width);
        assert_int_equal(o.display.height, wd.height);
        assert_int_equal(o.display.channels, 3);
        if (memcmp(o.display.rgb, wd.rgb, (size_t)wd.width * wd.height * 3) != 0)
            fail_msg("%s: the display image differs from the CPU path's", what);
    } else {
        assert_null(o.display.rgb);
    }
    cs_img_free(&o.display);
    cs_img_free(&wd);
    free(want);
    free(got);
}

static void expect_cpu_path(cs_gpuprep *g, const void *buf, size_t len, const cs_img_limits *lim,
                            const char *what) {
    const cs_preproc p = cs_img_preproc_default();
    float t[3 * 224 * 224];
    cs_gpuprep_out o = {.tensor = t, .want_display = 1};
    cs_error err = {0};
    if (cs_gpuprep_run(g, buf, len, lim, &p, &o, &err) != CS_EUNSUPPORTED)
        fail_msg("%s: not left to the CPU path (%s)", what, err.msg);
}

static void test_gpuprep(void **state) {
    (void)state;
    cs_gpuprep *g = NULL;
    cs_error err = {0};
    if (cs_gpuprep_open(0, &g, &err) != CS_OK) fail_msg("open with the fake nvJPEG: %s", err.msg);
    size_t len, len6;
    uint8_t *jpg = make_jpeg(1203, 905, 1, &len), *jpg6 = make_jpeg(1203, 905, 6, &len6);
    cs_preproc p = cs_img_preproc_default();
    check_gpuprep(g, jpg, len, &p, 1, "gpu_hybrid", "default preprocessing");
    check_gpuprep(g, jpg6, len6, &p, 1, "gpu_hybrid", "EXIF orientation 6");
    check_gpuprep(g, jpg, len, &p, 0, "gpu_hybrid", "no display image");
    cs_preproc q = p;
    q.interp = CS_IMG_INTERP_BICUBIC;
    q.order = CS_IMG_ORDER_BGR;
    q.resize = 0;
    q.resize_w = 300;
    q.resize_h = 200;
    q.crop_w = 320; /* wider than the resize: zero padding */
    q.crop_h = 160;
    check_gpuprep(g, jpg6, len6, &q, 1, "gpu_hybrid", "bicubic, BGR, (h, w) resize, padded crop");

    /* what stays on the CPU path */
    expect_cpu_path(g, jpg, len - 300, NULL, "a cut JPEG");
    cs_img_limits lim = cs_img_limits_default();
    lim.max_pixels = 1000000;
    expect_cpu_path(g, jpg, len, &lim, "a JPEG over the pixel limit");
    static const uint8_t png_sig[16] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    expect_cpu_path(g, png_sig, sizeof png_sig, NULL, "a PNG");
    char path[512];
    snprintf(path, sizeof path, "%s/tests/data/images/orient_6.jpg", CS_SOURCE_DIR);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static uint8_t small[1 << 16];
    size_t ns = fread(small, 1, sizeof small, f);
    fclose(f);
    expect_cpu_path(g, small, ns, NULL, "a JPEG below the display size");
    snprintf(path, sizeof path, "%s/tests/data/images/cmyk.jpg", CS_SOURCE_DIR);
    assert_non_null(f = fopen(path, "rb"));
    ns = fread(small, 1, sizeof small, f);
    fclose(f);
    expect_cpu_path(g, small, ns, NULL, "a CMYK JPEG");
    /* a full GPU is this image's problem, not the path's: CS_ENOMEM (the
     * service then decodes it on the CPU), and the next image works */
    g_alloc_max = (size_t)1 << 20;
    cs_gpuprep *g3 = NULL;
    assert_int_equal(cs_gpuprep_open(0, &g3, &err), CS_OK);
    float *t3 = malloc(sizeof(float) * 3 * 224 * 224);
    cs_gpuprep_out o3 = {.tensor = t3, .want_display = 1};
    if (cs_gpuprep_run(g3, jpg, len, NULL, &p, &o3, &err) != CS_ENOMEM)
        fail_msg("a failed device allocation: %s (want out of memory)", err.msg);
    g_alloc_max = 0;
    free(t3);
    check_gpuprep(g3, jpg, len, &p, 1, "gpu_hybrid", "after a failed allocation");
    cs_gpuprep_close(g3);
    cs_gpuprep_close(g);

    /* the hardware decoder, where nvJPEG has one */
    setenv("CS_FAKE_NVJPEG_HW", "1", 1);
    assert_int_equal(cs_gpuprep_open(0, &g, &err), CS_OK);
    unsetenv("CS_FAKE_NVJPEG_HW");
    check_gpuprep(g, jpg6, len6, &p, 1, "hardware", "hardware decoder");
    setenv("CS_FAKE_NVJPEG_HW_REFUSE", "1", 1);
    check_gpuprep(g, jpg, len, &p, 1, "gpu_hybrid", "a JPEG the hardware decoder refuses");
    unsetenv("CS_FAKE_NVJPEG_HW_REFUSE");
    check_gpuprep(g, jpg, len, &p, 1, "hardware", "hardware decoder again");
    setenv("CS_NVJPEG_BACKEND", "gpu_hybrid", 1);
    cs_gpuprep *g2 = NULL;
    assert_int_equal(cs_gpuprep_open(0, &g2, &err), CS_OK);
    unsetenv("CS_NVJPEG_BACKEND");
    check_gpuprep(g2, jpg6, len6, &p, 1, "gpu_hybrid", "CS_NVJPEG_BACKEND=gpu_hybrid");
    cs_gpuprep_close(g2);
    cs_gpuprep_close(g);

    void *lib = dlopen(CS_FAKE_NVJPEG, RTLD_NOW | RTLD_NOLOAD);
    assert_non_null(lib);
    int (*misuse)(void) = (int (*)(void))dlsym(lib, "fake_nvjpeg_misuse");
    assert_non_null(misuse);
    if (misuse() != 0) fail_msg("gpuprep.c called nvJPEG out of its documented order %d times", misuse());
    dlclose(lib);
    free(jpg);
    free(jpg6);
}

/* The service's use of it: a model on the (emulated) GPU gets its large
 * JPEGs prepared there, counted in /metrics; what the path leaves goes to
 * the CPU and is answered as a CPU-only server would. */
static void test_gpuprep_service(void **state) {
    (void)state;
    cs_svc_params sp = cs_svc_default_params();
    sp.device = "cuda";
    sp.prep_threads = 1;
    sp.cache_mem_bytes = 0;
    sp.reload_poll_ms = 0;
    cs_svc *s = NULL;
    cs_error err = {0};
    assert_int_equal(cs_svc_create(&sp, &s, &err), CS_OK);
    if (cs_svc_add_model(s, "default", CS_SOURCE_DIR "/models/default/model.onnx", NULL, &err) != CS_OK)
        fail_msg("model: %s", err.msg);
    assert_int_equal(cs_svc_start(s, &err), CS_OK);
    /* a GPU leaves the cores to images: the encode is split over up to 8 */
    assert_int_equal(cs_svc_encode_threads(s), omp_get_num_procs() < 8 ? omp_get_num_procs() : 8);
    size_t len;
    uint8_t *jpg = make_jpeg(1203, 905, 6, &len);
    cs_svc_request rq = {.kind = CS_SVC_EXPLAIN, .image = jpg, .image_len = len};
    cs_svc_response r = {0};
    cs_svc_call(s, &rq, &r);
    if (r.outcome != CS_SVC_OK) fail_msg("explain: %s", r.err.msg);
    assert_int_equal(r.result->image_w, 905); /* orientation 6: the displayed size */
    assert_int_equal(r.result->image_h, 1203);
    assert_int_equal(r.result->overlay_w, 602); /* the full frame's display size (905 x 1203 -> 602 x 800) */
    assert_int_equal(r.result->overlay_h, 800);
    cs_svc_response_clear(&r);
    rq.image_len = len - 500; /* cut: the CPU decoder's answer */
    cs_svc_call(s, &rq, &r);
    assert_int_equal(r.outcome, CS_SVC_BAD_IMAGE);
    cs_svc_response_clear(&r);
    char *m = NULL;
    size_t mn = 0;
    FILE *f = open_memstream(&m, &mn);
    cs_svc_write_metrics(s, f);
    fclose(f);
    if (!strstr(m, "camserve_gpu_decode_total{path=\"gpu_hybrid\"} 1\n") ||
        !strstr(m, "camserve_gpu_decode_total{path=\"cpu\"} 1\n"))
        fail_msg("metrics do not count one GPU-prepared and one CPU JPEG:\n%s", m);
    free(m);
    cs_svc_free(s);
    free(jpg);
}

static void write_bytes(const char *path, const void *buf, size_t len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

typedef struct reported {
    int n;
    char path[256];
} reported;

static void note_bad(void *ctx, const char *path, const cs_error *e) {
    (void)e;
    reported *r = ctx;
    r->n++;
    snprintf(r->path, sizeof r->path, "%s", path);
}

/* The CLI's reader (src/cli/images.c) for a model on the GPU: the large
 * JPEG is prepared on the GPU path, exactly as cs_gpuprep_run makes it; a
 * small JPEG goes to the CPU (its team), a cut one is reported from there;
 * the results are packed in path order. */
static void test_gpuprep_cli(void **state) {
    (void)state;
    cs_error err = {0};
    cs_model_options mo = {.device = "cuda"};
    cs_model *m = NULL;
    if (cs_model_load(CS_SOURCE_DIR "/models/default/model.onnx", &mo, &m, &err) != CS_OK)
        fail_msg("model: %s", err.msg);
    char dir[] = "/tmp/cs_emul_cli_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char pa[64], pb[64], pc[64];
    snprintf(pa, sizeof pa, "%s/a.jpg", dir);
    snprintf(pb, sizeof pb, "%s/b.jpg", dir);
    snprintf(pc, sizeof pc, "%s/c.jpg", dir);
    size_t la, lc;
    uint8_t *ja = make_jpeg(1203, 905, 6, &la), *jc = make_jpeg(300, 200, 1, &lc);
    write_bytes(pa, ja, la);
    write_bytes(pb, ja, la - 500);
    write_bytes(pc, jc, lc);

    cli_pool pool;
    assert_int_equal(cli_pool_open(m, 2, true, &pool, &err), CS_OK);
    assert_non_null(pool.gp);
    assert_non_null(pool.team);
    const char *paths[] = {pa, pb, pc};
    cli_input in;
    reported rep = {0};
    if (cli_input_paths(m, &pool, paths, 3, &in, note_bad, &rep, &err) != CS_OK) fail_msg("%s", err.msg);
    assert_int_equal(rep.n, 1);
    assert_string_equal(rep.path, pb);
    assert_int_equal(in.batch, 2);
    assert_string_equal(in.names[0], pa);
    assert_string_equal(in.names[1], pc);
    assert_true(in.info[0].on_gpu && !in.info[1].on_gpu);
    assert_int_equal(in.images[0].width, 602); /* orientation 6: 905 x 1203 shown at 602 x 800 */
    assert_int_equal(in.images[0].height, 800);
    int64_t per = 3 * (int64_t)in.pp.crop_h * in.pp.crop_w;
    float *want = malloc((size_t)per * sizeof(float));
    assert_non_null(want);
    cs_gpuprep *g = NULL;
    assert_int_equal(cs_gpuprep_open(0, &g, &err), CS_OK);
    cs_gpuprep_out o = {.tensor = want, .want_display = 1};
    cs_img_limits lim = cs_img_limits_default();
    assert_int_equal(cs_gpuprep_run(g, ja, la, &lim, &in.pp, &o, &err), CS_OK);
    assert_memory_equal(in.data, want, (size_t)per * sizeof(float));
    assert_memory_equal(in.info[0].box, o.box, sizeof o.box);
    cs_img_free(&o.display);
    cs_gpuprep_close(g);
    int nw, nh;
    cs_img_preproc_need(&in.pp, &nw, &nh);
    cs_image ic;
    assert_int_equal(cs_img_decode(jc, lc, &lim, nw, nh, &ic, &err), CS_OK);
    assert_int_equal(cs_img_preprocess(&ic, &in.pp, want, &err), CS_OK);
    assert_memory_equal(in.data + per, want, (size_t)per * sizeof(float));
    cs_img_free(&ic);

    free(want);
    cli_input_free(&in);
    cli_pool_close(&pool);
    cs_model_free(m);
    remove(pa);
    remove(pb);
    remove(pc);
    rmdir(dir);
    free(ja);
    free(jc);
}

/* A graph exported with a fixed batch of 2: the backend's first plan (which
 * uploads the weights) is built at that batch, and answers as the CPU. */
static void test_fixed_batch(void **state) {
    (void)state;
    cs_error err = {0};
    cs_model_options mg_o = {.device = "cuda"}, mc_o = {.device = "cpu"};
    cs_model *mg = NULL, *mc = NULL;
    if (cs_model_load(CS_SOURCE_DIR "/tests/data/onnx/tiny_conv_b2.onnx", &mg_o, &mg, &err) != CS_OK)
        fail_msg("cuda: %s", err.msg);
    assert_int_equal(cs_model_load(CS_SOURCE_DIR "/tests/data/onnx/tiny_conv_b2.onnx", &mc_o, &mc, &err), CS_OK);
    float x[2 * 3 * 8 * 8], yg[8], yc[8];
    for (size_t i = 0; i < sizeof x / sizeof *x; i++) x[i] = (float)((i * 37) % 17) / 17.f - 0.5f;
    cs_session *sg, *sc;
    assert_int_equal(cs_session_create(mg, &sg, &err), CS_OK);
    assert_int_equal(cs_session_create(mc, &sc, &err), CS_OK);
    if (cs_session_run(sg, x, 2, yg, &err) != CS_OK) fail_msg("cuda batch 2: %s", err.msg);
    assert_int_equal(cs_session_run(sc, x, 2, yc, &err), CS_OK);
    for (int i = 0; i < 8; i++) assert_float_equal(yg[i], yc[i], 1e-3f * (1.f + fabsf(yc[i])));
    cs_session_free(sg);
    cs_session_free(sc);
    cs_model_free(mg);
    cs_model_free(mc);
}

static void test_no_leaks(void **state) {
    (void)state;
    if (g_alloc != 0) fail_msg("%d emulated device/pinned allocations were not freed", g_alloc);
    if (g_capture_refused == 0) fail_msg("no CUDA Graph capture was attempted");
    /* every family ran, so both conv paths did: cuDNN's fused one (ReLU
     * convolutions) and the unfused fallback (the identity ones) */
    if (g_fused_runs == 0) fail_msg("no convolution ran fused");
}

int main(void) {
    setenv("CS_CUDNN_FIND", "1", 1); /* the timed algorithm search too (see cudnnFind* above) */
    setenv("CS_NVJPEG_LIB", CS_FAKE_NVJPEG, 1); /* tests/unit/fake_nvjpeg.c, for test_gpuprep */
    int n = golden_parity_families(g_fam, MAX_FAMILIES);
    struct CMUnitTest tests[MAX_FAMILIES + 5];
    for (int i = 0; i < n; i++) {
        snprintf(g_names[i], sizeof g_names[i], "emul_%.200s", g_fam[i].name);
        tests[i] = (struct CMUnitTest){.name = g_names[i], .test_func = test_family, .initial_state = &g_fam[i]};
    }
    tests[n] = (struct CMUnitTest){.name = "emul_gpuprep", .test_func = test_gpuprep};
    tests[n + 1] = (struct CMUnitTest){.name = "emul_gpuprep_service", .test_func = test_gpuprep_service};
    tests[n + 2] = (struct CMUnitTest){.name = "emul_gpuprep_cli", .test_func = test_gpuprep_cli};
    tests[n + 3] = (struct CMUnitTest){.name = "emul_fixed_batch", .test_func = test_fixed_batch};
    tests[n + 4] = (struct CMUnitTest){.name = "emul_no_leaks", .test_func = test_no_leaks};
    return _cmocka_run_group_tests("cuda_emul", tests, (size_t)n + 5, NULL, NULL);
}
#endif
