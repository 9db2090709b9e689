/* Kernels of the GPU image path (gpuprep.c): the two passes of a PIL
 * resample and the normalisation into the model input.  The arithmetic is
 * gpuprep_math.h's, shared with the CPU emulation and its byte-exact unit
 * test; what is here is only which output each thread computes.
 *
 * One thread per output byte of a pass: the horizontal pass of a
 * 4000x3000 frame to a 341-pixel-wide crop window is ~3,000 rows x 672
 * bytes, ~2 M threads of ~25 taps each, reading rows that neighbouring
 * threads share through L1/L2 (in an order that keeps a warp's reads along
 * stored rows whatever the EXIF orientation: cs_gp_hpass_at).  The frame
 * is read once per pass output, not staged: at these sizes the passes are
 * small next to the decode. */
#include "cuda/gpuprep_internal.h"
#include "cuda/gpuprep_math.h"
#include "cuda/launch.cuh"

#include <cuda_runtime.h>

namespace {

using cs_launch::blocks_for;
using cs_launch::kThreads;
using cs_launch::launched;
using cs_launch::S;

__global__ void k_hpass(const uint8_t *src, size_t pitch, int W, int H, int o, int ylo, int rows,
                        int ow, const int32_t *hfirst, const int32_t *hw, int hk, uint8_t *tmp) {
    const int64_t rowb = (int64_t)ow * 3, n = rowb * rows;
    GRID_LOOP(i, n) {
        int r, b;
        cs_gp_hpass_at(i, o, rows, ow, &r, &b);
        const int x = b / 3, c = b - x * 3;
        tmp[r * rowb + b] = cs_gp_hpass(src, pitch, W, H, o, ylo + r, hfirst[x], hw + (size_t)x * hk, hk, c);
    }
}

__global__ void k_vpass(const uint8_t *tmp, int ow, int ylo, int oh, const int32_t *vfirst,
                        const int32_t *vn, const int32_t *vw, int vk, uint8_t *dst, size_t dst_stride) {
    const int64_t rowb = (int64_t)ow * 3, n = rowb * oh;
    GRID_LOOP(i, n) {
        const int j = (int)(i / rowb), b = (int)(i - (int64_t)j * rowb);
        dst[(size_t)j * dst_stride + b] =
            cs_gp_vpass(tmp, (size_t)rowb, vfirst[j] - ylo, vn[j], vw + (size_t)j * vk, (size_t)b);
    }
}

__global__ void k_normalize(const uint8_t *rgb, int64_t n, const float *lut, int bgr, float *out) {
    GRID_LOOP(i, 3 * n) {
        const int c = (int)(i / n);
        const int64_t p = i - c * n;
        out[i] = lut[c * 256 + rgb[p * 3 + (bgr ? 2 - c : c)]];
    }
}

} // namespace

extern "C" int cs_gpuprep_k_hpass(cs_cuda_stream s, const uint8_t *src, size_t pitch, int W, int H,
                                  int o, int ylo, int rows, int ow, const int32_t *hfirst,
                                  const int32_t *hw, int hk, uint8_t *tmp) {
    const int64_t n = (int64_t)ow * 3 * rows;
    if (n <= 0) return 0;
    k_hpass<<<blocks_for(n), kThreads, 0, S(s)>>>(src, pitch, W, H, o, ylo, rows, ow, hfirst, hw, hk, tmp);
    return launched();
}

extern "C" int cs_gpuprep_k_vpass(cs_cuda_stream s, const uint8_t *tmp, int ow, int ylo, int oh,
                                  const int32_t *vfirst, const int32_t *vn, const int32_t *vw, int vk,
                                  uint8_t *dst, size_t dst_stride) {
    const int64_t n = (int64_t)ow * 3 * oh;
    if (n <= 0) return 0;
    k_vpass<<<blocks_for(n), kThreads, 0, S(s)>>>(tmp, ow, ylo, oh, vfirst, vn, vw, vk, dst, dst_stride);
    return launched();
}

extern "C" int cs_gpuprep_k_normalize(cs_cuda_stream s, const uint8_t *rgb, int64_t n, const float *lut,
                                      int bgr, float *out) {
    if (n <= 0) return 0;
    k_normalize<<<blocks_for(3 * n), kThreads, 0, S(s)>>>(rgb, n, lut, bgr, out);
    return launched();
}
