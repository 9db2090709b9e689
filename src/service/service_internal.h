/* Private pieces of the service module: the byte-bounded LRU used by the
 * result cache and the image store, the serialised form of a result, and
 * the service's state with the helpers its source files share.
 *
 * Cache tiers.  The memory tier is this LRU holding live cs_svc_result
 * objects; below it sit the disk (LMDB) and Redis tiers of src/cache
 * (camserve/cache.h), which store results serialised by svc_result_encode
 * inside a checksummed frame.  Admission (service.c) looks up memory, then
 * cs_cache_get (disk, then Redis), and fills the tiers above on a
 * lower-tier hit; the prep pool (prep.c) puts a computed result into
 * memory before its answer is sent and into the lower tiers right after.
 * The memory tier never serialises. */
#ifndef CS_SERVICE_INTERNAL_H
#define CS_SERVICE_INTERNAL_H

#include "camserve/cache.h"
#include "camserve/explain.h"
#include "camserve/service.h"
#include "util/histogram.h"
#include "util/team.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

/* A map from 32-byte keys (SHA-256 digests, so the first 8 bytes are a good
 * hash already) to reference-counted values, bounded by the byte sizes the
 * caller declares.  Inserting beyond the bound evicts least recently used
 * entries; a value larger than the whole bound is not kept.  The LRU holds
 * one reference per entry (retain on insert, release on eviction / free).
 * All functions are thread-safe (one mutex; every operation is O(1)). */
typedef struct svc_lru svc_lru;
typedef void (*svc_lru_ref_fn)(void *value);

svc_lru *svc_lru_create(size_t max_bytes, svc_lru_ref_fn retain, svc_lru_ref_fn release);
void svc_lru_free(svc_lru *l); /* NULL is a no-op */
/* A retained reference to the value (the caller releases it), or NULL.
 * A hit becomes the most recently used entry. */
void *svc_lru_get(svc_lru *l, const uint8_t key[32]);
/* Inserts or replaces; returns 1 if kept, 0 if too large (or no memory). */
int svc_lru_put(svc_lru *l, const uint8_t key[32], void *value, size_t bytes);
void svc_lru_stats(svc_lru *l, size_t *bytes, size_t *entries, uint64_t *evictions);
/* Drops every entry for which drop(ctx, value) is non-zero; returns the count. */
size_t svc_lru_remove_if(svc_lru *l, int (*drop)(void *ctx, void *value), void *ctx);

/* ---- results serialised for the disk and Redis tiers (result_codec.c) ---- */
struct cs_svc_result;
/* A malloc'd byte string (the base64 copies are left out); 0 on no memory. */
int svc_result_encode(const struct cs_svc_result *r, uint8_t **out, size_t *len);
/* Fills *r (PNG and base64 buffers malloc'd; free with svc_result_free_fields);
 * 0, with nothing allocated, when buf is not a whole, valid encoding. */
int svc_result_decode(const uint8_t *buf, size_t len, struct cs_svc_result *r);
void svc_result_free_fields(struct cs_svc_result *r);

/* ---- the service's state, shared by its source files ------------------------------
 *
 *   service.c   admission (submit), the job lists and single-flight, the
 *               lifecycle, the blocking call, cache administration
 *   registry.c  model versions: loading, and the hot-reload thread
 *   prep.c      the prep pool: decode + preprocess before a worker, overlay
 *               + PNG after it, and the sweep of expired jobs
 *   worker.c    inference workers: dynamic batching, running a batch, the
 *               watch that stops ScoreCAM / AblationCAM runs
 *   metrics.c   counters and the Prometheus text
 *
 * The locking rules are service.c's opening comment; a function below that
 * expects a lock held, or not held, says so. */

/* Encoded image bytes in the image store, shared with the jobs decoding them. */
typedef struct blob {
    atomic_int refs;
    bool adopted;  /* data is the caller's block (request.image_taken), else inline */
    size_t len;
    uint8_t *data;
} blob;

typedef struct result_box {
    atomic_int refs;
    size_t bytes;
    uint8_t tag[32]; /* the model digest: DELETE /v1/cache?model= */
    time_t created;  /* for the TTL */
    cs_svc_result r;
} result_box;

#define BOX_OF(res) ((result_box *)((char *)(res) - offsetof(result_box, r)))

/* A decoded and preprocessed image (the prep cache): what decode + preprocess
 * made for one image under one model's preprocessing.  Immutable once made:
 * the jobs that read it (the one that decoded it, and every later request
 * for the same image) hold references instead of copies of its ~3 MB. */
typedef struct prepped {
    atomic_int refs;
    cs_image img;  /* decoded, at the overlay's display size (to_display_size) */
    float box[4];  /* crop window in img pixels */
    size_t nin;    /* floats in input */
    float *input;  /* C x H x W */
} prepped;

/* One loaded version of a model: immutable after load, shared by the jobs
 * that use it (refs) and the worker sessions built on it (one ref each).  A
 * hot reload retires it; the reloader frees it once refs is 0 and the grace
 * period (for cs_svc_model_at readers, which hold no reference) is over. */
typedef struct svc_model {
    cs_svc_model_info info; /* public view; points into the fields below */
    atomic_int refs;
    int slot;               /* index in s->slots */
    double retired_at;
    struct svc_model *next_retired;
    char name[64];
    cs_model *m;
    cs_preproc pp;
    uint8_t digest[32];
    char pp_text[256]; /* canonical preprocessing, part of every cache key */
    char *labels_buf;
    char **labels;
    int b0; /* fixed batch of the exported graph, 0 when dynamic */
} svc_model;

typedef struct job job;

/* What one image's ScoreCAM / AblationCAM run of one kind cost here, last
 * time: a request of that kind whose run would outlast the timeout on its
 * own is answered 504 at once, instead of holding a worker until the
 * cancel hook stops it at the deadline (on ResNet-50 ScoreCAM needs ~50 s
 * on 2 cores; the default timeout is 30 s, so every such request cost 30 s
 * of a worker for nothing).  The kind is what the run's length depends on:
 * the model's bytes, the method, the layers (one forward item per
 * channel), aug_smooth (six times the items) and the items per forward;
 * not the class, which the same runs answer.  A run stopped at its
 * deadline counts at its extrapolated length (the time so far over the
 * fraction done).  The estimate is forgotten after SLOW_RUN_TTL_MS, and
 * refuses only beyond SLOW_RUN_MARGIN x the timeout, because it may have
 * been measured while other work shared the cores: a pessimistic one then
 * costs one more run per TTL, not every request for good.  Under s->mu. */
typedef struct run_cost {
    uint8_t digest[32]; /* the model's */
    cs_cam_method method;
    int nlayers, layers[CS_EXPLAIN_MAX_LAYERS], aug_smooth, batch_size;
    double ms;          /* one image's whole run */
    double at;          /* when measured (cs_now_ms); 0: an unused entry */
    bool extrapolated;  /* from a run stopped part way */
} run_cost;

enum { SLOW_RUNS = 16 };
#define SLOW_RUN_TTL_MS (10 * 60e3)
#define SLOW_RUN_MARGIN 1.2
/* What a 504 for a run too long for the timeout tells the client to do. */
#define SLOW_RUN_ADVICE "use a faster method (gradcam takes a single backward pass) or raise --timeout-ms"

/* A served model name: its current version and, for a file, what the
 * reloader last saw.  path/seen/pending are the reloader's alone after start;
 * cur changes under s->vmu. */
typedef struct svc_slot {
    svc_model *cur;
    char path[4096];     /* "" when loaded from memory: never reloaded */
    char labels[4096];   /* the caller's labels file, read again on reload; "": the sidecar's */
    struct stat seen;    /* the file as last loaded (or last refused) */
    struct stat pending; /* a change seen once: loaded when the next poll sees it unchanged */
    bool has_pending;
    uint64_t reloads, reload_failures;
} svc_slot;

#define RETIRE_GRACE_MS 10000.0

enum { STAGE_QUEUE, STAGE_DECODE, STAGE_PREPROCESS, STAGE_INFERENCE, STAGE_CAM, STAGE_ENCODE,
       STAGE_TOTAL, NSTAGES };

struct cs_svc {
    cs_svc_params p;
    /* images prepared by the GPU image path, by decoder, and JPEGs it left
     * to the CPU (for /metrics); gpu_warned: its failure was logged */
    atomic_long gpu_prepped[2], gpu_left;
    atomic_int gpu_warned;
    int gpu_device; /* the CUDA device of the models, -1 when on the CPU (set by cs_svc_start) */
    char *prepared_dir; /* <cache-dir>/models: the engine's prepared-model cache, or NULL */
    svc_slot slots[CS_SVC_MAX_MODELS];
    int nmodels;
    /* hot reload: vmu guards every slot's cur and the retired list; the
     * reloader thread polls the files (lock order: mu before vmu) */
    pthread_mutex_t vmu;
    pthread_cond_t reload_cv;
    svc_model *retired;
    pthread_t reloader;
    bool reloader_started, reload_quit;

    pthread_mutex_t mu;
    pthread_cond_t prep_cv, work_cv, idle_cv;
    job *prep_head, *prep_tail, *infer_head, *infer_tail, *post_head, *post_tail;
    int prep_len, infer_len, post_len, running;
    int prepping; /* jobs a prep thread is decoding right now */
    int posting;  /* jobs a prep thread is encoding or storing (do_post, tier_store) right now */
    int ncores;   /* omp_get_num_procs() at create */
    /* Helpers that split a result's overlay and PNG (encode_threads - 1 of
     * them, shared by the prep threads; NULL when it is 1).  Lent only to
     * spare cores: see post_ways. */
    cs_team *team;
    /* Decoded jobs waiting for a worker, at most: an admitted job waits as
     * its compressed upload, and is decoded (pixels + tensor, ~3 MB for a
     * photo) only when a worker will want it soon.  Decoding the whole
     * queue ahead bought no throughput and held that memory per queued
     * request under overload. */
    int prep_ahead;
    int inflight;        /* admitted and not yet finished */
    /* Admission's estimate of the work ahead.  Worker time per job is a
     * moving average per model slot and cost class (classify, or explain
     * with one CAM method: ScoreCAM costs ~20x GradCAM, so one average
     * for all refused cheap requests behind an expensive one, or admitted
     * expensive ones into a certain 504); job_ms, over every job, stands
     * in for a class not yet seen; a ScoreCAM / AblationCAM of a kind
     * measured lately is charged its run_cost (cost_estimate).  queued_ms
     * sums the estimates of the admitted jobs that compute (not
     * followers) until they finish. */
    double cost_ms[CS_SVC_MAX_MODELS][1 + CS_CAM_METHOD_COUNT];
    double job_ms;
    double queued_ms;
    run_cost slow[SLOW_RUNS]; /* see run_cost */
    bool stopping, quit, workers_joined, started;
    atomic_int ready;
    int warming; /* workers still warming their sessions at start (mu, warm_cv) */
    pthread_cond_t warm_cv;

    pthread_t *workers, *preps;
    int nworkers_started, npreps_started;
    cs_session **sessions;   /* workers x nmodels */
    svc_model **sess_model;  /* the version each session was built on (a reference) */

    svc_lru *results, *images, *prepped;
    cs_cache *tiers; /* disk + Redis below the memory LRU; NULL when neither */

    /* Single-flight: the leader job of each key being computed, chained by
     * fnext in 256 buckets by the key's first byte; a request for the same key waits on the
     * leader's followers list.  Guarded by mu. */
    job *flights[256];
    int nfollowers;

    pthread_mutex_t mmu;
    cs_hist stage[NSTAGES];
    cs_hist batch;
    uint64_t hits, misses, coalesced, rejected[CS_SVC_GONE + 1], completed[CS_SVC_GONE + 1];
    uint64_t runs_stopped[3]; /* ScoreCAM/AblationCAM runs stopped: by the deadlines, at shutdown, clients gone */
    uint64_t runs_skipped;    /* ... and never begun: every client gone while they waited (job_abandoned) */
};

struct job {
    job *next;
    job *fnext;     /* next leader in the same flights bucket */
    job *followers; /* identical requests waiting for this one (chained by next) */
    bool leader, follower;
    cs_svc *s;
    svc_model *model;
    cs_svc_kind kind;
    cs_explain_options eo;
    cs_img_colormap cmap;
    double alpha;
    int topk;
    uint8_t key[32];
    uint8_t img_sha[32];
    char image_id[65];
    blob *image;
    cs_svc_done_fn done;
    void *ctx;
    int (*client_gone)(void *ctx); /* the request's, or NULL */
    bool gone;      /* client_gone said so (monotonic: a closed connection stays closed) */
    double t_submit, t_ready, deadline;
    double est_ms;  /* its part of s->queued_ms (0 for followers) */
    /* img and input are the job's own, or views of prep's when prep is set
     * (the prep cache's entry, a reference: never written through) */
    prepped *prep;
    cs_image img;   /* decoded upload, kept for the overlay */
    float box[4];   /* crop window in img pixels */
    float *input;   /* C x H x W */
    float *logits;  /* num_classes */
    float *cam;     /* cam_h x cam_w in [0,1] */
    int cam_h, cam_w, class_idx;
    cs_svc_timings tm;
    cs_svc_outcome outcome;
    cs_error err;
};

/* What svc_worker_main is started with (malloc'd; the worker frees it). */
typedef struct worker_arg {
    cs_svc *s;
    int idx;
} worker_arg;

/* ---- service.c ---- */
void svc_hex32(const uint8_t *d, char hex[65]);
int svc_sha256(const void *buf, size_t len, uint8_t out[32]); /* 1 on success */
/* now + ms_from_now on CLOCK_MONOTONIC, the clock of the service's condition variables */
void svc_abs_deadline(struct timespec *ts, double ms_from_now);
/* The reference counts of the values above (void * for svc_lru). */
void svc_blob_retain(void *v);
void svc_blob_release(void *v);
void svc_result_retain(void *v);
void svc_result_release(void *v);
void svc_prepped_retain(void *v);
void svc_prepped_release(void *v);
size_t svc_box_bytes(const result_box *b);
/* Admission's cost bookkeeping (s->mu held). */
int svc_cost_class(const job *j);
void svc_cost_observe(double *ewma, double v);
bool svc_slow_method(cs_cam_method m); /* ScoreCAM / AblationCAM: a forward run per channel */
void svc_run_cost_observe(cs_svc *s, const job *j, double ms, bool extrapolated, double now);
/* FIFO job lists, chained by next (s->mu held). */
void svc_list_push(job **head, job **tail, job *j);
job *svc_list_pop(job **head, job **tail);
/* Sets the outcome of a job its caller owns, with msg as its message. */
void svc_fail_job(job *j, cs_svc_outcome o, cs_status code, const char *msg);
cs_svc_outcome svc_outcome_of(cs_status st); /* the outcome a failing step's status means */
/* Answers j (and the identical requests that waited for it) and frees it;
 * res is a reference that moves to the response, or NULL.  s->mu not held. */
void svc_finish_job(cs_svc *s, job *j, const cs_svc_result *res);
void svc_finish_list(cs_svc *s, job *list); /* each of a list chained by next */
/* Answers 504 to every queued job and waiting follower past its deadline.
 * s->mu held, released while the answers go out; 1 when it answered any. */
int svc_sweep_expired(cs_svc *s, double now);

/* ---- registry.c ---- */
void svc_model_destroy(svc_model *sm); /* NULL is a no-op */
void svc_model_retain(svc_model *m);
void svc_model_release(svc_model *m); /* never frees: see svc_model */
void *svc_reload_main(void *arg);     /* the reloader thread (arg: the cs_svc) */

/* ---- prep.c, worker.c, metrics.c ---- */
void *svc_prep_main(void *arg);   /* a prep thread (arg: the cs_svc) */
void *svc_worker_main(void *arg); /* a worker thread (arg: a worker_arg) */
void svc_count_outcome(cs_svc *s, cs_svc_outcome o, bool rejected); /* takes s->mmu */

#endif
