/* camserve classify: the no-gradient path — predictions only. */
#include "camserve/engine.h"
#include "camserve/npy.h"
#include "cli/cli.h"
#include "cli/input.h"
#include "cli/model_arg.h"

#include <jansson.h>
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
    if (!opts[1].value && !opts[2].value) {
        fprintf(stderr, "camserve classify: one of --image / --tensor is required\n");
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
    float *logits = NULL;
    cs_model_options mo = {.num_threads = threads};
    rc = 1;
    if (cli_device_options(opts[8].value, opts[9].value, &mo, &err) != CS_OK) goto out;
    if (cli_load_model(opts[0].value, &mo, &m, &err) != CS_OK) goto out;
    if (cli_pool_open(m, threads, false, &pool, &err) != CS_OK) goto out;
    if (cli_input_load(m, &pool, &opts[1], &opts[2], &in, &err) != CS_OK) goto out;
    if (cli_model_labels(m, opts[3].value, &labels, &err) != CS_OK) goto out;
    cs_model_info info;
    cs_model_get_info(m, &info);
    if (k > info.num_classes) k = (int)info.num_classes;
    logits = malloc((size_t)(in.batch * info.num_classes) * sizeof(float));
    if (!logits) {
        cs_errorf(&err, CS_ENOMEM, "out of memory");
        goto out;
    }
    if (cs_session_create(m, &s, &err) != CS_OK) goto out;
    /* a model exported with a fixed batch takes its images that many at a time */
    int step = info.input_dims[0] > 0 ? (int)info.input_dims[0] : in.batch;
    int64_t per = info.input_dims[1] * info.input_dims[2] * info.input_dims[3];
    for (int b = 0; b < in.batch; b += step)
        if (cs_session_run(s, in.data + b * per, step, logits + b * info.num_classes, &err) != CS_OK)
            goto out;
    if (opts[7].value) {
        int64_t dims[2] = {in.batch, info.num_classes};
        if (cs_npy_save(opts[7].value, logits, 2, dims, &err) != CS_OK) goto out;
    }
    for (int b = 0; b < in.batch; b++) {
        json_t *preds = cli_predictions_json(logits + b * info.num_classes, info.num_classes, k, &labels);
        if (opts[5].value) {
            json_t *o = json_pack("{s:s?, s:o}", "image", in.names ? in.names[b] : NULL,
                                  "predictions", preds);
            json_dumpf(o, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
            fputc('\n', stdout);
            json_decref(o);
        } else {
            if (in.batch > 1 || in.names) printf("%s:\n", in.names ? in.names[b] : "image");
            size_t i;
            json_t *p;
            json_array_foreach(preds, i, p) {
                const char *lab = json_string_value(json_object_get(p, "label"));
                printf("  %5lld  %.4f  %s\n", (long long)json_integer_value(json_object_get(p, "index")),
                       json_real_value(json_object_get(p, "score")), lab ? lab : "");
            }
            json_decref(preds);
        }
    }
    rc = 0;
out:
    if (rc) cli_fail("classify", &err);
    free(logits);
    cs_session_free(s);
    cli_input_free(&in);
    cli_pool_close(&pool);
    cli_labels_free(&labels);
    cs_model_free(m);
    cli_free(opts, nopts);
    return rc;
}
