/* The GPU image path's kernel launchers (gpuprep_kernels.cu; C linkage, so
 * the host code stays plain C and the CPU emulation in
 * tests/unit/test_cuda_emul.c can define them instead).  Each enqueues work
 * on the stream, never allocates, and returns the launch's cudaError_t as
 * an int.  Pointers are device memory; the maths is gpuprep_math.h's. */
#ifndef CS_CUDA_GPUPREP_INTERNAL_H
#define CS_CUDA_GPUPREP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "cuda/cuda_internal.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Horizontal pass of a cs_img_taps plan: tmp row r (r < rows, ow * 3
 * bytes) from displayed row ylo + r of the stored RGB frame src (W x H,
 * pitch bytes a row, EXIF orientation o). */
int cs_gpuprep_k_hpass(cs_cuda_stream st, const uint8_t *src, size_t pitch, int W, int H, int o,
                       int ylo, int rows, int ow, const int32_t *hfirst, const int32_t *hw, int hk,
                       uint8_t *tmp);

/* Vertical pass: dst row j < oh (ow * 3 bytes at dst_stride) from tmp,
 * whose row 0 is source row ylo. */
int cs_gpuprep_k_vpass(cs_cuda_stream st, const uint8_t *tmp, int ow, int ylo, int oh,
                       const int32_t *vfirst, const int32_t *vn, const int32_t *vw, int vk,
                       uint8_t *dst, size_t dst_stride);

/* The model input: plane c of out (n floats each) is lut[c * 256 + byte]
 * of channel (bgr ? 2 - c : c) of n RGB pixels. */
int cs_gpuprep_k_normalize(cs_cuda_stream st, const uint8_t *rgb, int64_t n, const float *lut, int bgr,
                           float *out);

#ifdef __cplusplus
}
#endif
#endif
