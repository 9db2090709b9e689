/* camserve eval: accuracy of a model on a labelled folder, and how well its
 * explanations find the object (pointing game, energy in the mask,
 * deletion / insertion).  Layout and metrics: docs/models.md. */
#include "camserve/models.h"
#include "cli/cli.h"
#include "cli/input.h"
#include "cli/model_arg.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { O_MODEL, O_DATA, O_METHOD, O_LAYER, O_JSON, O_LIMIT, O_STEPS, O_THREADS, O_TOL, O_N };

static void progress(void *ctx, int done, int total) {
    (void)ctx;
    const int w = 30;
    int fill = total ? (int)((long)w * done / total) : w;
    fprintf(stderr, "\r  [%.*s%*s] %d/%d", fill, "##############################", w - fill, "", done,
            total);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
}

/* "gradcam,gradcam++" or "none" into o's methods. */
static cs_status parse_methods(const char *spec, cs_models_eval_options *o, cs_error *err) {
    o->nmethods = 0;
    if (!strcmp(spec, "none")) return CS_OK;
    char buf[512];
    if (strlen(spec) >= sizeof buf) return cs_errorf(err, CS_EINVAL, "--method list too long");
    strcpy(buf, spec);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (o->nmethods == CS_MODELS_EVAL_MAX_METHODS)
            return cs_errorf(err, CS_EINVAL, "at most %d methods", CS_MODELS_EVAL_MAX_METHODS);
        cs_status st = cs_cam_method_parse(t, &o->methods[o->nmethods], err);
        if (st != CS_OK) return st;
        o->nmethods++;
    }
    return CS_OK;
}

int cs_cli_eval(int argc, char **argv) {
    cli_opt opts[O_N] = {
        [O_MODEL] = {"model", true}, [O_DATA] = {"data", true},   [O_METHOD] = {"method", true},
        [O_LAYER] = {"layer", true}, [O_JSON] = {"json", false},  [O_LIMIT] = {"limit", true},
        [O_STEPS] = {"steps", true}, [O_THREADS] = {"threads", true}, [O_TOL] = {"tolerance", true},
    };
    int rc = cli_parse("eval", argc, argv, opts, O_N), ok = 1;
    if (rc) return rc;
    int limit = cli_int("eval", &opts[O_LIMIT], 0, &ok);
    int steps = cli_int("eval", &opts[O_STEPS], 10, &ok);
    int threads = cli_int("eval", &opts[O_THREADS], 0, &ok);
    if (ok && !opts[O_DATA].value) {
        fprintf(stderr, "camserve eval: --data DIR is required (layout: docs/models.md)\n");
        ok = 0;
    }
    if (ok && steps > 255) {
        fprintf(stderr, "camserve eval: --steps must be at most 255\n");
        ok = 0;
    }
    float tol = 0;
    if (ok && opts[O_TOL].value) {
        char *end;
        tol = strtof(opts[O_TOL].value, &end);
        if (*end || !(tol >= 0 && tol <= 1000)) {
            fprintf(stderr, "camserve eval: --tolerance must be a number of pixels >= 0\n");
            ok = 0;
        }
    }
    if (!ok) {
        cli_free(opts, O_N);
        return 2;
    }
    cli_set_threads(threads);
    cs_error err = {0};
    cs_model *m = NULL;
    cs_session *s = NULL;
    cli_labels labels = {0};
    cs_models_eval_set set = {0};
    cs_models_eval_result res = {0};
    cs_models_eval_options eo = cs_models_eval_default_options();
    cs_preproc pp;
    rc = 1;
    eo.limit = limit;
    eo.steps = steps;
    eo.tolerance = tol;
    if (isatty(2)) eo.progress = progress;
    if (opts[O_METHOD].value && parse_methods(opts[O_METHOD].value, &eo, &err) != CS_OK) goto out;
    cs_model_options mo = {.num_threads = threads};
    if (cli_load_model(opts[O_MODEL].value, &mo, &m, &err) != CS_OK) goto out;
    if (eo.nmethods && cs_explain_parse_layers(m, opts[O_LAYER].value, &eo.explain, &err) != CS_OK) goto out;
    if (cli_model_preproc(m, &pp, NULL, &err) != CS_OK) goto out;
    if (cli_model_labels(m, NULL, &labels, &err) != CS_OK) goto out;
    if (cs_models_eval_set_load(opts[O_DATA].value, (const char *const *)labels.names, labels.n, &set,
                                &err) != CS_OK)
        goto out;
    if (cs_session_create(m, &s, &err) != CS_OK) goto out;
    if (cs_models_eval_run(m, s, &pp, &set, &eo, &res, &err) != CS_OK) goto out;

    char layers[1024] = "";
    size_t off = 0;
    for (int l = 0; eo.nmethods && l < eo.explain.nlayers && off < sizeof layers; l++)
        off += (size_t)snprintf(layers + off, sizeof layers - off, "%s%s", l ? "," : "",
                                cs_model_layer_name(m, eo.explain.layers[l]));
    double acc = res.n ? (double)res.correct / res.n : 0, top5 = res.n ? (double)res.correct5 / res.n : 0;
    if (opts[O_JSON].value) {
        json_t *per = json_object(), *methods = json_array();
        for (int c = 0; c < res.nclasses; c++)
            if (res.class_n[c])
                json_object_set_new(per, set.class_names[c],
                                    json_pack("{s:i, s:f}", "n", res.class_n[c], "accuracy",
                                              (double)res.class_correct[c] / res.class_n[c]));
        for (int j = 0; j < res.nmethods; j++) {
            const cs_models_eval_method *r = &res.methods[j];
            /* without masks there is no pointing game or energy: null, not 0 */
            json_t *pg = r->n_masked ? json_real(r->pointing) : json_null(),
                   *en = r->n_masked ? json_real(r->energy) : json_null();
            json_array_append_new(methods,
                                  json_pack("{s:s, s:s, s:i, s:o, s:o, s:f, s:f}", "method",
                                            cs_cam_method_name(r->method), "layer", layers, "masked",
                                            r->n_masked, "pointing_game", pg, "energy_in_mask", en,
                                            "deletion_auc", r->deletion, "insertion_auc", r->insertion));
        }
        json_t *o = json_pack("{s:s, s:s, s:i, s:f, s:f, s:o, s:i, s:f, s:o, s:f}", "model",
                              cli_model_display(opts[O_MODEL].value), "data", opts[O_DATA].value,
                              "images", res.n, "accuracy", acc, "top5", top5, "per_class", per,
                              "steps", eo.steps, "pointing_tolerance", (double)tol, "methods",
                              methods, "seconds", res.seconds);
        json_dumpf(o, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
        fputc('\n', stdout);
        json_decref(o);
    } else {
        printf("model:    %s\ndata:     %s (%d images)\n", cli_model_display(opts[O_MODEL].value),
               opts[O_DATA].value, res.n);
        printf("accuracy: %.4f   top-5: %.4f\n", acc, top5);
        printf("per class:\n");
        for (int c = 0; c < res.nclasses; c++)
            if (res.class_n[c])
                printf("  %-24s %5d  %.4f\n", set.class_names[c], res.class_n[c],
                       (double)res.class_correct[c] / res.class_n[c]);
        if (res.nmethods) {
            printf("explanations at %s (the true class; pointing tolerance %g px; %d deletion/insertion steps):\n",
                   layers, (double)tol, eo.steps);
            printf("  %-20s %8s %10s %10s %10s %10s\n", "method", "masked", "pointing", "energy",
                   "deletion", "insertion");
            for (int j = 0; j < res.nmethods; j++) {
                const cs_models_eval_method *r = &res.methods[j];
                if (r->n_masked)
                    printf("  %-20s %8d %10.4f %10.4f %10.4f %10.4f\n", cs_cam_method_name(r->method),
                           r->n_masked, r->pointing, r->energy, r->deletion, r->insertion);
                else
                    printf("  %-20s %8d %10s %10s %10.4f %10.4f\n", cs_cam_method_name(r->method), 0, "-", "-",
                           r->deletion, r->insertion);
            }
        }
        printf("time:     %.1f s\n", res.seconds);
    }
    rc = 0;
out:
    if (rc) cli_fail("eval", &err);
    cs_models_eval_result_free(&res);
    cs_models_eval_set_free(&set);
    cs_session_free(s);
    cli_labels_free(&labels);
    cs_model_free(m);
    cli_free(opts, O_N);
    return rc;
}
