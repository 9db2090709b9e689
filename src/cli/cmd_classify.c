/* camserve classify: the no-gradient path — predictions only. */
#include "camserve/engine.h"
#include "camserve/npy.h"
#include "cli/cli.h"
#include "cli/input.h"
#include "cli/model_arg.h"
#include "util/files.h"

#include <jansson.h>
#include <stdbool.h>
#include <string.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* Indices of the k largest of x[0..n), best first. */
static void topk(const float *x, int64_t n, int k, int64_t *idx) {
    for (int j = 0; j < k; j++) idx[j] = -1;
    for (int64_t i = 0; i < n; i++) {
        int j = k;
        while (j > 0 && (idx[j - 1] < 0 || x[i] > x[idx[j - 1]])) j--;
        if (j >= k) continue;
        for (int t = k - 1; t > j; t--) idx[t] = idx[t - 1];
        idx[j] = i;
    }
}

void cli_softmax(const float *x, int64_t n, float *out) {
    float mx = x[0];
    for (int64_t i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += exp((double)(x[i] - mx));
    for (int64_t i = 0; i < n; i++) out[i] = (float)(exp((double)(x[i] - mx)) / sum);
}

json_t *cli_predictions_json(const float *logits, int64_t classes, int k, const cli_labels *labels) {
    float *prob = malloc((size_t)classes * sizeof(float));
    int64_t *idx = malloc((size_t)k * sizeof(int64_t));
    json_t *arr = json_array();
    if (!prob || !idx) goto done;
    cli_softmax(logits, classes, prob);
    topk(logits, classes, k, idx);
    for (int j = 0; j < k && idx[j] >= 0; j++) {
        const char *lab = cli_label(labels, idx[j]);
        /* overflowed logits have no probabilities: null (JSON has no NaN) */
        json_t *score = isfinite(prob[idx[j]]) ? json_real(prob[idx[j]]) : json_null();
        json_array_append_new(arr, json_pack("{s:I, s:s?, s:o}", "index", (json_int_t)idx[j],
                                             "label", lab, "score", score));
    }
done:
    free(prob);
    free(idx);
    return arr;
}

void cli_predictions_print(const json_t *preds) {
    size_t i;
    json_t *p;
    json_array_foreach(preds, i, p) {
        const char *lab = json_string_value(json_object_get(p, "label"));
        printf("  %5lld  %.4f  %s\n", (long long)json_integer_value(json_object_get(p, "index")),
               json_real_value(json_object_get(p, "score")), lab ? lab : "");
    }
}

/* What classify prints, and how many images it could not read. */
typedef struct classify_ctx {
    const cli_labels *labels;
    int k;
    bool json;
    int nbad, total;
} classify_ctx;

static void bad_image(void *vctx, const char *path, const cs_error *e) {
    classify_ctx *c = vctx;
    c->nbad++;
    fprintf(stderr, "camserve classify: %s: %s\n", path, e->msg);
    if (c->json) {
        json_t *o = json_pack("{s:s, s:s}", "image", path, "error", e->msg);
        json_dumpf(o, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
        fputc('\n', stdout);
        json_decref(o);
    }
}

static void print_predictions(const classify_ctx *c, const char *name, const float *logits, int64_t classes,
                              bool heading) {
    json_t *preds = cli_predictions_json(logits, classes, c->k, c->labels);
    if (c->json) {
        json_t *o = json_pack("{s:s?, s:o}", "image", name, "predictions", preds);
        json_dumpf(o, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
        fputc('\n', stdout);
        json_decref(o);
        return;
    }
    if (heading) printf("%s:\n", name ? name : "image");
    cli_predictions_print(preds);
    json_decref(preds);
}

int cs_cli_classify(int argc, char **argv) {
    cli_opt opts[] = {{"model", true},  {"image", true},       {"tensor", true},
                      {"labels", true}, {"topk", true},        {"json", false},
                      {"threads", true}, {"save-logits", true}, {"device", true},
                      {"precision", true}};
    const int nopts = 10;
    int rc = cli_parse("classify", argc, argv, opts, nopts), ok = 1;
    if (rc) return rc;
    int k = cli_int("classify", &opts[4], 5, &ok);
    int threads = cli_int("classify", &opts[6], 0, &ok);
    if (!ok) {
        cli_free(opts, nopts);
        return 2;
    }
    if (!opts[1].value == !opts[2].value) {
        fprintf(stderr, "camserve classify: give --image (files or folders) or --tensor\n");
        cli_free(opts, nopts);
        return 2;
    }
    cli_set_threads(threads);
    cs_error err = {0};
    cs_model *m = NULL;
    cs_session *s = NULL;
    cli_input in = {0};
    cli_labels labels = {0};
    cli_pool pool = {0};
    char **paths = NULL;
    int npaths = 0;
    float *logits = NULL, *saved = NULL;
    int64_t nsaved = 0;
    cs_model_options mo = {.num_threads = threads};
    rc = 1;
    if (cli_device_options(opts[8].value, opts[9].value, &mo, &err) != CS_OK) goto out;
    if (cli_load_model(opts[0].value, &mo, &m, &err) != CS_OK) goto out;
    if (cli_model_labels(m, opts[3].value, &labels, &err) != CS_OK) goto out;
    cs_model_info info;
    cs_model_get_info(m, &info);
    if (k > info.num_classes) k = (int)info.num_classes;
    classify_ctx c = {.labels = &labels, .k = k, .json = opts[5].value != NULL};
    if (cs_session_create(m, &s, &err) != CS_OK) goto out;
    const int64_t nc = info.num_classes;
    if (opts[2].value) { /* a tensor: one run over its batch */
        if (cli_input_load(m, NULL, &opts[1], &opts[2], &in, &err) != CS_OK) goto out;
        if (!(saved = malloc((size_t)(in.batch * nc) * sizeof(float)))) {
            cs_errorf(&err, CS_ENOMEM, "out of memory");
            goto out;
        }
        if (cs_session_run_padded(s, in.data, in.batch, saved, &err) != CS_OK) goto out;
        nsaved = in.batch;
        for (int b = 0; b < in.batch; b++) print_predictions(&c, NULL, saved + b * nc, nc, in.batch > 1);
    } else {
        /* images a chunk at a time, so memory stays flat for big folders
         * (--save-logits keeps every row); a bad file is reported and
         * skipped, and the exit status says so */
        if (cli_expand_paths(&opts[1], &paths, &npaths, &err) != CS_OK) goto out;
        if (npaths == 0) {
            cs_errorf(&err, CS_EINVAL, "no image files found");
            goto out;
        }
        if (cli_pool_open(m, threads, false, &pool, &err) != CS_OK) goto out;
        int chunk = cli_chunk_size(&info);
        c.total = npaths;
        for (int i = 0; i < npaths; i += chunk) {
            int n = npaths - i < chunk ? npaths - i : chunk;
            cli_input_free(&in);
            if (cli_input_paths(m, &pool, (const char *const *)paths + i, n, &in, bad_image, &c, &err) != CS_OK)
                goto out;
            if (in.batch == 0) continue;
            float *q = realloc(saved, (size_t)((nsaved + in.batch) * nc) * sizeof(float));
            if (!q) {
                cs_errorf(&err, CS_ENOMEM, "out of memory");
                goto out;
            }
            saved = q;
            logits = saved + nsaved * nc;
            if (cs_session_run_padded(s, in.data, in.batch, logits, &err) != CS_OK) goto out;
            for (int b = 0; b < in.batch; b++) print_predictions(&c, in.names[b], logits + b * nc, nc, true);
            fflush(stdout);
            nsaved += in.batch;
            if (!opts[7].value) nsaved = 0; /* only --save-logits keeps them */
        }
    }
    if (opts[7].value) {
        int64_t dims[2] = {nsaved, info.num_classes};
        if (cs_npy_save(opts[7].value, saved ? saved : (float[1]){0}, 2, dims, &err) != CS_OK) goto out;
    }
    rc = c.nbad ? 1 : 0;
    if (c.nbad) fprintf(stderr, "camserve classify: %d of %d image(s) could not be read\n", c.nbad, c.total);
out:
    if (rc && err.msg[0]) cli_fail("classify", &err);
    free(saved);
    cs_free_names(paths, npaths);
    cs_session_free(s);
    cli_input_free(&in);
    cli_pool_close(&pool);
    cli_labels_free(&labels);
    cs_model_free(m);
    cli_free(opts, nopts);
    return rc;
}
