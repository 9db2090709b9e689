/* libFuzzer harness: the preprocessing sidecar / metadata JSON parser. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "camserve/imageio.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    cs_preproc p = cs_img_preproc_default();
    char *labels = NULL;
    cs_error err;
    if (cs_img_preproc_from_json(text, &p, &labels, &err) == CS_OK) {
        if (cs_img_preproc_validate(&p, &err) != CS_OK) abort(); /* accepted => valid */
        int rw, rh, cx, cy;
        cs_img_preproc_geometry(&p, 640, 480, &rw, &rh, &cx, &cy);
    } else if (labels) {
        abort(); /* outputs are written only on success */
    }
    free(labels);
    free(text);
    return 0;
}
