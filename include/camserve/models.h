/* camserve models: the embedded default model, well-known models downloaded
 * on demand, and evaluation of a model and its explanations on a labelled
 * image folder.
 *
 * - Default model: the ONNX file, preprocessing sidecar and labels under
 *   models/default/ are compiled into the binary (cs_model_assets, see
 *   cmake/embed.cmake); cs_models_default hands them out as static data.
 * - Pull: a pinned catalog (URL, byte size, SHA-256) of ONNX Model Zoo
 *   classifiers; a download is hashed while it streams and only renamed into
 *   place when size and hash match (docs/models.md).
 * - Eval: accuracy, top-5, per-class accuracy, and per CAM method the
 *   pointing game, the energy inside the object mask, and deletion /
 *   insertion curves.  The metric helpers are pure functions.
 *
 * Thread-safety: everything here is reentrant; the catalog and the embedded
 * data are immutable.  cs_models_pull uses libcurl (curl_global_init must
 * have run, or be safe to run implicitly, before threads race on it). */
#ifndef CAMSERVE_MODELS_H
#define CAMSERVE_MODELS_H

#include "camserve/cam.h"
#include "camserve/engine.h"
#include "camserve/explain.h"
#include "camserve/imageio.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the embedded default model ----------------------------------------- */

/* The default model compiled into the binary: the ONNX bytes (for
 * cs_model_load_buffer), the preprocessing sidecar JSON (for
 * cs_img_preproc_from_json) and the labels file text, one per line.  All
 * are static, NUL-terminated, valid for the life of the process.  Each
 * output may be NULL.  CS_ENOTFOUND when the binary was built without
 * models/default/. */
cs_status cs_models_default(const void **onnx, size_t *len, const char **sidecar_json,
                            const char **labels_text, cs_error *err);

/* The 1000 ImageNet-1k class names in the standard index order, one per
 * line (torchvision's categories; the labels of every catalog model). */
extern const char cs_models_imagenet_labels[];

/* ---- well-known models (pull) ------------------------------------------- */

typedef struct cs_models_entry {
    const char *name;        /* what `camserve pull NAME` takes, e.g. "resnet50" */
    const char *file;        /* file name on the server (a mirror holds it flat) */
    const char *url;         /* full default URL, pinned to an onnx/models commit */
    const char *sha256;      /* 64 lowercase hex digits; NULL: not verified */
    int64_t size;            /* bytes; 0: unknown */
    const char *sidecar;     /* preprocessing JSON written as <name>.json; NULL: none */
    int imagenet_labels;     /* write imagenet_labels.txt beside it */
    const char *description; /* one line */
} cs_models_entry;

/* The catalog: returns its length; *out points at static entries. */
int cs_models_catalog(const cs_models_entry **out);
/* The catalog entry called name, or NULL. */
const cs_models_entry *cs_models_find(const char *name);

typedef struct cs_models_pull_options {
    const char *dir;       /* NULL: $CAMSERVE_MODEL_DIR, else ~/.cache/camserve/models */
    const char *base_url;  /* NULL: $CAMSERVE_PULL_BASE_URL; if set, the file is fetched
                            * from <base_url>/<entry file> instead of entry->url */
    int progress;          /* draw a progress bar on stderr */
    long connect_timeout_s; /* 0: 20 s */
    int force;             /* download even if a verified copy is present */
} cs_models_pull_options;

cs_models_pull_options cs_models_pull_default_options(void);

/* The model directory opt->dir resolves to (malloc'd), without creating it. */
cs_status cs_models_dir(const cs_models_pull_options *opt, char **out, cs_error *err);

/* Downloads e into the model directory as <name>.onnx (+ <name>.json and
 * imagenet_labels.txt when the entry has them).  The bytes go to
 * <name>.onnx.part while SHA-256 is computed on the fly; the file is renamed
 * into place only when the size and the hash match e, and deleted
 * otherwise.  A present file whose hash matches is kept without a download.
 * *path_out (optional) receives the model path (malloc'd).
 * Errors: CS_EIO (network or file; the message is one line naming the URL
 * and curl's reason), CS_EFORMAT (size or checksum mismatch), CS_EINVAL
 * (a name with characters other than [A-Za-z0-9._-], or a bad sha256). */
cs_status cs_models_pull(const cs_models_entry *e, const cs_models_pull_options *opt,
                         char **path_out, cs_error *err);

/* SHA-256 of a file as 64 lowercase hex digits + NUL. */
cs_status cs_models_sha256_file(const char *path, char hex[65], cs_error *err);

/* ---- evaluation ----------------------------------------------------------- */

/* A labelled image folder (layout in docs/models.md):
 *   DIR/labels.txt               optional: class names, line i = model output i
 *                                (else the model's labels; else folder names
 *                                must be class indices)
 *   DIR/<class>/<stem>.jpg|.jpeg|.png|.webp   images of that class
 *   DIR/<class>/<stem>.mask.png  optional object mask, nonzero = object,
 *                                any size (it is scaled to the image) */
typedef struct cs_models_eval_item {
    char *image; /* path, owned */
    char *mask;  /* path or NULL, owned */
    int label;   /* class index */
} cs_models_eval_item;

typedef struct cs_models_eval_set {
    int n;
    cs_models_eval_item *items; /* sorted by class folder, then file name */
    int nclasses;               /* length of class_names */
    char **class_names;         /* owned; index = class */
} cs_models_eval_set;

/* Scans dir.  labels/nlabels: the model's class names, used when dir has no
 * labels.txt (may be NULL/0).  A class folder that names no class is
 * CS_ENOTFOUND; a folder without images is skipped. */
cs_status cs_models_eval_set_load(const char *dir, const char *const *labels, int nlabels,
                                  cs_models_eval_set *out, cs_error *err);
void cs_models_eval_set_free(cs_models_eval_set *s);

/* ---- metrics (pure functions) ----
 * map: mh x mw, the CAM at model input resolution (values >= 0).
 * mask: mask_w x mask_h bytes, nonzero = object.  box: where the map lies
 * in the mask's pixel frame (x0, y0, x1, y1): the preprocessing crop box
 * scaled to the mask. */

/* 1 when the map's maximum (first one in row-major order) maps to a mask
 * pixel that is nonzero, else 0.  tol > 0: also a hit when a nonzero mask
 * pixel lies within tol map pixels of it (Zhang et al.'s pointing game uses
 * 15 pixels on ~500-pixel images); 0 is the strict game. */
int cs_models_pointing_hit(const float *map, int mh, int mw, const uint8_t *mask, int mask_w,
                           int mask_h, const float box[4], float tol);
/* Share of the map's sum on pixels whose centre falls on the mask; 0 for an
 * all-zero map. */
double cs_models_energy_in_mask(const float *map, int mh, int mw, const uint8_t *mask, int mask_w,
                                int mask_h, const float box[4]);
/* Trapezoidal area under y[0..n) sampled evenly on [0, 1]. */
double cs_models_auc(const float *y, int n);

/* The steps+1 inputs of a deletion (insertion = 0) or insertion (= 1) curve
 * for one CHW input x (c x h x w) and its map (h x w): input k has the
 * round(k/steps * h*w) most salient pixels (ties: lower index first)
 * replaced by the image's per-channel mean (deletion), or taken from x on
 * top of a blurred x (insertion; three box blurs of radius max(1, w/32)).
 * out holds (steps+1) x c x h x w floats. */
cs_status cs_models_perturb(const float *x, int c, int h, int w, const float *map, int steps,
                            int insertion, float *out, cs_error *err);

#define CS_MODELS_EVAL_MAX_METHODS 10

typedef struct cs_models_eval_options {
    int nmethods; /* 0: accuracy only */
    cs_cam_method methods[CS_MODELS_EVAL_MAX_METHODS];
    cs_explain_options explain; /* layers and smoothing; the class is set per image */
    int steps;                  /* deletion/insertion steps (default 10) */
    int limit;                  /* evaluate the first N images only (0: all) */
    float tolerance;            /* pointing game tolerance in model input pixels (0: strict) */
    void (*progress)(void *ctx, int done, int total); /* optional, after each image */
    void *progress_ctx;
} cs_models_eval_options;

cs_models_eval_options cs_models_eval_default_options(void);

typedef struct cs_models_eval_method {
    cs_cam_method method;
    int n_masked;        /* images that had a mask */
    double pointing;     /* share of n_masked whose map peak is on the object */
    double energy;       /* mean energy-in-mask share over n_masked */
    double deletion;     /* mean AUC of the class probability, lower = better */
    double insertion;    /* mean AUC, higher = better */
} cs_models_eval_method;

typedef struct cs_models_eval_result {
    int n, correct, correct5;
    int nclasses;
    int *class_n, *class_correct; /* nclasses each, malloc'd */
    int nmethods;
    cs_models_eval_method methods[CS_MODELS_EVAL_MAX_METHODS];
    double seconds;
} cs_models_eval_result;

/* Evaluates m on set with preprocessing pp.  Every map explains the image's
 * true class (pytorch-grad-cam's ClassifierOutputTarget(label)); deletion
 * and insertion follow that class's softmax probability. */
cs_status cs_models_eval_run(const cs_model *m, cs_session *s, const cs_preproc *pp,
                             const cs_models_eval_set *set, const cs_models_eval_options *opt,
                             cs_models_eval_result *out, cs_error *err);
void cs_models_eval_result_free(cs_models_eval_result *r);

#ifdef __cplusplus
}
#endif
#endif
