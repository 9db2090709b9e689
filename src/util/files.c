#include "util/files.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int cmp_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names of dir's entries accepted by keep (NULL: all but dot files). */
cs_status cs_list_dir(const char *dir, int (*keep)(const char *), char ***names, int *n,
                          cs_error *err) {
    DIR *d = opendir(dir);
    if (!d) return cs_errorf(err, CS_EIO, "cannot open %s: %s", dir, strerror(errno));
    char **v = NULL;
    int cnt = 0, cap = 0;
    struct dirent *de;
    cs_status st = CS_OK;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || (keep && !keep(de->d_name))) continue;
        if (cnt == cap) {
            cap = cap ? 2 * cap : 64;
            char **nv = realloc(v, (size_t)cap * sizeof *v);
            if (!nv) {
                st = cs_errorf(err, CS_ENOMEM, "out of memory");
                break;
            }
            v = nv;
        }
        if (!(v[cnt] = strdup(de->d_name))) {
            st = cs_errorf(err, CS_ENOMEM, "out of memory");
            break;
        }
        cnt++;
    }
    closedir(d);
    if (st != CS_OK) {
        for (int i = 0; i < cnt; i++) free(v[i]);
        free(v);
        return st;
    }
    if (cnt) qsort(v, (size_t)cnt, sizeof *v, cmp_name);
    *names = v;
    *n = cnt;
    return CS_OK;
}

void cs_free_names(char **v, int n) {
    for (int i = 0; v && i < n; i++) free(v[i]);
    free(v);
}

