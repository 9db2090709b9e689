#include "util/assets.h"

#include <string.h>

const cs_asset *cs_asset_find(const cs_asset *table, const char *path) {
    for (const cs_asset *a = table; a->path; a++)
        if (strcmp(a->path, path) == 0) return a;
    return NULL;
}
