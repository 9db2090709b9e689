/* camserve cache: look at or empty a result cache directory (the LMDB tier
 * `serve --cache-dir` writes), also while servers use it.
 *
 *   camserve cache stats --cache-dir DIR [--verify] [--json]
 *   camserve cache clear --cache-dir DIR
 *
 * --verify reads every entry, checks its frame (checksum, length, version)
 * and deletes those that fail; the counts say how many were valid. */
#include "camserve/cache.h"
#include "cli/cli.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int cs_cli_cache(int argc, char **argv) {
    if (argc < 1 || (strcmp(argv[0], "stats") && strcmp(argv[0], "clear"))) {
        fprintf(stderr, "camserve cache: usage: camserve cache stats|clear --cache-dir DIR [--verify] [--json]\n");
        return 2;
    }
    const char *sub = argv[0];
    cli_opt opts[] = {{"cache-dir", true}, {"json", false}, {"verify", false}};
    int nopts = 3, rc = cli_parse("cache", argc - 1, argv + 1, opts, nopts);
    if (rc) return rc;
    const char *dir = opts[0].value;
    if (!dir) {
        fprintf(stderr, "camserve cache: --cache-dir DIR is required\n");
        cli_free(opts, nopts);
        return 2;
    }
    char path[4200];
    struct stat st;
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    cs_error err = {0};
    if (stat(path, &st) != 0) {
        cs_errorf(&err, CS_ENOTFOUND, "no result cache in %s (no data.mdb)", dir);
        cli_free(opts, nopts);
        return cli_fail("cache", &err);
    }
    cs_cache_params p = cs_cache_default_params();
    p.dir = dir;
    p.disk_bytes = 0; /* keep the bound the servers use */
    cs_cache *c = NULL;
    if (cs_cache_open(&p, &c, &err) != CS_OK) {
        cli_free(opts, nopts);
        return cli_fail("cache", &err);
    }
    uint64_t removed = 0, valid = 0, corrupt = 0;
    int verify = opts[2].value != NULL;
    cs_status s = CS_OK;
    if (!strcmp(sub, "clear")) s = cs_cache_clear(c, NULL, &removed, &err);
    else if (verify) s = cs_cache_verify(c, &valid, &corrupt, &err);
    cs_cache_stats cs;
    cs_cache_get_stats(c, CS_CACHE_TIER_DISK, &cs);
    cs_cache_close(c);
    if (s != CS_OK) {
        cli_free(opts, nopts);
        return cli_fail("cache", &err);
    }
    if (opts[1].value) {
        json_t *o = json_pack("{s:s, s:I, s:I, s:I, s:I}", "dir", dir, "entries", (json_int_t)cs.entries, "bytes",
                              (json_int_t)cs.bytes, "limit_bytes", (json_int_t)cs.limit, "file_bytes",
                              (json_int_t)st.st_size);
        if (!strcmp(sub, "clear")) json_object_set_new(o, "removed", json_integer((json_int_t)removed));
        if (verify) {
            json_object_set_new(o, "valid", json_integer((json_int_t)valid));
            json_object_set_new(o, "corrupt", json_integer((json_int_t)corrupt));
        }
        char *txt = json_dumps(o, JSON_COMPACT);
        if (txt) puts(txt);
        free(txt);
        json_decref(o);
    } else {
        if (!strcmp(sub, "clear")) printf("removed %llu entries\n", (unsigned long long)removed);
        printf("%s: %llu entries, %.1f MB of %.1f MB (data file %.1f MB)\n", dir, (unsigned long long)cs.entries,
               cs.bytes / 1048576.0, cs.limit / 1048576.0, st.st_size / 1048576.0);
        if (verify)
            printf("verified: %llu valid, %llu corrupt (deleted)\n", (unsigned long long)valid,
                   (unsigned long long)corrupt);
    }
    cli_free(opts, nopts);
    return 0;
}
