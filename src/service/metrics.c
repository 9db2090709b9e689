/* The service's counters and histograms as Prometheus text.  They live
 * under their own lock (s->mmu): /metrics never waits for the queue lock of
 * a busy service. */
#include "service/service_internal.h"

#include <stdio.h>
#include <string.h>

static const char *const STAGE_NAMES[NSTAGES] = {"queue", "decode", "preprocess", "inference",
                                                 "cam", "encode", "total"};

void svc_count_outcome(cs_svc *s, cs_svc_outcome o, bool rejected) {
    pthread_mutex_lock(&s->mmu);
    if (rejected) s->rejected[o]++;
    else s->completed[o]++;
    pthread_mutex_unlock(&s->mmu);
}

void cs_svc_write_metrics(cs_svc *s, FILE *f) {
    pthread_mutex_lock(&s->mu);
    int prep = s->prep_len, infer = s->infer_len, post = s->post_len, running = s->running,
        inflight = s->inflight;
    double queued_ms = s->queued_ms;
    double cost[CS_SVC_MAX_MODELS][1 + CS_CAM_METHOD_COUNT];
    memcpy(cost, s->cost_ms, sizeof cost);
    pthread_mutex_unlock(&s->mu);
    size_t rb = 0, re = 0, ib = 0, ie = 0;
    uint64_t rev = 0, iev = 0;
    svc_lru_stats(s->results, &rb, &re, &rev);
    svc_lru_stats(s->images, &ib, &ie, &iev);
    size_t pb = 0, pe = 0;
    svc_lru_stats(s->prepped, &pb, &pe, NULL);

    fprintf(f, "# HELP camserve_queue_depth Requests waiting, by pipeline stage.\n"
               "# TYPE camserve_queue_depth gauge\n"
               "camserve_queue_depth{stage=\"prep\"} %d\ncamserve_queue_depth{stage=\"infer\"} %d\n"
               "camserve_queue_depth{stage=\"post\"} %d\n",
            prep, infer, post);
    fprintf(f, "# HELP camserve_running Requests inside a network run.\n# TYPE camserve_running gauge\n"
               "camserve_running %d\n", running);
    fprintf(f, "# HELP camserve_inflight Requests admitted and not yet answered.\n"
               "# TYPE camserve_inflight gauge\ncamserve_inflight %d\n"
               "# HELP camserve_inflight_limit Admission bound (queue + workers x max_batch).\n"
               "# TYPE camserve_inflight_limit gauge\ncamserve_inflight_limit %d\n",
            inflight, s->p.queue + s->p.workers * s->p.max_batch);
    fprintf(f, "# HELP camserve_queued_work_seconds Expected worker time of the admitted requests (admission refuses past the timeout).\n"
               "# TYPE camserve_queued_work_seconds gauge\ncamserve_queued_work_seconds %.6f\n",
            queued_ms / 1e3);
    fprintf(f, "# HELP camserve_job_cost_seconds Worker time per request, moving average by model and kind (classify or the CAM method).\n"
               "# TYPE camserve_job_cost_seconds gauge\n");
    pthread_mutex_lock(&s->vmu);
    for (int mi = 0; mi < s->nmodels; mi++)
        for (int c = 0; c <= CS_CAM_METHOD_COUNT; c++)
            if (cost[mi][c] > 0 && s->slots[mi].cur)
                fprintf(f, "camserve_job_cost_seconds{model=\"%s\",kind=\"%s\"} %.6f\n", s->slots[mi].cur->name,
                        c == 0 ? "classify" : cs_cam_method_name((cs_cam_method)(c - 1)), cost[mi][c] / 1e3);
    pthread_mutex_unlock(&s->vmu);
    /* the disk tier's figures are its store's, shared by every process on the directory */
    cs_cache_stats ts[CS_CACHE_NTIERS];
    for (int t = 0; t < CS_CACHE_NTIERS; t++) cs_cache_get_stats(s->tiers, (cs_cache_tier)t, &ts[t]);
    const cs_cache_stats *dk = &ts[CS_CACHE_TIER_DISK], *rd = &ts[CS_CACHE_TIER_REDIS];
    fprintf(f, "# HELP camserve_cache_bytes Bytes held by each cache tier.\n# TYPE camserve_cache_bytes gauge\n"
               "camserve_cache_bytes{tier=\"memory\"} %zu\ncamserve_cache_bytes{tier=\"images\"} %zu\n",
            rb, ib);
    fprintf(f, "camserve_cache_bytes{tier=\"prepared\"} %zu\n", pb);
    if (dk->enabled) fprintf(f, "camserve_cache_bytes{tier=\"disk\"} %llu\n", (unsigned long long)dk->bytes);
    fprintf(f, "# HELP camserve_cache_entries Entries held by each cache tier.\n# TYPE camserve_cache_entries gauge\n"
               "camserve_cache_entries{tier=\"memory\"} %zu\ncamserve_cache_entries{tier=\"images\"} %zu\n",
            re, ie);
    fprintf(f, "camserve_cache_entries{tier=\"prepared\"} %zu\n", pe);
    if (s->p.gpu_decode && s->gpu_device >= 0)
        fprintf(f, "# HELP camserve_gpu_decode_total JPEGs for a model on a GPU: decoded and preprocessed there, by "
                   "nvJPEG decoder, or left to the CPU.\n# TYPE camserve_gpu_decode_total counter\n"
                   "camserve_gpu_decode_total{path=\"hardware\"} %ld\ncamserve_gpu_decode_total{path=\"gpu_hybrid\"} %ld\n"
                   "camserve_gpu_decode_total{path=\"cpu\"} %ld\n",
                atomic_load(&s->gpu_prepped[0]), atomic_load(&s->gpu_prepped[1]), atomic_load(&s->gpu_left));
    if (dk->enabled) fprintf(f, "camserve_cache_entries{tier=\"disk\"} %llu\n", (unsigned long long)dk->entries);
    fprintf(f, "# HELP camserve_cache_evictions_total Entries evicted to stay within the byte bound.\n"
               "# TYPE camserve_cache_evictions_total counter\n"
               "camserve_cache_evictions_total{tier=\"memory\"} %llu\ncamserve_cache_evictions_total{tier=\"images\"} %llu\n",
            (unsigned long long)rev, (unsigned long long)iev);
    if (dk->enabled)
        fprintf(f, "camserve_cache_evictions_total{tier=\"disk\"} %llu\n", (unsigned long long)dk->evictions);
    fprintf(f, "# HELP camserve_cache_limit_bytes Byte bound of each cache tier.\n# TYPE camserve_cache_limit_bytes gauge\n"
               "camserve_cache_limit_bytes{tier=\"memory\"} %zu\ncamserve_cache_limit_bytes{tier=\"images\"} %zu\n",
            s->p.cache_mem_bytes, s->p.image_store_bytes);
    if (dk->enabled) fprintf(f, "camserve_cache_limit_bytes{tier=\"disk\"} %llu\n", (unsigned long long)dk->limit);
    static const char *const TIER_METRICS[][2] = {
        {"camserve_cache_errors_total", "Tier failures answered as misses or skipped writes."},
        {"camserve_cache_corrupt_total", "Stored values dropped because their checksum or framing was wrong."},
        {"camserve_cache_expired_total", "Stored values older than the TTL."},
        {"camserve_cache_writes_total", "Values written to each tier."},
    };
    for (int m = 0; m < 4; m++) {
        fprintf(f, "# HELP %s %s\n# TYPE %s counter\n", TIER_METRICS[m][0], TIER_METRICS[m][1], TIER_METRICS[m][0]);
        for (int t = 0; t < CS_CACHE_NTIERS; t++) {
            if (!ts[t].enabled) continue;
            uint64_t v = m == 0 ? ts[t].errors : m == 1 ? ts[t].corrupt : m == 2 ? ts[t].expired : ts[t].puts;
            fprintf(f, "%s{tier=\"%s\"} %llu\n", TIER_METRICS[m][0], cs_cache_tier_name((cs_cache_tier)t),
                    (unsigned long long)v);
        }
    }
    if (rd->enabled)
        fprintf(f, "# HELP camserve_cache_up Whether the tier answers (Redis: 0 while backing off after a failure).\n"
                   "# TYPE camserve_cache_up gauge\ncamserve_cache_up{tier=\"redis\"} %d\n", rd->up);
    fprintf(f, "# HELP camserve_model_load_seconds Time to load each model (its current version).\n"
               "# TYPE camserve_model_load_seconds gauge\n");
    pthread_mutex_lock(&s->vmu);
    for (int i = 0; i < s->nmodels; i++)
        fprintf(f, "camserve_model_load_seconds{model=\"%s\"} %.6f\n", s->slots[i].cur->name,
                s->slots[i].cur->info.load_ms / 1e3);
    fprintf(f, "# HELP camserve_model_reloads_total Hot reloads of a changed model file, by result.\n"
               "# TYPE camserve_model_reloads_total counter\n");
    for (int i = 0; i < s->nmodels; i++)
        fprintf(f, "camserve_model_reloads_total{model=\"%s\",result=\"ok\"} %llu\n"
                   "camserve_model_reloads_total{model=\"%s\",result=\"failed\"} %llu\n",
                s->slots[i].cur->name, (unsigned long long)s->slots[i].reloads, s->slots[i].cur->name,
                (unsigned long long)s->slots[i].reload_failures);
    pthread_mutex_unlock(&s->vmu);

    pthread_mutex_lock(&s->mmu);
    fprintf(f, "# HELP camserve_cache_hits_total Result cache hits by tier.\n# TYPE camserve_cache_hits_total counter\n"
               "camserve_cache_hits_total{tier=\"memory\"} %llu\n", (unsigned long long)s->hits);
    for (int t = 0; t < CS_CACHE_NTIERS; t++)
        if (ts[t].enabled)
            fprintf(f, "camserve_cache_hits_total{tier=\"%s\"} %llu\n", cs_cache_tier_name((cs_cache_tier)t),
                    (unsigned long long)ts[t].hits);
    fprintf(f, "# HELP camserve_cache_misses_total Result cache misses (all tiers).\n# TYPE camserve_cache_misses_total counter\n"
               "camserve_cache_misses_total %llu\n"
               "# HELP camserve_cache_tier_misses_total Lookups each tier could not answer.\n"
               "# TYPE camserve_cache_tier_misses_total counter\n"
               "camserve_cache_tier_misses_total{tier=\"memory\"} %llu\n",
            (unsigned long long)s->misses,
            (unsigned long long)(s->misses + (dk->enabled ? dk->hits : 0) + (rd->enabled ? rd->hits : 0)));
    for (int t = 0; t < CS_CACHE_NTIERS; t++)
        if (ts[t].enabled)
            fprintf(f, "camserve_cache_tier_misses_total{tier=\"%s\"} %llu\n", cs_cache_tier_name((cs_cache_tier)t),
                    (unsigned long long)ts[t].misses);
    fprintf(f, "# HELP camserve_cache_coalesced_total Requests that waited for an identical one being computed.\n"
               "# TYPE camserve_cache_coalesced_total counter\ncamserve_cache_coalesced_total %llu\n",
            (unsigned long long)s->coalesced);
    fprintf(f, "# HELP camserve_service_requests_total Requests the service finished, by outcome.\n"
               "# TYPE camserve_service_requests_total counter\n");
    for (int o = 0; o <= CS_SVC_GONE; o++)
        fprintf(f, "camserve_service_requests_total{outcome=\"%s\"} %llu\n",
                cs_svc_outcome_name((cs_svc_outcome)o), (unsigned long long)s->completed[o]);
    fprintf(f, "# HELP camserve_service_rejected_total Requests refused before queuing, by reason.\n"
               "# TYPE camserve_service_rejected_total counter\n");
    for (int o = 1; o <= CS_SVC_INTERNAL; o++)
        fprintf(f, "camserve_service_rejected_total{reason=\"%s\"} %llu\n",
                cs_svc_outcome_name((cs_svc_outcome)o), (unsigned long long)s->rejected[o]);
    fprintf(f, "# HELP camserve_runs_stopped_total ScoreCAM/AblationCAM runs stopped before the end, by reason.\n"
               "# TYPE camserve_runs_stopped_total counter\n"
               "camserve_runs_stopped_total{reason=\"timeout\"} %llu\n"
               "camserve_runs_stopped_total{reason=\"shutdown\"} %llu\n"
               "camserve_runs_stopped_total{reason=\"client_gone\"} %llu\n",
            (unsigned long long)s->runs_stopped[0], (unsigned long long)s->runs_stopped[1],
            (unsigned long long)s->runs_stopped[2]);
    fprintf(f, "# HELP camserve_runs_skipped_total ScoreCAM/AblationCAM requests not run: every client waiting "
               "for the run had gone before a worker took it.\n"
               "# TYPE camserve_runs_skipped_total counter\n"
               "camserve_runs_skipped_total %llu\n",
            (unsigned long long)s->runs_skipped);
    fprintf(f, "# HELP camserve_stage_seconds Time per pipeline stage of computed (missed) requests.\n"
               "# TYPE camserve_stage_seconds histogram\n");
    for (int i = 0; i < NSTAGES; i++) {
        char lab[64];
        snprintf(lab, sizeof lab, "stage=\"%s\"", STAGE_NAMES[i]);
        cs_hist_write(f, "camserve_stage_seconds", lab, &s->stage[i]);
    }
    fprintf(f, "# HELP camserve_batch_size Requests per network run.\n# TYPE camserve_batch_size histogram\n");
    cs_hist_write(f, "camserve_batch_size", "", &s->batch);
    pthread_mutex_unlock(&s->mmu);
}

