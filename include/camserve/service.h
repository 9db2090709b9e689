/* camserve service: the only place that knows about queues, workers,
 * batching and caches.  The HTTP server and the CLI are thin layers over it.
 *
 * A request (model, image bytes or image_id, method, layers, class, topk,
 * colormap, alpha) goes through these stages:
 *
 *   submit (caller's thread)  validate parameters, SHA-256 of the image,
 *                             result-cache lookup: a hit is answered here
 *   prep pool                 decode (DCT-scaled) + preprocess to a tensor
 *   inference workers         one cs_session per worker and model; a worker
 *                             takes up to max_batch compatible requests that
 *                             arrive within batch_window_ms and runs one
 *                             forward (+ backward + CAM) for all of them
 *   prep pool                 overlay + heatmap + PNG encode, cache insert,
 *                             completion callback
 *
 * Admission is bounded: at most queue + workers*max_batch requests are in
 * the pipeline; beyond that submit fails at once with CS_SVC_BUSY, so memory
 * does not grow with the number of clients.  A request still waiting for a
 * worker when its deadline passes fails with CS_SVC_TIMEOUT.  So does a
 * ScoreCAM or AblationCAM run (a forward pass per channel: ScoreCAM's take
 * up to minutes on a CPU) that cannot end before the deadline of any
 * request still waiting for it: it is stopped as soon as its pace shows
 * that, not run to the end for nobody.  A request whose client has gone
 * (cs_svc_request.client_gone) waits for nothing either, and completes with
 * CS_SVC_GONE when its run is stopped for that.  Submit
 * fails at once with CS_SVC_TIMEOUT for such a run whose kind (model,
 * method, layers, aug_smooth) a run of the last 10 minutes showed to take
 * over 1.2 x the timeout.
 *
 * Caches.  The result cache maps a 32-byte key -- SHA-256 over the image's
 * SHA-256, the model digest, the engine version and every parameter that
 * changes the output -- to an immutable, reference-counted cs_svc_result.
 * Tiers: an in-memory LRU (bounded in bytes), then optionally LMDB on disk
 * and Redis (camserve/cache.h), looked up in that order on submit; a lower
 * tier's hit fills the tiers above.  Identical concurrent misses are computed
 * once (single-flight): later ones wait for the first, each with its own
 * deadline.  Failures of a lower tier are misses.  An image store (LRU of the encoded
 * bytes, keyed by image_id = hex SHA-256 of the bytes) lets clients ask
 * again for an image they uploaded, without re-uploading it.
 *
 * Hot reload.  A model loaded from a file is polled (mtime, size, inode;
 * reload_poll_ms): a change is loaded beside the running version, swapped in
 * atomically for new requests, and the old version is freed once the
 * requests and sessions using it are done (reference counts).  A file that
 * does not load leaves the old version serving, with one line on stderr.
 *
 * Thread-safety: after cs_svc_start, cs_svc_submit / cs_svc_call /
 * cs_svc_write_metrics / the model accessors may be called from any number
 * of threads.  cs_svc_add_model* and cs_svc_start are for one thread before
 * serving; cs_svc_stop and cs_svc_free for one thread at the end. */
#ifndef CAMSERVE_SERVICE_H
#define CAMSERVE_SERVICE_H

#include "camserve/engine.h"
#include "camserve/imageio.h"

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CS_SVC_MAX_TOPK 20
#define CS_SVC_MAX_MODELS 8

typedef struct cs_svc cs_svc;

typedef struct cs_svc_params {
    int workers;           /* inference workers (default 1) */
    int threads;           /* compute threads per worker; 0: cores / workers */
    int prep_threads;      /* decode/preprocess/encode pool (default 2) */
    int max_batch;         /* requests per network run; 0 (the default): 1 when every
                            * model runs on the CPU, 8 when one runs on a GPU -- on
                            * the CPU a batch costs more per image than single runs
                            * (docs/benchmarks.md) and its plans cost memory */
    int batch_window_ms;   /* how long a worker waits to fill a batch (default 2) */
    int queue;             /* requests waiting beyond those being run (default 64) */
    int timeout_ms;        /* per request: submit to worker pick-up, and to the end of a
                            * ScoreCAM / AblationCAM run (default 30000) */
    size_t cache_mem_bytes; /* result cache; 0 disables it (default 256 MB) */
    size_t image_store_bytes; /* recent images for image_id requests (default 128 MB) */
    const char *cache_dir;    /* LMDB result tier (camserve/cache.h); NULL: none.  Borrowed for cs_svc_create */
    size_t cache_disk_bytes;  /* its byte bound (default 1 GB) */
    const char *redis_url;    /* Redis result tier, redis://HOST:PORT[/DB]; NULL: none.  Borrowed likewise */
    int cache_ttl_s;          /* disk / Redis entries older than this are misses (default 86400; 0: none) */
    int reload_poll_ms;       /* how often model files are checked for changes (hot reload; default
                               * 1000; 0: never) */
    size_t prep_cache_bytes;  /* decoded + preprocessed images kept per (image, preprocessing), so that
                               * another method / class / layer for a seen image skips decode and
                               * preprocessing (default 64 MB; 0 disables) */
    int overlay_max_side;  /* long side of overlay PNGs (default 800) */
    const char *device;    /* cs_model_options.device for every model (NULL: "cpu"); borrowed
                            * for the service's lifetime */
    cs_precision precision; /* cs_model_options.precision (default: the device's) */
    cs_img_limits limits;  /* decode limits (bytes, pixels) */
    int encode_threads;    /* threads one result's overlay and PNG may be split over
                            * (imageio's cs_img_par); 1 never splits; 0 (the default): by
                            * device, 1 when every model runs on the CPU, one per core up to 8
                            * when they run on a GPU.  Helpers are lent only to cores that
                            * would idle: on a CPU device, while no network runs or waits */
    int gpu_decode;        /* 1 (the default): for a model on a GPU, JPEGs above the overlay's
                            * display size are decoded and preprocessed there (gpuprep.h) when
                            * nvJPEG loads; 0: always on the CPU */
} cs_svc_params;

cs_svc_params cs_svc_default_params(void);

/* ---- lifecycle ---- */

cs_status cs_svc_create(const cs_svc_params *p, cs_svc **out, cs_error *err);
/* Loads a model file under name (NULL: the file's basename without .onnx).
 * The model digest is SHA-256 of the file; the preprocessing config comes
 * from the sidecar / metadata as for the CLI (imageio.h), and so do the
 * labels unless `labels` (may be NULL) names a labels file, one class per
 * line, which a hot reload reads again. */
cs_status cs_svc_add_model(cs_svc *s, const char *name, const char *path, const char *labels, cs_error *err);
/* Same from memory (the embedded default model).  config_json (may be NULL)
 * is the preprocessing + labels JSON; labels_text (may be NULL) one label per
 * line.  The buffers are borrowed for the call. */
cs_status cs_svc_add_model_buffer(cs_svc *s, const char *name, const void *buf, size_t len,
                                  const char *config_json, const char *labels_text,
                                  cs_error *err);
/* Creates the sessions and starts the threads; the service is ready after. */
cs_status cs_svc_start(cs_svc *s, cs_error *err);
/* Whether cs_svc_start has succeeded and cs_svc_stop not begun. */
int cs_svc_ready(const cs_svc *s);
/* Refuses new requests (CS_SVC_STOPPING), waits up to drain_ms for those in
 * flight to complete (their callbacks run), then stops the threads.  Jobs
 * still queued at the deadline complete with CS_SVC_STOPPING, and so do
 * ScoreCAM / AblationCAM runs, stopped within one of their forward runs. */
void cs_svc_stop(cs_svc *s, int drain_ms);
/* Stops if needed and frees everything; NULL is a no-op.  Every result
 * reference handed out must have been released before. */
void cs_svc_free(cs_svc *s);

/* ---- models ---- */

typedef struct cs_svc_model_info {
    const char *name;
    char digest[65];           /* hex SHA-256 of the ONNX bytes */
    const cs_model *model;     /* for layers, info; owned by the service */
    int input_w, input_h;
    int num_classes;
    int num_labels;            /* 0 when the model has none */
    const char *const *labels; /* num_labels strings */
    double load_ms;
    const char *preprocess_source; /* "sidecar", "metadata", "defaults", "config" */
    int builtin;               /* loaded from memory (cs_svc_add_model_buffer): the embedded model */
} cs_svc_model_info;

int cs_svc_num_models(const cs_svc *s);
/* The current version of model i; NULL when out of range.  Valid until the
 * model is reloaded and then for at least 10 s more (a reader holds no
 * reference: use it and let go). */
const cs_svc_model_info *cs_svc_model_at(const cs_svc *s, int i);

/* ---- requests ---- */

typedef enum cs_svc_kind { CS_SVC_EXPLAIN = 0, CS_SVC_CLASSIFY } cs_svc_kind;

/* Every string is borrowed for the duration of cs_svc_submit / cs_svc_call
 * (the service copies what it keeps).  NULL or 0 means the default. */
typedef struct cs_svc_request {
    cs_svc_kind kind;
    const char *model;     /* name; NULL: the first model */
    const void *image;     /* encoded image bytes, or NULL with image_id */
    size_t image_len;
    /* SHA-256 of image, when the caller already computed it (the server
     * hashes while the upload arrives); NULL: the service computes it */
    const uint8_t *image_sha256;
    /* Optional hand-over of a new image: with image_taken set and image a
     * malloc()ed block of image_cap (>= image_len) bytes, the service may
     * keep the block instead of copying it; it then sets *image_taken to 1,
     * frees the block itself, and the caller must not touch it again. */
    size_t image_cap;
    int *image_taken;
    const char *image_id;  /* hex SHA-256 of an image uploaded before */
    const char *method;    /* cs_cam_method_parse names; default gradcam */
    const char *layer;     /* "auto" or comma-separated layer names */
    const char *class_spec; /* "top" or a class index */
    int topk;              /* predictions returned, 1..20 (default 5) */
    const char *colormap;  /* jet (default), turbo, viridis, inferno, gray */
    double alpha;          /* overlay opacity in [0,1]; < 0: 0.5 */
    int aug_smooth, eigen_smooth;
    /* Optional: nonzero once the client that is to read the answer has
     * gone (closed its connection).  Called with submit's ctx from a
     * worker, with the service's lock held, while a ScoreCAM / AblationCAM
     * run that the request waits for goes on (before each forward run):
     * it must be quick, must not block, and must not call the service.
     * NULL: the client is always there. */
    int (*client_gone)(void *ctx);
} cs_svc_request;

typedef enum cs_svc_outcome {
    CS_SVC_OK = 0,
    CS_SVC_BAD_REQUEST,   /* unknown model/method/layer/class, bad value */
    CS_SVC_BAD_IMAGE,     /* not a JPEG/PNG/WebP, or corrupt */
    CS_SVC_TOO_LARGE,     /* over the byte or pixel limit */
    CS_SVC_UNKNOWN_IMAGE, /* image_id not (or no longer) in the image store */
    CS_SVC_BUSY,          /* admission queue full: retry later */
    CS_SVC_TIMEOUT,       /* no worker took it before the deadline */
    CS_SVC_STOPPING,      /* the service is stopping or not ready */
    CS_SVC_INTERNAL,      /* engine or allocation failure */
    CS_SVC_GONE           /* its client went away during its run, which was stopped */
} cs_svc_outcome;

const char *cs_svc_outcome_name(cs_svc_outcome o);

typedef struct cs_svc_prediction {
    int index;
    float score;           /* softmax probability */
    char label[96];        /* "" when the model has no labels */
} cs_svc_prediction;

/* Stage times in milliseconds.  For a cache hit only total is non-zero. */
typedef struct cs_svc_timings {
    double queue, decode, preprocess, inference, cam, encode, total;
} cs_svc_timings;

/* An immutable, reference-counted result, shared by the cache and every
 * response that returns it.  Read-only for callers. */
typedef struct cs_svc_result {
    cs_svc_kind kind;
    char model[64];
    char image_id[65];
    int npred;
    cs_svc_prediction preds[CS_SVC_MAX_TOPK];
    /* explain only: */
    char method[32];
    char layer[512];       /* comma-separated when several */
    int class_index;
    char class_label[96];
    const char *colormap;  /* static name */
    double alpha;
    int overlay_w, overlay_h;
    uint8_t *overlay_png;  size_t overlay_len;
    uint8_t *heatmap_png;  size_t heatmap_len;
    /* The same PNGs in base64 (NUL-terminated), made once when the result
     * is computed so that every cache hit answers without re-encoding. */
    char *overlay_b64;     size_t overlay_b64_len;
    char *heatmap_b64;     size_t heatmap_b64_len;
    int image_w, image_h;  /* the upload's size (after EXIF orientation) */
    float box[4];          /* the model's crop window (x0, y0, x1, y1) as fractions of
                            * the image: where the heatmap lies on the picture */
    cs_svc_timings computed; /* the timings of the computation that made it */
} cs_svc_result;

typedef struct cs_svc_response {
    cs_svc_outcome outcome;
    cs_error err;          /* the message when outcome != CS_SVC_OK */
    const cs_svc_result *result; /* a reference when CS_SVC_OK */
    int cache_hit;
    char image_id[65];     /* known as soon as the image was hashed ("" else) */
    cs_svc_timings timings; /* of this request */
} cs_svc_response;

/* Releases the response's result reference (NULL-safe, idempotent). */
void cs_svc_response_clear(cs_svc_response *r);

/* Another reference to a result (returned), and its release: a result
 * stays valid while any reference is held, so an answer can send its
 * buffers without copying them after the response is cleared. */
const cs_svc_result *cs_svc_result_retain(const cs_svc_result *r);
void cs_svc_result_release(const cs_svc_result *r);

/* The batch size in use: max_batch, or what 0 resolved to (after start). */
int cs_svc_max_batch(const cs_svc *s);
/* Likewise encode_threads. */
int cs_svc_encode_threads(const cs_svc *s);

/* Called exactly once per queued request, on a service thread; owns *resp
 * (copy it, then clear it when done with the result). */
typedef void (*cs_svc_done_fn)(void *ctx, cs_svc_response *resp);

/* Submits a request.  Returns 1 when it was answered at once -- a cache hit
 * or an error found before queuing -- with *resp filled and done never
 * called; returns 0 when queued: done(ctx, resp) follows exactly once,
 * possibly before cs_svc_submit returns (the caller must be ready for
 * that), and *resp is not touched. */
int cs_svc_submit(cs_svc *s, const cs_svc_request *req, cs_svc_done_fn done, void *ctx,
                  cs_svc_response *resp);

/* Blocking convenience over cs_svc_submit. */
void cs_svc_call(cs_svc *s, const cs_svc_request *req, cs_svc_response *resp);

/* Hex SHA-256 of buf into hex[65]. */
cs_status cs_svc_sha256_hex(const void *buf, size_t len, char hex[65], cs_error *err);

/* Drops cached results from the memory and disk tiers: every model's
 * (model NULL or "") or one model's.  Redis entries, shared by replicas, are
 * left to their TTL.  *removed (may be NULL) counts memory + disk entries.
 * CS_ENOTFOUND for an unknown model.  Any thread, any time after create. */
cs_status cs_svc_cache_clear(cs_svc *s, const char *model, uint64_t *removed, cs_error *err);

/* Appends the service's Prometheus metrics (stage latency histograms, cache
 * hits/misses/bytes by tier, queue depth, in-flight, batch sizes, model load
 * seconds, rejections) to f. */
void cs_svc_write_metrics(cs_svc *s, FILE *f);

#ifdef __cplusplus
}
#endif
#endif
