/* camserve CAM mathematics: from a layer's activations (and gradients) to a
 * class activation map, with the semantics of pytorch-grad-cam.
 *
 * Pure functions over dense float32 C-order tensors: activations and
 * gradients are n x c x h x w (NCHW, one image per leading index), maps are
 * n x h x w.  Nothing here knows the engine; the two methods that need extra
 * forward passes (ScoreCAM, AblationCAM) reach the network only through the
 * callbacks of cs_cam_forward.
 *
 * Every function is thread-safe: no global state, and all memory is either
 * caller-owned or allocated and freed within the call.
 *
 * The pipeline pytorch-grad-cam applies, which these functions reproduce
 * (docs/cam.md has every formula):
 *   raw   = max(cam(act, grad), 0)                  cs_cam_compute_raw
 *   map   = scale(raw)                              cs_cam_compute
 *   final = scale(mean_l max(resize(scale(raw_l)), 0))   cs_cam_aggregate
 * where scale(m) = (m - min m) / (1e-7 + max(m - min m)) per image and resize
 * is cv2.resize INTER_LINEAR (cs_cam_resize). */
#ifndef CAMSERVE_CAM_H
#define CAMSERVE_CAM_H

#include "camserve/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cs_cam_method {
    CS_CAM_METHOD_GRADCAM = 0,
    CS_CAM_METHOD_HIRESCAM,
    CS_CAM_METHOD_GRADCAMPP,
    CS_CAM_METHOD_XGRADCAM,
    CS_CAM_METHOD_LAYERCAM,
    CS_CAM_METHOD_GRADCAM_ELEMENTWISE,
    CS_CAM_METHOD_EIGENCAM,
    CS_CAM_METHOD_EIGENGRADCAM,
    CS_CAM_METHOD_SCORECAM,
    CS_CAM_METHOD_ABLATIONCAM,
    CS_CAM_METHOD_COUNT
} cs_cam_method;

/* Parses a method name, case-insensitively, ignoring '-', '_' and ' ':
 * the canonical names of cs_cam_method_name(), pytorch-grad-cam's class
 * names (GradCAMPlusPlus, GradCAMElementWise, ...) and its example keys
 * ("gradcam++").  Unknown names fail with CS_EINVAL and the message
 * "unknown method 'x'; valid: gradcam, hirescam, ...". */
cs_status cs_cam_method_parse(const char *name, cs_cam_method *out, cs_error *err);
/* Canonical lower-case name ("gradcam++" is "gradcampp"); "?" if out of range. */
const char *cs_cam_method_name(cs_cam_method m);
/* "gradcam, hirescam, ..., ablationcam": static storage, for messages. */
const char *cs_cam_method_list(void);
/* Whether the method reads the gradients (else grad may be NULL). */
int cs_cam_method_uses_gradients(cs_cam_method m);
/* Whether the method needs cs_cam_forward callbacks (ScoreCAM, AblationCAM). */
int cs_cam_method_needs_forward(cs_cam_method m);

typedef struct cs_cam_options {
    /* pytorch-grad-cam's eigen_smooth: the channel sum is replaced by the
     * first principal component of the weighted activations.  EigenCAM and
     * EigenGradCAM are projections already and ignore it. */
    int eigen_smooth;
    /* Items per callback call for ScoreCAM / AblationCAM; 0 takes
     * pytorch-grad-cam's defaults (ScoreCAM 16, AblationCAM 32).  The batch
     * size changes AblationCAM's results when activations can be negative
     * (see docs/cam.md), so keep it equal to the reference's when comparing. */
    int batch_size;
    /* AblationCAM's ratio_channels_to_ablate; only 1.0 (all channels, the
     * default) is supported. */
    double ratio_channels_to_ablate;
    /* Optional scratch memory lent for the duration of the call so that the
     * request path need not allocate; cs_cam_scratch_bytes() says how much.
     * NULL (or too small): the call allocates and frees its own. */
    void *scratch;
    size_t scratch_bytes;
} cs_cam_options;

cs_cam_options cs_cam_default_options(void);

/* Contract of the forward callbacks.  Every call concerns one image `image`
 * (0 <= image < n) and its target class `class_idx` (copied from
 * cs_cam_forward.class_idx[image]); `items` holds k <= batch tensors, item
 * after item.  The callback writes k target scores to scores_out -- the value
 * pytorch-grad-cam's target returns, i.e. the class logit for
 * ClassifierOutputTarget -- and returns CS_OK, or an error (with a message
 * in err) that aborts the CAM computation and is passed through.  `items`
 * is valid only during the call and must not be modified or kept. */
typedef cs_status (*cs_cam_score_fn)(void *ctx, const float *items, int k, int image,
                                     int class_idx, float *scores_out, cs_error *err);

typedef struct cs_cam_forward {
    void *ctx; /* passed to the callbacks untouched */
    /* ScoreCAM: items are k x in_c x in_h x in_w model inputs (the image
     * multiplied by a normalised upsampled activation channel); the callback
     * runs the whole network on them. */
    cs_cam_score_fn score_inputs;
    /* AblationCAM: items are k x c x h x w target-layer activations (the
     * image's activations with one channel ablated per item, or unmodified
     * for the original score); the callback runs the network from the target
     * layer to the output. */
    cs_cam_score_fn score_activations;
    const float *input; /* ScoreCAM: n x in_c x in_h x in_w, as fed to the model */
    int in_c, in_h, in_w;
    const int *class_idx; /* n target classes, one per image */
} cs_cam_forward;

/* `batch` above: the most items one callback call gets (opt->batch_size, or
 * pytorch-grad-cam's default: 16 for ScoreCAM, 32 for AblationCAM).  Calls
 * get that many, except an image's last call, which may get fewer (the
 * channels that cannot change the map are not sent: docs/cam.md), and
 * AblationCAM's first call of an image (k = 1, the original score). */
int cs_cam_forward_batch(cs_cam_method method, const cs_cam_options *opt);

/* Bytes of scratch cs_cam_compute* would use for these arguments. */
size_t cs_cam_scratch_bytes(cs_cam_method method, int n, int c, int h, int w,
                            const cs_cam_options *opt, const cs_cam_forward *fwd);

/* The general entry point.  act: n x c x h x w; grad: same shape, or NULL
 * for methods that do not use gradients; fwd: required for ScoreCAM and
 * AblationCAM, ignored otherwise; opt NULL means defaults.  Writes into the
 * caller's buffers (either may be NULL, not both), each n x h x w:
 *   raw_out: max(cam, 0), before scaling -- the input of cs_cam_aggregate;
 *   map_out: scale(raw), the normalised map at layer resolution.
 * Errors: CS_EINVAL for n, c, h, w <= 0, h*w == 1 ("layer has no spatial
 * extent"), a missing tensor or callback; CS_ENOMEM; for AblationCAM a zero
 * original score (the weights divide by it); whatever a callback returns. */
cs_status cs_cam_compute_ex(cs_cam_method method, const float *act, const float *grad, int n,
                            int c, int h, int w, const cs_cam_options *opt,
                            const cs_cam_forward *fwd, float *raw_out, float *map_out,
                            cs_error *err);

/* Gradient methods, EigenCAM and EigenGradCAM: the normalised map
 * (n x h x w, caller-owned).  ScoreCAM/AblationCAM fail: use _ex. */
cs_status cs_cam_compute(cs_cam_method method, const float *act, const float *grad, int n, int c,
                         int h, int w, const cs_cam_options *opt, float *map_out, cs_error *err);
/* Same, writing the unscaled max(cam, 0) instead. */
cs_status cs_cam_compute_raw(cs_cam_method method, const float *act, const float *grad, int n,
                             int c, int h, int w, const cs_cam_options *opt, float *raw_out,
                             cs_error *err);

/* scale_cam_image without resize, in place on n maps of hw values:
 * m = m - min(m); m = m / (1e-7 + max(m)). */
void cs_cam_scale(float *maps, int n, int hw);

/* cv2.resize(src, (dw, dh), interpolation=INTER_LINEAR) of one float map:
 * half-pixel centres, source coordinates clamped at the edges, no
 * antialiasing.  src (sh x sw) and dst (dh x dw) must not overlap. */
cs_status cs_cam_resize(const float *src, int sh, int sw, float *dst, int dh, int dw,
                        cs_error *err);

/* pytorch-grad-cam's per-layer scaling plus aggregate_multi_layers:
 * raw[l] is layer l's n x h[l] x w[l] output of cs_cam_compute_raw; out
 * (n x dh x dw, caller-owned) receives
 *   scale(mean_l max(resize(scale(raw[l]), dh, dw), 0)).
 * With one layer and (dh, dw) the model input size this is exactly what
 * pytorch-grad-cam returns. */
cs_status cs_cam_aggregate(const float *const *raw, const int *h, const int *w, int num_layers,
                           int n, int dh, int dw, float *out, cs_error *err);

#ifdef __cplusplus
}
#endif
#endif
