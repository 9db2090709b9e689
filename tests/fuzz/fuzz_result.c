/* libFuzzer harness for what the disk and Redis tiers hand back: the cache
 * frame check (cs_cache_unframe) and the result codec (svc_result_decode).
 * A Redis shared by replicas, or a disk written by another version, is
 * input like any other: whatever decodes must be safe to answer with.
 *
 * Input: 32 bytes of key, then bytes that are both tried as a frame and
 * decoded as a result.  For a result that decodes, the checks are:
 *   - every string is valid UTF-8 and every number the answer's JSON
 *     carries is finite (jansson refuses NaN and bad UTF-8, which would
 *     drop fields from an answer);
 *   - encoding it and decoding that again gives the same bytes on the
 *     next encode (the codec round-trips). */
#include "camserve/cache.h"
#include "camserve/service.h"
#include "service/service_internal.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void need(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "fuzz_result: %s\n", what);
        __builtin_trap();
    }
}

static int utf8(const char *s) {
    json_t *j = json_string(s);
    const int valid = j != NULL;
    json_decref(j);
    return valid;
}

static void check_fields(const cs_svc_result *r) {
    need(utf8(r->model) && utf8(r->image_id) && utf8(r->method) && utf8(r->layer) && utf8(r->class_label),
         "a string that is not UTF-8");
    for (int i = 0; i < r->npred; i++) {
        need(utf8(r->preds[i].label), "a label that is not UTF-8");
        need(isfinite(r->preds[i].score), "a score that is not finite");
    }
    need(isfinite(r->alpha), "alpha is not finite");
    for (int i = 0; i < 4; i++) need(isfinite(r->box[i]), "a box corner that is not finite");
    const double t[7] = {r->computed.queue, r->computed.decode, r->computed.preprocess, r->computed.inference,
                         r->computed.cam, r->computed.encode, r->computed.total};
    for (int i = 0; i < 7; i++) need(isfinite(t[i]), "a timing that is not finite");
    if (r->kind == CS_SVC_EXPLAIN)
        need(r->colormap && r->overlay_png && r->heatmap_png && r->overlay_b64 && r->heatmap_b64,
             "an explanation without its images");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 32) return 0;
    const uint8_t *key = data, *buf = data + 32;
    size_t len = size - 32;

    const uint8_t *payload = NULL;
    size_t plen = 0;
    uint64_t created = 0;
    if (cs_cache_unframe(key, buf, len, &payload, &plen, &created, NULL))
        need(payload >= buf && plen <= len && (size_t)(payload - buf) <= len - plen, "a payload outside the frame");

    cs_svc_result r;
    if (!svc_result_decode(buf, len, &r)) {
        need(!r.overlay_png && !r.heatmap_png && !r.overlay_b64 && !r.heatmap_b64,
             "a failed decode handed out memory");
        return 0;
    }
    check_fields(&r);
    uint8_t *e1 = NULL, *e2 = NULL;
    size_t n1 = 0, n2 = 0;
    need(svc_result_encode(&r, &e1, &n1), "encode failed");
    cs_svc_result r2;
    need(svc_result_decode(e1, n1, &r2), "its own encoding does not decode");
    need(svc_result_encode(&r2, &e2, &n2), "encode failed");
    need(n1 == n2 && !memcmp(e1, e2, n1), "encode(decode(encode(x))) differs from encode(x)");
    free(e1);
    free(e2);
    svc_result_free_fields(&r);
    svc_result_free_fields(&r2);
    return 0;
}
