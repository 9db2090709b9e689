/* The explanation pipeline: classes, forward/backward, maps, layers, aug_smooth. */
#include "camserve/explain.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

cs_explain_options cs_explain_default_options(void) {
    cs_explain_options o;
    memset(&o, 0, sizeof o);
    o.method = CS_CAM_METHOD_GRADCAM;
    o.class_mode = CS_CLASS_TOP;
    o.topk = 1;
    return o;
}

static bool parse_int(const char *s, long *out) {
    if (!*s) return false;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < 0) return false;
    *out = v;
    return true;
}

/* A label character as a name compares: case folded, and '_' as ' ' (so
 * golden_retriever names "golden retriever" in a shell or URL). */
static int label_fold(unsigned char c) { return c == '_' ? ' ' : tolower(c); }

static bool label_eq(const char *a, const char *b) {
    while (*a && label_fold((unsigned char)*a) == label_fold((unsigned char)*b)) a++, b++;
    return !*a && !*b;
}

static bool label_contains(const char *hay, const char *needle) {
    for (; *hay; hay++) {
        const char *h = hay, *n = needle;
        while (*n && label_fold((unsigned char)*h) == label_fold((unsigned char)*n)) h++, n++;
        if (!*n) return true;
    }
    return false;
}

/* spec as a label: exactly one class must carry it. */
static cs_status parse_class_label(const char *spec, char *const *labels, int nlabels, cs_explain_options *opt,
                                   cs_error *err) {
    int found = -1, nfound = 0;
    char list[512] = "";
    size_t off = 0;
    for (int i = 0; i < nlabels; i++)
        if (labels[i] && label_eq(spec, labels[i])) {
            if (!nfound++) found = i;
            if (off < sizeof list)
                off += (size_t)snprintf(list + off, sizeof list - off, "%s%d", off ? ", " : "", i);
        }
    if (nfound == 1) {
        opt->class_mode = CS_CLASS_INDEX;
        opt->class_index = found;
        opt->topk = 1;
        return CS_OK;
    }
    if (nfound > 1)
        return cs_errorf(err, CS_EINVAL, "class '%.64s' names %d classes (%s): use the index", spec, nfound, list);
    /* The labels that contain it, as suggestions ("retriever" -> the four) */
    int nlike = 0;
    for (int i = 0; i < nlabels; i++)
        if (labels[i] && *spec && label_contains(labels[i], spec)) {
            if (nlike++ < 8 && off < sizeof list)
                off += (size_t)snprintf(list + off, sizeof list - off, "%s%d %s", off ? ", " : "", i, labels[i]);
        }
    if (nlike)
        return cs_errorf(err, CS_EINVAL, "unknown class '%.64s': no label is exactly that; labels containing it: %s%s",
                         spec, list, nlike > 8 ? ", ..." : "");
    return cs_errorf(err, CS_EINVAL, "unknown class '%.64s': neither top, an index nor one of the model's %d labels",
                     spec, nlabels);
}

cs_status cs_explain_parse_class(const char *spec, char *const *labels, int nlabels, cs_explain_options *opt,
                                 cs_error *err) {
    long v;
    if (!spec || !strcmp(spec, "top")) {
        opt->class_mode = CS_CLASS_TOP;
        opt->topk = 1;
    } else if (!strncmp(spec, "topk:", 5) && parse_int(spec + 5, &v) && v >= 1 &&
               v <= CS_EXPLAIN_MAX_TOPK) {
        opt->class_mode = CS_CLASS_TOPK;
        opt->topk = (int)v;
    } else if (parse_int(spec, &v) && v <= 1000000) {
        opt->class_mode = CS_CLASS_INDEX;
        opt->class_index = (int)v;
        opt->topk = 1;
    } else if (labels && nlabels > 0 && strncmp(spec, "topk:", 5)) {
        return parse_class_label(spec, labels, nlabels, opt, err);
    } else {
        return cs_errorf(err, CS_EINVAL, "bad class '%.64s': use top, an index, or topk:K (K 1..%d)%s", spec,
                         CS_EXPLAIN_MAX_TOPK, labels && nlabels > 0 ? "" : ", or a label (this model has none)");
    }
    return CS_OK;
}

/* The candidate names for a message, default first, up to len bytes. */
static void list_layers(const cs_model *m, char *buf, size_t len) {
    int n = cs_model_num_layers(m), def = cs_model_default_layer(m);
    int w0 = snprintf(buf, len, "%s (default)", def >= 0 ? cs_model_layer_name(m, def) : "none");
    size_t off = w0 > 0 && (size_t)w0 < len ? (size_t)w0 : 0;
    for (int i = n - 1; i >= 0 && off + 4 < len; i--) { /* deepest first: the usual choices */
        if (i == def) continue;
        int w = snprintf(buf + off, len - off, ", %s", cs_model_layer_name(m, i));
        if (w < 0 || (size_t)w >= len - off) {
            snprintf(buf + off, len - off, ", ...");
            break;
        }
        off += (size_t)w;
    }
}

cs_status cs_explain_parse_layers(const cs_model *m, const char *spec, cs_explain_options *opt,
                                  cs_error *err) {
    opt->nlayers = 0;
    if (!spec || !strcmp(spec, "auto")) {
        if (cs_model_default_layer(m) < 0)
            return cs_errorf(err, CS_EINVAL, "the model has no 4-D layer with a spatial extent to explain");
        opt->layers[opt->nlayers++] = cs_model_default_layer(m);
        return CS_OK;
    }
    char names[1024];
    if (strlen(spec) >= sizeof names) return cs_errorf(err, CS_EINVAL, "layer list too long");
    strcpy(names, spec);
    for (char *save = NULL, *t = strtok_r(names, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*t)) t++;
        int li = !strcmp(t, "auto") ? cs_model_default_layer(m) : cs_model_find_layer(m, t);
        if (li < 0) {
            char cand[900];
            list_layers(m, cand, sizeof cand);
            return cs_errorf(err, CS_ENOTFOUND, "unknown layer '%s'; candidate layers: %s", t, cand);
        }
        if (opt->nlayers == CS_EXPLAIN_MAX_LAYERS)
            return cs_errorf(err, CS_EINVAL, "at most %d layers", CS_EXPLAIN_MAX_LAYERS);
        opt->layers[opt->nlayers++] = li;
    }
    if (opt->nlayers == 0) return cs_errorf(err, CS_EINVAL, "empty layer list");
    return CS_OK;
}

void cs_explain_output_free(cs_explain_output *out) {
    free(out->logits);
    free(out->class_idx);
    free(out->maps_layer);
    free(out->maps_input);
    memset(out, 0, sizeof *out);
}

/* ---- ScoreCAM / AblationCAM forwards -------------------------------------- */

/* How far ScoreCAM's / AblationCAM's forward items have got, for the
 * caller's cancel hook: across the chunks of a fixed-batch model, the
 * aug_smooth passes and the class ranks of one cs_explain_run. */
typedef struct progress {
    int (*cancel)(void *ctx, double done);
    void *ctx;
    int chunks;        /* explain_batch calls this run makes */
    int64_t done, total;
} progress;

/* The CAM module hands the callbacks up to `batch` items at a time (16 or
 * 32, pytorch-grad-cam's batching, which AblationCAM's results depend on).
 * A model exported with a fixed batch runs them through the engine's padded
 * runs.  Otherwise each engine batch size is a plan a session builds and
 * keeps (a CUDA Graph on a GPU), so the runs use few sizes: a full call is
 * one run and a shorter one (the CAM module skips channels that cannot
 * change the map, so an image's last call varies in size) runs an item at
 * a time. */
typedef struct fwd_ctx {
    progress *prog;
    cs_session *s;
    int64_t ncls;
    int64_t in_per;       /* floats per model input */
    int64_t act_per;      /* floats per image of the layer's activations */
    const float *input;   /* the (augmented) batch the maps explain */
    int layer;
    bool fixed;           /* the model was exported with a fixed batch */
    int full;             /* cs_cam_forward_batch: the items of a full call */
    float *logits;        /* full x ncls */
    float *rep;           /* full copies of one input: AblationCAM's runs */
    const float *rep_of;  /* the input rep holds copies of, or NULL */
} fwd_ctx;

/* Asks the caller's hook whether to go on before k more items are run. */
static cs_status poll_cancel(progress *p, int k, cs_error *err) {
    if (p->cancel && p->cancel(p->ctx, p->total > 0 ? (double)p->done / (double)p->total : 0.0))
        return cs_errorf(err, CS_ECANCELED, "stopped after %lld of up to %lld forward passes",
                         (long long)p->done, (long long)p->total);
    p->done += k;
    return CS_OK;
}

static cs_status score_inputs(void *vctx, const float *items, int k, int image, int cls,
                              float *scores, cs_error *err) {
    fwd_ctx *c = vctx;
    (void)image;
    if (k > c->full) return cs_errorf(err, CS_EINTERNAL, "callback batch %d > %d", k, c->full);
    cs_status st = poll_cancel(c->prog, k, err);
    if (st != CS_OK) return st;
    if (c->fixed) st = cs_session_run_padded(c->s, items, k, c->logits, err);
    else
        for (int b = 0, r = k == c->full ? k : 1; b < k && st == CS_OK; b += r)
            st = cs_session_run(c->s, items + b * c->in_per, r, c->logits + b * c->ncls, err);
    if (st != CS_OK) return st;
    for (int j = 0; j < k; j++) scores[j] = c->logits[(int64_t)j * c->ncls + cls];
    return CS_OK;
}

static cs_status score_activations(void *vctx, const float *items, int k, int image, int cls,
                                   float *scores, cs_error *err) {
    fwd_ctx *c = vctx;
    if (k > c->full) return cs_errorf(err, CS_EINTERNAL, "callback batch %d > %d", k, c->full);
    cs_status st = poll_cancel(c->prog, k, err);
    if (st != CS_OK) return st;
    /* every run's input is the same image: copied once per image */
    const float *src = c->input + (int64_t)image * c->in_per;
    if (c->rep_of != src) {
        for (int j = 0; j < c->full; j++)
            memcpy(c->rep + j * c->in_per, src, (size_t)c->in_per * sizeof(float));
        c->rep_of = src;
    }
    if (c->fixed) st = cs_session_run_with_layer_padded(c->s, c->rep, k, c->layer, items, c->logits, err);
    else
        for (int b = 0, r = k == c->full ? k : 1; b < k && st == CS_OK; b += r)
            st = cs_session_run_with_layer(c->s, c->rep, r, c->layer, items + b * c->act_per, c->logits + b * c->ncls,
                                           err);
    if (st != CS_OK) return st;
    for (int j = 0; j < k; j++) scores[j] = c->logits[(int64_t)j * c->ncls + cls];
    return CS_OK;
}

/* ---- helpers ---------------------------------------------------------------- */

static void top_classes(const float *logits, int64_t n, int k, int *idx) {
    for (int j = 0; j < k; j++) idx[j] = -1;
    for (int64_t i = 0; i < n; i++) {
        int j = k;
        while (j > 0 && (idx[j - 1] < 0 || logits[i] > logits[idx[j - 1]])) j--;
        if (j >= k) continue;
        for (int t = k - 1; t > j; t--) idx[t] = idx[t - 1];
        idx[j] = (int)i;
    }
}

static void flip_rows(float *map, int h, int w) {
    for (int y = 0; y < h; y++) {
        float *r = map + (int64_t)y * w;
        for (int a = 0, b = w - 1; a < b; a++, b--) {
            float t = r[a];
            r[a] = r[b];
            r[b] = t;
        }
    }
}

/* The six aug_smooth variants of pytorch-grad-cam (ttach Compose of
 * HorizontalFlip and Multiply(0.9, 1, 1.1)), in ttach's product order. */
#define NAUG 6
static const int AUG_FLIP[NAUG] = {0, 0, 0, 1, 1, 1};
static const float AUG_MUL[NAUG] = {0.9f, 1.0f, 1.1f, 0.9f, 1.0f, 1.1f};

static cs_status explain_batch(cs_session *s, const cs_model *m, const float *input, int batch,
                               const cs_explain_options *opt, progress *prog, cs_explain_output *out,
                               cs_error *err);

/* Appends chunk c (explained alone) to out, which holds `done` images. */
static cs_status append_chunk(cs_explain_output *out, const cs_explain_output *c, int done, int total,
                              cs_error *err) {
    size_t lm = (size_t)c->layer_h * (size_t)c->layer_w, im = (size_t)c->in_h * (size_t)c->in_w;
    if (done == 0) {
        *out = *c;
        out->batch = total;
        out->logits = malloc((size_t)total * (size_t)c->num_classes * sizeof(float));
        out->class_idx = malloc((size_t)total * (size_t)c->k * sizeof(int));
        out->maps_input = malloc((size_t)total * (size_t)c->k * im * sizeof(float));
        out->maps_layer = c->maps_layer ? malloc((size_t)total * (size_t)c->k * lm * sizeof(float)) : NULL;
        out->forward_ms = out->backward_ms = out->cam_ms = 0;
        if (!out->logits || !out->class_idx || !out->maps_input || (c->maps_layer && !out->maps_layer)) {
            cs_explain_output_free(out);
            return cs_errorf(err, CS_ENOMEM, "out of memory");
        }
    }
    size_t nk = (size_t)c->batch * (size_t)c->k, off = (size_t)done * (size_t)c->k;
    memcpy(out->logits + (size_t)done * c->num_classes, c->logits,
           (size_t)c->batch * (size_t)c->num_classes * sizeof(float));
    memcpy(out->class_idx + off, c->class_idx, nk * sizeof(int));
    memcpy(out->maps_input + off * im, c->maps_input, nk * im * sizeof(float));
    if (c->maps_layer) memcpy(out->maps_layer + off * lm, c->maps_layer, nk * lm * sizeof(float));
    out->forward_ms += c->forward_ms;
    out->backward_ms += c->backward_ms;
    out->cam_ms += c->cam_ms;
    return CS_OK;
}

cs_status cs_explain_run(cs_session *s, const cs_model *m, const float *input, int batch,
                         const cs_explain_options *opt, cs_explain_output *out, cs_error *err) {
    memset(out, 0, sizeof *out);
    cs_model_info info;
    cs_model_get_info(m, &info);
    int b0 = (int)info.input_dims[0];
    progress prog = {.cancel = opt ? opt->cancel : NULL, .ctx = opt ? opt->cancel_ctx : NULL, .chunks = 1};
    if (b0 <= 0 || batch == b0) return explain_batch(s, m, input, batch, opt, &prog, out, err);
    /* A model exported with a fixed batch: explain it b0 images at a time,
     * the last run padded with copies of its last image (their results are
     * dropped: each image's explanation is its own). */
    if (batch < 1) return cs_errorf(err, CS_EINVAL, "batch must be >= 1");
    int64_t per = info.input_dims[1] * info.input_dims[2] * info.input_dims[3];
    float *pad = NULL;
    prog.chunks = (batch + b0 - 1) / b0;
    for (int i = 0; i < batch; i += b0) {
        const int cnt = batch - i < b0 ? batch - i : b0;
        const float *x = input + i * per;
        if (cnt < b0) {
            if (!(pad = malloc((size_t)(b0 * per) * sizeof(float)))) {
                if (i > 0) cs_explain_output_free(out);
                return cs_errorf(err, CS_ENOMEM, "out of memory");
            }
            for (int j = 0; j < b0; j++)
                memcpy(pad + j * per, x + (j < cnt ? j : cnt - 1) * per, (size_t)per * sizeof(float));
            x = pad;
        }
        cs_explain_output c;
        cs_status st = explain_batch(s, m, x, b0, opt, &prog, &c, err);
        free(pad);
        pad = NULL;
        if (st == CS_OK) {
            c.batch = cnt; /* the padding's rows follow the images' and are not copied */
            st = append_chunk(out, &c, i, batch, err);
        }
        if (i > 0 || st != CS_OK) cs_explain_output_free(&c);
        if (st != CS_OK) {
            if (i > 0) cs_explain_output_free(out);
            return st;
        }
        if (i == 0) { /* out took c's scalars; its buffers are fresh copies */
            free(c.logits);
            free(c.class_idx);
            free(c.maps_input);
            free(c.maps_layer);
        }
    }
    return CS_OK;
}

static cs_status explain_batch(cs_session *s, const cs_model *m, const float *input, int batch,
                               const cs_explain_options *opt, progress *prog, cs_explain_output *out,
                               cs_error *err) {
    memset(out, 0, sizeof *out);
    cs_model_info info;
    cs_model_get_info(m, &info);
    cs_explain_options o = opt ? *opt : cs_explain_default_options();
    if (o.nlayers == 0) {
        cs_status st = cs_explain_parse_layers(m, "auto", &o, err);
        if (st != CS_OK) return st;
    }
    if (batch < 1) return cs_errorf(err, CS_EINVAL, "batch must be >= 1");
    bool needs_fwd = cs_cam_method_needs_forward(o.method);
    if (needs_fwd && o.nlayers != 1)
        return cs_errorf(err, CS_EINVAL, "%s explains one layer at a time", cs_cam_method_name(o.method));
    int k = o.class_mode == CS_CLASS_TOPK ? o.topk : 1;
    if (k > info.num_classes) k = (int)info.num_classes;
    if (o.class_mode == CS_CLASS_INDEX && o.class_index >= info.num_classes)
        return cs_errorf(err, CS_EINVAL, "class %d out of range: the model has %lld classes (0..%lld)",
                         o.class_index, (long long)info.num_classes, (long long)info.num_classes - 1);

    const int64_t C = info.input_dims[1], H = info.input_dims[2], W = info.input_dims[3];
    const int64_t per = C * H * W, ncls = info.num_classes;
    const int naug = o.aug_smooth ? NAUG : 1;
    const int nb = batch * naug; /* images through the network */
    cs_status st = CS_OK;
    float *aug = NULL, *alllogits = NULL, *acts = NULL, *grads = NULL, *scaled = NULL,
          *tmp_in = NULL;
    float *raws[CS_EXPLAIN_MAX_LAYERS] = {0};
    int lh[CS_EXPLAIN_MAX_LAYERS], lw[CS_EXPLAIN_MAX_LAYERS], cls_nb[4096];
    fwd_ctx fc = {0};
    if (nb > 4096) return cs_errorf(err, CS_ELIMIT, "batch too large");

    out->batch = batch;
    out->k = k;
    out->num_classes = ncls;
    out->in_h = (int)H;
    out->in_w = (int)W;
    out->logits = malloc((size_t)(batch * ncls) * sizeof(float));
    out->class_idx = malloc((size_t)(batch * k) * sizeof(int));
    out->maps_input = calloc((size_t)(batch * k) * (size_t)(H * W), sizeof(float));
    alllogits = malloc((size_t)(nb * ncls) * sizeof(float));
    tmp_in = malloc((size_t)(nb * H * W) * sizeof(float));
    if (!out->logits || !out->class_idx || !out->maps_input || !alllogits || !tmp_in) goto oom;

    const float *x = input;
    if (naug > 1) {
        aug = malloc((size_t)(nb * per) * sizeof(float));
        if (!aug) goto oom;
        for (int a = 0; a < naug; a++)
            for (int i = 0; i < batch; i++) {
                const float *src = input + i * per;
                float *dst = aug + ((int64_t)a * batch + i) * per;
                for (int64_t ch = 0; ch < C * H; ch++)
                    for (int64_t xx = 0; xx < W; xx++)
                        dst[ch * W + xx] = AUG_MUL[a] * src[ch * W + (AUG_FLIP[a] ? W - 1 - xx : xx)];
            }
        x = aug;
    }

    /* The images go through the network in passes: all nb at once, or, for
     * a model exported with a fixed batch (cs_explain_run then hands over
     * exactly that many images), one aug_smooth variant at a time.  The
     * identity variant (a = 1) runs first: predictions and classes come
     * from it and are then fixed for every variant, as when targets are
     * given to pytorch-grad-cam.  Each pass leaves its layer maps for every
     * class rank in raws/scaled; combining them waits until all passes ran. */
    const int npass = info.input_dims[0] > 0 && naug > 1 ? naug : 1, pn = nb / npass;
    int64_t lsz[CS_EXPLAIN_MAX_LAYERS], ldim[CS_EXPLAIN_MAX_LAYERS][4];
    int64_t maxl = 0;
    for (int l = 0; l < o.nlayers; l++) {
        /* the model's dims, not cs_session_layer's: on a GPU that would
         * download the activations, which Grad-CAM there never reads */
        cs_model_layer_dims(m, o.layers[l], ldim[l]);
        if (ldim[l][2] * ldim[l][3] <= 1) {
            st = cs_errorf(err, CS_EINVAL, "layer '%s' has no spatial extent",
                           cs_model_layer_name(m, o.layers[l]));
            goto fail;
        }
        lsz[l] = ldim[l][1] * ldim[l][2] * ldim[l][3];
        if (lsz[l] > maxl) maxl = lsz[l];
        lh[l] = (int)ldim[l][2];
        lw[l] = (int)ldim[l][3];
        /* every class rank's maps of every image, combined after the passes */
        raws[l] = malloc((size_t)(k * nb * lh[l] * lw[l]) * sizeof(float));
        if (!raws[l]) goto oom;
    }
    acts = malloc((size_t)(pn * maxl) * sizeof(float)); /* one pass's */
    grads = malloc((size_t)(pn * maxl) * sizeof(float));
    if (!acts || !grads) goto oom;
    if (o.nlayers == 1) {
        out->layer_h = lh[0];
        out->layer_w = lw[0];
        out->maps_layer = calloc((size_t)(batch * k) * (size_t)(lh[0] * lw[0]), sizeof(float));
        scaled = malloc((size_t)(k * nb * lh[0] * lw[0]) * sizeof(float));
        if (!out->maps_layer || !scaled) goto oom;
    }
    cs_cam_options co = cs_cam_default_options();
    co.eigen_smooth = o.eigen_smooth;
    if (o.batch_size > 0) co.batch_size = o.batch_size;
    if (needs_fwd) {
        /* every image of every pass and chunk, each class rank: a forward
         * per channel, and AblationCAM's unablated one */
        if (prog->total == 0)
            prog->total = (int64_t)prog->chunks * nb * k *
                          (ldim[0][1] + (o.method == CS_CAM_METHOD_ABLATIONCAM ? 1 : 0));
        fc.prog = prog;
        fc.s = s;
        fc.ncls = ncls;
        fc.in_per = per;
        fc.layer = o.layers[0];
        fc.act_per = lsz[0];
        fc.fixed = info.input_dims[0] > 0;
        fc.full = cs_cam_forward_batch(o.method, &co);
        fc.logits = malloc((size_t)(fc.full * ncls) * sizeof(float));
        /* ScoreCAM's items are inputs themselves: no copies */
        fc.rep = o.method == CS_CAM_METHOD_ABLATIONCAM ? malloc((size_t)(fc.full * per) * sizeof(float)) : NULL;
        if (!fc.logits || (o.method == CS_CAM_METHOD_ABLATIONCAM && !fc.rep)) goto oom;
    }

    for (int q = 0; q < npass; q++) {
        const int p = npass == 1 ? 0 : q == 0 ? 1 : q == 1 ? 0 : q;
        const int64_t p0 = (int64_t)p * pn;
        const float *xp = x + p0 * per;
        double t0 = cs_now_ms();
        st = cs_session_forward_keep(s, xp, pn, o.layers, o.nlayers, alllogits + p0 * ncls, err);
        if (st != CS_OK) goto fail;
        out->forward_ms += cs_now_ms() - t0;
        if (q == 0) {
            const float *base = alllogits + (int64_t)(naug > 1 ? 1 : 0) * batch * ncls;
            memcpy(out->logits, base, (size_t)(batch * ncls) * sizeof(float));
            for (int i = 0; i < batch; i++) {
                if (o.class_mode == CS_CLASS_INDEX) out->class_idx[i * k] = o.class_index;
                else top_classes(base + i * ncls, ncls, k, out->class_idx + i * k);
            }
        }
        fc.input = xp; /* a new pass: new addresses, so rep_of never matches a stale copy */
        for (int j = 0; j < k; j++) {
            for (int i = 0; i < pn; i++) cls_nb[i] = out->class_idx[((p0 + i) % batch) * k + j];
            double tb = cs_now_ms();
            if (cs_cam_method_uses_gradients(o.method)) {
                st = cs_session_backward(s, cls_nb, err);
                if (st != CS_OK) goto fail;
            }
            out->backward_ms += cs_now_ms() - tb;
            double tc = cs_now_ms();
            for (int l = 0; l < o.nlayers; l++) {
                const int64_t lhw = (int64_t)lh[l] * lw[l];
                float *raw = raws[l] + ((int64_t)j * nb + p0) * lhw;
                float *sc = l == 0 && scaled ? scaled + ((int64_t)j * nb + p0) * lhw : NULL;
                const float *a, *g;
                int64_t d[4];
                if (o.method == CS_CAM_METHOD_GRADCAM && !o.eigen_smooth) {
                    /* a GPU session computes the map where the tensors are and
                     * hands back n x h x w floats instead of two layers */
                    const float *map;
                    int64_t md[3];
                    cs_error gerr = {0};
                    if (cs_session_gradcam(s, o.layers[l], &map, md, &gerr) == CS_OK) {
                        memcpy(raw, map, (size_t)(pn * lhw) * sizeof(float));
                        if (sc) {
                            memcpy(sc, map, (size_t)(pn * lhw) * sizeof(float));
                            cs_cam_scale(sc, pn, (int)lhw);
                        }
                        continue;
                    }
                    if (gerr.code != CS_EUNSUPPORTED) {
                        if (err) *err = gerr;
                        st = gerr.code;
                        goto fail;
                    }
                }
                st = cs_session_layer(s, o.layers[l], &a, &g, d, err);
                if (st != CS_OK) goto fail;
                /* copies: ScoreCAM/AblationCAM run other plans on this session */
                memcpy(acts, a, (size_t)(pn * lsz[l]) * sizeof(float));
                if (g) memcpy(grads, g, (size_t)(pn * lsz[l]) * sizeof(float));
                cs_cam_forward cf = {.ctx = &fc, .score_inputs = score_inputs,
                                     .score_activations = score_activations, .input = xp,
                                     .in_c = (int)C, .in_h = (int)H, .in_w = (int)W, .class_idx = cls_nb};
                st = cs_cam_compute_ex(o.method, acts, g ? grads : NULL, pn, (int)d[1], lh[l], lw[l], &co,
                                       needs_fwd ? &cf : NULL, raw, sc, err);
                if (st != CS_OK) goto fail;
            }
            out->cam_ms += cs_now_ms() - tc;
        }
    }
    double tc = cs_now_ms();
    for (int j = 0; j < k; j++) {
        const float *rp[CS_EXPLAIN_MAX_LAYERS];
        for (int l = 0; l < o.nlayers; l++) rp[l] = raws[l] + (int64_t)j * nb * lh[l] * lw[l];
        st = cs_cam_aggregate(rp, lh, lw, o.nlayers, nb, (int)H, (int)W, tmp_in, err);
        if (st != CS_OK) goto fail;
        /* undo each variant's flip, then average (pytorch-grad-cam averages
         * the final maps of the variants without rescaling) */
        for (int a = 0; a < naug; a++)
            for (int i = 0; i < batch; i++) {
                float *mi = tmp_in + ((int64_t)a * batch + i) * H * W;
                if (AUG_FLIP[a] && naug > 1) flip_rows(mi, (int)H, (int)W);
                float *dst = out->maps_input + ((int64_t)i * k + j) * H * W;
                for (int64_t q = 0; q < H * W; q++) dst[q] += mi[q] / (float)naug;
                if (scaled) {
                    float *ml = scaled + ((int64_t)j * nb + (int64_t)a * batch + i) * lh[0] * lw[0];
                    if (AUG_FLIP[a] && naug > 1) flip_rows(ml, lh[0], lw[0]);
                    float *dl = out->maps_layer + ((int64_t)i * k + j) * lh[0] * lw[0];
                    for (int64_t q = 0; q < (int64_t)lh[0] * lw[0]; q++) dl[q] += ml[q] / (float)naug;
                }
            }
    }
    out->cam_ms += cs_now_ms() - tc;
    goto done;
oom:
    st = cs_errorf(err, CS_ENOMEM, "out of memory explaining");
fail:
    cs_explain_output_free(out);
done:
    free(aug);
    free(alllogits);
    free(acts);
    free(grads);
    free(scaled);
    free(tmp_in);
    free(fc.logits);
    free(fc.rep);
    for (int l = 0; l < CS_EXPLAIN_MAX_LAYERS; l++) free(raws[l]);
    return st;
}
