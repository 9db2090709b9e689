/* camserve explain: one call from a model input to class activation maps.
 *
 * Ties the engine (forward keeping the target layers, backward to them only)
 * to the CAM mathematics (cam.h): picks the classes (top, an index, or the
 * top k), runs one forward and one backward per class rank for the whole
 * batch, computes the maps, combines several layers the way
 * pytorch-grad-cam does, and serves ScoreCAM / AblationCAM their extra
 * forward passes from the same session.  Used by the CLI and the server. */
#ifndef CAMSERVE_EXPLAIN_H
#define CAMSERVE_EXPLAIN_H

#include "camserve/cam.h"
#include "camserve/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CS_EXPLAIN_MAX_LAYERS 8
#define CS_EXPLAIN_MAX_TOPK 20

typedef enum cs_class_mode {
    CS_CLASS_TOP = 0, /* each image's own top-1 class */
    CS_CLASS_INDEX,   /* one class index for every image */
    CS_CLASS_TOPK     /* one map per class among each image's top k */
} cs_class_mode;

typedef struct cs_explain_options {
    cs_cam_method method;
    int nlayers; /* 0: the model's default layer */
    int layers[CS_EXPLAIN_MAX_LAYERS];
    cs_class_mode class_mode;
    int class_index; /* CS_CLASS_INDEX */
    int topk;        /* CS_CLASS_TOPK */
    /* pytorch-grad-cam's aug_smooth: horizontal flip x intensity 0.9/1/1.1,
     * six forwards in one batch (one per variant for a model exported
     * with a fixed batch), maps flipped back and averaged. */
    int aug_smooth;
    int eigen_smooth;
    int batch_size; /* ScoreCAM / AblationCAM items per forward; 0: defaults */
    /* Optional progress and stop, for ScoreCAM and AblationCAM, whose
     * extra forward passes (one per channel of the layer; ScoreCAM's
     * through the whole network) take seconds to minutes on a CPU; the
     * other methods need one forward and one backward per class rank.
     * Polled before each of their runs (16 or 32 items) with the fraction
     * of the items sent so far, in [0, 1): channels the CAM module skips
     * (docs/cam.md) are never sent, so it can understate.  A nonzero return stops the explanation:
     * cs_explain_run fails with CS_ECANCELED (the server's deadline); the
     * CLI only shows the fraction. */
    int (*cancel)(void *ctx, double done);
    void *cancel_ctx;
} cs_explain_options;

cs_explain_options cs_explain_default_options(void);

/* "top", "K", "topk:K" or a class's label into opt's class fields.
 * labels[i] names class i (nlabels of them; NULL/0: none).  A label
 * compares without case and with '_' as ' ' ("Golden_Retriever"); one that
 * names no class or several (ImageNet's two "crane"s) fails with CS_EINVAL
 * and a message listing the indices, or the labels containing it. */
cs_status cs_explain_parse_class(const char *spec, char *const *labels, int nlabels, cs_explain_options *opt,
                                 cs_error *err);
/* "auto" or comma-separated tensor names into opt's layers; an unknown name
 * fails with CS_ENOTFOUND and a message listing the candidate layers. */
cs_status cs_explain_parse_layers(const cs_model *m, const char *spec, cs_explain_options *opt,
                                  cs_error *err);

typedef struct cs_explain_output {
    int batch, k;           /* maps are batch*k, image-major: map i*k+j = image i, rank j */
    int64_t num_classes;
    float *logits;          /* batch x num_classes */
    int *class_idx;         /* batch*k */
    int layer_h, layer_w;   /* 0 when several layers (no single layer resolution) */
    float *maps_layer;      /* batch*k x layer_h x layer_w, normalised; NULL if several layers */
    int in_h, in_w;
    float *maps_input;      /* batch*k x in_h x in_w: what pytorch-grad-cam returns */
    double forward_ms, backward_ms, cam_ms;
} cs_explain_output;

/* Explains `batch` model inputs (batch x C x H x W).  All buffers in *out
 * are malloc'd; release with cs_explain_output_free. */
cs_status cs_explain_run(cs_session *s, const cs_model *m, const float *input, int batch,
                         const cs_explain_options *opt, cs_explain_output *out, cs_error *err);
void cs_explain_output_free(cs_explain_output *out);

#ifdef __cplusplus
}
#endif
#endif
