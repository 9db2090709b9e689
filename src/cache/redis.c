/* The Redis tier (see cache.h, cache_internal.h): a small pool of blocking
 * hiredis connections, each behind its own mutex, picked round-robin.
 *
 * Every connect and command has the short timeout the caller configured.
 * Any failure -- refused, timed out, a reply that is not what GET/SET answer
 * -- drops that connection and puts the whole tier in backoff: for the next
 * 100 ms (doubling up to 5 s on repeated failures) every call returns at once
 * as a miss; the first call after the backoff reconnects.  A slow or dead
 * Redis therefore costs at most one timeout per backoff period.
 *
 * Keys are "camserve:v1:" + hex key; values are the framed bytes. */
#include "cache/cache_internal.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

typedef struct slot {
    pthread_mutex_t mu;
    redisContext *c;
} slot;

struct cache_redis {
    char host[256];
    int port, db, timeout_ms;
    int nslots;
    slot *slots;
    atomic_uint next;
    pthread_mutex_t bmu; /* backoff state */
    double down_until;
    int backoff_ms;
};

static void key_string(const uint8_t key[32], char out[12 + 65]) {
    static const char digits[] = "0123456789abcdef";
    memcpy(out, "camserve:v1:", 12);
    for (int i = 0; i < 32; i++) {
        out[12 + 2 * i] = digits[key[i] >> 4];
        out[12 + 2 * i + 1] = digits[key[i] & 15];
    }
    out[12 + 64] = '\0';
}

cs_status cache_redis_open(const char *url, int timeout_ms, int connections, cache_redis **out,
                           cs_error *err) {
    *out = NULL;
    if (strncmp(url, "redis://", 8) != 0)
        return cs_errorf(err, CS_EINVAL, "--redis must look like redis://HOST:PORT[/DB], got '%.200s'", url);
    const char *p = url + 8, *at = strchr(p, '@');
    if (at) return cs_errorf(err, CS_EINVAL, "--redis: credentials in the URL are not supported");
    cache_redis *r = calloc(1, sizeof *r);
    if (!r) return cs_errorf(err, CS_ENOMEM, "out of memory");
    r->port = 6379;
    size_t hl = strcspn(p, ":/");
    if (hl == 0 || hl >= sizeof r->host) {
        free(r);
        return cs_errorf(err, CS_EINVAL, "--redis: no host in '%.200s'", url);
    }
    memcpy(r->host, p, hl);
    p += hl;
    char *end;
    if (*p == ':') {
        long v = strtol(p + 1, &end, 10);
        if (end == p + 1 || v < 1 || v > 65535 || (*end && *end != '/')) {
            free(r);
            return cs_errorf(err, CS_EINVAL, "--redis: bad port in '%.200s'", url);
        }
        r->port = (int)v;
        p = end;
    }
    if (*p == '/' && p[1]) {
        long v = strtol(p + 1, &end, 10);
        if (end == p + 1 || *end || v < 0 || v > 1000) {
            free(r);
            return cs_errorf(err, CS_EINVAL, "--redis: bad database number in '%.200s'", url);
        }
        r->db = (int)v;
    }
    r->timeout_ms = timeout_ms > 0 ? timeout_ms : 50;
    r->nslots = connections > 0 ? connections : 4;
    r->slots = calloc((size_t)r->nslots, sizeof *r->slots);
    if (!r->slots) {
        free(r);
        return cs_errorf(err, CS_ENOMEM, "out of memory");
    }
    for (int i = 0; i < r->nslots; i++) pthread_mutex_init(&r->slots[i].mu, NULL);
    pthread_mutex_init(&r->bmu, NULL);
    *out = r;
    return CS_OK;
}

void cache_redis_close(cache_redis *r) {
    if (!r) return;
    for (int i = 0; i < r->nslots; i++) {
        if (r->slots[i].c) redisFree(r->slots[i].c);
        pthread_mutex_destroy(&r->slots[i].mu);
    }
    pthread_mutex_destroy(&r->bmu);
    free(r->slots);
    free(r);
}

static int in_backoff(cache_redis *r) {
    pthread_mutex_lock(&r->bmu);
    int down = cs_now_ms() < r->down_until;
    pthread_mutex_unlock(&r->bmu);
    return down;
}

static void failed(cache_redis *r, slot *s) {
    if (s->c) redisFree(s->c);
    s->c = NULL;
    pthread_mutex_lock(&r->bmu);
    r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : 100;
    if (r->backoff_ms > 5000) r->backoff_ms = 5000;
    r->down_until = cs_now_ms() + r->backoff_ms;
    pthread_mutex_unlock(&r->bmu);
}

static void succeeded(cache_redis *r) {
    pthread_mutex_lock(&r->bmu);
    r->backoff_ms = 0;
    pthread_mutex_unlock(&r->bmu);
}

int cache_redis_up(cache_redis *r) { return !in_backoff(r); }

/* Locks a slot with a live connection; NULL (nothing locked) in backoff or
 * when connecting fails. */
static slot *acquire(cache_redis *r) {
    if (in_backoff(r)) return NULL;
    slot *s = &r->slots[atomic_fetch_add(&r->next, 1) % (unsigned)r->nslots];
    pthread_mutex_lock(&s->mu);
    if (s->c) return s;
    struct timeval tv = {r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000};
    s->c = redisConnectWithTimeout(r->host, r->port, tv);
    if (!s->c || s->c->err || redisSetTimeout(s->c, tv) != REDIS_OK) goto fail;
    if (r->db) {
        redisReply *rep = redisCommand(s->c, "SELECT %d", r->db);
        int ok = rep && rep->type == REDIS_REPLY_STATUS;
        if (rep) freeReplyObject(rep);
        if (!ok) goto fail;
    }
    return s;
fail:
    failed(r, s);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int cache_redis_get(cache_redis *r, const uint8_t key[32], uint8_t **buf, size_t *len) {
    slot *s = acquire(r);
    if (!s) return -1;
    char k[12 + 65];
    key_string(key, k);
    redisReply *rep = redisCommand(s->c, "GET %s", k);
    int out;
    if (!rep || (rep->type != REDIS_REPLY_STRING && rep->type != REDIS_REPLY_NIL)) {
        out = -1;
        failed(r, s);
    } else if (rep->type == REDIS_REPLY_NIL) {
        out = 0;
        succeeded(r);
    } else {
        *buf = malloc(rep->len ? (size_t)rep->len : 1);
        out = *buf ? 1 : -1;
        if (*buf) {
            memcpy(*buf, rep->str, (size_t)rep->len);
            *len = (size_t)rep->len;
        }
        succeeded(r);
    }
    if (rep) freeReplyObject(rep);
    pthread_mutex_unlock(&s->mu);
    return out;
}

int cache_redis_put(cache_redis *r, const uint8_t key[32], const uint8_t *framed, size_t len, int ttl_s) {
    slot *s = acquire(r);
    if (!s) return -1;
    char k[12 + 65];
    key_string(key, k);
    redisReply *rep = ttl_s > 0 ? redisCommand(s->c, "SET %s %b EX %d", k, framed, len, ttl_s)
                                : redisCommand(s->c, "SET %s %b", k, framed, len);
    int out = rep && rep->type == REDIS_REPLY_STATUS ? 1 : -1;
    if (out < 0) failed(r, s);
    else succeeded(r);
    if (rep) freeReplyObject(rep);
    pthread_mutex_unlock(&s->mu);
    return out;
}

void cache_redis_del(cache_redis *r, const uint8_t key[32]) {
    slot *s = acquire(r);
    if (!s) return;
    char k[12 + 65];
    key_string(key, k);
    redisReply *rep = redisCommand(s->c, "DEL %s", k);
    if (!rep || rep->type == REDIS_REPLY_ERROR) failed(r, s);
    if (rep) freeReplyObject(rep);
    pthread_mutex_unlock(&s->mu);
}
