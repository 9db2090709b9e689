/* Model inputs for the CLI: a preprocessed .npy tensor, or image files run
 * through the model's preprocessing. */
#ifndef CS_CLI_INPUT_H
#define CS_CLI_INPUT_H

#include "camserve/engine.h"
#include "camserve/gpuprep.h"
#include "camserve/imageio.h"
#include "cli/cli.h"
#include "util/team.h"

#include <jansson.h>

/* One decoded image's bookkeeping. */
typedef struct cli_image_info {
    float box[4];      /* the crop window in the image's pixels (cs_img_preproc_crop_box) */
    double decode_ms, preprocess_ms; /* this image's own; on the GPU path all of it is decode */
    bool on_gpu;       /* decoded and preprocessed by the GPU image path */
} cli_image_info;

typedef struct cli_input {
    int batch;
    float *data;        /* batch x C x H x W, owned */
    char **names;       /* image paths (NULL for a tensor), borrowed from argv */
    cs_image *images;   /* decoded images (NULL for a tensor), owned; from the GPU
                         * path the display-size picture (cli_pool.display) or
                         * only the sizes */
    cli_image_info *info; /* per image (NULL for a tensor), owned */
    cs_preproc pp;      /* the model's preprocessing, for overlays */
    double decode_ms, preprocess_ms; /* sums over the images */
} cli_input;

/* How the CLI reads a batch of images: a team that decodes several files at
 * once (one per core: a JPEG's Huffman decode is sequential, so a folder
 * only uses every core if files go side by side), and, for a model on a
 * GPU, the GPU image path (gpuprep.h), which the calling thread runs for
 * each JPEG before the team decodes what it declined.  explain encodes its
 * overlays on the same team. */
typedef struct cli_pool {
    cs_team *team;   /* NULL: everything on the calling thread */
    cs_gpuprep *gp;  /* NULL: the CPU decodes */
    bool display;    /* the GPU path keeps each picture at display size (an overlay follows) */
} cli_pool;

/* threads <= 0: one per core (OpenMP's count).  The GPU path is tried for a
 * model on cuda; where it cannot open (no nvJPEG), one line on stderr says
 * so and the CPU decodes.  Fails only when threads cannot be started. */
cs_status cli_pool_open(const cs_model *m, int threads, bool display, cli_pool *p, cs_error *err);
void cli_pool_close(cli_pool *p);

/* --image values expanded: files as given, folders by their image files
 * (.jpg .jpeg .png .webp, not dot files, not recursed) in name order.
 * *out is malloc'd strings (cs_free_names, util/files.h). */
cs_status cli_expand_paths(const cli_opt *image, char ***out, int *n, cs_error *err);

/* How many files the CLI reads before it runs the model: 8, or the smallest
 * multiple of a fixed batch that is at least 8 (a model exported with a
 * fixed batch of 1 still gets its files decoded side by side). */
int cli_chunk_size(const cs_model_info *info);

/* Exactly one of image (repeatable) / tensor must be given.  pool may be
 * NULL (one thread, the CPU). */
cs_status cli_input_load(const cs_model *m, cli_pool *pool, const cli_opt *image, const cli_opt *tensor,
                         cli_input *out, cs_error *err);
void cli_input_free(cli_input *in);
/* Called for an image that cannot be decoded or preprocessed. */
typedef void (*cli_bad_image_fn)(void *ctx, const char *path, const cs_error *err);
/* Decodes and preprocesses each path with the model's config.  With a
 * report function, bad files are reported and skipped, in path order
 * (out->batch counts the good ones, out->names their paths); without, the
 * first bad one in path order fails. */
cs_status cli_input_paths(const cs_model *m, cli_pool *pool, const char *const *paths, int n, cli_input *out,
                          cli_bad_image_fn report, void *ctx, cs_error *err);
/* Decodes and preprocesses each --image with the model's config. */
cs_status cli_input_images(const cs_model *m, cli_pool *pool, const cli_opt *image, cli_input *out,
                           cs_error *err);

/* Labels from --labels, else the model's config, else none (indices only). */
cs_status cli_model_labels(const cs_model *m, const char *path, cli_labels *out, cs_error *err);

void cli_softmax(const float *x, int64_t n, float *out);
json_t *cli_predictions_json(const float *logits, int64_t classes, int k, const cli_labels *labels);
/* Each prediction of cli_predictions_json's array as a line on stdout. */
void cli_predictions_print(const json_t *preds);

#endif
