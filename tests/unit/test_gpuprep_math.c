/* The GPU image path's arithmetic (src/cuda/gpuprep_math.h) against the CPU
 * resampler, byte for byte, in every build: a cs_img_taps plan executed
 * with the kernels' per-byte functions (tests/unit/gpuprep_exec.h) must give
 * what cs_img_resample_window / cs_img_resize give -- the CPU resampler is
 * itself byte-exact with PIL (test_imageio) -- and reading a stored frame
 * through an EXIF orientation must give what decoding with the orientation
 * applied and then resizing gives.  The kernels themselves run only on a
 * GPU (test_cuda); their launch wiring on the CPU in test_cuda_emul. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <turbojpeg.h>

#include "camserve/imageio.h"
#include "imageio/imageio_internal.h"
#include "unit/gpuprep_exec.h"

#ifndef CS_SOURCE_DIR
#define CS_SOURCE_DIR "."
#endif
#define IMG_DIR CS_SOURCE_DIR "/tests/data/images/"

static uint8_t *noise(int w, int h, unsigned seed) {
    uint8_t *p = malloc((size_t)w * h * 3);
    assert_non_null(p);
    for (size_t i = 0; i < (size_t)w * h * 3; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (uint8_t)(seed >> 16);
    }
    return p;
}

/* window [x0,x1) x [y0,y1) of a sw x sh -> rw x rh resize of box, both ways */
static void check_window(const uint8_t *src, int sw, int sh, const float box[4], int rw, int rh, int x0,
                         int x1, int y0, int y1, cs_img_interp interp) {
    const int ow = x1 - x0, oh = y1 - y0;
    uint8_t *want = malloc((size_t)ow * oh * 3), *got = malloc((size_t)ow * oh * 3);
    cs_error err = {0};
    assert_int_equal(cs_img_resample_window(src, sw, sh, 3, box, rw, rh, x0, x1, y0, y1, interp, want,
                                            (size_t)ow * 3, &err),
                     CS_OK);
    cs_img_taps t = {0};
    if (cs_img_resample_taps(sw, sh, box, rw, rh, x0, x1, y0, y1, interp, &t, &err) != CS_OK)
        fail_msg("taps: %s", err.msg);
    assert_int_equal(t.ow, ow);
    assert_int_equal(t.oh, oh);
    for (int i = 0; i < ow; i++) assert_true(t.hfirst[i] >= 0 && t.hfirst[i] + t.hk <= sw);
    for (int j = 0; j < oh; j++)
        assert_true(t.vn[j] == 0 || (t.vfirst[j] >= t.ylo && t.vfirst[j] + t.vn[j] <= t.yhi && t.vn[j] <= t.vk));
    uint8_t *tmp = malloc((size_t)(t.yhi - t.ylo + 1) * ow * 3);
    gp_exec_plan(&t, src, sw, sh, 1, tmp, got, (size_t)ow * 3);
    for (size_t i = 0; i < (size_t)ow * oh * 3; i++)
        if (want[i] != got[i])
            fail_msg("%dx%d -> %dx%d window [%d,%d)x[%d,%d) %s: byte %zu is %d, want %d", sw, sh, rw, rh, x0, x1,
                     y0, y1, interp == CS_IMG_INTERP_BICUBIC ? "bicubic" : "bilinear", i, got[i], want[i]);
    free(tmp);
    cs_img_taps_free(&t);
    free(want);
    free(got);
}

static void test_plans_match_resampler(void **state) {
    (void)state;
    static const struct {
        int sw, sh, rw, rh;
    } cases[] = {
        {61, 47, 20, 13},  {61, 47, 130, 101}, {640, 480, 298, 224}, {640, 480, 800, 600},
        {37, 300, 9, 73},  {1000, 750, 800, 600}, {5, 3, 17, 11},     {300, 200, 300, 200},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const int sw = cases[c].sw, sh = cases[c].sh, rw = cases[c].rw, rh = cases[c].rh;
        uint8_t *src = noise(sw, sh, (unsigned)c + 7);
        const float box[4] = {0, 0, (float)sw, (float)sh};
        for (int f = 0; f < 2; f++) {
            const cs_img_interp in = f ? CS_IMG_INTERP_BICUBIC : CS_IMG_INTERP_BILINEAR;
            check_window(src, sw, sh, box, rw, rh, 0, rw, 0, rh, in);
            /* a centre crop's window, as the preprocessing asks */
            check_window(src, sw, sh, box, rw, rh, rw / 5, rw - rw / 6, rh / 7, rh - rh / 4, in);
        }
        /* a source box inside the frame, as after a DCT-scaled decode */
        const float inner[4] = {0, 0, sw - 0.75f, sh - 0.5f};
        check_window(src, sw, sh, inner, rw, rh, 0, rw, 0, rh, CS_IMG_INTERP_BILINEAR);
        free(src);
    }
}

/* The stored pixels of a JPEG, without its EXIF orientation applied. */
static uint8_t *decode_stored(const char *path, int *w, int *h) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static uint8_t buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    tjhandle tj = tjInitDecompress();
    int ss, cs;
    assert_int_equal(tjDecompressHeader3(tj, buf, (unsigned long)n, w, h, &ss, &cs), 0);
    uint8_t *px = malloc((size_t)*w * *h * 3);
    assert_int_equal(tjDecompress2(tj, buf, (unsigned long)n, px, *w, 0, *h, TJPF_RGB, 0), 0);
    tjDestroy(tj);
    return px;
}

static void test_orientation_on_read(void **state) {
    (void)state;
    for (int o = 1; o <= 8; o++) {
        char path[512];
        snprintf(path, sizeof path, IMG_DIR "orient_%d.jpg", o);
        int W, H;
        uint8_t *stored = decode_stored(path, &W, &H);
        cs_image shown = {0};
        cs_error err = {0};
        if (cs_img_load(path, NULL, 0, 0, &shown, &err) != CS_OK) fail_msg("%s: %s", path, err.msg);
        int w, h;
        cs_gp_oriented_size(o, W, H, &w, &h);
        assert_int_equal(w, shown.width);
        assert_int_equal(h, shown.height);
        /* 1:1 (every pixel read through the orientation), down and up */
        const int sizes[3][2] = {{w, h}, {13, 7}, {50, 40}};
        for (int k = 0; k < 3; k++) {
            const int rw = sizes[k][0], rh = sizes[k][1];
            cs_image want = {0};
            assert_int_equal(cs_img_resize(&shown, rw, rh, CS_IMG_INTERP_BICUBIC, &want, &err), CS_OK);
            const float box[4] = {0, 0, (float)w, (float)h};
            cs_img_taps t = {0};
            assert_int_equal(cs_img_resample_taps(w, h, box, rw, rh, 0, rw, 0, rh, CS_IMG_INTERP_BICUBIC, &t, &err),
                             CS_OK);
            uint8_t *tmp = malloc((size_t)(t.yhi - t.ylo + 1) * rw * 3), *got = malloc((size_t)rw * rh * 3);
            gp_exec_plan(&t, stored, W, H, o, tmp, got, (size_t)rw * 3);
            if (memcmp(got, want.rgb, (size_t)rw * rh * 3) != 0)
                fail_msg("orientation %d, %dx%d: the read-through-orientation resize differs", o, rw, rh);
            free(tmp);
            free(got);
            cs_img_taps_free(&t);
            cs_img_free(&want);
        }
        cs_img_free(&shown);
        free(stored);
    }
}

/* Both thread orders of the horizontal pass give every output byte to
 * exactly one thread, and in the order promised: along output rows for a
 * frame stored upright, down output columns (channels fastest) for one
 * stored on its side. */
static void test_hpass_thread_order(void **state) {
    (void)state;
    const int sizes[][2] = {{1, 1}, {1, 7}, {5, 1}, {13, 7}, {341, 333}, {37, 64}};
    for (int o = 1; o <= 8; o++)
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            const int rows = sizes[k][0], ow = sizes[k][1];
            const int64_t n = (int64_t)rows * ow * 3;
            uint8_t *seen = calloc((size_t)n, 1);
            int pr = -1, pb = -1;
            for (int64_t i = 0; i < n; i++) {
                int r, b;
                cs_gp_hpass_at(i, o, rows, ow, &r, &b);
                if (r < 0 || r >= rows || b < 0 || b >= ow * 3)
                    fail_msg("o %d, %dx%d: thread %lld -> row %d byte %d, outside", o, rows, ow, (long long)i, r, b);
                if (seen[(size_t)r * ow * 3 + b]++)
                    fail_msg("o %d, %dx%d: row %d byte %d computed twice", o, rows, ow, r, b);
                if (i > 0) {
                    bool next = o < 5 ? (r == pr && b == pb + 1) || (r == pr + 1 && b == 0 && pb == ow * 3 - 1)
                                      : (b / 3 == pb / 3 && ((r == pr && b == pb + 1) ||
                                                             (r == pr + 1 && b % 3 == 0 && pb % 3 == 2))) ||
                                            (b / 3 == pb / 3 + 1 && r == 0 && pr == rows - 1 && b % 3 == 0);
                    if (!next)
                        fail_msg("o %d, %dx%d: thread %lld -> (%d, %d) does not follow (%d, %d)", o, rows, ow,
                                 (long long)i, r, b, pr, pb);
                }
                pr = r;
                pb = b;
            }
            free(seen);
        }
}

static void test_taps_refuses_bad_windows(void **state) {
    (void)state;
    const float box[4] = {0, 0, 10, 10};
    cs_img_taps t = {0};
    cs_error err = {0};
    assert_int_equal(cs_img_resample_taps(10, 10, box, 5, 5, 0, 6, 0, 5, CS_IMG_INTERP_BILINEAR, &t, &err), CS_EINVAL);
    assert_int_equal(cs_img_resample_taps(10, 10, box, 5, 5, 2, 2, 0, 5, CS_IMG_INTERP_BILINEAR, &t, &err), CS_EINVAL);
    assert_int_equal(cs_img_resample_taps(0, 10, box, 5, 5, 0, 5, 0, 5, CS_IMG_INTERP_BILINEAR, &t, &err), CS_EINVAL);
    assert_null(t.hfirst);
    cs_img_taps_free(&t);
    cs_img_taps_free(NULL);
}

static void test_lut_is_preprocess(void **state) {
    (void)state;
    cs_preproc p = cs_img_preproc_default();
    p.order = CS_IMG_ORDER_BGR;
    p.resize = 0;
    p.crop_w = 16;
    p.crop_h = 16;
    uint8_t *src = noise(16, 16, 99);
    cs_image img = {.width = 16, .height = 16, .channels = 3, .rgb = src, .orig_width = 16, .orig_height = 16};
    float want[3 * 256];
    cs_error err = {0};
    assert_int_equal(cs_img_preprocess(&img, &p, want, &err), CS_OK);
    float lut[3][256];
    cs_img_preproc_lut(&p, lut);
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < 256; i++) assert_true(want[c * 256 + i] == lut[c][src[i * 3 + (2 - c)]]);
    free(src);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plans_match_resampler),
        cmocka_unit_test(test_orientation_on_read),
        cmocka_unit_test(test_hpass_thread_order),
        cmocka_unit_test(test_taps_refuses_bad_windows),
        cmocka_unit_test(test_lut_is_preprocess),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
