/* The helper team (see team.h).
 *
 * One mutex guards everything: a batch is a handful of tasks of a
 * millisecond or so each, so the lock is taken a few times per millisecond
 * at most and a lock-free queue would buy nothing.  Open batches (tasks
 * left to claim) are chained in arrival order; a batch leaves the chain
 * when its last task is claimed, and lives on the caller's stack until the
 * caller has seen every task finish. */
#include "util/team.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct batch {
    struct batch *next;
    void (*fn)(void *arg, int i);
    void *arg;
    int n, claimed, finished;
    pthread_cond_t done; /* signalled when finished reaches n */
} batch;

struct cs_team {
    pthread_mutex_t mu;
    pthread_cond_t work;
    batch *head, *tail; /* open batches */
    int idle, stop, nthreads;
    pthread_t threads[];
};

/* Claims the next task of the oldest open batch (under mu). */
static batch *claim(cs_team *t, int *i) {
    batch *b = t->head;
    if (!b) return NULL;
    *i = b->claimed++;
    if (b->claimed == b->n) {
        t->head = b->next;
        if (!t->head) t->tail = NULL;
    }
    return b;
}

/* Runs task i of b and counts it finished (called and returns under mu). */
static void run_one(cs_team *t, batch *b, int i) {
    pthread_mutex_unlock(&t->mu);
    b->fn(b->arg, i);
    pthread_mutex_lock(&t->mu);
    if (++b->finished == b->n) pthread_cond_signal(&b->done);
}

static void *helper_main(void *arg) {
    cs_team *t = arg;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        int i;
        batch *b = claim(t, &i);
        if (b) {
            t->idle--;
            run_one(t, b, i);
            t->idle++;
            continue;
        }
        if (t->stop) break;
        pthread_cond_wait(&t->work, &t->mu);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

cs_status cs_team_create(int helpers, cs_team **out, cs_error *err) {
    *out = NULL;
    if (helpers < 0 || helpers > 256) return cs_errorf(err, CS_EINVAL, "team: %d helpers (0..256)", helpers);
    cs_team *t = calloc(1, sizeof *t + sizeof(pthread_t) * (size_t)helpers);
    if (!t) return cs_errorf(err, CS_ENOMEM, "out of memory");
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->work, NULL);
    for (; t->nthreads < helpers; t->nthreads++) {
        pthread_mutex_lock(&t->mu);
        t->idle++;
        pthread_mutex_unlock(&t->mu);
        if (pthread_create(&t->threads[t->nthreads], NULL, helper_main, t) != 0) {
            pthread_mutex_lock(&t->mu);
            t->idle--;
            pthread_mutex_unlock(&t->mu);
            cs_team_destroy(t);
            return cs_errorf(err, CS_EINTERNAL, "team: cannot start helper thread %d of %d",
                             t->nthreads + 1, helpers);
        }
    }
    *out = t;
    return CS_OK;
}

void cs_team_destroy(cs_team *t) {
    if (!t) return;
    pthread_mutex_lock(&t->mu);
    t->stop = 1;
    pthread_cond_broadcast(&t->work);
    pthread_mutex_unlock(&t->mu);
    for (int i = 0; i < t->nthreads; i++) pthread_join(t->threads[i], NULL);
    pthread_cond_destroy(&t->work);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

int cs_team_idle(cs_team *t) {
    if (!t) return 0;
    pthread_mutex_lock(&t->mu);
    int n = t->idle;
    pthread_mutex_unlock(&t->mu);
    return n;
}

void cs_team_run(cs_team *t, int n, void (*fn)(void *arg, int i), void *arg) {
    if (n <= 0) return;
    if (!t || t->nthreads == 0 || n == 1) {
        for (int i = 0; i < n; i++) fn(arg, i);
        return;
    }
    batch b = {.fn = fn, .arg = arg, .n = n};
    pthread_cond_init(&b.done, NULL);
    pthread_mutex_lock(&t->mu);
    if (t->tail) t->tail->next = &b;
    else t->head = &b;
    t->tail = &b;
    /* wake no more helpers than there are tasks beyond the caller's first */
    for (int k = 1; k < n && k <= t->idle; k++) pthread_cond_signal(&t->work);
    /* The caller claims from its own batch only: taking an older batch's
     * task could keep it busy long after its own finished. */
    while (b.claimed < b.n) {
        int i = b.claimed++;
        if (b.claimed == b.n) { /* unlink b: it is no longer open */
            batch **pp = &t->head, *prev = NULL;
            while (*pp != &b) {
                prev = *pp;
                pp = &(*pp)->next;
            }
            *pp = b.next;
            if (t->tail == &b) t->tail = prev;
        }
        run_one(t, &b, i);
    }
    while (b.finished < b.n) pthread_cond_wait(&b.done, &t->mu);
    pthread_mutex_unlock(&t->mu);
    pthread_cond_destroy(&b.done);
}
