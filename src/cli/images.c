/* Image inputs and labels for the CLI: each --image is decoded (DCT-scaled
 * for JPEG) and preprocessed with the model's own config. */
#include "cli/input.h"
#include "cli/model_arg.h"

#include <stdlib.h>
#include <string.h>

static cs_status model_preproc(const cs_model *m, cs_preproc *pp, char **labels, cs_error *err) {
    return cli_model_preproc(m, pp, labels, err);
}

cs_status cli_input_paths(const cs_model *m, const char *const *paths, int n, cli_input *out,
                          cli_bad_image_fn report, void *ctx, cs_error *err) {
    memset(out, 0, sizeof *out);
    cs_model_info info;
    cs_model_get_info(m, &info);
    cs_status st = model_preproc(m, &out->pp, NULL, err);
    if (st != CS_OK) return st;
    if (out->pp.crop_h != info.input_dims[2] || out->pp.crop_w != info.input_dims[3] ||
        info.input_dims[1] != 3)
        return cs_errorf(err, CS_EINVAL, "the model's preprocessing makes %dx%d images; its input is %lldx%lldx%lld",
                         out->pp.crop_h, out->pp.crop_w, (long long)info.input_dims[1],
                         (long long)info.input_dims[2], (long long)info.input_dims[3]);
    int64_t per = 3 * info.input_dims[2] * info.input_dims[3];
    out->data = malloc((size_t)((n ? n : 1) * per) * sizeof(float));
    out->images = calloc((size_t)(n ? n : 1), sizeof(cs_image));
    out->names = malloc((size_t)(n ? n : 1) * sizeof(char *));
    if (!out->data || !out->images || !out->names) return cs_errorf(err, CS_ENOMEM, "out of memory");
    int need_w, need_h;
    cs_img_preproc_need(&out->pp, &need_w, &need_h);
    cs_img_limits lim = cs_img_limits_default();
    for (int i = 0; i < n; i++) {
        int k = out->batch;
        double t0 = cs_now_ms();
        cs_error ierr = {0};
        st = cs_img_load(paths[i], &lim, need_w, need_h, &out->images[k], &ierr);
        double t1 = cs_now_ms();
        if (st == CS_OK) st = cs_img_preprocess(&out->images[k], &out->pp, out->data + k * per, &ierr);
        out->decode_ms += t1 - t0;
        out->preprocess_ms += cs_now_ms() - t1;
        if (st != CS_OK) {
            cs_img_free(&out->images[k]);
            if (!report) {
                if (err) *err = ierr;
                return cs_error_prefix(err, "%s", paths[i]);
            }
            report(ctx, paths[i], &ierr); /* a bad file is reported and skipped */
            continue;
        }
        out->names[k] = (char *)paths[i];
        out->batch++;
    }
    return CS_OK;
}

cs_status cli_input_images(const cs_model *m, const cli_opt *image, cli_input *out, cs_error *err) {
    return cli_input_paths(m, image->values, image->count, out, NULL, NULL, err);
}

cs_status cli_model_labels(const cs_model *m, const char *path, cli_labels *out, cs_error *err) {
    memset(out, 0, sizeof *out);
    if (path) return cli_labels_load(path, out, err);
    if (cli_model_labels_text(m)) return cli_labels_from_text(cli_model_labels_text(m), out, err);
    cs_preproc pp;
    char *labels = NULL;
    cs_status st = model_preproc(m, &pp, &labels, err);
    if (st == CS_OK && labels) st = cli_labels_load(labels, out, err);
    free(labels);
    return st;
}
