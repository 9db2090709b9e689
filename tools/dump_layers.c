/* dump_layers: camserve's own tensors for a golden family, for
 * tools/relu_flips.py.  Runs the engine's explain path (forward keeping the
 * layers, backward of sum_i logit[i, classes[i]] from meta.json) on the
 * family's input and writes, into OUT:
 *
 *   grad.npy      the gradient at the first layer (the CAM layer)
 *   act_<k>.npy   the activation of the k-th layer named
 *
 *   dump_layers FAMILY_DIR OUT LAYER [LAYER...]
 *
 * At most 16 layers are kept per forward (the explain API's limit), so the
 * layers after the first go in groups of 15, each group with the first
 * layer again; the first layer's gradient must not depend on what else is
 * kept (checked: the groups' gradients are compared bit for bit).
 * Built by tools/relu_flips.py against build/libcamserve_core.a. */
#include "camserve/explain.h"
#include "camserve/npy.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, const cs_error *err) {
    fprintf(stderr, "dump_layers: %s: %s\n", what, err->msg);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: dump_layers FAMILY_DIR OUT LAYER [LAYER...]\n");
        return 2;
    }
    const char *dir = argv[1], *out = argv[2];
    char p[4096];
    cs_error err = {0};
    snprintf(p, sizeof p, "%s/meta.json", dir);
    json_t *meta = json_load_file(p, 0, NULL);
    if (!meta) {
        fprintf(stderr, "dump_layers: cannot read %s\n", p);
        return 1;
    }
    cs_model *m;
    cs_session *s;
    cs_npy in;
    snprintf(p, sizeof p, "%s/model.onnx", dir);
    if (cs_model_load(p, NULL, &m, &err) != CS_OK) return fail(p, &err);
    snprintf(p, sizeof p, "%s/input.npy", dir);
    if (cs_npy_load(p, &in, &err) != CS_OK) return fail(p, &err);
    if (cs_session_create(m, &s, &err) != CS_OK) return fail("session", &err);
    int nl = argc - 3, *idx = malloc((size_t)nl * sizeof(int));
    for (int i = 0; i < nl; i++)
        if ((idx[i] = cs_model_find_layer(m, argv[3 + i])) < 0) {
            fprintf(stderr, "dump_layers: no layer %s\n", argv[3 + i]);
            return 1;
        }
    int batch = (int)in.dims[0], classes[64];
    json_t *cls = json_object_get(meta, "classes");
    if (batch > 64 || (int)json_array_size(cls) != batch) {
        fprintf(stderr, "dump_layers: bad classes in meta.json\n");
        return 1;
    }
    for (int i = 0; i < batch; i++) classes[i] = (int)json_integer_value(json_array_get(cls, i));
    cs_model_info info;
    cs_model_get_info(m, &info);
    float *logits = malloc((size_t)(batch * info.num_classes) * sizeof(float)), *grad0 = NULL;
    int64_t gn = 0;
    for (int first = 1; first < nl || first == 1; first += 15) {
        int keep[16], nk = 0;
        keep[nk++] = idx[0];
        for (int i = first; i < nl && i < first + 15; i++) keep[nk++] = idx[i];
        if (cs_session_forward_keep(s, in.data, batch, keep, nk, logits, &err) != CS_OK)
            return fail("forward", &err);
        if (cs_session_backward(s, classes, &err) != CS_OK) return fail("backward", &err);
        for (int k = 0; k < nk; k++) {
            const float *a, *g;
            int64_t d[4];
            if (cs_session_layer(s, keep[k], &a, &g, d, &err) != CS_OK) return fail("layer", &err);
            int64_t n = d[0] * d[1] * d[2] * d[3];
            if (k == 0) {
                if (!grad0) {
                    gn = n;
                    grad0 = malloc((size_t)n * sizeof(float));
                    memcpy(grad0, g, (size_t)n * sizeof(float));
                    snprintf(p, sizeof p, "%s/grad.npy", out);
                    if (cs_npy_save(p, g, 4, d, &err) != CS_OK) return fail(p, &err);
                    snprintf(p, sizeof p, "%s/act_0.npy", out);
                    if (cs_npy_save(p, a, 4, d, &err) != CS_OK) return fail(p, &err);
                } else if (n != gn || memcmp(grad0, g, (size_t)n * sizeof(float)) != 0) {
                    fprintf(stderr, "dump_layers: the gradient changed with the layers kept\n");
                    return 1;
                }
                continue;
            }
            snprintf(p, sizeof p, "%s/act_%d.npy", out, first + k - 1);
            if (cs_npy_save(p, a, 4, d, &err) != CS_OK) return fail(p, &err);
        }
    }
    printf("dump_layers: %d layers written to %s\n", nl, out);
    free(grad0);
    free(logits);
    free(idx);
    cs_npy_free(&in);
    cs_session_free(s);
    cs_model_free(m);
    json_decref(meta);
    return 0;
}
