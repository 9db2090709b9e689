/* camserve service: admission, the job lists and single-flight, the
 * lifecycle, the result cache and the image store (see service.h).  The
 * prep pool (prep.c), the inference workers (worker.c), model versions and
 * hot reload (registry.c) and /metrics (metrics.c) share the state declared
 * in service_internal.h.
 *
 * Data layout.  One mutex (s->mu) guards three FIFO job lists and the
 * counters that go with them:
 *   prep   submitted, waiting for decode + preprocess
 *   infer  preprocessed, waiting for a worker (dynamic batching reads here)
 *   post   run by a worker, waiting for overlay/heatmap/PNG + completion
 * A job is owned by exactly one list or one thread at a time; it is freed by
 * svc_finish_job after its callback ran.  The prep pool serves post before prep:
 * finishing started work first keeps memory bounded.  Callbacks always run
 * without s->mu held.
 *
 * Metrics live under their own lock (s->mmu) so /metrics never waits for the
 * queue lock of a busy service.  Lock order: mu before vmu (model
 * versions); mmu is taken alone. */
#include "service/service_internal.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- small helpers ---------------------------------------------------------- */

void svc_hex32(const uint8_t *d, char hex[65]) {
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

int svc_sha256(const void *buf, size_t len, uint8_t out[32]) {
    unsigned int n = 0;
    return EVP_Digest(buf, len, out, &n, EVP_sha256(), NULL) == 1 && n == 32;
}

cs_status cs_svc_sha256_hex(const void *buf, size_t len, char hex[65], cs_error *err) {
    uint8_t d[32];
    if (!svc_sha256(buf, len, d)) return cs_errorf(err, CS_EINTERNAL, "SHA-256 failed");
    svc_hex32(d, hex);
    return CS_OK;
}

void svc_abs_deadline(struct timespec *ts, double ms_from_now) {
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

/* ---- reference-counted values (the types: service_internal.h) ------------- */

void svc_blob_retain(void *v) { atomic_fetch_add(&((blob *)v)->refs, 1); }
void svc_blob_release(void *v) {
    blob *b = v;
    if (b && atomic_fetch_sub(&b->refs, 1) == 1) {
        if (b->adopted) free(b->data);
        free(b);
    }
}

void svc_result_retain(void *v) { atomic_fetch_add(&((result_box *)v)->refs, 1); }
void svc_result_release(void *v) {
    result_box *b = v;
    if (b && atomic_fetch_sub(&b->refs, 1) == 1) {
        free(b->r.overlay_png);
        free(b->r.heatmap_png);
        free(b->r.overlay_b64);
        free(b->r.heatmap_b64);
        free(b);
    }
}

void svc_prepped_retain(void *v) { atomic_fetch_add(&((prepped *)v)->refs, 1); }
void svc_prepped_release(void *v) {
    prepped *p = v;
    if (p && atomic_fetch_sub(&p->refs, 1) == 1) {
        cs_img_free(&p->img);
        free(p->input);
        free(p);
    }
}

void cs_svc_response_clear(cs_svc_response *r) {
    if (r && r->result) {
        svc_result_release(BOX_OF(r->result));
        r->result = NULL;
    }
}

const cs_svc_result *cs_svc_result_retain(const cs_svc_result *r) {
    if (r) svc_result_retain(BOX_OF(r));
    return r;
}

void cs_svc_result_release(const cs_svc_result *r) {
    if (r) svc_result_release(BOX_OF(r));
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

/* ---- admission's cost estimates (s->mu held) ---------------------------------- */

/* The cost class of a job: 0 classify, 1 + method for an explanation. */
int svc_cost_class(const job *j) {
    return j->kind == CS_SVC_EXPLAIN ? 1 + (int)j->eo.method : 0;
}

void svc_cost_observe(double *ewma, double v) { *ewma = *ewma > 0 ? 0.8 * *ewma + 0.2 * v : v; }

bool svc_slow_method(cs_cam_method m) {
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
    if (j->kind != CS_SVC_EXPLAIN || !svc_slow_method(j->eo.method)) return NULL;
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
    double c = s->cost_ms[j->model->slot][svc_cost_class(j)];
    return c > 0 ? c : s->job_ms;
}

/* Records that one image's run of j's kind took ms (s->mu held): the
 * latest measurement replaces an older one of the same kind, else the
 * oldest entry. */
void svc_run_cost_observe(cs_svc *s, const job *j, double ms, bool extrapolated, double now) {
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

/* ---- parameters and creation ------------------------------------------------------ */

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
    s->results = svc_lru_create(q.cache_mem_bytes, svc_result_retain, svc_result_release);
    s->images = svc_lru_create(q.image_store_bytes, svc_blob_retain, svc_blob_release);
    s->prepped = svc_lru_create(q.prep_cache_bytes, svc_prepped_retain, svc_prepped_release);
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

int cs_svc_max_batch(const cs_svc *s) { return s->p.max_batch; }

int cs_svc_encode_threads(const cs_svc *s) { return s->p.encode_threads; }

int cs_svc_ready(const cs_svc *s) { return atomic_load(&((cs_svc *)s)->ready); }

/* ---- jobs ----------------------------------------------------------------------- */

void svc_list_push(job **head, job **tail, job *j) {
    j->next = NULL;
    if (*tail) (*tail)->next = j;
    else *head = j;
    *tail = j;
}

job *svc_list_pop(job **head, job **tail) {
    job *j = *head;
    if (j) {
        *head = j->next;
        if (!*head) *tail = NULL;
        j->next = NULL;
    }
    return j;
}

void svc_fail_job(job *j, cs_svc_outcome o, cs_status code, const char *msg) {
    j->outcome = o;
    if (msg) cs_errorf(&j->err, code, "%s", msg);
}

size_t svc_box_bytes(const result_box *b) {
    const cs_svc_result *r = &b->r;
    return sizeof *b + r->overlay_len + r->heatmap_len + r->overlay_b64_len + r->heatmap_b64_len;
}

cs_svc_outcome svc_outcome_of(cs_status st) {
    switch (st) {
    case CS_ELIMIT: return CS_SVC_TOO_LARGE;
    case CS_EFORMAT: return CS_SVC_BAD_IMAGE;
    case CS_EINVAL:
    case CS_EUNSUPPORTED:
    case CS_ENOTFOUND: return CS_SVC_BAD_REQUEST;
    default: return CS_SVC_INTERNAL;
    }
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
                svc_fail_job(f, CS_SVC_TIMEOUT, CS_ELIMIT, "timed out waiting for an identical request being computed");
                f->next = out;
                out = f;
                s->nfollowers--;
            }
    return out;
}

static void job_free(job *j) {
    svc_model_release(j->model);
    svc_blob_release(j->image);
    if (j->prep) {
        svc_prepped_release(j->prep);
    } else {
        cs_img_free(&j->img);
        free(j->input);
    }
    free(j->logits);
    free(j->cam);
    free(j);
}

/* Completes a job: metrics, callback, free.  Never called with s->mu held. */
void svc_finish_job(cs_svc *s, job *j, const cs_svc_result *res) {
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
            if (res) svc_result_retain(BOX_OF(res));
            svc_finish_job(s, f, res);
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

void svc_finish_list(cs_svc *s, job *list) {
    while (list) {
        job *n = list->next;
        list->next = NULL;
        svc_finish_job(s, list, NULL);
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
            svc_fail_job(j, CS_SVC_TIMEOUT, CS_ELIMIT, "timed out waiting for a worker");
            *o = j;
            o = &j->next;
            (*len)--;
        } else {
            prev = j;
        }
    }
    return out;
}

int svc_sweep_expired(cs_svc *s, double now) {
    job *exp = take_expired(&s->infer_head, &s->infer_tail, &s->infer_len, now);
    job *exp2 = take_expired(&s->prep_head, &s->prep_tail, &s->prep_len, now);
    job *exp3 = s->nfollowers ? take_expired_followers(s, now) : NULL;
    if (!exp && !exp2 && !exp3) return 0;
    pthread_mutex_unlock(&s->mu);
    svc_finish_list(s, exp);
    svc_finish_list(s, exp2);
    svc_finish_list(s, exp3);
    pthread_mutex_lock(&s->mu);
    return 1;
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
        svc_model_retain(m);
        s->sess_model[i] = m;
    }
    s->started = true;
    bool files = false;
    for (int i = 0; i < s->nmodels; i++) files |= s->slots[i].path[0] != '\0';
    if (files && s->p.reload_poll_ms > 0) {
        if (pthread_create(&s->reloader, NULL, svc_reload_main, s) != 0)
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
        if (pthread_create(&s->preps[i], NULL, svc_prep_main, s) != 0)
            return cs_errorf(err, CS_EINTERNAL, "cannot start threads");
        s->npreps_started++;
    }
    s->warming = nw;
    for (int i = 0; i < nw; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa) return cs_errorf(err, CS_ENOMEM, "out of memory");
        wa->s = s;
        wa->idx = i;
        if (pthread_create(&s->workers[i], NULL, svc_worker_main, wa) != 0) {
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
    svc_abs_deadline(&ts, drain_ms > 0 ? drain_ms : 0);
    while (s->inflight > 0)
        if (pthread_cond_timedwait(&s->idle_cv, &s->mu, &ts) == ETIMEDOUT) break;
    s->quit = true;
    /* whatever has not reached a worker by now is answered "stopping" */
    job *left = NULL, **o = &left;
    for (job *j; (j = svc_list_pop(&s->prep_head, &s->prep_tail)) || (j = svc_list_pop(&s->infer_head, &s->infer_tail));) {
        svc_fail_job(j, CS_SVC_STOPPING, CS_EINVAL, "the server is shutting down");
        *o = j;
        o = &j->next;
    }
    s->prep_len = s->infer_len = 0;
    pthread_cond_broadcast(&s->work_cv);
    pthread_cond_broadcast(&s->prep_cv);
    pthread_mutex_unlock(&s->mu);
    svc_finish_list(s, left);
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
            if (s->sess_model) svc_model_release(s->sess_model[i]);
        }
    free(s->sessions);
    free(s->sess_model);
    free(s->workers);
    free(s->preps);
    cs_team_destroy(s->team); /* after the prep threads, its only callers, were joined */
    for (int i = 0; i < s->nmodels; i++) svc_model_destroy(s->slots[i].cur);
    while (s->retired) {
        svc_model *m = s->retired;
        s->retired = m->next_retired;
        svc_model_destroy(m);
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
    b->bytes = svc_box_bytes(b);
    svc_lru_put(s->results, j->key, b, b->bytes);
    return b;
}

static int answer(cs_svc *s, cs_svc_response *resp, cs_svc_outcome o, double t0) {
    resp->outcome = o;
    resp->timings.total = cs_now_ms() - t0;
    svc_count_outcome(s, o, o != CS_SVC_OK);
    return 1;
}

/* The current version of the named model (NULL/"": the first), retained:
 * the caller releases it (svc_model_release).  A reload does not affect it. */
static svc_model *find_model(cs_svc *s, const char *name, cs_error *err) {
    svc_model *m = NULL;
    pthread_mutex_lock(&s->vmu);
    for (int i = 0; i < s->nmodels && !m; i++)
        if (!name || !*name || !strcmp(s->slots[i].cur->name, name)) m = s->slots[i].cur;
    svc_model_retain(m);
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
    svc_model_release(j->model);
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
        svc_result_release(hit);
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
            } else if (!svc_sha256(req->image, req->image_len, img_sha)) {
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
    svc_hex32(img_sha, j->image_id);
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
        svc_blob_release(b);
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
        svc_blob_release(j->image);
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
    svc_list_push(&s->prep_head, &s->prep_tail, j);
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
        svc_model_release(m);
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

