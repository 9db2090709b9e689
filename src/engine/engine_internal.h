/* Engine internals shared by model.c (load, load-time passes), plan.c
 * (per-batch planning + execution) and the backward pass.
 *
 * Ownership:
 *   cs_model   owns its graph (graph arena: names, constants, folded
 *              weights) and the packed weights (model->pack_arena).  Both
 *              are written only inside cs_model_load.
 *   cs_session owns its plans; a plan owns its primitives, its memory
 *              objects, its activation arena (one malloc) and the constants
 *              it folded for its batch size (plan->consts). */
#ifndef CS_ENGINE_INTERNAL_H
#define CS_ENGINE_INTERNAL_H

#include "camserve/engine.h"
#include "engine/ir.h"

#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>

/* Weights reordered into the layout a primitive asked for, once per model.
 * Keyed by node: a plan whose primitive wants the same md shares it. */
/* A compute backend other than the CPU one (src/cuda).  A model loaded for
 * another device still goes through the CPU loader (graph, folding, the
 * batch-1 CPU plan that validates shapes and finds the layers); then
 * model_init prepares the device side (weights uploaded once) and the
 * session entry points of model.c forward to the table.  The model.c
 * wrappers validate the arguments (batch, finite input, layer indices)
 * before calling; values are graph value indices, not layer indices. */
typedef struct cs_backend {
    const char *name;
    /* Prepares model m for device `device` at precision prec (not DEFAULT);
     * *out is freed with model_free. */
    cs_status (*model_init)(cs_model *m, int device, cs_precision prec, void **out, cs_error *err);
    void (*model_free)(void *bm);
    cs_status (*session_create)(const cs_model *m, void *bm, void **out, cs_error *err);
    void (*session_free)(void *bs);
    cs_status (*run)(void *bs, const float *input, int batch, float *logits, cs_error *err);
    cs_status (*run_with_layer)(void *bs, const float *input, int batch, int value,
                                const float *values, float *logits, cs_error *err);
    cs_status (*forward_keep)(void *bs, const float *input, int batch, const int *values, int n,
                              float *logits, cs_error *err);
    cs_status (*backward)(void *bs, const int *classes, cs_error *err);
    /* host fp32 NCHW copies, owned by the session, valid until its next call */
    cs_status (*layer)(void *bs, int value, const float **act, const float **grad, int64_t dims[4],
                       cs_error *err);
    cs_status (*gradcam)(void *bs, int value, const float **map, int64_t dims[3], cs_error *err);
    double (*device_ms)(const void *bs); /* cs_session_device_ms */
} cs_backend;

/* The CUDA backend's table (src/cuda/cuda_backend.c); exists only in builds
 * with CS_HAVE_CUDA. */
const cs_backend *cs_cuda_backend(void);

typedef struct cs_packed {
    dnnl_memory_desc_t md;
    void *data; /* NULL: nothing packed for this node */
} cs_packed;

struct cs_model {
    cs_graph g;
    char *path;           /* malloc'd */
    dnnl_engine_t eng;
    cs_model_info info;
    int num_threads;

    cs_arena pack_arena;  /* packed weights */
    cs_packed *packed;    /* [g.nnodes] */

    int nlayers;          /* candidate Grad-CAM layers, value indices */
    int *layers;
    int64_t (*layer_dims)[4];
    int default_layer;

    /* Memos, the one part of a model written after load, always under
     * bwd_lock and allocated in bwd_arena: weights in the layout oneDNN's
     * backward-data convolution wants, made on the first explanation that
     * needs them, and forward weights in a layout another batch size's plan
     * wants (Winograd's depends on the batch), made by the first such plan.
     * Both are then shared by every session like the load-time ones. */
    pthread_mutex_t bwd_lock;
    cs_arena bwd_arena;
    cs_packed *bwd_packed; /* [g.nnodes] */
    struct cs_packed_more {
        struct cs_packed_more *next;
        int node;
        cs_packed w;
    } *more_packed;

    /* a prepared-model cache entry this model was mapped from (constants
     * and packed weights point into it), else NULL */
    void *prep_map;
    size_t prep_len;
    uint8_t digest[32]; /* SHA-256 of the ONNX file, when have_digest */
    bool have_digest;

    int nhist;
    const char **hist_names;
    int *hist_counts;

    /* the device: "cpu" (be NULL) or a backend's name and its model state */
    char device[24];
    int device_index;       /* what cs_model_options.device resolved to at load: -1 the CPU, else the GPU's */
    cs_precision precision;
    const cs_backend *be;
    void *be_model;
};

/* Whether the model's CPU plans run convolutions in bf16 (--device cpu
 * --precision bf16).  A GPU model's CPU plan, which only validates the
 * graph at load, stays fp32. */
static inline bool cs_model_cpu_bf16(const cs_model *m) {
    return m->precision == CS_PRECISION_BF16 && !m->be;
}

typedef struct cs_plan cs_plan;

/* Builds the plan for batch size `batch` that keeps the listed values
 * materialised (readable with cs_plan_value after a run).  With `pack` set,
 * the plan stores its reordered weights into the model (load time only).
 * override_v >= 0: that value is replaced by caller data (cs_plan_run's
 * override_data, dense) as soon as it is computed; it must be kept.  When
 * it is one of the model's layers, what only feeds it is not run at all
 * (the layer becomes a second input; CS_NO_PRUNE=1 runs everything). */
cs_status cs_plan_build(cs_model *m, int batch, const int *keep, int nkeep, int pack,
                        int override_v, cs_plan **out, cs_error *err);
void cs_plan_free(cs_plan *p);
/* scratch: cs_plan_scratch_size(p) bytes (64-byte aligned) that no other
 * run uses meanwhile; its contents do not matter. */
cs_status cs_plan_run(cs_plan *p, dnnl_stream_t stream, void *scratch, const float *input,
                      const float *override_data, float *output, cs_error *err);
/* oneDNN scratchpads.  The primitives of a plan (and of a backward built on
 * it) are created with scratchpad_mode user and run on the caller's buffer:
 * oneDNN's default, one scratchpad per thread, ties a primitive to the
 * thread that created it (run or freed on another, it crashes or leaks),
 * while a session may change threads.  The largest need of the plan's
 * primitives, and of any backward built on it since: */
size_t cs_plan_scratch_size(const cs_plan *p);
void cs_plan_need_scratch(cs_plan *p, size_t bytes);
/* The attribute (user scratchpad) for primitives built with the plan. */
const_dnnl_primitive_attr_t cs_plan_attr(const cs_plan *p);
cs_status cs_dnnl_user_scratchpad(dnnl_primitive_attr_t attr, cs_error *err);
/* Creates the primitive of pd, which must carry a user scratchpad; *scratch
 * gets a memory without a buffer when it needs a scratchpad (NULL if not),
 * and *need grows to that size. */
cs_status cs_dnnl_prim_create(const_dnnl_primitive_desc_t pd, dnnl_engine_t eng, dnnl_primitive_t *prim,
                              dnnl_memory_t *scratch, size_t *need, const char *what, cs_error *err);
/* Runs prim on args (room for one more) plus its scratchpad in scratch_buf. */
dnnl_status_t cs_dnnl_exec(dnnl_primitive_t prim, dnnl_stream_t stream, int nargs, dnnl_exec_arg_t *args,
                           dnnl_memory_t scratch, void *scratch_buf);
/* Concrete shape of value v in this plan (batch substituted). */
const cs_shape *cs_plan_shape(const cs_plan *p, int v);
/* Dense C-order data of value v after a run: a constant, or a kept value's
 * plain copy.  NULL when the plan does not keep v. */
const void *cs_plan_value(cs_plan *p, int v);
/* Copies value v (which must be kept or an output) as dense NCHW float. */
cs_status cs_plan_read(cs_plan *p, int v, float *out, cs_error *err);
bool cs_plan_is_const(const cs_plan *p, int v);
/* False for nodes folded into constants or fused into another node. */
bool cs_plan_node_live(const cs_plan *p, int ni);
int cs_plan_batch(const cs_plan *p);
double cs_plan_flops(const cs_plan *p);
int cs_plan_num_kernels(const cs_plan *p);

cs_status cs_dnnl_check(dnnl_status_t s, const char *what, cs_error *err);

/* prepared.c: the on-disk prepared-model cache */
int cs_sha256(const void *buf, size_t len, uint8_t out[32]);
/* Whether 3x3 stride-1 convolutions may use Winograd (plan.c): yes unless
 * the environment sets CS_NO_WINOGRAD. */
int cs_engine_winograd(void);
/* Whether override plans (AblationCAM) drop what only feeds the layer
 * (plan.c, the CUDA backend): yes unless the environment sets CS_NO_PRUNE,
 * for A/B tests and benchmarks against the whole network. */
int cs_engine_prune_override(void);
/* Fills m's graph, packed weights, digest and counts from dir's entry for
 * the model file; CS_ENOTFOUND / CS_EFORMAT when there is none or it is
 * stale or corrupt (m is then untouched). */
cs_status cs_prepared_load(const char *dir, const char *model_path, cs_model *m, cs_error *err);
cs_status cs_prepared_store(const char *dir, const char *model_path, const cs_model *m,
                            cs_error *err);

/* oneDNN strides, dilations (minus one) and paddings of a 2-D Conv node,
 * with the right padding chosen so that the output is exactly y. */
void cs_conv_pads(const cs_node *n, const cs_shape *x, const cs_shape *w, const cs_shape *y,
                  dnnl_dims_t st, dnnl_dims_t dil, dnnl_dims_t pl, dnnl_dims_t pr);

/* ---- backward to a layer (backward.c) ----
 * The region of an explanation is every live node on a path from the target
 * layers to the output.  The forward plan keeps every non-constant input and
 * output of those nodes (which also stops fusion across them), so the
 * backward reads plain forward values and needs no recomputation. */
typedef struct cs_bwd cs_bwd;
/* The values the forward plan must keep for a backward to `layers`
 * (malloc'd, sorted, caller frees). */
cs_status cs_bwd_keep_set(const cs_model *m, const int *layers, int nlayers, int **keep,
                          int *nkeep, cs_error *err);
cs_status cs_bwd_build(cs_model *m, cs_plan *p, const int *layers, int nlayers, cs_bwd **out,
                       cs_error *err);
/* Gradient of sum_i logits[i, classes[i]] with respect to every region
 * value, after a forward run of the plan; scratch as for cs_plan_run (the
 * backward's primitives count in cs_plan_scratch_size). */
cs_status cs_bwd_run(cs_bwd *b, dnnl_stream_t stream, void *scratch, const int *classes, cs_error *err);
const float *cs_bwd_grad(const cs_bwd *b, int v);
void cs_bwd_free(cs_bwd *b);

#endif
