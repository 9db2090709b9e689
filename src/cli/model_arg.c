/* --model PATH, or the embedded default model when --model is absent. */
#include "cli/model_arg.h"

#include "camserve/models.h"

#include <stdlib.h>
#include <string.h>

static const cs_model *g_default;
static const char *g_sidecar, *g_labels;

cs_status cli_load_model(const char *path_or_null, const cs_model_options *opt, cs_model **out,
                         cs_error *err) {
    if (path_or_null) {
        /* CAMSERVE_PREPARED_DIR: the prepared-model cache for CLI runs */
        cs_model_options o = opt ? *opt : (cs_model_options){0};
        const char *prep = getenv("CAMSERVE_PREPARED_DIR");
        if (prep && *prep && !o.prepared_dir) o.prepared_dir = prep;
        return cs_model_load(path_or_null, &o, out, err);
    }
    const void *buf;
    size_t len;
    const char *sidecar, *labels;
    cs_status st = cs_models_default(&buf, &len, &sidecar, &labels, err);
    if (st != CS_OK) return st;
    if ((st = cs_model_load_buffer(buf, len, opt, out, err)) != CS_OK)
        return cs_error_prefix(err, "the default model");
    g_default = *out;
    g_sidecar = sidecar;
    g_labels = labels;
    return CS_OK;
}

cs_status cli_device_options(const char *device, const char *precision, cs_model_options *mo,
                             cs_error *err) {
    if (!device || !*device) device = getenv("CAMSERVE_DEVICE");
    if (!precision || !*precision) precision = getenv("CAMSERVE_PRECISION");
    mo->device = device && *device ? device : "auto";
    mo->precision = CS_PRECISION_DEFAULT;
    if (precision && *precision) return cs_precision_parse(precision, &mo->precision, err);
    return CS_OK;
}

const char *cli_model_display(const char *path_or_null) {
    return path_or_null ? path_or_null : "default";
}

const char *cli_model_sidecar(const cs_model *m) {
    return m && m == g_default ? g_sidecar : NULL;
}

const char *cli_model_labels_text(const cs_model *m) {
    return m && m == g_default ? g_labels : NULL;
}

cs_status cli_model_preproc(const cs_model *m, cs_preproc *pp, char **labels, cs_error *err) {
    if (labels) *labels = NULL;
    cs_model_info info;
    cs_model_get_info(m, &info);
    *pp = cs_img_preproc_default();
    const char *embedded = cli_model_sidecar(m); /* the default model has no folder */
    if (embedded) return cs_img_preproc_from_json(embedded, pp, NULL, err);
    return cs_img_preproc_for_model(cs_model_path(m), cs_model_metadata(m, "camserve.preprocess"),
                                    (int)info.input_dims[2], (int)info.input_dims[3], pp, labels,
                                    NULL, err);
}

