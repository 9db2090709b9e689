/* camserve cache: the result-cache tiers below the service's in-process
 * memory LRU -- an LMDB store on disk and an optional shared Redis.
 *
 * The tiers store opaque values (the service's serialised results) under
 * 32-byte keys (SHA-256 digests the service computes).  Every stored value is
 * framed by a header
 *
 *     magic "CSC1" | version u32 | payload length u64 | created (unix s) u64 |
 *     tag[32] | sha256[32]
 *
 * (little-endian, CS_CACHE_HEADER_BYTES in all) where the SHA-256 covers the
 * key, the header fields before it and the payload.  A value whose frame does
 * not check out -- truncated, flipped bits, stored under another key, another
 * format version -- is deleted and reported as a miss, never returned.  The
 * tag is the model digest: it lets cs_cache_clear drop one model's entries.
 *
 * Lookup goes disk -> Redis; a Redis hit is written into the disk tier.  Every
 * failure of a tier (LMDB map full, I/O error, Redis down, slow or answering
 * garbage) degrades to a miss or a skipped write, counted in the tier's
 * errors; nothing here fails a request.  A Redis tier that failed is skipped
 * for a backoff period (100 ms doubling to 5 s) and then retried.
 *
 * Disk tier: one LMDB environment in the directory (data.mdb, lock.mdb) with
 * three sub-databases: "v" key -> framed value, "a" key -> (sequence, cost),
 * "q" sequence (big-endian) -> key, the access order, plus the running totals
 * under "m".  Writes evict the oldest sequences until the sum of costs
 * (framed length rounded to 4 KiB pages + bookkeeping) fits the bound; the
 * map is sized at twice the bound + 64 MiB for copy-on-write slack.  LMDB's
 * transactions make the store crash-safe: after kill -9 each entry is there
 * whole or not at all; several processes may share one directory.
 *
 * Thread-safety: every function may be called from any number of threads
 * once cs_cache_open returned; cs_cache_close from one thread at the end. */
#ifndef CAMSERVE_CACHE_H
#define CAMSERVE_CACHE_H

#include "camserve/common.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CS_CACHE_HEADER_BYTES 88
#define CS_CACHE_VERSION 1

typedef struct cs_cache cs_cache;

typedef struct cs_cache_params {
    const char *dir;          /* LMDB directory (created if missing); NULL: no disk tier */
    size_t disk_bytes;        /* disk bound (default 1 GiB); 0: the bound the store was last
                               * opened with (how `camserve cache` opens it) */
    const char *redis_url;    /* redis://HOST:PORT[/DB]; NULL: no Redis tier */
    int ttl_s;                /* entries older than this are misses; Redis SET EX (default 86400; 0: none) */
    int redis_timeout_ms;     /* connect and command timeout (default 50) */
    int redis_connections;    /* connection pool size (default 4) */
} cs_cache_params;

cs_cache_params cs_cache_default_params(void);

typedef enum cs_cache_tier { CS_CACHE_TIER_DISK = 0, CS_CACHE_TIER_REDIS, CS_CACHE_NTIERS } cs_cache_tier;

const char *cs_cache_tier_name(cs_cache_tier t); /* "disk", "redis" */

typedef struct cs_cache_stats {
    int enabled;
    int up;              /* Redis: connected or not in backoff; disk: 1 */
    uint64_t hits, misses, puts;
    uint64_t errors;     /* tier failures degraded to a miss / skipped write */
    uint64_t corrupt;    /* values dropped because their frame did not check out */
    uint64_t expired;    /* values older than the TTL */
    uint64_t evictions;  /* disk: entries evicted to stay within the bound */
    uint64_t bytes, entries, limit; /* disk only: accounted bytes, entries, bound */
} cs_cache_stats;

/* Opens the configured tiers.  A disk directory that cannot be opened is an
 * error; a data file LMDB rejects as corrupt is moved aside
 * (data.mdb.corrupt-<time>) and a new one is started, with one line on
 * stderr.  Redis is connected lazily: an unreachable server is not an error. */
cs_status cs_cache_open(const cs_cache_params *p, cs_cache **out, cs_error *err);
void cs_cache_close(cs_cache *c); /* NULL is a no-op */

/* Looks key up, disk then Redis.  On a hit returns 1 with *val (malloc'd, the
 * caller frees it), *len the payload and *tier where it was found; returns 0
 * on a miss (or on any tier failure).  tier may be NULL. */
int cs_cache_get(cs_cache *c, const uint8_t key[32], uint8_t **val, size_t *len, cs_cache_tier *tier);

/* Stores val (borrowed) in every tier, framed with tag (32 bytes; NULL: zeros).
 * Best effort: a value that does not fit or a failing tier is skipped. */
void cs_cache_put(cs_cache *c, const uint8_t key[32], const uint8_t *tag, const void *val, size_t len);

/* Removes the disk tier's entries whose tag equals tag (NULL: all of them);
 * *removed (may be NULL) gets the count.  Redis is shared by replicas and left
 * to its TTL. */
cs_status cs_cache_clear(cs_cache *c, const uint8_t *tag, uint64_t *removed, cs_error *err);

/* Reads every disk entry and deletes those whose frame does not check out. */
cs_status cs_cache_verify(cs_cache *c, uint64_t *valid, uint64_t *corrupt, cs_error *err);

void cs_cache_get_stats(cs_cache *c, cs_cache_tier t, cs_cache_stats *out);

/* ---- frames (exposed for the tests and the CLI) ---- */

/* Writes header + payload into a malloc'd buffer. */
cs_status cs_cache_frame(const uint8_t key[32], const uint8_t *tag, uint64_t created, const void *payload,
                         size_t len, uint8_t **out, size_t *out_len, cs_error *err);
/* Checks a frame against key: 1 and the payload's place when valid, 0 else.
 * created / tag (may be NULL) get the header's values. */
int cs_cache_unframe(const uint8_t key[32], const uint8_t *buf, size_t len, const uint8_t **payload,
                     size_t *payload_len, uint64_t *created, uint8_t *tag);

#ifdef __cplusplus
}
#endif
#endif
