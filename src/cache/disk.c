/* The LMDB disk tier (see cache.h for the layout and cache_internal.h for
 * the contract).
 *
 * Sub-databases of the one environment:
 *   "v"  key(32)            -> framed value
 *   "a"  key(32)            -> {seq u64, cost u64}   (native byte order)
 *   "q"  seq (u64 big-endian, so memcmp order is numeric order) -> key(32)
 *   "m"  "t"                -> {bytes u64, entries u64, next_seq u64}
 * Every change to an entry updates all four in one write transaction, so the
 * totals are exact whatever process wrote last and wherever a crash hit.
 * Eviction walks "q" from its first (oldest) record.
 *
 * A reader never writes: a hit in the older three quarters of the order asks
 * the caller to touch the entry (one small write transaction), a hit among
 * the recent quarter (or the 16 newest) costs nothing. */
#include "cache/cache_internal.h"

#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct totals {
    uint64_t bytes, entries, seq;
} totals;

typedef struct acc {
    uint64_t seq, cost;
} acc;

struct cache_disk {
    MDB_env *env;
    MDB_dbi v, a, q, m;
    uint64_t limit;
};

static const char TOTALS_KEY[] = "t";

/* What an entry costs against the bound: LMDB stores a value above ~2 KB in
 * whole 4 KiB overflow pages; the key and the bookkeeping records come on top. */
static uint64_t cost_of(size_t len) { return ((uint64_t)len + 16 + 4095) / 4096 * 4096 + 256; }

static void be64(uint64_t v, uint8_t out[8]) {
    for (int i = 7; i >= 0; i--, v >>= 8) out[i] = (uint8_t)v;
}

static int read_totals(cache_disk *d, MDB_txn *t, totals *tt) {
    MDB_val k = {sizeof TOTALS_KEY - 1, (void *)TOTALS_KEY}, v;
    int rc = mdb_get(t, d->m, &k, &v);
    memset(tt, 0, sizeof *tt);
    if (rc == MDB_NOTFOUND) return 0;
    if (rc) return rc;
    if (v.mv_size == sizeof *tt) memcpy(tt, v.mv_data, sizeof *tt);
    return 0;
}

static int write_totals(cache_disk *d, MDB_txn *t, const totals *tt) {
    MDB_val k = {sizeof TOTALS_KEY - 1, (void *)TOTALS_KEY}, v = {sizeof *tt, (void *)tt};
    return mdb_put(t, d->m, &k, &v, 0);
}

/* Removes key's records (if any) and subtracts its cost. */
static int remove_entry(cache_disk *d, MDB_txn *t, const uint8_t *key, totals *tt) {
    MDB_val k = {32, (void *)key}, v;
    int rc = mdb_get(t, d->a, &k, &v);
    if (rc == MDB_NOTFOUND) {
        rc = mdb_del(t, d->v, &k, NULL); /* a value without bookkeeping: drop it too */
        return rc == MDB_NOTFOUND ? 0 : rc;
    }
    if (rc) return rc;
    acc a = {0, 0};
    if (v.mv_size == sizeof a) memcpy(&a, v.mv_data, sizeof a);
    uint8_t sk[8];
    be64(a.seq, sk);
    MDB_val qk = {8, sk};
    if ((rc = mdb_del(t, d->q, &qk, NULL)) && rc != MDB_NOTFOUND) return rc;
    if ((rc = mdb_del(t, d->a, &k, NULL))) return rc;
    if ((rc = mdb_del(t, d->v, &k, NULL)) && rc != MDB_NOTFOUND) return rc;
    tt->bytes = tt->bytes > a.cost ? tt->bytes - a.cost : 0;
    if (tt->entries) tt->entries--;
    return 0;
}

/* Evicts the oldest entries until need more bytes fit. */
static int evict(cache_disk *d, MDB_txn *t, totals *tt, uint64_t need, uint64_t *evicted) {
    MDB_cursor *cur;
    int rc = mdb_cursor_open(t, d->q, &cur);
    if (rc) return rc;
    while (tt->bytes + need > d->limit) {
        MDB_val k, v;
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        if (rc == MDB_NOTFOUND) {
            tt->bytes = 0; /* nothing left: the books say so too */
            tt->entries = 0;
            rc = 0;
            break;
        }
        if (rc) break;
        uint8_t key[32];
        if (v.mv_size != 32) {
            if ((rc = mdb_cursor_del(cur, 0))) break;
            continue;
        }
        memcpy(key, v.mv_data, 32);
        if ((rc = remove_entry(d, t, key, tt))) break;
        if (evicted) (*evicted)++;
    }
    mdb_cursor_close(cur);
    return rc;
}

static int mkdir_p(const char *dir) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path) return -1;
    for (char *p = path + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(path, 0755) && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(path, 0755) && errno != EEXIST ? -1 : 0;
}

static int env_open(cache_disk *d, const char *dir) {
    int rc = mdb_env_create(&d->env);
    if (rc) return rc;
    mdb_env_set_maxdbs(d->env, 4);
    mdb_env_set_maxreaders(d->env, 512);
    /* limit 0 (keep the stored bound): LMDB adopts the file's own map size */
    if (d->limit) mdb_env_set_mapsize(d->env, (size_t)(2 * d->limit + ((uint64_t)64 << 20)));
    /* NOMETASYNC: a system crash may lose the last transaction, never the
     * store's integrity; NOTLS: read transactions are not tied to threads */
    rc = mdb_env_open(d->env, dir, MDB_NOTLS | MDB_NOMETASYNC, 0644);
    if (rc) {
        mdb_env_close(d->env);
        d->env = NULL;
    }
    return rc;
}

cs_status cache_disk_open(const char *dir, uint64_t limit, cache_disk **out, cs_error *err) {
    *out = NULL;
    if (mkdir_p(dir))
        return cs_errorf(err, CS_EIO, "cache directory %s: %s", dir, strerror(errno));
    cache_disk *d = calloc(1, sizeof *d);
    if (!d) return cs_errorf(err, CS_ENOMEM, "out of memory");
    d->limit = limit;
    int rc = env_open(d, dir);
    if (rc == MDB_INVALID || rc == MDB_CORRUPTED || rc == MDB_VERSION_MISMATCH || rc == MDB_PAGE_NOTFOUND) {
        char from[4200], to[4300];
        snprintf(from, sizeof from, "%s/data.mdb", dir);
        snprintf(to, sizeof to, "%s/data.mdb.corrupt-%lld", dir, (long long)time(NULL));
        fprintf(stderr, "camserve: cache %s: %s; moved to %s, starting empty\n", dir, mdb_strerror(rc), to);
        if (rename(from, to) == 0) {
            snprintf(from, sizeof from, "%s/lock.mdb", dir);
            unlink(from);
            rc = env_open(d, dir);
        }
    }
    if (rc) {
        free(d);
        return cs_errorf(err, CS_EIO, "cache directory %s: %s", dir, mdb_strerror(rc));
    }
    int dead = 0;
    mdb_reader_check(d->env, &dead); /* reader slots of killed processes */
    MDB_txn *t = NULL;
    totals tt;
    uint64_t ev = 0;
    rc = mdb_txn_begin(d->env, NULL, 0, &t);
    if (!rc) rc = mdb_dbi_open(t, "v", MDB_CREATE, &d->v);
    if (!rc) rc = mdb_dbi_open(t, "a", MDB_CREATE, &d->a);
    if (!rc) rc = mdb_dbi_open(t, "q", MDB_CREATE, &d->q);
    if (!rc) rc = mdb_dbi_open(t, "m", MDB_CREATE, &d->m);
    /* the bound is stored, so that tools opening the store keep it */
    MDB_val lk = {1, (void *)"l"}, lv;
    if (!rc && !limit) {
        int g = mdb_get(t, d->m, &lk, &lv);
        if (g == 0 && lv.mv_size == 8) memcpy(&d->limit, lv.mv_data, 8);
        else if (g != MDB_NOTFOUND) rc = g;
        if (!d->limit) d->limit = (uint64_t)1 << 30;
        limit = d->limit;
    } else if (!rc) {
        lv.mv_size = 8;
        lv.mv_data = &limit;
        rc = mdb_put(t, d->m, &lk, &lv, 0);
    }
    /* reopened with a smaller bound: shrink now */
    if (!rc) rc = read_totals(d, t, &tt);
    if (!rc && tt.bytes > limit) {
        rc = evict(d, t, &tt, 0, &ev);
        if (!rc) rc = write_totals(d, t, &tt);
    }
    if (!rc) rc = mdb_txn_commit(t);
    else if (t) mdb_txn_abort(t);
    if (rc) {
        mdb_env_close(d->env);
        free(d);
        return cs_errorf(err, CS_EIO, "cache directory %s: %s", dir, mdb_strerror(rc));
    }
    *out = d;
    return CS_OK;
}

void cache_disk_close(cache_disk *d) {
    if (!d) return;
    mdb_env_close(d->env);
    free(d);
}

int cache_disk_get(cache_disk *d, const uint8_t key[32], uint8_t **buf, size_t *len, int *touch) {
    MDB_txn *t;
    *touch = 0;
    if (mdb_txn_begin(d->env, NULL, MDB_RDONLY, &t)) return -1;
    MDB_val k = {32, (void *)key}, v;
    int rc = mdb_get(t, d->v, &k, &v), out = 0;
    if (rc == 0) {
        *buf = malloc(v.mv_size ? v.mv_size : 1);
        if (!*buf) {
            out = -1;
        } else {
            memcpy(*buf, v.mv_data, v.mv_size);
            *len = v.mv_size;
            out = 1;
            MDB_val av;
            totals tt;
            if (mdb_get(t, d->a, &k, &av) == 0 && av.mv_size == sizeof(acc) && read_totals(d, t, &tt) == 0) {
                acc a;
                memcpy(&a, av.mv_data, sizeof a);
                *touch = tt.seq - a.seq > tt.entries / 4 + 16;
            }
        }
    } else if (rc != MDB_NOTFOUND) {
        out = -1;
    }
    mdb_txn_abort(t);
    return out;
}

int cache_disk_put(cache_disk *d, const uint8_t key[32], const uint8_t *framed, size_t len, uint64_t *evicted) {
    uint64_t cost = cost_of(len);
    if (cost > d->limit) return 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        MDB_txn *t;
        if (mdb_txn_begin(d->env, NULL, 0, &t)) return -1;
        totals tt;
        int rc = read_totals(d, t, &tt);
        if (!rc) rc = remove_entry(d, t, key, &tt);
        /* a second try after MAP_FULL frees an eighth of the bound more: the
         * map is full of pages still held by old snapshots or fragments */
        uint64_t extra = attempt ? d->limit / 8 : 0;
        if (!rc) rc = evict(d, t, &tt, cost + extra, evicted);
        MDB_val k = {32, (void *)key}, v = {len, NULL};
        if (!rc) rc = mdb_put(t, d->v, &k, &v, MDB_RESERVE);
        if (!rc) {
            memcpy(v.mv_data, framed, len);
            acc a = {tt.seq, cost};
            uint8_t sk[8];
            be64(tt.seq, sk);
            MDB_val av = {sizeof a, &a}, qk = {8, sk}, qv = {32, (void *)key};
            rc = mdb_put(t, d->a, &k, &av, 0);
            if (!rc) rc = mdb_put(t, d->q, &qk, &qv, 0);
            tt.seq++;
            tt.bytes += cost;
            tt.entries++;
            if (!rc) rc = write_totals(d, t, &tt);
        }
        if (rc) {
            mdb_txn_abort(t);
        } else {
            rc = mdb_txn_commit(t);
            if (!rc) return 1;
        }
        if (rc != MDB_MAP_FULL) return -1;
    }
    return 0;
}

void cache_disk_touch(cache_disk *d, const uint8_t key[32]) {
    MDB_txn *t;
    if (mdb_txn_begin(d->env, NULL, 0, &t)) return;
    MDB_val k = {32, (void *)key}, av;
    totals tt;
    int rc = read_totals(d, t, &tt);
    if (!rc) rc = mdb_get(t, d->a, &k, &av);
    if (!rc && av.mv_size == sizeof(acc)) {
        acc a;
        memcpy(&a, av.mv_data, sizeof a);
        uint8_t sk[8];
        be64(a.seq, sk);
        MDB_val qk = {8, sk}, qv = {32, (void *)key};
        rc = mdb_del(t, d->q, &qk, NULL);
        if (rc == MDB_NOTFOUND) rc = 0;
        a.seq = tt.seq++;
        be64(a.seq, sk);
        MDB_val nav = {sizeof a, &a};
        if (!rc) rc = mdb_put(t, d->q, &qk, &qv, 0);
        if (!rc) rc = mdb_put(t, d->a, &k, &nav, 0);
        if (!rc) rc = write_totals(d, t, &tt);
    }
    if (rc) mdb_txn_abort(t);
    else mdb_txn_commit(t);
}

void cache_disk_del(cache_disk *d, const uint8_t key[32]) {
    MDB_txn *t;
    if (mdb_txn_begin(d->env, NULL, 0, &t)) return;
    totals tt;
    int rc = read_totals(d, t, &tt);
    if (!rc) rc = remove_entry(d, t, key, &tt);
    if (!rc) rc = write_totals(d, t, &tt);
    if (rc) mdb_txn_abort(t);
    else mdb_txn_commit(t);
}

cs_status cache_disk_filter(cache_disk *d, cache_disk_keep_fn keep, void *ctx, uint64_t *removed,
                            cs_error *err) {
    if (removed) *removed = 0;
    /* Collect the doomed keys in a read pass, then delete them in batches:
     * a value is checked outside any write lock. */
    uint8_t *doomed = NULL;
    size_t n = 0, cap = 0;
    MDB_txn *t;
    MDB_cursor *cur;
    int rc = mdb_txn_begin(d->env, NULL, MDB_RDONLY, &t);
    if (rc) return cs_errorf(err, CS_EIO, "cache: %s", mdb_strerror(rc));
    if ((rc = mdb_cursor_open(t, d->v, &cur))) {
        mdb_txn_abort(t);
        return cs_errorf(err, CS_EIO, "cache: %s", mdb_strerror(rc));
    }
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size == 32 && keep(ctx, k.mv_data, v.mv_data, v.mv_size)) continue;
        if (k.mv_size != 32) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            uint8_t *nd = realloc(doomed, cap * 32);
            if (!nd) {
                rc = ENOMEM;
                break;
            }
            doomed = nd;
        }
        memcpy(doomed + n * 32, k.mv_data, 32);
        n++;
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(t);
    if (rc != MDB_NOTFOUND) {
        free(doomed);
        return cs_errorf(err, CS_EIO, "cache: %s", rc == ENOMEM ? "out of memory" : mdb_strerror(rc));
    }
    rc = 0;
    for (size_t i = 0; i < n;) {
        if ((rc = mdb_txn_begin(d->env, NULL, 0, &t))) break;
        totals tt;
        rc = read_totals(d, t, &tt);
        size_t end = i + 1024 < n ? i + 1024 : n;
        for (size_t j = i; j < end && !rc; j++) rc = remove_entry(d, t, doomed + j * 32, &tt);
        if (!rc) rc = write_totals(d, t, &tt);
        if (rc) {
            mdb_txn_abort(t);
            break;
        }
        if ((rc = mdb_txn_commit(t))) break;
        if (removed) *removed += end - i;
        i = end;
    }
    free(doomed);
    if (rc) return cs_errorf(err, CS_EIO, "cache: %s", mdb_strerror(rc));
    return CS_OK;
}

void cache_disk_totals(cache_disk *d, uint64_t *bytes, uint64_t *entries, uint64_t *limit) {
    MDB_txn *t;
    totals tt = {0, 0, 0};
    if (mdb_txn_begin(d->env, NULL, MDB_RDONLY, &t) == 0) {
        read_totals(d, t, &tt);
        mdb_txn_abort(t);
    }
    if (bytes) *bytes = tt.bytes;
    if (entries) *entries = tt.entries;
    if (limit) *limit = d->limit;
}
