/* The per-pixel arithmetic of the GPU image path (gpuprep.c), in one place
 * for three callers: the CUDA kernels (gpuprep_kernels.cu), the CPU
 * emulation of those kernels (tests/unit/test_cuda_emul.c), and the unit
 * test that checks it against the CPU resampler byte for byte
 * (tests/unit/test_gpuprep_math.c, every build).  A kernel is then only
 * "which output does this thread compute"; the maths the emulation runs is
 * the maths the GPU runs.
 *
 * The resampling is a cs_img_taps plan (imageio.h) executed on a decoded
 * frame that has not been rotated yet: EXIF orientation is applied by
 * reading the source through cs_gp_src_xy, so a rotated photo costs no
 * extra pass.  The orientation cases are those of decode.c's
 * apply_orientation. */
#ifndef CS_CUDA_GPUPREP_MATH_H
#define CS_CUDA_GPUPREP_MATH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __CUDACC__
#define CS_GP_FN static inline __host__ __device__
#else
#define CS_GP_FN static inline
#endif

/* The displayed (oriented) size of a W x H frame under orientation o. */
CS_GP_FN void cs_gp_oriented_size(int o, int W, int H, int *w, int *h) {
    *w = o >= 5 ? H : W;
    *h = o >= 5 ? W : H;
}

/* The stored pixel (*sx, *sy) of a W x H frame that the displayed pixel
 * (x, y) shows under EXIF orientation o (1..8; anything else is 1). */
CS_GP_FN void cs_gp_src_xy(int o, int W, int H, int x, int y, int *sx, int *sy) {
    switch (o) {
    case 2: *sx = W - 1 - x; *sy = y; break;         /* mirror horizontal */
    case 3: *sx = W - 1 - x; *sy = H - 1 - y; break; /* rotate 180 */
    case 4: *sx = x; *sy = H - 1 - y; break;         /* mirror vertical */
    case 5: *sx = y; *sy = x; break;                 /* transpose */
    case 6: *sx = y; *sy = H - 1 - x; break;         /* rotate 90 CW */
    case 7: *sx = W - 1 - y; *sy = H - 1 - x; break; /* transverse */
    case 8: *sx = W - 1 - y; *sy = x; break;         /* rotate 90 CCW */
    default: *sx = x; *sy = y; break;
    }
}

/* PIL's fixed point: 22 fraction bits, rounded at half, clipped to a byte. */
#define CS_GP_BITS 22
CS_GP_FN uint8_t cs_gp_clip8(int32_t v) {
    if (v >= (1 << CS_GP_BITS << 8)) return 255;
    if (v <= 0) return 0;
    return (uint8_t)(v >> CS_GP_BITS);
}

/* Horizontal pass, one byte: channel c of output column `first`'s window
 * (k weights from `first`) on displayed row y of an RGB frame (W x H as
 * stored, pitch bytes a row, orientation o). */
CS_GP_FN uint8_t cs_gp_hpass(const uint8_t *src, size_t pitch, int W, int H, int o, int y, int first,
                             const int32_t *w, int k, int c) {
    int32_t s = 1 << (CS_GP_BITS - 1);
    for (int t = 0; t < k; t++) {
        int sx, sy;
        cs_gp_src_xy(o, W, H, first + t, y, &sx, &sy);
        s += src[(size_t)sy * pitch + (size_t)sx * 3 + c] * w[t];
    }
    return cs_gp_clip8(s);
}

/* Which byte of the horizontal pass's output (rows x ow*3 bytes) the i-th
 * thread computes: *r, the row, and *b, the byte within it.
 *
 * A tap's source pixel lies along a displayed row.  On a frame stored
 * upright (o < 5) that is a stored row, so consecutive threads take
 * consecutive bytes of one output row and a warp's taps read neighbouring
 * bytes of one stored row.  On a frame stored on its side (o >= 5: every
 * portrait photo from a phone that tags rather than rotates) a displayed
 * row is a stored column; with that order a warp would read ~10 stored rows
 * per tap, down the column.  So there consecutive threads take the three
 * channels of consecutive rows of one output column instead: their
 * displayed rows are neighbouring stored columns, and each tap of a warp
 * reads neighbouring bytes of one stored row again.  Either order covers
 * every output byte exactly once, and the byte's value does not depend on
 * it (test_gpuprep_math checks both). */
CS_GP_FN void cs_gp_hpass_at(int64_t i, int o, int rows, int ow, int *r, int *b) {
    if (o < 5) {
        const int64_t rowb = (int64_t)ow * 3;
        *r = (int)(i / rowb);
        *b = (int)(i - (int64_t)*r * rowb);
    } else {
        const int64_t q = i / 3; /* i = (x * rows + r) * 3 + c */
        const int x = (int)(q / rows);
        *r = (int)(q - (int64_t)x * rows);
        *b = x * 3 + (int)(i - q * 3);
    }
}

/* Vertical pass, one byte: column byte b of n rows from tmp row r0
 * (tstride bytes a row). */
CS_GP_FN uint8_t cs_gp_vpass(const uint8_t *tmp, size_t tstride, int r0, int n, const int32_t *w,
                             size_t b) {
    int32_t s = 1 << (CS_GP_BITS - 1);
    for (int t = 0; t < n; t++) s += tmp[(size_t)(r0 + t) * tstride + b] * w[t];
    return cs_gp_clip8(s);
}

#endif
