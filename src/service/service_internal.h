/* Private pieces of the service module: the byte-bounded LRU used by the
 * result cache and the image store, and the serialised form of a result.
 *
 * Cache tiers.  The memory tier is this LRU holding live cs_svc_result
 * objects; below it sit the disk (LMDB) and Redis tiers of src/cache
 * (camserve/cache.h), which store results serialised by svc_result_encode
 * inside a checksummed frame.  service.c looks up memory, then cs_cache_get
 * (disk, then Redis), and fills the tiers above on a lower-tier hit; a
 * computed result goes into memory before its answer is sent and into the
 * lower tiers right after.  The memory tier never serialises. */
#ifndef CS_SERVICE_INTERNAL_H
#define CS_SERVICE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* A map from 32-byte keys (SHA-256 digests, so the first 8 bytes are a good
 * hash already) to reference-counted values, bounded by the byte sizes the
 * caller declares.  Inserting beyond the bound evicts least recently used
 * entries; a value larger than the whole bound is not kept.  The LRU holds
 * one reference per entry (retain on insert, release on eviction / free).
 * All functions are thread-safe (one mutex; every operation is O(1)). */
typedef struct svc_lru svc_lru;
typedef void (*svc_lru_ref_fn)(void *value);

svc_lru *svc_lru_create(size_t max_bytes, svc_lru_ref_fn retain, svc_lru_ref_fn release);
void svc_lru_free(svc_lru *l); /* NULL is a no-op */
/* A retained reference to the value (the caller releases it), or NULL.
 * A hit becomes the most recently used entry. */
void *svc_lru_get(svc_lru *l, const uint8_t key[32]);
/* Inserts or replaces; returns 1 if kept, 0 if too large (or no memory). */
int svc_lru_put(svc_lru *l, const uint8_t key[32], void *value, size_t bytes);
void svc_lru_stats(svc_lru *l, size_t *bytes, size_t *entries, uint64_t *evictions);
/* Drops every entry for which drop(ctx, value) is non-zero; returns the count. */
size_t svc_lru_remove_if(svc_lru *l, int (*drop)(void *ctx, void *value), void *ctx);

/* ---- results serialised for the disk and Redis tiers (result_codec.c) ---- */
struct cs_svc_result;
/* A malloc'd byte string (the base64 copies are left out); 0 on no memory. */
int svc_result_encode(const struct cs_svc_result *r, uint8_t **out, size_t *len);
/* Fills *r (PNG and base64 buffers malloc'd; free with svc_result_free_fields);
 * 0, with nothing allocated, when buf is not a whole, valid encoding. */
int svc_result_decode(const uint8_t *buf, size_t len, struct cs_svc_result *r);
void svc_result_free_fields(struct cs_svc_result *r);

#endif
