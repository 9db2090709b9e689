/* Encoding results: PNG deflated by libdeflate (the container is written
 * here, see cs_img_encode_png), JPEG through TurboJPEG, WebP through libwebp.  The
 * API promises one rule -- free() -- so JPEG is compressed into a malloc()ed
 * worst-case buffer (TurboJPEG would use tjAlloc) and WebP output is copied
 * once (it is small; libwebp uses WebPMalloc). */
#include "imageio/imageio_internal.h"

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <libdeflate.h>
#include <turbojpeg.h>
#include <webp/encode.h>
#include <zlib.h>

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

/* A PNG's rows split into parts for cs_img_par (see cs_img_encode_png in
 * imageio.h).  Each task filters its rows into its thread's scratch,
 * checksums them and deflates them into its own slot of the PNG buffer;
 * the caller then closes the gaps between the slots.  Only the last part
 * may end the deflate stream, and libdeflate always ends it, so the parts
 * before it go through zlib, whose Z_SYNC_FLUSH ends a part on a byte
 * boundary without ending the stream.  zlib level 1 is 2-3x slower per
 * byte than libdeflate's, so the last part gets 2.5 shares of the rows and
 * each other part one (PNG_SHARE_LAST / PNG_SHARE: bench/png_split.c, the
 * 800x600 overlay on 2 threads, 5 runs each: 4.6-4.8 ms at 2.5 shares,
 * 4.7-5.1 at 2, 5.4-8.1 at 1.5, against 6.2-7.0 ms in one libdeflate call).
 * No part starts with a dictionary: the stream is 2-6 % larger, the pixels
 * the same (bench_image --encode PHOTO 3 WAYS, built by
 * bench/bench_image.sh: 536 KB in one part, 549 / 561 / 570 KB in 2 / 4 / 8). */
enum { PNG_SHARE = 2, PNG_SHARE_LAST = 5, PNG_PART_MIN = 128 << 10 };

typedef struct png_part {
    size_t y0, y1;
    uint8_t *out; /* its slot in the PNG buffer, cap bytes */
    size_t cap, len;
    uint32_t adler;
    cs_status st;
} png_part;

typedef struct png_job {
    const cs_image *img;
    size_t row; /* bytes per image row, without the filter byte */
    int nparts;
    png_part part[CS_IMG_PAR_MAX];
} png_job;

static size_t part_bound(size_t n, int last) {
    /* zlib's bound covers its wrapper, which a raw part does not write;
     * the margin covers the sync flush's empty stored block */
    return last ? libdeflate_deflate_compress_bound(NULL, n) : (size_t)compressBound((uLong)n) + 64;
}

static void png_part_run(void *arg, int i) {
    png_job *pj = arg;
    png_part *p = &pj->part[i];
    const size_t C = (size_t)pj->img->channels, rowf = pj->row + 1, n = (p->y1 - p->y0) * rowf;
    png_scratch *sc = scratch_get(n);
    uint8_t *raw = sc ? sc->raw : malloc(n);
    if (!raw) {
        p->st = CS_ENOMEM;
        return;
    }
    for (size_t y = p->y0; y < p->y1; y++) {
        uint8_t *dst = raw + (y - p->y0) * rowf;
        dst[0] = 1; /* Sub: each byte minus the byte one pixel to its left */
        sub_row(pj->img->rgb + y * pj->row, dst + 1, pj->row, C);
    }
    p->adler = libdeflate_adler32(1, raw, n);
    p->len = 0;
    if (i == pj->nparts - 1) {
        struct libdeflate_compressor *z = sc ? sc->z : libdeflate_alloc_compressor(1);
        if (z) p->len = libdeflate_deflate_compress(z, raw, n, p->out, p->cap);
        if (!sc) libdeflate_free_compressor(z);
        p->st = z ? CS_OK : CS_ENOMEM;
    } else {
        z_stream zs;
        memset(&zs, 0, sizeof zs);
        int r = deflateInit2(&zs, 1, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
        if (r == Z_OK) {
            zs.next_in = raw;
            zs.avail_in = (uInt)n;
            zs.next_out = p->out;
            zs.avail_out = (uInt)p->cap;
            r = deflate(&zs, Z_SYNC_FLUSH);
            /* room left over: the flush is complete */
            if (r == Z_OK && zs.avail_in == 0 && zs.avail_out > 0) p->len = p->cap - zs.avail_out;
            deflateEnd(&zs);
        }
        p->st = r == Z_MEM_ERROR ? CS_ENOMEM : CS_OK;
    }
    if (p->st == CS_OK && p->len == 0) p->st = CS_EINTERNAL;
    if (!sc) free(raw);
}

cs_status cs_img_encode_png(const cs_image *img, const cs_img_par *par, uint8_t **out,
                            size_t *len, cs_error *err) {
    if (!img || !img->rgb || img->width <= 0 || img->height <= 0 || !out || !len)
        return cs_errorf(err, CS_EINVAL, "encode: no image");
    const int C = img->channels;
    const size_t w = (size_t)img->width, h = (size_t)img->height, row = w * (size_t)C;
    if (C != 1 && C != 3) return cs_errorf(err, CS_EINVAL, "png encode: %d channels", C);
    if (w > 0x7fffffffu || h > 0x7fffffffu || (row + 1) > SIZE_MAX / h)
        return cs_errorf(err, CS_EINVAL, "png encode: image too large");
    const size_t raw_len = (row + 1) * h;
    png_job pj = {.img = img, .row = row};
    /* zlib counts a part's bytes in 32 bits */
    pj.nparts = raw_len < ((size_t)1 << 30) ? cs_img_par_ways(par, raw_len, PNG_PART_MIN) : 1;
    if ((size_t)pj.nparts > h) pj.nparts = (int)h;
    const size_t share = h * PNG_SHARE / (size_t)((pj.nparts - 1) * PNG_SHARE + PNG_SHARE_LAST);
    size_t total = 0;
    for (int i = 0; i < pj.nparts; i++) {
        png_part *p = &pj.part[i];
        p->y0 = i ? pj.part[i - 1].y1 : 0;
        p->y1 = i == pj.nparts - 1 ? h : p->y0 + share;
        p->cap = part_bound((p->y1 - p->y0) * (row + 1), i == pj.nparts - 1);
        total += p->cap;
    }
    /* IDAT holds one chunk of at most 2^31 - 1 bytes: zlib header, parts, Adler-32 */
    if (total >= 0x7fffffffu - 6) return cs_errorf(err, CS_EINVAL, "png encode: image too large");
    enum { HEAD = 8 + 25 + 8 }; /* signature, IHDR, IDAT's length and type */
    uint8_t *png = malloc(HEAD + 2 + total + 4 + 4 + 12);
    if (!png) return cs_errorf(err, CS_ENOMEM, "out of memory for a %zux%zu PNG", w, h);
    uint8_t *slot = png + HEAD + 2;
    for (int i = 0; i < pj.nparts; i++) {
        pj.part[i].out = slot;
        slot += pj.part[i].cap;
    }
    cs_img_par_run(par, pj.nparts, png_part_run, &pj);

    uint8_t *z = png + HEAD + 2; /* where the stream's parts go, packed */
    uint32_t adler = 1;
    for (int i = 0; i < pj.nparts; i++) {
        const png_part *p = &pj.part[i];
        if (p->st != CS_OK) {
            free(png);
            return p->st == CS_ENOMEM
                       ? cs_errorf(err, CS_ENOMEM, "out of memory for a %zux%zu PNG", w, h)
                       : cs_errorf(err, CS_EINTERNAL, "png encode: deflate failed");
        }
        memmove(z, p->out, p->len);
        z += p->len;
        adler = i ? (uint32_t)adler32_combine(adler, p->adler, (z_off_t)((p->y1 - p->y0) * (row + 1)))
                  : p->adler;
    }
    static const uint8_t SIG[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(png, SIG, 8);
    uint8_t *ihdr = png + 8;
    memcpy(ihdr + 4, "IHDR", 4);
    uint8_t *d = put_be32(ihdr + 8, (uint32_t)w);
    d = put_be32(d, (uint32_t)h);
    d[0] = 8;                /* bit depth */
    d[1] = C == 1 ? 0 : 2;   /* colour type: grey, truecolour */
    d[2] = d[3] = d[4] = 0;  /* deflate, adaptive filtering, no interlace */
    uint8_t *idat = seal_chunk(ihdr, 13);
    memcpy(idat + 4, "IDAT", 4);
    idat[8] = 0x78; /* zlib: deflate, 32 KB window */
    idat[9] = 0x01; /* fastest level, no dictionary; (0x78 << 8 | 0x01) % 31 == 0 */
    z = put_be32(z, adler);
    uint8_t *p = seal_chunk(idat, (size_t)(z - (idat + 8)));
    memcpy(p + 4, "IEND", 4);
    p = seal_chunk(p, 0);
    *len = (size_t)(p - png);
    /* hand back no more than is used: results are cached and counted by length */
    uint8_t *shrunk = realloc(png, *len);
    *out = shrunk ? shrunk : png;
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
    case CS_IMG_FORMAT_PNG: return cs_img_encode_png(img, NULL, out, len, err);
    case CS_IMG_FORMAT_JPEG: return encode_jpeg(img, quality, out, len, err);
    case CS_IMG_FORMAT_WEBP: return encode_webp(img, quality, out, len, err);
    case CS_IMG_FORMAT_UNKNOWN: break;
    }
    return cs_errorf(err, CS_EINVAL, "encode: unknown format");
}
