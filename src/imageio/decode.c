/* Decoding: magic-byte sniffing, header-first limit checks, and one path per
 * library (TurboJPEG, libspng, libwebp).  Every path ends in a freshly
 * malloc()ed RGB8 buffer that is handed to the caller's cs_image only once
 * the whole image decoded cleanly; any failure frees it, so a caller never
 * sees a partial image.
 *
 * JPEG metadata the libraries do not interpret for us (EXIF orientation,
 * Adobe APP14 for CMYK polarity) comes from a small bounds-checked marker
 * walk over the header segments; it stops at the first SOS. */
#include "camserve/imageio.h"
#include "imageio/imageio_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <spng.h>
#include <turbojpeg.h>
#include <webp/decode.h>
#include <webp/demux.h>

void cs_img_free(cs_image *img) {
    if (!img) return;
    free(img->rgb);
    memset(img, 0, sizeof *img);
}

cs_img_limits cs_img_limits_default(void) {
    cs_img_limits l = {.max_bytes = (size_t)25 * 1000 * 1000, .max_pixels = (int64_t)50 * 1000 * 1000};
    return l;
}

cs_img_format cs_img_sniff(const void *buf, size_t len) {
    const uint8_t *p = buf;
    if (!p) return CS_IMG_FORMAT_UNKNOWN;
    if (len >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return CS_IMG_FORMAT_JPEG;
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    if (len >= 8 && memcmp(p, png_sig, 8) == 0) return CS_IMG_FORMAT_PNG;
    if (len >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0)
        return CS_IMG_FORMAT_WEBP;
    return CS_IMG_FORMAT_UNKNOWN;
}

const char *cs_img_format_name(cs_img_format f) {
    switch (f) {
    case CS_IMG_FORMAT_JPEG: return "jpeg";
    case CS_IMG_FORMAT_PNG: return "png";
    case CS_IMG_FORMAT_WEBP: return "webp";
    case CS_IMG_FORMAT_UNKNOWN: break;
    }
    return "unknown";
}

cs_status cs_img_format_parse(const char *name, cs_img_format *out, cs_error *err) {
    cs_img_format f = CS_IMG_FORMAT_UNKNOWN;
    if (name && !strcasecmp(name, "png")) f = CS_IMG_FORMAT_PNG;
    else if (name && (!strcasecmp(name, "jpeg") || !strcasecmp(name, "jpg"))) f = CS_IMG_FORMAT_JPEG;
    else if (name && !strcasecmp(name, "webp")) f = CS_IMG_FORMAT_WEBP;
    if (f == CS_IMG_FORMAT_UNKNOWN)
        return cs_errorf(err, CS_EINVAL, "unknown image format '%s' (expected png, jpeg or webp)",
                         name ? name : "");
    *out = f;
    return CS_OK;
}

/* Width x height against the pixel limit, and the RGB buffer size against
 * what size_t can hold, before anything is allocated. */
static cs_status check_dims(int64_t w, int64_t h, const cs_img_limits *lim, const char *fmt,
                            cs_error *err) {
    if (w <= 0 || h <= 0)
        return cs_errorf(err, CS_EFORMAT, "invalid image: %s header has size %lldx%lld", fmt,
                         (long long)w, (long long)h);
    if (w > INT_MAX / 4 || h > INT_MAX / 4 || w * h > lim->max_pixels)
        return cs_errorf(err, CS_ELIMIT,
                         "image is %lldx%lld = %.1f MP, more than the limit of %.1f MP",
                         (long long)w, (long long)h, (double)(w * h) / 1e6,
                         (double)lim->max_pixels / 1e6);
    if ((uint64_t)w * (uint64_t)h > SIZE_MAX / 4)
        return cs_errorf(err, CS_ELIMIT, "image is too large for this machine");
    return CS_OK;
}

/* ---- JPEG header segments -------------------------------------------------- */

static unsigned rd16(const uint8_t *p, int le) {
    return le ? (unsigned)p[0] | (unsigned)p[1] << 8 : (unsigned)p[0] << 8 | p[1];
}
static uint32_t rd32(const uint8_t *p, int le) {
    return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24
              : (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* IFD0 of the TIFF structure inside "Exif\0\0": only the Orientation tag
 * (0x0112, SHORT) matters.  All offsets are checked against tlen. */
static int exif_orientation(const uint8_t *t, size_t tlen) {
    if (tlen < 8) return 1;
    int le;
    if (t[0] == 'I' && t[1] == 'I') le = 1;
    else if (t[0] == 'M' && t[1] == 'M') le = 0;
    else return 1;
    if (rd16(t + 2, le) != 42) return 1;
    uint32_t ifd = rd32(t + 4, le);
    if (ifd < 8 || (size_t)ifd > tlen - 2) return 1;
    unsigned n = rd16(t + ifd, le);
    for (unsigned i = 0; i < n; i++) {
        size_t e = (size_t)ifd + 2 + (size_t)i * 12;
        if (e + 12 > tlen) break;
        if (rd16(t + e, le) != 0x0112) continue;
        if (rd16(t + e + 2, le) != 3 || rd32(t + e + 4, le) < 1) return 1;
        unsigned v = rd16(t + e + 8, le);
        return v >= 1 && v <= 8 ? (int)v : 1;
    }
    return 1;
}

typedef struct jpeg_meta {
    int orientation; /* 1..8 */
    int adobe;       /* APP14 "Adobe" present: CMYK samples are stored inverted */
    int sof_w, sof_h; /* from the first SOFn; 0 when there is none */
} jpeg_meta;

static jpeg_meta jpeg_scan_meta(const uint8_t *p, size_t len) {
    jpeg_meta m = {1, 0, 0, 0};
    int have_exif = 0;
    size_t i = 2;
    while (i + 4 <= len) {
        if (p[i] != 0xFF) break;
        uint8_t mk = p[i + 1];
        if (mk == 0xFF) { /* fill byte */
            i++;
            continue;
        }
        if (mk == 0xD8 || mk == 0x01 || (mk >= 0xD0 && mk <= 0xD7)) { /* no length */
            i += 2;
            continue;
        }
        if (mk == 0xDA || mk == 0xD9) break; /* entropy data / end: headers are over */
        size_t seg = rd16(p + i + 2, 0);
        if (seg < 2 || seg > len - i - 2) break;
        const uint8_t *d = p + i + 4;
        size_t dl = seg - 2;
        if (mk == 0xE1 && !have_exif && dl >= 6 && memcmp(d, "Exif\0\0", 6) == 0) {
            m.orientation = exif_orientation(d + 6, dl - 6);
            have_exif = 1; /* like PIL, the first EXIF block wins */
        } else if (mk == 0xEE && dl >= 5 && memcmp(d, "Adobe", 5) == 0) {
            m.adobe = 1;
        } else if (mk >= 0xC0 && mk <= 0xCF && mk != 0xC4 && mk != 0xC8 && mk != 0xCC && dl >= 6 &&
                   !m.sof_w) {
            m.sof_h = (int)rd16(d + 1, 0);
            m.sof_w = (int)rd16(d + 3, 0);
        }
        i += 2 + seg;
    }
    return m;
}

int cs_img_jpeg_orientation(const void *buf, size_t len) {
    if (cs_img_sniff(buf, len) != CS_IMG_FORMAT_JPEG) return 1;
    return jpeg_scan_meta(buf, len).orientation;
}

/* Applies EXIF orientation o to a w x h RGB image; on success *px (and the
 * dimensions) are replaced and the old buffer freed. */
static cs_status apply_orientation(uint8_t **px, int *w, int *h, int o, cs_error *err) {
    if (o <= 1 || o > 8) return CS_OK;
    const int W = *w, H = *h;
    const int swap = o >= 5;
    const int dw = swap ? H : W, dh = swap ? W : H;
    uint8_t *dst = malloc((size_t)W * H * 3);
    if (!dst) return cs_errorf(err, CS_ENOMEM, "out of memory rotating a %dx%d image", W, H);
    const uint8_t *src = *px;
    for (int y = 0; y < dh; y++) {
        uint8_t *drow = dst + (size_t)y * dw * 3;
        for (int x = 0; x < dw; x++) {
            int sx, sy;
            switch (o) {
            case 2: sx = W - 1 - x; sy = y; break;          /* mirror horizontal */
            case 3: sx = W - 1 - x; sy = H - 1 - y; break;  /* rotate 180 */
            case 4: sx = x; sy = H - 1 - y; break;          /* mirror vertical */
            case 5: sx = y; sy = x; break;                  /* transpose */
            case 6: sx = y; sy = H - 1 - x; break;          /* rotate 90 CW */
            case 7: sx = W - 1 - y; sy = H - 1 - x; break;  /* transverse */
            default: sx = W - 1 - y; sy = x; break;         /* 8: rotate 90 CCW */
            }
            const uint8_t *s = src + ((size_t)sy * W + sx) * 3;
            drow[x * 3 + 0] = s[0];
            drow[x * 3 + 1] = s[1];
            drow[x * 3 + 2] = s[2];
        }
    }
    free(*px);
    *px = dst;
    *w = dw;
    *h = dh;
    return CS_OK;
}

/* PIL's CMYK -> RGB: (255-c)(255-k)/255 with its MULDIV255 rounding, after
 * undoing Adobe's inverted storage (PIL's "CMYK;I" raw mode). */
static void cmyk_to_rgb(const uint8_t *in, uint8_t *out, size_t n, int inverted) {
    for (size_t i = 0; i < n; i++, in += 4, out += 3) {
        unsigned k = inverted ? in[3] : 255u - in[3];
        for (int c = 0; c < 3; c++) {
            unsigned v = inverted ? in[c] : 255u - in[c];
            unsigned t = v * k + 128;
            out[c] = (uint8_t)(((t >> 8) + t) >> 8);
        }
    }
}

static cs_status decode_jpeg(const uint8_t *buf, size_t len, const cs_img_limits *lim, int need_w,
                             int need_h, cs_image *out, cs_error *err) {
    cs_status st = CS_OK;
    uint8_t *px = NULL, *cmyk = NULL;
    tjhandle tj = tjInitDecompress();
    if (!tj) return cs_errorf(err, CS_ENOMEM, "cannot create a JPEG decoder: %s", tjGetErrorStr2(NULL));
    if (len > (size_t)ULONG_MAX) {
        st = cs_errorf(err, CS_ELIMIT, "image file too large");
        goto done;
    }
    /* Our own walk finds the frame header first: TurboJPEG 2.1 reports
     * success with uninitialised dimensions for a stream cut before it. */
    jpeg_meta meta = jpeg_scan_meta(buf, len);
    if (!meta.sof_w || !meta.sof_h) {
        st = cs_errorf(err, CS_EFORMAT, "invalid image: jpeg: no frame header before the image data");
        goto done;
    }
    int w, h, subsamp, cspace;
    if (tjDecompressHeader3(tj, buf, (unsigned long)len, &w, &h, &subsamp, &cspace) != 0) {
        st = cs_errorf(err, CS_EFORMAT, "invalid image: jpeg: %s", tjGetErrorStr2(tj));
        goto done;
    }
    if (w != meta.sof_w || h != meta.sof_h) {
        st = cs_errorf(err, CS_EFORMAT, "invalid image: jpeg: inconsistent frame header");
        goto done;
    }
    if ((st = check_dims(w, h, lim, "jpeg", err)) != CS_OK) goto done;

    if (meta.orientation >= 5) { /* needs are given for the displayed (rotated) image */
        int t = need_w;
        need_w = need_h;
        need_h = t;
    }
    /* Smallest scale that still covers the need.  Only 1/2, 1/4 and 1/8 of
     * tjGetScalingFactors() are used: they are libjpeg's classic reduced
     * IDCTs (what PIL's draft() uses too), and the odd ones (5/8, 3/8, ...)
     * measured visibly worse against PIL's full-resolution resize. */
    int sw = w, sh = h;
    if (need_w > 0 || need_h > 0) {
        int nsf = 0;
        tjscalingfactor *sf = tjGetScalingFactors(&nsf);
        for (int i = 0; sf && i < nsf; i++) {
            if (sf[i].num != 1 || (sf[i].denom != 2 && sf[i].denom != 4 && sf[i].denom != 8)) continue;
            int cw = TJSCALED(w, sf[i]), ch = TJSCALED(h, sf[i]);
            if (cw >= need_w && ch >= need_h && (int64_t)cw * ch < (int64_t)sw * sh) {
                sw = cw;
                sh = ch;
            }
        }
    }

    const int is_cmyk = cspace == TJCS_CMYK || cspace == TJCS_YCCK;
    const int flags = TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS;
    px = malloc((size_t)sw * sh * 3);
    if (!px) {
        st = cs_errorf(err, CS_ENOMEM, "out of memory for a %dx%d image", sw, sh);
        goto done;
    }
    if (is_cmyk) {
        cmyk = malloc((size_t)sw * sh * 4);
        if (!cmyk) {
            st = cs_errorf(err, CS_ENOMEM, "out of memory for a %dx%d image", sw, sh);
            goto done;
        }
        if (tjDecompress2(tj, buf, (unsigned long)len, cmyk, sw, 0, sh, TJPF_CMYK, flags) != 0) {
            st = cs_errorf(err, CS_EFORMAT, "invalid image: jpeg: %s", tjGetErrorStr2(tj));
            goto done;
        }
        cmyk_to_rgb(cmyk, px, (size_t)sw * sh, meta.adobe);
    } else if (tjDecompress2(tj, buf, (unsigned long)len, px, sw, 0, sh, TJPF_RGB, flags) != 0) {
        st = cs_errorf(err, CS_EFORMAT, "invalid image: jpeg: %s", tjGetErrorStr2(tj));
        goto done;
    }
    int ow = w, oh = h;
    if (meta.orientation >= 5) {
        ow = h;
        oh = w;
    }
    if ((st = apply_orientation(&px, &sw, &sh, meta.orientation, err)) != CS_OK) goto done;
    out->width = sw;
    out->height = sh;
    out->channels = 3;
    out->rgb = px;
    out->orig_width = ow;
    out->orig_height = oh;
    px = NULL;
done:
    free(px);
    free(cmyk);
    tjDestroy(tj);
    return st;
}

/* ---- PNG --------------------------------------------------------------- */

static cs_status decode_png(const uint8_t *buf, size_t len, const cs_img_limits *lim,
                            cs_image *out, cs_error *err) {
    cs_status st = CS_OK;
    uint8_t *px = NULL;
    spng_ctx *ctx = spng_ctx_new(0);
    if (!ctx) return cs_errorf(err, CS_ENOMEM, "cannot create a PNG decoder");
    /* Ancillary chunks are skipped, but a hostile file could still make spng
     * cache huge ones: bound single chunks and the total. */
    spng_set_chunk_limits(ctx, (size_t)16 << 20, (size_t)64 << 20);
    int r = spng_set_png_buffer(ctx, buf, len);
    struct spng_ihdr ihdr;
    if (!r) r = spng_get_ihdr(ctx, &ihdr);
    if (r) {
        st = cs_errorf(err, CS_EFORMAT, "invalid image: png: %s", spng_strerror(r));
        goto done;
    }
    if ((st = check_dims(ihdr.width, ihdr.height, lim, "png", err)) != CS_OK) goto done;
    size_t sz = 0;
    r = spng_decoded_image_size(ctx, SPNG_FMT_RGB8, &sz);
    if (r || sz != (size_t)ihdr.width * ihdr.height * 3) {
        st = cs_errorf(err, CS_EFORMAT, "invalid image: png: %s",
                       r ? spng_strerror(r) : "unexpected decoded size");
        goto done;
    }
    px = malloc(sz);
    if (!px) {
        st = cs_errorf(err, CS_ENOMEM, "out of memory for a %ux%u image", ihdr.width, ihdr.height);
        goto done;
    }
    /* No SPNG_DECODE_TRNS / GAMMA: alpha is dropped and samples kept as
     * stored, which is what PIL's convert("RGB") yields. */
    r = spng_decode_image(ctx, px, sz, SPNG_FMT_RGB8, 0);
    if (r) {
        st = cs_errorf(err, CS_EFORMAT, "invalid image: png: %s", spng_strerror(r));
        goto done;
    }
    out->width = out->orig_width = (int)ihdr.width;
    out->height = out->orig_height = (int)ihdr.height;
    out->channels = 3;
    out->rgb = px;
    px = NULL;
done:
    free(px);
    spng_ctx_free(ctx);
    return st;
}

/* ---- WebP -------------------------------------------------------------- */

static cs_status decode_webp_anim(const uint8_t *buf, size_t len, const cs_img_limits *lim,
                                  cs_image *out, cs_error *err) {
    cs_status st = CS_OK;
    uint8_t *px = NULL;
    WebPAnimDecoderOptions opt;
    if (!WebPAnimDecoderOptionsInit(&opt))
        return cs_errorf(err, CS_EINTERNAL, "libwebp version mismatch");
    opt.color_mode = MODE_RGBA;
    opt.use_threads = 0;
    WebPData data = {buf, len};
    WebPAnimDecoder *dec = WebPAnimDecoderNew(&data, &opt);
    if (!dec) return cs_errorf(err, CS_EFORMAT, "invalid image: webp: malformed animation");
    WebPAnimInfo info;
    if (!WebPAnimDecoderGetInfo(dec, &info)) {
        st = cs_errorf(err, CS_EFORMAT, "invalid image: webp: malformed animation");
        goto done;
    }
    /* WebPAnimDecoderNew already allocated the canvas, so this check guards
     * our own copy; the header check in decode_webp ran before it. */
    if ((st = check_dims(info.canvas_width, info.canvas_height, lim, "webp", err)) != CS_OK)
        goto done;
    uint8_t *frame = NULL;
    int ts = 0;
    if (!WebPAnimDecoderHasMoreFrames(dec) || !WebPAnimDecoderGetNext(dec, &frame, &ts) || !frame) {
        st = cs_errorf(err, CS_EFORMAT, "invalid image: webp: cannot decode the first frame");
        goto done;
    }
    size_t n = (size_t)info.canvas_width * info.canvas_height;
    px = malloc(n * 3);
    if (!px) {
        st = cs_errorf(err, CS_ENOMEM, "out of memory for a webp frame");
        goto done;
    }
    for (size_t i = 0; i < n; i++) memcpy(px + i * 3, frame + i * 4, 3);
    out->width = out->orig_width = (int)info.canvas_width;
    out->height = out->orig_height = (int)info.canvas_height;
    out->channels = 3;
    out->rgb = px;
    px = NULL;
done:
    free(px);
    WebPAnimDecoderDelete(dec);
    return st;
}

static cs_status decode_webp(const uint8_t *buf, size_t len, const cs_img_limits *lim,
                             cs_image *out, cs_error *err) {
    WebPBitstreamFeatures f;
    VP8StatusCode vs = WebPGetFeatures(buf, len, &f);
    if (vs != VP8_STATUS_OK)
        return cs_errorf(err, CS_EFORMAT, "invalid image: webp: bad header (status %d)", (int)vs);
    cs_status st = check_dims(f.width, f.height, lim, "webp", err);
    if (st != CS_OK) return st;
    if (f.has_animation) return decode_webp_anim(buf, len, lim, out, err);
    size_t stride = (size_t)f.width * 3, sz = stride * (size_t)f.height;
    uint8_t *px = malloc(sz);
    if (!px) return cs_errorf(err, CS_ENOMEM, "out of memory for a %dx%d image", f.width, f.height);
    if (!WebPDecodeRGBInto(buf, len, px, sz, (int)stride)) {
        free(px);
        return cs_errorf(err, CS_EFORMAT, "invalid image: webp: corrupt or truncated data");
    }
    out->width = out->orig_width = f.width;
    out->height = out->orig_height = f.height;
    out->channels = 3;
    out->rgb = px;
    return CS_OK;
}

cs_status cs_img_decode(const void *buf, size_t len, const cs_img_limits *lim, int need_w,
                        int need_h, cs_image *out, cs_error *err) {
    cs_img_limits dl = cs_img_limits_default();
    if (!lim) lim = &dl;
    if (!out || (!buf && len)) return cs_errorf(err, CS_EINVAL, "cs_img_decode: NULL argument");
    if (len > lim->max_bytes)
        return cs_errorf(err, CS_ELIMIT, "image is %zu bytes, more than the limit of %zu", len,
                         lim->max_bytes);
    if (need_w < 0) need_w = 0;
    if (need_h < 0) need_h = 0;
    cs_image img = {0};
    cs_status st;
    switch (cs_img_sniff(buf, len)) {
    case CS_IMG_FORMAT_JPEG: st = decode_jpeg(buf, len, lim, need_w, need_h, &img, err); break;
    case CS_IMG_FORMAT_PNG: st = decode_png(buf, len, lim, &img, err); break;
    case CS_IMG_FORMAT_WEBP: st = decode_webp(buf, len, lim, &img, err); break;
    default: return cs_errorf(err, CS_EFORMAT, "invalid image: unknown format");
    }
    if (st == CS_OK) *out = img;
    return st;
}

cs_status cs_img_load(const char *path, const cs_img_limits *lim, int need_w, int need_h,
                      cs_image *out, cs_error *err) {
    cs_img_limits dl = cs_img_limits_default();
    if (!lim) lim = &dl;
    uint8_t *buf = NULL;
    size_t len = 0;
    cs_status st = cs_img_read_file(path, lim->max_bytes, &buf, &len, err);
    if (st != CS_OK) return st;
    st = cs_img_decode(buf, len, lim, need_w, need_h, out, err);
    free(buf);
    return st;
}

cs_status cs_img_read_file(const char *path, size_t max_bytes, uint8_t **out, size_t *len,
                           cs_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return cs_errorf(err, CS_EIO, "cannot open %s: %s", path, strerror(errno));
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;
    cs_status st = CS_OK;
    for (;;) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 1 << 16;
            if (ncap > max_bytes + 1) ncap = max_bytes + 1;
            if (ncap <= n) {
                st = cs_errorf(err, CS_ELIMIT, "%s is more than the limit of %zu bytes", path,
                               max_bytes);
                break;
            }
            uint8_t *nb = realloc(buf, ncap);
            if (!nb) {
                st = cs_errorf(err, CS_ENOMEM, "out of memory reading %s", path);
                break;
            }
            buf = nb;
            cap = ncap;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) st = cs_errorf(err, CS_EIO, "cannot read %s: %s", path, strerror(errno));
            break;
        }
    }
    fclose(f);
    if (st == CS_OK && n > max_bytes)
        st = cs_errorf(err, CS_ELIMIT, "%s is more than the limit of %zu bytes", path, max_bytes);
    if (st != CS_OK) {
        free(buf);
        return st;
    }
    *out = buf;
    *len = n;
    return CS_OK;
}
