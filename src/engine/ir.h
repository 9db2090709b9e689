/* The graph IR: what an ONNX file becomes after parsing, before planning.
 *
 * Internal to the engine (not a public header).  A cs_graph owns all of its
 * memory through one arena (graph->arena): names, attribute arrays, constant
 * data.  It is built once by the loader and the passes, then never mutated
 * again: any number of plans/sessions read it concurrently.
 *
 * Shapes: each value has a static shape as far as the ONNX file and shape
 * inference know it; dim 0 of the graph input may be symbolic (-1, the
 * batch).  A plan re-runs shape inference with a concrete batch size into its
 * own cs_shape table (cs_op_infer), so the graph itself is never written per
 * batch size. */
#ifndef CS_ENGINE_IR_H
#define CS_ENGINE_IR_H

#include "camserve/common.h"
#include "util/arena.h"

#include <stdbool.h>

#define CS_MAX_DIMS 8

/* Element types, with the numeric codes of onnx.TensorProto.DataType. */
typedef enum cs_dtype {
    CS_DT_UNDEFINED = 0,
    CS_DT_FLOAT = 1,
    CS_DT_UINT8 = 2,
    CS_DT_INT8 = 3,
    CS_DT_INT32 = 6,
    CS_DT_INT64 = 7,
    CS_DT_BOOL = 9,
    CS_DT_DOUBLE = 11,
} cs_dtype;

size_t cs_dtype_size(cs_dtype dt); /* 0 for unsupported types */

typedef struct cs_shape {
    cs_dtype dtype;
    int ndim;                  /* -1: unknown rank */
    int64_t dims[CS_MAX_DIMS]; /* -1: unknown / symbolic (batch) */
} cs_shape;

int64_t cs_shape_numel(const cs_shape *s); /* -1 if any dim unknown */
bool cs_shape_equal(const cs_shape *a, const cs_shape *b);
/* "1x3x224x224" into buf; returns buf. */
const char *cs_shape_str(const cs_shape *s, char *buf, size_t len);

/* The operators the engine knows.  Keep in sync with cs_op_from_name(). */
typedef enum cs_op {
    CS_OP_UNKNOWN = 0,
    /* compute-heavy, oneDNN-backed */
    CS_OP_CONV, CS_OP_GEMM, CS_OP_MATMUL, CS_OP_MAXPOOL, CS_OP_AVGPOOL,
    CS_OP_GLOBALAVGPOOL, CS_OP_GLOBALMAXPOOL, CS_OP_BATCHNORM,
    /* elementwise unary */
    CS_OP_RELU, CS_OP_CLIP, CS_OP_LEAKYRELU, CS_OP_SIGMOID, CS_OP_HARDSIGMOID,
    CS_OP_HARDSWISH, CS_OP_TANH, CS_OP_ERF, CS_OP_SQRT, CS_OP_EXP, CS_OP_NEG,
    CS_OP_RECIPROCAL, CS_OP_GELU, CS_OP_IDENTITY, CS_OP_DROPOUT, CS_OP_CAST,
    /* elementwise binary with numpy broadcasting */
    CS_OP_ADD, CS_OP_SUB, CS_OP_MUL, CS_OP_DIV, CS_OP_POW,
    /* reductions / normalisation */
    CS_OP_REDUCEMEAN, CS_OP_REDUCESUM, CS_OP_SOFTMAX, CS_OP_LAYERNORM,
    /* data movement / shape ops */
    CS_OP_FLATTEN, CS_OP_RESHAPE, CS_OP_TRANSPOSE, CS_OP_CONCAT, CS_OP_SPLIT,
    CS_OP_SLICE, CS_OP_PAD, CS_OP_SQUEEZE, CS_OP_UNSQUEEZE, CS_OP_SHAPE,
    CS_OP_GATHER, CS_OP_CONSTANT, CS_OP_CONSTANTOFSHAPE, CS_OP_EXPAND,
    /* comparison / selection: torch.onnx's expand(-1) pattern in shape chains */
    CS_OP_EQUAL, CS_OP_WHERE,
    CS_OP__COUNT
} cs_op;

cs_op cs_op_from_name(const char *onnx_op_type); /* CS_OP_UNKNOWN if not known */
const char *cs_op_name(cs_op op);

typedef enum cs_attr_type {
    CS_ATTR_FLOAT, CS_ATTR_INT, CS_ATTR_STRING, CS_ATTR_FLOATS, CS_ATTR_INTS, CS_ATTR_TENSOR
} cs_attr_type;

typedef struct cs_attr {
    const char *name;
    cs_attr_type type;
    float f;
    int64_t i;
    const char *s;
    int n;            /* element count of ints / floats */
    int64_t *ints;
    float *floats;
    int tensor;       /* CS_ATTR_TENSOR: index of a constant value in graph->values */
} cs_attr;

/* A value (ONNX "tensor name"): graph input, initializer, or node output. */
typedef struct cs_value {
    const char *name;
    cs_shape shape;
    void *data;     /* non-NULL for constants; arena-owned, shape.dtype layout, C order */
    int producer;   /* node index, or -1 for graph inputs and constants */
    int nconsumers; /* number of (node, input slot) uses */
    bool is_graph_input, is_graph_output;
} cs_value;

/* Fused activation appended to an op (Conv/Gemm/MatMul/Add) by the fusion
 * pass; executed as a oneDNN post-op or by the reference kernel. */
typedef enum cs_act {
    CS_ACT_NONE = 0, CS_ACT_RELU, CS_ACT_CLIP, CS_ACT_LEAKYRELU, CS_ACT_SIGMOID,
    CS_ACT_HARDSIGMOID, CS_ACT_HARDSWISH, CS_ACT_TANH, CS_ACT_GELU_ERF, CS_ACT_SWISH
} cs_act;

typedef struct cs_fused_act {
    cs_act kind;
    float alpha, beta; /* Clip: min,max; LeakyRelu: alpha; HardSigmoid: alpha,beta */
} cs_fused_act;

#define CS_MAX_FUSED 4

typedef struct cs_node {
    cs_op op;
    const char *name;    /* ONNX node name (may be "") */
    const char *op_type; /* ONNX op_type as written */
    int ninputs, noutputs;
    int *inputs;  /* value indices; -1 = omitted optional input */
    int *outputs; /* value indices */
    int nattrs;
    cs_attr *attrs;
    bool dead;    /* removed by a pass; skipped by planners */
    /* Set by fusion: extra input summed into the result before the fused
     * activations (residual Add folded into Conv), and activations applied
     * in order.  Values whose producer was fused away keep their name in
     * `aliases` so they stay addressable (see cs_graph_find_value). */
    int sum_input; /* value index or -1 */
    int nfused;
    cs_fused_act fused[CS_MAX_FUSED];
    /* Set by the BatchNormalization fold on a Conv: the BN node (then
     * skipped by plans), and the Conv's original weight, bias and output
     * (the pre-BN tensor).  A plan that must show the pre-BN tensor runs
     * the original Conv and the BN instead ("unfolds"). */
    int fold_bn; /* node index or -1 */
    int pre_bn_w, pre_bn_b, pre_bn_out;
} cs_node;

typedef struct cs_graph {
    cs_arena arena; /* owns everything below */
    int nvalues, nnodes, ninputs, noutputs;
    cs_value *values;
    cs_node *nodes; /* topologically sorted */
    int *inputs;    /* value indices of non-constant graph inputs */
    int *outputs;   /* value indices of graph outputs */
    int64_t opset;
    const char *producer_name;
    void *pb;       /* the unpacked ONNX message: weights point into it */
    int nmeta;      /* metadata_props, for preprocessing config */
    const char **meta_keys, **meta_values;
} cs_graph;

/* Attribute lookup helpers: return the default when the attribute is absent. */
const cs_attr *cs_node_attr(const cs_node *n, const char *name);
int64_t cs_attr_int(const cs_node *n, const char *name, int64_t def);
float cs_attr_float(const cs_node *n, const char *name, float def);
const char *cs_attr_string(const cs_node *n, const char *name, const char *def);
/* Returns the element count (0 if absent) and points *out at the array. */
int cs_attr_ints(const cs_node *n, const char *name, const int64_t **out);

int cs_graph_find_value(const cs_graph *g, const char *name); /* -1 if absent */

/* ---- graph walks both backends' planners share (ir.c) ---------------------- */

/* Consumers of every value over the live nodes, in CSR form: the nodes that
 * read value v are cons[start[v]] .. cons[start[v + 1] - 1], in node order.
 * start has nvalues + 2 entries, zeroed by the caller; *cons is malloc'd
 * (the caller frees it). */
cs_status cs_graph_consumers(const cs_graph *g, int *start, int **cons, cs_error *err);

/* The part of the graph a gradient to `layers` (value indices) flows back
 * through: in_d[v] is set for every value that depends on a layer,
 * in_region[ni] for every live node on a path from a layer to the output.
 * in_d (nvalues) and in_region (nnodes) are zeroed by the caller.  Fails
 * when the output does not depend on any layer. */
cs_status cs_graph_grad_region(const cs_graph *g, const int *layers, int nlayers, bool *in_d, bool *in_region,
                               cs_error *err);

/* AblationCAM's override plans replace value ovr_v by the caller's values,
 * so a node whose results reach the output only through ovr_v need not
 * run.  run[ni] is the node as the plan runs it (an unfolded Conv, say), or
 * NULL for one it does not run; walking back from the graph outputs and
 * the kept values (keep: nvalues flags, ovr_v's ignored), this sets run[ni]
 * to NULL for every node nothing needs.  *producer_dropped: whether ovr_v's
 * producer was among them (it stays when another of its outputs is
 * needed); *input_read: whether a remaining node reads the graph input. */
cs_status cs_graph_prune_for_override(const cs_graph *g, int ovr_v, const bool *keep, const cs_node **run,
                                      bool *producer_dropped, bool *input_read, cs_error *err);

/* A Conv that has a BatchNormalization folded into it (c->fold_bn >= 0), as
 * it was before the fold: original weight and bias, writing the pre-BN
 * tensor.  What a plan runs (followed by the BN node) where the pre-BN tensor
 * must be shown.  Allocated in a (the plan's arena); NULL when out of memory. */
cs_node *cs_graph_unfold_bn(const cs_node *c, cs_arena *a);

/* ---- operator semantics (src/engine/ops.c) -------------------------------
 * Shape inference and a plain-layout reference kernel for every cs_op.
 *
 * cs_op_infer: given the node's input shapes (in[i] may be NULL for an
 * omitted optional input) and, where the input is a constant, its data
 * (in_data[i], else NULL), writes the output shapes.  Ops whose output shape
 * depends on input *values* (Reshape, Slice, Expand, ConstantOfShape, Pad,
 * Split with a split input, ...) need those inputs constant and fail with a
 * clear message otherwise.
 *
 * cs_op_ref_run: computes the outputs from dense C-order inputs.  Used for
 * constant folding, for ops no backend accelerates, and as the oracle of unit
 * tests.  Honours node->nfused / sum_input.  Outputs are preallocated by the
 * caller from the inferred shapes. */
cs_status cs_op_infer(const cs_graph *g, const cs_node *n, const cs_shape *const *in,
                      const void *const *in_data, cs_shape *out, cs_error *err);
cs_status cs_op_ref_run(const cs_graph *g, const cs_node *n, const cs_shape *const *in,
                        const void *const *in_data, const cs_shape *out, void *const *out_data,
                        cs_error *err);
/* The window of a Slice node, inputs given as for cs_op_infer: per
 * dimension of input 0, the first index read and the step (0 and 1 where
 * it does not slice), normalised exactly as the forward's.  The backward
 * scatters the gradient through it. */
cs_status cs_op_slice_window(const cs_graph *g, const cs_node *n, const cs_shape *const *in,
                             const void *const *in_data, int64_t *start, int64_t *step, cs_error *err);
/* Applies one fused activation in place over n floats. */
void cs_act_apply(const cs_fused_act *a, float *x, int64_t n);

#endif
