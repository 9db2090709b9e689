/* Per-model preprocessing config: the sidecar <model>.json next to the .onnx
 * or the ONNX metadata_props key "camserve.preprocess", both with the keys
 * documented in docs/images.md.  Parsing is strict about types (a wrong type
 * is an error naming the key) and lenient about unknown keys, so configs
 * written for other tools still load. */
#include "camserve/imageio.h"
#include "imageio/imageio_internal.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* int, or [h, w] (a single-element list means both) */
static cs_status get_hw(json_t *v, const char *key, int *h, int *w, cs_error *err) {
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x < 0 || x > (1 << 15))
            return cs_errorf(err, CS_EINVAL, "preprocess config: \"%s\" out of range", key);
        *h = *w = (int)x;
        return CS_OK;
    }
    if (json_is_array(v) && (json_array_size(v) == 1 || json_array_size(v) == 2)) {
        json_t *a = json_array_get(v, 0), *b = json_array_get(v, json_array_size(v) - 1);
        if (json_is_integer(a) && json_is_integer(b)) {
            json_int_t x = json_integer_value(a), y = json_integer_value(b);
            if (x <= 0 || y <= 0 || x > (1 << 15) || y > (1 << 15))
                return cs_errorf(err, CS_EINVAL, "preprocess config: \"%s\" out of range", key);
            *h = (int)x;
            *w = (int)y;
            return CS_OK;
        }
    }
    return cs_errorf(err, CS_EINVAL, "preprocess config: \"%s\" must be an integer or [height, width]",
                     key);
}

static cs_status get_vec3(json_t *v, const char *key, float out[3], cs_error *err) {
    if (json_is_number(v)) {
        out[0] = out[1] = out[2] = (float)json_number_value(v);
        return CS_OK;
    }
    if (json_is_array(v) && json_array_size(v) == 3) {
        float t[3];
        for (int i = 0; i < 3; i++) {
            json_t *e = json_array_get(v, (size_t)i);
            if (!json_is_number(e)) goto bad;
            t[i] = (float)json_number_value(e);
        }
        memcpy(out, t, sizeof t);
        return CS_OK;
    }
bad:
    return cs_errorf(err, CS_EINVAL, "preprocess config: \"%s\" must be a number or a list of 3",
                     key);
}

cs_status cs_img_preproc_from_json(const char *json_text, cs_preproc *out, char **labels_out,
                                   cs_error *err) {
    if (labels_out) *labels_out = NULL;
    if (!json_text || !out) return cs_errorf(err, CS_EINVAL, "preprocess config: NULL argument");
    json_error_t je;
    json_t *root = json_loads(json_text, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return cs_errorf(err, CS_EINVAL, "preprocess config: line %d: %s", je.line, je.text);
    cs_status st = CS_OK;
    cs_preproc p = *out;
    char *labels = NULL;
    if (!json_is_object(root)) {
        st = cs_errorf(err, CS_EINVAL, "preprocess config: top level must be an object");
        goto done;
    }
    /* keys may sit at the top level or under "preprocess" */
    json_t *o = json_object_get(root, "preprocess");
    if (o && !json_is_object(o)) {
        st = cs_errorf(err, CS_EINVAL, "preprocess config: \"preprocess\" must be an object");
        goto done;
    }
    if (!o) o = root;
    json_t *v;
    int crop_set = 0, resize_set = 0;
    if ((v = json_object_get(o, "crop")) || (v = json_object_get(o, "input_size"))) {
        if ((st = get_hw(v, "crop", &p.crop_h, &p.crop_w, err)) != CS_OK) goto done;
        crop_set = 1;
    }
    if ((v = json_object_get(o, "resize"))) {
        int h, w;
        if ((st = get_hw(v, "resize", &h, &w, err)) != CS_OK) goto done;
        if (json_is_integer(v)) {
            p.resize = h;
            p.resize_w = p.resize_h = 0;
        } else {
            p.resize_h = h;
            p.resize_w = w;
        }
        resize_set = 1;
    }
    if (crop_set && !resize_set) {
        /* the timm/torchvision habit: crop = 87.5% of the resized short side */
        int s = p.crop_w < p.crop_h ? p.crop_w : p.crop_h;
        p.resize = (int)floor(s / 0.875);
        p.resize_w = p.resize_h = 0;
    }
    if ((v = json_object_get(o, "interpolation"))) {
        const char *s = json_string_value(v);
        if (s && !strcasecmp(s, "bilinear")) p.interp = CS_IMG_INTERP_BILINEAR;
        else if (s && !strcasecmp(s, "bicubic")) p.interp = CS_IMG_INTERP_BICUBIC;
        else {
            st = cs_errorf(err, CS_EINVAL,
                           "preprocess config: \"interpolation\" must be \"bilinear\" or \"bicubic\"");
            goto done;
        }
    }
    if ((v = json_object_get(o, "mean")) && (st = get_vec3(v, "mean", p.mean, err)) != CS_OK)
        goto done;
    if ((v = json_object_get(o, "std")) && (st = get_vec3(v, "std", p.std, err)) != CS_OK)
        goto done;
    if ((v = json_object_get(o, "scale"))) {
        if (!json_is_number(v)) {
            st = cs_errorf(err, CS_EINVAL, "preprocess config: \"scale\" must be a number");
            goto done;
        }
        p.scale = (float)json_number_value(v);
    }
    if ((v = json_object_get(o, "channel_order"))) {
        const char *s = json_string_value(v);
        if (s && !strcasecmp(s, "RGB")) p.order = CS_IMG_ORDER_RGB;
        else if (s && !strcasecmp(s, "BGR")) p.order = CS_IMG_ORDER_BGR;
        else {
            st = cs_errorf(err, CS_EINVAL,
                           "preprocess config: \"channel_order\" must be \"RGB\" or \"BGR\"");
            goto done;
        }
    }
    v = json_object_get(o, "labels");
    if (!v && o != root) v = json_object_get(root, "labels");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v)) {
            st = cs_errorf(err, CS_EINVAL, "preprocess config: \"labels\" must be a string");
            goto done;
        }
        if (labels_out && !(labels = strdup(json_string_value(v)))) {
            st = cs_errorf(err, CS_ENOMEM, "out of memory");
            goto done;
        }
    }
    if ((st = cs_img_preproc_validate(&p, err)) != CS_OK) goto done;
    *out = p;
    if (labels_out) *labels_out = labels;
    labels = NULL;
done:
    free(labels);
    json_decref(root);
    return st;
}

static int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

cs_status cs_img_preproc_for_model(const char *model_path, const char *metadata_json,
                                   int input_h, int input_w, cs_preproc *out, char **labels_out,
                                   const char **source_out, cs_error *err) {
    if (labels_out) *labels_out = NULL;
    cs_preproc p = cs_img_preproc_default();
    if (input_h > 0 && input_w > 0 && input_h <= (1 << 15) && input_w <= (1 << 15)) {
        p.crop_h = input_h;
        p.crop_w = input_w;
        p.resize = (int)floor((input_h < input_w ? input_h : input_w) / 0.875);
    }
    const char *source = "defaults";
    char *text = NULL, *sidecar = NULL, *labels = NULL;
    cs_status st = CS_OK;
    size_t n = model_path ? strlen(model_path) : 0;
    if (n) {
        size_t base = n >= 5 && !strcasecmp(model_path + n - 5, ".onnx") ? n - 5 : n;
        if (!(sidecar = malloc(base + 6))) return cs_errorf(err, CS_ENOMEM, "out of memory");
        memcpy(sidecar, model_path, base);
        memcpy(sidecar + base, ".json", 6);
        if (file_exists(sidecar)) {
            size_t len;
            uint8_t *buf;
            if ((st = cs_img_read_file(sidecar, (size_t)1 << 20, &buf, &len, err)) != CS_OK) goto done;
            text = realloc(buf, len + 1);
            if (!text) {
                free(buf);
                st = cs_errorf(err, CS_ENOMEM, "out of memory");
                goto done;
            }
            text[len] = '\0';
            source = "sidecar";
        }
    }
    const char *cfg = text ? text : metadata_json;
    if (!text && metadata_json) source = "metadata";
    if (cfg) {
        if ((st = cs_img_preproc_from_json(cfg, &p, labels_out ? &labels : NULL, err)) != CS_OK) {
            cs_error_prefix(err, "%s", text ? sidecar : "model metadata camserve.preprocess");
            goto done;
        }
    }
    if (labels && labels[0] != '/' && n) {
        const char *slash = strrchr(model_path, '/');
        if (slash) {
            size_t dl = (size_t)(slash - model_path) + 1, ll = strlen(labels);
            char *full = malloc(dl + ll + 1);
            if (!full) {
                st = cs_errorf(err, CS_ENOMEM, "out of memory");
                goto done;
            }
            memcpy(full, model_path, dl);
            memcpy(full + dl, labels, ll + 1);
            free(labels);
            labels = full;
        }
    }
    *out = p;
    if (labels_out) *labels_out = labels;
    labels = NULL;
    if (source_out) *source_out = source;
done:
    free(labels);
    free(text);
    free(sidecar);
    return st;
}

cs_status cs_img_labels_split(char *text, char ***names, int *n, cs_error *err) {
    *names = NULL;
    *n = 0;
    int lines = 1;
    for (const char *c = text; *c; c++) lines += *c == '\n';
    char **v = calloc((size_t)lines, sizeof *v);
    if (!v) return cs_errorf(err, CS_ENOMEM, "out of memory for %d labels", lines);
    int k = 0;
    for (char *p = text; *p && k < lines;) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = '\0';
        size_t l = strlen(p);
        if (l && p[l - 1] == '\r') p[l - 1] = '\0';
        if (!cs_utf8_valid(p, strlen(p))) {
            free(v);
            return cs_errorf(err, CS_EFORMAT, "labels: line %d is not UTF-8", k + 1);
        }
        v[k++] = p;
        if (!nl) break;
        p = nl + 1;
    }
    *names = v;
    *n = k;
    return CS_OK;
}
