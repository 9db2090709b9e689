/* camserve explain: predictions plus a class activation map per image. */
#include "camserve/explain.h"
#include "camserve/npy.h"
#include "cli/cli.h"
#include "cli/input.h"
#include "util/files.h"
#include "cli/model_arg.h"

#include <errno.h>
#include <stdbool.h>
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { O_MODEL, O_IMAGE, O_TENSOR, O_METHOD, O_LAYER, O_CLASS, O_OUT, O_JSON, O_SAVECAM,
       O_CAMSIZE, O_AUG, O_EIGEN, O_CMAP, O_ALPHA, O_THREADS, O_LABELS, O_TOPK, O_BATCHSZ, O_DEVICE, O_PRECISION, O_N };

static cs_status write_file(const char *path, const uint8_t *buf, size_t len, cs_error *err) {
    FILE *f = fopen(path, "wb");
    if (!f) return cs_errorf(err, CS_EIO, "cannot create %s: %s", path, strerror(errno));
    int ok = fwrite(buf, 1, len, f) == len;
    if (fclose(f) != 0) ok = 0;
    return ok ? CS_OK : cs_errorf(err, CS_EIO, "write failed on %s", path);
}

static cs_status save_png(const cs_image *img, const char *path, cs_error *err) {
    uint8_t *buf = NULL;
    size_t len = 0;
    cs_status st = cs_img_encode(img, CS_IMG_FORMAT_PNG, 0, &buf, &len, err);
    if (st == CS_OK) st = write_file(path, buf, len, err);
    free(buf);
    return st;
}

/* <dir>/<image basename without extension>[.<class>] */
static void out_stem(char *dst, size_t len, const char *dir, const char *image, int cls, int k) {
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", image ? image : "tensor");
    char *b = basename(tmp), *dot = strrchr(b, '.');
    if (dot && dot != b) *dot = '\0';
    if (k > 1) snprintf(dst, len, "%s/%s.%d", dir, b, cls);
    else snprintf(dst, len, "%s/%s", dir, b);
}

/* ---- one run over a batch of inputs ------------------------------------------- */

typedef struct run_ctx {
    const cs_model *m;
    cs_session *s;
    cs_explain_options eo;
    cli_labels labels;
    cs_img_colormap cmap;
    float alpha;
    int topk;
    bool json, at_input_req;
    const char *outdir;
    FILE *report;        /* <out>/report.jsonl, or NULL */
    float *saved;        /* --save-cam: every map so far */
    int64_t nsaved, cap_saved;
    int mh, mw;
    int nbad, ndone, total;
    bool progress;       /* a bar on stderr (a terminal) */
    bool fwd_progress;   /* ScoreCAM's / AblationCAM's percentage on it too */
    int fwd_pct;         /* the percentage shown, or -1 */
    cli_pool pool;       /* decodes the images, encodes the overlays */
} run_ctx;

static void emit(run_ctx *c, json_t *o) {
    if (c->json) {
        json_dumpf(o, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
        fputc('\n', stdout);
        fflush(stdout);
    }
    if (c->report) {
        json_dumpf(o, c->report, JSON_COMPACT | JSON_PRESERVE_ORDER);
        fputc('\n', c->report);
    }
}

static void progress(run_ctx *c) {
    if (!c->progress || c->total <= 0) return;
    int w = 30, f = (int)((int64_t)w * c->ndone / c->total);
    fprintf(stderr, "\r[%.*s%*s] %d/%d", f, "##############################", w - f, "", c->ndone, c->total);
    if (c->fwd_pct >= 0) fprintf(stderr, ", %s %d%%", cs_cam_method_name(c->eo.method), c->fwd_pct);
    if (c->ndone == c->total) fputc('\n', stderr);
    fflush(stderr);
}

/* ScoreCAM's forward passes take up to a minute per image on a CPU: the
 * share done so far goes on the terminal's progress line (explain's cancel
 * hook, which here never cancels). */
static int forward_progress(void *ctx, double done) {
    run_ctx *c = ctx;
    int pct = (int)(100 * done);
    if (pct != c->fwd_pct) {
        c->fwd_pct = pct;
        if (c->progress) {
            progress(c); /* flushes */
        } else {
            fprintf(stderr, "\r%s %d%%", cs_cam_method_name(c->eo.method), pct);
            fflush(stderr);
        }
    }
    return 0;
}

static void bad_image(void *vctx, const char *path, const cs_error *e) {
    run_ctx *c = vctx;
    c->nbad++;
    c->ndone++;
    if (c->progress) fputc('\n', stderr);
    fprintf(stderr, "camserve explain: %s: %s\n", path, e->msg);
    json_t *o = json_pack("{s:s, s:s}", "image", path, "error", e->msg);
    emit(c, o);
    json_decref(o);
    progress(c);
}

typedef struct encode_batch {
    run_ctx *c;
    const cli_input *in;
    const cs_explain_output *ex;
    cs_status *st;  /* per task: image t / k, class t % k */
    cs_error *errs;
    double *ms;
} encode_batch;

/* A team task: the heatmap and overlay PNGs of one image and class. */
static void encode_one(void *arg, int t) {
    encode_batch *b = arg;
    const cs_explain_output *ex = b->ex;
    const cli_input *in = b->in;
    int i = t / ex->k;
    double t0 = cs_now_ms();
    const float *mi = ex->maps_input + (int64_t)t * ex->in_h * ex->in_w;
    char stem[1200], path[1300];
    out_stem(stem, sizeof stem, b->c->outdir, in->names ? in->names[i] : NULL, ex->class_idx[t], ex->k);
    cs_image heat = {0}, over = {0};
    cs_error *err = &b->errs[t];
    cs_status st = cs_img_heatmap(mi, ex->in_h, ex->in_w, ex->in_w, ex->in_h, b->c->cmap, &heat, err);
    snprintf(path, sizeof path, "%s.heatmap.png", stem);
    if (st == CS_OK) st = save_png(&heat, path, err);
    if (st == CS_OK && in->images) {
        st = cs_img_overlay(&in->images[i], mi, ex->in_h, ex->in_w, in->info[i].box, b->c->cmap, b->c->alpha,
                            800, &over, err);
        snprintf(path, sizeof path, "%s.overlay.png", stem);
        if (st == CS_OK) st = save_png(&over, path, err);
    }
    cs_img_free(&heat);
    cs_img_free(&over);
    b->ms[t] = cs_now_ms() - t0;
    b->st[t] = st;
}

static cs_status run_batch(run_ctx *c, cli_input *in, cs_error *err) {
    if (in->batch == 0) return CS_OK;
    cs_explain_output ex;
    cs_explain_options eo = c->eo;
    if (c->fwd_progress) {
        eo.cancel = forward_progress;
        eo.cancel_ctx = c;
    }
    cs_status st = cs_explain_run(c->s, c->m, in->data, in->batch, &eo, &ex, err);
    if (c->fwd_pct >= 0) { /* the percentage goes: the line blanked, the bar (if any) redrawn */
        c->fwd_pct = -1;
        fprintf(stderr, "\r%60s\r", "");
        progress(c);
    }
    if (st != CS_OK) return st;
    bool at_input = c->at_input_req || !ex.maps_layer;
    c->mh = at_input ? ex.in_h : ex.layer_h;
    c->mw = at_input ? ex.in_w : ex.layer_w;
    const float *maps = at_input ? ex.maps_input : ex.maps_layer;
    int64_t nm = (int64_t)ex.batch * ex.k, msz = (int64_t)c->mh * c->mw;
    if (c->cap_saved >= 0) { /* --save-cam collects every map */
        if (c->nsaved + nm > c->cap_saved) {
            int64_t cap = (c->nsaved + nm) * 2;
            float *q = realloc(c->saved, (size_t)(cap * msz) * sizeof(float));
            if (!q) {
                cs_explain_output_free(&ex);
                return cs_errorf(err, CS_ENOMEM, "out of memory");
            }
            c->saved = q;
            c->cap_saved = cap;
        }
        memcpy(c->saved + c->nsaved * msz, maps, (size_t)(nm * msz) * sizeof(float));
        c->nsaved += nm;
    }
    /* every (image, class) pair's PNGs at once, over the pool's team; what
     * failed first in image order ends the run after the images before it */
    int nenc = c->outdir ? ex.batch * ex.k : 0;
    encode_batch eb = {.c = c, .in = in, .ex = &ex, .st = calloc((size_t)nenc + 1, sizeof(cs_status)),
                       .errs = calloc((size_t)nenc + 1, sizeof(cs_error)),
                       .ms = calloc((size_t)nenc + 1, sizeof(double))};
    if (!eb.st || !eb.errs || !eb.ms) st = cs_errorf(err, CS_ENOMEM, "out of memory");
    else cs_team_run(c->pool.team, nenc, encode_one, &eb);
    for (int i = 0; i < ex.batch && st == CS_OK; i++) {
        double enc_ms = 0;
        for (int t = i * ex.k; t < (i + 1) * ex.k && t < nenc && st == CS_OK; t++) {
            enc_ms += eb.ms[t];
            if ((st = eb.st[t]) != CS_OK && err) *err = eb.errs[t];
        }
        if (st != CS_OK) break;
        json_t *preds = cli_predictions_json(ex.logits + i * ex.num_classes, ex.num_classes,
                                             c->topk < ex.num_classes ? c->topk : (int)ex.num_classes,
                                             &c->labels);
        json_t *cams = json_array();
        char layers[2048] = "";
        size_t off = 0;
        for (int l = 0; l < c->eo.nlayers && off < sizeof layers; l++)
            off += (size_t)snprintf(layers + off, sizeof layers - off, "%s%s", l ? "," : "",
                                    cs_model_layer_name(c->m, c->eo.layers[l]));
        for (int j = 0; j < ex.k; j++) {
            int cl = ex.class_idx[i * ex.k + j];
            json_array_append_new(cams, json_pack("{s:s, s:s, s:i, s:s?, s:i, s:i}", "method",
                                                  cs_cam_method_name(c->eo.method), "layer", layers,
                                                  "class_index", cl, "label", cli_label(&c->labels, cl),
                                                  "height", c->mh, "width", c->mw));
        }
        if (c->json || c->report) {
            const cli_image_info *inf = in->info ? &in->info[i] : &(cli_image_info){0};
            json_t *timings = json_pack("{s:f, s:f, s:f, s:f, s:f}", "decode", inf->decode_ms,
                                        "preprocess", inf->preprocess_ms, "forward",
                                        ex.forward_ms / ex.batch, "cam",
                                        (ex.backward_ms + ex.cam_ms) / ex.batch, "encode", enc_ms);
            json_t *o = json_pack("{s:s?, s:O, s:O, s:o}", "image", in->names ? in->names[i] : NULL,
                                  "predictions", preds, "cam",
                                  ex.k == 1 ? json_array_get(cams, 0) : cams, "timings_ms", timings);
            emit(c, o);
            json_decref(o);
        }
        if (!c->json) {
            if (c->progress) fputc('\n', stderr);
            printf("%s:\n", in->names ? in->names[i] : "image");
            cli_predictions_print(preds);
            for (int j = 0; j < ex.k; j++) {
                int cl = ex.class_idx[i * ex.k + j];
                const char *lab = cli_label(&c->labels, cl);
                printf("  %s map for class %d%s%s at %s (%dx%d)\n", cs_cam_method_name(c->eo.method), cl,
                       lab ? " " : "", lab ? lab : "", layers, c->mh, c->mw);
            }
            fflush(stdout);
        }
        json_decref(preds);
        json_decref(cams);
        c->ndone++;
        progress(c);
    }
    if (!c->json && st == CS_OK)
        printf("timings (%d image%s): forward %.1f ms, cam %.1f ms (backward %.1f)\n", ex.batch,
               ex.batch > 1 ? "s" : "", ex.forward_ms, ex.backward_ms + ex.cam_ms, ex.backward_ms);
    free(eb.st);
    free(eb.errs);
    free(eb.ms);
    cs_explain_output_free(&ex);
    return st;
}

int cs_cli_explain(int argc, char **argv) {
    cli_opt opts[O_N] = {
        [O_MODEL] = {"model", true},     [O_IMAGE] = {"image", true},
        [O_TENSOR] = {"tensor", true},   [O_METHOD] = {"method", true},
        [O_LAYER] = {"layer", true},     [O_CLASS] = {"class", true},
        [O_OUT] = {"out", true},         [O_JSON] = {"json", false},
        [O_SAVECAM] = {"save-cam", true}, [O_CAMSIZE] = {"cam-size", true},
        [O_AUG] = {"aug-smooth", false}, [O_EIGEN] = {"eigen-smooth", false},
        [O_CMAP] = {"colormap", true},   [O_ALPHA] = {"alpha", true},
        [O_THREADS] = {"threads", true}, [O_LABELS] = {"labels", true},
        [O_TOPK] = {"topk", true},       [O_BATCHSZ] = {"batch-size", true},
        [O_DEVICE] = {"device", true},   [O_PRECISION] = {"precision", true},
    };
    int rc = cli_parse("explain", argc, argv, opts, O_N), ok = 1;
    if (rc) return rc;
    int threads = cli_int("explain", &opts[O_THREADS], 0, &ok);
    int topk = cli_int("explain", &opts[O_TOPK], 5, &ok);
    int bsz = cli_int("explain", &opts[O_BATCHSZ], 0, &ok);
    if (!ok) goto usage;
    if (!opts[O_IMAGE].value == !opts[O_TENSOR].value) {
        fprintf(stderr, "camserve explain: give --image (files or folders) or --tensor\n");
        goto usage;
    }
    const char *camsize = opts[O_CAMSIZE].value ? opts[O_CAMSIZE].value : "layer";
    if (strcmp(camsize, "layer") && strcmp(camsize, "input")) {
        fprintf(stderr, "camserve explain: --cam-size must be layer or input\n");
        goto usage;
    }
    float alpha = opts[O_ALPHA].value ? strtof(opts[O_ALPHA].value, NULL) : 0.5f;
    if (!(alpha >= 0.f && alpha <= 1.f)) {
        fprintf(stderr, "camserve explain: --alpha must be in [0, 1]\n");
        goto usage;
    }
    cli_set_threads(threads);

    cs_error err = {0};
    cs_model *m = NULL;
    char **paths = NULL;
    int npaths = 0;
    cli_input in = {0};
    run_ctx c = {.cmap = CS_IMG_CMAP_JET, .alpha = alpha, .topk = topk, .json = opts[O_JSON].value != NULL,
                 .at_input_req = !strcmp(camsize, "input"), .outdir = opts[O_OUT].value,
                 .cap_saved = opts[O_SAVECAM].value ? 0 : -1, .fwd_pct = -1};
    c.eo = cs_explain_default_options();
    rc = 1;
    if (opts[O_METHOD].value && cs_cam_method_parse(opts[O_METHOD].value, &c.eo.method, &err) != CS_OK)
        goto out;
    if (opts[O_CMAP].value && cs_img_colormap_parse(opts[O_CMAP].value, &c.cmap, &err) != CS_OK) goto out;
    c.eo.aug_smooth = opts[O_AUG].value != NULL;
    c.eo.eigen_smooth = opts[O_EIGEN].value != NULL;
    c.eo.batch_size = bsz;
    c.fwd_progress = isatty(2) && cs_cam_method_needs_forward(c.eo.method);
    cs_model_options mo = {.num_threads = threads};
    if (cli_device_options(opts[O_DEVICE].value, opts[O_PRECISION].value, &mo, &err) != CS_OK) goto out;
    if (cli_load_model(opts[O_MODEL].value, &mo, &m, &err) != CS_OK) goto out;
    c.m = m;
    if (cs_explain_parse_layers(m, opts[O_LAYER].value, &c.eo, &err) != CS_OK) goto out;
    if (cli_model_labels(m, opts[O_LABELS].value, &c.labels, &err) != CS_OK) goto out;
    if (cs_explain_parse_class(opts[O_CLASS].value, c.labels.names, c.labels.n, &c.eo, &err) != CS_OK) goto out;
    if (cs_session_create(m, &c.s, &err) != CS_OK) goto out;
    if (c.outdir) {
        if (mkdir(c.outdir, 0755) != 0 && errno != EEXIST) {
            cs_errorf(&err, CS_EIO, "cannot create %s: %s", c.outdir, strerror(errno));
            goto out;
        }
        char rp[1200];
        snprintf(rp, sizeof rp, "%s/report.jsonl", c.outdir);
        if (!(c.report = fopen(rp, "w"))) {
            cs_errorf(&err, CS_EIO, "cannot create %s: %s", rp, strerror(errno));
            goto out;
        }
    }
    if (cli_pool_open(m, threads, c.outdir != NULL, &c.pool, &err) != CS_OK) goto out;
    if (opts[O_TENSOR].value) {
        if (cli_input_load(m, &c.pool, &opts[O_IMAGE], &opts[O_TENSOR], &in, &err) != CS_OK) goto out;
        if (run_batch(&c, &in, &err) != CS_OK) goto out;
    } else {
        /* images a chunk at a time, so memory stays flat for big folders;
         * a bad file is reported and skipped, and the exit status says so */
        if (cli_expand_paths(&opts[O_IMAGE], &paths, &npaths, &err) != CS_OK) goto out;
        if (npaths == 0) {
            cs_errorf(&err, CS_EINVAL, "no image files found");
            goto out;
        }
        cs_model_info info;
        cs_model_get_info(m, &info);
        int chunk = cli_chunk_size(&info);
        c.total = npaths;
        c.progress = isatty(2) && npaths > 1;
        for (int i = 0; i < npaths; i += chunk) {
            int n = npaths - i < chunk ? npaths - i : chunk;
            cli_input_free(&in);
            if (cli_input_paths(m, &c.pool, (const char *const *)paths + i, n, &in, bad_image, &c, &err) != CS_OK)
                goto out;
            if (run_batch(&c, &in, &err) != CS_OK) goto out;
        }
    }
    if (opts[O_SAVECAM].value) {
        int64_t dims[3] = {c.nsaved, c.mh, c.mw};
        if (cs_npy_save(opts[O_SAVECAM].value, c.saved ? c.saved : (float[1]){0}, 3, dims, &err) != CS_OK)
            goto out;
    }
    rc = c.nbad ? 1 : 0;
    if (c.nbad) fprintf(stderr, "camserve explain: %d of %d image(s) could not be read\n", c.nbad, c.total);
out:
    if (rc && err.msg[0]) cli_fail("explain", &err);
    if (c.report) fclose(c.report);
    free(c.saved);
    cs_free_names(paths, npaths);
    cs_session_free(c.s);
    cli_input_free(&in);
    cli_pool_close(&c.pool);
    cli_labels_free(&c.labels);
    cs_model_free(m);
    cli_free(opts, O_N);
    return rc;
usage:
    cli_free(opts, O_N);
    return 2;
}
