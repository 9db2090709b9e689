/* Model versions of the service: loading a model file or buffer into an
 * immutable svc_model, and the hot-reload thread that swaps in a new
 * version when a served file changes and frees retired ones once unused. */
#include "service/service_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- loading ------------------------------------------------------------------- */

/* The labels text becomes the model's (sm->labels_buf owns it, whatever
 * the outcome). */
static cs_status split_labels(svc_model *sm, char *text, cs_error *err) {
    sm->labels_buf = text;
    cs_status st = cs_img_labels_split(text, &sm->labels, &sm->info.num_labels, err);
    sm->info.labels = (const char *const *)sm->labels;
    return st;
}

static char *read_file(const char *path, size_t max, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = cap ? cap * 2 : 1 << 20;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (n > max) {
            free(buf);
            fclose(f);
            return NULL;
        }
        if (got == 0) break;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

void svc_model_destroy(svc_model *sm) {
    if (!sm) return;
    cs_model_free(sm->m);
    free(sm->labels);
    free(sm->labels_buf);
    free(sm);
}

void svc_model_retain(svc_model *m) {
    if (m) atomic_fetch_add(&m->refs, 1);
}
/* Never frees: the version is owned by its slot or the retired list. */
void svc_model_release(svc_model *m) {
    if (m) atomic_fetch_sub(&m->refs, 1);
}

/* Common tail of both loaders: names, checks the preprocessing against the
 * input, computes the key text and publishes the public info. */
static cs_status model_finish(cs_svc *s, svc_model *sm, const char *name, double t0, bool check_dup,
                              cs_error *err) {
    cs_model_info info;
    cs_model_get_info(sm->m, &info);
    if (info.input_dims[1] != 3 || sm->pp.crop_h != info.input_dims[2] ||
        sm->pp.crop_w != info.input_dims[3])
        return cs_errorf(err, CS_EINVAL,
                         "model '%s': its preprocessing makes 3x%dx%d tensors; its input is %lldx%lldx%lld",
                         name, sm->pp.crop_h, sm->pp.crop_w, (long long)info.input_dims[1],
                         (long long)info.input_dims[2], (long long)info.input_dims[3]);
    if (!*name || strlen(name) >= sizeof sm->name || !cs_utf8_valid(name, strlen(name)))
        return cs_errorf(err, CS_EINVAL, "model name '%s': give 1 to %zu bytes of UTF-8 (--model PATH:NAME)",
                         name, sizeof sm->name - 1);
    for (int i = 0; i < s->nmodels && check_dup; i++)
        if (!strcmp(s->slots[i].cur->name, name))
            return cs_errorf(err, CS_EINVAL, "two models are named '%s'", name);
    snprintf(sm->name, sizeof sm->name, "%s", name);
    const cs_preproc *pp = &sm->pp;
    snprintf(sm->pp_text, sizeof sm->pp_text,
             "r%d,%dx%d,c%dx%d,i%d,o%d,s%.9g,m%.9g/%.9g/%.9g,d%.9g/%.9g/%.9g", pp->resize,
             pp->resize_w, pp->resize_h, pp->crop_w, pp->crop_h, (int)pp->interp, (int)pp->order,
             pp->scale, pp->mean[0], pp->mean[1], pp->mean[2], pp->std[0], pp->std[1], pp->std[2]);
    sm->b0 = info.input_dims[0] > 0 ? (int)info.input_dims[0] : 0;
    sm->info.name = sm->name;
    svc_hex32(sm->digest, sm->info.digest);
    sm->info.model = sm->m;
    sm->info.input_h = (int)info.input_dims[2];
    sm->info.input_w = (int)info.input_dims[3];
    sm->info.num_classes = (int)info.num_classes;
    sm->info.load_ms = cs_now_ms() - t0;
    return CS_OK;
}

/* Loads a model file into a new version (also what a hot reload does);
 * check_dup: refuse a name already served. */
static cs_status load_file(cs_svc *s, const char *name, const char *path, const char *labels,
                           bool check_dup, svc_model **out, cs_error *err) {
    double t0 = cs_now_ms();
    svc_model *smp = calloc(1, sizeof *smp);
    if (!smp) return cs_errorf(err, CS_ENOMEM, "out of memory");
    /* the engine hashes the bytes it parses (or takes the digest from its
     * prepared-model cache under --cache-dir, which also skips parsing and
     * weight packing on a restart) */
    cs_status st = CS_OK;
    cs_model_options mo = {.num_threads = s->p.threads, .compute_digest = 1, .prepared_dir = s->prepared_dir,
                           .device = s->p.device, .precision = s->p.precision};
    if ((st = cs_model_load(path, &mo, &smp->m, err)) != CS_OK) cs_error_prefix(err, "%s", path);
    else if (!cs_model_digest(smp->m, smp->digest)) st = cs_errorf(err, CS_EINTERNAL, "model digest missing");
    if (st != CS_OK) {
        svc_model_destroy(smp);
        return st;
    }
    cs_model_info info;
    cs_model_get_info(smp->m, &info);
    smp->pp = cs_img_preproc_default();
    char *labels_path = NULL;
    st = cs_img_preproc_for_model(path, cs_model_metadata(smp->m, "camserve.preprocess"),
                                  (int)info.input_dims[2], (int)info.input_dims[3], &smp->pp,
                                  &labels_path, &smp->info.preprocess_source, err);
    if (st == CS_OK && labels && *labels) { /* the caller's file wins over the sidecar's */
        free(labels_path);
        if (!(labels_path = strdup(labels))) st = cs_errorf(err, CS_ENOMEM, "out of memory");
    }
    if (st == CS_OK && labels_path) {
        size_t ll;
        char *text = read_file(labels_path, (size_t)64 << 20, &ll);
        if (!text) st = cs_errorf(err, CS_EIO, "cannot read labels %s", labels_path);
        else if ((st = split_labels(smp, text, err)) != CS_OK) cs_error_prefix(err, "%s", labels_path);
        /* most likely the wrong file; served anyway (a class without a line
         * answers label null), but said once at load */
        if (st == CS_OK && smp->info.num_labels != info.num_classes)
            fprintf(stderr, "camserve: warning: %s has %d labels but %s has %lld classes\n", labels_path,
                    smp->info.num_labels, path, (long long)info.num_classes);
    }
    free(labels_path);
    char base[64];
    if (!name || !*name) {
        const char *b = strrchr(path, '/');
        b = b ? b + 1 : path;
        snprintf(base, sizeof base, "%s", b);
        char *dot = strrchr(base, '.');
        if (dot && dot != base && !strcmp(dot, ".onnx")) *dot = '\0';
        name = base;
    }
    if (st == CS_OK) st = model_finish(s, smp, name, t0, check_dup, err);
    if (st != CS_OK) {
        svc_model_destroy(smp);
        return st;
    }
    *out = smp;
    return CS_OK;
}

cs_status cs_svc_add_model(cs_svc *s, const char *name, const char *path, const char *labels, cs_error *err) {
    if (s->started) return cs_errorf(err, CS_EINVAL, "models must be added before the service starts");
    if (s->nmodels >= CS_SVC_MAX_MODELS)
        return cs_errorf(err, CS_ELIMIT, "at most %d models", CS_SVC_MAX_MODELS);
    if (strlen(path) >= sizeof s->slots[0].path)
        return cs_errorf(err, CS_EINVAL, "model path too long: %.100s...", path);
    if (labels && strlen(labels) >= sizeof s->slots[0].labels)
        return cs_errorf(err, CS_EINVAL, "labels path too long: %.100s...", labels);
    svc_slot *sl = &s->slots[s->nmodels];
    struct stat st0;
    bool have_st = stat(path, &st0) == 0;
    svc_model *m = NULL;
    cs_status st = load_file(s, name, path, labels, true, &m, err);
    if (st != CS_OK) return st;
    memset(sl, 0, sizeof *sl);
    snprintf(sl->path, sizeof sl->path, "%s", path);
    snprintf(sl->labels, sizeof sl->labels, "%s", labels ? labels : "");
    if (have_st) sl->seen = st0;
    m->slot = s->nmodels++;
    sl->cur = m;
    return CS_OK;
}

cs_status cs_svc_add_model_buffer(cs_svc *s, const char *name, const void *buf, size_t len,
                                  const char *config_json, const char *labels_text,
                                  cs_error *err) {
    if (s->started) return cs_errorf(err, CS_EINVAL, "models must be added before the service starts");
    if (s->nmodels >= CS_SVC_MAX_MODELS)
        return cs_errorf(err, CS_ELIMIT, "at most %d models", CS_SVC_MAX_MODELS);
    if (!name || !*name) name = "default";
    double t0 = cs_now_ms();
    svc_model *smp = calloc(1, sizeof *smp);
    if (!smp) return cs_errorf(err, CS_ENOMEM, "out of memory");
    cs_status st = CS_OK;
    if (!svc_sha256(buf, len, smp->digest)) st = cs_errorf(err, CS_EINTERNAL, "SHA-256 failed");
    cs_model_options mo = {.num_threads = s->p.threads, .device = s->p.device, .precision = s->p.precision};
    if (st == CS_OK && (st = cs_model_load_buffer(buf, len, &mo, &smp->m, err)) != CS_OK)
        cs_error_prefix(err, "model '%s'", name);
    if (st != CS_OK) {
        svc_model_destroy(smp);
        return st;
    }
    cs_model_info info;
    cs_model_get_info(smp->m, &info);
    smp->info.builtin = 1;
    smp->pp = cs_img_preproc_default();
    if (config_json) {
        st = cs_img_preproc_from_json(config_json, &smp->pp, NULL, err);
        smp->info.preprocess_source = "config";
    } else {
        st = cs_img_preproc_for_model(NULL, cs_model_metadata(smp->m, "camserve.preprocess"),
                                      (int)info.input_dims[2], (int)info.input_dims[3], &smp->pp,
                                      NULL, &smp->info.preprocess_source, err);
    }
    if (st == CS_OK && labels_text) {
        char *t = strdup(labels_text);
        if (!t) st = cs_errorf(err, CS_ENOMEM, "out of memory");
        else st = split_labels(smp, t, err);
    }
    if (st == CS_OK) st = model_finish(s, smp, name, t0, true, err);
    if (st != CS_OK) {
        svc_model_destroy(smp);
        return st;
    }
    svc_slot *sl = &s->slots[s->nmodels];
    memset(sl, 0, sizeof *sl);
    smp->slot = s->nmodels++;
    sl->cur = smp;
    return CS_OK;
}

int cs_svc_num_models(const cs_svc *s) { return s->nmodels; }

const cs_svc_model_info *cs_svc_model_at(const cs_svc *s, int i) {
    if (i < 0 || i >= s->nmodels) return NULL;
    cs_svc *w = (cs_svc *)s;
    pthread_mutex_lock(&w->vmu);
    const cs_svc_model_info *mi = &s->slots[i].cur->info;
    pthread_mutex_unlock(&w->vmu);
    return mi;
}

/* ---- hot reload ------------------------------------------------------------------------ */

static bool same_file(const struct stat *a, const struct stat *b) {
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* One poll of slot i's file.  A change is loaded once the file looked the
 * same on two polls in a row (a copy in progress is not loaded half-way); a
 * file that changed again while loading is dropped and retried. */
static void poll_slot(cs_svc *s, int i) {
    svc_slot *sl = &s->slots[i];
    struct stat st;
    if (stat(sl->path, &st) != 0 || same_file(&st, &sl->seen)) { /* gone (being replaced?) or unchanged */
        sl->has_pending = false;
        return;
    }
    if (!sl->has_pending || !same_file(&st, &sl->pending)) {
        sl->pending = st;
        sl->has_pending = true;
        return;
    }
    sl->has_pending = false;
    svc_model *cur = sl->cur, *nm = NULL;
    cs_error err = {0};
    cs_status rc = load_file(s, cur->name, sl->path, sl->labels, false, &nm, &err);
    struct stat after;
    if (stat(sl->path, &after) != 0 || !same_file(&st, &after)) { /* changed while loading */
        svc_model_destroy(nm);
        return;
    }
    sl->seen = st;
    if (rc != CS_OK) {
        pthread_mutex_lock(&s->vmu);
        sl->reload_failures++;
        pthread_mutex_unlock(&s->vmu);
        fprintf(stderr, "camserve: model '%s' changed on disk but does not load; still serving the previous version: %s\n",
                cur->name, err.msg);
        return;
    }
    if (!memcmp(nm->digest, cur->digest, 32)) { /* touched, same bytes */
        svc_model_destroy(nm);
        return;
    }
    nm->slot = i;
    pthread_mutex_lock(&s->vmu);
    sl->cur = nm;
    sl->reloads++;
    cur->retired_at = cs_now_ms();
    cur->next_retired = s->retired;
    s->retired = cur;
    pthread_mutex_unlock(&s->vmu);
    fprintf(stderr, "camserve: model '%s' reloaded from %s (svc_sha256 %.12s, %.0f ms); requests in flight finish on the previous version\n",
            nm->name, sl->path, nm->info.digest, nm->info.load_ms);
    pthread_mutex_lock(&s->mu); /* idle workers move their sessions to the new version */
    pthread_cond_broadcast(&s->work_cv);
    pthread_mutex_unlock(&s->mu);
}

/* Frees retired versions nobody uses any more (refs 0, grace period over). */
static void reap_retired(cs_svc *s) {
    double now = cs_now_ms();
    pthread_mutex_lock(&s->vmu);
    for (svc_model **p = &s->retired; *p;) {
        svc_model *m = *p;
        if (atomic_load(&m->refs) == 0 && now - m->retired_at >= RETIRE_GRACE_MS) {
            *p = m->next_retired;
            svc_model_destroy(m);
        } else {
            p = &m->next_retired;
        }
    }
    pthread_mutex_unlock(&s->vmu);
}

void *svc_reload_main(void *arg) {
    cs_svc *s = arg;
    pthread_mutex_lock(&s->vmu);
    while (!s->reload_quit) {
        struct timespec ts;
        svc_abs_deadline(&ts, s->p.reload_poll_ms);
        pthread_cond_timedwait(&s->reload_cv, &s->vmu, &ts);
        if (s->reload_quit) break;
        pthread_mutex_unlock(&s->vmu);
        for (int i = 0; i < s->nmodels; i++)
            if (s->slots[i].path[0]) poll_slot(s, i);
        reap_retired(s);
        pthread_mutex_lock(&s->vmu);
    }
    pthread_mutex_unlock(&s->vmu);
    return NULL;
}

