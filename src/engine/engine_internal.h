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

/* Weights reordered into the layout a primitive asked for, once per model.
 * Keyed by node: a plan whose primitive wants the same md shares it. */
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

    int nhist;
    const char **hist_names;
    int *hist_counts;
};

typedef struct cs_plan cs_plan;

/* Builds the plan for batch size `batch` that keeps the listed values
 * materialised (and addressable with cs_plan_tensor).  With `pack` set, the
 * plan stores its reordered weights into the model (load time only). */
cs_status cs_plan_build(cs_model *m, int batch, const int *keep, int nkeep, int pack,
                        cs_plan **out, cs_error *err);
void cs_plan_free(cs_plan *p);
cs_status cs_plan_run(cs_plan *p, dnnl_stream_t stream, const float *input, float *output,
                      cs_error *err);
/* Concrete shape of value v in this plan (batch substituted). */
const cs_shape *cs_plan_shape(const cs_plan *p, int v);
/* Copies value v (which must be kept or an output) as dense NCHW float. */
cs_status cs_plan_read(cs_plan *p, dnnl_stream_t stream, int v, float *out, cs_error *err);
double cs_plan_flops(const cs_plan *p);
int cs_plan_num_kernels(const cs_plan *p);

cs_status cs_dnnl_check(dnnl_status_t s, const char *what, cs_error *err);

#endif
