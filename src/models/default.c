/* The default model compiled into the binary.
 *
 * CMake embeds every file at the top of models/default/ into the table
 * cs_model_assets (cmake/embed.cmake), each followed by a NUL byte so text
 * files can be used as C strings.  The model needs three of them:
 * /model.onnx, /model.json (the preprocessing sidecar, keys in
 * docs/images.md) and /labels.txt. */
#include "camserve/models.h"
#include "util/assets.h"

cs_status cs_models_default(const void **onnx, size_t *len, const char **sidecar_json,
                            const char **labels_text, cs_error *err) {
    const cs_asset *m = cs_asset_find(cs_model_assets, "/model.onnx");
    const cs_asset *j = cs_asset_find(cs_model_assets, "/model.json");
    const cs_asset *l = cs_asset_find(cs_model_assets, "/labels.txt");
    if (!m || !j || !l || m->size == 0)
        return cs_errorf(err, CS_ENOTFOUND,
                         "no default model in this binary (models/default/ held no model.onnx, "
                         "model.json and labels.txt at build time); pass --model");
    if (onnx) *onnx = m->data;
    if (len) *len = m->size;
    if (sidecar_json) *sidecar_json = (const char *)j->data;
    if (labels_text) *labels_text = (const char *)l->data;
    return CS_OK;
}
