#include "cli/input.h"

#include "camserve/npy.h"

#include <stdlib.h>
#include <string.h>

static cs_status load_tensor(const cs_model *m, const char *path, cli_input *out, cs_error *err) {
    cs_npy npy;
    cs_status st = cs_npy_load(path, &npy, err);
    if (st != CS_OK) return st;
    cs_model_info info;
    cs_model_get_info(m, &info);
    const int64_t *d = info.input_dims;
    if (npy.ndim != 4 || npy.dims[1] != d[1] || npy.dims[2] != d[2] || npy.dims[3] != d[3] ||
        npy.dims[0] < 1 || (d[0] > 0 && npy.dims[0] % d[0] != 0)) {
        cs_npy_free(&npy);
        return cs_errorf(err, CS_EINVAL,
                         "%s: tensor shape does not fit the model input %s [%s,%lld,%lld,%lld]", path,
                         info.input_name, d[0] > 0 ? "1" : "N", (long long)d[1], (long long)d[2],
                         (long long)d[3]);
    }
    out->batch = (int)npy.dims[0];
    out->data = npy.data; /* ownership moves to out */
    return CS_OK;
}

cs_status cli_input_load(const cs_model *m, cli_pool *pool, const cli_opt *image, const cli_opt *tensor,
                         cli_input *out, cs_error *err) {
    memset(out, 0, sizeof *out);
    if ((image->value != NULL) == (tensor->value != NULL))
        return cs_errorf(err, CS_EINVAL, "give exactly one of --image or --tensor");
    if (tensor->value) return load_tensor(m, tensor->value, out, err);
    return cli_input_images(m, pool, image, out, err);
}

void cli_input_free(cli_input *in) {
    if (in->images)
        for (int i = 0; i < in->batch; i++) cs_img_free(&in->images[i]);
    free(in->images);
    free(in->info);
    free(in->data);
    free(in->names);
    memset(in, 0, sizeof *in);
}
