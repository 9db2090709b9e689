/* Image inputs and model labels for the CLI (placeholder until imageio is wired). */
#include "cli/input.h"

#include <stdlib.h>
#include <string.h>

cs_status cli_input_images(const cs_model *m, const cli_opt *image, cli_input *out, cs_error *err) {
    (void)m;
    (void)image;
    (void)out;
    return cs_errorf(err, CS_EUNSUPPORTED, "--image is not wired yet");
}

cs_status cli_model_labels(const cs_model *m, const char *path, cli_labels *out, cs_error *err) {
    (void)m;
    memset(out, 0, sizeof *out);
    if (path) return cli_labels_load(path, out, err);
    return CS_OK;
}
