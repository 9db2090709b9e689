/* libFuzzer harness: WebP decode (still images and the animation path). */
#include "fuzz_image_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_decode(data, size, 0);
    return 0;
}
