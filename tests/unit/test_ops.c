/* Unit tests for src/engine/ops.c: shape inference and reference kernels.
 *
 * Nodes are built by hand (no ONNX parsing involved) and checked against
 * hand-computed values or small independent formulas written here. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "engine/ir.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ----------------------------------------------------------- */

typedef struct tnode {
    cs_node n;
    cs_attr attrs[12];
    int ins[12], outs[8];
    int64_t ibuf[64];
    float fbuf[32];
    int nib, nfb;
} tnode;

static cs_graph g_graph; /* values[] only used by Constant/ConstantOfShape */
static cs_error g_err;

static void node_init(tnode *t, cs_op op, int nin, int nout) {
    memset(t, 0, sizeof *t);
    t->n.op = op;
    t->n.name = "n0";
    t->n.op_type = cs_op_name(op);
    t->n.ninputs = nin;
    t->n.noutputs = nout;
    t->n.inputs = t->ins;
    t->n.outputs = t->outs;
    t->n.attrs = t->attrs;
    t->n.sum_input = -1;
    for (int i = 0; i < nin; i++) t->ins[i] = i;
    for (int i = 0; i < nout; i++) t->outs[i] = 100 + i;
}

static cs_attr *attr_new(tnode *t, const char *name, cs_attr_type type) {
    cs_attr *a = &t->attrs[t->n.nattrs++];
    memset(a, 0, sizeof *a);
    a->name = name;
    a->type = type;
    return a;
}

static void attr_i(tnode *t, const char *name, int64_t v) { attr_new(t, name, CS_ATTR_INT)->i = v; }
static void attr_f(tnode *t, const char *name, float v) { attr_new(t, name, CS_ATTR_FLOAT)->f = v; }
static void attr_s(tnode *t, const char *name, const char *v) {
    attr_new(t, name, CS_ATTR_STRING)->s = v;
}
static void attr_tensor(tnode *t, const char *name, int value) {
    attr_new(t, name, CS_ATTR_TENSOR)->tensor = value;
}
static void attr_ints(tnode *t, const char *name, int n, const int64_t *v) {
    cs_attr *a = attr_new(t, name, CS_ATTR_INTS);
    a->n = n;
    a->ints = &t->ibuf[t->nib];
    memcpy(a->ints, v, (size_t)n * sizeof *v);
    t->nib += n;
}
static void attr_floats(tnode *t, const char *name, int n, const float *v) {
    cs_attr *a = attr_new(t, name, CS_ATTR_FLOATS);
    a->n = n;
    a->floats = &t->fbuf[t->nfb];
    memcpy(a->floats, v, (size_t)n * sizeof *v);
    t->nfb += n;
}

#define INTS(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__}

static cs_shape mk_shape(cs_dtype dt, int nd, const int64_t *dims) {
    cs_shape s;
    memset(&s, 0, sizeof s);
    s.dtype = dt;
    s.ndim = nd;
    for (int i = 0; i < nd; i++) s.dims[i] = dims[i];
    return s;
}
#define SHF(...) mk_shape(CS_DT_FLOAT, INTS(__VA_ARGS__))
#define SHI(...) mk_shape(CS_DT_INT64, INTS(__VA_ARGS__))
#define SCALAR(dt) mk_shape(dt, 0, NULL)

typedef struct res {
    cs_status st;
    cs_shape out[4];
    void *data[4];
} res;

static void set_opset(int64_t v) { g_graph.opset = v; }

static cs_status infer(const tnode *t, const cs_shape *const *in, const void *const *d,
                       cs_shape *out) {
    memset(&g_err, 0, sizeof g_err);
    return cs_op_infer(&g_graph, &t->n, in, d, out, &g_err);
}

/* Infers, allocates the outputs, runs the reference kernel. */
static res run(const tnode *t, const cs_shape *const *in, const void *const *d) {
    res r;
    memset(&r, 0, sizeof r);
    r.st = infer(t, in, d, r.out);
    if (r.st != CS_OK) return r;
    for (int i = 0; i < t->n.noutputs; i++) {
        int64_t k = cs_shape_numel(&r.out[i]);
        assert_true(k >= 0);
        r.data[i] = calloc((size_t)k + 1, cs_dtype_size(r.out[i].dtype));
    }
    r.st = cs_op_ref_run(&g_graph, &t->n, in, d, r.out, r.data, &g_err);
    return r;
}

static void res_free(res *r) {
    for (int i = 0; i < 4; i++) free(r->data[i]);
}

static void expect_ok(cs_status st) {
    if (st != CS_OK) fail_msg("status %d: %s", (int)st, g_err.msg);
}

static void expect_shape(const cs_shape *s, cs_dtype dt, int nd, const int64_t *dims) {
    char buf[128];
    if (s->dtype != dt) fail_msg("dtype %d, expected %d", (int)s->dtype, (int)dt);
    cs_shape want = mk_shape(dt, nd, dims);
    if (!cs_shape_equal(s, &want))
        fail_msg("shape %s, expected rank %d starting %lld", cs_shape_str(s, buf, sizeof buf), nd,
                 nd ? (long long)dims[0] : 0LL);
}
#define EXPECT_SHAPE(s, dt, ...) expect_shape((s), (dt), INTS(__VA_ARGS__))

static void expect_floats(const float *got, const float *want, int n, float tol) {
    for (int i = 0; i < n; i++)
        if (!(fabsf(got[i] - want[i]) <= tol))
            fail_msg("element %d: got %.7g, expected %.7g", i, (double)got[i], (double)want[i]);
}

static void expect_ints(const int64_t *got, const int64_t *want, int n) {
    for (int i = 0; i < n; i++)
        if (got[i] != want[i])
            fail_msg("element %d: got %lld, expected %lld", i, (long long)got[i],
                     (long long)want[i]);
}

static void expect_error(cs_status st, cs_status want, const char *needle) {
    if (st != want) fail_msg("status %d, expected %d (%s)", (int)st, (int)want, g_err.msg);
    if (!strstr(g_err.msg, needle)) fail_msg("message '%s' lacks '%s'", g_err.msg, needle);
    if (!strstr(g_err.msg, "n0")) fail_msg("message '%s' does not name the node", g_err.msg);
}

static void iota(float *x, int n, float start) {
    for (int i = 0; i < n; i++) x[i] = start + (float)i;
}

/* ---- names ------------------------------------------------------------ */

static void test_names(void **state) {
    (void)state;
    for (int op = 1; op < CS_OP__COUNT; op++) {
        const char *name = cs_op_name((cs_op)op);
        assert_string_not_equal(name, "Unknown");
        assert_int_equal(cs_op_from_name(name), op);
    }
    assert_int_equal(cs_op_from_name("AveragePool"), CS_OP_AVGPOOL);
    assert_int_equal(cs_op_from_name("LayerNormalization"), CS_OP_LAYERNORM);
    assert_int_equal(cs_op_from_name("NonMaxSuppression"), CS_OP_UNKNOWN);
    assert_int_equal(cs_op_from_name(NULL), CS_OP_UNKNOWN);
    assert_string_equal(cs_op_name(CS_OP__COUNT), "Unknown");
}

/* ---- conv --------------------------------------------------------------- */

/* Direct formula for a 1-channel 2-D conv, written independently of ops.c. */
static float conv_at(const float *x, int H, int W, const float *w, int K, int oy, int ox, int s,
                     int pt, int pl) {
    float acc = 0;
    for (int ky = 0; ky < K; ky++)
        for (int kx = 0; kx < K; kx++) {
            int y = oy * s + ky - pt, xx = ox * s + kx - pl;
            if (y >= 0 && y < H && xx >= 0 && xx < W) acc += x[y * W + xx] * w[ky * K + kx];
        }
    return acc;
}

static void test_conv_basic(void **state) {
    (void)state;
    set_opset(13);
    float x[16], w[9];
    iota(x, 16, 1);
    for (int i = 0; i < 9; i++) w[i] = (float)((i % 3) - 1) * 0.5f + (float)(i / 3);
    cs_shape xs = SHF(1, 1, 4, 4), ws = SHF(1, 1, 3, 3);
    tnode t;
    node_init(&t, CS_OP_CONV, 2, 1);
    attr_ints(&t, "pads", INTS(1, 1, 1, 1));
    const cs_shape *in[] = {&xs, &ws};
    const void *d[] = {x, w};
    res r = run(&t, in, d);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 1, 1, 4, 4);
    float want[16];
    for (int oy = 0; oy < 4; oy++)
        for (int ox = 0; ox < 4; ox++) want[oy * 4 + ox] = conv_at(x, 4, 4, w, 3, oy, ox, 1, 1, 1);
    expect_floats(r.data[0], want, 16, 1e-4f);
    res_free(&r);

    /* stride 2, asymmetric pads (top/left 0, bottom/right 1) */
    node_init(&t, CS_OP_CONV, 2, 1);
    attr_ints(&t, "strides", INTS(2, 2));
    attr_ints(&t, "pads", INTS(0, 0, 1, 1));
    r = run(&t, in, d);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 1, 1, 2, 2);
    for (int oy = 0; oy < 2; oy++)
        for (int ox = 0; ox < 2; ox++) want[oy * 2 + ox] = conv_at(x, 4, 4, w, 3, oy, ox, 2, 0, 0);
    expect_floats(r.data[0], want, 4, 1e-4f);
    res_free(&r);

    /* SAME_LOWER with an even kernel: the odd pad goes first (top/left) */
    cs_shape w2s = SHF(1, 1, 2, 2);
    float w2[4] = {1, 2, 3, 4};
    const cs_shape *in2[] = {&xs, &w2s};
    const void *d2[] = {x, w2};
    node_init(&t, CS_OP_CONV, 2, 1);
    attr_s(&t, "auto_pad", "SAME_LOWER");
    r = run(&t, in2, d2);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 1, 1, 4, 4);
    for (int oy = 0; oy < 4; oy++)
        for (int ox = 0; ox < 4; ox++) want[oy * 4 + ox] = conv_at(x, 4, 4, w2, 2, oy, ox, 1, 1, 1);
    expect_floats(r.data[0], want, 16, 1e-4f);
    res_free(&r);
}

static void test_conv_bias_fused(void **state) {
    (void)state;
    set_opset(13);
    /* 2 input channels, 2 output channels, 1x1 kernel, bias, residual, relu */
    float x[8] = {1, 2, 3, 4, -1, -2, -3, -4};
    float w[4] = {1, 1, 2, -1}; /* out0 = x0 + x1; out1 = 2*x0 - x1 */
    float b[2] = {0.5f, -10};
    float res_in[8] = {1, 1, 1, 1, 0, 0, 0, 100};
    cs_shape xs = SHF(1, 2, 2, 2), ws = SHF(2, 2, 1, 1), bs = SHF(2), ss = SHF(1, 2, 2, 2);
    tnode t;
    node_init(&t, CS_OP_CONV, 3, 1);
    t.n.sum_input = 7;
    t.n.nfused = 1;
    t.n.fused[0].kind = CS_ACT_RELU;
    const cs_shape *in[] = {&xs, &ws, &bs, &ss};
    const void *d[] = {x, w, b, res_in};
    res r = run(&t, in, d);
    expect_ok(r.st);
    /* out0 = x0 + x1 + 0.5 + 1; out1 = 2x0 - x1 - 10 = 3x0 - 10 -> -7,-4,-1,2,
     * plus residual 0,0,0,100, then relu. */
    float want[8] = {1.5f, 1.5f, 1.5f, 1.5f, 0, 0, 0, 102};
    expect_floats(r.data[0], want, 8, 1e-5f);
    res_free(&r);
}

static void test_conv_shapes(void **state) {
    (void)state;
    set_opset(13);
    cs_shape out[1];
    tnode t;
    /* SAME_UPPER stride 2 on 7: out 4, total pad 2 */
    cs_shape xs = SHF(-1, 8, 7, 7), ws = SHF(16, 2, 3, 3);
    node_init(&t, CS_OP_CONV, 2, 1);
    attr_s(&t, "auto_pad", "SAME_UPPER");
    attr_ints(&t, "strides", INTS(2, 2));
    attr_i(&t, "group", 4);
    const cs_shape *in[] = {&xs, &ws};
    expect_ok(infer(&t, in, NULL, out));
    EXPECT_SHAPE(&out[0], CS_DT_FLOAT, -1, 16, 4, 4); /* batch stays unknown */

    /* dilation 2: effective kernel 5 */
    node_init(&t, CS_OP_CONV, 2, 1);
    attr_ints(&t, "dilations", INTS(2, 2));
    attr_i(&t, "group", 4);
    expect_ok(infer(&t, in, NULL, out));
    EXPECT_SHAPE(&out[0], CS_DT_FLOAT, -1, 16, 3, 3);

    /* channel mismatch */
    node_init(&t, CS_OP_CONV, 2, 1);
    expect_error(infer(&t, in, NULL, out), CS_EINVAL, "channels");

    /* 1-D conv */
    cs_shape x1 = SHF(2, 3, 10), w1 = SHF(4, 3, 3);
    const cs_shape *in1[] = {&x1, &w1};
    node_init(&t, CS_OP_CONV, 2, 1);
    attr_s(&t, "auto_pad", "VALID");
    expect_ok(infer(&t, in1, NULL, out));
    EXPECT_SHAPE(&out[0], CS_DT_FLOAT, 2, 4, 8);
}

/* ---- pooling -------------------------------------------------------------- */

static void test_maxpool_ceil(void **state) {
    (void)state;
    set_opset(13);
    float x[25];
    iota(x, 25, 0);
    cs_shape xs = SHF(1, 1, 5, 5);
    tnode t;
    node_init(&t, CS_OP_MAXPOOL, 1, 1);
    attr_ints(&t, "kernel_shape", INTS(2, 2));
    attr_ints(&t, "strides", INTS(2, 2));
    attr_i(&t, "ceil_mode", 1);
    const cs_shape *in[] = {&xs};
    const void *d[] = {x};
    res r = run(&t, in, d);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 1, 1, 3, 3);
    float want[9] = {6, 8, 9, 16, 18, 19, 21, 23, 24};
    expect_floats(r.data[0], want, 9, 0);
    res_free(&r);

    /* torch's rule: with pad 1, ceil would give 4 windows, but the last one
     * would start in the right padding, so 3. */
    cs_shape out[1];
    node_init(&t, CS_OP_MAXPOOL, 1, 1);
    attr_ints(&t, "kernel_shape", INTS(2, 2));
    attr_ints(&t, "strides", INTS(2, 2));
    attr_ints(&t, "pads", INTS(1, 1, 1, 1));
    attr_i(&t, "ceil_mode", 1);
    expect_ok(infer(&t, in, NULL, out));
    EXPECT_SHAPE(&out[0], CS_DT_FLOAT, 1, 1, 3, 3);
    node_init(&t, CS_OP_MAXPOOL, 1, 1); /* floor mode for contrast */
    attr_ints(&t, "kernel_shape", INTS(3, 3));
    attr_ints(&t, "strides", INTS(2, 2));
    expect_ok(infer(&t, in, NULL, out));
    EXPECT_SHAPE(&out[0], CS_DT_FLOAT, 1, 1, 2, 2);

    /* dilation 2: effective window 3, taps at 0 and 2 */
    node_init(&t, CS_OP_MAXPOOL, 1, 1);
    attr_ints(&t, "kernel_shape", INTS(2, 2));
    attr_ints(&t, "dilations", INTS(2, 2));
    r = run(&t, in, d);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 1, 1, 3, 3);
    expect_floats(r.data[0], (float[]){12, 13, 14, 17, 18, 19, 22, 23, 24}, 9, 0);
    res_free(&r);

    /* Indices output (second output) */
    node_init(&t, CS_OP_MAXPOOL, 1, 2);
    attr_ints(&t, "kernel_shape", INTS(2, 2));
    attr_ints(&t, "strides", INTS(2, 2));
    r = run(&t, in, d);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[1], CS_DT_INT64, 1, 1, 2, 2);
    expect_ints(r.data[1], (int64_t[]){6, 8, 16, 18}, 4);
    res_free(&r);
}

static void test_avgpool_pad(void **state) {
    (void)state;
    set_opset(13);
    float x[9];
    for (int i = 0; i < 9; i++) x[i] = 1.0f;
    cs_shape xs = SHF(1, 1, 3, 3);
    const cs_shape *in[] = {&xs};
    const void *d[] = {x};
    for (int include = 0; include <= 1; include++) {
        tnode t;
        node_init(&t, CS_OP_AVGPOOL, 1, 1);
        attr_ints(&t, "kernel_shape", INTS(3, 3));
        attr_ints(&t, "pads", INTS(1, 1, 1, 1));
        attr_i(&t, "count_include_pad", include);
        res r = run(&t, in, d);
        expect_ok(r.st);
        EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 1, 1, 3, 3);
        float *y = r.data[0];
        if (include) {
            float want[9] = {4 / 9.f, 6 / 9.f, 4 / 9.f, 6 / 9.f, 1, 6 / 9.f, 4 / 9.f, 6 / 9.f, 4 / 9.f};
            expect_floats(y, want, 9, 1e-6f);
        } else {
            float want[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
            expect_floats(y, want, 9, 1e-6f);
        }
        res_free(&r);
    }
    /* ceil_mode overhang past the right padding is not counted even with
     * count_include_pad (torch): 1x1x4 input 1..4 (as 2-D 1x4), k 3 s 2 pad 1
     * -> windows [-1,2) [1,4) [3,6)->clipped to pad end 5: divisor 2. */
    float x4[4] = {1, 2, 3, 4};
    cs_shape x4s = SHF(1, 1, 1, 4);
    const cs_shape *in4[] = {&x4s};
    const void *d4[] = {x4};
    tnode t;
    node_init(&t, CS_OP_AVGPOOL, 1, 1);
    attr_ints(&t, "kernel_shape", INTS(1, 3));
    attr_ints(&t, "strides", INTS(1, 2));
    attr_ints(&t, "pads", INTS(0, 1, 0, 1));
    attr_i(&t, "count_include_pad", 1);
    attr_i(&t, "ceil_mode", 1);
    res r = run(&t, in4, d4);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 1, 1, 1, 3);
    expect_floats(r.data[0], (float[]){3 / 3.f, 9 / 3.f, 4 / 2.f}, 3, 1e-6f);
    res_free(&r);
}

static void test_global_pool(void **state) {
    (void)state;
    float x[8] = {1, 2, 3, 4, -1, -5, 0, 2};
    cs_shape xs = SHF(1, 2, 2, 2);
    const cs_shape *in[] = {&xs};
    const void *d[] = {x};
    tnode t;
    node_init(&t, CS_OP_GLOBALAVGPOOL, 1, 1);
    res r = run(&t, in, d);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 1, 2, 1, 1);
    expect_floats(r.data[0], (float[]){2.5f, -1}, 2, 1e-6f);
    res_free(&r);
    node_init(&t, CS_OP_GLOBALMAXPOOL, 1, 1);
    r = run(&t, in, d);
    expect_ok(r.st);
    expect_floats(r.data[0], (float[]){4, 2}, 2, 0);
    res_free(&r);
}

/* ---- gemm / matmul ---------------------------------------------------------- */

static void test_gemm(void **state) {
    (void)state;
    float a[6] = {1, 2, 3, 4, 5, 6};               /* 2x3 */
    float b[12] = {1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1}; /* 4x3, used transposed */
    float cv[4] = {10, 20, 30, 40};
    cs_shape as = SHF(2, 3), bs = SHF(4, 3), cs = SHF(4);
    tnode t;
    node_init(&t, CS_OP_GEMM, 3, 1);
    attr_i(&t, "transB", 1);
    attr_f(&t, "alpha", 2.0f);
    attr_f(&t, "beta", 0.5f);
    const cs_shape *in[] = {&as, &bs, &cs};
    const void *d[] = {a, b, cv};
    res r = run(&t, in, d);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 2, 4);
    float want[8];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++) {
            float s = 0;
            for (int k = 0; k < 3; k++) s += a[i * 3 + k] * b[j * 3 + k];
            want[i * 4 + j] = 2 * s + 0.5f * cv[j];
        }
    expect_floats(r.data[0], want, 8, 1e-5f);
    res_free(&r);

    /* transA with a [M,1] C and fused clip */
    float at[6] = {1, 4, 2, 5, 3, 6}; /* 3x2 = a^T */
    float bn[6] = {1, 0, 0, 1, 1, 1}; /* 3x2 */
    float c2[2] = {-100, 100};
    cs_shape ats = SHF(3, 2), bns = SHF(3, 2), c2s = SHF(2, 1);
    node_init(&t, CS_OP_GEMM, 3, 1);
    attr_i(&t, "transA", 1);
    t.n.nfused = 1;
    t.n.fused[0] = (cs_fused_act){CS_ACT_CLIP, 0.0f, 50.0f};
    const cs_shape *in2[] = {&ats, &bns, &c2s};
    const void *d2[] = {at, bn, c2};
    r = run(&t, in2, d2);
    expect_ok(r.st);
    /* A*B = [[4,5],[10,11]] ; + C row-wise -> [[-96,-95],[110,111]] -> clip */
    expect_floats(r.data[0], (float[]){0, 0, 50, 50}, 4, 1e-5f);
    res_free(&r);

    cs_shape bad = SHF(4, 2);
    const cs_shape *in3[] = {&as, &bad};
    cs_shape out[1];
    node_init(&t, CS_OP_GEMM, 2, 1);
    expect_error(infer(&t, in3, NULL, out), CS_EINVAL, "inner");
}

static void test_matmul(void **state) {
    (void)state;
    float a[12], b[6];
    iota(a, 12, 0);
    iota(b, 6, 1);
    cs_shape as = SHF(2, 1, 2, 3), bs = SHF(3, 2);
    tnode t;
    node_init(&t, CS_OP_MATMUL, 2, 1);
    const cs_shape *in[] = {&as, &bs};
    const void *d[] = {a, b};
    res r = run(&t, in, d);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 2, 1, 2, 2);
    float want[8];
    for (int m = 0; m < 4; m++)
        for (int j = 0; j < 2; j++) {
            float s = 0;
            for (int k = 0; k < 3; k++) s += a[m * 3 + k] * b[k * 2 + j];
            want[m * 2 + j] = s;
        }
    expect_floats(r.data[0], want, 8, 1e-5f);
    res_free(&r);

    /* batch broadcast on the right operand: [2,3] x [4,3,1] -> [4,2,1] */
    float b2[12];
    iota(b2, 12, -3);
    cs_shape a2s = SHF(2, 3), b2s = SHF(4, 3, 1);
    const cs_shape *in2[] = {&a2s, &b2s};
    const void *d2[] = {a, b2};
    r = run(&t, in2, d2);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 4, 2, 1);
    for (int bt = 0; bt < 4; bt++)
        for (int i = 0; i < 2; i++) {
            float s = 0;
            for (int k = 0; k < 3; k++) s += a[i * 3 + k] * b2[bt * 3 + k];
            want[bt * 2 + i] = s;
        }
    expect_floats(r.data[0], want, 8, 1e-5f);
    res_free(&r);

    /* 1-D operands: vector x matrix, matrix x vector */
    cs_shape v = SHF(3), m = SHF(3, 2), m2 = SHF(2, 3);
    cs_shape out[1];
    const cs_shape *in3[] = {&v, &m};
    expect_ok(infer(&t, in3, NULL, out));
    EXPECT_SHAPE(&out[0], CS_DT_FLOAT, 2);
    const cs_shape *in4[] = {&m2, &v};
    const void *d4[] = {a, b};
    r = run(&t, in4, d4);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 2);
    expect_floats(r.data[0], (float[]){0 * 1 + 1 * 2 + 2 * 3, 3 * 1 + 4 * 2 + 5 * 3}, 2, 1e-5f);
    res_free(&r);
    const cs_shape *in5[] = {&v, &v};
    expect_ok(infer(&t, in5, NULL, out));
    assert_int_equal(out[0].ndim, 0);
}

/* ---- normalisation ------------------------------------------------------------ */

static void test_batchnorm(void **state) {
    (void)state;
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    float sc[2] = {2, 1}, bi[2] = {0, 1}, mean[2] = {2.5f, 0}, var[2] = {4, 1};
    cs_shape xs = SHF(1, 2, 2, 2), p = SHF(2);
    tnode t;
    node_init(&t, CS_OP_BATCHNORM, 5, 1);
    attr_f(&t, "epsilon", 0.0f);
    const cs_shape *in[] = {&xs, &p, &p, &p, &p};
    const void *d[] = {x, sc, bi, mean, var};
    res r = run(&t, in, d);
    expect_ok(r.st);
    float want[8];
    for (int i = 0; i < 8; i++) {
        int c = i / 4;
        want[i] = (x[i] - mean[c]) / sqrtf(var[c]) * sc[c] + bi[c];
    }
    expect_floats(r.data[0], want, 8, 1e-5f);
    res_free(&r);
}

static void test_layernorm(void **state) {
    (void)state;
    set_opset(17);
    float x[8] = {1, 2, 3, 4, -2, 0, 2, 8};
    float sc[4] = {1, 2, 0.5f, 1}, bi[4] = {0, 1, 0, -1};
    cs_shape xs = SHF(2, 4), ps = SHF(4);
    tnode t;
    node_init(&t, CS_OP_LAYERNORM, 3, 3);
    attr_f(&t, "epsilon", 1e-5f);
    const cs_shape *in[] = {&xs, &ps, &ps};
    const void *d[] = {x, sc, bi};
    res r = run(&t, in, d);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 2, 4);
    EXPECT_SHAPE(&r.out[1], CS_DT_FLOAT, 2, 1);
    float want[8];
    for (int row = 0; row < 2; row++) {
        float m = 0, v = 0;
        for (int i = 0; i < 4; i++) m += x[row * 4 + i] / 4;
        for (int i = 0; i < 4; i++) v += (x[row * 4 + i] - m) * (x[row * 4 + i] - m) / 4;
        for (int i = 0; i < 4; i++)
            want[row * 4 + i] = (x[row * 4 + i] - m) / sqrtf(v + 1e-5f) * sc[i] + bi[i];
    }
    expect_floats(r.data[0], want, 8, 1e-4f);
    expect_floats(r.data[1], (float[]){2.5f, 2}, 2, 1e-6f);
    res_free(&r);
}

static void softmax_ref(const float *x, float *y, int n, int stride) {
    float m = -INFINITY, s = 0;
    for (int i = 0; i < n; i++) m = fmaxf(m, x[i * stride]);
    for (int i = 0; i < n; i++) s += expf(x[i * stride] - m);
    for (int i = 0; i < n; i++) y[i * stride] = expf(x[i * stride] - m) / s;
}

static void test_softmax_opsets(void **state) {
    (void)state;
    float x[8] = {1, 2, 3, 4, 0, -1, 5, 0.5f};
    cs_shape xs = SHF(2, 2, 2);
    const cs_shape *in[] = {&xs};
    const void *d[] = {x};
    tnode t;
    float want[8];

    /* opset 11, default axis 1: coerced to 2x4, softmax over 4 values */
    set_opset(11);
    node_init(&t, CS_OP_SOFTMAX, 1, 1);
    res r = run(&t, in, d);
    expect_ok(r.st);
    softmax_ref(x, want, 4, 1);
    softmax_ref(x + 4, want + 4, 4, 1);
    expect_floats(r.data[0], want, 8, 1e-6f);
    res_free(&r);

    /* opset 13, default axis -1: pairs */
    set_opset(13);
    r = run(&t, in, d);
    expect_ok(r.st);
    for (int i = 0; i < 4; i++) softmax_ref(x + 2 * i, want + 2 * i, 2, 1);
    expect_floats(r.data[0], want, 8, 1e-6f);
    res_free(&r);

    /* opset 13, axis 1: strided per-axis softmax (not the 2-D coercion) */
    node_init(&t, CS_OP_SOFTMAX, 1, 1);
    attr_i(&t, "axis", 1);
    r = run(&t, in, d);
    expect_ok(r.st);
    for (int b = 0; b < 2; b++)
        for (int j = 0; j < 2; j++) softmax_ref(x + 4 * b + j, want + 4 * b + j, 2, 2);
    expect_floats(r.data[0], want, 8, 1e-6f);
    res_free(&r);
}

/* ---- elementwise --------------------------------------------------------------- */

static void test_broadcast_add(void **state) {
    (void)state;
    float a[6] = {1, 2, 3, 4, 5, 6}, b[4] = {10, 20, 30, 40};
    cs_shape as = SHF(2, 3, 1), bs = SHF(4);
    tnode t;
    node_init(&t, CS_OP_ADD, 2, 1);
    const cs_shape *in[] = {&as, &bs};
    const void *d[] = {a, b};
    res r = run(&t, in, d);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 2, 3, 4);
    float want[24];
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 4; j++) want[i * 4 + j] = a[i] + b[j];
    expect_floats(r.data[0], want, 24, 0);
    res_free(&r);

    /* middle-axis broadcast: [2,1,3] - [1,2,1] */
    cs_shape s1 = SHF(2, 1, 3), s2 = SHF(1, 2, 1);
    float c2[2] = {100, 200};
    const cs_shape *in2[] = {&s1, &s2};
    const void *d2[] = {a, c2};
    node_init(&t, CS_OP_SUB, 2, 1);
    r = run(&t, in2, d2);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 2, 2, 3);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            for (int k = 0; k < 3; k++) want[(i * 2 + j) * 3 + k] = a[i * 3 + k] - c2[j];
    expect_floats(r.data[0], want, 12, 0);
    res_free(&r);

    /* unknown batch propagates; mismatch is an error */
    cs_shape u = SHF(-1, 3), v = SHF(1, 3), w = SHF(2, 4);
    cs_shape out[1];
    const cs_shape *in3[] = {&u, &v};
    node_init(&t, CS_OP_MUL, 2, 1);
    expect_ok(infer(&t, in3, NULL, out));
    EXPECT_SHAPE(&out[0], CS_DT_FLOAT, -1, 3);
    const cs_shape *in4[] = {&u, &w};
    expect_error(infer(&t, in4, NULL, out), CS_EINVAL, "broadcast");
}

static void test_int64_arith(void **state) {
    (void)state;
    int64_t a[3] = {7, -7, 9}, b[1] = {2};
    cs_shape as = SHI(3), bs = SHI(1);
    const cs_shape *in[] = {&as, &bs};
    const void *d[] = {a, b};
    tnode t;
    node_init(&t, CS_OP_DIV, 2, 1);
    res r = run(&t, in, d);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_INT64, 3);
    expect_ints(r.data[0], (int64_t[]){3, -3, 4}, 3); /* truncation */
    res_free(&r);
    node_init(&t, CS_OP_MUL, 2, 1);
    r = run(&t, in, d);
    expect_ok(r.st);
    expect_ints(r.data[0], (int64_t[]){14, -14, 18}, 3);
    res_free(&r);

    /* mixed element types are rejected */
    cs_shape fs = SHF(3);
    const cs_shape *in2[] = {&as, &fs};
    cs_shape out[1];
    node_init(&t, CS_OP_ADD, 2, 1);
    expect_error(infer(&t, in2, NULL, out), CS_EINVAL, "element types");
}

static void test_pow_and_unary(void **state) {
    (void)state;
    float x[5] = {-3, -0.5f, 0, 1, 4};
    cs_shape xs = SHF(5), two = SCALAR(CS_DT_FLOAT);
    float e2 = 2.0f;
    tnode t;
    node_init(&t, CS_OP_POW, 2, 1);
    const cs_shape *in[] = {&xs, &two};
    const void *d[] = {x, &e2};
    res r = run(&t, in, d);
    expect_ok(r.st);
    expect_floats(r.data[0], (float[]){9, 0.25f, 0, 1, 16}, 5, 0);
    res_free(&r);

    const cs_shape *in1[] = {&xs};
    const void *d1[] = {x};
    float want[5];

    node_init(&t, CS_OP_HARDSIGMOID, 1, 1); /* defaults alpha .2, beta .5 */
    r = run(&t, in1, d1);
    expect_ok(r.st);
    for (int i = 0; i < 5; i++) want[i] = fmaxf(0, fminf(1, 0.2f * x[i] + 0.5f));
    expect_floats(r.data[0], want, 5, 1e-6f);
    res_free(&r);

    node_init(&t, CS_OP_HARDSWISH, 1, 1);
    r = run(&t, in1, d1);
    expect_ok(r.st);
    for (int i = 0; i < 5; i++) want[i] = x[i] * fmaxf(0, fminf(6, x[i] + 3)) / 6;
    expect_floats(r.data[0], want, 5, 1e-6f);
    res_free(&r);

    node_init(&t, CS_OP_LEAKYRELU, 1, 1);
    r = run(&t, in1, d1);
    expect_ok(r.st);
    expect_floats(r.data[0], (float[]){-0.03f, -0.005f, 0, 1, 4}, 5, 1e-7f);
    res_free(&r);

    node_init(&t, CS_OP_GELU, 1, 1);
    r = run(&t, in1, d1);
    expect_ok(r.st);
    for (int i = 0; i < 5; i++) want[i] = 0.5f * x[i] * (1 + erff(x[i] / sqrtf(2)));
    expect_floats(r.data[0], want, 5, 1e-6f);
    res_free(&r);

    /* Clip opset 11+: min given, max omitted (NULL slot) */
    float lo = -1;
    cs_shape ls = SCALAR(CS_DT_FLOAT);
    const cs_shape *in3[] = {&xs, &ls, NULL};
    const void *d3[] = {x, &lo, NULL};
    node_init(&t, CS_OP_CLIP, 3, 1);
    r = run(&t, in3, d3);
    expect_ok(r.st);
    expect_floats(r.data[0], (float[]){-1, -0.5f, 0, 1, 4}, 5, 0);
    res_free(&r);

    struct {
        cs_op op;
        float (*f)(float);
    } simple[] = {{CS_OP_SQRT, sqrtf}, {CS_OP_EXP, expf}, {CS_OP_ERF, erff}, {CS_OP_TANH, tanhf}};
    float pos[3] = {0.25f, 1, 9};
    cs_shape ps = SHF(3);
    const cs_shape *inp[] = {&ps};
    const void *dp[] = {pos};
    for (size_t k = 0; k < sizeof simple / sizeof simple[0]; k++) {
        node_init(&t, simple[k].op, 1, 1);
        r = run(&t, inp, dp);
        expect_ok(r.st);
        for (int i = 0; i < 3; i++) want[i] = simple[k].f(pos[i]);
        expect_floats(r.data[0], want, 3, 1e-6f);
        res_free(&r);
    }
    node_init(&t, CS_OP_RECIPROCAL, 1, 1);
    r = run(&t, inp, dp);
    expect_ok(r.st);
    expect_floats(r.data[0], (float[]){4, 1, 1 / 9.f}, 3, 1e-7f);
    res_free(&r);
}

static void test_act_apply(void **state) {
    (void)state;
    const float x[4] = {-2, -0.5f, 0.5f, 3};
    struct {
        cs_fused_act a;
        float want[4];
    } cases[] = {
        {{CS_ACT_RELU, 0, 0}, {0, 0, 0.5f, 3}},
        {{CS_ACT_CLIP, -1, 1}, {-1, -0.5f, 0.5f, 1}},
        {{CS_ACT_LEAKYRELU, 0.1f, 0}, {-0.2f, -0.05f, 0.5f, 3}},
        {{CS_ACT_HARDSIGMOID, 0.5f, 0.5f}, {0, 0.25f, 0.75f, 1}},
        {{CS_ACT_HARDSWISH, 0, 0}, {-2 * 1 / 6.f, -0.5f * 2.5f / 6, 0.5f * 3.5f / 6, 3}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        float y[4];
        memcpy(y, x, sizeof y);
        cs_act_apply(&cases[k].a, y, 4);
        expect_floats(y, cases[k].want, 4, 1e-6f);
    }
    float y[4], want[4];
    cs_fused_act sig = {CS_ACT_SIGMOID, 0, 0}, sw = {CS_ACT_SWISH, 0, 0},
                 ge = {CS_ACT_GELU_ERF, 0, 0}, th = {CS_ACT_TANH, 0, 0};
    memcpy(y, x, sizeof y);
    cs_act_apply(&sig, y, 4);
    for (int i = 0; i < 4; i++) want[i] = 1 / (1 + expf(-x[i]));
    expect_floats(y, want, 4, 1e-6f);
    memcpy(y, x, sizeof y);
    cs_act_apply(&sw, y, 4);
    for (int i = 0; i < 4; i++) want[i] = x[i] / (1 + expf(-x[i]));
    expect_floats(y, want, 4, 1e-6f);
    memcpy(y, x, sizeof y);
    cs_act_apply(&ge, y, 4);
    for (int i = 0; i < 4; i++) want[i] = 0.5f * x[i] * (1 + erff(x[i] / sqrtf(2)));
    expect_floats(y, want, 4, 1e-6f);
    memcpy(y, x, sizeof y);
    cs_act_apply(&th, y, 4);
    for (int i = 0; i < 4; i++) want[i] = tanhf(x[i]);
    expect_floats(y, want, 4, 1e-6f);
}

static void test_cast_dropout(void **state) {
    (void)state;
    float x[4] = {1.9f, -1.9f, 0, 3};
    cs_shape xs = SHF(4);
    const cs_shape *in[] = {&xs};
    const void *d[] = {x};
    tnode t;
    node_init(&t, CS_OP_CAST, 1, 1);
    attr_i(&t, "to", CS_DT_INT64);
    res r = run(&t, in, d);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_INT64, 4);
    expect_ints(r.data[0], (int64_t[]){1, -1, 0, 3}, 4);
    int64_t back[4];
    memcpy(back, r.data[0], sizeof back);
    res_free(&r);

    cs_shape is = SHI(4);
    const cs_shape *in2[] = {&is};
    const void *d2[] = {back};
    node_init(&t, CS_OP_CAST, 1, 1);
    attr_i(&t, "to", CS_DT_FLOAT);
    r = run(&t, in2, d2);
    expect_ok(r.st);
    expect_floats(r.data[0], (float[]){1, -1, 0, 3}, 4, 0);
    res_free(&r);

    node_init(&t, CS_OP_DROPOUT, 1, 2);
    r = run(&t, in, d);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[1], CS_DT_BOOL, 4);
    expect_floats(r.data[0], x, 4, 0);
    res_free(&r);
}

/* ---- reductions ------------------------------------------------------------------- */

static void test_reduce(void **state) {
    (void)state;
    float x[24];
    iota(x, 24, 0);
    cs_shape xs = SHF(2, 3, 4);
    tnode t;
    set_opset(13);
    /* ReduceMean axes attribute, keepdims default */
    node_init(&t, CS_OP_REDUCEMEAN, 1, 1);
    attr_ints(&t, "axes", INTS(-1));
    const cs_shape *in[] = {&xs};
    const void *d[] = {x};
    res r = run(&t, in, d);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 2, 3, 1);
    expect_floats(r.data[0], (float[]){1.5f, 5.5f, 9.5f, 13.5f, 17.5f, 21.5f}, 6, 1e-6f);
    res_free(&r);

    /* ReduceSum opset 13: axes input, non-contiguous axes, keepdims 0 */
    int64_t axes[2] = {0, 2};
    cs_shape axs = SHI(2);
    const cs_shape *in2[] = {&xs, &axs};
    const void *d2[] = {x, axes};
    node_init(&t, CS_OP_REDUCESUM, 2, 1);
    attr_i(&t, "keepdims", 0);
    r = run(&t, in2, d2);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 3);
    float want[3];
    for (int j = 0; j < 3; j++) {
        want[j] = 0;
        for (int i = 0; i < 2; i++)
            for (int k = 0; k < 4; k++) want[j] += x[(i * 3 + j) * 4 + k];
    }
    expect_floats(r.data[0], want, 3, 1e-5f);
    res_free(&r);

    /* axis 1 only (inner stays contiguous) */
    node_init(&t, CS_OP_REDUCEMEAN, 1, 1);
    attr_ints(&t, "axes", INTS(1));
    r = run(&t, in, d);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 2, 1, 4);
    expect_floats(r.data[0], (float[]){4, 5, 6, 7, 16, 17, 18, 19}, 8, 1e-5f);
    res_free(&r);

    /* no axes: reduce everything */
    node_init(&t, CS_OP_REDUCESUM, 1, 1);
    r = run(&t, in, d);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 1, 1, 1);
    expect_floats(r.data[0], (float[]){276}, 1, 0);
    res_free(&r);

    /* axes input that is not constant */
    cs_shape out[1];
    const void *d3[] = {NULL, NULL};
    node_init(&t, CS_OP_REDUCESUM, 2, 1);
    expect_error(infer(&t, in2, d3, out), CS_EINVAL, "constant");
}

/* ---- shape ops ------------------------------------------------------------------- */

static void test_reshape(void **state) {
    (void)state;
    int64_t shp[2] = {0, -1};
    cs_shape xs = SHF(2, 3, 4), ss = SHI(2), out[1];
    const cs_shape *in[] = {&xs, &ss};
    const void *d[] = {NULL, shp};
    tnode t;
    node_init(&t, CS_OP_RESHAPE, 2, 1);
    expect_ok(infer(&t, in, d, out));
    EXPECT_SHAPE(&out[0], CS_DT_FLOAT, 2, 12);

    /* unknown batch copied by 0: the -1 is still inferable */
    cs_shape bs = SHF(-1, 3, 4);
    const cs_shape *inb[] = {&bs, &ss};
    expect_ok(infer(&t, inb, d, out));
    EXPECT_SHAPE(&out[0], CS_DT_FLOAT, -1, 12);

    /* allowzero=1 keeps a literal 0 */
    int64_t z[2] = {0, 5};
    cs_shape es = SHF(0, 3);
    const cs_shape *inz[] = {&es, &ss};
    const void *dz[] = {NULL, z};
    node_init(&t, CS_OP_RESHAPE, 2, 1);
    attr_i(&t, "allowzero", 1);
    expect_ok(infer(&t, inz, dz, out));
    EXPECT_SHAPE(&out[0], CS_DT_FLOAT, 0, 5);

    /* errors: non-constant shape, bad element count, two -1 */
    node_init(&t, CS_OP_RESHAPE, 2, 1);
    const void *dn[] = {NULL, NULL};
    expect_error(infer(&t, in, dn, out), CS_EINVAL, "constant");
    int64_t bad[2] = {5, -1};
    const void *db[] = {NULL, bad};
    expect_error(infer(&t, in, db, out), CS_EINVAL, "reshape");
    int64_t two[2] = {-1, -1};
    const void *dt[] = {NULL, two};
    expect_error(infer(&t, in, dt, out), CS_EINVAL, "-1");

    /* data is copied */
    float x[24];
    iota(x, 24, 0);
    const void *dd[] = {x, shp};
    res r = run(&t, in, dd);
    expect_ok(r.st);
    expect_floats(r.data[0], x, 24, 0);
    res_free(&r);
}

static void test_flatten_squeeze(void **state) {
    (void)state;
    cs_shape xs = SHF(-1, 3, 1, 5), out[1];
    const cs_shape *in[] = {&xs};
    tnode t;
    node_init(&t, CS_OP_FLATTEN, 1, 1);
    expect_ok(infer(&t, in, NULL, out));
    EXPECT_SHAPE(&out[0], CS_DT_FLOAT, -1, 15);
    node_init(&t, CS_OP_FLATTEN, 1, 1);
    attr_i(&t, "axis", -1);
    expect_ok(infer(&t, in, NULL, out));
    EXPECT_SHAPE(&out[0], CS_DT_FLOAT, -1, 5);
    node_init(&t, CS_OP_FLATTEN, 1, 1);
    attr_i(&t, "axis", 0);
    expect_ok(infer(&t, in, NULL, out));
    EXPECT_SHAPE(&out[0], CS_DT_FLOAT, 1, -1);

    /* Squeeze opset 11 attribute form vs 13 input form */
    set_opset(11);
    node_init(&t, CS_OP_SQUEEZE, 1, 1);
    attr_ints(&t, "axes", INTS(2));
    expect_ok(infer(&t, in, NULL, out));
    EXPECT_SHAPE(&out[0], CS_DT_FLOAT, -1, 3, 5);
    set_opset(13);
    int64_t ax[1] = {-2};
    cs_shape axs = SHI(1);
    const cs_shape *in2[] = {&xs, &axs};
    const void *d2[] = {NULL, ax};
    node_init(&t, CS_OP_SQUEEZE, 2, 1);
    expect_ok(infer(&t, in2, d2, out));
    EXPECT_SHAPE(&out[0], CS_DT_FLOAT, -1, 3, 5);
    node_init(&t, CS_OP_SQUEEZE, 1, 1); /* no axes: known 1s go */
    expect_ok(infer(&t, in, NULL, out));
    EXPECT_SHAPE(&out[0], CS_DT_FLOAT, -1, 3, 5);
    ax[0] = 1; /* size 3: error */
    node_init(&t, CS_OP_SQUEEZE, 2, 1);
    expect_error(infer(&t, in2, d2, out), CS_EINVAL, "squeeze");

    /* Unsqueeze both forms, negative axes counted against the output rank */
    set_opset(11);
    node_init(&t, CS_OP_UNSQUEEZE, 1, 1);
    attr_ints(&t, "axes", INTS(0, -1));
    expect_ok(infer(&t, in, NULL, out));
    EXPECT_SHAPE(&out[0], CS_DT_FLOAT, 1, -1, 3, 1, 5, 1);
    set_opset(13);
    int64_t ua[2] = {1, 3};
    cs_shape uas = SHI(2);
    const cs_shape *in3[] = {&xs, &uas};
    const void *d3[] = {NULL, ua};
    node_init(&t, CS_OP_UNSQUEEZE, 2, 1);
    expect_ok(infer(&t, in3, d3, out));
    EXPECT_SHAPE(&out[0], CS_DT_FLOAT, -1, 1, 3, 1, 1, 5);
}

static void test_transpose(void **state) {
    (void)state;
    float x[24];
    iota(x, 24, 0);
    cs_shape xs = SHF(2, 3, 4);
    const cs_shape *in[] = {&xs};
    const void *d[] = {x};
    tnode t;
    node_init(&t, CS_OP_TRANSPOSE, 1, 1);
    attr_ints(&t, "perm", INTS(1, 2, 0));
    res r = run(&t, in, d);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 3, 4, 2);
    float want[24];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 4; k++) want[(j * 4 + k) * 2 + i] = x[(i * 3 + j) * 4 + k];
    expect_floats(r.data[0], want, 24, 0);
    res_free(&r);

    node_init(&t, CS_OP_TRANSPOSE, 1, 1); /* default: reversed */
    r = run(&t, in, d);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 4, 3, 2);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 4; k++) want[(k * 3 + j) * 2 + i] = x[(i * 3 + j) * 4 + k];
    expect_floats(r.data[0], want, 24, 0);
    res_free(&r);

    cs_shape out[1];
    node_init(&t, CS_OP_TRANSPOSE, 1, 1);
    attr_ints(&t, "perm", INTS(0, 0, 1));
    expect_error(infer(&t, in, NULL, out), CS_EINVAL, "permutation");
}

static void test_slice(void **state) {
    (void)state;
    set_opset(13);
    float x[10];
    iota(x, 10, 0);
    cs_shape xs = SHF(10), one = SHI(1);
    int64_t st[1] = {-1}, en[1] = {INT64_MIN}, ax[1] = {0}, sp[1] = {-3};
    const cs_shape *in[] = {&xs, &one, &one, &one, &one};
    const void *d[] = {x, st, en, ax, sp};
    tnode t;
    node_init(&t, CS_OP_SLICE, 5, 1);
    res r = run(&t, in, d);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 4);
    expect_floats(r.data[0], (float[]){9, 6, 3, 0}, 4, 0);
    res_free(&r);

    /* flip: start INT64_MAX clamps to the last element */
    st[0] = INT64_MAX, sp[0] = -1;
    r = run(&t, in, d);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 10);
    expect_floats(r.data[0], (float[]){9, 8, 7, 6, 5, 4, 3, 2, 1, 0}, 10, 0);
    res_free(&r);

    /* 2-D, axes -1, ends INT64_MAX, no steps input; unknown batch kept */
    float y[12];
    iota(y, 12, 0);
    cs_shape ys = SHF(3, 4);
    int64_t s2[1] = {1}, e2[1] = {INT64_MAX}, a2[1] = {-1};
    const cs_shape *in2[] = {&ys, &one, &one, &one};
    const void *d2[] = {y, s2, e2, a2};
    node_init(&t, CS_OP_SLICE, 4, 1);
    r = run(&t, in2, d2);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 3, 3);
    expect_floats(r.data[0], (float[]){1, 2, 3, 5, 6, 7, 9, 10, 11}, 9, 0);
    res_free(&r);
    cs_shape bs = SHF(-1, 4), out[1];
    const cs_shape *in3[] = {&bs, &one, &one, &one};
    expect_ok(infer(&t, in3, d2, out));
    EXPECT_SHAPE(&out[0], CS_DT_FLOAT, -1, 3);

    /* empty result, and int64 data (shape chain) */
    int64_t v[4] = {5, 6, 7, 8}, s4[1] = {-2}, e4[1] = {100};
    cs_shape vs = SHI(4);
    const cs_shape *in4[] = {&vs, &one, &one};
    const void *d4[] = {v, s4, e4};
    node_init(&t, CS_OP_SLICE, 3, 1);
    r = run(&t, in4, d4);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_INT64, 2);
    expect_ints(r.data[0], (int64_t[]){7, 8}, 2);
    res_free(&r);
    s4[0] = 3, e4[0] = 1;
    expect_ok(infer(&t, in4, d4, out));
    EXPECT_SHAPE(&out[0], CS_DT_INT64, 0);

    /* starts not constant */
    const void *d5[] = {v, NULL, e4};
    expect_error(infer(&t, in4, d5, out), CS_EINVAL, "starts");
}

static void test_split(void **state) {
    (void)state;
    float x[12];
    iota(x, 12, 0);
    cs_shape xs = SHF(2, 6);
    tnode t;
    /* opset 11: split attribute */
    set_opset(11);
    node_init(&t, CS_OP_SPLIT, 1, 2);
    attr_i(&t, "axis", 1);
    attr_ints(&t, "split", INTS(2, 4));
    const cs_shape *in[] = {&xs};
    const void *d[] = {x};
    res r = run(&t, in, d);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 2, 2);
    EXPECT_SHAPE(&r.out[1], CS_DT_FLOAT, 2, 4);
    expect_floats(r.data[0], (float[]){0, 1, 6, 7}, 4, 0);
    expect_floats(r.data[1], (float[]){2, 3, 4, 5, 8, 9, 10, 11}, 8, 0);
    res_free(&r);

    /* opset 13: split input */
    set_opset(13);
    int64_t sp[3] = {1, 1, 4};
    cs_shape ss = SHI(3);
    const cs_shape *in2[] = {&xs, &ss};
    const void *d2[] = {x, sp};
    node_init(&t, CS_OP_SPLIT, 2, 3);
    attr_i(&t, "axis", -1);
    r = run(&t, in2, d2);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[2], CS_DT_FLOAT, 2, 4);
    expect_floats(r.data[1], (float[]){1, 7}, 2, 0);
    res_free(&r);

    /* no split: equal parts */
    node_init(&t, CS_OP_SPLIT, 1, 3);
    attr_i(&t, "axis", 1);
    r = run(&t, in, d);
    expect_ok(r.st);
    for (int i = 0; i < 3; i++) EXPECT_SHAPE(&r.out[i], CS_DT_FLOAT, 2, 2);
    expect_floats(r.data[2], (float[]){4, 5, 10, 11}, 4, 0);
    res_free(&r);

    /* errors: uneven equal split, wrong sum */
    cs_shape out[4];
    node_init(&t, CS_OP_SPLIT, 1, 4);
    attr_i(&t, "axis", 1);
    expect_error(infer(&t, in, NULL, out), CS_EINVAL, "equal");
    sp[2] = 3;
    node_init(&t, CS_OP_SPLIT, 2, 3);
    attr_i(&t, "axis", 1);
    expect_error(infer(&t, in2, d2, out), CS_EINVAL, "sum");
}

static void test_concat_gather_chain(void **state) {
    (void)state;
    set_opset(13);
    /* Shape -> Gather(scalar) -> Unsqueeze -> Concat with [-1]: the usual
     * torch.flatten(x, 1) / reshape(n, -1) chain, on int64. */
    cs_shape xs = SHF(4, 3, 5, 5);
    const cs_shape *in[] = {&xs};
    tnode t;
    node_init(&t, CS_OP_SHAPE, 1, 1);
    /* Shape reads no data: folding works even when x is computed. */
    res shp = run(&t, in, (const void *[]){NULL});
    expect_ok(shp.st);
    EXPECT_SHAPE(&shp.out[0], CS_DT_INT64, 4);
    expect_ints(shp.data[0], (int64_t[]){4, 3, 5, 5}, 4);

    int64_t zero = 0;
    cs_shape sc = SCALAR(CS_DT_INT64);
    node_init(&t, CS_OP_GATHER, 2, 1);
    const cs_shape *gin[] = {&shp.out[0], &sc};
    const void *gd[] = {shp.data[0], &zero};
    res ga = run(&t, gin, gd);
    expect_ok(ga.st);
    assert_int_equal(ga.out[0].ndim, 0); /* scalar index reduces rank */
    expect_ints(ga.data[0], (int64_t[]){4}, 1);

    int64_t ax0 = 0;
    cs_shape one = SHI(1);
    node_init(&t, CS_OP_UNSQUEEZE, 2, 1);
    const cs_shape *uin[] = {&ga.out[0], &one};
    const void *ud[] = {ga.data[0], &ax0};
    res un = run(&t, uin, ud);
    expect_ok(un.st);
    EXPECT_SHAPE(&un.out[0], CS_DT_INT64, 1);

    int64_t m1 = -1;
    node_init(&t, CS_OP_CONCAT, 2, 1);
    attr_i(&t, "axis", 0);
    const cs_shape *cin[] = {&un.out[0], &one};
    const void *cd[] = {un.data[0], &m1};
    res cc = run(&t, cin, cd);
    expect_ok(cc.st);
    EXPECT_SHAPE(&cc.out[0], CS_DT_INT64, 2);
    expect_ints(cc.data[0], (int64_t[]){4, -1}, 2);

    /* ... and Reshape consumes it */
    node_init(&t, CS_OP_RESHAPE, 2, 1);
    const cs_shape *rin[] = {&xs, &cc.out[0]};
    const void *rd[] = {NULL, cc.data[0]};
    cs_shape out[1];
    expect_ok(infer(&t, rin, rd, out));
    EXPECT_SHAPE(&out[0], CS_DT_FLOAT, 4, 75);
    res_free(&shp);
    res_free(&ga);
    res_free(&un);
    res_free(&cc);

    /* Shape start/end (opset 15) */
    set_opset(15);
    node_init(&t, CS_OP_SHAPE, 1, 1);
    attr_i(&t, "start", 1);
    attr_i(&t, "end", -1);
    shp = run(&t, in, (const void *[]){NULL});
    expect_ok(shp.st);
    expect_ints(shp.data[0], (int64_t[]){3, 5}, 2);
    res_free(&shp);
}

static void test_gather_concat_float(void **state) {
    (void)state;
    float x[12];
    iota(x, 12, 0);
    cs_shape xs = SHF(3, 4);
    int64_t idx[4] = {-1, 0, 2, 2};
    cs_shape is = SHI(2, 2);
    tnode t;
    node_init(&t, CS_OP_GATHER, 2, 1);
    attr_i(&t, "axis", 1);
    const cs_shape *in[] = {&xs, &is};
    const void *d[] = {x, idx};
    res r = run(&t, in, d);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 3, 2, 2);
    expect_floats(r.data[0], (float[]){3, 0, 2, 2, 7, 4, 6, 6, 11, 8, 10, 10}, 12, 0);
    res_free(&r);
    idx[0] = 4;
    r = run(&t, in, d);
    expect_error(r.st, CS_EINVAL, "out of range");
    res_free(&r);

    /* Concat on a negative axis, unknown batch propagates */
    float a[4] = {1, 2, 3, 4}, b[2] = {9, 8};
    cs_shape as = SHF(2, 2), bs = SHF(2, 1);
    node_init(&t, CS_OP_CONCAT, 2, 1);
    attr_i(&t, "axis", -1);
    const cs_shape *cin[] = {&as, &bs};
    const void *cd[] = {a, b};
    r = run(&t, cin, cd);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 2, 3);
    expect_floats(r.data[0], (float[]){1, 2, 9, 3, 4, 8}, 6, 0);
    res_free(&r);
    cs_shape ua = SHF(-1, 2), ub = SHF(-1, 5), out[1];
    const cs_shape *uin[] = {&ua, &ub};
    expect_ok(infer(&t, uin, NULL, out));
    EXPECT_SHAPE(&out[0], CS_DT_FLOAT, -1, 7);
    cs_shape bad = SHF(3, 5);
    const cs_shape *bin[] = {&as, &bad};
    expect_error(infer(&t, bin, NULL, out), CS_EINVAL, "dim 0");
}

static void test_pad(void **state) {
    (void)state;
    set_opset(13);
    float x[6] = {1, 2, 3, 4, 5, 6};
    cs_shape xs = SHF(2, 3), ps = SHI(4), vs = SCALAR(CS_DT_FLOAT);
    int64_t pads[4] = {0, 2, 1, 1}; /* rows: +0 before, +1 after; cols: +2, +1 */
    float val = -1;
    const cs_shape *in[] = {&xs, &ps, &vs};
    const void *d[] = {x, pads, &val};
    tnode t;
    node_init(&t, CS_OP_PAD, 3, 1);
    res r = run(&t, in, d);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 3, 6);
    expect_floats(r.data[0],
                  (float[]){-1, -1, 1, 2, 3, -1, -1, -1, 4, 5, 6, -1, -1, -1, -1, -1, -1, -1}, 18,
                  0);
    res_free(&r);

    node_init(&t, CS_OP_PAD, 2, 1);
    attr_s(&t, "mode", "reflect");
    r = run(&t, in, d);
    expect_ok(r.st);
    /* rows: [r0, r1, r0]; cols reflect: 3 2 | 1 2 3 | 2 */
    expect_floats(r.data[0],
                  (float[]){3, 2, 1, 2, 3, 2, 6, 5, 4, 5, 6, 5, 3, 2, 1, 2, 3, 2}, 18, 0);
    res_free(&r);

    node_init(&t, CS_OP_PAD, 2, 1);
    attr_s(&t, "mode", "edge");
    r = run(&t, in, d);
    expect_ok(r.st);
    expect_floats(r.data[0],
                  (float[]){1, 1, 1, 2, 3, 3, 4, 4, 4, 5, 6, 6, 4, 4, 4, 5, 6, 6}, 18, 0);
    res_free(&r);

    /* negative pads crop; missing constant_value means 0 */
    int64_t crop[4] = {0, -1, 0, 1};
    const void *dc[] = {x, crop};
    node_init(&t, CS_OP_PAD, 2, 1);
    r = run(&t, in, dc);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 2, 3);
    expect_floats(r.data[0], (float[]){2, 3, 0, 5, 6, 0}, 6, 0);
    res_free(&r);

    /* reflect larger than the dim is invalid */
    int64_t big[4] = {0, 3, 0, 0};
    const void *db[] = {x, big};
    cs_shape out[1];
    node_init(&t, CS_OP_PAD, 2, 1);
    attr_s(&t, "mode", "reflect");
    expect_error(infer(&t, in, db, out), CS_EINVAL, "reflect");
}

static void test_constants_expand_where(void **state) {
    (void)state;
    set_opset(13);
    /* Graph value 0 holds a constant tensor used by Constant/ConstantOfShape. */
    static int64_t ones_val[1] = {1};
    static float tens[3] = {1, 2, 3};
    cs_value vals[2];
    memset(vals, 0, sizeof vals);
    vals[0].name = "one";
    vals[0].shape = SHI(1);
    vals[0].data = ones_val;
    vals[1].name = "t";
    vals[1].shape = SHF(3, 1);
    vals[1].data = tens;
    g_graph.values = vals;
    g_graph.nvalues = 2;

    tnode t;
    node_init(&t, CS_OP_CONSTANT, 0, 1);
    attr_tensor(&t, "value", 1);
    res r = run(&t, NULL, NULL);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_FLOAT, 3, 1);
    expect_floats(r.data[0], tens, 3, 0);
    res_free(&r);
    node_init(&t, CS_OP_CONSTANT, 0, 1);
    attr_ints(&t, "value_ints", INTS(7, -8));
    r = run(&t, NULL, NULL);
    expect_ok(r.st);
    EXPECT_SHAPE(&r.out[0], CS_DT_INT64, 2);
    expect_ints(r.data[0], (int64_t[]){7, -8}, 2);
    res_free(&r);
    node_init(&t, CS_OP_CONSTANT, 0, 1);
    attr_f(&t, "value_float", 2.5f);
    r = run(&t, NULL, NULL);
    expect_ok(r.st);
    assert_int_equal(r.out[0].ndim, 0);
    expect_floats(r.data[0], (float[]){2.5f}, 1, 0);
    res_free(&r);
    node_init(&t, CS_OP_CONSTANT, 0, 1);
    attr_floats(&t, "value_floats", 2, (float[]){0.5f, -1});
    r = run(&t, NULL, NULL);
    expect_ok(r.st);
    expect_floats(r.data[0], (float[]){0.5f, -1}, 2, 0);
    res_free(&r);

    /* torch's expand(n, -1, -1): Where(Equal(shape, -1), ones, shape) */
    int64_t shape[3] = {2, -1, -1}, cshape[1] = {3}, neg1 = -1;
    cs_shape s3 = SHI(3), sc = SCALAR(CS_DT_INT64), c1 = SHI(1);
    node_init(&t, CS_OP_CONSTANTOFSHAPE, 1, 1);
    attr_tensor(&t, "value", 0);
    const cs_shape *cin[] = {&c1};
    const void *cdat[] = {cshape};
    res ones = run(&t, cin, cdat);
    expect_ok(ones.st);
    EXPECT_SHAPE(&ones.out[0], CS_DT_INT64, 3);
    expect_ints(ones.data[0], (int64_t[]){1, 1, 1}, 3);

    node_init(&t, CS_OP_EQUAL, 2, 1);
    const cs_shape *ein[] = {&s3, &sc};
    const void *edat[] = {shape, &neg1};
    res eq = run(&t, ein, edat);
    expect_ok(eq.st);
    EXPECT_SHAPE(&eq.out[0], CS_DT_BOOL, 3);
    assert_memory_equal(eq.data[0], ((uint8_t[]){0, 1, 1}), 3);

    node_init(&t, CS_OP_WHERE, 3, 1);
    const cs_shape *win[] = {&eq.out[0], &ones.out[0], &s3};
    const void *wdat[] = {eq.data[0], ones.data[0], shape};
    res wh = run(&t, win, wdat);
    expect_ok(wh.st);
    expect_ints(wh.data[0], (int64_t[]){2, 1, 1}, 3);

    cs_shape xs = SHF(1, 1, 3);
    float x[3] = {4, 5, 6};
    node_init(&t, CS_OP_EXPAND, 2, 1);
    const cs_shape *xin[] = {&xs, &s3};
    const void *xdat[] = {x, wh.data[0]};
    res ex = run(&t, xin, xdat);
    expect_ok(ex.st);
    EXPECT_SHAPE(&ex.out[0], CS_DT_FLOAT, 2, 1, 3);
    expect_floats(ex.data[0], (float[]){4, 5, 6, 4, 5, 6}, 6, 0);
    res_free(&ex);
    /* bidirectional: [3,1] expanded by [2,1,4] -> [2,3,4] */
    int64_t s24[3] = {2, 1, 4};
    cs_shape ts = SHF(3, 1);
    const cs_shape *tin[] = {&ts, &s3};
    const void *tdat[] = {tens, s24};
    ex = run(&t, tin, tdat);
    expect_ok(ex.st);
    EXPECT_SHAPE(&ex.out[0], CS_DT_FLOAT, 2, 3, 4);
    float *e = ex.data[0];
    for (int i = 0; i < 24; i++)
        if (e[i] != tens[(i / 4) % 3]) fail_msg("expand element %d = %g", i, (double)e[i]);
    res_free(&ex);
    res_free(&ones);
    res_free(&eq);
    res_free(&wh);

    /* value-dependent shape with no constant */
    cs_shape out[1];
    const void *nd[] = {x, NULL};
    node_init(&t, CS_OP_EXPAND, 2, 1);
    expect_error(infer(&t, xin, nd, out), CS_EINVAL, "constant");
    node_init(&t, CS_OP_CONSTANTOFSHAPE, 1, 1);
    expect_error(infer(&t, cin, (const void *[]){NULL}, out), CS_EINVAL, "constant");

    g_graph.values = NULL;
    g_graph.nvalues = 0;
}

static void test_errors_misc(void **state) {
    (void)state;
    tnode t;
    cs_shape xs = SHF(2, 3), out[1];
    const cs_shape *in[] = {&xs};
    node_init(&t, CS_OP_UNKNOWN, 1, 1);
    expect_error(infer(&t, in, NULL, out), CS_EUNSUPPORTED, "not supported");
    node_init(&t, CS_OP_ADD, 1, 1);
    expect_error(infer(&t, in, NULL, out), CS_EINVAL, "inputs");
    cs_shape unk;
    memset(&unk, 0, sizeof unk);
    unk.dtype = CS_DT_FLOAT;
    unk.ndim = -1;
    const cs_shape *uin[] = {&unk};
    node_init(&t, CS_OP_RELU, 1, 1);
    expect_error(infer(&t, uin, NULL, out), CS_EUNSUPPORTED, "unknown rank");
    /* ref_run refuses non-concrete shapes */
    cs_shape bs = SHF(-1, 3);
    const cs_shape *bin[] = {&bs};
    float buf[6] = {0};
    void *od[] = {buf};
    const void *bd[] = {buf};
    expect_error(cs_op_ref_run(&g_graph, &t.n, bin, bd, &bs, od, &g_err), CS_EINVAL, "concrete");
    /* identity on int64 keeps the type */
    int64_t v[2] = {1, 2};
    cs_shape vs = SHI(2);
    const cs_shape *vin[] = {&vs};
    const void *vd[] = {v};
    node_init(&t, CS_OP_IDENTITY, 1, 1);
    res r = run(&t, vin, vd);
    expect_ok(r.st);
    expect_ints(r.data[0], v, 2);
    res_free(&r);
}

int main(void) {
    g_graph.opset = 13;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_conv_basic),
        cmocka_unit_test(test_conv_bias_fused),
        cmocka_unit_test(test_conv_shapes),
        cmocka_unit_test(test_maxpool_ceil),
        cmocka_unit_test(test_avgpool_pad),
        cmocka_unit_test(test_global_pool),
        cmocka_unit_test(test_gemm),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_batchnorm),
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_softmax_opsets),
        cmocka_unit_test(test_broadcast_add),
        cmocka_unit_test(test_int64_arith),
        cmocka_unit_test(test_pow_and_unary),
        cmocka_unit_test(test_act_apply),
        cmocka_unit_test(test_cast_dropout),
        cmocka_unit_test(test_reduce),
        cmocka_unit_test(test_reshape),
        cmocka_unit_test(test_flatten_squeeze),
        cmocka_unit_test(test_transpose),
        cmocka_unit_test(test_slice),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_concat_gather_chain),
        cmocka_unit_test(test_gather_concat_float),
        cmocka_unit_test(test_pad),
        cmocka_unit_test(test_constants_expand_where),
        cmocka_unit_test(test_errors_misc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
