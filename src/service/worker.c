/* The service's inference workers: each takes the oldest job and every
 * compatible one queued behind it (dynamic batching), runs them on its own
 * session of the model, and hands them to the prep pool's post stage.
 * ScoreCAM / AblationCAM runs are watched and stopped when nobody can use
 * them (run_stop). */
#include "service/service_internal.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool compatible(const job *a, const job *b) {
    if (a->model != b->model || a->kind != b->kind) return false;
    if (a->kind == CS_SVC_CLASSIFY) return true;
    const cs_explain_options *x = &a->eo, *y = &b->eo;
    return x->method == y->method && x->nlayers == y->nlayers &&
           !memcmp(x->layers, y->layers, sizeof(int) * (size_t)x->nlayers) &&
           x->class_mode == y->class_mode &&
           (x->class_mode != CS_CLASS_INDEX || x->class_index == y->class_index) &&
           x->aug_smooth == y->aug_smooth && x->eigen_smooth == y->eigen_smooth;
}

/* Whether j's answer can still be read by its client (s->mu held). */
static bool job_waiting(job *j, double now) {
    if (!j->gone && j->client_gone && j->client_gone(j->ctx)) j->gone = true;
    return !j->gone && now < j->deadline;
}

/* Whether nobody will read j's answer because its client, and the client
 * of every identical request waiting for it, has gone (s->mu held).  Asked
 * of a ScoreCAM / AblationCAM job before a worker runs it: such a run is
 * seconds of a worker, and a UI user who switched to another method while
 * it waited has closed its request.  Only those jobs are asked, as only
 * their runs are watched (run_stop): a client that half-closes after a
 * request reads as gone too, and is answered in full for every other
 * method (docs/api.md). */
static bool job_abandoned(job *j, double now) {
    if (job_waiting(j, now) || !j->gone) return false;
    for (job *f = j->followers; f; f = f->next)
        if (job_waiting(f, now) || !f->gone) return false;
    return true;
}

/* A ScoreCAM / AblationCAM job that no client waits for (s->mu held). */
static bool run_unwanted(job *j, double now) {
    return j->kind == CS_SVC_EXPLAIN && svc_slow_method(j->eo.method) && job_abandoned(j, now);
}

/* Answers each job of list (run_unwanted's, chained by next) without
 * running it.  s->mu not held. */
static void finish_skipped(cs_svc *s, job *list) {
    for (job *j = list, *nx; j; j = nx) {
        nx = j->next;
        j->next = NULL;
        char msg[160];
        snprintf(msg, sizeof msg,
                 "client gone: the connection was closed while this %s request waited for a worker; it was not run",
                 cs_cam_method_name(j->eo.method));
        svc_fail_job(j, CS_SVC_GONE, CS_ECANCELED, msg);
        pthread_mutex_lock(&s->mmu);
        s->runs_skipped++;
        pthread_mutex_unlock(&s->mmu);
        svc_finish_job(s, j, NULL);
    }
}

/* Moves compatible jobs from the infer queue into batch (s->mu held); a
 * ScoreCAM / AblationCAM nobody waits for any more goes onto *skipped
 * instead (chained by next), to be finished unrun (finish_skipped). */
static void gather(cs_svc *s, job **batch, int *n, int max, job **skipped) {
    job *prev = NULL;
    const double now = cs_now_ms();
    for (job *j = s->infer_head, *nx; j && *n < max; j = nx) {
        nx = j->next;
        if (compatible(batch[0], j)) {
            if (prev) prev->next = nx;
            else s->infer_head = nx;
            if (s->infer_tail == j) s->infer_tail = prev;
            s->infer_len--;
            if (run_unwanted(j, now)) {
                j->next = *skipped;
                *skipped = j;
            } else {
                j->next = NULL;
                batch[(*n)++] = j;
            }
        } else {
            prev = j;
        }
    }
}

/* ScoreCAM and AblationCAM run a forward pass per channel of the layer:
 * ScoreCAM's 2048 through the whole of ResNet-50 take most of a minute on
 * 2 cores.  Such a run stops (explain's cancel hook) once nobody can use
 * its result any more -- every job of the batch, and every identical
 * request waiting for it (answered at their own deadlines by the prep
 * threads' sweep), is past its deadline or has lost its client
 * (job_waiting) -- or once cs_svc_stop's drain is over, so that a shutdown
 * is not held up by a run nobody will see.
 *
 * It also stops as soon as its pace shows it cannot end in time: the first
 * run of a kind has no run_cost to be refused by at admission, and used to
 * hold its worker until the deadline all the same (30 s of the default
 * timeout for a ScoreCAM of ResNet-50 that needs ~50 s).  The pace is
 * taken from the first chunk's end on: what came before -- the plain
 * forward and backward, the chunk plan's build, cold caches -- made the
 * default model's run look three times its length.  It is judged only
 * after EARLY_LOOK of the time the run had, and the run is stopped only
 * when even EARLY_MARGIN x that pace would end past the last deadline
 * waiting for it. */
#define EARLY_LOOK 0.1
#define EARLY_MARGIN 1.2

typedef struct run_watch {
    cs_svc *s;
    job **batch;
    int n;
    double t0;              /* when the run began (cs_now_ms) */
    double mark_t, mark_d;  /* the first poll after some forward items: when, and the fraction then */
    cs_svc_outcome why;     /* CS_SVC_TIMEOUT or CS_SVC_STOPPING, once stopped */
    double done;            /* the fraction of the forward items run by then */
    double whole;           /* by then, the whole run's projected length (ms); 0 before any item */
    bool early;             /* stopped by its pace, before the deadlines */
} run_watch;

/* The whole run's projected length at now, with the fraction done
 * (0 when nothing ran yet): the pace since the mark when there is one,
 * else the pace since the start. */
static double run_projection(const run_watch *w, double now, double done) {
    if (done <= 0) return 0;
    if (done > w->mark_d && w->mark_d > 0) return now - w->t0 + (1 - done) * (now - w->mark_t) / (done - w->mark_d);
    return (now - w->t0) / done;
}

static int run_stop(void *ctx, double done) {
    run_watch *w = ctx;
    const double now = cs_now_ms();
    double last = 0; /* the last deadline of a request still waiting for the run */
    pthread_mutex_lock(&w->s->mu);
    const bool quit = w->s->quit;
    for (int i = 0; i < w->n; i++) {
        job *j = w->batch[i];
        if (job_waiting(j, now)) last = fmax(last, j->deadline);
        for (job *f = j->followers; f; f = f->next)
            if (job_waiting(f, now)) last = fmax(last, f->deadline);
    }
    pthread_mutex_unlock(&w->s->mu);
    if (done > 0 && w->mark_d <= 0) {
        w->mark_t = now;
        w->mark_d = done;
    }
    const double whole = run_projection(w, now, done);
    w->early = !quit && now < last && done > w->mark_d && now - w->t0 >= EARLY_LOOK * (last - w->t0) &&
               now + (w->t0 + whole - now) / EARLY_MARGIN > last;
    if (now < last && !quit && !w->early) return 0;
    w->why = quit ? CS_SVC_STOPPING : CS_SVC_TIMEOUT; /* a job whose client has gone: CS_SVC_GONE */
    w->done = done;
    w->whole = whole;
    return 1;
}

static void run_batch(cs_svc *s, cs_session *sess, job **batch, int n) {
    svc_model *sm = batch[0]->model;
    const int H = sm->pp.crop_h, W = sm->pp.crop_w, ncls = sm->info.num_classes;
    const size_t per = (size_t)3 * H * W;
    /* Batch sizes are padded (the last image repeated, its outputs dropped):
     * a graph exported with a fixed batch runs in multiples of it, a dynamic
     * one in powers of two, so a session builds at most log2(max_batch)+1
     * plans per layer set instead of one per size -- a plan costs about
     * three inferences to build and a session keeps only a few. */
    int nb = n;
    if (sm->b0 > 0) nb = (n + sm->b0 - 1) / sm->b0 * sm->b0;
    else
        while (nb & (nb - 1)) nb += nb & -nb;
    float *in = malloc((size_t)nb * per * sizeof(float));
    cs_error err = {0};
    cs_status st = CS_OK;
    cs_explain_output ex = {0};
    float *logits = NULL;
    double t0 = cs_now_ms();
    if (!in) {
        st = cs_errorf(&err, CS_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < nb; i++) memcpy(in + (size_t)i * per, batch[i < n ? i : n - 1]->input, per * sizeof(float));
    for (int i = 0; i < n; i++) {
        batch[i]->tm.queue += t0 - batch[i]->t_ready;
        if (!batch[i]->prep) free(batch[i]->input); /* else a view of the prep cache's entry */
        batch[i]->input = NULL;
    }
    if (batch[0]->kind == CS_SVC_CLASSIFY) {
        logits = malloc((size_t)nb * ncls * sizeof(float));
        if (!logits) st = cs_errorf(&err, CS_ENOMEM, "out of memory");
        else st = cs_session_run(sess, in, nb, logits, &err);
        double dt = cs_now_ms() - t0;
        for (int i = 0; i < n && st == CS_OK; i++) {
            batch[i]->tm.inference = dt;
            batch[i]->logits = malloc((size_t)ncls * sizeof(float));
            if (!batch[i]->logits) st = cs_errorf(&err, CS_ENOMEM, "out of memory");
            else memcpy(batch[i]->logits, logits + (size_t)i * ncls, (size_t)ncls * sizeof(float));
        }
    } else {
        cs_explain_options eo = batch[0]->eo;
        run_watch watch = {.s = s, .batch = batch, .n = n, .t0 = t0};
        eo.cancel = run_stop;
        eo.cancel_ctx = &watch;
        st = cs_explain_run(sess, sm->m, in, nb, &eo, &ex, &err);
        const double ran = cs_now_ms() - t0;
        /* What one image alone would take: the batch was nb images, and a
         * lone one is padded to the graph's fixed batch. */
        const double per_image = (st == CS_OK ? ran : watch.whole) / nb * (sm->b0 > 0 ? sm->b0 : 1);
        /* stopped because every client of the batch has gone (job_waiting) */
        bool all_gone = st == CS_ECANCELED && watch.why == CS_SVC_TIMEOUT;
        for (int i = 0; i < n; i++) all_gone &= batch[i]->gone;
        /* A run left by its clients early on has too little of a pace to go
         * by (see run_stop), and nothing says it was long: not recorded. */
        if (svc_slow_method(eo.method) && (st == CS_OK || (st == CS_ECANCELED && watch.whole > 0 && !all_gone))) {
            pthread_mutex_lock(&s->mu);
            svc_run_cost_observe(s, batch[0], per_image, st != CS_OK, t0 + ran);
            pthread_mutex_unlock(&s->mu);
        }
        if (st == CS_ECANCELED) {
            for (int i = 0; i < n; i++) batch[i]->tm.cam = ran;
            /* how far it got and where that pace leads, for both timeout messages */
            char pace[160];
            snprintf(pace, sizeof pace,
                     "stopped %.1f s in, %.0f%% of its forward passes done; all of them would take about %.*f s "
                     "at this pace",
                     ran / 1e3, 100 * watch.done, watch.whole < 1e4 ? 1 : 0, watch.whole / 1e3);
            if (watch.why == CS_SVC_STOPPING)
                cs_errorf(&err, CS_ECANCELED, "the server is shutting down");
            else if (watch.early)
                cs_errorf(&err, CS_ECANCELED,
                          "timed out: %s would run past the %d ms request timeout (--timeout-ms), so it was %s; "
                          SLOW_RUN_ADVICE,
                          cs_cam_method_name(eo.method), s->p.timeout_ms, pace);
            else if (watch.whole > 0)
                cs_errorf(&err, CS_ECANCELED,
                          "timed out: %s ran past the %d ms request timeout (--timeout-ms) and was %s",
                          cs_cam_method_name(eo.method), s->p.timeout_ms, pace);
            else
                cs_errorf(&err, CS_ECANCELED,
                          "timed out: %s ran past the %d ms request timeout (--timeout-ms) and was stopped "
                          "before its forward passes began",
                          cs_cam_method_name(eo.method), s->p.timeout_ms);
            cs_error gone = {0};
            cs_errorf(&gone, CS_ECANCELED,
                      "client gone: the connection was closed during this %s run, which was stopped %.1f s in",
                      cs_cam_method_name(eo.method), ran / 1e3);
            for (int i = 0; i < n; i++) {
                const bool g = batch[i]->gone && watch.why == CS_SVC_TIMEOUT;
                batch[i]->outcome = g ? CS_SVC_GONE : watch.why;
                batch[i]->err = g ? gone : err;
            }
            pthread_mutex_lock(&s->mmu);
            s->runs_stopped[watch.why == CS_SVC_STOPPING ? 1 : all_gone ? 2 : 0]++;
            pthread_mutex_unlock(&s->mmu);
            st = CS_OK; /* the outcome is set */
            goto done;
        }
        for (int i = 0; i < n && st == CS_OK; i++) {
            job *j = batch[i];
            size_t im = (size_t)ex.in_h * ex.in_w;
            j->tm.inference = ex.forward_ms;
            j->tm.cam = ex.backward_ms + ex.cam_ms;
            j->logits = malloc((size_t)ncls * sizeof(float));
            j->cam = malloc(im * sizeof(float));
            if (!j->logits || !j->cam) {
                st = cs_errorf(&err, CS_ENOMEM, "out of memory");
                break;
            }
            memcpy(j->logits, ex.logits + (size_t)i * ncls, (size_t)ncls * sizeof(float));
            /* one map per image: class modes top and index only */
            memcpy(j->cam, ex.maps_input + (size_t)i * ex.k * im, im * sizeof(float));
            j->cam_h = ex.in_h;
            j->cam_w = ex.in_w;
            j->class_idx = ex.class_idx[i * ex.k];
        }
    }
done:
    if (st != CS_OK)
        for (int i = 0; i < n; i++) {
            batch[i]->outcome = svc_outcome_of(st);
            batch[i]->err = err;
        }
    cs_explain_output_free(&ex);
    free(logits);
    free(in);
    pthread_mutex_lock(&s->mmu);
    cs_hist_observe(&s->batch, n);
    pthread_mutex_unlock(&s->mmu);
}

/* Worker w's session for version m, rebuilt when the session was made for
 * another version of the same model (after a hot reload).  Worker-owned. */
static cs_session *worker_session(cs_svc *s, int w, svc_model *m, cs_error *err) {
    int k = w * s->nmodels + m->slot;
    if (s->sess_model[k] != m) {
        cs_session_free(s->sessions[k]);
        s->sessions[k] = NULL;
        svc_model_release(s->sess_model[k]);
        s->sess_model[k] = NULL;
        if (cs_session_create(m->m, &s->sessions[k], err) != CS_OK) return NULL;
        svc_model_retain(m);
        s->sess_model[k] = m;
    }
    return s->sessions[k];
}

/* Runs the default explanation (GradCAM at the default layer, batch 1) once
 * on a blank input, so that the first request does not pay for building the
 * plans, oneDNN's primitives and this thread's OpenMP team.  ResNet-50 on
 * 2 cores, bench/first_request.sh, 4 rounds: the first request took 69.5 ms
 * against 57.2 for the next ones, with this 61.7 against 57.7, for ~30 ms
 * more before ready.  Only the default explanation: other layers, methods
 * and /v1/classify build their plans on first use.  Best effort: a model
 * this fails on fails the same way on its first request, which says why. */
static void warm_session(cs_session *sess, const svc_model *sm) {
    cs_explain_options eo = cs_explain_default_options();
    cs_error err = {0};
    if (cs_explain_parse_layers(sm->m, "auto", &eo, &err) != CS_OK) return;
    int b = sm->b0 > 0 ? sm->b0 : 1;
    float *in = calloc((size_t)b * 3 * sm->pp.crop_h * sm->pp.crop_w, sizeof(float));
    if (!in) return;
    cs_explain_output ex = {0};
    (void)cs_explain_run(sess, sm->m, in, b, &eo, &ex, &err);
    cs_explain_output_free(&ex);
    free(in);
}

/* Whether one of worker w's sessions is built on a retired version. */
static bool sessions_stale(cs_svc *s, int w) {
    bool stale = false;
    pthread_mutex_lock(&s->vmu);
    for (int i = 0; i < s->nmodels && !stale; i++) {
        svc_model *sm = s->sess_model[w * s->nmodels + i];
        stale = sm && sm != s->slots[i].cur;
    }
    pthread_mutex_unlock(&s->vmu);
    return stale;
}

static void refresh_sessions(cs_svc *s, int w) {
    for (int i = 0; i < s->nmodels; i++) {
        pthread_mutex_lock(&s->vmu);
        svc_model *cur = s->slots[i].cur;
        svc_model_retain(cur);
        pthread_mutex_unlock(&s->vmu);
        int k = w * s->nmodels + i;
        if (s->sess_model[k] && s->sess_model[k] != cur) {
            cs_error err = {0};
            cs_session *sess = worker_session(s, w, cur, &err);
            if (sess) {
                warm_session(sess, cur); /* while idle, not on the next request */
            } else { /* tried again on the next batch */
                cs_session_free(s->sessions[k]);
                s->sessions[k] = NULL;
                svc_model_release(s->sess_model[k]);
                s->sess_model[k] = NULL;
            }
        }
        svc_model_release(cur);
    }
}

void *svc_worker_main(void *arg) {
    worker_arg wa = *(worker_arg *)arg;
    free(arg);
    cs_svc *s = wa.s;
    /* OpenMP's thread count is per calling thread: each worker sets its own */
    omp_set_num_threads(s->p.threads);
    for (int i = 0; i < s->nmodels; i++) {
        const int k = wa.idx * s->nmodels + i;
        warm_session(s->sessions[k], s->sess_model[k]);
    }
    job *batch[256];
    pthread_mutex_lock(&s->mu);
    if (--s->warming == 0) pthread_cond_broadcast(&s->warm_cv);
    for (;;) {
        while (!s->infer_head && !s->quit) {
            if (sessions_stale(s, wa.idx)) { /* a model was reloaded: move to it while idle */
                pthread_mutex_unlock(&s->mu);
                refresh_sessions(s, wa.idx);
                pthread_mutex_lock(&s->mu);
                continue;
            }
            pthread_cond_wait(&s->work_cv, &s->mu);
        }
        if (!s->infer_head) break; /* quit with nothing left */
        job *first = svc_list_pop(&s->infer_head, &s->infer_tail);
        s->infer_len--;
        if (cs_now_ms() >= first->deadline) {
            svc_fail_job(first, CS_SVC_TIMEOUT, CS_ELIMIT, "timed out waiting for a worker");
            pthread_mutex_unlock(&s->mu);
            svc_finish_job(s, first, NULL);
            pthread_mutex_lock(&s->mu);
            continue;
        }
        if (run_unwanted(first, cs_now_ms())) {
            pthread_mutex_unlock(&s->mu);
            finish_skipped(s, first);
            pthread_mutex_lock(&s->mu);
            continue;
        }
        int n = 1;
        batch[0] = first;
        job *skipped = NULL;
        double until = first->t_ready + s->p.batch_window_ms;
        for (;;) {
            gather(s, batch, &n, s->p.max_batch, &skipped);
            if (n >= s->p.max_batch || s->quit || cs_now_ms() >= until) break;
            /* the window is for requests still being decoded: when there
             * are none, waiting only adds latency (a lone request at light
             * load runs at once) */
            if (s->prep_len + s->prepping == 0) break;
            /* taking jobs made room ahead: let the prep pool decode them */
            if (s->prep_len) pthread_cond_broadcast(&s->prep_cv);
            struct timespec ts;
            svc_abs_deadline(&ts, until - cs_now_ms());
            pthread_cond_timedwait(&s->work_cv, &s->mu, &ts);
        }
        s->running += n;
        if (s->prep_len) pthread_cond_signal(&s->prep_cv); /* room ahead again */
        pthread_mutex_unlock(&s->mu);
        finish_skipped(s, skipped);
        cs_error serr = {0};
        double t_run = cs_now_ms();
        cs_session *sess = worker_session(s, wa.idx, first->model, &serr);
        if (sess) {
            run_batch(s, sess, batch, n);
            t_run = (cs_now_ms() - t_run) / n;
        } else {
            t_run = 0;
            for (int i = 0; i < n; i++) {
                batch[i]->outcome = CS_SVC_INTERNAL;
                batch[i]->err = serr;
            }
        }
        pthread_mutex_lock(&s->mu);
        s->running -= n;
        if (t_run > 0) {
            svc_cost_observe(&s->job_ms, t_run);
            for (int i = 0; i < n; i++)
                svc_cost_observe(&s->cost_ms[batch[i]->model->slot][svc_cost_class(batch[i])], t_run);
        }
        for (int i = 0; i < n; i++) {
            svc_list_push(&s->post_head, &s->post_tail, batch[i]);
            s->post_len++;
        }
        pthread_cond_broadcast(&s->prep_cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

