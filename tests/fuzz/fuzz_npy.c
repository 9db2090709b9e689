/* libFuzzer harness for the .npy parser (cs_npy_parse): header dict parsing,
 * version/length fields, shape overflow, truncated data. */
#include "camserve/npy.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cs_npy npy;
    cs_error err;
    if (cs_npy_parse(data, size, &npy, &err) == CS_OK) {
        /* touch every element: the parser promised count * 4 bytes */
        int64_t n = cs_npy_count(&npy);
        volatile float sink = 0;
        for (int64_t i = 0; i < n; i++) sink += npy.data[i];
        (void)sink;
        cs_npy_free(&npy);
    } else if (npy.data) {
        __builtin_trap(); /* a failed parse must not hand out memory */
    }
    return 0;
}
