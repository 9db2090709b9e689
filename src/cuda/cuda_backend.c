/* The CUDA backend: a model's graph executed on one GPU (cs_backend of
 * engine_internal.h).
 *
 * Model (cuda_model): the device index, the storage type, and the weights
 * uploaded once per model — each Conv weight in cuDNN's NHWC filter layout
 * (O x KH x KW x I) in the storage type, each Gemm/MatMul weight as stored,
 * biases and per-channel scales in fp32.  Uploads are memoised by (value,
 * kind) under a mutex, so the pre-BN weights of an unfolded Conv are only
 * uploaded when some explanation asks for that tensor; everything else is
 * uploaded by the first plan, built at load.  All sessions read them.
 *
 * Session (cuda_session): a stream, a cuDNN and a cuBLAS handle bound to
 * it, the cuBLAS workspace, and up to 8 plans keyed like the CPU session's
 * (batch, kept values, overridden value), evicted least-recently-used.
 *
 * Plan (cplan), built once per key by walking the IR (not the CPU plan: that
 * one creates oneDNN primitives and a host arena we do not want; shape
 * inference and per-batch constant folding reuse ops.c):
 *   - dts: device tensors, each a packed buffer with logical NCHW dims and
 *     per-dim strides; 4-D activations are NHWC.  Views (Reshape, Flatten,
 *     …) alias a dense buffer; a consumer that needs another layout gets a
 *     conversion copy, made once per tensor.
 *   - steps: cuDNN convolution + fused epilogue (bias, residual Add,
 *     activations), cuBLAS GEMM + epilogue, and the kernels of kernels.cu.
 *   - memory: one device arena, offsets by liveness (largest first, first
 *     fit); kept tensors live to the end.  Pinned host buffers stage the
 *     input, the logits and the gradient seed.
 *   - CUDA Graphs: the forward (steps, D2H logits; the H2D input copy
 *     precedes it, so that events around the graph time the device alone)
 *     is captured on second use and replayed; the backward likewise, per plan.
 *     Everything a step needs (workspace, descriptors, device constants) is
 *     allocated while planning, before any capture.  A capture that fails is
 *     dropped and that plan runs eagerly from then on.
 * Backward: the region of backward.c (nodes on a path from the layers to
 * the output), whose values the plan keeps, so no fusion happens there; the
 * gradients live in their own arena, cleared once per backward, and every
 * step adds its contribution (cuDNN/cuBLAS with beta = 1). */
#include "cuda/cuda_internal.h"
#include "engine/engine_internal.h"

#include <cublas_v2.h>

#include "cuda/cublas_lazy.h"
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_IO 64
#define SESSION_PLANS 8
#define ALIGN 256
#define BLAS_WS (8u << 20)
/* a cuDNN algorithm wanting more scratch than this is passed over */
#define MAX_WS ((size_t)512 << 20)

/* ---- errors ------------------------------------------------------------------------ */

static cs_status cu_fail(cudaError_t e, const char *what, cs_error *err) {
    (void)cudaGetLastError(); /* clear a non-sticky error for the next call */
    return cs_errorf(err, CS_EBACKEND, "CUDA: %s failed: %s", what, cudaGetErrorString(e));
}
#define CU(call, what)                                                                     \
    do {                                                                                   \
        cudaError_t e_ = (call);                                                           \
        if (e_ != cudaSuccess) return cu_fail(e_, (what), err);                            \
    } while (0)
#define DNN(call, what)                                                                    \
    do {                                                                                   \
        cudnnStatus_t s_ = (call);                                                         \
        if (s_ != CUDNN_STATUS_SUCCESS)                                                    \
            return cs_errorf(err, CS_EBACKEND, "cuDNN: %s failed: %s", (what),             \
                             cudnnGetErrorString(s_));                                     \
    } while (0)
#define BLAS(call, what)                                                                   \
    do {                                                                                   \
        cublasStatus_t s_ = (call);                                                        \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                   \
            return cs_errorf(err, CS_EBACKEND, "cuBLAS: %s failed: %s", (what),            \
                             cs_cublas_status(s_));                                        \
    } while (0)
/* a kernel launcher's status */
#define KL(call, what)                                                                     \
    do {                                                                                   \
        int e_ = (call);                                                                   \
        if (e_) return cu_fail((cudaError_t)e_, (what), err);                              \
    } while (0)
#define TRY(x)                                                                             \
    do {                                                                                   \
        cs_status t_ = (x);                                                                \
        if (t_ != CS_OK) return t_;                                                        \
    } while (0)

static cs_status unsupported(const cs_node *n, const char *why, cs_error *err) {
    return cs_errorf(err, CS_EUNSUPPORTED,
                     "node '%s' (%s): %s is not supported by the CUDA backend; use --device cpu",
                     n->name, n->op_type, why);
}

/* ---- model: weights on the device ------------------------------------------------ */

enum { W_CONV = 1, W_MAT, W_VEC32 };

typedef struct dweight {
    int value, kind;
    void *data; /* device memory, cudaFree'd with the model */
} dweight;

/* a convolution's algorithm, chosen once per shape and direction (see
 * conv_find) */
#define CONV_KEY 16
enum { ALGO_FWD, ALGO_BWD_DATA };
typedef struct algo_memo {
    int dir, algo;
    int64_t key[CONV_KEY];
} algo_memo;

typedef struct cuda_model {
    cs_model *m;
    int device;
    cs_cuda_dt dt;
    pthread_mutex_t lock; /* guards w and memo */
    int nw, capw;
    dweight *w;
    int nmemo, capmemo;
    algo_memo *memo;
} cuda_model;

/* The device copy of constant value v in layout `kind` (uploading it on the
 * first request).  W_VEC32 takes an optional fp32 host vector to upload in
 * place of the value (folded scales). */
static cs_status weight_get(cuda_model *cm, int v, int kind, const float *alt, int64_t alt_n,
                            int alt_key, const void **out, cs_error *err) {
    const cs_graph *g = &cm->m->g;
    cs_status st = CS_OK;
    int key = alt ? alt_key : v;
    pthread_mutex_lock(&cm->lock);
    for (int i = 0; i < cm->nw; i++)
        if (cm->w[i].value == key && cm->w[i].kind == kind) {
            *out = cm->w[i].data;
            pthread_mutex_unlock(&cm->lock);
            return CS_OK;
        }
    const cs_value *cv = v >= 0 ? &g->values[v] : NULL;
    int64_t n = alt ? alt_n : cs_shape_numel(&cv->shape);
    float *tmp = NULL;
    void *host = NULL, *dev = NULL;
    if (!alt && (!cv->data || cv->shape.dtype != CS_DT_FLOAT || n < 0)) {
        st = cs_errorf(err, CS_EUNSUPPORTED, "weight '%s' is not a float constant", cv->name);
        goto done;
    }
    size_t es = kind == W_VEC32 ? 4 : cs_cuda_dt_size(cm->dt);
    const float *src = alt ? alt : cv->data;
    if (kind == W_CONV) {
        const int64_t *d = cv->shape.dims;
        tmp = malloc((size_t)n * sizeof(float));
        if (!tmp) goto oom;
        cs_cuda_oihw_to_ohwi(src, tmp, d[0], d[1], d[2], d[3]);
        src = tmp;
    }
    host = malloc((size_t)n * es + 1);
    if (!host) goto oom;
    cs_cuda_convert(kind == W_VEC32 ? CS_CUDA_F32 : cm->dt, src, host, n);
    cudaError_t e = cudaMalloc(&dev, (size_t)n * es + 1);
    if (e == cudaSuccess) e = cudaMemcpy(dev, host, (size_t)n * es, cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
        st = cu_fail(e, "weight upload", err);
        goto done;
    }
    if (cm->nw == cm->capw) {
        int cap = cm->capw ? 2 * cm->capw : 64;
        dweight *nw = realloc(cm->w, (size_t)cap * sizeof *nw);
        if (!nw) goto oom;
        cm->w = nw;
        cm->capw = cap;
    }
    cm->w[cm->nw++] = (dweight){.value = key, .kind = kind, .data = dev};
    *out = dev;
    dev = NULL;
    goto done;
oom:
    st = cs_errorf(err, CS_ENOMEM, "out of memory uploading weights");
done:
    if (dev) cudaFree(dev);
    free(tmp);
    free(host);
    pthread_mutex_unlock(&cm->lock);
    return st;
}

/* ---- plan ---------------------------------------------------------------------------- */

typedef struct dten {
    cs_shape shape;               /* logical (ONNX) dims */
    int64_t strides[CS_MAX_DIMS]; /* elements, per logical dim */
    cs_cuda_dt et;
    const void *cdata;            /* host constant (graph or folded), else NULL */
    void *dconst;                 /* its device copy, when a step reads it as a tensor */
    int alias;                    /* dt whose buffer this one views, or -1 */
    int value;                    /* graph value, or -1 */
    int dense, nhwc;              /* cached conversion copies, or -1 */
    size_t bytes;
    int64_t offset;               /* in the arena (roots only) */
    int first, last;
    int64_t goffset;              /* in the gradient arena (roots), -1: no gradient */
} dten;

typedef enum {
    K_CONV, K_GEMM, K_EPI, K_UNARY, K_STRIDED, K_FILL, K_POOL, K_GPOOL, K_SOFTMAX, K_LN
} kkind;

typedef struct kstep {
    kkind kind;
    int node;          /* graph node, -1 for conversions and the output copy */
    int in[2], out;    /* dts; in[1]: b operand or -1 */
    int sum;           /* dt added by the epilogue (residual), or -1 */
    cs_cuda_acts acts; /* fused activations (epilogues) / the unary function (a[0]) */
    /* K_CONV */
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    cudnnConvolutionFwdAlgo_t algo;
    int64_t ckey[CONV_KEY]; /* shape, geometry and type: the algorithm memo's key */
    /* cuDNN's fused bias + residual + ReLU (conv_fuse_trial), when it took this one */
    bool fusable, fused;
    cudnnActivationDescriptor_t ad;
    cudnnTensorDescriptor_t bd;
    int bias_v;             /* the bias value (its storage-type copy is made on demand) */
    const void *bias_fused; /* the bias, fp32 or in the storage type, as cuDNN accepted it */
    const void *w;
    const float *bias, *scale;
    int64_t C, inner;
    /* K_GEMM: row-major Y[M,N] = A[M,K] * op(B) */
    int64_t M, N, K;
    int transB;
    float alpha;
    /* K_STRIDED */
    int op;
    cs_cuda_walk walk;
    int64_t off_o, off_a, off_b; /* element offsets into out, a, b */
    float fill;
    cs_cuda_pool pool;
    int64_t gN, gC, gHW, gxn, gxc, gxhw, gyn, gyc; /* K_GPOOL */
    int is_max;
    int64_t outer, len;  /* softmax (inner = .inner), layernorm rows = outer */
    float eps;
    const float *gamma, *beta;
} kstep;

/* backward of one forward step, built by bwd_build */
typedef struct bstep {
    int step;
    cudnnConvolutionBwdDataAlgo_t balgo;
} bstep;

typedef struct cplan {
    cuda_model *cm;
    const cs_model *m;
    int batch;
    bool *keep;    /* [nvalues] */
    int override_v;
    cs_arena consts; /* host: folded constants, unfolded node copies */
    int ndt, capdt;
    dten *dt;
    int *val_dt;   /* [nvalues] */
    int nsteps, capsteps;
    kstep *steps;
    /* fusion bookkeeping */
    bool *skip;    /* [nnodes] */
    cs_node **unfolded; /* [nnodes] a Conv run without its folded BN, else NULL */
    int *cons_start, *cons;
    int in_dt, in32, out_dt, out32, ovr32, ovr_dt;
    bool in_unused; /* the override leaves nothing that reads the input */
    void *arena;
    size_t arena_size;
    void *ws;      /* cuDNN workspace for forward and backward */
    size_t ws_size;
    void **dconsts; /* device constants owned by the plan */
    int ndconsts, capdconsts;
    float *h_in, *h_out, *h_seed, *h_ovr; /* pinned */
    /* CUDA graphs */
    cudaGraphExec_t g_fwd, g_bwd;
    int fwd_runs, bwd_runs; /* eager runs so far: the second is captured */
    bool no_graph;
    /* backward */
    bool has_bwd;
    int bwd_nlayers, bwd_layers[16];
    int nb;
    bstep *bsteps;
    void *garena;
    size_t garena_size;
    bool *in_d;    /* [nvalues] */
    /* downloads (cs_session_layer / gradcam): host fp32 NCHW, pinned */
    float *dl_dev;   /* device fp32 scratch, largest kept 4-D value */
    size_t dl_n;
    float *dl_act[16], *dl_grad[16], *dl_map[16];
    int dl_v[16];
    bool dl_used[16];
    bool dl_act_ok[16], dl_grad_ok[16], dl_map_ok[16];
    float *cam_w;    /* device fp32 batch x C */
    size_t cam_w_n;
    /* CS_CUDA_PROFILE: an event before each forward step, one after the
     * last, and one between a convolution and its epilogue */
    cudaEvent_t *prof_ev, *prof_mid;
    int prof_cur;
    /* LRU */
    int nkeep;
    int *keep_list;
    unsigned long last_used;
} cplan;

typedef struct cuda_session {
    cuda_model *cm;
    const cs_model *m;
    cudaStream_t stream;
    cudnnHandle_t dnn;
    cublasHandle_t blas;
    const cs_cublas_api *blasf; /* cuBLAS, loaded on first use (cublas_lazy.c) */
    void *blas_ws;
    cplan *plans[SESSION_PLANS];
    unsigned long tick;
    cplan *explain;
    bool have_grad;
    bool use_graphs;
    bool profile;     /* CS_CUDA_PROFILE: eager forwards, timed per step (stderr) */
    bool pending;     /* work enqueued that nobody has waited for yet (a backward) */
    /* around the last forward's graph (cs_session_device_ms) */
    cudaEvent_t ev_start, ev_end;
    double device_ms;
} cuda_session;

static size_t align_up(size_t x) { return (x + ALIGN - 1) & ~(size_t)(ALIGN - 1); }

static int new_dt(cplan *p, const cs_shape *shape, bool nhwc, cs_cuda_dt et) {
    const cs_shape sc = *shape; /* shape may point into p->dt, which moves */
    if (p->ndt == p->capdt) {
        int cap = p->capdt ? 2 * p->capdt : 256;
        dten *n = realloc(p->dt, (size_t)cap * sizeof *n);
        if (!n) return -1;
        p->dt = n;
        p->capdt = cap;
    }
    dten *t = &p->dt[p->ndt];
    memset(t, 0, sizeof *t);
    t->shape = sc;
    t->et = et;
    t->alias = t->dense = t->nhwc = t->value = -1;
    t->first = t->last = -1;
    t->goffset = -1;
    if (nhwc && sc.ndim == 4) cs_cuda_nhwc_strides(sc.dims, t->strides);
    else cs_cuda_dense_strides(sc.ndim, sc.dims, t->strides);
    int64_t ne = cs_shape_numel(&sc);
    t->bytes = (size_t)(ne > 0 ? ne : 1) * cs_cuda_dt_size(et);
    return p->ndt++;
}

static int root_of(const cplan *p, int d) {
    while (p->dt[d].alias >= 0) d = p->dt[d].alias;
    return d;
}

static kstep *new_step(cplan *p, kkind kind, int node) {
    if (p->nsteps == p->capsteps) {
        int cap = p->capsteps ? 2 * p->capsteps : 256;
        kstep *n = realloc(p->steps, (size_t)cap * sizeof *n);
        if (!n) return NULL;
        p->steps = n;
        p->capsteps = cap;
    }
    kstep *s = &p->steps[p->nsteps++];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->node = node;
    s->in[0] = s->in[1] = s->out = s->sum = -1;
    return s;
}

/* Same layout as `want` strides, ignoring dims of size 1. */
static bool strides_match(const dten *t, const int64_t *want) {
    for (int i = 0; i < t->shape.ndim; i++)
        if (t->shape.dims[i] > 1 && t->strides[i] != want[i]) return false;
    return true;
}

static bool is_dense(const dten *t) {
    int64_t s[CS_MAX_DIMS];
    cs_cuda_dense_strides(t->shape.ndim, t->shape.dims, s);
    return strides_match(t, s);
}

static bool is_nhwc(const dten *t) {
    if (t->shape.ndim != 4) return false;
    int64_t s[4];
    cs_cuda_nhwc_strides(t->shape.dims, s);
    return strides_match(t, s);
}

static cs_status add_dconst(cplan *p, void *d, cs_error *err) {
    if (p->ndconsts == p->capdconsts) {
        int cap = p->capdconsts ? 2 * p->capdconsts : 32;
        void **n = realloc(p->dconsts, (size_t)cap * sizeof *n);
        if (!n) {
            cudaFree(d);
            return cs_errorf(err, CS_ENOMEM, "out of memory");
        }
        p->dconsts = n;
        p->capdconsts = cap;
    }
    p->dconsts[p->ndconsts++] = d;
    return CS_OK;
}

/* Device copy (storage type, dense) of a constant dt read as a tensor. */
static cs_status dconst_of(cplan *p, int d, cs_error *err) {
    dten *t = &p->dt[d];
    if (t->dconst) return CS_OK;
    if (t->shape.dtype != CS_DT_FLOAT)
        return cs_errorf(err, CS_EUNSUPPORTED, "a non-float constant is read as a tensor on the GPU; use --device cpu");
    int64_t n = cs_shape_numel(&t->shape);
    size_t bytes = (size_t)(n > 0 ? n : 1) * cs_cuda_dt_size(p->cm->dt);
    void *host = malloc(bytes), *dev = NULL;
    if (!host) return cs_errorf(err, CS_ENOMEM, "out of memory");
    cs_cuda_convert(p->cm->dt, t->cdata, host, n);
    cudaError_t e = cudaMalloc(&dev, bytes);
    if (e == cudaSuccess) e = cudaMemcpy(dev, host, (size_t)n * cs_cuda_dt_size(p->cm->dt), cudaMemcpyHostToDevice);
    free(host);
    if (e != cudaSuccess) {
        if (dev) cudaFree(dev);
        return cu_fail(e, "constant upload", err);
    }
    TRY(add_dconst(p, dev, err));
    t = &p->dt[d];
    t->dconst = dev;
    t->et = p->cm->dt;
    cs_cuda_dense_strides(t->shape.ndim, t->shape.dims, t->strides);
    return CS_OK;
}

/* fp32 device vector from host data (biases, folded scales), plan-owned. */
static cs_status dvec32(cplan *p, const float *h, int64_t n, const float **out, cs_error *err) {
    void *dev = NULL;
    CU(cudaMalloc(&dev, (size_t)(n > 0 ? n : 1) * 4), "cudaMalloc");
    cudaError_t e = cudaMemcpy(dev, h, (size_t)n * 4, cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
        cudaFree(dev);
        return cu_fail(e, "vector upload", err);
    }
    TRY(add_dconst(p, dev, err));
    *out = dev;
    return CS_OK;
}

/* A strided copy step from dt a into dt o, whole tensors of equal dims. */
static cs_status copy_step(cplan *p, int node, int a, int o, cs_error *err) {
    kstep *s = new_step(p, K_STRIDED, node);
    if (!s) return cs_errorf(err, CS_ENOMEM, "out of memory");
    s->op = CS_BIN_COPY;
    s->in[0] = a;
    s->out = o;
    if (cs_cuda_walk_make(&s->walk, p->dt[o].shape.ndim, p->dt[o].shape.dims, p->dt[o].strides,
                          p->dt[a].strides, NULL) != 0)
        return cs_errorf(err, CS_EUNSUPPORTED, "a tensor of more than %d dims on the GPU", CS_CUDA_MAXD);
    return CS_OK;
}

/* d in the wanted layout (dense C order, or NHWC for 4-D), converting once. */
static cs_status as_layout(cplan *p, int d, bool nhwc, int *out, cs_error *err) {
    if (p->dt[d].cdata) {
        if (nhwc && p->dt[d].shape.ndim == 4 && !is_nhwc(&p->dt[d]))
            return cs_errorf(err, CS_EUNSUPPORTED, "a constant 4-D tensor as a convolution input on the GPU; use --device cpu");
        TRY(dconst_of(p, d, err));
        *out = d;
        return CS_OK;
    }
    if (nhwc ? is_nhwc(&p->dt[d]) : is_dense(&p->dt[d])) {
        *out = d;
        return CS_OK;
    }
    int cached = nhwc ? p->dt[d].nhwc : p->dt[d].dense;
    if (cached >= 0) {
        *out = cached;
        return CS_OK;
    }
    int c = new_dt(p, &p->dt[d].shape, nhwc, p->dt[d].et);
    if (c < 0) return cs_errorf(err, CS_ENOMEM, "out of memory");
    p->dt[c].value = p->dt[d].value;
    TRY(copy_step(p, -1, d, c, err));
    if (nhwc) p->dt[d].nhwc = c;
    else p->dt[d].dense = c;
    *out = c;
    return CS_OK;
}

static int val(const cplan *p, int v) { return v < 0 ? -1 : p->val_dt[v]; }

static const cs_node *node_of(const cplan *p, int ni) {
    return p->unfolded[ni] ? p->unfolded[ni] : &p->m->g.nodes[ni];
}

/* output dt of value v (the result of node ni) */
static cs_status bind_out(cplan *p, int v, const cs_shape *s, bool nhwc, int *out, cs_error *err) {
    int d = new_dt(p, s, nhwc, p->cm->dt);
    if (d < 0) return cs_errorf(err, CS_ENOMEM, "out of memory");
    p->dt[d].value = v;
    if (v >= 0) p->val_dt[v] = d;
    *out = d;
    return CS_OK;
}

/* ---- fusion (as plan.c's, minus what the GPU epilogue cannot express) ---- */

static int live_consumers(const cplan *p, int v, int *only) {
    int n = 0;
    for (int i = p->cons_start[v]; i < p->cons_start[v + 1]; i++) {
        int c = p->cons[i];
        if (p->m->g.nodes[c].dead || p->skip[c]) continue;
        if (only) only[n < 2 ? n : 1] = c;
        n++;
    }
    return n;
}

static bool fusable(const cplan *p, int v) {
    return !p->keep[v] && !p->m->g.values[v].is_graph_output && v != p->override_v;
}

static bool const_scalar(const cplan *p, int v, float *x) {
    int d = val(p, v);
    if (d < 0 || !p->dt[d].cdata || p->dt[d].shape.dtype != CS_DT_FLOAT || cs_shape_numel(&p->dt[d].shape) != 1)
        return false;
    *x = *(const float *)p->dt[d].cdata;
    return true;
}

/* Maps a unary node to a function; false if it is none we run. */
static bool fn_of(const cplan *p, const cs_node *n, cs_cuda_act *a) {
    memset(a, 0, sizeof *a);
    switch (n->op) {
    case CS_OP_RELU: a->fn = CS_FN_RELU; return true;
    case CS_OP_LEAKYRELU: a->fn = CS_FN_LEAKYRELU; a->alpha = cs_attr_float(n, "alpha", 0.01f); return true;
    case CS_OP_SIGMOID: a->fn = CS_FN_SIGMOID; return true;
    case CS_OP_TANH: a->fn = CS_FN_TANH; return true;
    case CS_OP_HARDSWISH: a->fn = CS_FN_HARDSWISH; return true;
    case CS_OP_HARDSIGMOID:
        a->fn = CS_FN_HARDSIGMOID;
        a->alpha = cs_attr_float(n, "alpha", 0.2f);
        a->beta = cs_attr_float(n, "beta", 0.5f);
        return true;
    case CS_OP_CLIP:
        a->fn = CS_FN_CLIP;
        a->alpha = cs_attr_float(n, "min", -INFINITY);
        a->beta = cs_attr_float(n, "max", INFINITY);
        for (int i = 1; i < n->ninputs && i < 3; i++) {
            float x;
            if (n->inputs[i] < 0) continue;
            if (!const_scalar(p, n->inputs[i], &x)) return false;
            if (i == 1) a->alpha = x;
            else a->beta = x;
        }
        return true;
    case CS_OP_GELU: a->fn = CS_FN_GELU_ERF; return true;
    case CS_OP_ERF: a->fn = CS_FN_ERF; return true;
    case CS_OP_SQRT: a->fn = CS_FN_SQRT; return true;
    case CS_OP_EXP: a->fn = CS_FN_EXP; return true;
    case CS_OP_NEG: a->fn = CS_FN_NEG; return true;
    case CS_OP_RECIPROCAL: a->fn = CS_FN_RECIPROCAL; return true;
    default: return false;
    }
}

static bool fusable_act(const cs_cuda_act *a) {
    switch (a->fn) {
    case CS_FN_RELU: case CS_FN_CLIP: case CS_FN_LEAKYRELU: case CS_FN_SIGMOID: case CS_FN_HARDSIGMOID:
    case CS_FN_HARDSWISH: case CS_FN_TANH: return true;
    default: return false;
    }
}

/* What node ni (a Conv or BatchNormalization, first output y) absorbs:
 * activations, one residual Add before them, x·Sigmoid(x).  Returns the
 * value the fused result lands in; *sum_v the addend value or -1. */
static int plan_fusion(cplan *p, int ni, const cs_shape *y, cs_cuda_acts *acts, int *sum_v) {
    const cs_graph *g = &p->m->g;
    const cs_node *n = node_of(p, ni);
    bool conv = n->op == CS_OP_CONV;
    int cur = n->outputs[0];
    *sum_v = -1;
    acts->n = 0;
    for (;;) {
        if (!fusable(p, cur)) break;
        int c[2];
        int nc = live_consumers(p, cur, c);
        if (nc == 1) {
            const cs_node *cn = &g->nodes[c[0]];
            cs_cuda_act a;
            if (fn_of(p, cn, &a) && fusable_act(&a) && acts->n < CS_CUDA_MAX_ACTS - 1) {
                acts->a[acts->n++] = a;
                p->skip[c[0]] = true;
                cur = cn->outputs[0];
                continue;
            }
            if (conv && cn->op == CS_OP_ADD && acts->n == 0 && *sum_v < 0 && cn->ninputs == 2 &&
                cn->inputs[0] != cn->inputs[1]) {
                int other = cn->inputs[0] == cur ? cn->inputs[1] : cn->inputs[0];
                int od = val(p, other);
                /* the addend exists already, is computed, has our shape */
                if (od >= 0 && !p->dt[od].cdata && p->dt[od].shape.ndim == 4 &&
                    cs_shape_equal(&p->dt[od].shape, y)) {
                    *sum_v = other;
                    p->skip[c[0]] = true;
                    cur = cn->outputs[0];
                    continue;
                }
            }
            break;
        }
        if (nc == 2 && conv && acts->n < CS_CUDA_MAX_ACTS - 1) {
            const cs_node *a0 = &g->nodes[c[0]], *a1 = &g->nodes[c[1]];
            const cs_node *sig = a0->op == CS_OP_SIGMOID ? a0 : a1, *mul = a0->op == CS_OP_SIGMOID ? a1 : a0;
            int si = a0->op == CS_OP_SIGMOID ? c[0] : c[1], mi = a0->op == CS_OP_SIGMOID ? c[1] : c[0];
            int sc[2];
            if (sig->op == CS_OP_SIGMOID && mul->op == CS_OP_MUL && mul->ninputs == 2 &&
                fusable(p, sig->outputs[0]) &&
                ((mul->inputs[0] == cur && mul->inputs[1] == sig->outputs[0]) ||
                 (mul->inputs[1] == cur && mul->inputs[0] == sig->outputs[0])) &&
                live_consumers(p, sig->outputs[0], sc) == 1) {
                acts->a[acts->n++] = (cs_cuda_act){.fn = CS_FN_SWISH, .alpha = 1.f};
                p->skip[si] = p->skip[mi] = true;
                cur = mul->outputs[0];
                continue;
            }
        }
        break;
    }
    return cur;
}

/* ---- per-op planning ------------------------------------------------------------------- */

static cudnnDataType_t dnn_type(cs_cuda_dt dt) {
    return dt == CS_CUDA_F16 ? CUDNN_DATA_HALF : dt == CS_CUDA_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
}

/* ---- fused convolutions ---------------------------------------------------------------- */

/* cudnnConvolutionBiasActivationForward computes act(conv(x) + z + bias) in
 * the convolution's own epilogue: the output is written once instead of
 * being read and written again by k_epilogue, which took 3.2 of batch-64
 * ResNet-50's 5.1 GPU ms on an H200 (bench/results/gpu-h200-run4.md).
 * There cuDNN takes an fp32 bias only for fp32 data, so half-precision
 * plans add a bias rounded to the storage type (bench/results/gpu-h200.md).  cuDNN documents limits
 * (identity activation only with the precomputed implicit GEMM algorithm;
 * per-configuration bias types) that the planner does not repeat: each
 * candidate is tried once on the plan's own buffers, its bias first in fp32
 * (a folded BatchNorm's shift keeps its precision), then in the storage
 * type, and runs unfused (cuDNN + k_epilogue) where cuDNN refuses both.  CS_CUDA_FUSE=0 turns it off. */
static bool fuse_wanted(void) {
    const char *e = getenv("CS_CUDA_FUSE");
    return !(e && strcmp(e, "0") == 0);
}

static cudnnStatus_t conv_fused(cudnnHandle_t dnn, const cplan *p, const kstep *s, void *ws, size_t ws_size);

/* After the arena exists: which fusable convolutions cuDNN takes. */
static cs_status conv_fuse_trial(cplan *p, cudnnHandle_t dnn, cs_error *err) {
    int nf = 0, nf32 = 0, nc = 0;
    for (int i = 0; i < p->nsteps; i++) {
        kstep *s = &p->steps[i];
        if (s->kind != K_CONV) continue;
        nc++;
        if (!s->fusable) continue;
        const cs_shape *y = &p->dt[s->out].shape;
        for (int k = 0; k < 2 && !s->fused; k++) {
            if (k == 1 && p->cm->dt == CS_CUDA_F32) break;
            s->bias_fused = s->bias;
            if (k == 1) TRY(weight_get(p->cm, s->bias_v, W_MAT, NULL, 0, 0, &s->bias_fused, err));
            DNN(cudnnSetTensor4dDescriptor(s->bd, CUDNN_TENSOR_NHWC, dnn_type(k ? p->cm->dt : CS_CUDA_F32), 1,
                                           (int)y->dims[1], 1, 1),
                "bias descriptor");
            s->fused = conv_fused(dnn, p, s, p->ws, p->ws_size) == CUDNN_STATUS_SUCCESS;
        }
        nf += s->fused;
        nf32 += s->fused && s->bias_fused == s->bias;
    }
    /* the tries ran on garbage: wait for them, and make sure none failed late */
    cudaStream_t st = NULL;
    DNN(cudnnGetStream(dnn, &st), "stream");
    CU(cudaStreamSynchronize(st), "fused convolution trial");
    if (getenv("CS_TRACE"))
        fprintf(stderr, "cuda plan: %d of %d convolutions fused by cuDNN (%d with an fp32 bias)\n", nf, nc, nf32);
    return CS_OK;
}

/* ---- convolution algorithms ------------------------------------------------------------ */

/* cuDNN's heuristics (_v7) choose the algorithms by default.  CS_CUDNN_FIND=1
 * makes the planner time the candidates instead (cudnnFind*, as PyTorch's
 * cudnn.benchmark does; it allocates its own buffers) and take the fastest
 * that fits MAX_WS (fp32: no tensor-op algorithm), once per shape and
 * direction per model: plans at other batch sizes, and other sessions,
 * reuse it.  It is not the default: on an H200 a single search timed each
 * candidate's first launch, module loading included (CUDA's lazy loading),
 * and its picks made batch-1 ResNet-50 fp16 3.8x slower than the
 * heuristics' (bench/results/gpu-h200-run2.md), so the search runs twice
 * and the second one counts; even so it is no faster at batch 64
 * (bench/results/gpu-h200.md).  A failed search falls back to the
 * heuristics. */
static bool find_wanted(void) {
    const char *e = getenv("CS_CUDNN_FIND");
    return e && strcmp(e, "1") == 0;
}

static bool memo_get(cuda_model *cm, int dir, const int64_t *key, int *algo) {
    bool hit = false;
    pthread_mutex_lock(&cm->lock);
    for (int i = 0; i < cm->nmemo && !hit; i++)
        if (cm->memo[i].dir == dir && memcmp(cm->memo[i].key, key, sizeof cm->memo[i].key) == 0) {
            *algo = cm->memo[i].algo;
            hit = true;
        }
    pthread_mutex_unlock(&cm->lock);
    return hit;
}

/* out of memory: not remembered, searched again next time */
static void memo_put(cuda_model *cm, int dir, const int64_t *key, int algo) {
    pthread_mutex_lock(&cm->lock);
    if (cm->nmemo == cm->capmemo) {
        int cap = cm->capmemo ? 2 * cm->capmemo : 32;
        algo_memo *nm = realloc(cm->memo, (size_t)cap * sizeof *nm);
        if (nm) {
            cm->memo = nm;
            cm->capmemo = cap;
        }
    }
    if (cm->nmemo < cm->capmemo) {
        algo_memo *e = &cm->memo[cm->nmemo++];
        e->dir = dir;
        e->algo = algo;
        memcpy(e->key, key, sizeof e->key);
    }
    pthread_mutex_unlock(&cm->lock);
}

/* one result of a search: the two directions' result types differ only in name */
typedef struct found_algo {
    int algo;
    cudnnStatus_t status;
    float time;
    size_t memory;
    cudnnMathType_t math;
} found_algo;

/* The timed choice for s (a planned K_CONV step) in direction dir, or -1
 * (then the caller asks the heuristics). */
static int conv_find(cuda_model *cm, cudnnHandle_t dnn, const kstep *s, int dir, const char *node) {
    int algo = -1;
    if (!find_wanted()) return -1;
    if (memo_get(cm, dir, s->ckey, &algo)) return algo;
    found_algo r[8];
    int got = 0;
    cudnnStatus_t ds;
    if (dir == ALGO_FWD) {
        cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        for (int pass = 0; pass < 2; pass++)
            ds = cudnnFindConvolutionForwardAlgorithm(dnn, s->xd, s->wd, s->cd, s->yd,
                                                      CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, perf);
        for (int i = 0; i < got && i < 8; i++)
            r[i] = (found_algo){(int)perf[i].algo, perf[i].status, perf[i].time, perf[i].memory, perf[i].mathType};
    } else {
        cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        for (int pass = 0; pass < 2; pass++)
            ds = cudnnFindConvolutionBackwardDataAlgorithm(dnn, s->wd, s->yd, s->cd, s->xd,
                                                           CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, perf);
        for (int i = 0; i < got && i < 8; i++)
            r[i] = (found_algo){(int)perf[i].algo, perf[i].status, perf[i].time, perf[i].memory, perf[i].mathType};
    }
    if (got > 8) got = 8;
    float ms = 0.f;
    size_t mem = 0;
    /* sorted fastest first: the first that fits, and for fp32 no tensor-op one */
    for (int i = 0; ds == CUDNN_STATUS_SUCCESS && i < got && algo < 0; i++)
        if (r[i].status == CUDNN_STATUS_SUCCESS && r[i].memory <= MAX_WS &&
            (cm->dt != CS_CUDA_F32 || r[i].math != CUDNN_TENSOR_OP_MATH)) {
            algo = r[i].algo;
            ms = r[i].time;
            mem = r[i].memory;
        }
    (void)cudaGetLastError(); /* a failed search leaves nothing behind */
    if (getenv("CS_TRACE")) {
        if (algo >= 0)
            fprintf(stderr, "cuda: node '%s' %s: algorithm %d, %.3f ms, workspace %zu KB (of %d timed)\n", node,
                    dir == ALGO_FWD ? "forward" : "backward-data", algo, (double)ms, mem >> 10, got);
        else
            fprintf(stderr, "cuda: node '%s' %s: no timed algorithm (%s), heuristics\n", node,
                    dir == ALGO_FWD ? "forward" : "backward-data", cudnnGetErrorString(ds));
    }
    if (algo >= 0) memo_put(cm, dir, s->ckey, algo);
    return algo;
}

static cs_status plan_conv(cplan *p, cudnnHandle_t dnn, int ni, const cs_shape *y, cs_error *err) {
    const cs_node *n = node_of(p, ni);
    int xd0 = val(p, n->inputs[0]), wv = n->inputs[1], bv = n->ninputs > 2 ? n->inputs[2] : -1;
    if (xd0 < 0 || val(p, wv) < 0 || !p->dt[val(p, wv)].cdata || (bv >= 0 && !p->dt[val(p, bv)].cdata))
        return unsupported(n, "a convolution with computed weights", err);
    const cs_shape xs = p->dt[xd0].shape, ws = p->dt[val(p, wv)].shape;
    if (xs.ndim != 4 || ws.ndim != 4 || y->ndim != 4) return unsupported(n, "a non-2-D convolution", err);
    int64_t group = cs_attr_int(n, "group", 1);
    dnnl_dims_t st, dil, pl, pr;
    cs_conv_pads(n, &xs, &ws, y, st, dil, pl, pr);
    (void)pr; /* oneDNN's right padding: it absorbs a stride remainder cuDNN drops by itself */
    {
        /* cuDNN pads both sides alike: the ONNX begin and end pads must agree
         * (the output-size check below catches anything else) */
        const int64_t *pads;
        int np = cs_attr_ints(n, "pads", &pads);
        const char *ap = cs_attr_string(n, "auto_pad", "NOTSET");
        bool sym = true;
        if (strcmp(ap, "NOTSET") == 0) sym = np != 4 || (pads[0] == pads[2] && pads[1] == pads[3]);
        else if (strcmp(ap, "VALID") != 0)
            for (int i = 0; i < 2; i++) {
                int64_t total = (y->dims[2 + i] - 1) * st[i] + (ws.dims[2 + i] - 1) * (dil[i] + 1) + 1 - xs.dims[2 + i];
                sym = sym && (total <= 0 || total % 2 == 0);
            }
        if (!sym) return unsupported(n, "asymmetric padding", err);
    }
    if (group < 1 || xs.dims[1] != ws.dims[1] * group) return unsupported(n, "this channel grouping", err);

    int xd;
    TRY(as_layout(p, xd0, true, &xd, err));
    cs_cuda_acts acts;
    int sum_v;
    int outv = plan_fusion(p, ni, y, &acts, &sum_v);
    int sum_d = -1;
    if (sum_v >= 0) TRY(as_layout(p, val(p, sum_v), true, &sum_d, err));
    int yd;
    TRY(bind_out(p, outv, y, true, &yd, err));
    kstep *s = new_step(p, K_CONV, ni);
    if (!s) return cs_errorf(err, CS_ENOMEM, "out of memory");
    s->in[0] = xd;
    s->out = yd;
    s->sum = sum_d;
    s->acts = acts;
    s->C = y->dims[1];
    s->inner = 1;
    TRY(weight_get(p->cm, wv, W_CONV, NULL, 0, 0, &s->w, err));
    if (bv >= 0) {
        const void *b;
        TRY(weight_get(p->cm, bv, W_VEC32, NULL, 0, 0, &b, err));
        s->bias = b;
    }
    cudnnDataType_t t = dnn_type(p->cm->dt);
    /* bias, then the residual, then at most a ReLU: what cuDNN's fused
     * convolution computes (conv_fuse_trial decides at the end of planning) */
    s->fusable = fuse_wanted() && bv >= 0 &&
                 (acts.n == 0 || (acts.n == 1 && acts.a[0].fn == CS_FN_RELU));
    if (s->fusable) {
        s->bias_v = bv;
        DNN(cudnnCreateActivationDescriptor(&s->ad), "activation descriptor");
        DNN(cudnnSetActivationDescriptor(s->ad, acts.n ? CUDNN_ACTIVATION_RELU : CUDNN_ACTIVATION_IDENTITY,
                                         CUDNN_NOT_PROPAGATE_NAN, 0.0),
            "activation descriptor");
        DNN(cudnnCreateTensorDescriptor(&s->bd), "tensor descriptor");
    }
    DNN(cudnnCreateTensorDescriptor(&s->xd), "tensor descriptor");
    DNN(cudnnCreateTensorDescriptor(&s->yd), "tensor descriptor");
    DNN(cudnnCreateFilterDescriptor(&s->wd), "filter descriptor");
    DNN(cudnnCreateConvolutionDescriptor(&s->cd), "convolution descriptor");
    DNN(cudnnSetTensor4dDescriptor(s->xd, CUDNN_TENSOR_NHWC, t, (int)xs.dims[0], (int)xs.dims[1],
                                   (int)xs.dims[2], (int)xs.dims[3]), "input descriptor");
    DNN(cudnnSetTensor4dDescriptor(s->yd, CUDNN_TENSOR_NHWC, t, (int)y->dims[0], (int)y->dims[1],
                                   (int)y->dims[2], (int)y->dims[3]), "output descriptor");
    /* filter dims are K, C/groups, R, S whatever the format */
    DNN(cudnnSetFilter4dDescriptor(s->wd, t, CUDNN_TENSOR_NHWC, (int)ws.dims[0], (int)ws.dims[1],
                                   (int)ws.dims[2], (int)ws.dims[3]), "filter descriptor");
    DNN(cudnnSetConvolution2dDescriptor(s->cd, (int)pl[0], (int)pl[1], (int)st[0], (int)st[1],
                                        (int)dil[0] + 1, (int)dil[1] + 1, CUDNN_CROSS_CORRELATION,
                                        CUDNN_DATA_FLOAT), "convolution descriptor");
    DNN(cudnnSetConvolutionGroupCount(s->cd, (int)group), "group count");
    /* fp32 stays fp32: FMA math keeps TF32 tensor cores out of it */
    DNN(cudnnSetConvolutionMathType(s->cd, p->cm->dt == CS_CUDA_F32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH),
        "math type");
    int on, oc, oh, ow;
    DNN(cudnnGetConvolution2dForwardOutputDim(s->cd, s->xd, s->wd, &on, &oc, &oh, &ow), "output dims");
    if (on != y->dims[0] || oc != y->dims[1] || oh != y->dims[2] || ow != y->dims[3])
        return cs_errorf(err, CS_EINTERNAL, "node '%s': cuDNN computes %dx%dx%dx%d, ONNX %lldx%lldx%lldx%lld",
                         n->name, on, oc, oh, ow, (long long)y->dims[0], (long long)y->dims[1],
                         (long long)y->dims[2], (long long)y->dims[3]);
    {
        int64_t k[CONV_KEY] = {p->cm->dt, xs.dims[0], xs.dims[1], xs.dims[2], xs.dims[3], ws.dims[0], ws.dims[2],
                               ws.dims[3], pl[0], pl[1], st[0], st[1], dil[0], dil[1], group, 0};
        memcpy(s->ckey, k, sizeof k);
    }
    int found = conv_find(p->cm, dnn, s, ALGO_FWD, n->name);
    if (found >= 0) {
        s->algo = (cudnnConvolutionFwdAlgo_t)found;
        size_t wsz = 0;
        DNN(cudnnGetConvolutionForwardWorkspaceSize(dnn, s->xd, s->wd, s->cd, s->yd, s->algo, &wsz),
            "workspace size");
        if (wsz > p->ws_size) p->ws_size = wsz;
        return CS_OK;
    }
    cudnnConvolutionFwdAlgoPerf_t perf[8];
    int got = 0;
    DNN(cudnnGetConvolutionForwardAlgorithm_v7(dnn, s->xd, s->wd, s->cd, s->yd, 8, &got, perf),
        "algorithm heuristics");
    int pick = -1;
    for (int i = 0; i < got && pick < 0; i++)
        if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= MAX_WS) pick = i;
    if (pick < 0 && p->cm->dt == CS_CUDA_F32) {
        /* no FMA-only kernel for this shape: let cuDNN choose (TF32 may
         * then enter this one convolution; said on CS_TRACE) */
        DNN(cudnnSetConvolutionMathType(s->cd, CUDNN_DEFAULT_MATH), "math type");
        DNN(cudnnGetConvolutionForwardAlgorithm_v7(dnn, s->xd, s->wd, s->cd, s->yd, 8, &got, perf),
            "algorithm heuristics");
        for (int i = 0; i < got && pick < 0; i++)
            if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= MAX_WS) pick = i;
        if (pick >= 0 && getenv("CS_TRACE"))
            fprintf(stderr, "cuda: node '%s': no FMA-only fp32 algorithm, cuDNN's default math\n", n->name);
    }
    if (pick < 0) return unsupported(n, "a convolution no cuDNN algorithm takes", err);
    s->algo = perf[pick].algo;
    size_t wsz = 0;
    DNN(cudnnGetConvolutionForwardWorkspaceSize(dnn, s->xd, s->wd, s->cd, s->yd, s->algo, &wsz), "workspace size");
    if (wsz > p->ws_size) p->ws_size = wsz;
    return CS_OK;
}

/* Gemm (transA = 0, constant B and C) and MatMul with a constant 2-D B. */
static cs_status plan_gemm(cplan *p, int ni, const cs_shape *y, cs_error *err) {
    const cs_node *n = node_of(p, ni);
    int ad0 = val(p, n->inputs[0]), bv = n->inputs[1];
    int bd = val(p, bv);
    bool gemm = n->op == CS_OP_GEMM;
    if (bd < 0 || !p->dt[bd].cdata || p->dt[bd].shape.ndim != 2)
        return unsupported(n, "a matrix product with a computed or non-2-D right operand", err);
    if (gemm && cs_attr_int(n, "transA", 0)) return unsupported(n, "Gemm with transA", err);
    const cs_shape as = p->dt[ad0].shape, bs = p->dt[bd].shape;
    int transB = gemm ? (int)cs_attr_int(n, "transB", 0) : 0;
    int64_t K = as.dims[as.ndim - 1], N = transB ? bs.dims[0] : bs.dims[1];
    if ((transB ? bs.dims[1] : bs.dims[0]) != K || (gemm && as.ndim != 2))
        return unsupported(n, "these matrix shapes", err);
    int64_t M = cs_shape_numel(&as) / K;
    int ad;
    TRY(as_layout(p, ad0, false, &ad, err));
    int yd;
    TRY(bind_out(p, n->outputs[0], y, false, &yd, err));
    kstep *s = new_step(p, K_GEMM, ni);
    if (!s) return cs_errorf(err, CS_ENOMEM, "out of memory");
    s->in[0] = ad;
    s->out = yd;
    s->M = M;
    s->N = N;
    s->K = K;
    s->transB = transB;
    s->alpha = gemm ? cs_attr_float(n, "alpha", 1.f) : 1.f;
    s->C = N;
    s->inner = 1;
    TRY(weight_get(p->cm, bv, W_MAT, NULL, 0, 0, &s->w, err));
    int cv = gemm && n->ninputs > 2 ? n->inputs[2] : -1;
    if (cv >= 0) {
        int cd = val(p, cv);
        float beta = cs_attr_float(n, "beta", 1.f);
        if (cd < 0 || !p->dt[cd].cdata || p->dt[cd].shape.dtype != CS_DT_FLOAT ||
            cs_shape_numel(&p->dt[cd].shape) != N)
            return unsupported(n, "a Gemm bias that is not a constant row of N", err);
        float *b = malloc((size_t)N * sizeof(float));
        if (!b) return cs_errorf(err, CS_ENOMEM, "out of memory");
        for (int64_t i = 0; i < N; i++) b[i] = beta * ((const float *)p->dt[cd].cdata)[i];
        const float *db;
        cs_status st = dvec32(p, b, N, &db, err);
        free(b);
        TRY(st);
        p->steps[p->nsteps - 1].bias = db;
    }
    return CS_OK;
}

/* Standalone BatchNormalization: a per-channel affine map, fp32 scale and
 * shift folded at plan time, activations fused. */
static cs_status plan_bn(cplan *p, int ni, const cs_shape *y, cs_error *err) {
    const cs_node *n = node_of(p, ni);
    if (n->ninputs != 5) return unsupported(n, "this BatchNormalization", err);
    const float *prm[4];
    int64_t C = y->ndim >= 2 ? y->dims[1] : 0;
    for (int i = 0; i < 4; i++) {
        int d = val(p, n->inputs[1 + i]);
        if (d < 0 || !p->dt[d].cdata || p->dt[d].shape.dtype != CS_DT_FLOAT ||
            cs_shape_numel(&p->dt[d].shape) != C)
            return unsupported(n, "BatchNormalization with computed statistics", err);
        prm[i] = p->dt[d].cdata;
    }
    float eps = cs_attr_float(n, "epsilon", 1e-5f);
    float *sc = malloc((size_t)C * 2 * sizeof(float));
    if (!sc) return cs_errorf(err, CS_ENOMEM, "out of memory");
    for (int64_t c = 0; c < C; c++) {
        double s = (double)prm[0][c] / sqrt((double)prm[3][c] + (double)eps);
        sc[c] = (float)s;
        sc[C + c] = (float)((double)prm[1][c] - (double)prm[2][c] * s);
    }
    const float *dsc = NULL, *dsh = NULL;
    cs_status st = dvec32(p, sc, C, &dsc, err);
    if (st == CS_OK) st = dvec32(p, sc + C, C, &dsh, err);
    free(sc);
    TRY(st);
    int xd0 = val(p, n->inputs[0]), xd;
    bool nhwc = is_nhwc(&p->dt[xd0]);
    TRY(as_layout(p, xd0, nhwc, &xd, err));
    cs_cuda_acts acts;
    int sum_v;
    int outv = plan_fusion(p, ni, y, &acts, &sum_v);
    int yd;
    TRY(bind_out(p, outv, y, nhwc, &yd, err));
    kstep *s = new_step(p, K_EPI, ni);
    if (!s) return cs_errorf(err, CS_ENOMEM, "out of memory");
    s->in[0] = xd;
    s->out = yd;
    s->acts = acts;
    s->scale = dsc;
    s->bias = dsh;
    s->C = C;
    s->inner = nhwc ? 1 : (C > 0 ? cs_shape_numel(y) / (y->dims[0] * C) : 1);
    return CS_OK;
}

static cs_status plan_unary(cplan *p, int ni, const cs_cuda_act *a, const cs_shape *y, cs_error *err) {
    const cs_node *n = node_of(p, ni);
    int xd = val(p, n->inputs[0]);
    if (p->dt[xd].shape.dtype != CS_DT_FLOAT) return unsupported(n, "a non-float input", err);
    int yd;
    TRY(bind_out(p, n->outputs[0], y, false, &yd, err));
    memcpy(p->dt[yd].strides, p->dt[xd].strides, sizeof p->dt[yd].strides); /* same layout */
    kstep *s = new_step(p, K_UNARY, ni);
    if (!s) return cs_errorf(err, CS_ENOMEM, "out of memory");
    s->in[0] = xd;
    s->out = yd;
    s->acts.n = 1;
    s->acts.a[0] = *a;
    return CS_OK;
}

/* strides of operand d broadcast to y's dims (numpy rules) */
static void bcast_strides(const dten *t, const cs_shape *y, int64_t *out) {
    int nd = y->ndim, na = t->shape.ndim;
    for (int i = 0; i < nd; i++) {
        int j = i - (nd - na);
        out[i] = (j < 0 || t->shape.dims[j] == 1) ? 0 : t->strides[j];
    }
}

static cs_status plan_binary(cplan *p, int ni, const cs_shape *y, cs_error *err) {
    const cs_node *n = node_of(p, ni);
    int ad = val(p, n->inputs[0]), bd = val(p, n->inputs[1]);
    if (y->dtype != CS_DT_FLOAT) return unsupported(n, "a non-float binary op", err);
    if (p->dt[ad].cdata) TRY(dconst_of(p, ad, err));
    if (p->dt[bd].cdata) TRY(dconst_of(p, bd, err));
    /* the output takes the layout of a computed operand of its own shape */
    bool nhwc = (!p->dt[ad].cdata && cs_shape_equal(&p->dt[ad].shape, y) && is_nhwc(&p->dt[ad])) ||
                (!p->dt[bd].cdata && cs_shape_equal(&p->dt[bd].shape, y) && is_nhwc(&p->dt[bd]));
    int yd;
    TRY(bind_out(p, n->outputs[0], y, nhwc, &yd, err));
    kstep *s = new_step(p, K_STRIDED, ni);
    if (!s) return cs_errorf(err, CS_ENOMEM, "out of memory");
    s->op = n->op == CS_OP_ADD ? CS_BIN_ADD : n->op == CS_OP_SUB ? CS_BIN_SUB : n->op == CS_OP_MUL ? CS_BIN_MUL
          : n->op == CS_OP_DIV ? CS_BIN_DIV : CS_BIN_POW;
    s->in[0] = ad;
    s->in[1] = bd;
    s->out = yd;
    int64_t sa[CS_MAX_DIMS], sb[CS_MAX_DIMS];
    bcast_strides(&p->dt[ad], y, sa);
    bcast_strides(&p->dt[bd], y, sb);
    if (cs_cuda_walk_make(&s->walk, y->ndim, y->dims, p->dt[yd].strides, sa, sb) != 0)
        return unsupported(n, "a broadcast over this many dims", err);
    return CS_OK;
}

static cs_status plan_pool(cplan *p, int ni, const cs_shape *y, cs_error *err) {
    const cs_node *n = node_of(p, ni);
    int xd = val(p, n->inputs[0]);
    const cs_shape xs = p->dt[xd].shape;
    if (xs.ndim != 4 || y->ndim != 4) return unsupported(n, "non-2-D pooling", err);
    if (n->noutputs > 1 && n->outputs[1] >= 0) return unsupported(n, "MaxPool indices", err);
    if (strcmp(cs_attr_string(n, "auto_pad", "NOTSET"), "NOTSET") != 0) return unsupported(n, "auto_pad", err);
    const int64_t *k, *sv, *pads, *d;
    int nk = cs_attr_ints(n, "kernel_shape", &k), ns = cs_attr_ints(n, "strides", &sv);
    int np = cs_attr_ints(n, "pads", &pads), nd = cs_attr_ints(n, "dilations", &d);
    if (nk != 2) return unsupported(n, "this kernel_shape", err);
    bool nhwc = is_nhwc(&p->dt[xd]);
    int yd;
    TRY(bind_out(p, n->outputs[0], y, nhwc, &yd, err));
    kstep *s = new_step(p, K_POOL, ni);
    if (!s) return cs_errorf(err, CS_ENOMEM, "out of memory");
    s->in[0] = xd;
    s->out = yd;
    cs_cuda_pool *q = &s->pool;
    q->N = xs.dims[0];
    q->C = xs.dims[1];
    q->H = xs.dims[2];
    q->W = xs.dims[3];
    q->OH = y->dims[2];
    q->OW = y->dims[3];
    memcpy(q->xs, p->dt[xd].strides, sizeof q->xs);
    memcpy(q->ys, p->dt[yd].strides, sizeof q->ys);
    q->kh = (int)k[0];
    q->kw = (int)k[1];
    q->sh = ns == 2 ? (int)sv[0] : 1;
    q->sw = ns == 2 ? (int)sv[1] : 1;
    q->ph = np == 4 ? (int)pads[0] : 0;
    q->pw = np == 4 ? (int)pads[1] : 0;
    q->peh = np == 4 ? (int)pads[2] : 0;
    q->pew = np == 4 ? (int)pads[3] : 0;
    q->dh = nd == 2 ? (int)d[0] : 1;
    q->dw = nd == 2 ? (int)d[1] : 1;
    q->is_max = n->op == CS_OP_MAXPOOL;
    q->include_pad = cs_attr_int(n, "count_include_pad", 0) != 0;
    return CS_OK;
}

/* GlobalAverage/MaxPool, ReduceMean over H and W of a 4-D tensor */
static cs_status plan_gpool(cplan *p, int ni, const cs_shape *y, cs_error *err) {
    const cs_node *n = node_of(p, ni);
    int xd = val(p, n->inputs[0]);
    const dten *x = &p->dt[xd];
    if (x->shape.ndim != 4) return unsupported(n, "a reduction of a non-4-D tensor", err);
    if (!is_nhwc(x) && !is_dense(x)) TRY(as_layout(p, xd, true, &xd, err));
    int yd;
    TRY(bind_out(p, n->outputs[0], y, false, &yd, err));
    kstep *s = new_step(p, K_GPOOL, ni);
    if (!s) return cs_errorf(err, CS_ENOMEM, "out of memory");
    x = &p->dt[xd];
    s->in[0] = xd;
    s->out = yd;
    s->gN = x->shape.dims[0];
    s->gC = x->shape.dims[1];
    s->gHW = x->shape.dims[2] * x->shape.dims[3];
    s->gxn = x->strides[0];
    s->gxc = x->strides[1];
    s->gxhw = is_nhwc(x) ? x->shape.dims[1] : 1;
    s->gyn = s->gC;
    s->gyc = 1;
    s->is_max = n->op == CS_OP_GLOBALMAXPOOL;
    return CS_OK;
}

static cs_status plan_concat(cplan *p, int ni, const cs_shape *y, cs_error *err) {
    const cs_node *n = node_of(p, ni);
    int64_t axis = cs_attr_int(n, "axis", 0);
    if (axis < 0) axis += y->ndim;
    bool nhwc = y->ndim == 4;
    for (int i = 0; i < n->ninputs && nhwc; i++) {
        int d = val(p, n->inputs[i]);
        nhwc = d >= 0 && !p->dt[d].cdata && is_nhwc(&p->dt[d]);
    }
    int ins[MAX_IO];
    for (int i = 0; i < n->ninputs; i++) {
        int d = val(p, n->inputs[i]);
        if (d < 0 || p->dt[d].shape.dtype != CS_DT_FLOAT) return unsupported(n, "a non-float Concat", err);
        if (p->dt[d].cdata) TRY(dconst_of(p, d, err));
        ins[i] = d;
    }
    int yd;
    TRY(bind_out(p, n->outputs[0], y, nhwc, &yd, err));
    int64_t off = 0;
    for (int i = 0; i < n->ninputs; i++) {
        kstep *s = new_step(p, K_STRIDED, ni);
        if (!s) return cs_errorf(err, CS_ENOMEM, "out of memory");
        const dten *x = &p->dt[ins[i]];
        s->op = CS_BIN_COPY;
        s->in[0] = ins[i];
        s->out = yd;
        s->off_o = off * p->dt[yd].strides[axis];
        if (cs_cuda_walk_make(&s->walk, x->shape.ndim, x->shape.dims, p->dt[yd].strides, x->strides, NULL))
            return unsupported(n, "a Concat of this many dims", err);
        off += x->shape.dims[axis];
    }
    return CS_OK;
}

static cs_status plan_view(cplan *p, int ni, const cs_shape *y, cs_error *err) {
    const cs_node *n = node_of(p, ni);
    int xd = val(p, n->inputs[0]);
    /* Identity, Dropout, Cast to float keep the shape: any layout will do */
    bool same = cs_shape_equal(&p->dt[xd].shape, y);
    if (!same || p->dt[xd].cdata) TRY(as_layout(p, xd, false, &xd, err));
    if (p->dt[xd].cdata) return unsupported(n, "a view of a constant", err);
    int yd;
    TRY(bind_out(p, n->outputs[0], y, false, &yd, err));
    p->dt[yd].alias = xd;
    p->dt[yd].et = p->dt[xd].et;
    if (same) memcpy(p->dt[yd].strides, p->dt[xd].strides, sizeof p->dt[yd].strides);
    return CS_OK;
}

static cs_status plan_transpose(cplan *p, int ni, const cs_shape *y, cs_error *err) {
    const cs_node *n = node_of(p, ni);
    int xd = val(p, n->inputs[0]);
    const dten *x = &p->dt[xd];
    int nd = x->shape.ndim;
    const int64_t *perm;
    int np = cs_attr_ints(n, "perm", &perm);
    int yd;
    TRY(bind_out(p, n->outputs[0], y, false, &yd, err));
    kstep *s = new_step(p, K_STRIDED, ni);
    if (!s) return cs_errorf(err, CS_ENOMEM, "out of memory");
    int64_t sa[CS_MAX_DIMS];
    x = &p->dt[xd];
    for (int d = 0; d < nd; d++) sa[d] = x->strides[np == nd ? perm[d] : nd - 1 - d];
    s->op = CS_BIN_COPY;
    s->in[0] = xd;
    s->out = yd;
    if (cs_cuda_walk_make(&s->walk, nd, y->dims, p->dt[yd].strides, sa, NULL))
        return unsupported(n, "a Transpose of this many dims", err);
    return CS_OK;
}

/* the first `count` int64 values of constant input i, or NULL */
static const int64_t *const_ints(const cplan *p, const cs_node *n, int i, int64_t *count) {
    if (i >= n->ninputs || n->inputs[i] < 0) return NULL;
    int d = val(p, n->inputs[i]);
    if (d < 0 || !p->dt[d].cdata || p->dt[d].shape.dtype != CS_DT_INT64) return NULL;
    *count = cs_shape_numel(&p->dt[d].shape);
    return p->dt[d].cdata;
}

static cs_status plan_slice(cplan *p, int ni, const cs_shape *y, cs_error *err) {
    const cs_node *n = node_of(p, ni);
    int xd = val(p, n->inputs[0]);
    const cs_shape xs = p->dt[xd].shape;
    int nd = xs.ndim;
    int64_t ns = 0, ne = 0, na = 0, nst = 0;
    const int64_t *starts, *ends, *axes, *steps;
    if (p->m->g.opset < 10) {
        ns = cs_attr_ints(n, "starts", &starts);
        ne = cs_attr_ints(n, "ends", &ends);
        na = cs_attr_ints(n, "axes", &axes);
        steps = NULL;
    } else {
        starts = const_ints(p, n, 1, &ns);
        ends = const_ints(p, n, 2, &ne);
        axes = const_ints(p, n, 3, &na);
        steps = const_ints(p, n, 4, &nst);
        if (!axes) na = 0;
        if (!steps) nst = 0;
    }
    if (!starts || !ends || ns != ne || (na && na != ns) || (nst && nst != ns))
        return unsupported(n, "a Slice with computed bounds", err);
    int64_t sa[CS_MAX_DIMS], off = 0;
    memcpy(sa, p->dt[xd].strides, sizeof sa);
    for (int64_t i = 0; i < ns; i++) {
        int64_t ax = na ? axes[i] : i;
        if (ax < 0) ax += nd;
        if (ax < 0 || ax >= nd) return unsupported(n, "a Slice axis", err);
        int64_t dim = xs.dims[ax], step = nst ? steps[i] : 1, s0 = starts[i];
        if (step == 0) return unsupported(n, "a zero Slice step", err);
        if (s0 < 0) s0 += dim;
        if (step > 0) s0 = s0 < 0 ? 0 : s0 > dim ? dim : s0;
        else s0 = s0 < 0 ? 0 : s0 > dim - 1 ? dim - 1 : s0;
        if (y->dims[ax] > 0) off += s0 * p->dt[xd].strides[ax];
        sa[ax] = p->dt[xd].strides[ax] * step;
    }
    int yd;
    TRY(bind_out(p, n->outputs[0], y, false, &yd, err));
    kstep *s = new_step(p, K_STRIDED, ni);
    if (!s) return cs_errorf(err, CS_ENOMEM, "out of memory");
    s->op = CS_BIN_COPY;
    s->in[0] = xd;
    s->out = yd;
    s->off_a = off;
    if (cs_cuda_walk_make(&s->walk, nd, y->dims, p->dt[yd].strides, sa, NULL))
        return unsupported(n, "a Slice of this many dims", err);
    return CS_OK;
}

static cs_status plan_split(cplan *p, int ni, const cs_shape *outs, cs_error *err) {
    const cs_node *n = node_of(p, ni);
    int xd = val(p, n->inputs[0]);
    int nd = p->dt[xd].shape.ndim;
    int64_t axis = cs_attr_int(n, "axis", 0);
    if (axis < 0) axis += nd;
    int64_t off = 0;
    for (int o = 0; o < n->noutputs; o++) {
        const cs_shape *y = &outs[o];
        int yd;
        TRY(bind_out(p, n->outputs[o], y, false, &yd, err));
        kstep *s = new_step(p, K_STRIDED, ni);
        if (!s) return cs_errorf(err, CS_ENOMEM, "out of memory");
        s->op = CS_BIN_COPY;
        s->in[0] = xd;
        s->out = yd;
        s->off_a = off * p->dt[xd].strides[axis];
        if (cs_cuda_walk_make(&s->walk, nd, y->dims, p->dt[yd].strides, p->dt[xd].strides, NULL))
            return unsupported(n, "a Split of this many dims", err);
        off += y->dims[axis];
    }
    return CS_OK;
}

static cs_status plan_pad(cplan *p, int ni, const cs_shape *y, cs_error *err) {
    const cs_node *n = node_of(p, ni);
    int xd = val(p, n->inputs[0]);
    int nd = p->dt[xd].shape.ndim;
    if (strcmp(cs_attr_string(n, "mode", "constant"), "constant") != 0) return unsupported(n, "a non-constant Pad mode", err);
    const int64_t *pads;
    int64_t np = cs_attr_ints(n, "pads", &pads);
    if (np == 0) pads = const_ints(p, n, 1, &np);
    if (!pads || np != 2 * nd) return unsupported(n, "a Pad with computed pads", err);
    float value = 0.f;
    if (n->ninputs > 2 && n->inputs[2] >= 0 && !const_scalar(p, n->inputs[2], &value))
        return unsupported(n, "a Pad with a computed value", err);
    if (p->m->g.opset < 11) value = cs_attr_float(n, "value", 0.f);
    for (int i = 0; i < 2 * nd; i++)
        if (pads[i] < 0) return unsupported(n, "negative pads", err);
    bool nhwc = is_nhwc(&p->dt[xd]);
    int yd;
    TRY(bind_out(p, n->outputs[0], y, nhwc, &yd, err));
    kstep *f = new_step(p, K_FILL, ni);
    if (!f) return cs_errorf(err, CS_ENOMEM, "out of memory");
    f->out = yd;
    f->fill = value;
    kstep *s = new_step(p, K_STRIDED, ni);
    if (!s) return cs_errorf(err, CS_ENOMEM, "out of memory");
    s->op = CS_BIN_COPY;
    s->in[0] = xd;
    s->out = yd;
    for (int i = 0; i < nd; i++) s->off_o += pads[i] * p->dt[yd].strides[i];
    if (cs_cuda_walk_make(&s->walk, nd, p->dt[xd].shape.dims, p->dt[yd].strides, p->dt[xd].strides, NULL))
        return unsupported(n, "a Pad of this many dims", err);
    return CS_OK;
}

static cs_status plan_softmax(cplan *p, int ni, const cs_shape *y, cs_error *err) {
    const cs_node *n = node_of(p, ni);
    int xd;
    TRY(as_layout(p, val(p, n->inputs[0]), false, &xd, err));
    const cs_shape xs = p->dt[xd].shape;
    int64_t axis = cs_attr_int(n, "axis", p->m->g.opset >= 13 ? -1 : 1);
    if (axis < 0) axis += xs.ndim;
    int64_t outer = 1, len = 1, inner = 1;
    for (int i = 0; i < axis; i++) outer *= xs.dims[i];
    if (p->m->g.opset < 13) {
        for (int i = (int)axis; i < xs.ndim; i++) len *= xs.dims[i];
    } else {
        len = xs.dims[axis];
        for (int i = (int)axis + 1; i < xs.ndim; i++) inner *= xs.dims[i];
    }
    int yd;
    TRY(bind_out(p, n->outputs[0], y, false, &yd, err));
    kstep *s = new_step(p, K_SOFTMAX, ni);
    if (!s) return cs_errorf(err, CS_ENOMEM, "out of memory");
    s->in[0] = xd;
    s->out = yd;
    s->outer = outer;
    s->len = len;
    s->inner = inner;
    return CS_OK;
}

static cs_status plan_layernorm(cplan *p, int ni, const cs_shape *y, cs_error *err) {
    const cs_node *n = node_of(p, ni);
    if (n->noutputs > 1 && ((n->noutputs > 1 && n->outputs[1] >= 0) || (n->noutputs > 2 && n->outputs[2] >= 0)))
        return unsupported(n, "LayerNormalization's mean/inv-std outputs", err);
    int xd;
    TRY(as_layout(p, val(p, n->inputs[0]), false, &xd, err));
    const cs_shape xs = p->dt[xd].shape;
    int64_t axis = cs_attr_int(n, "axis", -1);
    if (axis < 0) axis += xs.ndim;
    int64_t rows = 1, len = 1;
    for (int i = 0; i < axis; i++) rows *= xs.dims[i];
    for (int i = (int)axis; i < xs.ndim; i++) len *= xs.dims[i];
    const float *g = NULL, *b = NULL;
    for (int i = 1; i < 3 && i < n->ninputs; i++) {
        if (n->inputs[i] < 0) continue;
        int d = val(p, n->inputs[i]);
        if (d < 0 || !p->dt[d].cdata || p->dt[d].shape.dtype != CS_DT_FLOAT || cs_shape_numel(&p->dt[d].shape) != len)
            return unsupported(n, "a computed or broadcast LayerNormalization scale", err);
        TRY(dvec32(p, p->dt[d].cdata, len, i == 1 ? &g : &b, err));
    }
    int yd;
    TRY(bind_out(p, n->outputs[0], y, false, &yd, err));
    kstep *s = new_step(p, K_LN, ni);
    if (!s) return cs_errorf(err, CS_ENOMEM, "out of memory");
    s->in[0] = xd;
    s->out = yd;
    s->outer = rows;
    s->len = len;
    s->gamma = g;
    s->beta = b;
    s->eps = cs_attr_float(n, "epsilon", 1e-5f);
    return CS_OK;
}

static cs_status fold_node(cplan *p, int ni, const cs_shape *outs, cs_error *err) {
    const cs_node *n = node_of(p, ni);
    const cs_shape *in[MAX_IO];
    const void *ind[MAX_IO];
    void *outd[MAX_IO];
    for (int i = 0; i < n->ninputs; i++) {
        int d = val(p, n->inputs[i]);
        in[i] = d >= 0 ? &p->dt[d].shape : NULL;
        ind[i] = d >= 0 ? p->dt[d].cdata : NULL;
    }
    static const float no_data;
    if (n->op == CS_OP_SHAPE && !ind[0]) ind[0] = &no_data; /* Shape reads only the shape */
    for (int o = 0; o < n->noutputs; o++) {
        int64_t ne = cs_shape_numel(&outs[o]);
        size_t es = cs_dtype_size(outs[o].dtype);
        if (ne < 0 || !es) return cs_errorf(err, CS_EINTERNAL, "node '%s': folded output has no size", n->name);
        outd[o] = cs_arena_alloc(&p->consts, (size_t)ne * es + 1);
        if (!outd[o]) return cs_errorf(err, CS_ENOMEM, "out of memory folding constants");
    }
    TRY(cs_op_ref_run(&p->m->g, n, in, ind, outs, outd, err));
    for (int o = 0; o < n->noutputs; o++) {
        if (n->outputs[o] < 0) continue;
        int d = new_dt(p, &outs[o], false, CS_CUDA_F32);
        if (d < 0) return cs_errorf(err, CS_ENOMEM, "out of memory");
        p->dt[d].cdata = outd[o];
        p->dt[d].value = n->outputs[o];
        p->val_dt[n->outputs[o]] = d;
    }
    p->skip[ni] = true;
    return CS_OK;
}

static bool is_view_op(cs_op op) {
    return op == CS_OP_RESHAPE || op == CS_OP_FLATTEN || op == CS_OP_SQUEEZE || op == CS_OP_UNSQUEEZE ||
           op == CS_OP_IDENTITY || op == CS_OP_DROPOUT;
}

static cs_status plan_node(cplan *p, cudnnHandle_t dnn, int ni, cs_error *err) {
    const cs_node *n = node_of(p, ni);
    const cs_shape *in[MAX_IO];
    const void *ind[MAX_IO];
    cs_shape outs[MAX_IO];
    if (n->ninputs > MAX_IO || n->noutputs > MAX_IO)
        return cs_errorf(err, CS_EUNSUPPORTED, "node '%s' has too many inputs/outputs", n->name);
    bool all_const = true;
    for (int i = 0; i < n->ninputs; i++) {
        int d = val(p, n->inputs[i]);
        if (n->inputs[i] >= 0 && d < 0)
            return cs_errorf(err, CS_EINTERNAL, "node '%s': input %d not planned", n->name, i);
        in[i] = d >= 0 ? &p->dt[d].shape : NULL;
        ind[i] = d >= 0 ? p->dt[d].cdata : NULL;
        if (d >= 0 && !p->dt[d].cdata) all_const = false;
    }
    memset(outs, 0, sizeof(cs_shape) * (size_t)n->noutputs);
    TRY(cs_op_infer(&p->m->g, n, in, ind, outs, err));
    if (n->op == CS_OP_SHAPE && cs_shape_numel(in[0]) >= 0) all_const = true;
    if (all_const) return fold_node(p, ni, outs, err);
    const cs_shape *y = &outs[0];
    cs_cuda_act a;
    switch (n->op) {
    case CS_OP_CONV: return plan_conv(p, dnn, ni, y, err);
    case CS_OP_GEMM: case CS_OP_MATMUL:
        if (y->dtype != CS_DT_FLOAT) break;
        return plan_gemm(p, ni, y, err);
    case CS_OP_BATCHNORM: return plan_bn(p, ni, y, err);
    case CS_OP_MAXPOOL: case CS_OP_AVGPOOL: return plan_pool(p, ni, y, err);
    case CS_OP_GLOBALAVGPOOL: case CS_OP_GLOBALMAXPOOL: return plan_gpool(p, ni, y, err);
    case CS_OP_REDUCEMEAN: {
        const int64_t *ax;
        int na = cs_attr_ints(n, "axes", &ax);
        if (in[0]->ndim == 4 && na == 2 && ((ax[0] == 2 && ax[1] == 3) || (ax[0] == -2 && ax[1] == -1)))
            return plan_gpool(p, ni, y, err);
        return unsupported(n, "ReduceMean over axes other than H, W", err);
    }
    case CS_OP_ADD: case CS_OP_SUB: case CS_OP_MUL: case CS_OP_DIV: case CS_OP_POW:
        return plan_binary(p, ni, y, err);
    case CS_OP_CONCAT: return plan_concat(p, ni, y, err);
    case CS_OP_TRANSPOSE: return plan_transpose(p, ni, y, err);
    case CS_OP_SLICE: return plan_slice(p, ni, y, err);
    case CS_OP_SPLIT: return plan_split(p, ni, outs, err);
    case CS_OP_PAD: return plan_pad(p, ni, y, err);
    case CS_OP_SOFTMAX: return plan_softmax(p, ni, y, err);
    case CS_OP_LAYERNORM: return plan_layernorm(p, ni, y, err);
    case CS_OP_CAST:
        if (y->dtype == CS_DT_FLOAT && in[0]->dtype == CS_DT_FLOAT) return plan_view(p, ni, y, err);
        break;
    default:
        if (is_view_op(n->op) && (n->noutputs == 1 || n->outputs[1] < 0)) return plan_view(p, ni, y, err);
        if (fn_of(p, n, &a)) return plan_unary(p, ni, &a, y, err);
        break;
    }
    return unsupported(n, "this op on computed tensors", err);
}

/* ---- memory ----------------------------------------------------------------------------- */

static void touch(cplan *p, int d, int si) {
    if (d < 0) return;
    for (;;) {
        dten *t = &p->dt[d];
        if (t->first < 0 || si < t->first) t->first = si;
        if (si > t->last) t->last = si;
        if (t->alias < 0) break;
        d = t->alias;
    }
}

typedef struct interval {
    int d;
    size_t size;
    int first, last;
} interval;

static int by_size_desc(const void *a, const void *b) {
    const interval *x = a, *y = b;
    if (x->size != y->size) return x->size < y->size ? 1 : -1;
    return x->first - y->first;
}

/* Offsets by liveness, as plan.c: largest first, first fit among the
 * intervals that overlap in time. */
static cs_status assign_offsets(cplan *p, cs_error *err) {
    int end = p->nsteps + 1;
    for (int si = 0; si < p->nsteps; si++) {
        kstep *s = &p->steps[si];
        touch(p, s->in[0], si);
        touch(p, s->in[1], si);
        touch(p, s->sum, si);
        touch(p, s->out, si);
    }
    touch(p, p->in32, 0);
    touch(p, p->out32, end);
    /* the layer values arrive with the input, before step 0 */
    if (p->ovr32 >= 0) {
        touch(p, p->ovr32, 0);
        touch(p, p->ovr32, end);
    }
    /* kept values, and their conversion copies (a backward may read those) */
    for (int d = 0; d < p->ndt; d++) {
        int v = p->dt[d].value;
        if (v >= 0 && !p->dt[d].cdata && (p->keep[v] || p->m->g.values[v].is_graph_output)) touch(p, d, end);
    }
    interval *iv = malloc((size_t)(p->ndt + 1) * sizeof *iv);
    if (!iv) return cs_errorf(err, CS_ENOMEM, "out of memory");
    int n = 0;
    for (int d = 0; d < p->ndt; d++) {
        dten *t = &p->dt[d];
        t->offset = -1;
        if (t->cdata || t->alias >= 0 || t->first < 0) continue;
        iv[n++] = (interval){d, align_up(t->bytes), t->first, t->last};
    }
    qsort(iv, (size_t)n, sizeof *iv, by_size_desc);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        size_t off = 0;
        for (bool moved = true; moved;) {
            moved = false;
            for (int j = 0; j < i; j++) {
                if (iv[j].last < iv[i].first || iv[i].last < iv[j].first) continue;
                size_t o = (size_t)p->dt[iv[j].d].offset;
                if (off < o + iv[j].size && o < off + iv[i].size) {
                    off = o + iv[j].size;
                    moved = true;
                }
            }
        }
        p->dt[iv[i].d].offset = (int64_t)off;
        if (off + iv[i].size > total) total = off + iv[i].size;
    }
    free(iv);
    p->arena_size = total + ALIGN;
    return CS_OK;
}

static void *dptr(const cplan *p, int d) {
    const dten *t = &p->dt[d];
    if (t->cdata) return t->dconst;
    int r = root_of(p, d);
    return (char *)p->arena + p->dt[r].offset;
}

static void *gptr(const cplan *p, int d) {
    int r = root_of(p, d);
    return p->dt[r].goffset >= 0 ? (char *)p->garena + p->dt[r].goffset : NULL;
}

static void cplan_free(cplan *p) {
    if (!p) return;
    if (p->g_fwd) cudaGraphExecDestroy(p->g_fwd);
    if (p->g_bwd) cudaGraphExecDestroy(p->g_bwd);
    for (int i = 0; i < p->nsteps; i++) {
        kstep *s = &p->steps[i];
        if (s->xd) cudnnDestroyTensorDescriptor(s->xd);
        if (s->yd) cudnnDestroyTensorDescriptor(s->yd);
        if (s->wd) cudnnDestroyFilterDescriptor(s->wd);
        if (s->cd) cudnnDestroyConvolutionDescriptor(s->cd);
        if (s->bd) cudnnDestroyTensorDescriptor(s->bd);
        if (s->ad) cudnnDestroyActivationDescriptor(s->ad);
    }
    for (int i = 0; p->prof_ev && i <= p->nsteps; i++) {
        if (p->prof_ev[i]) cudaEventDestroy(p->prof_ev[i]);
        if (p->prof_mid[i]) cudaEventDestroy(p->prof_mid[i]);
    }
    free(p->prof_ev);
    free(p->prof_mid);
    for (int i = 0; i < p->ndconsts; i++) cudaFree(p->dconsts[i]);
    cudaFree(p->arena);
    cudaFree(p->ws);
    cudaFree(p->garena);
    cudaFree(p->dl_dev);
    cudaFree(p->cam_w);
    cudaFreeHost(p->h_in);
    cudaFreeHost(p->h_out);
    cudaFreeHost(p->h_seed);
    cudaFreeHost(p->h_ovr);
    for (int i = 0; i < 16; i++) {
        cudaFreeHost(p->dl_act[i]);
        cudaFreeHost(p->dl_grad[i]);
        cudaFreeHost(p->dl_map[i]);
    }
    free(p->dconsts);
    free(p->dt);
    free(p->val_dt);
    free(p->steps);
    free(p->skip);
    free(p->unfolded);
    free(p->cons_start);
    free(p->cons);
    free(p->keep);
    free(p->keep_list);
    free(p->bsteps);
    free(p->in_d);
    cs_arena_free(&p->consts);
    free(p);
}

/* ---- plan build -------------------------------------------------------------------------- */

static cs_status cplan_build(cuda_model *cm, cudnnHandle_t dnn, int batch, const int *keep, int nkeep,
                             int override_v, cplan **out, cs_error *err) {
    const cs_model *m = cm->m;
    const cs_graph *g = &m->g;
    *out = NULL;
    cplan *p = calloc(1, sizeof *p);
    if (!p) return cs_errorf(err, CS_ENOMEM, "out of memory");
    cs_status st = CS_OK;
    p->cm = cm;
    p->m = m;
    p->batch = batch;
    p->override_v = override_v;
    p->in32 = p->out32 = p->ovr32 = p->ovr_dt = -1;
    p->val_dt = malloc((size_t)g->nvalues * sizeof(int));
    p->keep = calloc((size_t)g->nvalues + 1, sizeof(bool));
    p->skip = calloc((size_t)g->nnodes + 1, sizeof(bool));
    p->unfolded = calloc((size_t)g->nnodes + 1, sizeof(cs_node *));
    p->cons_start = calloc((size_t)g->nvalues + 2, sizeof(int));
    p->keep_list = malloc((size_t)(nkeep + 1) * sizeof(int));
    if (!p->val_dt || !p->keep || !p->skip || !p->unfolded || !p->cons_start || !p->keep_list) {
        st = cs_errorf(err, CS_ENOMEM, "out of memory");
        goto fail;
    }
    if (nkeep) memcpy(p->keep_list, keep, (size_t)nkeep * sizeof(int));
    p->nkeep = nkeep;
    for (int v = 0; v < g->nvalues; v++) p->val_dt[v] = -1;
    for (int i = 0; i < nkeep; i++)
        if (keep[i] >= 0 && keep[i] < g->nvalues) p->keep[keep[i]] = true;
    /* Convs with a folded BN: unfolded where the pre-BN tensor is wanted */
    for (int ni = 0; ni < g->nnodes; ni++) {
        const cs_node *c = &g->nodes[ni];
        if (c->dead || c->fold_bn < 0) continue;
        if (!p->keep[c->pre_bn_out]) {
            p->skip[c->fold_bn] = true;
            continue;
        }
        cs_node *u = cs_graph_unfold_bn(c, &p->consts);
        if (!u) {
            st = cs_errorf(err, CS_ENOMEM, "out of memory");
            goto fail;
        }
        p->unfolded[ni] = u;
    }
    /* AblationCAM, as plan.c: what only feeds the layer does not run, and
     * the layer becomes a second input (ovr32, converted into ovr_dt before
     * the first node) when its producer is among what does not run */
    bool ovr_input = false;
    cs_shape ovr_shape = {.dtype = CS_DT_FLOAT, .ndim = 4, .dims = {batch}};
    for (int i = 0; override_v >= 0 && cs_engine_prune_override() && i < m->nlayers; i++)
        if (m->layers[i] == override_v) {
            for (int k = 1; k < 4; k++) ovr_shape.dims[k] = m->layer_dims[i][k];
            const cs_node **run = malloc((size_t)g->nnodes * sizeof *run);
            bool in_read = true;
            st = run ? CS_OK : cs_errorf(err, CS_ENOMEM, "out of memory");
            for (int ni = 0; st == CS_OK && ni < g->nnodes; ni++)
                run[ni] = g->nodes[ni].dead || p->skip[ni] ? NULL : p->unfolded[ni] ? p->unfolded[ni] : &g->nodes[ni];
            if (st == CS_OK) st = cs_graph_prune_for_override(g, override_v, p->keep, run, &ovr_input, &in_read, err);
            for (int ni = 0; st == CS_OK && ni < g->nnodes; ni++) p->skip[ni] = !run[ni];
            p->in_unused = !in_read;
            free(run);
            if (st != CS_OK) goto fail;
            break;
        }
    /* consumer lists over live nodes */
    if ((st = cs_graph_consumers(g, p->cons_start, &p->cons, err)) != CS_OK) goto fail;
    for (int v = 0; v < g->nvalues; v++) {
        const cs_value *cv = &g->values[v];
        if (!cv->data) continue;
        int d = new_dt(p, &cv->shape, false, CS_CUDA_F32);
        if (d < 0) {
            st = cs_errorf(err, CS_ENOMEM, "out of memory");
            goto fail;
        }
        p->dt[d].cdata = cv->data;
        p->dt[d].value = v;
        p->val_dt[v] = d;
    }
    {
        /* the input arrives fp32 NCHW (in32) and is converted once */
        const cs_value *iv = &g->values[g->inputs[0]];
        cs_shape s = iv->shape;
        if (s.ndim != 4 || (s.dims[0] >= 0 && s.dims[0] != batch)) {
            st = cs_errorf(err, CS_EINVAL, "model input '%s' does not take a batch of %d", iv->name, batch);
            goto fail;
        }
        s.dims[0] = batch;
        p->in32 = new_dt(p, &s, false, CS_CUDA_F32);
        if (p->in32 < 0 || bind_out(p, g->inputs[0], &s, true, &p->in_dt, err) != CS_OK) {
            st = cs_errorf(err, CS_ENOMEM, "out of memory");
            goto fail;
        }
        p->dt[p->in32].value = -1;
        if (!p->in_unused) st = copy_step(p, -1, p->in32, p->in_dt, err);
        if (st != CS_OK) goto fail;
    }
    if (ovr_input) {
        p->ovr32 = new_dt(p, &ovr_shape, false, CS_CUDA_F32);
        if (p->ovr32 < 0 || bind_out(p, override_v, &ovr_shape, true, &p->ovr_dt, err) != CS_OK) {
            st = cs_errorf(err, CS_ENOMEM, "out of memory");
            goto fail;
        }
        p->dt[p->ovr32].value = -1;
        st = copy_step(p, -1, p->ovr32, p->ovr_dt, err);
        if (st != CS_OK) goto fail;
    }
    for (int ni = 0; ni < g->nnodes; ni++) {
        if (g->nodes[ni].dead || p->skip[ni]) continue;
        st = plan_node(p, dnn, ni, err);
        if (st != CS_OK) goto fail;
        if (override_v >= 0 && p->ovr_dt < 0 && p->val_dt[override_v] >= 0) {
            /* AblationCAM: the caller's values replace the layer before any
             * consumer reads it */
            int d = p->val_dt[override_v];
            p->ovr32 = new_dt(p, &p->dt[d].shape, false, CS_CUDA_F32);
            if (p->ovr32 < 0) {
                st = cs_errorf(err, CS_ENOMEM, "out of memory");
                goto fail;
            }
            p->ovr_dt = d;
            st = copy_step(p, -1, p->ovr32, d, err);
            if (st != CS_OK) goto fail;
        }
    }
    if (override_v >= 0 && p->ovr_dt < 0) {
        st = cs_errorf(err, CS_EINVAL, "tensor '%s' is not computed by the network", g->values[override_v].name);
        goto fail;
    }
    {
        int od = p->val_dt[g->outputs[0]];
        if (od < 0 || p->dt[od].cdata) {
            st = cs_errorf(err, CS_EUNSUPPORTED, "the graph output is not computed on the GPU");
            goto fail;
        }
        p->out_dt = od;
        p->out32 = new_dt(p, &p->dt[od].shape, false, CS_CUDA_F32);
        if (p->out32 < 0) {
            st = cs_errorf(err, CS_ENOMEM, "out of memory");
            goto fail;
        }
        st = copy_step(p, -1, od, p->out32, err);
        if (st != CS_OK) goto fail;
    }
    st = assign_offsets(p, err);
    if (st != CS_OK) goto fail;
    {
        size_t in_b = p->dt[p->in32].bytes, out_b = p->dt[p->out32].bytes;
        cudaError_t e = cudaMalloc(&p->arena, p->arena_size);
        if (e == cudaSuccess && p->ws_size) e = cudaMalloc(&p->ws, p->ws_size);
        if (e == cudaSuccess) e = cudaHostAlloc((void **)&p->h_in, in_b, cudaHostAllocDefault);
        if (e == cudaSuccess) e = cudaHostAlloc((void **)&p->h_out, out_b, cudaHostAllocDefault);
        if (e == cudaSuccess) e = cudaHostAlloc((void **)&p->h_seed, out_b, cudaHostAllocDefault);
        if (e == cudaSuccess && p->ovr32 >= 0)
            e = cudaHostAlloc((void **)&p->h_ovr, p->dt[p->ovr32].bytes, cudaHostAllocDefault);
        if (e != cudaSuccess) {
            st = cu_fail(e, "plan memory", err);
            goto fail;
        }
    }
    st = conv_fuse_trial(p, dnn, err);
    if (st != CS_OK) goto fail;
    if (getenv("CS_TRACE"))
        fprintf(stderr, "cuda plan: batch %d, %d steps, arena %zu KB, workspace %zu KB\n", batch, p->nsteps,
                p->arena_size >> 10, p->ws_size >> 10);
    *out = p;
    return CS_OK;
fail:
    cplan_free(p);
    return st;
}

/* ---- execution -------------------------------------------------------------------------- */

static const float one = 1.f, zero = 0.f;

static cudaDataType_t blas_type(cs_cuda_dt dt) {
    return dt == CS_CUDA_F16 ? CUDA_R_16F : dt == CS_CUDA_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

/* y = act(conv(x) + z + bias); without a residual z is y itself, scaled by
 * 0 (cuDNN reads nothing then) */
static cudnnStatus_t conv_fused(cudnnHandle_t dnn, const cplan *p, const kstep *s, void *ws, size_t ws_size) {
    void *y = dptr(p, s->out);
    const void *z = s->sum >= 0 ? dptr(p, s->sum) : y;
    return cudnnConvolutionBiasActivationForward(dnn, &one, s->xd, dptr(p, s->in[0]), s->wd, s->w, s->cd, s->algo, ws,
                                                 ws_size, s->sum >= 0 ? &one : &zero, s->yd, z, s->bd, s->bias_fused,
                                                 s->ad, s->yd, y);
}

static cs_status run_step(cuda_session *ss, cplan *p, const kstep *s, cs_error *err) {
    cs_cuda_stream stream = (cs_cuda_stream)ss->stream;
    cs_cuda_dt dt = p->cm->dt;
    void *y = dptr(p, s->out);
    const void *x = s->in[0] >= 0 ? dptr(p, s->in[0]) : NULL;
    switch (s->kind) {
    case K_CONV:
        if (s->fused) {
            DNN(conv_fused(ss->dnn, p, s, p->ws, p->ws_size), "fused convolution");
            if (p->prof_ev) CU(cudaEventRecord(p->prof_mid[p->prof_cur], ss->stream), "profile event");
            return CS_OK;
        }
        DNN(cudnnConvolutionForward(ss->dnn, &one, s->xd, x, s->wd, s->w, s->cd, s->algo, p->ws, p->ws_size,
                                    &zero, s->yd, y),
            "convolution forward");
        if (p->prof_ev) CU(cudaEventRecord(p->prof_mid[p->prof_cur], ss->stream), "profile event");
        if (s->bias || s->sum >= 0 || s->acts.n)
            KL(cs_cuda_k_epilogue(stream, dt, y, y, cs_shape_numel(&p->dt[s->out].shape), s->C, s->inner, NULL,
                                  s->bias, s->sum >= 0 ? dptr(p, s->sum) : NULL, s->acts),
               "convolution epilogue");
        return CS_OK;
    case K_GEMM: {
        cudaDataType_t t = blas_type(dt);
        /* row-major Y = A·op(B) is column-major Yᵀ = op(B)ᵀ·Aᵀ */
        BLAS(ss->blasf->gemm_ex(ss->blas, s->transB ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, (int)s->N, (int)s->M,
                          (int)s->K, &s->alpha, s->w, t, s->transB ? (int)s->K : (int)s->N, x, t, (int)s->K,
                          &zero, y, t, (int)s->N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
             "GEMM");
        if (s->bias || s->acts.n)
            KL(cs_cuda_k_epilogue(stream, dt, y, y, s->M * s->N, s->C, 1, NULL, s->bias, NULL, s->acts),
               "GEMM epilogue");
        return CS_OK;
    }
    case K_EPI:
        KL(cs_cuda_k_epilogue(stream, dt, x, y, cs_shape_numel(&p->dt[s->out].shape), s->C, s->inner, s->scale,
                              s->bias, NULL, s->acts),
           "BatchNormalization");
        return CS_OK;
    case K_UNARY:
        KL(cs_cuda_k_unary(stream, dt, x, y, cs_shape_numel(&p->dt[s->out].shape), s->acts.a[0]), "element-wise op");
        return CS_OK;
    case K_STRIDED: {
        const dten *o = &p->dt[s->out], *a = &p->dt[s->in[0]];
        size_t eo = cs_cuda_dt_size(o->et), ea = cs_cuda_dt_size(a->et);
        const void *b = s->in[1] >= 0 ? (const char *)dptr(p, s->in[1]) + s->off_b * (int64_t)ea : NULL;
        KL(cs_cuda_k_strided(stream, s->op, 0, o->et, (char *)y + s->off_o * (int64_t)eo, a->et,
                             (const char *)x + s->off_a * (int64_t)ea, b, &s->walk),
           "strided copy");
        return CS_OK;
    }
    case K_FILL:
        KL(cs_cuda_k_fill(stream, dt, y, cs_shape_numel(&p->dt[s->out].shape), s->fill), "fill");
        return CS_OK;
    case K_POOL: KL(cs_cuda_k_pool(stream, dt, &s->pool, x, y), "pooling"); return CS_OK;
    case K_GPOOL:
        KL(cs_cuda_k_gpool(stream, dt, x, s->gN, s->gC, s->gHW, s->gxn, s->gxc, s->gxhw, dt, y, s->gyn, s->gyc,
                           s->is_max),
           "global pooling");
        return CS_OK;
    case K_SOFTMAX: KL(cs_cuda_k_softmax(stream, dt, x, y, s->outer, s->len, s->inner), "softmax"); return CS_OK;
    case K_LN:
        KL(cs_cuda_k_layernorm(stream, dt, x, y, s->outer, s->len, s->gamma, s->beta, s->eps), "layer norm");
        return CS_OK;
    }
    return cs_errorf(err, CS_EINTERNAL, "unknown CUDA step");
}

/* The forward's steps and the logits' copy to the host; forward() moves
 * the input first, outside the graph, so that the events around the graph
 * time the device's work alone (cs_session_device_ms). */
static cs_status enqueue_forward(cuda_session *ss, cplan *p, cs_error *err) {
    for (int i = 0; i < p->nsteps; i++) {
        if (p->prof_ev) {
            p->prof_cur = i;
            CU(cudaEventRecord(p->prof_ev[i], ss->stream), "profile event");
        }
        cs_status st = run_step(ss, p, &p->steps[i], err);
        if (st != CS_OK) {
            int ni = p->steps[i].node;
            return ni >= 0 ? cs_error_prefix(err, "node '%s'", p->m->g.nodes[ni].name) : st;
        }
    }
    if (p->prof_ev) CU(cudaEventRecord(p->prof_ev[p->nsteps], ss->stream), "profile event");
    CU(cudaMemcpyAsync(p->h_out, dptr(p, p->out32), p->dt[p->out32].bytes, cudaMemcpyDeviceToHost, ss->stream),
       "logits copy");
    return CS_OK;
}

typedef cs_status (*enqueue_fn)(cuda_session *, cplan *, cs_error *);

/* Runs fn on the session's stream and, with wait, waits for it (else
 * ss->pending says someone must: settle).  The first run of a
 * sequence is eager: it loads the kernels' modules (CUDA's lazy loading)
 * and warms cuDNN/cuBLAS outside any capture.  The second is captured into
 * *exec and every run after replays it (unless graphs are off). */
static cs_status launch(cuda_session *ss, cplan *p, cudaGraphExec_t *exec, int *runs, enqueue_fn fn, bool wait,
                        cs_error *err) {
    if (ss->use_graphs && !p->no_graph && !*exec && (*runs)++ > 0) {
        cudaGraph_t graph = NULL;
        cs_status cst = CS_OK;
        cudaError_t e = cudaStreamBeginCapture(ss->stream, cudaStreamCaptureModeThreadLocal);
        if (e == cudaSuccess) {
            cst = fn(ss, p, err);
            e = cudaStreamEndCapture(ss->stream, &graph);
            if (cst == CS_OK && e == cudaSuccess && graph) e = cudaGraphInstantiate(exec, graph, 0);
            if (graph) cudaGraphDestroy(graph);
        }
        if (cst != CS_OK || e != cudaSuccess || !*exec) {
            /* something in the sequence is not capturable here: this plan
             * runs eagerly from now on */
            (void)cudaGetLastError();
            *exec = NULL;
            p->no_graph = true;
            if (getenv("CS_TRACE"))
                fprintf(stderr, "cuda: graph capture failed (%s), running eagerly\n",
                        cst != CS_OK && err ? err->msg : cudaGetErrorString(e));
        }
    }
    if (*exec) CU(cudaGraphLaunch(*exec, ss->stream), "graph launch");
    else TRY(fn(ss, p, err));
    if (!wait) {
        ss->pending = true;
        return CS_OK;
    }
    CU(cudaStreamSynchronize(ss->stream), "stream synchronize");
    return CS_OK;
}

/* Waits for work a launch left running (a backward: its results are only
 * read through s_layer/s_gradcam, which wait anyway, so a GradCAM pays for
 * one round trip instead of two).  Every entry point settles first: the
 * host buffers a pending run reads (the seed) must not be rewritten under
 * it, and an error it met is reported by the next call. */
static cs_status settle(cuda_session *ss, cs_error *err) {
    if (!ss->pending) return CS_OK;
    ss->pending = false;
    CU(cudaStreamSynchronize(ss->stream), "stream synchronize");
    return CS_OK;
}

/* CS_CUDA_PROFILE: each step's time of the forward just run, to stderr:
 * totals by kind, then the slowest steps. */
static const char *const kind_names[] = {"conv", "gemm", "epilogue", "unary", "strided", "fill", "pool", "gpool",
                                         "softmax", "layernorm"};

static void prof_report(const cplan *p) {
    double tot = 0, by[10] = {0}, epi = 0;
    int cnt[10] = {0};
    int top[12];
    double topt[12];
    int ntop = 0;
    for (int i = 0; i < p->nsteps; i++) {
        float ms = 0.f, conv = 0.f;
        if (cudaEventElapsedTime(&ms, p->prof_ev[i], p->prof_ev[i + 1]) != cudaSuccess) continue;
        const kstep *s = &p->steps[i];
        if (s->kind == K_CONV && cudaEventElapsedTime(&conv, p->prof_ev[i], p->prof_mid[i]) == cudaSuccess) {
            by[K_CONV] += conv;
            epi += ms - conv;
        } else {
            by[s->kind] += ms;
        }
        cnt[s->kind]++;
        tot += ms;
        /* insertion into the slowest 12 */
        if (ntop == 12 && ms <= topt[11]) continue;
        int j = ntop < 12 ? ntop++ : 11;
        while (j > 0 && topt[j - 1] < ms) {
            top[j] = top[j - 1];
            topt[j] = topt[j - 1];
            j--;
        }
        top[j] = i;
        topt[j] = ms;
    }
    fprintf(stderr, "cuda profile: batch %d, %d steps, %.3f ms (events; eager):", p->batch, p->nsteps, tot);
    for (int k = 0; k < 10; k++)
        if (cnt[k]) fprintf(stderr, " %s %.3f (%d)", kind_names[k], by[k], cnt[k]);
    fprintf(stderr, " conv-epilogues %.3f\n", epi);
    for (int j = 0; j < ntop; j++) {
        const kstep *s = &p->steps[top[j]];
        fprintf(stderr, "  %7.3f ms  %-9s %s\n", topt[j], kind_names[s->kind],
                s->node >= 0 ? p->m->g.nodes[s->node].name : "(layout copy)");
    }
}

/* ---- backward -------------------------------------------------------------------------- */

static bool has_grad(const cplan *p, int d) { return d >= 0 && p->dt[root_of(p, d)].goffset >= 0; }

static cs_status bwd_build(cuda_session *ss, cplan *p, const int *layers, int nlayers, cs_error *err) {
    const cs_graph *g = &p->m->g;
    free(p->bsteps);
    free(p->in_d);
    cudaFree(p->garena);
    if (p->g_bwd) cudaGraphExecDestroy(p->g_bwd);
    p->g_bwd = NULL;
    p->bwd_runs = 0;
    p->garena = NULL;
    p->bsteps = NULL;
    p->nb = 0;
    p->has_bwd = false;
    p->in_d = calloc((size_t)g->nvalues + 1, sizeof(bool));
    bool *in_region = calloc((size_t)g->nnodes + 1, sizeof(bool));
    p->bsteps = malloc((size_t)(p->nsteps + 1) * sizeof(bstep));
    cs_status st = CS_OK;
    if (!p->in_d || !in_region || !p->bsteps) st = cs_errorf(err, CS_ENOMEM, "out of memory");
    if (st == CS_OK) st = cs_graph_grad_region(&p->m->g, layers, nlayers, p->in_d, in_region, err);
    if (st != CS_OK) {
        free(in_region);
        return st;
    }
    /* gradient buffers: roots of the computed dts of D */
    size_t total = 0;
    for (int d = 0; d < p->ndt; d++) p->dt[d].goffset = -1;
    for (int d = 0; d < p->ndt; d++) {
        dten *t = &p->dt[d];
        if (t->cdata || t->value < 0 || !p->in_d[t->value] || t->et != p->cm->dt || t->shape.dtype != CS_DT_FLOAT)
            continue;
        int r = root_of(p, d);
        if (p->dt[r].goffset >= 0) continue;
        p->dt[r].goffset = (int64_t)total;
        total += align_up(p->dt[r].bytes);
    }
    for (int si = p->nsteps - 1; si >= 0 && st == CS_OK; si--) {
        const kstep *s = &p->steps[si];
        if (!has_grad(p, s->out) || !(has_grad(p, s->in[0]) || has_grad(p, s->in[1]))) continue;
        if (s->node >= 0 && !in_region[s->node]) continue;
        const cs_node *n = s->node >= 0 ? node_of(p, s->node) : NULL;
        bstep *b = &p->bsteps[p->nb];
        memset(b, 0, sizeof *b);
        b->step = si;
        if ((s->kind == K_CONV || s->kind == K_GEMM || s->kind == K_EPI) && (s->acts.n || s->sum >= 0)) {
            st = cs_errorf(err, CS_EINTERNAL, "node '%s': a fused op inside the explanation region", n ? n->name : "?");
            break;
        }
        switch (s->kind) {
        case K_CONV: {
            cudnnConvolutionBwdDataAlgoPerf_t perf[8];
            int got = 0, found = conv_find(p->cm, ss->dnn, s, ALGO_BWD_DATA, n->name);
            cudnnStatus_t ds = CUDNN_STATUS_SUCCESS;
            if (found >= 0) {
                b->balgo = (cudnnConvolutionBwdDataAlgo_t)found;
            } else {
                ds = cudnnGetConvolutionBackwardDataAlgorithm_v7(ss->dnn, s->wd, s->yd, s->cd, s->xd, 8, &got, perf);
                int pick = -1;
                for (int i = 0; ds == CUDNN_STATUS_SUCCESS && i < got && pick < 0; i++)
                    if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= MAX_WS) pick = i;
                if (pick < 0) {
                    st = unsupported(n, "a convolution whose backward-data no cuDNN algorithm takes", err);
                    break;
                }
                b->balgo = perf[pick].algo;
            }
            size_t wsz = 0;
            ds = cudnnGetConvolutionBackwardDataWorkspaceSize(ss->dnn, s->wd, s->yd, s->cd, s->xd, b->balgo, &wsz);
            if (ds != CUDNN_STATUS_SUCCESS) {
                st = cs_errorf(err, CS_EBACKEND, "cuDNN: backward workspace size: %s", cudnnGetErrorString(ds));
                break;
            }
            if (wsz > p->ws_size) {
                /* a bigger workspace: graphs captured with the old one are
                 * dropped before it goes */
                void *nw = NULL;
                cudaError_t e = cudaMalloc(&nw, wsz);
                if (e != cudaSuccess) {
                    st = cu_fail(e, "workspace", err);
                    break;
                }
                if (p->g_fwd) cudaGraphExecDestroy(p->g_fwd);
                p->g_fwd = NULL;
                p->fwd_runs = 0;
                cudaFree(p->ws);
                p->ws = nw;
                p->ws_size = wsz;
            }
            break;
        }
        case K_GEMM: case K_EPI: case K_UNARY: case K_POOL: case K_GPOOL: case K_SOFTMAX: break;
        case K_LN:
            if (n->ninputs > 1 && n->inputs[1] >= 0 && p->in_d[n->inputs[1]])
                st = unsupported(n, "the gradient of a computed LayerNorm scale", err);
            break;
        case K_STRIDED:
            if (s->op == CS_BIN_POW) st = unsupported(n, "the gradient of Pow", err);
            break;
        case K_FILL: continue;
        }
        p->nb++;
    }
    free(in_region);
    if (st != CS_OK) return st;
    if (total == 0) return cs_errorf(err, CS_EINTERNAL, "no gradient to compute");
    p->garena_size = total;
    CU(cudaMalloc(&p->garena, total), "gradient memory");
    p->has_bwd = true;
    p->bwd_nlayers = nlayers;
    memcpy(p->bwd_layers, layers, (size_t)nlayers * sizeof(int));
    return CS_OK;
}

/* reduction of gy over the dims where operand t broadcasts, into ga */
static cs_status bwd_binary_operand(cuda_session *ss, cplan *p, const kstep *s, int which, cs_error *err) {
    cs_cuda_stream stream = (cs_cuda_stream)ss->stream;
    const dten *y = &p->dt[s->out], *a = &p->dt[s->in[which]], *o = &p->dt[s->in[1 - which]];
    int nd = y->shape.ndim, mode = 0;
    const void *f = NULL, *f2 = NULL;
    const dten *ft = NULL, *f2t = NULL;
    switch (s->op) {
    case CS_BIN_SUB: mode = which ? 4 : 0; break;
    case CS_BIN_MUL: mode = 1, f = dptr(p, s->in[1 - which]), ft = o; break;
    case CS_BIN_DIV:
        if (!which) mode = 2, f = dptr(p, s->in[1]), ft = o;
        else mode = 3, f = dptr(p, s->in[1]), ft = a, f2 = dptr(p, s->in[0]), f2t = o;
        break;
    default: mode = 0; break;
    }
    int64_t sa[CS_MAX_DIMS], sf[CS_MAX_DIMS] = {0}, sf2[CS_MAX_DIMS] = {0};
    bcast_strides(a, &y->shape, sa);
    if (ft) bcast_strides(ft, &y->shape, sf);
    if (f2t) bcast_strides(f2t, &y->shape, sf2);
    cs_cuda_red r;
    memset(&r, 0, sizeof r);
    int na = a->shape.ndim;
    for (int i = 0; i < nd; i++) {
        int j = i - (nd - na);
        bool bc = j < 0 || a->shape.dims[j] == 1;
        if (y->shape.dims[i] == 1) continue;
        if (bc) {
            if (r.nr == CS_CUDA_MAXD) return cs_errorf(err, CS_EUNSUPPORTED, "a broadcast over too many dims");
            r.rd[r.nr] = y->shape.dims[i];
            r.rgy[r.nr] = y->strides[i];
            r.rf[r.nr] = sf[i];
            r.rf2[r.nr] = sf2[i];
            r.nr++;
        } else {
            if (r.nk == CS_CUDA_MAXD) return cs_errorf(err, CS_EUNSUPPORTED, "a broadcast over too many dims");
            r.kd[r.nk] = y->shape.dims[i];
            r.kga[r.nk] = sa[i];
            r.kgy[r.nk] = y->strides[i];
            r.kf[r.nk] = sf[i];
            r.kf2[r.nk] = sf2[i];
            r.nk++;
        }
    }
    KL(cs_cuda_k_bcast_reduce(stream, p->cm->dt, mode, gptr(p, s->out), f, f2, gptr(p, s->in[which]), &r),
       "binary backward");
    return CS_OK;
}

static cs_status run_bstep(cuda_session *ss, cplan *p, const bstep *b, cs_error *err) {
    const kstep *s = &p->steps[b->step];
    cs_cuda_stream stream = (cs_cuda_stream)ss->stream;
    cs_cuda_dt dt = p->cm->dt;
    const void *gy = gptr(p, s->out);
    void *gx = has_grad(p, s->in[0]) ? gptr(p, s->in[0]) : NULL;
    switch (s->kind) {
    case K_CONV:
        if (!gx) return CS_OK;
        DNN(cudnnConvolutionBackwardData(ss->dnn, &one, s->wd, s->w, s->yd, gy, s->cd, b->balgo, p->ws, p->ws_size,
                                         &one, s->xd, gx),
            "convolution backward-data");
        return CS_OK;
    case K_GEMM: {
        if (!gx) return CS_OK;
        cudaDataType_t t = blas_type(dt);
        /* dA[M,K] = dY[M,N]·op(B)ᵀ: column-major dAᵀ = op(B)·dYᵀ */
        BLAS(ss->blasf->gemm_ex(ss->blas, s->transB ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N, (int)s->K, (int)s->M,
                          (int)s->N, &s->alpha, s->w, t, s->transB ? (int)s->K : (int)s->N, gy, t, (int)s->N, &one,
                          gx, t, (int)s->K, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
             "GEMM backward");
        return CS_OK;
    }
    case K_EPI:
        if (!gx) return CS_OK;
        KL(cs_cuda_k_chan_scale_bwd(stream, dt, gy, gx, cs_shape_numel(&p->dt[s->out].shape), s->C, s->inner,
                                    s->scale),
           "BatchNormalization backward");
        return CS_OK;
    case K_UNARY:
        if (!gx) return CS_OK;
        KL(cs_cuda_k_unary_bwd(stream, dt, s->acts.a[0], dptr(p, s->in[0]), dptr(p, s->out), gy, gx,
                               cs_shape_numel(&p->dt[s->out].shape)),
           "element-wise backward");
        return CS_OK;
    case K_STRIDED:
        if (s->op == CS_BIN_COPY) {
            if (!gx) return CS_OK;
            /* out[so] = a[sa]  ⇒  ga[sa] += gout[so] */
            cs_cuda_walk w = s->walk;
            memcpy(w.so, s->walk.sa, sizeof w.so);
            memcpy(w.sa, s->walk.so, sizeof w.sa);
            KL(cs_cuda_k_strided(stream, CS_BIN_COPY, 1, dt, (char *)gx + s->off_a * (int64_t)cs_cuda_dt_size(dt), dt,
                                 (const char *)gy + s->off_o * (int64_t)cs_cuda_dt_size(dt), NULL, &w),
               "copy backward");
            return CS_OK;
        }
        if (gx) TRY(bwd_binary_operand(ss, p, s, 0, err));
        if (s->in[1] >= 0 && has_grad(p, s->in[1])) TRY(bwd_binary_operand(ss, p, s, 1, err));
        return CS_OK;
    case K_POOL:
        if (!gx) return CS_OK;
        KL(cs_cuda_k_pool_bwd(stream, dt, &s->pool, dptr(p, s->in[0]), gy, gx), "pooling backward");
        return CS_OK;
    case K_GPOOL:
        if (!gx) return CS_OK;
        KL(cs_cuda_k_gpool_bwd(stream, dt, dptr(p, s->in[0]), gy, gx, s->gN, s->gC, s->gHW, s->gxn, s->gxc, s->gxhw,
                               s->gyn, s->gyc, s->is_max),
           "global pooling backward");
        return CS_OK;
    case K_SOFTMAX:
        if (!gx) return CS_OK;
        KL(cs_cuda_k_softmax_bwd(stream, dt, dptr(p, s->out), gy, gx, s->outer, s->len, s->inner), "softmax backward");
        return CS_OK;
    case K_LN:
        if (!gx) return CS_OK;
        KL(cs_cuda_k_layernorm_bwd(stream, dt, dptr(p, s->in[0]), gy, gx, s->outer, s->len, s->gamma, s->eps),
           "layer norm backward");
        return CS_OK;
    case K_FILL: return CS_OK;
    }
    return cs_errorf(err, CS_EINTERNAL, "unknown CUDA backward step");
}

static cs_status enqueue_backward(cuda_session *ss, cplan *p, cs_error *err) {
    CU(cudaMemsetAsync(p->garena, 0, p->garena_size, ss->stream), "gradient clear");
    /* the seed: one-hot rows, staged fp32 through out32 (the logits are
     * on the host already) */
    const dten *o = &p->dt[p->out_dt];
    CU(cudaMemcpyAsync(dptr(p, p->out32), p->h_seed, p->dt[p->out32].bytes, cudaMemcpyHostToDevice, ss->stream),
       "seed copy");
    int64_t dense[CS_MAX_DIMS];
    cs_cuda_dense_strides(o->shape.ndim, o->shape.dims, dense);
    cs_cuda_walk w;
    if (cs_cuda_walk_make(&w, o->shape.ndim, o->shape.dims, o->strides, dense, NULL))
        return cs_errorf(err, CS_EUNSUPPORTED, "an output of more than %d dims", CS_CUDA_MAXD);
    KL(cs_cuda_k_strided((cs_cuda_stream)ss->stream, CS_BIN_COPY, 1, p->cm->dt, gptr(p, p->out_dt), CS_CUDA_F32,
                         dptr(p, p->out32), NULL, &w),
       "seed");
    for (int i = 0; i < p->nb; i++) {
        cs_status st = run_bstep(ss, p, &p->bsteps[i], err);
        if (st != CS_OK) {
            int ni = p->steps[p->bsteps[i].step].node;
            return ni >= 0 ? cs_error_prefix(err, "node '%s' backward", p->m->g.nodes[ni].name) : st;
        }
    }
    return CS_OK;
}

/* The backward is linear in its seed: fp16 gradients start at GRAD_SCALE
 * instead of 1 so that the small ones of deep layers stay above fp16's
 * subnormal range (where a value keeps only a few bits); everything read
 * back is divided by it, exactly (a power of two).  bf16 has fp32's range. */
#define GRAD_SCALE 1024.f
static float grad_scale(const cplan *p) { return p->cm->dt == CS_CUDA_F16 ? GRAD_SCALE : 1.f; }

/* ---- session ------------------------------------------------------------------------------- */

static cs_status set_device(const cuda_model *cm, cs_error *err) {
    CU(cudaSetDevice(cm->device), "cudaSetDevice");
    return CS_OK;
}

static cs_status session_plan(cuda_session *ss, int batch, const int *keep, int nkeep, int override_v,
                              cplan **out, cs_error *err) {
    ss->tick++;
    int lru = 0;
    for (int i = 0; i < SESSION_PLANS; i++) {
        cplan *p = ss->plans[i];
        if (p && p->batch == batch && p->nkeep == nkeep && p->override_v == override_v &&
            (nkeep == 0 || memcmp(p->keep_list, keep, (size_t)nkeep * sizeof(int)) == 0)) {
            p->last_used = ss->tick;
            *out = p;
            return CS_OK;
        }
        if (!p || (ss->plans[lru] && p->last_used < ss->plans[lru]->last_used)) lru = i;
    }
    if (ss->explain == ss->plans[lru]) ss->explain = NULL;
    cplan_free(ss->plans[lru]);
    ss->plans[lru] = NULL;
    cplan *p;
    TRY(cplan_build(ss->cm, ss->dnn, batch, keep, nkeep, override_v, &p, err));
    int64_t numel = cs_shape_numel(&p->dt[p->out32].shape);
    if (numel != (int64_t)batch * ss->m->info.num_classes) {
        cplan_free(p);
        return cs_errorf(err, CS_EUNSUPPORTED, "the model's output is not batch x classes at batch %d", batch);
    }
    p->last_used = ss->tick;
    ss->plans[lru] = p;
    *out = p;
    return CS_OK;
}

/* Into the pinned staging buffers.  A batch of 64 224x224 images is 38 MB,
 * which one thread copies at a few GB/s: batch 64 took 21.6 ms for 8.6 ms
 * of GPU work (bench/results/gpu-h200-run3-probe.txt), so big inputs are
 * copied by several threads (OpenMP, as the CPU engine); with 16 threads
 * it took 11.8 ms against 17.1 ms with one (bench/results/gpu-h200.md). */
static void stage(void *dst, const void *src, size_t n) {
    const size_t chunk = (size_t)1 << 20;
    if (n < 4 * chunk) {
        memcpy(dst, src, n);
        return;
    }
    long nch = (long)((n + chunk - 1) / chunk);
#pragma omp parallel for schedule(static)
    for (long i = 0; i < nch; i++) {
        size_t o = (size_t)i * chunk;
        memcpy((char *)dst + o, (const char *)src + o, n - o < chunk ? n - o : chunk);
    }
}

static cs_status forward(cuda_session *ss, cplan *p, const float *input, const float *ovr, float *logits,
                         cs_error *err) {
    TRY(settle(ss, err));
    if (!p->in_unused) stage(p->h_in, input, p->dt[p->in32].bytes);
    if (p->ovr32 >= 0) stage(p->h_ovr, ovr, p->dt[p->ovr32].bytes);
    if (ss->profile && !p->prof_ev) {
        p->prof_ev = calloc((size_t)p->nsteps + 1, sizeof(cudaEvent_t));
        p->prof_mid = calloc((size_t)p->nsteps + 1, sizeof(cudaEvent_t));
        if (!p->prof_ev || !p->prof_mid) {
            free(p->prof_ev);
            free(p->prof_mid);
            p->prof_ev = p->prof_mid = NULL;
            return cs_errorf(err, CS_ENOMEM, "out of memory");
        }
        for (int i = 0; i <= p->nsteps; i++) {
            CU(cudaEventCreate(&p->prof_ev[i]), "profile event");
            CU(cudaEventCreate(&p->prof_mid[i]), "profile event");
        }
    }
    if (!p->in_unused)
        CU(cudaMemcpyAsync(dptr(p, p->in32), p->h_in, p->dt[p->in32].bytes, cudaMemcpyHostToDevice, ss->stream),
           "input copy");
    if (p->ovr32 >= 0)
        CU(cudaMemcpyAsync(dptr(p, p->ovr32), p->h_ovr, p->dt[p->ovr32].bytes, cudaMemcpyHostToDevice, ss->stream),
           "layer values copy");
    ss->device_ms = -1;
    CU(cudaEventRecord(ss->ev_start, ss->stream), "event");
    TRY(launch(ss, p, &p->g_fwd, &p->fwd_runs, enqueue_forward, false, err));
    CU(cudaEventRecord(ss->ev_end, ss->stream), "event");
    TRY(settle(ss, err));
    float ms = 0.f;
    if (cudaEventElapsedTime(&ms, ss->ev_start, ss->ev_end) == cudaSuccess) ss->device_ms = ms;
    if (p->prof_ev) prof_report(p);
    memcpy(logits, p->h_out, p->dt[p->out32].bytes);
    for (int i = 0; i < 16; i++) p->dl_act_ok[i] = p->dl_grad_ok[i] = p->dl_map_ok[i] = false;
    return CS_OK;
}

/* Plain runs leave the explanation plan alone (as the CPU session does):
 * ScoreCAM/AblationCAM run them between a backward and the layer reads. */
static cs_status s_run(void *bs, const float *input, int batch, float *logits, cs_error *err) {
    cuda_session *ss = bs;
    TRY(set_device(ss->cm, err));
    TRY(settle(ss, err));
    cplan *p;
    TRY(session_plan(ss, batch, NULL, 0, -1, &p, err));
    return forward(ss, p, input, NULL, logits, err);
}

static cs_status s_run_with_layer(void *bs, const float *input, int batch, int v, const float *values,
                                  float *logits, cs_error *err) {
    cuda_session *ss = bs;
    TRY(set_device(ss->cm, err));
    TRY(settle(ss, err));
    cplan *p;
    TRY(session_plan(ss, batch, &v, 1, v, &p, err));
    return forward(ss, p, input, values, logits, err);
}

static cs_status s_forward_keep(void *bs, const float *input, int batch, const int *vals, int n, float *logits,
                                cs_error *err) {
    cuda_session *ss = bs;
    ss->explain = NULL;
    ss->have_grad = false;
    TRY(set_device(ss->cm, err));
    TRY(settle(ss, err));
    int *keep = NULL, nkeep = 0;
    TRY(cs_bwd_keep_set(ss->m, vals, n, &keep, &nkeep, err));
    cplan *p = NULL;
    cs_status st = session_plan(ss, batch, keep, nkeep, -1, &p, err);
    free(keep);
    TRY(st);
    if (!p->has_bwd || p->bwd_nlayers != n || memcmp(p->bwd_layers, vals, (size_t)n * sizeof(int)) != 0)
        TRY(bwd_build(ss, p, vals, n, err));
    TRY(forward(ss, p, input, NULL, logits, err));
    ss->explain = p;
    return CS_OK;
}

static cs_status s_backward(void *bs, const int *classes, cs_error *err) {
    cuda_session *ss = bs;
    cplan *p = ss->explain;
    if (!p) return cs_errorf(err, CS_EINVAL, "cs_session_backward needs a forward_keep first");
    TRY(set_device(ss->cm, err));
    TRY(settle(ss, err));
    int64_t nc = ss->m->info.num_classes;
    memset(p->h_seed, 0, p->dt[p->out32].bytes);
    for (int i = 0; i < p->batch; i++) {
        if (classes[i] < 0 || classes[i] >= nc)
            return cs_errorf(err, CS_EINVAL, "class %d out of range (0..%lld)", classes[i], (long long)nc - 1);
        p->h_seed[(int64_t)i * nc + classes[i]] = grad_scale(p);
    }
    ss->have_grad = false;
    TRY(launch(ss, p, &p->g_bwd, &p->bwd_runs, enqueue_backward, false, err));
    for (int i = 0; i < 16; i++) p->dl_grad_ok[i] = p->dl_map_ok[i] = false;
    ss->have_grad = true;
    return CS_OK;
}

/* the download slot of value v in plan p (16 at most, as layers) */
static int dl_slot(cplan *p, int v) {
    for (int i = 0; i < 16; i++)
        if (p->dl_used[i] && p->dl_v[i] == v) return i;
    for (int i = 0; i < 16; i++)
        if (!p->dl_used[i]) {
            p->dl_used[i] = true;
            p->dl_v[i] = v;
            return i;
        }
    return -1;
}

/* d (storage type, its layout) → host fp32 NCHW in *host (pinned, made once) */
static cs_status download(cuda_session *ss, cplan *p, const void *src, const dten *t, float **host, cs_error *err) {
    int64_t n = cs_shape_numel(&t->shape);
    if ((size_t)n > p->dl_n) {
        cudaFree(p->dl_dev);
        p->dl_dev = NULL;
        CU(cudaMalloc((void **)&p->dl_dev, (size_t)n * 4), "download scratch");
        p->dl_n = (size_t)n;
    }
    if (!*host) CU(cudaHostAlloc((void **)host, (size_t)n * 4, cudaHostAllocDefault), "pinned buffer");
    int64_t dense[CS_MAX_DIMS];
    cs_cuda_dense_strides(t->shape.ndim, t->shape.dims, dense);
    cs_cuda_walk w;
    if (cs_cuda_walk_make(&w, t->shape.ndim, t->shape.dims, dense, t->strides, NULL))
        return cs_errorf(err, CS_EUNSUPPORTED, "a tensor of more than %d dims", CS_CUDA_MAXD);
    KL(cs_cuda_k_strided((cs_cuda_stream)ss->stream, CS_BIN_COPY, 0, CS_CUDA_F32, p->dl_dev, t->et, src, NULL, &w),
       "download conversion");
    CU(cudaMemcpyAsync(*host, p->dl_dev, (size_t)n * 4, cudaMemcpyDeviceToHost, ss->stream), "download");
    CU(cudaStreamSynchronize(ss->stream), "stream synchronize");
    return CS_OK;
}

static cs_status s_layer(void *bs, int v, const float **act, const float **grad, int64_t dims[4], cs_error *err) {
    cuda_session *ss = bs;
    cplan *p = ss->explain;
    if (!p) return cs_errorf(err, CS_EINVAL, "no explanation run on this session");
    int d = p->val_dt[v];
    if (d < 0 || p->dt[d].cdata || !p->keep[v] || p->dt[d].shape.ndim != 4)
        return cs_errorf(err, CS_ENOTFOUND, "layer '%s' was not kept", ss->m->g.values[v].name);
    TRY(set_device(ss->cm, err));
    TRY(settle(ss, err));
    int k = dl_slot(p, v);
    if (k < 0) return cs_errorf(err, CS_ELIMIT, "more than 16 layers read from one plan");
    if (!p->dl_act_ok[k]) {
        TRY(download(ss, p, dptr(p, d), &p->dt[d], &p->dl_act[k], err));
        p->dl_act_ok[k] = true;
    }
    *grad = NULL;
    if (ss->have_grad && has_grad(p, d)) {
        if (!p->dl_grad_ok[k]) {
            TRY(download(ss, p, gptr(p, d), &p->dt[d], &p->dl_grad[k], err));
            float inv = 1.f / grad_scale(p);
            if (inv != 1.f)
                for (int64_t i = 0, n = cs_shape_numel(&p->dt[d].shape); i < n; i++) p->dl_grad[k][i] *= inv;
            p->dl_grad_ok[k] = true;
        }
        *grad = p->dl_grad[k];
    }
    *act = p->dl_act[k];
    for (int i = 0; i < 4; i++) dims[i] = p->dt[d].shape.dims[i];
    return CS_OK;
}

static cs_status s_gradcam(void *bs, int v, const float **map, int64_t dims[3], cs_error *err) {
    cuda_session *ss = bs;
    cplan *p = ss->explain;
    if (!p || !ss->have_grad) return cs_errorf(err, CS_EINVAL, "Grad-CAM needs a forward_keep and a backward first");
    int d = p->val_dt[v];
    if (d < 0 || p->dt[d].cdata || !p->keep[v] || p->dt[d].shape.ndim != 4 || !has_grad(p, d))
        return cs_errorf(err, CS_ENOTFOUND, "layer '%s' was not kept", ss->m->g.values[v].name);
    TRY(set_device(ss->cm, err));
    TRY(settle(ss, err));
    int k = dl_slot(p, v);
    if (k < 0) return cs_errorf(err, CS_ELIMIT, "more than 16 layers read from one plan");
    const dten *t = &p->dt[d];
    int64_t N = t->shape.dims[0], C = t->shape.dims[1], H = t->shape.dims[2], W = t->shape.dims[3];
    if (!p->dl_map_ok[k]) {
        if ((size_t)(N * C) > p->cam_w_n) {
            cudaFree(p->cam_w);
            p->cam_w = NULL;
            CU(cudaMalloc((void **)&p->cam_w, (size_t)(N * C) * 4), "CAM weights");
            p->cam_w_n = (size_t)(N * C);
        }
        if ((size_t)(N * H * W) > p->dl_n) {
            cudaFree(p->dl_dev);
            p->dl_dev = NULL;
            CU(cudaMalloc((void **)&p->dl_dev, (size_t)(N * H * W) * 4), "download scratch");
            p->dl_n = (size_t)(N * H * W);
        }
        if (!p->dl_map[k]) CU(cudaHostAlloc((void **)&p->dl_map[k], (size_t)(N * H * W) * 4, cudaHostAllocDefault), "pinned buffer");
        cs_cuda_stream st = (cs_cuda_stream)ss->stream;
        bool nhwc = is_nhwc(t);
        /* weights: the spatial mean of the gradient, fp32 */
        KL(cs_cuda_k_gpool(st, p->cm->dt, gptr(p, d), N, C, H * W, t->strides[0], t->strides[1], nhwc ? C : 1,
                           CS_CUDA_F32, p->cam_w, C, 1, 0),
           "CAM weights");
        KL(cs_cuda_k_cam(st, p->cm->dt, dptr(p, d), p->cam_w, p->dl_dev, N, C, H, W, t->strides[0], t->strides[1],
                         t->strides[2], t->strides[3]),
           "CAM map");
        CU(cudaMemcpyAsync(p->dl_map[k], p->dl_dev, (size_t)(N * H * W) * 4, cudaMemcpyDeviceToHost, ss->stream),
           "CAM download");
        CU(cudaStreamSynchronize(ss->stream), "stream synchronize");
        float inv = 1.f / grad_scale(p);
        if (inv != 1.f)
            for (int64_t i = 0; i < N * H * W; i++) p->dl_map[k][i] *= inv;
        p->dl_map_ok[k] = true;
    }
    *map = p->dl_map[k];
    dims[0] = N;
    dims[1] = H;
    dims[2] = W;
    return CS_OK;
}

static double s_device_ms(const void *bs) { return ((const cuda_session *)bs)->device_ms; }

static void s_free(void *bs) {
    cuda_session *ss = bs;
    if (!ss) return;
    cudaSetDevice(ss->cm->device);
    if (ss->pending) cudaStreamSynchronize(ss->stream);
    for (int i = 0; i < SESSION_PLANS; i++) cplan_free(ss->plans[i]);
    if (ss->ev_start) cudaEventDestroy(ss->ev_start);
    if (ss->ev_end) cudaEventDestroy(ss->ev_end);
    if (ss->blas) ss->blasf->destroy(ss->blas);
    if (ss->dnn) cudnnDestroy(ss->dnn);
    cudaFree(ss->blas_ws);
    if (ss->stream) cudaStreamDestroy(ss->stream);
    free(ss);
}

static cs_status s_create(const cs_model *m, void *bm, void **out, cs_error *err) {
    cuda_model *cm = bm;
    *out = NULL;
    TRY(set_device(cm, err));
    cuda_session *ss = calloc(1, sizeof *ss);
    if (!ss) return cs_errorf(err, CS_ENOMEM, "out of memory");
    ss->cm = cm;
    ss->m = m;
    const char *g = getenv("CS_CUDA_GRAPHS");
    const char *prof = getenv("CS_CUDA_PROFILE");
    ss->profile = prof && *prof && strcmp(prof, "0") != 0;
    ss->use_graphs = !(g && strcmp(g, "0") == 0) && !ss->profile;
    cs_status st = CS_OK;
    ss->device_ms = -1;
    cudaError_t e = cudaStreamCreateWithFlags(&ss->stream, cudaStreamNonBlocking);
    if (e == cudaSuccess) e = cudaMalloc(&ss->blas_ws, BLAS_WS);
    if (e == cudaSuccess) e = cudaEventCreate(&ss->ev_start);
    if (e == cudaSuccess) e = cudaEventCreate(&ss->ev_end);
    if (e != cudaSuccess) st = cu_fail(e, "session stream", err);
    cudnnStatus_t ds = CUDNN_STATUS_SUCCESS;
    if (st == CS_OK && (ds = cudnnCreate(&ss->dnn)) == CUDNN_STATUS_SUCCESS) ds = cudnnSetStream(ss->dnn, ss->stream);
    if (st == CS_OK && ds != CUDNN_STATUS_SUCCESS)
        st = cs_errorf(err, CS_EBACKEND, "cuDNN: handle: %s", cudnnGetErrorString(ds));
    cublasStatus_t bs = CUBLAS_STATUS_SUCCESS;
    if (st == CS_OK && !(ss->blasf = cs_cublas(err))) st = CS_EBACKEND;
    if (st == CS_OK && (bs = ss->blasf->create(&ss->blas)) == CUBLAS_STATUS_SUCCESS)
        bs = ss->blasf->set_stream(ss->blas, ss->stream);
    /* a fixed workspace: cuBLAS would otherwise allocate inside a capture */
    if (st == CS_OK && bs == CUBLAS_STATUS_SUCCESS) bs = ss->blasf->set_workspace(ss->blas, ss->blas_ws, BLAS_WS);
    if (st == CS_OK && bs != CUBLAS_STATUS_SUCCESS)
        st = cs_errorf(err, CS_EBACKEND, "cuBLAS: handle: %s", cs_cublas_status(bs));
    if (st != CS_OK) {
        s_free(ss);
        return st;
    }
    *out = ss;
    return CS_OK;
}

/* ---- model ------------------------------------------------------------------------------ */

static void m_free(void *bm) {
    cuda_model *cm = bm;
    if (!cm) return;
    cudaSetDevice(cm->device);
    for (int i = 0; i < cm->nw; i++) cudaFree(cm->w[i].data);
    free(cm->w);
    free(cm->memo);
    pthread_mutex_destroy(&cm->lock);
    free(cm);
}

static cs_status m_init(cs_model *m, int device, cs_precision prec, void **out, cs_error *err) {
    *out = NULL;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return cs_errorf(err, CS_EBACKEND, "device cuda:%d: no usable GPU: %s (use --device cpu)", device,
                         cudaGetErrorString(e));
    }
    if (device >= n) return cs_errorf(err, CS_EINVAL, "CUDA device %d does not exist (%d found)", device, n);
    CU(cudaSetDevice(device), "cudaSetDevice");
    if (prec == CS_PRECISION_BF16) {
        int major = 0;
        CU(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "device attributes");
        if (major < 8) return cs_errorf(err, CS_EUNSUPPORTED, "bf16 needs a GPU of compute capability 8.0 or newer");
    }
    cuda_model *cm = calloc(1, sizeof *cm);
    if (!cm) return cs_errorf(err, CS_ENOMEM, "out of memory");
    cm->m = m;
    cm->device = device;
    cm->dt = prec == CS_PRECISION_FP32 ? CS_CUDA_F32 : prec == CS_PRECISION_BF16 ? CS_CUDA_BF16 : CS_CUDA_F16;
    pthread_mutex_init(&cm->lock, NULL);
    /* the plan at the smallest batch the graph takes (1, or the batch it
     * was exported with): every op checked, every weight uploaded */
    cs_model_info info;
    cs_model_get_info(m, &info);
    const int b0 = info.input_dims[0] > 0 ? (int)info.input_dims[0] : 1;
    cudnnHandle_t dnn = NULL;
    cudnnStatus_t ds = cudnnCreate(&dnn);
    if (ds != CUDNN_STATUS_SUCCESS) {
        m_free(cm);
        return cs_errorf(err, CS_EBACKEND, "cuDNN: handle: %s", cudnnGetErrorString(ds));
    }
    cplan *p = NULL;
    cs_status st = cplan_build(cm, dnn, b0, NULL, 0, -1, &p, err);
    cplan_free(p);
    cudnnDestroy(dnn);
    if (st != CS_OK) {
        m_free(cm);
        return st;
    }
    *out = cm;
    return CS_OK;
}

static const cs_backend g_cuda = {
    .name = "cuda",
    .model_init = m_init,
    .model_free = m_free,
    .session_create = s_create,
    .session_free = s_free,
    .run = s_run,
    .run_with_layer = s_run_with_layer,
    .forward_keep = s_forward_keep,
    .backward = s_backward,
    .layer = s_layer,
    .gradcam = s_gradcam,
    .device_ms = s_device_ms,
};

const cs_backend *cs_cuda_backend(void) { return &g_cuda; }
