/* Well-known ONNX classifiers on demand: a pinned catalog and a verified
 * download.
 *
 * Each catalog entry pins one file of the ONNX Model Zoo (github.com/onnx/
 * models) by commit: the URL names the commit, and the byte size and SHA-256
 * are the Git LFS pointer's `size` and `oid sha256:` at that commit, i.e.
 * the zoo's own published digest of the file.  The download streams through
 * libcurl into <name>.onnx.part while OpenSSL's EVP SHA-256 consumes the
 * same bytes; only a file whose size and digest both match is renamed to
 * <name>.onnx, anything else is deleted.  The preprocessing sidecar and the
 * ImageNet labels are written by us (no second download to trust). */
#include "camserve/models.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define IMAGENET_SIDECAR                                                               \
    "{\"labels\": \"imagenet_labels.txt\", \"resize\": 256, \"crop\": 224, "                     \
    "\"interpolation\": \"bilinear\", \"mean\": [0.485, 0.456, 0.406], "                          \
    "\"std\": [0.229, 0.224, 0.225], \"channel_order\": \"RGB\"}\n"

#define ZOO "https://github.com/onnx/models/raw/"

static const cs_models_entry CATALOG[] = {
    {"resnet50", "resnet50-v2-7.onnx",
     ZOO "b9a54e89508f101a1611cd64f4ef56b9cb62c7cf/vision/classification/resnet/model/resnet50-v2-7.onnx",
     "1e80e8a7c8eec8e8b20c440d7dd7f2f8590779c7c2859dc4514870dc463845d3", 102442450,
     IMAGENET_SIDECAR, 1, "ResNet-50 v2 (MXNet GluonCV), ImageNet-1k, opset 7, 98 MB"},
    {"mobilenetv2", "mobilenetv2-7.onnx",
     ZOO "13fcb614fdedcc09864c0691c080ccf82ca3b85b/vision/classification/mobilenet/model/mobilenetv2-7.onnx",
     "c1c513582d56afceff8516c73804e484c81c6a830712ab6d682253f4a3cd042f", 14246826,
     IMAGENET_SIDECAR, 1, "MobileNetV2 1.0 (MXNet GluonCV), ImageNet-1k, opset 7, 14 MB"},
    {"squeezenet", "squeezenet1.1-7.onnx",
     ZOO "96d633069ed74096408061accc3b728672802890/vision/classification/squeezenet/model/squeezenet1.1-7.onnx",
     "9456373b67f04e4a9cb0bb9be984f0db2d0ad141582d84d4b4ad9e84f7ec7785", 9165684,
     IMAGENET_SIDECAR, 1, "SqueezeNet 1.1 (MXNet GluonCV), ImageNet-1k, opset 7, 9 MB"},
    {"densenet121", "densenet-12.onnx",
     ZOO "4c46cd00fbdb7cd30b6c1c17ab54f2e1f4f7b177/validated/vision/classification/densenet-121/model/densenet-12.onnx",
     "0294e7e88e5b3360de9b0fdc321baf9e6ef18b7f058c4536caae3b9f18ed9ed5", 32726877,
     /* The zoo's README gives no preprocessing for this Caffe2 model; these are
      * the Caffe DenseNet conventions (BGR, 0..255, mean 103.94/116.78/123.68,
      * scale 0.017).  Unverified: check the top-1 on a known photo. */
     "{\"labels\": \"imagenet_labels.txt\", \"resize\": 256, \"crop\": 224, "
     "\"interpolation\": \"bilinear\", \"channel_order\": \"BGR\", \"scale\": 1.0, "
     "\"mean\": [103.94, 116.78, 123.68], \"std\": [58.8235, 58.8235, 58.8235]}\n",
     1, "DenseNet-121 (Caffe2), ImageNet-1k, opset 12, 33 MB"},
    {"efficientnet-lite4", "efficientnet-lite4.onnx",
     ZOO "1455c7548852a276312aad28413d60558ac2dcfa/vision/classification/efficientnet-lite4/model/efficientnet-lite4.onnx",
     "d111689907c06eea7c82e4833ddef758da6453b9d4cf60b7e99ca05c7cbd9c12", 51946641,
     /* TensorFlow model: NHWC input images:0 [1,224,224,3], (x - 127) / 128,
      * softmax output.  "layout" is informational until imageio supports it. */
     "{\"labels\": \"imagenet_labels.txt\", \"resize\": 256, \"crop\": 224, "
     "\"interpolation\": \"bilinear\", \"scale\": 1.0, \"mean\": [127.0, 127.0, 127.0], "
     "\"std\": [128.0, 128.0, 128.0], \"channel_order\": \"RGB\", \"layout\": \"NHWC\"}\n",
     1, "EfficientNet-Lite4 (TensorFlow, NHWC input, softmax output), ImageNet-1k, opset 11, 52 MB"},
};
#define NCATALOG (int)(sizeof CATALOG / sizeof CATALOG[0])

int cs_models_catalog(const cs_models_entry **out) {
    if (out) *out = CATALOG;
    return NCATALOG;
}

const cs_models_entry *cs_models_find(const char *name) {
    for (int i = 0; name && i < NCATALOG; i++)
        if (!strcmp(CATALOG[i].name, name)) return &CATALOG[i];
    return NULL;
}

cs_models_pull_options cs_models_pull_default_options(void) {
    cs_models_pull_options o = {0};
    return o;
}

static char *xstrcat3(const char *a, const char *b, const char *c) {
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *s = malloc(la + lb + lc + 1);
    if (!s) return NULL;
    memcpy(s, a, la);
    memcpy(s + la, b, lb);
    memcpy(s + la + lb, c, lc + 1);
    return s;
}

cs_status cs_models_dir(const cs_models_pull_options *opt, char **out, cs_error *err) {
    const char *d = opt && opt->dir ? opt->dir : getenv("CAMSERVE_MODEL_DIR");
    char *s;
    if (d && *d) {
        s = strdup(d);
    } else {
        const char *home = getenv("HOME");
        if (!home || !*home)
            return cs_errorf(err, CS_EINVAL, "no model directory: set --dir, CAMSERVE_MODEL_DIR or HOME");
        s = xstrcat3(home, "/.cache/camserve/models", "");
    }
    if (!s) return cs_errorf(err, CS_ENOMEM, "out of memory");
    *out = s;
    return CS_OK;
}

/* mkdir -p */
static cs_status make_dirs(const char *path, cs_error *err) {
    char *p = strdup(path);
    if (!p) return cs_errorf(err, CS_ENOMEM, "out of memory");
    for (char *q = p + 1;; q++) {
        if (*q == '/' || *q == '\0') {
            char c = *q;
            *q = '\0';
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                cs_status st = cs_errorf(err, CS_EIO, "cannot create %s: %s", p, strerror(errno));
                free(p);
                return st;
            }
            *q = c;
            if (!c) break;
        }
    }
    free(p);
    return CS_OK;
}

static void to_hex(const unsigned char *d, unsigned n, char *hex) {
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < n; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    hex[2 * n] = '\0';
}

cs_status cs_models_sha256_file(const char *path, char hex[65], cs_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return cs_errorf(err, CS_EIO, "cannot open %s: %s", path, strerror(errno));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    cs_status st = CS_OK;
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        st = cs_errorf(err, CS_EINTERNAL, "OpenSSL SHA-256 is unavailable");
        goto out;
    }
    unsigned char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) EVP_DigestUpdate(ctx, buf, n);
    if (ferror(f)) {
        st = cs_errorf(err, CS_EIO, "read error on %s", path);
        goto out;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    to_hex(md, mdlen, hex);
out:
    EVP_MD_CTX_free(ctx);
    fclose(f);
    return st;
}

static int valid_name(const char *s) {
    if (!s || !*s || *s == '.' || strlen(s) > 128) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '_' || *s == '-'))
            return 0;
    return 1;
}

static int valid_sha(const char *s) {
    if (!s || strlen(s) != 64) return 0;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f'))) return 0;
    return 1;
}

typedef struct download {
    FILE *f;
    EVP_MD_CTX *md;
    int64_t got, expect;
    int progress;
    double last_draw;
    int write_failed;
} download;

static size_t on_data(char *p, size_t size, size_t nmemb, void *ud) {
    download *d = ud;
    size_t n = size * nmemb;
    if (fwrite(p, 1, n, d->f) != n) {
        d->write_failed = 1;
        return 0;
    }
    EVP_DigestUpdate(d->md, p, n);
    d->got += (int64_t)n;
    return n;
}

static int on_progress(void *ud, curl_off_t total, curl_off_t now, curl_off_t ut, curl_off_t un) {
    download *d = ud;
    if (!d->progress) return 0;
    double t = cs_now_ms();
    if (t - d->last_draw < 100 && !(total > 0 && now == total)) return 0;
    d->last_draw = t;
    int64_t tot = total > 0 ? (int64_t)total : d->expect;
    if (tot > 0) {
        int w = 30, fill = (int)(w * (double)now / (double)tot);
        if (fill > w) fill = w;
        fprintf(stderr, "\r  [%.*s%*s] %5.1f / %.1f MB", fill, "##############################",
                w - fill, "", (double)now / 1e6, (double)tot / 1e6);
    } else {
        fprintf(stderr, "\r  %.1f MB", (double)now / 1e6);
    }
    fflush(stderr);
    return 0;
}

static cs_status write_text(const char *path, const char *text, cs_error *err) {
    char *tmp = xstrcat3(path, ".part", "");
    if (!tmp) return cs_errorf(err, CS_ENOMEM, "out of memory");
    FILE *f = fopen(tmp, "wb");
    cs_status st = CS_OK;
    if (!f) {
        st = cs_errorf(err, CS_EIO, "cannot create %s: %s", tmp, strerror(errno));
    } else {
        size_t n = strlen(text);
        int ok = fwrite(text, 1, n, f) == n;
        if (fclose(f) != 0) ok = 0;
        if (!ok || rename(tmp, path) != 0) {
            st = cs_errorf(err, CS_EIO, "cannot write %s", path);
            unlink(tmp);
        }
    }
    free(tmp);
    return st;
}

/* Downloads url into tmp, hashing on the way; hex receives the digest. */
static cs_status fetch(const char *url, const char *tmp, int64_t expect, const cs_models_pull_options *opt,
                       char hex[65], int64_t *got, cs_error *err) {
    download d = {0};
    d.expect = expect;
    d.progress = opt && opt->progress;
    d.f = fopen(tmp, "wb");
    if (!d.f) return cs_errorf(err, CS_EIO, "cannot create %s: %s", tmp, strerror(errno));
    d.md = EVP_MD_CTX_new();
    CURL *c = curl_easy_init();
    cs_status st = CS_OK;
    if (!d.md || EVP_DigestInit_ex(d.md, EVP_sha256(), NULL) != 1 || !c) {
        st = cs_errorf(err, CS_EINTERNAL, "cannot initialise libcurl / OpenSSL SHA-256");
        goto out;
    }
    char cerr[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, opt && opt->connect_timeout_s > 0 ? opt->connect_timeout_s : 20L);
    /* stalled transfers: under 1 KB/s for 60 s */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "camserve/" CS_VERSION);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &d);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &d);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    if (expect > 0) curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)expect);
    CURLcode rc = curl_easy_perform(c);
    if (d.progress) fputc('\n', stderr);
    if (d.write_failed) {
        st = cs_errorf(err, CS_EIO, "cannot write %s: %s", tmp, strerror(errno));
    } else if (rc != CURLE_OK) {
        const char *why = cerr[0] ? cerr : curl_easy_strerror(rc);
        const char *hint = "";
        if (rc == CURLE_COULDNT_RESOLVE_HOST || rc == CURLE_COULDNT_RESOLVE_PROXY ||
            rc == CURLE_COULDNT_CONNECT || rc == CURLE_OPERATION_TIMEDOUT)
            hint = " (offline? set CAMSERVE_PULL_BASE_URL to a mirror, or copy the file into the model directory)";
        else if (rc == CURLE_FILESIZE_EXCEEDED)
            why = "the server sent more bytes than the pinned size";
        st = cs_errorf(err, CS_EIO, "cannot download %s: %s%s", url, why, hint);
    } else {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned mdlen = 0;
        EVP_DigestFinal_ex(d.md, md, &mdlen);
        to_hex(md, mdlen, hex);
        *got = d.got;
    }
out:
    if (c) curl_easy_cleanup(c);
    EVP_MD_CTX_free(d.md);
    if (fclose(d.f) != 0 && st == CS_OK) st = cs_errorf(err, CS_EIO, "cannot write %s", tmp);
    return st;
}

cs_status cs_models_pull(const cs_models_entry *e, const cs_models_pull_options *opt, char **path_out,
                         cs_error *err) {
    if (!e || !valid_name(e->name))
        return cs_errorf(err, CS_EINVAL, "invalid model name '%s' (letters, digits, '.', '_', '-')",
                         e && e->name ? e->name : "");
    if (e->sha256 && !valid_sha(e->sha256))
        return cs_errorf(err, CS_EINVAL, "invalid sha256 '%s' (64 lowercase hex digits)", e->sha256);
    const char *base = opt && opt->base_url ? opt->base_url : getenv("CAMSERVE_PULL_BASE_URL");
    char *dir = NULL, *dest = NULL, *tmp = NULL, *url = NULL, *side = NULL, *stem = NULL;
    cs_status st = cs_models_dir(opt, &dir, err);
    if (st != CS_OK) return st;
    stem = xstrcat3(dir, "/", e->name);
    dest = stem ? xstrcat3(stem, ".onnx", "") : NULL;
    tmp = dest ? xstrcat3(dest, ".part", "") : NULL;
    side = stem ? xstrcat3(stem, ".json", "") : NULL;
    if (base && *base) {
        size_t bl = strlen(base);
        url = xstrcat3(base, bl && base[bl - 1] == '/' ? "" : "/", e->file ? e->file : e->name);
    } else {
        url = e->url ? strdup(e->url) : NULL;
    }
    if (!stem || !dest || !tmp || !side) {
        st = cs_errorf(err, CS_ENOMEM, "out of memory");
        goto out;
    }
    if (!url) {
        st = cs_errorf(err, CS_EINVAL, "no URL for model '%s'", e->name);
        goto out;
    }
    if ((st = make_dirs(dir, err)) != CS_OK) goto out;

    char hex[65] = "";
    int64_t got = 0;
    struct stat sb;
    int present = 0;
    if (!(opt && opt->force) && e->sha256 && stat(dest, &sb) == 0) {
        cs_error e2 = {0};
        present = cs_models_sha256_file(dest, hex, &e2) == CS_OK && !strcmp(hex, e->sha256);
    }
    if (!present) {
        st = fetch(url, tmp, e->size, opt, hex, &got, err);
        if (st == CS_OK && e->size > 0 && got != e->size)
            st = cs_errorf(err, CS_EFORMAT,
                           "%s: got %lld bytes, expected %lld; the download was deleted", url,
                           (long long)got, (long long)e->size);
        if (st == CS_OK && e->sha256 && strcmp(hex, e->sha256) != 0)
            st = cs_errorf(err, CS_EFORMAT,
                           "%s: checksum mismatch (sha256 %s, expected %s); the download was deleted",
                           url, hex, e->sha256);
        if (st != CS_OK) {
            unlink(tmp);
            goto out;
        }
        if (rename(tmp, dest) != 0) {
            st = cs_errorf(err, CS_EIO, "cannot rename %s to %s: %s", tmp, dest, strerror(errno));
            unlink(tmp);
            goto out;
        }
    }
    if (e->sidecar && (st = write_text(side, e->sidecar, err)) != CS_OK) goto out;
    if (e->imagenet_labels) {
        char *lab = xstrcat3(dir, "/", "imagenet_labels.txt");
        if (!lab) {
            st = cs_errorf(err, CS_ENOMEM, "out of memory");
            goto out;
        }
        st = write_text(lab, cs_models_imagenet_labels, err);
        free(lab);
        if (st != CS_OK) goto out;
    }
    if (path_out) {
        *path_out = dest;
        dest = NULL;
    }
out:
    free(dir);
    free(stem);
    free(dest);
    free(tmp);
    free(url);
    free(side);
    return st;
}
