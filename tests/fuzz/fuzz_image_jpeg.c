/* libFuzzer harness: JPEG decode (TurboJPEG + our EXIF/APP14 marker walk). */
#include "fuzz_image_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    (void)cs_img_jpeg_orientation(data, size);
    /* odd sizes take the DCT-scaled path, even ones the full-size one */
    fuzz_decode(data, size, (size & 1) ? 16 : 0);
    return 0;
}
