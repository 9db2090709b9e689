/* The serialised form of a cs_svc_result, for the disk and Redis tiers
 * (see service_internal.h).
 *
 * Layout, little-endian, in this order:
 *   u8 codec version (RESULT_CODEC_VERSION) | u8 kind
 *   str model | str image_id
 *   u8 npred, then npred x (i32 index, f32 score, str label)
 *   str method | str layer | i32 class_index | str class_label | str colormap
 *   f64 alpha | i32 overlay_w | i32 overlay_h
 *   blob overlay_png | blob heatmap_png
 *   i32 image_w | i32 image_h | 4 x f32 box | 7 x f64 computed timings
 * where str is u16 length + bytes and blob u32 length + bytes.  The base64
 * copies are not stored: decoding makes them again (~0.1 ms per 100 KB).
 * Decoding checks every length against the buffer, every string against its
 * field and UTF-8, every number for being finite, so a value that passed the
 * frame checksum but comes from another codec version (or a Redis another
 * program wrote to) is refused, never half-read or answered as broken JSON.
 * tests/fuzz/fuzz_result.c holds the decoder to that. */
#include "service/service_internal.h"

#include "camserve/imageio.h"
#include "camserve/service.h"

#include <math.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#define RESULT_CODEC_VERSION 1

typedef struct wbuf {
    uint8_t *p;
    size_t n, cap;
    int oom;
} wbuf;

static void w_bytes(wbuf *w, const void *d, size_t n) {
    if (w->oom) return;
    if (w->n + n > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap < w->n + n) cap *= 2;
        uint8_t *np = realloc(w->p, cap);
        if (!np) {
            w->oom = 1;
            return;
        }
        w->p = np;
        w->cap = cap;
    }
    memcpy(w->p + w->n, d, n);
    w->n += n;
}

static void w_uint(wbuf *w, uint64_t v, int bytes) {
    uint8_t b[8];
    for (int i = 0; i < bytes; i++) b[i] = (uint8_t)(v >> (8 * i));
    w_bytes(w, b, (size_t)bytes);
}

static void w_f32(wbuf *w, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    w_uint(w, u, 4);
}

static void w_f64(wbuf *w, double f) {
    uint64_t u;
    memcpy(&u, &f, 8);
    w_uint(w, u, 8);
}

static void w_str(wbuf *w, const char *s) {
    size_t n = s ? strlen(s) : 0;
    if (n > 65535) n = 65535;
    w_uint(w, n, 2);
    w_bytes(w, s, n);
}

static void w_blob(wbuf *w, const uint8_t *d, size_t n) {
    w_uint(w, n, 4);
    if (n) w_bytes(w, d, n);
}

int svc_result_encode(const cs_svc_result *r, uint8_t **out, size_t *len) {
    wbuf w = {0};
    if (r->overlay_len > UINT32_MAX || r->heatmap_len > UINT32_MAX) return 0;
    w_uint(&w, RESULT_CODEC_VERSION, 1);
    w_uint(&w, (uint64_t)r->kind, 1);
    w_str(&w, r->model);
    w_str(&w, r->image_id);
    w_uint(&w, (uint64_t)r->npred, 1);
    for (int i = 0; i < r->npred; i++) {
        w_uint(&w, (uint32_t)r->preds[i].index, 4);
        w_f32(&w, r->preds[i].score);
        w_str(&w, r->preds[i].label);
    }
    w_str(&w, r->method);
    w_str(&w, r->layer);
    w_uint(&w, (uint32_t)r->class_index, 4);
    w_str(&w, r->class_label);
    w_str(&w, r->colormap ? r->colormap : "");
    w_f64(&w, r->alpha);
    w_uint(&w, (uint32_t)r->overlay_w, 4);
    w_uint(&w, (uint32_t)r->overlay_h, 4);
    w_blob(&w, r->overlay_png, r->overlay_len);
    w_blob(&w, r->heatmap_png, r->heatmap_len);
    w_uint(&w, (uint32_t)r->image_w, 4);
    w_uint(&w, (uint32_t)r->image_h, 4);
    for (int i = 0; i < 4; i++) w_f32(&w, r->box[i]);
    const double t[7] = {r->computed.queue, r->computed.decode, r->computed.preprocess, r->computed.inference,
                         r->computed.cam, r->computed.encode, r->computed.total};
    for (int i = 0; i < 7; i++) w_f64(&w, t[i]);
    if (w.oom) {
        free(w.p);
        return 0;
    }
    *out = w.p;
    *len = w.n;
    return 1;
}

typedef struct rbuf {
    const uint8_t *p;
    size_t n, off;
    int bad;
} rbuf;

static const uint8_t *r_take(rbuf *r, size_t n) {
    if (r->bad || n > r->n - r->off) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *p = r->p + r->off;
    r->off += n;
    return p;
}

static uint64_t r_uint(rbuf *r, int bytes) {
    const uint8_t *p = r_take(r, (size_t)bytes);
    uint64_t v = 0;
    for (int i = bytes - 1; p && i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static float r_f32(rbuf *r) {
    uint32_t u = (uint32_t)r_uint(r, 4);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static double r_f64(rbuf *r) {
    uint64_t u = r_uint(r, 8);
    double f;
    memcpy(&f, &u, 8);
    return f;
}

/* A number the answer's JSON carries: jansson has no NaN or infinity. */
static float r_f32_finite(rbuf *r) {
    float f = r_f32(r);
    if (!isfinite(f)) r->bad = 1;
    return f;
}

static double r_f64_finite(rbuf *r) {
    double f = r_f64(r);
    if (!isfinite(f)) r->bad = 1;
    return f;
}

/* Into a fixed field: longer than the field is a bad value, and so is one
 * that a JSON answer could not carry (cs_utf8_valid). */
static void r_str(rbuf *r, char *dst, size_t cap) {
    size_t n = (size_t)r_uint(r, 2);
    const uint8_t *p = r_take(r, n);
    if (!p || n >= cap || !cs_utf8_valid((const char *)p, n)) {
        r->bad = 1;
        dst[0] = '\0';
        return;
    }
    memcpy(dst, p, n);
    dst[n] = '\0';
}

static uint8_t *r_blob(rbuf *r, size_t *len) {
    size_t n = (size_t)r_uint(r, 4);
    const uint8_t *p = r_take(r, n);
    *len = 0;
    if (!p || n == 0) return NULL;
    uint8_t *d = malloc(n);
    if (!d) {
        r->bad = 1;
        return NULL;
    }
    memcpy(d, p, n);
    *len = n;
    return d;
}

static char *b64(const uint8_t *d, size_t n, size_t *out_len) {
    char *s = malloc(4 * ((n + 2) / 3) + 1);
    if (!s) return NULL;
    *out_len = n ? (size_t)EVP_EncodeBlock((unsigned char *)s, d, (int)n) : 0;
    s[*out_len] = '\0';
    return s;
}

int svc_result_decode(const uint8_t *buf, size_t len, cs_svc_result *res) {
    rbuf r = {buf, len, 0, 0};
    memset(res, 0, sizeof *res);
    if (r_uint(&r, 1) != RESULT_CODEC_VERSION) return 0;
    uint64_t kind = r_uint(&r, 1);
    if (kind != CS_SVC_EXPLAIN && kind != CS_SVC_CLASSIFY) return 0;
    res->kind = (cs_svc_kind)kind;
    r_str(&r, res->model, sizeof res->model);
    r_str(&r, res->image_id, sizeof res->image_id);
    res->npred = (int)r_uint(&r, 1);
    if (res->npred > CS_SVC_MAX_TOPK) return 0;
    for (int i = 0; i < res->npred; i++) {
        res->preds[i].index = (int)(int32_t)r_uint(&r, 4);
        res->preds[i].score = r_f32_finite(&r);
        r_str(&r, res->preds[i].label, sizeof res->preds[i].label);
    }
    r_str(&r, res->method, sizeof res->method);
    r_str(&r, res->layer, sizeof res->layer);
    res->class_index = (int)(int32_t)r_uint(&r, 4);
    r_str(&r, res->class_label, sizeof res->class_label);
    char cmap[32];
    r_str(&r, cmap, sizeof cmap);
    res->alpha = r_f64_finite(&r);
    res->overlay_w = (int)(int32_t)r_uint(&r, 4);
    res->overlay_h = (int)(int32_t)r_uint(&r, 4);
    res->overlay_png = r_blob(&r, &res->overlay_len);
    res->heatmap_png = r_blob(&r, &res->heatmap_len);
    res->image_w = (int)(int32_t)r_uint(&r, 4);
    res->image_h = (int)(int32_t)r_uint(&r, 4);
    for (int i = 0; i < 4; i++) res->box[i] = r_f32_finite(&r);
    double t[7];
    for (int i = 0; i < 7; i++) t[i] = r_f64_finite(&r);
    res->computed = (cs_svc_timings){t[0], t[1], t[2], t[3], t[4], t[5], t[6]};
    if (res->kind == CS_SVC_EXPLAIN) {
        cs_img_colormap cm;
        cs_error err;
        if (!r.bad && cs_img_colormap_parse(cmap, &cm, &err) == CS_OK) res->colormap = cs_img_colormap_name(cm);
        else r.bad = 1;
        if (!r.bad && (!res->overlay_png || !res->heatmap_png)) r.bad = 1;
        if (!r.bad) {
            res->overlay_b64 = b64(res->overlay_png, res->overlay_len, &res->overlay_b64_len);
            res->heatmap_b64 = b64(res->heatmap_png, res->heatmap_len, &res->heatmap_b64_len);
            if (!res->overlay_b64 || !res->heatmap_b64) r.bad = 1;
        }
    }
    if (r.bad || r.off != r.n) {
        svc_result_free_fields(res);
        return 0;
    }
    return 1;
}

void svc_result_free_fields(cs_svc_result *r) {
    free(r->overlay_png);
    free(r->heatmap_png);
    free(r->overlay_b64);
    free(r->heatmap_b64);
    r->overlay_png = r->heatmap_png = NULL;
    r->overlay_b64 = r->heatmap_b64 = NULL;
}
