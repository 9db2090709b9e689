/* Shared body of the image decoder fuzzers: decode with tight limits (so the
 * fuzzer explores parsers, not allocators), and push every decoded image
 * through preprocessing, which exercises the resampler on odd sizes. */
#ifndef CS_FUZZ_IMAGE_COMMON_H
#define CS_FUZZ_IMAGE_COMMON_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "camserve/imageio.h"

static void fuzz_decode(const uint8_t *data, size_t size, int need) {
    cs_img_limits lim = cs_img_limits_default();
    lim.max_pixels = 4 * 1000 * 1000;
    cs_image img = {0};
    cs_error err;
    cs_status st = cs_img_decode(data, size, &lim, need, need, &img, &err);
    if (st == CS_EFORMAT && strncmp(err.msg, "invalid image: ", 15) != 0) abort();
    if (st != CS_OK) {
        if (img.rgb) abort(); /* no partial result on failure */
        return;
    }
    if (!img.rgb || img.width <= 0 || img.height <= 0) abort();
    cs_preproc p = cs_img_preproc_default();
    p.resize = 40;
    p.crop_w = 32;
    p.crop_h = 24;
    float t[3 * 32 * 24];
    if (cs_img_preprocess(&img, &p, t, &err) != CS_OK) abort();
    cs_img_free(&img);
}

#endif
