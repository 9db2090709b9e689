/* Encoding results: PNG deflated by libdeflate (the container is written
 * here, see encode_png), JPEG through TurboJPEG, WebP through libwebp.  The
 * API promises one rule -- free() -- so JPEG is compressed into a malloc()ed
 * worst-case buffer (TurboJPEG would use tjAlloc) and WebP output is copied
 * once (it is small; libwebp uses WebPMalloc). */
#include "camserve/imageio.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <libdeflate.h>
#include <turbojpeg.h>
#include <webp/encode.h>

/* PNG: the container is written here and the pixels deflated by libdeflate.
 * libspng (which decodes every PNG camserve reads) can compress only through
 * zlib, whose fastest useful setting -- level 1, Huffman only -- took ~12 ms
 * for the 800x600 overlay of bench/bench_image.sh; libdeflate's level 1 takes
 * ~7 ms for a file 6 % larger (536 vs 506 KB).  What is left to write is
 * four chunks (PNG spec, ISO/IEC 15948 sections 5 and 11): signature, IHDR,
 * one IDAT holding the zlib stream, IEND.  Rows use filter 1 (Sub), which
 * suits photographs and costs one subtraction per byte. */
static uint8_t *put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
    return p + 4;
}

/* p points at a chunk whose 4-byte length is still to be written, followed
 * by its type and n data bytes; writes the length and the CRC (over type and
 * data), returns the end of the chunk */
static uint8_t *seal_chunk(uint8_t *p, size_t n) {
    put_be32(p, (uint32_t)n);
    uint32_t crc = libdeflate_crc32(0, p + 4, 4 + n);
    return put_be32(p + 8 + n, crc);
}

static cs_status encode_png(const cs_image *img, uint8_t **out, size_t *len, cs_error *err) {
    const int C = img->channels;
    const size_t w = (size_t)img->width, h = (size_t)img->height, row = w * (size_t)C;
    if (C != 1 && C != 3) return cs_errorf(err, CS_EINVAL, "png encode: %d channels", C);
    if (w > 0x7fffffffu || h > 0x7fffffffu || (row + 1) > SIZE_MAX / h)
        return cs_errorf(err, CS_EINVAL, "png encode: image too large");
    const size_t raw_len = (row + 1) * h;
    uint8_t *raw = malloc(raw_len);
    struct libdeflate_compressor *z = libdeflate_alloc_compressor(1);
    const size_t bound = z ? libdeflate_zlib_compress_bound(z, raw_len) : 0;
    /* IDAT holds one chunk of at most 2^31 - 1 bytes */
    uint8_t *png = z && bound < 0x7fffffffu ? malloc(8 + 25 + 12 + bound + 12) : NULL;
    if (!raw || !z || !png) {
        free(raw);
        free(png);
        libdeflate_free_compressor(z);
        return cs_errorf(err, CS_ENOMEM, "out of memory for a %zux%zu PNG", w, h);
    }
    for (size_t y = 0; y < h; y++) {
        const uint8_t *src = img->rgb + y * row;
        uint8_t *dst = raw + y * (row + 1);
        dst[0] = 1; /* Sub: each byte minus the byte one pixel to its left */
        memcpy(dst + 1, src, (size_t)C);
        for (size_t i = (size_t)C; i < row; i++) dst[1 + i] = (uint8_t)(src[i] - src[i - C]);
    }
    static const uint8_t SIG[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    uint8_t *p = png;
    memcpy(p, SIG, 8);
    p += 8;
    uint8_t *ihdr = p;
    memcpy(ihdr + 4, "IHDR", 4);
    uint8_t *d = put_be32(ihdr + 8, (uint32_t)w);
    d = put_be32(d, (uint32_t)h);
    d[0] = 8;                /* bit depth */
    d[1] = C == 1 ? 0 : 2;   /* colour type: grey, truecolour */
    d[2] = d[3] = d[4] = 0;  /* deflate, adaptive filtering, no interlace */
    p = seal_chunk(ihdr, 13);
    uint8_t *idat = p;
    memcpy(idat + 4, "IDAT", 4);
    size_t zn = libdeflate_zlib_compress(z, raw, raw_len, idat + 8, bound);
    libdeflate_free_compressor(z);
    free(raw);
    if (zn == 0) {
        free(png);
        return cs_errorf(err, CS_EINTERNAL, "png encode: deflate failed");
    }
    p = seal_chunk(idat, zn);
    memcpy(p + 4, "IEND", 4);
    p = seal_chunk(p, 0);
    *out = png;
    *len = (size_t)(p - png);
    return CS_OK;
}

static cs_status encode_jpeg(const cs_image *img, int quality, uint8_t **out, size_t *len,
                             cs_error *err) {
    const int gray = img->channels == 1;
    const int samp = gray ? TJSAMP_GRAY : TJSAMP_420;
    unsigned long cap = tjBufSize(img->width, img->height, samp);
    if (cap == (unsigned long)-1) return cs_errorf(err, CS_EINVAL, "jpeg encode: bad size");
    unsigned char *buf = malloc(cap);
    if (!buf) return cs_errorf(err, CS_ENOMEM, "out of memory for the jpeg");
    tjhandle tj = tjInitCompress();
    if (!tj) {
        free(buf);
        return cs_errorf(err, CS_ENOMEM, "cannot create a JPEG encoder");
    }
    unsigned long n = cap;
    int r = tjCompress2(tj, img->rgb, img->width, 0, img->height, gray ? TJPF_GRAY : TJPF_RGB,
                        &buf, &n, samp, quality, TJFLAG_NOREALLOC);
    if (r != 0) {
        cs_status st = cs_errorf(err, CS_EINTERNAL, "jpeg encode: %s", tjGetErrorStr2(tj));
        tjDestroy(tj);
        free(buf);
        return st;
    }
    tjDestroy(tj);
    *out = buf;
    *len = n;
    return CS_OK;
}

static cs_status encode_webp(const cs_image *img, int quality, uint8_t **out, size_t *len,
                             cs_error *err) {
    const uint8_t *rgb = img->rgb;
    uint8_t *expanded = NULL;
    if (img->channels == 1) { /* libwebp has no gray input */
        size_t n = (size_t)img->width * img->height;
        if (!(expanded = malloc(n * 3))) return cs_errorf(err, CS_ENOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) memset(expanded + i * 3, img->rgb[i], 3);
        rgb = expanded;
    }
    uint8_t *w = NULL;
    size_t n = WebPEncodeRGB(rgb, img->width, img->height, img->width * 3, (float)quality, &w);
    free(expanded);
    if (!n || !w) return cs_errorf(err, CS_EINTERNAL, "webp encode failed");
    uint8_t *copy = malloc(n);
    if (!copy) {
        WebPFree(w);
        return cs_errorf(err, CS_ENOMEM, "out of memory");
    }
    memcpy(copy, w, n);
    WebPFree(w);
    *out = copy;
    *len = n;
    return CS_OK;
}

cs_status cs_img_encode(const cs_image *img, cs_img_format fmt, int quality, uint8_t **out,
                        size_t *len, cs_error *err) {
    if (!img || !img->rgb || img->width <= 0 || img->height <= 0 ||
        (img->channels != 1 && img->channels != 3) || !out || !len)
        return cs_errorf(err, CS_EINVAL, "encode: no image");
    if (img->width > 16383 && fmt == CS_IMG_FORMAT_WEBP)
        return cs_errorf(err, CS_EINVAL, "encode: webp is limited to 16383 pixels a side");
    if (quality <= 0) quality = 90;
    if (quality > 100) quality = 100;
    switch (fmt) {
    case CS_IMG_FORMAT_PNG: return encode_png(img, out, len, err);
    case CS_IMG_FORMAT_JPEG: return encode_jpeg(img, quality, out, len, err);
    case CS_IMG_FORMAT_WEBP: return encode_webp(img, quality, out, len, err);
    case CS_IMG_FORMAT_UNKNOWN: break;
    }
    return cs_errorf(err, CS_EINVAL, "encode: unknown format");
}
