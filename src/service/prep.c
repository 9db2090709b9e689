/* The service's prep pool: before a worker, a job's upload is decoded and
 * preprocessed (on the GPU when its model runs there), through the prep
 * cache; after it, the overlay, heatmap and PNGs are made and the result is
 * stored in the cache tiers.  The same threads sweep expired jobs. */
#include "camserve/gpuprep.h"
#include "service/service_internal.h"

#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- decode + preprocess, before a worker ---------------------------------------- */

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
        svc_prepped_release(p);
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
 * is the prep thread's GPU image path (svc_prep_main), NULL when it could not
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
        svc_blob_release(j->image);
        j->image = NULL;
        j->tm.preprocess = cs_now_ms() - t0; /* the lookup; decode is skipped */
        return;
    }
    if (prep_on_gpu(s, j, gp, per, j->kind == CS_SVC_EXPLAIN || use_pc)) {
        /* decode, resize and normalisation were one GPU step: all of it
         * counts as decode */
        j->tm.decode = cs_now_ms() - t0;
        svc_blob_release(j->image);
        j->image = NULL;
        if (use_pc) prep_to_cache(s, j, pk, per);
        return;
    }
    cs_status st = cs_img_decode(j->image->data, j->image->len, &s->p.limits, need_w, need_h,
                                 &j->img, &j->err);
    double t1 = cs_now_ms();
    j->tm.decode = t1 - t0;
    svc_blob_release(j->image); /* the store keeps its own reference */
    j->image = NULL;
    if (st != CS_OK) {
        j->outcome = svc_outcome_of(st);
        return;
    }
    j->input = malloc(per * sizeof(float));
    if (!j->input) {
        svc_fail_job(j, CS_SVC_INTERNAL, CS_ENOMEM, "out of memory");
        return;
    }
    st = cs_img_preprocess(&j->img, &sm->pp, j->input, &j->err);
    if (st != CS_OK) {
        j->outcome = svc_outcome_of(st);
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

/* ---- overlay + encode, after a worker ---------------------------------------------- */

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
        svc_fail_job(j, CS_SVC_INTERNAL, CS_ENOMEM, "out of memory");
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
            j->outcome = svc_outcome_of(st);
            svc_result_release(b);
            return NULL;
        }
    }
    r->computed = j->tm;
    r->computed.total = cs_now_ms() - j->t_submit;
    b->bytes = svc_box_bytes(b);
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

/* ---- the prep threads -------------------------------------------------------------- */

/* Serves post before prep: finishing started work first keeps memory
 * bounded; decodes only prep_ahead jobs ahead of the workers. */
void *svc_prep_main(void *arg) {
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
            next_sweep = now + 50;
            if (svc_sweep_expired(s, now)) continue;
        }
        job *j = svc_list_pop(&s->post_head, &s->post_tail);
        if (j) {
            s->post_len--;
            const int ways = post_ways(s);
            s->posting++;
            pthread_mutex_unlock(&s->mu);
            result_box *b = j->outcome == CS_SVC_OK ? do_post(s, j, ways) : NULL;
            uint8_t key[32];
            memcpy(key, j->key, 32);
            if (b) svc_lru_put(s->results, j->key, b, b->bytes);
            if (b && s->tiers) svc_result_retain(b);
            svc_finish_job(s, j, b ? &b->r : NULL);
            if (b && s->tiers) { /* after the answer went out: the client never waits for these */
                tier_store(s, key, b);
                svc_result_release(b);
            }
            pthread_mutex_lock(&s->mu);
            s->posting--;
            continue;
        }
        j = s->infer_len + s->prepping < s->prep_ahead ? svc_list_pop(&s->prep_head, &s->prep_tail) : NULL;
        if (j) {
            s->prep_len--;
            s->prepping++;
            pthread_mutex_unlock(&s->mu);
            do_prep(s, j, &gp);
            if (j->outcome != CS_SVC_OK) {
                svc_finish_job(s, j, NULL);
                pthread_mutex_lock(&s->mu);
                s->prepping--;
                pthread_cond_signal(&s->work_cv); /* a batch may be waiting for it */
                continue;
            }
            pthread_mutex_lock(&s->mu);
            s->prepping--;
            if (s->quit) { /* the workers may be gone: never queue after stop */
                pthread_mutex_unlock(&s->mu);
                svc_fail_job(j, CS_SVC_STOPPING, CS_EINVAL, "the server is shutting down");
                svc_finish_job(s, j, NULL);
                pthread_mutex_lock(&s->mu);
                continue;
            }
            j->t_ready = cs_now_ms();
            svc_list_push(&s->infer_head, &s->infer_tail, j);
            s->infer_len++;
            pthread_cond_signal(&s->work_cv);
            continue;
        }
        if (s->quit && s->workers_joined) break;
        struct timespec ts;
        svc_abs_deadline(&ts, 50);
        pthread_cond_timedwait(&s->prep_cv, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    cs_gpuprep_close(gp);
    return NULL;
}

