/* Private pieces of the service module: the byte-bounded LRU used by the
 * result cache and the image store.
 *
 * Cache tiers (issue 7).  The result cache is reached only through
 * svc_cache_lookup / svc_cache_insert in service.c; the memory tier is this
 * LRU holding live cs_svc_result objects.  A disk (LMDB) or Redis tier plugs
 * in behind those two functions: lookup tries tiers in order and promotes a
 * hit into the tiers above; insert writes through to each.  Those tiers need
 * a serialised, checksummed form of cs_svc_result; the memory tier never
 * serialises. */
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

#endif
