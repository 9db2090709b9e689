/* Evaluation of a classifier and its explanations on a labelled folder.
 *
 * Data layout (docs/models.md): DIR/[labels.txt], DIR/<class>/<stem>.<ext>
 * images and optional DIR/<class>/<stem>.mask.png object masks.  The set is
 * scanned once into a sorted item list, so results do not depend on the
 * file system's directory order.
 *
 * Per image: decode + the model's preprocessing; for each CAM method one
 * cs_explain_run for the true class (its logits also give the prediction);
 * with a mask, the map (at model input resolution) is laid over the mask
 * through the preprocessing crop box for the pointing game and the energy
 * share; then the deletion and insertion inputs (steps+1 each) go through
 * the model in one batch and the true class's softmax probability along each
 * curve is integrated (trapezoid on [0, 1]). */
#include "camserve/models.h"
#include "util/files.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- the data set ---- */


static char *path_join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 2);
    if (!s) return NULL;
    memcpy(s, a, la);
    s[la] = '/';
    memcpy(s + la + 1, b, lb + 1);
    return s;
}

static int is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int is_file(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int ends_with_ci(const char *s, const char *suf) {
    size_t ls = strlen(s), lf = strlen(suf);
    return ls >= lf && strcasecmp(s + ls - lf, suf) == 0;
}

static int is_image_name(const char *n) {
    if (n[0] == '.' || ends_with_ci(n, ".mask.png")) return 0;
    return ends_with_ci(n, ".jpg") || ends_with_ci(n, ".jpeg") || ends_with_ci(n, ".png") ||
           ends_with_ci(n, ".webp");
}

/* Lines of a text file (trailing empty line dropped, \r stripped). */
static cs_status read_lines(const char *path, char ***out, int *n, cs_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return cs_errorf(err, CS_EIO, "cannot open %s: %s", path, strerror(errno));
    char **v = NULL;
    int cnt = 0, cap = 0;
    char line[4096];
    cs_status st = CS_OK;
    while (fgets(line, sizeof line, f)) {
        size_t l = strlen(line);
        while (l && (line[l - 1] == '\n' || line[l - 1] == '\r')) line[--l] = '\0';
        if (cnt == cap) {
            cap = cap ? 2 * cap : 64;
            char **nv = realloc(v, (size_t)cap * sizeof *v);
            if (!nv) {
                st = cs_errorf(err, CS_ENOMEM, "out of memory");
                break;
            }
            v = nv;
        }
        if (!(v[cnt++] = strdup(line))) {
            st = cs_errorf(err, CS_ENOMEM, "out of memory");
            break;
        }
    }
    fclose(f);
    while (st == CS_OK && cnt > 0 && v[cnt - 1] && v[cnt - 1][0] == '\0') free(v[--cnt]);
    if (st != CS_OK) {
        cs_free_names(v, cnt);
        return st;
    }
    *out = v;
    *n = cnt;
    return CS_OK;
}

void cs_models_eval_set_free(cs_models_eval_set *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++) {
        free(s->items[i].image);
        free(s->items[i].mask);
    }
    free(s->items);
    cs_free_names(s->class_names, s->nclasses);
    memset(s, 0, sizeof *s);
}

static int parse_index(const char *s) {
    if (!*s) return -1;
    long v = 0;
    for (const char *p = s; *p; p++) {
        if (!isdigit((unsigned char)*p) || v > 1000000) return -1;
        v = v * 10 + (*p - '0');
    }
    return (int)v;
}

cs_status cs_models_eval_set_load(const char *dir, const char *const *labels, int nlabels,
                                  cs_models_eval_set *out, cs_error *err) {
    cs_models_eval_set s = {0};
    char **folders = NULL, **files = NULL;
    int nfolders = 0, nfiles = 0, cap = 0;
    cs_status st = CS_OK;
    char *lp = path_join(dir, "labels.txt");
    if (!lp) return cs_errorf(err, CS_ENOMEM, "out of memory");
    if (!is_dir(dir)) {
        free(lp);
        return cs_errorf(err, CS_EIO, "%s is not a directory", dir);
    }
    if (is_file(lp)) {
        st = read_lines(lp, &s.class_names, &s.nclasses, err);
    } else if (labels && nlabels > 0) {
        s.class_names = calloc((size_t)nlabels, sizeof(char *));
        if (!s.class_names) st = cs_errorf(err, CS_ENOMEM, "out of memory");
        for (int i = 0; st == CS_OK && i < nlabels; i++) {
            s.nclasses = i + 1;
            if (!(s.class_names[i] = strdup(labels[i] ? labels[i] : "")))
                st = cs_errorf(err, CS_ENOMEM, "out of memory");
        }
    }
    free(lp);
    if (st != CS_OK) goto fail;
    int named = s.nclasses > 0;
    if ((st = cs_list_dir(dir, NULL, &folders, &nfolders, err)) != CS_OK) goto fail;
    for (int fi = 0; fi < nfolders; fi++) {
        char *sub = path_join(dir, folders[fi]);
        if (!sub) {
            st = cs_errorf(err, CS_ENOMEM, "out of memory");
            goto fail;
        }
        if (!is_dir(sub)) {
            free(sub);
            continue;
        }
        int label = -1;
        if (named) {
            for (int c = 0; c < s.nclasses && label < 0; c++)
                if (!strcmp(s.class_names[c], folders[fi])) label = c;
        } else {
            label = parse_index(folders[fi]);
        }
        if (label < 0) {
            st = cs_errorf(err, CS_ENOTFOUND,
                           "%s: '%s' is not a class %s", dir, folders[fi],
                           named ? "name (see labels.txt or the model's labels)"
                                 : "index (no labels.txt and the model has no labels)");
            free(sub);
            goto fail;
        }
        if ((st = cs_list_dir(sub, is_image_name, &files, &nfiles, err)) != CS_OK) {
            free(sub);
            goto fail;
        }
        for (int k = 0; k < nfiles; k++) {
            if (s.n == cap) {
                cap = cap ? 2 * cap : 256;
                cs_models_eval_item *ni = realloc(s.items, (size_t)cap * sizeof *ni);
                if (!ni) {
                    st = cs_errorf(err, CS_ENOMEM, "out of memory");
                    break;
                }
                s.items = ni;
            }
            cs_models_eval_item *it = &s.items[s.n];
            memset(it, 0, sizeof *it);
            it->label = label;
            it->image = path_join(sub, files[k]);
            char *dot = strrchr(files[k], '.');
            size_t stem = (size_t)(dot - files[k]);
            char *mname = malloc(stem + 10);
            if (mname) {
                memcpy(mname, files[k], stem);
                memcpy(mname + stem, ".mask.png", 10);
                char *mp = path_join(sub, mname);
                if (mp && is_file(mp)) it->mask = mp;
                else free(mp);
                free(mname);
            }
            s.n++;
            if (!it->image || !mname) {
                st = cs_errorf(err, CS_ENOMEM, "out of memory");
                break;
            }
        }
        cs_free_names(files, nfiles);
        files = NULL;
        free(sub);
        if (st != CS_OK) goto fail;
        if (!named && label + 1 > s.nclasses) {
            char **nv = realloc(s.class_names, (size_t)(label + 1) * sizeof *nv);
            if (!nv) {
                st = cs_errorf(err, CS_ENOMEM, "out of memory");
                goto fail;
            }
            s.class_names = nv;
            for (int c = s.nclasses; c <= label; c++) {
                char b[16];
                snprintf(b, sizeof b, "%d", c);
                s.class_names[c] = strdup(b);
            }
            s.nclasses = label + 1;
        }
    }
    cs_free_names(folders, nfolders);
    if (s.n == 0) {
        cs_models_eval_set_free(&s);
        return cs_errorf(err, CS_ENOTFOUND, "%s: no images (expected DIR/<class>/<image>.jpg|png)", dir);
    }
    *out = s;
    return CS_OK;
fail:
    cs_free_names(folders, nfolders);
    cs_free_names(files, nfiles);
    cs_models_eval_set_free(&s);
    return st;
}

/* ---- metrics ---- */

/* The mask byte under the centre of map pixel (x, y), or 0 outside. */
static int on_mask(int x, int y, int mh, int mw, const uint8_t *mask, int W, int H, const float *box) {
    double px = box[0] + (x + 0.5) * (box[2] - box[0]) / mw;
    double py = box[1] + (y + 0.5) * (box[3] - box[1]) / mh;
    if (px < 0 || py < 0) return 0;
    int ix = (int)px, iy = (int)py;
    if (ix >= W || iy >= H) return 0;
    return mask[(size_t)iy * W + ix] != 0;
}

int cs_models_pointing_hit(const float *map, int mh, int mw, const uint8_t *mask, int mask_w,
                           int mask_h, const float box[4], float tol) {
    int best = 0;
    for (int i = 1; i < mh * mw; i++)
        if (map[i] > map[best]) best = i;
    int bx = best % mw, by = best / mw;
    if (on_mask(bx, by, mh, mw, mask, mask_w, mask_h, box)) return 1;
    if (!(tol > 0)) return 0;
    /* any mask pixel within tol map pixels (an ellipse in mask pixels) */
    double sx = (box[2] - box[0]) / mw, sy = (box[3] - box[1]) / mh;
    double px = box[0] + (bx + 0.5) * sx, py = box[1] + (by + 0.5) * sy;
    double rx = tol * sx, ry = tol * sy;
    int x0 = (int)floor(px - rx), x1 = (int)ceil(px + rx), y0 = (int)floor(py - ry), y1 = (int)ceil(py + ry);
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 > mask_w - 1) x1 = mask_w - 1;
    if (y1 > mask_h - 1) y1 = mask_h - 1;
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) {
            double dx = (x + 0.5 - px) / rx, dy = (y + 0.5 - py) / ry;
            if (dx * dx + dy * dy <= 1.0 && mask[(size_t)y * mask_w + x]) return 1;
        }
    return 0;
}

double cs_models_energy_in_mask(const float *map, int mh, int mw, const uint8_t *mask, int mask_w,
                                int mask_h, const float box[4]) {
    double in = 0, all = 0;
    for (int y = 0; y < mh; y++)
        for (int x = 0; x < mw; x++) {
            double v = map[y * mw + x];
            if (v <= 0) continue;
            all += v;
            if (on_mask(x, y, mh, mw, mask, mask_w, mask_h, box)) in += v;
        }
    return all > 0 ? in / all : 0.0;
}

double cs_models_auc(const float *y, int n) {
    if (n < 2) return n == 1 ? y[0] : 0.0;
    double s = 0;
    for (int i = 0; i + 1 < n; i++) s += 0.5 * ((double)y[i] + y[i + 1]);
    return s / (n - 1);
}

typedef struct ranked {
    float v;
    int i;
} ranked;

static int cmp_ranked(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return x->i - y->i;
}

/* One horizontal + vertical box blur of radius r, edges clamped. */
static void box_blur(float *p, float *tmp, int h, int w, int r) {
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double s = 0;
            for (int k = -r; k <= r; k++) {
                int xx = x + k < 0 ? 0 : (x + k >= w ? w - 1 : x + k);
                s += p[y * w + xx];
            }
            tmp[y * w + x] = (float)(s / (2 * r + 1));
        }
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double s = 0;
            for (int k = -r; k <= r; k++) {
                int yy = y + k < 0 ? 0 : (y + k >= h ? h - 1 : y + k);
                s += tmp[yy * w + x];
            }
            p[y * w + x] = (float)(s / (2 * r + 1));
        }
}

cs_status cs_models_perturb(const float *x, int c, int h, int w, const float *map, int steps,
                            int insertion, float *out, cs_error *err) {
    if (c < 1 || h < 1 || w < 1 || steps < 1)
        return cs_errorf(err, CS_EINVAL, "perturb: bad sizes %dx%dx%d, %d steps", c, h, w, steps);
    size_t hw = (size_t)h * w, chw = (size_t)c * hw;
    ranked *r = malloc(hw * sizeof *r);
    float *base = malloc(chw * sizeof *base), *tmp = malloc(hw * sizeof *tmp);
    if (!r || !base || !tmp) {
        free(r);
        free(base);
        free(tmp);
        return cs_errorf(err, CS_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < hw; i++) {
        r[i].v = map[i];
        r[i].i = (int)i;
    }
    qsort(r, hw, sizeof *r, cmp_ranked);
    /* the "removed" image: per-channel mean (deletion) or blurred (insertion) */
    memcpy(base, x, chw * sizeof *base);
    for (int ch = 0; ch < c; ch++) {
        float *p = base + ch * hw;
        if (insertion) {
            int rad = w / 32 > 1 ? w / 32 : 1;
            for (int pass = 0; pass < 3; pass++) box_blur(p, tmp, h, w, rad);
        } else {
            double s = 0;
            for (size_t i = 0; i < hw; i++) s += p[i];
            float mean = (float)(s / (double)hw);
            for (size_t i = 0; i < hw; i++) p[i] = mean;
        }
    }
    /* step k: the top round(k/steps * hw) pixels come from `from`, the rest from `rest` */
    const float *from = insertion ? x : base, *rest = insertion ? base : x;
    for (int k = 0; k <= steps; k++) {
        float *o = out + (size_t)k * chw;
        memcpy(o, rest, chw * sizeof *o);
        size_t top = (size_t)llround((double)k / steps * (double)hw);
        for (size_t j = 0; j < top; j++)
            for (int ch = 0; ch < c; ch++) o[ch * hw + r[j].i] = from[ch * hw + r[j].i];
    }
    free(r);
    free(base);
    free(tmp);
    return CS_OK;
}

/* ---- the run ---- */

cs_models_eval_options cs_models_eval_default_options(void) {
    cs_models_eval_options o;
    memset(&o, 0, sizeof o);
    o.explain = cs_explain_default_options();
    o.nmethods = 1;
    o.methods[0] = CS_CAM_METHOD_GRADCAM;
    o.steps = 10;
    return o;
}

void cs_models_eval_result_free(cs_models_eval_result *r) {
    if (!r) return;
    free(r->class_n);
    free(r->class_correct);
    r->class_n = r->class_correct = NULL;
}

static double softmax_at(const float *z, int64_t n, int64_t k) {
    float mx = z[0];
    for (int64_t i = 1; i < n; i++) mx = z[i] > mx ? z[i] : mx;
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += exp((double)(z[i] - mx));
    return exp((double)(z[k] - mx)) / s;
}

/* The mask as one byte per pixel (first channel of the decoded PNG). */
static cs_status load_mask(const char *path, uint8_t **out, int *w, int *h, cs_error *err) {
    cs_image im = {0};
    cs_status st = cs_img_load(path, NULL, 0, 0, &im, err);
    if (st != CS_OK) return cs_error_prefix(err, "%s", path);
    uint8_t *m = malloc((size_t)im.width * im.height);
    if (!m) {
        cs_img_free(&im);
        return cs_errorf(err, CS_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < (size_t)im.width * im.height; i++) m[i] = im.rgb[i * im.channels];
    *out = m;
    *w = im.width;
    *h = im.height;
    cs_img_free(&im);
    return CS_OK;
}

cs_status cs_models_eval_run(const cs_model *m, cs_session *s, const cs_preproc *pp,
                             const cs_models_eval_set *set, const cs_models_eval_options *opt,
                             cs_models_eval_result *out, cs_error *err) {
    cs_models_eval_options o = opt ? *opt : cs_models_eval_default_options();
    if (o.nmethods < 0 || o.nmethods > CS_MODELS_EVAL_MAX_METHODS)
        return cs_errorf(err, CS_EINVAL, "eval: %d methods (at most %d)", o.nmethods, CS_MODELS_EVAL_MAX_METHODS);
    if (o.steps < 1) o.steps = 10;
    cs_model_info info;
    cs_model_get_info(m, &info);
    int C = (int)info.input_dims[1], H = (int)info.input_dims[2], W = (int)info.input_dims[3];
    if (C != 3 || pp->crop_h != H || pp->crop_w != W)
        return cs_errorf(err, CS_EINVAL, "eval: the preprocessing makes 3x%dx%d inputs; the model takes %dx%dx%d",
                         pp->crop_h, pp->crop_w, C, H, W);
    int64_t K = info.num_classes;
    for (int i = 0; i < set->n; i++)
        if (set->items[i].label >= K)
            return cs_errorf(err, CS_EINVAL, "%s: class %d, but the model has %lld classes",
                             set->items[i].image, set->items[i].label, (long long)K);
    int n = o.limit > 0 && o.limit < set->n ? o.limit : set->n;
    size_t chw = (size_t)C * H * W;
    int nsteps = o.steps + 1;
    cs_models_eval_result r;
    memset(&r, 0, sizeof r);
    r.nclasses = set->nclasses;
    r.nmethods = o.nmethods;
    r.class_n = calloc((size_t)(set->nclasses > 0 ? set->nclasses : 1), sizeof(int));
    r.class_correct = calloc((size_t)(set->nclasses > 0 ? set->nclasses : 1), sizeof(int));
    float *x = malloc(chw * sizeof(float));
    float *pert = o.nmethods ? malloc(2 * (size_t)nsteps * chw * sizeof(float)) : NULL;
    float *plog = o.nmethods ? malloc(2 * (size_t)nsteps * K * sizeof(float)) : NULL;
    float *logits = malloc((size_t)K * sizeof(float));
    float curve[2][256];
    double sum_point[CS_MODELS_EVAL_MAX_METHODS] = {0}, sum_energy[CS_MODELS_EVAL_MAX_METHODS] = {0};
    double sum_del[CS_MODELS_EVAL_MAX_METHODS] = {0}, sum_ins[CS_MODELS_EVAL_MAX_METHODS] = {0};
    cs_status st = CS_OK;
    if (!r.class_n || !r.class_correct || !x || !logits || (o.nmethods && (!pert || !plog))) {
        st = cs_errorf(err, CS_ENOMEM, "out of memory");
        goto out;
    }
    if (nsteps > 256) {
        st = cs_errorf(err, CS_EINVAL, "eval: at most 255 steps");
        goto out;
    }
    for (int j = 0; j < o.nmethods; j++) r.methods[j].method = o.methods[j];
    double t0 = cs_now_ms();
    int need_w, need_h;
    cs_img_preproc_need(pp, &need_w, &need_h);
    for (int i = 0; i < n && st == CS_OK; i++) {
        const cs_models_eval_item *it = &set->items[i];
        cs_image img = {0};
        uint8_t *mask = NULL;
        int mw = 0, mh = 0;
        st = cs_img_load(it->image, NULL, need_w, need_h, &img, err);
        if (st == CS_OK) st = cs_img_preprocess(&img, pp, x, err);
        if (st != CS_OK) {
            cs_error_prefix(err, "%s", it->image);
            cs_img_free(&img);
            break;
        }
        if (it->mask && o.nmethods) st = load_mask(it->mask, &mask, &mw, &mh, err);
        float box[4];
        cs_img_preproc_crop_box(pp, &img, box);
        if (mask) { /* image pixels -> mask pixels */
            float sx = (float)mw / img.width, sy = (float)mh / img.height;
            box[0] *= sx, box[2] *= sx, box[1] *= sy, box[3] *= sy;
        }
        if (st == CS_OK && o.nmethods == 0) st = cs_session_run_padded(s, x, 1, logits, err);
        for (int j = 0; j < o.nmethods && st == CS_OK; j++) {
            cs_explain_options eo = o.explain;
            eo.method = o.methods[j];
            eo.class_mode = CS_CLASS_INDEX;
            eo.class_index = it->label;
            cs_explain_output ex = {0};
            st = cs_explain_run(s, m, x, 1, &eo, &ex, err);
            if (st != CS_OK) break;
            if (j == 0) memcpy(logits, ex.logits, (size_t)K * sizeof(float));
            if (ex.in_h != H || ex.in_w != W) {
                st = cs_errorf(err, CS_EINTERNAL, "eval: map is %dx%d, input %dx%d", ex.in_h, ex.in_w, H, W);
            } else {
                if (mask) {
                    sum_point[j] += cs_models_pointing_hit(ex.maps_input, H, W, mask, mw, mh, box, o.tolerance);
                    sum_energy[j] += cs_models_energy_in_mask(ex.maps_input, H, W, mask, mw, mh, box);
                    r.methods[j].n_masked++;
                }
                st = cs_models_perturb(x, C, H, W, ex.maps_input, o.steps, 0, pert, err);
                if (st == CS_OK)
                    st = cs_models_perturb(x, C, H, W, ex.maps_input, o.steps, 1, pert + (size_t)nsteps * chw, err);
                if (st == CS_OK) st = cs_session_run_padded(s, pert, 2 * nsteps, plog, err);
                if (st == CS_OK) {
                    for (int q = 0; q < 2; q++)
                        for (int k = 0; k < nsteps; k++)
                            curve[q][k] = (float)softmax_at(plog + ((size_t)q * nsteps + k) * K, K, it->label);
                    sum_del[j] += cs_models_auc(curve[0], nsteps);
                    sum_ins[j] += cs_models_auc(curve[1], nsteps);
                }
            }
            cs_explain_output_free(&ex);
        }
        free(mask);
        cs_img_free(&img);
        if (st != CS_OK) {
            if (err && !strstr(err->msg, it->image)) cs_error_prefix(err, "%s", it->image);
            break;
        }
        int rank = 0;
        for (int64_t k = 0; k < K; k++)
            if (logits[k] > logits[it->label] || (logits[k] == logits[it->label] && k < it->label)) rank++;
        r.n++;
        r.correct += rank == 0;
        r.correct5 += rank < 5;
        if (it->label < r.nclasses) {
            r.class_n[it->label]++;
            r.class_correct[it->label] += rank == 0;
        }
        if (o.progress) o.progress(o.progress_ctx, i + 1, n);
    }
    r.seconds = (cs_now_ms() - t0) / 1000.0;
    for (int j = 0; j < o.nmethods; j++) {
        int nm = r.methods[j].n_masked;
        r.methods[j].pointing = nm ? sum_point[j] / nm : 0;
        r.methods[j].energy = nm ? sum_energy[j] / nm : 0;
        r.methods[j].deletion = r.n ? sum_del[j] / r.n : 0;
        r.methods[j].insertion = r.n ? sum_ins[j] / r.n : 0;
    }
out:
    free(x);
    free(pert);
    free(plog);
    free(logits);
    if (st != CS_OK) {
        cs_models_eval_result_free(&r);
        return st;
    }
    *out = r;
    return CS_OK;
}
