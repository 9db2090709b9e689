/* camserve service: admission, the prep pool, inference workers with dynamic
 * batching, the result cache and the image store (see service.h).
 *
 * Data layout.  One mutex (s->mu) guards three FIFO job lists and the
 * counters that go with them:
 *   prep   submitted, waiting for decode + preprocess
 *   infer  preprocessed, waiting for a worker (dynamic batching reads here)
 *   post   run by a worker, waiting for overlay/heatmap/PNG + completion
 * A job is owned by exactly one list or one thread at a time; it is freed by
 * finish_job after its callback ran.  The prep pool serves post before prep:
 * finishing started work first keeps memory bounded.  Callbacks always run
 * without s->mu held.
 *
 * Metrics live under their own lock (s->mmu) so /metrics never waits for the
 * queue lock of a busy service. */
#include "camserve/service.h"

#include "camserve/cache.h"
#include "camserve/explain.h"
#include "camserve/gpuprep.h"
#include "service/service_internal.h"
#include "util/histogram.h"
#include "util/team.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* ---- small helpers ---------------------------------------------------------- */

static void hex32(const uint8_t *d, char hex[65]) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    hex[64] = '\0';
}

static int unhex32(const char *hex, uint8_t out[32]) {
    if (!hex || strlen(hex) != 64) return 0;
    for (int i = 0; i < 64; i++) {
        int c = tolower((unsigned char)hex[i]), v;
        if (c >= '0' && c <= '9') v = c - '0';
        else if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
        else return 0;
        if (i % 2 == 0) out[i / 2] = (uint8_t)(v << 4);
        else out[i / 2] |= (uint8_t)v;
    }
    return 1;
}

static int sha256(const void *buf, size_t len, uint8_t out[32]) {
    unsigned int n = 0;
    return EVP_Digest(buf, len, out, &n, EVP_sha256(), NULL) == 1 && n == 32;
}

cs_status cs_svc_sha256_hex(const void *buf, size_t len, char hex[65], cs_error *err) {
    uint8_t d[32];
    if (!sha256(buf, len, d)) return cs_errorf(err, CS_EINTERNAL, "SHA-256 failed");
    hex32(d, hex);
    return CS_OK;
}

static void abs_deadline(struct timespec *ts, double ms_from_now) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    long long ns = (long long)ts->tv_nsec + (long long)(ms_from_now * 1e6);
    ts->tv_sec += (time_t)(ns / 1000000000LL);
    ts->tv_nsec = (long)(ns % 1000000000LL);
}

static void cond_init_mono(pthread_cond_t *c) {
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
}

/* ---- reference-counted values ---------------------------------------------- */

/* Encoded image bytes in the image store, shared with the jobs decoding them. */
typedef struct blob {
    atomic_int refs;
    bool adopted;  /* data is the caller's block (request.image_taken), else inline */
    size_t len;
    uint8_t *data;
} blob;

static void blob_retain(void *v) { atomic_fetch_add(&((blob *)v)->refs, 1); }
static void blob_release(void *v) {
    blob *b = v;
    if (b && atomic_fetch_sub(&b->refs, 1) == 1) {
        if (b->adopted) free(b->data);
        free(b);
    }
}

typedef struct result_box {
    atomic_int refs;
    size_t bytes;
    uint8_t tag[32]; /* the model digest: DELETE /v1/cache?model= */
    time_t created;  /* for the TTL */
    cs_svc_result r;
} result_box;

#define BOX_OF(res) ((result_box *)((char *)(res) - offsetof(result_box, r)))

static void result_retain(void *v) { atomic_fetch_add(&((result_box *)v)->refs, 1); }
static void result_release(void *v) {
    result_box *b = v;
    if (b && atomic_fetch_sub(&b->refs, 1) == 1) {
        free(b->r.overlay_png);
        free(b->r.heatmap_png);
        free(b->r.overlay_b64);
        free(b->r.heatmap_b64);
        free(b);
    }
}

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

static void prepped_retain(void *v) { atomic_fetch_add(&((prepped *)v)->refs, 1); }
static void prepped_release(void *v) {
    prepped *p = v;
    if (p && atomic_fetch_sub(&p->refs, 1) == 1) {
        cs_img_free(&p->img);
        free(p->input);
        free(p);
    }
}

void cs_svc_response_clear(cs_svc_response *r) {
    if (r && r->result) {
        result_release(BOX_OF(r->result));
        r->result = NULL;
    }
}

const cs_svc_result *cs_svc_result_retain(const cs_svc_result *r) {
    if (r) result_retain(BOX_OF(r));
    return r;
}

void cs_svc_result_release(const cs_svc_result *r) {
    if (r) result_release(BOX_OF(r));
}

const char *cs_svc_outcome_name(cs_svc_outcome o) {
    switch (o) {
    case CS_SVC_OK: return "ok";
    case CS_SVC_BAD_REQUEST: return "bad_request";
    case CS_SVC_BAD_IMAGE: return "bad_image";
    case CS_SVC_TOO_LARGE: return "too_large";
    case CS_SVC_UNKNOWN_IMAGE: return "unknown_image";
    case CS_SVC_BUSY: return "busy";
    case CS_SVC_TIMEOUT: return "timeout";
    case CS_SVC_STOPPING: return "stopping";
    case CS_SVC_INTERNAL: return "internal";
    case CS_SVC_GONE: return "client_gone";
    }
    return "?";
}

/* ---- service state ------------------------------------------------------------ */

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
static const char *const STAGE_NAMES[NSTAGES] = {"queue", "decode", "preprocess", "inference",
                                                 "cam", "encode", "total"};

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

/* The cost class of a job: 0 classify, 1 + method for an explanation. */
static int cost_class(const job *j) {
    return j->kind == CS_SVC_EXPLAIN ? 1 + (int)j->eo.method : 0;
}

static void cost_observe(double *ewma, double v) { *ewma = *ewma > 0 ? 0.8 * *ewma + 0.2 * v : v; }

static bool slow_method(cs_cam_method m) {
    return m == CS_CAM_METHOD_SCORECAM || m == CS_CAM_METHOD_ABLATIONCAM;
}

/* Whether e measures runs of the same kind as an explanation of m with eo. */
static bool run_cost_match(const run_cost *e, const svc_model *m, const cs_explain_options *eo) {
    return !memcmp(e->digest, m->digest, sizeof e->digest) && e->method == eo->method &&
           e->nlayers == eo->nlayers && !memcmp(e->layers, eo->layers, sizeof(int) * (size_t)eo->nlayers) &&
           e->aug_smooth == eo->aug_smooth && e->batch_size == eo->batch_size;
}

/* The entry measuring j's kind of run, if any and still fresh (s->mu held). */
static const run_cost *run_cost_find(const cs_svc *s, const job *j, double now) {
    if (j->kind != CS_SVC_EXPLAIN || !slow_method(j->eo.method)) return NULL;
    for (int i = 0; i < SLOW_RUNS; i++) {
        const run_cost *e = &s->slow[i];
        if (e->at > 0 && now - e->at < SLOW_RUN_TTL_MS && run_cost_match(e, j->model, &j->eo)) return e;
    }
    return NULL;
}

/* Expected worker time of j (s->mu held), given run_cost_find's entry for
 * it (or NULL).  A ScoreCAM / AblationCAM of a kind measured lately costs
 * what that run did, at most the timeout (a run is stopped by then): its
 * layers and aug_smooth change its length many times over (ScoreCAM at a
 * ResNet's stem or last layer: 64 or 2048 whole-network runs), which one
 * average per method cannot tell. */
static double cost_estimate(const cs_svc *s, const job *j, const run_cost *r) {
    if (r) return fmin(r->ms, s->p.timeout_ms);
    double c = s->cost_ms[j->model->slot][cost_class(j)];
    return c > 0 ? c : s->job_ms;
}

/* Records that one image's run of j's kind took ms (s->mu held): the
 * latest measurement replaces an older one of the same kind, else the
 * oldest entry. */
static void run_cost_observe(cs_svc *s, const job *j, double ms, bool extrapolated, double now) {
    run_cost *e = NULL;
    for (int i = 0; i < SLOW_RUNS && !e; i++)
        if (s->slow[i].at > 0 && run_cost_match(&s->slow[i], j->model, &j->eo)) e = &s->slow[i];
    for (int i = 0; i < SLOW_RUNS && !e; i++)
        if (s->slow[i].at <= 0) e = &s->slow[i];
    if (!e) {
        e = &s->slow[0];
        for (int i = 1; i < SLOW_RUNS; i++)
            if (s->slow[i].at < e->at) e = &s->slow[i];
    }
    memcpy(e->digest, j->model->digest, sizeof e->digest);
    e->method = j->eo.method;
    e->nlayers = j->eo.nlayers;
    memcpy(e->layers, j->eo.layers, sizeof e->layers);
    e->aug_smooth = j->eo.aug_smooth;
    e->batch_size = j->eo.batch_size;
    e->ms = ms;
    e->at = now;
    e->extrapolated = extrapolated;
}

cs_svc_params cs_svc_default_params(void) {
    cs_svc_params p;
    memset(&p, 0, sizeof p);
    p.workers = 1;
    p.threads = 0;
    p.prep_threads = 2;
    p.max_batch = 0; /* by device, at start */
    p.batch_window_ms = 2;
    p.queue = 64;
    p.timeout_ms = 30000;
    p.cache_mem_bytes = (size_t)256 << 20;
    p.image_store_bytes = (size_t)128 << 20;
    p.cache_disk_bytes = (size_t)1 << 30;
    p.cache_ttl_s = 86400;
    p.prep_cache_bytes = (size_t)64 << 20;
    p.reload_poll_ms = 1000;
    p.overlay_max_side = 800;
    p.limits = cs_img_limits_default();
    p.gpu_decode = 1;
    return p;
}

cs_status cs_svc_create(const cs_svc_params *p, cs_svc **out, cs_error *err) {
    *out = NULL;
    cs_svc_params q = p ? *p : cs_svc_default_params();
    if (q.workers < 1 || q.workers > 256 || q.max_batch < 0 || q.max_batch > 256 || q.queue < 0 ||
        q.batch_window_ms < 0 || q.timeout_ms < 1 || q.prep_threads < 1 || q.prep_threads > 64 ||
        q.threads < 0)
        return cs_errorf(err, CS_EINVAL,
                         "bad service parameters: workers 1..256, max_batch 0..256, queue >= 0, "
                         "timeout_ms >= 1, prep_threads 1..64");
    if (q.threads == 0) {
        q.threads = omp_get_num_procs() / q.workers;
        if (q.threads < 1) q.threads = 1;
    }
    if (q.overlay_max_side <= 0) q.overlay_max_side = 800;
    if (q.encode_threads < 0 || q.encode_threads > CS_IMG_PAR_MAX)
        return cs_errorf(err, CS_EINVAL, "bad service parameters: encode_threads 0..%d", CS_IMG_PAR_MAX);
    cs_svc *s = calloc(1, sizeof *s);
    if (!s) return cs_errorf(err, CS_ENOMEM, "out of memory");
    s->p = q;
    s->ncores = omp_get_num_procs();
    s->gpu_device = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->mmu, NULL);
    pthread_mutex_init(&s->vmu, NULL);
    cond_init_mono(&s->reload_cv);
    cond_init_mono(&s->prep_cv);
    cond_init_mono(&s->work_cv);
    cond_init_mono(&s->idle_cv);
    cond_init_mono(&s->warm_cv);
    for (int i = 0; i < NSTAGES; i++)
        cs_hist_init(&s->stage[i], cs_hist_latency_bounds, cs_hist_latency_nbounds);
    cs_hist_init(&s->batch, cs_hist_batch_bounds, cs_hist_batch_nbounds);
    s->results = svc_lru_create(q.cache_mem_bytes, result_retain, result_release);
    s->images = svc_lru_create(q.image_store_bytes, blob_retain, blob_release);
    s->prepped = svc_lru_create(q.prep_cache_bytes, prepped_retain, prepped_release);
    if (!s->results || !s->images || !s->prepped) {
        cs_svc_free(s);
        return cs_errorf(err, CS_ENOMEM, "out of memory");
    }
    if ((q.cache_dir && *q.cache_dir) || (q.redis_url && *q.redis_url)) {
        cs_cache_params cp = cs_cache_default_params();
        cp.dir = q.cache_dir;
        cp.disk_bytes = q.cache_disk_bytes ? q.cache_disk_bytes : cp.disk_bytes;
        cp.redis_url = q.redis_url;
        cp.ttl_s = q.cache_ttl_s;
        cs_status st = cs_cache_open(&cp, &s->tiers, err);
        if (st != CS_OK) {
            cs_svc_free(s);
            return st;
        }
    }
    if (q.cache_dir && *q.cache_dir) {
        /* prepared models live beside the result store */
        size_t n = strlen(q.cache_dir) + sizeof "/models";
        s->prepared_dir = malloc(n);
        if (!s->prepared_dir) {
            cs_svc_free(s);
            return cs_errorf(err, CS_ENOMEM, "out of memory");
        }
        snprintf(s->prepared_dir, n, "%s/models", q.cache_dir);
    }
    /* the strings were borrowed for this call */
    s->p.cache_dir = s->p.redis_url = NULL;
    *out = s;
    return CS_OK;
}

/* ---- models -------------------------------------------------------------------- */

/* snprintf into a fixed field, cut at a character boundary: a long UTF-8
 * label cut inside a character would no longer be UTF-8. */
static void copy_text(char *dst, size_t cap, const char *src) {
    size_t n = strlen(src);
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80) n--;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* The labels text becomes the model's (sm->labels_buf owns it, whatever
 * the outcome). */
static cs_status split_labels(svc_model *sm, char *text, cs_error *err) {
    sm->labels_buf = text;
    cs_status st = cs_img_labels_split(text, &sm->labels, &sm->info.num_labels, err);
    sm->info.labels = (const char *const *)sm->labels;
    return st;
}

static char *read_file(const char *path, size_t max, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = cap ? cap * 2 : 1 << 20;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (n > max) {
            free(buf);
            fclose(f);
            return NULL;
        }
        if (got == 0) break;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static void model_destroy(svc_model *sm) {
    if (!sm) return;
    cs_model_free(sm->m);
    free(sm->labels);
    free(sm->labels_buf);
    free(sm);
}

static void model_retain(svc_model *m) {
    if (m) atomic_fetch_add(&m->refs, 1);
}
/* Never frees: the version is owned by its slot or the retired list. */
static void model_release(svc_model *m) {
    if (m) atomic_fetch_sub(&m->refs, 1);
}

/* Common tail of both loaders: names, checks the preprocessing against the
 * input, computes the key text and publishes the public info. */
static cs_status model_finish(cs_svc *s, svc_model *sm, const char *name, double t0, bool check_dup,
                              cs_error *err) {
    cs_model_info info;
    cs_model_get_info(sm->m, &info);
    if (info.input_dims[1] != 3 || sm->pp.crop_h != info.input_dims[2] ||
        sm->pp.crop_w != info.input_dims[3])
        return cs_errorf(err, CS_EINVAL,
                         "model '%s': its preprocessing makes 3x%dx%d tensors; its input is %lldx%lldx%lld",
                         name, sm->pp.crop_h, sm->pp.crop_w, (long long)info.input_dims[1],
                         (long long)info.input_dims[2], (long long)info.input_dims[3]);
    if (!*name || strlen(name) >= sizeof sm->name || !cs_utf8_valid(name, strlen(name)))
        return cs_errorf(err, CS_EINVAL, "model name '%s': give 1 to %zu bytes of UTF-8 (--model PATH:NAME)",
                         name, sizeof sm->name - 1);
    for (int i = 0; i < s->nmodels && check_dup; i++)
        if (!strcmp(s->slots[i].cur->name, name))
            return cs_errorf(err, CS_EINVAL, "two models are named '%s'", name);
    snprintf(sm->name, sizeof sm->name, "%s", name);
    const cs_preproc *pp = &sm->pp;
    snprintf(sm->pp_text, sizeof sm->pp_text,
             "r%d,%dx%d,c%dx%d,i%d,o%d,s%.9g,m%.9g/%.9g/%.9g,d%.9g/%.9g/%.9g", pp->resize,
             pp->resize_w, pp->resize_h, pp->crop_w, pp->crop_h, (int)pp->interp, (int)pp->order,
             pp->scale, pp->mean[0], pp->mean[1], pp->mean[2], pp->std[0], pp->std[1], pp->std[2]);
    sm->b0 = info.input_dims[0] > 0 ? (int)info.input_dims[0] : 0;
    sm->info.name = sm->name;
    hex32(sm->digest, sm->info.digest);
    sm->info.model = sm->m;
    sm->info.input_h = (int)info.input_dims[2];
    sm->info.input_w = (int)info.input_dims[3];
    sm->info.num_classes = (int)info.num_classes;
    sm->info.load_ms = cs_now_ms() - t0;
    return CS_OK;
}

/* Loads a model file into a new version (also what a hot reload does);
 * check_dup: refuse a name already served. */
static cs_status load_file(cs_svc *s, const char *name, const char *path, const char *labels,
                           bool check_dup, svc_model **out, cs_error *err) {
    double t0 = cs_now_ms();
    svc_model *smp = calloc(1, sizeof *smp);
    if (!smp) return cs_errorf(err, CS_ENOMEM, "out of memory");
    /* the engine hashes the bytes it parses (or takes the digest from its
     * prepared-model cache under --cache-dir, which also skips parsing and
     * weight packing on a restart) */
    cs_status st = CS_OK;
    cs_model_options mo = {.num_threads = s->p.threads, .compute_digest = 1, .prepared_dir = s->prepared_dir,
                           .device = s->p.device, .precision = s->p.precision};
    if ((st = cs_model_load(path, &mo, &smp->m, err)) != CS_OK) cs_error_prefix(err, "%s", path);
    else if (!cs_model_digest(smp->m, smp->digest)) st = cs_errorf(err, CS_EINTERNAL, "model digest missing");
    if (st != CS_OK) {
        model_destroy(smp);
        return st;
    }
    cs_model_info info;
    cs_model_get_info(smp->m, &info);
    smp->pp = cs_img_preproc_default();
    char *labels_path = NULL;
    st = cs_img_preproc_for_model(path, cs_model_metadata(smp->m, "camserve.preprocess"),
                                  (int)info.input_dims[2], (int)info.input_dims[3], &smp->pp,
                                  &labels_path, &smp->info.preprocess_source, err);
    if (st == CS_OK && labels && *labels) { /* the caller's file wins over the sidecar's */
        free(labels_path);
        if (!(labels_path = strdup(labels))) st = cs_errorf(err, CS_ENOMEM, "out of memory");
    }
    if (st == CS_OK && labels_path) {
        size_t ll;
        char *text = read_file(labels_path, (size_t)64 << 20, &ll);
        if (!text) st = cs_errorf(err, CS_EIO, "cannot read labels %s", labels_path);
        else if ((st = split_labels(smp, text, err)) != CS_OK) cs_error_prefix(err, "%s", labels_path);
        /* most likely the wrong file; served anyway (a class without a line
         * answers label null), but said once at load */
        if (st == CS_OK && smp->info.num_labels != info.num_classes)
            fprintf(stderr, "camserve: warning: %s has %d labels but %s has %lld classes\n", labels_path,
                    smp->info.num_labels, path, (long long)info.num_classes);
    }
    free(labels_path);
    char base[64];
    if (!name || !*name) {
        const char *b = strrchr(path, '/');
        b = b ? b + 1 : path;
        snprintf(base, sizeof base, "%s", b);
        char *dot = strrchr(base, '.');
        if (dot && dot != base && !strcmp(dot, ".onnx")) *dot = '\0';
        name = base;
    }
    if (st == CS_OK) st = model_finish(s, smp, name, t0, check_dup, err);
    if (st != CS_OK) {
        model_destroy(smp);
        return st;
    }
    *out = smp;
    return CS_OK;
}

cs_status cs_svc_add_model(cs_svc *s, const char *name, const char *path, const char *labels, cs_error *err) {
    if (s->started) return cs_errorf(err, CS_EINVAL, "models must be added before the service starts");
    if (s->nmodels >= CS_SVC_MAX_MODELS)
        return cs_errorf(err, CS_ELIMIT, "at most %d models", CS_SVC_MAX_MODELS);
    if (strlen(path) >= sizeof s->slots[0].path)
        return cs_errorf(err, CS_EINVAL, "model path too long: %.100s...", path);
    if (labels && strlen(labels) >= sizeof s->slots[0].labels)
        return cs_errorf(err, CS_EINVAL, "labels path too long: %.100s...", labels);
    svc_slot *sl = &s->slots[s->nmodels];
    struct stat st0;
    bool have_st = stat(path, &st0) == 0;
    svc_model *m = NULL;
    cs_status st = load_file(s, name, path, labels, true, &m, err);
    if (st != CS_OK) return st;
    memset(sl, 0, sizeof *sl);
    snprintf(sl->path, sizeof sl->path, "%s", path);
    snprintf(sl->labels, sizeof sl->labels, "%s", labels ? labels : "");
    if (have_st) sl->seen = st0;
    m->slot = s->nmodels++;
    sl->cur = m;
    return CS_OK;
}

cs_status cs_svc_add_model_buffer(cs_svc *s, const char *name, const void *buf, size_t len,
                                  const char *config_json, const char *labels_text,
                                  cs_error *err) {
    if (s->started) return cs_errorf(err, CS_EINVAL, "models must be added before the service starts");
    if (s->nmodels >= CS_SVC_MAX_MODELS)
        return cs_errorf(err, CS_ELIMIT, "at most %d models", CS_SVC_MAX_MODELS);
    if (!name || !*name) name = "default";
    double t0 = cs_now_ms();
    svc_model *smp = calloc(1, sizeof *smp);
    if (!smp) return cs_errorf(err, CS_ENOMEM, "out of memory");
    cs_status st = CS_OK;
    if (!sha256(buf, len, smp->digest)) st = cs_errorf(err, CS_EINTERNAL, "SHA-256 failed");
    cs_model_options mo = {.num_threads = s->p.threads, .device = s->p.device, .precision = s->p.precision};
    if (st == CS_OK && (st = cs_model_load_buffer(buf, len, &mo, &smp->m, err)) != CS_OK)
        cs_error_prefix(err, "model '%s'", name);
    if (st != CS_OK) {
        model_destroy(smp);
        return st;
    }
    cs_model_info info;
    cs_model_get_info(smp->m, &info);
    smp->info.builtin = 1;
    smp->pp = cs_img_preproc_default();
    if (config_json) {
        st = cs_img_preproc_from_json(config_json, &smp->pp, NULL, err);
        smp->info.preprocess_source = "config";
    } else {
        st = cs_img_preproc_for_model(NULL, cs_model_metadata(smp->m, "camserve.preprocess"),
                                      (int)info.input_dims[2], (int)info.input_dims[3], &smp->pp,
                                      NULL, &smp->info.preprocess_source, err);
    }
    if (st == CS_OK && labels_text) {
        char *t = strdup(labels_text);
        if (!t) st = cs_errorf(err, CS_ENOMEM, "out of memory");
        else st = split_labels(smp, t, err);
    }
    if (st == CS_OK) st = model_finish(s, smp, name, t0, true, err);
    if (st != CS_OK) {
        model_destroy(smp);
        return st;
    }
    svc_slot *sl = &s->slots[s->nmodels];
    memset(sl, 0, sizeof *sl);
    smp->slot = s->nmodels++;
    sl->cur = smp;
    return CS_OK;
}

int cs_svc_num_models(const cs_svc *s) { return s->nmodels; }

const cs_svc_model_info *cs_svc_model_at(const cs_svc *s, int i) {
    if (i < 0 || i >= s->nmodels) return NULL;
    cs_svc *w = (cs_svc *)s;
    pthread_mutex_lock(&w->vmu);
    const cs_svc_model_info *mi = &s->slots[i].cur->info;
    pthread_mutex_unlock(&w->vmu);
    return mi;
}

int cs_svc_max_batch(const cs_svc *s) { return s->p.max_batch; }

int cs_svc_encode_threads(const cs_svc *s) { return s->p.encode_threads; }

int cs_svc_ready(const cs_svc *s) { return atomic_load(&((cs_svc *)s)->ready); }

/* ---- metrics -------------------------------------------------------------------- */

static void count_outcome(cs_svc *s, cs_svc_outcome o, bool rejected) {
    pthread_mutex_lock(&s->mmu);
    if (rejected) s->rejected[o]++;
    else s->completed[o]++;
    pthread_mutex_unlock(&s->mmu);
}

void cs_svc_write_metrics(cs_svc *s, FILE *f) {
    pthread_mutex_lock(&s->mu);
    int prep = s->prep_len, infer = s->infer_len, post = s->post_len, running = s->running,
        inflight = s->inflight;
    double queued_ms = s->queued_ms;
    double cost[CS_SVC_MAX_MODELS][1 + CS_CAM_METHOD_COUNT];
    memcpy(cost, s->cost_ms, sizeof cost);
    pthread_mutex_unlock(&s->mu);
    size_t rb = 0, re = 0, ib = 0, ie = 0;
    uint64_t rev = 0, iev = 0;
    svc_lru_stats(s->results, &rb, &re, &rev);
    svc_lru_stats(s->images, &ib, &ie, &iev);
    size_t pb = 0, pe = 0;
    svc_lru_stats(s->prepped, &pb, &pe, NULL);

    fprintf(f, "# HELP camserve_queue_depth Requests waiting, by pipeline stage.\n"
               "# TYPE camserve_queue_depth gauge\n"
               "camserve_queue_depth{stage=\"prep\"} %d\ncamserve_queue_depth{stage=\"infer\"} %d\n"
               "camserve_queue_depth{stage=\"post\"} %d\n",
            prep, infer, post);
    fprintf(f, "# HELP camserve_running Requests inside a network run.\n# TYPE camserve_running gauge\n"
               "camserve_running %d\n", running);
    fprintf(f, "# HELP camserve_inflight Requests admitted and not yet answered.\n"
               "# TYPE camserve_inflight gauge\ncamserve_inflight %d\n"
               "# HELP camserve_inflight_limit Admission bound (queue + workers x max_batch).\n"
               "# TYPE camserve_inflight_limit gauge\ncamserve_inflight_limit %d\n",
            inflight, s->p.queue + s->p.workers * s->p.max_batch);
    fprintf(f, "# HELP camserve_queued_work_seconds Expected worker time of the admitted requests (admission refuses past the timeout).\n"
               "# TYPE camserve_queued_work_seconds gauge\ncamserve_queued_work_seconds %.6f\n",
            queued_ms / 1e3);
    fprintf(f, "# HELP camserve_job_cost_seconds Worker time per request, moving average by model and kind (classify or the CAM method).\n"
               "# TYPE camserve_job_cost_seconds gauge\n");
    pthread_mutex_lock(&s->vmu);
    for (int mi = 0; mi < s->nmodels; mi++)
        for (int c = 0; c <= CS_CAM_METHOD_COUNT; c++)
            if (cost[mi][c] > 0 && s->slots[mi].cur)
                fprintf(f, "camserve_job_cost_seconds{model=\"%s\",kind=\"%s\"} %.6f\n", s->slots[mi].cur->name,
                        c == 0 ? "classify" : cs_cam_method_name((cs_cam_method)(c - 1)), cost[mi][c] / 1e3);
    pthread_mutex_unlock(&s->vmu);
    /* the disk tier's figures are its store's, shared by every process on the directory */
    cs_cache_stats ts[CS_CACHE_NTIERS];
    for (int t = 0; t < CS_CACHE_NTIERS; t++) cs_cache_get_stats(s->tiers, (cs_cache_tier)t, &ts[t]);
    const cs_cache_stats *dk = &ts[CS_CACHE_TIER_DISK], *rd = &ts[CS_CACHE_TIER_REDIS];
    fprintf(f, "# HELP camserve_cache_bytes Bytes held by each cache tier.\n# TYPE camserve_cache_bytes gauge\n"
               "camserve_cache_bytes{tier=\"memory\"} %zu\ncamserve_cache_bytes{tier=\"images\"} %zu\n",
            rb, ib);
    fprintf(f, "camserve_cache_bytes{tier=\"prepared\"} %zu\n", pb);
    if (dk->enabled) fprintf(f, "camserve_cache_bytes{tier=\"disk\"} %llu\n", (unsigned long long)dk->bytes);
    fprintf(f, "# HELP camserve_cache_entries Entries held by each cache tier.\n# TYPE camserve_cache_entries gauge\n"
               "camserve_cache_entries{tier=\"memory\"} %zu\ncamserve_cache_entries{tier=\"images\"} %zu\n",
            re, ie);
    fprintf(f, "camserve_cache_entries{tier=\"prepared\"} %zu\n", pe);
    if (s->p.gpu_decode && s->gpu_device >= 0)
        fprintf(f, "# HELP camserve_gpu_decode_total JPEGs for a model on a GPU: decoded and preprocessed there, by "
                   "nvJPEG decoder, or left to the CPU.\n# TYPE camserve_gpu_decode_total counter\n"
                   "camserve_gpu_decode_total{path=\"hardware\"} %ld\ncamserve_gpu_decode_total{path=\"gpu_hybrid\"} %ld\n"
                   "camserve_gpu_decode_total{path=\"cpu\"} %ld\n",
                atomic_load(&s->gpu_prepped[0]), atomic_load(&s->gpu_prepped[1]), atomic_load(&s->gpu_left));
    if (dk->enabled) fprintf(f, "camserve_cache_entries{tier=\"disk\"} %llu\n", (unsigned long long)dk->entries);
    fprintf(f, "# HELP camserve_cache_evictions_total Entries evicted to stay within the byte bound.\n"
               "# TYPE camserve_cache_evictions_total counter\n"
               "camserve_cache_evictions_total{tier=\"memory\"} %llu\ncamserve_cache_evictions_total{tier=\"images\"} %llu\n",
            (unsigned long long)rev, (unsigned long long)iev);
    if (dk->enabled)
        fprintf(f, "camserve_cache_evictions_total{tier=\"disk\"} %llu\n", (unsigned long long)dk->evictions);
    fprintf(f, "# HELP camserve_cache_limit_bytes Byte bound of each cache tier.\n# TYPE camserve_cache_limit_bytes gauge\n"
               "camserve_cache_limit_bytes{tier=\"memory\"} %zu\ncamserve_cache_limit_bytes{tier=\"images\"} %zu\n",
            s->p.cache_mem_bytes, s->p.image_store_bytes);
    if (dk->enabled) fprintf(f, "camserve_cache_limit_bytes{tier=\"disk\"} %llu\n", (unsigned long long)dk->limit);
    static const char *const TIER_METRICS[][2] = {
        {"camserve_cache_errors_total", "Tier failures answered as misses or skipped writes."},
        {"camserve_cache_corrupt_total", "Stored values dropped because their checksum or framing was wrong."},
        {"camserve_cache_expired_total", "Stored values older than the TTL."},
        {"camserve_cache_writes_total", "Values written to each tier."},
    };
    for (int m = 0; m < 4; m++) {
        fprintf(f, "# HELP %s %s\n# TYPE %s counter\n", TIER_METRICS[m][0], TIER_METRICS[m][1], TIER_METRICS[m][0]);
        for (int t = 0; t < CS_CACHE_NTIERS; t++) {
            if (!ts[t].enabled) continue;
            uint64_t v = m == 0 ? ts[t].errors : m == 1 ? ts[t].corrupt : m == 2 ? ts[t].expired : ts[t].puts;
            fprintf(f, "%s{tier=\"%s\"} %llu\n", TIER_METRICS[m][0], cs_cache_tier_name((cs_cache_tier)t),
                    (unsigned long long)v);
        }
    }
    if (rd->enabled)
        fprintf(f, "# HELP camserve_cache_up Whether the tier answers (Redis: 0 while backing off after a failure).\n"
                   "# TYPE camserve_cache_up gauge\ncamserve_cache_up{tier=\"redis\"} %d\n", rd->up);
    fprintf(f, "# HELP camserve_model_load_seconds Time to load each model (its current version).\n"
               "# TYPE camserve_model_load_seconds gauge\n");
    pthread_mutex_lock(&s->vmu);
    for (int i = 0; i < s->nmodels; i++)
        fprintf(f, "camserve_model_load_seconds{model=\"%s\"} %.6f\n", s->slots[i].cur->name,
                s->slots[i].cur->info.load_ms / 1e3);
    fprintf(f, "# HELP camserve_model_reloads_total Hot reloads of a changed model file, by result.\n"
               "# TYPE camserve_model_reloads_total counter\n");
    for (int i = 0; i < s->nmodels; i++)
        fprintf(f, "camserve_model_reloads_total{model=\"%s\",result=\"ok\"} %llu\n"
                   "camserve_model_reloads_total{model=\"%s\",result=\"failed\"} %llu\n",
                s->slots[i].cur->name, (unsigned long long)s->slots[i].reloads, s->slots[i].cur->name,
                (unsigned long long)s->slots[i].reload_failures);
    pthread_mutex_unlock(&s->vmu);

    pthread_mutex_lock(&s->mmu);
    fprintf(f, "# HELP camserve_cache_hits_total Result cache hits by tier.\n# TYPE camserve_cache_hits_total counter\n"
               "camserve_cache_hits_total{tier=\"memory\"} %llu\n", (unsigned long long)s->hits);
    for (int t = 0; t < CS_CACHE_NTIERS; t++)
        if (ts[t].enabled)
            fprintf(f, "camserve_cache_hits_total{tier=\"%s\"} %llu\n", cs_cache_tier_name((cs_cache_tier)t),
                    (unsigned long long)ts[t].hits);
    fprintf(f, "# HELP camserve_cache_misses_total Result cache misses (all tiers).\n# TYPE camserve_cache_misses_total counter\n"
               "camserve_cache_misses_total %llu\n"
               "# HELP camserve_cache_tier_misses_total Lookups each tier could not answer.\n"
               "# TYPE camserve_cache_tier_misses_total counter\n"
               "camserve_cache_tier_misses_total{tier=\"memory\"} %llu\n",
            (unsigned long long)s->misses,
            (unsigned long long)(s->misses + (dk->enabled ? dk->hits : 0) + (rd->enabled ? rd->hits : 0)));
    for (int t = 0; t < CS_CACHE_NTIERS; t++)
        if (ts[t].enabled)
            fprintf(f, "camserve_cache_tier_misses_total{tier=\"%s\"} %llu\n", cs_cache_tier_name((cs_cache_tier)t),
                    (unsigned long long)ts[t].misses);
    fprintf(f, "# HELP camserve_cache_coalesced_total Requests that waited for an identical one being computed.\n"
               "# TYPE camserve_cache_coalesced_total counter\ncamserve_cache_coalesced_total %llu\n",
            (unsigned long long)s->coalesced);
    fprintf(f, "# HELP camserve_service_requests_total Requests the service finished, by outcome.\n"
               "# TYPE camserve_service_requests_total counter\n");
    for (int o = 0; o <= CS_SVC_GONE; o++)
        fprintf(f, "camserve_service_requests_total{outcome=\"%s\"} %llu\n",
                cs_svc_outcome_name((cs_svc_outcome)o), (unsigned long long)s->completed[o]);
    fprintf(f, "# HELP camserve_service_rejected_total Requests refused before queuing, by reason.\n"
               "# TYPE camserve_service_rejected_total counter\n");
    for (int o = 1; o <= CS_SVC_INTERNAL; o++)
        fprintf(f, "camserve_service_rejected_total{reason=\"%s\"} %llu\n",
                cs_svc_outcome_name((cs_svc_outcome)o), (unsigned long long)s->rejected[o]);
    fprintf(f, "# HELP camserve_runs_stopped_total ScoreCAM/AblationCAM runs stopped before the end, by reason.\n"
               "# TYPE camserve_runs_stopped_total counter\n"
               "camserve_runs_stopped_total{reason=\"timeout\"} %llu\n"
               "camserve_runs_stopped_total{reason=\"shutdown\"} %llu\n"
               "camserve_runs_stopped_total{reason=\"client_gone\"} %llu\n",
            (unsigned long long)s->runs_stopped[0], (unsigned long long)s->runs_stopped[1],
            (unsigned long long)s->runs_stopped[2]);
    fprintf(f, "# HELP camserve_runs_skipped_total ScoreCAM/AblationCAM requests not run: every client waiting "
               "for the run had gone before a worker took it.\n"
               "# TYPE camserve_runs_skipped_total counter\n"
               "camserve_runs_skipped_total %llu\n",
            (unsigned long long)s->runs_skipped);
    fprintf(f, "# HELP camserve_stage_seconds Time per pipeline stage of computed (missed) requests.\n"
               "# TYPE camserve_stage_seconds histogram\n");
    for (int i = 0; i < NSTAGES; i++) {
        char lab[64];
        snprintf(lab, sizeof lab, "stage=\"%s\"", STAGE_NAMES[i]);
        cs_hist_write(f, "camserve_stage_seconds", lab, &s->stage[i]);
    }
    fprintf(f, "# HELP camserve_batch_size Requests per network run.\n# TYPE camserve_batch_size histogram\n");
    cs_hist_write(f, "camserve_batch_size", "", &s->batch);
    pthread_mutex_unlock(&s->mmu);
}

/* ---- jobs ----------------------------------------------------------------------- */

static void list_push(job **head, job **tail, job *j) {
    j->next = NULL;
    if (*tail) (*tail)->next = j;
    else *head = j;
    *tail = j;
}

static job *list_pop(job **head, job **tail) {
    job *j = *head;
    if (j) {
        *head = j->next;
        if (!*head) *tail = NULL;
        j->next = NULL;
    }
    return j;
}

static void fail_job(job *j, cs_svc_outcome o, cs_status code, const char *msg) {
    j->outcome = o;
    if (msg) cs_errorf(&j->err, code, "%s", msg);
}

static size_t box_bytes(const result_box *b) {
    const cs_svc_result *r = &b->r;
    return sizeof *b + r->overlay_len + r->heatmap_len + r->overlay_b64_len + r->heatmap_b64_len;
}

/* ---- single-flight (s->mu held) ---- */

static job **flight_bucket(cs_svc *s, const uint8_t *key) {
    return &s->flights[key[0] % (sizeof s->flights / sizeof s->flights[0])];
}

static job *flight_find(cs_svc *s, const uint8_t *key) {
    for (job *l = *flight_bucket(s, key); l; l = l->fnext)
        if (!memcmp(l->key, key, 32)) return l;
    return NULL;
}

static void flight_add(cs_svc *s, job *j) {
    job **b = flight_bucket(s, j->key);
    j->fnext = *b;
    *b = j;
    j->leader = true;
}

static void flight_remove(cs_svc *s, job *j) {
    for (job **p = flight_bucket(s, j->key); *p; p = &(*p)->fnext)
        if (*p == j) {
            *p = j->fnext;
            break;
        }
    j->fnext = NULL;
    j->leader = false;
}

/* Followers whose own deadline passed, removed and chained by next. */
static job *take_expired_followers(cs_svc *s, double now) {
    job *out = NULL;
    for (size_t b = 0; b < sizeof s->flights / sizeof s->flights[0]; b++)
        for (job *l = s->flights[b]; l; l = l->fnext)
            for (job **p = &l->followers; *p;) {
                job *f = *p;
                if (now < f->deadline) {
                    p = &f->next;
                    continue;
                }
                *p = f->next;
                fail_job(f, CS_SVC_TIMEOUT, CS_ELIMIT, "timed out waiting for an identical request being computed");
                f->next = out;
                out = f;
                s->nfollowers--;
            }
    return out;
}

static void job_free(job *j) {
    model_release(j->model);
    blob_release(j->image);
    if (j->prep) {
        prepped_release(j->prep);
    } else {
        cs_img_free(&j->img);
        free(j->input);
    }
    free(j->logits);
    free(j->cam);
    free(j);
}

/* Completes a job: metrics, callback, free.  Never called with s->mu held. */
static void finish_job(cs_svc *s, job *j, const cs_svc_result *res) {
    if (j->leader) { /* answer the identical requests that waited for this one */
        pthread_mutex_lock(&s->mu);
        flight_remove(s, j);
        job *fl = j->followers;
        j->followers = NULL;
        for (job *f = fl; f; f = f->next) s->nfollowers--;
        pthread_mutex_unlock(&s->mu);
        for (job *f = fl, *nx; f; f = nx) {
            nx = f->next;
            f->next = NULL;
            f->outcome = j->outcome;
            f->err = j->err;
            if (res) result_retain(BOX_OF(res));
            finish_job(s, f, res);
        }
    }
    cs_svc_response resp;
    memset(&resp, 0, sizeof resp);
    resp.outcome = j->outcome;
    resp.err = j->err;
    resp.result = res; /* the reference moves to the response */
    memcpy(resp.image_id, j->image_id, sizeof resp.image_id);
    j->tm.total = cs_now_ms() - j->t_submit;
    resp.timings = j->tm;
    pthread_mutex_lock(&s->mmu);
    s->completed[j->outcome]++;
    if (j->outcome == CS_SVC_OK && !j->follower) {
        const double v[NSTAGES] = {j->tm.queue, j->tm.decode, j->tm.preprocess, j->tm.inference,
                                   j->tm.cam, j->tm.encode, j->tm.total};
        for (int i = 0; i < NSTAGES; i++)
            if (i != STAGE_CAM || j->kind == CS_SVC_EXPLAIN) cs_hist_observe(&s->stage[i], v[i] / 1e3);
    }
    pthread_mutex_unlock(&s->mmu);
    const double est = j->est_ms;
    j->done(j->ctx, &resp);
    job_free(j);
    pthread_mutex_lock(&s->mu);
    s->queued_ms -= est;
    if (--s->inflight == 0) {
        s->queued_ms = 0; /* no rounding drift survives an idle moment */
        pthread_cond_broadcast(&s->idle_cv);
    }
    pthread_mutex_unlock(&s->mu);
}

static void finish_list(cs_svc *s, job *list) {
    while (list) {
        job *n = list->next;
        list->next = NULL;
        finish_job(s, list, NULL);
        list = n;
    }
}

/* Removes from a list every job whose deadline passed; returns them chained. */
static job *take_expired(job **head, job **tail, int *len, double now) {
    job *out = NULL, **o = &out, *prev = NULL;
    for (job *j = *head, *nx; j; j = nx) {
        nx = j->next;
        if (now >= j->deadline) {
            if (prev) prev->next = nx;
            else *head = nx;
            if (*tail == j) *tail = prev;
            j->next = NULL;
            fail_job(j, CS_SVC_TIMEOUT, CS_ELIMIT, "timed out waiting for a worker");
            *o = j;
            o = &j->next;
            (*len)--;
        } else {
            prev = j;
        }
    }
    return out;
}

/* ---- prep pool: decode + preprocess before, overlay + encode after ------------- */

static cs_svc_outcome outcome_of(cs_status st) {
    switch (st) {
    case CS_ELIMIT: return CS_SVC_TOO_LARGE;
    case CS_EFORMAT: return CS_SVC_BAD_IMAGE;
    case CS_EINVAL:
    case CS_EUNSUPPORTED:
    case CS_ENOTFOUND: return CS_SVC_BAD_REQUEST;
    default: return CS_SVC_INTERNAL;
    }
}

/* The prep cache key: the image and the model's preprocessing. */
static int prep_key(const job *j, uint8_t key[32]) {
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned int len = 0;
    static const char tag[] = "camserve/prepped/v1;";
    int ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(c, tag, sizeof tag - 1) == 1 && EVP_DigestUpdate(c, j->img_sha, 32) == 1 &&
             EVP_DigestUpdate(c, j->model->pp_text, strlen(j->model->pp_text)) == 1 &&
             EVP_DigestFinal_ex(c, key, &len) == 1 && len == 32;
    EVP_MD_CTX_free(c);
    return ok;
}

/* A seen image: the job reads the prep cache's entry (a reference, no
 * copy).  Returns 1 when the job is prepared. */
static int prep_from_cache(cs_svc *s, job *j, const uint8_t pk[32], size_t per) {
    prepped *p = svc_lru_get(s->prepped, pk);
    if (!p) return 0;
    if (p->nin != per) {
        prepped_release(p);
        return 0;
    }
    j->prep = p;
    j->img = p->img;
    j->input = p->input;
    memcpy(j->box, p->box, sizeof j->box);
    return 1;
}

/* A decoded job's image and tensor become a prep cache entry, which the job
 * then reads like any later request for the image (no copy). */
static void prep_to_cache(cs_svc *s, job *j, const uint8_t pk[32], size_t per) {
    size_t pix = (size_t)j->img.width * j->img.height * j->img.channels;
    prepped *p = malloc(sizeof *p);
    if (!p) return; /* the job keeps its own */
    atomic_init(&p->refs, 1);
    p->img = j->img;
    p->input = j->input;
    p->nin = per;
    memcpy(p->box, j->box, sizeof p->box);
    j->prep = p;
    svc_lru_put(s->prepped, pk, p, sizeof *p + per * sizeof(float) + pix);
}

/* After preprocessing, only the overlay reads the pixels, and it draws at
 * display size: keep them at that size, resized as cs_img_overlay would
 * (cs_img_display_size), with the crop box scaled alike.  Every overlay of
 * the image (other methods, classes, layers, from the prep cache) then skips
 * the resize, and the prep cache's entries are smaller.  On failure the
 * pixels stay as decoded: the overlay resizes them itself. */
static void to_display_size(cs_svc *s, job *j) {
    int w = j->img.width, h = j->img.height, dw, dh;
    if (!cs_img_display_size(w, h, s->p.overlay_max_side, &dw, &dh)) return;
    cs_image d = {0};
    cs_error e = {0};
    if (cs_img_resize(&j->img, dw, dh, CS_IMG_INTERP_BILINEAR, &d, &e) != CS_OK) return;
    d.orig_width = j->img.orig_width;
    d.orig_height = j->img.orig_height;
    const double sx = (double)d.width / w, sy = (double)d.height / h;
    j->box[0] = (float)(j->box[0] * sx);
    j->box[1] = (float)(j->box[1] * sy);
    j->box[2] = (float)(j->box[2] * sx);
    j->box[3] = (float)(j->box[3] * sy);
    cs_img_free(&j->img);
    j->img = d;
}

static void gpu_warn(cs_svc *s, const char *what, const cs_error *e) {
    if (atomic_exchange(&s->gpu_warned, 1) == 0)
        fprintf(stderr, "camserve: GPU image path %s: %s; decoding on the CPU\n", what, e->msg);
}

/* Decodes and preprocesses j's upload on the GPU (gpuprep.h) when its
 * model runs there; returns 1 when it did, 0 when the CPU path must.  *gp
 * is the prep thread's GPU image path (prep_main), NULL when it could not
 * be opened or has failed since. */
static int prep_on_gpu(cs_svc *s, job *j, cs_gpuprep **gp, size_t per, bool display) {
    /* every model shares the device (s->p.device): gpu_device says for all */
    if (!s->p.gpu_decode || s->gpu_device < 0 || cs_img_sniff(j->image->data, j->image->len) != CS_IMG_FORMAT_JPEG)
        return 0;
    float *input = *gp ? malloc(per * sizeof(float)) : NULL;
    if (!input) {
        atomic_fetch_add(&s->gpu_left, 1);
        return 0;
    }
    cs_gpuprep_out o = {.tensor = input, .want_display = display, .display_max_side = s->p.overlay_max_side};
    cs_error e = {0};
    cs_status st = cs_gpuprep_run(*gp, j->image->data, j->image->len, &s->p.limits, &j->model->pp, &o, &e);
    if (st != CS_OK) {
        free(input);
        atomic_fetch_add(&s->gpu_left, 1);
        if (st == CS_EBACKEND) { /* the GPU misbehaves: this thread stops asking it */
            gpu_warn(s, "failed", &e);
            cs_gpuprep_close(*gp);
            *gp = NULL;
        }
        return 0;
    }
    atomic_fetch_add(&s->gpu_prepped[strcmp(o.decoder, "hardware") == 0 ? 0 : 1], 1);
    j->input = input;
    if (display) {
        j->img = o.display;
    } else {
        j->img.orig_width = o.frame_w;
        j->img.orig_height = o.frame_h;
    }
    memcpy(j->box, o.box, sizeof j->box);
    return 1;
}

static void do_prep(cs_svc *s, job *j, cs_gpuprep **gp) {
    svc_model *sm = j->model;
    int need_w, need_h;
    cs_img_preproc_need(&sm->pp, &need_w, &need_h);
    double t0 = cs_now_ms();
    j->tm.queue = t0 - j->t_submit;
    size_t per = (size_t)3 * sm->pp.crop_h * sm->pp.crop_w;
    uint8_t pk[32];
    bool use_pc = s->p.prep_cache_bytes > 0 && prep_key(j, pk);
    if (use_pc && prep_from_cache(s, j, pk, per)) {
        blob_release(j->image);
        j->image = NULL;
        j->tm.preprocess = cs_now_ms() - t0; /* the lookup; decode is skipped */
        return;
    }
    if (prep_on_gpu(s, j, gp, per, j->kind == CS_SVC_EXPLAIN || use_pc)) {
        /* decode, resize and normalisation were one GPU step: all of it
         * counts as decode */
        j->tm.decode = cs_now_ms() - t0;
        blob_release(j->image);
        j->image = NULL;
        if (use_pc) prep_to_cache(s, j, pk, per);
        return;
    }
    cs_status st = cs_img_decode(j->image->data, j->image->len, &s->p.limits, need_w, need_h,
                                 &j->img, &j->err);
    double t1 = cs_now_ms();
    j->tm.decode = t1 - t0;
    blob_release(j->image); /* the store keeps its own reference */
    j->image = NULL;
    if (st != CS_OK) {
        j->outcome = outcome_of(st);
        return;
    }
    j->input = malloc(per * sizeof(float));
    if (!j->input) {
        fail_job(j, CS_SVC_INTERNAL, CS_ENOMEM, "out of memory");
        return;
    }
    st = cs_img_preprocess(&j->img, &sm->pp, j->input, &j->err);
    if (st != CS_OK) {
        j->outcome = outcome_of(st);
        return;
    }
    cs_img_preproc_crop_box(&sm->pp, &j->img, j->box);
    if (j->kind == CS_SVC_EXPLAIN || use_pc) to_display_size(s, j);
    if (use_pc) prep_to_cache(s, j, pk, per);
    if (j->kind == CS_SVC_CLASSIFY && !j->prep) {
        /* only the size is reported; the pixels are not needed any more */
        int w = j->img.orig_width, h = j->img.orig_height;
        cs_img_free(&j->img);
        j->img.orig_width = w;
        j->img.orig_height = h;
    }
    j->tm.preprocess = cs_now_ms() - t1;
}

typedef struct pred_ix {
    float p;
    int i;
} pred_ix;

static int pred_cmp(const void *a, const void *b) {
    const pred_ix *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->i - y->i;
}

static void fill_predictions(const svc_model *sm, const float *logits, int topk, cs_svc_result *r) {
    int n = sm->info.num_classes;
    pred_ix *v = malloc((size_t)n * sizeof *v);
    if (!v) return;
    float mx = logits[0];
    for (int i = 1; i < n; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)logits[i] - mx);
    for (int i = 0; i < n; i++) {
        v[i].p = (float)(exp((double)logits[i] - mx) / sum);
        v[i].i = i;
    }
    qsort(v, (size_t)n, sizeof *v, pred_cmp);
    r->npred = topk < n ? topk : n;
    for (int k = 0; k < r->npred; k++) {
        r->preds[k].index = v[k].i;
        r->preds[k].score = v[k].p;
        const char *lab = v[k].i < sm->info.num_labels ? sm->labels[v[k].i] : "";
        copy_text(r->preds[k].label, sizeof r->preds[k].label, lab);
    }
    free(v);
}

static cs_status base64(const uint8_t *buf, size_t len, char **out, size_t *out_len, cs_error *err) {
    if (len > (size_t)INT32_MAX / 2) return cs_errorf(err, CS_ELIMIT, "image too large to encode");
    *out = malloc(4 * ((len + 2) / 3) + 1);
    if (!*out) return cs_errorf(err, CS_ENOMEM, "out of memory");
    *out_len = (size_t)EVP_EncodeBlock((unsigned char *)*out, buf, (int)len);
    return CS_OK;
}

static void team_run(void *ctx, int n, void (*fn)(void *arg, int i), void *arg) {
    cs_team_run(ctx, n, fn, arg);
}

/* How many ways to split the next result's overlay and PNG (under s->mu,
 * before this post counts in s->posting): this thread and the team's idle
 * helpers, up to the cores nothing else is using.  On the CPU a network
 * run takes every core (workers x threads), so a run in progress or
 * waiting means no split; a GPU run leaves the cores to decoding and
 * encoding.  Splitting a PNG costs more CPU in all (zlib codes every part
 * but the last at a third to a half of libdeflate's rate), so it is done
 * only for latency, on cores that would idle. */
static int post_ways(cs_svc *s) {
    if (!s->team) return 1;
    int spare = s->ncores - s->prepping - s->posting;
    if (s->gpu_device < 0) {
        if (s->running > 0 || s->infer_len > 0) return 1;
    } else {
        spare -= s->p.workers;
    }
    int ways = 1 + cs_team_idle(s->team);
    if (ways > spare) ways = spare;
    return ways < 1 ? 1 : ways;
}

static result_box *do_post(cs_svc *s, job *j, int ways) {
    svc_model *sm = j->model;
    result_box *b = calloc(1, sizeof *b);
    if (!b) {
        fail_job(j, CS_SVC_INTERNAL, CS_ENOMEM, "out of memory");
        return NULL;
    }
    atomic_init(&b->refs, 1);
    cs_svc_result *r = &b->r;
    r->kind = j->kind;
    snprintf(r->model, sizeof r->model, "%s", sm->name);
    memcpy(r->image_id, j->image_id, sizeof r->image_id);
    r->image_w = j->img.orig_width;
    r->image_h = j->img.orig_height;
    if (j->img.width > 0 && j->img.height > 0) {
        r->box[0] = j->box[0] / (float)j->img.width;
        r->box[1] = j->box[1] / (float)j->img.height;
        r->box[2] = j->box[2] / (float)j->img.width;
        r->box[3] = j->box[3] / (float)j->img.height;
    }
    fill_predictions(sm, j->logits, j->topk, r);
    if (j->kind == CS_SVC_EXPLAIN) {
        double t0 = cs_now_ms();
        snprintf(r->method, sizeof r->method, "%s", cs_cam_method_name(j->eo.method));
        size_t off = 0;
        for (int l = 0; l < j->eo.nlayers && off < sizeof r->layer; l++)
            off += (size_t)snprintf(r->layer + off, sizeof r->layer - off, "%s%s", l ? "," : "",
                                    cs_model_layer_name(sm->m, j->eo.layers[l]));
        r->class_index = j->class_idx;
        copy_text(r->class_label, sizeof r->class_label,
                  j->class_idx < sm->info.num_labels ? sm->labels[j->class_idx] : "");
        r->colormap = cs_img_colormap_name(j->cmap);
        r->alpha = j->alpha;
        cs_image over = {0}, heat = {0};
        const cs_img_par par = {.ways = ways, .run = team_run, .ctx = s->team};
        cs_status st = cs_img_overlay_par(&j->img, j->cam, j->cam_h, j->cam_w, j->box, j->cmap,
                                          (float)j->alpha, s->p.overlay_max_side, &par, &over, &j->err);
        /* the heatmap at the CAM's own resolution (the model input): a
         * browser scales it for free, and encoding it at overlay size cost
         * more than the network on 2 cores */
        if (st == CS_OK)
            st = cs_img_heatmap(j->cam, j->cam_h, j->cam_w, j->cam_w, j->cam_h, j->cmap, &heat, &j->err);
        if (st == CS_OK) st = cs_img_encode_png(&over, &par, &r->overlay_png, &r->overlay_len, &j->err);
        if (st == CS_OK) st = cs_img_encode_png(&heat, NULL, &r->heatmap_png, &r->heatmap_len, &j->err);
        if (st == CS_OK) st = base64(r->overlay_png, r->overlay_len, &r->overlay_b64, &r->overlay_b64_len, &j->err);
        if (st == CS_OK) st = base64(r->heatmap_png, r->heatmap_len, &r->heatmap_b64, &r->heatmap_b64_len, &j->err);
        r->overlay_w = over.width;
        r->overlay_h = over.height;
        cs_img_free(&over);
        cs_img_free(&heat);
        j->tm.encode = cs_now_ms() - t0;
        if (st != CS_OK) {
            j->outcome = outcome_of(st);
            result_release(b);
            return NULL;
        }
    }
    r->computed = j->tm;
    r->computed.total = cs_now_ms() - j->t_submit;
    b->bytes = box_bytes(b);
    memcpy(b->tag, sm->digest, 32);
    b->created = time(NULL);
    return b;
}

static void tier_store(cs_svc *s, const uint8_t key[32], const result_box *b) {
    uint8_t *buf = NULL;
    size_t len = 0;
    if (!svc_result_encode(&b->r, &buf, &len)) return;
    cs_cache_put(s->tiers, key, b->tag, buf, len);
    free(buf);
}

static void *prep_main(void *arg) {
    cs_svc *s = arg;
    /* This thread's GPU image path (cs_gpuprep is one thread's), for models
     * on a GPU: opened now rather than on the first photo (loading nvJPEG
     * and creating its decoders is start-up work), closed when the thread
     * exits. */
    cs_gpuprep *gp = NULL;
    if (s->p.gpu_decode && s->gpu_device >= 0) {
        cs_error e = {0};
        if (cs_gpuprep_open(s->gpu_device, &gp, &e) != CS_OK) gpu_warn(s, "unavailable", &e);
    }
    double next_sweep = cs_now_ms() + 50;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        double now = cs_now_ms();
        if (now >= next_sweep) {
            int dummy = 0;
            job *exp = take_expired(&s->infer_head, &s->infer_tail, &s->infer_len, now);
            job *exp2 = take_expired(&s->prep_head, &s->prep_tail, &dummy, now);
            job *exp3 = s->nfollowers ? take_expired_followers(s, now) : NULL;
            s->prep_len += dummy;
            next_sweep = now + 50;
            if (exp || exp2 || exp3) {
                pthread_mutex_unlock(&s->mu);
                finish_list(s, exp);
                finish_list(s, exp2);
                finish_list(s, exp3);
                pthread_mutex_lock(&s->mu);
                continue;
            }
        }
        job *j = list_pop(&s->post_head, &s->post_tail);
        if (j) {
            s->post_len--;
            const int ways = post_ways(s);
            s->posting++;
            pthread_mutex_unlock(&s->mu);
            result_box *b = j->outcome == CS_SVC_OK ? do_post(s, j, ways) : NULL;
            uint8_t key[32];
            memcpy(key, j->key, 32);
            if (b) svc_lru_put(s->results, j->key, b, b->bytes);
            if (b && s->tiers) result_retain(b);
            finish_job(s, j, b ? &b->r : NULL);
            if (b && s->tiers) { /* after the answer went out: the client never waits for these */
                tier_store(s, key, b);
                result_release(b);
            }
            pthread_mutex_lock(&s->mu);
            s->posting--;
            continue;
        }
        j = s->infer_len + s->prepping < s->prep_ahead ? list_pop(&s->prep_head, &s->prep_tail) : NULL;
        if (j) {
            s->prep_len--;
            s->prepping++;
            pthread_mutex_unlock(&s->mu);
            do_prep(s, j, &gp);
            if (j->outcome != CS_SVC_OK) {
                finish_job(s, j, NULL);
                pthread_mutex_lock(&s->mu);
                s->prepping--;
                pthread_cond_signal(&s->work_cv); /* a batch may be waiting for it */
                continue;
            }
            pthread_mutex_lock(&s->mu);
            s->prepping--;
            if (s->quit) { /* the workers may be gone: never queue after stop */
                pthread_mutex_unlock(&s->mu);
                fail_job(j, CS_SVC_STOPPING, CS_EINVAL, "the server is shutting down");
                finish_job(s, j, NULL);
                pthread_mutex_lock(&s->mu);
                continue;
            }
            j->t_ready = cs_now_ms();
            list_push(&s->infer_head, &s->infer_tail, j);
            s->infer_len++;
            pthread_cond_signal(&s->work_cv);
            continue;
        }
        if (s->quit && s->workers_joined) break;
        struct timespec ts;
        abs_deadline(&ts, 50);
        pthread_cond_timedwait(&s->prep_cv, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    cs_gpuprep_close(gp);
    return NULL;
}

/* ---- inference workers ----------------------------------------------------------- */

static bool compatible(const job *a, const job *b) {
    if (a->model != b->model || a->kind != b->kind) return false;
    if (a->kind == CS_SVC_CLASSIFY) return true;
    const cs_explain_options *x = &a->eo, *y = &b->eo;
    return x->method == y->method && x->nlayers == y->nlayers &&
           !memcmp(x->layers, y->layers, sizeof(int) * (size_t)x->nlayers) &&
           x->class_mode == y->class_mode &&
           (x->class_mode != CS_CLASS_INDEX || x->class_index == y->class_index) &&
           x->aug_smooth == y->aug_smooth && x->eigen_smooth == y->eigen_smooth;
}

/* Moves compatible jobs from the infer queue into batch (s->mu held). */
static void gather(cs_svc *s, job **batch, int *n, int max) {
    job *prev = NULL;
    for (job *j = s->infer_head, *nx; j && *n < max; j = nx) {
        nx = j->next;
        if (compatible(batch[0], j)) {
            if (prev) prev->next = nx;
            else s->infer_head = nx;
            if (s->infer_tail == j) s->infer_tail = prev;
            j->next = NULL;
            batch[(*n)++] = j;
            s->infer_len--;
        } else {
            prev = j;
        }
    }
}

/* ScoreCAM and AblationCAM run a forward pass per channel of the layer:
 * ScoreCAM's 2048 through the whole of ResNet-50 take most of a minute on
 * 2 cores.  Such a run stops (explain's cancel hook) once nobody can use
 * its result any more -- every job of the batch, and every identical
 * request waiting for it (answered at their own deadlines by the prep
 * threads' sweep), is past its deadline or has lost its client
 * (job_waiting) -- or once cs_svc_stop's drain is over, so that a shutdown
 * is not held up by a run nobody will see.
 *
 * It also stops as soon as its pace shows it cannot end in time: the first
 * run of a kind has no run_cost to be refused by at admission, and used to
 * hold its worker until the deadline all the same (30 s of the default
 * timeout for a ScoreCAM of ResNet-50 that needs ~50 s).  The pace is
 * taken from the first chunk's end on: what came before -- the plain
 * forward and backward, the chunk plan's build, cold caches -- made the
 * default model's run look three times its length.  It is judged only
 * after EARLY_LOOK of the time the run had, and the run is stopped only
 * when even EARLY_MARGIN x that pace would end past the last deadline
 * waiting for it. */
#define EARLY_LOOK 0.1
#define EARLY_MARGIN 1.2

typedef struct run_watch {
    cs_svc *s;
    job **batch;
    int n;
    double t0;              /* when the run began (cs_now_ms) */
    double mark_t, mark_d;  /* the first poll after some forward items: when, and the fraction then */
    cs_svc_outcome why;     /* CS_SVC_TIMEOUT or CS_SVC_STOPPING, once stopped */
    double done;            /* the fraction of the forward items run by then */
    double whole;           /* by then, the whole run's projected length (ms); 0 before any item */
    bool early;             /* stopped by its pace, before the deadlines */
} run_watch;

/* The whole run's projected length at now, with the fraction done
 * (0 when nothing ran yet): the pace since the mark when there is one,
 * else the pace since the start. */
static double run_projection(const run_watch *w, double now, double done) {
    if (done <= 0) return 0;
    if (done > w->mark_d && w->mark_d > 0) return now - w->t0 + (1 - done) * (now - w->mark_t) / (done - w->mark_d);
    return (now - w->t0) / done;
}

/* Whether j's answer can still be read by its client (s->mu held). */
static bool job_waiting(job *j, double now) {
    if (!j->gone && j->client_gone && j->client_gone(j->ctx)) j->gone = true;
    return !j->gone && now < j->deadline;
}

/* Whether nobody will read j's answer because its client, and the client
 * of every identical request waiting for it, has gone (s->mu held).  Asked
 * of a ScoreCAM / AblationCAM job before a worker runs it: such a run is
 * seconds of a worker, and a UI user who switched to another method while
 * it waited has closed its request.  Only those jobs are asked, as only
 * their runs are watched (run_stop): a client that half-closes after a
 * request reads as gone too, and is answered in full for every other
 * method (docs/api.md). */
static bool job_abandoned(job *j, double now) {
    if (job_waiting(j, now) || !j->gone) return false;
    for (job *f = j->followers; f; f = f->next)
        if (job_waiting(f, now) || !f->gone) return false;
    return true;
}

static int run_stop(void *ctx, double done) {
    run_watch *w = ctx;
    const double now = cs_now_ms();
    double last = 0; /* the last deadline of a request still waiting for the run */
    pthread_mutex_lock(&w->s->mu);
    const bool quit = w->s->quit;
    for (int i = 0; i < w->n; i++) {
        job *j = w->batch[i];
        if (job_waiting(j, now)) last = fmax(last, j->deadline);
        for (job *f = j->followers; f; f = f->next)
            if (job_waiting(f, now)) last = fmax(last, f->deadline);
    }
    pthread_mutex_unlock(&w->s->mu);
    if (done > 0 && w->mark_d <= 0) {
        w->mark_t = now;
        w->mark_d = done;
    }
    const double whole = run_projection(w, now, done);
    w->early = !quit && now < last && done > w->mark_d && now - w->t0 >= EARLY_LOOK * (last - w->t0) &&
               now + (w->t0 + whole - now) / EARLY_MARGIN > last;
    if (now < last && !quit && !w->early) return 0;
    w->why = quit ? CS_SVC_STOPPING : CS_SVC_TIMEOUT; /* a job whose client has gone: CS_SVC_GONE */
    w->done = done;
    w->whole = whole;
    return 1;
}

static void run_batch(cs_svc *s, cs_session *sess, job **batch, int n) {
    svc_model *sm = batch[0]->model;
    const int H = sm->pp.crop_h, W = sm->pp.crop_w, ncls = sm->info.num_classes;
    const size_t per = (size_t)3 * H * W;
    /* Batch sizes are padded (the last image repeated, its outputs dropped):
     * a graph exported with a fixed batch runs in multiples of it, a dynamic
     * one in powers of two, so a session builds at most log2(max_batch)+1
     * plans per layer set instead of one per size -- a plan costs about
     * three inferences to build and a session keeps only a few. */
    int nb = n;
    if (sm->b0 > 0) nb = (n + sm->b0 - 1) / sm->b0 * sm->b0;
    else
        while (nb & (nb - 1)) nb += nb & -nb;
    float *in = malloc((size_t)nb * per * sizeof(float));
    cs_error err = {0};
    cs_status st = CS_OK;
    cs_explain_output ex = {0};
    float *logits = NULL;
    double t0 = cs_now_ms();
    if (!in) {
        st = cs_errorf(&err, CS_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < nb; i++) memcpy(in + (size_t)i * per, batch[i < n ? i : n - 1]->input, per * sizeof(float));
    for (int i = 0; i < n; i++) {
        batch[i]->tm.queue += t0 - batch[i]->t_ready;
        if (!batch[i]->prep) free(batch[i]->input); /* else a view of the prep cache's entry */
        batch[i]->input = NULL;
    }
    if (batch[0]->kind == CS_SVC_CLASSIFY) {
        logits = malloc((size_t)nb * ncls * sizeof(float));
        if (!logits) st = cs_errorf(&err, CS_ENOMEM, "out of memory");
        else st = cs_session_run(sess, in, nb, logits, &err);
        double dt = cs_now_ms() - t0;
        for (int i = 0; i < n && st == CS_OK; i++) {
            batch[i]->tm.inference = dt;
            batch[i]->logits = malloc((size_t)ncls * sizeof(float));
            if (!batch[i]->logits) st = cs_errorf(&err, CS_ENOMEM, "out of memory");
            else memcpy(batch[i]->logits, logits + (size_t)i * ncls, (size_t)ncls * sizeof(float));
        }
    } else {
        cs_explain_options eo = batch[0]->eo;
        run_watch watch = {.s = s, .batch = batch, .n = n, .t0 = t0};
        eo.cancel = run_stop;
        eo.cancel_ctx = &watch;
        st = cs_explain_run(sess, sm->m, in, nb, &eo, &ex, &err);
        const double ran = cs_now_ms() - t0;
        /* What one image alone would take: the batch was nb images, and a
         * lone one is padded to the graph's fixed batch. */
        const double per_image = (st == CS_OK ? ran : watch.whole) / nb * (sm->b0 > 0 ? sm->b0 : 1);
        /* stopped because every client of the batch has gone (job_waiting) */
        bool all_gone = st == CS_ECANCELED && watch.why == CS_SVC_TIMEOUT;
        for (int i = 0; i < n; i++) all_gone &= batch[i]->gone;
        /* A run left by its clients early on has too little of a pace to go
         * by (see run_stop), and nothing says it was long: not recorded. */
        if (slow_method(eo.method) && (st == CS_OK || (st == CS_ECANCELED && watch.whole > 0 && !all_gone))) {
            pthread_mutex_lock(&s->mu);
            run_cost_observe(s, batch[0], per_image, st != CS_OK, t0 + ran);
            pthread_mutex_unlock(&s->mu);
        }
        if (st == CS_ECANCELED) {
            for (int i = 0; i < n; i++) batch[i]->tm.cam = ran;
            /* how far it got and where that pace leads, for both timeout messages */
            char pace[160];
            snprintf(pace, sizeof pace,
                     "stopped %.1f s in, %.0f%% of its forward passes done; all of them would take about %.*f s "
                     "at this pace",
                     ran / 1e3, 100 * watch.done, watch.whole < 1e4 ? 1 : 0, watch.whole / 1e3);
            if (watch.why == CS_SVC_STOPPING)
                cs_errorf(&err, CS_ECANCELED, "the server is shutting down");
            else if (watch.early)
                cs_errorf(&err, CS_ECANCELED,
                          "timed out: %s would run past the %d ms request timeout (--timeout-ms), so it was %s; "
                          SLOW_RUN_ADVICE,
                          cs_cam_method_name(eo.method), s->p.timeout_ms, pace);
            else if (watch.whole > 0)
                cs_errorf(&err, CS_ECANCELED,
                          "timed out: %s ran past the %d ms request timeout (--timeout-ms) and was %s",
                          cs_cam_method_name(eo.method), s->p.timeout_ms, pace);
            else
                cs_errorf(&err, CS_ECANCELED,
                          "timed out: %s ran past the %d ms request timeout (--timeout-ms) and was stopped "
                          "before its forward passes began",
                          cs_cam_method_name(eo.method), s->p.timeout_ms);
            cs_error gone = {0};
            cs_errorf(&gone, CS_ECANCELED,
                      "client gone: the connection was closed during this %s run, which was stopped %.1f s in",
                      cs_cam_method_name(eo.method), ran / 1e3);
            for (int i = 0; i < n; i++) {
                const bool g = batch[i]->gone && watch.why == CS_SVC_TIMEOUT;
                batch[i]->outcome = g ? CS_SVC_GONE : watch.why;
                batch[i]->err = g ? gone : err;
            }
            pthread_mutex_lock(&s->mmu);
            s->runs_stopped[watch.why == CS_SVC_STOPPING ? 1 : all_gone ? 2 : 0]++;
            pthread_mutex_unlock(&s->mmu);
            st = CS_OK; /* the outcome is set */
            goto done;
        }
        for (int i = 0; i < n && st == CS_OK; i++) {
            job *j = batch[i];
            size_t im = (size_t)ex.in_h * ex.in_w;
            j->tm.inference = ex.forward_ms;
            j->tm.cam = ex.backward_ms + ex.cam_ms;
            j->logits = malloc((size_t)ncls * sizeof(float));
            j->cam = malloc(im * sizeof(float));
            if (!j->logits || !j->cam) {
                st = cs_errorf(&err, CS_ENOMEM, "out of memory");
                break;
            }
            memcpy(j->logits, ex.logits + (size_t)i * ncls, (size_t)ncls * sizeof(float));
            /* one map per image: class modes top and index only */
            memcpy(j->cam, ex.maps_input + (size_t)i * ex.k * im, im * sizeof(float));
            j->cam_h = ex.in_h;
            j->cam_w = ex.in_w;
            j->class_idx = ex.class_idx[i * ex.k];
        }
    }
done:
    if (st != CS_OK)
        for (int i = 0; i < n; i++) {
            batch[i]->outcome = outcome_of(st);
            batch[i]->err = err;
        }
    cs_explain_output_free(&ex);
    free(logits);
    free(in);
    pthread_mutex_lock(&s->mmu);
    cs_hist_observe(&s->batch, n);
    pthread_mutex_unlock(&s->mmu);
}

typedef struct worker_arg {
    cs_svc *s;
    int idx;
} worker_arg;

/* Worker w's session for version m, rebuilt when the session was made for
 * another version of the same model (after a hot reload).  Worker-owned. */
static cs_session *worker_session(cs_svc *s, int w, svc_model *m, cs_error *err) {
    int k = w * s->nmodels + m->slot;
    if (s->sess_model[k] != m) {
        cs_session_free(s->sessions[k]);
        s->sessions[k] = NULL;
        model_release(s->sess_model[k]);
        s->sess_model[k] = NULL;
        if (cs_session_create(m->m, &s->sessions[k], err) != CS_OK) return NULL;
        model_retain(m);
        s->sess_model[k] = m;
    }
    return s->sessions[k];
}

/* Runs the default explanation (GradCAM at the default layer, batch 1) once
 * on a blank input, so that the first request does not pay for building the
 * plans, oneDNN's primitives and this thread's OpenMP team.  ResNet-50 on
 * 2 cores, bench/first_request.sh, 4 rounds: the first request took 69.5 ms
 * against 57.2 for the next ones, with this 61.7 against 57.7, for ~30 ms
 * more before ready.  Only the default explanation: other layers, methods
 * and /v1/classify build their plans on first use.  Best effort: a model
 * this fails on fails the same way on its first request, which says why. */
static void warm_session(cs_session *sess, const svc_model *sm) {
    cs_explain_options eo = cs_explain_default_options();
    cs_error err = {0};
    if (cs_explain_parse_layers(sm->m, "auto", &eo, &err) != CS_OK) return;
    int b = sm->b0 > 0 ? sm->b0 : 1;
    float *in = calloc((size_t)b * 3 * sm->pp.crop_h * sm->pp.crop_w, sizeof(float));
    if (!in) return;
    cs_explain_output ex = {0};
    (void)cs_explain_run(sess, sm->m, in, b, &eo, &ex, &err);
    cs_explain_output_free(&ex);
    free(in);
}

/* Whether one of worker w's sessions is built on a retired version. */
static bool sessions_stale(cs_svc *s, int w) {
    bool stale = false;
    pthread_mutex_lock(&s->vmu);
    for (int i = 0; i < s->nmodels && !stale; i++) {
        svc_model *sm = s->sess_model[w * s->nmodels + i];
        stale = sm && sm != s->slots[i].cur;
    }
    pthread_mutex_unlock(&s->vmu);
    return stale;
}

static void refresh_sessions(cs_svc *s, int w) {
    for (int i = 0; i < s->nmodels; i++) {
        pthread_mutex_lock(&s->vmu);
        svc_model *cur = s->slots[i].cur;
        model_retain(cur);
        pthread_mutex_unlock(&s->vmu);
        int k = w * s->nmodels + i;
        if (s->sess_model[k] && s->sess_model[k] != cur) {
            cs_error err = {0};
            cs_session *sess = worker_session(s, w, cur, &err);
            if (sess) {
                warm_session(sess, cur); /* while idle, not on the next request */
            } else { /* tried again on the next batch */
                cs_session_free(s->sessions[k]);
                s->sessions[k] = NULL;
                model_release(s->sess_model[k]);
                s->sess_model[k] = NULL;
            }
        }
        model_release(cur);
    }
}

static void *worker_main(void *arg) {
    worker_arg wa = *(worker_arg *)arg;
    free(arg);
    cs_svc *s = wa.s;
    /* OpenMP's thread count is per calling thread: each worker sets its own */
    omp_set_num_threads(s->p.threads);
    for (int i = 0; i < s->nmodels; i++) {
        const int k = wa.idx * s->nmodels + i;
        warm_session(s->sessions[k], s->sess_model[k]);
    }
    job *batch[256];
    pthread_mutex_lock(&s->mu);
    if (--s->warming == 0) pthread_cond_broadcast(&s->warm_cv);
    for (;;) {
        while (!s->infer_head && !s->quit) {
            if (sessions_stale(s, wa.idx)) { /* a model was reloaded: move to it while idle */
                pthread_mutex_unlock(&s->mu);
                refresh_sessions(s, wa.idx);
                pthread_mutex_lock(&s->mu);
                continue;
            }
            pthread_cond_wait(&s->work_cv, &s->mu);
        }
        if (!s->infer_head) break; /* quit with nothing left */
        job *first = list_pop(&s->infer_head, &s->infer_tail);
        s->infer_len--;
        if (cs_now_ms() >= first->deadline) {
            fail_job(first, CS_SVC_TIMEOUT, CS_ELIMIT, "timed out waiting for a worker");
            pthread_mutex_unlock(&s->mu);
            finish_job(s, first, NULL);
            pthread_mutex_lock(&s->mu);
            continue;
        }
        if (first->kind == CS_SVC_EXPLAIN && slow_method(first->eo.method) && job_abandoned(first, cs_now_ms())) {
            char msg[160];
            snprintf(msg, sizeof msg,
                     "client gone: the connection was closed while this %s request waited for a worker; "
                     "it was not run",
                     cs_cam_method_name(first->eo.method));
            fail_job(first, CS_SVC_GONE, CS_ECANCELED, msg);
            pthread_mutex_unlock(&s->mu);
            pthread_mutex_lock(&s->mmu);
            s->runs_skipped++;
            pthread_mutex_unlock(&s->mmu);
            finish_job(s, first, NULL);
            pthread_mutex_lock(&s->mu);
            continue;
        }
        int n = 1;
        batch[0] = first;
        double until = first->t_ready + s->p.batch_window_ms;
        for (;;) {
            gather(s, batch, &n, s->p.max_batch);
            if (n >= s->p.max_batch || s->quit || cs_now_ms() >= until) break;
            /* the window is for requests still being decoded: when there
             * are none, waiting only adds latency (a lone request at light
             * load runs at once) */
            if (s->prep_len + s->prepping == 0) break;
            /* taking jobs made room ahead: let the prep pool decode them */
            if (s->prep_len) pthread_cond_broadcast(&s->prep_cv);
            struct timespec ts;
            abs_deadline(&ts, until - cs_now_ms());
            pthread_cond_timedwait(&s->work_cv, &s->mu, &ts);
        }
        s->running += n;
        if (s->prep_len) pthread_cond_signal(&s->prep_cv); /* room ahead again */
        pthread_mutex_unlock(&s->mu);
        cs_error serr = {0};
        double t_run = cs_now_ms();
        cs_session *sess = worker_session(s, wa.idx, first->model, &serr);
        if (sess) {
            run_batch(s, sess, batch, n);
            t_run = (cs_now_ms() - t_run) / n;
        } else {
            t_run = 0;
            for (int i = 0; i < n; i++) {
                batch[i]->outcome = CS_SVC_INTERNAL;
                batch[i]->err = serr;
            }
        }
        pthread_mutex_lock(&s->mu);
        s->running -= n;
        if (t_run > 0) {
            cost_observe(&s->job_ms, t_run);
            for (int i = 0; i < n; i++)
                cost_observe(&s->cost_ms[batch[i]->model->slot][cost_class(batch[i])], t_run);
        }
        for (int i = 0; i < n; i++) {
            list_push(&s->post_head, &s->post_tail, batch[i]);
            s->post_len++;
        }
        pthread_cond_broadcast(&s->prep_cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- hot reload ------------------------------------------------------------------------ */

static bool same_file(const struct stat *a, const struct stat *b) {
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* One poll of slot i's file.  A change is loaded once the file looked the
 * same on two polls in a row (a copy in progress is not loaded half-way); a
 * file that changed again while loading is dropped and retried. */
static void poll_slot(cs_svc *s, int i) {
    svc_slot *sl = &s->slots[i];
    struct stat st;
    if (stat(sl->path, &st) != 0 || same_file(&st, &sl->seen)) { /* gone (being replaced?) or unchanged */
        sl->has_pending = false;
        return;
    }
    if (!sl->has_pending || !same_file(&st, &sl->pending)) {
        sl->pending = st;
        sl->has_pending = true;
        return;
    }
    sl->has_pending = false;
    svc_model *cur = sl->cur, *nm = NULL;
    cs_error err = {0};
    cs_status rc = load_file(s, cur->name, sl->path, sl->labels, false, &nm, &err);
    struct stat after;
    if (stat(sl->path, &after) != 0 || !same_file(&st, &after)) { /* changed while loading */
        model_destroy(nm);
        return;
    }
    sl->seen = st;
    if (rc != CS_OK) {
        pthread_mutex_lock(&s->vmu);
        sl->reload_failures++;
        pthread_mutex_unlock(&s->vmu);
        fprintf(stderr, "camserve: model '%s' changed on disk but does not load; still serving the previous version: %s\n",
                cur->name, err.msg);
        return;
    }
    if (!memcmp(nm->digest, cur->digest, 32)) { /* touched, same bytes */
        model_destroy(nm);
        return;
    }
    nm->slot = i;
    pthread_mutex_lock(&s->vmu);
    sl->cur = nm;
    sl->reloads++;
    cur->retired_at = cs_now_ms();
    cur->next_retired = s->retired;
    s->retired = cur;
    pthread_mutex_unlock(&s->vmu);
    fprintf(stderr, "camserve: model '%s' reloaded from %s (sha256 %.12s, %.0f ms); requests in flight finish on the previous version\n",
            nm->name, sl->path, nm->info.digest, nm->info.load_ms);
    pthread_mutex_lock(&s->mu); /* idle workers move their sessions to the new version */
    pthread_cond_broadcast(&s->work_cv);
    pthread_mutex_unlock(&s->mu);
}

/* Frees retired versions nobody uses any more (refs 0, grace period over). */
static void reap_retired(cs_svc *s) {
    double now = cs_now_ms();
    pthread_mutex_lock(&s->vmu);
    for (svc_model **p = &s->retired; *p;) {
        svc_model *m = *p;
        if (atomic_load(&m->refs) == 0 && now - m->retired_at >= RETIRE_GRACE_MS) {
            *p = m->next_retired;
            model_destroy(m);
        } else {
            p = &m->next_retired;
        }
    }
    pthread_mutex_unlock(&s->vmu);
}

static void *reload_main(void *arg) {
    cs_svc *s = arg;
    pthread_mutex_lock(&s->vmu);
    while (!s->reload_quit) {
        struct timespec ts;
        abs_deadline(&ts, s->p.reload_poll_ms);
        pthread_cond_timedwait(&s->reload_cv, &s->vmu, &ts);
        if (s->reload_quit) break;
        pthread_mutex_unlock(&s->vmu);
        for (int i = 0; i < s->nmodels; i++)
            if (s->slots[i].path[0]) poll_slot(s, i);
        reap_retired(s);
        pthread_mutex_lock(&s->vmu);
    }
    pthread_mutex_unlock(&s->vmu);
    return NULL;
}

/* ---- lifecycle --------------------------------------------------------------------- */

cs_status cs_svc_start(cs_svc *s, cs_error *err) {
    if (s->started) return CS_OK;
    if (s->nmodels == 0) return cs_errorf(err, CS_EINVAL, "no model to serve");
    int nw = s->p.workers, np = s->p.prep_threads;
    s->sessions = calloc((size_t)nw * s->nmodels, sizeof *s->sessions);
    s->sess_model = calloc((size_t)nw * s->nmodels, sizeof *s->sess_model);
    s->workers = calloc((size_t)nw, sizeof(pthread_t));
    s->preps = calloc((size_t)np, sizeof(pthread_t));
    if (!s->sessions || !s->sess_model || !s->workers || !s->preps)
        return cs_errorf(err, CS_ENOMEM, "out of memory");
    if (s->p.max_batch == 0) {
        /* With oneDNN on this project's CPUs a batch of 8 costs 1.2-1.7x per
         * image what 8 single runs do (batch 1 runs Winograd and stays in
         * cache), and its plans would add the direct weight layout and
         * bigger arenas; a GPU needs batches to be busy. */
        s->p.max_batch = 1;
        for (int i = 0; i < s->nmodels; i++)
            if (!strncmp(cs_model_device(s->slots[i].cur->m), "cuda", 4)) s->p.max_batch = 8;
    }
    s->prep_ahead = 2 * nw * s->p.max_batch; /* a batch running, the next one ready */
    s->gpu_device = -1;
    for (int i = 0; i < s->nmodels; i++) {
        const char *dev = cs_model_device(s->slots[i].cur->m);
        if (!strncmp(dev, "cuda", 4)) s->gpu_device = dev[4] == ':' ? atoi(dev + 5) : 0;
    }
    for (int i = 0; i < nw * s->nmodels; i++) {
        svc_model *m = s->slots[i % s->nmodels].cur;
        cs_status st = cs_session_create(m->m, &s->sessions[i], err);
        if (st != CS_OK) return st;
        model_retain(m);
        s->sess_model[i] = m;
    }
    s->started = true;
    bool files = false;
    for (int i = 0; i < s->nmodels; i++) files |= s->slots[i].path[0] != '\0';
    if (files && s->p.reload_poll_ms > 0) {
        if (pthread_create(&s->reloader, NULL, reload_main, s) != 0)
            return cs_errorf(err, CS_EINTERNAL, "cannot start threads");
        s->reloader_started = true;
    }
    if (s->p.encode_threads == 0) {
        /* By device: a GPU leaves the cores to images, so a result's
         * overlay and PNG are split over up to 8 of them (a cap, not a
         * measured optimum: at 8 parts the last, libdeflate part holds a
         * quarter of the rows and each zlib part a tenth, and every part
         * adds a wake-up).  On the CPU the network owns the cores, and on
         * this project's 2-core machine a split measured no faster in the
         * server (docs/benchmarks.md). */
        s->p.encode_threads = 1;
        if (s->gpu_device >= 0) s->p.encode_threads = s->ncores < 8 ? s->ncores : 8;
    }
    if (s->p.encode_threads > 1) {
        cs_status st = cs_team_create(s->p.encode_threads - 1, &s->team, err);
        if (st != CS_OK) return st;
    }
    for (int i = 0; i < np; i++) {
        if (pthread_create(&s->preps[i], NULL, prep_main, s) != 0)
            return cs_errorf(err, CS_EINTERNAL, "cannot start threads");
        s->npreps_started++;
    }
    s->warming = nw;
    for (int i = 0; i < nw; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa) return cs_errorf(err, CS_ENOMEM, "out of memory");
        wa->s = s;
        wa->idx = i;
        if (pthread_create(&s->workers[i], NULL, worker_main, wa) != 0) {
            free(wa);
            return cs_errorf(err, CS_EINTERNAL, "cannot start threads");
        }
        s->nworkers_started++;
    }
    /* ready once every worker has warmed its sessions (warm_session) */
    pthread_mutex_lock(&s->mu);
    while (s->warming > 0) pthread_cond_wait(&s->warm_cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    atomic_store(&s->ready, 1);
    return CS_OK;
}

static void stop_reloader(cs_svc *s) {
    pthread_mutex_lock(&s->vmu);
    bool run = s->reloader_started;
    s->reload_quit = true;
    s->reloader_started = false;
    pthread_cond_broadcast(&s->reload_cv);
    pthread_mutex_unlock(&s->vmu);
    if (run) pthread_join(s->reloader, NULL);
}

void cs_svc_stop(cs_svc *s, int drain_ms) {
    if (!s || !s->started) return;
    stop_reloader(s);
    atomic_store(&s->ready, 0);
    pthread_mutex_lock(&s->mu);
    if (s->quit) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    s->stopping = true;
    struct timespec ts;
    abs_deadline(&ts, drain_ms > 0 ? drain_ms : 0);
    while (s->inflight > 0)
        if (pthread_cond_timedwait(&s->idle_cv, &s->mu, &ts) == ETIMEDOUT) break;
    s->quit = true;
    /* whatever has not reached a worker by now is answered "stopping" */
    job *left = NULL, **o = &left;
    for (job *j; (j = list_pop(&s->prep_head, &s->prep_tail)) || (j = list_pop(&s->infer_head, &s->infer_tail));) {
        fail_job(j, CS_SVC_STOPPING, CS_EINVAL, "the server is shutting down");
        *o = j;
        o = &j->next;
    }
    s->prep_len = s->infer_len = 0;
    pthread_cond_broadcast(&s->work_cv);
    pthread_cond_broadcast(&s->prep_cv);
    pthread_mutex_unlock(&s->mu);
    finish_list(s, left);
    for (int i = 0; i < s->nworkers_started; i++) pthread_join(s->workers[i], NULL);
    pthread_mutex_lock(&s->mu);
    s->workers_joined = true;
    pthread_cond_broadcast(&s->prep_cv);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->npreps_started; i++) pthread_join(s->preps[i], NULL);
    s->nworkers_started = s->npreps_started = 0;
}

void cs_svc_free(cs_svc *s) {
    if (!s) return;
    if (s->started) {
        pthread_mutex_lock(&s->mu);
        bool q = s->quit;
        pthread_mutex_unlock(&s->mu);
        if (!q) cs_svc_stop(s, 0);
    }
    stop_reloader(s);
    if (s->sessions)
        for (int i = 0; i < s->p.workers * s->nmodels; i++) {
            cs_session_free(s->sessions[i]);
            if (s->sess_model) model_release(s->sess_model[i]);
        }
    free(s->sessions);
    free(s->sess_model);
    free(s->workers);
    free(s->preps);
    cs_team_destroy(s->team); /* after the prep threads, its only callers, were joined */
    for (int i = 0; i < s->nmodels; i++) model_destroy(s->slots[i].cur);
    while (s->retired) {
        svc_model *m = s->retired;
        s->retired = m->next_retired;
        model_destroy(m);
    }
    svc_lru_free(s->results);
    svc_lru_free(s->images);
    svc_lru_free(s->prepped);
    cs_cache_close(s->tiers);
    pthread_cond_destroy(&s->prep_cv);
    pthread_cond_destroy(&s->work_cv);
    pthread_cond_destroy(&s->idle_cv);
    pthread_cond_destroy(&s->warm_cv);
    pthread_cond_destroy(&s->reload_cv);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->mmu);
    pthread_mutex_destroy(&s->vmu);
    free(s->prepared_dir);
    free(s);
}

/* ---- submit ------------------------------------------------------------------------- */

/* A result from the disk or Redis tier, decoded and put into memory; NULL on
 * a miss (or a value that does not decode: it is recomputed and replaced). */
static result_box *tier_lookup(cs_svc *s, const job *j) {
    uint8_t *buf = NULL;
    size_t len = 0;
    if (!cs_cache_get(s->tiers, j->key, &buf, &len, NULL)) return NULL;
    result_box *b = calloc(1, sizeof *b);
    if (!b || !svc_result_decode(buf, len, &b->r)) {
        free(buf);
        free(b);
        return NULL;
    }
    free(buf);
    atomic_init(&b->refs, 1);
    memcpy(b->tag, j->model->digest, 32);
    b->created = time(NULL);
    /* another replica may serve the same file under another name */
    snprintf(b->r.model, sizeof b->r.model, "%s", j->model->name);
    b->bytes = box_bytes(b);
    svc_lru_put(s->results, j->key, b, b->bytes);
    return b;
}

static int answer(cs_svc *s, cs_svc_response *resp, cs_svc_outcome o, double t0) {
    resp->outcome = o;
    resp->timings.total = cs_now_ms() - t0;
    count_outcome(s, o, o != CS_SVC_OK);
    return 1;
}

/* The current version of the named model (NULL/"": the first), retained:
 * the caller releases it (model_release).  A reload does not affect it. */
static svc_model *find_model(cs_svc *s, const char *name, cs_error *err) {
    svc_model *m = NULL;
    pthread_mutex_lock(&s->vmu);
    for (int i = 0; i < s->nmodels && !m; i++)
        if (!name || !*name || !strcmp(s->slots[i].cur->name, name)) m = s->slots[i].cur;
    model_retain(m);
    pthread_mutex_unlock(&s->vmu);
    if (m) return m;
    char list[512] = "";
    size_t off = 0;
    for (int i = 0; i < s->nmodels && off < sizeof list; i++)
        off += (size_t)snprintf(list + off, sizeof list - off, "%s%s", i ? ", " : "", s->slots[i].cur->name);
    cs_errorf(err, CS_ENOTFOUND, "unknown model '%.64s'; valid: %s", name, list);
    return NULL;
}

/* A job that never entered the pipeline. */
static void job_discard(job *j) {
    model_release(j->model);
    free(j);
}

/* The cache key: SHA-256 over everything that changes the answer. */
static int make_key(const job *j, const uint8_t img_sha[32], uint8_t key[32]) {
    char params[512];
    /* the device kind and precision change the numbers (a GPU in fp16 is not
     * the CPU in fp32), so replicas of both kinds sharing a Redis keep
     * apart; cuda:0 and cuda:1 compute the same */
    const char *dev = cs_model_device(j->model->m);
    int n = snprintf(params, sizeof params, "kind=%d;topk=%d;dev=%.*s;prec=%s", (int)j->kind, j->topk,
                     (int)strcspn(dev, ":"), dev, cs_precision_name(cs_model_precision(j->model->m)));
    if (j->kind == CS_SVC_EXPLAIN) {
        const cs_explain_options *o = &j->eo;
        n += snprintf(params + n, sizeof params - (size_t)n, ";method=%s;cls=%d:%d;aug=%d;eig=%d;cmap=%s;alpha=%.6f;layers=",
                      cs_cam_method_name(o->method), (int)o->class_mode,
                      o->class_mode == CS_CLASS_INDEX ? o->class_index : -1, o->aug_smooth,
                      o->eigen_smooth, cs_img_colormap_name(j->cmap), j->alpha);
        for (int l = 0; l < o->nlayers && n < (int)sizeof params - 8; l++)
            n += snprintf(params + n, sizeof params - (size_t)n, "%d,", o->layers[l]);
        n += snprintf(params + n, sizeof params - (size_t)n, ";side=%d", j->s->p.overlay_max_side);
    }
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned int len = 0;
    static const char tag[] = "camserve/result/v1;engine=" CS_VERSION ";";
    int ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(c, tag, sizeof tag - 1) == 1 &&
             EVP_DigestUpdate(c, j->model->digest, 32) == 1 &&
             EVP_DigestUpdate(c, j->model->pp_text, strlen(j->model->pp_text)) == 1 &&
             EVP_DigestUpdate(c, img_sha, 32) == 1 && EVP_DigestUpdate(c, params, strlen(params)) == 1 &&
             EVP_DigestFinal_ex(c, key, &len) == 1 && len == 32;
    EVP_MD_CTX_free(c);
    return ok;
}

/* The memory tier's fresh result for key (a reference), or NULL. */
static result_box *mem_lookup(cs_svc *s, const uint8_t key[32]) {
    result_box *hit = s->p.cache_mem_bytes ? svc_lru_get(s->results, key) : NULL;
    if (hit && s->p.cache_ttl_s > 0 && time(NULL) - hit->created > s->p.cache_ttl_s) {
        result_release(hit);
        hit = NULL;
    }
    return hit;
}

/* Parses and checks the request into j (everything but the image). */
static cs_svc_outcome parse_request(cs_svc *s, const cs_svc_request *req, job *j, cs_error *err) {
    j->model = find_model(s, req->model, err);
    if (!j->model) return CS_SVC_BAD_REQUEST;
    const svc_model *sm = j->model;
    j->kind = req->kind;
    j->eo = cs_explain_default_options();
    j->topk = req->topk > 0 ? req->topk : 5;
    if (j->topk > CS_SVC_MAX_TOPK) {
        cs_errorf(err, CS_EINVAL, "topk must be 1..%d, got %d", CS_SVC_MAX_TOPK, req->topk);
        return CS_SVC_BAD_REQUEST;
    }
    if (j->topk > sm->info.num_classes) j->topk = sm->info.num_classes;
    if (j->kind == CS_SVC_CLASSIFY) return CS_SVC_OK;
    if (req->method && *req->method && cs_cam_method_parse(req->method, &j->eo.method, err) != CS_OK)
        return CS_SVC_BAD_REQUEST;
    const char *cls = req->class_spec && *req->class_spec ? req->class_spec : "top";
    const int nlabels = sm->info.num_labels < sm->info.num_classes ? sm->info.num_labels : sm->info.num_classes;
    if (!strncmp(cls, "topk:", 5)) { /* one map per answer */
        cs_errorf(err, CS_EINVAL, "bad class '%.64s': use top, a class index 0..%d%s", cls,
                  sm->info.num_classes - 1, nlabels ? " or a label" : "");
        return CS_SVC_BAD_REQUEST;
    }
    if (cs_explain_parse_class(cls, sm->labels, nlabels, &j->eo, err) != CS_OK) {
        if (!nlabels)
            cs_errorf(err, CS_EINVAL, "bad class '%.64s': use top or a class index 0..%d (the model has no labels)",
                      cls, sm->info.num_classes - 1);
        return CS_SVC_BAD_REQUEST;
    }
    if (j->eo.class_mode == CS_CLASS_INDEX && j->eo.class_index >= sm->info.num_classes) {
        cs_errorf(err, CS_EINVAL, "class %d out of range: valid: top or 0..%d (the model has %d classes)",
                  j->eo.class_index, sm->info.num_classes - 1, sm->info.num_classes);
        return CS_SVC_BAD_REQUEST;
    }
    const char *layer = req->layer && *req->layer ? req->layer : "auto";
    if (cs_explain_parse_layers(sm->m, layer, &j->eo, err) != CS_OK) return CS_SVC_BAD_REQUEST;
    if (cs_cam_method_needs_forward(j->eo.method) && j->eo.nlayers != 1) {
        cs_errorf(err, CS_EINVAL, "%s explains one layer at a time", cs_cam_method_name(j->eo.method));
        return CS_SVC_BAD_REQUEST;
    }
    j->eo.aug_smooth = req->aug_smooth != 0;
    j->eo.eigen_smooth = req->eigen_smooth != 0;
    j->cmap = CS_IMG_CMAP_JET;
    if (req->colormap && *req->colormap && cs_img_colormap_parse(req->colormap, &j->cmap, err) != CS_OK)
        return CS_SVC_BAD_REQUEST;
    j->alpha = req->alpha < 0 ? 0.5 : req->alpha;
    if (!(j->alpha >= 0 && j->alpha <= 1)) {
        cs_errorf(err, CS_EINVAL, "alpha must be in [0, 1]");
        return CS_SVC_BAD_REQUEST;
    }
    /* alpha is part of the key: round it so 0.5 and 0.50000001 share entries */
    j->alpha = round(j->alpha * 1000) / 1000;
    return CS_SVC_OK;
}

int cs_svc_submit(cs_svc *s, const cs_svc_request *req, cs_svc_done_fn done, void *ctx,
                  cs_svc_response *resp) {
    double t0 = cs_now_ms();
    memset(resp, 0, sizeof *resp);
    if (!atomic_load(&s->ready)) {
        cs_errorf(&resp->err, CS_EINVAL, "%s", s->started ? "the server is shutting down" : "models are still loading");
        return answer(s, resp, CS_SVC_STOPPING, t0);
    }
    job *j = calloc(1, sizeof *j);
    if (!j) {
        cs_errorf(&resp->err, CS_ENOMEM, "out of memory");
        return answer(s, resp, CS_SVC_INTERNAL, t0);
    }
    j->s = s;
    cs_svc_outcome o = parse_request(s, req, j, &resp->err);
    uint8_t img_sha[32];
    if (o == CS_SVC_OK) {
        if (req->image && req->image_len > 0) {
            if (req->image_len > s->p.limits.max_bytes) {
                cs_errorf(&resp->err, CS_ELIMIT, "image too large: %zu bytes (limit %zu)", req->image_len,
                          s->p.limits.max_bytes);
                o = CS_SVC_TOO_LARGE;
            } else if (cs_img_sniff(req->image, req->image_len) == CS_IMG_FORMAT_UNKNOWN) {
                cs_errorf(&resp->err, CS_EFORMAT, "invalid image: not a JPEG, PNG or WebP file");
                o = CS_SVC_BAD_IMAGE;
            } else if (req->image_sha256) {
                memcpy(img_sha, req->image_sha256, 32);
            } else if (!sha256(req->image, req->image_len, img_sha)) {
                cs_errorf(&resp->err, CS_EINTERNAL, "SHA-256 failed");
                o = CS_SVC_INTERNAL;
            }
        } else if (req->image_id && *req->image_id) {
            if (!unhex32(req->image_id, img_sha)) {
                cs_errorf(&resp->err, CS_EINVAL, "image_id must be 64 hex digits (the SHA-256 of the image)");
                o = CS_SVC_BAD_REQUEST;
            }
        } else {
            cs_errorf(&resp->err, CS_EINVAL, "no image: send the image bytes or an image_id");
            o = CS_SVC_BAD_REQUEST;
        }
    }
    if (o != CS_SVC_OK) {
        job_discard(j);
        return answer(s, resp, o, t0);
    }
    hex32(img_sha, j->image_id);
    memcpy(j->img_sha, img_sha, 32);
    memcpy(resp->image_id, j->image_id, sizeof resp->image_id);
    if (!make_key(j, img_sha, j->key)) {
        job_discard(j);
        cs_errorf(&resp->err, CS_EINTERNAL, "SHA-256 failed");
        return answer(s, resp, CS_SVC_INTERNAL, t0);
    }

    /* the image store: an upload is remembered (or refreshed) even on a hit,
     * so that later image_id requests with other parameters find it */
    blob *b = svc_lru_get(s->images, img_sha);
    if (!b && req->image) {
        /* a new image: keep the caller's block when it is handed over (no
         * copy of a multi-megabyte upload, and no second one in memory) */
        const bool adopt = req->image_taken && req->image_cap >= req->image_len;
        b = malloc(sizeof *b + (adopt ? 0 : req->image_len));
        if (b) {
            atomic_init(&b->refs, 1);
            b->len = req->image_len;
            b->adopted = adopt;
            if (adopt) {
                b->data = (uint8_t *)req->image;
                *req->image_taken = 1;
            } else {
                b->data = (uint8_t *)(b + 1);
                memcpy(b->data, req->image, req->image_len);
            }
            svc_lru_put(s->images, img_sha, b, sizeof *b + (adopt ? req->image_cap : b->len));
        }
    }

    result_box *hit = mem_lookup(s, j->key);
    bool mem_hit = hit != NULL;
    if (!hit && s->tiers) hit = tier_lookup(s, j); /* counted by the tier */
    pthread_mutex_lock(&s->mmu);
    if (mem_hit) s->hits++;
    else if (!hit) s->misses++;
    pthread_mutex_unlock(&s->mmu);
    if (hit) {
        blob_release(b);
        job_discard(j);
        resp->result = &hit->r;
        resp->cache_hit = 1;
        return answer(s, resp, CS_SVC_OK, t0);
    }
    if (!b) {
        job_discard(j);
        if (req->image) {
            cs_errorf(&resp->err, CS_ENOMEM, "out of memory");
            return answer(s, resp, CS_SVC_INTERNAL, t0);
        }
        cs_errorf(&resp->err, CS_ENOTFOUND,
                  "unknown image_id %.64s: the server does not have (or no longer has) this image; upload it again",
                  req->image_id);
        return answer(s, resp, CS_SVC_UNKNOWN_IMAGE, t0);
    }
    j->image = b;
    j->done = done;
    j->ctx = ctx;
    j->client_gone = req->client_gone;
    j->t_submit = t0;
    j->deadline = t0 + s->p.timeout_ms;

    pthread_mutex_lock(&s->mu);
    int limit = s->p.queue + s->p.workers * s->p.max_batch;
    if (s->stopping || s->inflight >= limit) {
        bool stopping = s->stopping;
        int inflight = s->inflight;
        pthread_mutex_unlock(&s->mu);
        job_free(j);
        if (stopping) {
            cs_errorf(&resp->err, CS_EINVAL, "the server is shutting down");
            return answer(s, resp, CS_SVC_STOPPING, t0);
        }
        cs_errorf(&resp->err, CS_ELIMIT, "server busy: %d requests in flight (limit %d); retry shortly",
                  inflight, limit);
        return answer(s, resp, CS_SVC_BUSY, t0);
    }
    s->inflight++;
    job *lead = flight_find(s, j->key);
    /* The leader of this key may have finished since the lookup above: it
     * puts its result in the cache before it leaves the flights, so either
     * it is still a flight or its result is there.  Without this look, an
     * identical request could compute the answer a second time. */
    result_box *late = lead ? NULL : mem_lookup(s, j->key);
    if (late) {
        if (--s->inflight == 0) pthread_cond_broadcast(&s->idle_cv);
        pthread_mutex_unlock(&s->mu);
        job_free(j);
        pthread_mutex_lock(&s->mmu);
        s->misses--;
        s->hits++;
        pthread_mutex_unlock(&s->mmu);
        resp->result = &late->r;
        resp->cache_hit = 1;
        return answer(s, resp, CS_SVC_OK, t0);
    }
    if (lead) { /* the same answer is being computed: wait for it */
        blob_release(j->image);
        j->image = NULL;
        j->follower = true;
        j->next = lead->followers;
        lead->followers = j;
        s->nfollowers++;
        pthread_mutex_unlock(&s->mu);
        pthread_mutex_lock(&s->mmu);
        s->coalesced++;
        pthread_mutex_unlock(&s->mmu);
        return 0;
    }
    /* A ScoreCAM / AblationCAM that alone would outlast the timeout, as
     * measured here (run_cost), is refused now: a quick 504 instead of one
     * after timeout_ms of a worker's time. */
    const run_cost *slow = run_cost_find(s, j, t0);
    if (slow && slow->ms > SLOW_RUN_MARGIN * s->p.timeout_ms) {
        const double ms = slow->ms, ago = t0 > slow->at ? t0 - slow->at : 0;
        const bool extrapolated = slow->extrapolated;
        if (--s->inflight == 0) pthread_cond_broadcast(&s->idle_cv);
        pthread_mutex_unlock(&s->mu);
        cs_errorf(&resp->err, CS_ELIMIT,
                  "timed out before it ran: %s with these layers and options %s about %.*f s per image on this "
                  "server (measured %.0f s ago), more than the %d ms request timeout (--timeout-ms); "
                  SLOW_RUN_ADVICE "; such a request is tried again %.0f min after that measurement",
                  cs_cam_method_name(j->eo.method), extrapolated ? "would take" : "took", ms < 1e4 ? 1 : 0,
                  ms / 1e3, ago / 1e3, s->p.timeout_ms, SLOW_RUN_TTL_MS / 60e3);
        job_free(j);
        return answer(s, resp, CS_SVC_TIMEOUT, t0);
    }
    /* A request that would still be queued at its deadline is refused now:
     * a quick 503 instead of a 504 after timeout_ms of waiting.  The
     * estimate is the expected worker time of the jobs ahead (followers
     * compute nothing), shared by the workers. */
    double wait_ms = s->queued_ms / s->p.workers;
    if (wait_ms > s->p.timeout_ms) {
        if (--s->inflight == 0) pthread_cond_broadcast(&s->idle_cv);
        pthread_mutex_unlock(&s->mu);
        job_free(j);
        cs_errorf(&resp->err, CS_ELIMIT,
                  "server busy: about %.0f ms of work queued ahead, more than the %d ms timeout; retry shortly",
                  wait_ms, s->p.timeout_ms);
        return answer(s, resp, CS_SVC_BUSY, t0);
    }
    j->est_ms = cost_estimate(s, j, slow);
    s->queued_ms += j->est_ms;
    flight_add(s, j);
    list_push(&s->prep_head, &s->prep_tail, j);
    s->prep_len++;
    pthread_cond_signal(&s->prep_cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* ---- blocking call ------------------------------------------------------------------- */

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    cs_svc_response *resp;
} waiter;

static void wake(void *ctx, cs_svc_response *resp) {
    waiter *w = ctx;
    pthread_mutex_lock(&w->mu);
    *w->resp = *resp;
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void cs_svc_call(cs_svc *s, const cs_svc_request *req, cs_svc_response *resp) {
    waiter w = {.done = 0, .resp = resp};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    if (cs_svc_submit(s, req, wake, &w, resp) == 0) {
        pthread_mutex_lock(&w.mu);
        while (!w.done) pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
    }
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
}

/* ---- cache administration ------------------------------------------------------------ */

static int drop_tagged(void *ctx, void *value) {
    const uint8_t *tag = ctx;
    return !tag || !memcmp(((result_box *)value)->tag, tag, 32);
}

cs_status cs_svc_cache_clear(cs_svc *s, const char *model, uint64_t *removed, cs_error *err) {
    const uint8_t *tag = NULL;
    uint8_t tagbuf[32];
    if (removed) *removed = 0;
    if (model && *model) {
        svc_model *m = find_model(s, model, err);
        if (!m) return CS_ENOTFOUND;
        memcpy(tagbuf, m->digest, 32);
        model_release(m);
        tag = tagbuf;
    }
    uint64_t n = svc_lru_remove_if(s->results, drop_tagged, (void *)tag), d = 0;
    if (s->tiers) {
        cs_status st = cs_cache_clear(s->tiers, tag, &d, err);
        if (st != CS_OK) return st;
    }
    if (removed) *removed = n + d;
    return CS_OK;
}
