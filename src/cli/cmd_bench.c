/* camserve bench: per-stage timings as JSON, for bench/ scripts to compare
 * against the peers in the same run.  Not a test: nothing here asserts. */
#include "camserve/cam.h"
#include "camserve/cuda.h"
#include "camserve/engine.h"
#include "camserve/explain.h"
#include "cli/cli.h"
#include "cli/input.h"
#include "cli/model_arg.h"

#include <jansson.h>
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static json_t *stage_json(double *t, int n) {
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    double med = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
    return json_pack("{s:f, s:f, s:f}", "median_ms", med, "min_ms", t[0], "max_ms", t[n - 1]);
}

/* One GradCAM at `layer`, top-1 class per image, t[i] per iteration: the
 * device computes the map where it can (cs_session_gradcam), else src/cam
 * does from the layer; then the map is min-max scaled, as the peers do. */
static cs_status bench_gradcam_map(cs_session *s, const cs_model *m, const float *x, int batch, int layer,
                                   int warmup, int iters, double *t, cs_error *err) {
    cs_model_info info;
    cs_model_get_info(m, &info);
    int ncls = (int)info.num_classes;
    int64_t ld[4];
    cs_model_layer_dims(m, layer, ld);
    const size_t hw = (size_t)(ld[2] * ld[3]);
    float *logits = malloc((size_t)(batch * ncls) * sizeof(float)), *raw = malloc(batch * hw * sizeof(float));
    int *cls = malloc((size_t)batch * sizeof(int));
    cs_status st = logits && raw && cls ? CS_OK : cs_errorf(err, CS_ENOMEM, "out of memory");
    for (int i = -warmup; i < iters && st == CS_OK; i++) {
        double a = cs_now_ms();
        st = cs_session_forward_keep(s, x, batch, &layer, 1, logits, err);
        for (int b = 0; b < batch && st == CS_OK; b++) {
            cls[b] = 0;
            for (int c = 1; c < ncls; c++)
                if (logits[b * ncls + c] > logits[b * ncls + cls[b]]) cls[b] = c;
        }
        if (st == CS_OK) st = cs_session_backward(s, cls, err);
        if (st == CS_OK) {
            const float *map;
            int64_t md[3];
            cs_error gerr = {0};
            cs_status gs = cs_session_gradcam(s, layer, &map, md, &gerr);
            if (gs == CS_OK) {
                memcpy(raw, map, batch * hw * sizeof(float)); /* the session's buffer */
            } else if (gs == CS_EUNSUPPORTED) {              /* the CPU backend */
                const float *act, *grad;
                int64_t d[4];
                st = cs_session_layer(s, layer, &act, &grad, d, err);
                if (st == CS_OK)
                    st = cs_cam_compute_raw(CS_CAM_METHOD_GRADCAM, act, grad, batch, (int)d[1], (int)d[2], (int)d[3],
                                            NULL, raw, err);
            } else {
                *err = gerr;
                st = gs;
            }
        }
        if (st == CS_OK) cs_cam_scale(raw, batch, (int)hw);
        if (st == CS_OK && i >= 0) t[i] = cs_now_ms() - a;
    }
    free(logits);
    free(raw);
    free(cls);
    return st;
}

int cs_cli_bench(int argc, char **argv) {
    cli_opt opts[] = {{"model", true}, {"image", true},   {"tensor", true}, {"batch", true},
                      {"iters", true}, {"warmup", true},  {"threads", true}, {"json", false},
                      {"method", true}, {"layer", true}, {"device", true}, {"precision", true}};
    const int nopts = 12;
    int rc = cli_parse("bench", argc, argv, opts, nopts), ok = 1;
    if (rc) return rc;
    int batch = cli_int("bench", &opts[3], 0, &ok);
    int iters = cli_int("bench", &opts[4], 20, &ok);
    int warmup = cli_int("bench", &opts[5], 3, &ok);
    int threads = cli_int("bench", &opts[6], 0, &ok);
    if (!ok || (!opts[1].value && !opts[2].value)) {
        if (ok) fprintf(stderr, "camserve bench: one of --image / --tensor is required\n");
        cli_free(opts, nopts);
        return 2;
    }
    cli_set_threads(threads);
    cs_error err = {0};
    cs_model *m = NULL;
    cs_session *s = NULL;
    cli_input in = {0};
    float *logits = NULL, *x = NULL;
    double *t = NULL;
    rc = 1;
    cs_model_options mo = {.num_threads = threads};
    if (cli_device_options(opts[10].value, opts[11].value, &mo, &err) != CS_OK) goto out;
    double t0 = cs_now_ms();
    if (cli_load_model(opts[0].value, &mo, &m, &err) != CS_OK) goto out;
    double load_ms = cs_now_ms() - t0;
    /* one thread, the CPU: the decode stage is the CPU decoder's own time */
    if (cli_input_load(m, NULL, &opts[1], &opts[2], &in, &err) != CS_OK) goto out;
    cs_model_info info;
    cs_model_get_info(m, &info);
    if (batch == 0) batch = in.batch;
    int64_t per = info.input_dims[1] * info.input_dims[2] * info.input_dims[3];
    /* Tile the given images over the requested batch. */
    x = malloc((size_t)(batch * per) * sizeof(float));
    logits = malloc((size_t)(batch * info.num_classes) * sizeof(float));
    t = malloc((size_t)iters * sizeof(double));
    if (!x || !logits || !t) {
        cs_errorf(&err, CS_ENOMEM, "out of memory");
        goto out;
    }
    for (int b = 0; b < batch; b++)
        memcpy(x + b * per, in.data + (b % in.batch) * per, (size_t)per * sizeof(float));
    t0 = cs_now_ms();
    if (cs_session_create(m, &s, &err) != CS_OK) goto out;
    if (cs_session_run(s, x, batch, logits, &err) != CS_OK) goto out; /* builds the plan */
    double first_ms = cs_now_ms() - t0;
    for (int i = 0; i < warmup; i++)
        if (cs_session_run(s, x, batch, logits, &err) != CS_OK) goto out;
    /* on a GPU also the device's own time (cs_session_device_ms): the
     * scope of a peer whose input is already on the device */
    double *td = malloc((size_t)iters * sizeof(double));
    int nd = 0;
    for (int i = 0; i < iters; i++) {
        double a = cs_now_ms();
        if (cs_session_run(s, x, batch, logits, &err) != CS_OK) {
            free(td);
            goto out;
        }
        t[i] = cs_now_ms() - a;
        double d = cs_session_device_ms(s);
        if (td && d >= 0) td[nd++] = d;
    }
    json_t *stages = json_object();
    json_object_set_new(stages, "forward", stage_json(t, iters));
    if (nd == iters) json_object_set_new(stages, "forward_device", stage_json(td, iters));
    free(td);
    if (in.names) { /* per image, as the CLI decoded them */
        double d = in.decode_ms / in.batch, pp = in.preprocess_ms / in.batch;
        json_object_set_new(stages, "decode", json_pack("{s:f, s:f, s:f}", "median_ms", d, "min_ms", d, "max_ms", d));
        json_object_set_new(stages, "preprocess", json_pack("{s:f, s:f, s:f}", "median_ms", pp, "min_ms", pp, "max_ms", pp));
    }
    if (opts[8].value) {
        /* an explanation: "explain_forward" keeps what the backward needs,
         * "cam" is the backward to the layer plus the map, "explain" both */
        cs_explain_options eo = cs_explain_default_options();
        if (cs_cam_method_parse(opts[8].value, &eo.method, &err) != CS_OK ||
            cs_explain_parse_layers(m, opts[9].value, &eo, &err) != CS_OK) {
            json_decref(stages);
            goto out;
        }
        double *tf = malloc((size_t)iters * sizeof(double)), *tc = malloc((size_t)iters * sizeof(double)),
               *tt = malloc((size_t)iters * sizeof(double));
        cs_status est = (tf && tc && tt) ? CS_OK : cs_errorf(&err, CS_ENOMEM, "out of memory");
        for (int i = -warmup; i < iters && est == CS_OK; i++) {
            cs_explain_output ex;
            double a = cs_now_ms();
            est = cs_explain_run(s, m, x, batch, &eo, &ex, &err);
            if (est != CS_OK) break;
            if (i >= 0) {
                tt[i] = cs_now_ms() - a;
                tf[i] = ex.forward_ms;
                tc[i] = ex.backward_ms + ex.cam_ms;
            }
            cs_explain_output_free(&ex);
        }
        if (est == CS_OK) {
            json_object_set_new(stages, "explain_forward", stage_json(tf, iters));
            json_object_set_new(stages, "cam", stage_json(tc, iters));
            json_object_set_new(stages, "explain", stage_json(tt, iters));
        }
        if (est == CS_OK && eo.method == CS_CAM_METHOD_GRADCAM && eo.nlayers == 1) {
            /* "gradcam_map": forward + backward + the min-max scaled map at the
             * layer's resolution, the scope of the PyTorch peers
             * (bench/peer_torch_gpu.py); "explain" adds the overlay-ready map
             * at input size and the rest of the explain pipeline */
            est = bench_gradcam_map(s, m, x, batch, eo.layers[0], warmup, iters, tt, &err);
            if (est == CS_OK) json_object_set_new(stages, "gradcam_map", stage_json(tt, iters));
        }
        free(tf);
        free(tc);
        free(tt);
        if (est != CS_OK) {
            json_decref(stages);
            goto out;
        }
    }
    json_t *o = json_pack("{s:s, s:s?, s:i, s:i, s:i, s:f, s:f, s:f, s:o}", "model",
                          cli_model_display(opts[0].value),
                          "method", opts[8].value,
                          "threads", omp_get_max_threads(), "batch", batch, "iters", iters,
                          "load_ms", load_ms, "first_run_ms", first_ms, "gflop_per_image",
                          info.flops * 1e-9, "stages", stages);
    {
        /* where it ran: the numbers mean nothing without it */
        char gpu[256] = "";
        const char *dev = cs_model_device(m);
        if (strncmp(dev, "cuda:", 5) == 0) cs_cuda_device_describe(atoi(dev + 5), gpu, sizeof gpu, NULL);
        json_object_set_new(o, "device", json_string(dev));
        json_object_set_new(o, "precision", json_string(cs_precision_name(cs_model_precision(m))));
        if (gpu[0]) json_object_set_new(o, "gpu", json_string(gpu));
    }
    if (opts[7].value) {
        json_dumpf(o, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
        fputc('\n', stdout);
    } else {
        json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        fputc('\n', stdout);
    }
    json_decref(o);
    rc = 0;
out:
    if (rc) cli_fail("bench", &err);
    free(x);
    free(logits);
    free(t);
    cs_session_free(s);
    cli_input_free(&in);
    cs_model_free(m);
    cli_free(opts, nopts);
    return rc;
}

/* oneDNN's fp32 GEMM throughput on this machine: the yardstick for "how
 * close to the hardware is the forward pass". */
int cs_cli_bench_gemm(int argc, char **argv) {
    cli_opt opts[] = {{"size", true}, {"json", false}, {"threads", true}};
    int rc = cli_parse("bench-gemm", argc, argv, opts, 3), ok = 1;
    if (rc) return rc;
    int n = cli_int("bench-gemm", &opts[0], 2048, &ok);
    cli_set_threads(cli_int("bench-gemm", &opts[2], 0, &ok));
    if (!ok) {
        cli_free(opts, 3);
        return 2;
    }
    float *a = malloc((size_t)n * n * sizeof(float)), *b = malloc((size_t)n * n * sizeof(float)),
          *c = malloc((size_t)n * n * sizeof(float));
    if (!a || !b || !c) {
        fprintf(stderr, "camserve bench-gemm: out of memory\n");
        free(a), free(b), free(c);
        cli_free(opts, 3);
        return 1;
    }
    for (long i = 0; i < (long)n * n; i++) {
        a[i] = (float)(i % 7) * 0.1f;
        b[i] = (float)(i % 5) * 0.1f;
    }
    double best = 1e30;
    for (int r = 0; r < 12; r++) {
        double t0 = cs_now_ms();
        dnnl_sgemm('N', 'N', n, n, n, 1.f, a, n, b, n, 0.f, c, n);
        double dt = cs_now_ms() - t0;
        if (r >= 2 && dt < best) best = dt; /* the first runs warm up caches and threads */
    }
    double gflops = 2.0 * n * n * (double)n / (best * 1e6);
    if (opts[1].value) printf("{\"size\":%d,\"threads\":%d,\"gflops\":%.1f}\n", n, omp_get_max_threads(), gflops);
    else printf("oneDNN sgemm %dx%dx%d: %.1f GFLOP/s on %d threads\n", n, n, n, gflops, omp_get_max_threads());
    free(a), free(b), free(c);
    cli_free(opts, 3);
    return 0;
}
