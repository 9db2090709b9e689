/* libFuzzer harness: PNG decode through libspng (all colour types -> RGB8).
 *
 * Mutations almost always break a chunk CRC, which libspng rejects before
 * decoding anything; half of the inputs therefore get their CRCs repaired
 * first, so the fuzzer also reaches IHDR validation, inflate and the
 * colour-type conversions. */
#include "fuzz_image_common.h"

static uint32_t crc32_png(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

static void fix_crcs(uint8_t *d, size_t n) {
    size_t i = 8;
    while (i + 12 <= n) {
        uint32_t len = (uint32_t)d[i] << 24 | (uint32_t)d[i + 1] << 16 | (uint32_t)d[i + 2] << 8 | d[i + 3];
        if (len > n - i - 12) break;
        uint32_t c = crc32_png(d + i + 4, (size_t)len + 4);
        uint8_t *q = d + i + 8 + len;
        q[0] = (uint8_t)(c >> 24);
        q[1] = (uint8_t)(c >> 16);
        q[2] = (uint8_t)(c >> 8);
        q[3] = (uint8_t)c;
        i += 12 + (size_t)len;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_decode(data, size, 0);
    if (size >= 8) {
        uint8_t *copy = malloc(size);
        if (!copy) return 0;
        memcpy(copy, data, size);
        fix_crcs(copy, size);
        fuzz_decode(copy, size, 0);
        free(copy);
    }
    return 0;
}
