/* Text checks shared by every module whose strings reach JSON answers. */
#include "camserve/common.h"

#include <jansson.h>
#include <string.h>

/* jansson's own check, on purpose: a string passes exactly when the JSON
 * answer it goes into would keep it (json_string refuses anything else,
 * and the field with it, silently).  It allocates a copy: used at load
 * time and on cache hits, never per pixel. */
int cs_utf8_valid(const char *s, size_t n) {
    if (memchr(s, 0, n)) return 0;
    json_t *j = json_stringn(s, n);
    json_decref(j);
    return j != NULL;
}
