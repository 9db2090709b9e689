/* Unit tests for src/cache: frames, the LMDB tier (hits, restart
 * persistence, the byte bound and access-order eviction, corrupt and
 * truncated values written through the raw LMDB API or by flipping bytes in
 * data.mdb, TTL, clearing by tag) and an unreachable Redis degrading to
 * misses within its timeout; the service's result codec (round trip, every
 * truncation refused). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "camserve/cache.h"
#include "camserve/service.h"
#include "service/service_internal.h"

#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers ----------------------------------------------------------- */

static char *tmp_dir(void) {
    char *p = strdup("/tmp/cs_test_cache_XXXXXX");
    assert_non_null(p);
    assert_non_null(mkdtemp(p));
    return p;
}

static void rm_dir(char *dir) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    free(dir);
}

static void key_of(int i, uint8_t key[32]) {
    memset(key, 0, 32);
    key[0] = (uint8_t)i;
    key[1] = (uint8_t)(i >> 8);
    key[31] = 0xa5;
}

static cs_cache *open_disk(const char *dir, size_t bytes, int ttl) {
    cs_cache_params p = cs_cache_default_params();
    p.dir = dir;
    p.disk_bytes = bytes;
    p.ttl_s = ttl;
    cs_cache *c = NULL;
    cs_error err = {0};
    assert_int_equal(cs_cache_open(&p, &c, &err), CS_OK);
    return c;
}

/* The value for entry i: len bytes of a pattern that names i. */
static uint8_t *value_of(int i, size_t len) {
    uint8_t *v = malloc(len);
    assert_non_null(v);
    uint64_t x = 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1); /* xorshift: no shared runs */
    for (size_t k = 0; k < len; k++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v[k] = (uint8_t)(x >> 32);
    }
    return v;
}

static int has(cs_cache *c, int i, size_t len) {
    uint8_t key[32], *got = NULL;
    size_t n = 0;
    key_of(i, key);
    if (!cs_cache_get(c, key, &got, &n, NULL)) return 0;
    uint8_t *want = value_of(i, len);
    assert_int_equal(n, len);
    assert_memory_equal(got, want, len);
    free(want);
    free(got);
    return 1;
}

static void put(cs_cache *c, int i, size_t len, const uint8_t *tag) {
    uint8_t key[32];
    key_of(i, key);
    uint8_t *v = value_of(i, len);
    cs_cache_put(c, key, tag, v, len);
    free(v);
}

/* Writes raw bytes under key in the "v" sub-database, bypassing the cache. */
static void raw_put(const char *dir, const uint8_t key[32], const void *val, size_t len) {
    MDB_env *env;
    MDB_txn *t;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 4);
    mdb_env_set_mapsize(env, (size_t)256 << 20);
    assert_int_equal(mdb_env_open(env, dir, MDB_NOTLS, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &t), 0);
    assert_int_equal(mdb_dbi_open(t, "v", 0, &dbi), 0);
    MDB_val k = {32, (void *)key}, v = {len, (void *)val};
    assert_int_equal(mdb_put(t, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(t), 0);
    mdb_env_close(env);
}

/* ---- frames ------------------------------------------------------------- */

static void test_frame_round_trip_and_tamper(void **state) {
    (void)state;
    uint8_t key[32], other[32], tag[32], got_tag[32];
    key_of(1, key);
    key_of(2, other);
    memset(tag, 7, 32);
    const char msg[] = "a serialised result";
    uint8_t *f;
    size_t n;
    cs_error err;
    assert_int_equal(cs_cache_frame(key, tag, 1234, msg, sizeof msg, &f, &n, &err), CS_OK);
    assert_int_equal(n, CS_CACHE_HEADER_BYTES + sizeof msg);
    const uint8_t *pl;
    size_t pn;
    uint64_t created;
    assert_true(cs_cache_unframe(key, f, n, &pl, &pn, &created, got_tag));
    assert_int_equal(pn, sizeof msg);
    assert_memory_equal(pl, msg, sizeof msg);
    assert_int_equal(created, 1234);
    assert_memory_equal(got_tag, tag, 32);
    assert_false(cs_cache_unframe(other, f, n, NULL, NULL, NULL, NULL)); /* another key */
    assert_false(cs_cache_unframe(key, f, n - 1, NULL, NULL, NULL, NULL)); /* truncated */
    assert_false(cs_cache_unframe(key, f, 10, NULL, NULL, NULL, NULL));
    for (size_t i = 0; i < n; i += 5) { /* any flipped byte, header or payload */
        f[i] ^= 0x10;
        assert_false(cs_cache_unframe(key, f, n, NULL, NULL, NULL, NULL));
        f[i] ^= 0x10;
    }
    assert_true(cs_cache_unframe(key, f, n, NULL, NULL, NULL, NULL));
    free(f);
}

/* ---- disk tier ------------------------------------------------------------ */

static void test_disk_hit_miss_and_restart(void **state) {
    (void)state;
    char *dir = tmp_dir();
    cs_cache *c = open_disk(dir, (size_t)8 << 20, 0);
    assert_false(has(c, 1, 1000));
    put(c, 1, 1000, NULL);
    put(c, 2, 50000, NULL);
    assert_true(has(c, 1, 1000));
    assert_true(has(c, 2, 50000));
    cs_cache_stats s;
    cs_cache_get_stats(c, CS_CACHE_TIER_DISK, &s);
    assert_int_equal(s.entries, 2);
    assert_int_equal(s.hits, 2);
    assert_int_equal(s.misses, 1);
    cs_cache_close(c);
    c = open_disk(dir, (size_t)8 << 20, 0); /* a restart: still there */
    assert_true(has(c, 1, 1000));
    assert_true(has(c, 2, 50000));
    cs_cache_get_stats(c, CS_CACHE_TIER_DISK, &s);
    assert_int_equal(s.entries, 2);
    assert_true(s.bytes > 50000);
    cs_cache_close(c);
    rm_dir(dir);
}

static void test_disk_bound_and_eviction_order(void **state) {
    (void)state;
    char *dir = tmp_dir();
    const size_t limit = (size_t)1 << 20, len = 20000;
    cs_cache *c = open_disk(dir, limit, 0);
    for (int i = 0; i < 30; i++) put(c, i, len, NULL);
    cs_cache_stats s;
    cs_cache_get_stats(c, CS_CACHE_TIER_DISK, &s);
    assert_int_equal(s.entries, 30);
    assert_true(has(c, 0, len)); /* old: moves to the recent end */
    for (int i = 30; i < 100; i++) {
        put(c, i, len, NULL);
        if (i == 55) { /* 50 fit (5 pages + bookkeeping each): 1..6 went, the touched 0 stayed */
            assert_false(has(c, 1, len));
            assert_true(has(c, 0, len));
        }
        cs_cache_get_stats(c, CS_CACHE_TIER_DISK, &s);
        assert_true(s.bytes <= limit);
    }
    assert_true(s.evictions > 0);
    assert_true(s.entries < 100 && s.entries > 20);
    assert_false(has(c, 1, len)); /* the oldest untouched ones went first */
    assert_true(has(c, 99, len));
    /* a value larger than the whole bound is skipped, not an error */
    put(c, 500, limit + 1, NULL);
    assert_false(has(c, 500, limit + 1));
    cs_cache_close(c);
    /* reopened with a smaller bound: shrinks at once */
    c = open_disk(dir, limit / 4, 0);
    cs_cache_get_stats(c, CS_CACHE_TIER_DISK, &s);
    assert_true(s.bytes <= limit / 4);
    assert_true(has(c, 99, len));
    cs_cache_close(c);
    rm_dir(dir);
}

static void test_disk_corrupt_values_are_dropped(void **state) {
    (void)state;
    char *dir = tmp_dir();
    cs_cache *c = open_disk(dir, (size_t)8 << 20, 0);
    put(c, 1, 3000, NULL);
    put(c, 2, 3000, NULL);
    put(c, 3, 3000, NULL);
    cs_cache_close(c);
    uint8_t key[32];
    /* garbage under key 1, a truncated frame under key 2 */
    key_of(1, key);
    raw_put(dir, key, "not a frame at all", 18);
    uint8_t *f;
    size_t n;
    cs_error err;
    uint8_t *v = value_of(2, 3000);
    key_of(2, key);
    assert_int_equal(cs_cache_frame(key, NULL, (uint64_t)time(NULL), v, 3000, &f, &n, &err), CS_OK);
    raw_put(dir, key, f, n - 100);
    free(f);
    free(v);
    c = open_disk(dir, (size_t)8 << 20, 0);
    assert_false(has(c, 1, 3000));
    assert_false(has(c, 2, 3000));
    assert_true(has(c, 3, 3000));
    cs_cache_stats s;
    cs_cache_get_stats(c, CS_CACHE_TIER_DISK, &s);
    assert_int_equal(s.corrupt, 2);
    assert_int_equal(s.entries, 1); /* both deleted, the books agree */
    cs_cache_close(c);
    rm_dir(dir);
}

static void test_disk_flipped_bytes_in_data_file(void **state) {
    (void)state;
    char *dir = tmp_dir();
    cs_cache *c = open_disk(dir, (size_t)8 << 20, 0);
    const size_t len = 10000;
    put(c, 7, len, NULL);
    put(c, 8, len, NULL);
    cs_cache_close(c);
    /* find value 7's bytes in data.mdb and flip one in the middle */
    char path[600];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long fsize = ftell(fp);
    uint8_t *data = malloc((size_t)fsize);
    fseek(fp, 0, SEEK_SET);
    assert_int_equal(fread(data, 1, (size_t)fsize, fp), (size_t)fsize);
    uint8_t *v = value_of(7, len);
    int flipped = 0;
    for (long off = 0; off + 64 <= fsize; off++)
        if (!memcmp(data + off, v + 2000, 64)) {
            fseek(fp, off + 10, SEEK_SET);
            fputc(data[off + 10] ^ 0x01, fp);
            flipped++;
        }
    fclose(fp);
    free(data);
    free(v);
    assert_true(flipped >= 1);
    c = open_disk(dir, (size_t)8 << 20, 0);
    assert_false(has(c, 7, len));
    assert_true(has(c, 8, len));
    cs_cache_stats s;
    cs_cache_get_stats(c, CS_CACHE_TIER_DISK, &s);
    assert_int_equal(s.corrupt, 1);
    uint64_t valid = 0, bad = 0;
    cs_error err;
    assert_int_equal(cs_cache_verify(c, &valid, &bad, &err), CS_OK);
    assert_int_equal(valid, 1);
    assert_int_equal(bad, 0); /* already deleted by the failed lookup */
    cs_cache_close(c);
    rm_dir(dir);
}

static void test_disk_ttl_and_clear_by_tag(void **state) {
    (void)state;
    char *dir = tmp_dir();
    cs_cache *c = open_disk(dir, (size_t)8 << 20, 0);
    uint8_t ta[32], tb[32];
    memset(ta, 0xaa, 32);
    memset(tb, 0xbb, 32);
    put(c, 1, 500, ta);
    put(c, 2, 500, tb);
    put(c, 3, 500, ta);
    cs_cache_close(c);
    /* an entry written 100 s ago, read with a 10 s TTL */
    uint8_t key[32], *f;
    size_t n;
    cs_error err;
    uint8_t *v = value_of(4, 500);
    key_of(4, key);
    assert_int_equal(cs_cache_frame(key, tb, (uint64_t)time(NULL) - 100, v, 500, &f, &n, &err), CS_OK);
    raw_put(dir, key, f, n);
    free(f);
    free(v);
    c = open_disk(dir, (size_t)8 << 20, 10);
    assert_false(has(c, 4, 500));
    cs_cache_stats s;
    cs_cache_get_stats(c, CS_CACHE_TIER_DISK, &s);
    assert_int_equal(s.expired, 1);
    uint64_t removed = 0;
    assert_int_equal(cs_cache_clear(c, ta, &removed, &err), CS_OK);
    assert_int_equal(removed, 2);
    assert_false(has(c, 1, 500));
    assert_true(has(c, 2, 500));
    assert_int_equal(cs_cache_clear(c, NULL, &removed, &err), CS_OK);
    assert_int_equal(removed, 1);
    cs_cache_get_stats(c, CS_CACHE_TIER_DISK, &s);
    assert_int_equal(s.entries, 0);
    assert_int_equal(s.bytes, 0);
    cs_cache_close(c);
    rm_dir(dir);
}

/* ---- Redis ------------------------------------------------------------------ */

static void test_redis_down_is_a_quick_miss(void **state) {
    (void)state;
    cs_cache_params p = cs_cache_default_params();
    p.redis_url = "redis://127.0.0.1:1/0"; /* nothing listens on port 1 */
    cs_cache *c = NULL;
    cs_error err;
    assert_int_equal(cs_cache_open(&p, &c, &err), CS_OK);
    double t0 = cs_now_ms();
    for (int i = 0; i < 50; i++) {
        put(c, i, 100, NULL);
        assert_false(has(c, i, 100));
    }
    assert_true(cs_now_ms() - t0 < 2000);
    cs_cache_stats s;
    cs_cache_get_stats(c, CS_CACHE_TIER_REDIS, &s);
    assert_true(s.enabled);
    assert_true(s.errors > 0);
    assert_int_equal(s.hits, 0);
    cs_cache_close(c);
    /* malformed URLs are refused at open */
    p.redis_url = "http://x";
    assert_int_not_equal(cs_cache_open(&p, &c, &err), CS_OK);
    p.redis_url = "redis://host:99999";
    assert_int_not_equal(cs_cache_open(&p, &c, &err), CS_OK);
}

/* ---- result codec (src/service/result_codec.c) --------------------------------- */

static void test_result_codec_round_trip(void **state) {
    (void)state;
    static uint8_t png1[300], png2[77];
    for (size_t i = 0; i < sizeof png1; i++) png1[i] = (uint8_t)(i * 13);
    for (size_t i = 0; i < sizeof png2; i++) png2[i] = (uint8_t)(i * 29 + 1);
    cs_svc_result r;
    memset(&r, 0, sizeof r);
    r.kind = CS_SVC_EXPLAIN;
    snprintf(r.model, sizeof r.model, "resnet50");
    memset(r.image_id, 'a', 64);
    r.npred = 3;
    for (int i = 0; i < 3; i++) {
        r.preds[i].index = 100 + i;
        r.preds[i].score = 0.5f / (float)(i + 1);
        snprintf(r.preds[i].label, sizeof r.preds[i].label, "label %d", i);
    }
    snprintf(r.method, sizeof r.method, "gradcam++");
    snprintf(r.layer, sizeof r.layer, "/layer4/relu,/layer3/relu");
    r.class_index = 100;
    snprintf(r.class_label, sizeof r.class_label, "label 0");
    r.colormap = "turbo";
    r.alpha = 0.25;
    r.overlay_w = 800;
    r.overlay_h = 600;
    r.overlay_png = png1;
    r.overlay_len = sizeof png1;
    r.heatmap_png = png2;
    r.heatmap_len = sizeof png2;
    r.image_w = 1024;
    r.image_h = 768;
    r.box[0] = 0.1f, r.box[1] = 0.2f, r.box[2] = 0.9f, r.box[3] = 0.8f;
    r.computed.inference = 12.5;
    r.computed.total = 40.25;
    uint8_t *enc;
    size_t n;
    assert_true(svc_result_encode(&r, &enc, &n));
    cs_svc_result d;
    assert_true(svc_result_decode(enc, n, &d));
    assert_string_equal(d.model, "resnet50");
    assert_string_equal(d.image_id, r.image_id);
    assert_int_equal(d.npred, 3);
    assert_int_equal(d.preds[2].index, 102);
    assert_true(d.preds[1].score == r.preds[1].score);
    assert_string_equal(d.preds[2].label, "label 2");
    assert_string_equal(d.layer, r.layer);
    assert_string_equal(d.colormap, "turbo");
    assert_true(d.alpha == 0.25 && d.overlay_w == 800 && d.image_h == 768 && d.box[3] == 0.8f);
    assert_int_equal(d.overlay_len, sizeof png1);
    assert_memory_equal(d.overlay_png, png1, sizeof png1);
    assert_memory_equal(d.heatmap_png, png2, sizeof png2);
    assert_non_null(d.overlay_b64);
    assert_int_equal(d.overlay_b64_len, 4 * ((sizeof png1 + 2) / 3));
    assert_true(d.computed.total == 40.25);
    svc_result_free_fields(&d);
    for (size_t cut = 0; cut < n; cut++) assert_false(svc_result_decode(enc, cut, &d));
    enc[0] ^= 0xff; /* another codec version */
    assert_false(svc_result_decode(enc, n, &d));
    free(enc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_round_trip_and_tamper),
        cmocka_unit_test(test_disk_hit_miss_and_restart),
        cmocka_unit_test(test_disk_bound_and_eviction_order),
        cmocka_unit_test(test_disk_corrupt_values_are_dropped),
        cmocka_unit_test(test_disk_flipped_bytes_in_data_file),
        cmocka_unit_test(test_disk_ttl_and_clear_by_tag),
        cmocka_unit_test(test_redis_down_is_a_quick_miss),
        cmocka_unit_test(test_result_codec_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
