/* Private pieces of the cache module: the two tiers behind cs_cache (cache.h).
 *
 * Each tier stores framed values (header + payload, see cache.h) as opaque
 * bytes and knows nothing of frames except where the tag lies (for clears);
 * checking frames, TTLs and promotion between tiers is the front's job
 * (cache.c).  Raw reads return 1 (found, *buf malloc'd), 0 (absent) or -1 (the
 * tier failed: counted by the caller as an error, answered as a miss). */
#ifndef CS_CACHE_INTERNAL_H
#define CS_CACHE_INTERNAL_H

#include "camserve/cache.h"

#include <stdatomic.h>

/* Offset of the tag inside a frame. */
#define CACHE_TAG_OFFSET 24

/* ---- disk (disk.c) ---- */
typedef struct cache_disk cache_disk;

cs_status cache_disk_open(const char *dir, uint64_t limit, cache_disk **out, cs_error *err);
void cache_disk_close(cache_disk *d);
/* *touch is set when the entry should move to the recent end (it is in the
 * older three quarters of the access order), so hot entries cost no write. */
int cache_disk_get(cache_disk *d, const uint8_t key[32], uint8_t **buf, size_t *len, int *touch);
/* 1 stored, 0 skipped (larger than the bound, map full after evicting), -1 failed. */
int cache_disk_put(cache_disk *d, const uint8_t key[32], const uint8_t *framed, size_t len, uint64_t *evicted);
void cache_disk_touch(cache_disk *d, const uint8_t key[32]);
void cache_disk_del(cache_disk *d, const uint8_t key[32]);
/* Calls keep(ctx, key, value, len) for each entry (in key order) and deletes
 * those it answers 0 for; *removed gets the count. */
typedef int (*cache_disk_keep_fn)(void *ctx, const uint8_t *key, const uint8_t *val, size_t len);
cs_status cache_disk_filter(cache_disk *d, cache_disk_keep_fn keep, void *ctx, uint64_t *removed,
                            cs_error *err);
void cache_disk_totals(cache_disk *d, uint64_t *bytes, uint64_t *entries, uint64_t *limit);

/* ---- Redis (redis.c) ---- */
typedef struct cache_redis cache_redis;

cs_status cache_redis_open(const char *url, int timeout_ms, int connections, cache_redis **out,
                           cs_error *err);
void cache_redis_close(cache_redis *r);
int cache_redis_get(cache_redis *r, const uint8_t key[32], uint8_t **buf, size_t *len);
/* 1 stored, -1 failed (or skipped while in backoff). */
int cache_redis_put(cache_redis *r, const uint8_t key[32], const uint8_t *framed, size_t len, int ttl_s);
void cache_redis_del(cache_redis *r, const uint8_t key[32]);
int cache_redis_up(cache_redis *r);

#endif
