/* Image inputs and labels for the CLI: each --image is decoded (DCT-scaled
 * for JPEG, or by the GPU image path) and preprocessed with the model's own
 * config, several files at once (cli_pool). */
#include "cli/input.h"
#include "cli/model_arg.h"
#include "util/files.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

static cs_status model_preproc(const cs_model *m, cs_preproc *pp, char **labels, cs_error *err) {
    return cli_model_preproc(m, pp, labels, err);
}

/* ---- files and folders ------------------------------------------------------------ */

static int is_image_name(const char *n) {
    const char *dot = strrchr(n, '.');
    if (n[0] == '.' || !dot) return 0;
    const char *exts[] = {".jpg", ".jpeg", ".png", ".webp"};
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++)
        if (!strcasecmp(dot, exts[i])) return 1;
    return 0;
}

cs_status cli_expand_paths(const cli_opt *image, char ***out, int *n, cs_error *err) {
    char **v = NULL;
    int k = 0;
    cs_status st = CS_OK;
    for (int i = 0; i < image->count && st == CS_OK; i++) {
        const char *p = image->values[i];
        struct stat sb;
        char **names = NULL;
        int nn = 1;
        bool dir = stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
        /* a file, or a missing path that will be reported as bad */
        if (dir && (st = cs_list_dir(p, is_image_name, &names, &nn, err)) != CS_OK) break;
        char **nv = realloc(v, (size_t)(k + nn + 1) * sizeof *v);
        if (!nv) {
            cs_free_names(names, nn);
            st = cs_errorf(err, CS_ENOMEM, "out of memory");
            break;
        }
        v = nv;
        for (int j = 0; j < nn; j++) {
            size_t len = strlen(p) + (dir ? strlen(names[j]) + 2 : 1);
            if (!(v[k] = malloc(len))) {
                st = cs_errorf(err, CS_ENOMEM, "out of memory");
                break;
            }
            /* "DIR/" given: "DIR/a.jpg", not "DIR//a.jpg", in what is printed */
            size_t pl = strlen(p);
            if (dir) snprintf(v[k], len, "%s%s%s", p, pl && p[pl - 1] == '/' ? "" : "/", names[j]);
            else snprintf(v[k], len, "%s", p);
            k++;
        }
        if (dir) cs_free_names(names, nn);
    }
    if (st != CS_OK) {
        cs_free_names(v, k);
        return st;
    }
    *out = v;
    *n = k;
    return CS_OK;
}

int cli_chunk_size(const cs_model_info *info) {
    const int want = 8, b0 = info->input_dims[0] > 0 ? (int)info->input_dims[0] : 1;
    return (want + b0 - 1) / b0 * b0;
}

/* ---- the pool ------------------------------------------------------------------ */

enum { POOL_MAX_THREADS = 16, DISPLAY_MAX_SIDE = 800 /* explain's overlays */ };

cs_status cli_pool_open(const cs_model *m, int threads, bool display, cli_pool *p, cs_error *err) {
    memset(p, 0, sizeof *p);
    p->display = display;
    if (threads <= 0) threads = omp_get_max_threads();
    if (threads > POOL_MAX_THREADS) threads = POOL_MAX_THREADS;
    if (threads > 1) {
        cs_status st = cs_team_create(threads - 1, &p->team, err);
        if (st != CS_OK) return st;
    }
    const char *dev = cs_model_device(m);
    if (!strncmp(dev, "cuda", 4)) {
        cs_error e = {0};
        if (cs_gpuprep_open(dev[4] == ':' ? atoi(dev + 5) : 0, &p->gp, &e) != CS_OK)
            fprintf(stderr, "camserve: GPU image path unavailable: %s; decoding on the CPU\n", e.msg);
    }
    return CS_OK;
}

void cli_pool_close(cli_pool *p) {
    cs_gpuprep_close(p->gp);
    cs_team_destroy(p->team);
    memset(p, 0, sizeof *p);
}

/* ---- decoding a batch --------------------------------------------------------------- */

typedef struct load_batch {
    const char *const *paths;
    cli_input *out;
    cs_img_limits lim;
    int need_w, need_h;
    int64_t per;    /* floats per image */
    cs_status *st;  /* per path */
    cs_error *errs; /* per path */
} load_batch;

/* Path i on the GPU image path (the calling thread's, cli_pool.gp).  What
 * it declines or cannot read is left to the CPU, which also words any
 * error; a GPU that fails (CS_EBACKEND) is not asked again.  Every eligible
 * JPEG goes to the GPU, none to the CPU by chance, so the answers do not
 * depend on thread timing. */
static void load_on_gpu(cli_pool *pool, load_batch *b, int i) {
    cli_input *o = b->out;
    uint8_t *buf = NULL;
    size_t len = 0;
    cs_error e = {0};
    double t0 = cs_now_ms();
    if (cs_img_read_file(b->paths[i], b->lim.max_bytes, &buf, &len, &e) != CS_OK) return;
    cs_status st = CS_EUNSUPPORTED;
    cs_gpuprep_out g = {.tensor = o->data + i * b->per, .want_display = pool->display,
                        .display_max_side = DISPLAY_MAX_SIDE};
    if (cs_img_sniff(buf, len) == CS_IMG_FORMAT_JPEG)
        st = cs_gpuprep_run(pool->gp, buf, len, &b->lim, &o->pp, &g, &e);
    free(buf);
    if (st == CS_EBACKEND) {
        fprintf(stderr, "camserve: GPU image path failed: %s; decoding on the CPU\n", e.msg);
        cs_gpuprep_close(pool->gp);
        pool->gp = NULL;
    }
    if (st != CS_OK) return;
    if (pool->display) {
        o->images[i] = g.display;
    } else {
        o->images[i].orig_width = g.frame_w;
        o->images[i].orig_height = g.frame_h;
    }
    cli_image_info *inf = &o->info[i];
    memcpy(inf->box, g.box, sizeof inf->box);
    inf->decode_ms = cs_now_ms() - t0;
    inf->on_gpu = true;
    b->st[i] = CS_OK;
}

/* A team task: path i on the CPU, unless the GPU has done it. */
static void load_on_cpu(void *arg, int i) {
    load_batch *b = arg;
    cli_input *o = b->out;
    cli_image_info *inf = &o->info[i];
    if (inf->on_gpu) return;
    double t0 = cs_now_ms();
    cs_status st = cs_img_load(b->paths[i], &b->lim, b->need_w, b->need_h, &o->images[i], &b->errs[i]);
    double t1 = cs_now_ms();
    if (st == CS_OK) st = cs_img_preprocess(&o->images[i], &o->pp, o->data + i * b->per, &b->errs[i]);
    if (st == CS_OK) cs_img_preproc_crop_box(&o->pp, &o->images[i], inf->box);
    else cs_img_free(&o->images[i]);
    inf->decode_ms = t1 - t0;
    inf->preprocess_ms = cs_now_ms() - t1;
    b->st[i] = st;
}

cs_status cli_input_paths(const cs_model *m, cli_pool *pool, const char *const *paths, int n, cli_input *out,
                          cli_bad_image_fn report, void *ctx, cs_error *err) {
    memset(out, 0, sizeof *out);
    cs_model_info info;
    cs_model_get_info(m, &info);
    cs_status st = model_preproc(m, &out->pp, NULL, err);
    if (st != CS_OK) return st;
    if (out->pp.crop_h != info.input_dims[2] || out->pp.crop_w != info.input_dims[3] ||
        info.input_dims[1] != 3)
        return cs_errorf(err, CS_EINVAL, "the model's preprocessing makes %dx%d images; its input is %lldx%lldx%lld",
                         out->pp.crop_h, out->pp.crop_w, (long long)info.input_dims[1],
                         (long long)info.input_dims[2], (long long)info.input_dims[3]);
    size_t slots = (size_t)(n ? n : 1);
    load_batch b = {.paths = paths, .out = out, .lim = cs_img_limits_default(),
                    .per = 3 * info.input_dims[2] * info.input_dims[3]};
    out->data = malloc(slots * (size_t)b.per * sizeof(float));
    out->images = calloc(slots, sizeof(cs_image));
    out->info = calloc(slots, sizeof(cli_image_info));
    out->names = malloc(slots * sizeof(char *));
    b.st = malloc(slots * sizeof *b.st);
    b.errs = calloc(slots, sizeof *b.errs);
    if (!out->data || !out->images || !out->info || !out->names || !b.st || !b.errs) {
        st = cs_errorf(err, CS_ENOMEM, "out of memory");
        goto done;
    }
    cs_img_preproc_need(&out->pp, &b.need_w, &b.need_h);
    for (int i = 0; i < n && pool && pool->gp; i++) load_on_gpu(pool, &b, i);
    cs_team_run(pool ? pool->team : NULL, n, load_on_cpu, &b);

    /* in path order: bad files reported (or the first one fails), good ones
     * packed to the front */
    for (int i = 0; i < n; i++) {
        if (b.st[i] != CS_OK) {
            if (report) {
                report(ctx, paths[i], &b.errs[i]);
                continue;
            }
            if (err) *err = b.errs[i];
            st = cs_error_prefix(err, "%s", paths[i]);
            for (int j = i + 1; j < n; j++) /* not packed: freed here */
                if (b.st[j] == CS_OK) cs_img_free(&out->images[j]);
            goto done;
        }
        int k = out->batch++;
        if (k != i) {
            memcpy(out->data + k * b.per, out->data + i * b.per, (size_t)b.per * sizeof(float));
            out->images[k] = out->images[i];
            out->info[k] = out->info[i];
            memset(&out->images[i], 0, sizeof out->images[i]);
        }
        out->names[k] = (char *)paths[i];
        out->decode_ms += out->info[k].decode_ms;
        out->preprocess_ms += out->info[k].preprocess_ms;
    }
done:
    free(b.st);
    free(b.errs);
    return st;
}

cs_status cli_input_images(const cs_model *m, cli_pool *pool, const cli_opt *image, cli_input *out,
                           cs_error *err) {
    return cli_input_paths(m, pool, image->values, image->count, out, NULL, NULL, err);
}

cs_status cli_model_labels(const cs_model *m, const char *path, cli_labels *out, cs_error *err) {
    memset(out, 0, sizeof *out);
    if (cli_model_labels_text(m) && !path) return cli_labels_from_text(cli_model_labels_text(m), out, err);
    cs_status st = CS_OK;
    char *found = NULL;
    if (!path) {
        cs_preproc pp;
        st = model_preproc(m, &pp, &found, err);
        path = found;
    }
    if (st == CS_OK && path) st = cli_labels_load(path, out, err);
    /* most likely the wrong file: said, then used (a class without a line
     * prints no name) */
    cs_model_info info;
    cs_model_get_info(m, &info);
    if (st == CS_OK && path && out->n != info.num_classes)
        fprintf(stderr, "camserve: warning: %s has %d labels but the model has %lld classes\n", path, out->n,
                (long long)info.num_classes);
    free(found);
    return st;
}
