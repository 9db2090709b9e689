/* Operator semantics: ONNX shape inference and plain-layout reference kernels.
 *
 * Everything the engine knows about what an operator *means* lives here; the
 * oneDNN backend only has to agree with it.  Shape inference follows ONNX as
 * torch.onnx.export writes opsets 11-17 (both the attribute and the input
 * form of Split/Squeeze/Unsqueeze/Reduce* are accepted whatever the opset,
 * since exporters mix them up).  Reference kernels work on dense C-order
 * buffers; the data-movement and elementwise ones also run at inference time,
 * so they iterate rows with precomputed strides rather than dividing indices
 * per element. */
#include "engine/ir.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INV_SQRT2 0.70710678118654752440f

/* ---- names ------------------------------------------------------------- */

static const char *const op_names[CS_OP__COUNT] = {
    [CS_OP_CONV] = "Conv", [CS_OP_GEMM] = "Gemm", [CS_OP_MATMUL] = "MatMul",
    [CS_OP_MAXPOOL] = "MaxPool", [CS_OP_AVGPOOL] = "AveragePool",
    [CS_OP_GLOBALAVGPOOL] = "GlobalAveragePool", [CS_OP_GLOBALMAXPOOL] = "GlobalMaxPool",
    [CS_OP_BATCHNORM] = "BatchNormalization",
    [CS_OP_RELU] = "Relu", [CS_OP_CLIP] = "Clip", [CS_OP_LEAKYRELU] = "LeakyRelu",
    [CS_OP_SIGMOID] = "Sigmoid", [CS_OP_HARDSIGMOID] = "HardSigmoid",
    [CS_OP_HARDSWISH] = "HardSwish", [CS_OP_TANH] = "Tanh", [CS_OP_ERF] = "Erf",
    [CS_OP_SQRT] = "Sqrt", [CS_OP_EXP] = "Exp", [CS_OP_NEG] = "Neg",
    [CS_OP_RECIPROCAL] = "Reciprocal", [CS_OP_GELU] = "Gelu", [CS_OP_IDENTITY] = "Identity",
    [CS_OP_DROPOUT] = "Dropout", [CS_OP_CAST] = "Cast",
    [CS_OP_ADD] = "Add", [CS_OP_SUB] = "Sub", [CS_OP_MUL] = "Mul", [CS_OP_DIV] = "Div",
    [CS_OP_POW] = "Pow",
    [CS_OP_REDUCEMEAN] = "ReduceMean", [CS_OP_REDUCESUM] = "ReduceSum",
    [CS_OP_SOFTMAX] = "Softmax", [CS_OP_LAYERNORM] = "LayerNormalization",
    [CS_OP_FLATTEN] = "Flatten", [CS_OP_RESHAPE] = "Reshape", [CS_OP_TRANSPOSE] = "Transpose",
    [CS_OP_CONCAT] = "Concat", [CS_OP_SPLIT] = "Split", [CS_OP_SLICE] = "Slice",
    [CS_OP_PAD] = "Pad", [CS_OP_SQUEEZE] = "Squeeze", [CS_OP_UNSQUEEZE] = "Unsqueeze",
    [CS_OP_SHAPE] = "Shape", [CS_OP_GATHER] = "Gather", [CS_OP_CONSTANT] = "Constant",
    [CS_OP_CONSTANTOFSHAPE] = "ConstantOfShape", [CS_OP_EXPAND] = "Expand",
    [CS_OP_EQUAL] = "Equal", [CS_OP_WHERE] = "Where",
};

cs_op cs_op_from_name(const char *onnx_op_type) {
    if (!onnx_op_type) return CS_OP_UNKNOWN;
    for (int i = 1; i < CS_OP__COUNT; i++)
        if (op_names[i] && strcmp(op_names[i], onnx_op_type) == 0) return (cs_op)i;
    return CS_OP_UNKNOWN;
}

const char *cs_op_name(cs_op op) {
    if ((unsigned)op >= CS_OP__COUNT || !op_names[op]) return "Unknown";
    return op_names[op];
}

/* ---- common plumbing --------------------------------------------------- */

/* Everything a per-op function needs, so their signatures stay short. */
typedef struct ctx {
    const cs_graph *g;
    const cs_node *n;
    const cs_shape *const *in;
    const void *const *in_data;
    cs_error *err;
    int64_t opset;
} ctx;

__attribute__((format(printf, 3, 4)))
static cs_status fail(const ctx *c, cs_status code, const char *fmt, ...) {
    char buf[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    const cs_node *n = c->n;
    return cs_errorf(c->err, code, "%s node '%s': %s",
                     n->op_type ? n->op_type : cs_op_name(n->op), n->name ? n->name : "", buf);
}

static const cs_shape *in_shape(const ctx *c, int i) {
    return (i >= 0 && i < c->n->ninputs) ? c->in[i] : NULL;
}

static const void *in_dat(const ctx *c, int i) {
    return (i >= 0 && i < c->n->ninputs && c->in_data && c->in[i]) ? c->in_data[i] : NULL;
}

static void shape_set(cs_shape *s, cs_dtype dt, int ndim, const int64_t *dims) {
    memset(s, 0, sizeof *s);
    s->dtype = dt;
    s->ndim = ndim;
    for (int i = 0; i < ndim; i++) s->dims[i] = dims[i];
}

/* Products where -1 (unknown) is contagious.  Hostile models can ask for
 * absurd dims, so overflow saturates instead of being undefined; the
 * size check in cs_op_infer then rejects the result. */
static int64_t dmul(int64_t a, int64_t b) {
    if (a < 0 || b < 0) return -1;
    int64_t r;
    return __builtin_mul_overflow(a, b, &r) ? INT64_MAX : r;
}

/* Bound on attribute/constant magnitudes (kernel sizes, pads, split sizes)
 * so that the arithmetic on them cannot overflow. */
#define SANE_MAX ((int64_t)1 << 40)

static int64_t dims_prod(const int64_t *d, int from, int to) {
    int64_t p = 1;
    for (int i = from; i < to; i++) p = dmul(p, d[i]);
    return p;
}

static int64_t numel(const cs_shape *s) { return cs_shape_numel(s); }

static cs_status norm_axis(const ctx *c, int64_t axis, int rank, int *out) {
    if (axis < -rank || axis >= rank)
        return fail(c, CS_EINVAL, "axis %lld out of range for rank %d", (long long)axis, rank);
    *out = (int)(axis < 0 ? axis + rank : axis);
    return CS_OK;
}

static bool is_int_type(cs_dtype t) {
    return t == CS_DT_INT64 || t == CS_DT_INT32 || t == CS_DT_INT8 || t == CS_DT_UINT8 ||
           t == CS_DT_BOOL;
}

static double ld_f(const void *p, cs_dtype t, int64_t i) {
    switch (t) {
    case CS_DT_FLOAT: return ((const float *)p)[i];
    case CS_DT_DOUBLE: return ((const double *)p)[i];
    case CS_DT_INT64: return (double)((const int64_t *)p)[i];
    case CS_DT_INT32: return ((const int32_t *)p)[i];
    case CS_DT_INT8: return ((const int8_t *)p)[i];
    case CS_DT_UINT8: return ((const uint8_t *)p)[i];
    case CS_DT_BOOL: return ((const uint8_t *)p)[i] != 0;
    default: return 0;
    }
}

static int64_t ld_i(const void *p, cs_dtype t, int64_t i) {
    switch (t) {
    case CS_DT_INT64: return ((const int64_t *)p)[i];
    case CS_DT_INT32: return ((const int32_t *)p)[i];
    case CS_DT_INT8: return ((const int8_t *)p)[i];
    case CS_DT_UINT8: return ((const uint8_t *)p)[i];
    case CS_DT_BOOL: return ((const uint8_t *)p)[i] != 0;
    default: {
        /* Float to int truncates toward zero; NaN and out-of-range values
         * saturate instead of being undefined behaviour. */
        double v = ld_f(p, t, i);
        if (v != v) return 0;
        if (v >= 9.2233720368547758e18) return INT64_MAX;
        if (v <= -9.2233720368547758e18) return INT64_MIN;
        return (int64_t)v;
    }
    }
}

static void st_f(void *p, cs_dtype t, int64_t i, double v) {
    switch (t) {
    case CS_DT_FLOAT: ((float *)p)[i] = (float)v; break;
    case CS_DT_DOUBLE: ((double *)p)[i] = v; break;
    default: break;
    }
}

static void st_i(void *p, cs_dtype t, int64_t i, int64_t v) {
    switch (t) {
    case CS_DT_INT64: ((int64_t *)p)[i] = v; break;
    case CS_DT_INT32: ((int32_t *)p)[i] = (int32_t)(uint32_t)(uint64_t)v; break;
    case CS_DT_INT8: ((int8_t *)p)[i] = (int8_t)(uint8_t)(uint64_t)v; break;
    case CS_DT_UINT8: ((uint8_t *)p)[i] = (uint8_t)(uint64_t)v; break;
    case CS_DT_BOOL: ((uint8_t *)p)[i] = v != 0; break;
    default: st_f(p, t, i, (double)v); break;
    }
}

/* Reads a small 1-D (or scalar) int32/int64 constant input, e.g. a Reshape
 * shape or Slice starts.  Value-dependent inference cannot proceed without
 * it, so a missing constant is an error that says which input. */
static cs_status const_ints(const ctx *c, int idx, const char *what, int64_t *vals, int max,
                            int *count) {
    const cs_shape *s = in_shape(c, idx);
    const void *d = in_dat(c, idx);
    if (!s) return fail(c, CS_EINVAL, "missing input %d (%s)", idx, what);
    if (!d)
        return fail(c, CS_EINVAL,
                    "input %d (%s) must be a constant to infer shapes; it is computed at run time",
                    idx, what);
    if (s->dtype != CS_DT_INT64 && s->dtype != CS_DT_INT32)
        return fail(c, CS_EINVAL, "input %d (%s) must be int64 or int32", idx, what);
    int64_t k = numel(s);
    if (s->ndim > 1 || k < 0 || k > max)
        return fail(c, CS_EINVAL, "input %d (%s) must be a 1-D tensor of at most %d values", idx,
                    what, max);
    for (int64_t i = 0; i < k; i++) vals[i] = ld_i(d, s->dtype, i);
    *count = (int)k;
    return CS_OK;
}

/* Axes come from the `axes` attribute (older opsets) or from input `idx`
 * (Squeeze/Unsqueeze/ReduceSum from 13, ReduceMean from 18). */
static cs_status axes_of(const ctx *c, int idx, int64_t *axes, int *count, bool *given) {
    const int64_t *a;
    int k = cs_attr_ints(c->n, "axes", &a);
    *given = false;
    *count = 0;
    if (cs_node_attr(c->n, "axes")) {
        if (k > CS_MAX_DIMS) return fail(c, CS_EINVAL, "too many axes (%d)", k);
        memcpy(axes, a, (size_t)k * sizeof *a);
        *count = k;
        *given = true;
        return CS_OK;
    }
    if (in_shape(c, idx)) {
        *given = true;
        return const_ints(c, idx, "axes", axes, CS_MAX_DIMS, count);
    }
    return CS_OK;
}

static cs_status need_inputs(const ctx *c, int k) {
    for (int i = 0; i < k; i++)
        if (!in_shape(c, i)) return fail(c, CS_EINVAL, "input %d is required", i);
    return CS_OK;
}

static cs_status need_dtype(const ctx *c, int idx, cs_dtype dt) {
    const cs_shape *s = in_shape(c, idx);
    if (s && s->dtype != dt)
        return fail(c, CS_EUNSUPPORTED, "input %d has element type %d; expected %d", idx,
                    (int)s->dtype, (int)dt);
    return CS_OK;
}

#define TRY(expr)                                                                                 \
    do {                                                                                          \
        cs_status st_ = (expr);                                                                   \
        if (st_ != CS_OK) return st_;                                                             \
    } while (0)

/* ---- strided iteration ------------------------------------------------- *
 * An iteration space over an output shape in C order with up to three
 * operands, each with its own element strides (0 where broadcast).  Dims of
 * extent 1 are dropped and neighbouring dims that are contiguous for every
 * operand merged, so kernels see few, long rows. */

#define IT_MAXOPS 3

typedef struct iter {
    int nd; /* >= 1 after coalescing */
    int nops;
    int64_t dims[CS_MAX_DIMS];
    int64_t st[IT_MAXOPS][CS_MAX_DIMS];
    int64_t rows; /* product of all dims but the last */
    int64_t len;  /* the last dim */
} iter;

static void iter_init(iter *it, int nd, const int64_t *dims, int nops,
                      int64_t st[][CS_MAX_DIMS]) {
    it->nops = nops;
    int k = 0;
    for (int d = 0; d < nd; d++) {
        if (dims[d] == 1) continue;
        if (k > 0) {
            bool merge = true;
            for (int o = 0; o < nops; o++)
                if (it->st[o][k - 1] != st[o][d] * dims[d]) merge = false;
            if (merge) {
                it->dims[k - 1] *= dims[d];
                for (int o = 0; o < nops; o++) it->st[o][k - 1] = st[o][d];
                continue;
            }
        }
        it->dims[k] = dims[d];
        for (int o = 0; o < nops; o++) it->st[o][k] = st[o][d];
        k++;
    }
    if (k == 0) {
        it->dims[0] = 1;
        for (int o = 0; o < nops; o++) it->st[o][0] = 0;
        k = 1;
    }
    it->nd = k;
    it->len = it->dims[k - 1];
    it->rows = 1;
    for (int d = 0; d < k - 1; d++) it->rows *= it->dims[d];
}

/* Moves the row counters one row on, keeping each operand's offset. */
static void iter_next(const iter *it, int64_t *idx, int64_t *off) {
    for (int d = it->nd - 2; d >= 0; d--) {
        for (int o = 0; o < it->nops; o++) off[o] += it->st[o][d];
        if (++idx[d] < it->dims[d]) return;
        idx[d] = 0;
        for (int o = 0; o < it->nops; o++) off[o] -= it->st[o][d] * it->dims[d];
    }
}

static void contiguous_strides(const cs_shape *s, int64_t *st) {
    int64_t acc = 1;
    for (int d = s->ndim - 1; d >= 0; d--) {
        st[d] = acc;
        acc *= s->dims[d];
    }
}

/* Strides of `s` aligned right against an output of rank `nd`, zero where
 * `s` is broadcast. */
static void bcast_strides(const cs_shape *s, int nd, const int64_t *odims, int64_t *st) {
    int64_t own[CS_MAX_DIMS];
    contiguous_strides(s, own);
    int lead = nd - s->ndim;
    for (int d = 0; d < nd; d++) {
        int sd = d - lead;
        st[d] = (sd < 0 || (s->dims[sd] == 1 && odims[d] != 1)) ? 0 : own[sd];
    }
}

/* Copies a strided view of src (base offset applied by the caller) into a
 * dense dst. */
static void strided_copy(void *dst, const void *src, size_t es, int nd, const int64_t *dims,
                         const int64_t *sst) {
    int64_t st[1][CS_MAX_DIMS];
    for (int d = 0; d < nd; d++) st[0][d] = sst[d];
    iter it;
    iter_init(&it, nd, dims, 1, st);
    int64_t idx[CS_MAX_DIMS] = {0}, off[1] = {0};
    char *o = dst;
    const char *s = src;
    int64_t ss = it.st[0][it.nd - 1], len = it.len;
    for (int64_t r = 0; r < it.rows; r++, o += len * (int64_t)es) {
        const char *p = s + off[0] * (int64_t)es;
        if (ss == 1) {
            memcpy(o, p, (size_t)len * es);
        } else if (es == 4) {
            for (int64_t i = 0; i < len; i++) memcpy(o + 4 * i, p + 4 * i * ss, 4);
        } else if (es == 8) {
            for (int64_t i = 0; i < len; i++) memcpy(o + 8 * i, p + 8 * i * ss, 8);
        } else {
            for (int64_t i = 0; i < len; i++)
                memcpy(o + (int64_t)es * i, p + (int64_t)es * i * ss, es);
        }
        iter_next(&it, idx, off);
    }
}

/* ---- activations --------------------------------------------------------- */

/* Sum in double with independent partial sums: accurate, and the separate
 * chains keep the adder busy where one running total would serialise. */
static double sum_f32(const float *x, int64_t n) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += x[i];
        s1 += x[i + 1];
        s2 += x[i + 2];
        s3 += x[i + 3];
    }
    for (; i < n; i++) s0 += x[i];
    return (s0 + s1) + (s2 + s3);
}

static float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

void cs_act_apply(const cs_fused_act *a, float *x, int64_t n) {
    switch (a->kind) {
    case CS_ACT_NONE: break;
    case CS_ACT_RELU:
        for (int64_t i = 0; i < n; i++) x[i] = x[i] < 0.0f ? 0.0f : x[i];
        break;
    case CS_ACT_CLIP:
        for (int64_t i = 0; i < n; i++)
            x[i] = x[i] < a->alpha ? a->alpha : (x[i] > a->beta ? a->beta : x[i]);
        break;
    case CS_ACT_LEAKYRELU:
        for (int64_t i = 0; i < n; i++) x[i] = x[i] < 0.0f ? a->alpha * x[i] : x[i];
        break;
    case CS_ACT_SIGMOID:
        for (int64_t i = 0; i < n; i++) x[i] = sigmoidf(x[i]);
        break;
    case CS_ACT_HARDSIGMOID:
        for (int64_t i = 0; i < n; i++) x[i] = fmaxf(0.0f, fminf(1.0f, a->alpha * x[i] + a->beta));
        break;
    case CS_ACT_HARDSWISH:
        for (int64_t i = 0; i < n; i++) x[i] = x[i] * fmaxf(0.0f, fminf(6.0f, x[i] + 3.0f)) / 6.0f;
        break;
    case CS_ACT_TANH:
        for (int64_t i = 0; i < n; i++) x[i] = tanhf(x[i]);
        break;
    case CS_ACT_GELU_ERF:
        for (int64_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * INV_SQRT2));
        break;
    case CS_ACT_SWISH:
        for (int64_t i = 0; i < n; i++) x[i] = x[i] * sigmoidf(x[i]);
        break;
    }
}

/* Residual input (passed after the regular inputs), then fused activations. */
static cs_status apply_fused(const ctx *c, const cs_shape *out, float *o) {
    const cs_node *n = c->n;
    int64_t cnt = numel(out);
    if (n->sum_input >= 0) {
        const cs_shape *s = c->in[n->ninputs];
        const float *a = c->in_data ? c->in_data[n->ninputs] : NULL;
        if (!s || !a || s->dtype != CS_DT_FLOAT || numel(s) != cnt)
            return fail(c, CS_EINVAL, "fused sum input must be a float tensor of %lld elements",
                        (long long)cnt);
        for (int64_t i = 0; i < cnt; i++) o[i] += a[i];
    }
    for (int k = 0; k < n->nfused && k < CS_MAX_FUSED; k++) cs_act_apply(&n->fused[k], o, cnt);
    return CS_OK;
}

static bool has_fused(const cs_node *n) { return n->sum_input >= 0 || n->nfused > 0; }

/* ---- elementwise: inference ---------------------------------------------- */

static cs_status bcast_shape(const ctx *c, const cs_shape *const *s, int k, cs_shape *out) {
    int nd = 0;
    for (int i = 0; i < k; i++) nd = s[i]->ndim > nd ? s[i]->ndim : nd;
    out->ndim = nd;
    for (int d = 0; d < nd; d++) {
        int64_t r = 1;
        bool unknown = false;
        for (int i = 0; i < k; i++) {
            int sd = d - (nd - s[i]->ndim);
            if (sd < 0) continue;
            int64_t v = s[i]->dims[sd];
            if (v == 1) continue;
            if (v < 0) {
                unknown = true;
                continue;
            }
            if (r != 1 && r != v) {
                char a[96], b[96];
                return fail(c, CS_EINVAL, "cannot broadcast shapes %s and %s",
                            cs_shape_str(s[0], a, sizeof a), cs_shape_str(s[i], b, sizeof b));
            }
            r = v;
        }
        /* An unknown dim against 1s stays unknown; against n it must be n
         * (or 1), so n is right either way. */
        out->dims[d] = (r == 1 && unknown) ? -1 : r;
    }
    return CS_OK;
}

static cs_status infer_binary(const ctx *c, cs_shape *out) {
    TRY(need_inputs(c, 2));
    const cs_shape *s[2] = {in_shape(c, 0), in_shape(c, 1)};
    if (c->n->op != CS_OP_POW && s[0]->dtype != s[1]->dtype)
        return fail(c, CS_EINVAL, "operand element types differ (%d vs %d)", (int)s[0]->dtype,
                    (int)s[1]->dtype);
    TRY(bcast_shape(c, s, 2, &out[0]));
    out[0].dtype = c->n->op == CS_OP_EQUAL ? CS_DT_BOOL : s[0]->dtype;
    return CS_OK;
}

static cs_status infer_where(const ctx *c, cs_shape *out) {
    TRY(need_inputs(c, 3));
    const cs_shape *s[3] = {in_shape(c, 0), in_shape(c, 1), in_shape(c, 2)};
    if (s[1]->dtype != s[2]->dtype)
        return fail(c, CS_EINVAL, "X and Y element types differ (%d vs %d)", (int)s[1]->dtype,
                    (int)s[2]->dtype);
    TRY(bcast_shape(c, s, 3, &out[0]));
    out[0].dtype = s[1]->dtype;
    return CS_OK;
}

static cs_status infer_unary(const ctx *c, cs_shape *out) {
    TRY(need_inputs(c, 1));
    out[0] = *in_shape(c, 0);
    if (c->n->op == CS_OP_CAST) {
        int64_t to = cs_attr_int(c->n, "to", 0);
        if (cs_dtype_size((cs_dtype)to) == 0)
            return fail(c, CS_EUNSUPPORTED, "cannot cast to element type %lld", (long long)to);
        out[0].dtype = (cs_dtype)to;
    }
    /* Dropout's optional mask output. */
    for (int i = 1; i < c->n->noutputs; i++) {
        out[i] = out[0];
        out[i].dtype = CS_DT_BOOL;
    }
    return CS_OK;
}

/* ---- elementwise: kernels ------------------------------------------------ */

typedef void (*row_fn)(int64_t len, const void *a, int64_t sa, const void *b, int64_t sb,
                       void *o);

/* Row kernels for every (op, type) pair: the common stride patterns get
 * their own loop so the compiler can vectorise them. */
#define ROW_KERNEL(NAME, T, TO, EXPR)                                                            \
    static void NAME(int64_t len, const void *pa, int64_t sa, const void *pb, int64_t sb,        \
                     void *po) {                                                                 \
        const T *a = pa, *b = pb;                                                                \
        TO *o = po;                                                                              \
        if (sa == 1 && sb == 1) {                                                                \
            for (int64_t i = 0; i < len; i++) {                                                  \
                T x = a[i], y = b[i];                                                            \
                o[i] = (EXPR);                                                                   \
            }                                                                                    \
        } else if (sa == 1 && sb == 0) {                                                         \
            T y = b[0];                                                                          \
            for (int64_t i = 0; i < len; i++) {                                                  \
                T x = a[i];                                                                      \
                o[i] = (EXPR);                                                                   \
            }                                                                                    \
        } else if (sa == 0 && sb == 1) {                                                         \
            T x = a[0];                                                                          \
            for (int64_t i = 0; i < len; i++) {                                                  \
                T y = b[i];                                                                      \
                o[i] = (EXPR);                                                                   \
            }                                                                                    \
        } else {                                                                                 \
            for (int64_t i = 0; i < len; i++) {                                                  \
                T x = a[i * sa], y = b[i * sb];                                                  \
                o[i] = (EXPR);                                                                   \
            }                                                                                    \
        }                                                                                        \
    }

/* Signed overflow is undefined in C; integer shape arithmetic wraps instead. */
#define WRAP(op, x, y) ((int64_t)((uint64_t)(x)op(uint64_t)(y)))
#define WRAP32(op, x, y) ((int32_t)((uint32_t)(x)op(uint32_t)(y)))

static int64_t idiv64(int64_t x, int64_t y) {
    if (y == 0) return 0;
    if (y == -1) return WRAP(-, 0, x);
    return x / y;
}

static int32_t idiv32(int32_t x, int32_t y) {
    if (y == 0) return 0;
    if (y == -1) return WRAP32(-, 0, x);
    return x / y;
}

static int64_t ipow64(int64_t x, int64_t y) {
    if (y < 0) return x == 1 ? 1 : (x == -1 ? ((y & 1) ? -1 : 1) : 0);
    uint64_t r = 1, b = (uint64_t)x;
    for (; y; y >>= 1, b *= b)
        if (y & 1) r *= b;
    return (int64_t)r;
}

ROW_KERNEL(add_f32, float, float, x + y)
ROW_KERNEL(sub_f32, float, float, x - y)
ROW_KERNEL(mul_f32, float, float, x *y)
ROW_KERNEL(div_f32, float, float, x / y)
ROW_KERNEL(pow_f32, float, float, powf(x, y))
ROW_KERNEL(sq_f32, float, float, ((void)y, x * x))
ROW_KERNEL(eq_f32, float, uint8_t, x == y)
ROW_KERNEL(add_f64, double, double, x + y)
ROW_KERNEL(sub_f64, double, double, x - y)
ROW_KERNEL(mul_f64, double, double, x *y)
ROW_KERNEL(div_f64, double, double, x / y)
ROW_KERNEL(pow_f64, double, double, pow(x, y))
ROW_KERNEL(eq_f64, double, uint8_t, x == y)
ROW_KERNEL(add_i64, int64_t, int64_t, WRAP(+, x, y))
ROW_KERNEL(sub_i64, int64_t, int64_t, WRAP(-, x, y))
ROW_KERNEL(mul_i64, int64_t, int64_t, WRAP(*, x, y))
ROW_KERNEL(div_i64, int64_t, int64_t, idiv64(x, y))
ROW_KERNEL(pow_i64, int64_t, int64_t, ipow64(x, y))
ROW_KERNEL(eq_i64, int64_t, uint8_t, x == y)
ROW_KERNEL(add_i32, int32_t, int32_t, WRAP32(+, x, y))
ROW_KERNEL(sub_i32, int32_t, int32_t, WRAP32(-, x, y))
ROW_KERNEL(mul_i32, int32_t, int32_t, WRAP32(*, x, y))
ROW_KERNEL(div_i32, int32_t, int32_t, idiv32(x, y))
ROW_KERNEL(eq_i32, int32_t, uint8_t, x == y)
ROW_KERNEL(eq_u8, uint8_t, uint8_t, x == y)

static row_fn pick_row_fn(cs_op op, cs_dtype t) {
    switch (t) {
    case CS_DT_FLOAT:
        switch (op) {
        case CS_OP_ADD: return add_f32;
        case CS_OP_SUB: return sub_f32;
        case CS_OP_MUL: return mul_f32;
        case CS_OP_DIV: return div_f32;
        case CS_OP_POW: return pow_f32;
        case CS_OP_EQUAL: return eq_f32;
        default: return NULL;
        }
    case CS_DT_DOUBLE:
        switch (op) {
        case CS_OP_ADD: return add_f64;
        case CS_OP_SUB: return sub_f64;
        case CS_OP_MUL: return mul_f64;
        case CS_OP_DIV: return div_f64;
        case CS_OP_POW: return pow_f64;
        case CS_OP_EQUAL: return eq_f64;
        default: return NULL;
        }
    case CS_DT_INT64:
        switch (op) {
        case CS_OP_ADD: return add_i64;
        case CS_OP_SUB: return sub_i64;
        case CS_OP_MUL: return mul_i64;
        case CS_OP_DIV: return div_i64;
        case CS_OP_POW: return pow_i64;
        case CS_OP_EQUAL: return eq_i64;
        default: return NULL;
        }
    case CS_DT_INT32:
        switch (op) {
        case CS_OP_ADD: return add_i32;
        case CS_OP_SUB: return sub_i32;
        case CS_OP_MUL: return mul_i32;
        case CS_OP_DIV: return div_i32;
        case CS_OP_EQUAL: return eq_i32;
        default: return NULL;
        }
    case CS_DT_BOOL:
    case CS_DT_UINT8: return op == CS_OP_EQUAL ? eq_u8 : NULL;
    default: return NULL;
    }
}

static bool scalar_equals(const cs_shape *s, const void *d, float v) {
    return s->dtype == CS_DT_FLOAT && numel(s) == 1 && ((const float *)d)[0] == v;
}

static cs_status run_binary(const ctx *c, const cs_shape *out, void *const *od) {
    const cs_shape *a = in_shape(c, 0), *b = in_shape(c, 1);
    const void *da = in_dat(c, 0), *db = in_dat(c, 1);
    cs_op op = c->n->op;
    int64_t st[2][CS_MAX_DIMS];
    bcast_strides(a, out->ndim, out->dims, st[0]);
    bcast_strides(b, out->ndim, out->dims, st[1]);
    iter it;
    iter_init(&it, out->ndim, out->dims, 2, st);
    int64_t idx[CS_MAX_DIMS] = {0}, off[2] = {0};

    if (op == CS_OP_POW && a->dtype != b->dtype) {
        /* Mixed-type Pow (opset 12+): rare, so a generic slow path. */
        if (a->dtype != CS_DT_FLOAT && a->dtype != CS_DT_DOUBLE)
            return fail(c, CS_EUNSUPPORTED, "Pow with integer base and other exponent type");
        for (int64_t r = 0, o = 0; r < it.rows; r++) {
            for (int64_t i = 0; i < it.len; i++, o++)
                st_f(od[0], a->dtype, o,
                     pow(ld_f(da, a->dtype, off[0] + i * it.st[0][it.nd - 1]),
                         ld_f(db, b->dtype, off[1] + i * it.st[1][it.nd - 1])));
            iter_next(&it, idx, off);
        }
        return CS_OK;
    }
    row_fn fn = pick_row_fn(op, a->dtype);
    if (!fn) return fail(c, CS_EUNSUPPORTED, "element type %d not supported", (int)a->dtype);
    /* x^2 comes from decomposed LayerNorm; keep it exact and cheap. */
    if (op == CS_OP_POW && scalar_equals(b, db, 2.0f)) fn = sq_f32;
    size_t ea = cs_dtype_size(a->dtype), eo = cs_dtype_size(out->dtype);
    const char *pa = da, *pb = db;
    char *po = od[0];
    int64_t sa = it.st[0][it.nd - 1], sb = it.st[1][it.nd - 1];
    for (int64_t r = 0; r < it.rows; r++) {
        fn(it.len, pa + off[0] * (int64_t)ea, sa, pb + off[1] * (int64_t)ea, sb,
           po + r * it.len * (int64_t)eo);
        iter_next(&it, idx, off);
    }
    if (out->dtype == CS_DT_FLOAT && op != CS_OP_EQUAL) return apply_fused(c, out, od[0]);
    if (has_fused(c->n)) return fail(c, CS_EUNSUPPORTED, "fused activation on a non-float tensor");
    return CS_OK;
}

static cs_status run_where(const ctx *c, const cs_shape *out, void *const *od) {
    const cs_shape *s[3] = {in_shape(c, 0), in_shape(c, 1), in_shape(c, 2)};
    if (s[0]->dtype != CS_DT_BOOL && s[0]->dtype != CS_DT_UINT8)
        return fail(c, CS_EINVAL, "condition must be bool");
    int64_t st[3][CS_MAX_DIMS];
    for (int i = 0; i < 3; i++) bcast_strides(s[i], out->ndim, out->dims, st[i]);
    iter it;
    iter_init(&it, out->ndim, out->dims, 3, st);
    int64_t idx[CS_MAX_DIMS] = {0}, off[3] = {0};
    size_t es = cs_dtype_size(out->dtype);
    const uint8_t *cond = in_dat(c, 0);
    const char *x = in_dat(c, 1), *y = in_dat(c, 2);
    char *o = od[0];
    int nd = it.nd - 1;
    for (int64_t r = 0; r < it.rows; r++) {
        for (int64_t i = 0; i < it.len; i++, o += es) {
            bool take_x = cond[off[0] + i * it.st[0][nd]] != 0;
            const char *src = take_x ? x + (off[1] + i * it.st[1][nd]) * (int64_t)es
                                     : y + (off[2] + i * it.st[2][nd]) * (int64_t)es;
            memcpy(o, src, es);
        }
        iter_next(&it, idx, off);
    }
    return CS_OK;
}

static cs_status run_unary(const ctx *c, const cs_shape *out, void *const *od) {
    const cs_node *n = c->n;
    const cs_shape *s = in_shape(c, 0);
    const void *d = in_dat(c, 0);
    int64_t cnt = numel(s);
    if (n->op == CS_OP_IDENTITY || n->op == CS_OP_DROPOUT) {
        memmove(od[0], d, (size_t)cnt * cs_dtype_size(s->dtype));
        if (n->noutputs > 1 && od[1]) memset(od[1], 1, (size_t)cnt); /* inference: keep all */
        return CS_OK;
    }
    if (n->op == CS_OP_NEG && s->dtype == CS_DT_INT64) {
        for (int64_t i = 0; i < cnt; i++)
            ((int64_t *)od[0])[i] = WRAP(-, 0, ((const int64_t *)d)[i]);
        return CS_OK;
    }
    TRY(need_dtype(c, 0, CS_DT_FLOAT));
    const float *x = d;
    float *y = od[0];
    if (y != x) memcpy(y, x, (size_t)cnt * sizeof *y);
    cs_fused_act act = {CS_ACT_NONE, 0, 0};
    switch (n->op) {
    case CS_OP_RELU: act.kind = CS_ACT_RELU; break;
    case CS_OP_SIGMOID: act.kind = CS_ACT_SIGMOID; break;
    case CS_OP_TANH: act.kind = CS_ACT_TANH; break;
    case CS_OP_HARDSWISH: act.kind = CS_ACT_HARDSWISH; break;
    case CS_OP_LEAKYRELU:
        act = (cs_fused_act){CS_ACT_LEAKYRELU, cs_attr_float(n, "alpha", 0.01f), 0};
        break;
    case CS_OP_HARDSIGMOID:
        act = (cs_fused_act){CS_ACT_HARDSIGMOID, cs_attr_float(n, "alpha", 0.2f),
                             cs_attr_float(n, "beta", 0.5f)};
        break;
    case CS_OP_CLIP: {
        /* Opset 11+: optional min/max inputs; opset 6 used attributes. */
        float lo = cs_attr_float(n, "min", -INFINITY), hi = cs_attr_float(n, "max", INFINITY);
        if (in_shape(c, 1) && numel(in_shape(c, 1)) > 0)
            lo = (float)ld_f(in_dat(c, 1), in_shape(c, 1)->dtype, 0);
        if (in_shape(c, 2) && numel(in_shape(c, 2)) > 0)
            hi = (float)ld_f(in_dat(c, 2), in_shape(c, 2)->dtype, 0);
        act = (cs_fused_act){CS_ACT_CLIP, lo, hi};
        break;
    }
    case CS_OP_GELU:
        if (strcmp(cs_attr_string(n, "approximate", "none"), "tanh") == 0) {
            for (int64_t i = 0; i < cnt; i++) {
                float v = y[i];
                y[i] = 0.5f * v * (1.0f + tanhf(0.7978845608f * (v + 0.044715f * v * v * v)));
            }
        } else {
            act.kind = CS_ACT_GELU_ERF;
        }
        break;
    case CS_OP_ERF:
        for (int64_t i = 0; i < cnt; i++) y[i] = erff(y[i]);
        break;
    case CS_OP_SQRT:
        for (int64_t i = 0; i < cnt; i++) y[i] = sqrtf(y[i]);
        break;
    case CS_OP_EXP:
        for (int64_t i = 0; i < cnt; i++) y[i] = expf(y[i]);
        break;
    case CS_OP_NEG:
        for (int64_t i = 0; i < cnt; i++) y[i] = -y[i];
        break;
    case CS_OP_RECIPROCAL:
        for (int64_t i = 0; i < cnt; i++) y[i] = 1.0f / y[i];
        break;
    default: return fail(c, CS_EINTERNAL, "not a unary op");
    }
    cs_act_apply(&act, y, cnt);
    return CS_OK;
}

static cs_status run_cast(const ctx *c, const cs_shape *out, void *const *od) {
    const cs_shape *s = in_shape(c, 0);
    const void *d = in_dat(c, 0);
    int64_t cnt = numel(s);
    cs_dtype from = s->dtype, to = out->dtype;
    if (cs_dtype_size(from) == 0) return fail(c, CS_EUNSUPPORTED, "cannot cast from type %d", from);
    if (from == to) {
        memmove(od[0], d, (size_t)cnt * cs_dtype_size(to));
    } else if (to == CS_DT_FLOAT || to == CS_DT_DOUBLE) {
        for (int64_t i = 0; i < cnt; i++) st_f(od[0], to, i, ld_f(d, from, i));
    } else if (to == CS_DT_BOOL && !is_int_type(from)) {
        for (int64_t i = 0; i < cnt; i++) ((uint8_t *)od[0])[i] = ld_f(d, from, i) != 0;
    } else {
        for (int64_t i = 0; i < cnt; i++) st_i(od[0], to, i, ld_i(d, from, i));
    }
    return CS_OK;
}

/* ---- conv / pool geometry ------------------------------------------------ */

/* Spatial geometry, always 3-D: lower ranks are right-aligned and the unused
 * leading dims have extent 1, so one kernel serves Conv1d/2d/3d. */
typedef struct geom {
    int nsp;
    int64_t in[3], out[3], k[3], s[3], d[3], pb[3], pe[3];
} geom;

static cs_status geom_make(const ctx *c, const cs_shape *x, const int64_t *kernel, bool ceil_mode,
                           geom *g) {
    const cs_node *n = c->n;
    int nsp = x->ndim - 2;
    if (nsp < 1 || nsp > 3)
        return fail(c, CS_EUNSUPPORTED, "input rank %d not supported (need 3 to 5)", x->ndim);
    const int64_t *strides, *dil, *pads;
    int ns = cs_attr_ints(n, "strides", &strides), nd = cs_attr_ints(n, "dilations", &dil),
        np = cs_attr_ints(n, "pads", &pads);
    if ((ns && ns != nsp) || (nd && nd != nsp) || (np && np != 2 * nsp))
        return fail(c, CS_EINVAL, "strides/dilations/pads do not match %d spatial dims", nsp);
    const char *ap = cs_attr_string(n, "auto_pad", "NOTSET");
    g->nsp = nsp;
    for (int i = 0; i < 3; i++) {
        g->in[i] = g->out[i] = g->k[i] = g->s[i] = g->d[i] = 1;
        g->pb[i] = g->pe[i] = 0;
    }
    for (int i = 0; i < nsp; i++) {
        int j = 3 - nsp + i;
        g->in[j] = x->dims[2 + i];
        g->k[j] = kernel[i];
        g->s[j] = ns ? strides[i] : 1;
        g->d[j] = nd ? dil[i] : 1;
        g->pb[j] = np ? pads[i] : 0;
        g->pe[j] = np ? pads[nsp + i] : 0;
        if (g->k[j] < 1 || g->s[j] < 1 || g->d[j] < 1 || g->pb[j] < 0 || g->pe[j] < 0 ||
            g->k[j] > SANE_MAX || g->s[j] > SANE_MAX || g->d[j] > SANE_MAX / g->k[j] ||
            g->pb[j] > SANE_MAX || g->pe[j] > SANE_MAX)
            return fail(c, CS_EINVAL, "bad kernel/stride/dilation/pad on spatial dim %d", i);
        int64_t in = g->in[j], eff = (g->k[j] - 1) * g->d[j] + 1, s = g->s[j];
        if (in < 0) {
            g->out[j] = -1;
            continue;
        }
        if (strcmp(ap, "SAME_UPPER") == 0 || strcmp(ap, "SAME_LOWER") == 0) {
            int64_t out = (in + s - 1) / s;
            int64_t total = (out - 1) * s + eff - in;
            if (total < 0) total = 0;
            g->pb[j] = ap[5] == 'U' ? total / 2 : total - total / 2;
            g->pe[j] = total - g->pb[j];
            g->out[j] = out;
            continue;
        }
        if (strcmp(ap, "VALID") == 0) g->pb[j] = g->pe[j] = 0;
        else if (strcmp(ap, "NOTSET") != 0)
            return fail(c, CS_EINVAL, "unknown auto_pad '%s'", ap);
        int64_t span = in + g->pb[j] + g->pe[j] - eff;
        if (span < 0)
            return fail(c, CS_EINVAL, "kernel extent %lld exceeds padded input %lld on dim %d",
                        (long long)eff, (long long)(in + g->pb[j] + g->pe[j]), i);
        int64_t out = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
        /* torch (and ONNX since): the last window must start inside the
         * input or the left padding, never wholly in the right padding. */
        if (ceil_mode && (out - 1) * s >= in + g->pb[j]) out--;
        g->out[j] = out;
    }
    return CS_OK;
}

static void geom_out_shape(const geom *g, const cs_shape *x, int64_t channels, cs_shape *out) {
    out->dtype = x->dtype;
    out->ndim = x->ndim;
    out->dims[0] = x->dims[0];
    out->dims[1] = channels;
    for (int i = 0; i < g->nsp; i++) out->dims[2 + i] = g->out[3 - g->nsp + i];
}

static cs_status conv_kernel_shape(const ctx *c, const cs_shape *x, const cs_shape *w,
                                   int64_t *k) {
    int nsp = x->ndim - 2;
    const int64_t *ks;
    int nk = cs_attr_ints(c->n, "kernel_shape", &ks);
    if (w->ndim != x->ndim)
        return fail(c, CS_EINVAL, "weight rank %d does not match input rank %d", w->ndim, x->ndim);
    if (nk && nk != nsp) return fail(c, CS_EINVAL, "kernel_shape has %d dims", nk);
    for (int i = 0; i < nsp && i < 3; i++) {
        k[i] = nk ? ks[i] : w->dims[2 + i];
        if (k[i] < 0) return fail(c, CS_EINVAL, "kernel size unknown");
    }
    return CS_OK;
}

static cs_status infer_conv(const ctx *c, cs_shape *out) {
    TRY(need_inputs(c, 2));
    const cs_shape *x = in_shape(c, 0), *w = in_shape(c, 1), *b = in_shape(c, 2);
    if (x->ndim < 3 || x->ndim > 5) return fail(c, CS_EUNSUPPORTED, "input rank %d", x->ndim);
    int64_t k[3];
    TRY(conv_kernel_shape(c, x, w, k));
    int64_t group = cs_attr_int(c->n, "group", 1), m = w->dims[0];
    if (group < 1 || (m >= 0 && m % group != 0))
        return fail(c, CS_EINVAL, "group %lld does not divide %lld output channels",
                    (long long)group, (long long)m);
    if (x->dims[1] >= 0 && w->dims[1] >= 0 && x->dims[1] != w->dims[1] * group)
        return fail(c, CS_EINVAL, "input has %lld channels; weight expects %lld x group %lld",
                    (long long)x->dims[1], (long long)w->dims[1], (long long)group);
    if (b && (b->ndim != 1 || (b->dims[0] >= 0 && m >= 0 && b->dims[0] != m)))
        return fail(c, CS_EINVAL, "bias must be 1-D with %lld elements", (long long)m);
    geom g;
    TRY(geom_make(c, x, k, false, &g));
    geom_out_shape(&g, x, m, &out[0]);
    return CS_OK;
}

static cs_status run_conv(const ctx *c, const cs_shape *out, void *const *od) {
    const cs_shape *x = in_shape(c, 0), *w = in_shape(c, 1);
    TRY(need_dtype(c, 0, CS_DT_FLOAT));
    TRY(need_dtype(c, 1, CS_DT_FLOAT));
    TRY(need_dtype(c, 2, CS_DT_FLOAT));
    int64_t k[3];
    TRY(conv_kernel_shape(c, x, w, k));
    geom g;
    TRY(geom_make(c, x, k, false, &g));
    const float *X = in_dat(c, 0), *W = in_dat(c, 1), *B = in_dat(c, 2);
    float *Y = od[0];
    int64_t N = x->dims[0], C = x->dims[1], M = w->dims[0];
    int64_t G = cs_attr_int(c->n, "group", 1), Cg = C / G, Mg = M / G;
    int64_t isz = g.in[0] * g.in[1] * g.in[2], osz = g.out[0] * g.out[1] * g.out[2];
    int64_t ksz = g.k[0] * g.k[1] * g.k[2];
    for (int64_t nb = 0; nb < N; nb++)
        for (int64_t m = 0; m < M; m++) {
            int64_t grp = m / Mg;
            float *yo = Y + (nb * M + m) * osz;
            for (int64_t o0 = 0; o0 < g.out[0]; o0++)
                for (int64_t o1 = 0; o1 < g.out[1]; o1++)
                    for (int64_t o2 = 0; o2 < g.out[2]; o2++) {
                        double acc = B ? B[m] : 0.0;
                        for (int64_t ci = 0; ci < Cg; ci++) {
                            const float *xc = X + (nb * C + grp * Cg + ci) * isz;
                            const float *wc = W + (m * Cg + ci) * ksz;
                            for (int64_t k0 = 0; k0 < g.k[0]; k0++) {
                                int64_t i0 = o0 * g.s[0] - g.pb[0] + k0 * g.d[0];
                                if (i0 < 0 || i0 >= g.in[0]) continue;
                                for (int64_t k1 = 0; k1 < g.k[1]; k1++) {
                                    int64_t i1 = o1 * g.s[1] - g.pb[1] + k1 * g.d[1];
                                    if (i1 < 0 || i1 >= g.in[1]) continue;
                                    const float *xr = xc + (i0 * g.in[1] + i1) * g.in[2];
                                    const float *wr = wc + (k0 * g.k[1] + k1) * g.k[2];
                                    for (int64_t k2 = 0; k2 < g.k[2]; k2++) {
                                        int64_t i2 = o2 * g.s[2] - g.pb[2] + k2 * g.d[2];
                                        if (i2 < 0 || i2 >= g.in[2]) continue;
                                        acc += (double)xr[i2] * wr[k2];
                                    }
                                }
                            }
                        }
                        yo[(o0 * g.out[1] + o1) * g.out[2] + o2] = (float)acc;
                    }
        }
    return apply_fused(c, out, Y);
}

static cs_status pool_kernel(const ctx *c, const cs_shape *x, int64_t *k) {
    const int64_t *ks;
    int nk = cs_attr_ints(c->n, "kernel_shape", &ks);
    if (nk != x->ndim - 2 || nk < 1 || nk > 3)
        return fail(c, CS_EINVAL, "kernel_shape must have %d entries", x->ndim - 2);
    memcpy(k, ks, (size_t)nk * sizeof *k);
    return CS_OK;
}

static cs_status infer_pool(const ctx *c, cs_shape *out) {
    TRY(need_inputs(c, 1));
    const cs_shape *x = in_shape(c, 0);
    if (x->ndim < 3 || x->ndim > 5) return fail(c, CS_EUNSUPPORTED, "input rank %d", x->ndim);
    int64_t k[3];
    TRY(pool_kernel(c, x, k));
    if (c->n->op == CS_OP_AVGPOOL && cs_node_attr(c->n, "dilations")) {
        const int64_t *d;
        int nd = cs_attr_ints(c->n, "dilations", &d);
        for (int i = 0; i < nd; i++)
            if (d[i] != 1) return fail(c, CS_EUNSUPPORTED, "dilated AveragePool");
    }
    geom g;
    TRY(geom_make(c, x, k, cs_attr_int(c->n, "ceil_mode", 0) != 0, &g));
    geom_out_shape(&g, x, x->dims[1], &out[0]);
    if (c->n->noutputs > 1) { /* MaxPool Indices */
        out[1] = out[0];
        out[1].dtype = CS_DT_INT64;
    }
    return CS_OK;
}

static cs_status run_pool(const ctx *c, const cs_shape *out, void *const *od) {
    const cs_shape *x = in_shape(c, 0);
    TRY(need_dtype(c, 0, CS_DT_FLOAT));
    int64_t k[3];
    TRY(pool_kernel(c, x, k));
    geom g;
    TRY(geom_make(c, x, k, cs_attr_int(c->n, "ceil_mode", 0) != 0, &g));
    bool is_max = c->n->op == CS_OP_MAXPOOL;
    bool include_pad = cs_attr_int(c->n, "count_include_pad", 0) != 0;
    const float *X = in_dat(c, 0);
    float *Y = od[0];
    int64_t *I = c->n->noutputs > 1 ? od[1] : NULL;
    int64_t planes = x->dims[0] * x->dims[1];
    int64_t isz = g.in[0] * g.in[1] * g.in[2];
    float *y = Y;
    for (int64_t p = 0; p < planes; p++) {
        const float *xp = X + p * isz;
        for (int64_t o0 = 0; o0 < g.out[0]; o0++)
            for (int64_t o1 = 0; o1 < g.out[1]; o1++)
                for (int64_t o2 = 0; o2 < g.out[2]; o2++, y++) {
                    int64_t o[3] = {o0, o1, o2}, lo[3], hi[3], span = 1, valid = 1;
                    for (int j = 0; j < 3; j++) {
                        lo[j] = o[j] * g.s[j] - g.pb[j];
                        /* torch's divisor counts padding but not the ceil_mode
                         * overhang past the right padding. */
                        int64_t end = lo[j] + (g.k[j] - 1) * g.d[j] + 1;
                        int64_t pend = end < g.in[j] + g.pe[j] ? end : g.in[j] + g.pe[j];
                        span *= pend - lo[j];
                        hi[j] = end < g.in[j] ? end : g.in[j];
                        int64_t vlo = lo[j] < 0 ? 0 : lo[j];
                        valid *= hi[j] > vlo ? hi[j] - vlo : 0;
                    }
                    double acc = 0;
                    float best = -INFINITY;
                    int64_t best_i = -1;
                    for (int64_t i0 = lo[0]; i0 < hi[0]; i0 += g.d[0]) {
                        if (i0 < 0) continue;
                        for (int64_t i1 = lo[1]; i1 < hi[1]; i1 += g.d[1]) {
                            if (i1 < 0) continue;
                            for (int64_t i2 = lo[2]; i2 < hi[2]; i2 += g.d[2]) {
                                if (i2 < 0) continue;
                                int64_t at = (i0 * g.in[1] + i1) * g.in[2] + i2;
                                float v = xp[at];
                                acc += v;
                                if (v > best || best_i < 0) best = v, best_i = p * isz + at;
                            }
                        }
                    }
                    if (is_max) {
                        *y = best;
                        if (I) I[y - Y] = best_i;
                    } else {
                        int64_t div = include_pad ? span : valid;
                        *y = div > 0 ? (float)(acc / (double)div) : 0.0f;
                    }
                }
    }
    return CS_OK;
}

static cs_status infer_global_pool(const ctx *c, cs_shape *out) {
    TRY(need_inputs(c, 1));
    const cs_shape *x = in_shape(c, 0);
    if (x->ndim < 2) return fail(c, CS_EINVAL, "input rank %d < 2", x->ndim);
    out[0] = *x;
    for (int i = 2; i < x->ndim; i++) out[0].dims[i] = 1;
    return CS_OK;
}

static cs_status run_global_pool(const ctx *c, const cs_shape *out, void *const *od) {
    const cs_shape *x = in_shape(c, 0);
    TRY(need_dtype(c, 0, CS_DT_FLOAT));
    const float *X = in_dat(c, 0);
    float *Y = od[0];
    int64_t planes = x->dims[0] * x->dims[1], sz = dims_prod(x->dims, 2, x->ndim);
    bool is_max = c->n->op == CS_OP_GLOBALMAXPOOL;
    for (int64_t p = 0; p < planes; p++) {
        const float *xp = X + p * sz;
        if (is_max) {
            float m = sz > 0 ? xp[0] : -INFINITY;
            for (int64_t i = 1; i < sz; i++) m = xp[i] > m ? xp[i] : m;
            Y[p] = m;
        } else {
            Y[p] = sz > 0 ? (float)(sum_f32(xp, sz) / (double)sz) : 0.0f;
        }
    }
    return CS_OK;
}

/* ---- Gemm / MatMul --------------------------------------------------------- */

static cs_status infer_gemm(const ctx *c, cs_shape *out) {
    TRY(need_inputs(c, 2));
    const cs_shape *a = in_shape(c, 0), *b = in_shape(c, 1), *cc = in_shape(c, 2);
    if (a->ndim != 2 || b->ndim != 2)
        return fail(c, CS_EINVAL, "A and B must be 2-D (got ranks %d and %d)", a->ndim, b->ndim);
    bool ta = cs_attr_int(c->n, "transA", 0), tb = cs_attr_int(c->n, "transB", 0);
    int64_t M = a->dims[ta], Ka = a->dims[!ta], Kb = b->dims[tb], N = b->dims[!tb];
    if (Ka >= 0 && Kb >= 0 && Ka != Kb)
        return fail(c, CS_EINVAL, "inner dimensions differ (%lld vs %lld)", (long long)Ka,
                    (long long)Kb);
    int64_t dims[2] = {M, N};
    shape_set(&out[0], a->dtype, 2, dims);
    if (cc) {
        /* C broadcasts unidirectionally to MxN. */
        if (cc->ndim > 2) return fail(c, CS_EINVAL, "C has rank %d", cc->ndim);
        for (int i = 0; i < cc->ndim; i++) {
            int64_t v = cc->dims[i], want = dims[2 - cc->ndim + i];
            if (v != 1 && v >= 0 && want >= 0 && v != want)
                return fail(c, CS_EINVAL, "C dim %d (%lld) does not broadcast to %lld", i,
                            (long long)v, (long long)want);
        }
    }
    return CS_OK;
}

static cs_status run_gemm(const ctx *c, const cs_shape *out, void *const *od) {
    for (int i = 0; i < 3; i++) TRY(need_dtype(c, i, CS_DT_FLOAT));
    const cs_shape *a = in_shape(c, 0), *cs = in_shape(c, 2);
    bool ta = cs_attr_int(c->n, "transA", 0), tb = cs_attr_int(c->n, "transB", 0);
    float alpha = cs_attr_float(c->n, "alpha", 1.0f), beta = cs_attr_float(c->n, "beta", 1.0f);
    int64_t M = out->dims[0], N = out->dims[1], K = a->dims[!ta];
    const float *A = in_dat(c, 0), *B = in_dat(c, 1), *C = in_dat(c, 2);
    float *Y = od[0];
    /* Element (i,k) of op(A) and (k,j) of op(B), whatever the transposes. */
    int64_t ai = ta ? 1 : K, ak = ta ? M : 1, bk = tb ? 1 : N, bj = tb ? K : 1;
    int64_t ci = 0, cj = 0;
    if (cs && cs->ndim >= 1) {
        cj = cs->dims[cs->ndim - 1] == 1 ? 0 : 1;
        if (cs->ndim == 2) ci = cs->dims[0] == 1 ? 0 : cs->dims[1];
    }
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++) acc += (double)A[i * ai + k * ak] * B[k * bk + j * bj];
            float v = alpha * (float)acc;
            if (C) v += beta * C[i * ci + j * cj];
            Y[i * N + j] = v;
        }
    return apply_fused(c, out, Y);
}

static cs_status infer_matmul(const ctx *c, cs_shape *out) {
    TRY(need_inputs(c, 2));
    cs_shape a = *in_shape(c, 0), b = *in_shape(c, 1);
    if (a.ndim < 1 || b.ndim < 1) return fail(c, CS_EINVAL, "operands must have rank >= 1");
    if (a.dtype != b.dtype) return fail(c, CS_EINVAL, "operand element types differ");
    bool a1 = a.ndim == 1, b1 = b.ndim == 1;
    if (a1) a.ndim = 2, a.dims[1] = a.dims[0], a.dims[0] = 1;
    if (b1) b.ndim = 2, b.dims[1] = 1;
    int64_t K1 = a.dims[a.ndim - 1], K2 = b.dims[b.ndim - 2];
    if (K1 >= 0 && K2 >= 0 && K1 != K2)
        return fail(c, CS_EINVAL, "inner dimensions differ (%lld vs %lld)", (long long)K1,
                    (long long)K2);
    cs_shape ba = a, bb = b, batch;
    ba.ndim -= 2, bb.ndim -= 2;
    const cs_shape *bs[2] = {&ba, &bb};
    TRY(bcast_shape(c, bs, 2, &batch));
    int nd = batch.ndim;
    out[0] = batch;
    out[0].dtype = a.dtype;
    if (!a1) out[0].dims[nd++] = a.dims[a.ndim - 2];
    if (!b1) {
        if (nd >= CS_MAX_DIMS) return fail(c, CS_EUNSUPPORTED, "result rank too large");
        out[0].dims[nd++] = b.dims[b.ndim - 1];
    }
    out[0].ndim = nd;
    return CS_OK;
}

static cs_status run_matmul(const ctx *c, const cs_shape *out, void *const *od) {
    TRY(need_dtype(c, 0, CS_DT_FLOAT));
    TRY(need_dtype(c, 1, CS_DT_FLOAT));
    cs_shape a = *in_shape(c, 0), b = *in_shape(c, 1);
    if (a.ndim == 1) a.ndim = 2, a.dims[1] = a.dims[0], a.dims[0] = 1;
    if (b.ndim == 1) b.ndim = 2, b.dims[1] = 1;
    int64_t M = a.dims[a.ndim - 2], K = a.dims[a.ndim - 1], N = b.dims[b.ndim - 1];
    /* Batch iteration: broadcast batch dims, strides in whole matrices. */
    cs_shape ba = a, bb = b, batch;
    ba.ndim -= 2, bb.ndim -= 2;
    const cs_shape *bs[2] = {&ba, &bb};
    TRY(bcast_shape(c, bs, 2, &batch));
    int64_t st[2][CS_MAX_DIMS];
    bcast_strides(&ba, batch.ndim, batch.dims, st[0]);
    bcast_strides(&bb, batch.ndim, batch.dims, st[1]);
    iter it;
    iter_init(&it, batch.ndim, batch.dims, 2, st);
    int64_t idx[CS_MAX_DIMS] = {0}, off[2] = {0};
    const float *A = in_dat(c, 0), *B = in_dat(c, 1);
    float *Y = od[0];
    int nd = it.nd - 1;
    for (int64_t r = 0; r < it.rows; r++) {
        for (int64_t l = 0; l < it.len; l++) {
            const float *am = A + (off[0] + l * it.st[0][nd]) * M * K;
            const float *bm = B + (off[1] + l * it.st[1][nd]) * K * N;
            float *ym = Y + (r * it.len + l) * M * N;
            for (int64_t i = 0; i < M; i++) {
                float *yr = ym + i * N;
                for (int64_t j = 0; j < N; j++) yr[j] = 0.0f;
                for (int64_t k = 0; k < K; k++) {
                    float av = am[i * K + k];
                    const float *br = bm + k * N;
                    for (int64_t j = 0; j < N; j++) yr[j] += av * br[j];
                }
            }
        }
        iter_next(&it, idx, off);
    }
    return apply_fused(c, out, Y);
}

/* ---- normalisation --------------------------------------------------------- */

static cs_status infer_batchnorm(const ctx *c, cs_shape *out) {
    TRY(need_inputs(c, 5));
    const cs_shape *x = in_shape(c, 0);
    if (x->ndim < 2) return fail(c, CS_EINVAL, "input rank %d < 2", x->ndim);
    for (int i = 1; i < 5; i++) {
        const cs_shape *p = in_shape(c, i);
        if (p->ndim != 1 || (p->dims[0] >= 0 && x->dims[1] >= 0 && p->dims[0] != x->dims[1]))
            return fail(c, CS_EINVAL, "parameter input %d must be 1-D with %lld elements", i,
                        (long long)x->dims[1]);
    }
    out[0] = *x;
    /* Training-mode outputs (running mean/var, saved mean/var) are [C]. */
    for (int i = 1; i < c->n->noutputs; i++) out[i] = *in_shape(c, 3);
    return CS_OK;
}

static cs_status run_batchnorm(const ctx *c, const cs_shape *out, void *const *od) {
    for (int i = 0; i < 5; i++) TRY(need_dtype(c, i, CS_DT_FLOAT));
    const cs_shape *x = in_shape(c, 0);
    const float *X = in_dat(c, 0), *sc = in_dat(c, 1), *bi = in_dat(c, 2), *mean = in_dat(c, 3),
                *var = in_dat(c, 4);
    float eps = cs_attr_float(c->n, "epsilon", 1e-5f);
    float *Y = od[0];
    int64_t N = x->dims[0], C = x->dims[1], sz = dims_prod(x->dims, 2, x->ndim);
    for (int64_t nb = 0; nb < N; nb++)
        for (int64_t ch = 0; ch < C; ch++) {
            float a = sc[ch] / sqrtf(var[ch] + eps), b = bi[ch] - mean[ch] * a;
            const float *xp = X + (nb * C + ch) * sz;
            float *yp = Y + (nb * C + ch) * sz;
            for (int64_t i = 0; i < sz; i++) yp[i] = xp[i] * a + b;
        }
    for (int i = 1; i < c->n->noutputs; i++)
        if (od[i]) memcpy(od[i], (i % 2) ? mean : var, (size_t)C * sizeof(float));
    return CS_OK;
}

static cs_status infer_layernorm(const ctx *c, cs_shape *out) {
    TRY(need_inputs(c, 2));
    const cs_shape *x = in_shape(c, 0);
    int axis = 0;
    TRY(norm_axis(c, cs_attr_int(c->n, "axis", -1), x->ndim, &axis));
    out[0] = *x;
    for (int i = 1; i < c->n->noutputs; i++) { /* Mean, InvStdDev */
        out[i] = *x;
        out[i].dtype = CS_DT_FLOAT;
        for (int d = axis; d < x->ndim; d++) out[i].dims[d] = 1;
    }
    return CS_OK;
}

static cs_status run_layernorm(const ctx *c, const cs_shape *out, void *const *od) {
    for (int i = 0; i < 3; i++) TRY(need_dtype(c, i, CS_DT_FLOAT));
    const cs_shape *x = in_shape(c, 0);
    int axis = 0;
    TRY(norm_axis(c, cs_attr_int(c->n, "axis", -1), x->ndim, &axis));
    int64_t outer = dims_prod(x->dims, 0, axis), inner = dims_prod(x->dims, axis, x->ndim);
    int64_t ns = numel(in_shape(c, 1)), nb = in_shape(c, 2) ? numel(in_shape(c, 2)) : 0;
    if ((ns != inner && ns != 1) || (nb != inner && nb > 1))
        return fail(c, CS_EUNSUPPORTED, "Scale/B must cover the normalised shape");
    float eps = cs_attr_float(c->n, "epsilon", 1e-5f);
    const float *X = in_dat(c, 0), *S = in_dat(c, 1), *B = in_dat(c, 2);
    float *Y = od[0];
    float *mo = c->n->noutputs > 1 ? od[1] : NULL, *io = c->n->noutputs > 2 ? od[2] : NULL;
    for (int64_t o = 0; o < outer; o++) {
        const float *xr = X + o * inner;
        float *yr = Y + o * inner;
        double ss = 0;
        double mean = inner ? sum_f32(xr, inner) / (double)inner : 0;
        for (int64_t i = 0; i < inner; i++) ss += (xr[i] - mean) * (xr[i] - mean);
        double inv = 1.0 / sqrt((inner ? ss / (double)inner : 0) + eps);
        for (int64_t i = 0; i < inner; i++) {
            float v = (float)((xr[i] - mean) * inv) * S[ns == 1 ? 0 : i];
            yr[i] = B ? v + B[nb == 1 ? 0 : i] : v;
        }
        if (mo) mo[o] = (float)mean;
        if (io) io[o] = (float)inv;
    }
    return CS_OK;
}

static cs_status softmax_geometry(const ctx *c, const cs_shape *x, int64_t *outer, int64_t *len,
                                  int64_t *inner) {
    /* Opset < 13 coerces to 2-D at `axis` (default 1); 13+ is per-axis
     * (default -1). */
    bool legacy = c->opset < 13;
    int axis = 0;
    if (x->ndim == 0) return fail(c, CS_EINVAL, "input must have rank >= 1");
    TRY(norm_axis(c, cs_attr_int(c->n, "axis", legacy ? 1 : -1), x->ndim, &axis));
    *outer = dims_prod(x->dims, 0, axis);
    if (legacy) {
        *len = dims_prod(x->dims, axis, x->ndim);
        *inner = 1;
    } else {
        *len = x->dims[axis];
        *inner = dims_prod(x->dims, axis + 1, x->ndim);
    }
    return CS_OK;
}

static cs_status infer_softmax(const ctx *c, cs_shape *out) {
    TRY(need_inputs(c, 1));
    int64_t o, l, i;
    TRY(softmax_geometry(c, in_shape(c, 0), &o, &l, &i));
    out[0] = *in_shape(c, 0);
    return CS_OK;
}

static cs_status run_softmax(const ctx *c, const cs_shape *out, void *const *od) {
    TRY(need_dtype(c, 0, CS_DT_FLOAT));
    int64_t outer, len, inner;
    TRY(softmax_geometry(c, in_shape(c, 0), &outer, &len, &inner));
    const float *X = in_dat(c, 0);
    float *Y = od[0];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < inner; j++) {
            const float *x = X + o * len * inner + j;
            float *y = Y + o * len * inner + j;
            float m = -INFINITY;
            for (int64_t i = 0; i < len; i++) m = x[i * inner] > m ? x[i * inner] : m;
            double s = 0;
            for (int64_t i = 0; i < len; i++) {
                float e = expf(x[i * inner] - m);
                y[i * inner] = e;
                s += e;
            }
            float r = (float)(1.0 / s);
            for (int64_t i = 0; i < len; i++) y[i * inner] *= r;
        }
    return CS_OK;
}

/* ---- reductions ------------------------------------------------------------ */

static cs_status reduce_mask(const ctx *c, const cs_shape *x, bool *red, bool *noop) {
    int64_t axes[CS_MAX_DIMS];
    int k;
    bool given;
    TRY(axes_of(c, 1, axes, &k, &given));
    *noop = false;
    if (k == 0) {
        *noop = cs_attr_int(c->n, "noop_with_empty_axes", 0) != 0;
        for (int d = 0; d < x->ndim; d++) red[d] = !*noop;
        return CS_OK;
    }
    for (int d = 0; d < x->ndim; d++) red[d] = false;
    for (int i = 0; i < k; i++) {
        int a = 0;
        TRY(norm_axis(c, axes[i], x->ndim, &a));
        if (red[a]) return fail(c, CS_EINVAL, "axis %d repeated", a);
        red[a] = true;
    }
    return CS_OK;
}

static cs_status infer_reduce(const ctx *c, cs_shape *out) {
    TRY(need_inputs(c, 1));
    const cs_shape *x = in_shape(c, 0);
    bool red[CS_MAX_DIMS], noop;
    TRY(reduce_mask(c, x, red, &noop));
    bool keep = cs_attr_int(c->n, "keepdims", 1) != 0;
    out[0].dtype = x->dtype;
    int nd = 0;
    for (int d = 0; d < x->ndim; d++) {
        if (!red[d]) out[0].dims[nd++] = x->dims[d];
        else if (keep) out[0].dims[nd++] = 1;
    }
    out[0].ndim = nd;
    return CS_OK;
}

static cs_status run_reduce(const ctx *c, const cs_shape *out, void *const *od) {
    TRY(need_dtype(c, 0, CS_DT_FLOAT));
    const cs_shape *x = in_shape(c, 0);
    bool red[CS_MAX_DIMS], noop;
    TRY(reduce_mask(c, x, red, &noop));
    const float *X = in_dat(c, 0);
    float *Y = od[0];
    int64_t total = numel(x), ocount = numel(out);
    if (noop) {
        memmove(Y, X, (size_t)total * sizeof *Y);
        return CS_OK;
    }
    int64_t rcount = 1;
    for (int d = 0; d < x->ndim; d++)
        if (red[d]) rcount *= x->dims[d];
    float scale = c->n->op == CS_OP_REDUCEMEAN && rcount > 0 ? 1.0f / (float)rcount : 1.0f;
    /* Trailing axes only (the usual case): contiguous runs, double sums. */
    int first = x->ndim;
    while (first > 0 && (red[first - 1] || x->dims[first - 1] == 1)) first--;
    bool trailing = true;
    for (int d = 0; d < first; d++)
        if (red[d] && x->dims[d] != 1) trailing = false;
    if (trailing && ocount > 0) {
        int64_t run = total / ocount;
        for (int64_t o = 0; o < ocount; o++) {
            Y[o] = (float)sum_f32(X + o * run, run) * scale;
        }
        return CS_OK;
    }
    /* General case: walk the input in order; the output has stride 0 along
     * reduced axes. */
    int64_t st[1][CS_MAX_DIMS], ost[CS_MAX_DIMS];
    cs_shape kept = *x;
    for (int d = 0; d < x->ndim; d++)
        if (red[d]) kept.dims[d] = 1;
    contiguous_strides(&kept, ost);
    for (int d = 0; d < x->ndim; d++) st[0][d] = red[d] ? 0 : ost[d];
    iter it;
    iter_init(&it, x->ndim, x->dims, 1, st);
    int64_t idx[CS_MAX_DIMS] = {0}, off[1] = {0};
    for (int64_t i = 0; i < ocount; i++) Y[i] = 0.0f;
    int64_t so = it.st[0][it.nd - 1];
    const float *xr = X;
    for (int64_t r = 0; r < it.rows; r++, xr += it.len) {
        float *y = Y + off[0];
        if (so == 0) {
            y[0] += (float)sum_f32(xr, it.len);
        } else {
            for (int64_t i = 0; i < it.len; i++) y[i * so] += xr[i];
        }
        iter_next(&it, idx, off);
    }
    if (scale != 1.0f)
        for (int64_t i = 0; i < ocount; i++) Y[i] *= scale;
    return CS_OK;
}

/* ---- shape manipulation: inference ---------------------------------------- */

static cs_status infer_flatten(const ctx *c, cs_shape *out) {
    TRY(need_inputs(c, 1));
    const cs_shape *x = in_shape(c, 0);
    int64_t axis = cs_attr_int(c->n, "axis", 1);
    if (axis < -x->ndim || axis > x->ndim)
        return fail(c, CS_EINVAL, "axis %lld out of range for rank %d", (long long)axis, x->ndim);
    if (axis < 0) axis += x->ndim;
    int64_t dims[2] = {dims_prod(x->dims, 0, (int)axis), dims_prod(x->dims, (int)axis, x->ndim)};
    shape_set(&out[0], x->dtype, 2, dims);
    return CS_OK;
}

static cs_status infer_reshape(const ctx *c, cs_shape *out) {
    TRY(need_inputs(c, 2));
    const cs_shape *x = in_shape(c, 0);
    int64_t want[CS_MAX_DIMS];
    int k;
    TRY(const_ints(c, 1, "shape", want, CS_MAX_DIMS, &k));
    bool allowzero = cs_attr_int(c->n, "allowzero", 0) != 0;
    int infer_at = -1;
    /* The -1 dim is the input's size over the explicitly given dims; dims
     * copied by 0 cancel out, so an unknown batch copied that way still
     * lets the rest be inferred. */
    int64_t in_rest = 1, out_rest = 1;
    bool copied[CS_MAX_DIMS] = {false};
    for (int i = 0; i < k; i++) {
        int64_t v = want[i];
        if (v == 0 && !allowzero) {
            if (i >= x->ndim)
                return fail(c, CS_EINVAL, "shape[%d] = 0 copies a dim the input lacks", i);
            v = x->dims[i];
            copied[i] = true;
        } else if (v == -1) {
            if (infer_at >= 0) return fail(c, CS_EINVAL, "more than one -1 in shape");
            infer_at = i;
            out->dims[i] = -1;
            continue;
        } else if (v < -1) {
            return fail(c, CS_EINVAL, "invalid shape value %lld", (long long)v);
        }
        out->dims[i] = v;
        if (!copied[i]) out_rest = dmul(out_rest, v);
    }
    for (int d = 0; d < x->ndim; d++)
        if (!(d < k && copied[d])) in_rest = dmul(in_rest, x->dims[d]);
    out->dtype = x->dtype;
    out->ndim = k;
    if (infer_at >= 0) {
        if (in_rest >= 0 && out_rest > 0) {
            if (in_rest % out_rest != 0)
                return fail(c, CS_EINVAL, "cannot reshape %lld elements into groups of %lld",
                            (long long)in_rest, (long long)out_rest);
            out->dims[infer_at] = in_rest / out_rest;
        } else if (out_rest == 0) {
            return fail(c, CS_EINVAL, "-1 is ambiguous with a zero-sized dim");
        }
    } else if (in_rest >= 0 && out_rest >= 0 && in_rest != out_rest) {
        char a[96];
        return fail(c, CS_EINVAL, "cannot reshape %s (%lld elements) into %d dims of %lld elements",
                    cs_shape_str(x, a, sizeof a), (long long)numel(x), k, (long long)out_rest);
    }
    return CS_OK;
}

static cs_status transpose_perm(const ctx *c, int rank, int *perm) {
    const int64_t *p;
    int k = cs_attr_ints(c->n, "perm", &p);
    if (k == 0) {
        for (int i = 0; i < rank; i++) perm[i] = rank - 1 - i;
        return CS_OK;
    }
    if (k != rank) return fail(c, CS_EINVAL, "perm has %d entries for rank %d", k, rank);
    bool seen[CS_MAX_DIMS] = {false};
    for (int i = 0; i < k; i++) {
        int a = 0;
        TRY(norm_axis(c, p[i], rank, &a));
        if (seen[a]) return fail(c, CS_EINVAL, "perm is not a permutation");
        seen[a] = true;
        perm[i] = a;
    }
    return CS_OK;
}

static cs_status infer_transpose(const ctx *c, cs_shape *out) {
    TRY(need_inputs(c, 1));
    const cs_shape *x = in_shape(c, 0);
    int perm[CS_MAX_DIMS];
    TRY(transpose_perm(c, x->ndim, perm));
    out[0] = *x;
    for (int i = 0; i < x->ndim; i++) out[0].dims[i] = x->dims[perm[i]];
    return CS_OK;
}

static cs_status infer_concat(const ctx *c, cs_shape *out) {
    TRY(need_inputs(c, c->n->ninputs));
    if (c->n->ninputs < 1) return fail(c, CS_EINVAL, "no inputs");
    const cs_shape *x0 = in_shape(c, 0);
    int axis = 0;
    TRY(norm_axis(c, cs_attr_int(c->n, "axis", 0), x0->ndim, &axis));
    out[0] = *x0;
    out[0].dims[axis] = 0;
    for (int i = 0; i < c->n->ninputs; i++) {
        const cs_shape *s = in_shape(c, i);
        if (s->ndim != x0->ndim || s->dtype != x0->dtype)
            return fail(c, CS_EINVAL, "input %d differs in rank or element type from input 0", i);
        for (int d = 0; d < s->ndim; d++) {
            if (d == axis) {
                out[0].dims[d] = (out[0].dims[d] < 0 || s->dims[d] < 0)
                                     ? -1
                                     : out[0].dims[d] + s->dims[d];
                continue;
            }
            int64_t a = out[0].dims[d], b = s->dims[d];
            if (a >= 0 && b >= 0 && a != b)
                return fail(c, CS_EINVAL, "input %d dim %d is %lld, expected %lld", i, d,
                            (long long)b, (long long)a);
            if (a < 0) out[0].dims[d] = b;
        }
    }
    return CS_OK;
}

static cs_status split_sizes(const ctx *c, const cs_shape *x, int *axis_out, int64_t *sizes) {
    int nout = c->n->noutputs;
    int axis = 0;
    TRY(norm_axis(c, cs_attr_int(c->n, "axis", 0), x->ndim, &axis));
    *axis_out = axis;
    if (nout < 1 || nout > 1024) return fail(c, CS_EINVAL, "bad output count %d", nout);
    int64_t dim = x->dims[axis];
    int k = 0;
    const int64_t *sp;
    if (cs_node_attr(c->n, "split")) { /* opset <= 12 */
        k = cs_attr_ints(c->n, "split", &sp);
        if (k != nout) return fail(c, CS_EINVAL, "split has %d entries for %d outputs", k, nout);
        memcpy(sizes, sp, (size_t)k * sizeof *sizes);
    } else if (in_shape(c, 1)) { /* opset 13+ */
        TRY(const_ints(c, 1, "split", sizes, nout, &k));
        if (k != nout) return fail(c, CS_EINVAL, "split has %d entries for %d outputs", k, nout);
    } else {
        /* Equal parts; opset 18's num_outputs lets the last one be smaller. */
        bool uneven = cs_node_attr(c->n, "num_outputs") != NULL;
        for (int i = 0; i < nout; i++) sizes[i] = -1;
        if (dim < 0) return CS_OK;
        if (!uneven && dim % nout != 0)
            return fail(c, CS_EINVAL, "dim %lld does not split into %d equal parts",
                        (long long)dim, nout);
        int64_t part = (dim + nout - 1) / nout, left = dim;
        for (int i = 0; i < nout; i++) {
            sizes[i] = left < part ? left : part;
            left -= sizes[i];
        }
        return CS_OK;
    }
    int64_t sum = 0;
    for (int i = 0; i < nout; i++) {
        if (sizes[i] < 0 || sizes[i] > SANE_MAX)
            return fail(c, CS_EINVAL, "split size %lld out of range", (long long)sizes[i]);
        sum += sizes[i];
    }
    if (dim >= 0 && sum != dim)
        return fail(c, CS_EINVAL, "split sizes sum to %lld but the dim is %lld", (long long)sum,
                    (long long)dim);
    return CS_OK;
}

static cs_status infer_split(const ctx *c, cs_shape *out) {
    TRY(need_inputs(c, 1));
    const cs_shape *x = in_shape(c, 0);
    int axis = 0;
    int64_t sizes[1024];
    TRY(split_sizes(c, x, &axis, sizes));
    for (int i = 0; i < c->n->noutputs; i++) {
        out[i] = *x;
        out[i].dims[axis] = sizes[i];
    }
    return CS_OK;
}

typedef struct slice_plan {
    int64_t start[CS_MAX_DIMS], step[CS_MAX_DIMS], len[CS_MAX_DIMS];
} slice_plan;

static cs_status slice_make(const ctx *c, const cs_shape *x, slice_plan *p) {
    int64_t starts[CS_MAX_DIMS], ends[CS_MAX_DIMS], axes[CS_MAX_DIMS], steps[CS_MAX_DIMS];
    int ns, ne, na, nst;
    if (c->opset < 10 && cs_node_attr(c->n, "starts")) { /* Slice-1 attribute form */
        const int64_t *a;
        ns = cs_attr_ints(c->n, "starts", &a);
        if (ns > CS_MAX_DIMS) return fail(c, CS_EINVAL, "too many starts");
        memcpy(starts, a, (size_t)ns * sizeof *a);
        ne = cs_attr_ints(c->n, "ends", &a);
        if (ne > CS_MAX_DIMS) return fail(c, CS_EINVAL, "too many ends");
        memcpy(ends, a, (size_t)ne * sizeof *a);
        na = cs_attr_ints(c->n, "axes", &a);
        if (na > CS_MAX_DIMS) return fail(c, CS_EINVAL, "too many axes");
        memcpy(axes, a, (size_t)na * sizeof *a);
        if (!na) na = -1;
        nst = -1;
    } else {
        TRY(const_ints(c, 1, "starts", starts, CS_MAX_DIMS, &ns));
        TRY(const_ints(c, 2, "ends", ends, CS_MAX_DIMS, &ne));
        na = nst = -1;
        if (in_shape(c, 3)) TRY(const_ints(c, 3, "axes", axes, CS_MAX_DIMS, &na));
        if (in_shape(c, 4)) TRY(const_ints(c, 4, "steps", steps, CS_MAX_DIMS, &nst));
    }
    if (na < 0)
        for (na = 0; na < ns; na++) axes[na] = na;
    if (nst < 0)
        for (nst = 0; nst < ns; nst++) steps[nst] = 1;
    if (ne != ns || na != ns || nst != ns)
        return fail(c, CS_EINVAL, "starts/ends/axes/steps lengths differ (%d/%d/%d/%d)", ns, ne,
                    na, nst);
    for (int d = 0; d < x->ndim; d++) p->start[d] = 0, p->step[d] = 1, p->len[d] = x->dims[d];
    bool seen[CS_MAX_DIMS] = {false};
    for (int i = 0; i < ns; i++) {
        int a = 0;
        TRY(norm_axis(c, axes[i], x->ndim, &a));
        if (seen[a]) return fail(c, CS_EINVAL, "axis %d sliced twice", a);
        seen[a] = true;
        int64_t dim = x->dims[a], st = steps[i], s = starts[i], e = ends[i];
        if (st == 0) return fail(c, CS_EINVAL, "step 0 on axis %d", a);
        if (st == INT64_MIN) st = -INT64_MAX; /* same slice, and negatable */
        p->step[a] = st;
        if (dim < 0) { /* sliced unknown dim: resolved when the batch is */
            p->len[a] = -1;
            continue;
        }
        /* Only negative values are shifted, so INT64_MIN/MAX sentinels do
         * not overflow. */
        if (s < 0) s += dim;
        if (e < 0) e += dim;
        if (st > 0) {
            s = s < 0 ? 0 : (s > dim ? dim : s);
            e = e < 0 ? 0 : (e > dim ? dim : e);
            p->len[a] = e > s ? (e - s - 1) / st + 1 : 0;
        } else {
            s = s < 0 ? 0 : (s > dim - 1 ? dim - 1 : s);
            e = e < -1 ? -1 : (e > dim - 1 ? dim - 1 : e);
            p->len[a] = s > e ? (s - e - 1) / -st + 1 : 0;
        }
        p->start[a] = s;
    }
    return CS_OK;
}

static cs_status infer_slice(const ctx *c, cs_shape *out) {
    TRY(need_inputs(c, 1));
    const cs_shape *x = in_shape(c, 0);
    slice_plan p;
    TRY(slice_make(c, x, &p));
    out[0] = *x;
    for (int d = 0; d < x->ndim; d++) out[0].dims[d] = p.len[d];
    return CS_OK;
}

enum { PAD_CONSTANT, PAD_REFLECT, PAD_EDGE };

static cs_status pad_make(const ctx *c, const cs_shape *x, int64_t *pb, int64_t *pe, int *mode) {
    int r = x->ndim;
    int64_t pads[2 * CS_MAX_DIMS];
    int k;
    const char *m = cs_attr_string(c->n, "mode", "constant");
    if (strcmp(m, "constant") == 0) *mode = PAD_CONSTANT;
    else if (strcmp(m, "reflect") == 0) *mode = PAD_REFLECT;
    else if (strcmp(m, "edge") == 0) *mode = PAD_EDGE;
    else return fail(c, CS_EUNSUPPORTED, "pad mode '%s'", m);
    if (cs_node_attr(c->n, "pads")) { /* opset < 11 */
        const int64_t *a;
        if (cs_node_attr(c->n, "pads")->type != CS_ATTR_INTS)
            return fail(c, CS_EINVAL, "attribute pads must be a list of ints");
        k = cs_attr_ints(c->n, "pads", &a);
        if (k > 2 * CS_MAX_DIMS) return fail(c, CS_EINVAL, "too many pads");
        if (k) memcpy(pads, a, (size_t)k * sizeof *a);
    } else {
        TRY(const_ints(c, 1, "pads", pads, 2 * CS_MAX_DIMS, &k));
    }
    for (int d = 0; d < r; d++) pb[d] = pe[d] = 0;
    int64_t axes[CS_MAX_DIMS];
    int na = r;
    if (in_shape(c, 3)) TRY(const_ints(c, 3, "axes", axes, CS_MAX_DIMS, &na)); /* opset 18 */
    else
        for (int d = 0; d < r; d++) axes[d] = d;
    if (k != 2 * na) return fail(c, CS_EINVAL, "pads has %d values for %d axes", k, na);
    for (int i = 0; i < na; i++) {
        int a = 0;
        TRY(norm_axis(c, axes[i], r, &a));
        pb[a] = pads[i];
        pe[a] = pads[na + i];
        if (pb[a] > SANE_MAX || pb[a] < -SANE_MAX || pe[a] > SANE_MAX || pe[a] < -SANE_MAX)
            return fail(c, CS_EINVAL, "pad amount out of range on axis %d", a);
        int64_t dim = x->dims[a];
        if (dim >= 0 && dim + pb[a] + pe[a] < 0)
            return fail(c, CS_EINVAL, "pads remove more than dim %d holds", a);
        if (*mode == PAD_REFLECT && dim >= 0 && (pb[a] >= dim || pe[a] >= dim) &&
            (pb[a] > 0 || pe[a] > 0))
            return fail(c, CS_EINVAL, "reflect pad %lld/%lld too large for dim %lld",
                        (long long)pb[a], (long long)pe[a], (long long)dim);
        if (*mode != PAD_CONSTANT && dim == 0 && (pb[a] > 0 || pe[a] > 0))
            return fail(c, CS_EINVAL, "cannot %s-pad an empty dim", m);
    }
    return CS_OK;
}

static cs_status infer_pad(const ctx *c, cs_shape *out) {
    TRY(need_inputs(c, 1));
    const cs_shape *x = in_shape(c, 0);
    int64_t pb[CS_MAX_DIMS], pe[CS_MAX_DIMS];
    int mode;
    TRY(pad_make(c, x, pb, pe, &mode));
    out[0] = *x;
    for (int d = 0; d < x->ndim; d++)
        out[0].dims[d] = x->dims[d] < 0 ? -1 : x->dims[d] + pb[d] + pe[d];
    return CS_OK;
}

static cs_status infer_squeeze(const ctx *c, cs_shape *out) {
    TRY(need_inputs(c, 1));
    const cs_shape *x = in_shape(c, 0);
    int64_t axes[CS_MAX_DIMS];
    int k;
    bool given;
    TRY(axes_of(c, 1, axes, &k, &given));
    bool drop[CS_MAX_DIMS] = {false};
    if (k == 0) {
        /* Unknown dims are kept: only a known 1 is certain to go. */
        for (int d = 0; d < x->ndim; d++) drop[d] = x->dims[d] == 1;
    }
    for (int i = 0; i < k; i++) {
        int a = 0;
        TRY(norm_axis(c, axes[i], x->ndim, &a));
        if (x->dims[a] >= 0 && x->dims[a] != 1)
            return fail(c, CS_EINVAL, "cannot squeeze axis %d of size %lld", a,
                        (long long)x->dims[a]);
        drop[a] = true;
    }
    out[0].dtype = x->dtype;
    int nd = 0;
    for (int d = 0; d < x->ndim; d++)
        if (!drop[d]) out[0].dims[nd++] = x->dims[d];
    out[0].ndim = nd;
    return CS_OK;
}

static cs_status infer_unsqueeze(const ctx *c, cs_shape *out) {
    TRY(need_inputs(c, 1));
    const cs_shape *x = in_shape(c, 0);
    int64_t axes[CS_MAX_DIMS];
    int k;
    bool given;
    TRY(axes_of(c, 1, axes, &k, &given));
    if (!given || k == 0) return fail(c, CS_EINVAL, "axes are required");
    int r = x->ndim + k;
    if (r > CS_MAX_DIMS) return fail(c, CS_EUNSUPPORTED, "result rank %d too large", r);
    bool ins[CS_MAX_DIMS] = {false};
    for (int i = 0; i < k; i++) {
        int a = 0;
        TRY(norm_axis(c, axes[i], r, &a));
        if (ins[a]) return fail(c, CS_EINVAL, "axis %d repeated", a);
        ins[a] = true;
    }
    out[0].dtype = x->dtype;
    out[0].ndim = r;
    for (int d = 0, s = 0; d < r; d++) out[0].dims[d] = ins[d] ? 1 : x->dims[s++];
    return CS_OK;
}

static void shape_range(const ctx *c, int rank, int64_t *from, int64_t *to) {
    int64_t s = cs_attr_int(c->n, "start", 0), e = cs_attr_int(c->n, "end", rank);
    if (s < 0) s += rank;
    if (e < 0) e += rank;
    s = s < 0 ? 0 : (s > rank ? rank : s);
    e = e < 0 ? 0 : (e > rank ? rank : e);
    *from = s;
    *to = e > s ? e : s;
}

static cs_status infer_shape_op(const ctx *c, cs_shape *out) {
    TRY(need_inputs(c, 1));
    int64_t s, e;
    shape_range(c, in_shape(c, 0)->ndim, &s, &e);
    int64_t dims[1] = {e - s};
    shape_set(&out[0], CS_DT_INT64, 1, dims);
    return CS_OK;
}

static cs_status infer_gather(const ctx *c, cs_shape *out) {
    TRY(need_inputs(c, 2));
    const cs_shape *x = in_shape(c, 0), *ix = in_shape(c, 1);
    if (ix->dtype != CS_DT_INT64 && ix->dtype != CS_DT_INT32)
        return fail(c, CS_EINVAL, "indices must be int64 or int32");
    int axis = 0;
    TRY(norm_axis(c, cs_attr_int(c->n, "axis", 0), x->ndim, &axis));
    int r = x->ndim - 1 + ix->ndim;
    if (r > CS_MAX_DIMS) return fail(c, CS_EUNSUPPORTED, "result rank %d too large", r);
    out[0].dtype = x->dtype;
    out[0].ndim = r;
    int nd = 0;
    for (int d = 0; d < axis; d++) out[0].dims[nd++] = x->dims[d];
    for (int d = 0; d < ix->ndim; d++) out[0].dims[nd++] = ix->dims[d];
    for (int d = axis + 1; d < x->ndim; d++) out[0].dims[nd++] = x->dims[d];
    return CS_OK;
}

static cs_status infer_constant(const ctx *c, cs_shape *out) {
    const cs_node *n = c->n;
    const cs_attr *a;
    if ((a = cs_node_attr(n, "value")) && a->type == CS_ATTR_TENSOR) {
        if (!c->g || a->tensor < 0 || a->tensor >= c->g->nvalues)
            return fail(c, CS_EINVAL, "value tensor index %d is not a graph value", a->tensor);
        out[0] = c->g->values[a->tensor].shape;
    } else if ((a = cs_node_attr(n, "value_float"))) {
        shape_set(&out[0], CS_DT_FLOAT, 0, NULL);
    } else if ((a = cs_node_attr(n, "value_int"))) {
        shape_set(&out[0], CS_DT_INT64, 0, NULL);
    } else if ((a = cs_node_attr(n, "value_floats")) && a->type == CS_ATTR_FLOATS) {
        int64_t d = a->n;
        shape_set(&out[0], CS_DT_FLOAT, 1, &d);
    } else if ((a = cs_node_attr(n, "value_ints")) && a->type == CS_ATTR_INTS) {
        int64_t d = a->n;
        shape_set(&out[0], CS_DT_INT64, 1, &d);
    } else {
        return fail(c, CS_EUNSUPPORTED, "needs a value, value_float(s) or value_int(s) attribute");
    }
    return CS_OK;
}

/* ConstantOfShape's fill element: the one-element `value` tensor, else 0.0f. */
static cs_status fill_value(const ctx *c, cs_dtype *dt, const void **data) {
    static const float zero = 0.0f;
    const cs_attr *a = cs_node_attr(c->n, "value");
    *dt = CS_DT_FLOAT;
    *data = &zero;
    if (!a) return CS_OK;
    if (a->type != CS_ATTR_TENSOR || !c->g || a->tensor < 0 || a->tensor >= c->g->nvalues)
        return fail(c, CS_EINVAL, "value must be a tensor");
    const cs_value *v = &c->g->values[a->tensor];
    if (numel(&v->shape) != 1 || !v->data || cs_dtype_size(v->shape.dtype) == 0)
        return fail(c, CS_EINVAL, "value must be a one-element tensor");
    *dt = v->shape.dtype;
    *data = v->data;
    return CS_OK;
}

static cs_status infer_constant_of_shape(const ctx *c, cs_shape *out) {
    TRY(need_inputs(c, 1));
    int64_t dims[CS_MAX_DIMS];
    int k;
    TRY(const_ints(c, 0, "shape", dims, CS_MAX_DIMS, &k));
    for (int i = 0; i < k; i++)
        if (dims[i] < 0) return fail(c, CS_EINVAL, "negative dim %lld", (long long)dims[i]);
    cs_dtype dt;
    const void *v;
    TRY(fill_value(c, &dt, &v));
    shape_set(&out[0], dt, k, dims);
    return CS_OK;
}

static cs_status infer_expand(const ctx *c, cs_shape *out) {
    TRY(need_inputs(c, 2));
    cs_shape want = {0};
    int k;
    TRY(const_ints(c, 1, "shape", want.dims, CS_MAX_DIMS, &k));
    want.ndim = k;
    for (int i = 0; i < k; i++)
        if (want.dims[i] < -1) return fail(c, CS_EINVAL, "invalid dim %lld", (long long)want.dims[i]);
    const cs_shape *s[2] = {in_shape(c, 0), &want};
    TRY(bcast_shape(c, s, 2, &out[0]));
    out[0].dtype = s[0]->dtype;
    return CS_OK;
}

/* ---- shape manipulation: kernels ------------------------------------------- */

static cs_status run_copy(const ctx *c, const cs_shape *out, void *const *od) {
    /* Reshape / Flatten / Squeeze / Unsqueeze: same bytes, new shape. */
    const cs_shape *x = in_shape(c, 0);
    if (numel(x) != numel(out)) return fail(c, CS_EINVAL, "element counts differ");
    memmove(od[0], in_dat(c, 0), (size_t)numel(x) * cs_dtype_size(x->dtype));
    return CS_OK;
}

static cs_status run_transpose(const ctx *c, const cs_shape *out, void *const *od) {
    const cs_shape *x = in_shape(c, 0);
    int perm[CS_MAX_DIMS];
    TRY(transpose_perm(c, x->ndim, perm));
    int64_t ist[CS_MAX_DIMS], st[CS_MAX_DIMS];
    contiguous_strides(x, ist);
    for (int d = 0; d < x->ndim; d++) st[d] = ist[perm[d]];
    strided_copy(od[0], in_dat(c, 0), cs_dtype_size(x->dtype), out->ndim, out->dims, st);
    return CS_OK;
}

static cs_status run_slice(const ctx *c, const cs_shape *out, void *const *od) {
    const cs_shape *x = in_shape(c, 0);
    slice_plan p;
    TRY(slice_make(c, x, &p));
    if (numel(out) == 0) return CS_OK;
    int64_t ist[CS_MAX_DIMS], st[CS_MAX_DIMS], base = 0;
    contiguous_strides(x, ist);
    for (int d = 0; d < x->ndim; d++) {
        base += p.start[d] * ist[d];
        st[d] = p.step[d] * ist[d];
    }
    size_t es = cs_dtype_size(x->dtype);
    strided_copy(od[0], (const char *)in_dat(c, 0) + base * (int64_t)es, es, out->ndim,
                 out->dims, st);
    return CS_OK;
}

static cs_status run_expand(const ctx *c, const cs_shape *out, void *const *od) {
    const cs_shape *x = in_shape(c, 0);
    int64_t st[CS_MAX_DIMS];
    bcast_strides(x, out->ndim, out->dims, st);
    strided_copy(od[0], in_dat(c, 0), cs_dtype_size(x->dtype), out->ndim, out->dims, st);
    return CS_OK;
}

static cs_status run_concat(const ctx *c, const cs_shape *out, void *const *od) {
    int axis = 0;
    TRY(norm_axis(c, cs_attr_int(c->n, "axis", 0), out->ndim, &axis));
    size_t es = cs_dtype_size(out->dtype);
    int64_t outer = dims_prod(out->dims, 0, axis), inner = dims_prod(out->dims, axis + 1, out->ndim);
    int64_t orow = out->dims[axis] * inner * (int64_t)es;
    char *o = od[0];
    int64_t at = 0;
    for (int i = 0; i < c->n->ninputs; i++) {
        const char *s = in_dat(c, i);
        int64_t row = in_shape(c, i)->dims[axis] * inner * (int64_t)es;
        for (int64_t k = 0; k < outer && row > 0; k++)
            memcpy(o + k * orow + at, s + k * row, (size_t)row);
        at += row;
    }
    return CS_OK;
}

static cs_status run_split(const ctx *c, const cs_shape *out, void *const *od) {
    const cs_shape *x = in_shape(c, 0);
    int axis = 0;
    int64_t sizes[1024];
    TRY(split_sizes(c, x, &axis, sizes));
    size_t es = cs_dtype_size(x->dtype);
    int64_t outer = dims_prod(x->dims, 0, axis), inner = dims_prod(x->dims, axis + 1, x->ndim);
    int64_t irow = x->dims[axis] * inner * (int64_t)es;
    const char *s = in_dat(c, 0);
    int64_t at = 0;
    for (int i = 0; i < c->n->noutputs; i++) {
        int64_t row = sizes[i] * inner * (int64_t)es;
        char *o = od[i];
        for (int64_t k = 0; o && k < outer && row > 0; k++)
            memcpy(o + k * row, s + k * irow + at, (size_t)row);
        at += row;
    }
    return CS_OK;
}

static int64_t pad_map(int64_t i, int64_t n, int mode) {
    if (i >= 0 && i < n) return i;
    if (mode == PAD_CONSTANT) return -1;
    if (mode == PAD_EDGE) return i < 0 ? 0 : n - 1;
    if (n == 1) return 0;
    int64_t period = 2 * (n - 1);
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - i;
}

static cs_status run_pad(const ctx *c, const cs_shape *out, void *const *od) {
    const cs_shape *x = in_shape(c, 0);
    int64_t pb[CS_MAX_DIMS], pe[CS_MAX_DIMS];
    int mode;
    TRY(pad_make(c, x, pb, pe, &mode));
    size_t es = cs_dtype_size(x->dtype);
    /* The pad value, converted to the data type once. */
    unsigned char fill[16] = {0};
    const cs_shape *vs = in_shape(c, 2);
    if (vs && numel(vs) > 0) {
        if (is_int_type(x->dtype)) st_i(fill, x->dtype, 0, ld_i(in_dat(c, 2), vs->dtype, 0));
        else st_f(fill, x->dtype, 0, ld_f(in_dat(c, 2), vs->dtype, 0));
    } else if (!vs) {
        st_f(fill, x->dtype, 0, cs_attr_float(c->n, "value", 0.0f));
    }
    const char *X = in_dat(c, 0);
    char *o = od[0];
    int r = x->ndim;
    if (r == 0) {
        memcpy(o, X, es);
        return CS_OK;
    }
    int64_t ist[CS_MAX_DIMS];
    contiguous_strides(x, ist);
    int64_t olen = out->dims[r - 1], ilen = x->dims[r - 1], lp = pb[r - 1];
    int64_t rows = dims_prod(out->dims, 0, r - 1), idx[CS_MAX_DIMS] = {0};
    /* Output columns [jlo, jhi) come straight from the input row. */
    int64_t jlo = lp > 0 ? lp : 0, jhi = lp + ilen < olen ? lp + ilen : olen;
    for (int64_t row = 0; row < rows; row++, o += olen * (int64_t)es) {
        int64_t src = 0;
        bool padded = false;
        for (int d = 0; d < r - 1; d++) {
            int64_t si = pad_map(idx[d] - pb[d], x->dims[d], mode);
            if (si < 0) padded = true;
            else src += si * ist[d];
        }
        const char *sr = X + src * (int64_t)es;
        for (int64_t j = 0; j < olen; j++) {
            if (j == jlo && jhi > jlo && !padded) {
                memcpy(o + j * (int64_t)es, sr + (j - lp) * (int64_t)es,
                       (size_t)(jhi - jlo) * es);
                j = jhi - 1;
                continue;
            }
            int64_t si = padded ? -1 : pad_map(j - lp, ilen, mode);
            memcpy(o + j * (int64_t)es, si < 0 ? (const char *)fill : sr + si * (int64_t)es, es);
        }
        for (int d = r - 2; d >= 0; d--) {
            if (++idx[d] < out->dims[d]) break;
            idx[d] = 0;
        }
    }
    return CS_OK;
}

static cs_status run_shape_op(const ctx *c, const cs_shape *out, void *const *od) {
    const cs_shape *x = in_shape(c, 0);
    int64_t s, e;
    shape_range(c, x->ndim, &s, &e);
    int64_t *o = od[0];
    for (int64_t i = s; i < e; i++) {
        if (x->dims[i] < 0) return fail(c, CS_EINVAL, "dim %lld is not known yet", (long long)i);
        o[i - s] = x->dims[i];
    }
    return CS_OK;
}

static cs_status run_gather(const ctx *c, const cs_shape *out, void *const *od) {
    const cs_shape *x = in_shape(c, 0), *ix = in_shape(c, 1);
    int axis = 0;
    TRY(norm_axis(c, cs_attr_int(c->n, "axis", 0), x->ndim, &axis));
    size_t es = cs_dtype_size(x->dtype);
    int64_t outer = dims_prod(x->dims, 0, axis), dim = x->dims[axis];
    int64_t inner = dims_prod(x->dims, axis + 1, x->ndim), ni = numel(ix);
    int64_t chunk = inner * (int64_t)es;
    const char *X = in_dat(c, 0);
    const void *I = in_dat(c, 1);
    char *o = od[0];
    for (int64_t k = 0; k < ni; k++) { /* validate once, not per outer row */
        int64_t v = ld_i(I, ix->dtype, k);
        if (v < -dim || v >= dim)
            return fail(c, CS_EINVAL, "index %lld out of range for dim %lld", (long long)v,
                        (long long)dim);
    }
    for (int64_t p = 0; p < outer; p++)
        for (int64_t k = 0; k < ni; k++, o += chunk) {
            int64_t v = ld_i(I, ix->dtype, k);
            if (v < 0) v += dim;
            memcpy(o, X + (p * dim + v) * chunk, (size_t)chunk);
        }
    return CS_OK;
}

static cs_status run_constant(const ctx *c, const cs_shape *out, void *const *od) {
    const cs_attr *a;
    size_t bytes = (size_t)numel(out) * cs_dtype_size(out->dtype);
    if ((a = cs_node_attr(c->n, "value")) && a->type == CS_ATTR_TENSOR) {
        const void *d = c->g->values[a->tensor].data;
        if (!d && bytes) return fail(c, CS_EINVAL, "value tensor has no data");
        if (bytes) memcpy(od[0], d, bytes);
    } else if ((a = cs_node_attr(c->n, "value_float"))) {
        *(float *)od[0] = a->type == CS_ATTR_INT ? (float)a->i : a->f;
    } else if ((a = cs_node_attr(c->n, "value_int"))) {
        *(int64_t *)od[0] = a->type == CS_ATTR_FLOAT ? (int64_t)a->f : a->i;
    } else if ((a = cs_node_attr(c->n, "value_floats"))) {
        if (bytes) memcpy(od[0], a->floats, bytes);
    } else if ((a = cs_node_attr(c->n, "value_ints"))) {
        if (bytes) memcpy(od[0], a->ints, bytes);
    }
    return CS_OK;
}

static cs_status run_constant_of_shape(const ctx *c, const cs_shape *out, void *const *od) {
    cs_dtype dt;
    const void *v;
    TRY(fill_value(c, &dt, &v));
    size_t es = cs_dtype_size(dt);
    int64_t cnt = numel(out);
    for (int64_t i = 0; i < cnt; i++) memcpy((char *)od[0] + i * (int64_t)es, v, es);
    return CS_OK;
}

/* ---- dispatch -------------------------------------------------------------- */

typedef cs_status (*infer_fn)(const ctx *, cs_shape *);
typedef cs_status (*run_fn)(const ctx *, const cs_shape *, void *const *);

typedef struct op_impl {
    infer_fn infer;
    run_fn run;
    int min_inputs;
} op_impl;

static const op_impl impls[CS_OP__COUNT] = {
    [CS_OP_CONV] = {infer_conv, run_conv, 2},
    [CS_OP_GEMM] = {infer_gemm, run_gemm, 2},
    [CS_OP_MATMUL] = {infer_matmul, run_matmul, 2},
    [CS_OP_MAXPOOL] = {infer_pool, run_pool, 1},
    [CS_OP_AVGPOOL] = {infer_pool, run_pool, 1},
    [CS_OP_GLOBALAVGPOOL] = {infer_global_pool, run_global_pool, 1},
    [CS_OP_GLOBALMAXPOOL] = {infer_global_pool, run_global_pool, 1},
    [CS_OP_BATCHNORM] = {infer_batchnorm, run_batchnorm, 5},
    [CS_OP_RELU] = {infer_unary, run_unary, 1},
    [CS_OP_CLIP] = {infer_unary, run_unary, 1},
    [CS_OP_LEAKYRELU] = {infer_unary, run_unary, 1},
    [CS_OP_SIGMOID] = {infer_unary, run_unary, 1},
    [CS_OP_HARDSIGMOID] = {infer_unary, run_unary, 1},
    [CS_OP_HARDSWISH] = {infer_unary, run_unary, 1},
    [CS_OP_TANH] = {infer_unary, run_unary, 1},
    [CS_OP_ERF] = {infer_unary, run_unary, 1},
    [CS_OP_SQRT] = {infer_unary, run_unary, 1},
    [CS_OP_EXP] = {infer_unary, run_unary, 1},
    [CS_OP_NEG] = {infer_unary, run_unary, 1},
    [CS_OP_RECIPROCAL] = {infer_unary, run_unary, 1},
    [CS_OP_GELU] = {infer_unary, run_unary, 1},
    [CS_OP_IDENTITY] = {infer_unary, run_unary, 1},
    [CS_OP_DROPOUT] = {infer_unary, run_unary, 1},
    [CS_OP_CAST] = {infer_unary, run_cast, 1},
    [CS_OP_ADD] = {infer_binary, run_binary, 2},
    [CS_OP_SUB] = {infer_binary, run_binary, 2},
    [CS_OP_MUL] = {infer_binary, run_binary, 2},
    [CS_OP_DIV] = {infer_binary, run_binary, 2},
    [CS_OP_POW] = {infer_binary, run_binary, 2},
    [CS_OP_EQUAL] = {infer_binary, run_binary, 2},
    [CS_OP_WHERE] = {infer_where, run_where, 3},
    [CS_OP_REDUCEMEAN] = {infer_reduce, run_reduce, 1},
    [CS_OP_REDUCESUM] = {infer_reduce, run_reduce, 1},
    [CS_OP_SOFTMAX] = {infer_softmax, run_softmax, 1},
    [CS_OP_LAYERNORM] = {infer_layernorm, run_layernorm, 2},
    [CS_OP_FLATTEN] = {infer_flatten, run_copy, 1},
    [CS_OP_RESHAPE] = {infer_reshape, run_copy, 2},
    [CS_OP_TRANSPOSE] = {infer_transpose, run_transpose, 1},
    [CS_OP_CONCAT] = {infer_concat, run_concat, 1},
    [CS_OP_SPLIT] = {infer_split, run_split, 1},
    [CS_OP_SLICE] = {infer_slice, run_slice, 1},
    [CS_OP_PAD] = {infer_pad, run_pad, 1},
    [CS_OP_SQUEEZE] = {infer_squeeze, run_copy, 1},
    [CS_OP_UNSQUEEZE] = {infer_unsqueeze, run_copy, 1},
    [CS_OP_SHAPE] = {infer_shape_op, run_shape_op, 1},
    [CS_OP_GATHER] = {infer_gather, run_gather, 2},
    [CS_OP_CONSTANT] = {infer_constant, run_constant, 0},
    [CS_OP_CONSTANTOFSHAPE] = {infer_constant_of_shape, run_constant_of_shape, 1},
    [CS_OP_EXPAND] = {infer_expand, run_expand, 2},
};

static cs_status ctx_make(const cs_graph *g, const cs_node *n, const cs_shape *const *in,
                          const void *const *in_data, cs_error *err, ctx *c, const op_impl **impl) {
    *c = (ctx){g, n, in, in_data, err, (g && g->opset > 0) ? g->opset : 17};
    if ((unsigned)n->op >= CS_OP__COUNT || !impls[n->op].infer)
        return fail(c, CS_EUNSUPPORTED, "operator not supported");
    *impl = &impls[n->op];
    if (n->ninputs < (*impl)->min_inputs)
        return fail(c, CS_EINVAL, "needs at least %d inputs, has %d", (*impl)->min_inputs,
                    n->ninputs);
    if (n->noutputs < 1) return fail(c, CS_EINVAL, "has no outputs");
    for (int i = 0; i < n->ninputs; i++) {
        const cs_shape *s = in[i];
        if (!s) continue;
        if (s->ndim < 0)
            return fail(c, CS_EUNSUPPORTED, "input %d has unknown rank", i);
        if (s->ndim > CS_MAX_DIMS) return fail(c, CS_EINVAL, "input %d rank %d", i, s->ndim);
    }
    return CS_OK;
}

cs_status cs_op_infer(const cs_graph *g, const cs_node *n, const cs_shape *const *in,
                      const void *const *in_data, cs_shape *out, cs_error *err) {
    ctx c;
    const op_impl *impl;
    TRY(ctx_make(g, n, in, in_data, err, &c, &impl));
    for (int i = 0; i < n->noutputs; i++) memset(&out[i], 0, sizeof out[i]);
    TRY(impl->infer(&c, out));
    for (int i = 0; i < n->noutputs; i++) {
        int64_t bytes = dmul(dims_prod(out[i].dims, 0, out[i].ndim),
                             (int64_t)cs_dtype_size(out[i].dtype));
        if (bytes == INT64_MAX || bytes > ((int64_t)1 << 46))
            return fail(&c, CS_ELIMIT, "output %d would be unreasonably large", i);
        if (out[i].ndim > CS_MAX_DIMS || cs_dtype_size(out[i].dtype) == 0)
            return fail(&c, CS_EINTERNAL, "inferred output %d is malformed", i);
    }
    return CS_OK;
}

cs_status cs_op_slice_window(const cs_graph *g, const cs_node *n, const cs_shape *const *in,
                             const void *const *in_data, int64_t *start, int64_t *step, cs_error *err) {
    ctx c;
    const op_impl *impl;
    TRY(ctx_make(g, n, in, in_data, err, &c, &impl));
    if (n->op != CS_OP_SLICE || !in[0]) return fail(&c, CS_EINVAL, "not a Slice with an input");
    slice_plan p;
    TRY(slice_make(&c, in[0], &p));
    for (int d = 0; d < in[0]->ndim; d++) start[d] = p.start[d], step[d] = p.step[d];
    return CS_OK;
}

cs_status cs_op_ref_run(const cs_graph *g, const cs_node *n, const cs_shape *const *in,
                        const void *const *in_data, const cs_shape *out, void *const *out_data,
                        cs_error *err) {
    ctx c;
    const op_impl *impl;
    TRY(ctx_make(g, n, in, in_data, err, &c, &impl));
    for (int i = 0; i < n->ninputs; i++) {
        if (!in[i]) continue;
        if (numel(in[i]) < 0) return fail(&c, CS_EINVAL, "input %d shape is not concrete", i);
        /* Shape reads dims only, so folding it needs no data. */
        if (n->op != CS_OP_SHAPE && (!in_data || (!in_data[i] && numel(in[i]) > 0)))
            return fail(&c, CS_EINVAL, "input %d has no data", i);
    }
    if (n->sum_input >= 0 && (!in[n->ninputs] || !in_data || !in_data[n->ninputs]))
        return fail(&c, CS_EINVAL, "fused sum input has no data");
    if (numel(&out[0]) < 0) return fail(&c, CS_EINVAL, "output shape is not concrete");
    if (!out_data[0] && numel(&out[0]) > 0) return fail(&c, CS_EINVAL, "output has no buffer");
    if (numel(&out[0]) == 0 && n->noutputs == 1) return CS_OK;
    return impl->run(&c, out, out_data);
}
