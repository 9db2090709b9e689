/* camserve serve: the HTTP server.  Parses flags (each also from a
 * CAMSERVE_* environment variable; a flag wins), starts listening at once so
 * that /healthz answers while the models load (/readyz says 503 until then),
 * loads the models, starts the service, and on SIGTERM/SIGINT stops
 * accepting, drains what is in flight and exits within 10 s. */
#include "camserve/models.h"
#include "camserve/server.h"
#include "camserve/service.h"
#include "cli/cli.h"
#include "cli/model_arg.h"

#include <ctype.h>
#include <pthread.h>
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

enum { O_MODEL, O_HOST, O_PORT, O_WORKERS, O_THREADS, O_MAXBATCH, O_WINDOW, O_QUEUE, O_TIMEOUT,
       O_CACHEDIR, O_CACHEMEM, O_REDIS, O_MAXUPLOAD, O_HTTPTHREADS, O_PREPTHREADS, O_IMAGESTORE,
       O_IDLETIMEOUT, O_MAXCONN, O_ACCESSLOG, O_CACHEDISK, O_CACHETTL, O_MAXINFLIGHT, O_PREPCACHE, O_DEVICE, O_PRECISION, O_GPUDECODE,
       O_ENCODETHREADS, O_LABELS, O_N };

/* --max-batch -> CAMSERVE_MAX_BATCH */
static const char *env_value(const char *opt) {
    char name[64] = "CAMSERVE_";
    size_t n = strlen(name);
    for (const char *p = opt; *p && n < sizeof name - 1; p++)
        name[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    name[n] = '\0';
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* Non-negative integer option (0 allowed), or def when absent. */
static long num_opt(const cli_opt *o, long def, long max, int *ok) {
    if (!o->value) return def;
    char *end;
    errno = 0;
    long v = strtol(o->value, &end, 10);
    if (errno || *end || end == o->value || v < 0 || v > max) {
        fprintf(stderr, "camserve serve: --%s must be an integer 0..%ld, got '%s'\n", o->name, max, o->value);
        *ok = 0;
        return def;
    }
    return v;
}

/* "PATH[:NAME]": the name is what follows the last ':' when that part has
 * no '/' (so a path with ':' in a directory still works). */
static void split_model(const char *spec, char *path, size_t plen, char *name, size_t nlen) {
    snprintf(path, plen, "%s", spec);
    name[0] = '\0';
    char *colon = strrchr(path, ':');
    if (colon && !strchr(colon, '/') && colon[1]) {
        snprintf(name, nlen, "%s", colon + 1);
        *colon = '\0';
    }
}

int cs_cli_serve(int argc, char **argv) {
    /* Uploads and answers are megabyte buffers that live for one request.
     * glibc's adaptive mmap threshold would move such sizes onto the heap
     * after the first free, where the memory stays with the process after
     * a burst of clients; a fixed threshold keeps them mmap'd (returned on
     * free) and a trim threshold returns freed heap tops. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    mallopt(M_TRIM_THRESHOLD, 1024 * 1024);
    cli_opt opts[O_N] = {
        [O_MODEL] = {"model", true},           [O_HOST] = {"host", true},
        [O_PORT] = {"port", true},             [O_WORKERS] = {"workers", true},
        [O_THREADS] = {"threads", true},       [O_MAXBATCH] = {"max-batch", true},
        [O_WINDOW] = {"batch-window-ms", true}, [O_QUEUE] = {"queue", true},
        [O_TIMEOUT] = {"timeout-ms", true},    [O_CACHEDIR] = {"cache-dir", true},
        [O_CACHEMEM] = {"cache-mem-mb", true}, [O_REDIS] = {"redis", true},
        [O_MAXUPLOAD] = {"max-upload-mb", true}, [O_HTTPTHREADS] = {"http-threads", true},
        [O_PREPTHREADS] = {"prep-threads", true}, [O_IMAGESTORE] = {"image-store-mb", true},
        [O_IDLETIMEOUT] = {"idle-timeout-s", true}, [O_MAXCONN] = {"max-connections", true},
        [O_ACCESSLOG] = {"access-log", false},
        [O_MAXINFLIGHT] = {"max-inflight-mb", true}, [O_PREPCACHE] = {"prep-cache-mb", true},
        [O_CACHEDISK] = {"cache-disk-mb", true}, [O_CACHETTL] = {"cache-ttl-s", true},
        [O_DEVICE] = {"device", true},         [O_PRECISION] = {"precision", true},
        [O_GPUDECODE] = {"gpu-decode", true}, [O_ENCODETHREADS] = {"encode-threads", true},
        [O_LABELS] = {"labels", true},
    };
    int rc = cli_parse("serve", argc, argv, opts, O_N), ok = 1;
    if (rc) return rc;
    for (int i = 0; i < O_N; i++) {
        if (opts[i].value) continue;
        const char *v = env_value(opts[i].name);
        /* a flag from the environment: anything but 0/false/no turns it on */
        if (v && !opts[i].takes_value && (!strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no")))
            v = NULL;
        opts[i].value = v;
    }
    /* CAMSERVE_MODEL may list several models, separated by commas */
    char *env_models = NULL;
    const char *env_list[CS_SVC_MAX_MODELS];
    if (opts[O_MODEL].count == 0 && opts[O_MODEL].value) {
        env_models = strdup(opts[O_MODEL].value);
        int n = 0;
        for (char *save = NULL, *t = env_models ? strtok_r(env_models, ",", &save) : NULL;
             t && n < CS_SVC_MAX_MODELS; t = strtok_r(NULL, ",", &save))
            env_list[n++] = t;
        opts[O_MODEL].count = n;
        opts[O_MODEL].values = NULL;
    }
    /* --labels FILE pairs with --model in order (CAMSERVE_LABELS: commas) */
    char *env_labels = NULL;
    const char *env_lab[CS_SVC_MAX_MODELS];
    int nlabels = opts[O_LABELS].count;
    if (nlabels == 0 && opts[O_LABELS].value) {
        env_labels = strdup(opts[O_LABELS].value);
        for (char *save = NULL, *t = env_labels ? strtok_r(env_labels, ",", &save) : NULL;
             t && nlabels < CS_SVC_MAX_MODELS; t = strtok_r(NULL, ",", &save))
            env_lab[nlabels++] = t;
    }
    if (nlabels > 0 && nlabels != opts[O_MODEL].count) {
        fprintf(stderr, "camserve serve: %d --labels for %d --model: give one labels file per model, in the same order\n",
                nlabels, opts[O_MODEL].count);
        ok = 0;
    }

    cs_svc_params sp = cs_svc_default_params();
    cs_http_params hp = cs_http_default_params();
    hp.host = opts[O_HOST].value ? opts[O_HOST].value : "127.0.0.1";
    hp.port = (int)num_opt(&opts[O_PORT], 8080, 65535, &ok);
    sp.workers = (int)num_opt(&opts[O_WORKERS], 1, 256, &ok);
    sp.threads = (int)num_opt(&opts[O_THREADS], 0, 1024, &ok);
    sp.max_batch = opts[O_MAXBATCH].value ? (int)num_opt(&opts[O_MAXBATCH], 1, 256, &ok) : 0; /* 0: by device */
    sp.batch_window_ms = (int)num_opt(&opts[O_WINDOW], 2, 10000, &ok);
    sp.queue = (int)num_opt(&opts[O_QUEUE], 64, 100000, &ok);
    sp.timeout_ms = (int)num_opt(&opts[O_TIMEOUT], 30000, 3600000, &ok);
    /* The in-memory tiers are what a server's memory grows by as new images
     * arrive, up to these bounds (whatever the number of clients); set them
     * lower where memory matters more than hits -- the disk tier
     * (--cache-dir) answers a hit in about a millisecond anyway. */
    sp.cache_mem_bytes = (size_t)num_opt(&opts[O_CACHEMEM], 256, 1 << 20, &ok) << 20;
    sp.image_store_bytes = (size_t)num_opt(&opts[O_IMAGESTORE], 128, 1 << 20, &ok) << 20;
    sp.prep_cache_bytes = (size_t)num_opt(&opts[O_PREPCACHE], 64, 1 << 20, &ok) << 20;
    sp.cache_dir = opts[O_CACHEDIR].value;
    {
        /* --device / --precision (CAMSERVE_DEVICE / CAMSERVE_PRECISION above) */
        cs_model_options dmo = {0};
        cs_error derr = {0};
        if (cli_device_options(opts[O_DEVICE].value, opts[O_PRECISION].value, &dmo, &derr) != CS_OK) {
            fprintf(stderr, "camserve serve: %s\n", derr.msg);
            ok = 0;
        }
        sp.device = dmo.device;
        sp.precision = dmo.precision;
    }
    if (opts[O_GPUDECODE].value) {
        const char *v = opts[O_GPUDECODE].value;
        if (!strcmp(v, "on") || !strcmp(v, "off")) {
            sp.gpu_decode = !strcmp(v, "on");
        } else {
            fprintf(stderr, "camserve serve: --gpu-decode must be on or off, got '%s'\n", v);
            ok = 0;
        }
    }
    sp.cache_disk_bytes = (size_t)num_opt(&opts[O_CACHEDISK], 1024, 1 << 24, &ok) << 20;
    sp.redis_url = opts[O_REDIS].value;
    sp.cache_ttl_s = (int)num_opt(&opts[O_CACHETTL], 86400, 100L * 365 * 86400, &ok);
    sp.prep_threads = (int)num_opt(&opts[O_PREPTHREADS], 2, 64, &ok);
    sp.encode_threads = (int)num_opt(&opts[O_ENCODETHREADS], 0, CS_IMG_PAR_MAX, &ok); /* 0: by device */
    long upload_mb = num_opt(&opts[O_MAXUPLOAD], 25, 4096, &ok);
    hp.max_upload_bytes = (size_t)upload_mb << 20;
    hp.inflight_bytes = (size_t)num_opt(&opts[O_MAXINFLIGHT], 64, 1 << 20, &ok) << 20;
    sp.limits.max_bytes = hp.max_upload_bytes;
    hp.threads = (int)num_opt(&opts[O_HTTPTHREADS], 2, 64, &ok);
    hp.connection_timeout_s = (int)num_opt(&opts[O_IDLETIMEOUT], 30, 3600, &ok);
    hp.max_connections = (int)num_opt(&opts[O_MAXCONN], 512, 100000, &ok);
    hp.access_log = opts[O_ACCESSLOG].value != NULL;
    if (ok && (sp.workers < 1 || (opts[O_MAXBATCH].value && sp.max_batch < 1) || sp.timeout_ms < 1 || upload_mb < 1 ||
               sp.prep_threads < 1 || hp.threads < 1 || hp.connection_timeout_s < 1)) {
        fprintf(stderr, "camserve serve: --workers, --max-batch, --timeout-ms, --max-upload-mb, "
                        "--prep-threads, --http-threads and --idle-timeout-s must be at least 1\n");
        ok = 0;
    }
    if (ok && opts[O_CACHEDIR].value && sp.cache_disk_bytes < ((size_t)1 << 20)) {
        fprintf(stderr, "camserve serve: --cache-disk-mb must be at least 1\n");
        ok = 0;
    }
    if (!ok) {
        free(env_models);
        free(env_labels);
        cli_free(opts, O_N);
        return 2;
    }

    /* Signals are taken synchronously by this thread (sigwait): block them
     * before any thread exists so every thread inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    cs_error err = {0};
    cs_svc *svc = NULL;
    cs_http *http = NULL;
    rc = 1;
    if (cs_svc_create(&sp, &svc, &err) != CS_OK) goto out;
    if (cs_http_start(svc, &hp, &http, &err) != CS_OK) goto out;
    fprintf(stderr, "camserve serve: listening on http://%s%s%s:%d/ (loading models)\n",
            strchr(hp.host, ':') ? "[" : "", hp.host, strchr(hp.host, ':') ? "]" : "", cs_http_port(http));

    int nmodels = opts[O_MODEL].count;
    for (int i = 0; i < nmodels; i++) {
        char path[4096], name[64];
        split_model(env_models ? env_list[i] : opts[O_MODEL].values[i], path, sizeof path, name, sizeof name);
        const char *labels = nlabels == 0 ? NULL : env_labels ? env_lab[i] : opts[O_LABELS].values[i];
        if (cs_svc_add_model(svc, name[0] ? name : NULL, path, labels, &err) != CS_OK) goto out;
    }
    if (nmodels == 0) {
        const void *onnx = NULL;
        size_t len = 0;
        const char *sidecar = NULL, *labels = NULL;
        if (cs_models_default(&onnx, &len, &sidecar, &labels, &err) != CS_OK || !onnx) {
            cs_errorf(&err, CS_EINVAL, "no --model given and this binary has no embedded default model");
            goto out;
        }
        if (cs_svc_add_model_buffer(svc, "default", onnx, len, sidecar, labels, &err) != CS_OK) goto out;
    }
    if (cs_svc_start(svc, &err) != CS_OK) goto out;
    for (int i = 0; i < cs_svc_num_models(svc); i++) {
        const cs_svc_model_info *mi = cs_svc_model_at(svc, i);
        fprintf(stderr, "camserve serve: model '%s' (%dx%d, %d classes, sha256 %.12s, %s %s) loaded in %.0f ms\n",
                mi->name, mi->input_w, mi->input_h, mi->num_classes, mi->digest, cs_model_device(mi->model),
                cs_precision_name(cs_model_precision(mi->model)), mi->load_ms);
    }
    fprintf(stderr, "camserve serve: ready (%d worker%s, max batch %d, queue %d, encode threads %d)\n",
            sp.workers, sp.workers > 1 ? "s" : "", cs_svc_max_batch(svc), sp.queue, cs_svc_encode_threads(svc));
    fprintf(stderr, "camserve serve: result cache: memory %zu MB", sp.cache_mem_bytes >> 20);
    if (opts[O_CACHEDIR].value)
        fprintf(stderr, ", disk %s (%zu MB)", opts[O_CACHEDIR].value, sp.cache_disk_bytes >> 20);
    if (opts[O_REDIS].value) fprintf(stderr, ", redis %s", opts[O_REDIS].value);
    fprintf(stderr, "; ttl %d s\n", sp.cache_ttl_s);

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0) {
    }
    fprintf(stderr, "camserve serve: %s: draining\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    rc = 0;
out:
    if (rc) cli_fail("serve", &err);
    /* stop accepting, finish what the service holds (<= 7 s), then let the
     * answers go out (<= 2 s): well inside a 10 s termination grace period */
    cs_http_quiesce(http);
    cs_svc_stop(svc, 7000);
    cs_http_stop(http, 2000);
    cs_http_free(http);
    cs_svc_free(svc);
    if (!rc) fprintf(stderr, "camserve serve: stopped\n");
    free(env_models);
    free(env_labels);
    cli_free(opts, O_N);
    return rc;
}
