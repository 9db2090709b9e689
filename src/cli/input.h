/* Model inputs for the CLI: a preprocessed .npy tensor, or image files run
 * through the model's preprocessing. */
#ifndef CS_CLI_INPUT_H
#define CS_CLI_INPUT_H

#include "camserve/engine.h"
#include "camserve/imageio.h"
#include "cli/cli.h"

#include <jansson.h>

typedef struct cli_input {
    int batch;
    float *data;        /* batch x C x H x W, owned */
    char **names;       /* image paths (NULL for a tensor), borrowed from argv */
    cs_image *images;   /* decoded images (NULL for a tensor), owned */
    cs_preproc pp;      /* the model's preprocessing, for overlays */
    double decode_ms, preprocess_ms;
} cli_input;

/* Exactly one of image (repeatable) / tensor must be given. */
cs_status cli_input_load(const cs_model *m, const cli_opt *image, const cli_opt *tensor,
                         cli_input *out, cs_error *err);
void cli_input_free(cli_input *in);
/* Called for an image that cannot be decoded or preprocessed. */
typedef void (*cli_bad_image_fn)(void *ctx, const char *path, const cs_error *err);
/* Decodes and preprocesses each path with the model's config.  With a
 * report function, bad files are reported and skipped (out->batch counts
 * the good ones, out->names their paths); without, the first one fails. */
cs_status cli_input_paths(const cs_model *m, const char *const *paths, int n, cli_input *out,
                          cli_bad_image_fn report, void *ctx, cs_error *err);
/* Decodes and preprocesses each --image with the model's config. */
cs_status cli_input_images(const cs_model *m, const cli_opt *image, cli_input *out, cs_error *err);

/* Labels from --labels, else the model's config, else none (indices only). */
cs_status cli_model_labels(const cs_model *m, const char *path, cli_labels *out, cs_error *err);

void cli_softmax(const float *x, int64_t n, float *out);
json_t *cli_predictions_json(const float *logits, int64_t classes, int k, const cli_labels *labels);

#endif
