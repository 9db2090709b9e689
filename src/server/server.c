/* camserve HTTP server (see server.h).
 *
 * One req_ctx per request, created on libmicrohttpd's first call and freed
 * in its "request completed" notification.  A POST goes through:
 *   RECEIVING  body bytes appended (raw / JSON) or fed to the multipart
 *              post processor; the cap is checked on Content-Length and on
 *              every chunk, so no body beyond it is ever stored
 *   WAITING    submitted to the service; the connection is suspended
 *   DONE       the service answered; the connection is resumed and the
 *              answer formatted on libmicrohttpd's thread
 * ctx->mu orders the service's completion callback against the suspend:
 * the handler holds it across cs_svc_submit + MHD_suspend_connection, so the
 * callback's MHD_resume_connection always follows the suspend.
 *
 * Metrics kept here: requests by endpoint and status, latency per endpoint,
 * resident memory; the service appends its own. */
#include "camserve/server.h"

#include "camserve/cam.h"

#include "util/assets.h"
#include "util/histogram.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

enum { EP_UI, EP_STATIC, EP_EXPLAIN, EP_CLASSIFY, EP_MODELS, EP_HEALTHZ, EP_READYZ, EP_METRICS,
       EP_CACHE, EP_OTHER, NEP };
static const char *const EP_NAMES[NEP] = {"/", "static", "/v1/explain", "/v1/classify",
                                          "/v1/models", "/healthz", "/readyz", "/metrics", "/v1/cache",
                                          "other"};
static const int CODES[] = {200, 400, 404, 405, 413, 415, 499, 500, 503, 504};
#define NCODES (int)(sizeof CODES / sizeof CODES[0])

#define BODY_POOL_N 4
#define BODY_POOL_BYTES ((size_t)16 << 20)
#define BODY_POOL_MIN ((size_t)256 << 10)
#define PREFAULT_MIN ((size_t)1 << 20) /* see prefault() */
#define SMALL_BODY_MAX ((size_t)256 << 10) /* see cs_http.body_reserve */
/* Uploads announced at least this large are hashed on the hashing thread;
 * for smaller ones the hand-over costs more than the hashing. */
#define HASH_BEHIND_MIN ((size_t)256 << 10)

struct cs_http {
    cs_http_params p;
    char host[64];
    cs_svc *svc;
    struct MHD_Daemon *d;
    int port;
    atomic_int active;
    /* Body bytes buffered by all connections together: uploads beyond this
     * budget get 503, so memory stays bounded however many clients send at
     * once (each is also capped at max_upload_bytes). */
    atomic_size_t body_bytes;
    size_t body_budget;
    /* Large uploads (over SMALL_BODY_MAX) may fill the budget only up to
     * body_budget - body_reserve: the rest stays for small ones, so a burst
     * of new photos cannot starve the small re-uploads (typical repeats,
     * answered from the cache in microseconds) of their few kilobytes. */
    size_t body_reserve;
    /* The hashing thread: SHA-256 of large uploads runs there, behind their
     * reception, instead of on the libmicrohttpd thread between reads (the
     * two then share the cores).  hq is a FIFO of contexts with bytes
     * received but not hashed; all hashing state below is under hmu. */
    pthread_t hasher;
    bool hasher_started, hasher_quit;
    pthread_mutex_t hmu;
    pthread_cond_t hcv, hdone;
    struct req_ctx *hq_head, *hq_tail;
    /* Upload buffers of finished requests, kept for the next uploads.  A
     * fresh buffer of a few megabytes is a new mapping (M_MMAP_THRESHOLD) and
     * costs a page fault and a zeroed page per 4 KB as the body arrives: a
     * fifth of the server's time for a re-uploaded 3 MB photo.  A recycled
     * one is already resident.  Bounded in count and in bytes; only buffers
     * large enough to be mappings are kept (smaller ones come from the heap
     * and are cheap to reuse anyway). */
    pthread_mutex_t pool_mu;
    char *pool_buf[BODY_POOL_N];
    size_t pool_cap[BODY_POOL_N];
    int pool_n;
    size_t pool_bytes;
    bool quiesced, stopped;
    int listen_fd; /* handed back by MHD_quiesce_daemon, closed after the stop */
    pthread_mutex_t mmu;
    uint64_t requests[NEP][NCODES + 1]; /* last column: other codes */
    cs_hist latency[NEP];
};

cs_http_params cs_http_default_params(void) {
    cs_http_params p;
    memset(&p, 0, sizeof p);
    p.host = "127.0.0.1";
    p.port = 8080;
    p.threads = 2;
    p.max_connections = 512;
    p.connection_timeout_s = 30;
    p.max_upload_bytes = (size_t)25 << 20;
    p.inflight_bytes = (size_t)64 << 20;
    p.retry_after_s = 1;
    return p;
}

/* ---- per-request context ---------------------------------------------------------- */

enum { ST_RECEIVING, ST_WAITING, ST_DONE };
enum { BODY_RAW, BODY_JSON, BODY_MULTIPART };

#define NPARAMS 11
static const char *const PARAM_NAMES[NPARAMS] = {"model", "method", "layer", "class", "topk",
                                                 "colormap", "alpha", "format", "image_id",
                                                 "aug_smooth", "eigen_smooth"};
enum { P_MODEL, P_METHOD, P_LAYER, P_CLASS, P_TOPK, P_CMAP, P_ALPHA, P_FORMAT, P_IMAGE_ID, P_AUG,
       P_EIGEN };
#define PARAM_MAX 1024

typedef struct req_ctx {
    cs_http *h;
    struct MHD_Connection *conn;
    int ep;
    double t0;
    int status; /* of the answer queued, 0 before */
    int state;
    int body_kind;
    char *body;
    size_t len, cap;
    size_t expect; /* Content-Length, 0 when absent: the buffer is sized once */
    /* SHA-256 of the image bytes, updated as they arrive: hashing a 3 MB
     * upload overlaps its reception instead of following it (NULL for JSON
     * bodies, or when the context could not be made: the service hashes) */
    EVP_MD_CTX *sha;
    bool sha_failed;
    /* hashing behind (h->hmu): bytes [0, hashed) are hashed, [hashed,
     * avail) wait; the buffer is not moved while hash_behind is set */
    bool hash_behind, hq_queued, hq_busy;
    size_t hashed, avail;
    struct req_ctx *hq_next;
    bool have_image_field;
    struct MHD_PostProcessor *pp;
    int early_status; /* 413 / 400 decided while receiving */
    char early_msg[256];
    char params[NPARAMS][PARAM_MAX];
    bool param_set[NPARAMS];
    pthread_mutex_t mu;
    bool suspended;
    int fd; /* the connection's socket (peer_state); -1 when unknown */
    cs_svc_response resp;
} req_ctx;

static int param_index(const char *key) {
    for (int i = 0; i < NPARAMS; i++)
        if (!strcmp(PARAM_NAMES[i], key)) return i;
    return -1;
}

/* ---- answers ------------------------------------------------------------------------ */

/* What the client's end of c's socket shows, without reading it (MSG_PEEK
 * leaves any pipelined bytes): PEER_EOF once it has closed or half-closed
 * its side, PEER_ERROR when the connection is broken, PEER_OPEN otherwise. */
enum { PEER_OPEN, PEER_EOF, PEER_ERROR };
static int peer_state(const req_ctx *c) {
    char b;
    if (c->fd < 0) return PEER_OPEN;
    ssize_t r = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r == 0) return PEER_EOF;
    return r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR ? PEER_ERROR : PEER_OPEN;
}

/* Marks an answer to a client that has half-closed its connection
 * (shutdown(SHUT_WR) after its request: the socket reads end-of-file) with
 * "Connection: close", so libmicrohttpd closes once it is sent.  Without it,
 * in epoll mode, an answer resumed from a worker left such a connection
 * open until --idle-timeout-s: the end-of-file had been seen while the
 * connection was suspended, and an edge-triggered epoll does not report it
 * again (tests/cli/server_errors.sh, "half-close").  Runs on libmicrohttpd's
 * thread, which owns the socket. */
static void close_if_half_closed(const req_ctx *c, struct MHD_Response *r) {
    if (peer_state(c) == PEER_EOF) MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
}

static enum MHD_Result send_buf(req_ctx *c, int status, const char *ctype, void *buf, size_t len,
                                enum MHD_ResponseMemoryMode mode, const char *const *headers) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, buf, mode);
    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE) free(buf);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    for (int i = 0; headers && headers[i]; i += 2) MHD_add_response_header(r, headers[i], headers[i + 1]);
    close_if_half_closed(c, r);
    enum MHD_Result ret = MHD_queue_response(c->conn, (unsigned)status, r);
    MHD_destroy_response(r);
    if (ret == MHD_YES) c->status = status;
    return ret;
}

static enum MHD_Result send_json(req_ctx *c, int status, json_t *j, const char *const *headers) {
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (!s) return MHD_NO;
    return send_buf(c, status, "application/json", s, strlen(s), MHD_RESPMEM_MUST_FREE, headers);
}

static enum MHD_Result send_error(req_ctx *c, int status, const char *msg) {
    char retry[16];
    snprintf(retry, sizeof retry, "%d", c->h->p.retry_after_s);
    const char *hdr[] = {"Retry-After", retry, "Cache-Control", "no-store", NULL};
    const char *const *h = status == 503 ? hdr : hdr + 2;
    if (c->h->p.access_log || status == 500)
        fprintf(stderr, "camserve serve: %s -> %d %s\n", EP_NAMES[c->ep], status, msg);
    return send_json(c, status, json_pack("{s:s}", "error", msg), h);
}

static int status_of(cs_svc_outcome o) {
    switch (o) {
    case CS_SVC_OK: return 200;
    case CS_SVC_BAD_REQUEST: return 400;
    case CS_SVC_BAD_IMAGE: return 415;
    case CS_SVC_TOO_LARGE: return 413;
    case CS_SVC_UNKNOWN_IMAGE: return 404;
    case CS_SVC_BUSY: return 503;
    case CS_SVC_TIMEOUT: return 504;
    case CS_SVC_STOPPING: return 503;
    case CS_SVC_INTERNAL: return 500;
    case CS_SVC_GONE: return 499; /* nginx's "client closed request": read only by a half-closed client */
    }
    return 500;
}

/* The JSON answer of an explain request, sent without copying the PNGs:
 * jansson writes the document around two short placeholders (each appears
 * exactly once, right after its key, quotes unescaped), and the answer is
 * the document's pieces and the result's precomputed base64 text (which
 * needs no escaping) as one I/O vector.  The answer holds a reference to the
 * result until libmicrohttpd has sent it, so a cache hit costs neither a
 * megabyte of copying nor a megabyte of memory per client. */
typedef struct spliced {
    char *doc;
    const cs_svc_result *r; /* a reference of its own */
} spliced;

static void spliced_free(void *cls) {
    spliced *sp = cls;
    free(sp->doc);
    cs_svc_result_release(sp->r);
    free(sp);
}

/* Answers 200 with the iov pieces, which point into doc (may be NULL) and
 * into r's buffers: both live until libmicrohttpd destroys the answer. */
static enum MHD_Result send_iov(req_ctx *c, const char *ctype, const struct MHD_IoVec *iov, unsigned n,
                                char *doc, const cs_svc_result *r, const char *const *headers) {
    spliced *sp = malloc(sizeof *sp);
    if (!sp) {
        free(doc);
        return send_error(c, 500, "out of memory");
    }
    sp->doc = doc;
    sp->r = cs_svc_result_retain(r);
    struct MHD_Response *resp = MHD_create_response_from_iovec(iov, n, spliced_free, sp);
    if (!resp) {
        spliced_free(sp);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    for (int i = 0; headers && headers[i]; i += 2) MHD_add_response_header(resp, headers[i], headers[i + 1]);
    close_if_half_closed(c, resp);
    enum MHD_Result ret = MHD_queue_response(c->conn, 200, resp);
    MHD_destroy_response(resp);
    if (ret == MHD_YES) c->status = 200;
    return ret;
}

static enum MHD_Result send_spliced(req_ctx *c, char *doc, const cs_svc_result *r, const char *const *headers) {
    static const char K1[] = "\"overlay_png_base64\":\"@1\"", K2[] = "\"heatmap_png_base64\":\"@2\"";
    const char *p1 = strstr(doc, K1), *p2 = strstr(doc, K2);
    if (!p1 || !p2 || p2 < p1) {
        free(doc);
        return send_error(c, 500, "internal error: answer template");
    }
    /* `"key":"` ends 3 bytes before the placeholder's end: `@N"` */
    const size_t k1 = sizeof K1 - 1, k2 = sizeof K2 - 1;
    const struct MHD_IoVec iov[] = {
        {doc, (size_t)(p1 - doc) + k1 - 3},
        {r->overlay_b64, r->overlay_b64_len},
        {p1 + k1 - 1, (size_t)(p2 - (p1 + k1 - 1)) + k2 - 3},
        {r->heatmap_b64, r->heatmap_b64_len},
        {p2 + k2 - 1, strlen(p2 + k2 - 1)},
    };
    return send_iov(c, "application/json", iov, 5, doc, r, headers);
}

static json_t *predictions_json(const cs_svc_result *r) {
    json_t *a = json_array();
    for (int i = 0; i < r->npred; i++) {
        const cs_svc_prediction *p = &r->preds[i];
        /* a model whose logits overflow (+inf) has no probabilities: null,
         * not a prediction dropped because JSON has no NaN */
        json_t *score = isfinite(p->score) ? json_real(p->score) : json_null();
        json_array_append_new(a, json_pack("{s:i, s:s?, s:o}", "index", p->index, "label",
                                           p->label[0] ? p->label : NULL, "score", score));
    }
    return a;
}

static enum MHD_Result send_result(req_ctx *c) {
    cs_svc_response *resp = &c->resp;
    if (resp->outcome != CS_SVC_OK)
        return send_error(c, status_of(resp->outcome), resp->err.msg[0] ? resp->err.msg : cs_svc_outcome_name(resp->outcome));
    const cs_svc_result *r = resp->result;
    const char *cache = resp->cache_hit ? "hit" : "miss";
    const char *hdr[] = {"X-Cache", cache, "X-Image-Id", r->image_id, "Cache-Control", "no-store", NULL};
    if (c->ep == EP_EXPLAIN && !strcmp(c->params[P_FORMAT], "png"))
        return send_iov(c, "image/png", &(struct MHD_IoVec){r->overlay_png, r->overlay_len}, 1, NULL, r, hdr);
    const cs_svc_timings *t = &resp->timings;
    json_t *timings = json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "queue", t->queue, "decode",
                                t->decode, "preprocess", t->preprocess, "inference", t->inference,
                                "cam", t->cam, "encode", t->encode, "total", cs_now_ms() - c->t0);
    json_t *o = json_pack("{s:s, s:s, s:{s:i, s:i}, s:o}", "model", r->model, "image_id", r->image_id,
                          "image", "width", r->image_w, "height", r->image_h, "predictions",
                          predictions_json(r));
    if (r->kind == CS_SVC_EXPLAIN)
        json_object_set_new(o, "cam", json_pack("{s:s, s:s, s:i, s:s?, s:s, s:f, s:i, s:i, s:[f,f,f,f], s:s, s:s}",
                                                "method", r->method, "layer", r->layer, "class_index",
                                                r->class_index, "class_label",
                                                r->class_label[0] ? r->class_label : NULL, "colormap",
                                                r->colormap, "alpha", r->alpha, "width", r->overlay_w,
                                                "height", r->overlay_h, "box", (double)r->box[0],
                                                (double)r->box[1], (double)r->box[2], (double)r->box[3],
                                                "overlay_png_base64", "@1", "heatmap_png_base64", "@2"));
    json_object_set_new(o, "timings_ms", timings);
    json_object_set_new(o, "cache", json_string(cache));
    if (r->kind != CS_SVC_EXPLAIN) return send_json(c, 200, o, hdr);
    char *doc = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!doc) return send_error(c, 500, "out of memory");
    return send_spliced(c, doc, r, hdr);
}

/* ---- GET endpoints --------------------------------------------------------------------- */

static long resident_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &size, &rss) != 2) rss = 0;
        fclose(f);
    }
    return rss * sysconf(_SC_PAGESIZE);
}

static enum MHD_Result send_metrics(req_ctx *c) {
    cs_http *h = c->h;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return send_error(c, 500, "out of memory");
    fprintf(f, "# HELP camserve_http_requests_total HTTP requests answered, by endpoint and status.\n"
               "# TYPE camserve_http_requests_total counter\n");
    pthread_mutex_lock(&h->mmu);
    for (int e = 0; e < NEP; e++)
        for (int k = 0; k <= NCODES; k++)
            if (h->requests[e][k] || (k == 0 && e != EP_OTHER && e != EP_STATIC))
                fprintf(f, "camserve_http_requests_total{endpoint=\"%s\",code=\"%s%d\"} %llu\n", EP_NAMES[e],
                        k < NCODES ? "" : "other", k < NCODES ? CODES[k] : 0,
                        (unsigned long long)h->requests[e][k]);
    fprintf(f, "# HELP camserve_http_request_seconds Time from the request's first byte to the answer queued.\n"
               "# TYPE camserve_http_request_seconds histogram\n");
    for (int e = 0; e < NEP; e++) {
        if (!h->latency[e].count && (e == EP_OTHER || e == EP_STATIC)) continue;
        char lab[64];
        snprintf(lab, sizeof lab, "endpoint=\"%s\"", EP_NAMES[e]);
        cs_hist_write(f, "camserve_http_request_seconds", lab, &h->latency[e]);
    }
    pthread_mutex_unlock(&h->mmu);
    fprintf(f, "# HELP camserve_http_active_requests Requests being received or answered.\n"
               "# TYPE camserve_http_active_requests gauge\ncamserve_http_active_requests %d\n",
            atomic_load(&h->active));
    fprintf(f, "# HELP process_resident_memory_bytes Resident memory (from /proc/self/statm).\n"
               "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %ld\n",
            resident_bytes());
    fprintf(f, "# HELP camserve_ready Whether the models are loaded and the service runs.\n"
               "# TYPE camserve_ready gauge\ncamserve_ready %d\n", cs_svc_ready(h->svc));
    cs_svc_write_metrics(h->svc, f);
    fclose(f);
    return send_buf(c, 200, "text/plain; version=0.0.4; charset=utf-8", buf, len, MHD_RESPMEM_MUST_FREE, NULL);
}

static enum MHD_Result send_models(req_ctx *c) {
    cs_svc *svc = c->h->svc;
    if (!cs_svc_ready(svc)) return send_error(c, 503, "models are still loading");
    json_t *arr = json_array();
    for (int i = 0; i < cs_svc_num_models(svc); i++) {
        const cs_svc_model_info *mi = cs_svc_model_at(svc, i);
        json_t *layers = json_array(), *labels = json_array();
        int nl = cs_model_num_layers(mi->model), def = cs_model_default_layer(mi->model);
        for (int l = 0; l < nl; l++) {
            int64_t d[4];
            cs_model_layer_dims(mi->model, l, d);
            json_array_append_new(layers, json_pack("{s:s, s:[I,I,I]}", "name", cs_model_layer_name(mi->model, l),
                                                    "shape", (json_int_t)d[1], (json_int_t)d[2], (json_int_t)d[3]));
        }
        for (int l = 0; l < mi->num_labels && l < mi->num_classes; l++)
            json_array_append_new(labels, json_string(mi->labels[l]));
        json_array_append_new(
            arr, json_pack("{s:s, s:s, s:i, s:o, s:{s:i, s:i}, s:o, s:s?, s:s?, s:f, s:s, s:s, s:b}", "name", mi->name,
                           "digest", mi->digest, "num_classes", mi->num_classes, "classes", labels,
                           "input", "width", mi->input_w, "height", mi->input_h, "layers", layers,
                           "default_layer", def >= 0 ? cs_model_layer_name(mi->model, def) : NULL,
                           "preprocess", mi->preprocess_source, "load_ms", mi->load_ms,
                           "device", cs_model_device(mi->model),
                           "precision", cs_precision_name(cs_model_precision(mi->model)), "builtin",
                           mi->builtin));
    }
    json_t *methods = json_array();
    for (int m = 0; m < CS_CAM_METHOD_COUNT; m++)
        json_array_append_new(methods, json_string(cs_cam_method_name((cs_cam_method)m)));
    json_t *cmaps = json_array();
    for (int m = CS_IMG_CMAP_JET; m <= CS_IMG_CMAP_GRAY; m++)
        json_array_append_new(cmaps, json_string(cs_img_colormap_name((cs_img_colormap)m)));
    return send_json(c, 200, json_pack("{s:o, s:o, s:o}", "models", arr, "methods", methods, "colormaps", cmaps), NULL);
}

static const char *mime_of(const char *path) {
    const char *dot = strrchr(path, '.');
    static const char *const map[][2] = {
        {".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"}, {".css", "text/css; charset=utf-8"},
        {".json", "application/json"}, {".png", "image/png"}, {".jpg", "image/jpeg"},
        {".jpeg", "image/jpeg"}, {".webp", "image/webp"}, {".svg", "image/svg+xml"},
        {".ico", "image/x-icon"}, {".txt", "text/plain; charset=utf-8"}};
    for (size_t i = 0; dot && i < sizeof map / sizeof map[0]; i++)
        if (!strcasecmp(dot, map[i][0])) return map[i][1];
    return "application/octet-stream";
}

/* ---- receiving a body ---------------------------------------------------------------------- */

static void too_large(req_ctx *c);

/* ---- hashing behind the reception -------------------------------------------------- */

/* Queues c for the hashing thread (h->hmu held; c neither queued nor busy). */
static void hq_push(cs_http *h, req_ctx *c) {
    c->hq_next = NULL;
    if (h->hq_tail) h->hq_tail->hq_next = c;
    else h->hq_head = c;
    h->hq_tail = c;
    c->hq_queued = true;
    pthread_cond_signal(&h->hcv);
}

static void *hasher_main(void *arg) {
    cs_http *h = arg;
    pthread_mutex_lock(&h->hmu);
    for (;;) {
        req_ctx *c = h->hq_head;
        if (!c) {
            if (h->hasher_quit) break;
            pthread_cond_wait(&h->hcv, &h->hmu);
            continue;
        }
        h->hq_head = c->hq_next;
        if (!h->hq_head) h->hq_tail = NULL;
        c->hq_queued = false;
        c->hq_busy = true;
        const size_t from = c->hashed, to = c->avail;
        pthread_mutex_unlock(&h->hmu);
        bool ok = EVP_DigestUpdate(c->sha, c->body + from, to - from) == 1;
        pthread_mutex_lock(&h->hmu);
        if (!ok) c->sha_failed = true; /* the service hashes instead */
        c->hashed = to;
        c->hq_busy = false;
        if (c->avail > c->hashed) hq_push(h, c); /* more arrived meanwhile */
        pthread_cond_broadcast(&h->hdone);
    }
    pthread_mutex_unlock(&h->hmu);
    return NULL;
}

/* Hands bytes [avail, len) of c's body to the hashing thread. */
static void hash_behind(req_ctx *c) {
    cs_http *h = c->h;
    pthread_mutex_lock(&h->hmu);
    c->avail = c->len;
    if (!c->hq_queued && !c->hq_busy) hq_push(h, c);
    pthread_mutex_unlock(&h->hmu);
}

/* Waits until every byte handed over is hashed; after it the hashing thread
 * no longer touches c. */
static void hash_wait(req_ctx *c) {
    if (!c->hash_behind) return;
    cs_http *h = c->h;
    pthread_mutex_lock(&h->hmu);
    while (c->hq_queued || c->hq_busy) pthread_cond_wait(&h->hdone, &h->hmu);
    pthread_mutex_unlock(&h->hmu);
}

/* The smallest pooled buffer of at least need bytes (its size in *cap), or
 * NULL.  Small uploads never take one (see the caller), so a pooled photo
 * buffer is not held by a 20 KB body. */
static char *pool_take(cs_http *h, size_t need, size_t *cap) {
    char *buf = NULL;
    pthread_mutex_lock(&h->pool_mu);
    int best = -1;
    for (int i = 0; i < h->pool_n; i++)
        if (h->pool_cap[i] >= need && (best < 0 || h->pool_cap[i] < h->pool_cap[best])) best = i;
    if (best >= 0) {
        buf = h->pool_buf[best];
        *cap = h->pool_cap[best];
        h->pool_bytes -= *cap;
        h->pool_n--;
        h->pool_buf[best] = h->pool_buf[h->pool_n];
        h->pool_cap[best] = h->pool_cap[h->pool_n];
    }
    pthread_mutex_unlock(&h->pool_mu);
    return buf;
}

/* Keeps buf for a later upload when the pool has room, else frees it. */
static void pool_give(cs_http *h, char *buf, size_t cap) {
    if (!buf) return;
    if (cap >= BODY_POOL_MIN && cap <= BODY_POOL_BYTES) {
        pthread_mutex_lock(&h->pool_mu);
        bool kept = h->pool_n < BODY_POOL_N && h->pool_bytes + cap <= BODY_POOL_BYTES;
        if (kept) {
            h->pool_buf[h->pool_n] = buf;
            h->pool_cap[h->pool_n++] = cap;
            h->pool_bytes += cap;
        }
        pthread_mutex_unlock(&h->pool_mu);
        if (kept) return;
    }
    free(buf);
}

/* Maps a fresh body's pages in one call instead of one fault per 4 KB page
 * as the upload is copied in: a 3.2 MB photo is ~800 faults, which took
 * about half of the ~10 ms its copy took on this project's VM (whose
 * faults are dear); a new photo's body is always fresh, since the image
 * store keeps the block it is handed.  Advice only: a kernel without
 * MADV_POPULATE_WRITE (before Linux 5.14) faults the pages in as before. */
static void prefault(char *p, size_t n) {
#ifdef MADV_POPULATE_WRITE
    const uintptr_t page = 4096, a = ((uintptr_t)p + page - 1) & ~(page - 1), e = ((uintptr_t)p + n) & ~(page - 1);
    if (n >= PREFAULT_MIN && e > a) (void)madvise((void *)a, e - a, MADV_POPULATE_WRITE);
#else
    (void)p;
    (void)n;
#endif
}

static bool append(req_ctx *c, const char *data, size_t n, bool image) {
    cs_http *h = c->h;
    if (c->len + n > h->p.max_upload_bytes) {
        too_large(c);
        return false;
    }
    if (c->len + n + 1 > c->cap) {
        /* the announced length, when it covers this chunk, is the size to
         * reserve (multipart framing makes it a slight over-estimate);
         * otherwise double */
        size_t cap = c->expect >= c->len + n ? c->expect + 1 : c->cap ? c->cap : 65536;
        while (cap < c->len + n + 1) cap *= 2;
        if (cap > h->p.max_upload_bytes + 1) cap = h->p.max_upload_bytes + 1;
        size_t pooled_cap = 0;
        char *pooled = c->body || cap < BODY_POOL_MIN ? NULL : pool_take(h, cap, &pooled_cap);
        if (pooled) cap = pooled_cap;
        size_t grow = cap - c->cap;
        size_t limit = cap <= SMALL_BODY_MAX ? h->body_budget : h->body_budget - h->body_reserve;
        if (atomic_fetch_add(&h->body_bytes, grow) + grow > limit) {
            atomic_fetch_sub(&h->body_bytes, grow);
            pool_give(h, pooled, pooled_cap);
            c->early_status = 503;
            snprintf(c->early_msg, sizeof c->early_msg,
                     "server busy: too many uploads in progress; retry shortly");
            return false;
        }
        hash_wait(c); /* the hashing thread must not read a buffer being moved */
        char *nb = pooled ? pooled : realloc(c->body, cap);
        if (!nb) {
            atomic_fetch_sub(&h->body_bytes, grow);
            c->early_status = 500;
            snprintf(c->early_msg, sizeof c->early_msg, "out of memory");
            return false;
        }
        c->body = nb;
        c->cap = cap;
        if (!pooled) prefault(nb, cap);
    }
    memcpy(c->body + c->len, data, n);
    c->len += n;
    c->body[c->len] = '\0';
    if (image && c->hash_behind) {
        hash_behind(c);
    } else if (image && !c->sha_failed) {
        if (!c->sha) {
            c->sha = EVP_MD_CTX_new();
            if (!c->sha || EVP_DigestInit_ex(c->sha, EVP_sha256(), NULL) != 1) c->sha_failed = true;
        }
        /* decided on the first chunk; the buffer was sized from
         * Content-Length, so it will not move under the hashing thread */
        if (!c->sha_failed && c->len == n && h->hasher_started && c->expect >= HASH_BEHIND_MIN &&
            c->cap > c->expect) {
            c->hash_behind = true;
            hash_behind(c);
        } else if (!c->sha_failed && EVP_DigestUpdate(c->sha, data, n) != 1) {
            c->sha_failed = true;
        }
    }
    return true;
}

static void too_large(req_ctx *c) {
    c->early_status = 413;
    snprintf(c->early_msg, sizeof c->early_msg, "request body too large (limit %zu bytes)",
             c->h->p.max_upload_bytes);
}

static enum MHD_Result post_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *filename, const char *content_type,
                                 const char *transfer_encoding, const char *data, uint64_t off,
                                 size_t size) {
    req_ctx *c = cls;
    if (c->early_status) return MHD_YES;
    /* a part without Content-Disposition: form-data; name=... comes with
     * no key (found by tests/fuzz/fuzz_http.c: it used to crash here) */
    if (!key) {
        c->early_status = 400;
        snprintf(c->early_msg, sizeof c->early_msg,
                 "malformed multipart body: a part without a name (Content-Disposition: form-data; name=...)");
        return MHD_YES;
    }
    if (!strcmp(key, "image")) {
        c->have_image_field = true;
        if (size) append(c, data, size, true); /* on failure early_status says why */
        return MHD_YES;
    }
    int i = param_index(key);
    if (i < 0) return MHD_YES; /* unknown fields are ignored */
    size_t cur = off == 0 ? 0 : strlen(c->params[i]);
    if (cur + size >= PARAM_MAX) {
        c->early_status = 400;
        snprintf(c->early_msg, sizeof c->early_msg, "field '%s' is too long", key);
        return MHD_YES;
    }
    if (size) memcpy(c->params[i] + cur, data, size);
    c->params[i][cur + size] = '\0';
    c->param_set[i] = true;
    return MHD_YES;
}

/* JSON bodies: {"image_id": "...", "model": ..., "class": 3, "alpha": 0.4, ...} */
static const char *json_params(req_ctx *c) {
    json_error_t je;
    json_t *root = json_loadb(c->body, c->len, 0, &je);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        snprintf(c->early_msg, sizeof c->early_msg, "malformed JSON body: %s", root ? "not an object" : je.text);
        return c->early_msg;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        int i = param_index(key);
        if (i < 0) continue;
        char *dst = c->params[i];
        int n;
        if (json_is_string(v)) n = snprintf(dst, PARAM_MAX, "%s", json_string_value(v));
        else if (json_is_integer(v)) n = snprintf(dst, PARAM_MAX, "%lld", (long long)json_integer_value(v));
        else if (json_is_real(v)) n = snprintf(dst, PARAM_MAX, "%.17g", json_real_value(v));
        else if (json_is_boolean(v)) n = snprintf(dst, PARAM_MAX, "%d", json_is_true(v) ? 1 : 0);
        else if (json_is_null(v)) continue;
        else {
            snprintf(c->early_msg, sizeof c->early_msg, "field '%s' must be a string or a number", key);
            json_decref(root);
            return c->early_msg;
        }
        if (n >= PARAM_MAX) {
            snprintf(c->early_msg, sizeof c->early_msg, "field '%s' is too long", key);
            json_decref(root);
            return c->early_msg;
        }
        c->param_set[i] = true;
    }
    json_decref(root);
    return NULL;
}

/* ---- POST /v1/explain and /v1/classify --------------------------------------------------------- */

/* The service's client_gone: whether the client has closed its end.  Runs
 * on a worker while the connection is suspended, or (a job taken at once)
 * while libmicrohttpd's thread is still in submit between cs_svc_submit and
 * the suspend; either way libmicrohttpd neither reads nor closes the
 * socket then, so the peek races with nothing.  End of
 * stream counts as gone, as in nginx (a client that half-closes after its
 * request cannot be told from one that has closed: both read end-of-file;
 * such a client gets 499 for a long run, see docs/api.md). */
static int client_gone(void *ctx) { return peer_state(ctx) != PEER_OPEN; }

static void on_done(void *ctx, cs_svc_response *resp) {
    req_ctx *c = ctx;
    pthread_mutex_lock(&c->mu);
    c->resp = *resp;
    c->state = ST_DONE;
    if (c->suspended) {
        c->suspended = false;
        MHD_resume_connection(c->conn);
    }
    pthread_mutex_unlock(&c->mu);
}

static bool parse_flag(const char *s) { return !strcmp(s, "1") || !strcasecmp(s, "true") || !strcasecmp(s, "yes"); }

static enum MHD_Result submit(req_ctx *c) {
    char msg[256];
    if (c->early_status) return send_error(c, c->early_status, c->early_msg);
    if (c->body_kind == BODY_MULTIPART) {
        enum MHD_Result ok = MHD_destroy_post_processor(c->pp);
        c->pp = NULL;
        if (c->early_status) return send_error(c, c->early_status, c->early_msg);
        if (ok != MHD_YES) return send_error(c, 400, "malformed multipart body");
        if (!c->have_image_field && !c->params[P_IMAGE_ID][0])
            return send_error(c, 400, "multipart body without an 'image' field (or an image_id)");
    } else if (c->body_kind == BODY_JSON) {
        const char *e = json_params(c);
        if (e) return send_error(c, 400, e);
    }
    cs_svc_request req;
    memset(&req, 0, sizeof req);
    req.kind = c->ep == EP_EXPLAIN ? CS_SVC_EXPLAIN : CS_SVC_CLASSIFY;
    req.model = c->params[P_MODEL];
    req.method = c->params[P_METHOD];
    req.layer = c->params[P_LAYER];
    req.class_spec = c->params[P_CLASS];
    req.colormap = c->params[P_CMAP];
    req.image_id = c->params[P_IMAGE_ID];
    req.alpha = -1;
    if (c->params[P_TOPK][0]) {
        char *end;
        long v = strtol(c->params[P_TOPK], &end, 10);
        if (*end || v < 1 || v > CS_SVC_MAX_TOPK) {
            snprintf(msg, sizeof msg, "topk must be an integer 1..%d", CS_SVC_MAX_TOPK);
            return send_error(c, 400, msg);
        }
        req.topk = (int)v;
    }
    if (c->params[P_ALPHA][0]) {
        char *end;
        double v = strtod(c->params[P_ALPHA], &end);
        if (*end || !(v >= 0 && v <= 1)) return send_error(c, 400, "alpha must be a number in [0, 1]");
        req.alpha = v;
    }
    const char *fmt = c->params[P_FORMAT];
    if (*fmt && strcmp(fmt, "json") && !(c->ep == EP_EXPLAIN && !strcmp(fmt, "png")))
        return send_error(c, 400, c->ep == EP_EXPLAIN ? "format must be json or png" : "format must be json");
    req.aug_smooth = parse_flag(c->params[P_AUG]);
    req.eigen_smooth = parse_flag(c->params[P_EIGEN]);
    req.client_gone = client_gone;
    uint8_t digest[32];
    unsigned dlen = 0;
    int taken = 0;
    if (c->body_kind != BODY_JSON && c->len > 0) {
        req.image = c->body;
        req.image_len = c->len;
        req.image_cap = c->cap;
        req.image_taken = &taken; /* a new image: the service keeps the body */
        hash_wait(c);
        if (c->sha && !c->sha_failed && EVP_DigestFinal_ex(c->sha, digest, &dlen) == 1 && dlen == 32)
            req.image_sha256 = digest;
    } else if (c->body_kind != BODY_JSON && !c->params[P_IMAGE_ID][0]) {
        return send_error(c, 400, "empty body: send an image (raw image/* body or multipart field 'image') or {\"image_id\": ...}");
    }
    pthread_mutex_lock(&c->mu);
    c->state = ST_WAITING;
    int answered = cs_svc_submit(c->h->svc, &req, on_done, c, &c->resp);
    if (taken) c->body = NULL; /* the service's now; still counted in body_bytes until completed */
    if (answered) {
        c->state = ST_DONE;
        pthread_mutex_unlock(&c->mu);
        return send_result(c);
    }
    /* queued: on_done waits for c->mu, so it cannot resume before this */
    MHD_suspend_connection(c->conn);
    c->suspended = true;
    pthread_mutex_unlock(&c->mu);
    return MHD_YES;
}

/* ---- dispatch --------------------------------------------------------------------------------- */

static int endpoint_of(const char *url) {
    if (!strcmp(url, "/") || !strcmp(url, "/index.html")) return EP_UI;
    if (!strcmp(url, "/v1/explain")) return EP_EXPLAIN;
    if (!strcmp(url, "/v1/classify")) return EP_CLASSIFY;
    if (!strcmp(url, "/v1/models")) return EP_MODELS;
    if (!strcmp(url, "/healthz")) return EP_HEALTHZ;
    if (!strcmp(url, "/readyz")) return EP_READYZ;
    if (!strcmp(url, "/metrics")) return EP_METRICS;
    if (!strcmp(url, "/v1/cache")) return EP_CACHE;
    if (cs_asset_find(cs_web_assets, url)) return EP_STATIC;
    return EP_OTHER;
}

static enum MHD_Result method_not_allowed(req_ctx *c, const char *allow) {
    char msg[128];
    snprintf(msg, sizeof msg, "method not allowed: use %s", allow);
    const char *hdr[] = {"Allow", allow, NULL};
    return send_json(c, 405, json_pack("{s:s}", "error", msg), hdr);
}

/* DELETE /v1/cache[?model=NAME]: drops cached results (memory + disk). */
static enum MHD_Result clear_cache(req_ctx *c, const char *method) {
    if (strcmp(method, "DELETE")) return method_not_allowed(c, "DELETE");
    const char *model = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "model");
    uint64_t removed = 0;
    cs_error err = {0};
    cs_status st = cs_svc_cache_clear(c->h->svc, model, &removed, &err);
    if (st == CS_ENOTFOUND) return send_error(c, 404, err.msg);
    if (st != CS_OK) return send_error(c, 500, err.msg);
    return send_json(c, 200, json_pack("{s:I, s:s?}", "removed", (json_int_t)removed, "model",
                                       model && *model ? model : NULL), NULL);
}

static enum MHD_Result first_call(req_ctx *c, const char *url, const char *method) {
    bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), post = !strcmp(method, "POST");
    switch (c->ep) {
    case EP_EXPLAIN:
    case EP_CLASSIFY: break;
    case EP_OTHER: {
        char msg[300];
        snprintf(msg, sizeof msg, "not found: %.200s", url);
        return send_error(c, 404, msg);
    }
    case EP_CACHE: return clear_cache(c, method);
    default:
        if (!get) return method_not_allowed(c, "GET, HEAD");
        break;
    }
    switch (c->ep) {
    case EP_UI:
    case EP_STATIC: {
        const cs_asset *a = cs_asset_find(cs_web_assets, c->ep == EP_UI ? "/index.html" : url);
        if (!a) return send_error(c, 404, "the web UI is not built into this binary");
        const char *hdr[] = {"Cache-Control", "no-cache", NULL};
        return send_buf(c, 200, mime_of(a->path), (void *)a->data, a->size, MHD_RESPMEM_PERSISTENT, hdr);
    }
    case EP_MODELS: return send_models(c);
    case EP_HEALTHZ: return send_json(c, 200, json_pack("{s:s}", "status", "ok"), NULL);
    case EP_READYZ:
        return cs_svc_ready(c->h->svc) ? send_json(c, 200, json_pack("{s:s}", "status", "ready"), NULL)
                                       : send_json(c, 503, json_pack("{s:s}", "status", "loading"), NULL);
    case EP_METRICS: return send_metrics(c);
    default: break;
    }
    if (!post) return method_not_allowed(c, "POST");
    /* POST: the query string may carry every parameter */
    for (int i = 0; i < NPARAMS; i++) {
        const char *v = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, PARAM_NAMES[i]);
        if (!v) continue;
        if (strlen(v) >= PARAM_MAX) {
            char msg[96];
            snprintf(msg, sizeof msg, "parameter '%s' is too long", PARAM_NAMES[i]);
            return send_error(c, 400, msg);
        }
        snprintf(c->params[i], PARAM_MAX, "%s", v);
        c->param_set[i] = true;
    }
    const char *cl = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        unsigned long long v = strtoull(cl, &end, 10);
        if (*end == '\0' && v > c->h->p.max_upload_bytes) {
            too_large(c);
            return send_error(c, 413, c->early_msg);
        }
        if (*end == '\0') c->expect = (size_t)v;
    }
    const char *ct = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (ct && !strncasecmp(ct, "multipart/form-data", 19)) {
        c->body_kind = BODY_MULTIPART;
        c->pp = MHD_create_post_processor(c->conn, 64 * 1024, post_iter, c);
        if (!c->pp) return send_error(c, 400, "malformed multipart body: no boundary in Content-Type");
    } else if (ct && !strncasecmp(ct, "application/json", 16)) {
        c->body_kind = BODY_JSON;
    } else {
        /* image types, application/octet-stream or anything else: the bytes are
         * the image, and decoding decides (415 when they are not one) */
        c->body_kind = BODY_RAW;
    }
    return MHD_YES;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, const char *upload_data,
                               size_t *upload_data_size, void **con_cls) {
    cs_http *h = cls;
    req_ctx *c = *con_cls;
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c) return MHD_NO;
        c->h = h;
        c->conn = conn;
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        c->fd = ci ? ci->connect_fd : -1;
        c->t0 = cs_now_ms();
        c->ep = endpoint_of(url);
        pthread_mutex_init(&c->mu, NULL);
        *con_cls = c;
        atomic_fetch_add(&h->active, 1);
        return first_call(c, url, method);
    }
    if (c->status) { /* answered early (413 ...): drop whatever still comes */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (c->early_status) return MHD_YES; /* discard; answered when the body ends */
        if (c->body_kind == BODY_MULTIPART) {
            if (MHD_post_process(c->pp, upload_data, n) != MHD_YES && !c->early_status) {
                c->early_status = 400;
                snprintf(c->early_msg, sizeof c->early_msg, "malformed multipart body");
            }
        } else {
            /* on failure early_status says why */
            append(c, upload_data, n, c->body_kind == BODY_RAW);
        }
        if (c->early_status == 413) {
            /* answer now if libmicrohttpd allows it mid-upload; else at the end */
            send_error(c, 413, c->early_msg);
        }
        return MHD_YES;
    }
    switch (c->state) {
    case ST_RECEIVING: return submit(c);
    case ST_DONE: return send_result(c);
    default: return MHD_YES; /* spurious call while waiting */
    }
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode toe) {
    cs_http *h = cls;
    req_ctx *c = *con_cls;
    if (!c) return;
    *con_cls = NULL;
    /* a request aborted while queued cannot happen: a suspended connection
     * is not processed, so this always runs after on_done */
    pthread_mutex_lock(&c->mu);
    pthread_mutex_unlock(&c->mu);
    int status = c->status ? c->status : 499;
    int k = NCODES;
    for (int i = 0; i < NCODES; i++)
        if (CODES[i] == status) k = i;
    pthread_mutex_lock(&h->mmu);
    h->requests[c->ep][k]++;
    cs_hist_observe(&h->latency[c->ep], (cs_now_ms() - c->t0) / 1e3);
    pthread_mutex_unlock(&h->mmu);
    if (h->p.access_log)
        fprintf(stderr, "camserve serve: %s %d %.1f ms%s\n", EP_NAMES[c->ep], status, cs_now_ms() - c->t0,
                toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection ended early)");
    cs_svc_response_clear(&c->resp);
    if (c->pp) MHD_destroy_post_processor(c->pp);
    hash_wait(c); /* an upload cut short may still be hashing */
    EVP_MD_CTX_free(c->sha);
    atomic_fetch_sub(&h->body_bytes, c->cap);
    pool_give(h, c->body, c->cap);
    pthread_mutex_destroy(&c->mu);
    free(c);
    atomic_fetch_sub(&h->active, 1);
}

/* ---- lifecycle ---------------------------------------------------------------------------------- */

/* After libmicrohttpd has stopped (no request left to hand it bytes). */
static void stop_hasher(cs_http *h) {
    if (!h->hasher_started) return;
    pthread_mutex_lock(&h->hmu);
    h->hasher_quit = true;
    pthread_cond_signal(&h->hcv);
    pthread_mutex_unlock(&h->hmu);
    pthread_join(h->hasher, NULL);
    h->hasher_started = false;
}

/* Frees h once libmicrohttpd is stopped or never started. */
static void http_destroy(cs_http *h) {
    stop_hasher(h);
    for (int i = 0; i < h->pool_n; i++) free(h->pool_buf[i]);
    pthread_cond_destroy(&h->hdone);
    pthread_cond_destroy(&h->hcv);
    pthread_mutex_destroy(&h->hmu);
    pthread_mutex_destroy(&h->pool_mu);
    pthread_mutex_destroy(&h->mmu);
    free(h);
}

cs_status cs_http_start(cs_svc *svc, const cs_http_params *p, cs_http **out, cs_error *err) {
    *out = NULL;
    cs_http_params q = p ? *p : cs_http_default_params();
    if (!q.host || !*q.host) q.host = "127.0.0.1";
    if (q.threads < 1) q.threads = 1;
    if (q.max_connections < 1) q.max_connections = 512;
    if (q.connection_timeout_s < 1) q.connection_timeout_s = 30;
    if (q.max_upload_bytes == 0) q.max_upload_bytes = (size_t)25 << 20;
    if (q.port < 0 || q.port > 65535) return cs_errorf(err, CS_EINVAL, "port must be 0..65535");
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char port[16];
    snprintf(port, sizeof port, "%d", q.port);
    int gai = getaddrinfo(q.host, port, &hints, &ai);
    if (gai != 0 || !ai) return cs_errorf(err, CS_EINVAL, "cannot resolve host '%s': %s", q.host, gai_strerror(gai));
    cs_http *h = calloc(1, sizeof *h);
    if (!h) {
        freeaddrinfo(ai);
        return cs_errorf(err, CS_ENOMEM, "out of memory");
    }
    h->p = q;
    snprintf(h->host, sizeof h->host, "%s", q.host);
    h->p.host = h->host;
    h->svc = svc;
    h->listen_fd = -1;
    h->body_budget = q.inflight_bytes ? q.inflight_bytes : (size_t)64 << 20;
    /* an eighth for small uploads; the rest must still take one upload of
     * the largest size, or the budget grows to fit it */
    h->body_reserve = h->body_budget / 8;
    if (h->body_budget - h->body_reserve < q.max_upload_bytes + 1)
        h->body_budget = q.max_upload_bytes + 1 + h->body_reserve;
    pthread_mutex_init(&h->mmu, NULL);
    pthread_mutex_init(&h->pool_mu, NULL);
    pthread_mutex_init(&h->hmu, NULL);
    pthread_cond_init(&h->hcv, NULL);
    pthread_cond_init(&h->hdone, NULL);
    /* without it uploads are hashed inline, as small ones always are */
    h->hasher_started = pthread_create(&h->hasher, NULL, hasher_main, h) == 0;
    for (int e = 0; e < NEP; e++) cs_hist_init(&h->latency[e], cs_hist_latency_bounds, cs_hist_latency_nbounds);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    h->d = MHD_start_daemon(flags, (uint16_t)q.port, NULL, NULL, handler, h,
                            MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                            MHD_OPTION_THREAD_POOL_SIZE, (unsigned)q.threads,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)q.max_connections,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)q.connection_timeout_s,
                            MHD_OPTION_NOTIFY_COMPLETED, completed, h,
                            MHD_OPTION_LISTEN_BACKLOG_SIZE, 512u,
                            /* 128 KB instead of the 32 KB default: a 3 MB
                             * upload arrives in ~50 reads instead of ~200
                             * (~0.4 ms of a re-upload's ~3 ms).  It once cut
                             * the rate of ~1 MB answers, which were copied;
                             * they go out by I/O vector now, and 100 clients
                             * read ~5500/s either way (bench/load_client.c;
                             * peak RSS with 200 clients the same) */
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)128 << 10,
                            MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!h->d) {
        http_destroy(h);
        return cs_errorf(err, CS_EIO, "cannot listen on %s:%d (address in use, or not a local address?)", q.host, q.port);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : q.port;
    *out = h;
    return CS_OK;
}

int cs_http_port(const cs_http *h) { return h->port; }
int cs_http_active(const cs_http *h) { return atomic_load(&((cs_http *)h)->active); }

void cs_http_quiesce(cs_http *h) {
    if (!h || h->quiesced || !h->d) return;
    MHD_socket fd = MHD_quiesce_daemon(h->d);
    h->quiesced = true;
    /* the listening socket is ours now, but the daemon's threads may still
     * look at it: close it only after MHD_stop_daemon */
    h->listen_fd = fd;
}

void cs_http_stop(cs_http *h, int drain_ms) {
    if (!h || h->stopped) return;
    cs_http_quiesce(h);
    double until = cs_now_ms() + drain_ms;
    while (atomic_load(&h->active) > 0 && cs_now_ms() < until) usleep(10000);
    MHD_stop_daemon(h->d);
    h->d = NULL;
    stop_hasher(h);
    if (h->listen_fd >= 0) close(h->listen_fd);
    h->listen_fd = -1;
    h->stopped = true;
}

void cs_http_free(cs_http *h) {
    if (!h) return;
    cs_http_stop(h, 0);
    http_destroy(h);
}
