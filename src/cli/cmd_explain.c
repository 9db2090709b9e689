/* camserve explain: predictions plus a class activation map per image. */
#include "camserve/explain.h"
#include "camserve/npy.h"
#include "cli/cli.h"
#include "cli/input.h"
#include "cli/model_arg.h"

#include <errno.h>
#include <stdbool.h>
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { O_MODEL, O_IMAGE, O_TENSOR, O_METHOD, O_LAYER, O_CLASS, O_OUT, O_JSON, O_SAVECAM,
       O_CAMSIZE, O_AUG, O_EIGEN, O_CMAP, O_ALPHA, O_THREADS, O_LABELS, O_TOPK, O_BATCHSZ, O_N };

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
    };
    int rc = cli_parse("explain", argc, argv, opts, O_N), ok = 1;
    if (rc) return rc;
    int threads = cli_int("explain", &opts[O_THREADS], 0, &ok);
    int topk = cli_int("explain", &opts[O_TOPK], 5, &ok);
    int bsz = cli_int("explain", &opts[O_BATCHSZ], 0, &ok);
    if (!ok) goto usage;
    if (!opts[O_IMAGE].value && !opts[O_TENSOR].value) {
        fprintf(stderr, "camserve explain: one of --image / --tensor is required\n");
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
    cs_session *s = NULL;
    cli_input in = {0};
    cli_labels labels = {0};
    cs_explain_output ex = {0};
    cs_img_colormap cmap = CS_IMG_CMAP_JET;
    cs_explain_options eo = cs_explain_default_options();
    rc = 1;
    double t_start = cs_now_ms();
    if (opts[O_METHOD].value && cs_cam_method_parse(opts[O_METHOD].value, &eo.method, &err) != CS_OK)
        goto out;
    if (opts[O_CMAP].value && cs_img_colormap_parse(opts[O_CMAP].value, &cmap, &err) != CS_OK) goto out;
    if (cs_explain_parse_class(opts[O_CLASS].value, &eo, &err) != CS_OK) goto out;
    eo.aug_smooth = opts[O_AUG].value != NULL;
    eo.eigen_smooth = opts[O_EIGEN].value != NULL;
    eo.batch_size = bsz;
    cs_model_options mo = {.num_threads = threads};
    if (cli_load_model(opts[O_MODEL].value, &mo, &m, &err) != CS_OK) goto out;
    if (cs_explain_parse_layers(m, opts[O_LAYER].value, &eo, &err) != CS_OK) goto out;
    if (cli_input_load(m, &opts[O_IMAGE], &opts[O_TENSOR], &in, &err) != CS_OK) goto out;
    if (cli_model_labels(m, opts[O_LABELS].value, &labels, &err) != CS_OK) goto out;
    if (cs_session_create(m, &s, &err) != CS_OK) goto out;
    if (cs_explain_run(s, m, in.data, in.batch, &eo, &ex, &err) != CS_OK) goto out;

    bool at_input = !strcmp(camsize, "input") || !ex.maps_layer;
    int mh = at_input ? ex.in_h : ex.layer_h, mw = at_input ? ex.in_w : ex.layer_w;
    const float *maps = at_input ? ex.maps_input : ex.maps_layer;
    if (opts[O_SAVECAM].value) {
        int64_t dims[3] = {(int64_t)ex.batch * ex.k, mh, mw};
        if (cs_npy_save(opts[O_SAVECAM].value, maps, 3, dims, &err) != CS_OK) goto out;
    }
    double t_enc = cs_now_ms();
    if (opts[O_OUT].value) {
        const char *dir = opts[O_OUT].value;
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
            cs_errorf(&err, CS_EIO, "cannot create %s: %s", dir, strerror(errno));
            goto out;
        }
        for (int i = 0; i < ex.batch; i++)
            for (int j = 0; j < ex.k; j++) {
                const float *mi = ex.maps_input + ((int64_t)i * ex.k + j) * ex.in_h * ex.in_w;
                char stem[1200], path[1300];
                out_stem(stem, sizeof stem, dir, in.names ? in.names[i] : NULL, ex.class_idx[i * ex.k + j], ex.k);
                cs_image heat = {0}, over = {0};
                cs_status st = cs_img_heatmap(mi, ex.in_h, ex.in_w, ex.in_w, ex.in_h, cmap, &heat, &err);
                snprintf(path, sizeof path, "%s.heatmap.png", stem);
                if (st == CS_OK) st = save_png(&heat, path, &err);
                if (st == CS_OK && in.images) {
                    float box[4];
                    cs_img_preproc_crop_box(&in.pp, &in.images[i], box);
                    st = cs_img_overlay(&in.images[i], mi, ex.in_h, ex.in_w, box, cmap, alpha, 800, &over, &err);
                    snprintf(path, sizeof path, "%s.overlay.png", stem);
                    if (st == CS_OK) st = save_png(&over, path, &err);
                }
                cs_img_free(&heat);
                cs_img_free(&over);
                if (st != CS_OK) goto out;
            }
    }
    double enc_ms = cs_now_ms() - t_enc, total_ms = cs_now_ms() - t_start;

    for (int i = 0; i < ex.batch; i++) {
        json_t *preds = cli_predictions_json(ex.logits + i * ex.num_classes, ex.num_classes,
                                             topk < ex.num_classes ? topk : (int)ex.num_classes, &labels);
        json_t *cams = json_array();
        for (int j = 0; j < ex.k; j++) {
            int c = ex.class_idx[i * ex.k + j];
            char layers[2048] = "";
            size_t off = 0;
            for (int l = 0; l < eo.nlayers && off < sizeof layers; l++)
                off += (size_t)snprintf(layers + off, sizeof layers - off, "%s%s", l ? "," : "",
                                        cs_model_layer_name(m, eo.layers[l]));
            json_array_append_new(cams, json_pack("{s:s, s:s, s:i, s:s?, s:i, s:i}", "method",
                                                  cs_cam_method_name(eo.method), "layer", layers,
                                                  "class_index", c, "label", cli_label(&labels, c),
                                                  "height", mh, "width", mw));
        }
        if (opts[O_JSON].value) {
            json_t *timings = json_pack("{s:f, s:f, s:f, s:f, s:f, s:f}", "decode", in.decode_ms / in.batch,
                                        "preprocess", in.preprocess_ms / in.batch, "forward",
                                        ex.forward_ms, "cam", ex.backward_ms + ex.cam_ms, "encode",
                                        enc_ms, "total", total_ms);
            json_t *o = json_pack("{s:s?, s:o, s:o, s:o}", "image", in.names ? in.names[i] : NULL,
                                  "predictions", preds, "cam",
                                  ex.k == 1 ? json_incref(json_array_get(cams, 0)) : json_incref(cams),
                                  "timings_ms", timings);
            json_dumpf(o, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
            fputc('\n', stdout);
            json_decref(o);
        } else {
            printf("%s:\n", in.names ? in.names[i] : "image");
            size_t q;
            json_t *p;
            json_array_foreach(preds, q, p) {
                const char *lab = json_string_value(json_object_get(p, "label"));
                printf("  %5lld  %.4f  %s\n", (long long)json_integer_value(json_object_get(p, "index")),
                       json_real_value(json_object_get(p, "score")), lab ? lab : "");
            }
            for (int j = 0; j < ex.k; j++) {
                int c = ex.class_idx[i * ex.k + j];
                const char *lab = cli_label(&labels, c);
                printf("  %s map for class %d%s%s at %s (%dx%d)\n", cs_cam_method_name(eo.method), c,
                       lab ? " " : "", lab ? lab : "", cs_model_layer_name(m, eo.layers[0]), mh, mw);
            }
            json_decref(preds);
        }
        json_decref(cams);
    }
    if (!opts[O_JSON].value)
        printf("timings: forward %.1f ms, cam %.1f ms (backward %.1f), total %.1f ms\n", ex.forward_ms,
               ex.backward_ms + ex.cam_ms, ex.backward_ms, total_ms);
    rc = 0;
out:
    if (rc) cli_fail("explain", &err);
    cs_explain_output_free(&ex);
    cs_session_free(s);
    cli_input_free(&in);
    cli_labels_free(&labels);
    cs_model_free(m);
    cli_free(opts, O_N);
    return rc;
usage:
    cli_free(opts, O_N);
    return 2;
}
