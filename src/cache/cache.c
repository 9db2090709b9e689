/* The cache front (cache.h): frames, TTL, lookup order and promotion, and the
 * per-tier counters.  The tiers themselves are disk.c and redis.c. */
#include "cache/cache_internal.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct tier_counters {
    atomic_ullong hits, misses, puts, errors, corrupt, expired, evictions;
} tier_counters;

struct cs_cache {
    cache_disk *disk;
    cache_redis *redis;
    int ttl_s;
    tier_counters n[CS_CACHE_NTIERS];
};

static const uint8_t MAGIC[4] = {'C', 'S', 'C', '1'};

cs_cache_params cs_cache_default_params(void) {
    cs_cache_params p;
    memset(&p, 0, sizeof p);
    p.disk_bytes = (size_t)1 << 30;
    p.ttl_s = 86400;
    p.redis_timeout_ms = 50;
    p.redis_connections = 4;
    return p;
}

const char *cs_cache_tier_name(cs_cache_tier t) {
    return t == CS_CACHE_TIER_DISK ? "disk" : t == CS_CACHE_TIER_REDIS ? "redis" : "?";
}

/* ---- frames ---- */

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* SHA-256 over key, the header up to the digest, and the payload. */
static int frame_digest(const uint8_t key[32], const uint8_t *hdr, const void *payload, size_t len,
                        uint8_t out[32]) {
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned int n = 0;
    int ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 && EVP_DigestUpdate(c, key, 32) == 1 &&
             EVP_DigestUpdate(c, hdr, CS_CACHE_HEADER_BYTES - 32) == 1 &&
             EVP_DigestUpdate(c, payload, len) == 1 && EVP_DigestFinal_ex(c, out, &n) == 1 && n == 32;
    EVP_MD_CTX_free(c);
    return ok;
}

cs_status cs_cache_frame(const uint8_t key[32], const uint8_t *tag, uint64_t created, const void *payload,
                         size_t len, uint8_t **out, size_t *out_len, cs_error *err) {
    uint8_t *b = malloc(CS_CACHE_HEADER_BYTES + len);
    if (!b) return cs_errorf(err, CS_ENOMEM, "out of memory");
    memcpy(b, MAGIC, 4);
    put_u32(b + 4, CS_CACHE_VERSION);
    put_u64(b + 8, len);
    put_u64(b + 16, created);
    if (tag) memcpy(b + CACHE_TAG_OFFSET, tag, 32);
    else memset(b + CACHE_TAG_OFFSET, 0, 32);
    memcpy(b + CS_CACHE_HEADER_BYTES, payload, len);
    if (!frame_digest(key, b, payload, len, b + CS_CACHE_HEADER_BYTES - 32)) {
        free(b);
        return cs_errorf(err, CS_EINTERNAL, "SHA-256 failed");
    }
    *out = b;
    *out_len = CS_CACHE_HEADER_BYTES + len;
    return CS_OK;
}

int cs_cache_unframe(const uint8_t key[32], const uint8_t *buf, size_t len, const uint8_t **payload,
                     size_t *payload_len, uint64_t *created, uint8_t *tag) {
    if (len < CS_CACHE_HEADER_BYTES || memcmp(buf, MAGIC, 4) || get_u32(buf + 4) != CS_CACHE_VERSION ||
        get_u64(buf + 8) != len - CS_CACHE_HEADER_BYTES)
        return 0;
    uint8_t d[32];
    size_t n = len - CS_CACHE_HEADER_BYTES;
    if (!frame_digest(key, buf, buf + CS_CACHE_HEADER_BYTES, n, d) ||
        memcmp(d, buf + CS_CACHE_HEADER_BYTES - 32, 32))
        return 0;
    if (payload) *payload = buf + CS_CACHE_HEADER_BYTES;
    if (payload_len) *payload_len = n;
    if (created) *created = get_u64(buf + 16);
    if (tag) memcpy(tag, buf + CACHE_TAG_OFFSET, 32);
    return 1;
}

/* ---- lifecycle ---- */

cs_status cs_cache_open(const cs_cache_params *p, cs_cache **out, cs_error *err) {
    *out = NULL;
    cs_cache_params q = p ? *p : cs_cache_default_params();
    cs_cache *c = calloc(1, sizeof *c);
    if (!c) return cs_errorf(err, CS_ENOMEM, "out of memory");
    c->ttl_s = q.ttl_s > 0 ? q.ttl_s : 0;
    cs_status st = CS_OK;
    if (q.dir && *q.dir) st = cache_disk_open(q.dir, q.disk_bytes, &c->disk, err);
    if (st == CS_OK && q.redis_url && *q.redis_url)
        st = cache_redis_open(q.redis_url, q.redis_timeout_ms, q.redis_connections, &c->redis, err);
    if (st != CS_OK) {
        cs_cache_close(c);
        return st;
    }
    *out = c;
    return CS_OK;
}

void cs_cache_close(cs_cache *c) {
    if (!c) return;
    cache_disk_close(c->disk);
    cache_redis_close(c->redis);
    free(c);
}

/* ---- lookup ---- */

/* Checks a framed value from tier t: 1 valid and fresh (payload moved to the
 * front of *buf), 0 dropped (counted; the caller deletes it). */
static int accept(cs_cache *c, cs_cache_tier t, const uint8_t key[32], uint8_t *buf, size_t len,
                  size_t *payload_len) {
    const uint8_t *pl;
    uint64_t created;
    if (!cs_cache_unframe(key, buf, len, &pl, payload_len, &created, NULL)) {
        atomic_fetch_add(&c->n[t].corrupt, 1);
        return 0;
    }
    uint64_t now = (uint64_t)time(NULL);
    if (c->ttl_s && created + (uint64_t)c->ttl_s < now) {
        atomic_fetch_add(&c->n[t].expired, 1);
        return 0;
    }
    return 1;
}

int cs_cache_get(cs_cache *c, const uint8_t key[32], uint8_t **val, size_t *len, cs_cache_tier *tier) {
    if (!c) return 0;
    uint8_t *buf = NULL;
    size_t blen = 0, plen = 0;
    if (c->disk) {
        int touch = 0, rc = cache_disk_get(c->disk, key, &buf, &blen, &touch);
        if (rc == 1 && accept(c, CS_CACHE_TIER_DISK, key, buf, blen, &plen)) {
            if (touch) cache_disk_touch(c->disk, key);
            atomic_fetch_add(&c->n[CS_CACHE_TIER_DISK].hits, 1);
            memmove(buf, buf + CS_CACHE_HEADER_BYTES, plen);
            *val = buf;
            *len = plen;
            if (tier) *tier = CS_CACHE_TIER_DISK;
            return 1;
        }
        if (rc == 1) cache_disk_del(c->disk, key);
        if (rc < 0) atomic_fetch_add(&c->n[CS_CACHE_TIER_DISK].errors, 1);
        atomic_fetch_add(&c->n[CS_CACHE_TIER_DISK].misses, 1);
        free(buf);
        buf = NULL;
    }
    if (c->redis) {
        int rc = cache_redis_get(c->redis, key, &buf, &blen);
        if (rc == 1 && accept(c, CS_CACHE_TIER_REDIS, key, buf, blen, &plen)) {
            atomic_fetch_add(&c->n[CS_CACHE_TIER_REDIS].hits, 1);
            if (c->disk) {
                uint64_t ev = 0;
                int pr = cache_disk_put(c->disk, key, buf, blen, &ev);
                atomic_fetch_add(&c->n[CS_CACHE_TIER_DISK].evictions, ev);
                if (pr == 1) atomic_fetch_add(&c->n[CS_CACHE_TIER_DISK].puts, 1);
                else if (pr < 0) atomic_fetch_add(&c->n[CS_CACHE_TIER_DISK].errors, 1);
            }
            memmove(buf, buf + CS_CACHE_HEADER_BYTES, plen);
            *val = buf;
            *len = plen;
            if (tier) *tier = CS_CACHE_TIER_REDIS;
            return 1;
        }
        if (rc == 1) cache_redis_del(c->redis, key);
        if (rc < 0) atomic_fetch_add(&c->n[CS_CACHE_TIER_REDIS].errors, 1);
        atomic_fetch_add(&c->n[CS_CACHE_TIER_REDIS].misses, 1);
        free(buf);
    }
    return 0;
}

void cs_cache_put(cs_cache *c, const uint8_t key[32], const uint8_t *tag, const void *val, size_t len) {
    if (!c || (!c->disk && !c->redis)) return;
    uint8_t *f = NULL;
    size_t flen = 0;
    cs_error err;
    if (cs_cache_frame(key, tag, (uint64_t)time(NULL), val, len, &f, &flen, &err) != CS_OK) return;
    if (c->disk) {
        uint64_t ev = 0;
        int rc = cache_disk_put(c->disk, key, f, flen, &ev);
        atomic_fetch_add(&c->n[CS_CACHE_TIER_DISK].evictions, ev);
        if (rc == 1) atomic_fetch_add(&c->n[CS_CACHE_TIER_DISK].puts, 1);
        else if (rc < 0) atomic_fetch_add(&c->n[CS_CACHE_TIER_DISK].errors, 1);
    }
    if (c->redis) {
        int rc = cache_redis_put(c->redis, key, f, flen, c->ttl_s);
        if (rc == 1) atomic_fetch_add(&c->n[CS_CACHE_TIER_REDIS].puts, 1);
        else atomic_fetch_add(&c->n[CS_CACHE_TIER_REDIS].errors, 1);
    }
    free(f);
}

/* ---- maintenance ---- */

static int keep_other_tags(void *ctx, const uint8_t *key, const uint8_t *val, size_t len) {
    (void)key;
    const uint8_t *tag = ctx;
    if (!tag) return 0;
    return len < CS_CACHE_HEADER_BYTES || memcmp(val + CACHE_TAG_OFFSET, tag, 32) != 0;
}

cs_status cs_cache_clear(cs_cache *c, const uint8_t *tag, uint64_t *removed, cs_error *err) {
    if (removed) *removed = 0;
    if (!c || !c->disk) return CS_OK;
    return cache_disk_filter(c->disk, keep_other_tags, (void *)tag, removed, err);
}

typedef struct verify_ctx {
    uint64_t valid;
} verify_ctx;

static int keep_valid(void *ctx, const uint8_t *key, const uint8_t *val, size_t len) {
    int ok = cs_cache_unframe(key, val, len, NULL, NULL, NULL, NULL);
    ((verify_ctx *)ctx)->valid += (uint64_t)ok;
    return ok;
}

cs_status cs_cache_verify(cs_cache *c, uint64_t *valid, uint64_t *corrupt, cs_error *err) {
    verify_ctx v = {0};
    uint64_t bad = 0;
    cs_status st = c && c->disk ? cache_disk_filter(c->disk, keep_valid, &v, &bad, err) : CS_OK;
    if (c) atomic_fetch_add(&c->n[CS_CACHE_TIER_DISK].corrupt, bad);
    if (valid) *valid = v.valid;
    if (corrupt) *corrupt = bad;
    return st;
}

void cs_cache_get_stats(cs_cache *c, cs_cache_tier t, cs_cache_stats *o) {
    memset(o, 0, sizeof *o);
    if (!c || t < 0 || t >= CS_CACHE_NTIERS) return;
    o->enabled = t == CS_CACHE_TIER_DISK ? c->disk != NULL : c->redis != NULL;
    if (!o->enabled) return;
    const tier_counters *n = &c->n[t];
    o->hits = atomic_load(&n->hits);
    o->misses = atomic_load(&n->misses);
    o->puts = atomic_load(&n->puts);
    o->errors = atomic_load(&n->errors);
    o->corrupt = atomic_load(&n->corrupt);
    o->expired = atomic_load(&n->expired);
    o->evictions = atomic_load(&n->evictions);
    if (t == CS_CACHE_TIER_DISK) {
        o->up = 1;
        cache_disk_totals(c->disk, &o->bytes, &o->entries, &o->limit);
    } else {
        o->up = cache_redis_up(c->redis);
    }
}
