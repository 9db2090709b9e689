/* Files compiled into the binary (web UI, default model): generated tables,
 * see cmake/embed.cmake.  Each table ends with a {NULL, NULL, 0} entry. */
#ifndef CS_UTIL_ASSETS_H
#define CS_UTIL_ASSETS_H

#include <stddef.h>

typedef struct cs_asset {
    const char *path; /* "/index.html": relative to its folder, with a leading slash */
    const unsigned char *data;
    size_t size;
} cs_asset;

extern const cs_asset cs_web_assets[];
extern const cs_asset cs_model_assets[];

/* The entry for path, or NULL. */
const cs_asset *cs_asset_find(const cs_asset *table, const char *path);

#endif
