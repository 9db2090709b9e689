/* Encoding results: PNG deflated by libdeflate (the container is written
 * here, see encode_png), JPEG through TurboJPEG, WebP through libwebp.  The
 * API promises one rule -- free() -- so JPEG is compressed into a malloc()ed
 * worst-case buffer (TurboJPEG would use tjAlloc) and WebP output is copied
 * once (it is small; libwebp uses WebPMalloc). */
#include "camserve/imageio.h"

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <libdeflate.h>
#include <turbojpeg.h>
#include <webp/encode.h>

/* PNG: the container is written here and the pixels deflated by libdeflate.
 * libspng (which decodes every PNG camserve reads) can compress only through
 * zlib, whose fastest useful setting -- level 1, Huffman only -- took ~12 ms
 * for the 800x600 overlay of bench/bench_image.sh; libdeflate's level 1 takes
 * ~7 ms for a file 6 % larger (536 vs 506 KB).  (A Paeth filter codes a
 * little smaller but cost about what libdeflate then saved.)  What is left
 * to write is four chunks (PNG spec, ISO/IEC 15948 sections 5 and 11): signature, IHDR,
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

/* Per-thread PNG scratch: the compressor (its hash tables) and the filtered
 * rows, kept from one encode to the next on the same thread.  Fresh ones are
 * new mappings (in `serve`, which maps every block over 256 KB) that
 * page-fault as they are first written.  Owned by the thread's key value, freed by
 * the key's destructor when the thread exits; rows above SCRATCH_KEEP bytes
 * are not kept, so an idle thread holds at most that much. */
enum { SCRATCH_KEEP = 4 << 20 };
typedef struct png_scratch {
    struct libdeflate_compressor *z;
    uint8_t *raw;
    size_t cap;
} png_scratch;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_key_ok;

static void scratch_free(void *v) {
    png_scratch *s = v;
    if (!s) return;
    libdeflate_free_compressor(s->z);
    free(s->raw);
    free(s);
}

static void scratch_key_make(void) { scratch_key_ok = pthread_key_create(&scratch_key, scratch_free) == 0; }

/* This thread's scratch with rows of at least need bytes, or NULL (then the
 * caller allocates its own, e.g. for rows above SCRATCH_KEEP). */
static png_scratch *scratch_get(size_t need) {
    pthread_once(&scratch_once, scratch_key_make);
    if (!scratch_key_ok || need > SCRATCH_KEEP) return NULL;
    png_scratch *s = pthread_getspecific(scratch_key);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) return NULL;
        s->z = libdeflate_alloc_compressor(1);
        if (!s->z || pthread_setspecific(scratch_key, s) != 0) {
            scratch_free(s);
            return NULL;
        }
    }
    if (s->cap < need) {
        uint8_t *r = realloc(s->raw, need);
        if (!r) return NULL;
        s->raw = r;
        s->cap = need;
    }
    return s;
}

/* PNG filter 1 on one row, 16 bytes at a time (GNU vector extension; gcc
 * would not vectorise the byte loop at -O2 with a run-time pixel stride). */
typedef uint8_t u8x16 __attribute__((vector_size(16)));
static void sub_row(const uint8_t *src, uint8_t *dst, size_t row, size_t C) {
    memcpy(dst, src, C);
    size_t i = C;
    for (; i + 16 <= row; i += 16) {
        u8x16 a, b;
        memcpy(&a, src + i, 16);
        memcpy(&b, src + i - C, 16);
        a -= b;
        memcpy(dst + i, &a, 16);
    }
    for (; i < row; i++) dst[i] = (uint8_t)(src[i] - src[i - C]);
}

static cs_status encode_png(const cs_image *img, uint8_t **out, size_t *len, cs_error *err) {
    const int C = img->channels;
    const size_t w = (size_t)img->width, h = (size_t)img->height, row = w * (size_t)C;
    if (C != 1 && C != 3) return cs_errorf(err, CS_EINVAL, "png encode: %d channels", C);
    if (w > 0x7fffffffu || h > 0x7fffffffu || (row + 1) > SIZE_MAX / h)
        return cs_errorf(err, CS_EINVAL, "png encode: image too large");
    const size_t raw_len = (row + 1) * h;
    png_scratch *sc = scratch_get(raw_len);
    uint8_t *raw = sc ? sc->raw : malloc(raw_len);
    struct libdeflate_compressor *z = sc ? sc->z : libdeflate_alloc_compressor(1);
    const size_t bound = z ? libdeflate_zlib_compress_bound(z, raw_len) : 0;
    /* IDAT holds one chunk of at most 2^31 - 1 bytes */
    uint8_t *png = z && bound < 0x7fffffffu ? malloc(8 + 25 + 12 + bound + 12) : NULL;
    if (!raw || !z || !png) {
        if (!sc) {
            free(raw);
            libdeflate_free_compressor(z);
        }
        free(png);
        return cs_errorf(err, CS_ENOMEM, "out of memory for a %zux%zu PNG", w, h);
    }
    for (size_t y = 0; y < h; y++) {
        uint8_t *dst = raw + y * (row + 1);
        dst[0] = 1; /* Sub: each byte minus the byte one pixel to its left */
        sub_row(img->rgb + y * row, dst + 1, row, (size_t)C);
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
    if (!sc) {
        libdeflate_free_compressor(z);
        free(raw);
    }
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
