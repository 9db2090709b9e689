/* A CPU executor of cs_img_taps plans with gpuprep_math.h's arithmetic:
 * what the GPU kernels compute, one loop per pass instead of one thread per
 * byte.  Shared by test_gpuprep_math (against the CPU resampler) and
 * test_cuda_emul (as the emulated kernel launchers). */
#ifndef CS_TEST_GPUPREP_EXEC_H
#define CS_TEST_GPUPREP_EXEC_H

#include "cuda/gpuprep_math.h"

#include <stddef.h>
#include <stdint.h>

static inline void gp_exec_hpass(const uint8_t *src, size_t pitch, int W, int H, int o, int ylo, int rows,
                                 int ow, const int32_t *hfirst, const int32_t *hw, int hk, uint8_t *tmp) {
    /* the kernel's thread order (cs_gp_hpass_at), so its index maths runs here too */
    for (int64_t i = 0; i < (int64_t)rows * ow * 3; i++) {
        int r, b;
        cs_gp_hpass_at(i, o, rows, ow, &r, &b);
        tmp[(size_t)r * ow * 3 + b] =
            cs_gp_hpass(src, pitch, W, H, o, ylo + r, hfirst[b / 3], hw + (size_t)(b / 3) * hk, hk, b % 3);
    }
}

static inline void gp_exec_vpass(const uint8_t *tmp, int ow, int ylo, int oh, const int32_t *vfirst,
                                 const int32_t *vn, const int32_t *vw, int vk, uint8_t *dst, size_t dst_stride) {
    for (int j = 0; j < oh; j++)
        for (int b = 0; b < ow * 3; b++)
            dst[(size_t)j * dst_stride + b] =
                cs_gp_vpass(tmp, (size_t)ow * 3, vfirst[j] - ylo, vn[j], vw + (size_t)j * vk, (size_t)b);
}

/* Both passes of plan t on a stored W x H RGB frame under orientation o;
 * tmp holds (t->yhi - t->ylo) * t->ow * 3 bytes. */
static inline void gp_exec_plan(const cs_img_taps *t, const uint8_t *src, int W, int H, int o, uint8_t *tmp,
                                uint8_t *dst, size_t dst_stride) {
    gp_exec_hpass(src, (size_t)W * 3, W, H, o, t->ylo, t->yhi - t->ylo, t->ow, t->hfirst, t->hw, t->hk, tmp);
    gp_exec_vpass(tmp, t->ow, t->ylo, t->oh, t->vfirst, t->vn, t->vw, t->vk, dst, dst_stride);
}

#endif
