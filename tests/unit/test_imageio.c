/* Tests for the image module: decoding of every colour type and broken input,
 * EXIF orientation, scaled JPEG decode, PIL-exact resampling, torchvision
 * parity on real photos, config parsing, overlays and encoding.
 *
 * Data: tests/data/images/ (made by make_images.py there) and
 * tests/golden/preprocess/ (tools/preprocess_reference.py); the parity test
 * skips when Debian's darknet photos are absent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "camserve/imageio.h"
#include "camserve/npy.h"
#include "imageio/imageio_internal.h"
#include "util/team.h"

#include <zlib.h>

#ifndef CS_SOURCE_DIR
#define CS_SOURCE_DIR "."
#endif
#define IMG_DIR CS_SOURCE_DIR "/tests/data/images/"
#define GOLDEN_DIR CS_SOURCE_DIR "/tests/golden/preprocess/"
#ifndef CS_DARKNET_DIR
#define CS_DARKNET_DIR "/usr/share/darknet/data/"
#endif
#define DARKNET_DIR CS_DARKNET_DIR

typedef struct blob {
    uint8_t *data;
    size_t len;
} blob;

static blob read_blob(const char *path) {
    blob b = {0};
    cs_error err = {0};
    if (cs_img_read_file(path, (size_t)64 << 20, &b.data, &b.len, &err) != CS_OK)
        fail_msg("cannot read %s: %s", path, err.msg);
    return b;
}

static void decode_file(const char *name, int need_w, int need_h, cs_image *img) {
    char path[512];
    snprintf(path, sizeof path, IMG_DIR "%s", name);
    cs_error err = {0};
    cs_status st = cs_img_load(path, NULL, need_w, need_h, img, &err);
    if (st != CS_OK) fail_msg("%s: %s", name, err.msg);
    assert_int_equal(img->channels, 3);
}

static const uint8_t *px(const cs_image *img, int x, int y) {
    return img->rgb + ((size_t)y * img->width + x) * img->channels;
}

static void assert_rgb_near(const uint8_t *p, int r, int g, int b, int tol) {
    if (abs(p[0] - r) > tol || abs(p[1] - g) > tol || abs(p[2] - b) > tol)
        fail_msg("pixel (%d,%d,%d) != expected (%d,%d,%d) +-%d", p[0], p[1], p[2], r, g, b, tol);
}

/* A smooth photo-like pattern with texture, deterministic. */
static uint8_t *make_pattern(int w, int h) {
    uint8_t *p = malloc((size_t)w * h * 3);
    assert_non_null(p);
    uint32_t s = 12345;
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            s = s * 1664525u + 1013904223u;
            int n = (int)(s >> 27) - 16;
            double fx = (double)x / w, fy = (double)y / h;
            int r = (int)(128 + 100 * sin(6.0 * fx + 2.0 * fy)) + n;
            int g = (int)(128 + 90 * cos(4.0 * fy - 3.0 * fx * fy)) + n;
            int b = (int)(100 + 80 * sin(9.0 * fx * fy)) + n;
            uint8_t *q = p + ((size_t)y * w + x) * 3;
            q[0] = (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
            q[1] = (uint8_t)(g < 0 ? 0 : g > 255 ? 255 : g);
            q[2] = (uint8_t)(b < 0 ? 0 : b > 255 ? 255 : b);
        }
    }
    return p;
}

static blob encode_pattern(int w, int h, cs_img_format fmt, int quality) {
    cs_image img = {.width = w, .height = h, .channels = 3, .rgb = make_pattern(w, h)};
    blob b = {0};
    cs_error err = {0};
    if (cs_img_encode(&img, fmt, quality, &b.data, &b.len, &err) != CS_OK) fail_msg("%s", err.msg);
    cs_img_free(&img);
    return b;
}

/* ---- decoding ------------------------------------------------------------ */

static void test_sniff(void **state) {
    (void)state;
    const uint8_t jpg[] = {0xFF, 0xD8, 0xFF, 0xE0};
    const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    const uint8_t webp[] = {'R', 'I', 'F', 'F', 1, 2, 3, 4, 'W', 'E', 'B', 'P'};
    assert_int_equal(cs_img_sniff(jpg, sizeof jpg), CS_IMG_FORMAT_JPEG);
    assert_int_equal(cs_img_sniff(png, sizeof png), CS_IMG_FORMAT_PNG);
    assert_int_equal(cs_img_sniff(webp, sizeof webp), CS_IMG_FORMAT_WEBP);
    assert_int_equal(cs_img_sniff(png, 7), CS_IMG_FORMAT_UNKNOWN);
    assert_int_equal(cs_img_sniff(NULL, 0), CS_IMG_FORMAT_UNKNOWN);
    assert_int_equal(cs_img_sniff("GIF89a", 6), CS_IMG_FORMAT_UNKNOWN);

    cs_image img = {0};
    cs_error err = {0};
    assert_int_equal(cs_img_decode("GIF89a........", 14, NULL, 0, 0, &img, &err), CS_EFORMAT);
    assert_string_equal(err.msg, "invalid image: unknown format");
    assert_int_equal(cs_img_decode("", 0, NULL, 0, 0, &img, &err), CS_EFORMAT);
    assert_null(img.rgb);
}

/* The PNG writer is ours: the container, Paeth rows and a deflate coder of
 * runs and literals, or Sub rows and libdeflate's LZ77 where a sample says
 * that codes better (encode.c).  libspng, which checks every CRC and the
 * zlib checksum, reads it back.  Contents: a photo-like pattern, flat (runs
 * across 64 KB blocks), noise (stored blocks), a checkerboard (LZ77), each
 * in RGB and gray; the sizes bound what each kind comes to. */
static void test_png_roundtrip_exact(void **state) {
    (void)state;
    static const int sizes[][2] = {{37, 23}, {1, 1}, {800, 600}, {2, 300}, {300, 2}};
    uint32_t r = 5;
    for (int k = 0; k < 40; k++) {
        const int gray = k & 1, kind = (k / 2) % 4, W = sizes[k / 8][0], H = sizes[k / 8][1];
        cs_image src = {.width = W, .height = H, .channels = 3, .rgb = make_pattern(W, H)};
        for (int i = 0; i < W * H * 3; i++) {
            if (kind == 1) src.rgb[i] = (uint8_t)(90 + i % 3);
            if (kind == 2) src.rgb[i] = (uint8_t)((r = r * 1103515245u + 12345u) >> 23);
            if (kind == 3) src.rgb[i] = ((i / 3 % W) / 4 + (i / 3 / W) / 4) % 2 ? 240 : 16;
        }
        if (gray) {
            for (int i = 0; i < W * H; i++) src.rgb[i] = src.rgb[i * 3];
            src.channels = 1;
        }
        uint8_t *enc = NULL;
        size_t len = 0;
        cs_error err = {0};
        assert_int_equal(cs_img_encode(&src, CS_IMG_FORMAT_PNG, 0, &enc, &len, &err), CS_OK);
        cs_image dec = {0};
        assert_int_equal(cs_img_decode(enc, len, NULL, 0, 0, &dec, &err), CS_OK);
        assert_int_equal(dec.width, W);
        assert_int_equal(dec.height, H);
        assert_int_equal(dec.channels, 3);
        for (int i = 0; i < W * H; i++)
            for (int c = 0; c < 3; c++)
                assert_int_equal(dec.rgb[i * 3 + c], src.rgb[gray ? i : i * 3 + c]);
        const size_t raw = (size_t)(W * src.channels + 1) * H;
        if (W * H >= 10000) { /* 800x600: what each kind of content comes to */
            /* the RGB pattern has the same noise in R, G and B, which LZ77
             * codes best (~0.57 of the raw size); flat content must
             * come to almost nothing, noise to no more than stored blocks */
            const size_t most[] = {gray ? raw * 3 / 4 : raw * 3 / 5, raw / 256, raw + raw / 65535 * 5 + 100,
                                   raw / 50};
            if (len > most[kind])
                fail_msg("%dx%d %s kind %d: %zu bytes, expected <= %zu", W, H,
                         gray ? "gray" : "rgb", kind, len, most[kind]);
        }
        free(enc);
        cs_img_free(&dec);
        cs_img_free(&src);
    }
}

static void test_lossy_roundtrip(void **state) {
    (void)state;
    cs_img_format fmts[] = {CS_IMG_FORMAT_JPEG, CS_IMG_FORMAT_WEBP};
    for (int f = 0; f < 2; f++) {
        blob b = encode_pattern(96, 64, fmts[f], 95);
        assert_int_equal(cs_img_sniff(b.data, b.len), fmts[f]);
        cs_image dec = {0};
        cs_error err = {0};
        assert_int_equal(cs_img_decode(b.data, b.len, NULL, 0, 0, &dec, &err), CS_OK);
        assert_int_equal(dec.width, 96);
        assert_int_equal(dec.height, 64);
        uint8_t *ref = make_pattern(96, 64);
        double sum = 0;
        for (int i = 0; i < 96 * 64 * 3; i++) sum += abs(ref[i] - dec.rgb[i]);
        assert_true(sum / (96 * 64 * 3) < 8.0); /* noise is expensive, but q95 keeps it */
        free(ref);
        free(b.data);
        cs_img_free(&dec);
    }
}

static void test_gray_jpeg(void **state) {
    (void)state;
    cs_image img = {0};
    decode_file("gray.jpg", 0, 0, &img);
    assert_int_equal(img.width, 64);
    assert_int_equal(img.height, 48);
    for (int x = 2; x < 62; x += 10) {
        const uint8_t *p = px(&img, x, 20);
        assert_int_equal(p[0], p[1]);
        assert_int_equal(p[1], p[2]);
        assert_true(abs(p[0] - x * 4) <= 6);
    }
    cs_img_free(&img);
}

static void test_cmyk_jpeg(void **state) {
    (void)state;
    cs_image img = {0};
    decode_file("cmyk.jpg", 0, 0, &img);
    blob ref = read_blob(IMG_DIR "cmyk.rgb");
    assert_int_equal(ref.len, (size_t)img.width * img.height * 3);
    int maxd = 0;
    for (size_t i = 0; i < ref.len; i++) {
        int d = abs(ref.data[i] - img.rgb[i]);
        if (d > maxd) maxd = d;
    }
    assert_true(maxd <= 1); /* same libjpeg, same MULDIV255: PIL's bytes */
    assert_rgb_near(px(&img, 4, 8), 200, 40, 30, 12);
    assert_rgb_near(px(&img, 28, 8), 20, 120, 220, 12);
    free(ref.data);
    cs_img_free(&img);
}

static void test_png_16bit(void **state) {
    (void)state;
    cs_image img = {0};
    decode_file("rgb16.png", 0, 0, &img);
    assert_int_equal(img.width, 30);
    assert_int_equal(img.height, 20);
    for (int y = 0; y < 20; y += 3)
        for (int x = 0; x < 30; x += 4) {
            const uint8_t *p = px(&img, x, y);
            assert_int_equal(p[0], (x * 1031) >> 8);
            assert_int_equal(p[1], (y * 2053) >> 8);
            assert_int_equal(p[2], 40000 >> 8);
        }
    cs_img_free(&img);
    decode_file("gray16.png", 0, 0, &img);
    for (int x = 0; x < 30; x++) {
        const uint8_t *p = px(&img, x, 5);
        assert_int_equal(p[0], (x * 2111) >> 8);
        assert_int_equal(p[2], p[0]);
    }
    cs_img_free(&img);
}

static void test_png_palette_and_alpha(void **state) {
    (void)state;
    static const uint8_t pal[4][3] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {250, 250, 10}};
    cs_image img = {0};
    decode_file("palette.png", 0, 0, &img);
    for (int y = 0; y < img.height; y++)
        for (int x = 0; x < img.width; x++)
            assert_memory_equal(px(&img, x, y), pal[(x + y) % 4], 3); /* tRNS ignored */
    cs_img_free(&img);

    decode_file("la.png", 0, 0, &img);
    for (int x = 0; x < 30; x++) assert_rgb_near(px(&img, x, 3), x * 8, x * 8, x * 8, 0);
    cs_img_free(&img);

    decode_file("rgba.png", 0, 0, &img);
    for (int x = 0; x < 30; x += 5) assert_rgb_near(px(&img, x, 7), x * 8, 7 * 12, 99, 0);
    cs_img_free(&img);
}

static void test_exif_orientation(void **state) {
    (void)state;
    for (int o = 1; o <= 8; o++) {
        char name[32];
        snprintf(name, sizeof name, "orient_%d.jpg", o);
        char path[512];
        snprintf(path, sizeof path, IMG_DIR "%s", name);
        blob b = read_blob(path);
        assert_int_equal(cs_img_jpeg_orientation(b.data, b.len), o);
        free(b.data);
        cs_image img = {0};
        decode_file(name, 0, 0, &img);
        if (img.width != 32 || img.height != 16)
            fail_msg("orientation %d: decoded %dx%d, want 32x16", o, img.width, img.height);
        assert_int_equal(img.orig_width, 32);
        assert_int_equal(img.orig_height, 16);
        assert_rgb_near(px(&img, 8, 4), 255, 0, 0, 40);
        assert_rgb_near(px(&img, 24, 4), 0, 255, 0, 40);
        assert_rgb_near(px(&img, 8, 12), 0, 0, 255, 40);
        assert_rgb_near(px(&img, 24, 12), 255, 255, 255, 40);
        cs_img_free(&img);
    }
}

/* DCT scaling must be chosen for the displayed (rotated) image: splice the
 * orientation-6 APP1 of a test file into a larger JPEG and ask for 20x60. */
static void test_exif_with_scaled_decode(void **state) {
    (void)state;
    blob ex = read_blob(IMG_DIR "orient_6.jpg");
    size_t i = 2, a0 = 0, a1 = 0;
    while (i + 4 <= ex.len && ex.data[i] == 0xFF) {
        size_t seg = (size_t)ex.data[i + 2] << 8 | ex.data[i + 3];
        if (ex.data[i + 1] == 0xE1) {
            a0 = i;
            a1 = i + 2 + seg;
            break;
        }
        i += 2 + seg;
    }
    assert_true(a1 > a0 && a1 <= ex.len);
    blob jpg = encode_pattern(160, 48, CS_IMG_FORMAT_JPEG, 90);
    size_t n = jpg.len + (a1 - a0);
    uint8_t *buf = malloc(n);
    memcpy(buf, jpg.data, 2);
    memcpy(buf + 2, ex.data + a0, a1 - a0);
    memcpy(buf + 2 + (a1 - a0), jpg.data + 2, jpg.len - 2);
    assert_int_equal(cs_img_jpeg_orientation(buf, n), 6);
    cs_image img = {0};
    cs_error err = {0};
    assert_int_equal(cs_img_decode(buf, n, NULL, 20, 60, &img, &err), CS_OK);
    assert_int_equal(img.orig_width, 48);
    assert_int_equal(img.orig_height, 160);
    assert_int_equal(img.width, 24); /* 1/2 covers 20x60 once rotated; 1/4 would not */
    assert_int_equal(img.height, 80);
    cs_img_free(&img);
    free(buf);
    free(jpg.data);
    free(ex.data);
}

static void test_exif_parser_bounds(void **state) {
    (void)state;
    /* SOI, APP1 "Exif" with a big-endian TIFF whose IFD0 holds orientation 6 */
    uint8_t j[64] = {0xFF, 0xD8, 0xFF, 0xE1, 0, 34, 'E', 'x', 'i', 'f', 0, 0,
                     'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1,
                     0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0,
                     0, 0, 0, 0, 0xFF, 0xD9};
    assert_int_equal(cs_img_jpeg_orientation(j, 40), 6);
    /* the IFD's entry runs past the segment end: ignored */
    uint8_t k[64];
    memcpy(k, j, sizeof k);
    k[5] = 26;
    assert_int_equal(cs_img_jpeg_orientation(k, 40), 1);
    /* IFD offset beyond the data */
    memcpy(k, j, sizeof k);
    k[19] = 200;
    assert_int_equal(cs_img_jpeg_orientation(k, 40), 1);
    /* entry count larger than the data */
    memcpy(k, j, sizeof k);
    k[20] = 0xFF;
    k[21] = 0xFF;
    assert_int_equal(cs_img_jpeg_orientation(k, 40), 6);
    /* value out of range */
    memcpy(k, j, sizeof k);
    k[31] = 9;
    assert_int_equal(cs_img_jpeg_orientation(k, 40), 1);
    /* segment length running past the buffer, and every truncation */
    for (size_t n = 0; n < 40; n++) {
        int o = cs_img_jpeg_orientation(j, n);
        assert_true(o == 1 || o == 6);
    }
    memcpy(k, j, sizeof k);
    k[4] = 0xFF;
    assert_int_equal(cs_img_jpeg_orientation(k, 40), 1);
}

static void test_webp(void **state) {
    (void)state;
    cs_image img = {0};
    decode_file("still.webp", 0, 0, &img);
    assert_int_equal(img.width, 24);
    assert_int_equal(img.height, 16);
    for (int y = 0; y < 16; y += 5)
        for (int x = 0; x < 24; x += 5) assert_rgb_near(px(&img, x, y), (x * 1031) >> 8, (y * 2053) >> 8, 156, 0);
    cs_img_free(&img);
    decode_file("anim.webp", 0, 0, &img);
    assert_int_equal(img.width, 24);
    assert_int_equal(img.height, 16);
    assert_rgb_near(px(&img, 12, 8), 255, 0, 0, 0);
    cs_img_free(&img);
}

/* Every cut of a valid file that loses pixel data must be an "invalid image"
 * error, never a crash or a partial image. */
static void check_truncations(const blob *b, size_t keep_tail_ok, const char *what) {
    for (size_t n = 0; n + keep_tail_ok < b->len; n += (n < 64 ? 1 : 7)) {
        uint8_t *copy = malloc(n ? n : 1); /* exact size: ASan catches overreads */
        memcpy(copy, b->data, n);
        cs_image img = {0};
        cs_error err = {0};
        cs_status st = cs_img_decode(copy, n, NULL, 0, 0, &img, &err);
        if (st != CS_EFORMAT) fail_msg("%s cut at %zu/%zu: status %d (%s)", what, n, b->len, st, err.msg);
        if (strncmp(err.msg, "invalid image: ", 15) != 0) fail_msg("%s: message '%s'", what, err.msg);
        assert_null(img.rgb);
        free(copy);
    }
}

static void test_truncated(void **state) {
    (void)state;
    blob jpg = encode_pattern(40, 24, CS_IMG_FORMAT_JPEG, 90);
    check_truncations(&jpg, 0, "jpeg");
    free(jpg.data);
    blob prog = read_blob(IMG_DIR "orient_6.jpg");
    check_truncations(&prog, 0, "jpeg+exif");
    free(prog.data);
    blob png = read_blob(IMG_DIR "resize_src.png");
    check_truncations(&png, 16, "png"); /* IEND and the last CRC missing: pixels whole */
    free(png.data);
    blob webp = encode_pattern(40, 24, CS_IMG_FORMAT_WEBP, 80);
    check_truncations(&webp, 0, "webp");
    free(webp.data);
    blob ll = read_blob(IMG_DIR "still.webp");
    check_truncations(&ll, 0, "webp lossless");
    free(ll.data);
    blob anim = read_blob(IMG_DIR "anim.webp");
    check_truncations(&anim, 0, "webp anim");
    free(anim.data);
}

static void test_corrupt_no_crash(void **state) {
    (void)state;
    blob files[4];
    files[0] = encode_pattern(40, 24, CS_IMG_FORMAT_JPEG, 90);
    files[1] = read_blob(IMG_DIR "resize_src.png");
    files[2] = encode_pattern(40, 24, CS_IMG_FORMAT_WEBP, 80);
    files[3] = read_blob(IMG_DIR "anim.webp");
    uint32_t s = 99;
    for (int f = 0; f < 4; f++) {
        for (int trial = 0; trial < 150; trial++) {
            uint8_t *copy = malloc(files[f].len);
            memcpy(copy, files[f].data, files[f].len);
            for (int k = 0; k < 1 + trial % 4; k++) {
                s = s * 1664525u + 1013904223u;
                size_t at = 2 + (s >> 8) % (files[f].len - 2); /* keep the magic */
                copy[at] ^= (uint8_t)(1 + (s >> 3) % 255);
            }
            cs_image img = {0};
            cs_error err = {0};
            cs_status st = cs_img_decode(copy, files[f].len, NULL, 0, 0, &img, &err);
            assert_true(st == CS_OK || st == CS_EFORMAT || st == CS_ELIMIT);
            if (st == CS_EFORMAT) assert_int_equal(strncmp(err.msg, "invalid image: ", 15), 0);
            if (st == CS_OK) assert_non_null(img.rgb);
            cs_img_free(&img);
            free(copy);
        }
        free(files[f].data);
    }
}

static void test_limits(void **state) {
    (void)state;
    const char *files[] = {"gray.jpg", "resize_src.png", "still.webp", "anim.webp"};
    for (int i = 0; i < 4; i++) {
        char path[512];
        snprintf(path, sizeof path, IMG_DIR "%s", files[i]);
        blob b = read_blob(path);
        cs_img_limits lim = cs_img_limits_default();
        assert_int_equal(lim.max_bytes, 25u * 1000 * 1000);
        assert_int_equal(lim.max_pixels, 50ll * 1000 * 1000);
        lim.max_pixels = 100;
        cs_image img = {0};
        cs_error err = {0};
        assert_int_equal(cs_img_decode(b.data, b.len, &lim, 0, 0, &img, &err), CS_ELIMIT);
        assert_null(img.rgb);
        lim = cs_img_limits_default();
        lim.max_bytes = b.len - 1;
        assert_int_equal(cs_img_decode(b.data, b.len, &lim, 0, 0, &img, &err), CS_ELIMIT);
        assert_int_equal(cs_img_load(path, &lim, 0, 0, &img, &err), CS_ELIMIT);
        lim.max_bytes = b.len;
        assert_int_equal(cs_img_decode(b.data, b.len, &lim, 0, 0, &img, &err), CS_OK);
        cs_img_free(&img);
        free(b.data);
    }
    /* a PNG header claiming 100000 x 100000: refused before any allocation */
    blob png = read_blob(IMG_DIR "resize_src.png");
    uint8_t hdr[33];
    memcpy(hdr, png.data, 33);
    free(png.data);
    cs_image img = {0};
    cs_error err = {0};
    hdr[16] = 0; hdr[17] = 1; hdr[18] = 0x86; hdr[19] = 0xA0;
    hdr[20] = 0; hdr[21] = 1; hdr[22] = 0x86; hdr[23] = 0xA0;
    cs_status st = cs_img_decode(hdr, sizeof hdr, NULL, 0, 0, &img, &err);
    assert_true(st == CS_ELIMIT || st == CS_EFORMAT); /* the IHDR CRC no longer matches */
}

static void test_scaled_decode_4000x3000(void **state) {
    (void)state;
    blob b = encode_pattern(4000, 3000, CS_IMG_FORMAT_JPEG, 92);
    cs_image img = {0};
    cs_error err = {0};
    assert_int_equal(cs_img_decode(b.data, b.len, NULL, 256, 256, &img, &err), CS_OK);
    assert_int_equal(img.width, 500); /* 1/8: 375 >= 256 */
    assert_int_equal(img.height, 375);
    assert_int_equal(img.orig_width, 4000);
    assert_int_equal(img.orig_height, 3000);
    cs_preproc p = cs_img_preproc_default();
    float *t = malloc(sizeof(float) * 3 * 224 * 224);
    assert_int_equal(cs_img_preprocess(&img, &p, t, &err), CS_OK);
    for (int i = 0; i < 3 * 224 * 224; i++) assert_true(isfinite(t[i]) && fabsf(t[i]) < 3.0f);
    cs_img_free(&img);

    int nw, nh;
    cs_img_preproc_need(&p, &nw, &nh);
    assert_int_equal(cs_img_decode(b.data, b.len, NULL, nw, nh, &img, &err), CS_OK);
    assert_int_equal(img.width, 1000); /* 1/4: 750 >= 512 */
    assert_int_equal(img.height, 750);
    /* the two scales agree on the tensor to within the parity tolerance */
    float *t2 = malloc(sizeof(float) * 3 * 224 * 224);
    assert_int_equal(cs_img_preprocess(&img, &p, t2, &err), CS_OK);
    double sum = 0;
    for (int i = 0; i < 3 * 224 * 224; i++) sum += fabsf(t[i] - t2[i]);
    print_message("4000x3000 q92: 1/8 vs 1/4 decode: mean |diff| %.4f\n", sum / (3 * 224 * 224));
    cs_img_free(&img);
    free(t);
    free(t2);
    free(b.data);
}

/* ---- resampling and preprocessing --------------------------------------- */

static void test_resize_matches_pil(void **state) {
    (void)state;
    cs_image src = {0};
    decode_file("resize_src.png", 0, 0, &src);
    const char *names[] = {"bilinear", "bicubic"};
    const int sizes[][2] = {{20, 13}, {61, 30}, {130, 101}};
    for (int f = 0; f < 2; f++)
        for (int s = 0; s < 3; s++) {
            char path[512];
            snprintf(path, sizeof path, IMG_DIR "resize_%s_%dx%d.rgb", names[f], sizes[s][0], sizes[s][1]);
            blob ref = read_blob(path);
            cs_image out = {0};
            cs_error err = {0};
            assert_int_equal(cs_img_resize(&src, sizes[s][0], sizes[s][1], (cs_img_interp)f, &out, &err), CS_OK);
            assert_int_equal(ref.len, (size_t)out.width * out.height * 3);
            if (memcmp(ref.data, out.rgb, ref.len) != 0) fail_msg("%s differs from PIL", path);
            free(ref.data);
            cs_img_free(&out);
        }
    cs_img_free(&src);
}

/* PIL 9's Resample.c for 8-bit images written plainly -- per output a
 * variable number of taps, one byte at a time, horizontal pass into bytes
 * then vertical -- as the resampler was before its passes were vectorised.
 * The fast passes must give the same bytes on every shape, which the PIL
 * files above (three sizes) cannot cover on their own. */
static double ref_filter(int bicubic, double x) {
    if (x < 0.0) x = -x;
    if (!bicubic) return x < 1.0 ? 1.0 - x : 0.0;
    const double a = -0.5;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* bounds[2 * i] = first tap, bounds[2 * i + 1] = taps; kk: ksize per output */
static int ref_coeffs(int in_size, float in0, float in1, int out_size, int bicubic, int *bounds,
                      int32_t **kk) {
    double scale = (double)(in1 - in0) / out_size, fs = scale < 1.0 ? 1.0 : scale;
    double support = (bicubic ? 2.0 : 1.0) * fs;
    int ksize = (int)ceil(support) * 2 + 1;
    *kk = calloc((size_t)ksize * out_size, sizeof(int32_t));
    double *k = malloc(sizeof(double) * ksize);
    for (int xx = 0; xx < out_size; xx++) {
        double center = in0 + (xx + 0.5) * scale, ww = 0.0;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        if (xmax < 0) xmax = 0;
        for (int x = 0; x < xmax; x++) {
            k[x] = ref_filter(bicubic, (x + xmin - center + 0.5) / fs);
            ww += k[x];
        }
        for (int x = 0; x < xmax; x++) {
            double v = ww != 0.0 ? k[x] / ww : k[x];
            (*kk)[xx * ksize + x] = v < 0 ? (int32_t)(-0.5 + v * (1 << 22)) : (int32_t)(0.5 + v * (1 << 22));
        }
        bounds[xx * 2] = xmin;
        bounds[xx * 2 + 1] = xmax;
    }
    free(k);
    return ksize;
}

static uint8_t ref_clip(int32_t v) { return v >= 1 << 30 ? 255 : v <= 0 ? 0 : (uint8_t)(v >> 22); }

/* the whole rw x rh resize of box */
static uint8_t *ref_resize(const uint8_t *src, int sw, int sh, int C, const float box[4], int rw,
                           int rh, int bicubic) {
    int *bx = malloc(sizeof(int) * 2 * rw), *by = malloc(sizeof(int) * 2 * rh);
    int32_t *kx, *ky;
    const int nx = ref_coeffs(sw, box[0], box[2], rw, bicubic, bx, &kx);
    const int ny = ref_coeffs(sh, box[1], box[3], rh, bicubic, by, &ky);
    uint8_t *tmp = malloc((size_t)sh * rw * C), *out = malloc((size_t)rh * rw * C);
    for (int y = 0; y < sh; y++)
        for (int x = 0; x < rw; x++)
            for (int c = 0; c < C; c++) {
                int32_t acc = 1 << 21;
                for (int t = 0; t < bx[x * 2 + 1]; t++)
                    acc += src[((size_t)y * sw + bx[x * 2] + t) * C + c] * kx[x * nx + t];
                tmp[((size_t)y * rw + x) * C + c] = ref_clip(acc);
            }
    for (int y = 0; y < rh; y++)
        for (size_t i = 0; i < (size_t)rw * C; i++) {
            int32_t acc = 1 << 21;
            for (int t = 0; t < by[y * 2 + 1]; t++)
                acc += tmp[(size_t)(by[y * 2] + t) * rw * C + i] * ky[y * ny + t];
            out[(size_t)y * rw * C + i] = ref_clip(acc);
        }
    free(bx);
    free(by);
    free(kx);
    free(ky);
    free(tmp);
    return out;
}

static void test_resize_matches_reference(void **state) {
    (void)state;
    uint32_t r = 99;
#define RND(n) ((int)((r = r * 1664525u + 1013904223u) >> 8) % (n))
    for (int k = 0; k < 120; k++) {
        const int C = k % 3 == 2 ? 1 : 3, bicubic = k & 1;
        const int sw = 1 + RND(k < 60 ? 40 : 700), sh = 1 + RND(k < 60 ? 40 : 300);
        /* down and up, by small and large factors */
        const int rw = 1 + (k % 4 == 0 ? RND(3 * sw) : RND(sw + 1)), rh = 1 + RND(2 * sh);
        uint8_t *src = malloc((size_t)sw * sh * C);
        for (size_t i = 0; i < (size_t)sw * sh * C; i++) src[i] = (uint8_t)(RND(4) ? RND(256) : (int)(i / 7) * 13);
        const float box[4] = {k % 5 == 0 ? 0.25f * RND(4) : 0.0f, 0.0f,
                              (float)sw - (k % 7 == 0 ? 0.5f : 0.0f), (float)sh};
        uint8_t *ref = ref_resize(src, sw, sh, C, box, rw, rh, bicubic);
        /* the whole output, then a window (the centre-crop path) */
        const int x0 = RND(rw), y0 = RND(rh), x1 = x0 + 1 + RND(rw - x0), y1 = y0 + 1 + RND(rh - y0);
        const int wins[2][4] = {{0, rw, 0, rh}, {x0, x1, y0, y1}};
        for (int w = 0; w < 2; w++) {
            const int ow = wins[w][1] - wins[w][0], oh = wins[w][3] - wins[w][2];
            uint8_t *out = malloc((size_t)ow * oh * C);
            cs_error err = {0};
            assert_int_equal(cs_img_resample_window(src, sw, sh, C, box, rw, rh, wins[w][0], wins[w][1],
                                                    wins[w][2], wins[w][3], (cs_img_interp)bicubic,
                                                    out, (size_t)ow * C, &err),
                             CS_OK);
            for (int y = 0; y < oh; y++)
                if (memcmp(out + (size_t)y * ow * C,
                           ref + ((size_t)(wins[w][2] + y) * rw + wins[w][0]) * C, (size_t)ow * C))
                    fail_msg("case %d: %dx%dx%d -> %dx%d %s, window %d differs at row %d", k, sw, sh,
                             C, rw, rh, bicubic ? "bicubic" : "bilinear", w, y);
            free(out);
        }
        free(ref);
        free(src);
    }
#undef RND
}

static void test_geometry(void **state) {
    (void)state;
    cs_preproc p = cs_img_preproc_default();
    int rw, rh, cx, cy;
    cs_img_preproc_geometry(&p, 773, 512, &rw, &rh, &cx, &cy);
    assert_int_equal(rw, 386); /* int(256 * 773 / 512) */
    assert_int_equal(rh, 256);
    assert_int_equal(cx, 81);
    assert_int_equal(cy, 16);
    cs_img_preproc_geometry(&p, 352, 448, &rw, &rh, &cx, &cy);
    assert_int_equal(rw, 256);
    assert_int_equal(rh, 325);
    assert_int_equal(cy, 50); /* round(50.5) = 50: Python rounds half to even */
    p.resize = 0;
    cs_img_preproc_geometry(&p, 227, 100, &rw, &rh, &cx, &cy);
    assert_int_equal(cx, 2);   /* round(1.5) */
    assert_int_equal(cy, -62); /* padded: (224 - 100) // 2 */
    p.resize_w = 300;
    p.resize_h = 200;
    cs_img_preproc_geometry(&p, 50, 4000, &rw, &rh, &cx, &cy);
    assert_int_equal(rw, 300);
    assert_int_equal(rh, 200);
}

static void test_preprocess_values(void **state) {
    (void)state;
    /* solid colour: every tensor value is the formula applied to it */
    cs_image img = {.width = 300, .height = 260, .channels = 3};
    img.rgb = malloc(300 * 260 * 3);
    for (int i = 0; i < 300 * 260; i++) {
        img.rgb[i * 3] = 10;
        img.rgb[i * 3 + 1] = 128;
        img.rgb[i * 3 + 2] = 250;
    }
    img.orig_width = 300;
    img.orig_height = 260;
    cs_preproc p = cs_img_preproc_default();
    float *t = malloc(sizeof(float) * 3 * 224 * 224);
    cs_error err = {0};
    assert_int_equal(cs_img_preprocess(&img, &p, t, &err), CS_OK);
    const int v[3] = {10, 128, 250};
    for (int c = 0; c < 3; c++) {
        float want = (v[c] / 255.0f - p.mean[c]) / p.std[c];
        assert_true(fabsf(t[c * 224 * 224 + 1000] - want) < 1e-5f);
    }
    p.order = CS_IMG_ORDER_BGR;
    p.crop_w = 320; /* wider than the resized 295: zero padding on both sides */
    float *t2 = malloc(sizeof(float) * 3 * 224 * 320);
    assert_int_equal(cs_img_preprocess(&img, &p, t2, &err), CS_OK);
    assert_true(fabsf(t2[0 * 224 * 320 + 100 * 320 + 160] - (250 / 255.0f - p.mean[0]) / p.std[0]) < 1e-5f);
    assert_true(fabsf(t2[2 * 224 * 320 + 100 * 320 + 160] - (10 / 255.0f - p.mean[2]) / p.std[2]) < 1e-5f);
    assert_true(fabsf(t2[100 * 320 + 0] - (0 - p.mean[0]) / p.std[0]) < 1e-5f);
    p.std[1] = 0;
    assert_int_equal(cs_img_preprocess(&img, &p, t2, &err), CS_EINVAL);
    free(t);
    free(t2);
    cs_img_free(&img);
}

typedef struct parity {
    double mean, max;
    int exact;
} parity;

static parity compare_photo(const char *name, int margin2, cs_image *img_out) {
    char path[512];
    snprintf(path, sizeof path, DARKNET_DIR "%s.jpg", name);
    cs_preproc p = cs_img_preproc_default();
    int nw, nh;
    cs_img_preproc_need(&p, &nw, &nh);
    if (!margin2) nw = nh = p.resize;
    cs_image img = {0};
    cs_error err = {0};
    if (cs_img_load(path, NULL, nw, nh, &img, &err) != CS_OK) fail_msg("%s: %s", path, err.msg);
    float *t = malloc(sizeof(float) * 3 * 224 * 224);
    assert_int_equal(cs_img_preprocess(&img, &p, t, &err), CS_OK);
    snprintf(path, sizeof path, GOLDEN_DIR "%s.u8", name);
    blob ref = read_blob(path);
    assert_int_equal(ref.len, 224 * 224 * 3);
    parity r = {0, 0, 1};
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < 224 * 224; i++) {
            float want = ((float)ref.data[i * 3 + c] / 255.0f - p.mean[c]) / p.std[c];
            double d = fabs((double)t[c * 224 * 224 + i] - want);
            r.mean += d;
            if (d > r.max) r.max = d;
            if (d > 1e-5) r.exact = 0;
        }
    r.mean /= 3 * 224 * 224;
    free(ref.data);
    free(t);
    if (img_out) *img_out = img;
    else cs_img_free(&img);
    return r;
}

static void test_parity_torchvision(void **state) {
    (void)state;
    if (access(DARKNET_DIR "dog.jpg", R_OK) != 0) {
        print_message("skipping parity: " DARKNET_DIR " is absent (apt install darknet)\n");
        skip();
    }
    blob mf = read_blob(GOLDEN_DIR "manifest.json");
    json_t *root = json_loadb((const char *)mf.data, mf.len, 0, NULL);
    free(mf.data);
    assert_non_null(root);
    json_t *photos = json_object_get(root, "photos");
    const char *name;
    json_t *info;
    int checked = 0;
    json_object_foreach(photos, name, info) {
        char path[512];
        snprintf(path, sizeof path, DARKNET_DIR "%s.jpg", name);
        struct stat sb;
        if (stat(path, &sb) != 0 ||
            (json_int_t)sb.st_size != json_integer_value(json_object_get(info, "bytes"))) {
            print_message("skipping %s: not the photo the golden was made from\n", name);
            continue;
        }
        cs_image img = {0};
        parity r = compare_photo(name, 1, &img);
        parity r1 = compare_photo(name, 0, NULL);
        print_message("parity %-8s %4dx%-4d decoded %4dx%-4d mean %.5f max %.5f%s | 1x-margin "
                      "decode: mean %.4f max %.4f\n",
                      name, img.orig_width, img.orig_height, img.width, img.height, r.mean, r.max,
                      r.exact ? " (bit-exact)" : "", r1.mean, r1.max);
        assert_true(r.mean <= 0.01);
        assert_true(r.max <= 0.15);
        cs_img_free(&img);
        checked++;
    }
    json_decref(root);
    assert_true(checked > 0);

    /* the whole tensor, Normalize included, straight from torchvision */
    cs_npy ref = {0};
    cs_error err = {0};
    assert_int_equal(cs_npy_load(GOLDEN_DIR "dog.npy", &ref, &err), CS_OK);
    assert_int_equal(cs_npy_count(&ref), 3 * 224 * 224);
    cs_image img = {0};
    cs_preproc p = cs_img_preproc_default();
    int nw, nh;
    cs_img_preproc_need(&p, &nw, &nh);
    assert_int_equal(cs_img_load(DARKNET_DIR "dog.jpg", NULL, nw, nh, &img, &err), CS_OK);
    float *t = malloc(sizeof(float) * 3 * 224 * 224);
    assert_int_equal(cs_img_preprocess(&img, &p, t, &err), CS_OK);
    double maxd = 0;
    for (int i = 0; i < 3 * 224 * 224; i++) maxd = fmax(maxd, fabs(t[i] - ref.data[i]));
    print_message("dog.npy (torchvision float tensor): max |diff| %.2g\n", maxd);
    assert_true(maxd < 1e-5);
    free(t);
    cs_img_free(&img);
    cs_npy_free(&ref);
}

/* ---- config ---------------------------------------------------------------- */

static void test_json_config(void **state) {
    (void)state;
    cs_preproc p = cs_img_preproc_default();
    char *labels = NULL;
    cs_error err = {0};
    assert_int_equal(cs_img_preproc_from_json(
                         "{\"labels\": \"l.txt\", \"resize\": 320, \"crop\": [288, 300],"
                         " \"interpolation\": \"bicubic\", \"mean\": [0.5, 0.5, 0.5], \"std\": 0.25,"
                         " \"channel_order\": \"BGR\", \"scale\": 1.0, \"other_tool\": {}}",
                         &p, &labels, &err),
                     CS_OK);
    assert_string_equal(labels, "l.txt");
    free(labels);
    assert_int_equal(p.resize, 320);
    assert_int_equal(p.crop_h, 288);
    assert_int_equal(p.crop_w, 300);
    assert_int_equal(p.interp, CS_IMG_INTERP_BICUBIC);
    assert_true(p.std[2] == 0.25f && p.mean[1] == 0.5f && p.scale == 1.0f);
    assert_int_equal(p.order, CS_IMG_ORDER_BGR);

    p = cs_img_preproc_default();
    assert_int_equal(cs_img_preproc_from_json("{\"preprocess\": {\"crop\": 384}}", &p, NULL, &err), CS_OK);
    assert_int_equal(p.crop_w, 384);
    assert_int_equal(p.resize, 438); /* crop / 0.875 */
    assert_int_equal(cs_img_preproc_from_json("{\"resize\": [200, 100]}", &p, NULL, &err), CS_OK);
    assert_int_equal(p.resize_h, 200);
    assert_int_equal(p.resize_w, 100);

    const char *bad[] = {"", "[1]", "{\"crop\": \"big\"}", "{\"mean\": [1, 2]}", "{\"std\": [1, 0, 1]}",
                         "{\"interpolation\": \"lanczos\"}", "{\"channel_order\": 3}",
                         "{\"labels\": 5}", "{\"resize\": -1}", "{\"crop\": [0, 5]}",
                         "{\"preprocess\": 1}", "{\"a\": 1, \"a\": 2}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cs_preproc q = cs_img_preproc_default();
        labels = (char *)1;
        if (cs_img_preproc_from_json(bad[i], &q, &labels, &err) != CS_EINVAL) fail_msg("accepted %s", bad[i]);
        assert_null(labels);
        assert_int_equal(q.crop_w, 224); /* untouched on failure */
    }
}

static void test_config_for_model(void **state) {
    (void)state;
    char dir[] = "/tmp/cs_imgcfg_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char model[256], side[256];
    snprintf(model, sizeof model, "%s/net.onnx", dir);
    snprintf(side, sizeof side, "%s/net.json", dir);
    cs_preproc p;
    char *labels = NULL;
    const char *src = NULL;
    cs_error err = {0};
    /* nothing configured: defaults, crop from the model's input */
    assert_int_equal(cs_img_preproc_for_model(model, NULL, 299, 299, &p, &labels, &src, &err), CS_OK);
    assert_string_equal(src, "defaults");
    assert_null(labels);
    assert_int_equal(p.crop_w, 299);
    assert_int_equal(p.resize, 341);
    /* metadata */
    assert_int_equal(cs_img_preproc_for_model(model, "{\"labels\": \"in.txt\", \"resize\": 300}", 224, 224,
                                              &p, &labels, &src, &err),
                     CS_OK);
    assert_string_equal(src, "metadata");
    assert_int_equal(p.resize, 300);
    char want[300];
    snprintf(want, sizeof want, "%s/in.txt", dir);
    assert_string_equal(labels, want);
    free(labels);
    /* the sidecar wins over metadata */
    FILE *f = fopen(side, "w");
    assert_non_null(f);
    fputs("{\"labels\": \"/abs/labels.txt\", \"interpolation\": \"bicubic\"}", f);
    fclose(f);
    assert_int_equal(cs_img_preproc_for_model(model, "{\"resize\": 300}", 224, 224, &p, &labels, &src, &err), CS_OK);
    assert_string_equal(src, "sidecar");
    assert_string_equal(labels, "/abs/labels.txt");
    assert_int_equal(p.interp, CS_IMG_INTERP_BICUBIC);
    assert_int_equal(p.resize, 256);
    free(labels);
    f = fopen(side, "w");
    fputs("{\"crop\": true}", f);
    fclose(f);
    assert_int_equal(cs_img_preproc_for_model(model, NULL, 224, 224, &p, &labels, &src, &err), CS_EINVAL);
    assert_non_null(strstr(err.msg, "net.json"));
    unlink(side);
    rmdir(dir);
}

/* ---- overlay, heatmap, encode -------------------------------------------- */

static void test_colormaps(void **state) {
    (void)state;
    const uint8_t *jet = cs_img_colormap_lut(CS_IMG_CMAP_JET);
    /* cv2.applyColorMap(np.arange(256, dtype=np.uint8), COLORMAP_JET), as RGB */
    assert_rgb_near(jet + 0 * 3, 0, 0, 128, 0);
    assert_rgb_near(jet + 1 * 3, 0, 0, 132, 0);
    assert_rgb_near(jet + 32 * 3, 0, 0, 255, 0);
    assert_rgb_near(jet + 128 * 3, 130, 255, 126, 0);
    assert_rgb_near(jet + 255 * 3, 128, 0, 0, 0);
    /* matplotlib's end points (viridis/inferno fits are within a few levels) */
    assert_rgb_near(cs_img_colormap_lut(CS_IMG_CMAP_VIRIDIS), 68, 1, 84, 4);
    assert_rgb_near(cs_img_colormap_lut(CS_IMG_CMAP_VIRIDIS) + 765, 253, 231, 37, 4);
    assert_rgb_near(cs_img_colormap_lut(CS_IMG_CMAP_INFERNO), 0, 0, 4, 4);
    assert_rgb_near(cs_img_colormap_lut(CS_IMG_CMAP_INFERNO) + 765, 252, 255, 164, 5);
    const uint8_t *turbo = cs_img_colormap_lut(CS_IMG_CMAP_TURBO);
    assert_true(turbo[128 * 3 + 1] > 240 && turbo[765] > 100 && turbo[766] < 30);
    cs_img_colormap c;
    cs_error err = {0};
    assert_int_equal(cs_img_colormap_parse("Viridis", &c, &err), CS_OK);
    assert_int_equal(c, CS_IMG_CMAP_VIRIDIS);
    assert_string_equal(cs_img_colormap_name(c), "viridis");
    assert_int_equal(cs_img_colormap_parse("hot", &c, &err), CS_EINVAL);
}

static void test_overlay(void **state) {
    (void)state;
    cs_image img = {.width = 1000, .height = 500, .channels = 3};
    img.rgb = calloc(1000 * 500, 3);
    for (int i = 0; i < 1000 * 500 * 3; i++) img.rgb[i] = 40;
    float cam[4] = {0, 0, 0, 0};
    cs_image out = {0};
    cs_error err = {0};
    float box[4] = {250, 0, 750, 500};
    assert_int_equal(cs_img_overlay(&img, cam, 2, 2, box, CS_IMG_CMAP_JET, 0.5f, 0, &out, &err), CS_OK);
    assert_int_equal(out.width, 800);
    assert_int_equal(out.height, 400);
    /* inside: 0.5*jet[0]/255 + 0.5*40/255, normalised by its max (blue) */
    const uint8_t *in = px(&out, 400, 200);
    assert_rgb_near(in, (int)(255.0 * 20 / 84), (int)(255.0 * 20 / 84), 255, 1);
    assert_rgb_near(px(&out, 10, 10), 40, 40, 40, 0); /* outside the box */
    assert_rgb_near(px(&out, 199, 10), 40, 40, 40, 0); /* box: 200..600 at display size */
    assert_rgb_near(px(&out, 200, 10), in[0], in[1], in[2], 0);
    assert_rgb_near(px(&out, 599, 10), in[0], in[1], in[2], 0);
    assert_rgb_near(px(&out, 600, 10), 40, 40, 40, 0);
    assert_rgb_near(px(&out, 610, 10), 40, 40, 40, 0);
    cs_img_free(&out);

    /* a hot spot in one corner of a 7x7 map lands in the same corner */
    float c7[49] = {0};
    c7[0] = 1.0f;
    assert_int_equal(cs_img_overlay(&img, c7, 7, 7, NULL, CS_IMG_CMAP_JET, 0.5f, 500, &out, &err), CS_OK);
    assert_int_equal(out.width, 500);
    assert_int_equal(out.height, 250);
    const uint8_t *hot = px(&out, 2, 2), *cold = px(&out, 490, 240);
    assert_true(hot[0] > 3 * hot[1] && hot[1] == hot[2]); /* jet[255] = (128, 0, 0) */
    assert_true(cold[2] > cold[0]);
    cs_img_free(&out);

    assert_int_equal(cs_img_overlay(&img, c7, 7, 7, NULL, CS_IMG_CMAP_JET, 1.5f, 0, &out, &err), CS_EINVAL);
    assert_int_equal(cs_img_overlay(&img, NULL, 7, 7, NULL, CS_IMG_CMAP_JET, 0.5f, 0, &out, &err), CS_EINVAL);
    cs_img_free(&img);
}

static uint64_t fnv1a(const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211u;
    return h;
}

/* The overlay's bytes, pinned: the hashes were made by the per-byte float
 * blend (pytorch-grad-cam's show_cam_on_image, checked by test_overlay)
 * before the blend and the display resize were vectorised, which must not
 * change a byte -- every colormap, alpha 0 and 1, no box and a box that
 * sticks out, CAM values outside [0, 1] and NaN. */
static void test_overlay_unchanged(void **state) {
    (void)state;
    cs_image img = {.width = 1000, .height = 750, .channels = 3, .rgb = make_pattern(1000, 750)};
    cs_image small = {.width = 37, .height = 23, .channels = 3, .rgb = make_pattern(37, 23)};
    float c7[49], c35[15];
    for (int i = 0; i < 49; i++) c7[i] = (float)((i * 37) % 49) / 48.0f;
    for (int i = 0; i < 15; i++) c35[i] = (float)i / 10.0f - 0.2f;
    c35[7] = NAN;
    const float crop[4] = {140.625f, 46.875f, 859.375f, 703.125f}, part[4] = {-5.5f, 3.25f, 20.0f, 40.0f};
    const struct {
        const cs_image *img;
        const float *cam;
        int ch, cw;
        const float *box;
        cs_img_colormap cmap;
        float alpha;
        int max_side, w, h;
        uint64_t hash;
    } cases[] = {
        {&img, c7, 7, 7, crop, CS_IMG_CMAP_JET, 0.5f, 800, 800, 600, 0xd8140682e9d99e7du},
        {&img, c7, 7, 7, NULL, CS_IMG_CMAP_TURBO, 0.3f, 640, 640, 480, 0x94412e6d6c6698d2u},
        {&img, c35, 3, 5, crop, CS_IMG_CMAP_VIRIDIS, 1.0f, 1000, 1000, 750, 0xa6a6be38b4b5a110u},
        {&img, c7, 7, 7, crop, CS_IMG_CMAP_INFERNO, 0.0f, 333, 333, 250, 0x135aae5114ddb7ceu},
        {&small, c35, 3, 5, part, CS_IMG_CMAP_GRAY, 0.77f, 0, 37, 23, 0x56db95e8eefcde3eu},
        {&small, c7, 7, 7, NULL, CS_IMG_CMAP_JET, 0.5f, 16, 16, 10, 0x14b17f0d8d7bf473u},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        cs_image out = {0};
        cs_error err = {0};
        assert_int_equal(cs_img_overlay(cases[k].img, cases[k].cam, cases[k].ch, cases[k].cw,
                                        cases[k].box, cases[k].cmap, cases[k].alpha,
                                        cases[k].max_side, &out, &err),
                         CS_OK);
        assert_int_equal(out.width, cases[k].w);
        assert_int_equal(out.height, cases[k].h);
        const uint64_t h = fnv1a(out.rgb, (size_t)out.width * out.height * 3);
        if (h != cases[k].hash) fail_msg("overlay case %zu changed: %016llx", k, (unsigned long long)h);
        cs_img_free(&out);
    }
    cs_img_free(&img);
    cs_img_free(&small);
}

static void test_heatmap_and_encode(void **state) {
    (void)state;
    float cam[2] = {0.0f, 1.0f};
    cs_image g = {0};
    cs_error err = {0};
    assert_int_equal(cs_img_heatmap(cam, 1, 2, 4, 3, CS_IMG_CMAP_GRAY, &g, &err), CS_OK);
    assert_int_equal(g.channels, 1);
    /* cv2.resize from 2 to 4 columns: 0, 0.25, 0.75, 1 */
    assert_int_equal(g.rgb[0], 0);
    assert_int_equal(g.rgb[1], 63);
    assert_int_equal(g.rgb[2], 191);
    assert_int_equal(g.rgb[3], 255);
    cs_img_format fmts[] = {CS_IMG_FORMAT_PNG, CS_IMG_FORMAT_JPEG, CS_IMG_FORMAT_WEBP};
    for (int f = 0; f < 3; f++) {
        uint8_t *enc = NULL;
        size_t len = 0;
        assert_int_equal(cs_img_encode(&g, fmts[f], 90, &enc, &len, &err), CS_OK);
        assert_int_equal(cs_img_sniff(enc, len), fmts[f]);
        cs_image d = {0};
        assert_int_equal(cs_img_decode(enc, len, NULL, 0, 0, &d, &err), CS_OK);
        assert_int_equal(d.width, 4);
        assert_int_equal(d.height, 3);
        if (fmts[f] == CS_IMG_FORMAT_PNG) assert_int_equal(px(&d, 2, 1)[1], 191);
        cs_img_free(&d);
        free(enc);
    }
    cs_img_free(&g);
    cs_image c = {0};
    assert_int_equal(cs_img_heatmap(cam, 1, 2, 8, 8, CS_IMG_CMAP_JET, &c, &err), CS_OK);
    assert_int_equal(c.channels, 3);
    assert_rgb_near(px(&c, 0, 0), 0, 0, 128, 0);
    assert_rgb_near(px(&c, 7, 7), 128, 0, 0, 0);
    cs_img_free(&c);
    cs_img_format fmt;
    assert_int_equal(cs_img_format_parse("JPG", &fmt, &err), CS_OK);
    assert_int_equal(fmt, CS_IMG_FORMAT_JPEG);
    assert_int_equal(cs_img_format_parse("gif", &fmt, &err), CS_EINVAL);
}

/* ---- splitting over threads (cs_img_par) --------------------------------- */

static void team_run(void *ctx, int n, void (*fn)(void *arg, int i), void *arg) {
    cs_team_run(ctx, n, fn, arg);
}

/* The parts in order on the calling thread: the same split, no threads. */
static void serial_run(void *ctx, int n, void (*fn)(void *arg, int i), void *arg) {
    (void)ctx;
    for (int i = n - 1; i >= 0; i--) fn(arg, i); /* any order must do */
}

/* The IDAT payload of a PNG written by cs_img_encode_png, inflated by zlib
 * (which checks the Adler-32), or NULL when it does not inflate. */
static uint8_t *png_rows(const uint8_t *png, size_t len, size_t raw_len) {
    size_t i = 8, n = 0;
    uint8_t *idat = malloc(len);
    assert_non_null(idat);
    while (i + 12 <= len) {
        const size_t cl = (size_t)png[i] << 24 | (size_t)png[i + 1] << 16 | (size_t)png[i + 2] << 8 | png[i + 3];
        if (!memcmp(png + i + 4, "IDAT", 4)) {
            memcpy(idat + n, png + i + 8, cl);
            n += cl;
        }
        i += 12 + cl;
    }
    uint8_t *rows = malloc(raw_len + 1);
    uLongf got = (uLongf)raw_len + 1;
    const int r = uncompress(rows, &got, idat, (uLong)n);
    free(idat);
    if (r != Z_OK || got != raw_len) {
        free(rows);
        return NULL;
    }
    return rows;
}

static void test_png_split(void **state) {
    (void)state;
    cs_error err = {0};
    cs_team *team = NULL;
    assert_int_equal(cs_team_create(3, &team, &err), CS_OK);
    /* 800x600: split as asked; 700x513 grey: 359 KB of rows, at most 2
     * parts of 128 KB; 2000x3: a few wide rows, at most 3; 1x1: never */
    const struct { int w, h, c; } sizes[] = {{800, 600, 3}, {700, 513, 1}, {2000, 3, 3}, {1, 1, 1}, {257, 4000, 3}};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        const int w = sizes[k].w, h = sizes[k].h, C = sizes[k].c;
        cs_image img = {.width = w, .height = h, .channels = C, .rgb = make_pattern(w, h)};
        if (C == 1)
            for (size_t i = 0; i < (size_t)w * h; i++) img.rgb[i] = img.rgb[3 * i + 1];
        const size_t raw_len = ((size_t)w * C + 1) * h;
        uint8_t *one = NULL, *via_encode = NULL;
        size_t one_len = 0, enc_len = 0;
        assert_int_equal(cs_img_encode_png(&img, NULL, &one, &one_len, &err), CS_OK);
        assert_int_equal(cs_img_encode(&img, CS_IMG_FORMAT_PNG, 0, &via_encode, &enc_len, &err), CS_OK);
        assert_int_equal(one_len, enc_len);
        assert_memory_equal(one, via_encode, one_len);
        uint8_t *want = png_rows(one, one_len, raw_len);
        assert_non_null(want);
        static const int ways[] = {1, 2, 3, 4, 8, 16};
        for (int run = 0; run < 2; run++)
            for (size_t wi = 0; wi < sizeof ways / sizeof *ways; wi++) {
                const cs_img_par par = {.ways = ways[wi], .run = run ? serial_run : team_run, .ctx = team};
                uint8_t *png = NULL;
                size_t len = 0;
                assert_int_equal(cs_img_encode_png(&img, &par, &png, &len, &err), CS_OK);
                uint8_t *rows = png_rows(png, len, raw_len);
                if (!rows) fail_msg("%dx%dx%d in %d ways: the stream does not inflate", w, h, C, ways[wi]);
                assert_memory_equal(rows, want, raw_len);
                /* the split happened where there was room for it */
                const int split = cs_img_par_ways(&par, raw_len, 128 << 10) > 1 && h > 1;
                if (split != (len != one_len || memcmp(png, one, len) != 0))
                    fail_msg("%dx%dx%d in %d ways: %s", w, h, C, ways[wi], split ? "not split" : "split");
                cs_image d = {0};
                assert_int_equal(cs_img_decode(png, len, NULL, 0, 0, &d, &err), CS_OK);
                assert_int_equal(d.width, w);
                assert_int_equal(d.height, h);
                for (size_t i = 0; i < (size_t)w * h; i++)
                    if (d.rgb[3 * i] != img.rgb[C * i]) fail_msg("%dx%d: pixel %zu differs", w, h, i);
                cs_img_free(&d);
                free(rows);
                free(png);
            }
        free(want);
        free(one);
        free(via_encode);
        cs_img_free(&img);
    }
    cs_team_destroy(team);
}

static void test_overlay_split(void **state) {
    (void)state;
    cs_error err = {0};
    cs_team *team = NULL;
    assert_int_equal(cs_team_create(2, &team, &err), CS_OK);
    cs_image img = {.width = 800, .height = 600, .channels = 3, .rgb = make_pattern(800, 600)};
    cs_image tiny = {.width = 37, .height = 23, .channels = 3, .rgb = make_pattern(37, 23)};
    float c7[49], c35[15];
    for (int i = 0; i < 49; i++) c7[i] = (float)((i * 37) % 49) / 48.0f;
    for (int i = 0; i < 15; i++) c35[i] = (float)i / 10.0f - 0.2f;
    c35[7] = NAN;
    const float crop[4] = {112.5f, 0.0f, 687.5f, 600.0f}, part[4] = {-5.5f, 3.25f, 20.0f, 40.0f};
    const struct {
        const cs_image *img;
        const float *cam;
        int ch, cw;
        const float *box;
    } cases[] = {{&img, c7, 7, 7, crop}, {&img, c35, 3, 5, NULL}, {&tiny, c35, 3, 5, part}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        cs_image want = {0};
        assert_int_equal(cs_img_overlay(cases[k].img, cases[k].cam, cases[k].ch, cases[k].cw, cases[k].box,
                                        CS_IMG_CMAP_JET, 0.4f, 800, &want, &err),
                         CS_OK);
        for (int ways = 2; ways <= 9; ways++) {
            const cs_img_par par = {.ways = ways, .run = ways % 2 ? serial_run : team_run, .ctx = team};
            cs_image got = {0};
            assert_int_equal(cs_img_overlay_par(cases[k].img, cases[k].cam, cases[k].ch, cases[k].cw,
                                                cases[k].box, CS_IMG_CMAP_JET, 0.4f, 800, &par, &got, &err),
                             CS_OK);
            assert_int_equal(got.width, want.width);
            assert_int_equal(got.height, want.height);
            /* the maximum the blend is normalised by is taken over all
             * stripes: the same bytes however it is split */
            assert_memory_equal(got.rgb, want.rgb, (size_t)want.width * want.height * 3);
            cs_img_free(&got);
        }
        cs_img_free(&want);
    }
    cs_img_free(&img);
    cs_img_free(&tiny);
    cs_team_destroy(team);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sniff),
        cmocka_unit_test(test_png_roundtrip_exact),
        cmocka_unit_test(test_lossy_roundtrip),
        cmocka_unit_test(test_gray_jpeg),
        cmocka_unit_test(test_cmyk_jpeg),
        cmocka_unit_test(test_png_16bit),
        cmocka_unit_test(test_png_palette_and_alpha),
        cmocka_unit_test(test_exif_orientation),
        cmocka_unit_test(test_exif_with_scaled_decode),
        cmocka_unit_test(test_exif_parser_bounds),
        cmocka_unit_test(test_webp),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_corrupt_no_crash),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_scaled_decode_4000x3000),
        cmocka_unit_test(test_resize_matches_pil),
        cmocka_unit_test(test_resize_matches_reference),
        cmocka_unit_test(test_geometry),
        cmocka_unit_test(test_preprocess_values),
        cmocka_unit_test(test_parity_torchvision),
        cmocka_unit_test(test_json_config),
        cmocka_unit_test(test_config_for_model),
        cmocka_unit_test(test_colormaps),
        cmocka_unit_test(test_overlay),
        cmocka_unit_test(test_overlay_unchanged),
        cmocka_unit_test(test_heatmap_and_encode),
        cmocka_unit_test(test_png_split),
        cmocka_unit_test(test_overlay_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
