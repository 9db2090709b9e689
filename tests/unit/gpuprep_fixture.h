/* Fixtures of the GPU image path's tests (test_cuda_emul, test_cuda): a
 * photo-like JPEG made on the fly, and what the service's CPU path makes
 * of a JPEG decoded at full resolution -- the reference the GPU path must
 * equal on the emulation (same decoder) and approach on a GPU (nvJPEG's
 * decoder).  Include after cmocka.h. */
#ifndef CS_TEST_GPUPREP_FIXTURE_H
#define CS_TEST_GPUPREP_FIXTURE_H

#include "camserve/imageio.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#ifndef CS_SOURCE_DIR
#define CS_SOURCE_DIR "."
#endif

/* A w x h photo-like JPEG (gradients + noise, 4:2:0, q90), with the EXIF
 * APP1 of orient_<o>.jpg spliced in when o > 1.  malloc()ed. */
static inline uint8_t *make_jpeg(int w, int h, int o, size_t *len) {
    uint8_t *px = malloc((size_t)w * h * 3);
    unsigned seed = 5;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            seed = seed * 1103515245u + 12345u;
            uint8_t *p = px + ((size_t)y * w + x) * 3;
            p[0] = (uint8_t)(x * 255 / w);
            p[1] = (uint8_t)(((x / 40 + y / 40) & 1) ? 200 : 40);
            p[2] = (uint8_t)((y * 255 / h + (seed >> 28)) & 255);
        }
    tjhandle tj = tjInitCompress();
    unsigned char *j = NULL;
    unsigned long n = 0;
    assert_int_equal(tjCompress2(tj, px, w, 0, h, TJPF_RGB, &j, &n, TJSAMP_420, 90, 0), 0);
    tjDestroy(tj);
    free(px);
    uint8_t *out = malloc(n + 4096);
    size_t k = 0;
    out[k++] = 0xFF;
    out[k++] = 0xD8;
    if (o > 1) {
        char path[512];
        /* CS_IMAGES_DIR: the test data away from the build tree (bench/gpu.sh) */
        const char *dir = getenv("CS_IMAGES_DIR");
        snprintf(path, sizeof path, "%s/orient_%d.jpg", dir ? dir : CS_SOURCE_DIR "/tests/data/images", o);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        uint8_t hdr[4096];
        size_t got = fread(hdr, 1, sizeof hdr, f);
        fclose(f);
        size_t i = 2; /* walk to the APP1 segment */
        while (i + 4 <= got && !(hdr[i] == 0xFF && hdr[i + 1] == 0xE1)) i += 2 + ((size_t)hdr[i + 2] << 8 | hdr[i + 3]);
        assert_true(i + 4 <= got);
        size_t seg = 2 + ((size_t)hdr[i + 2] << 8 | hdr[i + 3]);
        memcpy(out + k, hdr + i, seg);
        k += seg;
    }
    memcpy(out + k, j + 2, n - 2);
    *len = k + n - 2;
    tjFree(j);
    return out;
}

/* What the service's CPU path makes from a full-resolution decode. */
static inline void cpu_prep(const uint8_t *jpg, size_t len, const cs_preproc *p, int want_display, float *tensor,
                     cs_image *disp, float box[4]) {
    cs_image img = {0};
    cs_error err = {0};
    if (cs_img_decode(jpg, len, NULL, 0, 0, &img, &err) != CS_OK) fail_msg("decode: %s", err.msg);
    assert_int_equal(cs_img_preprocess(&img, p, tensor, &err), CS_OK);
    cs_img_preproc_crop_box(p, &img, box);
    if (want_display) {
        int dw, dh;
        assert_true(cs_img_display_size(img.width, img.height, 800, &dw, &dh));
        assert_int_equal(cs_img_resize(&img, dw, dh, CS_IMG_INTERP_BILINEAR, disp, &err), CS_OK);
        const double sx = (double)dw / img.width, sy = (double)dh / img.height;
        box[0] = (float)(box[0] * sx), box[1] = (float)(box[1] * sy);
        box[2] = (float)(box[2] * sx), box[3] = (float)(box[3] * sy);
    }
    cs_img_free(&img);
}

#endif
