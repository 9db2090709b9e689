/* The CLI's --model argument: a path, or absent for the default model
 * compiled into the binary (models/default/, see camserve/models.h).
 *
 * A buffer-loaded model has no folder for a sidecar, so the default model's
 * preprocessing JSON and labels text are kept here, keyed by the cs_model
 * pointer, and consulted by the image and label helpers (images.c).  The
 * CLI loads at most one model per process; nothing here is thread-safe. */
#ifndef CS_CLI_MODEL_ARG_H
#define CS_CLI_MODEL_ARG_H

#include "camserve/engine.h"
#include "camserve/imageio.h"
#include "cli/cli.h"

/* cs_model_load(path) when path is non-NULL, else the embedded default. */
cs_status cli_load_model(const char *path_or_null, const cs_model_options *opt, cs_model **out,
                         cs_error *err);
/* --device / --precision into mo: absent options fall back to the
 * CAMSERVE_DEVICE / CAMSERVE_PRECISION environment, then to "auto" (cuda:0
 * when built with CUDA and a GPU is usable, else cpu) and the device's
 * default precision.  The strings are borrowed for the load. */
cs_status cli_device_options(const char *device, const char *precision, cs_model_options *mo,
                             cs_error *err);
/* What to print for --model: the path, or "default". */
const char *cli_model_display(const char *path_or_null);
/* The embedded sidecar JSON / labels text when m is the default model; NULL
 * otherwise. */
const char *cli_model_sidecar(const cs_model *m);
const char *cli_model_labels_text(const cs_model *m);
/* The model's preprocessing: the embedded sidecar for the default model,
 * else cs_img_preproc_for_model (sidecar file, metadata, defaults).
 * labels (optional) receives the labels file path, malloc'd, or NULL. */
cs_status cli_model_preproc(const cs_model *m, cs_preproc *pp, char **labels, cs_error *err);

#endif
