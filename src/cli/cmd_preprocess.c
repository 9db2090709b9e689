/* camserve preprocess: the exact tensor the model would see, as .npy, so
 * anyone can compare camserve's preprocessing with torchvision's
 * (tools/preprocess_reference.py computes the torchvision side).
 *
 *   camserve preprocess --model M --image I [--image I2 ...] --save-tensor X.npy
 *                       [--save-crop C.png]
 *
 * The images go through the same path as classify/explain (cli_input_images:
 * the model's sidecar / metadata config, DCT-scaled decode, PIL-exact
 * resize); --save-crop also writes the resized+cropped uint8 picture of the
 * first image, which is what torchvision's ToTensor would receive. */
#include "camserve/imageio.h"
#include "camserve/npy.h"
#include "cli/cli.h"
#include "cli/input.h"
#include "cli/model_arg.h"

#include <stdio.h>
#include <stdlib.h>

enum { O_MODEL, O_IMAGE, O_TENSOR, O_CROP, O_N };

static cs_status save_crop(const cli_input *in, const char *path, cs_error *err) {
    cs_image crop = {0};
    uint8_t *png = NULL;
    size_t len = 0;
    cs_status st = cs_img_preprocess_u8(&in->images[0], &in->pp, &crop, err);
    if (st == CS_OK) st = cs_img_encode(&crop, CS_IMG_FORMAT_PNG, 0, &png, &len, err);
    if (st == CS_OK) {
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(png, 1, len, f) != len) st = cs_errorf(err, CS_EIO, "cannot write %s", path);
        if (f && fclose(f) != 0 && st == CS_OK) st = cs_errorf(err, CS_EIO, "cannot write %s", path);
    }
    free(png);
    cs_img_free(&crop);
    return st;
}

int cs_cli_preprocess(int argc, char **argv) {
    cli_opt opts[O_N] = {
        [O_MODEL] = {.name = "model", .takes_value = true},
        [O_IMAGE] = {.name = "image", .takes_value = true},
        [O_TENSOR] = {.name = "save-tensor", .takes_value = true},
        [O_CROP] = {.name = "save-crop", .takes_value = true},
    };
    int rc = cli_parse("preprocess", argc, argv, opts, O_N);
    if (rc) return rc;
    if (!opts[O_IMAGE].value || !opts[O_TENSOR].value) {
        fprintf(stderr, "camserve preprocess: --image and --save-tensor are required\n");
        cli_free(opts, O_N);
        return 2;
    }
    cs_error err = {0};
    cs_model *m = NULL;
    cli_input in = {0};
    rc = 1;
    if (cli_load_model(opts[O_MODEL].value, NULL, &m, &err) != CS_OK) goto out;
    if (cli_input_images(m, NULL, &opts[O_IMAGE], &in, &err) != CS_OK) goto out;
    cs_model_info info;
    cs_model_get_info(m, &info);
    int64_t dims[4] = {in.batch, 3, in.pp.crop_h, in.pp.crop_w};
    if (cs_npy_save(opts[O_TENSOR].value, in.data, 4, dims, &err) != CS_OK) goto out;
    if (opts[O_CROP].value && save_crop(&in, opts[O_CROP].value, &err) != CS_OK) goto out;

    const char *source = "defaults";
    cs_preproc check;
    (void)cs_img_preproc_for_model(cs_model_path(m), cs_model_metadata(m, "camserve.preprocess"),
                                   (int)info.input_dims[2], (int)info.input_dims[3], &check, NULL,
                                   &source, NULL);
    const cs_preproc *p = &in.pp;
    char resize[64];
    if (p->resize_w > 0) snprintf(resize, sizeof resize, "%dx%d", p->resize_h, p->resize_w);
    else if (p->resize > 0) snprintf(resize, sizeof resize, "short side %d", p->resize);
    else snprintf(resize, sizeof resize, "none");
    printf("config (%s): resize %s, crop %dx%d, %s, %s, mean %.4g/%.4g/%.4g, std %.4g/%.4g/%.4g\n",
           source, resize, p->crop_h, p->crop_w,
           p->interp == CS_IMG_INTERP_BICUBIC ? "bicubic" : "bilinear",
           p->order == CS_IMG_ORDER_BGR ? "BGR" : "RGB", p->mean[0], p->mean[1], p->mean[2],
           p->std[0], p->std[1], p->std[2]);
    for (int i = 0; i < in.batch; i++)
        printf("%s: %dx%d, decoded at %dx%d\n", in.names[i], in.images[i].orig_width,
               in.images[i].orig_height, in.images[i].width, in.images[i].height);
    printf("wrote %s: %dx3x%dx%d float32 (decode %.1f ms, preprocess %.1f ms)\n",
           opts[O_TENSOR].value, in.batch, p->crop_h, p->crop_w, in.decode_ms, in.preprocess_ms);
    rc = 0;
out:
    if (rc) cli_fail("preprocess", &err);
    cli_input_free(&in);
    cs_model_free(m);
    cli_free(opts, O_N);
    return rc;
}
